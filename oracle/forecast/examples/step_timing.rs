//! Times training steps and one forecast for a configuration (used to size the shipped model's training run).
use std::time::Instant;

use kronos_forecast::train::TrainConfig;

fn main() -> anyhow::Result<()> {
    // The allocator setting the `kronos` binary makes (cli/src/main.rs): keep up to 64 MiB of freed memory for
    // reuse, so the figures are the program's.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
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
