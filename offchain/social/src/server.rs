//! The monitor's HTTP side, under the project's guard (connection cap, per-address rate, body, timeouts, origin):
//!
//! - `GET /api/social/items?asset=BTC&source=x&min_score=1&after=SEQ&since_ms=T&limit=50`: stored items, newest
//!   first (oldest first after `after`, to page forward); deleted items are left out;
//! - `GET /api/social/assets/{asset}?windows=1h,24h,7d`: per window the social volume, dominance, mean sentiment,
//!   sentiment balance and mean score, and the asset's current volume z-score;
//! - `GET /ws?assets=BTC,ETH&min_score=1&min_priority=high`: [`WsMessage`] JSON text messages — each accepted item
//!   as it is stored (`type: item`), its new version after an edit (`edit`), its deletion (`deleted`) — filtered
//!   per client (any of the assets; at least the score; at least the priority — the Telegram bot
//!   asks for `high` only, so nothing else crosses the wire). Each item is serialised once for every client; the
//!   subscriber cap, the send timeout (a slower reader is dropped and counted `ws_slow_reader`), the queue behind a
//!   reader (a `{"type":"lagged","lost":n}` note when it skips ahead) and pings are the keeper's `/ws` rules;
//! - `GET /health`: the store and every source's health (`503` when the store is unreachable or a source stopped);
//! - `GET /metrics`: Prometheus text.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kronos_common::http_guard::{Guard, GuardMetrics, Limits, ReasonLabel, Slot};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::fanout::Published;
use crate::item::{Item, Priority, WsMessage};
use crate::runner::Monitor;
use crate::status::{HealthAnswer, Overall};
use crate::store::ItemQuery;

/// Items a WebSocket client may fall behind before it skips ahead.
pub const WS_QUEUE: usize = 4096;

/// One item, serialised once for every client.
pub struct Frame {
    pub assets: Vec<String>,
    pub score: f64,
    pub priority: Priority,
    pub text: Utf8Bytes,
}

#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    monitor: Arc<Monitor>,
    guard: Guard,
    registry: Registry,
    frames: OnceLock<broadcast::Sender<Arc<Frame>>>,
}

impl Server {
    pub fn new(monitor: Arc<Monitor>, limits: Limits) -> Server {
        let gm = GuardMetrics::default();
        let mut registry = Registry::default();
        monitor.metrics.register(&mut registry);
        monitor.register_fanout_metrics(&mut registry);
        gm.register(&mut registry);
        let guard = Guard::new(limits, gm);
        Server { inner: Arc::new(Inner { monitor, guard, registry, frames: OnceLock::new() }) }
    }

    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    pub fn router(&self) -> Router {
        let r = Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/api/social/items", get(items))
            .route("/api/social/assets/{asset}", get(asset))
            .route("/ws", get(ws))
            .with_state(self.clone());
        self.inner.guard.layer(r)
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve<F>(&self, listener: tokio::net::TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send,
    {
        self.inner.guard.serve(listener, self.router(), shutdown).await
    }

    /// Frames from now on (starting the task that serialises the bus's items).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        let tx = self.inner.frames.get_or_init(|| {
            let (tx, _) = broadcast::channel(WS_QUEUE);
            let rx = self.inner.monitor.bus.subscribe();
            tokio::spawn(pump(rx, tx.clone(), self.inner.guard.metrics().clone()));
            tx
        });
        tx.subscribe()
    }
}

async fn pump(mut rx: broadcast::Receiver<Arc<Published>>, tx: broadcast::Sender<Arc<Frame>>, m: GuardMetrics) {
    loop {
        let frame = match rx.recv().await {
            // A deletion reaches the clients whose filter took the item.
            Ok(p) => Frame {
                assets: p.item().assets.clone(),
                score: p.item().score,
                priority: p.item().priority,
                text: serde_json::to_string(&p.message()).unwrap_or_default().into(),
            },
            Err(broadcast::error::RecvError::Lagged(n)) => {
                m.ws_skipped.inc_by(n);
                lagged(n)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let _ = tx.send(Arc::new(frame));
    }
}

fn lagged(n: u64) -> Frame {
    Frame {
        assets: vec![],
        score: f64::INFINITY,
        priority: Priority::High,
        text: serde_json::to_string(&WsMessage::<Item>::Lagged { lost: n }).unwrap_or_default().into(),
    }
}

fn bad(param: &str, message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": format!("{param}: {message}") }))).into_response()
}

fn internal(e: anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "a social API request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": "the store could not be read" })))
        .into_response()
}

fn num<T: std::str::FromStr>(q: &HashMap<String, String>, k: &str) -> Result<Option<T>, (String, String)> {
    match q.get(k) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| (k.to_string(), format!("'{v}' is not a number"))),
    }
}

fn symbol(s: &str) -> Option<String> {
    let u = s.trim().to_ascii_uppercase();
    (!u.is_empty() && u.len() <= 10 && u.chars().all(|c| c.is_ascii_alphanumeric())).then_some(u)
}

