//! The HTTP/WebSocket service: `/health`, `/metrics` (Prometheus), `/api/markets`, `/api/rounds`,
//! `/api/predictions`, and `/ws` streaming every signal as JSON; the dApp (`/`, `/assets/…`) and what it reads besides
//! (`/api/chains`, `/api/checkpoints`) are in [`crate::web`]. Forecasts are sealed until their on-chain reveal:
//! `/ws` leaves out the forecast and commitment signals and `/api/markets` the latest P(up) unless the request
//! carries the API token (`Authorization: Bearer …`, `keeper.api_token_env`), and `/api/predictions` the values of
//! unrevealed predictions. An operator who sets `[api] publish_forecasts = true` unseals all of it for every client
//! (each forecast public once committed; its commitment lets anyone check the later reveal against it).
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
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use kronos_api_types as wire;
use kronos_common::http_guard::{Guard, Limits};
use kronos_common::signal_ws::Hub;
use kronos_common::signal_ws::WsUpgrade;
use kronos_common::Bus;
use parking_lot::Mutex;

use crate::chain::ChainRuntime;
use crate::lease::LeaseStatus;
use crate::metrics::Metrics;
use crate::scheduler::MarketStats;
use crate::store::{MarketRow, PredictionRow, RoundRow, Store, TrackRecordRow};

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
    /// `[api] publish_forecasts`: everyone sees every forecast before its reveal (`/ws`, `/api/markets`, and the
    /// committed values on `/api/predictions`); `/api/chains` says so to the page.
    pub publish_forecasts: bool,
    /// The limits (`[api]` in the configuration) and the `/ws` subscribers under them.
    pub hub: Hub,
    /// The read endpoints' bodies, until the store writes.
    pub cache: Arc<BodyCache>,
    /// The Solana clusters (`/health` entries under their catalogue key).
    pub solana: Vec<Arc<crate::solana::SolanaRuntime>>,
    /// `/api/chains`' body, read from the contracts again once it is [`crate::web::CHAINS_MAX_AGE`] old.
    pub(crate) web_chains: Arc<crate::web::ChainsCache>,
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
        ApiState {
            store,
            bus,
            metrics,
            chains,
            stats,
            token,
            publish_forecasts: false,
            hub,
            cache,
            web_chains: Default::default(),
            solana: vec![],
        }
    }

    /// The same state with the Solana clusters' health.
    pub fn with_solana(mut self, solana: Vec<Arc<crate::solana::SolanaRuntime>>) -> ApiState {
        self.solana = solana;
        self
    }

    /// The same state publishing forecasts to everyone as soon as they are committed (`[api] publish_forecasts`).
    pub fn publishing_forecasts(mut self, publish: bool) -> ApiState {
        self.publish_forecasts = publish;
        self
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
    Predictions { chain: Option<String>, limit: i64, unsealed: bool },
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
    let live = s.stats.iter().map(|m| live_market(&m.lock(), unsealed)).collect::<anyhow::Result<Vec<_>>>()?;
    let markets = s.store.markets().await?.into_iter().map(market).collect();
    to_bytes(&wire::Markets { live, markets })
}

/// `/api/rounds`' body, read now.
pub async fn rounds_body(store: &Store, chain: Option<&str>, market: Option<i64>, limit: i64) -> anyhow::Result<Bytes> {
    let rounds: Vec<_> = store.rounds(chain, market, limit).await?.into_iter().map(round).collect();
    to_bytes(&rounds)
}

/// `/api/predictions`' body, read now: the newest predictions of `chains` (values only once revealed, or once
/// committed when `unsealed`; salts never) and every track record.
pub async fn predictions_body(store: &Store, chains: &[String], limit: i64, unsealed: bool) -> anyhow::Result<Bytes> {
    let mut predictions = Vec::new();
    for c in chains {
        for p in store.recent_predictions(c, limit).await? {
            predictions.push(prediction(p, unsealed));
        }
    }
    let track_records = store.track_records().await?.into_iter().map(track_record).collect();
    to_bytes(&wire::Predictions { predictions, track_records })
}

