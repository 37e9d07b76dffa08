//! The keeper's configuration: a TOML file with environment overrides.
//!
//! Every missing or bad value is an error that names the field (`chain[1].rpc[0]: ...`). Secrets never live in the
//! file: the signer key comes from an environment variable or an encrypted keystore whose password comes from one.
//!
//! Environment overrides: `KRONOS_STORE` (store URL), `KRONOS_LISTEN` (API address), `KRONOS_RPC_<CHAIN>`
//! (comma-separated RPC URLs for catalogue key `<chain>`, upper case, `-` as `_`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use kronos_common::{Catalogue, Chain, ChainKind, Decimal, Rounding, Secret};
use serde::Deserialize;

/// The trained model shipped in the repository (relative to its root): the forecaster's default `model`.
pub const SHIPPED_MODEL: &str = "oracle/forecast/model";

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
    keeper: RawKeeper,
    #[serde(default)]
    forecaster: Option<RawForecaster>,
    #[serde(default, rename = "chain")]
    chains: Vec<RawChain>,
    /// `[[solana]]` sections (`crate::solana::config`).
    #[serde(default)]
    solana: Vec<crate::solana::config::RawSolana>,
    /// The API's limits and `publish_forecasts` (`[api]`); every field optional.
    #[serde(default)]
    api: RawApi,
}

/// `[api]`: the limits ([`kronos_common::http_guard::RawLimits`], unknown fields refused) and `publish_forecasts`.
#[derive(Debug, Default)]
struct RawApi {
    limits: kronos_common::http_guard::RawLimits,
    publish_forecasts: bool,
}

impl<'de> Deserialize<'de> for RawApi {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let publish_forecasts = match t.remove("publish_forecasts") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => return Err(D::Error::custom(format!("publish_forecasts is true or false, got {other}"))),
        };
        let limits =
            kronos_common::http_guard::RawLimits::deserialize(toml::Value::Table(t)).map_err(D::Error::custom)?;
        Ok(RawApi { limits, publish_forecasts })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeeper {
    #[serde(default = "default_catalogue")]
    catalogue: PathBuf,
    store: Option<String>,
    listen: Option<String>,
    signer: RawSigner,
    #[serde(default = "default_poll")]
    poll_ms: u64,
    keeper_id: Option<String>,
    api_token_env: Option<String>,
    /// Several keepers on one PostgreSQL store (see keeper/README.md).
    lease_ttl_ms: Option<u64>,
    lease_refresh_ms: Option<u64>,
    #[serde(default)]
    shared_signer: bool,
}

fn default_catalogue() -> PathBuf {
    PathBuf::from(kronos_common::catalogue::DEFAULT_PATH)
}

