//! Stops: the price, and whether a position's stop is kept, placed, replaced or cancelled.
//!
//! Every position has one `STOP_MARKET` on the mark, `stop_loss_pct` from the entry on the losing side, rounded away
//! from the entry to the tick. A new stop is placed before the old one is cancelled. Binance keeps one
//! close-position stop per direction, so when the old stop already closes the whole position in the same direction
//! the new one carries the position's quantity instead.

use std::collections::BTreeMap;

use kronos_binance::types::{AlgoOrder, AlgoStatus, Side};
use kronos_binance::SymbolFilters;
use kronos_common::{Decimal, Rounding};

use super::orders::{opposite, position_side_for};
use crate::venue::Position;

/// A stop this run placed and holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StopInfo {
    pub(crate) client_id: String,
    pub(crate) trigger: Decimal,
    pub(crate) side: Side,
    /// What it closes: `None` the whole position (close-position), else this much (reduce-only).
    pub(crate) qty: Option<Decimal>,
}

/// The client ids of the copy-trader's own stops start with this (the user's conditional orders are left alone).
pub(crate) const OWN_STOP_PREFIX: &str = "ks";

/// The stop price for a position of signed quantity `qty` entered at `entry`: `stop_loss_pct` from the entry, on
/// the losing side, on the tick (rounded away from the entry: a long's stop down, a short's up).
pub(crate) fn stop_price(qty: Decimal, entry: Decimal, stop_loss_pct: Decimal, f: &SymbolFilters) -> Option<Decimal> {
    let hundred = Decimal::from_int(100);
    let factor = if qty.is_negative() {
        hundred.checked_add(&stop_loss_pct).ok()?
    } else {
        hundred.checked_sub(&stop_loss_pct).ok()?
    };
    let raw =
        entry.checked_mul(&factor, 12, Rounding::HalfUp).ok()?.checked_div(&hundred, 12, Rounding::HalfUp).ok()?;
    f.price(raw, if qty.is_negative() { Rounding::Ceil } else { Rounding::Floor }).ok()
}

/// What to do about a symbol's stop.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopPlan {
    /// The stop in place is right (or there is no position and no stop, or no stop price can be had).
    Keep,
    /// No position: the old stop goes.
    Cancel,
    /// Place a stop (then retire the old one, if any). `close_all`: a close-position stop; otherwise it carries
    /// `qty`.
    Place { trigger: Decimal, side: Side, qty: Decimal, close_all: bool, position_side: String },
}

/// Whether the position `pos` (none: flat) needs its stop `old` changed.
pub(crate) fn plan_stop(
    pos: Option<&Position>,
    old: Option<&StopInfo>,
    f: Option<&SymbolFilters>,
    stop_loss_pct: Decimal,
    hedge: bool,
) -> StopPlan {
    let Some(pos) = pos else {
        return if old.is_some() { StopPlan::Cancel } else { StopPlan::Keep };
    };
    let Some(trigger) = f.and_then(|f| stop_price(pos.qty, pos.entry_price, stop_loss_pct, f)) else {
        return StopPlan::Keep;
    };
    let side = opposite(pos.qty);
    let qty = pos.qty.abs();
    // The old stop is right when it triggers at the same price on the same side and closes at least the position.
    if old.is_some_and(|o| o.trigger == trigger && o.side == side && o.qty.is_none_or(|q| q >= qty)) {
        return StopPlan::Keep;
    }
    // A close-position stop unless the old one already is one in this direction (Binance keeps one per direction).
    let close_all = !old.is_some_and(|o| o.side == side && o.qty.is_none());
    StopPlan::Place { trigger, side, qty, close_all, position_side: position_side_for(hedge, pos.qty) }
}

/// A close-position stop refused with -4130 (one this run does not hold already exists in that direction, left by a
/// crash) is placed again with the position's quantity.
pub(crate) fn retry_with_quantity(close_all: bool, code: Option<i64>) -> bool {
    close_all && code == Some(-4130)
}

/// -2021: the stop would trigger at once (the mark is already past it): the position is closed at market instead.
pub(crate) fn would_trigger_at_once(code: Option<i64>) -> bool {
    code == Some(-2021)
}

/// -2011 / -2013: the stop to cancel is no longer open (it may have fired: asked for).
pub(crate) fn already_gone(code: Option<i64>) -> bool {
    matches!(code, Some(-2011) | Some(-2013))
}

/// What became of a stop this run placed, from the exchange's answer for its client id — the one rule the
/// reconcile, the replacement of a stop ([`StopFate::fired`]) and the check of the recorded stops
/// ([`StopFate::to_record`]) all use.
///
/// Only TRIGGERING, TRIGGERED and FINISHED mean the stop sent its close (TRIGGERING and TRIGGERED: its close is on
/// its way and may not have filled yet — [`StopFate::Firing`]). CANCELED, EXPIRED and REJECTED mean it
/// ended without closing anything (a status the copy-trader does not know is neither: see [`StopFate::Unknown`]): the copy-trader's own cancels remove a stop from its record
/// first, so such a stop was cancelled by someone else (by hand, by the exchange on a liquidation) or expired
/// because its position was closed another way. A flat position whose stop ended that way was closed outside the
/// copy-trader: it waits for the lead's next close or flip exactly as after a stop-out (nothing is chased), but it
/// is reported as what it is, not as a stop-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopFate {
    /// Still open (NEW): protecting.
    Open,
    /// It fired and its close is done (FINISHED).
    Fired,
    /// It fired and its close is on its way (TRIGGERING, TRIGGERED): the position it protected may still be there
    /// for a moment, but it closes; a stop-out all the same once the position is flat.
    Firing,
    /// It ended without closing anything; its status, lower-case (canceled, expired, rejected).
    Ended(String),
    /// A status the copy-trader does not know (as the exchange sent it): possibly still live, so it is kept as held
    /// — never dropped and a second stop placed beside it — and asked about again at the next reconcile.
    Unknown(String),
    /// The exchange does not know it.
    NotFound,
}

