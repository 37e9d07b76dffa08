//! Follower sizing: lead position × ratio, fractional Kelly for AI signals, and the caps every target passes.
//!
//! Targets are signed quantities. Caps: notional per symbol, total notional, and total notional ≤ equity × the
//! leverage cap. A cap never forces a reduction on its own (prices move); it only limits how far a target may grow.

use kronos_common::{Decimal, Rounding};

const SCALE: u8 = 12;

/// The caps a target passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Caps {
    pub max_notional_per_symbol: Decimal,
    pub max_notional_total: Decimal,
    pub max_leverage: u32,
}

fn mul(a: Decimal, b: Decimal) -> Decimal {
    a.checked_mul(&b, SCALE, Rounding::HalfUp).unwrap_or(Decimal::ZERO)
}

fn div(a: Decimal, b: Decimal) -> Decimal {
    if b.is_zero() {
        return Decimal::ZERO;
    }
    a.checked_div(&b, SCALE, Rounding::Down).unwrap_or(Decimal::ZERO)
}

fn with_sign(abs: Decimal, negative: bool) -> Decimal {
    if negative {
        abs.neg()
    } else {
        abs
    }
}

/// `desired` capped. `current` is the follower's position in the symbol, `others_notional` the notional of every
/// other follower position, `equity` the account's equity, `mark` the symbol's price.
pub fn cap_target(
    desired: Decimal,
    current: Decimal,
    mark: Decimal,
    others_notional: Decimal,
    equity: Decimal,
    caps: &Caps,
) -> Decimal {
    if desired.is_zero() || mark <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    let per_symbol = div(caps.max_notional_per_symbol, mark);
    let leverage_room = mul(equity.max(Decimal::ZERO), Decimal::from_int(caps.max_leverage as i128));
    let room_total = caps.max_notional_total.min(leverage_room).checked_sub(&others_notional).unwrap_or(Decimal::ZERO);
    let total = div(room_total.max(Decimal::ZERO), mark);
    let allowed = per_symbol.min(total);
    let want = desired.abs();
    if want <= allowed {
        return desired;
    }
    // Over a cap: grow no further than it; keep what is already held in the same direction.
    let same_dir = !current.is_zero() && current.is_negative() == desired.is_negative();
    let keep = if same_dir { current.abs().min(want) } else { Decimal::ZERO };
    with_sign(allowed.max(keep), desired.is_negative())
}

/// `lead_qty × ratio`.
pub fn mirror(lead_qty: Decimal, ratio: Decimal) -> Decimal {
    mul(lead_qty, ratio)
}

/// AI sizing parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Kelly {
    pub fraction: Decimal,
    pub payoff: Decimal,
    pub min_edge: Decimal,
    pub max_notional: Decimal,
    /// Stop distance, percent: the loss of a stopped-out trade, which the Kelly stake risks.
    pub stop_loss_pct: Decimal,
}

/// The outcome of Kelly sizing.
#[derive(Debug, Clone, PartialEq)]
pub struct KellyTarget {
    /// Full Kelly fraction `f* = p − (1 − p) / b` for the favoured direction.
    pub edge: Decimal,
    /// Signed quantity (0 when the edge is below the minimum).
    pub qty: Decimal,
    pub notional: Decimal,
}

