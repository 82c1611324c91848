//! AVX2 + FMA dot products and the Q8_0 activation quantizer (x86_64 only): Q4_0, Q5_0,
//! Q8_0 and IQ4_NL with Q8_0; Q4_1 and Q5_1 with Q8_1; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and
//! IQ4_XS with Q8_K; F16 and BF16 with themselves.
//!
//! Each kernel follows ggml's AVX2 version: integer products of 8-bit quants with
//! `maddubs` (unsigned x signed bytes, summed in pairs to i16) and `madd` (i16 pairs to
//! i32), one float multiply-add per block (per super-block for the K-quants) into eight
//! f32 lanes, and a horizontal sum at the end. The integer part of every kernel is exact
//! and equal to the scalar reference's; only the float summation order differs (eight
//! lanes, fused multiply-add), which the tests bound.
//!
//! Preconditions the integer tricks rely on, all met by the activations this crate
//! produces from finite input:
//! - activation quants lie in -127..=127 (`sign_epi8` cannot negate -128);
//! - a Q8_K block's `bsums[j]` is the sum of its quants `16*j..16*j+16` (Q2_K, Q4_K and
//!   Q5_K use them for the minimums and Q6_K for the -32 offset, instead of the quants
//!   themselves; Q4_1 and Q5_1 likewise take their minimum's part from Q8_1's `s`, as the
//!   scalar references do).
//!
//! The 32-weight formats' kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) are written once
//! over their integer step, [`DotStep`]: `maddubs` + `madd` here, or one `vpdpbusd` (the
//! same i32 lanes, so the same bits) for the AVX-VNNI table and, in the tests, AVX-512
//! VL. `dot_entries!` instantiates each into one `#[target_feature]` entry point per step.
//! The K-quants keep `maddubs`: they `madd` the i16 pair sums by per-group i16 scales, and
//! `dpbusd`'s i32 sums would need a 32-bit multiply per group instead (ggml's AVX2 path
//! does not use it for them either).
//!
//! Safety model: the `unsafe fn`s here require AVX2 and FMA, and those that say so F16C.
//! The safe wrappers at the bottom are `pub(super)`: `kernels.rs` stores them only in the
//! table whose features they need (AVX2, FMA and F16C; plus AVX-VNNI for the `_avxvnni`
//! ones, plus AVX-512 VL + VNNI for the `_vl` ones), which it hands out only after
//! `is_x86_feature_detected!` confirmed them.

// Intrinsics called inside a `#[target_feature]` function are safe calls (Rust 1.87+), so
// some `unsafe` blocks hold nothing unsafe; they are kept, each with its SAFETY line, to
// mark the loads and the CPU-feature requirement in one place.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use crate::formats::{
    BlockBf16, BlockF16, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
    KVALUES_IQ4NL, QK32,
};
use crate::F16;

/// Sum of the eight lanes, in ggml's order (upper half onto lower, then pairs).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum_f32x8(x: __m256) -> f32 {
    // SAFETY: register-only intrinsics; the caller guarantees AVX2.
    unsafe {
        let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        hsum_f32x4(r)
    }
}

/// Sum of the four lanes, in ggml's order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum_f32x4(x: __m128) -> f32 {
    // SAFETY: register-only intrinsics; the caller guarantees AVX2.
    unsafe {
        let r = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }
}

/// Sum of the four i32 lanes (exact unless it overflows).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum_i32x4(x: __m128i) -> i32 {
    // SAFETY: register-only intrinsics; the caller guarantees AVX2.
    unsafe {
        let r = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
        let r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0b10_11_00_01));
        _mm_cvtsi128_si32(r)
    }
}

/// Four halves widened to f32 by F16C (`vcvtph2ps`): the same bits as [`F16::to_f32`]
/// for every input, NaNs included (the tests check all 65536), in one instruction instead
/// of a dozen each. For the 32-weight formats with a minimum, four conversions a block in
/// software cost about as much as the block's products.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x4_to_f32(h: [F16; 4]) -> __m128 {
    let bits =
        h[0].0 as u64 | (h[1].0 as u64) << 16 | (h[2].0 as u64) << 32 | (h[3].0 as u64) << 48;
    // SAFETY: register-only intrinsics; F16C per the caller.
    unsafe { _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)) }
}

/// The f32 products `a0 * a2` and `a1 * a3` of four halves: with `[d_w, m_w, d_a, s_a]`,
/// a block's `d_w * d_a` and `m_w * s_a`, each exactly the scalar f32 product.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_products(h: [F16; 4]) -> (f32, f32) {
    // SAFETY: register-only intrinsics; F16C per the caller.
    unsafe {
        let v = f16x4_to_f32(h);
        let p = _mm_mul_ps(v, _mm_movehl_ps(v, v));
        (_mm_cvtss_f32(p), _mm_cvtss_f32(_mm_movehdup_ps(p)))
    }
}

