//! A generic HTTP JSON source for paid social APIs: one GET per poll (conditional when the API sends an ETag), the
//! array of items at a dotted path, each item's fields read by the configured dotted paths. The token comes from
//! the environment variable the config names and goes in the configured header; it is never logged.
//!
//! Per item: not an object, or no id / text string → `malformed`; with `strict`, fields outside the mapping →
//! `unknown_fields`; text that was not UTF-8 in the body → `invalid_utf8`. A body that is not JSON at all, or has
//! no array at the path, is counted once as `malformed` (the cursor does not move).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{self, Fetched};
use crate::config::{JsonConfig, JsonFields};
use crate::item::{RawItem, Skip};
use crate::source::{Batch, Source, SourceError};

/// Item ids remembered (APIs return the latest page on every poll).
pub const SEEN_CAP: usize = 5000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonCursor {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub seen: VecDeque<String>,
}

pub struct JsonSource {
    name: String,
    cfg: JsonConfig,
    client: reqwest::Client,
    headers: Vec<(String, String)>,
}

impl JsonSource {
    /// Reads the token from the environment now; a missing one is an error naming the variable.
    pub fn new(name: &str, cfg: JsonConfig) -> Result<JsonSource, String> {
        let mut headers = Vec::new();
        if let Some((header, env)) = &cfg.auth {
            let token = std::env::var(env).map_err(|_| format!("source {name}: ${env} (its API token) is not set"))?;
            kronos_common::Redactor::global().register(&token);
            let secret = kronos_common::Secret::new(token);
            headers.push((header.clone(), format!("{}{}", cfg.auth_prefix, secret.expose())));
        }
        Ok(JsonSource { name: name.to_string(), cfg, client: http::client(), headers })
    }
}

impl Source for JsonSource {
    type Cursor = JsonCursor;

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "http_json"
    }

    async fn next(&mut self, cursor: &JsonCursor) -> Result<Batch<JsonCursor>, SourceError> {
        let fetched = http::get(
            &self.client,
            &self.cfg.url,
            &self.headers,
            cursor.etag.as_deref(),
            cursor.last_modified.as_deref(),
            self.cfg.max_bytes,
        )
        .await?;
        match fetched {
            Fetched::NotModified => {
                Ok(Batch { items: vec![], changes: vec![], cursor: cursor.clone(), wait: self.cfg.poll })
            }
            Fetched::Body { bytes, etag, last_modified } => Ok(read(
                &bytes,
                &Mapping { items: &self.cfg.items, fields: &self.cfg.fields, strict: self.cfg.strict },
                cursor,
                etag,
                last_modified,
                self.cfg.poll,
            )),
        }
    }
}

/// The value at a dotted path (`a.b.0.c`; numbers index arrays).
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A time: a number (milliseconds when above 10^12, else seconds) or an RFC 3339 string.
pub fn time_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            if x < 0.0 {
                None
            } else if x >= 1e12 {
                Some(x as u64)
            } else {
                Some((x * 1000.0) as u64)
            }
        }
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .or_else(|| s.trim().parse::<f64>().ok().and_then(|x| time_ms(&serde_json::json!(x)))),
        _ => None,
    }
}

fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The top-level keys each mapped path starts with, and so the fields a strict source accepts.
fn mapped_keys(f: &JsonFields) -> HashSet<&str> {
    [Some(&f.id), Some(&f.text), f.author.as_ref(), f.url.as_ref(), f.time.as_ref(), f.language.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.split('.').next())
        .collect()
}

/// One item by the mapping.
pub fn item(v: &Value, f: &JsonFields, strict: bool, lossy: bool) -> Result<RawItem, Skip> {
    let obj = v.as_object().ok_or(Skip::Malformed)?;
    if strict {
        let known = mapped_keys(f);
        if obj.keys().any(|k| !known.contains(k.as_str())) {
            return Err(Skip::UnknownFields);
        }
    }
    let id = string(at(v, &f.id)).filter(|s| !s.is_empty()).ok_or(Skip::Malformed)?;
    let text = match at(v, &f.text) {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Skip::Malformed),
    };
    let author = f.author.as_ref().and_then(|p| string(at(v, p)));
    if lossy && (text.contains('\u{FFFD}') || author.as_deref().is_some_and(|a| a.contains('\u{FFFD}'))) {
        return Err(Skip::InvalidUtf8);
    }
    Ok(RawItem {
        external_id: id,
        author,
        text: text.into_bytes(),
        url: f.url.as_ref().and_then(|p| string(at(v, p))),
        time_ms: f.time.as_ref().and_then(|p| at(v, p)).and_then(time_ms),
        language: f.language.as_ref().and_then(|p| string(at(v, p))),
    })
}

/// How a body is read: the dotted path to its array of items, each item's field paths, and whether fields outside
/// the mapping skip an item (the source's `items`, `fields` and `strict`).
pub struct Mapping<'a> {
    pub items: &'a str,
    pub fields: &'a JsonFields,
    pub strict: bool,
}

