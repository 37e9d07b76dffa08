//! The limits that protect the keeper's API and the copy-trader's service (issue 13 item 9, issue 19): each one
//! against a real server on loopback with real clients (reqwest, tokio-tungstenite, raw TCP). Tests wait for
//! events (a counter, a gauge, a message) with a deadline, never for a fixed time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kronos_common::http_guard::{Guard, GuardMetrics, Limits};
use kronos_common::signals::SignalKind;
use kronos_common::Bus;
use kronos_keeper::api::ApiState;
use kronos_keeper::metrics::Metrics;
use kronos_keeper::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const DEADLINE: Duration = Duration::from_secs(20);

/// The keeper's API (its real router and server) on a free loopback port.
struct Api {
    addr: SocketAddr,
    bus: Bus,
    metrics: Arc<Metrics>,
}

impl Api {
    fn guard(&self) -> &GuardMetrics {
        &self.metrics.guard
    }

    fn ws(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap()
    }

    fn publish(&self, kind: &str, detail: String) {
        self.bus.publish("test", SignalKind::RiskEvent { kind: kind.into(), detail });
    }
}

async fn keeper_api(limits: Limits) -> Api {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let bus = Bus::new(4096);
    let metrics = Arc::new(Metrics::default());
    let state = ApiState::new(store, bus.clone(), metrics.clone(), vec![], vec![], None, limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(kronos_keeper::api::serve(listener, state, std::future::pending()));
    Api { addr, bus, metrics }
}

async fn wait_until<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let t = std::time::Instant::now();
    while !cond().await {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket handshake with these extra headers: the socket, or the refusal's status and body.
async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(r)) => Err((
            r.status().as_u16(),
            r.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default(),
        )),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// The next text message of the socket that is not a `lagged` note, within the deadline.
async fn next_signal(ws: &mut Ws) -> serde_json::Value {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] != "lagged" {
                        return v;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("the stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a signal within the deadline")
}

/// Issue 13 item 9: the N+1th WebSocket subscriber is refused with a 503 that says why; a closed one frees its place.
#[tokio::test]
async fn the_websocket_subscriber_cap_refuses_the_next_one_with_503() {
    let api = keeper_api(Limits { max_ws_subscribers: 2, ..Limits::default() }).await;
    let mut a = ws_connect(&api.ws(""), &[]).await.unwrap();
    let _b = ws_connect(&api.ws(""), &[]).await.unwrap();
    let Err((status, body)) = ws_connect(&api.ws(""), &[]).await else { panic!("the third subscriber was admitted") };
    assert_eq!(status, 503);
    assert!(body.contains("maximum of 2 WebSocket subscribers"), "{body}");
    assert_eq!(api.guard().refused("ws_subscribers"), 1);
    assert!(api.metrics_text().await.contains("kronos_http_refused_total{reason=\"ws_subscribers\"} 1"));
    // The two admitted ones are served.
    api.publish("cap", "one".into());
    assert_eq!(next_signal(&mut a).await["kind"], "cap");
    // Closing one gives its place back.
    a.close(None).await.unwrap();
    wait_until("the closed subscriber's place is free", || async { api.guard().ws_subscribers.get() == 1 }).await;
    let _c = ws_connect(&api.ws(""), &[]).await.expect("a place is free again");
}

/// Issue 19: open connections are capped; the one beyond the cap is answered 503 and closed.
#[tokio::test]
async fn the_connection_cap_answers_503_beyond_it() {
    let api = keeper_api(Limits { max_connections: 3, ..Limits::default() }).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(api.addr).await.unwrap());
    }
    wait_until("three open connections", || async { api.guard().connections.get() == 3 }).await;
    let r = reqwest::get(api.url("/health")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = r.text().await.unwrap();
    assert!(body.contains("maximum of 3 open connections"), "{body}");
    assert_eq!(api.guard().refused("connections"), 1);
    // A WebSocket over the cap gets the same answer.
    assert_eq!(ws_connect(&api.ws(""), &[]).await.err().unwrap().0, 503);
    held.pop();
    wait_until("a connection closed", || async { api.guard().connections.get() == 2 }).await;
    assert_eq!(reqwest::get(api.url("/health")).await.unwrap().status(), 200);
}

