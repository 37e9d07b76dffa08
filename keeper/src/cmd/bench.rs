//! `kronos bench`: the keeper over many rounds on every EVM chain of the catalogue (local anvils, accelerated
//! clocks). The keeper runs as its own process (`kronos run`) so that its CPU time is measured alone; the figures
//! come from the keeper's store and the chains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use kronos_common::Catalogue;
use tokio_util::sync::CancellationToken;

use crate::demo::net::{self, accounts, NetOptions, ReplayCandles};
use crate::demo::percentile;
use crate::deploy::DeployPolicy;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Rounds to finish in total across the chains.
    #[arg(long, default_value_t = 1000)]
    pub rounds: u64,
    /// Chains (catalogue keys, comma-separated); default every EVM chain.
    #[arg(long, value_delimiter = ',')]
    pub chains: Option<Vec<String>>,
    /// Wall seconds between blocks.
    #[arg(long, default_value_t = 0.5)]
    pub block_time: f64,
    /// Chain seconds per block.
    #[arg(long, default_value_t = 20)]
    pub speed: u64,
    /// Round interval in chain seconds.
    #[arg(long, default_value_t = 60)]
    pub interval: u32,
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn run(a: BenchArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench(a))
}

async fn bench(a: BenchArgs) -> Result<()> {
    let root = crate::deploy::repo_root()?;
    let cat = Catalogue::load(root.join("config/chains.toml"))?;
    let policy = DeployPolicy::load(&root.join("config/deploy.toml"))?;
    let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv"))?);
    let keys: Vec<String> = a.chains.clone().unwrap_or_else(|| cat.evm_chains().map(|c| c.key.clone()).collect());
    let opts =
        NetOptions { chains: keys.clone(), block_time: a.block_time, seconds_per_block: a.speed, interval: a.interval };
    println!(
        "bench: {} rounds across {} chains ({}), {}s blocks of {} chain seconds, {}s rounds",
        a.rounds,
        keys.len(),
        keys.join(", "),
        a.block_time,
        a.speed,
        a.interval
    );
    let chains: Vec<Arc<net::LocalChain>> =
        net::start(&root, &cat, &policy, &opts, &candles).await?.into_iter().map(Arc::new).collect();
    let replay = Arc::new(ReplayCandles::new(candles));
    let cancel = CancellationToken::new();
    for c in &chains {
        replay.register(&c.chain.key, c.genesis(), a.interval as u64, c.candle_base);
        tokio::spawn(net::replay(
            c.clone(),
            replay.clone(),
            a.interval as u64,
            Duration::from_millis(100),
            cancel.clone(),
        ));
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let mut cfg = format!(
        "[keeper]\ncatalogue = \"{}\"\nstore = \"sqlite://{}\"\nlisten = \"127.0.0.1:0\"\nsigner = {{ env = \"KRONOS_BENCH_KEY\" }}\npoll_ms = 100\nkeeper_id = \"bench\"\n",
        root.join("config/chains.toml").display(),
        db.display()
    );
    for c in &chains {
        cfg += &format!(
            "\n[[chain]]\nname = \"{}\"\nrpc = [\"{}\"]\nmarket = \"{}\"\nmarkets = [1]\nconfirmations = 1\nbump_after_s = 3\nlocal = true\npairs = {{ \"1\" = \"BTC/USD\" }}\n",
            c.chain.key, c.url, c.deployment.market
        );
    }
    let cfg_path = dir.path().join("keeper.toml");
    std::fs::write(&cfg_path, cfg)?;
    let key = format!("0x{}", alloy::hex::encode(chains[0].keys[accounts::KEEPER].to_bytes()));
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .current_dir(&root)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("KRONOS_BENCH_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the keeper process")?;
    let pid = child.id().unwrap_or_default();
    let t0 = Instant::now();
    // Rounds finish two checkpoints after they start: count recorded checkpoints beyond index 1 on each chain.
    let mut last_report = Instant::now();
    let (finished, cpu) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the keeper process exited early: {status}");
        }
        let mut finished = 0u64;
        for c in &chains {
            let p = c.wallet(0);
            let m = kronos_contracts::KronosMarket::new(c.deployment.market, p.clone());
            let now = kronos_testkit_free::head_time(&p).await.unwrap_or(0);
            let due = now.saturating_sub(c.genesis()) / a.interval as u64;
            let mut k = due;
            // The latest recorded checkpoint (scan back a few: the keeper may be one behind).
            while k > 0 {
                let cp =
                    m.getCheckpoint(alloy::primitives::U256::from(1), alloy::primitives::U256::from(k)).call().await?;
                if cp.recordedAt.to::<u64>() != 0 {
                    break;
                }
                k -= 1;
            }
            finished += k.saturating_sub(1);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!("  {finished}/{} rounds finished after {:.0}s", a.rounds, t0.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        if finished >= a.rounds {
            break (finished, cpu_seconds(pid));
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(3600), "the benchmark did not finish within an hour");
    };
    let wall = t0.elapsed().as_secs_f64();
    let _ = child.start_kill();
    let _ = child.wait().await;
    cancel.cancel();
    let store = crate::store::Store::connect(&format!("sqlite://{}", db.display())).await?;
    let mut delays = Vec::new();
    let mut missed = 0u64;
    for c in &chains {
        let cps = store.checkpoints(&c.chain.key, 1, 0, 1_000_000).await?;
        let mut expected = 0i64;
        for cp in &cps {
            missed += (cp.idx - expected).max(0) as u64;
            expected = cp.idx + 1;
            if let Some(d) = cp.delay_blocks {
                delays.push(d as u64);
            }
        }
    }
    let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    println!("\nresults ({} chains, {finished} rounds finished in {wall:.0}s):", chains.len());
    println!(
        "  settlement delay after lock/close time: p50 {} blocks, p99 {} blocks, max {} blocks ({} checkpoints)",
        f(percentile(&delays, 50.0)),
        f(percentile(&delays, 99.0)),
        f(delays.iter().max().copied()),
        delays.len()
    );
    println!("  missed checkpoints: {missed}");
    match cpu {
        Some(c) => {
            println!("  keeper CPU time: {c:.2}s in total, {:.1} ms per round", 1000.0 * c / finished.max(1) as f64)
        }
        None => println!("  keeper CPU time: unavailable (no /proc)"),
    }
    Ok(())
}

/// Head time without the test kit (which is a dev-only crate).
mod kronos_testkit_free {
    use alloy::providers::{DynProvider, Provider};
    pub async fn head_time(p: &DynProvider) -> anyhow::Result<u64> {
        Ok(p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no head"))?
            .header
            .timestamp)
    }
}
