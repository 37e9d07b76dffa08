//! One pre-norm Transformer block at inference, on plain f32 buffers: fused QKV projection, rotary embedding,
//! causal attention that only computes the visible part of each row, SwiGLU, and a key/value cache that lets many
//! sample paths share one history without copying it.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::amx::{self, Packed, Rows};
use super::matmul::{gemm_f32, linear, Kernel, Weight};
use super::simd;
use crate::nn::Rope;

/// The weights of one block, as the candle model holds them (`[out × in]` matrices).
pub struct BlockParams {
    pub d: usize,
    pub n_heads: usize,
    pub ff: usize,
    pub eps: f32,
    pub norm1: Vec<f32>,
    pub norm2: Vec<f32>,
    pub q: (Vec<f32>, Vec<f32>),
    pub k: (Vec<f32>, Vec<f32>),
    pub v: (Vec<f32>, Vec<f32>),
    pub out: (Vec<f32>, Vec<f32>),
    pub w1: Vec<f32>,
    pub w3: Vec<f32>,
    pub w2: Vec<f32>,
}

/// Keys and values of earlier positions. Before [`Cache::fan_out`] it holds one sequence (the history); after it,
/// `n` sample paths continue that history, each with its own later positions, and the history is stored once.
#[derive(Debug, Default, Clone)]
pub struct Cache {
    /// History keys and values, `[len × d]`.
    k: Vec<f32>,
    v: Vec<f32>,
    /// The same in bf16, kept for the AMX kernel.
    kb: Vec<u16>,
    vb: Vec<u16>,
    len: usize,
    /// Per path: own keys and values `[own × d]`.
    paths: Vec<(Vec<f32>, Vec<f32>)>,
    own: usize,
}

impl Cache {
    /// Positions seen by each sequence.
    pub fn len(&self) -> usize {
        self.len + self.own
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of sequences the next call must carry (1 before fanning out).
    pub fn batch(&self) -> usize {
        self.paths.len().max(1)
    }

    /// Empties the cache, keeping its memory for the next sequence.
    pub fn clear(&mut self) {
        self.k.clear();
        self.v.clear();
        self.kb.clear();
        self.vb.clear();
        self.paths.clear();
        (self.len, self.own) = (0, 0);
    }

    /// Continues the history as `n` paths (no copy of the history).
    pub fn fan_out(&mut self, n: usize) -> Result<(), String> {
        if !self.paths.is_empty() {
            return Err(format!("cache already fanned out to {} paths", self.paths.len()));
        }
        self.paths = vec![(Vec::new(), Vec::new()); n];
        Ok(())
    }
}

/// Rotary tables for positions `0..len`, grown on demand and shared by the calls that need no more.
struct RopeTable {
    rope: Rope,
    table: Mutex<Arc<(Vec<f32>, Vec<f32>)>>,
}

impl RopeTable {
    fn new(hd: usize) -> Self {
        RopeTable { rope: Rope::new(hd), table: Mutex::new(Arc::new((Vec::new(), Vec::new()))) }
    }

    /// `(cos, sin)`, each `[positions × hd/2]`, covering at least `len` positions.
    fn upto(&self, len: usize) -> Arc<(Vec<f32>, Vec<f32>)> {
        let half = self.rope.half();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.0.len() < len * half {
            let n = len.max(t.0.len() / half.max(1) * 2).max(64);
            *t = Arc::new(self.rope.host_tables(0, n));
        }
        t.clone()
    }
}

/// A Transformer block prepared for one kernel.
pub struct Block {
    d: usize,
    n_heads: usize,
    hd: usize,
    ff: usize,
    eps: f32,
    kernel: Kernel,
    norm1: Vec<f32>,
    norm2: Vec<f32>,
    qkv: Weight,
    qkv_b: Vec<f32>,
    out: Weight,
    out_b: Vec<f32>,
    w13: Weight,
    w2: Weight,
    rope: RopeTable,
}

/// Query rows per attention block: the causal mask lets a block skip the keys after its last row.
const QB: usize = 64;

impl Block {
    pub fn new(p: BlockParams, kernel: Kernel) -> Block {
        let (d, ff) = (p.d, p.ff);
        let hd = d / p.n_heads;
        let cat = |parts: &[&Vec<f32>]| parts.iter().flat_map(|v| v.iter().copied()).collect::<Vec<f32>>();
        Block {
            d,
            n_heads: p.n_heads,
            hd,
            ff,
            eps: p.eps,
            kernel,
            qkv: Weight::new(&cat(&[&p.q.0, &p.k.0, &p.v.0]), 3 * d, d, kernel),
            qkv_b: cat(&[&p.q.1, &p.k.1, &p.v.1]),
            out: Weight::new(&p.out.0, d, d, kernel),
            out_b: p.out.1,
            w13: Weight::new(&cat(&[&p.w1, &p.w3]), 2 * ff, d, kernel),
            w2: Weight::new(&p.w2, d, ff, kernel),
            norm1: p.norm1,
            norm2: p.norm2,
            rope: RopeTable::new(hd),
        }
    }

