//! The dApp served alone in front of a keeper's API (`kronos web`): the embedded page with the same bytes and headers
//! (Content-Security-Policy, ETag, `no-cache`) as the keeper's own listener serves from [`crate::web`]. The page
//! talks to this origin only (its Content-Security-Policy allows nothing else): `/api/…` and `/health` are forwarded
//! to the keeper, and `/ws` is relayed from the keeper's `/ws`, so the keeper needs no browser origin of its own for
//! this server's page.
//!
//! Trust: the page asks the wallet to send bets to the market contract `/api/chains` names, and that answer comes
//! from another host. So the server checks it: each chain's market address against the one pinned for its chain id
//! (`--market CHAIN_ID=ADDRESS`, from the deployment the operator trusts); a mismatch refuses the whole answer (502,
//! naming the chain and both addresses), and each chain is marked for the page: `address_check` = `pinned` (checked)
//! or `unverified` (no pin for that chain id: the page says so on the market page). The page further checks, through
//! the wallet, that the address holds a market with the keeper's clock and stake token before it sends anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use kronos_common::http_guard::{Guard, GuardMetrics, Limits, RawLimits};

/// What the standalone server serves and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The keeper's API (`http://host:port`, as `kronos run` listens).
    pub api: url::Url,
    /// Where to serve the page.
    pub listen: SocketAddr,
    /// Browser origins the page is opened from, allowed to open its `/ws`; empty: `http://<listen>` (and
    /// `http://localhost:<port>` on a loopback address).
    pub origins: Vec<String>,
    /// The market contract expected on each chain id (`--market`); `/api/chains` is checked against them.
    pub pins: Pins,
}

/// The market contract address expected on each chain id.
pub type Pins = BTreeMap<u64, alloy::primitives::Address>;

/// One chain's pin: its chain id and the market contract expected there.
pub type Pin = (u64, alloy::primitives::Address);

/// One `--market CHAIN_ID=ADDRESS` pin.
pub fn parse_pin(s: &str) -> Result<Pin> {
    let (id, addr) = s.split_once('=').with_context(|| format!("--market '{s}': expected CHAIN_ID=ADDRESS"))?;
    let id = id.trim().parse().with_context(|| format!("--market '{s}': '{id}' is not a chain id"))?;
    let addr = addr.trim().parse().with_context(|| format!("--market '{s}': '{addr}' is not an address"))?;
    Ok((id, addr))
}

/// The standalone dApp server, bound to its address ([`Standalone::bind`]) and not yet serving.
pub struct Standalone {
    listener: tokio::net::TcpListener,
    limits: Limits,
    api: url::Url,
    pins: Pins,
}

impl Standalone {
    /// Checks the options (an http(s) `api` with a host, valid origins) and binds `listen`.
    pub async fn bind(o: Options) -> Result<Standalone> {
        let limits = checked_limits(&o)?;
        let listener = tokio::net::TcpListener::bind(o.listen)
            .await
            .with_context(|| format!("kronos web: cannot listen on {}", o.listen))?;
        Ok(Standalone { listener, limits, api: o.api, pins: o.pins })
    }

    /// The address it listens on (the port chosen when `listen` asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let guard = Guard::new(self.limits, GuardMetrics::default());
        let mut up =
            Upstream::new(self.api, reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?);
        up.pins = std::sync::Arc::new(self.pins);
        guard.serve(self.listener, router(&guard, up), shutdown).await?;
        Ok(())
    }
}

/// The guard's limits for `o`: its origins (or the defaults for its listen address); refuses an `api` that is not
/// an http(s) URL with a host.
fn checked_limits(o: &Options) -> Result<Limits> {
    anyhow::ensure!(
        matches!(o.api.scheme(), "http" | "https") && o.api.host().is_some(),
        "--api must be the keeper's http(s)://host:port, not '{}'",
        o.api
    );
    let mut origins = o.origins.clone();
    if origins.is_empty() {
        origins.push(format!("http://{}", o.listen));
        if o.listen.ip().is_loopback() {
            origins.push(format!("http://localhost:{}", o.listen.port()));
        }
    }
    RawLimits { allowed_origins: Some(origins), ..Default::default() }
        .validate("web")
        .map_err(|(_, m)| anyhow::anyhow!("--origin: {m}"))
}

#[derive(Clone)]
struct Upstream {
    api: url::Url,
    http: reqwest::Client,
    /// The `/ws` relay's limits, the guard's own (set by [`router`]): the largest message taken from the browser or
    /// from the keeper, and how long one send to the browser may take before the reader is dropped.
    ws_max_message: usize,
    ws_send_timeout: std::time::Duration,
    /// What `/api/chains`' market addresses are checked against.
    pins: std::sync::Arc<Pins>,
}

