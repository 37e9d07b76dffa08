//! Closing finished accounts to return their rent.

use anchor_lang::prelude::*;

use crate::error::MarketError;
use crate::events::{PositionClosed, RoundClosed};
use crate::instructions::crank::{cancel, neighbour};
use crate::state::*;

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct ClosePosition<'info> {
    #[account(mut)]
    pub user: Signer<'info>,
    pub market: Box<Account<'info, Market>>,
    #[account(mut, seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    #[account(mut, close = user, seeds = [POSITION_SEED, round.key().as_ref(), user.key().as_ref()],
        bump = position.bump)]
    pub position: Account<'info, Position>,
}

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct CloseRound<'info> {
    #[account(mut)]
    pub market: Box<Account<'info, Market>>,
    #[account(mut, close = payer, has_one = payer @ MarketError::WrongRentReceiver,
        seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    /// CHECK: receives the round's rent; must be the account that paid it (checked by `has_one`).
    #[account(mut)]
    pub payer: UncheckedAccount<'info>,
    /// CHECK: the previous epoch's round, by address (it may not exist): it reads this round's lock as its close.
    #[account(seeds = [ROUND_SEED, market.key().as_ref(), &epoch.wrapping_sub(1).to_le_bytes()], bump)]
    pub prev_round: UncheckedAccount<'info>,
    /// CHECK: the next epoch's round, by address (it may not exist): it reads this round's close as its lock.
    #[account(seeds = [ROUND_SEED, market.key().as_ref(), &epoch.wrapping_add(1).to_le_bytes()], bump)]
    pub next_round: UncheckedAccount<'info>,
}

/// Closes a position that is owed nothing more (paid, or on the losing side of a settled round).
pub fn close_position(ctx: Context<ClosePosition>, epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let r = &mut ctx.accounts.round;
    match due(r, &ctx.accounts.position, now)? {
        Due::Nothing => {}
        Due::Pending => return err!(MarketError::RoundNotFinal),
        Due::Win(_) | Due::Refund(_) => return err!(MarketError::ClaimFirst),
    }
    r.positions = r.positions.checked_sub(1).ok_or(MarketError::MathOverflow)?;
    emit_event!(PositionClosed { market: ctx.accounts.market.key(), epoch, user: ctx.accounts.user.key() });
    Ok(())
}

/// Closes a final round once all its positions are closed, its neighbours no longer need its price records and the
/// reveal deadline of the forecasts committed on it (if any) has passed;
/// rounding dust left from the winners' shares goes to the treasury, the rent to whoever started the round. Anyone
/// may call it.
pub fn close_round(ctx: Context<CloseRound>, epoch: u64) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let key = ctx.accounts.market.key();
    let r = &mut ctx.accounts.round;
    if r.expired(now) {
        cancel(key, r, CancelReason::Expired, Outcome::None);
    }
    // (An expired round was cancelled just above: final either way.)
    r.closable_alone(now)?;
    // Each neighbour checked as soon as it is read (the previous one's error first, as before).
    let prev = neighbour(&ctx.accounts.prev_round)?;
    Round::neighbours_allow_close(prev.as_ref(), None, now)?;
    let next = neighbour(&ctx.accounts.next_round)?;
    Round::neighbours_allow_close(None, next.as_ref(), now)?;
    let owed = if r.status == RoundStatus::Settled { r.reward_amount } else { r.total()? };
    let dust = owed.checked_sub(r.paid).ok_or(MarketError::MathOverflow)?;
    let m = &mut ctx.accounts.market;
    m.treasury_owed = m.treasury_owed.checked_add(dust).ok_or(MarketError::MathOverflow)?;
    emit_event!(RoundClosed { market: key, epoch, dust_to_treasury: dust });
    Ok(())
}
