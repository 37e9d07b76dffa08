//! `kronos telegram run`: the Telegram control panel and alerts.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use kronos_telegram::{Config, Signals, TelegramBot};

#[derive(Debug, Subcommand)]
pub(crate) enum TelegramCommand {
    /// Run the bot (long polling or webhook, as configured) until SIGINT/SIGTERM.
    Run(TelegramArgs),
    /// Check the configuration and the token against the Bot API, then exit.
    Check(TelegramArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TelegramArgs {
    /// Bot configuration (TOML); see config/telegram.example.toml.
    #[arg(long, short)]
    pub config: PathBuf,
}

async fn build(a: &TelegramArgs) -> Result<TelegramBot> {
    TelegramBot::from_config(Config::load(&a.config)?).await
}

pub(crate) fn run(c: TelegramCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match c {
            TelegramCommand::Run(a) => {
                let bot = build(&a).await?;
                bot.run(Signals::None, crate::cmd::keeper::shutdown_signal()).await?;
                Ok(())
            }
            TelegramCommand::Check(a) => {
                let bot = build(&a).await?;
                let name = bot.check().await?;
                println!("configuration valid; the Bot API accepts the token (bot @{name})");
                Ok(())
            }
        }
    })
}
