//! AI-signal mode: a forecast's Kelly-sized target, and when it expires.

use std::collections::BTreeMap;

use kronos_common::Decimal;

use crate::config::AiConfig;
use crate::engine::AiView;
use crate::sizing::{kelly, Kelly, KellyTarget};

/// The AI target of a symbol.
#[derive(Debug, Clone)]
pub(crate) struct AiTarget {
    pub(crate) qty: Decimal,
    pub(crate) expires_ms: i64,
    pub(crate) view: AiView,
}

/// The target a forecast (`p_up_bps`, the probability that the price is up at its horizon) asks for: Kelly sizing
/// with the configured fraction, payoff, minimum edge and notional cap, risking the stop distance.
pub(crate) fn forecast_target(
    ai: &AiConfig,
    stop_loss_pct: Decimal,
    p_up_bps: u16,
    equity: Decimal,
    mark: Decimal,
) -> KellyTarget {
    let k = Kelly {
        fraction: ai.kelly_fraction,
        payoff: ai.payoff,
        min_edge: ai.min_edge,
        max_notional: ai.max_notional,
        stop_loss_pct,
    };
    kelly(p_up_bps, equity, mark, &k)
}

/// When a forecast made at `at_ms` for `horizon_s` stops counting: at its horizon.
pub(crate) fn expires_ms(at_ms: u64, horizon_s: u64) -> i64 {
    at_ms as i64 + (horizon_s as i64) * 1000
}

/// The symbols whose AI target has reached its horizon at `now_ms` (back to flat).
pub(crate) fn expired(targets: &BTreeMap<String, AiTarget>, now_ms: i64) -> Vec<String> {
    targets.iter().filter(|(_, t)| t.expires_ms <= now_ms).map(|(s, _)| s.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SignalSource;
    use crate::decide::testing::d;

    fn cfg() -> AiConfig {
        AiConfig {
            source: SignalSource::Bus,
            markets: BTreeMap::new(),
            kelly_fraction: d("0.5"),
            payoff: d("1"),
            min_edge: d("0.02"),
            max_notional: d("5000"),
            social_gate: None,
        }
    }

    fn target(qty: &str, expires_ms: i64) -> AiTarget {
        AiTarget {
            qty: d(qty),
            expires_ms,
            view: AiView {
                symbol: "BTCUSDT".into(),
                market: "anvil:btc".into(),
                epoch: 1,
                p_up_bps: 6000,
                edge: "0.2".into(),
                qty: qty.into(),
                expires_ms,
            },
        }
    }

    #[test]
    fn a_forecast_is_sized_with_the_configured_kelly_fraction_and_the_stop_distance() {
        // p = 0.6, b = 1: f* = 0.2; stake 0.5 × 0.2 × 1000 = 100; at a 2% stop: 5000 notional = 0.1 at 50000.
        let t = forecast_target(&cfg(), d("2"), 6000, d("1000"), d("50000"));
        assert_eq!((t.edge, t.notional, t.qty), (d("0.2"), d("5000"), d("0.1")));
        // A 4% stop risks the same stake on half the notional.
        let t = forecast_target(&cfg(), d("4"), 6000, d("1000"), d("50000"));
        assert_eq!((t.notional, t.qty), (d("2500"), d("0.05")));
        // The notional cap, and the minimum edge.
        let t = forecast_target(&AiConfig { max_notional: d("1000"), ..cfg() }, d("2"), 6000, d("1000"), d("50000"));
        assert_eq!(t.qty, d("0.02"));
        let t = forecast_target(&AiConfig { min_edge: d("0.21"), ..cfg() }, d("2"), 6000, d("1000"), d("50000"));
        assert!(t.qty.is_zero());
        // Bearish: short.
        assert_eq!(forecast_target(&cfg(), d("2"), 4000, d("1000"), d("50000")).qty, d("-0.1"));
    }

    #[test]
    fn an_ai_target_lasts_until_the_forecast_horizon() {
        assert_eq!(expires_ms(1_000, 3600), 3_601_000);
        let targets: BTreeMap<String, AiTarget> =
            [("BTCUSDT".to_string(), target("0.1", 3_601_000)), ("ETHUSDT".to_string(), target("1", 3_700_000))].into();
        assert!(expired(&targets, 3_600_999).is_empty());
        assert_eq!(expired(&targets, 3_601_000), ["BTCUSDT"]);
        assert_eq!(expired(&targets, 3_700_000), ["BTCUSDT", "ETHUSDT"]);
    }
}
