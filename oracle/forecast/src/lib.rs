//! The Kronos-architecture candlestick forecaster (arXiv 2508.02739) in candle, and its honest evaluation.
//!
//! - [`data`]: candle CSV loading with line-numbered errors, calendar features, chronological splits.
//! - [`tokenizer`], [`predictor`], [`nn`]: the model, with the published checkpoints' parameter names.
//! - [`fast`]: the inference engine (f32, or bf16 on Intel AMX) the forecaster runs the Transformer stacks with.
//! - [`forecast`]: sampling several paths and summarising them (P(up), quantiles, mean path).
//! - [`train`]: deterministic training on CPU with checkpoints and validation-based selection.
//! - [`indicators`], [`baselines`], [`calibration`], [`metrics`], [`eval`], [`plot`]: walk-forward evaluation against
//!   simple baselines, calibration, and the reliability diagram.
//! - [`commands`]: what the `kronos forecast` commands do (train, eval, predict, calibrate) from parsed options.

pub mod baselines;
pub mod calibration;
pub mod commands;
pub mod config;
pub mod data;
pub mod eval;
pub mod fast;
pub mod forecast;
pub mod indicators;
pub mod init;
pub mod metrics;
pub mod nn;
pub mod plot;
pub mod predictor;
pub mod sampling;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use data::{load_csv, Candle};
pub use forecast::{Forecast, ForecastOptions, Forecaster};
