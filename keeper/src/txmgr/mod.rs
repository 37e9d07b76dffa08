//! The transaction manager: one nonce stream per signer per chain, EIP-1559 (or legacy) fees under caps,
//! simulation before sending, fee bumps for stuck transactions, error classification, confirmations and reorg checks.
//!
//! Rules (after OpenZeppelin Relayer's): a transaction is simulated first and never sent if it would revert; every
//! signed transaction is written to the store before it is broadcast; a transaction not mined within `bump_after`
//! is replaced with fees raised by at least `bump_percent` (capped); "nonce too low", "already known" and
//! "underpriced" lead to a receipt check, "nonce too high" to a nonce resync, transport failures to a retry (the RPC
//! layer fails over between endpoints), and an application revert is returned to the caller without retrying.
//! A receipt counts once the chain's confirmations are reached and its block is still canonical.
//!
//! The rules are pure functions, unit-tested without a chain, in the style of the relayer's modules: [`fees`]
//! (first fees, replacement fees, gas limit), [`replace`] (when a version is stuck and what it gets, cancellations,
//! the nonce counter), [`status`] (receipts, confirmations, reorganisations, recovery after a restart),
//! [`node_error`] (a node's error answer by meaning: the only place that reads an error's text) and [`revert`]
//! (revert data decoded into the contracts' error enums). This module is the IO around them.

pub(crate) mod fees;
pub(crate) mod node_error;
pub(crate) mod replace;
pub(crate) mod revert;
pub(crate) mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::consensus::Transaction as _;
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockNumberOrTag;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, TxHash, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use kronos_common::signals::SignalKind;
use kronos_common::{Bus, FeeModel};

use crate::lease::Fence;
use crate::store::{Store, TxRow, TxStatus};

pub(crate) use fees::{next_fees, Fees};
pub(crate) use node_error::{classify_node_error, NodeError};
pub(crate) use replace::{nonce_gap, released};
use revert::revert_from;
pub(crate) use revert::{decode_revert, is_benign_revert, is_outdated_proof, judge_on_chain_revert, OnChainRevert};

/// How a transaction ended badly.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxError {
    /// The call reverts (in simulation or on chain): an application answer, not retried.
    #[error("reverted: {reason}")]
    Revert { reason: String, data: Option<Bytes> },
    /// The RPC endpoints could not be reached.
    #[error("transport: {0}")]
    Transport(String),
    /// The signer cannot pay, or the node refused the transaction for good.
    #[error("{0}")]
    Fatal(String),
    /// This keeper no longer holds the lease term the transaction was for: nothing more is sent.
    #[error("not sent: {0}")]
    Fenced(String),
}

/// Fee limits and timing for one chain.
#[derive(Debug, Clone)]
pub struct TxPolicy {
    pub fee_model: FeeModel,
    pub max_fee_wei: U256,
    pub max_priority_fee_wei: U256,
    pub bump_after: Duration,
    pub bump_percent: u64,
    pub confirmations: u64,
    pub poll: Duration,
}

/// A mined and confirmed transaction.
#[derive(Debug, Clone)]
pub struct Mined {
    pub hash: TxHash,
    pub block: u64,
    pub gas_used: u64,
    pub effective_gas_price: u128,
    /// Broadcasts made (1 + replacements + re-broadcasts).
    pub attempts: u32,
    /// The receipt's logs.
    pub logs: Vec<alloy::primitives::Log>,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct TxCounters {
    pub sent: std::sync::atomic::AtomicU64,
    pub confirmed: std::sync::atomic::AtomicU64,
    pub reverted: std::sync::atomic::AtomicU64,
    pub bumped: std::sync::atomic::AtomicU64,
    pub rebroadcast: std::sync::atomic::AtomicU64,
    pub reorged: std::sync::atomic::AtomicU64,
    pub gas_used: std::sync::atomic::AtomicU64,
}

/// The transaction manager of one signer on one chain.
pub struct TxManager {
    pub chain: String,
    pub chain_id: u64,
    provider: DynProvider,
    wallet: EthereumWallet,
    pub signer: Address,
    policy: TxPolicy,
    store: Store,
    bus: Bus,
    next_nonce: tokio::sync::Mutex<Option<u64>>,
    /// Nonces come from the store's nonce authority (a signer shared by several keepers).
    shared_nonces: std::sync::atomic::AtomicBool,
    pub counters: Arc<TxCounters>,
}

fn is_transport(e: &RpcError<TransportErrorKind>) -> bool {
    e.is_transport_error()
}

fn message(e: &RpcError<TransportErrorKind>) -> String {
    match e.as_error_resp() {
        Some(p) => p.message.to_string(),
        None => e.to_string(),
    }
}

/// A store error as a transaction error: `Fenced` when the store refused a write under an ended lease term.
fn fenced_or_fatal(e: anyhow::Error) -> TxError {
    match e.downcast_ref::<crate::store::Fenced>() {
        Some(f) => TxError::Fenced(f.to_string()),
        None => TxError::Fatal(format!("store: {e:#}")),
    }
}

/// Whether an action's outcome is on chain (see [`TxManager::send_unless_done`]).
pub type DoneCheck<'a> = dyn Fn() -> futures::future::BoxFuture<'a, bool> + Send + Sync + 'a;

/// A signed transaction being followed, with every version (fee replacement) sent so far.
struct Pending {
    to: Address,
    data: Bytes,
    value: U256,
    nonce: u64,
    gas: u64,
    fees: Fees,
    hash: TxHash,
    raw: Vec<u8>,
    row: i64,
    hashes: Vec<(i64, TxHash)>,
}

/// How following a transaction ended, short of an error.
enum Followed {
    Mined(Mined),
    /// Another transaction used the nonce.
    NonceUsed,
    /// The nonce was ahead of the account's; start over.
    Restart,
}

impl TxManager {
    pub async fn new(
        chain: &str,
        provider: DynProvider,
        signer: PrivateKeySigner,
        policy: TxPolicy,
        store: Store,
        bus: Bus,
    ) -> Result<Self, TxError> {
        let chain_id = provider.get_chain_id().await.map_err(|e| TxError::Transport(e.to_string()))?;
        let address = signer.address();
        Ok(TxManager {
            chain: chain.to_string(),
            chain_id,
            provider,
            wallet: EthereumWallet::from(signer),
            signer: address,
            policy,
            store,
            bus,
            next_nonce: tokio::sync::Mutex::new(None),
            shared_nonces: Default::default(),
            counters: Arc::new(TxCounters::default()),
        })
    }

