//! Discord edits and deletions through the whole monitor (started from a configuration as `kronos social run`
//! starts it, the gateway stand-in in place of Discord): an edited message is scored again under the same item id
//! (REST shows the new text and `version` 2, a `/ws` client gets a `type: edit` message), a deleted one (single and
//! bulk) is no longer served by REST, reaches `/ws` clients as `type: deleted`, and is counted on `/metrics`. The
//! same for an edit and a deletion made while the monitor was stopped and its Discord session expired: read back
//! over REST after the restart (the remembered messages are in the cursor saved in the store).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kronos_social::{Config, Item, WsMessage};
use kronos_testkit::discord::MockDiscord;
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(90);
const CHAN: u64 = 4_444_444_444;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> WsMessage<Item> {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a /ws message in time").unwrap().unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("{e}: {t}"));
        }
    }
}

async fn items(base: &str) -> Vec<Item> {
    let v: serde_json::Value =
        reqwest::get(format!("{base}/api/social/items?limit=100")).await.unwrap().json().await.unwrap();
    serde_json::from_value(v["items"].clone()).unwrap()
}

async fn metric(base: &str, line: &str) {
    let t = Instant::now();
    loop {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        if m.lines().any(|l| l == line) {
            return;
        }
        assert!(t.elapsed() < DEADLINE, "no '{line}' on /metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The monitor's config: a SQLite store in `dir`, BTC and ETH, one Discord source on [`CHAN`].
fn config(md: &MockDiscord, dir: &tempfile::TempDir) -> Config {
    std::env::set_var("KRONOS_TEST_EDITS_DISCORD_TOKEN", kronos_testkit::discord::TOKEN);
    Config::parse(
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
token_env = "KRONOS_TEST_EDITS_DISCORD_TOKEN"
channels = ["{CHAN}"]
api_url = "{api}"
"#,
            db = dir.path().join("social.sqlite").display(),
            api = md.api_url(),
        ),
        "test.toml",
    )
    .unwrap()
}

#[tokio::test]
async fn an_edit_is_scored_again_and_a_deletion_is_no_longer_served() {
    let md = MockDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&md, &dir);
    let running = kronos_social::runner::start(&cfg).await.unwrap();
    let base = format!("http://{}", running.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", running.addr)).await.unwrap();
    md.wait("the Discord session", DEADLINE, |m| m.live_sessions() == 1).await;

    let m1 = md.post(CHAN, "ada", "the weather is calm and the market is quiet today, nothing to report");
    let m2 = md.post(CHAN, "bob", "second message about ETH gas being cheap again this week");
    let m3 = md.post(CHAN, "cy", "third message, also about bitcoin miners selling a little");
    let m4 = md.post(CHAN, "dee", "fourth message: ETH staking yields went down slightly");
    let mut first = Vec::new();
    for _ in 0..4 {
        let WsMessage::Item(i) = next(&mut ws).await else { panic!("a new item first") };
        first.push(i);
    }
    let before = first[0].clone();
    assert_eq!((before.version, before.assets.len()), (1, 0), "{before:?}");

    // The edit: the same item, scored from its new text.
    md.edit(m1, "edited: bitcoin is breaking out, very bullish, great strength today");
    let WsMessage::Edit(after) = next(&mut ws).await else { panic!("the edit") };
    assert_eq!(after.id, before.id, "the same item id");
    assert_eq!(after.version, 2);
    assert_eq!(after.assets, vec!["BTC"]);
    assert!(after.sentiment > before.sentiment && after.score > before.score, "{before:?} → {after:?}");
    assert!(after.edited_ms.is_some());
    let stored = items(&base).await;
    assert_eq!(stored.len(), 4, "an edit is not a new item");
    let s1 = stored.iter().find(|i| i.id == before.id).unwrap();
    assert_eq!((s1.version, s1.text.as_str()), (2, after.text.as_str()));
    let btc: serde_json::Value =
        reqwest::get(format!("{base}/api/social/assets/BTC?windows=1h")).await.unwrap().json().await.unwrap();
    assert_eq!(btc["windows"][0]["volume"], 2, "the edited text's mention counts: {btc}");
    metric(&base, "social_items_edited_total{source=\"desk\"} 1").await;

    // A deletion, then a bulk deletion: gone from REST, announced on /ws, counted.
    md.delete(m2);
    let WsMessage::Deleted { id, source } = next(&mut ws).await else { panic!("the deletion") };
    assert_eq!((id.as_str(), source.as_str()), (first[1].id.as_str(), "desk"));
    md.delete_bulk(CHAN, &[m3, m4]);
    for want in [&first[2].id, &first[3].id] {
        let WsMessage::Deleted { id, .. } = next(&mut ws).await else { panic!("the bulk deletion") };
        assert_eq!(&id, want);
    }
    let left: Vec<String> = items(&base).await.into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![before.id.clone()], "deleted items are no longer served");
    metric(&base, "social_items_deleted_total{source=\"desk\"} 3").await;
    running.stop().await;
}

#[tokio::test]
async fn an_edit_and_a_deletion_made_while_stopped_beyond_a_resume_are_applied_after_the_restart() {
    let md = MockDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&md, &dir);
    let running = kronos_social::runner::start(&cfg).await.unwrap();
    let base = format!("http://{}", running.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", running.addr)).await.unwrap();
    md.wait("the Discord session", DEADLINE, |m| m.live_sessions() == 1).await;
    let m1 = md.post(CHAN, "ada", "the weather is calm and the market is quiet today, nothing to report");
    let m2 = md.post(CHAN, "bob", "second message about ETH gas being cheap again this week");
    let mut first = Vec::new();
    for _ in 0..2 {
        let WsMessage::Item(i) = next(&mut ws).await else { panic!("a new item") };
        first.push(i);
    }
    assert_eq!(items(&base).await.len(), 2);
    drop(ws);
    running.stop().await;
    md.wait("the old connection gone", DEADLINE, |m| m.live() == 0).await;

    // While stopped, the session expires (no RESUME can replay what follows): an edit and a deletion.
    md.expire_sessions();
    md.edit(m1, "edited while away: bitcoin is breaking out, very bullish");
    md.delete(m2);

    let running = kronos_social::runner::start(&cfg).await.unwrap();
    let base = format!("http://{}", running.addr);
    metric(&base, "social_items_deleted_total{source=\"desk\"} 1").await;
    metric(&base, "social_items_edited_total{source=\"desk\"} 1").await;
    // Connected after the changes went out: its first message is the live post below.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", running.addr)).await.unwrap();
    assert_eq!(md.identifies(), 2, "a new session after the restart");
    let stored = items(&base).await;
    assert_eq!(stored.len(), 1, "the deleted one is no longer served: {stored:?}");
    assert_eq!(stored[0].id, first[0].id);
    assert_eq!(stored[0].version, 2);
    assert_eq!(stored[0].text, "edited while away: bitcoin is breaking out, very bullish");
    assert_eq!(stored[0].assets, vec!["BTC"], "scored again from the new text");
    // Live again; nothing is applied twice.
    md.post(CHAN, "cy", "a third message after the restart about ETH fees");
    let WsMessage::Item(i) = next(&mut ws).await else { panic!("the live item") };
    assert_eq!(i.author, "cy");
    assert_eq!(items(&base).await.len(), 2);
    metric(&base, "social_items_edited_total{source=\"desk\"} 1").await;
    running.stop().await;
}
