//! The forecast registry's instructions (rules and accounts in [`crate::registry`]).
//!
//! A forecast is made on a round account: commits need the round started (anyone may start it), and the round is
//! kept until its forecasts' reveal deadline (`Round::reveal_until`, checked by `close_round`), so a reveal always
//! finds the outcome it is scored against and nobody can close the round to turn a miss into "no outcome".

use anchor_lang::prelude::*;
use anchor_lang::solana_program::bpf_loader_upgradeable;

use crate::error::MarketError;
use crate::events::{
    CommitmentClosed, ForecastCommitted, ForecastExpired, ForecastRevealed, ForecastsEnabled, ForecastsExpired,
    RegistryInitialized,
};
use crate::registry::*;
use crate::state::{Config, Market, Round, CONFIG_SEED};

// `InitializeRegistry`'s upgrade-authority check (`program_data`) and `EnableForecasts`'s admin check (`config`,
// `has_one = admin`) repeat `InitializeConfig`'s and `ConfigAdmin`'s in `config.rs` on purpose. Anchor shares accounts
// between instructions only as a composite `#[derive(Accounts)]` field, and a composite field is a nested group of
// accounts in the IDL (`programs-solana/idl/kronos_market.json`): every client's account list for these instructions
// would change, for two attributes of a few lines each.
#[derive(Accounts)]
pub struct InitializeRegistry<'info> {
    /// The program's upgrade authority (checked against its ProgramData account).
    #[account(mut)]
    pub upgrade_authority: Signer<'info>,
    #[account(init, payer = upgrade_authority, space = 8 + Registry::INIT_SPACE, seeds = [REGISTRY_SEED], bump)]
    pub registry: Account<'info, Registry>,
    #[account(seeds = [crate::ID.as_ref()], bump, seeds::program = bpf_loader_upgradeable::ID,
        constraint = program_data.upgrade_authority_address == Some(upgrade_authority.key())
            @ MarketError::NotUpgradeAuthority)]
    pub program_data: Account<'info, ProgramData>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
pub struct EnableForecasts<'info> {
    #[account(mut)]
    pub admin: Signer<'info>,
    #[account(seeds = [CONFIG_SEED], bump = config.bump, has_one = admin)]
    pub config: Account<'info, Config>,
    /// The market (owned by this program: checked by `Account`).
    pub market: Box<Account<'info, Market>>,
    #[account(init, payer = admin, space = 8 + ForecastMarket::INIT_SPACE,
        seeds = [FORECAST_MARKET_SEED, market.key().as_ref()], bump)]
    pub forecast_market: Account<'info, ForecastMarket>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct Commit<'info> {
    /// The publisher; pays for its commitment and (the first time) its track record.
    #[account(mut)]
    pub publisher: Signer<'info>,
    #[account(seeds = [REGISTRY_SEED], bump = registry.bump)]
    pub registry: Account<'info, Registry>,
    /// The market (owned by this program: checked by `Account`).
    pub market: Box<Account<'info, Market>>,
    /// The round forecast (owned by this program), which keeps the forecast's reveal deadline.
    #[account(mut, constraint = round.market == market.key() && round.epoch == epoch @ MarketError::WrongRound)]
    pub round: Box<Account<'info, Round>>,
    /// The admin enabled this market for forecasts (the account does not exist otherwise).
    #[account(seeds = [FORECAST_MARKET_SEED, market.key().as_ref()], bump = forecast_market.bump)]
    pub forecast_market: Account<'info, ForecastMarket>,
    #[account(init_if_needed, payer = publisher, space = 8 + Commitment::INIT_SPACE,
        seeds = [COMMITMENT_SEED, market.key().as_ref(), &epoch.to_le_bytes(), publisher.key().as_ref()], bump)]
    pub commitment: Box<Account<'info, Commitment>>,
    #[account(init_if_needed, payer = publisher, space = 8 + TrackRecord::INIT_SPACE,
        seeds = [RECORD_SEED, publisher.key().as_ref()], bump)]
    pub record: Box<Account<'info, TrackRecord>>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct Reveal<'info> {
    pub publisher: Signer<'info>,
    #[account(seeds = [REGISTRY_SEED], bump = registry.bump)]
    pub registry: Account<'info, Registry>,
    pub market: Box<Account<'info, Market>>,
    /// The round forecast: owned by this program (checked by `Account`), of this market and epoch.
    #[account(constraint = round.market == market.key() && round.epoch == epoch @ MarketError::WrongRound)]
    pub round: Box<Account<'info, Round>>,
    #[account(mut, seeds = [COMMITMENT_SEED, market.key().as_ref(), &epoch.to_le_bytes(), publisher.key().as_ref()],
        bump = commitment.bump)]
    pub commitment: Box<Account<'info, Commitment>>,
    #[account(mut, seeds = [RECORD_SEED, publisher.key().as_ref()], bump = record.bump)]
    pub record: Box<Account<'info, TrackRecord>>,
}