async fn items(State(s): State<Server>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut query = ItemQuery { limit: 50, ..Default::default() };
    if let Some(a) = q.get("asset") {
        match symbol(a) {
            Some(a) => query.asset = Some(a),
            None => return bad("asset", format!("'{a}' is not a symbol")),
        }
    }
    query.source = q.get("source").cloned();
    match (num::<f64>(&q, "min_score"), num::<i64>(&q, "after"), num::<u64>(&q, "since_ms"), num::<u32>(&q, "limit")) {
        (Ok(m), Ok(a), Ok(si), Ok(l)) => {
            query.min_score = m;
            query.after_seq = a;
            query.since_ms = si;
            if let Some(l) = l {
                if !(1..=1000).contains(&l) {
                    return bad("limit", format!("{l} is not between 1 and 1000"));
                }
                query.limit = l;
            }
        }
        (Err((p, m)), ..) | (_, Err((p, m)), ..) | (_, _, Err((p, m)), _) | (.., Err((p, m))) => return bad(&p, m),
    }
    match s.inner.monitor.store.items(&query).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => internal(e),
    }
}

/// `30s`, `15m`, `1h`, `7d` → milliseconds.
pub fn window_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

#[derive(Serialize)]
struct WindowStats {
    window: String,
    from_ms: u64,
    to_ms: u64,
    volume: u64,
    dominance: f64,
    mean_sentiment: f64,
    balance: f64,
    positive: u64,
    negative: u64,
    mean_score: f64,
}

async fn asset(State(s): State<Server>, Path(a): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(sym) = symbol(&a) else { return bad("asset", format!("'{a}' is not a symbol")) };
    let spec = q.get("windows").map(String::as_str).unwrap_or("1h,24h,7d");
    let mut windows = Vec::new();
    for w in spec.split(',').filter(|w| !w.trim().is_empty()) {
        match window_ms(w) {
            Some(ms) => windows.push((w.trim().to_string(), ms)),
            None => return bad("windows", format!("'{w}' is not a window like 15m, 1h or 7d")),
        }
    }
    if windows.is_empty() || windows.len() > 8 {
        return bad("windows", "name 1 to 8 windows".into());
    }
    let now = crate::now_ms();
    let mut out = Vec::new();
    for (name, ms) in windows {
        let from = now.saturating_sub(ms);
        match s.inner.monitor.store.asset_counts(&sym, from, now + 1).await {
            Ok(c) => out.push(WindowStats {
                window: name,
                from_ms: from,
                to_ms: now,
                volume: c.volume,
                dominance: crate::pipeline::score::dominance(c.volume, c.all_mentions),
                mean_sentiment: c.mean_sentiment,
                balance: crate::pipeline::score::balance(c.positive, c.negative),
                positive: c.positive,
                negative: c.negative,
                mean_score: c.mean_score,
            }),
            Err(e) => return internal(e),
        }
    }
    let z = s.inner.monitor.current_z(&sym, now).await;
    Json(serde_json::json!({ "asset": sym, "z_score": z, "windows": out })).into_response()
}

async fn health(State(s): State<Server>) -> Response {
    let store_ok = s.inner.monitor.store.ping().await.is_ok();
    let answer = HealthAnswer::new(store_ok, s.inner.monitor.health());
    let code = if answer.status == Overall::Failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(answer.to_wire())).into_response()
}

async fn metrics(State(s): State<Server>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &s.inner.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// A client's filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Any of these (empty: all).
    pub assets: Vec<String>,
    pub min_score: f64,
    /// At least this priority (`min_priority=low|normal|high`; absent: any).
    pub min_priority: Option<Priority>,
}

impl Filter {
    pub fn parse(q: &HashMap<String, String>) -> Result<Filter, (String, String)> {
        let mut f = Filter::default();
        if let Some(a) = q.get("assets") {
            for s in a.split(',').filter(|s| !s.trim().is_empty()) {
                f.assets.push(symbol(s).ok_or_else(|| ("assets".to_string(), format!("'{s}' is not a symbol")))?);
            }
        }
        if let Some(m) = q.get("min_score") {
            f.min_score = m
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| ("min_score".to_string(), format!("'{m}' is not a number")))?;
        }
        if let Some(p) = q.get("min_priority") {
            f.min_priority = Some(
                Priority::parse(p)
                    .ok_or_else(|| ("min_priority".to_string(), format!("'{p}' is not low, normal or high")))?,
            );
        }
        Ok(f)
    }

    pub fn wants(&self, assets: &[String], score: f64, priority: Priority) -> bool {
        score >= self.min_score
            && self.min_priority.is_none_or(|m| priority >= m)
            && (self.assets.is_empty() || assets.iter().any(|a| self.assets.contains(a)))
    }
}

