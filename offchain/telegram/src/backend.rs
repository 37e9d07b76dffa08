//! Where the bot's answers come from and where its switches go.
//!
//! - The keeper: its HTTP API (`/health`, `/api/markets`, `/api/predictions`).
//! - The copy-trader: its store (status, stats, and the switches `trading`, `ratio`, `emergency`, which the
//!   copy-trader reads every second — so they work whether or not it is running right now) and, when configured,
//!   its HTTP API for live figures (equity, stops) and an immediate emergency stop.
//!
//! A part that is not configured or not reachable gives a clear one-line answer, never a crash.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kronos_common::Decimal;
use kronos_copytrade::report::{self, Stats, StoredStatus};
use kronos_copytrade::Store;
use serde_json::Value;

/// Data sources and switches.
#[derive(Clone)]
pub struct Backend {
    http: reqwest::Client,
    pub keeper_api: Option<String>,
    /// The keeper's API token (`Authorization: Bearer`): shows the live forecast before its reveal.
    pub keeper_token: Option<kronos_common::Secret>,
    pub copytrade_api: Option<String>,
    /// The copy-trader's control token (`Authorization: Bearer`), for its immediate emergency stop.
    pub copytrade_token: Option<kronos_common::Secret>,
    pub store: Option<Store>,
}

/// What an emergency stop from the bot did, beyond saving the flag in the store (which always happens first).
#[derive(Debug, Clone, PartialEq)]
pub enum EmergencySent {
    /// No copy-trader API configured: the store's flag alone (a running copy-trader reads it within a second).
    StoreOnly,
    /// The running copy-trader accepted it over its API.
    Accepted,
    /// The copy-trader's API refused it (HTTP status: 401 wrong or missing token, 403 control API disabled).
    Refused(u16),
    /// The copy-trader's API could not be reached.
    Unreachable(String),
}

pub use kronos_copytrade::report::EmergencyOutcome;

/// The copy-trader's state as the bot shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyView {
    pub live_api: bool,
    pub mode: Option<String>,
    pub trading: bool,
    pub ratio: Option<String>,
    pub emergency: bool,
    pub entries_blocked: Option<String>,
    pub equity: Option<String>,
    pub wallet: Option<String>,
    pub unrealized: Option<String>,
    /// (symbol, qty, entry, stop)
    pub positions: Vec<(String, String, String, Option<String>)>,
    pub lead_stream: Option<bool>,
}

fn trim(u: &str) -> &str {
    u.trim_end_matches('/')
}

impl Backend {
    pub fn new(keeper_api: Option<String>, copytrade_api: Option<String>, store: Option<Store>) -> Backend {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        Backend { http, keeper_api, keeper_token: None, copytrade_api, copytrade_token: None, store }
    }

    /// Sends `token` with the emergency stop to the copy-trader's API.
    pub fn with_copytrade_token(mut self, token: Option<kronos_common::Secret>) -> Backend {
        self.copytrade_token = token;
        self
    }

    /// Sends `token` with every request to the keeper's API.
    pub fn with_keeper_token(mut self, token: Option<kronos_common::Secret>) -> Backend {
        self.keeper_token = token;
        self
    }

    fn store(&self) -> Result<&Store> {
        self.store
            .as_ref()
            .ok_or_else(|| anyhow!("the copy-trader's store is not configured (telegram.copytrade_store)"))
    }

    async fn get_json(&self, base: &str, path: &str) -> Result<Value> {
        let url = format!("{}{path}", trim(base));
        let mut req = self.http.get(&url);
        if let (Some(t), Some(k)) = (&self.keeper_token, &self.keeper_api) {
            if trim(k) == trim(base) {
                req = req.bearer_auth(t.expose());
            }
        }
        let r = req.send().await.with_context(|| format!("{} is unreachable", trim(base)))?;
        let status = r.status();
        let body = r.text().await.with_context(|| format!("{url}: reply lost"))?;
        serde_json::from_str(&body)
            .map_err(|_| anyhow!("{url}: HTTP {status}, not JSON: {}", body.chars().take(120).collect::<String>()))
    }

    /// The keeper's health (`/health`).
    pub async fn keeper_health(&self) -> Result<Value> {
        let k = self
            .keeper_api
            .as_deref()
            .ok_or_else(|| anyhow!("the keeper's API is not configured (telegram.keeper_api)"))?;
        self.get_json(k, "/health").await
    }

    /// The keeper's markets (`/api/markets`).
    pub async fn markets(&self) -> Result<Value> {
        let k = self
            .keeper_api
            .as_deref()
            .ok_or_else(|| anyhow!("the keeper's API is not configured (telegram.keeper_api)"))?;
        self.get_json(k, "/api/markets").await
    }

    /// The keeper's predictions and track records (`/api/predictions`).
    pub async fn predictions(&self) -> Result<Value> {
        let k = self
            .keeper_api
            .as_deref()
            .ok_or_else(|| anyhow!("the keeper's API is not configured (telegram.keeper_api)"))?;
        self.get_json(k, "/api/predictions?limit=5").await
    }