    /// Takes nonces from the store's nonce authority from now on (`keeper.shared_signer`): fenced sends only.
    pub fn share_nonces(&self) {
        self.shared_nonces.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether nonces come from the store's nonce authority (a signer shared by several keepers).
    pub fn shares_nonces(&self) -> bool {
        self.shared_nonces.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The provider this manager sends through.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    async fn current_fees(&self) -> Result<Fees, TxError> {
        let quote = match self.policy.fee_model {
            FeeModel::Eip1559 => {
                let est = self.provider.estimate_eip1559_fees().await.map_err(|e| TxError::Transport(message(&e)))?;
                fees::Quote::Eip1559 { max_fee: est.max_fee_per_gas, priority: est.max_priority_fee_per_gas }
            }
            FeeModel::Legacy => {
                let gas_price = self.provider.get_gas_price().await.map_err(|e| TxError::Transport(message(&e)))?;
                fees::Quote::Legacy { gas_price }
            }
        };
        Ok(fees::market_fees(&self.policy, quote))
    }

    /// Simulates the call from this signer; `Err(Revert)` when it would revert.
    pub async fn simulate(&self, to: Address, data: &Bytes, value: U256) -> Result<u64, TxError> {
        let req =
            TransactionRequest::default().with_from(self.signer).with_to(to).with_input(data.clone()).with_value(value);
        if let Err(e) = self.provider.call(req.clone()).await {
            return Err(revert_from(&e).unwrap_or_else(|| {
                if is_transport(&e) {
                    TxError::Transport(message(&e))
                } else {
                    TxError::Fatal(format!("simulation failed: {}", message(&e)))
                }
            }));
        }
        let gas = self.provider.estimate_gas(req).await.map_err(|e| {
            revert_from(&e).unwrap_or_else(|| {
                if is_transport(&e) {
                    TxError::Transport(message(&e))
                } else {
                    TxError::Fatal(message(&e))
                }
            })
        })?;
        Ok(gas)
    }

    async fn take_nonce(&self, fence: Option<&Fence>) -> Result<u64, TxError> {
        let mut g = self.next_nonce.lock().await;
        if let Some(token) =
            fence.and_then(Fence::token).filter(|_| self.shared_nonces.load(std::sync::atomic::Ordering::Relaxed))
        {
            // A nonce handed out is trusted over the node's count for half a lease TTL: its taker broadcasts it
            // within milliseconds unless it died, and a dead keeper's markets are taken over only after a full TTL,
            // so its untaken nonce leaves no gap behind the new leader's.
            let hold_ms = fence.map(|f| f.lease.timing().ttl.as_millis() as i64 / 2).unwrap_or_default();
            let pending = self
                .provider
                .get_transaction_count(self.signer)
                .pending()
                .await
                .map_err(|e| TxError::Transport(message(&e)))?;
            return match self
                .store
                .take_shared_nonce(&self.chain, &self.signer.to_string(), pending as i64, &token, hold_ms)
                .await
            {
                Ok(n) => Ok(n as u64),
                Err(e) => Err(fenced_or_fatal(e)),
            };
        }
        let n = match *g {
            Some(n) => n,
            None => self
                .provider
                .get_transaction_count(self.signer)
                .pending()
                .await
                .map_err(|e| TxError::Transport(message(&e)))?,
        };
        *g = Some(n + 1);
        Ok(n)
    }

    async fn resync_nonce(&self) {
        *self.next_nonce.lock().await = None;
    }

    /// Gives back a nonce taken for a transaction that was never broadcast.
    async fn release_nonce(&self, nonce: u64) {
        let mut g = self.next_nonce.lock().await;
        if self.shared_nonces.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.store.release_shared_nonce(&self.chain, &self.signer.to_string(), nonce as i64).await;
        }
        *g = released(*g, nonce);
    }

    async fn sign(
        &self,
        to: Address,
        data: &Bytes,
        value: U256,
        nonce: u64,
        gas: u64,
        fees: Fees,
    ) -> Result<(TxHash, Vec<u8>), TxError> {
        let mut req = TransactionRequest::default()
            .with_from(self.signer)
            .with_to(to)
            .with_input(data.clone())
            .with_value(value)
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas);
        req = match self.policy.fee_model {
            FeeModel::Eip1559 => req
                .with_max_fee_per_gas(fees.max_fee.to::<u128>())
                .with_max_priority_fee_per_gas(fees.priority.to::<u128>()),
            FeeModel::Legacy => req.with_gas_price(fees.max_fee.to::<u128>()),
        };
        let env = req.build(&self.wallet).await.map_err(|e| TxError::Fatal(format!("signing failed: {e}")))?;
        Ok((*env.tx_hash(), env.encoded_2718()))
    }

