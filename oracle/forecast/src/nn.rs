//! Transformer building blocks shared by the tokenizer and the predictor, with the module and parameter names of the
//! reference Kronos implementation (so published checkpoints load by name).
//!
//! Every block runs in two modes: training (`Some(&Train)`: differentiable ops, seeded dropout) and inference
//! (`None`: fused kernels, optional KV cache).

use std::cell::RefCell;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Training-time state: the seeded random stream for dropout.
pub struct Train {
    rng: RefCell<ChaCha8Rng>,
}

impl Train {
    pub fn new(rng: ChaCha8Rng) -> Self {
        Train { rng: RefCell::new(rng) }
    }
}

/// Inverted dropout with a mask drawn from the seeded stream (candle's own CPU RNG cannot be seeded).
pub fn dropout(x: &Tensor, p: f64, train: Option<&Train>) -> Result<Tensor> {
    let Some(t) = train else { return Ok(x.clone()) };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut rng = t.rng.borrow_mut();
    let mask: Vec<f32> = (0..n).map(|_| if rng.gen::<f64>() < p { 0.0 } else { scale }).collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    x.mul(&mask)
}

/// Root-mean-square layer norm (`weight`), eps 1e-5 as in the reference.
pub struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm { weight: vb.get_with_hints(d, "weight", candle_nn::Init::Const(1.0))?, eps: 1e-5 })
    }

    pub fn forward(&self, x: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        if train.is_none() && x.is_contiguous() {
            return candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + self.eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(&self.weight)
    }
}

/// SwiGLU feed-forward: `w2(silu(w1 x) * w3 x)`, no biases.
pub struct FeedForward {
    w1: Linear,
    w3: Linear,
    w2: Linear,
    dropout_p: f64,
}

impl FeedForward {
    pub fn new(d: usize, ff: usize, dropout_p: f64, vb: VarBuilder) -> Result<Self> {
        Ok(FeedForward {
            w1: candle_nn::linear_no_bias(d, ff, vb.pp("w1"))?,
            w3: candle_nn::linear_no_bias(d, ff, vb.pp("w3"))?,
            w2: candle_nn::linear_no_bias(ff, d, vb.pp("w2"))?,
            dropout_p,
        })
    }

    pub fn forward(&self, x: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let h = (self.w1.forward(x)?.silu()? * self.w3.forward(x)?)?;
        dropout(&self.w2.forward(&h)?, self.dropout_p, train)
    }
}

/// Rotary position embedding tables for one head dimension.
#[derive(Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize) -> Self {
        let inv_freq = (0..head_dim).step_by(2).map(|i| 1.0 / 10000f32.powf(i as f32 / head_dim as f32)).collect();
        Rope { inv_freq }
    }

    /// `cos`, `sin` of shape `[len, head_dim / 2]` for positions `start..start + len`.
    pub fn tables(&self, start: usize, len: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (cos, sin) = self.host_tables(start, len);
        Ok((Tensor::from_vec(cos, (len, half), dev)?, Tensor::from_vec(sin, (len, half), dev)?))
    }

    /// [`Rope::tables`] as row-major host buffers.
    pub fn host_tables(&self, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    /// Rotated pairs per position (`head_dim / 2`).
    pub fn half(&self) -> usize {
        self.inv_freq.len()
    }

    /// Rotates `x` of shape `[b, h, t, d]` (the reference's `rotate_half` convention).
    pub fn apply(&self, x: &Tensor, start: usize, train: Option<&Train>) -> Result<Tensor> {
        let (_, _, t, d) = x.dims4()?;
        let (cos, sin) = self.tables(start, t, x.device())?;
        if train.is_none() {
            return candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin);
        }
        let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
        let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)?.add(&rot.broadcast_mul(&sin)?)
    }
}

fn causal_mask(tq: usize, offset: usize, dev: &Device) -> Result<Tensor> {
    let tk = offset + tq;
    let m: Vec<f32> =
        (0..tq).flat_map(|i| (0..tk).map(move |j| if j > offset + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(m, (tq, tk), dev)
}

fn softmax(x: &Tensor, train: Option<&Train>) -> Result<Tensor> {
    if train.is_some() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

fn split_heads(x: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, n_heads, d / n_heads))?.transpose(1, 2)?.contiguous()
}

fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * hd))
}

