//! Typed signals and the in-process bus.
//!
//! Every part publishes what happens as a [`Signal`]: the keeper (rounds, prices, transactions, health), the
//! forecaster (forecasts, commitments, track record), the copy-trader (orders, fills, positions, risk). Subscribers
//! (the WebSocket API, Telegram alerts, the copy-trader's AI mode) each get their own receiver. A slow subscriber
//! loses the oldest signals, never blocks a publisher; the loss is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::decimal::Decimal;

/// The price outcome of a round: the API's type (one definition, same wire strings `up`, `down`, `tie`, `none`;
/// `TryFrom<u8>` from the contracts' `IKronosMarket.Outcome`).
pub use kronos_api_types::{Outcome, UnknownOutcome};

/// Why a round was refunded: the API's type (same wire strings as the contracts' `CancelReason`, `lock_price_unusable`,
/// `close_price_unusable`, `tie`, `one_sided_pool`, `expired`).
pub use kronos_api_types::CancelReason;

/// Side of an exchange order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

/// What a lead account did to a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadAction {
    Open,
    Increase,
    Reduce,
    Close,
    Flip,
}

/// One signal: when, from which part, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The publishing part, e.g. `keeper`, `forecaster`, `copytrader`.
    pub source: String,
    #[serde(flatten)]
    pub kind: SignalKind,
}

/// Every signal type's wire name (the JSON `type` of each [`SignalKind`], in the order of
/// [`SignalKind::type_index`]), and last `lagged`, the WebSocket hub's own note (no variant; the index a `/ws?types=`
/// filter never sets, so it always passes). The one spelling of the names: [`SignalKind::name`] reads it, and a test
/// checks it against the serialised `type`.
pub const SIGNAL_TYPES: [&str; 20] = [
    "round_started",
    "round_locked",
    "round_settled",
    "round_cancelled",
    "price_read",
    "tx_sent",
    "tx_confirmed",
    "tx_failed",
    "keeper_health",
    "forecast",
    "prediction_committed",
    "prediction_revealed",
    "lead_changed",
    "order_submitted",
    "order_filled",
    "stop_placed",
    "stop_triggered",
    "position_changed",
    "risk_event",
    "lagged",
];

/// What happened. Amounts on chain are decimal strings of base units (wei); prices are exact decimals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalKind {
    RoundStarted {
        chain: String,
        market: u64,
        epoch: u64,
        start_at: u64,
        lock_at: u64,
        close_at: u64,
    },
    RoundLocked {
        chain: String,
        market: u64,
        epoch: u64,
        lock_price: Decimal,
        round_id: String,
    },
    RoundSettled {
        chain: String,
        market: u64,
        epoch: u64,
        outcome: Outcome,
        lock_price: Decimal,
        close_price: Decimal,
        total_wei: String,
        reward_wei: String,
        treasury_fee_wei: String,
        delay_blocks: u64,
    },
    RoundCancelled {
        chain: String,
        market: u64,
        epoch: u64,
        reason: CancelReason,
        outcome: Outcome,
    },
    PriceRead {
        chain: String,
        pair: String,
        price: Decimal,
        round_id: String,
        updated_at: u64,
    },
    TxSent {
        chain: String,
        action: String,
        tx_hash: String,
        nonce: u64,
    },
    TxConfirmed {
        chain: String,
        action: String,
        tx_hash: String,
        block: u64,
        gas_used: u64,
    },
    TxFailed {
        chain: String,
        action: String,
        error: String,
    },
    KeeperHealth {
        chain: String,
        healthy: bool,
        head_block: u64,
        lag_s: u64,
        detail: String,
    },
    Forecast {
        chain: String,
        market: u64,
        epoch: u64,
        p_up: f64,
        horizon_s: u64,
        model: String,
    },
    PredictionCommitted {
        chain: String,
        market: u64,
        epoch: u64,
        p_up_bps: u16,
    },
    PredictionRevealed {
        chain: String,
        market: u64,
        epoch: u64,
        p_up_bps: u16,
        outcome: Outcome,
        hit: Option<bool>,
        /// Running on-chain record of the publisher after this reveal.
        scored: u64,
        hits: u64,
        mean_brier: f64,
    },
    LeadChanged {
        symbol: String,
        action: LeadAction,
        from_qty: Decimal,
        to_qty: Decimal,
    },
    OrderSubmitted {
        symbol: String,
        side: Side,
        qty: Decimal,
        order_type: String,
        reduce_only: bool,
        client_order_id: String,
        paper: bool,
    },
    OrderFilled {
        symbol: String,
        side: Side,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        realized_pnl: Decimal,
        client_order_id: String,
        paper: bool,
    },
    StopPlaced {
        symbol: String,
        stop_price: Decimal,
        client_order_id: String,
    },
    StopTriggered {
        symbol: String,
        stop_price: Decimal,
        qty: Decimal,
    },
    PositionChanged {
        symbol: String,
        qty: Decimal,
        entry_price: Decimal,
    },
    RiskEvent {
        kind: String,
        detail: String,
    },
}

