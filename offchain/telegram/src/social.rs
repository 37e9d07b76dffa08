//! The social monitor's high-priority items as alerts (`[telegram.social]`).
//!
//! The bot subscribes to the monitor's `/ws` with the monitor's own per-client filter
//! (`?min_priority=high&assets=BTC,ETH`), so only the items it will alert on cross the wire, and hands each one to
//! the same alert pipeline as the keeper's signals: category `social` (on by default, `/alerts social off|silent`),
//! the same per-chat rate limit, the same flood summary.
//!
//! An item's text, author, source name and link come from strangers: every one is escaped for Telegram's HTML
//! parse mode, the text is capped at [`MAX_TEXT_CHARS`] characters and the author at [`MAX_AUTHOR_CHARS`], a link
//! is kept only when it is an `http`/`https` URL, and the message goes out without a link preview.
//!
//! When the monitor restarts the bot reconnects with a back-off (250 ms doubling up to 30 s); a lost or
//! unreachable monitor is logged once, and again only when it is back.

use std::time::Duration;

use futures::StreamExt;
use kronos_social::WsMessage;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::format::esc;

/// At most this many characters of an item's text in an alert (the rest becomes `…`).
pub const MAX_TEXT_CHARS: usize = 600;
/// At most this many characters of an item's author.
pub const MAX_AUTHOR_CHARS: usize = 64;
/// At most this many characters of an item's link.
pub const MAX_URL_CHARS: usize = 512;

/// The monitor's priorities, lowest first (its `priority` field on the wire).
pub use kronos_social::Priority;

/// `[telegram.social]`: where the monitor is and which of its items become alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct SocialConfig {
    /// The monitor's `ws://…/ws`.
    pub url: String,
    /// Items at least this urgent (default `high`).
    pub min_priority: Priority,
    /// Items mentioning any of these (upper case; empty: every asset).
    pub assets: Vec<String>,
}

impl SocialConfig {
    /// The URL with the monitor's filter: `min_priority`, and `assets` when some are listed.
    pub fn stream_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                {
                    let mut q = u.query_pairs_mut();
                    q.append_pair("min_priority", self.min_priority.as_str());
                    if !self.assets.is_empty() {
                        q.append_pair("assets", &self.assets.join(","));
                    }
                }
                u.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }
}

/// The fields of the monitor's item (`kronos_social::Item` as JSON) an alert uses; others are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SocialItem {
    /// The monitor's source name (`nitter-btc`).
    pub source: String,
    /// The source's kind (`rss`, `keeper`, …).
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub author: String,
    pub text: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub assets: Vec<String>,
    pub sentiment: f64,
    pub score: f64,
    pub priority: Priority,
}

fn cap(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// An attribute value for Telegram's HTML: [`esc`] and the double quote.
fn attr(s: &str) -> String {
    esc(s).replace('"', "&quot;")
}

/// A link worth showing: an `http`/`https` URL of reasonable length.
fn safe_link(u: &str) -> Option<String> {
    if u.chars().count() > MAX_URL_CHARS {
        return None;
    }
    let parsed = url::Url::parse(u).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| parsed.to_string())
}

/// The alert for one item (HTML):
///
/// ```text
/// 📣 BTC, ETH · score 1.52 · sentiment +0.84 (high)
/// nitter-btc · alice: <the text, escaped, at most 600 characters>
/// <a href="…">link</a>
/// ```
pub fn describe(item: &SocialItem) -> String {
    let assets = if item.assets.is_empty() { "no asset".to_string() } else { item.assets.join(", ") };
    let mut out = format!(
        "📣 {} · score {:.2} · sentiment {:+.2} ({})\n{}",
        esc(&cap(&assets, 80)),
        item.score,
        item.sentiment,
        item.priority.as_str(),
        esc(&cap(&item.source, MAX_AUTHOR_CHARS)),
    );
    let author = item.author.trim();
    if !author.is_empty() {
        out.push_str(" · ");
        out.push_str(&esc(&cap(author, MAX_AUTHOR_CHARS)));
    }
    out.push_str(": ");
    out.push_str(&esc(&cap(item.text.trim(), MAX_TEXT_CHARS)));
    if let Some(link) = item.url.as_deref().and_then(safe_link) {
        out.push_str(&format!("\n<a href=\"{}\">link</a>", attr(&link)));
    }
    out
}

