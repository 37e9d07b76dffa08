//! Matrix products at the chosen precision: f32 through the `gemm` crate (what candle uses), or bf16 inputs with
//! f32 accumulation — on AMX tiles where the CPU has them, otherwise emulated (inputs rounded to bf16, then the f32
//! kernel), so that the bf16 numbers are the same kind of numbers on every machine.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::amx::{self, Packed, Rows};

/// Arithmetic of the forecaster's matrix products.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere (the default; what the shipped model's figures were measured with).
    #[default]
    F32,
    /// bf16 inputs, f32 accumulation; fast on CPUs with Intel AMX.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("precision must be f32 or bf16, got {s:?}")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// How products are computed on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    F32,
    /// bf16-rounded inputs through the f32 kernel.
    Bf16Emulated,
    Amx,
}

impl Kernel {
    pub fn for_precision(p: Precision) -> Kernel {
        match p {
            Precision::F32 => Kernel::F32,
            Precision::Bf16 if amx::available() => Kernel::Amx,
            Precision::Bf16 => Kernel::Bf16Emulated,
        }
    }

    /// Whether inputs are rounded to bf16.
    pub fn rounds(self) -> bool {
        self != Kernel::F32
    }
}

/// A linear layer's weight `[n × k]` (out × in) prepared for one kernel.
pub struct Weight {
    pub n: usize,
    pub k: usize,
    kernel: Kernel,
    /// Row-major `[n × k]` (bf16-rounded for the emulated kernel); empty for AMX.
    rows: Vec<f32>,
    packed: Packed,
}

impl Weight {
    pub fn new(w: &[f32], n: usize, k: usize, kernel: Kernel) -> Weight {
        assert_eq!(w.len(), n * k, "weight size");
        match kernel {
            Kernel::F32 => Weight { n, k, kernel, rows: w.to_vec(), packed: Packed::default() },
            Kernel::Bf16Emulated => Weight {
                n,
                k,
                kernel,
                rows: w.iter().map(|&v| amx::round_bf16(v)).collect(),
                packed: Packed::default(),
            },
            Kernel::Amx => {
                Weight { n, k, kernel, rows: Vec::new(), packed: Packed::transposed(&amx::to_bf16_vec(w), n, k, k) }
            }
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<(Rows, Vec<f32>)> = RefCell::new(Default::default());
}

/// `out[m × w.n] = x[m × w.k] · wᵀ + bias`, split between threads when `parallel` and the product is large.
pub fn linear(x: &[f32], m: usize, w: &Weight, bias: Option<&[f32]>, out: &mut [f32], parallel: bool) {
    let (n, k) = (w.n, w.k);
    assert!(x.len() >= m * k && out.len() >= m * n);
    match w.kernel {
        Kernel::F32 => gemm_f32(m, n, k, x, k, 1, &w.rows, 1, k, out, n, parallel),
        Kernel::Bf16Emulated => {
            let xr: Vec<f32> = x[..m * k].iter().map(|&v| amx::round_bf16(v)).collect();
            gemm_f32(m, n, k, &xr, k, 1, &w.rows, 1, k, out, n, parallel)
        }
        Kernel::Amx => {
            // Taken out of the thread-local, not borrowed: a parallel product may run other work on this thread
            // while it waits, and that work may need the scratch too.
            let (mut rows, mut c) = SCRATCH.with_borrow_mut(std::mem::take);
            rows.fill(x, m, k, k);
            let (kt, nt) = (w.packed.kt(), w.packed.nt());
            if n.is_multiple_of(amx::TILE) && m.is_multiple_of(amx::TILE) {
                // The tiles land in `out` directly.
                amx::matmul(&rows, &w.packed, kt, nt, &mut out[..m * n], n, parallel);
            } else {
                let ldc = nt * amx::TILE;
                c.resize(rows.mp() * ldc, 0.0);
                amx::matmul(&rows, &w.packed, kt, nt, &mut c, ldc, parallel);
                for i in 0..m {
                    out[i * n..(i + 1) * n].copy_from_slice(&c[i * ldc..i * ldc + n]);
                }
            }
            SCRATCH.with_borrow_mut(|s| *s = (rows, c));
        }
    }
    if let Some(b) = bias {
        for row in out[..m * n].chunks_exact_mut(n) {
            super::simd::add_assign(row, b);
        }
    }
}

/// `out[i * ldo + j] = Σ_p a[i, p] · b[p, j]` for `i < m`, `j < n`, `p < k`, where `a[i, p] = a[i * a_rs + p * a_cs]`
/// and `b[p, j] = b[p * b_rs + j * b_cs]`; overwrites `out`.
///
/// # Panics
/// If an index the strides produce falls outside `a` or `b`, or the output rows (`ldo ≥ n` apart) do not fit in
/// `out`: the strides are unsigned and the last index is the largest, so these checks bound every access the
/// unsafe kernel makes, and rows never overlap (the kernel may write them from several threads).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    out: &mut [f32],
    ldo: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldo >= n, "gemm_f32: output stride {ldo} < {n} columns");
    assert!((m - 1) * ldo + n <= out.len(), "gemm_f32: output too short");
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(
        k == 0 || (last(a_rs, a_cs, m, k) < a.len() && last(b_rs, b_cs, k, n) < b.len()),
        "gemm_f32: an input is too short for its strides"
    );
    let s = |x: usize| isize::try_from(x).expect("gemm_f32: stride fits isize");
    let (a_rs, a_cs, b_rs, b_cs, ldo_i) = (s(a_rs), s(a_cs), s(b_rs), s(b_cs), s(ldo));
    let par = if parallel && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index the strides produce inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            ldo_i,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "output stride")]
    fn gemm_refuses_an_output_stride_below_its_width() {
        let (a, b) = (vec![1.0; 4], vec![1.0; 4]);
        let mut out = vec![0.0; 8];
        gemm_f32(2, 2, 2, &a, 2, 1, &b, 2, 1, &mut out, 1, false);
    }

    #[test]
    #[should_panic(expected = "too short for its strides")]
    fn gemm_refuses_strides_that_leave_an_input() {
        let (a, b) = (vec![1.0; 4], vec![1.0; 4]);
        let mut out = vec![0.0; 4];
        gemm_f32(2, 2, 2, &a, 3, 1, &b, 2, 1, &mut out, 2, false);
    }

    #[test]
    fn linear_at_every_kernel_matches_a_plain_product() {
        let (m, k, n) = (5, 40, 33);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 / 10.0).collect();
        for kernel in [Kernel::F32, Kernel::Bf16Emulated, Kernel::Amx] {
            if kernel == Kernel::Amx && !amx::available() {
                continue;
            }
            let r = |v: f32| if kernel.rounds() { amx::round_bf16(v) } else { v };
            let wt = Weight::new(&w, n, k, kernel);
            let mut out = vec![0.0; m * n];
            linear(&x, m, &wt, Some(&bias), &mut out, true);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        bias[j] as f64 + (0..k).map(|p| r(x[i * k + p]) as f64 * r(w[j * k + p]) as f64).sum::<f64>();
                    assert!((out[i * n + j] as f64 - want).abs() < 1e-4, "{kernel:?} ({i},{j})");
                }
            }
        }
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("f16".parse::<Precision>().unwrap_err().contains("f32 or bf16"));
    }
}
