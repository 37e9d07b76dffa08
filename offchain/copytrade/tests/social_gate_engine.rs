//! The social gate as a step of the engine (issue 17): a paper copy-trader in AI mode against the local exchange,
//! its `[copytrade.ai.social_gate]` pointed at a real social monitor on loopback (store, pipeline and REST server of
//! `kronos-social`). Forecasts come on the bus; what the engine does with each is read from its events (the
//! `ai_signal` event records the target after the gate), its positions and its `ai_gate_refused` counter.
//!
//! The same forecast (p_up 0.55, a long of 0.05 BTC without the gate) is refused while the monitor has no BTC item
//! (stale) and while its BTC items score below `min_score`, let through once they score above it, and refused again
//! — closing the position it opened — once the monitor cannot be read. Without the gate step in
//! `Engine::on_forecast` the first forecast opens 0.05 BTC and the test fails at its first check.

mod common;

use std::time::Duration;

use common::*;
use kronos_common::SignalKind;
use kronos_copytrade::ai_gate::{read, SocialGate};
use kronos_copytrade::Config;
use kronos_social::item::RawItem;
use kronos_social::pipeline::{Origin, Rules};
use kronos_social::runner::Monitor;
use kronos_social::server::Server;
use kronos_social::Store;

const MIN_SCORE: f64 = 0.9;

fn d0() -> kronos_common::Decimal {
    common::d("0")
}

fn forecast(epoch: u64, p_up: f64) -> SignalKind {
    SignalKind::Forecast { chain: "base".into(), market: 1, epoch, p_up, horizon_s: 600, model: "t".into() }
}

/// Waits for the engine's `ai_signal` event of `epoch` (`base:1 epoch 7 p_up 5500 bps: edge …, target …`) and
/// returns the target it records — the one after the gate — with the detail.
async fn ai_signal(store: &kronos_copytrade::Store, epoch: u64) -> (kronos_common::Decimal, String) {
    let needle = format!("base:1 epoch {epoch} p_up");
    wait_event(&format!("the ai_signal of epoch {epoch}"), store, "ai_signal", &needle).await;
    let events = store.events(500).await.unwrap();
    let detail = events.into_iter().find(|e| e.kind == "ai_signal" && e.detail.contains(&needle)).unwrap().detail;
    let target = detail.rsplit("target ").next().unwrap().parse().unwrap_or_else(|e| panic!("{detail}: {e:?}"));
    (target, detail)
}

