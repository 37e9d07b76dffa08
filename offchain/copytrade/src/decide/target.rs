//! The follower's target in a symbol and the orders that move its position there.
//!
//! The target is the lead's position × ratio (within the symbol's limit, see [`crate::lead`]) plus the AI target,
//! capped by [`crate::sizing::cap_target`]. The position moves there in two steps: first a reduce-only order for
//! what must shrink or close (always allowed, no minimum notional), then an entry for what must grow — only when no
//! order of unknown fate holds the symbol and the protections allow entries.

use std::collections::{BTreeMap, HashMap};

use kronos_binance::filters::FilterError;
use kronos_binance::types::Side;
use kronos_binance::SymbolFilters;
use kronos_common::signals::LeadAction;
use kronos_common::{Decimal, Rounding};

use super::orders::{opposite, position_side_for, MarketOrder};
use crate::lead::LeadBook;
use crate::sizing::mirror;
use crate::venue::Position;

/// The target before the caps: `lead` (when a lead is followed) × `ratio` within the symbol's limit, plus the AI
/// target `(qty, expires_ms)` while it has not expired.
pub(crate) fn raw_target(
    lead: Option<&LeadBook>,
    symbol: &str,
    ratio: Decimal,
    ai: Option<(Decimal, i64)>,
    now_ms: i64,
) -> Decimal {
    let lead = match lead {
        Some(l) => l.bounded(symbol, mirror(l.qty(symbol), ratio)),
        None => Decimal::ZERO,
    };
    let ai = ai.filter(|(_, expires_ms)| *expires_ms > now_ms).map(|(q, _)| q).unwrap_or_default();
    lead.checked_add(&ai).unwrap_or(lead)
}

/// The notional of every follower position but `symbol`'s, at the latest mark (the position's own mark when none).
pub(crate) fn others_notional(
    follower: &BTreeMap<String, Position>,
    marks: &HashMap<String, Decimal>,
    symbol: &str,
) -> Decimal {
    follower.values().filter(|p| p.symbol != symbol).fold(Decimal::ZERO, |acc, p| {
        let m = marks.get(&p.symbol).copied().unwrap_or(p.mark_price);
        acc.checked_add(&p.qty.abs().checked_mul(&m, 8, Rounding::HalfUp).unwrap_or_default()).unwrap_or(acc)
    })
}

/// How much of `current` must go to reach `target`: all of it to close or flip, the difference to shrink.
pub(crate) fn shrink(current: Decimal, target: Decimal) -> Decimal {
    let flips = !current.is_zero() && !target.is_zero() && current.is_negative() != target.is_negative();
    if current.is_zero() {
        Decimal::ZERO
    } else if target.is_zero() || flips {
        current.abs()
    } else if target.abs() < current.abs() {
        current.abs().checked_sub(&target.abs()).unwrap_or_default()
    } else {
        Decimal::ZERO
    }
}

/// The first step toward a target.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reduction {
    /// Nothing must shrink.
    Nothing,
    /// What must shrink rounds below the exchange's minimum quantity: not sent.
    BelowMinimum(FilterError),
    Send(MarketOrder),
}

/// The reduce-only order that shrinks, closes or (before a flip) closes `current` toward `target`.
pub(crate) fn reduction(current: Decimal, target: Decimal, mark: Decimal, f: &SymbolFilters, hedge: bool) -> Reduction {
    let q = shrink(current, target);
    if q.is_zero() {
        return Reduction::Nothing;
    }
    match f.market_qty(q, mark, true) {
        Ok(qty) => Reduction::Send(MarketOrder {
            side: opposite(current),
            qty,
            reduce_only: true,
            position_side: position_side_for(hedge, current),
        }),
        Err(e) => Reduction::BelowMinimum(e),
    }
}

/// The second step toward a target.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// Nothing grows (or an order of unknown fate holds the symbol).
    Nothing,
    /// The position would grow by `add` but the protections refuse entries (`why`): held where it is.
    Refused {
        add: Decimal,
        why: String,
    },
    /// The growth is below the exchange's minimum quantity or notional: not sent.
    BelowMinimum(FilterError),
    Send(MarketOrder),
}

