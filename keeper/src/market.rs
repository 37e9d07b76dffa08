//! A market as both the scheduler and the publisher see it: its fixed configuration, its live figures, and what
//! the publisher needs from the market's driver in a pass ([`MarketCtx`]). A module of its own so that
//! `scheduler` (which drives the publisher) and `publisher` do not import each other.

use alloy::primitives::Address;
use kronos_common::Decimal;
use parking_lot::Mutex;
use serde::Serialize;

use crate::chain::ChainRuntime;
use crate::lease::Fence;

/// A market's fixed configuration, read from the contract.
#[derive(Debug, Clone, Serialize)]
pub struct MarketInfo {
    pub id: u64,
    pub feed: Address,
    pub sequencer: Option<Address>,
    pub token: Address,
    pub genesis: u64,
    pub interval: u64,
    pub settle_window: u64,
    pub max_price_age: u64,
    /// Seconds after `T(k)` before checkpoint `k` may be executed.
    pub execute_delay: u64,
    /// Seconds before the lock at which betting and forecast commits close.
    pub bet_cutoff: u64,
    pub decimals: u8,
    pub pair: String,
}

impl MarketInfo {
    /// Timestamp of checkpoint `k`.
    pub fn t(&self, k: u64) -> u64 {
        self.genesis + k * self.interval
    }
}

/// Live figures of a market (the demo's table, the bench, `/api/markets`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MarketStats {
    pub chain: String,
    pub market: u64,
    pub pair: String,
    /// The round taking bets.
    pub betting_epoch: u64,
    pub next_checkpoint: u64,
    pub last_lock_price: Option<Decimal>,
    pub last_close_price: Option<Decimal>,
    pub last_result: String,
    pub settled: u64,
    pub cancelled: u64,
    pub missed: u64,
    /// Settlement delay in blocks of this keeper's recent executes (the newest 4,096 to 8,192; older ones are dropped).
    pub delays: Vec<u64>,
    /// Gas used by the same executes.
    pub execute_gas: Vec<u64>,
    /// The pools of the round taking bets (`pool_epoch`), in the stake token's smallest unit; empty before the
    /// first read.
    pub pool_up_wei: String,
    pub pool_down_wei: String,
    /// The round `pool_up_wei` and `pool_down_wei` belong to; `None` before the first read.
    pub pool_epoch: Option<u64>,
    /// The block the pools were read at (a bet changes them only in a new block).
    #[serde(skip)]
    pub(crate) pools_block: u64,
    pub last_p_up: Option<f64>,
    /// This keeper's role on the market (several keepers on one PostgreSQL store).
    pub lease: crate::lease::LeaseStatus,
}

impl MarketStats {
    /// Whether the pools must be read again: they are another round's than the one taking bets `betting` (it
    /// locked, and the next one opened), or a block `head` has come since they were read (it may hold a bet).
    pub(crate) fn pools_stale(&self, betting: u64, head: u64) -> bool {
        self.pool_epoch != Some(betting) || self.pools_block != head
    }

    /// Keeps the pools of round `epoch` as read from the chain at block `head`.
    pub(crate) fn set_pools(&mut self, epoch: u64, head: u64, up_wei: String, down_wei: String) {
        self.pool_epoch = Some(epoch);
        self.pools_block = head;
        self.pool_up_wei = up_wei;
        self.pool_down_wei = down_wei;
    }
}

/// What the publisher works with in one pass of a market's driver: the chain, the market, its figures, and the
/// lease term the pass runs under (its sends are fenced by it).
pub(crate) struct MarketCtx<'a> {
    pub(crate) chain: &'a ChainRuntime,
    pub(crate) info: &'a MarketInfo,
    pub(crate) stats: &'a Mutex<MarketStats>,
    pub(crate) fence: Fence,
}

#[cfg(test)]
impl MarketInfo {
    /// The unit tests' market: genesis 1000, 60-s rounds, execute 12 s after T(k), a 720-s settle window, a 6-s
    /// betting cutoff, BTC/USD with 8 decimals.
    pub(crate) fn for_tests() -> MarketInfo {
        MarketInfo {
            id: 1,
            feed: alloy::primitives::Address::ZERO,
            sequencer: None,
            token: alloy::primitives::Address::ZERO,
            genesis: 1000,
            interval: 60,
            settle_window: 720,
            max_price_age: 60,
            execute_delay: 12,
            bet_cutoff: 6,
            decimals: 8,
            pair: "BTC/USD".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pools shown are the betting round's: a bet (a new block) in round E is read, a pass in the same block
    /// reads nothing, and once E locks the figures move to E+1's (zero until its first bet), not E's.
    #[test]
    fn the_pools_shown_are_the_betting_rounds() {
        let mut s = MarketStats::default();
        assert!(s.pools_stale(0, 0), "nothing read yet");
        s.set_pools(7, 100, "0".into(), "0".into());
        assert!(!s.pools_stale(7, 100), "same round, same block: nothing new");
        assert!(s.pools_stale(7, 101), "a new block may hold a bet in round 7");
        s.set_pools(7, 101, "1500".into(), "0".into());
        assert_eq!((s.pool_epoch, s.pool_up_wei.as_str(), s.pool_down_wei.as_str()), (Some(7), "1500", "0"));
        assert!(s.pools_stale(8, 101), "round 7 locked in this block: round 8's pools are wanted");
        s.set_pools(8, 101, "0".into(), "0".into());
        assert_eq!((s.pool_epoch, s.pool_up_wei.as_str()), (Some(8), "0"));
    }
}
