//! The Kronos tokenizer: a Transformer encoder/decoder around binary spherical quantisation (BSQ).
//!
//! Each normalised candle becomes `s1_bits + s2_bits` sign bits; the first `s1_bits` form the coarse token `s1`, the
//! rest the fine token `s2`. The decoder reconstructs the candle from the coarse bits alone (`post_quant_embed_pre`)
//! and from all bits (`post_quant_embed`); training asks both to be right, which makes the code hierarchical.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::config::TokenizerConfig;
use crate::nn::{Train, TransformerBlock};

/// The tokenizer model (`embed`, `encoder.*`, `quant_embed`, `post_quant_embed_pre`, `post_quant_embed`,
/// `decoder.*`, `head`).
pub struct KronosTokenizer {
    pub cfg: TokenizerConfig,
    pub(crate) embed: Linear,
    pub(crate) head: Linear,
    encoder: Vec<TransformerBlock>,
    decoder: Vec<TransformerBlock>,
    pub(crate) quant_embed: Linear,
    post_quant_embed_pre: Linear,
    pub(crate) post_quant_embed: Linear,
}

/// Training outputs: coarse and full reconstructions, and the quantiser loss.
pub struct TokenizerOutput {
    pub recon_pre: Tensor,
    pub recon: Tensor,
    pub bsq_loss: Tensor,
}

impl KronosTokenizer {
    pub fn new(cfg: &TokenizerConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg;
        let block = |i: usize, vb: VarBuilder| {
            TransformerBlock::new(
                c.d_model,
                c.n_heads,
                c.ff_dim,
                c.ffn_dropout_p,
                c.attn_dropout_p,
                c.resid_dropout_p,
                vb.pp(i.to_string()),
            )
        };
        let encoder = (0..c.n_enc_layers - 1).map(|i| block(i, vb.pp("encoder"))).collect::<Result<_>>()?;
        let decoder = (0..c.n_dec_layers - 1).map(|i| block(i, vb.pp("decoder"))).collect::<Result<_>>()?;
        Ok(KronosTokenizer {
            cfg: cfg.clone(),
            embed: candle_nn::linear(c.d_in, c.d_model, vb.pp("embed"))?,
            head: candle_nn::linear(c.d_model, c.d_in, vb.pp("head"))?,
            encoder,
            decoder,
            quant_embed: candle_nn::linear(c.d_model, c.codebook_dim(), vb.pp("quant_embed"))?,
            post_quant_embed_pre: candle_nn::linear(c.s1_bits, c.d_model, vb.pp("post_quant_embed_pre"))?,
            post_quant_embed: candle_nn::linear(c.codebook_dim(), c.d_model, vb.pp("post_quant_embed"))?,
        })
    }

    /// Encoder output projected to the code space and L2-normalised: `[b, t, codebook_dim]`.
    fn latent(&self, x: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let mut z = self.embed.forward(x)?;
        for l in &self.encoder {
            z = l.forward(&z, train)?;
        }
        self.to_code_space(&z)
    }

    /// Encoder output → code space, L2-normalised.
    fn to_code_space(&self, z: &Tensor) -> Result<Tensor> {
        let z = self.quant_embed.forward(z)?;
        let norm = z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        z.broadcast_div(&norm)
    }

    fn run_decoder(&self, z: &Tensor, train: Option<&Train>) -> Result<Tensor> {
        let mut h = z.clone();
        for l in &self.decoder {
            h = l.forward(&h, train)?;
        }
        self.head.forward(&h)
    }

    /// The encoder's and the decoder's Transformer blocks (for the inference engine, [`crate::fast`]).
    pub fn blocks(&self) -> (&[TransformerBlock], &[TransformerBlock]) {
        (&self.encoder, &self.decoder)
    }

