//! Serving the signal bus over a WebSocket (`/ws?types=a,b`): every signal as one JSON text message, a
//! `{"type":"lagged","lost":n}` note when the socket fell behind. The keeper and the copy-trader both mount it.
//! A *sealed* stream (a client without the service's API token, unless the keeper's operator publishes forecasts:
//! `[api] publish_forecasts`) leaves out the signals that carry a forecast before its on-chain reveal
//! ([`reveals_forecast_early`]).
//!
//! A [`Hub`] serialises each signal once for every subscriber (one task reads the bus and turns each signal into
//! shared JSON bytes, [`Frame`]) and puts it only in the queues of the subscribers that want it: subscribers with the
//! same filter and sealing share one queue (a *class*, at most [`MAX_CLASSES`]; beyond, the rest share the queue of
//! every frame and filter their own), so a subscriber's task is woken only for what it sends. A woken task sends
//! its frame and every frame already queued behind it in one write ([`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`] at
//! most), so a reader that fell behind costs one write per batch, not one per message. The service's [`Guard`] bounds the
//! subscribers: their number (`503` beyond), the size of what they may send (`1009` and closed beyond), the time one
//! message may take to go out (a slower reader is dropped, counted `ws_slow_reader`, and never holds up the others,
//! which each have their own task), and the queue behind a reader (a reader a whole queue behind skips ahead to the
//! newest signal with a `lagged` note, counted in `ws_skipped_signals`). Clients are pinged every third of the idle
//! timeout.

use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt;
use tokio::sync::broadcast;

use crate::http_guard::{Guard, GuardMetrics, Slot};
use crate::Bus;

/// Signals a subscriber may fall behind before it skips ahead (each is shared by every subscriber).
pub const QUEUE: usize = 4096;

/// Queues of subscribers at most (one per filter and sealing in use, each [`QUEUE`] places, about 160 KiB): a
/// subscriber whose class would be one more shares the queue of every frame and filters its own.
pub const MAX_CLASSES: usize = 64;

/// Messages sent in one write at most: the frame that woke a subscriber's task and those queued behind it.
pub const MAX_BATCH: usize = 64;
/// Bytes of messages gathered for one write: no more frames are added to a batch once it holds this many.
pub const MAX_BATCH_BYTES: usize = 16 * 1024;

/// Every signal type a `/ws?types=` filter may name (defined with [`crate::SignalKind::type_index`]).
pub use crate::signals::SIGNAL_TYPES;

/// At most this many names in one `types` parameter (duplicates included).
pub const MAX_TYPES: usize = 32;
/// At most this many bytes in one `types` parameter.
pub const MAX_TYPES_LEN: usize = 1024;

/// The signal types one subscriber asked for: a set of [`SIGNAL_TYPES`] indexes (one bit each; a few bytes per
/// subscriber whatever the query held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TypeFilter(u32);

impl TypeFilter {
    /// Whether the type at `index` in [`SIGNAL_TYPES`] was asked for.
    pub fn has(&self, index: usize) -> bool {
        index < 32 && self.0 & (1 << index) != 0
    }

    /// Whether the type named `name` was asked for.
    pub fn contains(&self, name: &str) -> bool {
        SIGNAL_TYPES.iter().position(|t| *t == name).is_some_and(|i| self.has(i))
    }

    /// How many types were asked for.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// Why a `types` parameter was refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadTypes {
    /// Longer than [`MAX_TYPES_LEN`] bytes.
    TooLong(usize),
    /// More than [`MAX_TYPES`] names.
    TooMany,
    /// Not a signal type (the name, cut to 64 characters).
    Unknown(String),
}

impl std::fmt::Display for BadTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTypes::TooLong(n) => write!(f, "types: {n} bytes; at most {MAX_TYPES_LEN}"),
            BadTypes::TooMany => write!(f, "types: more than {MAX_TYPES} names"),
            BadTypes::Unknown(t) => {
                write!(
                    f,
                    "types: {t:?} is not a signal type (known: {})",
                    SIGNAL_TYPES[..SIGNAL_TYPES.len() - 1].join(",")
                )
            }
        }
    }
}

