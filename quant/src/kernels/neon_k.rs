//! NEON dot products of the K-quants (Q2_K … Q6_K) and IQ4_XS with Q8_K activations, for
//! aarch64, giving the scalar references' bits exactly (see `neon.rs` for the rule).
//!
//! The references for Q3_K, Q4_K, Q5_K and Q6_K (ggml's portable code) sum a
//! super-block's products into eight integer lanes by element index mod 8
//! ([`crate::formats::k_quants::lane_sums`]), then take a float step per lane, so those
//! eight sums must come out exactly. [`lane_sums`] gets them from widening multiplies:
//! `vmull_s8`/`vmlal_high_s8` over 16 consecutive elements put element `i`'s product in
//! i16 lane `i % 8`, and one multiply-add by the sub-block's scale widens them into two
//! i32x4 accumulators, lanes 0..4 and 4..8. The per-lane float steps then run on two
//! float32x4 registers, product then sum, like the reference (no fused multiply-add).
//! Q2_K and IQ4_XS sum their integers without lanes (the whole super-block, or each
//! 32-element sub-block), so any order gives their bits.
//!
//! Tiers: `sdot` sums four consecutive bytes into one lane, mixing residues mod 8, so it
//! cannot give Q3_K…Q6_K's lanes without a byte permutation, which costs more than it
//! saves (see the dotprod section below); Q2_K and IQ4_XS, which need no lanes, get
//! `sdot` kernels.
//!
//! Safety model as in `neon.rs`: the `unsafe fn`s require NEON (and `dotprod` where
//! marked); the safe wrappers are `pub(super)` and the `dotprod` ones go only into the
//! table handed out after detecting the feature.

// As in neon.rs: intrinsics inside a `#[target_feature]` fn are safe calls, so some
// `unsafe` blocks hold nothing unsafe; they stay to mark the loads in one place.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use super::neon::sdot;
use crate::formats::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, KVALUES_IQ4NL, QK_K,
};
use crate::F16;

/// A super-block's 256 weight quants as signed bytes, element `16k + i` in lane `i` of
/// vector `k`.
type Quants = [int8x16_t; 16];

/// The integer core of the lane-summing references: `scales[e / (256 / N)] * a[e] *
/// q8[e]` summed into eight lanes by `e % 8`, returned as lanes 0..4 and 4..8.
///
/// `N` is the number of scales: 16 (one per 16 elements) or 8 (one per 32). Each i16
/// lane sums `2 * 16 / N` products before the scale widens it, so the caller's quants
/// must keep `(32 / N) * max|a| * 128 <= 32767`: Q2_K 768, Q3_K 1024, Q6_K 8192 (N = 16),
/// Q4_K 7680, Q5_K 15872 (N = 8).
///
/// Always inlined: an outlined call (LLVM made one for Q4_K and Q5_K) passes the 16
/// quant vectors through memory. `#[target_feature]` would forbid `inline(always)`, and
/// is not needed for the intrinsics to inline: NEON is in the aarch64 baseline.
#[inline(always)]
unsafe fn lane_sums<const N: usize>(
    a: &Quants,
    q8: &[i8; QK_K],
    scales: &[i16; N],
) -> (int32x4_t, int32x4_t) {
    const { assert!(N == 8 || N == 16) };
    let per = 16 / N; // 16-element chunks per scale
                      // SAFETY: loads of `q8`'s 16-byte chunk `k` for `k < 16`; register-only otherwise.
    unsafe {
        let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
        for (j, &sc) in scales.iter().enumerate() {
            let k = per * j;
            let q = vld1q_s8(q8.as_ptr().add(16 * k));
            let mut p = vmull_s8(vget_low_s8(a[k]), vget_low_s8(q));
            p = vmlal_high_s8(p, a[k], q);
            if per == 2 {
                let q = vld1q_s8(q8.as_ptr().add(16 * (k + 1)));
                p = vmlal_s8(p, vget_low_s8(a[k + 1]), vget_low_s8(q));
                p = vmlal_high_s8(p, a[k + 1], q);
            }
            lo = vmlal_n_s16(lo, vget_low_s16(p), sc);
            hi = vmlal_high_n_s16(hi, p, sc);
        }
        (lo, hi)
    }
}

