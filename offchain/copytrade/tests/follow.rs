//! Copy-trading scenarios against the local exchange: mirroring with ratio and caps, stops, faults, protections,
//! restarts, paper mode, AI signals, bad input.

mod common;

use std::time::Duration;

use common::*;
use kronos_binance::types::Side;
use kronos_binance_mock::Fault;
use kronos_common::signals::LeadAction;
use kronos_common::SignalKind;
use kronos_copytrade::{Config, ControlCommand};

fn stop(reason: &str) -> ControlCommand {
    ControlCommand::EmergencyStop { reason: reason.into() }
}

fn ratio(r: &str) -> ControlCommand {
    ControlCommand::SetRatio { ratio: Some(d(r)), set_by: "test".into() }
}

#[tokio::test]
async fn mirrors_open_add_reduce_close_and_flip_with_ratio_stops_and_allow_list() {
    let w = World::new().await;
    let mut signals = w.bus.subscribe();
    let cfg = w.default_config("live");
    let r = w.start(&cfg).await;

    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // open
    w.expect_follower("BTCUSDT", "0.05").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // increase
    w.expect_follower("BTCUSDT", "0.1").await;
    w.lead_trade(Side::Sell, "0.05", "BTCUSDT").await; // reduce
    w.expect_follower("BTCUSDT", "0.075").await;
    // Every position has exactly one stop, 2% under the entry (65000 → 63700), closing the whole position.
    wait_for("one stop", || w.follower_stops().len() == 1).await;
    let s = &w.follower_stops()[0];
    assert_eq!((s.side, s.trigger_price, s.close_position), (Side::Sell, d("63700"), true));
    w.lead_trade(Side::Sell, "0.35", "BTCUSDT").await; // flip to -0.2
    w.expect_follower("BTCUSDT", "-0.1").await;
    wait_for("the short's stop", || {
        w.follower_stops().iter().any(|s| s.side == Side::Buy && s.trigger_price == d("66300"))
    })
    .await;
    wait_for("old stop gone", || w.follower_stops().len() == 1).await;
    w.lead_trade(Side::Buy, "0.2", "BTCUSDT").await; // close
    w.expect_follower("BTCUSDT", "0").await;
    wait_for("no stop left", || w.follower_stops().is_empty()).await;
    // Not on the allow-list: ignored.
    w.lead_trade(Side::Buy, "1", "ETHUSDT").await;
    r.settle().await;
    assert!(w.follower_qty("ETHUSDT").is_zero());
    w.assert_no_duplicates();

    // The lead's actions were published in order.
    let mut actions = Vec::new();
    while let Ok(sig) = signals.try_recv() {
        if let SignalKind::LeadChanged { action, symbol, .. } = &sig.kind {
            if symbol == "BTCUSDT" {
                actions.push(*action);
            }
        }
    }
    assert_eq!(
        actions,
        vec![LeadAction::Open, LeadAction::Increase, LeadAction::Reduce, LeadAction::Flip, LeadAction::Close]
    );
    // Orders, fills and positions are in the store.
    let stats = kronos_copytrade::report::stats(&r.handles.store, 0).await.unwrap();
    assert_eq!(stats.fills, 6, "{stats:?}"); // open, add, reduce, close+open (flip), close
    assert!(stats.fees > kronos_common::Decimal::ZERO);
    r.stop().await;
}

