//! `kronos demo`: the whole system on local chains. One anvil per EVM chain of the catalogue (real chain ids,
//! accelerated clocks), the suite deployed with the deploy script, real BTC/USD candles replayed into Chainlink mock
//! feeds, local bettors, and the keeper driving every market on every chain — with the forecaster committing and
//! revealing its predictions. Live table while it runs, summary at the end; Ctrl-C stops everything cleanly. The eighth
//! chain, `solana`, is the kronos-market program in the local Solana RPC server (`crate::solana`), driven by the same
//! keeper through its `[[solana]]` driver.

pub mod bettors;
pub mod copytrade;
pub mod net;
pub mod out;
pub mod social;
pub mod solana_demo;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use anyhow::{Context, Result};
use kronos_common::{Bus, Catalogue};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::deploy::DeployPolicy;
use bettors::BetStats;
use kronos_keeper::config::{ChainConfig, Config, ForecasterConfig, SignerSource};
use kronos_keeper::engine::{Keeper, Overrides};
use kronos_keeper::scheduler::MarketStats;
use net::{accounts, NetOptions, ReplayCandles};
use solana_demo::SOLANA;

/// `kronos demo` options.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DemoArgs {
    /// Rounds to finish (settled or refunded) on every chain before stopping.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 12))]
    pub rounds: u64,
    /// Keep running until Ctrl-C.
    #[cfg_attr(feature = "clap", arg(long))]
    pub forever: bool,
    /// Chains to run (catalogue keys, comma-separated); default every EVM chain of the catalogue and `solana`. At
    /// least one EVM chain (the copy-trader's lead trades on the first one's candles).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub chains: Option<Vec<String>>,
    /// Round interval in chain seconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 300))]
    pub interval: u32,
    /// Chain seconds per block (chain time runs this many times faster than the wall clock at 1 block/s).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 30))]
    pub speed: u64,
    /// Wall seconds between blocks.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1.0))]
    pub block_time: f64,
    /// Run without the forecaster.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_forecast: bool,
    /// Address of the keeper's API during the demo.
    #[cfg_attr(feature = "clap", arg(long, default_value = "127.0.0.1:9464"))]
    pub listen: String,
    /// Seed of the bettors' choices.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 7))]
    pub seed: u64,
    /// A Telegram Bot API server (e.g. https://api.telegram.org/ or a local one): the bot joins the demo, with its
    /// token from KRONOS_TELEGRAM_TOKEN, commands for the --telegram-chat chats and alerts to them.
    #[cfg_attr(feature = "clap", arg(long))]
    pub telegram_url: Option<String>,
    /// Chat or user ids that may command the demo's bot and receive its alerts (with --telegram-url).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub telegram_chat: Vec<i64>,
}

