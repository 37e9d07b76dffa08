//! The keeper drives the kronos-market program on a local Solana JSON-RPC server (`kronos_testkit::solana_rpc`,
//! solana-program-test's bank behind the real RPC wire format): rounds started, locked, settled and refunded at the
//! program's times, failover, a dropped transaction, blockhash expiry, a restart mid-crank, an unapproved or changed
//! feed refused, bad configuration, and the signer key never in the logs. Time moves only by `/control/warp`; the
//! tests wait for the keeper's signals and on-chain state, never for fixed sleeps.

use std::sync::Arc;
use std::time::Duration;

use anchor_lang::prelude::Pubkey;
use anchor_lang::solana_program::instruction::Instruction;
use anchor_lang::{AccountDeserialize, InstructionData, ToAccountMetas};
use base64::Engine;
use kronos_common::signals::{Outcome, Signal, SignalKind};
use kronos_common::Bus;
use kronos_keeper::config::Config;
use kronos_keeper::engine::{Keeper, Overrides};
use kronos_market::state::{
    Params, Round, RoundStatus, Side, CONFIG_SEED, FEED_SEED, MARKET_SEED, POSITION_SEED, ROUND_SEED, VAULT_SEED,
};
use kronos_market::{accounts as acc, instruction as ix, ID};
use kronos_testkit::solana_rpc::LocalRpc;
use serde_json::{json, Value};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::Transaction;
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

const SOL: u64 = 1_000_000_000;
const GENESIS: i64 = 1_800_000_000;
const IV: i64 = 300;
const DELAY: i64 = 10;
const PRICE: i64 = 6_500_000_000_000;
/// How long a test waits for the keeper to react (it polls every 100 ms) before it fails: a bound, not a pace — the
/// forecast tests run the model, which took over 60 s under a loaded 2-core machine (a run with three test binaries).
const PATIENCE: Duration = Duration::from_secs(240);

fn pda(seeds: &[&[u8]]) -> Pubkey {
    Pubkey::find_program_address(seeds, &ID).0
}

fn ixn(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction { program_id: ID, accounts: accounts.to_account_metas(None), data: data.data() }
}

fn round_key(market: &Pubkey, epoch: u64) -> Pubkey {
    pda(&[ROUND_SEED, market.as_ref(), &epoch.to_le_bytes()])
}

/// A local cluster with the program configured, an approved feed and one SOL market.
struct Cluster {
    rpc: LocalRpc,
    client: RpcClient,
    authority: Keypair,
    feed: Pubkey,
    market: Pubkey,
    owner: Pubkey,
    writer: Pubkey,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(approve: bool) -> Cluster {
        let rpc = LocalRpc::start().await.unwrap();
        let client = RpcClient::new_with_commitment(rpc.url(), CommitmentConfig::confirmed());
        let http = reqwest::Client::new();
        let authority = Keypair::new();
        let (owner, writer) = (Pubkey::new_unique(), Pubkey::new_unique());
        let c = Cluster {
            rpc,
            client,
            authority,
            feed: Pubkey::new_unique(),
            market: Pubkey::default(),
            owner,
            writer,
            http,
        };
        let a = c.authority.pubkey();
        c.fund(&a).await;
        // The authority is the program's upgrade authority (its ProgramData account), so it may configure it.
        let mut program_data = vec![3, 0, 0, 0];
        program_data.extend_from_slice(&0u64.to_le_bytes());
        program_data.push(1);
        program_data.extend_from_slice(a.as_ref());
        let loader = anchor_lang::solana_program::bpf_loader_upgradeable::ID;
        let program_data_key = Pubkey::find_program_address(&[ID.as_ref()], &loader).0;
        c.control(
            "account",
            json!({ "address": program_data_key.to_string(), "lamports": SOL, "owner": loader.to_string(),
                    "data": base64::engine::general_purpose::STANDARD.encode(&program_data) }),
        )
        .await;
        c.load_feed(owner, writer).await;
        c.warp_to(GENESIS - 100).await;
        let config = pda(&[CONFIG_SEED]);
        let approval = pda(&[FEED_SEED, c.feed.as_ref()]);
        let market = pda(&[MARKET_SEED, a.as_ref(), &1u64.to_le_bytes()]);
        let system = anchor_lang::system_program::ID;
        let feed = c.feed;
        let params = Params {
            fee_bps: 300,
            min_bet: 1_000,
            max_price_age: 3_600,
            settle_window: IV as u32,
            report_delay: DELAY as u32,
            bet_cutoff: 10,
            settler_reward_bps: 1_000,
        };
        let init = ixn(
            acc::InitializeConfig {
                upgrade_authority: a,
                config,
                program_data: program_data_key,
                system_program: system,
            },
            ix::InitializeConfig { admin: a },
        );
        let approve_ix =
            ixn(acc::ApproveFeed { admin: a, config, feed, approval, system_program: system }, ix::ApproveFeed {});
        let market_ix = ixn(
            acc::InitializeMarket {
                authority: a,
                market,
                vault: pda(&[VAULT_SEED, market.as_ref()]),
                feed,
                feed_approval: approval,
                system_program: system,
            },
            ix::InitializeMarket { id: 1, genesis: GENESIS, interval: IV as u32, params },
        );
        c.send(&[init, approve_ix, market_ix], &[&c.authority]).await;
        if !approve {
            let revoke = ixn(acc::RevokeFeed { admin: a, config, approval }, ix::RevokeFeed {});
            c.send(&[revoke], &[&c.authority]).await;
        }
        Cluster { market, ..c }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}control/{path}", self.rpc.url())).json(&body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "control/{path}: {status} {v}");
        v
    }

    async fn fund(&self, k: &Pubkey) {
        self.control("account", json!({ "address": k.to_string(), "lamports": 100 * SOL })).await;
    }

    async fn load_feed(&self, owner: Pubkey, writer: Pubkey) {
        self.control(
            "feed",
            json!({ "address": self.feed.to_string(), "decimals": 8, "description": "BTC / USD",
                    "owner": owner.to_string(), "writer": writer.to_string(),
                    "transmissions": [{ "timestamp": GENESIS - 60, "answer": PRICE }] }),
        )
        .await;
    }

    /// Sets the cluster clock (one slot later).
    async fn warp_to(&self, ts: i64) {
        self.control("warp", json!({ "unixTimestamp": ts })).await;
    }

    async fn transmit(&self, ts: i64, answer: i64) {
        self.control("feed/transmit", json!({ "address": self.feed.to_string(), "timestamp": ts, "answer": answer }))
            .await;
    }

    async fn send(&self, ixs: &[Instruction], signers: &[&Keypair]) {
        let bh = self.client.get_latest_blockhash().await.unwrap();
        let tx = Transaction::new_signed_with_payer(ixs, Some(&signers[0].pubkey()), signers, bh);
        self.client.send_and_confirm_transaction(&tx).await.unwrap();
    }

    async fn bet(&self, epoch: u64, side: Side) {
        let user = Keypair::new();
        self.fund(&user.pubkey()).await;
        let round = round_key(&self.market, epoch);
        let accounts = acc::PlaceBet {
            user: user.pubkey(),
            market: self.market,
            round,
            position: pda(&[POSITION_SEED, round.as_ref(), user.pubkey().as_ref()]),
            vault: pda(&[VAULT_SEED, self.market.as_ref()]),
            user_token: None,
            token_program: None,
            system_program: anchor_lang::system_program::ID,
        };
        self.send(&[ixn(accounts, ix::Bet { epoch, side, amount: SOL, max_fee_bps: 300 })], &[&user]).await;
    }

    async fn round(&self, epoch: u64) -> Option<Round> {
        let a = self
            .client
            .get_account_with_commitment(&round_key(&self.market, epoch), CommitmentConfig::confirmed())
            .await
            .unwrap()
            .value?;
        Some(Round::try_deserialize(&mut a.data.as_slice()).unwrap())
    }

    /// One bet on each side of round `epoch`.
    async fn bet_both(&self, epoch: u64) {
        self.bet(epoch, Side::Up).await;
        self.bet(epoch, Side::Down).await;
    }

    /// A keeper on this cluster's default configuration (no extra RPC URL), its files under `dir`.
    async fn keeper(&self, dir: &tempfile::TempDir, key: &Keypair) -> Running {
        run_keeper(&self.config(dir.path(), &[], key, "")).await
    }

    /// A keeper configuration for this cluster (extra RPC URLs first), its key in a file under `dir`.
    fn config(&self, dir: &std::path::Path, rpc_first: &[&str], key: &Keypair, extra: &str) -> String {
        let key_file = dir.join("id.json");
        std::fs::write(&key_file, serde_json::to_string(&key.to_bytes().to_vec()).unwrap()).unwrap();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut rpc: Vec<String> = rpc_first.iter().map(|s| format!("\"{s}\"")).collect();
        rpc.push(format!("\"{}\"", self.rpc.url()));
        format!(
            "[keeper]\ncatalogue = \"{root}/config/chains.toml\"\nstore = \"sqlite://{}/keeper.db\"\nlisten = \"127.0.0.1:0\"\nsigner = {{ env = \"UNUSED_EVM_KEY\" }}\npoll_ms = 100\n\n[[solana]]\nname = \"solana\"\nrpc = [{}]\nprogram = \"{ID}\"\nmarkets = [\"{}\"]\nkey_file = \"{}\"\nlocal = true\nrebroadcast_s = 1\n{extra}",
            dir.display(),
            rpc.join(", "),
            self.market,
            key_file.display()
        )
    }
}

/// A cluster (its feed approved or not), a directory for the keeper's files and the keeper's key, funded.
async fn funded(approve: bool) -> (Cluster, tempfile::TempDir, Keypair) {
    let c = Cluster::start(approve).await;
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::new();
    c.fund(&key.pubkey()).await;
    (c, dir, key)
}

/// A keeper running on `cfg` until the token is cancelled.
struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    api: std::net::SocketAddr,
    rx: Receiver<Arc<Signal>>,
    keeper_store: kronos_keeper::store::Store,
    /// Signals a wait read past (not what it waited for), kept for the waits of a round's once-only steps
    /// ([`Running::wait_step`]): the keeper's tasks run side by side, so round 0's commitment can be signalled
    /// before its start is, while the test still waits for the start.
    passed: Vec<SignalKind>,
}

async fn run_keeper(text: &str) -> Running {
    let cfg = Config::parse(text, "(test)", &|_| None).unwrap();
    let bus = Bus::new(4096);
    let rx = bus.subscribe();
    let evm = alloy::signers::local::PrivateKeySigner::random();
    let keeper = Keeper::build(&cfg, evm, bus, Overrides::default()).await.unwrap();
    let api = keeper.api_addr().unwrap();
    let keeper_store = keeper.store.clone();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move { keeper.run(c).await.unwrap() });
    Running { cancel, task, api, rx, keeper_store, passed: Vec::new() }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }

    /// Waits for the first signal `pick` returns something for.
    async fn wait<T>(&mut self, what: &str, pick: impl Fn(&SignalKind) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let s = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap();
            if let Some(v) = pick(&s.kind) {
                return v;
            }
            self.passed.push(s.kind.clone());
        }
    }

    /// As [`wait`](Self::wait), for a step that happens once per round (a start, a settlement, a commitment, a
    /// reveal): one an earlier wait read past counts.
    async fn wait_step<T>(&mut self, what: &str, pick: impl Fn(&SignalKind) -> Option<T>) -> T {
        if let Some(i) = self.passed.iter().position(|k| pick(k).is_some()) {
            let k = self.passed.remove(i);
            return pick(&k).expect("picked");
        }
        self.wait(what, pick).await
    }

    async fn wait_started(&mut self, epoch: u64) {
        self.wait_step(&format!("round {epoch} started"), |k| {
            matches!(k, SignalKind::RoundStarted { chain, epoch: e, .. } if chain == "solana" && *e == epoch)
                .then_some(())
        })
        .await
    }

    async fn wait_settled(&mut self, epoch: u64) -> Outcome {
        self.wait_step(&format!("round {epoch} settled"), |s| match s {
            SignalKind::RoundSettled { chain, epoch: e, outcome, .. } if chain == "solana" && *e == epoch => {
                Some(*outcome)
            }
            _ => None,
        })
        .await
    }

    async fn wait_cancelled(&mut self, epoch: u64) -> kronos_common::signals::CancelReason {
        self.wait(&format!("round {epoch} refunded"), |s| match s {
            SignalKind::RoundCancelled { chain, epoch: e, reason, .. } if chain == "solana" && *e == epoch => {
                Some(*reason)
            }
            _ => None,
        })
        .await
    }

    /// The detail of the first unhealthy `KeeperHealth` signal.
    async fn wait_unhealthy(&mut self) -> String {
        self.wait("the keeper unhealthy", |s| match s {
            SignalKind::KeeperHealth { chain, healthy: false, detail, .. } if chain == "solana" => Some(detail.clone()),
            _ => None,
        })
        .await
    }

    /// The store's transactions for `action`, whatever became of them.
    async fn txs_for(&self, action: &str) -> Vec<kronos_keeper::store::TxRow> {
        let txs = self.keeper_store.all_txs("solana").await.unwrap();
        txs.into_iter().filter(|t| t.action == action).collect()
    }

    /// Waits until the keeper has signed `action` (sent, not necessarily landed); its first transaction.
    async fn until_sent(&self, action: &str) -> kronos_keeper::store::TxRow {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(t) = self.txs_for(action).await.into_iter().next() {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "the keeper never sent {action}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.api)).await.unwrap().text().await.unwrap()
    }
}

