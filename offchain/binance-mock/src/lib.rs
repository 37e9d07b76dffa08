//! A local exchange that speaks the Binance USDⓈ-M Futures wire format, for tests and benchmarks.
//!
//! REST under `/fapi/…` and the user-data stream under `/ws/<listenKey>`, on loopback. It checks what the real
//! venue checks, as documented: `X-MBX-APIKEY` (-2014/-2015), the HMAC-SHA256 `signature` over the query string
//! followed by the body (-1022), the timing rule `timestamp < serverTime + 1000 && serverTime - timestamp <=
//! recvWindow` (-1021) and `recvWindow <= 60000` (-1131), symbol filters (-1111, -4164), duplicate client order ids
//! (-4116), reduce-only (-2022), immediately-triggering stops (-2021). It keeps one simulated account per API key
//! ([`kronos_binance::sim::SimAccount`]: market fills at the mark price with the taker fee, close-position stops on
//! the mark) and pushes `ORDER_TRADE_UPDATE`, `ACCOUNT_UPDATE` and `ALGO_UPDATE` to that account's streams.
//! Every reply carries `X-MBX-USED-WEIGHT-1M`; passing the weight limit answers 429 with `Retry-After`.
//!
//! Faults are injected per endpoint: -1021, 429 with `Retry-After`, 418, 503 "Unknown error…" after executing or
//! without executing, a reply delayed past the client's timeout (executed or not), any documented `{code, msg}`
//! answer (408/-1007 and -1006 "execution status unknown", executed or not; rejections such as -2019), an order
//! that executes after its recvWindow (a late fill), malformed bodies, stream drops. Client order ids are unique
//! only among open orders, and one close-position stop per direction is allowed (-4130), as on the venue.
//!
//! Scope: MARKET orders and STOP_MARKET conditional orders, close-position or reduce-only with a quantity (`quantity`
//! with `closePosition`, or `reduceOnly` with either `closePosition` or hedge mode, answers -1106 as documented) —
//! what Kronos sends. Other order types
//! are refused with the venue's code for an invalid order type.
//!
//! [`lead::SimLead`] is a simulated lead trader on one account (a deterministic rule on candle closes), and
//! `kronos exchange serve` runs the exchange as a program, replaying real BTC candles into the mark price.

pub mod lead;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kronos_binance::sim::{Fill, Reject, SimAccount, Triggered};
use kronos_binance::types::{AlgoOrder, Order, OrderRequest, Side, StopRequest};
use kronos_binance::{filters::parse_exchange_info, SymbolFilters};
use kronos_common::http_guard::{Guard, GuardMetrics, Limits};
use kronos_common::{Decimal, Rounding};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The documented message of a 503 whose outcome is unknown.
pub const UNKNOWN_503: &str = "Unknown error, please check your request or try again later.";

/// A fault to inject into the next matching request(s).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Reply -1021 (timestamp outside recvWindow) without executing.
    Timestamp,
    /// Reply 429 with `Retry-After` without executing.
    RateLimit { retry_after_s: u64 },
    /// Reply 418 with `Retry-After` (a ban) without executing.
    Ban { retry_after_s: u64 },
    /// Reply 503 "Unknown error…", after executing the request when `executed`.
    Unknown503 { executed: bool },
    /// Hold the reply for `delay` (past the client's timeout), after executing when `executed`.
    Timeout { executed: bool, delay: Duration },
    /// Reply this status and raw body without executing.
    Malformed { status: u16, body: String },
    /// Reply `{"code":code,"msg":msg}` with this HTTP status, after executing the request when `executed`: a
    /// rejection (-2019 margin is insufficient, `executed: false`) or a documented "execution status unknown" (HTTP
    /// 408 with -1007, -1006), which may come either way.
    Answer { status: u16, code: i64, msg: String, executed: bool },
    /// Reply 503 "Unknown error…" at once without executing; the order reaches the matching engine `delay` later
    /// and executes then (after its recvWindow, when `delay` is longer), as a request stuck in the venue's backend.
    LateFill { delay: Duration },
    /// The market moves: the mark of `symbol` becomes `price` (stops it crosses fire) just before the request is
    /// handled as usual — a race between the venue and the request.
    MarkFirst { symbol: String, price: String },
    /// Hold the reply until `gate` is opened ([`Gate::open`]), after executing the request when `executed`: a slow
    /// request whose end the test decides on an event, not on a delay.
    Held { executed: bool, gate: Gate },
}

/// Where a [`Fault::Held`] reply waits: shut until [`Gate::open`] (opened before the request arrives, it lets the
/// request through at once). Clones share the gate.
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Lets every reply held at this gate go, now and later.
    pub fn open(&self) {
        self.0.close();
    }

    async fn passed(&self) {
        // Never granted a permit: it resolves (with an error) once the gate is opened (closed).
        let _ = self.0.acquire().await;
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// -1007 as documented (HTTP 408).
pub const BACKEND_TIMEOUT_MSG: &str =
    "Timeout waiting for response from backend server. Send status unknown; execution status unknown.";
/// -1006 as documented.
pub const UNEXPECTED_RESP_MSG: &str =
    "An unexpected response was received from the message bus. Execution status unknown.";

#[derive(Debug, Clone)]
struct FaultRule {
    method: Method,
    path: String,
    /// Only requests carrying this API key (any request when `None`).
    api_key: Option<String>,
    fault: Fault,
    remaining: u32,
    /// Matching requests to let through untouched before the fault applies.
    skip: u32,
}

/// One order request the exchange received (for assertions: no duplicates, and for delay measurements).
#[derive(Debug, Clone)]
pub struct OrderLog {
    pub at: Instant,
    pub api_key: String,
    pub path: String,
    pub client_id: String,
    pub symbol: String,
    pub side: String,
    pub quantity: String,
    /// Whether the exchange executed it (false for rejected or fault-dropped requests).
    pub executed: bool,
    pub error_code: Option<i64>,
}

/// One event pushed on a user-data stream.
#[derive(Debug, Clone)]
pub struct PushLog {
    pub at: Instant,
    pub api_key: String,
    pub event_type: String,
    pub symbol: String,
}

struct Account {
    secret: String,
    sim: SimAccount,
}

struct Inner {
    accounts: HashMap<String, Account>,
    filters: HashMap<String, SymbolFilters>,
    info: Value,
    marks: HashMap<String, Decimal>,
    clock_offset_ms: i64,
    faults: Vec<FaultRule>,
    weight_limit: u32,
    weight_used: u32,
    weight_minute: u64,
    listen_keys: HashMap<String, String>,
    streams: HashMap<String, Vec<mpsc::UnboundedSender<Option<String>>>>,
    order_log: Vec<OrderLog>,
    /// Requests held back by [`Fault::LateFill`] that have not executed yet.
    late_pending: u32,
    push_log: VecDeque<PushLog>,
    key_seq: u64,
    /// A position that goes flat leaves its stops that carry a quantity listed (only close-position ones expire):
    /// [`MockExchange::keep_quantity_stops_on_close`].
    keep_quantity_stops: bool,
}

/// The running exchange. Cheap to clone.
#[derive(Clone)]
pub struct MockExchange {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
}

fn now_ms() -> i64 {
    kronos_common::time::now_ms() as i64
}

fn d(s: &str) -> Decimal {
    s.parse().expect("literal decimal")
}

/// The default symbols: BTCUSDT and ETHUSDT with the venue's usual filters.
pub fn default_exchange_info() -> Value {
    let sym = |s: &str, tick: &str, step: &str, min_notional: &str| {
        json!({"symbol": s, "pair": s, "contractType": "PERPETUAL", "status": "TRADING", "baseAsset": &s[..s.len() - 4],
        "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120", "stepSize": step},
            {"filterType": "MIN_NOTIONAL", "notional": min_notional}
        ]})
    };
    json!({"timezone": "UTC", "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200}],
        "symbols": [sym("BTCUSDT", "0.10", "0.001", "100"), sym("ETHUSDT", "0.01", "0.001", "20")]})
}

