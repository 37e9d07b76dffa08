//! The transaction manager: one nonce stream per signer per chain, EIP-1559 (or legacy) fees under caps,
//! simulation before sending, fee bumps for stuck transactions, error classification, confirmations and reorg checks.
//!
//! Rules (after OpenZeppelin Relayer's): a transaction is simulated first and never sent if it would revert; every
//! signed transaction is written to the store before it is broadcast; a transaction not mined within `bump_after`
//! is replaced with fees raised by at least `bump_percent` (capped); "nonce too low", "already known" and
//! "underpriced" lead to a receipt check, "nonce too high" to a nonce resync, transport failures to a retry (the RPC
//! layer fails over between endpoints), and an application revert is returned to the caller without retrying.
//! A receipt counts once the chain's confirmations are reached and its block is still canonical.

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

use crate::store::{Store, TxRow};

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

/// Decodes revert data with the Kronos contracts' errors, `Error(string)` and `Panic(uint)`.
pub fn decode_revert(data: &[u8]) -> String {
    use alloy::sol_types::SolInterface;
    if let Ok(e) = kronos_contracts::market::KronosMarket::KronosMarketErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Ok(e) = kronos_contracts::registry::PredictionRegistry::PredictionRegistryErrors::abi_decode(data) {
        return format!("{e:?}");
    }
    if let Some(r) = alloy::sol_types::decode_revert_reason(data) {
        return r;
    }
    format!("0x{}", alloy::hex::encode(data))
}

fn revert_from(e: &RpcError<TransportErrorKind>) -> Option<TxError> {
    let p = e.as_error_resp()?;
    let data = p.as_revert_data();
    let msg = p.message.to_lowercase();
    if data.is_none() && !msg.contains("revert") {
        return None;
    }
    let reason = data.as_ref().map(|d| decode_revert(d)).unwrap_or_else(|| p.message.to_string());
    Some(TxError::Revert { reason, data })
}

fn bump(v: U256, percent: u64) -> U256 {
    v * U256::from(100 + percent) / U256::from(100) + U256::from(1)
}

