//! NEON dot products for aarch64, in two tiers: `neon` (Armv8.0 Advanced SIMD, which every
//! aarch64 CPU has) and `dotprod` (adds `sdot`, Armv8.2+: Apple M1 and later, Snapdragon
//! X, Graviton 2 and later).
//!
//! Every kernel here gives the scalar reference's bits exactly, for every input: the
//! integer part of a block (products of small integers, summed in i32) is computed with
//! SIMD in any order, since integer sums are exact; the float part follows the scalar
//! reference step for step (same products, same order of additions, no fused
//! multiply-add where the reference has none). A block's float part is a few operations
//! next to its 32 or 256 integer products, so keeping the reference's order costs little.
//! This differs from the x86 tiers, whose float part follows ggml's AVX2 order and is only
//! held within a bound of the scalar one: on ARM, loupe computes what its scalar reference
//! computes on any machine, and the tests hold it to that bit for bit.
//!
//! Safety model: the `unsafe fn`s here require NEON (always present on aarch64, but
//! spelled out), and those marked `dotprod` the `sdot` instruction. The safe wrappers are
//! `pub(super)`: `kernels.rs` stores the `dotprod` ones only in the table it hands out
//! after `is_aarch64_feature_detected!("dotprod")`.

// Intrinsics called inside a `#[target_feature]` function are safe calls, so some
// `unsafe` blocks hold nothing unsafe; they are kept, each with its SAFETY line, to mark
// the loads and the CPU-feature requirement in one place.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;
use std::arch::asm;

use crate::attn::neon::{widen_hi, widen_lo};

use crate::formats::{
    c_max, BlockBf16, BlockF16, BlockF32, BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1,
    BlockQ8_0, BlockQ8_1, KVALUES_IQ4NL, QK32,
};
use crate::F16;

// The float rows are read as little-endian bytes straight into vector lanes.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "neon.rs assumes little-endian"
);

/// `acc + ` the products of `a` and `b` summed in groups of four bytes: lane `k` gains
/// `a[4k..4k+4] · b[4k..4k+4]` (the `sdot` instruction, written as inline assembly because
/// its intrinsic is not stable yet).
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; the caller guarantees the dotprod feature.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The products of signed bytes `a` and `b`, summed exactly into four i32 lanes (which
/// lane holds which product does not matter to the callers: they add the lanes).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_i8x16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only intrinsics; NEON per the caller.
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Q4_0's 32 quants of one block, as signed bytes `q - 8`: elements 0..16 from the low
/// nibbles, 16..32 from the high ones.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn q4_0_quants(x: &BlockQ4_0) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is 16 readable bytes; register-only intrinsics otherwise.
    unsafe {
        let q = vld1q_u8(x.qs.as_ptr());
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
        (lo, hi)
    }
}

/// The 32 activation quants of a Q8_0 block, in two halves.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_0_quants(y: &BlockQ8_0) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is 32 readable bytes.
    unsafe { (vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16))) }
}

/// The exact sum of the 32 products of a block's weight and activation quants (halves
/// `.0` hold elements 0..16, `.1` elements 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sum_i8x32(x: (int8x16_t, int8x16_t), y: (int8x16_t, int8x16_t)) -> i32 {
    // SAFETY: register-only intrinsics; NEON per the caller.
    unsafe { vaddvq_s32(dot_i8x16(dot_i8x16(vdupq_n_s32(0), x.0, y.0), x.1, y.1)) }
}

/// [`sum_i8x32`] with `sdot`: two instructions for the 32 products instead of eight.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sum_i8x32_sdot(x: (int8x16_t, int8x16_t), y: (int8x16_t, int8x16_t)) -> i32 {
    // SAFETY: register-only instructions; dotprod per the caller.
    unsafe { vaddvq_s32(sdot(sdot(vdupq_n_s32(0), x.0, y.0), x.1, y.1)) }
}

/// The 32 nibbles of a 4-bit block as bytes 0..=15: elements 0..16 from the low nibbles,
/// 16..32 from the high ones (the packing of Q4_0, Q4_1, Q5_x's low bits and IQ4_NL).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; QK32 / 2]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: `qs` is 16 readable bytes; register-only intrinsics otherwise.
    unsafe {
        let q = vld1q_u8(qs.as_ptr());
        (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q))
    }
}

