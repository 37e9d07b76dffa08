//! The HTTP/WebSocket service: `/health`, `/metrics` (Prometheus), `/api/markets`, `/api/rounds`,
//! `/api/predictions`, and `/ws` streaming every signal as JSON; the dApp (`/`, `/assets/…`) and what it reads besides
//! (`/api/chains`, `/api/checkpoints`) are in [`crate::web`]. Forecasts are sealed until their on-chain reveal:
//! `/ws` leaves out the forecast and commitment signals and `/api/markets` the latest P(up) unless the request
//! carries the API token (`Authorization: Bearer …`, `keeper.api_token_env`).
//!
//! Every endpoint is under the limits of [`kronos_common::http_guard`] (`[api]` in the configuration): connections,
//! `/ws` subscribers, a per-address rate, body size, timeouts, allowed browser origins.
//!
//! The read endpoints answer from a [`BodyCache`]: each body is serialised once and served as the same bytes until
//! the store next writes ([`Store::writes`]) or [`CACHE_MAX_AGE`] passes (rows another keeper wrote to a shared
//! PostgreSQL store show up within that age); `/api/markets`' live figures (from memory) are at most
//! [`LIVE_MAX_AGE`] old. `/health` asks the store at most once per [`CACHE_MAX_AGE`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use kronos_common::http_guard::{Guard, Limits};
use kronos_common::signal_ws::Hub;
use kronos_common::Bus;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::chain::ChainRuntime;
use crate::metrics::Metrics;
use crate::scheduler::MarketStats;
use crate::store::Store;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    pub chains: Vec<Arc<ChainRuntime>>,
    pub stats: Vec<Arc<Mutex<MarketStats>>>,
    /// Holders of this bearer token see forecasts before their reveal (`/ws`, `/api/markets`); others do not.
    pub token: Option<kronos_common::Secret>,
    /// The limits (`[api]` in the configuration) and the `/ws` subscribers under them.
    pub hub: Hub,
    /// The read endpoints' bodies, until the store writes.
    pub cache: Arc<BodyCache>,
    /// `/api/chains`' body, read from the contracts once ([`crate::web`]).
    pub web_chains: Arc<std::sync::OnceLock<Bytes>>,
}

impl ApiState {
    /// The state with the API limits `limits`, counted in `metrics.guard`.
    pub fn new(
        store: Store,
        bus: Bus,
        metrics: Arc<Metrics>,
        chains: Vec<Arc<ChainRuntime>>,
        stats: Vec<Arc<Mutex<MarketStats>>>,
        token: Option<kronos_common::Secret>,
        limits: Limits,
    ) -> ApiState {
        let guard = Guard::new(limits, metrics.guard.clone());
        if let Some(t) = &token {
            guard.exempt_bearer(t.clone());
        }
        let hub = Hub::new(bus.clone(), guard);
        let cache = Arc::new(BodyCache::default());
        ApiState { store, bus, metrics, chains, stats, token, hub, cache, web_chains: Default::default() }
    }
}

/// How long a cached body of rows may be served while the store has not written (this keeper's own writes end it
/// at once; the age bounds how late another keeper's writes to a shared store are seen).
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(1);
/// How old `/api/markets`' live figures (the market drivers' counters, in memory) may be.
pub const LIVE_MAX_AGE: Duration = Duration::from_millis(250);
/// Distinct cached bodies at most (queries differ by chain, market and limit); beyond, bodies are served uncached
/// so a client cycling through parameters cannot grow the cache.
pub const CACHE_ENTRIES: usize = 1024;

/// Which body: the endpoint and its normalised parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Markets { unsealed: bool },
    Rounds { chain: Option<String>, market: Option<i64>, limit: i64 },
    Predictions { chain: Option<String>, limit: i64 },
}

impl CacheKey {
    fn max_age(&self) -> Duration {
        match self {
            CacheKey::Markets { .. } => LIVE_MAX_AGE,
            _ => CACHE_MAX_AGE,
        }
    }
}

/// One serialised body and the store's write count before its rows were read.
#[derive(Debug, Clone)]
struct Cached {
    writes: u64,
    at: Instant,
    body: Bytes,
}

/// Whether a body read when the store had written `cached_writes` times, `age` ago, may still be served now that it
/// has written `writes` times.
pub fn fresh(cached_writes: u64, age: Duration, writes: u64, max_age: Duration) -> bool {
    cached_writes == writes && age <= max_age
}

