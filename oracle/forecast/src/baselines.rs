//! Simple baselines, each fitted on a training range only and queried with the past only:
//! climatology (the training frequency of "up"), persistence of the last move, momentum of the last day, and a
//! logistic regression on technical indicators.

use serde::{Deserialize, Serialize};

use crate::calibration::sigmoid;
use crate::data::Candle;
use crate::indicators::{self, FEATURE_NAMES};

/// Did the close go up `h` steps after `i`?
pub fn went_up(c: &[Candle], i: usize, h: usize) -> bool {
    c[i + h].close > c[i].close
}

fn freq(ups: usize, n: usize) -> f64 {
    // Laplace smoothing keeps probabilities away from 0 and 1.
    (ups as f64 + 1.0) / (n as f64 + 2.0)
}

/// Conditional frequency of "up" given a binary condition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Conditional {
    pub p_if_true: f64,
    pub p_if_false: f64,
}

impl Conditional {
    fn fit(c: &[Candle], range: (usize, usize), h: usize, cond: impl Fn(usize) -> Option<bool>) -> Conditional {
        let (mut ut, mut nt, mut uf, mut nf) = (0, 0, 0, 0);
        for i in range.0..range.1.saturating_sub(h) {
            let Some(k) = cond(i) else { continue };
            let u = went_up(c, i, h) as usize;
            if k {
                ut += u;
                nt += 1;
            } else {
                uf += u;
                nf += 1;
            }
        }
        Conditional { p_if_true: freq(ut, nt), p_if_false: freq(uf, nf) }
    }
}

/// Logistic regression on standardised indicator features.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logistic {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Bias first, then one weight per feature in [`FEATURE_NAMES`] order.
    pub weights: Vec<f64>,
}

impl Logistic {
    /// Fits by Newton-Raphson with an L2 penalty `lambda` (not on the bias).
    pub fn fit(x: &[Vec<f64>], y: &[bool], lambda: f64) -> Logistic {
        let d = x.first().map(Vec::len).unwrap_or(0);
        let n = x.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        let mut std = vec![0.0; d];
        for r in x {
            for j in 0..d {
                mean[j] += r[j] / n;
            }
        }
        for r in x {
            for j in 0..d {
                std[j] += (r[j] - mean[j]).powi(2) / n;
            }
        }
        std.iter_mut().for_each(|s| *s = s.sqrt().max(1e-12));
        let z: Vec<Vec<f64>> =
            x.iter().map(|r| std::iter::once(1.0).chain((0..d).map(|j| (r[j] - mean[j]) / std[j])).collect()).collect();
        let k = d + 1;
        let mut w = vec![0.0; k];
        for _ in 0..50 {
            let mut g = vec![0.0; k];
            let mut hmat = vec![vec![0.0; k]; k];
            for (zi, &yi) in z.iter().zip(y) {
                let p = sigmoid(zi.iter().zip(&w).map(|(a, b)| a * b).sum());
                let r = p - if yi { 1.0 } else { 0.0 };
                let s = (p * (1.0 - p)).max(1e-9);
                for a in 0..k {
                    g[a] += r * zi[a];
                    for b in 0..k {
                        hmat[a][b] += s * zi[a] * zi[b];
                    }
                }
            }
            for a in 1..k {
                g[a] += lambda * w[a];
                hmat[a][a] += lambda;
            }
            let step = solve(hmat, g);
            let mut change = 0.0;
            for a in 0..k {
                w[a] -= step[a];
                change += step[a].abs();
            }
            if change < 1e-9 {
                break;
            }
        }
        Logistic { mean, std, weights: w }
    }

    /// P(up) for one feature vector.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let s: f64 = self.weights[0]
            + x.iter().enumerate().map(|(j, v)| self.weights[j + 1] * (v - self.mean[j]) / self.std[j]).sum::<f64>();
        sigmoid(s)
    }
}

/// Gaussian elimination with partial pivoting (small dense systems).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().partial_cmp(&a[j][col].abs()).unwrap()).unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        let d = a[col][col];
        if d.abs() < 1e-15 {
            continue;
        }
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / d;
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
    }
    (0..n).map(|i| if a[i][i].abs() < 1e-15 { 0.0 } else { b[i] / a[i][i] }).collect()
}

