//! Where the follower's orders go: the live exchange, or a simulated account (paper). The engine calls the same
//! methods either way; only the account behind them differs. Paper fills at the exchange's current mark price
//! (public data, no keys needed) with the configured taker fee, and its stops trigger on the mark.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kronos_binance::sim::{SimAccount, Triggered};
use kronos_binance::types::{AlgoOrder, Order, OrderRequest, PositionRisk, StopRequest, Trade};
use kronos_binance::{BinanceError, FuturesClient};
use kronos_common::Decimal;
use parking_lot::Mutex;

/// A position as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub symbol: String,
    pub qty: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
}

/// Wallet and unrealised PnL in the quote asset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Equity {
    pub wallet: Decimal,
    pub unrealized: Decimal,
}

impl Equity {
    pub fn total(&self) -> Decimal {
        self.wallet.checked_add(&self.unrealized).unwrap_or(self.wallet)
    }
}

/// The simulated account of paper mode.
pub struct Paper {
    pub sim: Mutex<SimAccount>,
    /// Public market data of the configured network (mark prices).
    prices: FuturesClient,
    marks: Mutex<HashMap<String, (Decimal, Instant)>>,
}

/// The follower's account.
pub enum Venue {
    Live(FuturesClient),
    Paper(Box<Paper>),
}

const MARK_TTL: Duration = Duration::from_millis(500);

impl Venue {
    /// A paper venue with a fresh simulated account.
    pub fn paper(prices: FuturesClient, sim: SimAccount) -> Venue {
        Venue::Paper(Box::new(Paper { sim: Mutex::new(sim), prices, marks: Mutex::new(HashMap::new()) }))
    }

    pub fn is_paper(&self) -> bool {
        matches!(self, Venue::Paper(_))
    }

    /// The client used for market data (the live client, or paper's public one).
    pub fn market_client(&self) -> &FuturesClient {
        match self {
            Venue::Live(c) => c,
            Venue::Paper(p) => &p.prices,
        }
    }

    /// True in hedge mode.
    pub async fn hedge_mode(&self) -> Result<bool, BinanceError> {
        match self {
            Venue::Live(c) => c.hedge_mode().await,
            Venue::Paper(p) => Ok(p.sim.lock().hedge_mode),
        }
    }

    /// Sets leverage and margin type of a symbol.
    pub async fn setup_symbol(&self, symbol: &str, leverage: u32, margin_type: &str) -> Result<(), BinanceError> {
        match self {
            Venue::Live(c) => {
                c.set_margin_type(symbol, margin_type).await?;
                c.set_leverage(symbol, leverage).await
            }
            Venue::Paper(p) => {
                let mut s = p.sim.lock();
                s.leverage.insert(symbol.to_string(), leverage);
                s.margin_type.insert(symbol.to_string(), margin_type.to_string());
                Ok(())
            }
        }
    }

    /// The current mark price (cached for half a second).
    pub async fn mark(&self, symbol: &str) -> Result<Decimal, BinanceError> {
        if let Venue::Paper(p) = self {
            if let Some((m, at)) = p.marks.lock().get(symbol) {
                if at.elapsed() < MARK_TTL {
                    return Ok(*m);
                }
            }
        }
        let m = self.market_client().mark_price(symbol).await?.mark_price;
        if let Venue::Paper(p) = self {
            p.marks.lock().insert(symbol.to_string(), (m, Instant::now()));
        }
        Ok(m)
    }

