//! The `status` and `stats` views, computed from the store (so the CLI shows them for a running or a stopped
//! copy-trader alike).

use anyhow::Result;
use kronos_common::{Decimal, Rounding};
use serde::Serialize;

use crate::control::CarriedOut;
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

/// A ratio set at runtime (Telegram's `/ratio`, `kronos copytrade ratio`): it is kept in the store and applies over
/// `copytrade.sizing.ratio` on every start until it is reset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatioOverride {
    /// As stored (not necessarily a valid ratio).
    pub value: String,
    /// Who set it, e.g. "Telegram /ratio".
    pub set_by: Option<String>,
    pub set_ms: Option<i64>,
}

/// The smallest ratio taken (configured or set at runtime): below it positions round to zero, which would close
/// everything.
pub const MIN_RATIO: &str = "0.001";
/// The largest ratio taken.
pub const MAX_RATIO: i128 = 100;

/// A ratio as the engine takes it: a number from [`MIN_RATIO`] to [`MAX_RATIO`]; anything else is refused (an
/// override in the store outside that range is ignored).
pub fn valid_ratio(s: &str) -> Option<Decimal> {
    let min: Decimal = MIN_RATIO.parse().expect("literal");
    s.trim().parse::<Decimal>().ok().filter(|r| *r >= min && *r <= Decimal::from_int(MAX_RATIO))
}

/// The stored state: the switches, risk flags, positions, lead, recent orders and events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredStatus {
    /// Copy-trading on (`trading` switch; off after `/stop`).
    pub trading: bool,
    pub ratio_override: Option<RatioOverride>,
    pub risk: RiskState,
    pub positions: Vec<(String, Decimal, Decimal)>,
    pub lead: Vec<(String, Decimal, Option<Decimal>)>,
    pub recent_orders: Vec<OrderRow>,
    pub recent_events: Vec<EventRow>,
    pub paper_wallet: Option<String>,
    /// Control values that cannot be read, each naming its key.
    pub control_errors: Vec<String>,
}

