//! One Solana cluster at run time: its markets, read at `confirmed`, cranked at the right times by
//! [`rules::next_action`]; the sender (simulate for compute units, price from recent fees, send with
//! `maxRetries = 0` and preflight, re-broadcast every `rebroadcast_s`, give up on the blockhash once it can no
//! longer land so that the next pass re-reads the round and signs again only if the action is still needed); the
//! store rows, signals, metrics and health of an EVM chain, under the catalogue key (`solana`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor_lang::prelude::Pubkey;
use anchor_lang::solana_program::instruction::Instruction;
use anchor_lang::{AccountDeserialize, Discriminator, InstructionData, Space, ToAccountMetas};
use anyhow::{Context, Result};
use futures::FutureExt;
use kronos_common::signals::SignalKind;
use kronos_common::{Bus, Decimal};
use kronos_market::chainlink::{self, LookupError};
use kronos_market::state::{
    CancelReason as SolCancel, FeedApproval, Market, Outcome as SolOutcome, Round, RoundStatus, FEED_SEED, ROUND_SEED,
};
use kronos_market::{accounts as acc, instruction as ix};
use parking_lot::Mutex;
use solana_client::client_error::ClientErrorKind;
use solana_client::rpc_config::{
    RpcAccountInfoConfig, RpcProgramAccountsConfig, RpcSendTransactionConfig, RpcSimulateTransactionConfig,
};
use solana_client::rpc_filter::{Memcmp, RpcFilterType};
use solana_client::rpc_request::{RpcError, RpcResponseErrorData};
use solana_commitment_config::{CommitmentConfig, CommitmentLevel};
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_keypair::Keypair;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::Transaction;
use solana_transaction_error::TransactionError;
use solana_transaction_status_client_types::{TransactionConfirmationStatus, UiTransactionEncoding};
use tokio_util::sync::CancellationToken;

use super::client::SolClient;
use super::rules::{self, Action, ErrorClass, SendStep, SigStatus};
use super::SolanaConfig;
use crate::metrics::{ChainLabel, Metrics, ResultLabel};
use crate::store::{Outcome, RoundRow, RoundState, Store, TxRow, TxStatus};
use kronos_contracts::CancelReason;

/// The Clock sysvar's address.
pub(super) const CLOCK: Pubkey = anchor_lang::prelude::pubkey!("SysvarC1ock11111111111111111111111111111111");

/// Counters of the sender (copied into `/metrics`).
#[derive(Default)]
pub struct SolCounters {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub rebroadcast: AtomicU64,
    pub resigned: AtomicU64,
    pub failed: AtomicU64,
}

/// A market this keeper drives (or refuses).
#[derive(Debug, Clone)]
pub struct MarketInfo {
    pub address: Pubkey,
    pub id: u64,
    pub feed: Pubkey,
    /// Why the keeper does not drive it now (issue 20, item 1), if it does not.
    pub refused: Option<String>,
}

/// One Solana cluster at run time.
pub struct SolanaRuntime {
    pub name: String,
    pub cfg: SolanaConfig,
    pub client: SolClient,
    signer: Keypair,
    /// The forecaster whose commit/reveal this cluster publishes (`forecasts = true`): [`super::forecast`].
    publisher: std::sync::OnceLock<Arc<crate::publisher::Publisher>>,
    pub health: Mutex<crate::chain::Health>,
    pub markets: Mutex<Vec<MarketInfo>>,
    pub counters: SolCounters,
    pub(super) store: Store,
    pub(super) bus: Bus,
    pub(super) metrics: Arc<Metrics>,
    pub(super) poll: Duration,
    /// Per (market account, epoch): the round state last recorded (store and signals), so each change is told once.
    seen: Mutex<HashMap<(Pubkey, u64), RoundStatus>>,
    /// Configured markets (or discovered ones of a listed creator) that cannot be driven, with why: `/health`.
    skipped: Mutex<Vec<String>>,
    /// AUDIT5-SOL M2: per market whose pass is in flight, the last error its transaction's follow met (a status that
    /// cannot be read, …): kept here, not in the health, until the pass completes.
    pass_errors: Mutex<HashMap<Pubkey, String>>,
    /// Markets whose pass has been in flight longer than [`rules::PASS_STUCK_AFTER`] (key: the market, [`PASS`]), or
    /// one of whose actions keeps expiring ([`rules::expiring_stuck`]; key: the market, the action), one line each:
    /// unhealthy while any is listed (`/health` says which), so health changes once per stuck pass, not per poll.
    stuck: Mutex<BTreeMap<(Pubkey, &'static str), String>>,
    /// AUDIT6-SOL M3: per (market account, action), its transactions' expiries in a row, until one lands.
    expiring: Mutex<HashMap<(Pubkey, &'static str), rules::Expiring>>,
    /// Discovery (no `markets`): only markets whose authority is one of these are driven (audit SOL H3).
    creators: Vec<Pubkey>,
    /// The slot of the keeper's latest confirmed transaction: reads ask for at least this slot
    /// (`minContextSlot`), so a lagging endpoint never shows a step as still needed after it was done (SOL M2).
    min_slot: AtomicU64,
    /// Per step (its label): how many times in a row it failed, and when it may be tried again (SOL M7).
    failing: Mutex<HashMap<String, (u32, Instant)>>,
    /// Per (market account, action): the kind of error last alerted for it, until the action succeeds (SOL L4).
    alerted: Mutex<HashMap<(Pubkey, &'static str), String>>,
    /// Per (market account, epoch): the slot of the pass that first found the round due to settle (or refund).
    due_slot: Mutex<HashMap<(Pubkey, u64), u64>>,
    /// Per (market account, epoch): the keeper's settle delay in slots (confirmed slot − due slot), for its record.
    delays: Mutex<HashMap<(Pubkey, u64), u64>>,
    /// The markets whose recorded rounds were read from the store since this process (or its lease term) began.
    seeded: Mutex<std::collections::HashSet<Pubkey>>,
    /// Per market account: the epoch in which its rounds out of the live window were last looked for (AUDIT-2 A1).
    reclaimed: Mutex<HashMap<Pubkey, u64>>,
    /// Who holds leases for this keeper (`keeper.keeper_id`) and their timing (M3).
    lease_key: (String, crate::lease::LeaseTiming),
    /// Per market (its id): its lease and the store fenced by its term (M3).
    leases: Mutex<HashMap<u64, Arc<MarketLease>>>,
}

/// One market's lease (M3): one keeper leads each Solana market; the others stand by. The leader's store writes are
/// fenced by its term, and every broadcast is checked against it.
struct MarketLease {
    lease: Arc<crate::lease::Lease>,
    /// The store whose round rows are written only under the term in `slot`.
    store: Store,
    slot: crate::store::FenceSlot,
    /// Stops the renewals once the runtime's last pass has ended (a held term is then given up).
    renewals: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The [`SolanaRuntime::stuck`] key's second part for a market's pass in flight too long.
const PASS: &str = "pass";

/// The [`SolanaRuntime::stuck`] key's second part for a transaction followed too long outside a market's pass
/// (the forecast task's), its first part the transaction's first writable account.
const FOLLOW: &str = "follow";

/// Takes a follow's line out of [`SolanaRuntime::stuck`] when the follow ends, however it ends (AUDIT6-SOL L3).
struct Unstick<'a> {
    stuck: &'a Mutex<BTreeMap<(Pubkey, &'static str), String>>,
    key: Option<(Pubkey, &'static str)>,
}

impl Drop for Unstick<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.stuck.lock().remove(&k);
        }
    }
}

/// One market's pass running as its own task ([`SolanaRuntime::tick`]); aborted if dropped (the runtime's task was).
struct PassTask(tokio::task::JoinHandle<Result<Option<String>>>, Instant);

tokio::task_local! {
    /// The market whose pass runs on this task: where the send loop keeps the last error of the transaction it
    /// follows (AUDIT5-SOL M2). Unset on the forecast task.
    static PASS_MARKET: Pubkey;
}

impl Drop for PassTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A panic's message, if it has one.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// What the rest of a market's pass does after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    /// The keeper is stopping, or the market's lease term ended.
    Stop,
    /// The program refused with `FeedChanged`.
    FeedChanged,
}

/// The program's address of `seeds`.
fn pda(program: &Pubkey, seeds: &[&[u8]]) -> Pubkey {
    Pubkey::find_program_address(seeds, program).0
}

/// The round account of `epoch` of `market`.
pub fn round_address(program: &Pubkey, market: &Pubkey, epoch: u64) -> Pubkey {
    pda(program, &[ROUND_SEED, market.as_ref(), &epoch.to_le_bytes()])
}

fn price(answer: i128, decimals: u8) -> Decimal {
    Decimal::from_fixed(answer, decimals).unwrap_or_else(|_| Decimal::from_int(answer))
}

/// The store's reason for a Solana cancel reason (the EVM vocabulary: which price was unusable), and the signal's
/// text (the program's own reason, snake case).
fn cancel_reason(r: &Round) -> (CancelReason, &'static str) {
    match r.cancel_reason {
        SolCancel::LockPriceUnavailable => (CancelReason::LockPriceUnusable, "lock_price_unavailable"),
        SolCancel::LockPriceStale => (CancelReason::LockPriceUnusable, "lock_price_stale"),
        SolCancel::ClosePriceUnavailable => (CancelReason::ClosePriceUnusable, "close_price_unavailable"),
        SolCancel::ClosePriceStale => (CancelReason::ClosePriceUnusable, "close_price_stale"),
        SolCancel::BadAnswer | SolCancel::FeedChanged => {
            let which =
                if r.lock_price_ts == 0 { CancelReason::LockPriceUnusable } else { CancelReason::ClosePriceUnusable };
            (which, if r.cancel_reason == SolCancel::BadAnswer { "bad_answer" } else { "feed_changed" })
        }
        SolCancel::Tie => (CancelReason::Tie, "tie"),
        SolCancel::OneSidedPool => (CancelReason::OneSidedPool, "one_sided_pool"),
        SolCancel::Expired => (CancelReason::Expired, "expired"),
        SolCancel::None => (CancelReason::None, "none"),
    }
}

