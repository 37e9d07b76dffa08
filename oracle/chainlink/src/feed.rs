//! Reading a Chainlink feed over alloy.

use std::collections::HashMap;

use alloy::primitives::{Address, I256};
use alloy::providers::Provider;
use kronos_contracts::AggregatorV3Interface;
use parking_lot::Mutex;

use crate::{ReadError, RoundData, RoundSource};

/// What a feed says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedInfo {
    pub description: String,
    pub decimals: u8,
}

/// A feed (proxy or aggregator) read through an alloy provider. Rounds are cached: once written they never change
/// (a sequencer feed's latest round may gain a later `updatedAt`, but the search orders those by `startedAt`).
pub struct AlloyFeed<P> {
    pub address: Address,
    contract: AggregatorV3Interface::AggregatorV3InterfaceInstance<P>,
    cache: Mutex<HashMap<u128, RoundData>>,
}

fn classify(feed: Address, e: alloy::contract::Error) -> ReadError {
    let transport = match &e {
        alloy::contract::Error::TransportError(t) => t.is_transport_error(),
        _ => false,
    };
    if transport {
        ReadError::Transport { feed: feed.to_string(), message: e.to_string() }
    } else {
        ReadError::Call { feed: feed.to_string(), message: e.to_string() }
    }
}

impl<P: Provider + Clone> AlloyFeed<P> {
    pub fn new(address: Address, provider: P) -> Self {
        AlloyFeed {
            address,
            contract: AggregatorV3Interface::new(address, provider),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `description()` and `decimals()`.
    pub async fn info(&self) -> Result<FeedInfo, ReadError> {
        let description = self.contract.description().call().await.map_err(|e| classify(self.address, e))?;
        let decimals = self.contract.decimals().call().await.map_err(|e| classify(self.address, e))?;
        Ok(FeedInfo { description, decimals })
    }

    /// Rounds held in the cache (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }
}

fn to_data(round_id: u128, answer: I256, started_at: u64, updated_at: u64) -> RoundData {
    RoundData { round_id, answer, started_at, updated_at }
}

impl<P: Provider + Clone> RoundSource for AlloyFeed<P> {
    async fn latest(&self) -> Result<RoundData, ReadError> {
        let r = self.contract.latestRoundData().call().await.map_err(|e| classify(self.address, e))?;
        if r.updatedAt.is_zero() {
            return Err(ReadError::Empty { feed: self.address.to_string() });
        }
        Ok(to_data(r.roundId.to::<u128>(), r.answer, r.startedAt.to::<u64>(), r.updatedAt.to::<u64>()))
    }

    async fn round(&self, id: u128) -> Result<Option<RoundData>, ReadError> {
        if let Some(r) = self.cache.lock().get(&id) {
            return Ok(Some(*r));
        }
        let res = self.contract.getRoundData(alloy::primitives::aliases::U80::from(id)).call().await;
        let r = match res {
            Ok(r) => r,
            // A revert means "no data" (flux aggregators and sequencer feeds revert; OCR aggregators return zeros).
            Err(alloy::contract::Error::TransportError(t)) if t.is_error_resp() => return Ok(None),
            Err(e) => return Err(classify(self.address, e)),
        };
        if r.updatedAt.is_zero() || r.roundId.to::<u128>() != id {
            return Ok(None);
        }
        let d = to_data(id, r.answer, r.startedAt.to::<u64>(), r.updatedAt.to::<u64>());
        self.cache.lock().insert(id, d);
        Ok(Some(d))
    }
}
