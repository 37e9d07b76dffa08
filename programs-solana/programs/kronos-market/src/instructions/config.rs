//! The program's configuration and the feed allow-list: only feeds the admin approved can carry markets.
//!
//! In Chainlink's Solana store anyone may create a feed and name its writer, so "owned by the store program" says
//! nothing about who writes the prices. The admin (first the program's upgrade authority) approves each feed after
//! checking it is one of Chainlink's (its owner and writer); a market pins the approved owner and writer, and a feed
//! whose owner or writer later changes stops settling (its rounds are refunded).

use anchor_lang::prelude::*;
use anchor_lang::solana_program::bpf_loader_upgradeable;

use crate::error::MarketError;
use crate::events::{AdminAccepted, AdminProposed, FeedApproved, FeedRevoked};
use crate::instructions::init::feed_header;
use crate::state::*;

#[derive(Accounts)]
pub struct InitializeConfig<'info> {
    /// The program's upgrade authority (checked against its ProgramData account).
    #[account(mut)]
    pub upgrade_authority: Signer<'info>,
    #[account(init, payer = upgrade_authority, space = 8 + Config::INIT_SPACE, seeds = [CONFIG_SEED], bump)]
    pub config: Account<'info, Config>,
    #[account(seeds = [crate::ID.as_ref()], bump, seeds::program = bpf_loader_upgradeable::ID,
        constraint = program_data.upgrade_authority_address == Some(upgrade_authority.key())
            @ MarketError::NotUpgradeAuthority)]
    pub program_data: Account<'info, ProgramData>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
pub struct ConfigAdmin<'info> {
    pub admin: Signer<'info>,
    #[account(mut, seeds = [CONFIG_SEED], bump = config.bump, has_one = admin)]
    pub config: Account<'info, Config>,
}

#[derive(Accounts)]
pub struct AcceptAdmin<'info> {
    pub new_admin: Signer<'info>,
    #[account(mut, seeds = [CONFIG_SEED], bump = config.bump)]
    pub config: Account<'info, Config>,
}

#[derive(Accounts)]
pub struct ApproveFeed<'info> {
    #[account(mut)]
    pub admin: Signer<'info>,
    #[account(seeds = [CONFIG_SEED], bump = config.bump, has_one = admin)]
    pub config: Account<'info, Config>,
    /// CHECK: owner (the Chainlink store program) and layout are checked by the handler.
    pub feed: UncheckedAccount<'info>,
    #[account(init, payer = admin, space = 8 + FeedApproval::INIT_SPACE,
        seeds = [FEED_SEED, feed.key().as_ref()], bump)]
    pub approval: Account<'info, FeedApproval>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
pub struct RevokeFeed<'info> {
    #[account(mut)]
    pub admin: Signer<'info>,
    #[account(seeds = [CONFIG_SEED], bump = config.bump, has_one = admin)]
    pub config: Account<'info, Config>,
    #[account(mut, close = admin, seeds = [FEED_SEED, approval.feed.as_ref()], bump = approval.bump)]
    pub approval: Account<'info, FeedApproval>,
}

pub fn initialize_config(ctx: Context<InitializeConfig>, admin: Pubkey) -> Result<()> {
    ctx.accounts.config.set_inner(Config { admin, pending_admin: None, bump: ctx.bumps.config });
    emit_event!(AdminAccepted { admin });
    Ok(())
}

pub fn propose_admin(ctx: Context<ConfigAdmin>, proposed: Pubkey) -> Result<()> {
    ctx.accounts.config.pending_admin = Some(proposed);
    emit_event!(AdminProposed { proposed });
    Ok(())
}

pub fn accept_admin(ctx: Context<AcceptAdmin>) -> Result<()> {
    let c = &mut ctx.accounts.config;
    let who = ctx.accounts.new_admin.key();
    require!(c.pending_admin == Some(who), MarketError::NotPendingAdmin);
    c.admin = who;
    c.pending_admin = None;
    emit_event!(AdminAccepted { admin: who });
    Ok(())
}

/// Approves `feed` for new markets, recording its current owner and writer.
pub fn approve_feed(ctx: Context<ApproveFeed>) -> Result<()> {
    let h = feed_header(&ctx.accounts.feed)?;
    let feed = ctx.accounts.feed.key();
    let (owner, writer) = (Pubkey::new_from_array(h.owner), Pubkey::new_from_array(h.writer));
    ctx.accounts.approval.set_inner(FeedApproval {
        feed,
        owner,
        writer,
        decimals: h.decimals,
        description: h.description,
        bump: ctx.bumps.approval,
    });
    emit_event!(FeedApproved { feed, owner, writer, decimals: h.decimals });
    Ok(())
}

/// Withdraws an approval: no new market on the feed. Existing markets keep settling while the feed's owner and
/// writer stay the approved ones.
pub fn revoke_feed(ctx: Context<RevokeFeed>) -> Result<()> {
    emit_event!(FeedRevoked { feed: ctx.accounts.approval.feed });
    Ok(())
}