impl Upstream {
    fn new(api: url::Url, http: reqwest::Client) -> Self {
        let d = Limits::default();
        Upstream {
            api,
            http,
            ws_max_message: d.ws_max_message_bytes,
            ws_send_timeout: d.ws_send_timeout,
            pins: Default::default(),
        }
    }
}

fn router(guard: &Guard, mut up: Upstream) -> Router {
    up.ws_max_message = guard.limits().ws_max_message_bytes;
    up.ws_send_timeout = guard.limits().ws_send_timeout;
    let r = Router::new()
        .route("/", get(crate::web::index))
        .route("/assets/app.js", get(crate::web::app_js))
        .route("/assets/style.css", get(crate::web::style_css))
        .route("/health", get(forward))
        .route("/api/{*rest}", get(forward))
        .route("/ws", get(relay))
        .with_state(up);
    guard.layer(r)
}

/// Forwards a GET to the keeper (path and query as they came, appended to `--api` so a path prefix is kept), with its
/// status and body. The keeper is another host: only JSON comes back (an answer with a body of another type is
/// refused), always as `application/json` with `nosniff`, a CSP that allows nothing and no framing, so nothing it
/// sends can run as a page of this origin. Paths with `.`/`..` segments (plain or percent-encoded) are refused.
async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Some(url) = upstream_url(&up.api, pq) else { return (StatusCode::BAD_REQUEST, "bad path\n").into_response() };
    match up.http.get(url).send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let json = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
            let body: Bytes = r.bytes().await.unwrap_or_default();
            let chains = req.uri().path() == "/api/chains" && status.is_success();
            let mut out = if chains && json == Some(true) {
                match check_chains(&body, &up.pins) {
                    Ok(b) => (status, b).into_response(),
                    Err(e) => (StatusCode::BAD_GATEWAY, serde_json::json!({ "error": e }).to_string()).into_response(),
                }
            } else if json == Some(true) || body.is_empty() {
                (status, body).into_response()
            } else {
                (StatusCode::BAD_GATEWAY, "{\"error\":\"the keeper answered something other than JSON\"}")
                    .into_response()
            };
            let h = out.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            );
            out
        }
        Err(e) => {
            (StatusCode::BAD_GATEWAY, format!("the keeper's API at {} does not answer: {e}\n", up.api)).into_response()
        }
    }
}

/// `/api/chains`' body with each chain's market address checked against `pins`: every chain marked
/// `"address_check": "pinned"` (its address is the one pinned for its chain id) or `"unverified"` (no pin for it); an
/// address other than the pinned one, or a body that is not a list of chains, is an error naming what is wrong.
fn check_chains(body: &[u8], pins: &Pins) -> std::result::Result<Bytes, String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the keeper's /api/chains is not JSON: {e}"))?;
    let chains =
        v.get_mut("chains").and_then(|c| c.as_array_mut()).ok_or("the keeper's /api/chains has no list of chains")?;
    for c in chains {
        let obj = c.as_object_mut().ok_or("the keeper's /api/chains lists a chain that is not an object")?;
        let id = obj.get("chain_id").and_then(|x| x.as_u64());
        let check = match id.and_then(|id| pins.get(&id).map(|p| (id, p))) {
            Some((id, pinned)) => {
                let named = obj.get("market").and_then(|x| x.as_str()).unwrap_or("");
                if named.parse::<alloy::primitives::Address>().ok() != Some(*pinned) {
                    return Err(format!(
                        "the keeper names market contract '{named}' on chain id {id}, not the pinned {pinned:#x}: refused"
                    ));
                }
                "pinned"
            }
            None => "unverified",
        };
        obj.insert("address_check".into(), check.into());
    }
    serde_json::to_vec(&v).map(Bytes::from).map_err(|e| e.to_string())
}

/// `--api` with `pq` appended (not `Url::join`, which would drop a path prefix such as `https://host/kronos`);
/// `None` for a path with a `.` or `..` segment, plain or percent-encoded, or an encoded slash.
fn upstream_url(api: &url::Url, pq: &str) -> Option<url::Url> {
    let path = pq.split('?').next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return None;
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return None;
    }
    format!("{}{pq}", api.as_str().trim_end_matches('/')).parse().ok()
}

