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
    pub pool_up_wei: String,
    pub pool_down_wei: String,
    pub last_p_up: Option<f64>,
    /// This keeper's role on the market (several keepers on one PostgreSQL store).
    pub lease: crate::lease::LeaseStatus,
}

/// What the publisher works with in one pass of a market's driver: the chain, the market, its figures, and the
/// lease term the pass runs under (its sends are fenced by it).
pub(crate) struct MarketCtx<'a> {
    pub(crate) chain: &'a ChainRuntime,
    pub(crate) info: &'a MarketInfo,
    pub(crate) stats: &'a Mutex<MarketStats>,
    pub(crate) fence: Fence,
}
