//! Several `kronos run` processes on one PostgreSQL store (issue 18): one leads each market, the others stand by.
//! The leader killed with SIGKILL mid-round: a standby takes over within the lease TTL, no checkpoint is missed and
//! no transaction is sent twice (counted on chain). The leader paused with SIGSTOP past the TTL: the standby takes
//! over and the old leader, resumed, sends nothing and steps down. Keepers whose clocks are minutes off change
//! nothing. The store's connections killed and PostgreSQL restarted: the keepers reconnect and send nothing twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::providers::Provider;
use kronos_keeper::store::{LeaseRow, Store};
use kronos_testkit::harness::{start, Net, INTERVAL};
use kronos_testkit::pg::PgServer;

const TTL_MS: u64 = 3000;
const REFRESH_MS: u64 = 500;
/// Scheduling slack on a busy machine, on top of the TTL and one renewal interval, for a takeover after a kill.
const SLACK_MS: u64 = 2500;
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

struct Keeper {
    id: String,
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    log: PathBuf,
    signer: Address,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `kronos run` as keeper `id` with dev account `account` as its signer (one signer per keeper), on the
/// store at `store_url`; `env` adds variables (a skewed clock).
fn spawn(net: &Net, store_url: &str, id: &str, account: usize, env: &[(&str, &str)]) -> Keeper {
    spawn_named(net, store_url, id, id, account, env)
}

/// [`spawn`] with its configuration and log files named `name` (two processes given one keeper id).
fn spawn_named(net: &Net, store_url: &str, name: &str, id: &str, account: usize, env: &[(&str, &str)]) -> Keeper {
    spawn_with(net, store_url, name, id, account, env, "")
}

/// [`spawn_named`] with `keeper_extra` added to the `[keeper]` table (`shared_signer = true`).
fn spawn_with(
    net: &Net,
    store_url: &str,
    name: &str,
    id: &str,
    account: usize,
    env: &[(&str, &str)],
    keeper_extra: &str,
) -> Keeper {
    let port = free_port();
    let text = std::fs::read_to_string(net.config_file(&[])).unwrap();
    let sqlite = format!("store = \"{}\"", net.store_url());
    assert!(text.contains(&sqlite));
    let text = text
        .replace(&sqlite, &format!("store = \"{store_url}\""))
        .replace(
            "keeper_id = \"bin\"",
            &format!("keeper_id = \"{id}\"\nlease_ttl_ms = {TTL_MS}\nlease_refresh_ms = {REFRESH_MS}\n{keeper_extra}"),
        )
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    let cfg = net.dir.path().join(format!("{name}.toml"));
    std::fs::write(&cfg, text).unwrap();
    let key = &net.chains[0].keys[account];
    let log = net.dir.path().join(format!("{name}.log"));
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_kronos"));
    c.current_dir(kronos_testkit::repo_root())
        .args(["-v", "run", "--config"])
        .arg(&cfg)
        .env("KRONOS_TEST_KEY", format!("0x{}", alloy::hex::encode(key.to_bytes())))
        .env("RUST_LOG", "info,kronos_keeper=debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    let child = c.spawn().unwrap();
    let pid = child.id().unwrap();
    Keeper { id: id.into(), child, pid, port, log, signer: key.address() }
}

fn signal(k: &Keeper, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &k.pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {}", k.pid);
}

fn tail(k: &Keeper) -> String {
    let t = std::fs::read_to_string(&k.log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    format!("--- {} ---\n{}", k.id, lines[lines.len().saturating_sub(40)..].join("\n"))
}

fn tails(ks: &[&Keeper]) -> String {
    ks.iter().map(|k| tail(k)).collect::<Vec<_>>().join("\n")
}

/// Waits for `what` (polled every 100 ms) up to `secs`, failing with the keepers' logs.
async fn wait_until<T, F, Fut>(what: &str, secs: u64, ks: &[&Keeper], mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}\n{}", tails(ks));
}

/// The live lease of market 1 on `chain`, if someone holds it.
async fn live_lease(store: &Store, chain: &str) -> Option<LeaseRow> {
    store.lease(chain, 1).await.ok().flatten().filter(|l| l.expires_ms > l.db_now_ms)
}

/// A keeper's `/health` document.
async fn health(k: &Keeper) -> Option<serde_json::Value> {
    let r = reqwest::get(format!("http://127.0.0.1:{}/health", k.port)).await.ok()?;
    r.json().await.ok()
}

/// Market 1's lease as keeper `k` reports it on `/health` for `chain`.
async fn role(k: &Keeper, chain: &str) -> Option<serde_json::Value> {
    let h = health(k).await?;
    h["markets"].as_array()?.iter().find(|m| m["chain"] == chain && m["market"] == 1).map(|m| m["lease"].clone())
}

/// Every `execute` transaction mined on chain `i`, by checkpoint: (block, index in block, succeeded, sender).
async fn executes(net: &Net, i: usize) -> BTreeMap<u64, Vec<(u64, u64, bool, Address)>> {
    let p = net.chains[i].wallet(0);
    let all = kronos_testkit::soak::executes(&p, net.chains[i].deployment.market, 1).await.unwrap();
    all.into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|e| (e.block, e.index, e.succeeded, e.from)).collect()))
        .collect()
}