/// Sizes a position from a calibrated probability that the price is up at the horizon.
///
/// Direction: long when `p_up > 0.5`, short when below. With `p` the probability of the favoured direction and
/// `b` the payoff ratio, the stake fraction is `fraction × f*`; that fraction of equity is what a stopped-out trade
/// loses, so the notional is `stake / stop distance`, capped at `max_notional`.
pub fn kelly(p_up_bps: u16, equity: Decimal, mark: Decimal, k: &Kelly) -> KellyTarget {
    let p_up = Decimal::from_fixed(p_up_bps.min(10_000) as i128, 4).unwrap_or(Decimal::ZERO);
    let half = Decimal::from_fixed(5, 1).expect("0.5");
    let one = Decimal::from_int(1);
    let short = p_up < half;
    let p = if short { one.checked_sub(&p_up).unwrap_or(Decimal::ZERO) } else { p_up };
    let q = one.checked_sub(&p).unwrap_or(Decimal::ZERO);
    let edge = p.checked_sub(&div(q, k.payoff)).unwrap_or(Decimal::ZERO);
    if p_up == half || edge < k.min_edge || edge <= Decimal::ZERO || mark <= Decimal::ZERO || equity <= Decimal::ZERO {
        return KellyTarget { edge, qty: Decimal::ZERO, notional: Decimal::ZERO };
    }
    let stake = mul(mul(k.fraction, edge), equity);
    let notional = div(mul(stake, Decimal::from_int(100)), k.stop_loss_pct).min(k.max_notional);
    KellyTarget { edge, qty: with_sign(div(notional, mark), short), notional }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn caps() -> Caps {
        Caps { max_notional_per_symbol: d("1000"), max_notional_total: d("1500"), max_leverage: 3 }
    }

    #[test]
    fn caps_limit_growth_not_existing_holdings() {
        // Under every cap: unchanged.
        assert_eq!(cap_target(d("0.01"), d("0"), d("50000"), d("0"), d("10000"), &caps()), d("0.01"));
        // Per-symbol cap: 1000 / 50000 = 0.02.
        assert_eq!(cap_target(d("0.05"), d("0"), d("50000"), d("0"), d("10000"), &caps()), d("0.02"));
        assert_eq!(cap_target(d("-0.05"), d("0"), d("50000"), d("0"), d("10000"), &caps()), d("-0.02"));
        // Total cap: 1500 - 1000 held elsewhere leaves 500 → 0.01.
        assert_eq!(cap_target(d("0.05"), d("0"), d("50000"), d("1000"), d("10000"), &caps()), d("0.01"));
        // Leverage cap: equity 200 × 3 = 600 < 1500 → 600 - 0 → 0.012.
        assert_eq!(cap_target(d("0.05"), d("0"), d("50000"), d("0"), d("200"), &caps()), d("0.012"));
        // Already above the cap (the price rose): keep, do not force a reduction, do not grow.
        assert_eq!(cap_target(d("0.05"), d("0.03"), d("50000"), d("0"), d("10000"), &caps()), d("0.03"));
        // …but a flip is capped fresh.
        assert_eq!(cap_target(d("-0.05"), d("0.03"), d("50000"), d("0"), d("10000"), &caps()), d("-0.02"));
        assert_eq!(cap_target(d("0"), d("0.03"), d("50000"), d("0"), d("10000"), &caps()), d("0"));
    }

    #[test]
    fn kelly_uses_the_edge_of_the_favoured_side() {
        let k = Kelly {
            fraction: d("0.5"),
            payoff: d("1"),
            min_edge: d("0.02"),
            max_notional: d("5000"),
            stop_loss_pct: d("2"),
        };
        // p = 0.6, b = 1: f* = 0.6 - 0.4 = 0.2; stake = 0.5 × 0.2 × 10000 = 1000; notional = 1000 / 2% = 50000 → cap 5000.
        let t = kelly(6000, d("10000"), d("50000"), &k);
        assert_eq!(t.edge, d("0.2"));
        assert_eq!(t.notional, d("5000"));
        assert_eq!(t.qty, d("0.1"));
        // p_up 0.45 → short with p = 0.55: f* = 0.1; stake 0.5 × 0.1 × 1000 = 50 → 2500 notional.
        let t = kelly(4500, d("1000"), d("50000"), &k);
        assert_eq!(t.edge, d("0.1"));
        assert_eq!(t.notional, d("2500"));
        assert_eq!(t.qty, d("-0.05"));
        // Edge below the minimum, or a coin flip: nothing.
        assert!(kelly(5050, d("10000"), d("50000"), &k).qty.is_zero());
        assert!(kelly(5000, d("10000"), d("50000"), &k).qty.is_zero());
        // An unfavourable payoff removes the edge: b = 0.5, p = 0.6 → f* = 0.6 - 0.8 < 0.
        let k2 = Kelly { payoff: d("0.5"), ..k };
        assert!(kelly(6000, d("10000"), d("50000"), &k2).qty.is_zero());
    }

    #[test]
    fn mirror_scales() {
        assert_eq!(mirror(d("-0.3"), d("0.5")), d("-0.15"));
    }
}