/// All baselines for one horizon, fitted on one range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baselines {
    pub horizon: usize,
    pub climatology: f64,
    pub persistence: Conditional,
    pub momentum: Conditional,
    pub momentum_lookback: usize,
    pub logistic: Logistic,
    #[serde(skip)]
    features: Vec<Option<[f64; 12]>>,
}

/// Names of the baselines in reports.
pub const NAMES: [&str; 4] = ["climatology", "persistence", "momentum", "logistic"];

impl Baselines {
    /// Fits every baseline on `range` of `c` for horizon `h`.
    pub fn fit(c: &[Candle], range: (usize, usize), h: usize) -> Baselines {
        let features = indicators::features(c);
        let end = range.1.saturating_sub(h);
        let n = end.saturating_sub(range.0);
        let ups = (range.0..end).filter(|&i| went_up(c, i, h)).count();
        let lookback = 24;
        let persistence = Conditional::fit(c, range, h, |i| (i >= 1).then(|| c[i].close > c[i - 1].close));
        let momentum = Conditional::fit(c, range, h, |i| (i >= lookback).then(|| c[i].close > c[i - lookback].close));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (i, f) in features.iter().enumerate().take(end).skip(range.0) {
            if let Some(f) = f {
                x.push(f.to_vec());
                y.push(went_up(c, i, h));
            }
        }
        let logistic = Logistic::fit(&x, &y, 1.0);
        Baselines {
            horizon: h,
            climatology: freq(ups, n),
            persistence,
            momentum,
            momentum_lookback: lookback,
            logistic,
            features,
        }
    }

    /// P(up) of each baseline at candle `i` (same order as [`NAMES`]).
    pub fn predict(&self, c: &[Candle], i: usize) -> [f64; 4] {
        let pers = if i >= 1 && c[i].close > c[i - 1].close {
            self.persistence.p_if_true
        } else {
            self.persistence.p_if_false
        };
        let k = self.momentum_lookback;
        let mom =
            if i >= k && c[i].close > c[i - k].close { self.momentum.p_if_true } else { self.momentum.p_if_false };
        let logit = match self.features.get(i).copied().flatten() {
            Some(f) => self.logistic.predict(&f),
            None => self.climatology,
        };
        [self.climatology, pers, mom, logit]
    }

    /// The feature vector at `i` (for calibration with indicators).
    pub fn features_at(&self, i: usize) -> Option<[f64; 12]> {
        self.features.get(i).copied().flatten()
    }
}

/// Feature names, for reports.
pub fn feature_names() -> &'static [&'static str] {
    &FEATURE_NAMES
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn logistic_recovers_a_planted_signal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..5000 {
            let a: f64 = rng.gen_range(-2.0..2.0);
            let b: f64 = rng.gen_range(-2.0..2.0);
            x.push(vec![a, b]);
            y.push(rng.gen::<f64>() < sigmoid(1.5 * a - 0.2));
        }
        let m = Logistic::fit(&x, &y, 1e-3);
        // Standardised a has std ~1.155, so the weight on it is about 1.5 * 1.155.
        assert!((m.weights[1] - 1.5 * m.std[0]).abs() < 0.2, "{:?}", m.weights);
        assert!(m.weights[2].abs() < 0.1);
    }

    #[test]
    fn conditional_baselines_learn_a_planted_pattern() {
        // A zig-zag: every up move is followed by a down move.
        let c: Vec<Candle> = (0..400)
            .map(|i| {
                let p = if i % 2 == 0 { 100.0 } else { 101.0 };
                Candle { timestamp: i * 3600, open: p, high: p + 1.0, low: p - 1.0, close: p, volume: 1.0, amount: p }
            })
            .collect();
        let b = Baselines::fit(&c, (0, 300), 1);
        assert!(b.persistence.p_if_true < 0.05, "{:?}", b.persistence);
        assert!(b.persistence.p_if_false > 0.95);
        assert!((b.climatology - 0.5).abs() < 0.01);
        let p = b.predict(&c, 350);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
