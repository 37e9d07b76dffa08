//! A JSON-RPC proxy in front of a node, with faults switched on and off by the test: the whole endpoint down
//! (HTTP 503, a transport error to clients), or the next `n` calls of one method failed. It answers on any path, so
//! a URL can carry an API key the way hosted RPC providers' URLs do (`http://127.0.0.1:port/v2/<key>`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

struct Inner {
    upstream: String,
    client: alloy::transports::http::reqwest::Client,
    down: AtomicBool,
    fail: Mutex<HashMap<String, u32>>,
    answers: Mutex<HashMap<String, serde_json::Value>>,
    served: AtomicU64,
    failed: AtomicU64,
}

/// A running proxy (stops when dropped).
#[derive(Clone)]
pub struct RpcProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Inner>,
    task: Arc<tokio::task::AbortHandle>,
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl RpcProxy {
    /// Starts a proxy forwarding to `upstream` (an `http://` URL).
    pub async fn start(upstream: &str) -> RpcProxy {
        let inner = Arc::new(Inner {
            upstream: upstream.to_string(),
            client: alloy::transports::http::reqwest::Client::new(),
            down: AtomicBool::new(false),
            fail: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(forward).with_state(inner.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        RpcProxy { url, inner, task: Arc::new(task.abort_handle()) }
    }

    /// Takes the endpoint down (every call answers 503) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Fails the next `n` calls of `method` with a 503 (the node never sees them).
    pub fn fail_next(&self, method: &str, n: u32) {
        self.inner.fail.lock().insert(method.to_string(), n);
    }

    /// Answers every (single, not batched) call of `method` with `result` itself, as another node would (e.g.
    /// `web3_clientVersion` → `"Geth/v1.14.11"`); the node never sees them.
    pub fn answer(&self, method: &str, result: serde_json::Value) {
        self.inner.answers.lock().insert(method.to_string(), result);
    }

    /// Calls of `method` still to be failed.
    pub fn pending_failures(&self, method: &str) -> u32 {
        self.inner.fail.lock().get(method).copied().unwrap_or(0)
    }

    /// Calls forwarded to the node.
    pub fn served(&self) -> u64 {
        self.inner.served.load(Ordering::SeqCst)
    }

    /// Calls answered with a failure.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::SeqCst)
    }
}

fn methods(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v["method"].as_str().map(str::to_string)).collect(),
        Ok(v) => v["method"].as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn forward(State(s): State<Arc<Inner>>, body: Bytes) -> Response {
    let fail = s.down.load(Ordering::SeqCst) || {
        let mut f = s.fail.lock();
        methods(&body).iter().any(|m| match f.get_mut(m) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
    };
    if fail {
        s.failed.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "injected fault").into_response();
    }
    s.served.fetch_add(1, Ordering::SeqCst);
    if let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(result) = req["method"].as_str().and_then(|m| s.answers.lock().get(m).cloned()) {
            let reply = serde_json::json!({ "jsonrpc": "2.0", "id": req["id"], "result": result });
            return (StatusCode::OK, [("content-type", "application/json")], reply.to_string()).into_response();
        }
    }
    let r = s.client.post(&s.upstream).header("content-type", "application/json").body(body.to_vec()).send().await;
    match r {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes.to_vec()).into_response()
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "upstream unreachable").into_response(),
    }
}
