//! Forecast signals for AI-signal mode: from the in-process bus, or from the keeper's WebSocket API (`/ws`, every
//! signal as JSON) with reconnection. Only `forecast` signals of mapped markets pass.

use kronos_common::{Bus, Signal, SignalKind};
use tokio::sync::mpsc;

/// One forecast for a mapped market.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// `"<chain>:<market>"`.
    pub market: String,
    pub epoch: u64,
    /// Calibrated probability that the price is up at the horizon, in basis points.
    pub p_up_bps: u16,
    pub horizon_s: u64,
    pub model: String,
    pub at_ms: u64,
}

/// Turns a signal into a forecast, if it is one.
pub fn forecast_of(sig: &Signal) -> Option<Forecast> {
    match &sig.kind {
        SignalKind::Forecast { chain, market, epoch, p_up, horizon_s, model } => {
            if !p_up.is_finite() || !(0.0..=1.0).contains(p_up) {
                tracing::warn!(p_up, "forecast signal with a probability outside [0, 1] ignored");
                return None;
            }
            Some(Forecast {
                market: format!("{chain}:{market}"),
                epoch: *epoch,
                p_up_bps: (p_up * 10_000.0).round() as u16,
                horizon_s: *horizon_s,
                model: model.clone(),
                at_ms: sig.at_ms,
            })
        }
        _ => None,
    }
}

/// Forwards forecasts from the in-process bus until `tx` closes.
pub async fn from_bus(bus: Bus, tx: mpsc::Sender<Forecast>) {
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(sig) => {
                if let Some(f) = forecast_of(&sig) {
                    if tx.send(f).await.is_err() {
                        return;
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "copy-trader fell behind the signal bus");
            }
            Err(_) => return,
        }
    }
}

/// Forwards forecasts from the keeper's WebSocket (`ws://…/ws`) until `tx` closes, reconnecting with back-off;
/// `token` is the keeper's API token (without it the keeper leaves forecasts out until they are revealed).
pub async fn from_websocket(url: String, token: Option<kronos_common::Secret>, tx: mpsc::Sender<Forecast>) {
    let url = if url.contains('?') { url } else { format!("{url}?types=forecast") };
    let (sig_tx, mut sig_rx) = mpsc::channel::<Signal>(256);
    let follower = tokio::spawn(kronos_common::signal_ws::follow(url, token, sig_tx));
    while let Some(sig) = sig_rx.recv().await {
        if let Some(f) = forecast_of(&sig) {
            if tx.send(f).await.is_err() {
                break;
            }
        }
    }
    follower.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_forecasts_pass() {
        let mk = |p: f64| Signal {
            at_ms: 5,
            source: "forecaster".into(),
            kind: SignalKind::Forecast {
                chain: "base".into(),
                market: 1,
                epoch: 9,
                p_up: p,
                horizon_s: 300,
                model: "m".into(),
            },
        };
        let f = forecast_of(&mk(0.6123)).unwrap();
        assert_eq!((f.market.as_str(), f.p_up_bps, f.epoch), ("base:1", 6123, 9));
        assert!(forecast_of(&mk(f64::NAN)).is_none());
        assert!(forecast_of(&mk(1.5)).is_none());
        let other = Signal {
            at_ms: 1,
            source: "x".into(),
            kind: SignalKind::RiskEvent { kind: "k".into(), detail: "d".into() },
        };
        assert!(forecast_of(&other).is_none());
    }
}