#[tokio::test]
async fn caps_bound_the_follower() {
    let w = World::new().await;
    let sizing = SIZING.replace("max_notional_per_symbol = \"10000\"", "max_notional_per_symbol = \"3250\"");
    let cfg = Config::parse("t.toml", &w.config_text("live", &sizing, PROTECTION, LEAD_STREAM, "")).unwrap();
    let r = w.start(&cfg).await;
    // 0.5 × 0.2 = 0.1 BTC = 6500 USDT > 3250 → capped at 0.05.
    w.lead_trade(Side::Buy, "0.2", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // The lead reduces by 60% (0.2 → 0.08): the capped follower reduces by 60% too (0.05 → 0.02), not to
    // 0.5 × 0.08 = 0.04, which would keep most of a position the lead mostly left.
    w.lead_trade(Side::Sell, "0.12", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.02").await;
    // And holds at most that until the lead closes or flips: the lead adding back is not followed past it.
    w.lead_trade(Side::Buy, "0.02", "BTCUSDT").await; // lead 0.1
    wait_for("the lead's increase seen", || {
        r.handles.status.lock().lead.iter().any(|(s, q, _)| s == "BTCUSDT" && d(q) == d("0.1"))
    })
    .await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.02"));
    r.stop().await;
}

#[tokio::test]
async fn polling_alone_follows_and_a_dropped_stream_is_reconciled() {
    let w = World::new().await;
    let poll_only = Config::parse(
        "t.toml",
        &w.config_text("live", SIZING, PROTECTION, "poll_interval = \"500ms\"\nuse_stream = false", ""),
    )
    .unwrap();
    let r = w.start(&poll_only).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;

    let w = World::new().await;
    // Stream on, polling slow: the stream drives, and after a drop the reconnect reconciles what was missed.
    let cfg = Config::parse(
        "t.toml",
        &w.config_text("live", SIZING, PROTECTION, "poll_interval = \"60s\"\nuse_stream = true", ""),
    )
    .unwrap();
    let r = w.start(&cfg).await;
    wait_for("stream up", || r.handles.status.lock().lead_stream_connected).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // Drop the stream and trade before it comes back (the events of this trade are lost on the wire).
    w.ex.drop_streams();
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    w.ex.expire_listen_keys();
    w.lead_trade(Side::Sell, "0.2", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0").await;
    w.assert_no_duplicates();
    r.stop().await;
}

fn unknown(status: u16, code: i64, executed: bool) -> Fault {
    let msg =
        if code == -1007 { kronos_binance_mock::BACKEND_TIMEOUT_MSG } else { kronos_binance_mock::UNEXPECTED_RESP_MSG };
    Fault::Answer { status, code, msg: msg.into(), executed }
}

#[tokio::test]
async fn no_duplicate_order_under_any_fault() {
    let (w, _, r) = World::live().await;
    let faults = [
        Fault::Unknown503 { executed: true },
        Fault::Unknown503 { executed: false },
        Fault::Timeout { executed: true, delay: Duration::from_millis(1500) },
        Fault::Timeout { executed: false, delay: Duration::from_millis(1500) },
        Fault::Timestamp,
        Fault::RateLimit { retry_after_s: 1 },
        // "Execution status unknown" answers (HTTP 408 / -1007, -1006): resolved by query, not taken as refusals.
        unknown(408, -1007, true),
        unknown(408, -1007, false),
        unknown(400, -1006, true),
        unknown(400, -1006, false),
    ];
    let mut lead = d("0");
    for (i, f) in faults.into_iter().enumerate() {
        w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", f.clone(), 1);
        // Up 0.1, down 0.08: the lead climbs by 0.02 a pair and the follower stays under its caps.
        let (side, q) = if i % 2 == 0 { (Side::Buy, "0.1") } else { (Side::Sell, "0.08") };
        w.lead_trade(side, q, "BTCUSDT").await;
        lead = if side == Side::Buy { lead.checked_add(&d(q)).unwrap() } else { lead.checked_sub(&d(q)).unwrap() };
        let want = lead.checked_mul(&d("0.5"), 8, kronos_common::Rounding::Down).unwrap();
        let t = std::time::Instant::now();
        while w.follower_qty("BTCUSDT") != want && t.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if w.follower_qty("BTCUSDT") != want {
            for e in r.handles.store.events(40).await.unwrap().iter().rev() {
                eprintln!("EVENT {} {} {}", e.kind, e.symbol, e.detail);
            }
            for l in w.ex.order_log() {
                eprintln!("LOG {} {} {} {} {}", l.api_key, l.client_id, l.side, l.quantity, l.executed);
            }
        }
        w.expect_follower("BTCUSDT", &want.to_string()).await;
        w.assert_no_duplicates();
        assert_eq!(w.ex.faults_left(), 0, "{f:?} hit the follower's order");
    }
    // Four of the follower's order requests never executed (503, timeout, 408/-1007 and -1006 without
    // execution). None was sent again under its id (a late fill and the resend would both execute); each was
    // recorded as not placed once its hold passed, and the target was reached with a new order.
    let dropped: Vec<_> = w.ex.order_log().into_iter().filter(|l| l.api_key == FOLLOWER && !l.executed).collect();
    assert_eq!(dropped.len(), 4, "{dropped:?}");
    for l in &dropped {
        assert!(w.ex.account(FOLLOWER).order(&l.client_id).is_none(), "{} was re-sent", l.client_id);
        let store = r.handles.store.clone();
        let id = l.client_id.clone();
        wait_until(&format!("{id} recorded as not placed"), || {
            let (store, id) = (store.clone(), id.clone());
            async move { store.order(&id).await.unwrap().is_some_and(|o| o.status == "not_placed") }
        })
        .await;
    }
    // Stops under faults too.
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/algoOrder", Fault::Unknown503 { executed: true }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_for("one stop after a faulty stop placement", || {
        let s = w.follower_stops();
        s.len() == 1
            && s[0].trigger_price
                == w.ex
                    .account(FOLLOWER)
                    .position("BTCUSDT", "BOTH")
                    .entry_price
                    .checked_mul(&d("0.98"), 1, kronos_common::Rounding::Floor)
                    .unwrap()
    })
    .await;
    w.assert_no_duplicates();
    // Every follower order the exchange saw was recorded in the store with its outcome.
    for o in w.ex.account(FOLLOWER).orders() {
        let row = r
            .handles
            .store
            .order(&o.client_order_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} not in the store", o.client_order_id));
        assert_eq!(row.status, "filled", "{row:?}");
    }
    r.stop().await;
}

#[tokio::test]
async fn a_stop_out_waits_for_the_leads_next_close() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_for("stop", || w.follower_stops().len() == 1).await;
    // The mark falls through the follower's stop (63700).
    w.ex.set_mark("BTCUSDT", "63000");
    w.expect_follower("BTCUSDT", "0").await;
    wait_for("stopped_out recorded", || {
        r.handles.status.lock().lead.iter().any(|(s, _, limit)| s == "BTCUSDT" && limit.as_deref() == Some("0"))
    })
    .await;
    // The lead adds: not chased.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    // The lead closes and opens again: followed.
    w.lead_trade(Side::Sell, "0.2", "BTCUSDT").await;
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "-0.05").await;
    let events = r.handles.store.events(50).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "stopped_out"), "{events:?}");
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn the_daily_loss_limit_blocks_entries_not_exits_and_survives_a_restart() {
    let w = World::new().await;
    let protection = PROTECTION
        .replace("daily_loss_limit = \"1000\"", "daily_loss_limit = \"20\"")
        .replace("stop_loss_pct = \"2\"", "stop_loss_pct = \"10\"");
    let cfg = Config::parse("t.toml", &w.config_text("live", SIZING, &protection, LEAD_STREAM, "")).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // 0.05 BTC × -500 = -25 USDT unrealised: past the 20 USDT limit (the 10% stop is far away).
    w.ex.set_mark("BTCUSDT", "64500");
    wait_for("daily halt", || r.handles.status.lock().risk.daily_halt).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // an increase: refused
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    assert!(r.handles.status.lock().entries_blocked.as_deref().unwrap_or("").contains("daily loss"));
    // The lead reduces by 80% (0.2 → 0.04); the follower, held at 0.05, reduces by 80% too: 0.01.
    w.lead_trade(Side::Sell, "0.16", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.01").await;
    r.kill().await;
    // After a crash the limit still holds.
    let r = w.start(&cfg).await;
    assert!(r.handles.status.lock().risk.daily_halt);
    w.lead_trade(Side::Sell, "0.04", "BTCUSDT").await; // lead closes
    w.expect_follower("BTCUSDT", "0").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // a new entry: still refused today
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    r.stop().await;
}

#[tokio::test]
async fn a_drawdown_pauses_entries_for_the_cooldown_then_follows_again() {
    let w = World::new().await;
    let protection = PROTECTION
        .replace("drawdown_pct = \"50\"", "drawdown_pct = \"0.2\"")
        .replace("cooldown = \"1h\"", "cooldown = \"3s\"")
        .replace("stop_loss_pct = \"2\"", "stop_loss_pct = \"10\"");
    let cfg = Config::parse("t.toml", &w.config_text("live", SIZING, &protection, LEAD_STREAM, "")).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.2", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    // -300 × 0.1 = -30 on 10000: a 0.3% drawdown.
    w.ex.set_mark("BTCUSDT", "64700");
    wait_for("cool-down", || r.handles.status.lock().risk.cooldown_until_ms > 0).await;
    w.lead_trade(Side::Sell, "0.4", "BTCUSDT").await; // flip: the close is done, the new short is not
    w.expect_follower("BTCUSDT", "0").await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    // After the cool-down the next lead action is followed (the short the lead holds now is not chased).
    wait_for("cool-down over", || r.handles.status.lock().risk.cooldown_until_ms == 0).await;
    w.lead_trade(Side::Buy, "0.2", "BTCUSDT").await; // lead closes its short
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // and opens long
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
}

#[tokio::test]
async fn emergency_stop_closes_everything_and_persists_until_resume() {
    let w = World::new().await;
    let sizing = SIZING.replace("allow = [\"BTCUSDT\"]", "allow = [\"BTCUSDT\", \"ETHUSDT\"]");
    let cfg = Config::parse("t.toml", &w.config_text("live", &sizing, PROTECTION, LEAD_STREAM, "")).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.lead_trade(Side::Sell, "1", "ETHUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    w.expect_follower("ETHUSDT", "-0.5").await;
    wait_for("two stops", || w.follower_stops().len() == 2).await;
    // Over the HTTP API.
    let (addr, _srv) = kronos_copytrade::run::serve(r.handles.clone(), "127.0.0.1:0").await.unwrap();
    // Without the control token (what a page in a browser could send) or with a wrong one: refused.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/api/emergency-stop");
    assert_eq!(http.post(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.post(&url).bearer_auth("ct-control-token-0123456789x").send().await.unwrap().status(), 401);
    assert_eq!(http.post(format!("http://{addr}/api/resume")).send().await.unwrap().status(), 401);
    assert!(!control_state(&r.handles.store).await.emergency_asked(), "a refused request changed nothing");
    let resp = http.post(&url).bearer_auth(CONTROL_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    w.expect_follower("BTCUSDT", "0").await;
    w.expect_follower("ETHUSDT", "0").await;
    wait_for("stops cancelled", || w.follower_stops().is_empty()).await;
    let health: serde_json::Value = reqwest::get(format!("http://{addr}/health")).await.unwrap().json().await.unwrap();
    assert_eq!(health["emergency"], true);
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("kronos_copytrade_emergency_stop 1"), "{metrics}");
    // The lead keeps trading: nothing happens, also after a restart.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    r.kill().await;
    let r = w.start(&cfg).await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    // Resume from another process (as the CLI and the Telegram bot do): open lead positions are not chased…
    send_from_another_process(&r.handles.store, ControlCommand::Resume).await;
    wait_for("resumed", || !r.handles.status.lock().risk.emergency).await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    // …the next close/open is.
    w.lead_trade(Side::Sell, "0.2", "BTCUSDT").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn a_crash_mid_order_resumes_without_a_duplicate() {
    let (w, cfg, r) = World::live().await;
    // The follower's order executes but its reply is held back; the copy-trader dies while waiting.
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::Timeout { executed: true, delay: Duration::from_secs(5) },
        1,
    );
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.kill().await;
    let pending =
        kronos_copytrade::Store::connect(&cfg.store).await.unwrap().orders_with_status("sending").await.unwrap();
    assert_eq!(pending.len(), 1, "the order was recorded before it was sent");
    // The lead moves while the copy-trader is down.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let r = w.start(&cfg).await;
    w.expect_follower("BTCUSDT", "0.1").await;
    let row = r.handles.store.order(&pending[0].client_id).await.unwrap().unwrap();
    assert_eq!(row.status, "filled", "resolved by query after the restart");
    wait_for("a stop for the position", || w.follower_stops().len() == 1).await;
    w.assert_no_duplicates();
    // Exactly two follower orders: 0.05 then 0.05.
    assert_eq!(w.ex.account(FOLLOWER).orders().iter().filter(|o| !o.client_order_id.starts_with("stop")).count(), 2);
    r.stop().await;
}

#[tokio::test]
async fn positions_held_by_the_lead_at_first_start_are_not_chased() {
    let w = World::new().await;
    w.lead_trade(Side::Buy, "0.3", "BTCUSDT").await;
    let cfg = w.default_config("live");
    let r = w.start(&cfg).await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    w.lead_trade(Side::Sell, "0.6", "BTCUSDT").await; // flip to -0.2: followed
    w.expect_follower("BTCUSDT", "-0.1").await;
    r.stop().await;

    let w = World::new().await;
    w.lead_trade(Side::Buy, "0.3", "BTCUSDT").await;
    let cfg = Config::parse(
        "t.toml",
        &w.config_text("live", SIZING, PROTECTION, "poll_interval = \"1s\"\njoin_existing = true", ""),
    )
    .unwrap();
    let r = w.start(&cfg).await;
    w.expect_follower("BTCUSDT", "0.15").await;
    r.stop().await;
}

#[tokio::test]
async fn exchange_bans_and_malformed_replies_are_reported_not_fatal() {
    let (w, _, r) = World::live().await;
    // A malformed lead poll: reported in the status, following continues on the next poll.
    w.ex.inject_for(
        LEAD,
        "GET",
        "/fapi/v2/positionRisk",
        Fault::Malformed { status: 200, body: "{\"oops\":1}".into() },
        1,
    );
    // Whichever poll meets it (the timer's, or the one after the stream connects), the failure stays in the status.
    wait_for("malformed reported", || {
        let st = r.handles.status.lock();
        st.lead_poll_errors > 0 && st.last_lead_poll_error.as_deref().unwrap_or("").contains("malformed")
    })
    .await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // A ban on the follower's order endpoint: the order is not placed, recorded and reported; nothing is retried
    // blindly while the ban lasts.
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::Ban { retry_after_s: 2 }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_for("ban reported", || r.handles.status.lock().banned_until_ms > 0).await;
    let events = r.handles.store.events(20).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "exchange_unavailable"), "{events:?}");
    // After the ban the target is reached at the next reconcile.
    w.expect_follower("BTCUSDT", "0.1").await;
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn bad_configuration_and_exchange_info_are_clear_errors() {
    let w = World::new().await;
    // Live in the file without --live.
    let cfg = w.default_config("live");
    let e = kronos_copytrade::run::build(&cfg, false, w.bus.clone(), Default::default()).await.err().unwrap();
    assert!(e.to_string().contains("pass --live"), "{e}");
    let paper = w.default_config("paper");
    let e = kronos_copytrade::run::build(&paper, true, w.bus.clone(), Default::default()).await.err().unwrap();
    assert!(e.to_string().contains("mode = \"paper\""), "{e}");
    // Missing keys name the variable.
    let mut missing = cfg.clone();
    missing.api_key_env = "KT_SURELY_UNSET_VARIABLE".into();
    let e = kronos_copytrade::run::build(&missing, true, w.bus.clone(), Default::default()).await.err().unwrap();
    assert!(e.to_string().contains("KT_SURELY_UNSET_VARIABLE is not set"), "{e}");
    // A keeper forecast stream without its API token in the environment.
    let ai = "[copytrade.ai]\nsource = \"ws://127.0.0.1:9/ws\"\ntoken_env = \"KT_SURELY_UNSET_TOKEN\"\n\
              markets = { \"base:1\" = \"BTCUSDT\" }\nmax_notional = \"100\"";
    let ws_ai = Config::parse("t.toml", &w.config_text("paper", SIZING, PROTECTION, "enabled = false", ai)).unwrap();
    let e = kronos_copytrade::run::build(&ws_ai, false, w.bus.clone(), Default::default()).await.err().unwrap();
    assert!(
        e.to_string().contains("copytrade.ai.token_env: environment variable KT_SURELY_UNSET_TOKEN is not set"),
        "{e}"
    );
    // A symbol the exchange does not list.
    let sizing = SIZING.replace("allow = [\"BTCUSDT\"]", "allow = [\"DOGEUSDT\"]");
    let bad = Config::parse("t.toml", &w.config_text("live", &sizing, PROTECTION, LEAD_STREAM, "")).unwrap();
    let (engine, _) = kronos_copytrade::run::build(&bad, true, w.bus.clone(), Default::default()).await.unwrap();
    let e = engine.run(std::future::pending()).await.unwrap_err();
    assert!(e.to_string().contains("DOGEUSDT is not listed by the exchange"), "{e}");
}

#[tokio::test]
async fn paper_mode_fills_at_the_mark_with_fees_runs_stops_and_keeps_its_account_across_restarts() {
    let w = World::new().await;
    let cfg = w.default_config("paper");
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    let status = r.handles.status.clone();
    wait_for("paper position", || status.lock().positions.iter().any(|p| p.symbol == "BTCUSDT" && p.qty == "0.05"))
        .await;
    // Nothing reached the real (here: local) exchange's follower account.
    assert!(w.ex.account(FOLLOWER).orders().is_empty());
    // Fill at the mark with the taker fee: 0.05 × 65000 × 0.0005 = 1.625.
    let fills = store.fills_since(0).await.unwrap();
    assert_eq!((d(&fills[0].price), d(&fills[0].fee), fills[0].paper), (d("65000"), d("1.625"), true));
    wait_for("paper stop", || status.lock().positions.iter().any(|p| p.stop_price.as_deref() == Some("63700"))).await;
    r.kill().await;
    // The paper account survives a restart…
    let r = w.start(&cfg).await;
    let status = r.handles.status.clone();
    assert!(status.lock().positions.iter().any(|p| p.symbol == "BTCUSDT" && p.qty == "0.05"));
    // …and its stop fires on the mark.
    w.ex.set_mark("BTCUSDT", "63600");
    wait_for("paper stop-out", || status.lock().positions.is_empty()).await;
    let fills = r.handles.store.fills_since(0).await.unwrap();
    let last = fills.last().unwrap();
    assert_eq!((last.side.as_str(), d(&last.price), d(&last.realized_pnl)), ("SELL", d("63600"), d("-70")));
    let wallet: kronos_common::Decimal =
        r.handles.store.get_state("paper_wallet").await.unwrap().unwrap().parse().unwrap();
    // 10000 - 1.625 - 70 - 1.59 (0.05 × 63600 × 0.0005)
    assert_eq!(wallet, d("9926.785"));
    r.stop().await;
}

#[tokio::test]
async fn ai_signal_mode_sizes_by_fractional_kelly_and_closes_at_the_horizon() {
    let w = World::new().await;
    let text = w.config_text("paper", SIZING, PROTECTION, "enabled = false", "[copytrade.ai]\nsource = \"bus\"\nmarkets = { \"base:1\" = \"BTCUSDT\" }\nkelly_fraction = \"0.5\"\npayoff = \"1\"\nmin_edge = \"0.02\"\nmax_notional = \"3250\"");
    let cfg = Config::parse("t.toml", &text).unwrap();
    let r = w.start(&cfg).await;
    let status = r.handles.status.clone();
    // p_up 0.55: f* = 0.1; stake = 0.5 × 0.1 × 10000 = 500 at a 2% stop → 25000 notional → capped at 3250 = 0.05 BTC.
    w.bus.publish(
        "forecaster",
        SignalKind::Forecast { chain: "base".into(), market: 1, epoch: 7, p_up: 0.55, horizon_s: 2, model: "t".into() },
    );
    wait_for("AI long", || status.lock().positions.iter().any(|p| p.qty == "0.05")).await;
    // An unmapped market is ignored; a weak edge targets flat.
    w.bus.publish(
        "forecaster",
        SignalKind::Forecast { chain: "base".into(), market: 2, epoch: 7, p_up: 0.9, horizon_s: 60, model: "t".into() },
    );
    // At the horizon the position is closed.
    wait_for("closed at horizon", || status.lock().positions.is_empty()).await;
    // A bearish forecast: short.
    w.bus.publish(
        "forecaster",
        SignalKind::Forecast {
            chain: "base".into(),
            market: 1,
            epoch: 8,
            p_up: 0.40,
            horizon_s: 60,
            model: "t".into(),
        },
    );
    wait_for("AI short", || status.lock().positions.iter().any(|p| p.qty == "-0.05")).await;
    w.bus.publish(
        "forecaster",
        SignalKind::Forecast {
            chain: "base".into(),
            market: 1,
            epoch: 9,
            p_up: 0.505,
            horizon_s: 60,
            model: "t".into(),
        },
    );
    wait_for("flat on a weak edge", || status.lock().positions.is_empty()).await;
    r.stop().await;
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    // The keys are registered as secrets when read; any log line that carries one is scrubbed.
    let w = World::new().await;
    let cfg = w.default_config("live");
    let (_engine, _h) = kronos_copytrade::run::build(&cfg, true, w.bus.clone(), Default::default()).await.unwrap();
    let line = "request failed: X-MBX-APIKEY=follower-key secret=follower-secret lead=lead-secret";
    let red = kronos_common::Redactor::global().redact(line);
    assert!(!red.contains("follower-key") && !red.contains("follower-secret") && !red.contains("lead-secret"), "{red}");
}

#[tokio::test]
async fn the_trading_switch_and_the_ratio_override_work_through_the_store() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // A new ratio resizes at once.
    send_from_another_process(&r.handles.store, ratio("0.8")).await;
    w.expect_follower("BTCUSDT", "0.08").await;
    let carried = kronos_copytrade::control::carried_out(&r.handles.store).await.unwrap();
    assert_eq!(carried.ratio_effective.as_deref(), Some("0.8"));
    // Switched off: nothing is mirrored, positions and stops stay.
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(false)).await;
    wait_for("paused", || !r.handles.status.lock().trading).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.08"));
    assert_eq!(w.follower_stops().len(), 1);
    // Switched on: the increase made meanwhile is not chased; the next change is mirrored.
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(true)).await;
    wait_for("resumed", || r.handles.status.lock().trading).await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.08"));
    // The lead reduces by 75% (0.2 → 0.05); the follower, held at 0.08, reduces by 75% too: 0.02.
    w.lead_trade(Side::Sell, "0.15", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.02").await;
    // Audit finding (c): a bad ratio stored by hand is an error naming its key (on the status, /health and as an
    // event); the ratio in force stays; and it does not keep trading on after /stop.
    store_control_by_hand(&cfg.store, "ratio", "set_ratio", "-3").await;
    wait_for("the bad ratio reported", || {
        r.handles.status.lock().control_errors.iter().any(|e| e.contains("`ratio`") && e.contains("'-3'"))
    })
    .await;
    wait_event("the bad ratio as an event", &r.handles.store, "control_invalid", "`ratio`").await;
    assert_eq!(r.handles.status.lock().ratio, "0.8", "the ratio in force stays");
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.02"), "held at 0.02 until the lead closes or flips");
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(false)).await;
    wait_for("paused despite the bad ratio", || !r.handles.status.lock().trading).await;
    w.lead_trade(Side::Sell, "0.05", "BTCUSDT").await; // the lead closes: not mirrored while off
    w.lead_trade(Side::Buy, "0.3", "BTCUSDT").await; // and opens again: not mirrored either
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.02"), "nothing traded after /stop");
    r.stop().await;
}

