//! Walk-forward evaluation of the model against the baselines.
//!
//! The candles are cut in time order into a fitting range, a calibration range and an evaluation range (by default
//! 70% / 15% / 15%). Baselines are fitted on the fitting range; the model's probabilities are calibrated on the
//! calibration range; then every forecast in the evaluation range sees only candles up to its own time. Nothing
//! from the evaluation range is used before it is forecast.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baselines::{self, went_up, Baselines};
use crate::calibration::Calibration;
use crate::data::{Candle, Split};
use crate::forecast::{ForecastOptions, Forecaster};
use crate::metrics::{self, Scores};
use crate::sampling::SamplingParams;

/// How the model's probabilities are calibrated before scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CalibrationMethod {
    /// Platt scaling fitted on the calibration range at the evaluated horizon.
    Platt,
    /// Isotonic regression fitted on the calibration range.
    Isotonic,
    /// The calibration stored with the model (fitted one step ahead on its own validation split).
    Stored,
    /// Raw sample frequencies.
    None,
}

/// Evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalOptions {
    pub horizon: usize,
    pub samples: usize,
    pub seed: u64,
    pub sampling: SamplingParams,
    /// Evaluation range `[from, to)` as candle indices; `None` for the last 15%.
    pub range: Option<(usize, usize)>,
    /// Forecast every `stride`-th candle of the evaluation range.
    pub stride: usize,
    /// Forecast every `calibration_stride`-th candle of the calibration range.
    pub calibration_stride: usize,
    pub calibration: CalibrationMethod,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            horizon: 1,
            samples: 32,
            seed: 7,
            sampling: SamplingParams::default(),
            range: None,
            stride: 1,
            calibration_stride: 1,
            calibration: CalibrationMethod::Platt,
        }
    }
}

/// A reliability bin: mean forecast, observed frequency, count.
pub type Bin = (f64, f64, usize);

/// The ranges an evaluation used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ranges {
    pub fit: (usize, usize),
    pub calibration: (usize, usize),
    pub evaluation: (usize, usize),
}

/// Everything an evaluation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub horizon: usize,
    pub ranges: Ranges,
    /// First and last forecast times (unix seconds).
    pub from_ts: i64,
    pub to_ts: i64,
    /// Scores keyed by predictor, in report order.
    pub scores: Vec<(String, Scores)>,
    /// Reliability bins per predictor (for the diagram).
    pub reliability: Vec<(String, Vec<Bin>)>,
    pub calibration: Calibration,
}

impl EvalReport {
    /// `{ predictor: {n, accuracy, accuracy_ci95, brier, brier_skill, log_loss, ece} }`.
    pub fn json(&self) -> serde_json::Value {
        let m: BTreeMap<&str, &Scores> = self.scores.iter().map(|(k, v)| (k.as_str(), v)).collect();
        serde_json::to_value(m).expect("scores serialise")
    }

    /// A fixed-width table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<12} {:>6} {:>9} {:>17} {:>8} {:>8} {:>9} {:>7}\n",
            "predictor", "n", "accuracy", "95% interval", "brier", "skill", "log loss", "ece"
        );
        for (name, sc) in &self.scores {
            s += &format!(
                "{:<12} {:>6} {:>8.2}% {:>7.2}%-{:>6.2}% {:>8.4} {:>+8.4} {:>9.4} {:>7.4}\n",
                name,
                sc.n,
                sc.accuracy * 100.0,
                sc.accuracy_ci95[0] * 100.0,
                sc.accuracy_ci95[1] * 100.0,
                sc.brier,
                sc.brier_skill,
                sc.log_loss,
                sc.ece
            );
        }
        s
    }
}

/// Progress callback: `(stage, done, total)`.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

