//! The lead account's positions and what changed in them.
//!
//! The follower mirrors a symbol fully only while it is *following* it. Otherwise the symbol carries a *limit*: the
//! largest position the follower may hold in it until the lead closes or flips. The limit is 0 when the lead already
//! held the position at start-up (unless `join_existing`), after the follower's stop took it out, or after an
//! emergency stop; it is the position held when an entry was refused (daily loss limit, cool-down). Either way the
//! follower never chases an entry late: it picks the symbol up again at the lead's next close or flip.

use std::collections::BTreeMap;

use kronos_common::signals::LeadAction;
use kronos_common::Decimal;

/// What a lead position change was.
pub fn classify(from: Decimal, to: Decimal) -> Option<LeadAction> {
    if from == to {
        return None;
    }
    Some(if from.is_zero() {
        LeadAction::Open
    } else if to.is_zero() {
        LeadAction::Close
    } else if from.is_negative() != to.is_negative() {
        LeadAction::Flip
    } else if to.abs() > from.abs() {
        LeadAction::Increase
    } else {
        LeadAction::Reduce
    })
}

/// One symbol of the lead.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadPosition {
    pub qty: Decimal,
    /// `None`: followed fully. `Some(l)`: the follower holds at most `l` (absolute) until the lead closes or flips.
    pub limit: Option<Decimal>,
}

/// A change to report.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadChange {
    pub symbol: String,
    pub action: LeadAction,
    pub from: Decimal,
    pub to: Decimal,
    pub limit: Option<Decimal>,
}

/// The lead's positions as last seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadBook {
    pub positions: BTreeMap<String, LeadPosition>,
}

impl LeadBook {
    /// The lead's position in a symbol (flat when unknown).
    pub fn qty(&self, symbol: &str) -> Decimal {
        self.positions.get(symbol).map(|p| p.qty).unwrap_or_default()
    }

    /// The limit on the follower's position in a symbol (`None`: followed fully; a symbol never seen is).
    pub fn limit(&self, symbol: &str) -> Option<Decimal> {
        self.positions.get(symbol).and_then(|p| p.limit)
    }

    /// Whether the symbol is followed without a limit.
    pub fn following(&self, symbol: &str) -> bool {
        self.limit(symbol).is_none()
    }

    /// `ratio_qty` (the lead's position × ratio) within the symbol's limit.
    pub fn bounded(&self, symbol: &str, ratio_qty: Decimal) -> Decimal {
        match self.limit(symbol) {
            None => ratio_qty,
            Some(l) if ratio_qty.abs() <= l => ratio_qty,
            Some(l) => {
                if ratio_qty.is_negative() {
                    l.neg()
                } else {
                    l
                }
            }
        }
    }

    /// Takes a new observation. Returns the change, if any; a limited symbol is followed fully again when the lead
    /// closes or flips it.
    pub fn observe(&mut self, symbol: &str, qty: Decimal) -> Option<LeadChange> {
        let entry =
            self.positions.entry(symbol.to_string()).or_insert(LeadPosition { qty: Decimal::ZERO, limit: None });
        let from = entry.qty;
        let action = classify(from, qty)?;
        if matches!(action, LeadAction::Close | LeadAction::Flip) {
            entry.limit = None;
        }
        entry.qty = qty;
        Some(LeadChange { symbol: symbol.to_string(), action, from, to: qty, limit: entry.limit })
    }

    /// Holds the follower at no more than `max_abs` in a symbol until the lead closes or flips it (a tighter limit
    /// wins; a flat lead position has nothing to wait for).
    pub fn limit_to(&mut self, symbol: &str, max_abs: Decimal) {
        let e = self.positions.entry(symbol.to_string()).or_insert(LeadPosition { qty: Decimal::ZERO, limit: None });
        if e.qty.is_zero() {
            e.limit = None;
            return;
        }
        let m = max_abs.abs();
        e.limit = Some(e.limit.map_or(m, |l| l.min(m)));
    }

    /// Stops following a symbol until the lead closes or flips it.
    pub fn wait(&mut self, symbol: &str) {
        self.limit_to(symbol, Decimal::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn changes_are_classified() {
        assert_eq!(classify(d("0"), d("1")), Some(LeadAction::Open));
        assert_eq!(classify(d("1"), d("2")), Some(LeadAction::Increase));
        assert_eq!(classify(d("-1"), d("-2")), Some(LeadAction::Increase));
        assert_eq!(classify(d("2"), d("1")), Some(LeadAction::Reduce));
        assert_eq!(classify(d("2"), d("0")), Some(LeadAction::Close));
        assert_eq!(classify(d("2"), d("-1")), Some(LeadAction::Flip));
        assert_eq!(classify(d("1.0"), d("1")), None);
    }

    #[test]
    fn waiting_symbols_resume_on_close_or_flip_only() {
        let mut b = LeadBook::default();
        b.observe("BTCUSDT", d("1"));
        b.wait("BTCUSDT");
        assert!(!b.following("BTCUSDT"));
        assert_eq!(b.observe("BTCUSDT", d("2")).unwrap().limit, Some(d("0")));
        assert_eq!(b.bounded("BTCUSDT", d("1")), d("0"));
        assert_eq!(b.observe("BTCUSDT", d("1.5")).unwrap().limit, Some(d("0")));
        let c = b.observe("BTCUSDT", d("-1")).unwrap();
        assert_eq!(c.action, LeadAction::Flip);
        assert_eq!(c.limit, None);
        b.wait("BTCUSDT");
        assert_eq!(b.observe("BTCUSDT", d("0")).unwrap().limit, None);
        b.wait("BTCUSDT");
        assert!(b.following("BTCUSDT"), "nothing to wait for when the lead is flat");
        assert!(b.following("ETHUSDT"));
    }

    #[test]
    fn a_refused_entry_holds_the_position_until_close_or_flip() {
        let mut b = LeadBook::default();
        b.observe("BTCUSDT", d("-2"));
        b.limit_to("BTCUSDT", d("0.5"));
        assert_eq!(b.bounded("BTCUSDT", d("-1")), d("-0.5"));
        assert_eq!(b.bounded("BTCUSDT", d("-0.2")), d("-0.2"), "reductions pass");
        b.limit_to("BTCUSDT", d("0.7"));
        assert_eq!(b.limit("BTCUSDT"), Some(d("0.5")), "the tighter limit stays");
        b.observe("BTCUSDT", d("0"));
        assert_eq!(b.bounded("BTCUSDT", d("-1")), d("-1"));
    }
}
