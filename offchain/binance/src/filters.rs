//! Symbol trading rules from `GET /fapi/v1/exchangeInfo`, applied before an order is sent.

use std::collections::HashMap;

use kronos_common::{Decimal, Rounding};
use serde::{Deserialize, Serialize};

/// A symbol's `status` in `exchangeInfo`, as Binance documents it for USDⓈ-M futures. Only [`SymbolStatus::Trading`]
/// accepts orders; a status this client does not know is kept as [`SymbolStatus::Other`], never tradable, and named
/// in the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SymbolStatus {
    PendingTrading,
    Trading,
    PreDelivering,
    Delivering,
    Delivered,
    PreSettle,
    Settling,
    Close,
    /// A status not in the list above, as the venue spelled it.
    Other(String),
}

impl SymbolStatus {
    /// Every documented status (not `Other`).
    pub const KNOWN: [SymbolStatus; 8] = [
        SymbolStatus::PendingTrading,
        SymbolStatus::Trading,
        SymbolStatus::PreDelivering,
        SymbolStatus::Delivering,
        SymbolStatus::Delivered,
        SymbolStatus::PreSettle,
        SymbolStatus::Settling,
        SymbolStatus::Close,
    ];

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            SymbolStatus::PendingTrading => "PENDING_TRADING",
            SymbolStatus::Trading => "TRADING",
            SymbolStatus::PreDelivering => "PRE_DELIVERING",
            SymbolStatus::Delivering => "DELIVERING",
            SymbolStatus::Delivered => "DELIVERED",
            SymbolStatus::PreSettle => "PRE_SETTLE",
            SymbolStatus::Settling => "SETTLING",
            SymbolStatus::Close => "CLOSE",
            SymbolStatus::Other(s) => s,
        }
    }

    /// Whether the venue accepts orders on the symbol.
    pub fn is_trading(&self) -> bool {
        matches!(self, SymbolStatus::Trading)
    }
}

impl From<String> for SymbolStatus {
    fn from(s: String) -> Self {
        SymbolStatus::KNOWN.into_iter().find(|k| k.as_str() == s).unwrap_or(SymbolStatus::Other(s))
    }
}

impl From<SymbolStatus> for String {
    fn from(s: SymbolStatus) -> Self {
        match s {
            SymbolStatus::Other(s) => s,
            known => known.as_str().to_owned(),
        }
    }
}

impl std::fmt::Display for SymbolStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rules of one symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolFilters {
    pub symbol: String,
    pub status: SymbolStatus,
    pub tick_size: Decimal,
    pub min_price: Decimal,
    pub max_price: Decimal,
    pub step_size: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    /// MARKET_LOT_SIZE (market orders), when the venue gives it.
    pub market_step_size: Decimal,
    pub market_min_qty: Decimal,
    pub market_max_qty: Decimal,
    pub min_notional: Decimal,
}

/// Why an order cannot be made to fit the rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("{symbol}: quantity {qty} rounds to {rounded}, below the minimum {min}")]
    BelowMinQty { symbol: String, qty: Decimal, rounded: Decimal, min: Decimal },
    #[error("{symbol}: notional {notional} is below the minimum {min}")]
    BelowMinNotional { symbol: String, notional: Decimal, min: Decimal },
    #[error("{symbol}: the symbol is {status}, not TRADING")]
    NotTrading { symbol: String, status: SymbolStatus },
    #[error("{symbol}: {what}")]
    Invalid { symbol: String, what: String },
}

#[derive(Deserialize)]
struct RawInfo {
    symbols: Vec<RawSymbol>,
}

#[derive(Deserialize)]
struct RawSymbol {
    symbol: String,
    status: SymbolStatus,
    filters: Vec<RawFilter>,
}

/// The filters this client applies, by `filterType`; the others (`MAX_NUM_ORDERS`, `PERCENT_PRICE`, …) are
/// `Other`. A figure absent or not a decimal string counts as zero (the checks below refuse a symbol without a
/// step or tick).
#[derive(Deserialize)]
#[serde(tag = "filterType")]
enum RawFilter {
    #[serde(rename = "PRICE_FILTER", rename_all = "camelCase")]
    Price { tick_size: Option<String>, min_price: Option<String>, max_price: Option<String> },
    #[serde(rename = "LOT_SIZE", rename_all = "camelCase")]
    LotSize { step_size: Option<String>, min_qty: Option<String>, max_qty: Option<String> },
    #[serde(rename = "MARKET_LOT_SIZE", rename_all = "camelCase")]
    MarketLotSize { step_size: Option<String>, min_qty: Option<String>, max_qty: Option<String> },
    #[serde(rename = "MIN_NOTIONAL")]
    MinNotional { notional: Option<String> },
    #[serde(other)]
    Other,
}

