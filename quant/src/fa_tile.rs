//! The loops of llama.cpp's tiled flash attention on the CPU (its path for prompt batches
//! over an f16 or f32 cache): a small f32 matrix product that accumulates each element as
//! one chain of fused multiply-adds (ggml's `simd_gemm`), ggml's vector `exp` for AVX2
//! (`ggml_v_expf`) and the softmax row it feeds (`ggml_vec_soft_max_f32`).
//!
//! Each exists, as everywhere in this crate, as a scalar reference that spells out the
//! arithmetic, and as an AVX2 + FMA version (x86_64) or a NEON one (aarch64) chosen at run
//! time with the kernel table (`LOUPE_KERNELS=scalar` keeps the reference); a test holds
//! them to the same bits.
//! The matrix product's blocking is free (each element's chain runs in order whatever
//! the blocking), so tiles of many queries can share each key and value row.

/// Shapes of `c += a · b`: `m` rows, `k` inner, `n` columns, and the row strides of
/// `a`, `b` and `c`.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

/// `c[i][j] = fma(a[i][k-1], b[k-1][j], … fma(a[i][0], b[0][j], c[i][j]))`: each element
/// of `c` (`m × n`) gains the products of row `i` of `a` with column `j` of `b`, fused and
/// in order of the inner index, as ggml's `simd_gemm` computes them.
pub fn gemm_acc(c: &mut [f32], a: &[f32], b: &[f32], s: Gemm) {
    let fits = |len: usize, rows: usize, ld: usize, cols: usize| {
        rows == 0 || (ld >= cols && len >= (rows - 1) * ld + cols)
    };
    assert!(
        fits(c.len(), s.m, s.ldc, s.n)
            && fits(a.len(), s.m, s.lda, s.k)
            && fits(b.len(), s.k, s.ldb, s.n),
        "gemm_acc: {s:?} does not fit slices of {}, {} and {}",
        c.len(),
        a.len(),
        b.len()
    );
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2 and FMA; the shapes were checked above.
        return unsafe { simd::gemm_acc(c, a, b, s) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline; the shapes were checked above.
        return unsafe { neon::gemm_acc(c, a, b, s) };
    }
    gemm_ref(c, a, b, s, 0..s.n);
}

fn gemm_ref(c: &mut [f32], a: &[f32], b: &[f32], s: Gemm, cols: std::ops::Range<usize>) {
    for i in 0..s.m {
        let a = &a[i * s.lda..][..s.k];
        for j in cols.clone() {
            let mut acc = c[i * s.ldc + j];
            for (kk, &x) in a.iter().enumerate() {
                acc = x.mul_add(b[kk * s.ldb + j], acc);
            }
            c[i * s.ldc + j] = acc;
        }
    }
}

/// Builds the f32 written `0x1.XXXXXXp<exp>` in C from its 24 significant bits (leading 1
/// included) and exponent: ggml spells its constants this way.
const fn hexf(mant: u32, exp: i32) -> f32 {
    f32::from_bits((((exp + 127) as u32) << 23) | ((mant >> 1) & 0x7f_ffff))
}

const EXP_SHIFT: f32 = hexf(0x1_800000, 23);
const LOG2E: f32 = hexf(0x1_715476, 0);
const LN2_HI: f32 = hexf(0x1_62e400, -1);
const LN2_LO: f32 = hexf(0x1_7f7d1c, -20);
const P5: f32 = hexf(0x1_0e4020, -7);
const P4: f32 = hexf(0x1_573e2e, -5);
const P3: f32 = hexf(0x1_555e66, -3);
const P2: f32 = hexf(0x1_fffdb6, -2);
const P1: f32 = hexf(0x1_ffffec, -1);

