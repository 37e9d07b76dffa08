//! Solana: the keeper drives the kronos-market Anchor program (`programs-solana/`) through the nonblocking
//! `solana_client` `RpcClient`, with the program crate's own anchor-lang types for instructions and accounts.
//!
//! - [`config`]: the `[[solana]]` sections.
//! - [`rules`]: the pure decisions (what a round needs next, compute units and price, the send loop's next step,
//!   the program's error codes), unit-tested.
//! - [`client`]: `RpcClient`s over the configured URLs with failover.
//! - [`driver`]: per market, start / lock / settle at the right times; the sender (simulate, price, send with
//!   `maxRetries = 0`, re-broadcast, re-sign after expiry), the store rows, signals and health.
//! - [`forecast`]: the forecaster's commit and reveal on the program's registry (`forecasts = true`).

pub mod client;
pub mod config;
pub mod driver;
pub mod forecast;
pub mod report;
pub mod rules;
#[cfg(test)]
mod testing;

pub use config::SolanaConfig;
pub use driver::SolanaRuntime;
