//! The whole model at inference on plain buffers: tokenizer encoder and decoder, predictor, its two heads and the
//! dependency layer, so that a forecast never goes through candle's op graph (or its thread pool).

use candle_core::{Result, Tensor};

use super::matmul::{gemm_f32, linear, Kernel, Weight};
use super::{simd, Cache, PredictorEngine, Stack};
use crate::nn::RmsNorm;
use crate::predictor::KronosPredictor;
use crate::tokenizer::{self, KronosTokenizer};

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// A linear layer with its bias.
struct Dense {
    w: Weight,
    b: Vec<f32>,
}

impl Dense {
    fn new(l: &candle_nn::Linear, kernel: Kernel) -> Result<Dense> {
        let (n, k) = l.weight().dims2()?;
        let b = match l.bias() {
            Some(b) => host(b)?,
            None => vec![0.0; n],
        };
        Ok(Dense { w: Weight::new(&host(l.weight())?, n, k, kernel), b })
    }

    fn apply(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * self.w.n];
        linear(x, m, &self.w, Some(&self.b), &mut out, true);
        out
    }
}

struct Norm {
    w: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(n: &RmsNorm) -> Result<Norm> {
        Ok(Norm { w: host(&n.weight)?, eps: n.eps as f32 })
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        simd::rms_norm(x, &self.w, self.eps, &mut out);
        out
    }
}

/// Keys and values of the dependency layer over a path's hidden states: the shared history's once, each path's own
/// positions after it.
pub struct DepKv {
    k: Vec<f32>,
    v: Vec<f32>,
    t: usize,
    /// Per path: own keys, values.
    own: Vec<(Vec<f32>, Vec<f32>)>,
}

/// A loaded model pair prepared for inference.
pub struct Model {
    s1_bits: usize,
    s2_bits: usize,
    tok_embed: Dense,
    encoder: Stack,
    quant: Dense,
    post_quant: Dense,
    decoder: Stack,
    head: Dense,
    d: usize,
    predictor: PredictorEngine,
    norm: Norm,
    proj_s1: Dense,
    proj_s2: Dense,
    /// `emb_s1` unscaled (the dependency layer's query input).
    emb_s1: Vec<f32>,
    dep_q: Dense,
    dep_k: Dense,
    dep_v: Dense,
    dep_out: Dense,
    dep_heads: usize,
    dep_norm: Norm,
    /// Caches given back by finished forecasts: reusing their memory spares the page faults of fresh allocations.
    spare: std::sync::Mutex<Vec<Vec<Cache>>>,
}

impl Model {
    pub fn new(tok: &KronosTokenizer, pred: &KronosPredictor, kernel: Kernel) -> Result<Model> {
        let (enc, dec) = tok.blocks();
        let dep = &pred.dep_attn;
        Ok(Model {
            s1_bits: tok.cfg.s1_bits,
            s2_bits: tok.cfg.s2_bits,
            tok_embed: Dense::new(&tok.embed, kernel)?,
            encoder: Stack::new(enc, kernel)?,
            quant: Dense::new(&tok.quant_embed, kernel)?,
            post_quant: Dense::new(&tok.post_quant_embed, kernel)?,
            decoder: Stack::new(dec, kernel)?,
            head: Dense::new(&tok.head, kernel)?,
            d: pred.cfg.d_model,
            predictor: pred.engine(kernel)?,
            norm: Norm::new(&pred.norm)?,
            proj_s1: Dense::new(&pred.proj_s1, kernel)?,
            proj_s2: Dense::new(&pred.proj_s2, kernel)?,
            emb_s1: host(pred.emb_s1.embeddings())?,
            dep_q: Dense::new(&dep.q_proj, kernel)?,
            dep_k: Dense::new(&dep.k_proj, kernel)?,
            dep_v: Dense::new(&dep.v_proj, kernel)?,
            dep_out: Dense::new(&dep.out_proj, kernel)?,
            dep_heads: dep.n_heads,
            dep_norm: Norm::new(&pred.dep_norm)?,
            spare: Default::default(),
        })
    }