/// Signed bytes `x * y` summed in pairs, as sixteen i16. `y` must not hold -128.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn mul_add_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics; the caller guarantees AVX2.
    unsafe {
        // maddubs wants unsigned x signed: move x's sign onto y.
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        _mm256_maddubs_epi16(ax, sy)
    }
}

/// The integer step of the 32-weight kernels: unsigned bytes `ax` times signed bytes `sy`,
/// summed in groups of four into eight i32 lanes (lane `c` holds bytes `4c..4c + 4`).
/// The row kernels and the AVX2 tile kernels are written once over it and instantiated
/// per implementation, each entry point enabling the features its step needs.
pub(super) trait DotStep {
    /// # Safety
    /// The CPU must have the step's features (the caller's `#[target_feature]`).
    unsafe fn dot(ax: __m256i, sy: __m256i) -> __m256i;
}

/// AVX2: `maddubs` (pairs to i16) then `madd` by ones (pairs of pairs to i32), as ggml's
/// AVX2 kernels. Exact while each pair of products fits an i16 (`maddubs` saturates),
/// which the operands of every kernel here guarantee.
pub(super) struct Maddubs;

/// AVX-512 VL + VNNI: the EVEX `vpdpbusd` on 256-bit registers. The same i32 lanes as
/// [`Maddubs`] (four products summed in one step, no i16 stage to saturate), so the same
/// bits; no table uses it, the tests run it to vouch for [`AvxVnni`] on this machine.
pub(super) struct VnniVl;

/// AVX-VNNI (Alder Lake on, no AVX-512): the VEX encoding of the same `vpdpbusd`.
pub(super) struct AvxVnni;

impl DotStep for Maddubs {
    #[inline(always)]
    unsafe fn dot(ax: __m256i, sy: __m256i) -> __m256i {
        // SAFETY: register-only AVX2, per the caller.
        unsafe { _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy)) }
    }
}

impl DotStep for VnniVl {
    #[inline(always)]
    unsafe fn dot(ax: __m256i, sy: __m256i) -> __m256i {
        // SAFETY: register-only AVX-512 VL + VNNI, per the caller.
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy) }
    }
}

impl DotStep for AvxVnni {
    #[inline(always)]
    unsafe fn dot(ax: __m256i, sy: __m256i) -> __m256i {
        // SAFETY: register-only AVX-VNNI, per the caller.
        unsafe { _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy) }
    }
}

/// [`DotStep::dot`] as eight f32.
#[inline(always)]
unsafe fn mul_sum_us8_pairs_float<D: DotStep>(ax: __m256i, sy: __m256i) -> __m256 {
    // SAFETY: register-only intrinsics; the caller guarantees AVX2 and D's features.
    unsafe { _mm256_cvtepi32_ps(D::dot(ax, sy)) }
}

/// Signed bytes `x * y` summed in groups of four, as eight f32. `y` must not hold -128.
#[inline(always)]
unsafe fn mul_sum_i8_pairs_float<D: DotStep>(x: __m256i, y: __m256i) -> __m256 {
    // SAFETY: register-only intrinsics; the caller guarantees AVX2 and D's features.
    unsafe {
        // The dot step wants unsigned x signed: move x's sign onto y.
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        mul_sum_us8_pairs_float::<D>(ax, sy)
    }
}

/// 32 packed nibbles to 32 bytes in 0..=15: the low nibbles (elements 0..16) in the lower
/// half, the high nibbles (elements 16..32) in the upper half.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bytes_from_nibbles_32(qs: &[u8; 16]) -> __m256i {
    // SAFETY: the unaligned 16-byte load reads exactly `qs`; AVX2 per the caller.
    unsafe {
        let tmp = _mm_loadu_si128(qs.as_ptr().cast());
        let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
        _mm256_and_si256(bytes, _mm256_set1_epi8(0xF))
    }
}

/// [`KVALUES_IQ4NL`] in both 128-bit lanes, for `_mm256_shuffle_epi8` lookups.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn iq4nl_table() -> __m256i {
    // SAFETY: the 16-byte load reads exactly the 16-entry table; AVX2 per the caller.
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast())) }
}