impl BadTypes {
    /// The `400` that answers it.
    pub fn response(&self) -> Response {
        use axum::response::IntoResponse;
        (axum::http::StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}

/// The `types` query parameter: comma-separated signal type names (`None`: all), each one of [`SIGNAL_TYPES`]
/// (duplicates count once), at most [`MAX_TYPES`] names in at most [`MAX_TYPES_LEN`] bytes.
pub fn parse_types(types: Option<&str>) -> Result<Option<TypeFilter>, BadTypes> {
    let Some(t) = types else { return Ok(None) };
    if t.len() > MAX_TYPES_LEN {
        return Err(BadTypes::TooLong(t.len()));
    }
    let mut set = 0u32;
    for (n, name) in t.split(',').map(str::trim).filter(|x| !x.is_empty()).enumerate() {
        if n >= MAX_TYPES {
            return Err(BadTypes::TooMany);
        }
        match SIGNAL_TYPES.iter().position(|k| *k == name) {
            Some(i) if i < SIGNAL_TYPES.len() - 1 => set |= 1 << i,
            _ => return Err(BadTypes::Unknown(name.chars().take(64).collect())),
        }
    }
    Ok(Some(TypeFilter(set)))
}

/// Signals that carry the forecaster's probability before the prediction is revealed on chain (the live forecast and
/// the committed value). Publishing them to anyone would let others copy the forecast before the round locks.
pub fn reveals_forecast_early(kind: &crate::SignalKind) -> bool {
    matches!(kind, crate::SignalKind::Forecast { .. } | crate::SignalKind::PredictionCommitted { .. })
}

/// One signal, serialised once for every subscriber.
#[derive(Debug)]
pub struct Frame {
    /// The signal's type (`round_locked`); `lagged` for the hub's own note.
    pub name: String,
    /// Its position in [`SIGNAL_TYPES`].
    pub index: usize,
    /// Whether a sealed stream leaves it out ([`reveals_forecast_early`]).
    pub early: bool,
    /// The JSON text.
    pub text: Utf8Bytes,
}

impl Frame {
    fn of(sig: &crate::Signal) -> Frame {
        let text = serde_json::to_string(sig).unwrap_or_default();
        // The type name is the JSON's `type` field; read it from the text rather than serialising again.
        #[derive(serde::Deserialize)]
        struct Tag {
            #[serde(rename = "type")]
            name: String,
        }
        let name = serde_json::from_str::<Tag>(&text).map(|t| t.name).unwrap_or_default();
        let index = sig.kind.type_index();
        debug_assert_eq!(name, SIGNAL_TYPES[index]);
        Frame { name, index, early: reveals_forecast_early(&sig.kind), text: text.into() }
    }

    fn lagged(n: u64) -> Frame {
        Frame {
            name: "lagged".into(),
            index: SIGNAL_TYPES.len() - 1,
            early: false,
            // Written out so the type comes first, as documented (a `json!` map sorts its keys: `lost` first).
            text: format!(r#"{{"type":"lagged","lost":{n}}}"#).into(),
        }
    }
}

/// The WebSocket side of a service: the bus, serialised once per signal, and the guard of its subscribers.
/// Cheap to clone; the task that reads the bus starts with the first subscriber and stops when the last clone of
/// the hub is dropped.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    bus: Bus,
    guard: Guard,
    classes: Arc<Classes>,
    started: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for HubInner {
    fn drop(&mut self) {
        if let Some(task) = self.started.get() {
            task.abort();
        }
    }
}

/// Which frames a queue carries: those a subscriber with this filter and sealing sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Class {
    filter: Option<TypeFilter>,
    sealed: bool,
}

impl Class {
    /// The class of every frame (the queue of subscribers beyond [`MAX_CLASSES`]).
    const ALL: Class = Class { filter: None, sealed: false };

    /// Whether a subscriber of this class sends `f`: not an early forecast on a sealed stream, and of a type it asked
    /// for (the `lagged` note always).
    fn wants(&self, f: &Frame) -> bool {
        let hidden = self.sealed && f.early;
        let filtered = self.filter.is_some_and(|w| f.index != SIGNAL_TYPES.len() - 1 && !w.has(f.index));
        !hidden && !filtered
    }
}

/// The queues in use, one per class; a queue whose last subscriber left is dropped at the next frame.
#[derive(Default)]
struct Classes {
    queues: Mutex<Vec<(Class, broadcast::Sender<Arc<Frame>>)>>,
}

impl Classes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Class, broadcast::Sender<Arc<Frame>>)>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of the frames of `class` from now on: its queue, or a new one, or (with [`MAX_CLASSES`] queues in
    /// use) the queue of every frame.
    fn subscribe(&self, class: Class) -> broadcast::Receiver<Arc<Frame>> {
        let mut q = self.lock();
        let live = |q: &[(Class, broadcast::Sender<Arc<Frame>>)], c: Class| {
            q.iter().find(|(k, tx)| *k == c && tx.receiver_count() > 0).map(|(_, tx)| tx.subscribe())
        };
        if let Some(rx) = live(&q, class) {
            return rx;
        }
        q.retain(|(_, tx)| tx.receiver_count() > 0);
        let class = if q.len() < MAX_CLASSES { class } else { Class::ALL };
        if let Some(rx) = live(&q, class) {
            return rx;
        }
        let (tx, rx) = broadcast::channel(QUEUE);
        q.push((class, tx));
        rx
    }

    /// Puts `frame` in the queue of every class that wants it.
    fn publish(&self, frame: Arc<Frame>) {
        let mut q = self.lock();
        q.retain(|(_, tx)| tx.receiver_count() > 0);
        for (c, tx) in q.iter() {
            if c.wants(&frame) {
                // A subscriber that left meanwhile is fine: frames are fire-and-forget like the bus.
                let _ = tx.send(frame.clone());
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Hub {
    pub fn new(bus: Bus, guard: Guard) -> Hub {
        Hub { inner: Arc::new(HubInner { bus, guard, classes: Arc::default(), started: OnceLock::new() }) }
    }

    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// A receiver of the frames a subscriber with `filter` and `sealed` sends, from now on (starting the hub's task
    /// if need be).
    fn subscribe(&self, filter: Option<TypeFilter>, sealed: bool) -> broadcast::Receiver<Arc<Frame>> {
        self.inner.started.get_or_init(|| {
            // Subscribed here, not in the task, so nothing published from now on is missed.
            let rx = self.inner.bus.subscribe();
            let task = tokio::spawn(pump(rx, self.inner.classes.clone(), self.inner.guard.metrics().clone()));
            task.abort_handle()
        });
        self.inner.classes.subscribe(Class { filter, sealed })
    }

    /// Answers a `/ws` request: `503` when the subscribers are at their cap, else the upgrade to a stream of the
    /// signals named in `filter` (all when `None`), without [`reveals_forecast_early`] ones when `sealed`.
    pub fn upgrade(&self, up: WebSocketUpgrade, filter: Option<TypeFilter>, sealed: bool) -> Response {
        let Some(slot) = self.inner.guard.ws_slot() else {
            return self.inner.guard.ws_full();
        };
        self.upgrade_in(up, filter, sealed, slot)
    }

    /// [`Hub::upgrade`] for a client at `peer`, also under the cap of subscribers per address
    /// ([`crate::http_guard::Limits::max_ws_per_ip`]); `None` (a router served without the guard's
    /// [`crate::http_guard::Guard::serve`], so with no client address): as [`Hub::upgrade`].
    pub fn upgrade_from(
        &self,
        up: WebSocketUpgrade,
        peer: Option<std::net::IpAddr>,
        filter: Option<TypeFilter>,
        sealed: bool,
    ) -> Response {
        let Some(peer) = peer else { return self.upgrade(up, filter, sealed) };
        match self.inner.guard.ws_slot_for(peer) {
            Ok(slot) => self.upgrade_in(up, filter, sealed, slot),
            Err(refusal) => *refusal,
        }
    }

    fn upgrade_in(&self, up: WebSocketUpgrade, filter: Option<TypeFilter>, sealed: bool, slot: Slot) -> Response {
        let rx = self.subscribe(filter, sealed);
        let limits = self.inner.guard.limits();
        let opts = StreamOptions {
            filter,
            sealed,
            send_timeout: limits.ws_send_timeout,
            ping_every: limits.ws_ping_interval(),
            metrics: self.inner.guard.metrics().clone(),
        };
        up.max_message_size(limits.ws_max_message_bytes)
            .max_frame_size(limits.ws_max_message_bytes)
            // Clients send only control frames: a small read buffer (the default is 128 KiB per connection).
            .read_buffer_size(4096)
            // A batch is gathered in the write buffer and written at its flush (the buffer grows only as far as the
            // batches a connection is sent: an idle one holds none).
            .write_buffer_size(MAX_BATCH_BYTES)
            .on_upgrade(move |socket| stream(socket, rx, opts, slot))
    }
}

/// Reads the bus, serialises each signal once and puts it in the queues of the classes that want it.
async fn pump(mut rx: broadcast::Receiver<Arc<crate::Signal>>, classes: Arc<Classes>, m: GuardMetrics) {
    loop {
        let frame = match rx.recv().await {
            Ok(sig) => Frame::of(&sig),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                m.ws_skipped.inc_by(n);
                Frame::lagged(n)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        classes.publish(Arc::new(frame));
    }
}

/// How one subscriber is served.
struct StreamOptions {
    filter: Option<TypeFilter>,
    sealed: bool,
    send_timeout: std::time::Duration,
    ping_every: std::time::Duration,
    metrics: GuardMetrics,
}

impl StreamOptions {
    /// Whether this subscriber gets `f`: not an early forecast on a sealed stream, and of a type it asked for (the
    /// `lagged` note always). Checked again for each frame whatever queue it came from.
    fn wants(&self, f: &Frame) -> bool {
        Class { filter: self.filter, sealed: self.sealed }.wants(f)
    }

    /// The next message already queued for this subscriber, without waiting: a frame it wants, or the `lagged` note
    /// when it fell a whole queue behind (counted in `ws_skipped_signals`); `None` when nothing is queued (or the
    /// queue closed: the next wait sees it).
    fn next_queued(&self, rx: &mut broadcast::Receiver<Arc<Frame>>) -> Option<Utf8Bytes> {
        loop {
            match rx.try_recv() {
                Ok(f) if self.wants(&f) => return Some(f.text.clone()),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.metrics.ws_skipped.inc_by(n);
                    return Some(Frame::lagged(n).text);
                }
                Err(_) => return None,
            }
        }
    }
}

/// Why a send did not go out.
enum SendFailed {
    /// The client is gone.
    Closed,
    /// It did not go out in time: the reader is too slow.
    Slow,
}

async fn send(socket: &mut WebSocket, msg: Message, timeout: std::time::Duration) -> Result<(), SendFailed> {
    match tokio::time::timeout(timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Closed),
        Err(_) => Err(SendFailed::Slow),
    }
}

/// Sends `first` and the messages queued behind it (at most [`MAX_BATCH`], gathered up to [`MAX_BATCH_BYTES`]) in
/// queue order, with one flush: one write for the batch. The whole batch has `o.send_timeout` to go out.
async fn send_batch(
    socket: &mut WebSocket,
    first: Message,
    rx: &mut broadcast::Receiver<Arc<Frame>>,
    o: &StreamOptions,
) -> Result<(), SendFailed> {
    let batch = async {
        let mut bytes = message_len(&first);
        socket.feed(first).await?;
        let mut n = 1;
        while n < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Some(text) = o.next_queued(rx) else { break };
            bytes += text.len();
            n += 1;
            socket.feed(Message::Text(text)).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(o.send_timeout, batch).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Closed),
        Err(_) => Err(SendFailed::Slow),
    }
}

fn message_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
    }
}

/// Whether a read failed because the reader refused a message or frame above the limit: tungstenite's capacity error,
/// which axum's `ws` passes up boxed. The `tungstenite` dependency is the version axum's `ws` is built on (Cargo.lock);
/// were they to differ, the downcast would never match (the test `an_oversized_message_is_closed_with_1009` fails).
fn over_capacity(e: axum::Error) -> bool {
    matches!(e.into_inner().downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)))
}

