//! The demo's eighth chain, `solana`: the kronos-market program in the local Solana RPC server ([`crate::solana`]),
//! its clock running as fast as the anvils' so its rounds take the same wall time, the same BTC/USD candles replayed
//! into its feed, local bettors on a SOL and an SPL-token market, and the keeper driving both from a `[[solana]]`
//! section. Its row in the table and the summary is read from the chain (round accounts, the forecaster's
//! `TrackRecord`), its delays are in slots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kronos_common::Catalogue;
use kronos_forecast::Candle;
use parking_lot::Mutex;
use solana_signer::Signer;
use tokio_util::sync::CancellationToken;

use super::bettors::BetStats;
use super::net::{self, ReplayCandles};
use super::{percentile, units, DemoArgs};
use crate::solana::replay::{self, ReplayOptions, ReplayStats};
use crate::solana::watch::{self, Counts, WatchStats};
use crate::solana::{bettors, clock, LocalSolana, Options, PROGRAM_ID};

/// The Solana chain's catalogue key and its row's name.
pub const SOLANA: &str = "solana";

/// The running Solana chain and what is watched on it.
pub struct SolanaDemo {
    pub chain: Arc<LocalSolana>,
    pub watch: Arc<Mutex<WatchStats>>,
    pub bets: Arc<Mutex<BetStats>>,
    pub replay: Arc<Mutex<ReplayStats>>,
    source: Arc<ReplayCandles>,
    seed: u64,
}

/// Chain seconds per wall second of the demo's anvils (`--speed` chain seconds every `--block-time` wall seconds).
pub fn speed(args: &DemoArgs) -> u32 {
    ((args.speed as f64 / args.block_time).round() as u32).max(1)
}

/// Starts and sets up the Solana chain; its candles are the stretch after the `evm_chains` EVM chains' ones.
pub async fn start(
    args: &DemoArgs,
    root: &Path,
    db: &str,
    candles: &[Candle],
    source: &Arc<ReplayCandles>,
    evm_chains: usize,
) -> Result<SolanaDemo> {
    let base = net::candle_base(evm_chains);
    let seed_close = candles.get(base.saturating_sub(1)).map(|c| c.close).context("no candle before the replay")?;
    let speed = speed(args);
    crate::say!(
        "starting the local Solana chain (kronos-market in the local RPC server, clock {speed}x the wall clock)…"
    );
    let opts = Options {
        interval: args.interval,
        speed,
        work_dir: root.join(db.replace(".db", "-solana")),
        initial_answer: (seed_close * 1e8).round() as i128,
        bettors: 3,
    };
    let chain = Arc::new(LocalSolana::start(&opts).await.context("starting the local Solana chain")?);
    source.register(SOLANA, chain.genesis as u64, u64::from(args.interval), base);
    crate::say!(
        "  solana RPC {}  program {}\n  markets {} (SOL), {} (SPL, mint {}), feed {}; keeper key {}",
        chain.url(),
        PROGRAM_ID,
        chain.markets[0].key,
        chain.markets[1].key,
        chain.mint,
        chain.feed,
        chain.keeper_key_file.display()
    );
    Ok(SolanaDemo {
        chain,
        watch: Default::default(),
        bets: Default::default(),
        replay: Default::default(),
        source: source.clone(),
        seed: args.seed + 100,
    })
}

/// The keeper's `[[solana]]` section for the chain, as `kronos run` would read it from
/// [`LocalSolana::keeper_section`].
pub fn keeper_config(
    cat: &Catalogue,
    chain: &LocalSolana,
    forecasts: bool,
) -> Result<kronos_keeper::solana::SolanaConfig> {
    let entry = cat.chain(SOLANA).with_context(|| format!("config/chains.toml has no [chains.{SOLANA}]"))?;
    Ok(kronos_keeper::solana::SolanaConfig {
        chain: entry.clone(),
        rpc: vec![chain.url().parse().context("the local Solana RPC's URL")?],
        program: PROGRAM_ID,
        markets: Some(chain.markets.iter().map(|m| m.key).collect()),
        creators: None,
        key: kronos_keeper::solana::config::KeySource::File(chain.keeper_key_file.clone()),
        forecasts,
        cu_price_percentile: 75,
        max_cu_price_micro_lamports: 50_000,
        cu_margin_percent: 15,
        rebroadcast_s: 2,
        local: true,
        other_program: false,
    })
}

