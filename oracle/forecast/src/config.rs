//! Model configurations, with the key names of the published Kronos checkpoints' `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The tokenizer: a Transformer autoencoder around binary spherical quantisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    pub d_in: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub ff_dim: usize,
    /// Encoder depth; the encoder has `n_enc_layers - 1` Transformer blocks (as in the reference).
    pub n_enc_layers: usize,
    /// Decoder depth; the decoder has `n_dec_layers - 1` Transformer blocks.
    pub n_dec_layers: usize,
    #[serde(default)]
    pub ffn_dropout_p: f64,
    #[serde(default)]
    pub attn_dropout_p: f64,
    #[serde(default)]
    pub resid_dropout_p: f64,
    pub s1_bits: usize,
    pub s2_bits: usize,
    pub beta: f64,
    pub gamma0: f64,
    pub gamma: f64,
    pub zeta: f64,
    pub group_size: usize,
}

/// The autoregressive predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictorConfig {
    pub s1_bits: usize,
    pub s2_bits: usize,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub ff_dim: usize,
    #[serde(default)]
    pub ffn_dropout_p: f64,
    #[serde(default)]
    pub attn_dropout_p: f64,
    #[serde(default)]
    pub resid_dropout_p: f64,
    #[serde(default)]
    pub token_dropout_p: f64,
    /// Learned (true) or fixed sinusoidal (false) calendar embeddings.
    #[serde(default = "default_true")]
    pub learn_te: bool,
}

fn default_true() -> bool {
    true
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

fn check(file: &str, ok: bool, message: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { file: file.into(), message: message.into() })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| ConfigError::Invalid { file, message: e.to_string() })
}

impl TokenizerConfig {
    /// Reads and checks a tokenizer `config.json`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let c: Self = read_json(path)?;
        c.validate(&path.display().to_string())?;
        Ok(c)
    }

    /// Checks the shape parameters; `file` names the source in errors.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        check(
            file,
            self.d_in == 6,
            format!("d_in must be 6 (open, high, low, close, volume, amount), found {}", self.d_in),
        )?;
        check(
            file,
            self.d_model > 0 && self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads),
            "d_model must be a positive multiple of n_heads",
        )?;
        check(
            file,
            (self.d_model / self.n_heads.max(1)).is_multiple_of(2),
            "the head dimension (d_model / n_heads) must be even for rotary embeddings",
        )?;
        check(
            file,
            self.n_enc_layers >= 1 && self.n_dec_layers >= 1,
            "n_enc_layers and n_dec_layers must be at least 1",
        )?;
        check(
            file,
            self.s1_bits > 0 && self.s1_bits == self.s2_bits && self.s1_bits <= 16,
            "s1_bits and s2_bits must be equal and in 1..=16",
        )?;
        check(
            file,
            self.group_size > 0 && (self.s1_bits + self.s2_bits).is_multiple_of(self.group_size),
            "group_size must divide s1_bits + s2_bits",
        )?;
        Ok(())
    }

    /// Number of code bits per candle.
    pub fn codebook_dim(&self) -> usize {
        self.s1_bits + self.s2_bits
    }
}

impl PredictorConfig {
    /// Reads and checks a predictor `config.json`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let c: Self = read_json(path)?;
        c.validate(&path.display().to_string())?;
        Ok(c)
    }

    /// Checks the shape parameters; `file` names the source in errors.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        check(
            file,
            self.d_model > 0 && self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads),
            "d_model must be a positive multiple of n_heads",
        )?;
        check(
            file,
            (self.d_model / self.n_heads.max(1)).is_multiple_of(2),
            "the head dimension (d_model / n_heads) must be even for rotary embeddings",
        )?;
        check(file, self.n_layers >= 1, "n_layers must be at least 1")?;
        check(
            file,
            self.s1_bits > 0 && self.s1_bits <= 16 && self.s2_bits > 0 && self.s2_bits <= 16,
            "s1_bits and s2_bits must be in 1..=16",
        )?;
        Ok(())
    }

    /// Must match the tokenizer's code split.
    pub fn check_tokenizer(&self, t: &TokenizerConfig) -> Result<(), String> {
        if self.s1_bits != t.s1_bits || self.s2_bits != t.s2_bits {
            return Err(format!(
                "predictor expects {}+{} code bits, tokenizer has {}+{}",
                self.s1_bits, self.s2_bits, t.s1_bits, t.s2_bits
            ));
        }
        Ok(())
    }
}

