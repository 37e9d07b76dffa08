//! `[[solana]]` sections: raw TOML → validated [`SolanaConfig`], every error naming its field
//! (`solana[0].program: not a base58 public key`). The signer key is read by [`SolanaConfig::load_keypair`] from a
//! Solana CLI keypair file or `KRONOS_SOLANA_KEY`; neither it nor an RPC URL (which may carry an API key) is ever
//! printed.

use std::path::PathBuf;

use anchor_lang::prelude::Pubkey;
use kronos_common::{Catalogue, Chain, ChainKind, Secret};
use serde::Deserialize;
use solana_keypair::Keypair;

/// The environment variable holding the signer when no `key_file` is given: a JSON array of 64 bytes or a base58
/// secret key.
pub const KEY_ENV: &str = "KRONOS_SOLANA_KEY";

/// One `[[solana]]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSolana {
    name: String,
    #[serde(default)]
    rpc: Vec<String>,
    program: String,
    markets: Option<Vec<String>>,
    creators: Option<Vec<String>>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    forecasts: bool,
    #[serde(default = "default_percentile")]
    cu_price_percentile: u64,
    #[serde(default = "default_cap")]
    max_cu_price_micro_lamports: u64,
    #[serde(default = "default_margin")]
    cu_margin_percent: u64,
    #[serde(default = "default_rebroadcast")]
    rebroadcast_s: u64,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    allow_other_program: bool,
}

fn default_percentile() -> u64 {
    75
}
fn default_cap() -> u64 {
    50_000
}
fn default_margin() -> u64 {
    15
}
fn default_rebroadcast() -> u64 {
    2
}

/// Where the Solana signer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A Solana CLI keypair file (a JSON array of 64 bytes).
    File(PathBuf),
    /// [`KEY_ENV`].
    Env,
}

/// One Solana cluster the keeper drives, validated. Its `Debug` names the RPC endpoints by host only (audit SOL
/// L6: a URL may carry an API key).
#[derive(Clone)]
pub struct SolanaConfig {
    /// The catalogue entry (`config/chains.toml [chains.<name>]`, kind `solana`).
    pub chain: Chain,
    /// RPC endpoints, tried in order (failover).
    pub rpc: Vec<url::Url>,
    /// The kronos-market program id.
    pub program: Pubkey,
    /// Market accounts to drive; `None`: every `Market` account of the program whose authority is one of
    /// `creators`.
    pub markets: Option<Vec<Pubkey>>,
    /// Without `markets`: the market authorities whose markets are driven; `None`: the keeper's own signer only
    /// (anyone can create markets, and the keeper pays each round's rent until it closes it: audit SOL H3).
    pub creators: Option<Vec<Pubkey>>,
    pub key: KeySource,
    /// Publish the forecaster's commit and reveal to the program's registry.
    pub forecasts: bool,
    /// Percentile (0–100) of `getRecentPrioritizationFees` over the market's writable accounts.
    pub cu_price_percentile: u8,
    /// Cap on the compute-unit price (micro-lamports per CU).
    pub max_cu_price_micro_lamports: u64,
    /// Compute units = simulated units × (100 + margin) / 100 (10..=20).
    pub cu_margin_percent: u8,
    /// Seconds between re-broadcasts of an unconfirmed transaction.
    pub rebroadcast_s: u64,
    /// A local node (loopback RPC only).
    pub local: bool,
    /// `program` is not the kronos-market program this keeper was built with (`allow_other_program = true`).
    pub other_program: bool,
}

impl std::fmt::Debug for SolanaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self
            .rpc
            .iter()
            .map(|u| {
                format!("{}://{}:{}", u.scheme(), u.host_str().unwrap_or("?"), u.port_or_known_default().unwrap_or(0))
            })
            .collect();
        f.debug_struct("SolanaConfig")
            .field("chain", &self.chain.key)
            .field("rpc", &hosts)
            .field("program", &self.program)
            .field("markets", &self.markets)
            .field("creators", &self.creators)
            .field("key", &self.key)
            .field("forecasts", &self.forecasts)
            .field("cu_price_percentile", &self.cu_price_percentile)
            .field("max_cu_price_micro_lamports", &self.max_cu_price_micro_lamports)
            .field("cu_margin_percent", &self.cu_margin_percent)
            .field("rebroadcast_s", &self.rebroadcast_s)
            .field("local", &self.local)
            .field("other_program", &self.other_program)
            .finish()
    }
}

