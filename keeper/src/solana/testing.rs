//! Fixtures shared by the Solana modules' unit tests (one copy, not one per module).

use anchor_lang::prelude::Pubkey;
use kronos_market::state::{Market, Params};

/// The test market's genesis: its round 0 starts here.
pub(super) const GENESIS: i64 = 1_800_000_000;
/// The test market's round length (s).
pub(super) const IV: u32 = 300;

/// The test market's parameters (a 600 s settle window, a 30 s bet cutoff, a 10 s report delay).
pub(super) fn params() -> Params {
    Params {
        fee_bps: 300,
        min_bet: 1_000,
        max_price_age: 3_600,
        settle_window: 600,
        report_delay: 10,
        bet_cutoff: 30,
        settler_reward_bps: 0,
    }
}

/// A SOL market of [`params`], round 0 at [`GENESIS`], rounds of [`IV`].
pub(super) fn market() -> Market {
    Market {
        creator: Pubkey::new_unique(),
        id: 1,
        authority: Pubkey::new_unique(),
        pending_authority: None,
        feed: Pubkey::new_unique(),
        feed_owner: Pubkey::new_unique(),
        feed_writer: Pubkey::new_unique(),
        decimals: 8,
        mint: Pubkey::default(),
        vault: Pubkey::new_unique(),
        genesis: GENESIS,
        interval: IV,
        params: params(),
        pending_params: None,
        pending_from: 0,
        paused: false,
        treasury_owed: 0,
        bump: 255,
    }
}
