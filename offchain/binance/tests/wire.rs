//! The client against the local exchange: signatures, clock, weight, 429/418, unknown outcomes, streams.

use std::time::{Duration, Instant};

use kronos_binance::stream::{run_user_stream, StreamConfig, StreamEvent};
use kronos_binance::types::{OrderRequest, Side, StopRequest};
use kronos_binance::{BinanceError, ClientConfig, Credentials, FuturesClient, Network};
use kronos_binance_mock::{Fault, MockExchange};
use kronos_common::{Decimal, Secret};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn client(ex: &MockExchange, key: &str, secret: &str) -> FuturesClient {
    let mut cfg = ClientConfig::new(Network::Custom { rest: ex.rest_url(), ws: ex.ws_url() });
    cfg.recv_window_ms = 1000;
    cfg.timeout = Duration::from_millis(600);
    cfg.max_retry_wait = Duration::from_secs(3);
    FuturesClient::new(cfg, Some(Credentials { api_key: Secret::new(key), api_secret: Secret::new(secret) })).unwrap()
}

fn buy(qty: &str, id: &str) -> OrderRequest {
    OrderRequest::market("BTCUSDT", Side::Buy, d(qty), id)
}

async fn setup() -> (MockExchange, FuturesClient) {
    let ex = MockExchange::start().await;
    ex.add_account("key-a", "secret-a", "10000", false);
    let c = client(&ex, "key-a", "secret-a");
    (ex, c)
}

fn executions(ex: &MockExchange, id: &str) -> usize {
    ex.account("key-a").orders().iter().filter(|o| o.client_order_id == id).count()
}

#[tokio::test]
async fn signed_requests_are_accepted_and_bad_keys_refused() {
    let (ex, c) = setup().await;
    let o = c.place_order(&buy("0.01", "kr-1")).await.unwrap();
    assert_eq!(o.status, "FILLED");
    assert_eq!(o.avg_price, d("65000"));
    let pos = c.positions().await.unwrap();
    assert_eq!(pos.iter().find(|p| p.symbol == "BTCUSDT").unwrap().position_amt, d("0.01"));
    let trades = c.order_trades("BTCUSDT", o.order_id).await.unwrap();
    assert_eq!(trades[0].commission, d("0.325"));
    assert_eq!(c.balance_of("USDT").await.unwrap().balance, d("9999.675"));

    let wrong = client(&ex, "key-a", "not-the-secret");
    let e = wrong.positions().await.unwrap_err();
    assert_eq!(e.code(), Some(-1022), "{e}");
    let unknown = client(&ex, "key-zzz", "secret-a");
    assert_eq!(unknown.positions().await.unwrap_err().code(), Some(-2015));
    // The weight header is tracked.
    assert!(c.stats().used_weight_1m > 0);
}

#[tokio::test]
async fn clock_offset_is_synced_and_a_1021_is_retried_once() {
    let (ex, c) = setup().await;
    ex.set_clock_offset(30_000);
    c.positions().await.unwrap(); // first signed call syncs
    assert!((c.stats().offset_ms - 30_000).abs() < 500, "{:?}", c.stats());
    // The exchange's clock jumps: the next request is refused with -1021, re-synced and sent once more.
    ex.set_clock_offset(-20_000);
    c.place_order(&buy("0.01", "kr-2")).await.unwrap();
    assert_eq!(executions(&ex, "kr-2"), 1);
    assert!((c.stats().offset_ms + 20_000).abs() < 500);
    // An injected -1021 is retried once too; two in a row surface.
    ex.inject("GET", "/fapi/v2/positionRisk", Fault::Timestamp, 2);
    assert_eq!(c.positions().await.unwrap_err().code(), Some(-1021));
}