/// Moves the clock into epoch 0 and waits for the keeper to start it.
async fn start_round_0(c: &Cluster, k: &mut Running) {
    c.warp_to(GENESIS + 1).await;
    k.wait_started(0).await;
}

async fn until_open(c: &Cluster, epoch: u64) -> Round {
    until_round(c, epoch, "started", |r| r.status == RoundStatus::Open).await
}

/// Waits until `f` holds for the round of `epoch`.
async fn until_round(c: &Cluster, epoch: u64, what: &str, f: impl Fn(&Round) -> bool) -> Round {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(r) = c.round(epoch).await {
            if f(&r) {
                return r;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for round {epoch}: {what}");
        // Polling the chain (the keeper's work is not signalled to the test otherwise).
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_are_started_locked_settled_and_a_silent_feed_refunded() {
    let (c, dir, key) = funded(true).await;
    let text = c.config(dir.path(), &[], &key, "");
    let mut k = run_keeper(&text).await;

    // Epoch 0 opens at GENESIS: the keeper starts it.
    start_round_0(&c, &mut k).await;
    c.bet_both(0).await;

    // Its lock (GENESIS + IV): the price in effect is the one stamped at or before it, final once a transmission
    // stamped after it is on the feed and the report delay has passed. Before that the keeper sends nothing.
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    k.wait_started(1).await;
    assert_eq!(c.round(0).await.unwrap().status, RoundStatus::Open, "no transmission after the lock yet");
    let early = k.keeper_store.all_txs("solana").await.unwrap();
    assert!(!early.iter().any(|t| t.action == "lock:1:0"), "nothing signed before the price is final: {early:?}");
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    let lock = k
        .wait("round 0 locked", |s| match s {
            SignalKind::RoundLocked { chain, epoch: 0, lock_price, .. } if chain == "solana" => Some(*lock_price),
            _ => None,
        })
        .await;
    assert_eq!(lock, kronos_common::Decimal::from_fixed((PRICE + 100) as i128, 8).unwrap());

    // Epoch 0 closes at GENESIS + 2·IV, up on its lock.
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    let outcome = k.wait_settled(0).await;
    assert_eq!(outcome, Outcome::Up);
    k.wait_started(2).await;
    let r0 = c.round(0).await.unwrap();
    assert_eq!(
        (r0.status, r0.lock_price, r0.close_price),
        (RoundStatus::Settled, (PRICE + 100) as i128, (PRICE + 500) as i128)
    );
    // Epoch 1 locked at the same timestamp's price (one price per timestamp), nobody bet on it.
    let r1 = until_round(&c, 1, "locked", |r| r.status != RoundStatus::Open).await;
    assert_eq!(r1.lock_price, (PRICE + 500) as i128);

    // The feed falls silent: nothing is stamped after epoch 1's close, so it cannot settle; once its settle window
    // has passed the keeper has the program cancel it (every stake refundable).
    c.warp_to(GENESIS + 3 * IV + DELAY).await;
    k.wait_started(3).await;
    assert_eq!(c.round(1).await.unwrap().status, RoundStatus::Locked);
    c.warp_to(GENESIS + 3 * IV + IV + 1).await;
    let reason = k.wait_cancelled(1).await;
    assert_eq!(reason, kronos_common::signals::CancelReason::Expired);

    // The store has the rounds and every transaction; each action was sent once.
    let rounds = k.keeper_store.rounds(Some("solana"), Some(1), 10).await.unwrap();
    assert!(rounds.iter().any(|r| r.epoch == 0 && r.state.to_string() == "settled"), "{rounds:?}");
    assert!(rounds.iter().any(|r| r.epoch == 1 && r.state.to_string() == "cancelled"), "{rounds:?}");
    let txs = k.keeper_store.all_txs("solana").await.unwrap();
    // Every transaction signed, whatever became of it (audit SOL tests: confirmed ones alone cannot be twice).
    let mut actions: Vec<&str> = txs.iter().map(|t| t.action.as_str()).collect();
    actions.sort();
    let mut unique = actions.clone();
    unique.dedup();
    assert_eq!(actions, unique, "an action signed twice: {txs:?}");
    assert!(txs.iter().all(|t| t.status.as_str() == "confirmed"), "{txs:?}");
    for a in ["start:1:0", "lock:1:0", "settle:1:0", "refund:1:1"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // /health has the cluster, /metrics its counters.
    let health: Value = serde_json::from_str(&k.get("/health").await).unwrap();
    assert_eq!(health["chains"]["solana"]["healthy"], json!(true), "{health}");
    let metrics = k.get("/metrics").await;
    assert!(metrics.contains("kronos_tx_confirmed{chain=\"solana\"}"), "{metrics}");
    // `kronos markets` and `kronos status` show the cluster (delays in slots too).
    let cfg = Config::parse(&text, "(test)", &|_| None).unwrap();
    let mut out = Vec::new();
    kronos_keeper::status::markets(&cfg, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("solana (Solana), kronos-market program"), "{out}");
    assert!(out.contains("report delay 10s (25 slots)") && out.contains("; feed approved"), "{out}");
    let status = kronos_keeper::status::Status::collect(&cfg, 5).await.unwrap().text();
    assert!(status.contains("solana: head ") && status.contains(" settled "), "{status}");
    k.stop().await;
}

/// A bettor of `side` on round `epoch`, its key kept (to claim and close its position).
async fn bettor(c: &Cluster, epoch: u64, side: Side) -> Keypair {
    let user = Keypair::new();
    c.fund(&user.pubkey()).await;
    let round = round_key(&c.market, epoch);
    let accounts = acc::PlaceBet {
        user: user.pubkey(),
        market: c.market,
        round,
        position: pda(&[POSITION_SEED, round.as_ref(), user.pubkey().as_ref()]),
        vault: pda(&[VAULT_SEED, c.market.as_ref()]),
        user_token: None,
        token_program: None,
        system_program: anchor_lang::system_program::ID,
    };
    c.send(&[ixn(accounts, ix::Bet { epoch, side, amount: SOL, max_fee_bps: 300 })], &[&user]).await;
    user
}

/// `close_position` of `user` on round `epoch` (claiming first when `claim`).
async fn close_position(c: &Cluster, epoch: u64, user: &Keypair, claim: bool) {
    let round = round_key(&c.market, epoch);
    let position = pda(&[POSITION_SEED, round.as_ref(), user.pubkey().as_ref()]);
    let mut ixs = Vec::new();
    if claim {
        let mut accounts = acc::Claim {
            user: user.pubkey(),
            market: c.market,
            vault: pda(&[VAULT_SEED, c.market.as_ref()]),
            user_token: None,
            token_program: None,
        }
        .to_account_metas(None);
        accounts.push(anchor_lang::solana_program::instruction::AccountMeta::new(round, false));
        accounts.push(anchor_lang::solana_program::instruction::AccountMeta::new(position, false));
        ixs.push(Instruction { program_id: ID, accounts, data: ix::Claim {}.data() });
    }
    let accounts = acc::ClosePosition { user: user.pubkey(), market: c.market, round, position };
    ixs.push(ixn(accounts, ix::ClosePosition { epoch }));
    c.send(&ixs, &[user]).await;
}

/// AUDIT-2 A1: a settled round with open positions keeps the rent the keeper paid until its users close them —
/// only they may (`close_position` needs their signature; the keeper claims and closes nothing on their behalf) —
/// and the keeper keeps track of it past its look-back: once the positions are closed it closes the round and gets
/// the rent back. (The keeper used to read rounds only within its look-back, so such a round was never closed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_held_by_open_positions_is_closed_once_its_users_close_them_even_past_the_look_back() {
    let (c, dir, key) = funded(true).await;
    let mut k = c.keeper(&dir, &key).await;
    start_round_0(&c, &mut k).await;
    let up = bettor(&c, 0, Side::Up).await;
    let down = bettor(&c, 0, Side::Down).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    assert_eq!(k.wait_settled(0).await, Outcome::Up);
    k.wait_started(2).await;
    // Far past the look-back (3 epochs with this settle window): round 2, never locked and expired, holds no
    // position and is closed (the program cancels it as it closes it); round 0 holds two positions and stays.
    c.warp_to(GENESIS + 10 * IV + 1).await;
    until_tx(&k, "close:1:2").await;
    assert!(c.round(2).await.is_none(), "round 2 closed");
    assert_eq!(c.round(0).await.unwrap().positions, 2);
    assert!(k.txs_for("close:1:0").await.is_empty(), "nothing sent for a round its users hold");
    // Its users claim and close their positions; at the next interval the keeper closes it, its rent back.
    close_position(&c, 0, &up, true).await;
    close_position(&c, 0, &down, false).await;
    assert_eq!(c.round(0).await.unwrap().positions, 0);
    c.warp_to(GENESIS + 11 * IV + 1).await;
    // (`close_round` sends the rent to the round's payer, the keeper: the program checks it.)
    until_tx(&k, "close:1:0").await;
    assert!(c.round(0).await.is_none(), "round 0 closed");
    let txs = k.txs_for("close:1:0").await;
    assert_eq!(txs.len(), 1, "{txs:?}");
    k.stop().await;
}

/// M3: two keepers on one PostgreSQL store, each with its own signer, drive one Solana market: one leads it (its
/// lease), the other stands by and signs nothing — not even while the leader's start is held unlanded by the node,
/// when a keeper without leases sees the step still needed and signs it too — and takes over when the leader stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_keepers_on_one_store_one_leads_the_market_the_other_stands_by_then_takes_over() {
    let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let (c, dir_a, key_a) = funded(true).await;
    let dir_b = tempfile::tempdir().unwrap();
    let key_b = Keypair::new();
    c.fund(&key_b.pubkey()).await;
    let on_pg = |dir: &std::path::Path, key: &Keypair, id: &str| {
        let sqlite = format!("store = \"sqlite://{}/keeper.db\"", dir.display());
        let text = c.config(dir, &[], key, "");
        assert!(text.contains(&sqlite), "{text}");
        text.replace(
            &sqlite,
            &format!("store = \"{}\"\nkeeper_id = \"{id}\"\nlease_ttl_ms = 3000\nlease_refresh_ms = 500", pg.url()),
        )
    };
    let mut a = run_keeper(&on_pg(dir_a.path(), &key_a, "keeper-a")).await;
    start_round_0(&c, &mut a).await;
    let b = run_keeper(&on_pg(dir_b.path(), &key_b, "keeper-b")).await;
    until_healthy(&b, "the standby connected").await;
    // The leader's next start is held by the node: the step stays needed on chain while it is held.
    c.control("hold_next_sends", json!({ "n": 1_000_000 })).await;
    c.warp_to(GENESIS + IV + 1).await;
    let held = a.until_sent("start:1:1").await;
    assert_eq!(held.signer, key_a.pubkey().to_string());
    // Two more passes of the standby (each one a healthy pass on /health) while the start is held.
    for _ in 0..2 {
        let last = solana_health(&b).await["last_success_ms"].as_u64().unwrap();
        until_health(&b, "another pass of the standby", |h| h["last_success_ms"].as_u64().unwrap() > last).await;
    }
    c.control("hold_next_sends", json!({ "n": 0 })).await;
    c.control("land_held", json!({})).await;
    until_open(&c, 1).await;
    let txs = a.keeper_store.all_txs("solana").await.unwrap();
    assert!(txs.iter().all(|t| t.signer == key_a.pubkey().to_string()), "the standby signed: {txs:?}");
    // The leader stops (its lease given up): the standby takes the market over.
    a.stop().await;
    c.warp_to(GENESIS + 2 * IV + 1).await;
    until_open(&c, 2).await;
    let txs = b.keeper_store.all_txs("solana").await.unwrap();
    let starts: Vec<_> = txs.iter().filter(|t| t.action == "start:1:2").collect();
    assert_eq!(starts.len(), 1, "{txs:?}");
    assert_eq!(starts[0].signer, key_b.pubkey().to_string());
    // No step was signed by both keepers.
    for t in &txs {
        let signers: std::collections::BTreeSet<&str> =
            txs.iter().filter(|u| u.action == t.action).map(|u| u.signer.as_str()).collect();
        assert_eq!(signers.len(), 1, "{} signed by both keepers: {txs:?}", t.action);
    }
    b.stop().await;
}

/// Issue 15: on a token market the settle reward reaches the keeper's associated token account for the mint (it
/// used to stay with the treasury: the keeper passed no token account to `settle_round`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_market_s_settle_reward_reaches_the_keeper_s_token_account() {
    use anchor_lang::solana_program::program_option::COption;
    use anchor_lang::solana_program::program_pack::Pack;
    use anchor_spl::token::spl_token::state::{Account as TokenAccount, AccountState, Mint};
    let (c, dir, key) = funded(true).await;
    let a = c.authority.pubkey();
    let token_program = anchor_spl::token::ID;
    let put = |address: Pubkey, data: Vec<u8>| {
        c.control(
            "account",
            json!({ "address": address.to_string(), "lamports": SOL, "owner": token_program.to_string(),
                    "data": base64::engine::general_purpose::STANDARD.encode(&data) }),
        )
    };
    let mint = Pubkey::new_unique();
    let mut data = vec![0u8; Mint::LEN];
    let m = Mint {
        mint_authority: COption::Some(a),
        supply: 1_000_000_000_000,
        decimals: 6,
        is_initialized: true,
        freeze_authority: COption::None,
    };
    m.pack_into_slice(&mut data);
    put(mint, data).await;
    let token_account = |owner: Pubkey, amount: u64| {
        let mut data = vec![0u8; TokenAccount::LEN];
        let t = TokenAccount {
            mint,
            owner,
            amount,
            delegate: COption::None,
            state: AccountState::Initialized,
            is_native: COption::None,
            delegated_amount: 0,
            close_authority: COption::None,
        };
        t.pack_into_slice(&mut data);
        data
    };
    // The keeper's associated token account for the mint (empty).
    let ata = anchor_spl::associated_token::get_associated_token_address(&key.pubkey(), &mint);
    put(ata, token_account(key.pubkey(), 0)).await;
    let market = pda(&[MARKET_SEED, a.as_ref(), &2u64.to_le_bytes()]);
    let vault = pda(&[VAULT_SEED, market.as_ref()]);
    let params = Params {
        fee_bps: 300,
        min_bet: 1_000,
        max_price_age: 3_600,
        settle_window: IV as u32,
        report_delay: DELAY as u32,
        bet_cutoff: 10,
        settler_reward_bps: 1_000,
    };
    let init = ixn(
        acc::InitializeTokenMarket {
            authority: a,
            market,
            mint,
            vault,
            feed: c.feed,
            feed_approval: pda(&[FEED_SEED, c.feed.as_ref()]),
            token_program,
            system_program: anchor_lang::system_program::ID,
        },
        ix::InitializeTokenMarket { id: 2, genesis: GENESIS, interval: IV as u32, params },
    );
    c.send(&[init], &[&c.authority]).await;
    let text = c
        .config(dir.path(), &[], &key, "")
        .replace(&format!("markets = [\"{}\"]", c.market), &format!("markets = [\"{market}\"]"));
    let mut k = run_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    let round = round_key(&market, 0);
    for side in [Side::Up, Side::Down] {
        let user = Keypair::new();
        c.fund(&user.pubkey()).await;
        let stake = Pubkey::new_unique();
        put(stake, token_account(user.pubkey(), 10_000_000)).await;
        let accounts = acc::PlaceBet {
            user: user.pubkey(),
            market,
            round,
            position: pda(&[POSITION_SEED, round.as_ref(), user.pubkey().as_ref()]),
            vault,
            user_token: Some(stake),
            token_program: Some(token_program),
            system_program: anchor_lang::system_program::ID,
        };
        c.send(&[ixn(accounts, ix::Bet { epoch: 0, side, amount: 1_000_000, max_fee_bps: 300 })], &[&user]).await;
    }
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    assert_eq!(k.wait_settled(0).await, Outcome::Up);
    let r = c.client.get_account_with_commitment(&round, CommitmentConfig::confirmed()).await.unwrap().value.unwrap();
    let r = Round::try_deserialize(&mut r.data.as_slice()).unwrap();
    // 2 tokens staked: a 3% fee (60,000 units), a tenth of it to the settler.
    assert_eq!(r.settler_reward, 6_000);
    let got = c.client.get_account_with_commitment(&ata, CommitmentConfig::confirmed()).await.unwrap().value.unwrap();
    assert_eq!(TokenAccount::unpack(&got.data).unwrap().amount, 6_000);

    // Audit L4: the keeper's account frozen (by the mint's freeze authority): the next round is still settled,
    // its reward left with the treasury (before, every settle failed on the frozen transfer until the refund).
    let mut frozen = TokenAccount::unpack(&got.data).unwrap();
    frozen.state = AccountState::Frozen;
    let mut data = vec![0u8; TokenAccount::LEN];
    frozen.pack_into_slice(&mut data);
    put(ata, data).await;
    k.wait_started(2).await;
    let round = round_key(&market, 2);
    for side in [Side::Up, Side::Down] {
        let user = Keypair::new();
        c.fund(&user.pubkey()).await;
        let stake = Pubkey::new_unique();
        put(stake, token_account(user.pubkey(), 10_000_000)).await;
        let accounts = acc::PlaceBet {
            user: user.pubkey(),
            market,
            round,
            position: pda(&[POSITION_SEED, round.as_ref(), user.pubkey().as_ref()]),
            vault,
            user_token: Some(stake),
            token_program: Some(token_program),
            system_program: anchor_lang::system_program::ID,
        };
        c.send(&[ixn(accounts, ix::Bet { epoch: 2, side, amount: 1_000_000, max_fee_bps: 300 })], &[&user]).await;
    }
    c.transmit(GENESIS + 3 * IV - 1, PRICE + 700).await;
    c.transmit(GENESIS + 3 * IV + 1, PRICE + 700).await;
    c.transmit(GENESIS + 4 * IV - 1, PRICE + 900).await;
    c.transmit(GENESIS + 4 * IV + 1, PRICE + 900).await;
    c.warp_to(GENESIS + 4 * IV + DELAY).await;
    assert_eq!(k.wait_settled(2).await, Outcome::Up);
    let got = c.client.get_account_with_commitment(&ata, CommitmentConfig::confirmed()).await.unwrap().value.unwrap();
    assert_eq!(TokenAccount::unpack(&got.data).unwrap().amount, 6_000, "nothing paid to the frozen account");
    k.stop().await;
}

/// Audit SOL L3: a restarted keeper does not signal again what it recorded before — a settled round, a round it
/// started — its state is read back from the store (the in-memory record alone made every restart repeat them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_keeper_does_not_signal_recorded_rounds_again() {
    let (c, dir, key) = funded(true).await;
    let mut k = c.keeper(&dir, &key).await;
    start_round_0(&c, &mut k).await;
    c.bet_both(0).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    assert_eq!(k.wait_settled(0).await, Outcome::Up);
    k.wait_started(2).await;
    k.stop().await;
    let mut k = c.keeper(&dir, &key).await;
    c.warp_to(GENESIS + 3 * IV + 1).await;
    // A pass records every live round before it acts: anything repeated comes before round 3's start.
    let repeated = k
        .wait("round 3 started", |s| match s {
            SignalKind::RoundStarted { chain, epoch: 3, .. } if chain == "solana" => Some(None),
            SignalKind::RoundStarted { chain, epoch, .. }
            | SignalKind::RoundLocked { chain, epoch, .. }
            | SignalKind::RoundSettled { chain, epoch, .. }
                if chain == "solana" =>
            {
                Some(Some(format!("epoch {epoch}: {s:?}")))
            }
            _ => None,
        })
        .await;
    assert_eq!(repeated, None, "signalled again after the restart");
    k.stop().await;
}

