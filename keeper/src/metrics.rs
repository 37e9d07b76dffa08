//! Prometheus metrics of the keeper (`/metrics`).

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels: chain only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChainLabel {
    pub chain: String,
}

/// Labels: chain and market.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MarketLabel {
    pub chain: String,
    pub market: String,
}

/// Labels: chain, market and how a round ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub chain: String,
    pub market: String,
    pub result: String,
}

type DelayFamily = Family<ChainLabel, Histogram, fn() -> Histogram>;

fn delay_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// Every metric the keeper exports.
pub struct Metrics {
    pub registry: Registry,
    pub checkpoints: Family<MarketLabel, Counter>,
    pub missed_checkpoints: Family<MarketLabel, Counter>,
    pub rounds: Family<ResultLabel, Counter>,
    pub settlement_delay_blocks: DelayFamily,
    pub head_block: Family<ChainLabel, Gauge>,
    pub lag_seconds: Family<ChainLabel, Gauge>,
    pub healthy: Family<ChainLabel, Gauge>,
    pub tx_sent: Family<ChainLabel, Gauge>,
    pub tx_confirmed: Family<ChainLabel, Gauge>,
    pub tx_bumped: Family<ChainLabel, Gauge>,
    pub tx_rebroadcast: Family<ChainLabel, Gauge>,
    pub tx_reorged: Family<ChainLabel, Gauge>,
    pub gas_used: Family<ChainLabel, Gauge>,
    pub rpc_failovers: Family<ChainLabel, Gauge>,
    pub rpc_transport_errors: Family<ChainLabel, Gauge>,
    pub forecast_p_up_bps: Family<MarketLabel, Gauge>,
    pub predictions_committed: Family<MarketLabel, Counter>,
    pub predictions_revealed: Family<MarketLabel, Counter>,
    pub signals_published: Gauge,
    pub lease_leader: Family<MarketLabel, Gauge>,
    pub lease_epoch: Family<MarketLabel, Gauge>,
    pub lease_takeovers: Family<MarketLabel, Counter>,
    pub lease_losses: Family<MarketLabel, Counter>,
    /// The API's limits: refusals, drops, open connections and WebSocket subscribers.
    pub guard: kronos_common::http_guard::GuardMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("kronos");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        Metrics {
            checkpoints: reg!("checkpoints_recorded", "Checkpoints recorded by this keeper", Family::default()),
            missed_checkpoints: reg!(
                "checkpoints_missed",
                "Checkpoints that could no longer be recorded usefully",
                Family::default()
            ),
            rounds: reg!("rounds_finished", "Rounds finished, by result (settled, cancelled)", Family::default()),
            settlement_delay_blocks: reg!(
                "settlement_delay_blocks",
                "Blocks between the first block after a checkpoint time and the block that recorded it",
                DelayFamily::new_with_constructor(delay_histogram)
            ),
            head_block: reg!("chain_head_block", "Latest block seen", Family::default()),
            lag_seconds: reg!("chain_lag_seconds", "Wall clock minus the head block's timestamp", Family::default()),
            healthy: reg!("chain_healthy", "1 when the chain's last RPC round trip succeeded", Family::default()),
            tx_sent: reg!("tx_sent", "Transactions broadcast (replacements included)", Family::default()),
            tx_confirmed: reg!("tx_confirmed", "Transactions confirmed", Family::default()),
            tx_bumped: reg!("tx_fee_bumps", "Replacements with higher fees", Family::default()),
            tx_rebroadcast: reg!(
                "tx_rebroadcasts",
                "Transactions broadcast again after leaving the pool",
                Family::default()
            ),
            tx_reorged: reg!("tx_reorged", "Receipts lost to a reorganisation before confirmation", Family::default()),
            gas_used: reg!("gas_used", "Gas used by confirmed transactions", Family::default()),
            rpc_failovers: reg!("rpc_failovers", "Switches to another RPC endpoint", Family::default()),
            rpc_transport_errors: reg!("rpc_transport_errors", "Failed RPC attempts", Family::default()),
            forecast_p_up_bps: reg!("forecast_p_up_bps", "Latest revealed P(up) in basis points", Family::default()),
            predictions_committed: reg!("predictions_committed", "Forecasts committed", Family::default()),
            predictions_revealed: reg!("predictions_revealed", "Forecasts revealed", Family::default()),
            signals_published: reg!("signals_published", "Signals published on the bus", Gauge::default()),
            lease_leader: reg!("lease_leader", "1 while this keeper holds the market's lease", Family::default()),
            lease_epoch: reg!("lease_epoch", "The market's lease epoch as last seen", Family::default()),
            lease_takeovers: reg!(
                "lease_takeovers",
                "Leases this keeper took over from another keeper",
                Family::default()
            ),
            lease_losses: reg!("lease_losses", "Leases this keeper lost (it stopped sending)", Family::default()),
            guard: {
                let g = kronos_common::http_guard::GuardMetrics::default();
                g.register(&mut r);
                g
            },
            registry: r,
        }
    }
}

impl Metrics {
    /// Copies counters kept elsewhere (transaction manager, RPC transport) into the gauges.
    pub fn refresh(&self, chains: &[std::sync::Arc<crate::chain::ChainRuntime>], bus: &kronos_common::Bus) {
        for c in chains {
            let l = ChainLabel { chain: c.name.clone() };
            let t = &c.tx.counters;
            self.tx_sent.get_or_create(&l).set(t.sent.load(Ordering::Relaxed) as i64);
            self.tx_confirmed.get_or_create(&l).set(t.confirmed.load(Ordering::Relaxed) as i64);
            self.tx_bumped.get_or_create(&l).set(t.bumped.load(Ordering::Relaxed) as i64);
            self.tx_rebroadcast.get_or_create(&l).set(t.rebroadcast.load(Ordering::Relaxed) as i64);
            self.tx_reorged.get_or_create(&l).set(t.reorged.load(Ordering::Relaxed) as i64);
            self.gas_used.get_or_create(&l).set(t.gas_used.load(Ordering::Relaxed) as i64);
            self.rpc_failovers.get_or_create(&l).set(c.transport.failovers() as i64);
            self.rpc_transport_errors.get_or_create(&l).set(c.transport.transport_errors() as i64);
            let h = c.health.lock().clone();
            self.head_block.get_or_create(&l).set(h.head_block as i64);
            self.lag_seconds.get_or_create(&l).set(h.lag_s as i64);
            self.healthy.get_or_create(&l).set(h.healthy as i64);
        }
        self.signals_published.set(bus.published() as i64);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("metrics encode");
        s
    }
}
