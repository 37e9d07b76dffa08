//! `kronos run`, `kronos status`, `kronos markets`, `kronos deploy`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kronos_common::{Bus, Secret};
use tokio_util::sync::CancellationToken;

use kronos_keeper::config::Config;
use kronos_keeper::engine::{Keeper, Overrides};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Keeper configuration (TOML); see config/keeper.example.toml.
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Keeper configuration (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Rounds to show per market.
    #[arg(long, default_value_t = 10)]
    pub rounds: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// Catalogue key of the chain to deploy on.
    #[arg(long)]
    pub chain: String,
    /// RPC URL of the chain (optional with --dry-run).
    #[arg(long, required_unless_present = "dry_run")]
    pub rpc: Option<String>,
    /// Owner of the contracts (default: the deployer). Use the same on every chain for the same addresses.
    #[arg(long)]
    pub owner: Option<String>,
    /// Deployment policy.
    #[arg(long, default_value = "config/deploy.toml")]
    pub policy: PathBuf,
    /// Deploy mock feeds (a local development chain; refused on any other node, since anyone can set a mock's
    /// price). Chosen by itself on an anvil, Hardhat or Ganache node where the catalogue's feeds hold no code.
    #[arg(long)]
    pub local: bool,
    /// Where the deployment is written, under contracts-evm/deployments (default `<chain>.json`, on a local chain
    /// `local-<chain>.json`, next to it the keeper configuration `local-<chain>.keeper.toml`).
    #[arg(long)]
    pub out: Option<String>,
    /// Print the plan and stop (no key needed).
    #[arg(long)]
    pub dry_run: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// `kronos run`: the keeper daemon until SIGINT/SIGTERM.
pub(crate) fn run(a: RunArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    let signer = evm_signer(&cfg, &|k| std::env::var(k).ok())?;
    runtime()?.block_on(async move {
        if cfg.chains.is_empty() {
            tracing::info!(config = %a.config.display(), solana = cfg.solana.len(), "starting the keeper (no EVM chain: no EVM signer)");
        } else {
            tracing::info!(config = %a.config.display(), chains = cfg.chains.len(), signer = %signer.address(), "starting the keeper");
        }
        let keeper = Keeper::build(&cfg, signer, Bus::default(), Overrides::default()).await?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping: finishing in-flight work");
            c.cancel();
        });
        keeper.run(cancel).await
    })
}

/// The EVM signer `kronos run` drives its `[[chain]]` sections with. A keeper with none (only `[[solana]]`, whose
/// signer is its own `key_file` or `KRONOS_SOLANA_KEY`) signs nothing on an EVM chain, so no EVM key is asked for:
/// it gets a throwaway one that never signs.
fn evm_signer(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<alloy::signers::local::PrivateKeySigner> {
    if cfg.chains.is_empty() {
        return Ok(alloy::signers::local::PrivateKeySigner::random());
    }
    Ok(cfg.load_signer(env)?)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `kronos status`: what the store recorded, and each chain's head ([`kronos_keeper::status::Status`]).
pub(crate) fn status(a: StatusArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    runtime()?.block_on(async move {
        let s = kronos_keeper::status::Status::collect(&cfg, a.rounds).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s.json()?)?);
        } else {
            print!("{}", s.text());
        }
        Ok(())
    })
}

/// `kronos markets`: the markets of every configured chain, read from the contracts.
pub(crate) fn markets(a: RunArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    runtime()?.block_on(kronos_keeper::status::markets(&cfg, &mut std::io::stdout()))
}

/// `kronos deploy`: [`kronos_localnet::deploy::deploy`] with the deployer's key from `KRONOS_DEPLOYER_KEY`.
pub(crate) fn deploy(a: DeployArgs) -> Result<()> {
    let key = std::env::var("KRONOS_DEPLOYER_KEY").ok().map(Secret::new);
    let req = kronos_localnet::deploy::DeployRequest {
        chain: a.chain,
        rpc: a.rpc,
        owner: a.owner,
        policy: a.policy,
        local: a.local,
        out: a.out,
        dry_run: a.dry_run,
    };
    runtime()?.block_on(kronos_localnet::deploy::deploy(&req, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kronos-market program id (`programs-solana`'s `declare_id!`).
    const PROGRAM: &str = "8p8BNBjueeyCJ2QZgeWGh67FujB5sziemG2NpV2SYxA9";

    fn config(chain: &str) -> Config {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let text = format!(
            "[keeper]\ncatalogue = \"{root}/config/chains.toml\"\nstore = \"sqlite::memory:\"\nsigner = {{ env = \"KRONOS_TEST_NO_SUCH_KEY\" }}\n\n\
             [[solana]]\nname = \"solana\"\nrpc = [\"http://127.0.0.1:8899\"]\nprogram = \"{PROGRAM}\"\nlocal = true\n{chain}"
        );
        Config::parse(&text, "(test)", &|_| None).unwrap()
    }

    /// Issue 15: `kronos run` with only `[[solana]]` sections asked for the EVM signer's variable all the same.
    #[test]
    fn a_solana_only_keeper_needs_no_evm_signer_and_an_evm_one_still_does() {
        assert!(evm_signer(&config(""), &|_| None).is_ok());
        let evm = "\n[[chain]]\nname = \"base\"\nrpc = [\"http://127.0.0.1:8545\"]\nmarket = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n";
        let e = evm_signer(&config(evm), &|_| None).unwrap_err().to_string();
        assert!(e.contains("keeper.signer.env") && e.contains("KRONOS_TEST_NO_SUCH_KEY"), "{e}");
    }
}