    /// Simulates, signs, sends and follows one transaction to its confirmations. `action` names it in the store
    /// (e.g. `execute:<market>:<checkpoint>`).
    ///
    /// Once a nonce is taken the transaction is either broadcast and followed to the end (transport failures are
    /// retried, never a reason to leave a transaction in the pool unfollowed), or the nonce is given back.
    pub async fn send(&self, action: &str, to: Address, data: Bytes, value: U256) -> Result<Mined, TxError> {
        self.send_unless_done(action, to, data, value, &|| Box::pin(async { false })).await
    }

    /// [`send`](Self::send) for an action that anyone may do: when the transaction reverts on chain and `done` says
    /// the action's outcome is on chain anyway (someone else did it first, e.g. with a copy of this transaction and
    /// a higher tip), the revert is returned without a `TxFailed` alert, whatever the revert reason.
    pub async fn send_unless_done(
        &self,
        action: &str,
        to: Address,
        data: Bytes,
        value: U256,
        done: &DoneCheck<'_>,
    ) -> Result<Mined, TxError> {
        self.send_fenced(None, action, to, data, value, done).await
    }

    /// [`send_unless_done`](Self::send_unless_done) under a market's lease term: before the nonce is taken, when the
    /// transaction is recorded (the store refuses the row once the term is over) and before every broadcast, the term
    /// must still hold the lease; once it does not, nothing more is sent or followed and `Fenced` is returned.
    pub async fn send_fenced(
        &self,
        fence: Option<&Fence>,
        action: &str,
        to: Address,
        data: Bytes,
        value: U256,
        done: &DoneCheck<'_>,
    ) -> Result<Mined, TxError> {
        loop {
            self.check_fence(fence, action)?;
            let est = self.simulate(to, &data, value).await?;
            let gas = fees::gas_limit(est);
            // Fees before the nonce: a failure here leaves no nonce taken.
            let fees = self.current_fees().await?;
            self.check_fence(fence, action)?;
            let nonce = self.take_nonce(fence).await?;
            let (hash, raw) = match self.sign(to, &data, value, nonce, gas, fees).await {
                Ok(s) => s,
                Err(e) => {
                    self.release_nonce(nonce).await;
                    return Err(e);
                }
            };
            let row = match self.record(fence, action, nonce, hash, gas, fees).await {
                Ok(row) => row,
                Err(e @ TxError::Fenced(_)) => {
                    // The term ended with the nonce taken: give it back, or fill it (never clear the nonce counter
                    // other markets' drivers take from).
                    let tx = Pending { to, data, value, nonce, gas, fees, hash, raw, row: -1, hashes: vec![] };
                    self.orphaned(action, tx, false).await;
                    return Err(e);
                }
                Err(e) => {
                    self.release_nonce(nonce).await;
                    return Err(e);
                }
            };
            let tx =
                Pending { to, data: data.clone(), value, nonce, gas, fees, hash, raw, row, hashes: vec![(row, hash)] };
            match self.follow(fence, action, tx, true, done).await? {
                Followed::Mined(m) => return Ok(m),
                Followed::NonceUsed | Followed::Restart => continue,
            }
        }
    }

