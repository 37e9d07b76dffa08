//! Intel AMX bf16 matrix multiply (Sapphire Rapids and later Xeons).
//!
//! Stable Rust has no AMX intrinsics, but its assembler knows the instructions, so the kernel is inline assembly.
//! It runs only after [`available`] has seen AMX-TILE and AMX-BF16 in `cpuid` and Linux has granted this process the
//! tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). Set `KRONOS_NO_AMX=1` to never use it.
//!
//! A tile is 16 rows of 64 bytes. `tdpbf16ps C, A, B` adds to the 16×16 f32 tile `C` the product of a 16×32 bf16
//! tile `A` (row-major) and a 32×16 bf16 tile `B` stored in pairs: row `r` of the `B` tile holds, for each of the 16
//! columns `c`, the two values `B[2r][c]`, `B[2r + 1][c]`. [`Packed`] lays a whole right-hand matrix out as such
//! tiles, zero-padded to multiples of 16 columns and 32 rows.

use std::sync::OnceLock;

/// Tile rows and the depth of one bf16 tile product.
pub const TILE: usize = 16;
pub const DEPTH: usize = 32;
/// bf16 elements in one packed tile.
const TILE_ELEMS: usize = TILE * DEPTH;

/// Whether this CPU and kernel let us use AMX bf16 tiles (checked once per process).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("KRONOS_NO_AMX").is_none() && imp::detect())
}

/// f32 → bf16, rounding to nearest even.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 → f32 (exact).
#[inline(always)]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 rounded to the nearest bf16 value.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// A right-hand matrix (`k` × `n`) in tile-pair layout: tile `(nb, kb)` (16 columns, 32 rows) starts at element
/// `(nb * kt + kb) * 512`. The fields are private and only this module's constructors set them, so `data` always
/// holds exactly `kt * nt` tiles with `kt = ceil(k / 32)`, `nt = ceil(n / 16)`: [`matmul`] reads tiles through raw
/// pointers on that promise. (The AMX loads have no alignment requirement, so none is promised.)
#[derive(Debug, Clone, Default)]
pub struct Packed {
    data: Vec<u16>,
    /// Logical size.
    k: usize,
    n: usize,
    /// Number of 32-row depth blocks (`ceil(k / 32)`).
    kt: usize,
    /// Number of 16-column blocks (`ceil(n / 16)`).
    nt: usize,
}

impl Packed {
    /// Number of 32-row depth blocks (`ceil(k / 32)`).
    pub fn kt(&self) -> usize {
        self.kt
    }

    /// Number of 16-column blocks (`ceil(n / 16)`).
    pub fn nt(&self) -> usize {
        self.nt
    }

