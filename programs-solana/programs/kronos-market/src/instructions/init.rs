//! Creating markets.

use anchor_lang::prelude::*;
use anchor_spl::token::{Mint, Token, TokenAccount};

use crate::chainlink;
use crate::error::MarketError;
use crate::events::MarketInitialized;
use crate::state::*;

#[derive(Accounts)]
#[instruction(id: u64)]
pub struct InitializeMarket<'info> {
    #[account(mut)]
    pub authority: Signer<'info>,
    #[account(init, payer = authority, space = 8 + Market::INIT_SPACE,
        seeds = [MARKET_SEED, authority.key().as_ref(), &id.to_le_bytes()], bump)]
    pub market: Box<Account<'info, Market>>,
    #[account(init, payer = authority, space = 8 + SolVault::INIT_SPACE,
        seeds = [VAULT_SEED, market.key().as_ref()], bump)]
    pub vault: Account<'info, SolVault>,
    /// CHECK: owner (the Chainlink store program) and layout are checked by the handler.
    pub feed: UncheckedAccount<'info>,
    /// The admin's approval of `feed` (a market on a feed nobody approved cannot be created).
    #[account(seeds = [FEED_SEED, feed.key().as_ref()], bump = feed_approval.bump)]
    pub feed_approval: Box<Account<'info, FeedApproval>>,
    pub system_program: Program<'info, System>,
}

#[derive(Accounts)]
#[instruction(id: u64)]
pub struct InitializeTokenMarket<'info> {
    #[account(mut)]
    pub authority: Signer<'info>,
    #[account(init, payer = authority, space = 8 + Market::INIT_SPACE,
        seeds = [MARKET_SEED, authority.key().as_ref(), &id.to_le_bytes()], bump)]
    pub market: Box<Account<'info, Market>>,
    pub mint: Box<Account<'info, Mint>>,
    #[account(init, payer = authority, seeds = [VAULT_SEED, market.key().as_ref()], bump,
        token::mint = mint, token::authority = market, token::token_program = token_program)]
    pub vault: Box<Account<'info, TokenAccount>>,
    /// CHECK: owner (the Chainlink store program) and layout are checked by the handler.
    pub feed: UncheckedAccount<'info>,
    /// The admin's approval of `feed`.
    #[account(seeds = [FEED_SEED, feed.key().as_ref()], bump = feed_approval.bump)]
    pub feed_approval: Box<Account<'info, FeedApproval>>,
    pub token_program: Program<'info, Token>,
    pub system_program: Program<'info, System>,
}

/// Reads a feed account's header after checking its owner (the account's, not the header's: see [`pinned`]).
pub fn feed_header(feed: &AccountInfo) -> Result<chainlink::Header> {
    require_keys_eq!(*feed.owner, CHAINLINK_STORE, MarketError::WrongFeedOwner);
    let data = feed.try_borrow_data()?;
    chainlink::header(&data).map_err(|e| {
        msg!("feed {}: {:?}", feed.key, e);
        error!(MarketError::BadFeedAccount)
    })
}

/// Whether the feed header's owner and writer are still `owner` and `writer`.
pub fn pinned(h: &chainlink::Header, owner: &Pubkey, writer: &Pubkey) -> bool {
    h.owner == owner.to_bytes() && h.writer == writer.to_bytes()
}

/// The market's stake: its mint (`Pubkey::default()` for SOL) and vault.
struct Stake {
    mint: Pubkey,
    vault: Pubkey,
}

fn setup(
    market: &mut Account<Market>,
    bump: u8,
    creator: Pubkey,
    feed: &AccountInfo,
    approval: &FeedApproval,
    stake: Stake,
    (id, genesis, interval, params): (u64, i64, u32, Params),
) -> Result<()> {
    require!((MIN_INTERVAL..=MAX_INTERVAL).contains(&interval), MarketError::BadInterval);
    require!(genesis > 0, MarketError::BadGenesis);
    params.validate(interval)?;
    let h = feed_header(feed)?;
    require!(pinned(&h, &approval.owner, &approval.writer), MarketError::FeedChanged);
    market.set_inner(Market {
        creator,
        id,
        authority: creator,
        pending_authority: None,
        feed: *feed.key,
        feed_owner: approval.owner,
        feed_writer: approval.writer,
        decimals: h.decimals,
        mint: stake.mint,
        vault: stake.vault,
        genesis,
        interval,
        params,
        pending_params: None,
        pending_from: 0,
        paused: false,
        treasury_owed: 0,
        bump,
    });
    emit_event!(MarketInitialized {
        market: market.key(),
        authority: creator,
        feed: *feed.key,
        mint: stake.mint,
        genesis,
        interval,
        params
    });
    Ok(())
}

pub fn initialize_market(
    ctx: Context<InitializeMarket>,
    id: u64,
    genesis: i64,
    interval: u32,
    params: Params,
) -> Result<()> {
    let a = ctx.accounts;
    a.vault.market = a.market.key();
    let stake = Stake { mint: Pubkey::default(), vault: a.vault.key() };
    setup(
        &mut a.market,
        ctx.bumps.market,
        a.authority.key(),
        &a.feed,
        &a.feed_approval,
        stake,
        (id, genesis, interval, params),
    )
}

pub fn initialize_token_market(
    ctx: Context<InitializeTokenMarket>,
    id: u64,
    genesis: i64,
    interval: u32,
    params: Params,
) -> Result<()> {
    let a = ctx.accounts;
    let stake = Stake { mint: a.mint.key(), vault: a.vault.key() };
    setup(
        &mut a.market,
        ctx.bumps.market,
        a.authority.key(),
        &a.feed,
        &a.feed_approval,
        stake,
        (id, genesis, interval, params),
    )
}
