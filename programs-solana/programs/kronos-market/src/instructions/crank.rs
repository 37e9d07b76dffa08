//! The permissionless crank: start, lock and settle rounds once their time has come.

use anchor_lang::prelude::*;

use crate::chainlink::{self, LookupError};
use crate::error::MarketError;
use crate::events::{RoundCancelled, RoundLocked, RoundSettled, RoundStarted};
use crate::instructions::init::feed_header;
use crate::state::*;

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct StartRound<'info> {
    /// Anyone; pays the round's rent and gets it back when the round is closed.
    #[account(mut)]
    pub payer: Signer<'info>,
    pub market: Box<Account<'info, Market>>,
    #[account(init, payer = payer, space = 8 + Round::INIT_SPACE,
        seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump)]
    pub round: Box<Account<'info, Round>>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct LockRound<'info> {
    pub market: Box<Account<'info, Market>>,
    #[account(mut, seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    /// CHECK: the market's feed (by address); owner and layout are checked when it is read.
    #[account(address = market.feed)]
    pub feed: UncheckedAccount<'info>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct SettleRound<'info> {
    #[account(mut)]
    pub market: Box<Account<'info, Market>>,
    #[account(mut, seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    /// CHECK: the market's feed (by address); owner and layout are checked when it is read.
    #[account(address = market.feed)]
    pub feed: UncheckedAccount<'info>,
}

pub fn start_round(ctx: Context<StartRound>, epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let m = &ctx.accounts.market;
    let (start, lock, close) = m.times(epoch)?;
    require!(now >= start, MarketError::RoundNotStarted);
    require!(now < lock, MarketError::TooLateToStart);
    let r = &mut ctx.accounts.round;
    r.set_inner(Round {
        market: m.key(),
        epoch,
        start_ts: start,
        lock_ts: lock,
        close_ts: close,
        params: m.params,
        status: RoundStatus::Open,
        outcome: Outcome::None,
        cancel_reason: CancelReason::None,
        up_amount: 0,
        down_amount: 0,
        fee: 0,
        reward_amount: 0,
        lock_price: 0,
        close_price: 0,
        lock_price_ts: 0,
        close_price_ts: 0,
        paid: 0,
        positions: 0,
        payer: ctx.accounts.payer.key(),
        bump: ctx.bumps.round,
    });
    emit_event!(RoundStarted { market: m.key(), epoch, start_ts: start, lock_ts: lock, close_ts: close });
    Ok(())
}

/// Marks `r` cancelled (every stake refundable).
pub fn cancel(market: Pubkey, r: &mut Round, reason: CancelReason, outcome: Outcome) {
    r.status = RoundStatus::Cancelled;
    r.cancel_reason = reason;
    r.outcome = outcome;
    emit_event!(RoundCancelled { market, epoch: r.epoch, reason, outcome });
}

/// The Chainlink answer in effect at `t`, or why the round must be refunded instead.
fn price_at(
    feed: &AccountInfo,
    market: &Market,
    t: i64,
    max_age: u32,
    at_lock: bool,
) -> Result<std::result::Result<(i128, i64), CancelReason>> {
    let h = feed_header(feed)?;
    let (unavailable, stale) = if at_lock {
        (CancelReason::LockPriceUnavailable, CancelReason::LockPriceStale)
    } else {
        (CancelReason::ClosePriceUnavailable, CancelReason::ClosePriceStale)
    };
    if h.decimals != market.decimals {
        msg!("feed decimals changed from {} to {}", market.decimals, h.decimals);
        return Ok(Err(CancelReason::BadAnswer));
    }
    let data = feed.try_borrow_data()?;
    let tx = match chainlink::in_effect_at(&data, t) {
        Ok(tx) => tx,
        Err(LookupError::NotCovered) => return Ok(Err(unavailable)),
        Err(LookupError::Feed(e)) => {
            msg!("feed {}: {:?}", feed.key, e);
            return err!(MarketError::BadFeedAccount);
        }
    };
    if tx.answer <= 0 {
        return Ok(Err(CancelReason::BadAnswer));
    }
    let ts = tx.timestamp as i64;
    if t - ts > max_age as i64 {
        return Ok(Err(stale));
    }
    Ok(Ok((tx.answer, ts)))
}

fn require_open_for_crank(r: &Round, want: RoundStatus) -> Result<()> {
    match r.status {
        RoundStatus::Settled | RoundStatus::Cancelled => err!(MarketError::RoundFinal),
        s if s == want => Ok(()),
        RoundStatus::Open => err!(MarketError::RoundNotLocked),
        _ => err!(MarketError::RoundNotOpen),
    }
}

pub fn lock_round(ctx: Context<LockRound>, _epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let key = ctx.accounts.market.key();
    let r = &mut ctx.accounts.round;
    require_open_for_crank(r, RoundStatus::Open)?;
    require!(now >= r.lock_ts.saturating_add(r.params.report_delay as i64), MarketError::TooEarly);
    if r.expired(now) {
        cancel(key, r, CancelReason::Expired, Outcome::None);
        return Ok(());
    }
    match price_at(&ctx.accounts.feed, &ctx.accounts.market, r.lock_ts, r.params.max_price_age, true)? {
        Ok((price, ts)) => {
            r.status = RoundStatus::Locked;
            r.lock_price = price;
            r.lock_price_ts = ts;
            emit_event!(RoundLocked { market: key, epoch: r.epoch, price, price_ts: ts });
        }
        Err(reason) => cancel(key, r, reason, Outcome::None),
    }
    Ok(())
}

pub fn settle_round(ctx: Context<SettleRound>, _epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let key = ctx.accounts.market.key();
    let r = &mut ctx.accounts.round;
    require_open_for_crank(r, RoundStatus::Locked)?;
    require!(now >= r.close_ts.saturating_add(r.params.report_delay as i64), MarketError::TooEarly);
    if r.expired(now) {
        cancel(key, r, CancelReason::Expired, Outcome::None);
        return Ok(());
    }
    let (price, ts) =
        match price_at(&ctx.accounts.feed, &ctx.accounts.market, r.close_ts, r.params.max_price_age, false)? {
            Ok(p) => p,
            Err(reason) => {
                cancel(key, r, reason, Outcome::None);
                return Ok(());
            }
        };
    r.close_price = price;
    r.close_price_ts = ts;
    let outcome = match price.cmp(&r.lock_price) {
        std::cmp::Ordering::Greater => Outcome::Up,
        std::cmp::Ordering::Less => Outcome::Down,
        std::cmp::Ordering::Equal => Outcome::Tie,
    };
    if outcome == Outcome::Tie {
        cancel(key, r, CancelReason::Tie, outcome);
        return Ok(());
    }
    if r.up_amount == 0 || r.down_amount == 0 {
        cancel(key, r, CancelReason::OneSidedPool, outcome);
        return Ok(());
    }
    let total = r.total()?;
    let fee = u64::try_from((total as u128) * (r.params.fee_bps as u128) / (BPS as u128))
        .map_err(|_| MarketError::MathOverflow)?;
    r.fee = fee;
    r.reward_amount = total.checked_sub(fee).ok_or(MarketError::MathOverflow)?;
    r.status = RoundStatus::Settled;
    r.outcome = outcome;
    let m = &mut ctx.accounts.market;
    m.treasury_owed = m.treasury_owed.checked_add(fee).ok_or(MarketError::MathOverflow)?;
    emit_event!(RoundSettled {
        market: key,
        epoch: r.epoch,
        outcome,
        lock_price: r.lock_price,
        close_price: price,
        total,
        fee,
        reward_amount: r.reward_amount,
    });
    Ok(())
}