    /// The training forward pass on normalised candles `x`: `[b, t, 6]`.
    pub fn forward_train(&self, x: &Tensor, train: Option<&Train>) -> Result<TokenizerOutput> {
        let z = self.latent(x, train)?;
        let (zq, bsq_loss) = bsq(&z, &self.cfg)?;
        let pre = zq.narrow(D::Minus1, 0, self.cfg.s1_bits)?;
        let recon_pre = self.run_decoder(&self.post_quant_embed_pre.forward(&pre)?, train)?;
        let recon = self.run_decoder(&self.post_quant_embed.forward(&zq)?, train)?;
        Ok(TokenizerOutput { recon_pre, recon, bsq_loss })
    }

    /// Coarse and fine token ids (`u32`, `[b, t]` each) of normalised candles.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.token_ids(&self.latent(x, None)?)
    }

    /// Sign bits of code-space vectors as token ids.
    fn token_ids(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t, dim) = z.dims3()?;
        let v = z.flatten_all()?.to_vec1::<f32>()?;
        let (s1, s2): (Vec<u32>, Vec<u32>) = v.chunks(dim).map(|row| ids_of(row, self.cfg.s1_bits)).unzip();
        Ok((Tensor::from_vec(s1, (b, t), z.device())?, Tensor::from_vec(s2, (b, t), z.device())?))
    }

    /// The quantised code vectors (±1/√D) of token ids.
    pub fn codes(&self, s1: &Tensor, s2: &Tensor) -> Result<Tensor> {
        let (b, t) = s1.dims2()?;
        let a = s1.flatten_all()?.to_vec1::<u32>()?;
        let c = s2.flatten_all()?.to_vec1::<u32>()?;
        let out = code_vectors(&a, &c, self.cfg.s1_bits, self.cfg.s2_bits);
        Tensor::from_vec(out, (b, t, self.cfg.codebook_dim()), s1.device())
    }

    /// Normalised candles reconstructed from token ids: `[b, t, 6]`.
    pub fn decode(&self, s1: &Tensor, s2: &Tensor) -> Result<Tensor> {
        let z = self.post_quant_embed.forward(&self.codes(s1, s2)?)?;
        self.run_decoder(&z, None)
    }
}

/// The token ids of one code-space row: bit `i` of a token is dimension `i` being positive (least significant bit
/// first); the first `s1_bits` dimensions make the coarse token, the rest the fine one.
pub fn ids_of(row: &[f32], s1_bits: usize) -> (u32, u32) {
    let bits = |r: &[f32]| r.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (((x > 0.0) as u32) << i));
    (bits(&row[..s1_bits]), bits(&row[s1_bits..]))
}

/// The quantised code vectors (±1/√D, `D = s1_bits + s2_bits` values per pair) of token id pairs.
pub fn code_vectors(s1: &[u32], s2: &[u32], s1_bits: usize, s2_bits: usize) -> Vec<f32> {
    let scale = 1.0 / ((s1_bits + s2_bits) as f32).sqrt();
    let sign = |id: u32, i: usize| if (id >> i) & 1 == 1 { scale } else { -scale };
    let mut out = Vec::with_capacity(s1.len() * (s1_bits + s2_bits));
    for (&a, &c) in s1.iter().zip(s2) {
        out.extend((0..s1_bits).map(|i| sign(a, i)));
        out.extend((0..s2_bits).map(|i| sign(c, i)));
    }
    out
}

