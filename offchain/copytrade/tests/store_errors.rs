//! A store write the engine goes on without (the lead's position, an order's status, the equity, …) that fails is
//! never dropped in silence: it is logged, counted in `kronos_copytrade_store_errors_total{what}` and alerted as a
//! `store_failed` risk event, and the engine keeps following. Before, about 26 such writes were `let _ =`.

mod common;

use std::sync::Arc;

use common::*;
use kronos_binance::types::Side;
use kronos_common::{Signal, SignalKind};
use tokio::sync::broadcast::Receiver;

/// Makes every write of the lead's position (`ct_lead`) fail from another connection, as a full disk or a locked
/// database leaves it; reads still work.
async fn fail_lead_writes(url: &str) {
    let (_, pool) = kronos_common::db::open(url).await.unwrap();
    for sql in [
        "CREATE TRIGGER ct_lead_fails_insert BEFORE INSERT ON ct_lead BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END",
        "CREATE TRIGGER ct_lead_fails_update BEFORE UPDATE ON ct_lead BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// Undoes [`fail_lead_writes`].
async fn heal_lead_writes(url: &str) {
    let (_, pool) = kronos_common::db::open(url).await.unwrap();
    for sql in ["DROP TRIGGER ct_lead_fails_insert", "DROP TRIGGER ct_lead_fails_update"] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// The count of `kronos_copytrade_store_errors_total{what="<what>"}` in the exposition text (0 when absent).
fn store_errors(text: &str, what: &str) -> u64 {
    let prefix = format!("kronos_copytrade_store_errors_total{{what=\"{what}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

/// The `store_failed` risk alerts received so far (their details).
fn store_alerts(signals: &mut Receiver<Arc<Signal>>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(sig) = signals.try_recv() {
        if let SignalKind::RiskEvent { kind, detail } = &sig.kind {
            if kind == "store_failed" {
                out.push(detail.clone());
            }
        }
    }
    out
}

/// The next `store_failed` risk alert on the bus (its detail); a bound on a failure, not a pace.
async fn next_store_alert(signals: &mut Receiver<Arc<Signal>>) -> String {
    let wait = async {
        loop {
            let sig = signals.recv().await.expect("the bus is open");
            if let SignalKind::RiskEvent { kind, detail } = &sig.kind {
                if kind == "store_failed" {
                    return detail.clone();
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(180), wait).await.expect("no store_failed alert")
}

/// The follower holds BTCUSDT; every write of the lead's position starts failing; the lead closes → the follower's
/// close still goes out (the engine keeps running), and the lead position it could not record is counted in the
/// metrics, alerted on the bus (naming the symbol and what was lost) and recorded as an event. Once writes work
/// again the lost row is written by the next reconcile, and the next lead change is recorded.
#[tokio::test]
async fn a_lead_position_that_cannot_be_recorded_is_counted_and_alerted_and_following_goes_on() {
    let w = World::new().await;
    let mut signals = w.bus.subscribe();
    let cfg = w.default_config("live");
    let r = w.start(&cfg).await;
    w.first_buy_with_stop().await;
    r.settle().await;
    assert_eq!(store_errors(&r.handles.metrics.encode(), "lead"), 0, "no write failed yet");
    assert!(store_alerts(&mut signals).is_empty());

    fail_lead_writes(&cfg.store).await;
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await;
    // The engine goes on: the lead's close is mirrored and the position's stop cancelled.
    w.expect_follower("BTCUSDT", "0").await;
    wait_for("the stop of the closed position cancelled", || w.follower_stops().is_empty()).await;
    let metrics = r.handles.metrics.clone();
    wait_for("the failed write counted", || store_errors(&metrics.encode(), "lead") >= 1).await;
    // The alert is published after the count: waited for.
    let alert = next_store_alert(&mut signals).await;
    assert!(
        alert.starts_with("BTCUSDT: ") && alert.contains("lead's position") && alert.contains("disk full"),
        "{alert}"
    );
    assert_has_event(&r.handles.store, "store_failed", "lead's position").await;
    // The lead's position recorded is still the old one: what a restart would read back.
    let recorded = r.handles.store.lead().await.unwrap();
    assert_eq!(recorded.iter().find(|l| l.0 == "BTCUSDT").map(|l| l.1), Some(d("0.1")), "{recorded:?}");
    assert!(!r.task.is_finished(), "the engine stopped on a failed store write");
    assert!(r.handles.status.lock().ready);

    // Writes work again: the lost write is made again by the next reconcile, from memory, without a lead change
    // (a restart now reads the lead flat, not the position it closed).
    heal_lead_writes(&cfg.store).await;
    let store = r.handles.store.clone();
    wait_until("the lead's closed position recorded by the next reconcile", || {
        let store = store.clone();
        async move { store.lead().await.unwrap().iter().any(|l| l.0 == "BTCUSDT" && l.1.is_zero()) }
    })
    .await;
    // And the next lead change is followed and recorded.
    w.lead_trade(Side::Buy, "0.2", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    let store = r.handles.store.clone();
    wait_until("the lead's new position recorded", || {
        let store = store.clone();
        async move { store.lead().await.unwrap().iter().any(|l| l.0 == "BTCUSDT" && l.1 == d("0.2")) }
    })
    .await;
    w.assert_no_duplicates();
    r.stop().await;
}