/// An endpoint that is down: connections to it are refused. Its port stays bound (never listening) for the whole test
/// process, so no other test's server running in parallel can take it and answer as the "dead" endpoint.
fn dead_url() -> String {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    // Held (leaked) for the test process.
    let _: &'static tokio::net::TcpSocket = Box::leak(Box::new(s));
    format!("http://127.0.0.1:{port}/")
}

/// Keeps the JSON body of `/health`'s Solana entry.
async fn solana_health(k: &Running) -> Value {
    let health: Value = serde_json::from_str(&k.get("/health").await).unwrap();
    health["chains"]["solana"].clone()
}

async fn until_healthy(k: &Running, what: &str) -> Value {
    until_health(k, what, |h| h["healthy"] == json!(true)).await
}

/// Waits until /health says the market is refused.
async fn until_refused(k: &Running) -> Value {
    until_health(k, "refused", |h| h["last_error"].as_str().is_some_and(|e| e.contains("refused"))).await
}

/// The value of the Solana series `name` in a /metrics body, if there.
fn metric(metrics: &str, name: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{chain=\"solana\"}}")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

async fn until_health(k: &Running, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let h = solana_health(k).await;
        if f(&h) {
            return h;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for /health: {what}: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_rpc_down_fails_over_and_a_dropped_transaction_is_rebroadcast() {
    let (c, dir, key) = funded(true).await;
    let dead = dead_url();
    let k = run_keeper(&c.config(dir.path(), &[&dead], &key, "")).await;
    // The node accepts the next start and drops it: the keeper sends it again (maxRetries = 0 leaves that to it).
    c.control("drop_next_sends", json!({ "n": 1 })).await;
    c.warp_to(GENESIS + 1).await;
    until_open(&c, 0).await;
    let txs = k.keeper_store.all_txs("solana").await.unwrap();
    let starts: Vec<_> = txs.iter().filter(|t| t.action == "start:1:0").collect();
    assert_eq!(starts.len(), 1, "one transaction, broadcast twice: {txs:?}");
    until_tx(&k, "start:1:0").await;
    let metrics = k.get("/metrics").await;
    let value = |name: &str| metric(&metrics, name).unwrap_or_else(|| panic!("{name} missing: {metrics}"));
    assert!(value("kronos_tx_rebroadcasts") >= 1, "{metrics}");
    assert!(value("kronos_rpc_failovers") >= 1, "{metrics}");
    // /health names the dead endpoint by host only and the live one as the one in use.
    let h = solana_health(&k).await;
    assert_eq!(h["rpc_endpoint"], json!(1), "{h}");
    assert_eq!(h["endpoints"][0]["up"], json!(false), "{h}");
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_blockhash_is_re_signed_once_the_round_still_needs_it_and_acts_once() {
    let (c, dir, key) = funded(true).await;
    let k = c.keeper(&dir, &key).await;
    // Every send is dropped until the blockhash the keeper signed with has left the bank's window.
    c.control("drop_next_sends", json!({ "n": 1_000_000 })).await;
    c.warp_to(GENESIS + 1).await;
    let first = k.until_sent("start:1:0").await;
    // The keeper's transaction is not on chain; the chain moves past the last block height its blockhash is valid
    // for (the store's `nonce` column), so it can never land.
    let sig: solana_signature::Signature = first.tx_hash.parse().unwrap();
    assert!(c.client.get_signature_statuses(&[sig]).await.unwrap().value[0].is_none());
    let last_valid = first.nonce as u64;
    while c.client.get_block_height().await.unwrap() <= last_valid {
        c.control("warp", json!({ "slots": 16 })).await;
    }
    c.control("drop_next_sends", json!({ "n": 0 })).await;
    until_open(&c, 0).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let starts = k.txs_for("start:1:0").await;
        let confirmed = starts.iter().filter(|t| t.status.as_str() == "confirmed").count();
        let dropped = starts.iter().filter(|t| t.status.as_str() == "dropped").count();
        if confirmed == 1 {
            assert!(dropped >= 1, "the expired one is recorded as dropped: {starts:?}");
            assert_eq!(starts.len(), dropped + 1, "{starts:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{starts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keeper_killed_mid_crank_restarts_without_sending_twice() {
    let (c, dir, key) = funded(true).await;
    let text = c.config(dir.path(), &[], &key, "");
    let k = run_keeper(&text).await;
    c.control("drop_next_sends", json!({ "n": 1_000_000 })).await;
    c.warp_to(GENESIS + 1).await;
    // Killed while its start is in flight (sent, not landed).
    k.until_sent("start:1:0").await;
    k.task.abort();
    let _ = k.task.await;
    // The restarted keeper finds the open transaction and waits for it (it could still land) until its blockhash
    // can no longer land, before it signs anything.
    c.control("drop_next_sends", json!({ "n": 0 })).await;
    let restarted = tokio::spawn(async move { run_keeper(&text).await });
    let open_while_valid = k.keeper_store.all_txs("solana").await.unwrap();
    assert_eq!(open_while_valid.iter().filter(|t| t.action == "start:1:0").count(), 1);
    let height = c.client.get_block_height().await.unwrap();
    let target = open_while_valid[0].nonce as u64 + 1;
    c.control("warp", json!({ "slots": target.saturating_sub(height) })).await;
    let k = restarted.await.unwrap();
    until_open(&c, 0).await;
    let starts = k.txs_for("start:1:0").await;
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0].status.as_str(), "dropped", "{starts:?}");
    // The next actions follow, each once.
    c.bet(0, Side::Up).await;
    c.transmit(GENESIS + IV + 1, PRICE).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    until_round(&c, 0, "locked", |r| r.status == RoundStatus::Locked).await;
    until_tx(&k, "lock:1:0").await;
    let txs = k.keeper_store.all_txs("solana").await.unwrap();
    let locks = txs.iter().filter(|t| t.action == "lock:1:0" && t.status.as_str() == "confirmed").count();
    assert_eq!(locks, 1, "{txs:?}");
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn markets_on_unapproved_or_changed_feeds_are_refused_and_health_says_why() {
    // Revoked: no FeedApproval left.
    let (c, dir, key) = funded(false).await;
    let k = c.keeper(&dir, &key).await;
    c.warp_to(GENESIS + 1).await;
    let h = until_refused(&k).await;
    assert_eq!(h["healthy"], json!(false), "{h}");
    let why = h["last_error"].as_str().unwrap();
    assert!(why.contains("refused: the feed has no FeedApproval"), "{h}");
    assert!(c.round(0).await.is_none(), "nothing was started");
    assert!(k.keeper_store.all_txs("solana").await.unwrap().is_empty());
    k.stop().await;

    // Approved, but its writer changed after the market pinned it.
    let c = Cluster::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    c.fund(&key.pubkey()).await;
    let k = c.keeper(&dir, &key).await;
    c.load_feed(c.owner, Pubkey::new_unique()).await;
    c.warp_to(GENESIS + 1).await;
    let h = until_refused(&k).await;
    assert!(h["last_error"].as_str().unwrap().contains("writer is no longer the one pinned"), "{h}");
    assert_eq!(h["healthy"], json!(false), "{h}");
    assert!(c.round(0).await.is_none());
    // The writer back: driven again.
    c.load_feed(c.owner, c.writer).await;
    until_open(&c, 0).await;
    until_healthy(&k, "healthy again").await;
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_configuration_names_the_field_and_the_signer_key_is_never_logged() {
    let c = Cluster::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::new();
    let text = c.config(dir.path(), &[], &key, "");
    let bad = text.replace(&format!("program = \"{ID}\""), "program = \"nope\"");
    let e = Config::parse(&bad, "k.toml", &|_| None).unwrap_err().to_string();
    assert!(e.contains("k.toml: solana[0].program: 'nope' is not a base58 public key"), "{e}");
    let e = Config::parse(&text.replace("rebroadcast_s = 1", "rebroadcast_s = 0"), "k.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("solana[0].rebroadcast_s"), "{e}");

    // Every log line of a keeper driving a round, captured.
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || Capture(sink.clone()))
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    c.fund(&key.pubkey()).await;
    let mut k = run_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    k.stop().await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(logs.contains("solana: round"), "the keeper's lines were captured");
    let secret = key.to_bytes();
    assert!(!logs.contains(&key.to_base58_string()));
    assert!(!logs.contains(&bs58::encode(&secret[..32]).into_string()));
    assert!(!logs.contains(&format!("{:?}", &secret[..32])));
    assert!(!logs.contains(&serde_json::to_string(&secret.to_vec()).unwrap()));
}

struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until the keeper's store has `action` confirmed.
async fn until_tx(k: &Running, action: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let txs = k.keeper_store.all_txs("solana").await.unwrap();
        if txs.iter().any(|t| t.action == action && t.status.as_str() == "confirmed") {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {action} confirmed: {txs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Against a real `solana-test-validator` (the keeper unchanged): runs only when the binary is on PATH and
/// `KRONOS_MARKET_SO` names the program's SBF build (`anchor build`); otherwise it prints why it is skipped.
/// Loads the program as upgradeable (so its authority can configure it) and a Chainlink store-format feed account,
/// creates a 60 s market whose first round starts a few seconds from now, and waits for the keeper to start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn solana_test_validator_round_started_by_the_keeper() {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("solana-test-validator").is_file()))
        .unwrap_or(false);
    let so = std::env::var("KRONOS_MARKET_SO").ok();
    let Some(so) = so.filter(|_| on_path) else {
        println!(
            "skipped: needs solana-test-validator on PATH (found: {on_path}) and KRONOS_MARKET_SO naming the program's SBF build (anchor build)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let authority = Keypair::new();
    let a = authority.pubkey();
    let feed = Pubkey::new_unique();
    let (owner, writer) = (Pubkey::new_unique(), Pubkey::new_unique());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let data = kronos_market::chainlink::encode_with(
        &kronos_market::chainlink::Meta { decimals: 8, state: 0, owner: owner.to_bytes(), writer: writer.to_bytes() },
        "BTC / USD",
        64,
        &[kronos_market::chainlink::Transmission { slot: 0, timestamp: (now - 30) as u32, answer: PRICE as i128 }],
    );
    let feed_file = dir.path().join("feed.json");
    let account = json!({ "pubkey": feed.to_string(), "account": {
        "lamports": 10 * SOL, "data": [base64::engine::general_purpose::STANDARD.encode(&data), "base64"],
        "owner": kronos_market::state::CHAINLINK_STORE.to_string(), "executable": false, "rentEpoch": 0,
        "space": data.len() } });
    std::fs::write(&feed_file, account.to_string()).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut validator = tokio::process::Command::new("solana-test-validator")
        .args(["--ledger", &dir.path().join("ledger").display().to_string(), "--rpc-port", &port.to_string()])
        .args(["--upgradeable-program", &ID.to_string(), &so, &a.to_string()])
        .args(["--account", &feed.to_string(), &feed_file.display().to_string()])
        .arg("--quiet")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = RpcClient::new_with_commitment(url.clone(), CommitmentConfig::confirmed());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while client.get_version().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "solana-test-validator did not answer on {url}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for k in [a] {
        let sig = client.request_airdrop(&k, 10 * SOL).await.unwrap();
        while !client.confirm_transaction(&sig).await.unwrap() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let loader = anchor_lang::solana_program::bpf_loader_upgradeable::ID;
    let program_data = Pubkey::find_program_address(&[ID.as_ref()], &loader).0;
    let config = pda(&[CONFIG_SEED]);
    let approval = pda(&[FEED_SEED, feed.as_ref()]);
    let market = pda(&[MARKET_SEED, a.as_ref(), &1u64.to_le_bytes()]);
    let system = anchor_lang::system_program::ID;
    let genesis = now + 20;
    let params = Params {
        fee_bps: 300,
        min_bet: 1_000,
        max_price_age: 3_600,
        settle_window: 600,
        report_delay: 10,
        bet_cutoff: 10,
        settler_reward_bps: 0,
    };
    let ixs = [
        ixn(
            acc::InitializeConfig { upgrade_authority: a, config, program_data, system_program: system },
            ix::InitializeConfig { admin: a },
        ),
        ixn(acc::ApproveFeed { admin: a, config, feed, approval, system_program: system }, ix::ApproveFeed {}),
        ixn(
            acc::InitializeMarket {
                authority: a,
                market,
                vault: pda(&[VAULT_SEED, market.as_ref()]),
                feed,
                feed_approval: approval,
                system_program: system,
            },
            ix::InitializeMarket { id: 1, genesis, interval: 60, params },
        ),
    ];
    let bh = client.get_latest_blockhash().await.unwrap();
    let tx = Transaction::new_signed_with_payer(&ixs, Some(&a), &[&authority], bh);
    client.send_and_confirm_transaction(&tx).await.unwrap();
    // The keeper is the authority here (funded above); its key in a file.
    let key_file = dir.path().join("id.json");
    std::fs::write(&key_file, serde_json::to_string(&authority.to_bytes().to_vec()).unwrap()).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = format!(
        "[keeper]\ncatalogue = \"{root}/config/chains.toml\"\nstore = \"sqlite://{}/keeper.db\"\nlisten = \"127.0.0.1:0\"\nsigner = {{ env = \"UNUSED_EVM_KEY\" }}\npoll_ms = 200\n\n[[solana]]\nname = \"solana\"\nrpc = [\"{url}\"]\nprogram = \"{ID}\"\nmarkets = [\"{market}\"]\nkey_file = \"{}\"\nlocal = true\n",
        dir.path().display(),
        key_file.display()
    );
    let mut k = run_keeper(&text).await;
    k.wait_started(0).await;
    let r =
        Round::try_deserialize(&mut client.get_account(&round_key(&market, 0)).await.unwrap().data.as_slice()).unwrap();
    assert_eq!((r.status, r.start_ts), (RoundStatus::Open, genesis));
    k.stop().await;
    validator.kill().await.unwrap();
}

/// A TCP forwarder to the local RPC that can be cut (its listener and every open connection), so an endpoint can
/// die mid-run.
struct Cut {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cut {
    async fn to(target: std::net::SocketAddr) -> Cut {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let c2 = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                    }
                });
                c2.lock().unwrap().push(h);
            }
        });
        Cut { port, accept, conns }
    }

    async fn cut(&self) {
        self.accept.abort();
        while !self.accept.is_finished() {
            tokio::task::yield_now().await;
        }
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// Audit SOL H1 and H2: an RPC URL's API key never reaches /health, the signals (Telegram, /ws, the store's events)
/// — an endpoint dead from the start, and one that dies mid-run; and a cluster that does not answer at start does
/// not fail `Keeper::build` (the API serves, /health says why).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_endpoint_that_dies_never_leaks_its_key_and_never_stops_the_keeper() {
    let (c, dir, key) = funded(true).await;
    let live = format!(", \"{}\"", c.rpc.url());
    // Dead from the start, the only endpoint: the keeper is built and serves; /health names host and kind only.
    let dead = format!("{}v1/PathSecret42?api-key=Secret42", dead_url());
    let text = c.config(dir.path(), &[&dead], &key, "").replace(&live, "");
    let k = run_keeper(&text).await;
    let h = until_health(&k, "not connected", |h| {
        h["last_error"].as_str().is_some_and(|e| e.contains("no RPC endpoint answers"))
    })
    .await;
    assert_eq!(h["healthy"], json!(false), "{h}");
    assert!(h["last_error"].as_str().unwrap().contains("connection failed"), "{h}");
    let body = k.get("/health").await;
    assert!(!body.contains("Secret42"), "{body}");
    k.stop().await;

    // Alive, then cut mid-run.
    let cut = Cut::to(c.rpc.addr()).await;
    // (The local server answers at `/` only: the key in the query.)
    let keyed = format!("http://127.0.0.1:{}/?api-key=Secret42", cut.port);
    let dir = tempfile::tempdir().unwrap();
    let text = c.config(dir.path(), &[&keyed], &key, "").replace(&live, "");
    let mut k = run_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    until_healthy(&k, "healthy").await;
    cut.cut().await;
    let detail = k.wait_unhealthy().await;
    assert!(detail.contains("no RPC endpoint answers") && !detail.contains("Secret42"), "{detail}");
    let body = k.get("/health").await;
    assert!(body.contains("no RPC endpoint answers") && !body.contains("Secret42"), "{body}");
    let events = k.keeper_store.all_txs("solana").await.unwrap();
    assert!(!format!("{events:?}").contains("Secret42"));
    // Every signal so far, as /ws and the store's events carry them.
    while let Ok(s) = k.rx.try_recv() {
        let text = serde_json::to_string(&*s).unwrap();
        assert!(!text.contains("Secret42"), "{text}");
    }
    k.stop().await;
}

/// Audit SOL H2 and H3: without `markets` the keeper drives only the markets of its `creators`; a second creator's
/// market with the same id (anyone can create one) neither stops it nor is driven; and the rent of every round the
/// keeper started comes back by `close_round` once the program allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_drives_only_listed_creators_and_the_rent_of_finished_rounds_comes_back() {
    let c = Cluster::start(true).await;
    // Another creator's market, id 1 too, on the same approved feed.
    let other = Keypair::new();
    c.fund(&other.pubkey()).await;
    let o = other.pubkey();
    let foreign = pda(&[MARKET_SEED, o.as_ref(), &1u64.to_le_bytes()]);
    let params = Params {
        fee_bps: 300,
        min_bet: 1_000,
        max_price_age: 3_600,
        settle_window: IV as u32,
        report_delay: DELAY as u32,
        bet_cutoff: 10,
        settler_reward_bps: 1_000,
    };
    let init = ixn(
        acc::InitializeMarket {
            authority: o,
            market: foreign,
            vault: pda(&[VAULT_SEED, foreign.as_ref()]),
            feed: c.feed,
            feed_approval: pda(&[FEED_SEED, c.feed.as_ref()]),
            system_program: anchor_lang::system_program::ID,
        },
        ix::InitializeMarket { id: 1, genesis: GENESIS, interval: IV as u32, params },
    );
    c.send(&[init], &[&other]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::new();
    c.fund(&key.pubkey()).await;
    let before = c.client.get_balance(&key.pubkey()).await.unwrap();
    let text = c
        .config(dir.path(), &[], &key, "")
        .replace(&format!("markets = [\"{}\"]", c.market), &format!("creators = [\"{}\"]", c.authority.pubkey()));
    assert!(!text.contains("markets = "), "{text}");
    let mut k = run_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    let foreign_round = round_key(&foreign, 0);
    let foreign_round = c.client.get_account_with_commitment(&foreign_round, CommitmentConfig::confirmed()).await;
    assert!(foreign_round.unwrap().value.is_none(), "another creator's market is not driven");
    // Round 0 (nobody bet) locks and settles, round 1 locks: round 0 can be closed, its rent back to the keeper.
    c.transmit(GENESIS + IV + 1, PRICE).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    until_tx(&k, "close:1:0").await;
    assert!(c.round(0).await.is_none(), "round 0 closed");
    let after = c.client.get_balance(&key.pubkey()).await.unwrap();
    // What the keeper is out of: the rent of the rounds still open, and its fees (5,000 lamports a signature, no
    // priority fee on this node) — not one round's rent more.
    let mut rent_held = 0;
    for e in 1..=3 {
        let round = round_key(&c.market, e);
        let a = c.client.get_account_with_commitment(&round, CommitmentConfig::confirmed()).await;
        if let Some(a) = a.unwrap().value {
            assert_eq!(Round::try_deserialize(&mut a.data.as_slice()).unwrap().payer, key.pubkey());
            rent_held += a.lamports;
        }
    }
    let txs = k.keeper_store.all_txs("solana").await.unwrap();
    let fees = 5_000 * txs.len() as u64;
    assert!(rent_held > 0);
    assert!(
        before - after <= rent_held + fees,
        "out {} with {rent_held} in rent and fees {fees}: {txs:?}",
        before - after
    );
    let h = solana_health(&k).await;
    assert_eq!(h["healthy"], json!(true), "the foreign market is no alarm: {h}");
    k.stop().await;
}

/// Audit SOL M1 and M2: the node holds the keeper's start and lands it late, and meanwhile answers its status
/// queries with errors: the keeper keeps following that one transaction (no second start is signed while it may
/// still land), records it confirmed once it lands, and leaves no pending row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_landing_late_after_status_errors_is_the_only_one_sent() {
    let (c, dir, key) = funded(true).await;
    let k = c.keeper(&dir, &key).await;
    until_healthy(&k, "healthy").await;
    c.control("hold_next_sends", json!({ "n": 1_000_000 })).await;
    c.control("fail_next", json!({ "method": "getSignatureStatuses", "n": 6 })).await;
    c.warp_to(GENESIS + 1).await;
    // The keeper keeps following its start through the failed status queries (spent mostly by it: it reads every
    // 100 ms, this loop every 500 ms; AUDIT5-SOL M2: they no longer flip /health, so they are waited out here)...
    let sent = k.until_sent("start:1:0").await;
    let sig: solana_signature::Signature = sent.tx_hash.parse().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c.client.get_signature_statuses(&[sig]).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "getSignatureStatuses never answered again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(c.round(0).await.is_none(), "still held");
    // ... and the start lands late (program-test's bank forgets a blockhash within about a second: landed soon).
    // Landed before holding stops: a rebroadcast of the same transaction sent in between would land first (seen
    // under load: the held one then answered `AlreadyProcessed`); one sent after it is held and never landed.
    let landed = c.control("land_held", json!({})).await;
    c.control("hold_next_sends", json!({ "n": 0 })).await;
    assert_eq!(landed["landed"][0]["error"], Value::Null, "{landed}");
    until_open(&c, 0).await;
    until_tx(&k, "start:1:0").await;
    let txs = k.keeper_store.all_txs("solana").await.unwrap();
    let starts: Vec<_> = txs.iter().filter(|t| t.action == "start:1:0").collect();
    assert_eq!(starts.len(), 1, "one start signed: {txs:?}");
    assert!(txs.iter().all(|t| t.status.as_str() != "pending"), "{txs:?}");
    k.stop().await;
}

/// Audit SOL M8: a market refused for a changed writer gets no new round, but its running round with stakes is
/// refunded at once (the program cancels it with `FeedChanged` at its lock) instead of being left to its settle
/// window; after `revoke_feed` a running round is still locked and settled (the pinned writer unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_market_s_running_rounds_are_still_driven_to_their_end() {
    let (c, dir, key) = funded(true).await;
    let mut k = c.keeper(&dir, &key).await;
    start_round_0(&c, &mut k).await;
    c.bet_both(0).await;
    // The writer changes while round 0 takes bets: at its lock time the keeper has the program refund it.
    c.load_feed(c.owner, Pubkey::new_unique()).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    let reason = k.wait_cancelled(0).await;
    assert_eq!(reason, kronos_common::signals::CancelReason::LockPriceUnusable);
    assert_eq!(c.round(0).await.unwrap().cancel_reason, kronos_market::state::CancelReason::FeedChanged);
    assert!(c.round(1).await.is_none(), "no new round on a refused market");
    let h = until_refused(&k).await;
    assert_eq!(h["healthy"], json!(false), "{h}");
    k.stop().await;

    // Revoked while round 0 runs: it is still locked and settled.
    let c = Cluster::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    c.fund(&key.pubkey()).await;
    let mut k = c.keeper(&dir, &key).await;
    start_round_0(&c, &mut k).await;
    c.bet_both(0).await;
    let a = c.authority.pubkey();
    let revoke = ixn(
        acc::RevokeFeed { admin: a, config: pda(&[CONFIG_SEED]), approval: pda(&[FEED_SEED, c.feed.as_ref()]) },
        ix::RevokeFeed {},
    );
    c.send(&[revoke], &[&c.authority]).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 100).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 500).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    let outcome = k.wait_settled(0).await;
    assert_eq!(outcome, Outcome::Up);
    assert!(c.round(1).await.is_none() && c.round(2).await.is_none(), "no new round once revoked");
    k.stop().await;
}

/// Audit SOL M4: a malformed `getMultipleAccounts` answer (one account short) is an error on /health and the next
/// passes go on (it indexed the answer and panicked the task, /health staying green).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_answer_is_an_error_on_health_and_the_driver_goes_on() {
    let (c, dir, key) = funded(true).await;
    let mut k = c.keeper(&dir, &key).await;
    until_healthy(&k, "healthy").await;
    c.control("short_next_accounts", json!({ "n": 3 })).await;
    let detail = k.wait_unhealthy().await;
    assert!(detail.contains("getMultipleAccounts answered"), "{detail}");
    start_round_0(&c, &mut k).await;
    until_healthy(&k, "healthy again").await;
    k.stop().await;
}

/// Audit SOL tests: failover mid-run — the preferred endpoint serves the first round, dies, and the next round is
/// started through the second one (/health and the failover counter say so).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preferred_rpc_dying_mid_run_fails_over() {
    let (c, dir, key) = funded(true).await;
    let cut = Cut::to(c.rpc.addr()).await;
    let first = format!("http://127.0.0.1:{}/", cut.port);
    let mut k = run_keeper(&c.config(dir.path(), &[&first], &key, "")).await;
    start_round_0(&c, &mut k).await;
    let h = solana_health(&k).await;
    assert_eq!(h["rpc_endpoint"], json!(0), "{h}");
    cut.cut().await;
    c.transmit(GENESIS + IV + 1, PRICE).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    k.wait_started(1).await;
    let h = until_health(&k, "on the second endpoint", |h| h["rpc_endpoint"] == json!(1)).await;
    assert_eq!(h["endpoints"][0]["up"], json!(false), "{h}");
    let metrics = k.get("/metrics").await;
    let failovers = metric(&metrics, "kronos_rpc_failovers");
    assert!(failovers.is_some_and(|n| n >= 1), "{metrics}");
    k.stop().await;
}

