//! Protections that outlive a restart: the emergency stop, the daily loss limit, the drawdown cool-down.
//!
//! All of it lives in the store (`ct_state`), so a restarted copy-trader (or another process: the CLI, the
//! Telegram bot) sees and sets the same state.

use anyhow::Result;
use kronos_common::{Decimal, Rounding};
use serde::Serialize;

use crate::store::Store;

const DAY_MS: i64 = 86_400_000;

/// The persisted risk state.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RiskState {
    /// Everything closed and nothing new until resumed.
    pub emergency: bool,
    /// New entries paused until then (ms since the epoch).
    pub cooldown_until_ms: i64,
    /// The UTC day (days since the epoch) the daily figures belong to.
    pub day: i64,
    pub day_start_equity: Option<Decimal>,
    /// The daily loss limit was hit: no new entries until the next UTC day.
    pub daily_halt: bool,
    pub peak_equity: Option<Decimal>,
}

/// Something the risk checks decided.
#[derive(Debug, Clone, PartialEq)]
pub enum RiskDecision {
    DailyLimitHit { loss: Decimal, limit: Decimal },
    NewDay { start_equity: Decimal },
    CooldownStarted { drawdown_pct: Decimal, until_ms: i64 },
    CooldownOver,
}

/// How a risk decision is reported: an event of `kind` with `detail`; a risk event (logged, counted, published) when
/// `alert`, else only recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
    pub(crate) alert: bool,
}

impl RiskDecision {
    /// What the engine reports for this decision, taken at `now_ms`.
    pub(crate) fn report(&self, now_ms: i64) -> Report {
        let (kind, detail, alert) = match self {
            RiskDecision::DailyLimitHit { loss, limit } => (
                "daily_loss_limit",
                format!("equity is {loss} below the day's start (limit {limit}); no new entries until 00:00 UTC"),
                true,
            ),
            RiskDecision::CooldownStarted { drawdown_pct, until_ms } => (
                "drawdown_cooldown",
                format!("drawdown {drawdown_pct}% from the peak; no new entries for {} s", (until_ms - now_ms) / 1000),
                true,
            ),
            RiskDecision::CooldownOver => ("cooldown_over", "new entries allowed again".into(), true),
            RiskDecision::NewDay { start_equity } => ("new_day", format!("day starts at equity {start_equity}"), false),
        };
        Report { kind, detail, alert }
    }
}

fn parse_dec(s: Option<String>) -> Option<Decimal> {
    s.and_then(|v| v.parse().ok())
}

impl RiskState {
    /// Loads the state (defaults when none was saved).
    pub async fn load(store: &Store) -> Result<RiskState> {
        Ok(RiskState {
            // In force only once the engine carries it out (the control log says whether it is asked).
            emergency: false,
            cooldown_until_ms: store.get_state("cooldown_until_ms").await?.and_then(|v| v.parse().ok()).unwrap_or(0),
            day: store.get_state("day").await?.and_then(|v| v.parse().ok()).unwrap_or(0),
            day_start_equity: parse_dec(store.get_state("day_start_equity").await?),
            daily_halt: store.get_state("daily_halt").await?.as_deref() == Some("1"),
            peak_equity: parse_dec(store.get_state("peak_equity").await?),
        })
    }

    /// Saves the figures the engine computes. Not `emergency`: the emergency stop is asked through the control log
    /// ([`crate::control`]) and carried out by the engine, so a save never touches a stop requested meanwhile.
    pub async fn save(&self, store: &Store) -> Result<()> {
        store.set_state("cooldown_until_ms", &self.cooldown_until_ms.to_string()).await?;
        store.set_state("day", &self.day.to_string()).await?;
        match &self.day_start_equity {
            Some(e) => store.set_state("day_start_equity", &e.to_string()).await?,
            None => store.delete_state("day_start_equity").await?,
        }
        store.set_state("daily_halt", if self.daily_halt { "1" } else { "0" }).await?;
        match &self.peak_equity {
            Some(e) => store.set_state("peak_equity", &e.to_string()).await?,
            None => store.delete_state("peak_equity").await?,
        }
        Ok(())
    }

    /// Whether new entries (opening or growing a position) are allowed now; `Err` names why not.
    pub fn entries_allowed(&self, now_ms: i64) -> Result<(), String> {
        if self.emergency {
            return Err("emergency stop is active".into());
        }
        if self.daily_halt {
            return Err("daily loss limit reached".into());
        }
        if now_ms < self.cooldown_until_ms {
            return Err(format!("drawdown cool-down for {} s more", (self.cooldown_until_ms - now_ms) / 1000));
        }
        Ok(())
    }

