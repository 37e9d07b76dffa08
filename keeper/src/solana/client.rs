//! `RpcClient`s over the configured URLs (HTTP/1.1), reads at `confirmed`, with failover: a call that fails in
//! transport (connection refused, timeout, HTTP error) is tried on the next URL, and the first URL that answers
//! becomes the one tried first. A JSON-RPC error answer (a preflight failure, …) is an answer, not a failover.
//! Endpoints are named by host only: URLs may carry API keys, so their secret parts (user info, path, query) are
//! registered with the process-wide redactor, and a transport error leaves [`SolClient::call`] without its text
//! (which names the URL): as `ClientErrorKind::Custom` naming the endpoints by host and the failure by kind.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use solana_client::client_error::{ClientError, ClientErrorKind};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;

use super::rules;

/// One endpoint's state as `/health` shows it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub up: bool,
    pub last_error: Option<String>,
    /// Slots behind the freshest endpoint at the last lag check ([`SolClient::follow_freshest`]), if it answered.
    pub behind: Option<u64>,
}

/// The configured endpoints with failover.
pub struct SolClient {
    clients: Vec<RpcClient>,
    endpoints: Mutex<Vec<Endpoint>>,
    active: AtomicUsize,
    pub(crate) failovers: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
}

/// How often the endpoints' slots are compared (one `getSlot` to each): a lag worth leaving
/// ([`rules::MAX_SLOTS_BEHIND`], about 13 s) is then found within a few seconds.
pub const LAG_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long the lag check waits for an endpoint's slot; one that has not answered by then counts as not answering.
const LAG_CHECK_WAIT: Duration = Duration::from_secs(2);

/// Whether `e` is a transport failure (try the next URL) rather than the node's answer.
pub fn is_transport(e: &ClientError) -> bool {
    matches!(e.kind(), ClientErrorKind::Io(_) | ClientErrorKind::Reqwest(_) | ClientErrorKind::Middleware(_))
}

impl SolClient {
    pub fn new(urls: &[url::Url]) -> SolClient {
        for u in urls {
            for s in crate::rpc::url_secrets(u) {
                kronos_common::Redactor::global().register(&s);
            }
        }
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
                behind: None,
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

    /// Every endpoint's latest confirmed slot, asked of all at once; `None` for one that errs or has not answered
    /// within `wait`.
    pub async fn slots(&self, wait: Duration) -> Vec<Option<u64>> {
        let asks = self.clients.iter().map(|c| async move {
            tokio::time::timeout(wait, c.get_slot_with_commitment(CommitmentConfig::confirmed())).await.ok()?.ok()
        });
        futures::future::join_all(asks).await
    }

    /// Compares the endpoints' slots and moves to the freshest when the one in use is far behind it
    /// ([`rules::freshest_endpoint`]): a node that answers but lags is left as one that does not answer is. Called
    /// every [`LAG_CHECK_EVERY`] beside the passes (never with one endpoint). Returns whether it moved.
    pub async fn follow_freshest(&self) -> bool {
        if self.clients.len() < 2 {
            return false;
        }
        let slots = self.slots(LAG_CHECK_WAIT).await;
        let best = slots.iter().flatten().max().copied();
        let active = self.active();
        let to = rules::freshest_endpoint(&slots, active);
        let mut eps = self.endpoints.lock();
        for (e, s) in eps.iter_mut().zip(&slots) {
            e.behind = s.zip(best).map(|(s, b)| b.saturating_sub(s));
        }
        if to == active {
            return false;
        }
        self.active.store(to, Ordering::Relaxed);
        self.failovers.fetch_add(1, Ordering::Relaxed);
        let behind = eps[active].behind.map_or_else(|| "no slot".to_string(), |b| format!("{b} slots behind"));
        tracing::warn!(from = %eps[active].host, to = %eps[to].host, lag = %behind, "solana: switched RPC endpoint: the one in use is far behind");
        true
    }

    /// Runs `f` on the active endpoint, then on the others in order while the failure is in transport. When every
    /// endpoint failed in transport the error is [`TransportFailed`]'s text only (hosts and kinds, never a URL).
    pub async fn call<'b, T>(
        &'b self,
        f: impl Fn(&'b RpcClient) -> BoxFuture<'b, Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let n = self.clients.len();
        let first = self.active();
        let mut failures = Vec::new();
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
                    failures.push(format!("{}: {}", eps[i].host, transport_kind(&e)));
                    drop(eps);
                }
                Err(e) => {
                    self.endpoints.lock()[i].up = true;
                    return Err(e);
                }
            }
        }
        Err(ClientError::from(ClientErrorKind::Custom(format!("{TRANSPORT_FAILED}{}", failures.join("; ")))))
    }
}

