//! The API's cached bodies (issue 19): the same bytes as the uncached query, and a new body as soon as the store
//! writes. And the load generators at a tiny size against the real servers, so they cannot rot: `kronos bench api
//! --quick` (local chain, keeper process), `kronos bench ws --quick`, and `kronos bench --api-load` (settlement under
//! API load). These are not timed: they check that the benches run and count, not how fast anything is.

use std::sync::Arc;
use std::time::Duration;

use kronos_common::http_guard::Limits;
use kronos_common::Bus;
use kronos_keeper::api::{self, ApiState};
use kronos_keeper::metrics::Metrics;
use kronos_keeper::store::{MarketRow, Outcome, PredictionRow, Reveal, RoundRow, RoundState, Store};

const DEADLINE: Duration = Duration::from_secs(30);

fn round(epoch: i64, state: RoundState, lock: Option<&str>) -> RoundRow {
    RoundRow {
        chain: "base".into(),
        market_id: 1,
        epoch,
        state,
        lock_price: lock.map(str::to_string),
        close_price: None,
        outcome: None,
        reason: None,
        up_wei: "0".into(),
        down_wei: "0".into(),
        reward_wei: None,
        treasury_fee_wei: None,
        delay_blocks: None,
    }
}

async fn get(url: &str) -> (u16, axum::body::Bytes) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap())
}

/// Polls `url` until its body satisfies `ok` (the store's write is what changes it), with a generous deadline.
async fn wait_for_body(url: &str, ok: impl Fn(&str) -> bool) -> axum::body::Bytes {
    let t = std::time::Instant::now();
    loop {
        let (status, body) = get(url).await;
        if status == 200 && ok(std::str::from_utf8(&body).unwrap()) {
            return body;
        }
        assert!(t.elapsed() < DEADLINE, "{url} never showed the write: {}", String::from_utf8_lossy(&body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_bodies_are_the_querys_own_and_a_write_shows_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.unwrap();
    store.upsert_round(&round(1, RoundState::Locked, None)).await.unwrap();
    store.upsert_round(&round(2, RoundState::Locked, None)).await.unwrap();
    let limits = Limits { rate_per_s: 0, ..Limits::default() };
    let state =
        ApiState::new(store.clone(), Bus::default(), Arc::new(Metrics::default()), vec![], vec![], None, limits);
    let cache = state.cache.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state.clone(), std::future::pending()));

    // Rounds: the cached body is the query's body, byte for byte, and the second request is served from the cache.
    let url = format!("{base}/api/rounds?chain=base&market=1&limit=10");
    let (status, first) = get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(first, api::rounds_body(&store, Some("base"), Some(1), 10).await.unwrap());
    let (hits, misses) = cache.counts();
    let (_, again) = get(&url).await;
    assert_eq!(again, first);
    assert_eq!(cache.counts(), (hits + 1, misses), "the second request is a cache hit");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&first).unwrap();
    assert_eq!(rows.iter().map(|r| r["epoch"].as_i64().unwrap()).collect::<Vec<_>>(), vec![2, 1]);

    // A round changes: the next body shows it, and is again the query's own.
    store.upsert_round(&round(2, RoundState::Settled, Some("100000.5"))).await.unwrap();
    let changed = wait_for_body(&url, |b| b.contains("\"settled\"") && b.contains("100000.5")).await;
    assert_eq!(changed, api::rounds_body(&store, Some("base"), Some(1), 10).await.unwrap());
    // Another filter and a new round.
    let all = format!("{base}/api/rounds?limit=1");
    let (_, before) = get(&all).await;
    assert!(std::str::from_utf8(&before).unwrap().contains("\"epoch\":2"));
    store.upsert_round(&round(3, RoundState::Locked, None)).await.unwrap();
    let after = wait_for_body(&all, |b| b.contains("\"epoch\":3")).await;
    assert_eq!(after, api::rounds_body(&store, None, None, 1).await.unwrap());

    // Predictions: committed (value sealed), then revealed.
    let p = PredictionRow {
        chain: "base".into(),
        market_id: 1,
        epoch: 3,
        publisher: "0xabc".into(),
        p_up_bps: 6100,
        up: true,
        salt: "0x01".into(),
        commitment: "0xc0ffee".into(),
        commit_tx: Some("0xc1".into()),
        reveal_tx: None,
        outcome: None,
        hit: None,
        brier: None,
    };
    store.insert_prediction(&p).await.unwrap();
    let purl = format!("{base}/api/predictions?chain=base&limit=5");
    let sealed = wait_for_body(&purl, |b| b.contains("0xc0ffee")).await;
    assert_eq!(sealed, api::predictions_body(&store, &["base".to_string()], 5, false).await.unwrap());
    assert!(!std::str::from_utf8(&sealed).unwrap().contains("6100"), "the value is sealed until revealed");
    let reveal = Reveal { tx: "0xr1", outcome: Outcome::Up, hit: Some(true), brier: Some(1521) };
    store.set_revealed("base", 1, 3, "0xabc", &reveal).await.unwrap();
    let revealed = wait_for_body(&purl, |b| b.contains("\"revealed\":true")).await;
    assert!(std::str::from_utf8(&revealed).unwrap().contains("6100"));
    assert_eq!(revealed, api::predictions_body(&store, &["base".to_string()], 5, false).await.unwrap());

    // Markets: a market written shows in the next body.
    let murl = format!("{base}/api/markets");
    let (_, empty) = get(&murl).await;
    assert_eq!(empty, api::markets_body(&state, false).await.unwrap());
    store
        .upsert_market(&MarketRow {
            chain: "base".into(),
            market_id: 1,
            contract: "0xmarket".into(),
            feed: "0xfeed".into(),
            sequencer: None,
            token: "0x0".into(),
            pair: Some("BTC/USD".into()),
            genesis: 1,
            interval_s: 60,
            settle_window_s: 720,
            max_price_age_s: 60,
            feed_decimals: 8,
        })
        .await
        .unwrap();
    let m = wait_for_body(&murl, |b| b.contains("0xmarket")).await;
    assert_eq!(m, api::markets_body(&state, false).await.unwrap());
}