impl SolanaConfig {
    /// The catalogue key (`solana`): the `chain` of every row, signal and metric of this cluster.
    pub fn key(&self) -> &str {
        &self.chain.key
    }

    /// Loads the signer; errors name the file or variable, never the key.
    pub fn load_keypair(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Keypair, String> {
        match &self.key {
            KeySource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("key_file: cannot read {}: {e}", path.display()))?;
                let text = Secret::new(text);
                keypair_from_json(text.expose()).ok_or_else(|| {
                    format!("key_file: {} is not a Solana keypair file (a JSON array of 64 bytes)", path.display())
                })
            }
            KeySource::Env => {
                let v = env(KEY_ENV).ok_or_else(|| format!("environment variable {KEY_ENV} is not set"))?;
                let v = Secret::new(v.trim());
                let s = v.expose();
                let kp =
                    if s.starts_with('[') { keypair_from_json(s) } else { Keypair::try_from_base58_string(s).ok() };
                kp.ok_or_else(|| format!("{KEY_ENV} holds neither a JSON array of 64 bytes nor a base58 secret key"))
            }
        }
    }
}

fn keypair_from_json(s: &str) -> Option<Keypair> {
    let bytes: Vec<u8> = serde_json::from_str(s.trim()).ok()?;
    if bytes.len() != 64 {
        return None;
    }
    Keypair::try_from(bytes.as_slice()).ok()
}

/// Parses a base58 public key, naming `field` on error.
pub(crate) fn pubkey(field: &str, s: &str) -> Result<Pubkey, (String, String)> {
    s.trim().parse::<Pubkey>().map_err(|_| (field.to_string(), format!("'{s}' is not a base58 public key")))
}

