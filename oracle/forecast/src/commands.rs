//! What the `kronos forecast` commands do (train, eval, predict, calibrate), from parsed options to a result and its
//! printed form; the command line (`cli/`) parses the options, shows progress and prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::calibration::Calibration;
use crate::eval::{CalibrationMethod, EvalOptions, EvalReport};
use crate::fast::Precision;
use crate::forecast::{Forecast, ForecastOptions, Forecaster, ModelMeta};
use crate::sampling::SamplingParams;
use crate::train::{TrainConfig, TrainReport};
use crate::Candle;

/// Where the model comes from: a model folder, or a published tokenizer and predictor pair.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Model folder (tokenizer/, predictor/, kronos.json); used unless both `tokenizer` and `predictor` are given.
    pub model: PathBuf,
    pub tokenizer: Option<PathBuf>,
    pub predictor: Option<PathBuf>,
    /// Context length for a tokenizer/predictor pair.
    pub max_context: usize,
    /// Arithmetic of the matrix products.
    pub precision: Precision,
}

impl ModelSource {
    /// Loads the model at the chosen precision.
    pub fn load(&self) -> Result<Forecaster> {
        Ok(self.load_at_f32()?.with_precision(self.precision))
    }

    fn load_at_f32(&self) -> Result<Forecaster> {
        match (&self.tokenizer, &self.predictor) {
            (Some(t), Some(p)) => Forecaster::load_parts(
                t,
                p,
                ModelMeta {
                    name: p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "kronos".into()),
                    max_context: self.max_context,
                    calibration: Calibration::Identity,
                    calibration_next_move: None,
                    training: serde_json::Value::Null,
                },
            ),
            _ => Forecaster::load(&self.model)
                .with_context(|| format!("loading the model folder {}", self.model.display())),
        }
    }
}

/// Sampling settings shared by predict and eval.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// Steps ahead (candles).
    pub horizon: usize,
    /// Sample paths per forecast.
    pub samples: usize,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    /// Random seed (forecasts are deterministic for a seed).
    pub seed: u64,
}

impl Sampling {
    /// The sampling parameters, checked; an error names the command-line option (`--top-p`, `--horizon`, …).
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p };
        p.validate().map_err(|e| anyhow::anyhow!("--{}", e.replace("top_p", "top-p")))?;
        anyhow::ensure!(self.horizon >= 1, "--horizon must be at least 1");
        anyhow::ensure!(self.samples >= 1, "--samples must be at least 1");
        Ok(p)
    }
}

/// The index of the last candle at or before `ts`; an error names `what` (the option) when `ts` is before the first.
pub fn index_of(candles: &[Candle], ts: i64, what: &str) -> Result<usize> {
    let i = candles.partition_point(|c| c.timestamp <= ts);
    anyhow::ensure!(i > 0, "{what} {ts} is before the first candle ({})", candles[0].timestamp);
    Ok(i - 1)
}

/// The evaluation's candle range `[lo, hi)` from `--from`/`--to` (unix seconds, inclusive): `None` when neither is
/// given (the evaluation's own default); a missing bound is the start of the test split or the end of the data, and
/// a `from` before the first candle starts at the first.
pub fn eval_range(candles: &[Candle], from: Option<i64>, to: Option<i64>) -> Result<Option<(usize, usize)>> {
    if from.is_none() && to.is_none() {
        return Ok(None);
    }
    let lo = match from {
        Some(t) => index_of(candles, t - 1, "--from").map(|i| i + 1).unwrap_or(0),
        None => crate::data::Split::chronological(candles.len()).test.0,
    };
    let hi = match to {
        Some(t) => index_of(candles, t, "--to")? + 1,
        None => candles.len(),
    };
    Ok(Some((lo, hi)))
}

/// `kronos forecast train`, prepared: the candles and the training configuration.
pub struct Training {
    pub candles: Vec<Candle>,
    pub config: TrainConfig,
    out: PathBuf,
    tokenizer_from: Option<PathBuf>,
}

