//! Limits that protect every HTTP/WebSocket service of Kronos (the keeper's API, the copy-trader's service, the
//! Telegram bot's health server, the exchange mock): one [`Guard`] per service, built from [`Limits`].
//!
//! What each limit does when it is reached (each counted by reason in [`GuardMetrics`], on the service's `/metrics`;
//! `http_refused` for refusals, `http_dropped` for connections closed):
//!
//! - open connections ([`Limits::max_connections`], [`Guard::serve`]): `503` written on the new connection, which
//!   is closed (`connections`);
//! - WebSocket subscribers ([`Limits::max_ws_subscribers`], [`crate::signal_ws::Hub`]): `503` instead of the
//!   upgrade (`ws_subscribers`);
//! - open connections and WebSocket subscribers per client address, keyed as the rate limit
//!   ([`Limits::max_connections_per_ip`], [`Limits::max_ws_per_ip`]): `503` (`connections_per_ip`, `ws_per_ip`);
//! - file descriptors: [`Guard::serve`] raises the process's soft `RLIMIT_NOFILE` to its hard limit
//!   ([`raise_fd_limit`]) and serves at most that many connections less [`FD_RESERVE`] (the service's own
//!   database, RPC and log descriptors), with a warning when that is below [`Limits::max_connections`];
//! - requests per client address ([`Limits::rate_per_s`], [`Limits::rate_burst`], [`Guard::layer`]): `429` with
//!   `Retry-After` in seconds (`rate_limited`);
//! - request body ([`Limits::max_body_bytes`], [`Guard::layer`]): `413` (`body_too_large`);
//! - time to answer ([`Limits::request_timeout`], [`Guard::layer`]): `503` (`timeout`);
//! - browser origin ([`Limits::allowed_origins`], [`Guard::layer`]): `403` (`origin`);
//! - the `Host` of a `GET`/`HEAD`/`OPTIONS` ([`Limits::allowed_hosts`], [`Guard::layer`]): `421` (`host`);
//! - time to send a request head, idle keep-alive included ([`Limits::header_timeout`], [`Guard::serve`]): the
//!   connection is closed (by hyper; not counted);
//! - a WebSocket that sends nothing, not even a pong ([`Limits::idle_timeout`], [`Guard::serve`]): closed (`idle`);
//! - a response the client stops reading ([`Limits::write_timeout`], [`Guard::serve`]): when one write has waited
//!   this long for the client to make room, the connection is closed (`write_stall`);
//! - an incoming WebSocket message ([`Limits::ws_max_message_bytes`], [`crate::signal_ws::Hub`]): close `1009`
//!   (`ws_oversized`);
//! - one WebSocket send ([`Limits::ws_send_timeout`], [`crate::signal_ws::Hub`]): the slow reader is dropped
//!   (`ws_slow_reader`).
//!
//! **Origin check.** A browser sends `Origin` with every WebSocket handshake and every cross-site request that can
//! change state; a page on another site could otherwise open `/ws` (WebSockets have no CORS) from inside a victim's
//! network, or post to a control endpoint. So a WebSocket upgrade or a request that is not `GET`/`HEAD`/`OPTIONS`
//! whose `Origin` is not in [`Limits::allowed_origins`] is refused. A request *without* `Origin` is allowed: it does
//! not come from a browser page (curl, the CLI, the copy-trader, the Telegram bot), and such a client could send any
//! `Origin` it likes, so checking it would protect nothing.
//!
//! **Host check (DNS rebinding).** A page on `attacker.example` whose name is then re-pointed at `127.0.0.1` reads
//! this service's plain `GET`s as same-origin (no `Origin` header, no CORS): `/metrics`, the copy-trader's
//! `/api/status`. The standard defence is an allow-list of `Host` names: the browser always sends the name it
//! resolved. So a service listening on loopback answers a `GET`/`HEAD`/`OPTIONS` whose `Host` is not an IP address,
//! `localhost` or one of [`Limits::allowed_hosts`] with `421` (other methods and WebSocket upgrades are already
//! refused a foreign `Origin`, which a rebinding page sends). A service listening on another address with no
//! configured hosts accepts any `Host` (it is reachable by name anyway); `"*"` turns the check off.
//!
//! **Rate limit.** A token bucket per client address (IPv6: per /64, which one host usually owns whole), over every
//! route of the service. A request carrying the service's own bearer token ([`Guard::exempt_bearer`]) is not
//! limited: a page could otherwise drain the bucket of `127.0.0.1` with plain cross-site `GET`s and have the
//! operator's emergency stop answered `429`. A wrong token is limited like no token. The table of buckets is bounded ([`Limits::rate_limit_addresses`]): when it is full, the
//! buckets that have refilled (indistinguishable from a new one) are removed, and if it is still full some others
//! are, so memory stays bounded under a flood from many addresses. The address is the TCP peer: behind a reverse
//! proxy every request comes from the proxy, so rate-limit there (or raise the limit here).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The limits of one service. [`Limits::default`] is what every service uses unless configured otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open TCP connections, WebSockets included (default 12,288). One more is answered `503` and closed. The
    /// process needs at least this many file descriptors (`ulimit -n`).
    pub max_connections: usize,
    /// Open WebSocket subscriptions (default 10,000). One more gets `503` instead of the upgrade.
    pub max_ws_subscribers: usize,
    /// Open connections from one client address (IPv6: one /64), default 64; `0`: no such limit. One more is
    /// answered `503` and closed.
    pub max_connections_per_ip: usize,
    /// Open WebSocket subscriptions from one client address (IPv6: one /64), default 16; `0`: no such limit. One
    /// more gets `503` instead of the upgrade.
    pub max_ws_per_ip: usize,
    /// Requests per second each client address may make, sustained (default 50); `0` turns the limit off.
    pub rate_per_s: u32,
    /// Requests a client address may make at once after being quiet (default 100).
    pub rate_burst: u32,
    /// Client addresses whose buckets are remembered (default 65,536; about 40 bytes each).
    pub rate_limit_addresses: usize,
    /// Request body size (default 64 KiB). The keeper takes no bodies; the copy-trader's control requests are empty.
    pub max_body_bytes: usize,
    /// Time to answer one request (default 10 s); a WebSocket's handshake only, not the stream.
    pub request_timeout: Duration,
    /// Time a client has to send a whole request head, counted from when the server starts waiting for one (the
    /// connection opening, or the previous response going out): so it also closes an idle keep-alive connection,
    /// and a head sent a byte at a time (slow-loris). Default 30 s.
    pub header_timeout: Duration,
    /// A WebSocket that sends nothing for this long is closed (default 120 s). Clients are pinged every third of
    /// it, so a live one (any client library answers pings) always has a pong to send.
    pub idle_timeout: Duration,
    /// Incoming WebSocket message and frame size (default 16 KiB). Clients only send control frames.
    pub ws_max_message_bytes: usize,
    /// Time one WebSocket message may take to go out (default 5 s); a reader slower than that is dropped.
    pub ws_send_timeout: Duration,
    /// Time one write to a connection may wait for the client to take what was sent before (default 10 s, twice
    /// the WebSocket send timeout so a slow `/ws` reader is dropped by that first); then the connection is closed.
    /// A client that reads slowly but steadily is not affected: each write that goes out starts the time again.
    pub write_timeout: Duration,
    /// Browser origins (`https://dash.example.com`, scheme and host and port, normalised) allowed to open WebSockets
    /// and send state-changing requests; `*` allows every origin. Default: none (requests without `Origin` pass).
    pub allowed_origins: Vec<String>,
    /// Host names (lower case, no port) a `GET` may name in `Host` besides IP addresses and `localhost`; `*`: any.
    /// Default: none. Enforced when the service listens on loopback, or when some are configured.
    pub allowed_hosts: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 12_288,
            max_ws_subscribers: 10_000,
            max_connections_per_ip: 64,
            max_ws_per_ip: 16,
            rate_per_s: 50,
            rate_burst: 100,
            rate_limit_addresses: 65_536,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            ws_max_message_bytes: 16 * 1024,
            ws_send_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl Limits {
    /// How often a WebSocket client is pinged: a third of [`Limits::idle_timeout`].
    pub fn ws_ping_interval(&self) -> Duration {
        (self.idle_timeout / 3).max(Duration::from_millis(1))
    }
}

