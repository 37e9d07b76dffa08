//! The `status` and `stats` views, computed from the store (so the CLI shows them for a running or a stopped
//! copy-trader alike).

use anyhow::Result;
use kronos_common::{Decimal, Rounding};
use serde::Serialize;

use crate::risk::RiskState;
use crate::store::{EventRow, OrderRow, Store};

/// Performance figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub fills: usize,
    pub closing_fills: usize,
    pub wins: usize,
    pub losses: usize,
    pub realized_pnl: Decimal,
    pub fees: Decimal,
    pub net_pnl: Decimal,
    pub first_equity: Option<Decimal>,
    pub last_equity: Option<Decimal>,
    pub return_pct: Option<Decimal>,
    pub max_drawdown_pct: Option<Decimal>,
    pub orders_by_status: Vec<(String, String, i64)>,
}

fn add(a: Decimal, b: &str) -> Decimal {
    b.parse::<Decimal>().ok().and_then(|b| a.checked_add(&b).ok()).unwrap_or(a)
}

/// Computes the performance figures since `since_ms`.
pub async fn stats(store: &Store, since_ms: i64) -> Result<Stats> {
    let fills = store.fills_since(since_ms).await?;
    let (mut realized, mut fees) = (Decimal::ZERO, Decimal::ZERO);
    let (mut closing, mut wins, mut losses) = (0, 0, 0);
    for f in &fills {
        realized = add(realized, &f.realized_pnl);
        fees = add(fees, &f.fee);
        let r: Decimal = f.realized_pnl.parse().unwrap_or_default();
        if !r.is_zero() {
            closing += 1;
            if r.is_negative() {
                losses += 1;
            } else {
                wins += 1;
            }
        }
    }
    let equity = store.equity_since(since_ms).await?;
    let first = equity.first().map(|e| e.1);
    let last = equity.last().map(|e| e.1);
    let hundred = Decimal::from_int(100);
    let return_pct = match (first, last) {
        (Some(f), Some(l)) if f > Decimal::ZERO => l
            .checked_sub(&f)
            .and_then(|d| d.checked_mul(&hundred, 12, Rounding::HalfUp))
            .and_then(|d| d.checked_div(&f, 4, Rounding::HalfUp))
            .ok(),
        _ => None,
    };
    let mut peak: Option<Decimal> = None;
    let mut max_dd: Option<Decimal> = None;
    for (_, e) in &equity {
        let p = match peak {
            Some(p) if p >= *e => p,
            _ => *e,
        };
        peak = Some(p);
        if p > Decimal::ZERO {
            let dd = p
                .checked_sub(e)
                .and_then(|d| d.checked_mul(&hundred, 12, Rounding::HalfUp))
                .and_then(|d| d.checked_div(&p, 4, Rounding::HalfUp))
                .unwrap_or_default();
            max_dd = Some(max_dd.map_or(dd, |m| m.max(dd)));
        }
    }
    Ok(Stats {
        fills: fills.len(),
        closing_fills: closing,
        wins,
        losses,
        realized_pnl: realized,
        fees,
        net_pnl: realized.checked_sub(&fees).unwrap_or(realized),
        first_equity: first,
        last_equity: last,
        return_pct,
        max_drawdown_pct: max_dd,
        orders_by_status: store.order_counts().await?,
    })
}

/// The stored state: risk flags, positions, lead, recent orders and events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredStatus {
    pub risk: RiskState,
    pub positions: Vec<(String, Decimal, Decimal)>,
    pub lead: Vec<(String, Decimal, Option<Decimal>)>,
    pub recent_orders: Vec<OrderRow>,
    pub recent_events: Vec<EventRow>,
    pub paper_wallet: Option<String>,
}

pub async fn stored_status(store: &Store) -> Result<StoredStatus> {
    Ok(StoredStatus {
        risk: RiskState::load(store).await?,
        positions: store.positions().await?,
        lead: store.lead().await?,
        recent_orders: store.recent_orders(10).await?,
        recent_events: store.events(10).await?,
        paper_wallet: store.get_state("paper_wallet").await?,
    })
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// A human-readable status.
pub fn render_status(s: &StoredStatus, now_ms: i64) -> String {
    let mut out = String::new();
    let r = &s.risk;
    out.push_str(&format!(
        "emergency stop: {}\ndaily loss limit hit: {}\ncool-down: {}\n",
        if r.emergency { "ACTIVE" } else { "off" },
        if r.daily_halt { "yes (no new entries until 00:00 UTC)" } else { "no" },
        if r.cooldown_until_ms > now_ms {
            format!("{} s left", (r.cooldown_until_ms - now_ms) / 1000)
        } else {
            "none".into()
        },
    ));
    out.push_str(&format!(
        "day start equity: {}   peak equity: {}\n",
        or_dash(&r.day_start_equity),
        or_dash(&r.peak_equity)
    ));
    if let Some(w) = &s.paper_wallet {
        out.push_str(&format!("paper wallet: {w}\n"));
    }
    out.push_str("\nfollower positions:\n");
    if s.positions.is_empty() {
        out.push_str("  (flat)\n");
    }
    for (sym, q, e) in &s.positions {
        out.push_str(&format!("  {sym:<12} {q:>14} @ {e}\n"));
    }
    out.push_str("\nlead positions:\n");
    if s.lead.is_empty() {
        out.push_str("  (none seen)\n");
    }
    for (sym, q, limit) in &s.lead {
        let how = match limit {
            None => "following".to_string(),
            Some(l) if l.is_zero() => "waiting for the lead's close/flip".to_string(),
            Some(l) => format!("held at most {l} until the lead's close/flip"),
        };
        out.push_str(&format!("  {sym:<12} {q:>14} {how}\n"));
    }
    out.push_str("\nrecent orders:\n");
    for o in &s.recent_orders {
        out.push_str(&format!(
            "  {} {:<5} {:<8} {:<4} {:>10} {:<10} {}{}\n",
            o.client_id,
            o.kind,
            o.symbol,
            o.side,
            if o.kind == "stop" { o.trigger_price.clone().unwrap_or_default() } else { o.qty.clone() },
            o.status,
            o.reason,
            o.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    out.push_str("\nrecent events:\n");
    for e in &s.recent_events {
        out.push_str(&format!("  {} {:<18} {:<8} {}\n", e.at_ms, e.kind, e.symbol, e.detail));
    }
    out
}

/// A human-readable stats view.
pub fn render_stats(s: &Stats) -> String {
    let win_rate = if s.closing_fills > 0 {
        format!("{:.1}%", 100.0 * s.wins as f64 / s.closing_fills as f64)
    } else {
        "-".into()
    };
    let mut out = format!(
        "fills: {} ({} closing: {} won, {} lost, win rate {win_rate})\nrealised PnL: {}\nfees: {}\nnet PnL: {}\n\
         equity: {} -> {} (return {}%)\nmax drawdown: {}%\n",
        s.fills,
        s.closing_fills,
        s.wins,
        s.losses,
        s.realized_pnl,
        s.fees,
        s.net_pnl,
        or_dash(&s.first_equity),
        or_dash(&s.last_equity),
        or_dash(&s.return_pct),
        or_dash(&s.max_drawdown_pct),
    );
    out.push_str("orders:\n");
    for (k, st, n) in &s.orders_by_status {
        out.push_str(&format!("  {k:<6} {st:<12} {n}\n"));
    }
    out
}
