//! The copy-trader's configuration (`[copytrade]` in a TOML file), validated with errors that name the field.
//!
//! Paper mode is the default. Live trading needs `mode = "live"` in the file **and** the `--live` flag on the
//! command line **and** API keys in the environment. Secrets never live in the file: it names the environment
//! variables that hold them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kronos_binance::Network;
use kronos_common::Decimal;
use serde::Deserialize;

/// Where `network = "local"` finds the local exchange (`kronos exchange serve`) unless `rest_url`/`ws_url` say
/// otherwise.
pub const LOCAL_EXCHANGE: &str = "127.0.0.1:9130";
/// The local exchange's simulated lead account. These keys are published (like a local chain's well-known
/// accounts): they open only the local exchange's simulated accounts and are used, with `network = "local"`, when the
/// lead's key variables are not set.
pub const LOCAL_LEAD_API_KEY: &str = "kronos-local-lead";
pub const LOCAL_LEAD_API_SECRET: &str = "kronos-local-lead-secret";
/// The local exchange's follower account (for `mode = "live"` against it when `KRONOS_LOCAL_FOLLOWER_KEY`/`_SECRET`
/// are unset).
pub const LOCAL_FOLLOWER_API_KEY: &str = "kronos-local-follower";
pub const LOCAL_FOLLOWER_API_SECRET: &str = "kronos-local-follower-secret";

/// With `network = "local"`: the variables holding the follower's and the lead's keys unless the file names others
/// (never `KRONOS_BINANCE_*` or `KRONOS_LEAD_*`, which hold real accounts' keys). Unset, the local exchange's published
/// keys are used.
pub const LOCAL_FOLLOWER_KEY_ENV: &str = "KRONOS_LOCAL_FOLLOWER_KEY";
pub const LOCAL_FOLLOWER_SECRET_ENV: &str = "KRONOS_LOCAL_FOLLOWER_SECRET";
pub const LOCAL_LEAD_KEY_ENV: &str = "KRONOS_LOCAL_LEAD_KEY";
pub const LOCAL_LEAD_SECRET_ENV: &str = "KRONOS_LOCAL_LEAD_SECRET";

/// A configuration problem, naming the file and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

/// Paper (simulated account, the default) or live (real orders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Paper,
    Live,
}

/// Where AI signals come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalSource {
    /// The in-process bus (when the copy-trader runs inside the keeper's process).
    Bus,
    /// The keeper's WebSocket API (`ws://host:port/ws`), with the environment variable holding the keeper's API token
    /// (the keeper streams forecasts before their reveal only to holders of it).
    WebSocket { url: String, token_env: String },
}

/// The lead account to follow.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadConfig {
    pub api_key_env: String,
    pub api_secret_env: String,
    pub poll_interval: Duration,
    /// Also follow the lead's user-data stream (needs a key allowed to open one), with polling as the fallback.
    pub use_stream: bool,
    /// Mirror positions the lead already holds when the copy-trader starts (default: no — only what it does next).
    pub join_existing: bool,
}

/// Follower sizing and caps.
#[derive(Debug, Clone, PartialEq)]
pub struct SizingConfig {
    /// Follower position = lead position × ratio (then capped).
    pub ratio: Decimal,
    pub max_notional_per_symbol: Decimal,
    pub max_notional_total: Decimal,
    /// Leverage set on every followed symbol.
    pub leverage: u32,
    /// Total notional may not exceed equity × this.
    pub max_leverage: u32,
    /// `CROSSED` or `ISOLATED`.
    pub margin_type: String,
    /// Only these symbols are followed.
    pub allow: BTreeSet<String>,
}

/// Protections.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectionConfig {
    /// Stop-loss distance from the entry price, percent.
    pub stop_loss_pct: Decimal,
    /// No new entries for the rest of the UTC day once equity is this much below the day's start (quote asset).
    pub daily_loss_limit: Decimal,
    /// A drawdown from the equity peak of this many percent…
    pub drawdown_pct: Decimal,
    /// …pauses new entries for this long.
    pub cooldown: Duration,
}

/// The simulated account of paper mode.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperConfig {
    pub balance: Decimal,
    pub taker_fee_rate: Decimal,
}

/// AI-signal mode: follow the forecaster with fractional Kelly sizing.
#[derive(Debug, Clone, PartialEq)]
pub struct AiConfig {
    pub source: SignalSource,
    /// `"<chain>:<market>"` → symbol.
    pub markets: BTreeMap<String, String>,
    /// Fraction of the full Kelly stake (0 < f ≤ 1).
    pub kelly_fraction: Decimal,
    /// Win/loss payoff ratio `b` of a trade held to the forecast horizon with the stop in place.
    pub payoff: Decimal,
    /// Below this Kelly edge no position is taken.
    pub min_edge: Decimal,
    /// Cap of one AI position's notional.
    pub max_notional: Decimal,
    /// `[copytrade.ai.social_gate]`: entries need the social monitor's score (off when absent).
    pub social_gate: Option<crate::ai_gate::SocialGate>,
}