/// 32 packed IQ4 table indices to their signed levels, laid out as
/// [`bytes_from_nibbles_32`] lays out the indices (`table` from [`iq4nl_table`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn iq4nl_levels_32(table: __m256i, qs: &[u8; 16]) -> __m256i {
    // SAFETY: register-only intrinsics and a load of exactly `qs`; AVX2 per the caller.
    unsafe { _mm256_shuffle_epi8(table, bytes_from_nibbles_32(qs)) }
}

/// 32 bits to 32 bytes: 0xFF where the bit is set, 0x00 where it is clear.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bytes_from_bits_32(bits: &[u8; 4]) -> __m256i {
    // SAFETY: register-only intrinsics; AVX2 per the caller.
    unsafe {
        let x32 = u32::from_le_bytes(*bits) as i32;
        // Byte k takes byte k / 8 of the word...
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf);
        // ...and is all ones after OR-ing every bit but bit k % 8 exactly when that bit
        // was set.
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }
}

#[inline(always)]
unsafe fn q4_0_q8_0_impl<D: DotStep>(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: each load reads one block's `qs` array through a reference to it (unaligned
    // loads, in bounds); AVX2/FMA per the caller.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = _mm256_set1_ps(f16_products([x.d, F16::ZERO, y.d, F16::ZERO]).0);
            let qx = _mm256_sub_epi8(bytes_from_nibbles_32(&x.qs), _mm256_set1_epi8(8));
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float::<D>(qx, qy), acc);
        }
        hsum_f32x8(acc)
    }
}

#[inline(always)]
unsafe fn q5_0_q8_0_impl<D: DotStep>(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as in q4_0_q8_0_impl: loads only of whole `qs` arrays of borrowed blocks.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = _mm256_set1_ps(f16_products([x.d, F16::ZERO, y.d, F16::ZERO]).0);
            // q - 16 with q = nibble | fifth << 4: the nibble itself where the fifth bit is
            // set, the nibble with 0xF0 (nibble - 16 as a signed byte) where it is not.
            let hi = _mm256_andnot_si256(bytes_from_bits_32(&x.qh), _mm256_set1_epi8(0xF0u8 as i8));
            let qx = _mm256_or_si256(bytes_from_nibbles_32(&x.qs), hi);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float::<D>(qx, qy), acc);
        }
        hsum_f32x8(acc)
    }
}

#[inline(always)]
unsafe fn q8_0_q8_0_impl<D: DotStep>(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as in q4_0_q8_0_impl: loads only of whole `qs` arrays of borrowed blocks.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = _mm256_set1_ps(f16_products([x.d, F16::ZERO, y.d, F16::ZERO]).0);
            let qx = _mm256_loadu_si256(x.qs.as_ptr().cast());
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float::<D>(qx, qy), acc);
        }
        hsum_f32x8(acc)
    }
}

#[inline(always)]
unsafe fn q4_1_q8_1_impl<D: DotStep>(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as in q4_0_q8_0_impl: loads only of whole `qs` arrays of borrowed blocks.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        // The minimum's part, m * d8 * sum(q8), through the activation's stored `s`.
        let mut summs = 0.0f32;
        for (x, y) in x.iter().zip(y) {
            let (d, ms) = f16_products([x.d, x.m, y.d, y.s]);
            summs += ms;
            let d = _mm256_set1_ps(d);
            // Quants 0..=15, unsigned as maddubs wants them.
            let qx = bytes_from_nibbles_32(&x.qs);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float::<D>(qx, qy), acc);
        }
        hsum_f32x8(acc) + summs
    }
}

#[inline(always)]
unsafe fn q5_1_q8_1_impl<D: DotStep>(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as in q4_0_q8_0_impl: loads only of whole `qs` arrays of borrowed blocks.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for (x, y) in x.iter().zip(y) {
            let (d, ms) = f16_products([x.d, x.m, y.d, y.s]);
            summs += ms;
            let d = _mm256_set1_ps(d);
            // Quants 0..=31: the nibble with 16 added where the fifth bit is set.
            let hi = _mm256_and_si256(bytes_from_bits_32(&x.qh), _mm256_set1_epi8(0x10));
            let qx = _mm256_or_si256(bytes_from_nibbles_32(&x.qs), hi);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float::<D>(qx, qy), acc);
        }
        hsum_f32x8(acc) + summs
    }
}

/// One block at a time into one accumulator (ggml's AVX2 version takes two blocks a step
/// into two): the tiled matmul reproduces this order bit for bit.
#[inline(always)]
unsafe fn iq4_nl_q8_0_impl<D: DotStep>(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as in q4_0_q8_0_impl, plus the 16-byte table load in iq4nl_table.
    unsafe {
        let table = iq4nl_table();
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let (d, _) = f16_products([x.d, F16::ZERO, y.d, F16::ZERO]);
            let d = _mm256_set1_ps(d);
            let qx = iq4nl_levels_32(table, &x.qs);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float::<D>(qx, qy), acc);
        }
        hsum_f32x8(acc)
    }
}