/// Percentile (nearest rank) of unsorted values.
pub fn percentile(v: &[u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

fn mean(v: &[u64]) -> Option<u64> {
    (!v.is_empty()).then(|| v.iter().sum::<u64>() / v.len() as u64)
}

/// A stake amount in base units shown with three decimals of its unit (rounded down).
fn units(amount: &str, decimals: u8) -> String {
    let w: U256 = amount.parse().unwrap_or_default();
    let milli = if decimals >= 3 {
        w / U256::from(10u64).pow(U256::from(decimals - 3))
    } else {
        w * U256::from(10u64).pow(U256::from(3 - decimals))
    };
    let k = U256::from(1000u64);
    format!("{}.{:03}", milli / k, (milli % k).to::<u64>())
}

/// Everything the demo runs.
pub struct Demo {
    pub chains: Vec<Arc<net::LocalChain>>,
    pub keeper_stats: Vec<Arc<Mutex<MarketStats>>>,
    pub bets: BTreeMap<String, Arc<Mutex<BetStats>>>,
    pub store: kronos_keeper::store::Store,
    pub publisher: Option<Arc<kronos_keeper::publisher::Publisher>>,
    pub db: String,
    /// Decimals of each chain's stake: 18 for the native coin, the token's own otherwise.
    pub stake_decimals: BTreeMap<String, u8>,
    /// The local exchange, its simulated lead and the paper copy-trader following it.
    pub copytrade: Arc<copytrade::CopyDemo>,
    /// The Telegram bot's address (`/health`), when it joined.
    pub telegram: Option<String>,
    /// The social monitor: the fixture feeds and the keeper's signals from its `/ws`.
    pub social: social::SocialDemo,
    /// The Solana chain, when it runs.
    pub solana: Option<solana_demo::SolanaDemo>,
}

/// Starts the network, deploys, builds the keeper and starts every task. Returns the running demo and the task set.
pub async fn start(args: &DemoArgs, cancel: &CancellationToken, tasks: &mut tokio::task::JoinSet<()>) -> Result<Demo> {
    let root = crate::deploy::repo_root()?;
    let cat = Catalogue::load(root.join("config/chains.toml"))?;
    let policy = DeployPolicy::load(&root.join("config/deploy.toml"))?;
    let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv"))?);
    let wanted: Vec<String> = match &args.chains {
        Some(c) => c.clone(),
        None => cat.evm_chains().map(|c| c.key.clone()).chain([SOLANA.to_string()]).collect(),
    };
    let with_solana = wanted.iter().any(|k| k == SOLANA);
    let chain_keys: Vec<String> = wanted.into_iter().filter(|k| k != SOLANA).collect();
    anyhow::ensure!(!chain_keys.is_empty(), "--chains: no EVM chain given (the demo needs at least one)");
    anyhow::ensure!(args.interval >= 60, "--interval must be at least 60 chain seconds (the contract's minimum)");
    anyhow::ensure!(args.speed >= 1 && args.block_time > 0.0, "--speed and --block-time must be positive");
    let opts = NetOptions {
        chains: chain_keys.clone(),
        block_time: args.block_time,
        seconds_per_block: args.speed,
        interval: args.interval,
    };
    let t0 = Instant::now();
    crate::say!(
        "starting {} local chains ({}), each block {} chain seconds every {} s…",
        chain_keys.len(),
        chain_keys.join(", "),
        args.speed,
        args.block_time
    );
    let chains: Vec<Arc<net::LocalChain>> =
        net::start(&root, &cat, &policy, &opts, &candles).await?.into_iter().map(Arc::new).collect();
    crate::say!(
        "deployed with contracts-evm/script/Deploy.s.sol in {:.1}s — same addresses on every chain:\n  KronosMarket       {}\n  PredictionRegistry {}",
        t0.elapsed().as_secs_f64(),
        chains[0].deployment.market,
        chains[0].deployment.registry
    );
    for c in &chains {
        anyhow::ensure!(
            c.deployment.market == chains[0].deployment.market,
            "CREATE2 addresses differ on {}",
            c.chain.key
        );
    }

    let replay = Arc::new(ReplayCandles::new(candles.clone()));
    for c in &chains {
        replay.register(&c.chain.key, c.genesis(), args.interval as u64, c.candle_base);
    }
    let model = root.join(kronos_keeper::config::SHIPPED_MODEL);
    let forecast = !args.no_forecast && model.join("kronos.json").is_file();
    if !args.no_forecast && !forecast {
        crate::say!("(no trained model at {}: running without the forecaster)", model.display());
    }
    std::fs::create_dir_all(root.join("data/runs"))?;
    let db = format!("data/runs/demo-{}.db", kronos_common::time::now_s());
    let solana = match with_solana {
        true => Some(solana_demo::start(args, &root, &db, &candles, &replay, chains.len()).await?),
        false => None,
    };
    let cfg = Config {
        file: "(demo)".into(),
        catalogue: cat.clone(),
        store: format!("sqlite://{}", root.join(&db).display()),
        listen: args.listen.clone(),
        signer: SignerSource::Env("(demo)".into()),
        poll_ms: 250,
        keeper_id: "demo".into(),
        lease: Default::default(),
        // The dApp served on this listener opens /ws from its own origin.
        api: kronos_common::http_guard::Limits { allowed_origins: dapp_origins(&args.listen), ..Default::default() },
        api_token: None,
        publish_forecasts: true, // the dApp's AI mode (Follow / Against) shows each forecast once committed
        forecaster: forecast.then(|| ForecasterConfig {
            enabled: true,
            model: model.clone(),
            samples: 32,
            candles: None,
            precision: Default::default(),
        }),
        chains: chains
            .iter()
            .map(|c| ChainConfig {
                chain: c.chain.clone(),
                rpc: vec![c.url.parse().expect("url")],
                market: c.deployment.market,
                registry: Some(c.deployment.registry),
                markets: Some(vec![1]),
                confirmations: 1,
                max_fee_wei: U256::from(1_000_000_000_000u64),
                max_priority_fee_wei: U256::from(10_000_000_000u64),
                bump_after_s: 5,
                bump_percent: 12,
                local: true,
                pairs: [(1u64, "BTC/USD".to_string())].into_iter().collect(),
            })
            .collect(),
        solana: solana.iter().map(|s| solana_demo::keeper_config(&cat, &s.chain, forecast)).collect::<Result<_>>()?,
    };
    let bus = Bus::new(8192);
    let signer = chains[0].keys[accounts::KEEPER].clone();
    let keeper =
        Keeper::build(&cfg, signer, bus.clone(), Overrides { candles: Some(replay.clone()), no_api: false }).await?;
    let keeper_stats = keeper.stats.clone();
    let store = keeper.store.clone();
    let publisher = keeper.publisher.clone();
    {
        let c = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = keeper.run(c).await {
                tracing::error!(error = %format!("{e:#}"), "keeper stopped");
            }
        });
    }
    let poll = Duration::from_millis(250);
    // The copy-trader: the local exchange's simulated lead trades on the first chain's candles, a paper copy-trader
    // follows it on the same bus as the keeper.
    let base = chains[0].candle_base;
    let seed_close = candles.get(base.saturating_sub(1)).map(|c| c.close).context("no candle before the replay")?;
    let ct_store = root.join(db.replace(".db", "-copytrade.db"));
    crate::say!("starting the local exchange, its simulated lead and a paper copy-trader…");
    let copy = Arc::new(
        copytrade::CopyDemo::start(&bus, &ct_store, seed_close, cancel, tasks)
            .await
            .context("starting the copy-trader")?,
    );
    crate::say!(
        "local exchange {} with a simulated lead trading {} on {}'s candles; paper copy-trader API http://{}/api/status",
        copy.exchange.rest_url(),
        crate::exchange::LEAD_SYMBOL,
        chains[0].chain.key,
        copy.api
    );
    tasks.spawn(copytrade::drive(
        copy.clone(),
        chains[0].clone(),
        replay.clone(),
        args.interval as u64,
        poll,
        cancel.clone(),
    ));
    let telegram = match &args.telegram_url {
        Some(url) => {
            let state = root.join(db.replace(".db", "-telegram.json"));
            let keeper_api = format!("http://{}", args.listen);
            let settings =
                copytrade::DemoBot { url, chats: &args.telegram_chat, keeper_api: &keeper_api, state_file: &state };
            let bot = copytrade::start_telegram(&settings, &copy, &bus, cancel, tasks);
            Some(bot.await?)
        }
        None => None,
    };
    // The social monitor: the bundled fixture feeds (offline) and the keeper's signals mirrored from its /ws.
    let social = social::SocialDemo::start(
        &root,
        &root.join(db.replace(".db", "-social.db")),
        &format!("ws://{}/ws", args.listen),
        cancel,
        tasks,
    )
    .await?;
    crate::say!(
        "social monitor http://{}/api/social/items: fixture feeds from http://{}/ and the keeper's signals ({})",
        social.api,
        social.fixtures,
        social.keeper_source
    );
    let mut bets = BTreeMap::new();
    for (i, c) in chains.iter().enumerate() {
        tasks.spawn(net::replay(c.clone(), replay.clone(), args.interval as u64, poll, cancel.clone()));
        let s = Arc::new(Mutex::new(BetStats::default()));
        bets.insert(c.chain.key.clone(), s.clone());
        tasks.spawn(bettors::run(c.clone(), args.interval as u64, poll * 2, args.seed + i as u64, s, cancel.clone()));
    }
    if let Some(s) = &solana {
        s.spawn(args, poll, cancel, tasks);
    }
    let mut stake_decimals = BTreeMap::new();
    for c in &chains {
        let d = if c.token.is_zero() {
            18
        } else {
            let t = kronos_contracts::mocks::MockERC20::new(c.token, c.wallet(net::accounts::KEEPER));
            t.decimals().call().await.unwrap_or(18)
        };
        stake_decimals.insert(c.chain.key.clone(), d);
    }
    Ok(Demo {
        chains,
        keeper_stats,
        bets,
        store,
        publisher,
        db,
        stake_decimals,
        copytrade: copy,
        telegram,
        social,
        solana,
    })
}