#[tokio::test]
async fn status_unknown_answers_are_resolved_by_query_not_taken_as_rejections() {
    let (w, _, r) = World::live().await;
    // The entry executes, but the answer is HTTP 408 / -1007 ("execution status unknown").
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", unknown(408, -1007, true), 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let first = follower_orders(&w)[0].client_order_id.clone();
    let store = r.handles.store.clone();
    wait_until("the entry recorded as filled", || {
        let (store, id) = (store.clone(), first.clone());
        async move { store.order(&id).await.unwrap().is_some_and(|o| o.status == "filled") }
    })
    .await;
    // The engine knows it holds 0.05: the lead's next increase adds 0.05, not 0.1.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    let orders = follower_orders(&w);
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(orders[1].executed_qty, d("0.05"));
    let events = r.handles.store.events(100).await.unwrap();
    assert!(!events.iter().any(|e| e.kind == "order_rejected"), "{events:?}");
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn an_order_that_executes_after_its_recv_window_is_booked_never_doubled() {
    let (w, _, r) = World::live().await;
    // The entry reaches the matching engine 2.5 s late: after its recvWindow (1 s), so queries find nothing until
    // then. A resend under the same id would execute as well (ids are unique only among open orders).
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::LateFill { delay: Duration::from_millis(2500) }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_for("the late order executed", || w.ex.late_pending() == 0 && !follower_orders(&w).is_empty()).await;
    let id = follower_orders(&w)[0].client_order_id.clone();
    let store = r.handles.store.clone();
    wait_until("the late fill booked", || {
        let (store, id) = (store.clone(), id.clone());
        async move { store.order(&id).await.unwrap().is_some_and(|o| o.status == "filled") }
    })
    .await;
    w.assert_no_duplicates();
    assert_eq!(follower_orders(&w).len(), 1, "{:?}", follower_orders(&w));
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    // The engine holds what the exchange holds: a reconcile later, still one order.
    r.settle().await;
    assert_eq!(follower_orders(&w).len(), 1);
    assert!(r.handles.status.lock().positions.iter().any(|p| p.symbol == "BTCUSDT" && d(&p.qty) == d("0.05")));
    r.stop().await;
}

#[tokio::test]
async fn the_stop_moves_when_the_lead_adds_at_a_new_price() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_for("the first stop", || w.follower_stops().iter().any(|s| s.trigger_price == d("63700"))).await;
    // The lead adds at 67000: the follower's entry is now 66000, its stop 2% under: 64680.
    w.ex.set_mark("BTCUSDT", "67000");
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    wait_for("the stop moved to 64680", || {
        let s = w.follower_stops();
        s.len() == 1 && s[0].trigger_price == d("64680") && s[0].side == Side::Sell
    })
    .await;
    r.settle().await;
    let events = r.handles.store.events(100).await.unwrap();
    assert!(!events.iter().any(|e| e.kind == "stop_failed"), "{events:?}");
    assert_eq!(w.follower_stops().len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn an_emergency_stop_keeps_trying_until_every_position_is_closed_and_keeps_their_stops_meanwhile() {
    let w = World::new().await;
    let sizing = SIZING.replace("allow = [\"BTCUSDT\"]", "allow = [\"BTCUSDT\", \"ETHUSDT\"]");
    let cfg = Config::parse("t.toml", &w.config_text("live", &sizing, PROTECTION, LEAD_STREAM, "")).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.lead_trade(Side::Sell, "1", "ETHUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    w.expect_follower("ETHUSDT", "-0.5").await;
    wait_for("two stops", || w.follower_stops().len() == 2).await;
    // In a panic the exchange bans (418) the positions query, and then refuses the first close (-1001).
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v2/positionRisk", Fault::Ban { retry_after_s: 2 }, 1);
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::Answer {
            status: 400,
            code: -1001,
            msg: "Internal error; unable to process your request. Please try again.".into(),
            executed: false,
        },
        1,
    );
    r.handles.control.send(&stop("test"), "test").await.unwrap();
    let store = r.handles.store.clone();
    wait_event("the failure alerted", &store, "emergency_incomplete", "could not be read").await;
    // Nothing is closed yet, and nothing is unprotected.
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    assert_eq!(w.follower_stops().len(), 2, "stops kept while their positions are open");
    // Retried until the exchange shows nothing open; a stop goes only with its position.
    w.expect_follower("BTCUSDT", "0").await;
    w.expect_follower("ETHUSDT", "0").await;
    wait_for("stops cancelled", || w.follower_stops().is_empty()).await;
    wait_event("done", &store, "emergency_done", "").await;
    assert!(r.handles.status.lock().emergency_open.is_empty());
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn in_hedge_mode_an_emergency_stop_closes_each_side() {
    let w = World::new().await;
    w.ex.add_account(FOLLOWER, "follower-secret", "10000", true);
    let r = w.start(&w.default_config("live")).await;
    // Copy-trading off; someone holds both sides by hand.
    w.hold_both_sides_by_hand(&r).await;
    r.handles.control.send(&stop("test"), "test").await.unwrap();
    wait_for("both sides closed", || {
        let a = w.ex.account(FOLLOWER);
        a.position("BTCUSDT", "LONG").amount.is_zero() && a.position("BTCUSDT", "SHORT").amount.is_zero()
    })
    .await;
    let store = r.handles.store.clone();
    wait_event("done", &store, "emergency_done", "").await;
    r.stop().await;
}

#[tokio::test]
async fn a_new_equity_peak_is_saved_and_survives_a_restart() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let start_peak = r.handles.status.lock().risk.peak_equity.unwrap();
    // +5000 × 0.05 = +250 unrealised: a new peak, no rule fires.
    w.ex.set_mark("BTCUSDT", "70000");
    wait_for("the new peak", || r.handles.status.lock().risk.peak_equity.is_some_and(|p| p > d("10200"))).await;
    let peak = r.handles.status.lock().risk.peak_equity.unwrap();
    assert!(peak > start_peak);
    // Back down (a 2.5% drawdown, under the 50% rule), then a crash.
    w.ex.set_mark("BTCUSDT", "65000");
    wait_for("equity back down", || r.handles.status.lock().equity.as_deref().is_some_and(|e| d(e) < d("10100"))).await;
    r.kill().await;
    let r = w.start(&cfg).await;
    assert_eq!(r.handles.status.lock().risk.peak_equity, Some(peak), "drawdowns are measured from the saved peak");
    r.stop().await;
}

#[tokio::test]
async fn an_entry_refused_for_margin_is_not_chased_later() {
    let (w, _, r) = World::live().await;
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::Answer { status: 400, code: -2019, msg: "Margin is insufficient.".into(), executed: false },
        1,
    );
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("the refusal recorded", &store, "order_rejected", "-2019").await;
    // Two reconciles later the entry has not been sent again at the price of then.
    w.ex.set_mark("BTCUSDT", "66000");
    r.settle().await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    assert!(follower_orders(&w).is_empty());
    // The lead's next close and open are followed.
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
}

#[tokio::test]
async fn the_control_api_is_not_served_beyond_loopback_without_a_token() {
    let w = World::new().await;
    let cfg = w.default_config("live");
    let (_engine, mut h) = kronos_copytrade::run::build(&cfg, true, w.bus.clone(), Default::default()).await.unwrap();
    assert!(h.control_token.is_some());
    h.control_token = None;
    let e = kronos_copytrade::run::serve(h.clone(), "0.0.0.0:0").await.err().unwrap();
    assert!(e.to_string().contains("not loopback"), "{e}");
    // On loopback without a token the control endpoints are refused outright.
    let (addr, _srv) = kronos_copytrade::run::serve(h, "127.0.0.1:0").await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/emergency-stop"))
        .bearer_auth(CONTROL_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The file says the same: a non-loopback listen address needs a token variable.
    let text = w.config_text("live", SIZING, PROTECTION, LEAD_STREAM, "").replace(
        &format!("listen = \"127.0.0.1:0\"\napi_token_env = \"{}_CT_TOKEN\"", w.env),
        "listen = \"0.0.0.0:9110\"",
    );
    let e = Config::parse("t.toml", &text).unwrap_err();
    assert!(e.to_string().contains("copytrade.listen"), "{e}");
}

#[tokio::test]
async fn a_follower_short_of_its_target_only_by_rounding_keeps_following_fully() {
    let w = World::new().await;
    let sizing = SIZING.replace("ratio = \"0.5\"", "ratio = \"0.333\"");
    let cfg = Config::parse("t.toml", &w.config_text("live", &sizing, PROTECTION, LEAD_STREAM, "")).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // 0.0333 → 0.033 on the 0.001 step
    w.expect_follower("BTCUSDT", "0.033").await;
    w.lead_trade(Side::Sell, "0.05", "BTCUSDT").await; // 0.01665: sells 0.016 (the step under 0.01635)
    w.expect_follower("BTCUSDT", "0.017").await;
    // Not held back by a cap or a limit, so no proportional limit: the next increase is mirrored in full.
    w.lead_trade(Side::Buy, "0.15", "BTCUSDT").await; // 0.0666
    w.expect_follower("BTCUSDT", "0.066").await;
    r.stop().await;
}

#[tokio::test]
async fn an_emergency_stop_also_closes_what_an_order_of_unknown_fate_opens_late() {
    let (w, _, r) = World::live().await;
    // The entry is answered 503 and reaches the matching engine only after its recvWindow.
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::LateFill { delay: Duration::from_millis(2500) }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("the entry's outcome unknown", &store, "order_unresolved", "").await;
    // Panic: stop everything while the follower holds nothing yet.
    r.handles.control.send(&stop("test"), "test").await.unwrap();
    wait_for("the late entry executed", || w.ex.late_pending() == 0 && !follower_orders(&w).is_empty()).await;
    // What it opened is closed too, and only then is the stop done.
    w.expect_follower("BTCUSDT", "0").await;
    wait_event("done", &store, "emergency_done", "").await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    r.stop().await;
}

#[tokio::test]
async fn a_close_is_not_held_back_by_an_earlier_order_of_unknown_fate() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // The follower's reduction gets -1006 without executing: its fate is unknown for the hold (4 s here).
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", unknown(400, -1006, false), 1);
    w.lead_trade(Side::Sell, "0.04", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("the reduction's outcome unknown", &store, "order_unresolved", "").await;
    // The lead closes: the follower closes at once, not after the hold.
    w.lead_trade(Side::Sell, "0.06", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0").await;
    assert!(
        !has_event(&r.handles.store, "resolved", "not placed").await,
        "the close waited for the unknown order's hold to pass"
    );
    r.stop().await;
}

/// Watches the follower's account from now on: whether it ever held a BTCUSDT position with no stop open.
fn watch_unprotected(w: &World) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ex, flag) = (w.ex.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let a = ex.account(FOLLOWER);
            if !a.position("BTCUSDT", "BOTH").amount.is_zero() && a.open_stops(None).is_empty() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    seen
}

#[tokio::test]
async fn a_moving_stop_whose_new_placement_is_banned_or_rate_limited_leaves_the_old_one_protecting() {
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    let unprotected = watch_unprotected(&w);
    // Each move's new stop meets a ban (418), then a 429; the client then refuses requests itself for a while.
    for (fault, mark, qty, stop) in [
        (Fault::Ban { retry_after_s: 2 }, "66000", "0.1", "64190"),
        (Fault::RateLimit { retry_after_s: 2 }, "67000", "0.15", "64680"),
    ] {
        w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/algoOrder", fault.clone(), 1);
        w.ex.set_mark("BTCUSDT", mark);
        w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
        w.expect_follower("BTCUSDT", qty).await;
        wait_for(&format!("{fault:?} hit the new stop"), || w.ex.faults_left() == 0).await;
        wait_for(&format!("the stop moved to {stop}"), || {
            let s = w.follower_stops();
            s.len() == 1 && s[0].trigger_price == d(stop)
        })
        .await;
    }
    assert!(
        !unprotected.load(std::sync::atomic::Ordering::SeqCst),
        "the position was without a stop while the new one could not be placed"
    );
    assert!(has_event(&r.handles.store, "stop_failed", "stays meanwhile").await);
    r.stop().await;
}

#[tokio::test]
async fn an_old_stop_that_fires_while_it_is_replaced_is_a_stop_out() {
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    // The lead adds lower: the follower's entry falls to 64500, its stop to 63210. Just before the old stop's
    // cancel arrives, the mark falls to 63500: the old stop (63700) fires and closes the position.
    w.ex.set_mark("BTCUSDT", "64000");
    w.ex.inject_for(
        FOLLOWER,
        "DELETE",
        "/fapi/v1/algoOrder",
        Fault::MarkFirst { symbol: "BTCUSDT".into(), price: "63500".into() },
        1,
    );
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("stopped_out", &store, "stopped_out", "").await;
    // The follower waits for the lead's next close or flip: no re-entry, no stop left behind, no drift.
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    assert!(w.follower_stops().is_empty(), "{:?}", w.follower_stops());
    assert!(!has_event(&r.handles.store, "position_drift", "").await);
    assert!(r.handles.status.lock().lead.iter().any(|(s, _, l)| s == "BTCUSDT" && l.as_deref() == Some("0")));
    r.stop().await;
}

/// CTL-FIX 1: the follower's stop fires, and before any reconcile sees it the lead adds and the follower buys (the
/// mark falls through the stop just before the follower's entry reaches the exchange). The fired stop protects
/// nothing: the new stop placed for the entry must stay, and after two reconciles an open stop covers what the
/// follower holds (before the fix the new stop was cancelled, the fired one kept, and every later stop placed and
/// cancelled again).
#[tokio::test]
async fn a_stop_that_fired_before_an_entry_was_seen_leaves_the_new_position_protected() {
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::MarkFirst { symbol: "BTCUSDT".into(), price: "63000".into() },
        1,
    );
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_for("the follower's second entry", || follower_orders(&w).iter().filter(|o| o.side == Side::Buy).count() == 2)
        .await;
    r.settle().await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    let stops = w.follower_stops();
    assert!(
        stops.len() == 1
            && stops[0].side == Side::Sell
            && (stops[0].close_position || stops[0].quantity >= d("0.05"))
            && stops[0].trigger_price < d("63000"),
        "an open stop must cover the 0.05 held: {stops:?}"
    );
    assert!(has_event(&r.handles.store, "stop_fired", "still holds 0.05").await);
    // Held at what it has until the lead closes or flips: the next add is not chased.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    w.assert_no_duplicates();
    r.stop().await;
}

/// CTL-FIX 6: as above, but the question about the old stop fails (an error answer): its fate is unknown, so it stays the stop
/// held and the next reconcile finds it fired — a stop-out, the follower waits (before the fix it was taken as not
/// fired and forgotten: drift, and the follower bought back in at the next reconcile).
#[tokio::test]
async fn a_replaced_stop_whose_fate_cannot_be_asked_is_resolved_at_the_next_reconcile() {
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    w.ex.set_mark("BTCUSDT", "64000");
    w.ex.inject_for(
        FOLLOWER,
        "DELETE",
        "/fapi/v1/algoOrder",
        Fault::MarkFirst { symbol: "BTCUSDT".into(), price: "63500".into() },
        1,
    );
    // (A short 429 is waited out by the client; an error it returns is what reaches the engine.)
    let refused = Fault::Answer { status: 400, code: -1000, msg: "An unknown error occurred".into(), executed: false };
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v1/algoOrder", refused, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_event("stopped_out", &r.handles.store, "stopped_out", "").await;
    let buys = || follower_orders(&w).iter().filter(|o| o.side == Side::Buy).count();
    let after = buys();
    r.settle().await;
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    assert_eq!(buys(), after, "no Buy after the stop-out: {:?}", follower_orders(&w));
    assert!(r.handles.status.lock().lead.iter().any(|(s, _, l)| s == "BTCUSDT" && l.as_deref() == Some("0")));
    wait_for("no stop left behind", || w.follower_stops().is_empty()).await;
    r.stop().await;
}

/// CTL-FIX 5: the `ratio` key unreadable at a restart keeps the ratio that was in effect (0.1, the engine's record),
/// not the configured one (0.5) — before the fix the follower was resized to lead × 0.5.
#[tokio::test]
async fn an_unreadable_ratio_at_restart_keeps_the_ratio_in_effect() {
    let (w, cfg, r) = World::live().await;
    send_from_another_process(&r.handles.store, ratio("0.1")).await;
    wait_for("ratio 0.1 in effect", || r.handles.status.lock().ratio == "0.1").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.01").await;
    r.stop().await;
    store_control_by_hand(&cfg.store, "ratio", "set_ratio", "abc").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let r = w.start(&cfg).await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.02"), "lead 0.2 x 0.1");
    assert_eq!(r.handles.status.lock().ratio, "0.1");
    assert!(r.handles.status.lock().control_errors.iter().any(|e| e.contains("`ratio`")));
    r.stop().await;
}

#[tokio::test]
async fn a_new_stop_that_would_trigger_at_once_keeps_the_old_one_until_the_close_fills() {
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    let unprotected = watch_unprotected(&w);
    // The lead adds higher: the new stop would be 64190, but the mark falls to 63900 as it arrives (-2021); the
    // close that follows is answered 429 (not executed).
    w.ex.set_mark("BTCUSDT", "66000");
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/algoOrder",
        Fault::MarkFirst { symbol: "BTCUSDT".into(), price: "63900".into() },
        1,
    );
    w.ex.inject_after(FOLLOWER, "POST", "/fapi/v1/order", 1, Fault::RateLimit { retry_after_s: 1 });
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("stop_breached", &store, "stop_breached", "").await;
    wait_for("the close refused", || w.ex.faults_left() == 0).await;
    // Closed at the next attempt; the old stop protected the position until then.
    w.expect_follower("BTCUSDT", "0").await;
    assert!(
        !unprotected.load(std::sync::atomic::Ordering::SeqCst),
        "the position was without a stop after the close failed"
    );
    r.stop().await;
}

