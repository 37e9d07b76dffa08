//! The monitor's configuration (`config/social.example.toml`): raw TOML read into validated types. Every bad value is
//! an error naming the file and the field (`source[2].url: ...`). Secrets (API tokens) never live in the file: a
//! source names the environment variable that holds its token.
//!
//! `[[source]]` tables are read by their `kind`; each kind has its own fields (unknown ones are refused). New kinds
//! add a variant to [`SourceKind`] and a branch in [`parse_source`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kronos_common::http_guard::{Limits, RawLimits};
use serde::Deserialize;

use crate::fanout::redis::RedisConfig;
use crate::pipeline::{assets::AssetBook, score::ScoreRules, spam::SpamRules, Rules};

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    social: RawSocial,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    spam: RawSpam,
    #[serde(default)]
    score: RawScore,
    #[serde(default, rename = "asset")]
    assets: Vec<RawAsset>,
    #[serde(default, rename = "source")]
    sources: Vec<toml::Table>,
    #[serde(default)]
    api: RawLimits,
    #[serde(default)]
    redis: Option<RedisConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocial {
    #[serde(default = "default_store")]
    store: String,
    #[serde(default = "default_listen")]
    listen: String,
    /// A folder of fixture feeds to serve on `fixtures_listen` (offline demo).
    fixtures: Option<PathBuf>,
    fixtures_listen: Option<String>,
}

fn default_store() -> String {
    "sqlite:data/social.sqlite".into()
}

fn default_listen() -> String {
    "127.0.0.1:8790".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    max_text_bytes: Option<usize>,
    dedup_window_s: Option<u64>,
    dedup_capacity: Option<usize>,
    hamming: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpam {
    min_words_besides_links: Option<usize>,
    window_s: Option<u64>,
    new_authors_per_window: Option<usize>,
    per_author_per_window: Option<usize>,
    author_memory_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScore {
    high: Option<f64>,
    normal: Option<f64>,
    z_spike: Option<f64>,
    bucket_s: Option<u64>,
    baseline_buckets: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    symbol: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    contracts: Vec<String>,
}

/// What every source has.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    /// Multiplies the score of its items (default 1.0).
    pub weight: f64,
    /// Spam rules do not apply (default: true for the keeper's signals, false otherwise).
    pub trusted: bool,
    pub kind: SourceKind,
}

/// The kinds of source and their own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Rss(RssConfig),
    /// Boxed: the largest settings by far.
    HttpJson(Box<JsonConfig>),
    Keeper(KeeperConfig),
    Discord(crate::sources::discord::DiscordConfig),
    Telegram(crate::sources::telegram::TelegramConfig),
}

impl SourceKind {
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Rss(_) => "rss",
            SourceKind::HttpJson(_) => "http_json",
            SourceKind::Keeper(_) => "keeper",
            SourceKind::Discord(_) => "discord",
            SourceKind::Telegram(_) => "telegram",
        }
    }
}

/// An RSS/Atom feed.
#[derive(Debug, Clone, PartialEq)]
pub struct RssConfig {
    pub url: url::Url,
    pub poll: Duration,
    /// Larger responses are refused (a feed is not a download).
    pub max_bytes: usize,
}

/// A JSON API: one GET per poll, an array of items at `items`, fields mapped by dotted paths.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonConfig {
    pub url: url::Url,
    pub poll: Duration,
    pub max_bytes: usize,
    /// The header that carries the token (`Authorization`) and the variable that holds it.
    pub auth: Option<(String, String)>,
    /// Put before the token (`Bearer `).
    pub auth_prefix: String,
    /// Dotted path to the array of items (`data.items`; empty: the body is the array).
    pub items: String,
    pub fields: JsonFields,
    /// Items with fields outside the mapping are skipped (`unknown_fields`), for APIs whose schema must not drift.
    pub strict: bool,
}

/// Dotted paths into one JSON item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFields {
    pub id: String,
    pub text: String,
    pub author: Option<String>,
    pub url: Option<String>,
    pub time: Option<String>,
    pub language: Option<String>,
}

