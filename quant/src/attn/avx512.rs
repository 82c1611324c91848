//! The one-query attention loops over an f16 cache with AVX-512's 32 vector registers:
//! up to four query heads sharing a KV head go through each key row together, so every
//! key or value vector is widened once for all of them and enough independent chains are
//! in flight to keep the conversions and fused multiply-adds busy.
//!
//! Same bits as the AVX2 loops (and so as the scalar reference): the key dots keep
//! ggml's four eight-lane chains per head and its reduction; the value accumulator is
//! element-wise (rescale or fused multiply-add, then round to f16), so wider registers
//! and interleaved heads leave every element's sequence of operations as it was.
//!
//! Safety model: every function here requires the AVX-512 table's features (AVX2, FMA,
//! F16C, AVX-512 F and VL; the callers check with `use_avx512`); loads and stores are
//! unaligned and stay inside slices whose lengths were checked first.

use std::arch::x86_64::*;

use super::simd::{self, KEYS};
use super::{expf, head_sets, Online};
use crate::F16;

/// Query heads that go through the value rows together (16 accumulator registers).
const SET: usize = 4;
/// Lanes of one AVX-512 register.
const WIDE: usize = 16;
/// Value dimensions one pass of the value loop keeps in registers per head.
pub(super) const CHUNK: usize = 64;
const REGS: usize = CHUNK / WIDE;

/// `out[h * n + j]` = query `h` · key `j`, as `super::dots_f16`: the AVX2 code of
/// [`head_sets`] compiled here with 32 registers, so four heads share each key vector.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
pub(super) unsafe fn dots_f16(queries: &[F16], keys: &[F16], d: usize, out: &mut [f32]) {
    if !head_sets::fits(queries, d) {
        // SAFETY: AVX2, FMA and F16C are part of this function's features.
        return unsafe { simd::dots_f16(queries, keys, d, out) };
    }
    // SAFETY: this function's features include the callee's; the shape fits.
    unsafe { head_sets::dots::<4>(queries, keys, d, out) }
}

/// `super::accumulate_f16` for a value width that is a whole number of [`CHUNK`]s (the
/// caller sends other widths to the AVX2 loop).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
pub(super) unsafe fn accumulate_f16(
    scores: &[f32],
    values: &[F16],
    dv: usize,
    acc: &mut [F16],
    state: &mut [Online],
) {
    debug_assert!(dv.is_multiple_of(CHUNK));
    let g = state.len();
    let n = values.len() / dv;
    let mut h0 = 0;
    while h0 < g {
        let set = SET.min(g - h0);
        let scores = &scores[h0 * n..][..set * n];
        let acc = &mut acc[h0 * dv..][..set * dv];
        let state = &mut state[h0..][..set];
        // SAFETY: this function's features; the slices hold `set` heads.
        unsafe {
            match set {
                4 => accumulate_set::<4>(scores, values, dv, acc, state),
                3 => accumulate_set::<3>(scores, values, dv, acc, state),
                2 => accumulate_set::<2>(scores, values, dv, acc, state),
                _ => accumulate_set::<1>(scores, values, dv, acc, state),
            }
        }
        h0 += set;
    }
}

/// `G` heads' f16 accumulators through every key: per block of [`KEYS`] keys, each head's
/// online-softmax steps first (the heads' states are independent), then per [`CHUNK`] of
/// dimensions the accumulators in registers while each value vector is widened once and
/// added to all `G`, rounding to f16 after every step as `scale_f16`/`mad_f16` do.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn accumulate_set<const G: usize>(
    scores: &[f32],
    values: &[F16],
    dv: usize,
    acc: &mut [F16],
    state: &mut [Online],
) {
    let n = values.len() / dv;
    let round = |x: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
    // Rescale and weight of each key for each head.
    let (mut ms, mut vs) = ([[1f32; KEYS]; G], [[0f32; KEYS]; G]);
    for k0 in (0..n).step_by(KEYS) {
        let kn = KEYS.min(n - k0);
        for (h, st) in state.iter_mut().enumerate() {
            let s = &scores[h * n + k0..][..kn];
            expf::steps(st, s, &mut ms[h][..kn], &mut vs[h][..kn]);
        }
        for c0 in (0..dv).step_by(CHUNK) {
            let mut r = [[_mm512_setzero_ps(); REGS]; G];
            for (h, r) in r.iter_mut().enumerate() {
                for (i, x) in r.iter_mut().enumerate() {
                    // SAFETY: head h's accumulator holds dv halves; c0 + CHUNK <= dv.
                    *x = unsafe { load16(&acc[h * dv + c0 + i * WIDE..]) };
                }
            }
            for j in 0..kn {
                let row = &values[(k0 + j) * dv + c0..][..CHUNK];
                let mut v = [_mm512_setzero_ps(); REGS];
                for (i, v) in v.iter_mut().enumerate() {
                    // SAFETY: row holds CHUNK halves.
                    *v = unsafe { load16(&row[i * WIDE..]) };
                }
                for (h, r) in r.iter_mut().enumerate() {
                    let (m, s) = (ms[h][j], vs[h][j]);
                    if m != 1.0 {
                        let m = _mm512_set1_ps(m);
                        r.iter_mut().for_each(|x| *x = round(_mm512_mul_ps(*x, m)));
                    }
                    let s = _mm512_set1_ps(s);
                    for (x, &v) in r.iter_mut().zip(&v) {
                        *x = round(_mm512_fmadd_ps(v, s, *x));
                    }
                }
            }
            for (h, r) in r.iter().enumerate() {
                for (i, &x) in r.iter().enumerate() {
                    // SAFETY: as for the load above.
                    unsafe { store16(&mut acc[h * dv + c0 + i * WIDE..], x) };
                }
            }
        }
    }
}

/// Sixteen halves widened to floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn load16(p: &[F16]) -> __m512 {
    debug_assert!(p.len() >= WIDE);
    // SAFETY: sixteen halves (32 bytes) are in bounds; unaligned load.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.as_ptr() as *const __m256i)) }
}

/// Sixteen floats rounded to halves (to nearest, ties to even) and stored.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn store16(p: &mut [F16], v: __m512) {
    debug_assert!(p.len() >= WIDE);
    // SAFETY: sixteen halves (32 bytes) are in bounds; unaligned store.
    unsafe {
        _mm256_storeu_si256(
            p.as_mut_ptr() as *mut __m256i,
            _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v),
        )
    }
}
