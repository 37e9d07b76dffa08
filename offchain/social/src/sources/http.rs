//! One HTTP GET as polling sources make it: conditional (ETag / Last-Modified), the body read up to a limit, the
//! status mapped to what the runner should do.

use std::time::{Duration, SystemTime};

use crate::source::SourceError;

/// What a GET brought back.
#[derive(Debug)]
pub enum Fetched {
    /// `304 Not Modified`: nothing new.
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// When the server says nothing, a `429`/`503` waits this long.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `Retry-After`: delta seconds or an HTTP date (relative to `now`); `None` when absent or unreadable.
pub fn retry_after(value: Option<&str>, now: SystemTime) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What a status means for the source (`Ok(())` for 200 and 304).
pub fn classify(status: u16, retry_after_header: Option<&str>, now: SystemTime) -> Result<(), SourceError> {
    match status {
        200..=299 | 304 => Ok(()),
        429 | 503 => Err(SourceError::RateLimited {
            retry_after: retry_after(retry_after_header, now).unwrap_or(DEFAULT_RETRY_AFTER),
            message: format!("HTTP {status}"),
        }),
        401 | 403 => Err(SourceError::Fatal(format!("HTTP {status}: the credentials are refused"))),
        404 | 410 => Err(SourceError::Fatal(format!("HTTP {status}: no such feed"))),
        400..=499 => Err(SourceError::Fatal(format!("HTTP {status}"))),
        _ => Err(SourceError::Transient(format!("HTTP {status}"))),
    }
}

/// A client for sources: 30 s timeout, no proxy surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("kronos-social/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// A conditional GET of `url` with `headers`, reading at most `max_bytes` of body.
pub async fn get(
    client: &reqwest::Client,
    url: &url::Url,
    headers: &[(String, String)],
    etag: Option<&str>,
    last_modified: Option<&str>,
    max_bytes: usize,
) -> Result<Fetched, SourceError> {
    let mut req = client.get(url.clone());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(e) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    if let Some(l) = last_modified {
        req = req.header(reqwest::header::IF_MODIFIED_SINCE, l);
    }
    // The URL is logged by the runner; query strings could hold keys, so errors name the host only.
    let host = url.host_str().unwrap_or("?").to_string();
    let mut resp = req.send().await.map_err(|e| SourceError::Transient(format!("GET {host}: {}", kind(&e))))?;
    let status = resp.status().as_u16();
    let h = |n: reqwest::header::HeaderName| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let ra = h(reqwest::header::RETRY_AFTER);
    classify(status, ra.as_deref(), SystemTime::now())?;
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    let etag = h(reqwest::header::ETAG);
    let last_modified = h(reqwest::header::LAST_MODIFIED);
    if resp.content_length().is_some_and(|n| n as usize > max_bytes) {
        return Err(SourceError::Transient(format!("GET {host}: the body is larger than {max_bytes} bytes")));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| SourceError::Transient(format!("GET {host}: reading: {}", kind(&e))))?
    {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(SourceError::Transient(format!("GET {host}: the body is larger than {max_bytes} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body { bytes, etag, last_modified })
}

fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad body"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(Some("7"), now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(Some(&later), now), Some(Duration::from_secs(90)));
        assert_eq!(retry_after(Some("soon"), now), None);
        assert_eq!(retry_after(None, now), None);
    }

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        assert_eq!(classify(200, None, now), Ok(()));
        assert_eq!(classify(304, None, now), Ok(()));
        assert_eq!(
            classify(429, Some("3"), now),
            Err(SourceError::RateLimited { retry_after: Duration::from_secs(3), message: "HTTP 429".into() })
        );
        assert!(
            matches!(classify(503, None, now), Err(SourceError::RateLimited { retry_after, .. }) if retry_after == DEFAULT_RETRY_AFTER)
        );
        assert!(matches!(classify(404, None, now), Err(SourceError::Fatal(_))));
        assert!(matches!(classify(502, None, now), Err(SourceError::Transient(_))));
    }
}