// ---- Issue 15: the forecaster's commit and reveal on the program's registry ----

/// The registry set up on the cluster (its cluster id: the bank's genesis hash) and the market enabled for
/// forecasts, by the program's upgrade authority and Config admin.
async fn with_registry(c: &Cluster) {
    use kronos_market::registry::{FORECAST_MARKET_SEED, REGISTRY_SEED};
    let a = c.authority.pubkey();
    let loader = anchor_lang::solana_program::bpf_loader_upgradeable::ID;
    let program_data = Pubkey::find_program_address(&[ID.as_ref()], &loader).0;
    let cluster = c.client.get_genesis_hash().await.unwrap().to_bytes();
    let system = anchor_lang::system_program::ID;
    let init = ixn(
        acc::InitializeRegistry {
            upgrade_authority: a,
            registry: pda(&[REGISTRY_SEED]),
            program_data,
            system_program: system,
        },
        ix::InitializeRegistry { cluster, reveal_window: 86_400 },
    );
    let enable = ixn(
        acc::EnableForecasts {
            admin: a,
            config: pda(&[CONFIG_SEED]),
            market: c.market,
            forecast_market: pda(&[FORECAST_MARKET_SEED, c.market.as_ref()]),
            system_program: system,
        },
        ix::EnableForecasts {},
    );
    c.send(&[init, enable], &[&c.authority]).await;
}

