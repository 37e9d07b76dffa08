//! AUDIT-3 (issue 12), F8: an emergency stop from another process (the CLI, the Telegram bot) does not wait behind a
//! slow turn. The engine's loop reads the control log between turns; while one turn runs slow (an exchange incident:
//! a request held for seconds), the control log's watcher sees the stop, and no order that opens or adds exposure
//! goes out after it; the stop is carried out as soon as the turn ends.

mod common;

use common::*;
use kronos_binance::types::Side;
use kronos_binance_mock::{Fault, Gate};
use kronos_copytrade::{Config, ControlCommand};

/// Follower orders that could open or add exposure (not reduce-only), as the exchange executed them.
fn entries(w: &World) -> Vec<(String, String)> {
    follower_orders(w)
        .iter()
        .filter(|o| !o.reduce_only)
        .map(|o| (o.symbol.clone(), o.executed_qty.to_string()))
        .collect()
}

/// One turn applies both symbols (a ratio change resizes every position); the first entry of that turn (BTCUSDT) is
/// held by the exchange (executed, its answer late), and an emergency stop is appended to the store, as the CLI
/// does, while it is held; the answer is let go only once the engine's log watcher has read the stop (an event,
/// not a timing margin: AUDIT-4 L5). Before the fix the turn went on to send the ETHUSDT entry on the old state (the stop was
/// read only when the turn ended); now nothing that adds exposure goes out after the append, the stop is carried out
/// once the turn ends, and its report names the command.
#[tokio::test]
async fn an_emergency_stop_appended_during_a_slow_turn_holds_every_later_entry_and_is_carried_out_after_it() {
    let w = World::new().await;
    let sizing = SIZING.replace(r#"allow = ["BTCUSDT"]"#, r#"allow = ["BTCUSDT", "ETHUSDT"]"#);
    // The held answer stays within the request timeout: a slow request, not one of unknown fate.
    let text = w
        .config_text("live", &sizing, PROTECTION, LEAD_STREAM, "")
        .replace(r#"request_timeout = "800ms""#, r#"request_timeout = "10s""#);
    let cfg = Config::parse("t.toml", &text).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.lead_trade(Side::Buy, "1", "ETHUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    w.expect_follower("ETHUSDT", "0.5").await;
    wait_for("both stops", || w.follower_stops().len() == 2).await;
    r.settle().await;
    assert_eq!(entries(&w).len(), 2, "{:?}", entries(&w));

    // The CLI's own connection to the store.
    let cli = kronos_copytrade::Store::connect(&cfg.store).await.unwrap();
    let gate = Gate::new();
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::Held { executed: true, gate: gate.clone() }, 1);
    let ratio = ControlCommand::SetRatio { ratio: Some(d("1")), set_by: "test".into() };
    send_from_another_process(&cli, ratio).await;
    // The turn that carries the ratio out sends BTCUSDT's increase first; the exchange holds its answer.
    wait_for("the increase held by the exchange", || w.ex.faults_left() == 0).await;
    let seq = send_from_another_process(&cli, ControlCommand::EmergencyStop { reason: "mid-turn".into() }).await;
    // The turn goes on only once the watcher has seen the stop (AUDIT-4 L5: before, a fixed 3 s hold against the
    // watcher's 250 ms interval).
    let control = r.handles.control.clone();
    wait_for("the watcher read the stop", || control.watched_seq().is_some_and(|s| s >= seq)).await;
    let before = entries(&w);
    gate.open();

    expect_emergency_done(&cli, seq).await;
    // Only the increase held at the append went out (BTCUSDT 0.05 -> 0.1); ETHUSDT's was never sent.
    let after = entries(&w);
    assert_eq!(
        after.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["BTCUSDT", "ETHUSDT", "BTCUSDT"],
        "an entry went out after the emergency stop was appended (executed when it was appended: {before:?})"
    );
    assert!(w.follower_qty("BTCUSDT").is_zero() && w.follower_qty("ETHUSDT").is_zero(), "the stop closed both");
    assert!(r.handles.status.lock().risk.emergency);
    // It holds: nothing is opened again afterwards.
    r.settle().await;
    assert_eq!(entries(&w).len(), 3, "{:?}", entries(&w));
    w.assert_no_duplicates();
    r.stop().await;
}

/// AUDIT-4 M1 in hedge mode (no reduce-only flag there: a close is a SELL on LONG or a BUY on SHORT): an emergency
/// pass closes both sides of a position held by hand; the first close's answer is held by the exchange while a
/// second command is sent over the API (not read until the pass ends), then let go. The other close still goes out
/// in the same pass (`MarketOrder::only_reduces`): the pass ends done, with no `emergency_incomplete`. Before
/// 3502346 the hold judged `reduce_only`, false for every hedge-mode close, so that close was held as an entry and
/// the pass ended with the side still open.
#[tokio::test]
async fn in_hedge_mode_the_emergency_closes_go_out_while_a_command_sent_meanwhile_is_unread() {
    let w = World::new().await;
    w.ex.add_account(FOLLOWER, "follower-secret", "10000", true);
    let r = w.start(&w.default_config("live")).await;
    let store = r.handles.store.clone();
    // Copy-trading off; someone holds both sides by hand.
    w.hold_both_sides_by_hand(&r).await;
    let gate = Gate::new();
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::Held { executed: true, gate: gate.clone() }, 1);
    let stop = ControlCommand::EmergencyStop { reason: "hedge".into() };
    let seq = r.handles.control.send(&stop, "test").await.unwrap();
    wait_for("the first close held by the exchange", || w.ex.faults_left() == 0).await;
    // Sent through the API while the pass runs: unread until the pass ends.
    let ratio = ControlCommand::SetRatio { ratio: Some(d("1")), set_by: "test".into() };
    r.handles.control.send(&ratio, "test").await.unwrap();
    gate.open();
    expect_emergency_done(&store, seq).await;
    let a = w.ex.account(FOLLOWER);
    assert!(a.position("BTCUSDT", "LONG").amount.is_zero() && a.position("BTCUSDT", "SHORT").amount.is_zero());
    assert!(
        !has_event(&store, "emergency_incomplete", "").await,
        "a hedge-mode close was held while the command was unread: {:?}",
        store.events(50).await.unwrap()
    );
    w.assert_no_duplicates();
    r.stop().await;
}
