//! Reconciliation: what a difference between the recorded position and the exchange's means.

use kronos_common::Decimal;

use super::stops::{Now, StopFate};

/// Why the exchange holds `theirs` where `ours` was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Difference {
    /// The position is gone and its stop is no longer open: stopped out (the follower waits for the lead's next
    /// close or flip).
    StoppedOut,
    /// The position is gone and its stop did not fire: it ended (cancelled, expired, not found) or is still open
    /// (NEW) — closed outside the copy-trader (by hand, an ADL, a liquidation). It waits for the lead's next close
    /// or flip as after a stop-out; a stop still open guards nothing now and is cancelled (strictly: kept as
    /// replaced until the cancel is confirmed). AUDIT-4 L3: a stop still open was drift before, and drift adopts
    /// the flat position and buys the lead's position back — undoing a hand close or re-entering after an ADL.
    ClosedOutside,
    /// Orders of unknown fate found late executed exactly the difference: adopted as theirs, not drift.
    Adopted,
    /// The position is gone and a stop was held or kept replaced for it, but what became of it is not known (its
    /// question failed, or its status is unknown) — AUDIT-3 F3. Decided as a stop-out for the follower: the exchange's
    /// flat position is adopted and nothing is re-entered until the lead closes or flips (it may have been the
    /// stop; re-entering a stopped-out position is the one thing a stop-out must never lead to).
    Undecided,
    /// Anything else (a manual trade, a liquidation): drift, adopted and reported.
    Unexplained,
}

/// Whether the difference may be a stop-out (a recorded position the exchange shows flat): only then is the stop
/// asked for.
pub(crate) fn may_be_stopped_out(ours: Decimal, theirs: Decimal) -> bool {
    theirs.is_zero() && !ours.is_zero()
}

/// Whether orders of ours found late (`late`, signed) explain the difference exactly.
fn explained(ours: Decimal, theirs: Decimal, late: Decimal) -> bool {
    !late.is_zero() && ours.checked_add(&late).ok() == Some(theirs)
}

/// AUDIT-5 L5: whether a recorded position the exchange shows flat waits, unjudged, because an order of ours in
/// the symbol has an unknown outcome (it may have executed and not be found yet — the close leg of a lead flip,
/// say): no verdict (no stop-out, no close outside, no drift) and no stop cancelled until it is found or its hold
/// passes, unless the orders found late already explain the difference. Before, such a flat position under a stop
/// still open was judged closed outside and the follower sat out the lead's new side.
///
/// AUDIT6-CT M3: `fate` is the stops' verdict, asked first — a stop that fired is a stop-out whatever the unknown
/// order did, never deferred (deferring it let the lead's next add re-enter a stopped-out position). And it waits only
/// while an unknown order in the symbol is within its hold (`unknown_blocks`: [`super::unknown::blocks`], the rule
/// that holds entries in that symbol too — so no entry goes out while the verdict is deferred); one past its hold, still
/// watched for ten minutes, no longer defers the verdict (before, any watched order did, also one whose question kept
/// failing: the symbol was never judged).
pub(crate) fn flat_waits_for_unknown(
    ours: Decimal,
    theirs: Decimal,
    late: Decimal,
    fate: Option<&StopFate>,
    unknown_blocks: bool,
) -> bool {
    may_be_stopped_out(ours, theirs)
        && unknown_blocks
        && !fate.is_some_and(StopFate::fired)
        && !explained(ours, theirs, late)
}

/// Whether a `difference` stands only on a second positions read, made after the stop answered (see [`stands`]).
pub(crate) fn needs_flat_read(difference: Difference) -> bool {
    matches!(difference, Difference::ClosedOutside | Difference::Undecided)
}

/// AUDIT-5 L4: whether a `difference` judged from the reconcile's first positions read stands, given a positions
/// read made after the stop answered (`again`). A close outside is judged only when that second read confirms the
/// symbol flat (the first can be a lagging view of a live position: judging it closed outside would cancel the stop
/// that still guards it) — not flat or not read: no verdict this pass (AUDIT-3 F1: a stop is judged against a read
/// made after its answer). AUDIT6-CT M2: an undecided verdict too — it cancels the held stop (the apply that follows
/// sees no position) and, once the live position shows again, closes it; a lagging or empty read must do neither.
/// Every other difference stands as judged (a stop-out rests on a stop that fired, an adoption on our own orders).
pub(crate) fn stands(difference: Difference, again: Now) -> bool {
    !needs_flat_read(difference) || again == Now::Flat
}