/// 32 bytes to 0xFF where bit `s` (0..8) of the byte is set, 0x00 where it is clear.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn bit_mask_32(bits: __m256i, s: usize) -> __m256i {
    // SAFETY: register-only intrinsics; AVX2 per the caller.
    unsafe {
        let bit = _mm256_set1_epi8((1u8 << s) as i8);
        _mm256_cmpeq_epi8(_mm256_and_si256(bits, bit), bit)
    }
}

/// `_mm256_shuffle_epi8` control that spreads i16 number `2k` of each 128-bit lane over
/// the lower lane and number `2k + 1` over the upper: the scales of the two 16-weight
/// sub-blocks of a 32-weight group (ggml's `get_scale_shuffle_q3k`).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_pair_shuffle(k: usize) -> __m256i {
    let b = 4 * k as i16;
    // SAFETY: register-only intrinsics; AVX2 per the caller.
    unsafe {
        _mm256_set_m128i(
            _mm_set1_epi16((b + 2) | ((b + 3) << 8)),
            _mm_set1_epi16(b | ((b + 1) << 8)),
        )
    }
}

/// Sixteen i16 scales as two vectors, scales 0..8 in both lanes of the first and 8..16 in
/// both lanes of the second, for [`scale_pair_shuffle`].
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scales_by_half(scales8: __m128i) -> [__m256i; 2] {
    // SAFETY: register-only intrinsics; AVX2 per the caller.
    unsafe {
        let all = _mm256_cvtepi8_epi16(scales8);
        [
            _mm256_permute2x128_si256(all, all, 0x00),
            _mm256_permute2x128_si256(all, all, 0x11),
        ]
    }
}

