//! `kronos forecast …`: train the model, forecast from candles, evaluate against baselines ([`kronos_forecast::commands`]
//! does the work; this parses the options, shows progress and prints).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

use kronos_forecast::commands::{
    self, CalibrateRequest, EvalRequest, ModelSource, PredictRequest, Sampling, TrainRequest, Training,
};
use kronos_forecast::eval::CalibrationMethod;

use kronos_keeper::config::SHIPPED_MODEL;

/// The candle file shipped in the repository.
pub(crate) const SHIPPED_DATA: &str = "data/btcusd-1h.csv";

#[derive(Debug, Subcommand)]
pub(crate) enum ForecastCommand {
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
pub(crate) struct CalibrateArgs {
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
pub(crate) struct ModelArgs {
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
    fn source(&self) -> ModelSource {
        ModelSource {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            predictor: self.predictor.clone(),
            max_context: self.max_context,
            precision: self.precision,
        }
    }
}

/// Sampling settings shared by predict and eval.
#[derive(Debug, Args)]
pub(crate) struct SamplingArgs {
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
    fn sampling(&self) -> Sampling {
        Sampling {
            horizon: self.horizon,
            samples: self.samples,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum CalibrationArg {
    Platt,
    Isotonic,
    Stored,
    None,
}

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
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
pub(crate) struct PredictArgs {
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
pub(crate) struct TrainArgs {
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

pub(crate) fn run(cmd: ForecastCommand) -> Result<()> {
    match cmd {
        ForecastCommand::Train(a) => train_cmd(a),
        ForecastCommand::Eval(a) => eval_cmd(a),
        ForecastCommand::Predict(a) => predict_cmd(a),
        ForecastCommand::Calibrate(a) => calibrate_cmd(a),
    }
}

/// A progress reporter: a bar on a terminal, a log line per update otherwise.
pub(crate) fn progress_reporter() -> impl FnMut(&str, usize, usize, &str) {
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
    let training = Training::prepare(&TrainRequest {
        data: a.data,
        out: a.out,
        seed: a.seed,
        tokenizer_steps: a.tokenizer_steps,
        predictor_steps: a.predictor_steps,
        batch: a.batch,
        eval_every: a.eval_every,
        patience: a.patience,
        tokenizer_from: a.tokenizer_from,
    })?;
    tracing::info!(
        candles = training.candles.len(),
        tokenizer_steps = training.config.tokenizer_steps,
        predictor_steps = training.config.predictor_steps,
        out = %training.out().display(),
        "training the forecaster"
    );
    let mut progress = progress_reporter();
    let report = training.run(&mut progress)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let req = EvalRequest {
        data: a.data,
        model: a.model.source(),
        sampling: a.sampling.sampling(),
        from: a.from,
        to: a.to,
        stride: a.stride,
        calibration_stride: a.calibration_stride,
        calibration: match a.calibration {
            CalibrationArg::Platt => CalibrationMethod::Platt,
            CalibrationArg::Isotonic => CalibrationMethod::Isotonic,
            CalibrationArg::Stored => CalibrationMethod::Stored,
            CalibrationArg::None => CalibrationMethod::None,
        },
        plot: a.plot,
    };
    let mut reporter = progress_reporter();
    let mut last = std::time::Instant::now();
    let mut progress = |stage: &str, done: usize, total: usize| {
        if done == total || last.elapsed().as_millis() > 500 {
            reporter(stage, done, total, "");
            last = std::time::Instant::now();
        }
    };
    let e = commands::evaluate(&req, &mut progress)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e.report.json())?);
    } else {
        print!("{}", e.text());
    }
    eprintln!("reliability diagram: {}", e.plot.display());
    Ok(())
}

fn predict_cmd(a: PredictArgs) -> Result<()> {
    let p = commands::predict(&PredictRequest {
        data: a.data,
        model: a.model.source(),
        sampling: a.sampling.sampling(),
        at: a.at,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p.forecast)?);
    } else {
        print!("{}", p.text());
    }
    Ok(())
}

fn calibrate_cmd(a: CalibrateArgs) -> Result<()> {
    let mut progress = progress_reporter();
    let c = commands::calibrate(
        &CalibrateRequest { data: a.data, model: a.model, samples: a.samples, seed: a.seed },
        &mut progress,
    )?;
    print!("{}", c.text());
    Ok(())
}