/// Hourly candles of a deterministic walk, all complete before any chain time the tests use.
struct WalkCandles;

impl kronos_keeper::publisher::CandleSource for WalkCandles {
    fn candles_until(&self, _chain: &str, _market: u64, _t: u64, max: usize) -> Vec<kronos_forecast::Candle> {
        let mut price = 65_000.0f64;
        let all: Vec<kronos_forecast::Candle> = (0..256i64)
            .map(|i| {
                let open = price;
                price *= 1.0 + 0.004 * ((i * 7919 % 13) as f64 - 6.0) / 6.0;
                kronos_forecast::Candle {
                    timestamp: 1_700_000_000 + i * 3_600,
                    open,
                    high: open.max(price) * 1.001,
                    low: open.min(price) * 0.999,
                    close: price,
                    volume: 10.0,
                    amount: 10.0 * price,
                }
            })
            .collect();
        all[all.len().saturating_sub(max)..].to_vec()
    }
}

/// A keeper configuration publishing forecasts (the shipped model, few samples) on this cluster.
fn forecasting_config(c: &Cluster, dir: &std::path::Path, key: &Keypair) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    format!(
        "[forecaster]\nmodel = \"{root}/oracle/forecast/model\"\nsamples = 4\n\n{}",
        c.config(dir, &[], key, "forecasts = true\n")
    )
}

async fn run_forecasting_keeper(text: &str) -> Running {
    // The keeper's own lines (not the bank's RPC chatter), shown by the test runner when a test fails: a forecast
    // test timed out twice under load with nothing else to go on (see the forecast task's debug lines). Only under
    // nextest, where each test is its own process: under `cargo test` a global subscriber would be shared by the
    // tests of this binary (one of them installs its own).
    if std::env::var_os("NEXTEST").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,kronos_keeper=debug"))
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    }
    let cfg = Config::parse(text, "(test)", &|_| None).unwrap();
    let bus = Bus::new(4096);
    let rx = bus.subscribe();
    let evm = alloy::signers::local::PrivateKeySigner::random();
    let ov = Overrides { candles: Some(Arc::new(WalkCandles)), ..Default::default() };
    let keeper = Keeper::build(&cfg, evm, bus, ov).await.unwrap();
    let api = keeper.api_addr().unwrap();
    let keeper_store = keeper.store.clone();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move { keeper.run(c).await.unwrap() });
    Running { cancel, task, api, rx, keeper_store, passed: Vec::new() }
}

impl Running {
    async fn wait_committed(&mut self, epoch: u64) -> u16 {
        self.wait_step(&format!("the forecast of round {epoch} committed"), |s| match s {
            SignalKind::PredictionCommitted { chain, epoch: e, p_up_bps, .. } if chain == "solana" && *e == epoch => {
                Some(*p_up_bps)
            }
            _ => None,
        })
        .await
    }

    async fn wait_revealed(&mut self, epoch: u64) -> (Outcome, Option<bool>, u64) {
        self.wait_step(&format!("the forecast of round {epoch} revealed"), |s| match s {
            SignalKind::PredictionRevealed { chain, epoch: e, outcome, hit, scored, .. }
                if chain == "solana" && *e == epoch =>
            {
                Some((*outcome, *hit, *scored))
            }
            _ => None,
        })
        .await
    }
}

impl Running {
    /// Waits until the keeper's `action` (a `close_commitment`) is confirmed and the account `key` is gone.
    async fn until_closed(&self, c: &Cluster, action: &str, key: &Pubkey) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let confirmed = self.txs_for(action).await.iter().any(|t| t.status.as_str() == "confirmed");
            if confirmed
                && c.client
                    .get_account_with_commitment(key, CommitmentConfig::confirmed())
                    .await
                    .unwrap()
                    .value
                    .is_none()
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the keeper never closed {key} ({action})");
            // Polling the store and the chain (a close is not signalled).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Cluster {
    async fn account<T: AccountDeserialize>(&self, key: &Pubkey) -> Option<T> {
        let a = self.client.get_account_with_commitment(key, CommitmentConfig::confirmed()).await.unwrap().value?;
        Some(T::try_deserialize(&mut a.data.as_slice()).unwrap())
    }
}

/// Issue 15: the forecaster's commitment lands before the lock (its hash the program's own, its salt in the store
/// first); a keeper stopped between commit and reveal reveals from the stored salt after its restart; the next
/// round is committed and revealed by the restarted keeper; the on-chain track record counts them, and the store's
/// rows, `/api/predictions` and the signals say the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forecasts_are_committed_before_the_lock_and_revealed_after_a_restart_from_the_stored_salt() {
    use kronos_market::registry::{CommitStatus, Commitment, TrackRecord};
    use kronos_market::registry::{COMMITMENT_SEED, RECORD_SEED};
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let text = forecasting_config(&c, dir.path(), &key);
    let publisher = key.pubkey();
    let commitment_key =
        |epoch: u64| pda(&[COMMITMENT_SEED, c.market.as_ref(), &epoch.to_le_bytes(), publisher.as_ref()]);

    let mut k = run_forecasting_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    let bps = k.wait_committed(0).await;
    let row = k.keeper_store.prediction("solana", 1, 0, &publisher.to_string()).await.unwrap().unwrap();
    assert_eq!(row.p_up_bps, bps as i64);
    assert!(row.commit_tx.as_deref().is_some_and(|t| t.parse::<solana_signature::Signature>().is_ok()), "{row:?}");
    let on_chain: Commitment = c.account(&commitment_key(0)).await.unwrap();
    assert_eq!(on_chain.status, CommitStatus::Committed);
    let hex = |b: [u8; 32]| alloy::primitives::FixedBytes::from(b).to_string();
    assert_eq!(hex(on_chain.hash), row.commitment, "the stored commitment is the one on chain");
    // Sealed until the reveal: /api/predictions shows that it was committed, not its value.
    let body: Value = serde_json::from_str(&k.get("/api/predictions").await).unwrap();
    let p0 = body["predictions"].as_array().unwrap().iter().find(|p| p["chain"] == "solana" && p["epoch"] == 0);
    assert!(p0.is_some_and(|p| p["p_up_bps"].is_null() && p["committed"] == json!(true)), "{body}");
    k.stop().await;

    // Restarted before the round is final: the reveal comes from the salt in the store.
    c.bet_both(0).await;
    let mut k = run_forecasting_keeper(&text).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    k.wait_started(1).await;
    k.wait_committed(1).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    let (outcome, hit, _) = k.wait_revealed(0).await;
    assert_eq!(outcome, Outcome::Up);
    assert_eq!(hit, Some(row.up), "scored on the round's outcome");
    // Revealed, recorded, then closed (H1): its rent is back with the keeper; the record still counts it.
    k.until_closed(&c, "close_commitment:1:0", &commitment_key(0)).await;
    // Round 1 closes down on its lock: revealed by the keeper that committed it.
    c.transmit(GENESIS + 3 * IV - 1, PRICE + 200).await;
    c.transmit(GENESIS + 3 * IV + 1, PRICE + 200).await;
    c.warp_to(GENESIS + 3 * IV + DELAY).await;
    let (outcome, _, scored) = k.wait_revealed(1).await;
    assert_eq!(outcome, Outcome::Down);
    k.until_closed(&c, "close_commitment:1:1", &commitment_key(1)).await;

    // The on-chain record counts both; the store's copy and its rows agree.
    let rec: TrackRecord = c.account(&pda(&[RECORD_SEED, publisher.as_ref()])).await.unwrap();
    assert!(rec.committed >= 2 && rec.revealed == 2, "{rec:?}");
    assert_eq!(rec.hits + rec.misses, scored);
    let stored = k.keeper_store.track_records().await.unwrap();
    let s = stored.iter().find(|r| r.chain == "solana").expect("the Solana track record is stored");
    assert_eq!(
        (s.publisher.as_str(), s.hits as u64, s.misses as u64),
        (publisher.to_string().as_str(), rec.hits, rec.misses)
    );
    for epoch in [0, 1] {
        let p = k.keeper_store.prediction("solana", 1, epoch, &publisher.to_string()).await.unwrap().unwrap();
        assert!(p.reveal_tx.as_deref().is_some_and(|t| t != "-") && p.outcome.is_some(), "{p:?}");
    }
    // Each commitment and reveal was signed once, the restart included.
    for a in ["commit:1:0", "commit:1:1", "reveal:1:0", "reveal:1:1", "close_commitment:1:0", "close_commitment:1:1"] {
        let txs = k.txs_for(a).await;
        assert_eq!(txs.len(), 1, "{a}: {txs:?}");
        assert_eq!(txs[0].status.as_str(), "confirmed", "{a}: {txs:?}");
    }
    let body: Value = serde_json::from_str(&k.get("/api/predictions").await).unwrap();
    let p0 = body["predictions"].as_array().unwrap().iter().find(|p| p["chain"] == "solana" && p["epoch"] == 0);
    assert!(p0.is_some_and(|p| p["p_up_bps"] == json!(bps) && p["revealed"] == json!(true)), "{body}");
    k.stop().await;
}

