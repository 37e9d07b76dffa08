//! The forecaster's commit and reveal on Solana: the kronos-market program's registry (`registry.rs`,
//! `instructions/registry.rs`), with the EVM publisher's rules ([`crate::commit_reveal`]) and its forecaster
//! ([`Publisher::forecast`]), the same store rows (`predictions`, `track_records`) and the same signals
//! (`forecast`, `prediction_committed`, `prediction_revealed`), so `/api/predictions`, the dApp and Telegram see
//! Solana forecasts as they see EVM ones.
//!
//! - Commit: while the round taking bets is open for commits with a fifth of the round to spare, P(up) is
//!   forecast, the prediction (with its random salt) is **stored before the commit is sent** — a commitment whose
//!   salt is lost can never be revealed — and committed with the hash the program's own
//!   [`kronos_market::registry::commitment_hash`] computes (the registry's cluster id, the program id, the
//!   publisher, the market, the epoch, the forecast and the salt). A commitment already on chain with that hash (a
//!   run stopped before recording it) is recorded, not sent again; a commit the program refuses as
//!   `CommitTooLate` skips the round without an alert.
//! - Reveal: a stored, unrevealed prediction is revealed once the program accepts it — the round's outcome final
//!   by the program's own [`kronos_market::registry::round_result`] at the cluster's clock — from the salt in the
//!   store, so a keeper restarted between commit and reveal still reveals. A commitment that can no longer be
//!   revealed (its round has no outcome because nobody settled it in time, its deadline passed, it is not on chain)
//!   is stored as such: the registry counts it as expired by itself.
//!
//! The decisions are pure and unit-tested below; [`run`] does the reads and sends through the cluster's sender
//! ([`SolanaRuntime::send`]: simulation, compute units and price, re-broadcast, re-sign after expiry).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::FixedBytes;
use anchor_lang::prelude::Pubkey;
use anchor_lang::AccountDeserialize;
use anyhow::{Context, Result};
use futures::FutureExt;
use kronos_common::signals::{Outcome, SignalKind};
use kronos_market::error::MarketError;
use kronos_market::registry::{
    self, CommitStatus, Commitment, Forecast, Registry, TrackRecord, COMMITMENT_SEED, FORECAST_MARKET_SEED,
    RECORD_SEED, REGISTRY_SEED,
};
use kronos_market::state::{Market, Outcome as SolOutcome, Round};
use kronos_market::{accounts as acc, instruction as ix};
use rand::RngCore;
use solana_commitment_config::CommitmentConfig;
use solana_instruction::error::InstructionError;
use solana_transaction_error::TransactionError;
use tokio_util::sync::CancellationToken;

use super::driver::{clock_of, round_address, SendError, Sent, SolanaRuntime, CLOCK};
use super::rules::{self, Action};
use crate::commit_reveal::{self as decide, CommitStep, SendStep, Stored};
use crate::metrics::MarketLabel;
use crate::publisher::Publisher;
use crate::store::{PredictionRow, Reveal, TrackRecordRow};

/// A program error a send met, typed: its text is the variant's name (what logs and alerts show), and callers that
/// decide by variant read [`Refused::error`].
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub what: String,
    pub error: TransactionError,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Refused {}

/// The custom error code of a program instruction's failure, if it is one.
fn custom_code(e: &TransactionError) -> Option<u32> {
    match e {
        TransactionError::InstructionError(_, InstructionError::Custom(c)) => Some(*c),
        _ => None,
    }
}

fn is(c: Option<u32>, e: MarketError) -> bool {
    c == Some(u32::from(e))
}

/// Whether a commit for round `r` sent at cluster time `now` still has `margin` seconds before the program's commit
/// window closes: the program takes commitments until `bet_cutoff` before the round's lock (`registry::commit`).
pub(crate) fn commit_open(r: &Round, now: i64, margin: u64) -> bool {
    let closes = r.lock_ts.saturating_sub(r.params.bet_cutoff as i64);
    now >= r.start_ts && now.saturating_add(margin as i64) < closes
}

/// The margin a pass leaves before starting a forecast: a fifth of the round (as on EVM), for the forecast and for
/// the commit to land.
pub(crate) fn forecast_margin(interval: u32) -> u64 {
    u64::from(interval) / 5
}

/// The epoch taking bets at `now` on a market of `genesis` and `interval` (`None` before its genesis).
pub(crate) fn betting_epoch(genesis: i64, interval: u32, now: i64) -> Option<u64> {
    (now >= genesis && interval > 0).then(|| ((now - genesis) / i64::from(interval)) as u64)
}

/// How a commit the program refused ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitRefusal {
    /// `CommitTooLate`: the round's commit window closed before it landed; the round is skipped, no alert.
    TooLate,
    /// Anything else: an error (alerted, tried again later).
    Other,
}

pub(crate) fn commit_refusal(e: &TransactionError) -> CommitRefusal {
    if is(custom_code(e), MarketError::CommitTooLate) {
        CommitRefusal::TooLate
    } else {
        CommitRefusal::Other
    }
}

/// What a pass does about a stored, unrevealed prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevealStep {
    /// Not yet: the round's outcome is not final.
    Wait,
    /// Send the reveal: the program accepts it now.
    Reveal,
    /// The commitment on chain is revealed already (a run stopped before recording it): record its score.
    Recorded,
    /// It can never be revealed (why): stored as such; the registry counts it as expired at its deadline.
    Unrevealable(&'static str),
}

/// The step for a stored prediction whose commitment hashes to `stored`, given the commitment and round accounts
/// (`None`: no such account) at cluster time `now`. A reveal is sent only when the program would take it: the
/// commitment waiting and ours, its deadline not passed, and the round's outcome final by the program's own rule.
/// No commitment account is final only past `deadline` (its reveal deadline, [`expected_deadline`]): before, a node
/// that does not show it yet (lagging, a restart) is waited for (audit M2).
pub(crate) fn reveal_step(
    c: Option<&Commitment>,
    r: Option<&Round>,
    now: i64,
    stored: &[u8; 32],
    deadline: i64,
) -> RevealStep {
    let Some(c) = c else {
        return match now > deadline {
            true => RevealStep::Unrevealable("no commitment on chain by its reveal deadline"),
            false => RevealStep::Wait,
        };
    };
    match c.status {
        CommitStatus::Revealed => return RevealStep::Recorded,
        CommitStatus::Expired => return RevealStep::Unrevealable("expired on chain"),
        CommitStatus::Committed => {}
    }
    if c.hash != *stored {
        return RevealStep::Unrevealable("the commitment on chain is not the stored one");
    }
    if now > c.deadline {
        return RevealStep::Unrevealable("its reveal deadline passed");
    }
    // The program keeps the round until the deadline (`close_round` checks `reveal_until`): a round not read yet.
    let Some(r) = r else { return RevealStep::Wait };
    match registry::round_result(r, now) {
        Ok(_) => RevealStep::Reveal,
        Err(e) if e == MarketError::OutcomeNotFinal.into() => RevealStep::Wait,
        // `OutcomeMissed`: final without an outcome because nobody settled it in time; it stays so.
        Err(_) => RevealStep::Unrevealable("its round has no outcome (nobody settled it in time)"),
    }
}

/// The reveal deadline the program gives a commitment on round `epoch` (`commit`: the round's close + its settle
/// window + the registry's `reveal_window`), from the round account, or, once it is closed, from its market.
pub(crate) fn expected_deadline(r: Option<&Round>, m: &Market, epoch: u64, reveal_window: u32) -> i64 {
    let (close, settle) = match r {
        Some(r) => (r.close_ts, r.params.settle_window),
        None => {
            let close =
                (epoch as i64).saturating_add(2).saturating_mul(i64::from(m.interval)).saturating_add(m.genesis);
            (close, m.params.settle_window)
        }
    };
    close.saturating_add(i64::from(settle)).saturating_add(i64::from(reveal_window))
}

/// Whether the program's commit window of round `epoch` has closed at `now` (no commitment can land any more: it
/// takes them until `bet_cutoff` before the lock), from the round account or, without one, from its market.
pub(crate) fn commit_closed(r: Option<&Round>, m: &Market, epoch: u64, now: i64) -> bool {
    let closes = match r {
        Some(r) => r.lock_ts.saturating_sub(r.params.bet_cutoff as i64),
        None => (epoch as i64)
            .saturating_add(1)
            .saturating_mul(i64::from(m.interval))
            .saturating_add(m.genesis)
            .saturating_sub(m.params.bet_cutoff as i64),
    };
    now >= closes
}

/// How a reveal the program refused ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevealRefusal {
    /// `OutcomeNotFinal`, or no commitment account (`AccountNotInitialized`: a node behind the commit; audit M2):
    /// try again in a later pass, whose read decides by the deadline.
    NotYet,
    /// `AlreadyFinal`: revealed or expired meanwhile; the next pass reads the commitment and records what it says.
    Final,
    /// It can never succeed (the window closed, no outcome, not our commitment).
    Unrevealable,
    /// Anything else: an error (alerted, tried again later).
    Other,
}

pub(crate) fn reveal_refusal(e: &TransactionError) -> RevealRefusal {
    let c = custom_code(e);
    if is(c, MarketError::OutcomeNotFinal) || c == Some(anchor_lang::error::ErrorCode::AccountNotInitialized as u32) {
        RevealRefusal::NotYet
    } else if is(c, MarketError::AlreadyFinal) {
        RevealRefusal::Final
    } else if is(c, MarketError::RevealWindowClosed)
        || is(c, MarketError::OutcomeMissed)
        || is(c, MarketError::CommitmentMismatch)
        || is(c, MarketError::InconsistentForecast)
    {
        RevealRefusal::Unrevealable
    } else {
        RevealRefusal::Other
    }
}

