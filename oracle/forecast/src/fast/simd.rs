//! Element-wise kernels of the inference engine (softmax, RMSNorm, SwiGLU, rotary embedding), written as plain loops
//! that the compiler vectorises; [`dispatch!`] runs them compiled for AVX2+FMA when the CPU has it (the default
//! x86-64 target only allows SSE2).

/// Whether the CPU runs AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether the CPU runs AVX-512 F/BW/VL (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// Calls `f(args..)` (an `#[inline(always)]` function) through a copy compiled for AVX-512 or AVX2+FMA when the CPU
/// has them.
macro_rules! dispatch {
    ($f:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if $crate::fast::simd::avx512() {
                // SAFETY: the CPU was just checked for the features this copy is compiled for.
                unsafe { $crate::fast::simd::with_avx512(|| $f($($arg),*)) }
            } else if $crate::fast::simd::avx2() {
                // SAFETY: the CPU was just checked for the features this copy is compiled for.
                unsafe { $crate::fast::simd::with_avx2(|| $f($($arg),*)) }
            } else {
                $f($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $f($($arg),*)
        }
    }};
}
pub(crate) use dispatch;

/// Runs `f` (inlined into this function) with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` (inlined into this function) with AVX-512 enabled.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
#[inline]
pub(crate) unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2²³: adding it rounds a float in ±2²² to an integer held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;

/// `e^x` to about 1e-7 relative for `x` in [-87, 88] (clamped outside), branch-free so that loops over it
/// vectorise: `e^x = 2^n · e^r` with `|r| ≤ ln2/2` and Cephes' polynomial for `e^r`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits(ni.wrapping_add(127) << 23)
}

/// Lanes of the partial results that reductions keep, so that they vectorise (float sums are not reassociated
/// by the compiler on its own).
const LANES: usize = 16;

#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    it.remainder().iter().chain(&acc).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `x ← e^(x − max)`; returns the sum.
#[inline(always)]
fn exp_shift_sum(x: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut it = x.chunks_exact_mut(LANES);
    for c in &mut it {
        for i in 0..LANES {
            let e = exp(c[i] - max);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in it.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    sum
}

#[inline(always)]
fn scale(x: &mut [f32], k: f32) {
    for v in x {
        *v *= k;
    }
}

/// `Σ a_i b_i`.
#[inline(always)]
pub(crate) fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// `Σ a_i b_i` (vectorised where the CPU allows).
///
/// # Panics
/// If `a` and `b` differ in length.
#[track_caller]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: vectors of {} and {} values", a.len(), b.len());
    dispatch!(dot_impl(a, b))
}

/// In-place softmax of a row.
#[inline(always)]
pub(crate) fn softmax_impl(row: &mut [f32]) {
    let max = max_of(row);
    let sum = exp_shift_sum(row, max);
    scale(row, 1.0 / sum);
}

/// The exponentials of a softmax row, in place and not yet divided by their sum; returns `1 / sum`.
pub(crate) fn softmax_unscaled(row: &mut [f32]) -> f32 {
    dispatch!(softmax_unscaled_impl(row))
}

#[inline(always)]
fn softmax_unscaled_impl(row: &mut [f32]) -> f32 {
    let max = max_of(row);
    1.0 / exp_shift_sum(row, max)
}

/// Softmax over two parts of one row (`a` then `b`) as if they were joined.
pub(crate) fn softmax2(a: &mut [f32], b: &mut [f32]) {
    dispatch!(softmax2_impl(a, b))
}

#[inline(always)]
fn softmax2_impl(a: &mut [f32], b: &mut [f32]) {
    if b.is_empty() {
        return softmax_impl(a);
    }
    let max = max_of(a).max(max_of(b));
    let sum = exp_shift_sum(a, max) + exp_shift_sum(b, max);
    scale(a, 1.0 / sum);
    scale(b, 1.0 / sum);
}

/// RMSNorm of every `d`-wide row of `x` into `out` (eps inside the square root, as candle and the reference do);
/// `d = w.len()`.
///
/// # Panics
/// If `x` is not whole rows of `d` values or `out` differs from it in length.
#[track_caller]
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert!(d > 0 && x.len().is_multiple_of(d), "rms_norm: {} values are not whole rows of {d}", x.len());
    assert_eq!(out.len(), x.len(), "rms_norm: {} outputs for {} inputs", out.len(), x.len());
    dispatch!(rms_norm_impl(x, w, eps, out))
}

