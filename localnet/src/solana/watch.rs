//! What the Solana chain says happened, read from its accounts (never from the demo's own bookkeeping): each round
//! of each market classified from its `Round` account ([`classify`], [`counts`]), the forecaster's `TrackRecord`
//! ([`record`]), and the keeper's delay in slots, observed by watching the chain ([`run`]): from the first slot at
//! which the program accepts a lock or a settlement (its `report_delay` passed and a transmission stamped after the
//! timestamp written, the program's timing rule) to the first slot whose state shows it done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anchor_lang::prelude::{Clock, Pubkey};
use anchor_lang::AccountDeserialize;
use kronos_market::registry::{RecordView, TrackRecord, RECORD_SEED};
use kronos_market::state::{CancelReason, Outcome, Round, RoundStatus};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{pda, LocalSolana, MarketRef, CLOCK_SYSVAR};

/// A round's fate as its account shows it at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Not started yet, and may still be.
    NotYet,
    /// Started, not final yet.
    Pending,
    Settled,
    /// Cancelled by the program with every stake refunded (tie, one-sided pool, stale or missing price…).
    Refunded,
    /// Nobody drove it in time: never started before its lock, or not settled within its settle window.
    Missed,
}

/// Rounds of a market by fate (rounds whose start has come).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub settled: u64,
    pub refunded: u64,
    pub missed: u64,
    pub pending: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.settled += o.settled;
        self.refunded += o.refunded;
        self.missed += o.missed;
        self.pending += o.pending;
    }
    /// Settled or refunded.
    pub fn finished(&self) -> u64 {
        self.settled + self.refunded
    }
}

/// The fate of round `epoch` (starting at `start`, locking one interval later) from its account, at `now`.
pub fn classify(round: Option<&Round>, lock_ts: i64, now: i64) -> Fate {
    match round {
        None if now >= lock_ts => Fate::Missed,
        None => Fate::NotYet,
        Some(r) => match r.status {
            RoundStatus::Settled => Fate::Settled,
            RoundStatus::Cancelled if r.cancel_reason == CancelReason::Expired => Fate::Missed,
            RoundStatus::Cancelled => Fate::Refunded,
            RoundStatus::Open | RoundStatus::Locked if r.expired(now) => Fate::Missed,
            RoundStatus::Open | RoundStatus::Locked => Fate::Pending,
        },
    }
}

/// Reads the rounds `0..` of `m` whose start has come and counts their fates. A round account that no longer exists
/// was either never started or closed once final (`close_round` returns its rent): `seen` holds the fates the
/// watcher read from the accounts before they were closed (by epoch), and an absent round not in it counts as
/// [`classify`] says (missed once its lock has passed).
pub async fn counts(
    sol: &LocalSolana,
    m: &MarketRef,
    now: i64,
    seen: &std::collections::BTreeMap<u64, Fate>,
) -> anyhow::Result<Counts> {
    let (genesis, interval) = (sol.genesis, i64::from(sol.interval));
    let mut c = Counts::default();
    if now < genesis {
        return Ok(c);
    }
    let last = ((now - genesis) / interval) as u64;
    let epochs: Vec<u64> = (0..=last).collect();
    for chunk in epochs.chunks(100) {
        let keys: Vec<Pubkey> = chunk.iter().map(|e| m.round(*e)).collect();
        let accounts = sol.client.get_multiple_accounts(&keys).await?;
        for (e, a) in chunk.iter().zip(accounts) {
            let round = a.and_then(|a| Round::try_deserialize(&mut a.data.as_slice()).ok());
            let lock_ts = genesis + (*e as i64 + 1) * interval;
            let fate = match (&round, seen.get(e)) {
                (None, Some(f)) => *f,
                _ => classify(round.as_ref(), lock_ts, now),
            };
            match fate {
                Fate::Settled => c.settled += 1,
                Fate::Refunded => c.refunded += 1,
                Fate::Missed => c.missed += 1,
                Fate::Pending => c.pending += 1,
                Fate::NotYet => {}
            }
        }
    }
    Ok(c)
}

/// The publisher's forecast record on chain at `now` (open commitments past their deadline count as expired), if it
/// has one.
pub async fn record(sol: &LocalSolana, publisher: &Pubkey, now: i64) -> anyhow::Result<Option<RecordView>> {
    let key = pda(&[RECORD_SEED, publisher.as_ref()]);
    let a = sol.client.get_account_with_commitment(&key, sol.client.commitment()).await?.value;
    Ok(match a {
        Some(a) => Some(TrackRecord::try_deserialize(&mut a.data.as_slice())?.view(now)),
        None => None,
    })
}

