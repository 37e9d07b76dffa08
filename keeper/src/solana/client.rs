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
    /// Set when the endpoint answered another genesis hash than the cluster's ([`rules::cluster_reference`]): it is
    /// on another cluster (a devnet URL among mainnet ones, …) and never used. The hash it answered.
    pub other_cluster: Option<String>,
}

/// What the genesis check knows: each endpoint's `getGenesisHash` once it answered, and the cluster's.
#[derive(Debug, Default)]
struct Genesis {
    hashes: Vec<Option<String>>,
    cluster: Option<String>,
}

/// What one lag check found.
#[derive(Debug, Default)]
pub struct LagCheck {
    /// Whether it moved to another endpoint.
    pub moved: bool,
    /// Endpoints found on another cluster at this check, one line each (host, hash, the cluster's hash).
    pub other_cluster: Vec<String>,
}

/// The configured endpoints with failover.
pub struct SolClient {
    clients: Vec<RpcClient>,
    endpoints: Mutex<Vec<Endpoint>>,
    active: AtomicUsize,
    pub(crate) failovers: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
    genesis: Mutex<Genesis>,
    lag: Mutex<rules::LagMemory>,
}

/// How often the endpoints' slots are compared (one `getSlot` to each): a lag worth leaving
/// ([`rules::MAX_SLOTS_BEHIND`], about 13 s) is then found within a few seconds.
pub const LAG_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long the lag check waits for an endpoint's slot; one that has not answered by then counts as not answering.
pub(crate) const LAG_CHECK_WAIT: Duration = Duration::from_secs(2);

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
                other_cluster: None,
            })
            .collect();
        SolClient {
            clients,
            endpoints: Mutex::new(endpoints),
            active: AtomicUsize::new(0),
            failovers: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
            genesis: Mutex::new(Genesis { hashes: vec![None; urls.len()], cluster: None }),
            lag: Mutex::new(rules::LagMemory::default()),
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

    /// Asks `getGenesisHash` of every endpoint whose hash is not known yet, and marks the ones on another cluster
    /// once the cluster's hash can be told ([`rules::cluster_reference`]). Returns a line for each endpoint found on
    /// another cluster now (named by host: the URL may carry a key), also logged as an error.
    pub async fn check_clusters(&self, wait: Duration) -> Vec<String> {
        let unknown: Vec<usize> = {
            let g = self.genesis.lock();
            (0..self.clients.len()).filter(|i| g.hashes[*i].is_none()).collect()
        };
        let asks = unknown.iter().map(|i| {
            let c = &self.clients[*i];
            async move { tokio::time::timeout(wait, c.get_genesis_hash()).await.ok()?.ok().map(|h| h.to_string()) }
        });
        let answers = futures::future::join_all(asks).await;
        let mut g = self.genesis.lock();
        for (i, h) in unknown.into_iter().zip(answers) {
            g.hashes[i] = h;
        }
        if g.cluster.is_none() {
            let hashes: Vec<Option<&str>> = g.hashes.iter().map(Option::as_deref).collect();
            g.cluster = rules::cluster_reference(&hashes).and_then(|i| g.hashes[i].clone());
        }
        let Some(cluster) = g.cluster.clone() else { return Vec::new() };
        let mut eps = self.endpoints.lock();
        let mut found = Vec::new();
        for (e, h) in eps.iter_mut().zip(&g.hashes) {
            let Some(h) = h.as_ref().filter(|h| **h != cluster) else { continue };
            if e.other_cluster.is_none() {
                e.other_cluster = Some(h.clone());
                let line = other_cluster_line(&e.host, h, &cluster);
                tracing::error!(endpoint = %e.host, genesis = %h, cluster = %cluster, "solana: {line}");
                found.push(line);
            }
        }
        found
    }

    /// One line per endpoint found on another cluster so far (as [`SolClient::check_clusters`] reported it).
    pub fn other_cluster_lines(&self) -> Vec<String> {
        let Some(cluster) = self.genesis.lock().cluster.clone() else { return Vec::new() };
        let eps = self.endpoints.lock();
        eps.iter().filter_map(|e| e.other_cluster.as_ref().map(|h| other_cluster_line(&e.host, h, &cluster))).collect()
    }

    /// Whether endpoint `i` may be used: not found on another cluster.
    fn usable(&self, i: usize) -> bool {
        self.endpoints.lock()[i].other_cluster.is_none()
    }

    /// One lag check ([`rules::lag_step`]): checks the endpoints' clusters ([`SolClient::check_clusters`]), compares
    /// their slots and moves to the freshest when the one in use is far behind it in two checks in a row, ignoring
    /// slots implausibly far above the others' and endpoints on another cluster (one in use is left at once): a node
    /// that answers but lags is left as one that does not answer is. Called every [`LAG_CHECK_EVERY`] beside the
    /// passes (never with one endpoint).
    pub async fn follow_freshest(&self) -> LagCheck {
        if self.clients.len() < 2 {
            return LagCheck::default();
        }
        let (other_cluster, slots) =
            futures::future::join(self.check_clusters(LAG_CHECK_WAIT), self.slots(LAG_CHECK_WAIT)).await;
        let usable: Vec<bool> = (0..self.clients.len()).map(|i| self.usable(i)).collect();
        let active = self.active();
        let (to, mem) = {
            let mut lag = self.lag.lock();
            let now = i64::try_from(kronos_common::time::now_ms()).unwrap_or(i64::MAX);
            let (to, mem) = rules::lag_step(&slots, &usable, active, *lag, now);
            *lag = mem;
            (to, mem)
        };
        let best = mem.best.map(|(b, _)| b);
        let mut eps = self.endpoints.lock();
        for ((e, s), ok) in eps.iter_mut().zip(&slots).zip(&usable) {
            e.behind = s.filter(|_| *ok).zip(best).map(|(s, b)| b.saturating_sub(s));
        }
        if to == active {
            return LagCheck { moved: false, other_cluster };
        }
        self.active.store(to, Ordering::Relaxed);
        self.failovers.fetch_add(1, Ordering::Relaxed);
        let why = match (&eps[active].other_cluster, eps[active].behind) {
            (Some(_), _) => "on another cluster".to_string(),
            (None, Some(b)) => format!("{b} slots behind"),
            (None, None) => "no slot".to_string(),
        };
        tracing::warn!(from = %eps[active].host, to = %eps[to].host, lag = %why, "solana: switched RPC endpoint: the one in use is far behind or on another cluster");
        LagCheck { moved: true, other_cluster }
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
            // Never an endpoint on another cluster (its answers are another chain's).
            if !self.usable(i) {
                continue;
            }
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

/// What `/health` and the log say of an endpoint on another cluster (named by host: the URL may carry a key).
fn other_cluster_line(host: &str, hash: &str, cluster: &str) -> String {
    format!("RPC endpoint {host} is on another cluster (genesis {hash}, the cluster's {cluster}): not used")
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

    /// POSTs `body` to the local RPC server's control `path`.
    async fn control(rpc: &kronos_testkit::solana_rpc::LocalRpc, path: &str, body: serde_json::Value) {
        let r = reqwest::Client::new().post(format!("{}control/{path}", rpc.url())).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    /// Local RPC servers as nodes of one cluster (each program-test bank has its own genesis).
    async fn one_cluster(rpcs: &[&kronos_testkit::solana_rpc::LocalRpc]) {
        // Mainnet-beta's genesis hash.
        let hash = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d";
        for r in rpcs {
            control(r, "genesis", serde_json::json!({ "hash": hash })).await;
        }
    }

    /// Issue 15: an endpoint that answers but is far behind the freshest one loses to it, once the lead showed in
    /// two checks in a row (AUDIT5-SOL M1); one within [`rules::MAX_SLOTS_BEHIND`] is kept (jitter never moves the
    /// keeper).
    #[tokio::test]
    async fn an_endpoint_far_behind_is_left_for_the_freshest() {
        use kronos_testkit::solana_rpc::LocalRpc;
        let (behind, fresh) = (LocalRpc::start().await.unwrap(), LocalRpc::start().await.unwrap());
        one_cluster(&[&behind, &fresh]).await;
        let far = rules::MAX_SLOTS_BEHIND + 8;
        control(&fresh, "warp", serde_json::json!({ "slots": far })).await;
        let urls: Vec<url::Url> = [behind.url(), fresh.url()].iter().map(|u| u.parse().unwrap()).collect();
        let c = SolClient::new(&urls);
        let slots = c.slots(Duration::from_secs(5)).await;
        let (b, f) = (slots[0].unwrap(), slots[1].unwrap());
        assert!(f - b > rules::MAX_SLOTS_BEHIND, "{slots:?}");
        let first = c.follow_freshest().await;
        assert!(!first.moved && first.other_cluster.is_empty(), "{first:?}");
        assert_eq!(c.active(), 0, "one check: kept");
        assert!(c.follow_freshest().await.moved);
        assert_eq!(c.active(), 1);
        assert_eq!(c.endpoints()[0].behind, Some(f - b));
        assert_eq!(c.failovers.load(Ordering::Relaxed), 1);
        // Caught up to within the threshold: a client on it stays there.
        control(&behind, "warp", serde_json::json!({ "slots": far - 4 })).await;
        let c = SolClient::new(&urls);
        let slots = c.slots(Duration::from_secs(5)).await;
        let lag = slots[1].unwrap() - slots[0].unwrap();
        assert!(lag > 0 && lag <= rules::MAX_SLOTS_BEHIND, "{slots:?}");
        assert!(!c.follow_freshest().await.moved);
        assert!(!c.follow_freshest().await.moved);
        assert_eq!(c.active(), 0);
    }

    /// AUDIT6-SOL M1: with two endpoints, the first one stalled further behind the second than
    /// [`rules::MAX_PLAUSIBLE_LEAD`] (a node catching up after a restart) is left for the second after two checks,
    /// and the keeper stays there (the second was taken for a liar by the median-of-the-others rule before).
    #[tokio::test]
    async fn with_two_endpoints_the_first_stalled_far_behind_is_left_for_good() {
        use kronos_testkit::solana_rpc::LocalRpc;
        let (stalled, fresh) = (LocalRpc::start().await.unwrap(), LocalRpc::start().await.unwrap());
        one_cluster(&[&stalled, &fresh]).await;
        control(&fresh, "warp", serde_json::json!({ "slots": rules::MAX_PLAUSIBLE_LEAD + 500 })).await;
        let urls: Vec<url::Url> = [stalled.url(), fresh.url()].iter().map(|u| u.parse().unwrap()).collect();
        let c = SolClient::new(&urls);
        assert!(!c.follow_freshest().await.moved, "one check: kept");
        assert!(c.follow_freshest().await.moved);
        assert_eq!(c.active(), 1);
        assert!(c.endpoints()[0].behind.is_some_and(|b| b > rules::MAX_PLAUSIBLE_LEAD), "{:?}", c.endpoints());
        for k in 0..3 {
            assert!(!c.follow_freshest().await.moved, "check {k}");
        }
        assert_eq!((c.active(), c.failovers.load(Ordering::Relaxed)), (1, 1));
    }

    /// AUDIT5-SOL M1: an endpoint on another cluster (another genesis hash than the majority's), however far ahead,
    /// never takes the keeper, neither by lag nor by the transport failover; it is reported once, by host only.
    #[tokio::test]
    async fn an_endpoint_on_another_cluster_is_never_used() {
        use kronos_testkit::solana_rpc::LocalRpc;
        let (a, foreign, b) =
            (LocalRpc::start().await.unwrap(), LocalRpc::start().await.unwrap(), LocalRpc::start().await.unwrap());
        one_cluster(&[&a, &b]).await;
        control(&foreign, "genesis", serde_json::json!({ "hash": "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG" }))
            .await;
        control(&foreign, "warp", serde_json::json!({ "slots": 500 })).await;
        let mut urls: Vec<url::Url> = [a.url(), foreign.url(), b.url()].iter().map(|u| u.parse().unwrap()).collect();
        urls[1].set_query(Some("api-key=Foreign42"));
        let c = SolClient::new(&urls);
        let first = c.follow_freshest().await;
        assert_eq!(first.other_cluster.len(), 1, "{first:?}");
        let host = c.endpoints()[1].host.clone();
        assert!(first.other_cluster[0].contains(&host) && !first.other_cluster[0].contains("Foreign42"), "{first:?}");
        for _ in 0..3 {
            let again = c.follow_freshest().await;
            assert!(!again.moved && again.other_cluster.is_empty(), "{again:?}");
        }
        assert_eq!(c.active(), 0);
        assert!(c.endpoints()[1].other_cluster.is_some());
        assert_eq!(c.endpoints()[1].behind, None);
        // In use (say it was first in the list): the next check leaves it at once.
        c.active.store(1, Ordering::Relaxed);
        assert!(c.follow_freshest().await.moved);
        assert_ne!(c.active(), 1);
        // And a call starting on it passes it by for the next endpoint.
        c.active.store(1, Ordering::Relaxed);
        c.call(|c| c.get_slot().boxed()).await.unwrap();
        assert_eq!(c.active(), 2);
    }
}
