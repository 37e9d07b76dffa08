//! `cargo bench -p kronos-social --bench social`: the monitor's two speed goals (offchain/social/README.md).
//!
//! 1. Pipeline throughput end to end: synthetic posts (unique texts of 8 to 20 words from a 400-word vocabulary with
//!    cashtags and tickers, 5,000 authors, posted ~3.5 s apart) through normalise → de-duplicate → spam rules →
//!    assets → sentiment → score → a SQLite file store (one transaction per batch of 500, with the cursor) → the
//!    bus. Goal: ≥ 5,000 items/s on 2 cores.
//! 2. WebSocket fan-out latency: 1,000 clients each filtering one of four assets (so each item goes to ~250), items
//!    published on the bus at 50/s; latency from publish to receipt in the client. Goal: p99 < 50 ms.
//!
//! The tokio runtime has 2 worker threads. Options: `SOCIAL_BENCH_ITEMS` (default 50000), `SOCIAL_BENCH_CLIENTS`
//! (default 1000), `SOCIAL_BENCH_PUBLISH` (items published in the fan-out run, default 400). `scripts/test` runs a
//! short mode in the dev profile (figures printed, no threshold): `SOCIAL_BENCH_ITEMS=5000 SOCIAL_BENCH_CLIENTS=200
//! SOCIAL_BENCH_PUBLISH=100 cargo bench -p kronos-social --bench social --profile dev`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kronos_common::http_guard::Limits;
use kronos_social::pipeline::{Origin, Rules};
use kronos_social::runner::Monitor;
use kronos_social::{Fanout, Item, Priority, RawItem, Store};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

const ASSETS: [&str; 4] = ["BTC", "ETH", "SOL", "LINK"];
/// Where an item's id starts in its `/ws` message.
const ID_AT: usize = r#"{"type":"item","id":""#.len();

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rules() -> Rules {
    let mut r = Rules::default();
    for a in ASSETS {
        r.assets.add(a, &[], &[]);
    }
    r
}

fn vocabulary() -> Vec<String> {
    let base = [
        "price",
        "market",
        "breakout",
        "support",
        "resistance",
        "bullish",
        "bearish",
        "great",
        "terrible",
        "volume",
        "funding",
        "whales",
        "buying",
        "selling",
        "rally",
        "dump",
        "week",
        "today",
        "trend",
        "chart",
        "long",
        "short",
        "good",
        "bad",
        "strong",
        "weak",
        "news",
        "upgrade",
        "hack",
        "record",
        "low",
        "high",
        "range",
        "moon",
        "rekt",
        "love",
        "hate",
        "calm",
        "panic",
        "fear",
    ];
    let mut v: Vec<String> = Vec::new();
    for (i, w) in base.iter().enumerate() {
        for k in 0..10 {
            v.push(if k == 0 { w.to_string() } else { format!("{w}{}", i * 10 + k) });
        }
    }
    v
}

fn posts(n: usize, now_ms: u64) -> Vec<RawItem> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let vocab = vocabulary();
    let start = now_ms - n as u64 * 3_500;
    (0..n)
        .map(|i| {
            let len = rng.gen_range(8..=20);
            let mut words: Vec<String> = (0..len).map(|_| vocab[rng.gen_range(0..vocab.len())].clone()).collect();
            let a = ASSETS[rng.gen_range(0..ASSETS.len())];
            words
                .insert(rng.gen_range(0..words.len()), if rng.gen_bool(0.5) { format!("${a}") } else { a.to_string() });
            words.push(format!("#{i}"));
            RawItem {
                external_id: format!("bench-{i}"),
                author: Some(format!("user{}", rng.gen_range(0..5000))),
                text: words.join(" ").into_bytes(),
                url: None,
                time_ms: Some(start + i as u64 * 3_500),
                language: Some("en".into()),
            }
        })
        .collect()
}

