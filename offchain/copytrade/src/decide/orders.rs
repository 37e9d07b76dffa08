//! The shape of a market order, and what an order's error means.

use kronos_binance::types::Side;
use kronos_binance::BinanceError;
use kronos_common::Decimal;

/// A market order to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MarketOrder {
    pub(crate) side: Side,
    /// On the symbol's step, within the exchange's minimums.
    pub(crate) qty: Decimal,
    pub(crate) reduce_only: bool,
    /// `BOTH` in one-way mode, `LONG`/`SHORT` in hedge mode.
    pub(crate) position_side: String,
}

impl MarketOrder {
    /// Whether the order can only reduce a position: reduce-only (one-way mode), or in hedge mode — which has no
    /// reduce-only flag — a SELL on the LONG side or a BUY on the SHORT side (AUDIT-4 M1: the emergency closes of a
    /// hedge-mode account were held as entries while a control command was unread or the log unreadable).
    pub(crate) fn only_reduces(&self) -> bool {
        self.reduce_only
            || matches!((self.position_side.as_str(), self.side), ("LONG", Side::Sell) | ("SHORT", Side::Buy))
    }
}

/// The side that reduces a position of signed quantity `qty`.
pub(crate) fn opposite(qty: Decimal) -> Side {
    if qty.is_negative() {
        Side::Buy
    } else {
        Side::Sell
    }
}

/// The position side an order for a position of signed quantity `qty` names.
pub(crate) fn position_side_for(hedge: bool, qty: Decimal) -> String {
    if !hedge {
        "BOTH".into()
    } else if qty.is_negative() {
        "SHORT".into()
    } else {
        "LONG".into()
    }
}

/// What became of an order the engine sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Filled,
    /// The exchange refused it (an error code): it did not execute.
    Rejected,
    /// It never reached the exchange (ban, connection refused), or was not recorded first.
    NotSent,
    /// Its fate is unknown: watched until found or for [`super::unknown::unknown_hold`].
    Unknown,
}

/// How a failed order is recorded: its status in the store, the risk event's kind, and the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) outcome: Outcome,
}

/// What an order's error means. Only what may have executed is watched; it is never re-sent.
pub(crate) fn classify_error(e: &BinanceError) -> Failure {
    let (status, kind, outcome) = match e {
        BinanceError::Banned { .. } | BinanceError::Transport { .. } | BinanceError::NoCredentials { .. } => {
            ("not_placed", "exchange_unavailable", Outcome::NotSent)
        }
        // Not found after its recvWindow, or queries failing: it may still execute. Watched, never re-sent.
        BinanceError::Unresolved { .. } | BinanceError::Unknown { .. } => {
            ("unresolved", "order_unresolved", Outcome::Unknown)
        }
        // A 429 was not executed; a malformed reply to an order may hide one, so it is watched.
        BinanceError::RateLimited { .. } => ("not_placed", "exchange_unavailable", Outcome::NotSent),
        BinanceError::Malformed { .. } => ("unresolved", "order_unresolved", Outcome::Unknown),
        BinanceError::Api { .. } => ("rejected", "order_rejected", Outcome::Rejected),
    };
    Failure { status, kind, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::d;

    #[test]
    fn a_hedge_mode_close_only_reduces_and_an_entry_does_not() {
        let o =
            |side, reduce_only, ps: &str| MarketOrder { side, qty: d("0.1"), reduce_only, position_side: ps.into() };
        assert!(o(Side::Sell, true, "BOTH").only_reduces());
        assert!(!o(Side::Sell, false, "BOTH").only_reduces(), "one-way mode without the flag can open");
        assert!(o(Side::Sell, false, "LONG").only_reduces(), "closing a hedge long");
        assert!(o(Side::Buy, false, "SHORT").only_reduces(), "closing a hedge short");
        assert!(!o(Side::Buy, false, "LONG").only_reduces(), "adding to a hedge long");
        assert!(!o(Side::Sell, false, "SHORT").only_reduces(), "adding to a hedge short");
    }

    #[test]
    fn orders_reduce_on_the_opposite_side_and_name_the_position_side_in_hedge_mode() {
        assert_eq!(opposite(d("0.1")), Side::Sell);
        assert_eq!(opposite(d("-0.1")), Side::Buy);
        assert_eq!(position_side_for(false, d("-0.1")), "BOTH");
        assert_eq!(position_side_for(false, d("0.1")), "BOTH");
        assert_eq!(position_side_for(true, d("0.1")), "LONG");
        assert_eq!(position_side_for(true, d("-0.1")), "SHORT");
    }

    #[test]
    fn only_an_order_that_may_have_executed_is_watched() {
        let e = |x: BinanceError| classify_error(&x);
        let ep = || "POST /fapi/v1/order".to_string();
        let not_sent = Failure { status: "not_placed", kind: "exchange_unavailable", outcome: Outcome::NotSent };
        let unknown = Failure { status: "unresolved", kind: "order_unresolved", outcome: Outcome::Unknown };
        assert_eq!(e(BinanceError::Banned { until_ms: 1 }), not_sent);
        assert_eq!(e(BinanceError::Transport { endpoint: ep(), detail: "refused".into() }), not_sent);
        assert_eq!(e(BinanceError::NoCredentials { endpoint: ep() }), not_sent);
        assert_eq!(e(BinanceError::RateLimited { endpoint: ep(), retry_after_s: 1 }), not_sent);
        assert_eq!(e(BinanceError::Unresolved { client_order_id: "kc1".into(), waited_s: 6 }), unknown);
        assert_eq!(e(BinanceError::Unknown { endpoint: ep(), detail: "503".into(), sent_timestamp_ms: 1 }), unknown);
        assert_eq!(e(BinanceError::Malformed { endpoint: ep(), detail: "x".into(), body: "{".into() }), unknown);
        assert_eq!(
            e(BinanceError::Api { endpoint: ep(), http_status: 400, code: -2019, msg: "margin".into() }),
            Failure { status: "rejected", kind: "order_rejected", outcome: Outcome::Rejected }
        );
    }
}
