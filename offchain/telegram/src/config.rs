//! The bot's configuration (`[telegram]` in a TOML file), validated with errors that name the field.
//!
//! The bot token never lives in the file: the file names the environment variable that holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::social::{Priority, SocialConfig};

/// A configuration problem, naming the file and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

/// How an alert category is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertMode {
    /// A normal message.
    On,
    /// A message without a notification sound.
    Silent,
    /// Not sent.
    Off,
}

impl AlertMode {
    pub fn parse(s: &str) -> Option<AlertMode> {
        match s {
            "on" => Some(AlertMode::On),
            "silent" => Some(AlertMode::Silent),
            "off" => Some(AlertMode::Off),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            AlertMode::On => "on",
            AlertMode::Silent => "silent",
            AlertMode::Off => "off",
        }
    }
}

/// Every alert category (`SignalKind::category`), with its default.
pub const CATEGORIES: &[(&str, AlertMode)] = &[
    ("settlement", AlertMode::On),
    ("refund", AlertMode::On),
    ("keeper_failure", AlertMode::On),
    ("keeper_recovery", AlertMode::On),
    ("fill", AlertMode::On),
    ("stop", AlertMode::On),
    ("risk", AlertMode::On),
    ("order", AlertMode::Off),
    ("lead", AlertMode::Off),
    ("prediction", AlertMode::Silent),
    ("round", AlertMode::Off),
    ("transaction", AlertMode::Off),
    ("price", AlertMode::Off),
    // High-priority items of the social monitor (`[telegram.social]`).
    ("social", AlertMode::On),
];

/// What a message's sender may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rights {
    None,
    Read,
    Control,
}

/// Long polling (default) or a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Polling { timeout_s: u32 },
    Webhook { public_url: String, path: String, secret_env: String },
}

/// The whole `[telegram]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: String,
    pub token_env: String,
    /// The Bot API server (`https://api.telegram.org/` or a self-hosted one).
    pub api_url: String,
    pub delivery: Delivery,
    /// `/health`, `/metrics` and (for webhooks) the webhook path.
    pub listen: String,
    /// User ids that may use every command (in a private chat, or in a group listed under `read_only`). Never a
    /// group: listing one would give every member control.
    pub control: BTreeSet<i64>,
    /// User ids that may use read-only commands, and group ids whose members may (their control members keep
    /// control there).
    pub read_only: BTreeSet<i64>,
    /// Commands older than this when they arrive (sent while the bot was down) are not carried out.
    pub max_command_age: Duration,
    /// How long `/confirm` of an emergency stop waits for the copy-trader to report what it did.
    pub emergency_wait: Duration,
    /// Chats that receive alerts.
    pub alert_chats: Vec<i64>,
    pub alerts: BTreeMap<String, AlertMode>,
    /// At most this many alert messages per chat per window; the rest become one summary.
    pub alert_burst: u32,
    pub alert_window: Duration,
    /// The keeper's HTTP API (`/api/markets`, `/api/rounds`, `/api/predictions`).
    pub keeper_api: Option<String>,
    /// The environment variable holding the keeper's API token (unseals forecasts before their reveal).
    pub keeper_token_env: Option<String>,
    /// The copy-trader's HTTP API (live status and balance).
    pub copytrade_api: Option<String>,
    /// The environment variable holding the copy-trader's control token (its `copytrade.api_token_env`): sent as
    /// `Authorization: Bearer` with the immediate emergency stop, which the copy-trader refuses without it.
    pub copytrade_token_env: Option<String>,
    /// The copy-trader's store (status, stats, and the switches: trading, ratio, emergency stop).
    pub copytrade_store: Option<String>,
    /// Signal streams to alert from (`ws://…/ws` of the keeper and of the copy-trader).
    pub signals: Vec<String>,
    /// Where the bot keeps its update offset and runtime alert settings.
    pub state_file: PathBuf,
    /// The social monitor whose high-priority items become alerts (`[telegram.social]`; off when absent).
    pub social: Option<SocialConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    telegram: Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    token_env: Option<String>,
    api_url: Option<String>,
    mode: Option<String>,
    poll_timeout_s: Option<u32>,
    webhook_url: Option<String>,
    webhook_secret_env: Option<String>,
    listen: Option<String>,
    allow: RawAllow,
    alerts: Option<RawAlerts>,
    keeper_api: Option<String>,
    keeper_token_env: Option<String>,
    copytrade_api: Option<String>,
    copytrade_token_env: Option<String>,
    copytrade_store: Option<String>,
    signals: Option<Vec<String>>,
    state_file: Option<PathBuf>,
    max_command_age: Option<String>,
    emergency_wait: Option<String>,
    social: Option<RawSocial>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocial {
    url: Option<String>,
    min_priority: Option<String>,
    #[serde(default)]
    assets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    control: Vec<i64>,
    #[serde(default)]
    read_only: Vec<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    #[serde(default)]
    chats: Vec<i64>,
    burst: Option<u32>,
    window: Option<String>,
    #[serde(default)]
    categories: BTreeMap<String, String>,
}