/// Reads a fetched body against the cursor.
pub fn read(
    bytes: &[u8],
    map: &Mapping<'_>,
    cursor: &JsonCursor,
    etag: Option<String>,
    last_modified: Option<String>,
    wait: Duration,
) -> Batch<JsonCursor> {
    let malformed = || Batch { items: vec![Err(Skip::Malformed)], changes: vec![], cursor: cursor.clone(), wait };
    // Bytes that are not UTF-8 become U+FFFD; an item whose text then holds one is skipped as invalid_utf8.
    let lossy = std::str::from_utf8(bytes).is_err();
    let parsed: Result<Value, _> =
        if lossy { serde_json::from_str(&String::from_utf8_lossy(bytes)) } else { serde_json::from_slice(bytes) };
    let Ok(doc) = parsed else { return malformed() };
    let Mapping { items: items_path, fields, strict } = *map;
    let Some(Value::Array(list)) = at(&doc, items_path) else { return malformed() };
    let seen: HashSet<&str> = cursor.seen.iter().map(String::as_str).collect();
    let mut next = cursor.clone();
    next.etag = etag;
    next.last_modified = last_modified;
    let mut out = Vec::new();
    let mut batch_ids = HashSet::new();
    let mut ok = Vec::new();
    for v in list {
        match item(v, fields, strict, lossy) {
            Ok(r) => {
                if seen.contains(r.external_id.as_str()) || !batch_ids.insert(r.external_id.clone()) {
                    continue;
                }
                ok.push(r);
            }
            Err(s) => {
                // A bad item is counted once: by its id when it has one.
                let id = string(at(v, &fields.id));
                if let Some(id) = id {
                    if seen.contains(id.as_str()) || !batch_ids.insert(id.clone()) {
                        continue;
                    }
                    next.seen.push_back(id);
                }
                out.push(Err(s));
            }
        }
    }
    ok.sort_by_key(|r| r.time_ms.unwrap_or(u64::MAX));
    for r in ok {
        next.seen.push_back(r.external_id.clone());
        out.push(Ok(r));
    }
    while next.seen.len() > SEEN_CAP {
        next.seen.pop_front();
    }
    Batch { items: out, changes: vec![], cursor: next, wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping<'a>(items: &'a str, fields: &'a JsonFields, strict: bool) -> Mapping<'a> {
        Mapping { items, fields, strict }
    }

    fn fields() -> JsonFields {
        JsonFields {
            id: "id".into(),
            text: "text".into(),
            author: Some("user.name".into()),
            url: Some("url".into()),
            time: Some("created_at".into()),
            language: Some("lang".into()),
        }
    }

    #[test]
    fn paths_and_times() {
        let v = serde_json::json!({"a": {"b": [{"c": 1}]}});
        assert_eq!(at(&v, "a.b.0.c"), Some(&serde_json::json!(1)));
        assert_eq!(at(&v, "a.x"), None);
        assert_eq!(time_ms(&serde_json::json!(1_700_000_000)), Some(1_700_000_000_000));
        assert_eq!(time_ms(&serde_json::json!(1_700_000_000_123u64)), Some(1_700_000_000_123));
        assert_eq!(time_ms(&serde_json::json!("2026-12-01T10:00:00Z")), Some(1_796_119_200_000));
        assert_eq!(time_ms(&serde_json::json!("yesterday")), None);
    }

    #[test]
    fn items_mapped_bad_ones_counted_known_ones_dropped() {
        let body = br#"{"data": {"items": [
            {"id": 2, "text": "$ETH up", "user": {"name": "bob"}, "created_at": 1700000002, "lang": "en"},
            {"id": "1", "text": "$BTC up", "user": {"name": "al"}, "created_at": 1700000001, "url": "https://x/1"},
            {"id": "3"},
            {"id": "4", "text": "x", "extra": true},
            "not an object"
        ]}}"#;
        let b = read(
            body,
            &mapping("data.items", &fields(), false),
            &JsonCursor::default(),
            None,
            None,
            Duration::from_secs(1),
        );
        let oks: Vec<&RawItem> = b.items.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(oks.iter().map(|r| r.external_id.as_str()).collect::<Vec<_>>(), vec!["1", "2", "4"]);
        assert_eq!(oks[0].author.as_deref(), Some("al"));
        assert_eq!(b.items.iter().filter(|r| **r == Err(Skip::Malformed)).count(), 2);
        let strict = read(
            body,
            &mapping("data.items", &fields(), true),
            &JsonCursor::default(),
            None,
            None,
            Duration::from_secs(1),
        );
        assert_eq!(strict.items.iter().filter(|r| **r == Err(Skip::UnknownFields)).count(), 1);
        let again = read(body, &mapping("data.items", &fields(), false), &b.cursor, None, None, Duration::from_secs(1));
        assert_eq!(again.items, vec![Err(Skip::Malformed)], "only the id-less bad item comes back");
        assert!(
            read(b"{", &mapping("data.items", &fields(), false), &JsonCursor::default(), None, None, Duration::ZERO)
                .items
                == vec![Err(Skip::Malformed)]
        );
    }

    #[test]
    fn invalid_utf8_items_are_skipped_alone() {
        let mut body = br#"[{"id": "1", "text": "good"}, {"id": "2", "text": "bad XX"}]"#.to_vec();
        let i = body.windows(2).position(|w| w == b"XX").unwrap();
        body[i] = 0xff;
        let b = read(&body, &mapping("", &fields(), false), &JsonCursor::default(), None, None, Duration::ZERO);
        assert_eq!(b.items.len(), 2);
        assert_eq!(b.items[0], Err(Skip::InvalidUtf8));
        assert_eq!(b.items[1].as_ref().unwrap().text, b"good");
    }
}