/// The reference's per-lane float step `sums[l] += d * lanes[l] as f32`, on the eight
/// sums held as lanes 0..4 and 4..8.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_lanes(
    sums: (float32x4_t, float32x4_t),
    lanes: (int32x4_t, int32x4_t),
    d: f32,
) -> (float32x4_t, float32x4_t) {
    // SAFETY: register-only intrinsics. `vcvtq_f32_s32` rounds to nearest like `as f32`;
    // `vmulq_n_f32` then `vaddq_f32` are the reference's separate product and sum.
    unsafe {
        (
            vaddq_f32(sums.0, vmulq_n_f32(vcvtq_f32_s32(lanes.0), d)),
            vaddq_f32(sums.1, vmulq_n_f32(vcvtq_f32_s32(lanes.1), d)),
        )
    }
}

/// The reference's last step: `sumf += sums[l]` for `l` = 0..8, in that order.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_sums(mut sumf: f32, sums: (float32x4_t, float32x4_t)) -> f32 {
    let mut s = [0.0f32; 8];
    // SAFETY: stores of 4 floats each into the 8-float array.
    unsafe {
        vst1q_f32(s.as_mut_ptr(), sums.0);
        vst1q_f32(s.as_mut_ptr().add(4), sums.1);
    }
    for s in s {
        sumf += s;
    }
    sumf
}

/// Q2_K's and Q3_K's low two bits: `qs` (64 bytes) as Q2_K packs them, sub-block `8h +
/// 2s + t` (16 elements) at bits `2s..2s+2` of bytes `32h + 16t..`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn two_bit_quants(qs: &[u8; QK_K / 4]) -> [uint8x16_t; 16] {
    // SAFETY: loads of 16 bytes at offsets 0, 16, 32, 48 of the 64-byte array.
    unsafe {
        let three = vdupq_n_u8(3);
        let mut a = [vdupq_n_u8(0); 16];
        for h in 0..2 {
            let mut q = [
                vld1q_u8(qs.as_ptr().add(32 * h)),
                vld1q_u8(qs.as_ptr().add(32 * h + 16)),
            ];
            for s in 0..4 {
                for t in 0..2 {
                    a[8 * h + 2 * s + t] = vandq_u8(q[t], three);
                    q[t] = vshrq_n_u8::<2>(q[t]);
                }
            }
        }
        a
    }
}

/// The unsigned 6-bit (scale, min) pairs of Q4_K and Q5_K (the layout of
/// [`crate::formats::k_quants::scale_min::scale_min_k4`]), eight of each, unpacked four
/// at a time in 32-bit words.
#[inline]
fn scales_mins_k4(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let w = |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (w0, w1, w2) = (w(0), w(4), w(8));
    let (low6, low4, top2) = (0x3F3F_3F3F, 0x0F0F_0F0F, 0x0303_0303);
    // Pairs 0..4 in the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); pairs 4..8
    // from the nibbles of bytes 8..12 and the top two bits of bytes 0..8.
    let sc = [w0 & low6, (w2 & low4) | ((w0 >> 6) & top2) << 4];
    let m = [w1 & low6, ((w2 >> 4) & low4) | ((w1 >> 6) & top2) << 4];
    let bytes = |v: [u32; 2]| (v[0] as u64 | (v[1] as u64) << 32).to_le_bytes();
    (bytes(sc), bytes(m))
}

