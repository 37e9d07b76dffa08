//! The demo's copy-trader path (issue 14, item 12): the local exchange with its simulated lead trading on the real
//! replayed BTC candles, and a paper copy-trader following it with no keys in the environment — the lead's fills are
//! mirrored, every mirrored position gets its stop, and the summary section reports measured figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kronos_common::Bus;
use kronos_testkit::copytrade::{mirror_delays, CopyDemo};
use kronos_testkit::exchange::candle_points;
use tokio_util::sync::CancellationToken;

/// Polls `check` until it holds, failing with `what` after a generous deadline (a busy 2-core machine).
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paper_copy_trader_mirrors_the_simulated_lead_without_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candles = kronos_forecast::load_csv(root.join("data/btcusd-1h.csv")).unwrap();
    let base = kronos_testkit::net::candle_base(0);
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::new(4096);
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // No key in the environment: the demo's lead variables are unset, so paper mode on network = "local" uses the
    // local exchange's published lead keys.
    assert!(std::env::var("KRONOS_DEMO_LEAD_API_KEY").is_err());
    let demo = Arc::new(
        CopyDemo::start(&bus, &dir.path().join("ct.db"), candles[base - 1].close, &cancel, &mut tasks)
            .await
            .expect("the exchange and the paper copy-trader start without keys"),
    );
    // Replay candles as the demo does until the lead has traded three times, waiting after each lead fill for the
    // follower's mirror and its stop.
    let mut i = base;
    while demo.tally.lock().lead_fills.len() < 3 {
        assert!(i < base + 200, "the simulated lead did not trade three times in 200 candles");
        for (s, v) in candle_points(&candles[i]).into_iter().enumerate() {
            demo.price(v, s == 3);
        }
        i += 1;
        let (fills, stops) = {
            let t = demo.tally.lock();
            (t.lead_fills.len(), t.stops_placed)
        };
        if fills > 0 {
            wait_for(&format!("the follower to mirror lead fill {fills} and place its stop"), || {
                let t = demo.tally.lock();
                mirror_delays(&t.lead_fills, &t.follower_fills).len() == fills && t.stops_placed > stops
            })
            .await;
        }
        assert!(demo.tally.lock().problems.is_empty(), "{:?}", demo.tally.lock().problems);
    }
    let t = demo.tally.lock().clone();
    let delays = mirror_delays(&t.lead_fills, &t.follower_fills);
    assert_eq!(delays.len(), 3, "every lead fill mirrored: {t:?}");
    assert!(delays.iter().all(|d| *d >= 0 && *d < 60_000), "delays measured from the lead's fill: {delays:?}");
    // The follower's position is the lead's × 0.1, protected by a stop.
    let lead = demo.exchange.lead_position();
    wait_for("the follower's status to show lead x 0.1 with its stop", || {
        let s = demo.handles.status.lock();
        s.positions.iter().any(|p| {
            p.symbol == "BTCUSDT"
                && p.qty.parse::<kronos_common::Decimal>().ok()
                    == lead.checked_mul(&"0.1".parse().unwrap(), 3, kronos_common::Rounding::HalfUp).ok()
                && p.stop_price.is_some()
        })
    })
    .await;
    let section = demo.section().await;
    assert!(section.contains("lead fills 3, mirrored 3; mirror delay p50 "), "{section}");
    assert!(section.contains(&format!("stops placed {}", t.stops_placed)), "{section}");
    assert!(section.contains(" USDT = realised "), "{section}");
    assert!(!section.contains("could not be read"), "{section}");
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