fn err(file: &str, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { file: file.into(), field: field.into(), message: message.into() }
}

fn check_url(file: &str, field: &str, u: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(u).map_err(|e| err(file, field, format!("'{u}' is not a URL ({e})")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(err(file, field, format!("'{u}' must use {}", schemes.join(" or "))));
    }
    Ok(())
}

fn env_name(file: &str, field: &str, s: &str) -> Result<String, ConfigError> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(err(
            file,
            field,
            format!("'{s}' is not an environment variable name; put the token in the environment, never in this file"),
        ));
    }
    Ok(s.to_string())
}

impl Config {
    /// What `user` may do in `chat`. In a private chat (the chat is the user) the user's own listing decides. In a
    /// group the group must be listed (under `read_only`): its members may read, and a member whose own user id
    /// is under `control` may also control; a control user in a group that is not listed gets no answer (the
    /// group would read the replies).
    pub fn rights(&self, chat: i64, user: Option<i64>) -> Rights {
        let private = chat > 0 && user.is_none_or(|u| u == chat);
        if private {
            return if self.control.contains(&chat) {
                Rights::Control
            } else if self.read_only.contains(&chat) {
                Rights::Read
            } else {
                Rights::None
            };
        }
        if !self.read_only.contains(&chat) {
            return Rights::None;
        }
        if user.is_some_and(|u| self.control.contains(&u)) {
            Rights::Control
        } else {
            Rights::Read
        }
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| err(&file, "-", format!("cannot read: {e}")))?;
        Config::parse(&file, &text)
    }

    /// Parses and validates TOML text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!("line {}", text[..s.start].lines().count().max(1)))
                .unwrap_or_else(|| "-".into());
            err(file, &line, e.message())
        })?;
        let r = raw.telegram;
        let token_env =
            env_name(file, "telegram.token_env", r.token_env.as_deref().unwrap_or("KRONOS_TELEGRAM_TOKEN"))?;
        let api_url = r.api_url.unwrap_or_else(|| "https://api.telegram.org/".into());
        check_url(file, "telegram.api_url", &api_url, &["http", "https"])?;
        let delivery = match r.mode.as_deref().unwrap_or("polling") {
            "polling" => {
                let t = r.poll_timeout_s.unwrap_or(30);
                if t > 50 {
                    return Err(err(file, "telegram.poll_timeout_s", format!("{t} is above 50 (Telegram's limit)")));
                }
                Delivery::Polling { timeout_s: t }
            }
            "webhook" => {
                let u = r
                    .webhook_url
                    .ok_or_else(|| err(file, "telegram.webhook_url", "required with mode = \"webhook\""))?;
                check_url(file, "telegram.webhook_url", &u, &["https"])?;
                let path = url::Url::parse(&u).map(|p| p.path().to_string()).unwrap_or_default();
                if path.len() < 2 {
                    return Err(err(
                        file,
                        "telegram.webhook_url",
                        "needs a path (e.g. https://bot.example.com/telegram/webhook)",
                    ));
                }
                Delivery::Webhook {
                    public_url: u,
                    path,
                    secret_env: env_name(
                        file,
                        "telegram.webhook_secret_env",
                        r.webhook_secret_env.as_deref().unwrap_or("KRONOS_TELEGRAM_WEBHOOK_SECRET"),
                    )?,
                }
            }
            other => return Err(err(file, "telegram.mode", format!("'{other}' is not polling or webhook"))),
        };
        let listen = r.listen.unwrap_or_else(|| "127.0.0.1:9120".into());
        listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| err(file, "telegram.listen", format!("'{listen}' is not host:port ({e})")))?;
        let control: BTreeSet<i64> = r.allow.control.into_iter().collect();
        let read_only: BTreeSet<i64> = r.allow.read_only.into_iter().collect();
        if let Some(g) = control.iter().find(|id| **id < 0) {
            return Err(err(
                file,
                "telegram.allow.control",
                format!(
                    "{g} is a group or channel: every member would get control rights; list the members' own user \
                     ids under control and the group under read_only"
                ),
            ));
        }
        if control.is_empty() && read_only.is_empty() {
            return Err(err(
                file,
                "telegram.allow",
                "nobody may use the bot: list chat or user ids under control or read_only",
            ));
        }
        let ra =
            r.alerts.unwrap_or(RawAlerts { chats: vec![], burst: None, window: None, categories: BTreeMap::new() });
        let mut alerts: BTreeMap<String, AlertMode> = CATEGORIES.iter().map(|(c, m)| (c.to_string(), *m)).collect();
        for (k, v) in &ra.categories {
            if !alerts.contains_key(k) {
                let known: Vec<&str> = CATEGORIES.iter().map(|c| c.0).collect();
                return Err(err(
                    file,
                    &format!("telegram.alerts.categories.{k}"),
                    format!("unknown category (known: {})", known.join(", ")),
                ));
            }
            let m = AlertMode::parse(v).ok_or_else(|| {
                err(file, &format!("telegram.alerts.categories.{k}"), format!("'{v}' is not on, silent or off"))
            })?;
            alerts.insert(k.clone(), m);
        }
        let alert_burst = ra.burst.unwrap_or(5);
        if alert_burst == 0 {
            return Err(err(file, "telegram.alerts.burst", "must be at least 1"));
        }
        let window = ra.window.as_deref().unwrap_or("60s");
        let alert_window = humantime::parse_duration(window)
            .map_err(|e| err(file, "telegram.alerts.window", format!("'{window}' is not a duration ({e})")))?;
        for (f, u) in [("telegram.keeper_api", &r.keeper_api), ("telegram.copytrade_api", &r.copytrade_api)] {
            if let Some(u) = u {
                check_url(file, f, u, &["http", "https"])?;
            }
        }
        let duration = |field: &str, v: &Option<String>, default: &str| -> Result<Duration, ConfigError> {
            let t = v.as_deref().unwrap_or(default);
            humantime::parse_duration(t).map_err(|e| err(file, field, format!("'{t}' is not a duration ({e})")))
        };
        let max_command_age = duration("telegram.max_command_age", &r.max_command_age, "2m")?;
        let emergency_wait = duration("telegram.emergency_wait", &r.emergency_wait, "10s")?;
        if emergency_wait > Duration::from_secs(60) {
            return Err(err(
                file,
                "telegram.emergency_wait",
                "at most 60s (that chat's later commands wait meanwhile)",
            ));
        }
        let signals = r.signals.unwrap_or_default();
        for (i, u) in signals.iter().enumerate() {
            check_url(file, &format!("telegram.signals[{i}]"), u, &["ws", "wss"])?;
        }
        if let Some(s) = &r.copytrade_store {
            if !(s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://")) {
                return Err(err(file, "telegram.copytrade_store", "must start with sqlite: or postgres://"));
            }
        }
        let social = match r.social {
            None => None,
            Some(s) => {
                let url = s
                    .url
                    .ok_or_else(|| err(file, "telegram.social.url", "required: the social monitor's ws://…/ws"))?;
                check_url(file, "telegram.social.url", &url, &["ws", "wss"])?;
                let p = s.min_priority.as_deref().unwrap_or("high");
                let min_priority = Priority::parse(p).ok_or_else(|| {
                    err(file, "telegram.social.min_priority", format!("'{p}' is not low, normal or high"))
                })?;
                let mut assets = Vec::new();
                for (i, a) in s.assets.iter().enumerate() {
                    let u = a.trim().to_ascii_uppercase();
                    if u.is_empty() || u.len() > 10 || !u.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(err(
                            file,
                            &format!("telegram.social.assets[{i}]"),
                            format!("'{a}' is not an asset symbol (1 to 10 letters or digits)"),
                        ));
                    }
                    assets.push(u);
                }
                if ra.chats.is_empty() {
                    return Err(err(
                        file,
                        "telegram.social",
                        "no chat to alert: list chat ids under telegram.alerts.chats",
                    ));
                }
                Some(SocialConfig { url, min_priority, assets })
            }
        };
        Ok(Config {
            social,
            file: file.into(),
            token_env,
            api_url,
            delivery,
            listen,
            control,
            read_only,
            max_command_age,
            emergency_wait,
            alert_chats: ra.chats,
            alerts,
            alert_burst,
            alert_window,
            keeper_api: r.keeper_api,
            keeper_token_env: r.keeper_token_env,
            copytrade_api: r.copytrade_api,
            copytrade_token_env: match &r.copytrade_token_env {
                Some(v) => Some(env_name(file, "telegram.copytrade_token_env", v)?),
                None => None,
            },
            copytrade_store: r.copytrade_store,
            signals,
            state_file: r.state_file.unwrap_or_else(|| PathBuf::from("data/telegram-state.json")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[telegram]
token_env = "KRONOS_TELEGRAM_TOKEN"
[telegram.allow]
control = [111]
read_only = [-100222]
[telegram.alerts]
chats = [111]
categories = { fill = "silent", price = "on" }
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse("t.toml", GOOD).unwrap();
        assert_eq!(c.delivery, Delivery::Polling { timeout_s: 30 });
        assert_eq!(c.api_url, "https://api.telegram.org/");
        assert_eq!(c.alerts["fill"], AlertMode::Silent);
        assert_eq!(c.alerts["price"], AlertMode::On);
        assert_eq!(c.alerts["settlement"], AlertMode::On);
        assert_eq!(c.alerts["round"], AlertMode::Off);
        assert_eq!(c.alert_burst, 5);
        assert!(c.control.contains(&111) && c.read_only.contains(&-100222));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (GOOD.replace("control = [111]\nread_only = [-100222]", ""), "telegram.allow", "nobody may use"),
            (
                GOOD.replace("fill = \"silent\"", "fill = \"loud\""),
                "telegram.alerts.categories.fill",
                "not on, silent or off",
            ),
            (
                GOOD.replace("fill = \"silent\"", "fills = \"on\""),
                "telegram.alerts.categories.fills",
                "unknown category",
            ),
            (
                GOOD.replace("token_env = \"KRONOS_TELEGRAM_TOKEN\"", "token_env = \"123456:ABC-DEF\""),
                "telegram.token_env",
                "not an environment variable",
            ),
            (
                GOOD.replace("[telegram.allow]", "mode = \"webhook\"\n[telegram.allow]"),
                "telegram.webhook_url",
                "required",
            ),
            (
                GOOD.replace("[telegram.allow]", "mode = \"webhook\"\nwebhook_url = \"http://x/y\"\n[telegram.allow]"),
                "telegram.webhook_url",
                "must use https",
            ),
            (
                GOOD.replace("[telegram.allow]", "signals = [\"http://x\"]\n[telegram.allow]"),
                "telegram.signals[0]",
                "must use ws",
            ),
            (GOOD.replace("[telegram.allow]", "tokenenv = \"X\"\n[telegram.allow]"), "line", "unknown field"),
        ];
        for (text, field, msg) in cases {
            let e = Config::parse("t.toml", &text).unwrap_err();
            assert!(e.field.starts_with(field) && e.message.contains(msg), "{field}/{msg}: got {e}");
        }
    }

    /// Issue 14, item 11: a listed group does not give its members control; control is per user.
    #[test]
    fn a_group_admits_its_members_to_read_and_control_stays_with_listed_users() {
        let c = Config::parse("t.toml", GOOD).unwrap();
        assert_eq!(c.rights(111, Some(111)), Rights::Control);
        assert_eq!(c.rights(222, Some(222)), Rights::None, "an unlisted user");
        assert_eq!(c.rights(-100222, Some(5555)), Rights::Read, "a member of the read-only group");
        assert_eq!(c.rights(-100222, Some(111)), Rights::Control, "a control user in the listed group");
        assert_eq!(c.rights(-100333, Some(111)), Rights::None, "a control user in a group that is not listed");
        let e = Config::parse("t.toml", &GOOD.replace("control = [111]", "control = [111, -100777]")).unwrap_err();
        assert!(e.field == "telegram.allow.control" && e.message.contains("every member would get control"), "{e}");
        assert_eq!(c.max_command_age, Duration::from_secs(120));
        let e =
            Config::parse("t.toml", &GOOD.replace("[telegram.allow]", "max_command_age = \"soon\"\n[telegram.allow]"))
                .unwrap_err();
        assert_eq!(e.field, "telegram.max_command_age");
    }

    #[test]
    fn the_social_section_is_optional_and_validated() {
        assert_eq!(Config::parse("t.toml", GOOD).unwrap().social, None);
        let with = |s: &str| GOOD.to_string() + "[telegram.social]\n" + s;
        let c =
            Config::parse("t.toml", &with("url = \"ws://127.0.0.1:8790/ws\"\nassets = [\"btc\", \"ETH\"]\n")).unwrap();
        let s = c.social.unwrap();
        assert_eq!(s.min_priority, Priority::High, "high by default");
        assert_eq!(s.assets, vec!["BTC", "ETH"]);
        assert_eq!(c.alerts["social"], AlertMode::On);
        let cases = [
            ("min_priority = \"high\"\n", "telegram.social.url", "required"),
            ("url = \"http://127.0.0.1:8790/ws\"\n", "telegram.social.url", "must use ws"),
            ("url = \"ws://h/ws\"\nmin_priority = \"urgent\"\n", "telegram.social.min_priority", "not low"),
            ("url = \"ws://h/ws\"\nassets = [\"BTC\", \"$$\"]\n", "telegram.social.assets[1]", "not an asset"),
            ("url = \"ws://h/ws\"\nmin_score = 1\n", "line", "unknown field"),
        ];
        for (text, field, msg) in cases {
            let e = Config::parse("t.toml", &with(text)).unwrap_err();
            assert!(e.field.starts_with(field) && e.message.contains(msg), "{field}/{msg}: got {e}");
        }
        let no_chats = GOOD.replace("chats = [111]", "chats = []") + "[telegram.social]\nurl = \"ws://h/ws\"\n";
        let e = Config::parse("t.toml", &no_chats).unwrap_err();
        assert!(e.field == "telegram.social" && e.message.contains("telegram.alerts.chats"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses() {
        Config::parse("config/telegram.example.toml", include_str!("../../../config/telegram.example.toml")).unwrap();
    }
}