#[derive(Accounts)]
pub struct Expire<'info> {
    #[account(mut, seeds = [COMMITMENT_SEED, commitment.market.as_ref(), &commitment.epoch.to_le_bytes(),
        commitment.publisher.as_ref()], bump = commitment.bump)]
    pub commitment: Box<Account<'info, Commitment>>,
    #[account(mut, seeds = [RECORD_SEED, commitment.publisher.as_ref()], bump = record.bump)]
    pub record: Box<Account<'info, TrackRecord>>,
}

#[derive(Accounts)]
pub struct CloseCommitment<'info> {
    /// The publisher (the commitment's seeds name it, so nobody else can close it); receives the rent.
    #[account(mut)]
    pub publisher: Signer<'info>,
    #[account(mut, close = publisher, seeds = [COMMITMENT_SEED, commitment.market.as_ref(),
        &commitment.epoch.to_le_bytes(), publisher.key().as_ref()], bump = commitment.bump)]
    pub commitment: Box<Account<'info, Commitment>>,
    #[account(mut, seeds = [RECORD_SEED, publisher.key().as_ref()], bump = record.bump)]
    pub record: Box<Account<'info, TrackRecord>>,
}

#[derive(Accounts)]
pub struct ReadTrackRecord<'info> {
    #[account(seeds = [RECORD_SEED, record.publisher.as_ref()], bump = record.bump)]
    pub record: Box<Account<'info, TrackRecord>>,
}

pub fn initialize_registry(ctx: Context<InitializeRegistry>, cluster: [u8; 32], reveal_window: u32) -> Result<()> {
    require!(reveal_window > 0 && reveal_window <= MAX_REVEAL_WINDOW, MarketError::BadRevealWindow);
    require!(cluster != [0; 32], MarketError::ZeroCluster);
    ctx.accounts.registry.set_inner(Registry { cluster, reveal_window, bump: ctx.bumps.registry });
    emit_event!(RegistryInitialized { cluster, reveal_window });
    Ok(())
}

/// Admin: enables `market` for forecasts (creates its `ForecastMarket`; once, and for good).
pub fn enable_forecasts(ctx: Context<EnableForecasts>) -> Result<()> {
    let market = ctx.accounts.market.key();
    ctx.accounts.forecast_market.set_inner(ForecastMarket { market, bump: ctx.bumps.forecast_market });
    emit_event!(ForecastsEnabled { market });
    Ok(())
}

/// Commits (or replaces) the publisher's forecast for `epoch` while the round takes bets: the round exists, so
/// its start has passed; commitments close with betting, `bet_cutoff` before the lock, so a published forecast never
/// has more information than a bet.
pub fn commit(ctx: Context<Commit>, epoch: u64, commitment: [u8; 32]) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let a = ctx.accounts;
    let r = &mut a.round;
    let closes = r.lock_ts.saturating_sub(r.params.bet_cutoff as i64);
    require!(now < closes, MarketError::CommitTooLate);
    let publisher = a.publisher.key();
    let market = a.market.key();
    let c = &mut a.commitment;
    // A commitment account just created by `init_if_needed` is zeroed: its publisher is the default key.
    if c.publisher == Pubkey::default() {
        let deadline = r
            .close_ts
            .checked_add(r.params.settle_window as i64)
            .and_then(|t| t.checked_add(a.registry.reveal_window as i64))
            .ok_or(MarketError::MathOverflow)?;
        let rec = &mut a.record;
        if rec.publisher == Pubkey::default() {
            rec.publisher = publisher;
            rec.bump = ctx.bumps.record;
        }
        let folded = rec.push_open(deadline, now)?;
        if folded > 0 {
            emit_event!(ForecastsExpired { publisher, count: folded as u32 });
        }
        rec.committed = rec.committed.checked_add(1).ok_or(MarketError::MathOverflow)?;
        c.set_inner(Commitment {
            publisher,
            market,
            epoch,
            hash: commitment,
            status: CommitStatus::Committed,
            deadline,
            up: false,
            probability_up_bps: 0,
            outcome: crate::state::Outcome::None,
            hit: false,
            brier: 0,
            bump: ctx.bumps.commitment,
        });
        r.reveal_until = r.reveal_until.max(deadline);
    } else {
        c.hash = commitment;
    }
    emit_event!(ForecastCommitted { publisher, market, epoch, commitment });
    Ok(())
}

