//! `kronos exchange …`: the local exchange with a simulated lead ([`kronos_localnet::exchange`]).

use anyhow::Result;
use clap::Subcommand;
use kronos_localnet::exchange::{serve, ServeArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum ExchangeCommand {
    /// Run the local exchange with a simulated lead account trading BTCUSDT on replayed real candles (until Ctrl-C).
    Serve(ServeArgs),
}

/// Runs a parsed `kronos exchange` command.
pub(crate) fn run(c: ExchangeCommand) -> Result<()> {
    match c {
        ExchangeCommand::Serve(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(a, crate::cmd::keeper::shutdown_signal())),
    }
}
