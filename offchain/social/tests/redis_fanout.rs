//! The Redis fan-out against a real `redis-server` on loopback (tests/testkit/src/redis.rs): subscribers get items on
//! the asset / priority / all channels; edits and deletions reach the subscribers the item reached, as the `/ws`
//! messages (`edit`, `deleted`); a subscriber that disconnects does not stop the fan-out; a Redis restart is
//! survived with the failures counted and the publisher reconnected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kronos_social::fanout::redis::{RedisConfig, RedisFanout, RedisStats};
use kronos_social::{Fanout, Item, Priority};
use kronos_testkit::redis::RedisServer;

const DEADLINE: Duration = Duration::from_secs(60);

fn item(id: &str, assets: &[&str], p: Priority) -> Arc<Item> {
    Arc::new(Item {
        id: id.into(),
        source: "test".into(),
        kind: "discord".into(),
        author: "ada".into(),
        text: format!("{id} about {assets:?}"),
        url: None,
        at_ms: 1,
        received_ms: 2,
        language: "en".into(),
        assets: assets.iter().map(|s| s.to_string()).collect(),
        sentiment: 0.1,
        score: 2.0,
        priority: p,
        version: 1,
        edited_ms: None,
        content_hash: 0,
        simhash: 0,
    })
}

/// A subscriber on `channels`, yielding (channel, item id).
struct Sub {
    stream: redis::aio::PubSubStream,
}