/// What one WebSocket text message from the monitor means for the bot.
#[derive(Debug, PartialEq)]
pub(crate) enum Received {
    /// An item to alert on.
    Alert(Box<SocialItem>),
    /// An item below `min_priority` (the monitor filters already; an older monitor may not), a mirror of the
    /// keeper's own signals (the bot alerts on those from the keeper directly), an edit of an item sent before (it
    /// was alerted on as first posted; an edit is not alerted again) or a deletion.
    Skip,
    /// The monitor's note that this reader fell behind and skipped `lost` items.
    Lagged(u64),
    /// Not a message of the monitor's (`kronos_social::WsMessage`): why (the field, the unknown `type`).
    Unknown(String),
}

/// Reads one message as the monitor's typed `WsMessage`, the item as the fields an alert uses.
pub(crate) fn receive(text: &str, min: Priority) -> Received {
    match serde_json::from_str::<WsMessage<SocialItem>>(text) {
        Ok(WsMessage::Item(item)) if item.priority < min || item.kind == "keeper" => Received::Skip,
        Ok(WsMessage::Item(item)) => Received::Alert(Box::new(item)),
        Ok(WsMessage::Edit(_) | WsMessage::Deleted { .. }) => Received::Skip,
        Ok(WsMessage::Lagged { lost }) => Received::Lagged(lost),
        Err(e) => Received::Unknown(e.to_string()),
    }
}

