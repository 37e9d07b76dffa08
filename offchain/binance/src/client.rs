//! The REST client: signing, server-time offset, request weight, rate-limit back-off, idempotent order placement.

use std::sync::Arc;
use std::time::Duration;

use kronos_common::{Decimal, Secret};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::filters::{parse_exchange_info, SymbolFilters};

/// `GET /fapi/v1/time`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerTime {
    server_time: u64,
}

/// `GET /fapi/v1/positionSide/dual`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PositionSideDual {
    dual_side_position: bool,
}

/// `POST /fapi/v1/listenKey`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListenKey {
    listen_key: String,
}

/// A refusal's body: `{"code": -2019, "msg": "Margin is insufficient."}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    msg: Option<String>,
}

/// What is wrong with an answer, with the field's path when it is not the whole answer (`[0].positionAmt: …`).
fn field_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    match e.path().to_string().as_str() {
        "." => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    }
}

/// The message of a 5xx/408 body, when it is Binance's JSON.
#[derive(Deserialize)]
struct ErrorMsg {
    msg: Option<String>,
}
use crate::types::{AlgoOrder, Balance, Order, OrderRequest, PositionRisk, PremiumIndex, StopRequest, Trade};

/// Where the client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Mainnet,
    Testnet,
    /// Any other base URLs (a local test server, a proxy).
    Custom {
        rest: String,
        ws: String,
    },
}

/// What a failed send was, naming the host it could not reach (never the path or query, which carry signatures) and
/// the causes below reqwest's "error sending request" (DNS, connection refused, TLS…).
pub(crate) fn send_failure(base_url: &str, e: reqwest::Error) -> String {
    send_failure_as(base_url, e, false)
}

/// [`send_failure`] of a request that may have reached the exchange (`may_have_arrived`: anything but a failed
/// connect): it may have been carried out, so it says the outcome is unknown rather than that the host could not be
/// reached.
pub(crate) fn send_failure_as(base_url: &str, e: reqwest::Error, may_have_arrived: bool) -> String {
    let host = url::Url::parse(base_url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| base_url.to_string());
    let what = if e.is_connect() {
        "could not connect to"
    } else if may_have_arrived && e.is_timeout() {
        "outcome unknown: sent, but no answer in time from"
    } else if may_have_arrived {
        "outcome unknown: sent, but the exchange's answer was lost from"
    } else if e.is_timeout() {
        "no answer from"
    } else {
        "could not reach"
    };
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        source = s.source();
    }
    format!("{what} {host} ({detail})")
}

impl Network {
    /// The REST base URL.
    pub fn rest_url(&self) -> &str {
        match self {
            Network::Mainnet => "https://fapi.binance.com",
            Network::Testnet => "https://testnet.binancefuture.com",
            Network::Custom { rest, .. } => rest,
        }
    }

    /// The WebSocket base URL for market and user-data streams.
    pub fn ws_url(&self) -> &str {
        match self {
            Network::Mainnet => "wss://fstream.binance.com",
            Network::Testnet => "wss://fstream.binancefuture.com",
            Network::Custom { ws, .. } => ws,
        }
    }

    /// A short name for logs and status views.
    pub fn name(&self) -> &str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Custom { .. } => "custom",
        }
    }
}

/// An API key and its secret. Both are [`Secret`]s: they never print and every log line is scrubbed of them.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub api_key: Secret,
    pub api_secret: Secret,
}