    /// Broadcasts (when `broadcast`) and follows a signed transaction until one of its versions is mined and
    /// confirmed, replacing it with higher fees when it is not mined in time and broadcasting it again when it leaves
    /// the pool.
    async fn follow(
        &self,
        fence: Option<&Fence>,
        action: &str,
        mut tx: Pending,
        broadcast: bool,
        done: &DoneCheck<'_>,
    ) -> Result<Followed, TxError> {
        let mut attempts = 0u32;
        // When the version being followed was last (re)broadcast or replaced: it is stuck `bump_after` later.
        let mut sent_at = Instant::now();
        let mut need_broadcast = broadcast;
        let mut transport_wait = self.policy.poll;
        loop {
            if let Err(e) = self.check_fence(fence, action) {
                // The new leader redoes what is still needed (a version already out may still be mined: the chain
                // then records the action once, and the new leader sees it done). The nonce is this keeper's own
                // key's: it is followed to the end without the lease, never left a gap nor handed out again.
                let out = attempts > 0 || !broadcast;
                Box::pin(self.orphaned(action, tx, out)).await;
                return Err(e);
            }
            if need_broadcast {
                attempts += 1;
                tracing::debug!(chain = %self.chain, action, nonce = tx.nonce, hash = %tx.hash, "broadcasting");
                // Under a lease term the broadcast (with its failovers between endpoints) may take only what is left
                // of the term, not the RPC timeout per endpoint.
                let send = self.provider.send_raw_transaction(&tx.raw);
                let sent = match fence.and_then(Fence::send_window) {
                    None => send.await,
                    Some(left) => match tokio::time::timeout(left, send).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(chain = %self.chain, action, nonce = tx.nonce, "broadcast cut off: the lease term ran out during it");
                            continue;
                        }
                    },
                };
                match sent {
                    Ok(_) => {
                        self.counters.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = self.store.update_tx(tx.row, TxStatus::Pending, None, None, None).await;
                        self.bus.publish(
                            "keeper",
                            SignalKind::TxSent {
                                chain: self.chain.clone(),
                                action: action.into(),
                                tx_hash: tx.hash.to_string(),
                                nonce: tx.nonce,
                            },
                        );
                    }
                    Err(e) if is_transport(&e) => {
                        // The node may have it anyway: broadcasting again is harmless ("already known").
                        tracing::warn!(chain = %self.chain, action, error = %message(&e), "broadcast failed (transport); retrying");
                        self.pause(&mut transport_wait).await;
                        continue;
                    }
                    Err(e) => {
                        let m = message(&e);
                        let class = classify_node_error(e.as_error_resp().map_or(0, |p| p.code), &m);
                        let reverts = revert_from(&e);
                        match class {
                            NodeError::AlreadyKnown => {}
                            NodeError::NonceTooLow => {
                                if let Some(mined) = self.find_mined(&tx.hashes).await? {
                                    return self.finish(action, &tx.hashes, mined, attempts).await.map(Followed::Mined);
                                }
                                // Someone else used the nonce: start over (the action may be done already).
                                self.mark(&tx.hashes, TxStatus::Dropped, Some("nonce consumed by another transaction"))
                                    .await;
                                self.resync_nonce().await;
                                return Ok(Followed::NonceUsed);
                            }
                            NodeError::NonceTooHigh => {
                                self.mark(&tx.hashes, TxStatus::Dropped, Some("nonce too high")).await;
                                self.resync_nonce().await;
                                return Ok(Followed::Restart);
                            }
                            NodeError::Underpriced => match self.raise(tx.fees).await {
                                Ok(Some(f)) => {
                                    if let Err(e) = self.replace(fence, action, &mut tx, f).await {
                                        if matches!(e, TxError::Fenced(_)) {
                                            Box::pin(self.orphaned(action, tx, true)).await;
                                        }
                                        return Err(e);
                                    }
                                    continue;
                                }
                                Ok(None) | Err(TxError::Transport(_)) => {
                                    tracing::warn!(chain = %self.chain, action, "fees at the configured cap and the node wants more; waiting");
                                    tokio::time::sleep(self.policy.poll * 2).await;
                                    continue;
                                }
                                Err(e) => return Err(e),
                            },
                            NodeError::InsufficientFunds => {
                                self.mark(&tx.hashes, TxStatus::Failed, Some("insufficient funds")).await;
                                self.resync_nonce().await;
                                self.bus.publish(
                                    "keeper",
                                    SignalKind::TxFailed {
                                        chain: self.chain.clone(),
                                        action: action.into(),
                                        error: "insufficient funds".into(),
                                    },
                                );
                                return Err(TxError::Fatal(format!(
                                    "{}: signer {} has insufficient funds",
                                    self.chain, self.signer
                                )));
                            }
                            NodeError::Reverted | NodeError::Other => {
                                if let Some(r) = reverts {
                                    self.mark(&tx.hashes, TxStatus::Failed, Some(&r.to_string())).await;
                                    self.resync_nonce().await;
                                    return Err(r);
                                }
                                self.mark(&tx.hashes, TxStatus::Failed, Some(&m)).await;
                                self.resync_nonce().await;
                                return Err(TxError::Fatal(format!(
                                    "{}: node refused the transaction: {m}",
                                    self.chain
                                )));
                            }
                        }
                    }
                }
                need_broadcast = false;
            }

