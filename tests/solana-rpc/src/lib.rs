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
}

impl Drop for LocalRpc {
    fn drop(&mut self) {
        self.server.abort();
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
        let mut pt = ProgramTest::new("kronos_market", PROGRAM_ID, processor!(entry));
        pt.prefer_bpf(false);
        let ctx = pt.start_with_context().await;
        let node = Arc::new(Mutex::new(Node::new(ctx)));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app =
            axum::Router::new().route("/", axum::routing::post(rpc::handle)).merge(control::routes()).with_state(node);
        let server = tokio::spawn(async move {
            // Serving ends only when the task is aborted (drop) or the listener fails.
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("kronos-solana-rpc: server stopped: {e}");
            }
        });
        Ok(LocalRpc { addr, server })
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
}

impl Node {
    fn new(ctx: ProgramTestContext) -> Node {
        Node { ctx, clock: None, index: BTreeSet::new(), fees: BTreeMap::new(), feeds: HashMap::new() }
    }
}
