//! `GET /health`'s answer as a type (the server writes it, `kronos social status` reads it) and the status tables
//! `kronos social status` prints.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::{Health, State};
use crate::store::SourceRecord;

/// The monitor as a whole, as `/health` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    /// The store answers and every source is starting or up.
    Ok,
    /// The store answers and no source stopped, but some are retrying or rate limited.
    Degraded,
    /// The store does not answer or a source stopped (`503`).
    Failing,
}

/// `GET /health`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// Every source's health, by name.
    pub sources: Vec<Health>,
    pub status: Overall,
    /// Whether the store answered.
    pub store: bool,
}

impl HealthAnswer {
    /// The answer for a store that answered (`store_ok`) or not, and the sources' health.
    pub fn new(store_ok: bool, sources: Vec<Health>) -> HealthAnswer {
        let stopped = sources.iter().any(|h| h.state == State::Stopped);
        let status = if !store_ok || stopped {
            Overall::Failing
        } else if sources.iter().all(Health::up) {
            Overall::Ok
        } else {
            Overall::Degraded
        };
        HealthAnswer { sources, status, store: store_ok }
    }

    /// The answer on the wire. Through a `serde_json::Value`, whose objects keep their keys sorted: the bytes
    /// `/health` has always sent (every object's keys in alphabetical order).
    pub fn to_wire(&self) -> serde_json::Value {
        // A struct of strings, integers, booleans and options: serialising it cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// An answer from `/health` that is not a [`HealthAnswer`].
#[derive(Debug, thiserror::Error)]
#[error("/health answered an unexpected {}: {detail}", if field == "." { "body".to_string() } else { format!("field {field}") })]
pub struct HealthAnswerError {
    /// The field, as a path (`sources[0].state`); `.` for the whole answer.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// Reads `/health`'s answer; an error names the field.
pub fn parse_health(body: &[u8]) -> Result<HealthAnswer, HealthAnswerError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let answer = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| HealthAnswerError { field: e.path().to_string(), detail: e.inner().to_string() })?;
    de.end().map_err(|e| HealthAnswerError { field: ".".into(), detail: e.to_string() })?;
    Ok(answer)
}

/// Asks the monitor listening on `listen` for its health: `None` when nothing answers within 3 s;
/// an error when the answer is not a [`HealthAnswer`].
pub async fn fetch_health(listen: SocketAddr) -> anyhow::Result<Option<HealthAnswer>> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
    let answer = match client.get(format!("http://{listen}/health")).send().await {
        Ok(a) => a,
        Err(_) => return Ok(None),
    };
    let body = answer.bytes().await.map_err(|e| anyhow::anyhow!("reading /health: {e}"))?;
    Ok(Some(parse_health(&body)?))
}

fn when(ms: Option<u64>) -> String {
    ms.map(crate::utc).unwrap_or_else(|| "-".into())
}

/// What the store holds per source, one line each under a header.
pub fn render_sources(records: &[SourceRecord]) -> String {
    let mut out = format!("{:<16} {:>8} {:<24} {:<24} skipped\n", "source", "items", "last item", "cursor saved");
    for r in records {
        let skips: Vec<String> = r.skips.iter().map(|(k, n)| format!("{k}={n}")).collect();
        out.push_str(&format!(
            "{:<16} {:>8} {:<24} {:<24} {}\n",
            r.source,
            r.items,
            when(r.last_item_ms),
            when(r.cursor_updated_ms),
            if skips.is_empty() { "-".into() } else { skips.join(" ") }
        ));
    }
    out
}

/// The monitor's health (what the monitor on `listen` answered, `None`: nothing), after a blank line.
pub fn render_health(listen: SocketAddr, answer: Option<&HealthAnswer>) -> String {
    let Some(a) = answer else {
        return format!("\nno monitor answers at {listen} (not running?)\n");
    };
    let mut out = format!("\nmonitor at {listen}: {}\n", overall(a.status));
    for s in &a.sources {
        out.push_str(&format!(
            "  {:<16} {:<12} accepted {} skipped {} {}\n",
            s.name,
            state(s.state),
            s.accepted,
            s.skipped,
            s.last_error.as_deref().unwrap_or("")
        ));
    }
    out
}

fn overall(o: Overall) -> &'static str {
    match o {
        Overall::Ok => "ok",
        Overall::Degraded => "degraded",
        Overall::Failing => "failing",
    }
}

