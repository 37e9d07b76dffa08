//! Accounts.

use anchor_lang::prelude::*;

use crate::error::MarketError;

/// Basis-point denominator.
pub const BPS: u64 = 10_000;
/// Treasury fee cap: 10% of a round's pool.
pub const MAX_FEE_BPS: u16 = 1_000;
/// Shortest round interval (seconds).
pub const MIN_INTERVAL: u32 = 60;
/// Longest round interval (seconds).
pub const MAX_INTERVAL: u32 = 7 * 86_400;
/// Longest settle window (seconds).
pub const MAX_SETTLE_WINDOW: u32 = 30 * 86_400;
/// Longest accepted price age (seconds).
pub const MAX_PRICE_AGE: u32 = 86_400;
/// Shortest report delay (seconds): the crank never reads a timestamp's price sooner than this after it.
pub const MIN_REPORT_DELAY: u32 = 10;
/// Shortest betting cutoff (seconds before the lock): the cluster clock bets are timed by may lag the oracles'
/// observation time that prices are stamped with.
pub const MIN_BET_CUTOFF: u32 = 10;
/// Settler reward cap: half of the treasury fee (as `KronosMarket.MAX_SETTLER_REWARD_BPS` on EVM).
pub const MAX_SETTLER_REWARD_BPS: u16 = 5_000;

/// The Chainlink OCR2 store program that owns every Chainlink data-feed account on Solana (mainnet and devnet).
pub const CHAINLINK_STORE: Pubkey = pubkey!("HEvSKofvBgfaexv23kMabbYqxasxU3mQ4ibBMEmJWHny");

pub const MARKET_SEED: &[u8] = b"market";
pub const VAULT_SEED: &[u8] = b"vault";
pub const ROUND_SEED: &[u8] = b"round";
pub const POSITION_SEED: &[u8] = b"position";
pub const CONFIG_SEED: &[u8] = b"config";
pub const FEED_SEED: &[u8] = b"feed";

/// Parameters a round takes from its market when it starts; changing them affects rounds not started yet.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub struct Params {
    /// Treasury fee in basis points of a settled round's pool (at most [`MAX_FEE_BPS`]).
    pub fee_bps: u16,
    /// Smallest bet, in stake base units (lamports or token units).
    pub min_bet: u64,
    /// Oldest a Chainlink answer may be at the lock or close timestamp (seconds).
    pub max_price_age: u32,
    /// How long after its close a round may still be settled; after that it is refunded (seconds).
    pub settle_window: u32,
    /// How long after a lock or close timestamp the crank waits before reading the price (seconds, from
    /// [`MIN_REPORT_DELAY`] to one interval). The price is read only once a transmission stamped after the
    /// timestamp is on chain as well.
    pub report_delay: u32,
    /// Bets close this many seconds before the lock (from [`MIN_BET_CUTOFF`] to less than one interval).
    pub bet_cutoff: u32,
    /// Share of the treasury fee paid to whoever settles a round, in basis points of the fee (at most
    /// [`MAX_SETTLER_REWARD_BPS`]).
    pub settler_reward_bps: u16,
}

impl Params {
    /// Checks the parameters against the program's limits for a market of `interval` seconds.
    pub fn validate(&self, interval: u32) -> Result<()> {
        require!(self.fee_bps <= MAX_FEE_BPS, MarketError::FeeTooHigh);
        require!(self.min_bet > 0, MarketError::ZeroMinBet);
        require!(self.max_price_age > 0 && self.max_price_age <= MAX_PRICE_AGE, MarketError::BadPriceAge);
        require!(
            self.settle_window >= interval && self.settle_window <= MAX_SETTLE_WINDOW,
            MarketError::BadSettleWindow
        );
        require!(self.report_delay >= MIN_REPORT_DELAY && self.report_delay <= interval, MarketError::BadReportDelay);
        require!(self.bet_cutoff >= MIN_BET_CUTOFF && self.bet_cutoff < interval, MarketError::BadBetCutoff);
        require!(self.settler_reward_bps <= MAX_SETTLER_REWARD_BPS, MarketError::SettlerRewardTooHigh);
        Ok(())
    }
}

