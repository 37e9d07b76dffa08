//! `kronos bench`: the keeper over many rounds on every EVM chain of the catalogue (local anvils, accelerated
//! clocks). The keeper runs as its own process (`kronos run`) so that its CPU time is measured alone; the figures
//! come from the keeper's store and the chains. `--api-load` keeps the keeper's API under HTTP load meanwhile.
//!
//! `kronos bench api`: the keeper's HTTP API under load (closed loop at fixed concurrency, open loop at fixed rates),
//! the real keeper against local chains. `kronos bench ws`: WebSocket subscribers of the keeper's API, signals at a
//! fixed rate, delivery latency, memory per connection, and slow readers. The server and the load generator are
//! pinned to one core each ([`crate::loadgen`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kronos_common::Catalogue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::demo::net::{self, accounts, NetOptions, ReplayCandles};
use crate::demo::percentile;
use crate::deploy::DeployPolicy;
use crate::loadgen::{self, http, Latencies};

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(args_conflicts_with_subcommands = true))]
pub struct BenchArgs {
    #[cfg_attr(feature = "clap", command(subcommand))]
    pub what: Option<BenchCommand>,
    #[cfg_attr(feature = "clap", command(flatten))]
    pub settle: SettleArgs,
}

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Subcommand))]
pub enum BenchCommand {
    /// The keeper's HTTP API under load: read endpoints at fixed concurrency (closed loop) and at fixed rates (open
    /// loop, latency from the scheduled send time); throughput and p50/p99/p99.9, server and generator on one core
    /// each.
    Api(ApiBenchArgs),
    /// WebSocket subscribers of the keeper's API: connections held, delivery latency from publish to receipt at a
    /// fixed signal rate, memory per connection, and what happens to readers that do not keep up.
    Ws(WsBenchArgs),
    /// Several keepers on one PostgreSQL store, the leader killed with SIGKILL every `--kill-every` and restarted:
    /// missed checkpoints and duplicate sends counted on chain, takeover time p50/p99 (issue 18).
    Soak(crate::soak::SoakArgs),
    /// The server side of `kronos bench ws` (the keeper's API with a publisher of timed signals in place of the
    /// chains); started by it.
    #[cfg_attr(feature = "clap", command(hide = true))]
    WsServer(WsServerArgs),
}

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct SettleArgs {
    /// Rounds to finish in total across the chains.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1000))]
    pub rounds: u64,
    /// Chains (catalogue keys, comma-separated); default every EVM chain and `solana` (driven by a keeper process of
    /// its own, its figures reported apart, delays in slots).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub chains: Option<Vec<String>>,
    /// Wall seconds between blocks.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.5))]
    pub block_time: f64,
    /// Chain seconds per block.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 20))]
    pub speed: u64,
    /// Round interval in chain seconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 60))]
    pub interval: u32,
    /// Keep the keeper's API under HTTP load meanwhile (closed loop on the cached reads); the keeper is pinned to
    /// one core and the load generator to another, and both figures are printed.
    #[cfg_attr(feature = "clap", arg(long))]
    pub api_load: bool,
    /// Connections of the API load (with --api-load).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub api_connections: usize,
}

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ApiBenchArgs {
    /// Load an API already running at this address (`http://127.0.0.1:9464`) instead of starting local chains and
    /// a keeper.
    #[cfg_attr(feature = "clap", arg(long))]
    pub url: Option<String>,
    /// Chains of the local keeper (catalogue keys, comma-separated).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', default_value = "base"))]
    pub chains: Vec<String>,
    /// Closed-loop connection counts.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', default_value = "1,16,64"))]
    pub concurrency: Vec<usize>,
    /// Open-loop rates (requests per second) on the cached reads.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', default_value = "5000,10000,20000"))]
    pub rates: Vec<f64>,
    /// Connections of the open-loop runs.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 64))]
    pub open_connections: usize,
    /// Seconds each run is measured.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2.0))]
    pub duration: f64,
    /// Seconds each run sends before it is measured.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.3))]
    pub warmup: f64,
    /// Core of the keeper process.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub server_core: usize,
    /// Core of the load generator.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub client_core: usize,
    /// A tiny run (a few hundred requests per run) that checks the bench works, measuring nothing worth keeping.
    #[cfg_attr(feature = "clap", arg(long))]
    pub quick: bool,
}

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct WsBenchArgs {
    /// Subscribers connected and held.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10_000))]
    pub subscribers: usize,
    /// Signals published per second while delivery is measured.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10.0))]
    pub rate: f64,
    /// Seconds delivery is measured.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10.0))]
    pub duration: f64,
    /// Readers that never read, among fast ones, while large signals flood them (after the main run).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10))]
    pub slow: usize,
    /// Seconds of the slow-reader flood.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 6.0))]
    pub flood_seconds: f64,
    /// Cores of the server process (`0`, `0-3`, `0,2`): its runtime gets one worker thread, and the hub one shard of
    /// subscribers, per core.
    #[cfg_attr(feature = "clap", arg(long, default_value = "0"))]
    pub server_core: loadgen::Cores,
    /// Cores of the subscribers (one thread each).
    #[cfg_attr(feature = "clap", arg(long, default_value = "1"))]
    pub client_core: loadgen::Cores,
    /// A tiny run (a hundred subscribers, a few seconds) that checks the bench works.
    #[cfg_attr(feature = "clap", arg(long))]
    pub quick: bool,
}

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct WsServerArgs {
    /// Address to listen on; the address bound is printed as `listening ADDR`.
    #[cfg_attr(feature = "clap", arg(long, default_value = "127.0.0.1:0"))]
    pub listen: String,
    /// The subscriber cap (`[api] max_ws_subscribers`).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10_000))]
    pub max_subscribers: usize,
    /// Time one message may take to go out before its reader is dropped (`[api] ws_send_timeout_ms`).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 5000))]
    pub send_timeout_ms: u64,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match a.what {
        None => rt()?.block_on(bench(a.settle)),
        Some(BenchCommand::Api(b)) => rt()?.block_on(api_bench(b)),
        Some(BenchCommand::Ws(b)) => rt()?.block_on(ws_bench(b)),
        Some(BenchCommand::Soak(b)) => rt()?.block_on(crate::soak::soak(b)),
        Some(BenchCommand::WsServer(b)) => rt()?.block_on(ws_server(b)),
    }
}

