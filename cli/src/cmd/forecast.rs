//! `kronos forecast …`: train the model, forecast from candles, evaluate against baselines.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

use kronos_forecast::train::{self, TrainConfig};

use kronos_keeper::config::SHIPPED_MODEL;

/// The candle file shipped in the repository.
pub const SHIPPED_DATA: &str = "data/btcusd-1h.csv";

#[derive(Debug, Subcommand)]
pub enum ForecastCommand {
    /// Train the tokenizer and the predictor on a candle CSV (deterministic for a seed; writes a model folder).
    Train(TrainArgs),
    /// Walk-forward evaluation of the model against climatology, persistence, momentum and a logistic baseline.
    Eval(EvalArgs),
    /// Forecast P(up), quantiles and the mean path from the candles up to a time.
    Predict(PredictArgs),
    /// Fit the model's calibrations (one step ahead, and a round's lock→close move) on the validation split of a
    /// candle CSV and store them in the model folder's kronos.json.
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Candle CSV; its chronological 70-85% slice is the validation split.
    #[arg(long, default_value = SHIPPED_DATA)]
    pub data: PathBuf,
    /// Model folder to update.
    #[arg(long, default_value = SHIPPED_MODEL)]
    pub model: PathBuf,
    /// Sample paths per forecast.
    #[arg(long, default_value_t = 32)]
    pub samples: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Where the model comes from.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model folder (tokenizer/, predictor/, kronos.json).
    #[arg(long, default_value = SHIPPED_MODEL)]
    pub model: PathBuf,
    /// A tokenizer folder (config.json + model.safetensors, e.g. a published Kronos-Tokenizer); needs --predictor.
    #[arg(long, requires = "predictor")]
    pub tokenizer: Option<PathBuf>,
    /// A predictor folder (e.g. a published Kronos-mini/small/base); needs --tokenizer.
    #[arg(long, requires = "tokenizer")]
    pub predictor: Option<PathBuf>,
    /// Context length for --tokenizer/--predictor models. A forecast reads the last max-context - horizon + 1
    /// candles, normalised over those (the official predictor normalises over all it is given and slides its window).
    #[arg(long, default_value_t = 512)]
    pub max_context: usize,
    /// Arithmetic of the matrix products: f32, or bf16 (fast on CPUs with Intel AMX, emulated elsewhere).
    #[arg(long, default_value = "f32")]
    pub precision: kronos_forecast::fast::Precision,
}

impl ModelArgs {
    pub fn load(&self) -> Result<kronos_forecast::Forecaster> {
        Ok(self.load_at_f32()?.with_precision(self.precision))
    }

    fn load_at_f32(&self) -> Result<kronos_forecast::Forecaster> {
        match (&self.tokenizer, &self.predictor) {
            (Some(t), Some(p)) => kronos_forecast::Forecaster::load_parts(
                t,
                p,
                kronos_forecast::forecast::ModelMeta {
                    name: p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "kronos".into()),
                    max_context: self.max_context,
                    calibration: kronos_forecast::calibration::Calibration::Identity,
                    calibration_next_move: None,
                    training: serde_json::Value::Null,
                },
            ),
            _ => kronos_forecast::Forecaster::load(&self.model)
                .with_context(|| format!("loading the model folder {}", self.model.display())),
        }
    }
}