pub async fn stored_status(store: &Store) -> Result<StoredStatus> {
    let control = crate::control::load(store).await?;
    let ratio_override = match &control.ratio {
        Ok(Some((Some(r), stamp))) => {
            Some(RatioOverride { value: r.to_string(), set_by: Some(stamp.set_by.clone()), set_ms: Some(stamp.at_ms) })
        }
        Ok(Some((None, _))) | Ok(None) => None,
        // Not a ratio: shown as stored (the line says it is not one and that the configured ratio applies).
        Err(b) => Some(RatioOverride { value: b.value.clone(), set_by: None, set_ms: None }),
    };
    let mut risk = RiskState::load(store).await?;
    // As the engine takes it: asked (or unreadable) is in force.
    risk.emergency = control.emergency_asked();
    Ok(StoredStatus {
        trading: control.trading_on(),
        ratio_override,
        risk,
        positions: store.positions().await?,
        lead: store.lead().await?,
        recent_orders: store.recent_orders(10).await?,
        recent_events: store.events(10).await?,
        paper_wallet: store.get_state("paper_wallet").await?,
        control_errors: control.errors(),
    })
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// What the copy-trader reported after an emergency stop was requested (from the events in its store).
#[derive(Debug, Clone, PartialEq)]
pub enum EmergencyOutcome {
    /// No position left open (`emergency_done`).
    Done,
    /// An attempt left something open (`emergency_incomplete`, `emergency_needs_person`): its detail.
    Incomplete(String),
    /// Nothing reported within the wait: the copy-trader is probably not running.
    NoAnswer,
}

/// The answer to the emergency command numbered `seq` in the control log, from the engine's record: the report of
/// a pass made for that command or for a later one (a pass carries out every stop numbered up to the one it names);
/// `None` while there is none — a report of an earlier command, however recent, is not this one's.
pub fn emergency_report(carried: &CarriedOut, seq: i64) -> Option<EmergencyOutcome> {
    let r = carried.emergency_report.as_ref().filter(|r| r.seq >= seq)?;
    Some(if r.done { EmergencyOutcome::Done } else { EmergencyOutcome::Incomplete(r.detail.clone()) })
}

/// Waits up to `wait` for the copy-trader to report what the emergency command numbered `seq` (as
/// [`crate::control::append`] returned it) did.
pub async fn emergency_outcome(store: &Store, seq: i64, wait: std::time::Duration) -> EmergencyOutcome {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if let Some(o) = crate::control::carried_out(store).await.ok().and_then(|c| emergency_report(&c, seq)) {
            return o;
        }
        if tokio::time::Instant::now() >= until {
            return EmergencyOutcome::NoAnswer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A time as `YYYY-MM-DD HH:MM:SSZ` (UTC) from milliseconds since the epoch.
pub fn utc(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000) / 1000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The ratio in effect and where it comes from: the configuration (`configured`, from `file`) or an override
/// set at runtime.
pub fn ratio_line(configured: Decimal, file: &str, ov: Option<&RatioOverride>) -> String {
    let Some(o) = ov else {
        return format!("ratio: {configured} (copytrade.sizing.ratio in {file})");
    };
    let who = format!(
        "set by {}{}",
        o.set_by.as_deref().unwrap_or("another process"),
        o.set_ms.map(|t| format!(" at {}", utc(t))).unwrap_or_default()
    );
    match valid_ratio(&o.value) {
        None => format!(
            "ratio: {configured} (copytrade.sizing.ratio in {file}); the override '{}' in the store ({who}) is not a \
             ratio from {MIN_RATIO} to {MAX_RATIO}: a running copy-trader keeps the ratio it has in force and reports \
             the error; set one again with kronos copytrade ratio",
            o.value
        ),
        Some(r) if r == configured => {
            format!("ratio: {r} ({who}; the same as copytrade.sizing.ratio in {file})")
        }
        Some(r) => format!(
            "ratio: {r} ({who}); it overrides copytrade.sizing.ratio = {configured} in {file} on every start until \
             reset: kronos copytrade ratio --reset"
        ),
    }
}

/// A human-readable status; `configured_ratio` and `file` are the configuration's, to say where the ratio in
/// effect comes from.
pub fn render_status(s: &StoredStatus, configured_ratio: Decimal, file: &str, now_ms: i64) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "copy-trading: {}\n{}\n",
        if s.trading { "ON" } else { "OFF (switched off, e.g. by /stop; /follow in the bot turns it on)" },
        ratio_line(configured_ratio, file, s.ratio_override.as_ref())
    ));
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
    for e in &s.control_errors {
        out.push_str(&format!("control error: {e}\n"));
    }
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
        out.push_str(&format!("  {} {:<18} {:<8} {}\n", utc(e.at_ms), e.kind, e.symbol, e.detail));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// Issue 12: what an emergency stop did is the engine's report naming that command's sequence number (or a later
    /// one's: a pass carries out every stop up to the one it names), never a report that merely came later by the
    /// clock — before, a report of an earlier command recorded after the asker read its clock answered it.
    #[test]
    fn an_emergency_request_is_answered_by_the_report_of_its_own_command() {
        use crate::control::EmergencyReport;
        let with = |seq: i64, done: bool, detail: &str| CarriedOut {
            emergency_report: Some(EmergencyReport { seq, done, detail: detail.into(), at_ms: 1 }),
            ..CarriedOut::default()
        };
        let incomplete = with(7, false, "still open: BTCUSDT BOTH 0.05");
        assert_eq!(
            emergency_report(&incomplete, 7),
            Some(EmergencyOutcome::Incomplete("still open: BTCUSDT BOTH 0.05".into()))
        );
        // A pass for a later command answers an earlier one too.
        assert_eq!(emergency_report(&with(9, true, ""), 7), Some(EmergencyOutcome::Done));
        // An earlier command's report, however recent, does not answer this one.
        assert_eq!(emergency_report(&with(6, true, ""), 7), None);
        assert_eq!(emergency_report(&CarriedOut::default(), 1), None);
        // A record written before reports existed reads as none.
        let old: CarriedOut = serde_json::from_str(
            r#"{"emergency_seq":3,"emergency_active":true,"emergency_at_ms":7,"ratio_effective":null}"#,
        )
        .unwrap();
        assert_eq!(old.emergency_report, None);
    }

    /// Issue 14, item 11: event times are read as UTC times, not epoch milliseconds.
    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_796_148_583_301), "2026-12-01 18:09:43Z");
        assert_eq!(utc(951_782_400_000 + 3_661_000), "2000-02-29 01:01:01Z");
    }

    /// Issue 14, item 11: the status says which ratio is in effect, where it came from, and whether trading is on.
    #[test]
    fn the_status_shows_the_ratio_in_effect_and_its_source_and_the_switch() {
        let s = StoredStatus {
            trading: false,
            ratio_override: Some(RatioOverride {
                value: "0.8".into(),
                set_by: Some("Telegram /ratio".into()),
                set_ms: Some(1_796_148_583_301),
            }),
            risk: RiskState::default(),
            positions: vec![],
            lead: vec![],
            recent_orders: vec![],
            recent_events: vec![EventRow {
                at_ms: 1_796_148_583_301,
                kind: "trading_off".into(),
                symbol: "".into(),
                detail: "x".into(),
            }],
            paper_wallet: None,
            control_errors: vec![],
        };
        let out = render_status(&s, d("0.5"), "ct.toml", 0);
        assert!(out.contains("copy-trading: OFF"), "{out}");
        assert!(
            out.contains(
                "ratio: 0.8 (set by Telegram /ratio at 2026-12-01 18:09:43Z); it overrides copytrade.sizing.ratio = \
                 0.5 in ct.toml"
            ),
            "{out}"
        );
        assert!(out.contains("  2026-12-01 18:09:43Z trading_off") && !out.contains("1796148583301"), "{out}");
        assert_eq!(ratio_line(d("0.5"), "ct.toml", None), "ratio: 0.5 (copytrade.sizing.ratio in ct.toml)");
        let bad = RatioOverride { value: "-3".into(), set_by: None, set_ms: None };
        assert!(ratio_line(d("0.5"), "ct.toml", Some(&bad))
            .contains("'-3' in the store (set by another process) is not a ratio"));
        let on = StoredStatus { trading: true, ratio_override: None, ..s };
        assert!(render_status(&on, d("0.5"), "ct.toml", 0).starts_with("copy-trading: ON\nratio: 0.5"));
    }

    /// Audit of issue 14, L5: a ratio so small that every position rounds to zero (closing everything) is refused.
    #[test]
    fn a_ratio_below_the_minimum_is_refused() {
        for bad in ["1e-30", "0.0000000000000000000000000001", "0.0009", "0", "-1", "100.01", "x"] {
            assert_eq!(valid_ratio(bad), None, "{bad}");
        }
        for good in ["0.001", "0.5", "100"] {
            assert_eq!(valid_ratio(good), Some(good.parse().unwrap()), "{good}");
        }
    }
}