/// Q5_0/Q5_1's fifth bits as 0x10 or 0 per element, in the halves of [`nibbles`]: bit `j`
/// of the little-endian `qh` belongs to element `j`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fifth_bits(qh: &[u8; 4]) -> (uint8x16_t, uint8x16_t) {
    // Element j's bit is bit j % 8 of byte j / 8: spread each byte over eight lanes, then
    // test each lane's own bit.
    const BYTE_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const BYTE_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: the three tables are 16 readable bytes each; register-only otherwise.
    unsafe {
        let h = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(*qh)));
        let bit = vld1q_u8(BIT.as_ptr());
        let lo = vtstq_u8(vqtbl1q_u8(h, vld1q_u8(BYTE_LO.as_ptr())), bit);
        let hi = vtstq_u8(vqtbl1q_u8(h, vld1q_u8(BYTE_HI.as_ptr())), bit);
        let b5 = vdupq_n_u8(0x10);
        (vandq_u8(lo, b5), vandq_u8(hi, b5))
    }
}

/// Q4_1's quants `q` in 0..=15, as signed bytes for the signed products.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn q4_1_quants(x: &BlockQ4_1) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only intrinsics past `nibbles`' load of a whole block.
    unsafe {
        let (lo, hi) = nibbles(&x.qs);
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

/// Q5_0's quants `q - 16`, in -16..=15.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn q5_0_quants(x: &BlockQ5_0) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only intrinsics past the loads of whole block fields.
    unsafe {
        let (lo, hi) = nibbles(&x.qs);
        let (hlo, hhi) = fifth_bits(&x.qh);
        let sixteen = vdupq_n_s8(16);
        (
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hlo)), sixteen),
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, hhi)), sixteen),
        )
    }
}

/// Q5_1's quants `q` in 0..=31.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn q5_1_quants(x: &BlockQ5_1) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only intrinsics past the loads of whole block fields.
    unsafe {
        let (lo, hi) = nibbles(&x.qs);
        let (hlo, hhi) = fifth_bits(&x.qh);
        (
            vreinterpretq_s8_u8(vorrq_u8(lo, hlo)),
            vreinterpretq_s8_u8(vorrq_u8(hi, hhi)),
        )
    }
}

/// IQ4_NL's levels: each nibble looked up in [`KVALUES_IQ4NL`] (one `tbl` per 16).
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn iq4_nl_quants(x: &BlockIq4Nl) -> (int8x16_t, int8x16_t) {
    // SAFETY: the table is 16 readable bytes; indices are below 16.
    unsafe {
        let levels = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let (lo, hi) = nibbles(&x.qs);
        (vqtbl1q_s8(levels, lo), vqtbl1q_s8(levels, hi))
    }
}

/// The 32 activation quants of a Q8_1 block, in two halves.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_1_quants(y: &BlockQ8_1) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is 32 readable bytes.
    unsafe { (vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16))) }
}

/// Four halves widened to f32 with `fcvtl` (attention's [`widen_lo`], see there why it
/// gives [`F16::to_f32`]'s bits): a block pair's scales in a few instructions, where the
/// reference's software conversion takes about seventeen per half and would cost more
/// than a block's integer part.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn f16x4_to_f32(h: [F16; 4]) -> [f32; 4] {
    let bits = h.iter().rev().fold(0u64, |b, h| b << 16 | h.0 as u64);
    // SAFETY: register-only instructions of base Armv8 Advanced SIMD; `widen_lo` reads
    // only the low four halves.
    unsafe {
        let v = widen_lo(vcombine_u16(vcreate_u16(bits), vcreate_u16(0)));
        [
            vgetq_lane_f32::<0>(v),
            vgetq_lane_f32::<1>(v),
            vgetq_lane_f32::<2>(v),
            vgetq_lane_f32::<3>(v),
        ]
    }
}

