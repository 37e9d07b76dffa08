//! `kronos web`: serves the dApp alone, in front of a keeper's API ([`kronos_keeper::dapp`]: the page, the API
//! forwarding and the `/ws` relay).

use std::net::SocketAddr;

use anyhow::Result;
use clap::Args;
use kronos_keeper::dapp::{Options, Standalone};

#[derive(Debug, Args)]
pub(crate) struct WebArgs {
    /// The keeper's API (`http://host:port`, as `kronos run` listens).
    #[arg(long)]
    pub api: url::Url,
    /// Where to serve the page.
    #[arg(long, default_value = "127.0.0.1:9480")]
    pub listen: SocketAddr,
    /// Browser origins the page is opened from (`https://dapp.example.com`), allowed to open its `/ws`; by default
    /// `http://<listen>` (and `http://localhost:<port>` on a loopback address).
    #[arg(long = "origin")]
    pub origins: Vec<String>,
    /// The market contract expected on a chain, `CHAIN_ID=ADDRESS` (from the deployment you trust), once per chain:
    /// the keeper's `/api/chains` is refused when it names another, and chains without one are shown as unverified.
    #[arg(long = "market", value_parser = kronos_keeper::dapp::parse_pin)]
    pub pins: Vec<kronos_keeper::dapp::Pin>,
}

/// Runs `kronos web` until SIGINT/SIGTERM.
pub(crate) fn run(a: WebArgs) -> Result<()> {
    let api = a.api.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = Standalone::bind(Options {
            api: a.api,
            listen: a.listen,
            origins: a.origins,
            pins: a.pins.into_iter().collect(),
        })
        .await?;
        println!("dApp: http://{}/ (keeper API {api})", server.local_addr()?);
        server.serve(crate::cmd::keeper::shutdown_signal()).await
    })
}
