//! A local Solana JSON-RPC 2.0 server (HTTP/1.1, loopback) over `solana-program-test`'s bank, with the
//! kronos-market program run natively, for the keeper's tests and the demo. Test and devnet tooling only: the
//! product never depends on it. See README.md for the methods implemented and the test-only control paths.
#![allow(deprecated)] // solana-program-test 3.x marks its API "unstable"; it is the supported native path.

mod control;
mod rpc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use kronos_market::chainlink::{Meta, Transmission};
use solana_program_test::{processor, ProgramTest, ProgramTestContext};
use solana_pubkey::Pubkey;
use tokio::sync::Mutex;

/// The program id the server runs kronos-market under.
pub use kronos_market::ID as PROGRAM_ID;

fn entry(
    program_id: &anchor_lang::prelude::Pubkey,
    accounts: &[anchor_lang::prelude::AccountInfo],
    data: &[u8],
) -> anchor_lang::solana_program::entrypoint::ProgramResult {
    // program-test hands accounts with distinct lifetimes; Anchor's entry wants one.
    // SAFETY: only lifetimes change (same type, same layout), and the slice and every account in it outlive this
    // call, which is the only place the transmuted slice is used.
    let accounts: &[anchor_lang::prelude::AccountInfo] = unsafe { std::mem::transmute(accounts) };
    kronos_market::entry(program_id, accounts, data)
}

/// A running server; dropping it stops serving (the bank lives as long as the runtime's tasks hold it).
pub struct LocalRpc {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    /// The wall-clock ticker, in [`LocalRpc::start_wall_clock`] mode.
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalRpc {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }
}

/// Wall-clock mode: the bank advances one slot every `slot_ms` of wall time and its Clock follows the wall clock,
/// `speed` chain seconds per wall second from the real unix time at start (1 = real time; the demo runs its chains
/// faster than real time, as its anvils do).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Chain seconds per wall second (at least 1).
    pub speed: u32,
    /// Wall milliseconds per slot (a cluster's slot is about 400 ms).
    pub slot_ms: u64,
}

impl Default for WallClock {
    fn default() -> WallClock {
        WallClock { speed: 1, slot_ms: 400 }
    }
}

impl WallClock {
    /// The chain's unix time `elapsed` after a start at `origin` (unix seconds).
    fn at(&self, origin: i64, elapsed: std::time::Duration) -> i64 {
        let chain_ms = elapsed.as_millis().saturating_mul(u128::from(self.speed.max(1)));
        origin.saturating_add(i64::try_from(chain_ms / 1000).unwrap_or(i64::MAX))
    }
}

impl LocalRpc {
    /// Starts the bank with kronos-market loaded natively and serves it on an ephemeral loopback port. Must be called
    /// inside a multi-threaded tokio runtime (the bank's tasks and the server run on it).
    pub async fn start() -> std::io::Result<LocalRpc> {
        LocalRpc::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// [`LocalRpc::start`] on a given address (port 0: any free port).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<LocalRpc> {
        let (rpc, _) = LocalRpc::serve(addr).await?;
        Ok(rpc)
    }

    /// [`LocalRpc::start_on`] in wall-clock mode ([`WallClock`]): a background task advances the bank one slot per
    /// `slot_ms` and sets its Clock to the wall clock's time (sped up `speed` times). `/control/warp` still works
    /// (extra slots; a pinned `unixTimestamp` holds until the next tick).
    pub async fn start_wall_clock(addr: SocketAddr, clock: WallClock) -> std::io::Result<LocalRpc> {
        let (mut rpc, node) = LocalRpc::serve(addr).await?;
        let origin = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| std::io::Error::other(format!("the system clock is before 1970: {e}")))?
            .as_secs();
        let origin = i64::try_from(origin).map_err(|e| std::io::Error::other(format!("unix time {origin}: {e}")))?;
        let started = std::time::Instant::now();
        node.lock().await.tick(clock.at(origin, started.elapsed())).await.map_err(std::io::Error::other)?;
        rpc.ticker = Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(clock.slot_ms.max(1)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let ts = clock.at(origin, started.elapsed());
                if let Err(e) = node.lock().await.tick(ts).await {
                    eprintln!("kronos-solana-rpc: wall clock stopped: {e}");
                    return;
                }
            }
        }));
        Ok(rpc)
    }

    async fn serve(addr: SocketAddr) -> std::io::Result<(LocalRpc, Arc<Mutex<Node>>)> {
        let mut pt = ProgramTest::new("kronos_market", PROGRAM_ID, processor!(entry));
        pt.prefer_bpf(false);
        let ctx = pt.start_with_context().await;
        let node = Arc::new(Mutex::new(Node::new(ctx)));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/", axum::routing::post(rpc::handle))
            .merge(control::routes())
            .layer(axum::middleware::from_fn(to_completion))
            .with_state(node.clone());
        let server = tokio::spawn(async move {
            // Serving ends only when the task is aborted (drop) or the listener fails.
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("kronos-solana-rpc: server stopped: {e}");
            }
        });
        Ok((LocalRpc { addr, server, ticker: None }, node))
    }

    /// The JSON-RPC endpoint, e.g. `http://127.0.0.1:38211/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The socket the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A transaction's compute-unit price and the accounts it wrote, for `getRecentPrioritizationFees`.
struct PaidFee {
    micro_lamports_per_cu: u64,
    writable: Vec<Pubkey>,
}