fn ranges(n: usize, opts: &EvalOptions, context: usize) -> anyhow::Result<Ranges> {
    let split = Split::chronological(n);
    let evaluation = opts.range.unwrap_or(split.test);
    anyhow::ensure!(
        evaluation.0 < evaluation.1 && evaluation.1 <= n,
        "evaluation range {}..{} is not inside the {n} candles",
        evaluation.0,
        evaluation.1
    );
    let cal_len = split.validation.1 - split.validation.0;
    let cal_start = evaluation.0.saturating_sub(cal_len);
    let calibration = (cal_start, evaluation.0);
    let fit = (0, cal_start);
    anyhow::ensure!(
        fit.1 > context + opts.horizon + 50 && calibration.1 - calibration.0 > opts.horizon + 50,
        "not enough history before the evaluation range: {} candles to fit baselines and {} to calibrate",
        fit.1,
        calibration.1 - calibration.0
    );
    Ok(Ranges { fit, calibration, evaluation })
}

fn model_p(model: &Forecaster, c: &[Candle], i: usize, opts: &EvalOptions) -> anyhow::Result<f64> {
    let ctx = model.meta.max_context;
    let lo = (i + 1).saturating_sub(ctx);
    let fo = ForecastOptions {
        horizon: opts.horizon,
        samples: opts.samples,
        sampling: opts.sampling,
        seed: opts.seed.wrapping_add(i as u64),
    };
    Ok(model.forecast(&c[lo..=i], &fo)?.p_up_raw)
}

