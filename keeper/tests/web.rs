//! The dApp in a real browser: two local anvil chains (a native-coin market and an ERC-20 one), the real keeper
//! serving its API and the page on one listener, and `tests/web/dapp.mjs` driving Debian's headless Chromium through
//! the pinned playwright-core with a test wallet backed by anvil's unlocked accounts: connect, bet, lock, settle,
//! claim, a losing bet, a refunded round, every error message, an ERC-20 market (approve exactly the bet), AI mode,
//! a chain change, a sped-up and a never-mined transaction, a fee scheduled later, AI mode's Follow on a second
//! listener that publishes forecasts (each reveal read from the registry through the wallet and checked against what
//! the page showed; a keeper misreporting a reveal caught), the forecaster and health pages; and the local Solana
//! cluster (the kronos-market program in the local RPC server, a SOL and an SPL-token market, candles replayed into its
//! feed, bettors) driven by the same keeper: `/api/chains` lists it (program, markets, mint and decimals read from the
//! accounts), `/api/rounds` serves its rounds from the store as the round accounts hold them, and the page shows it
//! read-only (round cards, lock and close prices, settled or refunded, pools; no bet button).
//! Screenshots go to `<CARGO_TARGET_TMPDIR>/web`.

use std::sync::Arc;
use std::time::Duration;

use anchor_lang::AccountDeserialize;
use kronos_api_types as wire;
use kronos_common::Bus;
use kronos_keeper::engine::{Keeper, Overrides};
use kronos_market::state::{Round, RoundStatus};
use kronos_testkit::harness as common;
use kronos_testkit::net::{self, LocalChain, NetOptions, ReplayCandles};
use kronos_testkit::solana::{self as localsol, LocalSolana};
use tokio_util::sync::CancellationToken;

/// The local Solana cluster's catalogue key.
const SOLANA: &str = kronos_testkit::solana_demo::SOLANA;

/// The local Solana cluster beside the anvils: its clock as fast as theirs (4 chain seconds per wall second), the
/// replayed candles (the stretch after the `evm` chains' ones) written into its feed, two bettors on both markets.
async fn start_solana(net: &common::Net, evm: usize, cancel: &CancellationToken) -> Arc<LocalSolana> {
    let candles = kronos_forecast::load_csv(net.root.join("data/btcusd-1h.csv")).unwrap();
    let base = net::candle_base(evm);
    let opts = localsol::Options {
        interval: common::INTERVAL as u32,
        speed: 4,
        work_dir: net.dir.path().join("solana"),
        initial_answer: (candles[base - 1].close * 1e8).round() as i128,
        bettors: 2,
    };
    let sol = Arc::new(LocalSolana::start(&opts).await.unwrap());
    net.replay.register(SOLANA, sol.genesis as u64, common::INTERVAL, base);
    let ropts = localsol::replay::ReplayOptions {
        chain: SOLANA.into(),
        stale_epochs: Default::default(),
        poll: Duration::from_millis(100),
    };
    tokio::spawn(localsol::replay::run(sol.clone(), net.replay.clone(), ropts, Default::default(), cancel.clone()));
    tokio::spawn(localsol::bettors::run(
        sol.clone(),
        Duration::from_millis(500),
        16,
        Default::default(),
        cancel.clone(),
    ));
    sol
}

/// `/api/chains`' Solana entry once the keeper lists both local markets (it reads them once connected).
async fn solana_entry(api: &str) -> (wire::EvmChain, wire::SolanaChain) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let body = reqwest::get(format!("{api}/api/chains")).await.unwrap().bytes().await.unwrap();
        let chains: wire::Chains = wire::parse("/api/chains", &body).unwrap();
        let evm = chains.chains.iter().find_map(|c| match c {
            wire::Chain::Evm(e) => Some(e.clone()),
            wire::Chain::Solana(_) => None,
        });
        let sol = chains.chains.iter().find_map(|c| match c {
            wire::Chain::Solana(s) if s.markets.len() == 2 && s.unavailable.is_none() => Some(s.clone()),
            _ => None,
        });
        if let (Some(e), Some(s)) = (evm, sol) {
            return (e, s);
        }
        assert!(tokio::time::Instant::now() < deadline, "/api/chains never listed both Solana markets: {body:?}");
        tokio::time::sleep(Duration::from_millis(250)).await; // polling the keeper's API, not a wait in a test step
    }
}