/// A Chainlink store-format feed the control path keeps writing.
struct Feed {
    meta: Meta,
    description: String,
    live_length: u32,
    transmissions: Vec<Transmission>,
}

/// The bank and what the server remembers beside it.
pub(crate) struct Node {
    ctx: ProgramTestContext,
    /// The clock's unix timestamp once a control call set it; re-applied after every warp.
    clock: Option<i64>,
    /// Every account a transaction named or the control path wrote: what `getProgramAccounts` scans.
    index: BTreeSet<Pubkey>,
    /// Compute-unit prices of processed transactions, by slot.
    fees: BTreeMap<u64, Vec<PaidFee>>,
    feeds: HashMap<Pubkey, Feed>,
    /// Sends still to accept and drop (`/control/drop_next_sends`).
    drop_sends: u64,
    /// Set: only sends of transactions naming this account are dropped (`drop_next_sends`' `account`).
    drop_only: Option<Pubkey>,
    /// Sends still to accept and hold (`/control/hold_next_sends`), and the ones held until `/control/land_held`.
    hold_sends: u64,
    held: Vec<solana_transaction::versioned::VersionedTransaction>,
    /// Per method: calls still to answer with a JSON-RPC error (`/control/fail_next`).
    fail_next: HashMap<String, u64>,
    /// Per method: calls received (`/control/calls`), so a test can wait for a client's reads.
    calls: HashMap<String, u64>,
    /// `getMultipleAccounts` answers still to send one account short (`/control/short_next_accounts`).
    short_accounts: u64,
    /// What `getGenesisHash` answers once `/control/genesis` set it (base58), instead of the bank's genesis.
    genesis: Option<String>,
}

impl Node {
    fn new(ctx: ProgramTestContext) -> Node {
        Node {
            ctx,
            clock: None,
            index: BTreeSet::new(),
            fees: BTreeMap::new(),
            feeds: HashMap::new(),
            drop_sends: 0,
            drop_only: None,
            hold_sends: 0,
            held: Vec::new(),
            fail_next: HashMap::new(),
            calls: HashMap::new(),
            short_accounts: 0,
            genesis: None,
        }
    }

    /// One wall-clock tick: the next slot (its own bank, as `/control/warp` makes them), the Clock set to `ts`.
    async fn tick(&mut self, ts: i64) -> Result<(), String> {
        let slot = self.ctx.banks_client.get_root_slot().await.map_err(|e| format!("reading the slot: {e}"))?;
        self.ctx.warp_to_slot(slot + 1).map_err(|e| format!("warp to slot {}: {e:?}", slot + 1))?;
        self.clock = Some(ts);
        let mut c: anchor_lang::prelude::Clock =
            self.ctx.banks_client.get_sysvar().await.map_err(|e| format!("reading the Clock: {e}"))?;
        c.unix_timestamp = ts;
        self.ctx.set_sysvar(&c);
        Ok(())
    }
}

/// Runs a request's handler to its end even when its client goes away (a keeper's RPC timeout under load): the
/// handler holds the node's lock over its bank call, and a dropped handler leaves that call running in the banks
/// server with the lock released. A warp then (`ProgramTestContext::warp_to_slot` holds `BankForks`' write lock
/// while `Bank::new_from_parent` takes the program cache's) deadlocks against that transaction's simulation or
/// processing (which holds the program cache while `ProgramCache::extract` reads `BankForks`): every later call
/// hangs. Seen as load-only test hangs (a gdb dump of one showed exactly these two threads).
async fn to_completion(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::spawn(next.run(req)).await {
        Ok(r) => r,
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("the handler failed: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::sync::Notify;

    /// Sets `gone` when dropped unfinished: the server noticed its client left and dropped the request's future.
    struct Gone(Option<Arc<Notify>>);

    impl Gone {
        fn finished(mut self) {
            self.0 = None;
        }
    }

    impl Drop for Gone {
        fn drop(&mut self) {
            if let Some(n) = self.0.take() {
                n.notify_one();
            }
        }
    }

    /// A request whose client closes its connection mid-request still runs its handler to the end
    /// ([`super::to_completion`]): the test waits until the server has dropped the request (an outer layer says so),
    /// only then lets the handler go on, and waits for it to finish. Without the layer the handler is dropped with
    /// the request and never finishes.
    #[tokio::test]
    async fn a_handler_runs_to_its_end_after_its_client_went_away() {
        let (started, go, done, gone) =
            (Arc::new(Notify::new()), Arc::new(Notify::new()), Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (s, g, d) = (started.clone(), go.clone(), done.clone());
        let handler = move || {
            let (s, g, d) = (s.clone(), g.clone(), d.clone());
            async move {
                s.notify_one();
                g.notified().await;
                d.notify_one();
                "done"
            }
        };
        let watch = gone.clone();
        let app = axum::Router::new()
            .route("/slow", axum::routing::post(handler))
            .layer(axum::middleware::from_fn(super::to_completion))
            .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                let guard = Gone(Some(watch.clone()));
                async move {
                    let r = next.run(req).await;
                    guard.finished();
                    r
                }
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        started.notified().await;
        drop(client);
        gone.notified().await;
        go.notify_one();
        // A bound on a failure (the handler dropped), not a pace: it finishes as soon as it is let go.
        tokio::time::timeout(Duration::from_secs(60), done.notified())
            .await
            .expect("the handler was dropped with its client's request");
        server.abort();
    }
}