/// Streams frames to one socket until either side closes, the client sends too much, or a send takes longer than
/// `send_timeout` (the slow reader is dropped; the others have their own tasks and never wait for it). Frames queued
/// behind the one that woke the task go out with it in one write ([`send_batch`]).
async fn stream(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<Frame>>, o: StreamOptions, _slot: Slot) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + o.ping_every, o.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        let msg = tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(e)) => {
                    if over_capacity(e) {
                        o.metrics.drop_for("ws_oversized");
                        let close = CloseFrame { code: 1009, reason: "message too big".into() };
                        let _ = send(&mut socket, Message::Close(Some(close)), o.send_timeout).await;
                    }
                    return;
                }
                Some(Ok(_)) => continue,
            },
            frame = rx.recv() => match frame {
                Ok(f) => {
                    if !o.wants(&f) {
                        continue;
                    }
                    Message::Text(f.text.clone())
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    o.metrics.ws_skipped.inc_by(n);
                    Message::Text(Frame::lagged(n).text)
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = send(&mut socket, Message::Close(None), o.send_timeout).await;
                    return;
                }
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        if let Err(e) = send_batch(&mut socket, msg, &mut rx, &o).await {
            break e;
        }
    };
    if let SendFailed::Slow = result {
        o.metrics.drop_for("ws_slow_reader");
        tracing::debug!("a WebSocket reader too slow for the send timeout was dropped");
    }
}

