//! One configured chain at run time: the RPC transport, the transaction manager, contract handles, the chain clock
//! and its health.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result};
use kronos_common::signals::SignalKind;
use kronos_common::Bus;
use kronos_contracts::market::KronosMarket::KronosMarketInstance;
use kronos_contracts::registry::PredictionRegistry::PredictionRegistryInstance;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::ChainConfig;
use crate::rpc::FailoverTransport;
use crate::store::Store;
use crate::txmgr::{TxManager, TxPolicy};

/// Development nodes by their `web3_clientVersion` (anvil, Hardhat, Ganache): the only nodes where `local = true`
/// (mock feeds) is accepted, here and by `kronos deploy`.
pub fn is_dev_node(client: &str) -> bool {
    let c = client.to_ascii_lowercase();
    ["anvil", "hardhat", "ganache"].iter().any(|d| c.starts_with(d))
}

/// A chain's health as `/health` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    pub head_block: u64,
    pub head_time: u64,
    /// Wall clock minus the head block's timestamp (0 when the chain runs ahead, as accelerated local chains do).
    pub lag_s: u64,
    pub healthy: bool,
    pub last_success_ms: u64,
    pub last_error: Option<String>,
    pub rpc_endpoint: usize,
    /// Every RPC endpoint by host, with whether it is down and its last error.
    pub endpoints: Vec<crate::rpc::EndpointStatus>,
}

/// Runtime state of one chain.
pub struct ChainRuntime {
    pub name: String,
    pub cfg: ChainConfig,
    pub transport: FailoverTransport,
    pub provider: DynProvider,
    pub tx: Arc<TxManager>,
    pub market: KronosMarketInstance<DynProvider>,
    pub registry: Option<PredictionRegistryInstance<DynProvider>>,
    pub health: Mutex<Health>,
    heads: Mutex<BTreeMap<u64, u64>>,
    bus: Bus,
}