impl SignalKind {
    /// The alert category, used for per-category notification settings.
    pub fn category(&self) -> &'static str {
        match self {
            SignalKind::RoundStarted { .. } | SignalKind::RoundLocked { .. } => "round",
            SignalKind::RoundSettled { .. } => "settlement",
            SignalKind::RoundCancelled { .. } => "refund",
            SignalKind::PriceRead { .. } => "price",
            SignalKind::TxSent { .. } | SignalKind::TxConfirmed { .. } => "transaction",
            SignalKind::TxFailed { .. } => "keeper_failure",
            SignalKind::KeeperHealth { healthy: false, .. } => "keeper_failure",
            SignalKind::KeeperHealth { healthy: true, .. } => "keeper_recovery",
            SignalKind::Forecast { .. }
            | SignalKind::PredictionCommitted { .. }
            | SignalKind::PredictionRevealed { .. } => "prediction",
            SignalKind::LeadChanged { .. } => "lead",
            SignalKind::OrderSubmitted { .. } => "order",
            SignalKind::OrderFilled { .. } | SignalKind::PositionChanged { .. } => "fill",
            SignalKind::StopPlaced { .. } | SignalKind::StopTriggered { .. } => "stop",
            SignalKind::RiskEvent { .. } => "risk",
        }
    }

    /// The position of the variant's name in [`SIGNAL_TYPES`].
    pub fn type_index(&self) -> usize {
        use SignalKind as K;
        match self {
            K::RoundStarted { .. } => 0,
            K::RoundLocked { .. } => 1,
            K::RoundSettled { .. } => 2,
            K::RoundCancelled { .. } => 3,
            K::PriceRead { .. } => 4,
            K::TxSent { .. } => 5,
            K::TxConfirmed { .. } => 6,
            K::TxFailed { .. } => 7,
            K::KeeperHealth { .. } => 8,
            K::Forecast { .. } => 9,
            K::PredictionCommitted { .. } => 10,
            K::PredictionRevealed { .. } => 11,
            K::LeadChanged { .. } => 12,
            K::OrderSubmitted { .. } => 13,
            K::OrderFilled { .. } => 14,
            K::StopPlaced { .. } => 15,
            K::StopTriggered { .. } => 16,
            K::PositionChanged { .. } => 17,
            K::RiskEvent { .. } => 18,
        }
    }

    /// The snake_case name of the variant, as in the JSON `type` field.
    pub fn name(&self) -> String {
        SIGNAL_TYPES[self.type_index()].to_string()
    }

    /// The chain the signal concerns (rounds, prices, transactions, health, forecasts); `None` for the
    /// copy-trader's signals.
    pub fn chain(&self) -> Option<&str> {
        use SignalKind as K;
        match self {
            K::RoundStarted { chain, .. }
            | K::RoundLocked { chain, .. }
            | K::RoundSettled { chain, .. }
            | K::RoundCancelled { chain, .. }
            | K::PriceRead { chain, .. }
            | K::TxSent { chain, .. }
            | K::TxConfirmed { chain, .. }
            | K::TxFailed { chain, .. }
            | K::KeeperHealth { chain, .. }
            | K::Forecast { chain, .. }
            | K::PredictionCommitted { chain, .. }
            | K::PredictionRevealed { chain, .. } => Some(chain),
            K::LeadChanged { .. }
            | K::OrderSubmitted { .. }
            | K::OrderFilled { .. }
            | K::StopPlaced { .. }
            | K::StopTriggered { .. }
            | K::PositionChanged { .. }
            | K::RiskEvent { .. } => None,
        }
    }
}