fn kronos() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kronos"));
    c.current_dir(kronos_testkit::repo_root()).env("RUST_LOG", "warn");
    c
}

/// Runs `kronos args…` to its end (a generous deadline), returning its output; fails with the output if it failed.
async fn run_kronos(args: &[&str], deadline: Duration) -> String {
    let mut c = tokio::process::Command::from(kronos());
    c.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(deadline, c.output()).await.expect("the bench finished in time").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kronos {} failed:\n{text}", args.join(" "));
    text
}

/// The number in the column `col` (0-based, whitespace-separated) of the first line that starts with `prefix`.
fn column(text: &str, prefix: &str, col: usize) -> u64 {
    let line =
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no '{prefix}':\n{text}"));
    line.split_whitespace().nth(col).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("column {col} of {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_quick_loads_the_real_keeper_and_counts() {
    let text = run_kronos(&["bench", "api", "--quick", "--chains", "base"], Duration::from_secs(600)).await;
    // Every endpoint answered in the closed loop, at each connection count (rows: endpoint, conns, requests, errors).
    for e in ["/api/markets", "/api/rounds?limit=50", "/api/predictions?limit=50", "/health", "/metrics"] {
        assert!(column(&text, e, 2) > 0, "no answer from {e}:\n{text}");
        assert_eq!(column(&text, e, 3), 0, "errors from {e}:\n{text}");
    }
    // The open loop at 200/s answered (rate, answered, errors).
    assert!(column(&text, "200 ", 1) > 0, "{text}");
    assert!(text.contains("requests answered in all"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_ws_quick_holds_subscribers_and_measures_delivery() {
    // The server on two cores (where there are two): its hub fans out over two shards.
    let text = run_kronos(
        &["bench", "ws", "--quick", "--subscribers", "40", "--server-core", "0-1", "--client-core", "1"],
        Duration::from_secs(300),
    )
    .await;
    assert!(text.contains("connections: 40 held, 0 failed"), "{text}");
    let line = text.lines().find(|l| l.starts_with("delivery at")).unwrap_or_else(|| panic!("{text}"));
    let received: u64 = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(received > 0, "{line}");
    assert!(text.contains("KiB per connection"), "{text}");
    // The server's own fan-out time is read from its /metrics.
    let fanout =
        text.lines().map(str::trim).find(|l| l.starts_with("server fan-out")).unwrap_or_else(|| panic!("{text}"));
    assert!(!fanout.contains("none recorded"), "{fanout}");
    assert!(text.contains("slow readers:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_bench_runs_under_api_load_and_prints_both() {
    let text =
        run_kronos(&["bench", "--rounds", "3", "--chains", "base", "--api-load"], Duration::from_secs(600)).await;
    let settle =
        text.lines().find(|l| l.contains("settlement delay after lock/close time")).unwrap_or_else(|| panic!("{text}"));
    assert!(!settle.contains("(0 checkpoints)"), "the keeper's checkpoints are read from its store: {settle}");
    let line = text.lines().find(|l| l.contains("API meanwhile")).unwrap_or_else(|| panic!("{text}"));
    let answered: u64 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(answered > 0, "{line}");
}