#[tokio::test]
async fn rate_limits_wait_out_retry_after_and_bans_stop_everything() {
    let (ex, c) = setup().await;
    ex.inject("GET", "/fapi/v2/positionRisk", Fault::RateLimit { retry_after_s: 1 }, 1);
    let t = Instant::now();
    c.positions().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900), "Retry-After was not honoured");
    ex.inject("GET", "/fapi/v2/positionRisk", Fault::RateLimit { retry_after_s: 120 }, 1);
    assert!(matches!(c.positions().await.unwrap_err(), BinanceError::RateLimited { retry_after_s: 120, .. }));

    let (ex, c) = setup().await;
    ex.inject("POST", "/fapi/v1/order", Fault::Ban { retry_after_s: 300 }, 1);
    assert!(matches!(c.place_order(&buy("0.01", "kr-3")).await.unwrap_err(), BinanceError::Banned { .. }));
    let before = ex.order_log().len();
    // While banned nothing is sent at all.
    assert!(matches!(c.place_order(&buy("0.01", "kr-4")).await.unwrap_err(), BinanceError::Banned { .. }));
    assert!(matches!(c.positions().await.unwrap_err(), BinanceError::Banned { .. }));
    assert_eq!(ex.order_log().len(), before);
    assert_eq!(executions(&ex, "kr-3") + executions(&ex, "kr-4"), 0);
}

#[tokio::test]
async fn the_weight_limit_turns_into_a_pause_not_a_ban() {
    // Keep clear of a minute boundary, where the weight window resets (and a short Retry-After is waited out).
    let sec = kronos_common::time::now_ms() / 1000 % 60;
    if sec >= 54 {
        tokio::time::sleep(Duration::from_secs(61 - sec)).await;
    }
    let (ex, c) = setup().await;
    ex.set_weight_limit(12);
    // Each positionRisk costs 5: the third call passes the limit and gets a 429 with a Retry-After of the rest of
    // the minute, which is longer than the client waits on its own.
    c.positions().await.unwrap();
    c.positions().await.unwrap();
    let e = c.positions().await.unwrap_err();
    assert!(matches!(e, BinanceError::RateLimited { .. }), "{e}");
}

fn unknown(status: u16, code: i64, msg: &str, executed: bool) -> Fault {
    Fault::Answer { status, code, msg: msg.into(), executed }
}

