//! `kronos social run|status|sources`: the social monitor (offchain/social). Thin wiring over `kronos_social`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use kronos_social::config::SourceKind;
use kronos_social::status;
use kronos_social::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum SocialCommand {
    /// Run the monitor (sources, pipeline, REST, /ws, /health, /metrics) until SIGINT/SIGTERM.
    Run(SocialArgs),
    /// What the store holds per source (items, last item, cursor, skips) and, if it runs, the monitor's health.
    Status(SocialArgs),
    /// List the configured sources.
    Sources(SocialArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SocialArgs {
    /// Monitor configuration (TOML); see config/social.example.toml.
    #[arg(long, short, default_value = "config/social.example.toml")]
    pub config: PathBuf,
}

pub(crate) fn run(c: SocialCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match c {
            SocialCommand::Run(a) => {
                let cfg = Config::load(&a.config)?;
                let running = kronos_social::runner::start(&cfg).await?;
                println!("social monitor: http://{}/api/social/items, ws://{}/ws", running.addr, running.addr);
                if let Some(f) = running.fixtures_addr {
                    println!("fixture feeds: http://{f}/");
                }
                crate::cmd::keeper::shutdown_signal().await;
                running.stop().await;
                Ok(())
            }
            SocialCommand::Status(a) => {
                let cfg = Config::load(&a.config)?;
                let store = kronos_social::Store::connect(&cfg.store).await?;
                print!("{}", status::render_sources(&store.sources().await?));
                let health = status::fetch_health(cfg.listen).await?;
                print!("{}", status::render_health(cfg.listen, health.as_ref()));
                Ok(())
            }
            SocialCommand::Sources(a) => {
                let cfg = Config::load(&a.config)?;
                println!("{:<16} {:<10} {:>6} {:<8} {:>7} where", "name", "kind", "weight", "trusted", "poll s");
                for s in &cfg.sources {
                    let (poll, url) = match &s.kind {
                        SourceKind::Rss(r) => (r.poll.as_secs().to_string(), r.url.to_string()),
                        SourceKind::HttpJson(j) => (j.poll.as_secs().to_string(), j.url.to_string()),
                        SourceKind::Keeper(k) => ("push".to_string(), k.url.to_string()),
                        SourceKind::Discord(d) => ("push".to_string(), d.api_url.to_string()),
                        SourceKind::Telegram(t) => (format!("{}", t.poll_timeout_s), t.api_url.to_string()),
                    };
                    // Without the query: it may hold an API key.
                    let url = url.split('?').next().unwrap_or("").to_string();
                    println!("{:<16} {:<10} {:>6} {:<8} {:>7} {url}", s.name, s.kind.name(), s.weight, s.trusted, poll);
                }
                Ok(())
            }
        }
    })
}
