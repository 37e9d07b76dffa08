//! Training the tokenizer and the predictor on a candle series, deterministic for a seed.
//!
//! Stage 1 trains the tokenizer to reconstruct normalised windows from their coarse bits and from all bits. Stage 2
//! freezes it and trains the predictor with teacher forcing to predict the next coarse and fine tokens. Each stage
//! keeps the weights with the lowest validation loss; checkpoints are written as it goes. Finally P(up) one step ahead
//! is calibrated (Platt) on the validation split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calibration::Calibration;
use crate::config::{PredictorConfig, TokenizerConfig};
use crate::data::{time_features, Candle, Split};
use crate::forecast::{ForecastOptions, Forecaster, ModelMeta, WindowStats};
use crate::init;
use crate::nn::{scalar, Train};
use crate::predictor::KronosPredictor;
use crate::tokenizer::KronosTokenizer;
use crate::weights::{CONFIG, WEIGHTS};

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub tokenizer: TokenizerConfig,
    pub predictor: PredictorConfig,
    /// Candles per tokenizer training window.
    pub tokenizer_window: usize,
    /// Context length of the predictor (its `max_context`).
    pub context: usize,
    pub batch: usize,
    pub tokenizer_steps: usize,
    pub predictor_steps: usize,
    pub tokenizer_lr: f64,
    pub predictor_lr: f64,
    pub tokenizer_weight_decay: f64,
    pub predictor_weight_decay: f64,
    pub warmup_steps: usize,
    pub grad_clip: f64,
    /// Validate (and keep the best weights) every this many steps.
    pub eval_every: usize,
    pub val_windows: usize,
    /// Stop a stage after this many validations without improvement (0: never stop early).
    pub patience: usize,
    /// Samples per forecast when calibrating.
    pub calibration_samples: usize,
}

impl TrainConfig {
    /// The shipped model's recipe.
    pub fn shipped(seed: u64) -> Self {
        TrainConfig {
            seed,
            tokenizer: crate::config::presets::shipped_tokenizer(),
            predictor: crate::config::presets::shipped_predictor(),
            tokenizer_window: 64,
            context: 128,
            batch: 32,
            tokenizer_steps: 1200,
            predictor_steps: 3000,
            tokenizer_lr: 2e-3,
            predictor_lr: 5e-4,
            tokenizer_weight_decay: 0.05,
            predictor_weight_decay: 0.1,
            warmup_steps: 100,
            grad_clip: 1.0,
            eval_every: 100,
            val_windows: 64,
            patience: 6,
            calibration_samples: 32,
        }
    }
}

/// Progress callback: `(stage, step, total, message)`.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize, &str);

/// What training produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Where the tokenizer came from: trained here, or loaded from a folder.
    pub tokenizer_source: String,
    pub data_from: i64,
    pub data_to: i64,
    pub train_candles: usize,
    pub validation_candles: usize,
    pub tokenizer_params: usize,
    pub predictor_params: usize,
    pub tokenizer_best_val_loss: f64,
    pub tokenizer_best_step: usize,
    pub predictor_best_val_loss: f64,
    pub predictor_best_step: usize,
    pub seconds_tokenizer: f64,
    pub seconds_predictor: f64,
    pub seconds_calibration: f64,
    pub calibration: Calibration,
    pub config: TrainConfig,
}

fn lr_at(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let p = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    0.05 * peak + 0.95 * peak * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

fn clip_grads(vars: &[Var], grads: &mut GradStore, max_norm: f64) -> candle_core::Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let f = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * f)?);
            }
        }
    }
    Ok(norm)
}

/// Window starts for validation, spread evenly over a range.
fn spread(range: (usize, usize), len: usize, count: usize) -> Vec<usize> {
    let span = range.1.saturating_sub(range.0 + len);
    (0..count).map(|i| range.0 + span * i / count.max(1)).collect()
}

/// A batch of normalised windows `[b, len, 6]`, stats from the first `stats_len` candles of each window, and the
/// calendar features `[b, len, 5]`.
fn batch(candles: &[Candle], starts: &[usize], len: usize, stats_len: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * len * 6);
    let mut st = Vec::with_capacity(starts.len() * len * 5);
    for &s in starts {
        let w = &candles[s..s + len];
        let stats = WindowStats::of(&w[..stats_len]);
        for c in w {
            x.extend(stats.normalize(c));
            st.extend(time_features(c.timestamp));
        }
    }
    let b = starts.len();
    Ok((Tensor::from_vec(x, (b, len, 6), &Device::Cpu)?, Tensor::from_vec(st, (b, len, 5), &Device::Cpu)?))
}