/// Validates the `[[solana]]` sections; `env` looks up `KRONOS_RPC_<NAME>` overrides. Errors are (field, message).
pub(crate) fn validate(
    raw: Vec<RawSolana>,
    catalogue: &Catalogue,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SolanaConfig>, (String, String)> {
    let mut out: Vec<SolanaConfig> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("solana[{i}].{f}");
        let chain = catalogue
            .chain(&s.name)
            .cloned()
            .ok_or_else(|| (at("name"), format!("'{}' is not in the catalogue", s.name)))?;
        if chain.kind != ChainKind::Solana {
            return Err((at("name"), format!("'{}' is not a Solana cluster in the catalogue", s.name)));
        }
        if out.iter().any(|o| o.chain.key == s.name) {
            return Err((at("name"), format!("'{}' is configured twice", s.name)));
        }
        let env_key = format!("KRONOS_RPC_{}", s.name.to_uppercase().replace('-', "_"));
        let rpc_raw: Vec<String> = match env(&env_key) {
            Some(v) => v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => s.rpc,
        };
        if rpc_raw.is_empty() {
            return Err((at("rpc"), format!("at least one RPC URL is needed (or set {env_key})")));
        }
        let mut rpc = Vec::new();
        for (j, u) in rpc_raw.iter().enumerate() {
            // Never echoed: hosted endpoints carry their API key in the URL.
            let url = url::Url::parse(u)
                .map_err(|e| (at(&format!("rpc[{j}]")), format!("is not a URL ({e}; the value is not shown)")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err((
                    at(&format!("rpc[{j}]")),
                    format!("must be http or https, not {} (the rest of the URL is not shown)", url.scheme()),
                ));
            }
            if s.local && !is_loopback(&url) {
                return Err((
                    at(&format!("rpc[{j}]")),
                    "local = true accepts only loopback RPC URLs (127.0.0.1, ::1, localhost)".into(),
                ));
            }
            rpc.push(url);
        }
        let program = pubkey(&at("program"), &s.program)?;
        // Pinned like an EVM market address (audit SOL L7): the instructions and accounts this keeper builds are the
        // kronos-market crate's, whose id is `declare_id!`'s (the IDL's and Anchor.toml's for every cluster). Another
        // program id is a different deployment — maybe another program altogether — driven only when asked for.
        if program != kronos_market::ID && !s.allow_other_program {
            return Err((
                at("program"),
                format!(
                    "{program} is not the kronos-market program this keeper was built for ({}); set \
                     allow_other_program = true to drive another deployment of it",
                    kronos_market::ID
                ),
            ));
        }
        let markets = match s.markets {
            None => None,
            Some(m) if m.is_empty() => {
                return Err((at("markets"), "is empty; omit the key to drive every market of the program".into()))
            }
            Some(m) => Some(
                m.iter()
                    .enumerate()
                    .map(|(j, k)| pubkey(&at(&format!("markets[{j}]")), k))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let creators = match s.creators {
            None => None,
            Some(_) if markets.is_some() => {
                return Err((
                    at("creators"),
                    "applies only without `markets` (which names the markets to drive)".into(),
                ))
            }
            Some(c) if c.is_empty() => {
                return Err((at("creators"), "is empty; omit the key to drive the keeper's own markets".into()))
            }
            Some(c) => Some(
                c.iter()
                    .enumerate()
                    .map(|(j, k)| pubkey(&at(&format!("creators[{j}]")), k))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if s.cu_price_percentile > 100 {
            return Err((at("cu_price_percentile"), format!("{} is above 100", s.cu_price_percentile)));
        }
        if !(10..=20).contains(&s.cu_margin_percent) {
            return Err((at("cu_margin_percent"), format!("{} is outside 10..=20", s.cu_margin_percent)));
        }
        if s.forecasts && program != kronos_market::ID {
            // The commitment hash binds the program id (`registry::commitment_hash` uses the crate's own).
            return Err((
                at("forecasts"),
                format!(
                    "needs the kronos-market program this keeper was built with ({}): commitments bind its id",
                    kronos_market::ID
                ),
            ));
        }
        if s.rebroadcast_s == 0 || s.rebroadcast_s > 60 {
            return Err((at("rebroadcast_s"), format!("{} is outside 1..=60", s.rebroadcast_s)));
        }
        let key = match s.key_file {
            Some(p) if p.as_os_str().is_empty() => return Err((at("key_file"), "is empty".into())),
            Some(p) => KeySource::File(p),
            None => KeySource::Env,
        };
        out.push(SolanaConfig {
            chain,
            rpc,
            program,
            markets,
            creators,
            key,
            forecasts: s.forecasts,
            cu_price_percentile: s.cu_price_percentile as u8,
            max_cu_price_micro_lamports: s.max_cu_price_micro_lamports,
            cu_margin_percent: s.cu_margin_percent as u8,
            rebroadcast_s: s.rebroadcast_s,
            local: s.local,
            other_program: program != kronos_market::ID,
        });
    }
    Ok(out)
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const PROGRAM: &str = "8p8BNBjueeyCJ2QZgeWGh67FujB5sziemG2NpV2SYxA9";

    fn text(extra: &str) -> String {
        let cat = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/chains.toml");
        format!(
            "[keeper]\ncatalogue = \"{cat}\"\nsigner = {{ env = \"K\" }}\n\n[[solana]]\nname = \"solana\"\nrpc = [\"http://127.0.0.1:8899\", \"https://api.example/?api-key=SuperSecretKey42\"]\nprogram = \"{PROGRAM}\"\n{extra}"
        )
    }

    fn parse(t: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Config::parse(t, "k.toml", &move |k| env.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()))
    }

    fn err(t: &str) -> String {
        parse(t, &[]).unwrap_err().to_string()
    }

    #[test]
    fn a_solana_only_config_gets_the_defaults() {
        let c = parse(&text(""), &[]).unwrap();
        assert!(c.chains.is_empty());
        let s = &c.solana[0];
        assert_eq!(s.key(), "solana");
        assert_eq!(s.program.to_string(), PROGRAM);
        assert_eq!(s.rpc.len(), 2);
        assert_eq!(s.markets, None);
        assert_eq!(s.creators, None, "the keeper's own signer");
        assert_eq!(s.key, super::KeySource::Env);
        assert_eq!(
            (s.cu_price_percentile, s.max_cu_price_micro_lamports, s.cu_margin_percent, s.rebroadcast_s),
            (75, 50_000, 15, 2)
        );
        assert!(!s.forecasts && !s.local);
        let m = "HEvSKofvBgfaexv23kMabbYqxasxU3mQ4ibBMEmJWHny";
        let c = parse(
            &text(&format!("markets = [\"{m}\"]\nkey_file = \"id.json\"\nforecasts = false\ncu_price_percentile = 50\nmax_cu_price_micro_lamports = 7\ncu_margin_percent = 20\nrebroadcast_s = 3\n")),
            &[],
        )
        .unwrap();
        let s = &c.solana[0];
        assert_eq!(s.markets.as_ref().unwrap()[0].to_string(), m);
        assert_eq!(s.key, super::KeySource::File("id.json".into()));
        assert_eq!(
            (s.cu_price_percentile, s.max_cu_price_micro_lamports, s.cu_margin_percent, s.rebroadcast_s),
            (50, 7, 20, 3)
        );
        assert!(!s.forecasts);
        // Forecasts need a forecaster (and the program the keeper was built with: the commitment binds its id).
        let ours = text("forecasts = true\n").replace(PROGRAM, &kronos_market::ID.to_string());
        let e = err(&ours);
        assert!(e.contains("solana[0].forecasts: publishing forecasts needs an enabled [forecaster] section"), "{e}");
        let c = parse(&format!("[forecaster]\nsamples = 4\n\n{ours}"), &[]).unwrap();
        assert!(c.solana[0].forecasts);
        let c = parse(&text(""), &[("KRONOS_RPC_SOLANA", "http://10.0.0.1:1")]).unwrap();
        assert_eq!(c.solana[0].rpc.len(), 1);
    }

    /// Audit SOL L6: `Debug` shows the RPC endpoints by host only; L7: another program id than the kronos-market
    /// program the keeper was built for is refused unless asked for.
    #[test]
    fn debug_shows_hosts_only_and_another_program_is_refused_unless_allowed() {
        let c = parse(&text(""), &[]).unwrap();
        let d = format!("{:?} {:#?} {c:?}", c.solana[0], c.solana[0]);
        assert!(!d.contains("SuperSecretKey42") && d.contains("https://api.example:443"), "{d}");
        let other = "HEvSKofvBgfaexv23kMabbYqxasxU3mQ4ibBMEmJWHny";
        let e = err(&text("").replace(PROGRAM, other));
        assert!(e.contains(&format!("solana[0].program: {other} is not the kronos-market program")), "{e}");
        let c = parse(&text("allow_other_program = true\n").replace(PROGRAM, other), &[]).unwrap();
        assert!(c.solana[0].other_program);
        assert!(!parse(&text(""), &[]).unwrap().solana[0].other_program);
    }

    #[test]
    fn bad_values_name_their_field_and_never_echo_a_url() {
        let e = err(&text("").replace(PROGRAM, "not-a-key"));
        assert!(e.contains("solana[0].program: 'not-a-key' is not a base58 public key"), "{e}");
        assert!(err(&text("markets = [\"0OIl\"]\n")).contains("solana[0].markets[0]"));
        assert!(err(&text("markets = []\n")).contains("solana[0].markets: is empty"));
        assert!(err(&text("creators = []\n")).contains("solana[0].creators: is empty"));
        assert!(err(&text("creators = [\"0OIl\"]\n")).contains("solana[0].creators[0]"));
        let m = "HEvSKofvBgfaexv23kMabbYqxasxU3mQ4ibBMEmJWHny";
        assert!(err(&text(&format!("markets = [\"{m}\"]\ncreators = [\"{m}\"]\n")))
            .contains("solana[0].creators: applies only without `markets`"));
        let c = parse(&text(&format!("creators = [\"{m}\"]\n")), &[]).unwrap();
        assert_eq!(c.solana[0].creators.as_ref().unwrap()[0].to_string(), m);
        assert!(err(&text("cu_price_percentile = 101\n")).contains("solana[0].cu_price_percentile: 101 is above 100"));
        assert!(err(&text("cu_margin_percent = 9\n")).contains("solana[0].cu_margin_percent: 9 is outside 10..=20"));
        assert!(err(&text("cu_margin_percent = 21\n")).contains("cu_margin_percent"));
        assert!(err(&text("rebroadcast_s = 0\n")).contains("solana[0].rebroadcast_s"));
        assert!(err(&text("colour = 1\n")).contains("colour"));
        assert!(err(&text("").replace("name = \"solana\"", "name = \"base\""))
            .contains("solana[0].name: 'base' is not a Solana cluster"));
        assert!(err(&text("").replace("name = \"solana\"", "name = \"solanaa\""))
            .contains("solana[0].name: 'solanaa' is not in the catalogue"));
        assert!(err(&format!(
            "{}\n[[solana]]\nname = \"solana\"\nrpc = [\"http://x\"]\nprogram = \"{PROGRAM}\"\n",
            text("")
        ))
        .contains("solana[1].name: 'solana' is configured twice"));
        let e = err(&text("").replace("http://127.0.0.1:8899", "ftp://h/SuperSecretKey42"));
        assert!(e.contains("solana[0].rpc[0]: must be http or https") && !e.contains("SuperSecretKey42"), "{e}");
        let e = err(&text("local = true\n"));
        assert!(
            e.contains("solana[0].rpc[1]: local = true accepts only loopback") && !e.contains("SuperSecretKey42"),
            "{e}"
        );
        let e = err(&text("").replace(
            "rpc = [\"http://127.0.0.1:8899\", \"https://api.example/?api-key=SuperSecretKey42\"]",
            "rpc = []",
        ));
        assert!(e.contains("solana[0].rpc: at least one RPC URL is needed (or set KRONOS_RPC_SOLANA)"), "{e}");
        let no_section = text("").split("[[solana]]").next().unwrap().to_string();
        assert!(err(&no_section).contains("no [[chain]] (nor [[solana]])"));
    }

    #[test]
    fn the_signer_comes_from_a_keypair_file_or_the_environment_and_is_never_shown() {
        let kp = solana_keypair::Keypair::new();
        let json = serde_json::to_string(&kp.to_bytes().to_vec()).unwrap();
        let c = parse(&text(""), &[]).unwrap();
        let s = &c.solana[0];
        use solana_signer::Signer;
        let got = s.load_keypair(&|k| (k == super::KEY_ENV).then(|| json.clone())).unwrap();
        assert_eq!(got.pubkey(), kp.pubkey());
        let b58 = kp.to_base58_string();
        let got = s.load_keypair(&|k| (k == super::KEY_ENV).then(|| b58.clone())).unwrap();
        assert_eq!(got.pubkey(), kp.pubkey());
        let e = s.load_keypair(&|_| None).unwrap_err();
        assert!(e.contains("KRONOS_SOLANA_KEY is not set"), "{e}");
        let e = s.load_keypair(&|_| Some("[1,2,3]".into())).unwrap_err();
        assert!(e.contains("neither a JSON array of 64 bytes") && !e.contains("[1,2,3]"), "{e}");
        let e = s.load_keypair(&|_| Some(b58[..40].to_string())).unwrap_err();
        assert!(!e.contains(&b58[..40]), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        std::fs::write(&path, &json).unwrap();
        let c = parse(&text(&format!("key_file = \"{}\"\n", path.display())), &[]).unwrap();
        assert_eq!(c.solana[0].load_keypair(&|_| None).unwrap().pubkey(), kp.pubkey());
        std::fs::write(&path, "[0, 1]").unwrap();
        let e = c.solana[0].load_keypair(&|_| None).unwrap_err();
        assert!(e.contains("is not a Solana keypair file") && !e.contains("[0, 1]"), "{e}");
    }
}
