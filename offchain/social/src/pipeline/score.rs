//! Score, priority and the per-asset metrics people know.
//!
//! **Score** of an item:
//!
//! ```text
//! score = weight × relevance × intensity × spike
//!   weight    = the source's configured weight (default 1.0)
//!   relevance = 1.0 when the item mentions at least one asset, else 0.3
//!   intensity = 0.5 + |sentiment|                (0.5 … 1.5)
//!   spike     = 1 + clamp(z − z_spike, 0, 4) / 4 (1 … 2), z the highest z-score among its assets' volume
//! ```
//!
//! **Priority**: `high` when `score ≥ high` (default 1.3) and the item mentions an asset, `normal` when
//! `score ≥ normal` (default 0.75), else `low`. With weight 1 an asset post is `high` when strongly worded
//! (|sentiment| ≥ 0.8) or, at a full volume spike (z ≥ z_spike + 4, ×2), with |sentiment| ≥ 0.15.
//!
//! **Per-asset metrics** over a window:
//! - social volume: items mentioning the asset;
//! - social dominance: its share of all asset mentions, `volume / all mentions` (0 … 1);
//! - sentiment balance: `(positive − negative) / (positive + negative)` with VADER's ±0.05 cut-offs (−1 … 1; 0
//!   when neither);
//! - z-score: `(current bucket − mean) / max(std, 1)` of the asset's volume in fixed buckets against the previous
//!   `baseline` buckets (the floor of 1 keeps a quiet asset's first mention from scoring as an infinite spike).

use std::collections::{HashMap, VecDeque};

use crate::item::Priority;

/// Score parameters (config `[score]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRules {
    pub high: f64,
    pub normal: f64,
    pub z_spike: f64,
    pub bucket_ms: u64,
    pub baseline_buckets: usize,
}

impl Default for ScoreRules {
    fn default() -> Self {
        ScoreRules { high: 1.3, normal: 0.75, z_spike: 2.0, bucket_ms: 5 * 60_000, baseline_buckets: 24 }
    }
}

pub fn score(weight: f64, has_assets: bool, sentiment: f64, z: f64, z_spike: f64) -> f64 {
    let relevance = if has_assets { 1.0 } else { 0.3 };
    let intensity = 0.5 + sentiment.abs().min(1.0);
    let spike = 1.0 + ((z - z_spike).clamp(0.0, 4.0)) / 4.0;
    weight * relevance * intensity * spike
}

pub fn priority(rules: &ScoreRules, score: f64, has_assets: bool) -> Priority {
    if score >= rules.high && has_assets {
        Priority::High
    } else if score >= rules.normal {
        Priority::Normal
    } else {
        Priority::Low
    }
}

pub fn dominance(volume: u64, all_mentions: u64) -> f64 {
    if all_mentions == 0 {
        0.0
    } else {
        volume as f64 / all_mentions as f64
    }
}

pub fn balance(positive: u64, negative: u64) -> f64 {
    let n = positive + negative;
    if n == 0 {
        0.0
    } else {
        (positive as f64 - negative as f64) / n as f64
    }
}

/// `(current − mean) / max(std, 1)` over `history` (population standard deviation); 0 without history.
pub fn zscore(current: f64, history: &[f64]) -> f64 {
    if history.is_empty() {
        return 0.0;
    }
    let n = history.len() as f64;
    let mean = history.iter().sum::<f64>() / n;
    let var = history.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (current - mean) / var.sqrt().max(1.0)
}

/// Per-asset volume in fixed buckets, to compute z-scores against a rolling baseline.
#[derive(Debug, Default)]
pub struct Baselines {
    /// asset → (bucket index, count), oldest first, at most `baseline_buckets + 1` buckets back.
    buckets: HashMap<String, VecDeque<(u64, u64)>>,
}