/// Posts `texts` to the monitor as one batch of a news source (one author each, so no spam rule applies).
async fn post(m: &Monitor, first_id: u64, texts: &[&str]) {
    let origin = Origin { name: "news".into(), kind: "rss".into(), weight: 1.0, trusted: false };
    let items = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut r = RawItem::new((first_id + i as u64).to_string(), *t);
            r.author = Some(format!("author{}", first_id + i as u64));
            Ok(r)
        })
        .collect();
    let (written, _) = m.ingest(&origin, items, "{}", kronos_social::now_ms()).await.unwrap();
    assert_eq!(written.len(), texts.len(), "every post accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_refuses_ai_entries_the_social_monitor_does_not_back_and_lets_others_through() {
    // The monitor, empty at first.
    let m = Monitor::new(Store::connect("sqlite::memory:").await.unwrap(), Rules::default(), vec![]).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = Server::new(m.clone(), Default::default());
    let (down_tx, down_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        server
            .serve(l, async {
                let _ = down_rx.await;
            })
            .await
    });
    let gate = SocialGate {
        url: format!("http://{addr}").parse().unwrap(),
        asset: "BTC".into(),
        min_score: MIN_SCORE,
        max_age: Duration::from_secs(3600),
    };
    let http = reqwest::Client::new();

    let w = World::new().await;
    let ai = format!(
        "[copytrade.ai]\nsource = \"bus\"\nmarkets = {{ \"base:1\" = \"BTCUSDT\" }}\nkelly_fraction = \"0.5\"\n\
         payoff = \"1\"\nmin_edge = \"0.02\"\nmax_notional = \"3250\"\n\
         [copytrade.ai.social_gate]\nurl = \"http://{addr}\"\nasset = \"BTC\"\nmin_score = {MIN_SCORE}\nmax_age = \"1h\"\n"
    );
    let cfg = Config::parse("t.toml", &w.config_text("paper", SIZING, PROTECTION, "enabled = false", &ai)).unwrap();
    assert!(cfg.ai.as_ref().unwrap().social_gate.is_some());
    let r = w.start(&cfg).await;
    let store = r.handles.store.clone();
    let status = r.handles.status.clone();
    let refused = || r.handles.metrics.ai_gate_refused.get();

    // 1. No BTC item in the window (social data missing): refused as stale, the target recorded as flat.
    assert_eq!(read(&http, &gate).await.unwrap().volume, 0);
    w.bus.publish("forecaster", forecast(7, 0.55));
    let (t, d) = ai_signal(&store, 7).await;
    assert_eq!(t, d0(), "a stale monitor must refuse the entry: {d}");
    wait_event("the stale refusal", &store, "ai_gate_refused", "epoch 7: no BTC item").await;
    assert_eq!(refused(), 1);
    assert!(status.lock().positions.is_empty(), "{:?}", status.lock().positions);

    // 2. BTC items (cashtags: the default rules configure no tickers) that say little (neutral: score below min_score): refused as below the threshold.
    post(
        &m,
        1,
        &[
            "$BTC trades near 97000 on the main exchanges this afternoon",
            "The $BTC network processed about four hundred thousand transactions yesterday",
        ],
    )
    .await;
    let low = read(&http, &gate).await.unwrap();
    assert!(low.volume == 2 && low.mean_score < MIN_SCORE, "{low:?}");
    w.bus.publish("forecaster", forecast(8, 0.55));
    let (t, d) = ai_signal(&store, 8).await;
    assert_eq!(t, d0(), "a score below min_score must refuse the entry: {d}");
    wait_event("the low-score refusal", &store, "ai_gate_refused", &format!("below {MIN_SCORE}")).await;
    assert_eq!(refused(), 2);
    assert!(status.lock().positions.is_empty(), "{:?}", status.lock().positions);

    // 3. Strongly positive BTC chatter lifts the window's mean above min_score: the same forecast goes long
    // (p_up 0.55 → 0.05 BTC, as without a gate).
    post(
        &m,
        3,
        &[
            "$BTC rallies hard, a bullish breakout and a great, wonderful day for bitcoin holders",
            "Amazing strong weekly close for $BTC, buyers love it and the mood is excellent and happy",
            "$BTC surges to a new ath, fantastic gains, the best rally this year, wagmi",
            "Superb $BTC breakout: brilliant momentum, glorious volume, bullish everywhere",
        ],
    )
    .await;
    let high = read(&http, &gate).await.unwrap();
    assert!(high.volume == 6 && high.mean_score >= MIN_SCORE, "{high:?}");
    w.bus.publish("forecaster", forecast(9, 0.55));
    let (t, d) = ai_signal(&store, 9).await;
    assert_eq!(t, common::d("0.05"), "{d}");
    wait_for("the AI long", || status.lock().positions.iter().any(|p| p.symbol == "BTCUSDT" && p.qty == "0.05")).await;
    assert_eq!(refused(), 2, "an entry the monitor backs is not counted as refused");

    // 4. The monitor goes away: keeping the long is an entry the gate cannot check → refused (unreadable), and the
    // position it opened is closed (fail closed).
    down_tx.send(()).unwrap();
    served.await.unwrap().unwrap();
    assert!(read(&http, &gate).await.is_err(), "the monitor no longer answers");
    w.bus.publish("forecaster", forecast(10, 0.55));
    let (t, d) = ai_signal(&store, 10).await;
    assert_eq!(t, d0(), "an unreadable monitor must refuse: {d}");
    wait_event("the unreadable refusal", &store, "ai_gate_refused", "epoch 10: social monitor unreadable").await;
    wait_for("the AI long closed", || status.lock().positions.is_empty()).await;
    assert_eq!(refused(), 3);
    r.stop().await;
}
