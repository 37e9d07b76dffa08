//! Which assets a text mentions:
//! - **cashtags** `$BTC`: a `$` then 2 to 10 letters (then letters or digits), any symbol (a cashtag is explicit);
//! - **tickers** from the configured list as whole upper-case words (`BTC`, not `btc` or `BTCUSDT`), and the
//!   configured names as whole words in any case (`bitcoin` → BTC);
//! - **contract addresses** `0x` + 40 hex digits, mapped to an asset when the address is a configured token contract
//!   (compared case-insensitively; unknown addresses are ignored).

use std::collections::{BTreeSet, HashMap};

/// The configured assets (config `[[asset]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetBook {
    /// Upper-case ticker → itself.
    tickers: BTreeSet<String>,
    /// Lower-case name → ticker.
    names: HashMap<String, String>,
    /// Lower-case `0x…` address → ticker.
    contracts: HashMap<String, String>,
}

impl AssetBook {
    pub fn new() -> AssetBook {
        AssetBook::default()
    }

    /// Adds an asset with its names and contract addresses (already validated).
    pub fn add(&mut self, ticker: &str, names: &[String], contracts: &[String]) {
        let t = ticker.to_ascii_uppercase();
        self.tickers.insert(t.clone());
        for n in names {
            self.names.insert(n.to_lowercase(), t.clone());
        }
        for c in contracts {
            self.contracts.insert(c.to_ascii_lowercase(), t.clone());
        }
    }

    pub fn tickers(&self) -> impl Iterator<Item = &String> {
        self.tickers.iter()
    }

    /// The assets `text` mentions, upper case, sorted, each once.
    pub fn extract(&self, text: &str) -> Vec<String> {
        let mut found = BTreeSet::new();
        for raw in text.split(|c: char| c.is_whitespace() || ",;:!?()[]{}\"'".contains(c)) {
            if raw.is_empty() {
                continue;
            }
            if let Some(tag) = raw.strip_prefix('$') {
                let tag = tag.trim_end_matches(['.', '…']);
                if cashtag(tag) {
                    found.insert(tag.to_ascii_uppercase());
                }
                continue;
            }
            if let Some(addr) = address(raw) {
                if let Some(t) = self.contracts.get(&addr) {
                    found.insert(t.clone());
                }
                continue;
            }
            let w = raw.trim_matches(|c: char| !c.is_alphanumeric());
            if w.is_empty() {
                continue;
            }
            if self.tickers.contains(w) {
                found.insert(w.to_string());
            } else if let Some(t) = self.names.get(&w.to_lowercase()) {
                found.insert(t.clone());
            }
        }
        found.into_iter().collect()
    }
}

fn cashtag(tag: &str) -> bool {
    let n = tag.chars().count();
    (2..=10).contains(&n)
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && tag.chars().all(|c| c.is_ascii_alphanumeric())
        && tag.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 2
}

/// A `0x` + 40 hex word (trailing punctuation trimmed), lower case.
fn address(word: &str) -> Option<String> {
    let w = word.trim_end_matches(|c: char| !c.is_ascii_hexdigit());
    let hex = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X"))?;
    (hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| format!("0x{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> AssetBook {
        let mut b = AssetBook::new();
        b.add("BTC", &["bitcoin".into()], &[]);
        b.add("ETH", &["ethereum".into(), "ether".into()], &[]);
        b.add("LINK", &["chainlink".into()], &["0x514910771AF9Ca656af840dff83E8264EcF986CA".into()]);
        b
    }

    #[test]
    fn cashtags_tickers_names_and_contracts() {
        let b = book();
        assert_eq!(b.extract("$btc and $SOL look strong; $100 is not a tag"), vec!["BTC", "SOL"]);
        assert_eq!(b.extract("BTC, ETH! but not btc or BTCUSDT"), vec!["BTC", "ETH"]);
        assert_eq!(b.extract("Bitcoin and ETHEREUM rally"), vec!["BTC", "ETH"]);
        assert_eq!(b.extract("token 0x514910771af9ca656af840dff83e8264ecf986ca."), vec!["LINK"]);
        assert!(b.extract("0x0000000000000000000000000000000000000001 unknown").is_empty());
        assert!(b.extract("LINKS are fun").is_empty());
        assert_eq!(b.extract("$ETH $eth ETH"), vec!["ETH"]);
    }
}