pub(crate) fn stop_fate(found: Option<&AlgoOrder>) -> StopFate {
    let Some(a) = found else { return StopFate::NotFound };
    match &a.algo_status {
        AlgoStatus::New => StopFate::Open,
        AlgoStatus::Finished => StopFate::Fired,
        AlgoStatus::Triggering | AlgoStatus::Triggered => StopFate::Firing,
        ended @ (AlgoStatus::Canceled | AlgoStatus::Expired | AlgoStatus::Rejected) => {
            StopFate::Ended(ended.as_str().to_lowercase())
        }
        AlgoStatus::Unknown(status) => StopFate::Unknown(status.clone()),
    }
}

impl StopFate {
    /// It sent its close (done or on its way): a position it protected that is now flat was stopped out.
    pub(crate) fn fired(&self) -> bool {
        matches!(self, StopFate::Fired | StopFate::Firing)
    }

    /// Its fate is known: it fired, or it ended (or is unknown to the exchange) — what a positions read made after
    /// the question is needed for.
    pub(crate) fn settled(&self) -> bool {
        self.fired() || self.to_record().is_some()
    }

    /// It no longer protects and closed nothing: the status to record when it is dropped (a position that still
    /// exists gets a new one); `None` while it is open, or when it fired (the stop-out check has it).
    pub(crate) fn to_record(&self) -> Option<String> {
        match self {
            StopFate::Open | StopFate::Fired | StopFate::Firing | StopFate::Unknown(_) => None,
            StopFate::Ended(status) => Some(status.clone()),
            StopFate::NotFound => Some("not_found".to_string()),
        }
    }
}

/// A question about a stop: `None` when it could not be asked (an error answer, a ban), else its fate.
pub(crate) type Asked = Option<StopFate>;

/// What became of a position the exchange shows flat, from its stops: `held`, the stop the engine holds (`None`:
/// none held), and `replaced`, older stops it replaced whose fate was not settled when they were replaced (a cancel
/// answered -2011/-2013 and the question failed or gave an unknown status, or it was firing). Any one fired: a
/// stop-out. Any one (held or replaced) that could not be asked or answered a status unknown to the engine decides
/// nothing (`None`: undecided, the follower waits for the lead). Otherwise the held stop's fate, or when none is held the replaced ones' (an open one first).
pub(crate) fn flat_fate(held: Option<Asked>, replaced: &[Asked]) -> Option<StopFate> {
    let fired = |a: &Asked| a.as_ref().is_some_and(StopFate::fired);
    if held.as_ref().is_some_and(fired) || replaced.iter().any(fired) {
        return Some(StopFate::Fired);
    }
    // Not asked, or a status this engine does not know (the venue may add one): undecided, never drift — the held
    // stop's too (AUDIT-4 H1: an unknown status on the held stop of a flat position was taken as drift and re-entered).
    let undecided = |a: &Asked| matches!(a, None | Some(StopFate::Unknown(_)));
    if replaced.iter().any(undecided) || held.as_ref().is_some_and(undecided) {
        return None;
    }
    match held {
        Some(h) => h,
        None => replaced.iter().flatten().find(|f| **f == StopFate::Open).or(replaced.iter().flatten().next()).cloned(),
    }
}

/// What the exchange showed for a symbol in a positions read made after its stops were asked (AUDIT-3 F1: a stop
/// is judged against a position read after its own answer, never before it — a stop that fires and fills between
/// a reconcile's positions read and its look-up would otherwise look like a fired stop under a live position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Now {
    /// No position in the symbol.
    Flat,
    /// This signed quantity.
    Holds(Decimal),
    /// Not read (the read failed, or no answer needed it).
    Unread,
}

/// What to do about a stop the engine holds that the exchange no longer lists open, at a reconcile (after the flat
/// positions were checked), from its fate, whether the engine records a position in its symbol (`recorded`) and
/// what a positions read made after the question shows (`now`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeldPlan {
    /// Kept as held, asked again at the next reconcile: the question failed, the status is unknown or it is open
    /// after all; or it fired and no position is recorded (the stop-out check has it); or it settled under a
    /// recorded position that could not be read again.
    Keep,
    /// The recorded position is flat now: nothing is decided here, the stop stays held and the reconcile checks
    /// the flat position again at once (a stop-out or a close outside, never drift).
    Recheck,
    /// Moved to the replaced stops and a new one placed: it fired (its close on its way, or done but not yet seen
    /// in the positions read — AUDIT-4 L1) under a position still there (the follower held at `hold`, the quantity
    /// left, until the lead closes or flips); or its status
    /// is one the copy-trader does not know under a recorded position (`hold` none: it may be live or terminal, so
    /// it is kept for the stop-out check and the position gets a stop known to be live — AUDIT-3 F4).
    Replace { hold: Option<Decimal> },
    /// It no longer protects and closed nothing: dropped, recorded with `status` (a position still there gets a
    /// new stop; `hold` is always `None` for a held stop: one that fired is replaced, never dropped here).
    Drop { status: String, hold: Option<Decimal> },
}

