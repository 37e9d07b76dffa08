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
    /// NEW, CANCELED, TRIGGERING, TRIGGERED, FINISHED, REJECTED, EXPIRED.
    pub algo_status: String,
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
        self.algo_status == "NEW"
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