/// The TOML form of [`Limits`] (every field optional, defaults as in [`Limits::default`]); services embed it as a
/// section (the keeper's `[api]`) and call [`RawLimits::validate`].
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<usize>,
    pub max_ws_subscribers: Option<usize>,
    /// `0`: no per-address limit.
    pub max_connections_per_ip: Option<usize>,
    /// `0`: no per-address limit.
    pub max_ws_per_ip: Option<usize>,
    /// `0` turns the rate limit off.
    pub rate_limit_per_s: Option<u32>,
    /// Default: twice the rate (100 with the default rate).
    pub rate_limit_burst: Option<u32>,
    pub rate_limit_addresses: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub ws_max_message_bytes: Option<usize>,
    pub ws_send_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
}

impl RawLimits {
    /// Checks every value; an error is `(field, message)` with the field under `section` (`api.max_connections`).
    pub fn validate(self, section: &str) -> Result<Limits, (String, String)> {
        let d = Limits::default();
        let field = |f: &str| format!("{section}.{f}");
        let at_least = |f: &str, v: u64, min: u64| -> Result<u64, (String, String)> {
            if v < min {
                Err((field(f), format!("{v} is below {min}")))
            } else {
                Ok(v)
            }
        };
        let ms = |f: &str, v: Option<u64>, dflt: Duration, min: u64| -> Result<Duration, (String, String)> {
            match v {
                None => Ok(dflt),
                Some(v) => Ok(Duration::from_millis(at_least(f, v, min)?)),
            }
        };
        let count = |f: &str, v: Option<usize>, dflt: usize, min: usize| -> Result<usize, (String, String)> {
            match v {
                None => Ok(dflt),
                Some(v) => Ok(at_least(f, v as u64, min as u64)? as usize),
            }
        };
        let rate_per_s = self.rate_limit_per_s.unwrap_or(d.rate_per_s);
        let rate_burst = match (self.rate_limit_burst, self.rate_limit_per_s) {
            (Some(b), _) => at_least("rate_limit_burst", b as u64, 1)? as u32,
            (None, Some(r)) => r.saturating_mul(2).max(1),
            (None, None) => d.rate_burst,
        };
        let mut allowed_origins = Vec::new();
        for (i, o) in self.allowed_origins.unwrap_or_default().into_iter().enumerate() {
            if o.trim() == "*" {
                allowed_origins.push("*".to_string());
                continue;
            }
            let n = normalise_config_origin(&o).map_err(|m| (field(&format!("allowed_origins[{i}]")), m))?;
            allowed_origins.push(n);
        }
        let mut allowed_hosts = Vec::new();
        for (i, h) in self.allowed_hosts.unwrap_or_default().into_iter().enumerate() {
            let n = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if n != "*" && (n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
                let m = format!("'{h}' is not a host name like dash.example.com (no scheme, no port)");
                return Err((field(&format!("allowed_hosts[{i}]")), m));
            }
            allowed_hosts.push(n);
        }
        Ok(Limits {
            allowed_hosts,
            max_connections: count("max_connections", self.max_connections, d.max_connections, 1)?,
            max_ws_subscribers: count("max_ws_subscribers", self.max_ws_subscribers, d.max_ws_subscribers, 1)?,
            max_connections_per_ip: count(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                d.max_connections_per_ip,
                0,
            )?,
            max_ws_per_ip: count("max_ws_per_ip", self.max_ws_per_ip, d.max_ws_per_ip, 0)?,
            rate_per_s,
            rate_burst,
            rate_limit_addresses: count("rate_limit_addresses", self.rate_limit_addresses, d.rate_limit_addresses, 16)?,
            max_body_bytes: count("max_body_bytes", self.max_body_bytes, d.max_body_bytes, 1)?,
            request_timeout: ms("request_timeout_ms", self.request_timeout_ms, d.request_timeout, 1)?,
            header_timeout: ms("header_timeout_ms", self.header_timeout_ms, d.header_timeout, 1)?,
            idle_timeout: ms("idle_timeout_ms", self.idle_timeout_ms, d.idle_timeout, 100)?,
            ws_max_message_bytes: count(
                "ws_max_message_bytes",
                self.ws_max_message_bytes,
                d.ws_max_message_bytes,
                1024,
            )?,
            ws_send_timeout: ms("ws_send_timeout_ms", self.ws_send_timeout_ms, d.ws_send_timeout, 1)?,
            write_timeout: ms("write_timeout_ms", self.write_timeout_ms, d.write_timeout, 1)?,
            allowed_origins,
        })
    }
}