/// One dot kernel per tier for a 32-weight format whose reference sums a block's products
/// in one i32 and then takes a float step: `$step(x, y, sumi)` is that step, written as
/// in the reference (same operands, same order, same association), with the scales
/// widened by [`f16x4_to_f32`].
macro_rules! block_dots {
    ($(#[$doc:meta])* $neon:ident, $dotprod:ident, $W:ty, $A:ty, $xq:ident, $yq:ident,
     |$x:ident, $y:ident, $sumi:ident| $step:expr) => {
        $(#[$doc])*
        #[target_feature(enable = "neon")]
        unsafe fn $neon(x: &[$W], y: &[$A]) -> f32 {
            let mut sumf = 0.0f32;
            for ($x, $y) in x.iter().zip(y) {
                // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
                let $sumi = unsafe { sum_i8x32($xq($x), $yq($y)) };
                sumf += $step;
            }
            sumf
        }

        /// The same with `sdot`.
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $dotprod(x: &[$W], y: &[$A]) -> f32 {
            let mut sumf = 0.0f32;
            for ($x, $y) in x.iter().zip(y) {
                // SAFETY: register-only instructions and in-bounds loads of whole blocks.
                let $sumi = unsafe { sum_i8x32_sdot($xq($x), $yq($y)) };
                sumf += $step;
            }
            sumf
        }
    };
}

block_dots!(
    /// Q4_1 × Q8_1: [`crate::formats::q4_1::vec_dot`]'s `(d_x * d_y) * sumi + m * s`.
    q4_1_q8_1_neon, q4_1_q8_1_dotprod, BlockQ4_1, BlockQ8_1, q4_1_quants, q8_1_quants,
    |x, y, sumi| {
        // SAFETY: register-only; NEON in the kernels this expands into.
        let [dx, m, dy, s] = unsafe { f16x4_to_f32([x.d, x.m, y.d, y.s]) };
        (dx * dy) * sumi as f32 + m * s
    }
);

block_dots!(
    /// Q5_0 × Q8_0: [`crate::formats::q5_0::vec_dot`]'s `(d_x * d_y) * sumi`.
    q5_0_q8_0_neon, q5_0_q8_0_dotprod, BlockQ5_0, BlockQ8_0, q5_0_quants, q8_0_quants,
    |x, y, sumi| {
        // SAFETY: register-only; NEON in the kernels this expands into.
        let [dx, dy, _, _] = unsafe { f16x4_to_f32([x.d, y.d, F16::ZERO, F16::ZERO]) };
        (dx * dy) * sumi as f32
    }
);

block_dots!(
    /// Q5_1 × Q8_1: [`crate::formats::q5_1::vec_dot`]'s `(d_x * d_y) * sumi + m * s`.
    q5_1_q8_1_neon, q5_1_q8_1_dotprod, BlockQ5_1, BlockQ8_1, q5_1_quants, q8_1_quants,
    |x, y, sumi| {
        // SAFETY: register-only; NEON in the kernels this expands into.
        let [dx, m, dy, s] = unsafe { f16x4_to_f32([x.d, x.m, y.d, y.s]) };
        (dx * dy) * sumi as f32 + m * s
    }
);

block_dots!(
    /// IQ4_NL × Q8_0: [`crate::formats::iq4_nl::vec_dot`]'s `(d_y * d_x) * sumi` (its two
    /// half sums are one exact i32).
    iq4_nl_q8_0_neon, iq4_nl_q8_0_dotprod, BlockIq4Nl, BlockQ8_0, iq4_nl_quants, q8_0_quants,
    |x, y, sumi| {
        // SAFETY: register-only; NEON in the kernels this expands into.
        let [dx, dy, _, _] = unsafe { f16x4_to_f32([x.d, y.d, F16::ZERO, F16::ZERO]) };
        (dy * dx) * sumi as f32
    }
);

block_dots!(
    /// Q4_0 × Q8_0: [`crate::formats::q4_0::vec_dot`]'s `sumi * d_x * d_y`.
    q4_0_q8_0_neon, q4_0_q8_0_dotprod, BlockQ4_0, BlockQ8_0, q4_0_quants, q8_0_quants,
    |x, y, sumi| {
        // SAFETY: register-only; NEON in the kernels this expands into.
        let [dx, dy, _, _] = unsafe { f16x4_to_f32([x.d, y.d, F16::ZERO, F16::ZERO]) };
        sumi as f32 * dx * dy
    }
);

block_dots!(
    /// Q8_0 × Q8_0: [`crate::formats::q8_0::vec_dot`]'s `sumi * (d_x * d_y)`.
    q8_0_q8_0_neon, q8_0_q8_0_dotprod, BlockQ8_0, BlockQ8_0, q8_0_quants, q8_0_quants,
    |x, y, sumi| {
        // SAFETY: register-only; NEON in the kernels this expands into.
        let [dx, dy, _, _] = unsafe { f16x4_to_f32([x.d, y.d, F16::ZERO, F16::ZERO]) };
        sumi as f32 * (dx * dy)
    }
);

// The float dots. Their references ([`crate::formats::f32::vec_dot`] and the F16/BF16
// ones) round each product to f32, widen it to f64 and add it to one f64 sum, element by
// element. The conversions and products are vectorized here (the same IEEE operations
// lane by lane, so the same bits), but the f64 additions stay one dependent chain in the
// reference's order: f64 addition is not associative, and a reassociated sum would differ
// in the last bits. That chain is what these kernels cost: one `fadd` latency (2 to 4
// cycles on current cores) per element, where a reassociated SIMD sum (two f64 lanes,
// several accumulators) would retire about four elements a cycle: some 8 to 16 times
// slower than it could be, which the float types (rare as weights) accept for bits that
// match the reference everywhere. LLVM already compiles the F32 and BF16 references to
// this shape (vector products, the f64 additions one by one); these kernels keep it
// independent of the auto-vectorizer and spare F16 its software conversion.

/// `sum + p[0] + p[1] + p[2] + p[3]`, each product widened to f64 (exact), added in lane
/// order.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_lanes_f64(sum: f64, p: float32x4_t) -> f64 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let lo = vcvt_f64_f32(vget_low_f32(p));
        let hi = vcvt_high_f64_f32(p);
        let mut sum = sum;
        sum += vgetq_lane_f64::<0>(lo);
        sum += vgetq_lane_f64::<1>(lo);
        sum += vgetq_lane_f64::<0>(hi);
        sum += vgetq_lane_f64::<1>(hi);
        sum
    }
}