fn dec(v: &Option<String>) -> Decimal {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or_default()
}

/// Parses the symbols of an `exchangeInfo` reply.
pub fn parse_exchange_info(body: &serde_json::Value) -> Result<HashMap<String, SymbolFilters>, String> {
    let raw: RawInfo = serde_path_to_error::deserialize(body).map_err(|e| match e.path().to_string().as_str() {
        "." => format!("exchangeInfo: {}", e.inner()),
        path => format!("exchangeInfo: {path}: {}", e.inner()),
    })?;
    let mut out = HashMap::new();
    for s in raw.symbols {
        let mut f = SymbolFilters {
            symbol: s.symbol.clone(),
            status: s.status,
            tick_size: Decimal::ZERO,
            min_price: Decimal::ZERO,
            max_price: Decimal::ZERO,
            step_size: Decimal::ZERO,
            min_qty: Decimal::ZERO,
            max_qty: Decimal::ZERO,
            market_step_size: Decimal::ZERO,
            market_min_qty: Decimal::ZERO,
            market_max_qty: Decimal::ZERO,
            min_notional: Decimal::ZERO,
        };
        for flt in &s.filters {
            match flt {
                RawFilter::Price { tick_size, min_price, max_price } => {
                    (f.tick_size, f.min_price, f.max_price) = (dec(tick_size), dec(min_price), dec(max_price));
                }
                RawFilter::LotSize { step_size, min_qty, max_qty } => {
                    (f.step_size, f.min_qty, f.max_qty) = (dec(step_size), dec(min_qty), dec(max_qty));
                }
                RawFilter::MarketLotSize { step_size, min_qty, max_qty } => {
                    (f.market_step_size, f.market_min_qty, f.market_max_qty) =
                        (dec(step_size), dec(min_qty), dec(max_qty));
                }
                RawFilter::MinNotional { notional } => f.min_notional = dec(notional),
                RawFilter::Other => {}
            }
        }
        if f.step_size.is_zero() || f.tick_size.is_zero() {
            return Err(format!("exchangeInfo: {} lacks a LOT_SIZE or PRICE_FILTER filter", s.symbol));
        }
        if f.market_step_size.is_zero() {
            (f.market_step_size, f.market_min_qty, f.market_max_qty) = (f.step_size, f.min_qty, f.max_qty);
        }
        out.insert(s.symbol, f);
    }
    Ok(out)
}

impl SymbolFilters {
    /// A market-order quantity rounded down to the step and capped; errors when it falls below the minimums at
    /// `price` (the mark price, for the notional check). Reduce-only orders skip the notional minimum, as the venue
    /// allows closing positions smaller than it.
    pub fn market_qty(&self, qty: Decimal, price: Decimal, reduce_only: bool) -> Result<Decimal, FilterError> {
        if !self.status.is_trading() {
            return Err(FilterError::NotTrading { symbol: self.symbol.clone(), status: self.status.clone() });
        }
        let q = qty
            .abs()
            .round_to_step(&self.market_step_size, Rounding::Down)
            .map_err(|e| FilterError::Invalid { symbol: self.symbol.clone(), what: e.to_string() })?;
        let q = if !self.market_max_qty.is_zero() { q.min(self.market_max_qty) } else { q };
        if q < self.market_min_qty || q.is_zero() {
            return Err(FilterError::BelowMinQty {
                symbol: self.symbol.clone(),
                qty,
                rounded: q,
                min: self.market_min_qty,
            });
        }
        let notional = q
            .checked_mul(&price, 8, Rounding::Down)
            .map_err(|e| FilterError::Invalid { symbol: self.symbol.clone(), what: e.to_string() })?;
        if !reduce_only && notional < self.min_notional {
            return Err(FilterError::BelowMinNotional {
                symbol: self.symbol.clone(),
                notional,
                min: self.min_notional,
            });
        }
        Ok(q.normalized())
    }

