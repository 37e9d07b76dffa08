//! Forecasting with a tokenizer + predictor pair: per-window normalisation, tokenisation, autoregressive sampling of
//! several paths (kept, not averaged away), decoding back to prices.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calibration::Calibration;
use crate::config::{PredictorConfig, TokenizerConfig};
use crate::data::{time_features, Candle};
use crate::fast::{Kernel, Model, Precision};
use crate::predictor::KronosPredictor;
use crate::sampling::SamplingParams;
use crate::tokenizer::KronosTokenizer;
use crate::weights;

/// Normalised inputs are clipped to `[-CLIP, CLIP]` (as in the reference).
pub const CLIP: f64 = 5.0;
/// Added to the standard deviation before dividing (as in the reference).
pub const STD_EPS: f64 = 1e-5;

/// Metadata stored beside the two model folders (`kronos.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    /// Longest context the model was trained for: a forecast reads at most `max_context − horizon + 1` candles (see
    /// [`Forecaster::forecast`]).
    pub max_context: usize,
    /// Calibration of P(up) one step ahead, fitted on the validation split.
    pub calibration: Calibration,
    /// Calibration of P(up) of the move between steps 1 and 2 (what a prediction round asks: its lock→close move,
    /// seen from the last completed candle), fitted on the validation split.
    #[serde(default)]
    pub calibration_next_move: Option<Calibration>,
    /// Free-form training record (data range, steps, losses, time).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl ModelMeta {
    /// The calibration of the lock→close move, falling back to the one-step calibration.
    pub fn calibration_for_next_move(&self) -> &Calibration {
        self.calibration_next_move.as_ref().unwrap_or(&self.calibration)
    }
}

/// Per-feature mean and standard deviation of a context window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    pub mean: [f64; 6],
    pub std: [f64; 6],
}

impl WindowStats {
    /// Population statistics of the window's six features.
    pub fn of(candles: &[Candle]) -> WindowStats {
        let n = candles.len().max(1) as f64;
        let mut mean = [0.0; 6];
        for c in candles {
            for (m, v) in mean.iter_mut().zip(c.features()) {
                *m += v / n;
            }
        }
        let mut var = [0.0; 6];
        for c in candles {
            for ((s, v), m) in var.iter_mut().zip(c.features()).zip(mean) {
                *s += (v - m) * (v - m) / n;
            }
        }
        WindowStats { mean, std: var.map(f64::sqrt) }
    }

    /// One candle's features, z-scored and clipped.
    pub fn normalize(&self, c: &Candle) -> [f32; 6] {
        let f = c.features();
        std::array::from_fn(|i| ((f[i] - self.mean[i]) / (self.std[i] + STD_EPS)).clamp(-CLIP, CLIP) as f32)
    }

    /// Feature `i` back in price units.
    pub fn denormalize(&self, i: usize, v: f64) -> f64 {
        v * (self.std[i] + STD_EPS) + self.mean[i]
    }
}

/// What to forecast and how to sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastOptions {
    /// Steps (candles) ahead.
    pub horizon: usize,
    /// Sample paths.
    pub samples: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
}

impl Default for ForecastOptions {
    fn default() -> Self {
        ForecastOptions { horizon: 1, samples: 32, sampling: SamplingParams::default(), seed: 42 }
    }
}

/// A probabilistic forecast of the close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The last close of the context.
    pub last_close: f64,
    pub horizon: usize,
    /// Share of sample paths whose close at the horizon is above `last_close`, continuity-corrected:
    /// `(ups + 1/2) / (paths + 1)`, so that it is never exactly 0 or 1 (uncalibrated).
    pub p_up_raw: f64,
    /// `p_up_raw` after the model's calibration.
    pub p_up: f64,
    /// `(quantile, close)` at the horizon for 5%, 25%, 50%, 75%, 95%.
    pub quantiles: Vec<(f64, f64)>,
    /// Mean close at each step over the paths.
    pub mean_path: Vec<f64>,
    /// Every sampled path: close at each step.
    pub paths: Vec<Vec<f64>>,
}