/// `kronos demo --telegram-url … --telegram-chat …`: the bot joins, alerts the copy-trader's fills from the demo's
/// bus and answers commands about the copy-trader it runs beside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telegram_bot_joins_the_demo_copy_trader() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candles = kronos_forecast::load_csv(root.join("data/btcusd-1h.csv")).unwrap();
    let base = kronos_testkit::net::candle_base(0);
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::new(4096);
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let tg = kronos_testkit::telegram::MockTelegram::start().await;
    let demo = Arc::new(
        CopyDemo::start(&bus, &dir.path().join("ct.db"), candles[base - 1].close, &cancel, &mut tasks).await.unwrap(),
    );
    let (chat, user) = (4242i64, 4242i64);
    let state = dir.path().join("tg.json");
    // Without the token the error names the variable.
    std::env::remove_var(kronos_testkit::copytrade::TELEGRAM_TOKEN_ENV);
    let start = kronos_testkit::copytrade::start_telegram;
    let url = tg.url();
    let bot = kronos_testkit::copytrade::DemoBot {
        url: &url,
        chats: &[chat],
        keeper_api: "http://127.0.0.1:9",
        state_file: &state,
    };
    let e = start(&bot, &demo, &bus, &cancel, &mut tasks).await.unwrap_err();
    let e = e.to_string();
    assert!(e.contains("KRONOS_TELEGRAM_TOKEN"), "{e}");
    std::env::set_var(kronos_testkit::copytrade::TELEGRAM_TOKEN_ENV, kronos_testkit::telegram::TOKEN);
    let subscribers = bus.subscribers();
    let joined =
        start(&bot, &demo, &bus, &cancel, &mut tasks).await.expect("the bot joins with a token and the Bot API URL");
    assert!(joined.contains(&tg.url()), "{joined}");
    wait_for("the bot to subscribe to the demo's bus", || bus.subscribers() > subscribers).await;
    // The lead trades; the follower's fill reaches the chat as an alert.
    let mut i = base;
    while demo.tally.lock().follower_fills.is_empty() {
        assert!(i < base + 200, "the simulated lead did not trade in 200 candles");
        for (s, v) in candle_points(&candles[i]).into_iter().enumerate() {
            demo.price(v, s == 3);
        }
        i += 1;
        if !demo.tally.lock().lead_fills.is_empty() {
            wait_for("the follower's mirrored fill", || !demo.tally.lock().follower_fills.is_empty()).await;
        }
    }
    wait_for("a fill alert about BTCUSDT in the chat", || tg.sent_to(chat).iter().any(|m| m.text.contains("BTCUSDT")))
        .await;
    let mid = tg.say(chat, user, "/positions");
    wait_for("the answer to /positions", || tg.sent_to(chat).iter().any(|m| m.reply_to == Some(mid))).await;
    let reply = tg.sent_to(chat).into_iter().find(|m| m.reply_to == Some(mid)).unwrap();
    assert!(reply.text.contains("BTCUSDT"), "/positions shows the mirrored position: {}", reply.text);
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

/// `kronos exchange serve` as a user runs it, and the example configuration pointed at it: the program prints its URL
/// and the published lead keys, its lead trades on the replayed candles, and a paper copy-trader built from
/// `config/copytrade.example.toml` (network = "local", no key in the environment) mirrors the lead with a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kronos_exchange_serve_is_followed_by_the_example_configuration() {
    use tokio::io::AsyncBufReadExt;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kronos"))
        .args(["exchange", "serve", "--listen", "127.0.0.1:0", "--candle-seconds", "0.4"])
        .current_dir(root.join("keeper"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let out = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    {
        let out = out.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                out.lock().push(l);
            }
        });
    }
    let find = |needle: &str| out.lock().iter().find(|l| l.contains(needle)).cloned();
    wait_for("the exchange to print its REST URL", || find("REST ").is_some()).await;
    let rest = find("REST ").unwrap().split_whitespace().nth(1).unwrap().trim_end_matches("/fapi/…").to_string();
    assert!(rest.starts_with("http://127.0.0.1:"), "{rest}");
    let keys = find("lead account").unwrap();
    assert!(keys.contains("kronos-local-lead") && keys.contains("published"), "{keys}");
    wait_for("the simulated lead's first trade", || find("lead BUY").or_else(|| find("lead SELL")).is_some()).await;

    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(root.join("config/copytrade.example.toml")).unwrap();
    let ws = rest.replace("http://", "ws://");
    let text = example
        .replace("network = \"local\"", &format!("network = \"local\"\nrest_url = \"{rest}\"\nws_url = \"{ws}\""))
        .replace("sqlite:data/copytrade-local.sqlite", &format!("sqlite://{}", dir.path().join("ct.db").display()))
        .replace("127.0.0.1:9110", "127.0.0.1:0");
    assert!(std::env::var("KRONOS_LEAD_API_KEY").is_err(), "the test needs the lead's variables unset");
    let cfg = kronos_copytrade::Config::parse("example", &text).unwrap();
    assert!(cfg.local);
    let (engine, handles) =
        kronos_copytrade::run::build(&cfg, false, Bus::new(1024), kronos_copytrade::Tuning::default()).await.unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(engine.run(cancel.clone().cancelled_owned()));
    wait_for("the paper follower to mirror the lead with a stop", || {
        let s = handles.status.lock();
        s.positions.iter().any(|p| p.symbol == "BTCUSDT" && p.stop_price.is_some())
    })
    .await;
    cancel.cancel();
    run.await.unwrap().unwrap();
}