/// The four 2-bit fields of 32 bytes (bits 0..2, 2..4, 4..6, 6..8), as bytes 0..=3: the
/// groups of 32 weights at offsets 0, 32, 64, 96 of a Q2_K/Q3_K half.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn crumbs_32x4(bits: __m256i) -> [__m256i; 4] {
    // SAFETY: register-only intrinsics; AVX2 per the caller.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        [
            _mm256_and_si256(bits, m3),
            _mm256_and_si256(_mm256_srli_epi16(bits, 2), m3),
            _mm256_and_si256(_mm256_srli_epi16(bits, 4), m3),
            _mm256_and_si256(_mm256_srli_epi16(bits, 6), m3),
        ]
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q2_k_q8_k_impl(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: every load reads 16 or 32 bytes inside one borrowed block (`scales`, `qs`
    // and `q8` slices of exactly 32 bytes, `bsums`); AVX2/FMA per the caller.
    unsafe {
        let m4 = _mm_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            // Minimums: min * bsum for the 16 sub-blocks, in pairs to eight i32 lanes,
            // scaled by -dmin * d8 into the same accumulator.
            let packed = _mm_loadu_si128(x.scales.as_ptr().cast());
            let scales8 = _mm_and_si128(packed, m4);
            let mins8 = _mm_and_si128(_mm_srli_epi16(packed, 4), m4);
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let prod = _mm256_madd_epi16(_mm256_cvtepi8_epi16(mins8), q8sums);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);

            // Quants 0..=3: 128 weights per half, four 2-bit fields of 32 bytes.
            let scales = scales_by_half(scales8);
            let mut sumi = _mm256_setzero_si256();
            for (half, (q2, q8)) in
                x.qs.chunks_exact(32)
                    .zip(y.qs.chunks_exact(128))
                    .enumerate()
            {
                let q = crumbs_32x4(_mm256_loadu_si256(q2.as_ptr().cast()));
                for (k, &q) in q.iter().enumerate() {
                    let q8k = _mm256_loadu_si256(q8[32 * k..32 * k + 32].as_ptr().cast());
                    let p16 = _mm256_maddubs_epi16(q, q8k);
                    let sc = _mm256_shuffle_epi8(scales[half], scale_pair_shuffle(k));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc)
    }
}

/// Q3_K's twelve packed bytes as four words holding the sixteen 6-bit scales (offset by
/// 32) one per byte, in order (the same unpacking as [`BlockQ3K::unpack_scales`], all at
/// once).
#[inline]
fn unpack_scales_q3k(packed: &[u8; 12]) -> [u32; 4] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (a0, a1, a2) = (w(0), w(4), w(8));
    [
        (a0 & KMASK2) | ((a2 & KMASK1) << 4),
        (a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4),
    ]
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q3_k_q8_k_impl(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: every load reads 32 bytes inside one borrowed block (`hmask`, `qs` and `q8`
    // slices of exactly 32 bytes); AVX2/FMA per the caller.
    unsafe {
        let four = _mm256_set1_epi8(4);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = y.d * x.d.to_f32();
            let u = unpack_scales_q3k(&x.scales);
            let scales8 = _mm_sub_epi8(
                _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32),
                _mm_set1_epi8(32),
            );
            let scales = scales_by_half(scales8);
            let hbits = _mm256_loadu_si256(x.hmask.as_ptr().cast());

            // Quants as (low 2 bits) - (4 where the high bit is clear), each part through
            // its own unsigned maddubs, subtracted in i16.
            let mut sumi = _mm256_setzero_si256();
            for (half, (q3, q8)) in
                x.qs.chunks_exact(32)
                    .zip(y.qs.chunks_exact(128))
                    .enumerate()
            {
                let q = crumbs_32x4(_mm256_loadu_si256(q3.as_ptr().cast()));
                for (k, &q) in q.iter().enumerate() {
                    let q3h = _mm256_andnot_si256(bit_mask_32(hbits, 4 * half + k), four);
                    let q8k = _mm256_loadu_si256(q8[32 * k..32 * k + 32].as_ptr().cast());
                    let p16 = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(q, q8k),
                        _mm256_maddubs_epi16(q3h, q8k),
                    );
                    let sc = _mm256_shuffle_epi8(scales[half], scale_pair_shuffle(k));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc)
    }
}

/// Q4_K's twelve packed bytes as four words: bytes 0..8 the eight 6-bit scales, bytes
/// 8..16 the eight 6-bit mins (the same unpacking as `scale_min_k4`, all at once).
#[inline]
fn unpack_scales_mins_k4(packed: &[u8; 12]) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (u0, u1, u2) = (w(0), w(4), w(8));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q4_k_q8_k_impl(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: every load reads 32 bytes inside one borrowed block (`qs` halves of 32
    // bytes, the 32-byte `bsums`); AVX2/FMA per the caller.
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();
            let u = unpack_scales_mins_k4(&x.scales);
            let sc = (((u[1] as u64) << 32) | u[0] as u64).to_le_bytes();

            // Minimums: (bsums of each 32) * min, four i32 lanes, scaled by -dmin * d8.
            let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(q8sums),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

            // Quants: 64 weights per step, low nibbles then high nibbles of 32 bytes.
            let mut sumi = _mm256_setzero_si256();
            for (j, (q4, q8)) in x.qs.chunks_exact(32).zip(y.qs.chunks_exact(64)).enumerate() {
                let scale_l = _mm256_set1_epi16(sc[2 * j] as i16);
                let scale_h = _mm256_set1_epi16(sc[2 * j + 1] as i16);
                let q4bits = _mm256_loadu_si256(q4.as_ptr().cast());
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                let q8l = _mm256_loadu_si256(q8.as_ptr().cast());
                let q8h = _mm256_loadu_si256(q8[32..].as_ptr().cast());
                let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc) + hsum_f32x4(acc_m)
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q5_k_q8_k_impl(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: every load reads 32 bytes inside one borrowed block (`qh`, `qs` halves of
    // 32 bytes, the 32-byte `bsums`); AVX2/FMA per the caller.
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let m16 = _mm256_set1_epi8(16);
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for (x, y) in x.iter().zip(y) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();
            let u = unpack_scales_mins_k4(&x.scales);
            let sc = (((u[1] as u64) << 32) | u[0] as u64).to_le_bytes();

            // Minimums: (bsums of each 32) * min, summed to one integer per block, added
            // with one rounding (C compilers contract ggml's `summs += dmin * sum` to an
            // FMA; this matches ggml bit for bit).
            let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(q8sums),
                _mm256_extracti128_si256(q8sums, 1),
            );
            summs = dmin.mul_add(hsum_i32x4(_mm_madd_epi16(mins, q8s)) as f32, summs);

            // Quants 0..=31: the nibbles of Q4_K plus 16 where bit `s` of `qh` is set, for
            // sub-block `s`; 64 weights per step.
            let hbits = _mm256_loadu_si256(x.qh.as_ptr().cast());
            let mut sumi = _mm256_setzero_si256();
            for (j, (q5, q8)) in x.qs.chunks_exact(32).zip(y.qs.chunks_exact(64)).enumerate() {
                let scale_l = _mm256_set1_epi16(sc[2 * j] as i16);
                let scale_h = _mm256_set1_epi16(sc[2 * j + 1] as i16);
                let q5bits = _mm256_loadu_si256(q5.as_ptr().cast());
                let h_l = _mm256_and_si256(bit_mask_32(hbits, 2 * j), m16);
                let h_h = _mm256_and_si256(bit_mask_32(hbits, 2 * j + 1), m16);
                let q5l = _mm256_or_si256(_mm256_and_si256(q5bits, m4), h_l);
                let q5h = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4), h_h);
                let q8l = _mm256_loadu_si256(q8.as_ptr().cast());
                let q8h = _mm256_loadu_si256(q8[32..].as_ptr().cast());
                let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q5l, q8l));
                let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q5h, q8h));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc) + summs
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q6_k_q8_k_impl(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: every load reads 16 or 32 bytes inside one borrowed block (`ql`/`qh`/`qs`
    // slices of exactly that length, `scales`, `bsums`); AVX2/FMA per the caller.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            let d = y.d * x.d.to_f32();
            // The quants are used unsigned (0..=63); the -32 offset comes back as
            // 32 * sum(scale * bsum), subtracted once per block.
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let scales = _mm_loadu_si128(x.scales.as_ptr().cast());
            let q8sclsub =
                _mm256_slli_epi32(_mm256_madd_epi16(q8sums, _mm256_cvtepi8_epi16(scales)), 5);

            let mut sumi = _mm256_setzero_si256();
            for half in 0..2 {
                let ql = &x.ql[64 * half..64 * half + 64];
                let bits1 = _mm256_loadu_si256(ql.as_ptr().cast());
                let bits2 = _mm256_loadu_si256(ql[32..].as_ptr().cast());
                let bits_h = _mm256_loadu_si256(x.qh[32 * half..32 * half + 32].as_ptr().cast());

                let h0 = _mm256_slli_epi16(_mm256_and_si256(bits_h, m3), 4);
                let h1 = _mm256_slli_epi16(_mm256_and_si256(bits_h, _mm256_set1_epi8(12)), 2);
                let h2 = _mm256_and_si256(bits_h, _mm256_set1_epi8(48));
                let h3 = _mm256_srli_epi16(_mm256_and_si256(bits_h, _mm256_set1_epi8(-64)), 2);
                // Groups of 32 weights at offsets 0, 32, 64, 96 of this half.
                let q = [
                    _mm256_or_si256(_mm256_and_si256(bits1, m15), h0),
                    _mm256_or_si256(_mm256_and_si256(bits2, m15), h1),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3),
                ];
                let q8 = &y.qs[128 * half..128 * half + 128];
                for (k, &q) in q.iter().enumerate() {
                    let q8k = _mm256_loadu_si256(q8[32 * k..32 * k + 32].as_ptr().cast());
                    let p16 = _mm256_maddubs_epi16(q, q8k);
                    // Scale 2i for the first 16 weights of the group, 2i + 1 for the rest.
                    let i = (4 * half + k) as i64;
                    let pick = _mm_set_epi64x(
                        (2 * i + 1) * 0x0101_0101_0101_0101,
                        2 * i * 0x0101_0101_0101_0101,
                    );
                    let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
                }
            }
            let sumi = _mm256_sub_epi32(sumi, q8sclsub);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc)
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn iq4_xs_q8_k_impl(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    // SAFETY: every load reads 16 or 32 bytes inside one borrowed block (`qs` chunks of
    // 16 bytes, `q8` chunks of 32), plus the table load in iq4nl_table; AVX2/FMA per the
    // caller.
    unsafe {
        let table = iq4nl_table();
        let mut acc = _mm256_setzero_ps();
        for (x, y) in x.iter().zip(y) {
            // Per 32-weight sub-block: levels * q8 in i16 pairs, times the sub-block's
            // scale - 32 into i32.
            let mut sumi = _mm256_setzero_si256();
            for (ib, (qs, q8)) in x.qs.chunks_exact(16).zip(y.qs.chunks_exact(32)).enumerate() {
                let qs: &[u8; 16] = qs.try_into().expect("chunks of 16");
                let qx = iq4nl_levels_32(table, qs);
                let qy = _mm256_loadu_si256(q8.as_ptr().cast());
                let ls = _mm256_set1_epi16((x.scale(ib) - 32) as i16);
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(mul_add_i8_pairs(qx, qy), ls));
            }
            let d = x.d.to_f32() * y.d;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_f32x8(acc)
    }
}

