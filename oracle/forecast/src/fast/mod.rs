//! The inference engine: the Transformer stacks of a loaded model run on plain buffers instead of candle's op graph
//! (fused projections, causal attention that skips masked work, sample paths sharing their history's cache), with
//! matrix products in f32 or bf16 ([`Precision`]); bf16 runs on Intel AMX tiles where the CPU has them.
//!
//! The candle model stays the definition: training uses it, and the tests hold this engine to it.

pub mod amx;
pub mod block;
pub mod matmul;
pub mod model;
pub(crate) mod simd;

use candle_core::{Result, Tensor};

pub use block::{Block, BlockParams, Cache};
pub use matmul::{Kernel, Precision};
pub use model::Model;

use crate::nn::TransformerBlock;

/// Blocks run one after another, each with its own cache.
pub struct Stack {
    blocks: Vec<Block>,
    d: usize,
}

impl Stack {
    pub fn new(blocks: &[TransformerBlock], kernel: Kernel) -> Result<Stack> {
        let blocks = blocks.iter().map(|b| Ok(Block::new(b.params()?, kernel))).collect::<Result<Vec<_>>>()?;
        let d = blocks.first().map(|b| b.width()).unwrap_or(0);
        Ok(Stack { blocks, d })
    }

    /// Empty caches, one per block.
    pub fn new_cache(&self) -> Vec<Cache> {
        vec![Cache::default(); self.blocks.len()]
    }

    /// `x`: `[b, t, d]` continuing `caches` (which grow by `t`); returns `[b, t, d]`.
    pub fn forward(&self, x: &Tensor, caches: &mut [Cache]) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        if (d != self.d && !self.blocks.is_empty()) || caches.len() != self.blocks.len() {
            candle_core::bail!(
                "stack of width {} and {} blocks got width {d} and {} caches",
                self.d,
                self.blocks.len(),
                caches.len()
            );
        }
        if let Some(c) = caches.first() {
            if c.batch() != b {
                candle_core::bail!("cache holds {} sequences, input {b}", c.batch());
            }
        }
        if self.blocks.is_empty() {
            return Ok(x.clone());
        }
        Tensor::from_vec(self.run(x.flatten_all()?.to_vec1::<f32>()?, b, t, caches), (b, t, d), x.device())
    }

    /// [`Stack::forward`] on a host buffer `[b × t × d]`.
    pub fn run(&self, x: Vec<f32>, b: usize, t: usize, caches: &mut [Cache]) -> Vec<f32> {
        run(&self.blocks, x, b, t, caches)
    }

    /// Fills `caches` with one sequence of `t` positions (`x`: `[t × d]`) whose outputs are not needed: the last
    /// block only computes its keys and values.
    pub fn prefill(&self, x: Vec<f32>, t: usize, caches: &mut [Cache]) {
        let Some((last, rest)) = self.blocks.split_last() else { return };
        let n = rest.len();
        let h = run(rest, x, 1, t, &mut caches[..n]);
        last.prefill(&h, t, &mut caches[n]);
        block::give(h);
    }

    /// `x` without a cache (each of the `b` sequences on its own).
    pub fn forward_once(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let outs =
            (0..b).map(|i| self.forward(&x.narrow(0, i, 1)?, &mut self.new_cache())).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 0)
    }
}

fn run(blocks: &[Block], x: Vec<f32>, b: usize, t: usize, caches: &mut [Cache]) -> Vec<f32> {
    let mut h = x;
    for (blk, c) in blocks.iter().zip(caches.iter_mut()) {
        let next = blk.forward(&h, b, t, c);
        block::give(std::mem::replace(&mut h, next));
    }
    h
}

/// The predictor's input embedding at inference: `fusion_proj([√d · emb_s1[s1], √d · emb_s2[s2]]) + Σ calendar
/// tables[stamp]`.
pub struct Embedding {
    d: usize,
    /// Token tables, already multiplied by √d.
    s1: Vec<f32>,
    s2: Vec<f32>,
    fusion: matmul::Weight,
    fusion_b: Vec<f32>,
    /// Calendar tables (minute, hour, weekday, day, month) and their sizes.
    time: Vec<(Vec<f32>, usize)>,
}

/// The weights of [`Embedding`], as the candle model holds them.
pub struct EmbeddingParams {
    pub d: usize,
    pub s1: Vec<f32>,
    pub s2: Vec<f32>,
    pub fusion: (Vec<f32>, Vec<f32>),
    pub time: Vec<(Vec<f32>, usize)>,
}

impl Embedding {
    pub fn new(p: EmbeddingParams, kernel: Kernel) -> Embedding {
        let scale = (p.d as f32).sqrt();
        Embedding {
            d: p.d,
            s1: p.s1.iter().map(|v| v * scale).collect(),
            s2: p.s2.iter().map(|v| v * scale).collect(),
            fusion: matmul::Weight::new(&p.fusion.0, p.d, 2 * p.d, kernel),
            fusion_b: p.fusion.1,
            time: p.time,
        }
    }

