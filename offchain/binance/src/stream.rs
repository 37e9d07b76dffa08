//! The user-data stream: a listenKey from REST, a WebSocket to `<ws>/ws/<listenKey>`, keep-alive every 30 minutes,
//! reconnection with back-off (and a fresh key after `listenKeyExpired` or a refused keep-alive), parsed events.
//!
//! Every (re)connection is announced with [`StreamEvent::Connected`]; events sent while the socket was down are
//! lost, so the consumer must reconcile through REST on every `Connected`.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use kronos_common::Decimal;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::FuturesClient;
use crate::types::Side;

/// `ORDER_TRADE_UPDATE`: an order's new state, with the last fill when there was one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderUpdate {
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "c")]
    pub client_order_id: String,
    #[serde(rename = "S")]
    pub side: Side,
    #[serde(rename = "o")]
    pub order_type: String,
    #[serde(rename = "q")]
    pub orig_qty: Decimal,
    #[serde(rename = "ap", default)]
    pub avg_price: Decimal,
    /// Execution type: NEW, CANCELED, CALCULATED (liquidation), EXPIRED, TRADE, AMENDMENT.
    #[serde(rename = "x")]
    pub execution_type: String,
    /// Order status: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, EXPIRED_IN_MATCH.
    #[serde(rename = "X")]
    pub status: String,
    #[serde(rename = "i")]
    pub order_id: i64,
    /// Last filled quantity.
    #[serde(rename = "l", default)]
    pub last_qty: Decimal,
    /// Cumulative filled quantity.
    #[serde(rename = "z", default)]
    pub filled_qty: Decimal,
    /// Last fill price.
    #[serde(rename = "L", default)]
    pub last_price: Decimal,
    /// Commission of the last fill.
    #[serde(rename = "n", default)]
    pub commission: Decimal,
    #[serde(rename = "T", default)]
    pub trade_time: i64,
    #[serde(rename = "rp", default)]
    pub realized_pnl: Decimal,
    #[serde(rename = "R", default)]
    pub reduce_only: bool,
    #[serde(rename = "ps", default)]
    pub position_side: String,
}

/// One position of an `ACCOUNT_UPDATE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PositionUpdate {
    #[serde(rename = "s")]
    pub symbol: String,
    /// Signed position amount.
    #[serde(rename = "pa")]
    pub amount: Decimal,
    #[serde(rename = "ep")]
    pub entry_price: Decimal,
    #[serde(rename = "up", default)]
    pub unrealized_pnl: Decimal,
    #[serde(rename = "ps", default)]
    pub position_side: String,
}

/// One balance of an `ACCOUNT_UPDATE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BalanceUpdate {
    #[serde(rename = "a")]
    pub asset: String,
    #[serde(rename = "wb")]
    pub wallet_balance: Decimal,
    #[serde(rename = "cw", default)]
    pub cross_wallet_balance: Decimal,
}

/// `ACCOUNT_UPDATE`: balances and positions that changed, and why (`m`: ORDER, FUNDING_FEE, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountUpdate {
    #[serde(rename = "m")]
    pub reason: String,
    #[serde(rename = "B", default)]
    pub balances: Vec<BalanceUpdate>,
    #[serde(rename = "P", default)]
    pub positions: Vec<PositionUpdate>,
}

/// `ALGO_UPDATE`: a conditional order's new status.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlgoUpdate {
    #[serde(rename = "caid")]
    pub client_algo_id: String,
    #[serde(rename = "aid")]
    pub algo_id: i64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "X")]
    pub status: String,
    #[serde(rename = "tp", default)]
    pub trigger_price: Decimal,
}

/// What the stream delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The socket is (again) up; anything missed while it was down must be reconciled through REST.
    Connected,
    /// The socket went down; a reconnect follows.
    Disconnected {
        reason: String,
    },
    Order {
        event_ms: i64,
        update: Box<OrderUpdate>,
        received: Instant,
    },
    Account {
        event_ms: i64,
        update: AccountUpdate,
        received: Instant,
    },
    Algo {
        event_ms: i64,
        update: AlgoUpdate,
    },
    /// A message this client does not use (kept for logs).
    Other {
        event_type: String,
    },
}

/// Why a stream message could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("user-data stream message: {0}")]
pub struct ParseError(pub String);

#[derive(Deserialize)]
struct Envelope {
    e: String,
    #[serde(rename = "E", default)]
    event_ms: i64,
    #[serde(default)]
    o: Option<serde_json::Value>,
    #[serde(default)]
    a: Option<serde_json::Value>,
}

