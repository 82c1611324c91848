//! Batch kernels for aarch64 with `smmla` (Armv8.6 int8 matrix multiply, the `i8mm`
//! feature: Graviton 3 and later, Apple M2 and later, Neoverse V1/N2), for the formats
//! whose reference sums each 32-element (sub-)block's products into one integer before
//! its float step: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL against Q8_0/Q8_1, and IQ4_XS
//! against Q8_K (eight such sub-blocks per super-block). Q2_K, the other format the
//! `dotprod` table runs with `sdot`, folds a scale per 16 elements into its integer sum
//! and adds a per-pair minimum term, so it stays on the row kernel here.
//!
//! `smmla` multiplies a 2x8 matrix of signed bytes by an 8x2 one into a 2x2 tile of i32
//! lanes: with two weight rows' bytes in one register and two activation rows' bytes in
//! another, one instruction adds eight products to each of four dots. A 32-weight block
//! is four such steps, so four instructions give the exact integer sums of four (weight
//! row, activation row) pairs, where the `dotprod` row kernel needs two `sdot` and a
//! horizontal add per pair (twelve). The integer sum of a block is exact in any order, so
//! it is the reference's `sumi`; the float step then runs on the four pairs as four
//! lanes, each lane doing the reference's operations in its order (no fused multiply-add),
//! so every result is bit for bit the scalar reference's, like the row kernels in
//! `neon.rs`.
//!
//! Two weight rows are decoded once into the interleaved layout (per unit four vectors,
//! bytes 8j..8j+8 of row 0 then of row 1) with their scales widened, and dotted with every
//! pair of activation rows, which are interleaved the same way once per call. An odd last
//! weight row or activation row is paired with a zero padding row whose results are
//! dropped (the lanes do not mix, so the real lane is unaffected).
//!
//! Instruction counts (Debian's rustc 1.96, release, disassembled): the Q4_0 tile's loop
//! is 17 instructions per block for four dots (four `smmla`, six loads, a conversion,
//! three float operations, loop control), where the `dotprod` row kernel's is 23 per
//! block for one dot (decoding included, which the row loop repeats for every activation
//! row): 17 against 92 for the same four dots, before the weight decoding here, which is
//! shared by every activation pair.
//!
//! Repacking at load (two rows' blocks stored interleaved, as `packed.rs` does for x86)
//! would save only the four `zip`s per unit of that shared decoding, which runs once per
//! weight-row pair and activation block: at 8 activation rows that is 4 instructions
//! against 4 x 17 for the tiles, at 64 rows against 32 x 17. It does not pay, so the rows
//! are read as they are.
//!
//! Safety: the `unsafe fn`s marked `i8mm` need the instruction; [`matmul`] is reached only
//! from the `i8mm` table, which `kernels.rs` hands out after detecting the feature.

// As in neon.rs: intrinsics inside a `#[target_feature]` fn are safe calls, so some
// `unsafe` blocks hold nothing unsafe; they stay to mark the loads in one place.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;
use std::arch::asm;
use std::cell::RefCell;

use super::{neon, neon_k};
use crate::formats::{
    BlockIq4Nl, BlockIq4Xs, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8K, BlockQ8_0,
    BlockQ8_1, KVALUES_IQ4NL, QK32,
};
use crate::{cast, BlockFormat, QuantError, F16};

/// A block's 32 quants in halves: elements 0..16 and 16..32 of a (sub-)block.
type Halves = (int8x16_t, int8x16_t);

