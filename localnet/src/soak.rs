//! `kronos bench soak`: several keeper processes (`kronos run`) on one PostgreSQL store drive every local chain while
//! the leader is killed with SIGKILL at a fixed period and restarted (issue 18). At the end: missed checkpoints and
//! duplicate sends, both counted on chain (the chains' checkpoints and every `execute` transaction mined, never the
//! keepers' own rows), and the takeover time after each kill (p50/p99/max), from the kill to a live lease held by
//! another keeper in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::consensus::Transaction as _;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::SolCall;
use anyhow::{Context, Result};
use kronos_common::Catalogue;
use kronos_contracts::market::KronosMarket;
use kronos_keeper::store::Store;

use crate::bench::{keeper_toml, start_chains};
use crate::demo::net::{LocalChain, NetOptions};
use crate::demo::percentile;
use crate::loadgen;

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct SoakArgs {
    /// Keeper processes on the one store (each with its own keeper id and signer).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub keepers: usize,
    /// Minutes of the soak, counted from the moment every market has a leader.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 20.0))]
    pub minutes: f64,
    /// Period of the kills (`120s`, `2m`): the keeper leading the most markets is killed with SIGKILL, and
    /// restarted once every market it led has a new leader.
    #[cfg_attr(feature = "clap", arg(long, default_value = "120s", value_parser = humantime::parse_duration))]
    pub kill_every: Duration,
    /// Chains (catalogue keys, comma-separated); default every EVM chain.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub chains: Option<Vec<String>>,
    /// A PostgreSQL store to use (`postgres://…`, an empty database); by default a server is started on loopback
    /// (the Debian server binaries that `scripts/setup` installs).
    #[cfg_attr(feature = "clap", arg(long))]
    pub store: Option<String>,
    /// `keeper.lease_ttl_ms` of the keepers (default: the keeper's own, 10 s).
    #[cfg_attr(feature = "clap", arg(long))]
    pub lease_ttl_ms: Option<u64>,
    /// `keeper.lease_refresh_ms` of the keepers (default: the keeper's own, 1 s).
    #[cfg_attr(feature = "clap", arg(long))]
    pub lease_refresh_ms: Option<u64>,
    /// Wall seconds between blocks.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.5))]
    pub block_time: f64,
    /// Chain seconds per block.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 20))]
    pub speed: u64,
    /// Round interval in chain seconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 60))]
    pub interval: u32,
    /// A counted soak in place of a timed one (`--minutes` and `--kill-every` are then ignored): the leader is
    /// killed as soon as every chain has recorded `--checkpoints-between` checkpoints since the last takeover, this
    /// many times, and the soak ends once every chain has recorded as many after the last one.
    #[cfg_attr(feature = "clap", arg(long))]
    pub kills: Option<u32>,
    /// With `--kills`: checkpoints every chain records between two kills (and after the last).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub checkpoints_between: u64,
}

/// Dev accounts of the keepers' signers (one per keeper; not the deployer 0 nor the feeds' oracle 9).
const SIGNERS: [usize; 8] = [1, 5, 6, 7, 8, 2, 3, 4];
/// How long a kill may go without a takeover before the soak says so and restarts the keeper anyway.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(120);
/// How long a counted soak (`--kills`) waits for the checkpoints it wants before it stops with an error.
const PROGRESS_LIMIT: Duration = Duration::from_secs(120);

/// What a soak found: counted on chain (missed checkpoints, duplicate sends) and in the store (takeovers).
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub kills: u32,
    /// Each market's takeover after a kill, in milliseconds from the kill to another keeper's live lease.
    pub takeovers_ms: Vec<u64>,
    /// Markets a killed keeper led that nobody took over within two minutes.
    pub not_taken_over: u64,
    /// Keeper exits the soak did not cause.
    pub unexpected_exits: u32,
    /// Each chain's tally (catalogue key first).
    pub chains: Vec<(String, ChainTally)>,
}

impl SoakReport {
    /// Checkpoints due and never recorded, on every chain.
    pub fn missed(&self) -> usize {
        self.chains.iter().map(|(_, t)| t.missed.len()).sum()
    }

