//! Moving stakes in and out of the vault (SOL or SPL token).

use anchor_lang::prelude::*;
use anchor_lang::system_program;
use anchor_spl::token::{self, Token, TokenAccount};

use crate::error::MarketError;
use crate::state::{Market, MARKET_SEED};

/// The token accounts a token market needs, checked against the market's mint and the wallet.
fn token_accounts<'a, 'info>(
    market: &Market,
    wallet: Option<&Pubkey>,
    token: Option<&'a Account<'info, TokenAccount>>,
    program: Option<&'a Program<'info, Token>>,
) -> Result<(&'a Account<'info, TokenAccount>, &'a Program<'info, Token>)> {
    let (Some(t), Some(p)) = (token, program) else { return err!(MarketError::TokenAccountsMissing) };
    require_keys_eq!(t.mint, market.mint, MarketError::WrongTokenAccount);
    if let Some(w) = wallet {
        require_keys_eq!(t.owner, *w, MarketError::WrongTokenAccount);
    }
    Ok((t, p))
}

/// Takes a stake from `user` into the vault.
pub fn pull<'info>(
    market: &Market,
    user: &Signer<'info>,
    vault: &AccountInfo<'info>,
    user_token: Option<&Account<'info, TokenAccount>>,
    token_program: Option<&Program<'info, Token>>,
    system: &Program<'info, System>,
    amount: u64,
) -> Result<()> {
    if market.is_native() {
        let accounts = system_program::Transfer { from: user.to_account_info(), to: vault.clone() };
        system_program::transfer(CpiContext::new(system.key(), accounts), amount)
    } else {
        let (from, program) = token_accounts(market, Some(user.key), user_token, token_program)?;
        let accounts =
            token::Transfer { from: from.to_account_info(), to: vault.clone(), authority: user.to_account_info() };
        token::transfer(CpiContext::new(program.key(), accounts), amount)
    }
}

/// Where a payment from the vault goes: lamports to `to` (SOL market) or tokens to `token` (token market), whose
/// owner must be `owner` when given.
pub struct Payee<'a, 'info> {
    pub to: &'a AccountInfo<'info>,
    pub token: Option<&'a Account<'info, TokenAccount>>,
    pub owner: Option<&'a Pubkey>,
}

/// Pays `amount` from the vault, signed by the market PDA. A SOL vault never goes below its rent-exempt minimum; the
/// vault itself is never a destination (paying it would move nothing while marking the debt paid).
pub fn pay<'info>(
    market: &Account<'info, Market>,
    vault: &AccountInfo<'info>,
    payee: Payee<'_, 'info>,
    token_program: Option<&Program<'info, Token>>,
    amount: u64,
) -> Result<()> {
    if amount == 0 {
        return Ok(());
    }
    if market.is_native() {
        require_keys_neq!(*payee.to.key, market.vault, MarketError::VaultAsDestination);
        let floor = Rent::get()?.minimum_balance(vault.data_len());
        let free = vault.lamports().saturating_sub(floor);
        require!(free >= amount, MarketError::VaultShort);
        vault.sub_lamports(amount)?;
        payee.to.add_lamports(amount)?;
        Ok(())
    } else {
        let (dest, program) = token_accounts(market, payee.owner, payee.token, token_program)?;
        require_keys_neq!(dest.key(), market.vault, MarketError::VaultAsDestination);
        let id = market.id.to_le_bytes();
        let seeds: &[&[u8]] = &[MARKET_SEED, market.creator.as_ref(), &id, &[market.bump]];
        let signer = &[seeds];
        let accounts =
            token::Transfer { from: vault.clone(), to: dest.to_account_info(), authority: market.to_account_info() };
        token::transfer(CpiContext::new_with_signer(program.key(), accounts, signer), amount)
    }
}