/// Issue 13 item 9 / issue 19: a reader that never reads (a small socket buffer) is dropped once one send has waited
/// for the send timeout, counted as `ws_slow_reader`; a normal subscriber keeps receiving all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_dropped_after_the_send_timeout_while_others_keep_receiving() {
    let api = keeper_api(Limits { ws_send_timeout: Duration::from_millis(300), ..Limits::default() }).await;
    // The slow reader: a 4 KiB receive buffer, and it never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(api.addr).await.unwrap();
    let (_slow, _) = tokio_tungstenite::client_async(api.ws(""), stream).await.unwrap();
    // The normal reader passes on the kind of every signal it gets.
    let mut normal = ws_connect(&api.ws(""), &[]).await.unwrap();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(Ok(m)) = normal.next().await {
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                let _ = tx.send(v["kind"].as_str().unwrap_or("lagged").to_string());
            }
        }
    });
    wait_until("two subscribers", || async { api.guard().ws_subscribers.get() == 2 }).await;
    let t = std::time::Instant::now();
    let big = "x".repeat(4096);
    let mut batch = 0;
    while api.guard().dropped("ws_slow_reader") == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the slow reader was never dropped");
        batch += 1;
        for _ in 0..100 {
            api.publish("load", big.clone());
        }
        api.publish(&format!("batch-{batch}"), String::new());
        // The normal reader gets each batch while the slow one holds its send.
        let want = format!("batch-{batch}");
        tokio::time::timeout(DEADLINE, async {
            while let Some(k) = seen.recv().await {
                if k == want {
                    return;
                }
            }
            panic!("the normal reader's stream ended");
        })
        .await
        .expect("the normal reader receives every batch");
    }
    wait_until("the slow reader's place is given back", || async { api.guard().ws_subscribers.get() == 1 }).await;
    api.publish("after", String::new());
    tokio::time::timeout(DEADLINE, async {
        while let Some(k) = seen.recv().await {
            if k == "after" {
                return;
            }
        }
    })
    .await
    .expect("the normal reader still receives after the slow one was dropped");
    assert_eq!(api.guard().dropped("ws_slow_reader"), 1);
    assert!(api.metrics_text().await.contains("kronos_http_dropped_total{reason=\"ws_slow_reader\"} 1"));
}