/// Checks chain `i` up to checkpoint `target`: every checkpoint recorded (none missed), and no `execute` sent after
/// the one that recorded its checkpoint (no duplicate). A revert before the recording one is the feed race of a
/// single keeper (a proof outdated by a new round, proven again), not a duplicate.
async fn check_chain(
    net: &Net,
    i: usize,
    target: u64,
    ks: &[&Keeper],
    frozen: Option<Address>,
) -> BTreeMap<u64, Vec<(u64, u64, bool, Address)>> {
    for k in 0..=target {
        assert!(net.checkpoint(i, k).await.0 > 0, "chain {i}: checkpoint {k} missed\n{}", tails(ks));
    }
    let ex = executes(net, i).await;
    for (k, txs) in &ex {
        let ok: Vec<_> = txs.iter().filter(|t| t.2).collect();
        assert!(ok.len() <= 1, "chain {i}: checkpoint {k} executed twice: {txs:?}");
        if let Some(first) = ok.first() {
            // (`frozen`: a leader paused mid-broadcast may land that one transaction late; it reverts.)
            let after: Vec<_> =
                txs.iter().filter(|t| (t.0, t.1) > (first.0, first.1) && (t.2 || Some(t.3) != frozen)).collect();
            assert!(
                after.is_empty(),
                "chain {i}: checkpoint {k}: duplicate transactions after it was recorded: {after:?}"
            );
        }
        let reverted = txs.iter().filter(|t| !t.2).count();
        assert!(reverted <= 1, "chain {i}: checkpoint {k}: {reverted} reverted executes: {txs:?}\n{}", tails(ks));
    }
    ex
}

async fn nonce(net: &Net, i: usize, who: Address) -> u64 {
    net.chains[i].wallet(0).get_transaction_count(who).pending().await.unwrap()
}

/// The checkpoint chain `i` is at now.
async fn current_checkpoint(net: &Net, i: usize) -> u64 {
    net.now(i).await.saturating_sub(net.chains[i].genesis()) / INTERVAL
}

/// Waits until checkpoint `k` of chain `i` is recorded on chain.
async fn wait_recorded(net: &Net, i: usize, k: u64, secs: u64, ks: &[&Keeper]) {
    wait_until(&format!("checkpoint {k} on chain {i}"), secs, ks, || async move {
        (net.checkpoint(i, k).await.0 > 0).then_some(())
    })
    .await
}