/// The keeper's (or the copy-trader's) signal WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub struct KeeperConfig {
    pub url: url::Url,
    /// The variable holding the API token (to see forecasts before their reveal); none: the sealed stream.
    pub token_env: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub store: String,
    pub listen: SocketAddr,
    pub fixtures: Option<(PathBuf, SocketAddr)>,
    pub rules: Rules,
    pub sources: Vec<SourceConfig>,
    pub limits: Limits,
    pub redis: Option<RedisConfig>,
}

impl Config {
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        Config::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |field: &str, message: String| ConfigError { file: file.into(), field: field.into(), message };
        let raw: RawConfig = toml::from_str(text).map_err(|e| err("(syntax)", e.message().to_string()))?;
        let store = std::env::var("KRONOS_SOCIAL_STORE").unwrap_or(raw.social.store);
        if !(store.starts_with("sqlite:") || store.starts_with("postgres://") || store.starts_with("postgresql://")) {
            return Err(err("social.store", "must start with sqlite: or postgres://".into()));
        }
        let listen_s = std::env::var("KRONOS_SOCIAL_LISTEN").unwrap_or(raw.social.listen);
        let listen: SocketAddr =
            listen_s.parse().map_err(|e| err("social.listen", format!("'{listen_s}' is not an address: {e}")))?;
        let fixtures = match (raw.social.fixtures, raw.social.fixtures_listen) {
            (None, None) => None,
            (Some(dir), l) => {
                let l = l.unwrap_or_else(|| "127.0.0.1:8791".into());
                let addr: SocketAddr =
                    l.parse().map_err(|e| err("social.fixtures_listen", format!("'{l}' is not an address: {e}")))?;
                Some((dir, addr))
            }
            (None, Some(_)) => return Err(err("social.fixtures_listen", "needs social.fixtures (the folder)".into())),
        };

        let mut rules = Rules::default();
        let p = raw.pipeline;
        rules.max_text_bytes = positive("pipeline.max_text_bytes", p.max_text_bytes, rules.max_text_bytes, &err)?;
        rules.dedup_window_ms =
            positive("pipeline.dedup_window_s", p.dedup_window_s, rules.dedup_window_ms / 1000, &err)? * 1000;
        rules.dedup_capacity = positive("pipeline.dedup_capacity", p.dedup_capacity, rules.dedup_capacity, &err)?;
        rules.hamming = p.hamming.unwrap_or(rules.hamming);
        if rules.hamming > crate::pipeline::dedup::DEFAULT_HAMMING {
            return Err(err(
                "pipeline.hamming",
                format!(
                    "{} is above {} (the index finds pairs within 7 bits)",
                    rules.hamming,
                    crate::pipeline::dedup::DEFAULT_HAMMING
                ),
            ));
        }
        let d = SpamRules::default();
        let s = raw.spam;
        rules.spam = SpamRules {
            min_words_besides_links: s.min_words_besides_links.unwrap_or(d.min_words_besides_links),
            window_ms: positive("spam.window_s", s.window_s, d.window_ms / 1000, &err)? * 1000,
            new_authors_per_window: positive(
                "spam.new_authors_per_window",
                s.new_authors_per_window,
                d.new_authors_per_window,
                &err,
            )?,
            per_author_per_window: positive(
                "spam.per_author_per_window",
                s.per_author_per_window,
                d.per_author_per_window,
                &err,
            )?,
            author_memory_ms: positive("spam.author_memory_s", s.author_memory_s, d.author_memory_ms / 1000, &err)?
                * 1000,
        };
        let d = ScoreRules::default();
        let sc = raw.score;
        rules.score = ScoreRules {
            high: sc.high.unwrap_or(d.high),
            normal: sc.normal.unwrap_or(d.normal),
            z_spike: sc.z_spike.unwrap_or(d.z_spike),
            bucket_ms: positive("score.bucket_s", sc.bucket_s, d.bucket_ms / 1000, &err)? * 1000,
            baseline_buckets: positive("score.baseline_buckets", sc.baseline_buckets, d.baseline_buckets, &err)?,
        };
        for (f, v) in [
            ("score.high", rules.score.high),
            ("score.normal", rules.score.normal),
            ("score.z_spike", rules.score.z_spike),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(err(f, format!("{v} must be a number ≥ 0")));
            }
        }
        if rules.score.normal > rules.score.high {
            return Err(err(
                "score.normal",
                format!("{} is above score.high ({})", rules.score.normal, rules.score.high),
            ));
        }

        let mut book = AssetBook::new();
        let mut symbols = std::collections::BTreeSet::new();
        for (i, a) in raw.assets.iter().enumerate() {
            let at = |f: &str| format!("asset[{i}].{f}");
            let sym = a.symbol.trim();
            if sym.is_empty() || sym.len() > 10 || !sym.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
                return Err(err(&at("symbol"), format!("'{}' must be 1 to 10 upper-case letters or digits", a.symbol)));
            }
            if !symbols.insert(sym.to_string()) {
                return Err(err(&at("symbol"), format!("{sym} is listed twice")));
            }
            for (j, c) in a.contracts.iter().enumerate() {
                kronos_common::catalogue::parse_evm_address(c)
                    .map_err(|m| err(&format!("asset[{i}].contracts[{j}]"), m))?;
            }
            for (j, n) in a.names.iter().enumerate() {
                if n.trim().is_empty() || n.contains(char::is_whitespace) {
                    return Err(err(&format!("asset[{i}].names[{j}]"), "names are single words".into()));
                }
            }
            book.add(sym, &a.names, &a.contracts);
        }
        rules.assets = book;

        let mut sources = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in raw.sources.into_iter().enumerate() {
            let s = parse_source(i, t).map_err(|(f, m)| err(&f, m))?;
            if !names.insert(s.name.clone()) {
                return Err(err(&format!("source[{i}].name"), format!("'{}' is used by another source", s.name)));
            }
            sources.push(s);
        }
        let limits = raw.api.validate("api").map_err(|(f, m)| err(&f, m))?;
        Ok(Config { file: file.into(), store, listen, fixtures, rules, sources, limits, redis: raw.redis })
    }
}