/// F32 × F32, eight elements per step.
#[target_feature(enable = "neon")]
unsafe fn f32_f32_neon(x: &[BlockF32], y: &[BlockF32]) -> f32 {
    let n = x.len().min(y.len());
    // BlockF32 is four bytes of a little-endian f32 (size asserted in formats/f32.rs).
    let (xp, yp) = (x.as_ptr() as *const u8, y.as_ptr() as *const u8);
    let mut sum = 0.0f64;
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i..i + 8 of both rows are in bounds; byte loads need no
        // alignment, and the target is little-endian (asserted above).
        unsafe {
            let ld = |p: *const u8, k: usize| vreinterpretq_f32_u8(vld1q_u8(p.add(4 * k)));
            let p0 = vmulq_f32(ld(xp, i), ld(yp, i));
            let p1 = vmulq_f32(ld(xp, i + 4), ld(yp, i + 4));
            sum = add_lanes_f64(add_lanes_f64(sum, p0), p1);
        }
        i += 8;
    }
    for (x, y) in x[i..n].iter().zip(&y[i..n]) {
        sum += (x.get() * y.get()) as f64;
    }
    sum as f32
}

/// Eight halves widened to f32 with `fcvtl`/`fcvtl2` (attention's [`widen_lo`] and
/// [`widen_hi`]). Exact for every finite half; a NaN keeps its sign and payload with the
/// quiet bit set, which is what [`F16::to_f32`] gives too (its `* 2^-112` quiets the same
/// way): the test `neon_f16_widening_equals_to_f32_for_every_half` checks all 65536.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x8_to_f32(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    // SAFETY: register-only instructions of base Armv8 Advanced SIMD.
    unsafe { (widen_lo(h), widen_hi(h)) }
}

