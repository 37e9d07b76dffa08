//! Probability calibration fitted on a validation split: Platt scaling (logistic on the logit) or isotonic
//! regression (pool-adjacent-violators).

use serde::{Deserialize, Serialize};

/// Probabilities are kept inside `[EPS, 1 - EPS]` before taking logits and logs.
pub const EPS: f64 = 1e-6;

/// Log-odds of a probability.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A fitted calibration map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibration {
    /// Raw probabilities.
    Identity,
    /// `sigmoid(a * logit(p) + b)`.
    Platt { a: f64, b: f64 },
    /// Piecewise-constant non-decreasing map: `p` in `[thresholds[i], thresholds[i+1])` → `values[i]`.
    Isotonic { thresholds: Vec<f64>, values: Vec<f64> },
}

impl Calibration {
    /// Applies the map.
    pub fn apply(&self, p: f64) -> f64 {
        match self {
            Calibration::Identity => p,
            Calibration::Platt { a, b } => sigmoid(a * logit(p) + b),
            Calibration::Isotonic { thresholds, values } => {
                let i = thresholds.partition_point(|t| *t <= p);
                values[i.saturating_sub(1).min(values.len() - 1)]
            }
        }
    }

    /// Platt scaling fitted by Newton's method on the log loss (with a tiny ridge for stability).
    pub fn fit_platt(p: &[f64], y: &[bool]) -> Calibration {
        let x: Vec<f64> = p.iter().map(|&v| logit(v)).collect();
        let (a, b) = fit_logistic_1d(&x, y);
        Calibration::Platt { a, b }
    }

    /// Isotonic regression of the outcome on `p` (pool-adjacent-violators), clamped away from 0 and 1.
    pub fn fit_isotonic(p: &[f64], y: &[bool]) -> Calibration {
        let mut pts: Vec<(f64, f64)> = p.iter().zip(y).map(|(&a, &b)| (a, if b { 1.0 } else { 0.0 })).collect();
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        // blocks: (start x, sum y, count)
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        for (x, v) in pts {
            blocks.push((x, v, 1.0));
            while blocks.len() > 1 {
                let n = blocks.len();
                let (x1, s1, c1) = blocks[n - 2];
                let (_, s2, c2) = blocks[n - 1];
                if s1 / c1 > s2 / c2 {
                    blocks.truncate(n - 2);
                    blocks.push((x1, s1 + s2, c1 + c2));
                } else {
                    break;
                }
            }
        }
        if blocks.is_empty() {
            return Calibration::Identity;
        }
        let thresholds: Vec<f64> =
            blocks.iter().enumerate().map(|(i, b)| if i == 0 { f64::MIN } else { b.0 }).collect();
        let values = blocks.iter().map(|b| (b.1 / b.2).clamp(0.01, 0.99)).collect();
        Calibration::Isotonic { thresholds, values }
    }
}

/// Fits `P(y) = sigmoid(a x + b)` by damped Newton-Raphson with a small L2 penalty on `a`.
///
/// Every step is halved until the penalised log-loss does not rise, so the fit cannot run away on nearly separable
/// or badly scaled data (plain Newton can overshoot there into absurd coefficients).
pub fn fit_logistic_1d(x: &[f64], y: &[bool]) -> (f64, f64) {
    let ridge = 1e-2;
    let loss = |a: f64, b: f64| -> f64 {
        let mut l = 0.5 * ridge * a * a;
        for (&xi, &yi) in x.iter().zip(y) {
            let z = a * xi + b;
            // log(1 + e^z) - y z, computed stably.
            let softplus = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
            l += softplus - if yi { z } else { 0.0 };
        }
        l
    };
    let (mut a, mut b) = (1.0, 0.0);
    let mut current = loss(a, b);
    for _ in 0..200 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (ridge * a, 0.0, ridge, 0.0, 0.0);
        for (&xi, &yi) in x.iter().zip(y) {
            let p = sigmoid(a * xi + b);
            let r = p - if yi { 1.0 } else { 0.0 };
            let w = (p * (1.0 - p)).max(1e-12);
            ga += r * xi;
            gb += r;
            haa += w * xi * xi;
            hab += w * xi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if !det.is_finite() || det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        let mut t = 1.0;
        let mut next = loss(a - da, b - db);
        while !(next.is_finite() && next <= current + 1e-12) && t > 1e-10 {
            t *= 0.5;
            next = loss(a - t * da, b - t * db);
        }
        if t <= 1e-10 {
            break;
        }
        a -= t * da;
        b -= t * db;
        let improvement = current - next;
        current = next;
        if (t * da).abs() + (t * db).abs() < 1e-10 || improvement.abs() < 1e-14 {
            break;
        }
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn platt_recovers_a_known_miscalibration() {
        // True P(up) = sigmoid(0.5 * logit(p) + 0.2): an overconfident forecaster with a bias.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut ps = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..40_000 {
            let p: f64 = rng.gen_range(0.02..0.98);
            let truth = sigmoid(0.5 * logit(p) + 0.2);
            ps.push(p);
            ys.push(rng.gen::<f64>() < truth);
        }
        match Calibration::fit_platt(&ps, &ys) {
            Calibration::Platt { a, b } => {
                assert!((a - 0.5).abs() < 0.05, "a = {a}");
                assert!((b - 0.2).abs() < 0.05, "b = {b}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn platt_stays_sane_on_nearly_separable_data() {
        // Discrete raw probabilities (as from 32 sampled paths) with a lopsided outcome: undamped Newton runs
        // away here; the damped fit must give a bounded, monotone map that predicts the base rate in the middle.
        let mut p = Vec::new();
        let mut y = Vec::new();
        for i in 0..2000 {
            let k = (i * 7919) % 33;
            p.push((k as f64 + 0.5) / 33.0);
            y.push(k >= 31 || i % 17 == 0);
        }
        let c = Calibration::fit_platt(&p, &y);
        let Calibration::Platt { a, b } = c.clone() else { panic!() };
        assert!(a.is_finite() && b.is_finite() && a.abs() < 100.0 && b.abs() < 100.0, "a {a} b {b}");
        let lo = c.apply(0.2);
        let hi = c.apply(0.95);
        assert!(lo < hi && (0.0..1.0).contains(&lo) && (0.0..=1.0).contains(&hi), "{lo} {hi}");
    }

    #[test]
    fn isotonic_is_monotone_and_fits_steps() {
        let p = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9];
        let y = [false, false, true, false, true, true, false, true];
        let c = Calibration::fit_isotonic(&p, &y);
        let mut last = 0.0;
        for i in 0..=100 {
            let v = c.apply(i as f64 / 100.0);
            assert!(v >= last - 1e-12, "not monotone at {i}");
            last = v;
        }
        assert!(c.apply(0.05) < c.apply(0.95));
        assert_eq!(Calibration::Identity.apply(0.37), 0.37);
    }
}
