//! A simulated USDⓈ-M Futures account: market orders fill at the mark price with a taker fee, positions carry a
//! volume-weighted entry price, realised PnL and fees move the wallet, and conditional stops trigger on the mark.
//!
//! The copy-trader's paper mode runs on it (the same engine code path as live, only the account differs) and the
//! local exchange used by the tests keeps every account in one. Exact decimals throughout.

use std::collections::{BTreeMap, HashMap};

use kronos_common::{Decimal, Rounding};

use crate::types::{
    AlgoOrder, AlgoStatus, Balance, Order, OrderRequest, OrderType, PositionRisk, Side, StopRequest, Trade,
};

/// Decimal places kept for prices, fees and balances.
const SCALE: u8 = 8;

/// Why the simulated exchange refuses a request, with Binance's code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("code {code}: {msg}")]
pub struct Reject {
    pub code: i64,
    pub msg: String,
}

fn reject(code: i64, msg: &str) -> Reject {
    Reject { code, msg: msg.to_string() }
}

fn overflow(_: kronos_common::DecimalError) -> Reject {
    reject(-1111, "Precision is over the maximum defined for this asset.")
}

/// One open position.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimPosition {
    /// Signed amount: positive long, negative short.
    pub amount: Decimal,
    pub entry_price: Decimal,
}

/// The result of one fill.
#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    pub order: Order,
    pub trade: Trade,
    /// The position after the fill.
    pub position: SimPosition,
    pub position_side: String,
    pub wallet: Decimal,
}

/// A stop that fired on a mark-price move.
#[derive(Debug, Clone, PartialEq)]
pub struct Triggered {
    pub algo: AlgoOrder,
    /// The closing fill (none when the position was already flat: the stop expires).
    pub fill: Option<Fill>,
}

/// A market order the account fills: on `symbol` and `position_side` (`BOTH`, `LONG` or `SHORT`), `qty` after the
/// reduce-only cap.
struct MarketOrder<'a> {
    symbol: &'a str,
    position_side: &'a str,
    side: Side,
    qty: Decimal,
    client_order_id: &'a str,
    reduce_only: bool,
}

/// A simulated account.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub asset: String,
    pub wallet: Decimal,
    pub taker_fee_rate: Decimal,
    pub hedge_mode: bool,
    positions: BTreeMap<(String, String), SimPosition>,
    orders: Vec<Order>,
    algos: Vec<AlgoOrder>,
    trades: Vec<Trade>,
    pub leverage: HashMap<String, u32>,
    pub margin_type: HashMap<String, String>,
    next_id: i64,
}

fn signed(side: Side, qty: Decimal) -> Decimal {
    match side {
        Side::Buy => qty,
        Side::Sell => qty.neg(),
    }
}

/// A position after a fill of `qty` on `side` at `price`, and the PnL the fill realised: growing positions take a
/// volume-weighted entry, reducing fills realise `(price - entry) × closed` (sign by direction), a flip opens the
/// remainder at `price`.
pub fn apply_fill(
    pos: &SimPosition,
    side: Side,
    qty: Decimal,
    price: Decimal,
) -> Result<(SimPosition, Decimal), Reject> {
    let delta = signed(side, qty);
    let new_amount = pos.amount.checked_add(&delta).map_err(overflow)?;
    let mut realized = Decimal::ZERO;
    let entry = if pos.amount.is_zero() || pos.amount.is_negative() == delta.is_negative() {
        let old = pos.amount.abs().checked_mul(&pos.entry_price, SCALE + 8, Rounding::HalfUp).map_err(overflow)?;
        let add = qty.checked_mul(&price, SCALE + 8, Rounding::HalfUp).map_err(overflow)?;
        old.checked_add(&add)
            .map_err(overflow)?
            .checked_div(&new_amount.abs(), SCALE, Rounding::HalfUp)
            .map_err(overflow)?
    } else {
        let closing = qty.min(pos.amount.abs());
        let per_unit = price.checked_sub(&pos.entry_price).map_err(overflow)?;
        let per_unit = if pos.amount.is_negative() { per_unit.neg() } else { per_unit };
        realized = closing.checked_mul(&per_unit, SCALE, Rounding::HalfUp).map_err(overflow)?;
        if new_amount.is_zero() {
            Decimal::ZERO
        } else if new_amount.is_negative() != pos.amount.is_negative() {
            price
        } else {
            pos.entry_price
        }
    };
    Ok((SimPosition { amount: new_amount, entry_price: entry }, realized))
}