    /// Model width.
    pub fn width(&self) -> usize {
        self.d
    }

    /// Runs `b` sequences of `t` new positions (`x`: `[b × t × d]`, row-major) that continue `cache`, appends their
    /// keys and values to it and returns the block's output `[b × t × d]`.
    ///
    /// Three parallel phases: projections by chunks of rows, attention by head, the rest of the block by chunks of
    /// rows again.
    pub fn forward(&self, x: &[f32], b: usize, t: usize, cache: &mut Cache) -> Vec<f32> {
        let (d, m) = (self.d, b * t);
        assert_eq!(x.len(), m * d, "block input size");
        assert_eq!(b, cache.batch(), "batch must match the cache");
        let scale = 1.0 / (self.hd as f32).sqrt();
        let qkv = self.project(x, b, t, scale, cache);

        let cache = &*cache;
        // One task per head (every head costs the same): lay out its keys and values, then its blocks of rows.
        let parts: Vec<Vec<f32>> = (0..self.n_heads)
            .into_par_iter()
            .map(|hh| {
                let kv = HeadKv::new(self.kernel, cache, hh, self.hd, d);
                let mut out = Vec::with_capacity(m * self.hd);
                for r0 in (0..m).step_by(QB) {
                    out.extend(self.attend(hh, &kv, &qkv, r0, (r0 + QB).min(m), t, cache));
                }
                out
            })
            .collect();
        let mut o = take(m * d);
        for (hh, part) in parts.iter().enumerate() {
            for (r, row) in part.chunks_exact(self.hd).enumerate() {
                o[r * d + hh * self.hd..][..self.hd].copy_from_slice(row);
            }
        }

        give(qkv);
        let mut y = take(m * d);
        y.copy_from_slice(x);
        y.par_chunks_mut(ROWS * d).zip(o.par_chunks(ROWS * d)).for_each(|(yc, oc)| {
            let rows = yc.len() / d;
            WORK.with_borrow_mut(|w| {
                let (h, rest) = (&mut w.0, &mut w.1);
                let h = grow(h, rows * d);
                linear(oc, rows, &self.out, Some(&self.out_b), h, false);
                simd::add_assign(yc, h);
                simd::rms_norm(yc, &self.norm2, self.eps, h);
                let g = grow(rest, rows * 3 * self.ff);
                let (g, a) = g.split_at_mut(rows * 2 * self.ff);
                linear(h, rows, &self.w13, None, g, false);
                simd::swiglu(g, self.ff, a);
                linear(a, rows, &self.w2, None, h, false);
                simd::add_assign(yc, h);
            });
        });
        give(o);
        y
    }

    /// Appends the keys and values of `t` new positions of one sequence to `cache` without computing the block's
    /// output (what the last block of a stack needs for positions whose output nobody reads).
    pub fn prefill(&self, x: &[f32], t: usize, cache: &mut Cache) {
        let d = self.d;
        assert!(x.len() == t * d && cache.paths.is_empty(), "prefill takes one sequence before any fan-out");
        let qkv = self.project(x, 1, t, 1.0, cache);
        give(qkv);
    }

