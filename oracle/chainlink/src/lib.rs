//! Chainlink price reading on EVM chains.
//!
//! - [`RoundSource`]: what the search needs from a feed (latest round, a round by id); [`AlloyFeed`] reads a proxy
//!   or aggregator over any alloy provider, caching rounds (they never change once written).
//! - [`round_at`]: the phase-aware search for the round in effect at a timestamp, and its successor — the proof
//!   `KronosMarket.execute` verifies. It follows the contract's rules exactly (see `ChainlinkRounds.sol`).
//! - [`Freshness`] and [`SequencerStatus`]: staleness against a heartbeat, L2 sequencer up/down/grace.

mod feed;
mod search;

pub use feed::{AlloyFeed, FeedInfo};
pub use search::{phase_of, proxy_id, round_at, RoundProof};

use alloy::primitives::I256;

/// Proxy round ids are `phase << 64 | aggregator round`.
pub const PHASE_OFFSET: u32 = 64;

/// The fields of a round that settlement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundData {
    pub round_id: u128,
    pub answer: I256,
    pub started_at: u64,
    pub updated_at: u64,
}

/// Which timestamp orders a feed's rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    /// Price feeds: when the answer was written.
    UpdatedAt,
    /// Sequencer-uptime feeds: when the status changed (L1 time).
    StartedAt,
}

impl RoundData {
    /// The round's time under `field`.
    pub fn time(&self, field: TimeField) -> u64 {
        match field {
            TimeField::UpdatedAt => self.updated_at,
            TimeField::StartedAt => self.started_at,
        }
    }
}

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The endpoint could not be reached or answered garbage (worth retrying elsewhere).
    #[error("feed {feed}: transport error: {message}")]
    Transport { feed: String, message: String },
    /// The node answered with an error (e.g. the call reverted).
    #[error("feed {feed}: {message}")]
    Call { feed: String, message: String },
    /// The feed has no data at all.
    #[error("feed {feed}: no rounds")]
    Empty { feed: String },
}

/// What the round search needs from a feed.
pub trait RoundSource: Sync {
    /// The feed's latest round.
    fn latest(&self) -> impl std::future::Future<Output = Result<RoundData, ReadError>> + Send;
    /// A round by proxy id; `None` when the feed has no data for it.
    fn round(&self, id: u128) -> impl std::future::Future<Output = Result<Option<RoundData>, ReadError>> + Send;
}

/// Whether a price is recent enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh {
        age_s: u64,
    },
    Stale {
        age_s: u64,
        max_age_s: u64,
    },
    /// A non-positive answer.
    BadAnswer,
}

/// Judges a round read at time `now` against a maximum age.
pub fn freshness(round: &RoundData, now: u64, max_age_s: u64) -> Freshness {
    if round.answer <= I256::ZERO {
        return Freshness::BadAnswer;
    }
    let age_s = now.saturating_sub(round.updated_at);
    if age_s > max_age_s {
        Freshness::Stale { age_s, max_age_s }
    } else {
        Freshness::Fresh { age_s }
    }
}

/// An L2 sequencer's state from its uptime feed's round in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequencerStatus {
    Up {
        since: u64,
    },
    /// Back up, but for less than the grace period.
    GracePeriod {
        since: u64,
        grace_s: u64,
    },
    Down {
        since: u64,
    },
}

/// Status at time `at` given the uptime round in effect then (answer 0 = up, 1 = down).
pub fn sequencer_status(round: &RoundData, at: u64, grace_s: u64) -> SequencerStatus {
    let since = round.started_at;
    if round.answer != I256::ZERO {
        SequencerStatus::Down { since }
    } else if at.saturating_sub(since) <= grace_s {
        SequencerStatus::GracePeriod { since, grace_s }
    } else {
        SequencerStatus::Up { since }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(answer: i64, started: u64, updated: u64) -> RoundData {
        RoundData { round_id: 1, answer: I256::try_from(answer).unwrap(), started_at: started, updated_at: updated }
    }

    #[test]
    fn freshness_and_sequencer_rules() {
        assert_eq!(freshness(&r(100, 0, 1000), 1100, 120), Freshness::Fresh { age_s: 100 });
        assert_eq!(freshness(&r(100, 0, 1000), 1121, 120), Freshness::Stale { age_s: 121, max_age_s: 120 });
        assert_eq!(freshness(&r(0, 0, 1000), 1000, 120), Freshness::BadAnswer);
        assert_eq!(freshness(&r(-1, 0, 1000), 1000, 120), Freshness::BadAnswer);
        assert_eq!(sequencer_status(&r(1, 500, 600), 700, 3600), SequencerStatus::Down { since: 500 });
        assert_eq!(
            sequencer_status(&r(0, 500, 600), 700, 3600),
            SequencerStatus::GracePeriod { since: 500, grace_s: 3600 }
        );
        assert_eq!(sequencer_status(&r(0, 500, 600), 4101, 3600), SequencerStatus::Up { since: 500 });
    }
}
