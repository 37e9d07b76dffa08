//! Alerts from the signal bus: what each signal says in one line, whether its category is on, silent or off, and
//! a per-chat rate limit that turns a flood into one summary instead of a Telegram ban.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kronos_common::signals::{LeadAction, Outcome};
use kronos_common::{Signal, SignalKind};

use crate::config::AlertMode;
use crate::format::{esc, num, short};

/// One line for a signal (HTML).
pub fn describe(sig: &Signal) -> String {
    let t = match &sig.kind {
        SignalKind::RoundSettled {
            chain,
            market,
            epoch,
            outcome,
            lock_price,
            close_price,
            total_wei,
            delay_blocks,
            ..
        } => format!(
            "✅ {chain} market {market} round {epoch} settled {}: {} → {} (pool {} wei, {delay_blocks} blocks late)",
            match outcome {
                Outcome::Up => "UP",
                Outcome::Down => "DOWN",
                Outcome::Tie => "TIE",
                Outcome::None => "—",
            },
            short(&lock_price.to_string(), 2),
            short(&close_price.to_string(), 2),
            total_wei
        ),
        SignalKind::RoundCancelled { chain, market, epoch, reason, .. } => {
            format!("↩️ {chain} market {market} round {epoch} refunded: {reason}")
        }
        SignalKind::KeeperHealth { chain, healthy: false, detail, lag_s, .. } => {
            format!("🚨 keeper on {chain} unhealthy (lag {lag_s} s): {detail}")
        }
        SignalKind::KeeperHealth { chain, healthy: true, head_block, .. } => {
            format!("💚 keeper on {chain} recovered (block {head_block})")
        }
        SignalKind::TxFailed { chain, action, error } => format!("🚨 {chain} {action} failed: {error}"),
        SignalKind::OrderFilled { symbol, side, qty, price, fee, realized_pnl, paper, .. } => format!(
            "{} {symbol} {:?} {} @ {} (fee {}, PnL {}){}",
            if realized_pnl.is_negative() { "🔻" } else { "🟢" },
            side,
            qty.normalized(),
            short(&price.to_string(), 2),
            short(&fee.to_string(), 4),
            short(&realized_pnl.to_string(), 2),
            if *paper { " [paper]" } else { "" }
        ),
        SignalKind::PositionChanged { symbol, qty, .. } if qty.is_zero() => format!("{symbol} position closed"),
        SignalKind::PositionChanged { symbol, qty, entry_price } => {
            format!("{symbol} position now {} @ {}", qty.normalized(), num(entry_price, 2))
        }
        SignalKind::StopTriggered { symbol, stop_price, qty } => {
            format!("🛑 stop hit: {symbol} {qty} closed at the {} stop", short(&stop_price.to_string(), 2))
        }
        SignalKind::StopPlaced { symbol, stop_price, .. } => {
            format!("{symbol} stop at {}", short(&stop_price.to_string(), 2))
        }
        SignalKind::RiskEvent { kind, detail } => format!("⚠️ {kind}: {detail}"),
        SignalKind::OrderSubmitted { symbol, side, qty, reduce_only, .. } => {
            format!("{symbol} {:?} {qty}{} sent", side, if *reduce_only { " (reduce-only)" } else { "" })
        }
        SignalKind::LeadChanged { symbol, action, from_qty, to_qty } => format!(
            "lead {} {symbol}: {from_qty} → {to_qty}",
            match action {
                LeadAction::Open => "opened",
                LeadAction::Increase => "increased",
                LeadAction::Reduce => "reduced",
                LeadAction::Close => "closed",
                LeadAction::Flip => "flipped",
            }
        ),
        SignalKind::Forecast { chain, market, epoch, p_up, horizon_s, .. } => {
            format!("🔮 {chain} market {market} round {epoch}: P(up) {:.1}% over {horizon_s} s", p_up * 100.0)
        }
        SignalKind::PredictionRevealed { chain, market, epoch, p_up_bps, hit, scored, hits, .. } => format!(
            "🔮 {chain} market {market} round {epoch}: revealed {:.1}% — {} (record {hits}/{scored})",
            *p_up_bps as f64 / 100.0,
            match hit {
                Some(true) => "hit",
                Some(false) => "miss",
                None => "void",
            }
        ),
        other => other.name().replace('_', " "),
    };
    esc(&t)
}

#[derive(Debug, Default)]
struct ChatWindow {
    started: Option<Instant>,
    sent: u32,
    suppressed: BTreeMap<String, u32>,
}

/// What to do with one alert for one chat.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Send { silent: bool },
    Suppress,
    Drop,
}

