//! Wire types of the USDⓈ-M Futures API used by Kronos. Decimal fields arrive as strings and are parsed exactly.

use kronos_common::Decimal;
use serde::{Deserialize, Serialize};

pub use kronos_common::signals::Side;

/// One position as `GET /fapi/v2/positionRisk` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionRisk {
    pub symbol: String,
    pub position_amt: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
    #[serde(rename = "unRealizedProfit")]
    pub unrealized_profit: Decimal,
    #[serde(default)]
    pub leverage: Decimal,
    #[serde(default)]
    pub margin_type: String,
    #[serde(default = "both")]
    pub position_side: String,
}

fn both() -> String {
    "BOTH".into()
}

/// Regular order types Kronos sends to `POST /fapi/v1/order` (stops go to the algo-order endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderType {
    Market,
    Limit,
}

impl OrderType {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderType::Market => "MARKET",
            OrderType::Limit => "LIMIT",
        }
    }
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

/// A new regular order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Decimal,
    /// Limit price (LIMIT orders only).
    pub price: Option<Decimal>,
    /// Only reduces a position (one-way mode; in hedge mode the position side says it).
    pub reduce_only: bool,
    /// `BOTH` in one-way mode, `LONG`/`SHORT` in hedge mode.
    pub position_side: String,
    /// Our own id: every order carries one, so that an unknown outcome is resolved by asking for it.
    pub client_order_id: String,
}

impl OrderRequest {
    /// A market order in one-way mode that is not reduce-only.
    pub fn market(symbol: &str, side: Side, quantity: Decimal, client_order_id: impl Into<String>) -> OrderRequest {
        OrderRequest {
            symbol: symbol.into(),
            side,
            order_type: OrderType::Market,
            quantity,
            price: None,
            reduce_only: false,
            position_side: "BOTH".into(),
            client_order_id: client_order_id.into(),
        }
    }

    /// The request parameters in a fixed order.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("symbol".to_string(), self.symbol.clone()),
            ("side".to_string(), side_str(self.side).to_string()),
            ("type".to_string(), self.order_type.as_str().to_string()),
        ];
        if self.position_side != "BOTH" {
            p.push(("positionSide".into(), self.position_side.clone()));
        }
        p.push(("quantity".into(), self.quantity.normalized().to_string()));
        if let Some(px) = &self.price {
            p.push(("price".into(), px.normalized().to_string()));
            p.push(("timeInForce".into(), "GTC".into()));
        }
        if self.reduce_only && self.position_side == "BOTH" {
            p.push(("reduceOnly".into(), "true".into()));
        }
        p.push(("newClientOrderId".into(), self.client_order_id.clone()));
        p.push(("newOrderRespType".into(), "RESULT".into()));
        p
    }
}

/// A stop-loss: a conditional `STOP_MARKET` order on the mark price, sent to `POST /fapi/v1/algoOrder`. With a
/// `quantity` it closes that much (`reduceOnly=true` in one-way mode; in hedge mode the position side says it, and
/// Binance refuses `reduceOnly` there); without one it closes the whole position (`closePosition=true`, which
/// Binance allows once per direction (-4130) and which cannot be sent with `quantity` or `reduceOnly`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    pub symbol: String,
    /// The closing side: SELL for a long, BUY for a short.
    pub side: Side,
    pub trigger_price: Decimal,
    pub position_side: String,
    pub client_algo_id: String,
    /// `None`: close-position stop.
    #[serde(default)]
    pub quantity: Option<Decimal>,
}

impl StopRequest {
    /// The request parameters in a fixed order.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("algoType".to_string(), "CONDITIONAL".to_string()),
            ("symbol".to_string(), self.symbol.clone()),
            ("side".to_string(), side_str(self.side).to_string()),
            ("type".to_string(), "STOP_MARKET".to_string()),
        ];
        if self.position_side != "BOTH" {
            p.push(("positionSide".into(), self.position_side.clone()));
        }
        p.push(("triggerPrice".into(), self.trigger_price.normalized().to_string()));
        p.push(("workingType".into(), "MARK_PRICE".into()));
        match &self.quantity {
            Some(q) => {
                p.push(("quantity".into(), q.normalized().to_string()));
                if self.position_side == "BOTH" {
                    p.push(("reduceOnly".into(), "true".into()));
                }
            }
            None => p.push(("closePosition".into(), "true".into())),
        }
        p.push(("clientAlgoId".into(), self.client_algo_id.clone()));
        p
    }
}

/// A conditional order as `/fapi/v1/algoOrder` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgoOrder {
    pub algo_id: i64,
    pub client_algo_id: String,
    #[serde(default)]
    pub algo_type: String,
    pub order_type: String,
    pub symbol: String,
    pub side: Side,
    #[serde(default = "both")]
    pub position_side: String,
    #[serde(default)]
    pub quantity: Decimal,
    pub trigger_price: Decimal,
    pub algo_status: AlgoStatus,
    #[serde(default)]
    pub close_position: bool,
    #[serde(default)]
    pub reduce_only: bool,
    #[serde(default)]
    pub working_type: String,
    #[serde(default)]
    pub update_time: i64,
}

