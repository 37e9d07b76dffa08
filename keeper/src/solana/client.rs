//! `RpcClient`s over the configured URLs (HTTP/1.1), reads at `confirmed`, with failover: a call that fails in
//! transport (connection refused, timeout, HTTP error) is tried on the next URL, and the first URL that answers
//! becomes the one tried first. A JSON-RPC error answer (a preflight failure, …) is an answer, not a failover.
//! Endpoints are named by host only: URLs may carry API keys.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use solana_client::client_error::{ClientError, ClientErrorKind};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;

/// One endpoint's state as `/health` shows it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub up: bool,
    pub last_error: Option<String>,
}

/// The configured endpoints with failover.
pub struct SolClient {
    clients: Vec<RpcClient>,
    endpoints: Mutex<Vec<Endpoint>>,
    active: AtomicUsize,
    pub(crate) failovers: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
}

/// Whether `e` is a transport failure (try the next URL) rather than the node's answer.
pub fn is_transport(e: &ClientError) -> bool {
    matches!(e.kind(), ClientErrorKind::Io(_) | ClientErrorKind::Reqwest(_) | ClientErrorKind::Middleware(_))
}

impl SolClient {
    pub fn new(urls: &[url::Url]) -> SolClient {
        let clients = urls
            .iter()
            .map(|u| {
                RpcClient::new_with_timeout_and_commitment(
                    u.to_string(),
                    Duration::from_secs(10),
                    CommitmentConfig::confirmed(),
                )
            })
            .collect();
        let endpoints = urls
            .iter()
            .map(|u| Endpoint {
                host: format!("{}:{}", u.host_str().unwrap_or("?"), u.port_or_known_default().unwrap_or(0)),
                up: true,
                last_error: None,
            })
            .collect();
        SolClient {
            clients,
            endpoints: Mutex::new(endpoints),
            active: AtomicUsize::new(0),
            failovers: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
        }
    }

    /// The index of the endpoint tried first.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.lock().clone()
    }

    /// Runs `f` on the active endpoint, then on the others in order while the failure is in transport.
    pub async fn call<'b, T>(
        &'b self,
        f: impl Fn(&'b RpcClient) -> BoxFuture<'b, Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let n = self.clients.len();
        let first = self.active();
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            match f(&self.clients[i]).await {
                Ok(v) => {
                    if i != first {
                        self.active.store(i, Ordering::Relaxed);
                        self.failovers.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(endpoint = %self.endpoints.lock()[i].host, "solana: switched RPC endpoint");
                    }
                    self.endpoints.lock()[i].up = true;
                    return Ok(v);
                }
                Err(e) if is_transport(&e) => {
                    self.transport_errors.fetch_add(1, Ordering::Relaxed);
                    let mut eps = self.endpoints.lock();
                    eps[i].up = false;
                    // Transport errors name the URL: keep the kind only.
                    eps[i].last_error = Some(transport_kind(&e));
                    drop(eps);
                    last = Some(e);
                }
                Err(e) => {
                    self.endpoints.lock()[i].up = true;
                    return Err(e);
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }
}

/// A transport error's kind without its text (which names the URL, and so may carry an API key).
pub fn transport_kind(e: &ClientError) -> String {
    match e.kind() {
        ClientErrorKind::Io(io) => format!("i/o error ({:?})", io.kind()),
        ClientErrorKind::Reqwest(r) if r.is_connect() => "connection failed".into(),
        ClientErrorKind::Reqwest(r) if r.is_timeout() => "timed out".into(),
        ClientErrorKind::Reqwest(r) => match r.status() {
            Some(s) => format!("HTTP {s}"),
            None => "HTTP request failed".into(),
        },
        _ => "transport error".into(),
    }
}
