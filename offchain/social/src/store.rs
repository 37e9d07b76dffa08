//! The social monitor's record (sqlx; SQLite by default, PostgreSQL by URL): accepted items, their assets, each
//! source's cursor and skip counts. Tables are prefixed `so_` and the migrations keep their own bookkeeping table, so
//! the monitor can share a database with the keeper.
//!
//! [`Store::commit`] writes a batch's items, its skip counts and the source's cursor in one transaction: either the
//! cursor moves with its items or neither is written.

use anyhow::{Context, Result};
use kronos_common::db::Backend;
use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::item::{Item, Priority, Skip};

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A filter on stored items.
#[derive(Debug, Clone, Default)]
pub struct ItemQuery {
    pub asset: Option<String>,
    pub source: Option<String>,
    pub min_score: Option<f64>,
    /// Only items received after this sequence number (paging forward).
    pub after_seq: Option<i64>,
    pub since_ms: Option<u64>,
    pub limit: u32,
}

/// An item as stored, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredItem {
    pub seq: i64,
    #[serde(flatten)]
    pub item: Item,
}

/// What the de-duplicator needs from recent items after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub content_hash: u64,
    pub simhash: u64,
    pub at_ms: u64,
}

/// Counts of one asset's mentions in a window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct AssetCounts {
    /// Items mentioning the asset.
    pub volume: u64,
    /// Asset mentions of all assets (the denominator of dominance).
    pub all_mentions: u64,
    pub positive: u64,
    pub negative: u64,
    /// Mean VADER compound of the asset's items (0 when none).
    pub mean_sentiment: f64,
    pub mean_score: f64,
}

/// One source's stored state, for `kronos social status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRecord {
    pub source: String,
    pub items: u64,
    pub last_item_ms: Option<u64>,
    pub cursor_updated_ms: Option<u64>,
    pub skips: Vec<(String, u64)>,
}

fn h2i(h: u64) -> i64 {
    h as i64
}

fn i2h(i: i64) -> u64 {
    i as u64
}

/// The sentiment above (below) which an item counts as positive (negative): VADER's own convention.
pub const SENTIMENT_THRESHOLD: f64 = 0.05;

