//! Publishing the forecaster's predictions: before each round locks, P(up) over the round's lock→close move is
//! computed from recent candles and committed to the PredictionRegistry; once the round's outcome is final it is
//! revealed and scored on-chain; the track record (on-chain and our own) goes to the store and the bus.
//!
//! The salt of a commitment is written to the store before the commit is sent, so a crash never loses the means
//! to reveal. Forecasts run on a blocking thread so the async runtime keeps its pace.

use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::{keccak256, Address, FixedBytes, U256};
use alloy::sol_types::{SolCall, SolEventInterface, SolValue};
use anyhow::{Context, Result};
use kronos_common::signals::{Outcome, SignalKind};
use kronos_common::Bus;
use kronos_contracts::registry::PredictionRegistry::{self, PredictionRegistryEvents};
use kronos_forecast::{Candle, ForecastOptions, Forecaster};
use parking_lot::Mutex;
use rand::RngCore;

use crate::commit_reveal::{self as decide, CommitStep, SendStep, Stored};
use crate::market::MarketCtx;
use crate::metrics::{MarketLabel, Metrics};
use crate::store::{PredictionRow, Reveal, Store, TrackRecordRow};

/// Candles the forecaster may see at a time (completed candles only).
pub trait CandleSource: Send + Sync {
    /// Completed candles of `chain`/`market` up to time `t` (chain time), oldest first, at most `max`.
    fn candles_until(&self, chain: &str, market: u64, t: u64, max: usize) -> Vec<Candle>;

    /// A price `chain`/`market` recorded at time `t` (a checkpoint): kept by a source built from the markets' own
    /// prices ([`CheckpointCandles`]), ignored by one that has its own candles (a file), so each market has one
    /// timeline. The Solana driver feeds its rounds' lock and close prices through here (issue 15).
    fn record_checkpoint(&self, _chain: &str, _market: u64, _t: u64, _price: f64) {}
}

/// Candles from a CSV file, by their own timestamps (a candle is complete once `timestamp + step <= t`).
pub struct CsvCandles {
    candles: Vec<Candle>,
    step: i64,
}

impl CsvCandles {
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let candles = kronos_forecast::load_csv(path)?;
        let step = candles.windows(2).last().map(|w| w[1].timestamp - w[0].timestamp).unwrap_or(3600).max(1);
        Ok(CsvCandles { candles, step })
    }
}

impl CandleSource for CsvCandles {
    fn candles_until(&self, _chain: &str, _market: u64, t: u64, max: usize) -> Vec<Candle> {
        let n = self.candles.partition_point(|c| c.timestamp + self.step <= t as i64);
        self.candles[n.saturating_sub(max)..n].to_vec()
    }
}

/// Candles built from the market's own checkpoints: candle `j` spans `[T(j), T(j+1))` with the recorded prices at
/// both ends as open and close (volume unknown: 0). Drivers append as checkpoints are recorded; this is the default
/// source when no candle file is configured.
/// (chain, market) → (checkpoint index, price), in order.
type Series = HashMap<(String, u64), Vec<(u64, f64)>>;

#[derive(Default)]
pub struct CheckpointCandles {
    series: Mutex<Series>,
}

impl CheckpointCandles {
    /// Records the price of checkpoint `k` at time `t` (duplicates ignored, order kept).
    pub fn record(&self, chain: &str, market: u64, t: u64, price: f64) {
        let mut s = self.series.lock();
        let v = s.entry((chain.to_string(), market)).or_default();
        if v.last().map(|(lt, _)| *lt < t).unwrap_or(true) {
            v.push((t, price));
        } else if let Err(pos) = v.binary_search_by_key(&t, |x| x.0) {
            v.insert(pos, (t, price));
        }
    }
}

impl CandleSource for CheckpointCandles {
    fn record_checkpoint(&self, chain: &str, market: u64, t: u64, price: f64) {
        self.record(chain, market, t, price);
    }

    fn candles_until(&self, chain: &str, market: u64, t: u64, max: usize) -> Vec<Candle> {
        let s = self.series.lock();
        let Some(v) = s.get(&(chain.to_string(), market)) else { return Vec::new() };
        let n = v.partition_point(|x| x.0 <= t);
        let pts = &v[..n];
        let out: Vec<Candle> = pts
            .windows(2)
            .map(|w| Candle {
                timestamp: w[0].0 as i64,
                open: w[0].1,
                high: w[0].1.max(w[1].1),
                low: w[0].1.min(w[1].1),
                close: w[1].1,
                volume: 0.0,
                amount: 0.0,
            })
            .collect();
        out[out.len().saturating_sub(max)..].to_vec()
    }
}

/// The probability published for a round, with how it was made.
#[derive(Debug, Clone)]
pub struct Published {
    pub p_up_raw: f64,
    pub p_up: f64,
    pub bps: u16,
}

