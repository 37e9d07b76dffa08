//! Error codes (6000 + position).

use anchor_lang::prelude::*;

#[error_code]
pub enum MarketError {
    #[msg("fee_bps is above the 10% cap (1000)")]
    FeeTooHigh,
    #[msg("min_bet must be at least 1 base unit")]
    ZeroMinBet,
    #[msg("max_price_age must be between 1 second and 1 day")]
    BadPriceAge,
    #[msg("settle_window must be between one interval and 30 days")]
    BadSettleWindow,
    #[msg("report_delay must not exceed one interval")]
    BadReportDelay,
    #[msg("interval must be between 60 seconds and 7 days")]
    BadInterval,
    #[msg("genesis must be a positive unix timestamp")]
    BadGenesis,
    #[msg("the feed account is not owned by the Chainlink store program")]
    WrongFeedOwner,
    #[msg("the feed account is not a Chainlink v2 transmissions account")]
    BadFeedAccount,
    #[msg("arithmetic overflow")]
    MathOverflow,
    #[msg("this round has not started yet: its start timestamp is in the future")]
    RoundNotStarted,
    #[msg("too late to start this round: its lock timestamp has passed")]
    TooLateToStart,
    #[msg("bets are only taken between a round's start and lock timestamps")]
    BettingClosed,
    #[msg("the market is paused: bets are refused (claims and refunds still work)")]
    MarketPaused,
    #[msg("the bet is below the round's minimum")]
    BetTooSmall,
    #[msg("this wallet already bet the other side of this round")]
    OppositeSideTaken,
    #[msg("the round is not open")]
    RoundNotOpen,
    #[msg("the round is not locked (no longer raised: settle_round locks an open round itself; the code is kept)")]
    RoundNotLocked,
    #[msg("too early: the lock or close timestamp (plus the report delay) has not passed")]
    TooEarly,
    #[msg("the round is already settled or cancelled")]
    RoundFinal,
    #[msg("the round is not final yet")]
    RoundNotFinal,
    #[msg("this position was already paid")]
    AlreadyClaimed,
    #[msg("this position is on the losing side: nothing to claim")]
    NotAWinner,
    #[msg("this round is not refundable: it was settled")]
    NotRefundable,
    #[msg("nothing to claim")]
    NothingToClaim,
    #[msg("claim the winnings or refund of this position before closing it")]
    ClaimFirst,
    #[msg("positions of this round are still open")]
    PositionsOpen,
    #[msg("remaining accounts must be (round, position) pairs of this market and this wallet, writable")]
    BadClaimAccounts,
    #[msg("a token market needs the user's token account and the token program")]
    TokenAccountsMissing,
    #[msg("the token account's mint or owner is wrong")]
    WrongTokenAccount,
    #[msg("the vault holds less than it owes")]
    VaultShort,
    #[msg("the treasury is owed less than requested")]
    TreasuryShort,
    #[msg("only the proposed authority may accept")]
    NotPendingAuthority,
    #[msg("the rent receiver must be the round's payer")]
    WrongRentReceiver,
    #[msg("bet_cutoff must be at least 10 seconds and less than one interval")]
    BadBetCutoff,
    #[msg("settler_reward_bps is above half of the fee (5000)")]
    SettlerRewardTooHigh,
    #[msg("the price is not final yet: no transmission stamped after the timestamp is on chain")]
    PriceNotFinal,
    #[msg("the feed is flagged by its validator: its answer is not used until the flag is lowered")]
    FeedFlagged,
    #[msg("the feed's owner or writer is not the one the admin approved")]
    FeedChanged,
    #[msg("the round's fee is above the bettor's maximum")]
    FeeAboveLimit,
    #[msg("only the program's upgrade authority may create the configuration")]
    NotUpgradeAuthority,
    #[msg("only the proposed admin may accept")]
    NotPendingAdmin,
    #[msg("the destination is the market's vault")]
    VaultAsDestination,
    #[msg("a neighbouring round still needs this round's price record: close it once that round is locked or final")]
    NeighbourPending,
    // ---- the forecast registry ----
    #[msg("reveal_window must be between 1 second and 30 days")]
    BadRevealWindow,
    #[msg("the round account is not the round of this market and epoch")]
    WrongRound,
    #[msg("too late to commit: commitments close with the round's betting, bet_cutoff seconds before the lock")]
    CommitTooLate,
    #[msg("this commitment was already revealed or expired")]
    AlreadyFinal,
    #[msg("the revealed forecast and salt do not hash to the commitment")]
    CommitmentMismatch,
    #[msg("probability_up_bps must be at most 10000 and agree with the direction (up: >= 5000, down: <= 5000)")]
    InconsistentForecast,
    #[msg("the round's outcome is not final yet: reveal once it is settled, cancelled or past its settle window")]
    OutcomeNotFinal,
    #[msg("the reveal window is still open: the commitment cannot be expired yet")]
    RevealWindowOpen,
    #[msg("the reveal window has closed: the commitment counts as expired")]
    RevealWindowClosed,
    #[msg("the publisher has 1024 open commitments and none is past its reveal deadline")]
    TooManyOpen,
    #[msg("forecasts committed on this round may still be revealed: close it after their reveal deadline")]
    RevealPending,
    #[msg("the publisher's open list has no entry for this commitment's deadline (broken invariant)")]
    OpenListMismatch,
    #[msg("the round has no outcome because nobody settled it while its prices could be read (settle window expired, or the feed's history no longer covers it): the forecast cannot be revealed and counts as expired at its deadline")]
    OutcomeMissed,
    #[msg("the commitment may still be revealed: close it once it is revealed or past its reveal deadline")]
    CommitmentOpen,
    #[msg("cluster must be the cluster's genesis hash, not all zeros")]
    ZeroCluster,
}