/// The whole `[copytrade]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: String,
    pub mode: Mode,
    pub network: Network,
    /// `network = "local"`: the local exchange of `kronos exchange serve` (then the lead's keys default to its
    /// simulated lead account's published ones).
    pub local: bool,
    pub api_key_env: String,
    pub api_secret_env: String,
    pub store: String,
    pub listen: String,
    /// The environment variable holding the control API's token (`POST /api/emergency-stop`, `/api/resume` need
    /// `Authorization: Bearer <token>`). Without one those endpoints are refused, and `listen` must be loopback.
    pub api_token_env: Option<String>,
    /// Limits of the service on `listen` (`[copytrade.api]`, the keeper's `[api]` keys; defaults otherwise).
    pub api: kronos_common::http_guard::Limits,
    pub quote_asset: String,
    pub recv_window_ms: u64,
    /// Timeout of one exchange request; a timed-out order is resolved by query.
    pub request_timeout: Duration,
    pub reconcile_interval: Duration,
    pub lead: Option<LeadConfig>,
    pub sizing: SizingConfig,
    pub protection: ProtectionConfig,
    pub paper: PaperConfig,
    pub ai: Option<AiConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    copytrade: RawCopytrade,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopytrade {
    mode: Option<Mode>,
    network: Option<String>,
    rest_url: Option<String>,
    ws_url: Option<String>,
    api_key_env: Option<String>,
    api_secret_env: Option<String>,
    store: Option<String>,
    listen: Option<String>,
    api_token_env: Option<String>,
    api: Option<kronos_common::http_guard::RawLimits>,
    quote_asset: Option<String>,
    recv_window_ms: Option<u64>,
    request_timeout: Option<String>,
    reconcile_interval: Option<String>,
    lead: Option<RawLead>,
    sizing: RawSizing,
    protection: RawProtection,
    paper: Option<RawPaper>,
    ai: Option<RawAi>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLead {
    enabled: Option<bool>,
    api_key_env: Option<String>,
    api_secret_env: Option<String>,
    poll_interval: Option<String>,
    use_stream: Option<bool>,
    join_existing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSizing {
    #[serde(deserialize_with = "decimal_text")]
    ratio: String,
    #[serde(deserialize_with = "decimal_text")]
    max_notional_per_symbol: String,
    #[serde(deserialize_with = "decimal_text")]
    max_notional_total: String,
    leverage: Option<u32>,
    max_leverage: Option<u32>,
    margin_type: Option<String>,
    allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtection {
    #[serde(deserialize_with = "decimal_text")]
    stop_loss_pct: String,
    #[serde(deserialize_with = "decimal_text")]
    daily_loss_limit: String,
    #[serde(deserialize_with = "decimal_text")]
    drawdown_pct: String,
    cooldown: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaper {
    #[serde(default, deserialize_with = "some_decimal_text")]
    balance: Option<String>,
    #[serde(default, deserialize_with = "some_decimal_text")]
    taker_fee_rate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAi {
    enabled: Option<bool>,
    source: Option<String>,
    token_env: Option<String>,
    markets: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "some_decimal_text")]
    kelly_fraction: Option<String>,
    #[serde(default, deserialize_with = "some_decimal_text")]
    payoff: Option<String>,
    #[serde(default, deserialize_with = "some_decimal_text")]
    min_edge: Option<String>,
    #[serde(deserialize_with = "decimal_text")]
    max_notional: String,
    social_gate: Option<RawSocialGate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocialGate {
    url: String,
    asset: String,
    min_score: f64,
    max_age: Option<String>,
}

/// A decimal written as a TOML string (`"0.1"`) or an integer (`100`). A TOML float (`0.1`) is refused with a
/// message that says how to write it: it is a binary number, and a ratio, a price or an amount is read exactly.
fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a decimal number in quotes, e.g. \"0.5\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Err(E::custom(format!(
                "{v} is a TOML float; write decimal numbers in quotes (\"{v}\") so they are read exactly"
            )))
        }
    }
    d.deserialize_any(Text)
}

fn some_decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    decimal_text(d).map(Some)
}

/// The dotted name (`copytrade.sizing.ratio`) of the key on the line at `offset` of `text`: the last `[table]`
/// header above it and the key before the line's `=`. `None` when the line holds no `key =`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let key = text[start..end].split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| l.trim_start_matches('[').split(']').next())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

struct V<'a> {
    file: &'a str,
}