/// What a commitment seals: the fields `PredictionRegistry.commitmentHash` hashes, in the contract's order.
#[derive(Debug, Clone, Copy)]
pub struct Commitment {
    pub chain_id: u64,
    pub registry: Address,
    pub publisher: Address,
    pub market: u64,
    pub epoch: u64,
    pub up: bool,
    pub bps: u16,
    pub salt: FixedBytes<32>,
}

impl Commitment {
    /// The commitment hash, exactly as `PredictionRegistry.commitmentHash` computes it.
    pub fn hash(&self) -> FixedBytes<32> {
        let Commitment { chain_id, registry, publisher, market, epoch, up, bps, salt } = *self;
        keccak256(
            (U256::from(chain_id), registry, publisher, U256::from(market), U256::from(epoch), up, bps, salt)
                .abi_encode(),
        )
    }
}

/// The publisher.
pub struct Publisher {
    forecaster: Arc<Forecaster>,
    samples: usize,
    candles: Arc<dyn CandleSource>,
    store: Store,
    bus: Bus,
    metrics: Arc<Metrics>,
    pub last: Mutex<HashMap<(String, u64), Published>>,
    warned: Mutex<HashMap<(String, u64), bool>>,
}

impl Publisher {
    pub fn new(
        forecaster: Arc<Forecaster>,
        samples: usize,
        candles: Arc<dyn CandleSource>,
        store: Store,
        bus: Bus,
        metrics: Arc<Metrics>,
    ) -> Self {
        Publisher {
            forecaster,
            samples,
            candles,
            store,
            bus,
            metrics,
            last: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// Called by the market driver in each pass.
    pub(crate) async fn tick(&self, d: &MarketCtx<'_>, epoch: u64, now: u64) -> Result<()> {
        let Some(registry) = &d.chain.registry else { return Ok(()) };
        let registry_addr = *registry.address();
        self.commit(d, registry_addr, epoch, now).await?;
        self.reveal_due(d, registry_addr).await
    }

    /// The model's name, as the `Forecast` signal carries it.
    pub(crate) fn model(&self) -> &str {
        &self.forecaster.meta.name
    }

    /// Gives the candle source a price `chain`/`market` recorded at `t` (see [`CandleSource::record_checkpoint`]).
    pub(crate) fn record_checkpoint(&self, chain: &str, market: u64, t: u64, price: f64) {
        self.candles.record_checkpoint(chain, market, t, price);
    }

    /// The most candles the model reads.
    pub(crate) fn context(&self) -> usize {
        self.forecaster.meta.max_context
    }

    /// P(up) for `market`'s round `epoch` from the candles completed by chain time `now` (`None`: too few yet).
    /// Also used by the Solana publisher (`solana::forecast`), so both paths forecast alike.
    pub(crate) async fn forecast(&self, chain: &str, market: u64, now: u64, epoch: u64) -> Result<Option<Published>> {
        let ctx = self.forecaster.meta.max_context;
        let candles = self.candles.candles_until(chain, market, now, ctx);
        if candles.len() < 32 {
            let mut w = self.warned.lock();
            if let std::collections::hash_map::Entry::Vacant(e) = w.entry((chain.to_string(), market)) {
                e.insert(true);
                tracing::info!(chain, market, have = candles.len(), "not enough candles to forecast yet (need 32)");
            }
            return Ok(None);
        }
        let f = self.forecaster.clone();
        let samples = self.samples;
        let seed = epoch ^ (market << 32);
        let paths = tokio::task::spawn_blocking(move || {
            f.forecast(&candles, &ForecastOptions { horizon: 2, samples, seed, ..Default::default() }).map(|r| r.paths)
        })
        .await??;
        let p_up_raw = kronos_forecast::forecast::p_next_move(&paths);
        let cal = self.forecaster.meta.calibration_for_next_move();
        let p_up = cal.apply(p_up_raw).clamp(0.0, 1.0);
        let bps = decide::bps(p_up);
        Ok(Some(Published { p_up_raw, p_up, bps }))
    }

    async fn commit(&self, d: &MarketCtx<'_>, registry: Address, epoch: u64, now: u64) -> Result<()> {
        let chain = d.chain.name.clone();
        let i = d.info;
        let publisher = d.chain.tx.signer;
        // Leave a fifth of the round for the forecast and for the commit to be mined.
        let open = decide::commit_open(i, epoch, now, decide::forecast_margin(i));
        let existing = match open {
            true => self.store.prediction(&chain, i.id as i64, epoch as i64, &publisher.to_string()).await?,
            false => None,
        };
        let stored = match &existing {
            None => Stored::Nothing,
            Some(r) if r.commit_tx.is_some() => Stored::Committed,
            Some(_) => Stored::Uncommitted,
        };
        let row = match (decide::commit_step(open, stored), existing) {
            (CommitStep::Closed | CommitStep::Done, _) => return Ok(()),
            (CommitStep::CommitStored, Some(r)) => r,
            (CommitStep::CommitStored | CommitStep::Forecast, _) => {
                let Some(p) = self.forecast(&chain, i.id, now, epoch).await? else { return Ok(()) };
                let mut salt = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut salt);
                let salt = FixedBytes::from(salt);
                let up = decide::direction_up(p.bps);
                let h = Commitment {
                    chain_id: d.chain.tx.chain_id,
                    registry,
                    publisher,
                    market: i.id,
                    epoch,
                    up,
                    bps: p.bps,
                    salt,
                }
                .hash();
                let row = PredictionRow {
                    chain: chain.clone(),
                    market_id: i.id as i64,
                    epoch: epoch as i64,
                    publisher: publisher.to_string(),
                    p_up_bps: p.bps as i64,
                    up,
                    salt: salt.to_string(),
                    commitment: h.to_string(),
                    commit_tx: None,
                    reveal_tx: None,
                    outcome: None,
                    hit: None,
                    brier: None,
                };
                // With a shared signer another keeper may have stored (and be committing) this round's prediction
                // under the same publisher: the insert is fenced by the market's lease, and the stored row is the one
                // committed, so that the salt revealed later is the one the commitment was made with.
                let term = d.chain.tx.shares_nonces().then(|| d.fence.token()).flatten();
                self.store.insert_prediction_under(&row, term.as_ref()).await?;
                let Some(stored) =
                    self.store.prediction(&chain, i.id as i64, epoch as i64, &publisher.to_string()).await?
                else {
                    tracing::info!(chain = %chain, market = i.id, epoch, "the prediction was not stored (the lease term is over); not committed");
                    return Ok(());
                };
                if stored.commit_tx.is_some() {
                    return Ok(());
                }
                let row = stored;
                d.stats.lock().last_p_up = Some(p.p_up);
                self.last.lock().insert((chain.clone(), i.id), p.clone());
                self.bus.publish(
                    "forecaster",
                    SignalKind::Forecast {
                        chain: chain.clone(),
                        market: i.id,
                        epoch,
                        p_up: p.p_up,
                        horizon_s: i.interval,
                        model: self.forecaster.meta.name.clone(),
                    },
                );
                row
            }
        };
        // The forecast takes wall time: a commit that can no longer land before the window closes is not sent.
        let (_, now) = d.chain.head().await?;
        let open_now = decide::commit_open(i, epoch, now, 0);
        let commitment: FixedBytes<32> = row.commitment.parse().context("stored commitment")?;
        let mut ours = None;
        loop {
            match decide::send_step(open_now, ours) {
                SendStep::WindowClosed => {
                    tracing::info!(chain = %chain, market = i.id, epoch, "the commit window closed while forecasting; skipped");
                    return Ok(());
                }
                SendStep::ReadOnChain => {
                    // A commitment may already be on chain from a run that crashed before recording it.
                    let reg = d.chain.registry.as_ref().expect("registry checked");
                    let on_chain = reg.getCommitment(publisher, U256::from(i.id), U256::from(epoch)).call().await?;
                    ours = Some(on_chain.hash == commitment);
                }
                SendStep::Recovered => {
                    self.store.set_commit_tx(&chain, i.id as i64, epoch as i64, &row.publisher, "recovered").await?;
                    return Ok(());
                }
                SendStep::Send => break,
            }
        }
        let data = PredictionRegistry::commitCall { marketId: U256::from(i.id), epoch: U256::from(epoch), commitment }
            .abi_encode();
        let fence = d.fence.clone();
        let never: &crate::txmgr::DoneCheck<'_> = &|| Box::pin(async { false });
        match d
            .chain
            .tx
            .send_fenced(Some(&fence), &format!("commit:{}:{}", i.id, epoch), registry, data.into(), U256::ZERO, never)
            .await
        {
            Ok(m) => {
                self.store
                    .set_commit_tx(&chain, i.id as i64, epoch as i64, &row.publisher, &m.hash.to_string())
                    .await?;
                self.metrics
                    .predictions_committed
                    .get_or_create(&MarketLabel { chain: chain.clone(), market: i.id.to_string() })
                    .inc();
                self.bus.publish(
                    "forecaster",
                    SignalKind::PredictionCommitted { chain, market: i.id, epoch, p_up_bps: row.p_up_bps as u16 },
                );
                Ok(())
            }
            Err(e) if decide::commit_too_late(e.registry_error().as_ref()) => {
                tracing::info!(chain = %chain, market = i.id, epoch, now, reason = %e, "round locked before the commitment could be sent; skipped");
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("commit: {e}")),
        }
    }

    /// Reveals this keeper's own due commitments while it stands by (another keeper leads the market): only its own
    /// signer can reveal them, so a takeover must not leave them to expire on its track record. A signer shared by
    /// several keepers is left to the leader (its nonces come from the lease-fenced nonce authority).
    pub(crate) async fn reveal_standby(&self, d: &MarketCtx<'_>) -> Result<()> {
        match &d.chain.registry {
            Some(registry) if !d.chain.tx.shares_nonces() => self.reveal_due(d, *registry.address()).await,
            _ => Ok(()),
        }
    }

    async fn reveal_due(&self, d: &MarketCtx<'_>, registry: Address) -> Result<()> {
        let chain = d.chain.name.clone();
        let i = d.info;
        let publisher = d.chain.tx.signer;
        // A reveal of this keeper's own commitment needs no lease (no other keeper can send it); with a shared
        // signer it goes under the lease term like every other send.
        let fence = d.chain.tx.shares_nonces().then(|| d.fence.clone());
        let pending = self.store.unrevealed(&chain, &publisher.to_string()).await?;
        for p in pending.into_iter().filter(|p| p.market_id as u64 == i.id) {
            let epoch = p.epoch as u64;
            let res = d.chain.market.roundResult(U256::from(i.id), U256::from(epoch)).call().await?;
            if !res.isFinal {
                continue;
            }
            let salt: FixedBytes<32> = p.salt.parse().context("stored salt")?;
            let data = PredictionRegistry::revealCall {
                marketId: U256::from(i.id),
                epoch: U256::from(epoch),
                up: p.up,
                probabilityUpBps: p.p_up_bps as u16,
                salt,
            }
            .abi_encode();
            let mined = match d
                .chain
                .tx
                .send_fenced(
                    fence.as_ref(),
                    &format!("reveal:{}:{}", i.id, epoch),
                    registry,
                    data.into(),
                    U256::ZERO,
                    &|| Box::pin(async { false }),
                )
                .await
            {
                Ok(m) => m,
                Err(e) if decide::unrevealable(e.registry_error().as_ref()) => {
                    tracing::warn!(chain = %chain, market = i.id, epoch, reason = %e, "prediction can no longer be revealed");
                    self.store
                        .set_revealed(
                            &chain,
                            i.id as i64,
                            epoch as i64,
                            &p.publisher,
                            &Reveal { tx: "-", outcome: Outcome::None, hit: None, brier: None },
                        )
                        .await?;
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("reveal: {e}")),
            };
            let mut outcome = Outcome::None;
            let mut hit = None;
            let mut brier = None;
            for log in &mined.logs {
                if let Ok(ev) = PredictionRegistryEvents::decode_log(log) {
                    if let PredictionRegistryEvents::Revealed(r) = ev.data {
                        outcome = Outcome::try_from(r.outcome)?;
                        let (h, b) = decide::score(outcome, r.hit, r.brier.to::<u64>());
                        hit = h;
                        brier = b.map(|b| b as i64);
                    }
                }
            }
            self.store
                .set_revealed(
                    &chain,
                    i.id as i64,
                    epoch as i64,
                    &p.publisher,
                    &Reveal { tx: &mined.hash.to_string(), outcome, hit, brier },
                )
                .await?;
            self.metrics
                .predictions_revealed
                .get_or_create(&MarketLabel { chain: chain.clone(), market: i.id.to_string() })
                .inc();
            // Only revealed values reach /metrics: an earlier one would leak the forecast before the lock.
            self.metrics
                .forecast_p_up_bps
                .get_or_create(&MarketLabel { chain: chain.clone(), market: i.id.to_string() })
                .set(p.p_up_bps);
            let rec = d.chain.registry.as_ref().expect("registry").trackRecord(publisher).call().await?;
            let scored = rec.hits + rec.misses;
            let mean_brier = decide::mean_brier(rec.brierSum.to::<u128>(), scored);
            self.store
                .upsert_track_record(&TrackRecordRow {
                    chain: chain.clone(),
                    publisher: publisher.to_string(),
                    committed: rec.committed as i64,
                    hits: rec.hits as i64,
                    misses: rec.misses as i64,
                    voided: rec.voided as i64,
                    expired: rec.expired as i64,
                    brier_sum: rec.brierSum.to_string(),
                })
                .await?;
            self.bus.publish(
                "forecaster",
                SignalKind::PredictionRevealed {
                    chain: chain.clone(),
                    market: i.id,
                    epoch,
                    p_up_bps: p.p_up_bps as u16,
                    outcome,
                    hit,
                    scored,
                    hits: rec.hits,
                    mean_brier,
                },
            );
        }
        Ok(())
    }
}