/// `sum(bsums[j] * mins[j / 2])`, exactly: the 16-element activation sums paired per
/// 32 (in i32, so no pair overflows) times the per-32 mins.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mins_dot(bsums: &[i16; 16], mins: &[u8; 8]) -> i32 {
    // SAFETY: loads of 8 i16 at offsets 0 and 8 of `bsums` and of the 8 bytes of `mins`.
    unsafe {
        let pairs_lo = vpaddlq_s16(vld1q_s16(bsums.as_ptr()));
        let pairs_hi = vpaddlq_s16(vld1q_s16(bsums.as_ptr().add(8)));
        let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr())));
        let (m_lo, m_hi) = (vmovl_s16(vget_low_s16(m)), vmovl_high_s16(m));
        vaddvq_s32(vmlaq_s32(vmulq_s32(pairs_lo, m_lo), pairs_hi, m_hi))
    }
}

/// Q2_K's 16 sub-block scales (low nibbles) and mins (high nibbles).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q2_k_scales_mins(x: &BlockQ2K) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: load of the 16 scale bytes.
    unsafe {
        let s = vld1q_u8(x.scales.as_ptr());
        (vandq_u8(s, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(s))
    }
}

/// Q2_K's `summs = sum(bsums[j] * min[j])`, exactly.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q2_k_summs(y: &BlockQ8K, mins: uint8x16_t) -> i32 {
    // SAFETY: loads of 8 i16 at offsets 0 and 8 of `bsums`; register-only otherwise.
    unsafe {
        let m_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
        let m_hi = vreinterpretq_s16_u16(vmovl_high_u8(mins));
        let b_lo = vld1q_s16(y.bsums.as_ptr());
        let b_hi = vld1q_s16(y.bsums.as_ptr().add(8));
        let mut acc = vmull_s16(vget_low_s16(b_lo), vget_low_s16(m_lo));
        acc = vmlal_high_s16(acc, b_lo, m_lo);
        acc = vmlal_s16(acc, vget_low_s16(b_hi), vget_low_s16(m_hi));
        acc = vmlal_high_s16(acc, b_hi, m_hi);
        vaddvq_s32(acc)
    }
}

/// Q2_K × Q8_K: the exact integers `isum` (any order: the reference adds its lanes) and
/// `summs`, then [`crate::formats::k_quants::q2_k::vec_dot`]'s float step.
#[target_feature(enable = "neon")]
unsafe fn q2_k_q8_k_neon(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        let (isum, summs) = unsafe {
            let (sc, mins) = q2_k_scales_mins(x);
            let summs = q2_k_summs(y, mins);
            let a = two_bit_quants(&x.qs).map(|v| vreinterpretq_s8_u8(v));
            let sc16 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(sc)));
            let sc16_hi = vreinterpretq_s16_u16(vmovl_high_u8(sc));
            let mut scales = [0i16; 16];
            vst1q_s16(scales.as_mut_ptr(), sc16);
            vst1q_s16(scales.as_mut_ptr().add(8), sc16_hi);
            let (lo, hi) = lane_sums(&a, &y.qs, &scales);
            (vaddvq_s32(vaddq_s32(lo, hi)), summs)
        };
        let dall = y.d * x.d.to_f32();
        let dmin = y.d * x.dmin.to_f32();
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q3_K × Q8_K: the eight exact lane sums, then [`crate::formats::k_quants::q3_k::vec_dot`]'s
/// per-lane float steps.
#[target_feature(enable = "neon")]
unsafe fn q3_k_q8_k_neon(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: register-only intrinsics.
    let mut sums = unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) };
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        let lanes = unsafe {
            let lo2 = two_bit_quants(&x.qs);
            let hm = [
                vld1q_u8(x.hmask.as_ptr()),
                vld1q_u8(x.hmask.as_ptr().add(16)),
            ];
            // Quant = low bits - 4, plus 4 where the high bit is set (element 16k + i:
            // bit k / 2 of hmask[16 (k % 2) + i]): -4..=3.
            let four = vdupq_n_u8(4);
            let mut a: Quants = [vdupq_n_s8(0); 16];
            for (k, a) in a.iter_mut().enumerate() {
                let bit = vdupq_n_u8(1 << (k / 2));
                let set = vtstq_u8(hm[k % 2], bit);
                *a = vreinterpretq_s8_u8(vsubq_u8(lo2[k], vbicq_u8(four, set)));
            }
            let scales = q3_k_scales(x);
            lane_sums(&a, &y.qs, &scales)
        };
        let d = x.d.to_f32() * y.d;
        // SAFETY: register-only intrinsics.
        sums = unsafe { add_lanes(sums, lanes, d) };
    }
    // SAFETY: register-only intrinsics and stores to a local array.
    unsafe { add_sums(0.0, sums) }
}

