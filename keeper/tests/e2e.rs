//! The keeper end to end on real anvil nodes (two chains at once), with faults: a keeper killed with SIGKILL and
//! restarted, a dead RPC endpoint, a base-fee spike, a transaction dropped from the pool, a stale feed, and bad
//! configuration files.

use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::providers::Provider;
use kronos_common::signals::{CancelReason as WireReason, SignalKind};
use kronos_common::Bus;
use kronos_contracts::CancelReason;
use kronos_keeper::engine::{Keeper, Overrides};
use kronos_keeper::store::{RoundState, TxStatus};
use kronos_testkit::harness::{self as common, start, INTERVAL};
use tokio_util::sync::CancellationToken;

/// A refund because the lock or the close price could not be used.
fn price_unusable(r: CancelReason) -> bool {
    matches!(r, CancelReason::LockPriceUnusable | CancelReason::ClosePriceUnusable)
}

async fn wait_for<F: Fn() -> bool>(what: &str, secs: u64, f: F) {
    for _ in 0..secs * 10 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drives_two_chains_publishes_forecasts_and_serves_its_api() {
    let net = start(&["base", "optimism"]).await;
    let mut cfg = net.config(&[], true);
    const TOKEN: &str = "e2e-api-token-0123456789";
    cfg.api_token = Some(kronos_common::Secret::new(TOKEN));
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let keeper =
        Keeper::build(&cfg, net.signer(), bus.clone(), Overrides { candles: Some(net.replay.clone()), no_api: false })
            .await
            .unwrap();
    let addr = keeper.api_addr().unwrap();
    let stats = keeper.stats.clone();
    let store = keeper.store.clone();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    // Bettors on both sides, so that rounds settle (a round with one side only is refunded).
    for (i, c) in net.chains.iter().enumerate() {
        let stats = std::sync::Arc::new(parking_lot::Mutex::new(kronos_testkit::bettors::BetStats::default()));
        tokio::spawn(kronos_testkit::bettors::run(
            c.clone(),
            common::INTERVAL,
            Duration::from_millis(200),
            7 + i as u64,
            stats,
            cancel.clone(),
        ));
    }

    // Let a WebSocket client watch the signals.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?types=round_locked")).await.unwrap();
    // Forecasts are sealed until their reveal: a client without the API token gets reveals only; with it, forecasts.
    let preds = format!("ws://{addr}/ws?types=forecast,prediction_committed,prediction_revealed");
    let (sealed_tx, mut sealed_rx) = tokio::sync::mpsc::channel(1024);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(kronos_common::signal_ws::follow(preds.clone(), None, sealed_tx));
    tokio::spawn(kronos_common::signal_ws::follow(preds, Some(kronos_common::Secret::new(TOKEN)), open_tx));
    net.wait_checkpoint(0, 7, 30).await;
    net.wait_checkpoint(1, 7, 30).await;
    wait_for("7 finished rounds on both chains", 60, || {
        stats.iter().all(|s| {
            let s = s.lock();
            s.settled + s.cancelled >= 5
        })
    })
    .await;

    for i in 0..2 {
        for k in 0..=6 {
            let (at, _) = net.checkpoint(i, k).await;
            assert!(at > 0, "chain {i}: checkpoint {k} was not recorded");
        }
    }
    for s in &stats {
        let s = s.lock();
        assert_eq!(s.missed, 0, "{}: missed checkpoints", s.chain);
        assert!(s.delays.iter().all(|d| *d <= 3), "{}: settlement delays {:?}", s.chain, s.delays);
    }
    // Signals: the bus carried rounds and transactions; the WebSocket got the filtered kind only. Each kind is
    // waited for: a forecast commit needs the forecaster to finish inside the round's commit window, which on these
    // accelerated chains is about a second of wall time, so under load some rounds go without one.
    let mut kinds = std::collections::BTreeSet::new();
    let want = [
        "round_started",
        "round_locked",
        "round_settled",
        "tx_sent",
        "tx_confirmed",
        "price_read",
        "forecast",
        "prediction_committed",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !want.iter().all(|k| kinds.contains(*k)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(sig)) => {
                kinds.insert(sig.kind.name());
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("bus closed: {e}"),
            Err(_) => break,
        }
    }
    for k in want {
        assert!(kinds.contains(k), "no {k} signal; saw {kinds:?}");
    }
    use futures::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.unwrap().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "round_locked");

    // What each WebSocket client got, waiting (up to 120 s) until `until` holds of it.
    async fn seen(
        rx: &mut tokio::sync::mpsc::Receiver<kronos_common::Signal>,
        k: &mut std::collections::BTreeSet<String>,
        until: impl Fn(&std::collections::BTreeSet<String>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !until(k) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(sig)) => {
                    k.insert(sig.kind.name());
                }
                _ => return,
            }
        }
    }
    let (mut sealed, mut open) = (Default::default(), Default::default());
    seen(&mut open_rx, &mut open, |k| k.contains("forecast") && k.contains("prediction_committed")).await;
    assert!(open.contains("forecast") && open.contains("prediction_committed"), "with the token: {open:?}");
    seen(&mut sealed_rx, &mut sealed, |k| k.contains("prediction_revealed")).await;
    assert!(!sealed.contains("forecast") && !sealed.contains("prediction_committed"), "without: {sealed:?}");
    assert!(sealed.contains("prediction_revealed"), "reveals are public: {sealed:?}");

    // The API.
    let http = reqwest::Client::new();
    let h = http.get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let hj: serde_json::Value = h.json().await.unwrap();
    assert_eq!(hj["status"], "ok");
    assert!(hj["chains"]["base"]["head_block"].as_u64().unwrap() > 0);
    let m = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("kronos_checkpoints_recorded_total{chain=\"base\",market=\"1\"}"), "{m}");
    assert!(m.contains("kronos_settlement_delay_blocks_bucket"));
    let rounds: serde_json::Value = http
        .get(format!("http://{addr}/api/rounds?chain=optimism&limit=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rounds.as_array().unwrap().len(), 3);
    let markets: serde_json::Value =
        http.get(format!("http://{addr}/api/markets")).send().await.unwrap().json().await.unwrap();
    assert_eq!(markets["live"].as_array().unwrap().len(), 2);
    // The pools shown are the betting round's, and name it (they were the just-locked round's before).
    for m in markets["live"].as_array().unwrap() {
        assert_eq!(m["pool_epoch"], m["betting_epoch"], "pools of another round: {m}");
    }
    assert!(markets["live"].as_array().unwrap().iter().all(|m| m["last_p_up"].is_null()), "sealed without the token");
    let markets: serde_json::Value =
        http.get(format!("http://{addr}/api/markets")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(markets["live"].as_array().unwrap().iter().any(|m| m["last_p_up"].is_number()), "{markets}");
    let m = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("Latest revealed P(up)"));

    // Forecasts were committed before lock and revealed after the outcome; the registry scored them.
    wait_for("revealed predictions", 60, || {
        futures::executor::block_on(store.track_records())
            .map(|r| r.len() == 2 && r.iter().all(|t| t.hits + t.misses + t.voided > 0))
            .unwrap_or(false)
    })
    .await;
    let preds: serde_json::Value =
        http.get(format!("http://{addr}/api/predictions?chain=base")).send().await.unwrap().json().await.unwrap();
    let list = preds["predictions"].as_array().unwrap();
    assert!(list.iter().any(|p| p["revealed"] == true && p["p_up_bps"].is_number()));
    assert!(
        list.iter().filter(|p| p["revealed"] == false).all(|p| p["p_up_bps"].is_null()),
        "an unrevealed forecast leaked: {preds}"
    );

    // The Telegram bot reads the keeper through this API, and alerts from its signal stream.
    let tg = kronos_testkit::telegram::MockTelegram::start().await;
    std::env::set_var("KT_E2E_TELEGRAM_TOKEN", kronos_testkit::telegram::TOKEN);
    std::env::set_var("KT_E2E_KEEPER_TOKEN", TOKEN);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tg_cfg = kronos_telegram::Config::parse(
        "t.toml",
        &format!(
            "[telegram]\ntoken_env = \"KT_E2E_TELEGRAM_TOKEN\"\napi_url = \"{}\"\npoll_timeout_s = 1\nlisten = \"127.0.0.1:{port}\"\n\
             keeper_api = \"http://{addr}\"\nkeeper_token_env = \"KT_E2E_KEEPER_TOKEN\"\nsignals = [\"ws://{addr}/ws\"]\nstate_file = \"{}/tg.json\"\n\
             [telegram.allow]\ncontrol = [7]\n[telegram.alerts]\nchats = [7]\nburst = 50\n\
             categories = {{ prediction = \"off\", keeper_failure = \"off\", keeper_recovery = \"off\", risk = \"off\" }}\n",
            tg.url(),
            net.dir.path().display()
        ),
    )
    .unwrap();
    let bot = kronos_telegram::TelegramBot::new(
        tg_cfg,
        kronos_telegram::Backend::new(Some(format!("http://{addr}")), None, None),
    )
    .unwrap();
    let (bot_stop, bot_rx) = tokio::sync::oneshot::channel::<()>();
    let bot_task = tokio::spawn(bot.run(kronos_telegram::Signals::None, async {
        let _ = bot_rx.await;
    }));
    let ask = |text: &'static str| {
        let tg = tg.clone();
        async move {
            let mid = tg.say(7, 7, text);
            tg.wait_reply(7, mid).await.text
        }
    };
    let mk = ask("/markets").await;
    assert!(mk.contains("base") && mk.contains("optimism") && mk.contains("BTC/USD"), "{mk}");
    let pr = ask("/predict").await;
    assert!(pr.contains("P(up)") && pr.contains("track record"), "{pr}");
    let st = ask("/status").await;
    assert!(st.contains("ok — ") && st.contains("base ✓"), "{st}");
    // Settlement alerts arrive from the keeper's signal stream.
    wait_for("a settlement or refund alert", 60, || {
        tg.sent_to(7).iter().any(|m| m.text.starts_with('✅') || m.text.starts_with('↩'))
    })
    .await;
    let _ = bot_stop.send(());
    bot_task.await.unwrap().unwrap();

    cancel.cancel();
    run.await.unwrap().unwrap();
    // Every checkpoint action has exactly one confirmed transaction.
    for c in ["base", "optimism"] {
        let txs = store.all_txs(c).await.unwrap();
        let mut per = std::collections::BTreeMap::new();
        for t in txs.iter().filter(|t| t.status == TxStatus::Confirmed) {
            *per.entry(t.action.clone()).or_insert(0) += 1;
        }
        assert!(per.values().all(|n| *n == 1), "{c}: duplicate confirmed actions {per:?}");
    }
}