/// Sampling settings shared by predict and eval.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Steps ahead (candles).
    #[arg(long, default_value_t = 1)]
    pub horizon: usize,
    /// Sample paths per forecast.
    #[arg(long, default_value_t = 32)]
    pub samples: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep only the k most likely tokens and those tied with the k-th (0: no limit). When set, --top-p is not
    /// applied, as in the official Kronos filter.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass; applies only with --top-k 0 (the official Kronos order). The default 0.99 is the
    /// official auto_regressive_inference's (its KronosPredictor.predict uses 0.9).
    #[arg(long, default_value_t = 0.99)]
    pub top_p: f64,
    /// Random seed (forecasts are deterministic for a seed).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl SamplingArgs {
    fn params(&self) -> Result<kronos_forecast::sampling::SamplingParams> {
        let p = kronos_forecast::sampling::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        };
        p.validate().map_err(|e| anyhow::anyhow!("--{}", e.replace("top_p", "top-p")))?;
        anyhow::ensure!(self.horizon >= 1, "--horizon must be at least 1");
        anyhow::ensure!(self.samples >= 1, "--samples must be at least 1");
        Ok(p)
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CalibrationArg {
    Platt,
    Isotonic,
    Stored,
    None,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Candle CSV (timestamp,open,high,low,close,volume,amount).
    #[arg(long, default_value = SHIPPED_DATA)]
    pub data: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// First forecast time (unix seconds); default: the start of the last 15% of the data.
    #[arg(long)]
    pub from: Option<i64>,
    /// Last forecast time (unix seconds, inclusive); default: the end of the data.
    #[arg(long)]
    pub to: Option<i64>,
    /// Forecast every n-th candle of the evaluation range.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Forecast every n-th candle of the calibration range.
    #[arg(long, default_value_t = 1)]
    pub calibration_stride: usize,
    /// How the model's probabilities are calibrated.
    #[arg(long, value_enum, default_value_t = CalibrationArg::Platt)]
    pub calibration: CalibrationArg,
    /// Print one JSON object keyed by predictor instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to write the reliability diagram (PNG); default data/runs/reliability-h<H>.png.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Candle CSV.
    #[arg(long, default_value = SHIPPED_DATA)]
    pub data: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Forecast from the candles up to and including this time (unix seconds); default: the last candle.
    #[arg(long)]
    pub at: Option<i64>,
    /// Print JSON (including every sample path).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Candle CSV (timestamp,open,high,low,close,volume,amount).
    #[arg(long, default_value = SHIPPED_DATA)]
    pub data: PathBuf,
    /// Output model folder (tokenizer/, predictor/, kronos.json).
    #[arg(long, default_value = SHIPPED_MODEL)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Tokenizer training steps.
    #[arg(long, default_value_t = 1200)]
    pub tokenizer_steps: usize,
    /// Predictor training steps (at most; see --patience).
    #[arg(long, default_value_t = 3000)]
    pub predictor_steps: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Validate and checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Stop a stage after this many validations without improvement (0: never).
    #[arg(long, default_value_t = 6)]
    pub patience: usize,
    /// Skip tokenizer training: use this tokenizer folder (its config must match) and train the predictor only.
    #[arg(long)]
    pub tokenizer_from: Option<PathBuf>,
}

pub fn run(cmd: ForecastCommand) -> Result<()> {
    match cmd {
        ForecastCommand::Train(a) => train_cmd(a),
        ForecastCommand::Eval(a) => eval_cmd(a),
        ForecastCommand::Predict(a) => predict_cmd(a),
        ForecastCommand::Calibrate(a) => calibrate_cmd(a),
    }
}

