//! A local multi-chain network for the demo and the benchmark: one anvil per chain of the catalogue (real chain
//! ids), chain time running faster than the wall clock, the suite deployed with the deploy script, and Chainlink mock
//! feeds fed with real candles.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, I256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result};
use kronos_common::{Catalogue, Chain, Secret};
use kronos_forecast::Candle;
use parking_lot::Mutex;

use crate::deploy::{local_plan, run_forge, DeployPolicy, Deployment, LocalMarket};
use kronos_keeper::publisher::CandleSource;

/// Dev accounts of anvil's default mnemonic, by role.
pub mod accounts {
    pub const DEPLOYER: usize = 0;
    pub const KEEPER: usize = 1;
    pub const BETTORS: [usize; 3] = [2, 3, 4];
    pub const ORACLE: usize = 9;
}

/// How the local network runs.
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub chains: Vec<String>,
    /// Wall seconds between blocks.
    pub block_time: f64,
    /// Chain seconds each block advances.
    pub seconds_per_block: u64,
    /// Round interval in chain seconds.
    pub interval: u32,
}

/// One local chain.
pub struct LocalChain {
    pub chain: Chain,
    pub anvil: AnvilInstance,
    pub url: String,
    pub keys: Vec<PrivateKeySigner>,
    pub deployment: Deployment,
    /// The mock aggregator behind the market's feed proxy (what the replay updates).
    pub aggregator: Address,
    pub token: Address,
    /// Index of the first candle replayed (epoch 0).
    pub candle_base: usize,
}

impl LocalChain {
    /// A provider that signs with dev account `i` (nonces and fees filled in).
    pub fn wallet(&self, i: usize) -> DynProvider {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(self.keys[i].clone()))
            .connect_http(self.url.parse().expect("url"))
            .erased()
    }

    /// Genesis of market 1.
    pub fn genesis(&self) -> u64 {
        self.deployment.genesis.first().map(|g| g.to::<u64>()).unwrap_or_default()
    }
}

fn anvil_bin(root: &Path) -> PathBuf {
    let p = root.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if p.is_file() {
        p
    } else {
        PathBuf::from("anvil")
    }
}

/// Starts the anvils, speeds up their clocks and deploys the suite on each (in parallel).
pub async fn start(
    root: &Path,
    cat: &Catalogue,
    policy: &DeployPolicy,
    opts: &NetOptions,
    candles: &[Candle],
) -> Result<Vec<LocalChain>> {
    let mut started = Vec::new();
    for (i, key) in opts.chains.iter().enumerate() {
        let chain = cat.chain(key).ok_or_else(|| anyhow::anyhow!("--chains: '{key}' is not in the catalogue"))?.clone();
        anyhow::ensure!(chain.chain_id.is_some(), "--chains: '{key}' is not an EVM chain");
        let anvil = Anvil::at(anvil_bin(root))
            .chain_id(chain.chain_id.expect("evm"))
            .args([
                "--hardfork",
                "cancun",
                "--block-time",
                &format!("{}", opts.block_time),
                "--accounts",
                "10",
                "--balance",
                "100000",
            ])
            .try_spawn()
            .with_context(|| format!("starting anvil for {key} (run scripts/setup)"))?;
        let url = anvil.endpoint();
        let keys: Vec<PrivateKeySigner> = anvil.keys().iter().map(|k| PrivateKeySigner::from(k.clone())).collect();
        started.push((chain, anvil, url, keys, i));
    }
    let deployer = Secret::new(format!("0x{}", alloy::hex::encode(started[0].3[accounts::DEPLOYER].to_bytes())));
    let owner = started[0].3[accounts::DEPLOYER].address();
    let futs = started.iter().map(|(chain, _, url, _, i)| {
        let token = chain.key == "base";
        let last = candles.len().saturating_sub(1);
        let base = (candle_base(*i)).min(last);
        let plan = local_plan(
            chain,
            policy,
            owner,
            &[LocalMarket {
                pair: "BTC/USD".into(),
                initial_answer: (candles[base.saturating_sub(1)].close * 1e8).round() as i64,
                token,
                interval_s: opts.interval,
                max_price_age_s: opts.interval,
                settle_window_s: opts.interval * 12,
            }],
            &format!("contracts-evm/deployments/local-{}-{}.json", chain.key, std::process::id()),
        );
        let root = root.to_path_buf();
        let url = url.clone();
        let deployer = deployer.clone();
        async move {
            let plan = plan?;
            let out = root.join(&plan.output);
            let d = run_forge(&root, &plan, &url, &deployer).await;
            let _ = std::fs::remove_file(out);
            d
        }
    });
    let deployments = futures::future::join_all(futs).await;
    let mut out = Vec::new();
    for ((chain, anvil, url, keys, i), d) in started.into_iter().zip(deployments) {
        let deployment = d.with_context(|| format!("deploying on {}", chain.key))?;
        let p = ProviderBuilder::new().connect_http(url.parse()?).erased();
        // Chain time runs fast only once the suite is deployed (so deployment never overtakes the first round).
        p.raw_request::<_, serde_json::Value>("anvil_setBlockTimestampInterval".into(), (opts.seconds_per_block,))
            .await?;
        let aggregator = mock_aggregator(&p, deployment.feeds[0]).await?;
        let token = deployment.tokens[0];
        out.push(LocalChain { chain, anvil, url, keys, aggregator, token, deployment, candle_base: candle_base(i) });
    }
    Ok(out)
}