            tokio::time::sleep(self.policy.poll).await;
            let found = match self.find_mined(&tx.hashes).await {
                Err(TxError::Revert { reason, .. }) => {
                    // Reverted on chain although the simulation passed: the state changed in between. Simulate
                    // again to learn why (e.g. someone else did it, or the inputs went out of date).
                    self.counters.reverted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (now, data) = match self.simulate(tx.to, &tx.data, tx.value).await {
                        Err(TxError::Revert { reason, data }) => (reason, data),
                        Ok(_) => ("it would succeed now".into(), None),
                        Err(e) => (e.to_string(), None),
                    };
                    let reason = format!("{reason}; simulated again: {now}");
                    self.mark(&tx.hashes, TxStatus::Failed, Some(&reason)).await;
                    let data_ref: Option<&[u8]> = data.as_ref().map(|d| d.as_ref());
                    let done_now = data_ref.is_some_and(is_benign_revert) || done().await;
                    match judge_on_chain_revert(data_ref, done_now) {
                        // Someone else did it first (e.g. copied our execute with a higher tip): the outcome we wanted
                        // is on chain, so this is no failure to alert about.
                        OnChainRevert::Done => {
                            tracing::info!(chain = %self.chain, action, %reason, "someone else did it first")
                        }
                        // The feed moved between our proof and inclusion: the caller proves again (counted above).
                        OnChainRevert::Raced => {
                            tracing::warn!(chain = %self.chain, action, %reason, "inputs went out of date before inclusion; sending again with fresh ones")
                        }
                        OnChainRevert::Failed => self.bus.publish(
                            "keeper",
                            SignalKind::TxFailed {
                                chain: self.chain.clone(),
                                action: action.into(),
                                error: reason.clone(),
                            },
                        ),
                    }
                    return Err(TxError::Revert { reason, data });
                }
                other => other?,
            };
            if let Some(mined) = found {
                match self.confirm(&mined).await {
                    Ok(Some(true)) => {
                        return self.finish(action, &tx.hashes, mined, attempts).await.map(Followed::Mined)
                    }
                    Ok(Some(false)) => {
                        // Reorged out: the transaction is back in the pool or gone; follow it again.
                        self.counters.reorged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(chain = %self.chain, action, hash = %mined.hash, "block reorganised away; following the transaction again");
                        need_broadcast = true;
                        sent_at = Instant::now();
                        continue;
                    }
                    Ok(None) => continue,
                    Err(TxError::Transport(m)) => {
                        tracing::warn!(chain = %self.chain, action, error = %m, "confirmation check failed (transport); still following");
                        self.pause(&mut transport_wait).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !replace::stuck(sent_at, Instant::now(), self.policy.bump_after) {
                continue;
            }
            // Not mined in time: dropped from the pool, or stuck behind the fee market.
            let known = match self.provider.get_transaction_by_hash(tx.hash).await {
                Ok(k) => k,
                Err(e) if is_transport(&e) => {
                    tracing::warn!(chain = %self.chain, action, error = %message(&e), "pool check failed (transport); still following");
                    self.pause(&mut transport_wait).await;
                    continue;
                }
                Err(e) => return Err(TxError::Fatal(message(&e))),
            };
            transport_wait = self.policy.poll;
            let in_pool = known.is_some();
            if in_pool && self.fill_gap_below(action, tx.nonce).await {
                // The gap below is filled: this transaction can be mined now, at its fees.
                sent_at = Instant::now();
                continue;
            }
            let replacement = if in_pool {
                match self.raise(tx.fees).await {
                    Ok(r) => r,
                    Err(TxError::Transport(m)) => {
                        tracing::warn!(chain = %self.chain, action, error = %m, "fee check failed (transport); still following");
                        sent_at = Instant::now();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            match replace::unstick(in_pool, replacement) {
                replace::Unstick::Rebroadcast => {
                    tracing::warn!(chain = %self.chain, action, hash = %tx.hash, "transaction left the pool; broadcasting it again");
                    self.counters.rebroadcast.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    need_broadcast = true;
                }
                replace::Unstick::Replace(f) => {
                    tracing::info!(chain = %self.chain, action, nonce = tx.nonce, max_fee = %f.max_fee, priority = %f.priority, "not mined in time; replacing with higher fees");
                    if let Err(e) = self.replace(fence, action, &mut tx, f).await {
                        if matches!(e, TxError::Fenced(_)) {
                            Box::pin(self.orphaned(action, tx, true)).await;
                        }
                        return Err(e);
                    }
                    need_broadcast = true;
                }
                replace::Unstick::WaitAtCap => {
                    tracing::warn!(chain = %self.chain, action, "not mined and fees are at the configured cap; waiting")
                }
            }
            sent_at = Instant::now();
        }
    }

    /// A transaction whose lease term ended while its nonce was taken (`out`: a version may be out). The nonce is
    /// this keeper's own key's, so it is settled here without the lease, by the signer rather than the market: a
    /// nonce never broadcast is given back when it was the last one taken, and otherwise filled; a version already
    /// out gets `bump_after` to be mined and is then cancelled (replaced by a zero-value transfer to the signer at
    /// raised fees) and followed until one version is mined. The nonce counter is never cleared here: other markets'
    /// drivers take from it, and reading the node's pending count again could hand out a nonce taken but not yet
    /// broadcast.
    async fn orphaned(&self, action: &str, tx: Pending, out: bool) {
        let nonce = tx.nonce;
        if out {
            let until = Instant::now() + self.policy.bump_after;
            while Instant::now() < until {
                if self.provider.get_transaction_count(self.signer).latest().await.is_ok_and(|n| n > nonce) {
                    return;
                }
                tokio::time::sleep(self.policy.poll).await;
            }
        } else if self.give_back(nonce).await {
            return;
        }
        tracing::warn!(chain = %self.chain, action, nonce, out, "the lease term ended with this nonce taken: cancelling it (a zero-value transfer to the signer) so that it leaves no gap");
        let fees = match self.current_fees().await {
            Ok(market) => replace::cancellation_fees(&self.policy, tx.fees, market, out),
            Err(e) => {
                tracing::error!(chain = %self.chain, action, nonce, error = %e, "cannot cancel the orphaned nonce; the restart's recovery settles it");
                return;
            }
        };
        let Some(fees) = fees else {
            tracing::warn!(chain = %self.chain, action, nonce, "the orphaned transaction cannot be replaced within the fee cap; it stays in the pool");
            return;
        };
        let cancel = format!("cancel:{nonce}");
        let (to, data, gas) = (self.signer, Bytes::new(), 21_000);
        let signed = match self.sign(to, &data, U256::ZERO, nonce, gas, fees).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(chain = %self.chain, action, nonce, error = %e, "cannot sign the cancellation of an orphaned nonce");
                return;
            }
        };
        let row = match self.record(None, &cancel, nonce, signed.0, gas, fees).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(chain = %self.chain, action, nonce, error = %e, "cannot record the cancellation of an orphaned nonce");
                return;
            }
        };
        let mut hashes = tx.hashes;
        hashes.push((row, signed.0));
        let p = Pending { to, data, value: U256::ZERO, nonce, gas, fees, hash: signed.0, raw: signed.1, row, hashes };
        match self.follow(None, &cancel, p, true, &|| Box::pin(async { true })).await {
            Ok(Followed::Mined(m)) => {
                tracing::info!(chain = %self.chain, action, nonce, hash = %m.hash, "the orphaned nonce is used")
            }
            Ok(_) => {
                tracing::info!(chain = %self.chain, action, nonce, "the orphaned nonce was used by another transaction")
            }
            Err(e) => {
                tracing::warn!(chain = %self.chain, action, nonce, error = %e, "following the orphaned nonce ended")
            }
        }
    }

