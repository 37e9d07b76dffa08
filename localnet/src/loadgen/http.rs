//! HTTP load: a minimal HTTP/1.1 keep-alive client (one `GET` at a time per connection, so the generator spends its
//! core on requests, not on a client library), driven closed-loop (`c` connections each sending the next request as
//! soon as the last answer arrived) or open-loop (requests scheduled at a fixed rate; a request's latency counts from
//! its scheduled time, so a server that stalls is charged for the requests that waited: no coordinated omission).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Latencies;

/// The head of a response: its status, where its body starts and how long the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub head_len: usize,
    pub body_len: usize,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete. A body must have a
/// `Content-Length` (the keeper's API always sends one).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        anyhow::ensure!(buf.len() < 64 * 1024, "a response head over 64 KiB");
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("a response head that is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP/1.1 status line: {status_line:?}"))?;
    let mut body_len = None;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            body_len = Some(value.trim().parse().context("a Content-Length that is not a number")?);
        }
        anyhow::ensure!(
            !(name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked")),
            "a chunked response (the load generator reads Content-Length bodies)"
        );
    }
    let body_len = body_len.ok_or_else(|| anyhow::anyhow!("a response without Content-Length"))?;
    Ok(Some(Head { status, head_len: end + 4, body_len }))
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Sends `request` (a whole `GET`) and reads the answer: its status and body length.
    pub async fn get(&mut self, request: &[u8]) -> Result<(u16, usize)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(h) = parse_head(&self.buf)? {
                while self.buf.len() < h.head_len + h.body_len {
                    self.fill().await?;
                }
                anyhow::ensure!(self.buf.len() == h.head_len + h.body_len, "bytes after a response (pipelining?)");
                return Ok((h.status, h.body_len));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The bytes of `GET path` to `addr`.
pub fn request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kronos-bench\r\nAccept: */*\r\n\r\n").into_bytes()
}

/// What one run measured.
#[derive(Default)]
pub struct Outcome {
    pub latencies: Latencies,
    /// Of the counted answers: from the scheduled send time to the request's write (the generator's own queue: late
    /// timers, a busy core, every connection waiting for an answer); zero in a closed loop.
    pub lag: Latencies,
    /// Of the counted answers: from the request's write to its answer (the server's side, loopback included).
    pub service: Latencies,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Other statuses, and requests that failed (the connection is opened again).
    pub errors: u64,
    /// Response body bytes.
    pub bytes: u64,
    /// The time measured.
    pub wall: Duration,
}

impl Outcome {
    pub fn per_s(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn merge(&mut self, o: Outcome) {
        self.latencies.add(&o.latencies);
        self.lag.add(&o.lag);
        self.service.add(&o.service);
        self.ok += o.ok;
        self.errors += o.errors;
        self.bytes += o.bytes;
        self.wall += o.wall;
    }
}

/// How a run sends.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `conns` connections, each sending as soon as it has its answer.
    Closed { conns: usize },
    /// `rate` requests per second on `conns` connections, latency from the scheduled send time.
    Open { conns: usize, rate: f64 },
}

/// Sends `paths` in turn to `addr` as `mode` says: first for `warmup` (not counted), then for `duration`.
pub async fn run(addr: SocketAddr, paths: &[String], mode: Mode, warmup: Duration, duration: Duration) -> Outcome {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(paths.iter().map(|p| request(addr, p)).collect());
    let conns = match mode {
        Mode::Closed { conns } | Mode::Open { conns, .. } => conns.max(1),
    };
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..conns {
        let requests = requests.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut out = Outcome::default();
            let mut conn: Option<Conn> = None;
            let mut k = i;
            loop {
                // When this request is due: now (closed loop) or at its place in the schedule (open loop).
                let due = match mode {
                    Mode::Closed { .. } => Instant::now(),
                    Mode::Open { rate, .. } => {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        wait_until(due).await;
                        due
                    }
                };
                if due >= end {
                    break;
                }
                let req = &requests[k % requests.len()];
                k += 1;
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::open(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            if due >= measure_from {
                                out.errors += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let sent = Instant::now();
                let r = c.get(req).await;
                // One instant for the answer: latency = lag + service exactly (two clock reads could put service
                // past latency).
                let answered = Instant::now();
                let took = answered.saturating_duration_since(due);
                let counted = due >= measure_from;
                match r {
                    Ok((status, len)) if (200..300).contains(&status) => {
                        if counted {
                            out.ok += 1;
                            out.bytes += len as u64;
                            out.latencies.record(took);
                            out.lag.record(sent.saturating_duration_since(due));
                            out.service.record(answered.saturating_duration_since(sent));
                        }
                    }
                    Ok(_) => out.errors += counted as u64,
                    Err(_) => {
                        out.errors += counted as u64;
                        conn = None;
                    }
                }
            }
            out
        });
    }
    let mut total = Outcome::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(o) = r {
            total.merge(o);
        }
    }
    total.wall = duration;
    total
}

/// Sleeps until `t`. The timer ticks in milliseconds, so a request may go out up to a millisecond after its
/// scheduled time; that lateness is counted in its latency (against the server, never in its favour). Spinning
/// instead would take the generator's one core from the connections reading their answers.
async fn wait_until(t: Instant) {
    if Instant::now() < t {
        tokio::time::sleep_until(t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_is_read_once_complete() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_head(r).unwrap(), Some(Head { status: 200, head_len: r.len() - 2, body_len: 2 }));
        assert_eq!(parse_head(&r[..20]).unwrap(), None);
        let e = parse_head(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("without Content-Length"), "{e}");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        let h = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.status, h.body_len), (503, 0));
    }

    #[tokio::test]
    async fn closed_and_open_loops_count_answers_against_a_real_server() {
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let paths = vec!["/x".to_string(), "/missing".to_string()];
        let d = Duration::from_millis(200);
        let o = run(addr, &paths, Mode::Closed { conns: 2 }, Duration::from_millis(20), d).await;
        assert!(o.ok > 0 && o.errors > 0, "half the paths answer 404: {} ok, {} errors", o.ok, o.errors);
        assert_eq!(o.latencies.count(), o.ok);
        assert_eq!((o.lag.count(), o.service.count()), (o.ok, o.ok));
        assert!(o.lag.max_ms() <= o.latencies.max_ms() && o.service.max_ms() <= o.latencies.max_ms());
        assert_eq!(o.bytes, 5 * o.ok);
        let o = run(addr, &paths[..1], Mode::Open { conns: 2, rate: 200.0 }, Duration::ZERO, d).await;
        // 200 per second for 0.2 s: about 40 scheduled, every one answered.
        assert!((30..=41).contains(&o.ok), "{}", o.ok);
        assert_eq!(o.errors, 0);
    }
}
