//! Kronos up/down prediction market on Solana: parimutuel rounds settled by Chainlink prices.
//!
//! The same market as `contracts-evm/src/KronosMarket.sol`: epoch `e` of a market takes bets from
//! `genesis + e * interval` until the next boundary (its lock), and closes one interval later. Anyone may start,
//! lock and settle rounds once their time has come (the crank); the lock and close prices are the Chainlink answers
//! in effect at those exact timestamps, read from the feed's history, so the caller cannot pick a price by picking a
//! moment. A tie, a one-sided pool, a stale or missing price, or a round nobody settled within its window is refunded.
//! The same program keeps the forecast registry of `contracts-evm/src/PredictionRegistry.sol` (`registry`).
//! See `programs-solana/README.md` for the account model and the instruction table.

use anchor_lang::prelude::*;

/// `emit!` on chain; off chain (native tests, where Anchor's `sol_log_data` is a no-op) the same bytes are logged as a
/// `Program data: <base64>` line, so clients and tests read events the same way on both.
macro_rules! emit_event {
    ($e:expr) => {{
        let ev = $e;
        #[cfg(target_os = "solana")]
        anchor_lang::prelude::emit!(ev);
        #[cfg(not(target_os = "solana"))]
        {
            use anchor_lang::__private::base64::{engine::general_purpose::STANDARD, Engine};
            anchor_lang::compat::solana_sysvar::program_stubs::sol_log(&format!(
                "Program data: {}",
                STANDARD.encode(anchor_lang::Event::data(&ev))
            ));
        }
    }};
}

pub mod chainlink;
pub mod error;
pub mod events;
pub mod instructions;
pub mod money;
pub mod registry;
pub mod state;

use instructions::*;
use registry::RecordView;
use state::{Params, Side};

declare_id!("8p8BNBjueeyCJ2QZgeWGh67FujB5sziemG2NpV2SYxA9");

#[program]
pub mod kronos_market {
    use super::*;

    /// The program's upgrade authority creates the configuration once, naming the admin who approves feeds.
    pub fn initialize_config(ctx: Context<InitializeConfig>, admin: Pubkey) -> Result<()> {
        instructions::config::initialize_config(ctx, admin)
    }

    /// Admin: proposes a new admin (it must accept).
    pub fn propose_admin(ctx: Context<ConfigAdmin>, proposed: Pubkey) -> Result<()> {
        instructions::config::propose_admin(ctx, proposed)
    }

    /// The proposed admin accepts.
    pub fn accept_admin(ctx: Context<AcceptAdmin>) -> Result<()> {
        instructions::config::accept_admin(ctx)
    }

    /// Admin: approves a Chainlink feed for markets, pinning its current owner and writer.
    pub fn approve_feed(ctx: Context<ApproveFeed>) -> Result<()> {
        instructions::config::approve_feed(ctx)
    }

    /// Admin: withdraws a feed's approval (no new markets on it).
    pub fn revoke_feed(ctx: Context<RevokeFeed>) -> Result<()> {
        instructions::config::revoke_feed(ctx)
    }

    /// Creates a market staked in native SOL, on a feed the admin approved.
    pub fn initialize_market(
        ctx: Context<InitializeMarket>,
        id: u64,
        genesis: i64,
        interval: u32,
        params: Params,
    ) -> Result<()> {
        instructions::init::initialize_market(ctx, id, genesis, interval, params)
    }

    /// Creates a market staked in an SPL token (the vault is a token account owned by the market).
    pub fn initialize_token_market(
        ctx: Context<InitializeTokenMarket>,
        id: u64,
        genesis: i64,
        interval: u32,
        params: Params,
    ) -> Result<()> {
        instructions::init::initialize_token_market(ctx, id, genesis, interval, params)
    }

    /// Crank: opens epoch `epoch` for bets (from its start until its lock). Anyone; the payer gets the rent back.
    pub fn start_round(ctx: Context<StartRound>, epoch: u64) -> Result<()> {
        instructions::crank::start_round(ctx, epoch)
    }

    /// Bets `amount` on `side` of epoch `epoch`, refused if the round's fee is above `max_fee_bps`. Top-ups allowed;
    /// one side per wallet and round.
    pub fn bet(ctx: Context<PlaceBet>, epoch: u64, side: Side, amount: u64, max_fee_bps: u16) -> Result<()> {
        instructions::bet::bet(ctx, epoch, side, amount, max_fee_bps)
    }

