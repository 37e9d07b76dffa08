//! Times the Kronos-mini-sized forecast (random weights, context 512, one path) and, with `--stages`, each of its
//! parts; handy under a profiler:
//! `cargo run --release -p kronos-forecast --example forecast_profile -- [f32|bf16] [iterations] [--stages]`.
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kronos_forecast::calibration::Calibration;
use kronos_forecast::config::presets;
use kronos_forecast::fast::{Kernel, Precision, Stack};
use kronos_forecast::forecast::{ForecastOptions, Forecaster, ModelMeta};
use kronos_forecast::predictor::KronosPredictor;
use kronos_forecast::tokenizer::KronosTokenizer;

/// Median milliseconds of `n` runs of `f`, after one warm-up run.
fn median_ms<T, E: Into<anyhow::Error>>(n: usize, mut f: impl FnMut() -> Result<T, E>) -> anyhow::Result<f64> {
    f().map_err(Into::into)?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().map_err(Into::into)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[n / 2])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stages = args.iter().any(|a| a == "--stages");
    let mut pos = args.iter().filter(|a| !a.starts_with("--"));
    let precision: Precision = pos.next().map_or("f32", |s| s.as_str()).parse().map_err(anyhow::Error::msg)?;
    let n: usize = pos.next().map(|s| s.parse()).transpose()?.unwrap_or(50).max(1);
    let data = kronos_forecast::load_csv(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/btcusd-1h.csv")))?;
    let dev = Device::Cpu;
    let (tm, pm) = (VarMap::new(), VarMap::new());
    let tokenizer =
        KronosTokenizer::new(&presets::published_tokenizer(), VarBuilder::from_varmap(&tm, DType::F32, &dev))?;
    let predictor = KronosPredictor::new(&presets::mini_predictor(), VarBuilder::from_varmap(&pm, DType::F32, &dev))?;
    let kernel = Kernel::for_precision(precision);

    if stages {
        let (enc, dec) = tokenizer.blocks();
        let (enc, dec, pe) = (Stack::new(enc, kernel)?, Stack::new(dec, kernel)?, predictor.engine(kernel)?);
        let x = Tensor::randn(0f32, 1.0, (1, 512, 6), &dev)?;
        let wide = Tensor::randn(0f32, 1.0, (1, 512, 256), &dev)?;
        let stamp = Tensor::zeros((1, 512, 5), DType::U32, &dev)?;
        let (s1, s2) = tokenizer.encode_with(&x, &enc)?;
        let h = predictor.hidden_with(&s1, &s2, &stamp, &pe, &mut pe.stack.new_cache())?;
        let s1p = Tensor::zeros((32, 1), DType::U32, &dev)?;
        let report = |name: &str, ms: f64| println!("{name:<28} {ms:7.2} ms");
        report("encoder stack", median_ms(n, || enc.forward_once(&wide))?);
        report("encode (stack + rest)", median_ms(n, || tokenizer.encode_with(&x, &enc))?);
        report("predictor stack", median_ms(n, || pe.stack.forward(&wide, &mut pe.stack.new_cache()))?);
        report(
            "predictor hidden",
            median_ms(n, || predictor.hidden_with(&s1, &s2, &stamp, &pe, &mut pe.stack.new_cache()))?,
        );
        report("s2 logits, 32 paths", median_ms(n, || predictor.s2_logits_paths(&h, None, &s1p))?);
        report("decode the context", median_ms(n, || tokenizer.decode_with(&s1, &s2, &dec, &mut dec.new_cache()))?);
    }

    let meta = ModelMeta {
        name: "mini-random".into(),
        max_context: 512,
        calibration: Calibration::Identity,
        calibration_next_move: None,
        training: serde_json::Value::Null,
    };
    let model = Forecaster::new(tokenizer, predictor, meta).with_precision(precision);
    let ctx = &data[data.len() - 512..];
    let opts = ForecastOptions { samples: 1, ..ForecastOptions::default() };
    println!("forecast ({kernel:?}): p50 {:.2} ms over {n}", median_ms(n, || model.forecast(ctx, &opts))?);
    Ok(())
}
