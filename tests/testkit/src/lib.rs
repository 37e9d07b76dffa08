//! Test helpers: real anvil nodes (the npm Foundry binary), wallets, and contract deployments over alloy; a
//! throwaway PostgreSQL server ([`pg`]); a local Telegram Bot API server ([`telegram`]);
//! a throwaway Redis server ([`redis`]); a local Discord gateway and REST stand-in ([`discord`]); a loopback RSS feed
//! for the social monitor's tests ([`rss`]); the keeper's
//! end-to-end harness on two local chains ([`harness`]) and the local network tooling of `kronos-localnet` ([`net`],
//! [`bettors`], [`deploy`], [`exchange`], …).

pub mod discord;
#[cfg(feature = "localnet")]
pub mod harness;
// The PostgreSQL server and PgBouncer of `kronos bench soak`, compiled here too so that the crates whose tests do
// not build `kronos-localnet` (copytrade, social) have them.
#[path = "../../../localnet/src/pg.rs"]
pub mod pg;
pub mod redis;
pub mod rpcproxy;
pub mod rss;
/// With the `solana` feature: the local Solana JSON-RPC server over solana-program-test (`LocalRpc`).
#[cfg(feature = "solana")]
pub use kronos_solana_rpc as solana_rpc;
pub mod telegram;

// With the `localnet` feature: the local network tooling the tests share, from `kronos-localnet` (the tests never
// import it from the product): the anvil network harness, the demo's bettors, copy-trading and social pieces, the
// deploy plans and forge runner, the local exchange, the local Solana cluster (`solana`, `solana_demo`).
#[cfg(feature = "localnet")]
pub use kronos_localnet::demo::{bettors, copytrade, net, social, solana_demo};
#[cfg(feature = "localnet")]
pub use kronos_localnet::{deploy, exchange, soak, solana};

use std::path::{Path, PathBuf};

use alloy::network::EthereumWallet;
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, I256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;

/// The repository root (where `Cargo.lock` and `foundry.toml` are), found from the running test's package
/// directory (set by cargo at run time, so a target dir shared between checkouts still finds this checkout).
pub fn repo_root() -> PathBuf {
    let start = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let mut d = PathBuf::from(&start);
    loop {
        if d.join("foundry.toml").is_file() && d.join("Cargo.lock").is_file() {
            return d;
        }
        assert!(d.pop(), "repository root not found above {start}");
    }
}

/// A Foundry binary: from `node_modules` (installed by `scripts/setup`) or the PATH.
pub fn foundry_bin(tool: &str) -> PathBuf {
    let p = repo_root().join(format!("node_modules/@foundry-rs/{tool}-linux-amd64/bin/{tool}"));
    if p.is_file() {
        return p;
    }
    PathBuf::from(tool)
}

/// A running anvil node with a wallet-enabled provider for its first dev account.
pub struct Node {
    pub anvil: AnvilInstance,
    pub url: String,
    /// Signs with dev account 0.
    pub provider: DynProvider,
    pub keys: Vec<PrivateKeySigner>,
}

impl Node {
    /// A provider that signs with dev account `i`.
    pub fn provider_for(&self, i: usize) -> DynProvider {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(self.keys[i].clone()))
            .connect_http(self.url.parse().expect("anvil url"))
            .erased()
    }

    /// Dev account `i`'s address.
    pub fn address(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    /// Dev account `i`'s private key, hex with 0x.
    pub fn key_hex(&self, i: usize) -> String {
        format!("0x{}", alloy::hex::encode(self.keys[i].to_bytes()))
    }
}

/// Options for a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub chain_id: u64,
    /// Seconds between blocks; `None` mines on every transaction.
    pub block_time: Option<u64>,
    /// Anvil's `--hardfork`.
    pub hardfork: &'static str,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions { chain_id: 31337, block_time: None, hardfork: "cancun" }
    }
}

/// Starts anvil.
pub fn spawn(opts: NodeOptions) -> Node {
    let mut a = Anvil::at(foundry_bin("anvil")).chain_id(opts.chain_id).args(["--hardfork", opts.hardfork]);
    if let Some(bt) = opts.block_time {
        a = a.block_time(bt);
    }
    let anvil = a.try_spawn().expect("anvil starts (run scripts/setup to install it)");
    let url = anvil.endpoint();
    let keys: Vec<PrivateKeySigner> = anvil.keys().iter().map(|k| PrivateKeySigner::from(k.clone())).collect();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(keys[0].clone()))
        .connect_http(url.parse().expect("anvil url"))
        .erased();
    Node { anvil, url, provider, keys }
}

/// Deploys Chainlink's MockV3Aggregator.
pub async fn deploy_mock_feed(p: &DynProvider, decimals: u8, answer: i64) -> anyhow::Result<Address> {
    let c = kronos_contracts::mocks::MockV3Aggregator::deploy(p.clone(), decimals, I256::try_from(answer)?).await?;
    Ok(*c.address())
}

/// Pushes a new answer to a MockV3Aggregator and waits for it to be mined.
pub async fn push_answer(p: &DynProvider, feed: Address, answer: i64) -> anyhow::Result<()> {
    let c = kronos_contracts::mocks::MockV3Aggregator::new(feed, p.clone());
    c.updateAnswer(I256::try_from(answer)?).send().await?.get_receipt().await?;
    Ok(())
}

/// Current head block timestamp.
pub async fn head_time(p: &DynProvider) -> anyhow::Result<u64> {
    let b = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no head block"))?;
    Ok(b.header.timestamp)
}

/// Sets the timestamp of the next block (mined by the next transaction).
pub async fn set_next_timestamp(p: &DynProvider, timestamp: u64) -> anyhow::Result<()> {
    p.raw_request::<_, serde_json::Value>("evm_setNextBlockTimestamp".into(), (timestamp,)).await?;
    Ok(())
}

/// Sets the next block's timestamp and mines it.
pub async fn mine_at(p: &DynProvider, timestamp: u64) -> anyhow::Result<()> {
    p.raw_request::<_, serde_json::Value>("evm_setNextBlockTimestamp".into(), (timestamp,)).await?;
    p.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await?;
    Ok(())
}

/// Deploys KronosMarket owned by `owner`.
pub async fn deploy_market(p: &DynProvider, owner: Address) -> anyhow::Result<Address> {
    Ok(*kronos_contracts::KronosMarket::deploy(p.clone(), owner).await?.address())
}

/// One ether in wei.
pub fn ether(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// Whether a path exists relative to the repository root.
pub fn repo_path(rel: impl AsRef<Path>) -> PathBuf {
    repo_root().join(rel)
}
