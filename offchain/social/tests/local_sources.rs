//! The monitor against local fakes on loopback that speak the real wire formats: an HTTP server serving RSS/Atom
//! and JSON (ETag / 304, 429 with Retry-After, malformed XML, a feed that repeats old items, bad items), the keeper's
//! signal WebSocket (the project's own hub), and the monitor's REST and WebSocket outputs. Every wait is for the
//! event it checks, with a generous deadline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kronos_social::config::{JsonConfig, JsonFields, RssConfig};
use kronos_social::pipeline::{Origin, Rules};
use kronos_social::runner::{spawn_source, Monitor};
use kronos_social::sources::json::JsonSource;
use kronos_social::sources::rss::RssSource;
use kronos_social::store::ItemQuery;
use kronos_social::Store;
use kronos_testkit::rss::wait_for;
use parking_lot::Mutex;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(60);

/// One scripted answer of the fake feed server.
#[derive(Clone)]
enum Step {
    /// 200 with this body and ETag; later requests carrying the ETag get 304.
    Feed { body: Vec<u8>, etag: String },
    /// 429 with `Retry-After: s`.
    TooMany(u64),
    /// 200 with a body that is not a feed.
    Raw(Vec<u8>),
    /// The current document as after the script: 304 to its ETag.
    Current,
}

#[derive(Default)]
struct Fake {
    script: VecDeque<Step>,
    /// The current document after the script (answered with 304 to its ETag).
    current: Option<(Vec<u8>, String)>,
    /// (when, If-None-Match, status) of every request.
    log: Vec<(Instant, Option<String>, u16)>,
}

type Shared = Arc<Mutex<Fake>>;

async fn serve_fake(State(f): State<Shared>, headers: HeaderMap) -> Response {
    let inm = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut f = f.lock();
    let step = f.script.pop_front();
    let fresh = matches!(step, Some(Step::Feed { .. }));
    let resp = match step {
        Some(Step::Feed { body, etag }) => {
            f.current = Some((body, etag));
            None
        }
        Some(Step::TooMany(s)) => {
            Some((StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, s.to_string())], "slow down").into_response())
        }
        Some(Step::Raw(b)) => Some((StatusCode::OK, b).into_response()),
        Some(Step::Current) | None => None,
    };
    let resp = resp.unwrap_or_else(|| match &f.current {
        Some((_, etag)) if inm.as_deref() == Some(etag.as_str()) && !fresh => {
            (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response()
        }
        Some((body, etag)) => (StatusCode::OK, [(header::ETAG, etag.clone())], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    });
    f.log.push((Instant::now(), inm, resp.status().as_u16()));
    resp
}

async fn fake_server(script: Vec<Step>) -> (SocketAddr, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Fake { script: script.into(), ..Default::default() }));
    let app = Router::new().route("/feed", get(serve_fake)).with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, shared)
}