/// The browser origins of the dApp the demo's keeper serves on `listen`: `http://<listen>`, and
/// `http://localhost:<port>` too when it listens on loopback.
fn dapp_origins(listen: &str) -> Vec<String> {
    let mut o = vec![format!("http://{listen}")];
    if let Some(port) = listen.strip_prefix("127.0.0.1:") {
        o.push(format!("http://localhost:{port}"));
    }
    o
}

fn table(d: &Demo) -> String {
    let mut s = format!(
        "{:<10} {:>5} {:>12} {:>12} {:>17} {:<26} {:>6} {:>6} {:>4}/{:<4}\n",
        "chain", "round", "last lock", "last close", "pool up/down", "last result", "delay", "P(up)", "done", "miss"
    );
    for st in &d.keeper_stats {
        let m = st.lock().clone();
        if m.chain == SOLANA && d.solana.is_some() {
            continue; // its own row below, from the chain
        }
        let dec = d.stake_decimals.get(&m.chain).copied().unwrap_or(18);
        let pool = format!(
            "{}/{}",
            units(if m.pool_up_wei.is_empty() { "0" } else { &m.pool_up_wei }, dec),
            units(if m.pool_down_wei.is_empty() { "0" } else { &m.pool_down_wei }, dec)
        );
        s += &format!(
            "{:<10} {:>5} {:>12} {:>12} {:>17} {:<26} {:>6} {:>6} {:>4}/{:<4}\n",
            m.chain,
            m.betting_epoch,
            m.last_lock_price.map(|p| format!("{:.2}", p.to_f64_lossy())).unwrap_or_else(|| "-".into()),
            m.last_close_price.map(|p| format!("{:.2}", p.to_f64_lossy())).unwrap_or_else(|| "-".into()),
            pool,
            m.last_result,
            m.delays.last().map(|d| format!("{d} blk")).unwrap_or_else(|| "-".into()),
            m.last_p_up.map(|p| format!("{p:.3}")).unwrap_or_else(|| "-".into()),
            m.settled + m.cancelled,
            m.missed
        );
    }
    if let Some(sol) = &d.solana {
        let p_up = d
            .publisher
            .as_ref()
            .and_then(|p| p.last.lock().get(&(SOLANA.to_string(), crate::solana::SOL_MARKET_ID)).map(|x| x.p_up));
        s += &sol.table_row(p_up);
    }
    s += &d.copytrade.line();
    s
}

