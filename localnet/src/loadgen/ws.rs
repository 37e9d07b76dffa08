//! WebSocket load: the publishing side (signals stamped with their publish time, at a rate set on the fly) and the
//! subscribers (each reads its stream and records how long each signal took from publish to receipt).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures::StreamExt;
use kronos_common::signals::SignalKind;
use kronos_common::{Bus, Decimal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::Latencies;

/// Microseconds since the Unix epoch (the clock both processes share).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}

/// What the publisher does: signals per second (0: none) and the bytes of padding each carries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pace {
    pub rate: f64,
    pub padding: usize,
}

/// A line `RATE PADDING` (the publisher's commands on its standard input).
pub fn parse_pace(line: &str) -> Result<Pace> {
    let mut it = line.split_whitespace();
    let rate: f64 = it.next().context("a pace line needs a rate")?.parse().context("the rate is not a number")?;
    let padding = it.next().map(str::parse).transpose().context("the padding is not a whole number")?.unwrap_or(0);
    anyhow::ensure!(rate.is_finite() && rate >= 0.0, "the rate must be 0 or more");
    Ok(Pace { rate, padding })
}

/// A benchmark signal: a `price_read` whose `updated_at` is its publish time in microseconds and whose `round_id`
/// is its sequence number (then the padding).
pub fn signal(seq: u64, padding: usize) -> SignalKind {
    let mut round_id = seq.to_string();
    if padding > 0 {
        round_id.push(' ');
        round_id.extend(std::iter::repeat_n('x', padding));
    }
    SignalKind::PriceRead {
        chain: "bench".into(),
        pair: "BTC/USD".into(),
        price: Decimal::from_fixed(10_000_000, 2).unwrap_or(Decimal::ZERO),
        round_id,
        updated_at: now_us(),
    }
}