impl Credentials {
    /// Reads both values from the named environment variables; the error names the variable that is missing.
    pub fn from_env(key_var: &str, secret_var: &str) -> Result<Credentials, String> {
        let read = |v: &str| match std::env::var(v) {
            Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim().to_string())),
            Ok(_) => Err(format!("environment variable {v} is empty")),
            Err(_) => Err(format!("environment variable {v} is not set")),
        };
        Ok(Credentials { api_key: read(key_var)?, api_secret: read(secret_var)? })
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub network: Network,
    /// `recvWindow` sent with every signed request (Binance allows up to 60000; 5000 is its default).
    pub recv_window_ms: u64,
    /// Timeout of one HTTP request. A timed-out order has an unknown outcome and is resolved by a query.
    pub timeout: Duration,
    /// The account's request-weight limit per minute (2400 on USDⓈ-M Futures).
    pub weight_limit_1m: u32,
    /// Requests pause until the next minute once used weight passes this fraction of the limit.
    pub weight_pause_fraction: f64,
    /// A 429 whose `Retry-After` is at most this long is waited out and retried; longer ones are returned.
    pub max_retry_wait: Duration,
    /// How long an unknown order outcome may take to resolve before the client gives up (and reports it).
    pub resolve_timeout: Duration,
}

impl ClientConfig {
    pub fn new(network: Network) -> ClientConfig {
        ClientConfig {
            network,
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
            weight_limit_1m: 2400,
            weight_pause_fraction: 0.9,
            max_retry_wait: Duration::from_secs(30),
            resolve_timeout: Duration::from_secs(60),
        }
    }
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BinanceError {
    /// The exchange answered with an error code (`{"code":…,"msg":…}`): the request was rejected.
    #[error("{endpoint}: HTTP {http_status}, code {code}: {msg}")]
    Api { endpoint: String, http_status: u16, code: i64, msg: String },
    /// HTTP 429 with a `Retry-After` longer than the client waits on its own.
    #[error("{endpoint}: rate limited (HTTP 429), retry after {retry_after_s} s")]
    RateLimited { endpoint: String, retry_after_s: u64 },
    /// HTTP 418: the IP is banned. The client sends nothing until the ban ends.
    #[error("banned by the exchange (HTTP 418) until {until_ms} ms since epoch; every request is refused until then")]
    Banned { until_ms: u64 },
    /// The request may or may not have been executed (a timeout, or 503 "Unknown error…").
    #[error("{endpoint}: execution status unknown ({detail})")]
    Unknown { endpoint: String, detail: String, sent_timestamp_ms: u64 },
    /// The request never reached the exchange (connection refused, DNS…), so it was not executed.
    #[error("{endpoint}: not sent: {detail}")]
    Transport { endpoint: String, detail: String },
    /// The exchange answered something that is not the documented format.
    #[error("{endpoint}: malformed reply: {detail}; body: {body}")]
    Malformed { endpoint: String, detail: String, body: String },
    /// A signed endpoint was called without credentials.
    #[error("{endpoint}: needs API credentials, none configured")]
    NoCredentials { endpoint: String },
    /// An order's outcome is still unknown after queries (not found yet, or queries failing). Nothing was re-sent;
    /// it may still execute, so the caller keeps asking by its client id.
    #[error("order {client_order_id}: outcome still unknown after {waited_s} s of queries; nothing was re-sent")]
    Unresolved { client_order_id: String, waited_s: u64 },
}

impl BinanceError {
    /// The exchange error code, when there is one.
    pub fn code(&self) -> Option<i64> {
        match self {
            BinanceError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How a request is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Public market data.
    None,
    /// `X-MBX-APIKEY` only (the listenKey endpoints).
    ApiKey,
    /// `X-MBX-APIKEY`, `timestamp`, `recvWindow` and `signature`.
    Signed,
}

#[derive(Debug, Default)]
struct State {
    /// Server time minus local time, ms.
    offset_ms: i64,
    time_synced: bool,
    used_weight_1m: u32,
    weight_minute: u64,
    backoff_until_ms: u64,
    banned_until_ms: u64,
    requests: u64,
}

/// Counters for status views and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub requests: u64,
    pub used_weight_1m: u32,
    pub offset_ms: i64,
    pub banned_until_ms: u64,
    pub backoff_until_ms: u64,
}

/// A USDⓈ-M Futures REST client. Cheap to clone; clones share time offset, weight and ban state.
#[derive(Clone)]
pub struct FuturesClient {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
    creds: Option<Credentials>,
    state: Arc<Mutex<State>>,
}

fn now_ms() -> u64 {
    kronos_common::time::now_ms()
}

/// -1006 UNEXPECTED_RESP: "An unexpected response was received from the message bus. Execution status unknown."
pub const UNEXPECTED_RESP: i64 = -1006;
/// -1007 TIMEOUT: "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
pub const BACKEND_TIMEOUT: i64 = -1007;

fn encode(params: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

fn retry_after_s(headers: &reqwest::header::HeaderMap) -> u64 {
    headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(60)
}

impl FuturesClient {
    /// A client; `creds` may be `None` for public data only.
    pub fn new(cfg: ClientConfig, creds: Option<Credentials>) -> Result<FuturesClient, BinanceError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| BinanceError::Transport { endpoint: "client".into(), detail: e.to_string() })?;
        Ok(FuturesClient { http, cfg: Arc::new(cfg), creds, state: Arc::new(Mutex::new(State::default())) })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    /// The current request counters.
    pub fn stats(&self) -> ClientStats {
        let s = self.state.lock();
        ClientStats {
            requests: s.requests,
            used_weight_1m: s.used_weight_1m,
            offset_ms: s.offset_ms,
            banned_until_ms: s.banned_until_ms,
            backoff_until_ms: s.backoff_until_ms,
        }
    }

    /// The exchange's clock as this client estimates it (local clock plus the last measured offset).
    pub fn server_now_ms(&self) -> u64 {
        (now_ms() as i64 + self.state.lock().offset_ms).max(0) as u64
    }

    /// Measures the server-time offset from `GET /fapi/v1/time` (half the round trip is credited to each leg).
    pub async fn sync_time(&self) -> Result<i64, BinanceError> {
        // A direct call (not through `request`, which syncs the clock itself).
        let endpoint = "GET /fapi/v1/time".to_string();
        self.gate().await?;
        let url = format!("{}/fapi/v1/time", self.cfg.network.rest_url().trim_end_matches('/'));
        let t0 = now_ms();
        self.state.lock().requests += 1;
        let resp = self.http.get(url).send().await.map_err(|e| BinanceError::Transport {
            endpoint: endpoint.clone(),
            detail: send_failure(self.cfg.network.rest_url(), e),
        })?;
        let t1 = now_ms();
        self.note_weight(resp.headers());
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let server = serde_json::from_str::<ServerTime>(&body)
            .map_err(|e| BinanceError::Malformed {
                endpoint: endpoint.clone(),
                detail: format!("HTTP {}: {e}", status.as_u16()),
                body: body.chars().take(300).collect(),
            })?
            .server_time;
        let offset = server as i64 - ((t0 + t1) / 2) as i64;
        let mut s = self.state.lock();
        s.offset_ms = offset;
        s.time_synced = true;
        Ok(offset)
    }

    /// Waits out a back-off or a weight pause; refuses during a ban.
    async fn gate(&self) -> Result<(), BinanceError> {
        loop {
            let wait = {
                let s = self.state.lock();
                let now = now_ms();
                if s.banned_until_ms > now {
                    return Err(BinanceError::Banned { until_ms: s.banned_until_ms });
                }
                let minute = now / 60_000;
                let weight_pause = if s.weight_minute == minute
                    && s.used_weight_1m as f64 >= self.cfg.weight_limit_1m as f64 * self.cfg.weight_pause_fraction
                {
                    (minute + 1) * 60_000 - now
                } else {
                    0
                };
                s.backoff_until_ms.saturating_sub(now).max(weight_pause)
            };
            if wait == 0 {
                return Ok(());
            }
            tracing::warn!(wait_ms = wait, "binance: pausing requests (rate-limit back-off or weight near the limit)");
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    fn note_weight(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(w) =
            headers.get("x-mbx-used-weight-1m").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok())
        {
            let mut s = self.state.lock();
            s.used_weight_1m = w;
            s.weight_minute = now_ms() / 60_000;
        }
    }

    /// One REST call, decoded. Handles signing, -1021 (re-sync and retry once), 429 (wait `Retry-After` and retry
    /// when short), 418 (ban: refuse everything until it ends), 5xx/timeouts (unknown outcome for writes; retried for
    /// reads).
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: Vec<(String, String)>,
        security: Security,
        _weight: u32,
    ) -> Result<T, BinanceError> {
        let endpoint = format!("{method} {path}");
        let idempotent = method == Method::GET;
        if security != Security::None && self.creds.is_none() {
            return Err(BinanceError::NoCredentials { endpoint });
        }
        if security == Security::Signed && !self.state.lock().time_synced {
            self.sync_time().await?;
        }
        let mut resynced = false;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.gate().await?;
            let mut all = params.clone();
            let mut timestamp = 0;
            if security == Security::Signed {
                timestamp = self.server_now_ms();
                all.push(("recvWindow".into(), self.cfg.recv_window_ms.to_string()));
                all.push(("timestamp".into(), timestamp.to_string()));
                let payload = encode(&all);
                let sig = crate::sign(self.creds.as_ref().expect("checked").api_secret.expose(), &payload);
                all.push(("signature".into(), sig));
            }
            let encoded = encode(&all);
            let url = format!("{}{}", self.cfg.network.rest_url().trim_end_matches('/'), path);
            let in_body = method == Method::POST || method == Method::PUT;
            let mut rb = if in_body || encoded.is_empty() {
                self.http.request(method.clone(), &url)
            } else {
                self.http.request(method.clone(), format!("{url}?{encoded}"))
            };
            if in_body {
                rb = rb.header("content-type", "application/x-www-form-urlencoded").body(encoded.clone());
            }
            if let Some(c) = &self.creds {
                if security != Security::None {
                    rb = rb.header("X-MBX-APIKEY", c.api_key.expose());
                }
            }
            self.state.lock().requests += 1;
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    let connect = e.is_connect();
                    let detail = kronos_common::Redactor::global().redact(&send_failure_as(
                        self.cfg.network.rest_url(),
                        e,
                        !connect,
                    ));
                    if connect {
                        return Err(BinanceError::Transport { endpoint, detail });
                    }
                    if idempotent && attempts < 3 {
                        tokio::time::sleep(Duration::from_millis(200 * attempts as u64)).await;
                        continue;
                    }
                    return Err(BinanceError::Unknown { endpoint, detail, sent_timestamp_ms: timestamp });
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            self.note_weight(&headers);
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) => {
                    if idempotent && attempts < 3 {
                        continue;
                    }
                    return Err(BinanceError::Unknown {
                        endpoint,
                        detail: format!("reply body lost: {}", e.without_url()),
                        sent_timestamp_ms: timestamp,
                    });
                }
            };
            if status == StatusCode::IM_A_TEAPOT {
                let until = now_ms() + retry_after_s(&headers) * 1000;
                self.state.lock().banned_until_ms = until;
                tracing::error!(
                    until_ms = until,
                    "binance: IP banned (HTTP 418); all requests stop until the ban ends"
                );
                return Err(BinanceError::Banned { until_ms: until });
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let ra = retry_after_s(&headers);
                self.state.lock().backoff_until_ms = now_ms() + ra * 1000;
                tracing::warn!(retry_after_s = ra, endpoint = %endpoint, "binance: rate limited (HTTP 429)");
                if Duration::from_secs(ra) <= self.cfg.max_retry_wait && attempts < 4 {
                    continue; // the gate waits out Retry-After; a 429 was not executed
                }
                return Err(BinanceError::RateLimited { endpoint, retry_after_s: ra });
            }
            // 408 (a timeout waiting for the backend) and every 5xx leave a write's outcome unknown.
            if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                let msg = serde_json::from_str::<ErrorMsg>(&body)
                    .ok()
                    .and_then(|e| e.msg)
                    .unwrap_or_else(|| body.chars().take(200).collect());
                if idempotent && attempts < 3 {
                    tokio::time::sleep(Duration::from_millis(200 * attempts as u64)).await;
                    continue;
                }
                // 503 "Unknown error…" is documented as unknown; other 5xx are documented as failures, but a
                // write is still resolved by query rather than trusted, which is never wrong.
                return Err(BinanceError::Unknown {
                    endpoint,
                    detail: format!("HTTP {}: {msg}", status.as_u16()),
                    sent_timestamp_ms: timestamp,
                });
            }
            let value: Value = match serde_json::from_str(&body) {
                Ok(v) => v,
                Err(e) => {
                    return Err(BinanceError::Malformed {
                        endpoint,
                        detail: format!("not JSON ({e})"),
                        body: body.chars().take(300).collect(),
                    })
                }
            };
            if !status.is_success() {
                let refusal: ErrorBody = serde_json::from_value(value).map_err(|e| BinanceError::Malformed {
                    endpoint: endpoint.clone(),
                    detail: format!("HTTP {}: an error answer that is not {{code, msg}} ({e})", status.as_u16()),
                    body: body.chars().take(300).collect(),
                })?;
                let msg = refusal.msg.unwrap_or_default();
                let Some(code) = refusal.code else {
                    return Err(BinanceError::Malformed {
                        endpoint,
                        detail: format!("HTTP {} without an error code", status.as_u16()),
                        body: body.chars().take(300).collect(),
                    });
                };
                if code == UNEXPECTED_RESP || code == BACKEND_TIMEOUT {
                    // "Execution status unknown" (-1006 / -1007): not a rejection. Reads are retried; a write is
                    // resolved by query, never taken as refused.
                    if idempotent && attempts < 3 {
                        tokio::time::sleep(Duration::from_millis(200 * attempts as u64)).await;
                        continue;
                    }
                    return Err(BinanceError::Unknown {
                        endpoint,
                        detail: format!("HTTP {}, code {code}: {msg}", status.as_u16()),
                        sent_timestamp_ms: timestamp,
                    });
                }
                if code == -1021 && security == Security::Signed && !resynced {
                    resynced = true;
                    let off = self.sync_time().await?;
                    tracing::warn!(
                        offset_ms = off,
                        "binance: -1021 timestamp outside recvWindow; clock re-synced, retrying once"
                    );
                    continue; // a -1021 was rejected, so sending again is safe
                }
                return Err(BinanceError::Api { endpoint, http_status: status.as_u16(), code, msg });
            }
            return serde_path_to_error::deserialize(value).map_err(|e| BinanceError::Malformed {
                endpoint,
                detail: field_error(&e),
                body: body.chars().take(300).collect(),
            });
        }
    }

    // ---- market data -------------------------------------------------------------------------------------------

    /// Trading rules of every symbol.
    pub async fn exchange_info(&self) -> Result<std::collections::HashMap<String, SymbolFilters>, BinanceError> {
        let v: Value = self.request(Method::GET, "/fapi/v1/exchangeInfo", vec![], Security::None, 1).await?;
        parse_exchange_info(&v).map_err(|detail| BinanceError::Malformed {
            endpoint: "GET /fapi/v1/exchangeInfo".into(),
            detail,
            body: v.to_string().chars().take(300).collect(),
        })
    }

    /// Mark price of one symbol.
    pub async fn mark_price(&self, symbol: &str) -> Result<PremiumIndex, BinanceError> {
        self.request(Method::GET, "/fapi/v1/premiumIndex", vec![("symbol".into(), symbol.into())], Security::None, 1)
            .await
    }

    // ---- account -------------------------------------------------------------------------------------------------

    /// True in hedge mode (`dualSidePosition`), false in one-way mode.
    pub async fn hedge_mode(&self) -> Result<bool, BinanceError> {
        let v: PositionSideDual =
            self.request(Method::GET, "/fapi/v1/positionSide/dual", vec![], Security::Signed, 30).await?;
        Ok(v.dual_side_position)
    }

    /// Sets a symbol's initial leverage.
    pub async fn set_leverage(&self, symbol: &str, leverage: u32) -> Result<(), BinanceError> {
        let _: Value = self
            .request(
                Method::POST,
                "/fapi/v1/leverage",
                vec![("symbol".into(), symbol.into()), ("leverage".into(), leverage.to_string())],
                Security::Signed,
                1,
            )
            .await?;
        Ok(())
    }

    /// Sets a symbol's margin type (`ISOLATED` or `CROSSED`); "no need to change" (-4046) is success.
    pub async fn set_margin_type(&self, symbol: &str, margin_type: &str) -> Result<(), BinanceError> {
        let r: Result<Value, _> = self
            .request(
                Method::POST,
                "/fapi/v1/marginType",
                vec![("symbol".into(), symbol.into()), ("marginType".into(), margin_type.into())],
                Security::Signed,
                1,
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(-4046) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every position (zero positions included, as the endpoint returns them).
    pub async fn positions(&self) -> Result<Vec<PositionRisk>, BinanceError> {
        self.request(Method::GET, "/fapi/v2/positionRisk", vec![], Security::Signed, 5).await
    }

    /// Futures wallet balances.
    pub async fn balances(&self) -> Result<Vec<Balance>, BinanceError> {
        self.request(Method::GET, "/fapi/v2/balance", vec![], Security::Signed, 5).await
    }

    /// The wallet balance of one asset (zero when the account has none).
    pub async fn balance_of(&self, asset: &str) -> Result<Balance, BinanceError> {
        Ok(self.balances().await?.into_iter().find(|b| b.asset == asset).unwrap_or(Balance {
            asset: asset.into(),
            balance: Decimal::ZERO,
            available_balance: Decimal::ZERO,
            cross_un_pnl: Decimal::ZERO,
        }))
    }

    // ---- orders ----------------------------------------------------------------------------------------------------

    /// Places an order at most once. An unknown outcome (a timeout, 408, 5xx, -1006, -1007) is resolved by querying
    /// our `newClientOrderId` until the order shows up or the request's `recvWindow` has passed on the server's
    /// clock. An order that is still not found then is *not* sent again: client ids are unique only among open
    /// orders, so a market order that fills late and a resend under the same id would both execute. It is
    /// returned as [`BinanceError::Unresolved`], for the caller to keep querying.
    pub async fn place_order(&self, req: &OrderRequest) -> Result<Order, BinanceError> {
        let started = std::time::Instant::now();
        let r: Result<Order, _> = self.request(Method::POST, "/fapi/v1/order", req.params(), Security::Signed, 1).await;
        match r {
            Ok(o) => Ok(o),
            Err(BinanceError::Unknown { detail, sent_timestamp_ms, .. }) => {
                tracing::warn!(client_order_id = %req.client_order_id, %detail, "binance: order outcome unknown; resolving by query");
                let resolved = self
                    .resolve(sent_timestamp_ms, started, &req.client_order_id, || {
                        self.query_order(&req.symbol, &req.client_order_id)
                    })
                    .await;
                match resolved {
                    Ok(Some(o)) => Ok(o),
                    // The order went out: whatever stops the resolution (a ban, a 429, the resolve timeout) leaves
                    // its fate unknown, never "not placed".
                    Err(e) => {
                        tracing::warn!(client_order_id = %req.client_order_id, error = %e, "binance: order outcome unknown and its query failed; not re-sent");
                        Err(BinanceError::Unresolved {
                            client_order_id: req.client_order_id.clone(),
                            waited_s: started.elapsed().as_secs(),
                        })
                    }
                    Ok(None) => {
                        tracing::warn!(client_order_id = %req.client_order_id, "binance: order not found after its recvWindow; not re-sent (it may still fill)");
                        Err(BinanceError::Unresolved {
                            client_order_id: req.client_order_id.clone(),
                            waited_s: started.elapsed().as_secs(),
                        })
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Queries until an unknown outcome is known: `Some` when the order exists, `None` when it provably never will.
    async fn resolve<T, F, Fut>(
        &self,
        sent_timestamp_ms: u64,
        started: std::time::Instant,
        id: &str,
        query: F,
    ) -> Result<Option<T>, BinanceError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, BinanceError>>,
    {
        let expiry = sent_timestamp_ms + self.cfg.recv_window_ms;
        let mut delay = Duration::from_millis(100);
        loop {
            match query().await {
                Ok(o) => return Ok(Some(o)),
                Err(e) if e.code() == Some(-2013) => {
                    // Not there yet. It can still arrive until the request's recvWindow has passed on the server.
                    if self.server_now_ms() > expiry + 500 {
                        return Ok(None);
                    }
                }
                Err(BinanceError::Banned { until_ms }) => return Err(BinanceError::Banned { until_ms }),
                Err(e) => {
                    tracing::warn!(error = %e, "binance: query while resolving an unknown order failed; retrying")
                }
            }
            if started.elapsed() > self.cfg.resolve_timeout {
                return Err(BinanceError::Unresolved {
                    client_order_id: id.into(),
                    waited_s: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// One order by our client order id.
    pub async fn query_order(&self, symbol: &str, client_order_id: &str) -> Result<Order, BinanceError> {
        self.request(
            Method::GET,
            "/fapi/v1/order",
            vec![("symbol".into(), symbol.into()), ("origClientOrderId".into(), client_order_id.into())],
            Security::Signed,
            1,
        )
        .await
    }

    /// Our fills of one order (price, quantity, commission, realised PnL).
    pub async fn order_trades(&self, symbol: &str, order_id: i64) -> Result<Vec<Trade>, BinanceError> {
        self.request(
            Method::GET,
            "/fapi/v1/userTrades",
            vec![("symbol".into(), symbol.into()), ("orderId".into(), order_id.to_string())],
            Security::Signed,
            5,
        )
        .await
    }

    /// Open (regular) orders, of one symbol or all.
    pub async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, BinanceError> {
        let params = symbol.map(|s| vec![("symbol".to_string(), s.to_string())]).unwrap_or_default();
        self.request(
            Method::GET,
            "/fapi/v1/openOrders",
            params,
            Security::Signed,
            if symbol.is_some() { 1 } else { 40 },
        )
        .await
    }

    /// Cancels every open regular order of a symbol.
    pub async fn cancel_all_orders(&self, symbol: &str) -> Result<(), BinanceError> {
        let _: Value = self
            .request(
                Method::DELETE,
                "/fapi/v1/allOpenOrders",
                vec![("symbol".into(), symbol.into())],
                Security::Signed,
                1,
            )
            .await?;
        Ok(())
    }

    // ---- conditional (algo) orders: stops -----------------------------------------------------------------------

    /// Places a conditional order (a stop) through `POST /fapi/v1/algoOrder`, exactly once, resolved by
    /// `clientAlgoId` like [`FuturesClient::place_order`].
    pub async fn place_stop(&self, req: &StopRequest) -> Result<AlgoOrder, BinanceError> {
        let started = std::time::Instant::now();
        loop {
            let r: Result<AlgoOrder, _> =
                self.request(Method::POST, "/fapi/v1/algoOrder", req.params(), Security::Signed, 0).await;
            match r {
                Ok(o) => return Ok(o),
                Err(e) if e.code() == Some(-4116) => return self.query_stop(&req.client_algo_id).await,
                Err(BinanceError::Unknown { detail, sent_timestamp_ms, .. }) => {
                    tracing::warn!(client_algo_id = %req.client_algo_id, %detail, "binance: stop outcome unknown; resolving by query");
                    match self
                        .resolve(sent_timestamp_ms, started, &req.client_algo_id, || {
                            self.query_stop(&req.client_algo_id)
                        })
                        .await
                    {
                        Ok(Some(o)) => return Ok(o),
                        Ok(None) => continue,
                        // It went out: its fate is unknown, not "not placed".
                        Err(_) => {
                            return Err(BinanceError::Unresolved {
                                client_order_id: req.client_algo_id.clone(),
                                waited_s: started.elapsed().as_secs(),
                            })
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One conditional order by our client algo id.
    pub async fn query_stop(&self, client_algo_id: &str) -> Result<AlgoOrder, BinanceError> {
        self.request(
            Method::GET,
            "/fapi/v1/algoOrder",
            vec![("clientAlgoId".into(), client_algo_id.into())],
            Security::Signed,
            1,
        )
        .await
    }

    /// Open conditional orders, of one symbol or all.
    pub async fn open_stops(&self, symbol: Option<&str>) -> Result<Vec<AlgoOrder>, BinanceError> {
        let params = symbol.map(|s| vec![("symbol".to_string(), s.to_string())]).unwrap_or_default();
        self.request(Method::GET, "/fapi/v1/openAlgoOrders", params, Security::Signed, 1).await
    }

    /// Cancels one conditional order; one that is already gone (-2011 / -2013) counts as cancelled.
    pub async fn cancel_stop(&self, client_algo_id: &str) -> Result<(), BinanceError> {
        match self.cancel_stop_strict(client_algo_id).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.code(), Some(-2011) | Some(-2013)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Cancels one conditional order; one that is not open any more answers its error (-2011 / -2013), for the
    /// caller to find out whether it fired.
    pub async fn cancel_stop_strict(&self, client_algo_id: &str) -> Result<(), BinanceError> {
        let _: Value = self
            .request(
                Method::DELETE,
                "/fapi/v1/algoOrder",
                vec![("clientAlgoId".into(), client_algo_id.into())],
                Security::Signed,
                1,
            )
            .await?;
        Ok(())
    }

    // ---- user-data stream ---------------------------------------------------------------------------------------

    /// Starts (or extends) the account's user-data stream and returns its listenKey.
    pub async fn new_listen_key(&self) -> Result<String, BinanceError> {
        let v: ListenKey = self.request(Method::POST, "/fapi/v1/listenKey", vec![], Security::ApiKey, 1).await?;
        Ok(v.listen_key)
    }

    /// Keeps the user-data stream alive for another 60 minutes.
    pub async fn keepalive_listen_key(&self) -> Result<(), BinanceError> {
        let _: Value = self.request(Method::PUT, "/fapi/v1/listenKey", vec![], Security::ApiKey, 1).await?;
        Ok(())
    }

    /// Closes the user-data stream.
    pub async fn close_listen_key(&self) -> Result<(), BinanceError> {
        let _: Value = self.request(Method::DELETE, "/fapi/v1/listenKey", vec![], Security::ApiKey, 1).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kronos_binance_mock::{Fault, MockExchange};

    /// Audit of issue 14, L6: a request that was sent and then got no answer may have been carried out: its error
    /// says the outcome is unknown, never that the host "could not be reached".
    #[tokio::test]
    async fn a_sent_request_without_an_answer_says_its_outcome_is_unknown() {
        let ex = MockExchange::start().await;
        ex.add_account("k", "s", "1000", false);
        ex.inject_for(
            "k",
            "POST",
            "/fapi/v1/leverage",
            Fault::Timeout { executed: true, delay: Duration::from_secs(3) },
            1,
        );
        let mut cfg = ClientConfig::new(Network::Custom { rest: ex.rest_url(), ws: ex.ws_url() });
        cfg.timeout = Duration::from_millis(500);
        let c = FuturesClient::new(cfg, Some(Credentials { api_key: Secret::new("k"), api_secret: Secret::new("s") }))
            .unwrap();
        match c.set_leverage("BTCUSDT", 2).await {
            Err(BinanceError::Unknown { detail, .. }) => {
                assert!(detail.contains("outcome unknown") && !detail.contains("could not reach"), "{detail}")
            }
            other => panic!("expected an unknown outcome: {other:?}"),
        }
    }
}