    /// A shared signer's nonces below `nonce` that nobody sent (a keeper took one from the nonce authority and
    /// failed or died before broadcasting it): when this transaction, in the pool for `bump_after`, waits behind
    /// them (the node's pending count stops below its nonce while the mined count is below it too), they are filled
    /// with zero-value transfers to the signer, so that it can be mined. `true` when something was sent.
    async fn fill_gap_below(&self, action: &str, nonce: u64) -> bool {
        if !self.shares_nonces() {
            return false;
        }
        let count = |pending: bool| async move {
            let q = self.provider.get_transaction_count(self.signer);
            if pending {
                q.pending().await
            } else {
                q.latest().await
            }
        };
        let (Ok(latest), Ok(pending)) = (count(false).await, count(true).await) else { return false };
        if !nonce_gap(latest, pending, nonce) {
            return false;
        }
        let Ok(fees) = self.current_fees().await else { return false };
        let mut sent = false;
        for n in pending.max(latest)..nonce {
            tracing::warn!(chain = %self.chain, action, nonce, missing = n, "a nonce below this transaction's was never sent: filling it with a zero-value transfer to the signer");
            let Ok((hash, raw)) = self.sign(self.signer, &Bytes::new(), U256::ZERO, n, 21_000, fees).await else {
                return sent;
            };
            let Ok(row) = self.record(None, &format!("fill:{n}"), n, hash, 21_000, fees).await else { return sent };
            match self.provider.send_raw_transaction(&raw).await {
                Ok(_) => {
                    sent = true;
                    let _ = self.store.update_tx(row, TxStatus::Pending, None, None, None).await;
                }
                Err(e) => {
                    tracing::warn!(chain = %self.chain, nonce = n, error = %message(&e), "could not send the filling transfer")
                }
            }
        }
        sent
    }

    /// Steps the local nonce counter back over `nonce` when it was the last one taken (never with a shared signer's
    /// nonce authority, whose counter other keepers move); `false` when the nonce must be filled instead.
    async fn give_back(&self, nonce: u64) -> bool {
        if self.shared_nonces.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let mut g = self.next_nonce.lock().await;
        if *g == Some(nonce + 1) {
            *g = Some(nonce);
            return true;
        }
        false
    }

