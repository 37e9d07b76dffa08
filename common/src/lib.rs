//! Types every Kronos part shares.
//!
//! The light core is always compiled: [`catalogue`], [`decimal`], [`secret`] (the types and the redactor), [`signals`]
//! and [`time`]. The heavy parts are cargo features, and each dependent enables only those it uses, so a crate that
//! needs decimals and secrets (the exchange client) builds without sqlx or axum:
//!
//! | feature | module | brings in |
//! |---|---|---|
//! | `db` | `db` | sqlx |
//! | `http` | `http_guard` | axum, hyper, hyper-util, tower, prometheus-client, libc |
//! | `ws` (implies `http`) | `signal_ws` | tokio-tungstenite, futures-util |
//! | `log` | `Redactor::make_writer` | tracing-subscriber |
//!
//! - [`catalogue`]: the chain catalogue in `config/chains.toml`, parsed and validated with errors that name the field.
//! - `db` (feature `db`): opening the SQL store (SQLite or PostgreSQL) that a part applies its migrations to.
//! - [`decimal`]: exact fixed-point decimals for prices and quantities (never `f64` for money).
//! - `http_guard` (feature `http`): the limits every HTTP/WebSocket service applies (connections, rate, body, timeouts, origin).
//! - [`secret`]: secrets that never print, and (feature `log`) a log writer that redacts every registered secret.
//! - `signal_ws` (feature `ws`): the bus served over a WebSocket, serialised once per signal, slow readers dropped.
//! - [`signals`]: the typed events every part publishes, and the in-process bus that carries them.

pub mod catalogue;
#[cfg(feature = "db")]
pub mod db;
pub mod decimal;
#[cfg(feature = "http")]
pub mod http_guard;
pub mod secret;
#[cfg(feature = "ws")]
pub mod signal_ws;
pub mod signals;
pub mod time;

pub use catalogue::{Catalogue, CatalogueError, Chain, ChainKind, FeeModel, Feed};
pub use decimal::{Decimal, DecimalError, Rounding};
pub use secret::{Redactor, Secret};
pub use signals::{Bus, Signal, SignalKind};
