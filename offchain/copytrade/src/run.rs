//! Wiring: clients from the configuration and the environment, the live/paper decision, the HTTP service.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use kronos_binance::sim::SimAccount;
use kronos_binance::{ClientConfig, Credentials, FuturesClient};
use kronos_common::Bus;

use crate::config::{Config, Mode};
use crate::engine::{Engine, Handles, Tuning};
use crate::store::Store;
use crate::venue::Venue;

fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new(cfg.network.clone());
    c.recv_window_ms = cfg.recv_window_ms;
    c.timeout = cfg.request_timeout;
    c
}

/// The lead account's keys: from the environment; with `network = "local"` and those variables unset, the local
/// exchange's simulated lead (its keys are published, see [`crate::config::LOCAL_LEAD_API_KEY`]). Anything else
/// without keys is an error that names the variable and says how to try the copy-trader without an account.
fn lead_credentials(cfg: &Config, l: &crate::config::LeadConfig) -> Result<Credentials> {
    let unset = |v: &str| std::env::var(v).map(|s| s.trim().is_empty()).unwrap_or(true);
    if cfg.local && unset(&l.api_key_env) && unset(&l.api_secret_env) {
        tracing::info!(
            "lead account: the local exchange's simulated lead ({} and {} are not set)",
            l.api_key_env,
            l.api_secret_env
        );
        return Ok(Credentials {
            api_key: kronos_common::Secret::new(crate::config::LOCAL_LEAD_API_KEY.to_string()),
            api_secret: kronos_common::Secret::new(crate::config::LOCAL_LEAD_API_SECRET.to_string()),
        });
    }
    Credentials::from_env(&l.api_key_env, &l.api_secret_env).map_err(|e| {
        anyhow::anyhow!(
            "lead account: {e} (the lead's API key; a read-only key is enough). To try the copy-trader without an \
             exchange account, run `kronos exchange serve` and set network = \"local\" in {}",
            cfg.file
        )
    })
}

/// Builds the engine. Live trading needs `mode = "live"` in the file, `live_flag` (the `--live` switch) and the
/// follower's keys in the environment; anything less is an error that says which is missing.
pub async fn build(cfg: &Config, live_flag: bool, bus: Bus, tuning: Tuning) -> Result<(Engine, Handles)> {
    let live = match (cfg.mode, live_flag) {
        (Mode::Paper, false) => false,
        (Mode::Live, true) => true,
        (Mode::Live, false) => {
            bail!("{}: copytrade.mode is \"live\"; pass --live as well to trade with real money", cfg.file)
        }
        (Mode::Paper, true) => bail!(
            "--live was given but {} has copytrade.mode = \"paper\" (the default); set mode = \"live\" there too",
            cfg.file
        ),
    };
    let store = Store::connect(&cfg.store).await.with_context(|| format!("{}: copytrade.store", cfg.file))?;
    let venue = if live {
        let creds = Credentials::from_env(&cfg.api_key_env, &cfg.api_secret_env)
            .map_err(|e| anyhow::anyhow!("live follower account: {e}"))?;
        Venue::Live(FuturesClient::new(client_config(cfg), Some(creds))?)
    } else {
        // Paper needs only public market data.
        let prices = FuturesClient::new(client_config(cfg), None)?;
        Venue::paper(prices, SimAccount::new(&cfg.quote_asset, cfg.paper.balance, cfg.paper.taker_fee_rate))
    };
    let lead = match &cfg.lead {
        Some(l) => Some(FuturesClient::new(client_config(cfg), Some(lead_credentials(cfg, l)?))?),
        None => None,
    };
    let ai_token = match &cfg.ai {
        Some(crate::config::AiConfig { source: crate::config::SignalSource::WebSocket { token_env, .. }, .. }) => {
            let t = std::env::var(token_env).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
            let Some(t) = t else {
                bail!(
                    "{}: copytrade.ai.token_env: environment variable {token_env} is not set (the keeper's API token, \
                     keeper.api_token_env)",
                    cfg.file
                );
            };
            Some(kronos_common::Secret::new(t))
        }
        _ => None,
    };
    let control_token = match &cfg.api_token_env {
        Some(var) => {
            let t = std::env::var(var).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
            let Some(t) = t else {
                bail!(
                    "{}: copytrade.api_token_env: environment variable {var} is not set (the control API's token)",
                    cfg.file
                );
            };
            Some(kronos_common::Secret::new(t))
        }
        None => None,
    };
    let (mut engine, mut handles) = Engine::new(cfg.clone(), venue, lead, store, bus, tuning);
    engine.ai_token = ai_token;
    handles.control_token = control_token;
    Ok((engine, handles))
}

/// Serves `/health`, `/metrics`, `/api/*` and `/ws` on `listen` under the default limits
/// ([`kronos_common::http_guard::Limits::default`]); returns the bound address. A non-loopback address is refused
/// unless the handles carry a control token.
pub async fn serve(handles: Handles, listen: &str) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(handles, listen, kronos_common::http_guard::Limits::default()).await
}

/// [`serve`] under `limits`.
pub async fn serve_with(
    handles: Handles,
    listen: &str,
    limits: kronos_common::http_guard::Limits,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the copy-trader API to {listen}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && handles.control_token.is_none() {
        bail!(
            "the copy-trader API would listen on {addr}, which is not loopback, without a control token: set \
             copytrade.api_token_env, or listen on 127.0.0.1"
        );
    }
    let guard = kronos_common::http_guard::Guard::new(limits, handles.metrics.guard.clone());
    let app = crate::service::router_with(handles, &guard);
    let task = tokio::spawn(async move {
        if let Err(e) = guard.serve(listener, app, std::future::pending()).await {
            tracing::error!(error = %e, "copy-trader API stopped");
        }
    });
    Ok((addr, task))
}
