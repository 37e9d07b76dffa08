//! Times training steps and one forecast for a configuration (used to size the shipped model's training run).
use std::time::Instant;

use kronos_forecast::train::TrainConfig;

fn main() -> anyhow::Result<()> {
    kronos_forecast::keep_freed_memory();
    let candles = kronos_forecast::load_csv(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/btcusd-1h.csv"))?;
    let mut cfg = TrainConfig::shipped(1);
    cfg.tokenizer_steps = 20;
    cfg.predictor_steps = 20;
    cfg.eval_every = 10;
    cfg.val_windows = 8;
    cfg.calibration_samples = 32;
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let mut last = Instant::now();
    let mut cb = |stage: &str, step: usize, total: usize, msg: &str| {
        println!("{stage} {step}/{total} {msg} ({:.2}s since last)", last.elapsed().as_secs_f64());
        last = Instant::now();
        if stage == "calibration" && step >= 200 {
            println!("calibration: {:.1} ms per forecast", t.elapsed().as_secs_f64());
            std::process::exit(0);
        }
    };
    let r = kronos_forecast::train::train(&candles, &cfg, dir.path(), None, &mut cb)?;
    println!("{:#?}", (r.seconds_tokenizer, r.seconds_predictor, r.tokenizer_params, r.predictor_params));
    Ok(())
}