/// Binary spherical quantisation of unit vectors `z`: sign bits scaled to the sphere, with a straight-through
/// gradient, the commitment loss and the entropy penalty (per-sample entropy analytically, codebook entropy by
/// groups), as in the reference.
pub fn bsq(z: &Tensor, cfg: &TokenizerConfig) -> Result<(Tensor, Tensor)> {
    let dim = cfg.codebook_dim();
    let scale = 1.0 / (dim as f64).sqrt();
    let sign = z.gt(0f64)?.to_dtype(DType::F32)?.affine(2.0, -1.0)?;
    let zq = (z + (sign - z)?.detach())?.affine(scale, 0.0)?;
    let commit = ((zq.detach() - z)?.sqr()?.sum(D::Minus1)?.mean_all()? * cfg.beta)?;

    // Per-sample entropy: each bit's probability of being -1 given z (sigmoid(-4 z / sqrt(D))).
    let p = sigmoid(&(z * (-4.0 * scale))?)?;
    let q = (1.0 - &p)?;
    let ent = |x: &Tensor| -> Result<Tensor> { x.mul(&(x + 1e-8)?.log()?)?.neg() };
    let persample = (ent(&p)? + ent(&q)?)?.sum(D::Minus1)?.mean_all()?;

    // Codebook entropy by groups of `group_size` bits.
    let g = cfg.group_size;
    let groups = dim / g;
    let shape = z.dims().to_vec();
    let lead: usize = shape[..shape.len() - 1].iter().product();
    let zg = z.reshape((lead, groups, g))?;
    let n_codes = 1usize << g;
    let mut cb = Vec::with_capacity(n_codes * g);
    for code in 0..n_codes {
        for bit in (0..g).rev() {
            cb.push(if (code >> bit) & 1 == 1 { scale as f32 } else { -scale as f32 });
        }
    }
    let codebook = Tensor::from_vec(cb, (n_codes, g), z.device())?;
    // distance = -2 <z_g, c>; prob = softmax(-distance) = softmax(2 <z_g, c>)
    let logits = (zg.reshape((lead * groups, g))?.matmul(&codebook.t()?)? * 2.0)?;
    let prob = candle_nn::ops::softmax(&logits, D::Minus1)?.reshape((lead, groups, n_codes))?;
    let avg = prob.mean(0)?;
    let cb_entropy = ent(&avg)?.sum_all()?;
    let penalty = ((persample * cfg.gamma0)? - (cb_entropy * cfg.gamma)?)?;
    let loss = (commit + (penalty * cfg.zeta)?)?;
    Ok((zq, loss))
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// A tokenizer on the CPU from a safetensors file (e.g. a published checkpoint).
pub fn load(cfg: &TokenizerConfig, weights: &std::path::Path) -> anyhow::Result<KronosTokenizer> {
    let vb = crate::weights::var_builder(weights, &Device::Cpu)?;
    Ok(KronosTokenizer::new(cfg, vb)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets;
    use candle_nn::VarMap;

    #[test]
    fn tokens_round_trip_through_their_codes() {
        let cfg = presets::shipped_tokenizer();
        let map = VarMap::new();
        let tok = KronosTokenizer::new(&cfg, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 9, 6), &Device::Cpu).unwrap();
        let (s1, s2) = tok.encode(&x).unwrap();
        assert_eq!(s1.dims(), &[2, 9]);
        let max = (1u32 << cfg.s1_bits) - 1;
        assert!(s1.flatten_all().unwrap().to_vec1::<u32>().unwrap().iter().all(|&v| v <= max));
        // The codes of the ids equal the quantised latent.
        let z = tok.latent(&x, None).unwrap();
        let (zq, _) = bsq(&z, &cfg).unwrap();
        let codes = tok.codes(&s1, &s2).unwrap();
        let d = (zq - codes).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-6, "{d}");
        let y = tok.decode(&s1, &s2).unwrap();
        assert_eq!(y.dims(), &[2, 9, 6]);
    }

    #[test]
    fn bsq_loss_is_finite_and_differentiable() {
        let cfg = presets::shipped_tokenizer();
        let z0 = candle_core::Var::randn(0f32, 1.0, (3, 4, cfg.codebook_dim()), &Device::Cpu).unwrap();
        let norm = z0.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap();
        let z = z0.broadcast_div(&norm).unwrap();
        let (zq, loss) = bsq(&z, &cfg).unwrap();
        let total = (zq.sum_all().unwrap() + loss.clone()).unwrap();
        let grads = total.backward().unwrap();
        assert!(grads.get(&z0).is_some());
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    }
}
