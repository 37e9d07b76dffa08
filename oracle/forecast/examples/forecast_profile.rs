//! Times the Kronos-mini-sized forecast (random weights, context 512, one path) and, with `--stages`, each of its
//! parts; handy under a profiler:
//! `cargo run --release -p kronos-forecast --example forecast_profile -- [f32|bf16] [iterations] [--paths=N] [--stages]`.
use std::path::Path;
use std::time::Instant;

use kronos_forecast::config::presets;
use kronos_forecast::fast::{Kernel, Model, Precision};
use kronos_forecast::forecast::{ForecastOptions, Forecaster};

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
    // The allocator setting the `kronos` binary makes (cli/src/main.rs): keep up to 64 MiB of freed memory for
    // reuse, so the figures are the program's.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stages = args.iter().any(|a| a == "--stages");
    let paths: usize = args.iter().find_map(|a| a.strip_prefix("--paths=")).map(str::parse).transpose()?.unwrap_or(1);
    let mut pos = args.iter().filter(|a| !a.starts_with("--"));
    let precision: Precision = pos.next().map_or("f32", |s| s.as_str()).parse().map_err(anyhow::Error::msg)?;
    let n: usize = pos.next().map(|s| s.parse()).transpose()?.unwrap_or(50).max(1);
    let data = kronos_forecast::load_csv(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/btcusd-1h.csv")))?;
    let model =
        Forecaster::random(&presets::published_tokenizer(), &presets::mini_predictor(), 512)?.with_precision(precision);
    let kernel = Kernel::for_precision(precision);

    if stages {
        let m = Model::new(&model.tokenizer, &model.predictor, kernel)?;
        let t = 512;
        let x: Vec<f32> = (0..t * 6).map(|i| (i * 7919 % 1000) as f32 / 250.0 - 2.0).collect();
        let stamp: Vec<u32> = (0..t).flat_map(|i| [0, (i % 24) as u32, (i % 7) as u32, 1, 1]).collect();
        let (s1, s2) = m.encode(&x, t);
        let report = |name: &str, ms: f64| println!("{name:<36} {ms:7.2} ms");
        report("encode (tokenizer encoder)", median_ms(n, || anyhow::Ok(m.encode(&x, t)))?);
        let hidden = || {
            let mut c = m.predictor_cache();
            let h = m.hidden(&s1, &s2, &stamp, 1, t, &mut c);
            m.recycle(c);
            h
        };
        report("predictor over the context", median_ms(n, hidden)?);
        let h = hidden()?;
        let d = h.len() / t;
        report("dependency keys and values", median_ms(n, || anyhow::Ok(m.dep_history(&h)))?);
        let dep = m.dep_history(&h);
        let s1p: Vec<u32> = (0..32).collect();
        report("s2 logits, 32 paths", median_ms(n, || m.s2_logits(&dep, &s1p, &h[(t - 1) * d..]))?);
        let prefill = || {
            let mut c = m.decoder_cache();
            m.decode_prefill(&s1, &s2, t, &mut c);
            m.recycle(c);
            anyhow::Ok(())
        };
        report("decoder prefill", median_ms(n, prefill)?);
    }

    let ctx = &data[data.len() - 512..];
    let opts = ForecastOptions { samples: paths.max(1), ..ForecastOptions::default() };
    println!(
        "forecast ({kernel:?}, {paths} paths): p50 {:.2} ms over {n}",
        median_ms(n, || model.forecast(ctx, &opts))?
    );
    Ok(())
}
