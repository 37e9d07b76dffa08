//! Types every Kronos part shares.
//!
//! - [`catalogue`]: the chain catalogue in `config/chains.toml`, parsed and validated with errors that name the field.
//! - [`db`]: opening the SQL store (SQLite or PostgreSQL) that a part applies its migrations to.
//! - [`decimal`]: exact fixed-point decimals for prices and quantities (never `f64` for money).
//! - [`http_guard`]: the limits every HTTP/WebSocket service applies (connections, rate, body, timeouts, origin).
//! - [`secret`]: secrets that never print, and a log writer that redacts every registered secret.
//! - [`signal_ws`]: the bus served over a WebSocket, serialised once per signal, slow readers dropped.
//! - [`signals`]: the typed events every part publishes, and the in-process bus that carries them.

pub mod catalogue;
pub mod db;
pub mod decimal;
pub mod http_guard;
pub mod secret;
pub mod signal_ws;
pub mod signals;
pub mod time;

pub use catalogue::{Catalogue, CatalogueError, Chain, ChainKind, FeeModel, Feed};
pub use decimal::{Decimal, DecimalError, Rounding};
pub use secret::{Redactor, Secret};
pub use signals::{Bus, Signal, SignalKind};