/// A market driver's figures as `/api/markets` shows them; the latest forecast only when `unsealed` (it is for a
/// round whose prediction is not revealed yet).
fn live_market(st: &MarketStats, unsealed: bool) -> anyhow::Result<wire::LiveMarket> {
    Ok(wire::LiveMarket {
        chain: st.chain.clone(),
        market: st.market,
        pair: st.pair.clone(),
        betting_epoch: st.betting_epoch,
        next_checkpoint: st.next_checkpoint,
        last_lock_price: st.last_lock_price.map(|p| p.to_string()),
        last_close_price: st.last_close_price.map(|p| p.to_string()),
        last_result: st.last_result.clone(),
        settled: st.settled,
        cancelled: st.cancelled,
        missed: st.missed,
        delays: st.delays.clone(),
        execute_gas: st.execute_gas.clone(),
        pool_up_wei: st.pool_up_wei.clone(),
        pool_down_wei: st.pool_down_wei.clone(),
        pool_epoch: st.pool_epoch,
        last_p_up: if unsealed { st.last_p_up } else { None },
        lease: lease(&st.lease).map_err(|e| anyhow::anyhow!("{} market {}: lease role {e}", st.chain, st.market))?,
    })
}

fn lease(l: &LeaseStatus) -> Result<wire::Lease, wire::UnknownValue> {
    Ok(wire::Lease {
        role: l.role.parse()?,
        epoch: l.epoch,
        leader: l.leader.clone(),
        since_ms: l.since_ms,
        last_loss: l.last_loss.clone(),
    })
}

fn market(m: MarketRow) -> wire::Market {
    wire::Market {
        chain: m.chain,
        market_id: m.market_id,
        contract: m.contract,
        feed: m.feed,
        sequencer: m.sequencer,
        token: m.token,
        pair: m.pair,
        genesis: m.genesis,
        interval_s: m.interval_s,
        settle_window_s: m.settle_window_s,
        max_price_age_s: m.max_price_age_s,
        feed_decimals: m.feed_decimals,
    }
}

/// A contract's refund reason as the API and the `round_cancelled` signal name it (the contract's `None` is never
/// emitted with a refund).
pub(crate) fn cancel_reason(r: kronos_contracts::CancelReason) -> wire::CancelReason {
    use kronos_contracts::CancelReason as C;
    match r {
        C::LockPriceUnusable => wire::CancelReason::LockPriceUnusable,
        C::ClosePriceUnusable => wire::CancelReason::ClosePriceUnusable,
        C::Tie => wire::CancelReason::Tie,
        C::OneSidedPool => wire::CancelReason::OneSidedPool,
        C::Expired => wire::CancelReason::Expired,
        C::None => wire::CancelReason::Unknown,
    }
}

/// A stored round as `/api/rounds` shows it (its state, outcome and reason were checked when the row was read).
fn round(r: RoundRow) -> wire::Round {
    wire::Round {
        state: r.state,
        outcome: r.outcome,
        reason: r.reason.map(cancel_reason),
        chain: r.chain,
        market_id: r.market_id,
        epoch: r.epoch,
        lock_price: r.lock_price,
        close_price: r.close_price,
        up_wei: r.up_wei,
        down_wei: r.down_wei,
        reward_wei: r.reward_wei,
        treasury_fee_wei: r.treasury_fee_wei,
        delay_blocks: r.delay_blocks,
    }
}

/// A stored prediction as `/api/predictions` shows it: its value only once revealed, or once committed when
/// `unsealed` (forecasts published: the value beside the commitment it must match at the reveal); the salt never
/// (before the reveal it would leak the forecast; the reveal transaction carries it).
fn prediction(p: PredictionRow, unsealed: bool) -> wire::Prediction {
    let revealed = p.reveal_tx.is_some();
    let shown = revealed || (unsealed && p.commit_tx.is_some());
    wire::Prediction {
        brier: p.brier,
        chain: p.chain,
        commitment: p.commitment,
        committed: p.commit_tx.is_some(),
        epoch: p.epoch,
        hit: p.hit,
        market: p.market_id,
        outcome: p.outcome,
        p_up_bps: shown.then_some(p.p_up_bps),
        publisher: Some(p.publisher),
        reveal_tx: p.reveal_tx,
        revealed,
    }
}