    /// Signs a replacement of `tx` (same nonce) with fees `f` and records it.
    async fn replace(&self, fence: Option<&Fence>, action: &str, tx: &mut Pending, f: Fees) -> Result<(), TxError> {
        tx.fees = f;
        (tx.hash, tx.raw) = self.sign(tx.to, &tx.data, tx.value, tx.nonce, tx.gas, f).await?;
        tx.row = self.record(fence, action, tx.nonce, tx.hash, tx.gas, f).await?;
        tx.hashes.push((tx.row, tx.hash));
        self.counters.bumped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Waits after a transport failure while a transaction is followed (doubling up to 5 s).
    async fn pause(&self, wait: &mut Duration) {
        tokio::time::sleep(*wait).await;
        *wait = replace::transport_backoff(*wait, self.policy.poll);
    }

    /// Fees raised by at least `bump_percent`, and at least to the current market, within the caps; `None` at the cap.
    async fn raise(&self, old: Fees) -> Result<Option<Fees>, TxError> {
        let market = self.current_fees().await?;
        Ok(next_fees(&self.policy, old, market))
    }

    /// `Err(Fenced)` when the lease term is over (the local check, or the store refusing the row): do not send.
    fn check_fence(&self, fence: Option<&Fence>, action: &str) -> Result<(), TxError> {
        match fence {
            Some(f) if !f.may_send() => Err(TxError::Fenced(format!(
                "{}: {action}: lease epoch {} of market {} is no longer held",
                self.chain, f.epoch, f.lease.market
            ))),
            _ => Ok(()),
        }
    }

    /// Records a signed version before it is broadcast (under the fence's term, when given). A store failure other
    /// than a refused term is logged and the transaction still goes out (the local term check has passed).
    async fn record(
        &self,
        fence: Option<&Fence>,
        action: &str,
        nonce: u64,
        hash: TxHash,
        gas: u64,
        fees: Fees,
    ) -> Result<i64, TxError> {
        self.check_fence(fence, action)?;
        let row = TxRow {
            id: 0,
            chain: self.chain.clone(),
            signer: self.signer.to_string(),
            action: action.to_string(),
            nonce: nonce as i64,
            tx_hash: hash.to_string(),
            status: TxStatus::Signed,
            max_fee_wei: fees.max_fee.to_string(),
            priority_fee_wei: fees.priority.to_string(),
            gas_limit: gas as i64,
            sent_at: kronos_common::time::now_s() as i64,
            mined_block: None,
            gas_used: None,
            error: None,
        };
        let term = fence.and_then(Fence::token);
        match self.store.insert_tx(&row, term.as_ref()).await {
            Ok(id) => Ok(id),
            Err(e) => match fenced_or_fatal(e) {
                TxError::Fenced(m) => Err(TxError::Fenced(m)),
                e => {
                    tracing::error!(chain = %self.chain, error = %e, "could not record a transaction in the store");
                    Ok(-1)
                }
            },
        }
    }

    async fn mark(&self, hashes: &[(i64, TxHash)], status: TxStatus, error: Option<&str>) {
        for (row, _) in hashes {
            let _ = self.store.update_tx(*row, status, None, None, error).await;
        }
    }

    async fn find_mined(&self, hashes: &[(i64, TxHash)]) -> Result<Option<Mined>, TxError> {
        for (_, h) in hashes.iter().rev() {
            match self.provider.get_transaction_receipt(*h).await {
                Ok(Some(r)) => {
                    let block = match status::receipt(Some((r.block_number, r.status()))) {
                        status::Receipt::Pending => continue,
                        status::Receipt::Reverted(block) => {
                            return Err(TxError::Revert {
                                reason: format!("transaction {h} reverted on chain in block {block}"),
                                data: None,
                            })
                        }
                        status::Receipt::Mined(block) => block,
                    };
                    let logs = r.inner.logs().iter().map(|l| l.inner.clone()).collect();
                    return Ok(Some(Mined {
                        hash: *h,
                        block,
                        gas_used: r.gas_used,
                        effective_gas_price: r.effective_gas_price,
                        attempts: 0,
                        logs,
                    }));
                }
                Ok(None) => {}
                Err(e) if is_transport(&e) => return Ok(None),
                Err(e) => return Err(TxError::Fatal(message(&e))),
            }
        }
        Ok(None)
    }

    /// `Some(true)`: confirmed and canonical; `Some(false)`: reorganised away; `None`: not deep enough yet.
    async fn confirm(&self, mined: &Mined) -> Result<Option<bool>, TxError> {
        let head = self.provider.get_block_number().await.map_err(|e| TxError::Transport(message(&e)))?;
        if !status::deep_enough(head, mined.block, self.policy.confirmations) {
            return Ok(None);
        }
        let r = self.provider.get_transaction_receipt(mined.hash).await.map_err(|e| TxError::Transport(message(&e)))?;
        let Some((n, h)) = r.and_then(|r| r.block_number.zip(r.block_hash)) else {
            return Ok(Some(status::canonical(None, None)));
        };
        let b = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(n))
            .await
            .map_err(|e| TxError::Transport(message(&e)))?;
        Ok(Some(status::canonical(Some(h), b.map(|b| b.header.hash))))
    }

    async fn finish(
        &self,
        action: &str,
        hashes: &[(i64, TxHash)],
        mut mined: Mined,
        attempts: u32,
    ) -> Result<Mined, TxError> {
        for (row, h) in hashes {
            let status = if *h == mined.hash { TxStatus::Confirmed } else { TxStatus::Replaced };
            let (b, g) =
                if *h == mined.hash { (Some(mined.block as i64), Some(mined.gas_used as i64)) } else { (None, None) };
            let _ = self.store.update_tx(*row, status, b, g, None).await;
        }
        mined.attempts = attempts;
        self.counters.confirmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.counters.gas_used.fetch_add(mined.gas_used, std::sync::atomic::Ordering::Relaxed);
        self.bus.publish(
            "keeper",
            SignalKind::TxConfirmed {
                chain: self.chain.clone(),
                action: action.into(),
                tx_hash: mined.hash.to_string(),
                block: mined.block,
                gas_used: mined.gas_used,
            },
        );
        Ok(mined)
    }

