//! RPC access with ordered failover.
//!
//! A chain has one or more RPC URLs. Requests go to the current endpoint; on a transport error (connection refused,
//! timeout, HTTP 5xx/429) the next endpoint is tried and becomes current. A JSON-RPC error response (a revert, a nonce
//! error) is an answer, not an outage: it is returned as it is, never retried elsewhere. URLs may carry API keys, so
//! logs name endpoints by host only.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::http::{reqwest, Http};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};
use tower::Service;

/// How long an endpoint that failed is passed over before it is tried again (the preferred one first: once it
/// answers again, requests go back to it).
pub const RETRY_DOWN_AFTER: Duration = Duration::from_secs(10);

/// An endpoint's state as `/health` shows it: its host only (URLs may carry API keys).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub up: bool,
    pub last_error: Option<String>,
}

/// The parts of an RPC URL that may be secret: user, password, the path (hosted providers put the API key there)
/// and the query. Registered with the log redactor; everything but the host is treated as secret.
pub fn url_secrets(u: &url::Url) -> Vec<String> {
    let mut v = Vec::new();
    if !u.username().is_empty() {
        v.push(u.username().to_string());
    }
    if let Some(p) = u.password() {
        v.push(p.to_string());
    }
    let path = u.path().trim_matches('/');
    if !path.is_empty() {
        v.push(path.to_string());
        v.extend(path.split('/').filter(|s| !s.is_empty()).map(str::to_string));
    }
    if let Some(q) = u.query() {
        v.push(q.to_string());
        v.extend(u.query_pairs().map(|(_, val)| val.into_owned()));
    }
    v
}

/// How an endpoint is named in logs, errors and `/health`: its position and host (and port), nothing else.
pub fn endpoint_label(i: usize, u: &url::Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("#{i} {h}:{p}"),
        (Some(h), None) => format!("#{i} {h}"),
        _ => format!("#{i} ?"),
    }
}

/// The order to try endpoints in: by preference, skipping those that failed less than `retry_after` ago (all of
/// them when every one did). `down_for[i]` is how long endpoint `i` has been known to fail (`None`: up).
pub fn try_order(down_for: &[Option<Duration>], retry_after: Duration) -> Vec<usize> {
    let ready: Vec<usize> = (0..down_for.len()).filter(|&i| down_for[i].is_none_or(|d| d >= retry_after)).collect();
    if ready.is_empty() {
        (0..down_for.len()).collect()
    } else {
        ready
    }
}

struct Endpoint {
    name: String,
    http: Http<reqwest::Client>,
    /// When it last failed, and how (cleared when it answers).
    failed_at: parking_lot::Mutex<Option<(std::time::Instant, String)>>,
}

struct Inner {
    chain: String,
    endpoints: Vec<Endpoint>,
    current: AtomicUsize,
    failovers: AtomicU64,
    transport_errors: AtomicU64,
    retry_after: parking_lot::Mutex<Duration>,
}

/// A transport over several HTTP endpoints with ordered failover.
#[derive(Clone)]
pub struct FailoverTransport {
    inner: Arc<Inner>,
}