/// Issue 13 item 9: an incoming message above the limit (64 MiB were accepted before) closes the socket with 1009;
/// a small one does not.
#[tokio::test]
async fn an_oversized_incoming_message_closes_the_socket() {
    let api = keeper_api(Limits::default()).await;
    let mut ws = ws_connect(&api.ws(""), &[]).await.unwrap();
    ws.send(Message::text("x".repeat(1024))).await.unwrap();
    api.publish("still-open", String::new());
    assert_eq!(next_signal(&mut ws).await["kind"], "still-open");
    // 64 KiB, four times the default limit of 16 KiB.
    let _ = ws.send(Message::text("x".repeat(64 * 1024))).await;
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return Some(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the server closes the socket");
    assert!(matches!(end, Some(Some(1009)) | None), "{end:?}");
    assert_eq!(api.guard().dropped("ws_oversized"), 1);
    wait_until("the subscriber's place is free", || async { api.guard().ws_subscribers.get() == 0 }).await;
}

/// Issue 13 item 9: a browser page from an origin not allowed is refused the WebSocket (403); an allowed origin and
/// a client without `Origin` (CLI, curl, the copy-trader) pass; reads from any origin pass (CORS guards those).
#[tokio::test]
async fn a_foreign_origin_is_refused_the_websocket_of_the_keeper() {
    let api = keeper_api(Limits { allowed_origins: vec!["https://dash.example".into()], ..Limits::default() }).await;
    let (status, body) = ws_connect(&api.ws(""), &[("origin", "https://evil.example")]).await.err().unwrap();
    assert_eq!(status, 403);
    assert!(body.contains("origin https://evil.example is not allowed"), "{body}");
    assert_eq!(ws_connect(&api.ws(""), &[("origin", "null")]).await.err().unwrap().0, 403);
    let mut good = ws_connect(&api.ws(""), &[("origin", "https://dash.example")]).await.unwrap();
    let mut none = ws_connect(&api.ws(""), &[]).await.unwrap();
    api.publish("origin", String::new());
    assert_eq!(next_signal(&mut good).await["kind"], "origin");
    assert_eq!(next_signal(&mut none).await["kind"], "origin");
    let r = reqwest::Client::new().get(api.url("/api/markets")).header("origin", "https://evil.example");
    assert_eq!(r.send().await.unwrap().status(), 200);
    assert_eq!(api.guard().refused("origin"), 2);
}

/// The copy-trader's service on a free port with a control token, under `limits`; its store and metrics.
async fn copytrader(limits: Limits) -> (SocketAddr, kronos_copytrade::Handles) {
    let store = kronos_copytrade::Store::connect("sqlite::memory:").await.unwrap();
    let handles = kronos_copytrade::Handles {
        status: Default::default(),
        metrics: Arc::new(kronos_copytrade::metrics::Metrics::new()),
        control: kronos_copytrade::Control::new(store.clone()),
        store,
        bus: Bus::new(64),
        control_token: Some(kronos_common::Secret::new(CT_TOKEN)),
    };
    let (addr, _) = kronos_copytrade::run::serve_with(handles.clone(), "127.0.0.1:0", limits).await.unwrap();
    (addr, handles)
}

const CT_TOKEN: &str = "copytrader-control-token-0123";

/// Whether the copy-trader's control state asks for the emergency stop.
async fn stop_asked(h: &kronos_copytrade::Handles) -> bool {
    kronos_copytrade::control::load(&h.store).await.unwrap().emergency_asked()
}

/// Issue 13 item 9: the copy-trader's emergency stop and `/ws` refuse a foreign browser origin (403), even with the
/// token; an allowed origin and no origin pass.
#[tokio::test]
async fn a_foreign_origin_is_refused_the_copytraders_emergency_stop_and_websocket() {
    let (addr, h) =
        copytrader(Limits { allowed_origins: vec!["https://dash.example".into()], ..Limits::default() }).await;
    let http = reqwest::Client::new();
    let stop = |origin: Option<&str>| {
        let mut r = http.post(format!("http://{addr}/api/emergency-stop")).bearer_auth(CT_TOKEN);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = stop(Some("https://evil.example")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(!stop_asked(&h).await, "a refused stop changes nothing");
    assert_eq!(stop(Some("https://dash.example")).await.unwrap().status(), 202);
    kronos_copytrade::control::append(&h.store, &kronos_copytrade::ControlCommand::Resume, "test").await.unwrap();
    assert_eq!(stop(None).await.unwrap().status(), 202);
    assert!(stop_asked(&h).await);
    let ws = format!("ws://{addr}/ws");
    assert_eq!(ws_connect(&ws, &[("origin", "https://evil.example")]).await.err().unwrap().0, 403);
    ws_connect(&ws, &[("origin", "https://dash.example")]).await.unwrap();
    ws_connect(&ws, &[]).await.unwrap();
    assert_eq!(h.metrics.guard.refused("origin"), 2);
    let m = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(m.contains("kronos_copytrade_http_refused_total{reason=\"origin\"} 2"), "{m}");
}

/// Issue 19: a body above the limit is refused with 413 before any handler runs, by its declared length.
#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let (addr, h) = copytrader(Limits { max_body_bytes: 1024, ..Limits::default() }).await;
    let http = reqwest::Client::new();
    let post = |n: usize| {
        http.post(format!("http://{addr}/api/emergency-stop")).bearer_auth(CT_TOKEN).body(vec![b'x'; n]).send()
    };
    let r = post(4096).await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("at most 1024 bytes"));
    assert!(!stop_asked(&h).await);
    assert_eq!(post(100).await.unwrap().status(), 202);
    // A declared length of 1 GiB is refused at once, without the body being sent.
    let api = keeper_api(Limits::default()).await;
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(b"POST /api/markets HTTP/1.1\r\nhost: x\r\ncontent-length: 1073741824\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    assert_eq!(h.metrics.guard.refused("body_too_large") + api.guard().refused("body_too_large"), 2);
}

/// Issue 19: each address has a token bucket; beyond it, 429 with `Retry-After` in seconds. Another address is not
/// limited by the first one's requests, and the first passes again after the time it was told.
#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let api = keeper_api(Limits { rate_per_s: 1, rate_burst: 3, ..Limits::default() }).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(http.get(api.url("/api/markets")).send().await.unwrap().status(), 200);
    }
    let r = http.get(api.url("/api/markets")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(wait, 1);
    assert!(r.text().await.unwrap().contains("1 per second per address"));
    // The WebSocket handshake is a request like any other.
    assert_eq!(ws_connect(&api.ws(""), &[]).await.err().unwrap().0, 429);
    // Another client address (127.0.0.2 is loopback too) has its own bucket.
    let other = reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build();
    assert_eq!(other.unwrap().get(api.url("/health")).send().await.unwrap().status(), 200);
    let t = std::time::Instant::now();
    wait_until("a token again", || async { http.get(api.url("/api/markets")).send().await.unwrap().status() == 200 })
        .await;
    assert!(t.elapsed() <= Duration::from_millis(wait * 1000 + 500), "{:?}", t.elapsed());
    assert!(api.guard().refused("rate_limited") >= 2);
    // (This client is still limited: read the exposition in process.)
    let m = api.metrics.encode();
    assert!(m.contains("kronos_http_refused_total{reason=\"rate_limited\"}"), "{m}");
}

/// Issue 19: a request that takes longer than the request timeout is answered 503; slow and idle clients are
/// closed (the head timeout, the idle timeout).
#[tokio::test]
async fn the_request_head_and_idle_timeouts_fire() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    let guard = Guard::new(limits, GuardMetrics::default());
    let app = guard.layer(
        axum::Router::new()
            .route("/never", axum::routing::get(std::future::pending::<&'static str>))
            .route("/now", axum::routing::get(|| async { "now" })),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = guard.clone();
    tokio::spawn(async move { g.serve(listener, app, std::future::pending()).await });
    let r = reqwest::get(format!("http://{addr}/never")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("took longer than 200 ms"));
    assert_eq!(guard.metrics().refused("timeout"), 1);
    assert_eq!(reqwest::get(format!("http://{addr}/now")).await.unwrap().status(), 200);

    // A head sent a byte at a time (under the idle timeout each time) is cut off by the head timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /now HTTP/1.1\r\n").await.unwrap();
    let t = std::time::Instant::now();
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // hyper may answer 408 first
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if s.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, closed).await.expect("the slow head is cut off");
    assert!(t.elapsed() < Duration::from_millis(1500), "the head timeout, not the idle one: {:?}", t.elapsed());

    // An HTTP connection that sends nothing is closed by the head timeout too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await.expect("the idle connection is closed");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

/// A WebSocket client that sends nothing, not even the pong to the server's pings, is closed after the idle
/// timeout; one that reads (and so answers the pings) stays.
#[tokio::test]
async fn a_silent_websocket_is_closed_after_the_idle_timeout() {
    let api = keeper_api(Limits { idle_timeout: Duration::from_millis(1500), ..Limits::default() }).await;
    let _silent = ws_connect(&api.ws(""), &[]).await.unwrap();
    let mut live = ws_connect(&api.ws(""), &[]).await.unwrap();
    // The live one reads all along (tungstenite answers each ping with a pong as it reads).
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(Ok(m)) = live.next().await {
            if let Message::Text(t) = m {
                let _ = tx.send(t.to_string());
            }
        }
    });
    wait_until("the silent WebSocket is dropped", || async { api.guard().dropped("idle") == 1 }).await;
    wait_until("its place is free", || async { api.guard().ws_subscribers.get() == 1 }).await;
    api.publish("alive", String::new());
    let t = tokio::time::timeout(DEADLINE, got.recv()).await.unwrap().expect("the live one is still connected");
    assert!(t.contains("alive"), "{t}");
    assert_eq!(api.guard().dropped("idle"), 1);
}

/// The Telegram bot's HTTP service (health, metrics, webhook) is under the same guard, with room for webhook
/// updates: a declared body above 1 MiB is refused (413), a foreign origin's POST too (403); counted on its /metrics.
#[tokio::test]
async fn the_telegram_bots_http_service_is_guarded() {
    let dir = tempfile::tempdir().unwrap();
    // Variables only this test reads.
    std::env::set_var("KT_LIMITS_TG_TOKEN", "123:limits-test-token");
    std::env::set_var("KT_LIMITS_TG_SECRET", "limits-test-webhook-secret");
    let text = format!(
        "[telegram]\ntoken_env = \"KT_LIMITS_TG_TOKEN\"\napi_url = \"http://127.0.0.1:9\"\nmode = \"webhook\"\n\
         webhook_url = \"https://bot.example/tg/hook\"\nwebhook_secret_env = \"KT_LIMITS_TG_SECRET\"\n\
         state_file = \"{}/state.json\"\n[telegram.allow]\ncontrol = [1]\n",
        dir.path().display()
    );
    let cfg = kronos_telegram::Config::parse("t.toml", &text).unwrap();
    let bot = kronos_telegram::TelegramBot::new(cfg, kronos_telegram::Backend::new(None, None, None)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = bot.router().into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let hook = |n: usize| {
        format!(
            "POST /tg/hook HTTP/1.1\r\nhost: x\r\nx-telegram-bot-api-secret-token: limits-test-webhook-secret\r\n\
             content-length: {n}\r\n\r\n"
        )
    };
    let status = |req: String, body: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(DEADLINE, s.read_exact(&mut head)).await.unwrap().unwrap();
        String::from_utf8_lossy(&head[9..]).to_string()
    };
    assert_eq!(status(hook(2 * 1024 * 1024), vec![]).await, "413");
    // A 600 KiB update passes the guard (the handler answers it; not a valid update, so not 413 either way).
    assert_ne!(status(hook(600 * 1024), vec![b' '; 600 * 1024]).await, "413");
    let foreign = hook(2).replace("host: x\r\n", "host: x\r\norigin: https://evil.example\r\n");
    assert_eq!(status(foreign, b"{}".to_vec()).await, "403");
    let m = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(m.contains("kronos_telegram_http_refused_total{reason=\"body_too_large\"} 1"), "{m}");
    assert!(m.contains("kronos_telegram_http_refused_total{reason=\"origin\"} 1"), "{m}");
}

/// Audit H2: a `/ws?types=` filter names known signal types only (400 naming the bad one), at most 32 names in at
/// most 1 KiB (a 64 KiB `a,a,a,…` is refused before anything is kept); an accepted filter is served as asked.
#[tokio::test]
async fn a_websocket_type_filter_is_checked_and_bounded() {
    let api = keeper_api(Limits::default()).await;
    let Err((status, body)) = ws_connect(&api.ws("?types=risk_event,nope"), &[]).await else {
        panic!("an unknown type was accepted")
    };
    assert_eq!(status, 400);
    assert!(body.contains("\"nope\" is not a signal type"), "{body}");
    let many = vec!["risk_event"; 33].join(",");
    let Err((status, body)) = ws_connect(&api.ws(&format!("?types={many}")), &[]).await else {
        panic!("33 names were accepted")
    };
    assert_eq!(status, 400);
    assert!(body.contains("more than 32 names"), "{body}");
    let huge = vec!["a"; 30_000].join(",");
    let Err((status, body)) = ws_connect(&api.ws(&format!("?types={huge}")), &[]).await else {
        panic!("a 60 KB filter was accepted")
    };
    assert_eq!(status, 400);
    assert!(body.contains("at most 1024"), "{body}");
    assert_eq!(api.guard().ws_subscribers.get(), 0, "no refused filter holds a place");
    // Duplicates count once; the subscriber gets its type only.
    let mut ws = ws_connect(&api.ws("?types=risk_event,risk_event"), &[]).await.unwrap();
    wait_until("the subscriber is in place", || async { api.guard().ws_subscribers.get() == 1 }).await;
    api.bus.publish("test", SignalKind::TxFailed { chain: "c".into(), action: "a".into(), error: "e".into() });
    api.publish("wanted", String::new());
    let got = next_signal(&mut ws).await;
    assert_eq!((got["type"].as_str(), got["kind"].as_str()), (Some("risk_event"), Some("wanted")));
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2 is a second client address).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// A raw `GET path` on `s`: the status line's code and the whole answer.
async fn raw_get(mut s: TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

/// Audit H3: one client address may hold at most `max_connections_per_ip` connections (503 beyond, counted
/// `connections_per_ip`); another address is not affected, and a closed connection gives its place back.
#[tokio::test]
async fn connections_per_address_are_capped_and_other_addresses_are_not_affected() {
    let api = keeper_api(Limits { max_connections_per_ip: 2, ..Limits::default() }).await;
    let mut held = vec![connect_from("127.0.0.1", api.addr).await, connect_from("127.0.0.1", api.addr).await];
    wait_until("two open connections", || async { api.guard().connections.get() == 2 }).await;
    let (code, text) = raw_get(connect_from("127.0.0.1", api.addr).await, "/health").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("your address has its maximum of 2 open connections"), "{text}");
    assert_eq!(api.guard().refused("connections_per_ip"), 1);
    assert_eq!(api.guard().refused("connections"), 0);
    let (code, text) = raw_get(connect_from("127.0.0.2", api.addr).await, "/health").await;
    assert_eq!(code, 200, "another address is served: {text}");
    held.pop();
    wait_until("a connection closed", || async { api.guard().connections.get() == 1 }).await;
    let (code, text) = raw_get(connect_from("127.0.0.1", api.addr).await, "/health").await;
    assert_eq!(code, 200, "{text}");
}

/// Audit H3: one client address may hold at most `max_ws_per_ip` WebSocket subscriptions (503 beyond, counted
/// `ws_per_ip`); another address is not affected.
#[tokio::test]
async fn websocket_subscribers_per_address_are_capped() {
    let api = keeper_api(Limits { max_ws_per_ip: 1, ..Limits::default() }).await;
    let _a = ws_connect(&api.ws(""), &[]).await.unwrap();
    let Err((status, body)) = ws_connect(&api.ws(""), &[]).await else { panic!("a second subscriber was admitted") };
    assert_eq!(status, 503);
    assert!(body.contains("maximum of 1 WebSocket subscriptions"), "{body}");
    assert_eq!(api.guard().refused("ws_per_ip"), 1);
    assert!(api.metrics_text().await.contains("kronos_http_refused_total{reason=\"ws_per_ip\"} 1"));
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(connect_from("127.0.0.2", api.addr).await);
    let (mut b, _) = tokio_tungstenite::client_async(api.ws(""), tcp).await.expect("another address subscribes");
    wait_until("two subscribers", || async { api.guard().ws_subscribers.get() == 2 }).await;
    api.publish("per-ip", String::new());
    assert_eq!(next_signal(&mut b).await["kind"], "per-ip");
}

/// Audit M5: a client that asks for a large answer and never reads it (a tiny receive buffer) is dropped once a write
/// has waited `write_timeout` (counted `write_stall`), and its connection's place is given back.
#[tokio::test]
async fn a_client_that_stops_reading_a_response_is_dropped_after_the_write_timeout() {
    let metrics = GuardMetrics::default();
    let limits = Limits { write_timeout: Duration::from_millis(300), ..Limits::default() };
    let guard = Guard::new(limits, metrics.clone());
    // Larger than what the kernel's buffers on both sides can hold (a few MiB on loopback).
    let big = axum::body::Bytes::from(vec![b'x'; 64 << 20]);
    let app = axum::Router::new().route("/big", axum::routing::get(move || async move { big.clone() }));
    let app = guard.layer(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { guard.serve(listener, app, std::future::pending()).await });
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    wait_until("the stalled connection is dropped", || async { metrics.dropped("write_stall") == 1 }).await;
    wait_until("its place is given back", || async { metrics.connections.get() == 0 }).await;
    drop(s);
}

/// Audit L1: requests with the copy-trader's control token are not rate-limited: a page that drains the address's
/// bucket with plain GETs cannot have the emergency stop answered 429; a wrong token is limited like none.
#[tokio::test]
async fn the_bearer_token_s_holder_is_not_rate_limited() {
    let (addr, h) = copytrader(Limits { rate_per_s: 1, rate_burst: 2, ..Limits::default() }).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let mut limited = false;
    for _ in 0..10 {
        if http.get(url("/api/status")).send().await.unwrap().status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the bucket was drained");
    let mut wrong_limited = false;
    for _ in 0..10 {
        let r = http.post(url("/api/emergency-stop")).bearer_auth("not-the-token").send().await.unwrap();
        if r.status() == 429 {
            wrong_limited = true;
            break;
        }
        assert_eq!(r.status(), 401);
    }
    assert!(wrong_limited, "a wrong token is rate-limited");
    // Twenty at once: without the exemption all but a refilled token or two would be 429.
    for _ in 0..20 {
        let r = http.post(url("/api/emergency-stop")).bearer_auth(CT_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    assert!(stop_asked(&h).await);
}

/// A raw `GET path` to `addr` naming `host` in `Host`: the status code.
async fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&out).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Audit M6 (DNS rebinding): a service on loopback answers a GET naming another host 421 (counted `host`); IP
/// addresses and localhost pass, so do real clients (reqwest, tokio-tungstenite) and configured names.
#[tokio::test]
async fn a_get_naming_a_foreign_host_is_refused_on_loopback() {
    let api = keeper_api(Limits { allowed_hosts: vec!["dash.example.com".into()], ..Limits::default() }).await;
    assert_eq!(get_with_host(api.addr, "/metrics", "attacker.example").await, 421);
    assert_eq!(get_with_host(api.addr, "/metrics", &format!("attacker.example:{}", api.addr.port())).await, 421);
    assert_eq!(api.guard().refused("host"), 2);
    assert_eq!(get_with_host(api.addr, "/metrics", &api.addr.to_string()).await, 200);
    assert_eq!(get_with_host(api.addr, "/health", "localhost").await, 200);
    assert_eq!(get_with_host(api.addr, "/health", "dash.example.com:443").await, 200);
    assert_eq!(reqwest::get(api.url("/health")).await.unwrap().status(), 200);
    ws_connect(&api.ws(""), &[]).await.expect("tokio-tungstenite names the address");
    assert_eq!(api.guard().refused("host"), 2);
    let (addr, _h) = copytrader(Limits::default()).await;
    assert_eq!(get_with_host(addr, "/api/status", "attacker.example").await, 421);
    assert_eq!(get_with_host(addr, "/api/status", &addr.to_string()).await, 200);
}
