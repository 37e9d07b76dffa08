//! The keeper assembled: store, bus, metrics, chains, one driver per market, the forecast publisher, the event
//! recorder and the API server.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result};
use kronos_common::signals::SignalKind;
use kronos_common::Bus;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::chain::ChainRuntime;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::publisher::{CandleSource, CheckpointCandles, CsvCandles, Publisher};
use crate::scheduler::{DriverShared, MarketDriver, MarketStats};
use crate::store::Store;

/// A built keeper, ready to run.
pub struct Keeper {
    pub store: Store,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    pub chains: Vec<Arc<ChainRuntime>>,
    pub stats: Vec<Arc<Mutex<MarketStats>>>,
    pub publisher: Option<Arc<Publisher>>,
    /// The Solana clusters (`[[solana]]`).
    pub solana: Vec<Arc<crate::solana::SolanaRuntime>>,
    listener: Option<tokio::net::TcpListener>,
    drivers: Vec<MarketDriver>,
    api_token: Option<kronos_common::Secret>,
    api_limits: kronos_common::http_guard::Limits,
    publish_forecasts: bool,
    /// Held until the keeper has stopped (SQLite stores).
    _sqlite_claim: Option<crate::store::SqliteClaim>,
}

/// Overrides used by the demo and the tests.
#[derive(Default, Clone)]
pub struct Overrides {
    /// Where the forecaster takes its candles from (default: the config's file, else the market's checkpoints).
    pub candles: Option<Arc<dyn CandleSource>>,
    /// Serve the API (default true).
    pub no_api: bool,
}

