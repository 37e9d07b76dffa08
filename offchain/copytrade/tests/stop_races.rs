//! AUDIT-3 (issue 12): the stop-out check against races and restarts, on the local exchange.
//!
//! - F1: the follower's stop fires and its close fills after the reconcile read the positions and before it asks
//!   about the stop (`Fault::MarkFirst` on the stop check's `GET /fapi/v1/openAlgoOrders`): a stop-out, the follower
//!   waits for the lead — never drift and a buy-back.
//! - F2: a restart keeps the older "open" stop rows of a symbol as replaced stops, so the old stop that fired while
//!   the copy-trader was down is what the flat position is judged by.
//! - F3: a flat position whose stop cannot be asked about is not drift: nothing is re-entered.
//! - AUDIT-4 L1: a stop FINISHED while the position still shows is kept as replaced: when the position then goes
//!   flat it is a stop-out, not judged by the new stop alone.
//! - AUDIT-4 L3: a position closed outside (an ADL) while its stop stays listed is `closed_outside`, not drift.
//! - AUDIT-4 L4: an entry waits while an old stop kept as replaced (its cancel refused) could close it.

mod common;

use common::*;
use kronos_binance::types::Side;
use kronos_binance_mock::Fault;

/// The follower's position and its first stop (63700, from an entry at 65000): `(stop client id)`.
async fn open_with_stop(w: &World, r: &Running) -> String {
    w.first_buy_with_stop().await;
    r.settle().await;
    let st = w.follower_stops()[0].clone();
    assert_eq!(st.trigger_price, d("63700"));
    st.client_algo_id
}

/// Every cancel of a stop is refused (neither confirmed nor -2011) from now on; the lead adds 0.1 lower (mark
/// 64000): waits until the follower holds 0.1, the cancel of its stop `first` was refused and both stops are open.
async fn move_the_stop_with_its_cancel_refused(w: &World, r: &Running, first: &str) {
    let refused = Fault::Answer { status: 400, code: -1102, msg: "test: not now".into(), executed: false };
    w.ex.inject_for(FOLLOWER, "DELETE", "/fapi/v1/algoOrder", refused, 100_000);
    w.ex.set_mark("BTCUSDT", "64000");
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    wait_event("the old stop's cancel refused", &r.handles.store, "stop_cancel_failed", first).await;
    wait_for("both stops open", || w.follower_stops().len() == 2).await;
}

/// The follower is not bought back and waits for the lead (its limit 0).
async fn assert_waits_flat(w: &World, r: &Running) {
    let store = &r.handles.store;
    assert!(!has_event(store, "position_drift", "").await, "{:?}", store.events(50).await.unwrap());
    r.settle().await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero(), "the lead's position was bought back");
    assert!(r.handles.status.lock().lead.iter().any(|(s, _, l)| s == "BTCUSDT" && l.as_deref() == Some("0")));
}

/// F1: before the fix the stop check dropped the FINISHED stop as "fired under a position the exchange still holds"
/// (the position read before the stop fired), placed a new one (-2021: the mark is past it) and the next reconcile
/// found the flat position with no stop: `position_drift`, adopted flat and the lead's position bought back.
#[tokio::test]
async fn a_stop_that_fires_between_the_positions_read_and_its_question_is_a_stop_out() {
    let (w, _, r) = World::live().await;
    let first = open_with_stop(&w, &r).await;
    // Right after a reconcile ended: the next request for the open stops is the next reconcile's stop check, made
    // after it read the positions. Just before it is answered the mark falls through the stop: it fires and its
    // close fills.
    let n = r.handles.status.lock().reconciles;
    wait_for("a reconcile ended", || r.handles.status.lock().reconciles > n).await;
    w.ex.inject_for(
        FOLLOWER,
        "GET",
        "/fapi/v1/openAlgoOrders",
        Fault::MarkFirst { symbol: "BTCUSDT".into(), price: "63000".into() },
        1,
    );
    let store = r.handles.store.clone();
    wait_flat_judged(&store).await;
    assert_eq!(w.ex.faults_left(), 0, "the stop fired at the stop check");
    assert_has_event(&store, "stopped_out", "63700").await;
    assert!(!has_event(&store, "closed_outside", "").await);
    assert_waits_flat(&w, &r).await;
    assert_eq!(store.order(&first).await.unwrap().unwrap().status, "finished");
    r.stop().await;
}