/// `scheme://host[:port]` as a browser sends it in `Origin` (lower case, default port left out), from a configured
/// origin; anything with a path, query or credentials is refused.
fn normalise_config_origin(s: &str) -> Result<String, String> {
    let u =
        url::Url::parse(s.trim()).map_err(|e| format!("'{s}' is not an origin like https://dash.example.com: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("'{s}' must be http:// or https://"));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(format!("'{s}' must be only scheme://host[:port], as a browser's Origin header"));
    }
    Ok(u.origin().ascii_serialization())
}

/// The origin in an `Origin` header, normalised as [`normalise_config_origin`] does; `None` for `null` and junk.
pub fn normalise_origin(header: &str) -> Option<String> {
    let u = url::Url::parse(header.trim()).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    Some(u.origin().ascii_serialization())
}

// ---------------------------------------------------------------------------------------------------------------
// The token bucket.

/// One client's token bucket: thousandths of a token, and when they were counted (ms since the guard started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub milli: u64,
    pub at_ms: u64,
}

impl Bucket {
    /// A full bucket (a client not seen before).
    pub fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket { milli: burst as u64 * 1000, at_ms: now_ms }
    }

    /// The tokens (thousandths) it holds at `now_ms`.
    pub fn level(&self, now_ms: u64, rate_per_s: u32, burst: u32) -> u64 {
        let refill = now_ms.saturating_sub(self.at_ms).saturating_mul(rate_per_s as u64);
        self.milli.saturating_add(refill).min(burst as u64 * 1000)
    }
}

/// Takes one token from `b` at `now_ms`: `rate_per_s` tokens flow in per second (so `rate_per_s` thousandths per
/// millisecond), at most `burst` are held. Returns the bucket afterwards and `Ok`, or, when there is not a whole
/// token, the bucket unchanged (brought to `now_ms`) and `Err(ms until one is there)`. A clock going backwards
/// refills nothing.
pub fn take_token(b: Bucket, now_ms: u64, rate_per_s: u32, burst: u32) -> (Bucket, Result<(), u64>) {
    let now_ms = now_ms.max(b.at_ms);
    let milli = b.level(now_ms, rate_per_s, burst);
    if milli >= 1000 {
        (Bucket { milli: milli - 1000, at_ms: now_ms }, Ok(()))
    } else {
        let wait = (1000 - milli).div_ceil((rate_per_s as u64).max(1));
        (Bucket { milli, at_ms: now_ms }, Err(wait))
    }
}

