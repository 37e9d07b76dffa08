//! The social monitor's high-priority items as Telegram alerts, end to end on loopback: a running social monitor
//! (`kronos_social::runner::start`, reading an RSS feed from a loopback HTTP server), the bot following its `/ws`,
//! and the local Telegram Bot API server. Every wait is for the event it checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kronos_social::{Fanout, Item, Priority};
use kronos_telegram::{Backend, Config, Signals, TelegramBot};
use kronos_testkit::rss::{wait_for, RssFeed};
use kronos_testkit::telegram::{MockTelegram, TOKEN};

const CHAT: i64 = 111;
const DEADLINE: Duration = Duration::from_secs(30);

static N: AtomicU64 = AtomicU64::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A social monitor on `port`: BTC and ETH, one trusted RSS feed; an asset post with |sentiment| ≥ 0.5 is `high`
/// (score ≥ 1.0), a post without an asset `low` (score ≤ 0.45).
async fn monitor(port: u16, feed_url: &str) -> kronos_social::runner::Running {
    let cfg = kronos_social::Config::parse(
        &format!(
            r#"
[social]
store = "sqlite::memory:"
listen = "127.0.0.1:{port}"
[pipeline]
max_text_bytes = 20000
[score]
high = 1.0
normal = 0.5
[[asset]]
symbol = "BTC"
names = ["bitcoin"]
[[asset]]
symbol = "ETH"
[[source]]
name = "nitter-btc"
kind = "rss"
url = "{feed_url}"
poll_s = 1
trusted = true
"#
        ),
        "social.toml",
    )
    .unwrap();
    kronos_social::runner::start(&cfg).await.unwrap()
}

async fn metric(url: &str, name: &str) -> Option<u64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

struct World {
    tg: MockTelegram,
    _dir: tempfile::TempDir,
    bot_port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<SocketAddr>>>,
}

impl World {
    /// The bot, alerting chat [`CHAT`] from the monitor at `monitor_port`, `burst` alerts per 2 s window.
    async fn start(monitor_port: u16, burst: u32) -> World {
        let env = format!("KT_SOCIAL_TOKEN_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        std::env::set_var(&env, TOKEN);
        let tg = MockTelegram::start().await;
        let dir = tempfile::tempdir().unwrap();
        let bot_port = free_port();
        let text = format!(
            r#"[telegram]
token_env = "{env}"
api_url = "{url}"
poll_timeout_s = 1
listen = "127.0.0.1:{bot_port}"
state_file = "{dir}/state.json"
[telegram.allow]
control = [{CHAT}]
[telegram.alerts]
chats = [{CHAT}]
burst = {burst}
window = "2s"
[telegram.social]
url = "ws://127.0.0.1:{monitor_port}/ws"
min_priority = "high"
assets = ["BTC", "ETH"]
"#,
            url = tg.url(),
            dir = dir.path().display()
        );
        let cfg = Config::parse("t.toml", &text).unwrap();
        let bot = TelegramBot::new(cfg, Backend::new(None, None, None)).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bot.run(Signals::None, async {
            let _ = rx.await;
        }));
        World { tg, _dir: dir, bot_port, stop: Some(tx), task: Some(task) }
    }

    /// Waits until the monitor at `monitor_port` counts the bot as its WebSocket client.
    async fn connected(&self, monitor_port: u16) {
        let url = format!("http://127.0.0.1:{monitor_port}/metrics");
        wait_for("the bot following the social monitor", DEADLINE, || {
            let url = url.clone();
            async move { (metric(&url, "social_ws_clients").await == Some(1)).then_some(()) }
        })
        .await;
    }

    async fn bot_metric(&self, name: &str) -> Option<u64> {
        metric(&format!("http://127.0.0.1:{}/metrics", self.bot_port), name).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("bot stops").unwrap().unwrap();
    }
}

fn item(n: u32, text: &str, priority: Priority) -> Arc<Item> {
    Arc::new(Item {
        id: format!("{n:016x}"),
        source: "nitter-btc".into(),
        kind: "rss".into(),
        author: format!("author{n}"),
        text: text.into(),
        url: Some(format!("https://nitter.example/a/status/{n}")),
        at_ms: 1,
        received_ms: 1,
        language: "en".into(),
        assets: vec!["BTC".into()],
        sentiment: 0.9,
        score: 1.6,
        priority,
        version: 1,
        edited_ms: None,
        content_hash: u64::from(n),
        simhash: u64::from(n),
    })
}