    /// Duplicate sends, on every chain.
    pub fn duplicates(&self) -> u64 {
        self.chains.iter().map(|(_, t)| t.duplicates).sum()
    }

    /// Checkpoints recorded, on every chain.
    pub fn recorded(&self) -> u64 {
        self.chains.iter().map(|(_, t)| t.recorded).sum()
    }
}

/// One `execute` transaction of market 1 mined on a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute {
    pub block: u64,
    /// Position in its block.
    pub index: u64,
    pub succeeded: bool,
    pub from: Address,
}

/// Every `execute` transaction for market `market_id` of the market at `market` mined on the chain behind `p`, by
/// checkpoint, in chain order.
pub async fn executes(p: &DynProvider, market: Address, market_id: u64) -> Result<BTreeMap<u64, Vec<Execute>>> {
    let head = p.get_block_number().await?;
    let mut out: BTreeMap<u64, Vec<Execute>> = BTreeMap::new();
    for n in 0..=head {
        let b = p.get_block_by_number(n.into()).full().await?.with_context(|| format!("block {n} missing"))?;
        for (j, tx) in b.transactions.txns().enumerate() {
            if tx.to() != Some(market) {
                continue;
            }
            let Ok(call) = KronosMarket::executeCall::abi_decode(tx.input()) else { continue };
            if call.marketId != U256::from(market_id) {
                continue;
            }
            let r =
                p.get_transaction_receipt(tx.tx_hash()).await?.with_context(|| format!("no receipt in block {n}"))?;
            out.entry(call.index.to::<u64>()).or_default().push(Execute {
                block: n,
                index: j as u64,
                succeeded: r.status(),
                from: tx.from(),
            });
        }
    }
    Ok(out)
}

/// What one chain's record says, from its checkpoints and its `execute` transactions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChainTally {
    /// Checkpoints due that were never recorded.
    pub missed: Vec<u64>,
    /// `execute` transactions sent again for a checkpoint: any after the one that recorded it, a second successful
    /// one, and a reverted one before it from another keeper than the one that recorded it (two keepers sent).
    pub duplicates: u64,
    /// Checkpoints with at least one duplicate.
    pub duplicated: Vec<u64>,
    /// Reverted executes before the recording one from the same keeper: its retry after a proof outdated by a new
    /// feed round (the single-keeper feed race), not a duplicate.
    pub retries: u64,
    /// Checkpoints recorded.
    pub recorded: u64,
}

/// Tallies checkpoints `0..=last` of one chain: `recorded[k]` says whether checkpoint `k` is recorded on chain,
/// `executes` are the chain's `execute` transactions by checkpoint.
pub fn tally(recorded: &[bool], executes: &BTreeMap<u64, Vec<Execute>>) -> ChainTally {
    let mut t = ChainTally::default();
    for (k, r) in recorded.iter().enumerate() {
        if *r {
            t.recorded += 1;
        } else {
            t.missed.push(k as u64);
        }
    }
    for (k, txs) in executes {
        let mut txs = txs.clone();
        txs.sort_by_key(|e| (e.block, e.index));
        let before = t.duplicates;
        match txs.iter().position(|e| e.succeeded) {
            Some(first) => {
                let recorder = txs[first].from;
                for e in &txs[..first] {
                    if e.from == recorder {
                        t.retries += 1;
                    } else {
                        t.duplicates += 1;
                    }
                }
                t.duplicates += (txs.len() - first - 1) as u64;
            }
            // Never recorded: every execute beyond the first was sent again.
            None => t.duplicates += txs.len().saturating_sub(1) as u64,
        }
        if t.duplicates > before {
            t.duplicated.push(*k);
        }
    }
    t
}

/// One keeper process of the soak.
struct SoakKeeper {
    id: String,
    account: usize,
    cfg: PathBuf,
    log: PathBuf,
    child: tokio::process::Child,
    starts: u32,
}

