//! Fee rules: the fees of a first broadcast (the node's quote within the caps), of a replacement (raised by the
//! configured bump, at least the nodes' 10% replacement floor, at least the market, within the caps), and the gas
//! limit over an estimate.

use alloy::primitives::U256;
use kronos_common::FeeModel;

use super::TxPolicy;

/// The raise nodes require of a replacement, on both fee fields (geth's `txpool.pricebump` default, followed by
/// erigon, reth, anvil, Nethermind and Besu).
pub(crate) const MIN_REPLACEMENT_BUMP_PERCENT: u64 = 10;

/// A transaction's fee fields (for legacy transactions both hold the gas price).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fees {
    pub(crate) max_fee: U256,
    pub(crate) priority: U256,
}

/// What the node quotes for the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quote {
    /// `eth_feeHistory`-based estimate of an EIP-1559 transaction's fields.
    Eip1559 { max_fee: u128, priority: u128 },
    /// `eth_gasPrice`.
    Legacy { gas_price: u128 },
}

/// `v` raised by `percent`, plus one wei (so that integer division never leaves a raise short of the percentage).
pub(crate) fn bump(v: U256, percent: u64) -> U256 {
    v * U256::from(100 + percent) / U256::from(100) + U256::from(1)
}

/// The fees of a first broadcast at the node's quote: the tip at most `max_priority_fee_wei`, the fee cap at least
/// the tip, and both at most `max_fee_wei`.
pub(crate) fn market_fees(p: &TxPolicy, q: Quote) -> Fees {
    let fees = match q {
        Quote::Eip1559 { max_fee, priority } => {
            let priority = U256::from(priority).min(p.max_priority_fee_wei);
            Fees { max_fee: U256::from(max_fee).max(priority), priority }
        }
        Quote::Legacy { gas_price } => Fees { max_fee: U256::from(gas_price), priority: U256::from(gas_price) },
    };
    Fees { max_fee: fees.max_fee.min(p.max_fee_wei), priority: fees.priority.min(p.max_fee_wei) }
}

/// The fees of a replacement of a transaction sent at `old` when the market asks `market`: raised by at least
/// `bump_percent` and at least to the market, within the caps; `None` when the caps leave no room for the nodes'
/// minimum replacement raise ([`MIN_REPLACEMENT_BUMP_PERCENT`] on both fields).
pub(crate) fn next_fees(p: &TxPolicy, old: Fees, market: Fees) -> Option<Fees> {
    let priority =
        bump(old.priority, p.bump_percent).max(market.priority).min(p.max_priority_fee_wei.max(old.priority));
    let max_fee = bump(old.max_fee, p.bump_percent).max(market.max_fee).min(p.max_fee_wei);
    let priority = if p.fee_model == FeeModel::Legacy { max_fee } else { priority.min(max_fee) };
    let floor = |v: U256| bump(v, MIN_REPLACEMENT_BUMP_PERCENT) - U256::from(1);
    if max_fee < floor(old.max_fee) || (p.fee_model == FeeModel::Eip1559 && priority < floor(old.priority)) {
        return None;
    }
    Some(Fees { max_fee, priority })
}