pub(crate) fn held_plan(fate: &Asked, recorded: bool, now: Now) -> HeldPlan {
    let f = match fate {
        Some(StopFate::Unknown(_)) if recorded => return HeldPlan::Replace { hold: None },
        None | Some(StopFate::Open) | Some(StopFate::Unknown(_)) => return HeldPlan::Keep,
        Some(f) => f,
    };
    if !recorded {
        return match f.to_record() {
            Some(status) => HeldPlan::Drop { status, hold: None },
            None => HeldPlan::Keep,
        };
    }
    match now {
        Now::Flat => HeldPlan::Recheck,
        Now::Unread => HeldPlan::Keep,
        // AUDIT-4 L1: FINISHED means the close was placed, not that this read shows it (the fill or the positions
        // view can lag): it is kept as replaced with its hold exactly like a close on its way, so a flat position
        // found next is a stop-out, and [`replaced_plan`] drops it once a later read confirms what it left.
        Now::Holds(q) if f.fired() => HeldPlan::Replace { hold: Some(q.abs()) },
        Now::Holds(_) => HeldPlan::Drop { status: f.to_record().unwrap_or_default(), hold: None },
    }
}

/// AUDIT-4 L4: whether an order that adds exposure on `side` waits for the replaced stops still kept in its symbol
/// (`replaced`: their cancel not confirmed, or their fate not settled — any may still be live). One on the other
/// side would close what the entry opens or adds, at its old trigger; so the entry waits until each such stop is
/// settled (its cancel confirmed, or its end known), and is not sent meanwhile. A replaced stop on the entry's own
/// side cannot touch the new exposure (stops only close: reduce-only, close-position or a hedge position side), so
/// it does not hold it.
pub(crate) fn entry_waits(replaced: &[StopInfo], side: Side) -> bool {
    replaced.iter().any(|st| st.side != side)
}

/// AUDIT-5 L1: whether the stop held in a symbol guards nothing the engine records — no position (flat), or one
/// in the other direction than the stop closes (`pos`: the recorded signed quantity, zero when none). Such a stop is
/// treated like a replaced one before an entry (asked, cancelled strictly, dropped once confirmed gone: an entry it
/// would close waits for it meanwhile), and an "open" stop row of such a symbol is restored as replaced at a start.
/// Before, only replaced stops held an entry: a held stop whose cancel failed when the position closed stayed live
/// at its old trigger under the next entry.
pub(crate) fn held_guards_nothing(pos: Decimal, held: &StopInfo) -> bool {
    pos.is_zero() || held.side != opposite(pos)
}

/// AUDIT6-CT M1: whether a replaced stop found still open is taken back as the symbol's held stop instead of being
/// cancelled: the symbol holds no stop (`held`) and this one guards the position recorded now (`pos`, after the
/// reconcile adopted the exchange's) — [`held_guards_nothing`] false. A start restores a stop row as replaced when the
/// store recorded no position for it (a fill booked whose position row failed to be written); the reconcile then
/// adopts the live position from the exchange, and cancelling its stop would leave it bare until a start succeeds
/// (start-up retries while the lead cannot be read). Kept as held, the usual [`plan_stop`] moves it if it is wrong.
pub(crate) fn take_back_as_held(held: Option<&StopInfo>, pos: Decimal, replaced: &StopInfo) -> bool {
    held.is_none() && !held_guards_nothing(pos, replaced)
}

/// AUDIT-5 L2: whether a stop that would close an entry may still fire, from its fate as asked before the entry
/// (`None`: the question failed) — the one liveness rule of entries (the stop-out check keeps its own list as
/// before). Blocks: not asked, a status this engine does not know, open (only while its cancel is not confirmed:
/// the caller cancels an open one first) and firing (TRIGGERING/TRIGGERED: its close may still be on its way, also
/// with no position recorded). Never blocks: ended (canceled, expired, rejected), not found, FINISHED (its close is
/// done). Before, the reconcile's `replaced_plan` decided it: an ended or FINISHED stop under a recorded position
/// held the entry until the next reconcile, and a firing one with no position recorded let it go.
pub(crate) fn may_still_fire(fate: &Asked) -> bool {
    match fate {
        None | Some(StopFate::Unknown(_)) | Some(StopFate::Open) | Some(StopFate::Firing) => true,
        Some(StopFate::Ended(_)) | Some(StopFate::NotFound) | Some(StopFate::Fired) => false,
    }
}