    /// Projections of `b × t` new rows (`[rows × 3d]`: rotated queries scaled by `q_scale`, rotated keys, values),
    /// with the keys and values appended to `cache`: into the history (before a fan-out, by the same parallel
    /// chunks of rows, with their bf16 copies for AMX) or to each path.
    fn project(&self, x: &[f32], b: usize, t: usize, q_scale: f32, cache: &mut Cache) -> Vec<f32> {
        let (d, m) = (self.d, b * t);
        let offset = cache.len();
        let table = self.rope.upto(offset + t);
        let mut qkv = take(m * 3 * d);
        let history = cache.paths.is_empty();
        let amx = self.kernel == Kernel::Amx;
        let old = cache.len * d;
        if history {
            cache.k.resize(old + m * d, 0.0);
            cache.v.resize(old + m * d, 0.0);
            if amx {
                cache.kb.resize(old + m * d, 0);
                cache.vb.resize(old + m * d, 0);
            }
        }
        let chunks = m.div_ceil(ROWS);
        let (kb_at, vb_at) = (old.min(cache.kb.len()), old.min(cache.vb.len()));
        let mut kc = split(&mut cache.k[old..], history, chunks, ROWS * d);
        let mut vc = split(&mut cache.v[old..], history, chunks, ROWS * d);
        let mut kbc = split(&mut cache.kb[kb_at..], history && amx, chunks, ROWS * d);
        let mut vbc = split(&mut cache.vb[vb_at..], history && amx, chunks, ROWS * d);
        qkv.par_chunks_mut(ROWS * 3 * d)
            .zip(x.par_chunks(ROWS * d))
            .zip(kc.par_iter_mut().zip(vc.par_iter_mut()))
            .zip(kbc.par_iter_mut().zip(vbc.par_iter_mut()))
            .enumerate()
            .for_each(|(ci, (((qc, xc), (k, v)), (kb, vb)))| {
                let rows = xc.len() / d;
                WORK.with_borrow_mut(|w| {
                    let h = grow(&mut w.0, rows * d);
                    simd::rms_norm(xc, &self.norm1, self.eps, h);
                    linear(h, rows, &self.qkv, Some(&self.qkv_b), qc, false);
                });
                simd::dispatch!(rotate(qc, ci * ROWS, t, d, self.hd, offset, &table, q_scale));
                for (dst, dst16, part) in [(k, kb, 1), (v, vb, 2)] {
                    let Some(dst) = dst else { continue };
                    for (r, row) in dst.chunks_exact_mut(d).enumerate() {
                        row.copy_from_slice(&qc[r * 3 * d + part * d..][..d]);
                    }
                    if let Some(dst16) = dst16 {
                        amx::convert_row(dst, dst16);
                    }
                }
            });
        if history {
            cache.len += t;
        } else {
            for (bi, (pk, pv)) in cache.paths.iter_mut().enumerate() {
                for r in bi * t..(bi + 1) * t {
                    pk.extend_from_slice(&qkv[r * 3 * d + d..r * 3 * d + 2 * d]);
                    pv.extend_from_slice(&qkv[r * 3 * d + 2 * d..r * 3 * d + 3 * d]);
                }
            }
            cache.own += t;
        }
        qkv
    }