/// Local chains and a keeper process (`kronos run`) on them, its API on a loopback port.
struct LocalKeeper {
    chains: Vec<Arc<net::LocalChain>>,
    child: tokio::process::Child,
    pid: u32,
    api: SocketAddr,
    db: PathBuf,
    cancel: CancellationToken,
    dir: tempfile::TempDir,
}

impl LocalKeeper {
    /// Starts the chains and the keeper; with `core` the keeper runs on that core only; with `open_api` its API's
    /// per-address rate is lifted (a load generator is one address).
    async fn start(opts: &NetOptions, core: Option<usize>, open_api: bool) -> Result<LocalKeeper> {
        let root = crate::deploy::repo_root()?;
        let (chains, cancel) = start_chains(&root, opts).await?;
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("bench.db");
        let port = loadgen::free_port()?;
        let mut cfg = keeper_toml(&root, &chains, &format!("sqlite://{}", db.display()), port, "bench", "");
        if open_api {
            cfg += "\n[api]\nrate_limit_per_s = 1000000\nrate_limit_burst = 1000000\nmax_connections_per_ip = 0\nmax_ws_per_ip = 0\n";
        }
        let cfg_path = dir.path().join("keeper.toml");
        std::fs::write(&cfg_path, cfg)?;
        let key = format!("0x{}", alloy::hex::encode(chains[0].keys[accounts::KEEPER].to_bytes()));
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.current_dir(&root)
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("KRONOS_BENCH_KEY", key)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(core) = core {
            loadgen::pin_command(&mut cmd, &[core]);
        }
        let child = cmd.spawn().context("starting the keeper process")?;
        let pid = child.id().unwrap_or_default();
        Ok(LocalKeeper { chains, child, pid, api: ([127, 0, 0, 1], port).into(), db, cancel, dir })
    }

    /// Waits until the API answers `path` with a JSON array or object holding at least one row (`/api/rounds`).
    async fn wait_for_rows(&mut self, path: &str, deadline: Duration) -> Result<()> {
        let url = format!("http://{}{path}", self.api);
        let t0 = Instant::now();
        let mut said = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!("the keeper process exited early: {status}");
            }
            if let Ok(r) = reqwest::get(&url).await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v.as_array().is_some_and(|a| !a.is_empty()) {
                        return Ok(());
                    }
                }
            }
            if said.elapsed() > Duration::from_secs(5) {
                println!("  waiting for the keeper to record rounds ({:.0}s)", t0.elapsed().as_secs_f64());
                said = Instant::now();
            }
            anyhow::ensure!(t0.elapsed() < deadline, "the keeper recorded no round within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the keeper and the chains; the returned folder holds the keeper's store until it is dropped.
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.cancel.cancel();
        self.dir
    }
}

/// Starts the local chains of `opts` (the suite deployed) and replays candles into their feeds until the returned
/// token is cancelled.
pub(crate) async fn start_chains(
    root: &std::path::Path,
    opts: &NetOptions,
) -> Result<(Vec<Arc<net::LocalChain>>, CancellationToken)> {
    let cat = Catalogue::load(root.join("config/chains.toml"))?;
    let policy = DeployPolicy::load(&root.join("config/deploy.toml"))?;
    let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv"))?);
    let chains: Vec<Arc<net::LocalChain>> =
        net::start(root, &cat, &policy, opts, &candles).await?.into_iter().map(Arc::new).collect();
    let replay = Arc::new(ReplayCandles::new(candles));
    let cancel = CancellationToken::new();
    for c in &chains {
        replay.register(&c.chain.key, c.genesis(), opts.interval as u64, c.candle_base);
        tokio::spawn(net::replay(
            c.clone(),
            replay.clone(),
            opts.interval as u64,
            Duration::from_millis(100),
            cancel.clone(),
        ));
    }
    Ok((chains, cancel))
}

/// A keeper configuration (TOML) driving market 1 of every chain in `chains` on store `store`, its API on loopback
/// port `port`, its signer from `KRONOS_BENCH_KEY`; `keeper_extra` is appended to the `[keeper]` table.
pub(crate) fn keeper_toml(
    root: &std::path::Path,
    chains: &[Arc<net::LocalChain>],
    store: &str,
    port: u16,
    keeper_id: &str,
    keeper_extra: &str,
) -> String {
    let mut cfg = format!(
        "[keeper]\ncatalogue = \"{}\"\nstore = \"{store}\"\nlisten = \"127.0.0.1:{port}\"\nsigner = {{ env = \"KRONOS_BENCH_KEY\" }}\npoll_ms = 100\nkeeper_id = \"{keeper_id}\"\n{keeper_extra}",
        root.join("config/chains.toml").display(),
    );
    for c in chains {
        cfg += &format!(
            "\n[[chain]]\nname = \"{}\"\nrpc = [\"{}\"]\nmarket = \"{}\"\nmarkets = [1]\nconfirmations = 1\nbump_after_s = 3\nlocal = true\npairs = {{ \"1\" = \"BTC/USD\" }}\n",
            c.chain.key, c.url, c.deployment.market
        );
    }
    cfg
}