/// The mock aggregator behind a local deployment's feed proxy (what `updateAnswer` moves).
pub async fn mock_aggregator(p: &DynProvider, feed: Address) -> Result<Address> {
    let proxy = kronos_contracts::mocks::PhasedAggregatorProxy::new(feed, p.clone());
    let phase = proxy.phaseId().call().await?;
    Ok(proxy.phaseAggregators(phase).call().await?)
}

/// Chains replay different stretches of the test split (out of sample for the shipped model).
pub fn candle_base(i: usize) -> usize {
    14_000 + 160 * i
}

/// The candles a forecaster may see during a replay: real history before the replayed stretch, then each
/// replayed candle once its round interval has passed.
pub struct ReplayCandles {
    candles: Arc<Vec<Candle>>,
    /// chain → (genesis, interval, base index)
    chains: Mutex<std::collections::HashMap<String, (u64, u64, usize)>>,
}

impl ReplayCandles {
    pub fn new(candles: Arc<Vec<Candle>>) -> Self {
        ReplayCandles { candles, chains: Mutex::new(Default::default()) }
    }

    pub fn register(&self, chain: &str, genesis: u64, interval: u64, base: usize) {
        self.chains.lock().insert(chain.to_string(), (genesis, interval, base));
    }

    /// The candle replayed during epoch `e` of `chain`.
    pub fn candle(&self, chain: &str, epoch: u64) -> Option<Candle> {
        let (_, _, base) = *self.chains.lock().get(chain)?;
        self.candles.get(base + epoch as usize).copied()
    }
}

impl CandleSource for ReplayCandles {
    fn candles_until(&self, chain: &str, _market: u64, t: u64, max: usize) -> Vec<Candle> {
        let Some(&(genesis, interval, base)) = self.chains.lock().get(chain) else { return Vec::new() };
        let done = if t <= genesis { 0 } else { ((t - genesis) / interval) as usize };
        let end = (base + done).min(self.candles.len());
        self.candles[end.saturating_sub(max)..end].to_vec()
    }
}

/// Feeds one chain's mock aggregator with the replayed candles: open, the extremes, and close during each
/// round interval, leaving its first 40% and last 30% quiet so updates do not race the keeper's checkpoint
/// transactions (a real feed rarely updates within seconds of a boundary; when one does, the keeper proves again).
pub async fn replay(
    chain: Arc<LocalChain>,
    source: Arc<ReplayCandles>,
    interval: u64,
    poll: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let p = chain.wallet(accounts::ORACLE);
    let agg = kronos_contracts::mocks::MockV3Aggregator::new(chain.aggregator, p.clone());
    let genesis = chain.genesis();
    let fractions = [0.4, 0.5, 0.6, 0.7];
    let mut pushed: Option<(u64, usize)> = None;
    while !cancel.is_cancelled() {
        let now = match p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await {
            Ok(Some(b)) => b.header.timestamp,
            _ => {
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        if now >= genesis {
            let epoch = (now - genesis) / interval;
            let into = (now - genesis - epoch * interval) as f64 / interval as f64;
            let step = fractions.iter().filter(|f| into >= **f).count();
            let next = match pushed {
                Some((e, s)) if e == epoch => (s < step).then_some(s),
                _ => (step > 0).then_some(0),
            };
            if let (Some(s), Some(c)) = (next, source.candle(&chain.chain.key, epoch)) {
                let (a, b) = if c.close >= c.open { (c.low, c.high) } else { (c.high, c.low) };
                let v = [c.open, a, b, c.close][s];
                let answer = I256::try_from((v * 1e8).round() as i64).unwrap_or_default();
                match agg.updateAnswer(answer).send().await {
                    Ok(pending) => {
                        let _ = tokio::time::timeout(Duration::from_secs(20), pending.get_receipt()).await;
                        pushed = Some((epoch, s + 1));
                    }
                    Err(e) => tracing::warn!(chain = %chain.chain.key, error = %e, "price replay failed; retrying"),
                }
                continue;
            }
        }
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(poll) => {} }
    }
}