/// Issue 15: a round whose commit window has closed (bets close `bet_cutoff` before the lock) gets no commitment —
/// nothing is signed for it and no alert is raised — and the next round is committed as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_past_its_commit_window_gets_no_commit_and_no_alert() {
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let mut k = run_forecasting_keeper(&forecasting_config(&c, dir.path(), &key)).await;
    // Within betting time minus the cutoff (10 s): the keeper still starts round 0, too late to commit on it.
    c.warp_to(GENESIS + IV - 5).await;
    k.wait_started(0).await;
    c.transmit(GENESIS + IV + 1, PRICE).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    let alerts = std::cell::RefCell::new(Vec::new());
    k.wait("the forecast of round 1 committed", |s| match s {
        SignalKind::TxFailed { action, error, .. } => {
            alerts.borrow_mut().push(format!("{action}: {error}"));
            None
        }
        SignalKind::PredictionCommitted { chain, epoch: 1, .. } if chain == "solana" => Some(()),
        _ => None,
    })
    .await;
    assert!(alerts.borrow().is_empty(), "{:?}", alerts.borrow());
    assert!(k.txs_for("commit:1:0").await.is_empty(), "nothing signed for the closed window");
    let p0 = k.keeper_store.prediction("solana", 1, 0, &key.pubkey().to_string()).await.unwrap();
    assert!(p0.is_none(), "no forecast stored for round 0: {p0:?}");
    assert_eq!(k.txs_for("commit:1:1").await.len(), 1);
    k.stop().await;
}

/// Issue 15 with M3 leases: two keepers on one PostgreSQL store, each with its own signer and forecasts on. Only the
/// market's leader commits (the standby forecasts and signs nothing for it); after a takeover the new leader
/// commits, and the old leader, restarted as a standby, still reveals its own commitment (only its signer can).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_commits_and_a_standby_still_reveals_its_own_commitment() {
    use kronos_market::registry::{Commitment, COMMITMENT_SEED};
    let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let (c, dir_a, key_a) = funded(true).await;
    with_registry(&c).await;
    let dir_b = tempfile::tempdir().unwrap();
    let key_b = Keypair::new();
    c.fund(&key_b.pubkey()).await;
    let on_pg = |dir: &std::path::Path, key: &Keypair, id: &str| {
        let sqlite = format!("store = \"sqlite://{}/keeper.db\"", dir.display());
        let text = forecasting_config(&c, dir, key);
        assert!(text.contains(&sqlite), "{text}");
        text.replace(
            &sqlite,
            &format!("store = \"{}\"\nkeeper_id = \"{id}\"\nlease_ttl_ms = 3000\nlease_refresh_ms = 500", pg.url()),
        )
    };
    let commitment =
        |epoch: u64, k: &Keypair| pda(&[COMMITMENT_SEED, c.market.as_ref(), &epoch.to_le_bytes(), k.pubkey().as_ref()]);
    let mut a = run_forecasting_keeper(&on_pg(dir_a.path(), &key_a, "keeper-a")).await;
    start_round_0(&c, &mut a).await;
    a.wait_committed(0).await;
    let b = run_forecasting_keeper(&on_pg(dir_b.path(), &key_b, "keeper-b")).await;
    until_healthy(&b, "the standby connected").await;
    for _ in 0..5 {
        let last = solana_health(&b).await["last_success_ms"].as_u64().unwrap();
        until_health(&b, "another pass of the standby", |h| h["last_success_ms"].as_u64().unwrap() > last).await;
    }
    assert!(c.account::<Commitment>(&commitment(0, &key_b)).await.is_none(), "the standby committed");
    let none = b.keeper_store.prediction("solana", 1, 0, &key_b.pubkey().to_string()).await.unwrap();
    assert!(none.is_none(), "the standby forecast for the market: {none:?}");

    // The leader stops; the standby takes over and commits the next round with its own key.
    a.stop().await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 100).await;
    let mut b = b;
    c.warp_to(GENESIS + IV + DELAY).await;
    b.wait_committed(1).await;
    assert!(c.account::<Commitment>(&commitment(1, &key_b)).await.is_some());

    // The old leader comes back as a standby and reveals its own commitment once round 0 is settled.
    let mut a = run_forecasting_keeper(&on_pg(dir_a.path(), &key_a, "keeper-a")).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 500).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    let (outcome, _, _) = a.wait_revealed(0).await;
    assert_eq!(outcome, Outcome::Up);
    let p0 = a.keeper_store.prediction("solana", 1, 0, &key_a.pubkey().to_string()).await.unwrap().unwrap();
    assert!(p0.reveal_tx.as_deref().is_some_and(|t| t != "-") && p0.outcome.is_some(), "{p0:?}");
    let txs = a.keeper_store.all_txs("solana").await.unwrap();
    let theirs = |action: &str| txs.iter().filter(|t| t.action == action).map(|t| t.signer.clone()).collect::<Vec<_>>();
    assert_eq!(theirs("commit:1:0"), vec![key_a.pubkey().to_string()], "{txs:?}");
    assert_eq!(theirs("reveal:1:0"), vec![key_a.pubkey().to_string()], "{txs:?}");
    assert_eq!(theirs("commit:1:1"), vec![key_b.pubkey().to_string()], "{txs:?}");
    a.stop().await;
    b.stop().await;
}

/// Audit H1: a commitment left open by an earlier run (here: recorded as unrevealable, never closed) is found by
/// the keeper's sweep once its reveal deadline passed and closed — its rent back with the keeper — and the
/// program's close expires it first, so the track record counts it as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commitment_left_open_by_an_earlier_run_is_swept_and_its_rent_comes_back() {
    use kronos_market::registry::{TrackRecord, COMMITMENT_SEED, RECORD_SEED};
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let text = forecasting_config(&c, dir.path(), &key);
    let publisher = key.pubkey();
    let commitment = pda(&[COMMITMENT_SEED, c.market.as_ref(), &0u64.to_le_bytes(), publisher.as_ref()]);
    let mut k = run_forecasting_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    k.wait_committed(0).await;
    // The earlier run's end: the prediction stored as final, the commitment left on chain.
    let gone = kronos_keeper::store::Reveal { tx: "-", outcome: Outcome::None, hit: None, brier: None };
    k.keeper_store.set_revealed("solana", 1, 0, &publisher.to_string(), &gone).await.unwrap();
    k.stop().await;
    assert!(c.client.get_account(&commitment).await.is_ok(), "left open");
    // Past its deadline (close + settle window + the registry's reveal window): the program lets it go.
    c.warp_to(GENESIS + 3 * IV + 86_400 + 1).await;
    let k = run_forecasting_keeper(&text).await;
    k.until_closed(&c, "close_commitment:1:0", &commitment).await;
    assert_eq!(k.txs_for("close_commitment:1:0").await.len(), 1);
    let store = k.keeper_store.clone();
    k.stop().await;
    let rec: TrackRecord = c.account(&pda(&[RECORD_SEED, publisher.as_ref()])).await.unwrap();
    // Commits come before the sweep (AUDIT4 L-a): the current round's commitment may be counted too.
    let txs = store.all_txs("solana").await.unwrap();
    let commits = txs.iter().filter(|t| t.action.starts_with("commit:") && t.status.as_str() == "confirmed").count();
    assert_eq!((rec.committed, rec.revealed, rec.expired), (commits as u64, 0, 1), "{rec:?} {txs:?}");
}

/// Audit M1: a commitment that landed while its row was never marked committed (a stop, a crash or a failed write
/// between the confirmation and the store) is recovered after its commit window closed — from the commitment on
/// chain with the stored hash — and revealed (before, a pass after the window never looked at it again: it expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_landed_commit_not_recorded_is_recovered_after_its_window_and_revealed() {
    use kronos_market::registry::{Forecast, COMMITMENT_SEED, FORECAST_MARKET_SEED, RECORD_SEED, REGISTRY_SEED};
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let publisher = key.pubkey();
    // A crank-only keeper on the same store starts round 0.
    let mut k = c.keeper(&dir, &key).await;
    start_round_0(&c, &mut k).await;
    // The earlier run's forecast: stored with its salt, committed by the keeper's key, its commit never recorded.
    let (up, bps, salt) = (true, 6_000u16, [7u8; 32]);
    let cluster = c.client.get_genesis_hash().await.unwrap().to_bytes();
    let hash = kronos_market::registry::commitment_hash(
        &cluster,
        &publisher,
        &c.market,
        0,
        &Forecast { up, probability_up_bps: bps, salt },
    );
    let hex = |b: [u8; 32]| alloy::primitives::FixedBytes::from(b).to_string();
    let row = kronos_keeper::store::PredictionRow {
        chain: "solana".into(),
        market_id: 1,
        epoch: 0,
        publisher: publisher.to_string(),
        p_up_bps: i64::from(bps),
        up,
        salt: hex(salt),
        commitment: hex(hash),
        commit_tx: None,
        reveal_tx: None,
        outcome: None,
        hit: None,
        brier: None,
    };
    k.keeper_store.insert_prediction(&row).await.unwrap();
    let commit = ixn(
        acc::Commit {
            publisher,
            registry: pda(&[REGISTRY_SEED]),
            market: c.market,
            round: round_key(&c.market, 0),
            forecast_market: pda(&[FORECAST_MARKET_SEED, c.market.as_ref()]),
            commitment: pda(&[COMMITMENT_SEED, c.market.as_ref(), &0u64.to_le_bytes(), publisher.as_ref()]),
            record: pda(&[RECORD_SEED, publisher.as_ref()]),
            system_program: anchor_lang::system_program::ID,
        },
        ix::Commit { epoch: 0, commitment: hash },
    );
    c.send(&[commit], &[&key]).await;
    c.bet_both(0).await;
    k.stop().await;
    // Restarted with forecasts after round 0's commit window: recorded from the chain, revealed once final.
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    let mut k = run_forecasting_keeper(&forecasting_config(&c, dir.path(), &key)).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    // The commitment found on chain is said like one this run saw land (its signal was missing).
    assert_eq!(k.wait_committed(0).await, bps);
    let (outcome, hit, _) = k.wait_revealed(0).await;
    assert_eq!((outcome, hit), (Outcome::Up, Some(true)));
    let p = k.keeper_store.prediction("solana", 1, 0, &publisher.to_string()).await.unwrap().unwrap();
    assert_eq!(p.commit_tx.as_deref(), Some("recovered"), "{p:?}");
    assert!(k.txs_for("commit:1:0").await.is_empty(), "not committed again");
    k.stop().await;
}