/// Relays the keeper's `/ws` (same query) to the browser, one way.
async fn relay(State(up): State<Upstream>, req: Request) -> Response {
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let (mut parts, _) = req.into_parts();
    let ws = match <WebSocketUpgrade as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &()).await
    {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let mut target = up.api.clone();
    let scheme = if up.api.scheme() == "https" { "wss" } else { "ws" };
    if target.set_scheme(scheme).is_err() {
        return (StatusCode::BAD_GATEWAY, "the keeper's URL cannot take a WebSocket\n").into_response();
    }
    let target = format!("{}ws{query}", target.as_str().trim_end_matches('/').to_string() + "/");
    let (max, timeout) = (up.ws_max_message, up.ws_send_timeout);
    // The browser's side takes control frames only: a larger message closes the socket (1009), as on the keeper.
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| pump(socket, target, timeout))
}

/// Relays the keeper's signals to the browser. A browser that does not take a message within `send_timeout` is
/// dropped (it would otherwise hold this task and its connection for good); a keeper message over `1 MiB` ends the
/// relay (a keeper's signal is a few hundred bytes).
async fn pump(mut socket: WebSocket, target: String, send_timeout: std::time::Duration) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let Ok((upstream, _)) = tokio_tungstenite::connect_async_with_config(target.as_str(), Some(config), false).await
    else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    let (_tx, mut rx) = upstream.split();
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    match tokio::time::timeout(send_timeout, socket.send(Message::Text(t.as_str().into()))).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Some(Ok(_)) => {}
                _ => { let _ = socket.send(Message::Close(None)).await; return; }
            },
            m = socket.recv() => if !matches!(m, Some(Ok(_))) { return; },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in keeper behind a path prefix `/k`: `/api/markets`, an `/api/page` that answers HTML, and a `/ws` that
    /// sends one signal.
    async fn upstream() -> SocketAddr {
        async fn ws(up: WebSocketUpgrade) -> Response {
            up.on_upgrade(|mut s| async move {
                let _ = s.send(Message::Text("{\"type\":\"round_locked\"}".into())).await;
                while let Some(Ok(_)) = s.recv().await {}
            })
        }
        let app = Router::new()
            .route(
                "/k/api/markets",
                get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"markets\":[]}") }),
            )
            .route(
                "/k/api/page",
                get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<script>alert(1)</script>") }),
            )
            .route(
                "/k/api/chains",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        format!("{{\"chains\":[{{\"chain_id\":10,\"market\":\"{A}\"}}]}}"),
                    )
                }),
            )
            .route("/k/ws", get(ws));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn serves_the_page_and_forwards_the_api_and_the_signals() {
        let keeper = upstream().await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let origin = format!("http://{addr}");
        let limits =
            RawLimits { allowed_origins: Some(vec![origin.clone()]), ..Default::default() }.validate("web").unwrap();
        let guard = Guard::new(limits, GuardMetrics::default());
        let mut up = Upstream::new(format!("http://{keeper}/k/").parse().unwrap(), reqwest::Client::new());
        up.pins = std::sync::Arc::new(Pins::from([(10, B.parse().unwrap())]));
        let app = router(&guard, up);
        tokio::spawn(async move { guard.serve(l, app, std::future::pending()).await.unwrap() });

        let page = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(page.headers()["content-security-policy"], crate::web::CSP);
        assert!(page.text().await.unwrap().contains("/assets/app.js"));
        let js = reqwest::get(format!("http://{addr}/assets/app.js")).await.unwrap();
        assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
        let m = reqwest::get(format!("http://{addr}/api/markets")).await.unwrap();
        assert_eq!(m.headers()["content-type"], "application/json");
        assert_eq!(m.headers()["x-content-type-options"], "nosniff");
        assert_eq!(m.headers()["x-frame-options"], "DENY");
        assert_eq!(m.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
        assert_eq!(m.text().await.unwrap(), "{\"markets\":[]}", "forwarded under the --api path prefix /k");
        let chains = reqwest::get(format!("http://{addr}/api/chains")).await.unwrap();
        assert_eq!(chains.status(), 502, "a market address other than the pinned one is refused");
        assert!(chains.text().await.unwrap().contains("not the pinned"));
        let html = reqwest::get(format!("http://{addr}/api/page")).await.unwrap();
        assert_eq!(html.status(), 502, "an HTML answer of the keeper is refused");
        assert_eq!(html.headers()["content-type"], "application/json");
        assert!(!html.text().await.unwrap().contains("<script>"));
        // Traversal out of /api, sent raw (an HTTP client would normalise the dots away).
        for path in [
            "/api/../../k/api/markets",
            "/api/%2e%2e/%2e%2e/k/api/markets",
            "/api/%2E%2E/x",
            "/api/.%2e/x",
            "/api/a%2f..%2fb",
        ] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 400"), "{path} is refused: {answer}");
        }
        assert!(
            upstream_url(&"https://h/kronos".parse().unwrap(), "/api/markets?x=1").unwrap().as_str()
                == "https://h/kronos/api/markets?x=1"
        );
        let missing = reqwest::get(format!("http://{addr}/api/nothing")).await.unwrap();
        assert_eq!(missing.status(), 404, "the keeper's status comes through");

        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/ws?types=round_locked").into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first.into_text().unwrap().as_str(), "{\"type\":\"round_locked\"}");
        // A message over the relay's limit (16 KiB by default) from the browser closes it (axum's default was 64 MiB).
        use futures::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Text("x".repeat(64 * 1024).into())).await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an oversized message from the browser closes the relay");
        let mut foreign = format!("ws://{addr}/ws").into_client_request().unwrap();
        foreign.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
        assert!(tokio_tungstenite::connect_async(foreign).await.is_err(), "a foreign origin is refused");
    }

    const A: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
    const B: &str = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";

    /// Each chain of `/api/chains` is marked checked against its pin, or unverified without one; another address
    /// than the pinned one (in any letter case the same address passes) refuses the answer.
    #[test]
    fn chain_addresses_are_checked_against_the_pins() {
        let body =
            format!("{{\"chains\":[{{\"chain_id\":10,\"market\":\"{A}\"}},{{\"chain_id\":8453,\"market\":\"{B}\"}}]}}");
        let marks = |pins: &Pins| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_slice(&check_chains(body.as_bytes(), pins).unwrap()).unwrap();
            v["chains"].as_array().unwrap().iter().map(|c| c["address_check"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(marks(&Pins::new()), ["unverified", "unverified"]);
        let pins = Pins::from([(10, A.to_uppercase().replace("0X", "0x").parse().unwrap())]);
        assert_eq!(marks(&pins), ["pinned", "unverified"]);
        let e = check_chains(body.as_bytes(), &Pins::from([(8453, A.parse().unwrap())])).unwrap_err();
        assert_eq!(e, format!("the keeper names market contract '{B}' on chain id 8453, not the pinned {A}: refused"));
        assert!(check_chains(b"{\"markets\":[]}", &Pins::new()).unwrap_err().contains("no list of chains"));
        assert!(check_chains(b"not json", &Pins::new()).unwrap_err().contains("not JSON"));
        assert_eq!(parse_pin("10=0x5FbDB2315678afecb367f032d93F642f64180aa3").unwrap(), (10, A.parse().unwrap()));
        assert!(parse_pin("10:0x5f").unwrap_err().to_string().contains("expected CHAIN_ID=ADDRESS"));
        assert!(parse_pin("ten=0x5f").is_err() && parse_pin("10=0x5f").is_err());
    }

    #[test]
    fn options_are_checked_and_origins_default_to_the_listen_address() {
        let o = |api: &str, listen: &str, origins: &[&str]| Options {
            api: api.parse().unwrap(),
            listen: listen.parse().unwrap(),
            origins: origins.iter().map(|s| s.to_string()).collect(),
            pins: Pins::new(),
        };
        let l = checked_limits(&o("http://127.0.0.1:9464", "127.0.0.1:9480", &[])).unwrap();
        assert_eq!(l.allowed_origins, vec!["http://127.0.0.1:9480".to_string(), "http://localhost:9480".to_string()]);
        let l = checked_limits(&o("http://10.0.0.2:9464", "0.0.0.0:8080", &[])).unwrap();
        assert_eq!(l.allowed_origins, vec!["http://0.0.0.0:8080".to_string()], "no localhost off loopback");
        let l = checked_limits(&o("https://k.example/kronos", "127.0.0.1:1", &["https://dapp.example.com"])).unwrap();
        assert_eq!(l.allowed_origins, vec!["https://dapp.example.com".to_string()]);
        let e = checked_limits(&o("ws://127.0.0.1:9464", "127.0.0.1:9480", &[])).unwrap_err().to_string();
        assert!(e.starts_with("--api must be the keeper's http(s)://host:port"), "{e}");
        let e = checked_limits(&o("http://127.0.0.1:9464", "127.0.0.1:9480", &["not an origin"])).unwrap_err();
        assert!(e.to_string().starts_with("--origin: "), "{e}");
    }
}