fn state(s: State) -> &'static str {
    match s {
        State::Starting => "starting",
        State::Ok => "ok",
        State::Retrying => "retrying",
        State::RateLimited => "rate_limited",
        State::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, kind: &str, state: State, last_ok_ms: Option<u64>, error: Option<&str>) -> Health {
        Health {
            name: name.into(),
            kind: kind.into(),
            state,
            last_ok_ms,
            last_error: error.map(str::to_string),
            consecutive_failures: u32::from(error.is_some()),
            accepted: 4,
            skipped: 2,
        }
    }

    fn addr(a: &str) -> SocketAddr {
        a.parse().unwrap()
    }

    fn answer() -> HealthAnswer {
        HealthAnswer::new(
            true,
            vec![
                Health {
                    accepted: 0,
                    skipped: 0,
                    ..source(
                        "keeper",
                        "keeper",
                        State::Retrying,
                        None,
                        Some("unreachable: IO error: Connection refused (os error 111)"),
                    )
                },
                source("x-search", "http_json", State::Ok, Some(1796165348663), None),
            ],
        )
    }

    /// The bytes `/health` sent before the answer was a type (taken from a running monitor on the example
    /// configuration, two of its sources).
    const GOLDEN: &str = r#"{"sources":[{"accepted":0,"consecutive_failures":1,"kind":"keeper","last_error":"unreachable: IO error: Connection refused (os error 111)","last_ok_ms":null,"name":"keeper","skipped":0,"state":"retrying"},{"accepted":4,"consecutive_failures":0,"kind":"http_json","last_error":null,"last_ok_ms":1796165348663,"name":"x-search","skipped":2,"state":"ok"}],"status":"degraded","store":true}"#;

    #[test]
    fn the_wire_bytes_are_unchanged_and_read_back() {
        assert_eq!(serde_json::to_string(&answer().to_wire()).unwrap(), GOLDEN);
        assert_eq!(parse_health(GOLDEN.as_bytes()).unwrap(), answer());
    }

    #[test]
    fn overall_status() {
        let up = |s| source("a", "rss", s, None, None);
        assert_eq!(HealthAnswer::new(true, vec![]).status, Overall::Ok);
        assert_eq!(HealthAnswer::new(true, vec![up(State::Starting), up(State::Ok)]).status, Overall::Ok);
        assert_eq!(HealthAnswer::new(true, vec![up(State::Ok), up(State::RateLimited)]).status, Overall::Degraded);
        assert_eq!(HealthAnswer::new(true, vec![up(State::Retrying), up(State::Stopped)]).status, Overall::Failing);
        assert_eq!(HealthAnswer::new(false, vec![up(State::Ok)]).status, Overall::Failing);
    }

    #[test]
    fn a_bad_answer_names_the_field() {
        let bad = GOLDEN.replace(r#""state":"ok""#, r#""state":"fine""#);
        let e = parse_health(bad.as_bytes()).unwrap_err();
        assert_eq!(e.field, "sources[1].state");
        let e = parse_health(GOLDEN.replace(r#","store":true"#, "").as_bytes()).unwrap_err();
        assert_eq!(e.field, ".");
        assert!(e.detail.contains("store"), "{e}");
        assert_eq!(parse_health(b"<html>").unwrap_err().field, ".");
        assert_eq!(parse_health(format!("{GOLDEN} x").as_bytes()).unwrap_err().field, ".");
    }

    #[test]
    fn health_table() {
        let out = render_health(addr("127.0.0.1:8790"), Some(&answer()));
        assert_eq!(
            out,
            "\nmonitor at 127.0.0.1:8790: degraded\n\
             \x20 keeper           retrying     accepted 0 skipped 0 unreachable: IO error: Connection refused (os error 111)\n\
             \x20 x-search         ok           accepted 4 skipped 2 \n"
        );
        let rate = HealthAnswer::new(true, vec![source("a", "rss", State::RateLimited, None, Some("429"))]);
        assert!(render_health(addr("10.0.0.1:1"), Some(&rate))
            .contains("  a                rate_limited accepted 4 skipped 2 429\n"));
        assert_eq!(render_health(addr("10.0.0.1:1"), None), "\nno monitor answers at 10.0.0.1:1 (not running?)\n");
    }

    #[test]
    fn sources_table() {
        let rows = vec![
            SourceRecord {
                source: "news".into(),
                items: 4,
                last_item_ms: Some(1796122200000),
                cursor_updated_ms: None,
                skips: vec![],
            },
            SourceRecord {
                source: "nitter-btc".into(),
                items: 12,
                last_item_ms: None,
                cursor_updated_ms: Some(1796165348000),
                skips: vec![("duplicate_text".into(), 1), ("link_only".into(), 3)],
            },
        ];
        assert_eq!(
            render_sources(&rows),
            "source              items last item                cursor saved             skipped\n\
             news                    4 2026-12-01 10:50:00      -                        -\n\
             nitter-btc             12 -                        2026-12-01 22:49:08      duplicate_text=1 link_only=3\n"
        );
    }
}