impl SolanaDemo {
    /// Starts the replay, the bettors and the watcher.
    pub fn spawn(
        &self,
        _args: &DemoArgs,
        poll: Duration,
        cancel: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        let ropts = ReplayOptions { chain: SOLANA.into(), stale_epochs: Default::default(), poll: poll / 2 };
        tasks.spawn(replay::run(self.chain.clone(), self.source.clone(), ropts, self.replay.clone(), cancel.clone()));
        tasks.spawn(bettors::run(self.chain.clone(), poll, self.seed, self.bets.clone(), cancel.clone()));
        tasks.spawn(watch::run(self.chain.clone(), poll / 2, self.watch.clone(), cancel.clone()));
    }

    /// Every market has `rounds` rounds settled or refunded, as its round accounts say.
    pub fn done(&self, rounds: u64) -> bool {
        let w = self.watch.lock();
        w.counts.len() == self.chain.markets.len() && w.counts.iter().all(|(_, c)| c.finished() >= rounds)
    }

    /// The live table's row (pools of the SOL market's betting round, in SOL; `p_up`: the forecaster's latest P(up)
    /// on the SOL market, the one enabled for forecasts).
    pub fn table_row(&self, p_up: Option<f64>) -> String {
        let w = self.watch.lock().clone();
        let t = w.total();
        let price = |p: Option<i128>| p.map(|p| format!("{:.2}", p as f64 / 1e8)).unwrap_or_else(|| "-".into());
        let pool = format!("{}/{}", units(&w.pool.0.to_string(), 9), units(&w.pool.1.to_string(), 9));
        format!(
            "{:<10} {:>5} {:>12} {:>12} {:>17} {:<26} {:>6} {:>6} {:>4}/{:<4}\n",
            SOLANA,
            w.betting_epoch,
            price(w.last_lock_price),
            price(w.last_close_price),
            pool,
            w.last_result,
            w.delays.last().map(|d| format!("{d} slot")).unwrap_or_else(|| "-".into()),
            p_up.map(|p| format!("{p:.3}")).unwrap_or_else(|| "-".into()),
            t.finished(),
            t.missed
        )
    }

    /// The summary's row (counts read from the chain now), the counts, and the note under the table.
    pub async fn summary_row(&self) -> (String, Counts, String) {
        let now = clock(&self.chain.client).await.map(|c| c.unix_timestamp).unwrap_or(0);
        let mut per_market = Vec::new();
        let mut total = Counts::default();
        let seen = self.watch.lock().seen.clone();
        for (i, m) in self.chain.markets.iter().enumerate() {
            match watch::counts(&self.chain, m, now, &seen.get(i).cloned().unwrap_or_default()).await {
                Ok(c) => {
                    total.add(&c);
                    per_market.push(format!("{} {}/{}/{}", m.name.to_uppercase(), c.settled, c.refunded, c.missed));
                }
                Err(e) => per_market.push(format!("{}: unreadable ({e:#})", m.name)),
            }
        }
        let w = self.watch.lock().clone();
        let b = self.bets.lock().clone();
        let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        let row = format!(
            "{:<10} {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            SOLANA,
            total.settled,
            total.refunded,
            total.missed,
            f(percentile(&w.delays, 50.0)),
            f(percentile(&w.delays, 99.0)),
            "-",
            "-",
            "-",
            "-",
            "-",
        );
        let note = format!(
            "{:<10} solana: read from its round accounts, two markets (settled/refunded/missed: {}); delay in slots from \
             the first slot the program accepts a lock or settlement to the slot recording it ({} seen); {} bets, {} \
             claims, {} refused; compute units are not measured by the local server\n",
            "",
            per_market.join(", "),
            w.delays.len(),
            b.bets,
            b.claims,
            b.failures
        );
        (row, total, note)
    }

    /// The forecaster's record in the program's registry (the keeper publishes there), if it has one.
    pub async fn record_section(&self) -> String {
        let now = clock(&self.chain.client).await.map(|c| c.unix_timestamp).unwrap_or(0);
        match watch::record(&self.chain, &self.chain.keeper.pubkey(), now).await {
            Ok(Some(r)) => {
                let scored = r.hits + r.misses;
                let brier = r.brier_sum as f64 / 1e8;
                format!(
                    "\nforecaster track record on {SOLANA} (on-chain, the kronos-market registry):\n  {:<10} committed {:>3}  scored {:>3}  hits {:>3}  voided {:>2}  expired {:>2}  hit rate {:>6}  mean Brier {}\n",
                    SOLANA,
                    r.committed,
                    scored,
                    r.hits,
                    r.voided,
                    r.expired,
                    if scored > 0 { format!("{:.1}%", 100.0 * r.hits as f64 / scored as f64) } else { "-".into() },
                    if scored > 0 { format!("{:.4}", brier / scored as f64) } else { "-".into() }
                )
            }
            Ok(None) => String::new(),
            Err(e) => format!("\nforecaster track record on {SOLANA}: unreadable ({e:#})\n"),
        }
    }
}