    /// Embeds token ids `a`, `c` (one pair per row) with five calendar values per row (minute, hour, weekday, day,
    /// month): `[rows × d]`.
    pub fn embed(&self, a: &[u32], c: &[u32], st: &[u32]) -> Result<Vec<f32>> {
        let d = self.d;
        if c.len() != a.len() || st.len() != 5 * a.len() {
            candle_core::bail!("embedding: {} coarse ids, {} fine ids, {} calendar values", a.len(), c.len(), st.len());
        }
        let m = a.len();
        let mut cat = vec![0.0f32; m * 2 * d];
        for (i, row) in cat.chunks_exact_mut(2 * d).enumerate() {
            for (tab, id, half) in [(&self.s1, a[i], 0), (&self.s2, c[i], d)] {
                let src = tab.get(id as usize * d..(id as usize + 1) * d);
                let src = src.ok_or_else(|| candle_core::Error::Msg(format!("token id {id} out of the table")))?;
                row[half..half + d].copy_from_slice(src);
            }
        }
        let mut x = vec![0.0f32; m * d];
        matmul::linear(&cat, m, &self.fusion, Some(&self.fusion_b), &mut x, true);
        for (i, row) in x.chunks_exact_mut(d).enumerate() {
            for (f, (tab, n)) in self.time.iter().enumerate() {
                let v = st[i * 5 + f] as usize;
                if v >= *n {
                    candle_core::bail!("calendar feature {f} is {v}, its table has {n} rows");
                }
                simd::add_assign(row, &tab[v * d..(v + 1) * d]);
            }
        }
        Ok(x)
    }
}

/// The predictor's inference parts: its embedding and its Transformer stack.
pub struct PredictorEngine {
    pub embedding: Embedding,
    pub stack: Stack,
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;

    /// Largest difference, relative to the largest magnitude of `b`.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let m = |t: Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        m((a - b).unwrap()) / m(b.clone()).max(1e-6)
    }

    fn blocks(map: &VarMap, n: usize, d: usize, heads: usize, ff: usize) -> Vec<TransformerBlock> {
        let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
        (0..n).map(|i| TransformerBlock::new(d, heads, ff, 0.0, 0.0, 0.0, vb.pp(i.to_string())).unwrap()).collect()
    }

    fn candle(blocks: &[TransformerBlock], x: &Tensor) -> Tensor {
        blocks.iter().fold(x.clone(), |h, b| b.forward(&h, None).unwrap())
    }

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::F32, Kernel::Bf16Emulated];
        if amx::available() {
            k.push(Kernel::Amx);
        }
        k
    }

    /// The engine against the candle model: whole sequences (longer than one attention block), the same sequence fed
    /// in pieces through the cache, and sample paths continuing a shared history.
    #[test]
    fn engine_equals_the_candle_blocks() {
        let map = VarMap::new();
        let (d, heads, ff) = (64, 4, 128);
        let bl = blocks(&map, 2, d, heads, ff);
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 150, d), &dev).unwrap();
        let want = candle(&bl, &x);
        for kernel in kernels() {
            // bf16 keeps 8 significant bits (relative rounding 2⁻⁹) on every product's inputs, and the rounding
            // compounds through the blocks.
            let tol = if kernel == Kernel::F32 { 1e-5 } else { 8e-2 };
            let stack = Stack::new(&bl, kernel).unwrap();
            let got = stack.forward_once(&x).unwrap();
            assert!(max_diff(&got, &want) < tol, "{kernel:?} whole: {}", max_diff(&got, &want));
            let mut c = stack.new_cache();
            let a = stack.forward(&x.narrow(1, 0, 100).unwrap(), &mut c).unwrap();
            let b = stack.forward(&x.narrow(1, 100, 50).unwrap(), &mut c).unwrap();
            let inc = Tensor::cat(&[&a, &b], 1).unwrap();
            assert!(max_diff(&inc, &want) < tol, "{kernel:?} cached: {}", max_diff(&inc, &want));
            assert_eq!(c[0].len(), 150);

            // Three paths continue the first 140 positions with two positions each.
            let paths = Tensor::randn(0f32, 1.0, (3, 2, d), &dev).unwrap();
            let mut c = stack.new_cache();
            stack.forward(&x.narrow(1, 0, 140).unwrap(), &mut c).unwrap();
            c.iter_mut().for_each(|c| c.fan_out(3).unwrap());
            let p0 = stack.forward(&paths.narrow(1, 0, 1).unwrap(), &mut c).unwrap();
            let p1 = stack.forward(&paths.narrow(1, 1, 1).unwrap(), &mut c).unwrap();
            for i in 0..3 {
                let seq = Tensor::cat(&[&x.narrow(1, 0, 140).unwrap(), &paths.narrow(0, i, 1).unwrap()], 1).unwrap();
                let full = candle(&bl, &seq);
                let got = Tensor::cat(&[&p0.narrow(0, i, 1).unwrap(), &p1.narrow(0, i, 1).unwrap()], 1).unwrap();
                let d = max_diff(&got, &full.narrow(1, 140, 2).unwrap());
                assert!(d < tol, "{kernel:?} path {i}: {d}");
            }
            assert!(c[0].fan_out(2).is_err());
            assert!(stack.forward(&x.narrow(1, 0, 1).unwrap(), &mut c).is_err(), "batch 1 into a 3-path cache");
        }
    }
}
