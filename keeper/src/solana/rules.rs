//! The Solana driver's pure decisions, each unit-tested: what a round needs next (mirroring the program's own
//! timing rules in `instructions/crank.rs`), the compute-unit limit and price, the send loop's next step, the
//! program's errors by variant, and whether a market's feed may be trusted.

use std::time::Duration;

use anchor_lang::prelude::Pubkey;
use kronos_market::error::MarketError;
use kronos_market::state::{Market, Round, RoundStatus};
use solana_instruction::error::InstructionError;
use solana_transaction_error::TransactionError;

/// What a round of a market needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `start_round(epoch)`: its start has come and its lock has not.
    Start(u64),
    /// `lock_round(epoch)`: the lock price is final and readable.
    Lock(u64),
    /// `settle_round(epoch)` (locks the round first when nobody did): the close price is final.
    Settle(u64),
    /// `settle_round(epoch)` on a round past its settle window: the program cancels it (`Expired`), every stake
    /// refundable.
    Refund(u64),
    /// `close_round(epoch)`: a final round the keeper started, its rent back to the keeper ([`closable`]).
    Close(u64),
    /// Nothing to send until then.
    Wait(Until),
    /// Nothing will ever be needed: final, or past its lock without having been started.
    Done,
}

/// What a waiting round waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The cluster clock (unix seconds) reaching this time.
    Time(i64),
    /// A transmission stamped after this timestamp on the feed (the program's `PriceNotFinal` until then), or the
    /// round's settle window running out.
    Transmission(i64),
    /// The market's authority unpausing it: a paused market takes no bets, so the keeper starts no round (whose
    /// rent it would pay for nothing; audit SOL H3). Rounds already started are still locked and settled.
    Unpaused,
}

/// What epoch `epoch` of market `m` needs at cluster time `now`, given its round account (`None`: not created) and
/// `final_at(t)`: whether the price in effect at `t` can be read now — a transmission stamped after `t` is on the
/// feed (and the feed is not flagged), or the neighbouring round already recorded `t` (the program's rule).
pub fn next_action(m: &Market, epoch: u64, round: Option<&Round>, now: i64, final_at: &dyn Fn(i64) -> bool) -> Action {
    let Some(r) = round else {
        let Ok((start, lock, _)) = m.times(epoch) else { return Action::Done };
        return if now < start {
            Action::Wait(Until::Time(start))
        } else if now < lock && m.paused {
            Action::Wait(Until::Unpaused)
        } else if now < lock {
            Action::Start(epoch)
        } else {
            Action::Done
        };
    };
    match r.status {
        RoundStatus::Settled | RoundStatus::Cancelled => return Action::Done,
        RoundStatus::Open | RoundStatus::Locked => {}
    }
    if r.expired(now) {
        return Action::Refund(epoch);
    }
    let delay = r.params.report_delay as i64;
    let close_ready = now >= r.close_ts.saturating_add(delay);
    if r.status == RoundStatus::Open {
        let lock_ready = now >= r.lock_ts.saturating_add(delay);
        if !lock_ready {
            return Action::Wait(Until::Time(r.lock_ts.saturating_add(delay)));
        }
        if !final_at(r.lock_ts) {
            return Action::Wait(Until::Transmission(r.lock_ts));
        }
        // One settle does both steps once the close is final too.
        if close_ready && final_at(r.close_ts) {
            return Action::Settle(epoch);
        }
        return Action::Lock(epoch);
    }
    if !close_ready {
        return Action::Wait(Until::Time(r.close_ts.saturating_add(delay)));
    }
    if !final_at(r.close_ts) {
        return Action::Wait(Until::Transmission(r.close_ts));
    }
    Action::Settle(epoch)
}

/// How long a step refused `failures` times in a row (a program error, a node's error) waits before it is tried
/// again: not at all after the first, then `poll` doubling, at most five minutes (audit SOL M7: each try may cost a
/// fee, and every pass tried again).
pub fn retry_after(failures: u32, poll: std::time::Duration) -> std::time::Duration {
    if failures <= 1 {
        return std::time::Duration::ZERO;
    }
    poll.saturating_mul(1u32 << (failures - 1).min(16)).min(std::time::Duration::from_secs(300))
}

/// The longest a step waits after the program said "not yet" (audit L3): the keeper's own read said it was due,
/// so a lagging node answered the simulation; backing off up to [`retry_after`]'s five minutes could let a short
/// settle window pass and the round be refunded.
pub const NOT_YET_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a step refused `failures` times in a row waits, the last refusal being `t`: [`retry_after`], capped at
/// [`NOT_YET_MAX_WAIT`] (or one poll, if longer) after a "not yet".
pub fn retry_wait(t: Tried, failures: u32, poll: std::time::Duration) -> std::time::Duration {
    let wait = retry_after(failures, poll);
    match t {
        Tried::NotYet => wait.min(NOT_YET_MAX_WAIT.max(poll)),
        _ => wait,
    }
}

/// What a send came to, as far as the retry back-off is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tried {
    /// Confirmed.
    Done,
    /// The program said someone else did it.
    AlreadyDone,
    /// The program said its time has not come.
    NotYet,
    /// Its blockhash expired before it landed: the next pass re-reads the round and signs again if still needed.
    Expired,
    /// Any other error.
    Failed,
}

/// What a send's result does to the step's back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The step is done: forget its failures.
    Clear,
    /// One more refusal in a row: wait [`retry_after`] before the next try.
    Count,
    /// Neither (a dropped transaction says nothing of the step): the count stays.
    Keep,
}

/// Only a confirmed step clears its back-off (audit AUDIT-2 A3): a program's "already done" or "not yet" is a
/// refusal like any other — a node with a lying clock or a stale view answers it in simulation again and again, and
/// one that lands costs a fee — so it counts, and the step is tried less and less often until the round's state,
/// read again each pass, no longer asks for it.
pub fn backoff_after(t: Tried) -> Backoff {
    match t {
        Tried::Done => Backoff::Clear,
        Tried::AlreadyDone | Tried::NotYet | Tried::Failed => Backoff::Count,
        Tried::Expired => Backoff::Keep,
    }
}

/// Whether an error of `kind` on a step is alerted (a `TxFailed` signal, which Telegram forwards): once per kind,
/// until the step succeeds (`last_alerted` is then cleared), so a permanent error is told once, not every pass
/// (audit SOL L4); a new kind of error is told again.
pub fn alert_now(last_alerted: Option<&str>, kind: &str) -> bool {
    last_alerted != Some(kind)
}

/// The most epochs [`live_epochs`] reads each pass (20 `getMultipleAccounts` of 100). The look-back itself comes from
/// the market ([`lookback`]: the settle window over the interval; audit SOL M6, AUDIT-2 A5); a market that needs
/// more is refused new rounds ([`lookback_refusal`]) — its running rounds are still read, this many back.
pub const MAX_LOOKBACK: u64 = 2_000;

/// How many epochs back a round of `m` may still be open or settleable: two intervals from its start to its close,
/// then the settle window (the larger of the current and the pending parameters').
pub fn lookback(m: &Market) -> u64 {
    let iv = m.interval.max(1) as u64;
    let window = m.pending_params.map_or(0, |p| p.settle_window).max(m.params.settle_window) as u64;
    2 + window.div_ceil(iv)
}