/// Runs `f` on a thread of its own pinned to `core` (when given), in a single-threaded runtime: the load generator
/// then uses that one core.
async fn on_core<T, F, Fut>(core: Option<usize>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    on_cores(core.map(|c| vec![c]), f).await
}

/// [`on_core`] on a set of cores: with more than one, a runtime of one worker thread per core, all pinned to the set.
async fn on_cores<T, F, Fut>(cores: CoreSet, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("kronos-loadgen".into()).spawn(move || {
        let r = (|| {
            if let Some(c) = &cores {
                loadgen::pin_this_thread(c)?;
            }
            let rt = match cores.as_ref().map_or(1, Vec::len) {
                1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
                n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
            };
            Ok(rt.block_on(f()))
        })();
        let _ = tx.send(r);
    })?;
    rx.await.context("the load generator's thread ended without a result")?
}

/// The cores of a server and a generator ([`core_sets`] of one core each, which must differ); `None` for both on a
/// one-core machine.
fn pinning(server: usize, client: usize) -> Result<(Option<usize>, Option<usize>)> {
    let (s, c) = core_sets(&loadgen::Cores(vec![server]), &loadgen::Cores(vec![client]))?;
    anyhow::ensure!(s.is_none() || server != client, "--server-core and --client-core must differ");
    Ok((s.map(|_| server), c.map(|_| client)))
}

/// Cores a process is pinned to (`None`: not pinned).
type CoreSet = Option<Vec<usize>>;

/// The core sets of a server and its load generator (the WebSocket bench's subscribers), checked against the machine;
/// `None` for both on a one-core machine. The sets may overlap (the two then share those cores).
fn core_sets(server: &loadgen::Cores, client: &loadgen::Cores) -> Result<(CoreSet, CoreSet)> {
    let n = loadgen::cores();
    if n < 2 {
        println!("  one core only: server and load generator are not pinned");
        return Ok((None, None));
    }
    for (flag, set) in [("--server-core", server), ("--client-core", client)] {
        anyhow::ensure!(!set.0.is_empty(), "{flag}: no core named");
        if let Some(c) = set.0.iter().find(|c| **c >= n) {
            anyhow::bail!("{flag}: core {c} does not exist (this machine has {n})");
        }
    }
    Ok((Some(server.0.clone()), Some(client.0.clone())))
}

fn cores_name(c: &CoreSet) -> String {
    c.as_ref().map(|c| loadgen::Cores(c.clone()).to_string()).unwrap_or_else(|| "(none)".into())
}

fn core_name(c: Option<usize>) -> String {
    c.map(|c| c.to_string()).unwrap_or_else(|| "(none)".into())
}

fn ms(d: f64) -> String {
    format!("{d:.3}")
}

/// `kronos bench api`.
async fn api_bench(mut a: ApiBenchArgs) -> Result<()> {
    anyhow::ensure!(a.duration > 0.0, "--duration must be above 0");
    anyhow::ensure!(a.warmup >= 0.0, "--warmup must be 0 or more");
    anyhow::ensure!(a.concurrency.iter().all(|c| *c >= 1), "--concurrency: each count must be at least 1");
    anyhow::ensure!(a.rates.iter().all(|r| *r > 0.0), "--rates: each rate must be above 0");
    anyhow::ensure!(a.open_connections >= 1, "--open-connections must be at least 1");
    if a.quick {
        a.concurrency = vec![1, 4];
        a.rates = vec![200.0];
        a.open_connections = 4;
        a.duration = 0.3;
        a.warmup = 0.05;
    }
    println!("bench api on {}", loadgen::machine());
    let (server_core, client_core) = pinning(a.server_core, a.client_core)?;
    let (addr, keeper, chain) = match &a.url {
        Some(u) => {
            let url = url::Url::parse(u).with_context(|| format!("--url: '{u}' is not a URL"))?;
            anyhow::ensure!(url.scheme() == "http", "--url: only http:// is supported");
            let addr = url
                .socket_addrs(|| Some(80))
                .with_context(|| format!("--url: cannot resolve '{u}'"))?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("--url: '{u}' resolves to no address"))?;
            (addr, None, None)
        }
        None => {
            let opts = NetOptions { chains: a.chains.clone(), block_time: 0.5, seconds_per_block: 20, interval: 60 };
            println!(
                "  starting {} local chain(s) and the keeper (pinned to core {})",
                a.chains.len(),
                core_name(server_core)
            );
            let mut k = LocalKeeper::start(&opts, server_core, true).await?;
            k.wait_for_rows("/api/rounds?limit=1", Duration::from_secs(180)).await?;
            let chain = k.chains.first().map(|c| c.chain.key.clone());
            (k.api, Some(k), chain)
        }
    };
    let pid = keeper.as_ref().map(|k| k.pid);
    let mut endpoints = vec!["/api/markets".to_string(), "/api/rounds?limit=50".to_string()];
    if let Some(c) = &chain {
        endpoints.push(format!("/api/rounds?chain={c}&market=1&limit=50"));
    }
    endpoints.extend(["/api/predictions?limit=50".to_string(), "/health".to_string(), "/metrics".to_string()]);
    let cached: Vec<String> = endpoints.iter().filter(|e| e.starts_with("/api/")).cloned().collect();
    println!(
        "\nclosed loop ({}s per run after {}s of warm-up; server CPU is the keeper's, 100% = one core):",
        a.duration, a.warmup
    );
    println!(
        "  {:<44} {:>5} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "endpoint", "conns", "requests", "errors", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "server"
    );
    let result = run_api_load(addr, pid, client_core, endpoints, cached, &a).await;
    if let Some(k) = keeper {
        drop(k.stop().await);
    }
    result
}