/// F2: the copy-trader stops right after it recorded a new stop and before it sent it (both rows "open", the old
/// stop the live one). While it is down the old stop fires. At the restart the old row is kept as a replaced stop:
/// the flat position is a stop-out (before, only the newest row was loaded: the flat position was judged by the
/// never-sent stop alone, not found: `closed_outside`).
#[tokio::test]
async fn a_restart_keeps_an_older_open_stop_for_the_stop_out_check() {
    let (w, cfg, r) = World::live().await;
    let first = open_with_stop(&w, &r).await;
    r.stop().await;
    let store = kronos_copytrade::Store::connect(&cfg.store).await.unwrap();
    let mut newer = store.order(&first).await.unwrap().expect("the first stop is recorded");
    assert_eq!(newer.status, "open");
    newer.client_id = "ks-never-sent".into();
    newer.trigger_price = Some("63000".into());
    newer.created_ms += 1;
    newer.updated_ms = newer.created_ms;
    store.insert_order(&newer).await.unwrap();
    // While down, the live (older) stop fires and its close fills.
    w.ex.set_mark("BTCUSDT", "63500");
    assert!(w.follower_qty("BTCUSDT").is_zero());
    let r = w.start(&cfg).await;
    r.wait_ready().await;
    let store = r.handles.store.clone();
    wait_flat_judged(&store).await;
    assert_has_event(&store, "stopped_out", "63700").await;
    assert!(!has_event(&store, "closed_outside", "").await);
    assert_waits_flat(&w, &r).await;
    assert_eq!(store.order(&first).await.unwrap().unwrap().status, "finished");
    assert_eq!(store.order("ks-never-sent").await.unwrap().unwrap().status, "not_found");
    r.stop().await;
}

/// F3: the stop fires and its close fills while every question about it fails: the flat position's fate is
/// undecided — adopted flat, reported, and the follower waits for the lead (before: drift, and the lead's position
/// bought back at once).
#[tokio::test]
async fn a_flat_position_whose_stop_cannot_be_asked_about_is_not_re_entered() {
    let (w, _, r) = World::live().await;
    open_with_stop(&w, &r).await;
    let refused = Fault::Answer { status: 400, code: -1102, msg: "test: no answer".into(), executed: false };
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v1/algoOrder", refused, 100_000);
    w.ex.set_mark("BTCUSDT", "63500");
    let store = r.handles.store.clone();
    let undecided = ["position_closed_undecided", "stopped_out", "closed_outside", "position_drift"];
    wait_any_event("the flat position judged", &store, &undecided).await;
    assert_has_event(&store, "position_closed_undecided", "").await;
    assert_waits_flat(&w, &r).await;
    w.ex.clear_faults();
    r.stop().await;
}

/// F6/F5: the old stop's cancel fails (neither confirmed nor -2011) when a moved stop replaces it: it is live and
/// kept as replaced (before, it was forgotten and left to the clean-up), so when it fires first the flat position
/// is a stop-out — not judged by the new stop alone (drift and a buy-back, or `closed_outside`). While its cancels
/// keep failing it stays replaced; once they go through, the stops left over are cancelled.
#[tokio::test]
async fn an_old_stop_whose_cancel_failed_is_still_a_stop_out_when_it_fires() {
    let (w, _, r) = World::live().await;
    let first = open_with_stop(&w, &r).await;
    // The lead adds lower: the follower's entry moves to 64500, its new stop to 63210 (under the old one).
    move_the_stop_with_its_cancel_refused(&w, &r, &first).await;
    let store = r.handles.store.clone();
    // The old stop (63700) fires first and closes the position; the new one (63210) does not.
    w.ex.set_mark("BTCUSDT", "63500");
    wait_flat_judged(&store).await;
    assert_has_event(&store, "stopped_out", "63700").await;
    assert_waits_flat(&w, &r).await;
    w.ex.clear_faults();
    wait_for("no stop left behind", || w.follower_stops().is_empty()).await;
    r.stop().await;
}

