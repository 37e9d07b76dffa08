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
use alloy::transports::{TransportError, TransportFut};
use tower::Service;

struct Inner {
    chain: String,
    endpoints: Vec<(String, Http<reqwest::Client>)>,
    current: AtomicUsize,
    failovers: AtomicU64,
    transport_errors: AtomicU64,
}

/// A transport over several HTTP endpoints with ordered failover.
#[derive(Clone)]
pub struct FailoverTransport {
    inner: Arc<Inner>,
}

impl FailoverTransport {
    /// `urls` in order of preference.
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
                (format!("#{i} {}", u.host_str().unwrap_or("?")), Http::with_client(client.clone(), u.clone()))
            })
            .collect();
        FailoverTransport {
            inner: Arc::new(Inner {
                chain: chain.to_string(),
                endpoints,
                current: AtomicUsize::new(0),
                failovers: AtomicU64::new(0),
                transport_errors: AtomicU64::new(0),
            }),
        }
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
            let n = inner.endpoints.len();
            let start = inner.current.load(Ordering::Relaxed);
            let mut last = None;
            for step in 0..n {
                let idx = (start + step) % n;
                let (name, t) = &inner.endpoints[idx];
                let mut t = t.clone();
                match t.call(req.clone()).await {
                    Ok(resp) => {
                        if idx != start {
                            inner.current.store(idx, Ordering::Relaxed);
                            inner.failovers.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(chain = %inner.chain, endpoint = %name, "RPC failover: now using this endpoint");
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        inner.transport_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(chain = %inner.chain, endpoint = %name, error = %e, "RPC transport error");
                        last = Some(e);
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
}