    /// The logical size `(k, n)`.
    pub fn size(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Packs `B = srcᵀ`: `B[kk][nn] = src[nn * ld + kk]` (a weight `[n × k]`, or keys `[len × hd]` for `Q · Kᵀ`).
    ///
    /// # Panics
    /// If `ld < k` (source rows would overlap) or `src` holds fewer than `(n - 1) * ld + k` values.
    pub fn transposed(src: &[u16], n: usize, k: usize, ld: usize) -> Packed {
        check_source("Packed::transposed", src.len(), n, k, ld);
        let (kt, nt) = (k.div_ceil(DEPTH), n.div_ceil(TILE));
        let mut data = vec![0u16; kt * nt * TILE_ELEMS];
        for nn in 0..n {
            let (nb, c) = (nn / TILE, nn % TILE);
            let row = &src[nn * ld..nn * ld + k];
            for kb in 0..kt {
                let tile = &mut data[(nb * kt + kb) * TILE_ELEMS..][..TILE_ELEMS];
                // Pair r of this source row lands in tile row r, column c.
                for (i, &v) in row[kb * DEPTH..k.min((kb + 1) * DEPTH)].iter().enumerate() {
                    tile[(i / 2) * DEPTH + 2 * c + i % 2] = v;
                }
            }
        }
        Packed { data, k, n, kt, nt }
    }

    /// Packs `B[kk][nn] = src[kk * ld + nn]` (values `[len × hd]` for `P · V`).
    ///
    /// # Panics
    /// If `ld < n` (source rows would overlap) or `src` holds fewer than `(k - 1) * ld + n` values.
    pub fn rows(src: &[u16], k: usize, n: usize, ld: usize) -> Packed {
        check_source("Packed::rows", src.len(), k, n, ld);
        let (kt, nt) = (k.div_ceil(DEPTH), n.div_ceil(TILE));
        let mut data = vec![0u16; kt * nt * TILE_ELEMS];
        for kk in 0..k {
            let (kb, r, p) = (kk / DEPTH, (kk % DEPTH) / 2, kk % 2);
            let row = &src[kk * ld..kk * ld + n];
            for nb in 0..nt {
                let dst = &mut data[(nb * kt + kb) * TILE_ELEMS + r * DEPTH..][..DEPTH];
                for (c, &v) in row[nb * TILE..n.min((nb + 1) * TILE)].iter().enumerate() {
                    dst[2 * c + p] = v;
                }
            }
        }
        Packed { data, k, n, kt, nt }
    }

    /// Packs `B[kk][nn] = get(kk, nn)` element by element, straight from the layout's definition (the tests'
    /// reference for the packers above).
    #[cfg(test)]
    pub fn from_fn(k: usize, n: usize, get: impl Fn(usize, usize) -> f32) -> Packed {
        let (kt, nt) = (k.div_ceil(DEPTH), n.div_ceil(TILE));
        let mut data = vec![0u16; kt * nt * TILE_ELEMS];
        for kk in 0..k {
            for nn in 0..n {
                let (kb, r, p, nb, c) = (kk / DEPTH, (kk % DEPTH) / 2, kk % 2, nn / TILE, nn % TILE);
                data[(nb * kt + kb) * TILE_ELEMS + r * DEPTH + 2 * c + p] = to_bf16(get(kk, nn));
            }
        }
        Packed { data, k, n, kt, nt }
    }
}

/// Checks that `rows` rows of `cols` values, `ld` apart, fit in a buffer of `len` values without overlapping.
#[track_caller]
fn check_source(what: &str, len: usize, rows: usize, cols: usize, ld: usize) {
    assert!(ld >= cols, "{what}: row stride {ld} < {cols} values per row");
    if rows > 0 && cols > 0 {
        let need = (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols));
        assert!(
            need.is_some_and(|need| need <= len),
            "{what}: {rows} rows of {cols} values, {ld} apart, need more than the {len} values given"
        );
    }
}

/// f32 → bf16 for a whole buffer.
pub fn to_bf16_vec(src: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; src.len()];
    convert_row(src, &mut out);
    out
}

/// Left-hand rows in bf16, padded with zeros to a multiple of 16 rows and 32 columns. The fields are private and
/// only [`Rows::fill`] sets them, so `data` always holds at least `mp` rows of stride `ld` (`mp` a multiple of 16, `ld`
/// of 32): [`matmul`] reads them through raw pointers on that promise.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    data: Vec<u16>,
    /// Padded row count (multiple of 16) and row stride (multiple of 32).
    mp: usize,
    ld: usize,
}

impl Rows {
    /// Padded row count (a multiple of 16).
    pub fn mp(&self) -> usize {
        self.mp
    }

    /// Row stride of the padded rows (a multiple of 32).
    pub fn ld(&self) -> usize {
        self.ld
    }

    /// Fills from `m` rows of `k` values at `a[i * lda + j]`.
    ///
    /// # Panics
    /// If `lda < k` or `a` holds fewer than `(m - 1) * lda + k` values.
    #[track_caller]
    pub fn fill(&mut self, a: &[f32], m: usize, k: usize, lda: usize) {
        self.fill_with(a, m, k, lda, None)
    }

    /// [`Rows::fill`] with row `i` multiplied by `scale[i]` on the way.
    ///
    /// # Panics
    /// As [`Rows::fill`], or if `scale` holds fewer than `m` values.
    #[track_caller]
    pub fn fill_scaled(&mut self, a: &[f32], m: usize, k: usize, lda: usize, scale: &[f32]) {
        assert!(scale.len() >= m, "Rows::fill_scaled: {} scales for {m} rows", scale.len());
        self.fill_with(a, m, k, lda, Some(scale))
    }

