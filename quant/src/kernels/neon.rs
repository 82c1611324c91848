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

use crate::formats::{BlockQ4_0, BlockQ8_0};

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
unsafe fn q4_0_quants(x: &BlockQ4_0) -> (int8x16_t, int8x16_t) {
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
unsafe fn q8_0_quants(y: &BlockQ8_0) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is 32 readable bytes.
    unsafe { (vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16))) }
}

/// Q4_0 × Q8_0: per block the exact integer sum, then [`crate::formats::q4_0::vec_dot`]'s
/// float step, `sumi * d_x * d_y`.
#[target_feature(enable = "neon")]
unsafe fn q4_0_q8_0_neon(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        let sumi = unsafe {
            let (xl, xh) = q4_0_quants(x);
            let (yl, yh) = q8_0_quants(y);
            let acc = dot_i8x16(dot_i8x16(vdupq_n_s32(0), xl, yl), xh, yh);
            vaddvq_s32(acc)
        };
        sumf += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sumf
}

/// [`q4_0_q8_0_neon`] with `sdot`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_0_q8_0_dotprod(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only instructions and in-bounds loads of whole blocks.
        let sumi = unsafe {
            let (xl, xh) = q4_0_quants(x);
            let (yl, yh) = q8_0_quants(y);
            vaddvq_s32(sdot(sdot(vdupq_n_s32(0), xl, yl), xh, yh))
        };
        sumf += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sumf
}

/// Q8_0 × Q8_0: per block the exact integer sum, then `sumi * (d_x * d_y)`.
#[target_feature(enable = "neon")]
unsafe fn q8_0_q8_0_neon(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only intrinsics and in-bounds loads of whole blocks.
        let sumi = unsafe {
            let (xl, xh) = q8_0_quants(x);
            let (yl, yh) = q8_0_quants(y);
            vaddvq_s32(dot_i8x16(dot_i8x16(vdupq_n_s32(0), xl, yl), xh, yh))
        };
        sumf += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sumf
}

/// [`q8_0_q8_0_neon`] with `sdot`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q8_0_q8_0_dotprod(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        // SAFETY: register-only instructions and in-bounds loads of whole blocks.
        let sumi = unsafe {
            let (xl, xh) = q8_0_quants(x);
            let (yl, yh) = q8_0_quants(y);
            vaddvq_s32(sdot(sdot(vdupq_n_s32(0), xl, yl), xh, yh))
        };
        sumf += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sumf
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