#[tokio::test]
async fn an_order_whose_resolution_meets_a_ban_is_watched_not_taken_as_not_placed() {
    let (w, _, r) = World::live().await;
    // The entry executes but its reply is lost (timeout); the query that would resolve it is answered 418.
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::Timeout { executed: true, delay: Duration::from_millis(1500) },
        1,
    );
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v1/order", Fault::Ban { retry_after_s: 2 }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let id = follower_orders(&w)[0].client_order_id.clone();
    let store = r.handles.store.clone();
    // Watched through the ban and booked once found; never recorded as not placed, never sent twice.
    wait_until("the entry booked as filled", || {
        let (store, id) = (store.clone(), id.clone());
        async move { store.order(&id).await.unwrap().is_some_and(|o| o.status == "filled") }
    })
    .await;
    assert!(!has_event(&store, "exchange_unavailable", "").await, "the executed entry was taken as not placed");
    r.settle().await;
    assert!(!has_event(&store, "position_drift", "").await);
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    assert_eq!(follower_orders(&w).len(), 1);
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn a_position_reopened_after_an_emergency_stop_finished_is_closed_too() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let store = r.handles.store.clone();
    let done = |n: usize| {
        let store = store.clone();
        async move { store.events(500).await.unwrap().iter().filter(|e| e.kind == "emergency_done").count() >= n }
    };
    r.handles.control.send(&stop("test"), "test").await.unwrap();
    w.expect_follower("BTCUSDT", "0").await;
    wait_until("the emergency stop done", || done(1)).await;
    // A person opens a position by hand while the emergency stop holds: the copy-trader closes it as well, and
    // protects it with a stop while its first close is refused (-1008, overloaded).
    w.ex.inject_after(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        1,
        Fault::Answer {
            status: 503,
            code: -1008,
            msg: "Server is currently overloaded with other requests.".into(),
            executed: false,
        },
    );
    let manual = kronos_binance::types::OrderRequest::market("BTCUSDT", Side::Buy, d("0.03"), "manual1");
    follower_client(&w).place_order(&manual).await.unwrap();
    let stops_before = w.ex.order_log().iter().filter(|l| l.path == "/fapi/v1/algoOrder" && l.executed).count();
    w.expect_follower("BTCUSDT", "0").await;
    assert_eq!(w.ex.faults_left(), 0, "the first close was refused");
    let stops_after = w.ex.order_log().iter().filter(|l| l.path == "/fapi/v1/algoOrder" && l.executed).count();
    assert!(stops_after > stops_before, "the reopened position got no stop while its close was refused");
    wait_until("a second emergency pass done", || done(2)).await;
    // Asked again while it holds, the emergency stop runs a new pass.
    r.handles.control.send(&stop("again"), "test").await.unwrap();
    wait_until("a third emergency pass done", || done(3)).await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    r.stop().await;
}