/// Causal multi-head self-attention with rotary embeddings (`q_proj`, `k_proj`, `v_proj`, `out_proj`).
pub struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    n_heads: usize,
    rope: Rope,
    attn_dropout_p: f64,
    resid_dropout_p: f64,
}

impl SelfAttention {
    pub fn new(d: usize, n_heads: usize, attn_dropout_p: f64, resid_dropout_p: f64, vb: VarBuilder) -> Result<Self> {
        Ok(SelfAttention {
            q_proj: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            n_heads,
            rope: Rope::new(d / n_heads),
            attn_dropout_p,
            resid_dropout_p,
        })
    }

    /// `x`: `[b, t, d]`, whole sequences (inference with a cache runs in [`crate::fast`]).
    pub fn forward(&self, x: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        let q = self.rope.apply(&split_heads(&self.q_proj.forward(x)?, self.n_heads)?, 0, train)?;
        let k = self.rope.apply(&split_heads(&self.k_proj.forward(x)?, self.n_heads)?, 0, train)?;
        let v = split_heads(&self.v_proj.forward(x)?, self.n_heads)?;
        let hd = q.dim(D::Minus1)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let scores = if t > 1 { scores.broadcast_add(&causal_mask(t, 0, x.device())?)? } else { scores };
        let attn = dropout(&softmax(&scores, train)?, self.attn_dropout_p, train)?;
        let out = merge_heads(&attn.matmul(&v)?)?;
        dropout(&self.out_proj.forward(&out)?, self.resid_dropout_p, train)
    }
}

/// Pre-norm Transformer block: `x + attn(norm1 x)`, then `x + ffn(norm2 x)`.
pub struct TransformerBlock {
    norm1: RmsNorm,
    self_attn: SelfAttention,
    norm2: RmsNorm,
    ffn: FeedForward,
}

impl TransformerBlock {
    pub fn new(
        d: usize,
        n_heads: usize,
        ff: usize,
        ffn_dropout_p: f64,
        attn_dropout_p: f64,
        resid_dropout_p: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(TransformerBlock {
            norm1: RmsNorm::new(d, vb.pp("norm1"))?,
            self_attn: SelfAttention::new(d, n_heads, attn_dropout_p, resid_dropout_p, vb.pp("self_attn"))?,
            norm2: RmsNorm::new(d, vb.pp("norm2"))?,
            ffn: FeedForward::new(d, ff, ffn_dropout_p, vb.pp("ffn"))?,
        })
    }

    /// The weights, for the inference engine ([`crate::fast`]).
    pub fn params(&self) -> Result<crate::fast::BlockParams> {
        let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let lin = |l: &Linear| -> Result<(Vec<f32>, Vec<f32>)> {
            let b = match l.bias() {
                Some(b) => v(b)?,
                None => vec![0.0; l.weight().dim(0)?],
            };
            Ok((v(l.weight())?, b))
        };
        let a = &self.self_attn;
        let (d, ff) = (a.q_proj.weight().dim(1)?, self.ffn.w1.weight().dim(0)?);
        Ok(crate::fast::BlockParams {
            d,
            n_heads: a.n_heads,
            ff,
            eps: self.norm1.eps as f32,
            norm1: v(&self.norm1.weight)?,
            norm2: v(&self.norm2.weight)?,
            q: lin(&a.q_proj)?,
            k: lin(&a.k_proj)?,
            v: lin(&a.v_proj)?,
            out: lin(&a.out_proj)?,
            w1: v(self.ffn.w1.weight())?,
            w3: v(self.ffn.w3.weight())?,
            w2: v(self.ffn.w2.weight())?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.norm1.forward(x, train)?, train)?)?;
        &h + self.ffn.forward(&self.norm2.forward(&h, train)?, train)?
    }
}