impl FailoverTransport {
    /// `urls` in order of preference. Their secret parts are registered with the process-wide redactor.
    pub fn new(chain: &str, urls: &[url::Url]) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .build()
            .expect("reqwest client");
        let endpoints = urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                for s in url_secrets(u) {
                    kronos_common::Redactor::global().register(&s);
                }
                Endpoint {
                    name: endpoint_label(i, u),
                    http: Http::with_client(client.clone(), u.clone()),
                    failed_at: parking_lot::Mutex::new(None),
                }
            })
            .collect();
        FailoverTransport {
            inner: Arc::new(Inner {
                chain: chain.to_string(),
                endpoints,
                current: AtomicUsize::new(0),
                failovers: AtomicU64::new(0),
                transport_errors: AtomicU64::new(0),
                retry_after: parking_lot::Mutex::new(RETRY_DOWN_AFTER),
            }),
        }
    }

    /// Sets how long a failed endpoint is passed over (tests).
    pub fn with_retry_after(self, d: Duration) -> Self {
        *self.inner.retry_after.lock() = d;
        self
    }

    /// Index of the endpoint in use.
    pub fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed)
    }

    /// Times the transport moved to another endpoint.
    pub fn failovers(&self) -> u64 {
        self.inner.failovers.load(Ordering::Relaxed)
    }

    /// Transport errors seen (each failed attempt counts).
    pub fn transport_errors(&self) -> u64 {
        self.inner.transport_errors.load(Ordering::Relaxed)
    }

    /// Every endpoint, up or down, by host.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner
            .endpoints
            .iter()
            .map(|e| {
                let f = e.failed_at.lock();
                EndpointStatus {
                    endpoint: e.name.clone(),
                    up: f.is_none(),
                    last_error: f.as_ref().map(|x| x.1.clone()),
                }
            })
            .collect()
    }

    /// A provider over this transport (no fillers: the transaction manager sets nonce, gas and fees itself).
    pub fn provider(&self) -> DynProvider {
        let local = false;
        ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_client(RpcClient::new(self.clone(), local))
            .erased()
    }
}