fn tokenizer_loss(tok: &KronosTokenizer, x: &Tensor, train: Option<&Train>) -> candle_core::Result<Tensor> {
    let out = tok.forward_train(x, train)?;
    let pre = candle_nn::loss::mse(&out.recon_pre, x)?;
    let all = candle_nn::loss::mse(&out.recon, x)?;
    ((pre + all)? + out.bsq_loss)? / 2.0
}

fn predictor_loss(
    tok: &KronosTokenizer,
    pred: &KronosPredictor,
    x: &Tensor,
    stamp: &Tensor,
    train: Option<&Train>,
) -> candle_core::Result<Tensor> {
    let (s1, s2) = tok.encode(x)?;
    let (b, t) = s1.dims2()?;
    let c = t - 1;
    let (l1, l2) = pred.forward_train(
        &s1.narrow(1, 0, c)?,
        &s2.narrow(1, 0, c)?,
        &stamp.narrow(1, 0, c)?,
        &s1.narrow(1, 1, c)?,
        train,
    )?;
    let v1 = l1.dim(2)?;
    let v2 = l2.dim(2)?;
    let ce1 = candle_nn::loss::cross_entropy(&l1.reshape((b * c, v1))?, &s1.narrow(1, 1, c)?.flatten_all()?)?;
    let ce2 = candle_nn::loss::cross_entropy(&l2.reshape((b * c, v2))?, &s2.narrow(1, 1, c)?.flatten_all()?)?;
    (ce1 + ce2)? / 2.0
}

fn save_folder(dir: &Path, map: &VarMap, config: &impl Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(CONFIG), serde_json::to_string_pretty(config)? + "\n")?;
    // Write to a temporary name first so an interrupted run never leaves a torn weights file.
    let tmp = dir.join(format!("{WEIGHTS}.tmp"));
    map.save(&tmp)?;
    std::fs::rename(&tmp, dir.join(WEIGHTS))?;
    Ok(())
}