impl V<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_string(), field: field.to_string(), message: message.into() }
    }

    fn dec(
        &self,
        field: &str,
        s: &str,
        min_exclusive: Option<&str>,
        max_inclusive: Option<&str>,
    ) -> Result<Decimal, ConfigError> {
        let v: Decimal = s.trim().parse().map_err(|e| self.err(field, format!("{e}")))?;
        if let Some(m) = min_exclusive {
            if v <= m.parse::<Decimal>().expect("literal") {
                return Err(self.err(field, format!("must be greater than {m} (got {s})")));
            }
        }
        if let Some(m) = max_inclusive {
            if v > m.parse::<Decimal>().expect("literal") {
                return Err(self.err(field, format!("must be at most {m} (got {s})")));
            }
        }
        Ok(v)
    }

    fn dur(&self, field: &str, s: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s.trim())
            .map_err(|e| self.err(field, format!("'{s}' is not a duration like \"5s\" or \"6h\" ({e})")))
    }

    fn env_name(&self, field: &str, s: Option<String>, default: &str) -> Result<String, ConfigError> {
        let s = s.unwrap_or_else(|| default.to_string());
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            return Err(self.err(field, format!("'{s}' is not an environment variable name (A-Z, 0-9, _); put the key itself in the environment, never in this file")));
        }
        Ok(s)
    }
}

/// Whether a URL's host is this machine (a loopback address or `localhost`).
fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Key variables never read with `network = "local"`: they hold real accounts' keys, which must not be signed with
/// towards whatever listens on a local port.
const PRODUCTION_KEY_PREFIXES: [&str; 2] = ["KRONOS_BINANCE_", "KRONOS_LEAD_"];