/// Parses one stream message. `Ok(None)` for `listenKeyExpired` (the caller must reconnect with a new key).
pub fn parse_event(text: &str, received: Instant) -> Result<Option<StreamEvent>, ParseError> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| ParseError(format!("{e}: {}", preview(text))))?;
    let field = |v: Option<serde_json::Value>, name: &str| {
        v.ok_or_else(|| ParseError(format!("{} without its '{name}' object: {}", env.e, preview(text))))
    };
    Ok(Some(match env.e.as_str() {
        "ORDER_TRADE_UPDATE" => StreamEvent::Order {
            event_ms: env.event_ms,
            update: serde_json::from_value::<Box<OrderUpdate>>(field(env.o.clone(), "o")?)
                .map_err(|e| ParseError(format!("ORDER_TRADE_UPDATE: {e}: {}", preview(text))))?,
            received,
        },
        "ACCOUNT_UPDATE" => StreamEvent::Account {
            event_ms: env.event_ms,
            update: serde_json::from_value(field(env.a.clone(), "a")?)
                .map_err(|e| ParseError(format!("ACCOUNT_UPDATE: {e}: {}", preview(text))))?,
            received,
        },
        "ALGO_UPDATE" => StreamEvent::Algo {
            event_ms: env.event_ms,
            update: serde_json::from_value(field(env.o.clone(), "o")?)
                .map_err(|e| ParseError(format!("ALGO_UPDATE: {e}: {}", preview(text))))?,
        },
        "listenKeyExpired" => return Ok(None),
        other => StreamEvent::Other { event_type: other.to_string() },
    }))
}

fn preview(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Stream timing.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Keep-alive period (Binance: a key lives 60 minutes; it recommends every 30 minutes... and sooner is fine).
    pub keepalive: Duration,
    /// Reconnection back-off bounds.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Connections are closed by the exchange after 24 hours; reconnect before that.
    pub max_connection_age: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            keepalive: Duration::from_secs(30 * 60),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(23 * 3600),
        }
    }
}