    /// Token ids of `t` normalised candles (`x`: `[t × 6]`): the signs of the encoder's code-space vector (its
    /// L2 normalisation does not change a sign).
    pub fn encode(&self, x: &[f32], t: usize) -> (Vec<u32>, Vec<u32>) {
        let z = self.tok_embed.apply(x, t);
        let z = self.encoder.run(z, 1, t, &mut self.encoder.new_cache());
        let z = self.quant.apply(&z, t);
        let dim = self.s1_bits + self.s2_bits;
        z.chunks_exact(dim).map(|r| tokenizer::ids_of(r, self.s1_bits)).unzip()
    }

    /// Empty predictor caches.
    pub fn predictor_cache(&self) -> Vec<Cache> {
        self.reuse(self.predictor.stack.new_cache().len()).unwrap_or_else(|| self.predictor.stack.new_cache())
    }

    /// Empty decoder caches.
    pub fn decoder_cache(&self) -> Vec<Cache> {
        self.reuse(self.decoder.new_cache().len()).unwrap_or_else(|| self.decoder.new_cache())
    }

    fn reuse(&self, layers: usize) -> Option<Vec<Cache>> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let i = spare.iter().position(|c| c.len() == layers)?;
        Some(spare.swap_remove(i))
    }

    /// Gives caches back for later forecasts.
    pub fn recycle(&self, mut caches: Vec<Cache>) {
        caches.iter_mut().for_each(Cache::clear);
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < 4 {
            spare.push(caches);
        }
    }

    /// Normalised hidden states `[b × t × d]` of `b` sequences of `t` new positions continuing `caches`.
    pub fn hidden(
        &self,
        s1: &[u32],
        s2: &[u32],
        stamp: &[u32],
        b: usize,
        t: usize,
        caches: &mut [Cache],
    ) -> Result<Vec<f32>> {
        let x = self.predictor.embedding.embed(s1, s2, stamp)?;
        Ok(self.norm.apply(&self.predictor.stack.run(x, b, t, caches)))
    }

    /// Coarse-token logits of hidden rows: `[rows × 2^s1_bits]`.
    pub fn s1_logits(&self, h: &[f32]) -> Vec<f32> {
        self.proj_s1.apply(h, h.len() / self.d)
    }

    /// The dependency layer's keys and values over the history's hidden states (`[t × d]`).
    pub fn dep_history(&self, h: &[f32]) -> DepKv {
        let t = h.len() / self.d;
        DepKv { k: self.dep_k.apply(h, t), v: self.dep_v.apply(h, t), t, own: Vec::new() }
    }

    /// Adds one own position per path (`h`: `[n × d]`) to `kv`.
    pub fn dep_extend(&self, kv: &mut DepKv, h: &[f32]) {
        let n = h.len() / self.d;
        if kv.own.is_empty() {
            kv.own = vec![(Vec::new(), Vec::new()); n];
        }
        let (k, v) = (self.dep_k.apply(h, n), self.dep_v.apply(h, n));
        for (i, (pk, pv)) in kv.own.iter_mut().enumerate() {
            pk.extend_from_slice(&k[i * self.d..(i + 1) * self.d]);
            pv.extend_from_slice(&v[i * self.d..(i + 1) * self.d]);
        }
    }

    /// Fine-token logits `[n × 2^s2_bits]` of `n` paths given their sampled coarse tokens, their last hidden rows
    /// (`last`: `[n × d]`, or one row shared by all) and the dependency keys and values.
    pub fn s2_logits(&self, kv: &DepKv, s1: &[u32], last: &[f32]) -> Result<Vec<f32>> {
        let (d, n) = (self.d, s1.len());
        let mut q_in = vec![0.0f32; n * d];
        for (row, &id) in q_in.chunks_exact_mut(d).zip(s1) {
            let src = self.emb_s1.get(id as usize * d..(id as usize + 1) * d);
            row.copy_from_slice(src.ok_or_else(|| candle_core::Error::Msg(format!("token id {id} out of the table")))?);
        }
        let q = self.dep_q.apply(&q_in, n);
        let (heads, hd, t) = (self.dep_heads, d / self.dep_heads, kv.t);
        let own = kv.own.first().map_or(0, |o| o.0.len() / d);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut att = vec![0.0f32; n * d];
        let mut s = vec![0.0f32; n * t];
        let mut o = vec![0.0f32; n * hd];
        for h in 0..heads {
            // History part for all paths at once, then each path's own positions.
            gemm_f32(n, t, hd, &q[h * hd..], d, 1, &kv.k[h * hd..], 1, d, &mut s, t, false);
            for i in 0..n {
                let row = &mut s[i * t..(i + 1) * t];
                row.iter_mut().for_each(|x| *x *= scale);
                let mut own_s: Vec<f32> = (0..own)
                    .map(|j| simd::dot(&q[i * d + h * hd..][..hd], &kv.own[i].0[j * d + h * hd..][..hd]) * scale)
                    .collect();
                simd::softmax2(row, &mut own_s);
                let oi = &mut att[i * d + h * hd..][..hd];
                for (j, &p) in own_s.iter().enumerate() {
                    for (a, &v) in oi.iter_mut().zip(&kv.own[i].1[j * d + h * hd..][..hd]) {
                        *a += p * v;
                    }
                }
            }
            gemm_f32(n, hd, t, &s, t, 1, &kv.v[h * hd..], d, 1, &mut o, hd, false);
            for i in 0..n {
                simd::add_assign(&mut att[i * d + h * hd..][..hd], &o[i * hd..(i + 1) * hd]);
            }
        }
        let mut x = self.dep_out.apply(&att, n);
        for (i, row) in x.chunks_exact_mut(d).enumerate() {
            let l = if last.len() == d { last } else { &last[i * d..(i + 1) * d] };
            simd::add_assign(row, l);
        }
        Ok(self.proj_s2.apply(&self.dep_norm.apply(&x), n))
    }

    /// Normalised candles `[b × t × 6]` decoded from `b` sequences of `t` token pairs continuing `caches`.
    pub fn decode(&self, s1: &[u32], s2: &[u32], b: usize, t: usize, caches: &mut [Cache]) -> Vec<f32> {
        let z = self.post_quant.apply(&tokenizer::code_vectors(s1, s2, self.s1_bits, self.s2_bits), s1.len());
        let h = self.decoder.run(z, b, t, caches);
        self.head.apply(&h, b * t)
    }

    /// Fills the decoder caches with the context's `t` token pairs (their own reconstructions are not computed).
    pub fn decode_prefill(&self, s1: &[u32], s2: &[u32], t: usize, caches: &mut [Cache]) {
        let z = self.post_quant.apply(&tokenizer::code_vectors(s1, s2, self.s1_bits, self.s2_bits), t);
        self.decoder.prefill(z, t, caches);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::config::presets;
    use crate::fast::amx;

    fn models(maps: &(VarMap, VarMap)) -> (KronosTokenizer, KronosPredictor) {
        let vb = |m| VarBuilder::from_varmap(m, DType::F32, &Device::Cpu);
        let tok = KronosTokenizer::new(&presets::shipped_tokenizer(), vb(&maps.0)).unwrap();
        let pred = KronosPredictor::new(&presets::shipped_predictor(), vb(&maps.1)).unwrap();
        (tok, pred)
    }

    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    fn t(v: &[f32], shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn host(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Every inference step of the engine against the candle model on whole sequences: token ids, hidden states
    /// continued through the cache and as paths over a shared history, both heads, and the decoder after a
    /// prefill; at f32 (tight) and bf16 (loose).
    #[test]
    fn model_equals_the_candle_model() {
        let maps = (VarMap::new(), VarMap::new());
        let (tok, pred) = models(&maps);
        let dev = Device::Cpu;
        let (t0, n) = (70, 3);
        let x: Vec<f32> = (0..t0 * 6).map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0).clamp(-5.0, 5.0)).collect();
        let s1: Vec<u32> = (0..t0).map(|i| (i * 37 % 64) as u32).collect();
        let s2: Vec<u32> = (0..t0).map(|i| (i * 11 % 64) as u32).collect();
        let stamp: Vec<u32> =
            (0..t0).flat_map(|i| [0, (i % 24) as u32, (i % 7) as u32, (i % 31 + 1) as u32, 3]).collect();
        let st_t = Tensor::from_vec(stamp.clone(), (1, t0, 5), &dev).unwrap();
        let ids = |v: &[u32]| Tensor::from_vec(v.to_vec(), (1, v.len()), &dev).unwrap();
        let want_h = host(&pred.hidden(&ids(&s1), &ids(&s2), &st_t, None).unwrap());
        // Each path continues the history with its own next token pair.
        let p1: Vec<u32> = vec![5, 9, 33];
        let p2: Vec<u32> = vec![1, 60, 2];
        let next_st = [0u32, 22, 4, 9, 3];

        let mut kernels = vec![Kernel::F32, Kernel::Bf16Emulated];
        if amx::available() {
            kernels.push(Kernel::Amx);
        }
        for kernel in kernels {
            // bf16 rounding compounds through the stacks (random weights, a few values per row); the bf16 kernels
            // themselves are checked exactly against rounded inputs in `amx`.
            let tol = if kernel == Kernel::F32 { 1e-4 } else { 8e-2 };
            let m = Model::new(&tok, &pred, kernel).unwrap();

            if kernel == Kernel::F32 {
                let (a, b) = m.encode(&x, t0);
                let (c1, c2) = tok.encode(&t(&x, (1, t0, 6))).unwrap();
                assert_eq!(a, c1.flatten_all().unwrap().to_vec1::<u32>().unwrap());
                assert_eq!(b, c2.flatten_all().unwrap().to_vec1::<u32>().unwrap());
            }

            // History in two pieces through the cache.
            let mut cache = m.predictor_cache();
            let cut = 50;
            let mut h = m.hidden(&s1[..cut], &s2[..cut], &stamp[..cut * 5], 1, cut, &mut cache).unwrap();
            h.extend(m.hidden(&s1[cut..], &s2[cut..], &stamp[cut * 5..], 1, t0 - cut, &mut cache).unwrap());
            assert!(rel_diff(&h, &want_h) < tol, "{kernel:?} hidden: {}", rel_diff(&h, &want_h));

            // s1 logits of the last position.
            let d = h.len() / t0;
            let want_l1 = host(&pred.s1_logits(&t(&want_h[(t0 - 1) * d..], (1, 1, d))).unwrap());
            assert!(rel_diff(&m.s1_logits(&h[(t0 - 1) * d..]), &want_l1) < tol, "{kernel:?} s1 logits");

            // s2 logits at step 0 (shared history) for three sampled coarse tokens.
            let mut dep = m.dep_history(&h);
            let got = m.s2_logits(&dep, &p1, &h[(t0 - 1) * d..]).unwrap();
            let hist = t(&want_h, (1, t0, d)).repeat((n, 1, 1)).unwrap();
            let q = Tensor::from_vec(p1.clone(), (n, 1), &dev).unwrap();
            let want = host(&pred.s2_logits_last(&hist, &q).unwrap());
            assert!(rel_diff(&got, &want) < tol, "{kernel:?} s2 logits, step 0: {}", rel_diff(&got, &want));

            // Step 1: the paths continue the history; hidden states and s2 logits against whole sequences.
            cache.iter_mut().for_each(|c| c.fan_out(n).unwrap());
            let st: Vec<u32> = (0..n).flat_map(|_| next_st).collect();
            let hn = m.hidden(&p1, &p2, &st, n, 1, &mut cache).unwrap();
            m.dep_extend(&mut dep, &hn);
            let q2: Vec<u32> = vec![7, 7, 40];
            let got = m.s2_logits(&dep, &q2, &hn).unwrap();
            for i in 0..n {
                let (mut a, mut b) = (s1.clone(), s2.clone());
                a.push(p1[i]);
                b.push(p2[i]);
                let mut stp = stamp.clone();
                stp.extend(next_st);
                let full = pred.hidden(&ids(&a), &ids(&b), &Tensor::from_vec(stp, (1, t0 + 1, 5), &dev).unwrap(), None);
                let full = full.unwrap();
                let fh = host(&full);
                let rd = rel_diff(&hn[i * d..(i + 1) * d], &fh[t0 * d..]);
                assert!(rd < tol, "{kernel:?} path {i} hidden: {rd}");
                let want = host(&pred.s2_logits_last(&full, &Tensor::new(&[[q2[i]]], &dev).unwrap()).unwrap());
                let rd = rel_diff(&got[i * want.len()..(i + 1) * want.len()], &want);
                assert!(rd < tol, "{kernel:?} path {i} s2 logits: {rd}");
            }

            // Decoder: the context prefilled, then each path's two new token pairs.
            let mut dc = m.decoder_cache();
            m.decode_prefill(&s1, &s2, t0, &mut dc);
            dc.iter_mut().for_each(|c| c.fan_out(n).unwrap());
            let g1: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
            let g2: Vec<u32> = vec![9, 8, 7, 6, 5, 4];
            let rec = m.decode(&g1, &g2, n, 2, &mut dc);
            for i in 0..n {
                let (mut a, mut b) = (s1.clone(), s2.clone());
                a.extend(&g1[2 * i..2 * i + 2]);
                b.extend(&g2[2 * i..2 * i + 2]);
                let want = host(&tok.decode(&ids(&a), &ids(&b)).unwrap());
                let rd = rel_diff(&rec[i * 12..(i + 1) * 12], &want[t0 * 6..]);
                assert!(rd < tol, "{kernel:?} path {i} decoded: {rd}");
            }
            m.recycle(dc);
            assert!(m.decoder_cache().iter().all(|c| c.is_empty()), "recycled caches come back empty");
        }
    }

    /// Forecasts started from inside rayon's pool, several at once, give the answers they give one by one (the
    /// engine's per-thread scratch is never borrowed across a parallel wait), at every kernel.
    #[test]
    fn concurrent_forecasts_inside_the_thread_pool_agree_with_sequential_ones() {
        use rayon::prelude::*;

        use crate::data::Candle;
        use crate::fast::Precision;
        use crate::forecast::{ForecastOptions, Forecaster};

        let candles: Vec<Candle> = (0..90)
            .map(|i| {
                let close = 100.0 + ((i * 37 % 23) as f64 - 11.0) * 0.3;
                Candle {
                    timestamp: 1_600_000_000 + i * 3600,
                    open: close - 0.1,
                    high: close + 0.5,
                    low: close - 0.5,
                    close,
                    volume: 10.0 + (i % 5) as f64,
                    amount: close * 10.0,
                }
            })
            .collect();
        for precision in [Precision::F32, Precision::Bf16] {
            let f = Forecaster::random(&presets::shipped_tokenizer(), &presets::shipped_predictor(), 64)
                .unwrap()
                .with_precision(precision);
            let opts = |seed| ForecastOptions { horizon: 2, samples: 8, seed, ..ForecastOptions::default() };
            let one_by_one: Vec<Vec<Vec<f64>>> =
                (0..6).map(|s| f.forecast(&candles[..40 + 8 * s as usize], &opts(s)).unwrap().paths).collect();
            let together: Vec<Vec<Vec<f64>>> = (0..6u64)
                .into_par_iter()
                .map(|s| f.forecast(&candles[..40 + 8 * s as usize], &opts(s)).unwrap().paths)
                .collect();
            assert_eq!(one_by_one, together, "{precision}");
        }
    }
}