async fn throughput() {
    let n = env("SOCIAL_BENCH_ITEMS", 50_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite:{}/bench.sqlite", dir.path().display())).await.unwrap();
    let m = Monitor::new(store.clone(), rules(), vec![]).await.unwrap();
    let mut rx = m.bus.subscribe();
    let drain = tokio::spawn(async move {
        let mut k = 0u64;
        while rx.recv().await.is_ok() {
            k += 1;
        }
        k
    });
    let origin = Origin { name: "bench".into(), kind: "rss".into(), weight: 1.0, trusted: false };
    let now = kronos_social::now_ms();
    let items = posts(n, now);
    let started = Instant::now();
    let (mut accepted, mut skipped) = (0usize, 0u64);
    for (b, chunk) in items.chunks(500).enumerate() {
        let batch: Vec<_> = chunk.iter().cloned().map(Ok).collect();
        let (w, out) = m.ingest(&origin, batch, &format!("{{\"batch\":{b}}}"), now).await.unwrap();
        accepted += w.len();
        skipped += out.skipped_total();
    }
    let secs = started.elapsed().as_secs_f64();
    drop(m);
    drain.abort();
    println!(
        "pipeline end to end (SQLite file, batches of 500): {n} items in {secs:.2} s = {:.0} items/s \
         ({accepted} accepted and stored, {skipped} skipped by the rules)",
        n as f64 / secs
    );
}

fn bench_item(i: usize) -> Item {
    Item {
        id: format!("{i:016x}"),
        source: "bench".into(),
        kind: "rss".into(),
        author: "bench".into(),
        text: format!(
            "item {i} about ${} with some words to make it a realistic post size for a social feed",
            ASSETS[i % 4]
        ),
        url: Some("https://example.invalid/post".into()),
        at_ms: i as u64,
        received_ms: i as u64,
        language: "en".into(),
        assets: vec![ASSETS[i % 4].to_string()],
        sentiment: 0.3,
        score: 1.0,
        priority: Priority::Normal,
        version: 1,
        edited_ms: None,
        content_hash: 0,
        simhash: 0,
    }
}

async fn fanout() {
    let clients = env("SOCIAL_BENCH_CLIENTS", 1000);
    let publish = env("SOCIAL_BENCH_PUBLISH", 400);
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let m = Monitor::new(store, rules(), vec![]).await.unwrap();
    // All clients come from one address: lift the per-address caps (the real server keeps them).
    let limits = Limits { rate_per_s: 0, max_connections_per_ip: 0, max_ws_per_ip: 0, ..Limits::default() };
    let server = kronos_social::server::Server::new(m.clone(), limits);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = server.clone();
    tokio::spawn(async move { srv.serve(l, std::future::pending()).await });
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let samples: Arc<Mutex<Vec<Duration>>> = Default::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = format!("ws://{addr}/ws?assets={}", ASSETS[c % 4]);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let sent = sent.clone();
        let samples = samples.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                    let now = Instant::now();
                    // The id follows the message's type (`{"type":"item","id":"<16 hex>"`): read it without parsing
                    // the whole item, so the clients (in this process, on the same 2 threads) cost the server as
                    // little as possible.
                    let id = t.as_str().get(ID_AT..ID_AT + 16).unwrap_or("").to_string();
                    if id == "ffffffffffffffff" {
                        return;
                    }
                    if let Some(at) = sent.lock().get(&id) {
                        samples.lock().push(now - *at);
                    }
                }
            }
        }));
    }
    // Every client is subscribed once the server counts them.
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.guard().metrics().ws_subscribers.get() < clients as i64 {
        assert!(Instant::now() < deadline, "clients did not all connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..publish {
        tick.tick().await;
        let item = Arc::new(bench_item(i));
        sent.lock().insert(item.id.clone(), Instant::now());
        m.bus.publish(&item);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for a in 0..4 {
        let mut last = bench_item(a);
        last.id = "ffffffffffffffff".into();
        m.bus.publish(&Arc::new(last));
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let mut s = samples.lock().clone();
    s.sort();
    let q = |p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)];
    println!(
        "WebSocket fan-out: {clients} clients (one asset each), {publish} items at 50/s, {} deliveries \
         (expected {}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.len(),
        publish * clients / 4,
        q(0.50).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        s.last().unwrap().as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to read.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        throughput().await;
        fanout().await;
    });
}