/// ggml-cpu's x86 `quantize_row_q8_0`, bit-identical to
/// [`crate::formats::q8_0::quantize_activation`].
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_q8_0_impl(x: &[f32], out: &mut [BlockQ8_0]) {
    // SAFETY: the four 8-float loads read one 32-float chunk of `x`, the store writes one
    // block's 32-byte `qs`; AVX2 per the caller.
    unsafe {
        for (x, b) in x.chunks_exact(QK32).zip(out) {
            let p = x.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let sign = _mm256_set1_ps(-0.0);
            let mut max_abs = _mm256_andnot_ps(sign, v[0]);
            for &v in &v[1..] {
                max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign, v));
            }
            let m4 = _mm_max_ps(
                _mm256_extractf128_ps(max_abs, 1),
                _mm256_castps256_ps128(max_abs),
            );
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);

            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let i: [__m256i; 4] = std::array::from_fn(|k| {
                let r = _mm256_round_ps(
                    _mm256_mul_ps(v[k], id),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                );
                _mm256_cvtps_epi32(r)
            });
            // i32 -> i16 -> i8 with saturation; the packs interleave 128-bit halves, and
            // the permute puts the 4-byte groups back in order.
            let i01 = _mm256_packs_epi32(i[0], i[1]);
            let i23 = _mm256_packs_epi32(i[2], i[3]);
            let bytes = _mm256_packs_epi16(i01, i23);
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), bytes);
            b.d = F16::from_f32(d);
        }
    }
}