/// What to do about a replaced stop kept for the stop-out check, at a reconcile (after the flat positions were
/// checked), from its fate now, whether the engine still records a position in its symbol and what a positions
/// read made after the question shows (as [`held_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplacedPlan {
    /// Its fate still matters: kept, asked again at the next reconcile (the question failed, the status is unknown,
    /// its close is on its way under a position that is still there, or the position could not be read again).
    Keep,
    /// The recorded position is flat now: kept, and the reconcile checks the flat position again at once.
    Recheck,
    /// It is still open (the -2011/-2013 was not the last word): no longer kept, so the clean-up cancels it as a
    /// stop no position holds (the position keeps the stop that replaced it).
    Release,
    /// It is settled: dropped, recorded with this status; `hold` as in [`HeldPlan::Drop`].
    Drop { status: String, hold: Option<Decimal> },
}

pub(crate) fn replaced_plan(fate: &Asked, recorded: bool, now: Now) -> ReplacedPlan {
    let f = match fate {
        None | Some(StopFate::Unknown(_)) => return ReplacedPlan::Keep,
        Some(StopFate::Open) => return ReplacedPlan::Release,
        Some(f) => f,
    };
    let status = if f.fired() { "finished".to_string() } else { f.to_record().unwrap_or_default() };
    if !recorded {
        return ReplacedPlan::Drop { status, hold: None };
    }
    match now {
        Now::Flat => ReplacedPlan::Recheck,
        Now::Unread => ReplacedPlan::Keep,
        Now::Holds(_) if *f == StopFate::Firing => ReplacedPlan::Keep,
        Now::Holds(q) => ReplacedPlan::Drop { hold: (*f == StopFate::Fired).then(|| q.abs()), status },
    }
}

/// The stops this run holds that are not among the exchange's open ones.
pub(crate) fn not_open(stops: &BTreeMap<String, StopInfo>, open: &[AlgoOrder]) -> Vec<(String, StopInfo)> {
    stops
        .iter()
        .filter(|(_, st)| !open.iter().any(|a| a.client_algo_id == st.client_id))
        .map(|(s, st)| (s.clone(), st.clone()))
        .collect()
}