/// Q3_K's sixteen 6-bit scales, offset by 32 ([`BlockQ3K::unpack_scales`]): low nibbles
/// from bytes 0..8 (scales 0..8 low, 8..16 high), top two bits of scale `i` at bits
/// `2 * (i / 4)` of byte `8 + i % 4`, which a 32-bit word shifted by 0, 2, 4, 6 lines up
/// for each group of four.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q3_k_scales(x: &BlockQ3K) -> [i16; 16] {
    let s = &x.scales;
    let w = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let mut out = [0i16; 16];
    // SAFETY: load of bytes 0..8 of the 12-byte array, stores of 8 i16 at offsets 0 and 8
    // of `out`; register-only otherwise.
    unsafe {
        let low = vld1_u8(s.as_ptr());
        let low = vcombine_u8(vand_u8(low, vdup_n_u8(0xF)), vshr_n_u8::<4>(low));
        let shifts = vld1q_s32([0, -2, -4, -6].as_ptr());
        let top = vandq_u32(vshlq_u32(vdupq_n_u32(w), shifts), vdupq_n_u32(0x0303_0303));
        let sc = vorrq_u8(low, vshlq_n_u8::<4>(vreinterpretq_u8_u32(top)));
        let sc = vsubq_s8(vreinterpretq_s8_u8(sc), vdupq_n_s8(32));
        vst1q_s16(out.as_mut_ptr(), vmovl_s8(vget_low_s8(sc)));
        vst1q_s16(out.as_mut_ptr().add(8), vmovl_high_s8(sc));
    }
    out
}

/// Q4_K's and Q5_K's low four bits: 64 elements per 32 bytes of `qs`, the first 32 in the
/// low nibbles, the next 32 in the high ones.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn four_bit_quants(qs: &[u8; QK_K / 2]) -> [uint8x16_t; 16] {
    // SAFETY: loads of 16 bytes at offsets 0, 16, …, 112 of the 128-byte array.
    unsafe {
        let mask = vdupq_n_u8(0xF);
        let mut a = [vdupq_n_u8(0); 16];
        for c in 0..4 {
            let q0 = vld1q_u8(qs.as_ptr().add(32 * c));
            let q1 = vld1q_u8(qs.as_ptr().add(32 * c + 16));
            a[4 * c] = vandq_u8(q0, mask);
            a[4 * c + 1] = vandq_u8(q1, mask);
            a[4 * c + 2] = vshrq_n_u8::<4>(q0);
            a[4 * c + 3] = vshrq_n_u8::<4>(q1);
        }
        a
    }
}

/// Q4_K × Q8_K and Q5_K × Q8_K, whose references differ only in the quants: `quants`
/// gives a block's (0..32), its packed scales and mins, `d` and `dmin`. Per block the
/// eight exact lane sums and the exact min sum, then
/// [`crate::formats::k_quants::q4_k::vec_dot`]'s float steps (Q5_K's are the same). The
/// block loop lives here, with `quants` inlined into it, so the quants stay in registers.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn k4_dot<B>(
    x: &[B],
    y: &[BlockQ8K],
    quants: impl Fn(&B) -> (Quants, [u8; 12], F16, F16),
) -> f32 {
    // SAFETY: register-only intrinsics.
    let mut sums = unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) };
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (a, packed, d, dmin) = quants(x);
        let (sc, mins) = scales_mins_k4(&packed);
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        let (lanes, summ) = unsafe {
            (
                lane_sums(&a, &y.qs, &sc.map(i16::from)),
                mins_dot(&y.bsums, &mins),
            )
        };
        let d = d.to_f32() * y.d;
        // SAFETY: register-only intrinsics.
        sums = unsafe { add_lanes(sums, lanes, d) };
        let dmin = dmin.to_f32() * y.d;
        sumf -= dmin * summ as f32;
    }
    // SAFETY: register-only intrinsics and stores to a local array.
    unsafe { add_sums(sumf, sums) }
}