/// F16 · F16: halves widened with F16C, multiplied and summed in f32 by FMA in four
/// 8-lane accumulators (32 elements a step, as ggml's F16 dot), the tail in scalar f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_f16_impl(x: &[BlockF16], y: &[BlockF16]) -> f32 {
    let n = x.len().min(y.len());
    // BlockF16 is a repr(C) wrapper of one u16 (size asserted in formats/f16.rs).
    let (xp, yp) = (x.as_ptr() as *const u16, y.as_ptr() as *const u16);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= n elements of both rows; unaligned loads; F16C present.
            unsafe {
                let vx = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i + 8 * j) as *const __m128i));
                let vy = _mm256_cvtph_ps(_mm_loadu_si128(yp.add(i + 8 * j) as *const __m128i));
                *a = _mm256_fmadd_ps(vx, vy, *a);
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements of both rows; unaligned loads; F16C present.
        unsafe {
            let vx = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i) as *const __m128i));
            let vy = _mm256_cvtph_ps(_mm_loadu_si128(yp.add(i) as *const __m128i));
            acc[0] = _mm256_fmadd_ps(vx, vy, acc[0]);
        }
        i += 8;
    }
    // SAFETY: AVX2 is enabled for this function.
    let mut sum = unsafe {
        hsum_f32x8(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[2]),
            _mm256_add_ps(acc[1], acc[3]),
        ))
    };
    for k in i..n {
        sum += x[k].v.to_f32() * y[k].v.to_f32();
    }
    sum
}

/// Eight bf16 at `p` widened to f32 (a bf16 is the top half of an f32).
///
/// # Safety
/// `p` must be valid for reading eight u16; the CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn load_bf16x8(p: *const u16) -> __m256 {
    // SAFETY: the caller guarantees eight readable u16 at `p` (unaligned load) and AVX2.
    unsafe {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }
}

/// BF16 · BF16 as ggml's AVX2 version: 32 elements a step into four 8-lane f32
/// accumulators, then the tail's products added to that sum in f64.
#[target_feature(enable = "avx2,fma")]
unsafe fn bf16_bf16_impl(x: &[BlockBf16], y: &[BlockBf16]) -> f32 {
    let n = x.len().min(y.len());
    // BlockBf16 is a repr(C) wrapper of one u16 (size asserted in formats/bf16.rs).
    let (xp, yp) = (x.as_ptr() as *const u16, y.as_ptr() as *const u16);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= n elements of both rows; AVX2/FMA per the caller.
            unsafe {
                let vx = load_bf16x8(xp.add(i + 8 * j));
                let vy = load_bf16x8(yp.add(i + 8 * j));
                *a = _mm256_fmadd_ps(vx, vy, *a);
            }
        }
        i += 32;
    }
    // SAFETY: AVX2 is enabled for this function.
    let mut sum = unsafe {
        hsum_f32x8(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[2]),
            _mm256_add_ps(acc[1], acc[3]),
        ))
    } as f64;
    for k in i..n {
        sum += (x[k].v.to_f32() * y[k].v.to_f32()) as f64;
    }
    sum as f32
}

/// [`f16x4_to_f32`] as an array, for the test against [`F16::to_f32`]; `None` on a CPU
/// without the AVX2 table's features.
#[cfg(test)]
pub(super) fn f16x4_to_f32_checked(h: [F16; 4]) -> Option<[f32; 4]> {
    if !super::cpu_has_avx2() {
        return None;
    }
    let mut out = [0f32; 4];
    // SAFETY: AVX2, FMA and F16C were detected just above; the store writes exactly `out`.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), f16x4_to_f32(h)) };
    Some(out)
}