/// What the watcher saw, for the live table and the summary.
#[derive(Debug, Clone, Default)]
pub struct WatchStats {
    pub slot: u64,
    pub now: i64,
    /// The round taking bets now.
    pub betting_epoch: u64,
    /// Slots from "the program accepts it" to "done", for every lock and settlement seen (both markets).
    pub delays: Vec<u64>,
    /// Per market (`sol`, `spl`), from the chain.
    pub counts: Vec<(&'static str, Counts)>,
    /// Per market, the final fates read from round accounts (kept: the keeper closes final rounds).
    pub seen: Vec<std::collections::BTreeMap<u64, Fate>>,
    /// The newest final round's result, e.g. `sol #3 Up` or `spl #4 refund TieOrOneSided`.
    pub last_result: String,
    pub last_lock_price: Option<i128>,
    pub last_close_price: Option<i128>,
    /// The SOL market's betting round's pools (lamports).
    pub pool: (u64, u64),
}

impl WatchStats {
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (_, c) in &self.counts {
            t.add(c);
        }
        t
    }
}

#[derive(Default)]
struct Track {
    lock_ready: Option<u64>,
    lock_done: bool,
    close_ready: Option<u64>,
    close_done: bool,
}

/// Records a step's delay the first time it is seen done: slots since it became possible.
fn observe(ready: &mut Option<u64>, done: &mut bool, possible: bool, finished: bool, slot: u64, delays: &mut Vec<u64>) {
    if ready.is_none() && possible {
        *ready = Some(slot);
    }
    if !*done && finished {
        *done = true;
        if let Some(r) = ready {
            delays.push(slot.saturating_sub(*r));
        }
    }
}

