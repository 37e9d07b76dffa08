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

/// With `network = "local"`, the keys in `key_env`/`secret_env` (the configuration never lets those be a real
/// account's variables), or — both unset — the local exchange's published keys `published`. `None` off the local
/// network.
fn local_credentials(
    cfg: &Config,
    who: &str,
    key_env: &str,
    secret_env: &str,
    published: (&str, &str),
) -> Option<Result<Credentials>> {
    if !cfg.local {
        return None;
    }
    let unset = |v: &str| std::env::var(v).map(|s| s.trim().is_empty()).unwrap_or(true);
    if unset(key_env) && unset(secret_env) {
        tracing::info!("{who}: the local exchange's published keys ({key_env} and {secret_env} are not set)");
        return Some(Ok(Credentials {
            api_key: kronos_common::Secret::new(published.0.to_string()),
            api_secret: kronos_common::Secret::new(published.1.to_string()),
        }));
    }
    Some(Credentials::from_env(key_env, secret_env).map_err(|e| anyhow::anyhow!("{who}: {e}")))
}

/// The lead account's keys: from the environment; with `network = "local"` and its variables unset, the local
/// exchange's simulated lead (its keys are published, see [`crate::config::LOCAL_LEAD_API_KEY`]). Anything else
/// without keys is an error that names the variable and says how to try the copy-trader without an account.
fn lead_credentials(cfg: &Config, l: &crate::config::LeadConfig) -> Result<Credentials> {
    let published = (crate::config::LOCAL_LEAD_API_KEY, crate::config::LOCAL_LEAD_API_SECRET);
    if let Some(c) = local_credentials(cfg, "lead account", &l.api_key_env, &l.api_secret_env, published) {
        return c;
    }
    Credentials::from_env(&l.api_key_env, &l.api_secret_env).map_err(|e| {
        anyhow::anyhow!(
            "lead account: {e} (the lead's API key; a read-only key is enough). To try the copy-trader without an \
             exchange account, run `kronos exchange serve` and set network = \"local\" in {}",
            cfg.file
        )
    })
}

/// The store's record of what it was first used with (`ct_state` key).
const IDENTITY_KEY: &str = "identity";

/// What a store is for: the network (with its REST address off Binance's own networks), the mode and a fingerprint of
/// the follower's API key (never the key), as `field=value` lines.
pub(crate) fn store_identity(cfg: &Config, live: bool, follower_key: Option<&kronos_common::Secret>) -> String {
    let network = match cfg.network_name() {
        n @ ("testnet" | "mainnet") => n.to_string(),
        n => format!("{n} ({})", cfg.network.rest_url()),
    };
    let key = match follower_key {
        // An HMAC under a fixed label: the same key gives the same fingerprint, and the key cannot be read back.
        Some(k) => kronos_binance::sign("kronos-copytrade-store-identity", k.expose())[..16].to_string(),
        None => "none".to_string(),
    };
    format!("network={network}\nmode={}\nfollower key={key}", if live { "live" } else { "paper" })
}

/// What differs between a recorded identity and this run's, one `field: recorded -> now` each; empty when the same.
pub(crate) fn identity_differences(recorded: &str, now: &str) -> Vec<String> {
    let fields = |t: &str| -> Vec<(String, String)> {
        t.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (rec, cur) = (fields(recorded), fields(now));
    let mut out = Vec::new();
    for (k, v) in &cur {
        match rec.iter().find(|(rk, _)| rk == k) {
            Some((_, rv)) if rv == v => {}
            Some((_, rv)) => out.push(format!("{k}: {rv} -> {v}")),
            None => out.push(format!("{k}: (not recorded) -> {v}")),
        }
    }
    out
}

/// The store's URL as it may be shown: without a password.
fn shown_store(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Records this run's identity in a store used for the first time; refuses a store recorded for another network,
/// mode or follower key (its positions, lead, stops and switches belong to that account, and would act on this one).
async fn check_store_identity(cfg: &Config, store: &Store, identity: &str) -> Result<()> {
    match store.get_state(IDENTITY_KEY).await? {
        Some(recorded) => {
            let diff = identity_differences(&recorded, identity);
            if !diff.is_empty() {
                bail!(
                    "{}: copytrade.store: {} belongs to another account or mode ({}): its recorded positions, lead, \
                     stops and switches would act on this one. Point copytrade.store (or KRONOS_COPYTRADE_STORE) at a \
                     new store, e.g. sqlite:data/copytrade-{}-{}.sqlite; the old one is left as it is",
                    cfg.file,
                    shown_store(&cfg.store),
                    diff.join("; "),
                    cfg.network_name(),
                    if identity.contains("mode=live") { "live" } else { "paper" },
                );
            }
        }
        None => {
            if store.get_state("started").await?.is_some() {
                tracing::warn!(
                    "copy-trader: the store {} predates its identity record; recording this run's (network {})",
                    shown_store(&cfg.store),
                    cfg.network_name()
                );
            }
            store.set_state(IDENTITY_KEY, identity).await?;
        }
    }
    Ok(())
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
    let mut follower_key = None;
    let venue = if live {
        let published = (crate::config::LOCAL_FOLLOWER_API_KEY, crate::config::LOCAL_FOLLOWER_API_SECRET);
        let creds =
            match local_credentials(cfg, "live follower account", &cfg.api_key_env, &cfg.api_secret_env, published) {
                Some(c) => c?,
                None => Credentials::from_env(&cfg.api_key_env, &cfg.api_secret_env)
                    .map_err(|e| anyhow::anyhow!("live follower account: {e}"))?,
            };
        follower_key = Some(creds.api_key.clone());
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
    // Last, once everything else is known good: a store is bound to the first run that could start.
    check_store_identity(cfg, &store, &store_identity(cfg, live, follower_key.as_ref())).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_identity_names_what_differs_and_never_the_key() {
        let text = include_str!("../../../config/copytrade.example.toml");
        let local = Config::parse("ex.toml", text).unwrap();
        let main = Config::parse("ex.toml", &text.replace("network = \"local\"", "network = \"mainnet\"")).unwrap();
        let key = kronos_common::Secret::new("sk-live-0123456789");
        let paper = store_identity(&local, false, None);
        assert_eq!(paper, "network=local (http://127.0.0.1:9130)\nmode=paper\nfollower key=none");
        let live = store_identity(&main, true, Some(&key));
        assert!(!live.contains("sk-live"), "{live}");
        assert_eq!(live, store_identity(&main, true, Some(&key)), "the same key gives the same fingerprint");
        assert!(identity_differences(&live, &live).is_empty());
        let d = identity_differences(&paper, &live);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0], "network: local (http://127.0.0.1:9130) -> mainnet");
        assert_eq!(d[1], "mode: paper -> live");
        assert!(d[2].starts_with("follower key: none -> "), "{d:?}");
        let other = store_identity(&main, true, Some(&kronos_common::Secret::new("sk-live-other")));
        assert_eq!(identity_differences(&live, &other).len(), 1);
        assert_eq!(shown_store("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }
}