    /// Attention of head `hh` for new rows `r0..r1` (already in `cache`): `[(r1 - r0) × hd]`.
    // The inner loop's scalars (head, row range, step length) over the borrowed cache; called per head and block.
    #[allow(clippy::too_many_arguments)]
    fn attend(&self, hh: usize, kv: &HeadKv, qkv: &[f32], r0: usize, r1: usize, t: usize, cache: &Cache) -> Vec<f32> {
        let (d, hd) = (self.d, self.hd);
        let history = cache.paths.is_empty();
        let (l, own) = (cache.len, cache.own);
        // Visible history keys and own keys of row `r`.
        let first_new = if history { l - t } else { own - t };
        let vis_hist = |r: usize| if history { first_new + r % t + 1 } else { l };
        let vis_own = |r: usize| if history { 0 } else { first_new + r % t + 1 };
        let width = l + if history { 0 } else { own };
        let ld_s = width.div_ceil(amx::DEPTH) * amx::DEPTH;
        let q_at = |r: usize| &qkv[r * 3 * d + hh * hd..][..hd];
        let rows = r1 - r0;
        let mut out = vec![0.0f32; rows * hd];
        let mut inv = [1.0f32; QB];
        WORK.with_borrow_mut(|w| {
            let s = grow(&mut w.0, QB * ld_s);
            let kc = (r0..r1).map(vis_hist).max().unwrap_or(0);
            kv.scores(qkv, r0, rows, kc, 3 * d, hh * hd, s, ld_s);
            for r in r0..r1 {
                let row = &mut s[(r - r0) * ld_s..(r - r0 + 1) * ld_s];
                let (hist_part, own_part) = row.split_at_mut(l);
                let (vh, vo) = (vis_hist(r), vis_own(r));
                if vo > 0 {
                    let (pk, _) = &cache.paths[r / t];
                    for (j, sj) in own_part[..vo].iter_mut().enumerate() {
                        *sj = simd::dot(q_at(r), &pk[j * d + hh * hd..][..hd]);
                    }
                }
                if vo > 0 {
                    simd::softmax2(&mut hist_part[..vh], &mut own_part[..vo]);
                } else {
                    // Normalised on the way into the product.
                    inv[r - r0] = simd::softmax_unscaled(&mut hist_part[..vh]);
                }
                hist_part[vh..kc].fill(0.0);
            }
            kv.values(s, rows, kc, ld_s, &inv[..rows], &mut out);
            for r in r0..r1 {
                let vo = vis_own(r);
                if vo > 0 {
                    let (_, pv) = &cache.paths[r / t];
                    let o = &mut out[(r - r0) * hd..(r - r0 + 1) * hd];
                    for j in 0..vo {
                        let p = s[(r - r0) * ld_s + l + j];
                        for (oc, &vc) in o.iter_mut().zip(&pv[j * d + hh * hd..][..hd]) {
                            *oc += p * vc;
                        }
                    }
                }
            }
        });
        out
    }
}

thread_local! {
    /// Per-thread scratch of the block phases, reused between calls.
    static WORK: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
    /// Large buffers given back by earlier calls (fresh large allocations cost page faults).
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = Default::default();
}

/// A buffer of `n` values (contents unspecified) from this thread's pool.
pub(crate) fn take(n: usize) -> Vec<f32> {
    let mut v = POOL.with_borrow_mut(|p| p.pop()).unwrap_or_default();
    if v.len() < n {
        v.resize(n, 0.0);
    }
    v.truncate(n);
    v
}

/// Returns a buffer to this thread's pool.
pub(crate) fn give(v: Vec<f32>) {
    POOL.with_borrow_mut(|p| {
        if p.len() < 8 {
            p.push(v)
        }
    })
}

/// The first `n` values of `v`, growing it if needed (contents are left over from earlier use).
fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `v` in chunks of `size` (when `on`), or `chunks` empty slots.
fn split<T>(v: &mut [T], on: bool, chunks: usize, size: usize) -> Vec<Option<&mut [T]>> {
    if on {
        v.chunks_mut(size).map(Some).collect()
    } else {
        (0..chunks).map(|_| None).collect()
    }
}

/// Rows per chunk in the row-parallel phases.
const ROWS: usize = 64;

/// Rotary embedding of the query and key parts of rows `row0..` of `qkv` (`[rows × 3d]`); queries are also scaled.
#[inline(always)]
// A hot kernel's scalar dimensions (row offset, step, widths, position offset, scale), each set per call site.
#[allow(clippy::too_many_arguments)]
fn rotate(
    qkv: &mut [f32],
    row0: usize,
    t: usize,
    d: usize,
    hd: usize,
    offset: usize,
    table: &(Vec<f32>, Vec<f32>),
    scale: f32,
) {
    let half = hd / 2;
    for (r, row) in qkv.chunks_exact_mut(3 * d).enumerate() {
        let pos = offset + (row0 + r) % t;
        let (cos, sin) = (&table.0[pos * half..(pos + 1) * half], &table.1[pos * half..(pos + 1) * half]);
        for head in row[..2 * d].chunks_exact_mut(hd).enumerate() {
            let (i, v) = head;
            simd::rope_head(v, cos, sin, if i < d / hd { scale } else { 1.0 });
        }
    }
}

/// One head's history keys and values laid out for the kernel.
enum HeadKv {
    /// Contiguous `[len × hd]` copies (bf16-rounded for the emulated kernel).
    Plain {
        k: Vec<f32>,
        v: Vec<f32>,
        hd: usize,
        round: bool,
    },
    Amx {
        k: Packed,
        v: Packed,
        hd: usize,
    },
}

impl HeadKv {
    fn new(kernel: Kernel, cache: &Cache, hh: usize, hd: usize, d: usize) -> HeadKv {
        let l = cache.len;
        let off = hh * hd;
        let col = |src: &[f32], j: usize| -> Vec<f32> { src[j * d + off..][..hd].to_vec() };
        match kernel {
            Kernel::Amx => HeadKv::Amx {
                // Scores = Q · Kᵀ: the right-hand matrix is Kᵀ (hd × len); values: V (len × hd).
                k: Packed::transposed(&cache.kb[off..], l, hd, d),
                v: Packed::rows(&cache.vb[off..], l, hd, d),
                hd,
            },
            _ => {
                let round = kernel.rounds();
                let r = |x: f32| if round { amx::round_bf16(x) } else { x };
                let k = (0..l).flat_map(|j| col(&cache.k, j)).map(r).collect();
                let v = (0..l).flat_map(|j| col(&cache.v, j)).map(r).collect();
                HeadKv::Plain { k, v, hd, round }
            }
        }
    }