/// The copy-trader's own open stops that belong to no stop this run holds (left by a crash or a manual change):
/// `(symbol, client id)` to cancel. A replaced stop kept for the stop-out check (`replaced`) is not one: the
/// position's live stop is the held one, and neither is ever cancelled here.
pub(crate) fn orphans(
    open: &[AlgoOrder],
    stops: &BTreeMap<String, StopInfo>,
    replaced: &BTreeMap<String, Vec<StopInfo>>,
) -> Vec<(String, String)> {
    open.iter()
        .filter(|a| {
            let held = stops.get(&a.symbol).is_some_and(|s| s.client_id == a.client_algo_id);
            let kept = replaced.get(&a.symbol).is_some_and(|v| v.iter().any(|s| s.client_id == a.client_algo_id));
            !held && !kept && a.client_algo_id.starts_with(OWN_STOP_PREFIX)
        })
        .map(|a| (a.symbol.clone(), a.client_algo_id.clone()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decide::testing::{btc, d};

    pub(crate) fn algo(symbol: &str, id: &str, status: &str, position_side: &str) -> AlgoOrder {
        AlgoOrder {
            algo_id: 1,
            client_algo_id: id.into(),
            algo_type: "CONDITIONAL".into(),
            order_type: "STOP_MARKET".into(),
            symbol: symbol.into(),
            side: Side::Sell,
            position_side: position_side.into(),
            quantity: Decimal::ZERO,
            trigger_price: d("49000"),
            algo_status: AlgoStatus::from(status.to_string()),
            close_position: true,
            reduce_only: true,
            working_type: "MARK_PRICE".into(),
            update_time: 0,
        }
    }

    fn pos(qty: &str, entry: &str) -> Position {
        Position { symbol: "BTCUSDT".into(), qty: d(qty), entry_price: d(entry), mark_price: d(entry) }
    }

    fn stop(id: &str, trigger: &str, side: Side, qty: Option<&str>) -> StopInfo {
        StopInfo { client_id: id.into(), trigger: d(trigger), side, qty: qty.map(d) }
    }

    #[test]
    fn the_stop_is_the_distance_from_the_entry_on_the_losing_side_rounded_away_from_it() {
        let f = btc();
        // 2% under a long's entry: 50000.05 × 0.98 = 49000.049 → down to the tick.
        assert_eq!(stop_price(d("0.1"), d("50000.05"), d("2"), &f), Some(d("49000")));
        // 2% over a short's: 50000.05 × 1.02 = 51000.051 → up to the tick.
        assert_eq!(stop_price(d("-0.1"), d("50000.05"), d("2"), &f), Some(d("51000.1")));
        assert_eq!(stop_price(d("0.1"), d("100"), d("1.5"), &f), Some(d("98.5")));
        // Not below the symbol's minimum price.
        assert_eq!(stop_price(d("0.1"), d("0.1"), d("50"), &f), Some(d("0.1")));
    }

    #[test]
    fn a_position_gets_one_stop_and_a_moved_one_is_replaced_new_first() {
        let f = btc();
        let plan = |p: Option<&Position>, o: Option<&StopInfo>, hedge| plan_stop(p, o, Some(&f), d("2"), hedge);
        let long = pos("0.1", "50000");
        // Flat: a stop left over goes; no stop, nothing to do.
        assert_eq!(plan(None, Some(&stop("ks1", "49000", Side::Sell, None)), false), StopPlan::Cancel);
        assert_eq!(plan(None, None, false), StopPlan::Keep);
        // A new position: a close-position stop 2% under the entry.
        let place = |qty: &str, close_all, ps: &str| StopPlan::Place {
            trigger: d("49000"),
            side: Side::Sell,
            qty: d(qty),
            close_all,
            position_side: ps.into(),
        };
        assert_eq!(plan(Some(&long), None, false), place("0.1", true, "BOTH"));
        assert_eq!(plan(Some(&long), None, true), place("0.1", true, "LONG"));
        // The right stop is kept: a close-position one, or one carrying at least the position.
        assert_eq!(plan(Some(&long), Some(&stop("ks1", "49000", Side::Sell, None)), false), StopPlan::Keep);
        assert_eq!(plan(Some(&long), Some(&stop("ks1", "49000", Side::Sell, Some("0.1"))), false), StopPlan::Keep);
        assert_eq!(plan(Some(&long), Some(&stop("ks1", "49000", Side::Sell, Some("0.2"))), false), StopPlan::Keep);
        // A stop carrying less than the position grew to: replaced by a close-position stop.
        assert_eq!(
            plan(Some(&long), Some(&stop("ks1", "49000", Side::Sell, Some("0.05"))), false),
            place("0.1", true, "BOTH")
        );
        // The entry moved while a close-position stop holds that direction: the new one carries the quantity.
        assert_eq!(
            plan(Some(&long), Some(&stop("ks1", "48000", Side::Sell, None)), false),
            place("0.1", false, "BOTH")
        );
        // A flip: the old stop is on the other side, the new one is close-position again.
        let short = pos("-0.1", "50000");
        assert_eq!(
            plan(Some(&short), Some(&stop("ks1", "49000", Side::Sell, None)), true),
            StopPlan::Place {
                trigger: d("51000"),
                side: Side::Buy,
                qty: d("0.1"),
                close_all: true,
                position_side: "SHORT".into()
            }
        );
        // A symbol without exchange rules gets no stop.
        assert_eq!(plan_stop(Some(&long), None, None, d("2"), false), StopPlan::Keep);
    }

    #[test]
    fn exchange_codes_of_stops_mean_what_they_say() {
        assert!(retry_with_quantity(true, Some(-4130)));
        assert!(!retry_with_quantity(false, Some(-4130)));
        assert!(!retry_with_quantity(true, Some(-2021)));
        assert!(!retry_with_quantity(true, None));
        assert!(would_trigger_at_once(Some(-2021)));
        assert!(!would_trigger_at_once(Some(-4130)) && !would_trigger_at_once(None));
        assert!(already_gone(Some(-2011)) && already_gone(Some(-2013)));
        assert!(!already_gone(Some(-2021)) && !already_gone(None));
    }

    /// One rule for every status, used by the reconcile, the replacement of a stop and the check of the recorded
    /// stops: only a stop that sent its close fired; every other end is recorded with its status.
    #[test]
    fn every_stop_status_has_one_fate() {
        let fate = |status: &str| stop_fate(Some(&algo("BTCUSDT", "ks1", status, "BOTH")));
        assert_eq!(fate("NEW"), StopFate::Open);
        assert_eq!(fate("FINISHED"), StopFate::Fired);
        // Its close on its way (AUDIT-2 B6): fired all the same, but told apart from a finished one.
        assert_eq!(fate("TRIGGERING"), StopFate::Firing);
        assert_eq!(fate("TRIGGERED"), StopFate::Firing);
        for s in ["TRIGGERING", "TRIGGERED", "FINISHED"] {
            assert!(fate(s).fired() && fate(s).to_record().is_none(), "{s}");
        }
        for (s, rec) in [("CANCELED", "canceled"), ("EXPIRED", "expired"), ("REJECTED", "rejected")] {
            assert_eq!(fate(s), StopFate::Ended(rec.into()), "{s}");
            assert!(!fate(s).fired() && fate(s).to_record().as_deref() == Some(rec), "{s}");
        }
        // A status not known here may be live: neither fired nor ended, so it is never dropped (CTL-FIX 10).
        for s in ["NEWER", "PAUSED", ""] {
            assert_eq!(fate(s), StopFate::Unknown(s.into()), "{s}");
            assert!(!fate(s).fired() && fate(s).to_record().is_none(), "{s}");
        }
        assert_eq!(stop_fate(None), StopFate::NotFound);
        assert!(!StopFate::NotFound.fired());
        assert_eq!(StopFate::NotFound.to_record().as_deref(), Some("not_found"));
        assert!(!StopFate::Open.fired() && StopFate::Open.to_record().is_none());
    }

    #[test]
    fn a_recorded_stop_gone_from_the_exchange_is_dropped_unless_it_fired() {
        let stops: BTreeMap<String, StopInfo> = [
            ("BTCUSDT".to_string(), stop("ks1", "49000", Side::Sell, None)),
            ("ETHUSDT".to_string(), stop("ks2", "3000", Side::Sell, None)),
        ]
        .into();
        let open = [algo("BTCUSDT", "ks1", "NEW", "BOTH")];
        let missing = not_open(&stops, &open);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].0, "ETHUSDT");
        let kept = |status: &str| stop_fate(Some(&algo("ETHUSDT", "ks2", status, "BOTH"))).to_record();
        assert_eq!(stop_fate(None).to_record(), Some("not_found".into()));
        assert_eq!(kept("CANCELED"), Some("canceled".into()));
        assert_eq!(kept("EXPIRED"), Some("expired".into()));
        assert_eq!(kept("NEW"), None);
        assert_eq!(kept("TRIGGERED"), None);
    }

    #[test]
    fn only_the_copy_traders_own_stops_that_no_position_holds_are_orphans() {
        let stops: BTreeMap<String, StopInfo> =
            [("BTCUSDT".to_string(), stop("ks1", "49000", Side::Sell, None))].into();
        let open = [
            algo("BTCUSDT", "ks1", "NEW", "BOTH"),
            algo("BTCUSDT", "ks0", "NEW", "BOTH"),
            algo("ETHUSDT", "ks9", "NEW", "BOTH"),
            algo("ETHUSDT", "user-stop", "NEW", "BOTH"),
        ];
        let none = BTreeMap::new();
        assert_eq!(
            orphans(&open, &stops, &none),
            vec![("BTCUSDT".to_string(), "ks0".to_string()), ("ETHUSDT".to_string(), "ks9".to_string())]
        );
        // AUDIT-2 B2: a replaced stop kept for the stop-out check (ks0, its fate unknown) and the stop held (ks1)
        // are never orphans; before, the old stop was put back as the one held and the live new one was cancelled.
        let replaced: BTreeMap<String, Vec<StopInfo>> =
            [("BTCUSDT".to_string(), vec![stop("ks0", "48000", Side::Sell, None)])].into();
        assert_eq!(orphans(&open, &stops, &replaced), vec![("ETHUSDT".to_string(), "ks9".to_string())]);
    }

    /// AUDIT-2 B2/B6: a flat position is a stop-out when either the stop held or a replaced one kept for the check
    /// fired (also while its close is on its way); a replaced stop whose fate is unknown decides nothing.
    #[test]
    fn a_flat_position_is_stopped_out_when_the_held_or_the_replaced_stop_fired() {
        let ended = || StopFate::Ended("expired".into());
        let unknown = || StopFate::Unknown("PAUSED".into());
        // A replaced stop fired (its close done or on its way): a stop-out, whatever the new one says.
        for r in [StopFate::Fired, StopFate::Firing] {
            for h in [Some(Some(StopFate::Open)), Some(Some(ended())), Some(None), None] {
                assert_eq!(flat_fate(h.clone(), &[Some(r.clone())]), Some(StopFate::Fired), "{h:?} {r:?}");
                assert_eq!(flat_fate(h.clone(), &[Some(ended()), Some(r.clone())]), Some(StopFate::Fired));
            }
        }
        // The held one fired: a stop-out, also beside a replaced one whose fate is unknown.
        assert_eq!(flat_fate(Some(Some(StopFate::Firing)), &[None]), Some(StopFate::Fired));
        assert_eq!(flat_fate(Some(Some(StopFate::Fired)), &[]), Some(StopFate::Fired));
        // A replaced stop that could not be asked, or whose status is unknown, may have fired: nothing decided.
        assert_eq!(flat_fate(Some(Some(ended())), &[None]), None);
        assert_eq!(flat_fate(Some(Some(ended())), &[Some(unknown())]), None);
        assert_eq!(flat_fate(None, &[Some(ended()), None]), None);
        // Otherwise the held stop's fate (its question failed: nothing decided).
        assert_eq!(flat_fate(Some(Some(ended())), &[Some(StopFate::NotFound)]), Some(ended()));
        assert_eq!(flat_fate(Some(Some(StopFate::Open)), &[Some(ended())]), Some(StopFate::Open));
        assert_eq!(flat_fate(Some(None), &[Some(ended())]), None);
        assert_eq!(flat_fate(Some(Some(unknown())), &[]), None, "an unknown status on the held stop decides nothing");
        assert_eq!(flat_fate(Some(Some(unknown())), &[Some(ended())]), None);
        // None held: the replaced ones' (an open one first: someone else closed the position, closed outside — L3).
        assert_eq!(flat_fate(None, &[Some(ended())]), Some(ended()));
        assert_eq!(flat_fate(None, &[Some(ended()), Some(StopFate::Open)]), Some(StopFate::Open));
        assert_eq!(flat_fate(None, &[]), None);
        assert_eq!(flat_fate(Some(Some(ended())), &[]), Some(ended()));
    }

    /// A replaced stop is kept while its fate still matters, released to the clean-up when it is still open, and
    /// dropped with its status once settled.
    #[test]
    fn a_replaced_stop_is_kept_until_its_fate_is_settled() {
        let q = d("0.05");
        for (recorded, now) in [(true, Now::Holds(q)), (true, Now::Flat), (true, Now::Unread), (false, Now::Flat)] {
            assert_eq!(replaced_plan(&None, recorded, now), ReplacedPlan::Keep);
            assert_eq!(replaced_plan(&Some(StopFate::Unknown("PAUSED".into())), recorded, now), ReplacedPlan::Keep);
            assert_eq!(replaced_plan(&Some(StopFate::Open), recorded, now), ReplacedPlan::Release);
        }
        let drop = |status: &str, hold: Option<&str>| ReplacedPlan::Drop { status: status.into(), hold: hold.map(d) };
        // No position recorded: nothing left to decide, every settled fate is dropped.
        assert_eq!(replaced_plan(&Some(StopFate::Fired), false, Now::Unread), drop("finished", None));
        assert_eq!(replaced_plan(&Some(StopFate::Firing), false, Now::Unread), drop("finished", None));
        assert_eq!(replaced_plan(&Some(StopFate::NotFound), false, Now::Unread), drop("not_found", None));
        // A position recorded and still there after the question: a close on its way keeps it (B6); one done is
        // dropped and the follower held at what is left (F7); one that ended is dropped.
        assert_eq!(replaced_plan(&Some(StopFate::Firing), true, Now::Holds(q)), ReplacedPlan::Keep);
        assert_eq!(replaced_plan(&Some(StopFate::Fired), true, Now::Holds(d("-0.05"))), drop("finished", Some("0.05")));
        assert_eq!(
            replaced_plan(&Some(StopFate::Ended("canceled".into())), true, Now::Holds(q)),
            drop("canceled", None)
        );
        // AUDIT-3 F1: the recorded position is flat in a read made after the question (the stop fired and its
        // close filled after the reconcile read the positions): kept for the flat check, never dropped (before,
        // FINISHED under a recorded position was dropped and the flat position then read as drift and re-entered).
        for f in [StopFate::Fired, StopFate::Firing, StopFate::Ended("expired".into()), StopFate::NotFound] {
            assert_eq!(replaced_plan(&Some(f.clone()), true, Now::Flat), ReplacedPlan::Recheck, "{f:?}");
            // Not read again: kept, asked again at the next reconcile.
            assert_eq!(replaced_plan(&Some(f.clone()), true, Now::Unread), ReplacedPlan::Keep, "{f:?}");
        }
    }

    /// AUDIT-4 L4: an old stop kept as replaced (its cancel not confirmed) may still fire; an entry it would close
    /// waits for it — before, the lead reopening in the same direction was followed at once and the old stop could
    /// close the new position at its old trigger.
    #[test]
    fn an_entry_waits_while_a_replaced_stop_that_would_close_it_may_be_live() {
        let sell = stop("ks0", "49000", Side::Sell, None);
        let buy = stop("ks1", "51000", Side::Buy, Some("0.1"));
        // Nothing replaced: nothing waits.
        assert!(!entry_waits(&[], Side::Buy) && !entry_waits(&[], Side::Sell));
        // An old long's stop (SELL) holds a long entry (BUY), not a short one (SELL): it cannot close a short.
        assert!(entry_waits(std::slice::from_ref(&sell), Side::Buy));
        assert!(!entry_waits(std::slice::from_ref(&sell), Side::Sell));
        // An old short's stop (BUY) holds a short entry.
        assert!(entry_waits(std::slice::from_ref(&buy), Side::Sell));
        assert!(!entry_waits(std::slice::from_ref(&buy), Side::Buy));
        // Any one of several.
        assert!(entry_waits(&[buy.clone(), sell.clone()], Side::Buy));
        assert!(entry_waits(&[buy, sell], Side::Sell));
    }

    /// AUDIT-5 L1: a held stop with no recorded position, or under one in the other direction, guards nothing: it
    /// is treated like a replaced stop before an entry and restored as replaced at a start.
    #[test]
    fn a_held_stop_under_no_position_or_the_other_side_guards_nothing() {
        let sell = stop("ks0", "49000", Side::Sell, None);
        let buy = stop("ks1", "51000", Side::Buy, Some("0.1"));
        assert!(held_guards_nothing(d("0"), &sell) && held_guards_nothing(d("0"), &buy));
        // A long is guarded by a SELL stop, a short by a BUY stop.
        assert!(!held_guards_nothing(d("0.1"), &sell));
        assert!(held_guards_nothing(d("0.1"), &buy));
        assert!(!held_guards_nothing(d("-0.1"), &buy));
        assert!(held_guards_nothing(d("-0.1"), &sell));
    }

    /// AUDIT6-CT M1: a replaced stop found open is taken back as held when no stop is held and it guards the
    /// position recorded now (restored as replaced at a start whose store had no position row, the live position
    /// adopted by the reconcile); cancelled otherwise (it guards nothing, or another stop is held).
    #[test]
    fn an_open_replaced_stop_that_guards_the_position_now_recorded_is_taken_back_as_held() {
        let sell = stop("ks0", "49000", Side::Sell, None);
        let buy = stop("ks1", "51000", Side::Buy, Some("0.1"));
        assert!(take_back_as_held(None, d("0.1"), &sell));
        assert!(take_back_as_held(None, d("-0.1"), &buy));
        // Flat, or the other direction: it guards nothing, cancelled.
        assert!(!take_back_as_held(None, d("0"), &sell));
        assert!(!take_back_as_held(None, d("-0.1"), &sell));
        assert!(!take_back_as_held(None, d("0.1"), &buy));
        // A stop is held already (the usual replaced stop of a moved stop): cancelled.
        let held = stop("ks2", "49500", Side::Sell, None);
        assert!(!take_back_as_held(Some(&held), d("0.1"), &sell));
    }

    /// AUDIT-5 L2: the entries' liveness rule, status by status: what may still fire holds an entry it would close;
    /// what ended, is not found or FINISHED never does.
    #[test]
    fn an_entry_waits_only_for_a_stop_that_may_still_fire() {
        let table: [(Asked, bool); 9] = [
            (None, true),
            (Some(StopFate::Unknown("PAUSED".into())), true),
            (Some(StopFate::Open), true),
            (Some(StopFate::Firing), true),
            (Some(StopFate::Fired), false),
            (Some(StopFate::NotFound), false),
            (Some(StopFate::Ended("canceled".into())), false),
            (Some(StopFate::Ended("expired".into())), false),
            (Some(StopFate::Ended("rejected".into())), false),
        ];
        for (fate, waits) in table {
            assert_eq!(may_still_fire(&fate), waits, "{fate:?}");
        }
        // From the exchange's own statuses: TRIGGERING and TRIGGERED block, FINISHED does not.
        let fate = |status: &str| Some(stop_fate(Some(&algo("BTCUSDT", "ks1", status, "BOTH"))));
        for (status, waits) in [("NEW", true), ("TRIGGERING", true), ("TRIGGERED", true), ("FINISHED", false)] {
            assert_eq!(may_still_fire(&fate(status)), waits, "{status}");
        }
        assert!(!may_still_fire(&Some(stop_fate(None))));
    }

    /// AUDIT-3 F1/F7: a held stop the exchange no longer lists open is judged against a positions read made after
    /// its question: flat now means the flat check again (a stop-out), never a dropped stop and drift.
    #[test]
    fn a_held_stop_that_fired_is_judged_by_the_position_read_after_it() {
        let q = d("0.05");
        let drop = |status: &str, hold: Option<&str>| HeldPlan::Drop { status: status.into(), hold: hold.map(d) };
        let unknown = Some(StopFate::Unknown("PAUSED".into()));
        for recorded in [true, false] {
            for now in [Now::Flat, Now::Holds(q), Now::Unread] {
                for fate in [None, Some(StopFate::Open)] {
                    assert_eq!(held_plan(&fate, recorded, now), HeldPlan::Keep, "{fate:?} {recorded} {now:?}");
                }
                // F4: a status not known here under a recorded position: kept as replaced (it may have fired) and
                // a new stop placed (it may be terminal: the position is not left with it as its only stop).
                let expect = if recorded { HeldPlan::Replace { hold: None } } else { HeldPlan::Keep };
                assert_eq!(held_plan(&unknown, recorded, now), expect, "{recorded} {now:?}");
            }
        }
        // F1: the stop fired (done or on its way) or ended after the positions were read: flat now, so the flat
        // position is checked again at once with the stop still held (before: dropped as finished, then drift).
        for f in [StopFate::Fired, StopFate::Firing, StopFate::Ended("expired".into()), StopFate::NotFound] {
            assert_eq!(held_plan(&Some(f.clone()), true, Now::Flat), HeldPlan::Recheck, "{f:?}");
            assert_eq!(held_plan(&Some(f.clone()), true, Now::Unread), HeldPlan::Keep, "{f:?}");
        }
        // F7: the position is still there: a fired stop is replaced and the follower held at what it has; an ended
        // one is dropped, a new stop placed, nothing held.
        assert_eq!(held_plan(&Some(StopFate::Firing), true, Now::Holds(q)), HeldPlan::Replace { hold: Some(q) });
        // AUDIT-4 L1: FINISHED under a position the read still shows (its fill or the positions view may lag) is
        // kept as replaced with its hold, like a close on its way — before, dropped as 'finished', so when the close
        // showed the next flat check found only the new open stop (drift) and the hold was lost.
        assert_eq!(
            held_plan(&Some(StopFate::Fired), true, Now::Holds(d("-0.05"))),
            HeldPlan::Replace { hold: Some(q) }
        );
        // ... and the replaced stop is dropped (with its hold) only once a later read confirms: flat → the flat check
        // (a stop-out), still there → what its close left.
        assert_eq!(replaced_plan(&Some(StopFate::Fired), true, Now::Flat), ReplacedPlan::Recheck);
        assert_eq!(
            replaced_plan(&Some(StopFate::Fired), true, Now::Holds(q)),
            ReplacedPlan::Drop { status: "finished".into(), hold: Some(q) }
        );
        assert_eq!(
            replaced_plan(&Some(StopFate::Fired), false, Now::Unread),
            ReplacedPlan::Drop { status: "finished".into(), hold: None }
        );
        assert_eq!(held_plan(&Some(StopFate::Ended("canceled".into())), true, Now::Holds(q)), drop("canceled", None));
        assert_eq!(held_plan(&Some(StopFate::NotFound), true, Now::Holds(q)), drop("not_found", None));
        // No position recorded: a fired stop stays for the stop-out check, an ended one is dropped.
        assert_eq!(held_plan(&Some(StopFate::Fired), false, Now::Unread), HeldPlan::Keep);
        assert_eq!(held_plan(&Some(StopFate::Firing), false, Now::Unread), HeldPlan::Keep);
        assert_eq!(held_plan(&Some(StopFate::Ended("expired".into())), false, Now::Unread), drop("expired", None));
    }
}
