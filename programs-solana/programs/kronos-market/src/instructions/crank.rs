//! The permissionless crank: start, lock and settle rounds once their time has come.
//!
//! The timing rule: the price in effect at a lock or close timestamp `t` is read only once `t + report_delay` has
//! passed **and** a transmission stamped after `t` has been written: the answer is anchored on the first such
//! transmission (see `chainlink::in_effect_at`), so nothing written later can change it; before that the crank
//! fails with `PriceNotFinal` and is simply tried again. A timestamp is one round's close and the next round's lock:
//! whichever of the two reads it first records what it found in its round (a transmission, or that the history no
//! longer covers `t`), and the other takes it from there (the neighbouring round's account is passed by address,
//! and `close_round` keeps a round whose record a neighbour may still need), so one timestamp has one price.

use anchor_lang::prelude::*;
use anchor_spl::token::{Token, TokenAccount};

use crate::chainlink::{self, LookupError};
use crate::error::MarketError;
use crate::events::{RoundCancelled, RoundLocked, RoundSettled, RoundStarted};
use crate::instructions::init::{feed_header, pinned};
use crate::money;
use crate::state::*;

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct StartRound<'info> {
    /// Anyone; pays the round's rent and gets it back when the round is closed.
    #[account(mut)]
    pub payer: Signer<'info>,
    /// Written when parameters scheduled for this epoch become the market's current ones.
    #[account(mut)]
    pub market: Box<Account<'info, Market>>,
    #[account(init, payer = payer, space = 8 + Round::INIT_SPACE,
        seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump)]
    pub round: Box<Account<'info, Round>>,
    /// CHECK: the market's feed (by address): no round starts on a feed whose owner or writer changed.
    #[account(address = market.feed)]
    pub feed: UncheckedAccount<'info>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct LockRound<'info> {
    pub market: Box<Account<'info, Market>>,
    #[account(mut, seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    /// CHECK: the previous epoch's round account, by address (it may not exist); its close is this round's lock.
    /// For epoch 0 this is the address of epoch `u64::MAX`, which can never exist.
    #[account(seeds = [ROUND_SEED, market.key().as_ref(), &epoch.wrapping_sub(1).to_le_bytes()], bump)]
    pub prev_round: UncheckedAccount<'info>,
    /// CHECK: the market's feed (by address); owner and layout are checked when it is read.
    #[account(address = market.feed)]
    pub feed: UncheckedAccount<'info>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct SettleRound<'info> {
    /// Whoever settles; paid the settler reward from the fee.
    #[account(mut)]
    pub settler: Signer<'info>,
    #[account(mut)]
    pub market: Box<Account<'info, Market>>,
    #[account(mut, seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    /// CHECK: the previous epoch's round, by address (used when this round is locked by the same instruction).
    #[account(seeds = [ROUND_SEED, market.key().as_ref(), &epoch.wrapping_sub(1).to_le_bytes()], bump)]
    pub prev_round: UncheckedAccount<'info>,
    /// CHECK: the next epoch's round, by address (it may not exist); its lock is this round's close.
    #[account(seeds = [ROUND_SEED, market.key().as_ref(), &epoch.wrapping_add(1).to_le_bytes()], bump)]
    pub next_round: UncheckedAccount<'info>,
    /// CHECK: the market's feed (by address); owner and layout are checked when it is read.
    #[account(address = market.feed)]
    pub feed: UncheckedAccount<'info>,
    /// CHECK: the market's vault, by address (pays the settler reward).
    #[account(mut, address = market.vault)]
    pub vault: UncheckedAccount<'info>,
    /// Token markets: the settler's token account for the reward (without it the reward stays with the treasury).
    #[account(mut)]
    pub settler_token: Option<Account<'info, TokenAccount>>,
    pub token_program: Option<Program<'info, Token>>,
}

pub fn start_round(ctx: Context<StartRound>, epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let m = &mut ctx.accounts.market;
    let (start, lock, close) = m.times(epoch)?;
    require!(now >= start, MarketError::RoundNotStarted);
    require!(now < lock, MarketError::TooLateToStart);
    // A feed whose owner or writer changed can price nothing: take no bets on it.
    let h = feed_header(&ctx.accounts.feed)?;
    require!(pinned(&h, &m.feed_owner, &m.feed_writer), MarketError::FeedChanged);
    // Parameters changed during an epoch apply from the next one, whenever this start runs.
    let params = m.params_for(epoch);
    m.promote(epoch);
    let r = &mut ctx.accounts.round;
    r.set_inner(Round::opened(m.key(), epoch, (start, lock, close), params, ctx.accounts.payer.key(), ctx.bumps.round));
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

/// What the crank learned about the price at a timestamp.
enum Read {
    /// The transmission in effect (answer, its timestamp): final, recorded in the round whatever its checks say.
    Found(i128, i64),
    /// No transmission can be used at all: the round is refunded.
    Cancel(CancelReason),
    /// The history no longer covers the timestamp: refunded, and recorded so the neighbouring round agrees.
    NotCovered(CancelReason),
}

/// A round's record of a timestamp whose history was no longer covered when it was read (the timestamp fields
/// hold 0 before a read and the transmission's timestamp after a successful one).
pub const NOT_COVERED: i64 = -1;

/// The transmission in effect at `t`: the one the neighbouring round already recorded for `t`, or the feed's.
/// Fails (the crank retries later) while the feed is flagged or the price at `t` is not final yet.
fn read_at(feed: &AccountInfo, market: &Market, t: i64, recorded: Option<(i128, i64)>, at_lock: bool) -> Result<Read> {
    let unavailable = if at_lock { CancelReason::LockPriceUnavailable } else { CancelReason::ClosePriceUnavailable };
    match recorded {
        Some((_, NOT_COVERED)) => return Ok(Read::Cancel(unavailable)),
        Some((price, ts)) => return Ok(Read::Found(price, ts)),
        None => {}
    }
    let h = feed_header(feed)?;
    // Flagged (or any state but normal): not read until the flag is lowered.
    require!(h.state == chainlink::STATE_NORMAL, MarketError::FeedFlagged);
    if !pinned(&h, &market.feed_owner, &market.feed_writer) {
        msg!("feed owner or writer changed since the market was created");
        return Ok(Read::Cancel(CancelReason::FeedChanged));
    }
    if h.decimals != market.decimals {
        msg!("feed decimals changed from {} to {}", market.decimals, h.decimals);
        return Ok(Read::Cancel(CancelReason::BadAnswer));
    }
    let data = feed.try_borrow_data()?;
    let bad = |e| {
        msg!("feed {}: {:?}", feed.key, e);
        error!(MarketError::BadFeedAccount)
    };
    match chainlink::in_effect_at(&data, t) {
        Ok(tx) => Ok(Read::Found(tx.answer, tx.timestamp as i64)),
        Err(LookupError::NotFinal) => err!(MarketError::PriceNotFinal),
        Err(LookupError::NotCovered) => Ok(Read::NotCovered(unavailable)),
        Err(LookupError::Feed(e)) => Err(bad(e)),
    }
}

/// Whether the answer `price` stamped `ts` may price timestamp `t` under `max_age`, or why the round is refunded.
pub fn usable(price: i128, ts: i64, t: i64, max_age: u32, at_lock: bool) -> std::result::Result<(), CancelReason> {
    if price <= 0 {
        return Err(CancelReason::BadAnswer);
    }
    if t - ts > max_age as i64 {
        return Err(if at_lock { CancelReason::LockPriceStale } else { CancelReason::ClosePriceStale });
    }
    Ok(())
}

/// The round at `acc` if it exists (an address that was never initialised, or was closed, reads as `None`).
pub(crate) fn neighbour(acc: &AccountInfo) -> Result<Option<Round>> {
    if acc.owner != &crate::ID || acc.data_is_empty() {
        return Ok(None);
    }
    let data = acc.try_borrow_data()?;
    Ok(Some(Round::try_deserialize(&mut &data[..])?))
}

/// Only an open round is locked (settling locks one itself when nobody did).
fn require_open(r: &Round) -> Result<()> {
    match r.status {
        RoundStatus::Open => Ok(()),
        RoundStatus::Locked => err!(MarketError::RoundNotOpen),
        RoundStatus::Settled | RoundStatus::Cancelled => err!(MarketError::RoundFinal),
    }
}

/// Records the lock price of open round `r` (or cancels it); `prev` is the previous epoch's round account.
fn lock(market_key: Pubkey, market: &Market, r: &mut Round, prev: &AccountInfo, feed: &AccountInfo) -> Result<()> {
    let recorded = neighbour(prev)?
        .filter(|p| p.market == market_key && p.close_ts == r.lock_ts && p.close_price_ts != 0)
        .map(|p| (p.close_price, p.close_price_ts));
    match read_at(feed, market, r.lock_ts, recorded, true)? {
        Read::Found(price, ts) => {
            r.lock_price = price;
            r.lock_price_ts = ts;
            match usable(price, ts, r.lock_ts, r.params.max_price_age, true) {
                Ok(()) => {
                    r.status = RoundStatus::Locked;
                    emit_event!(RoundLocked { market: market_key, epoch: r.epoch, price, price_ts: ts });
                }
                Err(reason) => cancel(market_key, r, reason, Outcome::None),
            }
        }
        Read::NotCovered(reason) => {
            r.lock_price_ts = NOT_COVERED;
            cancel(market_key, r, reason, Outcome::None)
        }
        Read::Cancel(reason) => cancel(market_key, r, reason, Outcome::None),
    }
    Ok(())
}

pub fn lock_round(ctx: Context<LockRound>, _epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let key = ctx.accounts.market.key();
    let r = &mut ctx.accounts.round;
    require_open(r)?;
    require!(now >= r.lock_ts.saturating_add(r.params.report_delay as i64), MarketError::TooEarly);
    if r.expired(now) {
        cancel(key, r, CancelReason::Expired, Outcome::None);
        return Ok(());
    }
    lock(key, &ctx.accounts.market, r, &ctx.accounts.prev_round, &ctx.accounts.feed)
}

/// Settles a round (locking it first if nobody did): records the close, then Up/Down with the fee split between
/// the treasury and the settler, or a refund (tie, one-sided pool, unusable price, expired window).
pub fn settle_round(ctx: Context<SettleRound>, _epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let a = ctx.accounts;
    let key = a.market.key();
    let r = &mut a.round;
    if matches!(r.status, RoundStatus::Settled | RoundStatus::Cancelled) {
        return err!(MarketError::RoundFinal);
    }
    require!(now >= r.close_ts.saturating_add(r.params.report_delay as i64), MarketError::TooEarly);
    if r.expired(now) {
        cancel(key, r, CancelReason::Expired, Outcome::None);
        return Ok(());
    }
    if r.status == RoundStatus::Open {
        lock(key, &a.market, r, &a.prev_round, &a.feed)?;
        if r.status != RoundStatus::Locked {
            return Ok(());
        }
    }
    let recorded = neighbour(&a.next_round)?
        .filter(|n| n.market == key && n.lock_ts == r.close_ts && n.lock_price_ts != 0)
        .map(|n| (n.lock_price, n.lock_price_ts));
    let (price, ts) = match read_at(&a.feed, &a.market, r.close_ts, recorded, false)? {
        Read::Found(price, ts) => (price, ts),
        Read::NotCovered(reason) => {
            r.close_price_ts = NOT_COVERED;
            cancel(key, r, reason, Outcome::None);
            return Ok(());
        }
        Read::Cancel(reason) => {
            cancel(key, r, reason, Outcome::None);
            return Ok(());
        }
    };
    r.close_price = price;
    r.close_price_ts = ts;
    if let Err(reason) = usable(price, ts, r.close_ts, r.params.max_price_age, false) {
        cancel(key, r, reason, Outcome::None);
        return Ok(());
    }
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
    // The settler's share of the fee; on a token market without the settler's token account it stays with the
    // treasury.
    let wants_reward = a.market.is_native() || a.settler_token.is_some();
    let reward = if wants_reward {
        u64::try_from((fee as u128) * (r.params.settler_reward_bps as u128) / (BPS as u128))
            .map_err(|_| MarketError::MathOverflow)?
    } else {
        0
    };
    r.fee = fee;
    r.settler_reward = reward;
    r.reward_amount = total.checked_sub(fee).ok_or(MarketError::MathOverflow)?;
    r.status = RoundStatus::Settled;
    r.outcome = outcome;
    let lock_price = r.lock_price;
    let (epoch, reward_amount) = (r.epoch, r.reward_amount);
    let m = &mut a.market;
    m.treasury_owed = m.treasury_owed.checked_add(fee - reward).ok_or(MarketError::MathOverflow)?;
    let settler = a.settler.key();
    money::pay(
        &a.market,
        &a.vault.to_account_info(),
        money::Payee { to: &a.settler.to_account_info(), token: a.settler_token.as_ref(), owner: Some(&settler) },
        a.token_program.as_ref(),
        reward,
    )?;
    emit_event!(RoundSettled {
        market: key,
        epoch,
        outcome,
        lock_price,
        close_price: price,
        total,
        fee,
        reward_amount,
        settler,
        settler_reward: reward,
    });
    Ok(())
}
