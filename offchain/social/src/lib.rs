//! The social monitor: collects chatter (RSS/Atom feeds such as a self-hosted Nitter, paid social APIs over HTTP
//! JSON, the keeper's own signals; Discord and Telegram plug in the same way), scores it and fans it out.
//!
//! # Architecture
//!
//! ```text
//!  Source ──RawItem batch + typed cursor──▶ Runner (one task per source: backoff, health, skip counts)
//!                                             │ Pipeline::process (pure, shared state behind one lock):
//!                                             │   normalise → de-duplicate → spam rules → assets → sentiment → score
//!                                             ▼
//!                                           Store::commit (one transaction: the accepted items AND the cursor)
//!                                             ▼
//!                                           Fanout (in-process Bus by default; Redis later) ──▶ WebSocket, alerts
//! ```
//!
//! - [`source::Source`] is the one trait every source implements. `next(&cursor)` returns the next [`source::Batch`]:
//!   raw items (or the reason each bad one was skipped), the cursor *after* them, and how long to wait before asking
//!   again. Polling sources (RSS, HTTP JSON) fetch once per call; pushing sources (a gateway, long polling, the
//!   keeper's `/ws`) wait inside `next` until something arrives. The cursor is the source's own serde type, saved as
//!   JSON in the store *in the same transaction* as the batch's items, so a restart neither loses (the cursor moves
//!   only with its items) nor repeats (items before the cursor are not returned again; the item id is unique too).
//!   Errors are [`source::SourceError`]: transient (backoff doubles, 1 s to 5 min), rate-limited with the server's
//!   `Retry-After`, or fatal (the source stops, its health says why).
//! - [`runner::spawn_source`] drives any `Source` (generic, no boxing) and reports its [`source::Health`] into the
//!   shared [`runner::Monitor`]. A new kind (Discord, Telegram) implements `Source`, adds a variant to
//!   [`config::SourceKind`] with a branch in [`config::parse_source`], and a line in [`runner::spawn_sources`].
//! - [`pipeline`] is pure and unit-tested: [`pipeline::Pipeline`] keeps the de-duplication window, the spam
//!   counters and the per-asset baselines; every decision is a function of its inputs and the clock passed in.
//! - [`store::Store`]: sqlx, SQLite by default (`sqlite:data/social.sqlite`), PostgreSQL by URL; tables `so_*`.
//! - [`fanout::Fanout`]: where accepted items go after they are stored. [`fanout::Bus`] (tokio broadcast) feeds the
//!   WebSocket; [`fanout::redis::RedisFanout`] implements the same trait (channels per asset and priority).
//! - [`server`]: REST (`/api/social/items`, `/api/social/assets/{asset}`), `/ws` with per-client filters, `/health`
//!   per source (its answer is [`status::HealthAnswer`]), `/metrics` (Prometheus), under the project's
//!   [`kronos_common::http_guard::Guard`].
//! - [`status`]: `/health`'s answer read back, and the tables `kronos social status` prints.

pub mod config;
pub mod fanout;
pub mod item;
pub mod metrics;
pub mod pipeline;
pub mod runner;
pub mod server;
pub mod source;
pub mod sources;
pub mod status;
pub mod store;

pub use config::Config;
pub use fanout::{Bus, Fanout};
pub use item::{Change, Item, Priority, RawItem, Skip, WsMessage};
pub use source::{Batch, Health, Source, SourceError};
pub use store::Store;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `2026-12-01 10:00:00` (UTC) for a time in ms since the epoch.
pub fn utc(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}
