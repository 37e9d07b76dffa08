//! The market authority's instructions.

use anchor_lang::prelude::*;
use anchor_spl::token::{Token, TokenAccount};

use crate::error::MarketError;
use crate::events::{AuthorityAccepted, AuthorityProposed, ParamsUpdated, PausedSet, TreasuryWithdrawn};
use crate::money;
use crate::state::*;

#[derive(Accounts)]
pub struct Admin<'info> {
    pub authority: Signer<'info>,
    #[account(mut, has_one = authority)]
    pub market: Box<Account<'info, Market>>,
}

#[derive(Accounts)]
pub struct AcceptAuthority<'info> {
    pub new_authority: Signer<'info>,
    #[account(mut)]
    pub market: Box<Account<'info, Market>>,
}

#[derive(Accounts)]
pub struct WithdrawTreasury<'info> {
    pub authority: Signer<'info>,
    #[account(mut, has_one = authority)]
    pub market: Box<Account<'info, Market>>,
    /// CHECK: the market's vault, by address.
    #[account(mut, address = market.vault)]
    pub vault: UncheckedAccount<'info>,
    /// CHECK: receives lamports (SOL markets); any writable account but the vault.
    #[account(mut)]
    pub to: UncheckedAccount<'info>,
    /// Receives tokens (token markets): a token account for the market's mint, not the vault.
    #[account(mut)]
    pub to_token: Option<Account<'info, TokenAccount>>,
    pub token_program: Option<Program<'info, Token>>,
}

/// Stops (or resumes) bets. The crank, claims and refunds are never paused.
pub fn set_paused(ctx: Context<Admin>, paused: bool) -> Result<()> {
    ctx.accounts.market.paused = paused;
    emit_event!(PausedSet { market: ctx.accounts.market.key(), paused });
    Ok(())
}

/// Schedules parameters for the rounds of the next epoch on (the first whose start is still in the future): a round
/// already taking bets, or one of the current epoch started later, keeps the parameters it was announced with.
pub fn update_params(ctx: Context<Admin>, params: Params) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let m = &mut ctx.accounts.market;
    params.validate(m.interval)?;
    let from_epoch = m.next_epoch(now);
    if from_epoch > 0 {
        // Parameters scheduled earlier and already in force now become the current ones before being replaced.
        m.promote(from_epoch - 1);
    }
    m.pending_params = Some(params);
    m.pending_from = from_epoch;
    emit_event!(ParamsUpdated { market: m.key(), params, from_epoch });
    Ok(())
}

/// First step of an authority handover.
pub fn propose_authority(ctx: Context<Admin>, proposed: Pubkey) -> Result<()> {
    let m = &mut ctx.accounts.market;
    m.pending_authority = Some(proposed);
    emit_event!(AuthorityProposed { market: m.key(), proposed });
    Ok(())
}

/// Second step: the proposed authority signs.
pub fn accept_authority(ctx: Context<AcceptAuthority>) -> Result<()> {
    let m = &mut ctx.accounts.market;
    let who = ctx.accounts.new_authority.key();
    require!(m.pending_authority == Some(who), MarketError::NotPendingAuthority);
    m.authority = who;
    m.pending_authority = None;
    emit_event!(AuthorityAccepted { market: m.key(), authority: who });
    Ok(())
}

/// Pays `amount` of the fees owed to the treasury.
pub fn withdraw_treasury(ctx: Context<WithdrawTreasury>, amount: u64) -> Result<()> {
    let a = ctx.accounts;
    require!(amount > 0 && amount <= a.market.treasury_owed, MarketError::TreasuryShort);
    a.market.treasury_owed -= amount;
    // The account actually paid: lamports go to `to`, tokens to `to_token`.
    let to = match (a.market.is_native(), &a.to_token) {
        (false, Some(t)) => t.key(),
        _ => a.to.key(),
    };
    money::pay(
        &a.market,
        &a.vault.to_account_info(),
        money::Payee { to: &a.to.to_account_info(), token: a.to_token.as_ref(), owner: None },
        a.token_program.as_ref(),
        amount,
    )?;
    emit_event!(TreasuryWithdrawn { market: a.market.key(), to, amount });
    Ok(())
}