    /// Crank: records the price in effect at the lock timestamp, or cancels the round if there is none usable.
    pub fn lock_round(ctx: Context<LockRound>, epoch: u64) -> Result<()> {
        instructions::crank::lock_round(ctx, epoch)
    }

    /// Crank: records the close price and settles (or cancels on a tie, a one-sided pool or an unusable price),
    /// locking the round first if nobody did; the settler is paid its share of the fee.
    pub fn settle_round(ctx: Context<SettleRound>, epoch: u64) -> Result<()> {
        instructions::crank::settle_round(ctx, epoch)
    }

    /// Pays winnings and refunds of several rounds at once: remaining accounts are (round, position) pairs.
    pub fn claim<'info>(ctx: Context<'info, Claim<'info>>) -> Result<()> {
        instructions::claim::collect(ctx, false)
    }

    /// Like `claim`, but only refunds (cancelled or expired rounds); a settled round is refused.
    pub fn refund<'info>(ctx: Context<'info, Claim<'info>>) -> Result<()> {
        instructions::claim::collect(ctx, true)
    }

    /// Closes the caller's position once nothing more is owed, returning its rent.
    pub fn close_position(ctx: Context<ClosePosition>, epoch: u64) -> Result<()> {
        instructions::close::close_position(ctx, epoch)
    }

    /// Closes a final round with no positions left, returning its rent to whoever started it.
    pub fn close_round(ctx: Context<CloseRound>, epoch: u64) -> Result<()> {
        instructions::close::close_round(ctx, epoch)
    }

    /// Authority: stops or resumes bets.
    pub fn set_paused(ctx: Context<Admin>, paused: bool) -> Result<()> {
        instructions::admin::set_paused(ctx, paused)
    }

    /// Authority: parameters for the rounds of the next epoch on.
    pub fn update_params(ctx: Context<Admin>, params: Params) -> Result<()> {
        instructions::admin::update_params(ctx, params)
    }

    /// Authority: proposes a new authority (it must accept).
    pub fn propose_authority(ctx: Context<Admin>, proposed: Pubkey) -> Result<()> {
        instructions::admin::propose_authority(ctx, proposed)
    }

    /// The proposed authority accepts.
    pub fn accept_authority(ctx: Context<AcceptAuthority>) -> Result<()> {
        instructions::admin::accept_authority(ctx)
    }

    /// Authority: withdraws fees owed to the treasury.
    pub fn withdraw_treasury(ctx: Context<WithdrawTreasury>, amount: u64) -> Result<()> {
        instructions::admin::withdraw_treasury(ctx, amount)
    }

    // ---- the forecast registry (`PredictionRegistry.sol`; see `registry`) ----

    /// The program's upgrade authority creates the registry once: the cluster's genesis hash (bound into every
    /// commitment) and how long after a round's settle deadline forecasts may still be revealed.
    pub fn initialize_registry(ctx: Context<InitializeRegistry>, cluster: [u8; 32], reveal_window: u32) -> Result<()> {
        instructions::registry::initialize_registry(ctx, cluster, reveal_window)
    }

    /// Config admin: enables a market for forecasts (commits are taken only on enabled markets).
    pub fn enable_forecasts(ctx: Context<EnableForecasts>) -> Result<()> {
        instructions::registry::enable_forecasts(ctx)
    }

    /// Commits the publisher's forecast for a started round, until betting closes; a later commit replaces it.
    pub fn commit(ctx: Context<Commit>, epoch: u64, commitment: [u8; 32]) -> Result<()> {
        instructions::registry::commit(ctx, epoch, commitment)
    }

    /// Reveals the publisher's forecast once the round's outcome is final, and scores it.
    pub fn reveal(ctx: Context<Reveal>, epoch: u64, up: bool, probability_up_bps: u16, salt: [u8; 32]) -> Result<()> {
        instructions::registry::reveal(ctx, epoch, up, probability_up_bps, salt)
    }

    /// Anyone: marks a commitment not revealed by its deadline as expired (the track record counts it from the
    /// deadline on without this).
    pub fn expire(ctx: Context<Expire>) -> Result<()> {
        instructions::registry::expire(ctx)
    }

    /// The publisher closes its commitment once revealed or past its deadline (expiring it first), taking back
    /// the rent.
    pub fn close_commitment(ctx: Context<CloseCommitment>) -> Result<()> {
        instructions::registry::close_commitment(ctx)
    }

    /// A publisher's track record now (return data), open commitments past their deadline counted as expired.
    pub fn track_record(ctx: Context<ReadTrackRecord>) -> Result<RecordView> {
        instructions::registry::track_record(ctx)
    }
}