/// `acc +` the 2x2 product of `a` and `b`, each two rows of eight signed bytes (bytes
/// 0..8 and 8..16): lane `2i + j` gains `a` row `i` · `b` row `j` (the `smmla`
/// instruction, written as inline assembly because its intrinsic is not stable yet).
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; the caller guarantees the i8mm feature.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Two halves widened with `fcvtl` (the row kernels' [`neon::f16x4_to_f32`], the
/// reference's values).
#[inline(always)]
fn widen(a: F16, b: F16) -> [f32; 2] {
    // SAFETY: NEON is always present on aarch64.
    let [a, b, _, _] = unsafe { neon::f16x4_to_f32([a, b, F16::ZERO, F16::ZERO]) };
    [a, b]
}

/// An activation format (Q8_0, Q8_1, Q8_K) in 32-element units.
pub(super) trait SmmlaAct: BlockFormat {
    /// Unit `u`'s quants, and the scale and (Q8_1) the scaled sum as f32 (zero where the
    /// format has none).
    ///
    /// # Safety
    /// NEON (always present on aarch64); `u < ELEMS / 32`.
    unsafe fn unit(&self, u: usize) -> (Halves, [f32; 2]);
}

impl SmmlaAct for BlockQ8_0 {
    #[inline(always)]
    unsafe fn unit(&self, _: usize) -> (Halves, [f32; 2]) {
        // SAFETY: NEON per the caller.
        (unsafe { neon::q8_0_quants(self) }, widen(self.d, F16::ZERO))
    }
}

impl SmmlaAct for BlockQ8_1 {
    #[inline(always)]
    unsafe fn unit(&self, _: usize) -> (Halves, [f32; 2]) {
        // SAFETY: NEON per the caller.
        (unsafe { neon::q8_1_quants(self) }, widen(self.d, self.s))
    }
}

impl SmmlaAct for BlockQ8K {
    #[inline(always)]
    unsafe fn unit(&self, u: usize) -> (Halves, [f32; 2]) {
        // SAFETY: bytes 32u..32u + 32 of the 256-byte `qs` (u < 8 per the caller).
        let q = unsafe {
            let p = self.qs.as_ptr().add(QK32 * u);
            (vld1q_s8(p), vld1q_s8(p.add(16)))
        };
        (q, [self.d, 0.0])
    }
}

/// Four f32 lanes, one per pair of the tile: lane `2i + j` is weight row `i` with
/// activation row `j`.
type Lanes = float32x4_t;

/// A weight format with an `smmla` batch kernel, in 32-element units (its blocks, or
/// IQ4_XS's sub-blocks) that each end in one float step.
pub(super) trait SmmlaWeight: BlockFormat {
    type Act: SmmlaAct;
    /// Unit `u`'s quants as the reference multiplies them, and two f32 factors of its
    /// float step: the scale and (Q4_1, Q5_1) the minimum or (IQ4_XS) the sub-block
    /// scale `ls - 32`; zero where the format has none.
    ///
    /// # Safety
    /// NEON (always present on aarch64); `u < ELEMS / 32`.
    unsafe fn unit(&self, u: usize) -> (Halves, [f32; 2]);
    /// The reference's `sumf += step` for one unit, in each lane: `sumi` the exact
    /// integer sums, `d_w`/`m_w` the weight's and `d_a`/`s_a` the activation's factors.
    ///
    /// # Safety
    /// NEON (always present on aarch64).
    unsafe fn step(sumi: Lanes, d_w: Lanes, m_w: Lanes, d_a: Lanes, s_a: Lanes) -> Lanes;
}

/// One [`SmmlaWeight`] impl: the row kernel's decoding from `neon.rs` and the reference's
/// float step, written as there (same operands, same order, products then sums).
macro_rules! smmla_weight {
    ($W:ty, $A:ty, $quants:path, |$x:ident| $d_m:expr,
     |$sumi:ident, $dw:ident, $mw:ident, $da:ident, $sa:ident| $step:expr) => {
        impl SmmlaWeight for $W {
            type Act = $A;
            #[inline(always)]
            unsafe fn unit(&self, _: usize) -> (Halves, [f32; 2]) {
                let $x = self;
                let [d, m] = $d_m;
                // SAFETY: NEON per the caller.
                (unsafe { $quants(self) }, widen(d, m))
            }
            #[inline(always)]
            #[allow(unused_variables)]
            unsafe fn step($sumi: Lanes, $dw: Lanes, $mw: Lanes, $da: Lanes, $sa: Lanes) -> Lanes {
                // SAFETY: register-only intrinsics; NEON per the caller.
                unsafe { $step }
            }
        }
    };
}

smmla_weight!(
    BlockQ4_0,
    BlockQ8_0,
    neon::q4_0_quants,
    |x| [x.d, F16::ZERO],
    // q4_0::vec_dot: sumi as f32 * d_x * d_y
    |sumi, dw, mw, da, sa| vmulq_f32(vmulq_f32(sumi, dw), da)
);
smmla_weight!(
    BlockQ8_0,
    BlockQ8_0,
    neon::q8_0_quants,
    |x| [x.d, F16::ZERO],
    // q8_0::vec_dot: sumi as f32 * (d_x * d_y)
    |sumi, dw, mw, da, sa| vmulq_f32(sumi, vmulq_f32(dw, da))
);
smmla_weight!(
    BlockQ5_0,
    BlockQ8_0,
    neon::q5_0_quants,
    |x| [x.d, F16::ZERO],
    // q5_0::vec_dot: (d_x * d_y) * sumi
    |sumi, dw, mw, da, sa| vmulq_f32(vmulq_f32(dw, da), sumi)
);
smmla_weight!(
    BlockIq4Nl,
    BlockQ8_0,
    neon::iq4_nl_quants,
    |x| [x.d, F16::ZERO],
    // iq4_nl::vec_dot: (d_y * d_x) * sumi
    |sumi, dw, mw, da, sa| vmulq_f32(vmulq_f32(da, dw), sumi)
);
smmla_weight!(
    BlockQ4_1,
    BlockQ8_1,
    neon::q4_1_quants,
    |x| [x.d, x.m],
    // q4_1::vec_dot: (d_x * d_y) * sumi + m_x * s_y
    |sumi, dw, mw, da, sa| vaddq_f32(vmulq_f32(vmulq_f32(dw, da), sumi), vmulq_f32(mw, sa))
);
smmla_weight!(
    BlockQ5_1,
    BlockQ8_1,
    neon::q5_1_quants,
    |x| [x.d, x.m],
    // q5_1::vec_dot: (d_x * d_y) * sumi + m_x * s_y
    |sumi, dw, mw, da, sa| vaddq_f32(vmulq_f32(vmulq_f32(dw, da), sumi), vmulq_f32(mw, sa))
);

impl SmmlaWeight for BlockIq4Xs {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn unit(&self, u: usize) -> (Halves, [f32; 2]) {
        // SAFETY: the table is 16 readable bytes; `u < 8` per the caller; NEON likewise.
        let q = unsafe { neon_k::iq4_xs_values(self, u, vld1q_s8(KVALUES_IQ4NL.as_ptr())) };
        // `ls - 32` is in -32..=31, exact in f32.
        (q, [self.d.to_f32(), (self.scale(u) - 32) as f32])
    }
    #[inline(always)]
    unsafe fn step(sumi: Lanes, dw: Lanes, ls: Lanes, da: Lanes, _: Lanes) -> Lanes {
        // iq4_xs::vec_dot: d4d8 = d_x * d_y; dl = d4d8 * (ls - 32); dl * sumi. Recomputing
        // d4d8 per sub-block gives the same bits as the reference's once per super-block.
        // SAFETY: register-only intrinsics; NEON per the caller.
        unsafe { vmulq_f32(vmulq_f32(vmulq_f32(dw, da), ls), sumi) }
    }
}

/// One unit of two rows, interleaved for `smmla`: vector `j` holds elements 8j..8j+8 of
/// the first row, then of the second.
type PairQuants = [i8; 4 * 16];

/// A pair of rows' two factors of one unit as two f32 lane vectors (which row goes to
/// which lane depends on the side of the tile, see [`spread`]).
type PairScales = [[f32; 4]; 2];

/// Interleave two rows' block quants (halves as the decoders return them) into `out`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn interleave(r0: Halves, r1: Halves, out: &mut PairQuants) {
    // SAFETY: four 16-byte stores into the 64-byte array; register-only otherwise.
    unsafe {
        let zip = |a: int8x16_t, b: int8x16_t| {
            let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
            (
                vreinterpretq_s8_s64(vzip1q_s64(a, b)),
                vreinterpretq_s8_s64(vzip2q_s64(a, b)),
            )
        };
        let (v0, v1) = zip(r0.0, r1.0);
        let (v2, v3) = zip(r0.1, r1.1);
        let p = out.as_mut_ptr();
        vst1q_s8(p, v0);
        vst1q_s8(p.add(16), v1);
        vst1q_s8(p.add(32), v2);
        vst1q_s8(p.add(48), v3);
    }
}