/// A loaded model pair.
pub struct Forecaster {
    pub tokenizer: KronosTokenizer,
    pub predictor: KronosPredictor,
    pub meta: ModelMeta,
    precision: Precision,
    /// The model prepared for the inference engine, built on first use.
    engine: OnceLock<Model>,
}

impl Forecaster {
    /// Loads a model folder: `tokenizer/` and `predictor/` (each `config.json` + `model.safetensors`, the layout of the
    /// published checkpoints) and `kronos.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Forecaster> {
        let meta_path = dir.join("kronos.json");
        let meta: ModelMeta = serde_json::from_str(
            &std::fs::read_to_string(&meta_path).with_context(|| format!("{}: cannot read", meta_path.display()))?,
        )
        .with_context(|| format!("{}: not a Kronos model description", meta_path.display()))?;
        Self::load_parts(&dir.join("tokenizer"), &dir.join("predictor"), meta)
    }

    /// Loads a tokenizer folder and a predictor folder (e.g. Kronos-Tokenizer-base and Kronos-mini as downloaded).
    pub fn load_parts(tokenizer_dir: &Path, predictor_dir: &Path, meta: ModelMeta) -> anyhow::Result<Forecaster> {
        let (tc, tw) = weights::folder_files(tokenizer_dir)?;
        let (pc, pw) = weights::folder_files(predictor_dir)?;
        let tcfg = TokenizerConfig::load(&tc)?;
        let pcfg = PredictorConfig::load(&pc)?;
        pcfg.check_tokenizer(&tcfg).map_err(|e| anyhow::anyhow!("{}: {e}", predictor_dir.display()))?;
        let dev = Device::Cpu;
        let tokenizer = KronosTokenizer::new(&tcfg, weights::var_builder(&tw, &dev)?)
            .with_context(|| format!("{}: weights do not fit the config", tw.display()))?;
        let predictor = KronosPredictor::new(&pcfg, weights::var_builder(&pw, &dev)?)
            .with_context(|| format!("{}: weights do not fit the config", pw.display()))?;
        Ok(Forecaster::new(tokenizer, predictor, meta))
    }

    /// A model pair that forecasts in f32.
    pub fn new(tokenizer: KronosTokenizer, predictor: KronosPredictor, meta: ModelMeta) -> Forecaster {
        Forecaster { tokenizer, predictor, meta, precision: Precision::F32, engine: OnceLock::new() }
    }

    /// A model of the given sizes with random weights (for speed measurements: its forecasts mean nothing).
    pub fn random(
        tokenizer: &TokenizerConfig,
        predictor: &PredictorConfig,
        max_context: usize,
    ) -> anyhow::Result<Forecaster> {
        let (tm, pm) = (candle_nn::VarMap::new(), candle_nn::VarMap::new());
        let vb = |m| candle_nn::VarBuilder::from_varmap(m, candle_core::DType::F32, &Device::Cpu);
        let meta = ModelMeta {
            name: "random".into(),
            max_context,
            calibration: Calibration::Identity,
            calibration_next_move: None,
            training: serde_json::Value::Null,
        };
        Ok(Forecaster::new(KronosTokenizer::new(tokenizer, vb(&tm))?, KronosPredictor::new(predictor, vb(&pm))?, meta))
    }

    /// The same model forecasting at `precision` (bf16 runs on Intel AMX where the CPU has it, emulated elsewhere).
    pub fn with_precision(mut self, precision: Precision) -> Forecaster {
        self.precision = precision;
        self.engine = OnceLock::new();
        self
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// How this machine runs the model's matrix products at its precision.
    pub fn kernel(&self) -> Kernel {
        Kernel::for_precision(self.precision)
    }

    fn engine(&self) -> anyhow::Result<&Model> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let e = Model::new(&self.tokenizer, &self.predictor, self.kernel())?;
        Ok(self.engine.get_or_init(|| e))
    }

    /// How many of `candles` candles a forecast `horizon` steps ahead reads: the last `max_context − horizon + 1`
    /// (or all, if fewer).
    pub fn context_used(&self, candles: usize, horizon: usize) -> usize {
        candles.min((self.meta.max_context + 1).saturating_sub(horizon.max(1)))
    }

    /// Forecasts the close `opts.horizon` steps after the last candle.
    ///
    /// It reads the last `max_context − horizon + 1` candles (or all, if fewer) and normalises over those, so that
    /// the predictor never sees more than `max_context` tokens; the decoder reads the last `max_context` tokens of
    /// context and forecast. On such a context this is what the official code does (`context_start = max(0, total −
    /// max_context)`: at the boundary its decoder leaves out the first context token). Given more candles, the
    /// official predictor normalises over all of them and slides its window at each step (recomputing it); this one
    /// leaves out the earlier candles instead, keeping every step a cached continuation.
    pub fn forecast(&self, candles: &[Candle], opts: &ForecastOptions) -> anyhow::Result<Forecast> {
        opts.sampling.validate().map_err(anyhow::Error::msg)?;
        if opts.horizon == 0 || opts.samples == 0 {
            bail!("horizon and samples must be at least 1");
        }
        if candles.len() < 2 {
            bail!("need at least 2 candles of context, got {}", candles.len());
        }
        if opts.horizon >= self.meta.max_context {
            bail!(
                "horizon {} leaves no room for 2 candles of context in the model's {} tokens",
                opts.horizon,
                self.meta.max_context
            );
        }
        let ctx = &candles[candles.len() - self.context_used(candles.len(), opts.horizon)..];
        let stats = WindowStats::of(ctx);
        let t = ctx.len();
        let n = opts.samples;

        let x: Vec<f32> = ctx.iter().flat_map(|c| stats.normalize(c)).collect();
        let m = self.engine()?;
        let (s1, s2) = m.encode(&x, t);
        let stamps: Vec<u32> = ctx.iter().flat_map(|c| time_features(c.timestamp)).collect();
        let step = (ctx[t - 1].timestamp - ctx[t - 2].timestamp).max(1);

        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut cache = m.predictor_cache();
        let h = m.hidden(&s1, &s2, &stamps, 1, t, &mut cache)?;
        let d = h.len() / t;
        let mut dep = m.dep_history(&h);
        // Step 0 works on the shared history alone (one row of hidden state for every path); later steps continue it
        // as n paths without copying it.
        let mut last = h[(t - 1) * d..].to_vec();
        let mut gen1 = vec![vec![0u32; opts.horizon]; n];
        let mut gen2 = vec![vec![0u32; opts.horizon]; n];
        for step_i in 0..opts.horizon {
            if step_i == 1 {
                for c in cache.iter_mut() {
                    c.fan_out(n).map_err(anyhow::Error::msg)?;
                }
            }
            if step_i > 0 {
                let prev1: Vec<u32> = gen1.iter().map(|g| g[step_i - 1]).collect();
                let prev2: Vec<u32> = gen2.iter().map(|g| g[step_i - 1]).collect();
                let ts = ctx[t - 1].timestamp + step * step_i as i64;
                let st: Vec<u32> = (0..n).flat_map(|_| time_features(ts)).collect();
                last = m.hidden(&prev1, &prev2, &st, n, 1, &mut cache)?;
                m.dep_extend(&mut dep, &last);
            }
            // At step 0 every path has the same history: the coarse distribution is computed once and drawn n
            // times, and paths that drew the same coarse token share their fine distribution.
            let shared = step_i == 0;
            let l1 = m.s1_logits(&last);
            let width = l1.len() / (last.len() / d);
            let p1 = shared.then(|| opts.sampling.distribution(&l1[..width]));
            let s1_new: Vec<u32> = (0..n)
                .map(|i| match &p1 {
                    Some(p) => SamplingParams::draw(p, &mut rng),
                    None => opts.sampling.sample(&l1[i * width..(i + 1) * width], &mut rng),
                })
                .collect();
            let l2 = m.s2_logits(&dep, &s1_new, &last)?;
            let width2 = l2.len() / n;
            let mut p2: std::collections::HashMap<u32, Vec<f64>> = Default::default();
            for (i, row) in l2.chunks_exact(width2).enumerate() {
                gen1[i][step_i] = s1_new[i];
                gen2[i][step_i] = if shared {
                    let p = p2.entry(s1_new[i]).or_insert_with(|| opts.sampling.distribution(row));
                    SamplingParams::draw(p, &mut rng)
                } else {
                    opts.sampling.sample(row, &mut rng)
                };
            }
        }

        // The decoder reads the last max_context tokens: at the boundary the first context token is left out.
        let skip = (t + opts.horizon).saturating_sub(self.meta.max_context);
        let mut dcache = m.decoder_cache();
        m.decode_prefill(&s1[skip..], &s2[skip..], t - skip, &mut dcache);
        for c in dcache.iter_mut() {
            c.fan_out(n).map_err(anyhow::Error::msg)?;
        }
        let rec = m.decode(&gen1.concat(), &gen2.concat(), n, opts.horizon, &mut dcache);
        m.recycle(cache);
        m.recycle(dcache);
        let rec: Vec<Vec<[f32; 6]>> = rec
            .chunks_exact(opts.horizon * 6)
            .map(|p| p.chunks_exact(6).map(|f| std::array::from_fn(|j| f[j])).collect())
            .collect();
        let paths: Vec<Vec<f64>> =
            rec.iter().map(|p| p.iter().map(|f| stats.denormalize(3, f[3] as f64)).collect()).collect();
        Ok(summarize(paths, ctx[t - 1].close, &self.meta.calibration))
    }
}

