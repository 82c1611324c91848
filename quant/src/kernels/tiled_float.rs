//! A batch of activation rows times an F16 or BF16 weight matrix in tiles (activation
//! rows in the same float type), on AVX2 + FMA + F16C.
//!
//! Row by row ([`super::Kernels::matmul`]'s plain loop) `avx2::f16_f16` / `bf16_bf16`
//! widen both rows to f32 again for every pair and run one pair's fma chains at a time.
//! Here a tile of [`TILE_ROWS`] weight rows is widened once per block of activation rows,
//! the block's activation rows once, and each step runs the chains of [`W_STEP`] weight
//! rows x up to [`ACT_STEP`] activation rows together, so each loaded vector feeds several
//! products. The AVX-512 table runs the same step with AVX-512 VL's 32 ymm registers and
//! [`W_STEP_VL`] weight rows (`gemm_bench 4096 4096 128`, one thread, F16: 20.5 MAC/ns
//! against 16.0 with two rows; the row kernels: about 4 to 5).
//!
//! The result is bit for bit the row kernel's. That kernel keeps four accumulators of
//! eight f32 lanes: accumulator j takes elements `32s + 8j..32s + 8j + 8` of each
//! 32-element step s, one fma each, in s order; F16 then adds each remaining 8-element
//! step to accumulator 0 (BF16 has no such steps); the four are combined as
//! `(acc0 + acc2) + (acc1 + acc3)` and summed by ggml's horizontal sum; the scalar tail
//! is added in f32 (F16) or in f64 (BF16). Each accumulator is its own fma chain, so here
//! every pair's chain 0 runs before any chain 1, and so on; the widened rows are laid out
//! chain by chain ([`Chains`]) so that each chain reads contiguous memory.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::avx2::{hsum_f32x8, load_bf16x8};
use super::tiled::{act_block_rows, by_act_rows, operands, store, BatchShape, Operands, Visit};
use super::tiled::{TiledIsa, WeightBlocks, Weights};
use crate::formats::{BlockBf16, BlockF16};
use crate::{BlockFormat, QuantError};

/// Weight rows widened together.
const TILE_ROWS: usize = 4;
/// Weight rows per step on AVX2: 2 x 4 accumulators, two weight vectors and one
/// activation vector in the 16 ymm registers.
const W_STEP: usize = 2;
/// Weight rows per step with AVX-512 VL's 32 ymm registers: 4 x 4 accumulators.
const W_STEP_VL: usize = 4;
/// Activation rows per step.
const ACT_STEP: usize = 4;
const _: () = assert!(TILE_ROWS.is_multiple_of(W_STEP) && TILE_ROWS.is_multiple_of(W_STEP_VL));

/// Widened activation bytes held while the weight tiles pass over them: a quarter of one
/// core's L2, so the block and the tile stay there (f32 rows are 2x their F16/BF16 size
/// and every step reads them from L2). `gemm_bench 4096 4096 128`, one thread, F16 (BF16)
/// MAC/ns on AVX2: 1 MB 7.1 (6.5), 256 kB 13.8 (12.1), 128 kB 11.7 (7.9); noisy, shared
/// machine.
const FLOAT_ACT_BLOCK_BYTES: usize = 1 << 18;

/// The float formats with an AVX2 row kernel, as that kernel reads them.
pub(super) trait FloatRow: BlockFormat {
    /// Whether the row kernel follows its 32-element steps with 8-element steps into
    /// accumulator 0 (F16) or goes straight to the scalar tail (BF16).
    const EIGHT_STEPS: bool;
    /// Eight elements from `p`, widened to f32.
    ///
    /// # Safety
    /// `p` must be valid for reading eight elements; the CPU must have AVX2 and F16C.
    unsafe fn widen8(p: *const Self) -> __m256;
    /// One element as f32 (the same value `widen8` gives).
    fn to_f32(&self) -> f32;
    /// The row kernel's result from its horizontal sum and its tail elements.
    fn add_tail(sum: f32, w: &[f32], a: &[f32]) -> f32;
}

impl FloatRow for BlockF16 {
    const EIGHT_STEPS: bool = true;
    #[inline(always)]
    unsafe fn widen8(p: *const Self) -> __m256 {
        // SAFETY: eight readable halves at p (BlockF16 is one u16) and F16C per the caller.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    fn to_f32(&self) -> f32 {
        self.v.to_f32()
    }
    fn add_tail(mut sum: f32, w: &[f32], a: &[f32]) -> f32 {
        for (x, y) in w.iter().zip(a) {
            sum += x * y;
        }
        sum
    }
}