/// Two rows' (first, second) factors spread over the tile's lanes: a weight side
/// (`WEIGHT`) gives lanes `[r0, r0, r1, r1]`, an activation side `[r0, r1, r0, r1]` (lane
/// `2i + j` is weight row `i`, activation row `j`).
#[inline(always)]
fn spread<const WEIGHT: bool>([a0, b0]: [f32; 2], [a1, b1]: [f32; 2]) -> PairScales {
    if WEIGHT {
        [[a0, a0, a1, a1], [b0, b0, b1, b1]]
    } else {
        [[a0, a1, a0, a1], [b0, b1, b0, b1]]
    }
}

/// Rows `2p` and `2p + 1` of `rows` (`k` blocks per row; a missing second row is zero
/// padding) into `quants` and `scales`, one entry per 32-element unit.
#[target_feature(enable = "neon")]
unsafe fn prepare_pair<B: BlockFormat, const WEIGHT: bool>(
    rows: &[B],
    k: usize,
    p: usize,
    quants: &mut [PairQuants],
    scales: &mut [PairScales],
    decode: impl Fn(&B, usize) -> (Halves, [f32; 2]),
) {
    let units = B::ELEMS / QK32;
    let first = &rows[2 * p * k..(2 * p + 1) * k];
    let second = rows.get((2 * p + 1) * k..(2 * p + 2) * k);
    // SAFETY: NEON per the caller.
    unsafe {
        let zero = ((vdupq_n_s8(0), vdupq_n_s8(0)), [0.0; 2]);
        for (i, (q, s)) in quants.iter_mut().zip(scales.iter_mut()).enumerate() {
            let (b, u) = (i / units, i % units);
            let (q0, f0) = decode(&first[b], u);
            let (q1, f1) = second.map_or(zero, |r| decode(&r[b], u));
            interleave(q0, q1, q);
            *s = spread::<WEIGHT>(f0, f1);
        }
    }
}