    #[track_caller]
    fn fill_with(&mut self, a: &[f32], m: usize, k: usize, lda: usize, scale: Option<&[f32]>) {
        assert!(lda >= k, "Rows::fill: row stride {lda} < {k} values per row");
        if m > 0 && k > 0 {
            let need = (m - 1).checked_mul(lda).and_then(|x| x.checked_add(k));
            assert!(
                need.is_some_and(|need| need <= a.len()),
                "Rows::fill: {m} rows of {k} values, {lda} apart, need more than the {} values given",
                a.len()
            );
        }
        self.mp = m.div_ceil(TILE) * TILE;
        self.ld = k.div_ceil(DEPTH) * DEPTH;
        if self.data.len() < self.mp * self.ld {
            self.data.resize(self.mp * self.ld, 0);
        }
        let ld = self.ld;
        for i in 0..m {
            let (src, row) = (&a[i * lda..i * lda + k], &mut self.data[i * ld..(i + 1) * ld]);
            match scale {
                Some(s) => super::simd::dispatch!(convert_scaled(src, &mut row[..k], s[i])),
                None => convert_row(src, &mut row[..k]),
            }
            row[k..].fill(0);
        }
        self.data[m * ld..self.mp * ld].fill(0);
    }
}

#[inline(always)]
fn convert_scaled(src: &[f32], dst: &mut [u16], k: f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        let b = (s * k).to_bits();
        *d = ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    }
}

/// f32 → bf16 for a row (vectorised where the CPU allows).
///
/// # Panics
/// If `src` and `dst` differ in length.
pub fn convert_row(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "convert_row: {} values into {} slots", src.len(), dst.len());
    super::simd::dispatch!(convert_row_impl(src, dst))
}

/// [`convert_row`]'s kernel, for the test of the feature-specific copies in `simd`.
#[cfg(test)]
#[inline(always)]
pub(crate) fn convert_row_impl_for_tests(src: &[f32], dst: &mut [u16]) {
    convert_row_impl(src, dst)
}

#[inline(always)]
fn convert_row_impl(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        let b = s.to_bits();
        *d = ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    }
}

