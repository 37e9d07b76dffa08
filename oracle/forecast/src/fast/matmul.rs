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
    assert!(x.len() >= m * k, "linear: {} inputs for {m} rows of {k}", x.len());
    assert!(out.len() >= m * n, "linear: {} outputs for {m} rows of {n}", out.len());
    assert!(
        bias.is_none_or(|b| b.len() == n),
        "linear: a bias of {} values for {n} outputs",
        bias.map_or(0, <[f32]>::len)
    );
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
/// Each input is row-major (column stride 1, row stride at least its width) or column-major (row stride 1, column
/// stride at least its height); a stride of a dimension of size 1 is never used and may be anything.
///
/// # Panics
/// If an input is neither (its rows or columns would overlap, e.g. a row stride below `k`), an index the strides
/// produce falls outside `a` or `b`, `ldo < n`, or the `m` output rows (`ldo` apart) do not fit in `out`. The strides
/// are unsigned (no negative stride can be passed) and the last index is the largest, so these checks bound every
/// access the unsafe kernel makes, and output rows never overlap (the kernel may write them from several threads).
// BLAS's form (sizes, then each operand with its row and column strides): the safety checks above read each
// operand with its strides, and the kernels call it with scalars they compute per block.
#[allow(clippy::too_many_arguments)]
#[track_caller]
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
    assert!(ldo >= n, "gemm_f32: output stride {ldo} < {n} columns");
    if m == 0 || n == 0 {
        return;
    }
    let out_need = (m - 1).checked_mul(ldo).and_then(|x| x.checked_add(n));
    assert!(
        out_need.is_some_and(|need| need <= out.len()),
        "gemm_f32: output too short: {m} rows of {n}, {ldo} apart, in {} values",
        out.len()
    );
    if k == 0 {
        // An empty sum; the inputs are not read.
        out.chunks_mut(ldo).take(m).for_each(|row| row[..n].fill(0.0));
        return;
    }
    check_operand("lhs", a.len(), m, k, a_rs, a_cs);
    check_operand("rhs", b.len(), k, n, b_rs, b_cs);
    let s = |x: usize| isize::try_from(x).expect("gemm_f32: stride fits isize");
    let (a_rs, a_cs, b_rs, b_cs, ldo_i) = (s(a_rs), s(a_cs), s(b_rs), s(b_cs), s(ldo));
    let par = if parallel && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: `gemm` reads `a` and `b` and writes `out` at the indices the sizes and strides produce, nothing else.
    // `check_operand` showed that the largest index of each input, `(rows - 1) * rs + (cols - 1) * cs` (strides are
    // unsigned, so it is the last one), is inside its slice, computed without overflow; the output's largest index
    // `(m - 1) * ldo + n - 1` is inside `out`, and `ldo ≥ n` with column stride 1 keeps every output element distinct,
    // so the threads of a parallel product never write the same place. Every stride fits `isize` (checked above).
    // `out` is borrowed mutably, so it overlaps neither input.
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

