//! Where the bot's answers come from and where its switches go.
//!
//! - The keeper: its HTTP API (`/health`, `/api/markets`, `/api/predictions`).
//! - The copy-trader: its store (status, stats) and its one control path, `kronos_copytrade::control` (copy-trading
//!   on/off, the ratio, the emergency stop: commands appended to its store, which the copy-trader reads every
//!   second — so they work whether or not it is running right now) and, when configured, its HTTP API for live
//!   figures (equity, stops) and an immediate emergency stop.
//!
//! A part that is not configured or not reachable gives a clear one-line answer, never a crash.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kronos_api_types as wire;
use kronos_common::Decimal;
use kronos_copytrade::control::{self, ControlCommand};
use kronos_copytrade::report::{self, Stats, StoredStatus};
use kronos_copytrade::Store;
use serde::de::DeserializeOwned;
use serde::Deserialize;

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

/// Where an emergency stop from the bot went: to the copy-trader's API (which appends it to the control log and
/// acts at once), or — when no API is configured, or it did not accept the stop — appended to the control log in
/// the store by the bot itself (a running copy-trader reads it between its turns — about a second while idle — and
/// sends nothing that adds exposure until it has).
#[derive(Debug, Clone, PartialEq)]
pub enum EmergencySent {
    /// No copy-trader API configured: appended to the store.
    StoreOnly,
    /// The running copy-trader accepted it over its API.
    Accepted,
    /// The copy-trader's API refused it (HTTP status: 401 wrong or missing token, 403 control API disabled):
    /// appended to the store.
    Refused(u16),
    /// The copy-trader's API could not be reached: appended to the store.
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

    /// `GET <base><endpoint><query>` read as `T`; an answer that is not one names the endpoint and the field
    /// (and, when it is not JSON at all, the HTTP status and the answer's start).
    async fn get<T: DeserializeOwned>(&self, base: &str, endpoint: &str, query: &str) -> Result<T> {
        let url = format!("{}{endpoint}{query}", trim(base));
        let mut req = self.http.get(&url);
        if let (Some(t), Some(k)) = (&self.keeper_token, &self.keeper_api) {
            if trim(k) == trim(base) {
                req = req.bearer_auth(t.expose());
            }
        }
        let r = req.send().await.with_context(|| format!("{} is unreachable", trim(base)))?;
        let status = r.status();
        let body = r.bytes().await.with_context(|| format!("{url}: reply lost"))?;
        wire::parse(endpoint, &body).map_err(|e| {
            let start: String = String::from_utf8_lossy(&body).chars().take(120).collect();
            anyhow!(
                "{} at {}: {e} (HTTP {status}: {start})",
                if self.is_keeper(base) { "keeper" } else { "copy-trader" },
                trim(base)
            )
        })
    }

    fn is_keeper(&self, base: &str) -> bool {
        self.keeper_api.as_deref().is_some_and(|k| trim(k) == trim(base))
    }

    fn keeper(&self) -> Result<&str> {
        self.keeper_api.as_deref().ok_or_else(|| anyhow!("the keeper's API is not configured (telegram.keeper_api)"))
    }

    /// The keeper's health (`/health`).
    pub async fn keeper_health(&self) -> Result<wire::Health> {
        self.get(self.keeper()?, "/health", "").await
    }

    /// The keeper's markets (`/api/markets`).
    pub async fn markets(&self) -> Result<wire::Markets> {
        self.get(self.keeper()?, "/api/markets", "").await
    }

    /// The keeper's predictions and track records (`/api/predictions`).
    pub async fn predictions(&self) -> Result<wire::Predictions> {
        self.get(self.keeper()?, "/api/predictions", "?limit=5").await
    }