#[derive(Debug, Clone, Copy)]
struct Fees {
    max_fee: U256,
    priority: U256,
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
            counters: Arc::new(TxCounters::default()),
        })
    }

    /// The provider this manager sends through.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    async fn current_fees(&self) -> Result<Fees, TxError> {
        let p = &self.policy;
        let fees = match p.fee_model {
            FeeModel::Eip1559 => {
                let est = self.provider.estimate_eip1559_fees().await.map_err(|e| TxError::Transport(message(&e)))?;
                let priority = U256::from(est.max_priority_fee_per_gas).min(p.max_priority_fee_wei);
                Fees { max_fee: U256::from(est.max_fee_per_gas).max(priority), priority }
            }
            FeeModel::Legacy => {
                let gp = self.provider.get_gas_price().await.map_err(|e| TxError::Transport(message(&e)))?;
                Fees { max_fee: U256::from(gp), priority: U256::from(gp) }
            }
        };
        Ok(Fees { max_fee: fees.max_fee.min(p.max_fee_wei), priority: fees.priority.min(p.max_fee_wei) })
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

    async fn take_nonce(&self) -> Result<u64, TxError> {
        let mut g = self.next_nonce.lock().await;
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
    pub async fn send(&self, action: &str, to: Address, data: Bytes, value: U256) -> Result<Mined, TxError> {
        'fresh: loop {
            let est = self.simulate(to, &data, value).await?;
            let gas = est + est / 4 + 10_000;
            let nonce = self.take_nonce().await?;
            let mut fees = self.current_fees().await?;
            let mut hashes: Vec<(i64, TxHash)> = Vec::new();
            let mut attempts = 0u32;
            let (mut hash, mut raw) = self.sign(to, &data, value, nonce, gas, fees).await?;
            let mut row = self.record(action, nonce, hash, gas, fees).await;
            hashes.push((row, hash));
            let mut deadline = Instant::now() + self.policy.bump_after;
            let mut need_broadcast = true;
            loop {
                if need_broadcast {
                    attempts += 1;
                    match self.provider.send_raw_transaction(&raw).await {
                        Ok(_) => {
                            self.counters.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let _ = self.store.update_tx(row, "pending", None, None, None).await;
                            self.bus.publish(
                                "keeper",
                                SignalKind::TxSent {
                                    chain: self.chain.clone(),
                                    action: action.into(),
                                    tx_hash: hash.to_string(),
                                    nonce,
                                },
                            );
                        }
                        Err(e) if is_transport(&e) => {
                            tracing::warn!(chain = %self.chain, action, error = %message(&e), "broadcast failed (transport); retrying");
                            tokio::time::sleep(self.policy.poll).await;
                            continue;
                        }
                        Err(e) => {
                            let m = message(&e).to_lowercase();
                            if m.contains("already known")
                                || m.contains("known transaction")
                                || m.contains("already imported")
                            {
                                // The node has it: keep following it.
                            } else if m.contains("nonce too low")
                                || m.contains("nonce is too low")
                                || m.contains("invalid nonce")
                            {
                                if let Some(mined) = self.find_mined(&hashes).await? {
                                    return self.finish(action, &hashes, mined, attempts).await;
                                }
                                // Someone else used the nonce: start over (the action may be done already).
                                self.mark(&hashes, "dropped", Some("nonce consumed by another transaction")).await;
                                self.resync_nonce().await;
                                continue 'fresh;
                            } else if m.contains("nonce too high") {
                                self.mark(&hashes, "dropped", Some("nonce too high")).await;
                                self.resync_nonce().await;
                                continue 'fresh;
                            } else if m.contains("underpriced")
                                || m.contains("fee too low")
                                || m.contains("less than block base fee")
                                || m.contains("max fee per gas less than")
                            {
                                match self.raise(fees).await? {
                                    Some(f) => {
                                        fees = f;
                                        (hash, raw) = self.sign(to, &data, value, nonce, gas, fees).await?;
                                        row = self.record(action, nonce, hash, gas, fees).await;
                                        hashes.push((row, hash));
                                        self.counters.bumped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                        continue;
                                    }
                                    None => {
                                        tracing::warn!(chain = %self.chain, action, "fees at the configured cap and the node wants more; waiting");
                                        tokio::time::sleep(self.policy.poll * 2).await;
                                        continue;
                                    }
                                }
                            } else if m.contains("insufficient funds") {
                                self.mark(&hashes, "failed", Some("insufficient funds")).await;
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
                            } else if let Some(r) = revert_from(&e) {
                                self.mark(&hashes, "failed", Some(&r.to_string())).await;
                                self.resync_nonce().await;
                                return Err(r);
                            } else {
                                self.mark(&hashes, "failed", Some(&m)).await;
                                self.resync_nonce().await;
                                return Err(TxError::Fatal(format!(
                                    "{}: node refused the transaction: {m}",
                                    self.chain
                                )));
                            }
                        }
                    }
                    need_broadcast = false;
                }

                tokio::time::sleep(self.policy.poll).await;
                let found = match self.find_mined(&hashes).await {
                    Err(TxError::Revert { reason, .. }) => {
                        // Reverted on chain although the simulation passed: the state changed in between. Simulate
                        // again to learn why (e.g. someone else did it, or the inputs went out of date).
                        self.counters.reverted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let now = match self.simulate(to, &data, value).await {
                            Err(TxError::Revert { reason, .. }) => reason,
                            Ok(_) => "it would succeed now".into(),
                            Err(e) => e.to_string(),
                        };
                        let reason = format!("{reason}; simulated again: {now}");
                        self.mark(&hashes, "failed", Some(&reason)).await;
                        self.bus.publish(
                            "keeper",
                            SignalKind::TxFailed {
                                chain: self.chain.clone(),
                                action: action.into(),
                                error: reason.clone(),
                            },
                        );
                        return Err(TxError::Revert { reason, data: None });
                    }
                    other => other?,
                };
                if let Some(mined) = found {
                    match self.confirm(&mined).await? {
                        Some(true) => return self.finish(action, &hashes, mined, attempts).await,
                        Some(false) => {
                            // Reorged out: the transaction is back in the pool or gone; follow it again.
                            self.counters.reorged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(chain = %self.chain, action, hash = %mined.hash, "block reorganised away; following the transaction again");
                            need_broadcast = true;
                            deadline = Instant::now() + self.policy.bump_after;
                            continue;
                        }
                        None => continue,
                    }
                }
                if Instant::now() < deadline {
                    continue;
                }
                // Not mined in time: dropped from the pool, or stuck behind the fee market.
                let known =
                    self.provider.get_transaction_by_hash(hash).await.map_err(|e| TxError::Transport(message(&e)))?;
                if known.is_none() {
                    tracing::warn!(chain = %self.chain, action, %hash, "transaction left the pool; broadcasting it again");
                    self.counters.rebroadcast.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    need_broadcast = true;
                } else if let Some(f) = self.raise(fees).await? {
                    tracing::info!(chain = %self.chain, action, nonce, max_fee = %f.max_fee, priority = %f.priority, "not mined in time; replacing with higher fees");
                    fees = f;
                    (hash, raw) = self.sign(to, &data, value, nonce, gas, fees).await?;
                    row = self.record(action, nonce, hash, gas, fees).await;
                    hashes.push((row, hash));
                    self.counters.bumped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    need_broadcast = true;
                } else {
                    tracing::warn!(chain = %self.chain, action, "not mined and fees are at the configured cap; waiting");
                }
                deadline = Instant::now() + self.policy.bump_after;
            }
        }
    }

    /// Fees raised by at least `bump_percent`, and at least to the current market, within the caps; `None` at the cap.
    async fn raise(&self, old: Fees) -> Result<Option<Fees>, TxError> {
        let p = &self.policy;
        let market = self.current_fees().await?;
        let priority =
            bump(old.priority, p.bump_percent).max(market.priority).min(p.max_priority_fee_wei.max(old.priority));
        let max_fee = bump(old.max_fee, p.bump_percent).max(market.max_fee).min(p.max_fee_wei);
        let priority = if p.fee_model == FeeModel::Legacy { max_fee } else { priority.min(max_fee) };
        // A replacement must raise both fields by the node's minimum; otherwise it is not worth sending.
        if max_fee < bump(old.max_fee, 10) - U256::from(1)
            || (p.fee_model == FeeModel::Eip1559 && priority < bump(old.priority, 10) - U256::from(1))
        {
            return Ok(None);
        }
        Ok(Some(Fees { max_fee, priority }))
    }

    async fn record(&self, action: &str, nonce: u64, hash: TxHash, gas: u64, fees: Fees) -> i64 {
        let row = TxRow {
            id: 0,
            chain: self.chain.clone(),
            signer: self.signer.to_string(),
            action: action.to_string(),
            nonce: nonce as i64,
            tx_hash: hash.to_string(),
            status: "signed".into(),
            max_fee_wei: fees.max_fee.to_string(),
            priority_fee_wei: fees.priority.to_string(),
            gas_limit: gas as i64,
            sent_at: kronos_common::time::now_s() as i64,
            mined_block: None,
            gas_used: None,
            error: None,
        };
        match self.store.insert_tx(&row).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(chain = %self.chain, error = %e, "could not record a transaction in the store");
                -1
            }
        }
    }

    async fn mark(&self, hashes: &[(i64, TxHash)], status: &str, error: Option<&str>) {
        for (row, _) in hashes {
            let _ = self.store.update_tx(*row, status, None, None, error).await;
        }
    }

    async fn find_mined(&self, hashes: &[(i64, TxHash)]) -> Result<Option<Mined>, TxError> {
        for (_, h) in hashes.iter().rev() {
            match self.provider.get_transaction_receipt(*h).await {
                Ok(Some(r)) => {
                    let Some(block) = r.block_number else { continue };
                    if !r.status() {
                        return Err(TxError::Revert {
                            reason: format!("transaction {h} reverted on chain in block {block}"),
                            data: None,
                        });
                    }
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
        if head + 1 < mined.block + self.policy.confirmations {
            return Ok(None);
        }
        let r = self.provider.get_transaction_receipt(mined.hash).await.map_err(|e| TxError::Transport(message(&e)))?;
        let Some(r) = r else { return Ok(Some(false)) };
        let (Some(n), Some(h)) = (r.block_number, r.block_hash) else { return Ok(Some(false)) };
        let b = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(n))
            .await
            .map_err(|e| TxError::Transport(message(&e)))?;
        Ok(Some(b.map(|b| b.header.hash == h).unwrap_or(false)))
    }

    async fn finish(
        &self,
        action: &str,
        hashes: &[(i64, TxHash)],
        mut mined: Mined,
        attempts: u32,
    ) -> Result<Mined, TxError> {
        for (row, h) in hashes {
            let status = if *h == mined.hash { "confirmed" } else { "replaced" };
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

    /// After a restart: settles the store's record of transactions left open by a previous run (mined ones become
    /// confirmed, the rest dropped once their nonce is used). The scheduler re-reads chain state before acting, so a
    /// dropped action is simply redone.
    pub async fn recover(&self) -> anyhow::Result<usize> {
        let open = self.store.open_txs(&self.chain, &self.signer.to_string()).await?;
        let latest = self.provider.get_transaction_count(self.signer).latest().await?;
        let mut n = 0;
        for t in open {
            let hash: TxHash = t.tx_hash.parse()?;
            match self.provider.get_transaction_receipt(hash).await? {
                Some(r) if r.block_number.is_some() => {
                    let status = if r.status() { "confirmed" } else { "failed" };
                    self.store
                        .update_tx(t.id, status, r.block_number.map(|b| b as i64), Some(r.gas_used as i64), None)
                        .await?;
                }
                _ if (t.nonce as u64) < latest => {
                    self.store
                        .update_tx(t.id, "dropped", None, None, Some("nonce used by another transaction"))
                        .await?;
                }
                _ => {
                    // Still in a pool somewhere or lost: it will be superseded by the next send with this nonce.
                    self.store.update_tx(t.id, "dropped", None, None, Some("left open by a previous run")).await?;
                }
            }
            n += 1;
        }
        Ok(n)
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
