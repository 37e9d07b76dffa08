//! The one trait every source implements, what it returns, and the pure backoff and health it is run under.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::item::{Change, RawItem, Skip};

/// A source of posts. See the crate docs for how the runner drives it.
///
/// Contract:
/// - `next(cursor)` returns items that come *after* `cursor` and the cursor after them; it never returns an item
///   it returned before under an older cursor that was saved (the runner saves the returned cursor together with the
///   accepted items, in one transaction, and passes the saved one back next time). After a restart the runner passes
///   the last saved cursor (or `Default` the first time).
/// - A pushing source waits inside `next` for its next message(s) (with `Batch::wait` zero); a polling one fetches
///   once and sets `Batch::wait` to its poll interval.
/// - Bad items are returned as `Err(Skip)` (counted per reason), never an error of the whole call.
pub trait Source: Send + 'static {
    /// What the source needs to resume exactly where it stopped (an ETag and the ids seen, an update offset, a
    /// gateway session and sequence). Saved as JSON.
    type Cursor: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static;

    /// The configured name (unique among sources; names the cursor, the health and the metrics).
    fn name(&self) -> &str;

    /// The kind (`rss`, `http_json`, `keeper`, `discord`, `telegram`).
    fn kind(&self) -> &'static str;

    /// The next batch after `cursor`.
    fn next(&mut self, cursor: &Self::Cursor) -> impl Future<Output = Result<Batch<Self::Cursor>, SourceError>> + Send;
}

/// What one call of [`Source::next`] produced.
#[derive(Debug, Clone)]
pub struct Batch<C> {
    /// Items in the order the source published them (oldest first), or why each could not be read.
    pub items: Vec<Result<RawItem, Skip>>,
    /// Edits and deletions of posts handed in before (applied after `items`, in order; saved with them).
    pub changes: Vec<Change>,
    /// The cursor after these items (saved with them).
    pub cursor: C,
    /// How long to wait before the next call (zero for pushing sources).
    pub wait: Duration,
}

/// Why a call of [`Source::next`] failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Try again after the backoff (network errors, 5xx, a feed that is not XML at all).
    #[error("{0}")]
    Transient(String),
    /// The server asked to wait (`429` / `503` with `Retry-After`); waits at least that long.
    #[error("rate limited for {retry_after:?}: {message}")]
    RateLimited { retry_after: Duration, message: String },
    /// Nothing will change by retrying (a missing secret, `401`/`403`/`404`): the source stops.
    #[error("{0}")]
    Fatal(String),
}

/// Exponential backoff: 1 s doubling to 5 min after consecutive failures, reset by a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, failures: 0 }
    }

    /// Records a failure and returns how long to wait: `initial * 2^(failures-1)` capped at `max`, and never less
    /// than a server's `Retry-After`.
    pub fn fail(&mut self, err: &SourceError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let wait = self.initial.saturating_mul(1u32 << exp).min(self.max);
        match err {
            SourceError::RateLimited { retry_after, .. } => wait.max(*retry_after),
            _ => wait,
        }
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A source's state as `/health` and `kronos social status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not called yet.
    Starting,
    /// The last call succeeded.
    Ok,
    /// Failing; retrying after a backoff.
    Retrying,
    /// Rate limited by the server.
    RateLimited,
    /// Stopped on a fatal error.
    Stopped,
}

/// One source's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub name: String,
    pub kind: String,
    pub state: State,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Items accepted since the start.
    pub accepted: u64,
    /// Items skipped since the start (all reasons).
    pub skipped: u64,
}

impl Health {
    pub fn new(name: &str, kind: &str) -> Health {
        Health {
            name: name.to_string(),
            kind: kind.to_string(),
            state: State::Starting,
            last_ok_ms: None,
            last_error: None,
            consecutive_failures: 0,
            accepted: 0,
            skipped: 0,
        }
    }

    /// Whether `/health` counts this source as up.
    pub fn up(&self) -> bool {
        matches!(self.state, State::Starting | State::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let e = SourceError::Transient("x".into());
        let waits: Vec<u64> = (0..5).map(|_| b.fail(&e).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
        b.succeed();
        assert_eq!(b.fail(&e), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut b = Backoff::default();
        let e = SourceError::RateLimited { retry_after: Duration::from_secs(30), message: "429".into() };
        assert_eq!(b.fail(&e), Duration::from_secs(30));
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(b.fail(&e), Duration::from_secs(60));
    }
}