/// A market: one Chainlink feed, one clock, one stake (native SOL or one SPL token).
#[account]
#[derive(InitSpace, Debug)]
pub struct Market {
    /// Who created the market (part of its address; never changes).
    pub creator: Pubkey,
    /// The creator's number for this market (part of its address).
    pub id: u64,
    /// Who may pause, change parameters and withdraw the treasury.
    pub authority: Pubkey,
    /// The authority proposed by [`crate::kronos_market::propose_authority`], until it accepts.
    pub pending_authority: Option<Pubkey>,
    /// The Chainlink feed account (owned by [`CHAINLINK_STORE`], approved by the program's [`Config`] admin).
    pub feed: Pubkey,
    /// The feed header's owner and writer when the feed was approved; a feed whose owner or writer changes since
    /// stops settling (its rounds are refunded).
    pub feed_owner: Pubkey,
    pub feed_writer: Pubkey,
    /// The feed's decimals when the market was created; a feed that changes them stops settling.
    pub decimals: u8,
    /// The stake mint; `Pubkey::default()` for native SOL.
    pub mint: Pubkey,
    /// The vault (PDA `["vault", market]`): a program-owned account for SOL, a token account for SPL stakes.
    pub vault: Pubkey,
    /// Start of epoch 0 (unix seconds).
    pub genesis: i64,
    /// Round length (seconds): epoch `e` takes bets from `genesis + e * interval` until the next boundary, locks
    /// there and closes one interval later.
    pub interval: u32,
    /// Parameters of the rounds of epochs before `pending_from` (or of every epoch when nothing is pending).
    pub params: Params,
    /// Parameters set by `update_params`, for rounds of epoch `pending_from` and later.
    pub pending_params: Option<Params>,
    /// The first epoch that takes `pending_params`: the first whose start was still in the future when they were set.
    pub pending_from: u64,
    /// Bets are refused while paused; the crank, claims and refunds keep working.
    pub paused: bool,
    /// Fees owed to the treasury (stake base units).
    pub treasury_owed: u64,
    /// The market PDA's bump (it signs token payouts).
    pub bump: u8,
}

impl Market {
    pub fn is_native(&self) -> bool {
        self.mint == Pubkey::default()
    }

    /// Start, lock and close timestamps of `epoch`.
    pub fn times(&self, epoch: u64) -> Result<(i64, i64, i64)> {
        let iv = self.interval as i64;
        let start = i64::try_from(epoch)
            .ok()
            .and_then(|e| e.checked_mul(iv))
            .and_then(|o| o.checked_add(self.genesis))
            .ok_or(MarketError::MathOverflow)?;
        let lock = start.checked_add(iv).ok_or(MarketError::MathOverflow)?;
        let close = lock.checked_add(iv).ok_or(MarketError::MathOverflow)?;
        Ok((start, lock, close))
    }

    /// The first epoch whose start is after `now`.
    pub fn next_epoch(&self, now: i64) -> u64 {
        if now < self.genesis {
            return 0;
        }
        ((now - self.genesis) / self.interval as i64) as u64 + 1
    }

    /// The parameters of epoch `epoch`'s round.
    pub fn params_for(&self, epoch: u64) -> Params {
        match self.pending_params {
            Some(p) if epoch >= self.pending_from => p,
            _ => self.params,
        }
    }

    /// Makes pending parameters current once epoch `epoch` (which takes them) has begun.
    pub fn promote(&mut self, epoch: u64) {
        if let Some(p) = self.pending_params {
            if epoch >= self.pending_from {
                self.params = p;
                self.pending_params = None;
            }
        }
    }
}

/// The program's configuration (PDA `["config"]`): who approves feeds. Created once by the program's upgrade
/// authority.
#[account]
#[derive(InitSpace, Debug)]
pub struct Config {
    /// Approves and revokes feeds; may hand the role over in two steps.
    pub admin: Pubkey,
    pub pending_admin: Option<Pubkey>,
    pub bump: u8,
}