/// `Retry-After` in whole seconds for a wait in milliseconds (rounded up, at least 1).
pub fn retry_after_s(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

/// The key of a client address in the rate table: an IPv4 address itself (IPv4-mapped IPv6 included), an IPv6
/// address's /64.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics.

/// The reason of a refusal or a drop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Reasons of refusals (`http_refused`).
pub const REFUSALS: [&str; 9] = [
    "connections",
    "ws_subscribers",
    "connections_per_ip",
    "ws_per_ip",
    "rate_limited",
    "body_too_large",
    "origin",
    "host",
    "timeout",
];
/// Reasons of connections the server closed (`http_dropped`).
pub const DROPS: [&str; 4] = ["idle", "write_stall", "ws_slow_reader", "ws_oversized"];

/// Buckets of `ws_fanout_seconds`: 100 µs to about 3.3 s, doubling.
const FANOUT_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096, 0.8192,
    1.6384, 3.2768,
];

/// The guard's metrics; a service registers them in its own registry ([`GuardMetrics::register`]).
#[derive(Clone)]
pub struct GuardMetrics {
    pub refused: Family<ReasonLabel, Counter>,
    pub dropped: Family<ReasonLabel, Counter>,
    pub ws_skipped: Counter,
    /// Signals a subscriber's socket did not take at once (queued for its own task to write).
    pub ws_queued: Counter,
    /// Seconds from the WebSocket hub reading a signal off the bus to the last delivery of it to one shard's
    /// subscribers (written to their sockets or queued for them; the wait for the shard's task included), one
    /// observation per signal and shard that had a subscriber wanting it.
    pub ws_fanout: Histogram,
    pub connections: Gauge,
    pub ws_subscribers: Gauge,
}

impl Default for GuardMetrics {
    fn default() -> Self {
        let m = GuardMetrics {
            refused: Family::default(),
            dropped: Family::default(),
            ws_skipped: Counter::default(),
            ws_queued: Counter::default(),
            ws_fanout: Histogram::new(FANOUT_BUCKETS),
            connections: Gauge::default(),
            ws_subscribers: Gauge::default(),
        };
        // Every reason shows up from the start, at 0.
        for reason in REFUSALS {
            let _ = m.refused.get_or_create(&ReasonLabel { reason });
        }
        for reason in DROPS {
            let _ = m.dropped.get_or_create(&ReasonLabel { reason });
        }
        m
    }
}

impl GuardMetrics {
    /// Registers `http_refused_total`, `http_dropped_total`, `ws_skipped_signals_total`,
    /// `ws_queued_signals_total`, `ws_fanout_seconds`, `http_connections` and `ws_subscribers` (under the registry's
    /// prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "http_refused",
            "Requests and connections refused by a limit, by reason (connections, ws_subscribers, \
             connections_per_ip, ws_per_ip, rate_limited, body_too_large, origin, host, timeout)",
            self.refused.clone(),
        );
        r.register(
            "http_dropped",
            "Connections the server closed, by reason (idle, write_stall, ws_slow_reader, ws_oversized)",
            self.dropped.clone(),
        );
        r.register(
            "ws_skipped_signals",
            "Signals skipped because a WebSocket reader fell behind: per subscriber whose own queue was full, per \
             shard of the hub that fell a bus's worth behind, and once when the hub's reader of the bus did",
            self.ws_skipped.clone(),
        );
        r.register(
            "ws_queued_signals",
            "Signals a WebSocket subscriber's socket did not take at once, queued for its own task to write (a \
             reader behind, or a full socket buffer)",
            self.ws_queued.clone(),
        );
        r.register(
            "ws_fanout_seconds",
            "Time from the WebSocket hub reading a signal off the bus to its last delivery to one shard's subscribers \
             (written to their sockets or queued for them; the wait for the shard's task included), per signal and \
             shard",
            self.ws_fanout.clone(),
        );
        r.register("http_connections", "Open HTTP connections, WebSockets included", self.connections.clone());
        r.register("ws_subscribers", "Open WebSocket subscriptions", self.ws_subscribers.clone());
    }

    /// Refusals so far for `reason`.
    pub fn refused(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Drops so far for `reason`.
    pub fn dropped(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&ReasonLabel { reason }).get()
    }

    pub(crate) fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn drop_for(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The guard.

/// One service's guard: the limits, their state and their counters. Cheap to clone.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    metrics: GuardMetrics,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    started: std::time::Instant,
    /// Refusals of connections being written right now (bounded; beyond, a connection is just closed).
    refusing: AtomicUsize,
    /// The connection cap in force: [`Limits::max_connections`], lowered by [`Guard::serve`] to what the file
    /// descriptors allow.
    conn_cap: AtomicUsize,
    /// Open connections and WebSocket subscribers per [`rate_key`] (an address is removed at 0).
    per_ip_conns: PerIp,
    per_ip_ws: PerIp,
    /// The address [`Guard::serve`] listens on (the Host check is enforced on loopback).
    listen: std::sync::OnceLock<SocketAddr>,
    /// Requests with this bearer token skip the rate limit ([`Guard::exempt_bearer`]).
    bearer: std::sync::OnceLock<crate::Secret>,
}

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A place taken under a cap (a connection, a WebSocket subscriber); given back when dropped.
pub struct Slot {
    gauge: Gauge,
    per_ip: Option<(PerIp, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
        if let Some((table, key)) = &self.per_ip {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = t.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    t.remove(key);
                }
            }
        }
    }
}