    /// The copy-trader's state: live from its API when configured and up, else from its store.
    pub async fn copytrader(&self) -> Result<CopyView> {
        if let Some(api) = &self.copytrade_api {
            if let Ok(v) = self.get_json(api, "/api/status").await {
                if v.get("mode").is_some() {
                    return Ok(view_from_api(&v));
                }
            }
        }
        let store = self.store()?;
        let s: StoredStatus = report::stored_status(store).await?;
        let trading = store.get_state("trading").await?.as_deref() != Some("0");
        let ratio = store.get_state("ratio_effective").await?;
        let now = kronos_common::time::now_ms() as i64;
        let last_equity = store
            .equity_since(kronos_common::time::now_ms() as i64 - 86_400_000)
            .await?
            .last()
            .map(|e| e.1.to_string());
        Ok(CopyView {
            live_api: false,
            mode: None,
            trading,
            ratio,
            emergency: s.risk.emergency,
            entries_blocked: s.risk.entries_allowed(now).err(),
            equity: last_equity,
            wallet: s.paper_wallet.clone(),
            unrealized: None,
            positions: s
                .positions
                .iter()
                .map(|(sym, q, e)| (sym.clone(), q.to_string(), e.to_string(), None))
                .collect(),
            lead_stream: None,
        })
    }

    /// Performance figures and realised PnL net of fees per UTC day (newest last, at most `days`).
    pub async fn stats(&self, days: usize) -> Result<(Stats, Vec<(String, Decimal, usize)>)> {
        let store = self.store()?;
        let stats = report::stats(store, 0).await?;
        let since = kronos_common::time::now_ms() as i64 - days as i64 * 86_400_000;
        let fills = store.fills_since(since - since.rem_euclid(86_400_000)).await?;
        let mut by_day: std::collections::BTreeMap<i64, (Decimal, usize)> = std::collections::BTreeMap::new();
        for f in fills {
            let day = f.at_ms.div_euclid(86_400_000);
            let pnl: Decimal = f.realized_pnl.parse().unwrap_or_default();
            let fee: Decimal = f.fee.parse().unwrap_or_default();
            let e = by_day.entry(day).or_insert((Decimal::ZERO, 0));
            e.0 = e.0.checked_add(&pnl).and_then(|x| x.checked_sub(&fee)).unwrap_or(e.0);
            e.1 += 1;
        }
        let rows = by_day.into_iter().map(|(d, (p, n))| (day_name(d), p, n)).collect();
        Ok((stats, rows))
    }

    /// Copy-trading on or off.
    pub async fn set_trading(&self, on: bool) -> Result<()> {
        let store = self.store()?;
        store.set_state("trading", if on { "1" } else { "0" }).await?;
        store.event(if on { "trading_on_requested" } else { "trading_off_requested" }, "", "from Telegram").await?;
        Ok(())
    }

    /// A new ratio (the copy-trader resizes within a second). Returns the previous one. Where it came from is
    /// recorded with it (`kronos copytrade status` shows it).
    pub async fn set_ratio(&self, ratio: Decimal) -> Result<Option<String>> {
        let store = self.store()?;
        let old = store.get_state("ratio_effective").await?;
        store.set_state("ratio_set_by", "Telegram /ratio").await?;
        store.set_state("ratio_set_ms", &kronos_common::time::now_ms().to_string()).await?;
        store.set_state("ratio", &ratio.to_string()).await?;
        store.event("ratio_requested", "", &format!("{ratio} from Telegram")).await?;
        Ok(old)
    }

    /// Whether the store's emergency flag is set now.
    pub async fn emergency_active(&self) -> Result<bool> {
        Ok(self.store()?.get_state("emergency").await?.as_deref() == Some("1"))
    }

    /// Waits up to `wait` for the copy-trader to record what an emergency stop requested at `since_ms` did.
    pub async fn emergency_outcome(&self, since_ms: i64, wait: Duration) -> EmergencyOutcome {
        match self.store() {
            Ok(store) => report::emergency_outcome(store, since_ms, wait).await,
            Err(_) => EmergencyOutcome::NoAnswer,
        }
    }

    /// The emergency stop: saved in the store (it holds across restarts) and, when the API is configured, sent
    /// to the running copy-trader at once.
    pub async fn emergency(&self) -> Result<EmergencySent> {
        let store = self.store()?;
        store.set_state("emergency", "1").await?;
        store.event("emergency_requested", "", "from Telegram").await?;
        let Some(api) = &self.copytrade_api else { return Ok(EmergencySent::StoreOnly) };
        let mut req = self.http.post(format!("{}/api/emergency-stop", trim(api)));
        if let Some(t) = &self.copytrade_token {
            req = req.bearer_auth(t.expose());
        }
        Ok(match req.send().await {
            Ok(r) if r.status().is_success() => EmergencySent::Accepted,
            Ok(r) => EmergencySent::Refused(r.status().as_u16()),
            Err(e) => EmergencySent::Unreachable(e.without_url().to_string()),
        })
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(x) => Some(x.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn view_from_api(v: &Value) -> CopyView {
    let positions = v
        .get("positions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        s(p, "symbol").unwrap_or_default(),
                        s(p, "qty").unwrap_or_default(),
                        s(p, "entry_price").unwrap_or_default(),
                        s(p, "stop_price"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    CopyView {
        live_api: true,
        mode: s(v, "mode"),
        trading: v.get("trading").and_then(Value::as_bool).unwrap_or(true),
        ratio: s(v, "ratio"),
        emergency: v.pointer("/risk/emergency").and_then(Value::as_bool).unwrap_or(false),
        entries_blocked: s(v, "entries_blocked"),
        equity: s(v, "equity"),
        wallet: s(v, "wallet"),
        unrealized: s(v, "unrealized"),
        positions,
        lead_stream: v.get("lead_stream_connected").and_then(Value::as_bool),
    }
}

/// `YYYY-MM-DD` of a day number (days since the epoch), proleptic Gregorian.
pub fn day_name(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(20_781), "2026-11-24");
        assert_eq!(day_name(11_016), "2000-02-29");
    }
}