/// AUDIT-4 L4: an old stop kept as replaced (its cancel refused, so it is still live at 63700) would close a new
/// entry at its old trigger: when the lead adds again, the follower's entry waits (`entry_waits_for_stop`) while
/// the old stop's cancel is not confirmed, and goes out once it is (before, it was sent at once, under the old
/// stop).
#[tokio::test]
async fn an_entry_waits_while_an_old_stop_that_would_close_it_is_still_live() {
    let (w, _, r) = World::live().await;
    let first = open_with_stop(&w, &r).await;
    // The lead adds lower: the follower's stop moves (63210) and the old one (63700) stays live, kept as replaced.
    move_the_stop_with_its_cancel_refused(&w, &r, &first).await;
    let store = r.handles.store.clone();
    // The lead adds again: the follower's entry (0.1 -> 0.15) waits for the old stop.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_event("the entry waits for the old stop", &store, "entry_waits_for_stop", &first).await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.1"), "an entry went out under the old stop");
    assert!(w.follower_stops().iter().any(|s| s.client_algo_id == first));
    // Once the old stop's cancel goes through, the entry follows.
    w.ex.clear_faults();
    w.expect_follower("BTCUSDT", "0.15").await;
    assert!(!w.follower_stops().iter().any(|s| s.client_algo_id == first), "the old stop is gone before the entry");
    wait_for("one stop", || w.follower_stops().len() == 1).await;
    assert!(!has_event(&store, "position_drift", "").await);
    w.assert_no_duplicates();
    r.stop().await;
}

/// AUDIT-4 L3: the exchange deleverages the follower's position (ADL) and its stop stays listed (NEW): the stop did
/// not fire, so the position was closed outside — `closed_outside`, the follower waits for the lead and the stop,
/// which guards nothing now, is cancelled. Before, a flat position under an open stop was drift: adopted flat and
/// the lead's position bought back at once.
#[tokio::test]
async fn a_position_closed_by_the_exchange_under_a_stop_still_open_is_not_re_entered() {
    let (w, _, r) = World::live().await;
    let first = open_with_stop(&w, &r).await;
    assert_eq!(w.ex.deleverage(FOLLOWER, "BTCUSDT").unwrap(), d("0.05"));
    assert!(w.follower_stops().iter().any(|s| s.client_algo_id == first), "the ADL leaves the stop listed");
    let store = r.handles.store.clone();
    wait_flat_judged(&store).await;
    assert_has_event(&store, "closed_outside", "still open").await;
    assert!(!has_event(&store, "stopped_out", "").await, "the stop did not fire");
    assert_waits_flat(&w, &r).await;
    wait_for("the stop cancelled", || w.follower_stops().is_empty()).await;
    r.stop().await;
}

/// AUDIT-4 L1: the exchange answers the follower's stop FINISHED while its positions still show the position (the
/// close's fill lags); it goes flat afterwards (the lagging close, played by a deleveraging that leaves the new stop
/// listed). The FINISHED stop was kept as replaced with the follower held at what it had, so the flat position is a
/// stop-out at its trigger (63700). Before, it was recorded 'finished' and dropped at once, and the flat position
/// was judged by the new open stop alone (drift, or since L3 `closed_outside`).
#[tokio::test]
async fn a_stop_finished_before_its_close_shows_is_still_the_stop_out() {
    let (w, _, r) = World::live().await;
    let first = open_with_stop(&w, &r).await;
    assert!(w.ex.set_stop_status(FOLLOWER, &first, kronos_binance::types::AlgoStatus::Finished));
    let store = r.handles.store.clone();
    wait_event("the finished stop replaced, the follower held", &store, "stop_missing", &first).await;
    assert_has_event(&store, "stop_missing", "held at that").await;
    wait_for("a new stop", || w.follower_stops().iter().any(|s| s.client_algo_id != first)).await;
    assert_eq!(w.ex.deleverage(FOLLOWER, "BTCUSDT").unwrap(), d("0.05"));
    wait_flat_judged(&store).await;
    assert_has_event(&store, "stopped_out", "63700").await;
    assert_waits_flat(&w, &r).await;
    wait_for("the new stop cancelled", || w.follower_stops().is_empty()).await;
    r.stop().await;
}
