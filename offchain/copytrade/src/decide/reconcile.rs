//! Reconciliation: what a difference between the recorded position and the exchange's means.

use kronos_common::Decimal;

/// Why the exchange holds `theirs` where `ours` was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Difference {
    /// The position is gone and its stop is no longer open: stopped out (the follower waits for the lead's next
    /// close or flip).
    StoppedOut,
    /// Orders of unknown fate found late executed exactly the difference: adopted as theirs, not drift.
    Adopted,
    /// Anything else (a manual trade, a liquidation): drift, adopted and reported.
    Unexplained,
}

/// Whether the difference may be a stop-out (a recorded position the exchange shows flat): only then is the stop
/// asked for.
pub(crate) fn may_be_stopped_out(ours: Decimal, theirs: Decimal) -> bool {
    theirs.is_zero() && !ours.is_zero()
}

/// Called only when `ours` ≠ `theirs`. `late`: the signed quantity orders found late executed in the symbol;
/// `stop_gone`: the position's recorded stop is no longer open on the exchange.
pub(crate) fn difference(ours: Decimal, theirs: Decimal, late: Decimal, stop_gone: bool) -> Difference {
    if stop_gone && may_be_stopped_out(ours, theirs) {
        Difference::StoppedOut
    } else if !late.is_zero() && ours.checked_add(&late).ok() == Some(theirs) {
        Difference::Adopted
    } else {
        Difference::Unexplained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::d;

    #[test]
    fn a_flat_exchange_position_whose_stop_is_gone_is_a_stop_out() {
        assert!(may_be_stopped_out(d("0.1"), d("0")));
        assert!(!may_be_stopped_out(d("0.1"), d("0.05")));
        assert!(!may_be_stopped_out(d("0"), d("0.1")));
        assert_eq!(difference(d("0.1"), d("0"), d("0"), true), Difference::StoppedOut);
        assert_eq!(difference(d("-0.1"), d("0"), d("0"), true), Difference::StoppedOut);
        // The stop still open: someone closed it (drift).
        assert_eq!(difference(d("0.1"), d("0"), d("0"), false), Difference::Unexplained);
        // Only a flat exchange position can be a stop-out.
        assert_eq!(difference(d("0.1"), d("0.05"), d("0"), true), Difference::Unexplained);
    }

    #[test]
    fn what_late_orders_explain_exactly_is_adopted_anything_else_is_drift() {
        assert_eq!(difference(d("0.1"), d("0.15"), d("0.05"), false), Difference::Adopted);
        assert_eq!(difference(d("0.1"), d("0"), d("-0.1"), false), Difference::Adopted);
        assert_eq!(difference(d("0"), d("-0.2"), d("-0.2"), false), Difference::Adopted);
        assert_eq!(difference(d("0.1"), d("0.16"), d("0.05"), false), Difference::Unexplained);
        assert_eq!(difference(d("0.1"), d("0.15"), d("0"), false), Difference::Unexplained);
    }
}
