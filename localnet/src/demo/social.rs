//! The social monitor in the demo (issue 17): `config/social.example.toml`'s pipeline rules and assets, its feeds
//! read from the bundled fixtures served on a free loopback port (offline), and its keeper source following the
//! demo keeper's `/ws` — so the keeper's settled rounds, revealed forecasts and the copy-trader's fills become items.
//! The summary's social section is measured from the monitor's store: items ingested and skipped by reason per
//! source, items mirrored from the keeper, the assets with the most mentions and their mean sentiment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use kronos_social::config::SourceKind;
use kronos_social::runner::Running;
use kronos_social::store::{ItemQuery, SourceRecord, StoredItem};
use tokio_util::sync::CancellationToken;

/// The example configuration the demo's monitor starts from.
pub const EXAMPLE: &str = "config/social.example.toml";
/// Items read back for the summary's asset table at most.
const SUMMARY_ITEMS: u32 = 100_000;

/// The running monitor.
pub struct SocialDemo {
    pub running: Running,
    /// The monitor's API (`/api/social/items`, `/ws`, `/health`).
    pub api: SocketAddr,
    pub fixtures: SocketAddr,
    pub store_url: String,
    /// The name of the source mirroring the keeper's signals.
    pub keeper_source: String,
}

/// One asset's line in the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetLine {
    pub asset: String,
    pub items: u64,
    pub mean_sentiment: f64,
}

/// What the summary's social section shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SocialSummary {
    /// Per source: items stored, skips by reason.
    pub sources: Vec<SourceRecord>,
    /// Items mirrored from the keeper's signals.
    pub mirrored: u64,
    /// The assets with the most items, most first (ties by symbol), at most `top`.
    pub top_assets: Vec<AssetLine>,
}

/// Summarises the store's per-source records and its items; `keeper_source` names the keeper mirror.
pub fn summarise(sources: Vec<SourceRecord>, items: &[StoredItem], keeper_source: &str, top: usize) -> SocialSummary {
    let mirrored = sources.iter().filter(|s| s.source == keeper_source).map(|s| s.items).sum();
    let mut by_asset: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for it in items {
        for a in &it.item.assets {
            let e = by_asset.entry(a.as_str()).or_default();
            e.0 += 1;
            e.1 += it.item.sentiment;
        }
    }
    let mut top_assets: Vec<AssetLine> = by_asset
        .into_iter()
        .map(|(a, (n, s))| AssetLine { asset: a.to_string(), items: n, mean_sentiment: s / n as f64 })
        .collect();
    // Stable sort over symbol order: ties stay alphabetical.
    top_assets.sort_by_key(|a| std::cmp::Reverse(a.items));
    top_assets.truncate(top);
    SocialSummary { sources, mirrored, top_assets }
}

impl SocialSummary {
    /// The section's text.
    pub fn render(&self, api: &SocialDemo) -> String {
        let mut s = format!("\nsocial monitor (http://{}/api/social/items, store {}):\n", api.api, api.store_url);
        for r in &self.sources {
            let skips: Vec<String> = r.skips.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s += &format!(
                "  {:<12} ingested {:>5}  skipped {:>4}{}\n",
                r.source,
                r.items,
                r.skips.iter().map(|(_, n)| n).sum::<u64>(),
                if skips.is_empty() { String::new() } else { format!(" ({})", skips.join(", ")) }
            );
        }
        s += &format!("  mirrored from the keeper's signals: {} items\n", self.mirrored);
        if !self.top_assets.is_empty() {
            let a: Vec<String> = self
                .top_assets
                .iter()
                .map(|a| format!("{} {} (sentiment {:+.2})", a.asset, a.items, a.mean_sentiment))
                .collect();
            s += &format!("  top assets by items: {}\n", a.join(", "));
        }
        s
    }
}