#[tokio::test]
async fn unknown_outcomes_are_resolved_by_query_never_by_blind_resend() {
    let (ex, c) = setup().await;
    let (t, u) = (kronos_binance_mock::BACKEND_TIMEOUT_MSG, kronos_binance_mock::UNEXPECTED_RESP_MSG);
    for (i, fault) in [
        Fault::Unknown503 { executed: true },
        Fault::Unknown503 { executed: false },
        Fault::Timeout { executed: true, delay: Duration::from_millis(1500) },
        Fault::Timeout { executed: false, delay: Duration::from_millis(1500) },
        // "Execution status unknown" answers are not rejections.
        unknown(408, -1007, t, true),
        unknown(408, -1007, t, false),
        unknown(400, -1006, u, true),
        unknown(400, -1006, u, false),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("kr-u{i}");
        ex.inject("POST", "/fapi/v1/order", fault.clone(), 1);
        let executed = !matches!(
            fault,
            Fault::Unknown503 { executed: false }
                | Fault::Timeout { executed: false, .. }
                | Fault::Answer { executed: false, .. }
        );
        match c.place_order(&buy("0.01", &id)).await {
            Ok(o) => {
                assert!(executed, "{fault:?}: reported placed");
                assert_eq!(o.client_order_id, id);
                assert_eq!(executions(&ex, &id), 1, "{fault:?}: executed exactly once");
            }
            // Not found after its recvWindow: reported as unknown, never sent again (ids are unique only among open
            // orders, so a resend could execute next to a late fill).
            Err(BinanceError::Unresolved { client_order_id, .. }) => {
                assert!(!executed, "{fault:?}: an executed order was not found");
                assert_eq!(client_order_id, id);
                assert_eq!(executions(&ex, &id), 0, "{fault:?}: not re-sent");
            }
            Err(e) => panic!("{fault:?}: {e}"),
        }
    }
    let pos = ex.account("key-a").position("BTCUSDT", "BOTH");
    assert_eq!(pos.amount, d("0.04"));
    // An order that reaches the matching engine after its recvWindow: reported unresolved, not re-sent, and it
    // executes once when it arrives.
    ex.inject("POST", "/fapi/v1/order", Fault::LateFill { delay: Duration::from_millis(2500) }, 1);
    let e = c.place_order(&buy("0.01", "kr-late")).await.unwrap_err();
    assert!(matches!(e, BinanceError::Unresolved { .. }), "{e}");
    let t0 = Instant::now();
    while ex.late_pending() > 0 && t0.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ex.late_pending(), 0);
    assert_eq!(executions(&ex, "kr-late"), 1, "the late order executed once; nothing was sent again");
    assert_eq!(c.query_order("BTCUSDT", "kr-late").await.unwrap().executed_qty, d("0.01"));
    // The same for stops.
    ex.inject("POST", "/fapi/v1/algoOrder", Fault::Unknown503 { executed: true }, 1);
    let s = StopRequest {
        symbol: "BTCUSDT".into(),
        side: Side::Sell,
        trigger_price: d("60000"),
        position_side: "BOTH".into(),
        client_algo_id: "kr-s1".into(),
        quantity: None,
    };
    let a = c.place_stop(&s).await.unwrap();
    assert_eq!(a.client_algo_id, "kr-s1");
    assert_eq!(ex.account("key-a").open_stops(None).len(), 1);
    c.cancel_stop("kr-s1").await.unwrap();
    c.cancel_stop("kr-s1").await.unwrap(); // already gone counts as done
    assert!(c.open_stops(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn malformed_replies_are_clear_errors() {
    let (ex, c) = setup().await;
    ex.inject("GET", "/fapi/v2/positionRisk", Fault::Malformed { status: 200, body: "<html>gateway</html>".into() }, 1);
    let e = c.positions().await.unwrap_err();
    assert!(matches!(e, BinanceError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("GET /fapi/v2/positionRisk") && e.to_string().contains("<html>"), "{e}");
    ex.inject(
        "GET",
        "/fapi/v2/positionRisk",
        Fault::Malformed { status: 200, body: r#"[{"symbol":"BTCUSDT"}]"#.into() },
        1,
    );
    let e = c.positions().await.unwrap_err();
    assert!(e.to_string().contains("[0]: missing field `positionAmt`"), "{e}");
    ex.inject(
        "GET",
        "/fapi/v1/exchangeInfo",
        Fault::Malformed {
            status: 200,
            body: r#"{"symbols":[{"symbol":"X","status":"TRADING","filters":[]}]}"#.into(),
        },
        1,
    );
    let e = c.exchange_info().await.unwrap_err();
    assert!(e.to_string().contains("X lacks a LOT_SIZE"), "{e}");
    ex.inject("GET", "/fapi/v2/balance", Fault::Malformed { status: 400, body: r#"{"unexpected":true}"#.into() }, 1);
    let e = c.balances().await.unwrap_err();
    assert!(e.to_string().contains("without an error code"), "{e}");
    ex.inject(
        "GET",
        "/fapi/v2/balance",
        Fault::Malformed { status: 400, body: r#"{"code":"-2015","msg":"x"}"#.into() },
        1,
    );
    let e = c.balances().await.unwrap_err();
    assert!(matches!(e, BinanceError::Malformed { .. }) && e.to_string().contains("not {code, msg}"), "{e}");
    ex.inject(
        "GET",
        "/fapi/v1/positionSide/dual",
        Fault::Malformed { status: 200, body: r#"{"dual":true}"#.into() },
        1,
    );
    let e = c.hedge_mode().await.unwrap_err();
    assert!(e.to_string().contains("dualSidePosition"), "the missing field is named: {e}");
    ex.inject("POST", "/fapi/v1/listenKey", Fault::Malformed { status: 200, body: r#"{"listenKey":7}"#.into() }, 1);
    let e = c.new_listen_key().await.unwrap_err();
    assert!(
        e.to_string().contains("POST /fapi/v1/listenKey") && e.to_string().contains("listenKey: invalid type"),
        "{e}"
    );
}

#[tokio::test]
async fn account_setup_calls_work() {
    let (ex, c) = setup().await;
    assert!(!c.hedge_mode().await.unwrap());
    ex.add_account("key-h", "secret-h", "100", true);
    assert!(client(&ex, "key-h", "secret-h").hedge_mode().await.unwrap());
    c.set_leverage("BTCUSDT", 5).await.unwrap();
    assert_eq!(c.set_leverage("BTCUSDT", 500).await.unwrap_err().code(), Some(-4028));
    c.set_margin_type("BTCUSDT", "ISOLATED").await.unwrap();
    c.set_margin_type("BTCUSDT", "ISOLATED").await.unwrap(); // -4046 "no need to change" is success
    let info = c.exchange_info().await.unwrap();
    assert_eq!(info["BTCUSDT"].step_size, d("0.001"));
    assert_eq!(c.mark_price("BTCUSDT").await.unwrap().mark_price, d("65000"));
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<StreamEvent>) -> StreamEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("stream event in time").expect("open")
}

#[tokio::test]
async fn the_user_stream_delivers_fills_and_reconnects_after_drops_and_expiry() {
    let (ex, c) = setup().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let cfg = StreamConfig {
        keepalive: Duration::from_millis(300),
        reconnect_min: Duration::from_millis(50),
        ..Default::default()
    };
    tokio::spawn(run_user_stream(c.clone(), cfg, tx));
    assert_eq!(next(&mut rx).await, StreamEvent::Connected);
    c.place_order(&buy("0.01", "kr-s")).await.unwrap();
    let mut saw_account = false;
    let mut saw_order = false;
    while !(saw_account && saw_order) {
        match next(&mut rx).await {
            StreamEvent::Account { update, .. } => {
                assert_eq!(update.positions[0].amount, d("0.01"));
                saw_account = true;
            }
            StreamEvent::Order { update, .. } => {
                assert_eq!(update.client_order_id, "kr-s");
                assert_eq!(update.execution_type, "TRADE");
                saw_order = true;
            }
            e => panic!("{e:?}"),
        }
    }
    ex.drop_streams();
    assert!(matches!(next(&mut rx).await, StreamEvent::Disconnected { .. }));
    assert_eq!(next(&mut rx).await, StreamEvent::Connected);
    ex.expire_listen_keys();
    assert!(matches!(next(&mut rx).await, StreamEvent::Disconnected { reason } if reason.contains("listenKeyExpired")));
    assert_eq!(next(&mut rx).await, StreamEvent::Connected);
    // Keep-alives go through on the new key.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ex.stream_count("key-a"), 1);
}

/// Issue 14, item 12: a network failure named no host ("error sending request"), so a user could not tell what was
/// unreachable. The error names the host and port and the cause below reqwest's words.
#[tokio::test]
async fn an_unreachable_exchange_is_named_in_the_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let rest = format!("http://127.0.0.1:{port}");
    let c = FuturesClient::new(ClientConfig::new(Network::Custom { rest, ws: format!("ws://127.0.0.1:{port}") }), None)
        .unwrap();
    let e = c.exchange_info().await.unwrap_err();
    assert!(matches!(e, BinanceError::Transport { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "the error names the host: {text}");
    assert!(text.contains("could not connect to"), "and says what failed: {text}");
}

/// The user-data stream's connection failure names the host it could not reach (never the path: the listenKey).
#[tokio::test]
async fn an_unreachable_stream_host_is_named() {
    let ex = MockExchange::start().await;
    ex.add_account("key-a", "secret-a", "10000", false);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cfg = ClientConfig::new(Network::Custom { rest: ex.rest_url(), ws: format!("ws://127.0.0.1:{port}") });
    let creds = Credentials { api_key: Secret::new("key-a"), api_secret: Secret::new("secret-a") };
    let c = FuturesClient::new(cfg, Some(creds)).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(run_user_stream(c, StreamConfig::default(), tx));
    let first = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.expect("a stream event").expect("open");
    match first {
        StreamEvent::Disconnected { reason } => {
            assert!(reason.contains(&format!("connect to 127.0.0.1:{port}")), "{reason}");
            assert!(!reason.contains("/ws/"), "the listenKey path is not shown: {reason}");
        }
        other => panic!("expected the failed connection, got {other:?}"),
    }
}