/// F16 × F16, eight elements per step.
#[target_feature(enable = "neon")]
unsafe fn f16_f16_neon(x: &[BlockF16], y: &[BlockF16]) -> f32 {
    let n = x.len().min(y.len());
    // BlockF16 is a repr(C) wrapper of one u16 (size asserted in formats/f16.rs).
    let (xp, yp) = (x.as_ptr() as *const u16, y.as_ptr() as *const u16);
    let mut sum = 0.0f64;
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i..i + 8 of both rows are in bounds.
        unsafe {
            let (xl, xh) = f16x8_to_f32(vld1q_u16(xp.add(i)));
            let (yl, yh) = f16x8_to_f32(vld1q_u16(yp.add(i)));
            sum = add_lanes_f64(add_lanes_f64(sum, vmulq_f32(xl, yl)), vmulq_f32(xh, yh));
        }
        i += 8;
    }
    for (x, y) in x[i..n].iter().zip(&y[i..n]) {
        sum += (x.v.to_f32() * y.v.to_f32()) as f64;
    }
    sum as f32
}

/// BF16 × BF16, eight elements per step: a bf16 widens to f32 by a 16-bit shift, exactly
/// as [`crate::Bf16::to_f32`] does.
#[target_feature(enable = "neon")]
unsafe fn bf16_bf16_neon(x: &[BlockBf16], y: &[BlockBf16]) -> f32 {
    let n = x.len().min(y.len());
    // BlockBf16 is a repr(C) wrapper of one u16 (size asserted in formats/bf16.rs).
    let (xp, yp) = (x.as_ptr() as *const u16, y.as_ptr() as *const u16);
    let mut sum = 0.0f64;
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i..i + 8 of both rows are in bounds.
        unsafe {
            let widen = |h: uint16x8_t| {
                let lo = vshll_n_u16::<16>(vget_low_u16(h));
                let hi = vshll_high_n_u16::<16>(h);
                (vreinterpretq_f32_u32(lo), vreinterpretq_f32_u32(hi))
            };
            let (xl, xh) = widen(vld1q_u16(xp.add(i)));
            let (yl, yh) = widen(vld1q_u16(yp.add(i)));
            sum = add_lanes_f64(add_lanes_f64(sum, vmulq_f32(xl, yl)), vmulq_f32(xh, yh));
        }
        i += 8;
    }
    for (x, y) in x[i..n].iter().zip(&y[i..n]) {
        sum += (x.v.to_f32() * y.v.to_f32()) as f64;
    }
    sum as f32
}

/// The Q8_0 activation quantizer, bit for bit [`crate::formats::q8_0::quantize_activation`]
/// (ggml-cpu's x86 arithmetic). NEON's own `fmax` and `fcvtns` follow other rules for NaN
/// and out-of-range values, so the x86 ones are built from compares and selects:
/// - `maxps(a, b)` is `a > b ? a : b`: `fcmgt` + `bsl` (a NaN in either gives `b`);
/// - `cvtps2dq` gives i32::MIN for NaN and anything outside i32, where `fcvtns` gives 0
///   for NaN and saturates the rest: its result is kept only where `-2^31 <= p < 2^31`
///   (false for NaN). Checking `p` rather than its rounding is the same: a float of
///   magnitude 2^23 or more is already an integer, and a smaller one rounds inside;
/// - the saturating packs i32 → i16 → i8 are `sqxtn` twice.
#[target_feature(enable = "neon")]
unsafe fn quantize_q8_0_neon(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK32)) {
        // SAFETY: `x` is 32 readable f32s and `qs` 32 writable bytes; register-only
        // intrinsics otherwise.
        unsafe {
            let v: [float32x4_t; 8] = std::array::from_fn(|k| vld1q_f32(x.as_ptr().add(4 * k)));
            let max_ps = |a: float32x4_t, b: float32x4_t| vbslq_f32(vcgtq_f32(a, b), a, b);
            // The reference's eight lanes m[0..8] as `lo` (0..4) and `hi` (4..8), over the
            // four 8-float vectors in order.
            let (mut lo, mut hi) = (vabsq_f32(v[0]), vabsq_f32(v[1]));
            for k in 1..4 {
                lo = max_ps(lo, vabsq_f32(v[2 * k]));
                hi = max_ps(hi, vabsq_f32(v[2 * k + 1]));
            }
            // q[l] = maxps(m[4 + l], m[l]); then maxps(maxps(q0, q2), maxps(q1, q3)).
            let q = max_ps(hi, lo);
            let t = max_ps(q, vextq_f32::<2>(q, q));
            let amax = c_max(vgetq_lane_f32::<0>(t), vgetq_lane_f32::<1>(t));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };

            let (lo_lim, hi_lim) = (vdupq_n_f32(-2_147_483_648.0), vdupq_n_f32(2_147_483_648.0));
            let indefinite = vdupq_n_s32(i32::MIN);
            let i: [int32x4_t; 8] = std::array::from_fn(|k| {
                let p = vmulq_n_f32(v[k], id);
                let in_range = vandq_u32(vcgeq_f32(p, lo_lim), vcltq_f32(p, hi_lim));
                vbslq_s32(in_range, vcvtnq_s32_f32(p), indefinite)
            });
            let pack = |a: int32x4_t, b: int32x4_t, c: int32x4_t, d: int32x4_t| {
                let ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
                let cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
                vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd))
            };
            let mut qs = [0i8; QK32];
            vst1q_s8(qs.as_mut_ptr(), pack(i[0], i[1], i[2], i[3]));
            vst1q_s8(qs.as_mut_ptr().add(16), pack(i[4], i[5], i[6], i[7]));
            *b = BlockQ8_0 {
                d: F16::from_f32(d),
                qs,
            };
        }
    }
}

