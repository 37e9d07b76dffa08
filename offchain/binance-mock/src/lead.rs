//! A simulated lead trader: one account of the local exchange that trades one symbol on candle closes, for a
//! copy-trader to follow without a real account.
//!
//! The rule is deterministic and deliberately simple (one-candle momentum): after a candle that closed **above** the
//! previous close the lead holds `size` long, after one that closed **below** it holds `size` short, and an unchanged
//! close keeps what it holds. So it opens on its first decided close and flips whenever the direction of the market
//! changes. Orders are MARKET orders placed on the exchange through [`MockExchange::trade`], so they fill at the
//! current mark and are pushed on the lead's user-data stream exactly as a REST order would be.

use kronos_binance::types::Side;
use kronos_common::Decimal;

use crate::MockExchange;

/// The lead's target position after a close: `size` long after a rise, `size` short after a fall, `current` when the
/// close did not move.
pub fn momentum_target(prev_close: Decimal, close: Decimal, size: Decimal, current: Decimal) -> Decimal {
    if close > prev_close {
        size.abs()
    } else if close < prev_close {
        size.abs().neg()
    } else {
        current
    }
}

/// The order that moves a position from `current` to `target`: its side and (positive) quantity.
pub fn order_to(current: Decimal, target: Decimal) -> Option<(Side, Decimal)> {
    let delta = target.checked_sub(&current).ok()?;
    if delta.is_zero() {
        None
    } else if delta.is_negative() {
        Some((Side::Sell, delta.neg()))
    } else {
        Some((Side::Buy, delta))
    }
}

/// One trade of the simulated lead.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadTrade {
    pub symbol: String,
    pub side: Side,
    pub qty: Decimal,
    /// Fill price (the mark at the time).
    pub price: Decimal,
    /// The lead's position after the trade.
    pub position: Decimal,
    /// When the exchange filled it, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// The simulated lead of one symbol.
#[derive(Debug, Clone)]
pub struct SimLead {
    api_key: String,
    symbol: String,
    size: Decimal,
    prev_close: Option<Decimal>,
    position: Decimal,
    seq: u64,
}

impl SimLead {
    /// A lead trading `size` of `symbol` on the account of `api_key` (which must exist on the exchange).
    pub fn new(api_key: &str, symbol: &str, size: Decimal) -> SimLead {
        SimLead {
            api_key: api_key.to_string(),
            symbol: symbol.to_string(),
            size,
            prev_close: None,
            position: Decimal::ZERO,
            seq: 0,
        }
    }

    /// The symbol it trades.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// The lead's position as it last traded.
    pub fn position(&self) -> Decimal {
        self.position
    }

    /// A close seen before trading starts (history): the next close is compared with it.
    pub fn seed(&mut self, close: Decimal) {
        self.prev_close = Some(close);
    }

    /// A candle closed at `close` (the exchange's mark is already there): trades to the rule's target. Returns the
    /// trade, `Ok(None)` when the position stays, or the exchange's refusal.
    pub fn on_close(&mut self, ex: &MockExchange, close: Decimal) -> Result<Option<LeadTrade>, String> {
        let Some(prev) = self.prev_close.replace(close) else { return Ok(None) };
        let target = momentum_target(prev, close, self.size, self.position);
        let Some((side, qty)) = order_to(self.position, target) else { return Ok(None) };
        self.seq += 1;
        let id = format!("simlead-{}-{}", kronos_common::time::now_ms(), self.seq);
        let o = ex.trade(&self.api_key, &self.symbol, side, qty, &id)?;
        self.position = target;
        Ok(Some(LeadTrade {
            symbol: self.symbol.clone(),
            side,
            qty,
            price: o.avg_price,
            position: target,
            at_ms: o.update_time,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn the_rule_follows_the_last_move() {
        assert_eq!(momentum_target(d("100"), d("101"), d("1"), d("0")), d("1"));
        assert_eq!(momentum_target(d("100"), d("99.9"), d("1"), d("1")), d("-1"));
        assert_eq!(momentum_target(d("100"), d("100"), d("1"), d("-1")), d("-1"), "an unchanged close keeps it");
        assert_eq!(order_to(d("0"), d("1")), Some((Side::Buy, d("1"))));
        assert_eq!(order_to(d("1"), d("-1")), Some((Side::Sell, d("2"))));
        assert_eq!(order_to(d("-1"), d("-1")), None);
    }

    #[tokio::test]
    async fn the_lead_trades_on_the_exchange_and_its_stream_sees_it() {
        let ex = MockExchange::start().await;
        ex.add_account("lead", "secret", "1000000", false);
        let mut lead = SimLead::new("lead", "BTCUSDT", d("1"));
        ex.set_mark("BTCUSDT", "60000");
        assert_eq!(lead.on_close(&ex, d("60000")).unwrap(), None, "the first close only seeds the rule");
        ex.set_mark("BTCUSDT", "60100");
        let t = lead.on_close(&ex, d("60100")).unwrap().expect("a rise opens long");
        assert_eq!((t.side, t.qty, t.price, t.position), (Side::Buy, d("1"), d("60100"), d("1")));
        ex.set_mark("BTCUSDT", "60050");
        let t = lead.on_close(&ex, d("60050")).unwrap().expect("a fall flips");
        assert_eq!((t.side, t.qty, t.position), (Side::Sell, d("2"), d("-1")));
        let acct = ex.account("lead");
        assert_eq!(acct.position("BTCUSDT", "BOTH").amount, d("-1"));
        let pushed = ex.push_log().iter().filter(|p| p.api_key == "lead" && p.event_type == "ACCOUNT_UPDATE").count();
        assert_eq!(pushed, 2, "every lead fill is pushed on its stream");
        assert_eq!(ex.order_log().iter().filter(|o| o.api_key == "lead" && o.executed).count(), 2);
    }
}