impl SocialDemo {
    /// Starts the monitor from `root`'s example configuration with its store at `store_path`: the fixture feeds on a
    /// free loopback port (the feed sources pointed at it), the keeper source at `keeper_ws`; chat sources (which
    /// need tokens) and Redis are left out. Stops when `cancel` fires.
    pub async fn start(
        root: &Path,
        store_path: &Path,
        keeper_ws: &str,
        cancel: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Result<SocialDemo> {
        let file = root.join(EXAMPLE);
        let mut cfg = kronos_social::Config::load(&file)?;
        let (dir, example_fixtures) =
            cfg.fixtures.take().with_context(|| format!("{}: social.fixtures is not set", file.display()))?;
        let dir = root.join(dir);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the fixture server")?;
        let fixtures = l.local_addr()?;
        let app = kronos_social::server::fixtures(dir);
        let c = cancel.clone();
        tasks.spawn(async move {
            let _ = axum::serve(l, app).with_graceful_shutdown(c.cancelled_owned()).await;
        });
        let at_fixtures = |u: &url::Url| {
            u.host_str() == Some(&example_fixtures.ip().to_string()) && u.port() == Some(example_fixtures.port())
        };
        let mut keeper_source = None;
        cfg.sources.retain_mut(|s| match &mut s.kind {
            SourceKind::Rss(r) if at_fixtures(&r.url) => r.url.set_port(Some(fixtures.port())).is_ok(),
            SourceKind::HttpJson(j) if at_fixtures(&j.url) => j.url.set_port(Some(fixtures.port())).is_ok(),
            SourceKind::Keeper(k) if keeper_source.is_none() => match keeper_ws.parse() {
                Ok(u) => {
                    k.url = u;
                    k.token_env = None;
                    keeper_source = Some(s.name.clone());
                    true
                }
                Err(_) => false,
            },
            _ => false,
        });
        let keeper_source = keeper_source.with_context(|| format!("{}: no keeper source", file.display()))?;
        cfg.store = format!("sqlite:{}", store_path.display());
        cfg.listen = "127.0.0.1:0".parse()?;
        cfg.redis = None;
        let running = kronos_social::runner::start(&cfg).await.context("starting the social monitor")?;
        Ok(SocialDemo { api: running.addr, fixtures, store_url: cfg.store.clone(), keeper_source, running })
    }

    /// What the store holds now.
    pub async fn summary(&self, top: usize) -> Result<SocialSummary> {
        let store = &self.running.monitor.store;
        let sources = store.sources().await?;
        let items = store.items(&ItemQuery { limit: SUMMARY_ITEMS, ..Default::default() }).await?;
        Ok(summarise(sources, &items, &self.keeper_source, top))
    }

    /// The summary's social section.
    pub async fn section(&self) -> String {
        match self.summary(5).await {
            Ok(s) => s.render(self),
            Err(e) => format!("\nsocial monitor: reading its store failed: {e:#}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kronos_social::{Item, Priority};

    fn item(seq: i64, assets: &[&str], sentiment: f64) -> StoredItem {
        StoredItem {
            seq,
            item: Item {
                id: seq.to_string(),
                source: "s".into(),
                kind: "rss".into(),
                author: "a".into(),
                text: "t".into(),
                url: None,
                at_ms: 0,
                received_ms: 0,
                language: "en".into(),
                assets: assets.iter().map(|a| a.to_string()).collect(),
                sentiment,
                score: 0.0,
                priority: Priority::Low,
                version: 1,
                edited_ms: None,
                content_hash: 0,
                simhash: 0,
            },
        }
    }

    fn rec(source: &str, items: u64) -> SourceRecord {
        SourceRecord { source: source.into(), items, last_item_ms: None, cursor_updated_ms: None, skips: vec![] }
    }

    #[test]
    fn counts_mirrored_items_and_ranks_assets_by_items() {
        let items = [item(1, &["BTC"], 0.5), item(2, &["BTC", "ETH"], -0.1), item(3, &["SOL"], 0.2), item(4, &[], 0.9)];
        let s = summarise(vec![rec("keeper", 3), rec("news", 4)], &items, "keeper", 2);
        assert_eq!(s.mirrored, 3);
        assert_eq!(s.top_assets.len(), 2);
        assert_eq!(s.top_assets[0].asset, "BTC");
        assert_eq!(s.top_assets[0].items, 2);
        assert!((s.top_assets[0].mean_sentiment - 0.2).abs() < 1e-12);
        assert_eq!(s.top_assets[1].asset, "ETH", "ties rank alphabetically");
        let none = summarise(vec![rec("news", 4)], &items, "keeper", 5);
        assert_eq!(none.mirrored, 0);
        assert_eq!(none.top_assets.len(), 3);
    }
}
