//! Driving one market: at each checkpoint time, prove the Chainlink round in effect and `execute` it; catch up
//! after downtime; never double-send (chain state is re-read before every action and "already recorded" counts as
//! done); publish every event as a signal and keep the store's record.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, I256, U256};
use alloy::providers::DynProvider;
use alloy::sol_types::{SolCall, SolEventInterface};
use anyhow::Result;
use kronos_chainlink::{round_at, AlloyFeed, TimeField};
use kronos_common::signals::{Outcome, SignalKind};
use kronos_common::{Bus, Decimal};
use kronos_contracts::market::ChainlinkRounds::RoundProof;
use kronos_contracts::market::KronosMarket::{self, KronosMarketEvents};
use kronos_contracts::{CancelReason, CheckpointStatus};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::chain::ChainRuntime;
use crate::checkpoints::{self as decide, Action, ExecuteRevert, Proofs, Recorded, RoundIds, Snapshot, TermStep};
use crate::market::MarketCtx;
use crate::metrics::{MarketLabel, Metrics, ResultLabel};
use crate::publisher::Publisher;
use crate::store::{CheckpointRow, MarketRow, RoundRow, RoundState, Store};
use crate::txmgr::TxError;

pub use crate::market::{MarketInfo, MarketStats};

/// How many recent samples [`MarketStats`] keeps per series: a daemon runs for months, and `/api/markets` serves
/// them. Once the series reaches twice this, the older half is dropped (amortised O(1) per sample).
pub(crate) const MAX_SAMPLES: usize = 4096;

/// Appends `x`, keeping at most `2 × MAX_SAMPLES` and never fewer than the newest `MAX_SAMPLES`.
pub(crate) fn push_sample(v: &mut Vec<u64>, x: u64) {
    if v.len() >= 2 * MAX_SAMPLES {
        v.drain(..v.len() - MAX_SAMPLES);
    }
    v.push(x);
}

/// Decodes an int256 price with the feed's decimals.
pub fn price(v: I256, decimals: u8) -> Decimal {
    let i: i128 = v.try_into().unwrap_or(i128::MAX);
    Decimal::from_fixed(i, decimals).unwrap_or(Decimal::ZERO)
}

/// A failed call to the market contract in words: its custom error decoded (`UnknownMarket { marketId: 2 }`, never
/// `custom error 0x69616b87`), or, for a revert without data, that the address is no KronosMarket.
pub fn explain_market_call(call: &str, contract: Address, e: &alloy::contract::Error) -> String {
    match e.as_revert_data() {
        Some(d) if d.is_empty() => format!(
            "{call}() reverted without data: {contract} is not a KronosMarket (is it the registry's or another contract's address?)"
        ),
        Some(d) => format!("{call}() reverted: {}", crate::txmgr::decode_revert(&d)),
        None => kronos_common::Redactor::global().redact(&format!("{call}(): {e}")),
    }
}

/// The wait before the next pass after a failed one: doubling from the poll interval, at most 5 s (or the poll
/// interval if longer), so that a chain whose RPC recovers is seen healthy, and its checkpoints sent, within seconds.
pub fn retry_backoff(prev: Duration, poll: Duration) -> Duration {
    (prev * 2).min(MAX_RETRY_BACKOFF.max(poll))
}

/// The longest wait between failed passes.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// Drives one market of one chain.
pub struct MarketDriver {
    pub chain: Arc<ChainRuntime>,
    pub info: MarketInfo,
    feed: AlloyFeed<DynProvider>,
    seq: Option<AlloyFeed<DynProvider>>,
    /// Fenced on PostgreSQL: the market's rows are written only under the term in `fence_slot`.
    store: Store,
    fence_slot: crate::store::FenceSlot,
    /// The market's lease and the term this driver works under (0 before the first).
    pub lease: Arc<crate::lease::Lease>,
    term: std::sync::atomic::AtomicI64,
    bus: Bus,
    metrics: Arc<Metrics>,
    publisher: Option<Arc<Publisher>>,
    pub stats: Arc<Mutex<MarketStats>>,
    poll: Duration,
    candle_sink: Option<Arc<crate::publisher::CheckpointCandles>>,
}

/// What the market drivers of one keeper share: the store, the bus and the metrics, the keeper's name in the lease
/// table, the forecast publisher (if the keeper publishes), the poll interval and the lease timing.
#[derive(Clone)]
pub struct DriverShared {
    pub store: Store,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    pub keeper_id: String,
    pub publisher: Option<Arc<Publisher>>,
    pub poll: Duration,
    pub lease: crate::lease::LeaseTiming,
}