impl Store {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let (backend, pool) = kronos_common::db::open(url).await?;
        let mut m = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        m.dangerous_set_table_name("_kronos_social_migrations");
        m.run(&pool).await.context("applying social store migrations")?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The saved cursor of `source` as JSON, if any.
    pub async fn cursor(&self, source: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT cursor FROM so_cursors WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .context("reading a source cursor")?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Writes `items`, adds `skips` to the counts and saves `cursor`, in one transaction. Items whose id is already
    /// stored are left out; returns the items actually written, with their sequence numbers.
    pub async fn commit(
        &self,
        source: &str,
        items: Vec<Item>,
        skips: &[(Skip, u64)],
        cursor: &str,
        now_ms: u64,
    ) -> Result<Vec<StoredItem>> {
        let mut tx = self.pool.begin().await.context("starting a commit")?;
        let mut written = Vec::with_capacity(items.len());
        for item in items {
            let assets = item.assets.join(" ");
            let seq: Option<i64> = sqlx::query(
                "INSERT INTO so_items (id, source, kind, author, text, url, at_ms, received_ms, language, assets, \
                 sentiment, score, priority, content_hash, simhash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (id) DO NOTHING RETURNING seq",
            )
            .bind(&item.id)
            .bind(&item.source)
            .bind(&item.kind)
            .bind(&item.author)
            .bind(&item.text)
            .bind(item.url.as_deref())
            .bind(item.at_ms as i64)
            .bind(item.received_ms as i64)
            .bind(&item.language)
            .bind(&assets)
            .bind(item.sentiment)
            .bind(item.score)
            .bind(item.priority.as_str())
            .bind(h2i(item.content_hash))
            .bind(h2i(item.simhash))
            .fetch_optional(&mut *tx)
            .await
            .context("writing an item")?
            .map(|r| r.get::<i64, _>(0));
            let Some(seq) = seq else { continue };
            for a in &item.assets {
                sqlx::query(
                    "INSERT INTO so_item_assets (item_seq, asset, at_ms, sentiment, score) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(seq)
                .bind(a)
                .bind(item.at_ms as i64)
                .bind(item.sentiment)
                .bind(item.score)
                .execute(&mut *tx)
                .await
                .context("writing an item's asset")?;
            }
            written.push(StoredItem { seq, item });
        }
        for (reason, n) in skips {
            sqlx::query(
                "INSERT INTO so_skips (source, reason, n) VALUES ($1, $2, $3) \
                 ON CONFLICT (source, reason) DO UPDATE SET n = so_skips.n + excluded.n",
            )
            .bind(source)
            .bind(reason.as_str())
            .bind(*n as i64)
            .execute(&mut *tx)
            .await
            .context("counting skipped items")?;
        }
        sqlx::query(
            "INSERT INTO so_cursors (source, cursor, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_ms = excluded.updated_ms",
        )
        .bind(source)
        .bind(cursor)
        .bind(now_ms as i64)
        .execute(&mut *tx)
        .await
        .context("saving a source cursor")?;
        tx.commit().await.context("committing a batch")?;
        Ok(written)
    }

    /// Items, newest first (or oldest first after `after_seq`, for paging forward).
    pub async fn items(&self, q: &ItemQuery) -> Result<Vec<StoredItem>> {
        let mut sql = String::from(
            "SELECT i.seq, i.id, i.source, i.kind, i.author, i.text, i.url, i.at_ms, i.received_ms, i.language, \
             i.assets, i.sentiment, i.score, i.priority, i.content_hash, i.simhash FROM so_items i",
        );
        let mut conds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut p = || {
            n += 1;
            format!("${n}")
        };
        if q.asset.is_some() {
            sql.push_str(" JOIN so_item_assets a ON a.item_seq = i.seq");
            conds.push(format!("a.asset = {}", p()));
        }
        if q.source.is_some() {
            conds.push(format!("i.source = {}", p()));
        }
        if q.min_score.is_some() {
            conds.push(format!("i.score >= {}", p()));
        }
        if q.after_seq.is_some() {
            conds.push(format!("i.seq > {}", p()));
        }
        if q.since_ms.is_some() {
            conds.push(format!("i.at_ms >= {}", p()));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(if q.after_seq.is_some() { " ORDER BY i.seq ASC" } else { " ORDER BY i.seq DESC" });
        sql.push_str(&format!(" LIMIT {}", q.limit.clamp(1, 1000)));
        // Built from fixed fragments and `$N` placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(a) = &q.asset {
            query = query.bind(a.clone());
        }
        if let Some(s) = &q.source {
            query = query.bind(s.clone());
        }
        if let Some(m) = q.min_score {
            query = query.bind(m);
        }
        if let Some(s) = q.after_seq {
            query = query.bind(s);
        }
        if let Some(s) = q.since_ms {
            query = query.bind(s as i64);
        }
        let rows = query.fetch_all(&self.pool).await.context("reading items")?;
        rows.iter().map(row_item).collect()
    }

    /// The fingerprints of items posted since `since_ms` (to refill the de-duplication window after a restart).
    pub async fn fingerprints(&self, since_ms: u64) -> Result<Vec<Fingerprint>> {
        let rows = sqlx::query("SELECT content_hash, simhash, at_ms FROM so_items WHERE at_ms >= $1 ORDER BY seq")
            .bind(since_ms as i64)
            .fetch_all(&self.pool)
            .await
            .context("reading recent fingerprints")?;
        Ok(rows
            .iter()
            .map(|r| Fingerprint {
                content_hash: i2h(r.get(0)),
                simhash: i2h(r.get(1)),
                at_ms: r.get::<i64, _>(2) as u64,
            })
            .collect())
    }

    /// Authors of items posted since `since_ms`, with their last post (to remember them after a restart).
    pub async fn authors(&self, since_ms: u64) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT author, MAX(at_ms) FROM so_items WHERE at_ms >= $1 GROUP BY author")
            .bind(since_ms as i64)
            .fetch_all(&self.pool)
            .await
            .context("reading recent authors")?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) as u64)).collect())
    }

    /// Asset mentions since `since_ms` (to refill the volume baselines after a restart).
    pub async fn mentions(&self, since_ms: u64) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT asset, at_ms FROM so_item_assets WHERE at_ms >= $1 ORDER BY at_ms")
            .bind(since_ms as i64)
            .fetch_all(&self.pool)
            .await
            .context("reading recent mentions")?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) as u64)).collect())
    }

    /// Mention counts of `asset` between `from_ms` (inclusive) and `to_ms` (exclusive).
    pub async fn asset_counts(&self, asset: &str, from_ms: u64, to_ms: u64) -> Result<AssetCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*), \
             COALESCE(SUM(CASE WHEN sentiment > $4 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN sentiment < $5 THEN 1 ELSE 0 END), 0), \
             COALESCE(AVG(sentiment), 0.0), COALESCE(AVG(score), 0.0) \
             FROM so_item_assets WHERE asset = $1 AND at_ms >= $2 AND at_ms < $3",
        )
        .bind(asset)
        .bind(from_ms as i64)
        .bind(to_ms as i64)
        .bind(SENTIMENT_THRESHOLD)
        .bind(-SENTIMENT_THRESHOLD)
        .fetch_one(&self.pool)
        .await
        .context("counting an asset's mentions")?;
        let all: i64 = sqlx::query("SELECT COUNT(*) FROM so_item_assets WHERE at_ms >= $1 AND at_ms < $2")
            .bind(from_ms as i64)
            .bind(to_ms as i64)
            .fetch_one(&self.pool)
            .await
            .context("counting all mentions")?
            .get(0);
        Ok(AssetCounts {
            volume: row.get::<i64, _>(0) as u64,
            all_mentions: all as u64,
            positive: row.get::<i64, _>(1) as u64,
            negative: row.get::<i64, _>(2) as u64,
            mean_sentiment: row.get(3),
            mean_score: row.get(4),
        })
    }

    /// Every source seen in the store: items, last item, cursor time, skip counts.
    pub async fn sources(&self) -> Result<Vec<SourceRecord>> {
        let mut out: std::collections::BTreeMap<String, SourceRecord> = Default::default();
        let entry = |out: &mut std::collections::BTreeMap<String, SourceRecord>, s: &str| {
            out.entry(s.to_string())
                .or_insert_with(|| SourceRecord {
                    source: s.to_string(),
                    items: 0,
                    last_item_ms: None,
                    cursor_updated_ms: None,
                    skips: vec![],
                })
                .source
                .clone()
        };
        for r in sqlx::query("SELECT source, COUNT(*), MAX(at_ms) FROM so_items GROUP BY source")
            .fetch_all(&self.pool)
            .await?
        {
            let s: String = r.get(0);
            entry(&mut out, &s);
            let e = out.get_mut(&s).expect("inserted");
            e.items = r.get::<i64, _>(1) as u64;
            e.last_item_ms = r.get::<Option<i64>, _>(2).map(|x| x as u64);
        }
        for r in sqlx::query("SELECT source, updated_ms FROM so_cursors").fetch_all(&self.pool).await? {
            let s: String = r.get(0);
            entry(&mut out, &s);
            out.get_mut(&s).expect("inserted").cursor_updated_ms = Some(r.get::<i64, _>(1) as u64);
        }
        for r in
            sqlx::query("SELECT source, reason, n FROM so_skips ORDER BY source, reason").fetch_all(&self.pool).await?
        {
            let s: String = r.get(0);
            entry(&mut out, &s);
            out.get_mut(&s).expect("inserted").skips.push((r.get(1), r.get::<i64, _>(2) as u64));
        }
        Ok(out.into_values().collect())
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }
}