/// Turns sample paths into a forecast.
pub fn summarize(paths: Vec<Vec<f64>>, last_close: f64, calibration: &Calibration) -> Forecast {
    let horizon = paths.first().map(Vec::len).unwrap_or(0);
    let n = paths.len().max(1) as f64;
    let mut ends: Vec<f64> = paths.iter().map(|p| *p.last().unwrap_or(&last_close)).collect();
    ends.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let up = paths.iter().filter(|p| p.last().copied().unwrap_or(last_close) > last_close).count() as f64;
    let p_up_raw = (up + 0.5) / (n + 1.0);
    let quantiles = [0.05, 0.25, 0.5, 0.75, 0.95].iter().map(|&q| (q, quantile(&ends, q))).collect();
    let mean_path = (0..horizon).map(|i| paths.iter().map(|p| p[i]).sum::<f64>() / n).collect();
    Forecast { last_close, horizon, p_up_raw, p_up: calibration.apply(p_up_raw), quantiles, mean_path, paths }
}

/// P(up) of the move from step 1 to step 2 of sample paths — a prediction round's lock→close move seen from the last
/// completed candle — continuity-corrected like `p_up_raw`.
pub fn p_next_move(paths: &[Vec<f64>]) -> f64 {
    let n = paths.len() as f64;
    let up = paths.iter().filter(|p| p.len() >= 2 && p[1] > p[0]).count() as f64;
    (up + 0.5) / (n + 1.0)
}

