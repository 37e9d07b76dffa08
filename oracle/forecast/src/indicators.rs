//! Technical indicators used as features by the logistic baseline and, optionally, by calibration.
//!
//! Every value at index `i` uses candles `..=i` only.

use crate::data::Candle;

/// Names of the feature vector's entries, in order.
pub const FEATURE_NAMES: [&str; 12] = [
    "ret_1",
    "ret_2",
    "ret_4",
    "ret_8",
    "ret_24",
    "rsi_14",
    "macd_hist",
    "bb_width_20",
    "atr_14",
    "vol_z_20",
    "range",
    "body",
];
/// Candles needed before the first full feature vector.
pub const WARMUP: usize = 35;

fn ema(values: &[f64], span: usize) -> Vec<f64> {
    let a = 2.0 / (span as f64 + 1.0);
    let mut out = Vec::with_capacity(values.len());
    let mut e = values.first().copied().unwrap_or(0.0);
    for &v in values {
        e = a * v + (1.0 - a) * e;
        out.push(e);
    }
    out
}

/// Wilder's RSI over `n` periods (0-100; 50 until enough data).
pub fn rsi(close: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![50.0; close.len()];
    let (mut gain, mut loss) = (0.0, 0.0);
    for i in 1..close.len() {
        let d = close[i] - close[i - 1];
        let (g, l) = (d.max(0.0), (-d).max(0.0));
        if i <= n {
            gain += g / n as f64;
            loss += l / n as f64;
        } else {
            gain = (gain * (n - 1) as f64 + g) / n as f64;
            loss = (loss * (n - 1) as f64 + l) / n as f64;
        }
        if i >= n {
            out[i] = if loss == 0.0 { 100.0 } else { 100.0 - 100.0 / (1.0 + gain / loss) };
        }
    }
    out
}

/// Average true range over `n` periods (Wilder smoothing).
pub fn atr(c: &[Candle], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; c.len()];
    let mut a = 0.0;
    for i in 0..c.len() {
        let tr = if i == 0 {
            c[i].high - c[i].low
        } else {
            (c[i].high - c[i].low).max((c[i].high - c[i - 1].close).abs()).max((c[i].low - c[i - 1].close).abs())
        };
        a = if i < n { (a * i as f64 + tr) / (i + 1) as f64 } else { (a * (n - 1) as f64 + tr) / n as f64 };
        out[i] = a;
    }
    out
}

fn rolling_mean_std(v: &[f64], i: usize, n: usize) -> (f64, f64) {
    let lo = (i + 1).saturating_sub(n);
    let w = &v[lo..=i];
    let m = w.iter().sum::<f64>() / w.len() as f64;
    let var = w.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / w.len() as f64;
    (m, var.sqrt())
}

/// Feature vectors for every candle; `None` during the warm-up.
pub fn features(c: &[Candle]) -> Vec<Option<[f64; 12]>> {
    let close: Vec<f64> = c.iter().map(|x| x.close).collect();
    let vol: Vec<f64> = c.iter().map(|x| x.volume).collect();
    let r = rsi(&close, 14);
    let e12 = ema(&close, 12);
    let e26 = ema(&close, 26);
    let macd: Vec<f64> = e12.iter().zip(&e26).map(|(a, b)| a - b).collect();
    let signal = ema(&macd, 9);
    let tr = atr(c, 14);
    (0..c.len())
        .map(|i| {
            if i < WARMUP {
                return None;
            }
            let ret = |k: usize| (close[i] / close[i - k]).ln();
            let (m20, s20) = rolling_mean_std(&close, i, 20);
            let (vm, vs) = rolling_mean_std(&vol, i, 20);
            Some([
                ret(1),
                ret(2),
                ret(4),
                ret(8),
                ret(24),
                (r[i] - 50.0) / 50.0,
                (macd[i] - signal[i]) / close[i],
                4.0 * s20 / m20,
                tr[i] / close[i],
                if vs > 0.0 { (vol[i] - vm) / vs } else { 0.0 },
                (c[i].high - c[i].low) / close[i],
                (c[i].close - c[i].open) / close[i],
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candles(closes: &[f64]) -> Vec<Candle> {
        closes
            .iter()
            .enumerate()
            .map(|(i, &c)| Candle {
                timestamp: i as i64 * 3600,
                open: c,
                high: c * 1.01,
                low: c * 0.99,
                close: c,
                volume: 1.0 + i as f64,
                amount: c,
            })
            .collect()
    }

    #[test]
    fn rsi_extremes_and_flat() {
        let up: Vec<f64> = (0..40).map(|i| 100.0 + i as f64).collect();
        assert_eq!(*rsi(&up, 14).last().unwrap(), 100.0);
        let down: Vec<f64> = (0..40).map(|i| 100.0 - i as f64).collect();
        assert!(*rsi(&down, 14).last().unwrap() < 1e-9);
    }

    #[test]
    fn features_use_only_the_past() {
        let base: Vec<f64> = (0..80).map(|i| 100.0 + (i as f64 * 0.7).sin() * 5.0).collect();
        let a = features(&candles(&base));
        let mut changed = base.clone();
        for v in changed.iter_mut().skip(60) {
            *v *= 1.5;
        }
        let b = features(&candles(&changed));
        assert!(a[..WARMUP].iter().all(Option::is_none));
        for i in WARMUP..60 {
            assert_eq!(a[i], b[i], "feature at {i} saw the future");
        }
        assert_ne!(a[60], b[60]);
        let f = a[50].unwrap();
        assert!((f[0] - (base[50] / base[49]).ln()).abs() < 1e-12);
    }
}