/// Runs the closed-loop runs (each of `endpoints` at each concurrency) and the open-loop runs (the `cached` reads in
/// turn at each rate) of `a` against the keeper at `addr` (process `pid`, for its CPU share), from `client_core`.
async fn run_api_load(
    addr: SocketAddr,
    pid: Option<u32>,
    client_core: Option<usize>,
    endpoints: Vec<String>,
    cached: Vec<String>,
    a: &ApiBenchArgs,
) -> Result<()> {
    let (warmup, duration) = (Duration::from_secs_f64(a.warmup), Duration::from_secs_f64(a.duration));
    let concurrency = a.concurrency.clone();
    let rates = a.rates.clone();
    let open_conns = a.open_connections;
    let cpu = move || pid.and_then(loadgen::cpu_seconds);
    on_core(client_core, move || async move {
        let mut total = 0u64;
        for e in &endpoints {
            for &c in &concurrency {
                let mode = http::Mode::Closed { conns: c };
                let (o, server) = measured_run(addr, std::slice::from_ref(e), mode, warmup, duration, cpu).await;
                total += o.ok;
                println!("  {:<44} {:>5} {}", e, c, figures(&o, &server));
            }
        }
        println!(
            "\nopen loop on the cached reads ({} in turn), {open_conns} connections, latency from each request's scheduled send time:",
            cached.join(", ")
        );
        println!(
            "  (lag: scheduled time to the request's write, the generator's queue; service: write to answer; waits: \
             seconds the keeper and the generator were runnable but not running, other processes on their cores)"
        );
        println!(
            "  {:>8} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "rate/s",
            "answered",
            "errors",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "server",
            "lag p99",
            "svc p99",
            "srv wait",
            "gen wait"
        );
        let waits = move || (pid.and_then(loadgen::wait_seconds), loadgen::wait_seconds(std::process::id()));
        for &r in &rates {
            let mode = http::Mode::Open { conns: open_conns, rate: r };
            let w0 = waits();
            let (o, server) = measured_run(addr, &cached, mode, warmup, duration, cpu).await;
            let w1 = waits();
            let d = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| format!("{:.2}s", b - a));
            total += o.ok;
            println!(
                "  {:>8.0} {} {:>8} {:>8} {:>8} {:>8}",
                r,
                figures(&o, &server),
                ms(o.lag.ms(99.0)),
                ms(o.service.ms(99.0)),
                d(w0.0, w1.0).unwrap_or_else(|| "-".into()),
                d(w0.1, w1.1).unwrap_or_else(|| "-".into()),
            );
        }
        println!("\n{total} requests answered in all");
        anyhow::ensure!(total > 0, "no request was answered");
        Ok(())
    })
    .await?
}

/// One run of `paths` at `addr` as `mode` says, and the server's share of a core over it (`cpu` reads the server's
/// CPU seconds; "-" when it cannot).
async fn measured_run(
    addr: SocketAddr,
    paths: &[String],
    mode: http::Mode,
    warmup: Duration,
    duration: Duration,
    cpu: impl Fn() -> Option<f64>,
) -> (http::Outcome, String) {
    let before = cpu();
    let t = Instant::now();
    let o = http::run(addr, paths, mode, warmup, duration).await;
    let wall = t.elapsed();
    let server = match (before, cpu()) {
        (Some(b), Some(a)) => format!("{:.0}%", 100.0 * (a - b) / (wall + Duration::from_millis(20)).as_secs_f64()),
        _ => "-".into(),
    };
    (o, server)
}

/// The figures of a row of `kronos bench api` after its first columns: requests, errors, req/s, p50/p99/p99.9/max
/// latency and the server's share of a core.
fn figures(o: &http::Outcome, server: &str) -> String {
    let l = &o.latencies;
    format!(
        "{:>9} {:>6} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>7}",
        o.ok,
        o.errors,
        o.per_s(),
        ms(l.ms(50.0)),
        ms(l.ms(99.0)),
        ms(l.ms(99.9)),
        ms(l.max_ms()),
        server
    )
}