/// Counts one more for `key` unless it has `cap` already (`cap` 0: no limit, nothing counted).
fn take_per_ip(table: &PerIp, key: IpAddr, cap: usize) -> Result<Option<(PerIp, IpAddr)>, ()> {
    if cap == 0 {
        return Ok(None);
    }
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let n = t.entry(key).or_insert(0);
    if *n >= cap {
        return Err(());
    }
    *n += 1;
    Ok(Some((table.clone(), key)))
}

/// Descriptors kept for the service's own use (database, RPC, logs, files) below the open-file limit.
pub const FD_RESERVE: usize = 256;

/// The connection cap that `fd_limit` descriptors allow: `max_connections`, or the limit less [`FD_RESERVE`] when
/// that is lower (at least 1).
pub fn connection_cap(max_connections: usize, fd_limit: u64) -> usize {
    let room = usize::try_from(fd_limit).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE).max(1);
    max_connections.min(room)
}

/// Raises this process's soft open-file limit (`RLIMIT_NOFILE`) to `want`, or its hard limit if lower (child
/// processes inherit it). Returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> std::io::Result<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let target = want.min(r.rlim_max);
    if r.rlim_cur < target {
        r.rlim_cur = target;
        // SAFETY: r is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(r.rlim_cur)
}

fn take_slot(gauge: &Gauge, cap: usize) -> Option<Slot> {
    let before = gauge.inc();
    if before < 0 || before as usize >= cap {
        gauge.dec();
        return None;
    }
    Some(Slot { gauge: gauge.clone(), per_ip: None })
}

const MAX_REFUSING: usize = 64;