fn default_poll() -> u64 {
    1000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    env: Option<String>,
    keystore: Option<PathBuf>,
    password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForecaster {
    #[serde(default = "yes")]
    enabled: bool,
    model: Option<PathBuf>,
    #[serde(default = "default_samples")]
    samples: usize,
    /// A candle CSV to forecast from instead of the feed's own history (e.g. the demo's replayed candles).
    candles: Option<PathBuf>,
    /// `f32` (default) or `bf16` (fast on CPUs with Intel AMX).
    precision: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_samples() -> usize {
    32
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    name: String,
    #[serde(default)]
    rpc: Vec<String>,
    market: String,
    registry: Option<String>,
    markets: Option<Vec<u64>>,
    confirmations: Option<u64>,
    #[serde(default, deserialize_with = "number_or_string")]
    max_fee_gwei: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    max_priority_fee_gwei: Option<String>,
    #[serde(default = "default_bump")]
    bump_after_s: u64,
    #[serde(default = "default_bump_percent")]
    bump_percent: u64,
    #[serde(default)]
    local: bool,
    /// Market id → catalogue pair, for the start-up feed check (`{ "1" = "BTC/USD" }`); default: match by address.
    #[serde(default)]
    pairs: std::collections::BTreeMap<String, String>,
}

fn default_bump() -> u64 {
    30
}

fn default_bump_percent() -> u64 {
    12
}

/// Where the signing key comes from.
#[derive(Debug, Clone)]
pub enum SignerSource {
    Env(String),
    Keystore { path: PathBuf, password_env: String },
}

/// The forecaster publishing settings.
#[derive(Debug, Clone)]
pub struct ForecasterConfig {
    pub enabled: bool,
    pub model: PathBuf,
    pub samples: usize,
    pub candles: Option<PathBuf>,
    pub precision: kronos_forecast::fast::Precision,
}

/// One chain the keeper drives.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub chain: Chain,
    pub rpc: Vec<url::Url>,
    pub market: Address,
    pub registry: Option<Address>,
    /// Market ids to drive; `None` for every market of the contract.
    pub markets: Option<Vec<u64>>,
    pub confirmations: u64,
    /// Fee caps in wei.
    pub max_fee_wei: U256,
    pub max_priority_fee_wei: U256,
    pub bump_after_s: u64,
    pub bump_percent: u64,
    /// A local development chain: feeds are mocks, so their addresses are not compared with the catalogue.
    pub local: bool,
    pub pairs: std::collections::BTreeMap<u64, String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub catalogue: Catalogue,
    pub store: String,
    pub listen: String,
    pub signer: SignerSource,
    pub poll_ms: u64,
    pub keeper_id: String,
    /// Lease timing and the signer rule when several keepers share a PostgreSQL store.
    pub lease: crate::lease::LeaseSettings,
    /// Bearer token that unseals forecasts before their reveal on `/ws` and `/api/markets` (from `keeper.api_token_env`).
    pub api_token: Option<kronos_common::Secret>,
    pub forecaster: Option<ForecasterConfig>,
    pub chains: Vec<ChainConfig>,
    /// The Solana clusters (`[[solana]]`).
    pub solana: Vec<crate::solana::SolanaConfig>,
    /// The API's limits (`[api]`): connections, `/ws` subscribers, rate per address, body, timeouts, origins.
    pub api: kronos_common::http_guard::Limits,
    /// `[api] publish_forecasts`: every client sees each forecast as soon as it is committed (`/api/markets`, `/ws`,
    /// `/api/predictions`), not only holders of the API token after the reveal. Off by default: a copy-trader
    /// trading on the forecast gives its edge away by publishing it early.
    pub publish_forecasts: bool,
}

/// A fee cap in gwei, written as a number (`5`, `1.5`) or as a string (`"5"`, for exact decimals).
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<toml::Value>::deserialize(d)? {
        None => Ok(None),
        Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
        Some(toml::Value::Float(f)) => Ok(Some(f.to_string())),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "a fee cap in gwei is a number (5, 1.5) or a decimal string (\"5\"), got {other}"
        ))),
    }
}

fn gwei(field: &str, v: &Option<String>, default: &str) -> Result<U256, (String, String)> {
    let s = v.as_deref().unwrap_or(default);
    let d: Decimal = s.parse().map_err(|e| (field.to_string(), format!("{e}")))?;
    if d.is_negative() || d.is_zero() {
        return Err((field.to_string(), format!("must be above 0, got {s}")));
    }
    let wei = d.to_fixed(9, Rounding::Down).map_err(|e| (field.to_string(), e.to_string()))?;
    Ok(U256::from(wei as u128))
}

/// For a relative path that is not there: says what it was relative to, since a keeper started from another
/// directory than the checkout reads `config/chains.toml` from that directory, not from beside its config file.
fn relative_hint(path: &Path, cwd: &std::io::Result<PathBuf>) -> String {
    match cwd {
        Ok(dir) if path.is_relative() && !dir.join(path).exists() => format!(
            " (a relative path, read from the working directory {}: run from the project root or give an absolute path)",
            dir.display()
        ),
        _ => String::new(),
    }
}