#[tokio::test]
async fn an_order_that_fills_after_its_hold_is_still_booked_once() {
    let (w, _, r) = World::live().await;
    // The entry reaches the matching engine 8 s late: after its hold (2 × 1 s + 2 s from its resolution). The follower sends a
    // replacement once the hold has passed; the late one fills after that.
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::LateFill { delay: Duration::from_millis(8000) }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("the entry recorded as not placed after its hold", &store, "resolved", "not placed").await;
    wait_for("the late order executed", || w.ex.late_pending() == 0).await;
    let late = w.ex.order_log().into_iter().find(|l| l.api_key == FOLLOWER && l.executed).unwrap().client_id;
    // Still watched after its hold: found, booked with its fill, and the exchange's position adopted without drift.
    wait_until("the late fill booked", || {
        let (store, id) = (store.clone(), late.clone());
        async move { store.order(&id).await.unwrap().is_some_and(|o| o.status == "filled") }
    })
    .await;
    let fills = store.fills_since(0).await.unwrap();
    assert_eq!(fills.iter().filter(|f| f.client_id == late).count(), 1, "{fills:?}");
    w.expect_follower("BTCUSDT", "0.05").await;
    r.settle().await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    assert!(!has_event(&store, "position_drift", "").await);
    w.assert_no_duplicates();
    r.stop().await;
}

#[tokio::test]
async fn an_order_left_unresolved_by_an_earlier_run_is_counted_once() {
    let (w, cfg, r) = World::live().await;
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", Fault::LateFill { delay: Duration::from_millis(3000) }, 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("the entry's outcome unknown", &store, "order_unresolved", "").await;
    // A crash before it fills; it fills while the copy-trader is down.
    r.kill().await;
    wait_for("the late order executed", || w.ex.late_pending() == 0).await;
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    let r = w.start(&cfg).await;
    r.settle().await;
    r.settle().await;
    // Adopted once: no drift, no reduce-only order closing half of what is held, no second entry.
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    assert_eq!(follower_orders(&w).len(), 1, "{:?}", follower_orders(&w));
    assert!(!has_event(&r.handles.store, "position_drift", "").await);
    assert!(r.handles.status.lock().positions.iter().any(|p| p.symbol == "BTCUSDT" && d(&p.qty) == d("0.05")));
    r.stop().await;
}

#[tokio::test]
async fn a_reduction_is_not_held_back_by_an_earlier_order_of_unknown_fate() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // The follower's increase gets -1006 without executing: its fate is unknown for the hold (4 s here).
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", unknown(400, -1006, false), 1);
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let store = r.handles.store.clone();
    wait_event("the increase's outcome unknown", &store, "order_unresolved", "").await;
    // The lead halves (0.2 -> 0.1); the follower, held at 0.05 meanwhile, halves at once (reduce-only), not after
    // the hold.
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.025").await;
    assert!(
        !has_event(&r.handles.store, "resolved", "not placed").await,
        "the reduction waited for the unknown order's hold to pass"
    );
    r.stop().await;
}

#[tokio::test]
async fn an_emergency_close_the_exchange_keeps_refusing_is_reported_once_and_the_users_own_stops_stay() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    // The user's own conditional order (not the copy-trader's): it stays.
    let user_stop = kronos_binance::types::StopRequest {
        symbol: "ETHUSDT".into(),
        side: Side::Sell,
        trigger_price: d("1000"),
        position_side: "BOTH".into(),
        client_algo_id: "user-eth-stop".into(),
        quantity: None,
    };
    follower_client(&w).place_stop(&user_stop).await.unwrap();
    // Every close is refused (-4005) until a person steps in.
    let refusal =
        Fault::Answer { status: 400, code: -4005, msg: "Quantity greater than max quantity.".into(), executed: false };
    w.ex.inject_for(FOLLOWER, "POST", "/fapi/v1/order", refusal, 100);
    r.handles.control.send(&stop("test"), "test").await.unwrap();
    wait_for("four refused attempts", || w.ex.faults_left() <= 96).await;
    let events = r.handles.store.events(500).await.unwrap();
    let count = |k: &str| events.iter().filter(|e| e.kind == k).count();
    assert_eq!(count("emergency_needs_person"), 1, "{events:?}");
    assert_eq!(count("emergency_incomplete"), 1, "{events:?}");
    assert_eq!(count("order_rejected"), 1, "{events:?}");
    assert!(events.iter().any(|e| e.kind == "emergency_needs_person" && e.detail.contains("-4005")));
    // The person fixes it: closed, and the user's stop is still there.
    w.ex.clear_faults();
    w.expect_follower("BTCUSDT", "0").await;
    let store = r.handles.store.clone();
    wait_event("done", &store, "emergency_done", "").await;
    assert!(w.follower_stops().iter().any(|s| s.client_algo_id == "user-eth-stop"), "{:?}", w.follower_stops());
    r.stop().await;
}

/// Issue 14, item 8: the status (`/api/status`, `/health`) shows a change when it happens — a fill from a lead poll,
/// trading switched off, an emergency stop and its resume through the store — not at the next reconcile (an hour
/// away here).
#[tokio::test]
async fn the_status_shows_each_change_at_once_not_at_the_next_reconcile() {
    let w = World::new().await;
    let text = w
        .config_text("live", SIZING, PROTECTION, "poll_interval = \"500ms\"\nuse_stream = false", "")
        .replace("reconcile_interval = \"1s\"", "reconcile_interval = \"1h\"");
    let cfg = Config::parse("t.toml", &text).unwrap();
    let r = w.start(&cfg).await;
    let (addr, _srv) = kronos_copytrade::run::serve(r.handles.clone(), "127.0.0.1:0").await.unwrap();
    let get = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}")).await.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    // A fill from a lead poll.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_until("/api/status shows the position", || async {
        get("/api/status").await["positions"].as_array().is_some_and(|p| p.len() == 1 && p[0]["qty"] == "0.05")
    })
    .await;
    // Equity (the bot's /balance) after a fill: the lead adds with the mark 1000 higher; the follower's 0.1 at an
    // average of 65500 is 50 up at once, not at the next reconcile.
    w.ex.set_mark("BTCUSDT", "66000");
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    wait_until("/api/status shows the equity after the fill", || async {
        get("/api/status").await["unrealized"].as_str().and_then(|u| u.parse::<kronos_common::Decimal>().ok())
            == Some(d("50"))
    })
    .await;
    // And in the store, for readers without the API (the bot's /balance, `kronos copytrade stats`).
    let equity = r.handles.status.lock().equity.clone().unwrap();
    let last = r.handles.store.equity_since(0).await.unwrap().last().map(|e| e.1);
    assert_eq!(last, Some(d(&equity)), "the equity after the fill is recorded");
    // Trading switched off (as /stop in the bot does).
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(false)).await;
    wait_until("/api/status shows trading off", || async { get("/api/status").await["trading"] == false }).await;
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(true)).await;
    wait_until("/api/status shows trading on", || async { get("/api/status").await["trading"] == true }).await;
    // An emergency stop from another process (as the CLI and the bot send it): shown with its effect.
    send_from_another_process(&r.handles.store, stop("test")).await;
    w.expect_follower("BTCUSDT", "0").await;
    wait_until("/api/status shows the emergency stop and no position", || async {
        let s = get("/api/status").await;
        s["risk"]["emergency"] == true
            && s["positions"].as_array().is_some_and(|p| p.is_empty())
            && s["entries_blocked"].as_str().is_some_and(|b| b.contains("emergency"))
    })
    .await;
    wait_until("/health shows the emergency stop", || async { get("/health").await["emergency"] == true }).await;
    // Resumed: entries are allowed again at once.
    send_from_another_process(&r.handles.store, ControlCommand::Resume).await;
    wait_until("/api/status shows entries allowed after the resume", || async {
        let s = get("/api/status").await;
        s["risk"]["emergency"] == false && s["entries_blocked"].is_null()
    })
    .await;
    r.stop().await;
}