fn row_item(r: &sqlx::any::AnyRow) -> Result<StoredItem> {
    let assets: String = r.try_get(10)?;
    let priority: String = r.try_get(13)?;
    Ok(StoredItem {
        seq: r.try_get(0)?,
        item: Item {
            id: r.try_get(1)?,
            source: r.try_get(2)?,
            kind: r.try_get(3)?,
            author: r.try_get(4)?,
            text: r.try_get(5)?,
            url: r.try_get(6)?,
            at_ms: r.try_get::<i64, _>(7)? as u64,
            received_ms: r.try_get::<i64, _>(8)? as u64,
            language: r.try_get(9)?,
            assets: assets.split_whitespace().map(str::to_string).collect(),
            sentiment: r.try_get(11)?,
            score: r.try_get(12)?,
            priority: Priority::parse(&priority).unwrap_or(Priority::Low),
            content_hash: i2h(r.try_get(14)?),
            simhash: i2h(r.try_get(15)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, assets: &[&str], sentiment: f64, at_ms: u64) -> Item {
        Item {
            id: id.into(),
            source: "s".into(),
            kind: "rss".into(),
            author: "a".into(),
            text: format!("text {id}"),
            url: None,
            at_ms,
            received_ms: at_ms,
            language: "en".into(),
            assets: assets.iter().map(|s| s.to_string()).collect(),
            sentiment,
            score: 1.0,
            priority: Priority::Normal,
            content_hash: u64::MAX - 1,
            simhash: 7,
        }
    }

    #[tokio::test]
    async fn commit_writes_items_and_cursor_together_and_ignores_known_ids() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        assert_eq!(s.cursor("s").await.unwrap(), None);
        let w = s
            .commit(
                "s",
                vec![item("1", &["BTC"], 0.5, 10), item("2", &["BTC", "ETH"], -0.5, 20)],
                &[(Skip::TooLong, 2)],
                "{\"a\":1}",
                30,
            )
            .await
            .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(s.cursor("s").await.unwrap().as_deref(), Some("{\"a\":1}"));
        let w =
            s.commit("s", vec![item("2", &["BTC"], 0.0, 20)], &[(Skip::TooLong, 1)], "{\"a\":2}", 40).await.unwrap();
        assert!(w.is_empty(), "a known id is not written twice");
        let all = s.items(&ItemQuery { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all.iter().map(|i| i.item.id.as_str()).collect::<Vec<_>>(), vec!["2", "1"]);
        assert_eq!(all[1].item.content_hash, u64::MAX - 1, "hashes survive the signed column");
        let eth = s.items(&ItemQuery { asset: Some("ETH".into()), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(eth.len(), 1);
        let c = s.asset_counts("BTC", 0, 100).await.unwrap();
        assert_eq!((c.volume, c.all_mentions, c.positive, c.negative), (2, 3, 1, 1));
        let src = s.sources().await.unwrap();
        assert_eq!(src[0].skips, vec![("too_long".to_string(), 3)]);
        assert_eq!(src[0].items, 2);
    }
}