/// Why the keeper starts no round of `m`, if its settle window is longer than the keeper reads back each pass.
pub fn lookback_refusal(m: &Market) -> Option<String> {
    let need = lookback(m);
    (need > MAX_LOOKBACK).then(|| {
        format!(
            "its settle window spans {need} rounds; the keeper reads at most {MAX_LOOKBACK} back each pass, so it \
             could not settle every round it starts"
        )
    })
}

/// Whether `close_round` on round `r` now returns its rent to `payer`: `payer` started it, and the program's own rule
/// holds ([`Round::closable_alone`] and [`Round::neighbours_allow_close`], `None`: the neighbour does not exist).
pub fn closable(r: &Round, prev: Option<&Round>, next: Option<&Round>, now: i64, payer: &Pubkey) -> bool {
    r.payer == *payer && r.closable_alone(now).is_ok() && Round::neighbours_allow_close(prev, next, now).is_ok()
}

/// The epochs worth looking at at `now`: from the oldest one whose round may still be open (its close plus the
/// settle window not yet passed, bounded by `lookback`) to the epoch taking bets now.
pub fn live_epochs(m: &Market, now: i64, max: u64) -> std::ops::RangeInclusive<u64> {
    let current = m.next_epoch(now).saturating_sub(1);
    // A round closes two intervals after its start and may be settled for `settle_window` after that.
    current.saturating_sub(lookback(m).min(max))..=current
}

/// Where a `Round` account holds the fields the keeper filters its rounds by (`getProgramAccounts` memcmp, AUDIT-2
/// A1): found by serialising a round with marked values, so that no layout is copied by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundOffsets {
    pub market: usize,
    pub positions: usize,
    pub payer: usize,
}

impl RoundOffsets {
    pub fn get() -> RoundOffsets {
        use anchor_lang::AccountSerialize;
        let (market, payer) = (Pubkey::new_from_array([0x5A; 32]), Pubkey::new_from_array([0xA5; 32]));
        let params = kronos_market::state::Params {
            fee_bps: 0,
            min_bet: 0,
            max_price_age: 0,
            settle_window: 0,
            report_delay: 0,
            bet_cutoff: 0,
            settler_reward_bps: 0,
        };
        let mut r = Round::opened(market, 0, (0, 0, 0), params, payer, 0);
        r.positions = 0xC3C3_C3C3;
        let mut data = Vec::new();
        r.try_serialize(&mut data).expect("a Round serialises");
        let at = |bytes: &[u8]| data.windows(bytes.len()).position(|w| w == bytes).expect("a marked field is there");
        RoundOffsets { market: at(market.as_ref()), positions: at(&[0xC3; 4]), payer: at(payer.as_ref()) }
    }
}

/// Why a final round the keeper paid for still holds its rent (AUDIT-2 A1), or `None` when `close_round` returns
/// it now ([`closable`]). Only its users may close their positions (`close_position` needs the user's signature, and
/// the keeper claims nothing on anyone's behalf), so a round with open positions holds its rent until they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Not final yet (or a neighbour still needs its price records).
    Running,
    /// This many positions are still open: only their owners can close them.
    Positions(u32),
    /// A forecast committed on it may be revealed until then (unix seconds).
    Reveal(i64),
}

/// What holds round `r`'s rent at `now` ([`Held`]), `None` when it can be closed now by `payer`; `None` too for a
/// round someone else paid for (not the keeper's rent). `prev`/`next`: the neighbouring rounds (`None`: absent).
pub fn held(r: &Round, prev: Option<&Round>, next: Option<&Round>, now: i64, payer: &Pubkey) -> Option<Held> {
    if r.payer != *payer || closable(r, prev, next, now, payer) {
        return None;
    }
    Some(if !r.is_final(now) || Round::neighbours_allow_close(prev, next, now).is_err() {
        Held::Running
    } else if r.positions > 0 {
        Held::Positions(r.positions)
    } else {
        Held::Reveal(r.reveal_until)
    })
}

/// The smallest compute-unit limit the keeper asks for (program-test's native builtins report ~1 CU, and the
/// compute-budget instructions themselves cost some on a cluster).
pub const MIN_CU: u32 = 20_000;
/// The most a transaction may ask for.
pub const MAX_CU: u32 = 1_400_000;

/// Compute-unit limit from a simulation: `simulated × (100 + margin) / 100`, rounded up, within
/// [`MIN_CU`]..=[`MAX_CU`].
pub fn compute_units(simulated: u64, margin_percent: u8) -> u32 {
    let want = (simulated as u128 * (100 + margin_percent as u128)).div_ceil(100);
    want.clamp(MIN_CU as u128, MAX_CU as u128) as u32
}

/// Compute-unit price (micro-lamports per CU): the `percentile` (nearest rank) of the recent prioritization fees,
/// at most `cap`; 0 when no fees are known.
pub fn cu_price(recent: &[u64], percentile: u8, cap: u64) -> u64 {
    if recent.is_empty() {
        return 0;
    }
    let mut v = recent.to_vec();
    v.sort_unstable();
    let p = percentile.min(100) as usize;
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1].min(cap)
}

/// A sent transaction's signature status as the send loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigStatus {
    /// Unknown to the node (not landed, or dropped).
    Unknown,
    /// Landed, not yet at `confirmed`.
    Processed,
    /// Landed and confirmed (or finalized), with its result.
    Confirmed(Option<TransactionError>),
}

/// The send loop's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendStep {
    /// Poll again.
    Wait,
    /// Send the same signed transaction again (`maxRetries = 0`: the node does not retry by itself).
    Rebroadcast,
    /// Its blockhash can no longer land: check the action is still needed, then sign again with a fresh one.
    ReSign,
    Confirmed,
    /// Landed with this error.
    Failed(TransactionError),
}

/// The next step for a transaction sent with a blockhash valid until `last_valid_block_height`, at block height
/// `height`, `since_send_s` seconds after it was last broadcast. Only the block height passing
/// `last_valid_block_height` ends it: a node's `isBlockhashValid == false` does not (a lagging or hostile node says
/// so while the transaction can still land; audit SOL M2), so no second transaction is signed before then.
pub fn send_step(
    status: &SigStatus,
    height: u64,
    last_valid_block_height: u64,
    since_send_s: u64,
    rebroadcast_s: u64,
) -> SendStep {
    match status {
        SigStatus::Confirmed(None) => SendStep::Confirmed,
        SigStatus::Confirmed(Some(e)) => SendStep::Failed(e.clone()),
        SigStatus::Processed => SendStep::Wait,
        SigStatus::Unknown if height > last_valid_block_height => SendStep::ReSign,
        SigStatus::Unknown if since_send_s >= rebroadcast_s => SendStep::Rebroadcast,
        SigStatus::Unknown => SendStep::Wait,
    }
}

