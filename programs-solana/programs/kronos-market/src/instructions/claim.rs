//! Claims and refunds, several rounds at once.

use anchor_lang::prelude::*;
use anchor_spl::token::{Token, TokenAccount};

use crate::error::MarketError;
use crate::events::{Claimed, Refunded};
use crate::instructions::crank::cancel;
use crate::money;
use crate::state::*;

/// Accounts of `claim` and `refund`. The rounds come as `remaining_accounts`: (round, position) pairs, both writable.
#[derive(Accounts)]
pub struct Claim<'info> {
    #[account(mut)]
    pub user: Signer<'info>,
    pub market: Box<Account<'info, Market>>,
    /// CHECK: the market's vault, by address.
    #[account(mut, address = market.vault)]
    pub vault: UncheckedAccount<'info>,
    /// Where a token market pays: the user's own token account for the market's mint.
    #[account(mut)]
    pub user_token: Option<Account<'info, TokenAccount>>,
    pub token_program: Option<Program<'info, Token>>,
}

/// Pays every listed position what it is owed; `refunds_only` refuses winnings. All or nothing: one position
/// that is not payable fails the whole instruction (its epoch is logged).
pub fn collect<'info>(ctx: Context<'info, Claim<'info>>, refunds_only: bool) -> Result<()> {
    let now = Clock::get()?.unix_timestamp;
    let rem = ctx.remaining_accounts;
    require!(!rem.is_empty() && rem.chunks_exact(2).remainder().is_empty(), MarketError::BadClaimAccounts);
    let a = &ctx.accounts;
    let market_key = a.market.key();
    let user = a.user.key();
    let mut total: u64 = 0;
    for pair in rem.chunks(2) {
        require!(pair[0].is_writable && pair[1].is_writable, MarketError::BadClaimAccounts);
        let mut round: Account<Round> = Account::try_from(&pair[0])?;
        let mut pos: Account<Position> = Account::try_from(&pair[1])?;
        require_keys_eq!(round.market, market_key, MarketError::BadClaimAccounts);
        require_keys_eq!(pos.round, round.key(), MarketError::BadClaimAccounts);
        require_keys_eq!(pos.user, user, MarketError::BadClaimAccounts);
        let epoch = round.epoch;
        if pos.claimed {
            msg!("epoch {}: already paid", epoch);
            return err!(MarketError::AlreadyClaimed);
        }
        if round.expired(now) {
            cancel(market_key, &mut round, CancelReason::Expired, Outcome::None);
        }
        let amount = match due(&round, &pos, now)? {
            Due::Pending => {
                msg!("epoch {}: not final", epoch);
                return err!(MarketError::RoundNotFinal);
            }
            Due::Nothing => {
                msg!("epoch {}: losing side", epoch);
                return err!(if refunds_only { MarketError::NotRefundable } else { MarketError::NotAWinner });
            }
            Due::Win(x) => {
                if refunds_only {
                    msg!("epoch {}: settled, claim instead", epoch);
                    return err!(MarketError::NotRefundable);
                }
                emit_event!(Claimed { market: market_key, epoch, user, amount: x });
                x
            }
            Due::Refund(x) => {
                emit_event!(Refunded { market: market_key, epoch, user, amount: x });
                x
            }
        };
        pos.claimed = true;
        round.paid = round.paid.checked_add(amount).ok_or(MarketError::MathOverflow)?;
        total = total.checked_add(amount).ok_or(MarketError::MathOverflow)?;
        round.exit(ctx.program_id)?;
        pos.exit(ctx.program_id)?;
    }
    require!(total > 0, MarketError::NothingToClaim);
    // Winnings go to the bettor's own wallet or token account (never the vault, never someone else's).
    money::pay(
        &a.market,
        &a.vault.to_account_info(),
        money::Payee { to: &a.user.to_account_info(), token: a.user_token.as_ref(), owner: Some(&user) },
        a.token_program.as_ref(),
        total,
    )
}
