//! Serving the signal bus over a WebSocket (`/ws?types=a,b`): every signal as one JSON text message, a
//! `{"type":"lagged","lost":n}` note when the socket fell behind. The keeper and the copy-trader both mount it.
//! A *sealed* stream (a client without the service's API token, unless the keeper's operator publishes forecasts:
//! `[api] publish_forecasts`) leaves out the signals that carry a forecast before its on-chain reveal
//! ([`reveals_forecast_early`]).
//!
//! A [`Hub`] serialises each signal once for every subscriber: one task reads the bus and turns each signal into one
//! WebSocket frame, header included ([`Frame`]; a server's frames are not masked, so every subscriber is sent the
//! same bytes). The subscribers are split into *shards*, one per worker thread of the runtime (a new subscriber joins
//! the shard with the fewest of its class, then the fewest in all), and each shard's task writes the frame itself to the socket of each of its subscribers
//! that wants it, without waking that subscriber's task: one non-blocking write per delivery, nothing copied or
//! encoded per client, and a signal's fan-out spread over the runtime's threads (each subscriber's frames in publish
//! order). `ws_fanout_seconds` records how long each shard's fan-out took. Subscribers are grouped by filter and
//! sealing (a *class*), so the filter is checked once per class. A subscriber whose socket does
//! not take a frame at once gets it queued (shared bytes, never copied) and its own task writes the queue out as the
//! socket allows, many frames in one write; the hub's tasks never wait for a socket. The service's [`Guard`] bounds
//! the subscribers: their number (`503` beyond), the size of what they may send (`1009` and closed beyond), the time
//! one frame may wait to go out (a slower reader is dropped, counted `ws_slow_reader`, and never holds up the others),
//! and the queue behind a reader ([`QUEUE`] signals: beyond, its oldest queued signals give way to the newest and a
//! `lagged` note takes their place, counted in `ws_skipped_signals`). Clients are pinged every third of the idle
//! timeout. The handshake (RFC 6455 over HTTP/1.1) is the hub's own ([`WsUpgrade`]), so that the hub holds the
//! upgraded connection itself.

mod wire;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, watch, Notify};

use crate::http_guard::{Guard, GuardMetrics, Slot};
use crate::Bus;

/// Signals queued for one subscriber (beyond what its socket's kernel buffer holds) before its oldest give way to the
/// newest (with a `lagged` note). The frames are shared with every other subscriber: a full queue holds 48 bytes per
/// signal of its own (24 KiB at most with the queue's spare room), and an emptied queue gives its room back.
pub const QUEUE: usize = 256;

/// An emptied queue keeps room for this many items; beyond, its memory is given back.
const QUEUE_KEPT: usize = 16;

/// Frames a subscriber's task writes in one call at most, when its queue is long.
pub const MAX_BATCH: usize = 64;

/// Each of the hub's tasks lets the other tasks of its runtime run after this many units of work (a frame read or a
/// delivery each count one), so neither a signal for 10,000 subscribers nor a burst of signals few want holds a
/// worker thread for long.
const YIELD_EVERY: usize = 256;

/// At most this many shards of subscribers, whatever the runtime's worker threads.
const MAX_SHARDS: usize = 64;

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

/// One signal, serialised once for every subscriber: its WebSocket text frame, header included.
#[derive(Debug)]
pub struct Frame {
    /// The signal's type (`round_locked`); `lagged` for the hub's own note.
    pub name: String,
    /// Its position in [`SIGNAL_TYPES`].
    pub index: usize,
    /// Whether a sealed stream leaves it out ([`reveals_forecast_early`]).
    pub early: bool,
    /// For the hub's `lagged` note, the signals it stands for (0 for a signal).
    lost: u64,
    /// The frame as sent: the header, then the JSON text.
    wire: Bytes,
    /// Where the JSON text starts in `wire`.
    text_at: usize,
    /// When the hub read the signal off the bus (made the note), before serialising it.
    read_at: std::time::Instant,
    /// Signals the hub had read when it sent this frame to the shards, this one's included (a `lagged` note counts
    /// the signals it stands for): a shard that skipped frames knows exactly how many signals it skipped.
    upto: u64,
}

impl Frame {
    fn of(sig: &crate::Signal) -> Frame {
        let read_at = std::time::Instant::now();
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
        Frame { read_at, ..Frame::text(name, index, reveals_forecast_early(&sig.kind), 0, &text) }
    }

    fn lagged(n: u64) -> Frame {
        // Written out so the type comes first, as documented (a `json!` map sorts its keys: `lost` first).
        let text = format!(r#"{{"type":"lagged","lost":{n}}}"#);
        Frame::text("lagged".into(), SIGNAL_TYPES.len() - 1, false, n, &text)
    }

    fn text(name: String, index: usize, early: bool, lost: u64, text: &str) -> Frame {
        Frame {
            name,
            index,
            early,
            lost,
            wire: wire::encode(wire::OP_TEXT, text.as_bytes()),
            text_at: wire::header_len(text.len()),
            read_at: std::time::Instant::now(),
            upto: 0,
        }
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        std::str::from_utf8(&self.wire[self.text_at..]).unwrap_or_default()
    }

    /// The signals the frame stands for: one, or those a `lagged` note counts.
    fn signals(&self) -> u64 {
        match self.kind() {
            Kind::Lagged(n) => n,
            _ => 1,
        }
    }

    /// What the frame is in a subscriber's queue.
    fn kind(&self) -> Kind {
        if self.index == SIGNAL_TYPES.len() - 1 {
            Kind::Lagged(self.lost)
        } else {
            Kind::Signal
        }
    }
}

/// The WebSocket side of a service: the bus, serialised once per signal, and the guard of its subscribers.
/// Cheap to clone; its tasks (the one that reads the bus and one per shard of subscribers) start with the first
/// subscriber and stop when the last clone of the hub is dropped (its subscribers are then sent a close frame).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    bus: Bus,
    guard: Guard,
    started: OnceLock<Started>,
    /// Dropped with the hub: every subscriber's task sees it and closes its stream.
    alive: watch::Sender<()>,
}

impl Drop for HubInner {
    fn drop(&mut self) {
        if let Some(started) = self.started.get() {
            for task in &started.tasks {
                task.abort();
            }
        }
    }
}

/// The hub's tasks once started: the one that reads the bus and serialises each signal, and one per shard of the
/// subscribers, each writing the frames to its own shard (so a signal's fan-out runs on as many worker threads as
/// the runtime has, each shard's deliveries in publish order).
struct Started {
    tasks: Vec<tokio::task::AbortHandle>,
    shards: Vec<Arc<Classes>>,
}

impl Started {
    /// The shard a new subscriber of `class` joins: the one with the fewest subscribers of that class, then the
    /// fewest in all (the first of those). Each class spreads evenly, so every signal's deliveries do too, whatever
    /// the mix of filters.
    fn least_loaded(&self, class: Class) -> &Arc<Classes> {
        // A shard whose task died comes last, whatever its load; `min_by_key` keeps the first of equals.
        self.shards
            .iter()
            .min_by_key(|s| (s.dead.load(std::sync::atomic::Ordering::Relaxed), s.load(class)))
            .expect("a hub has at least one shard (shard_count)")
    }
}

/// Shards of subscribers a hub on a runtime of `workers` worker threads fans a signal out over: one per worker
/// (1 on a current-thread runtime), at most [`MAX_SHARDS`].
fn shard_count(workers: usize) -> usize {
    workers.clamp(1, MAX_SHARDS)
}

/// Which frames a subscriber sends: its filter and sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Class {
    filter: Option<TypeFilter>,
    sealed: bool,
}

impl Class {
    /// Whether a subscriber of this class sends `f`: not an early forecast on a sealed stream, and of a type it asked
    /// for (the `lagged` note always).
    fn wants(&self, f: &Frame) -> bool {
        let hidden = self.sealed && f.early;
        let filtered = self.filter.is_some_and(|w| f.index != SIGNAL_TYPES.len() - 1 && !w.has(f.index));
        !hidden && !filtered
    }
}

/// The subscribers of one shard, grouped by class (a group whose last subscriber left is removed with it).
#[derive(Default)]
struct Classes {
    groups: Mutex<Vec<(Class, Vec<Arc<Conn>>)>>,
    /// The shard's task panicked: its subscribers were closed, and no new one joins it.
    dead: std::sync::atomic::AtomicBool,
}