/// Watches the chain until cancelled: every `poll`, one `getMultipleAccounts` reads the Clock, the feed and the
/// rounds around now of both markets (one consistent snapshot of the bank); every second the fates are recounted.
pub async fn run(sol: Arc<LocalSolana>, poll: Duration, stats: Arc<Mutex<WatchStats>>, cancel: CancellationToken) {
    let (genesis, interval) = (sol.genesis, i64::from(sol.interval));
    let report_delay = i64::from(sol.params.report_delay);
    let mut tracks: HashMap<(usize, u64), Track> = HashMap::new();
    let mut last_count = std::time::Instant::now() - Duration::from_secs(10);
    stats.lock().seen = vec![Default::default(); sol.markets.len()];
    while !cancel.is_cancelled() {
        let now_guess = stats.lock().now;
        let cur = if now_guess >= genesis { ((now_guess - genesis) / interval) as u64 } else { 0 };
        let epochs: Vec<u64> = (cur.saturating_sub(3)..=cur + 1).collect();
        let mut keys = vec![CLOCK_SYSVAR, sol.feed];
        for m in &sol.markets {
            keys.extend(epochs.iter().map(|e| m.round(*e)));
        }
        if let Ok(accounts) = sol.client.get_multiple_accounts(&keys).await {
            let clock: Option<Clock> = accounts[0].as_ref().and_then(|a| bincode::deserialize(&a.data).ok());
            let latest = accounts[1]
                .as_ref()
                .and_then(|a| kronos_market::chainlink::latest(&a.data).ok().flatten())
                .map(|t| i64::from(t.timestamp));
            if let (Some(clock), Some(latest)) = (clock, latest) {
                let (slot, now) = (clock.slot, clock.unix_timestamp);
                {
                    let mut s = stats.lock();
                    s.slot = slot;
                    s.now = now;
                    s.betting_epoch = if now >= genesis { ((now - genesis) / interval) as u64 } else { 0 };
                    let mut newest_final: Option<(i64, String, &Round)> = None;
                    let rounds: Vec<(usize, u64, Round)> = sol
                        .markets
                        .iter()
                        .enumerate()
                        .flat_map(|(mi, _)| epochs.iter().enumerate().map(move |(ei, e)| (mi, ei, *e)))
                        .filter_map(|(mi, ei, e)| {
                            let a = accounts[2 + mi * epochs.len() + ei].as_ref()?;
                            Some((mi, e, Round::try_deserialize(&mut a.data.as_slice()).ok()?))
                        })
                        .collect();
                    for (mi, e, r) in &rounds {
                        let t = tracks.entry((*mi, *e)).or_default();
                        let lock_possible = now >= r.lock_ts + report_delay && latest > r.lock_ts;
                        let locked = r.status != RoundStatus::Open;
                        observe(&mut t.lock_ready, &mut t.lock_done, lock_possible, locked, slot, &mut s.delays);
                        let close_possible = now >= r.close_ts + report_delay && latest > r.close_ts;
                        let closed = matches!(r.status, RoundStatus::Settled | RoundStatus::Cancelled);
                        observe(&mut t.close_ready, &mut t.close_done, close_possible, closed, slot, &mut s.delays);
                        let lock_ts = genesis + (*e as i64 + 1) * interval;
                        match classify(Some(r), lock_ts, now) {
                            f @ (Fate::Settled | Fate::Refunded | Fate::Missed) => {
                                s.seen[*mi].insert(*e, f);
                            }
                            Fate::Pending | Fate::NotYet => {}
                        }
                        if mi == &0 && *e == s.betting_epoch {
                            s.pool = (r.up_amount, r.down_amount);
                        }
                        if closed && newest_final.as_ref().is_none_or(|(ts, _, _)| r.close_ts > *ts) {
                            let what = match (r.status, r.outcome) {
                                (RoundStatus::Settled, Outcome::Up) => "Up".to_string(),
                                (RoundStatus::Settled, _) => "Down".to_string(),
                                _ => format!("refund {:?}", r.cancel_reason),
                            };
                            newest_final = Some((r.close_ts, format!("{} #{e} {what}", sol.markets[*mi].name), r));
                        }
                    }
                    if let Some((_, what, r)) = newest_final {
                        s.last_result = what;
                        s.last_lock_price = (r.lock_price != 0).then_some(r.lock_price);
                        s.last_close_price = (r.close_price != 0).then_some(r.close_price);
                    }
                    // Rounds well behind are done with; forget them.
                    tracks.retain(|(_, e), _| *e + 4 >= cur);
                }
                if last_count.elapsed() >= Duration::from_secs(1) {
                    let mut all = Vec::new();
                    let seen = stats.lock().seen.clone();
                    for (m, seen) in sol.markets.iter().zip(&seen) {
                        match counts(&sol, m, now, seen).await {
                            Ok(c) => all.push((m.name, c)),
                            Err(_) => break,
                        }
                    }
                    if all.len() == sol.markets.len() {
                        stats.lock().counts = all;
                    }
                    last_count = std::time::Instant::now();
                }
            }
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(poll) => {} }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kronos_market::state::Params;

    fn round(status: RoundStatus, reason: CancelReason, close_ts: i64, settle_window: u32) -> Round {
        Round {
            market: Pubkey::default(),
            epoch: 0,
            start_ts: close_ts - 600,
            lock_ts: close_ts - 300,
            close_ts,
            params: Params {
                fee_bps: 0,
                min_bet: 0,
                max_price_age: 0,
                settle_window,
                report_delay: 10,
                bet_cutoff: 10,
                settler_reward_bps: 0,
            },
            status,
            outcome: Outcome::None,
            cancel_reason: reason,
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
            payer: Pubkey::default(),
            reveal_until: 0,
            bump: 0,
        }
    }

    #[test]
    fn fates_follow_the_round_account() {
        let close = 1_000;
        let c = |s, r, now| classify(Some(&round(s, r, close, 100)), close - 300, now);
        assert_eq!(c(RoundStatus::Settled, CancelReason::None, close + 5), Fate::Settled);
        assert_eq!(c(RoundStatus::Cancelled, CancelReason::Tie, close + 5), Fate::Refunded);
        assert_eq!(c(RoundStatus::Cancelled, CancelReason::ClosePriceStale, close + 5), Fate::Refunded);
        // Cancelled because nobody settled it in time: the keeper missed it.
        assert_eq!(c(RoundStatus::Cancelled, CancelReason::Expired, close + 500), Fate::Missed);
        // Still open: pending within the settle window, missed after it.
        assert_eq!(c(RoundStatus::Locked, CancelReason::None, close + 100), Fate::Pending);
        assert_eq!(c(RoundStatus::Locked, CancelReason::None, close + 101), Fate::Missed);
        assert_eq!(c(RoundStatus::Open, CancelReason::None, close + 101), Fate::Missed);
        // Never started: not yet until its lock, missed from then on (start_round is refused after the lock).
        assert_eq!(classify(None, close - 300, close - 301), Fate::NotYet);
        assert_eq!(classify(None, close - 300, close - 300), Fate::Missed);
    }

    #[test]
    fn a_delay_counts_from_the_first_slot_it_was_possible() {
        let (mut ready, mut done, mut delays) = (None, false, Vec::new());
        observe(&mut ready, &mut done, false, false, 10, &mut delays);
        observe(&mut ready, &mut done, true, false, 11, &mut delays);
        observe(&mut ready, &mut done, true, false, 12, &mut delays);
        observe(&mut ready, &mut done, true, true, 14, &mut delays);
        observe(&mut ready, &mut done, true, true, 15, &mut delays);
        assert_eq!(delays, [3]);
        // Possible and done in the same snapshot: no delay.
        let (mut ready, mut done) = (None, false);
        observe(&mut ready, &mut done, true, true, 20, &mut delays);
        assert_eq!(delays, [3, 0]);
    }
}