impl ChainRuntime {
    /// Connects, checks the chain id against the catalogue, and recovers transactions left open by a previous run.
    pub async fn connect(
        cfg: &ChainConfig,
        signer: PrivateKeySigner,
        store: Store,
        bus: Bus,
        poll: Duration,
    ) -> Result<Arc<Self>> {
        let name = cfg.chain.key.clone();
        let transport = FailoverTransport::new(&name, &cfg.rpc);
        let provider = transport.provider();
        let id = provider.get_chain_id().await.with_context(|| format!("{name}: no RPC endpoint answers"))?;
        let want = cfg.chain.chain_id.unwrap_or_default();
        anyhow::ensure!(id == want, "{name}: the RPC endpoint serves chain id {id}, the catalogue says {want}");
        if cfg.local {
            // `local = true` accepts mock feeds, whose price anyone can set: only on a development node, never on a
            // real network (a configuration written for a local chain and pointed at a real RPC keeps its id).
            let client = provider.get_client_version().await.with_context(|| format!("{name}: web3_clientVersion"))?;
            anyhow::ensure!(
                is_dev_node(&client),
                "{name}: local = true needs a development node (anvil, Hardhat, Ganache), but the RPC endpoint is '{client}': mock feeds anyone can move must never take real bets; remove local (and pairs) for a real network"
            );
        }
        let policy = TxPolicy {
            fee_model: cfg.chain.fee_model.unwrap_or(kronos_common::FeeModel::Eip1559),
            max_fee_wei: cfg.max_fee_wei,
            max_priority_fee_wei: cfg.max_priority_fee_wei,
            bump_after: Duration::from_secs(cfg.bump_after_s),
            bump_percent: cfg.bump_percent,
            confirmations: cfg.confirmations,
            poll,
        };
        let tx = TxManager::new(&name, provider.clone(), signer, policy, store, bus.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let recovered = tx.recover().await.with_context(|| format!("{name}: recovering open transactions"))?;
        if recovered > 0 {
            tracing::info!(chain = %name, recovered, "settled the record of transactions left open by a previous run");
        }
        let code = provider.get_code_at(cfg.market).await?;
        anyhow::ensure!(!code.is_empty(), "{name}: no contract at the configured market address {}", cfg.market);
        let market = KronosMarketInstance::new(cfg.market, provider.clone());
        let registry = cfg.registry.map(|r| PredictionRegistryInstance::new(r, provider.clone()));
        Ok(Arc::new(ChainRuntime {
            name,
            cfg: cfg.clone(),
            transport,
            provider,
            tx: Arc::new(tx),
            market,
            registry,
            health: Mutex::new(Health::default()),
            heads: Mutex::new(BTreeMap::new()),
            bus,
        }))
    }

    /// The head block's number and timestamp; updates health.
    pub async fn head(&self) -> Result<(u64, u64)> {
        match self.provider.get_block_by_number(BlockNumberOrTag::Latest).await {
            Ok(Some(b)) => {
                let (n, t) = (b.header.number, b.header.timestamp);
                self.remember(n, t);
                let now_ms = kronos_common::time::now_ms();
                let was_unhealthy = {
                    let mut h = self.health.lock();
                    let was = !h.healthy && h.last_error.is_some();
                    *h = Health {
                        head_block: n,
                        head_time: t,
                        lag_s: (now_ms / 1000).saturating_sub(t),
                        healthy: true,
                        last_success_ms: now_ms,
                        last_error: None,
                        rpc_endpoint: self.transport.current(),
                        endpoints: self.transport.endpoints(),
                    };
                    was
                };
                if was_unhealthy {
                    self.bus.publish(
                        "keeper",
                        SignalKind::KeeperHealth {
                            chain: self.name.clone(),
                            healthy: true,
                            head_block: n,
                            lag_s: 0,
                            detail: "RPC answers again".into(),
                        },
                    );
                }
                Ok((n, t))
            }
            Ok(None) => anyhow::bail!("{}: the node has no latest block", self.name),
            Err(e) => {
                let msg = kronos_common::Redactor::global().redact(&e.to_string());
                let first = {
                    let mut h = self.health.lock();
                    h.endpoints = self.transport.endpoints();
                    let first = h.healthy || h.last_error.is_none();
                    h.healthy = false;
                    h.last_error = Some(msg.clone());
                    first
                };
                if first {
                    self.bus.publish(
                        "keeper",
                        SignalKind::KeeperHealth {
                            chain: self.name.clone(),
                            healthy: false,
                            head_block: 0,
                            lag_s: 0,
                            detail: msg.clone(),
                        },
                    );
                }
                Err(anyhow::anyhow!("{}: {msg}", self.name))
            }
        }
    }

    fn remember(&self, n: u64, t: u64) {
        let mut h = self.heads.lock();
        h.insert(n, t);
        while h.len() > 4096 {
            let first = *h.keys().next().expect("non-empty");
            h.remove(&first);
        }
    }

    async fn block_time(&self, n: u64) -> Result<u64> {
        if let Some(t) = self.heads.lock().get(&n) {
            return Ok(*t);
        }
        let b = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(n))
            .await?
            .ok_or_else(|| anyhow::anyhow!("{}: block {n} not found", self.name))?;
        self.remember(n, b.header.timestamp);
        Ok(b.header.timestamp)
    }

    /// The first block whose timestamp is after `t` (binary search over blocks, with the heads seen as hints).
    pub async fn first_block_after(&self, t: u64, upto: u64) -> Result<u64> {
        let (mut lo, mut hi) = {
            let h = self.heads.lock();
            let lo = h.range(..=upto).rev().find(|(_, &ts)| ts <= t).map(|(&n, _)| n).unwrap_or(0);
            let hi = h.range(lo..=upto).find(|(_, &ts)| ts > t).map(|(&n, _)| n).unwrap_or(upto);
            (lo, hi)
        };
        if self.block_time(hi).await? <= t {
            return Ok(hi + 1);
        }
        // Invariant: block `hi` is after t; block `lo` is at or before t (or lo = 0).
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if self.block_time(mid).await? > t {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }
}