impl Sub {
    async fn new(url: &str, channels: &[&str]) -> Sub {
        let client = redis::Client::open(url).unwrap();
        let t = Instant::now();
        let mut ps = loop {
            match client.get_async_pubsub().await {
                Ok(ps) => break ps,
                Err(e) => {
                    assert!(t.elapsed() < DEADLINE, "no pubsub connection to {url}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        for c in channels {
            ps.subscribe(*c).await.unwrap();
        }
        Sub { stream: ps.into_on_message() }
    }

    /// The next message: (channel, the item's id).
    async fn next(&mut self) -> (String, String) {
        let (ch, v) = self.next_json().await;
        (ch, v["id"].as_str().unwrap().to_string())
    }

    /// The next message: (channel, its JSON).
    async fn next_json(&mut self) -> (String, serde_json::Value) {
        let m = tokio::time::timeout(DEADLINE, self.stream.next()).await.expect("a message in time").expect("open");
        let payload: String = m.get_payload().unwrap();
        (m.get_channel_name().to_string(), serde_json::from_str(&payload).unwrap())
    }
}

async fn wait_for(stats: &RedisStats, what: &str, f: impl Fn(&kronos_social::fanout::redis::RedisSnapshot) -> bool) {
    let t = Instant::now();
    loop {
        let s = stats.snapshot();
        if f(&s) {
            return;
        }
        assert!(t.elapsed() < DEADLINE, "waited for {what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `it` until the subscriber sees it (the publisher may not be connected yet, or the subscription may be
/// registered after a first publish): returns the channel it arrived on.
async fn publish_until_seen(f: &RedisFanout, sub: &mut Sub, it: &Arc<Item>) -> String {
    let t = Instant::now();
    loop {
        f.publish(it);
        if let Ok((ch, id)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
            if id == it.id {
                return ch;
            }
        }
        assert!(t.elapsed() < DEADLINE, "{} never arrived: {:?}", it.id, f.stats().snapshot());
    }
}

#[tokio::test]
async fn subscribers_get_items_on_their_channels_and_one_leaving_changes_nothing() {
    let server = RedisServer::start().unwrap();
    let fanout = RedisFanout::start(&RedisConfig::with_url(server.url())).unwrap();
    let stats = fanout.stats();
    wait_for(&stats, "a connection", |s| s.connected).await;

    let mut btc = Sub::new(&server.url(), &["social:asset:BTC"]).await;
    let mut high = Sub::new(&server.url(), &["social:priority:high"]).await;
    let mut all = Sub::new(&server.url(), &["social:all"]).await;

    // Subscriptions are registered once SUBSCRIBE returned; the first item reaches each of them.
    let a = item("a", &["BTC", "ETH"], Priority::High);
    fanout.publish(&a);
    assert_eq!(btc.next().await, ("social:asset:BTC".into(), "a".into()));
    assert_eq!(high.next().await, ("social:priority:high".into(), "a".into()));
    assert_eq!(all.next().await, ("social:all".into(), "a".into()));

    // An ETH item of normal priority reaches `all` only: the next thing `btc` and `high` see is item c.
    fanout.publish(&item("b", &["ETH"], Priority::Normal));
    assert_eq!(all.next().await.1, "b");

    // One subscriber disconnects; the fan-out keeps going for the others.
    drop(high);
    let c = item("c", &["BTC"], Priority::High);
    fanout.publish(&c);
    assert_eq!(btc.next().await, ("social:asset:BTC".into(), "c".into()));
    assert_eq!(all.next().await.1, "c");
    for i in 0..20 {
        fanout.publish(&item(&format!("d{i}"), &["BTC"], Priority::Low));
    }
    for i in 0..20 {
        assert_eq!(btc.next().await.1, format!("d{i}"), "in order");
    }
    wait_for(&stats, "23 published", |s| s.published == 23).await;
    let s = stats.snapshot();
    assert_eq!((s.failures, s.dropped, s.reconnects), (0, 0, 0), "{s:?}");
}

#[tokio::test]
async fn edits_and_deletions_reach_the_subscribers_the_item_reached() {
    let server = RedisServer::start().unwrap();
    let fanout = RedisFanout::start(&RedisConfig::with_url(server.url())).unwrap();
    let stats = fanout.stats();
    wait_for(&stats, "a connection", |s| s.connected).await;
    let mut btc = Sub::new(&server.url(), &["social:asset:BTC"]).await;
    let mut eth = Sub::new(&server.url(), &["social:asset:ETH"]).await;
    let mut all = Sub::new(&server.url(), &["social:all"]).await;

    let a = item("a", &["BTC"], Priority::High);
    fanout.publish(&a);
    let (_, v) = btc.next_json().await;
    assert_eq!((v["type"].as_str(), v["id"].as_str(), v["version"].as_u64()), (Some("item"), Some("a"), Some(1)));
    assert_eq!(all.next_json().await.1["type"], "item");

    // Edited at the source: the new version (same id) on the channels of the item as edited.
    let mut edited = (*a).clone();
    edited.text = "a, edited".into();
    edited.version = 2;
    let edited = Arc::new(edited);
    fanout.edit(&edited);
    let (ch, v) = btc.next_json().await;
    assert_eq!(ch, "social:asset:BTC");
    assert_eq!((v["type"].as_str(), v["id"].as_str(), v["version"].as_u64()), (Some("edit"), Some("a"), Some(2)));
    assert_eq!(v["text"], "a, edited");
    assert_eq!(all.next_json().await.1["type"], "edit");

    // Deleted at the source: `deleted` with its id and source, to the subscribers the item reached.
    fanout.delete(&edited);
    let want = serde_json::json!({"type": "deleted", "id": "a", "source": "test"});
    assert_eq!(btc.next_json().await, ("social:asset:BTC".to_string(), want.clone()));
    assert_eq!(all.next_json().await, ("social:all".to_string(), want));

    // The ETH subscriber got nothing of item a: its first message is the next ETH item.
    fanout.publish(&item("b", &["ETH"], Priority::Low));
    assert_eq!(eth.next().await, ("social:asset:ETH".into(), "b".into()));
    wait_for(&stats, "4 published", |s| s.published == 4).await;
}

#[tokio::test]
async fn a_redis_restart_is_counted_and_the_publisher_reconnects() {
    let mut server = RedisServer::start().unwrap();
    let fanout = RedisFanout::start(&RedisConfig::with_url(server.url())).unwrap();
    let stats = fanout.stats();
    let mut sub = Sub::new(&server.url(), &["social:all"]).await;
    assert_eq!(publish_until_seen(&fanout, &mut sub, &item("before", &[], Priority::Low)).await, "social:all");

    server.stop();
    // The next publish fails; the publisher keeps the item and retries the connection with a backoff, counting
    // each failure.
    fanout.publish(&item("during", &[], Priority::Low));
    wait_for(&stats, "the lost connection noticed", |s| !s.connected && s.failures >= 1).await;
    wait_for(&stats, "failed reconnects counted", |s| s.failures >= 3).await;
    let down = stats.snapshot();
    assert_eq!(down.reconnects, 0, "{down:?}");

    server.start_again().unwrap();
    wait_for(&stats, "a reconnect", |s| s.connected && s.reconnects == 1).await;
    // The item queued while Redis was down was sent after the reconnect.
    wait_for(&stats, "the queued item published", |s| s.published >= 2).await;
    let mut sub = Sub::new(&server.url(), &["social:all"]).await;
    assert_eq!(publish_until_seen(&fanout, &mut sub, &item("after", &["SOL"], Priority::Normal)).await, "social:all");
    let s = stats.snapshot();
    assert_eq!(s.dropped, 0, "{s:?}");
    assert!(s.failures >= 3, "{s:?}");
}