fn spawn_keeper(
    root: &Path,
    exe: &Path,
    chains: &[Arc<LocalChain>],
    cfg: &Path,
    log: &Path,
    account: usize,
) -> Result<tokio::process::Child> {
    let key = format!("0x{}", alloy::hex::encode(chains[0].keys[account].to_bytes()));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    tokio::process::Command::new(exe)
        .current_dir(root)
        .args(["run", "--config"])
        .arg(cfg)
        .env("KRONOS_BENCH_KEY", key)
        .env("RUST_LOG", "warn,kronos_keeper::lease=info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting a keeper process")
}

impl SoakKeeper {
    fn start(
        root: &Path,
        exe: &Path,
        chains: &[Arc<LocalChain>],
        dir: &Path,
        i: usize,
        store: &str,
        extra: &str,
    ) -> Result<SoakKeeper> {
        let id = format!("soak-{}", i + 1);
        let cfg = dir.join(format!("{id}.toml"));
        std::fs::write(&cfg, keeper_toml(root, chains, store, loadgen::free_port()?, &id, extra))?;
        let log = dir.join(format!("{id}.log"));
        let account = SIGNERS[i];
        let child = spawn_keeper(root, exe, chains, &cfg, &log, account)?;
        Ok(SoakKeeper { id, account, cfg, log, child, starts: 1 })
    }

    fn restart(&mut self, root: &Path, exe: &Path, chains: &[Arc<LocalChain>]) -> Result<()> {
        self.child = spawn_keeper(root, exe, chains, &self.cfg, &self.log, self.account)?;
        self.starts += 1;
        Ok(())
    }
}

/// The live lease holders of market 1 on each chain (`None`: nobody holds a live lease), with their epochs.
async fn leaders(store: &Store, chains: &[Arc<LocalChain>]) -> Vec<Option<(String, i64)>> {
    let mut out = Vec::with_capacity(chains.len());
    for c in chains {
        let l = store.lease(&c.chain.key, 1).await.ok().flatten().filter(|l| l.expires_ms > l.db_now_ms);
        out.push(l.map(|l| (l.holder, l.epoch)));
    }
    out
}

fn fmt_ms(v: Option<u64>) -> String {
    v.map(|x| format!("{:.2} s", x as f64 / 1000.0)).unwrap_or_else(|| "-".into())
}

/// `kronos bench soak`.
pub async fn soak(a: SoakArgs) -> Result<()> {
    soak_with(a, None).await.map(|_| ())
}

/// The soak, its keepers run from `keeper_exe` (default: this program), and what it found.
pub async fn soak_with(a: SoakArgs, keeper_exe: Option<&Path>) -> Result<SoakReport> {
    anyhow::ensure!(a.keepers >= 2, "--keepers must be at least 2 (one leader and a standby)");
    anyhow::ensure!(a.keepers <= SIGNERS.len(), "--keepers: at most {} (one dev account each)", SIGNERS.len());
    match a.kills {
        Some(n) => {
            anyhow::ensure!(n >= 1, "--kills must be at least 1");
            anyhow::ensure!(a.checkpoints_between >= 1, "--checkpoints-between must be at least 1");
        }
        None => {
            anyhow::ensure!(a.minutes > 0.0, "--minutes must be above 0");
            anyhow::ensure!(a.kill_every >= Duration::from_secs(1), "--kill-every must be at least 1s");
        }
    }
    let root = crate::deploy::repo_root()?;
    let cat = Catalogue::load(root.join("config/chains.toml"))?;
    let keys: Vec<String> = a.chains.clone().unwrap_or_else(|| cat.evm_chains().map(|c| c.key.clone()).collect());
    let opts =
        NetOptions { chains: keys.clone(), block_time: a.block_time, seconds_per_block: a.speed, interval: a.interval };
    let plan = match a.kills {
        Some(n) => format!("the leader killed (SIGKILL) {n} times, {} checkpoints apart", a.checkpoints_between),
        None => {
            format!(
                "{:.1} min, the leader killed (SIGKILL) every {}",
                a.minutes,
                humantime::format_duration(a.kill_every)
            )
        }
    };
    println!(
        "bench soak: {} keepers on one PostgreSQL, {} chains ({}), {plan}",
        a.keepers,
        keys.len(),
        keys.join(", ")
    );
    println!("  machine: {}", loadgen::machine());
    // The keepers run from a copy of this program, so that a rebuild meanwhile does not change what is restarted.
    let dir = tempfile::Builder::new().prefix("kronos-soak").tempdir()?;
    let exe = dir.path().join("kronos");
    let source = match keeper_exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?,
    };
    std::fs::copy(&source, &exe)
        .with_context(|| format!("copying the kronos program {} for the keepers", source.display()))?;
    let (_pg, url) = match &a.store {
        Some(u) => (None, u.clone()),
        None => {
            let pg = crate::pg::PgServer::start().context("starting PostgreSQL on loopback")?;
            let url = pg.url();
            (Some(pg), url)
        }
    };
    println!("  store: {url}; logs and configurations in {}", dir.path().display());
    let store = Store::connect(&url).await.with_context(|| format!("connecting to {url}"))?;
    let (chains, replay) = start_chains(&root, &opts).await?;
    let mut extra = String::new();
    if let Some(t) = a.lease_ttl_ms {
        extra += &format!("lease_ttl_ms = {t}\n");
    }
    if let Some(r) = a.lease_refresh_ms {
        extra += &format!("lease_refresh_ms = {r}\n");
    }
    let mut keepers = Vec::new();
    for i in 0..a.keepers {
        keepers.push(SoakKeeper::start(&root, &exe, &chains, dir.path(), i, &url, &extra)?);
    }
    let result = run(&a, &root, &exe, &chains, &store, &mut keepers).await;
    for k in &mut keepers {
        let _ = k.child.start_kill();
        let _ = k.child.wait().await;
    }
    replay.cancel();
    let dir = dir.keep();
    println!("  keeper logs kept in {}", dir.display());
    result
}