fn snapshot(map: &VarMap) -> candle_core::Result<Vec<(String, Tensor)>> {
    let data = map.data().lock().expect("varmap lock");
    let mut v: Vec<(String, Tensor)> =
        data.iter().map(|(k, var)| Ok((k.clone(), var.as_tensor().copy()?))).collect::<candle_core::Result<_>>()?;
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn restore(map: &VarMap, snap: &[(String, Tensor)]) -> candle_core::Result<()> {
    let data = map.data().lock().expect("varmap lock");
    for (k, t) in snap {
        data[k].set(t)?;
    }
    Ok(())
}

/// Trains both models on `candles` (its train split; the validation split selects weights and fits calibration) and
/// writes the model folder to `out`.
///
/// With `tokenizer_from`, stage 1 is skipped: the tokenizer folder's weights are loaded (its config must equal
/// `cfg.tokenizer`) and only the predictor is trained.
pub fn train(
    candles: &[Candle],
    cfg: &TrainConfig,
    out: &Path,
    tokenizer_from: Option<&Path>,
    progress: Progress,
) -> anyhow::Result<TrainReport> {
    cfg.tokenizer.validate("training config").map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.predictor.validate("training config").map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.predictor.check_tokenizer(&cfg.tokenizer).map_err(anyhow::Error::msg)?;
    let split = Split::chronological(candles.len());
    let need = cfg.context.max(cfg.tokenizer_window) + 2;
    anyhow::ensure!(
        split.train.1 - split.train.0 > need * 4 && split.validation.1 - split.validation.0 > need,
        "not enough candles: {} in total, the splits need at least {} for training and {} for validation",
        candles.len(),
        need * 4,
        need
    );
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let train_ctx = Train::new(ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed));
    let ckpt = out.join("checkpoints");

    // ----- stage 1: tokenizer --------------------------------------------------------------------------------
    let t0 = Instant::now();
    let tok_map = VarMap::new();
    let tok = KronosTokenizer::new(&cfg.tokenizer, VarBuilder::from_varmap(&tok_map, DType::F32, &dev))?;
    init::initialize(&tok_map, cfg.seed ^ 0x70c)?;
    let tok_vars = tok_map.all_vars();
    let tw = cfg.tokenizer_window;
    let val_starts = spread(split.validation, tw, cfg.val_windows);
    let (vx, _) = batch(candles, &val_starts, tw, tw)?;
    let (tok_best, tokenizer_source) = if let Some(dir) = tokenizer_from {
        let (c, w) = crate::weights::folder_files(dir)?;
        let loaded = TokenizerConfig::load(&c)?;
        anyhow::ensure!(
            loaded == cfg.tokenizer,
            "{}: its config differs from the training config's tokenizer",
            c.display()
        );
        let mut m = tok_map;
        m.load(&w).with_context(|| format!("loading {}", w.display()))?;
        let v = scalar(&tokenizer_loss(&tok, &vx, None)?)? as f64;
        save_folder(&out.join("tokenizer"), &m, &cfg.tokenizer)?;
        ((v, 0), format!("loaded from {}", dir.display()))
    } else {
        let mut opt = AdamW::new(
            tok_vars.clone(),
            ParamsAdamW { lr: cfg.tokenizer_lr, weight_decay: cfg.tokenizer_weight_decay, ..Default::default() },
        )?;
        let (mut best, mut best_step, mut best_snap) = (f64::INFINITY, 0, snapshot(&tok_map)?);
        let mut stale = 0;
        for step in 0..cfg.tokenizer_steps {
            opt.set_learning_rate(lr_at(step, cfg.tokenizer_steps, cfg.warmup_steps, cfg.tokenizer_lr));
            let starts: Vec<usize> = (0..cfg.batch).map(|_| rng.gen_range(split.train.0..split.train.1 - tw)).collect();
            let (x, _) = batch(candles, &starts, tw, tw)?;
            let loss = tokenizer_loss(&tok, &x, Some(&train_ctx))?;
            let mut grads = loss.backward()?;
            clip_grads(&tok_vars, &mut grads, cfg.grad_clip)?;
            opt.step(&grads)?;
            if (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.tokenizer_steps {
                let v = scalar(&tokenizer_loss(&tok, &vx, None)?)? as f64;
                if v < best {
                    (best, best_step, best_snap) = (v, step + 1, snapshot(&tok_map)?);
                    stale = 0;
                } else {
                    stale += 1;
                }
                let msg = format!("loss {:.4} val {:.4} best {:.4}@{}", scalar(&loss)?, v, best, best_step);
                progress("tokenizer", step + 1, cfg.tokenizer_steps, &msg);
                save_folder(&ckpt.join("tokenizer"), &tok_map, &cfg.tokenizer)?;
                if cfg.patience > 0 && stale >= cfg.patience {
                    progress(
                        "tokenizer",
                        cfg.tokenizer_steps,
                        cfg.tokenizer_steps,
                        &format!("stopped early at step {}: no improvement for {} validations", step + 1, stale),
                    );
                    break;
                }
            }
        }
        restore(&tok_map, &best_snap)?;
        save_folder(&out.join("tokenizer"), &tok_map, &cfg.tokenizer)?;
        ((best, best_step), "trained".to_string())
    };
    let seconds_tokenizer = t0.elapsed().as_secs_f64();

    // ----- stage 2: predictor --------------------------------------------------------------------------------
    let t1 = Instant::now();
    // Its own random stream, so that training the predictor on a loaded tokenizer equals a full run.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x9ed7);
    let pred_map = VarMap::new();
    let pred = KronosPredictor::new(&cfg.predictor, VarBuilder::from_varmap(&pred_map, DType::F32, &dev))?;
    init::initialize(&pred_map, cfg.seed ^ 0x9ed)?;
    let pred_vars = pred_map.all_vars();
    let mut opt = AdamW::new(
        pred_vars.clone(),
        ParamsAdamW { lr: cfg.predictor_lr, weight_decay: cfg.predictor_weight_decay, ..Default::default() },
    )?;
    let len = cfg.context + 1;
    let val_starts = spread(split.validation, len, cfg.val_windows);
    let (vx, vst) = batch(candles, &val_starts, len, cfg.context)?;
    let (mut best, mut best_step, mut best_snap) = (f64::INFINITY, 0, snapshot(&pred_map)?);
    let mut stale = 0;
    for step in 0..cfg.predictor_steps {
        opt.set_learning_rate(lr_at(step, cfg.predictor_steps, cfg.warmup_steps, cfg.predictor_lr));
        let starts: Vec<usize> = (0..cfg.batch).map(|_| rng.gen_range(split.train.0..split.train.1 - len)).collect();
        let (x, st) = batch(candles, &starts, len, cfg.context)?;
        let loss = predictor_loss(&tok, &pred, &x, &st, Some(&train_ctx))?;
        let mut grads = loss.backward()?;
        clip_grads(&pred_vars, &mut grads, cfg.grad_clip)?;
        opt.step(&grads)?;
        if (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.predictor_steps {
            let v = scalar(&predictor_loss(&tok, &pred, &vx, &vst, None)?)? as f64;
            if v < best {
                (best, best_step, best_snap) = (v, step + 1, snapshot(&pred_map)?);
                stale = 0;
            } else {
                stale += 1;
            }
            let msg = format!("loss {:.4} val {:.4} best {:.4}@{}", scalar(&loss)?, v, best, best_step);
            progress("predictor", step + 1, cfg.predictor_steps, &msg);
            save_folder(&ckpt.join("predictor"), &pred_map, &cfg.predictor)?;
            if cfg.patience > 0 && stale >= cfg.patience {
                progress(
                    "predictor",
                    cfg.predictor_steps,
                    cfg.predictor_steps,
                    &format!("stopped early at step {}: no improvement for {} validations", step + 1, stale),
                );
                break;
            }
        }
    }
    restore(&pred_map, &best_snap)?;
    save_folder(&out.join("predictor"), &pred_map, &cfg.predictor)?;
    let seconds_predictor = t1.elapsed().as_secs_f64();

    // ----- calibration on the validation split ------------------------------------------------------------------
    let t2 = Instant::now();
    let mut meta = ModelMeta {
        name: "kronos".into(),
        max_context: cfg.context,
        calibration: Calibration::Identity,
        calibration_next_move: None,
        training: serde_json::Value::Null,
    };
    let model = Forecaster::new(tok, pred, meta.clone());
    let (calibration, next_move) =
        fit_calibrations(&model, candles, split.validation, cfg.calibration_samples, cfg.seed, progress)?;
    let seconds_calibration = t2.elapsed().as_secs_f64();

    let report = TrainReport {
        tokenizer_source,
        data_from: candles[split.train.0].timestamp,
        data_to: candles[split.validation.1 - 1].timestamp,
        train_candles: split.train.1 - split.train.0,
        validation_candles: split.validation.1 - split.validation.0,
        tokenizer_params: tok_vars.iter().map(|v| v.elem_count()).sum(),
        predictor_params: pred_vars.iter().map(|v| v.elem_count()).sum(),
        tokenizer_best_val_loss: tok_best.0,
        tokenizer_best_step: tok_best.1,
        predictor_best_val_loss: best,
        predictor_best_step: best_step,
        seconds_tokenizer,
        seconds_predictor,
        seconds_calibration,
        calibration: calibration.clone(),
        config: cfg.clone(),
    };
    meta.calibration = calibration;
    meta.calibration_next_move = Some(next_move);
    meta.training = serde_json::to_value(&report)?;
    std::fs::write(out.join("kronos.json"), serde_json::to_string_pretty(&meta)? + "\n")?;
    let _ = std::fs::remove_dir_all(&ckpt);
    Ok(report)
}

/// Calibrations fitted on a range (walk-forward: each forecast sees only earlier candles): the one-step P(up) and
/// the P(up) of the move between steps 1 and 2 (a prediction round's lock→close move). Returns
/// `(one_step, next_move)`.
pub fn fit_calibrations(
    model: &Forecaster,
    candles: &[Candle],
    range: (usize, usize),
    samples: usize,
    seed: u64,
    progress: Progress,
) -> anyhow::Result<(Calibration, Calibration)> {
    let ctx = model.meta.max_context;
    let (mut p1, mut y1, mut p2, mut y2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let start = range.0.max(ctx.min(range.1));
    let end = range.1.saturating_sub(2).min(candles.len().saturating_sub(2));
    anyhow::ensure!(end > start, "the calibration range {}..{} is too short", range.0, range.1);
    let total = end - start;
    for (k, i) in (start..end).enumerate() {
        let opts = ForecastOptions { horizon: 2, samples, seed: seed.wrapping_add(i as u64), ..Default::default() };
        let lo = (i + 1).saturating_sub(ctx);
        let f = model.forecast(&candles[lo..=i], &opts)?;
        let last = candles[i].close;
        let ups = f.paths.iter().filter(|p| p[0] > last).count() as f64;
        p1.push((ups + 0.5) / (f.paths.len() as f64 + 1.0));
        y1.push(candles[i + 1].close > candles[i].close);
        p2.push(crate::forecast::p_next_move(&f.paths));
        y2.push(candles[i + 2].close > candles[i + 1].close);
        if (k + 1) % 200 == 0 || k + 1 == total {
            progress("calibration", k + 1, total, "walk-forward forecasts on the validation split");
        }
    }
    Ok((Calibration::fit_platt(&p1, &y1), Calibration::fit_platt(&p2, &y2)))
}

/// The model folder paths written by [`train`].
pub fn output_paths(out: &Path) -> [PathBuf; 3] {
    [out.join("tokenizer"), out.join("predictor"), out.join("kronos.json")]
}