/// What `kronos forecast train` was asked.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub data: PathBuf,
    pub out: PathBuf,
    pub seed: u64,
    pub tokenizer_steps: usize,
    pub predictor_steps: usize,
    pub batch: usize,
    /// Validate and checkpoint every this many steps (0 is taken as 1).
    pub eval_every: usize,
    pub patience: usize,
    pub tokenizer_from: Option<PathBuf>,
}

impl Training {
    /// Loads the candles, sets up the shipped configuration with the request's steps, and creates the output folder.
    pub fn prepare(r: &TrainRequest) -> Result<Training> {
        let candles = crate::load_csv(&r.data)?;
        let mut config = TrainConfig::shipped(r.seed);
        config.tokenizer_steps = r.tokenizer_steps;
        config.predictor_steps = r.predictor_steps;
        config.batch = r.batch;
        config.eval_every = r.eval_every.max(1);
        config.patience = r.patience;
        std::fs::create_dir_all(&r.out).with_context(|| format!("creating {}", r.out.display()))?;
        Ok(Training { candles, config, out: r.out.clone(), tokenizer_from: r.tokenizer_from.clone() })
    }

    /// The output model folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Trains and writes the model folder.
    pub fn run(&self, progress: crate::train::Progress) -> Result<TrainReport> {
        crate::train::train(&self.candles, &self.config, &self.out, self.tokenizer_from.as_deref(), progress)
    }
}

/// What `kronos forecast eval` was asked.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub data: PathBuf,
    pub model: ModelSource,
    pub sampling: Sampling,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub stride: usize,
    pub calibration_stride: usize,
    pub calibration: CalibrationMethod,
    /// The reliability diagram (PNG); default `data/runs/reliability-h<H>.png`.
    pub plot: Option<PathBuf>,
}

/// An evaluation's report and where its reliability diagram was written.
#[derive(Debug)]
pub struct Evaluation {
    pub report: EvalReport,
    pub calibration: CalibrationMethod,
    pub plot: PathBuf,
}

impl Evaluation {
    /// The walk-forward summary line and the score table, as `kronos forecast eval` prints them.
    pub fn text(&self) -> String {
        let r = &self.report;
        format!(
            "walk-forward, horizon {} candle(s): {} forecasts from {} to {} (unix s); baselines fitted on candles {}..{}, model calibrated ({:?}) on {}..{}\n{}",
            r.horizon,
            r.scores[0].1.n,
            r.from_ts,
            r.to_ts,
            r.ranges.fit.0,
            r.ranges.fit.1,
            self.calibration,
            r.ranges.calibration.0,
            r.ranges.calibration.1,
            r.table()
        )
    }
}

/// Walk-forward evaluation against the baselines, and the reliability diagram written.
pub fn evaluate(r: &EvalRequest, progress: crate::eval::Progress) -> Result<Evaluation> {
    let candles = crate::load_csv(&r.data)?;
    let model = r.model.load()?;
    let sampling = r.sampling.params()?;
    anyhow::ensure!(r.stride >= 1 && r.calibration_stride >= 1, "--stride and --calibration-stride must be at least 1");
    let opts = EvalOptions {
        horizon: r.sampling.horizon,
        samples: r.sampling.samples,
        seed: r.sampling.seed,
        sampling,
        range: eval_range(&candles, r.from, r.to)?,
        stride: r.stride,
        calibration_stride: r.calibration_stride,
        calibration: r.calibration,
    };
    let report = crate::eval::evaluate(&model, &candles, &opts, progress)?;
    let plot =
        r.plot.clone().unwrap_or_else(|| PathBuf::from(format!("data/runs/reliability-h{}.png", report.horizon)));
    let series: Vec<crate::plot::Series> = report
        .reliability
        .iter()
        .filter(|(n, _)| n != "kronos_raw")
        .map(|(n, b)| crate::plot::Series { name: n, bins: b })
        .collect();
    crate::plot::write_reliability_png(&plot, &format!("reliability, horizon {}", report.horizon), &series)?;
    Ok(Evaluation { report, calibration: r.calibration, plot })
}

/// What `kronos forecast predict` was asked.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    pub data: PathBuf,
    pub model: ModelSource,
    pub sampling: Sampling,
    /// Forecast from the candles up to and including this time (unix seconds); default: the last candle.
    pub at: Option<i64>,
}