/// Keeper-a (dev account 1) leading chain `base`'s market and keeper-b (account 5) standing by, on the store at
/// `store_url` (`store` reads it), with a checkpoint recorded since; keeper-a's first lease with them.
async fn leader_and_standby(net: &Net, store: &Store, store_url: &str) -> (Keeper, Keeper, LeaseRow) {
    let a = spawn(net, store_url, "keeper-a", 1, &[]);
    let first = wait_until("keeper-a to lead", 90, &[&a], || async {
        live_lease(store, "base").await.filter(|l| l.holder == "keeper-a")
    })
    .await;
    let b = spawn(net, store_url, "keeper-b", 5, &[]);
    wait_until("keeper-b to stand by", 90, &[&a, &b], || async {
        (role(&b, "base").await?["role"] == "standby").then_some(())
    })
    .await;
    let k0 = current_checkpoint(net, 0).await;
    wait_recorded(net, 0, k0 + 1, 60, &[&a, &b]).await;
    (a, b, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_round_is_replaced_within_the_ttl_and_skewed_clocks_change_nothing() {
    assert!(std::path::Path::new(FAKETIME).is_file(), "{FAKETIME} missing: run scripts/setup (libfaketime)");
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base", "polygon"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let a = spawn(&net, &pg.url(), "keeper-a", 1, &[]);
    let first = wait_until("keeper-a to lead both markets", 90, &[&a], || async {
        let (b, p) = (live_lease(&store, "base").await?, live_lease(&store, "polygon").await?);
        (b.holder == "keeper-a" && p.holder == "keeper-a").then_some(b)
    })
    .await;
    // Two standbys whose wall clocks are five minutes off either way (the old host-clock leases let a keeper whose
    // clock ran ahead take a live lease at once).
    let skew = |s: &'static str| [("LD_PRELOAD", FAKETIME), ("FAKETIME", s), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    let b = spawn(&net, &pg.url(), "keeper-b", 5, &skew("+5m"));
    let c = spawn(&net, &pg.url(), "keeper-c", 6, &skew("-5m"));
    let all = [&a, &b, &c];
    // The skew is real: the standbys' own log lines are stamped five minutes off.
    for (k, ahead) in [(&b, true), (&c, false)] {
        let first_line = wait_until("a log line", 30, &all, || async {
            std::fs::read_to_string(&k.log).ok()?.lines().next().map(str::to_string)
        })
        .await;
        let stamp = humantime::parse_rfc3339_weak(first_line.split(' ').next().unwrap().trim_end_matches('Z')).unwrap();
        let now = std::time::SystemTime::now();
        let off = if ahead { stamp.duration_since(now) } else { now.duration_since(stamp) };
        assert!(off.is_ok_and(|d| d > Duration::from_secs(240)), "{}'s clock is not skewed: {first_line}", k.id);
    }
    for k in [&b, &c] {
        wait_until(&format!("{} to stand by", k.id), 90, &all, || async {
            let r = role(k, "base").await?;
            (r["role"] == "standby" && r["leader"] == "keeper-a").then_some(())
        })
        .await;
    }
    // A standby's /api/markets shows the round taking bets and that round's pools (it reads them; it sends nothing).
    for k in [&b, &c] {
        wait_until(&format!("{}'s /api/markets to show the betting round's pools", k.id), 60, &all, || async {
            let m: serde_json::Value =
                reqwest::get(format!("http://127.0.0.1:{}/api/markets", k.port)).await.ok()?.json().await.ok()?;
            let l = m["live"].as_array()?.iter().find(|l| l["chain"] == "base" && l["market"] == 1)?.clone();
            let betting = l["betting_epoch"].as_u64()?;
            (betting > 0 && l["pool_epoch"].as_u64() == Some(betting)).then_some(())
        })
        .await;
    }
    // Three checkpoints with the skewed keepers renewing next to the leader: the lease never moved.
    let k0 = current_checkpoint(&net, 0).await;
    wait_recorded(&net, 0, k0 + 3, 60, &all).await;
    for chain in ["base", "polygon"] {
        let l = store.lease(chain, 1).await.unwrap().unwrap();
        assert_eq!(
            (l.holder.as_str(), l.epoch),
            ("keeper-a", first.epoch),
            "{chain}: the lease moved\n{}",
            tails(&all)
        );
    }
    assert_eq!(nonce(&net, 0, b.signer).await, 0, "a standby sent a transaction");
    assert_eq!(nonce(&net, 0, c.signer).await, 0, "a standby sent a transaction");

    // Kill the leader with SIGKILL right as a checkpoint falls due.
    let due = current_checkpoint(&net, 0).await + 1;
    net.wait_checkpoint(0, due, 0).await;
    let mut a = a;
    a.child.start_kill().unwrap();
    let killed = Instant::now();
    let _ = a.child.wait().await;
    let all = [&a, &b, &c];
    let mut takeover = [Duration::ZERO; 2];
    for (i, chain) in ["base", "polygon"].into_iter().enumerate() {
        let l = wait_until(&format!("a standby to take {chain} over"), 60, &all, || async {
            live_lease(&store, chain).await.filter(|l| l.holder != "keeper-a")
        })
        .await;
        takeover[i] = killed.elapsed();
        assert!(l.epoch > first.epoch, "{l:?}");
    }
    // Within the TTL of the last renewal: at most TTL + one refresh after the kill (plus scheduling slack).
    for t in takeover {
        assert!(t <= Duration::from_millis(TTL_MS + REFRESH_MS + SLACK_MS), "takeover took {t:?}\n{}", tails(&all));
    }
    let target = due + 5;
    for i in 0..2 {
        wait_recorded(&net, i, target, 90, &all).await;
    }
    for i in 0..2 {
        let ex = check_chain(&net, i, target, &all, None).await;
        // The keeper-a's executes stop at the kill; the new leaders recorded the rest.
        assert!(ex.values().flatten().any(|t| t.3 == a.signer));
        assert!(ex.values().flatten().any(|t| t.3 == b.signer || t.3 == c.signer));
    }
    // The new leader says so on /health and in `kronos status`; the takeover is counted on /metrics.
    let leader = if live_lease(&store, "base").await.unwrap().holder == "keeper-b" { &b } else { &c };
    let r = role(leader, "base").await.unwrap();
    assert_eq!(r["role"], "leader", "{r}");
    let m = reqwest::get(format!("http://127.0.0.1:{}/metrics", leader.port)).await.unwrap().text().await.unwrap();
    assert!(m.contains("kronos_lease_takeovers_total{chain=\"base\",market=\"1\"} 1"), "{m}");
    assert!(m.contains("kronos_lease_leader{chain=\"base\",market=\"1\"} 1"), "{m}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kronos"))
        .current_dir(kronos_testkit::repo_root())
        .args(["status", "--config"])
        .arg(net.dir.path().join(format!("{}.toml", leader.id)))
        .env("KRONOS_TEST_KEY", "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("base market 1: led by {} since", leader.id)),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("takeover after SIGKILL: base {:?}, polygon {:?}", takeover[0], takeover[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_resumed_after_a_takeover_sends_nothing_and_steps_down() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let (a, b, first) = leader_and_standby(&net, &store, &pg.url()).await;
    let all = [&a, &b];

    // Pause the leader as a checkpoint falls due, past the TTL.
    let due = current_checkpoint(&net, 0).await + 1;
    net.wait_checkpoint(0, due, 0).await;
    signal(&a, "-STOP");
    let l = wait_until("keeper-b to take over", 60, &all, || async {
        live_lease(&store, "base").await.filter(|l| l.holder == "keeper-b")
    })
    .await;
    assert!(l.epoch > first.epoch);
    // The new leader records checkpoints; whatever keeper-a had in flight is mined by now.
    let k1 = current_checkpoint(&net, 0).await;
    wait_recorded(&net, 0, k1, 60, &all).await;
    let a_nonce = nonce(&net, 0, a.signer).await;

    // What keeper-a had broadcast (or begun to) before it froze: a broadcast frozen between its last lease check
    // and the write to the node's socket goes out on resumption. The chain cannot check a lease epoch, so that one
    // transaction is the limit of fencing; everything else is checked (see keeper/README.md).
    let frozen_log = std::fs::read_to_string(&a.log).unwrap();
    let in_flight: std::collections::BTreeSet<u64> = frozen_log
        .lines()
        .filter(|l| l.contains(" broadcasting "))
        .filter_map(|l| l.split(" nonce=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();

    signal(&a, "-CONT");
    wait_until("keeper-a to step down (on /health)", 60, &all, || async {
        let r = role(&a, "base").await?;
        (r["role"] == "standby" && r["leader"] == "keeper-b" && r["last_loss"].is_string()).then_some(())
    })
    .await;
    // Two more checkpoints with keeper-a back: it starts no broadcast, and no transaction of its lands on chain
    // but one it had begun before freezing.
    let k2 = current_checkpoint(&net, 0).await + 2;
    wait_recorded(&net, 0, k2, 60, &all).await;
    let resumed_log = std::fs::read_to_string(&a.log).unwrap();
    let after = &resumed_log[frozen_log.len()..];
    assert!(!after.contains(" broadcasting "), "the resumed old leader broadcast a transaction\n{after}");
    let end = nonce(&net, 0, a.signer).await;
    for n in a_nonce..end {
        assert!(
            in_flight.contains(&n),
            "the resumed old leader sent nonce {n}, not begun before its pause\n{}",
            tails(&all)
        );
    }
    // Every checkpoint recorded once; a late execute of keeper-a, if its frozen broadcast went out, reverted.
    let ex = check_chain(&net, 0, k2, &all, Some(a.signer)).await;
    let late = ex.values().flatten().filter(|t| t.3 == a.signer && !t.2).count();
    println!("SIGSTOP: keeper-a nonce {a_nonce} at the takeover, {end} at the end; late reverted executes: {late}");
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(log.contains("lost the market's lease: stopped sending and stepped down"), "{}", tail(&a));
    // The loss went out as an alert signal (the Telegram bot's KeeperHealth alert) and into the store's events.
    // (one from keeper-b's takeover, one from keeper-a's loss)
    let events = store.count_events("keeper_health").await.unwrap();
    assert!(events >= 2, "{events} keeper_health events stored, expected the takeover and the loss");
    // A keeper that lost its lease is still a healthy standby.
    assert_eq!(health(&a).await.unwrap()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_connections_killed_and_postgresql_restarted_send_nothing_twice() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let (a, b, _) = leader_and_standby(&net, &store, &pg.url()).await;
    let all = [&a, &b];

    // Every connection of the keepers terminated by the server.
    let killed: i64 = {
        let admin = kronos_common::db::open(&pg.url()).await.unwrap().1;
        let r = sqlx::query(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = 'postgres'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        sqlx::Row::try_get(&r, 0).unwrap()
    };
    assert!(killed >= 2, "only {killed} connections terminated");
    let k1 = current_checkpoint(&net, 0).await + 3;
    wait_recorded(&net, 0, k1, 60, &all).await;

    // PostgreSQL restarted.
    pg.restart().unwrap();
    let k2 = current_checkpoint(&net, 0).await + 3;
    wait_recorded(&net, 0, k2, 90, &all).await;
    // Someone leads again (the store answered the keepers after the restart).
    wait_until("a leader after the restart", 60, &all, || async { live_lease(&store, "base").await }).await;
    check_chain(&net, 0, k2, &all, None).await;
}

/// The keepers through PgBouncer in transaction pooling mode (two server connections for everyone, so a keeper's
/// consecutive statements run on different ones): leases, fencing and migrations rely on no session state. The
/// leader killed: the standby takes over within the TTL, nothing missed, nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_pgbouncer_in_transaction_mode_a_killed_leader_is_replaced() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let bouncer = kronos_testkit::pg::PgBouncer::start(&pg, 2).expect("pgbouncer starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    // Both keepers start at once and apply the migrations through the bouncer.
    let a = spawn(&net, &bouncer.url(), "keeper-a", 1, &[]);
    let b = spawn(&net, &bouncer.url(), "keeper-b", 5, &[]);
    let all = [&a, &b];
    let store = Store::connect(&pg.url()).await.unwrap();
    let first = wait_until("a leader", 90, &all, || async { live_lease(&store, "base").await }).await;
    let (mut leader, standby) = if first.holder == "keeper-a" { (a, b) } else { (b, a) };
    let all = [&leader, &standby];
    wait_until("the other keeper to stand by", 90, &all, || async {
        (role(&standby, "base").await?["role"] == "standby").then_some(())
    })
    .await;
    let k0 = current_checkpoint(&net, 0).await;
    wait_recorded(&net, 0, k0 + 2, 60, &all).await;
    let due = current_checkpoint(&net, 0).await + 1;
    net.wait_checkpoint(0, due, 0).await;
    leader.child.start_kill().unwrap();
    let killed = Instant::now();
    let _ = leader.child.wait().await;
    let all = [&leader, &standby];
    wait_until("the standby to take over", 60, &all, || async {
        live_lease(&store, "base").await.filter(|l| l.holder == standby.id)
    })
    .await;
    let t = killed.elapsed();
    assert!(t <= Duration::from_millis(TTL_MS + REFRESH_MS + SLACK_MS), "takeover took {t:?}\n{}", tails(&all));
    let target = due + 4;
    wait_recorded(&net, 0, target, 90, &all).await;
    check_chain(&net, 0, target, &all, None).await;
    for k in all {
        let log = std::fs::read_to_string(&k.log).unwrap();
        assert!(!log.contains("lease renewal failed"), "{}", tail(k));
    }
    println!("takeover through pgbouncer: {t:?}");
}

/// Issue 18 audit H1: two processes given one `keeper_id` (a copied configuration) on one PostgreSQL never lead a
/// market together: one leads, the other logs the duplicate id as an error and stands by; nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_one_keeper_id_do_not_both_lead() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let a = spawn_named(&net, &pg.url(), "copy-1", "keeper-a", 1, &[]);
    let b = spawn_named(&net, &pg.url(), "copy-2", "keeper-a", 5, &[]);
    let all = [&a, &b];
    wait_until("keeper-a to lead", 90, &all, || async {
        live_lease(&store, "base").await.filter(|l| l.holder == "keeper-a")
    })
    .await;
    let standby = wait_until("one copy to stand by and say why", 60, &all, || async {
        for k in [&a, &b] {
            let log = std::fs::read_to_string(&k.log).unwrap_or_default();
            if role(k, "base").await?["role"] == "standby"
                && log.contains("another process runs with this keeper_id and holds this market's lease")
            {
                return Some(k.log.clone());
            }
        }
        None
    })
    .await;
    // Over three checkpoints: never two leaders, and each checkpoint executed once.
    let target = current_checkpoint(&net, 0).await + 3;
    let deadline = Instant::now() + Duration::from_secs(90);
    while net.checkpoint(0, target).await.0 == 0 {
        assert!(Instant::now() < deadline, "checkpoint {target} not recorded in 90 s\n{}", tails(&all));
        let (ra, rb) = (role(&a, "base").await, role(&b, "base").await);
        if let (Some(ra), Some(rb)) = (ra, rb) {
            assert!(
                !(ra["role"] == "leader" && rb["role"] == "leader"),
                "both copies lead: {ra} {rb}\n{}",
                tails(&all)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_chain(&net, 0, target, &all, None).await;
    println!("duplicate keeper_id: {} stood by", standby.display());
}

/// Issue 18 audit M1: the leader stopped with SIGTERM while its execute is in flight (broadcast, not mined: the chain
/// mines nothing meanwhile): it keeps renewing its lease until that transaction is mined and its pass has ended, and
/// gives the lease up only then, so the standby never sends that execute again. (The first version of this test sent
/// SIGTERM as a checkpoint fell due and passed on code that released the lease at once: the execute was usually
/// mined before the standby's next try.) Mutation tried: the lease refresher run on the shutdown token (released at
/// SIGTERM) — the standby takes the lease while the execute is in flight and the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_with_sigterm_mid_send_gives_the_lease_up_after_it() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let mut a = spawn(&net, &pg.url(), "keeper-a", 1, &[]);
    let first = wait_until("keeper-a to lead", 90, &[&a], || async {
        live_lease(&store, "base").await.filter(|l| l.holder == "keeper-a")
    })
    .await;
    let b = spawn(&net, &pg.url(), "keeper-b", 5, &[]);
    wait_until("keeper-b to stand by", 90, &[&a, &b], || async {
        (role(&b, "base").await?["role"] == "standby").then_some(())
    })
    .await;
    let k0 = current_checkpoint(&net, 0).await;
    wait_recorded(&net, 0, k0 + 1, 60, &[&a, &b]).await;
    // Stop the chain's block production and mine blocks by hand, one at a time, until keeper-a has broadcast the
    // execute of a checkpoint that is not recorded yet: it stays in the pool, in flight. (A block mined just as it
    // was broadcast records it: then the next checkpoint is tried.)
    let p = net.chains[0].wallet(0);
    p.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (0,)).await.unwrap();
    let broadcast = |k: u64| {
        let action = format!("execute:1:{k} ");
        std::fs::read_to_string(&a.log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" broadcasting ") && l.replace('"', " ").contains(&action))
    };
    let mut due = current_checkpoint(&net, 0).await + 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "keeper-a broadcast no execute to hold in flight\n{}", tail(&a));
        if net.checkpoint(0, due).await.0 != 0 {
            due += 1;
            continue;
        }
        if broadcast(due) {
            break;
        }
        p.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) && !broadcast(due) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(net.checkpoint(0, due).await.0, 0, "the execute was mined before the SIGTERM");
    signal(&a, "-TERM");
    // While the execute is in flight, keeper-a keeps its term: over more than a TTL on the database's clock, the
    // lease stays keeper-a's, under the same epoch, and live.
    let stopped = store.lease("base", 1).await.unwrap().unwrap().db_now_ms;
    let mut last_now = stopped;
    while last_now < stopped + (TTL_MS + 2 * REFRESH_MS) as i64 {
        let l = store.lease("base", 1).await.unwrap().unwrap();
        assert!(
            l.holder == "keeper-a" && l.epoch == first.epoch && l.expires_ms > l.db_now_ms,
            "the lease left keeper-a while its execute was in flight: {l:?}\n{}",
            tails(&[&a, &b])
        );
        last_now = l.db_now_ms;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Blocks again: the execute is mined, keeper-a's pass ends, it gives the lease up and exits.
    p.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (1,)).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), a.child.wait())
        .await
        .unwrap_or_else(|_| panic!("keeper-a did not stop within 60 s of SIGTERM\n{}", tail(&a)))
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", tail(&a));
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(log.contains("lease given up"), "{}", tail(&a));
    let l = wait_until("keeper-b to take over", 30, &[&a, &b], || async {
        live_lease(&store, "base").await.filter(|l| l.holder == "keeper-b")
    })
    .await;
    assert!(l.epoch > first.epoch);
    let target = due + 3;
    wait_recorded(&net, 0, target, 90, &[&a, &b]).await;
    // Every checkpoint recorded once, nothing sent after the transaction that recorded it, and the checkpoint that
    // was in flight at the SIGTERM executed by keeper-a alone.
    let ex = check_chain(&net, 0, target, &[&a, &b], None).await;
    let senders: Vec<Address> = ex[&due].iter().map(|t| t.3).collect();
    assert!(senders.iter().all(|s| *s == a.signer), "checkpoint {due} was sent by the standby too: {senders:?}");
}

