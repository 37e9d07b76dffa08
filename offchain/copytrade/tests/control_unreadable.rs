//! Issue 12 (CT9): while the control log cannot be read, the lead's closes are still mirrored. An unreadable log
//! may hide a command stored meanwhile (an emergency stop), so nothing that opens or adds exposure goes out until it
//! is read again; but what reduces toward the lead's target (a close, a reduction) and the stops always go out.
//! Before, the engine treated an unreadable log as copy-trading off and kept every position the lead dropped.

mod common;

use common::*;
use kronos_binance::types::Side;
use kronos_copytrade::Config;

/// Follower orders that could open or add exposure in `symbol` (not reduce-only), as the exchange executed them.
fn entries_in(w: &World, symbol: &str) -> usize {
    follower_orders(w).iter().filter(|o| o.symbol == symbol && !o.reduce_only).count()
}

/// The follower holds BTCUSDT; the store's control log is made unreadable from another connection (its table
/// renamed away); the lead closes BTCUSDT → the follower's close goes out at once; the lead opens ETHUSDT →
/// nothing is opened while the log stays unreadable (a lead poll and a reconciliation later, still flat); once the
/// log can be read again the held apply runs and the follower opens ETHUSDT.
#[tokio::test]
async fn while_the_control_log_is_unreadable_closes_are_mirrored_and_nothing_is_opened_until_it_is_read() {
    let w = World::new().await;
    let sizing = SIZING.replace(r#"allow = ["BTCUSDT"]"#, r#"allow = ["BTCUSDT", "ETHUSDT"]"#);
    let text = w.config_text("live", &sizing, PROTECTION, LEAD_STREAM, "");
    let cfg = Config::parse("t.toml", &text).unwrap();
    let r = w.start(&cfg).await;
    w.first_buy_with_stop().await;
    r.settle().await;

    hide_control_log(&cfg.store).await;
    let (status, control) = (r.handles.status.clone(), r.handles.control.clone());
    wait_for("the engine's read of the log failed", || !status.lock().control_errors.is_empty()).await;
    wait_for("the watcher's read of the log failed", || control.watched_seq().is_none()).await;

    // The lead closes: the follower's close goes out although the log cannot be read.
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0").await;
    wait_for("the stop of the closed position cancelled", || w.follower_stops().is_empty()).await;

    // The lead opens another symbol: held while the log stays unreadable.
    w.lead_trade(Side::Buy, "1", "ETHUSDT").await;
    r.settle().await;
    r.settle().await;
    assert!(w.follower_qty("ETHUSDT").is_zero(), "an entry went out while the control log could not be read");
    assert_eq!(entries_in(&w, "ETHUSDT"), 0);
    assert!(!status.lock().control_errors.is_empty(), "the log was still unreadable while the entry was held");
    assert!(!status.lock().trading, "/health says no new exposure while the log cannot be read");

    // Readable again: the held apply runs and the follower follows the lead into ETHUSDT (ratio 0.5).
    restore_control_log(&cfg.store).await;
    w.expect_follower("ETHUSDT", "0.5").await;
    wait_for("the engine read the log again", || status.lock().control_errors.is_empty()).await;
    assert!(control.watched_seq().is_some());
    assert_eq!(entries_in(&w, "ETHUSDT"), 1);
    assert!(w.follower_qty("BTCUSDT").is_zero(), "the closed position stays closed");
    w.assert_no_duplicates();
    r.stop().await;
}
