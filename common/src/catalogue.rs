//! The chain catalogue (`config/chains.toml`): chain ids, fee style, block time, confirmations, Chainlink feed and
//! sequencer-uptime addresses, each with its source.
//!
//! Parsing rejects unknown keys; validation names the offending field (`chains.base.feeds."BTC/USD".address: ...`).
//! An empty address means "not confirmed by any source": it is allowed in the file, and a market on it is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// The catalogue file, relative to the repository root.
pub const DEFAULT_PATH: &str = "config/chains.toml";

/// A validation or parse error, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Field { file: String, field: String, message: String },
}

/// What kind of chain an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    Evm,
    Solana,
}

/// How transactions pay for gas on an EVM chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeeModel {
    /// EIP-1559 (type-2) transactions.
    Eip1559,
    /// Legacy gas-price transactions.
    Legacy,
}

impl FeeModel {
    /// The form the catalogue and the configuration write (the serde form): `eip1559`, `legacy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FeeModel::Eip1559 => "eip1559",
            FeeModel::Legacy => "legacy",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    #[serde(default)]
    pub catalogue_source: String,
    #[serde(default)]
    pub svr_source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    meta: Meta,
    chains: BTreeMap<String, RawChain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    name: String,
    kind: ChainKind,
    chain_id: Option<u64>,
    cluster: Option<String>,
    fee_model: Option<FeeModel>,
    block_time_ms: u64,
    confirmations: u64,
    native_symbol: String,
    /// The block explorer's base URL (`https://etherscan.io`): transactions at `<explorer>/tx/<hash>`.
    explorer: Option<String>,
    catalogue_file: String,
    chainlink_store_program: Option<String>,
    #[serde(default)]
    feeds: BTreeMap<String, RawFeed>,
    sequencer: Option<RawSequencer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    description: String,
    address: String,
    decimals: Option<u8>,
    heartbeat_s: Option<u32>,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSequencer {
    address: String,
    source: String,
}

/// A feed address on its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FeedAddress {
    Evm(Address),
    Solana(String),
}

impl fmt::Display for FeedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedAddress::Evm(a) => write!(f, "{a}"),
            FeedAddress::Solana(s) => f.write_str(s),
        }
    }
}

/// A Chainlink data feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feed {
    /// The pair key, e.g. `BTC/USD`.
    pub pair: String,
    /// What the feed's `description()` returns, e.g. `BTC / USD`.
    pub description: String,
    /// The proxy (EVM) or feed account (Solana); `None` when no source confirms one.
    pub address: Option<FeedAddress>,
    /// The feed's `decimals()`.
    pub decimals: Option<u8>,
    /// The feed's heartbeat, where a source gives it.
    pub heartbeat_s: Option<u32>,
    /// Where the address comes from.
    pub source: String,
}

impl Feed {
    /// The EVM proxy address, if any.
    pub fn evm_address(&self) -> Option<Address> {
        match &self.address {
            Some(FeedAddress::Evm(a)) => Some(*a),
            _ => None,
        }
    }

    /// Checks what a live feed reports against this entry; the error says what differs.
    pub fn check_live(&self, description: &str, decimals: u8) -> Result<(), String> {
        if normalize_pair(description) != normalize_pair(&self.description) {
            return Err(format!(
                "feed {} reports description '{}', the catalogue expects '{}'",
                self.pair, description, self.description
            ));
        }
        if let Some(d) = self.decimals {
            if d != decimals {
                return Err(format!("feed {} reports {} decimals, the catalogue expects {}", self.pair, decimals, d));
            }
        }
        Ok(())
    }
}

/// An L2 sequencer-uptime feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SequencerFeed {
    pub address: Address,
    pub source: String,
}