impl FloatRow for BlockBf16 {
    const EIGHT_STEPS: bool = false;
    #[inline(always)]
    unsafe fn widen8(p: *const Self) -> __m256 {
        // SAFETY: eight readable bf16 at p (BlockBf16 is one u16) and AVX2 per the caller.
        unsafe { load_bf16x8(p.cast()) }
    }
    fn to_f32(&self) -> f32 {
        self.v.to_f32()
    }
    fn add_tail(sum: f32, w: &[f32], a: &[f32]) -> f32 {
        let mut sum = sum as f64;
        for (x, y) in w.iter().zip(a) {
            sum += (x * y) as f64;
        }
        sum as f32
    }
}

/// A row of `n` elements widened and reordered by fma chain: chain 0's vectors (its
/// 32-element steps, then the 8-element steps), then those of chains 1, 2 and 3, then the
/// scalar tail in element order. A permutation of the row: `n` floats.
#[derive(Clone, Copy)]
struct Chains {
    n: usize,
    /// 32-element steps.
    steps: usize,
    /// 8-element steps after them (F16 only).
    eight_steps: usize,
}

impl Chains {
    fn new<W: FloatRow>(n: usize) -> Self {
        let steps = n / 32;
        let eight_steps = if W::EIGHT_STEPS {
            (n - 32 * steps) / 8
        } else {
            0
        };
        Chains {
            n,
            steps,
            eight_steps,
        }
    }

    /// The first float and the number of vectors of chain `j` in a widened row.
    fn chain(&self, j: usize) -> (usize, usize) {
        let chain0 = self.steps + self.eight_steps;
        match j {
            0 => (0, chain0),
            _ => (8 * (chain0 + (j - 1) * self.steps), self.steps),
        }
    }

    /// Where the scalar tail starts, in the row and in its widened form alike.
    fn tail(&self) -> usize {
        32 * self.steps + 8 * self.eight_steps
    }

    /// The element of the row that vector `v` of chain `j` starts at.
    fn source(&self, j: usize, v: usize) -> usize {
        if v < self.steps {
            32 * v + 8 * j
        } else {
            32 * self.steps + 8 * (v - self.steps)
        }
    }
}