/// The forecaster's checkpoints in a recorded round (issue 15): its lock price at its lock time and its close price at
/// its close time (the market's times for its epoch), each only if the program took it — a price the round was
/// refunded for (stale, unavailable, a changed feed) is not one. A round's close is the next round's lock, so a run
/// of rounds adds one price per interval.
pub(super) fn checkpoint_prices(m: &Market, row: &RoundRow) -> Vec<(u64, f64)> {
    let Ok((_, lock_ts, close_ts)) = m.times(row.epoch as u64) else { return Vec::new() };
    let refunded_for = |r: CancelReason| row.state == RoundState::Cancelled && row.reason == Some(r);
    let value = |p: &Option<String>| p.as_deref().and_then(|s| s.parse::<Decimal>().ok()).map(|d| d.to_f64_lossy());
    let lock = (!refunded_for(CancelReason::LockPriceUnusable)).then(|| value(&row.lock_price)).flatten();
    let close = (!refunded_for(CancelReason::LockPriceUnusable) && !refunded_for(CancelReason::ClosePriceUnusable))
        .then(|| value(&row.close_price))
        .flatten();
    [(lock_ts, lock), (close_ts, close)].into_iter().filter_map(|(t, p)| Some((u64::try_from(t).ok()?, p?))).collect()
}

fn outcome(o: SolOutcome) -> Outcome {
    match o {
        SolOutcome::Up => Outcome::Up,
        SolOutcome::Down => Outcome::Down,
        SolOutcome::Tie => Outcome::Tie,
        SolOutcome::None => Outcome::None,
    }
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Confirmed in this slot.
    Done(u64),
    /// Someone else did it first.
    AlreadyDone,
    /// Its time has not come (the program said so in simulation).
    NotYet,
    /// The blockhash expired before it landed: the next pass re-reads the round and signs again if still needed.
    Expired,
}

impl SolanaRuntime {
    /// Builds the runtime; nothing is read yet. [`SolanaRuntime::run`] connects, lists the markets and settles the
    /// record of transactions a previous run left open, retrying until it can (with `/health` saying why): a
    /// cluster that does not answer, or a program without a market to drive, never stops the keeper's other
    /// chains nor its API (audit SOL H2).
    pub async fn connect(
        cfg: &SolanaConfig,
        signer: Keypair,
        store: Store,
        bus: Bus,
        metrics: Arc<Metrics>,
        poll: Duration,
        lease: (String, crate::lease::LeaseTiming),
    ) -> Result<Arc<SolanaRuntime>> {
        let name = cfg.key().to_string();
        let client = SolClient::new(&cfg.rpc);
        let creators = cfg.creators.clone().unwrap_or_else(|| vec![signer.pubkey()]);
        let rt = Arc::new(SolanaRuntime {
            name,
            cfg: cfg.clone(),
            client,
            signer,
            publisher: Default::default(),
            health: Mutex::new(Default::default()),
            markets: Mutex::new(Vec::new()),
            counters: SolCounters::default(),
            store,
            bus,
            metrics,
            poll,
            seen: Mutex::new(HashMap::new()),
            skipped: Mutex::new(Vec::new()),
            pass_errors: Mutex::new(HashMap::new()),
            stuck: Mutex::new(BTreeMap::new()),
            expiring: Mutex::new(HashMap::new()),
            creators,
            min_slot: AtomicU64::new(0),
            failing: Mutex::new(HashMap::new()),
            alerted: Mutex::new(HashMap::new()),
            due_slot: Mutex::new(HashMap::new()),
            delays: Mutex::new(HashMap::new()),
            seeded: Mutex::new(Default::default()),
            reclaimed: Mutex::new(HashMap::new()),
            lease_key: lease,
            leases: Mutex::new(HashMap::new()),
        });
        {
            let mut h = rt.health.lock();
            h.healthy = false;
            h.last_error = Some("connecting".into());
        }
        Ok(rt)
    }

    /// Connects (some endpoint must answer), lists the markets and settles the record of transactions a previous
    /// run left open.
    async fn init(&self, cancel: &CancellationToken) -> Result<()> {
        // AUDIT6-SOL M2: the endpoints' clusters are checked before anything is read (markets, the record a previous
        // run left open), so a URL of another cluster configured first is passed over from the start; the lag check
        // that also does this only runs once `init` succeeded. `load_markets` lists what it found in `/health`.
        if self.cfg.rpc.len() > 1 {
            self.client.check_clusters(super::client::LAG_CHECK_WAIT).await;
        }
        let version = self.client.call(|c| c.get_version().boxed()).await.map_err(|e| {
            anyhow::anyhow!("{}: no RPC endpoint answers ({})", self.name, super::client::transport_kind(&e))
        })?;
        tracing::info!(chain = %self.name, solana_core = %version.solana_core, signer = %self.signer(), "solana: connected");
        if self.cfg.other_program {
            tracing::warn!(chain = %self.name, program = %self.cfg.program, built_for = %kronos_market::ID, "solana: driving a program other than the kronos-market program this keeper was built for (allow_other_program = true)");
        }
        self.load_markets().await?;
        self.recover(cancel).await
    }

    /// Publishes `publisher`'s forecasts on this cluster's registry (once, before [`SolanaRuntime::run`]).
    pub fn publish_forecasts(&self, publisher: Arc<crate::publisher::Publisher>) {
        let _ = self.publisher.set(publisher);
    }

    /// The signer's public key.
    pub fn signer(&self) -> Pubkey {
        self.signer.pubkey()
    }