#[inline(always)]
fn rms_norm_impl(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss = dot_impl(xr, xr);
        let inv = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// SwiGLU gate: rows of `g` are `[w1 x | w3 x]` (`2 · ff` wide); `out` rows get `silu(w1 x) · w3 x`.
///
/// # Panics
/// If `g` is not whole rows of `2 · ff` values or `out` does not hold one `ff`-wide row per row of `g`.
#[track_caller]
pub(crate) fn swiglu(g: &[f32], ff: usize, out: &mut [f32]) {
    assert!(ff > 0 && g.len().is_multiple_of(2 * ff), "swiglu: {} values are not whole rows of 2 × {ff}", g.len());
    assert_eq!(out.len(), g.len() / 2, "swiglu: {} outputs for {} rows of {ff}", out.len(), g.len() / (2 * ff));
    dispatch!(swiglu_impl(g, ff, out))
}

#[inline(always)]
fn swiglu_impl(g: &[f32], ff: usize, out: &mut [f32]) {
    for (gr, or) in g.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
        let (a, b) = gr.split_at(ff);
        for ((o, &x), &y) in or.iter_mut().zip(a).zip(b) {
            *o = x / (1.0 + exp(-x)) * y;
        }
    }
}

/// `x += y`.
///
/// # Panics
/// If `x` and `y` differ in length.
#[track_caller]
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_assign: {} values plus {}", x.len(), y.len());
    dispatch!(add_assign_impl(x, y))
}