fn track_record(t: TrackRecordRow) -> wire::TrackRecord {
    wire::TrackRecord {
        chain: t.chain,
        publisher: t.publisher,
        committed: t.committed,
        hits: t.hits,
        misses: t.misses,
        voided: t.voided,
        expired: t.expired,
        brier_sum: t.brier_sum,
    }
}

/// `/health`'s body and whether the keeper is healthy.
async fn health_body(s: &ApiState) -> anyhow::Result<wire::Health> {
    let store_ok = s.cache.store_ok(&s.store).await;
    let mut chains: std::collections::BTreeMap<String, wire::ChainHealth> =
        s.chains.iter().map(|c| (c.name.clone(), chain_health(&c.health.lock()))).collect();
    chains.extend(s.solana.iter().map(|c| (c.name.clone(), chain_health(&c.health.lock()))));
    let healthy = store_ok && chains.values().all(|c| c.healthy);
    // Each market's lease as this keeper sees it: leader, standby (another keeper leads) or single (SQLite), and the
    // last time this keeper lost it (it stopped sending then).
    let markets = s
        .stats
        .iter()
        .map(|m| {
            let m = m.lock();
            let lease =
                lease(&m.lease).map_err(|e| anyhow::anyhow!("{} market {}: lease role {e}", m.chain, m.market))?;
            Ok(wire::MarketLease { chain: m.chain.clone(), lease, market: m.market })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let status = if healthy { wire::HealthStatus::Ok } else { wire::HealthStatus::Degraded };
    Ok(wire::Health { chains, markets, status, store: store_ok })
}

fn chain_health(h: &crate::chain::Health) -> wire::ChainHealth {
    wire::ChainHealth {
        head_block: h.head_block,
        head_time: h.head_time,
        lag_s: h.lag_s,
        healthy: h.healthy,
        last_success_ms: h.last_success_ms,
        last_error: h.last_error.clone(),
        rpc_endpoint: h.rpc_endpoint as u64,
        endpoints: h
            .endpoints
            .iter()
            .map(|e| wire::EndpointStatus { endpoint: e.endpoint.clone(), up: e.up, last_error: e.last_error.clone() })
            .collect(),
    }
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
    /// Whether the request sees forecasts before their reveal: all do when the operator publishes them
    /// (`[api] publish_forecasts`), otherwise those carrying the API token (`Authorization: Bearer …`).
    fn unsealed(&self, headers: &HeaderMap) -> bool {
        if self.publish_forecasts {
            return true;
        }
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
    match health_body(&s).await {
        Ok(body) => {
            let code = match body.status {
                wire::HealthStatus::Ok => StatusCode::OK,
                wire::HealthStatus::Degraded => StatusCode::SERVICE_UNAVAILABLE,
            };
            (code, Json(body)).into_response()
        }
        Err(e) => internal(e),
    }
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

async fn rounds(State(s): State<ApiState>, Query(q): Query<wire::RoundsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let key = CacheKey::Rounds { chain: q.chain.clone(), market: q.market, limit };
    match s.cache.body(&s.store, key, || rounds_body(&s.store, q.chain.as_deref(), q.market, limit)).await {
        Ok(b) => json_body(b),
        Err(e) => internal(e),
    }
}

async fn predictions(State(s): State<ApiState>, Query(q): Query<wire::PredictionsQuery>) -> Response {
    // Committed values only when the operator publishes forecasts: a token holder reads them from /ws and
    // /api/markets, and this body stays the same for every client otherwise.
    let unsealed = s.publish_forecasts;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let chains: Vec<String> = match &q.chain {
        Some(c) => vec![c.clone()],
        // The Solana clusters' forecasts too (`[[solana]] forecasts = true`).
        None => s.chains.iter().map(|c| c.name.clone()).chain(s.solana.iter().map(|c| c.name.clone())).collect(),
    };
    let key = CacheKey::Predictions { chain: q.chain.clone(), limit, unsealed };
    match s.cache.body(&s.store, key, || predictions_body(&s.store, &chains, limit, unsealed)).await {
        Ok(b) => json_body(b),
        Err(e) => internal(e),
    }
}

async fn ws(
    State(s): State<ApiState>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    Query(q): Query<wire::WsQuery>,
    headers: HeaderMap,
    up: WsUpgrade,
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

    /// The `round_cancelled` signal carried the contract reason's text before it carried the API's type: the bytes
    /// are the same for every reason a refund is emitted with.
    #[test]
    fn a_refund_reason_reads_as_the_contract_s_text() {
        for &r in kronos_contracts::CancelReason::ALL {
            let wire = serde_json::to_value(cancel_reason(r)).unwrap();
            if r == kronos_contracts::CancelReason::None {
                assert_eq!(wire, "unknown", "never emitted with a refund");
            } else {
                assert_eq!(wire, r.as_str());
            }
        }
    }

    #[test]
    fn a_body_is_fresh_until_the_store_writes_or_it_is_too_old() {
        let max = Duration::from_secs(1);
        assert!(fresh(7, Duration::ZERO, 7, max));
        assert!(fresh(7, max, 7, max));
        assert!(!fresh(7, Duration::ZERO, 8, max), "a write ends it");
        assert!(!fresh(7, max + Duration::from_millis(1), 7, max), "so does its age");
    }

    /// A keeper API over an in-memory store holding a market, three rounds (locked, settled, refunded), a sealed and
    /// a revealed prediction and a track record, with one market driver leading its lease.
    async fn fixture() -> ApiState {
        use crate::store::*;
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store
            .upsert_market(&MarketRow {
                chain: "base".into(),
                market_id: 1,
                contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
                feed: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".into(),
                sequencer: None,
                token: "0x0000000000000000000000000000000000000000".into(),
                pair: Some("BTC/USD".into()),
                genesis: 1_764_600_000,
                interval_s: 300,
                settle_window_s: 3600,
                max_price_age_s: 3600,
                feed_decimals: 8,
            })
            .await
            .unwrap();
        use kronos_contracts::CancelReason;
        use wire::{Outcome, RoundState};
        let round = |epoch, state: RoundState, outcome: Option<Outcome>, reason: Option<CancelReason>| RoundRow {
            chain: "base".into(),
            market_id: 1,
            epoch,
            state,
            lock_price: Some("97012.5".into()),
            close_price: outcome.map(|_| "97100".into()),
            outcome,
            reason,
            up_wei: "1500".into(),
            down_wei: "500".into(),
            reward_wei: (state == RoundState::Settled).then(|| "1940".into()),
            treasury_fee_wei: (state == RoundState::Settled).then(|| "60".into()),
            delay_blocks: Some(epoch % 3),
        };
        let cancelled = round(40, RoundState::Cancelled, Some(Outcome::None), Some(CancelReason::OneSidedPool));
        store.upsert_round(&cancelled).await.unwrap();
        store.upsert_round(&round(41, RoundState::Settled, Some(Outcome::Up), None)).await.unwrap();
        store.upsert_round(&round(42, RoundState::Locked, None, None)).await.unwrap();
        let publisher = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        for (epoch, p_up_bps) in [(41, 6100), (42, 3900)] {
            store
                .insert_prediction(&PredictionRow {
                    chain: "base".into(),
                    market_id: 1,
                    epoch,
                    publisher: publisher.into(),
                    p_up_bps,
                    up: p_up_bps > 5000,
                    salt: format!("0x{epoch:064x}"),
                    commitment: format!("0x{:064x}", epoch * 7),
                    commit_tx: Some(format!("0xc{epoch}")),
                    reveal_tx: None,
                    outcome: None,
                    hit: None,
                    brier: None,
                })
                .await
                .unwrap();
        }
        let reveal = crate::store::Reveal { tx: "0xr41", outcome: Outcome::Up, hit: Some(true), brier: Some(1521) };
        store.set_revealed("base", 1, 41, publisher, &reveal).await.unwrap();
        store
            .upsert_track_record(&TrackRecordRow {
                chain: "base".into(),
                publisher: publisher.into(),
                committed: 2,
                hits: 1,
                misses: 0,
                voided: 0,
                expired: 0,
                brier_sum: "1521".into(),
            })
            .await
            .unwrap();
        let stats = MarketStats {
            chain: "base".into(),
            market: 1,
            pair: "BTC/USD".into(),
            betting_epoch: 43,
            next_checkpoint: 44,
            last_lock_price: Some("97012.5".parse().unwrap()),
            last_close_price: Some("97100".parse().unwrap()),
            last_result: "#41 up".into(),
            settled: 1,
            cancelled: 1,
            delays: vec![1, 2],
            execute_gas: vec![181_234, 179_001],
            pool_up_wei: "1500".into(),
            pool_down_wei: "0".into(),
            pool_epoch: Some(43),
            last_p_up: Some(0.39),
            lease: LeaseStatus {
                role: "leader".into(),
                epoch: 3,
                leader: Some("a1b2c3d4".into()),
                since_ms: 1_764_619_000_000,
                last_loss: None,
            },
            ..Default::default()
        };
        let bus = Bus::new(16);
        let stats = vec![Arc::new(Mutex::new(stats))];
        ApiState::new(store, bus, Arc::new(Metrics::default()), vec![], stats, None, Limits::default())
    }

    #[tokio::test]
    async fn the_keepers_answers_parse_into_the_api_types() {
        let s = fixture().await;
        let sealed: wire::Markets = wire::parse("/api/markets", &markets_body(&s, false).await.unwrap()).unwrap();
        assert_eq!((sealed.markets.len(), sealed.live[0].last_p_up), (1, None), "the latest forecast is sealed");
        assert_eq!(sealed.live[0].lease.role, wire::LeaseRole::Leader);
        assert_eq!(sealed.live[0].last_lock_price.as_deref(), Some("97012.5"));
        let unsealed: wire::Markets = wire::parse("/api/markets", &markets_body(&s, true).await.unwrap()).unwrap();
        assert_eq!(unsealed.live[0].last_p_up, Some(0.39));

        let rounds: Vec<wire::Round> =
            wire::parse("/api/rounds", &rounds_body(&s.store, None, None, 10).await.unwrap()).unwrap();
        let got: Vec<_> = rounds.iter().map(|r| (r.epoch, r.state, r.outcome, r.reason)).collect();
        use wire::{CancelReason, Outcome, RoundState};
        assert_eq!(
            got,
            [
                (42, RoundState::Locked, None, None),
                (41, RoundState::Settled, Some(Outcome::Up), None),
                (40, RoundState::Cancelled, Some(Outcome::None), Some(CancelReason::OneSidedPool)),
            ]
        );

        let body = predictions_body(&s.store, &["base".into()], 10, false).await.unwrap();
        let p: wire::Predictions = wire::parse("/api/predictions", &body).unwrap();
        let got: Vec<_> = p.predictions.iter().map(|p| (p.epoch, p.revealed, p.p_up_bps, p.outcome, p.hit)).collect();
        assert_eq!(got, [(42, false, None, None, None), (41, true, Some(6100), Some(Outcome::Up), Some(true))]);
        assert!(!String::from_utf8_lossy(&body).contains(&format!("{:064x}", 42)), "no salt, sealed or not");
        assert_eq!((p.track_records[0].hits, p.track_records[0].brier_sum.as_str()), (1, "1521"));

        let r = health(State(s.clone())).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let h: wire::Health = wire::parse("/health", &body).unwrap();
        assert_eq!(
            (h.status, h.store, h.markets[0].lease.role),
            (wire::HealthStatus::Ok, true, wire::LeaseRole::Leader)
        );
    }

    /// The bodies are byte for byte what the keeper served before the API types (the `json!` of the store's rows
    /// and the drivers' figures), so the dApp and older bots read them as before.
    #[tokio::test]
    async fn the_bodies_are_the_same_bytes_as_before_the_api_types() {
        use serde_json::json;
        let s = fixture().await;
        let stats: Vec<MarketStats> = s.stats.iter().map(|m| m.lock().clone()).collect();
        let markets = s.store.markets().await.unwrap();
        let before = serde_json::to_vec(&json!({ "markets": markets, "live": stats })).unwrap();
        assert_eq!(markets_body(&s, true).await.unwrap(), before);

        let before = serde_json::to_vec(&s.store.rounds(None, None, 10).await.unwrap()).unwrap();
        assert_eq!(rounds_body(&s.store, None, None, 10).await.unwrap(), before);

        let mut out = Vec::new();
        for p in s.store.recent_predictions("base", 10).await.unwrap() {
            let revealed = p.reveal_tx.is_some();
            out.push(json!({
                "chain": p.chain, "market": p.market_id, "epoch": p.epoch,
                "p_up_bps": if revealed { Some(p.p_up_bps) } else { None },
                "committed": p.commit_tx.is_some(), "commitment": p.commitment,
                "revealed": revealed, "outcome": p.outcome, "hit": p.hit, "brier": p.brier,
                // Added since: who committed it and the reveal's transaction (the page checks the reveal on chain).
                "publisher": p.publisher, "reveal_tx": p.reveal_tx,
            }));
        }
        let records = s.store.track_records().await.unwrap();
        let before = serde_json::to_vec(&json!({ "predictions": out, "track_records": records })).unwrap();
        assert_eq!(predictions_body(&s.store, &["base".into()], 10, false).await.unwrap(), before);

        let leases: Vec<_> =
            stats.iter().map(|m| json!({ "chain": m.chain, "market": m.market, "lease": m.lease })).collect();
        let before = json!({ "status": "ok", "store": true, "chains": {}, "markets": leases });
        assert_eq!(serde_json::to_vec(&health_body(&s).await.unwrap()).unwrap(), serde_json::to_vec(&before).unwrap());
    }

    /// What a client without the API token gets from a keeper that seals forecasts (the default) and from one that
    /// publishes them (`[api] publish_forecasts = true`): `/api/markets`' latest P(up), the committed but unrevealed
    /// value on `/api/predictions` (with its commitment; the salt never), `/api/chains`' `forecasts_public` and
    /// whether `/ws` is sealed.
    #[tokio::test]
    async fn forecasts_reach_everyone_before_the_reveal_only_when_published() {
        async fn read<T: serde::de::DeserializeOwned>(what: &str, r: Response) -> (T, String) {
            assert_eq!(r.status(), StatusCode::OK, "{what}");
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (wire::parse(what, &body).unwrap(), String::from_utf8_lossy(&body).into_owned())
        }
        let q = || Query(wire::PredictionsQuery { chain: Some("base".into()), limit: None });
        for publish in [false, true] {
            let s = fixture().await.publishing_forecasts(publish);
            let (m, _): (wire::Markets, _) =
                read("/api/markets", markets(State(s.clone()), HeaderMap::new()).await).await;
            assert_eq!(m.live[0].last_p_up, publish.then_some(0.39), "publish_forecasts = {publish}");
            let (p, body): (wire::Predictions, _) =
                read("/api/predictions", predictions(State(s.clone()), q()).await).await;
            let unrevealed = p.predictions.iter().find(|p| p.epoch == 42).unwrap();
            assert_eq!(
                (unrevealed.revealed, unrevealed.p_up_bps, unrevealed.commitment.as_str()),
                (false, publish.then_some(3900), format!("0x{:064x}", 42 * 7).as_str()),
                "publish_forecasts = {publish}"
            );
            assert!(!body.contains(&format!("{:064x}", 42)), "no salt, published or not");
            let (c, _): (wire::Chains, _) = read("/api/chains", crate::web::chains(State(s.clone())).await).await;
            assert_eq!(c.forecasts_public, publish);
            assert_eq!(s.unsealed(&HeaderMap::new()), publish, "/ws is sealed unless published");
        }
    }

    #[test]
    fn live_figures_are_kept_shorter_than_rows() {
        assert_eq!(CacheKey::Markets { unsealed: false }.max_age(), LIVE_MAX_AGE);
        assert_eq!(CacheKey::Predictions { chain: None, limit: 1, unsealed: false }.max_age(), CACHE_MAX_AGE);
        assert!(LIVE_MAX_AGE < CACHE_MAX_AGE);
    }
}
