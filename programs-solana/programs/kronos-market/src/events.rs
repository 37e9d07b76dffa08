//! Events: one for every state change.

use anchor_lang::prelude::*;

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