    /// The copy-trader's state: live from its API when configured and up, else from its store.
    pub async fn copytrader(&self) -> Result<CopyView> {
        if let Some(api) = &self.copytrade_api {
            match self.get::<CopyStatus>(api, "/api/status", "").await {
                Ok(v) => return Ok(v.into()),
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "the copy-trader's API: reading the store instead")
                }
            }
        }
        let store = self.store()?;
        let s: StoredStatus = report::stored_status(store).await?;
        let trading = s.trading;
        let ratio = ratio_in_effect(store).await;
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
        control::append(store, &ControlCommand::SetTrading(on), "Telegram").await?;
        store.event(if on { "trading_on_requested" } else { "trading_off_requested" }, "", "from Telegram").await?;
        Ok(())
    }

    /// A new ratio (a running copy-trader reads it between its turns — about a second while idle — and then resizes;
    /// until then it sends nothing that adds exposure). Returns the previous one. Where it came from is
    /// recorded with it (`kronos copytrade status` shows it).
    pub async fn set_ratio(&self, ratio: Decimal) -> Result<Option<String>> {
        let store = self.store()?;
        let old = ratio_in_effect(store).await;
        let cmd = ControlCommand::SetRatio { ratio: Some(ratio), set_by: "Telegram /ratio".into() };
        control::append(store, &cmd, "Telegram").await?;
        store.event("ratio_requested", "", &format!("{ratio} from Telegram")).await?;
        Ok(old)
    }

    /// Whether the emergency stop is asked now (a value that cannot be read counts as asked, as the copy-trader takes
    /// it). An error here must never keep the bot from sending a stop.
    pub async fn emergency_active(&self) -> Result<bool> {
        Ok(control::load(self.store()?).await?.emergency_asked())
    }

    /// Waits up to `wait` for the copy-trader to report what the emergency command numbered `seq` (as
    /// [`Backend::emergency`] returned it) did; `None` (its number is not known) or no store: no answer.
    pub async fn emergency_outcome(&self, seq: Option<i64>, wait: Duration) -> EmergencyOutcome {
        match (self.store(), seq) {
            (Ok(store), Some(seq)) => report::emergency_outcome(store, seq, wait).await,
            _ => EmergencyOutcome::NoAnswer,
        }
    }

    /// The emergency stop, always sent: to the running copy-trader's API when configured (it appends the command
    /// to the control log and acts at once); when there is no API or it did not accept the stop, appended to the
    /// control log in the store by the bot (it holds across restarts; a running copy-trader reads it between its
    /// turns — about a second while idle — and sends nothing that adds exposure until it has).
    /// Returns where it went and the command's sequence number in the control log (the copy-trader's report of what
    /// it did names it), `None` when the API accepted it without naming one it can read and there is no store.
    pub async fn emergency(&self) -> Result<(EmergencySent, Option<i64>)> {
        let (sent, mut seq) = match &self.copytrade_api {
            None => (EmergencySent::StoreOnly, None),
            Some(api) => {
                let mut req = self.http.post(format!("{}/api/emergency-stop", trim(api)));
                if let Some(t) = &self.copytrade_token {
                    req = req.bearer_auth(t.expose());
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let seq = r.json::<control::ControlAccepted>().await.ok().map(|a| a.seq);
                        if seq.is_none() {
                            tracing::warn!(
                                "the copy-trader's API accepted the emergency stop without a readable command number"
                            );
                        }
                        (EmergencySent::Accepted, seq)
                    }
                    Ok(r) => (EmergencySent::Refused(r.status().as_u16()), None),
                    Err(e) => (EmergencySent::Unreachable(e.without_url().to_string()), None),
                }
            }
        };
        let store = match (self.store(), &sent) {
            (Ok(s), _) => s,
            // Accepted by the API: it is in the control log already.
            (Err(_), EmergencySent::Accepted) => return Ok((sent, seq)),
            (Err(e), _) => return Err(e),
        };
        if seq.is_none() {
            // Not sent, or sent without a number to wait for (then this is one more stop: another pass, which the
            // copy-trader reports under this number).
            let cmd = ControlCommand::EmergencyStop { reason: "emergency stop requested from Telegram".into() };
            seq = Some(control::append(store, &cmd, "Telegram").await.map_err(control::stop_not_recorded)?);
        }
        // Recorded: an event that cannot be written next to it is no reason to say otherwise.
        if let Err(e) = store.event("emergency_requested", "", "from Telegram").await {
            tracing::warn!(error = %format!("{e:#}"), "the emergency_requested event could not be written; the stop is recorded");
        }
        Ok((sent, seq))
    }
}

/// The ratio in effect as the copy-trader recorded it, else the last one set at runtime (a copy-trader that has not
/// run since takes it at its start); `None`: neither (the configured one), or unreadable.
async fn ratio_in_effect(store: &Store) -> Option<String> {
    if let Some(r) = control::carried_out(store).await.ok().and_then(|c| c.ratio_effective) {
        return Some(r);
    }
    match control::load(store).await.ok()?.ratio {
        Ok(Some((Some(r), _))) => Some(r.to_string()),
        _ => None,
    }
}

/// The fields of the copy-trader's `/api/status` (`kronos_copytrade::engine::Status`) the bot shows.
#[derive(Debug, Deserialize)]
struct CopyStatus {
    mode: String,
    trading: bool,
    ratio: String,
    risk: CopyRisk,
    entries_blocked: Option<String>,
    equity: Option<String>,
    wallet: Option<String>,
    unrealized: Option<String>,
    positions: Vec<CopyPosition>,
    lead_stream_connected: bool,
}

#[derive(Debug, Deserialize)]
struct CopyRisk {
    emergency: bool,
}

#[derive(Debug, Deserialize)]
struct CopyPosition {
    symbol: String,
    qty: String,
    entry_price: String,
    stop_price: Option<String>,
}

