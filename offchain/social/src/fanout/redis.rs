//! Redis pub/sub fan-out: the same messages as the `/ws` ([`WsMessage`], JSON tagged by `type`), on each channel
//! [`super::channels`] names for the item — `social:asset:<SYMBOL>` per asset it mentions,
//! `social:priority:<low|normal|high>` and `social:all`:
//! - `{"type":"item", …the item's fields}` for each accepted item;
//! - `{"type":"edit", …}` for its new version after an edit at the source (same `id`, `version` one higher), on the
//!   channels of the item as edited;
//! - `{"type":"deleted","id":…,"source":…}` when it was deleted at the source, on the channels the item was
//!   published on (its assets and priority as stored), so every subscriber that got the item gets its deletion.
//!
//! A subscriber that reads only the item fields still reads `item` messages (the tag is one more field).
//!
//! [`RedisFanout::publish`] never blocks the pipeline: it queues the message (bounded, [`RedisConfig::queue`]) and a
//! background task publishes queued items in pipelined batches over one multiplexed connection. When Redis goes away
//! the task counts the failure, keeps the batch it was sending, and reconnects with a backoff (100 ms doubling to
//! 10 s, reset by a success); the batch is then sent again (at least once: a subscriber that must not see an item
//! twice keeps the item ids it saw). While it is down the queue fills; past its bound new items are dropped and
//! counted. Subscribers come and go on Redis's side: one that disconnects changes nothing for the publisher.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{channels, Fanout, Published};
use crate::item::Item;
use crate::source::{Backoff, SourceError};

/// The `[redis]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. Without a password: a URL with one comes from `url_env` instead.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the URL (for a URL with a password); read at start, never logged.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Items queued for Redis before new ones are dropped (and counted) while it is slow or down.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    10_000
}

/// Why the `[redis]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigError {
    #[error("redis: set exactly one of redis.url and redis.url_env")]
    UrlOrEnv,
    #[error("redis.url_env: environment variable {0} is not set")]
    EnvMissing(String),
    #[error("redis.url: {0}")]
    BadUrl(String),
    #[error("redis.queue: must be between 1 and 10000000")]
    Queue,
}

impl RedisConfig {
    /// A config for `url` with the default queue.
    pub fn with_url(url: impl Into<String>) -> RedisConfig {
        RedisConfig { url: Some(url.into()), url_env: None, queue: default_queue() }
    }

    /// The URL to connect to (from the file or the environment), checked.
    pub(crate) fn resolve(&self) -> Result<redis::Client, RedisConfigError> {
        if !(1..=10_000_000).contains(&self.queue) {
            return Err(RedisConfigError::Queue);
        }
        let url = match (&self.url, &self.url_env) {
            (Some(u), None) => u.clone(),
            (None, Some(var)) => std::env::var(var)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| RedisConfigError::EnvMissing(var.clone()))?,
            _ => return Err(RedisConfigError::UrlOrEnv),
        };
        // The parse error never echoes the URL (it may hold a password).
        redis::Client::open(url.as_str())
            .map_err(|_| RedisConfigError::BadUrl("not a redis://, rediss:// or unix:// URL".into()))
    }
}

/// Counters of the Redis fan-out (also on `/metrics` as `social_redis_*`).
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Messages published (an item, an edit or a deletion; each on all its channels).
    pub published: Counter,
    /// Failed connects and failed publishes.
    pub failures: Counter,
    /// Connections made after a failure.
    pub reconnects: Counter,
    /// Messages dropped because the queue was full (Redis slow or down).
    pub dropped: Counter,
    /// Whether the publisher holds a working connection now (1) or not (0).
    pub connected: Gauge,
}

/// A snapshot of [`RedisStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedisSnapshot {
    pub published: u64,
    pub failures: u64,
    pub reconnects: u64,
    pub dropped: u64,
    pub connected: bool,
}

