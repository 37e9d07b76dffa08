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
pub async fn subscriber(
    addr: SocketAddr,
    query: String,
    measure_from_us: Arc<AtomicU64>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Seen {
    let mut seen = Seen::default();
    let url = format!("ws://{addr}/ws{query}");
    let req = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return seen;
        }
    };
    // A small read buffer (the default is 128 KiB, eagerly allocated: 1.25 GiB for 10,000 subscribers).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let connected = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await;
    drop(permit);
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return seen;
        }
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let received = now_us();
                    seen.messages += 1;
                    counters.messages.fetch_add(1, Ordering::Relaxed);
                    if t.as_str().starts_with("{\"type\":\"lagged\"") {
                        seen.lagged += 1;
                    } else if let Some(sent) = published_us(t.as_str()) {
                        if sent >= measure_from_us.load(Ordering::Relaxed) {
                            seen.latencies.record(Duration::from_micros(received.saturating_sub(sent)));
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    seen
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
}