    /// After a restart: settles the store's record of transactions left open by a previous run. Mined ones become
    /// confirmed (or failed), those whose nonce another transaction used are dropped, and those still open (in a
    /// pool, or lost) are cancelled: replaced by a zero-value transfer to the signer itself at higher fees and followed
    /// until one version is mined. So no old transaction can be mined later and run its action a second time, and none
    /// stays in a pool with everything behind it stuck; if the original wins the race its action ran once, and the
    /// scheduler sees that from chain state.
    pub async fn recover(&self) -> anyhow::Result<usize> {
        let open = self.store.open_txs(&self.chain, &self.signer.to_string()).await?;
        let latest = self.provider.get_transaction_count(self.signer).latest().await?;
        let mut n = 0;
        let mut in_flight: std::collections::BTreeMap<u64, Vec<TxRow>> = Default::default();
        for t in open {
            let hash: TxHash = t.tx_hash.parse()?;
            let r = self.provider.get_transaction_receipt(hash).await?;
            let gas_used = r.as_ref().map(|r| r.gas_used as i64);
            match status::recovered(r.map(|r| (r.block_number, r.status())), t.nonce as u64, latest) {
                status::Recovered::Confirmed(b) => {
                    self.store.update_tx(t.id, TxStatus::Confirmed, Some(b as i64), gas_used, None).await?;
                }
                status::Recovered::Failed(b) => {
                    self.store.update_tx(t.id, TxStatus::Failed, Some(b as i64), gas_used, None).await?;
                }
                status::Recovered::Dropped => {
                    self.store
                        .update_tx(t.id, TxStatus::Dropped, None, None, Some("nonce used by another transaction"))
                        .await?;
                }
                status::Recovered::Open => in_flight.entry(t.nonce as u64).or_default().push(t),
            }
            n += 1;
        }
        for (nonce, rows) in in_flight {
            self.cancel(nonce, rows).await?;
        }
        Ok(n)
    }

    /// Replaces the versions `rows` of the transaction with `nonce` by a zero-value transfer to the signer and follows
    /// until one of them is mined.
    async fn cancel(&self, nonce: u64, rows: Vec<TxRow>) -> anyhow::Result<()> {
        let parse = |s: &str| s.parse::<U256>().unwrap_or_default();
        let old = replace::highest(
            rows.iter().map(|r| Fees { max_fee: parse(&r.max_fee_wei), priority: parse(&r.priority_fee_wei) }),
        );
        let market = self.current_fees().await?;
        let Some(fees) = next_fees(&self.policy, old, market) else {
            tracing::warn!(chain = %self.chain, nonce, "a transaction left open by a previous run cannot be cancelled within the fee cap; it stays in the pool");
            for r in &rows {
                self.store.update_tx(r.id, TxStatus::Dropped, None, None, Some("left open by a previous run")).await?;
            }
            return Ok(());
        };
        let action = format!("cancel:{nonce}");
        let (to, data, gas) = (self.signer, Bytes::new(), 21_000);
        let (hash, raw) = self.sign(to, &data, U256::ZERO, nonce, gas, fees).await?;
        let row = self.record(None, &action, nonce, hash, gas, fees).await?;
        let mut hashes: Vec<(i64, TxHash)> =
            rows.iter().filter_map(|r| r.tx_hash.parse().ok().map(|h| (r.id, h))).collect();
        hashes.push((row, hash));
        tracing::info!(chain = %self.chain, nonce, actions = ?rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), "cancelling a transaction left open by a previous run");
        let tx = Pending { to, data, value: U256::ZERO, nonce, gas, fees, hash, raw, row, hashes };
        match self.follow(None, &action, tx, true, &|| Box::pin(async { false })).await {
            Ok(Followed::Mined(m)) if m.hash == hash => {
                tracing::info!(chain = %self.chain, nonce, "cancelled; the scheduler redoes what is still needed");
            }
            Ok(Followed::Mined(m)) => {
                tracing::info!(chain = %self.chain, nonce, hash = %m.hash, "the open transaction was mined before its cancellation");
            }
            Ok(_) => {}
            Err(TxError::Revert { reason, .. }) => {
                tracing::warn!(chain = %self.chain, nonce, %reason, "the open transaction was mined and reverted");
            }
            Err(e) => return Err(anyhow::anyhow!("{}: cancelling nonce {nonce}: {e}", self.chain)),
        }
        Ok(())
    }

    /// The signer's balance.
    pub async fn balance(&self) -> Result<U256, TxError> {
        self.provider.get_balance(self.signer).await.map_err(|e| TxError::Transport(message(&e)))
    }

    /// A transaction's fee cap, to check replacements in tests.
    pub async fn fee_of(&self, hash: TxHash) -> Option<u128> {
        self.provider.get_transaction_by_hash(hash).await.ok().flatten().map(|t| t.inner.max_fee_per_gas())
    }
}