/// A bare TCP forwarder that can be switched off (an RPC endpoint that dies).
async fn proxy(to: String) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let target = to.trim_start_matches("http://").trim_end_matches('/').to_string();
    let h = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut a, _)) = l.accept().await else { break };
            let t = target.clone();
            conns.spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect(t).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
    (url, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_a_dying_rpc_a_fee_spike_and_a_dropped_transaction() {
    let net = start(&["arbitrum", "bnb"]).await;
    let (p0, h0) = proxy(net.chains[0].url.clone()).await;
    // Chain 0: a proxy that will die, then the node. Chain 1: a dead endpoint first.
    let cfg = net.config(&[vec![p0], vec!["http://127.0.0.1:9".into()]], false);
    let keeper = Keeper::build(&cfg, net.signer(), Bus::new(4096), Overrides { no_api: true, ..Default::default() })
        .await
        .unwrap();
    let chains = keeper.chains.clone();
    let stats = keeper.stats.clone();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    net.wait_checkpoint(0, 3, 30).await;
    assert!(chains[1].transport.failovers() >= 1, "the dead endpoint was not skipped");

    // The proxy dies: chain 0 fails over to the node.
    h0.abort();
    let before = net.now(0).await;
    let k_before = (before - net.chains[0].genesis()) / INTERVAL;
    net.wait_checkpoint(0, k_before + 3, 30).await;
    assert!(chains[0].transport.failovers() >= 1, "no failover after the proxy died");

    // Base-fee spike on chain 0: the next blocks get three times more expensive each, so a transaction priced
    // for one block is stuck in the next until the keeper raises its fees.
    let p = net.chains[0].wallet(0);
    let mut base: u128 = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .base_fee_per_gas
        .unwrap() as u128;
    base = base.max(1_000_000_000);
    for _ in 0..12 {
        base *= 3;
        p.raw_request::<_, serde_json::Value>("anvil_setNextBlockBaseFeePerGas".into(), (format!("0x{base:x}"),))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let k_now = (net.now(0).await - net.chains[0].genesis()) / INTERVAL;
    net.wait_checkpoint(0, k_now + 3, 30).await;
    assert!(chains[0].tx.counters.bumped.load(Ordering::Relaxed) >= 1, "no fee bump during the spike");

    // A dropped transaction on chain 1: stop mining, drop the keeper's pending execute, resume.
    let q = net.chains[1].wallet(0);
    q.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (0,)).await.unwrap();
    q.raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (false,)).await.unwrap();
    // With the chain frozen, the checkpoint to drop is the first one not recorded yet: the current epoch's when the
    // keeper has not executed it (under load it may still be on its way, or pending in the pool), else the next one.
    // Targeting the next one while the current one is unexecuted would leave the keeper waiting on the current one's
    // transaction, which no block mines.
    let t = q.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap().header.timestamp;
    let k_cur = (t - net.chains[1].genesis()) / INTERVAL;
    assert!(net.checkpoint(1, k_cur - 1).await.0 > 0, "checkpoint {} not recorded before the drop", k_cur - 1);
    let k_next = if net.checkpoint(1, k_cur).await.0 > 0 { k_cur + 1 } else { k_cur };
    // Advance time past that checkpoint and its execute delay with one mined block so the keeper sends. When the
    // chain is already past it, no block is mined: one would mine the keeper's execute if it is already in the pool.
    let delay = kronos_testkit::deploy::execute_delay(INTERVAL as u32) as u64;
    let due = net.chains[1].genesis() + k_next * INTERVAL + delay + 1;
    if due > t {
        q.raw_request::<_, serde_json::Value>("evm_setNextBlockTimestamp".into(), (due,)).await.unwrap();
        q.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
    }
    let store = kronos_keeper::store::Store::connect(&net.store_url()).await.unwrap();
    let action = format!("execute:1:{k_next}");
    let mut dropped = false;
    // A failure bound only: the loop ends as soon as the keeper's transaction is in the pool.
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(row) =
            store.txs_for_action("bnb", &action).await.unwrap().into_iter().find(|r| r.status == TxStatus::Pending)
        {
            q.raw_request::<_, serde_json::Value>("anvil_dropTransaction".into(), (row.tx_hash,)).await.unwrap();
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the keeper did not send {action}");
    // Mining stays off until the keeper has noticed the drop and broadcast again (or a minute has passed: the
    // assertions below then say what is missing).
    for _ in 0..600 {
        if chains[1].tx.counters.rebroadcast.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    q.raw_request::<_, serde_json::Value>("evm_setIntervalMining".into(), (1,)).await.unwrap();
    for _ in 0..300 {
        if net.checkpoint(1, k_next).await.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(net.checkpoint(1, k_next).await.0 > 0, "checkpoint {k_next} never recorded after the drop");
    assert!(
        chains[1].tx.counters.rebroadcast.load(Ordering::Relaxed) >= 1,
        "the dropped transaction was not broadcast again"
    );

    cancel.cancel();
    run.await.unwrap().unwrap();
    for s in &stats {
        assert_eq!(s.lock().missed, 0, "{} missed a checkpoint", s.lock().chain);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_feed_cancels_rounds_and_is_reported() {
    let net = start(&["ethereum", "avalanche"]).await;
    let cfg = net.config(&[], false);
    let bus = Bus::new(8192);
    let mut rx = bus.subscribe();
    let keeper =
        Keeper::build(&cfg, net.signer(), bus, Overrides { no_api: true, ..Default::default() }).await.unwrap();
    let store = keeper.store.clone();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    net.wait_checkpoint(0, 2, 30).await;
    // Ethereum's feed stops updating: after max_price_age (one interval) its checkpoints are stale.
    net.replay_cancel[0].cancel();
    let k0 = (net.now(0).await - net.chains[0].genesis()) / INTERVAL;
    net.wait_checkpoint(0, k0 + 5, 30).await;
    let mut stale = 0;
    for k in k0 + 2..=k0 + 4 {
        let (at, status) = net.checkpoint(0, k).await;
        assert!(at > 0, "checkpoint {k} not recorded");
        if status == 2 {
            stale += 1;
        }
    }
    assert!(stale >= 2, "expected stale checkpoints after the feed stopped");
    let mut cancelled = Vec::new();
    while let Ok(s) = rx.try_recv() {
        if let SignalKind::RoundCancelled { chain, reason, .. } = &s.kind {
            if chain == "ethereum" {
                cancelled.push(*reason);
            }
        }
    }
    assert!(
        cancelled.iter().any(|r| matches!(r, WireReason::LockPriceUnusable | WireReason::ClosePriceUnusable)),
        "{cancelled:?}"
    );
    let rounds = store.rounds(Some("ethereum"), None, 20).await.unwrap();
    assert!(
        rounds.iter().any(|r| r.state == RoundState::Cancelled && r.reason.is_some_and(price_unusable)),
        "{rounds:?}"
    );
    // Avalanche, whose feed kept updating, kept finishing rounds on usable prices (no bettors here, so one-sided
    // refunds). Not "never unusable": on a loaded 2-core machine the replay that feeds its mock aggregator can
    // itself fall one interval behind, which is a stale price too.
    let other = store.rounds(Some("avalanche"), None, 20).await.unwrap();
    let unusable = other.iter().filter(|r| r.reason.is_some_and(price_unusable)).count();
    let usable =
        other.iter().filter(|r| matches!(r.state, RoundState::Settled | RoundState::Cancelled)).count() - unusable;
    assert!(usable >= 2 && usable > unusable, "{other:?}");
    cancel.cancel();
    run.await.unwrap().unwrap();
}