/// The gas limit sent for an estimate: a quarter more plus 10,000 (the state may change between the estimate and
/// inclusion, and an out-of-gas costs the whole limit).
pub(crate) fn gas_limit(estimate: u64) -> u64 {
    estimate + estimate / 4 + 10_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn policy(model: FeeModel) -> TxPolicy {
        TxPolicy {
            fee_model: model,
            max_fee_wei: U256::from(1000),
            max_priority_fee_wei: U256::from(100),
            bump_after: Duration::from_secs(1),
            bump_percent: 12,
            confirmations: 1,
            poll: Duration::from_millis(100),
        }
    }

    fn fees(max_fee: u64, priority: u64) -> Fees {
        Fees { max_fee: U256::from(max_fee), priority: U256::from(priority) }
    }

    #[test]
    fn next_fees_raise_by_the_bump_or_to_the_market_within_the_caps() {
        let p = policy(FeeModel::Eip1559);
        // +12% (+1) on both fields.
        assert_eq!(next_fees(&p, fees(100, 10), fees(50, 5)), Some(fees(113, 12)));
        // The market is higher: follow it.
        assert_eq!(next_fees(&p, fees(100, 10), fees(300, 40)), Some(fees(300, 40)));
        // Capped, but still a valid replacement (+10%).
        assert_eq!(next_fees(&p, fees(900, 10), fees(0, 0)), Some(fees(1000, 12)));
        // At the cap: no replacement.
        assert_eq!(next_fees(&p, fees(1000, 10), fees(0, 0)), None);
        // Legacy: one price in both fields.
        let l = policy(FeeModel::Legacy);
        assert_eq!(next_fees(&l, fees(100, 100), fees(0, 0)), Some(fees(113, 113)));
    }

    /// The nodes' floor is 10% on each field: a capped raise of exactly 10% is sent, one of 9% is not.
    #[test]
    fn a_capped_replacement_must_still_raise_both_fields_by_ten_percent() {
        let mut p = policy(FeeModel::Eip1559);
        p.max_fee_wei = U256::from(110);
        assert_eq!(next_fees(&p, fees(100, 10), fees(0, 0)), Some(fees(110, 12)));
        p.max_fee_wei = U256::from(109);
        assert_eq!(next_fees(&p, fees(100, 10), fees(0, 0)), None);
        // The tip cap leaves the tip 10% up: sent; 9%: not.
        let mut p = policy(FeeModel::Eip1559);
        p.max_priority_fee_wei = U256::from(110);
        assert_eq!(next_fees(&p, fees(500, 100), fees(0, 0)), Some(fees(561, 110)));
        p.max_priority_fee_wei = U256::from(109);
        assert_eq!(next_fees(&p, fees(500, 100), fees(0, 0)), None);
        // The tip never exceeds the fee cap.
        let p = policy(FeeModel::Eip1559);
        assert_eq!(next_fees(&p, fees(100, 10), fees(100, 500)), Some(fees(113, 100)));
        // Legacy ignores the tip's cap: the one price is raised.
        let mut l = policy(FeeModel::Legacy);
        l.max_priority_fee_wei = U256::ZERO;
        assert_eq!(next_fees(&l, fees(100, 100), fees(0, 0)), Some(fees(113, 113)));
    }

    #[test]
    fn the_configured_bump_applies_above_the_floor() {
        let mut p = policy(FeeModel::Eip1559);
        p.bump_percent = 50;
        assert_eq!(next_fees(&p, fees(100, 10), fees(0, 0)), Some(fees(151, 16)));
    }

    #[test]
    fn first_fees_follow_the_quote_within_the_caps() {
        let p = policy(FeeModel::Eip1559);
        // Under the caps: as quoted.
        assert_eq!(market_fees(&p, Quote::Eip1559 { max_fee: 500, priority: 20 }), fees(500, 20));
        // The tip is capped; the fee cap is at least the tip.
        assert_eq!(market_fees(&p, Quote::Eip1559 { max_fee: 50, priority: 300 }), fees(100, 100));
        // The fee cap is capped.
        assert_eq!(market_fees(&p, Quote::Eip1559 { max_fee: 5000, priority: 20 }), fees(1000, 20));
        // Legacy: the gas price in both fields, capped by the fee cap (not the tip cap).
        let l = policy(FeeModel::Legacy);
        assert_eq!(market_fees(&l, Quote::Legacy { gas_price: 700 }), fees(700, 700));
        assert_eq!(market_fees(&l, Quote::Legacy { gas_price: 7000 }), fees(1000, 1000));
    }

    #[test]
    fn the_gas_limit_leaves_a_quarter_and_ten_thousand() {
        assert_eq!(gas_limit(0), 10_000);
        assert_eq!(gas_limit(100_000), 135_000);
        assert_eq!(gas_limit(3), 10_003);
    }
}
