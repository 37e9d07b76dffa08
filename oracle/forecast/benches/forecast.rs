//! One forecast on CPU: the shipped model (its context, 32 paths, one step), and a Kronos-mini-sized model
//! (random weights, published tokenizer size) at context 512 in f32 and in bf16 (on Intel AMX where the CPU has it).
//! `cargo bench -p kronos-forecast --bench forecast`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use kronos_forecast::config::presets;
use kronos_forecast::fast::{Kernel, Precision};
use kronos_forecast::forecast::{ForecastOptions, Forecaster};

fn candles() -> Vec<kronos_forecast::data::Candle> {
    kronos_forecast::load_csv(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/btcusd-1h.csv")))
        .expect("shipped candles")
}

fn bench(c: &mut Criterion) {
    // The allocator setting the `kronos` binary makes (cli/src/main.rs): keep up to 64 MiB of freed memory for
    // reuse, so the figures are the program's.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let data = candles();
    let shipped = Forecaster::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/model"))).expect("shipped model");
    let ctx = &data[data.len() - shipped.meta.max_context..];
    let opts = ForecastOptions::default();
    let mut g = c.benchmark_group("forecast");
    g.sample_size(30);
    g.bench_function(format!("shipped, context {}, {} paths, horizon 1", ctx.len(), opts.samples), |b| {
        b.iter(|| shipped.forecast(ctx, &opts).expect("forecast"))
    });

    let mini = Forecaster::random(&presets::published_tokenizer(), &presets::mini_predictor(), 512).expect("mini");
    let ctx512 = &data[data.len() - 512..];
    let mut mini = Some(mini);
    for precision in [Precision::F32, Precision::Bf16] {
        let model = mini.take().expect("model").with_precision(precision);
        let kernel = match model.kernel() {
            Kernel::F32 => "f32",
            Kernel::Amx => "bf16 on AMX",
            Kernel::Bf16Emulated => "bf16 emulated (no AMX on this CPU)",
        };
        for (samples, horizon) in [(1usize, 1usize), (32, 1), (32, 2)] {
            let o = ForecastOptions { samples, horizon, ..ForecastOptions::default() };
            g.bench_function(format!("mini-sized, context 512, {kernel}, {samples} paths, horizon {horizon}"), |b| {
                b.iter(|| model.forecast(ctx512, &o).expect("forecast"))
            });
        }
        mini = Some(model);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