/// What a program error means for the action that met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Someone else already did it (started, locked, settled): success.
    AlreadyDone,
    /// Its time has not come (clock or feed): try again later.
    NotYet,
    /// The market's feed no longer has its pinned owner or writer: refuse the market.
    FeedChanged,
    /// Anything else: an error, named.
    Other(String),
}

fn code(e: MarketError) -> u32 {
    u32::from(e)
}

/// Classifies the error of instruction `ix_index` (the program instruction's position in the transaction) for
/// `action`, by variant: `MarketError` codes through anchor's custom error number, the system program's
/// `AccountAlreadyInUse` for a round someone else created.
pub fn classify(action: Action, e: &TransactionError) -> ErrorClass {
    let TransactionError::InstructionError(_, InstructionError::Custom(c)) = e else {
        return ErrorClass::Other(format!("{e:?}"));
    };
    let c = *c;
    let is = |v: MarketError| c == code(v);
    match action {
        Action::Start(_) if c == solana_system_interface::error::SystemError::AccountAlreadyInUse as u32 => {
            ErrorClass::AlreadyDone
        }
        Action::Lock(_) if is(MarketError::RoundNotOpen) || is(MarketError::RoundFinal) => ErrorClass::AlreadyDone,
        Action::Settle(_) | Action::Refund(_) if is(MarketError::RoundFinal) => ErrorClass::AlreadyDone,
        // Closed already: the round account is gone.
        Action::Close(_) if c == anchor_lang::error::ErrorCode::AccountNotInitialized as u32 => ErrorClass::AlreadyDone,
        _ if is(MarketError::TooEarly)
            || is(MarketError::PriceNotFinal)
            || is(MarketError::FeedFlagged)
            || is(MarketError::RoundNotStarted) =>
        {
            ErrorClass::NotYet
        }
        _ if is(MarketError::FeedChanged) => ErrorClass::FeedChanged,
        _ => ErrorClass::Other(market_error_name(c).map_or_else(|| format!("custom error {c}"), str::to_string)),
    }
}

/// The `MarketError` variant's name for a custom error code, for logs.
pub fn market_error_name(c: u32) -> Option<&'static str> {
    use MarketError as E;
    let known = [
        (E::TooLateToStart, "TooLateToStart"),
        (E::RoundNotOpen, "RoundNotOpen"),
        (E::RoundFinal, "RoundFinal"),
        (E::TooEarly, "TooEarly"),
        (E::PriceNotFinal, "PriceNotFinal"),
        (E::FeedFlagged, "FeedFlagged"),
        (E::FeedChanged, "FeedChanged"),
        (E::RoundNotStarted, "RoundNotStarted"),
        (E::BadFeedAccount, "BadFeedAccount"),
        (E::WrongFeedOwner, "WrongFeedOwner"),
        (E::VaultShort, "VaultShort"),
        (E::MathOverflow, "MathOverflow"),
    ];
    known.into_iter().find(|(v, _)| code(*v) == c).map(|(_, n)| n)
}

/// Why the keeper refuses to drive a market (issue 20, item 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The feed has no `FeedApproval` (never approved, or revoked and the market was pinned to nothing).
    NotApproved,
    /// The feed header's owner or writer is not the one the market pinned.
    Changed { what: &'static str },
    /// The feed account is missing or not a Chainlink v2 feed of the store program.
    BadFeed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotApproved => f.write_str("the feed has no FeedApproval: its prices are not trusted"),
            Refusal::Changed { what } => {
                write!(f, "the feed's {what} is no longer the one pinned at approval: its prices are not trusted")
            }
            Refusal::BadFeed(why) => write!(f, "the feed account is unusable: {why}"),
        }
    }
}

/// Whether the market's feed may be trusted: it has an approval, and the feed header's current owner and writer
/// are the ones the market pinned. `approval` is the `FeedApproval`'s (owner, writer) if the account exists;
/// `header` the feed header's (owner, writer).
pub fn check_feed(
    pinned: (Pubkey, Pubkey),
    approval: Option<(Pubkey, Pubkey)>,
    header: (Pubkey, Pubkey),
) -> Result<(), Refusal> {
    if approval.is_none() {
        return Err(Refusal::NotApproved);
    }
    if header.0 != pinned.0 {
        return Err(Refusal::Changed { what: "owner" });
    }
    if header.1 != pinned.1 {
        return Err(Refusal::Changed { what: "writer" });
    }
    Ok(())
}

/// How many slots an endpoint that answers may be behind the freshest configured one before the keeper moves to a
/// fresher one: 32 slots, about 13 s at 400 ms a slot. Healthy nodes differ by a few slots (their confirmed slots
/// are sampled at slightly different moments and votes reach them at different times), so 32 never moves the keeper
/// for jitter; yet a node that far behind shows rounds as they were 13 s ago — longer than a market's report delay
/// (10 s in the shipped markets) — and refuses every read and simulation that carries the keeper's `minContextSlot`
/// (a JSON-RPC error, which is an answer, so the transport failover never leaves it). Agave's own `getHealth` calls
/// a node unhealthy only at 128 slots (about 51 s) behind, too late for a lock or settle due within seconds.
pub const MAX_SLOTS_BEHIND: u64 = 32;

/// How far an endpoint's slot may lead the median of the other endpoints' slots before it is taken for a lie: 1 500
/// slots, about 10 min. A node on the cluster cannot be ahead of the cluster; one that claims to be (a buggy or
/// malicious provider) would take the keeper to an endpoint whose every read carrying `minContextSlot` fails. A slot
/// above that bound is still believed when the wall clock allows it ([`slot_allowance`] since the last check's best
/// plausible slot): the others then stalled, the candidate did not jump.
pub const MAX_PLAUSIBLE_LEAD: u64 = 1_500;

/// How many slots may have passed in `elapsed_ms` of wall time: twice the 400 ms slot rate, plus
/// [`MAX_SLOTS_BEHIND`] for the sampling moments.
pub fn slot_allowance(elapsed_ms: i64) -> u64 {
    u64::try_from(elapsed_ms).unwrap_or(0) / 200 + MAX_SLOTS_BEHIND
}

/// How long a market's pass may stay in flight before the keeper reports it (AUDIT5-SOL M2): 180 s, about twice a
/// blockhash's lifetime (150 blocks, ~60-90 s) — a pass still following its transaction that long is not waiting for
/// it to land but for a status it cannot read, or a block height that does not move.
pub const PASS_STUCK_AFTER: Duration = Duration::from_secs(180);

/// Whether a pass in flight for `age` is reported as stuck ([`PASS_STUCK_AFTER`]).
pub fn pass_stuck(age: Duration) -> bool {
    age > PASS_STUCK_AFTER
}

/// One action (per market) whose transactions keep expiring (AUDIT6-SOL M3): when the first send of its expiries in
/// a row went out (unix ms) and how many expired in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiring {
    pub since_ms: i64,
    pub count: u32,
}

/// An action's expiries in a row after a send that went out at `sent_ms` ended in `t`: an expiry adds one (the first
/// starts the run at `sent_ms`), a confirmed or already done step ends it, a refusal (counted by the back-off and
/// alerted on its own) leaves it as it was.
pub fn expiring_after(prev: Option<Expiring>, t: Tried, sent_ms: i64) -> Option<Expiring> {
    match t {
        Tried::Expired => Some(match prev {
            Some(e) => Expiring { count: e.count.saturating_add(1), ..e },
            None => Expiring { since_ms: sent_ms, count: 1 },
        }),
        Tried::Done | Tried::AlreadyDone => None,
        Tried::NotYet | Tried::Failed => prev,
    }
}

