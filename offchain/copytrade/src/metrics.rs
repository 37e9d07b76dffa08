//! Prometheus metrics of the copy-trader (`/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrderLabel {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// What a failed store write was to record (`lead`, `order`, `equity`, `fill`, `position`, `paper_wallet`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    pub what: String,
}

/// Every metric the copy-trader exports.
pub struct Metrics {
    registry: Registry,
    pub orders: Family<OrderLabel, Counter>,
    pub fills: Counter,
    pub lead_events: Family<KindLabel, Counter>,
    pub risk_events: Family<KindLabel, Counter>,
    /// Store writes that failed (the engine went on without them), by what they were to record.
    pub store_errors: Family<WhatLabel, Counter>,
    pub ai_signals: Counter,
    /// AI entries refused by the social gate (score low, stale, monitor unreadable).
    pub ai_gate_refused: Counter,
    /// Seconds from a lead fill arriving on the user-data stream to the follower's order request.
    pub mirror_delay: Histogram,
    pub equity: Gauge<f64, AtomicU64>,
    pub open_positions: Gauge,
    pub emergency: Gauge,
    pub entries_blocked: Gauge,
    pub stream_connected: Gauge,
    /// The HTTP service's limits: refusals, drops, open connections and WebSocket subscribers.
    pub guard: kronos_common::http_guard::GuardMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kronos_copytrade");
        let m = Metrics {
            orders: Family::default(),
            fills: Counter::default(),
            lead_events: Family::default(),
            risk_events: Family::default(),
            store_errors: Family::default(),
            ai_signals: Counter::default(),
            ai_gate_refused: Counter::default(),
            mirror_delay: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            equity: Gauge::default(),
            open_positions: Gauge::default(),
            emergency: Gauge::default(),
            entries_blocked: Gauge::default(),
            stream_connected: Gauge::default(),
            guard: Default::default(),
            registry: Registry::default(),
        };
        registry.register("orders", "Orders by kind (order, stop) and result", m.orders.clone());
        registry.register("fills", "Fills recorded", m.fills.clone());
        registry.register("lead_events", "Lead position changes by action", m.lead_events.clone());
        registry.register("risk_events", "Risk events by kind", m.risk_events.clone());
        registry.register(
            "store_errors",
            "Store writes that failed and were not recorded (the engine went on), by what they were to record",
            m.store_errors.clone(),
        );
        registry.register("ai_signals", "Forecast signals received for mapped markets", m.ai_signals.clone());
        registry.register(
            "ai_gate_refused",
            "AI entries refused by the social gate (score below the threshold, stale or unreadable monitor)",
            m.ai_gate_refused.clone(),
        );
        registry.register(
            "mirror_delay_seconds",
            "Lead fill on the stream to follower order request",
            m.mirror_delay.clone(),
        );
        registry.register("equity", "Account equity in the quote asset (display only)", m.equity.clone());
        registry.register("open_positions", "Follower positions open", m.open_positions.clone());
        registry.register("emergency_stop", "1 while the emergency stop is active", m.emergency.clone());
        registry.register(
            "entries_blocked",
            "1 while new entries are blocked (loss limit, cool-down, emergency)",
            m.entries_blocked.clone(),
        );
        registry.register(
            "lead_stream_connected",
            "1 while the lead's user-data stream is up",
            m.stream_connected.clone(),
        );
        m.guard.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
