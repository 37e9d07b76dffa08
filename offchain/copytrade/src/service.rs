//! The copy-trader's HTTP service: `/health`, `/metrics` (Prometheus), `/api/status`, `/api/stats`, and
//! `POST /api/emergency-stop` / `POST /api/resume`, and `/ws` (its signals as JSON).
//!
//! The two control endpoints need `Authorization: Bearer <token>` (the token named by `copytrade.api_token_env`,
//! compared in constant time); without a configured token they are refused. A page a browser opens cannot send
//! that header to another origin without the server's consent (none is given), so it cannot stop or resume the
//! copy-trader. The read-only views have no authentication: the service refuses to listen beyond loopback
//! without a token.
//!
//! Every endpoint is under the default limits of [`kronos_common::http_guard`]: connections, `/ws` subscribers, a
//! per-address rate, body size, timeouts; a browser page of any origin is refused the WebSocket and the POSTs.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kronos_common::http_guard::{Guard, Limits};
use kronos_common::signal_ws::Hub;
use kronos_common::signal_ws::WsUpgrade;

use crate::control::{ControlAccepted, ControlCommand};
use crate::engine::Handles;

/// The router under the default limits ([`kronos_common::http_guard::Limits::default`]).
pub fn router(h: Handles) -> Router {
    let guard = Guard::new(Limits::default(), h.metrics.guard.clone());
    router_with(h, &guard)
}

/// The router under `guard`'s request limits (rate, origin, body, timeout) and its WebSocket limits;
/// [`crate::run::serve`] adds the connection limits.
pub fn router_with(h: Handles, guard: &Guard) -> Router {
    // The control token's holder (the operator: the bot, the CLI) is never rate-limited, so a page that drains the
    // address's bucket cannot hold up an emergency stop.
    if let Some(t) = &h.control_token {
        guard.exempt_bearer(t.clone());
    }
    let hub = Hub::new(h.bus.clone(), guard.clone());
    let r = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/stats", get(stats))
        .route("/api/emergency-stop", post(emergency))
        .route("/api/resume", post(resume))
        .route("/ws", get(ws))
        .layer(Extension(hub))
        .with_state(h);
    guard.layer(r)
}

async fn health(State(h): State<Handles>) -> Response {
    let store_ok = h.store.ping().await.is_ok();
    let st = h.status.lock().clone();
    // A control value that cannot be read (named by its key) makes the service degraded until it is fixed.
    let ok = store_ok && st.ready && st.healthy && st.control_errors.is_empty();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" }, "store": store_ok, "ready": st.ready, "detail": st.detail,
        "mode": st.mode, "emergency": st.risk.emergency, "lead_stream_connected": st.lead_stream_connected,
        "control_errors": st.control_errors,
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body)).into_response()
}

async fn metrics(State(h): State<Handles>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], h.metrics.encode()).into_response()
}

async fn status(State(h): State<Handles>) -> Response {
    Json(h.status.lock().clone()).into_response()
}

async fn stats(State(h): State<Handles>) -> Response {
    match crate::report::stats(&h.store, 0).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

/// `None` when the request carries the control token; the refusal otherwise.
fn refuse_unless_authorized(h: &Handles, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &h.control_token else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "control API disabled: no token configured (copytrade.api_token_env); use `kronos copytrade \
                 emergency-stop` / `resume`",
            )
                .into_response(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if token.matches(g) => None,
        _ => Some(
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid bearer token is required")
                .into_response(),
        ),
    }
}

async fn emergency(State(h): State<Handles>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_authorized(&h, &headers) {
        return r;
    }
    // Appended to the control log first (it holds even if the engine is busy or restarting), then the engine is
    // woken at once.
    // The answer names the command's sequence number: the copy-trader's report of what it did names it too.
    let cmd = ControlCommand::EmergencyStop { reason: "emergency stop requested over the API".into() };
    match h.control.send(&cmd, "the HTTP API").await {
        Ok(seq) => (StatusCode::ACCEPTED, Json(ControlAccepted { emergency: true, seq })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

async fn resume(State(h): State<Handles>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unless_authorized(&h, &headers) {
        return r;
    }
    match h.control.send(&ControlCommand::Resume, "the HTTP API").await {
        Ok(seq) => (StatusCode::ACCEPTED, Json(ControlAccepted { emergency: false, seq })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct WsQuery {
    types: Option<String>,
}

/// Every signal the copy-trader publishes (orders, fills, stops, positions, lead changes, risk events) as JSON.
async fn ws(
    Extension(hub): Extension<Hub>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Query(q): Query<WsQuery>,
    up: WsUpgrade,
) -> Response {
    let filter = match kronos_common::signal_ws::parse_types(q.types.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.response(),
    };
    hub.upgrade_from(up, peer.map(|p| p.0 .0.ip()), filter, false)
}