async fn summary(d: &Demo, elapsed: Duration) -> String {
    let mut s = format!("\nsummary after {:.0}s\n", elapsed.as_secs_f64());
    s += &format!(
        "{:<10} {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "chain",
        "settled",
        "refunded",
        "missed",
        "delay p50",
        "delay p99",
        "execute",
        "commit",
        "reveal",
        "bet",
        "claim"
    );
    let (mut all_delays, mut tot) = (Vec::new(), (0u64, 0u64, 0u64));
    for st in &d.keeper_stats {
        let m = st.lock().clone();
        if m.chain == SOLANA && d.solana.is_some() {
            continue; // its own row below, from the chain
        }
        let txs = d.store.all_txs(&m.chain).await.unwrap_or_default();
        let gas = |prefix: &str| -> Vec<u64> {
            txs.iter()
                .filter(|t| t.action.starts_with(prefix) && t.status == kronos_keeper::store::TxStatus::Confirmed)
                .filter_map(|t| t.gas_used.map(|g| g as u64))
                .collect()
        };
        let b = d.bets.get(&m.chain).map(|b| b.lock().clone()).unwrap_or_default();
        let f = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<10} {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            m.chain,
            m.settled,
            m.cancelled,
            m.missed,
            f(percentile(&m.delays, 50.0)),
            f(percentile(&m.delays, 99.0)),
            f(mean(&m.execute_gas)),
            f(mean(&gas("commit:"))),
            f(mean(&gas("reveal:"))),
            f(mean(&b.bet_gas)),
            f(mean(&b.claim_gas)),
        );
        all_delays.extend(m.delays.iter().copied());
        tot = (tot.0 + m.settled, tot.1 + m.cancelled, tot.2 + m.missed);
    }
    let mut solana_note = String::new();
    if let Some(sol) = &d.solana {
        let (row, counts, note) = sol.summary_row().await;
        s += &row;
        tot = (tot.0 + counts.settled, tot.1 + counts.refunded, tot.2 + counts.missed);
        solana_note = note;
    }
    s += &format!(
        "{:<10} {:>8} {:>9} {:>7} {:>10} {:>10}   (delay: blocks from the first block after a lock/close time to the block recording it, EVM chains; gas: mean per call)\n",
        "all",
        tot.0,
        tot.1,
        tot.2,
        percentile(&all_delays, 50.0).map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
        percentile(&all_delays, 99.0).map(|x| x.to_string()).unwrap_or_else(|| "-".into())
    );
    s += &solana_note;
    // The Solana record has its own section below, read from the chain (with its expired commitments).
    let recs: Vec<_> = d
        .store
        .track_records()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !(r.chain == SOLANA && d.solana.is_some()))
        .collect();
    if !recs.is_empty() {
        let (mut hits, mut scored, mut brier) = (0i64, 0i64, 0f64);
        s += "\nforecaster track record (on-chain, PredictionRegistry):\n";
        for r in &recs {
            let sc = r.hits + r.misses;
            let b: f64 = r.brier_sum.parse::<f64>().unwrap_or(0.0) / 1e8;
            s += &format!(
                "  {:<10} committed {:>3}  scored {:>3}  hits {:>3}  voided {:>2}  hit rate {:>6}  mean Brier {}\n",
                r.chain,
                r.committed,
                sc,
                r.hits,
                r.voided,
                if sc > 0 { format!("{:.1}%", 100.0 * r.hits as f64 / sc as f64) } else { "-".into() },
                if sc > 0 { format!("{:.4}", b / sc as f64) } else { "-".into() }
            );
            hits += r.hits;
            scored += sc;
            brier += b;
        }
        if scored > 0 {
            let [lo, hi] = kronos_forecast::metrics::wilson95(hits as usize, scored as usize);
            s += &format!(
                "  all        hits {hits}/{scored} = {:.1}% (95% interval {:.1}%-{:.1}%), mean Brier {:.4} (0.25 = a coin's)\n",
                100.0 * hits as f64 / scored as f64,
                lo * 100.0,
                hi * 100.0,
                brier / scored as f64
            );
        }
    }
    if let Some(sol) = &d.solana {
        s += &sol.record_section().await;
    }
    s += &d.copytrade.section().await;
    s += &d.social.section().await;
    if let Some(t) = &d.telegram {
        s += &format!("telegram bot: {t}\n");
    }
    s += &format!("\nstore: {} (rounds, transactions, events, predictions)\n", d.db);
    s
}

