//! The Kronos autoregressive predictor: hierarchical token embedding plus calendar embedding, a causal Transformer
//! with rotary positions, and a dual head where the fine token `s2` is predicted after attending from the coarse token
//! `s1` (the dependency-aware layer).

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};

use crate::config::PredictorConfig;
use crate::fast::{self, EmbeddingParams, Kernel, PredictorEngine, Stack};
use crate::nn::{dropout, CrossAttention, RmsNorm, Train, TransformerBlock};

/// Calendar embedding: minute, hour, weekday, day of month, month. Learned tables (`learn_te: true`) are stored as
/// `<name>.weight`. Fixed ones (`learn_te: false`) are stored by the official code as `<name>.emb.weight` and are not
/// sinusoids there: its `Kronos.__init__` draws every embedding table again after building the sinusoidal ones, and
/// inference uses what the checkpoint holds. They are read from the checkpoint when it has them, and are sinusoids
/// otherwise (a model built here for training: fixed tables are not variables, so they are not trained).
pub struct TemporalEmbedding {
    tables: [Embedding; 5],
}

const CAL_SIZES: [(&str, usize); 5] =
    [("minute_embed", 60), ("hour_embed", 24), ("weekday_embed", 7), ("day_embed", 32), ("month_embed", 13)];

fn sinusoid(n: usize, d: usize, dev: &Device) -> Result<Tensor> {
    let mut w = vec![0f32; n * d];
    for pos in 0..n {
        for i in (0..d).step_by(2) {
            let div = (-(i as f32) * (10000f32.ln() / d as f32)).exp();
            w[pos * d + i] = (pos as f32 * div).sin();
            if i + 1 < d {
                w[pos * d + i + 1] = (pos as f32 * div).cos();
            }
        }
    }
    Tensor::from_vec(w, (n, d), dev)
}

impl TemporalEmbedding {
    pub fn new(d: usize, learn: bool, vb: VarBuilder) -> Result<Self> {
        let make = |(name, n): (&str, usize)| -> Result<Embedding> {
            let vb = vb.pp(name);
            if learn {
                candle_nn::embedding(n, d, vb)
            } else if vb.contains_tensor("emb.weight") {
                Ok(Embedding::new(vb.pp("emb").get((n, d), "weight")?, d))
            } else {
                Ok(Embedding::new(sinusoid(n, d, vb.device())?, d))
            }
        };
        Ok(TemporalEmbedding {
            tables: [
                make(CAL_SIZES[0])?,
                make(CAL_SIZES[1])?,
                make(CAL_SIZES[2])?,
                make(CAL_SIZES[3])?,
                make(CAL_SIZES[4])?,
            ],
        })
    }

    /// `stamp`: `u32 [b, t, 5]` (minute, hour, weekday, day, month).
    pub fn forward(&self, stamp: &Tensor) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for (i, table) in self.tables.iter().enumerate() {
            let idx = stamp.narrow(D::Minus1, i, 1)?.squeeze(D::Minus1)?;
            let e = table.forward(&idx)?;
            acc = Some(match acc {
                None => e,
                Some(a) => (a + e)?,
            });
        }
        Ok(acc.expect("five tables"))
    }
}

/// The predictor model.
pub struct KronosPredictor {
    pub cfg: PredictorConfig,
    pub(crate) emb_s1: Embedding,
    emb_s2: Embedding,
    fusion_proj: Linear,
    time_emb: TemporalEmbedding,
    transformer: Vec<TransformerBlock>,
    pub(crate) norm: RmsNorm,
    pub(crate) dep_attn: CrossAttention,
    pub(crate) dep_norm: RmsNorm,
    pub(crate) proj_s1: Linear,
    pub(crate) proj_s2: Linear,
}

impl KronosPredictor {
    pub fn new(cfg: &PredictorConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg;
        let d = c.d_model;
        let transformer = (0..c.n_layers)
            .map(|i| {
                TransformerBlock::new(
                    d,
                    c.n_heads,
                    c.ff_dim,
                    c.ffn_dropout_p,
                    c.attn_dropout_p,
                    c.resid_dropout_p,
                    vb.pp("transformer").pp(i.to_string()),
                )
            })
            .collect::<Result<_>>()?;
        let emb = vb.pp("embedding");
        let dep = vb.pp("dep_layer");
        Ok(KronosPredictor {
            cfg: cfg.clone(),
            emb_s1: candle_nn::embedding(1 << c.s1_bits, d, emb.pp("emb_s1"))?,
            emb_s2: candle_nn::embedding(1 << c.s2_bits, d, emb.pp("emb_s2"))?,
            fusion_proj: candle_nn::linear(2 * d, d, emb.pp("fusion_proj"))?,
            time_emb: TemporalEmbedding::new(d, c.learn_te, vb.pp("time_emb"))?,
            transformer,
            norm: RmsNorm::new(d, vb.pp("norm"))?,
            // The reference builds the dependency layer with its default of 4 heads.
            dep_attn: CrossAttention::new(
                d,
                4.min(d / 2).max(1),
                c.attn_dropout_p,
                c.resid_dropout_p,
                dep.pp("cross_attn"),
            )?,
            dep_norm: RmsNorm::new(d, dep.pp("norm"))?,
            proj_s1: candle_nn::linear(d, 1 << c.s1_bits, vb.pp("head").pp("proj_s1"))?,
            proj_s2: candle_nn::linear(d, 1 << c.s2_bits, vb.pp("head").pp("proj_s2"))?,
        })
    }

    fn embed(&self, s1: &Tensor, s2: &Tensor, stamp: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let scale = (self.cfg.d_model as f64).sqrt();
        let e1 = (self.emb_s1.forward(s1)? * scale)?;
        let e2 = (self.emb_s2.forward(s2)? * scale)?;
        let x = self.fusion_proj.forward(&Tensor::cat(&[&e1, &e2], D::Minus1)?)?;
        let x = (x + self.time_emb.forward(stamp)?)?;
        dropout(&x, self.cfg.token_dropout_p, train)
    }

