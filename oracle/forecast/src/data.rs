//! Candles: loading the documented CSV layout, validation with line numbers, calendar features, splits.
//!
//! Layout (header required, in this order): `timestamp,open,high,low,close,volume,amount` — bar open time in unix
//! seconds (UTC), prices in quote currency, volume in base units, amount (quote volume). Rows must be strictly
//! ascending in time. Every problem is reported with its 1-based line number.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Column names of the candle CSV, in order.
pub const COLUMNS: [&str; 7] = ["timestamp", "open", "high", "low", "close", "volume", "amount"];

/// One OHLCV bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    pub timestamp: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub amount: f64,
}

impl Candle {
    /// The six model inputs, in the order the Kronos checkpoints use: open, high, low, close, volume, amount.
    pub fn features(&self) -> [f64; 6] {
        [self.open, self.high, self.low, self.close, self.volume, self.amount]
    }
}

/// Why a candle file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: cannot read: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: line 1: header must be '{expected}', found '{found}'")]
    Header { file: String, expected: String, found: String },
    #[error("{file}: line {line}: {message}")]
    Row { file: String, line: usize, message: String },
    #[error("{file}: no candles after the header")]
    Empty { file: String },
}

/// Parses candle CSV text; `file` names the source in errors.
pub fn parse_csv(text: &str, file: &str) -> Result<Vec<Candle>, DataError> {
    let mut lines = text.lines().enumerate();
    let expected = COLUMNS.join(",");
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l.trim().trim_start_matches('\u{feff}').to_string(),
            None => return Err(DataError::Empty { file: file.into() }),
        }
    };
    let norm: Vec<String> = header.split(',').map(|h| h.trim().to_ascii_lowercase()).collect();
    if norm != COLUMNS {
        return Err(DataError::Header { file: file.into(), expected, found: header });
    }
    let mut out: Vec<Candle> = Vec::new();
    for (idx, raw) in lines {
        let line = idx + 1;
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        let row = |message: String| DataError::Row { file: file.into(), line, message };
        let fields: Vec<&str> = l.split(',').map(str::trim).collect();
        if fields.len() != COLUMNS.len() {
            return Err(row(format!("expected {} fields, found {}", COLUMNS.len(), fields.len())));
        }
        let timestamp: i64 =
            fields[0].parse().map_err(|_| row(format!("timestamp '{}' is not whole unix seconds", fields[0])))?;
        let mut v = [0f64; 6];
        for (i, f) in fields[1..].iter().enumerate() {
            let x: f64 = f.parse().map_err(|_| row(format!("{} '{}' is not a number", COLUMNS[i + 1], f)))?;
            if !x.is_finite() {
                return Err(row(format!("{} '{}' is not finite", COLUMNS[i + 1], f)));
            }
            v[i] = x;
        }
        let c = Candle { timestamp, open: v[0], high: v[1], low: v[2], close: v[3], volume: v[4], amount: v[5] };
        if c.open <= 0.0 || c.high <= 0.0 || c.low <= 0.0 || c.close <= 0.0 {
            return Err(row("prices must be above zero".into()));
        }
        if c.volume < 0.0 || c.amount < 0.0 {
            return Err(row("volume and amount must not be negative".into()));
        }
        if c.high < c.low {
            return Err(row(format!("high {} is below low {}", c.high, c.low)));
        }
        let tol = 1e-9 * c.high.abs().max(1.0);
        if c.high + tol < c.open.max(c.close) || c.low - tol > c.open.min(c.close) {
            return Err(row(format!(
                "open {} / close {} lie outside the bar's range [{}, {}]",
                c.open, c.close, c.low, c.high
            )));
        }
        if let Some(prev) = out.last() {
            if c.timestamp <= prev.timestamp {
                return Err(row(format!(
                    "timestamp {} is not after the previous row's {} (rows must be strictly ascending)",
                    c.timestamp, prev.timestamp
                )));
            }
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(DataError::Empty { file: file.into() });
    }
    Ok(out)
}