/// The read endpoints' serialised bodies (see the module's documentation).
#[derive(Default)]
pub struct BodyCache {
    bodies: Mutex<HashMap<CacheKey, Cached>>,
    /// One refill at a time: the requests that find a body stale while it is being read wait for it instead of
    /// all querying the store at once.
    refill: tokio::sync::Mutex<()>,
    /// When the store last answered `/health`'s ping, and whether it did.
    ping: Mutex<Option<(Instant, bool)>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl BodyCache {
    fn get(&self, key: &CacheKey, writes: u64) -> Option<Bytes> {
        let bodies = self.bodies.lock();
        let c = bodies.get(key)?;
        fresh(c.writes, c.at.elapsed(), writes, key.max_age()).then(|| c.body.clone())
    }

    /// The body of `key`: the cached one while fresh, else `fill`'s (read after noting the store's write count, so
    /// a write during the read makes the next request read again).
    pub async fn body<F, Fut>(&self, store: &Store, key: CacheKey, fill: F) -> anyhow::Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Bytes>>,
    {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(b) = self.get(&key, store.writes()) {
            self.hits.fetch_add(1, Relaxed);
            return Ok(b);
        }
        let _one = self.refill.lock().await;
        let writes = store.writes();
        if let Some(b) = self.get(&key, writes) {
            self.hits.fetch_add(1, Relaxed);
            return Ok(b);
        }
        self.misses.fetch_add(1, Relaxed);
        let body = fill().await?;
        let mut bodies = self.bodies.lock();
        if bodies.len() >= CACHE_ENTRIES && !bodies.contains_key(&key) {
            bodies.retain(|k, c| fresh(c.writes, c.at.elapsed(), writes, k.max_age()));
        }
        if bodies.len() < CACHE_ENTRIES || bodies.contains_key(&key) {
            bodies.insert(key, Cached { writes, at: Instant::now(), body: body.clone() });
        }
        Ok(body)
    }

    /// Bodies served from the cache and read from the store so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Whether the store answers, asked at most once per [`CACHE_MAX_AGE`].
    async fn store_ok(&self, store: &Store) -> bool {
        if let Some((at, ok)) = *self.ping.lock() {
            if at.elapsed() <= CACHE_MAX_AGE {
                return ok;
            }
        }
        let ok = store.ping().await.is_ok();
        *self.ping.lock() = Some((Instant::now(), ok));
        ok
    }
}

fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn to_bytes<T: serde::Serialize>(v: &T) -> anyhow::Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(v)?))
}

/// `/api/markets`' body, read now: the markets in the store and each driver's live figures (without the latest
/// forecast unless `unsealed`).
pub async fn markets_body(s: &ApiState, unsealed: bool) -> anyhow::Result<Bytes> {
    let stats: Vec<MarketStats> = s
        .stats
        .iter()
        .map(|m| {
            let mut st = m.lock().clone();
            // The latest forecast is for a round whose prediction is not revealed yet.
            if !unsealed {
                st.last_p_up = None;
            }
            st
        })
        .collect();
    let known = s.store.markets().await?;
    to_bytes(&serde_json::json!({ "markets": known, "live": stats }))
}

/// `/api/rounds`' body, read now.
pub async fn rounds_body(store: &Store, chain: Option<&str>, market: Option<i64>, limit: i64) -> anyhow::Result<Bytes> {
    to_bytes(&store.rounds(chain, market, limit).await?)
}

/// `/api/predictions`' body, read now: the newest predictions of `chains` (salts and values only once revealed)
/// and every track record.
pub async fn predictions_body(store: &Store, chains: &[String], limit: i64) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    for c in chains {
        for p in store.recent_predictions(c, limit).await? {
            // A salt is only shown once its prediction is revealed; before that it would leak the forecast.
            let revealed = p.reveal_tx.is_some();
            out.push(serde_json::json!({
                "chain": p.chain, "market": p.market_id, "epoch": p.epoch,
                "p_up_bps": if revealed { Some(p.p_up_bps) } else { None },
                "committed": p.commit_tx.is_some(), "commitment": p.commitment,
                "revealed": revealed, "outcome": p.outcome, "hit": p.hit, "brier": p.brier,
            }));
        }
    }
    let records = store.track_records().await?;
    to_bytes(&serde_json::json!({ "predictions": out, "track_records": records }))
}

fn internal(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

/// Serves the API on `listener` under its limits until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let guard = state.hub.guard().clone();
    guard.serve(listener, router(state), shutdown).await
}