/// `kronos bench ws`.
async fn ws_bench(mut a: WsBenchArgs) -> Result<()> {
    use loadgen::ws;
    anyhow::ensure!(a.subscribers >= 1, "--subscribers must be at least 1");
    anyhow::ensure!(a.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(a.duration > 0.0, "--duration must be above 0");
    if a.quick {
        a.subscribers = a.subscribers.min(100);
        a.rate = 20.0;
        a.duration = 1.0;
        a.slow = a.slow.min(2);
        a.flood_seconds = 3.0;
    }
    println!("bench ws on {}", loadgen::machine());
    let (server_core, client_core) = core_sets(&a.server_core, &a.client_core)?;
    let limit = loadgen::raise_fd_limit(a.subscribers as u64 + 1024)?;
    anyhow::ensure!(
        limit >= a.subscribers as u64 + 64,
        "--subscribers: {} needs more open files than this process may have ({limit}; raise the hard limit, ulimit -Hn)",
        a.subscribers
    );
    // The server: the keeper's API (router, limits, hub) with a publisher of timed signals, on its own core.
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(["bench", "ws-server", "--send-timeout-ms", "1000", "--max-subscribers"])
        .arg((a.subscribers + a.slow + 64).to_string())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(c) = &server_core {
        loadgen::pin_command(&mut cmd, c);
    }
    let mut child = cmd.spawn().context("starting the WebSocket bench server")?;
    let pid = child.id().unwrap_or_default();
    let mut stdin = child.stdin.take().context("the server's standard input")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("the server's output")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("the WebSocket bench server did not start within 60 s")??
        .unwrap_or_default();
    let addr: SocketAddr = first
        .strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the WebSocket bench server said {first:?}, not its address"))?;
    let rss_before = loadgen::rss_kib(pid)?;
    let n = a.subscribers;
    let rate = a.rate;
    let duration = Duration::from_secs_f64(a.duration);
    let filters = ["", "?types=price_read", "?types=round_settled,price_read", "?types=round_settled"];
    let wanting = (0..n).filter(|i| i % 4 != 3).count() as u64;
    println!(
        "\n{n} subscribers (filters: all, price_read, round_settled+price_read, round_settled only; the last get none of \
         the signals), server pinned to cores {}, subscribers to cores {}{}",
        cores_name(&server_core),
        cores_name(&client_core),
        match (&server_core, &client_core) {
            (Some(s), Some(c)) if s.iter().any(|x| c.contains(x)) => " (shared: they take turns on those cores)",
            _ => "",
        }
    );

    // Phase 1: connect and hold; memory; delivery at the fixed rate.
    let (pace_tx, pace_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let pace_writer = tokio::spawn(async move {
        let mut rx = pace_rx;
        while let Some(l) = rx.recv().await {
            if stdin.write_all(l.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    // CPU used and time spent waiting for a CPU, of the server and of this process (the subscribers).
    let me = std::process::id();
    let server_cpu = move || {
        let f = |p| loadgen::cpu_seconds(p).zip(loadgen::wait_seconds(p));
        f(pid).zip(f(me))
    };
    let phase1 = on_cores(client_core.clone(), {
        let pace_tx = pace_tx.clone();
        move || async move {
            let counters = Arc::new(ws::Counters::default());
            let from = Arc::new(AtomicU64::new(u64::MAX));
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let gate = Arc::new(tokio::sync::Semaphore::new(128));
            let mut tasks = tokio::task::JoinSet::new();
            let t0 = Instant::now();
            for i in 0..n {
                let permit = gate.clone().acquire_owned().await.expect("open semaphore");
                let c = counters.clone();
                let (from, stop) = (from.clone(), stop_rx.clone());
                let q = filters[i % 4].to_string();
                tasks.spawn(ws::subscriber(addr, q, from, c, stop, Some(permit)));
                if i % 1000 == 999 {
                    println!("  {} of {n} connecting after {:.1}s", i + 1, t0.elapsed().as_secs_f64());
                }
            }
            drop(gate);
            let deadline = Instant::now() + Duration::from_secs(120);
            while (counters.connected.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)) < n as u64 {
                if Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let connect_s = t0.elapsed().as_secs_f64();
            let connected = counters.connected.load(Ordering::Relaxed);
            let failed = counters.failed.load(Ordering::Relaxed);
            // Idle: let the server settle before its memory is read.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss_idle = loadgen::rss_kib(pid).unwrap_or(0);
            let cpu0 = server_cpu();
            from.store(ws::now_us(), Ordering::Relaxed);
            let _ = pace_tx.send(format!("{rate} 0\n"));
            tokio::time::sleep(duration).await;
            let _ = pace_tx.send("0 0\n".into());
            // Whatever is still on its way arrives.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cpu1 = server_cpu();
            let received_during = counters.messages.load(Ordering::Relaxed);
            let _ = stop_tx.send(true);
            let mut lat = Latencies::default();
            let mut lagged = 0;
            while let Some(r) = tasks.join_next().await {
                if let Ok(seen) = r {
                    lat.add(&seen.latencies);
                    lagged += seen.lagged;
                }
            }
            let closed = counters.closed.load(Ordering::Relaxed);
            (connected, failed, connect_s, rss_idle, lat, lagged, closed, received_during, cpu0.zip(cpu1))
        }
    })
    .await?;
    let (connected, failed, connect_s, rss_idle, lat, lagged, closed, received, cpu) = phase1;
    let published = (rate * a.duration).round() as u64;
    println!("\nconnections: {connected} held, {failed} failed to connect, {closed} closed by the server ({connect_s:.1}s to connect)");
    let per_conn = rss_idle.saturating_sub(rss_before) as f64 / connected.max(1) as f64;
    println!(
        "server memory: {rss_before} KiB before, {rss_idle} KiB with {connected} idle subscribers: {per_conn:.1} KiB per connection"
    );
    println!(
        "delivery at {rate} signals/s for {}s (about {published} signals, {} expected deliveries to the subscribers that want them): \
         {} received, {}; {lagged} lagged notes",
        a.duration,
        published * wanting.min(connected),
        lat.count(),
        lat.summary()
    );
    if let Some((((s0, sw0), (c0, cw0)), ((s1, sw1), (c1, cw1)))) = cpu {
        println!(
            "while publishing: server {:.2}s CPU ({:.1} µs per delivered message) and {:.2}s waiting for its core; \
             subscribers {:.2}s CPU and {:.2}s waiting for theirs (other processes on the cores)",
            s1 - s0,
            1e6 * (s1 - s0) / received.max(1) as f64,
            sw1 - sw0,
            c1 - c0,
            cw1 - cw0
        );
    }
    let m1 = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
    let queued = loadgen::metric(&m1, "kronos_ws_queued_signals_total", "").unwrap_or(0.0);
    println!("  deliveries a socket did not take at once (queued for the subscriber's own task): {queued}");
    println!("  {}", fanout_line(&m1));

    // Phase 2: fast readers and readers that never read, flooded with large signals.
    let fast = (n / 100).clamp(4, 20);
    let slow = a.slow;
    let flood = Duration::from_secs_f64(a.flood_seconds);
    let flood_pace = pace_tx.clone();
    let phase2 = on_cores(client_core, move || async move {
        let pace_tx = flood_pace;
        let counters = Arc::new(ws::Counters::default());
        let from = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut fast_tasks = tokio::task::JoinSet::new();
        for _ in 0..fast {
            fast_tasks.spawn(ws::subscriber(
                addr,
                "?types=price_read".into(),
                from.clone(),
                counters.clone(),
                stop_rx.clone(),
                None,
            ));
        }
        let mut slow_tasks = tokio::task::JoinSet::new();
        for _ in 0..slow {
            slow_tasks.spawn(ws::slow_subscriber(addr, "?types=price_read".into(), stop_rx.clone()));
        }
        let t = Instant::now();
        while counters.connected.load(Ordering::Relaxed) < fast as u64 && t.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Give the slow ones their handshake too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        from.store(ws::now_us(), Ordering::Relaxed);
        let _ = pace_tx.send("200 16384\n".into());
        tokio::time::sleep(flood).await;
        let _ = pace_tx.send("0 0\n".into());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(true);
        let mut lat = Latencies::default();
        let mut lagged = 0;
        while let Some(r) = fast_tasks.join_next().await {
            if let Ok(s) = r {
                lat.add(&s.latencies);
                lagged += s.lagged;
            }
        }
        let mut dropped = 0;
        while let Some(r) = slow_tasks.join_next().await {
            if let Ok(Ok(true)) = r {
                dropped += 1;
            }
        }
        (lat, lagged, dropped)
    })
    .await?;
    let (flat, flagged, dropped) = phase2;
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
    let slow_dropped =
        loadgen::metric(&metrics, "kronos_http_dropped_total", "reason=\"ws_slow_reader\"").unwrap_or(0.0);
    let skipped = loadgen::metric(&metrics, "kronos_ws_skipped_signals_total", "").unwrap_or(0.0);
    println!(
        "\nslow readers: {slow} that never read and {fast} fast ones, 200 signals/s of 16 KiB for {}s (send timeout 1 s):",
        a.flood_seconds
    );
    println!("  fast readers: {} received, {}; {flagged} lagged notes", flat.count(), flat.summary());
    println!(
        "  slow readers: {dropped} of {slow} found closed by the server; server counters: ws_slow_reader {slow_dropped}, \
         ws_skipped_signals {skipped}"
    );
    // The writer ends with the last sender of paces, closing the server's input: the server stops.
    drop(pace_tx);
    let _ = pace_writer.await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    anyhow::ensure!(connected > 0 && lat.count() > 0, "no subscriber received a signal");
    Ok(())
}

/// The server's own fan-out time (`kronos_ws_fanout_seconds`: from the hub reading a signal to its last delivery to
/// one shard's subscribers, before any reader has read it): how many, their mean, and how many within 50 ms.
fn fanout_line(metrics: &str) -> String {
    let name = "kronos_ws_fanout_seconds";
    let count = loadgen::metric(metrics, &format!("{name}_count"), "").unwrap_or(0.0);
    let sum = loadgen::metric(metrics, &format!("{name}_sum"), "").unwrap_or(0.0);
    let within = loadgen::metric(metrics, &format!("{name}_bucket"), "le=\"0.0512\"").unwrap_or(0.0);
    if count == 0.0 {
        return "server fan-out: none recorded".into();
    }
    format!(
        "server fan-out (hub read → last write to a shard's sockets, per signal and shard): {count} fan-outs, mean \
         {:.3} ms, {:.1}% within 51.2 ms",
        1000.0 * sum / count,
        100.0 * within / count
    )
}

/// `kronos bench ws-server`: the keeper's API on an in-memory store, publishing timed signals at the pace read from
/// standard input (`RATE PADDING` lines) until it closes.
async fn ws_server(a: WsServerArgs) -> Result<()> {
    use kronos_common::http_guard::Limits;
    let store = kronos_keeper::store::Store::connect("sqlite::memory:").await?;
    let bus = kronos_common::Bus::default();
    let metrics = Arc::new(kronos_keeper::metrics::Metrics::default());
    let limits = Limits {
        max_connections: a.max_subscribers + 64,
        max_ws_subscribers: a.max_subscribers,
        rate_per_s: 1_000_000,
        rate_burst: 1_000_000,
        // Every client of the bench is on loopback.
        max_connections_per_ip: 0,
        max_ws_per_ip: 0,
        ws_send_timeout: Duration::from_millis(a.send_timeout_ms.max(1)),
        ..Limits::default()
    };
    let state = kronos_keeper::api::ApiState::new(store, bus.clone(), metrics, vec![], vec![], None, limits);
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("--listen: cannot bind {}", a.listen))?;
    println!("listening {}", listener.local_addr()?);
    let (pace_tx, pace_rx) = tokio::sync::watch::channel(loadgen::ws::Pace::default());
    tokio::spawn(loadgen::ws::publish(bus, pace_rx));
    let stop = CancellationToken::new();
    let server = tokio::spawn(kronos_keeper::api::serve(listener, state, stop.clone().cancelled_owned()));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(l) = lines.next_line().await? {
        match loadgen::ws::parse_pace(&l) {
            Ok(p) => {
                let _ = pace_tx.send(p);
            }
            Err(e) => eprintln!("ws-server: {e}"),
        }
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

/// `kronos bench`: the settlement benchmark (with `--api-load`, under API load).
async fn bench(a: SettleArgs) -> Result<()> {
    let root = crate::deploy::repo_root()?;
    let cat = Catalogue::load(root.join("config/chains.toml"))?;
    let keys: Vec<String> = a.chains.clone().unwrap_or_else(|| {
        cat.evm_chains().map(|c| c.key.clone()).chain([crate::solana::bench::SOLANA.to_string()]).collect()
    });
    let (with_solana, keys) = crate::solana::bench::split(keys);
    anyhow::ensure!(!keys.is_empty(), "--chains: no EVM chain given (the bench needs at least one)");
    anyhow::ensure!(a.api_connections >= 1, "--api-connections must be at least 1");
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
    let (server_core, client_core) = if a.api_load {
        println!("  with the API under load: {}", loadgen::machine());
        pinning(0, 1)?
    } else {
        (None, None)
    };
    let mut k = LocalKeeper::start(&opts, server_core, a.api_load).await?;
    let mut solana = match with_solana {
        true => {
            // At most ten wall seconds a round, as in the demo: the keeper's Solana passes (simulate, price, send,
            // confirm against one local bank) need wall time, so the anvils' pace would leave it rounds it cannot reach.
            let evm = ((a.speed as f64 / a.block_time).round() as u32).max(1);
            let speed = evm.min(a.interval / 10).max(1);
            println!("  and solana: the local Solana RPC at {speed}x the wall clock, its own keeper process");
            Some(crate::solana::bench::SolanaBench::start(&root, a.interval, speed, keys.len()).await?)
        }
        false => None,
    };
    let pid = k.pid;
    let t0 = Instant::now();
    // When each block and each pooled transaction was first seen, to split the settlement delay.
    let timeline_stop = CancellationToken::new();
    let timelines: Vec<Arc<parking_lot::Mutex<timeline::Timeline>>> = k
        .chains
        .iter()
        .map(|c| {
            let t = Arc::new(parking_lot::Mutex::new(timeline::Timeline::default()));
            tokio::spawn(timeline::watch(c.wallet(0), t.clone(), timeline_stop.clone()));
            t
        })
        .collect();
    // The API load, until the rounds are done.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = if a.api_load {
        k.wait_for_rows("/api/rounds?limit=1", Duration::from_secs(180)).await?;
        let paths: Vec<String> = vec![
            "/api/markets".into(),
            "/api/rounds?limit=50".into(),
            format!("/api/rounds?chain={}&market=1&limit=50", keys[0]),
            "/api/predictions?limit=50".into(),
        ];
        let (addr, conns, stop) = (k.api, a.api_connections, stop_load.clone());
        println!("  API load: {conns} connections, closed loop on {}", paths.join(", "));
        Some(tokio::spawn(on_core(client_core, move || async move {
            let mut total = http::Outcome::default();
            while !stop.load(Ordering::Relaxed) {
                let o =
                    http::run(addr, &paths, http::Mode::Closed { conns }, Duration::ZERO, Duration::from_secs(2)).await;
                total.merge(o);
            }
            total
        })))
    } else {
        None
    };
    // Rounds finish two checkpoints after they start: count recorded checkpoints beyond index 1 on each chain.
    let mut last_report = Instant::now();
    let (finished, cpu) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Some(status)) = k.child.try_wait() {
            anyhow::bail!("the keeper process exited early: {status}");
        }
        let mut finished = 0u64;
        for c in &k.chains {
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
        let solana_finished = match solana.as_mut() {
            Some(s) => Some(s.finished()?),
            None => None,
        };
        if last_report.elapsed() > Duration::from_secs(10) {
            println!("  {finished}/{} rounds finished after {:.0}s", a.rounds, t0.elapsed().as_secs_f64());
            if let Some(n) = solana_finished {
                println!("  solana: {n} rounds finished (counted apart)");
            }
            last_report = Instant::now();
        }
        // Solana finishes its share too (as many rounds as one chain's share, at least two), counted apart.
        let solana_share = (a.rounds / (keys.len() as u64 + 1)).max(2);
        if finished >= a.rounds && solana_finished.is_none_or(|n| n >= solana_share) {
            break (finished, loadgen::cpu_seconds(pid));
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(3600), "the benchmark did not finish within an hour");
    };
    let wall = t0.elapsed().as_secs_f64();
    timeline_stop.cancel();
    stop_load.store(true, Ordering::Relaxed);
    let api = match load {
        Some(h) => Some(h.await.context("the API load")??),
        None => None,
    };
    let (db, chains) = (k.db.clone(), k.chains.clone());
    let _store_dir = k.stop().await;
    let store = kronos_keeper::store::Store::connect(&format!("sqlite://{}", db.display())).await?;
    let mut delays = Vec::new();
    let mut missed = 0u64;
    let mut split = timeline::Split::default();
    // The checkpoints settled 2 or more blocks after their time, named.
    let mut slow = Vec::new();
    for (c, tl) in chains.iter().zip(&timelines) {
        let cps = store.checkpoints(&c.chain.key, 1, 0, 1_000_000).await?;
        let mut expected = 0i64;
        let tl = tl.lock();
        for cp in &cps {
            missed += (cp.idx - expected).max(0) as u64;
            expected = cp.idx + 1;
            if let Some(d) = cp.delay_blocks {
                delays.push(d as u64);
            }
            if let (Some(hash), Some(block), Some(d)) = (&cp.tx_hash, cp.block, cp.delay_blocks) {
                split.add(&tl, hash, block as u64, d as u64);
                if d >= 2 {
                    slow.push(format!("{} #{} ({d} blocks)", c.chain.key, cp.idx));
                }
            }
        }
        split.add_gaps(&tl);
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
    if !slow.is_empty() {
        println!("  at 2+ blocks: {}", slow.join(", "));
    }
    print!("{}", split.report());
    match cpu {
        Some(c) => {
            println!("  keeper CPU time: {c:.2}s in total, {:.1} ms per round", 1000.0 * c / finished.max(1) as f64)
        }
        None => println!("  keeper CPU time: unavailable (no /proc)"),
    }
    if let Some(o) = api {
        println!(
            "  API meanwhile (keeper on one core): {} requests answered, {} errors, {:.0} req/s, {}",
            o.ok,
            o.errors,
            o.per_s(),
            o.latencies.summary()
        );
    }
    if let Some(s) = solana {
        print!("{}", s.report().await);
    }
    Ok(())
}

/// What a settlement delay is made of, from the bench's side of the chains: when each block and each transaction in
/// the pool was first seen (wall clock, polled every 10 ms). A checkpoint's delay counts from its due block (the first
/// after its time and execute delay); the keeper can send only once it has seen that block, so 1 block is the least,
/// and 2 means either the keeper's execute reached the pool after the next block had come (the keeper was late) or it
/// was in the pool in time and the node mined it a block later.
mod timeline {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;
    use std::time::Duration;

    use alloy::providers::{DynProvider, Provider};
    use tokio_util::sync::CancellationToken;

    use crate::demo::percentile;

    #[derive(Default)]
    pub(super) struct Timeline {
        /// Block number → when it was first seen (ms).
        pub blocks: BTreeMap<u64, u64>,
        /// Transaction hash (lowercase hex) → when it was first seen pending (ms).
        pub pooled: HashMap<String, u64>,
    }

    fn now_ms() -> u64 {
        kronos_common::time::now_ms()
    }

    /// Polls the head and the pool of `p` every 10 ms into `t` until `stop`.
    pub(super) async fn watch(p: DynProvider, t: Arc<parking_lot::Mutex<Timeline>>, stop: CancellationToken) {
        let mut last: Option<u64> = None;
        while !stop.is_cancelled() {
            if let Ok(n) = p.get_block_number().await {
                let seen = now_ms();
                let mut tl = t.lock();
                // Blocks passed between two polls are stamped with the later poll (at most 10 ms late).
                for b in last.map_or(n, |l| l + 1)..=n {
                    tl.blocks.entry(b).or_insert(seen);
                }
                last = Some(last.map_or(n, |l| l.max(n)));
            }
            if let Ok(v) = p.raw_request::<_, serde_json::Value>("txpool_content".into(), ()).await {
                let seen = now_ms();
                let mut tl = t.lock();
                for by_nonce in v["pending"].as_object().into_iter().flat_map(|m| m.values()) {
                    for tx in by_nonce.as_object().into_iter().flat_map(|m| m.values()) {
                        if let Some(h) = tx["hash"].as_str() {
                            tl.pooled.entry(h.to_ascii_lowercase()).or_insert(seen);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The split of the recorded checkpoints' delays.
    #[derive(Default)]
    pub(super) struct Split {
        /// Due block first seen → the execute first seen in the pool (ms).
        reaction: Vec<u64>,
        /// Gaps between consecutive blocks as seen (ms).
        gaps: Vec<u64>,
        /// Checkpoints at 2 blocks or more whose execute reached the pool after the next block was seen.
        late: u64,
        /// … whose execute was in the pool before the next block and was mined later anyway.
        held: u64,
        /// Checkpoints whose execute was never seen pending (mined within a poll of being sent) or whose blocks
        /// were not seen.
        unseen: u64,
        /// Checkpoints looked at.
        n: u64,
    }

    impl Split {
        pub(super) fn add(&mut self, tl: &Timeline, hash: &str, mined: u64, delay: u64) {
            self.n += 1;
            let due = mined.saturating_sub(delay);
            let (Some(&t_due), Some(&t_next), Some(&t_sent)) =
                (tl.blocks.get(&due), tl.blocks.get(&(due + 1)), tl.pooled.get(&hash.to_ascii_lowercase()))
            else {
                self.unseen += 1;
                return;
            };
            self.reaction.push(t_sent.saturating_sub(t_due));
            if delay >= 2 {
                if t_sent > t_next {
                    self.late += 1;
                } else {
                    self.held += 1;
                }
            }
        }

        pub(super) fn add_gaps(&mut self, tl: &Timeline) {
            let times: Vec<u64> = tl.blocks.values().copied().collect();
            self.gaps.extend(times.windows(2).map(|w| w[1].saturating_sub(w[0])));
        }

        pub(super) fn report(&self) -> String {
            let f = |v: &[u64], p| percentile(v, p).map(|x| format!("{x} ms")).unwrap_or_else(|| "-".into());
            format!(
                "  the keeper's reaction (its due block seen → its execute in the pool; polled every 10 ms): p50 {}, \
                 p99 {}, max {} ({} of {} checkpoints seen; blocks came every p50 {}, p99 {}, max {})\n  \
                 checkpoints at 2+ blocks: {} sent after the next block had come (the keeper late), {} in the pool \
                 before it and mined a block later (the node)\n",
                f(&self.reaction, 50.0),
                f(&self.reaction, 99.0),
                f(&self.reaction, 100.0),
                self.reaction.len(),
                self.n,
                f(&self.gaps, 50.0),
                f(&self.gaps, 99.0),
                f(&self.gaps, 100.0),
                self.late,
                self.held,
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_two_block_delay_is_put_on_the_keeper_or_the_node() {
            let mut tl = Timeline::default();
            for (b, t) in [(10, 1000), (11, 1500), (12, 2000), (13, 2500)] {
                tl.blocks.insert(b, t);
            }
            tl.pooled.insert("0xaa".into(), 1100); // in time for block 11, mined in 11: 1 block
            tl.pooled.insert("0xbb".into(), 1600); // after block 11 came: late, mined in 12
            tl.pooled.insert("0xcc".into(), 1200); // in time, yet mined in 12: the node
            let mut s = Split::default();
            s.add(&tl, "0xAA", 11, 1);
            s.add(&tl, "0xbb", 12, 2);
            s.add(&tl, "0xcc", 12, 2);
            s.add(&tl, "0xdd", 12, 2);
            s.add_gaps(&tl);
            assert_eq!((s.late, s.held, s.unseen, s.n), (1, 1, 1, 4));
            assert_eq!(s.reaction, [100, 600, 200]);
            assert_eq!(s.gaps, [500, 500, 500]);
            assert!(s.report().contains("1 sent after the next block had come"), "{}", s.report());
        }
    }
}

/// Head time without the test kit (which is a dev-only crate).
mod kronos_testkit_free {
    use alloy::providers::{DynProvider, Provider};
    pub(super) async fn head_time(p: &DynProvider) -> anyhow::Result<u64> {
        Ok(p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no head"))?
            .header
            .timestamp)
    }
}
