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
#[allow(clippy::too_many_arguments)]
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

/// Pays `amount` from the vault: lamports to `to` (SOL market) or tokens to `to_token` (token market), signed by the
/// market PDA. A SOL vault never goes below its rent-exempt minimum.
pub fn pay<'info>(
    market: &Account<'info, Market>,
    vault: &AccountInfo<'info>,
    to: &AccountInfo<'info>,
    to_token: Option<&Account<'info, TokenAccount>>,
    token_program: Option<&Program<'info, Token>>,
    amount: u64,
) -> Result<()> {
    if amount == 0 {
        return Ok(());
    }
    if market.is_native() {
        let floor = Rent::get()?.minimum_balance(vault.data_len());
        let free = vault.lamports().saturating_sub(floor);
        require!(free >= amount, MarketError::VaultShort);
        vault.sub_lamports(amount)?;
        to.add_lamports(amount)?;
        Ok(())
    } else {
        let (dest, program) = token_accounts(market, None, to_token, token_program)?;
        let id = market.id.to_le_bytes();
        let seeds: &[&[u8]] = &[MARKET_SEED, market.creator.as_ref(), &id, &[market.bump]];
        let signer = &[seeds];
        let accounts =
            token::Transfer { from: vault.clone(), to: dest.to_account_info(), authority: market.to_account_info() };
        token::transfer(CpiContext::new_with_signer(program.key(), accounts, signer), amount)
    }
}
