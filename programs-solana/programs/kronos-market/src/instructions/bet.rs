//! Betting.

use anchor_lang::prelude::*;
use anchor_spl::token::{Token, TokenAccount};

use crate::error::MarketError;
use crate::events::BetPlaced;
use crate::money;
use crate::state::*;

#[derive(Accounts)]
#[instruction(epoch: u64)]
pub struct PlaceBet<'info> {
    #[account(mut)]
    pub user: Signer<'info>,
    pub market: Box<Account<'info, Market>>,
    #[account(mut, seeds = [ROUND_SEED, market.key().as_ref(), &epoch.to_le_bytes()], bump = round.bump)]
    pub round: Box<Account<'info, Round>>,
    #[account(init_if_needed, payer = user, space = 8 + Position::INIT_SPACE,
        seeds = [POSITION_SEED, round.key().as_ref(), user.key().as_ref()], bump)]
    pub position: Account<'info, Position>,
    /// CHECK: the market's vault, by address.
    #[account(mut, address = market.vault)]
    pub vault: UncheckedAccount<'info>,
    /// The user's token account (token markets only).
    #[account(mut)]
    pub user_token: Option<Account<'info, TokenAccount>>,
    /// The SPL Token program (token markets only).
    pub token_program: Option<Program<'info, Token>>,
    pub system_program: Program<'info, System>,
}

/// Bets close `bet_cutoff` seconds before the lock (the cluster clock may lag the oracles' observation time);
/// `max_fee_bps` is the highest treasury fee the bettor accepts for this round.
pub fn bet(ctx: Context<PlaceBet>, epoch: u64, side: Side, amount: u64, max_fee_bps: u16) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let a = ctx.accounts;
    require!(!a.market.paused, MarketError::MarketPaused);
    let r = &mut a.round;
    let closes = r.lock_ts.saturating_sub(r.params.bet_cutoff as i64);
    require!(now >= r.start_ts && now < closes, MarketError::BettingClosed);
    require!(r.status == RoundStatus::Open, MarketError::RoundNotOpen);
    require!(amount >= r.params.min_bet, MarketError::BetTooSmall);

    let p = &mut a.position;
    if p.user == Pubkey::default() {
        p.round = r.key();
        p.user = a.user.key();
        p.side = side;
        p.amount = 0;
        p.claimed = false;
        p.bump = ctx.bumps.position;
        r.positions = r.positions.checked_add(1).ok_or(MarketError::MathOverflow)?;
    } else {
        require!(p.side == side, MarketError::OppositeSideTaken);
    }
    require!(r.params.fee_bps <= max_fee_bps, MarketError::FeeAboveLimit);
    p.amount = p.amount.checked_add(amount).ok_or(MarketError::MathOverflow)?;
    match side {
        Side::Up => r.up_amount = r.up_amount.checked_add(amount).ok_or(MarketError::MathOverflow)?,
        Side::Down => r.down_amount = r.down_amount.checked_add(amount).ok_or(MarketError::MathOverflow)?,
    }
    r.total()?;
    money::pull(
        &a.market,
        &a.user,
        &a.vault.to_account_info(),
        a.user_token.as_ref(),
        a.token_program.as_ref(),
        &a.system_program,
        amount,
    )?;
    emit_event!(BetPlaced { market: a.market.key(), epoch, user: a.user.key(), side, amount });
    Ok(())
}
