//! The HTTP/WebSocket service: `/health`, `/metrics` (Prometheus), `/api/markets`, `/api/rounds`,
//! `/api/predictions`, and `/ws` streaming every signal as JSON. Forecasts are sealed until their on-chain reveal:
//! `/ws` leaves out the forecast and commitment signals and `/api/markets` the latest P(up) unless the request
//! carries the API token (`Authorization: Bearer …`, `keeper.api_token_env`).
//!
//! Every endpoint is under the limits of [`kronos_common::http_guard`] (`[api]` in the configuration): connections,
//! `/ws` subscribers, a per-address rate, body size, timeouts, allowed browser origins.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
        let hub = Hub::new(bus.clone(), Guard::new(limits, metrics.guard.clone()));
        ApiState { store, bus, metrics, chains, stats, token, hub }
    }
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
        .with_state(state);
    guard.layer(r)
}

async fn health(State(s): State<ApiState>) -> Response {
    let store_ok = s.store.ping().await.is_ok();
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
    let known = s.store.markets().await.unwrap_or_default();
    Json(serde_json::json!({ "markets": known, "live": stats })).into_response()
}

#[derive(Debug, Deserialize)]
struct RoundsQuery {
    chain: Option<String>,
    market: Option<i64>,
    limit: Option<i64>,
}

async fn rounds(State(s): State<ApiState>, Query(q): Query<RoundsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    match s.store.rounds(q.chain.as_deref(), q.market, limit).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PredictionsQuery {
    chain: Option<String>,
    limit: Option<i64>,
}

async fn predictions(State(s): State<ApiState>, Query(q): Query<PredictionsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let chains: Vec<String> = match q.chain {
        Some(c) => vec![c],
        None => s.chains.iter().map(|c| c.name.clone()).collect(),
    };
    let mut out = Vec::new();
    for c in chains {
        for p in s.store.recent_predictions(&c, limit).await.unwrap_or_default() {
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
    let records = s.store.track_records().await.unwrap_or_default();
    Json(serde_json::json!({ "predictions": out, "track_records": records })).into_response()
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    /// Comma-separated signal types to receive (default: all).
    types: Option<String>,
}

async fn ws(State(s): State<ApiState>, Query(q): Query<WsQuery>, headers: HeaderMap, up: WebSocketUpgrade) -> Response {
    let filter = kronos_common::signal_ws::parse_types(q.types.as_deref());
    let sealed = !s.unsealed(&headers);
    s.hub.upgrade(up, filter, sealed)
}