/// The entry that grows `current` (after the reduction) toward `target`. `blocked`: an order of unknown fate may
/// still execute in the symbol; `allowed`: whether the protections allow entries now.
pub(crate) fn entry(
    current: Decimal,
    target: Decimal,
    blocked: bool,
    allowed: Result<(), String>,
    mark: Decimal,
    f: &SymbolFilters,
    hedge: bool,
) -> Entry {
    let grows = !blocked
        && !target.is_zero()
        && (current.is_zero() || current.is_negative() == target.is_negative())
        && target.abs() > current.abs();
    if !grows {
        return Entry::Nothing;
    }
    let add = target.abs().checked_sub(&current.abs()).unwrap_or_default();
    if let Err(why) = allowed {
        return Entry::Refused { add, why };
    }
    match f.market_qty(add, mark, false) {
        Ok(qty) => Entry::Send(MarketOrder {
            side: if target.is_negative() { Side::Sell } else { Side::Buy },
            qty,
            reduce_only: false,
            position_side: position_side_for(hedge, target),
        }),
        Err(e) => Entry::BelowMinimum(e),
    }
}

/// The proportional-reduction rule. When the lead reduces a position from `lead_from` to `lead_to` (same sign) and
/// the follower holds `current`, less than `full` (= `lead_from` × ratio) in the same direction because a cap or a
/// limit held it back, the follower keeps `|current| × |lead_to| / |lead_from|`, and at most that until the lead
/// closes or flips. `None` when the follower is not held below its target (it then mirrors `lead_to` × ratio).
pub fn proportional_reduction(
    current: Decimal,
    full: Decimal,
    lead_from: Decimal,
    lead_to: Decimal,
) -> Option<Decimal> {
    let same_dir = !current.is_zero() && current.is_negative() == lead_from.is_negative();
    if !same_dir || lead_from.is_zero() || current.abs() >= full.abs() || lead_to.abs() >= lead_from.abs() {
        return None;
    }
    current
        .abs()
        .checked_mul(&lead_to.abs(), 12, Rounding::Down)
        .and_then(|x| x.checked_div(&lead_from.abs(), 12, Rounding::Down))
        .ok()
}