impl ApiState {
    /// Whether the request carries the API token (`Authorization: Bearer …`).
    fn unsealed(&self, headers: &HeaderMap) -> bool {
        let Some(t) = &self.token else { return false };
        let Some(got) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
        got.strip_prefix("Bearer ").is_some_and(|g| t.matches(g.trim()))
    }
}

/// The router, under the request limits of `state.hub`'s guard (rate, origin, body, timeout); [`serve`] adds the
/// connection limits.
pub fn router(state: ApiState) -> Router {
    let guard = state.hub.guard().clone();
    let r = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/markets", get(markets))
        .route("/api/rounds", get(rounds))
        .route("/api/predictions", get(predictions))
        .route("/ws", get(ws))
        .route("/api/chains", get(crate::web::chains))
        .route("/api/checkpoints", get(crate::web::checkpoints))
        .route("/", get(crate::web::index))
        .route("/assets/app.js", get(crate::web::app_js))
        .route("/assets/style.css", get(crate::web::style_css))
        .with_state(state);
    guard.layer(r)
}

async fn health(State(s): State<ApiState>) -> Response {
    let store_ok = s.cache.store_ok(&s.store).await;
    let chains: serde_json::Map<String, serde_json::Value> = s
        .chains
        .iter()
        .map(|c| (c.name.clone(), serde_json::to_value(c.health.lock().clone()).unwrap_or_default()))
        .collect();
    let healthy = store_ok && s.chains.iter().all(|c| c.health.lock().healthy);
    // Each market's lease as this keeper sees it: leader, standby (another keeper leads) or single (SQLite), and the
    // last time this keeper lost it (it stopped sending then).
    let leases: Vec<serde_json::Value> = s
        .stats
        .iter()
        .map(|m| {
            let m = m.lock();
            serde_json::json!({ "chain": m.chain, "market": m.market, "lease": m.lease })
        })
        .collect();
    let status = if healthy { "ok" } else { "degraded" };
    let body = serde_json::json!({ "status": status, "store": store_ok, "chains": chains, "markets": leases });
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    s.metrics.refresh(&s.chains, &s.bus);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.encode()).into_response()
}

async fn markets(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let unsealed = s.unsealed(&headers);
    match s.cache.body(&s.store, CacheKey::Markets { unsealed }, || markets_body(&s, unsealed)).await {
        Ok(b) => json_body(b),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct RoundsQuery {
    chain: Option<String>,
    market: Option<i64>,
    limit: Option<i64>,
}

async fn rounds(State(s): State<ApiState>, Query(q): Query<RoundsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let key = CacheKey::Rounds { chain: q.chain.clone(), market: q.market, limit };
    match s.cache.body(&s.store, key, || rounds_body(&s.store, q.chain.as_deref(), q.market, limit)).await {
        Ok(b) => json_body(b),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct PredictionsQuery {
    chain: Option<String>,
    limit: Option<i64>,
}

async fn predictions(State(s): State<ApiState>, Query(q): Query<PredictionsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let chains: Vec<String> = match &q.chain {
        Some(c) => vec![c.clone()],
        None => s.chains.iter().map(|c| c.name.clone()).collect(),
    };
    let key = CacheKey::Predictions { chain: q.chain.clone(), limit };
    match s.cache.body(&s.store, key, || predictions_body(&s.store, &chains, limit)).await {
        Ok(b) => json_body(b),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    /// Comma-separated signal types to receive (default: all).
    types: Option<String>,
}

async fn ws(
    State(s): State<ApiState>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    up: WebSocketUpgrade,
) -> Response {
    let filter = match kronos_common::signal_ws::parse_types(q.types.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.response(),
    };
    let sealed = !s.unsealed(&headers);
    s.hub.upgrade_from(up, peer.map(|p| p.0 .0.ip()), filter, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_fresh_until_the_store_writes_or_it_is_too_old() {
        let max = Duration::from_secs(1);
        assert!(fresh(7, Duration::ZERO, 7, max));
        assert!(fresh(7, max, 7, max));
        assert!(!fresh(7, Duration::ZERO, 8, max), "a write ends it");
        assert!(!fresh(7, max + Duration::from_millis(1), 7, max), "so does its age");
    }

    #[test]
    fn live_figures_are_kept_shorter_than_rows() {
        assert_eq!(CacheKey::Markets { unsealed: false }.max_age(), LIVE_MAX_AGE);
        assert_eq!(CacheKey::Predictions { chain: None, limit: 1 }.max_age(), CACHE_MAX_AGE);
        assert!(LIVE_MAX_AGE < CACHE_MAX_AGE);
    }
}