/// Runs the demo to the end.
pub async fn run(args: DemoArgs) -> Result<()> {
    // With the Solana chain, the program's own logs (printed to stdout by the native runtime) go to a file (`out`).
    if args.chains.as_ref().is_none_or(|c| c.iter().any(|k| k == SOLANA)) {
        let runs = crate::deploy::repo_root()?.join("data/runs");
        std::fs::create_dir_all(&runs)?;
        let log = runs.join(format!("demo-{}-stdout.log", kronos_common::time::now_s()));
        out::others_to(&log)?;
        crate::say!("the Solana program's logs (and anything else printed to stdout): {}", log.display());
    }
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let demo = tokio::select! {
        d = start(&args, &cancel, &mut tasks) => d.context("starting the demo")?,
        _ = tokio::signal::ctrl_c() => { cancel.cancel(); return Ok(()); }
    };
    crate::say!("keeper API: http://{0}/health  http://{0}/metrics  ws://{0}/ws", args.listen);
    crate::say!("dApp: http://{}/  (every chain's markets, bets and claims from a browser wallet)", args.listen);
    let tty = out::is_terminal();
    let run_started = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    loop {
        let done = demo.keeper_stats.iter().all(|s| {
            let s = s.lock();
            s.settled + s.cancelled >= args.rounds
        }) && demo.solana.as_ref().is_none_or(|s| s.done(args.rounds));
        if done && !args.forever {
            break;
        }
        let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(10) };
        if last_print.elapsed() >= every {
            if tty {
                out::print("\x1b[2J\x1b[H");
            }
            crate::say!(
                "Kronos demo — {:.0}s — target {} rounds per chain{}",
                run_started.elapsed().as_secs_f64(),
                args.rounds,
                if args.forever { " (--forever)" } else { "" }
            );
            out::print(&table(&demo));
            last_print = Instant::now();
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { crate::say!("\ninterrupted: stopping the keeper and the chains…"); break; }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    out::print(&table(&demo));
    out::print(&summary(&demo, started.elapsed()).await);
    drop(demo);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::units;

    #[test]
    fn stakes_show_in_their_own_decimals() {
        assert_eq!(units("1500000000000000000", 18), "1.500");
        assert_eq!(units("2345678", 6), "2.345");
        assert_eq!(units("0", 6), "0.000");
        assert_eq!(units("7", 0), "7.000");
        assert_eq!(units("123456789012345678901234567890", 18), "123456789012.345");
    }
}
