//! Command-line interface: `kronos <command>`. Each command's `--help` says what it does and what it needs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// Kronos: self-running prediction markets on Chainlink prices, an AI forecaster with an on-chain track record,
/// and a copy-trader.
#[derive(Debug, Parser)]
#[command(name = "kronos", version, propagate_version = true, arg_required_else_help = true)]
pub(crate) struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate and print the chain catalogue (config/chains.toml).
    Catalogue(CatalogueArgs),
    /// The forecaster: train, forecast, evaluate.
    #[command(subcommand)]
    Forecast(crate::cmd::forecast::ForecastCommand),
    /// The local demo: every EVM chain of the catalogue on anvil, real candles, bettors, the keeper and the forecaster.
    Demo(kronos_localnet::demo::DemoArgs),
    /// Run the keeper daemon on the configured chains (until SIGINT/SIGTERM).
    Run(crate::cmd::keeper::RunArgs),
    /// Show what the keeper recorded: rounds, transactions, the forecaster's track record.
    Status(crate::cmd::keeper::StatusArgs),
    /// List the markets of every configured chain, read from the contracts.
    Markets(crate::cmd::keeper::RunArgs),
    /// Deploy the contracts on one chain (same addresses everywhere; key from KRONOS_DEPLOYER_KEY).
    Deploy(crate::cmd::keeper::DeployArgs),
    /// The Binance USDⓈ-M Futures copy-trader: run, status, stats, emergency stop.
    #[command(subcommand)]
    Copytrade(crate::cmd::copytrade::CopytradeCommand),
    /// The local exchange (Binance USDⓈ-M Futures wire format) with a simulated lead, to try the copy-trader offline.
    #[command(subcommand)]
    Exchange(crate::cmd::exchange::ExchangeCommand),
    /// The Telegram control panel and alerts.
    #[command(subcommand)]
    Telegram(crate::cmd::telegram::TelegramCommand),
    /// The social monitor: feeds, paid social APIs and the keeper's signals, scored and fanned out.
    #[command(subcommand)]
    Social(crate::cmd::social::SocialCommand),
    /// Benchmark the keeper: many rounds across every local chain (settlement delay, misses, CPU per round; with
    /// --api-load under API load); `bench api` and `bench ws` load its HTTP API and WebSocket; `bench soak` runs
    /// several keepers on one PostgreSQL and kills the leader at a fixed period.
    Bench(kronos_localnet::bench::BenchArgs),
    /// Serve the dApp alone in front of a keeper's API (`--api http://host:port`); `kronos run` serves it too.
    Web(crate::cmd::web::WebArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CatalogueArgs {
    /// The catalogue file.
    #[arg(long, default_value = kronos_common::catalogue::DEFAULT_PATH)]
    pub file: PathBuf,
    /// Print the validated catalogue as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Catalogue(a) => catalogue(a),
        Command::Forecast(c) => crate::cmd::forecast::run(c),
        Command::Demo(a) => runtime()?.block_on(kronos_localnet::demo::run(a)),
        Command::Run(a) => crate::cmd::keeper::run(a),
        Command::Status(a) => crate::cmd::keeper::status(a),
        Command::Markets(a) => crate::cmd::keeper::markets(a),
        Command::Deploy(a) => crate::cmd::keeper::deploy(a),
        Command::Bench(a) => kronos_localnet::bench::run(a),
        Command::Copytrade(c) => crate::cmd::copytrade::run(c),
        Command::Telegram(c) => crate::cmd::telegram::run(c),
        Command::Social(c) => crate::cmd::social::run(c),
        Command::Exchange(c) => crate::cmd::exchange::run(c),
        Command::Web(a) => crate::cmd::web::run(a),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn catalogue(a: CatalogueArgs) -> Result<()> {
    let cat = kronos_common::Catalogue::load(&a.file)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&cat).context("serialising the catalogue")?);
        return Ok(());
    }
    print!("{}", cat.render_table());
    Ok(())
}