    /// `s[i][j] = q[r0 + i] · k[j]` for `i < rows`, `j < kc`; queries at `qkv[r * ldq + qcol..]`.
    // A GEMM-like kernel's sizes and leading dimensions (`rows`, `kc`, `ldq`, `qcol`, `ld_s`), as in BLAS.
    #[allow(clippy::too_many_arguments)]
    fn scores(
        &self,
        qkv: &[f32],
        r0: usize,
        rows: usize,
        kc: usize,
        ldq: usize,
        qcol: usize,
        s: &mut [f32],
        ld_s: usize,
    ) {
        match self {
            HeadKv::Plain { k, hd, round, .. } => {
                let hd = *hd;
                let q: Vec<f32> = (r0..r0 + rows)
                    .flat_map(|r| {
                        qkv[r * ldq + qcol..][..hd].iter().map(|&x| if *round { amx::round_bf16(x) } else { x })
                    })
                    .collect();
                gemm_f32(rows, kc, hd, &q, hd, 1, k, 1, hd, s, ld_s, false);
            }
            HeadKv::Amx { k, hd, .. } => {
                let mut a = Rows::default();
                a.fill(&qkv[r0 * ldq + qcol..], rows, *hd, ldq);
                amx::matmul(&a, k, k.kt(), kc.div_ceil(amx::TILE), s, ld_s, false);
            }
        }
    }

    /// `out[i] = Σ_j p[i][j] · scale[i] · v[j]` for `i < rows`, `j < kc` (`p` in `s`, scaled and rounded in place
    /// where needed).
    fn values(&self, s: &mut [f32], rows: usize, kc: usize, ld_s: usize, scale: &[f32], out: &mut [f32]) {
        match self {
            HeadKv::Plain { v, hd, round, .. } => {
                for (row, &k) in s.chunks_mut(ld_s).zip(scale) {
                    let r = *round;
                    row[..kc].iter_mut().for_each(|x| *x = if r { amx::round_bf16(*x * k) } else { *x * k });
                }
                gemm_f32(rows, *hd, kc, s, ld_s, 1, v, *hd, 1, out, *hd, false);
            }
            HeadKv::Amx { v, hd, .. } => {
                let mut a = Rows::default();
                a.fill_scaled(s, rows, kc, ld_s, scale);
                let ldc = v.nt() * amx::TILE;
                let mut c = vec![0.0f32; a.mp() * ldc];
                amx::matmul(&a, v, kc.div_ceil(amx::DEPTH), v.nt(), &mut c, ldc, false);
                for i in 0..rows {
                    out[i * hd..(i + 1) * hd].copy_from_slice(&c[i * ldc..i * ldc + hd]);
                }
            }
        }
    }
}
