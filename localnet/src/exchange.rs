//! `kronos exchange serve`: the local exchange (`offchain/binance-mock`, the Binance USDⓈ-M Futures wire format) as a
//! program, so the copy-trader can be tried without an exchange account or the internet.
//!
//! It replays real hourly BTC/USD candles (`data/btcusd-1h.csv`) into the BTCUSDT mark price — each candle's open,
//! its two extremes and its close, as the demo replays them into the Chainlink feeds — and runs a simulated lead
//! account that trades on them ([`kronos_binance_mock::lead::SimLead`]: long after a candle that closed above the
//! previous close, short after one below). A copy-trader with `network = "local"` follows that lead in paper mode
//! with no keys at all. The demo uses the same [`LocalExchange`] on its first chain's replayed candles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kronos_binance_mock::lead::{LeadTrade, SimLead};
use kronos_binance_mock::MockExchange;
use kronos_common::{Decimal, Rounding};
use kronos_copytrade::config::{
    LOCAL_EXCHANGE, LOCAL_FOLLOWER_API_KEY, LOCAL_FOLLOWER_API_SECRET, LOCAL_LEAD_API_KEY, LOCAL_LEAD_API_SECRET,
};
use kronos_forecast::Candle;
use parking_lot::Mutex;

/// The symbol the simulated lead trades.
pub const LEAD_SYMBOL: &str = "BTCUSDT";
/// The simulated lead's USDT wallet.
const LEAD_WALLET: &str = "1000000";
/// The follower account's USDT wallet (for `mode = "live"` against the local exchange).
const FOLLOWER_WALLET: &str = "10000";

#[derive(Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ServeArgs {
    /// Address to listen on (REST under /fapi, user-data streams under /ws). A copy-trader's `network = "local"`
    /// looks here.
    #[cfg_attr(feature = "clap", arg(long, default_value = LOCAL_EXCHANGE))]
    pub listen: String,
    /// Wall seconds per replayed hourly candle (its open, two extremes and close each hold a quarter of it).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 20.0))]
    pub candle_seconds: f64,
    /// Index of the first replayed candle in the candles file (default: the stretch the demo's first chain replays).
    #[cfg_attr(feature = "clap", arg(long))]
    pub from: Option<usize>,
    /// The simulated lead's position size in BTC.
    #[cfg_attr(feature = "clap", arg(long, default_value = "1"))]
    pub lead_size: String,
    /// A file with the simulated lead's API key on its first line and its secret on the second, instead of the
    /// published local keys.
    #[cfg_attr(feature = "clap", arg(long))]
    pub lead_key_file: Option<PathBuf>,
    /// The same for the follower account (for `mode = "live"` against this exchange).
    #[cfg_attr(feature = "clap", arg(long))]
    pub follower_key_file: Option<PathBuf>,
    /// The candles (CSV: timestamp,open,high,low,close,volume,amount); default: the repository's
    /// data/btcusd-1h.csv.
    #[cfg_attr(feature = "clap", arg(long))]
    pub candles: Option<PathBuf>,
}

/// An account's API key and secret, and whether they are the published local ones.
#[derive(Clone)]
pub struct Keys {
    pub api_key: String,
    secret: String,
    pub published: bool,
}

impl std::fmt::Debug for Keys {
    /// The secret is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("api_key", &self.api_key).field("published", &self.published).finish()
    }
}

impl Keys {
    /// The local exchange's published lead keys.
    pub fn local_lead() -> Keys {
        Keys { api_key: LOCAL_LEAD_API_KEY.into(), secret: LOCAL_LEAD_API_SECRET.into(), published: true }
    }

    /// The local exchange's published follower keys.
    pub fn local_follower() -> Keys {
        Keys { api_key: LOCAL_FOLLOWER_API_KEY.into(), secret: LOCAL_FOLLOWER_API_SECRET.into(), published: true }
    }
}

/// Parses a key file: the API key on the first non-empty line, the secret on the second (`#` lines are comments).
pub(crate) fn parse_key_file(file: &str, text: &str) -> Result<Keys> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let api_key = lines.next().with_context(|| format!("{file}: no API key (first line)"))?;
    let secret = lines.next().with_context(|| format!("{file}: no secret (second line, after the API key)"))?;
    anyhow::ensure!(lines.next().is_none(), "{file}: more than two lines (the API key, then the secret)");
    for (what, v) in [("API key", api_key), ("secret", secret)] {
        anyhow::ensure!(
            v.chars().all(|c| c.is_ascii_graphic()),
            "{file}: the {what} holds spaces or characters other than printable ASCII"
        );
    }
    Ok(Keys { api_key: api_key.into(), secret: secret.into(), published: false })
}

