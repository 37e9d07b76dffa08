//! RSS/Atom feeds (`feed-rs`: RSS 0.9x/1.0/2.0, Atom, JSON Feed), e.g. a self-hosted Nitter's per-user or search
//! feed.
//!
//! Each poll is a conditional GET (the cursor keeps the ETag and Last-Modified); `304` is an empty batch. Entries
//! already read are recognised by their id (the cursor keeps the last [`SEEN_CAP`] ids), so a feed that shows its
//! last 20 entries on every fetch yields each entry once. A document that does not parse is counted once as
//! `malformed` and skipped (the cursor does not move, so the next poll fetches it again); an entry holding bytes
//! that are not UTF-8 is cut out before parsing and counted as `invalid_utf8`, the rest of the feed is read.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::http::{self, Fetched};
use crate::config::RssConfig;
use crate::item::{RawItem, Skip};
use crate::source::{Batch, Source, SourceError};

/// Entry ids remembered per feed (a feed lists far fewer at a time).
pub const SEEN_CAP: usize = 2000;

/// Where a feed was left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RssCursor {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Entry ids already read, oldest first.
    pub seen: VecDeque<String>,
}

pub struct RssSource {
    name: String,
    cfg: RssConfig,
    client: reqwest::Client,
}

impl RssSource {
    pub fn new(name: &str, cfg: RssConfig) -> RssSource {
        RssSource { name: name.to_string(), cfg, client: http::client() }
    }
}

impl Source for RssSource {
    type Cursor = RssCursor;

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "rss"
    }

    async fn next(&mut self, cursor: &RssCursor) -> Result<Batch<RssCursor>, SourceError> {
        let fetched = http::get(
            &self.client,
            &self.cfg.url,
            &[],
            cursor.etag.as_deref(),
            cursor.last_modified.as_deref(),
            self.cfg.max_bytes,
        )
        .await?;
        let (bytes, etag, last_modified) = match fetched {
            Fetched::NotModified => {
                return Ok(Batch { items: vec![], changes: vec![], cursor: cursor.clone(), wait: self.cfg.poll })
            }
            Fetched::Body { bytes, etag, last_modified } => (bytes, etag, last_modified),
        };
        Ok(read(&bytes, cursor, etag, last_modified, self.cfg.poll))
    }
}

/// Reads a fetched document against the cursor: the new entries, oldest first, and the cursor after them.
pub fn read(
    bytes: &[u8],
    cursor: &RssCursor,
    etag: Option<String>,
    last_modified: Option<String>,
    wait: Duration,
) -> Batch<RssCursor> {
    let (clean, bad) = cut_invalid_utf8(bytes);
    let mut items: Vec<Result<RawItem, Skip>> = vec![Err(Skip::InvalidUtf8); bad];
    let feed = match feed_rs::parser::parse(clean.as_slice()) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "a feed document that does not parse was skipped");
            items.push(Err(Skip::Malformed));
            return Batch { items, changes: vec![], cursor: cursor.clone(), wait };
        }
    };
    let seen: HashSet<&str> = cursor.seen.iter().map(String::as_str).collect();
    let mut next = cursor.clone();
    next.etag = etag;
    next.last_modified = last_modified;
    let feed_author =
        feed.authors.first().and_then(|p| p.name.clone()).or_else(|| feed.title.as_ref().map(|t| t.content.clone()));
    let mut fresh = Vec::new();
    let mut batch_ids = HashSet::new();
    for e in feed.entries.iter() {
        if seen.contains(e.id.as_str()) || !batch_ids.insert(e.id.clone()) {
            continue;
        }
        fresh.push(e);
    }
    // Feeds list newest first; the pipeline wants them in posting order.
    fresh.sort_by_key(|e| e.published.or(e.updated).map(|t| t.timestamp_millis()).unwrap_or(i64::MAX));
    for e in fresh {
        next.seen.push_back(e.id.clone());
        let title = e.title.as_ref().map(|t| t.content.trim().to_string()).unwrap_or_default();
        let body = e
            .content
            .as_ref()
            .and_then(|c| c.body.clone())
            .or_else(|| e.summary.as_ref().map(|s| s.content.clone()))
            .unwrap_or_default();
        let body_plain = crate::pipeline::normalise::collapse(&crate::pipeline::normalise::strip_tags(&body));
        let text = if title.is_empty() {
            body
        } else if body_plain.is_empty() || body_plain.starts_with(&crate::pipeline::normalise::collapse(&title)) {
            // Nitter repeats the post as the title; a news feed has a headline and a summary.
            if body_plain.is_empty() {
                title
            } else {
                body
            }
        } else {
            format!("{title}. {body}")
        };
        items.push(Ok(RawItem {
            external_id: e.id.clone(),
            author: e.authors.first().and_then(|p| p.name.clone()).or_else(|| feed_author.clone()),
            text: text.into_bytes(),
            url: e.links.first().map(|l| l.href.clone()),
            time_ms: e.published.or(e.updated).and_then(|t| u64::try_from(t.timestamp_millis()).ok()),
            language: feed.language.clone(),
        }));
    }
    while next.seen.len() > SEEN_CAP {
        next.seen.pop_front();
    }
    Batch { items, changes: vec![], cursor: next, wait }
}