/// A forecast with what it was made from.
#[derive(Debug)]
pub struct Prediction {
    pub model: String,
    /// Candles the model read.
    pub context: usize,
    /// Time of the last candle it read (unix seconds).
    pub end_ts: i64,
    pub forecast: Forecast,
    /// Time the forecast took.
    pub ms: f64,
}

impl Prediction {
    /// The forecast as `kronos forecast predict` prints it (without `--json`).
    pub fn text(&self) -> String {
        let f = &self.forecast;
        format!(
            "model {} | context {} candles ending {} | horizon {} | {} paths | {:.1} ms\nlast close {:.2}\nP(up) {:.4} (raw {:.4})\nclose at horizon: {}\nmean path: {}\n",
            self.model,
            self.context,
            self.end_ts,
            f.horizon,
            f.paths.len(),
            self.ms,
            f.last_close,
            f.p_up,
            f.p_up_raw,
            f.quantiles.iter().map(|(q, v)| format!("q{:.0}={:.2}", q * 100.0, v)).collect::<Vec<_>>().join("  "),
            f.mean_path.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" ")
        )
    }
}

/// Forecasts from the candles up to `at` (the last `max_context` of them).
pub fn predict(r: &PredictRequest) -> Result<Prediction> {
    let candles = crate::load_csv(&r.data)?;
    let model = r.model.load()?;
    let sampling = r.sampling.params()?;
    let end = match r.at {
        Some(t) => index_of(&candles, t, "--at")?,
        None => candles.len() - 1,
    };
    let lo = (end + 1).saturating_sub(model.meta.max_context);
    let opts =
        ForecastOptions { horizon: r.sampling.horizon, samples: r.sampling.samples, sampling, seed: r.sampling.seed };
    let t0 = std::time::Instant::now();
    let forecast = model.forecast(&candles[lo..=end], &opts)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(Prediction {
        model: model.meta.name.clone(),
        context: model.context_used(end + 1 - lo, forecast.horizon),
        end_ts: candles[end].timestamp,
        forecast,
        ms,
    })
}

/// What `kronos forecast calibrate` was asked.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    pub data: PathBuf,
    pub model: PathBuf,
    pub samples: usize,
    pub seed: u64,
}

/// The calibrations fitted and the file they were stored in.
#[derive(Debug)]
pub struct Calibrated {
    pub one_step: Calibration,
    pub next_move: Calibration,
    pub path: PathBuf,
}

impl Calibrated {
    /// As `kronos forecast calibrate` prints it.
    pub fn text(&self) -> String {
        format!("one step:  {:?}\nnext move: {:?}\nwritten to {}\n", self.one_step, self.next_move, self.path.display())
    }
}