/// The in-process signal bus: cheap to clone, many publishers, many subscribers.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Signal>>,
    published: Arc<AtomicU64>,
    capacity: usize,
}

impl Bus {
    /// A bus that keeps up to `capacity` signals for each slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(16);
        let (tx, _) = broadcast::channel(capacity);
        Bus { tx, published: Arc::new(AtomicU64::new(0)), capacity }
    }

    /// How many signals a slow subscriber may fall behind before it skips ahead.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Publishes a signal stamped now.
    pub fn publish(&self, source: &str, kind: SignalKind) {
        self.publish_signal(Signal { at_ms: crate::time::now_ms(), source: source.to_string(), kind });
    }

    /// Publishes a complete signal.
    pub fn publish_signal(&self, signal: Signal) {
        self.published.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: signals are fire-and-forget.
        let _ = self.tx.send(Arc::new(signal));
    }

    /// A new receiver that sees every signal published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Signal>> {
        self.tx.subscribe()
    }

    /// Signals published since the bus was made.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Current number of subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_take_the_contracts_values_and_keep_their_stored_form() {
        let all = [Outcome::None, Outcome::Up, Outcome::Down, Outcome::Tie];
        for (v, o) in all.iter().enumerate() {
            assert_eq!(Outcome::try_from(v as u8), Ok(*o));
            // The text stored and served is the serde form (what `format!("{:?}").to_lowercase()` gave before).
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
            assert_eq!(o.to_string(), format!("{o:?}").to_lowercase());
        }
        assert_eq!(Outcome::try_from(4).unwrap_err().to_string(), "IKronosMarket.Outcome has no value 4");
    }

    /// Every variant, read from one JSON object holding every variant's fields under each name of [`SIGNAL_TYPES`].
    fn every_kind() -> Vec<SignalKind> {
        let fields: serde_json::Value = serde_json::from_str(
            r#"{
            "chain": "base", "market": 1, "epoch": 7, "start_at": 1, "lock_at": 2, "close_at": 3, "lock_price": "1",
            "round_id": "9", "outcome": "up", "close_price": "2", "total_wei": "0", "reward_wei": "0",
            "treasury_fee_wei": "0", "delay_blocks": 0, "reason": "tie", "pair": "BTC/USD", "price": "1",
            "updated_at": 1, "action": "open", "tx_hash": "0x1", "nonce": 0, "block": 1, "gas_used": 1, "error": "e",
            "healthy": true, "head_block": 1, "lag_s": 0, "detail": "d", "p_up": 0.5, "horizon_s": 60, "model": "m",
            "p_up_bps": 5000, "hit": true, "scored": 1, "hits": 1, "mean_brier": 0.2, "symbol": "BTCUSDT",
            "from_qty": "0", "to_qty": "1", "side": "BUY", "qty": "1", "order_type": "MARKET", "reduce_only": false,
            "client_order_id": "c", "paper": true, "fee": "0", "realized_pnl": "0", "stop_price": "1",
            "entry_price": "1", "kind": "k"
        }"#,
        )
        .unwrap();
        // Every name but `lagged` (no variant), each read by serde's own spelling of the tag: a name that is no
        // variant's fails here.
        SIGNAL_TYPES[..SIGNAL_TYPES.len() - 1]
            .iter()
            .map(|t| {
                let mut v = fields.clone();
                v["type"] = serde_json::json!(t);
                serde_json::from_value(v).unwrap_or_else(|e| panic!("{t}: {e}"))
            })
            .collect()
    }

    #[test]
    fn name_and_chain_are_the_json_type_and_chain() {
        let kinds = every_kind();
        assert_eq!(kinds.len(), 19);
        let indexes: std::collections::BTreeSet<usize> = kinds.iter().map(SignalKind::type_index).collect();
        assert_eq!(indexes, (0..SIGNAL_TYPES.len() - 1).collect(), "one index per variant, lagged's none");
        for k in kinds {
            let v = serde_json::to_value(&k).unwrap();
            assert_eq!(Some(k.name().as_str()), v["type"].as_str(), "{k:?}");
            assert_eq!(k.chain(), v.get("chain").and_then(|c| c.as_str()), "{k:?}");
        }
    }

    #[test]
    fn json_shape_is_flat_and_tagged() {
        let s = Signal {
            at_ms: 1,
            source: "keeper".into(),
            kind: SignalKind::RoundLocked {
                chain: "base".into(),
                market: 1,
                epoch: 7,
                lock_price: "65000.12".parse().unwrap(),
                round_id: "42".into(),
            },
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "round_locked");
        assert_eq!(v["lock_price"], "65000.12");
        assert_eq!(v["source"], "keeper");
        let back: Signal = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.kind.name(), "round_locked");
        assert_eq!(s.kind.category(), "round");
    }

    /// The refund's reason is typed; its bytes on the wire are the text it was before (a string field).
    #[test]
    fn a_refund_s_reason_is_typed_and_its_bytes_are_unchanged() {
        let s = Signal {
            at_ms: 1,
            source: "keeper".into(),
            kind: SignalKind::RoundCancelled {
                chain: "base".into(),
                market: 1,
                epoch: 7,
                reason: CancelReason::LockPriceUnusable,
                outcome: Outcome::None,
            },
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"at_ms":1,"source":"keeper","type":"round_cancelled","chain":"base","market":1,"epoch":7,"reason":"lock_price_unusable","outcome":"none"}"#
        );
        assert_eq!(serde_json::from_str::<Signal>(&text).unwrap(), s);
        let reasons = [
            (CancelReason::LockPriceUnusable, "lock_price_unusable"),
            (CancelReason::ClosePriceUnusable, "close_price_unusable"),
            (CancelReason::Tie, "tie"),
            (CancelReason::OneSidedPool, "one_sided_pool"),
            (CancelReason::Expired, "expired"),
        ];
        for (r, wire) in reasons {
            assert_eq!(serde_json::to_value(r).unwrap(), wire);
            assert_eq!(r.to_string(), wire, "the alerts and the social mirror print it the same");
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_signal_and_slow_ones_lag_not_block() {
        let bus = Bus::new(16);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        for i in 0..40u64 {
            bus.publish("test", SignalKind::RiskEvent { kind: "n".into(), detail: i.to_string() });
        }
        // `a` drains: it lagged (capacity 16) and sees the newest 16.
        let mut lagged = 0;
        let mut seen = Vec::new();
        loop {
            match a.try_recv() {
                Ok(s) => seen.push(s),
                Err(broadcast::error::TryRecvError::Lagged(n)) => lagged += n,
                Err(_) => break,
            }
        }
        assert_eq!(lagged, 24);
        assert_eq!(seen.len(), 16);
        assert!(matches!(&seen.last().unwrap().kind, SignalKind::RiskEvent { detail, .. } if detail == "39"));
        assert!(b.try_recv().is_err() || bus.published() == 40);
        assert_eq!(bus.published(), 40);
    }
}