/// Runs the user-data stream until `tx` is dropped, sending parsed events. Never returns an error: every failure
/// becomes a `Disconnected` event followed by a reconnection.
pub async fn run_user_stream(client: FuturesClient, cfg: StreamConfig, tx: mpsc::Sender<StreamEvent>) {
    let mut backoff = cfg.reconnect_min;
    loop {
        if tx.is_closed() {
            return;
        }
        let reason = match connect_once(&client, &cfg, &tx).await {
            Ok(r) => {
                backoff = cfg.reconnect_min;
                r
            }
            Err(e) => e,
        };
        if tx.send(StreamEvent::Disconnected { reason: reason.clone() }).await.is_err() {
            return;
        }
        tracing::warn!(%reason, backoff_ms = backoff.as_millis() as u64, "binance user stream down; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

/// One connection's life. `Ok(reason)` after a connection that worked, `Err(reason)` when it never came up.
async fn connect_once(
    client: &FuturesClient,
    cfg: &StreamConfig,
    tx: &mpsc::Sender<StreamEvent>,
) -> Result<String, String> {
    let key = client.new_listen_key().await.map_err(|e| format!("listenKey: {e}"))?;
    let url = format!("{}/ws/{}", client.config().network.ws_url().trim_end_matches('/'), key);
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| {
        // The host, never the path (it carries the listenKey).
        let base = client.config().network.ws_url();
        let host = url::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}"))))
            .unwrap_or_else(|| base.to_string());
        format!("connect to {host}: {}", kronos_common::Redactor::global().redact(&e.to_string()))
    })?;
    let (mut write, mut read) = ws.split();
    if tx.send(StreamEvent::Connected).await.is_err() {
        return Ok("consumer gone".into());
    }
    let opened = Instant::now();
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + cfg.keepalive, cfg.keepalive);
    loop {
        tokio::select! {
            msg = read.next() => {
                let received = Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => match parse_event(t.as_str(), received) {
                        Ok(Some(ev)) => {
                            if tx.send(ev).await.is_err() {
                                return Ok("consumer gone".into());
                            }
                        }
                        Ok(None) => return Ok("listenKeyExpired".into()),
                        Err(e) => tracing::error!(error = %e, "binance user stream: unusable message skipped"),
                    },
                    Some(Ok(Message::Ping(p))) => {
                        let _ = write.send(Message::Pong(p)).await;
                    }
                    Some(Ok(Message::Close(f))) => return Ok(format!("closed by server ({f:?})")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ok(format!("read: {e}")),
                    None => return Ok("stream ended".into()),
                }
            }
            _ = keepalive.tick() => {
                if let Err(e) = client.keepalive_listen_key().await {
                    // -1125: the key no longer exists; anything else is retried at the next tick.
                    if e.code() == Some(-1125) {
                        return Ok(format!("keep-alive refused: {e}"));
                    }
                    tracing::warn!(error = %e, "binance user stream keep-alive failed");
                }
            }
        }
        if opened.elapsed() >= cfg.max_connection_age {
            let _ = write.send(Message::Close(None)).await;
            return Ok("connection age limit".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_events() {
        let now = Instant::now();
        let order = r#"{"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465650,"o":{"s":"BTCUSDT","c":"TEST","S":"SELL",
            "o":"TRAILING_STOP_MARKET","f":"GTC","q":"0.001","p":"0","ap":"0","sp":"7103.04","x":"NEW","X":"NEW","i":8886774,
            "l":"0","z":"0","L":"0","N":"USDT","n":"0","T":1568879465650,"t":0,"b":"0","a":"9.91","m":false,"R":false,
            "wt":"CONTRACT_PRICE","ot":"TRAILING_STOP_MARKET","ps":"LONG","cp":false,"AP":"7476.89","cr":"5.0","rp":"0"}}"#;
        match parse_event(order, now).unwrap().unwrap() {
            StreamEvent::Order { event_ms, update, .. } => {
                assert_eq!(event_ms, 1568879465651);
                assert_eq!(update.client_order_id, "TEST");
                assert_eq!(update.side, Side::Sell);
                assert_eq!(update.orig_qty, "0.001".parse().unwrap());
                assert_eq!(update.position_side, "LONG");
            }
            e => panic!("{e:?}"),
        }
        let account = r#"{"e":"ACCOUNT_UPDATE","E":1564745798939,"T":1564745798938,"a":{"m":"ORDER",
            "B":[{"a":"USDT","wb":"122624.12345678","cw":"100.12345678","bc":"50.12345678"}],
            "P":[{"s":"BTCUSDT","pa":"-20","ep":"6563.66500","cr":"0","up":"2850.21200","mt":"isolated","iw":"13200.70726908","ps":"BOTH"}]}}"#;
        match parse_event(account, now).unwrap().unwrap() {
            StreamEvent::Account { update, .. } => {
                assert_eq!(update.reason, "ORDER");
                assert_eq!(update.positions[0].amount, "-20".parse().unwrap());
                assert_eq!(update.balances[0].wallet_balance, "122624.12345678".parse().unwrap());
            }
            e => panic!("{e:?}"),
        }
        let algo = r#"{"e":"ALGO_UPDATE","T":1750515742297,"E":1750515742303,"o":{"caid":"Q5xaq5EGKgXXa0fD7fs0Ip","aid":2148719,
            "at":"CONDITIONAL","o":"TAKE_PROFIT","s":"BNBUSDT","S":"SELL","ps":"BOTH","f":"GTC","q":"0.01","X":"CANCELED","ai":"",
            "tp":"750","p":"750","wt":"CONTRACT_PRICE"}}"#;
        assert!(
            matches!(parse_event(algo, now).unwrap().unwrap(), StreamEvent::Algo { update, .. } if update.status == "CANCELED")
        );
        assert_eq!(parse_event(r#"{"e":"listenKeyExpired","E":1576653824250,"listenKey":"x"}"#, now).unwrap(), None);
        assert!(matches!(
            parse_event(r#"{"e":"MARGIN_CALL","E":1}"#, now).unwrap().unwrap(),
            StreamEvent::Other { .. }
        ));
    }

    #[test]
    fn malformed_messages_are_clear_errors() {
        let now = Instant::now();
        let e = parse_event("not json", now).unwrap_err();
        assert!(e.to_string().contains("not json"), "{e}");
        let e = parse_event(r#"{"e":"ACCOUNT_UPDATE","E":1}"#, now).unwrap_err();
        assert!(e.to_string().contains("without its 'a' object"), "{e}");
        let e =
            parse_event(r#"{"e":"ACCOUNT_UPDATE","E":1,"a":{"m":"ORDER","P":[{"s":"X","pa":"abc","ep":"1"}]}}"#, now)
                .unwrap_err();
        assert!(e.to_string().contains("ACCOUNT_UPDATE"), "{e}");
    }
}
