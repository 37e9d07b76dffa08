//! Token sampling: temperature, top-k and nucleus (top-p) filtering, from a seeded stream.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How tokens are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Logits are divided by this (> 0); 1.0 leaves them as they are.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens, and every token tied with the `top_k`-th (0 = no limit). When set,
    /// `top_p` is not applied: the official filter (`top_k_top_p_filtering`) applies top-k and returns.
    pub top_k: usize,
    /// Keep the most likely tokens up to and including the first whose cumulative probability exceeds `top_p`
    /// (1.0 = no limit); only when `top_k` is 0.
    pub top_p: f64,
}

impl Default for SamplingParams {
    /// T = 1.0, no top-k, top-p 0.99: the defaults of the official `auto_regressive_inference` (its
    /// `KronosPredictor.predict` passes top-p 0.9 by default).
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.99 }
    }
}

impl SamplingParams {
    /// Checks the values; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be above 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }

    /// The filtered probability distribution over one row of logits.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f64> {
        let t = self.temperature;
        // Tokens by falling logit, ties by index (a total order: a NaN logit cannot make the sort panic).
        let mut order: Vec<(f32, usize)> = logits.iter().copied().zip(0..).collect();
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let idx: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
        let max = logits[idx[0]] as f64 / t;
        let mut probs = vec![0f64; logits.len()];
        let mut total = 0.0;
        for &i in &idx {
            let p = ((logits[i] as f64 / t) - max).exp();
            probs[i] = p;
            total += p;
        }
        // The official filter's order: top-k alone when it is set, top-p otherwise.
        let mut keep = idx.len();
        if self.top_k > 0 {
            // Tokens whose logit reaches the k-th largest: the first k and any tied with the k-th.
            let k = self.top_k.min(idx.len());
            let kth = logits[idx[k - 1]];
            keep = idx.iter().take_while(|&&i| logits[i] >= kth).count().max(k);
        } else if self.top_p < 1.0 {
            // The sorted tokens up to and including the first whose cumulative mass exceeds top_p.
            let mut cum = 0.0;
            for (n, &i) in idx.iter().enumerate() {
                cum += probs[i] / total;
                if cum > self.top_p {
                    keep = n + 1;
                    break;
                }
            }
        }
        for &i in &idx[keep..] {
            probs[i] = 0.0;
        }
        let kept: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= kept);
        probs
    }

    /// Draws one token index.
    pub fn sample(&self, logits: &[f32], rng: &mut ChaCha8Rng) -> u32 {
        Self::draw(&self.distribution(logits), rng)
    }

    /// Draws one token index from a [`SamplingParams::distribution`] (one random number, like
    /// [`SamplingParams::sample`]).
    pub fn draw(probs: &[f64], rng: &mut ChaCha8Rng) -> u32 {
        let u: f64 = rng.gen();
        let mut cum = 0.0;
        let mut last = 0;
        for (i, p) in probs.iter().enumerate() {
            if *p > 0.0 {
                last = i;
                cum += p;
                if u < cum {
                    return i as u32;
                }
            }
        }
        last as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn filters_follow_their_definitions() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let all = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 }.distribution(&logits);
        assert!((all.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(all[0] > all[1] && all[1] > all[2]);
        let k2 = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0 }.distribution(&logits);
        assert_eq!(k2[2], 0.0);
        assert!((k2[0] + k2[1] - 1.0).abs() < 1e-12);
        // p(top) = e^2 / (e^2 + e + 1 + e^-1) ~ 0.644: top_p 0.5 keeps one token, 0.8 keeps two.
        let p5 = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.5 }.distribution(&logits);
        assert_eq!(p5[0], 1.0);
        let p8 = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.8 }.distribution(&logits);
        assert!(p8[1] > 0.0 && p8[2] == 0.0);
        let cold = SamplingParams { temperature: 0.1, top_k: 0, top_p: 1.0 }.distribution(&logits);
        assert!(cold[0] > 0.99);
        assert!(SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 }.validate().is_err());
        assert!(SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.0 }.validate().is_err());
    }

    /// The official filter applies top-k alone when it is set (top-p only without it), and keeps every token tied
    /// with the k-th (it removes the logits below the k-th largest).
    #[test]
    fn top_k_applies_alone_and_keeps_ties_as_in_the_official_filter() {
        let logits = [4.0f32, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0];
        let k5 = SamplingParams { temperature: 1.0, top_k: 5, top_p: 1.0 }.distribution(&logits);
        let both = SamplingParams { temperature: 1.0, top_k: 5, top_p: 0.001 }.distribution(&logits);
        assert_eq!(both, k5);
        assert_eq!(both.iter().filter(|&&p| p > 0.0).count(), 5);
        let tied = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0 }.distribution(&[3.0, 2.0, 1.0, 2.0, 2.0]);
        assert_eq!(tied.iter().map(|&p| p > 0.0).collect::<Vec<_>>(), [true, true, false, true, true]);
    }

    #[test]
    fn sampling_is_deterministic_for_a_seed_and_matches_the_distribution() {
        let logits = [0.0f32, 1.0, 2.0];
        let sp = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 };
        let draw = |seed| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..20_000).map(|_| sp.sample(&logits, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        let d = draw(4);
        let freq2 = d.iter().filter(|&&x| x == 2).count() as f64 / d.len() as f64;
        let want = sp.distribution(&logits)[2];
        assert!((freq2 - want).abs() < 0.015, "{freq2} vs {want}");
    }
}