fn err_body(code: i64, msg: &str) -> Value {
    json!({"code": code, "msg": msg})
}

fn weight_of(method: &Method, path: &str, params: &HashMap<String, String>) -> u32 {
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/exchangeInfo") => 1,
        ("GET", "/fapi/v2/positionRisk") | ("GET", "/fapi/v2/balance") | ("GET", "/fapi/v1/userTrades") => 5,
        ("GET", "/fapi/v1/positionSide/dual") => 30,
        ("GET", "/fapi/v1/openOrders") if !params.contains_key("symbol") => 40,
        ("POST", "/fapi/v1/algoOrder") => 0,
        _ => 1,
    }
}

enum Sec {
    None,
    Key,
    Signed,
}

/// One REST request as the gateway read it: the signed query string and form body as sent (the signature covers
/// them), and the parameters parsed from both.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    body: &'a str,
    headers: &'a HeaderMap,
    params: &'a HashMap<String, String>,
}

fn security(method: &Method, path: &str) -> Sec {
    match (method.as_str(), path) {
        ("GET", "/fapi/v1/time") | ("GET", "/fapi/v1/exchangeInfo") | ("GET", "/fapi/v1/premiumIndex") => Sec::None,
        (_, "/fapi/v1/listenKey") => Sec::Key,
        _ => Sec::Signed,
    }
}

fn parse_params(raw: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect()
}

/// Removes `signature=…` from a raw parameter string, returning what was signed and the signature.
fn split_signature(raw: &str) -> (String, Option<String>) {
    let mut kept = Vec::new();
    let mut sig = None;
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = part.strip_prefix("signature=") {
            sig = Some(v.to_string());
        } else {
            kept.push(part);
        }
    }
    (kept.join("&"), sig)
}

/// The limits it serves under ([`kronos_common::http_guard`]): the services' defaults except that it has its own
/// Binance-style request weight instead of a per-address rate, keeps quiet connections open (its user-data streams
/// send no pings, and clients may sit idle between test steps), never cuts a request short (a held reply is a fault
/// under test) and takes up to 1 MiB bodies.
pub fn limits() -> Limits {
    Limits {
        rate_per_s: 0,
        // Every client of the mock is on loopback.
        max_connections_per_ip: 0,
        max_ws_per_ip: 0,
        header_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(24 * 3600),
        max_body_bytes: 1024 * 1024,
        // A held reply (`Fault::Timeout`) is the fault under test: the guard never answers 503 in its place.
        request_timeout: Duration::from_secs(24 * 3600),
        ..Limits::default()
    }
}

impl MockExchange {
    /// Starts on an ephemeral loopback port with the default symbols and marks BTCUSDT 65000, ETHUSDT 3500.
    pub async fn start() -> MockExchange {
        MockExchange::start_on("127.0.0.1:0").await.expect("bind loopback")
    }