/// Whether an action expiring as `e` is reported as stuck at `now_ms`: it expired at least twice in a row and was
/// first sent more than [`PASS_STUCK_AFTER`] ago. Each of its passes completes (the next one signs again), so
/// [`pass_stuck`] never sees it, while its round drifts to a refund (a fee too low under congestion, a provider
/// whose `sendTransaction` drops it, …).
pub fn expiring_stuck(e: Expiring, now_ms: i64) -> bool {
    let after = i64::try_from(PASS_STUCK_AFTER.as_millis()).unwrap_or(i64::MAX);
    e.count >= 2 && now_ms.saturating_sub(e.since_ms) > after
}

/// What the lag check remembers from one check to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagMemory {
    /// The best plausible slot at the last check that had one, and when (unix ms).
    pub best: Option<(u64, i64)>,
    /// The endpoint in use's last plausible slot.
    pub active_slot: Option<u64>,
    /// Whether the last check already wanted to leave the endpoint in use (a move needs two checks in a row).
    pub wanted: bool,
    /// The endpoint in use that `active_slot` and `wanted` belong to (AUDIT6-SOL L2): when the transport failover
    /// moved the keeper between two checks, they are forgotten, never carried over to another endpoint.
    pub at: Option<usize>,
}

/// Each endpoint's slot, `None` where it is implausible: more than [`MAX_PLAUSIBLE_LEAD`] above the median (the
/// upper one) of the others that answered, unless within [`slot_allowance`] of `prev` (the last check's best
/// plausible slot and its time). The median is judged only when at least 3 endpoints answered (AUDIT6-SOL M1): with
/// two, the "others" are one endpoint, which cannot tell which of the two is wrong — and a stale node (one catching
/// up after a restart) is far likelier than a lying one, so the higher slot is believed (a configuration mistake is
/// the genesis check's, and a move still needs two checks in a row).
pub fn plausible_slots(slots: &[Option<u64>], prev: Option<(u64, i64)>, now_ms: i64) -> Vec<Option<u64>> {
    slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = (*s)?;
            let mut others: Vec<u64> =
                slots.iter().enumerate().filter(|(j, _)| *j != i).filter_map(|(_, o)| *o).collect();
            others.sort_unstable();
            let median = others.get(others.len() / 2).copied().filter(|_| others.len() >= 2);
            let by_others = median.is_none_or(|m| s <= m.saturating_add(MAX_PLAUSIBLE_LEAD));
            let by_clock = prev.is_some_and(|(p, at)| s <= p.saturating_add(slot_allowance(now_ms - at)));
            (by_others || by_clock).then_some(s)
        })
        .collect()
}

/// One lag check: the endpoint to use and what to remember, from each endpoint's latest confirmed slot (`None`: it
/// did not answer), which endpoints may be used at all (`usable`: false for one on another cluster), the index of
/// the one in use and the last check's memory.
/// - Implausible slots ([`plausible_slots`]) and unusable endpoints count as not answering.
/// - An unusable endpoint in use is left at once for the freshest usable one that answered.
/// - Else the endpoint in use is left only when it is more than [`MAX_SLOTS_BEHIND`] behind the freshest, or, when
///   it did not answer, only for one not behind its last known slot (one missed `getSlot` never moves the keeper to a
///   lagging node: a dead endpoint is the transport failover's), and only when the last check wanted to leave it
///   too (one odd reading never moves the keeper). It moves to the freshest (the first of equals, in the configured
///   order).
pub fn lag_step(
    slots: &[Option<u64>],
    usable: &[bool],
    active: usize,
    mem: LagMemory,
    now_ms: i64,
) -> (usize, LagMemory) {
    let ok = |i: usize| usable.get(i).copied().unwrap_or(true);
    // AUDIT6-SOL L2: what was remembered of another endpoint in use (the transport failover moved) is forgotten.
    let mem =
        if mem.at == Some(active) { mem } else { LagMemory { active_slot: None, wanted: false, at: None, ..mem } };
    let masked: Vec<Option<u64>> = slots.iter().enumerate().map(|(i, s)| s.filter(|_| ok(i))).collect();
    let plaus = plausible_slots(&masked, mem.best, now_ms);
    let best = plaus.iter().flatten().max().copied();
    let freshest = best.and_then(|b| plaus.iter().position(|s| *s == Some(b)));
    let remember = |to: usize, wanted: bool| LagMemory {
        best: best.map(|b| (b, now_ms)).or(mem.best),
        active_slot: if to == active { plaus.get(active).copied().flatten().or(mem.active_slot) } else { plaus[to] },
        wanted,
        at: Some(to),
    };
    let Some(best) = best else { return (active, remember(active, false)) };
    let to = freshest.unwrap_or(active);
    if !ok(active) {
        return (to, remember(to, false));
    }
    let leave = match plaus.get(active).copied().flatten() {
        Some(s) => best.saturating_sub(s) > MAX_SLOTS_BEHIND,
        None => mem.active_slot.is_some_and(|last| best.saturating_add(MAX_SLOTS_BEHIND) >= last),
    };
    match (leave, mem.wanted) {
        (true, true) => (to, remember(to, false)),
        (true, false) => (active, remember(active, true)),
        (false, _) => (active, remember(active, false)),
    }
}

