//! Seeded weight initialisation (candle's CPU random source cannot be seeded): Xavier-normal linear weights, zero
//! biases, N(0, d^-1/2) embeddings, unit norms — the reference's `_init_weights`.

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Initialises every variable of `map` deterministically from `seed` (in name order).
pub fn initialize(map: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = map.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> =
            if name.ends_with("norm.weight") || name.ends_with("norm1.weight") || name.ends_with("norm2.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("embed")
                && !name.contains("fusion_proj")
                && !name.contains("quant_embed")
                && dims.len() == 2
                && !name.starts_with("embed.")
            {
                // Embedding tables [vocab, d]: N(0, d^-1/2).
                let std = (dims[1] as f64).powf(-0.5);
                let d = Normal::new(0.0, std).expect("std > 0");
                (0..n).map(|_| d.sample(&mut rng) as f32).collect()
            } else if dims.len() == 2 {
                // Linear [out, in]: Xavier normal, std = sqrt(2 / (in + out)).
                let std = (2.0 / (dims[0] + dims[1]) as f64).sqrt();
                let d = Normal::new(0.0, std).expect("std > 0");
                (0..n).map(|_| d.sample(&mut rng) as f32).collect()
            } else {
                vec![1.0; n]
            };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}