impl RedisStats {
    pub fn snapshot(&self) -> RedisSnapshot {
        RedisSnapshot {
            published: self.published.get(),
            failures: self.failures.get(),
            reconnects: self.reconnects.get(),
            dropped: self.dropped.get(),
            connected: self.connected.get() == 1,
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register("social_redis_published", "Messages published to Redis", self.published.clone());
        r.register("social_redis_failures", "Failed Redis connects and publishes", self.failures.clone());
        r.register("social_redis_reconnects", "Redis connections made after a failure", self.reconnects.clone());
        r.register("social_redis_dropped", "Messages dropped with the Redis queue full", self.dropped.clone());
        r.register("social_redis_connected", "Whether the Redis publisher is connected", self.connected.clone());
    }
}

/// Messages sent to Redis in one pipelined round trip, at most.
const BATCH: usize = 256;

/// The Redis publisher. Dropping it lets the background task send what is queued and end.
pub struct RedisFanout {
    tx: mpsc::Sender<Published>,
    stats: Arc<RedisStats>,
}

impl RedisFanout {
    /// Checks the config and starts the background publisher (inside a tokio runtime). It connects in the
    /// background: a Redis that is down at start is retried like one that goes away later.
    pub fn start(cfg: &RedisConfig) -> Result<RedisFanout, RedisConfigError> {
        let client = cfg.resolve()?;
        let (tx, rx) = mpsc::channel(cfg.queue);
        let stats = Arc::new(RedisStats::default());
        tokio::spawn(publisher(client, rx, stats.clone()));
        Ok(RedisFanout { tx, stats })
    }

    pub fn stats(&self) -> Arc<RedisStats> {
        self.stats.clone()
    }
}

impl Fanout for RedisFanout {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.stats.register(registry);
    }

    fn publish(&self, item: &Arc<Item>) {
        self.queue(Published::New(item.clone()));
    }

    fn edit(&self, item: &Arc<Item>) {
        self.queue(Published::Edit(item.clone()));
    }

    fn delete(&self, item: &Arc<Item>) {
        self.queue(Published::Deleted(item.clone()));
    }
}

impl RedisFanout {
    fn queue(&self, m: Published) {
        if self.tx.try_send(m).is_err() {
            self.stats.dropped.inc();
        }
    }
}

/// The backoff between connection attempts: 100 ms doubling to 10 s.
pub(crate) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
}

/// The `PUBLISH` commands for a batch of messages: one per (message, channel of its item), the `/ws` message's
/// JSON ([`Published::message`]) as the payload.
pub(crate) fn publish_commands(messages: &[Published]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(messages.len() * 3);
    for m in messages {
        // A message always serialises (plain strings and numbers; a NaN score would become null).
        let json = serde_json::to_string(&m.message()).unwrap_or_default();
        for ch in channels(m.item()) {
            out.push((ch, json.clone()));
        }
    }
    out
}