/// Cuts out every `<item>`/`<entry>` element holding bytes that are not UTF-8; returns the rest and how many were
/// cut. Bad bytes outside any entry are replaced (U+FFFD) so the document can still be read.
pub fn cut_invalid_utf8(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut doc = bytes.to_vec();
    let mut cut = 0;
    loop {
        let bad_at = match std::str::from_utf8(&doc) {
            Ok(_) => return (doc, cut),
            Err(e) => e.valid_up_to(),
        };
        let before = &doc[..bad_at];
        let open = ["<item", "<entry"]
            .iter()
            .filter_map(|t| rfind(before, t.as_bytes()).map(|i| (i, *t)))
            .max_by_key(|(i, _)| *i);
        let span = open.and_then(|(start, tag)| {
            let close = format!("</{}>", &tag[1..]);
            find(&doc[bad_at..], close.as_bytes()).map(|j| (start, bad_at + j + close.len()))
        });
        // Only when the element opened before the bad byte is not already closed before it.
        let span = span.filter(|(start, _)| {
            let closed_before = open
                .is_some_and(|(_, tag)| find(&doc[*start..bad_at], format!("</{}>", &tag[1..]).as_bytes()).is_some());
            !closed_before
        });
        match span {
            Some((start, end)) => {
                doc.drain(start..end);
                cut += 1;
            }
            None => {
                let lossy = String::from_utf8_lossy(&doc).into_owned();
                return (lossy.into_bytes(), cut);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>@trader / Nitter</title><language>en-us</language>
<item><title>$BTC breaks out</title><dc:creator>@trader</dc:creator><description><![CDATA[<p>$BTC breaks out above the range</p>]]></description><pubDate>Tue, 01 Dec 2026 10:00:00 GMT</pubDate><guid>https://nitter.local/trader/status/2</guid><link>https://nitter.local/trader/status/2</link></item>
<item><title>ETH looks weak</title><dc:creator>@trader</dc:creator><description>ETH looks weak</description><pubDate>Tue, 01 Dec 2026 09:00:00 GMT</pubDate><guid>https://nitter.local/trader/status/1</guid><link>https://nitter.local/trader/status/1</link></item>
</channel></rss>"#;

    #[test]
    fn reads_entries_oldest_first_and_remembers_them() {
        let b = read(RSS.as_bytes(), &RssCursor::default(), Some("\"e1\"".into()), None, Duration::from_secs(60));
        let items: Vec<RawItem> = b.items.into_iter().map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].external_id, "https://nitter.local/trader/status/1");
        assert_eq!(items[1].text, b"<p>$BTC breaks out above the range</p>");
        assert_eq!(items[0].author.as_deref(), Some("@trader"));
        assert_eq!(items[0].language.as_deref(), Some("en-us"));
        assert_eq!(items[1].time_ms, Some(1_796_119_200_000));
        assert_eq!(b.cursor.etag.as_deref(), Some("\"e1\""));
        assert_eq!(b.cursor.seen.len(), 2);
        // The same document again: nothing new.
        let again = read(RSS.as_bytes(), &b.cursor, None, None, Duration::from_secs(60));
        assert!(again.items.is_empty());
    }

    #[test]
    fn malformed_documents_are_counted_once() {
        let c = RssCursor { etag: Some("old".into()), ..Default::default() };
        let b = read(b"<rss><channel><item>", &c, Some("new".into()), None, Duration::from_secs(1));
        assert_eq!(b.items, vec![Err(Skip::Malformed)]);
        assert_eq!(b.cursor, c, "the cursor does not move");
    }

    #[test]
    fn entries_with_invalid_utf8_are_cut_out() {
        let mut doc = RSS.as_bytes().to_vec();
        let at = find(&doc, b"ETH looks weak</title>").unwrap();
        doc[at + 1] = 0xff;
        let b = read(&doc, &RssCursor::default(), None, None, Duration::from_secs(1));
        assert_eq!(b.items.len(), 2);
        assert_eq!(b.items[0], Err(Skip::InvalidUtf8));
        assert!(b.items[1].as_ref().unwrap().text.starts_with(b"<p>$BTC"));
    }
}