/// The publish time (µs) of a benchmark signal's JSON text, read without parsing the rest.
pub fn published_us(text: &str) -> Option<u64> {
    let at = text.find("\"updated_at\":")? + "\"updated_at\":".len();
    let digits: &str = text[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Publishes benchmark signals on `bus` at the pace in `pace` (changed at any time) until it closes.
pub async fn publish(bus: Bus, mut pace: watch::Receiver<Pace>) {
    let mut seq = 0u64;
    loop {
        let p = *pace.borrow_and_update();
        if p.rate <= 0.0 {
            if pace.changed().await.is_err() {
                return;
            }
            continue;
        }
        let every = Duration::from_secs_f64(1.0 / p.rate);
        let t0 = tokio::time::Instant::now();
        let mut n = 0u64;
        loop {
            // Published on schedule: a late tick publishes the signals it owes at once.
            let due = t0 + every.mul_f64(n as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                r = pace.changed() => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
            }
            bus.publish("bench", signal(seq, p.padding));
            seq += 1;
            n += 1;
        }
    }
}

/// What the subscribers saw.
#[derive(Default)]
pub struct Seen {
    pub latencies: Latencies,
    pub messages: u64,
    /// `lagged` notes (the server skipped this reader ahead).
    pub lagged: u64,
    /// Latencies in µs as they come, put in `latencies` when the stream ends: a histogram is 128 KiB of counts,
    /// and 10,000 of them written at random while receiving cost the generator a cache miss (and often a page fault)
    /// per message; appending to a short list costs neither.
    raw_us: Vec<u32>,
}

/// Shared counters of a set of subscribers.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub closed: AtomicU64,
    pub messages: AtomicU64,
}

/// Subscribes to `ws://addr/ws?query` and reads until `stop` fires; records publish-to-receipt latencies of the
/// signals published after `measure_from_us`. `permit` (a place among the handshakes allowed at once) is given back
/// once connected.
///
/// Ten thousand of these share one core in `kronos bench ws`, so a message must cost far less than the server's
/// delivery: the WebSocket is read by hand over the TCP stream (one read per wake-up into a small buffer of its own,
/// frames parsed in place by [`Frames`]), the time is read once per read, and `stop` is one future for the whole
/// stream.
pub async fn subscriber(
    addr: SocketAddr,
    query: String,
    measure_from_us: Arc<AtomicU64>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Seen {
    let mut seen = Seen::default();
    let connected = connect(addr, &query).await;
    drop(permit);
    let Ok((mut stream, mut frames)) = connected else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return seen;
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut stopped = std::pin::pin!(stop.changed());
    loop {
        // The bytes the handshake's read brought after the response head are the first frames: parsed before the
        // first read. A read that fills less than its buffer leaves the socket's readiness cleared (tokio's
        // `poll_read`): one system call per wake-up.
        let (received, from, before) = (now_us(), measure_from_us.load(Ordering::Relaxed), seen.messages);
        let ended = loop {
            match frames.next() {
                Ok(None) => break false,
                Ok(Some(Msg::Text(t))) => seen.text(t, received, from),
                Ok(Some(Msg::Ping(p))) => {
                    let pong = masked_frame(PONG, p, rand::random::<u32>().to_ne_bytes());
                    if stream.write_all(&pong).await.is_err() {
                        break true;
                    }
                }
                Ok(Some(Msg::Close(p))) => {
                    // Its status code echoed, as a client answers a close.
                    let reply =
                        masked_frame(CLOSE, p.get(..2).unwrap_or_default(), rand::random::<u32>().to_ne_bytes());
                    let _ = stream.write_all(&reply).await;
                    break true;
                }
                Err(_) => break true,
            }
        };
        if seen.messages > before {
            counters.messages.fetch_add(seen.messages - before, Ordering::Relaxed);
        }
        if ended {
            counters.closed.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let read = tokio::select! {
            biased;
            _ = &mut stopped => break,
            r = stream.read(frames.space()) => r,
        };
        match read {
            Ok(n) if n > 0 => frames.filled(n),
            // The end of the stream or an error.
            _ => {
                counters.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    seen.finish()
}

impl Seen {
    /// A text message received at `received_us`: a `lagged` note, or a signal (its latency recorded when it was
    /// published at or after `measure_from_us`).
    fn text(&mut self, t: &str, received_us: u64, measure_from_us: u64) {
        self.messages += 1;
        if t.starts_with("{\"type\":\"lagged\"") {
            self.lagged += 1;
        } else if let Some(sent) = published_us(t) {
            if sent >= measure_from_us {
                self.raw_us.push(received_us.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
        }
    }

    /// Puts the latencies gathered while receiving in the histogram.
    fn finish(mut self) -> Seen {
        for us in std::mem::take(&mut self.raw_us) {
            self.latencies.record(Duration::from_micros(us as u64));
        }
        self
    }
}

/// Frame opcodes (RFC 6455, 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The read buffer a subscriber starts with (it grows only for a frame larger than itself).
const READ_BUFFER: usize = 4096;
/// The largest message a subscriber takes (the bench's largest signals carry 16 KiB of padding).
const MAX_MESSAGE: usize = 16 << 20;
/// The most the head of the server's handshake response may take.
const MAX_RESPONSE_HEAD: usize = 8192;

/// Opens the TCP connection and makes the WebSocket handshake: the stream, and the frames reader holding whatever
/// the server sent after its response head.
async fn connect(addr: SocketAddr, query: &str) -> Result<(TcpStream, Frames)> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    // Pongs and the close reply go out at once.
    stream.set_nodelay(true)?;
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    stream.write_all(upgrade_request(addr, query, &key).as_bytes()).await.context("sending the upgrade request")?;
    let mut head = vec![0u8; 1024];
    let mut n = 0;
    loop {
        if n == head.len() {
            anyhow::ensure!(
                head.len() < MAX_RESPONSE_HEAD,
                "the handshake response head is longer than {MAX_RESPONSE_HEAD} bytes"
            );
            head.resize((head.len() * 2).min(MAX_RESPONSE_HEAD), 0);
        }
        let r = stream.read(&mut head[n..]).await.context("reading the handshake response")?;
        anyhow::ensure!(r > 0, "the server closed the connection during the handshake");
        let from = n.saturating_sub(3);
        n += r;
        if let Some(i) = head[from..n].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            check_upgrade_response(&head[..end], &key)?;
            return Ok((stream, Frames::with(&head[end..n])));
        }
    }
}

/// A client's upgrade request for `/ws{query}` with `key` as its `Sec-WebSocket-Key`.
fn upgrade_request(addr: SocketAddr, query: &str, key: &str) -> String {
    format!(
        "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
}

/// Checks the head of the response to an upgrade request sent with `key` (status line and headers, up to and
/// including the empty line): `101`, the upgrade to `websocket`, the accept key derived from `key`, and no extension
/// (this reader knows none).
fn check_upgrade_response(head: &[u8], key: &str) -> Result<()> {
    let head = std::str::from_utf8(head).context("the handshake response is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    anyhow::ensure!(version.starts_with("HTTP/1.") && code == "101", "the server refused the upgrade: {status}");
    let (mut upgrade, mut connection, mut accept) = (false, false, None);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').with_context(|| format!("a malformed header line: {line}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection = value.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            anyhow::ensure!(value.is_empty(), "the server chose an extension that was not offered: {value}");
        }
    }
    anyhow::ensure!(upgrade && connection, "the response does not upgrade the connection to a WebSocket");
    let want = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    anyhow::ensure!(accept == Some(want.as_str()), "Sec-WebSocket-Accept is {accept:?}, not {want}");
    Ok(())
}

/// Why a server's frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// Reserved bits set (no extension was agreed).
    ReservedBits(u8),
    UnknownOpcode(u8),
    /// A server's frames are never masked.
    Masked,
    /// A control frame must be a single frame of at most 125 bytes.
    BadControl {
        opcode: u8,
        fin: bool,
        len: u64,
    },
    /// A message above [`MAX_MESSAGE`] (its length so far).
    TooLarge(u64),
    /// A continuation frame with no fragmented message open.
    StrayContinuation,
    /// A new data frame while a fragmented message is still open.
    Interleaved,
    /// A text message that is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadFrame::ReservedBits(b) => write!(f, "reserved bits {b:#04x} set in a frame"),
            BadFrame::UnknownOpcode(o) => write!(f, "unknown opcode {o:#x}"),
            BadFrame::Masked => write!(f, "a masked frame from the server"),
            BadFrame::BadControl { opcode, fin, len } => {
                write!(f, "control frame {opcode:#x} of {len} bytes (FIN {fin}): at most 125 bytes, unfragmented")
            }
            BadFrame::TooLarge(n) => write!(f, "a message of {n} bytes (at most {MAX_MESSAGE})"),
            BadFrame::StrayContinuation => write!(f, "a continuation frame with no fragmented message open"),
            BadFrame::Interleaved => write!(f, "a new message before the fragmented one ended"),
            BadFrame::NotUtf8 => write!(f, "a text message that is not UTF-8"),
        }
    }
}

impl std::error::Error for BadFrame {}

/// A frame's header: FIN, opcode, the header's length and the payload's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    head: usize,
    len: usize,
}

/// The header at the start of `b` (a server's frame: unmasked), `None` when `b` does not hold all of it yet.
fn header(b: &[u8]) -> Result<Option<Header>, BadFrame> {
    let [b0, b1, ..] = *b else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(BadFrame::ReservedBits(b0 & 0x70));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(BadFrame::UnknownOpcode(opcode));
    }
    if b1 & 0x80 != 0 {
        return Err(BadFrame::Masked);
    }
    let short = b1 & 0x7F;
    if opcode & 0x8 != 0 && (!fin || short > 125) {
        return Err(BadFrame::BadControl { opcode, fin, len: u64::from(short) });
    }
    let (head, len) = match short {
        126 => match b.get(2..4) {
            Some(&[x, y]) => (4, u64::from(u16::from_be_bytes([x, y]))),
            _ => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(x) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(x);
                (10, u64::from_be_bytes(n))
            }
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(BadFrame::TooLarge(len));
    }
    Ok(Some(Header { fin, opcode, head, len: len as usize }))
}

/// What a subscriber acts on (pongs and binary messages are passed over).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg<'a> {
    Text(&'a str),
    Ping(&'a [u8]),
    /// The close frame's payload (status code and reason).
    Close(&'a [u8]),
}

/// The server's frames as they arrive: one buffer read into ([`Frames::space`], [`Frames::filled`]), its frames
/// parsed in place ([`Frames::next`]); a frame split across reads waits for its rest, and a fragmented text message is
/// put together (the only copy).
pub(crate) struct Frames {
    buf: Vec<u8>,
    /// The bytes read and not yet parsed: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The opcode (text or binary) of the fragmented message open.
    open: Option<u8>,
    /// The open fragmented text message so far.
    text: Vec<u8>,
    /// `text` was handed out by the last [`Frames::next`]: emptied at the next.
    handed: bool,
}

impl Frames {
    /// A reader whose first bytes are `first`.
    pub(crate) fn with(first: &[u8]) -> Frames {
        let mut buf = vec![0u8; READ_BUFFER.max(first.len())];
        buf[..first.len()].copy_from_slice(first);
        Frames { buf, start: 0, end: first.len(), open: None, text: Vec::new(), handed: false }
    }

    /// Where the next read goes (call once [`Frames::next`] has returned `None`): the free room after the bytes
    /// waiting, which are moved to the front first; the buffer grows only when they begin a frame larger than it.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let need = match header(&self.buf[..self.end]) {
                Ok(Some(h)) => h.head + h.len,
                _ => 0,
            };
            self.buf.resize(need.max(self.buf.len() * 2), 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Frames::space`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next message whose frames are all in, `None` when more bytes are needed. After an error the stream is
    /// unusable.
    pub(crate) fn next(&mut self) -> Result<Option<Msg<'_>>, BadFrame> {
        if self.handed {
            self.text.clear();
            self.handed = false;
        }
        loop {
            let Some(h) = header(&self.buf[self.start..self.end])? else { return Ok(None) };
            let at = self.start + h.head;
            let end = at + h.len;
            if end > self.end {
                return Ok(None);
            }
            self.start = end;
            match h.opcode {
                PING => return Ok(Some(Msg::Ping(&self.buf[at..end]))),
                CLOSE => return Ok(Some(Msg::Close(&self.buf[at..end]))),
                PONG => {}
                CONTINUATION => {
                    let kind = self.open.ok_or(BadFrame::StrayContinuation)?;
                    if kind == TEXT {
                        let total = self.text.len() + h.len;
                        if total > MAX_MESSAGE {
                            return Err(BadFrame::TooLarge(total as u64));
                        }
                        self.text.extend_from_slice(&self.buf[at..end]);
                    }
                    if h.fin {
                        self.open = None;
                        if kind == TEXT {
                            self.handed = true;
                            return std::str::from_utf8(&self.text)
                                .map(|t| Some(Msg::Text(t)))
                                .map_err(|_| BadFrame::NotUtf8);
                        }
                    }
                }
                kind => {
                    if self.open.is_some() {
                        return Err(BadFrame::Interleaved);
                    }
                    if !h.fin {
                        self.open = Some(kind);
                        if kind == TEXT {
                            self.text.extend_from_slice(&self.buf[at..end]);
                        }
                    } else if kind == TEXT {
                        return std::str::from_utf8(&self.buf[at..end])
                            .map(|t| Some(Msg::Text(t)))
                            .map_err(|_| BadFrame::NotUtf8);
                    }
                }
            }
        }
    }
}

/// A client's frame (FIN set) of `opcode` carrying `payload` masked with `mask`: a client's frames are always masked.
/// `payload`: at most 125 bytes (a control frame's).
pub(crate) fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut f = Vec::with_capacity(6 + payload.len());
    f.push(0x80 | opcode);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

/// A subscriber that never reads: it connects with a small receive buffer and holds the socket open until `stop`.
/// Returns whether the server closed it (it was dropped as a slow reader).
pub async fn slow_subscriber(addr: SocketAddr, query: String, mut stop: watch::Receiver<bool>) -> Result<bool> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let stream = sock.connect(addr).await?;
    let req = format!("ws://{addr}/ws{query}").into_client_request()?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    // Read nothing until stopped; then see whether the server gave up on this reader (after whatever was queued, a
    // closed connection ends the stream).
    let _ = stop.changed().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return Ok(true),
            Ok(Some(Ok(_))) => continue,
            Err(_) => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_time_travels_in_the_signal() {
        let sig = kronos_common::Signal { at_ms: 1, source: "bench".into(), kind: signal(42, 3) };
        let text = serde_json::to_string(&sig).unwrap();
        let us = published_us(&text).unwrap();
        assert!(us > 1_700_000_000_000_000 && us <= now_us(), "{us}");
        assert!(text.contains("\"round_id\":\"42 xxx\""), "{text}");
        assert_eq!(published_us("{\"type\":\"lagged\",\"lost\":3}"), None);
    }

    #[test]
    fn pace_lines_are_checked() {
        assert_eq!(parse_pace("100 512").unwrap(), Pace { rate: 100.0, padding: 512 });
        assert_eq!(parse_pace("0").unwrap(), Pace { rate: 0.0, padding: 0 });
        assert!(parse_pace("fast").is_err());
        assert!(parse_pace("-1").is_err());
        assert!(parse_pace("").is_err());
    }

    /// A server's frame (unmasked) with the shortest length form for `payload`.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=65535 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// What a subscriber acts on, owned.
    #[derive(Debug, Clone, PartialEq)]
    enum Got {
        Text(String),
        Ping(Vec<u8>),
        Close(Vec<u8>),
    }

    /// Feeds `chunks` to a reader as successive reads (each copied into as much room as the reader offers, so a
    /// chunk may take several reads) and collects what it gives; the error ends it.
    fn read_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Got>, Option<BadFrame>) {
        let mut frames = Frames::with(&[]);
        let mut got = Vec::new();
        for mut chunk in chunks {
            while !chunk.is_empty() {
                let room = frames.space();
                let n = room.len().min(chunk.len());
                room[..n].copy_from_slice(&chunk[..n]);
                frames.filled(n);
                chunk = &chunk[n..];
                loop {
                    match frames.next() {
                        Ok(None) => break,
                        Ok(Some(Msg::Text(t))) => got.push(Got::Text(t.to_string())),
                        Ok(Some(Msg::Ping(p))) => got.push(Got::Ping(p.to_vec())),
                        Ok(Some(Msg::Close(p))) => got.push(Got::Close(p.to_vec())),
                        Err(e) => return (got, Some(e)),
                    }
                }
            }
        }
        (got, None)
    }

    /// Every kind of frame a subscriber meets, with the messages it should give.
    fn sample_stream() -> (Vec<u8>, Vec<Got>) {
        let mid = "m".repeat(300);
        let mut s = Vec::new();
        s.extend(frame(true, TEXT, b"hello"));
        s.extend(frame(true, PONG, b"ignored"));
        s.extend(frame(true, TEXT, mid.as_bytes()));
        s.extend(frame(true, PING, b"p1"));
        // A fragmented text message with a ping between its fragments (control frames may come in between) and an
        // empty fragment.
        s.extend(frame(false, TEXT, "frag".as_bytes()));
        s.extend(frame(false, CONTINUATION, "mé".as_bytes()));
        s.extend(frame(true, PING, b""));
        s.extend(frame(false, CONTINUATION, b""));
        s.extend(frame(true, CONTINUATION, "nted".as_bytes()));
        s.extend(frame(true, BINARY, &[0xFF, 0xFE]));
        s.extend(frame(false, BINARY, &[1]));
        s.extend(frame(true, CONTINUATION, &[2]));
        s.extend(frame(true, TEXT, b""));
        s.extend(frame(true, CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
        let want = vec![
            Got::Text("hello".into()),
            Got::Text(mid),
            Got::Ping(b"p1".to_vec()),
            Got::Ping(vec![]),
            Got::Text("fragménted".into()),
            Got::Text(String::new()),
            Got::Close(vec![0x03, 0xE8, b'b', b'y', b'e']),
        ];
        (s, want)
    }

    #[test]
    fn frames_split_at_every_byte_boundary_read_the_same() {
        let (s, want) = sample_stream();
        assert_eq!(read_chunks([s.as_slice()]), (want.clone(), None));
        for k in 0..=s.len() {
            assert_eq!(read_chunks([&s[..k], &s[k..]]), (want.clone(), None), "split at {k}");
        }
        assert_eq!(read_chunks(s.chunks(1)), (want.clone(), None), "a byte at a time");
        assert_eq!(read_chunks(s.chunks(7)), (want, None), "7 bytes at a time");
    }

    #[test]
    fn the_three_length_forms_are_read_and_the_buffer_grows_for_a_large_frame() {
        // 125 bytes in 7 bits, 126 and 65,535 in 16, 65,536 and 70,000 in 64.
        let texts: Vec<String> = [125usize, 126, 65_535, 65_536, 70_000]
            .iter()
            .enumerate()
            .map(|(i, n)| char::from(b'a' + i as u8).to_string().repeat(*n))
            .collect();
        let framed: Vec<Vec<u8>> = texts.iter().map(|t| frame(true, TEXT, t.as_bytes())).collect();
        assert_eq!(framed[0][..2], [0x81, 125]);
        assert_eq!(framed[1][..4], [0x81, 126, 0, 126]);
        assert_eq!(framed[2][..4], [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(framed[3][..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(framed[4][..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let s = framed.concat();
        let want: Vec<Got> = texts.into_iter().map(Got::Text).collect();
        for size in [1000, 4096, 65_536, s.len()] {
            assert_eq!(read_chunks(s.chunks(size)), (want.clone(), None), "reads of {size} bytes");
        }
        // Split inside each header and inside each payload.
        let mut at = 0;
        for f in &framed {
            for k in [at + 1, at + 2, at + 3, at + 9, at + 10, at + f.len() / 2, at + f.len() - 1] {
                assert_eq!(read_chunks([&s[..k], &s[k..]]), (want.clone(), None), "split at {k}");
            }
            at += f.len();
        }
        // The buffer grew to hold a frame, not more than twice over.
        let mut frames = Frames::with(&framed[4]);
        assert!(matches!(frames.next(), Ok(Some(Msg::Text(t))) if t.len() == 70_000));
        assert_eq!(frames.buf.len(), framed[4].len());
        let mut frames = Frames::with(&framed[4][..5000]);
        assert_eq!(frames.next(), Ok(None));
        assert_eq!(frames.space().len(), framed[4].len() - 5000, "room for the rest of the frame");
        // A small stream keeps the small buffer.
        let (small, _) = sample_stream();
        let mut frames = Frames::with(&small);
        while let Ok(Some(_)) = frames.next() {}
        frames.space();
        assert_eq!(frames.buf.len(), READ_BUFFER);
    }

    #[test]
    fn bad_frames_end_the_stream_after_the_good_ones() {
        let hello = frame(true, TEXT, b"hello");
        let cases: Vec<(Vec<u8>, BadFrame)> = vec![
            (vec![0xC1, 0x01, b'x'], BadFrame::ReservedBits(0x40)),
            (vec![0x91, 0x01, b'x'], BadFrame::ReservedBits(0x10)),
            (vec![0x83, 0x00], BadFrame::UnknownOpcode(3)),
            (vec![0x8B, 0x00], BadFrame::UnknownOpcode(0xB)),
            (vec![0x81, 0x81, 1, 2, 3, 4, b'x'], BadFrame::Masked),
            (
                [vec![0x89, 126, 0, 126], vec![0; 126]].concat(),
                BadFrame::BadControl { opcode: PING, fin: true, len: 126 },
            ),
            (vec![0x09, 0x00], BadFrame::BadControl { opcode: PING, fin: false, len: 0 }),
            (vec![0x08, 0x00], BadFrame::BadControl { opcode: CLOSE, fin: false, len: 0 }),
            (vec![0x80, 0x01, b'x'], BadFrame::StrayContinuation),
            ([frame(false, TEXT, b"a"), frame(true, TEXT, b"b")].concat(), BadFrame::Interleaved),
            ([frame(false, BINARY, b"a"), frame(true, TEXT, b"b")].concat(), BadFrame::Interleaved),
            (vec![0x81, 0x01, 0xFF], BadFrame::NotUtf8),
            ([frame(false, TEXT, &[0xC3]), frame(true, CONTINUATION, &[0x28])].concat(), BadFrame::NotUtf8),
            (vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], BadFrame::TooLarge(1 << 63)),
            (
                [&[0x82, 127][..], &((MAX_MESSAGE + 1) as u64).to_be_bytes()].concat(),
                BadFrame::TooLarge(MAX_MESSAGE as u64 + 1),
            ),
        ];
        for (bad, err) in cases {
            let s = [hello.clone(), bad.clone()].concat();
            let want = (vec![Got::Text("hello".into())], Some(err.clone()));
            assert_eq!(read_chunks([s.as_slice()]), want, "{bad:x?}");
            assert_eq!(read_chunks(s.chunks(1)), want, "{bad:x?} a byte at a time");
        }
        // A message split into fragments each below the limit is still held to it.
        let big = vec![b'a'; MAX_MESSAGE / 2 + 1];
        let s = [frame(false, TEXT, &big), frame(true, CONTINUATION, &big)].concat();
        assert_eq!(read_chunks([s.as_slice()]).1, Some(BadFrame::TooLarge(MAX_MESSAGE as u64 + 2)));
    }

    #[test]
    fn a_client_frame_is_masked() {
        assert_eq!(
            masked_frame(PONG, b"abcde", [1, 2, 3, 4]),
            [0x8A, 0x85, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3, b'd' ^ 4, b'e' ^ 1]
        );
        assert_eq!(masked_frame(PONG, b"", [9, 9, 9, 9]), [0x8A, 0x80, 9, 9, 9, 9]);
        assert_eq!(masked_frame(CLOSE, &[0x03, 0xE8], [0xFF, 0, 0xFF, 0]), [0x88, 0x82, 0xFF, 0, 0xFF, 0, 0xFC, 0xE8]);
    }

    #[test]
    fn the_upgrade_response_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
        check_upgrade_response(ok.as_bytes(), key).unwrap();
        for bad in [
            ok.replace("101 Switching Protocols", "503 Service Unavailable"),
            ok.replace(accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ok.replace(&format!("Sec-WebSocket-Accept: {accept}\r\n"), ""),
            ok.replace("upgrade: WebSocket\r\n", ""),
            ok.replace("keep-alive, Upgrade", "keep-alive"),
            ok.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
            ok.replace("HTTP/1.1", "SIP/2.0"),
        ] {
            assert!(check_upgrade_response(bad.as_bytes(), key).is_err(), "{bad}");
        }
        assert!(upgrade_request("127.0.0.1:80".parse().unwrap(), "?types=a", key).starts_with(
            "GET /ws?types=a HTTP/1.1\r\nHost: 127.0.0.1:80\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        ));
    }

    /// A scripted server on loopback: reads the upgrade request, then runs `script` on the socket with the request's
    /// key.
    async fn scripted<F, Fut>(script: F) -> SocketAddr
    where
        F: FnOnce(TcpStream, String, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(s.read(&mut b).await.unwrap(), 1, "the request ended early");
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            let key = req.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap().to_string();
            script(s, key, req).await;
        });
        addr
    }

    fn accepting(key: &str) -> Vec<u8> {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").into_bytes()
    }

    /// Reads one masked client frame: its first byte and its unmasked payload.
    async fn client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 6];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0x80, "a client's frame is masked");
        let mut p = vec![0u8; usize::from(h[1] & 0x7F)];
        s.read_exact(&mut p).await.unwrap();
        p.iter_mut().zip(h[2..6].iter().cycle()).for_each(|(b, m)| *b ^= m);
        (h[0], p)
    }

    fn run_subscriber(addr: SocketAddr) -> (tokio::task::JoinHandle<Seen>, Arc<Counters>, watch::Sender<bool>) {
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(subscriber(
            addr,
            "?types=price_read".into(),
            Arc::new(AtomicU64::new(0)),
            counters.clone(),
            stop_rx,
            None,
        ));
        (task, counters, stop_tx)
    }

    fn signal_text(seq: u64) -> String {
        serde_json::to_string(&kronos_common::Signal { at_ms: 1, source: "bench".into(), kind: signal(seq, 0) })
            .unwrap()
    }

    /// The frames sent with the response head are read; a ping is answered with its payload, a close with its
    /// status code, and the subscriber then ends as closed.
    #[tokio::test]
    async fn a_subscriber_reads_the_frames_behind_the_handshake_and_answers_ping_and_close() {
        let addr = scripted(|mut s, key, req| async move {
            assert!(req.starts_with("GET /ws?types=price_read HTTP/1.1\r\n"), "{req}");
            assert!(req.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{req}");
            // The response head, a signal, a lagged note and a ping in one write.
            let mut out = accepting(&key);
            out.extend(frame(true, TEXT, signal_text(1).as_bytes()));
            out.extend(frame(true, TEXT, br#"{"type":"lagged","lost":3}"#));
            out.extend(frame(true, PING, b"are you there"));
            s.write_all(&out).await.unwrap();
            assert_eq!(client_frame(&mut s).await, (0x80 | PONG, b"are you there".to_vec()));
            // A signal split in two writes, then a close.
            let sig = frame(true, TEXT, signal_text(2).as_bytes());
            s.write_all(&sig[..10]).await.unwrap();
            s.write_all(&sig[10..]).await.unwrap();
            s.write_all(&frame(true, CLOSE, &[0x03, 0xE9, b'x'])).await.unwrap();
            assert_eq!(client_frame(&mut s).await, (0x80 | CLOSE, vec![0x03, 0xE9]));
        })
        .await;
        let (task, counters, _stop) = run_subscriber(addr);
        let seen = tokio::time::timeout(Duration::from_secs(60), task).await.expect("the subscriber ended").unwrap();
        assert_eq!((seen.messages, seen.lagged, seen.latencies.count()), (3, 1, 2));
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            (c(&counters.connected), c(&counters.failed), c(&counters.closed), c(&counters.messages)),
            (1, 0, 1, 3)
        );
    }

    /// A wrong accept key, a refusal, a head too long or a connection closed during the handshake: failed.
    #[tokio::test]
    async fn a_failed_handshake_is_counted_as_failed() {
        let scripts: Vec<Box<dyn FnOnce(String) -> Vec<u8> + Send>> = vec![
            Box::new(|key| String::from_utf8(accepting(&key)).unwrap().replace("Accept: ", "Accept: x").into_bytes()),
            Box::new(|_| b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec()),
            Box::new(|key| {
                let pad = format!("X-Pad: {}\r\n", "p".repeat(MAX_RESPONSE_HEAD));
                String::from_utf8(accepting(&key)).unwrap().replacen("\r\n", &format!("\r\n{pad}"), 1).into_bytes()
            }),
            Box::new(|key| accepting(&key)[..20].to_vec()),
        ];
        for (i, script) in scripts.into_iter().enumerate() {
            let addr = scripted(move |mut s, key, _| async move {
                let _ = s.write_all(&script(key)).await;
                // Closed once written (the subscriber may already be gone).
            })
            .await;
            let (task, counters, _stop) = run_subscriber(addr);
            let seen =
                tokio::time::timeout(Duration::from_secs(60), task).await.expect("the subscriber ended").unwrap();
            assert_eq!(seen.messages, 0);
            let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
            assert_eq!((c(&counters.connected), c(&counters.failed)), (0, 1), "script {i}");
        }
    }

    /// Against the real hub served by the guard: twenty subscribers get every signal (small ones and ones larger than
    /// their buffer) with latencies, one beyond the cap is refused, and `stop` ends them without a close.
    #[tokio::test]
    async fn subscribers_read_the_real_hub() {
        use kronos_common::http_guard::{Guard, GuardMetrics, Limits};
        const N: usize = 20;
        const SIGNALS: u64 = 50;
        let bus = kronos_common::Bus::new(1024);
        let limits = Limits { max_ws_subscribers: N, max_ws_per_ip: 0, max_connections_per_ip: 0, ..Limits::default() };
        let guard = Guard::new(limits, GuardMetrics::default());
        let hub = kronos_common::signal_ws::Hub::new(bus.clone(), guard.clone());
        // The extractor is whatever `Hub::upgrade` takes.
        let app =
            axum::Router::new().route("/ws", axum::routing::get(move |up| async move { hub.upgrade(up, None, false) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn({
            let stop = shutdown.clone().cancelled_owned();
            async move { guard.serve(listener, app, stop).await }
        });
        let counters = Arc::new(Counters::default());
        let from = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..N {
            tasks.spawn(subscriber(addr, String::new(), from.clone(), counters.clone(), stop_rx.clone(), None));
        }
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let wait = |what: &'static str, done: &dyn Fn() -> bool| {
            let ok = done();
            assert!(ok || tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            ok
        };
        while !wait("the subscribers' handshakes", &|| c(&counters.connected) + c(&counters.failed) == N as u64) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(c(&counters.connected), N as u64);
        // One more is refused at the cap.
        let extra = Arc::new(Counters::default());
        let seen = subscriber(addr, String::new(), from.clone(), extra.clone(), stop_rx.clone(), None).await;
        assert_eq!((c(&extra.connected), c(&extra.failed), seen.messages), (0, 1, 0));
        // Every subscriber's queue exists once its handshake is answered: all of these reach all of them. Every
        // tenth is larger than a subscriber's read buffer.
        for seq in 0..SIGNALS {
            bus.publish("bench", signal(seq, if seq % 10 == 9 { 16 * 1024 } else { 0 }));
        }
        while !wait("every signal at every subscriber", &|| c(&counters.messages) >= N as u64 * SIGNALS) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        let mut all = Latencies::default();
        while let Some(seen) = tasks.join_next().await {
            let seen = seen.unwrap();
            assert_eq!((seen.messages, seen.lagged, seen.latencies.count()), (SIGNALS, 0, SIGNALS));
            all.add(&seen.latencies);
        }
        assert_eq!(all.count(), N as u64 * SIGNALS);
        assert!(all.max_ms() < 60_000.0, "{}", all.summary());
        assert_eq!((c(&counters.closed), c(&counters.messages)), (0, N as u64 * SIGNALS), "stopped, not closed");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