impl MarketDriver {
    /// Reads market `id` from the contract on `chain` and checks its feed against the catalogue.
    pub async fn new(chain: Arc<ChainRuntime>, id: u64, shared: DriverShared) -> Result<Self> {
        let DriverShared { store, bus, metrics, keeper_id, publisher, poll, lease } = shared;
        let name = chain.name.clone();
        let m = chain.market.getMarket(U256::from(id)).call().await.map_err(|e| {
            anyhow::anyhow!("{name}: market {id}: {}", explain_market_call("getMarket", chain.cfg.market, &e))
        })?;
        let feed = AlloyFeed::new(m.feed, chain.provider.clone());
        let live = feed.info().await.map_err(|e| anyhow::anyhow!("{name}: market {id}: {e}"))?;
        let cat = &chain.cfg.chain;
        let pair = match chain.cfg.pairs.get(&id) {
            Some(p) => p.clone(),
            None => cat
                .feeds
                .values()
                .find(|f| f.evm_address() == Some(m.feed))
                .map(|f| f.pair.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{name}: market {id}'s feed {} is not the catalogue's address of any pair; if it is a mock feed on a local chain, set `local = true` and `pairs = {{ \"{id}\" = \"<pair>\" }}` in the chain's [[chain]] (`kronos deploy` writes both for a local chain)",
                        m.feed
                    )
                })?,
        };
        let entry = cat.feeds.get(&pair).ok_or_else(|| anyhow::anyhow!("{name}: no catalogue entry for {pair}"))?;
        if !chain.cfg.local {
            let want = entry
                .evm_address()
                .ok_or_else(|| anyhow::anyhow!("{name}: the catalogue has no confirmed address for {pair}"))?;
            anyhow::ensure!(
                want == m.feed,
                "{name}: market {id} reads {}, but the catalogue's {pair} proxy is {want}; if it is a mock feed on a local chain, set `local = true` (with `pairs`) in the chain's [[chain]]",
                m.feed
            );
        }
        entry.check_live(&live.description, live.decimals).map_err(|e| anyhow::anyhow!("{name}: market {id}: {e}"))?;
        let seq = (m.sequencerFeed != Address::ZERO).then(|| AlloyFeed::new(m.sequencerFeed, chain.provider.clone()));
        if !chain.cfg.local {
            if let (Some(want), true) = (cat.sequencer.as_ref(), m.sequencerFeed != Address::ZERO) {
                anyhow::ensure!(
                    want.address == m.sequencerFeed,
                    "{name}: market {id} reads sequencer feed {}, the catalogue's is {}",
                    m.sequencerFeed,
                    want.address
                );
            }
        }
        let info = MarketInfo {
            id,
            feed: m.feed,
            sequencer: seq.as_ref().map(|s| s.address),
            token: m.token,
            genesis: m.genesis.to::<u64>(),
            interval: m.interval as u64,
            settle_window: m.settleWindow as u64,
            max_price_age: m.maxPriceAge as u64,
            execute_delay: m.executeDelay as u64,
            bet_cutoff: m.betCutoff as u64,
            decimals: m.feedDecimals,
            pair: pair.clone(),
        };
        store
            .upsert_market(&MarketRow {
                chain: name.clone(),
                market_id: id as i64,
                contract: chain.cfg.market.to_string(),
                feed: m.feed.to_string(),
                sequencer: info.sequencer.map(|a| a.to_string()),
                token: m.token.to_string(),
                pair: Some(pair.clone()),
                genesis: info.genesis as i64,
                interval_s: info.interval as i64,
                settle_window_s: info.settle_window as i64,
                max_price_age_s: info.max_price_age as i64,
                feed_decimals: info.decimals as i64,
            })
            .await?;
        let stats = Arc::new(Mutex::new(MarketStats { chain: name.clone(), market: id, pair, ..Default::default() }));
        tracing::info!(chain = %name, market = id, feed = %m.feed, description = %live.description, "market checked against the catalogue");
        let lease = crate::lease::Lease::new(
            crate::lease::LeaseKey {
                chain: &name,
                market: id,
                holder: &keeper_id,
                instance: crate::lease::instance_id(),
            },
            &store,
            lease,
            bus.clone(),
            metrics.clone(),
        );
        let (store, fence_slot) =
            if store.backend == crate::store::Backend::Postgres { store.fenced() } else { (store, Default::default()) };
        Ok(MarketDriver {
            chain,
            info,
            feed,
            seq,
            store,
            fence_slot,
            lease,
            term: Default::default(),
            bus,
            metrics,
            publisher,
            stats,
            poll,
            candle_sink: None,
        })
    }

    /// Feeds recorded checkpoint prices to the forecaster's candle builder.
    pub fn with_candle_sink(mut self, sink: Arc<crate::publisher::CheckpointCandles>) -> Self {
        self.candle_sink = Some(sink);
        self
    }

    fn label(&self) -> MarketLabel {
        MarketLabel { chain: self.chain.name.clone(), market: self.info.id.to_string() }
    }

    /// Fills the forecaster's checkpoint candles from the store's checkpoints (valid ones), in which every keeper
    /// records the checkpoints of the markets it leads: at start-up, and at the start of every lease term, so that a
    /// new leader does not forecast from a series with the previous leader's checkpoints missing.
    pub async fn refill_candles(&self) -> Result<()> {
        let Some(sink) = &self.candle_sink else { return Ok(()) };
        let (name, id) = (&self.chain.name, self.info.id);
        for cp in self.store.checkpoints(name, id as i64, 0, 100_000).await? {
            if cp.status == CheckpointStatus::Valid {
                if let Ok(p) = cp.price.parse::<kronos_common::Decimal>() {
                    sink.record(name, id, cp.ts as u64, p.to_f64_lossy());
                }
            }
        }
        Ok(())
    }

    async fn recorded(&self, k: u64) -> Result<Option<kronos_contracts::market::IKronosMarket::Checkpoint>> {
        let cp = self.chain.market.getCheckpoint(U256::from(self.info.id), U256::from(k)).call().await?;
        Ok((cp.recordedAt.to::<u64>() != 0).then_some(cp))
    }

    /// The term this driver works under, for the transaction manager's checks.
    pub fn fence(&self) -> crate::lease::Fence {
        crate::lease::Fence { lease: self.lease.clone(), epoch: self.term.load(std::sync::atomic::Ordering::SeqCst) }
    }

    /// What the publisher works with in a pass of this driver.
    fn ctx(&self) -> MarketCtx<'_> {
        MarketCtx { chain: &self.chain, info: &self.info, stats: &self.stats, fence: self.fence() }
    }

    /// Runs until cancelled: leads the market while this keeper holds its lease (renewed in the background), stands
    /// by otherwise. A new term starts from chain state (the previous leader may have done anything up to its end).
    pub async fn run(self, cancel: CancellationToken) {
        let name = self.chain.name.clone();
        let id = self.info.id;
        // Its own token, cancelled only once the loop below has ended: a shutdown does not give the lease up while a
        // pass still follows a transaction it sent (a standby would send it again).
        let renewals = CancellationToken::new();
        let refresher = tokio::spawn(self.lease.clone().run(renewals.clone()));
        let mut next: Option<u64> = None;
        let mut backoff = self.poll;
        let mut term: Option<i64> = None;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let view = self.lease.view();
            let leading = decide::leading_term(&view, |e| self.lease.may_send(e));
            self.stats.lock().lease = self.lease.status();
            match decide::term_step(leading, term) {
                TermStep::Keep => {}
                TermStep::Start(e) => {
                    tracing::info!(chain = %name, market = id, epoch = e, "leading the market: starting from chain state");
                    term = Some(e);
                    next = None;
                    if !matches!(view, crate::lease::LeaseView::Single) {
                        if let Err(e) = self.refill_candles().await {
                            tracing::warn!(chain = %name, market = id, error = %format!("{e:#}"), "could not refill the forecaster's candles from the store");
                        }
                    }
                    self.term.store(e, std::sync::atomic::Ordering::SeqCst);
                    *self.fence_slot.lock() = self.lease.token(e);
                }
                TermStep::StandBy { ended } => {
                    if let Some(t) = ended {
                        tracing::warn!(chain = %name, market = id, epoch = t, "standing by: this keeper does not hold the market's lease");
                        *self.fence_slot.lock() = None;
                        term = None;
                    }
                    // A standby serves `/api/markets` too: it reads the round taking bets and its pools (reads only,
                    // nothing is sent), so its API does not show a past round's.
                    if let Err(e) = self.read_betting_round().await {
                        tracing::warn!(chain = %name, market = id, error = %format!("{e:#}"), "standing by: could not read the betting round's pools");
                    }
                    // Commitments this keeper made while it led are revealed by it alone (its own signer).
                    if let Some(p) = &self.publisher {
                        if let Err(e) = p.reveal_standby(&self.ctx()).await {
                            tracing::warn!(chain = %name, market = id, error = %format!("{e:#}"), "revealing this keeper's own forecasts while standing by failed");
                        }
                    }
                    tokio::select! { _ = cancel.cancelled() => break, _ = self.lease.changed(self.poll * 5) => {} }
                    continue;
                }
            }
            match self.step(&mut next).await {
                Ok(()) => backoff = self.poll,
                Err(e) => {
                    if !self.lease.may_send(term.unwrap_or_default()) {
                        tracing::warn!(chain = %name, market = id, error = %format!("{e:#}"), "pass stopped: the lease term is over");
                        continue;
                    }
                    tracing::warn!(chain = %name, market = id, error = %format!("{e:#}"), "keeper step failed; retrying");
                    backoff = retry_backoff(backoff, self.poll);
                }
            }
            tokio::select! { _ = cancel.cancelled() => {}, _ = tokio::time::sleep(backoff) => {} }
        }
        // The last pass has ended: the refresher gives a held term up so that a standby takes over at once.
        renewals.cancel();
        let _ = refresher.await;
    }

    /// One pass: record every due checkpoint in order, then publish and reveal forecasts.
    pub async fn step(&self, next: &mut Option<u64>) -> Result<()> {
        let (head, now) = self.chain.head().await?;
        let i = &self.info;
        let Some(epoch) = decide::betting_epoch(i, now) else { return Ok(()) };
        let floor = decide::first_useful(i, now);
        if next.is_none() {
            if let Err(e) = self.reconcile_before(floor).await {
                tracing::warn!(chain = %self.chain.name, market = i.id, error = %format!("{e:#}"), "could not bring the store's open rounds up to date");
            }
        }
        let fell_past = decide::fell_past(*next, floor);
        if !fell_past.is_empty() {
            self.missed_range(fell_past, decide::Missed::Expired.as_str());
        }
        let start = decide::pass_start(*next, floor);
        // Checkpoints and forecasts go side by side: the commit window of the round that just opened closes at the
        // betting cutoff, and waiting for an execute (a block or more) first can miss it on chains with long blocks.
        let publish = async {
            if let Some(p) = &self.publisher {
                if let Err(e) = p.tick(&self.ctx(), epoch, now).await {
                    tracing::warn!(chain = %self.chain.name, market = i.id, error = %format!("{e:#}"), "forecast publishing failed");
                }
            }
        };
        let ((k, res), ()) = tokio::join!(self.execute_due(start, head, now), publish);
        *next = Some(k);
        let pools = self.betting_pools(epoch, head).await;
        {
            let mut s = self.stats.lock();
            s.next_checkpoint = k;
            s.betting_epoch = epoch;
            if let Some((up, down)) = pools {
                s.set_pools(epoch, head, up, down);
            }
        }
        res
    }

    /// The round taking bets at the chain's head and its pools, into the market's figures: what a pass records for
    /// `/api/markets`, read-only (a standby runs it in place of its passes).
    async fn read_betting_round(&self) -> Result<()> {
        let (head, now) = self.chain.head().await?;
        let Some(epoch) = decide::betting_epoch(&self.info, now) else { return Ok(()) };
        let pools = self.betting_pools(epoch, head).await;
        let mut s = self.stats.lock();
        s.betting_epoch = epoch;
        if let Some((up, down)) = pools {
            s.set_pools(epoch, head, up, down);
        }
        Ok(())
    }

    /// The pools of round `epoch` (the one taking bets) at block `head`, if the figures in hand are not already
    /// those; a failed read keeps the old figures (they name their round, so nobody takes them for this one's).
    async fn betting_pools(&self, epoch: u64, head: u64) -> Option<(String, String)> {
        if !self.stats.lock().pools_stale(epoch, head) {
            return None;
        }
        match self.chain.market.getRound(U256::from(self.info.id), U256::from(epoch)).call().await {
            Ok(r) => Some((r.upAmount.to_string(), r.downAmount.to_string())),
            Err(e) => {
                tracing::warn!(chain = %self.chain.name, market = self.info.id, epoch, error = %explain_market_call("getRound", self.chain.cfg.market, &e), "could not read the betting round's pools");
                None
            }
        }
    }

    /// On the first pass after a start: rounds the store still has locked whose settling checkpoint lies before
    /// `floor` (the first one the catch-up looks at; the keeper was down longer than the settle window) take their
    /// state from the chain's events too.
    async fn reconcile_before(&self, floor: u64) -> Result<()> {
        let rounds = self.store.rounds(Some(&self.chain.name), Some(self.info.id as i64), 1000).await?;
        let Some(oldest) = rounds.iter().filter(|r| r.state == RoundState::Locked).map(|r| r.epoch as u64).min() else {
            return Ok(());
        };
        for k in (oldest + 1)..floor.min(oldest + 1 + 64) {
            if let Some(cp) = self.recorded(k).await? {
                self.note_recorded_elsewhere(k, &cp).await?;
            }
        }
        Ok(())
    }

    /// Records every due checkpoint from `k` in order; returns the next one to look at. The decisions are
    /// [`decide::next_action`]'s; this loop reads what it asks for and does what it says.
    async fn execute_due(&self, k: u64, head: u64, now: u64) -> (u64, Result<()>) {
        let mut s = Snapshot::at(now, k, decide::PASS_BUDGET);
        let mut on_chain = None;
        loop {
            let k = s.k;
            let next = Snapshot::at(now, k + 1, s.budget.saturating_sub(1));
            match decide::next_action(&self.info, &s) {
                Action::Wait => return (k, Ok(())),
                Action::Miss(why) => {
                    self.missed(k, why.as_str());
                    s = next;
                }
                Action::ReadRecorded => match self.recorded(k).await {
                    Ok(cp) => {
                        s.recorded = if cp.is_some() { Recorded::Yes } else { Recorded::No };
                        on_chain = cp;
                    }
                    Err(e) => return (k, Err(e)),
                },
                Action::TakeRecorded => {
                    if let Some(cp) = on_chain.take() {
                        if let Err(e) = self.note_recorded_elsewhere(k, &cp).await {
                            return (k, Err(e));
                        }
                    }
                    s = next;
                }
                Action::Prove => match self.prove(k).await {
                    Ok(p) => s.proofs = p,
                    Err(e) => return (k, Err(e)),
                },
                Action::Execute { price, sequencer } => match self.execute(k, head, price, sequencer).await {
                    Ok(true) => s = next,
                    Ok(false) => return (k, Ok(())),
                    Err(e) => return (k, Err(e)),
                },
            }
        }
    }

    /// The feeds' rounds in effect at `T(k)`: the price feed's by `updatedAt`, the sequencer feed's (if the market
    /// has one) by `startedAt`.
    async fn prove(&self, k: u64) -> Result<Proofs> {
        let t = self.info.t(k);
        let ids =
            |p: kronos_chainlink::RoundProof| RoundIds { round_id: p.round.round_id, next_round_id: p.next_round_id };
        let Some(price) = round_at(&self.feed, t, TimeField::UpdatedAt).await?.map(ids) else {
            return Ok(Proofs::Read { price: None, sequencer: Ok(None) });
        };
        let sequencer = match &self.seq {
            Some(s) => round_at(s, t, TimeField::StartedAt).await?.map(ids).map(Some).ok_or(()),
            None => Ok(None),
        };
        Ok(Proofs::Read { price: Some(price), sequencer })
    }

    async fn checkpoint_price(&self, k: u64) -> Result<Option<Decimal>> {
        let cp = self.chain.market.getCheckpoint(U256::from(self.info.id), U256::from(k)).call().await?;
        Ok((cp.recordedAt.to::<u64>() != 0)
            .then(|| price(I256::try_from(cp.price).unwrap_or_default(), self.info.decimals)))
    }

    /// Checkpoints the keeper fell past while running (see [`decide::fell_past`]): counted and logged once.
    fn missed_range(&self, ks: std::ops::Range<u64>, why: &str) {
        let n = ks.end - ks.start;
        tracing::warn!(chain = %self.chain.name, market = self.info.id, first = ks.start, last = ks.end - 1, count = n, why, "checkpoints missed: the keeper fell behind the settle window");
        self.metrics.missed_checkpoints.get_or_create(&self.label()).inc_by(n);
        self.stats.lock().missed += n;
    }

    fn missed(&self, k: u64, why: &str) {
        tracing::warn!(chain = %self.chain.name, market = self.info.id, checkpoint = k, why, "checkpoint missed");
        self.metrics.missed_checkpoints.get_or_create(&self.label()).inc();
        self.stats.lock().missed += 1;
    }

    /// Checkpoint `k` is on chain but this keeper has not handled its events (someone else executed it, or this
    /// keeper was stopped while its own transaction confirmed): the chain is the truth, so the events of the
    /// transaction that recorded it update the store (the checkpoint, the round it locks and the round it settles or
    /// refunds) and go out as signals, exactly as for the keeper's own transactions. Once handled, a checkpoint keeps
    /// its transaction hash in the store and is not handled again.
    async fn note_recorded_elsewhere(
        &self,
        k: u64,
        cp: &kronos_contracts::market::IKronosMarket::Checkpoint,
    ) -> Result<()> {
        let (name, i) = (&self.chain.name, &self.info);
        let stored = self.store.checkpoints(name, i.id as i64, k as i64, 1).await?;
        if stored.first().is_some_and(|c| c.idx == k as i64 && c.tx_hash.is_some()) {
            return Ok(());
        }
        let recorded_at = cp.recordedAt.to::<u64>();
        match self.recording_tx(k, recorded_at).await {
            Ok(Some((hash, block, logs))) => {
                let due = self.chain.first_block_after(i.t(k) + i.execute_delay, block).await.unwrap_or(block);
                tracing::info!(chain = %name, market = i.id, checkpoint = k, tx = %hash, block, "checkpoint recorded by another transaction; taking its events");
                return self.handle_logs(k, &logs, Some((hash.to_string(), block, block.saturating_sub(due)))).await;
            }
            Ok(None) => {
                tracing::warn!(chain = %name, market = i.id, checkpoint = k, recorded_at, "no CheckpointRecorded event found for a recorded checkpoint; storing the checkpoint only")
            }
            Err(e) => return Err(e.context(format!("reading the events that recorded checkpoint {k}"))),
        }
        self.store
            .record_checkpoint(&CheckpointRow {
                chain: name.clone(),
                market_id: i.id as i64,
                idx: k as i64,
                ts: i.t(k) as i64,
                round_id: cp.roundId.to_string(),
                price: price(I256::try_from(cp.price).unwrap_or_default(), i.decimals).to_string(),
                status: CheckpointStatus::try_from(cp.status)?,
                tx_hash: None,
                block: None,
                delay_blocks: None,
            })
            .await
    }

    /// The transaction that recorded checkpoint `k` at chain time `recorded_at`: its hash, block and logs.
    async fn recording_tx(
        &self,
        k: u64,
        recorded_at: u64,
    ) -> Result<Option<(alloy::primitives::TxHash, u64, Vec<alloy::primitives::Log>)>> {
        use alloy::providers::Provider;
        use alloy::sol_types::SolEvent;
        let (head, _) = self.chain.head().await?;
        // The blocks stamped `recorded_at`.
        let from = self.chain.first_block_after(recorded_at.saturating_sub(1), head).await?;
        let to = self.chain.first_block_after(recorded_at, head).await?.saturating_sub(1).clamp(from, from + 1000);
        let filter = alloy::rpc::types::Filter::new()
            .address(self.chain.cfg.market)
            .event_signature(KronosMarket::CheckpointRecorded::SIGNATURE_HASH)
            .topic1(U256::from(self.info.id))
            .topic2(U256::from(k))
            .from_block(from)
            .to_block(to);
        let logs = self.chain.provider.get_logs(&filter).await?;
        let Some((Some(hash), Some(block))) = logs.first().map(|l| (l.transaction_hash, l.block_number)) else {
            return Ok(None);
        };
        let Some(r) = self.chain.provider.get_transaction_receipt(hash).await? else { return Ok(None) };
        Ok(Some((hash, block, r.inner.logs().iter().map(|l| l.inner.clone()).collect())))
    }

    /// Records checkpoint `k` with the proofs given. `Ok(false)`: not possible yet (retry later).
    async fn execute(&self, k: u64, head: u64, price: RoundIds, sequencer: RoundIds) -> Result<bool> {
        let i = &self.info;
        let t = i.t(k);
        let proof = |r: RoundIds| RoundProof {
            roundId: alloy::primitives::aliases::U80::from(r.round_id),
            nextRoundId: alloy::primitives::aliases::U80::from(r.next_round_id),
        };
        let (price_proof, sp) = (proof(price), proof(sequencer));
        let data = KronosMarket::executeCall {
            marketId: U256::from(i.id),
            index: U256::from(k),
            price: price_proof,
            sequencer: sp,
        }
        .abi_encode();
        let action = format!("execute:{}:{}", i.id, k);
        let due_block = self.chain.first_block_after(t + i.execute_delay, head).await.unwrap_or(head);
        // Anyone may execute a checkpoint: if ours reverts because it is recorded already, that is no failure.
        let done = || -> futures::future::BoxFuture<'_, bool> {
            Box::pin(async move { matches!(self.recorded(k).await, Ok(Some(_))) })
        };
        let fence = self.fence();
        match self
            .chain
            .tx
            .send_fenced(Some(&fence), &action, self.chain.cfg.market, data.into(), U256::ZERO, &done)
            .await
        {
            Ok(mined) => {
                let delay = mined.block.saturating_sub(due_block);
                self.metrics.checkpoints.get_or_create(&self.label()).inc();
                self.metrics
                    .settlement_delay_blocks
                    .get_or_create(&crate::metrics::ChainLabel { chain: self.chain.name.clone() })
                    .observe(delay as f64);
                {
                    let mut s = self.stats.lock();
                    push_sample(&mut s.delays, delay);
                    push_sample(&mut s.execute_gas, mined.gas_used);
                }
                self.handle_logs(k, &mined.logs, Some((mined.hash.to_string(), mined.block, delay))).await?;
                Ok(true)
            }
            Err(e @ TxError::Revert { .. }) => {
                let recorded_now = matches!(self.recorded(k).await, Ok(Some(_)));
                let decoded = e.market_error().map(|m| decide::classify_execute_revert(&m));
                match decide::after_revert(recorded_now, decoded) {
                    ExecuteRevert::Done => {
                        // Recorded by someone else in the meantime (the revert reason may be another check that
                        // failed first, e.g. a proof outdated by then): that is success.
                        tracing::info!(chain = %self.chain.name, market = i.id, checkpoint = k, "checkpoint recorded by someone else first");
                        if let Some(cp) = self.recorded(k).await? {
                            self.note_recorded_elsewhere(k, &cp).await?;
                        }
                        Ok(true)
                    }
                    ExecuteRevert::NotYet => Ok(false),
                    ExecuteRevert::Reprove => {
                        // The feed moved between proof and inclusion: prove again next pass.
                        tracing::info!(chain = %self.chain.name, market = i.id, checkpoint = k, reason = %e, "proof outdated; proving again");
                        Ok(false)
                    }
                    ExecuteRevert::Fail => Err(anyhow::anyhow!("execute({}, {k}): {e}", i.id)),
                }
            }
            Err(e) => Err(anyhow::anyhow!("execute({}, {k}): {e}", i.id)),
        }
    }

    /// Turns the market's events in a receipt into store rows and signals.
    pub async fn handle_logs(
        &self,
        k: u64,
        logs: &[alloy::primitives::Log],
        tx: Option<(String, u64, u64)>,
    ) -> Result<()> {
        let chain = self.chain.name.clone();
        let i = &self.info;
        // The checkpoint's row (with the transaction hash that marks its events handled) is written last, after the
        // rounds it locks and settles: a write refused midway (the lease lost, the process killed) leaves the
        // checkpoint unmarked, so the next leader handles the whole receipt again.
        let mut checkpoint_row = None;
        for log in logs {
            if log.address != self.chain.cfg.market {
                continue;
            }
            let Ok(ev) = KronosMarketEvents::decode_log(log) else { continue };
            match ev.data {
                KronosMarketEvents::CheckpointRecorded(e) if e.marketId == U256::from(i.id) => {
                    let p = price(e.price, i.decimals);
                    let status = CheckpointStatus::try_from(e.status)?;
                    if status != CheckpointStatus::Valid {
                        tracing::warn!(chain = %chain, market = i.id, checkpoint = k, status = status.as_str(), pair = %i.pair, "feed unusable at the checkpoint: the rounds it locks or settles are refunded");
                    }
                    if status == CheckpointStatus::Valid {
                        if let Some(sink) = &self.candle_sink {
                            sink.record(&chain, i.id, i.t(k), p.to_f64_lossy());
                        }
                    }
                    checkpoint_row = Some(CheckpointRow {
                        chain: chain.clone(),
                        market_id: i.id as i64,
                        idx: k as i64,
                        ts: i.t(k) as i64,
                        round_id: e.roundId.to_string(),
                        price: p.to_string(),
                        status,
                        tx_hash: tx.as_ref().map(|t| t.0.clone()),
                        block: tx.as_ref().map(|t| t.1 as i64),
                        delay_blocks: tx.as_ref().map(|t| t.2 as i64),
                    });
                    self.bus.publish(
                        "keeper",
                        SignalKind::PriceRead {
                            chain: chain.clone(),
                            pair: i.pair.clone(),
                            price: p,
                            round_id: e.roundId.to_string(),
                            updated_at: e.timestamp.to::<u64>(),
                        },
                    );
                }
                KronosMarketEvents::RoundStarted(e) if e.marketId == U256::from(i.id) => {
                    tracing::info!(chain = %chain, market = i.id, epoch = %e.epoch, lock_at = %e.lockAt, "round started");
                    self.bus.publish(
                        "keeper",
                        SignalKind::RoundStarted {
                            chain: chain.clone(),
                            market: i.id,
                            epoch: e.epoch.to::<u64>(),
                            start_at: e.startAt.to::<u64>(),
                            lock_at: e.lockAt.to::<u64>(),
                            close_at: e.closeAt.to::<u64>(),
                        },
                    );
                }
                KronosMarketEvents::RoundLocked(e) if e.marketId == U256::from(i.id) => {
                    let epoch = e.epoch.to::<u64>();
                    let p = price(e.lockPrice, i.decimals);
                    tracing::info!(chain = %chain, market = i.id, epoch, lock_price = %p, "round locked");
                    let r = self.chain.market.getRound(U256::from(i.id), e.epoch).call().await?;
                    self.store
                        .upsert_round(&RoundRow {
                            chain: chain.clone(),
                            market_id: i.id as i64,
                            epoch: epoch as i64,
                            state: RoundState::Locked,
                            lock_price: Some(p.to_string()),
                            close_price: None,
                            outcome: None,
                            reason: None,
                            up_wei: r.upAmount.to_string(),
                            down_wei: r.downAmount.to_string(),
                            reward_wei: None,
                            treasury_fee_wei: None,
                            delay_blocks: None,
                        })
                        .await?;
                    self.bus.publish(
                        "keeper",
                        SignalKind::RoundLocked {
                            chain: chain.clone(),
                            market: i.id,
                            epoch,
                            lock_price: p,
                            round_id: e.roundId.to_string(),
                        },
                    );
                }
                KronosMarketEvents::RoundSettled(e) if e.marketId == U256::from(i.id) => {
                    let epoch = e.epoch.to::<u64>();
                    let (lp, cp) = (price(e.lockPrice, i.decimals), price(e.closePrice, i.decimals));
                    let outcome = Outcome::try_from(e.outcome)?;
                    tracing::info!(chain = %chain, market = i.id, epoch, outcome = ?outcome, lock_price = %lp, close_price = %cp, "round settled");
                    let r = self.chain.market.getRound(U256::from(i.id), e.epoch).call().await?;
                    let delay = tx.as_ref().map(|t| t.2);
                    self.store
                        .upsert_round(&RoundRow {
                            chain: chain.clone(),
                            market_id: i.id as i64,
                            epoch: epoch as i64,
                            state: RoundState::Settled,
                            lock_price: Some(lp.to_string()),
                            close_price: Some(cp.to_string()),
                            outcome: Some(outcome),
                            reason: None,
                            up_wei: r.upAmount.to_string(),
                            down_wei: r.downAmount.to_string(),
                            reward_wei: Some(e.rewardAmount.to_string()),
                            treasury_fee_wei: Some(e.treasuryFee.to_string()),
                            delay_blocks: delay.map(|d| d as i64),
                        })
                        .await?;
                    self.metrics
                        .rounds
                        .get_or_create(&ResultLabel {
                            chain: chain.clone(),
                            market: i.id.to_string(),
                            result: "settled".into(),
                        })
                        .inc();
                    {
                        let mut s = self.stats.lock();
                        s.settled += 1;
                        s.last_lock_price = Some(lp);
                        s.last_close_price = Some(cp);
                        s.last_result = format!("#{epoch} {outcome}");
                    }
                    self.bus.publish(
                        "keeper",
                        SignalKind::RoundSettled {
                            chain: chain.clone(),
                            market: i.id,
                            epoch,
                            outcome,
                            lock_price: lp,
                            close_price: cp,
                            total_wei: e.totalAmount.to_string(),
                            reward_wei: e.rewardAmount.to_string(),
                            treasury_fee_wei: e.treasuryFee.to_string(),
                            delay_blocks: delay.unwrap_or(0),
                        },
                    );
                }
                KronosMarketEvents::RoundCancelled(e) if e.marketId == U256::from(i.id) => {
                    let epoch = e.epoch.to::<u64>();
                    let reason = CancelReason::try_from(e.reason)?;
                    let outcome = Outcome::try_from(e.outcome)?;
                    tracing::info!(chain = %chain, market = i.id, epoch, reason = reason.as_str(), "round refunded");
                    let r = self.chain.market.getRound(U256::from(i.id), e.epoch).call().await?;
                    let lock = self.checkpoint_price(epoch + 1).await?;
                    let close = self.checkpoint_price(epoch + 2).await?;
                    self.store
                        .upsert_round(&RoundRow {
                            chain: chain.clone(),
                            market_id: i.id as i64,
                            epoch: epoch as i64,
                            state: RoundState::Cancelled,
                            lock_price: lock.map(|c| c.to_string()),
                            close_price: close.map(|c| c.to_string()),
                            outcome: Some(outcome),
                            reason: Some(reason),
                            up_wei: r.upAmount.to_string(),
                            down_wei: r.downAmount.to_string(),
                            reward_wei: None,
                            treasury_fee_wei: None,
                            delay_blocks: tx.as_ref().map(|t| t.2 as i64),
                        })
                        .await?;
                    self.metrics
                        .rounds
                        .get_or_create(&ResultLabel {
                            chain: chain.clone(),
                            market: i.id.to_string(),
                            result: "cancelled".into(),
                        })
                        .inc();
                    {
                        let mut s = self.stats.lock();
                        s.cancelled += 1;
                        s.last_lock_price = lock;
                        s.last_close_price = close;
                        s.last_result = format!("#{epoch} refund ({reason})");
                    }
                    self.bus.publish(
                        "keeper",
                        SignalKind::RoundCancelled {
                            chain: chain.clone(),
                            market: i.id,
                            epoch,
                            reason: crate::api::cancel_reason(reason),
                            outcome,
                        },
                    );
                }
                _ => {}
            }
        }
        if let Some(row) = checkpoint_row {
            self.store.record_checkpoint(&row).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_are_bounded_and_keep_the_newest() {
        let mut v = Vec::new();
        for x in 0..(5 * super::MAX_SAMPLES as u64) {
            super::push_sample(&mut v, x);
            assert!(v.len() <= 2 * super::MAX_SAMPLES);
            assert!(v.len() >= super::MAX_SAMPLES.min(x as usize + 1));
            assert_eq!(*v.last().unwrap(), x);
        }
        // Contiguous and newest: no sample lost from the middle.
        assert!(v.windows(2).all(|w| w[1] == w[0] + 1));
    }

    use super::*;

    fn reverted(data: &str) -> alloy::contract::Error {
        alloy::contract::Error::TransportError(alloy::transports::RpcError::ErrorResp(
            alloy::rpc::json_rpc::ErrorPayload {
                code: 3,
                message: "execution reverted".into(),
                data: Some(serde_json::value::to_raw_value(data).unwrap()),
            },
        ))
    }

    /// Issue 13, item 12: `markets = [2]` gave "custom error 0x69616b87:" and NUL bytes; the registry's address as
    /// the market gave "execution reverted, data: \"0x\"".
    #[test]
    fn market_call_failures_are_explained() {
        use alloy::sol_types::SolError;
        let unknown = KronosMarket::UnknownMarket { marketId: U256::from(2) }.abi_encode();
        let m =
            explain_market_call("getMarket", Address::ZERO, &reverted(&format!("0x{}", alloy::hex::encode(unknown))));
        assert!(m.contains("UnknownMarket") && m.contains("marketId: 2"), "{m}");
        assert!(!m.contains('\0') && !m.contains("custom error"), "{m}");
        let m = explain_market_call("marketCount", Address::ZERO, &reverted("0x"));
        assert!(m.contains("is not a KronosMarket") && m.contains("marketCount()"), "{m}");
        // An unknown custom error is shown in hex, never as raw bytes.
        let other = crate::txmgr::decode_revert(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
        assert!(!other.chars().any(char::is_control), "{other:?}");
    }

    #[test]
    fn failed_passes_back_off_to_five_seconds_at_most() {
        let ms = Duration::from_millis;
        assert_eq!(retry_backoff(ms(100), ms(100)), ms(200));
        assert_eq!(retry_backoff(ms(4000), ms(100)), ms(5000));
        assert_eq!(retry_backoff(ms(5000), ms(100)), ms(5000));
        // A poll interval above the cap is kept.
        assert_eq!(retry_backoff(ms(8000), ms(8000)), ms(8000));
    }
}
