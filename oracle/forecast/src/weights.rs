//! Loading and saving weights in the published checkpoints' layout: a folder with `config.json` and
//! `model.safetensors`, tensor names as in the reference PyTorch modules.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Weight file name inside a model folder.
pub const WEIGHTS: &str = "model.safetensors";
/// Config file name inside a model folder.
pub const CONFIG: &str = "config.json";

/// A var builder over a safetensors file; tensors stored as f16/bf16 are converted to f32. Extra tensors (the
/// reference's persistent buffers such as `rotary.inv_freq`) are ignored; a missing one is an error naming it.
pub fn var_builder(path: &Path, dev: &Device) -> anyhow::Result<VarBuilder<'static>> {
    if !path.is_file() {
        bail!("{}: weights file not found", path.display());
    }
    let tensors = candle_core::safetensors::load(path, dev)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, dev))
}

/// The two files of a model folder, checked to exist.
pub fn folder_files(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cfg = dir.join(CONFIG);
    let w = dir.join(WEIGHTS);
    if !cfg.is_file() {
        bail!("{}: missing {} (a model folder holds {} and {})", dir.display(), CONFIG, CONFIG, WEIGHTS);
    }
    if !w.is_file() {
        bail!("{}: missing {}", dir.display(), WEIGHTS);
    }
    Ok((cfg, w))
}
