//! The copy-trader: follows a lead Binance USDⓈ-M Futures account, or the forecaster's signals, with risk limits.
//! Paper by default.
//!
//! - [`config`]: `[copytrade]` TOML, validated with errors that name the field.
//! - [`control`]: the one control path (copy-trading on/off, ratio, emergency stop, resume): an append-only log of
//!   commands, folded; the only reader and writer of control state.
//! - [`engine`]: the follower's executor (venue calls, store writes, status) around the decisions of `decide`.
//! - `decide`: the decisions, pure and unit-tested: targets and their orders, stops, the emergency stop, orders of
//!   unknown fate, the switches, AI targets.
//! - [`lead`]: lead position changes (open, increase, reduce, close, flip) and when a symbol is followed.
//! - [`sizing`]: ratio mirroring, fractional Kelly for AI signals, caps.
//! - [`risk`]: the persisted emergency stop, daily loss limit and drawdown cool-down.
//! - [`venue`]: the follower's account, live or paper (same code path).
//! - [`ai`]: forecast signals from the bus or the keeper's WebSocket.
//! - [`store`], [`report`]: the sqlx record and the status/stats views.
//! - [`service`], [`metrics`]: `/health`, `/metrics`, `/api/*`.

pub mod ai;
pub mod ai_gate;
pub mod config;
pub mod control;
pub(crate) mod decide;
pub mod engine;
pub mod lead;
pub mod metrics;
pub mod report;
pub mod risk;
pub mod run;
pub mod service;
pub mod sizing;
pub mod store;
pub mod venue;

pub use config::{Config, Mode};
pub use control::{Control, ControlCommand};
pub use engine::{Engine, Handles, Status, Tuning};
pub use store::Store;
