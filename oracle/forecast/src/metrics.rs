//! Scores of probabilistic up/down forecasts.

use serde::{Deserialize, Serialize};

use crate::calibration::EPS;

/// The scores of one predictor on one evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Number of forecasts scored.
    pub n: usize,
    /// Share of forecasts whose direction (P(up) >= 0.5 means up) matched.
    pub accuracy: f64,
    /// Wilson 95% interval of the accuracy.
    pub accuracy_ci95: [f64; 2],
    /// Mean squared error of P(up) against the 0/1 outcome.
    pub brier: f64,
    /// `1 - brier / brier(climatology)` on the same forecasts.
    pub brier_skill: f64,
    /// Mean negative log-likelihood (probabilities clipped to [1e-6, 1 - 1e-6]).
    pub log_loss: f64,
    /// Expected calibration error over 10 equal-width bins.
    pub ece: f64,
}

/// Wilson score interval for `k` successes in `n` trials at 95%.
pub fn wilson95(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.959_963_984_540_054;
    let n_f = n as f64;
    let p = k as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let center = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    [(center - half).max(0.0), (center + half).min(1.0)]
}

/// Mean squared error of probabilities.
pub fn brier(p: &[f64], y: &[bool]) -> f64 {
    p.iter().zip(y).map(|(&p, &y)| (p - if y { 1.0 } else { 0.0 }).powi(2)).sum::<f64>() / p.len().max(1) as f64
}

/// Reliability bins: `(mean forecast, observed frequency, count)` for each non-empty bin of `bins` equal widths.
pub fn reliability(p: &[f64], y: &[bool], bins: usize) -> Vec<(f64, f64, usize)> {
    let mut acc = vec![(0.0, 0.0, 0usize); bins];
    for (&p, &y) in p.iter().zip(y) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        acc[b].0 += p;
        acc[b].1 += if y { 1.0 } else { 0.0 };
        acc[b].2 += 1;
    }
    acc.into_iter().filter(|b| b.2 > 0).map(|(sp, sy, n)| (sp / n as f64, sy / n as f64, n)).collect()
}

/// Scores `p` against outcomes `y`; `brier_climatology` is the Brier score of the climatology on the same set.
pub fn score(p: &[f64], y: &[bool], brier_climatology: f64) -> Scores {
    let n = p.len();
    let hits = p.iter().zip(y).filter(|(&p, &y)| (p >= 0.5) == y).count();
    let b = brier(p, y);
    let ll = p
        .iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = p.clamp(EPS, 1.0 - EPS);
            -(if y { p.ln() } else { (1.0 - p).ln() })
        })
        .sum::<f64>()
        / n.max(1) as f64;
    let ece =
        reliability(p, y, 10).iter().map(|(mp, fy, c)| (mp - fy).abs() * *c as f64).sum::<f64>() / n.max(1) as f64;
    Scores {
        n,
        accuracy: hits as f64 / n.max(1) as f64,
        accuracy_ci95: wilson95(hits, n),
        brier: b,
        brier_skill: if brier_climatology > 0.0 { 1.0 - b / brier_climatology } else { 0.0 },
        log_loss: ll,
        ece,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 50 of 100: [0.4038, 0.5962]
        let [lo, hi] = wilson95(50, 100);
        assert!((lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson95(0, 0), [0.0, 1.0]);
    }

    #[test]
    fn scores_follow_their_definitions() {
        let p = [0.9, 0.8, 0.3, 0.6];
        let y = [true, false, false, true];
        let s = score(&p, &y, 0.25);
        assert_eq!(s.n, 4);
        assert_eq!(s.accuracy, 0.75);
        let b = (0.01 + 0.64 + 0.09 + 0.16) / 4.0;
        assert!((s.brier - b).abs() < 1e-12);
        assert!((s.brier_skill - (1.0 - b / 0.25)).abs() < 1e-12);
        let ll = -((0.9f64).ln() + (0.2f64).ln() + (0.7f64).ln() + (0.6f64).ln()) / 4.0;
        assert!((s.log_loss - ll).abs() < 1e-12);
        // bins: 0.9 (y=1), 0.8 (y=0), 0.3 (y=0), 0.6 (y=1) -> each alone: |0.9-1|+|0.8-0|+|0.3-0|+|0.6-1| over 4
        assert!((s.ece - (0.1 + 0.8 + 0.3 + 0.4) / 4.0).abs() < 1e-12);
        // A perfectly calibrated constant forecast has ECE 0.
        let p = vec![0.5; 10];
        let y: Vec<bool> = (0..10).map(|i| i % 2 == 0).collect();
        assert!(score(&p, &y, 0.25).ece < 1e-12);
    }
}