async fn ws(State(s): State<Server>, Query(q): Query<HashMap<String, String>>, up: WebSocketUpgrade) -> Response {
    let filter = match Filter::parse(&q) {
        Ok(f) => f,
        Err((p, m)) => return bad(&p, m),
    };
    let guard = &s.inner.guard;
    let Some(slot) = guard.ws_slot() else { return guard.ws_full() };
    let rx = s.subscribe();
    let limits = guard.limits().clone();
    let gm = guard.metrics().clone();
    let m = s.inner.monitor.metrics.clone();
    up.max_message_size(limits.ws_max_message_bytes)
        .max_frame_size(limits.ws_max_message_bytes)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            m.ws_clients.inc();
            let reader = Reader {
                filter,
                send_timeout: limits.ws_send_timeout,
                ping_every: limits.ws_ping_interval(),
                gm,
                _slot: slot,
            };
            stream(socket, rx, reader, &m).await;
            m.ws_clients.dec();
        })
}

/// One WebSocket reader: the items it asked for, and the guard's limits and slot it runs under (the slot is held
/// until the stream ends).
struct Reader {
    filter: Filter,
    send_timeout: Duration,
    ping_every: Duration,
    gm: GuardMetrics,
    _slot: Slot,
}

async fn stream(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Arc<Frame>>,
    reader: Reader,
    m: &crate::metrics::Metrics,
) {
    let Reader { filter, send_timeout, ping_every, gm, _slot } = reader;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            f = rx.recv() => match f {
                Ok(f) => {
                    if !filter.wants(&f.assets, f.score, f.priority) {
                        continue;
                    }
                    Message::Text(f.text.clone())
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    gm.ws_skipped.inc_by(n);
                    Message::Text(lagged(n).text)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        let is_item = matches!(msg, Message::Text(_));
        match tokio::time::timeout(send_timeout, socket.send(msg)).await {
            Ok(Ok(())) => {
                if is_item {
                    m.ws_sent.inc();
                }
            }
            Ok(Err(_)) => return,
            Err(_) => {
                gm.dropped.get_or_create(&ReasonLabel { reason: "ws_slow_reader" }).inc();
                tracing::debug!("a social WebSocket reader too slow for the send timeout was dropped");
                return;
            }
        }
    }
}

/// The fixture server of the offline demo: the files of `dir` at `/{name}`, with an ETag (FNV-1a of the content)
/// and Last-Modified (the file's time), answering `If-None-Match` / `If-Modified-Since` with `304`.
pub fn fixtures(dir: PathBuf) -> Router {
    Router::new().route("/{name}", get(fixture)).with_state(Arc::new(dir))
}

async fn fixture(State(dir): State<Arc<PathBuf>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if name.starts_with('.') || name.contains(['/', '\\']) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = dir.join(&name);
    let Ok(bytes) = tokio::fs::read(&path).await else { return StatusCode::NOT_FOUND.into_response() };
    let etag = format!("\"{:016x}\"", crate::pipeline::normalise::fnv1a(&bytes));
    let modified = tokio::fs::metadata(&path).await.ok().and_then(|m| m.modified().ok()).map(httpdate::fmt_http_date);
    let inm = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let ims = headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok());
    let not_modified = match (inm, ims) {
        (Some(t), _) => t.split(',').any(|t| t.trim() == etag),
        (None, Some(t)) => modified.as_deref() == Some(t),
        _ => false,
    };
    let ctype = if name.ends_with(".json") { "application/json" } else { "application/xml" };
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, ctype)], bytes).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = etag.parse() {
        h.insert(header::ETAG, v);
    }
    if let Some(v) = modified.and_then(|m| m.parse().ok()) {
        h.insert(header::LAST_MODIFIED, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_filters() {
        assert_eq!(window_ms("15m"), Some(900_000));
        assert_eq!(window_ms("7d"), Some(604_800_000));
        assert_eq!(window_ms("0h"), None);
        assert_eq!(window_ms("1w"), None);
        assert_eq!(window_ms("h"), None);
        let q: HashMap<String, String> =
            [("assets".to_string(), "btc,ETH".to_string()), ("min_score".to_string(), "1.0".to_string())].into();
        let f = Filter::parse(&q).unwrap();
        assert_eq!(f.assets, vec!["BTC", "ETH"]);
        assert!(f.wants(&["ETH".into()], 1.0, Priority::Low));
        assert!(!f.wants(&["ETH".into()], 0.9, Priority::High));
        assert!(!f.wants(&["SOL".into()], 2.0, Priority::High));
        assert!(Filter::default().wants(&[], 0.0, Priority::Low));
        let bad: HashMap<String, String> = [("min_score".to_string(), "x".to_string())].into();
        assert_eq!(Filter::parse(&bad).unwrap_err().0, "min_score");
        let high: HashMap<String, String> = [("min_priority".to_string(), "high".to_string())].into();
        let f = Filter::parse(&high).unwrap();
        assert!(f.wants(&[], 0.0, Priority::High));
        assert!(!f.wants(&["BTC".into()], 9.0, Priority::Normal), "a normal item is below high");
        let normal: HashMap<String, String> = [("min_priority".to_string(), "normal".to_string())].into();
        assert!(Filter::parse(&normal).unwrap().wants(&[], 0.0, Priority::High), "high is at least normal");
        let bad: HashMap<String, String> = [("min_priority".to_string(), "urgent".to_string())].into();
        assert_eq!(Filter::parse(&bad).unwrap_err().0, "min_priority");
    }
}