impl Keeper {
    /// Connects everything and checks every market before anything is sent.
    pub async fn build(cfg: &Config, signer: PrivateKeySigner, bus: Bus, ov: Overrides) -> Result<Keeper> {
        // One keeper process per SQLite file (it has no leases): a second one is refused, naming the file.
        let sqlite_claim = crate::store::claim_sqlite(&cfg.store)?;
        let store = Store::connect(&cfg.store).await?;
        let metrics = Arc::new(Metrics::default());
        let poll = Duration::from_millis(cfg.poll_ms);
        let checkpoint_candles = Arc::new(CheckpointCandles::default());
        let publisher = match &cfg.forecaster {
            Some(f) if f.enabled => {
                let model = kronos_forecast::Forecaster::load(&f.model)
                    .with_context(|| format!("forecaster.model: loading {}", f.model.display()))?
                    .with_precision(f.precision);
                let candles: Arc<dyn CandleSource> = match (&ov.candles, &f.candles) {
                    (Some(c), _) => c.clone(),
                    (None, Some(path)) => Arc::new(
                        CsvCandles::load(path).with_context(|| format!("forecaster.candles: {}", path.display()))?,
                    ),
                    (None, None) => checkpoint_candles.clone(),
                };
                Some(Arc::new(Publisher::new(
                    Arc::new(model),
                    f.samples,
                    candles,
                    store.clone(),
                    bus.clone(),
                    metrics.clone(),
                )))
            }
            _ => None,
        };
        let shared = DriverShared {
            store: store.clone(),
            bus: bus.clone(),
            metrics: metrics.clone(),
            keeper_id: cfg.keeper_id.clone(),
            publisher: publisher.clone(),
            poll,
            lease: cfg.lease.timing,
        };
        let mut chains = Vec::new();
        let mut drivers = Vec::new();
        for c in &cfg.chains {
            let rt = ChainRuntime::connect(c, signer.clone(), store.clone(), bus.clone(), poll).await?;
            if cfg.lease.shared_signer {
                rt.tx.share_nonces();
            }
            let ids: Vec<u64> = match &c.markets {
                Some(ids) => ids.clone(),
                None => {
                    let n = rt.market.marketCount().call().await.map_err(|e| {
                        anyhow::anyhow!(
                            "{}: chain.market: {}",
                            rt.name,
                            crate::scheduler::explain_market_call("marketCount", rt.cfg.market, &e)
                        )
                    })?;
                    (1..=n.to::<u64>()).collect()
                }
            };
            anyhow::ensure!(!ids.is_empty(), "{}: the market contract has no market yet", rt.name);
            for id in ids {
                let d = MarketDriver::new(rt.clone(), id, shared.clone())
                    .await?
                    .with_candle_sink(checkpoint_candles.clone());
                // Back-fill the checkpoint candles from the store (again at the start of every lease term).
                d.refill_candles().await?;
                drivers.push(d);
            }
            let balance = rt.tx.balance().await.map_err(|e| anyhow::anyhow!("{}: {e}", rt.name))?;
            if balance == U256::ZERO {
                tracing::warn!(chain = %rt.name, signer = %rt.tx.signer, "the keeper's signer has no funds on this chain");
            }
            chains.push(rt);
        }
        let mut solana = Vec::new();
        for (i, c) in cfg.solana.iter().enumerate() {
            let key = c
                .load_keypair(&|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("{}: solana[{i}]: {e}", cfg.file))?;
            let rt = crate::solana::SolanaRuntime::connect(
                c,
                key,
                store.clone(),
                bus.clone(),
                metrics.clone(),
                poll,
                (cfg.keeper_id.clone(), cfg.lease.timing),
            )
            .await?;
            // `forecasts = true` needs an enabled [forecaster] (checked with the configuration).
            if let (true, Some(p)) = (c.forecasts, &publisher) {
                rt.publish_forecasts(p.clone());
            }
            solana.push(rt);
        }
        let stats = drivers.iter().map(|d| d.stats.clone()).collect();
        let listener = if ov.no_api {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&cfg.listen)
                    .await
                    .with_context(|| format!("keeper.listen: cannot bind {}", cfg.listen))?,
            )
        };
        Ok(Keeper {
            store,
            bus,
            metrics,
            chains,
            stats,
            publisher,
            solana,
            listener,
            drivers,
            api_token: cfg.api_token.clone(),
            api_limits: cfg.api.clone(),
            publish_forecasts: cfg.publish_forecasts,
            _sqlite_claim: sqlite_claim,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        // Every signal the keeper owns is also a keeper event in the store (the copy-trader's are stored by it:
        // `store::keeps_event`).
        {
            let store = self.store.clone();
            let mut rx = self.bus.subscribe();
            let c = cancel.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = c.cancelled() => break,
                        r = rx.recv() => match r {
                            Ok(s) if !crate::store::keeps_event(&s.kind) => {}
                            Ok(s) => {
                                let chain = signal_chain(&s.kind);
                                let payload = serde_json::to_string(&*s).unwrap_or_default();
                                if let Err(e) = store.insert_event(s.at_ms as i64, chain.as_deref(), &s.kind.name(), &payload).await {
                                    tracing::warn!(error = %e, "could not store an event");
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => tracing::warn!(lost = n, "event recorder lagged"),
                            Err(_) => break,
                        }
                    }
                }
            });
        }
        if let Some(listener) = self.listener {
            let addr = listener.local_addr()?;
            let state = crate::api::ApiState::new(
                self.store.clone(),
                self.bus.clone(),
                self.metrics.clone(),
                self.chains.clone(),
                self.stats.clone(),
                self.api_token.clone(),
                self.api_limits.clone(),
            )
            .with_solana(self.solana.clone())
            .publishing_forecasts(self.publish_forecasts);
            tracing::info!(%addr, "API listening: /health /metrics /api/markets /api/rounds /api/predictions /ws");
            let c = cancel.clone();
            tasks.spawn(async move {
                if let Err(e) = crate::api::serve(listener, state, async move { c.cancelled().await }).await {
                    tracing::error!(error = %e, "API server stopped");
                }
            });
        }
        for d in self.drivers {
            let c = cancel.clone();
            tasks.spawn(async move { d.run(c).await });
        }
        for s in self.solana {
            let c = cancel.clone();
            tasks.spawn(async move { s.run(c).await });
        }
        cancel.cancelled().await;
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// The chain a signal concerns, if any.
pub fn signal_chain(k: &SignalKind) -> Option<String> {
    k.chain().map(str::to_string)
}
