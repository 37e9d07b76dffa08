//! The Telegram control panel and alerts for the keeper and the copy-trader (teloxide).
//!
//! - [`config`]: `[telegram]` TOML — token variable, Bot API URL, polling or webhook, allow-lists, alerts.
//! - [`commands`]: `/status` `/positions` `/balance` `/stats` `/markets` `/predict` `/alerts` `/start` `/stop`
//!   `/ratio` `/emergency` (+ `/confirm`) `/help`; control and read-only rights apart.
//! - [`backend`]: the keeper's API, the copy-trader's store and API.
//! - [`alerts`]: one line per signal, on/silent/off per category, a per-chat rate limit with summaries.
//! - [`bot`]: polling or webhook, the allow-list (deny by default), `/health` and `/metrics`.
//! - [`social`]: the social monitor's high-priority items as alerts (`[telegram.social]`), through [`alerts`]' limit.

pub mod alerts;
pub mod backend;
pub mod bot;
pub mod commands;
pub mod config;
pub mod format;
pub mod social;

pub use backend::{Backend, EmergencyOutcome, EmergencySent};
pub use bot::{Signals, TelegramBot};
pub use config::Config;