/// A feed the admin approved for markets (PDA `["feed", feed]`): only markets on approved feeds can be created.
#[account]
#[derive(InitSpace, Debug)]
pub struct FeedApproval {
    pub feed: Pubkey,
    /// The feed header's owner and writer when approved (markets pin them).
    pub owner: Pubkey,
    pub writer: Pubkey,
    pub decimals: u8,
    pub description: [u8; 32],
    pub bump: u8,
}

/// The SOL vault: holds the stakes of a native-SOL market as lamports above its rent-exempt minimum.
#[account]
#[derive(InitSpace, Debug)]
pub struct SolVault {
    pub market: Pubkey,
}

#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum Side {
    Up,
    Down,
}

#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum RoundStatus {
    /// Taking bets until its lock timestamp.
    Open,
    /// Lock price recorded; waiting for the close.
    Locked,
    /// Winners share the pool after the fee.
    Settled,
    /// Every stake is refunded.
    Cancelled,
}

#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum Outcome {
    None,
    Up,
    Down,
    Tie,
}

#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum CancelReason {
    None,
    /// The feed's live history no longer (or not yet) covers the lock timestamp.
    LockPriceUnavailable,
    /// The answer in effect at the lock was older than `max_price_age`.
    LockPriceStale,
    /// The answer in effect at the close could not be read.
    ClosePriceUnavailable,
    /// The answer in effect at the close was older than `max_price_age`.
    ClosePriceStale,
    /// A non-positive answer, or a feed whose decimals changed.
    BadAnswer,
    /// Close price equals lock price.
    Tie,
    /// One side of the pool was empty.
    OneSidedPool,
    /// Nobody settled the round within its settle window.
    Expired,
    /// The feed's owner or writer is no longer the one approved when the market was created.
    FeedChanged,
}

/// One round of a market (PDA `["round", market, epoch_le]`).
#[account]
#[derive(InitSpace, Debug)]
pub struct Round {
    pub market: Pubkey,
    pub epoch: u64,
    pub start_ts: i64,
    pub lock_ts: i64,
    pub close_ts: i64,
    /// The market's parameters when the round started.
    pub params: Params,
    pub status: RoundStatus,
    pub outcome: Outcome,
    pub cancel_reason: CancelReason,
    pub up_amount: u64,
    pub down_amount: u64,
    /// The fee booked to the treasury at settlement.
    pub fee: u64,
    /// What the winners share (pool minus fee).
    pub reward_amount: u64,
    pub lock_price: i128,
    pub close_price: i128,
    /// Timestamps of the Chainlink transmissions in effect at the lock and the close, once read (0 before, -1 when
    /// the feed's history no longer covered the timestamp). Set even when the round is then cancelled (stale or bad
    /// answer), so the round that shares the timestamp uses the same record.
    pub lock_price_ts: i64,
    pub close_price_ts: i64,
    /// Paid from the fee to whoever settled the round.
    pub settler_reward: u64,
    /// Paid out so far (winnings and refunds).
    pub paid: u64,
    /// Position accounts still open for this round; the round closes when none are left.
    pub positions: u32,
    /// Who paid the round's rent (gets it back when the round is closed).
    pub payer: Pubkey,
    /// The reveal deadline of the forecasts committed on this round (0 when none): the round, whose outcome scores
    /// them, is not closed before it (see [`crate::registry`]).
    pub reveal_until: i64,
    pub bump: u8,
}

impl Round {
    /// Round `epoch` of `market` just started: open, its times `(start, lock, close)` and the parameters it runs
    /// under fixed, nothing staked or priced yet, its rent paid by `payer`.
    pub fn opened(
        market: Pubkey,
        epoch: u64,
        times: (i64, i64, i64),
        params: Params,
        payer: Pubkey,
        bump: u8,
    ) -> Round {
        let (start_ts, lock_ts, close_ts) = times;
        Round {
            market,
            epoch,
            start_ts,
            lock_ts,
            close_ts,
            params,
            status: RoundStatus::Open,
            outcome: Outcome::None,
            cancel_reason: CancelReason::None,
            up_amount: 0,
            down_amount: 0,
            fee: 0,
            reward_amount: 0,
            lock_price: 0,
            close_price: 0,
            lock_price_ts: 0,
            close_price_ts: 0,
            settler_reward: 0,
            paid: 0,
            positions: 0,
            payer,
            reveal_until: 0,
            bump,
        }
    }