fn address(field: &str, s: &str) -> Result<Address, (String, String)> {
    kronos_common::catalogue::parse_evm_address(s).map_err(|m| (field.to_string(), m))
}

impl Config {
    /// Reads, applies environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string(), &|k| std::env::var(k).ok())
    }

    /// Parses configuration text; `env` looks up environment variables.
    pub fn parse(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let err = |field: String, message: String| ConfigError { file: file.to_string(), field, message };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let span = e.span().map(|s| {
                let start = s.start.min(text.len());
                let line = text[..start].lines().count().max(1);
                // Name the table the problem is in (its header is the nearest one at or above the line).
                let table = text[..start.max(text[start..].find('\n').map(|n| start + n).unwrap_or(text.len()))]
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| l.starts_with('['))
                    .map(|h| format!(" in {h}"))
                    .unwrap_or_default();
                format!("line {line}{table}")
            });
            err(span.unwrap_or_else(|| "(syntax)".into()), msg)
        })?;
        let publish_forecasts = raw.api.publish_forecasts;
        let api = raw.api.limits.validate("api").map_err(|(f, m)| err(f, m))?;
        let k = raw.keeper;
        let catalogue = Catalogue::load(&k.catalogue).map_err(|e| {
            err("keeper.catalogue".into(), format!("{e}{}", relative_hint(&k.catalogue, &std::env::current_dir())))
        })?;
        let store = env("KRONOS_STORE").or(k.store).unwrap_or_else(|| "sqlite://data/kronos.db".into());
        if !(store.starts_with("sqlite:") || store.starts_with("postgres://") || store.starts_with("postgresql://")) {
            return Err(err("keeper.store".into(), format!("'{store}' is neither sqlite:… nor postgres://…")));
        }
        let listen = env("KRONOS_LISTEN").or(k.listen).unwrap_or_else(|| "127.0.0.1:9464".into());
        listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| err("keeper.listen".into(), format!("'{listen}' is not host:port ({e})")))?;
        let api_token = match &k.api_token_env {
            None => None,
            Some(var) => {
                let t = env(var).map(|t| t.trim().to_string()).unwrap_or_default();
                if t.len() < 16 || t.chars().any(|c| c.is_whitespace()) {
                    return Err(err(
                        "keeper.api_token_env".into(),
                        format!(
                            "environment variable {var} must hold a token of at least 16 characters without spaces"
                        ),
                    ));
                }
                Some(kronos_common::Secret::new(t))
            }
        };
        let signer = match (k.signer.env, k.signer.keystore, k.signer.password_env) {
            (Some(v), None, None) if !v.trim().is_empty() => SignerSource::Env(v),
            (None, Some(path), Some(pw)) => SignerSource::Keystore { path, password_env: pw },
            (None, Some(_), None) => {
                return Err(err("keeper.signer.password_env".into(), "a keystore needs password_env".into()))
            }
            _ => {
                return Err(err(
                    "keeper.signer".into(),
                    "give either env = \"VAR\" or keystore = \"file\" with password_env = \"VAR\"".into(),
                ))
            }
        };
        if k.poll_ms == 0 || k.poll_ms > 60_000 {
            return Err(err("keeper.poll_ms".into(), format!("{} is outside 1..=60000", k.poll_ms)));
        }
        let keeper_id = k.keeper_id.unwrap_or_else(default_keeper_id);
        let lease = crate::lease::LeaseSettings::parse(k.lease_ttl_ms, k.lease_refresh_ms, k.shared_signer, &store)
            .map_err(|(f, m)| err(f, m))?;
        let forecaster = match raw.forecaster {
            None => None,
            Some(f) => Some(ForecasterConfig {
                enabled: f.enabled,
                model: f.model.unwrap_or_else(|| PathBuf::from(SHIPPED_MODEL)),
                samples: f.samples,
                candles: f.candles,
                precision: match f.precision {
                    None => Default::default(),
                    Some(p) => p.parse().map_err(|e: String| err("forecaster.precision".into(), e))?,
                },
            }),
        };
        if let Some(f) = &forecaster {
            if f.samples == 0 {
                return Err(err("forecaster.samples".into(), "must be at least 1".into()));
            }
        }
        if raw.chains.is_empty() && raw.solana.is_empty() {
            return Err(err("chain".into(), "no [[chain]] (nor [[solana]]) is configured".into()));
        }
        let solana = crate::solana::config::validate(raw.solana, &catalogue, env).map_err(|(f, m)| err(f, m))?;
        if let Some(i) = solana.iter().position(|s| s.forecasts) {
            if !forecaster.as_ref().is_some_and(|f| f.enabled) {
                let why = "publishing forecasts needs an enabled [forecaster] section".to_string();
                return Err(err(format!("solana[{i}].forecasts"), why));
            }
        }
        let mut chains = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, c) in raw.chains.into_iter().enumerate() {
            let at = |f: &str| format!("chain[{i}].{f}");
            let chain = catalogue.chain(&c.name).cloned().ok_or_else(|| {
                err(
                    at("name"),
                    format!(
                        "'{}' is not in the catalogue ({})",
                        c.name,
                        catalogue.chains.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            if chain.kind != ChainKind::Evm {
                return Err(err(at("name"), format!("'{}' is not an EVM chain", c.name)));
            }
            if !seen.insert(c.name.clone()) {
                return Err(err(at("name"), format!("'{}' is configured twice", c.name)));
            }
            let env_key = format!("KRONOS_RPC_{}", c.name.to_uppercase().replace('-', "_"));
            let rpc_raw: Vec<String> = match env(&env_key) {
                Some(v) => v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                None => c.rpc,
            };
            if rpc_raw.is_empty() {
                return Err(err(at("rpc"), format!("at least one RPC URL is needed (or set {env_key})")));
            }
            let mut rpc = Vec::new();
            for (j, u) in rpc_raw.iter().enumerate() {
                // The URL itself is never echoed: hosted endpoints carry their API key in it.
                let url = url::Url::parse(u).map_err(|e| {
                    err(at(&format!("rpc[{j}]")), format!("is not a URL ({e}; the value is not shown)"))
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(err(
                        at(&format!("rpc[{j}]")),
                        format!("must be http or https, not {} (the rest of the URL is not shown)", url.scheme()),
                    ));
                }
                rpc.push(url);
            }
            let market = address(&at("market"), &c.market).map_err(|(f, m)| err(f, m))?;
            let registry = match &c.registry {
                Some(r) => Some(address(&at("registry"), r).map_err(|(f, m)| err(f, m))?),
                None => None,
            };
            if let Some(m) = &c.markets {
                if m.is_empty() || m.contains(&0) {
                    return Err(err(at("markets"), "market ids start at 1; omit the key to drive every market".into()));
                }
            }
            let max_fee_wei = gwei(&at("max_fee_gwei"), &c.max_fee_gwei, "500").map_err(|(f, m)| err(f, m))?;
            let max_priority_fee_wei =
                gwei(&at("max_priority_fee_gwei"), &c.max_priority_fee_gwei, "5").map_err(|(f, m)| err(f, m))?;
            if max_priority_fee_wei > max_fee_wei {
                return Err(err(at("max_priority_fee_gwei"), "is above max_fee_gwei".into()));
            }
            if c.bump_percent < 10 {
                return Err(err(
                    at("bump_percent"),
                    format!("{} is below 10 (nodes reject smaller replacements)", c.bump_percent),
                ));
            }
            if c.bump_after_s == 0 {
                return Err(err(at("bump_after_s"), "must be above 0".into()));
            }
            let mut pairs = std::collections::BTreeMap::new();
            for (id, pair) in c.pairs {
                let n: u64 = id.parse().map_err(|_| err(at("pairs"), format!("key '{id}' is not a market id")))?;
                if !chain.feeds.contains_key(&pair) {
                    return Err(err(
                        at(&format!("pairs.{id}")),
                        format!("'{pair}' is not a feed of {} in the catalogue", c.name),
                    ));
                }
                pairs.insert(n, pair);
            }
            let confirmations = c.confirmations.unwrap_or(chain.confirmations);
            if confirmations == 0 {
                return Err(err(at("confirmations"), "must be at least 1".into()));
            }
            chains.push(ChainConfig {
                confirmations,
                chain,
                rpc,
                market,
                registry,
                markets: c.markets,
                max_fee_wei,
                max_priority_fee_wei,
                bump_after_s: c.bump_after_s,
                bump_percent: c.bump_percent,
                local: c.local,
                pairs,
            });
        }
        Ok(Config {
            file: file.to_string(),
            catalogue,
            store,
            listen,
            signer,
            poll_ms: k.poll_ms,
            keeper_id,
            lease,
            api_token,
            forecaster,
            chains,
            solana,
            api,
            publish_forecasts,
        })
    }

    /// Loads the signing key; the error names the variable or file, never the key.
    pub fn load_signer(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<PrivateKeySigner, ConfigError> {
        let err = |field: &str, message: String| ConfigError { file: self.file.clone(), field: field.into(), message };
        match &self.signer {
            SignerSource::Env(var) => {
                let v = env(var)
                    .ok_or_else(|| err("keeper.signer.env", format!("environment variable {var} is not set")))?;
                let secret = Secret::new(v.trim());
                secret
                    .expose()
                    .parse::<PrivateKeySigner>()
                    .map_err(|_| err("keeper.signer.env", format!("{var} does not hold a 32-byte hex private key")))
            }
            SignerSource::Keystore { path, password_env } => {
                let pw = env(password_env).ok_or_else(|| {
                    err("keeper.signer.password_env", format!("environment variable {password_env} is not set"))
                })?;
                let pw = Secret::new(pw);
                PrivateKeySigner::decrypt_keystore(path, pw.expose())
                    .map_err(|e| err("keeper.signer.keystore", format!("{}: cannot decrypt: {e}", path.display())))
            }
        }
    }
}

/// The keeper id when the configuration gives none: host name, process id and a random suffix, so that keepers
/// started from one configuration (containers all see pid 1) never share an id.
fn default_keeper_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keeper".into());
    format!("{host}-{}-{}", std::process::id(), crate::lease::new_instance_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn base(extra: &str) -> String {
        let cat = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/chains.toml");
        format!(
            "[keeper]\ncatalogue = \"{cat}\"\nsigner = {{ env = \"K\" }}\n\n[[chain]]\nname = \"base\"\nrpc = [\"http://127.0.0.1:8545\", \"https://backup.example\"]\nmarket = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n{extra}"
        )
    }

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Config::parse(text, "k.toml", &move |k| env.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()))
    }

    #[test]
    fn a_relative_catalogue_that_is_not_there_says_where_it_was_looked_for() {
        let dir = std::env::temp_dir();
        let hint = relative_hint(Path::new("config/no-such-chains.toml"), &Ok(dir.clone()));
        assert!(hint.contains(&format!("working directory {}", dir.display())), "{hint}");
        assert_eq!(relative_hint(Path::new("/no/such/chains.toml"), &Ok(dir.clone())), "", "absolute: no hint");
        let there = tempfile_in(&dir);
        let rel = Path::new(there.file_name().unwrap());
        assert_eq!(relative_hint(rel, &Ok(dir.clone())), "", "a relative path that exists but is bad: no hint");
        std::fs::remove_file(&there).unwrap();
    }

    fn tempfile_in(dir: &Path) -> PathBuf {
        let p = dir.join(format!("kronos-relhint-{}.toml", std::process::id()));
        std::fs::write(&p, "x").unwrap();
        p
    }

    #[test]
    fn a_minimal_config_gets_defaults_from_the_catalogue() {
        let c = parse(&base(""), &[]).unwrap();
        assert_eq!(c.chains[0].chain.chain_id, Some(8453));
        assert_eq!(c.chains[0].confirmations, 10);
        assert_eq!(c.chains[0].rpc.len(), 2);
        assert_eq!(c.store, "sqlite://data/kronos.db");
        assert_eq!(c.chains[0].max_fee_wei, U256::from(500_000_000_000u64));
    }

    #[test]
    fn environment_overrides_win() {
        let c = parse(
            &base(""),
            &[("KRONOS_RPC_BASE", "http://10.0.0.1:1, http://10.0.0.2:2"), ("KRONOS_STORE", "postgres://u@h/db")],
        )
        .unwrap();
        assert_eq!(c.chains[0].rpc[1].as_str(), "http://10.0.0.2:2/");
        assert_eq!(c.store, "postgres://u@h/db");
    }

    #[test]
    fn the_example_configuration_parses() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let text = std::fs::read_to_string(format!("{root}/config/keeper.example.toml"))
            .unwrap()
            .replace("\"config/chains.toml\"", &format!("\"{root}/config/chains.toml\""));
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.chains[0].max_fee_wei, U256::from(5_000_000_000u64));
        assert_eq!(c.chains[0].max_priority_fee_wei, U256::from(100_000_000u64));
    }

    /// Issue 13, item 12: `max_fee_gwei = 5` was "invalid type: integer 5, expected a string".
    #[test]
    fn fee_caps_may_be_written_as_plain_numbers() {
        let c = parse(&base("max_fee_gwei = 5\nmax_priority_fee_gwei = 1.5\n"), &[]).unwrap();
        assert_eq!(c.chains[0].max_fee_wei, U256::from(5_000_000_000u64));
        assert_eq!(c.chains[0].max_priority_fee_wei, U256::from(1_500_000_000u64));
        let c = parse(&base("max_fee_gwei = \"7.25\"\n"), &[]).unwrap();
        assert_eq!(c.chains[0].max_fee_wei, U256::from(7_250_000_000u64));
        let e = field_err(&base("max_fee_gwei = true\n"));
        assert!(e.contains("a fee cap in gwei") && e.contains("got true") && e.contains("line 9 in [[chain]]"), "{e}");
    }

    fn field_err(text: &str) -> String {
        parse(text, &[]).unwrap_err().to_string()
    }

    #[test]
    fn the_api_token_comes_from_the_environment_and_is_never_printed() {
        let text = base("").replace("[keeper]", "[keeper]\napi_token_env = \"KT\"");
        assert!(field_err(&text).contains("keeper.api_token_env: environment variable KT must hold a token"));
        let short = parse(&text, &[("KT", "short")]).unwrap_err().to_string();
        assert!(short.contains("at least 16 characters") && !short.contains("short\""), "{short}");
        let c = parse(&text, &[("KT", "a-long-enough-api-token")]).unwrap();
        assert_eq!(c.api_token.as_ref().unwrap().expose(), "a-long-enough-api-token");
        assert!(!format!("{c:?}").contains("a-long-enough-api-token"));
        assert!(parse(&base(""), &[]).unwrap().api_token.is_none());
    }

    #[test]
    fn the_api_limits_have_defaults_and_errors_name_the_field() {
        assert_eq!(parse(&base(""), &[]).unwrap().api, kronos_common::http_guard::Limits::default());
        let with = |extra: &str| base("").replace("[keeper]", &format!("[api]\n{extra}\n\n[keeper]"));
        let c = parse(&with("max_ws_subscribers = 5\nallowed_origins = [\"https://dash.example\"]"), &[]).unwrap();
        assert_eq!(c.api.max_ws_subscribers, 5);
        assert_eq!(c.api.allowed_origins, vec!["https://dash.example"]);
        let e = field_err(&with("request_timeout_ms = 0"));
        assert!(e.contains("k.toml: api.request_timeout_ms: 0 is below 1"), "{e}");
        let e = field_err(&with("allowed_origins = [\"dash.example\"]"));
        assert!(e.contains("api.allowed_origins[0]"), "{e}");
        assert!(field_err(&with("max_conections = 1")).contains("max_conections"));
        let c = parse(
            &with("max_connections_per_ip = 0\nmax_ws_per_ip = 4\nwrite_timeout_ms = 2500\nallowed_hosts = [\"Dash.Example\"]"),
            &[],
        )
        .unwrap();
        assert_eq!((c.api.max_connections_per_ip, c.api.max_ws_per_ip), (0, 4));
        assert_eq!(c.api.write_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(c.api.allowed_hosts, vec!["dash.example"]);
        let e = field_err(&with("allowed_hosts = [\"http://dash.example\"]"));
        assert!(e.contains("api.allowed_hosts[0]"), "{e}");
        assert!(field_err(&with("write_timeout_ms = 0")).contains("api.write_timeout_ms: 0 is below 1"));
    }

    #[test]
    fn forecasts_are_published_only_when_api_publish_forecasts_is_true() {
        let with = |extra: &str| base("").replace("[keeper]", &format!("[api]\n{extra}\n\n[keeper]"));
        assert!(!parse(&base(""), &[]).unwrap().publish_forecasts, "sealed by default");
        assert!(!parse(&with("max_ws_subscribers = 5"), &[]).unwrap().publish_forecasts);
        let c = parse(&with("publish_forecasts = true\nmax_ws_subscribers = 5"), &[]).unwrap();
        assert!(c.publish_forecasts);
        assert_eq!(c.api.max_ws_subscribers, 5, "the limits beside it still read");
        assert!(!parse(&with("publish_forecasts = false"), &[]).unwrap().publish_forecasts);
        let e = field_err(&with("publish_forecasts = \"yes\""));
        assert!(e.contains("publish_forecasts is true or false") && e.contains("[api]"), "{e}");
        assert!(field_err(&with("publish_forecasts = true\nmax_conections = 1")).contains("max_conections"));
    }

    #[test]
    fn the_forecaster_precision_is_f32_unless_set() {
        let with = |extra: &str| base("").replace("[keeper]", &format!("[forecaster]\n{extra}\n\n[keeper]"));
        let c = parse(&with(""), &[]).unwrap();
        assert_eq!(c.forecaster.unwrap().precision, kronos_forecast::fast::Precision::F32);
        let c = parse(&with("precision = \"bf16\""), &[]).unwrap();
        assert_eq!(c.forecaster.unwrap().precision, kronos_forecast::fast::Precision::Bf16);
        let e = field_err(&with("precision = \"f16\""));
        assert!(e.contains("forecaster.precision: precision must be f32 or bf16, got \"f16\""), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        assert!(field_err(&base("").replace("name = \"base\"", "name = \"basee\""))
            .contains("chain[0].name: 'basee' is not in the catalogue"));
        assert!(field_err(&base("").replace("name = \"base\"", "name = \"solana\"")).contains("not an EVM chain"));
        assert!(field_err(&base("").replace("\"http://127.0.0.1:8545\"", "\"ftp://x\""))
            .contains("chain[0].rpc[0]: must be http or https, not ftp (the rest"));
        assert!(field_err(&base("").replace("\"http://127.0.0.1:8545\"", "\"not a url\"")).contains("chain[0].rpc[0]"));
        // An RPC URL may carry an API key: a bad one is named by its field, never echoed.
        for bad in [
            "https://rpc.example:99999/v2/SuperSecretKey42",
            "rpc.example/v2/SuperSecretKey42",
            "wss://rpc.example/v2/SuperSecretKey42",
        ] {
            let e = field_err(&base("").replace("\"http://127.0.0.1:8545\"", &format!("\"{bad}\"")));
            assert!(e.contains("chain[0].rpc[0]: ") && !e.contains("SuperSecretKey42"), "{e}");
        }
        assert!(field_err(
            &base("").replace("rpc = [\"http://127.0.0.1:8545\", \"https://backup.example\"]", "rpc = []")
        )
        .contains("KRONOS_RPC_BASE"));
        assert!(field_err(
            &base("")
                .replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x5fbDB2315678afecb367f032d93F642f64180aa3")
        )
        .contains("chain[0].market"));
        assert!(field_err(&base("markets = [0]\n")).contains("chain[0].markets"));
        assert!(field_err(&base("max_fee_gwei = \"abc\"\n")).contains("chain[0].max_fee_gwei"));
        assert!(field_err(&base("max_fee_gwei = \"1\"\nmax_priority_fee_gwei = \"2\"\n"))
            .contains("max_priority_fee_gwei: is above"));
        assert!(field_err(&base("bump_percent = 5\n")).contains("bump_percent: 5 is below 10"));
        assert!(field_err(&base("pairs = { \"1\" = \"DOGE/USD\" }\n")).contains("chain[0].pairs.1"));
        assert!(field_err(&base("colour = 1\n")).contains("colour"));
        assert!(field_err(&base("").replace("signer = { env = \"K\" }", "signer = { keystore = \"k.json\" }"))
            .contains("password_env"));
        assert!(field_err(&base("").replace("signer = { env = \"K\" }", "signer = {}")).contains("keeper.signer"));
        assert!(field_err(&format!("{}\n{}", base(""), "[[chain]]\nname = \"base\"\nrpc = [\"http://x\"]\nmarket = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n")).contains("configured twice"));
        assert!(field_err(&base("").replace("[keeper]", "[keeper]\nlisten = \"nowhere\"")).contains("keeper.listen"));
        assert!(field_err(&base("").replace("[keeper]", "[keeper]\nstore = \"mysql://x\"")).contains("keeper.store"));
        let e = field_err("[keeper\n");
        assert!(e.starts_with("k.toml: line"), "{e}");
        let no_chain = base("").split("[[chain]]").next().unwrap().to_string();
        assert!(field_err(&no_chain).contains("no [[chain]]"));
        assert!(
            field_err("[keeper]\ncatalogue = \"/nope.toml\"\nsigner = { env = \"K\" }\n").contains("keeper.catalogue")
        );
    }

    #[test]
    fn the_signer_comes_from_env_and_errors_never_show_the_key() {
        let c = parse(&base(""), &[]).unwrap();
        let s = c.load_signer(&|k| (k == "K").then(|| KEY.to_string())).unwrap();
        assert_eq!(s.address().to_string().len(), 42);
        let e = c.load_signer(&|_| None).unwrap_err().to_string();
        assert!(e.contains("environment variable K is not set"), "{e}");
        let e = c.load_signer(&|_| Some("0xnothex".into())).unwrap_err().to_string();
        assert!(e.contains("does not hold a 32-byte hex private key") && !e.contains("nothex"), "{e}");
    }

    #[test]
    fn keystores_decrypt_with_the_password_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::thread_rng();
        let (_, name) = PrivateKeySigner::encrypt_keystore(
            dir.path(),
            &mut rng,
            alloy::hex::decode(&KEY[2..]).unwrap(),
            "pw",
            None,
        )
        .unwrap();
        let text = base("").replace(
            "signer = { env = \"K\" }",
            &format!("signer = {{ keystore = \"{}\", password_env = \"P\" }}", dir.path().join(&name).display()),
        );
        let c = parse(&text, &[]).unwrap();
        let s = c.load_signer(&|k| (k == "P").then(|| "pw".to_string())).unwrap();
        assert_eq!(s.to_bytes().to_vec(), alloy::hex::decode(&KEY[2..]).unwrap());
        let e = c.load_signer(&|k| (k == "P").then(|| "wrong".to_string())).unwrap_err().to_string();
        assert!(e.contains("cannot decrypt"), "{e}");
    }
}