/// The four dots of a tile (two weight rows, two activation rows), over every unit.
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile<W: SmmlaWeight>(
    w_q: &[PairQuants],
    w_dm: &[PairScales],
    a_q: &[PairQuants],
    a_ds: &[PairScales],
) -> [f32; 4] {
    // SAFETY: loads of whole 64-byte and 16-byte arrays; i8mm per the caller.
    unsafe {
        let mut sumf = vdupq_n_f32(0.0);
        for (((wq, wdm), aq), ads) in w_q.iter().zip(w_dm).zip(a_q).zip(a_ds) {
            let mut acc = vdupq_n_s32(0);
            for j in 0..4 {
                let wv = vld1q_s8(wq.as_ptr().add(16 * j));
                let av = vld1q_s8(aq.as_ptr().add(16 * j));
                acc = smmla(acc, wv, av);
            }
            // `vcvtq_f32_s32` rounds to nearest, as `sumi as f32` does.
            let step = W::step(
                vcvtq_f32_s32(acc),
                vld1q_f32(wdm[0].as_ptr()),
                vld1q_f32(wdm[1].as_ptr()),
                vld1q_f32(ads[0].as_ptr()),
                vld1q_f32(ads[1].as_ptr()),
            );
            sumf = vaddq_f32(sumf, step);
        }
        let mut out = [0f32; 4];
        vst1q_f32(out.as_mut_ptr(), sumf);
        out
    }
}

