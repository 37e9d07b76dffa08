//! Events: one for every state change.

use anchor_lang::prelude::*;

use crate::registry::CommitStatus;
use crate::state::{CancelReason, Outcome, Params, Side};

#[event]
pub struct MarketInitialized {
    pub market: Pubkey,
    pub authority: Pubkey,
    pub feed: Pubkey,
    pub mint: Pubkey,
    pub genesis: i64,
    pub interval: u32,
    pub params: Params,
}

#[event]
pub struct ParamsUpdated {
    pub market: Pubkey,
    pub params: Params,
    /// The first epoch whose round takes them.
    pub from_epoch: u64,
}

#[event]
pub struct PausedSet {
    pub market: Pubkey,
    pub paused: bool,
}

#[event]
pub struct AuthorityProposed {
    pub market: Pubkey,
    pub proposed: Pubkey,
}

#[event]
pub struct AuthorityAccepted {
    pub market: Pubkey,
    pub authority: Pubkey,
}

#[event]
pub struct TreasuryWithdrawn {
    pub market: Pubkey,
    pub to: Pubkey,
    pub amount: u64,
}

#[event]
pub struct RoundStarted {
    pub market: Pubkey,
    pub epoch: u64,
    pub start_ts: i64,
    pub lock_ts: i64,
    pub close_ts: i64,
}

#[event]
pub struct BetPlaced {
    pub market: Pubkey,
    pub epoch: u64,
    pub user: Pubkey,
    pub side: Side,
    pub amount: u64,
}

#[event]
pub struct RoundLocked {
    pub market: Pubkey,
    pub epoch: u64,
    pub price: i128,
    pub price_ts: i64,
}

#[event]
pub struct RoundSettled {
    pub market: Pubkey,
    pub epoch: u64,
    pub outcome: Outcome,
    pub lock_price: i128,
    pub close_price: i128,
    pub total: u64,
    /// The whole fee (the settler's reward included).
    pub fee: u64,
    pub reward_amount: u64,
    pub settler: Pubkey,
    pub settler_reward: u64,
}

#[event]
pub struct RoundCancelled {
    pub market: Pubkey,
    pub epoch: u64,
    pub reason: CancelReason,
    pub outcome: Outcome,
}

#[event]
pub struct Claimed {
    pub market: Pubkey,
    pub epoch: u64,
    pub user: Pubkey,
    pub amount: u64,
}

#[event]
pub struct Refunded {
    pub market: Pubkey,
    pub epoch: u64,
    pub user: Pubkey,
    pub amount: u64,
}

#[event]
pub struct PositionClosed {
    pub market: Pubkey,
    pub epoch: u64,
    pub user: Pubkey,
}

#[event]
pub struct RoundClosed {
    pub market: Pubkey,
    pub epoch: u64,
    pub dust_to_treasury: u64,
}

#[event]
pub struct AdminProposed {
    pub proposed: Pubkey,
}

#[event]
pub struct AdminAccepted {
    pub admin: Pubkey,
}

#[event]
pub struct FeedApproved {
    pub feed: Pubkey,
    pub owner: Pubkey,
    pub writer: Pubkey,
    pub decimals: u8,
}

#[event]
pub struct FeedRevoked {
    pub feed: Pubkey,
}

// ---- the forecast registry (`PredictionRegistry.sol`'s `Committed`, `Revealed` and `Expired`) ----

#[event]
pub struct RegistryInitialized {
    /// The cluster's genesis hash, bound into every commitment.
    pub cluster: [u8; 32],
    pub reveal_window: u32,
}

/// A commitment made or replaced (before the round's betting closes).
#[event]
pub struct ForecastCommitted {
    pub publisher: Pubkey,
    pub market: Pubkey,
    pub epoch: u64,
    pub commitment: [u8; 32],
}

/// A forecast revealed and scored: `brier` in basis points squared (1e8 = 1.0); an outcome other than Up or Down
/// voids it (`hit` false, `brier` 0, counted as voided).
#[event]
pub struct ForecastRevealed {
    pub publisher: Pubkey,
    pub market: Pubkey,
    pub epoch: u64,
    pub up: bool,
    pub probability_up_bps: u16,
    pub outcome: Outcome,
    pub hit: bool,
    pub brier: u32,
}

/// `expire` (or `close_commitment`) marked a commitment never revealed in time. `counted`: this call added one expiry to the stored record
/// (false when a commit that found the publisher's open list full had already folded it in, `ForecastsExpired`).
#[event]
pub struct ForecastExpired {
    pub publisher: Pubkey,
    pub market: Pubkey,
    pub epoch: u64,
    pub counted: bool,
}

/// The admin enabled `market` for forecasts.
#[event]
pub struct ForecastsEnabled {
    pub market: Pubkey,
}

/// The publisher closed its final commitment (`status`: Revealed or Expired) and took back its rent.
#[event]
pub struct CommitmentClosed {
    pub publisher: Pubkey,
    pub market: Pubkey,
    pub epoch: u64,
    pub status: CommitStatus,
}

/// A commit that found its publisher's open list full folded `count` past-deadline commitments into the record
/// (the list keeps only deadlines, so they are not named one by one).
#[event]
pub struct ForecastsExpired {
    pub publisher: Pubkey,
    pub count: u32,
}