/// Two keepers sharing one signer key (`shared_signer = true`, the store's nonce authority) on two chains: the leader
/// killed with SIGKILL as a checkpoint falls due (a nonce it took may never have been broadcast), the standby takes
/// both markets over with the same key, and the killed keeper, restarted, settles what the store shows open for the
/// key while the other leads. On chain: every checkpoint recorded once, nothing sent twice, and no nonce gap (no
/// transaction of the key left queued behind a missing nonce; the latest nonce catches up with the pending one); in
/// the store, the nonce authority not behind the key's latest nonce. Mutations tried: the authority bypassed (each
/// keeper counts the shared key's nonces itself) passes every on-chain check here — the two keepers never send with
/// the key at once — and fails the last (`base: the nonce authority's next nonce None is behind the key's latest
/// nonce 10`); the node's pending count not read (0 passed to the authority) survives: each refused nonce ("nonce too
/// low") makes the keeper take again, and the authority's fresh counter climbs to the right nonce within a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keepers_sharing_one_key_leave_no_nonce_gap_and_send_nothing_twice() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let net = start(&["base", "polygon"]).await;
    let store = Store::connect(&pg.url()).await.unwrap();
    let shared = "shared_signer = true\n";
    let a = spawn_with(&net, &pg.url(), "keeper-a", "keeper-a", 1, &[], shared);
    wait_until("keeper-a to lead both markets", 90, &[&a], || async {
        let (b, p) = (live_lease(&store, "base").await?, live_lease(&store, "polygon").await?);
        (b.holder == "keeper-a" && p.holder == "keeper-a").then_some(())
    })
    .await;
    let b = spawn_with(&net, &pg.url(), "keeper-b", "keeper-b", 1, &[], shared);
    assert_eq!(a.signer, b.signer);
    wait_until("keeper-b to stand by", 90, &[&a, &b], || async {
        (role(&b, "base").await?["role"] == "standby").then_some(())
    })
    .await;
    let k0 = current_checkpoint(&net, 0).await;
    wait_recorded(&net, 0, k0 + 2, 60, &[&a, &b]).await;
    let due = current_checkpoint(&net, 0).await + 1;
    net.wait_checkpoint(0, due, 0).await;
    let mut a = a;
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    for chain in ["base", "polygon"] {
        wait_until(&format!("keeper-b to take {chain} over"), 60, &[&a, &b], || async {
            live_lease(&store, chain).await.filter(|l| l.holder == "keeper-b")
        })
        .await;
    }
    // keeper-a back (same key) while keeper-b leads: it settles the key's open transactions and stands by.
    let a2 = spawn_with(&net, &pg.url(), "keeper-a2", "keeper-a", 1, &[], shared);
    let all = [&a2, &b];
    wait_until("the restarted keeper-a to stand by", 90, &all, || async {
        (role(&a2, "base").await?["role"] == "standby").then_some(())
    })
    .await;
    let target = current_checkpoint(&net, 0).await + 3;
    for i in 0..2 {
        wait_recorded(&net, i, target, 90, &all).await;
    }
    for i in 0..2 {
        check_chain(&net, i, target, &all, None).await;
        // No nonce gap: the key's transactions in the pool are all mined in turn (latest catches up with pending)
        // and none waits queued behind a missing nonce.
        let p = net.chains[i].wallet(0);
        wait_until(&format!("chain {i}: the key's transactions mined"), 60, &all, || {
            let p = p.clone();
            async move {
                let latest = p.get_transaction_count(a2.signer).latest().await.ok()?;
                let pending = p.get_transaction_count(a2.signer).pending().await.ok()?;
                let status: serde_json::Value = p.raw_request("txpool_status".into(), ()).await.ok()?;
                let queued = status["queued"]
                    .as_str()
                    .and_then(|q| u64::from_str_radix(q.trim_start_matches("0x"), 16).ok())
                    .or_else(|| status["queued"].as_u64())?;
                (latest == pending && queued == 0).then_some(())
            }
        })
        .await;
    }
    // The key's nonces came from the store's nonce authority: its next nonce for (chain, signer) is not behind the
    // key's latest nonce on chain. (Nonces counted by each keeper alone, the authority bypassed, pass every check
    // above — the keepers never send with the key at the same time — and fail this one.)
    let admin = kronos_common::db::open(&pg.url()).await.unwrap().1;
    for (i, chain) in ["base", "polygon"].into_iter().enumerate() {
        let latest = net.chains[i].wallet(0).get_transaction_count(a2.signer).latest().await.unwrap();
        let row = sqlx::query("SELECT next_nonce FROM signer_nonces WHERE chain = $1 AND signer = $2")
            .bind(chain)
            .bind(a2.signer.to_string())
            .fetch_optional(&admin)
            .await
            .unwrap();
        let next: Option<i64> = row.map(|r| sqlx::Row::get(&r, 0));
        assert!(
            next.is_some_and(|n| n >= latest as i64),
            "{chain}: the nonce authority's next nonce {next:?} is behind the key's latest nonce {latest}\n{}",
            tails(&all)
        );
    }
}