/// Whether the program's `close_commitment` takes back a commitment of `status` and `deadline` at cluster time
/// `now` (H1): once it is final — revealed, expired, or still committed past its deadline (the program then expires
/// it first, so the track record counts it once).
pub(crate) fn may_close(status: CommitStatus, deadline: i64, now: i64) -> bool {
    status != CommitStatus::Committed || now > deadline
}

/// Whether the once-per-interval sweep closes a commitment found on chain (H1): when the program allows it, except
/// a revealed one whose prediction the store still holds as unrevealed (`pending`) — the reveal pass records its
/// score from the account first, and closes it then.
pub(crate) fn sweep_closes(status: CommitStatus, deadline: i64, now: i64, pending: bool) -> bool {
    may_close(status, deadline, now) && !(pending && status == CommitStatus::Revealed)
}

/// At most this many commitments are closed by one pass's sweep (AUDIT4 L-a): each close is followed to its
/// confirmation, so a backlog (after downtime) is taken back a few at a time, between passes whose commits come
/// first.
pub(crate) const SWEEP_PER_PASS: usize = 4;

/// How often the sweep looks for this publisher's closable commitments (a market's default interval).
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Whether this pass sweeps (AUDIT4 L-a): never while a commit is due on a market this keeper leads (commits are
/// time-critical: the round's window closes at its cutoff; the sweep can wait for a pass with nothing due), else
/// when the last sweep left closable commitments behind (`backlog`), or every [`SWEEP_EVERY`] (`since`: the last
/// sweep; `None`: none yet in this run).
pub(crate) fn sweep_now(commit_due: bool, backlog: bool, since: Option<Duration>) -> bool {
    !commit_due && (backlog || since.is_none_or(|d| d >= SWEEP_EVERY))
}

/// How many of the `closable` commitments a sweep closes now, the rest left to the next passes' ([`sweep_now`]).
pub(crate) fn sweep_batch(closable: usize) -> usize {
    closable.min(SWEEP_PER_PASS)
}

/// Whether a read that shows no commitment proves that none will ever be there (AUDIT4 L-c), so that its prediction
/// is set aside as never committed: the read's own clock (the Clock sysvar read with it, at the same slot) is past
/// the round's commit window — the program takes no commitment from then on, and the cluster's clock only moves
/// forward, so a commit would have landed before the read's slot — and that slot is finalized (`finalized`: the
/// cluster's finalized slot), so no fork can bring one back. A lagging node's read (its clock still in the window)
/// or one not yet finalized is not final: the next pass reads again.
pub(crate) fn never_committed(window_closed_at_read: bool, read_slot: u64, finalized: u64) -> bool {
    window_closed_at_read && read_slot <= finalized
}

/// Whether a stored prediction's commitment binds `market` (AUDIT4 L-b): its stored hash is the program's hash of
/// its stored forecast on `market` — how a prediction of a market removed from the config is tied to that market's
/// address (the store's last one for its id) before it is revealed there.
pub(crate) fn binds(cluster: &[u8; 32], publisher: &Pubkey, market: &Pubkey, p: &PredictionRow) -> Result<bool> {
    let bps = u16::try_from(p.p_up_bps).with_context(|| format!("stored p_up_bps {} is not a u16", p.p_up_bps))?;
    let salt = parse32("salt", &p.salt)?;
    let h = commitment_hash(cluster, publisher, market, p.epoch as u64, p.up, bps, salt);
    Ok(h == parse32("commitment", &p.commitment)?)
}

/// Where a `Commitment` account holds its publisher (the sweep's `getProgramAccounts` memcmp): found by serialising
/// a commitment with a marked publisher, so that no layout is copied by hand.
pub(crate) fn publisher_offset() -> usize {
    use anchor_lang::AccountSerialize;
    let marked = Pubkey::new_from_array([0x5A; 32]);
    let c = Commitment {
        publisher: marked,
        market: Pubkey::default(),
        epoch: 0,
        hash: [0; 32],
        status: CommitStatus::Committed,
        deadline: 0,
        up: false,
        probability_up_bps: 0,
        outcome: SolOutcome::None,
        hit: false,
        brier: 0,
        bump: 0,
    };
    let mut data = Vec::new();
    c.try_serialize(&mut data).expect("a Commitment serialises");
    data.windows(32).position(|w| w == marked.as_ref()).expect("the marked publisher is there")
}

/// What a forecast step's alerts are keyed by (audit L2): its kind and market — `commit:1` for `commit:1:42` — so
/// one kind of error on a market's commits (or reveals) is told once across its epochs, not once per try and round.
pub(crate) fn alert_key(label: &str) -> &str {
    label.rsplit_once(':').map_or(label, |(key, _)| key)
}

/// The store's outcome for the program's.
pub(crate) fn outcome(o: SolOutcome) -> Outcome {
    match o {
        SolOutcome::Up => Outcome::Up,
        SolOutcome::Down => Outcome::Down,
        SolOutcome::Tie => Outcome::Tie,
        SolOutcome::None => Outcome::None,
    }
}

/// The commitment hash of a stored forecast, computed by the program crate's own function.
pub(crate) fn commitment_hash(
    cluster: &[u8; 32],
    publisher: &Pubkey,
    market: &Pubkey,
    epoch: u64,
    up: bool,
    bps: u16,
    salt: [u8; 32],
) -> [u8; 32] {
    registry::commitment_hash(cluster, publisher, market, epoch, &Forecast { up, probability_up_bps: bps, salt })
}

fn pda(program: &Pubkey, seeds: &[&[u8]]) -> Pubkey {
    Pubkey::find_program_address(seeds, program).0
}

/// The commitment account of `publisher`'s forecast of `market`'s round `epoch`.
pub fn commitment_address(program: &Pubkey, market: &Pubkey, epoch: u64, publisher: &Pubkey) -> Pubkey {
    pda(program, &[COMMITMENT_SEED, market.as_ref(), &epoch.to_le_bytes(), publisher.as_ref()])
}

/// `publisher`'s track record account.
pub fn record_address(program: &Pubkey, publisher: &Pubkey) -> Pubkey {
    pda(program, &[RECORD_SEED, publisher.as_ref()])
}

fn parse32(field: &str, s: &str) -> Result<[u8; 32]> {
    let b: FixedBytes<32> = s.parse().with_context(|| format!("stored {field} '{s}' is not 32 hex bytes"))?;
    Ok(b.0)
}

/// The markets of stored predictions, by id: address, and whether it is configured ([`Forecasts::addresses`]).
type Addresses = HashMap<i64, (Pubkey, bool)>;

/// One round's commit as [`Forecasts::commit`] read it, for [`Forecasts::commit_round`] (read once, not again).
struct RoundCommit {
    market: Pubkey,
    id: u64,
    interval: u32,
    epoch: u64,
    /// The round taking bets, as read.
    round: Round,
    /// The cluster's clock when the pass read it.
    now: i64,
    /// The market's forecast account (`enable_forecasts`).
    forecast_market: Pubkey,
    /// `commit:{id}:{epoch}`: its back-off and alerts, its transaction rows.
    label: String,
}

/// The publishing state of one cluster.
struct Forecasts {
    rt: Arc<SolanaRuntime>,
    publisher: Arc<Publisher>,
    /// The registry's cluster id, once read.
    cluster: Option<[u8; 32]>,
    /// The registry's reveal window (s), read with the cluster id.
    reveal_window: u32,
    /// What was said once (no registry, a market not enabled for forecasts), so it is not said every pass.
    told: HashSet<String>,
    /// Per step (its label): failures in a row and when it may be tried again, as the crank does.
    failing: HashMap<String, (u32, Instant)>,
    /// Per [`alert_key`]: the kind of error last alerted, until a step of that key succeeds (audit L2).
    alerted: HashMap<String, String>,
    /// When the last sweep for closable commitments ran (H1); `None`: not yet in this run.
    swept: Option<Instant>,
    /// The last sweep left closable commitments for the next passes (AUDIT4 L-a: [`SWEEP_PER_PASS`] a pass).
    sweep_backlog: bool,
    /// Stored predictions (market id, epoch) found never committed: their commit window closed with no commitment
    /// on chain and no confirmed commit (M1), by a finalized read past the window ([`never_committed`], AUDIT4
    /// L-c); not looked at again in this run.
    never_committed: HashSet<(i64, i64)>,
    /// This publisher's commitments on chain ([`Forecasts::commitments`]), read at most once a pass, when a stored
    /// prediction's commitment does not bind the store's market of its id (AUDIT5-SOL M3); `None`: not read in this
    /// pass.
    found: Option<Vec<Commitment>>,
}

/// Commits and reveals on `rt`'s cluster until `cancel` fires.
pub(super) async fn run(rt: Arc<SolanaRuntime>, publisher: Arc<Publisher>, cancel: CancellationToken) {
    let poll = rt.poll;
    let mut f = Forecasts {
        rt,
        publisher,
        cluster: None,
        reveal_window: 0,
        told: HashSet::new(),
        failing: HashMap::new(),
        alerted: HashMap::new(),
        swept: None,
        sweep_backlog: false,
        never_committed: HashSet::new(),
        found: None,
    };
    while !cancel.is_cancelled() {
        if let Err(e) = f.pass(&cancel).await {
            let msg = kronos_common::Redactor::global().redact(&format!("{e:#}"));
            tracing::warn!(chain = %f.rt.name, error = %msg, "solana: forecast pass failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

impl Forecasts {
    fn tell_once(&mut self, key: String, what: &str) {
        if self.told.insert(key) {
            tracing::info!(chain = %self.rt.name, "solana: {what}");
        }
    }

    async fn pass(&mut self, cancel: &CancellationToken) -> Result<()> {
        let program = self.rt.cfg.program;
        let cluster = match self.cluster {
            Some(c) => c,
            None => {
                let key = pda(&program, &[REGISTRY_SEED]);
                let got = self.rt.get_many(&[key]).await?.pop().flatten();
                let reg = got
                    .filter(|a| a.owner == program)
                    .and_then(|a| Registry::try_deserialize(&mut a.data.as_slice()).ok());
                let Some(reg) = reg else {
                    self.tell_once(
                        "registry".into(),
                        &format!("program {program} has no forecast registry (initialize_registry): nothing published"),
                    );
                    return Ok(());
                };
                self.cluster = Some(reg.cluster);
                self.reveal_window = reg.reveal_window;
                reg.cluster
            }
        };
        self.found = None;
        let markets = self.rt.markets.lock().clone();
        let mut errors = Vec::new();
        // A commit still due on a market this keeper leads (AUDIT4 L-a): the sweep waits for a pass without one.
        let mut commit_due = false;
        for mi in &markets {
            if cancel.is_cancelled() {
                return Ok(());
            }
            // A refused market gets no new round, so no new forecast; its pending reveals still go out.
            if mi.refused.is_some() {
                continue;
            }
            // Commits only under the market's lease term (M3: a standby sends nothing for it); this keeper's own
            // commitments are revealed below whoever leads (only its signer can reveal them).
            let Some((fence, _)) = self.rt.term_of(mi) else {
                tracing::debug!(chain = %self.rt.name, market = mi.id, "solana: forecast: no lease term on this market, no commit");
                continue;
            };
            match self.commit(mi.address, mi.id, &cluster, &fence, cancel).await {
                Ok(due) => commit_due |= due,
                Err(e) => errors.push(format!("market {} commit: {e:#}", mi.id)),
            }
        }
        // The markets of this publisher's stored predictions: the configured ones, and those removed from the config
        // since (AUDIT4 L-b), at the address the store last recorded for their id.
        let addresses = self.addresses(&markets).await?;
        if let Err(e) = self.recover_uncommitted(&addresses, cancel).await {
            errors.push(format!("recovering commits: {e:#}"));
        }
        if let Err(e) = self.reveal_due(&addresses, cancel).await {
            errors.push(format!("reveal: {e:#}"));
        }
        if !cancel.is_cancelled() && sweep_now(commit_due, self.sweep_backlog, self.swept.map(|at| at.elapsed())) {
            // Tried again next interval either way (AUDIT-4 M-c: a node that refuses getProgramAccounts, or a keeper
            // out of SOL, would otherwise rerun the look-up and warn every poll).
            let r = self.sweep(&addresses, cancel).await;
            self.swept = Some(Instant::now());
            self.sweep_backlog = *r.as_ref().unwrap_or(&false);
            if let Err(e) = r {
                errors.push(format!("sweep (tried again in {} s): {e:#}", SWEEP_EVERY.as_secs()));
            }
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    /// The markets of this publisher's stored predictions by id (AUDIT4 L-b): every market the store recorded on
    /// this cluster at its last address (`false`), the configured ones over them (`true`).
    async fn addresses(&self, markets: &[super::driver::MarketInfo]) -> Result<Addresses> {
        let mut out = Addresses::new();
        for m in self.rt.store.markets().await? {
            if m.chain != self.rt.name {
                continue;
            }
            match m.contract.parse::<Pubkey>() {
                Ok(a) => {
                    out.insert(m.market_id, (a, false));
                }
                Err(_) => {
                    tracing::warn!(chain = %self.rt.name, market = m.market_id, contract = %m.contract, "solana: a stored market address is not a Solana address")
                }
            }
        }
        for mi in markets {
            out.insert(mi.id as i64, (mi.address, true));
        }
        Ok(out)
    }

    /// The market (address, id) a stored prediction is revealed on (AUDIT4 L-b, L6; AUDIT5-SOL M3): the one its
    /// commitment binds ([`binds`]) — the configured market of its id, or one removed from the config since it was
    /// committed (the public record of what was committed is kept: it is still revealed, scored and its commitment
    /// closed there; nothing new is committed) at the store's address for its id. When the id names another market
    /// now (an id reused at another address) or none, the market is the one this publisher's commitment with the
    /// stored hash names on chain ([`commitments`](Self::commitments)), checked by [`binds`]. `None`: not found — a
    /// `tx_failed` alert once (market id, round, why); it is never revealed, nor marked, at an address its
    /// commitment does not bind.
    async fn market_of(&mut self, p: &PredictionRow, addresses: &Addresses) -> Result<Option<(Pubkey, u64)>> {
        let (id, epoch) = (p.market_id, p.epoch);
        let cluster = self.cluster.context("the registry's cluster id is not read yet")?;
        let publisher = self.rt.signer();
        let mut known = addresses.get(&id).copied();
        if known.is_none() && !self.told.contains(&format!("unbound:{id}:{epoch}")) {
            // The pass's snapshot of the store's markets is read before its predictions: a market recorded (by
            // another keeper on a shared store) between the two reads is looked up now, not judged missing for the
            // rest of the run.
            known = self.addresses(&[]).await?.get(&id).copied();
        }
        if let Some((address, configured)) = known {
            if binds(&cluster, &publisher, &address, p)? {
                if !configured {
                    self.tell_once(
                        format!("removed:{id}"),
                        &format!("market {id} ({address}) is no longer configured: the forecasts committed on it are still revealed, scored and their commitments closed; nothing new is committed"),
                    );
                }
                return Ok(Some((address, id as u64)));
            }
        }
        // Looked up once a run: an unfindable one is alerted once and not looked up every pass (a restart does again).
        if self.told.contains(&format!("unbound:{id}:{epoch}")) {
            return Ok(None);
        }
        let stored = parse32("commitment", &p.commitment)?;
        if self.found.is_none() {
            self.found = Some(self.commitments().await?);
        }
        let on = self
            .found
            .iter()
            .flatten()
            .find(|c| c.epoch == epoch as u64 && c.hash == stored)
            .map(|c| c.market)
            .filter(|m| binds(&cluster, &publisher, m, p).unwrap_or(false));
        if let Some(market) = on {
            self.tell_once(
                format!("moved:{id}:{epoch}"),
                &format!("market {id} round {epoch}: committed on {market}, which the store or the config no longer names for id {id}: revealed, scored and closed there"),
            );
            return Ok(Some((market, id as u64)));
        }
        let why = match known {
            Some((address, true)) => format!("its stored commitment is not on {address}, the configured market of id {id}, and no commitment of this publisher on chain has its hash"),
            Some((address, false)) => format!("its stored commitment is not on {address}, the store's market of id {id}, and no commitment of this publisher on chain has its hash"),
            None => format!("market {id} is not configured and never recorded by this store, and no commitment of this publisher on chain has its hash"),
        };
        if self.told.insert(format!("unbound:{id}:{epoch}")) {
            tracing::warn!(chain = %self.rt.name, market = id, epoch, reason = %why, "solana: a stored forecast's market is not found: not revealed");
            self.rt.bus.publish(
                "forecaster",
                SignalKind::TxFailed {
                    chain: self.rt.name.clone(),
                    action: format!("reveal:{id}:{epoch}"),
                    error: format!(
                        "market {id} round {epoch}: not revealed: {why}; configure the market it was committed on"
                    ),
                },
            );
        }
        Ok(None)
    }

    /// Whether `label` is waiting out its backoff.
    fn backing_off(&self, label: &str) -> bool {
        self.failing.get(label).is_some_and(|(_, at)| Instant::now() < *at)
    }

    /// A step that succeeded: its backoff and its kind's alert are cleared.
    fn succeeded(&mut self, label: &str) {
        self.failing.remove(label);
        self.alerted.remove(alert_key(label));
    }

    /// A step that failed: backoff, a warning, and a `tx_failed` alert once per kind of error on the market's
    /// commits (or reveals) until one succeeds ([`rules::alert_now`], as the crank's; audit L2).
    fn failed(&mut self, label: &str, e: &anyhow::Error) {
        let now = Instant::now();
        self.failing.retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(600));
        let n = self.failing.get(label).map_or(0, |(n, _)| *n).saturating_add(1);
        self.failing.insert(label.to_string(), (n, now + rules::retry_after(n, self.rt.poll)));
        let msg = kronos_common::Redactor::global().redact(&format!("{e:#}"));
        tracing::warn!(chain = %self.rt.name, action = %label, error = %msg, "solana: forecast step failed");
        let kind = super::driver::error_kind(e);
        if !rules::alert_now(self.alerted.get(alert_key(label)).map(String::as_str), &kind) {
            return;
        }
        self.alerted.insert(alert_key(label).to_string(), kind);
        self.rt.bus.publish(
            "forecaster",
            SignalKind::TxFailed { chain: self.rt.name.clone(), action: label.to_string(), error: msg },
        );
    }

    /// Forecasts and commits the round of `market` taking bets, if the window allows and it is not committed yet;
    /// `true`: a commit is still due on it (its window open with the forecast's margin, and not committed: the
    /// round not started yet, or not landed in this pass), so that the sweep waits (AUDIT4 L-a).
    async fn commit(
        &mut self,
        market: Pubkey,
        id: u64,
        cluster: &[u8; 32],
        fence: &crate::lease::Fence,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let rt = self.rt.clone();
        let program = rt.cfg.program;
        let forecast_market = pda(&program, &[FORECAST_MARKET_SEED, market.as_ref()]);
        let (now, _) = rt.clock().await?;
        let got = rt.get_many(&[market, forecast_market]).await?;
        let m = got[0].as_ref().with_context(|| format!("market {market} is gone"))?;
        let m = Market::try_deserialize(&mut m.data.as_slice()).map_err(|e| anyhow::anyhow!("market {market}: {e}"))?;
        if got[1].as_ref().is_none_or(|a| a.owner != program) {
            self.tell_once(
                format!("disabled:{market}"),
                &format!("market {id} ({market}) is not enabled for forecasts (enable_forecasts): none committed"),
            );
            return Ok(false);
        }
        let Some(epoch) = betting_epoch(m.genesis, m.interval, now) else {
            tracing::debug!(chain = %rt.name, market = id, now, "solana: forecast: no round takes bets now");
            return Ok(false);
        };
        let margin = forecast_margin(m.interval) as i64;
        let round_key = round_address(&program, &market, epoch);
        let r = rt.get_many(&[round_key]).await?.pop().flatten();
        // Not started yet: the crank starts it, the next pass commits (due while its window is open).
        let Some(r) =
            r.filter(|a| a.owner == program).and_then(|a| Round::try_deserialize(&mut a.data.as_slice()).ok())
        else {
            tracing::debug!(chain = %rt.name, market = id, epoch, now, "solana: forecast: the betting round is not started yet");
            return Ok(!commit_closed(None, &m, epoch, now.saturating_add(margin)));
        };
        let c = RoundCommit {
            market,
            id,
            interval: m.interval,
            epoch,
            round: r,
            now,
            forecast_market,
            label: format!("commit:{id}:{epoch}"),
        };
        if self.backing_off(&c.label) {
            tracing::debug!(chain = %rt.name, action = %c.label, "solana: forecast: backing off after a failure");
            return Ok(false);
        }
        tracing::debug!(chain = %rt.name, action = %c.label, now, "solana: forecast: commit step");
        let res = self.commit_round(&c, cluster, fence, cancel).await;
        let label = c.label;
        match res {
            Ok(()) => {
                self.succeeded(&label);
                if !commit_open(&c.round, now, margin as u64) {
                    return Ok(false);
                }
                let who = rt.signer().to_string();
                let row = rt.store.prediction(&rt.name, id as i64, epoch as i64, &who).await?;
                Ok(row.is_none_or(|p| p.commit_tx.is_none()))
            }
            Err(e) => {
                self.failed(&label, &e);
                Err(e)
            }
        }
    }

    /// Commits the round [`commit`](Self::commit) found (`c`) under the market's lease term `fence`.
    async fn commit_round(
        &mut self,
        c: &RoundCommit,
        cluster: &[u8; 32],
        fence: &crate::lease::Fence,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let (market, id, interval, epoch, r, now) = (c.market, c.id, c.interval, c.epoch, &c.round, c.now);
        let rt = self.rt.clone();
        let program = rt.cfg.program;
        let chain = rt.name.clone();
        let publisher = rt.signer();
        let who = publisher.to_string();
        let open = commit_open(r, now, forecast_margin(interval));
        let existing = match open {
            true => rt.store.prediction(&chain, id as i64, epoch as i64, &who).await?,
            false => None,
        };
        let stored = match &existing {
            None => Stored::Nothing,
            Some(p) if p.commit_tx.is_some() => Stored::Committed,
            Some(_) => Stored::Uncommitted,
        };
        let row = match (decide::commit_step(open, stored), existing) {
            (CommitStep::Closed | CommitStep::Done, _) => return Ok(()),
            (CommitStep::CommitStored, Some(p)) => p,
            (CommitStep::CommitStored | CommitStep::Forecast, _) => {
                let Some(p) = self.publisher.forecast(&chain, id, now.max(0) as u64, epoch).await? else {
                    return Ok(());
                };
                let mut salt = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut salt);
                let up = decide::direction_up(p.bps);
                let h = commitment_hash(cluster, &publisher, &market, epoch, up, p.bps, salt);
                let row = PredictionRow {
                    chain: chain.clone(),
                    market_id: id as i64,
                    epoch: epoch as i64,
                    publisher: who.clone(),
                    p_up_bps: p.bps as i64,
                    up,
                    salt: FixedBytes::from(salt).to_string(),
                    commitment: FixedBytes::from(h).to_string(),
                    commit_tx: None,
                    reveal_tx: None,
                    outcome: None,
                    hit: None,
                    brier: None,
                };
                // Stored (salt and all) before anything is sent: the salt must outlive a crash to be revealed.
                rt.store.insert_prediction_under(&row, None).await?;
                let stored = rt
                    .store
                    .prediction(&chain, id as i64, epoch as i64, &who)
                    .await?
                    .context("the prediction just stored cannot be read back")?;
                if stored.commit_tx.is_some() {
                    return Ok(());
                }
                self.publisher.last.lock().insert((chain.clone(), id), p.clone());
                rt.bus.publish(
                    "forecaster",
                    SignalKind::Forecast {
                        chain: chain.clone(),
                        market: id,
                        epoch,
                        p_up: p.p_up,
                        horizon_s: u64::from(interval),
                        model: self.publisher.model().to_string(),
                    },
                );
                stored
            }
        };
        let commitment = parse32("commitment", &row.commitment)?;
        // The forecast takes wall time: a commit that can no longer land before the window closes is not sent.
        let (now, _) = rt.clock().await?;
        let open_now = commit_open(r, now, 0);
        let commitment_key = commitment_address(&program, &market, epoch, &publisher);
        let mut ours = None;
        loop {
            match decide::send_step(open_now, ours) {
                SendStep::WindowClosed => {
                    tracing::info!(chain = %chain, market = id, epoch, "solana: the commit window closed while forecasting; skipped");
                    return Ok(());
                }
                SendStep::ReadOnChain => {
                    // A commitment may already be on chain from a run stopped before recording it.
                    let got = rt.get_many(&[commitment_key]).await?.pop().flatten();
                    let on_chain = got
                        .filter(|a| a.owner == program)
                        .and_then(|a| Commitment::try_deserialize(&mut a.data.as_slice()).ok());
                    ours = Some(on_chain.is_some_and(|c| c.hash == commitment));
                }
                SendStep::Recovered => {
                    rt.store.set_commit_tx(&chain, id as i64, epoch as i64, &who, "recovered").await?;
                    self.committed(id, epoch, row.p_up_bps);
                    return Ok(());
                }
                SendStep::Send => break,
            }
        }
        let accounts = acc::Commit {
            publisher,
            registry: pda(&program, &[REGISTRY_SEED]),
            market,
            round: round_address(&program, &market, epoch),
            forecast_market: c.forecast_market,
            commitment: commitment_key,
            record: record_address(&program, &publisher),
            system_program: anchor_lang::system_program::ID,
        };
        let instruction = rt.program_ix(accounts, ix::Commit { epoch, commitment });
        let writable: Vec<Pubkey> = instruction.accounts.iter().filter(|a| a.is_writable).map(|a| a.pubkey).collect();
        let label = &c.label;
        match rt.send_fenced(Some(fence), Action::Done, label, instruction, &writable, cancel).await {
            Ok(Sent::Done(_)) => {
                let tx = self.tx_of(label).await?;
                rt.store.set_commit_tx(&chain, id as i64, epoch as i64, &who, &tx).await?;
                self.committed(id, epoch, row.p_up_bps);
                Ok(())
            }
            // Expired blockhash (or nothing the program said about time): the next pass reads the chain first.
            Ok(Sent::Expired | Sent::NotYet | Sent::AlreadyDone) | Err(SendError::Stopped) => Ok(()),
            Err(SendError::Other(e)) => match e.downcast_ref::<Refused>().map(|r| commit_refusal(&r.error)) {
                Some(CommitRefusal::TooLate) => {
                    tracing::info!(chain = %chain, market = id, epoch, "solana: the round's commit window closed before the commitment landed; skipped");
                    Ok(())
                }
                _ => Err(e.context("commit")),
            },
            Err(SendError::FeedChanged) => anyhow::bail!("commit: the program refused the market's feed"),
        }
    }

    /// The signature of the latest confirmed transaction of `label`.
    /// A commitment of ours is recorded as on chain: counted and said (`prediction_committed`) whether this pass saw
    /// its transaction land or found it there afterwards — a commit whose first status reads failed under load, then
    /// answered "already done", is found by the next pass, and its signal was missing.
    fn committed(&self, id: u64, epoch: u64, p_up_bps: i64) {
        let chain = self.rt.name.clone();
        self.rt
            .metrics
            .predictions_committed
            .get_or_create(&MarketLabel { chain: chain.clone(), market: id.to_string() })
            .inc();
        self.rt.bus.publish(
            "forecaster",
            SignalKind::PredictionCommitted { chain, market: id, epoch, p_up_bps: p_up_bps as u16 },
        );
    }

    async fn tx_of(&self, label: &str) -> Result<String> {
        let txs = self.rt.store.txs_for_action(&self.rt.name, label).await?;
        let who = self.rt.signer().to_string();
        // Only this keeper's own (AUDIT-4 M-a: on a shared store another keeper's commit has the same label).
        txs.into_iter()
            .rev()
            .find(|t| t.status == crate::store::TxStatus::Confirmed && t.signer == who)
            .map(|t| t.tx_hash)
            .with_context(|| format!("{label}: confirmed, but its transaction is not in the store"))
    }

    /// Audit M1: a stored prediction whose commit landed but was not recorded (a stop, a crash, a failed write or a
    /// takeover between the confirmation and `set_commit_tx`) is recorded as committed whatever the commit window,
    /// so it is revealed: from its confirmed transaction (the start's recovery confirms a pending one), else from
    /// the commitment on chain with the stored hash (read at least at the keeper's latest slot). One whose window
    /// closed with neither — by a finalized read whose own clock is past the window ([`never_committed`], AUDIT4
    /// L-c) — was never committed and is left alone.
    async fn recover_uncommitted(&mut self, addresses: &Addresses, cancel: &CancellationToken) -> Result<()> {
        let rt = self.rt.clone();
        let program = rt.cfg.program;
        let chain = rt.name.clone();
        let publisher = rt.signer();
        let who = publisher.to_string();
        let rows = rt.store.uncommitted(&chain, &who).await?;
        let rows: Vec<PredictionRow> =
            rows.into_iter().filter(|p| !self.never_committed.contains(&(p.market_id, p.epoch))).collect();
        if rows.is_empty() {
            return Ok(());
        }
        for p in rows {
            if cancel.is_cancelled() {
                return Ok(());
            }
            // AUDIT5-SOL LOW-4: one bad stored row (an unreadable commitment, …) is skipped, named, and the rows
            // after it are still recovered.
            let (address, id) = match self.market_of(&p, addresses).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    let label = format!("commit:{}:{}", p.market_id, p.epoch);
                    if !self.backing_off(&label) {
                        let e = e.context(format!("stored prediction of market {} round {}", p.market_id, p.epoch));
                        self.failed(&label, &e);
                    }
                    continue;
                }
            };
            let epoch = p.epoch as u64;
            let label = format!("commit:{id}:{epoch}");
            let txs = rt.store.txs_for_action(&chain, &label).await?;
            if let Some(t) = txs.iter().rev().find(|t| t.status == crate::store::TxStatus::Confirmed && t.signer == who)
            {
                if let Some(slot) = t.mined_block {
                    rt.saw_slot(slot as u64);
                }
                tracing::info!(chain = %chain, market = id, epoch, tx = %t.tx_hash, "solana: a confirmed commit not recorded; recorded now");
                rt.store.set_commit_tx(&chain, p.market_id, p.epoch, &who, &t.tx_hash).await?;
                self.committed(id, epoch, p.p_up_bps);
                continue;
            }
            let key = commitment_address(&program, &address, epoch, &publisher);
            // The Clock sysvar in the same read: its clock and slot are the read's own (AUDIT4 L-c).
            let got = rt.get_many(&[key, round_address(&program, &address, epoch), address, CLOCK]).await?;
            let c = got[0]
                .as_ref()
                .filter(|a| a.owner == program)
                .and_then(|a| Commitment::try_deserialize(&mut a.data.as_slice()).ok());
            let stored = parse32("commitment", &p.commitment)?;
            if c.is_some_and(|c| c.hash == stored) {
                tracing::info!(chain = %chain, market = id, epoch, "solana: a commitment on chain not recorded; recorded now");
                rt.store.set_commit_tx(&chain, p.market_id, p.epoch, &who, "recovered").await?;
                self.committed(id, epoch, p.p_up_bps);
                continue;
            }
            let r = got[1]
                .as_ref()
                .filter(|a| a.owner == program)
                .and_then(|a| Round::try_deserialize(&mut a.data.as_slice()).ok());
            let m = got[2]
                .as_ref()
                .filter(|a| a.owner == program)
                .and_then(|a| Market::try_deserialize(&mut a.data.as_slice()).ok())
                .with_context(|| format!("market {address} is unreadable"))?;
            // Nothing in flight either (this task sends the commits; a start settles a pending one first).
            let pending = txs
                .iter()
                .any(|t| matches!(t.status, crate::store::TxStatus::Signed | crate::store::TxStatus::Pending));
            if pending {
                continue;
            }
            let (read_now, read_slot) = clock_of(got[3].as_ref().context("the Clock sysvar is missing")?)?;
            if !commit_closed(r.as_ref(), &m, epoch, read_now) {
                continue;
            }
            let finalized = rt
                .client
                .call(|c| c.get_slot_with_commitment(CommitmentConfig::finalized()).boxed())
                .await
                .with_context(|| format!("{chain}: getSlot (finalized)"))?;
            if never_committed(true, read_slot, finalized) {
                self.never_committed.insert((p.market_id, p.epoch));
            }
        }
        Ok(())
    }

    /// Reveals every stored prediction of this publisher whose round the program now scores.
    async fn reveal_due(&mut self, addresses: &Addresses, cancel: &CancellationToken) -> Result<()> {
        let rt = self.rt.clone();
        let chain = rt.name.clone();
        let who = rt.signer().to_string();
        let pending = rt.store.unrevealed(&chain, &who).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let (now, _) = rt.clock().await?;
        let mut errors = Vec::new();
        for p in pending {
            if cancel.is_cancelled() {
                return Ok(());
            }
            // AUDIT5-SOL LOW-4: one bad stored row (an unreadable commitment, …) is skipped, named, and the rows
            // after it are still revealed.
            let (address, id) = match self.market_of(&p, addresses).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    let label = format!("reveal:{}:{}", p.market_id, p.epoch);
                    if !self.backing_off(&label) {
                        let e = e.context(format!("stored prediction of market {} round {}", p.market_id, p.epoch));
                        self.failed(&label, &e);
                    }
                    continue;
                }
            };
            let epoch = p.epoch as u64;
            let label = format!("reveal:{id}:{epoch}");
            if self.backing_off(&label) {
                continue;
            }
            match self.reveal_one(&p, address, id, epoch, now, cancel).await {
                Ok(()) => {
                    self.succeeded(&label);
                }
                Err(e) => {
                    self.failed(&label, &e);
                    errors.push(label);
                }
            }
        }
        anyhow::ensure!(errors.is_empty(), "failed: {}", errors.join(", "));
        Ok(())
    }

    async fn reveal_one(
        &mut self,
        p: &PredictionRow,
        market: Pubkey,
        id: u64,
        epoch: u64,
        now: i64,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let rt = self.rt.clone();
        let program = rt.cfg.program;
        let publisher = rt.signer();
        let commitment_key = commitment_address(&program, &market, epoch, &publisher);
        // Read at least at the commit's slot (audit M2): a node behind it would show no commitment. The keeper's
        // reads, simulations and preflights all ask for it from here on.
        let commit = rt.store.txs_for_action(&rt.name, &format!("commit:{id}:{epoch}")).await?;
        let who = publisher.to_string();
        if let Some(slot) = commit
            .iter()
            .filter(|t| t.status == crate::store::TxStatus::Confirmed && t.signer == who)
            .filter_map(|t| t.mined_block)
            .max()
        {
            rt.saw_slot(slot as u64);
        }
        let got = rt.get_many(&[commitment_key, round_address(&program, &market, epoch), market]).await?;
        let c = got[0]
            .as_ref()
            .filter(|a| a.owner == program)
            .and_then(|a| Commitment::try_deserialize(&mut a.data.as_slice()).ok());
        let r = got[1]
            .as_ref()
            .filter(|a| a.owner == program)
            .and_then(|a| Round::try_deserialize(&mut a.data.as_slice()).ok());
        let m = got[2]
            .as_ref()
            .filter(|a| a.owner == program)
            .and_then(|a| Market::try_deserialize(&mut a.data.as_slice()).ok())
            .with_context(|| format!("market {market} is unreadable"))?;
        let deadline = expected_deadline(r.as_ref(), &m, epoch, self.reveal_window);
        let stored = parse32("commitment", &p.commitment)?;
        match reveal_step(c.as_ref(), r.as_ref(), now, &stored, deadline) {
            RevealStep::Wait => Ok(()),
            RevealStep::Unrevealable(why) => {
                self.unrevealable(p, id, epoch, why).await?;
                // Its rent comes back now if the program allows it, else the sweep takes it later (H1).
                match c.filter(|c| may_close(c.status, c.deadline, now)) {
                    Some(_) => self.close_logged(market, &id.to_string(), epoch, cancel).await,
                    None => Ok(()),
                }
            }
            RevealStep::Recorded => {
                self.record(p, market, id, epoch, "recovered").await?;
                self.close_logged(market, &id.to_string(), epoch, cancel).await
            }
            RevealStep::Reveal => {
                let salt = parse32("salt", &p.salt)?;
                let accounts = acc::Reveal {
                    publisher,
                    registry: pda(&program, &[REGISTRY_SEED]),
                    market,
                    round: round_address(&program, &market, epoch),
                    commitment: commitment_key,
                    record: record_address(&program, &publisher),
                };
                let data = ix::Reveal { epoch, up: p.up, probability_up_bps: p.p_up_bps as u16, salt };
                let instruction = rt.program_ix(accounts, data);
                let writable: Vec<Pubkey> =
                    instruction.accounts.iter().filter(|a| a.is_writable).map(|a| a.pubkey).collect();
                let label = format!("reveal:{id}:{epoch}");
                match rt.send(Action::Done, &label, instruction, &writable, cancel).await {
                    Ok(Sent::Done(_)) => {
                        let tx = self.tx_of(&label).await?;
                        self.record(p, market, id, epoch, &tx).await?;
                        // Revealed and recorded: the commitment's rent comes back (H1).
                        self.close_logged(market, &id.to_string(), epoch, cancel).await
                    }
                    Ok(Sent::Expired | Sent::NotYet | Sent::AlreadyDone) | Err(SendError::Stopped) => Ok(()),
                    Err(SendError::Other(e)) => match e.downcast_ref::<Refused>().map(|r| reveal_refusal(&r.error)) {
                        Some(RevealRefusal::NotYet | RevealRefusal::Final) => Ok(()),
                        Some(RevealRefusal::Unrevealable) => {
                            self.unrevealable(p, id, epoch, "the program refused the reveal for good").await
                        }
                        _ => Err(e.context("reveal")),
                    },
                    Err(SendError::FeedChanged) => anyhow::bail!("reveal: the program refused the market's feed"),
                }
            }
        }
    }

    /// [`close`](Self::close), a failure only logged: the commitment is final and recorded, and the sweep tries
    /// again.
    async fn close_logged(&self, market: Pubkey, id: &str, epoch: u64, cancel: &CancellationToken) -> Result<()> {
        if let Err(e) = self.close(market, id, epoch, cancel).await {
            let msg = kronos_common::Redactor::global().redact(&format!("{e:#}"));
            tracing::warn!(chain = %self.rt.name, market = id, epoch, error = %msg, "solana: closing a commitment failed; the sweep tries again");
        }
        Ok(())
    }

    /// Closes this publisher's commitment of `market`'s round `epoch` (H1: `close_commitment`, the rent back to the
    /// keeper's signer; a commitment still open past its deadline is expired first by the program, so the track
    /// record counts it). Closed already (`AccountNotInitialized`) is done. `id` names the market in the label.
    async fn close(&self, market: Pubkey, id: &str, epoch: u64, cancel: &CancellationToken) -> Result<()> {
        let rt = &self.rt;
        let program = rt.cfg.program;
        let publisher = rt.signer();
        let accounts = acc::CloseCommitment {
            publisher,
            commitment: commitment_address(&program, &market, epoch, &publisher),
            record: record_address(&program, &publisher),
        };
        let instruction = rt.program_ix(accounts, ix::CloseCommitment {});
        let writable: Vec<Pubkey> = instruction.accounts.iter().filter(|a| a.is_writable).map(|a| a.pubkey).collect();
        let label = format!("close_commitment:{id}:{epoch}");
        match rt.send(Action::Done, &label, instruction, &writable, cancel).await {
            Ok(Sent::Done(_)) => {
                tracing::info!(chain = %rt.name, market = id, epoch, "solana: commitment closed, its rent is back");
                Ok(())
            }
            Ok(Sent::Expired | Sent::NotYet | Sent::AlreadyDone) | Err(SendError::Stopped) => Ok(()),
            Err(SendError::Other(e)) => match e.downcast_ref::<Refused>().and_then(|r| custom_code(&r.error)) {
                Some(c) if c == anchor_lang::error::ErrorCode::AccountNotInitialized as u32 => Ok(()),
                _ => Err(e.context(label)),
            },
            Err(SendError::FeedChanged) => anyhow::bail!("{label}: the program refused the market's feed"),
        }
    }

    /// This publisher's commitments on chain: `getProgramAccounts` for the commitments whose publisher is this
    /// keeper's signer (memcmp at the offset the program crate's serialisation gives), each checked — owned by the
    /// program, this publisher's, at its own address.
    async fn commitments(&self) -> Result<Vec<Commitment>> {
        use anchor_lang::{Discriminator, Space};
        use solana_client::rpc_config::{RpcAccountInfoConfig, RpcProgramAccountsConfig, UiAccountEncoding};
        use solana_client::rpc_filter::{Memcmp, RpcFilterType};
        let rt = &self.rt;
        let program = rt.cfg.program;
        let publisher = rt.signer();
        let config = RpcProgramAccountsConfig {
            filters: Some(vec![
                RpcFilterType::DataSize((8 + Commitment::INIT_SPACE) as u64),
                RpcFilterType::Memcmp(Memcmp::new_raw_bytes(0, Commitment::DISCRIMINATOR.to_vec())),
                RpcFilterType::Memcmp(Memcmp::new_raw_bytes(publisher_offset(), publisher.to_bytes().to_vec())),
            ]),
            account_config: RpcAccountInfoConfig {
                encoding: Some(UiAccountEncoding::Base64),
                commitment: Some(CommitmentConfig::confirmed()),
                ..Default::default()
            },
            ..Default::default()
        };
        let found = rt
            .client
            .call(|c| c.get_program_ui_accounts_with_config(&program, config.clone()).boxed())
            .await
            .with_context(|| format!("{}: getProgramAccounts (this publisher's commitments)", rt.name))?;
        let mut out = Vec::new();
        for (k, ui) in found {
            let Some(a) = ui.decode::<solana_account::Account>() else { continue };
            let Ok(c) = Commitment::try_deserialize(&mut a.data.as_slice()) else { continue };
            // What the node said is checked: this publisher's commitment at its own address.
            if a.owner == program
                && c.publisher == publisher
                && k == commitment_address(&program, &c.market, c.epoch, &publisher)
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Closes this publisher's commitments the program lets go (H1: the backlog of a run stopped before closing,
    /// of a keeper that did not close them): `getProgramAccounts` for the commitments whose publisher is this
    /// keeper's signer (memcmp at the offset the program crate's serialisation gives), at most [`SWEEP_PER_PASS`]
    /// closed per sweep (AUDIT4 L-a); `true`: some are left for the next passes. Commitments in any status can be
    /// closable (revealed, expired, committed past the deadline), so the status is decided here
    /// ([`sweep_closes`]), not filtered by the node; the ones left are this keeper's open commitments, a few per
    /// market.
    async fn sweep(&mut self, addresses: &Addresses, cancel: &CancellationToken) -> Result<bool> {
        let rt = self.rt.clone();
        let found = self.commitments().await?;
        let (now, _) = rt.clock().await?;
        // The stored, unrevealed predictions by their commitment hash, which binds the market it was committed on
        // (AUDIT5-SOL M3: not by the market of their id, which may name another market now).
        let pending: HashSet<[u8; 32]> = rt
            .store
            .unrevealed(&rt.name, &rt.signer().to_string())
            .await?
            .iter()
            .filter_map(|p| parse32("commitment", &p.commitment).ok())
            .collect();
        let mut closable: Vec<Commitment> =
            found.into_iter().filter(|c| sweep_closes(c.status, c.deadline, now, pending.contains(&c.hash))).collect();
        closable.sort_by_key(|c| c.deadline);
        let mut errors = Vec::new();
        let batch = sweep_batch(closable.len());
        for c in closable.iter().take(batch) {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            let id = addresses
                .iter()
                .find(|(_, (a, _))| *a == c.market)
                .map_or(c.market.to_string(), |(id, _)| id.to_string());
            if let Err(e) = self.close(c.market, &id, c.epoch, cancel).await {
                errors.push(format!("{e:#}"));
            }
        }
        let left = closable.len() - batch;
        if left > 0 {
            tracing::info!(chain = %rt.name, left, "solana: more closable commitments than one pass closes; the next passes with no commit due take them");
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(left > 0)
    }

    /// Stores a prediction that can no longer be revealed (as the EVM publisher does) and refreshes the record.
    async fn unrevealable(&self, p: &PredictionRow, id: u64, epoch: u64, why: &str) -> Result<()> {
        let rt = &self.rt;
        tracing::warn!(chain = %rt.name, market = id, epoch, reason = why, "solana: prediction can no longer be revealed");
        rt.store
            .set_revealed(
                &rt.name,
                id as i64,
                epoch as i64,
                &p.publisher,
                &Reveal { tx: "-", outcome: Outcome::None, hit: None, brier: None },
            )
            .await?;
        // No record account yet when none of this publisher's commitments ever landed.
        self.track_record().await.map(|_| ())
    }

    /// Records a revealed commitment (read from the chain: its outcome and score) and the publisher's record.
    async fn record(&self, p: &PredictionRow, market: Pubkey, id: u64, epoch: u64, tx: &str) -> Result<()> {
        let rt = &self.rt;
        let program = rt.cfg.program;
        let chain = rt.name.clone();
        let key = commitment_address(&program, &market, epoch, &rt.signer());
        let c = rt
            .get_many(&[key])
            .await?
            .pop()
            .flatten()
            .filter(|a| a.owner == program)
            .and_then(|a| Commitment::try_deserialize(&mut a.data.as_slice()).ok())
            .with_context(|| format!("commitment {key} of round {epoch} is unreadable after its reveal"))?;
        anyhow::ensure!(c.status == CommitStatus::Revealed, "commitment {key} is {:?}, not revealed", c.status);
        let o = outcome(c.outcome);
        let (hit, brier) = decide::score(o, c.hit, u64::from(c.brier));
        rt.store
            .set_revealed(
                &chain,
                id as i64,
                epoch as i64,
                &p.publisher,
                &Reveal { tx, outcome: o, hit, brier: brier.map(|b| b as i64) },
            )
            .await?;
        let label = MarketLabel { chain: chain.clone(), market: id.to_string() };
        rt.metrics.predictions_revealed.get_or_create(&label).inc();
        // Only revealed values reach /metrics: an earlier one would leak the forecast before the lock.
        rt.metrics.forecast_p_up_bps.get_or_create(&label).set(p.p_up_bps);
        let rec = self.track_record().await?.context("no track record on chain after a reveal")?;
        let scored = rec.hits + rec.misses;
        rt.bus.publish(
            "forecaster",
            SignalKind::PredictionRevealed {
                chain,
                market: id,
                epoch,
                p_up_bps: p.p_up_bps as u16,
                outcome: o,
                hit,
                scored,
                hits: rec.hits,
                mean_brier: decide::mean_brier(rec.brier_sum, scored),
            },
        );
        Ok(())
    }

    /// The publisher's on-chain record at the cluster's clock (open commitments past their deadline counted as
    /// expired, as the program's `track_record` does), stored; `None` while the publisher has no record account.
    async fn track_record(&self) -> Result<Option<registry::RecordView>> {
        let rt = &self.rt;
        let program = rt.cfg.program;
        let key = record_address(&program, &rt.signer());
        let (now, _) = rt.clock().await?;
        let rec = rt
            .get_many(&[key])
            .await?
            .pop()
            .flatten()
            .filter(|a| a.owner == program)
            .map(|a| TrackRecord::try_deserialize(&mut a.data.as_slice()))
            .transpose()
            .with_context(|| format!("track record {key} is not a TrackRecord"))?;
        let Some(rec) = rec else { return Ok(None) };
        let v = rec.view(now);
        rt.store
            .upsert_track_record(&TrackRecordRow {
                chain: rt.name.clone(),
                publisher: rt.signer().to_string(),
                committed: v.committed as i64,
                hits: v.hits as i64,
                misses: v.misses as i64,
                voided: v.voided as i64,
                expired: v.expired as i64,
                brier_sum: v.brier_sum.to_string(),
            })
            .await?;
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{self, market};
    use super::*;
    use kronos_market::state::{CancelReason, RoundStatus};

    const START: i64 = testing::GENESIS;
    const IV: i64 = testing::IV as i64;

    /// A round 4 starting at `START` (not the market's round 4: the tests that need both move its genesis back), with
    /// the test market's parameters.
    fn round(status: RoundStatus) -> Round {
        let times = (START, START + IV, START + 2 * IV);
        let r = Round::opened(Pubkey::new_unique(), 4, times, testing::params(), Pubkey::new_unique(), 1);
        Round { status, ..r }
    }

    fn commitment(status: CommitStatus, hash: [u8; 32], deadline: i64) -> Commitment {
        Commitment {
            publisher: Pubkey::new_unique(),
            market: Pubkey::new_unique(),
            epoch: 4,
            hash,
            status,
            deadline,
            up: false,
            probability_up_bps: 0,
            outcome: SolOutcome::None,
            hit: false,
            brier: 0,
            bump: 1,
        }
    }

    fn refused(code: u32) -> TransactionError {
        TransactionError::InstructionError(2, InstructionError::Custom(code))
    }

    #[test]
    fn commits_are_taken_from_the_start_until_the_cutoff_with_the_margin_left() {
        let r = round(RoundStatus::Open);
        // Lock at START + 300, cutoff 30: the program takes commits while now < START + 270.
        assert!(!commit_open(&r, START - 1, 0), "before the round started");
        assert!(commit_open(&r, START, 0));
        assert!(commit_open(&r, START + 269, 0));
        assert!(!commit_open(&r, START + 270, 0), "the program's CommitTooLate from here");
        // A pass starts a forecast only with a fifth of the round left before the cutoff.
        assert_eq!(forecast_margin(IV as u32), 60);
        assert!(commit_open(&r, START + 209, 60));
        assert!(!commit_open(&r, START + 210, 60));
        // Together with the EVM rules: a late pass neither forecasts nor sends.
        assert_eq!(decide::commit_step(commit_open(&r, START + 250, 60), Stored::Nothing), CommitStep::Closed);
        assert_eq!(decide::send_step(commit_open(&r, START + 270, 0), None), SendStep::WindowClosed);
    }

    #[test]
    fn the_epoch_taking_bets_follows_the_market_clock() {
        assert_eq!(betting_epoch(START, 300, START - 1), None);
        assert_eq!(betting_epoch(START, 300, START), Some(0));
        assert_eq!(betting_epoch(START, 300, START + 299), Some(0));
        assert_eq!(betting_epoch(START, 300, START + 300), Some(1));
        assert_eq!(betting_epoch(START, 0, START + 300), None);
    }

    #[test]
    fn a_reveal_is_sent_only_once_the_program_scores_the_round() {
        let h = [7u8; 32];
        let deadline = START + 2 * IV + 600 + 86_400;
        let waiting = commitment(CommitStatus::Committed, h, deadline);
        let before_close = START + 2 * IV - 1;
        let after = START + 2 * IV + 20;
        // Not final: open or locked within the settle window.
        assert_eq!(
            reveal_step(Some(&waiting), Some(&round(RoundStatus::Open)), before_close, &h, deadline),
            RevealStep::Wait
        );
        assert_eq!(
            reveal_step(Some(&waiting), Some(&round(RoundStatus::Locked)), after, &h, deadline),
            RevealStep::Wait
        );
        // Settled, or refunded with a price outcome (a tie, a one-sided pool): revealed.
        let settled = Round { outcome: SolOutcome::Up, ..round(RoundStatus::Settled) };
        assert_eq!(reveal_step(Some(&waiting), Some(&settled), after, &h, deadline), RevealStep::Reveal);
        let tie = Round { cancel_reason: CancelReason::Tie, outcome: SolOutcome::Tie, ..round(RoundStatus::Cancelled) };
        assert_eq!(reveal_step(Some(&waiting), Some(&tie), after, &h, deadline), RevealStep::Reveal);
        let stale = Round { cancel_reason: CancelReason::ClosePriceStale, ..round(RoundStatus::Cancelled) };
        assert_eq!(
            reveal_step(Some(&waiting), Some(&stale), after, &h, deadline),
            RevealStep::Reveal,
            "voided on chain"
        );
        // No outcome because nobody settled it in time: never revealable (it expires at its deadline).
        let expired = Round { cancel_reason: CancelReason::Expired, ..round(RoundStatus::Cancelled) };
        assert!(matches!(
            reveal_step(Some(&waiting), Some(&expired), after, &h, deadline),
            RevealStep::Unrevealable(_)
        ));
        let unsettled = START + 2 * IV + 601;
        assert!(matches!(
            reveal_step(Some(&waiting), Some(&round(RoundStatus::Locked)), unsettled, &h, deadline),
            RevealStep::Unrevealable(_)
        ));
        // The round not read (the program keeps it until the deadline): wait.
        assert_eq!(reveal_step(Some(&waiting), None, after, &h, deadline), RevealStep::Wait);
        // The commitment decides first.
        // No commitment account (audit M2): a node behind the commit is waited for until the deadline, not final.
        assert_eq!(reveal_step(None, Some(&settled), after, &h, deadline), RevealStep::Wait);
        assert_eq!(reveal_step(None, None, deadline, &h, deadline), RevealStep::Wait);
        assert!(matches!(reveal_step(None, Some(&settled), deadline + 1, &h, deadline), RevealStep::Unrevealable(_)));
        let revealed = commitment(CommitStatus::Revealed, h, deadline);
        assert_eq!(reveal_step(Some(&revealed), Some(&settled), after, &h, deadline), RevealStep::Recorded);
        let marked = commitment(CommitStatus::Expired, h, deadline);
        assert!(matches!(reveal_step(Some(&marked), Some(&settled), after, &h, deadline), RevealStep::Unrevealable(_)));
        assert!(matches!(
            reveal_step(Some(&waiting), Some(&settled), after, &[8u8; 32], deadline),
            RevealStep::Unrevealable(_)
        ));
        assert_eq!(
            reveal_step(Some(&waiting), Some(&settled), deadline, &h, deadline),
            RevealStep::Reveal,
            "inclusive"
        );
        assert!(matches!(
            reveal_step(Some(&waiting), Some(&settled), deadline + 1, &h, deadline),
            RevealStep::Unrevealable(_)
        ));
    }

    #[test]
    fn a_commitment_is_closed_once_final_and_the_sweep_leaves_an_unrecorded_reveal_to_the_reveal_pass() {
        let deadline = START + 2 * IV + 600 + 86_400;
        // The program's close_commitment: revealed or expired at once; committed only past its deadline.
        assert!(may_close(CommitStatus::Revealed, deadline, START));
        assert!(may_close(CommitStatus::Expired, deadline, START));
        assert!(!may_close(CommitStatus::Committed, deadline, deadline), "CommitmentOpen until the deadline");
        assert!(may_close(CommitStatus::Committed, deadline, deadline + 1));
        // The sweep: the same, except a reveal the store has not recorded yet (the reveal pass reads its score).
        assert!(sweep_closes(CommitStatus::Revealed, deadline, START, false));
        assert!(!sweep_closes(CommitStatus::Revealed, deadline, START, true));
        assert!(sweep_closes(CommitStatus::Expired, deadline, START, true));
        assert!(sweep_closes(CommitStatus::Committed, deadline, deadline + 1, true));
        assert!(!sweep_closes(CommitStatus::Committed, deadline, deadline, false));
    }

    #[test]
    fn commits_come_before_the_sweep_and_a_backlog_is_closed_a_few_per_pass() {
        let every = SWEEP_EVERY;
        // At start (no sweep yet in this run), after downtime: not while a commit is due (AUDIT4 L-a) ...
        assert!(!sweep_now(true, false, None), "a due commit waits for the sweep");
        assert!(!sweep_now(true, true, Some(every)), "nor for a backlog");
        // ... but in the first pass with none.
        assert!(sweep_now(false, false, None));
        assert!(!sweep_now(false, false, Some(every - Duration::from_secs(1))));
        assert!(sweep_now(false, false, Some(every)));
        // A backlog is taken on in the next pass with nothing due, a few at a time.
        assert!(sweep_now(false, true, Some(Duration::ZERO)));
        assert_eq!(sweep_batch(40), SWEEP_PER_PASS);
        assert_eq!(sweep_batch(2), 2);
    }

    #[test]
    fn a_negative_read_is_final_only_past_the_window_at_its_own_slot_and_finalized() {
        let m = Market { genesis: START - 4 * IV, ..market() };
        // Round 4's window closes at START + IV - 30. A lagging node's read (its clock before the close) shows no
        // commitment that may yet be there: not final, whatever the pass's clock says (AUDIT4 L-c).
        let lagging = commit_closed(None, &m, 4, START + IV - 31);
        assert!(!never_committed(lagging, 100, 200));
        let past = commit_closed(None, &m, 4, START + IV - 30);
        assert!(never_committed(past, 200, 200));
        assert!(!never_committed(past, 201, 200), "a read not finalized yet");
    }

    #[test]
    fn a_removed_market_s_prediction_is_revealed_only_where_its_commitment_binds() {
        let (cluster, publisher, market) = ([3u8; 32], Pubkey::new_unique(), Pubkey::new_unique());
        let salt = [9u8; 32];
        let h = commitment_hash(&cluster, &publisher, &market, 5, true, 6_100, salt);
        let p = PredictionRow {
            chain: "solana".into(),
            market_id: 1,
            epoch: 5,
            publisher: publisher.to_string(),
            p_up_bps: 6_100,
            up: true,
            salt: FixedBytes::from(salt).to_string(),
            commitment: FixedBytes::from(h).to_string(),
            commit_tx: None,
            reveal_tx: None,
            outcome: None,
            hit: None,
            brier: None,
        };
        assert!(binds(&cluster, &publisher, &market, &p).unwrap());
        // The id now names another market, or another publisher's key: not there.
        assert!(!binds(&cluster, &publisher, &Pubkey::new_unique(), &p).unwrap());
        assert!(!binds(&cluster, &Pubkey::new_unique(), &market, &p).unwrap());
        assert!(binds(&cluster, &publisher, &market, &PredictionRow { p_up_bps: 70_000, ..p }).is_err());
    }

    #[test]
    fn the_sweep_filters_on_the_publisher_where_the_program_stores_it() {
        use anchor_lang::AccountSerialize;
        let publisher = Pubkey::new_unique();
        let c = Commitment { publisher, ..commitment(CommitStatus::Committed, [1; 32], START) };
        let mut data = Vec::new();
        c.try_serialize(&mut data).unwrap();
        let at = publisher_offset();
        assert_eq!(&data[at..at + 32], publisher.as_ref());
        assert_eq!(at, 8, "right after the discriminator");
    }

    #[test]
    fn the_expected_deadline_is_the_program_s_from_the_round_or_once_closed_from_its_market() {
        let r = round(RoundStatus::Settled);
        // Round 4 of the test round: close at START + 2 IV, settle window 600.
        assert_eq!(expected_deadline(Some(&r), &market(), 4, 86_400), START + 2 * IV + 600 + 86_400);
        // Closed: the market's genesis and interval give the same close.
        let m = market();
        let genesis = START - 4 * IV;
        assert_eq!(expected_deadline(None, &Market { genesis, ..m }, 4, 86_400), START + 2 * IV + 600 + 86_400);
    }

    #[test]
    fn the_commit_window_closes_at_the_cutoff_from_the_round_or_its_market() {
        let r = round(RoundStatus::Open);
        // Round 4 locks at START + IV, cutoff 30.
        assert!(!commit_closed(Some(&r), &market(), 4, START + IV - 31));
        assert!(commit_closed(Some(&r), &market(), 4, START + IV - 30));
        let m = Market { genesis: START - 4 * IV, ..market() };
        assert!(!commit_closed(None, &m, 4, START + IV - 31));
        assert!(commit_closed(None, &m, 4, START + IV - 30));
    }

    #[test]
    fn forecast_alerts_are_keyed_by_step_kind_and_market_not_by_epoch() {
        assert_eq!(alert_key("commit:1:41"), alert_key("commit:1:42"), "one kind told once across rounds");
        assert_ne!(alert_key("commit:1:41"), alert_key("reveal:1:41"));
        assert_ne!(alert_key("commit:1:41"), alert_key("commit:2:41"));
        // The crank's rule on top: a kind already told is not told again; a new kind is.
        assert!(!rules::alert_now(Some("rpc"), "rpc"));
        assert!(rules::alert_now(Some("rpc"), "program: CommitTooLate"));
    }

    #[test]
    fn registry_refusals_are_read_by_variant() {
        let code = |e: MarketError| u32::from(e);
        assert_eq!(commit_refusal(&refused(code(MarketError::CommitTooLate))), CommitRefusal::TooLate);
        assert_eq!(commit_refusal(&refused(code(MarketError::WrongRound))), CommitRefusal::Other);
        assert_eq!(commit_refusal(&TransactionError::AccountInUse), CommitRefusal::Other);
        assert_eq!(reveal_refusal(&refused(code(MarketError::OutcomeNotFinal))), RevealRefusal::NotYet);
        assert_eq!(reveal_refusal(&refused(code(MarketError::AlreadyFinal))), RevealRefusal::Final);
        for e in [
            MarketError::RevealWindowClosed,
            MarketError::OutcomeMissed,
            MarketError::CommitmentMismatch,
            MarketError::InconsistentForecast,
        ] {
            assert_eq!(reveal_refusal(&refused(code(e))), RevealRefusal::Unrevealable, "{e:?}");
        }
        // No commitment account at the simulation/preflight's slot (audit M2): tried again, the read decides.
        let missing = anchor_lang::error::ErrorCode::AccountNotInitialized as u32;
        assert_eq!(reveal_refusal(&refused(missing)), RevealRefusal::NotYet);
        assert_eq!(reveal_refusal(&refused(code(MarketError::CommitTooLate))), RevealRefusal::Other);
        assert_eq!(reveal_refusal(&TransactionError::BlockhashNotFound), RevealRefusal::Other);
    }

    #[test]
    fn the_commitment_is_the_program_s_own_hash_of_the_stored_forecast() {
        let (cluster, publisher, market) = ([3u8; 32], Pubkey::new_unique(), Pubkey::new_unique());
        let salt = [9u8; 32];
        let h = commitment_hash(&cluster, &publisher, &market, 5, true, 6_100, salt);
        let f = Forecast { up: true, probability_up_bps: 6_100, salt };
        assert_eq!(h, registry::commitment_hash(&cluster, &publisher, &market, 5, &f));
        assert_ne!(h, commitment_hash(&cluster, &publisher, &market, 5, true, 6_100, [8u8; 32]));
        // Stored as hex and read back.
        assert_eq!(parse32("salt", &FixedBytes::from(salt).to_string()).unwrap(), salt);
        assert!(parse32("salt", "0x12").is_err());
        assert_eq!(outcome(SolOutcome::Down), Outcome::Down);
    }

    /// Issue 15: a recorded round gives the forecaster its lock price at its lock time and its close price at its
    /// close time, only the prices the program took (a refund for an unusable price drops that price, and the close
    /// with an unusable lock).
    #[test]
    fn a_recorded_round_gives_the_forecaster_the_prices_the_program_took_at_its_times() {
        use super::super::driver::checkpoint_prices;
        use crate::store::{RoundRow, RoundState};
        use kronos_contracts::CancelReason as Reason;
        let m = market();
        let row = |state, reason, lock: Option<&str>, close: Option<&str>| RoundRow {
            chain: "solana".into(),
            market_id: 1,
            epoch: 4,
            state,
            lock_price: lock.map(str::to_string),
            close_price: close.map(str::to_string),
            outcome: None,
            reason,
            up_wei: "0".into(),
            down_wei: "0".into(),
            reward_wei: None,
            treasury_fee_wei: None,
            delay_blocks: None,
        };
        let (lock_t, close_t) = ((START + 5 * IV) as u64, (START + 6 * IV) as u64);
        let both = vec![(lock_t, 65_000.5), (close_t, 65_100.0)];
        let (l, c) = (Some("65000.5"), Some("65100"));
        assert_eq!(checkpoint_prices(&m, &row(RoundState::Locked, None, l, None)), vec![(lock_t, 65_000.5)]);
        assert_eq!(checkpoint_prices(&m, &row(RoundState::Settled, None, l, c)), both);
        // Refunded with both prices usable (a tie, a one-sided pool): both are prices.
        assert_eq!(checkpoint_prices(&m, &row(RoundState::Cancelled, Some(Reason::OneSidedPool), l, c)), both);
        assert_eq!(checkpoint_prices(&m, &row(RoundState::Cancelled, Some(Reason::Tie), l, l)).len(), 2);
        // A stale close: the lock only; a stale lock: nothing.
        let stale_close = row(RoundState::Cancelled, Some(Reason::ClosePriceUnusable), l, c);
        assert_eq!(checkpoint_prices(&m, &stale_close), vec![(lock_t, 65_000.5)]);
        let stale_lock = row(RoundState::Cancelled, Some(Reason::LockPriceUnusable), l, None);
        assert_eq!(checkpoint_prices(&m, &stale_lock), vec![]);
        // Expired before its lock: no price was read.
        assert_eq!(checkpoint_prices(&m, &row(RoundState::Cancelled, Some(Reason::Expired), None, None)), vec![]);
    }
}