/// Cross-attention from the sampled coarse token to the context (`dep_layer.cross_attn`).
///
/// Over full sequences (training, teacher-forced validation) queries and keys have the same length and the attention
/// is causal with rotary positions. At inference the reference queries with the last position only; its rotary table
/// then has one row (position 0) for both queries and keys, i.e. no rotation, and no mask. Both are reproduced.
pub struct CrossAttention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) out_proj: Linear,
    pub(crate) n_heads: usize,
    rope: Rope,
    attn_dropout_p: f64,
    resid_dropout_p: f64,
}

impl CrossAttention {
    pub fn new(d: usize, n_heads: usize, attn_dropout_p: f64, resid_dropout_p: f64, vb: VarBuilder) -> Result<Self> {
        Ok(CrossAttention {
            q_proj: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            n_heads,
            rope: Rope::new(d / n_heads),
            attn_dropout_p,
            resid_dropout_p,
        })
    }

    pub fn forward(&self, query: &Tensor, kv: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let tq = query.dim(1)?;
        let tk = kv.dim(1)?;
        let mut q = split_heads(&self.q_proj.forward(query)?, self.n_heads)?;
        let mut k = split_heads(&self.k_proj.forward(kv)?, self.n_heads)?;
        let v = split_heads(&self.v_proj.forward(kv)?, self.n_heads)?;
        if tq == tk && tq > 1 {
            q = self.rope.apply(&q, 0, train)?;
            k = self.rope.apply(&k, 0, train)?;
        }
        let hd = q.dim(D::Minus1)?;
        let mut scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if tq == tk && tq > 1 {
            scores = scores.broadcast_add(&causal_mask(tq, 0, query.device())?)?;
        }
        let attn = dropout(&softmax(&scores, train)?, self.attn_dropout_p, train)?;
        let out = merge_heads(&attn.matmul(&v)?)?;
        dropout(&self.out_proj.forward(&out)?, self.resid_dropout_p, train)
    }
}

/// Mean of a 0-d tensor as `f32`.
pub fn scalar(t: &Tensor) -> Result<f32> {
    t.to_dtype(DType::F32)?.to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn vb(map: &VarMap) -> VarBuilder<'_> {
        VarBuilder::from_varmap(map, DType::F32, &Device::Cpu)
    }

    #[test]
    fn fused_and_differentiable_paths_agree() {
        use rand::SeedableRng;
        let map = VarMap::new();
        let block = TransformerBlock::new(16, 4, 32, 0.0, 0.0, 0.0, vb(&map)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 16), &Device::Cpu).unwrap();
        let a = block.forward(&x, None).unwrap();
        let train = Train::new(ChaCha8Rng::seed_from_u64(1));
        let b = block.forward(&x, Some(&train)).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "inference and training paths differ by {diff}");
    }

    #[test]
    fn masking_is_causal() {
        let map = VarMap::new();
        let block = TransformerBlock::new(16, 2, 32, 0.0, 0.0, 0.0, vb(&map)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 7, 16), &Device::Cpu).unwrap();
        let full = block.forward(&x, None).unwrap();
        // Changing a later input must not change earlier outputs.
        let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for e in v.iter_mut().skip(6 * 16) {
            *e += 3.0;
        }
        let x2 = Tensor::from_vec(v, (1, 7, 16), &Device::Cpu).unwrap();
        let out2 = block.forward(&x2, None).unwrap();
        let early = (full.narrow(1, 0, 6).unwrap() - out2.narrow(1, 0, 6).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(early < 1e-5, "a future position leaked into the past: {early}");
    }

    #[test]
    fn seeded_dropout_is_reproducible() {
        use rand::SeedableRng;
        let x = Tensor::ones((4, 8), DType::F32, &Device::Cpu).unwrap();
        let a = dropout(&x, 0.5, Some(&Train::new(ChaCha8Rng::seed_from_u64(7)))).unwrap();
        let b = dropout(&x, 0.5, Some(&Train::new(ChaCha8Rng::seed_from_u64(7)))).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        assert_eq!(dropout(&x, 0.5, None).unwrap().to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
    }
}
