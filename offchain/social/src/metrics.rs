//! The monitor's Prometheus metrics (`/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabel {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub source: String,
    pub kind: String,
}

/// Cheap to clone (the families share their cells).
#[derive(Clone)]
pub struct Metrics {
    pub accepted: Family<SourceLabel, Counter>,
    pub skipped: Family<SkipLabel, Counter>,
    /// Stored items edited at their source and scored again.
    pub edited: Family<SourceLabel, Counter>,
    /// Stored items deleted at their source (no longer served).
    pub deleted: Family<SourceLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub up: Family<SourceLabel, Gauge>,
    pub batch_seconds: Histogram,
    pub ws_clients: Gauge,
    pub ws_sent: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            accepted: Default::default(),
            skipped: Default::default(),
            edited: Default::default(),
            deleted: Default::default(),
            errors: Default::default(),
            up: Default::default(),
            batch_seconds: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            ws_clients: Default::default(),
            ws_sent: Default::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("social_items_accepted", "Items accepted, stored and fanned out", self.accepted.clone());
        r.register("social_items_skipped", "Items skipped, by reason", self.skipped.clone());
        r.register("social_items_edited", "Stored items edited at their source and scored again", self.edited.clone());
        r.register(
            "social_items_deleted",
            "Stored items deleted at their source, no longer served",
            self.deleted.clone(),
        );
        r.register(
            "social_source_errors",
            "Failed source calls, by kind (transient, rate_limited, fatal, store)",
            self.errors.clone(),
        );
        r.register("social_source_up", "1 while the source's last call succeeded", self.up.clone());
        r.register("social_batch_seconds", "Pipeline and store time per batch", self.batch_seconds.clone());
        r.register("social_ws_clients", "WebSocket clients connected", self.ws_clients.clone());
        r.register("social_ws_items_sent", "Items sent to WebSocket clients", self.ws_sent.clone());
    }
}