/// Per-thread buffers, grown once and reused.
#[derive(Default)]
struct Scratch {
    /// The widened tile: TILE_ROWS rows of n floats.
    w: Vec<f32>,
    /// The widened activation rows of the current block, n floats each.
    act: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)` for the `n_tile` rows in `w` (whole
/// rows of `n_cols` elements) and every activation row, as the AVX2 row kernel computes
/// each. Inputs already validated by [`super::Kernels::matmul`]; the CPU must run the
/// AVX2 table (AVX2, FMA, F16C): the caller holds a table handed out after detection.
pub(super) fn matmul<W: FloatRow>(
    isa: TiledIsa,
    w: &[u8],
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
    block_bytes: usize,
) -> Result<(), QuantError> {
    let Operands {
        w,
        act,
        n_tile,
        n_act,
        ..
    } = operands::<W, W>(Weights::Rows(w), act, n_cols)?;
    let WeightBlocks::Rows(w) = w else {
        unreachable!("float weights are never packed")
    };
    let (n, ch) = (n_cols, Chains::new::<W>(n_cols));
    let block = act_block_rows(block_bytes.min(FLOAT_ACT_BLOCK_BYTES), n * 4);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        s.w.resize(TILE_ROWS * n, 0.0);
        s.act.resize(block.min(n_act) * n, 0.0);
        // The activation rows now widened in s.act.
        let mut widened = 0..0;
        let shape = BatchShape {
            n_act,
            n_tile,
            tile_rows: TILE_ROWS,
            act_step: ACT_STEP,
            block,
        };
        shape.visit(|v| match v {
            Visit::Tile { r0, rows } => {
                let (tile, padding) = s.w.split_at_mut(rows * n);
                // SAFETY: the caller guarantees AVX2, FMA and F16C.
                unsafe { widen_rows(&w[r0 * n..(r0 + rows) * n], ch, tile) };
                // Padding rows: zeros, results discarded.
                padding.fill(0.0);
            }
            Visit::Acts { a0, acts, r0, rows } => {
                // A block's first step: widen its rows.
                if !widened.contains(&a0) {
                    widened = a0..(a0 + block).min(n_act);
                    let rows = &act[widened.start * n..widened.end * n];
                    // SAFETY: the caller guarantees AVX2, FMA and F16C.
                    unsafe { widen_rows(rows, ch, &mut s.act[..rows.len()]) };
                }
                let a = &s.act[(a0 - widened.start) * n..][..acts * n];
                let mut sums = [[0f32; TILE_ROWS]; ACT_STEP];
                // SAFETY: the caller guarantees AVX2 and FMA.
                unsafe {
                    if isa == TiledIsa::Avx512Vnni {
                        by_act_rows!(acts, |C| float_tile_vl::<W, C>(&s.w, a, ch, &mut sums))
                    } else {
                        by_act_rows!(acts, |C| float_tile::<W, C>(&s.w, a, ch, &mut sums))
                    }
                };
                store(out, n_tile, a0, r0, rows, &sums[..acts]);
            }
        });
    });
    Ok(())
}

/// Rows of `ch.n` elements widened into `out` in [`Chains`] order.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_rows<W: FloatRow>(rows: &[W], ch: Chains, out: &mut [f32]) {
    for (row, out) in rows.chunks_exact(ch.n).zip(out.chunks_exact_mut(ch.n)) {
        let mut at = 0;
        for j in 0..4 {
            for v in 0..ch.chain(j).1 {
                let src = &row[ch.source(j, v)..][..8];
                let dst = &mut out[at..at + 8];
                // SAFETY: eight elements read, eight floats written; features per the caller.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), W::widen8(src.as_ptr())) };
                at += 8;
            }
        }
        debug_assert_eq!(at, ch.tail());
        for (o, x) in out[at..].iter_mut().zip(&row[at..]) {
            *o = x.to_f32();
        }
    }
}

/// Every tile row against the `C` widened activation rows in `act`: `sums[c][r]`, `R`
/// weight rows a step.
#[inline(always)]
unsafe fn float_tile_body<W: FloatRow, const R: usize, const C: usize>(
    tile: &[f32],
    act: &[f32],
    ch: Chains,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    let n = ch.n;
    for r0 in (0..TILE_ROWS).step_by(R) {
        // SAFETY: register-only.
        let mut acc = [[[unsafe { _mm256_setzero_ps() }; R]; C]; 4];
        for (j, acc) in acc.iter_mut().enumerate() {
            let (at, len) = ch.chain(j);
            let mut w = [std::ptr::null(); R];
            for (i, w) in w.iter_mut().enumerate() {
                *w = tile[(r0 + i) * n + at..][..8 * len].as_ptr();
            }
            let mut a = [std::ptr::null(); C];
            for (c, a) in a.iter_mut().enumerate() {
                *a = act[c * n + at..][..8 * len].as_ptr();
            }
            // SAFETY: each pointer starts 8 * len readable floats (sliced just above).
            *acc = unsafe { chain(w, a, len) };
        }
        let tail = ch.tail()..n;
        for (c, sums) in sums.iter_mut().take(C).enumerate() {
            for i in 0..R {
                let (a0, a1, a2, a3) = (acc[0][c][i], acc[1][c][i], acc[2][c][i], acc[3][c][i]);
                // SAFETY: register-only AVX, per the caller.
                let v = unsafe { _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)) };
                let w_tail = &tile[(r0 + i) * n..][tail.clone()];
                let a_tail = &act[c * n..][tail.clone()];
                // SAFETY: AVX2 per the caller.
                sums[r0 + i] = W::add_tail(unsafe { hsum_f32x8(v) }, w_tail, a_tail);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn float_tile<W: FloatRow, const C: usize>(
    tile: &[f32],
    act: &[f32],
    ch: Chains,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: AVX2 and FMA enabled here.
    unsafe { float_tile_body::<W, W_STEP, C>(tile, act, ch, sums) }
}

/// [`float_tile`] with 32 ymm registers (EVEX encoding, the same operations and bits).
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn float_tile_vl<W: FloatRow, const C: usize>(
    tile: &[f32],
    act: &[f32],
    ch: Chains,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: AVX2, FMA and AVX-512 VL enabled here.
    unsafe { float_tile_body::<W, W_STEP_VL, C>(tile, act, ch, sums) }
}

/// One fma chain of every (weight row, activation row) pair: `len` vectors from each row,
/// in order, each pair's products into its own accumulator.
///
/// # Safety
/// Every pointer must start `8 * len` readable floats; the CPU must have AVX2 and FMA.
#[inline(always)]
unsafe fn chain<const R: usize, const C: usize>(
    w: [*const f32; R],
    a: [*const f32; C],
    len: usize,
) -> [[__m256; R]; C] {
    // SAFETY: register-only.
    let mut acc = [[unsafe { _mm256_setzero_ps() }; R]; C];
    for v in 0..len {
        // SAFETY: register-only.
        let mut wv = [unsafe { _mm256_setzero_ps() }; R];
        for (wv, w) in wv.iter_mut().zip(w) {
            // SAFETY: v < len vectors of the row, per the caller.
            *wv = unsafe { _mm256_loadu_ps(w.add(8 * v)) };
        }
        for (acc, a) in acc.iter_mut().zip(a) {
            // SAFETY: as above.
            let av = unsafe { _mm256_loadu_ps(a.add(8 * v)) };
            for (acc, wv) in acc.iter_mut().zip(wv) {
                // SAFETY: FMA per the caller.
                *acc = unsafe { _mm256_fmadd_ps(wv, av, *acc) };
            }
        }
    }
    acc
}