    /// The configured markets, or every `Market` account of the program.
    async fn load_markets(&self) -> Result<()> {
        let program = self.cfg.program;
        let addresses: Vec<Pubkey> = match &self.cfg.markets {
            Some(m) => m.clone(),
            None => {
                let filters = vec![
                    RpcFilterType::DataSize((8 + Market::INIT_SPACE) as u64),
                    RpcFilterType::Memcmp(Memcmp::new_raw_bytes(0, Market::DISCRIMINATOR.to_vec())),
                ];
                let config = RpcProgramAccountsConfig {
                    filters: Some(filters),
                    account_config: RpcAccountInfoConfig {
                        encoding: Some(solana_client::rpc_config::UiAccountEncoding::Base64),
                        commitment: Some(CommitmentConfig::confirmed()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let found = self
                    .client
                    .call(|c| c.get_program_ui_accounts_with_config(&program, config.clone()).boxed())
                    .await
                    .with_context(|| format!("{}: getProgramAccounts of program {program}", self.name))?;
                found.into_iter().map(|(k, _)| k).collect()
            }
        };
        let discovering = self.cfg.markets.is_none();
        let accounts = self.get_many(&addresses).await?;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let mut ids = BTreeMap::new();
        // One bad market (anyone can create one) never stops the others (audit SOL H2): it is skipped, and named on
        // /health when the configuration asked for it (or its creator is one the keeper drives).
        for (a, acc) in addresses.iter().zip(accounts) {
            let m = match acc {
                None => Err("no such account".to_string()),
                Some(acc) if acc.owner != program => Err(format!("not owned by program {program}")),
                Some(acc) => {
                    Market::try_deserialize(&mut acc.data.as_slice()).map_err(|e| format!("not a Market account ({e})"))
                }
            };
            let m = match m {
                Ok(m) => m,
                Err(why) => {
                    tracing::warn!(chain = %self.name, market = %a, reason = %why, "solana: market skipped");
                    if !discovering {
                        skipped.push(format!("market {a}: {why}"));
                    }
                    continue;
                }
            };
            if discovering && !self.creators.contains(&m.authority) {
                tracing::debug!(chain = %self.name, market = %a, authority = %m.authority, "solana: market of another creator, not driven");
                continue;
            }
            if let Some(other) = ids.get(&m.id) {
                let why = format!(
                    "market {a} shares the id {} with market {other} (rows and signals name a market by id): not driven",
                    m.id
                );
                tracing::warn!(chain = %self.name, "solana: {why}");
                skipped.push(why);
                continue;
            }
            ids.insert(m.id, *a);
            self.store
                .upsert_market(&crate::store::MarketRow {
                    chain: self.name.clone(),
                    market_id: m.id as i64,
                    contract: a.to_string(),
                    feed: m.feed.to_string(),
                    sequencer: None,
                    token: if m.is_native() { "native".into() } else { m.mint.to_string() },
                    pair: None,
                    genesis: m.genesis,
                    interval_s: m.interval as i64,
                    settle_window_s: m.params.settle_window as i64,
                    max_price_age_s: m.params.max_price_age as i64,
                    feed_decimals: m.decimals as i64,
                })
                .await?;
            // Its lease is renewed (or sought) from now on, beside the passes (M3).
            self.lease_for(m.id);
            out.push(MarketInfo { address: *a, id: m.id, feed: m.feed, refused: None });
        }
        let none = out.is_empty();
        *self.markets.lock() = out;
        // Endpoints found on another cluster (at `init`) stay named; the lag check adds the ones it finds later.
        skipped.extend(self.client.other_cluster_lines());
        *self.skipped.lock() = skipped;
        anyhow::ensure!(
            !none,
            "{}: program {program} has no market to drive yet ({})",
            self.name,
            if discovering { "none whose authority is in `creators`" } else { "none of `markets` is usable" }
        );
        Ok(())
    }

    pub(super) async fn get_many(&self, keys: &[Pubkey]) -> Result<Vec<Option<solana_account::Account>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let config = RpcAccountInfoConfig {
                encoding: Some(solana_client::rpc_config::UiAccountEncoding::Base64),
                commitment: Some(CommitmentConfig::confirmed()),
                min_context_slot: self.min_context_slot(),
                ..Default::default()
            };
            let got = self
                .client
                .call(|c| c.get_multiple_ui_accounts_with_config(chunk, config.clone()).boxed())
                .await
                .with_context(|| format!("{}: getMultipleAccounts", self.name))?;
            // One answer per key, in order, or none of it is used (audit SOL M4: a short answer panicked the task).
            anyhow::ensure!(
                got.value.len() == chunk.len(),
                "{}: getMultipleAccounts answered {} accounts for {} keys",
                self.name,
                got.value.len(),
                chunk.len()
            );
            // Decoded here: the client's own decoding panics on data it cannot decode.
            for (k, ui) in chunk.iter().zip(got.value) {
                let Some(ui) = ui else {
                    out.push(None);
                    continue;
                };
                let acc = ui.decode::<solana_account::Account>().with_context(|| {
                    format!("{}: getMultipleAccounts: account {k}'s data is not decodable", self.name)
                })?;
                out.push(Some(acc));
            }
        }
        Ok(out)
    }

    /// Settles the record of transactions a previous run left open: confirmed or failed if they landed, dropped
    /// once their blockhash can no longer land (the `nonce` column holds its lastValidBlockHeight), else waited
    /// for — so a restart never signs a second transaction while the first may still land.
    async fn recover(&self, cancel: &CancellationToken) -> Result<()> {
        let open = self.store.open_txs(&self.name, &self.signer().to_string()).await?;
        for t in open {
            let Ok(sig) = t.tx_hash.parse::<Signature>() else {
                self.store.update_tx(t.id, TxStatus::Dropped, None, None, Some("not a signature")).await?;
                continue;
            };
            loop {
                // The transaction history too: after a long stop a landed transaction has left the status cache.
                let (status, height) = self.status_of(&sig, true).await?;
                match status {
                    SigStatus::Confirmed(None) => {
                        self.store.update_tx(t.id, TxStatus::Confirmed, None, None, None).await?;
                        break;
                    }
                    SigStatus::Confirmed(Some(e)) => {
                        self.store.update_tx(t.id, TxStatus::Failed, None, None, Some(&format!("{e:?}"))).await?;
                        break;
                    }
                    _ if height > t.nonce as u64 => {
                        self.store
                            .update_tx(
                                t.id,
                                TxStatus::Dropped,
                                None,
                                None,
                                Some("left open by a previous run; its blockhash expired"),
                            )
                            .await?;
                        break;
                    }
                    _ => tokio::select! {
                        _ = cancel.cancelled() => anyhow::bail!("{}: stopped while recovering", self.name),
                        _ = tokio::time::sleep(self.poll) => {}
                    },
                }
            }
        }
        Ok(())
    }

    /// A slot the keeper knows its cluster reached (one of its own transactions confirmed there): reads,
    /// simulations and preflights ask for at least it from now on (audit M2).
    pub(super) fn saw_slot(&self, slot: u64) {
        self.min_slot.fetch_max(slot, Ordering::Relaxed);
    }

    /// `minContextSlot` for reads: the slot of the keeper's latest confirmed transaction, if any.
    fn min_context_slot(&self) -> Option<u64> {
        Some(self.min_slot.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// A signature's status and the current block height; `history`: search the transaction history too. Both
    /// from one endpoint, the height first (AUDIT-2 A2): the status is then at least as new as the height, so
    /// "unknown, past its last valid height" is final. Read the other way round, or from two endpoints (one
    /// lagging), the transaction could land between the reads and be taken for expired.
    async fn status_of(&self, sig: &Signature, history: bool) -> Result<(SigStatus, u64)> {
        let sigs = [*sig];
        let (st, height) = self
            .client
            .call(|c| {
                async move {
                    let height = c.get_block_height_with_commitment(CommitmentConfig::confirmed()).await?;
                    let st = if history {
                        c.get_signature_statuses_with_history(&sigs).await?
                    } else {
                        c.get_signature_statuses(&sigs).await?
                    };
                    Ok((st, height))
                }
                .boxed()
            })
            .await?;
        anyhow::ensure!(st.value.len() == 1, "getSignatureStatuses answered {} statuses for 1", st.value.len());
        let s = match st.value.into_iter().next().flatten() {
            None => SigStatus::Unknown,
            Some(s) => match s.confirmation_status {
                Some(TransactionConfirmationStatus::Processed) => SigStatus::Processed,
                _ => SigStatus::Confirmed(s.err),
            },
        };
        Ok((s, height))
    }

    /// Connects (retrying, `/health` says why until it can), then drives every market until `cancel` fires. A
    /// pass that panics is an error on `/health`; the task goes on (audit SOL M4).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = self.poll;
        loop {
            let r = std::panic::AssertUnwindSafe(self.init(&cancel)).catch_unwind().await;
            match r {
                Ok(Ok(())) => break,
                Ok(Err(e)) => self.not_connected(&format!("{e:#}")),
                Err(_) => self.not_connected("connecting panicked"),
            }
            self.refresh_metrics();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        // Forecast commits and reveals run beside the crank, so a forecast's wall time never delays a lock or settle.
        let forecasts =
            self.publisher.get().map(|p| tokio::spawn(super::forecast::run(self.clone(), p.clone(), cancel.clone())));
        // Issue 15: an endpoint that answers but lags far behind another is left for the freshest, beside the passes.
        let lag_check = (self.cfg.rpc.len() > 1).then(|| {
            let (rt, c) = (self.clone(), cancel.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = c.cancelled() => return,
                        _ = tokio::time::sleep(super::client::LAG_CHECK_EVERY) => {}
                    }
                    let checked = rt.client.follow_freshest().await;
                    // AUDIT5-SOL M1: an endpoint on another cluster is a configuration error: named (by host) in
                    // /health's error, so the next tick turns the keeper unhealthy and alerts it once.
                    rt.skipped.lock().extend(checked.other_cluster.iter().cloned());
                    if checked.moved || !checked.other_cluster.is_empty() {
                        rt.endpoints_into(&mut rt.health.lock());
                        rt.refresh_metrics();
                    }
                }
            })
        });
        // Each market's pass in flight (issue 15, L5): one market waiting on its transaction never holds the others.
        let mut passes: HashMap<Pubkey, PassTask> = HashMap::new();
        loop {
            let started = Instant::now();
            let r = match std::panic::AssertUnwindSafe(self.tick(&cancel, &mut passes)).catch_unwind().await {
                Ok(r) => r,
                Err(p) => Err(anyhow::anyhow!("{}: a pass panicked: {}", self.name, panic_text(&*p))),
            };
            match r {
                Ok(()) => self.healthy(None),
                Err(e) => {
                    let msg = redact(&format!("{e:#}"));
                    tracing::warn!(chain = %self.name, error = %msg, "solana: pass failed");
                    self.healthy(Some(msg));
                }
            }
            self.refresh_metrics();
            let wait = self.poll.saturating_sub(started.elapsed());
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // A pass still in flight follows its transaction until it is decided (audit L1) before the terms are given up.
        for (_, mut p) in passes.drain() {
            let _ = (&mut p.0).await;
        }
        if let Some(f) = forecasts {
            let _ = f.await;
        }
        if let Some(l) = lag_check {
            let _ = l.await;
        }
        // The last pass has ended: the renewals give held terms up, so that a standby takes over at once (M3).
        let leases: Vec<Arc<MarketLease>> = self.leases.lock().values().cloned().collect();
        for l in leases {
            l.renewals.cancel();
            let task = l.task.lock().take();
            if let Some(t) = task {
                let _ = t.await;
            }
        }
    }

    /// Market `id`'s lease, created (and its renewals started) on first use.
    fn lease_for(&self, id: u64) -> Arc<MarketLease> {
        let mut ls = self.leases.lock();
        if let Some(l) = ls.get(&id) {
            return l.clone();
        }
        let (holder, timing) = &self.lease_key;
        let key =
            crate::lease::LeaseKey { chain: &self.name, market: id, holder, instance: crate::lease::instance_id() };
        let lease = crate::lease::Lease::new(key, &self.store, *timing, self.bus.clone(), self.metrics.clone());
        let (store, slot) = if self.store.backend == crate::store::Backend::Postgres {
            self.store.fenced()
        } else {
            (self.store.clone(), Default::default())
        };
        let renewals = CancellationToken::new();
        let task = tokio::spawn(lease.clone().run(renewals.clone()));
        let l = Arc::new(MarketLease { lease, store, slot, renewals, task: Mutex::new(Some(task)) });
        ls.insert(id, l.clone());
        l
    }

    /// The term under which this keeper drives market `mi` now, and the store fenced by it; `None` while another
    /// keeper leads it (M3: nothing is read, written or sent for it then). SQLite: always this keeper's.
    pub(super) fn term_of(&self, mi: &MarketInfo) -> Option<(crate::lease::Fence, Store)> {
        let l = self.lease_for(mi.id);
        let leading = match l.lease.view() {
            crate::lease::LeaseView::Single => Some(0),
            crate::lease::LeaseView::Leading { epoch, .. } if l.lease.may_send(epoch) => Some(epoch),
            _ => None,
        };
        let mut slot = l.slot.lock();
        match leading {
            Some(e) => {
                let token = l.lease.token(e);
                if token.is_some() && *slot != token {
                    // A new term starts from chain state: what the previous leader recorded is read from the store.
                    tracing::info!(chain = %self.name, market = mi.id, epoch = e, "solana: leading the market");
                    self.seen.lock().retain(|(m, _), _| *m != mi.address);
                    self.seeded.lock().remove(&mi.address);
                }
                *slot = token;
                Some((crate::lease::Fence { lease: l.lease.clone(), epoch: e }, l.store.clone()))
            }
            None => {
                if slot.take().is_some() {
                    tracing::warn!(chain = %self.name, market = mi.id, "solana: standing by: another keeper holds the market's lease");
                }
                None
            }
        }
    }

    /// `/health` before the runtime could connect (or list its markets, or settle what a previous run left open).
    fn not_connected(&self, why: &str) {
        let msg = redact(why);
        tracing::warn!(chain = %self.name, error = %msg, "solana: not driving yet; retrying");
        self.healthy(Some(msg));
    }

    fn healthy(&self, error: Option<String>) {
        let mut refused: Vec<String> = self
            .markets
            .lock()
            .iter()
            .filter_map(|m| m.refused.as_ref().map(|r| format!("market {} ({}): refused: {r}", m.id, m.address)))
            .collect();
        refused.extend(self.skipped.lock().iter().cloned());
        refused.extend(self.stuck.lock().values().cloned());
        let mut h = self.health.lock();
        let was = h.healthy;
        // A refused market is unhealthy too: /health and the alerts say why.
        h.healthy = error.is_none() && refused.is_empty();
        self.endpoints_into(&mut h);
        match (&error, refused.is_empty()) {
            (Some(e), _) => h.last_error = Some(e.clone()),
            (None, false) => h.last_error = Some(refused.join("; ")),
            (None, true) => {
                h.last_error = None;
                h.last_success_ms = kronos_common::time::now_ms();
            }
        }
        if was != h.healthy {
            self.bus.publish(
                "keeper",
                SignalKind::KeeperHealth {
                    chain: self.name.clone(),
                    healthy: h.healthy,
                    head_block: h.head_block,
                    lag_s: h.lag_s,
                    detail: h.last_error.clone().unwrap_or_else(|| "RPC answers again".into()),
                },
            );
        }
    }

    /// The endpoints' state (the one in use, which are up) into `/health`.
    fn endpoints_into(&self, h: &mut crate::chain::Health) {
        h.rpc_endpoint = self.client.active();
        h.endpoints = self
            .client
            .endpoints()
            .into_iter()
            .map(|e| crate::rpc::EndpointStatus { endpoint: e.host, up: e.up, last_error: e.last_error })
            .collect();
    }

    fn refresh_metrics(&self) {
        let l = ChainLabel { chain: self.name.clone() };
        let c = &self.counters;
        let m = &self.metrics;
        m.tx_sent.get_or_create(&l).set(c.sent.load(Ordering::Relaxed) as i64);
        m.tx_confirmed.get_or_create(&l).set(c.confirmed.load(Ordering::Relaxed) as i64);
        m.tx_rebroadcast.get_or_create(&l).set(c.rebroadcast.load(Ordering::Relaxed) as i64);
        m.tx_bumped.get_or_create(&l).set(c.resigned.load(Ordering::Relaxed) as i64);
        m.rpc_failovers.get_or_create(&l).set(self.client.failovers.load(Ordering::Relaxed) as i64);
        m.rpc_transport_errors.get_or_create(&l).set(self.client.transport_errors.load(Ordering::Relaxed) as i64);
        let h = self.health.lock().clone();
        m.head_block.get_or_create(&l).set(h.head_block as i64);
        m.lag_seconds.get_or_create(&l).set(h.lag_s as i64);
        m.healthy.get_or_create(&l).set(h.healthy as i64);
    }

    /// The cluster's clock (unix seconds) and slot, from the Clock sysvar.
    pub(super) async fn clock(&self) -> Result<(i64, u64)> {
        // By getMultipleAccounts: the client's getAccountInfo wraps a transport error into a node's answer (no
        // failover, the URL in its text).
        let acc = self.get_many(&[CLOCK]).await?.pop().flatten().context("the Clock sysvar is missing")?;
        clock_of(&acc)
    }

    /// One pass over every market: each market's pass runs as a task of its own (issue 15, L5), so a market whose
    /// transaction is in flight (followed until it lands or its blockhash expires, a minute or more for a dropped
    /// one) holds up only itself; the others start a pass at every tick. A market gets no new pass while its last
    /// one runs, so no two sends for one market are ever in flight at once. The passes are waited for until the
    /// next tick is due; one still running is collected (its error, its refusal) at a later tick.
    async fn tick(self: &Arc<Self>, cancel: &CancellationToken, passes: &mut HashMap<Pubkey, PassTask>) -> Result<()> {
        let due = tokio::time::Instant::now() + self.poll;
        let (now, slot) = self.clock().await?;
        {
            let mut h = self.health.lock();
            h.head_block = slot;
            h.head_time = now.max(0) as u64;
            h.lag_s = (kronos_common::time::now_s() as i64 - now).max(0) as u64;
        }
        let markets = self.markets.lock().clone();
        for mi in &markets {
            if cancel.is_cancelled() {
                break;
            }
            if passes.contains_key(&mi.address) {
                continue;
            }
            let (rt, m, c) = (self.clone(), mi.clone(), cancel.clone());
            let task =
                tokio::spawn(PASS_MARKET.scope(mi.address, async move { rt.market_pass(&m, now, slot, &c).await }));
            passes.insert(mi.address, PassTask(task, Instant::now()));
        }
        // One market's error (an unreadable account, …) is reported and the others are still driven.
        let mut errors = Vec::new();
        for mi in &markets {
            let Some(p) = passes.get_mut(&mi.address) else { continue };
            // A finished pass is taken even once `due` has passed (the task is polled before the timer).
            let Ok(joined) = tokio::time::timeout_at(due, &mut p.0).await else { continue };
            passes.remove(&mi.address);
            self.pass_errors.lock().remove(&mi.address);
            if self.stuck.lock().remove(&(mi.address, PASS)).is_some() {
                tracing::info!(chain = %self.name, market = %mi.address, id = mi.id, "solana: the market's pass completed again");
            }
            let refused = match joined {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    errors.push(format!("market {} ({}): {e:#}", mi.id, mi.address));
                    continue;
                }
                Err(e) => {
                    let what = if e.is_panic() { panic_text(&*e.into_panic()) } else { "cancelled".into() };
                    errors.push(format!("market {} ({}): its pass panicked: {what}", mi.id, mi.address));
                    continue;
                }
            };
            let mut ms = self.markets.lock();
            let Some(entry) = ms.iter_mut().find(|m| m.address == mi.address) else { continue };
            if entry.refused != refused {
                match &refused {
                    Some(why) => {
                        tracing::error!(chain = %self.name, market = %mi.address, id = mi.id, reason = %why, "solana: market refused");
                        self.bus.publish(
                            "keeper",
                            SignalKind::TxFailed {
                                chain: self.name.clone(),
                                action: format!("market {} ({})", mi.id, mi.address),
                                error: format!("refused: {why}"),
                            },
                        );
                    }
                    None => tracing::info!(chain = %self.name, market = %mi.address, "solana: market trusted again"),
                }
                entry.refused = refused;
            }
        }
        // AUDIT5-SOL M2: a pass in flight for long (its transaction followed while no status can be read, a block
        // height that stalls, …) is named once and keeps the keeper unhealthy until it completes.
        for mi in &markets {
            let Some(p) = passes.get(&mi.address) else { continue };
            let age = p.1.elapsed();
            if !rules::pass_stuck(age) {
                continue;
            }
            let last = self.pass_errors.lock().get(&mi.address).cloned();
            let line = format!(
                "market {} ({}): no completed pass for {} s{}",
                mi.id,
                mi.address,
                age.as_secs(),
                last.map(|e| format!(" (last error: {e})")).unwrap_or_default()
            );
            if self.stuck.lock().insert((mi.address, PASS), line.clone()).is_none() {
                tracing::error!(chain = %self.name, market = %mi.address, id = mi.id, detail = %line, "solana: a market's pass is stuck");
            }
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    /// Reads one market and sends what its rounds need; returns why it is refused, if it is. A market whose lease
    /// another keeper holds is left to it (M3): nothing is written or sent for it here but the closes of the rounds
    /// this keeper paid for (audit M3, [`reclaim_standing_by`](Self::reclaim_standing_by)).
    async fn market_pass(
        &self,
        mi: &MarketInfo,
        now: i64,
        slot: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<String>> {
        let Some((fence, store)) = self.term_of(mi) else {
            // Audit M3: the rounds this keeper paid for are closed by it whoever leads — only their payer's keeper
            // closes a round (`rules::closable`, the reclaim's payer filter), so leader and standby never send the
            // same close; a close writes no round row and needs no term (a race: AccountNotInitialized, done).
            self.reclaim_standing_by(mi, now, slot, cancel).await;
            return Ok(mi.refused.clone());
        };
        let program = self.cfg.program;
        let approval_key = pda(&program, &[FEED_SEED, mi.feed.as_ref()]);
        let got = self.get_many(&[mi.address, mi.feed, approval_key]).await?;
        let market_acc = got[0].as_ref().with_context(|| format!("market {} is gone", mi.address))?;
        let m = Market::try_deserialize(&mut market_acc.data.as_slice())
            .map_err(|e| anyhow::anyhow!("market {}: {e}", mi.address))?;
        // An unusable feed (gone, not the store program's, not a v2 feed) refuses the market, and its running rounds
        // are still driven (AUDIT-2 A4): no price can be read, so they are refunded once their settle window has
        // passed, and closed.
        let store_program: Pubkey = kronos_market::state::CHAINLINK_STORE;
        let feed = match got[1].as_ref() {
            None => Err(rules::Refusal::BadFeed("no such account".into())),
            Some(f) if f.owner != store_program => {
                Err(rules::Refusal::BadFeed(format!("owned by {}, not the Chainlink store", f.owner)))
            }
            Some(f) => chainlink::header(&f.data)
                .map(|h| (h, f.data.as_slice()))
                .map_err(|e| rules::Refusal::BadFeed(format!("{e:?}"))),
        };
        let approval = got[2]
            .as_ref()
            .filter(|a| a.owner == program)
            .and_then(|a| FeedApproval::try_deserialize(&mut a.data.as_slice()).ok())
            .map(|a| (a.owner, a.writer));
        // A refused market gets no new round; its running rounds are still driven to their end (audit SOL M8):
        // without an approval (revoked) they settle as the program allows, and on a changed owner or writer the
        // program refunds them (`FeedChanged`) at the first lock or settle, sent as soon as its time has come.
        let feed_refusal = match &feed {
            Err(r) => Some(r.clone()),
            Ok((header, _)) => rules::check_feed(
                (m.feed_owner, m.feed_writer),
                approval,
                (Pubkey::new_from_array(header.owner), Pubkey::new_from_array(header.writer)),
            )
            .err(),
        };
        let changed = matches!(feed_refusal, Some(rules::Refusal::Changed { .. }));
        let refusal = feed_refusal.map(|r| r.to_string()).or_else(|| rules::lookback_refusal(&m));
        let epochs: Vec<u64> = rules::live_epochs(&m, now, rules::MAX_LOOKBACK).collect();
        let mut keys: Vec<Pubkey> = epochs.iter().map(|e| round_address(&program, &mi.address, *e)).collect();
        // Token markets: the settler's reward is paid to the keeper's associated token account, when it exists.
        let ata = (!m.is_native())
            .then(|| anchor_spl::associated_token::get_associated_token_address(&self.signer(), &m.mint));
        keys.extend(ata);
        let mut accs = self.get_many(&keys).await?;
        let settler_token = match ata {
            Some(a) => {
                let acc = accs.pop().flatten();
                // A frozen account would fail the settlement's transfer (audit L4): the reward stays with the
                // treasury then, and the round is still settled.
                let usable = acc.is_some_and(|acc| {
                    use anchor_lang::solana_program::program_pack::Pack;
                    use anchor_spl::token::spl_token::state::{Account as TokenAccount, AccountState};
                    acc.owner == anchor_spl::token::ID
                        && TokenAccount::unpack(&acc.data).is_ok_and(|t| t.state == AccountState::Initialized)
                });
                if !usable {
                    tracing::debug!(chain = %self.name, market = %mi.address, ata = %a, "solana: no associated token account for the market's mint: settle rewards stay with the treasury");
                }
                usable.then_some(a)
            }
            None => None,
        };
        let rounds: BTreeMap<u64, Round> = epochs
            .iter()
            .zip(accs)
            .filter_map(|(e, a)| {
                let a = a?;
                (a.owner == program).then_some(())?;
                Round::try_deserialize(&mut a.data.as_slice()).ok().map(|r| (*e, r))
            })
            .collect();
        // At start and at a new lease term (the rounds not yet seeded from the store), the forecaster's candles of
        // this market are back-filled from the rounds recorded in the store, whoever led them (issue 15).
        let fresh = !self.seeded.lock().contains(&mi.address);
        if fresh {
            self.refill_candles(mi, &m).await?;
        }
        self.seed_seen(mi, &rounds).await?;
        for r in rounds.values() {
            self.record(mi, &m, r, &store).await?;
        }
        let (flagged, feed_data) = match &feed {
            Ok((h, data)) => (h.state != chainlink::STATE_NORMAL, Some(*data)),
            Err(_) => (true, None),
        };
        // The price at `t` is final when a neighbouring round recorded it or the feed has a transmission stamped
        // after it (and is not flagged): the program's rule (`crank.rs`).
        let recorded = |t: i64| {
            rounds
                .values()
                .any(|r| (r.close_ts == t && r.close_price_ts != 0) || (r.lock_ts == t && r.lock_price_ts != 0))
        };
        let final_at = |t: i64| {
            changed
                || recorded(t)
                || (!flagged
                    && feed_data.is_some_and(|d| !matches!(chainlink::in_effect_at(d, t), Err(LookupError::NotFinal))))
        };
        let first = epochs.first().copied().unwrap_or(0);
        for e in epochs {
            if cancel.is_cancelled() {
                break;
            }
            let mut action = rules::next_action(&m, e, rounds.get(&e), now, &final_at);
            // A finished round this keeper started: its rent back once the program allows it (audit SOL H3). The
            // oldest epoch read is left alone unless it is the first: its previous round was not read (the reclaim
            // below finds it once it has left the window).
            if let (Action::Done, Some(r)) = (action, rounds.get(&e)) {
                let prev_read = e == 0 || e > first;
                if prev_read
                    && rules::closable(r, rounds.get(&e.wrapping_sub(1)), rounds.get(&(e + 1)), now, &self.signer())
                {
                    action = Action::Close(e);
                }
            }
            let instruction = match action {
                Action::Start(_) if refusal.is_some() => continue,
                Action::Start(epoch) => self.start_ix(&mi.address, &m, epoch),
                Action::Close(epoch) => self.close_ix(&mi.address, epoch),
                Action::Lock(epoch) => self.lock_ix(&mi.address, &m, epoch),
                Action::Settle(epoch) | Action::Refund(epoch) => self.settle_ix(&mi.address, &m, epoch, settler_token),
                Action::Wait(_) | Action::Done => continue,
            };
            match self.drive(mi, action, e, instruction, Some(&fence), slot, cancel).await {
                Flow::Next => {}
                Flow::Stop => return Ok(mi.refused.clone()),
                Flow::FeedChanged => return Ok(Some(rules::Refusal::Changed { what: "owner or writer" }.to_string())),
            }
        }
        if !cancel.is_cancelled() {
            // A failed look-up (a node that refuses getProgramAccounts, …) does not fail the crank's pass: it is
            // logged and tried again at the next interval.
            let reclaimed = self.reclaim(mi, &m, now, slot, first, Some(&fence), cancel).await.unwrap_or_else(|e| {
                tracing::warn!(chain = %self.name, market = mi.id, error = %redact(&format!("{e:#}")), "solana: looking for the keeper's rounds past the look-back failed; tried again next interval");
                self.reclaimed.lock().insert(mi.address, m.next_epoch(now));
                Flow::Next
            });
            match reclaimed {
                Flow::Next => {}
                Flow::Stop => return Ok(mi.refused.clone()),
                Flow::FeedChanged => return Ok(Some(rules::Refusal::Changed { what: "owner or writer" }.to_string())),
            }
        }
        Ok(refusal)
    }

    /// A standby's reclaim of the rounds it paid for (audit M3), at most once per interval (its look-up is gated by
    /// [`reclaim`](Self::reclaim)); the market is read for it, nothing else. A failure is logged, tried next interval.
    async fn reclaim_standing_by(&self, mi: &MarketInfo, now: i64, slot: u64, cancel: &CancellationToken) {
        let res = async {
            let got = self.get_many(&[mi.address]).await?.pop().flatten();
            let acc = got.with_context(|| format!("market {} is gone", mi.address))?;
            let m = Market::try_deserialize(&mut acc.data.as_slice())
                .map_err(|e| anyhow::anyhow!("market {}: {e}", mi.address))?;
            if self.reclaimed.lock().get(&mi.address) == Some(&m.next_epoch(now)) {
                return Ok(());
            }
            // Any epoch: the live window is the leader's, and the leader closes only the rounds it paid for.
            self.reclaim(mi, &m, now, slot, u64::MAX, None, cancel).await.map(|_| ()).inspect_err(|_| {
                self.reclaimed.lock().insert(mi.address, m.next_epoch(now));
            })
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(chain = %self.name, market = mi.id, error = %redact(&format!("{e:#}")), "solana: standing by, looking for the rounds this keeper paid for failed; tried again next interval");
        }
    }

    /// AUDIT6-SOL M3: keeps `action`'s expiries in a row ([`rules::expiring_after`]) after a send that went out at
    /// `sent_ms` ended in `tried`, and lists the action in [`SolanaRuntime::stuck`] while it keeps expiring for long
    /// ([`rules::expiring_stuck`]): each pass then completes, so the stuck-pass rule never sees it.
    fn track_expiries(&self, mi: &MarketInfo, action: Action, tried: rules::Tried, sent_ms: i64) {
        let key = (mi.address, action_name(action));
        let now = i64::try_from(kronos_common::time::now_ms()).unwrap_or(i64::MAX);
        let e = {
            let mut expiring = self.expiring.lock();
            let e = rules::expiring_after(expiring.get(&key).copied(), tried, sent_ms);
            match e {
                Some(e) => expiring.insert(key, e),
                None => expiring.remove(&key),
            };
            e
        };
        let line = e.filter(|e| rules::expiring_stuck(*e, now)).map(|e| {
            format!(
                "market {} ({}): {} due for {} s, its transaction expired {} times in a row",
                mi.id,
                mi.address,
                key.1,
                now.saturating_sub(e.since_ms) / 1000,
                e.count
            )
        });
        let mut stuck = self.stuck.lock();
        match line {
            Some(line) => {
                if stuck.insert(key, line.clone()).is_none() {
                    tracing::error!(chain = %self.name, market = %mi.address, id = mi.id, detail = %line, "solana: a market's action keeps expiring");
                }
            }
            None => {
                if stuck.remove(&key).is_some() {
                    tracing::info!(chain = %self.name, market = %mi.address, id = mi.id, action = key.1, "solana: the market's action no longer expires");
                }
            }
        }
    }

    /// Sends `action` (on round `epoch` of `mi`) unless its back-off holds it, under `fence`; keeps the back-off
    /// ([`rules::backoff_after`]), the alerts ([`rules::alert_now`]) and the settle delay.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        mi: &MarketInfo,
        action: Action,
        epoch: u64,
        instruction: Instruction,
        fence: Option<&crate::lease::Fence>,
        slot: u64,
        cancel: &CancellationToken,
    ) -> Flow {
        let writable: Vec<Pubkey> = instruction.accounts.iter().filter(|a| a.is_writable).map(|a| a.pubkey).collect();
        let label = format!("{}:{}:{}", action_name(action), mi.id, epoch);
        if matches!(action, Action::Settle(_) | Action::Refund(_)) {
            self.due_slot.lock().entry((mi.address, epoch)).or_insert(slot);
        }
        if self.failing.lock().get(&label).is_some_and(|(_, at)| Instant::now() < *at) {
            return Flow::Next;
        }
        let sent_at = i64::try_from(kronos_common::time::now_ms()).unwrap_or(i64::MAX);
        let sent = self.send_fenced(fence, action, &label, instruction, &writable, cancel).await;
        // `/health` shows a failover as soon as a step is decided, not only at the end of the pass.
        self.endpoints_into(&mut self.health.lock());
        self.refresh_metrics();
        let tried = match &sent {
            Ok(Sent::Done(_)) => rules::Tried::Done,
            Ok(Sent::AlreadyDone) => rules::Tried::AlreadyDone,
            Ok(Sent::NotYet) => rules::Tried::NotYet,
            Ok(Sent::Expired) => rules::Tried::Expired,
            Err(SendError::Other(_)) => rules::Tried::Failed,
            // Stopping, or the market refused: nothing learnt about the step.
            Err(_) => rules::Tried::Expired,
        };
        let alert_key = (mi.address, action_name(action));
        match rules::backoff_after(tried) {
            rules::Backoff::Clear => {
                self.failing.lock().remove(&label);
                self.alerted.lock().remove(&alert_key);
            }
            rules::Backoff::Count => self.count_failure(&label, tried),
            rules::Backoff::Keep => {}
        }
        // Stopping, or the market refused: nothing learnt about the step's expiries either.
        if matches!(sent, Ok(_) | Err(SendError::Other(_))) {
            self.track_expiries(mi, action, tried, sent_at);
        }
        match sent {
            Ok(outcome) => {
                tracing::debug!(chain = %self.name, action = %label, ?outcome, "solana: action");
                if let (Sent::Done(done), Action::Settle(_) | Action::Refund(_)) = (&outcome, action) {
                    if let Some(due) = self.due_slot.lock().remove(&(mi.address, epoch)) {
                        let delay = done.saturating_sub(due);
                        self.delays.lock().insert((mi.address, epoch), delay);
                        self.metrics
                            .settlement_delay_blocks
                            .get_or_create(&ChainLabel { chain: self.name.clone() })
                            .observe(delay as f64);
                    }
                }
                if matches!(action, Action::Close(_)) && matches!(outcome, Sent::Done(_) | Sent::AlreadyDone) {
                    // Nothing more will be recorded for it.
                    self.seen.lock().remove(&(mi.address, epoch));
                }
                Flow::Next
            }
            Err(SendError::Stopped) => Flow::Stop,
            Err(SendError::FeedChanged) => Flow::FeedChanged,
            Err(SendError::Other(e)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let text = redact(&format!("{e:#}"));
                tracing::warn!(chain = %self.name, action = %label, error = %text, "solana: action failed");
                let kind = error_kind(&e);
                let alert = rules::alert_now(self.alerted.lock().get(&alert_key).map(String::as_str), &kind);
                if alert {
                    self.alerted.lock().insert(alert_key, kind);
                    self.bus.publish(
                        "keeper",
                        SignalKind::TxFailed { chain: self.name.clone(), action: label, error: text },
                    );
                }
                Flow::Next
            }
        }
    }

    /// One more refusal (`tried`) of the step `label` in a row: it waits [`rules::retry_wait`] before its next try.
    fn count_failure(&self, label: &str, tried: rules::Tried) {
        let mut f = self.failing.lock();
        let now = Instant::now();
        // Steps of rounds long gone are forgotten.
        f.retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(600));
        let n = f.get(label).map_or(0, |(n, _)| *n).saturating_add(1);
        f.insert(label.to_string(), (n, now + rules::retry_wait(tried, n, self.poll)));
    }

    /// The rounds of `mi` this keeper paid for that the live window (from epoch `first`) no longer reads (AUDIT-2
    /// A1): rounds that stayed open for their positions (only their users can close them) or for a forecast's
    /// reveal deadline. Looked for once per interval by `getProgramAccounts` (the market's rounds whose payer is the
    /// keeper and whose positions are all closed), each closed as soon as the program allows it; the rounds still
    /// held by open positions are counted and logged, never touched.
    #[allow(clippy::too_many_arguments)]
    async fn reclaim(
        &self,
        mi: &MarketInfo,
        m: &Market,
        now: i64,
        slot: u64,
        first: u64,
        fence: Option<&crate::lease::Fence>,
        cancel: &CancellationToken,
    ) -> Result<Flow> {
        let current = m.next_epoch(now);
        if self.reclaimed.lock().get(&mi.address) == Some(&current) {
            return Ok(Flow::Next);
        }
        let program = self.cfg.program;
        let at = rules::RoundOffsets::get();
        let payer = self.signer();
        let mine = |positions_closed: bool| {
            let mut f = vec![
                RpcFilterType::DataSize((8 + Round::INIT_SPACE) as u64),
                RpcFilterType::Memcmp(Memcmp::new_raw_bytes(0, Round::DISCRIMINATOR.to_vec())),
                RpcFilterType::Memcmp(Memcmp::new_raw_bytes(at.market, mi.address.to_bytes().to_vec())),
                RpcFilterType::Memcmp(Memcmp::new_raw_bytes(at.payer, payer.to_bytes().to_vec())),
            ];
            if positions_closed {
                f.push(RpcFilterType::Memcmp(Memcmp::new_raw_bytes(at.positions, 0u32.to_le_bytes().to_vec())));
            }
            RpcProgramAccountsConfig {
                filters: Some(f),
                account_config: RpcAccountInfoConfig {
                    encoding: Some(solana_client::rpc_config::UiAccountEncoding::Base64),
                    commitment: Some(CommitmentConfig::confirmed()),
                    min_context_slot: self.min_context_slot(),
                    // The count of all the keeper's rounds needs their addresses only.
                    data_slice: (!positions_closed)
                        .then_some(solana_client::rpc_config::UiDataSliceConfig { offset: 0, length: 0 }),
                },
                ..Default::default()
            }
        };
        let closed_cfg = mine(true);
        let found = self
            .client
            .call(|c| c.get_program_ui_accounts_with_config(&program, closed_cfg.clone()).boxed())
            .await
            .with_context(|| format!("{}: getProgramAccounts (the keeper's rounds of market {})", self.name, mi.id))?;
        let without_positions = found.len();
        let mut rounds: BTreeMap<u64, Round> = BTreeMap::new();
        for (k, ui) in found {
            let acc = ui
                .decode::<solana_account::Account>()
                .with_context(|| format!("{}: getProgramAccounts: account {k}'s data is not decodable", self.name))?;
            let Ok(r) = Round::try_deserialize(&mut acc.data.as_slice()) else { continue };
            // What the node said is checked: the keeper's own round of this market, at its own address.
            if acc.owner == program
                && r.market == mi.address
                && r.payer == payer
                && r.epoch < first
                && k == round_address(&program, &mi.address, r.epoch)
            {
                rounds.insert(r.epoch, r);
            }
        }
        // The neighbours of the rounds that are closable on their own (the program's rule reads them).
        let alone: Vec<u64> = rounds.iter().filter(|(_, r)| r.closable_alone(now).is_ok()).map(|(e, _)| *e).collect();
        let mut around: Vec<u64> = alone.iter().flat_map(|e| [e.wrapping_sub(1), e + 1]).collect();
        around.sort_unstable();
        around.dedup();
        let keys: Vec<Pubkey> = around.iter().map(|e| round_address(&program, &mi.address, *e)).collect();
        let neighbours: BTreeMap<u64, Round> = around
            .iter()
            .zip(self.get_many(&keys).await?)
            .filter_map(|(e, a)| {
                let a = a?;
                (a.owner == program).then_some(())?;
                Round::try_deserialize(&mut a.data.as_slice()).ok().map(|r| (*e, r))
            })
            .collect();
        let mut reveal = 0usize;
        for e in alone {
            if cancel.is_cancelled() {
                return Ok(Flow::Stop);
            }
            let r = &rounds[&e];
            let (prev, next) = (neighbours.get(&e.wrapping_sub(1)), neighbours.get(&(e + 1)));
            match rules::held(r, prev, next, now, &payer) {
                None => {
                    match self.drive(mi, Action::Close(e), e, self.close_ix(&mi.address, e), fence, slot, cancel).await
                    {
                        Flow::Next => {}
                        other => return Ok(other),
                    }
                }
                Some(rules::Held::Reveal(_)) => reveal += 1,
                Some(_) => {}
            }
        }
        let all_cfg = mine(false);
        let all = self
            .client
            .call(|c| c.get_program_ui_accounts_with_config(&program, all_cfg.clone()).boxed())
            .await
            .with_context(|| format!("{}: getProgramAccounts (the keeper's rounds of market {})", self.name, mi.id))?
            .len();
        let positions = all.saturating_sub(without_positions);
        if positions > 0 || reveal > 0 {
            tracing::info!(
                chain = %self.name, market = mi.id, rounds = all, held_by_open_positions = positions, reveal_pending = reveal,
                "solana: rounds this keeper paid the rent of are still open (positions only their users can close, forecast reveals); they are closed when the program allows it"
            );
        }
        self.reclaimed.lock().insert(mi.address, current);
        Ok(Flow::Next)
    }

    /// An instruction to the market program: its accounts and its data.
    pub(super) fn program_ix(&self, accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
        Instruction { program_id: self.cfg.program, accounts: accounts.to_account_metas(None), data: data.data() }
    }

    fn start_ix(&self, market: &Pubkey, m: &Market, epoch: u64) -> Instruction {
        let program = self.cfg.program;
        let accounts = acc::StartRound {
            payer: self.signer(),
            market: *market,
            round: round_address(&program, market, epoch),
            feed: m.feed,
            system_program: anchor_lang::system_program::ID,
        };
        self.program_ix(accounts, ix::StartRound { epoch })
    }

    fn close_ix(&self, market: &Pubkey, epoch: u64) -> Instruction {
        let program = self.cfg.program;
        let accounts = acc::CloseRound {
            market: *market,
            round: round_address(&program, market, epoch),
            payer: self.signer(),
            prev_round: round_address(&program, market, epoch.wrapping_sub(1)),
            next_round: round_address(&program, market, epoch.wrapping_add(1)),
        };
        self.program_ix(accounts, ix::CloseRound { epoch })
    }

    fn lock_ix(&self, market: &Pubkey, m: &Market, epoch: u64) -> Instruction {
        let program = self.cfg.program;
        let accounts = acc::LockRound {
            market: *market,
            round: round_address(&program, market, epoch),
            prev_round: round_address(&program, market, epoch.wrapping_sub(1)),
            feed: m.feed,
        };
        self.program_ix(accounts, ix::LockRound { epoch })
    }

    /// `settle_round`; `settler_token`: the keeper's token account for a token market's mint (its settle reward is
    /// paid there; without one the reward stays with the treasury).
    fn settle_ix(&self, market: &Pubkey, m: &Market, epoch: u64, settler_token: Option<Pubkey>) -> Instruction {
        let program = self.cfg.program;
        let accounts = acc::SettleRound {
            settler: self.signer(),
            market: *market,
            round: round_address(&program, market, epoch),
            prev_round: round_address(&program, market, epoch.wrapping_sub(1)),
            next_round: round_address(&program, market, epoch.wrapping_add(1)),
            feed: m.feed,
            vault: m.vault,
            settler_token,
            token_program: settler_token.map(|_| anchor_spl::token::ID),
        };
        self.program_ix(accounts, ix::SettleRound { epoch })
    }

    /// What was recorded of `rounds` before this process saw them (at the first pass after a restart, or of a term
    /// taken over from another keeper): their state as stored, and for an open round a start confirmed in the
    /// store, so that nothing is signalled twice (audit SOL L3). (A start confirmed just before a crash, its round
    /// not yet recorded, is then not signalled.)
    async fn seed_seen(&self, mi: &MarketInfo, rounds: &BTreeMap<u64, Round>) -> Result<()> {
        if self.seeded.lock().contains(&mi.address) {
            return Ok(());
        }
        let unseen: Vec<u64> = {
            let seen = self.seen.lock();
            rounds.keys().filter(|e| !seen.contains_key(&(mi.address, **e))).copied().collect()
        };
        let (Some(oldest), Some(newest)) = (unseen.first(), unseen.last()) else {
            self.seeded.lock().insert(mi.address);
            return Ok(());
        };
        let back = rounds.keys().next_back().map_or(0, |last| last - oldest) as i64 + 1;
        let stored = self.store.rounds(Some(&self.name), Some(mi.id as i64), back).await?;
        {
            let mut seen = self.seen.lock();
            for row in stored {
                let e = row.epoch as u64;
                if e < *oldest || e > *newest || !unseen.contains(&e) {
                    continue;
                }
                let status = match row.state {
                    RoundState::Locked => RoundStatus::Locked,
                    RoundState::Settled => RoundStatus::Settled,
                    RoundState::Cancelled => RoundStatus::Cancelled,
                };
                seen.insert((mi.address, e), status);
            }
        }
        for e in unseen {
            if rounds[&e].status != RoundStatus::Open || self.seen.lock().contains_key(&(mi.address, e)) {
                continue;
            }
            let action = format!("{}:{}:{e}", action_name(Action::Start(e)), mi.id);
            let txs = self.store.txs_for_action(&self.name, &action).await?;
            if txs.iter().any(|t| t.status == TxStatus::Confirmed) {
                self.seen.lock().insert((mi.address, e), RoundStatus::Open);
            }
        }
        self.seeded.lock().insert(mi.address);
        Ok(())
    }

    /// Fills the forecaster's candles of market `mi` (`forecasts = true`) from the rounds recorded in the store: the
    /// Solana counterpart of the EVM drivers' checkpoint refill ([`crate::scheduler::MarketDriver::refill_candles`]).
    async fn refill_candles(&self, mi: &MarketInfo, m: &Market) -> Result<()> {
        let Some(p) = self.publisher.get() else { return Ok(()) };
        // Each round adds one price (its close is the next round's lock): a few more rows than the model reads.
        let limit = 2 * p.context() as i64 + 2;
        for row in self.store.rounds(Some(&self.name), Some(mi.id as i64), limit).await? {
            self.to_forecaster(m, &row);
        }
        Ok(())
    }

    /// Gives the forecaster (`forecasts = true`) the prices of a recorded round that the program accepted.
    fn to_forecaster(&self, m: &Market, row: &RoundRow) {
        let Some(p) = self.publisher.get() else { return };
        for (t, price) in checkpoint_prices(m, row) {
            p.record_checkpoint(&self.name, row.market_id as u64, t, price);
        }
    }

    /// Stores (in `store`, fenced by the market's lease term) and signals a round's state once per change (started,
    /// locked, settled, cancelled).
    async fn record(&self, mi: &MarketInfo, m: &Market, r: &Round, store: &Store) -> Result<()> {
        let key = (mi.address, r.epoch);
        if self.seen.lock().get(&key) == Some(&r.status) {
            return Ok(());
        }
        let chain = self.name.clone();
        let (market, epoch) = (mi.id, r.epoch);
        let delay = if matches!(r.status, RoundStatus::Settled | RoundStatus::Cancelled) {
            self.delays.lock().get(&key).copied()
        } else {
            None
        };
        let lock_price = (r.lock_price_ts > 0).then(|| price(r.lock_price, m.decimals));
        let close_price = (r.close_price_ts > 0).then(|| price(r.close_price, m.decimals));
        let row = |state, outcome, reason| RoundRow {
            chain: chain.clone(),
            market_id: market as i64,
            epoch: epoch as i64,
            state,
            lock_price: lock_price.map(|p| p.to_string()),
            close_price: close_price.map(|p| p.to_string()),
            outcome,
            reason,
            up_wei: r.up_amount.to_string(),
            down_wei: r.down_amount.to_string(),
            reward_wei: (r.status == RoundStatus::Settled).then(|| r.reward_amount.to_string()),
            treasury_fee_wei: (r.status == RoundStatus::Settled).then(|| r.fee.to_string()),
            // Slots from the pass that found it due to the keeper's settle landing (none when someone else settled).
            delay_blocks: delay.map(|d| d as i64),
        };
        let previous = self.seen.lock().get(&key).copied();
        let locked = || SignalKind::RoundLocked {
            chain: chain.clone(),
            market,
            epoch,
            lock_price: lock_price.unwrap_or_else(|| Decimal::from_int(0)),
            round_id: r.lock_price_ts.to_string(),
        };
        match r.status {
            RoundStatus::Open => {
                self.bus.publish(
                    "keeper",
                    SignalKind::RoundStarted {
                        chain: chain.clone(),
                        market,
                        epoch,
                        start_at: r.start_ts as u64,
                        lock_at: r.lock_ts as u64,
                        close_at: r.close_ts as u64,
                    },
                );
            }
            RoundStatus::Locked => {
                let locked_row = row(RoundState::Locked, None, None);
                store.upsert_round(&locked_row).await?;
                self.to_forecaster(m, &locked_row);
                self.bus.publish("keeper", locked());
            }
            RoundStatus::Settled => {
                if previous != Some(RoundStatus::Locked) && lock_price.is_some() {
                    self.bus.publish("keeper", locked());
                }
                let o = outcome(r.outcome);
                let settled = row(RoundState::Settled, Some(o), None);
                store.upsert_round(&settled).await?;
                self.to_forecaster(m, &settled);
                self.metrics
                    .rounds
                    .get_or_create(&ResultLabel {
                        chain: chain.clone(),
                        market: market.to_string(),
                        result: "settled".into(),
                    })
                    .inc();
                self.bus.publish(
                    "keeper",
                    SignalKind::RoundSettled {
                        chain: chain.clone(),
                        market,
                        epoch,
                        outcome: o,
                        lock_price: lock_price.unwrap_or_else(|| Decimal::from_int(0)),
                        close_price: close_price.unwrap_or_else(|| Decimal::from_int(0)),
                        total_wei: (r.up_amount as u128 + r.down_amount as u128).to_string(),
                        reward_wei: r.reward_amount.to_string(),
                        treasury_fee_wei: r.fee.to_string(),
                        delay_blocks: delay.unwrap_or(0),
                    },
                );
            }
            RoundStatus::Cancelled => {
                let (reason, text) = cancel_reason(r);
                // The signal carries the typed reason (the EVM vocabulary); the program's own reason is logged.
                tracing::info!(chain = %chain, market, epoch, reason = text, "solana: round refunded");
                let o = outcome(r.outcome);
                let cancelled = row(RoundState::Cancelled, Some(o), Some(reason));
                store.upsert_round(&cancelled).await?;
                self.to_forecaster(m, &cancelled);
                self.metrics
                    .rounds
                    .get_or_create(&ResultLabel {
                        chain: chain.clone(),
                        market: market.to_string(),
                        result: "cancelled".into(),
                    })
                    .inc();
                self.bus.publish(
                    "keeper",
                    SignalKind::RoundCancelled {
                        chain: chain.clone(),
                        market,
                        epoch,
                        reason: crate::api::cancel_reason(reason),
                        outcome: o,
                    },
                );
            }
        }
        tracing::info!(chain = %chain, market, epoch, status = ?r.status, "solana: round");
        self.seen.lock().insert(key, r.status);
        if matches!(r.status, RoundStatus::Settled | RoundStatus::Cancelled) {
            self.delays.lock().remove(&key);
            self.due_slot.lock().remove(&key);
        }
        Ok(())
    }

    /// Simulates, prices and sends one program instruction, and follows it until it is confirmed, met a program
    /// error, or its blockhash expired.
    pub(super) async fn send(
        &self,
        action: Action,
        label: &str,
        instruction: Instruction,
        writable: &[Pubkey],
        cancel: &CancellationToken,
    ) -> Result<Sent, SendError> {
        self.send_fenced(None, action, label, instruction, writable, cancel).await
    }

    /// [`send`](Self::send) under a market's lease term (M3): the transaction's row is written only while `fence`
    /// holds the lease (else nothing is sent: [`SendError::Stopped`]), and it is broadcast again only while it
    /// still does; once the term is over the transaction is followed without being re-broadcast, until it is
    /// decided.
    pub(super) async fn send_fenced(
        &self,
        fence: Option<&crate::lease::Fence>,
        action: Action,
        label: &str,
        instruction: Instruction,
        writable: &[Pubkey],
        cancel: &CancellationToken,
    ) -> Result<Sent, SendError> {
        let leads = || fence.is_none_or(|f| f.may_send());
        // A stopping keeper (SIGTERM) signs and sends nothing new: only a transaction already in flight is followed
        // (AUDIT4 M-b: a reveal followed to its end was then closed by a new transaction).
        if !leads() || cancel.is_cancelled() {
            return Err(SendError::Stopped);
        }
        let writable = writable.to_vec();
        let fees = self
            .client
            .call(|c| c.get_recent_prioritization_fees(&writable).boxed())
            .await
            .map_err(|e| SendError::Other(anyhow::anyhow!("getRecentPrioritizationFees: {e}")))?;
        let fees: Vec<u64> = fees.iter().map(|f| f.prioritization_fee).collect();
        let cu_price = rules::cu_price(&fees, self.cfg.cu_price_percentile, self.cfg.max_cu_price_micro_lamports);
        let (blockhash, last_valid) = self
            .client
            .call(|c| c.get_latest_blockhash_with_commitment(CommitmentConfig::confirmed()).boxed())
            .await
            .map_err(|e| SendError::Other(anyhow::anyhow!("getLatestBlockhash: {e}")))?;
        let payer = self.signer();
        let build = |units: u32| {
            let ixs = [
                ComputeBudgetInstruction::set_compute_unit_limit(units),
                ComputeBudgetInstruction::set_compute_unit_price(cu_price),
                instruction.clone(),
            ];
            Transaction::new_signed_with_payer(&ixs, Some(&payer), &[&self.signer], blockhash)
        };
        // Simulate at the ceiling for the units; a program error here is decided without sending anything.
        let probe = build(rules::MAX_CU);
        let sim_config = RpcSimulateTransactionConfig {
            sig_verify: false,
            commitment: Some(CommitmentConfig::confirmed()),
            encoding: Some(UiTransactionEncoding::Base64),
            // Not on a node behind what the keeper saw (audit M2: it would refuse a step already possible).
            min_context_slot: self.min_context_slot(),
            ..Default::default()
        };
        let sim = self
            .client
            .call(|c| c.simulate_transaction_with_config(&probe, sim_config.clone()).boxed())
            .await
            .map_err(|e| SendError::Other(anyhow::anyhow!("simulateTransaction: {e}")))?
            .value;
        if let Some(err) = sim.err {
            return self.program_error(action, label, &TransactionError::from(err));
        }
        // Without the simulated units nothing is sent: the floor could be too few, and fail on chain for a fee
        // (audit SOL M7).
        let simulated = sim
            .units_consumed
            .ok_or_else(|| SendError::Other(anyhow::anyhow!("simulateTransaction reported no unitsConsumed")))?;
        let units = rules::compute_units(simulated, self.cfg.cu_margin_percent);
        let tx = build(units);
        let sig = tx.signatures[0];
        let row = TxRow {
            id: 0,
            chain: self.name.clone(),
            signer: payer.to_string(),
            action: label.to_string(),
            // Solana has no nonce: the column holds the blockhash's lastValidBlockHeight (restart recovery).
            nonce: last_valid as i64,
            tx_hash: sig.to_string(),
            status: TxStatus::Pending,
            max_fee_wei: cu_price.to_string(),
            priority_fee_wei: cu_price.to_string(),
            gas_limit: units as i64,
            sent_at: kronos_common::time::now_s() as i64,
            mined_block: None,
            gas_used: None,
            error: None,
        };
        if cancel.is_cancelled() {
            return Err(SendError::Stopped);
        }
        // Fenced: written (and then sent) only while the term holds the market's lease.
        let term = fence.and_then(|f| f.token());
        let id = match self.store.insert_tx(&row, term.as_ref()).await {
            Ok(id) => id,
            Err(e) if e.downcast_ref::<crate::store::Fenced>().is_some() => return Err(SendError::Stopped),
            Err(e) => return Err(SendError::Other(e)),
        };
        if !leads() {
            let _ = self
                .store
                .update_tx(id, TxStatus::Dropped, None, None, Some("the market's lease term ended before it was sent"))
                .await;
            return Err(SendError::Stopped);
        }
        let send_config = RpcSendTransactionConfig {
            skip_preflight: false,
            preflight_commitment: Some(CommitmentLevel::Confirmed),
            encoding: Some(UiTransactionEncoding::Base64),
            max_retries: Some(0),
            min_context_slot: self.min_context_slot(),
        };
        let broadcast = |tx: &Transaction| {
            let tx = tx.clone();
            let cfg = send_config;
            async move { self.client.call(|c| c.send_transaction_with_config(&tx, cfg).boxed()).await }
        };
        match broadcast(&tx).await {
            Ok(_) => {}
            Err(e) => {
                if let ClientErrorKind::RpcError(RpcError::RpcResponseError {
                    data: RpcResponseErrorData::SendTransactionPreflightFailure(r),
                    ..
                }) = e.kind()
                {
                    if let Some(err) = &r.err {
                        let err = TransactionError::from(err.clone());
                        let _ = self
                            .store
                            .update_tx(id, TxStatus::Failed, None, None, Some(&format!("preflight: {err:?}")))
                            .await;
                        return self.program_error(action, label, &err);
                    }
                }
                // Not sent as far as we know (every endpoint failed): the loop below re-broadcasts.
                tracing::warn!(chain = %self.name, action = %label, error = %super::client::transport_kind(&e), "solana: send failed");
            }
        }
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.bus.publish(
            "keeper",
            SignalKind::TxSent {
                chain: self.name.clone(),
                action: label.to_string(),
                tx_hash: sig.to_string(),
                nonce: 0,
            },
        );
        let mut last_send = Instant::now();
        // Followed until it is decided (confirmed, failed, or its blockhash's last valid height passed): a status
        // that cannot be read now (every endpoint erring) is read again, never taken for a failure, so no second
        // transaction for this step is signed while this one may still land (audit SOL M1). A stopping keeper
        // (SIGTERM) follows it on until it is decided, so its pass — and so its lease term, given up only after the
        // last pass — outlives a transaction that may still land, as the EVM scheduler does (audit L1); only past
        // [`STOP_FOLLOW_MAX`] (its blockhash long expired, or no status readable) is the row left pending for the
        // next start to settle (`recover`).
        let mut stopping: Option<Instant> = None;
        // AUDIT6-SOL L3: a follow outside a market's pass (the forecast task's commits and reveals) has no pass the
        // tick could time, so it times itself: listed in `stuck` past [`rules::PASS_STUCK_AFTER`], until it ends.
        let (followed, outside_pass) = (Instant::now(), PASS_MARKET.try_with(|_| ()).is_err());
        let mut unstick = Unstick { stuck: &self.stuck, key: None };
        let mut last_error: Option<String> = None;
        loop {
            if cancel.is_cancelled() && stopping.get_or_insert_with(Instant::now).elapsed() > STOP_FOLLOW_MAX {
                return Err(SendError::Stopped);
            }
            if outside_pass && unstick.key.is_none() && rules::pass_stuck(followed.elapsed()) {
                let key = (writable.first().copied().unwrap_or_default(), FOLLOW);
                let line = format!(
                    "{label}: followed for {} s without a decision{}",
                    followed.elapsed().as_secs(),
                    last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
                );
                tracing::error!(chain = %self.name, action = %label, detail = %line, "solana: a transaction's follow is stuck");
                self.stuck.lock().insert(key, line);
                unstick.key = Some(key);
            }
            tokio::time::sleep(self.poll.min(Duration::from_millis(500))).await;
            let (status, height) = match self.status_of(&sig, false).await {
                Ok(s) => s,
                Err(e) => {
                    let msg = redact(&format!("{label}: cannot read its status: {e:#}"));
                    tracing::warn!(chain = %self.name, error = %msg, "solana: reading the transaction's status again");
                    // AUDIT5-SOL M2: kept for the market's pass (the tick reports a pass stuck for long), never
                    // toggling the keeper's health per poll.
                    last_error = Some(msg.clone());
                    let _ = PASS_MARKET.try_with(|m| self.pass_errors.lock().insert(*m, msg));
                    continue;
                }
            };
            match rules::send_step(&status, height, last_valid, last_send.elapsed().as_secs(), self.cfg.rebroadcast_s) {
                SendStep::Wait => {}
                SendStep::Rebroadcast => {
                    self.counters.rebroadcast.fetch_add(1, Ordering::Relaxed);
                    // /metrics stays current while one transaction is followed for long.
                    self.refresh_metrics();
                    // Once the lease term is over it is only followed: another keeper leads the market now.
                    if leads() {
                        let _ = broadcast(&tx).await;
                    }
                    last_send = Instant::now();
                }
                SendStep::ReSign => {
                    self.counters.resigned.fetch_add(1, Ordering::Relaxed);
                    self.store
                        .update_tx(id, TxStatus::Dropped, None, None, Some("blockhash expired before it landed"))
                        .await
                        .map_err(SendError::Other)?;
                    tracing::info!(chain = %self.name, action = %label, "solana: blockhash expired; re-checking the round before signing again");
                    return Ok(Sent::Expired);
                }
                SendStep::Confirmed => {
                    let slot = self.slot_of(&sig).await.unwrap_or(0);
                    self.min_slot.fetch_max(slot, Ordering::Relaxed);
                    self.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                    self.store
                        .update_tx(id, TxStatus::Confirmed, Some(slot as i64), Some(units as i64), None)
                        .await
                        .map_err(SendError::Other)?;
                    self.bus.publish(
                        "keeper",
                        SignalKind::TxConfirmed {
                            chain: self.name.clone(),
                            action: label.to_string(),
                            tx_hash: sig.to_string(),
                            block: slot,
                            gas_used: units as u64,
                        },
                    );
                    return Ok(Sent::Done(slot));
                }
                SendStep::Failed(err) => {
                    let slot = self.slot_of(&sig).await.unwrap_or(0);
                    self.min_slot.fetch_max(slot, Ordering::Relaxed);
                    self.store
                        .update_tx(id, TxStatus::Failed, None, None, Some(&format!("{err:?}")))
                        .await
                        .map_err(SendError::Other)?;
                    return self.program_error(action, label, &err);
                }
            }
        }
    }

    async fn slot_of(&self, sig: &Signature) -> Result<u64> {
        let sigs = [*sig];
        let st = self.client.call(|c| c.get_signature_statuses(&sigs).boxed()).await?;
        Ok(st.value.into_iter().next().flatten().map(|s| s.slot).unwrap_or(0))
    }

    fn program_error(&self, action: Action, label: &str, e: &TransactionError) -> Result<Sent, SendError> {
        match rules::classify(action, e) {
            ErrorClass::AlreadyDone => {
                tracing::info!(chain = %self.name, action = %label, "solana: already done by someone else");
                Ok(Sent::AlreadyDone)
            }
            ErrorClass::NotYet => Ok(Sent::NotYet),
            ErrorClass::FeedChanged => Err(SendError::FeedChanged),
            // The program's error travels typed (its text is `what`) for callers that decide by variant.
            ErrorClass::Other(what) => {
                Err(SendError::Other(anyhow::Error::new(super::forecast::Refused { what, error: e.clone() })))
            }
        }
    }
}

/// The cluster's clock (unix seconds) and slot from a Clock sysvar account — read with other accounts in one
/// `getMultipleAccounts`, the clock at that read's own slot. Its fixed layout: slot u64, epoch_start_timestamp i64,
/// epoch u64, leader_schedule_epoch u64, unix_timestamp i64 (little endian).
pub(super) fn clock_of(acc: &solana_account::Account) -> Result<(i64, u64)> {
    anyhow::ensure!(acc.data.len() >= 40, "the Clock sysvar has {} bytes", acc.data.len());
    let slot = u64::from_le_bytes(acc.data[0..8].try_into()?);
    let now = i64::from_le_bytes(acc.data[32..40].try_into()?);
    Ok((now, slot))
}

/// How long a stopping keeper follows a sent transaction at most (audit L1): past a blockhash's lifetime (150
/// blocks, about a minute), with room for a slow status read.
const STOP_FOLLOW_MAX: Duration = Duration::from_secs(120);

/// Why a send gave up.
#[derive(Debug)]
pub(super) enum SendError {
    /// The program refused with `FeedChanged`: the market is refused.
    FeedChanged,
    /// The keeper is stopping (the transaction's row stays pending for the next start to settle), or the market's
    /// lease term ended (nothing was sent).
    Stopped,
    Other(anyhow::Error),
}

/// `s` without any registered secret (the RPC URLs' API keys): every error text that reaches `/health`, a log line,
/// a signal (Telegram, `/ws`, the store's events) goes through it, whatever a library put in it.
fn redact(s: &str) -> String {
    kronos_common::Redactor::global().redact(s)
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Start(_) => "start",
        Action::Lock(_) => "lock",
        Action::Settle(_) => "settle",
        Action::Refund(_) => "refund",
        Action::Close(_) => "close",
        Action::Wait(_) | Action::Done => "none",
    }
}

/// The kind of a failed step's error, for its alert ([`rules::alert_now`]): the program's error variant when the
/// program refused it, else where it failed (a node, the store).
pub(super) fn error_kind(e: &anyhow::Error) -> String {
    if let Some(r) = e.downcast_ref::<super::forecast::Refused>() {
        return format!("program: {}", r.what);
    }
    if e.downcast_ref::<solana_client::client_error::ClientError>().is_some() {
        return "rpc".into();
    }
    "other".into()
}