/// One chain of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// The catalogue key, e.g. `base`.
    pub key: String,
    pub name: String,
    pub kind: ChainKind,
    /// EVM chain id.
    pub chain_id: Option<u64>,
    /// Solana cluster.
    pub cluster: Option<String>,
    pub fee_model: Option<FeeModel>,
    pub block_time_ms: u64,
    pub confirmations: u64,
    pub native_symbol: String,
    /// The block explorer's base URL, `https://` and no trailing slash (the dApp links each settlement's
    /// transaction to `<explorer>/tx/<hash>`).
    pub explorer: Option<String>,
    pub catalogue_file: String,
    pub chainlink_store_program: Option<String>,
    pub feeds: BTreeMap<String, Feed>,
    pub sequencer: Option<SequencerFeed>,
}

/// The validated catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    pub meta: Meta,
    pub chains: BTreeMap<String, Chain>,
}

/// `BTC / USD` and `btc/usd` both become `BTC/USD`.
pub fn normalize_pair(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase()
}

/// A Solana account: base58 that decodes to exactly 32 bytes (a typo'd or truncated address fails here, not on chain).
fn is_base58(s: &str) -> bool {
    bs58::decode(s).into_vec().is_ok_and(|b| b.len() == 32)
}

/// Parses an EVM address; mixed-case input must carry a valid EIP-55 checksum.
pub fn parse_evm_address(s: &str) -> Result<Address, String> {
    let t = s.trim();
    if !t.starts_with("0x") || t.len() != 42 {
        return Err(format!("'{s}' is not a 0x-prefixed 20-byte hex address"));
    }
    let body = &t[2..];
    let mixed = body.chars().any(|c| c.is_ascii_lowercase()) && body.chars().any(|c| c.is_ascii_uppercase());
    if mixed {
        Address::parse_checksummed(t, None).map_err(|_| format!("'{s}' fails its EIP-55 checksum"))
    } else {
        Address::from_str(t).map_err(|e| format!("'{s}' is not a hex address: {e}"))
    }
}