    /// A price rounded to the tick (down for sells' stops above, up for… the caller names the rounding).
    pub fn price(&self, p: Decimal, rounding: Rounding) -> Result<Decimal, FilterError> {
        let r = p
            .round_to_step(&self.tick_size, rounding)
            .map_err(|e| FilterError::Invalid { symbol: self.symbol.clone(), what: e.to_string() })?;
        let r = if !self.min_price.is_zero() { r.max(self.min_price) } else { r };
        let r = if !self.max_price.is_zero() { r.min(self.max_price) } else { r };
        Ok(r.normalized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> serde_json::Value {
        serde_json::json!({"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"}
        ]}]})
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn quantities_and_prices_fit_the_rules() {
        let f = parse_exchange_info(&info()).unwrap().remove("BTCUSDT").unwrap();
        assert_eq!(f.market_qty(d("0.12345"), d("65000"), false).unwrap(), d("0.123"));
        assert_eq!(f.market_qty(d("-0.5"), d("65000"), false).unwrap(), d("0.5"));
        assert_eq!(f.market_qty(d("500"), d("65000"), false).unwrap(), d("120"));
        assert!(matches!(f.market_qty(d("0.0009"), d("65000"), false), Err(FilterError::BelowMinQty { .. })));
        assert!(matches!(f.market_qty(d("0.001"), d("65000"), false), Err(FilterError::BelowMinNotional { .. })));
        assert_eq!(f.market_qty(d("0.001"), d("65000"), true).unwrap(), d("0.001"));
        assert_eq!(f.price(d("65000.17"), Rounding::Down).unwrap(), d("65000.1"));
        assert_eq!(f.price(d("65000.11"), Rounding::Up).unwrap(), d("65000.2"));
        assert_eq!(f.price(d("1"), Rounding::Down).unwrap(), d("556.8"));
    }

    #[test]
    fn only_a_trading_symbol_takes_orders_and_an_unknown_status_is_named() {
        let with_status = |status: &str| {
            let mut body = info();
            body["symbols"][0]["status"] = status.into();
            parse_exchange_info(&body).unwrap().remove("BTCUSDT").unwrap()
        };
        assert_eq!(with_status("TRADING").status, SymbolStatus::Trading);
        assert!(with_status("TRADING").market_qty(d("0.01"), d("65000"), false).is_ok());
        for known in SymbolStatus::KNOWN {
            let f = with_status(known.as_str());
            assert_eq!(f.status, known, "{known} reads back as itself");
            assert_eq!(serde_json::to_value(&f.status).unwrap(), known.as_str(), "and writes back the same");
            if known != SymbolStatus::Trading {
                let e = f.market_qty(d("0.01"), d("65000"), true).unwrap_err();
                assert_eq!(e, FilterError::NotTrading { symbol: "BTCUSDT".into(), status: known });
            }
        }
        let f = with_status("HALTED_FOR_LUNCH");
        assert_eq!(f.status, SymbolStatus::Other("HALTED_FOR_LUNCH".into()));
        let e = f.market_qty(d("0.01"), d("65000"), true).unwrap_err();
        assert!(
            matches!(&e, FilterError::NotTrading { status: SymbolStatus::Other(s), .. } if s == "HALTED_FOR_LUNCH")
        );
        assert_eq!(e.to_string(), "BTCUSDT: the symbol is HALTED_FOR_LUNCH, not TRADING");
        assert_eq!(serde_json::to_value(&f.status).unwrap(), "HALTED_FOR_LUNCH");
    }

    #[test]
    fn malformed_info_is_a_clear_error() {
        let e =
            parse_exchange_info(&serde_json::json!({"symbols": [{"symbol": "X", "status": "TRADING", "filters": []}]}))
                .unwrap_err();
        assert!(e.contains("X lacks a LOT_SIZE"), "{e}");
        assert!(parse_exchange_info(&serde_json::json!({"nope": 1})).unwrap_err().contains("exchangeInfo"));
        let no_type = serde_json::json!({"symbols": [{"symbol": "X", "status": "TRADING", "filters": [{"a": 1}]}]});
        let e = parse_exchange_info(&no_type).unwrap_err();
        assert!(e.contains("symbols[0].filters[0]") && e.contains("filterType"), "{e}");
    }
}
