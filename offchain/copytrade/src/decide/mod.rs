//! The copy-trader's decisions, apart from the IO that carries them out ([`crate::engine`]).
//!
//! Every function here takes plain inputs (positions, prices, the symbol's exchange rules, the time) and returns a
//! decision value; none calls the exchange, writes the store or publishes anything, so each rule is unit-tested
//! without an exchange or a database.
//!
//! - [`orders`]: the market order that moves a position (side, position side, reduce-only) and what an order's error
//!   means (filled, rejected, not sent, unknown).
//! - [`target`]: the follower's target in a symbol (lead × ratio within its limit, plus the AI target), the other
//!   positions' notional the caps count, the reduction and the entry that move the position there (exchange step
//!   and minimums), and the proportional reduction after a lead reduces.
//! - [`stops`]: the stop price, whether to keep, place (close-position or with a quantity) or cancel a stop, which
//!   exchange errors mean what, which stops are missing or orphaned.
//! - [`emergency`]: the emergency stop's closes, which stops it may cancel, what a pass leaves, its retry back-off
//!   and the rate limit of its alerts.
//! - [`reconcile`]: what a difference between the recorded position and the exchange's is (stop-out, late orders,
//!   drift).
//! - [`unknown`]: orders of unknown fate: how long they hold their symbol and when they are given up.
//! - [`switches`]: the control state as the fold of the control commands (last wins per key) and what the engine
//!   does about it given what it carried out (trading on/off, the ratio, with [`emergency::action`] the stop).
//! - [`ai`]: forecast → Kelly-sized AI target, and its expiry.
//!
//! The sizing maths ([`crate::sizing`]) and the risk limits ([`crate::risk::RiskState::observe`]) were already pure
//! and stay where they are.

pub(crate) mod ai;
pub(crate) mod emergency;
pub(crate) mod orders;
pub(crate) mod reconcile;
pub(crate) mod stops;
pub(crate) mod switches;
pub(crate) mod target;
pub(crate) mod unknown;

#[cfg(test)]
pub(crate) mod testing {
    use kronos_binance::SymbolFilters;
    use kronos_common::Decimal;

    pub(crate) fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// BTCUSDT's rules: tick 0.1, step 0.001 (market too), minimum notional 100.
    pub(crate) fn btc() -> SymbolFilters {
        SymbolFilters {
            symbol: "BTCUSDT".into(),
            status: kronos_binance::SymbolStatus::Trading,
            tick_size: d("0.1"),
            min_price: d("0.1"),
            max_price: d("1000000"),
            step_size: d("0.001"),
            min_qty: d("0.001"),
            max_qty: d("1000"),
            market_step_size: d("0.001"),
            market_min_qty: d("0.001"),
            market_max_qty: d("120"),
            min_notional: d("100"),
        }
    }
}