impl Guard {
    /// A guard with `limits`, counting into `metrics`.
    pub fn new(limits: Limits, metrics: GuardMetrics) -> Guard {
        Guard {
            inner: Arc::new(Inner {
                metrics,
                buckets: Mutex::new(HashMap::new()),
                started: std::time::Instant::now(),
                refusing: AtomicUsize::new(0),
                conn_cap: AtomicUsize::new(limits.max_connections),
                per_ip_conns: PerIp::default(),
                per_ip_ws: PerIp::default(),
                bearer: std::sync::OnceLock::new(),
                listen: std::sync::OnceLock::new(),
                limits,
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn metrics(&self) -> &GuardMetrics {
        &self.inner.metrics
    }

    /// A WebSocket subscriber's place; `None` (counted as `ws_subscribers`) when they are at their cap.
    pub fn ws_slot(&self) -> Option<Slot> {
        let slot = take_slot(&self.inner.metrics.ws_subscribers, self.ws_cap());
        if slot.is_none() {
            self.inner.metrics.refuse("ws_subscribers");
        }
        slot
    }

    /// A WebSocket subscriber's place for a client at `peer`: under the cap of all subscribers ([`Guard::ws_slot`])
    /// and of those from its address ([`Limits::max_ws_per_ip`], counted as `ws_per_ip`); the refusal's `503` when
    /// there is none.
    pub fn ws_slot_for(&self, peer: IpAddr) -> Result<Slot, Box<Response>> {
        let mut slot = self.ws_slot().ok_or_else(|| Box::new(self.ws_full()))?;
        let cap = self.inner.limits.max_ws_per_ip;
        match take_per_ip(&self.inner.per_ip_ws, rate_key(peer), cap) {
            Ok(per_ip) => {
                slot.per_ip = per_ip;
                Ok(slot)
            }
            Err(()) => {
                self.inner.metrics.refuse("ws_per_ip");
                Err(Box::new(
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
                        format!(
                            "your address has its maximum of {cap} WebSocket subscriptions here; close one first\n"
                        ),
                    )
                        .into_response(),
                ))
            }
        }
    }

    /// Requests with `Authorization: Bearer <token>` are not rate-limited (the service's own API token: whoever
    /// holds it is the operator). Set once; later calls are ignored.
    pub fn exempt_bearer(&self, token: crate::Secret) {
        let _ = self.inner.bearer.set(token);
    }

    /// Whether `req` carries the exempt bearer token.
    fn exempt(&self, req: &Request) -> bool {
        let Some(token) = self.inner.bearer.get() else { return false };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|g| token.matches(g.trim()))
    }

    /// The connection cap in force (see [`Guard::serve`]).
    pub fn connection_cap(&self) -> usize {
        self.inner.conn_cap.load(Ordering::Relaxed)
    }

    /// The `503` that refuses a WebSocket subscriber over the cap.
    pub fn ws_full(&self) -> Response {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            format!("this service has its maximum of {} WebSocket subscribers; try again later\n", self.ws_cap()),
        )
            .into_response()
    }

    fn ws_cap(&self) -> usize {
        self.inner.limits.max_ws_subscribers.min(self.connection_cap())
    }

    /// The request-level limits (rate, origin, body, timeout) around every route of `router`.
    pub fn layer<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard_request))
            .layer(DefaultBodyLimit::max(self.inner.limits.max_body_bytes))
    }

    /// Takes a token for `ip`: `Err(ms to wait)` when it has none.
    pub fn rate_check(&self, ip: IpAddr) -> Result<(), u64> {
        let l = &self.inner.limits;
        if l.rate_per_s == 0 {
            return Ok(());
        }
        let now = self.inner.started.elapsed().as_millis() as u64;
        let key = rate_key(ip);
        let mut table = self.inner.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= l.rate_limit_addresses && !table.contains_key(&key) {
            prune(&mut table, now, l);
        }
        let b = table.get(&key).copied().unwrap_or_else(|| Bucket::full(l.rate_burst, now));
        let (b, r) = take_token(b, now, l.rate_per_s, l.rate_burst);
        table.insert(key, b);
        r
    }

    /// Addresses in the rate table now.
    pub fn rate_table_len(&self) -> usize {
        self.inner.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Serves `app` on `listener` under the connection limits (cap, per address, head and idle timeouts) until
    /// `shutdown` resolves; then stops accepting, lets open requests finish (at most [`Limits::request_timeout`])
    /// and returns. Handlers see the client's address as `ConnectInfo<SocketAddr>`. First raises the open-file
    /// limit to its hard limit and lowers the connection cap to what it allows ([`connection_cap`]).
    pub async fn serve<F>(&self, listener: TcpListener, app: Router, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        if let Ok(a) = listener.local_addr() {
            let _ = self.inner.listen.set(a);
        }
        let want = self.inner.limits.max_connections;
        match raise_fd_limit(u64::MAX) {
            Ok(fds) => {
                let cap = connection_cap(want, fds);
                if cap < want {
                    tracing::warn!(
                        max_connections = want,
                        open_file_limit = fds,
                        serving = cap,
                        "the open-file limit allows fewer connections than max_connections (keeping {FD_RESERVE} \
                         descriptors for the service itself); raise LimitNOFILE / ulimit -n"
                    );
                }
                self.inner.conn_cap.store(cap, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "reading the open-file limit failed; serving max_connections"),
        }
        let cap = self.connection_cap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let Some(mut slot) = take_slot(&self.inner.metrics.connections, cap) else {
                self.inner.metrics.refuse("connections");
                self.refuse_connection(stream, format!("this service has its maximum of {cap} open connections"));
                continue;
            };
            let per_ip_cap = self.inner.limits.max_connections_per_ip;
            match take_per_ip(&self.inner.per_ip_conns, rate_key(peer.ip()), per_ip_cap) {
                Ok(per_ip) => slot.per_ip = per_ip,
                Err(()) => {
                    drop(slot);
                    self.inner.metrics.refuse("connections_per_ip");
                    let why = format!("your address has its maximum of {per_ip_cap} open connections here");
                    self.refuse_connection(stream, why);
                    continue;
                }
            }
            let _ = stream.set_nodelay(true);
            let l = &self.inner.limits;
            let io = IdleIo::new(stream, l.idle_timeout, l.write_timeout, self.inner.metrics.clone(), slot);
            let app = app.clone();
            let svc = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { tower::Service::call(&mut app, req).await }
            });
            let header_timeout = self.inner.limits.header_timeout;
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
                let conn = b.serve_connection(hyper_util::rt::TokioIo::new(io), svc).with_upgrades();
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                drop(stop);
            });
        }
        drop(listener);
        drop(stop_rx);
        let _ = stop_tx.send(());
        let _ =
            tokio::time::timeout(self.inner.limits.request_timeout + Duration::from_secs(1), stop_tx.closed()).await;
        Ok(())
    }

    /// Answers a connection over the cap with a `503` and closes it (reading what the client sent first, so it sees
    /// the answer rather than a reset).
    fn refuse_connection(&self, mut stream: TcpStream, why: String) {
        if self.inner.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
            self.inner.refusing.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let inner = self.inner.clone();
        let body = format!("{why}; try again shortly\n");
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            inner.refusing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Removes the buckets that have refilled; if the table is still full, some others (memory stays bounded).
fn prune(table: &mut HashMap<IpAddr, Bucket>, now_ms: u64, l: &Limits) {
    let full = l.rate_burst as u64 * 1000;
    table.retain(|_, b| b.level(now_ms, l.rate_per_s, l.rate_burst) < full);
    if table.len() >= l.rate_limit_addresses {
        let keep = l.rate_limit_addresses * 3 / 4;
        let drop: Vec<IpAddr> = table.keys().skip(keep).copied().collect();
        for k in drop {
            table.remove(&k);
        }
        tracing::warn!(
            addresses = l.rate_limit_addresses,
            "rate limit: more client addresses are being limited than the table holds; some were forgotten"
        );
    }
}

async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    // Out of file descriptors, mostly: wait for some to be closed.
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Whether a `Host` header names this service: none (not a browser), an IP address, `localhost`, or one of
/// `allowed` (`*`: any), the port left out.
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(h) = host else { return true };
    let h = h.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => return v6.parse::<IpAddr>().is_ok(),
            _ => return false,
        }
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || allowed.iter().any(|a| a == "*" || *a == name)
}