/// One lane of ggml's `ggml_v_expf` (AVX2): `e^x` from a rounding to a power of two and a
/// degree-5 polynomial, within a few ulp of `expf`, 0 at `-inf`.
pub fn exp_ggml(x: f32) -> f32 {
    let z = x.mul_add(LOG2E, EXP_SHIFT);
    let n = z - EXP_SHIFT;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = P5
        .mul_add(b, P4)
        .mul_add(u, P3.mul_add(b, P2))
        .mul_add(u, P1 * b);
    if n.abs() <= 126.0 || n.is_nan() {
        return j.mul_add(k, k);
    }
    let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `x[i] = e^(x[i] - max)` in place, returning the sum of the new values as
/// `ggml_vec_soft_max_f32` does on AVX2: eight at a time with [`exp_ggml`], each eight
/// summed in f32 in its register order and added to an f64 total; a tail of fewer than
/// eight with the C library's `expf`.
pub fn soft_max_row(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2 and FMA on this CPU.
        return unsafe { simd::soft_max_row(x, max) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::soft_max_row(x, max) };
    }
    soft_max_row_ref(x, max)
}

fn soft_max_row_ref(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    let mut eights = x.chunks_exact_mut(8);
    for v in &mut eights {
        for e in v.iter_mut() {
            *e = exp_ggml(*e - max);
        }
        sum += f64::from(hsum8(v));
    }
    for e in eights.into_remainder() {
        *e = (*e - max).exp();
        sum += f64::from(*e);
    }
    sum
}