    /// Starts on `listen` (`host:port`; port 0 picks a free one) with the default symbols and marks BTCUSDT 65000,
    /// ETHUSDT 3500. The error names the address that could not be bound.
    pub async fn start_on(listen: &str) -> std::io::Result<MockExchange> {
        let info = default_exchange_info();
        let filters = parse_exchange_info(&info).expect("default exchange info parses");
        let inner = Inner {
            accounts: HashMap::new(),
            filters,
            info,
            marks: HashMap::from([("BTCUSDT".to_string(), d("65000")), ("ETHUSDT".to_string(), d("3500"))]),
            clock_offset_ms: 0,
            faults: Vec::new(),
            weight_limit: 2400,
            weight_used: 0,
            weight_minute: 0,
            listen_keys: HashMap::new(),
            streams: HashMap::new(),
            order_log: Vec::new(),
            late_pending: 0,
            push_log: VecDeque::new(),
            key_seq: 0,
            keep_quantity_stops: false,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("binding the local exchange to {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let ex = MockExchange { inner: Arc::new(Mutex::new(inner)), addr };
        let app = Router::new().route("/ws/{key}", get(ws_handler)).fallback(rest_handler).with_state(ex.clone());
        let guard = Guard::new(limits(), GuardMetrics::default());
        let app = guard.layer(app);
        tokio::spawn(async move {
            let _ = guard.serve(listener, app, std::future::pending()).await;
        });
        Ok(ex)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port>`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Opens an account for an API key with a USDT wallet.
    pub fn add_account(&self, api_key: &str, secret: &str, wallet: &str, hedge_mode: bool) {
        let mut sim = SimAccount::new("USDT", d(wallet), d("0.0005"));
        sim.hedge_mode = hedge_mode;
        self.inner.lock().accounts.insert(api_key.to_string(), Account { secret: secret.to_string(), sim });
    }

    /// A copy of an account's state.
    pub fn account(&self, api_key: &str) -> SimAccount {
        self.inner.lock().accounts.get(api_key).map(|a| a.sim.clone()).expect("unknown account")
    }

    /// The current mark price of a symbol.
    pub fn mark(&self, symbol: &str) -> Decimal {
        self.inner.lock().marks.get(symbol).copied().unwrap_or_default()
    }

    /// Moves a mark price; stops it crosses fire (and their fills are pushed).
    pub fn set_mark(&self, symbol: &str, price: &str) {
        let mut g = self.inner.lock();
        let mark = d(price);
        g.marks.insert(symbol.to_string(), mark);
        let keys: Vec<String> = g.accounts.keys().cloned().collect();
        for key in keys {
            let fired = g.accounts.get_mut(&key).expect("account").sim.on_mark(symbol, mark, now_ms());
            for t in fired {
                push_trigger(&mut g, &key, &t);
            }
        }
    }

    /// Sets the status of an account's stop as the venue does while the stop works (pushed on its stream), filling
    /// nothing: TRIGGERED with the position still open is a stop whose close is on its way. False when there is
    /// no such stop.
    pub fn set_stop_status(
        &self,
        api_key: &str,
        client_algo_id: &str,
        status: kronos_binance::types::AlgoStatus,
    ) -> bool {
        let mut g = self.inner.lock();
        let Some(acc) = g.accounts.get_mut(api_key) else { return false };
        let Some(a) = acc.sim.set_stop_status(client_algo_id, status, now_ms()) else { return false };
        push_algo(&mut g, api_key, &a);
        true
    }

    /// From now on, a position closed by an order leaves its stops that carry a quantity (reduce-only) listed, as the
    /// venue can: only its close-position stops expire with it (by default every stop of the symbol does).
    pub fn keep_quantity_stops_on_close(&self, keep: bool) {
        self.inner.lock().keep_quantity_stops = keep;
    }

    /// Auto-deleverages an account's one-way position in `symbol`: closes it at the mark as the venue's ADL does
    /// (the fill pushed on the account's stream like any other) and — unlike a close the account sends — leaves its
    /// stops listed, as a stop that carries a quantity can outlive its position. Returns the quantity closed.
    pub fn deleverage(&self, api_key: &str, symbol: &str) -> Result<Decimal, String> {
        let mut g = self.inner.lock();
        let mark = g.marks.get(symbol).copied().ok_or_else(|| format!("no mark for {symbol}"))?;
        let acc = g.accounts.get_mut(api_key).ok_or_else(|| format!("no account for API key {api_key}"))?;
        let qty = acc.sim.position(symbol, "BOTH").amount;
        if qty.is_zero() {
            return Err(format!("no {symbol} position to deleverage"));
        }
        let side = if qty.is_negative() { Side::Buy } else { Side::Sell };
        let req = OrderRequest {
            reduce_only: true,
            ..OrderRequest::market(symbol, side, qty.abs(), format!("adl-{}", now_ms()))
        };
        let fill = acc.sim.place_market(&req, mark, now_ms()).map_err(|r| format!("{}: {}", r.code, r.msg))?;
        push_fill(&mut g, api_key, &fill);
        Ok(qty)
    }

    /// Places a MARKET order for an account as if it had arrived over REST (same checks, same fill at the mark, same
    /// stream pushes, recorded in the order log): how a simulated trader acts on the exchange. Returns the filled
    /// order, or the venue's `{code, msg}` rejection as text.
    pub fn trade(
        &self,
        api_key: &str,
        symbol: &str,
        side: Side,
        qty: Decimal,
        client_id: &str,
    ) -> Result<Order, String> {
        let mut g = self.inner.lock();
        if !g.accounts.contains_key(api_key) {
            return Err(format!("no account for API key {api_key}"));
        }
        let params = HashMap::from([
            ("symbol".to_string(), symbol.to_string()),
            ("side".to_string(), side_str(side).to_string()),
            ("type".to_string(), "MARKET".to_string()),
            ("quantity".to_string(), qty.to_string()),
            ("newClientOrderId".to_string(), client_id.to_string()),
        ]);
        let r = self.new_order(&mut g, api_key, &params, 0);
        let ok = r.status().is_success();
        g.order_log.push(OrderLog {
            at: Instant::now(),
            api_key: api_key.to_string(),
            path: "/fapi/v1/order".into(),
            client_id: client_id.to_string(),
            symbol: symbol.to_string(),
            side: side_str(side).to_string(),
            quantity: qty.to_string(),
            executed: ok,
            error_code: (!ok).then_some(0),
        });
        let order = g.accounts[api_key].sim.order(client_id).cloned();
        match order {
            Some(o) if ok => Ok(o),
            _ => Err(format!("{symbol} {} {qty} refused (HTTP {})", side_str(side), r.status().as_u16())),
        }
    }

    /// Shifts the exchange's clock against the local one (to exercise time sync and -1021).
    pub fn set_clock_offset(&self, ms: i64) {
        self.inner.lock().clock_offset_ms = ms;
    }

    /// Sets the request-weight limit per minute.
    pub fn set_weight_limit(&self, limit: u32) {
        self.inner.lock().weight_limit = limit;
    }

    /// Injects `fault` into the next `times` requests to `method path`, from any account.
    pub fn inject(&self, method: &str, path: &str, fault: Fault, times: u32) {
        self.inject_rule(None, method, path, fault, times);
    }

    /// Injects `fault` into the next `times` requests to `method path` carrying `api_key`.
    pub fn inject_for(&self, api_key: &str, method: &str, path: &str, fault: Fault, times: u32) {
        self.inject_rule(Some(api_key.to_string()), method, path, fault, times);
    }

    /// Injects `fault` into one request to `method path` carrying `api_key`, after `skip` such requests went through.
    pub fn inject_after(&self, api_key: &str, method: &str, path: &str, skip: u32, fault: Fault) {
        self.push_rule(Some(api_key.to_string()), method, path, fault, 1, skip);
    }

    fn inject_rule(&self, api_key: Option<String>, method: &str, path: &str, fault: Fault, times: u32) {
        self.push_rule(api_key, method, path, fault, times, 0);
    }

    fn push_rule(&self, api_key: Option<String>, method: &str, path: &str, fault: Fault, times: u32, skip: u32) {
        self.inner.lock().faults.push(FaultRule {
            method: Method::from_bytes(method.as_bytes()).expect("method"),
            path: path.to_string(),
            api_key,
            fault,
            remaining: times,
            skip,
        });
    }

    /// Faults injected but not yet triggered.
    pub fn faults_left(&self) -> u32 {
        self.inner.lock().faults.iter().map(|r| r.remaining).sum()
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// Drops every open user-data stream connection (clients must reconnect and reconcile).
    pub fn drop_streams(&self) {
        let mut g = self.inner.lock();
        for senders in g.streams.values() {
            for s in senders {
                let _ = s.send(None);
            }
        }
        g.streams.clear();
    }

    /// Expires every listenKey: streams get `listenKeyExpired`, keep-alives get -1125.
    pub fn expire_listen_keys(&self) {
        let mut g = self.inner.lock();
        let keys: Vec<(String, String)> = g.listen_keys.drain().collect();
        for (lk, api) in keys {
            let msg = json!({"e": "listenKeyExpired", "E": now_ms(), "listenKey": lk}).to_string();
            push(&mut g, &api, msg, "listenKeyExpired", "");
        }
    }

    /// Every order request received, oldest first.
    pub fn order_log(&self) -> Vec<OrderLog> {
        self.inner.lock().order_log.clone()
    }

    /// Recent stream pushes (the last 10 000), oldest first.
    pub fn push_log(&self) -> Vec<PushLog> {
        self.inner.lock().push_log.iter().cloned().collect()
    }

    /// Number of open user-data stream connections of an account.
    pub fn stream_count(&self, api_key: &str) -> usize {
        self.inner.lock().streams.get(api_key).map(|v| v.iter().filter(|s| !s.is_closed()).count()).unwrap_or(0)
    }
}

fn push(g: &mut Inner, api_key: &str, msg: String, event_type: &str, symbol: &str) {
    if let Some(senders) = g.streams.get_mut(api_key) {
        senders.retain(|s| s.send(Some(msg.clone())).is_ok());
    }
    g.push_log.push_back(PushLog {
        at: Instant::now(),
        api_key: api_key.to_string(),
        event_type: event_type.into(),
        symbol: symbol.into(),
    });
    if g.push_log.len() > 10_000 {
        g.push_log.pop_front();
    }
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

fn push_fill(g: &mut Inner, api_key: &str, f: &Fill) {
    let t = now_ms();
    let account = json!({"e": "ACCOUNT_UPDATE", "E": t, "T": t, "a": {"m": "ORDER",
        "B": [{"a": "USDT", "wb": f.wallet.to_string(), "cw": f.wallet.to_string(), "bc": "0"}],
        "P": [{"s": f.order.symbol, "pa": f.position.amount.to_string(), "ep": f.position.entry_price.to_string(),
               "cr": "0", "up": "0", "mt": "cross", "iw": "0", "ps": f.position_side}]}});
    push(g, api_key, account.to_string(), "ACCOUNT_UPDATE", &f.order.symbol);
    let order = json!({"e": "ORDER_TRADE_UPDATE", "E": t, "T": t, "o": {"s": f.order.symbol, "c": f.order.client_order_id,
        "S": side_str(f.order.side), "o": "MARKET", "f": "GTC", "q": f.order.orig_qty.to_string(), "p": "0",
        "ap": f.order.avg_price.to_string(), "sp": "0", "x": "TRADE", "X": "FILLED", "i": f.order.order_id,
        "l": f.trade.qty.to_string(), "z": f.order.executed_qty.to_string(), "L": f.trade.price.to_string(),
        "N": "USDT", "n": f.trade.commission.to_string(), "T": t, "t": f.trade.id, "b": "0", "a": "0", "m": false,
        "R": f.order.reduce_only, "wt": "CONTRACT_PRICE", "ot": "MARKET", "ps": f.position_side, "cp": false,
        "rp": f.trade.realized_pnl.to_string()}});
    push(g, api_key, order.to_string(), "ORDER_TRADE_UPDATE", &f.order.symbol);
}

fn algo_json(a: &AlgoOrder) -> Value {
    json!({"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "algoType": a.algo_type, "orderType": a.order_type,
        "symbol": a.symbol, "side": side_str(a.side), "positionSide": a.position_side, "timeInForce": "GTC",
        "quantity": a.quantity.to_string(), "algoStatus": a.algo_status, "triggerPrice": a.trigger_price.to_string(),
        "price": "0", "workingType": a.working_type, "priceMatch": "NONE", "closePosition": a.close_position,
        "priceProtect": false, "reduceOnly": a.reduce_only, "createTime": a.update_time, "updateTime": a.update_time,
        "triggerTime": 0, "goodTillDate": 0})
}

fn push_algo(g: &mut Inner, api_key: &str, a: &AlgoOrder) {
    let t = now_ms();
    let msg = json!({"e": "ALGO_UPDATE", "T": t, "E": t, "o": {"caid": a.client_algo_id, "aid": a.algo_id,
        "at": "CONDITIONAL", "o": a.order_type, "s": a.symbol, "S": side_str(a.side), "ps": a.position_side, "f": "GTC",
        "q": a.quantity.to_string(), "X": a.algo_status, "ai": "", "tp": a.trigger_price.to_string(), "p": "0",
        "wt": a.working_type, "cp": a.close_position, "R": a.reduce_only}});
    push(g, api_key, msg.to_string(), "ALGO_UPDATE", &a.symbol);
}

fn push_trigger(g: &mut Inner, api_key: &str, t: &Triggered) {
    push_algo(g, api_key, &t.algo);
    if let Some(f) = &t.fill {
        push_fill(g, api_key, f);
    }
}

fn order_json(o: &kronos_binance::types::Order) -> Value {
    json!({"orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_order_id,
        "price": o.price.to_string(), "avgPrice": o.avg_price.to_string(), "origQty": o.orig_qty.to_string(),
        "executedQty": o.executed_qty.to_string(), "cumQuote": o.executed_qty.checked_mul(&o.avg_price, 8, Rounding::HalfUp).unwrap_or_default().to_string(),
        "timeInForce": "GTC", "type": o.order_type, "reduceOnly": o.reduce_only, "closePosition": false,
        "side": side_str(o.side), "positionSide": o.position_side, "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": false, "origType": o.order_type, "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
        "goodTillDate": 0, "time": o.update_time, "updateTime": o.update_time})
}

fn reply(status: StatusCode, weight: u32, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    r.headers_mut().insert("x-mbx-used-weight-1m", weight.to_string().parse().expect("header"));
    r
}

fn api_err(weight: u32, code: i64, msg: &str) -> Response {
    let status = match code {
        -2014 | -2015 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    reply(status, weight, err_body(code, msg))
}

async fn ws_handler(State(ex): State<MockExchange>, Path(key): Path<String>, up: WebSocketUpgrade) -> Response {
    let api = ex.inner.lock().listen_keys.get(&key).cloned();
    let Some(api) = api else {
        return (StatusCode::BAD_REQUEST, "invalid listenKey").into_response();
    };
    let max = limits().ws_max_message_bytes;
    up.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| stream_session(ex, api, socket))
}

async fn stream_session(ex: MockExchange, api: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    ex.inner.lock().streams.entry(api).or_default().push(tx);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(Some(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // A drop: end the connection abruptly (no close frame), as a network failure would.
                Some(None) | None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

async fn rest_handler(
    State(ex): State<MockExchange>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let body = String::from_utf8_lossy(&body).to_string();
    let mut params = parse_params(&query);
    params.extend(parse_params(&body));

    // Weight, then faults.
    let (weight, fault) = {
        let mut g = ex.inner.lock();
        let minute = (now_ms() / 60_000) as u64;
        if g.weight_minute != minute {
            g.weight_minute = minute;
            g.weight_used = 0;
        }
        g.weight_used += weight_of(&method, &path, &params);
        let w = g.weight_used;
        if w > g.weight_limit {
            let retry = 60 - (now_ms() / 1000 % 60) as u64;
            let mut r = reply(
                StatusCode::TOO_MANY_REQUESTS,
                w,
                err_body(-1003, "Too many requests; current limit of IP is 2400 requests per minute."),
            );
            r.headers_mut().insert("retry-after", retry.to_string().parse().expect("header"));
            return r;
        }
        let mut fault = None;
        let key = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok());
        let mut chosen = None;
        for (i, r) in g.faults.iter_mut().enumerate() {
            if r.method == method
                && r.path == path
                && r.remaining > 0
                && (r.api_key.is_none() || r.api_key.as_deref() == key)
            {
                if r.skip > 0 {
                    r.skip -= 1;
                } else if chosen.is_none() {
                    chosen = Some(i);
                }
            }
        }
        if let Some(rule) = chosen.map(|i| &mut g.faults[i]) {
            rule.remaining -= 1;
            fault = Some(rule.fault.clone());
        }
        g.faults.retain(|r| r.remaining > 0);
        (w, fault)
    };
    match &fault {
        Some(Fault::Timestamp) => {
            return api_err(weight, -1021, "Timestamp for this request is outside of the recvWindow.")
        }
        Some(Fault::RateLimit { retry_after_s }) => {
            let mut r = reply(
                StatusCode::TOO_MANY_REQUESTS,
                weight,
                err_body(
                    -1003,
                    "Too many requests; please use the websocket for live updates to avoid polling the API.",
                ),
            );
            r.headers_mut().insert("retry-after", retry_after_s.to_string().parse().expect("header"));
            return r;
        }
        Some(Fault::Ban { retry_after_s }) => {
            let mut r = reply(
                StatusCode::IM_A_TEAPOT,
                weight,
                err_body(-1003, "Way too many requests; IP banned until later."),
            );
            r.headers_mut().insert("retry-after", retry_after_s.to_string().parse().expect("header"));
            return r;
        }
        Some(Fault::Malformed { status, body }) => {
            let mut r = (StatusCode::from_u16(*status).unwrap_or(StatusCode::OK), body.clone()).into_response();
            r.headers_mut().insert("x-mbx-used-weight-1m", weight.to_string().parse().expect("header"));
            return r;
        }
        Some(Fault::Unknown503 { executed: false }) => {
            ex.log_dropped(&method, &path, &headers, &params);
            return reply(StatusCode::SERVICE_UNAVAILABLE, weight, err_body(-1000, UNKNOWN_503));
        }
        Some(Fault::Timeout { executed: false, delay }) => {
            ex.log_dropped(&method, &path, &headers, &params);
            tokio::time::sleep(*delay).await;
            return reply(StatusCode::SERVICE_UNAVAILABLE, weight, err_body(-1000, UNKNOWN_503));
        }
        Some(Fault::Held { executed: false, gate }) => {
            ex.log_dropped(&method, &path, &headers, &params);
            gate.passed().await;
            return reply(StatusCode::SERVICE_UNAVAILABLE, weight, err_body(-1000, UNKNOWN_503));
        }
        Some(Fault::Answer { status, code, msg, executed: false }) => {
            ex.log_dropped(&method, &path, &headers, &params);
            return reply(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                weight,
                err_body(*code, msg),
            );
        }
        Some(Fault::LateFill { delay }) => {
            // Taken in by the gateway now, executed later (the order's own checks run then).
            ex.inner.lock().late_pending += 1;
            let (ex2, method2, path2, headers2, params2) =
                (ex.clone(), method.clone(), path.clone(), headers.clone(), params.clone());
            let delay = *delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                ex2.execute_late(&method2, &path2, &headers2, &params2, weight);
            });
            return reply(StatusCode::SERVICE_UNAVAILABLE, weight, err_body(-1000, UNKNOWN_503));
        }
        Some(Fault::MarkFirst { symbol, price }) => ex.set_mark(symbol, price),
        _ => {}
    }

    let call = Call { method: &method, path: &path, query: &query, body: &body, headers: &headers, params: &params };
    let response = ex.authenticate_and_handle(&call, weight);
    match fault {
        Some(Fault::Unknown503 { executed: true }) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, weight, err_body(-1000, UNKNOWN_503))
        }
        Some(Fault::Timeout { executed: true, delay }) => {
            tokio::time::sleep(delay).await;
            response
        }
        Some(Fault::Held { executed: true, gate }) => {
            gate.passed().await;
            response
        }
        Some(Fault::Answer { status, code, msg, executed: true }) => {
            reply(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), weight, err_body(code, &msg))
        }
        _ => response,
    }
}

impl MockExchange {
    /// Requests held back by [`Fault::LateFill`] that have not executed yet.
    pub fn late_pending(&self) -> u32 {
        self.inner.lock().late_pending
    }

    /// Executes a request a [`Fault::LateFill`] held back: it passed the gateway's checks on arrival.
    fn execute_late(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        params: &HashMap<String, String>,
        weight: u32,
    ) {
        let mut g = self.inner.lock();
        g.late_pending = g.late_pending.saturating_sub(1);
        let Some(key) = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok()).map(str::to_string) else { return };
        if !g.accounts.contains_key(&key) || *method != Method::POST || path != "/fapi/v1/order" {
            return;
        }
        let r = self.new_order(&mut g, &key, params, weight);
        let executed = r.status().is_success();
        g.order_log.push(OrderLog {
            at: Instant::now(),
            api_key: key,
            path: path.into(),
            client_id: params.get("newClientOrderId").cloned().unwrap_or_default(),
            symbol: params.get("symbol").cloned().unwrap_or_default(),
            side: params.get("side").cloned().unwrap_or_default(),
            quantity: params.get("quantity").cloned().unwrap_or_default(),
            executed,
            error_code: if executed { None } else { Some(0) },
        });
    }

    fn log_dropped(&self, method: &Method, path: &str, headers: &HeaderMap, params: &HashMap<String, String>) {
        if *method == Method::POST && (path == "/fapi/v1/order" || path == "/fapi/v1/algoOrder") {
            let api = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            self.inner.lock().order_log.push(OrderLog {
                at: Instant::now(),
                api_key: api,
                path: path.to_string(),
                client_id: params.get("newClientOrderId").or(params.get("clientAlgoId")).cloned().unwrap_or_default(),
                symbol: params.get("symbol").cloned().unwrap_or_default(),
                side: params.get("side").cloned().unwrap_or_default(),
                quantity: params.get("quantity").cloned().unwrap_or_default(),
                executed: false,
                error_code: None,
            });
        }
    }

    fn authenticate_and_handle(&self, call: &Call<'_>, weight: u32) -> Response {
        let Call { method, path, query, body, headers, params } = *call;
        let mut g = self.inner.lock();
        let server_now = now_ms() + g.clock_offset_ms;
        let api_key = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok()).map(str::to_string);
        match security(method, path) {
            Sec::None => {}
            Sec::Key | Sec::Signed => {
                let Some(key) = api_key.as_deref() else {
                    return api_err(weight, -2014, "API-key format invalid.");
                };
                let Some(acct) = g.accounts.get(key) else {
                    return api_err(weight, -2015, "Invalid API-key, IP, or permissions for action.");
                };
                if matches!(security(method, path), Sec::Signed) {
                    let (q, qs) = split_signature(query);
                    let (b, bs) = split_signature(body);
                    let Some(sig) = qs.or(bs) else {
                        return api_err(
                            weight,
                            -1102,
                            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
                        );
                    };
                    let total = format!("{q}{b}");
                    if kronos_binance::sign(&acct.secret, &total) != sig.to_ascii_lowercase() {
                        return api_err(weight, -1022, "Signature for this request is not valid.");
                    }
                    let Some(ts) = params.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
                        return api_err(
                            weight,
                            -1102,
                            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
                        );
                    };
                    let recv_window = match params.get("recvWindow") {
                        Some(v) => match v.parse::<i64>() {
                            Ok(w) if w > 60_000 => return api_err(weight, -1131, "recvWindow must be less than 60000"),
                            Ok(w) => w,
                            Err(_) => {
                                return api_err(weight, -1100, "Illegal characters found in parameter 'recvWindow'.")
                            }
                        },
                        None => 5000,
                    };
                    if ts >= server_now + 1000 {
                        return api_err(
                            weight,
                            -1021,
                            "Timestamp for this request was 1000ms ahead of the server's time.",
                        );
                    }
                    if server_now - ts > recv_window {
                        return api_err(weight, -1021, "Timestamp for this request is outside of the recvWindow.");
                    }
                }
            }
        }
        let key = api_key.unwrap_or_default();
        let p = |name: &str| params.get(name).cloned();
        let need = |name: &str| -> Result<String, Box<Response>> {
            params.get(name).filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
                Box::new(api_err(
                    weight,
                    -1102,
                    &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
                ))
            })
        };
        macro_rules! need {
            ($n:expr) => {
                match need($n) {
                    Ok(v) => v,
                    Err(r) => return *r,
                }
            };
        }
        let ok = |v: Value| reply(StatusCode::OK, weight, v);
        match (method.as_str(), path) {
            ("GET", "/fapi/v1/time") => ok(json!({"serverTime": server_now})),
            ("GET", "/fapi/v1/exchangeInfo") => {
                let mut info = g.info.clone();
                info["serverTime"] = json!(server_now);
                ok(info)
            }
            ("GET", "/fapi/v1/premiumIndex") => {
                let s = need!("symbol");
                match g.marks.get(&s) {
                    Some(m) => ok(json!({"symbol": s, "markPrice": m.to_string(), "indexPrice": m.to_string(),
                        "estimatedSettlePrice": m.to_string(), "lastFundingRate": "0.00010000", "interestRate": "0.00010000",
                        "nextFundingTime": (server_now / 28_800_000 + 1) * 28_800_000, "time": server_now})),
                    None => api_err(weight, -1121, "Invalid symbol."),
                }
            }
            (m, "/fapi/v1/listenKey") => {
                let existing = g.listen_keys.iter().find(|(_, a)| **a == key).map(|(k, _)| k.clone());
                match m {
                    "POST" => {
                        let lk = existing.unwrap_or_else(|| {
                            g.key_seq += 1;
                            let lk = format!(
                                "{}{:040x}",
                                "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1", g.key_seq
                            );
                            g.listen_keys.insert(lk.clone(), key.clone());
                            lk
                        });
                        ok(json!({"listenKey": lk}))
                    }
                    "PUT" => match existing {
                        Some(lk) => ok(json!({"listenKey": lk})),
                        None => api_err(weight, -1125, "This listenKey does not exist."),
                    },
                    "DELETE" => {
                        if let Some(lk) = existing {
                            g.listen_keys.remove(&lk);
                        }
                        ok(json!({}))
                    }
                    _ => api_err(weight, -1000, "Unsupported method."),
                }
            }
            ("GET", "/fapi/v1/positionSide/dual") => ok(json!({"dualSidePosition": g.accounts[&key].sim.hedge_mode})),
            ("POST", "/fapi/v1/leverage") => {
                let s = need!("symbol");
                let lev = need!("leverage");
                if !g.filters.contains_key(&s) {
                    return api_err(weight, -1121, "Invalid symbol.");
                }
                match lev.parse::<u32>() {
                    Ok(l) if (1..=125).contains(&l) => {
                        g.accounts.get_mut(&key).expect("account").sim.leverage.insert(s.clone(), l);
                        ok(json!({"leverage": l, "maxNotionalValue": "1000000", "symbol": s}))
                    }
                    _ => api_err(weight, -4028, &format!("Leverage {lev} is not valid")),
                }
            }
            ("POST", "/fapi/v1/marginType") => {
                let s = need!("symbol");
                let mt = need!("marginType");
                if mt != "ISOLATED" && mt != "CROSSED" {
                    return api_err(weight, -4044, "The marginType is invalid.");
                }
                let sim = &mut g.accounts.get_mut(&key).expect("account").sim;
                let current = sim.margin_type.get(&s).cloned().unwrap_or_else(|| "CROSSED".into());
                if current == mt {
                    return api_err(weight, -4046, "No need to change margin type.");
                }
                sim.margin_type.insert(s, mt);
                ok(json!({"code": 200, "msg": "success"}))
            }
            ("GET", "/fapi/v2/positionRisk") | ("GET", "/fapi/v3/positionRisk") => {
                let marks = g.marks.clone();
                let sim = &g.accounts[&key].sim;
                let mut rows: Vec<Value> = sim
                    .position_risk(&marks)
                    .into_iter()
                    .map(|p| {
                        json!({"symbol": p.symbol, "positionAmt": p.position_amt.to_string(), "entryPrice": p.entry_price.to_string(),
                            "breakEvenPrice": p.entry_price.to_string(), "markPrice": p.mark_price.to_string(),
                            "unRealizedProfit": p.unrealized_profit.to_string(), "liquidationPrice": "0",
                            "leverage": p.leverage.to_string(), "maxNotionalValue": "1000000", "marginType": p.margin_type,
                            "isolatedMargin": "0", "isAutoAddMargin": "false", "positionSide": p.position_side,
                            "notional": p.position_amt.checked_mul(&p.mark_price, 8, Rounding::HalfUp).unwrap_or_default().to_string(),
                            "isolatedWallet": "0", "updateTime": server_now})
                    })
                    .collect();
                // v2 also lists flat symbols.
                for s in g.filters.keys() {
                    if !rows.iter().any(|r| r["symbol"] == *s) {
                        rows.push(json!({"symbol": s, "positionAmt": "0.000", "entryPrice": "0.0", "breakEvenPrice": "0.0",
                            "markPrice": marks.get(s).copied().unwrap_or_default().to_string(), "unRealizedProfit": "0.00000000",
                            "liquidationPrice": "0", "leverage": "20", "maxNotionalValue": "1000000", "marginType": "cross",
                            "isolatedMargin": "0", "isAutoAddMargin": "false", "positionSide": "BOTH", "notional": "0",
                            "isolatedWallet": "0", "updateTime": 0}));
                    }
                }
                ok(Value::Array(rows))
            }
            ("GET", "/fapi/v2/balance") => {
                let marks = g.marks.clone();
                let b = g.accounts[&key].sim.balance(&marks);
                ok(json!([{"accountAlias": "SgsR", "asset": "USDT", "balance": b.balance.to_string(),
                    "crossWalletBalance": b.balance.to_string(), "crossUnPnl": b.cross_un_pnl.to_string(),
                    "availableBalance": b.available_balance.to_string(), "maxWithdrawAmount": b.available_balance.to_string(),
                    "marginAvailable": true, "updateTime": server_now}]))
            }
            ("POST", "/fapi/v1/order") => {
                let r = self.new_order(&mut g, &key, params, weight);
                let code = if r.status().is_success() { None } else { Some(0) };
                g.order_log.push(OrderLog {
                    at: Instant::now(),
                    api_key: key.clone(),
                    path: path.into(),
                    client_id: p("newClientOrderId").unwrap_or_default(),
                    symbol: p("symbol").unwrap_or_default(),
                    side: p("side").unwrap_or_default(),
                    quantity: p("quantity").unwrap_or_default(),
                    executed: code.is_none(),
                    error_code: code,
                });
                r
            }
            ("GET", "/fapi/v1/order") => {
                let sim = &g.accounts[&key].sim;
                let found = if let Some(c) = p("origClientOrderId") {
                    sim.order(&c).cloned()
                } else if let Some(id) = p("orderId").and_then(|i| i.parse::<i64>().ok()) {
                    sim.orders().iter().find(|o| o.order_id == id).cloned()
                } else {
                    return api_err(weight, -1102, "Either orderId or origClientOrderId must be sent.");
                };
                match found {
                    Some(o) => ok(order_json(&o)),
                    None => api_err(weight, -2013, "Order does not exist."),
                }
            }
            ("GET", "/fapi/v1/openOrders") => ok(json!([])),
            ("DELETE", "/fapi/v1/allOpenOrders") => {
                need!("symbol");
                ok(json!({"code": 200, "msg": "The operation of cancel all open order is done."}))
            }
            ("GET", "/fapi/v1/userTrades") => {
                let s = need!("symbol");
                let sim = &g.accounts[&key].sim;
                let ids: Vec<i64> = match p("orderId").and_then(|i| i.parse::<i64>().ok()) {
                    Some(id) => vec![id],
                    None => sim.orders().iter().filter(|o| o.symbol == s).map(|o| o.order_id).collect(),
                };
                let trades: Vec<Value> = ids
                    .into_iter()
                    .flat_map(|id| sim.trades_of(id))
                    .map(|t| {
                        json!({"buyer": t.side == Side::Buy, "commission": t.commission.to_string(), "commissionAsset": t.commission_asset,
                            "id": t.id, "maker": false, "orderId": t.order_id, "price": t.price.to_string(), "qty": t.qty.to_string(),
                            "quoteQty": t.qty.checked_mul(&t.price, 8, Rounding::HalfUp).unwrap_or_default().to_string(),
                            "realizedPnl": t.realized_pnl.to_string(), "side": side_str(t.side), "positionSide": "BOTH",
                            "symbol": t.symbol, "time": t.time})
                    })
                    .collect();
                ok(Value::Array(trades))
            }
            ("POST", "/fapi/v1/algoOrder") => {
                let r = self.new_algo(&mut g, &key, params, weight);
                let code = if r.status().is_success() { None } else { Some(0) };
                g.order_log.push(OrderLog {
                    at: Instant::now(),
                    api_key: key.clone(),
                    path: path.into(),
                    client_id: p("clientAlgoId").unwrap_or_default(),
                    symbol: p("symbol").unwrap_or_default(),
                    side: p("side").unwrap_or_default(),
                    quantity: p("quantity").unwrap_or_default(),
                    executed: code.is_none(),
                    error_code: code,
                });
                r
            }
            ("GET", "/fapi/v1/algoOrder") => {
                let sim = &g.accounts[&key].sim;
                let found = match (p("clientAlgoId"), p("algoId").and_then(|i| i.parse::<i64>().ok())) {
                    (Some(c), _) => sim.stop(&c).cloned(),
                    (None, Some(id)) => sim.open_stops(None).into_iter().find(|a| a.algo_id == id),
                    _ => return api_err(weight, -1102, "Either algoId or clientAlgoId must be sent."),
                };
                match found {
                    Some(a) => ok(algo_json(&a)),
                    None => api_err(weight, -2013, "Order does not exist."),
                }
            }
            ("GET", "/fapi/v1/openAlgoOrders") => {
                let sym = p("symbol");
                let list: Vec<Value> = g.accounts[&key].sim.open_stops(sym.as_deref()).iter().map(algo_json).collect();
                ok(Value::Array(list))
            }
            ("DELETE", "/fapi/v1/algoOrder") => {
                let c = need!("clientAlgoId");
                let res = g.accounts.get_mut(&key).expect("account").sim.cancel_stop(&c, now_ms());
                match res {
                    Ok(a) => {
                        push_algo(&mut g, &key, &a);
                        ok(
                            json!({"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}),
                        )
                    }
                    Err(r) => api_err(weight, r.code, &r.msg),
                }
            }
            _ => reply(StatusCode::NOT_FOUND, weight, err_body(-1000, "Unknown endpoint.")),
        }
    }

    fn new_order(&self, g: &mut Inner, key: &str, params: &HashMap<String, String>, weight: u32) -> Response {
        let get = |n: &str| params.get(n).cloned().unwrap_or_default();
        for n in ["symbol", "side", "type", "quantity"] {
            if get(n).is_empty() {
                return api_err(
                    weight,
                    -1102,
                    &format!("Mandatory parameter '{n}' was not sent, was empty/null, or malformed."),
                );
            }
        }
        let symbol = get("symbol");
        let Some(f) = g.filters.get(&symbol).cloned() else {
            return api_err(weight, -1121, "Invalid symbol.");
        };
        let side = match get("side").as_str() {
            "BUY" => Side::Buy,
            "SELL" => Side::Sell,
            _ => return api_err(weight, -1117, "Invalid side."),
        };
        if get("type") != "MARKET" {
            return api_err(weight, -1116, "Invalid orderType.");
        }
        let Ok(qty) = get("quantity").parse::<Decimal>() else {
            return api_err(weight, -1100, "Illegal characters found in parameter 'quantity'.");
        };
        if qty.round_to_step(&f.market_step_size, Rounding::Down).ok() != Some(qty) {
            return api_err(weight, -1111, "Precision is over the maximum defined for this asset.");
        }
        if qty < f.market_min_qty {
            return api_err(weight, -4003, "Quantity less than or equal to zero.");
        }
        if qty > f.market_max_qty {
            return api_err(weight, -4005, "Quantity greater than max quantity.");
        }
        let reduce_only = get("reduceOnly") == "true";
        let mark = g.marks.get(&symbol).copied().unwrap_or_default();
        let notional = qty.checked_mul(&mark, 8, Rounding::HalfUp).unwrap_or_default();
        if !reduce_only && notional < f.min_notional {
            return api_err(
                weight,
                -4164,
                &format!(
                    "Order's notional must be no smaller than {} (unless you choose reduce only).",
                    f.min_notional
                ),
            );
        }
        let coid = params.get("newClientOrderId").cloned().unwrap_or_else(|| format!("autogen{}", now_ms()));
        if coid.len() > 36 || !coid.chars().all(|c| c.is_ascii_alphanumeric() || ".:/_-".contains(c)) {
            return api_err(weight, -4015, "Client order id is not valid.");
        }
        let req = OrderRequest {
            reduce_only,
            position_side: params.get("positionSide").cloned().unwrap_or_else(|| "BOTH".into()),
            ..OrderRequest::market(&symbol, side, qty, coid)
        };
        let res = g.accounts.get_mut(key).expect("account").sim.place_market(&req, mark, now_ms());
        match res {
            Ok(fill) => {
                push_fill(g, key, &fill);
                // A position that went flat takes its close-position stops with it (the venue expires them).
                if fill.position.amount.is_zero() {
                    let keep = g.keep_quantity_stops;
                    let stale: Vec<AlgoOrder> = g.accounts[key]
                        .sim
                        .open_stops(Some(&symbol))
                        .into_iter()
                        .filter(|a| a.close_position || !keep)
                        .collect();
                    for a in stale {
                        if let Ok(x) =
                            g.accounts.get_mut(key).expect("account").sim.cancel_stop(&a.client_algo_id, now_ms())
                        {
                            let mut x = x;
                            x.algo_status = kronos_binance::types::AlgoStatus::Expired;
                            push_algo(g, key, &x);
                        }
                    }
                }
                reply(StatusCode::OK, weight, order_json(&fill.order))
            }
            Err(Reject { code, msg }) => api_err(weight, code, &msg),
        }
    }

    fn new_algo(&self, g: &mut Inner, key: &str, params: &HashMap<String, String>, weight: u32) -> Response {
        let get = |n: &str| params.get(n).cloned().unwrap_or_default();
        for n in ["algoType", "symbol", "side", "type"] {
            if get(n).is_empty() {
                return api_err(
                    weight,
                    -1102,
                    &format!("Mandatory parameter '{n}' was not sent, was empty/null, or malformed."),
                );
            }
        }
        if get("algoType") != "CONDITIONAL" {
            return api_err(weight, -1116, "Invalid algoType.");
        }
        if get("type") != "STOP_MARKET" {
            return api_err(weight, -1116, "Invalid orderType.");
        }
        let symbol = get("symbol");
        let Some(f) = g.filters.get(&symbol).cloned() else {
            return api_err(weight, -1121, "Invalid symbol.");
        };
        let hedge = g.accounts.get(key).is_some_and(|a| a.sim.hedge_mode);
        let close_position = get("closePosition") == "true";
        let reduce_only = get("reduceOnly") == "true";
        let not_required = |n: &str| api_err(weight, -1106, &format!("Parameter '{n}' sent when not required."));
        // As documented: closePosition cannot be sent with quantity (nor with reduceOnly), and reduceOnly cannot be
        // sent in hedge mode.
        if close_position && params.contains_key("quantity") {
            return not_required("quantity");
        }
        if params.contains_key("reduceOnly") && (close_position || hedge) {
            return not_required("reduceOnly");
        }
        let quantity = if close_position {
            None
        } else {
            let Ok(q) = get("quantity").parse::<Decimal>() else {
                return api_err(
                    weight,
                    -1102,
                    "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
                );
            };
            if q.round_to_step(&f.market_step_size, Rounding::Down).ok() != Some(q) {
                return api_err(weight, -1111, "Precision is over the maximum defined for this asset.");
            }
            if q <= Decimal::ZERO {
                return api_err(weight, -4003, "Quantity less than or equal to zero.");
            }
            // Scope: Kronos's stops only close (reduce-only in one-way mode, a closing position side in hedge mode).
            if !hedge && !reduce_only {
                return api_err(weight, -1116, "Invalid orderType.");
            }
            Some(q)
        };
        let Ok(trigger) = get("triggerPrice").parse::<Decimal>() else {
            return api_err(
                weight,
                -1102,
                "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.",
            );
        };
        if trigger.round_to_step(&f.tick_size, Rounding::Down).ok() != Some(trigger) {
            return api_err(weight, -4014, "Price not increased by tick size.");
        }
        let side = match get("side").as_str() {
            "BUY" => Side::Buy,
            "SELL" => Side::Sell,
            _ => return api_err(weight, -1117, "Invalid side."),
        };
        let caid = params.get("clientAlgoId").cloned().unwrap_or_else(|| format!("autogen{}", now_ms()));
        let req = StopRequest {
            symbol: symbol.clone(),
            side,
            trigger_price: trigger,
            position_side: params.get("positionSide").cloned().unwrap_or_else(|| "BOTH".into()),
            client_algo_id: caid,
            quantity,
        };
        let mark = g.marks.get(&symbol).copied().unwrap_or_default();
        let res = g.accounts.get_mut(key).expect("account").sim.place_stop(&req, mark, now_ms());
        match res {
            Ok(a) => {
                push_algo(g, key, &a);
                reply(StatusCode::OK, weight, algo_json(&a))
            }
            Err(Reject { code, msg }) => api_err(weight, code, &msg),
        }
    }
}
