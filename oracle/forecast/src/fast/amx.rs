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
/// `(nb * kt + kb) * 512`. The fields are private so that `data` always holds exactly `kt * nt` tiles: [`matmul`]
/// reads tiles through raw pointers on that promise.
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
    pub fn transposed(src: &[u16], n: usize, k: usize, ld: usize) -> Packed {
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
    pub fn rows(src: &[u16], k: usize, n: usize, ld: usize) -> Packed {
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

/// f32 → bf16 for a whole buffer.
pub fn to_bf16_vec(src: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; src.len()];
    convert_row(src, &mut out);
    out
}

/// Left-hand rows in bf16, padded with zeros to a multiple of 16 rows and 32 columns. The fields are private so
/// that `data` always holds `mp` rows of stride `ld`: [`matmul`] reads them through raw pointers on that promise.
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

    /// Fills from `m` rows of `k` values at `a[i * lda + j]`.
    pub fn fill(&mut self, a: &[f32], m: usize, k: usize, lda: usize) {
        self.fill_with(a, m, k, lda, None)
    }

    /// [`Rows::fill`] with row `i` multiplied by `scale[i]` on the way.
    pub fn fill_scaled(&mut self, a: &[f32], m: usize, k: usize, lda: usize, scale: &[f32]) {
        self.fill_with(a, m, k, lda, Some(scale))
    }

    fn fill_with(&mut self, a: &[f32], m: usize, k: usize, lda: usize, scale: Option<&[f32]>) {
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
pub fn convert_row(src: &[f32], dst: &mut [u16]) {
    super::simd::dispatch!(convert_row_impl(src, dst))
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
/// If AMX is not [`available`] or the sizes do not fit.
pub fn matmul(a: &Rows, b: &Packed, kt: usize, nt: usize, c: &mut [f32], ldc: usize, parallel: bool) {
    assert!(available(), "AMX kernel called on a CPU without AMX");
    assert!(kt <= b.kt && nt <= b.nt && a.ld >= kt * DEPTH && ldc >= nt * TILE && c.len() >= a.mp * ldc);
    // What the private fields promise, checked again where raw pointers are made from them.
    assert!(b.data.len() >= b.kt * b.nt * TILE_ELEMS && a.data.len() >= a.mp * a.ld && a.mp.is_multiple_of(TILE));
    if a.mp == 0 || nt == 0 || kt == 0 {
        return;
    }
    let a_ld = a.ld;
    let chunk = 2 * TILE * ldc;
    let run = |ci: usize, cc: &mut [f32]| {
        let rows = cc.len() / ldc;
        let a_ptr = a.data[ci * 2 * TILE * a_ld..].as_ptr();
        // SAFETY: `available()` checked the CPU and permission; the asserts above bound every tile access.
        unsafe { imp::rows_block(a_ptr, a_ld, rows / TILE, b.data.as_ptr(), b.kt, nt, kt, cc.as_mut_ptr(), ldc) }
    };
    let c = &mut c[..a.mp * ldc];
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

    pub fn detect() -> bool {
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

    /// `rt` (1 or 2) row tiles of `a` times every column block of `b`, into `c`.
    ///
    /// # Safety
    /// AMX must be usable; `a` must hold `16 * rt` rows of stride `lda` with `32 * kt` readable values each, `b` must
    /// hold `nt * bkt` packed tiles, `c` must hold `16 * rt` rows of stride `ldc ≥ 16 * nt`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rows_block(
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
        // The configuration never changes, so each thread loads it once and keeps it (the kernel saves and restores
        // it with the rest of the tile state on a context switch).
        thread_local!(static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if !CONFIGURED.get() {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            CONFIGURED.set(true);
        }
        let mut nb = 0;
        while nb < nt {
            let two = nb + 1 < nt;
            let bp = b.add(nb * bkt * TILE_ELEMS);
            let cp = c.add(nb * TILE);
            match (rt == 2, two) {
                (true, true) => block::<true, true>(a, lda, bp, bkt, kt, cp, ldc),
                (true, false) => block::<true, false>(a, lda, bp, bkt, kt, cp, ldc),
                (false, true) => block::<false, true>(a, lda, bp, bkt, kt, cp, ldc),
                (false, false) => block::<false, false>(a, lda, bp, bkt, kt, cp, ldc),
            }
            nb += if two { 2 } else { 1 };
        }
    }

    /// One output block of (16 or 32) × (16 or 32) values: tmm0..3 accumulate, tmm4/5 hold `A`, tmm6/7 hold `B`.
    ///
    /// Each variant is **one** `asm!` block from `tilezero` to `tilestored`: the compiler promises nothing about tile
    /// registers between separate `asm!` statements, so the accumulators never live across one. (The tile
    /// configuration, loaded once per thread by [`rows_block`], is not a tile register: it is per-thread state the
    /// OS saves and restores, and compiled Rust never executes an AMX instruction that could change it.)
    ///
    /// # Safety
    /// As [`rows_block`], with `kt ≥ 1` and the configuration loaded on this thread.
    #[inline(always)]
    unsafe fn block<const R2: bool, const C2: bool>(
        a: *const u16,
        lda: usize,
        b: *const u16,
        bkt: usize,
        kt: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        debug_assert!(kt >= 1);
        let a_stride = lda * 2;
        let a1 = a.add(TILE * lda);
        let b1 = b.add(bkt * TILE_ELEMS);
        let c_stride = ldc * 4;
        let c1 = c.add(TILE * ldc);
        // Per depth block: A advances DEPTH u16 (64 bytes), B one tile (TILE_ELEMS u16 = 1024 bytes).
        const _: () = assert!(DEPTH * 2 == 64 && TILE_ELEMS * 2 == 1024 && TILE * 4 == 64);
        match (R2, C2) {
            (true, true) => asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
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
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                "tilestored [{c} + {cs}*1 + 64], tmm1",
                "tilestored [{c1} + {cs}*1], tmm2",
                "tilestored [{c1} + {cs}*1 + 64], tmm3",
                a = inout(reg) a => _,
                a1 = inout(reg) a1 => _,
                b = inout(reg) b => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                as_ = in(reg) a_stride,
                s64 = in(reg) 64usize,
                c = in(reg) c,
                c1 = in(reg) c1,
                cs = in(reg) c_stride,
                options(nostack),
            ),
            (true, false) => asm!(
                "tilezero tmm0",
                "tilezero tmm2",
                "2:",
                "tileloadd tmm4, [{a} + {as_}*1]",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {as_}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "add {a}, 64",
                "add {a1}, 64",
                "add {b}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                "tilestored [{c1} + {cs}*1], tmm2",
                a = inout(reg) a => _,
                a1 = inout(reg) a1 => _,
                b = inout(reg) b => _,
                kt = inout(reg) kt => _,
                as_ = in(reg) a_stride,
                s64 = in(reg) 64usize,
                c = in(reg) c,
                c1 = in(reg) c1,
                cs = in(reg) c_stride,
                options(nostack),
            ),
            (false, true) => asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "2:",
                "tileloadd tmm4, [{a} + {as_}*1]",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s64}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {a}, 64",
                "add {b}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                "tilestored [{c} + {cs}*1 + 64], tmm1",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                as_ = in(reg) a_stride,
                s64 = in(reg) 64usize,
                c = in(reg) c,
                cs = in(reg) c_stride,
                options(nostack),
            ),
            (false, false) => asm!(
                "tilezero tmm0",
                "2:",
                "tileloadd tmm4, [{a} + {as_}*1]",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "add {a}, 64",
                "add {b}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                kt = inout(reg) kt => _,
                as_ = in(reg) a_stride,
                s64 = in(reg) 64usize,
                c = in(reg) c,
                cs = in(reg) c_stride,
                options(nostack),
            ),
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    pub fn detect() -> bool {
        false
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rows_block(
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
        for &(m, k, n) in &[(1, 32, 16), (16, 64, 48), (37, 70, 33), (64, 256, 96), (100, 8, 130)] {
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