/// How the error of a call that failed in transport on every endpoint begins.
pub const TRANSPORT_FAILED: &str = "no RPC endpoint answers: ";

/// A transport error's kind without its text (which names the URL, and so may carry an API key).
pub fn transport_kind(e: &ClientError) -> String {
    match e.kind() {
        // Already stripped by `SolClient::call`.
        ClientErrorKind::Custom(s) if s.starts_with(TRANSPORT_FAILED) => s.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Audit SOL H1: reqwest's error names the whole URL (`for url (http://…/?api-key=…)`); what leaves the client
    /// names the host and the kind only, and the URL's secret parts are redacted from anything logged.
    #[tokio::test]
    async fn a_dead_endpoint_s_api_key_never_leaves_the_client() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let keyed: url::Url = format!("http://127.0.0.1:{port}/v1/PathSecret42/?api-key=Secret42").parse().unwrap();
        // The leak this guards against: the plain RpcClient's error carries the URL.
        let plain = RpcClient::new(keyed.to_string());
        let raw = plain.get_version().await.unwrap_err();
        assert!(format!("{raw}").contains("Secret42"), "{raw}");
        let c = SolClient::new(std::slice::from_ref(&keyed));
        let e = c.call(|c| c.get_version().boxed()).await.unwrap_err();
        let text = format!("{e} {e:?} {e:#}");
        assert!(!text.contains("Secret42"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}: connection failed")), "{text}");
        assert_eq!(transport_kind(&e), format!("{TRANSPORT_FAILED}127.0.0.1:{port}: connection failed"));
        let h = format!("{:?}", c.endpoints());
        assert!(!h.contains("Secret42") && h.contains("up: false"), "{h}");
        let r = kronos_common::Redactor::global();
        assert!(!r.redact(&format!("{raw}")).contains("Secret42"), "{}", r.redact(&format!("{raw}")));
    }

    /// Issue 15: an endpoint that answers but is far behind the freshest one loses to it; one within
    /// [`rules::MAX_SLOTS_BEHIND`] is kept (jitter never moves the keeper).
    #[tokio::test]
    async fn an_endpoint_far_behind_is_left_for_the_freshest() {
        use kronos_testkit::solana_rpc::LocalRpc;
        let (behind, fresh) = (LocalRpc::start().await.unwrap(), LocalRpc::start().await.unwrap());
        let http = reqwest::Client::new();
        let warp = |rpc: &LocalRpc, slots: u64| {
            let req = http.post(format!("{}control/warp", rpc.url())).json(&serde_json::json!({ "slots": slots }));
            async move { assert!(req.send().await.unwrap().status().is_success()) }
        };
        let far = rules::MAX_SLOTS_BEHIND + 8;
        warp(&fresh, far).await;
        let urls: Vec<url::Url> = [behind.url(), fresh.url()].iter().map(|u| u.parse().unwrap()).collect();
        let c = SolClient::new(&urls);
        let slots = c.slots(Duration::from_secs(5)).await;
        let (b, f) = (slots[0].unwrap(), slots[1].unwrap());
        assert!(f - b > rules::MAX_SLOTS_BEHIND, "{slots:?}");
        assert!(c.follow_freshest().await);
        assert_eq!(c.active(), 1);
        assert_eq!(c.endpoints()[0].behind, Some(f - b));
        assert_eq!(c.failovers.load(Ordering::Relaxed), 1);
        // Caught up to within the threshold: a client on it stays there.
        warp(&behind, far - 4).await;
        let c = SolClient::new(&urls);
        let slots = c.slots(Duration::from_secs(5)).await;
        let lag = slots[1].unwrap() - slots[0].unwrap();
        assert!(lag > 0 && lag <= rules::MAX_SLOTS_BEHIND, "{slots:?}");
        assert!(!c.follow_freshest().await);
        assert_eq!(c.active(), 0);
    }
}