/// Issue 14, item 10: a restart with an open position is not "position drift" (the store recorded it); a real
/// change made while the copy-trader was down still is, with what was recorded.
#[tokio::test]
async fn a_restart_with_an_open_position_is_not_drift_but_a_change_made_meanwhile_is() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_for("the stop", || w.follower_stops().len() == 1).await;
    r.stop().await;
    let r = w.start(&cfg).await;
    r.settle().await;
    let drift: Vec<_> =
        r.handles.store.events(500).await.unwrap().into_iter().filter(|e| e.kind == "position_drift").collect();
    assert!(drift.is_empty(), "false drift after a restart: {drift:?}");
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.05"));
    r.stop().await;
    // A manual trade while it is down is drift, reported against what was recorded.
    follower_client(&w)
        .place_order(&kronos_binance::types::OrderRequest::market("BTCUSDT", Side::Buy, d("0.02"), "manual1"))
        .await
        .unwrap();
    let r = w.start(&cfg).await;
    wait_event("the manual trade reported", &r.handles.store, "position_drift", "recorded 0.05, exchange holds 0.07")
        .await;
    r.stop().await;
}

/// Issue 14, item 11: a ratio set at runtime that overrides the configured one at a start is said so (an event and
/// a warning), not applied silently; the status shows it in effect.
#[tokio::test]
async fn a_runtime_ratio_that_overrides_the_configured_one_is_reported_at_start() {
    let (w, cfg, r) = World::live().await;
    send_from_another_process(&r.handles.store, ratio("0.8")).await;
    wait_for("the override in force", || r.handles.status.lock().ratio == "0.8").await;
    r.stop().await;
    let r = w.start(&cfg).await;
    assert_eq!(r.handles.status.lock().ratio, "0.8");
    wait_event(
        "the override reported at start",
        &r.handles.store,
        "ratio_override",
        "ratio 0.8 set at runtime (Telegram /ratio or kronos copytrade ratio) is in effect, not copytrade.sizing.ratio = 0.5",
    )
    .await;
    r.stop().await;
}

fn test_tuning() -> kronos_copytrade::Tuning {
    kronos_copytrade::Tuning {
        stream: kronos_binance::stream::StreamConfig {
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            ..Default::default()
        },
        fast_tick: Duration::from_millis(200),
    }
}

/// Audit of issue 14, H1: a store keeps the network, mode and follower key it was first used with; a run on another
/// (a paper trial's store reused for live trading, another account's key) is refused before anything is sent,
/// naming the store and what differs.
#[tokio::test]
async fn a_store_used_with_another_network_mode_or_key_is_refused() {
    let w = World::new().await;
    // A paper trial: the lead is short, the paper account follows with a stop, and the ratio is overridden.
    let paper = w.default_config("paper");
    let r = w.start(&paper).await;
    w.lead_trade(Side::Sell, "1", "BTCUSDT").await;
    wait_for("the paper position", || r.handles.status.lock().positions.len() == 1).await;
    send_from_another_process(&r.handles.store, ratio("0.8")).await;
    r.stop().await;
    // The same file switched to live: refused before any order.
    let live = w.default_config("live");
    let err = match kronos_copytrade::run::build(&live, true, w.bus.clone(), test_tuning()).await {
        Ok(_) => panic!("a paper store was accepted for live trading"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("copytrade.store") && err.contains(&format!("{}/ct.sqlite", w.dir.path().display())), "{err}");
    assert!(err.contains("mode: paper -> live"), "{err}");
    assert!(!err.contains(FOLLOWER), "the key itself is never shown: {err}");
    w.lead_trade(Side::Buy, "2", "BTCUSDT").await; // the lead flips: nothing may follow
    assert!(follower_orders(&w).is_empty(), "no follower order was sent");
    // A live store used with another follower key is refused as well.
    let w = World::new().await;
    let live = w.default_config("live");
    let r = w.start(&live).await;
    r.stop().await;
    w.ex.add_account("other-follower", "other-secret", "10000", false);
    std::env::set_var(format!("{}_F_KEY", w.env), "other-follower");
    std::env::set_var(format!("{}_F_SECRET", w.env), "other-secret");
    let err = match kronos_copytrade::run::build(&live, true, w.bus.clone(), test_tuning()).await {
        Ok(_) => panic!("a store was accepted for another follower key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("follower key:"), "{err}");
    assert!(!err.contains("other-follower") && !err.contains(FOLLOWER), "keys are never shown: {err}");
}

/// Audit of issue 14, M2: while start-up cannot read the lead (and keeps retrying), an emergency stop — saved in the
/// store before the start, or sent over the API meanwhile — is carried out: the follower's positions are closed.
#[tokio::test]
async fn an_emergency_stop_is_carried_out_while_start_up_cannot_read_the_lead() {
    for via_command in [false, true] {
        let w = World::new().await;
        let cfg = w.default_config("live");
        let r = w.start(&cfg).await;
        w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
        w.expect_follower("BTCUSDT", "0.05").await;
        r.stop().await;
        // The lead's positions cannot be read: every start-up attempt fails after the follower's reconcile.
        w.ex.inject_for(LEAD, "GET", "/fapi/v2/positionRisk", Fault::Unknown503 { executed: false }, 100_000);
        let store = kronos_copytrade::Store::connect(&cfg.store).await.unwrap();
        if !via_command {
            send_from_another_process(&store, stop("test")).await;
        }
        let (engine, handles) = kronos_copytrade::run::build(&cfg, true, w.bus.clone(), test_tuning()).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(engine.run(async {
            let _ = rx.await;
        }));
        if via_command {
            let st = handles.status.clone();
            wait_for("a failed start-up", || st.lock().detail.starts_with("cannot start")).await;
            handles.control.send(&stop("test"), "test").await.unwrap();
        }
        w.expect_follower("BTCUSDT", "0").await;
        assert!(!handles.status.lock().ready, "still unable to start");
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

/// Audit of issue 14, M4: a stop cancelled by hand while the copy-trader was down is found missing at start and
/// placed again (the position is not left unprotected while the status shows a stop).
#[tokio::test]
async fn a_stop_cancelled_while_the_copy_trader_is_down_is_placed_again() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_for("the stop", || w.follower_stops().len() == 1).await;
    let old = w.follower_stops()[0].client_algo_id.clone();
    r.stop().await;
    follower_client(&w).cancel_stop(&old).await.unwrap();
    assert!(w.follower_stops().is_empty());
    let r = w.start(&cfg).await;
    wait_for("a new stop", || w.follower_stops().len() == 1).await;
    assert_ne!(w.follower_stops()[0].client_algo_id, old);
    // The same while running: a stop cancelled by hand is replaced at the next reconcile.
    let now = w.follower_stops()[0].client_algo_id.clone();
    follower_client(&w).cancel_stop(&now).await.unwrap();
    wait_for("another new stop", || w.follower_stops().first().is_some_and(|s| s.client_algo_id != now)).await;
    r.stop().await;
}

/// Copy-trading switched off keeps positions and their stops: a stop found missing meanwhile is placed again (a
/// stop is protection, not a trade), and nothing else is sent.
#[tokio::test]
async fn a_stop_missing_while_trading_is_off_is_placed_again() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_for("the stop", || w.follower_stops().len() == 1).await;
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(false)).await;
    wait_for("trading off", || !r.handles.status.lock().trading).await;
    let old = w.follower_stops()[0].client_algo_id.clone();
    follower_client(&w).cancel_stop(&old).await.unwrap();
    wait_for("a new stop while trading is off", || w.follower_stops().first().is_some_and(|s| s.client_algo_id != old))
        .await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    r.settle().await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
}

/// Audit of issue 14, L1: an order a crashed run left `sending` that the exchange filled is booked at the restart
/// and the position it opened is adopted as its own, not reported as drift.
#[tokio::test]
async fn an_order_filled_while_the_copy_trader_was_down_is_not_drift() {
    let (w, cfg, r) = World::live().await;
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::Timeout { executed: true, delay: Duration::from_secs(5) },
        1,
    );
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.kill().await;
    let r = w.start(&cfg).await;
    r.settle().await;
    assert!(has_event(&r.handles.store, "resolved", "had been filled").await);
    let drift: Vec<_> =
        r.handles.store.events(500).await.unwrap().into_iter().filter(|e| e.kind == "position_drift").collect();
    assert!(drift.is_empty(), "the resolved order's fill reported as drift: {drift:?}");
    assert!(has_event(&r.handles.store, "position_adopted", "recorded 0, exchange holds 0.05").await);
    r.stop().await;
}

/// Audit of issue 14, L2: while the follower's balance cannot be read, no equity sample is recorded (neither the
/// last one again nor an estimate booked from a fill on top of it).
#[tokio::test]
async fn equity_is_recorded_only_when_it_was_read() {
    let (w, _, r) = World::live().await;
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v2/balance", Fault::Unknown503 { executed: false }, 100_000);
    // A read of the balance already in flight when the fault was set (the loop's first risk check) may still be
    // recorded: counted from once the engine has settled after it.
    r.settle().await;
    let t0 = kronos_common::time::now_ms() as i64 + 1;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.settle().await;
    r.settle().await;
    let samples = r.handles.store.equity_since(t0).await.unwrap();
    assert!(samples.is_empty(), "equity recorded although it could not be read: {samples:?}");
    r.stop().await;
}

/// Audit of issue 14, L3: a start-up that is retried reports a runtime ratio override once, not at every attempt.
#[tokio::test]
async fn a_retried_start_up_reports_the_ratio_override_once() {
    let w = World::new().await;
    let cfg = w.default_config("paper");
    let r = w.start(&cfg).await;
    send_from_another_process(&r.handles.store, ratio("0.8")).await;
    wait_for("the override in force", || r.handles.status.lock().ratio == "0.8").await;
    r.stop().await;
    // The first two attempts fail at the lead (each read is tried three times; the third attempt starts).
    w.ex.inject_for(LEAD, "GET", "/fapi/v2/positionRisk", Fault::Unknown503 { executed: false }, 6);
    let r = w.start(&cfg).await;
    let n = r.handles.store.events(500).await.unwrap().iter().filter(|e| e.kind == "ratio_override").count();
    assert_eq!(n, 1, "ratio_override recorded at every start-up attempt");
    r.stop().await;
}

/// Audit of issue 14, L4: a repeated emergency request while a close keeps being refused gets its own outcome
/// record (the alert is rate-limited, the answer to the request is not), so the asker is not told "not running".
#[tokio::test]
async fn a_repeated_emergency_request_gets_its_own_outcome() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let refused = r#"{"code":-2022,"msg":"ReduceOnly Order is rejected."}"#;
    w.ex.inject_for(
        FOLLOWER,
        "POST",
        "/fapi/v1/order",
        Fault::Malformed { status: 400, body: refused.into() },
        100_000,
    );
    let store = r.handles.store.clone();
    for _ in 0..2 {
        let seq = r.handles.control.send(&stop("test"), "test").await.unwrap();
        let outcome = kronos_copytrade::report::emergency_outcome(&store, seq, common::PATIENCE).await;
        assert!(
            matches!(outcome, kronos_copytrade::report::EmergencyOutcome::Incomplete(_)),
            "each request is answered: {outcome:?}"
        );
    }
    r.stop().await;
}