/// Reveals the publisher's forecast once the round's outcome is final and scores it (checks in
/// `PredictionRegistry.reveal`'s order).
pub fn reveal(ctx: Context<Reveal>, epoch: u64, up: bool, probability_up_bps: u16, salt: [u8; 32]) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let a = ctx.accounts;
    let publisher = a.publisher.key();
    let market = a.market.key();
    let c = &mut a.commitment;
    require!(c.status == CommitStatus::Committed, MarketError::AlreadyFinal);
    require!(now <= c.deadline, MarketError::RevealWindowClosed);
    let forecast = Forecast { up, probability_up_bps, salt };
    let computed = commitment_hash(&a.registry.cluster, &publisher, &market, epoch, &forecast);
    if computed != c.hash {
        msg!("commitment {:?}, revealed forecast hashes to {:?}", c.hash, computed);
        return err!(MarketError::CommitmentMismatch);
    }
    require!(consistent(up, probability_up_bps), MarketError::InconsistentForecast);
    let outcome = round_result(&a.round, now)?;

    let rec = &mut a.record;
    require!(rec.remove_open(c.deadline), MarketError::OpenListMismatch);
    let overflow = || error!(MarketError::MathOverflow);
    rec.revealed = rec.revealed.checked_add(1).ok_or_else(overflow)?;
    let s = score(up, probability_up_bps, outcome);
    match s {
        Some(s) => {
            if s.hit {
                rec.hits = rec.hits.checked_add(1).ok_or_else(overflow)?;
            } else {
                rec.misses = rec.misses.checked_add(1).ok_or_else(overflow)?;
            }
            rec.brier_sum = rec.brier_sum.checked_add(s.brier as u128).ok_or_else(overflow)?;
        }
        None => rec.voided = rec.voided.checked_add(1).ok_or_else(overflow)?,
    }
    let (hit, brier) = s.map_or((false, 0), |s| (s.hit, s.brier));
    c.status = CommitStatus::Revealed;
    c.up = up;
    c.probability_up_bps = probability_up_bps;
    c.outcome = outcome;
    c.hit = hit;
    c.brier = brier;
    emit_event!(ForecastRevealed { publisher, market, epoch, up, probability_up_bps, outcome, hit, brier });
    Ok(())
}

/// Marks a commitment never revealed by its deadline as expired and folds it into the stored record; anyone may
/// call it, and nobody needs to: the record's view counts it from the deadline on.
pub fn expire(ctx: Context<Expire>) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let c = &mut ctx.accounts.commitment;
    require!(c.status == CommitStatus::Committed, MarketError::AlreadyFinal);
    require!(now > c.deadline, MarketError::RevealWindowOpen);
    expire_into(c, &mut ctx.accounts.record)
}

/// Marks `c` (Committed, past its deadline) expired and folds it into `rec` unless a full list's fold already did.
fn expire_into(c: &mut Commitment, rec: &mut TrackRecord) -> Result<()> {
    c.status = CommitStatus::Expired;
    // Without an entry of its deadline left, a full list's fold already counted it.
    let counted = rec.remove_open(c.deadline);
    if counted {
        rec.add_expired(1)?;
    }
    emit_event!(ForecastExpired { publisher: c.publisher, market: c.market, epoch: c.epoch, counted });
    Ok(())
}

/// The publisher closes its commitment and takes back the rent, once it is final: revealed, expired, or past its
/// deadline (then first expired exactly as `expire` does, so the record counts it once). It cannot come back:
/// `commit` for that round is refused once betting closed, and the deadline is after the round's close. The
/// track record is never closed (closing it would erase the publisher's history).
pub fn close_commitment(ctx: Context<CloseCommitment>) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let c = &mut ctx.accounts.commitment;
    if c.status == CommitStatus::Committed {
        require!(now > c.deadline, MarketError::CommitmentOpen);
        expire_into(c, &mut ctx.accounts.record)?;
    }
    emit_event!(CommitmentClosed { publisher: c.publisher, market: c.market, epoch: c.epoch, status: c.status });
    Ok(())
}

/// The publisher's track record now, as return data (read it with `simulateTransaction`; or read the account
/// and apply `TrackRecord::view` with the cluster's clock).
pub fn track_record(ctx: Context<ReadTrackRecord>) -> Result<RecordView> {
    let view = ctx.accounts.record.view(Clock::get()?.unix_timestamp);
    // On chain Anchor's entry sets the return data from the result; off chain (native tests) its
    // `set_return_data` is a no-op, so the same bytes go through the runtime's stub, as `emit_event!` does for logs.
    #[cfg(not(target_os = "solana"))]
    {
        let mut data = Vec::with_capacity(64);
        view.serialize(&mut data)?;
        anchor_lang::compat::solana_sysvar::program_stubs::sol_set_return_data(&data);
    }
    Ok(view)
}