impl SimAccount {
    /// An account holding `wallet` of `asset` (USDT) that pays `taker_fee_rate` (e.g. 0.0005) on every fill.
    pub fn new(asset: &str, wallet: Decimal, taker_fee_rate: Decimal) -> SimAccount {
        SimAccount {
            asset: asset.to_string(),
            wallet,
            taker_fee_rate,
            hedge_mode: false,
            positions: BTreeMap::new(),
            orders: Vec::new(),
            algos: Vec::new(),
            trades: Vec::new(),
            leverage: HashMap::new(),
            margin_type: HashMap::new(),
            next_id: 1,
        }
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Restores a position (paper state loaded from the store).
    pub fn set_position(&mut self, symbol: &str, position_side: &str, pos: SimPosition) {
        if pos.amount.is_zero() {
            self.positions.remove(&(symbol.to_string(), position_side.to_string()));
        } else {
            self.positions.insert((symbol.to_string(), position_side.to_string()), pos);
        }
    }

    /// Restores an open stop (paper state loaded from the store).
    pub fn restore_stop(&mut self, algo: AlgoOrder) {
        self.next_id = self.next_id.max(algo.algo_id);
        self.algos.push(algo);
    }

    /// A position (flat when there is none).
    pub fn position(&self, symbol: &str, position_side: &str) -> SimPosition {
        self.positions.get(&(symbol.to_string(), position_side.to_string())).cloned().unwrap_or_default()
    }

    /// Every non-flat position: (symbol, position side, position).
    pub fn open_positions(&self) -> Vec<(String, String, SimPosition)> {
        self.positions.iter().map(|((s, ps), p)| (s.clone(), ps.clone(), p.clone())).collect()
    }

    /// Client ids are unique only among *open* orders (Binance: `newClientOrderId` "a unique id among open
    /// orders"): a filled market order's id can be used again, and the second order executes too.
    fn coid_taken(&self, id: &str) -> bool {
        self.orders.iter().any(|o| o.client_order_id == id && (o.status == "NEW" || o.status == "PARTIALLY_FILLED"))
            || self.algos.iter().any(|a| a.client_algo_id == id && a.is_open())
    }

    /// A market order filled at `mark` in full. Reduce-only orders are capped at the position and refused when they
    /// would open or grow one (-2022).
    pub fn place_market(&mut self, req: &OrderRequest, mark: Decimal, now_ms: i64) -> Result<Fill, Reject> {
        if req.order_type != OrderType::Market {
            return Err(reject(-1116, "Invalid orderType."));
        }
        if req.quantity <= Decimal::ZERO {
            return Err(reject(-4003, "Quantity less than or equal to zero."));
        }
        if mark <= Decimal::ZERO {
            return Err(reject(-1121, "Invalid symbol."));
        }
        if self.coid_taken(&req.client_order_id) {
            return Err(reject(-4116, "ClientOrderId is duplicated."));
        }
        let ps = if self.hedge_mode {
            if req.position_side != "LONG" && req.position_side != "SHORT" {
                return Err(reject(-4061, "Order's position side does not match user's setting."));
            }
            req.position_side.clone()
        } else {
            if req.position_side != "BOTH" {
                return Err(reject(-4061, "Order's position side does not match user's setting."));
            }
            "BOTH".to_string()
        };
        let pos = self.position(&req.symbol, &ps);
        let delta = signed(req.side, req.quantity);
        // In hedge mode, selling a LONG (or buying a SHORT) is a close; it may not cross zero.
        let closing_hedge =
            self.hedge_mode && ((ps == "LONG" && req.side == Side::Sell) || (ps == "SHORT" && req.side == Side::Buy));
        let reduces = !pos.amount.is_zero() && (pos.amount.is_negative() != delta.is_negative());
        let mut qty = req.quantity;
        if req.reduce_only || closing_hedge {
            if !reduces {
                return Err(reject(-2022, "ReduceOnly Order is rejected."));
            }
            qty = qty.min(pos.amount.abs());
        }
        let order = MarketOrder {
            symbol: &req.symbol,
            position_side: &ps,
            side: req.side,
            qty,
            client_order_id: &req.client_order_id,
            reduce_only: req.reduce_only,
        };
        let fill = self.fill(order, mark, now_ms)?;
        Ok(fill)
    }

    /// Fills a market order at `price` (the mark): realised PnL and the taker fee move the wallet.
    fn fill(&mut self, order: MarketOrder<'_>, price: Decimal, now_ms: i64) -> Result<Fill, Reject> {
        let MarketOrder { symbol, position_side: ps, side, qty, client_order_id, reduce_only } = order;
        let pos = self.position(symbol, ps);
        let (position, realized) = apply_fill(&pos, side, qty, price)?;
        let fee = qty
            .checked_mul(&price, SCALE + 8, Rounding::HalfUp)
            .and_then(|n| n.checked_mul(&self.taker_fee_rate, SCALE, Rounding::HalfUp))
            .map_err(overflow)?;
        self.wallet = self.wallet.checked_add(&realized).and_then(|w| w.checked_sub(&fee)).map_err(overflow)?;
        self.set_position(symbol, ps, position.clone());
        let order_id = self.id();
        let order = Order {
            order_id,
            symbol: symbol.to_string(),
            status: "FILLED".into(),
            client_order_id: client_order_id.to_string(),
            price: Decimal::ZERO,
            avg_price: price,
            orig_qty: qty,
            executed_qty: qty,
            order_type: "MARKET".into(),
            side,
            reduce_only,
            position_side: ps.to_string(),
            update_time: now_ms,
        };
        let trade = Trade {
            id: self.id(),
            order_id,
            symbol: symbol.to_string(),
            side,
            price,
            qty,
            realized_pnl: realized,
            commission: fee,
            commission_asset: self.asset.clone(),
            time: now_ms,
        };
        self.orders.push(order.clone());
        self.trades.push(trade.clone());
        Ok(Fill { order, trade, position, position_side: ps.to_string(), wallet: self.wallet })
    }

    /// A close-position stop on the mark price. Refused when the mark is already past the trigger (-2021).
    pub fn place_stop(&mut self, req: &StopRequest, mark: Decimal, now_ms: i64) -> Result<AlgoOrder, Reject> {
        if self.coid_taken(&req.client_algo_id) {
            return Err(reject(-4116, "ClientOrderId is duplicated."));
        }
        if req.trigger_price <= Decimal::ZERO {
            return Err(reject(
                -1102,
                "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.",
            ));
        }
        let immediate = match req.side {
            Side::Sell => mark <= req.trigger_price,
            Side::Buy => mark >= req.trigger_price,
        };
        if immediate {
            return Err(reject(-2021, "Order would immediately trigger."));
        }
        // One close-position stop per symbol, direction and position side (stops with a quantity are not limited).
        if req.quantity.is_none()
            && self.algos.iter().any(|a| {
                a.is_open()
                    && a.close_position
                    && a.symbol == req.symbol
                    && a.side == req.side
                    && a.position_side == req.position_side
            })
        {
            return Err(reject(
                -4130,
                "An open stop or take profit order with GTE and closePosition in the direction is existing.",
            ));
        }
        let algo = AlgoOrder {
            algo_id: self.id(),
            client_algo_id: req.client_algo_id.clone(),
            algo_type: "CONDITIONAL".into(),
            order_type: "STOP_MARKET".into(),
            symbol: req.symbol.clone(),
            side: req.side,
            position_side: req.position_side.clone(),
            quantity: req.quantity.unwrap_or(Decimal::ZERO),
            trigger_price: req.trigger_price,
            algo_status: AlgoStatus::New,
            close_position: req.quantity.is_none(),
            reduce_only: true,
            working_type: "MARK_PRICE".into(),
            update_time: now_ms,
        };
        self.algos.push(algo.clone());
        Ok(algo)
    }

    /// Cancels an open stop (-2011 when it is not open).
    pub fn cancel_stop(&mut self, client_algo_id: &str, now_ms: i64) -> Result<AlgoOrder, Reject> {
        let a = self
            .algos
            .iter_mut()
            .find(|a| a.client_algo_id == client_algo_id && a.is_open())
            .ok_or_else(|| reject(-2011, "Unknown order sent."))?;
        a.algo_status = AlgoStatus::Canceled;
        a.update_time = now_ms;
        Ok(a.clone())
    }

    /// Applies a new mark price: fires the stops it crosses (each closes its whole position at the mark).
    pub fn on_mark(&mut self, symbol: &str, mark: Decimal, now_ms: i64) -> Vec<Triggered> {
        let mut fired = Vec::new();
        let due: Vec<usize> = self
            .algos
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.symbol == symbol
                    && a.is_open()
                    && match a.side {
                        Side::Sell => mark <= a.trigger_price,
                        Side::Buy => mark >= a.trigger_price,
                    }
            })
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let a = self.algos[i].clone();
            let ps = if self.hedge_mode { a.position_side.clone() } else { "BOTH".to_string() };
            let pos = self.position(symbol, &ps);
            // A SELL stop closes a long, a BUY stop a short.
            let closes = !pos.amount.is_zero() && ((a.side == Side::Sell) != pos.amount.is_negative());
            let fill = if closes {
                let coid = format!("stop-{}", a.algo_id);
                // A close-position stop closes it all; one with a quantity at most that (reduce-only).
                let qty = if a.close_position { pos.amount.abs() } else { a.quantity.min(pos.amount.abs()) };
                let order = MarketOrder {
                    symbol,
                    position_side: &ps,
                    side: a.side,
                    qty,
                    client_order_id: &coid,
                    reduce_only: true,
                };
                self.fill(order, mark, now_ms).ok()
            } else {
                None
            };
            let st = if fill.is_some() { AlgoStatus::Finished } else { AlgoStatus::Expired };
            self.algos[i].algo_status = st;
            self.algos[i].update_time = now_ms;
            fired.push(Triggered { algo: self.algos[i].clone(), fill });
        }
        fired
    }

    /// An order by client order id.
    pub fn order(&self, client_order_id: &str) -> Option<&Order> {
        self.orders.iter().find(|o| o.client_order_id == client_order_id)
    }

    /// Sets a stop's status as the venue would while it works, without filling anything (a test's "the stop
    /// triggered and its close is on its way", then "done"); the stop as it is now, `None` when there is none.
    pub fn set_stop_status(&mut self, client_algo_id: &str, status: AlgoStatus, now_ms: i64) -> Option<AlgoOrder> {
        let a = self.algos.iter_mut().find(|a| a.client_algo_id == client_algo_id)?;
        a.algo_status = status;
        a.update_time = now_ms;
        Some(a.clone())
    }

    /// A stop by client algo id.
    pub fn stop(&self, client_algo_id: &str) -> Option<&AlgoOrder> {
        self.algos.iter().find(|a| a.client_algo_id == client_algo_id)
    }

    /// Open stops, of one symbol or all.
    pub fn open_stops(&self, symbol: Option<&str>) -> Vec<AlgoOrder> {
        self.algos.iter().filter(|a| a.is_open() && symbol.is_none_or(|s| s == a.symbol)).cloned().collect()
    }

    /// Every order placed, oldest first.
    pub fn orders(&self) -> &[Order] {
        &self.orders
    }

    /// The fills of one order.
    pub fn trades_of(&self, order_id: i64) -> Vec<Trade> {
        self.trades.iter().filter(|t| t.order_id == order_id).cloned().collect()
    }

    /// Unrealised PnL of a position at `mark`.
    pub fn unrealized(pos: &SimPosition, mark: Decimal) -> Decimal {
        mark.checked_sub(&pos.entry_price)
            .and_then(|d| d.checked_mul(&pos.amount, SCALE, Rounding::HalfUp))
            .unwrap_or(Decimal::ZERO)
    }

    /// Positions in `positionRisk` form, valued at the given marks (symbols without a mark use the entry price).
    pub fn position_risk(&self, marks: &HashMap<String, Decimal>) -> Vec<PositionRisk> {
        self.positions
            .iter()
            .map(|((s, ps), p)| {
                let mark = marks.get(s).copied().unwrap_or(p.entry_price);
                PositionRisk {
                    symbol: s.clone(),
                    position_amt: p.amount,
                    entry_price: p.entry_price,
                    mark_price: mark,
                    unrealized_profit: Self::unrealized(p, mark),
                    leverage: Decimal::from_int(*self.leverage.get(s).unwrap_or(&20) as i128),
                    margin_type: self.margin_type.get(s).cloned().unwrap_or_else(|| "cross".into()),
                    position_side: ps.clone(),
                }
            })
            .collect()
    }

    /// The wallet, with unrealised PnL at the given marks.
    pub fn balance(&self, marks: &HashMap<String, Decimal>) -> Balance {
        let upnl = self
            .position_risk(marks)
            .iter()
            .fold(Decimal::ZERO, |acc, p| acc.checked_add(&p.unrealized_profit).unwrap_or(acc));
        Balance {
            asset: self.asset.clone(),
            balance: self.wallet,
            available_balance: self.wallet.checked_add(&upnl).unwrap_or(self.wallet),
            cross_un_pnl: upnl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn mkt(side: Side, qty: &str, id: &str, reduce_only: bool) -> OrderRequest {
        OrderRequest { reduce_only, ..OrderRequest::market("BTCUSDT", side, d(qty), id) }
    }

    #[test]
    fn fills_track_entry_pnl_and_fees_exactly() {
        let mut a = SimAccount::new("USDT", d("10000"), d("0.0005"));
        let f = a.place_market(&mkt(Side::Buy, "0.1", "a", false), d("60000"), 1).unwrap();
        assert_eq!(f.trade.commission, d("3")); // 0.1 * 60000 * 0.0005
        assert_eq!(a.wallet, d("9997"));
        a.place_market(&mkt(Side::Buy, "0.1", "b", false), d("62000"), 2).unwrap();
        assert_eq!(a.position("BTCUSDT", "BOTH").entry_price, d("61000"));
        // Sell 0.3: close 0.2 at 63000 (+400) and open 0.1 short at 63000.
        let f = a.place_market(&mkt(Side::Sell, "0.3", "c", false), d("63000"), 3).unwrap();
        assert_eq!(f.trade.realized_pnl, d("400"));
        assert_eq!(f.position, SimPosition { amount: d("-0.1"), entry_price: d("63000") });
        // 10000 - 3 - 3.1 + 400 - 9.45
        assert_eq!(a.wallet, d("10384.45"));
        // Reduce-only that would grow is refused.
        assert_eq!(a.place_market(&mkt(Side::Sell, "0.1", "d", true), d("63000"), 4).unwrap_err().code, -2022);
        // Reduce-only larger than the position is capped at it.
        let f = a.place_market(&mkt(Side::Buy, "5", "e", true), d("62000"), 5).unwrap();
        assert_eq!(f.order.executed_qty, d("0.1"));
        assert!(f.position.amount.is_zero());
    }

    #[test]
    fn stops_trigger_on_the_mark_and_expire_when_flat() {
        let mut a = SimAccount::new("USDT", d("10000"), d("0"));
        a.place_market(&mkt(Side::Buy, "1", "a", false), d("100"), 1).unwrap();
        let stop = StopRequest {
            symbol: "BTCUSDT".into(),
            side: Side::Sell,
            trigger_price: d("95"),
            position_side: "BOTH".into(),
            client_algo_id: "s1".into(),
            quantity: None,
        };
        assert_eq!(
            a.place_stop(&StopRequest { trigger_price: d("101"), ..stop.clone() }, d("100"), 1).unwrap_err().code,
            -2021
        );
        a.place_stop(&stop, d("100"), 1).unwrap();
        // A second close-position stop in the same direction is refused (-4130), so is an open stop's id (-4116).
        let again = StopRequest { trigger_price: d("96"), client_algo_id: "s2".into(), ..stop.clone() };
        assert_eq!(a.place_stop(&again, d("100"), 1).unwrap_err().code, -4130);
        // A stop with a quantity is not limited that way; it closes at most its quantity.
        let part = StopRequest { quantity: Some(d("0.4")), ..again.clone() };
        a.place_stop(&part, d("100"), 1).unwrap();
        assert!(a.on_mark("BTCUSDT", d("95.5"), 2).iter().all(|t| t.fill.as_ref().unwrap().trade.qty == d("0.4")));
        assert_eq!(a.position("BTCUSDT", "BOTH").amount, d("0.6"));
        assert_eq!(
            a.place_stop(&StopRequest { side: Side::Buy, trigger_price: d("105"), ..stop.clone() }, d("100"), 1)
                .unwrap_err()
                .code,
            -4116
        );
        assert!(a.on_mark("BTCUSDT", d("96"), 2).is_empty());
        let fired = a.on_mark("BTCUSDT", d("94.5"), 3);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].fill.as_ref().unwrap().trade.realized_pnl, d("-3.3"));
        assert!(a.position("BTCUSDT", "BOTH").amount.is_zero());
        assert_eq!(a.stop("s1").unwrap().algo_status, AlgoStatus::Finished);
        assert!(a.open_stops(None).is_empty());
    }

    #[test]
    fn client_ids_are_unique_only_among_open_orders() {
        let mut a = SimAccount::new("USDT", d("10000"), d("0"));
        a.place_market(&mkt(Side::Buy, "1", "same", false), d("100"), 1).unwrap();
        // The first is filled (no longer open): the venue takes the id again and both execute.
        a.place_market(&mkt(Side::Buy, "1", "same", false), d("100"), 2).unwrap();
        assert_eq!(a.position("BTCUSDT", "BOTH").amount, d("2"));
    }
}