/// Follows a signal WebSocket (`ws://…/ws`, optionally `?types=…`) until `tx` closes, reconnecting with back-off
/// (250 ms doubling to 30 s; failures in a row are logged at the first, then as the count doubles). `token` is sent as
/// `Authorization: Bearer …` (never in the URL, which is logged). Messages that are not signals (the `lagged` note,
/// malformed text) are logged and skipped.
pub async fn follow(url: String, token: Option<crate::Secret>, tx: tokio::sync::mpsc::Sender<crate::Signal>) {
    let (state, _) = tokio::sync::watch::channel(FollowState::Connecting);
    follow_reporting(url, token, tx, state).await
}

/// Where a [`follow_reporting`] stream stands, for a health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowState {
    /// Not connected yet.
    Connecting,
    /// Connected; signals flow.
    Connected,
    /// The last attempt failed (unreachable, refused, closed by the server), with why; retrying after a backoff.
    Down(String),
}

/// [`follow`], reporting each change of the connection's state on `state` (sends with no receiver are fine).
pub async fn follow_reporting(
    url: String,
    token: Option<crate::Secret>,
    tx: tokio::sync::mpsc::Sender<crate::Signal>,
    state: tokio::sync::watch::Sender<FollowState>,
) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let mut backoff = std::time::Duration::from_millis(250);
    // Failed attempts since the last connection (a closed stream counts as one).
    let mut failures = 0u64;
    loop {
        if tx.is_closed() {
            return;
        }
        let request = url.as_str().into_client_request().map(|mut r| {
            if let Some(t) = &token {
                if let Ok(v) = format!("Bearer {}", t.expose()).parse() {
                    r.headers_mut().insert("authorization", v);
                }
            }
            r
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%url, error = %e, "signal stream: not a WebSocket URL");
                return;
            }
        };
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut ws, _)) => {
                backoff = std::time::Duration::from_millis(250);
                failures = 0;
                state.send_replace(FollowState::Connected);
                tracing::info!(%url, "connected to a signal stream");
                while let Some(msg) = ws.next().await {
                    let text = match msg {
                        Ok(WsMessage::Text(t)) => t.to_string(),
                        Ok(WsMessage::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    match serde_json::from_str::<crate::Signal>(&text) {
                        Ok(sig) => {
                            if tx.send(sig).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            if text.contains("\"lagged\"") {
                                tracing::warn!(%url, %text, "signal stream: this reader fell behind");
                            } else {
                                tracing::warn!(%url, error = %e, "signal stream: a message that is not a signal was skipped");
                            }
                        }
                    }
                }
                failures += 1;
                tracing::warn!(%url, "signal stream closed; reconnecting");
                state.send_replace(FollowState::Down("the stream closed".into()));
            }
            Err(e) => {
                failures += 1;
                if log_failure(failures) {
                    tracing::warn!(%url, error = %e, failures, "signal stream unreachable; retrying with back-off");
                }
                state.send_replace(FollowState::Down(format!("unreachable: {e}")));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Whether the `n`th failed attempt in a row (from 1) is logged: the first, then each time the count doubles (1, 2, 4,
/// 8, …), so a stream down for hours logs a few lines, not one per retry.
fn log_failure(n: u64) -> bool {
    n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SignalKind;

    #[test]
    fn failures_in_a_row_are_logged_at_the_first_and_then_with_back_off() {
        let logged: Vec<u64> = (1..=1000).filter(|n| log_failure(*n)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
        assert!(!log_failure(0));
    }

    fn samples() -> Vec<SignalKind> {
        vec![
            SignalKind::TxFailed { chain: "c".into(), action: "a".into(), error: "e".into() },
            SignalKind::KeeperHealth {
                chain: "c".into(),
                healthy: true,
                head_block: 1,
                lag_s: 0,
                detail: String::new(),
            },
            SignalKind::RiskEvent { kind: "k".into(), detail: "d".into() },
        ]
    }

    #[test]
    fn a_kind_s_index_names_its_json_type() {
        for k in samples() {
            assert_eq!(SIGNAL_TYPES[k.type_index()], serde_json::to_value(&k).unwrap()["type"], "{k:?}");
        }
    }

    #[test]
    fn types_are_checked_deduplicated_and_bounded() {
        assert_eq!(parse_types(None), Ok(None));
        let f = parse_types(Some("tx_failed, risk_event,tx_failed,,")).unwrap().unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.contains("tx_failed") && f.contains("risk_event") && !f.contains("round_locked"));
        assert_eq!(parse_types(Some("tx_failed,nope")), Err(BadTypes::Unknown("nope".into())));
        assert_eq!(parse_types(Some("lagged")), Err(BadTypes::Unknown("lagged".into())), "not a signal");
        let many = vec!["tx_failed"; MAX_TYPES].join(",");
        assert!(parse_types(Some(&many)).is_ok());
        assert_eq!(parse_types(Some(&format!("{many},tx_failed"))), Err(BadTypes::TooMany));
        let long = "a".repeat(MAX_TYPES_LEN + 1);
        assert_eq!(parse_types(Some(&long)), Err(BadTypes::TooLong(MAX_TYPES_LEN + 1)));
        assert!(parse_types(Some(&"a".repeat(MAX_TYPES_LEN)))
            .is_err_and(|e| matches!(e, BadTypes::Unknown(t) if t.len() == 64)));
    }

    #[test]
    fn a_filtered_subscriber_gets_its_types_and_the_lagged_note() {
        let sig = |kind| crate::Signal { at_ms: 0, source: "t".into(), kind };
        let o = StreamOptions {
            filter: parse_types(Some("risk_event")).unwrap(),
            sealed: false,
            send_timeout: std::time::Duration::from_secs(1),
            ping_every: std::time::Duration::from_secs(1),
            metrics: GuardMetrics::default(),
        };
        let [failed, _, risk] = <[SignalKind; 3]>::try_from(samples()).unwrap();
        assert!(o.wants(&Frame::of(&sig(risk))));
        assert!(!o.wants(&Frame::of(&sig(failed))));
        assert!(o.wants(&Frame::lagged(3)));
    }

    fn frame(kind: SignalKind) -> Arc<Frame> {
        Arc::new(Frame::of(&crate::Signal { at_ms: 0, source: "t".into(), kind }))
    }

    fn forecast() -> SignalKind {
        SignalKind::Forecast { chain: "c".into(), market: 1, epoch: 2, p_up: 0.5, horizon_s: 60, model: "m".into() }
    }

    /// What `rx` holds now, as type names (`lagged:N` for the note), without waiting.
    fn drain(rx: &mut broadcast::Receiver<Arc<Frame>>) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(f) => out.push(f.name.clone()),
                Err(broadcast::error::TryRecvError::Lagged(n)) => out.push(format!("lagged:{n}")),
                Err(_) => return out,
            }
        }
    }

    #[test]
    fn each_frame_goes_only_to_the_queues_of_the_classes_that_want_it() {
        let classes = Classes::default();
        let risk_only = Class { filter: parse_types(Some("risk_event")).unwrap(), sealed: false };
        let sealed = Class { filter: None, sealed: true };
        let mut a = classes.subscribe(risk_only);
        let mut a2 = classes.subscribe(risk_only);
        let mut b = classes.subscribe(sealed);
        let mut c = classes.subscribe(Class::ALL);
        assert_eq!(classes.len(), 3, "subscribers of one class share its queue");
        let [failed, _, risk] = <[SignalKind; 3]>::try_from(samples()).unwrap();
        for f in [frame(failed), frame(risk), frame(forecast()), Arc::new(Frame::lagged(2))] {
            classes.publish(f);
        }
        assert_eq!(drain(&mut a), ["risk_event", "lagged"]);
        assert_eq!(drain(&mut a2), ["risk_event", "lagged"]);
        assert_eq!(drain(&mut b), ["tx_failed", "risk_event", "lagged"], "no early forecast on a sealed stream");
        assert_eq!(drain(&mut c), ["tx_failed", "risk_event", "forecast", "lagged"]);
        // A queue whose subscribers all left is dropped at the next frame.
        drop((a, a2));
        classes.publish(frame(forecast()));
        assert_eq!(classes.len(), 2);
        assert_eq!(drain(&mut c), ["forecast"]);
        assert!(drain(&mut b).is_empty());
    }

    #[test]
    fn beyond_the_class_cap_subscribers_share_the_queue_of_every_frame() {
        let classes = Classes::default();
        let names = &SIGNAL_TYPES[..SIGNAL_TYPES.len() - 1];
        // Distinct filters (pairs of types), one queue each, up to the cap.
        let mut held = Vec::new();
        'fill: for (i, x) in names.iter().enumerate() {
            for y in &names[i + 1..] {
                if held.len() == MAX_CLASSES {
                    break 'fill;
                }
                let filter = parse_types(Some(&format!("{x},{y}"))).unwrap();
                held.push(classes.subscribe(Class { filter, sealed: true }));
            }
        }
        assert_eq!(classes.len(), MAX_CLASSES);
        // One more class: it gets the queue of every frame (and its task filters), not a queue of its own.
        let mut over = classes.subscribe(Class { filter: parse_types(Some("risk_event")).unwrap(), sealed: true });
        assert_eq!(classes.len(), MAX_CLASSES + 1);
        let mut all = classes.subscribe(Class::ALL);
        assert_eq!(classes.len(), MAX_CLASSES + 1, "the same queue");
        classes.publish(frame(forecast()));
        assert_eq!(drain(&mut over), ["forecast"]);
        assert_eq!(drain(&mut all), ["forecast"]);
        // Its stream filters: with that subscriber's own options, the early forecast is not sent.
        let o = StreamOptions {
            filter: parse_types(Some("risk_event")).unwrap(),
            sealed: true,
            send_timeout: std::time::Duration::from_secs(1),
            ping_every: std::time::Duration::from_secs(1),
            metrics: GuardMetrics::default(),
        };
        classes.publish(frame(forecast()));
        let [failed, _, risk] = <[SignalKind; 3]>::try_from(samples()).unwrap();
        classes.publish(frame(failed));
        classes.publish(frame(risk));
        let text = o.next_queued(&mut over).unwrap();
        assert!(text.as_str().contains("\"risk_event\""), "{text}");
        assert_eq!(o.next_queued(&mut over), None);
    }

    /// A batch takes the queued frames in order, skips those the subscriber does not want, and puts the `lagged`
    /// note where the frames it stands for were lost (counted).
    #[test]
    fn queued_frames_come_out_in_order_with_the_lagged_note_in_place() {
        let (tx, mut rx) = broadcast::channel(4);
        let o = StreamOptions {
            filter: parse_types(Some("risk_event,keeper_health")).unwrap(),
            sealed: false,
            send_timeout: std::time::Duration::from_secs(1),
            ping_every: std::time::Duration::from_secs(1),
            metrics: GuardMetrics::default(),
        };
        let risk = |n: u32| frame(SignalKind::RiskEvent { kind: n.to_string(), detail: String::new() });
        // Six frames in a queue of four: the first two are lost.
        for n in 0..6 {
            tx.send(risk(n)).unwrap();
        }
        let [failed, health, _] = <[SignalKind; 3]>::try_from(samples()).unwrap();
        let mut out: Vec<String> = Vec::new();
        while let Some(t) = o.next_queued(&mut rx) {
            out.push(t.as_str().to_string());
        }
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out[0], r#"{"type":"lagged","lost":2}"#);
        for (i, t) in out[1..].iter().enumerate() {
            assert!(t.contains(&format!(r#""kind":"{}""#, i + 2)), "{t} at {i}");
        }
        assert_eq!(o.metrics.ws_skipped.get(), 2);
        tx.send(frame(failed)).unwrap();
        tx.send(frame(health)).unwrap();
        let t = o.next_queued(&mut rx).unwrap();
        assert!(t.as_str().contains("keeper_health"), "the unwanted tx_failed is skipped: {t}");
        assert_eq!(o.next_queued(&mut rx), None);
    }

    /// Through a real socket: a burst far larger than one batch arrives whole and in publish order (the batches are
    /// written in queue order), and a subscriber of another type gets none of it.
    #[tokio::test]
    async fn a_burst_arrives_whole_and_in_order_through_the_socket() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let bus = crate::Bus::new(8192);
        let hub = Hub::new(bus.clone(), Guard::new(crate::http_guard::Limits::default(), GuardMetrics::default()));
        let app = axum::Router::new().route(
            "/ws",
            axum::routing::get(move |up: WebSocketUpgrade, q: axum::extract::RawQuery| async move {
                let filter = parse_types(q.0.as_deref().and_then(|q| q.strip_prefix("types="))).unwrap();
                hub.upgrade(up, filter, false)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?types=risk_event")).await.unwrap();
        let (mut other, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?types=tx_failed")).await.unwrap();
        // Both are subscribed once a first signal reaches the first.
        let n = 3000;
        let mut got = Vec::new();
        let mut next = 0u32;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while got.is_empty() {
            bus.publish("t", SignalKind::RiskEvent { kind: "probe".into(), detail: String::new() });
            if let Ok(Some(Ok(WsMessage::Text(_)))) =
                tokio::time::timeout(std::time::Duration::from_millis(50), ws.next()).await
            {
                got.push(());
            }
            assert!(tokio::time::Instant::now() < deadline, "the subscriber never got a signal");
        }
        for i in 0..n {
            bus.publish("t", SignalKind::RiskEvent { kind: "burst".into(), detail: i.to_string() });
        }
        bus.publish("t", SignalKind::TxFailed { chain: "c".into(), action: "a".into(), error: "end".into() });
        while next < n {
            let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("the burst arrived in time");
            let Some(Ok(WsMessage::Text(t))) = m else { panic!("the stream ended: {m:?}") };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            assert_ne!(v["type"], "lagged", "nothing was skipped");
            if v["kind"] == "probe" {
                continue;
            }
            assert_eq!(v["detail"], next.to_string(), "in publish order");
            next += 1;
        }
        // The other subscriber got the one tx_failed and nothing of the burst.
        let m = tokio::time::timeout_at(deadline, other.next()).await.unwrap();
        let Some(Ok(WsMessage::Text(t))) = m else { panic!("{m:?}") };
        assert!(t.as_str().contains("\"error\":\"end\""), "{t}");
    }
    /// An incoming message above `ws_max_message_bytes` closes the socket with 1009 and is counted as `ws_oversized`
    /// (read from tungstenite's typed capacity error); a small one does not.
    #[tokio::test]
    async fn an_oversized_message_is_closed_with_1009() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let bus = crate::Bus::new(16);
        let metrics = GuardMetrics::default();
        let hub = Hub::new(bus.clone(), Guard::new(crate::http_guard::Limits::default(), metrics.clone()));
        let app = axum::Router::new()
            .route("/ws", axum::routing::get(move |up: WebSocketUpgrade| async move { hub.upgrade(up, None, false) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        ws.send(WsMessage::text("x".repeat(1024))).await.unwrap();
        // The socket stays open after the small message: a signal published after it still arrives.
        loop {
            bus.publish("t", SignalKind::RiskEvent { kind: "probe".into(), detail: String::new() });
            let m = tokio::time::timeout(std::time::Duration::from_millis(50), ws.next()).await;
            if let Ok(Some(Ok(WsMessage::Text(_)))) = m {
                break;
            }
            assert!(!matches!(m, Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))))), "closed early: {m:?}");
            assert!(tokio::time::Instant::now() < deadline, "the subscriber never got a signal");
        }
        assert_eq!(metrics.dropped("ws_oversized"), 0);
        // Four times the default limit of 16 KiB.
        let _ = ws.send(WsMessage::text("x".repeat(64 * 1024))).await;
        let code = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await.expect("the server closes the socket") {
                Some(Ok(WsMessage::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        };
        assert_eq!(code, Some(1009));
        assert_eq!(metrics.dropped("ws_oversized"), 1);
    }
}