/// Linear-interpolated quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets;
    use crate::weights::{CONFIG, WEIGHTS};
    use candle_core::{DType, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    /// A tokenizer and predictor small enough for a test (4+4 code bits, two blocks each).
    fn small_configs(learn_te: bool) -> (TokenizerConfig, PredictorConfig) {
        let mut t = presets::shipped_tokenizer();
        (t.d_model, t.n_heads, t.ff_dim, t.n_enc_layers, t.n_dec_layers) = (32, 2, 64, 3, 3);
        (t.s1_bits, t.s2_bits, t.group_size) = (4, 4, 4);
        let mut p = presets::shipped_predictor();
        (p.s1_bits, p.s2_bits, p.n_layers, p.d_model, p.n_heads, p.ff_dim) = (4, 4, 2, 32, 2, 64);
        p.learn_te = learn_te;
        (t, p)
    }

    fn meta(max_context: usize) -> ModelMeta {
        ModelMeta {
            name: "test".into(),
            max_context,
            calibration: Calibration::Identity,
            calibration_next_move: None,
            training: serde_json::Value::Null,
        }
    }

    fn save_folder(dir: &Path, map: &VarMap, config: String) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(CONFIG), config).unwrap();
        map.save(dir.join(WEIGHTS)).unwrap();
    }

    /// Writes a seeded model folder in the layout the official code's `save_pretrained` gives. A predictor with
    /// fixed calendar tables (`learn_te: false`) gets them as the official `Kronos` saves them,
    /// `time_emb.<name>.emb.weight`, drawn like every other embedding table: its `_init_weights` overwrites the
    /// sinusoids.
    fn write_official(dir: &Path, tc: &TokenizerConfig, pc: &PredictorConfig, seed: u64, max_context: usize) {
        let vb = |m| VarBuilder::from_varmap(m, DType::F32, &Device::Cpu);
        let tm = VarMap::new();
        KronosTokenizer::new(tc, vb(&tm)).unwrap();
        crate::init::initialize(&tm, seed).unwrap();
        save_folder(&dir.join("tokenizer"), &tm, serde_json::to_string(tc).unwrap());
        let pm = VarMap::new();
        KronosPredictor::new(pc, vb(&pm)).unwrap();
        if !pc.learn_te {
            for (name, n) in
                [("minute_embed", 60), ("hour_embed", 24), ("weekday_embed", 7), ("day_embed", 32), ("month_embed", 13)]
            {
                let path = format!("time_emb.{name}.emb.weight");
                pm.get((n, pc.d_model), &path, candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
            }
        }
        crate::init::initialize(&pm, seed + 1).unwrap();
        save_folder(&dir.join("predictor"), &pm, serde_json::to_string(pc).unwrap());
        std::fs::write(dir.join("kronos.json"), serde_json::to_string(&meta(max_context)).unwrap()).unwrap();
    }

    /// Hourly candles, minutes past the hour varying, closes wandering around 100.
    fn candles(n: usize) -> Vec<Candle> {
        (0..n as i64)
            .map(|i| {
                let close = 100.0 + ((i * 37 % 23) as f64 - 11.0) * 0.4 + (i as f64 * 0.3).sin();
                Candle {
                    timestamp: 1_600_000_000 + i * 3660,
                    open: close - 0.2,
                    high: close + 0.6 + (i % 3) as f64 * 0.1,
                    low: close - 0.5,
                    close,
                    volume: 10.0 + (i * 7 % 5) as f64,
                    amount: close * (10.0 + (i * 7 % 5) as f64),
                }
            })
            .collect()
    }

    /// The most likely token at every step (top-k 1): the same whatever the random draws.
    fn greedy(horizon: usize) -> ForecastOptions {
        ForecastOptions {
            horizon,
            samples: 2,
            sampling: SamplingParams { temperature: 1.0, top_k: 1, top_p: 1.0 },
            seed: 3,
        }
    }

    fn ids(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<u32>().unwrap()
    }

    fn argmax(t: &Tensor) -> u32 {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best }) as u32
    }

    /// Greedy forecasting as the official `KronosPredictor.predict` and `auto_regressive_inference` do it, on the
    /// candle model and without a cache: statistics and tokens of every given candle, at each step the predictor on
    /// the last `max_context` tokens (`context_start = max(0, total - max_context)`), then the decoder on the last
    /// `max_context` tokens of context and forecast. Returns the closes and the scale of the close (std + eps).
    fn official_greedy(f: &Forecaster, candles: &[Candle], horizon: usize) -> (Vec<f64>, f64) {
        let dev = Device::Cpu;
        let (n, max) = (candles.len(), f.meta.max_context);
        let stats = WindowStats::of(candles);
        let x: Vec<f32> = candles.iter().flat_map(|c| stats.normalize(c)).collect();
        let (a, b) = f.tokenizer.encode(&Tensor::from_vec(x, (1, n, 6), &dev).unwrap()).unwrap();
        let (mut s1, mut s2) = (ids(&a), ids(&b));
        let last = candles[n - 1].timestamp;
        let step = last - candles[n - 2].timestamp;
        let stamps: Vec<[u32; 5]> = candles
            .iter()
            .map(|c| c.timestamp)
            .chain((1..=horizon as i64).map(|i| last + i * step))
            .map(time_features)
            .collect();
        let row = |v: &[u32]| Tensor::from_vec(v.to_vec(), (1, v.len()), &dev).unwrap();
        for i in 0..horizon {
            let end = n + i;
            let start = end.saturating_sub(max);
            let st = Tensor::from_vec(stamps[start..end].concat(), (1, end - start, 5), &dev).unwrap();
            let h = f.predictor.hidden(&row(&s1[start..end]), &row(&s2[start..end]), &st, None).unwrap();
            let c1 = argmax(&f.predictor.s1_logits(&h.narrow(1, end - start - 1, 1).unwrap()).unwrap());
            let c2 = argmax(&f.predictor.s2_logits_last(&h, &Tensor::new(&[[c1]], &dev).unwrap()).unwrap());
            s1.push(c1);
            s2.push(c2);
        }
        let start = (n + horizon).saturating_sub(max);
        let z = f.tokenizer.decode(&row(&s1[start..]), &row(&s2[start..])).unwrap();
        let z = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let rows = z.len() / 6;
        let closes = (rows - horizon..rows).map(|r| stats.denormalize(3, z[r * 6 + 3] as f64)).collect();
        (closes, stats.std[3] + STD_EPS)
    }

    /// The official `Kronos` saves fixed calendar tables (`learn_te: false`) as `time_emb.<name>.emb.weight`, and
    /// what it saves are not sinusoids (its `_init_weights` draws them again): a forecaster must use the stored
    /// tables, in the candle model and in the engine. The same weights loaded as learned tables are the reference.
    #[test]
    fn fixed_calendar_tables_come_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (tc, pc) = small_configs(false);
        write_official(dir.path(), &tc, &pc, 11, 32);
        let fixed = Forecaster::load(dir.path()).unwrap();

        let learned_dir = dir.path().join("learned");
        std::fs::create_dir_all(&learned_dir).unwrap();
        let learned_cfg = PredictorConfig { learn_te: true, ..pc.clone() };
        std::fs::write(learned_dir.join(CONFIG), serde_json::to_string(&learned_cfg).unwrap()).unwrap();
        let stored = candle_core::safetensors::load(dir.path().join("predictor").join(WEIGHTS), &Device::Cpu).unwrap();
        assert!(stored.contains_key("time_emb.month_embed.emb.weight"));
        let renamed: std::collections::HashMap<String, Tensor> =
            stored.into_iter().map(|(k, v)| (k.replace(".emb.weight", ".weight"), v)).collect();
        candle_core::safetensors::save(&renamed, learned_dir.join(WEIGHTS)).unwrap();
        let learned = Forecaster::load_parts(&dir.path().join("tokenizer"), &learned_dir, meta(32)).unwrap();

        // The candle model.
        let dev = Device::Cpu;
        let c = candles(20);
        let st: Vec<u32> = c.iter().flat_map(|c| time_features(c.timestamp)).collect();
        let st = Tensor::from_vec(st, (1, 20, 5), &dev).unwrap();
        let s1 = Tensor::from_vec((0..20u32).map(|i| i * 7 % 16).collect::<Vec<_>>(), (1, 20), &dev).unwrap();
        let s2 = Tensor::from_vec((0..20u32).map(|i| i * 5 % 16).collect::<Vec<_>>(), (1, 20), &dev).unwrap();
        let h = |f: &Forecaster| f.predictor.hidden(&s1, &s2, &st, None).unwrap().flatten_all().unwrap();
        let diff = (h(&fixed) - h(&learned)).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "hidden states differ by {diff}");

        // The engine (forecasts run on it).
        let (a, b) = (fixed.forecast(&c, &greedy(3)).unwrap(), learned.forecast(&c, &greedy(3)).unwrap());
        assert_eq!(a.paths, b.paths);
    }

    /// At the context boundary (max_context − horizon + 1 candles, the most a forecast uses) the decoder reads the
    /// last max_context tokens, as the official code's does: its first context token is dropped. Given more
    /// candles, a forecast uses the last max_context − horizon + 1 of them (documented difference: the official
    /// predictor normalises over all it is given and slides its window).
    #[test]
    fn context_boundary_follows_the_official_decoder_window() {
        let dir = tempfile::tempdir().unwrap();
        let (tc, pc) = small_configs(true);
        let (max, h) = (16, 3);
        write_official(dir.path(), &tc, &pc, 5, max);
        let f = Forecaster::load(dir.path()).unwrap();
        let c = candles(40);
        let ctx = &c[c.len() - (max - h + 1)..];
        let got = f.forecast(ctx, &greedy(h)).unwrap();
        let (want, scale) = official_greedy(&f, ctx, h);
        for path in &got.paths {
            let worst = path.iter().zip(&want).fold(0f64, |m, (g, w)| m.max((g - w).abs() / scale));
            assert!(worst < 1e-4, "closes {path:?}, official {want:?}: {worst} standard deviations apart");
        }
        assert_eq!(f.forecast(&c, &greedy(h)).unwrap().paths, got.paths);
        // What `kronos forecast predict` reports as the context it read.
        assert_eq!(f.context_used(c.len(), h), max - h + 1);
        assert_eq!(f.context_used(5, h), 5);
        assert_eq!(f.context_used(c.len(), 1), max);
    }

    #[test]
    fn normalisation_round_trips_and_clips() {
        let c = |close: f64| Candle {
            timestamp: 0,
            open: close,
            high: close,
            low: close,
            close,
            volume: 1.0,
            amount: close,
        };
        let w = vec![c(100.0), c(102.0), c(98.0), c(100.0)];
        let s = WindowStats::of(&w);
        assert!((s.mean[3] - 100.0).abs() < 1e-12);
        let z = s.normalize(&c(102.0));
        assert!((s.denormalize(3, z[3] as f64) - 102.0).abs() < 1e-3);
        assert_eq!(s.normalize(&c(10_000.0))[3], CLIP as f32);
    }

    #[test]
    fn summary_keeps_paths_and_counts_ups() {
        let paths = vec![vec![101.0, 103.0], vec![99.0, 97.0], vec![100.5, 100.2], vec![100.0, 99.0]];
        let f = summarize(paths.clone(), 100.0, &Calibration::Identity);
        assert_eq!(f.paths, paths);
        assert_eq!(f.p_up_raw, 2.5 / 5.0);
        let all_up = summarize(vec![vec![101.0]; 3], 100.0, &Calibration::Identity);
        assert_eq!(all_up.p_up_raw, 3.5 / 4.0);
        assert_eq!(f.mean_path.len(), 2);
        assert!((f.mean_path[0] - 100.125).abs() < 1e-12);
        assert_eq!(f.quantiles[2].0, 0.5);
        assert!((f.quantiles[2].1 - 99.6).abs() < 1e-9);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.25), 1.5);
    }
}