/// Audit M3: after a takeover, the rounds the old leader paid for are closed by it while it stands by — the new
/// leader closes only its own (their rent goes to their payer) — and the two never sign the same step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_still_closes_the_rounds_it_paid_for() {
    let pg = kronos_testkit::pg::PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let (c, dir_a, key_a) = funded(true).await;
    let dir_b = tempfile::tempdir().unwrap();
    let key_b = Keypair::new();
    c.fund(&key_b.pubkey()).await;
    let on_pg = |dir: &std::path::Path, key: &Keypair, id: &str| {
        let sqlite = format!("store = \"sqlite://{}/keeper.db\"", dir.display());
        let text = c.config(dir, &[], key, "");
        assert!(text.contains(&sqlite), "{text}");
        text.replace(
            &sqlite,
            &format!("store = \"{}\"\nkeeper_id = \"{id}\"\nlease_ttl_ms = 3000\nlease_refresh_ms = 500", pg.url()),
        )
    };
    // A leads and starts round 0 (its rent paid by A); stopped, its lease given up: B takes over.
    let mut a = run_keeper(&on_pg(dir_a.path(), &key_a, "keeper-a")).await;
    start_round_0(&c, &mut a).await;
    assert_eq!(c.round(0).await.unwrap().payer, key_a.pubkey());
    a.stop().await;
    let mut b = run_keeper(&on_pg(dir_b.path(), &key_b, "keeper-b")).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 100).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    b.wait_started(1).await;
    // A comes back as a standby; round 0 (no bets) is final once B settles it and round 1 is locked.
    let a = run_keeper(&on_pg(dir_a.path(), &key_a, "keeper-a")).await;
    until_healthy(&a, "the standby connected").await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 200).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 200).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    b.wait_started(2).await;
    // The next interval: the standby's look-up finds round 0 and closes it (before, nobody ever did).
    c.transmit(GENESIS + 3 * IV - 1, PRICE + 300).await;
    c.transmit(GENESIS + 3 * IV + 1, PRICE + 300).await;
    c.warp_to(GENESIS + 3 * IV + DELAY).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c.round(0).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "round 0 (paid by the standby) was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let txs = b.keeper_store.all_txs("solana").await.unwrap();
    let closes: Vec<_> = txs.iter().filter(|t| t.action == "close:1:0").collect();
    assert!(closes.iter().all(|t| t.signer == key_a.pubkey().to_string()), "{txs:?}");
    assert_eq!(closes.len(), 1, "{txs:?}");
    for t in &txs {
        let signers: std::collections::BTreeSet<&str> =
            txs.iter().filter(|u| u.action == t.action).map(|u| u.signer.as_str()).collect();
        assert_eq!(signers.len(), 1, "{} signed by both keepers: {txs:?}", t.action);
    }
    a.stop().await;
    b.stop().await;
}

/// Audit L1: a keeper stopped (SIGTERM) while its transaction is in flight follows it until it is decided — its pass,
/// and so its lease term (given up after the last pass), outlive a transaction that may still land, as the EVM
/// scheduler does — and records it confirmed (before, the stop returned at once and left the row pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keeper_stopped_mid_send_follows_its_transaction_until_it_is_decided() {
    let (c, dir, key) = funded(true).await;
    let mut k = c.keeper(&dir, &key).await;
    start_round_0(&c, &mut k).await;
    c.control("hold_next_sends", json!({ "n": 1_000_000 })).await;
    c.warp_to(GENESIS + IV + 1).await;
    k.until_sent("start:1:1").await;
    let Running { cancel, mut task, keeper_store, .. } = k;
    cancel.cancel();
    // Held by the node: the stopping keeper is still following it (an event that must not happen: it ends; the old
    // keeper ended within one poll, 100 ms; the window stays short of the held blockhash's expiry, about a second).
    let early = tokio::time::timeout(Duration::from_millis(500), &mut task).await;
    assert!(early.is_err(), "the keeper stopped with its start still in flight");
    c.control("hold_next_sends", json!({ "n": 0 })).await;
    let landed = c.control("land_held", json!({})).await;
    assert_eq!(landed["landed"][0]["error"], Value::Null, "{landed}");
    tokio::time::timeout(PATIENCE, task).await.expect("stops once its transaction is decided").unwrap();
    until_open(&c, 1).await;
    let txs: Vec<_> =
        keeper_store.all_txs("solana").await.unwrap().into_iter().filter(|t| t.action == "start:1:1").collect();
    assert_eq!(txs.len(), 1, "{txs:?}");
    assert_eq!(txs[0].status.as_str(), "confirmed", "{txs:?}");
}

impl Cluster {
    /// A second SOL market of the authority's, `id`, on the same feed and times as the first.
    async fn add_market(&self, id: u64) -> Pubkey {
        self.add_market_by(&self.authority, id).await
    }

    /// A market of `authority` (funded) with id `id` on the same feed and schedule.
    async fn add_market_by(&self, authority: &Keypair, id: u64) -> Pubkey {
        let a = authority.pubkey();
        let market = pda(&[MARKET_SEED, a.as_ref(), &id.to_le_bytes()]);
        let approval = pda(&[FEED_SEED, self.feed.as_ref()]);
        let params = Params {
            fee_bps: 300,
            min_bet: 1_000,
            max_price_age: 3_600,
            settle_window: IV as u32,
            report_delay: DELAY as u32,
            bet_cutoff: 10,
            settler_reward_bps: 1_000,
        };
        let market_ix = ixn(
            acc::InitializeMarket {
                authority: a,
                market,
                vault: pda(&[VAULT_SEED, market.as_ref()]),
                feed: self.feed,
                feed_approval: approval,
                system_program: anchor_lang::system_program::ID,
            },
            ix::InitializeMarket { id, genesis: GENESIS, interval: IV as u32, params },
        );
        self.send(&[market_ix], &[authority]).await;
        market
    }

    /// The round of `epoch` of `market`.
    async fn round_of(&self, market: &Pubkey, epoch: u64) -> Option<Round> {
        let a = self
            .client
            .get_account_with_commitment(&round_key(market, epoch), CommitmentConfig::confirmed())
            .await
            .unwrap()
            .value?;
        Some(Round::try_deserialize(&mut a.data.as_slice()).unwrap())
    }
}

/// Issue 15, L5: the markets of one cluster are driven concurrently. The node drops every transaction of market 1
/// (the first the keeper drives): its lock is followed and re-broadcast until its blockhash can no longer land, and
/// meanwhile market 2's round 0 is locked, its round 1 started and, an interval later, locked on time. With the
/// markets driven one after another, market 2 waited for market 1's transaction (here for ever: nothing moves the
/// block height); with one join of every market's pass per tick, market 2's steps of the next interval did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_market_whose_transaction_is_dropped_never_holds_up_another_market() {
    let (c, dir, key) = funded(true).await;
    let second = c.add_market(2).await;
    let text = c
        .config(dir.path(), &[], &key, "")
        .replace(&format!("markets = [\"{}\"]", c.market), &format!("markets = [\"{}\", \"{second}\"]", c.market));
    let mut k = run_keeper(&text).await;
    c.warp_to(GENESIS + 1).await;
    until_open(&c, 0).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c.round_of(&second, 0).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "market 2's round 0 never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From here on the node drops every transaction naming market 1.
    c.control("drop_next_sends", json!({ "n": 1_000_000, "account": c.market.to_string() })).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    let stuck = k.until_sent("lock:1:0").await;
    k.wait("market 2's round 0 locked", |s| {
        matches!(s, SignalKind::RoundLocked { chain, market: 2, epoch: 0, .. } if chain == "solana").then_some(())
    })
    .await;
    k.wait("market 2's round 1 started", |s| {
        matches!(s, SignalKind::RoundStarted { chain, market: 2, epoch: 1, .. } if chain == "solana").then_some(())
    })
    .await;
    // Market 1's lock was still in flight all along: one transaction, not landed.
    assert_eq!(c.round(0).await.unwrap().status, RoundStatus::Open);
    let locks = k.txs_for("lock:1:0").await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].status.as_str(), "pending", "{locks:?}");
    assert_eq!(c.round_of(&second, 0).await.unwrap().status, RoundStatus::Locked);
    // An interval later market 2 is driven on (its next steps are taken while market 1's lock is still in flight,
    // not only those that were due in the same pass as it).
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 200).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    k.wait("market 2's round 1 locked", |s| {
        matches!(s, SignalKind::RoundLocked { chain, market: 2, epoch: 1, .. } if chain == "solana").then_some(())
    })
    .await;
    assert_eq!(c.round(0).await.unwrap().status, RoundStatus::Open);
    assert_eq!(k.txs_for("lock:1:0").await.len(), 1);
    // The node lets market 1's transactions through again and its block height passes the dropped lock's last valid
    // one: market 1 catches up (its round 0 is decided).
    c.control("drop_next_sends", json!({ "n": 0 })).await;
    while c.client.get_block_height().await.unwrap() <= stuck.nonce as u64 {
        c.control("warp", json!({ "slots": 16 })).await;
    }
    until_round(&c, 0, "market 1's round 0 decided", |r| r.status != RoundStatus::Open).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while k.txs_for("lock:1:0").await.iter().any(|t| t.status.as_str() == "pending") {
        assert!(tokio::time::Instant::now() < deadline, "the dropped lock is still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its re-broadcast landed (the bank still knew its blockhash) or it expired; either way one lock at most.
    let locks = k.txs_for("lock:1:0").await;
    assert_eq!(locks[0].tx_hash, stuck.tx_hash);
    assert!(locks.iter().filter(|t| t.status.as_str() == "confirmed").count() <= 1, "{locks:?}");
    k.stop().await;
}

/// Round 0, bet on both sides, locked and settled Up by a crank-only keeper on the forecasting keeper's store
/// (stopped after), round 1 locked and round 2 started by it, so that a keeper started next has a reveal to send
/// (AUDIT4 tests).
async fn round_0_settled_up_by_a_crank(c: &Cluster, dir: &tempfile::TempDir, key: &Keypair) {
    c.bet_both(0).await;
    let mut k = c.keeper(dir, key).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    k.wait_started(1).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    assert_eq!(k.wait_settled(0).await, Outcome::Up);
    until_round(c, 1, "locked", |r| r.status == RoundStatus::Locked).await;
    until_open(c, 2).await;
    k.stop().await;
}

/// AUDIT4 M-b: a keeper stopped (SIGTERM) while its reveal is in flight follows the reveal until it lands and
/// records it, and then signs and sends nothing new — before, it went on to sign and follow the commitment's
/// `close_commitment` (a second transaction after the stop, and up to twice the follow time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keeper_stopped_mid_reveal_follows_it_and_sends_nothing_new() {
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let text = forecasting_config(&c, dir.path(), &key);
    let publisher = key.pubkey().to_string();
    let mut k = run_forecasting_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    k.wait_committed(0).await;
    k.stop().await;
    round_0_settled_up_by_a_crank(&c, &dir, &key).await;
    // Past round 2's commit window: the restarted keeper's only step is round 0's reveal, held by the node.
    c.warp_to(GENESIS + 3 * IV - 5).await;
    c.control("hold_next_sends", json!({ "n": 1_000_000 })).await;
    let k = run_forecasting_keeper(&text).await;
    k.until_sent("reveal:1:0").await;
    let Running { cancel, task, keeper_store, .. } = k;
    cancel.cancel();
    // Held: the stopping keeper still follows its reveal (AUDIT5-SOL LOW-6: shown by an event, not by a timeout
    // that a slow keeper passes anyway) — the node gets getSignatureStatuses calls after the stop, from the keeper
    // (this test makes none), while its task is still running.
    let statuses =
        || async { c.control("calls", json!({})).await["calls"]["getSignatureStatuses"].as_u64().unwrap_or(0) };
    let at_stop = statuses().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while statuses().await < at_stop + 3 {
        assert!(!task.is_finished(), "the keeper stopped with its reveal still in flight");
        assert!(tokio::time::Instant::now() < deadline, "the stopping keeper no longer follows its reveal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!task.is_finished(), "the keeper stopped with its reveal still in flight");
    c.control("hold_next_sends", json!({ "n": 0 })).await;
    let landed = c.control("land_held", json!({})).await;
    assert_eq!(landed["landed"][0]["error"], Value::Null, "{landed}");
    tokio::time::timeout(PATIENCE, task).await.expect("stops once its reveal is decided").unwrap();
    let txs = keeper_store.all_txs("solana").await.unwrap();
    let reveals: Vec<_> = txs.iter().filter(|t| t.action == "reveal:1:0").collect();
    assert_eq!(reveals.len(), 1, "{txs:?}");
    assert_eq!(reveals[0].status.as_str(), "confirmed", "{txs:?}");
    let p = keeper_store.prediction("solana", 1, 0, &publisher).await.unwrap().unwrap();
    assert!(p.reveal_tx.as_deref().is_some_and(|t| t != "-") && p.outcome.is_some(), "recorded: {p:?}");
    // Nothing signed after the stop: the commitment's close is left to the next run's sweep.
    assert!(txs.iter().all(|t| !t.action.starts_with("close_commitment:")), "{txs:?}");
}

/// AUDIT4 L-b (L6): a market removed from the config keeps its public record — the forecast committed on it while
/// it was configured is still revealed and scored, and its commitment closed, by a keeper whose config now lists
/// another market only (before, its predictions were skipped for good: never revealed, the rent never back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_market_removed_from_the_config_still_has_its_forecast_revealed_and_closed() {
    use kronos_market::registry::COMMITMENT_SEED;
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let publisher = key.pubkey();
    let mut k = run_forecasting_keeper(&forecasting_config(&c, dir.path(), &key)).await;
    start_round_0(&c, &mut k).await;
    k.wait_committed(0).await;
    k.stop().await;
    round_0_settled_up_by_a_crank(&c, &dir, &key).await;
    // Market 2 on the same feed, the only one configured from now on.
    let other = c.add_market(2).await;
    let text = forecasting_config(&c, dir.path(), &key)
        .replace(&format!("markets = [\"{}\"]", c.market), &format!("markets = [\"{other}\"]"));
    assert!(!text.contains(&c.market.to_string()), "{text}");
    let mut k = run_forecasting_keeper(&text).await;
    let (outcome, hit, _) = k.wait_revealed(0).await;
    assert_eq!(outcome, Outcome::Up);
    let p = k.keeper_store.prediction("solana", 1, 0, &publisher.to_string()).await.unwrap().unwrap();
    assert_eq!(hit, Some(p.up), "scored on the removed market's outcome");
    let commitment = pda(&[COMMITMENT_SEED, c.market.as_ref(), &0u64.to_le_bytes(), publisher.as_ref()]);
    k.until_closed(&c, "close_commitment:1:0", &commitment).await;
    assert_eq!(k.txs_for("reveal:1:0").await.len(), 1);
    k.stop().await;
}

/// AUDIT5-SOL M3: a market id reused at another address keeps the forecast committed under it. Round 0 is committed
/// on market A (id 1); the config then names market B (another authority's id 1) instead, so the store's market of
/// id 1 is B. A's forecast is still revealed and scored at A — where its commitment is, found by its hash — and A's
/// commitment closed; B is driven. Before, the configured B was taken for id 1 without checking that the stored
/// commitment binds it: the reveal waited for a commitment at B that never comes, until it was marked unrevealable
/// ("no commitment on chain") while A's expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_market_id_reused_at_another_address_still_has_its_forecast_revealed_where_it_was_committed() {
    use kronos_market::registry::COMMITMENT_SEED;
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let publisher = key.pubkey();
    let mut k = run_forecasting_keeper(&forecasting_config(&c, dir.path(), &key)).await;
    start_round_0(&c, &mut k).await;
    k.wait_committed(0).await;
    k.stop().await;
    round_0_settled_up_by_a_crank(&c, &dir, &key).await;
    let other_authority = Keypair::new();
    c.fund(&other_authority.pubkey()).await;
    let b = c.add_market_by(&other_authority, 1).await;
    assert_ne!(b, c.market);
    let text = forecasting_config(&c, dir.path(), &key)
        .replace(&format!("markets = [\"{}\"]", c.market), &format!("markets = [\"{b}\"]"));
    assert!(!text.contains(&c.market.to_string()), "{text}");
    let mut k = run_forecasting_keeper(&text).await;
    let (outcome, hit, _) = k.wait_revealed(0).await;
    assert_eq!(outcome, Outcome::Up, "scored on A's round 0");
    let p = k.keeper_store.prediction("solana", 1, 0, &publisher.to_string()).await.unwrap().unwrap();
    assert_eq!(hit, Some(p.up));
    assert!(p.reveal_tx.as_deref().is_some_and(|t| t != "-"), "{p:?}");
    let commitment = pda(&[COMMITMENT_SEED, c.market.as_ref(), &0u64.to_le_bytes(), publisher.as_ref()]);
    k.until_closed(&c, "close_commitment:1:0", &commitment).await;
    assert_eq!(k.txs_for("reveal:1:0").await.len(), 1);
    // B, now id 1, is driven: its round taking bets is started.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c.round_of(&b, 2).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "market B's round 2 was never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.stop().await;
}