/// Reads a candle CSV file.
pub fn load_csv(path: impl AsRef<Path>) -> Result<Vec<Candle>, DataError> {
    let p = path.as_ref();
    let file = p.display().to_string();
    let text = std::fs::read_to_string(p).map_err(|source| DataError::Io { file: file.clone(), source })?;
    parse_csv(&text, &file)
}

/// Calendar features of a unix timestamp (UTC), as the Kronos temporal embedding takes them:
/// `[minute 0-59, hour 0-23, weekday 0-6 (Monday = 0), day of month 1-31, month 1-12]`.
pub fn time_features(ts: i64) -> [u32; 5] {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let minute = ((secs / 60) % 60) as u32;
    let hour = (secs / 3600) as u32;
    // 1970-01-01 was a Thursday (Monday = 0 -> Thursday = 3).
    let weekday = ((days + 3).rem_euclid(7)) as u32;
    let (_, month, day) = civil_from_days(days);
    [minute, hour, weekday, day, month]
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Index ranges of a chronological train / validation / test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: (usize, usize),
    pub validation: (usize, usize),
    pub test: (usize, usize),
}

impl Split {
    /// 70% / 15% / 15% of `n` candles, in time order.
    pub fn chronological(n: usize) -> Split {
        let a = n * 70 / 100;
        let b = n * 85 / 100;
        Split { train: (0, a), validation: (a, b), test: (b, n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp,open,high,low,close,volume,amount\n";

    #[test]
    fn parses_the_documented_layout() {
        let c =
            parse_csv(&format!("{HEADER}1498906800,2505.56,2513.38,2495.12,2509.17,114.6,287000.32\n"), "t").unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].close, 2509.17);
    }

    fn err(body: &str) -> String {
        parse_csv(&format!("{HEADER}{body}"), "f.csv").unwrap_err().to_string()
    }

    #[test]
    fn bad_rows_name_their_line() {
        let good = "1,10,11,9,10,1,10\n";
        assert_eq!(err(&format!("{good}2,10,11,9,x,1,10\n")), "f.csv: line 3: close 'x' is not a number");
        assert!(err(&format!("{good}2,10,11,9,10,1\n")).starts_with("f.csv: line 3: expected 7 fields"));
        assert!(err(&format!("{good}1,10,11,9,10,1,10\n")).contains("line 3: timestamp 1 is not after"));
        assert!(err("1,10,9,11,10,1,10\n").contains("line 2: high 9 is below low 11"));
        assert!(err("1,12,11,9,10,1,10\n").contains("line 2: open 12 / close 10 lie outside"));
        assert!(err("1,0,11,0,10,1,10\n").contains("line 2: prices must be above zero"));
        assert!(err("1,10,11,9,10,-1,10\n").contains("line 2: volume and amount"));
        assert!(err("1.5,10,11,9,10,1,10\n").contains("line 2: timestamp '1.5'"));
        assert!(
            err("1,10,11,9,inf,1,10\n").contains("not finite") || err("1,10,11,9,inf,1,10\n").contains("not a number")
        );
        let e = parse_csv("time,o,h,l,c,v,a\n", "f.csv").unwrap_err().to_string();
        assert!(e.contains("line 1: header must be"), "{e}");
        assert!(parse_csv(HEADER, "f.csv").unwrap_err().to_string().contains("no candles"));
    }

    #[test]
    fn calendar_features_are_utc() {
        // 2017-07-01 11:00:00 UTC was a Saturday.
        assert_eq!(time_features(1_498_906_800), [0, 11, 5, 1, 7]);
        // 2019-04-30 23:59:00 UTC, a Tuesday.
        assert_eq!(time_features(1_556_668_740), [59, 23, 1, 30, 4]);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn the_shipped_data_loads() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let c = load_csv(format!("{dir}/../../data/btcusd-1h.csv")).unwrap();
        assert_eq!(c.len(), 16_045);
        assert!(c.windows(2).all(|w| w[1].timestamp - w[0].timestamp == 3600), "hourly with no gaps");
        let s = Split::chronological(c.len());
        assert_eq!(s.train, (0, 11_231));
        assert_eq!(s.test.1, 16_045);
    }
}