fn read_key_file(path: &Path) -> Result<Keys> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("{file}: cannot read the key file"))?;
    parse_key_file(&file, &text)
}

/// A replayed price as the exchange quotes it: rounded to BTCUSDT's tick (0.10).
pub fn price_of(v: f64) -> Result<Decimal> {
    anyhow::ensure!(v.is_finite() && v > 0.0, "candle price {v} is not a positive number");
    let p: Decimal = format!("{v:.2}").parse().context("candle price")?;
    Ok(p.round_to_step(&"0.1".parse().expect("literal"), Rounding::HalfUp)?)
}

/// The four prices of a candle in the order they are replayed: open, the extreme against the candle's direction, the
/// other extreme, close (as the demo feeds them to the Chainlink mocks).
pub fn candle_points(c: &Candle) -> [f64; 4] {
    let (a, b) = if c.close >= c.open { (c.low, c.high) } else { (c.high, c.low) };
    [c.open, a, b, c.close]
}

/// The local exchange with its simulated lead.
pub struct LocalExchange {
    pub ex: MockExchange,
    lead: Mutex<SimLead>,
    pub lead_keys: Keys,
    pub follower_keys: Keys,
}

impl LocalExchange {
    /// Starts the exchange on `listen` with the lead's and the follower's accounts (one-way mode, USDT wallets).
    pub async fn start(
        listen: &str,
        lead_keys: Keys,
        follower_keys: Keys,
        lead_size: Decimal,
    ) -> Result<LocalExchange> {
        anyhow::ensure!(lead_size > Decimal::ZERO, "--lead-size must be positive (got {lead_size})");
        anyhow::ensure!(
            lead_keys.api_key != follower_keys.api_key,
            "the lead and the follower need different API keys"
        );
        let ex = MockExchange::start_on(listen).await?;
        ex.add_account(&lead_keys.api_key, &lead_keys.secret, LEAD_WALLET, false);
        ex.add_account(&follower_keys.api_key, &follower_keys.secret, FOLLOWER_WALLET, false);
        let lead = Mutex::new(SimLead::new(&lead_keys.api_key, LEAD_SYMBOL, lead_size));
        Ok(LocalExchange { ex, lead, lead_keys, follower_keys })
    }

    /// `http://host:port`
    pub fn rest_url(&self) -> String {
        self.ex.rest_url()
    }

    /// `ws://host:port`
    pub fn ws_url(&self) -> String {
        self.ex.ws_url()
    }

    /// History before the replay: sets the mark and the close the lead compares the first replayed close with.
    pub fn seed(&self, close: f64) -> Result<()> {
        let p = price_of(close)?;
        self.ex.set_mark(LEAD_SYMBOL, &p.to_string());
        self.lead.lock().seed(p);
        Ok(())
    }

    /// A replayed price: moves the mark (stops it crosses fire); on a candle's close the lead trades by its rule.
    pub fn price(&self, v: f64, close: bool) -> Result<Option<LeadTrade>> {
        let p = price_of(v)?;
        self.ex.set_mark(LEAD_SYMBOL, &p.to_string());
        if !close {
            return Ok(None);
        }
        self.lead.lock().on_close(&self.ex, p).map_err(|e| anyhow::anyhow!("the simulated lead's order: {e}"))
    }

    /// The simulated lead's position.
    pub fn lead_position(&self) -> Decimal {
        self.lead.lock().position()
    }
}

fn describe(t: &LeadTrade) -> String {
    format!(
        "lead {} {} {} @ {} -> position {}",
        match t.side {
            kronos_binance::types::Side::Buy => "BUY",
            kronos_binance::types::Side::Sell => "SELL",
        },
        t.qty,
        t.symbol,
        t.price,
        t.position
    )
}