/// Issue 15: a keeper with `forecasts = true` and no candle file forecasts from its market's own prices. The rounds
/// an earlier run recorded in the store (0 to 30: prices at 32 times, 31 candles, one short of the 32 the model
/// needs) are read back at start, so the round taking bets then gets no forecast; the lock price of the round the
/// keeper drives itself is the 33rd price, and the next round's forecast is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_candle_file_the_market_s_own_rounds_are_the_forecaster_s_candles() {
    use kronos_keeper::store::{RoundRow, RoundState};
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    // No `candles` in [forecaster], no override: the checkpoint candles are the source.
    let text = forecasting_config(&c, dir.path(), &key);
    assert!(!text.contains("candles"), "{text}");
    let price = |k: i64| format!("{}", 65_000 + 40 * ((k * 7919) % 13 - 6));
    {
        let store = kronos_keeper::store::Store::connect(&format!("sqlite://{}/keeper.db", dir.path().display()))
            .await
            .unwrap();
        for epoch in 0..=30i64 {
            let row = RoundRow {
                chain: "solana".into(),
                market_id: 1,
                epoch,
                state: RoundState::Settled,
                lock_price: Some(price(epoch + 1)),
                close_price: Some(price(epoch + 2)),
                outcome: Some(kronos_keeper::store::Outcome::Up),
                reason: None,
                up_wei: SOL.to_string(),
                down_wei: SOL.to_string(),
                reward_wei: Some((2 * SOL).to_string()),
                treasury_fee_wei: Some("0".into()),
                delay_blocks: None,
            };
            store.upsert_round(&row).await.unwrap();
        }
    }
    let who = key.pubkey().to_string();
    c.warp_to(GENESIS + 32 * IV + 1).await;
    let mut k = run_keeper(&text).await;
    k.wait_started(32).await;
    // Round 32 locks on a fresh price: the keeper's own 33rd price.
    c.transmit(GENESIS + 33 * IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + 33 * IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + 33 * IV + DELAY).await;
    k.wait_started(33).await;
    let bps = k.wait_committed(33).await;
    let row = k.keeper_store.prediction("solana", 1, 33, &who).await.unwrap().unwrap();
    assert_eq!(row.p_up_bps, bps as i64);
    assert!(row.commit_tx.is_some(), "{row:?}");
    let locked = until_round(&c, 32, "locked", |r| r.status == RoundStatus::Locked).await;
    assert_eq!(locked.lock_price, PRICE as i128 + 100);
    // Round 32 took bets while the market had 31 candles: no forecast, nothing committed (its window has closed).
    assert!(k.keeper_store.prediction("solana", 1, 32, &who).await.unwrap().is_none());
    assert!(k.txs_for("commit:1:32").await.is_empty());
    k.stop().await;
}

/// AUDIT5-SOL M2: while a market's transaction is followed and its status cannot be read (the node refuses
/// `getSignatureStatuses`, as under a per-method rate limit, while the tick's reads still answer), the keeper's health
/// does not flip: no `KeeperHealth` alert goes out. Before, the send loop set the keeper unhealthy on every failed
/// read and the next tick healthy again, an alert each poll. (A pass stuck past `rules::PASS_STUCK_AFTER` is reported
/// once; that threshold, 180 s, is unit-tested.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_does_not_flap_while_a_transaction_s_status_cannot_be_read() {
    let (c, dir, key) = funded(true).await;
    let mut k = run_keeper(&c.config(dir.path(), &[], &key, "")).await;
    c.warp_to(GENESIS + 1).await;
    until_open(&c, 0).await;
    // The lock is dropped by the node, so it stays in flight and its status is read again and again.
    c.control("drop_next_sends", json!({ "n": 1_000_000 })).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    let stuck = k.until_sent("lock:1:0").await;
    // What came before (the start's health) is not counted.
    while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = k.rx.try_recv() {}
    c.control("fail_next", json!({ "method": "getSignatureStatuses", "n": 12 })).await;
    // Until every refusal is spent, mostly by the keeper's follow (it reads every 100 ms, this loop every 500 ms).
    let sig: solana_signature::Signature = stuck.tx_hash.parse().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c.client.get_signature_statuses(&[sig]).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "getSignatureStatuses never answered again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut alerts = Vec::new();
    loop {
        match k.rx.try_recv() {
            Ok(s) => {
                if let SignalKind::KeeperHealth { healthy, detail, .. } = &s.kind {
                    alerts.push((*healthy, detail.clone()));
                }
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(alerts.is_empty(), "health flipped while one status could not be read: {alerts:?}");
    assert_eq!(k.txs_for("lock:1:0").await.len(), 1);
    // Let it be decided, so the stop does not follow it for long: its block height passes the lock's last valid one.
    c.control("drop_next_sends", json!({ "n": 0 })).await;
    while c.client.get_block_height().await.unwrap() <= stuck.nonce as u64 {
        c.control("warp", json!({ "slots": 16 })).await;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while k.txs_for("lock:1:0").await.iter().any(|t| t.status.as_str() == "pending") {
        assert!(tokio::time::Instant::now() < deadline, "the dropped lock is still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.stop().await;
}

/// AUDIT5-SOL M3: a stored forecast whose market cannot be found — the store's market of its id is another, and no
/// commitment of this signer on chain has its hash — is alerted once (`tx_failed` for its reveal, naming the market
/// id, the round and why) and left unrevealed, never marked unrevealable at a market its commitment does not bind.
/// Before, it was only an info line in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_forecast_whose_market_is_not_found_is_alerted_and_not_marked() {
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let text = forecasting_config(&c, dir.path(), &key);
    let publisher = key.pubkey().to_string();
    let mut k = run_forecasting_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    k.wait_committed(0).await;
    let store = k.keeper_store.clone();
    let mut gone = store.markets().await.unwrap().into_iter().find(|m| m.chain == "solana").unwrap();
    (gone.market_id, gone.contract) = (7, Pubkey::new_unique().to_string());
    store.upsert_market(&gone).await.unwrap();
    let hex = || alloy::primitives::FixedBytes::<32>::from(Pubkey::new_unique().to_bytes()).to_string();
    let mut lost = store.prediction("solana", 1, 0, &publisher).await.unwrap().unwrap();
    (lost.market_id, lost.salt, lost.commitment) = (7, hex(), hex());
    store.insert_prediction(&lost).await.unwrap();
    let error = k
        .wait("the unfound market alerted", |s| match s {
            SignalKind::TxFailed { chain, action, error } if chain == "solana" && action == "reveal:7:0" => {
                Some(error.clone())
            }
            _ => None,
        })
        .await;
    assert!(error.contains("market 7 round 0") && error.contains("no commitment"), "{error}");
    let row = store.prediction("solana", 7, 0, &publisher).await.unwrap().unwrap();
    assert!(row.reveal_tx.is_none(), "{row:?}");
    k.stop().await;
}

/// AUDIT5-SOL LOW-4: one bad stored prediction (here of a market no longer configured whose stored salt is not
/// hex, so whether its commitment binds the store's market cannot be told) is skipped and named, and the keeper's
/// other forecasts are still revealed: before, its error left the whole reveal pass, every pass, so no reveal after
/// it (rows are taken by epoch: its epoch 0 is before round 1's) was ever sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_stored_prediction_never_stops_the_other_reveals() {
    let (c, dir, key) = funded(true).await;
    with_registry(&c).await;
    let text = forecasting_config(&c, dir.path(), &key);
    let publisher = key.pubkey().to_string();
    let mut k = run_forecasting_keeper(&text).await;
    start_round_0(&c, &mut k).await;
    k.wait_committed(0).await;
    let store = k.keeper_store.clone();
    let mut gone = store.markets().await.unwrap().into_iter().find(|m| m.chain == "solana").unwrap();
    (gone.market_id, gone.contract) = (7, Pubkey::new_unique().to_string());
    store.upsert_market(&gone).await.unwrap();
    let mut bad = store.prediction("solana", 1, 0, &publisher).await.unwrap().unwrap();
    (bad.market_id, bad.salt) = (7, "not hex".into());
    store.insert_prediction(&bad).await.unwrap();
    // Named: an alert for that row's reveal.
    let error = k
        .wait("the bad row alerted", |s| match s {
            SignalKind::TxFailed { chain, action, error } if chain == "solana" && action == "reveal:7:0" => {
                Some(error.clone())
            }
            _ => None,
        })
        .await;
    assert!(error.contains("market 7 round 0") && error.contains("salt"), "{error}");
    c.bet_both(0).await;
    c.transmit(GENESIS + IV - 1, PRICE + 100).await;
    c.transmit(GENESIS + IV + 1, PRICE + 150).await;
    c.warp_to(GENESIS + IV + DELAY).await;
    // Round 1's commit (its round started first; the two signals come from two tasks, in either order).
    k.wait_committed(1).await;
    c.transmit(GENESIS + 2 * IV - 1, PRICE + 500).await;
    c.transmit(GENESIS + 2 * IV + 1, PRICE + 600).await;
    c.warp_to(GENESIS + 2 * IV + DELAY).await;
    k.wait_revealed(0).await;
    c.transmit(GENESIS + 3 * IV - 1, PRICE + 200).await;
    c.transmit(GENESIS + 3 * IV + 1, PRICE + 200).await;
    c.warp_to(GENESIS + 3 * IV + DELAY).await;
    k.wait_revealed(1).await;
    // The bad row is left unrevealed.
    let row = store.prediction("solana", 7, 0, &publisher).await.unwrap().unwrap();
    assert!(row.reveal_tx.is_none(), "{row:?}");
    k.stop().await;
}

/// AUDIT6-SOL M2: a URL of another cluster configured first never captures the keeper at start (before, `init`
/// retried on it forever: the configured market is no account there, and the cluster check only ran after `init`).
/// The endpoints' clusters are checked before the markets are read, so the keeper starts and drives on the second
/// endpoint, and /health names the foreign one by host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_first_rpc_never_captures_the_keeper_at_start() {
    let (c, dir, key) = funded(true).await;
    let foreign = LocalRpc::start().await.unwrap();
    // Devnet's genesis hash.
    let devnet = json!({ "hash": "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG" });
    let r = c.http.post(format!("{}control/genesis", foreign.url())).json(&devnet).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // A second URL of the cluster's node: two of the three endpoints agree on the cluster.
    let again = Cut::to(c.rpc.addr()).await;
    let second = format!("http://127.0.0.1:{}/", again.port);
    let mut k = run_keeper(&c.config(dir.path(), &[&foreign.url(), &second], &key, "")).await;
    start_round_0(&c, &mut k).await;
    let host = format!("127.0.0.1:{}", foreign.addr().port());
    let h = until_health(&k, "the foreign endpoint named", |h| {
        h["last_error"].as_str().is_some_and(|e| e.contains(&host) && e.contains("another cluster"))
    })
    .await;
    assert_eq!(h["rpc_endpoint"], json!(1), "{h}");
    k.stop().await;
}