/// Whether a request asks for a WebSocket.
fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn guard_request(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let l = g.limits();
    let m = g.metrics();
    // Rate first: it is the cheapest refusal of a flood.
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().filter(|_| !g.exempt(&req));
    if let Some(ConnectInfo(peer)) = peer {
        if let Err(wait_ms) = g.rate_check(peer.ip()) {
            m.refuse("rate_limited");
            let s = retry_after_s(wait_ms);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, HeaderValue::from(s))],
                format!(
                    "too many requests: {} per second per address (bursts of {}); retry after {s} s\n",
                    l.rate_per_s, l.rate_burst
                ),
            )
                .into_response();
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let guarded = is_upgrade(&req) || !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if guarded && !l.allowed_origins.iter().any(|a| a == "*") {
            let text = origin.to_str().unwrap_or("(not text)");
            let ok = normalise_origin(text).is_some_and(|o| l.allowed_origins.contains(&o));
            if !ok {
                m.refuse("origin");
                return (
                    StatusCode::FORBIDDEN,
                    format!("origin {text} is not allowed here (not in this service's allowed origins)\n"),
                )
                    .into_response();
            }
        }
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) && !is_upgrade(&req) {
        let enforce = g.inner.listen.get().is_some_and(|a| a.ip().is_loopback() || !l.allowed_hosts.is_empty());
        let host = req.headers().get(header::HOST).map(|h| h.to_str().unwrap_or("\u{0}"));
        if enforce && !host_allowed(host, &l.allowed_hosts) {
            m.refuse("host");
            return (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "host {} is not served here (an IP address, localhost or this service's allowed_hosts)\n",
                    host.unwrap_or_default().escape_debug()
                ),
            )
                .into_response();
        }
    }
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > l.max_body_bytes as u64) {
        m.refuse("body_too_large");
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: at most {} bytes\n", l.max_body_bytes),
        )
            .into_response();
    }
    match tokio::time::timeout(l.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            m.refuse("timeout");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {} ms\n", l.request_timeout.as_millis()),
            )
                .into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A connection that is closed when it sends nothing for too long.

struct IdleIo {
    io: TcpStream,
    idle: Duration,
    last_read: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// How long one write may wait ([`Limits::write_timeout`]), and the deadline of the write waiting now.
    write_timeout: Duration,
    write_waiting: bool,
    write_timer: Pin<Box<tokio::time::Sleep>>,
    metrics: GuardMetrics,
    _slot: Slot,
}

impl IdleIo {
    fn new(io: TcpStream, idle: Duration, write_timeout: Duration, metrics: GuardMetrics, slot: Slot) -> IdleIo {
        let now = tokio::time::Instant::now();
        IdleIo {
            io,
            idle,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            write_timeout,
            write_waiting: false,
            write_timer: Box::pin(tokio::time::sleep_until(now + write_timeout)),
            metrics,
            _slot: slot,
        }
    }