/// Q4_K × Q8_K: see [`k4_dot`].
#[target_feature(enable = "neon")]
unsafe fn q4_k_q8_k_neon(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let quants = |x: &BlockQ4K| {
        // SAFETY: register-only intrinsics and in-bounds loads of the block.
        let a = unsafe { four_bit_quants(&x.qs).map(|v| vreinterpretq_s8_u8(v)) };
        (a, x.scales, x.d, x.dmin)
    };
    // SAFETY: NEON per this function's feature.
    unsafe { k4_dot(x, y, quants) }
}

/// Q5_K × Q8_K: see [`k4_dot`]; the fifth bit of element `32s + i` is bit `s` of
/// `qh[i]`.
#[target_feature(enable = "neon")]
unsafe fn q5_k_q8_k_neon(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let quants = |x: &BlockQ5K| {
        // SAFETY: register-only intrinsics and in-bounds loads of the block.
        let a = unsafe {
            let mut a = four_bit_quants(&x.qs);
            let mut qh = [vld1q_u8(x.qh.as_ptr()), vld1q_u8(x.qh.as_ptr().add(16))];
            let sixteen = vdupq_n_u8(16);
            // Chunk k (16 elements) is sub-block s = k / 2, half t = k % 2: bit s of
            // qh[16t..]; shifting qh right by one per sub-block keeps it at bit 0.
            for (k, a) in a.iter_mut().enumerate() {
                let t = k % 2;
                *a = vorrq_u8(*a, vandq_u8(vshlq_n_u8::<4>(qh[t]), sixteen));
                if t == 1 {
                    qh = [vshrq_n_u8::<1>(qh[0]), vshrq_n_u8::<1>(qh[1])];
                }
            }
            a.map(|v| vreinterpretq_s8_u8(v))
        };
        (a, x.scales, x.d, x.dmin)
    };
    // SAFETY: NEON per this function's feature.
    unsafe { k4_dot(x, y, quants) }
}

/// Q6_K × Q8_K: the eight exact lane sums, then
/// [`crate::formats::k_quants::q6_k::vec_dot`]'s per-lane float steps.
#[target_feature(enable = "neon")]
unsafe fn q6_k_q8_k_neon(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: register-only intrinsics.
    let mut sums = unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) };
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        let lanes = unsafe {
            let (mask, top, off) = (vdupq_n_u8(0xF), vdupq_n_u8(0x30), vdupq_n_s8(32));
            let mut a: Quants = [vdupq_n_s8(0); 16];
            for h in 0..2 {
                // Per half: `ql` bytes 0..32 hold elements 0..32 (low nibbles) and 64..96
                // (high), bytes 32..64 elements 32..64 and 96..128; `qh` byte i holds the
                // top two bits of elements i, 32 + i, 64 + i, 96 + i (i < 32).
                let ql = x.ql.as_ptr().add(64 * h);
                let qh = x.qh.as_ptr().add(32 * h);
                let l = [0, 16, 32, 48].map(|o| vld1q_u8(ql.add(o)));
                let hb = [vld1q_u8(qh), vld1q_u8(qh.add(16))];
                for (j, a) in a[8 * h..8 * h + 8].iter_mut().enumerate() {
                    // Element group g = j / 2 (of 32), half t = j % 2 of it.
                    let (g, t) = (j / 2, j % 2);
                    let l = l[2 * (g % 2) + t];
                    let low = if g < 2 {
                        vandq_u8(l, mask)
                    } else {
                        vshrq_n_u8::<4>(l)
                    };
                    let high = match g {
                        0 => vshlq_n_u8::<4>(hb[t]),
                        1 => vshlq_n_u8::<2>(hb[t]),
                        2 => hb[t],
                        _ => vshrq_n_u8::<2>(hb[t]),
                    };
                    let q = vorrq_u8(low, vandq_u8(high, top));
                    *a = vsubq_s8(vreinterpretq_s8_u8(q), off);
                }
            }
            let sc = vld1q_s8(x.scales.as_ptr());
            let mut scales = [0i16; 16];
            vst1q_s16(scales.as_mut_ptr(), vmovl_s8(vget_low_s8(sc)));
            vst1q_s16(scales.as_mut_ptr().add(8), vmovl_high_s8(sc));
            lane_sums(&a, &y.qs, &scales)
        };
        let d = x.d.to_f32() * y.d;
        // SAFETY: register-only intrinsics.
        sums = unsafe { add_lanes(sums, lanes, d) };
    }
    // SAFETY: register-only intrinsics and stores to a local array.
    unsafe { add_sums(0.0, sums) }
}