async fn run(
    a: &SoakArgs,
    root: &Path,
    exe: &Path,
    chains: &[Arc<LocalChain>],
    store: &Store,
    keepers: &mut [SoakKeeper],
) -> Result<SoakReport> {
    // Every market led.
    let t0 = Instant::now();
    let mut said = Instant::now();
    loop {
        for k in keepers.iter_mut() {
            if let Some(s) = k.child.try_wait()? {
                anyhow::bail!("keeper {} exited at start: {s}; its log: {}", k.id, k.log.display());
            }
        }
        let l = leaders(store, chains).await;
        if l.iter().all(Option::is_some) {
            break;
        }
        if said.elapsed() > Duration::from_secs(10) {
            let led = l.iter().filter(|x| x.is_some()).count();
            println!("  waiting for leaders: {led}/{} markets led ({:.0}s)", chains.len(), t0.elapsed().as_secs_f64());
            said = Instant::now();
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(300), "not every market had a leader within 300 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let start = Instant::now();
    let total = Duration::from_secs_f64(a.minutes * 60.0);
    println!("  every market led after {:.0}s; the soak begins", t0.elapsed().as_secs_f64());
    let mut takeovers: Vec<u64> = Vec::new();
    let mut no_takeover = 0u64;
    let mut kills = 0u32;
    let mut unexpected = 0u32;
    let mut next_kill = start + a.kill_every;
    let mut last_report = Instant::now();
    // A counted soak: each chain's checkpoint due at the last takeover (or the start), and when that was.
    let mut mark = due(chains, a.interval).await?;
    let mut marked = Instant::now();
    loop {
        // Counted: whether every chain has recorded `checkpoints_between` checkpoints since the mark.
        let moved_on = match a.kills {
            Some(_) => recorded_since(chains, &mark, a.checkpoints_between).await?,
            None => false,
        };
        let (finished, kill_now) = match a.kills {
            Some(n) => (kills >= n && moved_on, kills < n && moved_on),
            None => (start.elapsed() >= total, Instant::now() >= next_kill),
        };
        if finished {
            break;
        }
        if a.kills.is_some() && !moved_on && marked.elapsed() > PROGRESS_LIMIT {
            anyhow::bail!(
                "the chains did not record {} checkpoints after those due at {mark:?} within {PROGRESS_LIMIT:?} (kill {kills})",
                a.checkpoints_between
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for k in keepers.iter_mut() {
            if let Some(s) = k.child.try_wait()? {
                unexpected += 1;
                println!("  keeper {} exited by itself ({s}); restarted (log: {})", k.id, k.log.display());
                k.restart(root, exe, chains)?;
            }
        }
        if kill_now {
            next_kill += a.kill_every;
            let before = leaders(store, chains).await;
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for (h, _) in before.iter().flatten() {
                *count.entry(h.as_str()).or_default() += 1;
            }
            let Some((victim, led)) = count.iter().max_by_key(|(_, n)| **n).map(|(h, n)| (h.to_string(), *n)) else {
                println!("  no live lease at kill time: nobody killed");
                continue;
            };
            let Some(k) = keepers.iter_mut().find(|k| k.id == victim) else {
                anyhow::bail!("the store names an unknown leader {victim}");
            };
            k.child.start_kill()?;
            let killed = Instant::now();
            k.child.wait().await?;
            kills += 1;
            let held: Vec<(usize, i64)> = before
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.as_ref().filter(|(h, _)| *h == victim).map(|(_, e)| (i, *e)))
                .collect();
            // Each market it led: from the kill to a live lease of another keeper under a later epoch.
            let mut pending = held.clone();
            let mut times = Vec::new();
            while !pending.is_empty() && killed.elapsed() < TAKEOVER_LIMIT {
                let now = leaders(store, chains).await;
                pending.retain(|(i, e)| match &now[*i] {
                    Some((h, epoch)) if *h != victim && epoch > e => {
                        times.push(killed.elapsed().as_millis() as u64);
                        false
                    }
                    _ => true,
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            no_takeover += pending.len() as u64;
            for (i, _) in &pending {
                println!("  {}: no takeover within {TAKEOVER_LIMIT:?} of the kill", chains[*i].chain.key);
            }
            println!(
                "  [{:>5.0}s] kill {kills}: {victim} (leading {led} of {} markets) killed; taken over in {} (max), restarted",
                start.elapsed().as_secs_f64(),
                chains.len(),
                fmt_ms(times.iter().max().copied())
            );
            takeovers.extend(times);
            k.restart(root, exe, chains)?;
            mark = due(chains, a.interval).await?;
            marked = Instant::now();
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            let l = leaders(store, chains).await;
            let led = l.iter().filter(|x| x.is_some()).count();
            let mut recorded = 0usize;
            for c in chains {
                recorded += store.checkpoints(&c.chain.key, 1, 0, 1_000_000).await.map(|v| v.len()).unwrap_or(0);
            }
            println!(
                "  [{:>5.0}s/{:.0}s] {kills} kills, takeover p50 {} max {}, {led}/{} markets led, {recorded} checkpoints in the store; load {}",
                start.elapsed().as_secs_f64(),
                total.as_secs_f64(),
                fmt_ms(percentile(&takeovers, 50.0)),
                fmt_ms(takeovers.iter().max().copied()),
                chains.len(),
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
            );
        }
    }
    // The checkpoints due at the end, given a moment to be recorded with the keepers still running.
    let last = due(chains, a.interval).await?;
    let grace = Instant::now();
    for (c, k) in chains.iter().zip(&last) {
        while !recorded(c, *k).await? && grace.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for k in keepers.iter_mut() {
        let _ = k.child.start_kill();
        let _ = k.child.wait().await;
    }
    println!("  soak over after {:.0}s; counting on chain", start.elapsed().as_secs_f64());
    let mut tallies = Vec::new();
    for (c, k) in chains.iter().zip(&last) {
        let p = c.wallet(0);
        let mut rec = Vec::with_capacity(*k as usize + 1);
        for i in 0..=*k {
            rec.push(recorded(c, i).await?);
        }
        let ex = executes(&p, c.deployment.market, 1).await?;
        tallies.push((c.chain.key.clone(), tally(&rec, &ex)));
    }
    let missed: usize = tallies.iter().map(|(_, t)| t.missed.len()).sum();
    let dups: u64 = tallies.iter().map(|(_, t)| t.duplicates).sum();
    let retries: u64 = tallies.iter().map(|(_, t)| t.retries).sum();
    let rec: u64 = tallies.iter().map(|(_, t)| t.recorded).sum();
    println!(
        "\nresults ({} keepers, {} chains, {:.1} min, {kills} kills):",
        keepers.len(),
        chains.len(),
        start.elapsed().as_secs_f64() / 60.0
    );
    for (key, t) in &tallies {
        println!(
            "  {key:<10} {:>5} checkpoints recorded, {} missed {:?}, {} duplicate sends {:?}, {} same-keeper retries",
            t.recorded,
            t.missed.len(),
            t.missed,
            t.duplicates,
            t.duplicated,
            t.retries
        );
    }
    println!("  checkpoints recorded: {rec}; missed: {missed}");
    println!("  duplicate sends (counted on chain): {dups}; reverted same-keeper retries (feed race): {retries}");
    println!(
        "  takeover after a kill ({} markets taken over): p50 {}, p99 {}, max {}; markets not taken over within {TAKEOVER_LIMIT:?}: {no_takeover}",
        takeovers.len(),
        fmt_ms(percentile(&takeovers, 50.0)),
        fmt_ms(percentile(&takeovers, 99.0)),
        fmt_ms(takeovers.iter().max().copied())
    );
    println!("  keeper exits not caused by the soak: {unexpected}");
    println!("  machine at the end: {}", loadgen::machine());
    Ok(SoakReport {
        kills,
        takeovers_ms: takeovers,
        not_taken_over: no_takeover,
        unexpected_exits: unexpected,
        chains: tallies,
    })
}

/// Each chain's checkpoint due now (from its head block's time).
async fn due(chains: &[Arc<LocalChain>], interval: u32) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(chains.len());
    for c in chains {
        let now = head_time(&c.wallet(0)).await?;
        out.push(now.saturating_sub(c.genesis()) / interval as u64);
    }
    Ok(out)
}

/// Whether every chain has recorded checkpoint `mark + n` (its `mark` from [`due`]).
async fn recorded_since(chains: &[Arc<LocalChain>], mark: &[u64], n: u64) -> Result<bool> {
    for (c, m) in chains.iter().zip(mark) {
        if !recorded(c, m + n).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether checkpoint `k` of market 1 is recorded on chain `c`.
async fn recorded(c: &LocalChain, k: u64) -> Result<bool> {
    let m = KronosMarket::new(c.deployment.market, c.wallet(0));
    Ok(m.getCheckpoint(U256::from(1), U256::from(k)).call().await?.recordedAt.to::<u64>() != 0)
}

async fn head_time(p: &DynProvider) -> Result<u64> {
    Ok(p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await?.context("no head block")?.header.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(block: u64, succeeded: bool, from: u8) -> Execute {
        Execute { block, index: 0, succeeded, from: Address::repeat_byte(from) }
    }

    #[test]
    fn the_tally_counts_missed_checkpoints_and_sends_after_or_beside_the_recording_one() {
        let recorded = [true, true, false, true, true, true];
        let mut e = BTreeMap::new();
        e.insert(0, vec![ex(1, true, 1)]);
        // A retry of the same keeper before its recording execute: not a duplicate.
        e.insert(1, vec![ex(2, false, 1), ex(3, true, 1)]);
        // Sent again after it was recorded, by the standby that took over.
        e.insert(3, vec![ex(5, true, 1), ex(6, false, 2)]);
        // Two keepers sent: the other's reverted one came first.
        e.insert(4, vec![ex(8, true, 2), ex(7, false, 1)]);
        // Never recorded but sent twice.
        e.insert(2, vec![ex(4, false, 1), ex(4, false, 2)]);
        e.insert(5, vec![ex(9, true, 3)]);
        let t = tally(&recorded, &e);
        assert_eq!(t.missed, vec![2]);
        assert_eq!(t.recorded, 5);
        assert_eq!(t.retries, 1);
        assert_eq!(t.duplicates, 3);
        assert_eq!(t.duplicated, vec![2, 3, 4]);
    }

    #[test]
    fn a_clean_record_tallies_to_nothing() {
        let mut e = BTreeMap::new();
        for k in 0..4 {
            e.insert(k, vec![ex(k + 1, true, (k % 2) as u8 + 1)]);
        }
        let t = tally(&[true; 4], &e);
        assert_eq!(t, ChainTally { recorded: 4, ..ChainTally::default() });
    }
}