impl AlgoOrder {
    /// Waiting for its trigger.
    pub fn is_open(&self) -> bool {
        self.algo_status == AlgoStatus::New
    }
}

/// A conditional order's `algoStatus`. A status this list does not know is kept as sent (`Unknown`), never taken
/// for one of the others: whoever reads it decides what an unknown status means (the copy-trader: possibly live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AlgoStatus {
    /// Waiting for its trigger.
    New,
    Canceled,
    /// Triggered; its order is being sent.
    Triggering,
    /// Triggered; its order was sent to the matching engine.
    Triggered,
    /// Triggered and its order done.
    Finished,
    Rejected,
    Expired,
    /// Anything else, as the exchange sent it.
    Unknown(String),
}

impl AlgoStatus {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            AlgoStatus::New => "NEW",
            AlgoStatus::Canceled => "CANCELED",
            AlgoStatus::Triggering => "TRIGGERING",
            AlgoStatus::Triggered => "TRIGGERED",
            AlgoStatus::Finished => "FINISHED",
            AlgoStatus::Rejected => "REJECTED",
            AlgoStatus::Expired => "EXPIRED",
            AlgoStatus::Unknown(s) => s,
        }
    }
}

impl From<String> for AlgoStatus {
    fn from(s: String) -> AlgoStatus {
        match s.as_str() {
            "NEW" => AlgoStatus::New,
            "CANCELED" => AlgoStatus::Canceled,
            "TRIGGERING" => AlgoStatus::Triggering,
            "TRIGGERED" => AlgoStatus::Triggered,
            "FINISHED" => AlgoStatus::Finished,
            "REJECTED" => AlgoStatus::Rejected,
            "EXPIRED" => AlgoStatus::Expired,
            _ => AlgoStatus::Unknown(s),
        }
    }
}

impl From<AlgoStatus> for String {
    fn from(s: AlgoStatus) -> String {
        match s {
            AlgoStatus::Unknown(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for AlgoStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order as the REST API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: i64,
    pub symbol: String,
    pub status: String,
    pub client_order_id: String,
    #[serde(default)]
    pub price: Decimal,
    #[serde(default)]
    pub avg_price: Decimal,
    #[serde(default)]
    pub orig_qty: Decimal,
    #[serde(default)]
    pub executed_qty: Decimal,
    #[serde(rename = "type")]
    pub order_type: String,
    pub side: Side,
    #[serde(default)]
    pub reduce_only: bool,
    #[serde(default = "both")]
    pub position_side: String,
    #[serde(default)]
    pub update_time: i64,
}

impl Order {
    /// Filled completely.
    pub fn is_filled(&self) -> bool {
        self.status == "FILLED"
    }

    /// Still working on the book (new or partly filled).
    pub fn is_open(&self) -> bool {
        self.status == "NEW" || self.status == "PARTIALLY_FILLED"
    }
}

/// One asset of `GET /fapi/v2/balance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub asset: String,
    pub balance: Decimal,
    #[serde(default)]
    pub available_balance: Decimal,
    #[serde(default)]
    pub cross_un_pnl: Decimal,
}

/// `GET /fapi/v1/premiumIndex?symbol=` (mark price).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PremiumIndex {
    pub symbol: String,
    pub mark_price: Decimal,
    #[serde(default)]
    pub time: i64,
}

/// One fill of ours, from `GET /fapi/v1/userTrades`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trade {
    pub id: i64,
    pub order_id: i64,
    pub symbol: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    #[serde(default)]
    pub realized_pnl: Decimal,
    pub commission: Decimal,
    #[serde(default)]
    pub commission_asset: String,
    pub time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented status reads as its variant and is written back unchanged; any other is kept as sent.
    #[test]
    fn algo_statuses_round_trip_and_an_unknown_one_is_kept_as_sent() {
        let known = [
            ("NEW", AlgoStatus::New),
            ("CANCELED", AlgoStatus::Canceled),
            ("TRIGGERING", AlgoStatus::Triggering),
            ("TRIGGERED", AlgoStatus::Triggered),
            ("FINISHED", AlgoStatus::Finished),
            ("REJECTED", AlgoStatus::Rejected),
            ("EXPIRED", AlgoStatus::Expired),
            ("PAUSED", AlgoStatus::Unknown("PAUSED".into())),
            ("new", AlgoStatus::Unknown("new".into())),
        ];
        for (wire, status) in known {
            let read: AlgoStatus = serde_json::from_value(serde_json::json!(wire)).unwrap();
            assert_eq!(read, status, "{wire}");
            assert_eq!(serde_json::to_value(&status).unwrap(), serde_json::json!(wire), "{wire}");
            assert_eq!(status.as_str(), wire);
        }
        let a: AlgoOrder = serde_json::from_str(
            r#"{"algoId":1,"clientAlgoId":"ks1","orderType":"STOP_MARKET","symbol":"BTCUSDT","side":"SELL",
                "triggerPrice":"49000","algoStatus":"TRIGGERED"}"#,
        )
        .unwrap();
        assert_eq!(a.algo_status, AlgoStatus::Triggered);
        assert!(!a.is_open());
    }
}