/// IQ4_XS's table values of sub-block `ib`: elements 0..16 from the low nibbles of its
/// 16 bytes, 16..32 from the high ones.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn iq4_xs_values(
    x: &BlockIq4Xs,
    ib: usize,
    table: int8x16_t,
) -> (int8x16_t, int8x16_t) {
    // SAFETY: load of bytes 16ib..16ib + 16 of the 128-byte `qs` (ib < 8).
    unsafe {
        let q = vld1q_u8(x.qs.as_ptr().add(16 * ib));
        let lo = vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0xF)));
        let hi = vqtbl1q_s8(table, vshrq_n_u8::<4>(q));
        (lo, hi)
    }
}

/// The reference's float steps over one IQ4_XS super-block's eight exact sub-block sums
/// (always inlined, so that the sums need not go through memory).
#[inline(always)]
fn iq4_xs_float(x: &BlockIq4Xs, y: &BlockQ8K, sumi: [i32; 8], sumf: &mut f32) {
    let d4d8 = x.d.to_f32() * y.d;
    for (ib, sumi) in sumi.into_iter().enumerate() {
        let dl = d4d8 * (x.scale(ib) - 32) as f32;
        *sumf += dl * sumi as f32;
    }
}

/// Four i32x4 partial sums to `[sum(v[0]), sum(v[1]), sum(v[2]), sum(v[3])]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn reduce4(v: [int32x4_t; 4]) -> int32x4_t {
    // SAFETY: register-only intrinsics.
    unsafe { vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3])) }
}

/// IQ4_XS × Q8_K: per 32-element sub-block the exact integer sum (its products in i16
/// pairs, at most 2 × 127 × 128, then widened), then [`crate::formats::iq4_xs::vec_dot`]'s
/// float steps.
#[target_feature(enable = "neon")]
unsafe fn iq4_xs_q8_k_neon(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let mut sumi = [0i32; 8];
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        unsafe {
            let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
            let mut v = [vdupq_n_s32(0); 8];
            for (ib, v) in v.iter_mut().enumerate() {
                let (lo, hi) = iq4_xs_values(x, ib, table);
                let q0 = vld1q_s8(y.qs.as_ptr().add(32 * ib));
                let q1 = vld1q_s8(y.qs.as_ptr().add(32 * ib + 16));
                let p0 = vmlal_high_s8(vmull_s8(vget_low_s8(lo), vget_low_s8(q0)), lo, q0);
                let p1 = vmlal_high_s8(vmull_s8(vget_low_s8(hi), vget_low_s8(q1)), hi, q1);
                *v = vpadalq_s16(vpaddlq_s16(p0), p1);
            }
            vst1q_s32(sumi.as_mut_ptr(), reduce4([v[0], v[1], v[2], v[3]]));
            vst1q_s32(sumi.as_mut_ptr().add(4), reduce4([v[4], v[5], v[6], v[7]]));
        }
        iq4_xs_float(x, y, sumi, &mut sumf);
    }
    sumf
}

