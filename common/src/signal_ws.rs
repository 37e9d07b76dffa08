//! Serving the signal bus over a WebSocket (`/ws?types=a,b`): every signal as one JSON text message, a
//! `{"type":"lagged","lost":n}` note when the socket fell behind. The keeper and the copy-trader both mount it.
//! A *sealed* stream (a client without the service's API token) leaves out the signals that carry a forecast before
//! its on-chain reveal ([`reveals_forecast_early`]).

use axum::extract::ws::{Message, WebSocket};

use crate::Bus;

/// The `types` query parameter: comma-separated signal type names (`None`: all).
pub fn parse_types(types: Option<&str>) -> Option<Vec<String>> {
    types.map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
}

/// Signals that carry the forecaster's probability before the prediction is revealed on chain (the live forecast and
/// the committed value). Publishing them to anyone would let others copy the forecast before the round locks.
pub fn reveals_forecast_early(kind: &crate::SignalKind) -> bool {
    matches!(kind, crate::SignalKind::Forecast { .. } | crate::SignalKind::PredictionCommitted { .. })
}

/// Streams the bus to one socket until either side closes; `sealed` leaves out [`reveals_forecast_early`] signals.
pub async fn stream(mut socket: WebSocket, bus: Bus, filter: Option<Vec<String>>, sealed: bool) {
    let mut rx = bus.subscribe();
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
            sig = rx.recv() => match sig {
                Ok(sig) => {
                    if sealed && reveals_forecast_early(&sig.kind) {
                        continue;
                    }
                    if let Some(f) = &filter {
                        if !f.contains(&sig.kind.name()) {
                            continue;
                        }
                    }
                    let text = serde_json::to_string(&*sig).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let note = serde_json::json!({ "type": "lagged", "lost": n }).to_string();
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// Follows a signal WebSocket (`ws://…/ws`, optionally `?types=…`) until `tx` closes, reconnecting with back-off
/// (250 ms doubling to 30 s). `token` is sent as `Authorization: Bearer …` (never in the URL, which is logged).
/// Messages that are not signals (the `lagged` note, malformed text) are logged and skipped.
pub async fn follow(url: String, token: Option<crate::Secret>, tx: tokio::sync::mpsc::Sender<crate::Signal>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        if tx.is_closed() {
            return;
        }
        let request = url.as_str().into_client_request().map(|mut r| {
            if let Some(t) = &token {
                if let Ok(v) = format!("Bearer {}", t.expose()).parse() {
                    r.headers_mut().insert("authorization", v);
                }
            }
            r
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%url, error = %e, "signal stream: not a WebSocket URL");
                return;
            }
        };
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut ws, _)) => {
                backoff = std::time::Duration::from_millis(250);
                tracing::info!(%url, "connected to a signal stream");
                while let Some(msg) = ws.next().await {
                    let text = match msg {
                        Ok(WsMessage::Text(t)) => t.to_string(),
                        Ok(WsMessage::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    match serde_json::from_str::<crate::Signal>(&text) {
                        Ok(sig) => {
                            if tx.send(sig).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            if text.contains("\"lagged\"") {
                                tracing::warn!(%url, %text, "signal stream: this reader fell behind");
                            } else {
                                tracing::warn!(%url, error = %e, "signal stream: a message that is not a signal was skipped");
                            }
                        }
                    }
                }
                tracing::warn!(%url, "signal stream closed; reconnecting");
            }
            Err(e) => tracing::warn!(%url, error = %e, "signal stream unreachable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}