impl Baselines {
    /// The asset's z-score for a mention at `at_ms` if it were counted (the current bucket including it).
    pub fn z(&self, rules: &ScoreRules, asset: &str, at_ms: u64) -> f64 {
        let b = at_ms / rules.bucket_ms.max(1);
        let Some(q) = self.buckets.get(asset) else { return zscore(1.0, &vec![0.0; rules.baseline_buckets]) };
        let current = q.iter().find(|(i, _)| *i == b).map(|(_, n)| *n).unwrap_or(0) + 1;
        let history: Vec<f64> = (1..=rules.baseline_buckets as u64)
            .filter_map(|k| b.checked_sub(k))
            .map(|i| q.iter().find(|(j, _)| *j == i).map(|(_, n)| *n as f64).unwrap_or(0.0))
            .collect();
        zscore(current as f64, &history)
    }

    /// Counts a mention of `asset` at `at_ms`.
    pub fn add(&mut self, rules: &ScoreRules, asset: &str, at_ms: u64) {
        let b = at_ms / rules.bucket_ms.max(1);
        let q = self.buckets.entry(asset.to_string()).or_default();
        match q.iter_mut().find(|(i, _)| *i == b) {
            Some((_, n)) => *n += 1,
            None => {
                let pos = q.iter().position(|(i, _)| *i > b).unwrap_or(q.len());
                q.insert(pos, (b, 1));
            }
        }
        let newest = q.back().map(|(i, _)| *i).unwrap_or(b);
        while q.front().is_some_and(|(i, _)| *i + (rules.baseline_buckets as u64) < newest) {
            q.pop_front();
        }
    }

    /// The asset's current z-score at `now_ms` (its volume in the current bucket against the baseline).
    pub fn current_z(&self, rules: &ScoreRules, asset: &str, now_ms: u64) -> f64 {
        let b = now_ms / rules.bucket_ms.max(1);
        let q = self.buckets.get(asset);
        let count = |i: u64| q.and_then(|q| q.iter().find(|(j, _)| *j == i)).map(|(_, n)| *n as f64).unwrap_or(0.0);
        let history: Vec<f64> =
            (1..=rules.baseline_buckets as u64).filter_map(|k| b.checked_sub(k)).map(count).collect();
        zscore(count(b), &history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_formula() {
        assert_eq!(score(1.0, true, 0.0, 0.0, 2.0), 0.5);
        assert_eq!(score(1.0, true, -1.0, 0.0, 2.0), 1.5);
        assert!((score(1.0, false, 1.0, 0.0, 2.0) - 0.45).abs() < 1e-12);
        assert_eq!(score(2.0, true, 0.5, 6.0, 2.0), 4.0, "full spike doubles");
        assert_eq!(score(1.0, true, 0.5, 4.0, 2.0), 1.5);
        let r = ScoreRules::default();
        assert_eq!(priority(&r, 1.3, true), Priority::High);
        assert_eq!(priority(&r, 1.3, false), Priority::Normal);
        assert_eq!(priority(&r, 1.29, true), Priority::Normal);
        assert_eq!(priority(&r, 0.74, true), Priority::Low);
    }

    #[test]
    fn metrics() {
        assert_eq!(dominance(3, 12), 0.25);
        assert_eq!(dominance(0, 0), 0.0);
        assert_eq!(balance(3, 1), 0.5);
        assert_eq!(balance(0, 0), 0.0);
        assert_eq!(zscore(5.0, &[1.0, 1.0, 1.0]), 4.0, "std floored at 1");
        assert_eq!(zscore(10.0, &[0.0, 4.0]), 4.0);
        assert_eq!(zscore(3.0, &[]), 0.0);
    }

    #[test]
    fn baseline_spike() {
        let r = ScoreRules { bucket_ms: 100, baseline_buckets: 4, ..Default::default() };
        let mut b = Baselines::default();
        for bucket in 0..4u64 {
            b.add(&r, "BTC", bucket * 100 + 1);
        }
        // One mention per bucket so far; one in bucket 4 is 1 against mean 1: no spike.
        assert_eq!(b.z(&r, "BTC", 401), 0.0);
        for _ in 0..5 {
            b.add(&r, "BTC", 450);
        }
        assert_eq!(b.current_z(&r, "BTC", 450), 4.0);
        assert_eq!(b.current_z(&r, "ETH", 450), 0.0);
        b.add(&r, "BTC", 10_000);
        assert_eq!(b.buckets["BTC"].len(), 1, "old buckets dropped");
    }
}