/// A close-position stop the copy-trader does not hold (the user's own, or one left by a crash) makes Binance refuse
/// a second one in that direction (-4130): the copy-trader's stop then carries the position's quantity, and it must
/// remember that it does, so that when the position grows at the same trigger its stop is replaced with the new
/// quantity instead of being kept as if it closed the whole position.
#[tokio::test]
async fn a_stop_placed_with_a_quantity_after_4130_grows_with_the_position() {
    let w = World::new().await;
    let follower = kronos_binance::FuturesClient::new(
        kronos_binance::ClientConfig::new(kronos_binance::Network::Custom { rest: w.ex.rest_url(), ws: w.ex.ws_url() }),
        Some(kronos_binance::Credentials {
            api_key: kronos_common::Secret::new(FOLLOWER),
            api_secret: kronos_common::Secret::new("follower-secret"),
        }),
    )
    .unwrap();
    // The user's own close-position stop, far below: it blocks the copy-trader's close-position stop.
    let users = kronos_binance::types::StopRequest {
        symbol: "BTCUSDT".into(),
        side: Side::Sell,
        trigger_price: d("30000"),
        position_side: "BOTH".into(),
        client_algo_id: "users-own-stop".into(),
        quantity: None,
    };
    follower.place_stop(&users).await.unwrap();
    let r = w.start(&w.default_config("live")).await;

    let ours = |qty: &str| {
        let want = d(qty);
        move |s: &kronos_binance::types::AlgoOrder| {
            s.client_algo_id != "users-own-stop" && !s.close_position && s.quantity == want
        }
    };
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let first = ours("0.05");
    wait_for("a stop with the position's quantity", || w.follower_stops().iter().any(&first)).await;
    // Same price, so the same trigger (63700): only the quantity tells the old stop from the right one.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    let grown = ours("0.1");
    wait_for("the stop replaced with the grown quantity", || {
        let stops = w.follower_stops();
        stops.iter().any(&grown) && !stops.iter().any(&first)
    })
    .await;
    // The user's stop is left alone.
    assert!(w.follower_stops().iter().any(|s| s.client_algo_id == "users-own-stop"));
    w.assert_no_duplicates();
    r.stop().await;
}

// ---- the one control path (issue 12): one test per finding of the reverted attempt's audit ---------------------

/// Audit finding (a): the reverted engine wrote the same `emergency` key it read commands from, so a resume it was
/// carrying out could overwrite a stop written meanwhile (the engine ended resumed although the stop came last).
/// Here a resume over the API (acted on at once) and a stop from another process race, again and again: the engine
/// always ends in the state of the command numbered last, and its record reaches that command; the log holds only
/// what the writers sent.
#[tokio::test]
async fn a_resume_racing_an_emergency_stop_ends_in_the_state_of_the_last_command() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.handles.control.send(&stop("first"), "test").await.unwrap();
    w.expect_follower("BTCUSDT", "0").await;
    let other = kronos_copytrade::Store::connect(&cfg.store).await.unwrap(); // as the CLI or the bot
    let mut sent = 1;
    let (mut stop_last, mut resume_last) = (0, 0);
    for i in 0..12 {
        let race = stop(&format!("race {i}"));
        let (resume, stop_seq) = tokio::join!(
            r.handles.control.send(&ControlCommand::Resume, "test"),
            kronos_copytrade::control::append(&other, &race, "test"),
        );
        let (resume, stop_seq) = (resume.unwrap(), stop_seq.unwrap());
        sent += 2;
        let last = resume.max(stop_seq);
        let store = r.handles.store.clone();
        wait_until("the engine carried out the last command", || {
            let store = store.clone();
            async move { kronos_copytrade::control::carried_out(&store).await.unwrap().emergency_seq >= last }
        })
        .await;
        let stopped = r.handles.status.lock().risk.emergency;
        assert_eq!(stopped, stop_seq > resume, "round {i}: stop #{stop_seq}, resume #{resume}");
        let carried = kronos_copytrade::control::carried_out(&r.handles.store).await.unwrap();
        assert_eq!(carried.emergency_active, stopped, "round {i}: the record agrees");
        if stopped {
            stop_last += 1;
        } else {
            resume_last += 1;
            // Stopped again for the next round.
            r.handles.control.send(&stop("again"), "test").await.unwrap();
            sent += 1;
            wait_for("stopped again", || r.handles.status.lock().risk.emergency).await;
        }
    }
    eprintln!("races won by the stop: {stop_last}, by the resume: {resume_last}");
    let (_, pool) = kronos_common::db::open(&cfg.store).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ct_control").fetch_one(&pool).await.unwrap();
    assert_eq!(n, sent, "the control log holds the writers' commands and nothing the engine wrote");
    assert!(w.follower_qty("BTCUSDT").is_zero());
    r.stop().await;
}

/// Audit finding (b): in the reverted attempt an emergency stop sent over the API while a start-up attempt was
/// under way (before its first reconcile) was not seen before the start placed its entries. Here the lead adds
/// while the copy-trader is down (a start would enter), the start-up attempt reads the follower's positions
/// slowly, and the stop is sent meanwhile: the start re-reads the control state after its reconcile and carries
/// the stop out before anything reads the lead — no entry is ever sent.
#[tokio::test]
async fn an_emergency_stop_sent_during_a_start_up_attempt_is_carried_out_before_any_entry() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let slow = Fault::Timeout { executed: true, delay: Duration::from_millis(500) };
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v2/positionRisk", slow, 1);
    let (engine, handles) = kronos_copytrade::run::build(&cfg, true, w.bus.clone(), test_tuning()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async {
        let _ = rx.await;
    }));
    handles.control.send(&stop("during start-up"), "test").await.unwrap();
    w.expect_follower("BTCUSDT", "0").await;
    let st = handles.status.clone();
    wait_for("started", || st.lock().ready).await;
    assert!(st.lock().risk.emergency);
    // Settled: a lead poll and a reconcile after the start.
    let t = kronos_common::time::now_ms() as i64;
    wait_for("a lead poll", || st.lock().last_lead_poll_ms > t).await;
    let n = st.lock().reconciles;
    wait_for("a reconcile", || st.lock().reconciles > n).await;
    let buys = follower_orders(&w).iter().filter(|o| o.side == Side::Buy).count();
    assert_eq!(buys, 1, "only the entry made before the restart: {:?}", follower_orders(&w));
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// Audit finding (d): in the reverted attempt a control value that could not be read ended the daemon before an
/// emergency stop saved in the store was carried out. Here, while the copy-trader is down, a stop is sent and then
/// `trading` and `ratio` values nobody can read are stored by hand: the copy-trader starts, carries the stop out
/// first, then reports each bad value by its key (status, /health, a `control_invalid` event) and keeps running.
/// An `emergency` value that cannot be read is itself a stop (fail safe).
#[tokio::test]
async fn a_bad_control_value_never_ends_the_daemon_and_a_pending_stop_is_carried_out_first() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
    let store = kronos_copytrade::Store::connect(&cfg.store).await.unwrap();
    send_from_another_process(&store, stop("before the bad values")).await;
    store_control_by_hand(&cfg.store, "trading", "set_trading", "maybe").await;
    store_control_by_hand(&cfg.store, "ratio", "set_ratio", "abc").await;
    let r = w.start(&cfg).await;
    w.expect_follower("BTCUSDT", "0").await;
    wait_for("both bad values reported", || r.handles.status.lock().control_errors.len() == 2).await;
    let errors = r.handles.status.lock().control_errors.clone();
    assert!(errors[0].contains("`trading`") && errors[0].contains("maybe"), "{errors:?}");
    assert!(errors[1].contains("`ratio`") && errors[1].contains("'abc'"), "{errors:?}");
    assert!(!r.handles.status.lock().trading, "trading unreadable: paused");
    // The stop was carried out before the errors were reported (events: newest first).
    let events = r.handles.store.events(500).await.unwrap();
    let at = |kind: &str| events.iter().position(|e| e.kind == kind).unwrap_or_else(|| panic!("no {kind}"));
    assert!(at("control_invalid") < at("emergency_stop"), "{events:?}");
    let (addr, _srv) = kronos_copytrade::run::serve(r.handles.clone(), "127.0.0.1:0").await.unwrap();
    let resp = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let health: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert!(health["control_errors"][0].as_str().unwrap().contains("`trading`"), "{health}");
    assert!(!r.task.is_finished(), "the daemon keeps running");
    // Fixed: a good trading command clears its error; the emergency stop is lifted.
    send_from_another_process(&r.handles.store, ControlCommand::SetTrading(true)).await;
    send_from_another_process(&r.handles.store, ControlCommand::Resume).await;
    wait_for("resumed", || !r.handles.status.lock().risk.emergency).await;
    wait_for("only the ratio error left", || r.handles.status.lock().control_errors.len() == 1).await;
    // An emergency value nobody can read: taken as a stop.
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await; // the lead closes…
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await; // …and opens again: followed
    w.expect_follower("BTCUSDT", "0.05").await;
    store_control_by_hand(&cfg.store, "emergency", "halt", "").await;
    w.expect_follower("BTCUSDT", "0").await;
    assert!(r.handles.status.lock().risk.emergency);
    wait_for("the emergency error reported", || {
        r.handles.status.lock().control_errors.iter().any(|e| e.contains("`emergency`") && e.contains("halt"))
    })
    .await;
    assert!(!r.task.is_finished(), "the daemon keeps running");
    r.stop().await;
}

/// CTL-FIX 2: a row the control log cannot decode (here `at_ms` = 'yesterday', inserted by hand) no longer fails the
/// whole load: under an unknown key it is skipped, so the stored stop is carried out at start (before the fix the
/// load failed, the engine started with the defaults and kept the position open); under a known key it is
/// unreadable for that key alone (trading unreadable: paused), reported by name.
#[tokio::test]
async fn an_undecodable_control_row_does_not_hide_a_stored_stop() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
    let store = kronos_copytrade::Store::connect(&cfg.store).await.unwrap();
    send_from_another_process(&store, stop("stored while down")).await;
    let (_, pool) = kronos_common::db::open(&cfg.store).await.unwrap();
    for key in ["note", "trading"] {
        sqlx::query(
            "INSERT INTO ct_control (control_key, command, value, set_by, at_ms) VALUES ($1, 'x', NULL, 'hand', \
             'yesterday')",
        )
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let r = w.start(&cfg).await;
    w.expect_follower("BTCUSDT", "0").await;
    assert!(r.handles.status.lock().risk.emergency);
    wait_for("the unreadable trading row reported", || {
        r.handles.status.lock().control_errors.iter().any(|e| e.contains("`trading`"))
    })
    .await;
    assert!(!r.handles.status.lock().trading, "trading unreadable: paused");
    assert!(!r.task.is_finished(), "the daemon keeps running");
    r.stop().await;
}

/// CTL-FIX 3: a lead poll that takes longer than its interval (every positionRisk of the lead held past the client's
/// timeout, 800 ms, against a 500 ms interval) keeps the poll tick always ready; control is served first, so an
/// emergency stop appended by another process is still carried out (before the fix the biased loop took the poll
/// tick every turn and never read the control log: the follower stayed open).
#[tokio::test]
async fn a_slow_lead_poll_does_not_starve_the_control_log() {
    let w = World::new().await;
    let lead = "poll_interval = \"500ms\"\nuse_stream = true";
    let cfg = Config::parse("test.toml", &w.config_text("live", SIZING, PROTECTION, lead, "")).unwrap();
    let r = w.start(&cfg).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let slow = Fault::Timeout { executed: true, delay: Duration::from_millis(1500) };
    w.ex.inject_for(LEAD, "GET", "/fapi/v2/positionRisk", slow, 100_000);
    // Two lead polls have failed since (the second one at least started while the first was late).
    let polls = || r.handles.status.lock().lead_poll_errors;
    let before = polls();
    wait_for("two slow lead polls", || polls() >= before + 2).await;
    send_from_another_process(&r.handles.store, stop("while the lead is slow")).await;
    w.expect_follower("BTCUSDT", "0").await;
    assert!(r.handles.status.lock().risk.emergency);
    r.stop().await;
}