/// A progress reporter: a bar on a terminal, a log line per update otherwise.
pub fn progress_reporter() -> impl FnMut(&str, usize, usize, &str) {
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<(String, ProgressBar)> = None;
    move |stage: &str, step: usize, total: usize, msg: &str| {
        if !tty {
            eprintln!("[{stage}] {step}/{total} {msg}");
            return;
        }
        if bar.as_ref().map(|(s, _)| s != stage).unwrap_or(true) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(stage.to_string());
            bar = Some((stage.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(step as u64);
            b.set_message(msg.to_string());
            if step >= total {
                b.finish();
            }
        }
    }
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let candles = kronos_forecast::load_csv(&a.data)?;
    let mut cfg = TrainConfig::shipped(a.seed);
    cfg.tokenizer_steps = a.tokenizer_steps;
    cfg.predictor_steps = a.predictor_steps;
    cfg.batch = a.batch;
    cfg.eval_every = a.eval_every.max(1);
    cfg.patience = a.patience;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    tracing::info!(
        candles = candles.len(),
        tokenizer_steps = cfg.tokenizer_steps,
        predictor_steps = cfg.predictor_steps,
        out = %a.out.display(),
        "training the forecaster"
    );
    let mut progress = progress_reporter();
    let report = train::train(&candles, &cfg, &a.out, a.tokenizer_from.as_deref(), &mut progress)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn index_of(candles: &[kronos_forecast::Candle], ts: i64, what: &str) -> Result<usize> {
    let i = candles.partition_point(|c| c.timestamp <= ts);
    anyhow::ensure!(i > 0, "{what} {ts} is before the first candle ({})", candles[0].timestamp);
    Ok(i - 1)
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    use kronos_forecast::eval::{self, CalibrationMethod, EvalOptions};
    let candles = kronos_forecast::load_csv(&a.data)?;
    let model = a.model.load()?;
    let sampling = a.sampling.params()?;
    anyhow::ensure!(a.stride >= 1 && a.calibration_stride >= 1, "--stride and --calibration-stride must be at least 1");
    let range = match (a.from, a.to) {
        (None, None) => None,
        (from, to) => {
            let split = kronos_forecast::data::Split::chronological(candles.len());
            let lo = match from {
                Some(t) => index_of(&candles, t - 1, "--from").map(|i| i + 1).or_else(|_| Ok::<_, anyhow::Error>(0))?,
                None => split.test.0,
            };
            let hi = match to {
                Some(t) => index_of(&candles, t, "--to")? + 1,
                None => candles.len(),
            };
            Some((lo, hi))
        }
    };
    let opts = EvalOptions {
        horizon: a.sampling.horizon,
        samples: a.sampling.samples,
        seed: a.sampling.seed,
        sampling,
        range,
        stride: a.stride,
        calibration_stride: a.calibration_stride,
        calibration: match a.calibration {
            CalibrationArg::Platt => CalibrationMethod::Platt,
            CalibrationArg::Isotonic => CalibrationMethod::Isotonic,
            CalibrationArg::Stored => CalibrationMethod::Stored,
            CalibrationArg::None => CalibrationMethod::None,
        },
    };
    let mut reporter = progress_reporter();
    let mut last = std::time::Instant::now();
    let mut progress = |stage: &str, done: usize, total: usize| {
        if done == total || last.elapsed().as_millis() > 500 {
            reporter(stage, done, total, "");
            last = std::time::Instant::now();
        }
    };
    let report = eval::evaluate(&model, &candles, &opts, &mut progress)?;
    let plot = a.plot.unwrap_or_else(|| PathBuf::from(format!("data/runs/reliability-h{}.png", report.horizon)));
    let series: Vec<kronos_forecast::plot::Series> = report
        .reliability
        .iter()
        .filter(|(n, _)| n != "kronos_raw")
        .map(|(n, b)| kronos_forecast::plot::Series { name: n, bins: b })
        .collect();
    kronos_forecast::plot::write_reliability_png(&plot, &format!("reliability, horizon {}", report.horizon), &series)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        println!(
            "walk-forward, horizon {} candle(s): {} forecasts from {} to {} (unix s); baselines fitted on candles {}..{}, model calibrated ({:?}) on {}..{}",
            report.horizon,
            report.scores[0].1.n,
            report.from_ts,
            report.to_ts,
            report.ranges.fit.0,
            report.ranges.fit.1,
            opts.calibration,
            report.ranges.calibration.0,
            report.ranges.calibration.1
        );
        print!("{}", report.table());
    }
    eprintln!("reliability diagram: {}", plot.display());
    Ok(())
}

fn predict_cmd(a: PredictArgs) -> Result<()> {
    let candles = kronos_forecast::load_csv(&a.data)?;
    let model = a.model.load()?;
    let sampling = a.sampling.params()?;
    let end = match a.at {
        Some(t) => index_of(&candles, t, "--at")?,
        None => candles.len() - 1,
    };
    let lo = (end + 1).saturating_sub(model.meta.max_context);
    let opts = kronos_forecast::ForecastOptions {
        horizon: a.sampling.horizon,
        samples: a.sampling.samples,
        sampling,
        seed: a.sampling.seed,
    };
    let t0 = std::time::Instant::now();
    let f = model.forecast(&candles[lo..=end], &opts)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(());
    }
    println!(
        "model {} | context {} candles ending {} | horizon {} | {} paths | {:.1} ms",
        model.meta.name,
        model.context_used(end + 1 - lo, f.horizon),
        candles[end].timestamp,
        f.horizon,
        f.paths.len(),
        ms
    );
    println!("last close {:.2}", f.last_close);
    println!("P(up) {:.4} (raw {:.4})", f.p_up, f.p_up_raw);
    println!(
        "close at horizon: {}",
        f.quantiles.iter().map(|(q, v)| format!("q{:.0}={:.2}", q * 100.0, v)).collect::<Vec<_>>().join("  ")
    );
    println!("mean path: {}", f.mean_path.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" "));
    Ok(())
}

fn calibrate_cmd(a: CalibrateArgs) -> Result<()> {
    anyhow::ensure!(a.samples >= 1, "--samples must be at least 1");
    let candles = kronos_forecast::load_csv(&a.data)?;
    let mut model = kronos_forecast::Forecaster::load(&a.model)?;
    let split = kronos_forecast::data::Split::chronological(candles.len());
    let mut progress = progress_reporter();
    let t0 = std::time::Instant::now();
    let (one, next) = train::fit_calibrations(&model, &candles, split.validation, a.samples, a.seed, &mut progress)?;
    model.meta.calibration = one;
    model.meta.calibration_next_move = Some(next);
    if let Some(obj) = model.meta.training.as_object_mut() {
        obj.insert("calibration".into(), serde_json::to_value(&model.meta.calibration)?);
        obj.insert("calibration_next_move".into(), serde_json::to_value(&model.meta.calibration_next_move)?);
        obj.insert("seconds_calibration".into(), serde_json::json!(t0.elapsed().as_secs_f64()));
    }
    let path = a.model.join("kronos.json");
    let tmp = a.model.join("kronos.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&model.meta)? + "\n")?;
    std::fs::rename(&tmp, &path)?;
    println!("one step:  {:?}", model.meta.calibration);
    println!("next move: {:?}", model.meta.calibration_next_move.as_ref().expect("set"));
    println!("written to {}", path.display());
    Ok(())
}