/// Runs the evaluation.
pub fn evaluate(
    model: &Forecaster,
    c: &[Candle],
    opts: &EvalOptions,
    progress: Progress,
) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(
        opts.horizon >= 1 && opts.samples >= 1 && opts.stride >= 1,
        "horizon, samples and stride must be at least 1"
    );
    let r = ranges(c.len(), opts, model.meta.max_context)?;
    let h = opts.horizon;
    let base = Baselines::fit(c, r.fit, h);

    let calibration = match opts.calibration {
        CalibrationMethod::None => Calibration::Identity,
        CalibrationMethod::Stored => model.meta.calibration.clone(),
        m => {
            let idx: Vec<usize> = (r.calibration.0.max(1)..r.calibration.1.saturating_sub(h))
                .step_by(opts.calibration_stride.max(1))
                .collect();
            let (mut ps, mut ys) = (Vec::new(), Vec::new());
            for (k, &i) in idx.iter().enumerate() {
                ps.push(model_p(model, c, i, opts)?);
                ys.push(went_up(c, i, h));
                progress("calibrate", k + 1, idx.len());
            }
            if m == CalibrationMethod::Platt {
                Calibration::fit_platt(&ps, &ys)
            } else {
                Calibration::fit_isotonic(&ps, &ys)
            }
        }
    };

    let idx: Vec<usize> = (r.evaluation.0.max(1)..r.evaluation.1.min(c.len() - h)).step_by(opts.stride).collect();
    anyhow::ensure!(!idx.is_empty(), "the evaluation range has no candle with an outcome {h} steps later");
    let names: Vec<&str> = ["kronos", "kronos_raw"].into_iter().chain(baselines::NAMES).collect();
    let mut p: Vec<Vec<f64>> = vec![Vec::with_capacity(idx.len()); names.len()];
    let mut y = Vec::with_capacity(idx.len());
    for (k, &i) in idx.iter().enumerate() {
        let raw = model_p(model, c, i, opts)?;
        p[0].push(calibration.apply(raw));
        p[1].push(raw);
        for (j, v) in base.predict(c, i).into_iter().enumerate() {
            p[2 + j].push(v);
        }
        y.push(went_up(c, i, h));
        progress("evaluate", k + 1, idx.len());
    }
    let clim_brier = metrics::brier(&p[2], &y);
    let scores = names.iter().zip(&p).map(|(n, ps)| (n.to_string(), metrics::score(ps, &y, clim_brier))).collect();
    let reliability = names.iter().zip(&p).map(|(n, ps)| (n.to_string(), metrics::reliability(ps, &y, 10))).collect();
    Ok(EvalReport {
        horizon: h,
        from_ts: c[idx[0]].timestamp,
        to_ts: c[*idx.last().expect("non-empty")].timestamp,
        ranges: r,
        scores,
        reliability,
        calibration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PredictorConfig, TokenizerConfig};
    use crate::forecast::ModelMeta;
    use crate::predictor::KronosPredictor;
    use crate::tokenizer::KronosTokenizer;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    fn tiny_model(maps: &(VarMap, VarMap)) -> Forecaster {
        let tc = TokenizerConfig {
            d_in: 6,
            d_model: 16,
            n_heads: 2,
            ff_dim: 32,
            n_enc_layers: 2,
            n_dec_layers: 2,
            ffn_dropout_p: 0.0,
            attn_dropout_p: 0.0,
            resid_dropout_p: 0.0,
            s1_bits: 3,
            s2_bits: 3,
            beta: 0.05,
            gamma0: 1.0,
            gamma: 1.1,
            zeta: 0.05,
            group_size: 3,
        };
        let pc = PredictorConfig {
            s1_bits: 3,
            s2_bits: 3,
            n_layers: 1,
            d_model: 16,
            n_heads: 2,
            ff_dim: 32,
            ffn_dropout_p: 0.0,
            attn_dropout_p: 0.0,
            resid_dropout_p: 0.0,
            token_dropout_p: 0.0,
            learn_te: true,
        };
        let tokenizer = KronosTokenizer::new(&tc, VarBuilder::from_varmap(&maps.0, DType::F32, &Device::Cpu)).unwrap();
        let predictor = KronosPredictor::new(&pc, VarBuilder::from_varmap(&maps.1, DType::F32, &Device::Cpu)).unwrap();
        let meta = ModelMeta {
            name: "tiny".into(),
            max_context: 24,
            calibration: Calibration::Identity,
            calibration_next_move: None,
            training: serde_json::Value::Null,
        };
        Forecaster::new(tokenizer, predictor, meta)
    }

    /// A zig-zag: every up candle is followed by a down candle.
    fn zigzag(n: usize) -> Vec<Candle> {
        (0..n)
            .map(|i| {
                let p = 100.0 + (i / 50) as f64 + if i % 2 == 0 { 0.0 } else { 1.0 };
                Candle {
                    timestamp: 1_500_000_000 + i as i64 * 3600,
                    open: p,
                    high: p + 0.5,
                    low: p - 0.5,
                    close: p,
                    volume: 1.0 + (i % 7) as f64,
                    amount: p,
                }
            })
            .collect()
    }

    #[test]
    fn walk_forward_report_has_every_predictor_and_baselines_find_the_pattern() {
        let maps = (VarMap::new(), VarMap::new());
        let model = tiny_model(&maps);
        let c = zigzag(900);
        let opts = EvalOptions { samples: 4, stride: 5, calibration_stride: 10, ..Default::default() };
        let mut calls = 0;
        let report = evaluate(&model, &c, &opts, &mut |_, _, _| calls += 1).unwrap();
        assert!(calls > 0);
        let j = report.json();
        for k in ["kronos", "kronos_raw", "climatology", "persistence", "momentum", "logistic"] {
            let s = &j[k];
            assert!(s["n"].as_u64().unwrap() > 10, "{k}");
            for f in ["accuracy", "brier", "brier_skill", "log_loss", "ece"] {
                assert!(s[f].is_number(), "{k}.{f}");
            }
            assert_eq!(s["accuracy_ci95"].as_array().unwrap().len(), 2);
        }
        assert!(j["persistence"]["accuracy"].as_f64().unwrap() > 0.95, "{}", report.table());
        assert_eq!(j["climatology"]["brier_skill"].as_f64().unwrap(), 0.0);
        // Ranges are in time order and do not overlap.
        let r = &report.ranges;
        assert!(r.fit.1 <= r.calibration.0 && r.calibration.1 <= r.evaluation.0);
        assert!(report.table().contains("persistence"));
    }

    #[test]
    fn too_little_history_is_a_clear_error() {
        let maps = (VarMap::new(), VarMap::new());
        let model = tiny_model(&maps);
        let e = evaluate(&model, &zigzag(100), &EvalOptions::default(), &mut |_, _, _| {}).unwrap_err().to_string();
        assert!(e.contains("not enough history"), "{e}");
    }
}