    /// Runs the Transformer stack; returns the normalised hidden states `[b, t, d]`.
    pub fn hidden(&self, s1: &Tensor, s2: &Tensor, stamp: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let mut x = self.embed(s1, s2, stamp, train)?;
        for l in &self.transformer {
            x = l.forward(&x, train)?;
        }
        self.norm.forward(&x, train)
    }

    /// The embedding and the Transformer blocks prepared for the inference engine.
    pub(crate) fn engine(&self, kernel: Kernel) -> Result<PredictorEngine> {
        let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let d = self.cfg.d_model;
        let fusion_b = match self.fusion_proj.bias() {
            Some(b) => v(b)?,
            None => vec![0.0; d],
        };
        let time = self
            .time_emb
            .tables
            .iter()
            .map(|t| Ok((v(t.embeddings())?, t.embeddings().dim(0)?)))
            .collect::<Result<Vec<_>>>()?;
        let params = EmbeddingParams {
            d,
            s1: v(self.emb_s1.embeddings())?,
            s2: v(self.emb_s2.embeddings())?,
            fusion: (v(self.fusion_proj.weight())?, fusion_b),
            time,
        };
        Ok(PredictorEngine {
            embedding: fast::Embedding::new(params, kernel),
            stack: Stack::new(&self.transformer, kernel)?,
        })
    }

    /// Coarse-token logits from hidden states.
    pub fn s1_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.proj_s1.forward(hidden)
    }

    /// Fine-token logits of the last position given its (sampled or true) coarse token `s1_last` (`[b, 1]`) and all
    /// hidden states so far (`[b, t, d]`).
    pub fn s2_logits_last(&self, hidden: &Tensor, s1_last: &Tensor) -> Result<Tensor> {
        let q = self.emb_s1.forward(s1_last)?;
        let attn = self.dep_attn.forward(&q, hidden, None)?;
        let t = hidden.dim(1)?;
        let last = hidden.narrow(1, t - 1, 1)?;
        self.proj_s2.forward(&self.dep_norm.forward(&(last + attn)?, None)?)
    }

    /// Training forward with teacher forcing: logits for the next coarse and fine tokens at every position.
    pub fn forward_train(
        &self,
        s1: &Tensor,
        s2: &Tensor,
        stamp: &Tensor,
        s1_target: &Tensor,
        train: Option<&Train>,
    ) -> Result<(Tensor, Tensor)> {
        let h = self.hidden(s1, s2, stamp, train)?;
        let s1_logits = self.s1_logits(&h)?;
        let sib = self.emb_s1.forward(s1_target)?;
        let attn = self.dep_attn.forward(&sib, &h, train)?;
        let x2 = self.dep_norm.forward(&(h + attn)?, train)?;
        Ok((s1_logits, self.proj_s2.forward(&x2)?))
    }

    /// Parameter count of a model built from `cfg` (for reports).
    pub fn count_params(cfg: &PredictorConfig) -> usize {
        let map = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let _ = KronosPredictor::new(cfg, vb);
        map.all_vars().iter().map(|v| v.elem_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets;
    use candle_nn::VarMap;

    #[test]
    fn parameter_names_match_the_reference_layout() {
        let map = VarMap::new();
        let _m = KronosPredictor::new(
            &presets::shipped_predictor(),
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let names: std::collections::BTreeSet<String> = map.data().lock().unwrap().keys().cloned().collect();
        for n in [
            "embedding.emb_s1.weight",
            "embedding.emb_s2.weight",
            "embedding.fusion_proj.weight",
            "embedding.fusion_proj.bias",
            "time_emb.minute_embed.weight",
            "time_emb.month_embed.weight",
            "transformer.0.norm1.weight",
            "transformer.0.self_attn.q_proj.weight",
            "transformer.0.self_attn.out_proj.bias",
            "transformer.3.ffn.w1.weight",
            "transformer.3.ffn.w2.weight",
            "transformer.3.ffn.w3.weight",
            "norm.weight",
            "dep_layer.cross_attn.k_proj.weight",
            "dep_layer.norm.weight",
            "head.proj_s1.weight",
            "head.proj_s2.bias",
        ] {
            assert!(names.contains(n), "missing {n}; have {names:?}");
        }
    }

    #[test]
    fn mini_size_matches_the_published_parameter_count() {
        // Kronos-mini is published as 4.1M parameters.
        let n = KronosPredictor::count_params(&presets::mini_predictor());
        assert!((4_000_000..4_300_000).contains(&n), "{n}");
    }

    #[test]
    fn s2_logits_of_the_last_position_span_the_fine_vocabulary() {
        let cfg = presets::shipped_predictor();
        let map = VarMap::new();
        let m = KronosPredictor::new(&cfg, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).unwrap();
        let dev = Device::Cpu;
        let s1 = Tensor::new(&[[1u32, 5, 9, 2]], &dev).unwrap();
        let s2 = Tensor::new(&[[3u32, 0, 7, 4]], &dev).unwrap();
        let stamp =
            Tensor::new(&[[[0u32, 1, 2, 3, 4], [0, 2, 2, 3, 4], [0, 3, 2, 3, 4], [0, 4, 2, 3, 4]]], &dev).unwrap();
        let h = m.hidden(&s1, &s2, &stamp, None).unwrap();
        let last = Tensor::new(&[[6u32]], &dev).unwrap();
        let a = m.s2_logits_last(&h, &last).unwrap();
        assert_eq!(a.dims(), &[1, 1, 1 << cfg.s2_bits]);
    }
}
