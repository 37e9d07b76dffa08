//! A loopback RSS feed for the tests that run a social monitor (the monitor's own output test and the Telegram bot's
//! social alerts): the test sets the items, the feed serves them with an ETag (a 304 to a request carrying it), as a
//! public feed does; and [`wait_for`], the wait those tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;

/// One item: (number, author, text). Its guid is `urn:o:<number>`, its link
/// `https://nitter.example/<author>/status/<number>`.
pub type RssItem<'a> = (u32, &'a str, &'a str);

/// The body and its version (the ETag).
type Body = Arc<Mutex<(String, u64)>>;

/// A feed on a loopback port at `/feed.xml`; stops with the test's runtime.
#[derive(Clone)]
pub struct RssFeed {
    addr: SocketAddr,
    body: Body,
}

impl RssFeed {
    /// An empty feed.
    pub async fn start() -> RssFeed {
        let body: Body = Arc::new(Mutex::new((rss(&[]), 0)));
        let app = Router::new().route("/feed.xml", get(serve)).with_state(body.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port for the feed");
        let addr = l.local_addr().expect("the feed's address");
        tokio::spawn(async move { axum::serve(l, app).await.expect("the feed serves") });
        RssFeed { addr, body }
    }

    /// The feed's URL, for a `[[source]]` of kind `rss`.
    pub fn url(&self) -> String {
        format!("http://{}/feed.xml", self.addr)
    }

    /// Replaces the items (under a new ETag).
    pub fn set(&self, items: &[RssItem<'_>]) {
        let mut b = self.body.lock();
        *b = (rss(items), b.1 + 1);
    }
}

async fn serve(State(body): State<Body>, h: HeaderMap) -> Response {
    let (text, version) = body.lock().clone();
    let etag = format!("\"{version}\"");
    if h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::ETAG, etag)], text).into_response()
}

fn rss(items: &[RssItem<'_>]) -> String {
    let mut s = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>t</title>"#);
    for (i, author, text) in items {
        s.push_str(&format!(
            "<item><title>{text}</title><author>{author}</author><guid>urn:o:{i}</guid>\
             <link>https://nitter.example/{author}/status/{i}</link></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// Polls `f` every 20 ms until it gives a value; panics naming `what` once `deadline` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "waited {deadline:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