/// Checks one input of [`gemm_f32`]: `rows × cols` (both ≥ 1) at `x[r * rs + c * cs]` in `len` values.
#[track_caller]
fn check_operand(name: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    let row_major = (cs == 1 || cols == 1) && (rs >= cols || rows == 1);
    let col_major = (rs == 1 || rows == 1) && (cs >= rows || cols == 1);
    assert!(
        row_major || col_major,
        "gemm_f32: {name} of {rows} × {cols} with row stride {rs} and column stride {cs} is neither row-major \
         (column stride 1, row stride ≥ {cols}) nor column-major (row stride 1, column stride ≥ {rows})"
    );
    let last = (rows - 1).checked_mul(rs).zip((cols - 1).checked_mul(cs)).and_then(|(x, y)| x.checked_add(y));
    assert!(
        last.is_some_and(|last| last < len),
        "gemm_f32: {name} of {rows} × {cols} with strides {rs}, {cs} is too short for its strides ({len} values)"
    );
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
    #[should_panic(expected = "lhs of 2 × 2 with strides 3, 1 is too short for its strides")]
    fn gemm_refuses_strides_that_leave_an_input() {
        let (a, b) = (vec![1.0; 4], vec![1.0; 4]);
        let mut out = vec![0.0; 4];
        gemm_f32(2, 2, 2, &a, 3, 1, &b, 2, 1, &mut out, 2, false);
    }

    #[test]
    #[should_panic(expected = "rhs of 2 × 2 with strides 2, 1 is too short")]
    fn gemm_refuses_a_short_right_hand_side() {
        let (a, b) = (vec![1.0; 4], vec![1.0; 3]);
        let mut out = vec![0.0; 4];
        gemm_f32(2, 2, 2, &a, 2, 1, &b, 2, 1, &mut out, 2, false);
    }

    /// A row stride below the row's width (`lda < k`) would read overlapping rows: refused even though every index
    /// is inside the slice.
    #[test]
    #[should_panic(expected = "lhs of 2 × 3 with row stride 2 and column stride 1 is neither row-major")]
    fn gemm_refuses_a_row_stride_below_the_width() {
        let (a, b) = (vec![1.0; 8], vec![1.0; 6]);
        let mut out = vec![0.0; 4];
        gemm_f32(2, 2, 3, &a, 2, 1, &b, 2, 1, &mut out, 2, false);
    }

    #[test]
    #[should_panic(expected = "rhs of 3 × 2 with row stride 1 and column stride 2 is neither")]
    fn gemm_refuses_a_column_stride_below_the_height() {
        let (a, b) = (vec![1.0; 6], vec![1.0; 8]);
        let mut out = vec![0.0; 4];
        gemm_f32(2, 2, 3, &a, 3, 1, &b, 1, 2, &mut out, 2, false);
    }

    #[test]
    #[should_panic(expected = "output too short: 3 rows of 2, 2 apart, in 5 values")]
    fn gemm_refuses_a_short_output() {
        let (a, b) = (vec![1.0; 6], vec![1.0; 4]);
        let mut out = vec![0.0; 5];
        gemm_f32(3, 2, 2, &a, 2, 1, &b, 2, 1, &mut out, 2, false);
    }

    /// A stride whose multiple wraps around `usize` (to 0 here: 4 · 2⁶²): with wrapping arithmetic the last index
    /// would look small and pass; the checks refuse it.
    #[test]
    #[should_panic(expected = "lhs of 5 × 2 with strides 4611686018427387904, 1 is too short for its strides")]
    fn gemm_refuses_an_input_stride_whose_multiple_wraps_around() {
        let (a, b) = (vec![1.0; 10], vec![1.0; 4]);
        let mut out = vec![0.0; 10];
        gemm_f32(5, 2, 2, &a, 1 << 62, 1, &b, 2, 1, &mut out, 2, false);
    }

    #[test]
    #[should_panic(expected = "output too short: 5 rows of 2, 4611686018427387904 apart")]
    fn gemm_refuses_an_output_stride_whose_multiple_wraps_around() {
        let (a, b) = (vec![1.0; 10], vec![1.0; 4]);
        let mut out = vec![0.0; 10];
        gemm_f32(5, 2, 2, &a, 2, 1, &b, 2, 1, &mut out, 1 << 62, false);
    }

    /// The strides are unsigned: a negative stride can only arrive cast to `usize`, and is then refused.
    #[test]
    #[should_panic(expected = "rhs of 2 × 2 with strides 18446744073709551615, 1 is too short")]
    fn gemm_refuses_a_negative_stride_cast_to_usize() {
        let (a, b) = (vec![1.0; 4], vec![1.0; 4]);
        let mut out = vec![0.0; 4];
        gemm_f32(2, 2, 2, &a, 2, 1, &b, -1isize as usize, 1, &mut out, 2, false);
    }

    /// The checks accept every layout the engine uses and compute what a plain loop computes: row-major and
    /// column-major inputs (keys read transposed), a head's columns inside wider rows, output rows wider than `n`.
    #[test]
    fn gemm_with_strided_operands_matches_a_plain_product() {
        let (m, n, k, lda, ldb, ldo) = (3, 4, 5, 7, 9, 6);
        let a: Vec<f32> = (0..m * lda).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..n * ldb).map(|i| (i % 7) as f32 * 0.5).collect();
        let mut out = vec![f32::NAN; (m - 1) * ldo + n];
        // a row-major m × k with row stride lda; b = (n × k row-major, stride ldb)ᵀ, i.e. column-major k × n.
        gemm_f32(m, n, k, &a, lda, 1, &b, 1, ldb, &mut out, ldo, false);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * lda + p] * b[j * ldb + p]).sum();
                assert_eq!(out[i * ldo + j], want, "({i},{j})");
            }
        }
        // Nothing to multiply over: zeros.
        gemm_f32(m, n, 0, &[], 0, 0, &[], 0, 0, &mut out, ldo, false);
        assert!((0..m).all(|i| out[i * ldo..i * ldo + n].iter().all(|&v| v == 0.0)));
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