/// [`f16x4_to_f32`], for the test against [`F16::to_f32`].
#[cfg(test)]
pub(super) fn f16x4_to_f32_array(h: [F16; 4]) -> [f32; 4] {
    // SAFETY: NEON is always present on aarch64.
    unsafe { f16x4_to_f32(h) }
}

/// [`f16x8_to_f32`] on an array, for the test against [`F16::to_f32`].
#[cfg(test)]
pub(super) fn f16x8_to_f32_array(h: [F16; 8]) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: NEON is always present on aarch64; the loads read `h` (eight u16s, F16 is a
    // transparent u16) and the stores write exactly `out`.
    unsafe {
        let (lo, hi) = f16x8_to_f32(vld1q_u16(h.as_ptr() as *const u16));
        vst1q_f32(out.as_mut_ptr(), lo);
        vst1q_f32(out.as_mut_ptr().add(4), hi);
    }
    out
}

// Safe wrappers for the tables. NEON is part of the aarch64 baseline (the Rust target
// enables it), so the `neon` ones need no check; `kernels.rs` puts the `dotprod` ones
// only in the table it hands out after detecting the feature.

pub(super) fn q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q4_0_q8_0_neon(x, y) }
}

pub(super) fn q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q8_0_q8_0_neon(x, y) }
}

pub(super) fn q4_0_q8_0_sdot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { q4_0_q8_0_dotprod(x, y) }
}

pub(super) fn q8_0_q8_0_sdot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { q8_0_q8_0_dotprod(x, y) }
}

pub(super) fn q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q4_1_q8_1_neon(x, y) }
}

pub(super) fn q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q5_0_q8_0_neon(x, y) }
}

pub(super) fn q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { q5_1_q8_1_neon(x, y) }
}

pub(super) fn iq4_nl_q8_0(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { iq4_nl_q8_0_neon(x, y) }
}

pub(super) fn f32_f32(x: &[BlockF32], y: &[BlockF32]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { f32_f32_neon(x, y) }
}

pub(super) fn f16_f16(x: &[BlockF16], y: &[BlockF16]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { f16_f16_neon(x, y) }
}

pub(super) fn bf16_bf16(x: &[BlockBf16], y: &[BlockBf16]) -> f32 {
    // SAFETY: NEON is always present on aarch64.
    unsafe { bf16_bf16_neon(x, y) }
}

pub(super) fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    // SAFETY: NEON is always present on aarch64.
    unsafe { quantize_q8_0_neon(x, out) }
}

pub(super) fn q4_1_q8_1_sdot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { q4_1_q8_1_dotprod(x, y) }
}

pub(super) fn q5_0_q8_0_sdot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { q5_0_q8_0_dotprod(x, y) }
}

pub(super) fn q5_1_q8_1_sdot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { q5_1_q8_1_dotprod(x, y) }
}

pub(super) fn iq4_nl_q8_0_sdot(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: only in the dotprod table, handed out after detecting the feature.
    unsafe { iq4_nl_q8_0_dotprod(x, y) }
}