    /// Times a write (or flush) that returned `r`: a ready one ends the wait; a pending one starts it, or fails the
    /// connection once it has waited [`Limits::write_timeout`].
    fn time_write<T>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.write_waiting = false;
            return r;
        }
        if !self.write_waiting {
            self.write_waiting = true;
            let deadline = tokio::time::Instant::now() + self.write_timeout;
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.metrics.drop_for("write_stall");
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client took nothing of the response for the write timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last_read = tokio::time::Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = this.last_read + this.idle;
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.metrics.drop_for("idle");
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the connection sent nothing for the idle timeout",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.time_write(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.time_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.time_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_addresses_localhost_and_configured_names_pass_the_host_check() {
        let none: Vec<String> = vec![];
        for ok in
            [None, Some("127.0.0.1:8080"), Some("localhost:1"), Some("LOCALHOST"), Some("[::1]:80"), Some("10.1.2.3")]
        {
            assert!(host_allowed(ok, &none), "{ok:?}");
        }
        for bad in ["attacker.example", "attacker.example:8080", "[::1", "[evil]:1", "localhost.evil"] {
            assert!(!host_allowed(Some(bad), &none), "{bad}");
        }
        let dash = vec!["dash.example.com".to_string()];
        assert!(host_allowed(Some("Dash.Example.com.:443"), &dash));
        assert!(!host_allowed(Some("attacker.example"), &dash));
        assert!(host_allowed(Some("attacker.example"), &["*".to_string()]));
        let raw = RawLimits { allowed_hosts: Some(vec!["https://x".into()]), ..Default::default() };
        assert_eq!(raw.validate("api").unwrap_err().0, "api.allowed_hosts[0]");
    }

    #[test]
    fn the_connection_cap_leaves_descriptors_for_the_service() {
        assert_eq!(connection_cap(12_288, 1024), 1024 - FD_RESERVE);
        assert_eq!(connection_cap(12_288, 1 << 20), 12_288);
        assert_eq!(connection_cap(100, 100), 1, "never 0");
        assert_eq!(connection_cap(12_288, u64::MAX), 12_288);
    }

    #[test]
    fn a_per_address_count_is_capped_and_given_back() {
        let table = PerIp::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let gauge = Gauge::default();
        let mut slots = Vec::new();
        for _ in 0..2 {
            let mut s = take_slot(&gauge, 10).unwrap();
            s.per_ip = take_per_ip(&table, ip, 2).unwrap();
            slots.push(s);
        }
        assert!(take_per_ip(&table, ip, 2).is_err());
        assert!(take_per_ip(&table, "10.0.0.2".parse().unwrap(), 2).unwrap().is_some(), "another address");
        assert_eq!(take_per_ip(&table, ip, 0).unwrap().map(|x| x.1), None, "0: no limit");
        slots.clear();
        assert_eq!(gauge.get(), 0);
        assert!(!table.lock().unwrap().contains_key(&ip), "an address at 0 is forgotten");
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses_with_the_exact_wait() {
        let (rate, burst) = (10, 3);
        let mut b = Bucket::full(burst, 0);
        for _ in 0..3 {
            let (nb, r) = take_token(b, 0, rate, burst);
            assert_eq!(r, Ok(()));
            b = nb;
        }
        assert_eq!(b.milli, 0);
        // 10 per second: one token every 100 ms.
        let (b, r) = take_token(b, 0, rate, burst);
        assert_eq!(r, Err(100));
        let (b, r) = take_token(b, 40, rate, burst);
        assert_eq!(r, Err(60), "400 thousandths after 40 ms; 60 ms more for a whole token");
        let (b, r) = take_token(b, 100, rate, burst);
        assert_eq!(r, Ok(()));
        assert_eq!(b, Bucket { milli: 0, at_ms: 100 });
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_burst_and_a_clock_going_back_refills_nothing() {
        let b = Bucket { milli: 0, at_ms: 1_000 };
        assert_eq!(b.level(1_000_000, 50, 4), 4_000);
        let (b2, r) = take_token(b, 500, 50, 4);
        assert_eq!(r, Err(20));
        assert_eq!(b2.at_ms, 1_000);
        // Slow rates round the wait up, never down to 0.
        let (_, r) = take_token(Bucket { milli: 999, at_ms: 0 }, 0, 3, 1);
        assert_eq!(r, Err(1));
        let (_, r) = take_token(Bucket { milli: 0, at_ms: 0 }, 0, 1, 1);
        assert_eq!(r, Err(1000));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_s(0), 1);
        assert_eq!(retry_after_s(1), 1);
        assert_eq!(retry_after_s(1000), 1);
        assert_eq!(retry_after_s(1001), 2);
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        assert_eq!(rate_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(rate_key("10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_rate_table_stays_bounded_under_many_addresses() {
        let l = Limits { rate_per_s: 1, rate_burst: 2, rate_limit_addresses: 100, ..Limits::default() };
        let g = Guard::new(l, GuardMetrics::default());
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(g.rate_check(ip).is_ok());
            assert!(g.rate_table_len() <= 100);
        }
        // A limited address keeps its bucket while the table has room.
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let g = Guard::new(Limits { rate_per_s: 1, rate_burst: 2, ..Limits::default() }, GuardMetrics::default());
        assert!(g.rate_check(ip).is_ok() && g.rate_check(ip).is_ok());
        assert!(g.rate_check(ip).is_err());
    }

    #[test]
    fn pruning_forgets_refilled_buckets_first() {
        let l = Limits { rate_per_s: 1000, rate_burst: 1, rate_limit_addresses: 16, ..Limits::default() };
        let mut t = HashMap::new();
        for i in 0..16u32 {
            t.insert(IpAddr::V4(std::net::Ipv4Addr::from(i)), Bucket { milli: 0, at_ms: 0 });
        }
        // One millisecond later every bucket has refilled (1000 per second, burst 1): all are forgotten.
        prune(&mut t, 1, &l);
        assert!(t.is_empty());
        for i in 0..16u32 {
            t.insert(IpAddr::V4(std::net::Ipv4Addr::from(i)), Bucket { milli: 0, at_ms: 10 });
        }
        prune(&mut t, 10, &l);
        assert_eq!(t.len(), 12);
    }

    #[test]
    fn the_toml_section_validates_with_field_names() {
        let parse = |s: &str| toml::from_str::<RawLimits>(s).unwrap().validate("api");
        assert_eq!(parse("").unwrap(), Limits::default());
        let l = parse(
            "max_connections = 10\nrate_limit_per_s = 7\nws_send_timeout_ms = 250\n\
             allowed_origins = [\"HTTPS://Dash.Example.com:443/\", \"http://localhost:3000\"]",
        )
        .unwrap();
        assert_eq!(l.max_connections, 10);
        assert_eq!((l.rate_per_s, l.rate_burst), (7, 14));
        assert_eq!(l.ws_send_timeout, Duration::from_millis(250));
        assert_eq!(l.allowed_origins, vec!["https://dash.example.com", "http://localhost:3000"]);
        assert_eq!(parse("rate_limit_per_s = 0").unwrap().rate_per_s, 0);
        let e = parse("max_connections = 0").unwrap_err();
        assert_eq!(e, ("api.max_connections".into(), "0 is below 1".into()));
        let e = parse("allowed_origins = [\"https://a.example/path\"]").unwrap_err();
        assert!(e.0 == "api.allowed_origins[0]" && e.1.contains("scheme://host"), "{e:?}");
        let e = parse("allowed_origins = [\"ftp://a.example\"]").unwrap_err();
        assert!(e.1.contains("http:// or https://"), "{e:?}");
        assert_eq!(parse("ws_max_message_bytes = 100").unwrap_err().0, "api.ws_max_message_bytes");
        assert!(toml::from_str::<RawLimits>("max_conections = 1").is_err());
    }

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        assert_eq!(normalise_origin("https://Dash.example.com").as_deref(), Some("https://dash.example.com"));
        assert_eq!(normalise_origin("http://localhost:80").as_deref(), Some("http://localhost"));
        assert_eq!(normalise_origin("null"), None);
        assert_eq!(normalise_origin("file://x"), None);
    }
}
