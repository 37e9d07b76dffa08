//! Shared harness of the keeper's end-to-end tests (`keeper/tests`, `cli/tests`): two local chains with accelerated clocks, the suite deployed,
//! real candles replayed into the feeds, and a keeper configuration pointing at them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use kronos_common::Catalogue;
use kronos_keeper::config::{ChainConfig, Config, ForecasterConfig, SignerSource};
use kronos_localnet::demo::net::{self, accounts, LocalChain, NetOptions, ReplayCandles};
use kronos_localnet::deploy::DeployPolicy;
use tokio_util::sync::CancellationToken;

pub const INTERVAL: u64 = 60;

pub struct Net {
    pub root: PathBuf,
    pub cat: Catalogue,
    pub chains: Vec<Arc<LocalChain>>,
    pub replay: Arc<ReplayCandles>,
    pub replay_cancel: Vec<CancellationToken>,
    pub dir: tempfile::TempDir,
}

/// Starts `chains` (catalogue keys) with 20 chain seconds per 0.5 s block and 60-second rounds, and replays candles.
pub async fn start(chains: &[&str]) -> Net {
    let root = crate::repo_root();
    let cat = Catalogue::load(root.join("config/chains.toml")).unwrap();
    let policy = DeployPolicy::load(&root.join("config/deploy.toml")).unwrap();
    let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv")).unwrap());
    let opts = NetOptions {
        chains: chains.iter().map(|s| s.to_string()).collect(),
        block_time: 0.5,
        seconds_per_block: 20,
        interval: INTERVAL as u32,
    };
    let chains: Vec<Arc<LocalChain>> =
        net::start(&root, &cat, &policy, &opts, &candles).await.unwrap().into_iter().map(Arc::new).collect();
    let replay = Arc::new(ReplayCandles::new(candles));
    let mut replay_cancel = Vec::new();
    for c in &chains {
        replay.register(&c.chain.key, c.genesis(), INTERVAL, c.candle_base);
        let t = CancellationToken::new();
        tokio::spawn(net::replay(c.clone(), replay.clone(), INTERVAL, Duration::from_millis(100), t.clone()));
        replay_cancel.push(t);
    }
    Net { root, cat, chains, replay, replay_cancel, dir: tempfile::tempdir().unwrap() }
}

impl Net {
    /// The keeper's key (dev account 1), hex.
    pub fn keeper_key(&self) -> String {
        format!("0x{}", alloy::hex::encode(self.chains[0].keys[accounts::KEEPER].to_bytes()))
    }

    /// The keeper's signer (dev account 1).
    pub fn signer(&self) -> alloy::signers::local::PrivateKeySigner {
        self.keeper_key().parse().unwrap()
    }

    pub fn store_url(&self) -> String {
        format!("sqlite://{}/keeper.db", self.dir.path().display())
    }

    /// A keeper configuration for these chains (optionally with extra RPC URLs before the real one).
    pub fn config(&self, rpc_prefix: &[Vec<String>], forecaster: bool) -> Config {
        Config {
            file: "(test)".into(),
            catalogue: self.cat.clone(),
            store: self.store_url(),
            listen: "127.0.0.1:0".into(),
            signer: SignerSource::Env("KRONOS_TEST_KEY".into()),
            poll_ms: 100,
            keeper_id: "test".into(),
            lease: Default::default(),
            api: Default::default(),
            publish_forecasts: false,
            api_token: None,
            forecaster: forecaster.then(|| ForecasterConfig {
                enabled: true,
                model: self.root.join("oracle/forecast/model"),
                samples: 8,
                candles: None,
                precision: Default::default(),
            }),
            chains: self
                .chains
                .iter()
                .enumerate()
                .map(|(i, c)| ChainConfig {
                    chain: c.chain.clone(),
                    rpc: rpc_prefix
                        .get(i)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .chain([c.url.clone()])
                        .map(|u| u.parse().unwrap())
                        .collect(),
                    market: c.deployment.market,
                    registry: Some(c.deployment.registry),
                    markets: Some(vec![1]),
                    confirmations: 1,
                    max_fee_wei: U256::from(1_000_000_000_000u64),
                    max_priority_fee_wei: U256::from(10_000_000_000u64),
                    bump_after_s: 2,
                    bump_percent: 12,
                    local: true,
                    pairs: [(1u64, "BTC/USD".to_string())].into_iter().collect(),
                })
                .collect(),
            solana: vec![],
        }
    }

    /// The same configuration as a TOML file (for the `kronos` binary).
    pub fn config_file(&self, rpc_prefix: &[Vec<String>]) -> PathBuf {
        let mut s = format!(
            "[keeper]\ncatalogue = \"{}\"\nstore = \"{}\"\nlisten = \"127.0.0.1:0\"\nsigner = {{ env = \"KRONOS_TEST_KEY\" }}\npoll_ms = 100\nkeeper_id = \"bin\"\n",
            self.root.join("config/chains.toml").display(),
            self.store_url()
        );
        for (i, c) in self.chains.iter().enumerate() {
            let rpcs: Vec<String> = rpc_prefix
                .get(i)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain([c.url.clone()])
                .map(|u| format!("\"{u}\""))
                .collect();
            s += &format!(
                "\n[[chain]]\nname = \"{}\"\nrpc = [{}]\nmarket = \"{}\"\nregistry = \"{}\"\nmarkets = [1]\nconfirmations = 1\nbump_after_s = 2\nlocal = true\npairs = {{ \"1\" = \"BTC/USD\" }}\n",
                c.chain.key,
                rpcs.join(", "),
                c.deployment.market,
                c.deployment.registry
            );
        }
        let p = self.dir.path().join("keeper.toml");
        std::fs::write(&p, s).unwrap();
        p
    }

    /// Current chain time of chain `i`.
    pub async fn now(&self, i: usize) -> u64 {
        crate::head_time(&self.chains[i].wallet(0)).await.unwrap()
    }

    /// Waits until chain `i` reaches checkpoint `k`'s time plus `extra` chain seconds.
    pub async fn wait_checkpoint(&self, i: usize, k: u64, extra: u64) {
        let t = self.chains[i].genesis() + k * INTERVAL + extra;
        for _ in 0..2400 {
            if self.now(i).await >= t {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chain {i} never reached checkpoint {k}");
    }

    /// On-chain checkpoint `k` of market 1 on chain `i`: (recordedAt, status).
    pub async fn checkpoint(&self, i: usize, k: u64) -> (u64, u8) {
        let m = kronos_contracts::KronosMarket::new(self.chains[i].deployment.market, self.chains[i].wallet(0));
        let cp = m.getCheckpoint(U256::from(1), U256::from(k)).call().await.unwrap();
        (cp.recordedAt.to::<u64>(), cp.status)
    }
}