/// Configurations: the model Kronos ships, and the published Kronos sizes (for benchmarks and loading).
pub mod presets {
    use super::*;

    /// The shipped model's tokenizer, sized to train on 2 CPU cores.
    pub fn shipped_tokenizer() -> TokenizerConfig {
        TokenizerConfig {
            d_in: 6,
            d_model: 64,
            n_heads: 4,
            ff_dim: 128,
            n_enc_layers: 3,
            n_dec_layers: 3,
            ffn_dropout_p: 0.0,
            attn_dropout_p: 0.0,
            resid_dropout_p: 0.0,
            s1_bits: 6,
            s2_bits: 6,
            beta: 0.05,
            gamma0: 1.0,
            gamma: 1.1,
            zeta: 0.05,
            group_size: 6,
        }
    }

    /// The shipped model's predictor.
    pub fn shipped_predictor() -> PredictorConfig {
        PredictorConfig {
            s1_bits: 6,
            s2_bits: 6,
            n_layers: 4,
            d_model: 128,
            n_heads: 4,
            ff_dim: 256,
            ffn_dropout_p: 0.2,
            attn_dropout_p: 0.0,
            resid_dropout_p: 0.2,
            token_dropout_p: 0.0,
            learn_te: true,
        }
    }

    /// The published Kronos tokenizer size used with Kronos-mini/small/base (10+10 bits).
    pub fn published_tokenizer() -> TokenizerConfig {
        TokenizerConfig {
            d_in: 6,
            d_model: 256,
            n_heads: 4,
            ff_dim: 512,
            n_enc_layers: 4,
            n_dec_layers: 4,
            ffn_dropout_p: 0.0,
            attn_dropout_p: 0.0,
            resid_dropout_p: 0.0,
            s1_bits: 10,
            s2_bits: 10,
            beta: 0.05,
            gamma0: 1.0,
            gamma: 1.1,
            zeta: 0.05,
            group_size: 5,
        }
    }

    /// A Kronos-mini-sized predictor (about 4.1M parameters).
    pub fn mini_predictor() -> PredictorConfig {
        PredictorConfig {
            s1_bits: 10,
            s2_bits: 10,
            n_layers: 4,
            d_model: 256,
            n_heads: 4,
            ff_dim: 512,
            ffn_dropout_p: 0.0,
            attn_dropout_p: 0.0,
            resid_dropout_p: 0.0,
            token_dropout_p: 0.0,
            learn_te: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_consistent() {
        presets::shipped_tokenizer().validate("t").unwrap();
        presets::shipped_predictor().validate("p").unwrap();
        presets::shipped_predictor().check_tokenizer(&presets::shipped_tokenizer()).unwrap();
        presets::published_tokenizer().validate("t").unwrap();
        presets::mini_predictor().check_tokenizer(&presets::published_tokenizer()).unwrap();
    }

    #[test]
    fn reads_published_key_names_and_rejects_bad_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"attn_dropout_p":0.0,"d_model":512,"ff_dim":1024,"ffn_dropout_p":0.25,"learn_te":true,
                "n_heads":8,"n_layers":8,"resid_dropout_p":0.25,"s1_bits":10,"s2_bits":10,"token_dropout_p":0.0}"#,
        )
        .unwrap();
        let c = PredictorConfig::load(&p).unwrap();
        assert_eq!(c.n_layers, 8);
        std::fs::write(&p, r#"{"s1_bits":10,"s2_bits":10,"n_layers":2,"d_model":100,"n_heads":3,"ff_dim":8}"#).unwrap();
        let e = PredictorConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("multiple of n_heads"), "{e}");
        std::fs::write(&p, "{").unwrap();
        assert!(PredictorConfig::load(&p).unwrap_err().to_string().contains("config.json"));
    }
}