/// An exchange that cannot be reached at start-up (issue 14, item 12: `testnet` without internet retried every 5 s
/// with "error sending request" and no host): the status names the exchange and the host, and the retries back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_exchange_is_named_and_retried_with_back_off() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("config/copytrade.example.toml")).unwrap();
    let text = example
        .replace(
            "network = \"local\"",
            &format!("network = \"local\"\nrest_url = \"http://127.0.0.1:{port}\"\nws_url = \"ws://127.0.0.1:{port}\""),
        )
        .replace("sqlite:data/copytrade-local.sqlite", &format!("sqlite://{}", dir.path().join("ct.db").display()))
        .replace("127.0.0.1:9110", "127.0.0.1:0");
    let cfg = kronos_copytrade::Config::parse("example", &text).unwrap();
    let (engine, handles) =
        kronos_copytrade::run::build(&cfg, false, Bus::new(64), kronos_copytrade::Tuning::default()).await.unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(engine.run(cancel.clone().cancelled_owned()));
    let detail = || handles.status.lock().detail.clone();
    wait_for("the first failed start", || detail().contains("retrying in 2 s")).await;
    let first = detail();
    assert!(first.contains(&format!("http://127.0.0.1:{port} (local)")), "names the exchange: {first}");
    assert!(first.contains(&format!("could not connect to 127.0.0.1:{port}")), "names the host: {first}");
    wait_for("the second, later retry", || detail().contains("retrying in 4 s")).await;
    assert!(!handles.status.lock().ready);
    cancel.cancel();
    run.await.unwrap().unwrap();
}

/// Issue 12: `kronos copytrade emergency-stop` with the copy-trader's store down (here a file where its folder
/// should be) cannot record the stop: it fails saying what is down, that nothing was stopped, and what to do instead
/// (stop the process, close on the exchange) — before, the database's error alone.
#[test]
fn an_emergency_stop_the_store_cannot_record_says_what_is_down_and_what_to_do() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("config/copytrade.example.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Its folder is a file: the store cannot be opened.
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let gone = dir.path().join("blocker").join("ct.sqlite");
    let text = example
        .replace("store = \"sqlite:data/copytrade-local.sqlite\"", &format!("store = \"sqlite:{}\"", gone.display()));
    assert_ne!(text, example, "the example names its store as expected");
    let file = dir.path().join("copytrade.toml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kronos"))
        .args(["copytrade", "emergency-stop", "--config"])
        .arg(&file)
        .env_remove("KRONOS_COPYTRADE_STORE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for says in [
        "store (its control log) cannot be written",
        "NOT recorded",
        "nothing was stopped",
        "stop the copy-trader's process",
        "close the positions on the exchange directly",
    ] {
        assert!(err.contains(says), "{says:?} missing from: {err}");
    }
}
