//! `kronos social run`'s outputs from the outside: the monitor started from a configuration as the command starts it,
//! reading an RSS feed from a loopback HTTP server and the keeper's signals from a loopback `/ws` (the project's own
//! hub), serving REST, a filtered WebSocket, `/health` and `/metrics`. Every wait is for the event it checks.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use kronos_common::http_guard::{Guard, GuardMetrics, Limits};
use kronos_common::signal_ws::Hub;
use kronos_common::signal_ws::WsUpgrade;
use kronos_common::signals::Outcome;
use kronos_common::{Bus, Decimal, SignalKind};
use kronos_social::Config;
use kronos_testkit::rss::{wait_for, RssFeed};
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(60);

async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    a
}

async fn ws_hub(State(h): State<Hub>, up: WsUpgrade) -> Response {
    h.upgrade(up, None, false)
}

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next item a client receives (pings skipped).
async fn next_item(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next()).await.expect("an item within the deadline").unwrap().unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn rest_ws_health_metrics_and_the_keepers_signals() {
    let feed = RssFeed::start().await;
    let feed_url = feed.url();
    let bus = Bus::new(64);
    let hub = Hub::new(bus.clone(), Guard::new(Limits::default(), GuardMetrics::default()));
    let keeper_addr = serve(Router::new().route("/ws", get(ws_hub)).with_state(hub.clone())).await;

    let cfg = Config::parse(
        &format!(
            r#"
[social]
store = "sqlite::memory:"
listen = "127.0.0.1:0"
[[asset]]
symbol = "BTC"
names = ["bitcoin"]
[[asset]]
symbol = "ETH"
[[source]]
name = "feed"
kind = "rss"
url = "{feed_url}"
poll_s = 1
[[source]]
name = "keeper"
kind = "keeper"
url = "ws://{keeper_addr}/ws"
"#
        ),
        "test.toml",
    )
    .unwrap();
    let running = kronos_social::runner::start(&cfg).await.unwrap();
    let base = format!("http://{}", running.addr);

    let (mut btc, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?assets=BTC", running.addr)).await.unwrap();
    let (mut eth, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?assets=eth&min_score=0.1", running.addr)).await.unwrap();
    let (code, body) = get_json(&format!("{base}/api/social/items?min_score=abc")).await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().starts_with("min_score:"), "{body}");
    wait_for("both WebSocket clients counted", DEADLINE, || {
        let base = base.clone();
        async move {
            let m = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
            m.lines().any(|l| l == "social_ws_clients 2").then_some(())
        }
    })
    .await;

    feed.set(&[
        (3, "carol", "Nothing about coins, just a sunny day"),
        (2, "bob", "ETH gas fees crash to a yearly low, terrible week for validators"),
        (1, "alice", "Bitcoin rallies past the range high, great strength"),
    ]);
    let b = next_item(&mut btc).await;
    assert_eq!(b["assets"], serde_json::json!(["BTC"]), "{b}");
    assert_eq!(b["source"], "feed");
    assert!(b["sentiment"].as_f64().unwrap() > 0.5);
    let e = next_item(&mut eth).await;
    assert_eq!(e["assets"], serde_json::json!(["ETH"]), "the ETH client gets only ETH items: {e}");

    // The keeper's signals: once the monitor follows the hub, a settled round becomes an item.
    wait_for("the monitor following the keeper's /ws", DEADLINE, || {
        let hub = hub.clone();
        async move { (hub.guard().metrics().ws_subscribers.get() == 1).then_some(()) }
    })
    .await;
    bus.publish(
        "keeper",
        SignalKind::RoundSettled {
            chain: "base".into(),
            market: 1,
            epoch: 7,
            outcome: Outcome::Down,
            lock_price: "97000".parse::<Decimal>().unwrap(),
            close_price: "96900".parse::<Decimal>().unwrap(),
            total_wei: "0".into(),
            reward_wei: "0".into(),
            treasury_fee_wei: "0".into(),
            delay_blocks: 1,
        },
    );
    let k = wait_for("the settled round mirrored", DEADLINE, || {
        let base = base.clone();
        async move {
            let (_, v) = get_json(&format!("{base}/api/social/items?source=keeper")).await;
            v["items"].as_array().and_then(|a| a.first().cloned())
        }
    })
    .await;
    assert_eq!(k["text"], "Round settled on base: market 1 epoch 7 closed DOWN (97000 → 96900)");
    assert_eq!(k["kind"], "keeper");

    let (_, items) = get_json(&format!("{base}/api/social/items?asset=btc")).await;
    let items = items["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["author"], "alice");
    let (code, a) = get_json(&format!("{base}/api/social/assets/BTC?windows=1h,7d")).await;
    assert_eq!(code, 200);
    assert_eq!(a["windows"][0]["window"], "1h");
    assert_eq!(a["windows"][0]["volume"], 1);
    assert_eq!(a["windows"][0]["dominance"], 0.5, "one BTC and one ETH mention");
    assert_eq!(a["windows"][0]["balance"], 1.0);
    let (code, _) = get_json(&format!("{base}/api/social/assets/BTC?windows=2w")).await;
    assert_eq!(code, 400);
    let (code, h) = get_json(&format!("{base}/health")).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = h["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["feed", "keeper"]);
    assert_eq!(h["sources"][0]["accepted"], 3);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("social_items_accepted_total{source=\"feed\"} 3"), "{metrics}");
    running.stop().await;
}