impl Catalogue {
    /// Reads and validates a catalogue file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CatalogueError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CatalogueError::Read { file: file.clone(), message: e.to_string() })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates catalogue text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, CatalogueError> {
        let raw: RawCatalogue = toml::from_str(text).map_err(|e| CatalogueError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim().to_string(),
        })?;
        let err = |field: String, message: String| CatalogueError::Field { file: file.to_string(), field, message };
        if raw.chains.is_empty() {
            return Err(err("chains".into(), "no chain is listed".into()));
        }
        let mut chains = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for (key, c) in raw.chains {
            let at = |f: &str| format!("chains.{key}.{f}");
            if key.is_empty() || !key.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') {
                return Err(err(format!("chains.{key}"), "chain keys are lowercase letters, digits and '-'".into()));
            }
            if c.name.trim().is_empty() {
                return Err(err(at("name"), "must not be empty".into()));
            }
            if c.block_time_ms == 0 {
                return Err(err(at("block_time_ms"), "must be above 0".into()));
            }
            if c.confirmations == 0 {
                return Err(err(at("confirmations"), "must be at least 1".into()));
            }
            if c.native_symbol.trim().is_empty() {
                return Err(err(at("native_symbol"), "must not be empty".into()));
            }
            if let Some(x) = &c.explorer {
                let ok = x.starts_with("https://")
                    && !x.ends_with('/')
                    && url::Url::parse(x).is_ok_and(|u| u.query().is_none());
                if !ok {
                    return Err(err(at("explorer"), format!("'{x}' must be an https:// URL without a trailing '/'")));
                }
            }
            match c.kind {
                ChainKind::Evm => {
                    let id = c.chain_id.ok_or_else(|| err(at("chain_id"), "is required for an EVM chain".into()))?;
                    if id == 0 {
                        return Err(err(at("chain_id"), "must be above 0".into()));
                    }
                    if !ids.insert(id) {
                        return Err(err(at("chain_id"), format!("{id} is used by another chain")));
                    }
                    if c.fee_model.is_none() {
                        return Err(err(at("fee_model"), "is required for an EVM chain (eip1559 or legacy)".into()));
                    }
                    if c.cluster.is_some() {
                        return Err(err(at("cluster"), "applies to Solana chains only".into()));
                    }
                    if c.chainlink_store_program.is_some() {
                        return Err(err(at("chainlink_store_program"), "applies to Solana chains only".into()));
                    }
                }
                ChainKind::Solana => {
                    if c.chain_id.is_some() {
                        return Err(err(at("chain_id"), "applies to EVM chains only".into()));
                    }
                    if c.fee_model.is_some() {
                        return Err(err(at("fee_model"), "applies to EVM chains only".into()));
                    }
                    if c.cluster.as_deref().map(str::trim).unwrap_or("").is_empty() {
                        return Err(err(at("cluster"), "is required for a Solana chain".into()));
                    }
                    if let Some(p) = &c.chainlink_store_program {
                        if !is_base58(p) {
                            return Err(err(at("chainlink_store_program"), format!("'{p}' is not a base58 account")));
                        }
                    }
                    if c.sequencer.is_some() {
                        return Err(err(at("sequencer"), "applies to EVM L2 chains only".into()));
                    }
                }
            }
            let mut feeds = BTreeMap::new();
            for (pair, f) in c.feeds {
                let fat = |x: &str| format!("chains.{key}.feeds.\"{pair}\".{x}");
                let norm = normalize_pair(&pair);
                if norm != pair || pair.split('/').count() != 2 {
                    return Err(err(
                        format!("chains.{key}.feeds.\"{pair}\""),
                        "feed keys are BASE/QUOTE in upper case, e.g. \"BTC/USD\"".into(),
                    ));
                }
                if normalize_pair(&f.description) != pair {
                    return Err(err(
                        fat("description"),
                        format!("'{}' does not describe the pair {pair}", f.description),
                    ));
                }
                if f.source.trim().is_empty() {
                    return Err(err(fat("source"), "every entry names its source".into()));
                }
                let address = if f.address.trim().is_empty() {
                    None
                } else {
                    Some(match c.kind {
                        ChainKind::Evm => {
                            FeedAddress::Evm(parse_evm_address(&f.address).map_err(|m| err(fat("address"), m))?)
                        }
                        ChainKind::Solana => {
                            if !is_base58(f.address.trim()) {
                                return Err(err(fat("address"), format!("'{}' is not a base58 account", f.address)));
                            }
                            FeedAddress::Solana(f.address.trim().to_string())
                        }
                    })
                };
                if let Some(d) = f.decimals {
                    if d > 36 {
                        return Err(err(fat("decimals"), format!("{d} is more than 36")));
                    }
                } else if address.is_some() {
                    return Err(err(fat("decimals"), "is required when an address is given".into()));
                }
                if f.heartbeat_s == Some(0) {
                    return Err(err(fat("heartbeat_s"), "must be above 0".into()));
                }
                feeds.insert(
                    pair.clone(),
                    Feed {
                        pair,
                        description: f.description,
                        address,
                        decimals: f.decimals,
                        heartbeat_s: f.heartbeat_s,
                        source: f.source,
                    },
                );
            }
            let sequencer = match c.sequencer {
                None => None,
                Some(s) => {
                    let address = parse_evm_address(&s.address).map_err(|m| err(at("sequencer.address"), m))?;
                    if s.source.trim().is_empty() {
                        return Err(err(at("sequencer.source"), "every entry names its source".into()));
                    }
                    Some(SequencerFeed { address, source: s.source })
                }
            };
            chains.insert(
                key.clone(),
                Chain {
                    key,
                    name: c.name,
                    kind: c.kind,
                    chain_id: c.chain_id,
                    cluster: c.cluster,
                    fee_model: c.fee_model,
                    block_time_ms: c.block_time_ms,
                    confirmations: c.confirmations,
                    native_symbol: c.native_symbol,
                    explorer: c.explorer,
                    catalogue_file: c.catalogue_file,
                    chainlink_store_program: c.chainlink_store_program,
                    feeds,
                    sequencer,
                },
            );
        }
        Ok(Catalogue { meta: raw.meta, chains })
    }

    /// A chain by catalogue key.
    pub fn chain(&self, key: &str) -> Option<&Chain> {
        self.chains.get(key)
    }

    /// The EVM chain with this chain id.
    pub fn chain_by_id(&self, chain_id: u64) -> Option<&Chain> {
        self.chains.values().find(|c| c.chain_id == Some(chain_id))
    }

    /// EVM chains, in key order.
    pub fn evm_chains(&self) -> impl Iterator<Item = &Chain> {
        self.chains.values().filter(|c| c.kind == ChainKind::Evm)
    }

    /// The table `kronos catalogue` prints: a header, then one line per chain in key order (chain id or Solana
    /// cluster, block time, confirmations, fee model, whether it has a sequencer-uptime feed, the BTC/USD and
    /// ETH/USD feed addresses or `(unconfirmed)`).
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "{:<10} {:<18} {:>8} {:>8} {:>6} {:<9} {:<8} {:<44} {:<44}\n",
            "key", "name", "chain id", "block ms", "conf", "fees", "seq feed", "BTC/USD", "ETH/USD"
        );
        for c in self.chains.values() {
            let feed = |p: &str| {
                c.feeds
                    .get(p)
                    .and_then(|f| f.address.as_ref())
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "(unconfirmed)".into())
            };
            out.push_str(&format!(
                "{:<10} {:<18} {:>8} {:>8} {:>6} {:<9} {:<8} {:<44} {:<44}\n",
                c.key,
                c.name,
                c.chain_id.map(|i| i.to_string()).unwrap_or_else(|| c.cluster.clone().unwrap_or_default()),
                c.block_time_ms,
                c.confirmations,
                c.fee_model.map(|f| f.as_str()).unwrap_or("-"),
                if c.sequencer.is_some() { "yes" } else { "-" },
                feed("BTC/USD"),
                feed("ETH/USD"),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../../config/chains.toml");

    #[test]
    fn the_table_has_one_line_per_chain() {
        let c = Catalogue::parse(REAL, "config/chains.toml").unwrap();
        let table = c.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 1 + c.chains.len());
        assert_eq!(
            lines[0].trim_end(),
            "key        name               chain id block ms   conf fees      seq feed BTC/USD                                      ETH/USD"
        );
        let base = c.chain("base").unwrap();
        let btc = base.feeds["BTC/USD"].evm_address().unwrap();
        let eth = base.feeds["ETH/USD"].evm_address().unwrap();
        let want = format!(
            "base       Base                   8453     {:>4}     {:>2} eip1559   yes      {btc}   {eth}  ",
            base.block_time_ms, base.confirmations
        );
        assert!(lines.contains(&want.as_str()), "{table}");
        let bnb = lines.iter().find(|l| l.starts_with("bnb ")).unwrap();
        assert!(bnb.contains(" legacy    -        0x"), "{bnb}");
        let sol = c.chain("solana").unwrap();
        let sol_line = lines.iter().find(|l| l.starts_with("solana ")).unwrap();
        assert!(sol_line.contains(&format!(" {:>8} ", sol.cluster.as_deref().unwrap())), "{sol_line}");
        assert!(sol_line.contains(" Cv4T27XbjVoKUYwP72NQQanvZeA7W4YF9L4EnYT9kx5o "), "{sol_line}");
        assert!(sol_line.trim_end().ends_with(" (unconfirmed)"), "ETH/USD has no Solana address: {sol_line}");
        let keys: Vec<&str> = lines[1..].iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(keys, c.chains.keys().map(String::as_str).collect::<Vec<_>>(), "in key order");
    }

    #[test]
    fn fee_models_print_as_the_catalogue_writes_them() {
        for m in [FeeModel::Eip1559, FeeModel::Legacy] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    #[test]
    fn the_shipped_catalogue_is_valid_and_complete() {
        let c = Catalogue::parse(REAL, "config/chains.toml").unwrap();
        let ids: Vec<(String, u64)> = c.evm_chains().map(|c| (c.key.clone(), c.chain_id.unwrap())).collect();
        for (k, id) in [
            ("ethereum", 1),
            ("base", 8453),
            ("arbitrum", 42161),
            ("optimism", 10),
            ("polygon", 137),
            ("bnb", 56),
            ("avalanche", 43114),
        ] {
            assert!(ids.contains(&(k.to_string(), id)), "{k} missing");
            let chain = c.chain(k).unwrap();
            for pair in ["BTC/USD", "ETH/USD"] {
                let f = &chain.feeds[pair];
                assert!(f.evm_address().is_some(), "{k} {pair} has no address");
                assert_eq!(f.decimals, Some(8));
            }
        }
        assert_eq!(c.evm_chains().count(), 7);
        for l2 in ["base", "arbitrum", "optimism"] {
            assert!(c.chain(l2).unwrap().sequencer.is_some(), "{l2} needs its sequencer feed");
        }
        for l1 in ["ethereum", "polygon", "bnb", "avalanche"] {
            assert!(c.chain(l1).unwrap().sequencer.is_none());
        }
        assert_eq!(c.chain("bnb").unwrap().fee_model, Some(FeeModel::Legacy));
        let sol = c.chain("solana").unwrap();
        assert_eq!(sol.kind, ChainKind::Solana);
        // BTC/USD has a sourced mainnet transmissions account; ETH/USD has none in Chainlink's current directory.
        assert_eq!(
            sol.feeds["BTC/USD"].address,
            Some(FeedAddress::Solana("Cv4T27XbjVoKUYwP72NQQanvZeA7W4YF9L4EnYT9kx5o".into()))
        );
        assert_eq!(sol.feeds["BTC/USD"].decimals, Some(8));
        assert!(sol.feeds["ETH/USD"].address.is_none(), "an unconfirmed Solana feed stays empty");
        assert_eq!(c.chain_by_id(8453).unwrap().key, "base");
        assert_eq!(c.chain("optimism").unwrap().explorer.as_deref(), Some("https://optimistic.etherscan.io"));
        assert!(c.chains.values().all(|c| c.explorer.is_some()), "every chain names its explorer");
    }

    #[test]
    fn an_explorer_is_an_https_url_without_a_trailing_slash() {
        for bad in ["http://scan.example", "https://scan.example/", "scan.example"] {
            let text = minimal("")
                .replace("native_symbol = \"ETH\"\n", &format!("native_symbol = \"ETH\"\nexplorer = \"{bad}\"\n"));
            assert!(field_err(&text).contains("chains.dev.explorer"), "{bad}");
        }
        let good = minimal("")
            .replace("native_symbol = \"ETH\"\n", "native_symbol = \"ETH\"\nexplorer = \"https://scan.example\"\n");
        let c = Catalogue::parse(&good, "t").unwrap();
        assert_eq!(c.chain("dev").unwrap().explorer.as_deref(), Some("https://scan.example"));
    }

    #[test]
    fn live_check_compares_description_and_decimals() {
        let c = Catalogue::parse(REAL, "x").unwrap();
        let f = &c.chain("ethereum").unwrap().feeds["BTC/USD"];
        assert!(f.check_live("BTC / USD", 8).is_ok());
        assert!(f.check_live("BTC/USD", 8).is_ok());
        assert!(f.check_live("ETH / USD", 8).unwrap_err().contains("description"));
        assert!(f.check_live("BTC / USD", 18).unwrap_err().contains("18 decimals"));
    }

    fn minimal(extra: &str) -> String {
        format!(
            "[chains.dev]\nname = \"Dev\"\nkind = \"evm\"\nchain_id = 31337\nfee_model = \"eip1559\"\n\
             block_time_ms = 1000\nconfirmations = 1\nnative_symbol = \"ETH\"\ncatalogue_file = \"x.json\"\n{extra}"
        )
    }

    fn field_err(text: &str) -> String {
        Catalogue::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(Catalogue::parse(&minimal(""), "t.toml").is_ok());
        let e = field_err(&minimal(
            "[chains.dev.feeds.\"BTC/USD\"]\ndescription=\"BTC / USD\"\naddress=\"0x123\"\ndecimals=8\nsource=\"s\"\n",
        ));
        assert!(e.contains("chains.dev.feeds.\"BTC/USD\".address") && e.contains("0x123"), "{e}");
        // A broken EIP-55 checksum (one letter's case flipped).
        let e = field_err(&minimal("[chains.dev.feeds.\"BTC/USD\"]\ndescription=\"BTC / USD\"\naddress=\"0xf4030086522a5bEEa4988F8cA5B36dbC97BeE88c\"\ndecimals=8\nsource=\"s\"\n"));
        assert!(e.contains("checksum"), "{e}");
        let e = field_err(&minimal(
            "[chains.dev.feeds.\"BTC/USD\"]\ndescription=\"ETH / USD\"\naddress=\"\"\nsource=\"s\"\n",
        ));
        assert!(e.contains("description") && e.contains("ETH / USD"), "{e}");
        let e = field_err(&minimal("[chains.dev.feeds.\"BTC/USD\"]\ndescription=\"BTC / USD\"\naddress=\"0xF4030086522a5bEEa4988F8cA5B36dbC97BeE88c\"\nsource=\"s\"\n"));
        assert!(e.contains(".decimals") && e.contains("required"), "{e}");
        let e = field_err(&minimal(
            "[chains.dev.feeds.\"BTC/USD\"]\ndescription=\"BTC / USD\"\naddress=\"\"\nsource=\" \"\n",
        ));
        assert!(e.contains(".source"), "{e}");
        let e = field_err(&minimal("colour = \"red\"\n"));
        assert!(e.contains("colour"), "{e}");
        let e = field_err(&minimal("").replace("chain_id = 31337\n", ""));
        assert!(e.contains("chains.dev.chain_id") && e.contains("required"), "{e}");
        let e = field_err(&minimal("").replace("fee_model = \"eip1559\"\n", "fee_model = \"cheap\"\n"));
        assert!(e.contains("cheap") || e.contains("fee_model"), "{e}");
        let e = field_err(&(minimal("") + &minimal("").replace("[chains.dev]", "[chains.dev2]")));
        assert!(e.contains("31337 is used by another chain"), "{e}");
        let e = field_err(&minimal("").replace("confirmations = 1", "confirmations = 0"));
        assert!(e.contains("chains.dev.confirmations"), "{e}");
        let e = field_err("[chains]\n");
        assert!(e.contains("no chain"), "{e}");
        let e = field_err("this is not toml");
        assert!(e.starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn solana_feed_addresses_must_decode_to_32_bytes() {
        let sol = |address: &str| {
            format!(
                "[chains.sol]\nname = \"Solana\"\nkind = \"solana\"\ncluster = \"mainnet-beta\"\nblock_time_ms = 400\n\
                 confirmations = 32\nnative_symbol = \"SOL\"\ncatalogue_file = \"solana.json\"\n\
                 [chains.sol.feeds.\"BTC/USD\"]\ndescription = \"BTC / USD\"\naddress = \"{address}\"\ndecimals = 8\n\
                 source = \"s\"\n"
            )
        };
        assert!(Catalogue::parse(&sol("Cv4T27XbjVoKUYwP72NQQanvZeA7W4YF9L4EnYT9kx5o"), "t.toml").is_ok());
        // Base58 characters only, but truncated: fewer than 32 bytes, not an account.
        for bad in ["Cv4T27XbjVoKUYwP72NQQanvZeA7W4YF9L4EnY", "0OIl-not-base58-at-all-0000000000000000", "11"] {
            let e = field_err(&sol(bad));
            assert!(e.contains("chains.sol.feeds.\"BTC/USD\".address") && e.contains("not a base58 account"), "{e}");
        }
    }

    #[test]
    fn load_reports_a_missing_file() {
        let e = Catalogue::load("/nonexistent/chains.toml").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/chains.toml") && e.contains("cannot read"), "{e}");
    }
}