fn positive<T: PartialOrd + Default + Copy + std::fmt::Display>(
    field: &str,
    v: Option<T>,
    default: T,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<T, ConfigError> {
    let v = v.unwrap_or(default);
    if v <= T::default() {
        return Err(err(field, format!("{v} must be above 0")));
    }
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRss {
    name: String,
    /// Read by [`parse_source`] to pick this struct.
    #[serde(rename = "kind")]
    _kind: String,
    weight: Option<f64>,
    trusted: Option<bool>,
    url: String,
    poll_s: Option<u64>,
    max_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJson {
    name: String,
    /// Read by [`parse_source`] to pick this struct.
    #[serde(rename = "kind")]
    _kind: String,
    weight: Option<f64>,
    trusted: Option<bool>,
    url: String,
    poll_s: Option<u64>,
    max_bytes: Option<usize>,
    auth_header: Option<String>,
    auth_env: Option<String>,
    #[serde(default)]
    auth_prefix: String,
    #[serde(default)]
    items: String,
    fields: RawFields,
    #[serde(default)]
    strict: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFields {
    id: String,
    text: String,
    author: Option<String>,
    url: Option<String>,
    time: Option<String>,
    language: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeeper {
    name: String,
    /// Read by [`parse_source`] to pick this struct.
    #[serde(rename = "kind")]
    _kind: String,
    weight: Option<f64>,
    trusted: Option<bool>,
    url: String,
    token_env: Option<String>,
}

const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Reads one `[[source]]` table by its `kind`; errors are `(field, message)`.
pub fn parse_source(i: usize, t: toml::Table) -> Result<SourceConfig, (String, String)> {
    let at = |f: &str| format!("source[{i}].{f}");
    let kind = t
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| (at("kind"), "is required (rss, http_json, keeper, discord, telegram)".to_string()))?
        .to_string();
    let de = |e: toml::de::Error| (format!("source[{i}]"), e.message().to_string());
    let http_url = |f: &str, s: &str| -> Result<url::Url, (String, String)> {
        let u = url::Url::parse(s).map_err(|e| (at(f), format!("'{s}' is not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err((at(f), format!("'{}' must be http or https", u.scheme())));
        }
        Ok(u)
    };
    let poll = |v: Option<u64>| -> Result<Duration, (String, String)> {
        match v {
            Some(0) => Err((at("poll_s"), "must be above 0".into())),
            v => Ok(Duration::from_secs(v.unwrap_or(60))),
        }
    };
    let name_ok = |n: &str| -> Result<String, (String, String)> {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err((at("name"), format!("'{n}' must be letters, digits, '-' or '_'")));
        }
        Ok(n.to_string())
    };
    let weight = |w: Option<f64>| -> Result<f64, (String, String)> {
        let w = w.unwrap_or(1.0);
        if !w.is_finite() || w < 0.0 {
            return Err((at("weight"), format!("{w} must be a number ≥ 0")));
        }
        Ok(w)
    };
    let env_name = |f: &str, v: &str| env_var_name(at(f), v, "");
    let value = toml::Value::Table(t);
    match kind.as_str() {
        "rss" => {
            let r: RawRss = value.try_into().map_err(de)?;
            Ok(SourceConfig {
                name: name_ok(&r.name)?,
                weight: weight(r.weight)?,
                trusted: r.trusted.unwrap_or(false),
                kind: SourceKind::Rss(RssConfig {
                    url: http_url("url", &r.url)?,
                    poll: poll(r.poll_s)?,
                    max_bytes: r.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
                }),
            })
        }
        "http_json" => {
            let r: RawJson = value.try_into().map_err(de)?;
            let auth = match (r.auth_header, r.auth_env) {
                (None, None) => None,
                (Some(h), Some(e)) => {
                    if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err((at("auth_header"), format!("'{h}' is not a header name")));
                    }
                    Some((h, env_name("auth_env", &e)?))
                }
                (Some(_), None) => return Err((at("auth_env"), "is required with auth_header".into())),
                (None, Some(_)) => return Err((at("auth_header"), "is required with auth_env".into())),
            };
            let path = |f: &str, p: &str| -> Result<String, (String, String)> {
                if p.trim().is_empty() || p.split('.').any(str::is_empty) {
                    return Err((at(&format!("fields.{f}")), format!("'{p}' is not a dotted path (a.b.c)")));
                }
                Ok(p.to_string())
            };
            let opt = |f: &str, p: Option<String>| p.map(|p| path(f, &p)).transpose();
            if !r.items.is_empty() && r.items.split('.').any(str::is_empty) {
                return Err((at("items"), format!("'{}' is not a dotted path (a.b.c)", r.items)));
            }
            Ok(SourceConfig {
                name: name_ok(&r.name)?,
                weight: weight(r.weight)?,
                trusted: r.trusted.unwrap_or(false),
                kind: SourceKind::HttpJson(Box::new(JsonConfig {
                    url: http_url("url", &r.url)?,
                    poll: poll(r.poll_s)?,
                    max_bytes: r.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
                    auth,
                    auth_prefix: r.auth_prefix,
                    items: r.items,
                    fields: JsonFields {
                        id: path("id", &r.fields.id)?,
                        text: path("text", &r.fields.text)?,
                        author: opt("author", r.fields.author)?,
                        url: opt("url", r.fields.url)?,
                        time: opt("time", r.fields.time)?,
                        language: opt("language", r.fields.language)?,
                    },
                    strict: r.strict,
                })),
            })
        }
        "keeper" => {
            let r: RawKeeper = value.try_into().map_err(de)?;
            let u = url::Url::parse(&r.url).map_err(|e| (at("url"), format!("'{}' is not a URL: {e}", r.url)))?;
            if !matches!(u.scheme(), "ws" | "wss") {
                return Err((at("url"), format!("'{}' must be ws or wss (the keeper's /ws)", u.scheme())));
            }
            Ok(SourceConfig {
                name: name_ok(&r.name)?,
                weight: weight(r.weight)?,
                trusted: r.trusted.unwrap_or(true),
                kind: SourceKind::Keeper(KeeperConfig {
                    url: u,
                    token_env: r.token_env.map(|e| env_name("token_env", &e)).transpose()?,
                }),
            })
        }
        "discord" => {
            let c = crate::sources::discord::DiscordConfig::parse(i, value.as_table().expect("a table"))?;
            let name = value.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            Ok(SourceConfig {
                name: name_ok(name)?,
                weight: weight(
                    value.get("weight").and_then(|w| w.as_float().or_else(|| w.as_integer().map(|i| i as f64))),
                )?,
                trusted: value.get("trusted").and_then(|t| t.as_bool()).unwrap_or(false),
                kind: SourceKind::Discord(c),
            })
        }
        "telegram" => {
            let c = crate::sources::telegram::TelegramConfig::parse(i, value.as_table().expect("a table"))?;
            let name = value.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            Ok(SourceConfig {
                name: name_ok(name)?,
                weight: weight(
                    value.get("weight").and_then(|w| w.as_float().or_else(|| w.as_integer().map(|i| i as f64))),
                )?,
                trusted: value.get("trusted").and_then(|t| t.as_bool()).unwrap_or(false),
                kind: SourceKind::Telegram(c),
            })
        }
        other => {
            Err((at("kind"), format!("'{other}' is not a source kind (rss, http_json, keeper, discord, telegram)")))
        }
    }
}

/// Checks that `v` names an environment variable (A-Z, 0-9, _); the error names `field` and ends with `hint`.
pub(crate) fn env_var_name(field: String, v: &str, hint: &str) -> Result<String, (String, String)> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err((field, format!("'{v}' is not an environment variable name (A-Z, 0-9, _){hint}")));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[social]
store = "sqlite::memory:"
listen = "127.0.0.1:0"
"#;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{MIN}{extra}"), "t.toml")
    }

    #[test]
    fn the_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/social.example.toml");
        let c = Config::load(path).unwrap();
        assert!(!c.sources.is_empty());
        assert!(c.fixtures.is_some());
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert!(e("[spam]\nwindow_s = 0\n").contains("spam.window_s"), "{}", e("[spam]\nwindow_s = 0\n"));
        assert!(e("[[asset]]\nsymbol = \"btc\"\n").contains("asset[0].symbol"));
        assert!(e("[[asset]]\nsymbol = \"LINK\"\ncontracts = [\"0x12\"]\n").contains("asset[0].contracts[0]"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"rss\"\nurl = \"ftp://x\"\n").contains("source[0].url"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"rss\"\nurl = \"http://x\"\nfoo = 1\n")
            .contains("source[0]: unknown field `foo`"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"nope\"\n").contains("source[0].kind"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"http_json\"\nurl = \"http://x\"\nauth_header = \"Authorization\"\n[source.fields]\nid = \"id\"\ntext = \"t\"\n").contains("source[0].auth_env"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"http_json\"\nurl = \"http://x\"\n[source.fields]\nid = \"a..b\"\ntext = \"t\"\n").contains("source[0].fields.id"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"keeper\"\nurl = \"http://x/ws\"\n").contains("source[0].url"));
        assert!(e("[[source]]\nname = \"a\"\nkind = \"keeper\"\nurl = \"ws://x/ws\"\n[[source]]\nname = \"a\"\nkind = \"keeper\"\nurl = \"ws://x/ws\"\n").contains("source[1].name"));
        assert!(e("[score]\nnormal = 2.0\nhigh = 1.0\n").contains("score.normal"));
        assert!(e("[pipeline]\nhamming = 9\n").contains("pipeline.hamming"));
    }

    #[test]
    fn sources_by_kind() {
        let c = parse(
            "[[source]]\nname = \"k\"\nkind = \"keeper\"\nurl = \"ws://127.0.0.1:8787/ws\"\n\
             [[source]]\nname = \"f\"\nkind = \"rss\"\nurl = \"http://127.0.0.1/x.xml\"\npoll_s = 5\nweight = 2.0\n",
        )
        .unwrap();
        assert!(c.sources[0].trusted, "the keeper's signals are trusted by default");
        assert!(matches!(&c.sources[1].kind, SourceKind::Rss(r) if r.poll == Duration::from_secs(5)));
        assert_eq!(c.sources[1].weight, 2.0);
        assert!(!c.sources[1].trusted);
    }
}