/// The index of the genesis hash the endpoints are checked against (`hashes`: each endpoint's `getGenesisHash`,
/// `None` while unknown), once it can be told: the hash a strict majority of the configured endpoints answered, or,
/// once every endpoint answered, the most common one (the first configured of equals: with two endpoints that
/// disagree, the first configured URL is taken as the cluster's). `None` while it cannot be told yet.
pub fn cluster_reference(hashes: &[Option<&str>]) -> Option<usize> {
    let count = |h: &str| hashes.iter().filter(|o| **o == Some(h)).count();
    let (i, n) = hashes.iter().enumerate().filter_map(|(i, h)| h.map(|h| (i, count(h)))).fold(
        None::<(usize, usize)>,
        |acc, (i, n)| match acc {
            Some((_, m)) if m >= n => acc,
            _ => Some((i, n)),
        },
    )?;
    (2 * n > hashes.len() || hashes.iter().all(Option::is_some)).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{market, params, GENESIS, IV};
    use super::*;
    use kronos_market::state::Params;

    fn round(m: &Market, epoch: u64, status: RoundStatus) -> Round {
        let times = m.times(epoch).unwrap();
        let r = Round::opened(Pubkey::new_unique(), epoch, times, params(), Pubkey::new_unique(), 255);
        Round { status, ..r }
    }

    /// A feed whose newest transmission is stamped `latest`.
    fn feed(latest: i64) -> impl Fn(i64) -> bool {
        move |t| latest > t
    }

    #[test]
    fn a_round_is_started_between_its_start_and_its_lock_only() {
        let m = market();
        let (start, lock, _) = m.times(3).unwrap();
        let f = feed(i64::MAX);
        assert_eq!(next_action(&m, 3, None, start - 1, &f), Action::Wait(Until::Time(start)));
        assert_eq!(next_action(&m, 3, None, start, &f), Action::Start(3));
        assert_eq!(next_action(&m, 3, None, lock - 1, &f), Action::Start(3));
        assert_eq!(next_action(&m, 3, None, lock, &f), Action::Done);
    }

    /// Audit SOL H3: a paused market takes no bets; the keeper pays no round's rent for it, but a round already
    /// started is still driven to its end.
    #[test]
    fn a_paused_market_gets_no_new_round_but_its_started_ones_are_driven() {
        let mut m = market();
        m.paused = true;
        let (start, lock, _) = m.times(3).unwrap();
        let f = feed(i64::MAX);
        assert_eq!(next_action(&m, 3, None, start, &f), Action::Wait(Until::Unpaused));
        assert_eq!(next_action(&m, 3, None, lock - 1, &f), Action::Wait(Until::Unpaused));
        assert_eq!(next_action(&m, 3, None, lock, &f), Action::Done);
        let r = round(&m, 3, RoundStatus::Open);
        assert_eq!(next_action(&m, 3, Some(&r), lock + 10, &feed(lock + 1)), Action::Lock(3));
    }

    /// Audit SOL H3: the rent of a round the keeper started comes back by `close_round` exactly when the program
    /// allows it (`close.rs`).
    #[test]
    fn a_round_is_closed_when_the_program_allows_and_only_if_the_keeper_paid_its_rent() {
        let m = market();
        let me = Pubkey::new_unique();
        let mut r = round(&m, 3, RoundStatus::Settled);
        r.payer = me;
        let now = r.close_ts + 20;
        let settled = |e| round(&m, e, RoundStatus::Settled);
        let open = |e| round(&m, e, RoundStatus::Open);
        let locked = |e| round(&m, e, RoundStatus::Locked);
        assert!(closable(&r, Some(&settled(2)), Some(&locked(4)), now, &me));
        assert!(closable(&r, None, None, now, &me), "missing neighbours");
        assert!(!closable(&r, Some(&settled(2)), Some(&locked(4)), now, &Pubkey::new_unique()), "not its payer");
        assert!(!closable(&r, Some(&locked(2)), Some(&locked(4)), now, &me), "previous not final");
        assert!(!closable(&r, Some(&settled(2)), Some(&open(4)), now, &me), "next open");
        // Past their settle windows the neighbours are final.
        let late = r.close_ts + 3 * 600;
        assert!(closable(&r, Some(&locked(2)), Some(&open(4)), late, &me));
        let mut with_bets = r.clone();
        with_bets.positions = 1;
        assert!(!closable(&with_bets, None, None, now, &me), "a position open");
        let mut revealing = r.clone();
        revealing.reveal_until = now;
        assert!(!closable(&revealing, None, None, now, &me), "reveal deadline not passed");
        let mut running = r.clone();
        running.status = RoundStatus::Locked;
        assert!(!closable(&running, None, None, now, &me), "not final");
        assert!(closable(&running, None, None, running.close_ts + 601, &me), "past its settle window");
    }

    #[test]
    fn a_lock_waits_for_the_report_delay_and_a_transmission_after_the_lock() {
        let m = market();
        let r = round(&m, 3, RoundStatus::Open);
        let lock = r.lock_ts;
        // The report delay first (the program's TooEarly).
        assert_eq!(next_action(&m, 3, Some(&r), lock + 9, &feed(i64::MAX)), Action::Wait(Until::Time(lock + 10)));
        // Then a transmission stamped after the lock (the program's PriceNotFinal): one stamped at the lock is not.
        assert_eq!(next_action(&m, 3, Some(&r), lock + 10, &feed(lock)), Action::Wait(Until::Transmission(lock)));
        assert_eq!(next_action(&m, 3, Some(&r), lock + 10, &feed(lock + 1)), Action::Lock(3));
        // Once the close is final too, one settle does both.
        let close = r.close_ts;
        assert_eq!(next_action(&m, 3, Some(&r), close + 10, &feed(close)), Action::Lock(3));
        assert_eq!(next_action(&m, 3, Some(&r), close + 10, &feed(close + 1)), Action::Settle(3));
    }

    #[test]
    fn a_settle_waits_for_the_close_its_delay_and_a_transmission_after_it() {
        let m = market();
        let r = round(&m, 3, RoundStatus::Locked);
        let close = r.close_ts;
        assert_eq!(next_action(&m, 3, Some(&r), close + 9, &feed(close + 5)), Action::Wait(Until::Time(close + 10)));
        assert_eq!(next_action(&m, 3, Some(&r), close + 10, &feed(close)), Action::Wait(Until::Transmission(close)));
        assert_eq!(next_action(&m, 3, Some(&r), close + 10, &feed(close + 1)), Action::Settle(3));
    }

    #[test]
    fn a_round_past_its_settle_window_is_refunded_and_final_rounds_need_nothing() {
        let m = market();
        let mut r = round(&m, 3, RoundStatus::Locked);
        let end = r.close_ts + r.params.settle_window as i64;
        // A silent feed: waiting until the window ends, then the program cancels it.
        assert_eq!(next_action(&m, 3, Some(&r), end, &feed(0)), Action::Wait(Until::Transmission(r.close_ts)));
        assert_eq!(next_action(&m, 3, Some(&r), end + 1, &feed(0)), Action::Refund(3));
        r.status = RoundStatus::Open;
        assert_eq!(next_action(&m, 3, Some(&r), end + 1, &feed(i64::MAX)), Action::Refund(3));
        for s in [RoundStatus::Settled, RoundStatus::Cancelled] {
            r.status = s;
            assert_eq!(next_action(&m, 3, Some(&r), end + 1, &feed(i64::MAX)), Action::Done);
            assert_eq!(next_action(&m, 3, Some(&r), r.close_ts + 10, &feed(i64::MAX)), Action::Done);
        }
    }

    #[test]
    fn the_live_epochs_reach_back_over_the_settle_window() {
        let m = market();
        let now = GENESIS + 10 * IV as i64 + 5;
        // Epoch 10 takes bets; 9 locks; 8 closes; 600 s of settle window is two more intervals.
        assert_eq!(live_epochs(&m, now, 100), 6..=10);
        assert_eq!(live_epochs(&m, now, 1), 9..=10);
        assert_eq!(live_epochs(&m, GENESIS - 1, 100), 0..=0);
        // 60 s rounds with a one-hour settle window: every round that may still settle is read (62 epochs back).
        let mut m = market();
        m.interval = 60;
        m.params.settle_window = 3_600;
        let now = GENESIS + 1_000 * 60 + 5;
        assert_eq!(live_epochs(&m, now, MAX_LOOKBACK), 938..=1_000);
    }

    #[test]
    fn a_step_refused_again_and_again_is_tried_less_and_less_often() {
        use std::time::Duration;
        let poll = Duration::from_secs(1);
        assert_eq!(retry_after(0, poll), Duration::ZERO);
        assert_eq!(retry_after(1, poll), Duration::ZERO);
        assert_eq!(retry_after(2, poll), Duration::from_secs(2));
        assert_eq!(retry_after(3, poll), Duration::from_secs(4));
        assert_eq!(retry_after(9, poll), Duration::from_secs(256));
        assert_eq!(retry_after(10, poll), Duration::from_secs(300));
        assert_eq!(retry_after(u32::MAX, poll), Duration::from_secs(300));
    }

    /// AUDIT-2 A3: only a confirmed step clears its back-off; "already done" and "not yet" count like any refusal
    /// (a lying node answers them pass after pass), a dropped transaction neither clears nor counts.
    #[test]
    fn only_a_confirmed_step_clears_its_back_off() {
        assert_eq!(backoff_after(Tried::Done), Backoff::Clear);
        assert_eq!(backoff_after(Tried::AlreadyDone), Backoff::Count);
        assert_eq!(backoff_after(Tried::NotYet), Backoff::Count);
        // Audit L3: a "not yet" waits at most NOT_YET_MAX_WAIT (the keeper's read said the step was due).
        let poll = std::time::Duration::from_millis(500);
        assert_eq!(retry_wait(Tried::NotYet, 20, poll), NOT_YET_MAX_WAIT);
        assert_eq!(retry_wait(Tried::Failed, 20, poll), retry_after(20, poll));
        assert_eq!(retry_wait(Tried::NotYet, 2, poll), retry_after(2, poll), "short waits unchanged");
        assert_eq!(
            retry_wait(Tried::NotYet, 20, std::time::Duration::from_secs(30)),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(backoff_after(Tried::Failed), Backoff::Count);
        assert_eq!(backoff_after(Tried::Expired), Backoff::Keep);
    }

    /// Audit SOL L4: a permanent error is alerted once, a new kind of error again.
    #[test]
    fn an_error_is_alerted_once_per_kind_until_the_step_succeeds() {
        assert!(alert_now(None, "program: TooLateToStart"));
        assert!(!alert_now(Some("program: TooLateToStart"), "program: TooLateToStart"));
        assert!(alert_now(Some("program: TooLateToStart"), "rpc"));
    }

    /// AUDIT-2 A5: the look-back comes from the market (its settle window, the pending one too if longer), beyond
    /// the old fixed 600; a market needing more than the keeper reads is refused new rounds.
    #[test]
    fn the_look_back_follows_the_settle_window_and_too_long_a_window_is_refused() {
        let mut m = market();
        m.interval = 60;
        m.params.settle_window = 60 * 1_000;
        let now = GENESIS + 5_000 * 60 + 5;
        assert_eq!(lookback(&m), 1_002);
        assert_eq!(live_epochs(&m, now, MAX_LOOKBACK), 3_998..=5_000);
        assert_eq!(lookback_refusal(&m), None);
        m.pending_params = Some(Params { settle_window: 60 * 3_000, ..params() });
        assert_eq!(lookback(&m), 3_002);
        assert_eq!(live_epochs(&m, now, MAX_LOOKBACK), 3_000..=5_000);
        assert!(lookback_refusal(&m).is_some_and(|r| r.contains("3002 rounds")), "{:?}", lookback_refusal(&m));
    }

    /// AUDIT-2 A1: the keeper's rounds are found by their fields' offsets, taken from the program's own layout.
    #[test]
    fn the_round_offsets_point_at_the_market_positions_and_payer() {
        use anchor_lang::{AccountSerialize, Space};
        let at = RoundOffsets::get();
        let m = market();
        let mut r = round(&m, 3, RoundStatus::Settled);
        let (market_key, payer) = (Pubkey::new_unique(), Pubkey::new_unique());
        r.market = market_key;
        r.payer = payer;
        r.positions = 7;
        let mut data = Vec::new();
        r.try_serialize(&mut data).unwrap();
        assert_eq!(data.len(), 8 + Round::INIT_SPACE);
        assert_eq!(&data[at.market..at.market + 32], market_key.as_ref());
        assert_eq!(&data[at.payer..at.payer + 32], payer.as_ref());
        assert_eq!(&data[at.positions..at.positions + 4], &7u32.to_le_bytes());
    }

    /// AUDIT-2 A1: what holds a final round's rent: its open positions (only their users close them), a forecast's
    /// reveal deadline, or nothing (closable now); a round someone else paid for is not the keeper's.
    #[test]
    fn a_final_round_is_held_by_its_positions_or_a_reveal_else_closable() {
        let m = market();
        let me = Pubkey::new_unique();
        let mut r = round(&m, 3, RoundStatus::Settled);
        r.payer = me;
        let now = r.close_ts + 1;
        assert_eq!(held(&r, None, None, now, &me), None);
        r.positions = 2;
        assert_eq!(held(&r, None, None, now, &me), Some(Held::Positions(2)));
        r.positions = 0;
        r.reveal_until = now + 100;
        assert_eq!(held(&r, None, None, now, &me), Some(Held::Reveal(now + 100)));
        assert_eq!(held(&r, None, None, now + 101, &me), None);
        assert_eq!(held(&r, None, None, now, &Pubkey::new_unique()), None);
        r.status = RoundStatus::Locked;
        assert_eq!(held(&r, None, None, now, &me), Some(Held::Running));
    }

    #[test]
    fn compute_units_add_the_margin_within_floor_and_ceiling() {
        assert_eq!(compute_units(100_000, 15), 115_000);
        assert_eq!(compute_units(100_001, 10), 110_002);
        assert_eq!(compute_units(1, 20), MIN_CU);
        assert_eq!(compute_units(1_300_000, 20), MAX_CU);
    }

    #[test]
    fn the_cu_price_is_the_percentile_of_recent_fees_capped() {
        let fees = [50, 10, 40, 20, 30];
        assert_eq!(cu_price(&fees, 75, 1_000), 40);
        assert_eq!(cu_price(&fees, 50, 1_000), 30);
        assert_eq!(cu_price(&fees, 100, 1_000), 50);
        assert_eq!(cu_price(&fees, 0, 1_000), 10);
        assert_eq!(cu_price(&fees, 75, 25), 25);
        assert_eq!(cu_price(&[], 75, 25), 0);
    }

    #[test]
    fn the_send_loop_rebroadcasts_then_re_signs_after_the_blockhash_expires() {
        let u = SigStatus::Unknown;
        assert_eq!(send_step(&u, 100, 200, 1, 2), SendStep::Wait);
        assert_eq!(send_step(&u, 100, 200, 2, 2), SendStep::Rebroadcast);
        assert_eq!(send_step(&u, 200, 200, 2, 2), SendStep::Rebroadcast);
        assert_eq!(send_step(&u, 201, 200, 0, 2), SendStep::ReSign);
        // Audit SOL M2: up to its last valid height it may still land, whatever a node says of its blockhash.
        assert_eq!(send_step(&u, 200, 200, 0, 2), SendStep::Wait);
        assert_eq!(send_step(&SigStatus::Processed, 201, 200, 9, 2), SendStep::Wait);
        assert_eq!(send_step(&SigStatus::Confirmed(None), 201, 200, 9, 2), SendStep::Confirmed);
        let e = TransactionError::InstructionError(2, InstructionError::Custom(6019));
        assert_eq!(send_step(&SigStatus::Confirmed(Some(e.clone())), 1, 200, 0, 2), SendStep::Failed(e));
    }

    fn custom(c: u32) -> TransactionError {
        TransactionError::InstructionError(2, InstructionError::Custom(c))
    }

    #[test]
    fn program_errors_are_classified_by_variant() {
        let c = |v: MarketError| custom(u32::from(v));
        assert_eq!(classify(Action::Start(1), &custom(0)), ErrorClass::AlreadyDone);
        assert_eq!(classify(Action::Lock(1), &c(MarketError::RoundNotOpen)), ErrorClass::AlreadyDone);
        assert_eq!(classify(Action::Lock(1), &c(MarketError::RoundFinal)), ErrorClass::AlreadyDone);
        assert_eq!(classify(Action::Settle(1), &c(MarketError::RoundFinal)), ErrorClass::AlreadyDone);
        assert_eq!(classify(Action::Refund(1), &c(MarketError::RoundFinal)), ErrorClass::AlreadyDone);
        // RoundNotOpen is not "already settled": a settle never raises it, so it is an error there.
        assert_eq!(
            classify(Action::Settle(1), &c(MarketError::RoundNotOpen)),
            ErrorClass::Other("RoundNotOpen".into())
        );
        // Custom(0) from anything but a start is not a round someone else created.
        assert_eq!(classify(Action::Lock(1), &custom(0)), ErrorClass::Other("custom error 0".into()));
        for v in [MarketError::TooEarly, MarketError::PriceNotFinal, MarketError::FeedFlagged] {
            assert_eq!(classify(Action::Settle(1), &c(v)), ErrorClass::NotYet);
        }
        assert_eq!(classify(Action::Start(1), &c(MarketError::FeedChanged)), ErrorClass::FeedChanged);
        assert_eq!(
            classify(Action::Start(1), &c(MarketError::TooLateToStart)),
            ErrorClass::Other("TooLateToStart".into())
        );
        assert!(matches!(
            classify(Action::Start(1), &TransactionError::BlockhashNotFound),
            ErrorClass::Other(s) if s == "BlockhashNotFound"
        ));
    }

    #[test]
    fn only_an_approved_feed_with_its_pinned_owner_and_writer_is_trusted() {
        let (o, w, x) = (Pubkey::new_unique(), Pubkey::new_unique(), Pubkey::new_unique());
        assert_eq!(check_feed((o, w), Some((o, w)), (o, w)), Ok(()));
        assert_eq!(check_feed((o, w), None, (o, w)), Err(Refusal::NotApproved));
        assert_eq!(check_feed((o, w), Some((o, w)), (x, w)), Err(Refusal::Changed { what: "owner" }));
        assert_eq!(check_feed((o, w), Some((o, w)), (o, x)), Err(Refusal::Changed { what: "writer" }));
    }

    /// AUDIT5-SOL M2: a pass is reported stuck only past [`PASS_STUCK_AFTER`], above a blockhash's lifetime.
    #[test]
    fn a_pass_is_stuck_only_past_twice_a_blockhash_lifetime() {
        assert!(!pass_stuck(Duration::from_secs(90)));
        assert!(!pass_stuck(PASS_STUCK_AFTER));
        assert!(pass_stuck(PASS_STUCK_AFTER + Duration::from_secs(1)));
        assert!(PASS_STUCK_AFTER >= Duration::from_secs(150), "above a blockhash's lifetime, with a margin");
    }

    /// AUDIT6-SOL M3: an action whose transactions expire pass after pass is reported once it expired twice in a row
    /// and was first sent more than [`PASS_STUCK_AFTER`] ago; a confirmed (or already done) step ends the run, a
    /// refusal neither ends nor extends it.
    #[test]
    fn an_action_that_keeps_expiring_is_stuck_past_the_pass_limit() {
        let limit = i64::try_from(PASS_STUCK_AFTER.as_millis()).unwrap();
        let one = expiring_after(None, Tried::Expired, 1_000).unwrap();
        assert_eq!(one, Expiring { since_ms: 1_000, count: 1 });
        assert!(!expiring_stuck(one, 1_000 + limit + 1), "one expiry: a dropped transaction, not an outage");
        let two = expiring_after(Some(one), Tried::Expired, 90_000).unwrap();
        assert_eq!(two, Expiring { since_ms: 1_000, count: 2 }, "the run is dated from its first send");
        assert!(!expiring_stuck(two, 1_000 + limit));
        assert!(expiring_stuck(two, 1_000 + limit + 1));
        assert_eq!(expiring_after(Some(two), Tried::Failed, 200_000), Some(two));
        assert_eq!(expiring_after(Some(two), Tried::NotYet, 200_000), Some(two));
        assert_eq!(expiring_after(Some(two), Tried::Done, 200_000), None);
        assert_eq!(expiring_after(Some(two), Tried::AlreadyDone, 200_000), None);
        assert_eq!(expiring_after(None, Tried::Failed, 200_000), None);
    }

    /// A check that moves at once from what it is given (the last check already wanted to leave, and saw `best`).
    fn step(slots: &[Option<u64>], active: usize) -> usize {
        let mem = LagMemory { best: Some((1_000, 0)), active_slot: None, wanted: true, at: Some(active) };
        lag_step(slots, &vec![true; slots.len()], active, mem, 0).0
    }

    /// Issue 15: an endpoint that answers but is far behind loses to a fresh one; jitter within the threshold never
    /// moves the keeper.
    #[test]
    fn an_endpoint_far_behind_loses_to_the_freshest() {
        let far = 1_000 - MAX_SLOTS_BEHIND - 1;
        assert_eq!(step(&[Some(far), Some(1_000), Some(990)], 0), 1);
        assert_eq!(step(&[Some(1_000 - MAX_SLOTS_BEHIND), Some(1_000)], 0), 0, "at the threshold: kept");
        assert_eq!(step(&[Some(1_000), Some(far)], 1), 0);
        // The first of equals, in the configured order.
        assert_eq!(step(&[Some(1_000), Some(far), Some(1_000)], 1), 0);
        assert_eq!(step(&[None, None], 1), 1, "nothing known: kept");
        assert_eq!(step(&[Some(5)], 0), 0);
    }

    /// AUDIT5-SOL M1: a lead must show in two checks in a row before the keeper moves; a reading in between that
    /// does not show it starts the count again.
    #[test]
    fn a_lead_moves_the_keeper_only_in_two_checks_in_a_row() {
        let far = [Some(1_000), Some(1_000 + MAX_SLOTS_BEHIND + 1)];
        let all = [true, true];
        let (to, m1) = lag_step(&far, &all, 0, LagMemory::default(), 0);
        assert_eq!((to, m1.wanted), (0, true), "first sight: kept");
        let (to, m2) = lag_step(&[Some(1_010), Some(1_012)], &all, 0, m1, 5_000);
        assert_eq!((to, m2.wanted), (0, false), "the lead is gone: counted again");
        let (to, m3) = lag_step(&[Some(1_020), Some(1_060)], &all, 0, m2, 10_000);
        assert_eq!(to, 0);
        let (to, m4) = lag_step(&[Some(1_030), Some(1_080)], &all, 0, m3, 15_000);
        assert_eq!((to, m4.wanted, m4.active_slot), (1, false, Some(1_080)), "second in a row: moved");
    }

    /// AUDIT5-SOL M1: a slot implausibly far above the median of the others' is ignored when at least 3 endpoints
    /// answered, unless the wall clock since the last check allows it (the others stalled).
    #[test]
    fn a_slot_implausibly_far_above_the_others_is_ignored() {
        let liar = Some(5_000);
        assert_eq!(plausible_slots(&[Some(1_000), liar, Some(1_001)], None, 0), vec![Some(1_000), None, Some(1_001)]);
        assert_eq!(plausible_slots(&[Some(1_000), Some(2_500), Some(1_001)], None, 0)[1], Some(2_500));
        // The liar never takes the keeper, however often it is seen.
        let mut mem = LagMemory::default();
        for k in 0..4 {
            let (to, m) = lag_step(&[Some(1_000 + k), liar, Some(1_001 + k)], &[true; 3], 0, mem, 5_000 * k as i64);
            assert_eq!(to, 0, "check {k}");
            mem = m;
        }
        // The one in use stalled while the others kept going: their lead grew a slot per 400 ms, which the clock
        // allows.
        let prev = Some((1_000 + MAX_PLAUSIBLE_LEAD - 10, 0));
        let ahead = Some(1_000 + MAX_PLAUSIBLE_LEAD + 5);
        assert_eq!(plausible_slots(&[Some(1_000), ahead, Some(1_000)], prev, 5_000)[1], Some(2_505));
        // A jump past what 5 s allow is not.
        let jump = Some(1_000 + MAX_PLAUSIBLE_LEAD + 200);
        assert_eq!(plausible_slots(&[Some(1_000), jump, Some(1_000)], prev, 5_000)[1], None);
    }

    /// AUDIT6-SOL M1: with two endpoints the other one cannot tell which of the two is wrong, so the higher slot is
    /// believed: a keeper that starts on a node stalled far behind (catching up after a restart) moves to the other
    /// one after two checks, and stays there.
    #[test]
    fn with_two_endpoints_the_one_stalled_far_behind_is_left() {
        let far = 1_000 + 4 * MAX_PLAUSIBLE_LEAD;
        assert_eq!(plausible_slots(&[Some(1_000), Some(far)], None, 0), vec![Some(1_000), Some(far)]);
        let all = [true, true];
        let (to, m1) = lag_step(&[Some(1_000), Some(far)], &all, 0, LagMemory::default(), 0);
        assert_eq!((to, m1.wanted), (0, true), "first sight: kept");
        let (to, m2) = lag_step(&[Some(1_000), Some(far + 12)], &all, 0, m1, 5_000);
        assert_eq!(to, 1, "second in a row: moved");
        let mut mem = m2;
        for k in 0..4 {
            let (to, m) =
                lag_step(&[Some(1_001 + k), Some(far + 24 + 12 * k)], &all, 1, mem, 10_000 + 5_000 * k as i64);
            assert_eq!(to, 1, "check {k}: stays");
            mem = m;
        }
        // The stalled one missing a check changes nothing either.
        assert_eq!(lag_step(&[None, Some(far + 100)], &all, 1, mem, 40_000).0, 1);
    }

    /// AUDIT6-SOL L2: what a check remembered of the endpoint in use is forgotten when the transport failover moved
    /// the keeper before the next check: one sighting of the new endpoint's lag never moves it, and a silent new
    /// endpoint is not compared with the old one's slot.
    #[test]
    fn the_lag_memory_belongs_to_the_endpoint_in_use() {
        let all = [true, true];
        // Checked on 0, which was wanted away from; the failover then moved the keeper to 1, now far behind.
        let mem = LagMemory { best: Some((1_000, 0)), active_slot: Some(1_000), wanted: true, at: Some(0) };
        let behind = [Some(1_010), Some(1_010 - MAX_SLOTS_BEHIND - 1)];
        let (to, m) = lag_step(&behind, &all, 1, mem, 5_000);
        assert_eq!((to, m.wanted, m.at), (1, true, Some(1)), "first sight of 1's lag: kept");
        assert_eq!(lag_step(&behind, &all, 1, m, 10_000).0, 0, "second: moved");
        // Silent right after the failover: 0's last slot says nothing of 1.
        assert_eq!(lag_step(&[Some(1_010), None], &all, 1, mem, 5_000).0, 1);
    }

    /// AUDIT5-SOL LOW-1: the endpoint in use that misses one `getSlot` is not left for a lagging one, only for one at
    /// least as fresh as its last known slot; an endpoint on another cluster is never chosen, and one in use is
    /// left at once.
    #[test]
    fn a_silent_endpoint_in_use_is_left_only_for_a_fresh_one_and_never_for_another_cluster() {
        let mem = LagMemory { best: Some((1_000, 0)), active_slot: Some(1_000), wanted: true, at: Some(0) };
        let all = [true, true];
        assert_eq!(lag_step(&[None, Some(1_000 - MAX_SLOTS_BEHIND - 1)], &all, 0, mem, 5_000).0, 0, "lagging: kept");
        assert_eq!(lag_step(&[None, Some(1_010)], &all, 0, mem, 5_000).0, 1, "fresh: moved");
        let no_last = LagMemory { active_slot: None, ..mem };
        assert_eq!(lag_step(&[None, Some(1_010)], &all, 0, no_last, 5_000).0, 0, "never seen: kept");
        // Another cluster: never chosen, however fresh.
        assert_eq!(lag_step(&[Some(900), Some(1_010)], &[true, false], 0, mem, 5_000).0, 0);
        assert_eq!(lag_step(&[Some(900), Some(1_010), Some(905)], &[true, false, true], 0, mem, 5_000).0, 0);
        // In use and on another cluster: left at once for the freshest usable one.
        let fresh = LagMemory::default();
        assert_eq!(lag_step(&[Some(9_000), Some(1_000), Some(1_001)], &[false, true, true], 0, fresh, 0).0, 2);
    }

    /// AUDIT5-SOL M1: the cluster is the one a strict majority answered, or, once all answered, the most common (the
    /// first configured of equals).
    #[test]
    fn the_cluster_is_the_majority_s_genesis() {
        assert_eq!(cluster_reference(&[Some("a"), Some("b"), Some("b")]), Some(1));
        assert_eq!(cluster_reference(&[Some("b"), None, Some("b")]), Some(0));
        assert_eq!(cluster_reference(&[None, Some("a"), Some("b")]), None, "cannot be told yet");
        assert_eq!(cluster_reference(&[Some("a"), Some("b")]), Some(0), "all answered, a tie: the first");
        assert_eq!(cluster_reference(&[None, Some("b")]), None);
        assert_eq!(cluster_reference(&[Some("a")]), Some(0));
        assert_eq!(cluster_reference(&[None, None]), None);
    }
}