/// With `network = "local"`: refuses a key variable of a real account (see [`PRODUCTION_KEY_PREFIXES`]).
fn local_key_env(v: &V<'_>, field: &str, name: String, default: &str) -> Result<String, ConfigError> {
    if let Some(p) = PRODUCTION_KEY_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err(v.err(
            field,
            format!(
                "{name}: with network = \"local\" variables named {p}* are never read (they hold real accounts' \
                 keys); leave {field} out to use {default} (unset: the local exchange's published keys)"
            ),
        ));
    }
    Ok(name)
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl Config {
    /// The network's name for logs and status views: `local`, `testnet`, `mainnet` or `custom`.
    pub fn network_name(&self) -> &str {
        if self.local {
            "local"
        } else {
            self.network.name()
        }
    }

    /// Reads and validates a file. `KRONOS_COPYTRADE_STORE` overrides the store URL.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        let mut cfg = Config::parse(&file, &text)?;
        if let Ok(s) = std::env::var("KRONOS_COPYTRADE_STORE") {
            if !s.trim().is_empty() {
                cfg.store = s.trim().to_string();
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let v = V { file };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = e
                .span()
                .map(|s| {
                    let line = text[..s.start].lines().count().max(1);
                    match key_at(text, s.start) {
                        Some(k) => format!("{k} (line {line})"),
                        None => format!("line {line}"),
                    }
                })
                .unwrap_or_else(|| "-".into());
            v.err(&field, msg)
        })?;
        let c = raw.copytrade;
        let network_name = c.network.as_deref().unwrap_or("testnet");
        let network = match network_name {
            "testnet" => Network::Testnet,
            "mainnet" => Network::Mainnet,
            "local" => {
                // Both or neither: a moved REST address with the stream left at the default port would follow two
                // different exchanges.
                let (rest, ws) = match (c.rest_url.clone(), c.ws_url.clone()) {
                    (None, None) => (format!("http://{LOCAL_EXCHANGE}"), format!("ws://{LOCAL_EXCHANGE}")),
                    (Some(r), Some(w)) => (r, w),
                    (Some(_), None) => {
                        return Err(v.err(
                            "copytrade.ws_url",
                            "required with rest_url when network = \"local\" (give both, or neither for the \
                             default 127.0.0.1:9130)",
                        ))
                    }
                    (None, Some(_)) => {
                        return Err(v.err(
                            "copytrade.rest_url",
                            "required with ws_url when network = \"local\" (give both, or neither for the \
                             default 127.0.0.1:9130)",
                        ))
                    }
                };
                for (f, u) in [("copytrade.rest_url", &rest), ("copytrade.ws_url", &ws)] {
                    let parsed = url::Url::parse(u).map_err(|e| v.err(f, format!("'{u}' is not a URL ({e})")))?;
                    if !is_loopback_host(&parsed) {
                        return Err(v.err(
                            f,
                            format!(
                                "'{u}' is not on this machine: network = \"local\" means the local exchange on a \
                                 loopback address (127.0.0.1, ::1, localhost); use network = \"custom\" for another \
                                 host"
                            ),
                        ));
                    }
                }
                Network::Custom { rest, ws }
            }
            "custom" => {
                let rest = c
                    .rest_url
                    .clone()
                    .ok_or_else(|| v.err("copytrade.rest_url", "required when network = \"custom\""))?;
                let ws =
                    c.ws_url.clone().ok_or_else(|| v.err("copytrade.ws_url", "required when network = \"custom\""))?;
                for (f, u) in [("copytrade.rest_url", &rest), ("copytrade.ws_url", &ws)] {
                    url::Url::parse(u).map_err(|e| v.err(f, format!("'{u}' is not a URL ({e})")))?;
                }
                Network::Custom { rest, ws }
            }
            other => {
                return Err(
                    v.err("copytrade.network", format!("'{other}' is not one of testnet, mainnet, local, custom"))
                )
            }
        };
        let local = network_name == "local";
        if !matches!(network, Network::Custom { .. }) && (c.rest_url.is_some() || c.ws_url.is_some()) {
            return Err(v.err("copytrade.rest_url", "only allowed with network = \"custom\" or \"local\""));
        }
        let s = c.sizing;
        let mut allow = BTreeSet::new();
        for (i, sym) in s.allow.iter().enumerate() {
            if !valid_symbol(sym) {
                return Err(
                    v.err(&format!("copytrade.sizing.allow[{i}]"), format!("'{sym}' is not a symbol like BTCUSDT"))
                );
            }
            allow.insert(sym.clone());
        }
        if allow.is_empty() {
            return Err(v.err("copytrade.sizing.allow", "list at least one symbol to follow"));
        }
        let leverage = s.leverage.unwrap_or(1);
        let max_leverage = s.max_leverage.unwrap_or(leverage.max(3));
        if !(1..=125).contains(&leverage) {
            return Err(v.err("copytrade.sizing.leverage", format!("must be 1..=125 (got {leverage})")));
        }
        if leverage > max_leverage {
            return Err(v.err("copytrade.sizing.leverage", format!("{leverage} exceeds max_leverage {max_leverage}")));
        }
        let margin_type = s.margin_type.unwrap_or_else(|| "CROSSED".into());
        if margin_type != "CROSSED" && margin_type != "ISOLATED" {
            return Err(v.err("copytrade.sizing.margin_type", format!("'{margin_type}' is not CROSSED or ISOLATED")));
        }
        let sizing = SizingConfig {
            ratio: v.dec("copytrade.sizing.ratio", &s.ratio, Some("0"), Some("100"))?,
            max_notional_per_symbol: v.dec(
                "copytrade.sizing.max_notional_per_symbol",
                &s.max_notional_per_symbol,
                Some("0"),
                None,
            )?,
            max_notional_total: v.dec("copytrade.sizing.max_notional_total", &s.max_notional_total, Some("0"), None)?,
            leverage,
            max_leverage,
            margin_type,
            allow,
        };
        if crate::report::valid_ratio(&sizing.ratio.to_string()).is_none() {
            return Err(v.err(
                "copytrade.sizing.ratio",
                format!(
                    "must be at least {} (smaller ratios round every position to zero; got {})",
                    crate::report::MIN_RATIO,
                    s.ratio
                ),
            ));
        }
        let p = c.protection;
        let protection = ProtectionConfig {
            stop_loss_pct: v.dec("copytrade.protection.stop_loss_pct", &p.stop_loss_pct, Some("0"), Some("50"))?,
            daily_loss_limit: v.dec("copytrade.protection.daily_loss_limit", &p.daily_loss_limit, Some("0"), None)?,
            drawdown_pct: v.dec("copytrade.protection.drawdown_pct", &p.drawdown_pct, Some("0"), Some("100"))?,
            cooldown: v.dur("copytrade.protection.cooldown", &p.cooldown)?,
        };
        let rp = c.paper.unwrap_or(RawPaper { balance: None, taker_fee_rate: None });
        let paper = PaperConfig {
            balance: v.dec("copytrade.paper.balance", rp.balance.as_deref().unwrap_or("10000"), Some("0"), None)?,
            taker_fee_rate: v.dec(
                "copytrade.paper.taker_fee_rate",
                rp.taker_fee_rate.as_deref().unwrap_or("0.0005"),
                None,
                Some("0.01"),
            )?,
        };
        if paper.taker_fee_rate.is_negative() {
            return Err(v.err("copytrade.paper.taker_fee_rate", "must not be negative"));
        }
        let lead = match c.lead {
            Some(l) if l.enabled.unwrap_or(true) => {
                let poll = v.dur("copytrade.lead.poll_interval", l.poll_interval.as_deref().unwrap_or("5s"))?;
                if poll < Duration::from_millis(500) {
                    return Err(v.err(
                        "copytrade.lead.poll_interval",
                        "must be at least 500ms (the exchange limits request weight)",
                    ));
                }
                let (key_default, secret_default) = if local {
                    (LOCAL_LEAD_KEY_ENV, LOCAL_LEAD_SECRET_ENV)
                } else {
                    ("KRONOS_LEAD_API_KEY", "KRONOS_LEAD_API_SECRET")
                };
                let mut api_key_env = v.env_name("copytrade.lead.api_key_env", l.api_key_env, key_default)?;
                let mut api_secret_env =
                    v.env_name("copytrade.lead.api_secret_env", l.api_secret_env, secret_default)?;
                if local {
                    api_key_env = local_key_env(&v, "copytrade.lead.api_key_env", api_key_env, key_default)?;
                    api_secret_env =
                        local_key_env(&v, "copytrade.lead.api_secret_env", api_secret_env, secret_default)?;
                }
                Some(LeadConfig {
                    api_key_env,
                    api_secret_env,
                    poll_interval: poll,
                    use_stream: l.use_stream.unwrap_or(true),
                    join_existing: l.join_existing.unwrap_or(false),
                })
            }
            _ => None,
        };
        let ai = match c.ai {
            Some(a) if a.enabled.unwrap_or(true) => {
                let source = match a.source.as_deref().unwrap_or("bus") {
                    "bus" => SignalSource::Bus,
                    u if u.starts_with("ws://") || u.starts_with("wss://") => {
                        url::Url::parse(u)
                            .map_err(|e| v.err("copytrade.ai.source", format!("'{u}' is not a URL ({e})")))?;
                        let token_env = a.token_env.clone().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                            v.err(
                                "copytrade.ai.token_env",
                                "required with a ws:// source: the keeper streams forecasts before their reveal \
                                 only to holders of its API token (keeper.api_token_env); name the variable holding it",
                            )
                        })?;
                        SignalSource::WebSocket { url: u.to_string(), token_env }
                    }
                    other => {
                        return Err(
                            v.err("copytrade.ai.source", format!("'{other}' is neither \"bus\" nor a ws:// URL"))
                        )
                    }
                };
                if a.markets.is_empty() {
                    return Err(v.err("copytrade.ai.markets", "map at least one \"<chain>:<market>\" to a symbol"));
                }
                for (k, sym) in &a.markets {
                    let ok = k.split_once(':').is_some_and(|(c, m)| !c.is_empty() && m.parse::<u64>().is_ok());
                    if !ok {
                        return Err(v.err(
                            &format!("copytrade.ai.markets.{k}"),
                            "keys look like \"base:1\" (chain, colon, market id)",
                        ));
                    }
                    if !sizing.allow.contains(sym) {
                        return Err(
                            v.err(&format!("copytrade.ai.markets.{k}"), format!("{sym} is not in sizing.allow"))
                        );
                    }
                }
                Some(AiConfig {
                    source,
                    markets: a.markets,
                    kelly_fraction: v.dec(
                        "copytrade.ai.kelly_fraction",
                        a.kelly_fraction.as_deref().unwrap_or("0.25"),
                        Some("0"),
                        Some("1"),
                    )?,
                    payoff: v.dec("copytrade.ai.payoff", a.payoff.as_deref().unwrap_or("1"), Some("0"), None)?,
                    min_edge: v.dec(
                        "copytrade.ai.min_edge",
                        a.min_edge.as_deref().unwrap_or("0.02"),
                        None,
                        Some("1"),
                    )?,
                    max_notional: v.dec("copytrade.ai.max_notional", &a.max_notional, Some("0"), None)?,
                    social_gate: match a.social_gate {
                        None => None,
                        Some(g) => {
                            let url = url::Url::parse(&g.url)
                                .ok()
                                .filter(|u| matches!(u.scheme(), "http" | "https"))
                                .ok_or_else(|| {
                                v.err("copytrade.ai.social_gate.url", format!("'{}' is not an http(s) URL", g.url))
                            })?;
                            let asset = g.asset.trim().to_ascii_uppercase();
                            if asset.is_empty() || !asset.chars().all(|c| c.is_ascii_alphanumeric()) {
                                return Err(v.err("copytrade.ai.social_gate.asset", "a symbol like BTC"));
                            }
                            if !g.min_score.is_finite() {
                                return Err(v.err("copytrade.ai.social_gate.min_score", "must be a number"));
                            }
                            let max_age =
                                v.dur("copytrade.ai.social_gate.max_age", g.max_age.as_deref().unwrap_or("1h"))?;
                            if max_age < Duration::from_secs(1) {
                                return Err(v.err("copytrade.ai.social_gate.max_age", "at least 1s"));
                            }
                            Some(crate::ai_gate::SocialGate { url, asset, min_score: g.min_score, max_age })
                        }
                    },
                })
            }
            _ => None,
        };
        if lead.is_none() && ai.is_none() {
            return Err(v.err("copytrade.lead", "nothing to follow: enable [copytrade.lead] or [copytrade.ai]"));
        }
        let recv_window_ms = c.recv_window_ms.unwrap_or(5000);
        if !(100..=60_000).contains(&recv_window_ms) {
            return Err(v.err("copytrade.recv_window_ms", format!("must be 100..=60000 (got {recv_window_ms})")));
        }
        let quote_asset = c.quote_asset.unwrap_or_else(|| "USDT".into());
        if !valid_symbol(&quote_asset) {
            return Err(v.err("copytrade.quote_asset", format!("'{quote_asset}' is not an asset name")));
        }
        let listen = c.listen.unwrap_or_else(|| "127.0.0.1:9110".into());
        let addr = listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| v.err("copytrade.listen", format!("'{listen}' is not host:port ({e})")))?;
        let api_token_env = match c.api_token_env {
            Some(t) => Some(v.env_name("copytrade.api_token_env", Some(t), "")?),
            None => None,
        };
        if !addr.ip().is_loopback() && api_token_env.is_none() {
            return Err(v.err(
                "copytrade.listen",
                format!(
                    "'{listen}' is not a loopback address: set copytrade.api_token_env (the control API's token) too"
                ),
            ));
        }
        let api = c.api.unwrap_or_default().validate("copytrade.api").map_err(|(f, m)| v.err(&f, m))?;
        let (key_default, secret_default) = if local {
            (LOCAL_FOLLOWER_KEY_ENV, LOCAL_FOLLOWER_SECRET_ENV)
        } else {
            ("KRONOS_BINANCE_API_KEY", "KRONOS_BINANCE_API_SECRET")
        };
        let mut api_key_env = v.env_name("copytrade.api_key_env", c.api_key_env, key_default)?;
        let mut api_secret_env = v.env_name("copytrade.api_secret_env", c.api_secret_env, secret_default)?;
        if local {
            api_key_env = local_key_env(&v, "copytrade.api_key_env", api_key_env, key_default)?;
            api_secret_env = local_key_env(&v, "copytrade.api_secret_env", api_secret_env, secret_default)?;
        }
        Ok(Config {
            file: file.to_string(),
            mode: c.mode.unwrap_or(Mode::Paper),
            local,
            network,
            api_key_env,
            api_secret_env,
            store: c.store.unwrap_or_else(|| "sqlite:data/copytrade.sqlite".into()),
            listen,
            api_token_env,
            api,
            quote_asset,
            recv_window_ms,
            request_timeout: v.dur("copytrade.request_timeout", c.request_timeout.as_deref().unwrap_or("10s"))?,
            reconcile_interval: v
                .dur("copytrade.reconcile_interval", c.reconcile_interval.as_deref().unwrap_or("30s"))?,
            lead,
            sizing,
            protection,
            paper,
            ai,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
[copytrade]
network = "testnet"
[copytrade.lead]
poll_interval = "5s"
[copytrade.sizing]
ratio = "0.5"
max_notional_per_symbol = "1000"
max_notional_total = "2000"
leverage = 3
max_leverage = 5
allow = ["BTCUSDT", "ETHUSDT"]
[copytrade.protection]
stop_loss_pct = "2"
daily_loss_limit = "100"
drawdown_pct = "10"
cooldown = "6h"
"#;

    #[test]
    fn a_good_file_parses_with_paper_as_default() {
        let c = Config::parse("ct.toml", GOOD).unwrap();
        assert_eq!(c.mode, Mode::Paper);
        assert_eq!(c.network, Network::Testnet);
        assert_eq!(c.lead.as_ref().unwrap().poll_interval, Duration::from_secs(5));
        assert!(!c.lead.as_ref().unwrap().join_existing);
        assert_eq!(c.sizing.ratio, "0.5".parse().unwrap());
        assert_eq!(c.protection.cooldown, Duration::from_secs(6 * 3600));
        assert_eq!(c.paper.balance, "10000".parse().unwrap());
        assert_eq!(c.api_key_env, "KRONOS_BINANCE_API_KEY");
    }

    #[test]
    fn the_local_network_is_the_local_exchange() {
        let c = Config::parse("ct.toml", &GOOD.replace("\"testnet\"", "\"local\"")).unwrap();
        assert!(c.local);
        assert_eq!(c.network_name(), "local");
        assert_eq!(c.network.rest_url(), "http://127.0.0.1:9130");
        assert_eq!(c.network.ws_url(), "ws://127.0.0.1:9130");
        let moved = GOOD.replace(
            "\"testnet\"",
            "\"local\"\nrest_url = \"http://127.0.0.1:7000\"\nws_url = \"ws://localhost:7000\"",
        );
        let c = Config::parse("ct.toml", &moved).unwrap();
        assert_eq!(c.network.rest_url(), "http://127.0.0.1:7000");
        assert_eq!(c.network.ws_url(), "ws://localhost:7000");
        assert!(!Config::parse("ct.toml", GOOD).unwrap().local);
    }

    /// Audit of issue 14 (H2, M1): `network = "local"` stays on this machine — both URLs or neither, loopback hosts
    /// only — and never reads a real account's key variables; its defaults are the `KRONOS_LOCAL_*` ones.
    #[test]
    fn the_local_network_stays_on_this_machine_and_away_from_real_keys() {
        let local = GOOD.replace("\"testnet\"", "\"local\"");
        let c = Config::parse("ct.toml", &local).unwrap();
        assert_eq!(
            (c.api_key_env.as_str(), c.api_secret_env.as_str()),
            (LOCAL_FOLLOWER_KEY_ENV, LOCAL_FOLLOWER_SECRET_ENV)
        );
        let l = c.lead.unwrap();
        assert_eq!((l.api_key_env.as_str(), l.api_secret_env.as_str()), (LOCAL_LEAD_KEY_ENV, LOCAL_LEAD_SECRET_ENV));
        let ipv6 =
            local.replace("\"local\"", "\"local\"\nrest_url = \"http://[::1]:9130\"\nws_url = \"ws://127.0.0.2:9130\"");
        Config::parse("ct.toml", &ipv6).unwrap();
        let with = |extra: &str| local.replace("\"local\"", &format!("\"local\"\n{extra}"));
        let cases = [
            (with("rest_url = \"http://127.0.0.1:7000\""), "copytrade.ws_url", "required with rest_url"),
            (with("ws_url = \"ws://127.0.0.1:7000\""), "copytrade.rest_url", "required with ws_url"),
            (
                with("rest_url = \"https://fapi.binance.com\"\nws_url = \"ws://127.0.0.1:9130\""),
                "copytrade.rest_url",
                "not on this machine",
            ),
            (
                with("rest_url = \"http://127.0.0.1:9130\"\nws_url = \"wss://10.1.2.3:9130\""),
                "copytrade.ws_url",
                "not on this machine",
            ),
            (with("api_key_env = \"KRONOS_BINANCE_API_KEY\""), "copytrade.api_key_env", "never read"),
            (with("api_secret_env = \"KRONOS_BINANCE_API_SECRET\""), "copytrade.api_secret_env", "never read"),
            (
                local
                    .replace("poll_interval = \"5s\"", "poll_interval = \"5s\"\napi_key_env = \"KRONOS_LEAD_API_KEY\""),
                "copytrade.lead.api_key_env",
                "never read",
            ),
        ];
        for (text, field, msg) in cases {
            let e = Config::parse("ct.toml", &text).unwrap_err();
            assert!(e.field == field && e.message.contains(msg), "{field}/{msg}: got {e}");
        }
        // Off the local network the production variables stay the defaults.
        let c = Config::parse("ct.toml", GOOD).unwrap();
        assert_eq!(c.lead.unwrap().api_key_env, "KRONOS_LEAD_API_KEY");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (GOOD.replace("ratio = \"0.5\"", "ratio = \"-1\""), "copytrade.sizing.ratio", "greater than 0"),
            (GOOD.replace("ratio = \"0.5\"", "ratio = \"half\""), "copytrade.sizing.ratio", "not a decimal"),
            (GOOD.replace("ratio = \"0.5\"", "ratio = \"0.0001\""), "copytrade.sizing.ratio", "at least 0.001"),
            (GOOD.replace("\"ETHUSDT\"", "\"eth-usdt\""), "copytrade.sizing.allow[1]", "not a symbol"),
            (GOOD.replace("leverage = 3", "leverage = 9"), "copytrade.sizing.leverage", "exceeds max_leverage"),
            (
                GOOD.replace("cooldown = \"6h\"", "cooldown = \"soon\""),
                "copytrade.protection.cooldown",
                "not a duration",
            ),
            (GOOD.replace("network = \"testnet\"", "network = \"moon\""), "copytrade.network", "not one of"),
            (GOOD.replace("network = \"testnet\"", "network = \"custom\""), "copytrade.rest_url", "required"),
            (
                GOOD.replace("poll_interval = \"5s\"", "poll_interval = \"5s\"\napi_key_env = \"sk-live-abc\""),
                "copytrade.lead.api_key_env",
                "not an environment variable name",
            ),
            (
                GOOD.replace("poll_interval = \"5s\"", "poll_intervall = \"5s\""),
                "copytrade.lead.poll_intervall",
                "unknown field",
            ),
            // Issue 14, item 11: a TOML float where a decimal string belongs names the field and says how to write it.
            (
                GOOD.replace("ratio = \"0.5\"", "ratio = 0.1"),
                "copytrade.sizing.ratio",
                "0.1 is a TOML float; write decimal numbers in quotes (\"0.1\")",
            ),
            (GOOD.replace("ratio = \"0.5\"", "ratio = true"), "copytrade.sizing.ratio", "a decimal number in quotes"),
            // The service's limits ([copytrade.api], the keeper's [api] keys) name their field too.
            (format!("{GOOD}\n[copytrade.api]\nmax_connections = 0\n"), "copytrade.api.max_connections", "below 1"),
            (
                GOOD.replace("stop_loss_pct = \"2\"", "stop_loss_pct = \"75\""),
                "copytrade.protection.stop_loss_pct",
                "at most 50",
            ),
            (
                GOOD.replace("[copytrade.lead]\npoll_interval = \"5s\"", "[copytrade.lead]\nenabled = false"),
                "copytrade.lead",
                "nothing to follow",
            ),
        ];
        for (text, field, msg) in cases {
            let e = Config::parse("ct.toml", &text).unwrap_err();
            assert!(e.field.starts_with(field) && e.message.contains(msg), "{field}/{msg}: got {e}");
            assert!(e.to_string().starts_with("ct.toml: "), "{e}");
        }
    }

    #[test]
    fn the_services_limits_are_configurable() {
        let c = Config::parse("ct.toml", GOOD).unwrap();
        assert_eq!(c.api, kronos_common::http_guard::Limits::default());
        let c = Config::parse("ct.toml", &format!("{GOOD}\n[copytrade.api]\nmax_body_bytes = 4096\n")).unwrap();
        assert_eq!(c.api.max_body_bytes, 4096);
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../../config/copytrade.example.toml");
        let c = Config::parse("config/copytrade.example.toml", text).unwrap();
        assert_eq!(c.mode, Mode::Paper);
        assert!(c.local, "the example follows the local exchange out of the box");
        // Tests and users edit the example by replacing this line: it appears once (not in a comment too).
        assert_eq!(text.matches("network = \"local\"").count(), 1);
        // With the AI section uncommented too.
        let at = text.find("# [copytrade.ai]").expect("the example documents the AI section");
        let tail: Vec<&str> = text[at..].lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect();
        let with_ai = format!("{}{}", &text[..at], tail.join("\n"));
        let c = Config::parse("example+ai", &with_ai).unwrap();
        assert!(c.ai.is_some());
    }

    #[test]
    fn ai_mode_is_validated() {
        let text = format!(
            "{GOOD}[copytrade.ai]\nsource = \"ws://127.0.0.1:9100/ws\"\ntoken_env = \"KRONOS_API_TOKEN\"\nmax_notional = \"500\"\nmarkets = {{ \"base:1\" = \"BTCUSDT\" }}\n"
        );
        let c = Config::parse("ct.toml", &text).unwrap();
        let ai = c.ai.unwrap();
        assert_eq!(
            ai.source,
            SignalSource::WebSocket { url: "ws://127.0.0.1:9100/ws".into(), token_env: "KRONOS_API_TOKEN".into() }
        );
        assert_eq!(ai.kelly_fraction, "0.25".parse().unwrap());
        let bad = text.replace("\"base:1\" = \"BTCUSDT\"", "\"base:1\" = \"SOLUSDT\"");
        let e = Config::parse("ct.toml", &bad).unwrap_err();
        assert!(e.message.contains("not in sizing.allow"), "{e}");
        let bad = text.replace("\"base:1\"", "\"base\"");
        assert!(Config::parse("ct.toml", &bad).unwrap_err().message.contains("chain, colon, market id"));
        let bad = text.replace("token_env = \"KRONOS_API_TOKEN\"\n", "");
        let e = Config::parse("ct.toml", &bad).unwrap_err();
        assert_eq!(e.field, "copytrade.ai.token_env", "{e}");
        assert!(e.message.contains("keeper.api_token_env"), "{e}");
    }

    #[test]
    fn the_social_gate_is_off_by_default_and_validated() {
        let text = format!("{GOOD}[copytrade.ai]\nmax_notional = \"500\"\nmarkets = {{ \"base:1\" = \"BTCUSDT\" }}\n");
        assert_eq!(Config::parse("ct.toml", &text).unwrap().ai.unwrap().social_gate, None);
        let gated = format!(
            "{text}[copytrade.ai.social_gate]\nurl = \"http://127.0.0.1:8790\"\nasset = \"btc\"\nmin_score = 0.9\nmax_age = \"30m\"\n"
        );
        let g = Config::parse("ct.toml", &gated).unwrap().ai.unwrap().social_gate.unwrap();
        assert_eq!(g.asset, "BTC");
        assert_eq!(g.min_score, 0.9);
        assert_eq!(g.max_age, Duration::from_secs(1800));
        for (from, to, field) in [
            ("http://127.0.0.1:8790", "ws://x", "copytrade.ai.social_gate.url"),
            ("\"btc\"", "\"$btc\"", "copytrade.ai.social_gate.asset"),
            ("\"30m\"", "\"soon\"", "copytrade.ai.social_gate.max_age"),
        ] {
            let e = Config::parse("ct.toml", &gated.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }
}