/// `kronos exchange serve`: runs the local exchange and replays the candles until `shutdown` resolves.
pub async fn serve(a: ServeArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    anyhow::ensure!(
        a.candle_seconds.is_finite() && a.candle_seconds >= 0.4,
        "--candle-seconds must be at least 0.4 (got {})",
        a.candle_seconds
    );
    let lead_size: Decimal =
        a.lead_size.parse().map_err(|e| anyhow::anyhow!("--lead-size '{}' is not a decimal ({e})", a.lead_size))?;
    let path = match &a.candles {
        Some(p) => p.clone(),
        None => crate::deploy::repo_root()?.join("data/btcusd-1h.csv"),
    };
    let candles = kronos_forecast::load_csv(&path).with_context(|| format!("--candles {}", path.display()))?;
    let from = a.from.unwrap_or_else(|| crate::demo::net::candle_base(0));
    anyhow::ensure!(
        from >= 1 && from < candles.len(),
        "--from {from}: the candles file has {} candles (the first replayed one needs one before it)",
        candles.len()
    );
    let lead_keys = match &a.lead_key_file {
        Some(p) => read_key_file(p).context("--lead-key-file")?,
        None => Keys::local_lead(),
    };
    let follower_keys = match &a.follower_key_file {
        Some(p) => read_key_file(p).context("--follower-key-file")?,
        None => Keys::local_follower(),
    };
    let x = LocalExchange::start(&a.listen, lead_keys, follower_keys, lead_size).await?;
    x.seed(candles[from - 1].close)?;
    println!("local exchange (Binance USDⓈ-M Futures wire format, simulated accounts; no real money):");
    println!("  REST             {}/fapi/…", x.rest_url());
    println!("  user streams     {}/ws/<listenKey>", x.ws_url());
    let show = |who: &str, k: &Keys, extra: &str| {
        if k.published {
            println!("  {who:<16} API key {}  secret {}  (the published local keys){extra}", k.api_key, k.secret);
        } else {
            println!("  {who:<16} API key {}  (secret from the key file){extra}", k.api_key);
        }
    };
    show(
        "lead account",
        &x.lead_keys,
        &format!(
            "\n                   trades {lead_size} {LEAD_SYMBOL}: long after a candle closing above the previous close, short after one below"
        ),
    );
    show(
        "follower account",
        &x.follower_keys,
        &format!("\n                   wallet {FOLLOWER_WALLET} USDT, for mode = \"live\" against this exchange"),
    );
    println!(
        "follow the lead in paper mode (no keys needed) with network = \"local\" in the copy-trader's config (as in the example){}:\n  kronos copytrade run --config config/copytrade.example.toml",
        if a.listen == LOCAL_EXCHANGE { String::new() } else { format!(" and rest_url/ws_url = {} / {}", x.rest_url(), x.ws_url()) }
    );
    if !x.lead_keys.published {
        println!("  (with the lead's keys from the key file in the variables the config names: copytrade.lead.api_key_env / api_secret_env)");
    }
    println!(
        "replaying {} candles from #{from} ({}), {} s each; Ctrl-C stops",
        candles.len() - from,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(candles[from].timestamp.max(0) as u64)
        ),
        a.candle_seconds
    );
    let quarter = Duration::from_secs_f64(a.candle_seconds / 4.0);
    tokio::pin!(shutdown);
    for (i, c) in candles.iter().enumerate().skip(from) {
        for (step, v) in candle_points(c).into_iter().enumerate() {
            tokio::select! {
                _ = &mut shutdown => { println!("stopped"); return Ok(()); }
                _ = tokio::time::sleep(quarter) => {}
            }
            match x.price(v, step == 3) {
                Ok(Some(t)) => println!("candle #{i} closed {:.2}: {}", c.close, describe(&t)),
                Ok(None) if step == 3 => {
                    println!("candle #{i} closed {:.2}: lead holds {}", c.close, x.lead_position())
                }
                Ok(None) => {}
                Err(e) => println!("candle #{i}: {e:#}"),
            }
        }
    }
    println!("every candle replayed; the exchange keeps answering until Ctrl-C");
    shutdown.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_hold_a_key_then_a_secret() {
        let k = parse_key_file("k.txt", "# lead\nabc\n\nxyz\n").unwrap();
        assert_eq!((k.api_key.as_str(), k.secret.as_str(), k.published), ("abc", "xyz", false));
        let e = parse_key_file("k.txt", "abc\n").unwrap_err().to_string();
        assert!(e.contains("k.txt") && e.contains("secret"), "{e}");
        let e = parse_key_file("k.txt", "a b\nc\n").unwrap_err().to_string();
        assert!(e.contains("API key"), "{e}");
        assert!(parse_key_file("k.txt", "a\nb\nc\n").is_err());
    }

    #[test]
    fn replayed_prices_are_on_the_tick_and_in_feed_order() {
        assert_eq!(price_of(3415.02).unwrap(), "3415.0".parse::<Decimal>().unwrap());
        assert_eq!(price_of(3415.05).unwrap(), "3415.1".parse::<Decimal>().unwrap(), "half up");
        assert_eq!(price_of(3418.29).unwrap(), "3418.3".parse::<Decimal>().unwrap());
        assert!(price_of(f64::NAN).is_err() && price_of(-1.0).is_err());
        let c = Candle { timestamp: 0, open: 10.0, high: 12.0, low: 9.0, close: 11.0, volume: 0.0, amount: 0.0 };
        assert_eq!(candle_points(&c), [10.0, 9.0, 12.0, 11.0]);
        let c = Candle { close: 9.5, ..c };
        assert_eq!(candle_points(&c), [10.0, 12.0, 9.0, 9.5]);
    }
}
