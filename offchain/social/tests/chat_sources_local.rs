//! The monitor as `kronos social run` starts it, with a Discord source (the local gateway stand-in), a Telegram
//! source (the local Bot API server) and the Redis fan-out (a real `redis-server`): chat messages come out scored on
//! the Redis channels and in the REST API; after a stop and a start on the same SQLite store, messages posted while
//! it was down come out once and nothing from before is repeated; a Discord edit and a deletion come out on Redis as
//! `edit` and `deleted` messages, like the `/ws`. Every wait is for the event it checks.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kronos_social::Config;
use kronos_testkit::discord::MockDiscord;
use kronos_testkit::redis::RedisServer;
use kronos_testkit::telegram::MockTelegram;

const DEADLINE: Duration = Duration::from_secs(90);
const CHAN: u64 = 3_333_333_333;
const TG: i64 = -1_001_234_567_890;

async fn subscribe(url: &str, channels: &[&str]) -> redis::aio::PubSubStream {
    let mut ps = redis::Client::open(url).unwrap().get_async_pubsub().await.unwrap();
    for c in channels {
        ps.subscribe(*c).await.unwrap();
    }
    ps.into_on_message()
}

/// The next item on a subscription: (channel, JSON).
async fn next(s: &mut redis::aio::PubSubStream) -> (String, serde_json::Value) {
    let m = tokio::time::timeout(DEADLINE, s.next()).await.expect("an item on Redis in time").unwrap();
    let p: String = m.get_payload().unwrap();
    (m.get_channel_name().to_string(), serde_json::from_str(&p).unwrap())
}

async fn texts(base: &str) -> Vec<(String, String)> {
    let v: serde_json::Value =
        reqwest::get(format!("{base}/api/social/items?limit=100")).await.unwrap().json().await.unwrap();
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap().to_string(), i["text"].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn discord_and_telegram_through_the_pipeline_to_redis_and_back_after_a_restart() {
    let redis = RedisServer::start().unwrap();
    let md = MockDiscord::start().await;
    let mt = MockTelegram::start().await;
    std::env::set_var("KRONOS_TEST_CHAT_DISCORD_TOKEN", kronos_testkit::discord::TOKEN);
    std::env::set_var("KRONOS_TEST_CHAT_TG_TOKEN", kronos_testkit::telegram::TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(
        &format!(
            r#"
[social]
store = "sqlite:{db}"
listen = "127.0.0.1:0"
[[asset]]
symbol = "BTC"
names = ["bitcoin"]
[[asset]]
symbol = "ETH"
[[source]]
name = "desk"
kind = "discord"
token_env = "KRONOS_TEST_CHAT_DISCORD_TOKEN"
channels = ["{CHAN}"]
api_url = "{api}"
[[source]]
name = "news"
kind = "telegram"
token_env = "KRONOS_TEST_CHAT_TG_TOKEN"
api_url = "{tg}"
chats = [{TG}]
poll_timeout_s = 1
[redis]
url = "{redis}"
"#,
            db = dir.path().join("social.sqlite").display(),
            api = md.api_url(),
            tg = mt.url(),
            redis = redis.url(),
        ),
        "test.toml",
    )
    .unwrap();

    let mut btc = subscribe(&redis.url(), &["social:asset:BTC"]).await;
    let mut all = subscribe(&redis.url(), &["social:all"]).await;
    let running = kronos_social::runner::start(&cfg).await.unwrap();
    md.wait("the Discord session", DEADLINE, |m| m.live_sessions() == 1).await;

    let first = md.post(CHAN, "ada", "bitcoin is breaking out, very bullish today");
    let (ch, v) = next(&mut btc).await;
    assert_eq!(ch, "social:asset:BTC");
    assert_eq!(v["type"], "item");
    let first_id = v["id"].as_str().unwrap().to_string();
    assert_eq!((v["kind"].as_str(), v["source"].as_str()), (Some("discord"), Some("desk")));
    assert_eq!(v["assets"], serde_json::json!(["BTC"]));
    assert!(v["sentiment"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(next(&mut all).await.1["kind"], "discord");

    mt.channel_post(TG, "$ETH unlock next week looks terrible for holders");
    let (_, v) = next(&mut all).await;
    assert_eq!((v["kind"].as_str(), v["source"].as_str()), (Some("telegram"), Some("news")));
    assert_eq!(v["assets"], serde_json::json!(["ETH"]));

    let base = format!("http://{}", running.addr);
    assert_eq!(texts(&base).await.len(), 2);
    // The Redis publisher's counters are on /metrics.
    let t = Instant::now();
    loop {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        if m.contains("social_redis_published_total 2") && m.contains("social_redis_connected 1") {
            assert!(m.contains("social_redis_failures_total 0"), "{m}");
            break;
        }
        assert!(t.elapsed() < DEADLINE, "no Redis counters on /metrics: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
    md.wait("the old Discord connection gone", DEADLINE, |m| m.live() == 0).await;

    // Posted while the monitor is down.
    md.post(CHAN, "bob", "second discord message about bitcoin fees rising");
    mt.channel_post(TG, "second telegram post: ETH gas is cheap again");

    let running = kronos_social::runner::start(&cfg).await.unwrap();
    let base = format!("http://{}", running.addr);
    let t = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        assert!(t.elapsed() < DEADLINE, "after the restart: {seen:?}");
        seen.push(next(&mut all).await.1["text"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["second discord message about bitcoin fees rising", "second telegram post: ETH gas is cheap again"]
    );
    assert_eq!(md.identifies(), 1, "the saved Discord session was resumed");
    let stored = texts(&base).await;
    assert_eq!(stored.len(), 4, "each message stored once: {stored:?}");

    // An edit and a deletion at the source reach the Redis subscribers as the /ws messages do.
    md.edit(first, "bitcoin is breaking out, edited: still very bullish");
    let (_, v) = next(&mut all).await;
    assert_eq!(
        (v["type"].as_str(), v["id"].as_str(), v["version"].as_u64()),
        (Some("edit"), Some(&*first_id), Some(2))
    );
    assert_eq!(v["text"], "bitcoin is breaking out, edited: still very bullish");
    md.delete(first);
    let (_, v) = next(&mut all).await;
    assert_eq!(v, serde_json::json!({"type": "deleted", "id": first_id, "source": "desk"}));
    // The BTC subscriber got the item, so it gets the deletion too (after the messages queued before it).
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < DEADLINE, "no deletion on the BTC channel");
        let (ch, v) = next(&mut btc).await;
        assert_eq!(ch, "social:asset:BTC");
        if v["type"] == "deleted" {
            assert_eq!(v["id"].as_str(), Some(&*first_id));
            break;
        }
    }
    running.stop().await;
}