impl From<CopyStatus> for CopyView {
    fn from(v: CopyStatus) -> CopyView {
        CopyView {
            live_api: true,
            mode: Some(v.mode),
            trading: v.trading,
            ratio: Some(v.ratio),
            emergency: v.risk.emergency,
            entries_blocked: v.entries_blocked,
            equity: v.equity,
            wallet: v.wallet,
            unrealized: v.unrealized,
            positions: v.positions.into_iter().map(|p| (p.symbol, p.qty, p.entry_price, p.stop_price)).collect(),
            lead_stream: Some(v.lead_stream_connected),
        }
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
pub(crate) mod tests {
    use super::*;

    /// A keeper (or copy-trader) API on loopback answering each path with a fixed body.
    pub(crate) async fn serve(answers: &[(&'static str, axum::http::StatusCode, String)]) -> String {
        let mut r = axum::Router::new();
        for (path, code, body) in answers.iter().cloned() {
            r = r.route(path, axum::routing::get(move || async move { (code, body) }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, r).await });
        url
    }

    const HEALTH: &str = r#"{"chains":{"base":{"head_block":1234,"head_time":1764620000,"lag_s":2,"healthy":true,"last_success_ms":1764620001000,"last_error":null,"rpc_endpoint":0,"endpoints":[]}},"markets":[{"chain":"base","lease":{"role":"single","epoch":0,"leader":null,"since_ms":0,"last_loss":null},"market":1}],"status":"degraded","store":false}"#;

    #[tokio::test]
    async fn the_keepers_answers_are_typed_and_a_bad_field_is_named() {
        use axum::http::StatusCode;
        let markets = r#"{"live":[{"chain":"base","market":1,"pair":"BTC/USD","betting_epoch":42,"next_checkpoint":43,"last_lock_price":null,"last_close_price":null,"last_result":"","settled":1,"cancelled":0,"missed":0,"delays":[],"execute_gas":[],"pool_up_wei":"0","pool_down_wei":"0","last_p_up":null,"lease":{"role":"boss","epoch":0,"leader":null,"since_ms":0,"last_loss":null}}],"markets":[]}"#;
        let keeper = serve(&[
            // A degraded keeper answers 503 with its health: still read.
            ("/health", StatusCode::SERVICE_UNAVAILABLE, HEALTH.to_string()),
            ("/api/markets", StatusCode::OK, markets.to_string()),
            ("/api/predictions", StatusCode::BAD_GATEWAY, "upstream down".into()),
        ])
        .await;
        let b = Backend::new(Some(keeper.clone()), None, None);
        let h = b.keeper_health().await.unwrap();
        assert_eq!((h.status, h.chains["base"].head_block), (wire::HealthStatus::Degraded, 1234));

        let e = format!("{:#}", b.markets().await.unwrap_err());
        assert!(e.starts_with(&format!("keeper at {keeper}: /api/markets answered an unexpected field live[0].lease.role: unknown variant `boss`")), "{e}");
        let e = format!("{:#}", b.predictions().await.unwrap_err());
        assert!(
            e.contains("/api/predictions answered an unexpected body")
                && e.contains("HTTP 502 Bad Gateway: upstream down"),
            "{e}"
        );
        let e = format!("{:#}", Backend::new(None, None, None).markets().await.unwrap_err());
        assert_eq!(e, "the keeper's API is not configured (telegram.keeper_api)");
    }

    #[tokio::test]
    async fn the_copytraders_status_is_read_from_its_own_serialisation() {
        let mut st = kronos_copytrade::Status {
            mode: "follow".into(),
            trading: false,
            ratio: "0.5".into(),
            equity: Some("1000.5".into()),
            lead_stream_connected: true,
            ..Default::default()
        };
        st.risk.emergency = true;
        st.positions.push(kronos_copytrade::engine::PositionView {
            symbol: "BTCUSDT".into(),
            qty: "0.010".into(),
            entry_price: "97000".into(),
            stop_price: Some("95000".into()),
        });
        let api = serve(&[("/api/status", axum::http::StatusCode::OK, serde_json::to_string(&st).unwrap())]).await;
        let v = Backend::new(None, Some(api), None).copytrader().await.unwrap();
        assert_eq!(
            v,
            CopyView {
                live_api: true,
                mode: Some("follow".into()),
                trading: false,
                ratio: Some("0.5".into()),
                emergency: true,
                entries_blocked: None,
                equity: Some("1000.5".into()),
                wallet: None,
                unrealized: None,
                positions: vec![("BTCUSDT".into(), "0.010".into(), "97000".into(), Some("95000".into()))],
                lead_stream: Some(true),
            }
        );
    }

    #[test]
    fn day_names() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(20_781), "2026-11-24");
        assert_eq!(day_name(11_016), "2000-02-29");
    }
}