// ---- dotprod ----
//
// `sdot` pays where the reference needs no lanes. Q2_K: its scales fold into the weights
// (2-bit quant × 4-bit scale <= 45 fits a byte), so a 16-element chunk costs a multiply
// and one `sdot` into a single accumulator, against four instructions in `lane_sums`
// (two widening multiplies, two scale multiply-adds). IQ4_XS: two `sdot`s per 32
// elements against four widening multiplies and two pairwise widenings.
//
// Q3_K…Q6_K would need each `sdot` lane to hold one residue mod 8 (and one scale). With
// one scale per 16 elements (Q3_K, Q6_K) a lane can hold only two such bytes, so half of
// every `sdot` is padding. With one per 32 (Q4_K, Q5_K) a `vqtbl2q_s8` permutation can
// gather residues 0..4 into one vector and 4..8 into another, but per 32-element
// sub-block that costs two table lookups of the activations (they arrive in element
// order), half of a lookup of the packed weights (one lookup serves both nibbles), two
// `sdot`s into fresh zero accumulators (two moves) and two multiply-adds by the scale:
// 8 to 9 instructions, against 6 in `lane_sums` (four widening multiply(-add)s, two
// scale multiply-adds). It does not pay, so those formats keep their NEON kernels in the
// dotprod table.

/// Q2_K × Q8_K with `sdot`: each chunk's quants times its scale (<= 45) dotted with the
/// activations into one accumulator; same integers and float step as
/// [`q2_k_q8_k_neon`].
#[target_feature(enable = "neon,dotprod")]
unsafe fn q2_k_q8_k_dotprod(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only instructions and in-bounds loads of whole blocks.
        let (isum, summs) = unsafe {
            let (sc, mins) = q2_k_scales_mins(x);
            let summs = q2_k_summs(y, mins);
            let mut scales = [0u8; 16];
            vst1q_u8(scales.as_mut_ptr(), sc);
            let a = two_bit_quants(&x.qs);
            let mut acc = vdupq_n_s32(0);
            for (k, (a, &s)) in a.iter().zip(&scales).enumerate() {
                let w = vreinterpretq_s8_u8(vmulq_u8(*a, vdupq_n_u8(s)));
                acc = sdot(acc, w, vld1q_s8(y.qs.as_ptr().add(16 * k)));
            }
            (vaddvq_s32(acc), summs)
        };
        let dall = y.d * x.d.to_f32();
        let dmin = y.d * x.dmin.to_f32();
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// IQ4_XS × Q8_K with `sdot`: two per sub-block into its own accumulator; same integers
/// and float steps as [`iq4_xs_q8_k_neon`].
#[target_feature(enable = "neon,dotprod")]
unsafe fn iq4_xs_q8_k_dotprod(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let mut sumi = [0i32; 8];
        // SAFETY: register-only instructions and in-bounds loads of whole blocks.
        unsafe {
            let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
            let mut v = [vdupq_n_s32(0); 8];
            for (ib, v) in v.iter_mut().enumerate() {
                let (lo, hi) = iq4_xs_values(x, ib, table);
                let q0 = vld1q_s8(y.qs.as_ptr().add(32 * ib));
                let q1 = vld1q_s8(y.qs.as_ptr().add(32 * ib + 16));
                *v = sdot(sdot(vdupq_n_s32(0), lo, q0), hi, q1);
            }
            vst1q_s32(sumi.as_mut_ptr(), reduce4([v[0], v[1], v[2], v[3]]));
            vst1q_s32(sumi.as_mut_ptr().add(4), reduce4([v[4], v[5], v[6], v[7]]));
        }
        iq4_xs_float(x, y, sumi, &mut sumf);
    }
    sumf
}

// Safe wrappers for the tables (see `neon.rs`).

