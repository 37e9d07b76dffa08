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
const CLOCK: Pubkey = anchor_lang::prelude::pubkey!("SysvarC1ock11111111111111111111111111111111");

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
    /// Discovery (no `markets`): only markets whose authority is one of these are driven (audit SOL H3).
    creators: Vec<Pubkey>,
    /// The slot of the keeper's latest confirmed transaction: reads ask for at least this slot
    /// (`minContextSlot`), so a lagging endpoint never shows a step as still needed after it was done (SOL M2).
    min_slot: AtomicU64,
    /// Per step (its label): how many times in a row it failed, and when it may be tried again (SOL M7).
    failing: Mutex<HashMap<String, (u32, Instant)>>,
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
            creators,
            min_slot: AtomicU64::new(0),
            failing: Mutex::new(HashMap::new()),
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
        let version = self.client.call(|c| c.get_version().boxed()).await.map_err(|e| {
            anyhow::anyhow!("{}: no RPC endpoint answers ({})", self.name, super::client::transport_kind(&e))
        })?;
        tracing::info!(chain = %self.name, solana_core = %version.solana_core, signer = %self.signer(), "solana: connected");
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
            out.push(MarketInfo { address: *a, id: m.id, feed: m.feed, refused: None });
        }
        let none = out.is_empty();
        *self.markets.lock() = out;
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

    /// `minContextSlot` for reads: the slot of the keeper's latest confirmed transaction, if any.
    fn min_context_slot(&self) -> Option<u64> {
        Some(self.min_slot.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// A signature's status and the current block height; `history`: search the transaction history too.
    async fn status_of(&self, sig: &Signature, history: bool) -> Result<(SigStatus, u64)> {
        let sigs = [*sig];
        let st = if history {
            self.client.call(|c| c.get_signature_statuses_with_history(&sigs).boxed()).await?
        } else {
            self.client.call(|c| c.get_signature_statuses(&sigs).boxed()).await?
        };
        let height =
            self.client.call(|c| c.get_block_height_with_commitment(CommitmentConfig::confirmed()).boxed()).await?;
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
        loop {
            let started = Instant::now();
            let r = match std::panic::AssertUnwindSafe(self.tick(&cancel)).catch_unwind().await {
                Ok(r) => r,
                Err(p) => {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(anyhow::anyhow!("{}: a pass panicked: {what}", self.name))
                }
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
        if let Some(f) = forecasts {
            let _ = f.await;
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
        let mut h = self.health.lock();
        let was = h.healthy;
        // A refused market is unhealthy too: /health and the alerts say why.
        h.healthy = error.is_none() && refused.is_empty();
        h.rpc_endpoint = self.client.active();
        h.endpoints = self
            .client
            .endpoints()
            .into_iter()
            .map(|e| crate::rpc::EndpointStatus { endpoint: e.host, up: e.up, last_error: e.last_error })
            .collect();
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
        // The Clock sysvar's fixed layout: slot u64, epoch_start_timestamp i64, epoch u64, leader_schedule_epoch
        // u64, unix_timestamp i64 (little endian).
        anyhow::ensure!(acc.data.len() >= 40, "the Clock sysvar has {} bytes", acc.data.len());
        let slot = u64::from_le_bytes(acc.data[0..8].try_into()?);
        let now = i64::from_le_bytes(acc.data[32..40].try_into()?);
        Ok((now, slot))
    }

    /// One pass over every market.
    async fn tick(&self, cancel: &CancellationToken) -> Result<()> {
        let (now, slot) = self.clock().await?;
        {
            let mut h = self.health.lock();
            h.head_block = slot;
            h.head_time = now.max(0) as u64;
            h.lag_s = (kronos_common::time::now_s() as i64 - now).max(0) as u64;
        }
        let markets = self.markets.lock().clone();
        // One market's error (an unreadable account, …) is reported and the others are still driven.
        let mut errors = Vec::new();
        for (i, mi) in markets.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let refused = match self.market_pass(mi, now, cancel).await {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("market {} ({}): {e:#}", mi.id, mi.address));
                    continue;
                }
            };
            let mut ms = self.markets.lock();
            if ms[i].refused != refused {
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
                ms[i].refused = refused;
            }
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    /// Reads one market and sends what its rounds need; returns why it is refused, if it is.
    async fn market_pass(&self, mi: &MarketInfo, now: i64, cancel: &CancellationToken) -> Result<Option<String>> {
        let program = self.cfg.program;
        let approval_key = pda(&program, &[FEED_SEED, mi.feed.as_ref()]);
        let got = self.get_many(&[mi.address, mi.feed, approval_key]).await?;
        let market_acc = got[0].as_ref().with_context(|| format!("market {} is gone", mi.address))?;
        let m = Market::try_deserialize(&mut market_acc.data.as_slice())
            .map_err(|e| anyhow::anyhow!("market {}: {e}", mi.address))?;
        let Some(feed) = got[1].as_ref() else {
            return Ok(Some(rules::Refusal::BadFeed("no such account".into()).to_string()));
        };
        let store_program: Pubkey = kronos_market::state::CHAINLINK_STORE;
        if feed.owner != store_program {
            return Ok(Some(
                rules::Refusal::BadFeed(format!("owned by {}, not the Chainlink store", feed.owner)).to_string(),
            ));
        }
        let header = match chainlink::header(&feed.data) {
            Ok(h) => h,
            Err(e) => return Ok(Some(rules::Refusal::BadFeed(format!("{e:?}")).to_string())),
        };
        let approval = got[2]
            .as_ref()
            .filter(|a| a.owner == program)
            .and_then(|a| FeedApproval::try_deserialize(&mut a.data.as_slice()).ok())
            .map(|a| (a.owner, a.writer));
        // A refused market gets no new round; its running rounds are still driven to their end (audit SOL M8):
        // without an approval (revoked) they settle as the program allows, and on a changed owner or writer the
        // program refunds them (`FeedChanged`) at the first lock or settle, sent as soon as its time has come.
        let refusal = rules::check_feed(
            (m.feed_owner, m.feed_writer),
            approval,
            (Pubkey::new_from_array(header.owner), Pubkey::new_from_array(header.writer)),
        )
        .err();
        let changed = matches!(refusal, Some(rules::Refusal::Changed { .. }));
        let epochs: Vec<u64> = rules::live_epochs(&m, now, rules::MAX_LOOKBACK).collect();
        let keys: Vec<Pubkey> = epochs.iter().map(|e| round_address(&program, &mi.address, *e)).collect();
        let accs = self.get_many(&keys).await?;
        let rounds: BTreeMap<u64, Round> = epochs
            .iter()
            .zip(accs)
            .filter_map(|(e, a)| {
                let a = a?;
                (a.owner == program).then_some(())?;
                Round::try_deserialize(&mut a.data.as_slice()).ok().map(|r| (*e, r))
            })
            .collect();
        for r in rounds.values() {
            self.record(mi, &m, r).await?;
        }
        let flagged = header.state != chainlink::STATE_NORMAL;
        let feed_data = feed.data.clone();
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
                || (!flagged && !matches!(chainlink::in_effect_at(&feed_data, t), Err(LookupError::NotFinal)))
        };
        let first = epochs.first().copied().unwrap_or(0);
        for e in epochs {
            if cancel.is_cancelled() {
                break;
            }
            let mut action = rules::next_action(&m, e, rounds.get(&e), now, &final_at);
            // A finished round this keeper started: its rent back once the program allows it (audit SOL H3). The
            // oldest epoch read is left alone unless it is the first: its previous round was not read.
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
                Action::Settle(epoch) | Action::Refund(epoch) => self.settle_ix(&mi.address, &m, epoch),
                Action::Wait(_) | Action::Done => continue,
            };
            let writable: Vec<Pubkey> =
                instruction.accounts.iter().filter(|a| a.is_writable).map(|a| a.pubkey).collect();
            let label = format!("{}:{}:{}", action_name(action), mi.id, e);
            if self.failing.lock().get(&label).is_some_and(|(_, at)| Instant::now() < *at) {
                continue;
            }
            let sent = self.send(action, &label, instruction, &writable, cancel).await;
            self.refresh_metrics();
            if !matches!(sent, Err(SendError::Other(_))) {
                self.failing.lock().remove(&label);
            }
            match sent {
                Ok(outcome) => {
                    tracing::debug!(chain = %self.name, action = %label, ?outcome, "solana: action");
                    if matches!(action, Action::Close(_)) {
                        // Nothing more will be recorded for it.
                        self.seen.lock().remove(&(mi.address, e));
                    }
                }
                Err(SendError::Stopped) => return Ok(None),
                Err(SendError::FeedChanged) => {
                    return Ok(Some(rules::Refusal::Changed { what: "owner or writer" }.to_string()))
                }
                Err(SendError::Other(e)) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut f = self.failing.lock();
                        let now = Instant::now();
                        // Steps of rounds long gone are forgotten.
                        f.retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(600));
                        let n = f.get(&label).map_or(0, |(n, _)| *n).saturating_add(1);
                        f.insert(label.clone(), (n, now + rules::retry_after(n, self.poll)));
                    }
                    tracing::warn!(chain = %self.name, action = %label, error = %redact(&format!("{e:#}")), "solana: action failed");
                    self.bus.publish(
                        "keeper",
                        SignalKind::TxFailed {
                            chain: self.name.clone(),
                            action: label,
                            error: redact(&format!("{e:#}")),
                        },
                    );
                }
            }
        }
        Ok(refusal.map(|r| r.to_string()))
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

    fn settle_ix(&self, market: &Pubkey, m: &Market, epoch: u64) -> Instruction {
        let program = self.cfg.program;
        let accounts = acc::SettleRound {
            settler: self.signer(),
            market: *market,
            round: round_address(&program, market, epoch),
            prev_round: round_address(&program, market, epoch.wrapping_sub(1)),
            next_round: round_address(&program, market, epoch.wrapping_add(1)),
            feed: m.feed,
            vault: m.vault,
            // Token markets: without the settler's token account its reward stays with the treasury.
            settler_token: None,
            token_program: None,
        };
        self.program_ix(accounts, ix::SettleRound { epoch })
    }

    /// Stores and signals a round's state once per change (started, locked, settled, cancelled).
    async fn record(&self, mi: &MarketInfo, m: &Market, r: &Round) -> Result<()> {
        let key = (mi.address, r.epoch);
        if self.seen.lock().get(&key) == Some(&r.status) {
            return Ok(());
        }
        let chain = self.name.clone();
        let (market, epoch) = (mi.id, r.epoch);
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
            delay_blocks: None,
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
                self.store.upsert_round(&row(RoundState::Locked, None, None)).await?;
                self.bus.publish("keeper", locked());
            }
            RoundStatus::Settled => {
                if previous != Some(RoundStatus::Locked) && lock_price.is_some() {
                    self.bus.publish("keeper", locked());
                }
                let o = outcome(r.outcome);
                self.store.upsert_round(&row(RoundState::Settled, Some(o), None)).await?;
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
                        delay_blocks: 0,
                    },
                );
            }
            RoundStatus::Cancelled => {
                let (reason, text) = cancel_reason(r);
                // The signal carries the typed reason (the EVM vocabulary); the program's own reason is logged.
                tracing::info!(chain = %chain, market, epoch, reason = text, "solana: round refunded");
                let o = outcome(r.outcome);
                self.store.upsert_round(&row(RoundState::Cancelled, Some(o), Some(reason))).await?;
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
        let id = self.store.insert_tx(&row, None).await.map_err(SendError::Other)?;
        let send_config = RpcSendTransactionConfig {
            skip_preflight: false,
            preflight_commitment: Some(CommitmentLevel::Confirmed),
            encoding: Some(UiTransactionEncoding::Base64),
            max_retries: Some(0),
            min_context_slot: None,
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
        // transaction for this step is signed while this one may still land (audit SOL M1). Stopping the keeper
        // leaves the row pending: the next start settles it (`recover`).
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(SendError::Stopped),
                _ = tokio::time::sleep(self.poll.min(Duration::from_millis(500))) => {}
            }
            let (status, height) = match self.status_of(&sig, false).await {
                Ok(s) => s,
                Err(e) => {
                    let msg = redact(&format!("{label}: cannot read its status: {e:#}"));
                    tracing::warn!(chain = %self.name, error = %msg, "solana: reading the transaction's status again");
                    self.healthy(Some(msg));
                    continue;
                }
            };
            match rules::send_step(&status, height, last_valid, last_send.elapsed().as_secs(), self.cfg.rebroadcast_s) {
                SendStep::Wait => {}
                SendStep::Rebroadcast => {
                    self.counters.rebroadcast.fetch_add(1, Ordering::Relaxed);
                    // /metrics stays current while one transaction is followed for long.
                    self.refresh_metrics();
                    let _ = broadcast(&tx).await;
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

/// Why a send gave up.
#[derive(Debug)]
pub(super) enum SendError {
    /// The program refused with `FeedChanged`: the market is refused.
    FeedChanged,
    /// The keeper is stopping; the transaction's row stays pending for the next start to settle.
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