    /// Places a market order exactly once; returns it with its fills.
    pub async fn place_order(&self, req: &OrderRequest) -> Result<(Order, Vec<Trade>), BinanceError> {
        match self {
            Venue::Live(c) => {
                let o = c.place_order(req).await?;
                let trades = if o.executed_qty.is_zero() {
                    Vec::new()
                } else {
                    // Fees and realised PnL come from the fills; a failure here does not undo the order.
                    c.order_trades(&req.symbol, o.order_id).await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, client_order_id = %req.client_order_id, "fills of a placed order could not be read");
                        Vec::new()
                    })
                };
                Ok((o, trades))
            }
            Venue::Paper(p) => {
                let mark = self.mark(&req.symbol).await?;
                let now = kronos_common::time::now_ms() as i64;
                let fill = p.sim.lock().place_market(req, mark, now).map_err(|r| BinanceError::Api {
                    endpoint: "paper POST /fapi/v1/order".into(),
                    http_status: 400,
                    code: r.code,
                    msg: r.msg,
                })?;
                Ok((fill.order, vec![fill.trade]))
            }
        }
    }

    /// An order by our client id (`None`: it does not exist).
    pub async fn query_order(&self, symbol: &str, client_id: &str) -> Result<Option<Order>, BinanceError> {
        match self {
            Venue::Live(c) => match c.query_order(symbol, client_id).await {
                Ok(o) => Ok(Some(o)),
                Err(e) if e.code() == Some(-2013) => Ok(None),
                Err(e) => Err(e),
            },
            Venue::Paper(p) => Ok(p.sim.lock().order(client_id).cloned()),
        }
    }

    /// Places a close-position stop exactly once.
    pub async fn place_stop(&self, req: &StopRequest) -> Result<AlgoOrder, BinanceError> {
        match self {
            Venue::Live(c) => c.place_stop(req).await,
            Venue::Paper(p) => {
                let mark = self.mark(&req.symbol).await?;
                let now = kronos_common::time::now_ms() as i64;
                p.sim.lock().place_stop(req, mark, now).map_err(|r| BinanceError::Api {
                    endpoint: "paper POST /fapi/v1/algoOrder".into(),
                    http_status: 400,
                    code: r.code,
                    msg: r.msg,
                })
            }
        }
    }

    /// A stop by our client id (`None`: it does not exist).
    pub async fn query_stop(&self, client_id: &str) -> Result<Option<AlgoOrder>, BinanceError> {
        match self {
            Venue::Live(c) => match c.query_stop(client_id).await {
                Ok(o) => Ok(Some(o)),
                Err(e) if e.code() == Some(-2013) => Ok(None),
                Err(e) => Err(e),
            },
            Venue::Paper(p) => Ok(p.sim.lock().stop(client_id).cloned()),
        }
    }

    /// Cancels a stop (one already gone counts as cancelled).
    pub async fn cancel_stop(&self, client_id: &str) -> Result<(), BinanceError> {
        match self {
            Venue::Live(c) => c.cancel_stop(client_id).await,
            Venue::Paper(p) => {
                let _ = p.sim.lock().cancel_stop(client_id, kronos_common::time::now_ms() as i64);
                Ok(())
            }
        }
    }

    /// Cancels a stop; one that is not open any more answers -2011 (or -2013), for the caller to ask what became
    /// of it.
    pub async fn cancel_stop_strict(&self, client_id: &str) -> Result<(), BinanceError> {
        match self {
            Venue::Live(c) => c.cancel_stop_strict(client_id).await,
            Venue::Paper(p) => {
                p.sim.lock().cancel_stop(client_id, kronos_common::time::now_ms() as i64).map(|_| ()).map_err(|r| {
                    BinanceError::Api {
                        endpoint: "paper DELETE /fapi/v1/algoOrder".into(),
                        http_status: 400,
                        code: r.code,
                        msg: r.msg,
                    }
                })
            }
        }
    }

    /// Every open stop.
    pub async fn open_stops(&self) -> Result<Vec<AlgoOrder>, BinanceError> {
        match self {
            Venue::Live(c) => c.open_stops(None).await,
            Venue::Paper(p) => Ok(p.sim.lock().open_stops(None)),
        }
    }

    /// Cancels every open regular order of a symbol (live only; paper orders never rest).
    pub async fn cancel_open_orders(&self, symbol: &str) -> Result<(), BinanceError> {
        match self {
            Venue::Live(c) => c.cancel_all_orders(symbol).await,
            Venue::Paper(_) => Ok(()),
        }
    }

    /// Every non-flat position (hedge-mode sides netted per symbol).
    pub async fn positions(&self) -> Result<Vec<Position>, BinanceError> {
        Ok(net_positions(self.position_sides().await?))
    }

    /// Every non-flat position side as the exchange holds it (hedge mode: LONG and SHORT apart).
    pub async fn position_sides(&self) -> Result<Vec<PositionRisk>, BinanceError> {
        let raw: Vec<PositionRisk> = match self {
            Venue::Live(c) => c.positions().await?,
            Venue::Paper(p) => {
                let symbols: Vec<String> = p.sim.lock().open_positions().into_iter().map(|(s, _, _)| s).collect();
                let mut marks = HashMap::new();
                for s in symbols {
                    if let Ok(m) = self.mark(&s).await {
                        marks.insert(s, m);
                    }
                }
                p.sim.lock().position_risk(&marks)
            }
        };
        Ok(raw.into_iter().filter(|p| !p.position_amt.is_zero()).collect())
    }

    /// Wallet and unrealised PnL.
    pub async fn equity(&self, asset: &str) -> Result<Equity, BinanceError> {
        match self {
            Venue::Live(c) => {
                let b = c.balance_of(asset).await?;
                Ok(Equity { wallet: b.balance, unrealized: b.cross_un_pnl })
            }
            Venue::Paper(p) => {
                let symbols: Vec<String> = p.sim.lock().open_positions().into_iter().map(|(s, _, _)| s).collect();
                let mut marks = HashMap::new();
                for s in symbols {
                    marks.insert(s.clone(), self.mark(&s).await?);
                }
                let b = p.sim.lock().balance(&marks);
                Ok(Equity { wallet: b.balance, unrealized: b.cross_un_pnl })
            }
        }
    }

    /// Paper only: applies current mark prices to the simulated account, firing the stops they cross.
    pub async fn tick(&self) -> Result<Vec<Triggered>, BinanceError> {
        let Venue::Paper(p) = self else { return Ok(Vec::new()) };
        let symbols: Vec<String> = {
            let s = p.sim.lock();
            let mut v: Vec<String> = s.open_stops(None).into_iter().map(|a| a.symbol).collect();
            v.sort();
            v.dedup();
            v
        };
        let mut fired = Vec::new();
        for s in symbols {
            let m = self.market_client().mark_price(&s).await?.mark_price;
            p.marks.lock().insert(s.clone(), (m, Instant::now()));
            fired.extend(p.sim.lock().on_mark(&s, m, kronos_common::time::now_ms() as i64));
        }
        Ok(fired)
    }

    /// Paper only: the simulated wallet, for persistence (positions are stored with every fill).
    pub fn paper_wallet(&self) -> Option<Decimal> {
        match self {
            Venue::Paper(p) => Some(p.sim.lock().wallet),
            Venue::Live(_) => None,
        }
    }
}

/// Nets hedge-mode LONG/SHORT rows per symbol and drops flat ones.
pub fn net_positions(raw: Vec<PositionRisk>) -> Vec<Position> {
    let mut by: std::collections::BTreeMap<String, Position> = std::collections::BTreeMap::new();
    for p in raw {
        if p.position_amt.is_zero() {
            continue;
        }
        let e = by.entry(p.symbol.clone()).or_insert(Position {
            symbol: p.symbol.clone(),
            qty: Decimal::ZERO,
            entry_price: p.entry_price,
            mark_price: p.mark_price,
        });
        e.qty = e.qty.checked_add(&p.position_amt).unwrap_or(e.qty);
        e.mark_price = p.mark_price;
    }
    by.into_values().filter(|p| !p.qty.is_zero()).collect()
}