pub(super) fn q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q2_k_q8_k_neon(x, y) }
}

pub(super) fn q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q3_k_q8_k_neon(x, y) }
}

pub(super) fn q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q4_k_q8_k_neon(x, y) }
}

pub(super) fn q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q5_k_q8_k_neon(x, y) }
}

pub(super) fn q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q6_k_q8_k_neon(x, y) }
}

pub(super) fn iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { iq4_xs_q8_k_neon(x, y) }
}

pub(super) fn q2_k_q8_k_sdot(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { q2_k_q8_k_dotprod(x, y) }
}

pub(super) fn iq4_xs_q8_k_sdot(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { iq4_xs_q8_k_dotprod(x, y) }
}

#[cfg(test)]
mod tests {
    use bytemuck::Pod;

    use crate::formats::{
        BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
    };
    use crate::kernels::{available, scalar, DotFn, Kernels};
    use crate::F16;

    /// Byte patterns that put every quant at its extremes (all bits set or clear, and
    /// alternating), where an i16 partial sum of [`super::lane_sums`] is largest.
    const PATTERNS: [u8; 8] = [0x00, 0xFF, 0x55, 0xAA, 0x0F, 0xF0, 0x33, 0xCC];

    /// Two blocks with every byte `p`, then `fix` sets the f16 scales (finite).
    fn blocks<B: Pod>(p: u8, fix: impl Fn(&mut B)) -> Vec<B> {
        let mut v: Vec<B> = bytemuck::pod_collect_to_vec(&vec![p; 2 * size_of::<B>()]);
        v.iter_mut().for_each(fix);
        v
    }

    /// Activations at the ends of the i8 range (-128 included, which Q8_K quantization
    /// never makes but the kernels must still take), with consistent `bsums`.
    fn extreme_acts() -> Vec<Vec<BlockQ8K>> {
        let rows: [fn(usize) -> i8; 4] = [
            |_| -128,
            |_| 127,
            |i| if i % 2 == 0 { -128 } else { 127 },
            |i| if (i / 8) % 2 == 0 { -128 } else { 127 },
        ];
        rows.iter()
            .map(|f| {
                (0..2)
                    .map(|_| {
                        let qs: [i8; QK_K] = std::array::from_fn(f);
                        let bsums = std::array::from_fn(|g| {
                            qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum()
                        });
                        BlockQ8K { d: 0.75, qs, bsums }
                    })
                    .collect()
            })
            .collect()
    }

    fn check<W: Pod>(
        name: &str,
        dot: impl Fn(&Kernels) -> DotFn<W, BlockQ8K>,
        fix: impl Fn(&mut W) + Copy,
    ) {
        for p in PATTERNS {
            let w = blocks::<W>(p, fix);
            for a in extreme_acts() {
                let s = dot(scalar())(&w, &a);
                for k in available() {
                    let v = dot(k)(&w, &a);
                    assert_eq!(
                        v.to_bits(),
                        s.to_bits(),
                        "{name} {} pattern {p:#04x}: {v} != {s}",
                        k.name()
                    );
                }
            }
        }
    }

    #[test]
    fn extreme_quants_give_the_scalar_bits() {
        let (h, m) = (F16::from_f32(1.5), F16::from_f32(-0.25));
        check::<BlockQ2K>("Q2_K", |k| k.q2_k, |b| (b.d, b.dmin) = (h, m));
        check::<BlockQ3K>("Q3_K", |k| k.q3_k, |b| b.d = h);
        check::<BlockQ4K>("Q4_K", |k| k.q4_k, |b| (b.d, b.dmin) = (h, m));
        check::<BlockQ5K>("Q5_K", |k| k.q5_k, |b| (b.d, b.dmin) = (h, m));
        check::<BlockQ6K>("Q6_K", |k| k.q6_k, |b| b.d = h);
        check::<BlockIq4Xs>("IQ4_XS", |k| k.iq4_xs, |b| b.d = h);
    }
}