/// CTL-FIX 4: an emergency stop the API accepts while start-up reads the lead (its positionRisk held 500 ms) is
/// carried out before the lead's add is followed: no Buy after the stop was accepted (before the fix start-up went
/// on from the lead poll to the entries and read the stop only in the loop afterwards: one Buy too many).
#[tokio::test]
async fn an_emergency_stop_accepted_during_start_ups_lead_poll_comes_before_any_entry() {
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
    // While the copy-trader is down the lead adds: the next start would follow it.
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let buys = || follower_orders(&w).iter().filter(|o| o.side == Side::Buy).count();
    assert_eq!(buys(), 1);
    let slow = Fault::Timeout { executed: true, delay: Duration::from_millis(500) };
    w.ex.inject_for(LEAD, "GET", "/fapi/v2/positionRisk", slow, 1);
    let (engine, handles) = kronos_copytrade::run::build(&cfg, true, w.bus.clone(), test_tuning()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async {
        let _ = rx.await;
    }));
    // The start-up's lead poll is in flight (the mock took the fault), then the stop is sent through the API.
    wait_for("the start-up's lead poll in flight", || w.ex.faults_left() == 0).await;
    handles.control.send(&stop("during start-up"), "test").await.unwrap();
    w.expect_follower("BTCUSDT", "0").await;
    let st = handles.status.clone();
    wait_for("started", || st.lock().ready).await;
    assert_eq!(buys(), 1, "nothing bought after the stop was accepted: {:?}", follower_orders(&w));
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// Latency: a command sent inside the daemon (the HTTP API) wakes the engine at once — here the poll interval is an
/// hour, so nothing but the wake-up can carry the stop out — while one from another process is read at the next
/// poll (every other test here: 200 ms).
#[tokio::test]
async fn a_command_sent_in_process_is_carried_out_at_once_not_at_the_next_poll() {
    let w = World::new().await;
    let cfg = w.default_config("live");
    let mut tuning = test_tuning();
    tuning.fast_tick = Duration::from_secs(3600);
    let r = w.start_tuned(&cfg, tuning).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let (addr, _srv) = kronos_copytrade::run::serve(r.handles.clone(), "127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();
    let resp = http.post(format!("http://{addr}/api/emergency-stop")).bearer_auth(CONTROL_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    w.expect_follower("BTCUSDT", "0").await;
    let resp = http.post(format!("http://{addr}/api/resume")).bearer_auth(CONTROL_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    wait_for("resumed at once", || !r.handles.status.lock().risk.emergency).await;
    r.stop().await;
}

/// The stop-status rule (one for the reconcile, the replacement of a stop and the check of the recorded stops): a
/// position closed by hand after its stop was cancelled by hand is not a stop-out (the stop did not fire) — it is
/// reported as closed outside the copy-trader — and, as after a stop-out, nothing is chased: the follower waits
/// for the lead's next close or flip.
#[tokio::test]
async fn a_position_closed_by_hand_after_its_stop_was_cancelled_is_not_a_stop_out_and_is_not_chased() {
    let (w, _, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    wait_for("the stop", || w.follower_stops().len() == 1).await;
    let f = follower_client(&w);
    let stop_id = w.follower_stops()[0].client_algo_id.clone();
    f.cancel_stop(&stop_id).await.unwrap();
    let close = kronos_binance::types::OrderRequest::market("BTCUSDT", Side::Sell, d("0.05"), "byhand1");
    f.place_order(&close).await.unwrap();
    wait_event("closed outside", &r.handles.store, "closed_outside", "not fired").await;
    assert!(!has_event(&r.handles.store, "stopped_out", "").await, "a cancelled stop did not fire");
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero(), "not chased while the lead still holds");
    w.lead_trade(Side::Sell, "0.1", "BTCUSDT").await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    r.stop().await;
}

/// AUDIT-2 B2: the old stop's cancel is carried out but answered -2011 (as when it has gone already), and the
/// question about it fails three times in a row (at the replacement and at the reconciles after it). The new stop
/// is the position's live stop all along: the position is never without an open stop, and once the question is
/// answered the old one is settled and the new one stays (before the fix the old stop was put back as the one held,
/// the new one became an orphan the clean-up cancelled in the same reconcile, and every reconcile placed and
/// cancelled another one while the question kept failing).
#[tokio::test]
async fn a_replaced_stop_whose_fate_stays_unknown_never_costs_the_position_its_live_stop() {
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    let unprotected = watch_unprotected(&w);
    let gone = Fault::Answer { status: 400, code: -2011, msg: "Unknown order sent.".into(), executed: true };
    w.ex.inject_for(FOLLOWER, "DELETE", "/fapi/v1/algoOrder", gone, 1);
    let refused = Fault::Answer { status: 400, code: -1000, msg: "An unknown error occurred".into(), executed: false };
    w.ex.inject_for(FOLLOWER, "GET", "/fapi/v1/algoOrder", refused, 3);
    // The lead adds higher: the follower's entry moves to 65500, its stop to 64190.
    w.ex.set_mark("BTCUSDT", "66000");
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.1").await;
    wait_for("the old stop's question failed three times", || w.ex.faults_left() == 0).await;
    r.settle().await;
    r.settle().await;
    assert!(
        !unprotected.load(std::sync::atomic::Ordering::SeqCst),
        "the position was left without an open stop by the copy-trader's own clean-up"
    );
    let stops = w.follower_stops();
    assert!(stops.len() == 1 && stops[0].trigger_price == d("64190"), "{stops:?}");
    assert!(!has_event(&r.handles.store, "stop_missing", "").await, "the live stop was never lost");
    assert!(!has_event(&r.handles.store, "stopped_out", "").await);
    assert_eq!(w.follower_qty("BTCUSDT"), d("0.1"));
    r.stop().await;
}

/// AUDIT-2 B6: the follower's stop triggers and its close is on its way (TRIGGERED, the position still open) when a
/// reconcile looks: a new stop is placed meanwhile, and when the close fills the flat position is a stop-out (the
/// follower waits for the lead), not closed outside the copy-trader (before the fix the triggered stop was dropped
/// and forgotten, so the flat position was judged by the new stop alone: `closed_outside`, or drift).
#[tokio::test]
async fn a_stop_whose_close_is_on_its_way_when_a_reconcile_looks_is_still_a_stop_out() {
    use kronos_binance::types::AlgoStatus;
    let (w, _, r) = World::live().await;
    w.first_buy_with_stop().await;
    let first = w.follower_stops()[0].client_algo_id.clone();
    assert!(w.ex.set_stop_status(FOLLOWER, &first, AlgoStatus::Triggered));
    wait_event("the triggered stop seen", &r.handles.store, "stop_missing", &first).await;
    wait_for("a new stop meanwhile", || w.follower_stops().first().is_some_and(|s| s.client_algo_id != first)).await;
    r.settle().await;
    // The stop's close fills: the position is flat and the stop done.
    w.ex.trade(FOLLOWER, "BTCUSDT", Side::Sell, d("0.05"), "close-of-the-stop").unwrap();
    assert!(w.ex.set_stop_status(FOLLOWER, &first, AlgoStatus::Finished));
    let store = r.handles.store.clone();
    wait_flat_judged(&store).await;
    assert_has_event(&store, "stopped_out", "63700").await;
    assert!(!has_event(&store, "closed_outside", "").await);
    assert!(!has_event(&store, "position_drift", "").await);
    // The follower waits for the lead's next close or flip: the lead's position is not bought back.
    r.settle().await;
    assert!(w.follower_qty("BTCUSDT").is_zero());
    assert!(r.handles.status.lock().lead.iter().any(|(s, _, l)| s == "BTCUSDT" && l.as_deref() == Some("0")));
    wait_for("no stop left behind", || w.follower_stops().is_empty()).await;
    r.stop().await;
}

/// AUDIT-2 B3: in paper mode every fast tick reads the mark of each symbol with a stop; with each read held 300 ms
/// against a 50 ms tick the fast turn always takes longer than its period. The lead's stream, poll and the
/// reconcile still get their turns: the lead's add is followed and reconciles go on (before the fix the biased loop
/// took the overdue fast tick nearly every turn: no reconcile ran again — tried, the test timed out there).
#[tokio::test]
async fn a_fast_turn_slower_than_its_tick_does_not_starve_the_lead() {
    let w = World::new().await;
    let cfg = w.default_config("paper");
    let mut tuning = test_tuning();
    tuning.fast_tick = Duration::from_millis(50);
    let r = w.start_tuned(&cfg, tuning).await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    let status = r.handles.status.clone();
    wait_for("paper stop", || status.lock().positions.iter().any(|p| p.stop_price.is_some())).await;
    let slow = Fault::Timeout { executed: true, delay: Duration::from_millis(300) };
    w.ex.inject("GET", "/fapi/v1/premiumIndex", slow, 100_000);
    let reconciles = status.lock().reconciles;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    wait_for("the lead's add followed", || {
        status.lock().positions.iter().any(|p| p.symbol == "BTCUSDT" && d(&p.qty) == d("0.1"))
    })
    .await;
    wait_for("a reconcile", || status.lock().reconciles > reconciles).await;
    w.ex.clear_faults();
    r.stop().await;
}

/// Issue 12: an emergency request is answered by the copy-trader's report naming its command's sequence number (or a
/// later one's), not by the first outcome recorded after the asker's clock: here the first stop's outcome event is
/// dated a minute ahead (the copy-trader's clock ahead of the asker's, on another machine), and a second stop sent
/// while the copy-trader is down gets no answer until it runs and carries it out (before, that event answered the
/// second request "done" at once).
#[tokio::test]
async fn an_emergency_request_is_answered_by_its_own_commands_report_not_by_the_clock() {
    use kronos_copytrade::report::{emergency_outcome, EmergencyOutcome};
    let (w, cfg, r) = World::live().await;
    w.lead_trade(Side::Buy, "0.1", "BTCUSDT").await;
    w.expect_follower("BTCUSDT", "0.05").await;
    let store = r.handles.store.clone();
    let first = r.handles.control.send(&stop("first"), "test").await.unwrap();
    assert_eq!(emergency_outcome(&store, first, common::PATIENCE).await, EmergencyOutcome::Done);
    r.stop().await;
    let (_, pool) = kronos_common::db::open(&cfg.store).await.unwrap();
    sqlx::query("INSERT INTO ct_events (at_ms, kind, symbol, detail) VALUES ($1, 'emergency_done', '', 'no position left open')")
        .bind(kronos_common::time::now_ms() as i64 + 60_000)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let second = send_from_another_process(&store, stop("second")).await;
    assert!(second > first);
    assert_eq!(
        emergency_outcome(&store, second, Duration::from_millis(1500)).await,
        EmergencyOutcome::NoAnswer,
        "nothing carried the second stop out yet"
    );
    let r = w.start(&cfg).await;
    assert_eq!(emergency_outcome(&store, second, common::PATIENCE).await, EmergencyOutcome::Done);
    let carried = kronos_copytrade::control::carried_out(&store).await.unwrap();
    assert_eq!(carried.emergency_report.map(|e| e.seq), Some(second));
    r.stop().await;
}