#[inline(always)]
fn add_assign_impl(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotates one head vector in place (`rotate_half` convention): `(x1, x2) → (x1 cos − x2 sin, x2 cos + x1 sin)`,
/// then scales it.
///
/// # Panics
/// If `v` is not twice as long as `cos` and `sin`.
#[inline(always)]
#[track_caller]
pub(crate) fn rope_head(v: &mut [f32], cos: &[f32], sin: &[f32], scale: f32) {
    let half = cos.len();
    assert!(
        sin.len() == half && v.len() == 2 * half,
        "rope_head: {} values, {half} cosines, {} sines",
        v.len(),
        sin.len()
    );
    let (x1, x2) = v.split_at_mut(half);
    for i in 0..half {
        let (a, b) = (x1[i], x2[i]);
        x1[i] = (a * cos[i] - b * sin[i]) * scale;
        x2[i] = (a * sin[i] + b * cos[i]) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_over_the_softmax_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) >= 0.0 && exp(-1e30) < 1e-37);
    }

    #[test]
    fn kernels_match_their_definitions() {
        let mut a = vec![1.0f32, 2.0, 3.0];
        let mut b = vec![0.5f32];
        softmax2(&mut a, &mut b);
        let z: f64 = [1.0f64, 2.0, 3.0, 0.5].iter().map(|v| v.exp()).sum();
        assert!((a[2] as f64 - 3f64.exp() / z).abs() < 1e-6 && (b[0] as f64 - 0.5f64.exp() / z).abs() < 1e-6);
        let mut out = vec![0.0; 4];
        rms_norm(&[3.0, 4.0, 0.0, 0.0], &[1.0, 2.0], 1e-5, &mut out);
        assert!((out[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-5 && (out[1] - 8.0 / 12.5f32.sqrt()).abs() < 1e-5);
        assert_eq!(out[2], 0.0);
        let mut s = vec![0.0; 1];
        swiglu(&[2.0, 3.0], 1, &mut s);
        assert!((s[0] - 2.0 / (1.0 + (-2.0f32).exp()) * 3.0).abs() < 1e-6);
        let mut v = vec![1.0, 0.0];
        rope_head(&mut v, &[0.0], &[1.0], 2.0);
        assert_eq!(v, vec![0.0, 2.0]);
    }

    /// The copies compiled for AVX-512 and AVX2+FMA (each where this CPU has it) give what the plain copy gives, on
    /// lengths with and without a remainder past the 16 lanes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn feature_copies_match_the_plain_kernels() {
        fn all(x: &[f32], w: &[f32]) -> Vec<f32> {
            let mut out = Vec::new();
            let mut s = x.to_vec();
            softmax_impl(&mut s);
            out.extend(&s);
            let mut r = vec![0.0; x.len()];
            rms_norm_impl(x, &w[..x.len() / 2], 1e-5, &mut r);
            out.extend(&r);
            let mut g = vec![0.0; x.len() / 2];
            swiglu_impl(x, x.len() / 2, &mut g);
            out.extend(&g);
            out.push(dot_impl(x, w));
            let mut a = x.to_vec();
            add_assign_impl(&mut a, w);
            out.extend(&a);
            let mut b = vec![0u16; x.len()];
            super::super::amx::convert_row_impl_for_tests(x, &mut b);
            out.extend(b.iter().map(|&v| v as f32));
            out
        }
        for len in [2usize, 32, 46, 150] {
            let x: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let w: Vec<f32> = (0..len).map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0).collect();
            let plain = all(&x, &w);
            let mut copies = Vec::new();
            if avx2() {
                // SAFETY: the CPU was just checked for AVX2 and FMA.
                copies.push(("avx2", unsafe { with_avx2(|| all(&x, &w)) }));
            }
            if avx512() {
                // SAFETY: the CPU was just checked for AVX-512 F/BW/VL, AVX2 and FMA.
                copies.push(("avx512", unsafe { with_avx512(|| all(&x, &w)) }));
            }
            if copies.is_empty() {
                eprintln!("this CPU has neither AVX2+FMA nor AVX-512: only the plain kernels ran");
            }
            for (name, got) in copies {
                for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
                    // FMA contraction may change the last bits of a product-sum.
                    assert!((g - p).abs() <= 1e-5 * (1.0 + p.abs()), "{name}, length {len}, value {i}: {g} vs {p}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "dot: vectors of 3 and 2 values")]
    fn dot_refuses_vectors_of_different_lengths() {
        dot(&[1.0, 2.0, 3.0], &[1.0, 2.0]);
    }

    #[test]
    #[should_panic(expected = "rms_norm: 5 values are not whole rows of 2")]
    fn rms_norm_refuses_a_partial_row() {
        rms_norm(&[1.0; 5], &[1.0, 1.0], 1e-5, &mut [0.0; 5]);
    }

    #[test]
    #[should_panic(expected = "rms_norm: 2 outputs for 4 inputs")]
    fn rms_norm_refuses_a_short_output() {
        rms_norm(&[1.0; 4], &[1.0, 1.0], 1e-5, &mut [0.0; 2]);
    }

    #[test]
    #[should_panic(expected = "swiglu: 2 outputs for 2 rows of 2")]
    fn swiglu_refuses_a_short_output() {
        swiglu(&[1.0; 8], 2, &mut [0.0; 2]);
    }

    #[test]
    #[should_panic(expected = "add_assign: 3 values plus 2")]
    fn add_assign_refuses_vectors_of_different_lengths() {
        add_assign(&mut [1.0; 3], &[1.0; 2]);
    }

    #[test]
    #[should_panic(expected = "rope_head: 3 values, 1 cosines, 1 sines")]
    fn rope_head_refuses_a_vector_of_another_width() {
        rope_head(&mut [1.0; 3], &[1.0], &[0.0], 1.0);
    }
}