#[tokio::test]
async fn a_high_priority_item_becomes_one_alert_and_a_low_one_never_crosses_the_wire() {
    let feed = RssFeed::start().await;
    let port = free_port();
    let running = monitor(port, &feed.url()).await;
    let w = World::start(port, 5).await;
    w.connected(port).await;

    feed.set(&[
        (1, "carol", "Nothing about coins, just a sunny day"),
        (4, "erin", "Bitcoin opened the week at the usual level"),
        (2, "alice", "Bitcoin rallies past the range high, great strength"),
    ]);
    let s = w.tg.wait_sent(CHAT, 1).await;
    let a = &s[0];
    assert_eq!(a.parse_mode.as_deref(), Some("HTML"), "{a:?}");
    assert!(a.text.starts_with("📣 BTC · score "), "{}", a.text);
    assert!(a.text.contains("(high)\nnitter-btc · alice: Bitcoin rallies past the range high"), "{}", a.text);
    assert!(a.text.contains("sentiment +0."), "{}", a.text);
    assert!(a.text.ends_with("<a href=\"https://nitter.example/alice/status/2\">link</a>"), "{}", a.text);
    assert!(!a.silent);
    assert!(a.link_preview_disabled, "a social alert quotes strangers' links: sent without a link preview: {a:?}");

    // All three were stored (low: no asset; normal: a BTC post in plain words); only the high one went out on the
    // bot's socket, which asked for BTC and ETH at `high`.
    let base = format!("http://127.0.0.1:{port}");
    wait_for("the three items stored", DEADLINE, || {
        let base = base.clone();
        async move {
            let v: serde_json::Value =
                reqwest::get(format!("{base}/api/social/items")).await.ok()?.json().await.ok()?;
            let items = v["items"].as_array()?;
            (items.len() == 3).then(|| {
                let p: Vec<&str> = items.iter().filter_map(|i| i["priority"].as_str()).collect();
                assert!(p.contains(&"low") && p.contains(&"normal") && p.contains(&"high"), "{v}");
            })
        }
    })
    .await;
    assert_eq!(metric(&format!("{base}/metrics"), "social_ws_items_sent_total").await, Some(1));

    // A later high item is the next message: the low one never became one.
    feed.set(&[
        (1, "carol", "Nothing about coins, just a sunny day"),
        (4, "erin", "Bitcoin opened the week at the usual level"),
        (2, "alice", "Bitcoin rallies past the range high, great strength"),
        (3, "dave", "ETH is crashing hard, terrible panic and awful losses"),
    ]);
    let s = w.tg.wait_sent(CHAT, 2).await;
    assert!(s[1].text.starts_with("📣 ETH · ") && s[1].text.contains("sentiment -0."), "{}", s[1].text);
    assert_eq!(w.tg.sent_to(CHAT).len(), 2);
    assert!(w.tg.sent().iter().all(|m| !m.text.contains("sunny") && !m.text.contains("usual")), "{:?}", w.tg.sent());
    assert_eq!(w.bot_metric("kronos_telegram_social_alerts_sent_total").await, Some(2));
    w.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn a_flood_of_social_items_becomes_the_summary_and_hostile_text_arrives_escaped() {
    let port = free_port();
    let running = monitor(port, "http://127.0.0.1:9/feed.xml").await;
    let w = World::start(port, 2).await;
    w.connected(port).await;

    // Hostile text first: HTML and Markdown specials, 10 KB.
    let hostile = format!(
        "<b>pump</b> & <a href=\"https://evil.example\">dump</a> *bold* _it_ `code` [x](y) {}",
        "A".repeat(10_000)
    );
    let mut h = (*item(1, &hostile, Priority::High)).clone();
    h.url = Some("javascript:alert(1)".into());
    running.monitor.bus.publish(&Arc::new(h));
    let s = w.tg.wait_sent(CHAT, 1).await;
    let t = &s[0].text;
    assert!(
        t.contains("&lt;b&gt;pump&lt;/b&gt; &amp; &lt;a href=\"https://evil.example\"&gt;dump&lt;/a&gt; *bold* _it_ `code` [x](y) AAA"),
        "{t}"
    );
    assert!(!t.contains("<b>") && !t.contains("<a ") && !t.contains("javascript"), "{t}");
    assert!(t.ends_with('…') && t.chars().count() < 800, "{} chars", t.chars().count());

    // A flood: 10 more high items (and low ones the monitor keeps to itself). The burst of 2 per window is spent
    // by the hostile one and the next; the other 9 become one summary.
    for n in 0..10 {
        running.monitor.bus.publish(&item(100 + n, &format!("BTC item {n}"), Priority::High));
        running.monitor.bus.publish(&item(200 + n, &format!("low {n}"), Priority::Low));
    }
    let s = w.tg.wait_sent(CHAT, 3).await;
    assert!(s[1].text.contains("BTC item 0"), "{}", s[1].text);
    assert!(s[2].text.contains("9 more alerts in the last 2 s: 9 social"), "{}", s[2].text);
    assert_eq!(w.bot_metric("kronos_telegram_social_alerts_sent_total").await, Some(2));
    assert_eq!(w.bot_metric("kronos_telegram_social_alerts_suppressed_total").await, Some(9));
    w.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn the_bot_follows_the_monitor_across_a_restart() {
    let port = free_port();
    let first = monitor(port, "http://127.0.0.1:9/feed.xml").await;
    let w = World::start(port, 5).await;
    w.connected(port).await;
    first.monitor.bus.publish(&item(1, "BTC before the restart", Priority::High));
    w.tg.wait_sent(CHAT, 1).await;
    first.stop().await;
    let second = monitor(port, "http://127.0.0.1:9/feed.xml").await;
    w.connected(port).await;
    second.monitor.bus.publish(&item(2, "BTC after the restart", Priority::High));
    let s = w.tg.wait_sent(CHAT, 2).await;
    assert!(s[1].text.contains("BTC after the restart"), "{}", s[1].text);
    w.stop().await;
    second.stop().await;
}