fn rss(items: &[(u32, &str)]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title>"#,
    );
    for (i, text) in items.iter().rev() {
        s.push_str(&format!(
            "<item><title>{text}</title><dc:creator>@a{i}</dc:creator><guid>urn:item:{i}</guid>\
             <pubDate>Tue, 01 Dec 2026 10:{i:02}:00 GMT</pubDate></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

fn rules() -> Rules {
    let mut r = Rules::default();
    r.assets.add("BTC", &["bitcoin".into()], &[]);
    r.assets.add("ETH", &[], &[]);
    r
}

fn origin(name: &str, kind: &str) -> Origin {
    Origin { name: name.into(), kind: kind.into(), weight: 1.0, trusted: false }
}

async fn ids(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = store
        .items(&ItemQuery { limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.item.text)
        .collect();
    v.sort();
    v
}

async fn skips(store: &Store, source: &str) -> Vec<(String, u64)> {
    store.sources().await.unwrap().into_iter().find(|s| s.source == source).map(|s| s.skips).unwrap_or_default()
}

fn rss_source(addr: SocketAddr) -> RssSource {
    RssSource::new(
        "feed",
        RssConfig {
            url: format!("http://{addr}/feed").parse().unwrap(),
            poll: Duration::from_millis(10),
            max_bytes: 1 << 20,
        },
    )
}

#[tokio::test]
async fn rss_conditional_get_304_429_malformed_and_repeats() {
    let a = rss(&[(1, "Bitcoin breaks out to a new high today"), (2, "ETH lags behind as traders rotate")]);
    let b = rss(&[
        (2, "ETH lags behind as traders rotate"),
        (3, "Funding resets across the board after the flush"),
        (1, "Bitcoin breaks out to a new high today"),
    ]);
    let (addr, fake) = fake_server(vec![
        Step::Feed { body: a.into_bytes(), etag: "\"a\"".into() },
        // The next request carries the ETag: 304; then a 429 with Retry-After: 1.
        Step::Current,
        Step::TooMany(1),
        Step::Raw(b"<rss><channel><item><title>broken".to_vec()),
        Step::Feed { body: b.into_bytes(), etag: "\"b\"".into() },
    ])
    .await;
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let m = Monitor::new(store.clone(), rules(), vec![]).await.unwrap();
    let (stop, sd) = watch::channel(false);
    let task = spawn_source(m.clone(), rss_source(addr), origin("feed", "rss"), sd);

    let texts = wait_for("the three entries", DEADLINE, || {
        let store = store.clone();
        async move {
            let t = ids(&store).await;
            (t.len() >= 3).then_some(t)
        }
    })
    .await;
    assert_eq!(
        texts,
        vec![
            "Bitcoin breaks out to a new high today",
            "ETH lags behind as traders rotate",
            "Funding resets across the board after the flush"
        ],
        "each entry once, though the feed repeated two"
    );
    wait_for("the malformed document counted", DEADLINE, || {
        let store = store.clone();
        async move { skips(&store, "feed").await.contains(&("malformed".to_string(), 1)).then_some(()) }
    })
    .await;
    // Wait for the 304 to the second feed's ETag, then look at the whole exchange.
    let log = wait_for("six requests", DEADLINE, || {
        let fake = fake.clone();
        async move {
            let f = fake.lock();
            (f.log.len() >= 6).then(|| f.log.clone())
        }
    })
    .await;
    let statuses: Vec<u16> = log.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(&statuses[..6], &[200, 304, 429, 200, 200, 304], "{statuses:?}");
    assert_eq!(log[1].1.as_deref(), Some("\"a\""), "the second GET is conditional");
    assert_eq!(log[4].1.as_deref(), Some("\"a\""), "a malformed document does not move the cursor");
    assert_eq!(log[5].1.as_deref(), Some("\"b\""));
    let gap = log[3].0.duration_since(log[2].0);
    assert!(gap >= Duration::from_millis(1000), "the 429's Retry-After (1 s) was honoured: next request after {gap:?}");
    let h = m.health().into_iter().find(|h| h.name == "feed").unwrap();
    assert_eq!(h.accepted, 3);
    assert!(h.last_error.as_deref().unwrap_or("").contains("429"), "{h:?}");
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn bad_items_are_skipped_with_their_reason() {
    let huge = "x ".repeat(10_000);
    let mut body = format!(
        r#"{{"items": [
            {{"id": "1", "text": "Bitcoin holds the line", "user": "al"}},
            {{"id": "2", "text": "{huge}", "user": "bo"}},
            {{"id": "3", "text": "bad bytes XX here", "user": "cy"}},
            {{"id": "4", "text": "ETH with an extra field", "user": "di", "extra": 1}},
            {{"id": "5", "user": "ed"}}
        ]}}"#
    )
    .into_bytes();
    let i = body.windows(2).position(|w| w == b"XX").unwrap();
    body[i] = 0xC3;
    body[i + 1] = 0x28;
    let (addr, _fake) = fake_server(vec![Step::Feed { body, etag: "\"j\"".into() }]).await;
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let m = Monitor::new(store.clone(), rules(), vec![]).await.unwrap();
    let src = JsonSource::new(
        "api",
        JsonConfig {
            url: format!("http://{addr}/feed").parse().unwrap(),
            poll: Duration::from_millis(10),
            max_bytes: 1 << 20,
            auth: None,
            auth_prefix: String::new(),
            items: "items".into(),
            fields: JsonFields {
                id: "id".into(),
                text: "text".into(),
                author: Some("user".into()),
                url: None,
                time: None,
                language: None,
            },
            strict: true,
        },
    )
    .unwrap();
    let (stop, sd) = watch::channel(false);
    let task = spawn_source(m.clone(), src, origin("api", "http_json"), sd);
    let s = wait_for("four skips counted", DEADLINE, || {
        let store = store.clone();
        async move {
            let s = skips(&store, "api").await;
            (s.iter().map(|(_, n)| n).sum::<u64>() >= 4).then_some(s)
        }
    })
    .await;
    assert_eq!(
        s,
        vec![
            ("invalid_utf8".to_string(), 1),
            ("malformed".to_string(), 1),
            ("too_long".to_string(), 1),
            ("unknown_fields".to_string(), 1)
        ]
    );
    assert_eq!(ids(&store).await, vec!["Bitcoin holds the line"]);
    assert!(m.health().iter().all(|h| h.up()), "bad items never stop a source");
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_restart_resumes_from_the_saved_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/social.sqlite", dir.path().display());
    let first = rss(&[(1, "Bitcoin miners sell into strength again"), (2, "ETH gas is at a yearly low")]);
    let (addr, fake) = fake_server(vec![Step::Feed { body: first.into_bytes(), etag: "\"1\"".into() }]).await;

    let store = Store::connect(&url).await.unwrap();
    let m = Monitor::new(store.clone(), rules(), vec![]).await.unwrap();
    let (stop, sd) = watch::channel(false);
    let task = spawn_source(m, rss_source(addr), origin("feed", "rss"), sd);
    wait_for("the first two entries", DEADLINE, || {
        let store = store.clone();
        async move { (ids(&store).await.len() == 2).then_some(()) }
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    drop(store);
    let requests_before = fake.lock().log.len();

    // While it was down the feed gained an entry (and still lists the old ones).
    fake.lock().script.push_back(Step::Feed {
        body: rss(&[
            (1, "Bitcoin miners sell into strength again"),
            (2, "ETH gas is at a yearly low"),
            (3, "Bitcoin dominance climbs for a fifth week"),
        ])
        .into_bytes(),
        etag: "\"2\"".into(),
    });
    let store = Store::connect(&url).await.unwrap();
    let m = Monitor::new(store.clone(), rules(), vec![]).await.unwrap();
    let (stop, sd) = watch::channel(false);
    let task = spawn_source(m, rss_source(addr), origin("feed", "rss"), sd);
    wait_for("the new entry", DEADLINE, || {
        let store = store.clone();
        async move { (ids(&store).await.len() >= 3).then_some(()) }
    })
    .await;
    // And a poll after it, so a repeat would have had its chance.
    wait_for("a 304 after the restart", DEADLINE, || {
        let fake = fake.clone();
        async move { fake.lock().log[requests_before..].iter().any(|(_, _, s)| *s == 304).then_some(()) }
    })
    .await;
    assert_eq!(
        ids(&store).await,
        vec![
            "Bitcoin dominance climbs for a fifth week",
            "Bitcoin miners sell into strength again",
            "ETH gas is at a yearly low"
        ],
        "nothing lost, nothing repeated"
    );
    assert_eq!(
        fake.lock().log[requests_before].1.as_deref(),
        Some("\"1\""),
        "the first request after the restart used the saved ETag"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}
