//! Orders of unknown fate: not found after their recvWindow, they may still execute, so they are never sent again;
//! they hold their symbol for a while and are asked for until they are given up.

use std::time::{Duration, Instant};

use kronos_binance::types::Side;

/// An order whose fate the exchange left unknown (not found after its recvWindow): it may still execute, so it is
/// asked for by its client id at every reconcile, and no other order is sent for its symbol meanwhile (for
/// [`unknown_hold`]).
#[derive(Debug, Clone)]
pub(crate) struct UnknownOrder {
    pub(crate) client_id: String,
    pub(crate) symbol: String,
    pub(crate) side: Side,
    pub(crate) since: Instant,
    /// Recorded `not_placed` once its hold passed (it is still watched for [`UNKNOWN_WATCH`]).
    pub(crate) past_hold: bool,
}

/// How long an order of unknown fate blocks new orders in its symbol: two recvWindows and two seconds after it was
/// found missing. The exchange's own positions are what counts after that (reconcile adopts them).
pub(crate) fn unknown_hold(recv_window_ms: u64) -> Duration {
    Duration::from_millis(2 * recv_window_ms + 2000)
}

/// How long an order of unknown fate is still asked for after its hold (without blocking its symbol): one that
/// reaches the matching engine very late is booked then, and the exchange's position is adopted without drift.
pub(crate) const UNKNOWN_WATCH: Duration = Duration::from_secs(600);

/// Whether an order of unknown fate still blocks entries in `symbol` at `now` (one still within its `hold`).
pub(crate) fn blocks(unknown: &[UnknownOrder], symbol: &str, hold: Duration, now: Instant) -> bool {
    unknown.iter().any(|u| u.symbol == symbol && now.saturating_duration_since(u.since) < hold)
}

/// Whether an order of unknown fate in `symbol` is past its hold: asked for once more before another order in the
/// symbol is sent.
pub(crate) fn any_past_hold(unknown: &[UnknownOrder], symbol: &str, hold: Duration, now: Instant) -> bool {
    unknown.iter().any(|u| u.symbol == symbol && now.saturating_duration_since(u.since) >= hold)
}

/// How many orders of unknown fate (in any symbol) are still within their hold.
pub(crate) fn pending(unknown: &[UnknownOrder], hold: Duration, now: Instant) -> usize {
    unknown.iter().filter(|u| now.saturating_duration_since(u.since) < hold).count()
}

/// What becomes of an order of unknown fate the exchange still does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotFound {
    /// Still within its hold, or already recorded not placed and still watched: asked for again later.
    Watch,
    /// Its hold just passed: recorded `not_placed`; it no longer blocks its symbol but is still asked for.
    NotPlaced,
    /// Watched for [`UNKNOWN_WATCH`] past its hold: no longer asked for.
    GiveUp,
}

/// What becomes of `u`, not found at `now`.
pub(crate) fn not_found(u: &UnknownOrder, hold: Duration, now: Instant) -> NotFound {
    let age = now.saturating_duration_since(u.since);
    if age >= hold + UNKNOWN_WATCH {
        NotFound::GiveUp
    } else if age >= hold && !u.past_hold {
        NotFound::NotPlaced
    } else {
        NotFound::Watch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(symbol: &str, since: Instant, past_hold: bool) -> UnknownOrder {
        UnknownOrder { client_id: "kc1".into(), symbol: symbol.into(), side: Side::Buy, since, past_hold }
    }

    #[test]
    fn the_hold_is_two_recv_windows_and_two_seconds() {
        assert_eq!(unknown_hold(5000), Duration::from_millis(12_000));
        assert_eq!(unknown_hold(0), Duration::from_millis(2000));
    }

    #[test]
    fn an_order_of_unknown_fate_blocks_only_its_symbol_and_only_during_its_hold() {
        let t0 = Instant::now();
        let hold = unknown_hold(5000);
        let u = [order("BTCUSDT", t0, false)];
        assert!(blocks(&u, "BTCUSDT", hold, t0 + Duration::from_millis(11_999)));
        assert!(!blocks(&u, "BTCUSDT", hold, t0 + hold));
        assert!(!blocks(&u, "ETHUSDT", hold, t0));
        assert!(!any_past_hold(&u, "BTCUSDT", hold, t0 + Duration::from_millis(11_999)));
        assert!(any_past_hold(&u, "BTCUSDT", hold, t0 + hold));
        assert!(!any_past_hold(&u, "ETHUSDT", hold, t0 + hold));
        let two = [order("BTCUSDT", t0, false), order("ETHUSDT", t0 + Duration::from_secs(5), false)];
        assert_eq!(pending(&two, hold, t0 + Duration::from_secs(1)), 2);
        assert_eq!(pending(&two, hold, t0 + hold), 1);
        assert_eq!(pending(&two, hold, t0 + hold + Duration::from_secs(5)), 0);
    }

    #[test]
    fn an_order_not_found_is_recorded_not_placed_after_its_hold_and_given_up_ten_minutes_later() {
        let t0 = Instant::now();
        let hold = unknown_hold(5000);
        let u = order("BTCUSDT", t0, false);
        assert_eq!(not_found(&u, hold, t0 + Duration::from_millis(11_999)), NotFound::Watch);
        assert_eq!(not_found(&u, hold, t0 + hold), NotFound::NotPlaced);
        let past = order("BTCUSDT", t0, true);
        assert_eq!(not_found(&past, hold, t0 + hold), NotFound::Watch);
        assert_eq!(not_found(&past, hold, t0 + hold + UNKNOWN_WATCH - Duration::from_millis(1)), NotFound::Watch);
        assert_eq!(not_found(&past, hold, t0 + hold + UNKNOWN_WATCH), NotFound::GiveUp);
        assert_eq!(not_found(&u, hold, t0 + hold + UNKNOWN_WATCH), NotFound::GiveUp);
    }
}