impl Service<RequestPacket> for FailoverTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let retry_after = *inner.retry_after.lock();
            let down_for: Vec<Option<Duration>> =
                inner.endpoints.iter().map(|e| e.failed_at.lock().as_ref().map(|(at, _)| at.elapsed())).collect();
            let mut last = None;
            for idx in try_order(&down_for, retry_after) {
                let ep = &inner.endpoints[idx];
                let mut t = ep.http.clone();
                match t.call(req.clone()).await {
                    Ok(resp) => {
                        let was_down = ep.failed_at.lock().take().is_some();
                        let before = inner.current.swap(idx, Ordering::Relaxed);
                        if before != idx {
                            inner.failovers.fetch_add(1, Ordering::Relaxed);
                            if idx < before {
                                tracing::info!(chain = %inner.chain, endpoint = %ep.name, "RPC endpoint answers again; back to it");
                            } else {
                                tracing::warn!(chain = %inner.chain, endpoint = %ep.name, "RPC failover: now using this endpoint");
                            }
                        } else if was_down {
                            tracing::info!(chain = %inner.chain, endpoint = %ep.name, "RPC endpoint answers again");
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        inner.transport_errors.fetch_add(1, Ordering::Relaxed);
                        // Connection errors name the URL: keep the host only.
                        let msg = kronos_common::Redactor::global().redact(&format!("{}: {e}", ep.name));
                        tracing::debug!(chain = %inner.chain, endpoint = %ep.name, error = %msg, "RPC transport error");
                        *ep.failed_at.lock() = Some((std::time::Instant::now(), msg.clone()));
                        last = Some(TransportErrorKind::custom_str(&msg));
                    }
                }
            }
            Err(last.expect("at least one endpoint"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_over_on_transport_errors_only() {
        let node = kronos_testkit::spawn(Default::default());
        let dead: url::Url = "http://127.0.0.1:9/".parse().unwrap();
        let t = FailoverTransport::new("dev", &[dead, node.url.parse().unwrap()]);
        let p = t.provider();
        assert_eq!(p.get_chain_id().await.unwrap(), 31337);
        assert_eq!((t.current(), t.failovers()), (1, 1));
        // A JSON-RPC error is returned as it is, without trying other endpoints.
        let errors = t.transport_errors();
        let r = p.raw_request::<_, serde_json::Value>("no_such_method".into(), ()).await;
        assert!(r.unwrap_err().is_error_resp());
        assert_eq!(t.transport_errors(), errors);
        assert_eq!(t.current(), 1);
        // All endpoints down: the last transport error comes back.
        let t2 = FailoverTransport::new("dev", &["http://127.0.0.1:9/".parse().unwrap()]);
        assert!(t2.provider().get_chain_id().await.unwrap_err().is_transport_error());
    }

    #[test]
    fn only_the_host_of_an_rpc_url_is_shown() {
        let u: url::Url =
            "https://user:pa55word@eth-mainnet.example.com/v2/AbCdEf0123456789?key=QwErTy987654".parse().unwrap();
        let s = url_secrets(&u);
        for want in ["user", "pa55word", "v2/AbCdEf0123456789", "AbCdEf0123456789", "QwErTy987654"] {
            assert!(s.iter().any(|x| x == want), "{want} in {s:?}");
        }
        assert!(!s.iter().any(|x| x.contains("eth-mainnet")), "{s:?}");
        assert_eq!(endpoint_label(0, &u), "#0 eth-mainnet.example.com");
        assert_eq!(endpoint_label(1, &"http://127.0.0.1:8545/".parse().unwrap()), "#1 127.0.0.1:8545");
        assert!(url_secrets(&"http://127.0.0.1:8545/".parse().unwrap()).is_empty());
    }

    #[test]
    fn endpoints_are_tried_by_preference_and_failed_ones_again_after_a_while() {
        let s = Duration::from_secs;
        assert_eq!(try_order(&[None, None], s(10)), vec![0, 1]);
        // The preferred one failed just now: passed over.
        assert_eq!(try_order(&[Some(s(1)), None], s(10)), vec![1]);
        // ... and tried first again once the wait is over.
        assert_eq!(try_order(&[Some(s(10)), None], s(10)), vec![0, 1]);
        // All failed recently: try them all anyway.
        assert_eq!(try_order(&[Some(s(1)), Some(s(2))], s(10)), vec![0, 1]);
    }

    /// Issue 13, item 13: the preferred endpoint goes down and comes back; requests return to it, and the down
    /// endpoint shows as down (by host only) while it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn goes_back_to_the_preferred_endpoint_once_it_answers_again() {
        let node = kronos_testkit::spawn(Default::default());
        let proxy = kronos_testkit::rpcproxy::RpcProxy::start(&node.url).await;
        let preferred: url::Url = format!("{}/v2/Prefer3dEndpointKey", proxy.url).parse().unwrap();
        let t = FailoverTransport::new("dev", &[preferred, node.url.parse().unwrap()])
            .with_retry_after(Duration::from_millis(300));
        let p = t.provider();
        assert_eq!(p.get_chain_id().await.unwrap(), 31337);
        assert_eq!(t.current(), 0);
        proxy.set_down(true);
        p.get_block_number().await.unwrap();
        assert_eq!(t.current(), 1);
        let eps = t.endpoints();
        assert!(!eps[0].up && eps[1].up, "{eps:?}");
        let shown = serde_json::to_string(&eps).unwrap();
        assert!(!shown.contains("Prefer3dEndpointKey") && shown.contains("127.0.0.1"), "{shown}");
        proxy.set_down(false);
        // Requests keep going to the backup until the wait is over, then back to the preferred one.
        let served = proxy.served();
        for _ in 0..50 {
            p.get_block_number().await.unwrap();
            if t.current() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(t.current(), 0, "never went back to the preferred endpoint");
        assert!(proxy.served() > served);
        assert!(t.endpoints().iter().all(|e| e.up));
    }

    /// Issue 13, item 8: connection errors name the URL; what comes out of the transport names the host only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_errors_do_not_carry_the_api_key() {
        let keyed: url::Url = "http://127.0.0.1:9/v2/SuperSecretApiKey42".parse().unwrap();
        // The leak this guards against: alloy's own HTTP transport puts the whole URL in the error.
        let plain = ProviderBuilder::new().connect_http(keyed.clone());
        assert!(plain.get_chain_id().await.unwrap_err().to_string().contains("SuperSecretApiKey42"));
        let t = FailoverTransport::new("dev", &[keyed]);
        let e = t.provider().get_chain_id().await.unwrap_err();
        assert!(e.is_transport_error());
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SuperSecretApiKey42"), "{text}");
        assert!(text.contains("127.0.0.1:9"), "{text}");
        let h = serde_json::to_string(&t.endpoints()).unwrap();
        assert!(!h.contains("SuperSecretApiKey42") && h.contains("\"up\":false"), "{h}");
        assert!(!kronos_common::Redactor::global()
            .redact("GET /v2/SuperSecretApiKey42")
            .contains("SuperSecretApiKey42"));
    }
}