/// The sum of eight lanes in the order of ggml's AVX2 reduction (halves, then pairs).
fn hsum8(v: &[f32]) -> f32 {
    let q = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn use_simd() -> bool {
    use std::sync::OnceLock;
    static SIMD: OnceLock<bool> = OnceLock::new();
    // The AVX2 and AVX-512 tables both require AVX2 and FMA; on aarch64 every table but
    // the scalar one means NEON, which every aarch64 CPU has.
    *SIMD.get_or_init(|| crate::kernels().name() != "scalar")
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! Safety model: every function here requires AVX2 and FMA (the callers check with
    //! `use_simd`); loads and stores are unaligned and stay inside slices whose shapes
    //! were checked first.
    use std::arch::x86_64::*;

    use super::*;

    /// Rows and 8-lane column vectors of `c` one step of the kernel keeps in registers
    /// (ggml's AVX2 blocking: 12 accumulators).
    const RM: usize = 6;
    const RN: usize = 2;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_acc(c: &mut [f32], a: &[f32], b: &[f32], s: Gemm) {
        let wide = s.n / (8 * RN) * (8 * RN);
        let narrow = s.n / 8 * 8;
        let mut i = 0;
        while i < s.m {
            let rows = RM.min(s.m - i);
            let mut j = 0;
            while j < wide {
                // SAFETY: rows i..i+rows and columns j..j+16 are inside the checked shapes.
                unsafe { rows_block::<RN>(rows, c, a, b, s, i, j) };
                j += 8 * RN;
            }
            while j < narrow {
                // SAFETY: as above, columns j..j+8.
                unsafe { rows_block::<1>(rows, c, a, b, s, i, j) };
                j += 8;
            }
            if narrow < s.n {
                let part = Gemm { m: rows, ..s };
                let (ci, ai) = (&mut c[i * s.ldc..], &a[i * s.lda..]);
                gemm_ref(ci, ai, b, part, narrow..s.n);
            }
            i += rows;
        }
    }

    /// [`block`] for `rows` (1 to [`RM`]) rows, so a tile's last rows keep several
    /// accumulators in flight too.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_block<const V: usize>(
        rows: usize,
        c: &mut [f32],
        a: &[f32],
        b: &[f32],
        s: Gemm,
        i: usize,
        j: usize,
    ) {
        // SAFETY: the caller's bounds hold for every row count up to `rows`.
        unsafe {
            match rows {
                6 => block::<6, V>(c, a, b, s, i, j),
                5 => block::<5, V>(c, a, b, s, i, j),
                4 => block::<4, V>(c, a, b, s, i, j),
                3 => block::<3, V>(c, a, b, s, i, j),
                2 => block::<2, V>(c, a, b, s, i, j),
                _ => block::<1, V>(c, a, b, s, i, j),
            }
        }
    }

    /// `R` rows from `i` and `V` vectors of columns from `j` of `c`, accumulated over the
    /// whole inner dimension in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize, const V: usize>(
        c: &mut [f32],
        a: &[f32],
        b: &[f32],
        s: Gemm,
        i: usize,
        j: usize,
    ) {
        debug_assert!(i + R <= s.m && j + 8 * V <= s.n);
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                // SAFETY: element (i + r, j + 8v .. +8) lies in c (shape checked).
                *x = unsafe { _mm256_loadu_ps(c.as_ptr().add((i + r) * s.ldc + j + 8 * v)) };
            }
        }
        for kk in 0..s.k {
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: row kk, columns j + 8v .. +8 of b are in bounds.
                *x = unsafe { _mm256_loadu_ps(b.as_ptr().add(kk * s.ldb + j + 8 * v)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: a[(i + r) * lda + kk] is in bounds (kk < k).
                let p = _mm256_set1_ps(unsafe { *a.get_unchecked((i + r) * s.lda + kk) });
                for (x, &bv) in row.iter_mut().zip(&bv) {
                    *x = _mm256_fmadd_ps(bv, p, *x);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                // SAFETY: the same elements of c as loaded above.
                unsafe { _mm256_storeu_ps(c.as_mut_ptr().add((i + r) * s.ldc + j + 8 * v), x) };
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let r = _mm256_set1_ps(EXP_SHIFT);
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
        );
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let c = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(_mm256_set1_ps(P5), b, _mm256_set1_ps(P4)),
                u,
                _mm256_fmadd_ps(_mm256_set1_ps(P3), b, _mm256_set1_ps(P2)),
            ),
            u,
            _mm256_mul_ps(_mm256_set1_ps(P1), b),
        );
        if _mm256_movemask_ps(c) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
        _mm256_or_ps(
            _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                d,
                _mm256_or_ps(
                    _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                    _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn soft_max_row(x: &mut [f32], max: f32) -> f64 {
        let mut sum = 0f64;
        let m = _mm256_set1_ps(max);
        let mut eights = x.chunks_exact_mut(8);
        for v in &mut eights {
            // SAFETY: v holds exactly eight floats.
            let val = exp8(_mm256_sub_ps(unsafe { _mm256_loadu_ps(v.as_ptr()) }, m));
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), val) };
            let h = _mm_add_ps(_mm256_extractf128_ps::<1>(val), _mm256_castps256_ps128(val));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            let h = _mm_add_ss(h, _mm_movehdup_ps(h));
            sum += f64::from(_mm_cvtss_f32(h));
        }
        for e in eights.into_remainder() {
            *e = (*e - max).exp();
            sum += f64::from(*e);
        }
        sum
    }

    /// [`exp8`] on eight values, for the tests.
    #[cfg(test)]
    pub(super) fn exp_lanes(x: [f32; 8]) -> [f32; 8] {
        let mut out = [0f32; 8];
        // SAFETY: callers run on a CPU with AVX2 and FMA (the tests check use_simd);
        // both arrays hold eight floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr()))) };
        out
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    //! The same loops with NEON: an 8-lane AVX2 register is two `float32x4_t`,
    //! `_mm256_fmadd_ps` is `vfmaq_f32` (fused, rounded once, as `mul_add`) and
    //! `_mm256_fnmadd_ps` is `vfmsq_f32`; comparisons are the ordered ones (false for NaN).
    //!
    //! Safety model: every function here requires NEON (the aarch64 baseline, spelled out
    //! with `target_feature`); loads and stores are unaligned and stay inside slices whose
    //! shapes were checked first.

    // Intrinsics called inside a `#[target_feature]` function are safe calls, so some
    // `unsafe` blocks hold nothing unsafe; they are kept to mark the loads and the CPU
    // requirement in one place.
    #![allow(unused_unsafe)]

    use std::arch::aarch64::*;

    use super::*;

    /// Rows and 4-lane column vectors of `c` one step keeps in registers: 24 accumulators,
    /// four rows of `b` and a broadcast of `a` fit the 32 vector registers.
    const RM: usize = 6;
    const RN: usize = 4;

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn gemm_acc(c: &mut [f32], a: &[f32], b: &[f32], s: Gemm) {
        let wide = s.n / (4 * RN) * (4 * RN);
        let narrow = s.n / 4 * 4;
        let mut i = 0;
        while i < s.m {
            let rows = RM.min(s.m - i);
            let mut j = 0;
            while j < wide {
                // SAFETY: rows i..i+rows and columns j..j+16 are inside the checked shapes.
                unsafe { rows_block::<RN>(rows, c, a, b, s, i, j) };
                j += 4 * RN;
            }
            while j < narrow {
                // SAFETY: as above, columns j..j+4.
                unsafe { rows_block::<1>(rows, c, a, b, s, i, j) };
                j += 4;
            }
            if narrow < s.n {
                let part = Gemm { m: rows, ..s };
                let (ci, ai) = (&mut c[i * s.ldc..], &a[i * s.lda..]);
                gemm_ref(ci, ai, b, part, narrow..s.n);
            }
            i += rows;
        }
    }

    /// [`block`] for `rows` (1 to [`RM`]) rows.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn rows_block<const V: usize>(
        rows: usize,
        c: &mut [f32],
        a: &[f32],
        b: &[f32],
        s: Gemm,
        i: usize,
        j: usize,
    ) {
        // SAFETY: the caller's bounds hold for every row count up to `rows`.
        unsafe {
            match rows {
                6 => block::<6, V>(c, a, b, s, i, j),
                5 => block::<5, V>(c, a, b, s, i, j),
                4 => block::<4, V>(c, a, b, s, i, j),
                3 => block::<3, V>(c, a, b, s, i, j),
                2 => block::<2, V>(c, a, b, s, i, j),
                _ => block::<1, V>(c, a, b, s, i, j),
            }
        }
    }

    /// `R` rows from `i` and `V` vectors of four columns from `j` of `c`, accumulated over
    /// the whole inner dimension in registers, each element one chain in order of `kk`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn block<const R: usize, const V: usize>(
        c: &mut [f32],
        a: &[f32],
        b: &[f32],
        s: Gemm,
        i: usize,
        j: usize,
    ) {
        debug_assert!(i + R <= s.m && j + 4 * V <= s.n);
        let mut acc = [[vdupq_n_f32(0.0); V]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                // SAFETY: element (i + r, j + 4v .. +4) lies in c (shape checked).
                *x = unsafe { vld1q_f32(c.as_ptr().add((i + r) * s.ldc + j + 4 * v)) };
            }
        }
        for kk in 0..s.k {
            let mut bv = [vdupq_n_f32(0.0); V];
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: row kk, columns j + 4v .. +4 of b are in bounds.
                *x = unsafe { vld1q_f32(b.as_ptr().add(kk * s.ldb + j + 4 * v)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: a[(i + r) * lda + kk] is in bounds (kk < k).
                let p = vdupq_n_f32(unsafe { *a.get_unchecked((i + r) * s.lda + kk) });
                for (x, &bv) in row.iter_mut().zip(&bv) {
                    *x = vfmaq_f32(*x, bv, p);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                // SAFETY: the same elements of c as loaded above.
                unsafe { vst1q_f32(c.as_mut_ptr().add((i + r) * s.ldc + j + 4 * v), x) };
            }
        }
    }

    /// [`exp_ggml`] on four lanes.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn exp4(x: float32x4_t) -> float32x4_t {
        let r = vdupq_n_f32(EXP_SHIFT);
        let z = vfmaq_f32(r, x, vdupq_n_f32(LOG2E));
        let n = vsubq_f32(z, r);
        let b = vfmsq_f32(vfmsq_f32(x, n, vdupq_n_f32(LN2_HI)), n, vdupq_n_f32(LN2_LO));
        let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
        let k = vreinterpretq_f32_u32(vaddq_u32(e, vdupq_n_u32(1f32.to_bits())));
        let abs_n = vabsq_f32(n);
        let c = vcgtq_f32(abs_n, vdupq_n_f32(126.0));
        let u = vmulq_f32(b, b);
        let j = vfmaq_f32(
            vmulq_f32(vdupq_n_f32(P1), b),
            vfmaq_f32(
                vfmaq_f32(vdupq_n_f32(P2), vdupq_n_f32(P3), b),
                vfmaq_f32(vdupq_n_f32(P4), vdupq_n_f32(P5), b),
                u,
            ),
            u,
        );
        let fast = vfmaq_f32(k, j, k);
        if vmaxvq_u32(c) == 0 {
            return fast;
        }
        let g = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x8200_0000));
        let s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7f00_0000)));
        let s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
        let d = vcgtq_f32(abs_n, vdupq_n_f32(192.0));
        let slow = vmulq_f32(vfmaq_f32(s2, s2, j), s1);
        vbslq_f32(d, vmulq_f32(s1, s1), vbslq_f32(c, slow, fast))
    }

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn soft_max_row(x: &mut [f32], max: f32) -> f64 {
        let mut sum = 0f64;
        let m = vdupq_n_f32(max);
        let mut eights = x.chunks_exact_mut(8);
        for v in &mut eights {
            // SAFETY: v holds exactly eight floats.
            let (lo, hi) = unsafe { (vld1q_f32(v.as_ptr()), vld1q_f32(v.as_ptr().add(4))) };
            // SAFETY: NEON per the caller.
            let (lo, hi) = unsafe { (exp4(vsubq_f32(lo, m)), exp4(vsubq_f32(hi, m))) };
            // SAFETY: as above.
            unsafe {
                vst1q_f32(v.as_mut_ptr(), lo);
                vst1q_f32(v.as_mut_ptr().add(4), hi);
            }
            // Lanes l and l+4, then (0+2) + (1+3), as the reference's `hsum8`.
            let q = vaddq_f32(lo, hi);
            let h = vadd_f32(vget_low_f32(q), vget_high_f32(q));
            sum += f64::from(vpadds_f32(h));
        }
        for e in eights.into_remainder() {
            *e = (*e - max).exp();
            sum += f64::from(*e);
        }
        sum
    }

    /// [`exp4`] on eight values, for the tests.
    #[cfg(test)]
    pub(super) fn exp_lanes(x: [f32; 8]) -> [f32; 8] {
        let mut out = [0f32; 8];
        // SAFETY: NEON is part of the aarch64 baseline; both arrays hold eight floats.
        unsafe {
            vst1q_f32(out.as_mut_ptr(), exp4(vld1q_f32(x.as_ptr())));
            vst1q_f32(out.as_mut_ptr().add(4), exp4(vld1q_f32(x.as_ptr().add(4))));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values uniform in ±scale/2.
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = crate::tests::XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        (0..n).map(|_| rng.unit() * scale / 2.0).collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn the_constants_are_the_c_literals() {
        assert_eq!(LOG2E, std::f32::consts::LOG2_E);
        assert_eq!(EXP_SHIFT, 12_582_912.0);
        assert_eq!(LN2_HI.to_bits(), 0x3f31_7200);
        assert!((f64::from(LN2_HI) + f64::from(LN2_LO) - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(P1.to_bits(), 0x3f7f_fff6);
    }

    #[test]
    fn exp_is_close_to_the_library_exp_and_zero_at_minus_infinity() {
        assert_eq!(exp_ggml(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_ggml(0.0), 1.0);
        for x in values(20_000, 3, 200.0) {
            let (got, want) = (exp_ggml(x), x.exp());
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2 || want < 1e-37, "exp({x}) = {got}, libm {want}");
        }
    }

    #[test]
    fn simd_matches_the_reference_bit_for_bit() {
        if !is_simd() {
            return;
        }
        // exp over the whole range, the slow lanes (|n| > 126) and infinities included.
        let mut xs = values(4096, 5, 400.0);
        xs.extend([f32::NEG_INFINITY, -104.0, -87.5, 88.7, 89.0, -0.0, 1e-30]);
        xs.resize(xs.len().next_multiple_of(8), 0.0);
        for chunk in xs.chunks_exact(8) {
            let want: Vec<f32> = chunk.iter().map(|&x| exp_ggml(x)).collect();
            assert_eq!(bits(&simd_exp(chunk)), bits(&want), "{chunk:?}");
        }
        // soft_max_row, with and without a tail.
        for n in [8, 64, 67] {
            let x = values(n, n as u64, 20.0);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (mut a, mut b) = (x.clone(), x);
            let sa = soft_max_row(&mut a, max);
            let sb = soft_max_row_ref(&mut b, max);
            assert_eq!(
                (bits(&a), sa.to_bits()),
                (bits(&b), sb.to_bits()),
                "n = {n}"
            );
        }
        // gemm over shapes with row and column tails and strides wider than the rows.
        for (m, k, n) in [
            (64, 64, 64),
            (7, 33, 19),
            (13, 256, 64),
            (1, 5, 8),
            (6, 1, 40),
        ] {
            let s = Gemm {
                m,
                k,
                n,
                lda: k + 3,
                ldb: n + 5,
                ldc: n + 1,
            };
            let a = values(m * s.lda, 11, 4.0);
            let b = values(k * s.ldb, 12, 4.0);
            let c0 = values(m * s.ldc, 13, 1.0);
            let mut c = c0.clone();
            gemm_acc(&mut c, &a, &b, s);
            let mut r = c0;
            gemm_ref(&mut r, &a, &b, s, 0..n);
            assert_eq!(bits(&c), bits(&r), "{s:?}");
        }
    }

    #[test]
    fn gemm_is_a_matrix_product() {
        let s = Gemm {
            m: 9,
            k: 70,
            n: 21,
            lda: 70,
            ldb: 21,
            ldc: 21,
        };
        let (a, b) = (values(9 * 70, 1, 2.0), values(70 * 21, 2, 2.0));
        let mut c = vec![1.0; 9 * 21];
        gemm_acc(&mut c, &a, &b, s);
        for i in 0..9 {
            for j in 0..21 {
                let want: f64 = 1.0
                    + (0..70)
                        .map(|kk| f64::from(a[i * 70 + kk]) * f64::from(b[kk * 21 + j]))
                        .sum::<f64>();
                assert!((f64::from(c[i * 21 + j]) - want).abs() < 1e-4, "({i}, {j})");
            }
        }
    }

    #[test]
    fn soft_max_row_sums_its_weights() {
        let mut x = values(64, 9, 10.0);
        x[3] = f32::NEG_INFINITY;
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum = soft_max_row(&mut x, max);
        assert_eq!(x[3], 0.0);
        let direct: f64 = x.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - direct).abs() < 1e-5 && x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    fn is_simd() -> bool {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        return use_simd();
        #[allow(unreachable_code)]
        false
    }

    #[cfg(target_arch = "x86_64")]
    fn simd_exp(x: &[f32]) -> Vec<f32> {
        simd::exp_lanes(x.try_into().expect("eight")).to_vec()
    }

    #[cfg(target_arch = "aarch64")]
    fn simd_exp(x: &[f32]) -> Vec<f32> {
        neon::exp_lanes(x.try_into().expect("eight")).to_vec()
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn simd_exp(x: &[f32]) -> Vec<f32> {
        x.to_vec()
    }
}