/// Two `kronos run` processes on one SQLite file (no leases there): the second is refused at start with an error
/// naming the file, while the first keeps running; the claim ends with the first process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_keeper_on_one_sqlite_file_is_refused() {
    let net = start(&["base"]).await;
    let url = net.store_url();
    let a = spawn_named(&net, &url, "sqlite-1", "keeper-a", 1, &[]);
    wait_until("the first keeper to answer /health", 90, &[&a], || async { health(&a).await }).await;
    let mut b = spawn_named(&net, &url, "sqlite-2", "keeper-b", 5, &[]);
    let status = tokio::time::timeout(Duration::from_secs(60), b.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the second keeper on the same SQLite file kept running\n{}", tail(&b)))
        .unwrap();
    assert!(!status.success(), "{status:?}");
    let log = std::fs::read_to_string(&b.log).unwrap();
    let file = net.dir.path().join("keeper.db");
    assert!(
        log.contains("another keeper process") && log.contains(&file.display().to_string()),
        "the refusal does not name the file {}:\n{log}",
        file.display()
    );
    assert!(health(&a).await.is_some(), "the first keeper stopped");
    assert_eq!(nonce(&net, 0, b.signer).await, 0, "the refused keeper sent a transaction");
}

/// `kronos bench soak` end to end, counted and short (`--kills 2 --checkpoints-between 2`): two keepers (the built
/// `kronos`) on one PostgreSQL, one chain, the leader killed with SIGKILL as soon as the chain has recorded two
/// checkpoints since the last takeover, twice, and restarted each time: every market taken over within the TTL, no
/// keeper exit the soak did not cause, and by the soak's own tally (counted on chain) nothing missed and nothing sent
/// twice. Everything waits for events (leases, checkpoints recorded); nothing sleeps a fixed time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_counted_soak_misses_nothing_and_sends_nothing_twice() {
    let pg = PgServer::start().expect("PostgreSQL starts (scripts/setup installs it)");
    let args = kronos_testkit::soak::SoakArgs {
        keepers: 2,
        minutes: 1.0,
        kill_every: Duration::from_secs(120),
        chains: Some(vec!["base".into()]),
        store: Some(pg.url()),
        lease_ttl_ms: Some(TTL_MS),
        lease_refresh_ms: Some(REFRESH_MS),
        block_time: 0.5,
        speed: 20,
        interval: INTERVAL as u32,
        kills: Some(2),
        checkpoints_between: 2,
    };
    let started = Instant::now();
    let r = kronos_testkit::soak::soak_with(args, Some(std::path::Path::new(env!("CARGO_BIN_EXE_kronos"))))
        .await
        .expect("the soak runs to its end");
    println!("soak: {r:?} in {:?}", started.elapsed());
    assert_eq!(r.kills, 2, "{r:?}");
    assert_eq!(r.takeovers_ms.len(), 2, "one market taken over after each kill: {r:?}");
    assert_eq!(r.not_taken_over, 0, "{r:?}");
    for t in &r.takeovers_ms {
        assert!(*t <= TTL_MS + REFRESH_MS + SLACK_MS, "a takeover took {t} ms: {r:?}");
    }
    assert_eq!(r.unexpected_exits, 0, "{r:?}");
    assert_eq!(r.chains.len(), 1, "{r:?}");
    assert_eq!(r.missed(), 0, "missed checkpoints: {r:?}");
    assert_eq!(r.duplicates(), 0, "duplicate sends: {r:?}");
    // Two checkpoints before each kill and two after the last, at least.
    assert!(r.recorded() >= 6, "{r:?}");
}