async fn publisher(client: redis::Client, mut rx: mpsc::Receiver<Published>, stats: Arc<RedisStats>) {
    let conn_cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut backoff = reconnect_backoff();
    let mut pending: Vec<Published> = Vec::new();
    let mut ever_connected = false;
    loop {
        let mut conn = match client.get_multiplexed_async_connection_with_config(&conn_cfg).await {
            Ok(c) => {
                if ever_connected {
                    stats.reconnects.inc();
                    tracing::info!("redis fan-out: reconnected");
                }
                ever_connected = true;
                stats.connected.set(1);
                c
            }
            Err(e) => {
                stats.failures.inc();
                let wait = backoff.fail(&SourceError::Transient(String::new()));
                tracing::warn!(error = ?e.kind(), retry_in_ms = wait.as_millis() as u64, "redis fan-out: connect failed");
                if rx.is_closed() && rx.is_empty() && pending.is_empty() {
                    return;
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(i) => pending.push(i),
                    None => return,
                }
                while pending.len() < BATCH {
                    match rx.try_recv() {
                        Ok(i) => pending.push(i),
                        Err(_) => break,
                    }
                }
            }
            let mut pipe = redis::pipe();
            for (ch, json) in publish_commands(&pending) {
                pipe.cmd("PUBLISH").arg(ch).arg(json).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    backoff.succeed();
                    stats.published.inc_by(pending.len() as u64);
                    pending.clear();
                }
                Err(e) => {
                    stats.failures.inc();
                    stats.connected.set(0);
                    let wait = backoff.fail(&SourceError::Transient(String::new()));
                    tracing::warn!(error = ?e.kind(), items = pending.len(), retry_in_ms = wait.as_millis() as u64,
                        "redis fan-out: publish failed; reconnecting");
                    tokio::time::sleep(wait).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Priority;

    fn item(id: &str, assets: &[&str], p: Priority) -> Arc<Item> {
        Arc::new(Item {
            id: id.into(),
            source: "s".into(),
            kind: "discord".into(),
            author: "a".into(),
            text: "t".into(),
            url: None,
            at_ms: 1,
            received_ms: 1,
            language: "en".into(),
            assets: assets.iter().map(|s| s.to_string()).collect(),
            sentiment: 0.5,
            score: 1.0,
            priority: p,
            version: 1,
            edited_ms: None,
            content_hash: 0,
            simhash: 0,
        })
    }

    #[test]
    fn one_publish_per_channel_with_the_ws_message_json() {
        let a = item("a", &["BTC"], Priority::High);
        let cmds = publish_commands(&[Published::New(a.clone()), Published::New(item("b", &[], Priority::Low))]);
        let chans: Vec<&str> = cmds.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            chans,
            vec!["social:asset:BTC", "social:priority:high", "social:all", "social:priority:low", "social:all"]
        );
        let v: serde_json::Value = serde_json::from_str(&cmds[0].1).unwrap();
        assert_eq!(v["type"], "item");
        assert_eq!(v["id"], "a");
        assert_eq!(v["assets"], serde_json::json!(["BTC"]));
        assert_eq!(v["priority"], "high");
        // Still an Item to a reader of the item fields only.
        assert_eq!(serde_json::from_str::<Item>(&cmds[0].1).unwrap().id, "a");

        // An edit: the new version on its channels; a deletion: on the channels of the item as it was.
        let mut edited = (*a).clone();
        edited.version = 2;
        edited.assets = vec!["ETH".into()];
        let cmds = publish_commands(&[Published::Edit(Arc::new(edited)), Published::Deleted(a)]);
        let chans: Vec<&str> = cmds.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            chans,
            vec![
                "social:asset:ETH",
                "social:priority:high",
                "social:all",
                "social:asset:BTC",
                "social:priority:high",
                "social:all"
            ]
        );
        let e: serde_json::Value = serde_json::from_str(&cmds[0].1).unwrap();
        assert_eq!((e["type"].as_str(), e["id"].as_str(), e["version"].as_u64()), (Some("edit"), Some("a"), Some(2)));
        let d: serde_json::Value = serde_json::from_str(&cmds[3].1).unwrap();
        assert_eq!(d, serde_json::json!({"type": "deleted", "id": "a", "source": "s"}));
    }

    #[test]
    fn config_errors_name_the_field() {
        let none = RedisConfig { url: None, url_env: None, queue: 10 };
        assert_eq!(none.resolve().err(), Some(RedisConfigError::UrlOrEnv));
        let env = RedisConfig { url: None, url_env: Some("KRONOS_TEST_REDIS_URL_THAT_IS_NOT_SET".into()), queue: 10 };
        assert!(env.resolve().unwrap_err().to_string().starts_with("redis.url_env:"));
        let bad = RedisConfig::with_url("http://example.invalid/");
        let e = bad.resolve().unwrap_err().to_string();
        assert!(e.starts_with("redis.url:"), "{e}");
        let q = RedisConfig { queue: 0, ..RedisConfig::with_url("redis://127.0.0.1/") };
        assert_eq!(q.resolve().err(), Some(RedisConfigError::Queue));
        assert!(RedisConfig::with_url("redis://127.0.0.1:6379/0").resolve().is_ok());
        let e = toml::from_str::<RedisConfig>("url = \"redis://x/\"\nqueu = 3").unwrap_err().to_string();
        assert!(e.contains("queu"), "{e}");
    }

    #[test]
    fn reconnect_backoff_doubles_to_ten_seconds() {
        let mut b = reconnect_backoff();
        let e = SourceError::Transient(String::new());
        let w: Vec<u64> = (0..9).map(|_| b.fail(&e).as_millis() as u64).collect();
        assert_eq!(w, vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        b.succeed();
        assert_eq!(b.fail(&e), Duration::from_millis(100));
    }
}