/// Called only when `ours` ≠ `theirs`. `late`: the signed quantity orders found late executed in the symbol;
/// `stop`: what became of the position's recorded stop (`None`: no stop recorded, not asked, or the question failed);
/// `stop_known`: a stop was held or kept replaced for the symbol (so `None` means its fate is undecided, not that
/// there was none).
pub(crate) fn difference(
    ours: Decimal,
    theirs: Decimal,
    late: Decimal,
    stop: Option<&StopFate>,
    stop_known: bool,
) -> Difference {
    let flat = may_be_stopped_out(ours, theirs);
    if flat && stop.is_some_and(StopFate::fired) {
        Difference::StoppedOut
    } else if explained(ours, theirs, late) {
        // Our own orders found late (the venue expires the stop of a position they closed).
        Difference::Adopted
    } else if flat && stop.is_some_and(|f| *f == StopFate::Open || f.to_record().is_some()) {
        Difference::ClosedOutside
    } else if flat && stop.is_none() && stop_known {
        Difference::Undecided
    } else {
        Difference::Unexplained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::d;

    const FIRED: Option<&StopFate> = Some(&StopFate::Fired);
    const OPEN: Option<&StopFate> = Some(&StopFate::Open);

    /// AUDIT-5 L5: an order of ours of unknown outcome in the symbol (within its hold) defers the flat verdict,
    /// unless the orders found late explain the difference.
    #[test]
    fn a_flat_position_waits_while_an_order_of_ours_has_an_unknown_outcome() {
        assert!(flat_waits_for_unknown(d("0.1"), d("0"), d("0"), OPEN, true));
        assert!(flat_waits_for_unknown(d("-0.1"), d("0"), d("0"), None, true));
        assert!(!flat_waits_for_unknown(d("0.1"), d("0"), d("0"), OPEN, false));
        // Found late and explaining it all: adopted, not deferred; a part only: still deferred.
        assert!(!flat_waits_for_unknown(d("0.1"), d("0"), d("-0.1"), OPEN, true));
        assert!(flat_waits_for_unknown(d("0.1"), d("0"), d("-0.05"), OPEN, true));
        // Not flat: not a flat verdict.
        assert!(!flat_waits_for_unknown(d("0.1"), d("0.05"), d("0"), OPEN, true));
        assert!(!flat_waits_for_unknown(d("0"), d("0.1"), d("0"), OPEN, true));
    }

    /// AUDIT6-CT M3: a stop that fired is a stop-out whatever an unknown order did — never deferred (the follower
    /// re-entered after it); and an unknown order past its hold (it no longer blocks entries) defers nothing.
    #[test]
    fn a_fired_stop_is_a_stop_out_even_while_an_order_of_ours_has_an_unknown_outcome() {
        for fired in [StopFate::Fired, StopFate::Firing] {
            assert!(!flat_waits_for_unknown(d("0.1"), d("0"), d("0"), Some(&fired), true), "{fired:?}");
            assert_eq!(difference(d("0.1"), d("0"), d("0"), Some(&fired), true), Difference::StoppedOut);
        }
        for other in [None, OPEN, Some(&StopFate::NotFound), Some(&StopFate::Unknown("NEWSTATUS".into()))] {
            assert!(flat_waits_for_unknown(d("0.1"), d("0"), d("0"), other, true), "{other:?}");
            assert!(!flat_waits_for_unknown(d("0.1"), d("0"), d("0"), other, false), "{other:?} past its hold");
        }
    }

    /// AUDIT-5 L4, AUDIT6-CT M2: a close outside and an undecided verdict stand only when a positions read made
    /// after the stop's answer shows flat.
    #[test]
    fn a_close_outside_is_judged_only_on_a_flat_read_after_the_stop_answered() {
        for needs in [Difference::ClosedOutside, Difference::Undecided] {
            assert!(needs_flat_read(needs));
            assert!(stands(needs, Now::Flat), "{needs:?}");
            assert!(!stands(needs, Now::Holds(d("0.1"))), "{needs:?}: a lagging first read");
            assert!(!stands(needs, Now::Unread), "{needs:?}");
        }
        for other in [Difference::StoppedOut, Difference::Adopted, Difference::Unexplained] {
            assert!(!needs_flat_read(other));
            for again in [Now::Flat, Now::Holds(d("0.1")), Now::Unread] {
                assert!(stands(other, again), "{other:?} {again:?}");
            }
        }
    }

    #[test]
    fn a_flat_exchange_position_whose_stop_is_gone_is_a_stop_out() {
        assert!(may_be_stopped_out(d("0.1"), d("0")));
        assert!(!may_be_stopped_out(d("0.1"), d("0.05")));
        assert!(!may_be_stopped_out(d("0"), d("0.1")));
        assert_eq!(difference(d("0.1"), d("0"), d("0"), FIRED, false), Difference::StoppedOut);
        assert_eq!(difference(d("-0.1"), d("0"), d("0"), FIRED, false), Difference::StoppedOut);
        // The stop cancelled, expired or unknown to the exchange: closed outside (no stop-out, but no chasing).
        for ended in [StopFate::Ended("canceled".into()), StopFate::Ended("expired".into()), StopFate::NotFound] {
            assert_eq!(
                difference(d("0.1"), d("0"), d("0"), Some(&ended), false),
                Difference::ClosedOutside,
                "{ended:?}"
            );
        }
        // AUDIT-4 L3: the stop still open (a hand close, an ADL, a liquidation: the stop did not fire and is still
        // listed): closed outside, the follower waits for the lead — before, drift (adopt flat, re-enter).
        assert_eq!(difference(d("0.1"), d("0"), d("0"), OPEN, false), Difference::ClosedOutside);
        assert_eq!(difference(d("-0.1"), d("0"), d("0"), OPEN, true), Difference::ClosedOutside);
        // No stop recorded at all: drift.
        assert_eq!(difference(d("0.1"), d("0"), d("0"), None, false), Difference::Unexplained);
        // AUDIT-3 F3: a stop was held or kept replaced but its fate is not known: undecided, never drift (drift
        // adopts the flat position and re-enters; before, this was Unexplained).
        assert_eq!(difference(d("0.1"), d("0"), d("0"), None, true), Difference::Undecided);
        assert_eq!(difference(d("0.1"), d("0"), d("0"), FIRED, true), Difference::StoppedOut);
        // A stop still open under a position that is not flat: drift (only a flat position can be closed outside).
        assert_eq!(difference(d("0.1"), d("0.05"), d("0"), OPEN, true), Difference::Unexplained);
        // Late orders that explain it exactly come first.
        assert_eq!(difference(d("0.1"), d("0"), d("-0.1"), OPEN, true), Difference::Adopted);
        assert_eq!(difference(d("0.1"), d("0.05"), d("0"), None, true), Difference::Unexplained);
        assert_eq!(difference(d("0.1"), d("0"), d("-0.1"), None, true), Difference::Adopted);
        // Only a flat exchange position can be a stop-out.
        assert_eq!(difference(d("0.1"), d("0.05"), d("0"), FIRED, false), Difference::Unexplained);
    }

    #[test]
    fn what_late_orders_explain_exactly_is_adopted_anything_else_is_drift() {
        assert_eq!(difference(d("0.1"), d("0.15"), d("0.05"), None, false), Difference::Adopted);
        assert_eq!(difference(d("0.1"), d("0"), d("-0.1"), None, false), Difference::Adopted);
        assert_eq!(difference(d("0"), d("-0.2"), d("-0.2"), None, false), Difference::Adopted);
        let expired = StopFate::Ended("expired".into());
        assert_eq!(difference(d("0.1"), d("0"), d("-0.1"), Some(&expired), false), Difference::Adopted);
        assert_eq!(difference(d("0.1"), d("0.16"), d("0.05"), None, false), Difference::Unexplained);
        assert_eq!(difference(d("0.1"), d("0.15"), d("0"), None, false), Difference::Unexplained);
    }
}