/// The rate limiter: at most `burst` alerts per chat per `window`; the rest are counted and summarised.
#[derive(Debug)]
pub struct Limiter {
    burst: u32,
    window: Duration,
    chats: BTreeMap<i64, ChatWindow>,
}

impl Limiter {
    pub fn new(burst: u32, window: Duration) -> Limiter {
        Limiter { burst, window, chats: BTreeMap::new() }
    }

    /// Decides for one alert of `category` in `chat` under `mode`.
    pub fn decide(&mut self, chat: i64, category: &str, mode: AlertMode, now: Instant) -> Decision {
        if mode == AlertMode::Off {
            return Decision::Drop;
        }
        let w = self.chats.entry(chat).or_default();
        if w.started.is_none_or(|s| now.duration_since(s) >= self.window) && w.suppressed.is_empty() {
            w.started = Some(now);
            w.sent = 0;
        }
        if w.sent < self.burst {
            w.sent += 1;
            Decision::Send { silent: mode == AlertMode::Silent }
        } else {
            *w.suppressed.entry(category.to_string()).or_default() += 1;
            Decision::Suppress
        }
    }

    /// Summaries due now: (chat, text). A chat's window restarts with its summary.
    pub fn due_summaries(&mut self, now: Instant) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for (chat, w) in self.chats.iter_mut() {
            let due = w.started.is_some_and(|s| now.duration_since(s) >= self.window);
            if due && !w.suppressed.is_empty() {
                let total: u32 = w.suppressed.values().sum();
                let parts: Vec<String> =
                    w.suppressed.iter().map(|(c, n)| format!("{n} {}", c.replace('_', " "))).collect();
                out.push((
                    *chat,
                    format!(
                        "📦 {total} more alerts in the last {} s: {}",
                        self.window.as_secs(),
                        esc(&parts.join(", "))
                    ),
                ));
                w.suppressed.clear();
                w.started = Some(now);
                w.sent = 1; // the summary itself
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(kind: SignalKind) -> Signal {
        Signal { at_ms: 0, source: "copytrader".into(), kind }
    }

    /// Issue 14, item 11: a closed position reads "closed", not "position now 0.000 @ 0"; figures are rounded.
    #[test]
    fn a_closed_position_says_closed_and_figures_are_rounded() {
        let d = |s: &str| s.parse::<kronos_common::Decimal>().unwrap();
        let closed = SignalKind::PositionChanged { symbol: "BTCUSDT".into(), qty: d("0.000"), entry_price: d("0") };
        assert_eq!(describe(&sig(closed)), "BTCUSDT position closed");
        let open =
            SignalKind::PositionChanged { symbol: "BTCUSDT".into(), qty: d("0.050"), entry_price: d("65000.125") };
        assert_eq!(describe(&sig(open)), "BTCUSDT position now 0.05 @ 65000.13");
        let fill = SignalKind::OrderFilled {
            symbol: "BTCUSDT".into(),
            side: kronos_common::signals::Side::Sell,
            qty: d("0.0500"),
            price: d("3.1490"),
            fee: d("0.00005"),
            realized_pnl: d("-0.004"),
            client_order_id: "kc1".into(),
            paper: false,
        };
        assert_eq!(describe(&sig(fill)), "🔻 BTCUSDT Sell 0.05 @ 3.15 (fee 0.0001, PnL 0)");
    }

    #[test]
    fn a_flood_becomes_one_summary() {
        let mut l = Limiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let mut sent = 0;
        for i in 0..20 {
            match l.decide(7, if i % 2 == 0 { "fill" } else { "settlement" }, AlertMode::On, t0) {
                Decision::Send { silent } => {
                    assert!(!silent);
                    sent += 1
                }
                Decision::Suppress => {}
                Decision::Drop => panic!(),
            }
        }
        assert_eq!(sent, 3);
        assert!(l.due_summaries(t0 + Duration::from_secs(30)).is_empty());
        let s = l.due_summaries(t0 + Duration::from_secs(61));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 7);
        assert!(
            s[0].1.contains("17 more alerts") && s[0].1.contains("8 fill") && s[0].1.contains("9 settlement"),
            "{}",
            s[0].1
        );
        assert_eq!(
            l.decide(7, "fill", AlertMode::Silent, t0 + Duration::from_secs(62)),
            Decision::Send { silent: true }
        );
        assert_eq!(l.decide(7, "fill", AlertMode::Off, t0 + Duration::from_secs(62)), Decision::Drop);
        // Other chats have their own budget.
        assert_eq!(l.decide(8, "fill", AlertMode::On, t0), Decision::Send { silent: false });
    }
}