/// The pause before the next connection attempt after `last`: 250 ms doubling up to 30 s.
pub(crate) fn next_backoff(last: Duration) -> Duration {
    (last * 2).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// Follows the monitor until `tx` closes: connects, hands every item to alert to `tx`, reconnects with a back-off.
/// A lost or unreachable monitor is logged once (not per retry) and its return once.
pub(crate) async fn follow(cfg: SocialConfig, tx: mpsc::Sender<SocialItem>) {
    let url = cfg.stream_url();
    let mut backoff = Duration::ZERO;
    let mut down_logged = false;
    loop {
        if tx.is_closed() {
            return;
        }
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                backoff = Duration::ZERO;
                if down_logged {
                    tracing::info!(%url, "telegram: the social monitor is back");
                } else {
                    tracing::info!(%url, "telegram: following the social monitor");
                }
                while let Some(msg) = ws.next().await {
                    let text = match msg {
                        Ok(Message::Text(t)) => t,
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    match receive(text.as_str(), cfg.min_priority) {
                        Received::Alert(item) => {
                            if tx.send(*item).await.is_err() {
                                return;
                            }
                        }
                        Received::Skip => {}
                        Received::Lagged(lost) => {
                            tracing::warn!(%url, lost, "telegram: fell behind the social monitor; items skipped")
                        }
                        Received::Unknown(why) => {
                            tracing::debug!(%url, %why, "telegram: a social monitor message that is not one was skipped")
                        }
                    }
                }
                tracing::warn!(%url, "telegram: the social monitor's stream dropped; reconnecting with a back-off");
                down_logged = true;
            }
            Err(e) => {
                if !down_logged {
                    tracing::warn!(%url, error = %e, "telegram: the social monitor is unreachable; retrying with a back-off (logged again when it is back)");
                    down_logged = true;
                }
            }
        }
        backoff = next_backoff(backoff);
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &str) -> SocialItem {
        SocialItem {
            source: "nitter-btc".into(),
            kind: "rss".into(),
            author: "alice".into(),
            text: text.into(),
            url: Some("https://nitter.example/alice/status/1".into()),
            assets: vec!["BTC".into()],
            sentiment: 0.84,
            score: 1.523,
            priority: Priority::High,
        }
    }

    #[test]
    fn an_alert_names_source_asset_score_sentiment_and_link() {
        assert_eq!(
            describe(&item("Bitcoin breaks out")),
            "📣 BTC · score 1.52 · sentiment +0.84 (high)\nnitter-btc · alice: Bitcoin breaks out\n\
             <a href=\"https://nitter.example/alice/status/1\">link</a>"
        );
    }

    #[test]
    fn hostile_text_is_escaped_and_capped_and_odd_links_are_dropped() {
        let mut i = item(&format!("<b>pump</b> & <a href=\"x\">dump</a> *_`[{}", "x".repeat(10_000)));
        i.author = "<script>".repeat(20);
        i.url = Some("javascript:alert(1)".into());
        let d = describe(&i);
        assert!(d.contains("&lt;b&gt;pump&lt;/b&gt; &amp; &lt;a href=\"x\"&gt;dump&lt;/a&gt; *_`["), "{d}");
        assert!(!d.contains("<b>") && !d.contains("<script>") && !d.contains("<a"), "{d}");
        assert!(!d.contains("javascript"), "{d}");
        assert!(d.ends_with('…'), "{d}");
        assert!(d.chars().count() < MAX_TEXT_CHARS * 2 + 4 * MAX_AUTHOR_CHARS, "{} chars", d.chars().count());
        // A link whose text would break out of the attribute.
        i.url = Some("https://x.example/?q=\"><b>".into());
        let d = describe(&i);
        assert!(d.contains("<a href=\"https://x.example/?q=%22%3E%3Cb%3E\">link</a>"), "{d}");
    }

    #[test]
    fn only_items_at_the_minimum_priority_and_not_the_keepers_mirror_are_alerts() {
        let j = |ty: &str, p: &str, kind: &str| {
            format!(
                r#"{{"type":"{ty}","id":"1","source":"s","kind":"{kind}","author":"a","text":"t","url":null,"at_ms":1,
                "received_ms":1,"language":"en","assets":["BTC"],"sentiment":0.5,"score":1.4,"priority":"{p}"}}"#
            )
        };
        assert!(matches!(receive(&j("item", "high", "rss"), Priority::High), Received::Alert(_)));
        assert_eq!(receive(&j("item", "normal", "rss"), Priority::High), Received::Skip);
        assert!(matches!(receive(&j("item", "normal", "rss"), Priority::Normal), Received::Alert(_)));
        assert_eq!(receive(&j("item", "high", "keeper"), Priority::High), Received::Skip);
        assert_eq!(receive(&j("edit", "high", "rss"), Priority::High), Received::Skip, "an edit is not alerted again");
        assert_eq!(receive(r#"{"type":"deleted","id":"1","source":"s"}"#, Priority::High), Received::Skip);
        assert_eq!(receive(r#"{"type":"lagged","lost":3}"#, Priority::High), Received::Lagged(3));
        assert!(matches!(receive("not json", Priority::High), Received::Unknown(_)));
        // What the monitor writes is what the bot reads (the one type, from kronos-social).
        let lagged = serde_json::to_string(&WsMessage::<kronos_social::Item>::Lagged { lost: 7 }).unwrap();
        assert_eq!(receive(&lagged, Priority::High), Received::Lagged(7));
        // A message that is not one names what is wrong.
        let Received::Unknown(why) = receive(r#"{"type":"lagged","lost":"many"}"#, Priority::High) else { panic!() };
        assert!(why.contains("lost") || why.contains("invalid type"), "{why}");
        let Received::Unknown(why) = receive(r#"{"type":"poll","id":"1"}"#, Priority::High) else { panic!() };
        assert!(why.contains("poll"), "{why}");
    }

    #[test]
    fn the_stream_url_carries_the_monitors_filter_and_reconnects_back_off() {
        let c = SocialConfig {
            url: "ws://127.0.0.1:8790/ws".into(),
            min_priority: Priority::High,
            assets: vec!["BTC".into(), "ETH".into()],
        };
        assert_eq!(c.stream_url(), "ws://127.0.0.1:8790/ws?min_priority=high&assets=BTC%2CETH");
        let c = SocialConfig { assets: vec![], min_priority: Priority::Normal, ..c };
        assert_eq!(c.stream_url(), "ws://127.0.0.1:8790/ws?min_priority=normal");
        let ms = Duration::from_millis;
        assert_eq!(next_backoff(Duration::ZERO), ms(250));
        assert_eq!(next_backoff(ms(250)), ms(500));
        assert_eq!(next_backoff(ms(20_000)), ms(30_000));
    }
}