/// The prepared rows a call reuses: one pair of weight rows, every activation pair.
#[derive(Default)]
struct Scratch {
    w_q: Vec<PairQuants>,
    w_dm: Vec<PairScales>,
    a_q: Vec<PairQuants>,
    a_ds: Vec<PairScales>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)` for the `n_tile` rows in `w` (whole
/// rows of `n_cols` elements) and every activation row, bit for bit the scalar
/// reference's. The activation pairs are taken in blocks of at most `block_bytes`
/// prepared bytes, each of which every pair of weight rows passes over (decoded again per
/// block). Inputs already validated by [`super::Kernels::matmul`]; reached only from the
/// `i8mm` table, handed out after detecting the feature.
pub(super) fn matmul<W: SmmlaWeight>(
    w: &[u8],
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
    block_bytes: usize,
) -> Result<(), QuantError> {
    const { assert!(W::ELEMS == <W::Act as BlockFormat>::ELEMS && W::ELEMS % QK32 == 0) };
    let w = cast::as_blocks::<W>(w)?;
    let act = cast::as_blocks::<W::Act>(act)?;
    let k = n_cols / W::ELEMS;
    let units = n_cols / QK32;
    let (n_tile, n_act) = (w.len() / k, act.len() / k);
    let act_pairs = n_act.div_ceil(2);
    let pair_bytes = units * (size_of::<PairQuants>() + size_of::<PairScales>());
    let block_pairs = (block_bytes / pair_bytes).max(1);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        s.w_q.resize(units, [0; 64]);
        s.w_dm.resize(units, [[0.0; 4]; 2]);
        s.a_q.resize(act_pairs * units, [0; 64]);
        s.a_ds.resize(act_pairs * units, [[0.0; 4]; 2]);
        // NEON is always present on aarch64; `prepare_pair` passes units below ELEMS / 32.
        let act_decode = |b: &W::Act, u| {
            // SAFETY: as above.
            unsafe { b.unit(u) }
        };
        let w_decode = |b: &W, u| {
            // SAFETY: as above.
            unsafe { b.unit(u) }
        };
        let a_pairs = s
            .a_q
            .chunks_exact_mut(units)
            .zip(s.a_ds.chunks_exact_mut(units));
        for (p, (q, ds)) in a_pairs.enumerate() {
            // SAFETY: NEON is always present on aarch64.
            unsafe { prepare_pair::<_, false>(&act, k, p, q, ds, act_decode) };
        }
        for p0 in (0..act_pairs).step_by(block_pairs) {
            for r in 0..n_tile.div_ceil(2) {
                // SAFETY: NEON is always present on aarch64.
                unsafe { prepare_pair::<_, true>(&w, k, r, &mut s.w_q, &mut s.w_dm, w_decode) };
                for p in p0..act_pairs.min(p0 + block_pairs) {
                    let pair = p * units..(p + 1) * units;
                    // SAFETY: only the i8mm table reaches here, handed out after
                    // detecting the feature.
                    let dots =
                        unsafe { tile::<W>(&s.w_q, &s.w_dm, &s.a_q[pair.clone()], &s.a_ds[pair]) };
                    for (lane, dot) in dots.into_iter().enumerate() {
                        let (row, a) = (2 * r + lane / 2, 2 * p + lane % 2);
                        if row < n_tile && a < n_act {
                            out[a * n_tile + row] = dot;
                        }
                    }
                }
            }
        }
    });
    Ok(())
}
