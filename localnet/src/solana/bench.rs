//! `kronos bench` on the Solana chain: the local Solana RPC in wall-clock mode (as fast as the bench's anvils), the
//! candles replayed into its feed, local bettors (two-sided pools), and a keeper process of its own driving both markets from a `[[solana]]` section,
//! so that its figures — rounds finished, delays in slots, the keeper's CPU time — are reported apart from the EVM
//! chains'. Every figure is read from the chain ([`super::watch`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::replay::{self, ReplayOptions, ReplayStats};
use super::watch::{self, Counts, WatchStats};
use super::{clock, LocalSolana, Options};
use crate::demo::net::{candle_base, ReplayCandles};
use crate::demo::percentile;

/// The Solana chain's catalogue key.
pub const SOLANA: &str = "solana";

/// Anvil's first dev account's well-known key, for the EVM signer a keeper configuration must name.
const ANVIL_DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Splits a chain list into (Solana asked for, the EVM chains).
pub fn split(keys: Vec<String>) -> (bool, Vec<String>) {
    let solana = keys.iter().any(|k| k == SOLANA);
    (solana, keys.into_iter().filter(|k| k != SOLANA).collect())
}

/// The Solana chain under a keeper process of its own.
pub struct SolanaBench {
    chain: Arc<LocalSolana>,
    child: tokio::process::Child,
    pid: u32,
    watch: Arc<Mutex<WatchStats>>,
    replay: Arc<Mutex<ReplayStats>>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl SolanaBench {
    /// Starts the chain (its clock `speed` chain seconds per wall second), the replay of the candles after the
    /// `evm_chains` EVM chains' stretches, the watcher, and `kronos run` on a Solana-only configuration.
    pub async fn start(root: &Path, interval: u32, speed: u32, evm_chains: usize) -> Result<SolanaBench> {
        let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv"))?);
        let base = candle_base(evm_chains);
        let seed_close = candles.get(base.saturating_sub(1)).map(|c| c.close).context("no candle before the replay")?;
        let dir = tempfile::tempdir()?;
        let opts = Options {
            interval,
            speed,
            work_dir: dir.path().to_path_buf(),
            initial_answer: (seed_close * 1e8).round() as i128,
            bettors: 3,
        };
        let chain = Arc::new(LocalSolana::start(&opts).await.context("starting the local Solana chain")?);
        let source = Arc::new(ReplayCandles::new(candles));
        source.register(SOLANA, chain.genesis as u64, u64::from(interval), base);
        let cancel = CancellationToken::new();
        let (watch, replayed) =
            (Arc::new(Mutex::new(WatchStats::default())), Arc::new(Mutex::new(ReplayStats::default())));
        let poll = Duration::from_millis(100);
        let ropts = ReplayOptions { chain: SOLANA.into(), stale_epochs: Default::default(), poll };
        tokio::spawn(replay::run(chain.clone(), source, ropts, replayed.clone(), cancel.clone()));
        tokio::spawn(watch::run(chain.clone(), poll, watch.clone(), cancel.clone()));
        // Bettors on both sides, so that rounds settle rather than refund a one-sided pool.
        let bets = Arc::new(Mutex::new(crate::demo::bettors::BetStats::default()));
        tokio::spawn(super::bettors::run(chain.clone(), poll * 2, 7, bets, cancel.clone()));

        let port = crate::loadgen::free_port()?;
        let cfg = format!(
            "[keeper]\ncatalogue = \"{}\"\nstore = \"sqlite://{}\"\nlisten = \"127.0.0.1:{port}\"\nsigner = {{ env = \"KRONOS_BENCH_KEY\" }}\npoll_ms = 100\nkeeper_id = \"bench-solana\"\n\n{}",
            root.join("config/chains.toml").display(),
            dir.path().join("bench-solana.db").display(),
            chain.keeper_section(false)
        );
        let cfg_path = dir.path().join("keeper-solana.toml");
        std::fs::write(&cfg_path, cfg)?;
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.current_dir(root)
            .args(["run", "--config"])
            .arg(&cfg_path)
            // `[keeper] signer` is required even without an EVM chain; this one signs nothing (anvil's first dev key).
            .env("KRONOS_BENCH_KEY", ANVIL_DEV_KEY)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the Solana keeper process")?;
        let pid = child.id().unwrap_or_default();
        Ok(SolanaBench { chain, child, pid, watch, replay: replayed, cancel, _dir: dir })
    }

    /// Rounds settled or refunded on both markets, as the watcher last read them; an error if the keeper exited.
    pub fn finished(&mut self) -> Result<u64> {
        if let Ok(Some(status)) = self.child.try_wait() {
            anyhow::bail!("the Solana keeper process exited early: {status}");
        }
        Ok(self.watch.lock().total().finished())
    }

    /// Stops the keeper and reports what the chain says: rounds by fate, delays in slots, the keeper's CPU time.
    pub async fn report(mut self) -> String {
        let cpu = crate::loadgen::cpu_seconds(self.pid);
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.cancel.cancel();
        let now = clock(&self.chain.client).await.map(|c| c.unix_timestamp).unwrap_or(0);
        let mut total = Counts::default();
        let seen = self.watch.lock().seen.clone();
        for (i, m) in self.chain.markets.iter().enumerate() {
            if let Ok(c) = watch::counts(&self.chain, m, now, &seen.get(i).cloned().unwrap_or_default()).await {
                total.add(&c);
            }
        }
        let w = self.watch.lock().clone();
        let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        let mut s = format!(
            "\nsolana (its own keeper; two markets, SOL and SPL; read from the round accounts):\n  rounds: {} settled, {} refunded, {} missed, {} pending\n",
            total.settled, total.refunded, total.missed, total.pending
        );
        s += &format!(
            "  lock/settle delay after the program accepts it: p50 {} slots, p99 {} slots, max {} slots ({} steps; a slot is 400 ms of wall time)\n",
            f(percentile(&w.delays, 50.0)),
            f(percentile(&w.delays, 99.0)),
            f(w.delays.iter().max().copied()),
            w.delays.len()
        );
        s += &format!("  feed transmissions written: {}\n", self.replay.lock().written.len());
        s += &match cpu {
            Some(c) => format!(
                "  Solana keeper CPU time: {c:.2}s in total, {:.1} ms per round\n",
                1000.0 * c / total.finished().max(1) as f64
            ),
            None => "  Solana keeper CPU time: unavailable (no /proc)\n".into(),
        };
        s
    }
}