/// The limit a lead change puts on the follower: after a reduction, [`proportional_reduction`] against the full
/// target as it can be held — `lead_from × ratio` on the symbol's quantity step (a follower one step short of it by
/// rounding alone follows fully). `None`: no new limit.
pub(crate) fn limit_after_lead_change(
    action: LeadAction,
    current: Decimal,
    lead_from: Decimal,
    lead_to: Decimal,
    ratio: Decimal,
    f: Option<&SymbolFilters>,
) -> Option<Decimal> {
    if action != LeadAction::Reduce {
        return None;
    }
    let mut full = mirror(lead_from, ratio);
    if let Some(f) = f {
        full = full.round_to_step(&f.market_step_size, Rounding::Down).unwrap_or(full);
    }
    proportional_reduction(current, full, lead_from, lead_to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::{btc, d};
    use crate::lead::LeadPosition;

    fn book(qty: &str, limit: Option<&str>) -> LeadBook {
        let mut b = LeadBook::default();
        b.positions.insert("BTCUSDT".into(), LeadPosition { qty: d(qty), limit: limit.map(d) });
        b
    }

    #[test]
    fn the_target_is_the_lead_times_the_ratio_within_its_limit_plus_a_live_ai_target() {
        let b = book("0.4", None);
        assert_eq!(raw_target(Some(&b), "BTCUSDT", d("0.5"), None, 0), d("0.2"));
        // A limit bounds the lead's part (not the AI's).
        let held = book("-0.4", Some("0.05"));
        assert_eq!(raw_target(Some(&held), "BTCUSDT", d("0.5"), None, 0), d("-0.05"));
        assert_eq!(raw_target(Some(&held), "BTCUSDT", d("0.5"), Some((d("0.3"), 11)), 10), d("0.25"));
        // An AI target counts until it expires (at `expires_ms` it no longer does).
        assert_eq!(raw_target(Some(&b), "BTCUSDT", d("0.5"), Some((d("0.1"), 11)), 10), d("0.3"));
        assert_eq!(raw_target(Some(&b), "BTCUSDT", d("0.5"), Some((d("0.1"), 10)), 10), d("0.2"));
        // Without a lead (AI mode alone) the lead's book does not count.
        assert_eq!(raw_target(None, "BTCUSDT", d("0.5"), Some((d("0.1"), 11)), 10), d("0.1"));
        assert_eq!(raw_target(None, "BTCUSDT", d("0.5"), None, 10), d("0"));
        // A symbol the lead never held: flat.
        assert_eq!(raw_target(Some(&b), "ETHUSDT", d("0.5"), None, 0), d("0"));
    }

    #[test]
    fn the_caps_count_the_other_positions_at_their_latest_mark() {
        let pos = |s: &str, q: &str, m: &str| {
            (s.to_string(), Position { symbol: s.into(), qty: d(q), entry_price: d(m), mark_price: d(m) })
        };
        let follower: BTreeMap<String, Position> =
            [pos("BTCUSDT", "0.1", "50000"), pos("ETHUSDT", "-2", "3000"), pos("SOLUSDT", "10", "100")].into();
        let marks: HashMap<String, Decimal> = [("ETHUSDT".to_string(), d("3100"))].into();
        // ETH at the latest mark 3100 (|-2| × 3100 = 6200), SOL at its own 100 (1000); BTC itself not counted.
        assert_eq!(others_notional(&follower, &marks, "BTCUSDT"), d("7200"));
        assert_eq!(others_notional(&follower, &marks, "ETHUSDT"), d("6000"));
        assert_eq!(others_notional(&BTreeMap::new(), &marks, "BTCUSDT"), d("0"));
    }

    #[test]
    fn what_must_go_is_all_of_it_to_close_or_flip_and_the_difference_to_shrink() {
        assert_eq!(shrink(d("0"), d("0.1")), d("0"));
        assert_eq!(shrink(d("0.1"), d("0")), d("0.1"));
        assert_eq!(shrink(d("-0.1"), d("0.3")), d("0.1"));
        assert_eq!(shrink(d("0.1"), d("-0.3")), d("0.1"));
        assert_eq!(shrink(d("0.3"), d("0.1")), d("0.2"));
        assert_eq!(shrink(d("-0.3"), d("-0.1")), d("0.2"));
        assert_eq!(shrink(d("0.1"), d("0.3")), d("0"));
        assert_eq!(shrink(d("0.1"), d("0.1")), d("0"));
    }

    #[test]
    fn a_reduction_is_reduce_only_on_the_step_and_free_of_the_minimum_notional() {
        let f = btc();
        assert_eq!(reduction(d("0.1"), d("0.1"), d("50000"), &f, false), Reduction::Nothing);
        // 0.0015 of BTC at 50000 is 75 USDT, under the minimum notional of 100: a reduction goes out all the same,
        // rounded down to the step.
        assert_eq!(
            reduction(d("0.0115"), d("0.01"), d("50000"), &f, false),
            Reduction::Send(MarketOrder {
                side: Side::Sell,
                qty: d("0.001"),
                reduce_only: true,
                position_side: "BOTH".into()
            })
        );
        // A flip first closes the whole short, on its own position side in hedge mode.
        assert_eq!(
            reduction(d("-0.2"), d("0.1"), d("50000"), &f, true),
            Reduction::Send(MarketOrder {
                side: Side::Buy,
                qty: d("0.2"),
                reduce_only: true,
                position_side: "SHORT".into()
            })
        );
        // Below one step: not sent.
        assert!(matches!(
            reduction(d("0.1005"), d("0.1"), d("50000"), &f, false),
            Reduction::BelowMinimum(FilterError::BelowMinQty { .. })
        ));
    }

    #[test]
    fn an_entry_grows_toward_the_target_only_when_allowed_and_above_the_minimums() {
        let f = btc();
        let ok = || Ok(());
        let buy = |q: &str, ps: &str| {
            Entry::Send(MarketOrder { side: Side::Buy, qty: d(q), reduce_only: false, position_side: ps.into() })
        };
        assert_eq!(entry(d("0"), d("0.0123"), false, ok(), d("50000"), &f, false), buy("0.012", "BOTH"));
        assert_eq!(entry(d("0.01"), d("0.0123"), false, ok(), d("50000"), &f, true), buy("0.002", "LONG"));
        assert_eq!(
            entry(d("-0.01"), d("-0.02"), false, ok(), d("50000"), &f, true),
            Entry::Send(MarketOrder {
                side: Side::Sell,
                qty: d("0.01"),
                reduce_only: false,
                position_side: "SHORT".into()
            })
        );
        // Nothing grows: at or above the target, flat target, or still on the other side (the reduction goes first).
        assert_eq!(entry(d("0.02"), d("0.02"), false, ok(), d("50000"), &f, false), Entry::Nothing);
        assert_eq!(entry(d("0.03"), d("0.02"), false, ok(), d("50000"), &f, false), Entry::Nothing);
        assert_eq!(entry(d("0"), d("0"), false, ok(), d("50000"), &f, false), Entry::Nothing);
        assert_eq!(entry(d("-0.01"), d("0.02"), false, ok(), d("50000"), &f, false), Entry::Nothing);
        // An order of unknown fate holds the symbol: nothing grows, not even a refusal is reported.
        assert_eq!(entry(d("0"), d("0.02"), true, Err("x".into()), d("50000"), &f, false), Entry::Nothing);
        // The protections refuse: what would have been added is named.
        assert_eq!(
            entry(d("0.01"), d("0.03"), false, Err("daily loss limit reached".into()), d("50000"), &f, false),
            Entry::Refused { add: d("0.02"), why: "daily loss limit reached".into() }
        );
        // The minimum notional (100): 0.002 at 50000 is exactly 100 (sent); 0.001 is 50 (not sent).
        assert_eq!(entry(d("0"), d("0.002"), false, ok(), d("50000"), &f, false), buy("0.002", "BOTH"));
        assert!(matches!(
            entry(d("0"), d("0.001"), false, ok(), d("50000"), &f, false),
            Entry::BelowMinimum(FilterError::BelowMinNotional { .. })
        ));
    }

    #[test]
    fn a_held_back_follower_reduces_in_proportion_to_the_lead() {
        // Capped at 0.05 while lead × ratio is 0.1: the lead sells 40% (0.2 → 0.12), so does the follower.
        assert_eq!(proportional_reduction(d("0.05"), d("0.1"), d("0.2"), d("0.12")), Some(d("0.03")));
        // Shorts the same way.
        assert_eq!(proportional_reduction(d("-0.05"), d("-0.1"), d("-0.2"), d("-0.05")), Some(d("0.0125")));
        // Following fully: plain mirroring applies.
        assert_eq!(proportional_reduction(d("0.1"), d("0.1"), d("0.2"), d("0.12")), None);
        // Not a reduction, or nothing held in that direction.
        assert_eq!(proportional_reduction(d("0.05"), d("0.1"), d("0.2"), d("0.3")), None);
        assert_eq!(proportional_reduction(d("0"), d("0.1"), d("0.2"), d("0.1")), None);
        assert_eq!(proportional_reduction(d("-0.05"), d("0.1"), d("0.2"), d("0.1")), None);
        assert_eq!(proportional_reduction(d("0.05"), d("0.1"), d("0"), d("0")), None);
    }

    #[test]
    fn only_a_lead_reduction_limits_and_the_full_target_is_taken_on_the_step() {
        let f = btc();
        // Lead 0.2 → 0.08 at ratio 0.5 (full 0.1) while the follower holds 0.05: kept 0.05 × 0.08 / 0.2 = 0.02.
        let lim = |a, cur: &str, f: Option<&SymbolFilters>| {
            limit_after_lead_change(a, d(cur), d("0.2"), d("0.08"), d("0.5"), f)
        };
        assert_eq!(lim(LeadAction::Reduce, "0.05", Some(&f)), Some(d("0.02")));
        for a in [LeadAction::Open, LeadAction::Increase, LeadAction::Close, LeadAction::Flip] {
            assert_eq!(lim(a, "0.05", Some(&f)), None, "{a:?}");
        }
        // Lead 0.2019 × 0.5 = 0.10095, on the step 0.1: a follower at 0.1 holds its full target (no limit)…
        let lim2 = |f| limit_after_lead_change(LeadAction::Reduce, d("0.1"), d("0.2019"), d("0.1"), d("0.5"), f);
        assert_eq!(lim2(Some(&f)), None);
        // …which without the step it would not.
        assert!(lim2(None).is_some());
    }
}