/// Like `common::start`, with a chain clock slow enough for a browser to bet within a round: 2 chain seconds per
/// 0.5 s block, so a 60-second round lasts 15 s and takes bets for 13.5 s.
async fn start(chains: &[&str]) -> common::Net {
    let root = kronos_testkit::repo_root();
    let cat = kronos_common::Catalogue::load(root.join("config/chains.toml")).unwrap();
    let policy = kronos_testkit::deploy::DeployPolicy::load(&root.join("config/deploy.toml")).unwrap();
    let candles = Arc::new(kronos_forecast::load_csv(root.join("data/btcusd-1h.csv")).unwrap());
    let opts = NetOptions {
        chains: chains.iter().map(|s| s.to_string()).collect(),
        block_time: 0.5,
        seconds_per_block: 2,
        interval: common::INTERVAL as u32,
    };
    let chains: Vec<Arc<LocalChain>> =
        net::start(&root, &cat, &policy, &opts, &candles).await.unwrap().into_iter().map(Arc::new).collect();
    let replay = Arc::new(ReplayCandles::new(candles));
    let mut replay_cancel = Vec::new();
    for c in &chains {
        replay.register(&c.chain.key, c.genesis(), common::INTERVAL, c.candle_base);
        let t = CancellationToken::new();
        tokio::spawn(net::replay(c.clone(), replay.clone(), common::INTERVAL, Duration::from_millis(100), t.clone()));
        replay_cancel.push(t);
    }
    common::Net { root, cat, chains, replay, replay_cancel, dir: tempfile::tempdir().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dapp_bets_settles_claims_and_explains_every_failure_in_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run scripts/setup (it installs Debian's chromium)"
    );
    // optimism's market takes the native coin (bet on by the test), base's an ERC-20 (shown).
    let net = start(&["optimism", "base"]).await;
    let sol_cancel = CancellationToken::new();
    let sol = start_solana(&net, net.chains.len(), &sol_cancel).await;
    let mut cfg = net.config(&[], true);
    cfg.solana.push(kronos_testkit::solana_demo::keeper_config(&net.cat, &sol, false).unwrap());
    // The page opens /ws from the keeper's own origin, which the API must allow: a fixed port, known beforehand.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.api.allowed_origins = vec![format!("http://127.0.0.1:{port}")];
    let keeper = Keeper::build(
        &cfg,
        net.signer(),
        Bus::new(8192),
        Overrides { candles: Some(net.replay.clone()), no_api: false },
    )
    .await
    .unwrap();
    let addr = keeper.api_addr().unwrap();
    let cancel = CancellationToken::new();
    // The same keeper's API on a second listener whose operator publishes forecasts (`[api] publish_forecasts =
    // true`): the page served there enables AI mode's Follow / Against; the first listener stays sealed.
    let pub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pub_addr = pub_listener.local_addr().unwrap();
    let mut pub_limits = cfg.api.clone();
    pub_limits.allowed_origins = vec![format!("http://{pub_addr}")];
    let pub_state = kronos_keeper::api::ApiState::new(
        keeper.store.clone(),
        keeper.bus.clone(),
        keeper.metrics.clone(),
        keeper.chains.clone(),
        keeper.stats.clone(),
        None,
        pub_limits,
    )
    .publishing_forecasts(true);
    let pub_stop = cancel.clone();
    let published =
        tokio::spawn(kronos_keeper::api::serve(pub_listener, pub_state, async move { pub_stop.cancelled().await }));
    let run = tokio::spawn(keeper.run(cancel.clone()));
    // `kronos web` in front of the keeper, with the first chain's market pinned (the second one's left unverified):
    // the page it serves says which.
    let web_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pins = kronos_keeper::dapp::Pins::from([(
        net.chains[0].chain.chain_id.expect("an EVM chain has a chain id"),
        net.chains[0].deployment.market,
    )]);
    let standalone = kronos_keeper::dapp::Standalone::bind(kronos_keeper::dapp::Options {
        api: format!("http://{addr}").parse().unwrap(),
        listen: format!("127.0.0.1:{web_port}").parse().unwrap(),
        origins: Vec::new(),
        pins,
    })
    .await
    .unwrap();
    let web_addr = standalone.local_addr().unwrap();
    let web_stop = cancel.clone();
    let web = tokio::spawn(standalone.serve(async move { web_stop.cancelled().await }));

    // `/api/chains` lists the cluster as the accounts say: the program, both markets with their stake (SOL's 9
    // decimals; the SPL market's mint and its 6), the feed's pair; the EVM entries as before.
    let (evm, listed) = solana_entry(&format!("http://{addr}")).await;
    assert_eq!((evm.kind, evm.markets.len()), (wire::ChainKind::Evm, 1));
    assert_eq!(
        (listed.kind, listed.name.as_str(), listed.cluster.as_deref(), listed.program.clone()),
        (wire::ChainKind::Solana, SOLANA, Some("localnet"), localsol::PROGRAM_ID.to_string())
    );
    let stakes: Vec<_> = listed
        .markets
        .iter()
        .map(|m| (m.id, m.address.clone(), m.mint.clone(), m.decimals, m.pair.as_str(), m.refused.is_none()))
        .collect();
    assert_eq!(
        stakes,
        [
            (localsol::SOL_MARKET_ID, sol.markets[0].key.to_string(), None, Some(9), "BTC/USD", true),
            (
                localsol::TOKEN_MARKET_ID,
                sol.markets[1].key.to_string(),
                Some(sol.mint.to_string()),
                Some(localsol::TOKEN_DECIMALS),
                "BTC/USD",
                true
            ),
        ]
    );
    assert_eq!(listed.markets[0].params[0].fee_bps, sol.params.fee_bps);
    assert_eq!(listed.markets[0].bet_cutoff, Some(sol.params.bet_cutoff));
    let solana = serde_json::json!({
        "name": SOLANA,
        "markets": listed.markets.iter().map(|m| serde_json::json!({ "id": m.id, "address": m.address, "mint": m.mint })).collect::<Vec<_>>(),
    });

    let chains: Vec<serde_json::Value> = net
        .chains
        .iter()
        .map(|c| serde_json::json!({ "name": c.chain.key, "chain_id": c.chain.chain_id, "rpc": c.url }))
        .collect();
    let keys = &net.chains[0].keys;
    let accounts = serde_json::json!({
        "a": keys[5].address().to_string(),
        "b": keys[6].address().to_string(),
        "owner": keys[net::accounts::DEPLOYER].address().to_string(),
    });
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web");
    let mut node = tokio::process::Command::new("node");
    node.arg(net.root.join("tests/web/dapp.mjs"))
        .current_dir(&net.root)
        .env("KRONOS_WEB_URL", format!("http://{addr}/"))
        .env("KRONOS_WEB_STANDALONE", format!("http://{web_addr}/"))
        .env("KRONOS_WEB_PUBLISHED", format!("http://{pub_addr}/"))
        .env("KRONOS_WEB_CHAINS", serde_json::Value::from(chains).to_string())
        .env("KRONOS_WEB_SOLANA", solana.to_string())
        .env("KRONOS_WEB_ACCOUNTS", accounts.to_string())
        .env("KRONOS_WEB_OUT", &out)
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(600), node.status())
        .await
        .expect("the browser test ran for more than 10 minutes")
        .expect("node runs (scripts/setup installs it)");
    // The Solana rounds `/api/rounds` served (and the page showed) are the round accounts' state: pools, outcome
    // and payout, read from the chain here.
    let mut compared = 0;
    if status.success() {
        for (m, id) in sol.markets.iter().zip([localsol::SOL_MARKET_ID, localsol::TOKEN_MARKET_ID]) {
            let url = format!("http://{addr}/api/rounds?chain={SOLANA}&market={id}&limit=50");
            let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
            let rounds: Vec<wire::Round> = wire::parse("/api/rounds", &body).unwrap();
            for r in rounds.iter().filter(|r| r.state != wire::RoundState::Locked) {
                let Ok(acc) = sol.client.get_account(&m.round(r.epoch as u64)).await else { continue };
                let on_chain = Round::try_deserialize(&mut acc.data.as_slice()).unwrap();
                let state = match on_chain.status {
                    RoundStatus::Settled => wire::RoundState::Settled,
                    RoundStatus::Cancelled => wire::RoundState::Cancelled,
                    RoundStatus::Open | RoundStatus::Locked => wire::RoundState::Locked,
                };
                assert_eq!(
                    (r.state, r.up_wei.clone(), r.down_wei.clone()),
                    (state, on_chain.up_amount.to_string(), on_chain.down_amount.to_string()),
                    "{} round {} on /api/rounds and on chain",
                    m.name,
                    r.epoch
                );
                if state == wire::RoundState::Settled {
                    assert_eq!(r.reward_wei, Some(on_chain.reward_amount.to_string()), "{} round {}", m.name, r.epoch);
                }
                compared += 1;
            }
        }
    }
    cancel.cancel();
    sol_cancel.cancel();
    let _ = run.await;
    let _ = web.await;
    let _ = published.await;
    assert!(status.success(), "tests/web/dapp.mjs failed ({status}); screenshots so far in {}", out.display());
    assert!(compared >= 2, "finished Solana rounds compared with their accounts: {compared}");
}

/// The page's helpers in node, every `tests/web/*.test.mjs`: formatting (`format.test.mjs`: an on-chain token symbol
/// escaped in markup, API numbers coerced, amounts with every significant digit, multipliers net of the fee, the fee
/// in force for each round, what a settled round paid), when it redraws itself (`redraw.test.mjs`: after a pause in
/// typing an amount, never while a transaction is on its way), AI mode (`ai.test.mjs`: Follow / Against only on a
/// published or revealed forecast with a direction, Against the other side; each reveal checked against what was shown) and following a transaction (`txwatch.test.mjs`: a speed-up followed, a cancel,
/// a chain change, a drop, a receipt that never comes).
#[test]
fn the_dapp_formats_amounts_and_escapes_the_token_symbol() {
    let root = kronos_testkit::repo_root();
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/web"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the node tests of the page are in tests/web: {files:?}");
    let out = std::process::Command::new("node")
        .arg("--test")
        .args(&files)
        .current_dir(&root)
        .output()
        .expect("node runs (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "a node test of the page failed ({files:?}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