    /// Applies an equity observation: day roll-over, the daily loss limit, the peak and the drawdown cool-down.
    pub fn observe(
        &mut self,
        equity: Decimal,
        now_ms: i64,
        daily_loss_limit: Decimal,
        drawdown_pct: Decimal,
        cooldown_ms: i64,
    ) -> Vec<RiskDecision> {
        let mut out = Vec::new();
        let today = now_ms.div_euclid(DAY_MS);
        if self.day != today || self.day_start_equity.is_none() {
            self.day = today;
            self.day_start_equity = Some(equity);
            self.daily_halt = false;
            out.push(RiskDecision::NewDay { start_equity: equity });
        }
        if let Some(start) = self.day_start_equity {
            let loss = start.checked_sub(&equity).unwrap_or(Decimal::ZERO);
            if !self.daily_halt && loss >= daily_loss_limit {
                self.daily_halt = true;
                out.push(RiskDecision::DailyLimitHit { loss, limit: daily_loss_limit });
            }
        }
        if self.cooldown_until_ms != 0 && now_ms >= self.cooldown_until_ms {
            // The pause is over: measure drawdowns from here on.
            self.cooldown_until_ms = 0;
            self.peak_equity = Some(equity);
            out.push(RiskDecision::CooldownOver);
        }
        let peak = match self.peak_equity {
            Some(p) if p >= equity => p,
            _ => {
                self.peak_equity = Some(equity);
                equity
            }
        };
        if self.cooldown_until_ms == 0 && peak > Decimal::ZERO {
            let dd = peak
                .checked_sub(&equity)
                .and_then(|x| x.checked_mul(&Decimal::from_int(100), 12, Rounding::HalfUp))
                .and_then(|x| x.checked_div(&peak, 4, Rounding::Down))
                .unwrap_or(Decimal::ZERO);
            if dd >= drawdown_pct {
                self.cooldown_until_ms = now_ms + cooldown_ms;
                out.push(RiskDecision::CooldownStarted { drawdown_pct: dd, until_ms: self.cooldown_until_ms });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn daily_limit_holds_until_the_next_utc_day() {
        let mut r = RiskState::default();
        let t0 = 20_000 * DAY_MS + 1000;
        assert!(matches!(r.observe(d("1000"), t0, d("50"), d("90"), 1000)[..], [RiskDecision::NewDay { .. }]));
        assert!(r.observe(d("960"), t0 + 10, d("50"), d("90"), 1000).is_empty());
        let dec = r.observe(d("949"), t0 + 20, d("50"), d("90"), 1000);
        assert_eq!(dec, vec![RiskDecision::DailyLimitHit { loss: d("51"), limit: d("50") }]);
        assert_eq!(r.entries_allowed(t0 + 20).unwrap_err(), "daily loss limit reached");
        // Recovering the same day does not lift it.
        r.observe(d("1100"), t0 + 30, d("50"), d("90"), 1000);
        assert!(r.entries_allowed(t0 + 30).is_err());
        // The next UTC day does.
        r.observe(d("1100"), t0 + DAY_MS, d("50"), d("90"), 1000);
        assert!(r.entries_allowed(t0 + DAY_MS).is_ok());
    }

    #[tokio::test]
    async fn saving_never_overwrites_an_emergency_stop_set_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite:{}/r.sqlite", dir.path().display())).await.unwrap();
        let mut r = RiskState::load(&store).await.unwrap();
        assert!(!r.emergency);
        // The CLI (or Telegram) stops everything while the engine holds the state it loaded…
        let cmd = crate::control::ControlCommand::EmergencyStop { reason: "cli".into() };
        crate::control::append(&store, &cmd, "test").await.unwrap();
        // …and the engine saves a new peak.
        r.observe(d("1000"), 20_000 * DAY_MS, d("50"), d("90"), 1000);
        r.save(&store).await.unwrap();
        assert!(crate::control::load(&store).await.unwrap().emergency_asked());
        let loaded = RiskState::load(&store).await.unwrap();
        assert_eq!(loaded.peak_equity, Some(d("1000")));
    }

    #[test]
    fn drawdown_starts_a_cooldown_that_ends_on_time() {
        let mut r = RiskState::default();
        let t0 = 20_000 * DAY_MS;
        r.observe(d("1000"), t0, d("100000"), d("10"), 60_000);
        r.observe(d("1200"), t0 + 1, d("100000"), d("10"), 60_000);
        let dec = r.observe(d("1079"), t0 + 2, d("100000"), d("10"), 60_000);
        assert!(
            matches!(dec[..], [RiskDecision::CooldownStarted { until_ms, .. }] if until_ms == t0 + 60_002),
            "{dec:?}"
        );
        assert!(r.entries_allowed(t0 + 3).unwrap_err().contains("cool-down"));
        // Lower still during the pause: nothing new.
        assert!(r.observe(d("1000"), t0 + 30_000, d("100000"), d("10"), 60_000).is_empty());
        let dec = r.observe(d("1000"), t0 + 60_002, d("100000"), d("10"), 60_000);
        assert_eq!(dec, vec![RiskDecision::CooldownOver]);
        assert!(r.entries_allowed(t0 + 60_002).is_ok());
        assert_eq!(r.peak_equity, Some(d("1000")), "the peak restarts after a cool-down");
    }

    #[test]
    fn a_loss_equal_to_the_daily_limit_halts_entries_and_one_just_under_does_not() {
        let t0 = 20_000 * DAY_MS;
        let mut r = RiskState::default();
        r.observe(d("1000"), t0, d("50"), d("90"), 1000);
        assert!(r.observe(d("950.01"), t0 + 1, d("50"), d("90"), 1000).is_empty());
        assert!(r.entries_allowed(t0 + 1).is_ok());
        assert_eq!(
            r.observe(d("950"), t0 + 2, d("50"), d("90"), 1000),
            vec![RiskDecision::DailyLimitHit { loss: d("50"), limit: d("50") }]
        );
        // Reported once, not at every later observation.
        assert!(r.observe(d("900"), t0 + 3, d("50"), d("90"), 1000).is_empty());
        // A gain is no loss.
        let mut r = RiskState::default();
        r.observe(d("1000"), t0, d("0.5"), d("90"), 1000);
        assert!(r.observe(d("1001"), t0 + 1, d("0.5"), d("90"), 1000).is_empty());
        assert!(!r.daily_halt);
    }

    #[test]
    fn a_drawdown_equal_to_the_threshold_starts_the_cooldown_and_one_just_under_does_not() {
        let t0 = 20_000 * DAY_MS;
        let mut r = RiskState::default();
        r.observe(d("1000"), t0, d("100000"), d("10"), 60_000);
        // 9.99% below the peak: nothing.
        assert!(r.observe(d("900.1"), t0 + 1, d("100000"), d("10"), 60_000).is_empty());
        assert!(r.entries_allowed(t0 + 1).is_ok());
        // Exactly 10%: the pause starts, for the configured cool-down from now.
        assert_eq!(
            r.observe(d("900"), t0 + 2, d("100000"), d("10"), 60_000),
            vec![RiskDecision::CooldownStarted { drawdown_pct: d("10"), until_ms: t0 + 60_002 }]
        );
        // One millisecond before its end it still holds.
        assert!(r.entries_allowed(t0 + 60_001).is_err());
        assert!(r.observe(d("900"), t0 + 60_001, d("100000"), d("10"), 60_000).is_empty());
        // A new peak is kept (a restart measures drawdowns from it).
        let mut r = RiskState::default();
        r.observe(d("1000"), t0, d("100000"), d("10"), 60_000);
        assert!(r.observe(d("1100"), t0 + 1, d("100000"), d("10"), 60_000).is_empty());
        assert_eq!(r.peak_equity, Some(d("1100")));
        assert!(r.observe(d("1050"), t0 + 2, d("100000"), d("10"), 60_000).is_empty());
        assert_eq!(r.peak_equity, Some(d("1100")));
    }

    #[test]
    fn entries_are_refused_by_the_emergency_stop_the_daily_halt_and_the_cooldown_each() {
        let now = 1_000_000;
        assert!(RiskState::default().entries_allowed(now).is_ok());
        let r = RiskState { emergency: true, ..Default::default() };
        assert_eq!(r.entries_allowed(now).unwrap_err(), "emergency stop is active");
        let r = RiskState { daily_halt: true, ..Default::default() };
        assert_eq!(r.entries_allowed(now).unwrap_err(), "daily loss limit reached");
        let r = RiskState { cooldown_until_ms: now + 5_500, ..Default::default() };
        assert_eq!(r.entries_allowed(now).unwrap_err(), "drawdown cool-down for 5 s more");
        let r = RiskState { cooldown_until_ms: now, ..Default::default() };
        assert!(r.entries_allowed(now).is_ok());
    }

    #[test]
    fn risk_decisions_are_reported_as_alerts_except_a_new_day() {
        let r = RiskDecision::DailyLimitHit { loss: d("51"), limit: d("50") }.report(0);
        assert_eq!((r.kind, r.alert), ("daily_loss_limit", true));
        assert_eq!(r.detail, "equity is 51 below the day's start (limit 50); no new entries until 00:00 UTC");
        let r = RiskDecision::CooldownStarted { drawdown_pct: d("10.5"), until_ms: 61_000 }.report(1_000);
        assert_eq!((r.kind, r.alert), ("drawdown_cooldown", true));
        assert_eq!(r.detail, "drawdown 10.5% from the peak; no new entries for 60 s");
        let r = RiskDecision::CooldownOver.report(0);
        assert_eq!((r.kind, r.detail.as_str(), r.alert), ("cooldown_over", "new entries allowed again", true));
        let r = RiskDecision::NewDay { start_equity: d("1000") }.report(0);
        assert_eq!((r.kind, r.detail.as_str(), r.alert), ("new_day", "day starts at equity 1000", false));
    }
}
