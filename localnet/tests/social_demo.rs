//! The demo's social monitor (issue 17): started as `kronos demo` starts it — the example configuration, the bundled
//! fixture feeds on a free loopback port, the keeper source following a signal `/ws` served from the demo's bus
//! (the keeper's API serves its `/ws` with the same hub) — the keeper's signals become items, the feeds are ingested,
//! and the summary's section reports what the store holds.

use std::time::{Duration, Instant};

use axum::routing::get;
use kronos_common::http_guard::{Guard, GuardMetrics, Limits};
use kronos_common::signal_ws::Hub;
use kronos_common::signal_ws::WsUpgrade;
use kronos_common::signals::{Outcome, SignalKind};
use kronos_common::{Bus, Decimal};
use kronos_localnet::demo::social::SocialDemo;
use tokio_util::sync::CancellationToken;

fn settled(epoch: u64) -> SignalKind {
    SignalKind::RoundSettled {
        chain: "base".into(),
        market: 1,
        epoch,
        outcome: Outcome::Up,
        lock_price: "97000.5".parse::<Decimal>().unwrap(),
        close_price: "97100".parse::<Decimal>().unwrap(),
        total_wei: "0".into(),
        reward_wei: "0".into(),
        treasury_fee_wei: "0".into(),
        delay_blocks: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_monitor_mirrors_the_keepers_signals_and_reads_the_fixture_feeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::new(1024);
    let hub = Hub::new(bus.clone(), Guard::new(Limits::default(), GuardMetrics::default()));
    let app = axum::Router::new().route("/ws", get(move |up: WsUpgrade| async move { hub.upgrade(up, None, false) }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = format!("ws://{}/ws", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let social = SocialDemo::start(&root, &dir.path().join("social.db"), &ws, &cancel, &mut tasks)
        .await
        .expect("the demo's monitor starts from the example configuration");
    assert_eq!(social.keeper_source, "keeper");

    // The keeper source connected: the hub reads the bus once its first client is there.
    let deadline = Instant::now() + Duration::from_secs(120);
    while bus.subscribers() == 0 {
        assert!(Instant::now() < deadline, "the keeper source never connected to the /ws");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for epoch in 1..=3 {
        bus.publish("keeper", settled(epoch));
    }
    // A round starting is not mirrored (only settled/refunded rounds, reveals, fills, stops, health, risk).
    bus.publish(
        "keeper",
        SignalKind::RoundStarted {
            chain: "base".into(),
            market: 1,
            epoch: 4,
            start_at: 0,
            lock_at: 300,
            close_at: 600,
        },
    );
    let summary = loop {
        let s = social.summary(5).await.unwrap();
        let feeds = s.sources.iter().filter(|r| r.source != "keeper" && r.items > 0).count();
        if s.mirrored >= 3 && feeds == 3 {
            break s;
        }
        assert!(Instant::now() < deadline, "waiting for 3 mirrored items and items from the 3 feeds: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(summary.mirrored, 3, "three settled rounds, the round start not mirrored");
    let items = social
        .running
        .monitor
        .store
        .items(&kronos_social::store::ItemQuery { source: Some("keeper".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert!(items.iter().any(|i| i.item.text == "Round settled on base: market 1 epoch 2 closed UP (97000.5 → 97100)"));
    assert!(items.iter().all(|i| i.item.kind == "keeper"));
    assert!(!summary.top_assets.is_empty(), "the fixture feeds mention assets");
    let text = social.section().await;
    println!("{text}");
    assert!(text.contains("mirrored from the keeper's signals: 3 items"), "{text}");
    assert!(text.contains("top assets by items: "), "{text}");
    cancel.cancel();
    social.running.stop().await;
    while tasks.join_next().await.is_some() {}
}