// Safe entry points for the AVX2 table. Reachable only through `kernels.rs`, which
// stores them in a table it returns only when AVX2 and FMA were detected at run time.

/// The entry points of a 32-weight row kernel written over [`DotStep`]: `$avx2` for the
/// AVX2 and AVX-512 tables, `$vl` (AVX-512 VL + VNNI, for the tests), `$avxvnni` for the
/// AVX-VNNI table. Each is a `#[target_feature]` function the body is inlined into, so
/// the three share every line but the dot instruction.
macro_rules! dot_entries {
    ($body:ident($W:ty, $A:ty): $avx2:ident, $vl:ident, $avxvnni:ident) => {
        pub(super) fn $avx2(x: &[$W], y: &[$A]) -> f32 {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn run(x: &[$W], y: &[$A]) -> f32 {
                // SAFETY: the features Maddubs needs are enabled here.
                unsafe { $body::<Maddubs>(x, y) }
            }
            // SAFETY: only called through the AVX2 and AVX-512 tables, selected after
            // detecting AVX2, FMA and F16C.
            unsafe { run(x, y) }
        }

        #[cfg_attr(not(test), allow(dead_code))] // the tests' VL table runs it
        pub(super) fn $vl(x: &[$W], y: &[$A]) -> f32 {
            #[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
            unsafe fn run(x: &[$W], y: &[$A]) -> f32 {
                // SAFETY: the features VnniVl needs are enabled here.
                unsafe { $body::<VnniVl>(x, y) }
            }
            // SAFETY: only called through a table selected after detecting AVX2, FMA,
            // F16C and the AVX-512 set (VL and VNNI among it).
            unsafe { run(x, y) }
        }

        pub(super) fn $avxvnni(x: &[$W], y: &[$A]) -> f32 {
            #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
            unsafe fn run(x: &[$W], y: &[$A]) -> f32 {
                // SAFETY: the features AvxVnni needs are enabled here.
                unsafe { $body::<AvxVnni>(x, y) }
            }
            // SAFETY: only called through the AVX-VNNI table, selected after detecting
            // AVX2, FMA, F16C and AVX-VNNI.
            unsafe { run(x, y) }
        }
    };
}

dot_entries!(q4_0_q8_0_impl(BlockQ4_0, BlockQ8_0): q4_0_q8_0, q4_0_q8_0_vl, q4_0_q8_0_avxvnni);
dot_entries!(q5_0_q8_0_impl(BlockQ5_0, BlockQ8_0): q5_0_q8_0, q5_0_q8_0_vl, q5_0_q8_0_avxvnni);
dot_entries!(q8_0_q8_0_impl(BlockQ8_0, BlockQ8_0): q8_0_q8_0, q8_0_q8_0_vl, q8_0_q8_0_avxvnni);
dot_entries!(q4_1_q8_1_impl(BlockQ4_1, BlockQ8_1): q4_1_q8_1, q4_1_q8_1_vl, q4_1_q8_1_avxvnni);
dot_entries!(q5_1_q8_1_impl(BlockQ5_1, BlockQ8_1): q5_1_q8_1, q5_1_q8_1_vl, q5_1_q8_1_avxvnni);
dot_entries!(iq4_nl_q8_0_impl(BlockIq4Nl, BlockQ8_0): iq4_nl_q8_0, iq4_nl_q8_0_vl, iq4_nl_q8_0_avxvnni);

pub(super) fn q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { q2_k_q8_k_impl(x, y) }
}

pub(super) fn q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { q3_k_q8_k_impl(x, y) }
}

pub(super) fn q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { q4_k_q8_k_impl(x, y) }
}

pub(super) fn q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { q5_k_q8_k_impl(x, y) }
}

pub(super) fn q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { q6_k_q8_k_impl(x, y) }
}

pub(super) fn iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { iq4_xs_q8_k_impl(x, y) }
}

pub(super) fn f16_f16(x: &[BlockF16], y: &[BlockF16]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2, FMA
    // and F16C.
    unsafe { f16_f16_impl(x, y) }
}

pub(super) fn bf16_bf16(x: &[BlockBf16], y: &[BlockBf16]) -> f32 {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { bf16_bf16_impl(x, y) }
}

pub(super) fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    // SAFETY: only called through the AVX2 table, selected after detecting AVX2 + FMA.
    unsafe { quantize_q8_0_impl(x, out) }
}