/// `c[i * ldc + j] = Σ_k a[i][k] · b[k][j]` for `i < a.mp`, `j < 16 * nt`, over the first `kt` depth blocks and
/// `nt` column blocks of `b` (`kt ≤ b.kt`, `nt ≤ b.nt`, `a.ld ≥ 32 * kt`). `c` must hold `a.mp` rows of
/// `ldc ≥ 16 * nt` values. Rows are split between rayon's threads in blocks of 32 when `parallel`.
///
/// # Panics
/// If the sizes do not fit (checked first, on any CPU), or AMX is not [`available`].
#[track_caller]
pub fn matmul(a: &Rows, b: &Packed, kt: usize, nt: usize, c: &mut [f32], ldc: usize, parallel: bool) {
    assert!(kt <= b.kt, "amx::matmul: {kt} depth blocks asked of a matrix with {}", b.kt);
    assert!(nt <= b.nt, "amx::matmul: {nt} column blocks asked of a matrix with {}", b.nt);
    assert!(a.ld >= kt * DEPTH, "amx::matmul: left rows of {} values for {kt} depth blocks", a.ld);
    assert!(ldc >= nt * TILE, "amx::matmul: output stride {ldc} < {} columns", nt * TILE);
    assert!(
        a.mp.checked_mul(ldc).is_some_and(|need| c.len() >= need),
        "amx::matmul: output of {} values for {} rows {ldc} apart",
        c.len(),
        a.mp
    );
    // What the private fields promise, checked again where raw pointers are made from them.
    assert!(
        b.data.len() >= b.kt * b.nt * TILE_ELEMS && a.data.len() >= a.mp * a.ld && a.mp.is_multiple_of(TILE),
        "amx::matmul: packed buffers smaller than their sizes"
    );
    assert!(available(), "amx::matmul: AMX kernel called on a CPU without AMX");
    let c = &mut c[..a.mp * ldc];
    if a.mp == 0 || nt == 0 {
        return;
    }
    if kt == 0 {
        // An empty sum; the kernel needs at least one depth block.
        c.chunks_mut(ldc).for_each(|row| row[..nt * TILE].fill(0.0));
        return;
    }
    let a_ld = a.ld;
    let chunk = 2 * TILE * ldc;
    let run = |ci: usize, cc: &mut [f32]| {
        let rows = cc.len() / ldc;
        let a_rows = &a.data[ci * 2 * TILE * a_ld..][..rows * a_ld];
        let b_tiles = &b.data[..b.kt * nt * TILE_ELEMS];
        // SAFETY: `available()` checked the CPU and the tile permission. `cc` is a chunk of whole rows of `c`
        // (`a.mp * ldc` values, `a.mp` a multiple of 16, chunks of 32 rows), so `rows` is 16 or 32 and `cc` holds
        // `rows` rows of `ldc ≥ 16 * nt` values; `a_rows` holds the matching `rows` rows of `a_ld ≥ 32 * kt` values
        // (sliced, so bounds-checked); `b_tiles` holds the `nt` column blocks of `b.kt ≥ kt` tiles each; `kt ≥ 1`.
        unsafe {
            imp::rows_block(a_rows.as_ptr(), a_ld, rows / TILE, b_tiles.as_ptr(), b.kt, nt, kt, cc.as_mut_ptr(), ldc)
        }
    };
    if parallel && a.mp > 2 * TILE {
        use rayon::prelude::*;
        c.par_chunks_mut(chunk).enumerate().for_each(|(i, cc)| run(i, cc));
    } else {
        c.chunks_mut(chunk).enumerate().for_each(|(i, cc)| run(i, cc));
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;

    use super::{DEPTH, TILE, TILE_ELEMS};

    pub(super) fn detect() -> bool {
        let l7 = std::arch::x86_64::__cpuid_count(7, 0);
        let tile = l7.edx & (1 << 24) != 0;
        let bf16 = l7.edx & (1 << 22) != 0;
        if !(tile && bf16) {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall asking for the tile state permission; it fails cleanly on kernels without it.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    /// Palette 1, all eight tiles 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    static CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = TILE as u8;
            t += 1;
        }
        TileConfig(c)
    };

    // Per depth block: A advances DEPTH u16 (64 bytes), B one tile (TILE_ELEMS u16 = 1024 bytes); a C tile row is
    // 16 f32 (64 bytes). The assembly below hard-codes these numbers.
    const _: () = assert!(DEPTH * 2 == 64 && TILE_ELEMS * 2 == 1024 && TILE * 4 == 64);

    /// `rt` (1 or 2) row tiles of `a` times the first `nt` column blocks of `b` over `kt` depth blocks, into `c`.
    ///
    /// Each variant is **one** `asm!` block, from making sure of the tile configuration to the last `tilestored`:
    /// the compiler promises nothing about tile registers or the tile configuration between separate `asm!`
    /// statements (other code on this thread may release or reconfigure the tiles), so nothing lives across one.
    /// The block reads the current configuration (`sttilecfg`, cheap) and loads its own (`ldtilecfg`, about half a
    /// microsecond) only when it differs — once per thread in practice. tmm0..3 accumulate, tmm4/5 hold `A` tiles,
    /// tmm6/7 hold `B` tiles; column blocks go two at a time, then the odd one alone.
    ///
    /// # Safety
    /// - AMX-TILE and AMX-BF16 must be usable by this thread (the CPU has them and Linux granted the tile state);
    /// - `rt` is 1 or 2, `kt ≥ 1`, `nt ≥ 1`;
    /// - `a` points to `16 * rt` readable rows, `lda` values apart, each with `32 * kt` readable values;
    /// - `b` points to `nt` column blocks of `bkt ≥ kt` packed tiles each (`nt * bkt * 512` readable values);
    /// - `c` points to `16 * rt` writable rows, `ldc ≥ 16 * nt` values apart, that nothing else accesses meanwhile.
    // The kernel's raw operands: three pointers with their strides and the tile counts its `asm!` block reads in
    // registers; a struct would only be unpacked again before the block.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows_block(
        a: *const u16,
        lda: usize,
        rt: usize,
        b: *const u16,
        bkt: usize,
        nt: usize,
        kt: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        debug_assert!((rt == 1 || rt == 2) && kt >= 1 && nt >= 1 && bkt >= kt && ldc >= TILE * nt);
        // Where `sttilecfg` puts the current configuration for the comparison.
        let mut current = TileConfig([0; 64]);
        let a_stride = lda * 2;
        let b_stride = bkt * TILE_ELEMS * 2;
        let c_stride = ldc * 4;
        if rt == 2 {
            // SAFETY: the caller's promises; the loads read A rows `0..32` at byte offsets below `32 * a_stride`
            // plus `64 * kt`, B tiles `(nb, kb)` with `nb < nt`, `kb < kt`, and the stores write C rows `0..32`,
            // byte columns below `64 * nt ≤ c_stride`. `current` and `CONFIG` are 64 bytes each.
            unsafe {
                asm!(
                    // The configuration this kernel needs, unless this thread already has exactly it ({a1}: where
                    // the current one is stored, {b1}: the one needed, {k}: scratch; all three are set again below).
                    "sttilecfg [{a1}]",
                    "mov {k}, [{a1}]", "cmp {k}, [{b1}]", "jne 3f",
                    "mov {k}, [{a1} + 8]", "cmp {k}, [{b1} + 8]", "jne 3f",
                    "mov {k}, [{a1} + 16]", "cmp {k}, [{b1} + 16]", "jne 3f",
                    "mov {k}, [{a1} + 24]", "cmp {k}, [{b1} + 24]", "jne 3f",
                    "mov {k}, [{a1} + 32]", "cmp {k}, [{b1} + 32]", "jne 3f",
                    "mov {k}, [{a1} + 40]", "cmp {k}, [{b1} + 40]", "jne 3f",
                    "mov {k}, [{a1} + 48]", "cmp {k}, [{b1} + 48]", "jne 3f",
                    "mov {k}, [{a1} + 56]", "cmp {k}, [{b1} + 56]", "je 4f",
                    "3:",
                    "ldtilecfg [{b1}]",
                    "4:",
                    // Two column blocks at a time: {b} and {b1} walk their tiles, {a} and {a1} the two row tiles.
                    "5:",
                    "cmp {nt}, 2",
                    "jb 7f",
                    "mov {a1}, {as_}", "shl {a1}, 4", "add {a1}, {a}",
                    "mov {b1}, {b}", "add {b1}, {bs}",
                    "mov {k}, {kt}",
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "6:",
                    "tileloadd tmm4, [{a} + {as_}*1]",
                    "tileloadd tmm6, [{b} + {s64}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {s64}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {as_}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "add {a}, 64",
                    "add {a1}, 64",
                    "add {b}, 1024",
                    "add {b1}, 1024",
                    "dec {k}",
                    "jnz 6b",
                    // {k} = the second row tile of C.
                    "mov {k}, {cs}", "shl {k}, 4", "add {k}, {c}",
                    "tilestored [{c} + {cs}*1], tmm0",
                    "tilestored [{c} + {cs}*1 + 64], tmm1",
                    "tilestored [{k} + {cs}*1], tmm2",
                    "tilestored [{k} + {cs}*1 + 64], tmm3",
                    "add {c}, 128",
                    // A back to its first depth block; B to the next pair: {b1} - 1024 * kt + b_stride.
                    "mov {k}, {kt}", "shl {k}, 6", "sub {a}, {k}",
                    "shl {k}, 4", "sub {b1}, {k}", "add {b1}, {bs}", "mov {b}, {b1}",
                    "sub {nt}, 2",
                    "jmp 5b",
                    // The odd column block.
                    "7:",
                    "test {nt}, {nt}",
                    "jz 9f",
                    "mov {a1}, {as_}", "shl {a1}, 4", "add {a1}, {a}",
                    "mov {k}, {kt}",
                    "tilezero tmm0",
                    "tilezero tmm2",
                    "8:",
                    "tileloadd tmm4, [{a} + {as_}*1]",
                    "tileloadd tmm6, [{b} + {s64}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm5, [{a1} + {as_}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "add {a}, 64",
                    "add {a1}, 64",
                    "add {b}, 1024",
                    "dec {k}",
                    "jnz 8b",
                    "mov {k}, {cs}", "shl {k}, 4", "add {k}, {c}",
                    "tilestored [{c} + {cs}*1], tmm0",
                    "tilestored [{k} + {cs}*1], tmm2",
                    "9:",
                    a = inout(reg) a => _,
                    a1 = inout(reg) current.0.as_mut_ptr() => _,
                    b = inout(reg) b => _,
                    b1 = inout(reg) CONFIG.0.as_ptr() => _,
                    k = out(reg) _,
                    kt = in(reg) kt,
                    nt = inout(reg) nt => _,
                    as_ = in(reg) a_stride,
                    bs = in(reg) b_stride,
                    s64 = in(reg) 64usize,
                    c = inout(reg) c => _,
                    cs = in(reg) c_stride,
                    options(nostack),
                )
            }
        } else {
            // SAFETY: as above, with one row tile: A rows and C rows `0..16`.
            unsafe {
                asm!(
                    "sttilecfg [{a1}]",
                    "mov {k}, [{a1}]", "cmp {k}, [{b1}]", "jne 3f",
                    "mov {k}, [{a1} + 8]", "cmp {k}, [{b1} + 8]", "jne 3f",
                    "mov {k}, [{a1} + 16]", "cmp {k}, [{b1} + 16]", "jne 3f",
                    "mov {k}, [{a1} + 24]", "cmp {k}, [{b1} + 24]", "jne 3f",
                    "mov {k}, [{a1} + 32]", "cmp {k}, [{b1} + 32]", "jne 3f",
                    "mov {k}, [{a1} + 40]", "cmp {k}, [{b1} + 40]", "jne 3f",
                    "mov {k}, [{a1} + 48]", "cmp {k}, [{b1} + 48]", "jne 3f",
                    "mov {k}, [{a1} + 56]", "cmp {k}, [{b1} + 56]", "je 4f",
                    "3:",
                    "ldtilecfg [{b1}]",
                    "4:",
                    "5:",
                    "cmp {nt}, 2",
                    "jb 7f",
                    "mov {b1}, {b}", "add {b1}, {bs}",
                    "mov {k}, {kt}",
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "6:",
                    "tileloadd tmm4, [{a} + {as_}*1]",
                    "tileloadd tmm6, [{b} + {s64}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {s64}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "add {a}, 64",
                    "add {b}, 1024",
                    "add {b1}, 1024",
                    "dec {k}",
                    "jnz 6b",
                    "tilestored [{c} + {cs}*1], tmm0",
                    "tilestored [{c} + {cs}*1 + 64], tmm1",
                    "add {c}, 128",
                    "mov {k}, {kt}", "shl {k}, 6", "sub {a}, {k}",
                    "shl {k}, 4", "sub {b1}, {k}", "add {b1}, {bs}", "mov {b}, {b1}",
                    "sub {nt}, 2",
                    "jmp 5b",
                    "7:",
                    "test {nt}, {nt}",
                    "jz 9f",
                    "mov {k}, {kt}",
                    "tilezero tmm0",
                    "8:",
                    "tileloadd tmm4, [{a} + {as_}*1]",
                    "tileloadd tmm6, [{b} + {s64}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "add {a}, 64",
                    "add {b}, 1024",
                    "dec {k}",
                    "jnz 8b",
                    "tilestored [{c} + {cs}*1], tmm0",
                    "9:",
                    a = inout(reg) a => _,
                    // Only for the configuration check.
                    a1 = inout(reg) current.0.as_mut_ptr() => _,
                    b = inout(reg) b => _,
                    b1 = inout(reg) CONFIG.0.as_ptr() => _,
                    k = out(reg) _,
                    kt = in(reg) kt,
                    nt = inout(reg) nt => _,
                    as_ = in(reg) a_stride,
                    bs = in(reg) b_stride,
                    s64 = in(reg) 64usize,
                    c = inout(reg) c => _,
                    cs = in(reg) c_stride,
                    options(nostack),
                )
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    pub(super) fn detect() -> bool {
        false
    }

    /// Never called: [`detect`] says AMX is absent, and [`super::matmul`] asserts that it is available.
    ///
    /// # Safety
    /// None needed; it panics.
    // Same signature as the x86_64 kernel's.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows_block(
        _: *const u16,
        _: usize,
        _: usize,
        _: *const u16,
        _: usize,
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AMX is x86_64 Linux only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        // 1 + 2^-8 is halfway between 1 and the next bf16 (1 + 2^-7): ties go to the even one, 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn packing_puts_each_value_in_its_tile_pair() {
        let p = Packed::from_fn(40, 20, |k, n| (k * 100 + n) as f32);
        assert_eq!((p.kt, p.nt), (2, 2));
        // B[35][18]: column block 1, depth block 1, pair row (35 - 32) / 2 = 1, second of the pair, column 2.
        let tile = (p.kt + 1) * TILE_ELEMS;
        assert_eq!(from_bf16(p.data[tile + DEPTH + 2 * 2 + 1]), round_bf16(3518.0));
        // Padding is zero.
        assert_eq!(p.data[tile + 15 * DEPTH], 0);
        // The packers lay out the same tiles as the definition, also from strided sources (a head's columns inside
        // wider rows).
        let src: Vec<f32> = (0..40 * 20).map(|i| i as f32 * 0.37 - 50.0).collect();
        let bf = to_bf16_vec(&src);
        assert_eq!(Packed::rows(&bf, 40, 20, 20).data, Packed::from_fn(40, 20, |k, n| src[k * 20 + n]).data);
        assert_eq!(Packed::transposed(&bf, 40, 20, 20).data, Packed::from_fn(20, 40, |k, n| src[n * 20 + k]).data);
        assert_eq!(Packed::rows(&bf[3..], 7, 5, 20).data, Packed::from_fn(7, 5, |k, n| src[k * 20 + 3 + n]).data);
        assert_eq!(Packed::transposed(&bf[3..], 7, 5, 20).data, Packed::from_fn(5, 7, |k, n| src[n * 20 + 3 + k]).data);
    }

    #[test]
    #[should_panic(expected = "Packed::transposed: row stride 3 < 4 values per row")]
    fn packing_refuses_overlapping_source_rows() {
        Packed::transposed(&[0; 64], 2, 4, 3);
    }

    #[test]
    #[should_panic(expected = "Packed::rows: 3 rows of 4 values, 5 apart, need more than the 13 values given")]
    fn packing_refuses_a_short_source() {
        Packed::rows(&[0; 13], 3, 4, 5);
    }

    #[test]
    #[should_panic(expected = "Rows::fill: row stride 2 < 3 values per row")]
    fn rows_refuse_overlapping_source_rows() {
        Rows::default().fill(&[0.0; 64], 2, 3, 2);
    }

    #[test]
    #[should_panic(expected = "Rows::fill: 2 rows of 3 values, 4 apart, need more than the 6 values given")]
    fn rows_refuse_a_short_source() {
        Rows::default().fill(&[0.0; 6], 2, 3, 4);
    }

    #[test]
    #[should_panic(expected = "Rows::fill_scaled: 1 scales for 2 rows")]
    fn rows_refuse_missing_scales() {
        Rows::default().fill_scaled(&[0.0; 8], 2, 3, 4, &[1.0]);
    }

    /// `matmul` checks its sizes before anything else, on any CPU.
    #[test]
    fn matmul_refuses_sizes_that_do_not_fit() {
        let b = Packed::from_fn(40, 20, |_, _| 1.0);
        let mut a = Rows::default();
        a.fill(&[1.0; 40 * 3], 3, 40, 40);
        let run = |kt: usize, nt: usize, len: usize, ldc: usize| {
            let (a, b) = (a.clone(), b.clone());
            std::panic::catch_unwind(move || matmul(&a, &b, kt, nt, &mut vec![0.0; len], ldc, false))
                .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
        };
        let err = |r: Result<(), String>| r.expect_err("refused");
        assert_eq!(err(run(3, 2, 16 * 32, 32)), "amx::matmul: 3 depth blocks asked of a matrix with 2");
        assert_eq!(err(run(2, 3, 16 * 48, 48)), "amx::matmul: 3 column blocks asked of a matrix with 2");
        assert_eq!(err(run(2, 2, 16 * 32, 31)), "amx::matmul: output stride 31 < 32 columns");
        assert_eq!(err(run(2, 2, 16 * 32 - 1, 32)), "amx::matmul: output of 511 values for 16 rows 32 apart");
        if available() {
            assert_eq!(run(2, 2, 16 * 32, 32), Ok(()));
        }
    }

    /// Each kernel call makes sure of its own tile configuration: a thread whose tiles were released (`tilerelease`,
    /// as another AMX user may do) or configured differently in between still gets the right product.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn matmul_survives_other_tile_users_on_its_thread() {
        if !available() {
            eprintln!("skipped: this CPU has no AMX bf16");
            return;
        }
        let (m, k, n) = (20, 70, 40);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let mut rows = Rows::default();
        rows.fill(&a, m, k, k);
        let packed = Packed::from_fn(k, n, |kk, nn| b[kk * n + nn]);
        let ldc = packed.nt() * TILE;
        // Serial, so every call runs on this thread.
        let product = || {
            let mut c = vec![f32::NAN; rows.mp() * ldc];
            matmul(&rows, &packed, packed.kt(), packed.nt(), &mut c, ldc, false);
            c
        };
        let first = product();
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| round_bf16(a[i * k + p]) as f64 * round_bf16(b[p * n + j]) as f64).sum();
                assert!((first[i * ldc + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "({i},{j})");
            }
        }
        // SAFETY: AMX is available to this thread (checked above); `tilerelease` only returns the tile state to its
        // initial (unconfigured) form.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
        assert_eq!(product(), first, "after tilerelease");
        // Palette 1 with every tile 4 rows × 16 bytes.
        #[repr(C, align(64))]
        struct Cfg([u8; 64]);
        let mut other = Cfg([0; 64]);
        other.0[0] = 1;
        for t in 0..8 {
            other.0[16 + 2 * t] = 16;
            other.0[48 + t] = 4;
        }
        // SAFETY: AMX is available to this thread; `other` is a valid 64-byte palette-1 configuration.
        unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) other.0.as_ptr(), options(nostack, readonly)) };
        assert_eq!(product(), first, "after another configuration");
    }

    /// The kernel against a plain f64 product of the bf16-rounded inputs, over shapes that exercise single and
    /// double row/column tiles, padding and a partial depth. Needs an AMX CPU; says so and passes elsewhere.
    #[test]
    fn amx_matmul_equals_the_product_of_rounded_inputs() {
        if !available() {
            eprintln!("skipped: this CPU has no AMX bf16");
            return;
        }
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for &(m, k, n) in &[(1, 32, 16), (16, 64, 48), (37, 70, 33), (64, 256, 96), (100, 8, 130), (48, 300, 16)] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let mut rows = Rows::default();
            rows.fill(&a, m, k, k);
            let packed = Packed::from_fn(k, n, |kk, nn| b[kk * n + nn]);
            let ldc = packed.nt * TILE;
            let mut c = vec![f32::NAN; rows.mp * ldc];
            matmul(&rows, &packed, packed.kt, packed.nt, &mut c, ldc, true);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..k).map(|kk| round_bf16(a[i * k + kk]) as f64 * round_bf16(b[kk * n + j]) as f64).sum();
                    let got = c[i * ldc + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{m}x{k}x{n} at ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