impl Classes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Class, Vec<Arc<Conn>>)>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many subscribers of `class` the shard holds, and how many in all.
    fn load(&self, class: Class) -> (usize, usize) {
        let g = self.lock();
        let of_class = g.iter().find(|(c, _)| *c == class).map_or(0, |(_, conns)| conns.len());
        (of_class, g.iter().map(|(_, conns)| conns.len()).sum())
    }

    /// How many subscribers the shard holds.
    #[cfg(test)]
    fn members(&self) -> usize {
        self.load(Class { filter: None, sealed: false }).1
    }

    fn add(&self, conn: Arc<Conn>) {
        let mut g = self.lock();
        match g.iter_mut().find(|(c, _)| *c == conn.class) {
            Some((_, conns)) => conns.push(conn),
            None => g.push((conn.class, vec![conn])),
        }
    }

    fn remove(&self, conn: &Arc<Conn>) {
        let mut g = self.lock();
        let Some(i) = g.iter().position(|(c, _)| *c == conn.class) else { return };
        let conns = &mut g[i].1;
        if let Some(j) = conns.iter().position(|c| Arc::ptr_eq(c, conn)) {
            conns.swap_remove(j);
        }
        if conns.is_empty() {
            g.swap_remove(i);
        }
    }

    /// The subscribers that want `frame`, appended to `out`.
    fn targets(&self, frame: &Frame, out: &mut Vec<Arc<Conn>>) {
        for (c, conns) in self.lock().iter() {
            if c.wants(frame) {
                out.extend(conns.iter().cloned());
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The connection once upgraded (through the guard's connection wrapper, whose idle and write timeouts still apply).
type WsIo = TokioIo<hyper::upgrade::Upgraded>;

/// What an item of a subscriber's queue is, for the queue's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A signal: counts towards [`QUEUE`], and gives way to newer ones when the queue is full.
    Signal,
    /// The `lagged` note for this many signals.
    Lagged(u64),
    /// A ping: never dropped.
    Control,
    /// The close frame: never dropped, and nothing is queued after it (RFC 6455, 5.5.1).
    Close,
    /// A pong: never dropped, but a newer one takes the place of one not started yet (RFC 6455, 5.5.3: the latest
    /// ping may be the only one answered), so a client that pings without reading queues one pong at most.
    Pong,
}

struct Item {
    wire: Bytes,
    kind: Kind,
}

/// One subscriber: its class and its socket with what is queued for it. Its shard's task writes signals through it and
/// the subscriber's own task control frames and the queue; the lock keeps their frames whole and in order.
struct Conn {
    class: Class,
    out: Mutex<Out>,
    /// Wakes the subscriber's task: something was queued, or a write failed.
    wake: Notify,
}

#[derive(Default)]
struct Out {
    /// `None` until the upgrade completes (frames published meanwhile are queued) and once the stream ended.
    io: Option<WsIo>,
    items: VecDeque<Item>,
    /// Bytes of the first item already written.
    offset: usize,
    /// [`Kind::Signal`] items queued.
    signals: usize,
    /// Since when the first item has been waiting to go out.
    head_since: Option<tokio::time::Instant>,
    /// A write failed: the connection is over.
    failed: bool,
    /// The close frame is queued or sent: nothing more is.
    closing: bool,
    /// The stream ended: nothing more is queued.
    ended: bool,
}

/// Writes what the socket takes of `buf` without waiting (a task's waker is not needed: when the socket is full, the
/// subscriber's task writes the rest and waits with its own). `Ok(0)`: nothing taken now.
fn write_now(io: &mut WsIo, buf: &[u8]) -> std::io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(io).poll_write(&mut cx, buf) {
        Poll::Ready(Ok(0)) if !buf.is_empty() => Err(std::io::ErrorKind::WriteZero.into()),
        Poll::Ready(r) => r,
        Poll::Pending => Ok(0),
    }
}

impl Conn {
    fn new(class: Class) -> Conn {
        Conn { class, out: Mutex::default(), wake: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `wire` now when nothing is queued before it and the socket takes it whole; otherwise queues it (what
    /// was taken of it stays written) for the subscriber's task.
    fn push(&self, wire: &Bytes, kind: Kind, m: &GuardMetrics) {
        let mut o = self.lock();
        if o.ended || o.failed || o.closing {
            return;
        }
        o.closing = kind == Kind::Close;
        if o.items.is_empty() {
            if let Some(io) = o.io.as_mut() {
                match write_now(io, wire) {
                    Ok(n) if n == wire.len() => return,
                    Ok(n) => o.offset = n,
                    Err(_) => {
                        o.failed = true;
                        drop(o);
                        self.wake.notify_one();
                        return;
                    }
                }
                o.head_since = Some(tokio::time::Instant::now());
            }
        } else if kind == Kind::Signal && o.signals >= QUEUE {
            o.make_room(m);
        } else if let Kind::Lagged(n) = kind {
            // The bus's own note joins one not sent yet: however long the overload, one note waits at most.
            let from = usize::from(o.offset > 0);
            if let Some(old) = o.items.iter_mut().skip(from).find(|i| matches!(i.kind, Kind::Lagged(_))) {
                let total = match old.kind {
                    Kind::Lagged(m) => m + n,
                    _ => n,
                };
                *old = Item { wire: Frame::lagged(total).wire, kind: Kind::Lagged(total) };
                return;
            }
        } else if kind == Kind::Pong {
            let from = usize::from(o.offset > 0);
            if let Some(old) = o.items.iter_mut().skip(from).find(|i| i.kind == Kind::Pong) {
                old.wire = wire.clone();
                return;
            }
        }
        if kind == Kind::Signal {
            o.signals += 1;
            m.ws_queued.inc();
        }
        o.items.push_back(Item { wire: wire.clone(), kind });
        drop(o);
        self.wake.notify_one();
    }

    /// The upgrade completed: frames queued meanwhile start waiting for the socket now.
    fn attach(&self, io: WsIo) {
        let mut o = self.lock();
        o.io = Some(io);
        if !o.items.is_empty() {
            o.head_since = Some(tokio::time::Instant::now());
        }
    }

    /// The stream ended: nothing more is queued, and the socket is closed now (not when its shard's task lets go of
    /// its last reference).
    fn end(&self) {
        let mut o = self.lock();
        o.ended = true;
        o.io = None;
        o.items.clear();
    }

    /// Whether something waits to be written (or a write failed), and until when the first item may wait.
    fn pending(&self, send_timeout: std::time::Duration) -> (bool, tokio::time::Instant) {
        let o = self.lock();
        let since = o.head_since.unwrap_or_else(tokio::time::Instant::now);
        (o.failed || (!o.items.is_empty() && o.io.is_some()), since + send_timeout)
    }

    /// Writes what is queued, [`MAX_BATCH`] items at most in one write: ready once a write took something (the
    /// caller then sees the new first item's deadline) or nothing is queued.
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut guard = self.lock();
        let o = &mut *guard;
        if o.failed {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if o.items.is_empty() {
            o.empty();
            return Poll::Ready(Ok(()));
        }
        let Some(io) = o.io.as_mut() else { return Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())) };
        let mut slices = [std::io::IoSlice::new(&[]); MAX_BATCH];
        let mut n = 0;
        for it in o.items.iter().take(MAX_BATCH) {
            slices[n] = std::io::IoSlice::new(if n == 0 { &it.wire[o.offset..] } else { &it.wire[..] });
            n += 1;
        }
        let r = match Pin::new(io).poll_write_vectored(cx, &slices[..n]) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(r) => r,
        };
        match r {
            Ok(w) => {
                o.advance(w);
                if o.items.is_empty() {
                    o.empty();
                }
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                o.failed = true;
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.lock().io.as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    /// The close frame is written: shuts the socket's sending side (the client reads the close, then the end of the
    /// stream) and reads and discards what the client still sends, until it closes its side too or for `limit` at
    /// most. A socket dropped with input unread is reset (an RST, not a FIN), and a reset throws away what is still
    /// in the kernel's send buffer: the close frame of a client that did not read it yet, after a refused frame
    /// whose rest of the payload was never read.
    async fn linger(&self, limit: std::time::Duration) {
        let shut = std::future::poll_fn(|cx| match self.lock().io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        });
        let drain = async {
            if shut.await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                let r = std::future::poll_fn(|cx| {
                    let mut rb = ReadBuf::new(&mut buf);
                    self.poll_read(cx, &mut rb).map_ok(|()| rb.filled().len())
                })
                .await;
                if !matches!(r, Ok(n) if n > 0) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

impl Out {
    /// Nothing is queued: no deadline, and the room of a queue that grew is given back.
    fn empty(&mut self) {
        self.head_since = None;
        if self.items.capacity() > QUEUE_KEPT {
            self.items = VecDeque::new();
        }
    }

    /// `n` more bytes went out: the items they finish leave the queue, and the next one starts waiting now.
    fn advance(&mut self, mut n: usize) {
        while let Some(head) = self.items.front() {
            let left = head.wire.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            if head.kind == Kind::Signal {
                self.signals -= 1;
            }
            self.items.pop_front();
            self.head_since = Some(tokio::time::Instant::now());
        }
    }

    /// The queue holds [`QUEUE`] signals: its oldest one not being written gives way, counted (in
    /// `ws_skipped_signals`) by the `lagged` note in its place, or by the note already there.
    fn make_room(&mut self, m: &GuardMetrics) {
        // A first item partly written stays: the socket has its beginning.
        let from = usize::from(self.offset > 0);
        let note = match self.items.get(from) {
            Some(Item { kind: Kind::Lagged(n), .. }) => Some(*n),
            _ => None,
        };
        let search = from + usize::from(note.is_some());
        let Some(j) = (search..self.items.len()).find(|&j| self.items[j].kind == Kind::Signal) else { return };
        self.items.remove(j);
        self.signals -= 1;
        m.ws_skipped.inc();
        let lost = note.unwrap_or(0) + 1;
        let item = Item { wire: Frame::lagged(lost).wire, kind: Kind::Lagged(lost) };
        if note.is_some() {
            self.items[from] = item;
        } else {
            self.items.insert(from, item);
        }
    }
}

impl Hub {
    pub fn new(bus: Bus, guard: Guard) -> Hub {
        let inner = HubInner { bus, guard, started: OnceLock::new(), alive: watch::channel(()).0 };
        Hub { inner: Arc::new(inner) }
    }

    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// A subscriber with `filter` and `sealed` (starting the hub's tasks if need be), and the shard it was put in. It
    /// is sent every frame its shard writes from now on: those published from now on, and any published just before
    /// that the shard's task had not written yet.
    fn subscribe(&self, filter: Option<TypeFilter>, sealed: bool) -> (Arc<Conn>, Arc<Classes>) {
        let started = self.inner.started.get_or_init(|| {
            let m = self.inner.guard.metrics().clone();
            // Subscribed here, not in the tasks, so nothing published from now on is missed.
            let rx = self.inner.bus.subscribe();
            // As long as the bus: a shard may fall as far behind as the hub's reader could before.
            let (frames, _) = broadcast::channel(self.inner.bus.capacity());
            let shards: Vec<Arc<Classes>> = (0..shard_count(tokio::runtime::Handle::current().metrics().num_workers()))
                .map(|_| Arc::default())
                .collect();
            // Outside tokio's cooperative budget: under it, every write past the 128th of one poll would be refused
            // (`Pending`, with the no-op waker) and queued for the subscriber's task, so half the deliveries of a
            // large fan-out took a task wake and a second write. The tasks yield every `YIELD_EVERY` themselves.
            let mut tasks: Vec<_> = shards
                .iter()
                .map(|s| tokio::spawn(tokio::task::unconstrained(fan_out(frames.subscribe(), s.clone(), m.clone()))))
                .map(|t| t.abort_handle())
                .collect();
            tasks.push(tokio::spawn(tokio::task::unconstrained(pump(rx, frames, m))).abort_handle());
            Started { tasks, shards }
        });
        let conn = Arc::new(Conn::new(Class { filter, sealed }));
        let shard = started.least_loaded(conn.class).clone();
        shard.add(conn.clone());
        (conn, shard)
    }

    /// Answers a `/ws` request: `503` when the subscribers are at their cap, else the upgrade to a stream of the
    /// signals named in `filter` (all when `None`), without [`reveals_forecast_early`] ones when `sealed`.
    pub fn upgrade(&self, up: WsUpgrade, filter: Option<TypeFilter>, sealed: bool) -> Response {
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
        up: WsUpgrade,
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

    fn upgrade_in(&self, up: WsUpgrade, filter: Option<TypeFilter>, sealed: bool, slot: Slot) -> Response {
        let (conn, classes) = self.subscribe(filter, sealed);
        let limits = self.inner.guard.limits();
        let opts = StreamOptions {
            send_timeout: limits.ws_send_timeout,
            ping_every: limits.ws_ping_interval(),
            max_message: limits.ws_max_message_bytes,
            metrics: self.inner.guard.metrics().clone(),
        };
        let WsUpgrade { accept, on_upgrade } = up;
        let alive = self.inner.alive.subscribe();
        // However the task ends (a panic included, or dropped before it ever ran), the subscriber leaves the hub, its
        // socket is closed and its place under the cap is given back.
        let left = Leave { conn: conn.clone(), classes, _slot: slot };
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                conn.attach(TokioIo::new(io));
                if let End::Slow = stream(&conn, &opts, alive).await {
                    opts.metrics.drop_for("ws_slow_reader");
                    tracing::debug!("a WebSocket reader too slow for the send timeout was dropped");
                }
            }
            drop(left);
        });
        switching_protocols(&accept)
    }
}

/// Takes a subscriber out of the hub when its task ends.
struct Leave {
    conn: Arc<Conn>,
    classes: Arc<Classes>,
    _slot: Slot,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.classes.remove(&self.conn);
        self.conn.end();
    }
}

/// A request for a WebSocket (RFC 6455 over HTTP/1.1), checked: what a route serving a [`Hub`] extracts. The hub
/// answers the handshake itself and keeps the upgraded connection (see the module's documentation).
pub struct WsUpgrade {
    /// `Sec-WebSocket-Accept` for the request's key.
    accept: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket handshake: `405` (not a GET), `400` (a header missing or wrong, named),
/// `426` (a connection that cannot be upgraded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnUpgrade {
    pub status: StatusCode,
    pub why: &'static str,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.why)).into_response()
    }
}

/// Whether a header of `name` lists `token` (comma-separated, any case).
fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a handshake's headers (not its connection): the `Sec-WebSocket-Accept` to answer it with.
fn check_handshake(method: &axum::http::Method, h: &HeaderMap) -> Result<String, NotAnUpgrade> {
    let bad = |status, why| Err(NotAnUpgrade { status, why });
    if method != axum::http::Method::GET {
        return bad(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket handshake is a GET");
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return bad(StatusCode::BAD_REQUEST, "a WebSocket handshake needs `Connection: upgrade`");
    }
    // Exactly `websocket` (any case), as the guard's origin check reads it: a handshake it would not see as one is
    // not one here either.
    let mut upgrade = h.get_all(header::UPGRADE).iter();
    let websocket = upgrade.next().is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"));
    if !websocket || upgrade.next().is_some() {
        return bad(StatusCode::BAD_REQUEST, "a WebSocket handshake needs `Upgrade: websocket`");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return bad(StatusCode::BAD_REQUEST, "a WebSocket handshake needs `Sec-WebSocket-Version: 13`");
    }
    match h.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => {
            Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => bad(StatusCode::BAD_REQUEST, "a WebSocket handshake needs a `Sec-WebSocket-Key`"),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let accept = check_handshake(&parts.method, &parts.headers)?;
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(NotAnUpgrade {
                status: StatusCode::UPGRADE_REQUIRED,
                why: "this connection cannot be upgraded to a WebSocket",
            });
        };
        Ok(WsUpgrade { accept, on_upgrade })
    }
}

/// The `101` that completes a handshake (no subprotocol, no extension).
fn switching_protocols(accept: &str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Reads the bus and serialises each signal once, for every shard's [`fan_out`] (the `lagged` note when the bus
/// skipped this reader ahead), letting the runtime's other tasks run every [`YIELD_EVERY`] frames.
async fn pump(mut rx: broadcast::Receiver<Arc<crate::Signal>>, out: broadcast::Sender<Arc<Frame>>, m: GuardMetrics) {
    let mut work = Work::default();
    // Signals read (or skipped, for a `lagged` note) so far.
    let mut upto = 0u64;
    loop {
        // Outside the cooperative budget a receive that finds a signal waiting never yields.
        if work.spend(1) {
            tokio::task::yield_now().await;
        }
        let mut frame = match rx.recv().await {
            Ok(sig) => Frame::of(&sig),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                m.ws_skipped.inc_by(n);
                Frame::lagged(n)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        upto += frame.signals();
        frame.upto = upto;
        // No receiver: every shard's task has ended (the hub is going away).
        if out.send(Arc::new(frame)).is_err() {
            return;
        }
    }
}

/// Writes each frame to every subscriber of one shard that wants it (queued for those whose socket does not take it
/// at once), in the order published, and records the time from the hub reading the signal to the shard's last
/// delivery of it (written or queued; the wait for this task included) in `ws_fanout_seconds`. A shard that fell a
/// whole bus's worth of frames behind sends its subscribers the `lagged` note for the signals it skipped (counted
/// once per shard in `ws_skipped_signals`) before the next frame. Lets the runtime's other tasks run every
/// [`YIELD_EVERY`] frames and deliveries.
async fn fan_out(mut rx: broadcast::Receiver<Arc<Frame>>, classes: Arc<Classes>, m: GuardMetrics) {
    let _exit = ShardExit { classes: classes.clone(), m: m.clone() };
    let mut targets = Vec::new();
    let mut work = Work::default();
    // Signals this shard has delivered or noted as skipped (the `upto` of the last frame it took).
    let mut done = 0u64;
    loop {
        // Outside the cooperative budget a receive that finds a frame waiting never yields: the yields are counted
        // across frames, so a burst of frames that few or no subscribers want still lets the other tasks run.
        if work.spend(1) {
            tokio::task::yield_now().await;
        }
        let frame = match rx.recv().await {
            Ok(f) => f,
            // The next frame says how many signals were skipped.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let skipped = (frame.upto - frame.signals()).saturating_sub(done);
        done = frame.upto;
        if skipped > 0 {
            m.ws_skipped.inc_by(skipped);
            let note = Frame::lagged(skipped);
            deliver(&classes, &note, &mut targets, &mut work, &m).await;
        }
        if deliver(&classes, &frame, &mut targets, &mut work, &m).await {
            m.ws_fanout.observe(frame.read_at.elapsed().as_secs_f64());
        }
    }
}

/// Held by a shard's task: if the task panics, its subscribers would get pings but never a signal again, so they are
/// sent a close frame (1011, to reconnect: they then join a live shard) and the shard takes no new subscriber. A task
/// that ends otherwise (the hub dropped or its bus closed) leaves that to the hub.
struct ShardExit {
    classes: Arc<Classes>,
    m: GuardMetrics,
}

impl Drop for ShardExit {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.classes.dead.store(true, std::sync::atomic::Ordering::Relaxed);
        let conns: Vec<Arc<Conn>> = self.classes.lock().iter().flat_map(|(_, c)| c.iter().cloned()).collect();
        tracing::error!(
            subscribers = conns.len(),
            "a WebSocket shard's task panicked: its subscribers are closed (1011)"
        );
        let close = wire::close(Some(1011), "internal error");
        for conn in conns {
            conn.push(&close, Kind::Close, &self.m);
        }
    }
}

/// Pushes `frame` to every subscriber of `classes` that wants it (yielding every [`YIELD_EVERY`] units of `work`);
/// false when none wants it.
async fn deliver(
    classes: &Classes,
    frame: &Frame,
    targets: &mut Vec<Arc<Conn>>,
    work: &mut Work,
    m: &GuardMetrics,
) -> bool {
    classes.targets(frame, targets);
    if targets.is_empty() {
        return false;
    }
    let kind = frame.kind();
    for conn in targets.drain(..) {
        conn.push(&frame.wire, kind, m);
        if work.spend(1) {
            tokio::task::yield_now().await;
        }
    }
    true
}

/// The hub task's work since it last yielded (a frame or a delivery each count one).
#[derive(Debug, Default)]
struct Work(usize);

impl Work {
    /// Counts `n` more; true when the task should yield now (every [`YIELD_EVERY`]).
    fn spend(&mut self, n: usize) -> bool {
        self.0 += n;
        if self.0 >= YIELD_EVERY {
            self.0 = 0;
            return true;
        }
        false
    }
}

/// How one subscriber is served.
struct StreamOptions {
    send_timeout: std::time::Duration,
    ping_every: std::time::Duration,
    max_message: usize,
    metrics: GuardMetrics,
}

/// Why a subscriber's stream ended.
enum End {
    /// The client left, or the socket failed (the guard's idle or write timeout included).
    Gone,
    /// A frame waited longer than the send timeout.
    Slow,
    /// A close frame was sent (an answer to the client's, a refusal, or the hub going away).
    Closed,
}

/// How long a stream that sent its close frame goes on reading (and discarding) what the client sends, its own
/// side shut down, before the socket is dropped: closed with input unread, the socket would be reset, and the
/// client could lose the close frame still on its way (see [`Conn::linger`]).
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves one upgraded subscriber: reads what the client sends (pongs, pings answered, a close answered, anything
/// over the size limit closed with 1009, a protocol error with 1002, text that is not UTF-8 with 1007), pings it,
/// writes out whatever the hub queued for it, and drops it when a frame waits longer than the send timeout. Signals
/// reach the socket without this task when it takes them at once.
async fn stream(conn: &Conn, o: &StreamOptions, mut alive: watch::Receiver<()>) -> End {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + o.ping_every, o.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping_frame = wire::encode(wire::OP_PING, &[]);
    let mut frames = wire::ClientFrames::new(o.max_message);
    let mut buf = [0u8; 512];
    let mut events = Vec::new();
    let mut closing = false;
    loop {
        let (pending, deadline) = conn.pending(o.send_timeout);
        if closing && !pending {
            conn.linger(LINGER).await;
            return End::Closed;
        }
        tokio::select! {
            // A write that is ready goes first: a late wake-up never drops a reader whose socket takes the frame.
            biased;
            r = std::future::poll_fn(|cx| conn.poll_drain(cx)), if pending => {
                if r.is_err() {
                    return End::Gone;
                }
            }
            _ = tokio::time::sleep_until(deadline), if pending => return End::Slow,
            _ = conn.wake.notified(), if !pending => {}
            r = std::future::poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut buf);
                conn.poll_read(cx, &mut rb).map_ok(|()| rb.filled().len())
            }), if !closing => match r {
                Ok(0) | Err(_) => return End::Gone,
                Ok(n) => {
                    frames.feed(&buf[..n], &mut events);
                    // Only the latest ping of what was read is answered (RFC 6455, 5.5.3 allows it): a client
                    // sending pings by the hundred gets one pong per read, not one write each.
                    let last_ping = events.iter().rposition(|e| matches!(e, wire::Incoming::Ping(_)));
                    for (i, e) in events.drain(..).enumerate() {
                        let close = match e {
                            wire::Incoming::Ping(p) => {
                                if Some(i) == last_ping {
                                    conn.push(&wire::encode(wire::OP_PONG, &p), Kind::Pong, &o.metrics);
                                }
                                continue;
                            }
                            wire::Incoming::Pong | wire::Incoming::Message => continue,
                            // The client's code is echoed (the parser let through only codes a peer may send).
                            wire::Incoming::Close(code) => wire::close(code, ""),
                            wire::Incoming::Oversized => {
                                o.metrics.drop_for("ws_oversized");
                                wire::close(Some(1009), "message too big")
                            }
                            wire::Incoming::Bad(why) => {
                                tracing::debug!(why, "a WebSocket client broke the protocol: closed with 1002");
                                wire::close(Some(1002), why)
                            }
                            wire::Incoming::NotUtf8(why) => {
                                tracing::debug!(why, "a WebSocket client sent text that is not UTF-8: closed with 1007");
                                wire::close(Some(1007), why)
                            }
                        };
                        conn.push(&close, Kind::Close, &o.metrics);
                        closing = true;
                    }
                }
            },
            _ = ping.tick(), if !closing => conn.push(&ping_frame, Kind::Control, &o.metrics),
            r = alive.changed(), if !closing => {
                if r.is_err() {
                    conn.push(&wire::close(None, ""), Kind::Close, &o.metrics);
                    closing = true;
                }
            }
        }
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
        let c = Class { filter: parse_types(Some("risk_event")).unwrap(), sealed: false };
        let [failed, _, risk] = <[SignalKind; 3]>::try_from(samples()).unwrap();
        assert!(c.wants(&Frame::of(&sig(risk))));
        assert!(!c.wants(&Frame::of(&sig(failed))));
        assert!(c.wants(&Frame::lagged(3)));
        let sealed = Class { filter: None, sealed: true };
        assert!(!sealed.wants(&Frame::of(&sig(forecast()))));
        assert!(Class { filter: None, sealed: false }.wants(&Frame::of(&sig(forecast()))));
    }

    #[test]
    fn a_frame_is_the_websocket_text_frame_of_the_signal_s_json() {
        let f = frame(SignalKind::RiskEvent { kind: "k".into(), detail: "d".repeat(200) });
        let json: serde_json::Value = serde_json::from_str(f.json()).unwrap();
        assert_eq!(json["type"], "risk_event");
        assert_eq!(f.wire[0], 0x81, "FIN and text");
        assert_eq!(f.wire[1], 126, "a 16-bit length");
        assert_eq!(u16::from_be_bytes([f.wire[2], f.wire[3]]) as usize, f.json().len());
        assert_eq!(Frame::lagged(7).json(), r#"{"type":"lagged","lost":7}"#);
        assert_eq!(Frame::lagged(7).kind(), Kind::Lagged(7));
        assert_eq!(f.kind(), Kind::Signal);
    }

    fn frame(kind: SignalKind) -> Arc<Frame> {
        Arc::new(Frame::of(&crate::Signal { at_ms: 0, source: "t".into(), kind }))
    }

    fn forecast() -> SignalKind {
        SignalKind::Forecast { chain: "c".into(), market: 1, epoch: 2, p_up: 0.5, horizon_s: 60, model: "m".into() }
    }

    /// The payload of a server frame made by [`wire::encode`].
    fn payload(w: &[u8]) -> &[u8] {
        &w[wire::header_len(match w[1] & 0x7F {
            126 => 126,
            127 => 65_536,
            n => n as usize,
        })..]
    }

    /// What is queued for `conn` (not upgraded: everything is queued), as type names (`lagged:N` for a note).
    fn queued(conn: &Conn) -> Vec<String> {
        queued_by(conn, "type")
    }

    /// What is queued for `conn`: each signal's JSON `field`, `lagged:N` for a note, `control` for the rest.
    fn queued_by(conn: &Conn, field: &str) -> Vec<String> {
        conn.lock()
            .items
            .iter()
            .map(|it| match it.kind {
                Kind::Lagged(n) => format!("lagged:{n}"),
                Kind::Control | Kind::Pong | Kind::Close => "control".into(),
                Kind::Signal => {
                    let v: serde_json::Value = serde_json::from_slice(payload(&it.wire)).unwrap();
                    v[field].as_str().unwrap().to_string()
                }
            })
            .collect()
    }

    /// Publishes `f` as the hub's task does.
    fn publish(classes: &Classes, f: &Frame, m: &GuardMetrics) {
        let mut t = Vec::new();
        classes.targets(f, &mut t);
        for c in t {
            c.push(&f.wire, f.kind(), m);
        }
    }

    #[test]
    fn each_frame_goes_only_to_the_subscribers_whose_class_wants_it() {
        let classes = Classes::default();
        let m = GuardMetrics::default();
        let conn = |c: Class| {
            let conn = Arc::new(Conn::new(c));
            classes.add(conn.clone());
            conn
        };
        let risk_only = Class { filter: parse_types(Some("risk_event")).unwrap(), sealed: false };
        let sealed = Class { filter: None, sealed: true };
        let all = Class { filter: None, sealed: false };
        let (a, a2, b, c) = (conn(risk_only), conn(risk_only), conn(sealed), conn(all));
        assert_eq!(classes.len(), 3, "subscribers of one class are one group");
        let [failed, _, risk] = <[SignalKind; 3]>::try_from(samples()).unwrap();
        for f in [frame(failed), frame(risk), frame(forecast()), Arc::new(Frame::lagged(2))] {
            publish(&classes, &f, &m);
        }
        assert_eq!(queued(&a), ["risk_event", "lagged:2"]);
        assert_eq!(queued(&a2), ["risk_event", "lagged:2"]);
        assert_eq!(queued(&b), ["tx_failed", "risk_event", "lagged:2"], "no early forecast on a sealed stream");
        assert_eq!(queued(&c), ["tx_failed", "risk_event", "forecast", "lagged:2"]);
        // A group whose subscribers all left is removed; one that left gets nothing more.
        classes.remove(&a);
        classes.remove(&a2);
        assert_eq!(classes.len(), 2);
        publish(&classes, &frame(SignalKind::RiskEvent { kind: "k".into(), detail: String::new() }), &m);
        assert_eq!(queued(&a).len(), 2);
        assert_eq!(queued(&c).len(), 5);
        // A stream that ended takes nothing more.
        c.end();
        publish(&classes, &frame(forecast()), &m);
        assert!(queued(&c).is_empty());
    }

    /// Beyond [`QUEUE`] signals behind, the oldest queued signals give way: one `lagged` note where they were,
    /// counting them all (in `ws_skipped_signals` too), then the newest in order. Control frames are never dropped,
    /// and a first item partly written stays first.
    #[test]
    fn a_full_queue_gives_way_to_the_newest_with_the_lagged_note_in_place() {
        let m = GuardMetrics::default();
        let conn = Conn::new(Class { filter: None, sealed: false });
        let risk = |n: usize| frame(SignalKind::RiskEvent { kind: n.to_string(), detail: String::new() });
        let ping = wire::encode(wire::OP_PING, &[]);
        conn.push(&risk(0).wire, Kind::Signal, &m);
        conn.push(&ping, Kind::Control, &m);
        for n in 1..QUEUE + 3 {
            conn.push(&risk(n).wire, Kind::Signal, &m);
        }
        let kinds = |conn: &Conn| conn.lock().items.iter().map(|i| i.kind).collect::<Vec<_>>();
        let k = kinds(&conn);
        assert_eq!(k.len(), QUEUE + 2, "QUEUE signals, the note and the ping");
        assert_eq!(k[0], Kind::Lagged(3));
        assert_eq!(k[1], Kind::Control, "the ping stays");
        assert_eq!(conn.lock().signals, QUEUE);
        assert_eq!(m.ws_skipped.get(), 3);
        let first: serde_json::Value = serde_json::from_slice(payload(&conn.lock().items[2].wire)).unwrap();
        assert_eq!(first["kind"], "3", "the three oldest gave way");
        assert_eq!(queued(&conn)[0], "lagged:3");
        // A client that pings without reading has one pong queued at most: the latest ping's.
        for p in [b"1", b"2", b"3"] {
            conn.push(&wire::encode(wire::OP_PONG, p), Kind::Pong, &m);
        }
        let pongs: Vec<_> = conn.lock().items.iter().filter(|i| i.kind == Kind::Pong).map(|i| i.wire.clone()).collect();
        assert_eq!(pongs, [wire::encode(wire::OP_PONG, b"3")]);
        // With the first item partly written, it stays first and the note goes after it.
        let conn = Conn::new(Class { filter: None, sealed: false });
        for n in 0..QUEUE {
            conn.push(&risk(n).wire, Kind::Signal, &m);
        }
        conn.lock().offset = 5;
        conn.push(&risk(QUEUE).wire, Kind::Signal, &m);
        let k = kinds(&conn);
        assert_eq!((k[0], k[1], k[2]), (Kind::Signal, Kind::Lagged(1), Kind::Signal));
        assert_eq!(conn.lock().signals, QUEUE);
        // The writes that finish items take them off the queue.
        let first_len = conn.lock().items[0].wire.len();
        conn.lock().advance(first_len - 5 + 1);
        assert_eq!(kinds(&conn)[0], Kind::Lagged(1));
        assert_eq!(conn.lock().offset, 1);
        assert_eq!(conn.lock().signals, QUEUE - 1);
    }

    /// A first item's wait starts when it becomes first: a write that finishes the one before restarts the
    /// deadline (a reader taking frame after frame is never dropped for the length of its queue); a partial write
    /// does not.
    #[test]
    fn the_send_deadline_restarts_when_a_frame_is_finished() {
        let m = GuardMetrics::default();
        let conn = Conn::new(Class { filter: None, sealed: false });
        let f = frame(SignalKind::RiskEvent { kind: "k".into(), detail: String::new() });
        conn.push(&f.wire, Kind::Signal, &m);
        conn.push(&f.wire, Kind::Signal, &m);
        let long_ago = tokio::time::Instant::now() - std::time::Duration::from_secs(60);
        let mut o = conn.lock();
        o.head_since = Some(long_ago);
        o.advance(3);
        assert_eq!(o.head_since, Some(long_ago), "a partial write");
        let rest = f.wire.len() - 3;
        o.advance(rest + 1);
        assert!(o.head_since.unwrap() > long_ago + std::time::Duration::from_secs(59), "the next frame waits from now");
        assert_eq!((o.items.len(), o.offset, o.signals), (1, 1, 1));
        // An emptied queue has no deadline and gives back the room it grew to.
        o.items.reserve(QUEUE);
        o.items.clear();
        o.empty();
        assert!(o.head_since.is_none());
        assert!(o.items.capacity() <= QUEUE_KEPT);
    }

    /// Nothing is queued after the close frame (RFC 6455, 5.5.1), and pongs replace each other only while not
    /// started.
    #[test]
    fn nothing_follows_the_close_and_a_started_pong_is_kept() {
        let m = GuardMetrics::default();
        let conn = Conn::new(Class { filter: None, sealed: false });
        let pong = |p: &[u8]| wire::encode(wire::OP_PONG, p);
        conn.push(&pong(b"1"), Kind::Pong, &m);
        // The first pong is being written: a new one goes after it, and the next replaces that one.
        conn.lock().offset = 1;
        conn.push(&pong(b"2"), Kind::Pong, &m);
        conn.push(&pong(b"3"), Kind::Pong, &m);
        let wires: Vec<_> = conn.lock().items.iter().map(|i| i.wire.clone()).collect();
        assert_eq!(wires, [pong(b"1"), pong(b"3")]);
        let f = frame(SignalKind::RiskEvent { kind: "k".into(), detail: String::new() });
        conn.push(&f.wire, Kind::Signal, &m);
        conn.push(&wire::close(Some(1000), ""), Kind::Close, &m);
        conn.push(&f.wire, Kind::Signal, &m);
        conn.push(&pong(b"4"), Kind::Pong, &m);
        conn.push(&wire::encode(wire::OP_PING, &[]), Kind::Control, &m);
        let kinds: Vec<_> = conn.lock().items.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [Kind::Pong, Kind::Pong, Kind::Signal, Kind::Close]);
    }

    /// The hub's task yields every `YIELD_EVERY` units of work counted across frames, so frames with few or no
    /// subscribers wanting them still let the other tasks run.
    #[test]
    fn the_hub_yields_across_frames() {
        let mut w = Work::default();
        let yields = (0..10 * YIELD_EVERY).filter(|_| w.spend(1)).count();
        assert_eq!(yields, 10);
        let mut w = Work::default();
        assert!(!w.spend(YIELD_EVERY - 1));
        assert!(w.spend(1));
    }

    /// A new subscriber goes to the shard with the fewest subscribers of its class (then the fewest in all), so each
    /// class, and with it every signal's deliveries, spreads evenly over the shards, however the filters come in.
    #[test]
    fn a_subscriber_joins_the_shard_with_the_fewest_of_its_class() {
        let started = Started { tasks: vec![], shards: (0..2).map(|_| Arc::default()).collect() };
        let which = |s: &Arc<Classes>| started.shards.iter().position(|x| Arc::ptr_eq(x, s)).unwrap();
        let a = Class { filter: None, sealed: false };
        let b = Class { filter: parse_types(Some("round_settled")).unwrap(), sealed: false };
        let mut placed = Vec::new();
        // The classes in turn, as the bench connects them: by count alone shard 0 would get every `a`.
        for class in [a, b, a, b, a, b, a, b] {
            let conn = Arc::new(Conn::new(class));
            let shard = started.least_loaded(class).clone();
            shard.add(conn.clone());
            placed.push((which(&shard), conn, shard));
        }
        for s in &started.shards {
            assert_eq!((s.load(a).0, s.load(b).0), (2, 2), "each class split evenly");
            assert_eq!(s.members(), 4);
        }
        // Both `a`s leave shard 1: the next two `a`s go there, then shard 0 again.
        for (_, conn, shard) in placed.iter().filter(|p| p.0 == 1 && p.1.class == a) {
            shard.remove(conn);
        }
        assert_eq!(started.shards[1].members(), 2);
        for want in [1, 1, 0] {
            let shard = started.least_loaded(a).clone();
            assert_eq!(which(&shard), want);
            shard.add(Arc::new(Conn::new(a)));
        }
        assert_eq!((shard_count(0), shard_count(1), shard_count(8), shard_count(1000)), (1, 1, 8, MAX_SHARDS));
    }

    /// A shard whose task panics closes its subscribers with 1011 (so they reconnect to a live shard) and takes no
    /// new one; a task that simply ends leaves its subscribers alone.
    #[test]
    fn a_shard_whose_task_panics_closes_its_subscribers_and_takes_no_more() {
        let m = GuardMetrics::default();
        let started = Started { tasks: vec![], shards: (0..2).map(|_| Arc::default()).collect() };
        let class = Class { filter: None, sealed: false };
        let conn = Arc::new(Conn::new(class));
        started.shards[0].add(conn.clone());
        drop(ShardExit { classes: started.shards[0].clone(), m: m.clone() });
        assert!(queued(&conn).is_empty(), "an ordinary end closes nothing");
        let (classes, metrics) = (started.shards[0].clone(), m.clone());
        let died = std::thread::spawn(move || {
            let _exit = ShardExit { classes, m: metrics };
            panic!("a shard's task panics");
        })
        .join();
        assert!(died.is_err());
        assert_eq!(queued(&conn), ["control"], "the close frame");
        assert_eq!(&conn.lock().items[0].wire[..4], &[0x88, 16, 0x03, 0xF3], "close 1011");
        // By load the dead shard (one subscriber) would win over shard 1 (three).
        for _ in 0..3 {
            started.shards[1].add(Arc::new(Conn::new(class)));
        }
        assert!(Arc::ptr_eq(started.least_loaded(class), &started.shards[1]), "the dead shard comes last");
    }

    /// A frame as the hub's reader sends it to the shards: `upto` signals read so far.
    fn numbered(f: Frame, upto: u64) -> Arc<Frame> {
        Arc::new(Frame { upto, ..f })
    }

    fn risk(kind: &str) -> Frame {
        Frame::of(&crate::Signal {
            at_ms: 0,
            source: "t".into(),
            kind: SignalKind::RiskEvent { kind: kind.into(), detail: String::new() },
        })
    }

    /// A shard whose task fell a whole queue of frames behind sends its subscribers the `lagged` note for the
    /// signals it skipped (counted in `ws_skipped_signals`), then the frames it still has, in order; a `lagged` note
    /// of the hub's among the skipped frames counts the signals it stood for.
    #[tokio::test]
    async fn a_shard_behind_the_hub_s_queue_skips_ahead_with_the_lagged_note() {
        let m = GuardMetrics::default();
        let classes: Arc<Classes> = Arc::default();
        let conn = Arc::new(Conn::new(Class { filter: None, sealed: false }));
        classes.add(conn.clone());
        let (tx, rx) = broadcast::channel(2);
        for (i, kind) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            tx.send(numbered(risk(kind), i as u64 + 1)).unwrap();
        }
        drop(tx);
        // The channel closed: the task delivers what it holds and ends.
        fan_out(rx, classes.clone(), m.clone()).await;
        assert_eq!(queued_by(&conn, "kind"), ["lagged:3", "d", "e"]);
        assert_eq!(m.ws_skipped.get(), 3);

        let conn = Arc::new(Conn::new(Class { filter: None, sealed: false }));
        let classes: Arc<Classes> = Arc::default();
        classes.add(conn.clone());
        let (tx, rx) = broadcast::channel(2);
        // The hub's reader skipped 10 signals of the bus between `a` and `b`.
        let sent = [numbered(risk("a"), 1), numbered(Frame::lagged(10), 11), numbered(risk("b"), 12)];
        for f in sent.into_iter().chain([numbered(risk("c"), 13), numbered(risk("d"), 14)]) {
            tx.send(f).unwrap();
        }
        drop(tx);
        fan_out(rx, classes, m.clone()).await;
        assert_eq!(queued_by(&conn, "kind"), ["lagged:12", "c", "d"], "a, the hub's 10 and b");
        assert_eq!(m.ws_skipped.get(), 3 + 12);
    }

    /// `ws_fanout_seconds_count` as `/metrics` shows it.
    fn fanouts(m: &GuardMetrics) -> u64 {
        let mut r = prometheus_client::registry::Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let line = text.lines().find(|l| l.starts_with("ws_fanout_seconds_count ")).expect("the fan-out histogram");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// On a runtime of four worker threads the hub fans out over four shards, the subscribers spread evenly, and
    /// every subscriber gets every signal of a burst, in publish order, through its socket; each shard records each
    /// fan-out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_shard_delivers_a_burst_whole_and_in_order() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let bus = crate::Bus::new(8192);
        let metrics = GuardMetrics::default();
        let hub = Hub::new(bus.clone(), Guard::new(crate::http_guard::Limits::default(), metrics.clone()));
        let served = hub.clone();
        let app = axum::Router::new()
            .route("/ws", axum::routing::get(move |up: WsUpgrade| async move { served.upgrade(up, None, false) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let n = 16;
        let (tx, mut got) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
        let mut readers = tokio::task::JoinSet::new();
        for id in 0..n {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
            let tx = tx.clone();
            readers.spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if let WsMessage::Text(t) = m {
                        let _ = tx.send((id, t.to_string()));
                    }
                }
            });
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        // Every subscriber is in the hub once the latest probe reached them all.
        let mut round = 0;
        'probe: loop {
            round += 1;
            let latest = format!("probe {round}");
            bus.publish("t", SignalKind::RiskEvent { kind: latest.clone(), detail: String::new() });
            let mut reached = std::collections::HashSet::new();
            while let Ok(Some((id, t))) = tokio::time::timeout(std::time::Duration::from_millis(200), got.recv()).await
            {
                if t.contains(&latest) && reached.insert(id) && reached.len() == n {
                    break 'probe;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the subscribers never all got a probe");
        }
        let started = hub.inner.started.get().expect("the hub's tasks run");
        assert_eq!(started.shards.len(), 4, "one shard per worker thread");
        for s in &started.shards {
            assert_eq!(s.members(), n / 4, "the subscribers spread evenly");
        }
        // The probes' fan-outs are all recorded before the burst's are counted.
        let probes = 4 * round;
        while fanouts(&metrics) < probes {
            assert!(tokio::time::Instant::now() < deadline, "the probes' fan-outs were never all recorded");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Fewer than a subscriber's queue, so none is skipped however late its reader reads.
        let burst = (QUEUE - 56) as u64;
        for i in 0..burst {
            bus.publish("t", SignalKind::RiskEvent { kind: "burst".into(), detail: i.to_string() });
        }
        let mut next = vec![0u64; n];
        while next.iter().any(|k| *k < burst) {
            let (id, t) = tokio::time::timeout_at(deadline, got.recv()).await.expect("the burst arrived").unwrap();
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["kind"] != "burst" {
                assert_ne!(v["type"], "lagged", "nothing was skipped");
                continue;
            }
            assert_eq!(v["detail"], next[id].to_string(), "subscriber {id}: in publish order");
            next[id] += 1;
        }
        while fanouts(&metrics) < probes + 4 * burst {
            assert!(tokio::time::Instant::now() < deadline, "each shard records each fan-out");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(fanouts(&metrics), probes + 4 * burst, "one fan-out per signal and shard");
        // The subscribers hang up: each leaves the shard it joined.
        readers.shutdown().await;
        while started.shards.iter().any(|s| s.members() > 0) {
            assert!(tokio::time::Instant::now() < deadline, "every subscriber leaves its shard");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The bus's `lagged` notes join one not sent yet, so a reader kept just under the send timeout during an
    /// overload holds one note, not one per lag.
    #[test]
    fn the_bus_s_lagged_notes_join_one_not_sent_yet() {
        let m = GuardMetrics::default();
        let conn = Conn::new(Class { filter: None, sealed: false });
        let f = frame(SignalKind::RiskEvent { kind: "k".into(), detail: String::new() });
        conn.push(&f.wire, Kind::Signal, &m);
        for n in [3, 4, 5] {
            let note = Frame::lagged(n);
            conn.push(&note.wire, note.kind(), &m);
            conn.push(&f.wire, Kind::Signal, &m);
        }
        assert_eq!(queued(&conn), ["risk_event", "lagged:12", "risk_event", "risk_event", "risk_event"]);
        let note = &conn.lock().items[1];
        assert_eq!(payload(&note.wire), br#"{"type":"lagged","lost":12}"#);
    }

    /// Through a real socket: a burst far larger than one write arrives whole and in publish order, and a
    /// subscriber of another type gets none of it.
    #[tokio::test]
    async fn a_burst_arrives_whole_and_in_order_through_the_socket() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let bus = crate::Bus::new(8192);
        let hub = Hub::new(bus.clone(), Guard::new(crate::http_guard::Limits::default(), GuardMetrics::default()));
        let app = axum::Router::new().route(
            "/ws",
            axum::routing::get(move |up: WsUpgrade, q: axum::extract::RawQuery| async move {
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
        let mut got = false;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !got {
            bus.publish("t", SignalKind::RiskEvent { kind: "probe".into(), detail: String::new() });
            if let Ok(Some(Ok(WsMessage::Text(_)))) =
                tokio::time::timeout(std::time::Duration::from_millis(50), ws.next()).await
            {
                got = true;
            }
            assert!(tokio::time::Instant::now() < deadline, "the subscriber never got a signal");
        }
        // Fewer than a queue's worth, so none may be skipped however late the reader reads; each is 4 KiB, so the
        // socket fills and the rest goes out from the queue.
        let n = (QUEUE - 50) as u32;
        let pad = "p".repeat(4096);
        for i in 0..n {
            bus.publish("t", SignalKind::RiskEvent { kind: "burst".into(), detail: format!("{i} {pad}") });
        }
        bus.publish("t", SignalKind::TxFailed { chain: "c".into(), action: "a".into(), error: "end".into() });
        let mut next = 0u32;
        while next < n {
            let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("the burst arrived in time");
            let Some(Ok(WsMessage::Text(t))) = m else { panic!("the stream ended: {m:?}") };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            assert_ne!(v["type"], "lagged", "nothing was skipped");
            if v["kind"] == "probe" {
                continue;
            }
            assert_eq!(v["detail"], format!("{next} {pad}"), "in publish order");
            next += 1;
        }
        // The other subscriber got the one tx_failed and nothing of the burst.
        let m = tokio::time::timeout_at(deadline, other.next()).await.unwrap();
        let Some(Ok(WsMessage::Text(t))) = m else { panic!("{m:?}") };
        assert!(t.as_str().contains("\"error\":\"end\""), "{t}");
    }

    /// A signal for hundreds of idle subscribers goes out to each with one write from the hub's task: none is
    /// queued for a subscriber's task (tokio's cooperative budget refused every write past the 128th of a poll
    /// before the hub's task ran outside it).
    #[tokio::test]
    async fn a_fan_out_to_idle_subscribers_queues_nothing() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        // All on loopback: no cap per address.
        let limits = crate::http_guard::Limits {
            max_connections_per_ip: 0,
            max_ws_per_ip: 0,
            ..crate::http_guard::Limits::default()
        };
        let (addr, bus, metrics) = guarded_hub(limits).await;
        let n = 300;
        let (tx, mut got) = tokio::sync::mpsc::unbounded_channel::<String>();
        for _ in 0..n {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if let WsMessage::Text(t) = m {
                        let _ = tx.send(t.to_string());
                    }
                }
            });
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        // Every subscriber is in the hub once the latest probe reached them all; the hub delivers frames in order,
        // so no probe is then still on its way (a new one is published only while the latest has not arrived).
        let mut seen = std::collections::HashMap::<String, usize>::new();
        let mut round = 0;
        'probe: loop {
            round += 1;
            let latest = format!("probe {round}");
            bus.publish("t", SignalKind::RiskEvent { kind: latest.clone(), detail: String::new() });
            while let Ok(Some(t)) = tokio::time::timeout(std::time::Duration::from_millis(200), got.recv()).await {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                let c = seen.entry(v["kind"].as_str().unwrap().to_string()).or_default();
                *c += 1;
                if *c == n && v["kind"] == latest.as_str() {
                    break 'probe;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the subscribers never all got a probe");
        }
        let before = metrics.ws_queued.get();
        bus.publish("t", SignalKind::RiskEvent { kind: "the one".into(), detail: String::new() });
        let mut reached = 0;
        while reached < n {
            let t = tokio::time::timeout_at(deadline, got.recv()).await.expect("every subscriber gets it").unwrap();
            if t.contains("the one") {
                reached += 1;
            }
        }
        assert_eq!(metrics.ws_queued.get() - before, 0, "deliveries queued instead of written at once");
    }

    /// A test server of one hub behind the guard (`Guard::serve`, as the services run it), with `limits`.
    async fn guarded_hub(limits: crate::http_guard::Limits) -> (std::net::SocketAddr, crate::Bus, GuardMetrics) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        guarded_hub_on(limits, listener).await
    }

    /// [`guarded_hub`] on `listener`.
    async fn guarded_hub_on(
        limits: crate::http_guard::Limits,
        listener: tokio::net::TcpListener,
    ) -> (std::net::SocketAddr, crate::Bus, GuardMetrics) {
        let bus = crate::Bus::new(1024);
        let metrics = GuardMetrics::default();
        let guard = Guard::new(limits, metrics.clone());
        let hub = Hub::new(bus.clone(), guard.clone());
        let app = axum::Router::new()
            .route("/ws", axum::routing::get(move |up: WsUpgrade| async move { hub.upgrade(up, None, false) }));
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { guard.serve(listener, app, std::future::pending()).await });
        (addr, bus, metrics)
    }

    /// Waits until a signal published now reaches `ws` (the subscriber is in the hub).
    async fn subscribed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        ws: &mut tokio_tungstenite::WebSocketStream<S>,
        bus: &crate::Bus,
    ) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            bus.publish("t", SignalKind::RiskEvent { kind: "probe".into(), detail: String::new() });
            let m = tokio::time::timeout(std::time::Duration::from_millis(50), ws.next()).await;
            if let Ok(Some(Ok(WsMessage::Text(_)))) = m {
                return;
            }
            assert!(!matches!(m, Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))))), "closed early: {m:?}");
            assert!(tokio::time::Instant::now() < deadline, "the subscriber never got a signal");
        }
    }

    /// An incoming message above `ws_max_message_bytes` closes the socket with 1009 and is counted as
    /// `ws_oversized`; a small one does not. A client's ping is answered with its payload, and its close with its
    /// code.
    #[tokio::test]
    async fn an_oversized_message_is_closed_with_1009_and_pings_and_closes_are_answered() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsClose;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let (addr, bus, metrics) = guarded_hub(crate::http_guard::Limits::default()).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        ws.send(WsMessage::text("x".repeat(1024))).await.unwrap();
        ws.send(WsMessage::Ping(b"are you there".to_vec().into())).await.unwrap();
        let pong = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await.expect("a pong") {
                Some(Ok(WsMessage::Pong(p))) => break p,
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(&pong[..], b"are you there");
        // The socket stays open after the small message: a signal published after it still arrives.
        subscribed(&mut ws, &bus).await;
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

        // A client's close is answered with its code.
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        subscribed(&mut ws, &bus).await;
        ws.send(WsMessage::Close(Some(WsClose { code: CloseCode::Away, reason: "bye".into() }))).await.unwrap();
        let code = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await.expect("the server answers the close") {
                Some(Ok(WsMessage::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        };
        assert_eq!(code, Some(1001));
    }

    /// A raw WebSocket client of `addr` (its socket's receive buffer set to `rcvbuf` bytes when given), the handshake
    /// done: the socket, the `101`'s head, and what came after it.
    async fn raw_client(addr: std::net::SocketAddr, rcvbuf: Option<u32>) -> (tokio::net::TcpStream, String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).unwrap();
        }
        let mut s = sock.connect(addr).await.unwrap();
        s.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 512];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            got.extend_from_slice(&b[..n]);
        }
        let after = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&got[..after]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (s, head, got[after..].to_vec())
    }

    /// A client frame (FIN set in `first` or not), masked.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x5A, 0x17, 0xC3, 0x08];
        let mut v = vec![first];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    /// The first whole server frame in `buf`, taken off it: its opcode and payload.
    fn server_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
        let (len, at) = match *buf.get(1)? {
            126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
            n => (n as usize, 2),
        };
        let payload = buf.get(at..at + len)?.to_vec();
        let opcode = buf[0] & 0x0F;
        buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// The next server frame on `s` (`buf`: what was read of it already): `Ok(None)` when the stream ended, an error
    /// when the socket failed (a reset).
    async fn read_frame(
        s: &mut tokio::net::TcpStream,
        buf: &mut Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 4096];
        loop {
            if let Some(f) = server_frame(buf) {
                return Ok(Some(f));
            }
            let n = tokio::time::timeout_at(deadline, s.read(&mut b)).await.expect("a frame in time")?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&b[..n]);
        }
    }

    /// The close frame's code, reading past the frames before it.
    async fn close_code(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, deadline: tokio::time::Instant) -> u16 {
        loop {
            match read_frame(s, buf, deadline).await {
                Ok(Some((wire::OP_CLOSE, p))) => return u16::from_be_bytes([p[0], p[1]]),
                Ok(Some(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    }

    /// Waits until a signal published now reaches the raw client `s` (it is in the hub).
    async fn raw_subscribed(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, bus: &crate::Bus) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            bus.publish("t", SignalKind::RiskEvent { kind: "probe".into(), detail: String::new() });
            let soon = (tokio::time::Instant::now() + std::time::Duration::from_millis(50)).min(deadline);
            let got = tokio::time::timeout_at(soon, read_frame(s, buf, deadline)).await;
            match got {
                Ok(Ok(Some((wire::OP_TEXT, _)))) => return,
                Ok(Ok(Some(_))) | Err(_) => {}
                Ok(other) => panic!("closed early: {other:?}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "the subscriber never got a signal");
        }
    }

    /// A client frame the protocol forbids is answered with close 1002 (an unmasked frame; a close code a peer may
    /// not send, RFC 6455 7.4; a close payload of one byte), and text that is not UTF-8 (a message, a close's
    /// reason) with 1007.
    #[tokio::test]
    async fn protocol_errors_are_closed_with_1002_and_text_that_is_not_utf8_with_1007() {
        use tokio::io::AsyncWriteExt;
        let (addr, _bus, _) = guarded_hub(crate::http_guard::Limits::default()).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let cases: [(&str, Vec<u8>, u16); 6] = [
            ("unmasked", vec![0x81, 0x01, b'x'], 1002),
            ("close code 1005", client_frame(0x88, &1005u16.to_be_bytes()), 1002),
            ("close code 2000", client_frame(0x88, &2000u16.to_be_bytes()), 1002),
            ("a one-byte close", client_frame(0x88, &[0x03]), 1002),
            ("text not UTF-8", client_frame(0x81, b"caf\xE9"), 1007),
            ("a close reason not UTF-8", client_frame(0x88, &[0x03, 0xE8, b'b', 0xFF]), 1007),
        ];
        for (what, frame, want) in cases {
            let (mut s, head, mut rest) = raw_client(addr, None).await;
            // RFC 6455's own example key and accept value.
            assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
            s.write_all(&frame).await.unwrap();
            assert_eq!(close_code(&mut s, &mut rest, deadline).await, want, "{what}");
        }
        // A valid close code and reason are echoed.
        let (mut s, _, mut rest) = raw_client(addr, None).await;
        s.write_all(&client_frame(0x88, &[0x0F, 0xA0, 0xC3, 0xA0])).await.unwrap();
        assert_eq!(close_code(&mut s, &mut rest, deadline).await, 4000);
    }

    /// The close frame after a refused frame reaches a client that sent more behind it and had not read what it was
    /// sent: the hub shuts its side and reads the rest before dropping the socket (dropped with input unread, the
    /// socket is reset, and the reset throws away the close frame still in the kernel's send buffer).
    #[tokio::test]
    async fn the_close_after_a_refused_frame_reaches_a_client_that_sent_more() {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let (addr, bus, _) = guarded_hub(crate::http_guard::Limits::default()).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        // A small receive buffer, full of signals not read yet: the close frame waits in the hub's send buffer.
        let (mut s, _, mut rest) = raw_client(addr, Some(4096)).await;
        raw_subscribed(&mut s, &mut rest, &bus).await;
        let (mut fast, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        subscribed(&mut fast, &bus).await;
        let pad = "p".repeat(2048);
        let n = 12;
        for i in 0..n {
            bus.publish("t", SignalKind::RiskEvent { kind: "big".into(), detail: format!("{i} {pad}") });
        }
        // Once the other subscriber has the marker, the hub wrote the signals before it to both.
        bus.publish("t", SignalKind::RiskEvent { kind: "marker".into(), detail: String::new() });
        loop {
            let m = tokio::time::timeout_at(deadline, fast.next()).await.expect("the marker arrives");
            let Some(Ok(WsMessage::Text(t))) = m else { panic!("{m:?}") };
            if t.as_str().contains("\"kind\":\"marker\"") {
                break;
            }
        }
        // A 64 KiB message (four times the limit) is refused from its header; 16 KiB of it follow.
        let mut big = client_frame(0x81, &vec![b'x'; 64 * 1024]);
        big.truncate(14 + 16 * 1024);
        s.write_all(&big).await.unwrap();
        let mut next = 0;
        let code = loop {
            match read_frame(&mut s, &mut rest, deadline).await {
                Ok(Some((wire::OP_TEXT, p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                    if v["kind"] == "big" {
                        assert_eq!(v["detail"], format!("{next} {pad}"), "in order");
                        next += 1;
                    }
                }
                Ok(Some((wire::OP_CLOSE, p))) => break u16::from_be_bytes([p[0], p[1]]),
                Ok(Some(_)) => {}
                other => panic!("the socket ended without a close frame, after {next} signals: {other:?}"),
            }
        };
        assert_eq!((code, next), (1009, n), "every signal, then the close");
        // Then the end of the stream, not a reset.
        let end = read_frame(&mut s, &mut rest, deadline).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    /// Several pings in one read are answered by one pong, with the last one's payload (RFC 6455, 5.5.3).
    #[tokio::test]
    async fn pings_in_one_read_are_answered_by_one_pong() {
        use tokio::io::AsyncWriteExt;
        let (addr, bus, _) = guarded_hub(crate::http_guard::Limits::default()).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let (mut s, _, mut rest) = raw_client(addr, None).await;
        raw_subscribed(&mut s, &mut rest, &bus).await;
        // One write: the hub reads them in one go.
        let pings: Vec<u8> = (0..10).flat_map(|i: u8| client_frame(0x89, &[b'0' + i])).collect();
        s.write_all(&pings).await.unwrap();
        let mut pongs = Vec::new();
        let mut ended = false;
        while !ended {
            match read_frame(&mut s, &mut rest, deadline).await {
                Ok(Some((wire::OP_PONG, p))) => {
                    if pongs.is_empty() {
                        // The answer to the batch came: a last ping, in a read of its own, marks the end.
                        s.write_all(&client_frame(0x89, b"end")).await.unwrap();
                    }
                    ended = p == b"end";
                    pongs.push(String::from_utf8(p).unwrap());
                }
                Ok(Some(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pongs, ["9", "end"]);
    }

    /// What is not a WebSocket handshake is refused with a status and the header it lacks.
    #[test]
    fn a_request_that_is_not_a_handshake_is_refused_naming_why() {
        use axum::http::{HeaderValue, Method};
        let mut h = HeaderMap::new();
        let refusal = |m: &Method, h: &HeaderMap| check_handshake(m, h).unwrap_err();
        assert_eq!(refusal(&Method::POST, &h).status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(refusal(&Method::GET, &h).why.contains("Connection"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(refusal(&Method::GET, &h).why.contains("Upgrade: websocket"));
        h.insert(header::UPGRADE, HeaderValue::from_static("foo, websocket"));
        assert!(refusal(&Method::GET, &h).why.contains("Upgrade: websocket"), "exactly websocket");
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(refusal(&Method::GET, &h).why.contains("Version"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(refusal(&Method::GET, &h).why.contains("Version"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert!(refusal(&Method::GET, &h).why.contains("Key"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(check_handshake(&Method::GET, &h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    /// A reader that takes nothing is dropped once a frame has waited for the send timeout, counted
    /// `ws_slow_reader`, while another subscriber gets every signal all along.
    #[tokio::test]
    async fn a_reader_that_takes_nothing_is_dropped_after_the_send_timeout() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        let limits = crate::http_guard::Limits {
            ws_send_timeout: std::time::Duration::from_millis(500),
            ..crate::http_guard::Limits::default()
        };
        let (addr, bus, metrics) = guarded_hub(limits).await;
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr).await.unwrap();
        let (mut slow, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await.unwrap();
        subscribed(&mut slow, &bus).await;
        let (mut fast, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        subscribed(&mut fast, &bus).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let pad = "p".repeat(16 * 1024);
        let mut i = 0u64;
        while metrics.dropped("ws_slow_reader") == 0 {
            bus.publish("t", SignalKind::RiskEvent { kind: "big".into(), detail: format!("{i} {pad}") });
            i += 1;
            // The fast one reads each as it comes.
            loop {
                let m = tokio::time::timeout_at(deadline, fast.next()).await.expect("the fast reader keeps getting");
                let Some(Ok(WsMessage::Text(t))) = m else { panic!("{m:?}") };
                if t.as_str().contains("\"kind\":\"big\"") {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the slow reader was never dropped");
        }
        assert_eq!(metrics.dropped("ws_slow_reader"), 1);
        // The slow one's connection is closed: reading it now ends (after what it had been sent).
        let end = tokio::time::timeout_at(deadline, async {
            loop {
                match slow.next().await {
                    Some(Ok(_)) => continue,
                    _ => return,
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the slow reader's socket was not closed");
    }

    /// A reader that keeps taking frames, slowly, is not dropped however long its backlog takes to go out: through a
    /// socket, a reader taking 8 KiB every 20 ms gets a backlog of about 800 KB (some 2 s, four send timeouts) whole
    /// and in order. The send timeout bounds how long one frame waits, not the queue.
    #[tokio::test]
    async fn a_throttled_reader_gets_a_backlog_longer_than_the_send_timeout() {
        use tokio::io::AsyncReadExt;
        let limits = crate::http_guard::Limits {
            ws_send_timeout: std::time::Duration::from_millis(500),
            ..crate::http_guard::Limits::default()
        };
        // The server's sockets get a small send buffer (inherited from the listener; the kernel would otherwise grow
        // it to megabytes on loopback and hold the whole backlog itself): the backlog waits in the hub's queue.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_send_buffer_size(16 * 1024).unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (addr, bus, metrics) = guarded_hub_on(limits, sock.listen(64).unwrap()).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let (mut s, _, mut rest) = raw_client(addr, Some(4096)).await;
        raw_subscribed(&mut s, &mut rest, &bus).await;
        let queued = metrics.ws_queued.get();
        // Fewer than a queue's worth: none may be skipped.
        let n = 200;
        let pad = "p".repeat(4096);
        for i in 0..n {
            bus.publish("t", SignalKind::RiskEvent { kind: "big".into(), detail: format!("{i} {pad}") });
        }
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
        let mut b = vec![0u8; 8 * 1024];
        let mut next = 0;
        while next < n {
            pace.tick().await;
            let got = tokio::time::timeout_at(deadline, s.read(&mut b)).await.expect("the backlog in time").unwrap();
            assert!(got > 0, "dropped after {next} signals");
            rest.extend_from_slice(&b[..got]);
            while let Some((op, p)) = server_frame(&mut rest) {
                assert_ne!(op, wire::OP_CLOSE, "closed after {next} signals");
                if op != wire::OP_TEXT {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                assert_ne!(v["type"], "lagged", "nothing was skipped");
                if v["kind"] == "big" {
                    assert_eq!(v["detail"], format!("{next} {pad}"), "in publish order");
                    next += 1;
                }
            }
        }
        assert_eq!(metrics.dropped("ws_slow_reader"), 0);
        assert!(metrics.ws_queued.get() - queued > n / 2, "the backlog waited in the hub's queue");
    }
}