    /// The round's own part of `close_round`'s rule at `now`: final (or past its settle window), no position left
    /// open, past the reveal deadline of the forecasts committed on it (a forecast is scored from it: nobody may
    /// close it to stop a reveal).
    pub fn closable_alone(&self, now: i64) -> Result<()> {
        require!(self.is_final(now), MarketError::RoundNotFinal);
        require!(self.positions == 0, MarketError::PositionsOpen);
        require!(now > self.reveal_until, MarketError::RevealPending);
        Ok(())
    }

    /// The neighbours' part of `close_round`'s rule at `now` (`None`: the account does not exist): a round's price
    /// records must outlive the neighbours that may still read them, the previous round until it has read its close
    /// (this round's lock), the next until it has read its lock (this round's close). A missing neighbour can no
    /// longer start: the previous one's window ended before this round began, and this round can only have read its
    /// close after the next one's lock.
    pub fn neighbours_allow_close(prev: Option<&Round>, next: Option<&Round>, now: i64) -> Result<()> {
        require!(prev.is_none_or(|p| p.is_final(now)), MarketError::NeighbourPending);
        require!(next.is_none_or(|n| n.status != RoundStatus::Open || n.is_final(now)), MarketError::NeighbourPending);
        Ok(())
    }

    /// Past the settle window without having been settled or cancelled.
    pub fn expired(&self, now: i64) -> bool {
        matches!(self.status, RoundStatus::Open | RoundStatus::Locked)
            && now > self.close_ts.saturating_add(self.params.settle_window as i64)
    }

    /// Whether the round is final: settled, cancelled, or past its settle window.
    pub fn is_final(&self, now: i64) -> bool {
        matches!(self.status, RoundStatus::Settled | RoundStatus::Cancelled) || self.expired(now)
    }

    pub fn total(&self) -> Result<u64> {
        self.up_amount.checked_add(self.down_amount).ok_or_else(|| MarketError::MathOverflow.into())
    }
}

/// A user's stake in one round (PDA `["position", round, user]`). One side per round; top-ups allowed.
#[account]
#[derive(InitSpace, Debug)]
pub struct Position {
    pub round: Pubkey,
    pub user: Pubkey,
    pub side: Side,
    pub amount: u64,
    pub claimed: bool,
    pub bump: u8,
}

/// What a position is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The round is not final yet.
    Pending,
    /// Winnings.
    Win(u64),
    /// The stake back.
    Refund(u64),
    /// Nothing (lost, already paid, or empty).
    Nothing,
}

/// What `pos` is owed from `round` at `now`.
pub fn due(round: &Round, pos: &Position, now: i64) -> Result<Due> {
    if pos.claimed || pos.amount == 0 {
        return Ok(Due::Nothing);
    }
    if round.expired(now) {
        return Ok(Due::Refund(pos.amount));
    }
    Ok(match round.status {
        RoundStatus::Open | RoundStatus::Locked => Due::Pending,
        RoundStatus::Cancelled => Due::Refund(pos.amount),
        RoundStatus::Settled => {
            let winner = if round.outcome == Outcome::Up { Side::Up } else { Side::Down };
            if pos.side != winner {
                Due::Nothing
            } else {
                let pool = if winner == Side::Up { round.up_amount } else { round.down_amount };
                let amt = (pos.amount as u128)
                    .checked_mul(round.reward_amount as u128)
                    .and_then(|x| x.checked_div(pool as u128))
                    .ok_or(MarketError::MathOverflow)?;
                let amt = u64::try_from(amt).map_err(|_| MarketError::MathOverflow)?;
                if amt == 0 {
                    Due::Nothing
                } else {
                    Due::Win(amt)
                }
            }
        }
    })
}