/// Fits the model's calibrations (one step ahead, and a round's lock→close move) on the validation split of the
/// candles and stores them in the model folder's kronos.json (written to a temporary file, then renamed).
pub fn calibrate(r: &CalibrateRequest, progress: crate::train::Progress) -> Result<Calibrated> {
    anyhow::ensure!(r.samples >= 1, "--samples must be at least 1");
    let candles = crate::load_csv(&r.data)?;
    let mut model = Forecaster::load(&r.model)?;
    let split = crate::data::Split::chronological(candles.len());
    let t0 = std::time::Instant::now();
    let (one, next) = crate::train::fit_calibrations(&model, &candles, split.validation, r.samples, r.seed, progress)?;
    model.meta.calibration = one.clone();
    model.meta.calibration_next_move = Some(next.clone());
    if let Some(obj) = model.meta.training.as_object_mut() {
        obj.insert("calibration".into(), serde_json::to_value(&model.meta.calibration)?);
        obj.insert("calibration_next_move".into(), serde_json::to_value(&model.meta.calibration_next_move)?);
        obj.insert("seconds_calibration".into(), serde_json::json!(t0.elapsed().as_secs_f64()));
    }
    let path = r.model.join("kronos.json");
    let tmp = r.model.join("kronos.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&model.meta)? + "\n")?;
    std::fs::rename(&tmp, &path)?;
    Ok(Calibrated { one_step: one, next_move: next, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
    }

    fn candles(ts: &[i64]) -> Vec<Candle> {
        ts.iter()
            .map(|&timestamp| Candle {
                timestamp,
                open: 1.0,
                high: 1.0,
                low: 1.0,
                close: 1.0,
                volume: 1.0,
                amount: 1.0,
            })
            .collect()
    }

    fn sampling() -> Sampling {
        Sampling { horizon: 2, samples: 4, temperature: 1.0, top_k: 0, top_p: 0.99, seed: 7 }
    }

    #[test]
    fn index_of_is_the_last_candle_at_or_before_the_time() {
        let c = candles(&[100, 200, 300]);
        assert_eq!(index_of(&c, 100, "--at").unwrap(), 0);
        assert_eq!(index_of(&c, 299, "--at").unwrap(), 1);
        assert_eq!(index_of(&c, 1000, "--at").unwrap(), 2);
        assert_eq!(index_of(&c, 99, "--at").unwrap_err().to_string(), "--at 99 is before the first candle (100)");
    }

    #[test]
    fn eval_range_takes_inclusive_times_and_defaults_each_bound() {
        let c = candles(&(0..100).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(eval_range(&c, None, None).unwrap(), None, "the evaluation's own default");
        assert_eq!(eval_range(&c, Some(100), Some(200)).unwrap(), Some((10, 21)));
        assert_eq!(eval_range(&c, Some(105), None).unwrap(), Some((11, 100)), "from rounds up to the next candle");
        assert_eq!(eval_range(&c, Some(-50), Some(0)).unwrap(), Some((0, 1)), "from before the data starts at 0");
        let test_start = crate::data::Split::chronological(100).test.0;
        assert_eq!(eval_range(&c, None, Some(990)).unwrap(), Some((test_start, 100)));
        assert!(eval_range(&c, None, Some(-1)).unwrap_err().to_string().starts_with("--to -1 is before"));
    }

    #[test]
    fn sampling_errors_name_the_option() {
        assert!(sampling().params().is_ok());
        let e = Sampling { top_p: 1.5, ..sampling() }.params().unwrap_err().to_string();
        assert!(e.starts_with("--top-p"), "{e}");
        let e = Sampling { horizon: 0, ..sampling() }.params().unwrap_err().to_string();
        assert_eq!(e, "--horizon must be at least 1");
        let e = Sampling { samples: 0, ..sampling() }.params().unwrap_err().to_string();
        assert_eq!(e, "--samples must be at least 1");
    }

    #[test]
    fn predict_reads_the_candles_up_to_at_and_is_deterministic_for_a_seed() {
        let data = repo("data/btcusd-1h.csv");
        let all = crate::load_csv(&data).unwrap();
        let at = all[2000].timestamp + 1;
        let req = PredictRequest {
            data,
            model: ModelSource {
                model: repo("oracle/forecast/model"),
                tokenizer: None,
                predictor: None,
                max_context: 512,
                precision: Precision::F32,
            },
            sampling: sampling(),
            at: Some(at),
        };
        let a = predict(&req).unwrap();
        assert_eq!(a.end_ts, all[2000].timestamp, "the last candle at or before --at");
        assert_eq!(a.forecast.last_close, all[2000].close);
        assert_eq!(a.forecast.horizon, 2);
        assert_eq!(a.forecast.paths.len(), 4);
        let b = predict(&req).unwrap();
        assert_eq!(a.forecast.p_up, b.forecast.p_up);
        assert_eq!(a.forecast.mean_path, b.forecast.mean_path);
        let text = a.text();
        assert!(
            text.starts_with(&format!(
                "model {} | context {} candles ending {} | horizon 2 | 4 paths | ",
                a.model, a.context, a.end_ts
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "\nlast close {:.2}\nP(up) {:.4} (raw {:.4})\n",
                a.forecast.last_close, a.forecast.p_up, a.forecast.p_up_raw
            )),
            "{text}"
        );
        let before = PredictRequest { at: Some(all[0].timestamp - 1), ..req };
        assert!(predict(&before).unwrap_err().to_string().starts_with("--at "));
    }
}
