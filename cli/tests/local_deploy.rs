//! Issue 13, item 11: "deploy on my own local chain, then `kronos run`", as keeper/README.md tells a newcomer to do
//! it, with the real `kronos` binary: `kronos deploy` against a plain anvil started with the catalogue chain's id
//! (mock feeds and a short-grace sequencer mock chosen by itself, a deployment and a keeper configuration written),
//! then `kronos run` with that configuration until a round with bets on both sides is started, locked and settled,
//! on chain and in `kronos status`. Also: `--dry-run` without a key, the shipped policy planning every chain, and the
//! keeper's error for a mock feed configured without `local = true` and `pairs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, I256, U256};
use alloy::providers::Provider;
use kronos_common::Catalogue;
use kronos_testkit::{head_time, repo_root, spawn, NodeOptions};

fn kronos() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kronos"));
    c.current_dir(repo_root()).env_remove("KRONOS_DEPLOYER_KEY").env_remove("KRONOS_STORE");
    c
}

/// Removes the files a run wrote into the repository, whatever happens.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn dry_run_needs_no_key_and_the_shipped_policy_plans_every_chain() {
    let cat = Catalogue::load(repo_root().join("config/chains.toml")).unwrap();
    let mut chains = 0;
    for c in cat.evm_chains() {
        let out = kronos().args(["deploy", "--chain", &c.key, "--dry-run"]).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{}: {stderr}", c.key);
        let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(plan["marketCount"], 2, "{}: {stdout}", c.key);
        assert_eq!(plan["localFeeds"], false, "{}", c.key);
        assert!(stderr.contains("give --owner, or set KRONOS_DEPLOYER_KEY"), "{}: {stderr}", c.key);
        if c.key == "ethereum" {
            // 300-s rounds on feeds with a 3,600-s heartbeat: planned, with a warning.
            assert!(stderr.contains("warning: chains.ethereum.interval_s = 300 is shorter than the 3600-s heartbeat"));
        }
        chains += 1;
    }
    assert_eq!(chains, 7);
    // A local plan without a node: mock feeds, 60-s rounds, a 60-s grace on the L2's sequencer mock.
    let out = kronos().args(["deploy", "--chain", "base", "--local", "--dry-run"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["localFeeds"], true);
    assert_eq!(plan["markets"][0]["sequencerGrace"], 60);
    assert_eq!(plan["markets"][0]["interval"], 60);
    assert_eq!(plan["output"], "contracts-evm/deployments/local-base.json");
    // With a node, the plan follows it: a fresh anvil with Base's id gets mocks, one with another id is refused.
    let node = spawn(NodeOptions { chain_id: 8453, ..Default::default() });
    let out = kronos().args(["deploy", "--chain", "base", "--dry-run", "--rpc", &node.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((plan["localFeeds"].as_bool(), plan["markets"][0]["sequencerGrace"].as_u64()), (Some(true), Some(60)));
    let other = spawn(NodeOptions::default());
    let out = kronos().args(["deploy", "--chain", "base", "--dry-run", "--rpc", &other.url]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chain id 31337") && err.contains("anvil --chain-id 8453"), "{err}");
    // An RPC URL that does not parse is named, never echoed (it may carry an API key).
    let out = kronos()
        .args(["deploy", "--chain", "base", "--dry-run", "--rpc", "https://rpc.example:99999/v2/SuperSecretKey42"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--rpc is not a URL") && !err.contains("SuperSecretKey42"), "{err}");
}

/// Runs `kronos run` with `cfg` and waits for it to fail; its stderr.
async fn run_until_it_fails(cfg: &Path, env: &[(&str, String)]) -> String {
    let mut c = tokio::process::Command::from(kronos());
    c.args(["run", "--config"]).arg(cfg).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .expect("kronos run with a wrong configuration did not stop within 120 s")
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `check` every 250 ms until it gives a value, failing with `what` after `secs`.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_on_a_local_chain_then_run_settles_a_round() {
    let root = repo_root();
    // The README's first step: a plain anvil with the catalogue chain's id (Base, an L2: a sequencer mock too).
    let node = spawn(NodeOptions { chain_id: 8453, block_time: Some(1), ..Default::default() });
    let out = format!("contracts-evm/deployments/local-test-run-{}.json", std::process::id());
    let cfg = format!("contracts-evm/deployments/local-test-run-{}.keeper.toml", std::process::id());
    let _cleanup = Cleanup(vec![root.join(&out), root.join(&cfg)]);

    // `kronos deploy`: no flag says "local"; the node does.
    let mut deploy = tokio::process::Command::from(kronos());
    deploy
        .args(["deploy", "--chain", "base", "--rpc", &node.url, "--out", &out])
        .env("KRONOS_DEPLOYER_KEY", node.key_hex(0))
        .kill_on_drop(true);
    let res = tokio::time::timeout(Duration::from_secs(600), deploy.output())
        .await
        .expect("kronos deploy did not finish within 600 s")
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    assert!(res.status.success(), "kronos deploy failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("base: local development chain: deploying Chainlink mock feeds"), "{stdout}");
    assert!(stdout.contains(&format!("keeper configuration written to {cfg}")), "{stdout}");
    assert!(stdout.contains("updateAnswer(int256)"), "{stdout}");
    let d: kronos_testkit::deploy::Deployment =
        serde_json::from_str(&std::fs::read_to_string(root.join(&out)).unwrap()).unwrap();
    assert_eq!((d.chain_id, d.market_ids.len()), (8453, 2));
    let market = kronos_contracts::KronosMarket::new(d.market, node.provider.clone());
    let m1 = market.getMarket(U256::from(1)).call().await.unwrap();
    assert!(m1.sequencerFeed != Address::ZERO && m1.sequencerGrace == 60 && m1.interval == 60, "{m1:?}");
    let genesis = d.genesis[0].to::<u64>();
    let cfg_path = root.join(&cfg);
    let cfg_text = std::fs::read_to_string(&cfg_path).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("KRONOS_KEEPER_KEY", node.key_hex(1)),
        ("KRONOS_STORE", format!("sqlite://{}/keeper.db", dir.path().display())),
        ("KRONOS_LISTEN", "127.0.0.1:0".to_string()),
    ];
    // Without `local = true` and `pairs` the keeper refuses the mock feed, and says what to set.
    let without = |drop: &[&str]| {
        let text: String =
            cfg_text.lines().filter(|l| !drop.iter().any(|d| l.starts_with(d))).map(|l| format!("{l}\n")).collect();
        let p = dir.path().join(format!("without-{}.toml", drop.len()));
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = run_until_it_fails(&without(&["local =", "pairs ="]), &env).await;
    assert!(err.contains("`local = true`") && err.contains("`pairs = { \"1\" = \"<pair>\" }`"), "{err}");
    let err = run_until_it_fails(&without(&["local ="]), &env).await;
    assert!(err.contains("`local = true`") && err.contains("`pairs`"), "{err}");
    // The written configuration pointed at a node that is not a development node (a real network answering with
    // the same chain id): `local = true` is refused, mock feeds never meet real bets.
    let real = kronos_testkit::rpcproxy::RpcProxy::start(&node.url).await;
    real.answer("web3_clientVersion", serde_json::json!("Geth/v1.14.11-stable/linux-amd64/go1.23.2"));
    assert!(cfg_text.contains(&node.url), "the written configuration names the node's URL");
    let p = dir.path().join("real-node.toml");
    std::fs::write(&p, cfg_text.replace(&node.url, &real.url)).unwrap();
    let err = run_until_it_fails(&p, &env).await;
    assert!(err.contains("local = true needs a development node") && err.contains("Geth/v1.14.11"), "{err}");

    // Chain time runs ten times faster from here on (10 chain seconds per 1-s block): 60-s rounds take 6 s.
    node.provider.raw_request::<_, serde_json::Value>("anvil_setBlockTimestampInterval".into(), (10,)).await.unwrap();
    // `kronos run` with the configuration `kronos deploy` wrote.
    let log = dir.path().join("keeper.log");
    let mut keeper = {
        let mut c = tokio::process::Command::from(kronos());
        c.args(["run", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in &env {
            c.env(k, v);
        }
        c.spawn().unwrap()
    };
    let t = |k: u64| genesis + 60 * k;

    // Bets on both sides of one round while it takes bets (until 6 s before its lock), by two dev accounts.
    let mut epoch = None;
    for _ in 0..10 {
        let now = wait_for(120, "the chain reaching genesis", || async {
            let now = head_time(&node.provider).await.ok()?;
            (now >= genesis).then_some(now)
        })
        .await;
        let e = (now - genesis) / 60 + 1;
        wait_for(120, "the next round", || async { (head_time(&node.provider).await.ok()? >= t(e)).then_some(()) })
            .await;
        let amount = U256::from(10u64).pow(U256::from(16));
        let bet = |account: usize, position: u8| {
            let m = kronos_contracts::KronosMarket::new(d.market, node.provider_for(account));
            async move {
                let r = m.bet(U256::from(1), U256::from(e), position, amount).value(amount).send().await?;
                anyhow::Ok(r.get_receipt().await?.status())
            }
        };
        let (up, down) = tokio::join!(bet(2, 1), bet(3, 2));
        if matches!((up, down), (Ok(true), Ok(true))) {
            epoch = Some(e);
            break;
        }
    }
    let e = epoch.expect("no round took both bets in 10 tries");
    // Move the mock's price between the lock and the close, as the README shows with `cast send`.
    let agg = kronos_testkit::net::mock_aggregator(&node.provider, d.feeds[0]).await.unwrap();
    wait_for(120, "the lock time", || async { (head_time(&node.provider).await.ok()? > t(e + 1)).then_some(()) }).await;
    let r = kronos_contracts::mocks::MockV3Aggregator::new(agg, node.provider.clone())
        .updateAnswer(I256::try_from(6_600_000_000_000i64).unwrap())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let moved_at =
        node.provider.get_block_by_number(r.block_number.unwrap().into()).await.unwrap().unwrap().header.timestamp;

    // Settled on chain by the keeper ...
    let state = wait_for(240, "the round settled on chain", || async {
        let r = market.getRound(U256::from(1), U256::from(e)).call().await.ok()?;
        (r.state != 1).then_some(r)
    })
    .await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(state.state, 2, "round {e} is not Settled: {state:?}\n{}", log_text());
    // ... and in the keeper's store, through `kronos status` with the same configuration.
    let row = wait_for(120, "kronos status showing the round settled", || async {
        let mut c = tokio::process::Command::from(kronos());
        c.args(["status", "--json", "--rounds", "50", "--config"]).arg(&cfg_path);
        for (k, v) in &env {
            c.env(k, v);
        }
        let out = c.output().await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["base"]["rounds"]
            .as_array()?
            .iter()
            .find(|r| r["market_id"] == 1 && r["epoch"] == e && r["state"] == "settled")
            .cloned()
    })
    .await;
    eprintln!("round {e}: {row} (price moved at {moved_at}, lock {}, close {})", t(e + 1), t(e + 2));
    let price = |k: &str| row[k].as_str().and_then(|p| p.parse::<f64>().ok());
    // The lock price is the mock's starting price from config/deploy.toml ([local.prices]).
    assert_eq!(price("lock_price"), Some(65_000.0), "{row}");
    if moved_at > t(e + 1) && moved_at <= t(e + 2) {
        assert_eq!((price("close_price"), row["outcome"].as_str()), (Some(66_000.0), Some("up")), "{row}");
    }
    keeper.start_kill().unwrap();
    let _ = keeper.wait().await;
}
