//! A batch of activation rows times a weight matrix in tiles, for the formats whose
//! activation partner is Q8_0 or Q8_1 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL).
//!
//! Row by row ([`super::Kernels::matmul`]'s plain loop) every dot decodes its weight
//! blocks again — for Q5_0 the decoding costs more than the products. Here a tile of
//! [`TILE_ROWS`] weight rows is decoded once into signed bytes plus f32 scales (the
//! "packed" tile), then dotted with every activation row, several weight rows and several
//! activation rows at a time so each loaded vector feeds more than one product.
//!
//! Every product is computed exactly as the table's own row kernel computes it, so the
//! result is bit for bit that of `vec_dot`: per 32-element block the eight i32 lanes of
//! four-product sums (AVX2 `maddubs` + `madd`, or VNNI `dpbusd`, the same integers),
//! converted to f32, one `fma` by the f32 product `d_w * d_a` into eight f32 lanes in block
//! order, and ggml's horizontal sum at the end; for Q4_1/Q5_1 plus the scalar sum of
//! `m_w * s_a` in block order.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::avx2::hsum_f32x8;
use crate::formats::*;
use crate::{cast, BlockFormat, QuantError, F16};

/// Weight rows decoded together.
pub(super) const TILE_ROWS: usize = 4;

/// Which instructions the micro-kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TiledIsa {
    /// AVX2 + FMA, 16 vector registers: 2 weight rows x 4 activation rows per step.
    Avx2,
    /// AVX-512 VNNI, 32 registers of 512 bits: 4 x 4 per step, `dpbusd`.
    Avx512Vnni,
}

/// A weight block decoded to 32 signed bytes, its scale and (Q4_1, Q5_1) its minimum.
pub(super) trait Unpack: BlockFormat {
    /// Whether the format has a minimum (and the partner is Q8_1).
    const HAS_MIN: bool;
    /// The quants as the row kernel multiplies them, and (d, m) as f32.
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32);
}

impl Unpack for BlockQ4_0 {
    const HAS_MIN: bool = false;
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32) {
        for (j, &b) in self.qs.iter().enumerate() {
            q[j] = (b & 0xF) as i8 - 8;
            q[j + 16] = (b >> 4) as i8 - 8;
        }
        (self.d.to_f32(), 0.0)
    }
}

impl Unpack for BlockQ5_0 {
    const HAS_MIN: bool = false;
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32) {
        let qh = u32::from_le_bytes(self.qh);
        for (j, &b) in self.qs.iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            q[j] = ((b as u32 & 0xF) | h0) as i8 - 16;
            q[j + 16] = ((b as u32 >> 4) | h1) as i8 - 16;
        }
        (self.d.to_f32(), 0.0)
    }
}

impl Unpack for BlockQ8_0 {
    const HAS_MIN: bool = false;
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32) {
        *q = self.qs;
        (self.d.to_f32(), 0.0)
    }
}

impl Unpack for BlockIq4Nl {
    const HAS_MIN: bool = false;
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32) {
        for (j, &b) in self.qs.iter().enumerate() {
            q[j] = iq4_nl::KVALUES_IQ4NL[(b & 0xF) as usize];
            q[j + 16] = iq4_nl::KVALUES_IQ4NL[(b >> 4) as usize];
        }
        (self.d.to_f32(), 0.0)
    }
}

impl Unpack for BlockQ4_1 {
    const HAS_MIN: bool = true;
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32) {
        for (j, &b) in self.qs.iter().enumerate() {
            q[j] = (b & 0xF) as i8;
            q[j + 16] = (b >> 4) as i8;
        }
        (self.d.to_f32(), self.m.to_f32())
    }
}

impl Unpack for BlockQ5_1 {
    const HAS_MIN: bool = true;
    fn unpack(&self, q: &mut [i8; QK32]) -> (f32, f32) {
        let qh = u32::from_le_bytes(self.qh);
        for (j, &b) in self.qs.iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            q[j] = ((b as u32 & 0xF) | h0) as i8;
            q[j + 16] = ((b as u32 >> 4) | h1) as i8;
        }
        (self.d.to_f32(), self.m.to_f32())
    }
}

/// An activation block of the Q8 family: its quants and (d, s) as f32.
pub(super) trait Q8Act: BlockFormat {
    fn qs(&self) -> &[i8; QK32];
    /// d and s (zero for Q8_0) as stored.
    fn d_s(&self) -> [F16; 2];
}

impl Q8Act for BlockQ8_0 {
    fn qs(&self) -> &[i8; QK32] {
        &self.qs
    }
    fn d_s(&self) -> [F16; 2] {
        [self.d, F16::ZERO]
    }
}

impl Q8Act for BlockQ8_1 {
    fn qs(&self) -> &[i8; QK32] {
        &self.qs
    }
    fn d_s(&self) -> [F16; 2] {
        [self.d, self.s]
    }
}

/// Per-thread buffers, grown once and reused: a matmul on the token path allocates
/// nothing after the first call of its shape.
#[derive(Default)]
struct Scratch {
    /// The packed tile: TILE_ROWS rows of K blocks of 32 quants.
    q: Vec<[i8; QK32]>,
    /// Their (d, m), same order.
    dm: Vec<(f32, f32)>,
    /// (d, s) of every activation block, row-major.
    act_ds: Vec<(f32, f32)>,
    /// VNNI only: activation rows 2p and 2p + 1 side by side, per block (see
    /// [`PairBlock`]), row-major by pair.
    act_pairs: Vec<PairBlock>,
}

/// One block of two activation rows as the 512-bit tile loads them: quants, corrections
/// and scales of row 2p in the lower half, of row 2p + 1 (or 2p again, past the last
/// row) in the upper half.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PairBlock {
    q: [i8; 64],
    corr: [i32; 16],
    d: [f32; 16],
}

impl Default for PairBlock {
    fn default() -> PairBlock {
        PairBlock {
            q: [0; 64],
            corr: [0; 16],
            d: [0.0; 16],
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)` for the `n_tile` rows in `w` (whole
/// rows of `n_cols` elements) and every activation row, the activation rows taken in
/// blocks of at most `block_bytes` prepared bytes. Inputs already validated by
/// [`super::Kernels::matmul`]; `isa` must be supported by this CPU (the caller holds a
/// table that was handed out only after detection).
pub(super) fn matmul<W: Unpack, A: Q8Act>(
    isa: TiledIsa,
    w: &[u8],
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
    block_bytes: usize,
) -> Result<(), QuantError> {
    let w = cast::as_blocks::<W>(w)?;
    let act = cast::as_blocks::<A>(act)?;
    let k = n_cols / QK32;
    let n_tile = w.len() / k;
    let n_act = act.len() / k;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        s.q.resize(TILE_ROWS * k, [0; QK32]);
        s.dm.resize(TILE_ROWS * k, (0.0, 0.0));
        let vnni = isa == TiledIsa::Avx512Vnni;
        s.act_ds.resize(act.len(), (0.0, 0.0));
        s.act_pairs.resize(
            if vnni { n_act.div_ceil(2) * k } else { 0 },
            PairBlock::default(),
        );
        // SAFETY: the caller guarantees the CPU runs `isa` (F16C comes with both tables).
        unsafe {
            prepare_ds(&act, &mut s.act_ds);
            if vnni {
                prepare_pairs(&act, k, &s.act_ds, &mut s.act_pairs);
            }
        }
        // Activation rows in blocks whose layout stays in cache while every tile of weight
        // rows passes over it; each tile is decoded again per block. (A 14336-wide row
        // takes 43 KB laid out in pairs: 512 of them would not stay in L3.)
        let block = act_block_rows(block_bytes, k * std::mem::size_of::<PairBlock>() / 2);
        for ab in (0..n_act).step_by(block) {
            let ab_end = (ab + block).min(n_act);
            for r0 in (0..n_tile).step_by(TILE_ROWS) {
                let rows = TILE_ROWS.min(n_tile - r0);
                for (i, (q, dm)) in
                    s.q.chunks_exact_mut(k)
                        .zip(s.dm.chunks_exact_mut(k))
                        .enumerate()
                {
                    if i < rows {
                        let row = &w[(r0 + i) * k..][..k];
                        for ((q, dm), b) in q.iter_mut().zip(dm.iter_mut()).zip(row) {
                            *dm = b.unpack(q);
                            if vnni {
                                // Stored as unsigned w + 128 for dpbusd; see vnni512_tile.
                                q.iter_mut().for_each(|v| *v ^= i8::MIN);
                            }
                        }
                    } else {
                        // Padding rows: zero quants and scales, results discarded.
                        q.fill([0; QK32]);
                        dm.fill((0.0, 0.0));
                    }
                }
                let tile = Tile {
                    q: &s.q,
                    dm: &s.dm,
                    k,
                };
                let mut sums = [[0f32; TILE_ROWS]; ACT_STEP];
                for a0 in (ab..ab_end).step_by(ACT_STEP) {
                    let acts = ACT_STEP.min(ab_end - a0);
                    let ar = ActRows {
                        blocks: &act[a0 * k..(a0 + acts) * k],
                        ds: &s.act_ds[a0 * k..(a0 + acts) * k],
                        pairs: if vnni {
                            &s.act_pairs[a0 / 2 * k..(a0 + acts).div_ceil(2) * k]
                        } else {
                            &[]
                        },
                        k,
                    };
                    // SAFETY: the caller guarantees the CPU runs `isa`.
                    unsafe {
                        match (isa, W::HAS_MIN) {
                            (TiledIsa::Avx2, false) => avx2_tile::<A, false>(&tile, &ar, &mut sums),
                            (TiledIsa::Avx2, true) => avx2_tile::<A, true>(&tile, &ar, &mut sums),
                            (TiledIsa::Avx512Vnni, false) => {
                                vnni512_tile::<A, false>(&tile, &ar, &mut sums)
                            }
                            (TiledIsa::Avx512Vnni, true) => {
                                vnni512_tile::<A, true>(&tile, &ar, &mut sums)
                            }
                        }
                    }
                    for (a, s) in sums.iter().enumerate().take(acts) {
                        for (i, &v) in s.iter().enumerate().take(rows) {
                            out[(a0 + a) * n_tile + r0 + i] = v;
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// Widen each activation block's (d, s) to f32 with F16C.
#[inline(always)]
unsafe fn widen_d_s<A: Q8Act>(b: &A) -> (f32, f32) {
    let [d, s] = b.d_s();
    // SAFETY: register-only F16C conversion, reached only from functions enabling it.
    let v = unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128((d.0 as u32 | (s.0 as u32) << 16) as i32)) };
    // The same values F16::to_f32 gives (F16C widening is exact; tested in avx2.rs).
    // SAFETY: register-only SSE3.
    unsafe { (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v))) }
}

/// Each activation block's (d, s) as f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prepare_ds<A: Q8Act>(act: &[A], ds: &mut [(f32, f32)]) {
    for (b, ds) in act.iter().zip(ds) {
        // SAFETY: F16C per the caller.
        *ds = unsafe { widen_d_s(b) };
    }
}

/// The activation rows (`k` blocks each) in pairs for [`vnni512_tile`]: quants, the
/// `dpbusd` corrections `-128 * (sum of each four quants)` and the scales `ds`.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn prepare_pairs<A: Q8Act>(act: &[A], k: usize, ds: &[(f32, f32)], pairs: &mut [PairBlock]) {
    let last = act.len() / k - 1;
    for (p, pair) in pairs.chunks_exact_mut(k).enumerate() {
        for (b, pb) in pair.iter_mut().enumerate() {
            for (h, r) in [2 * p, (2 * p + 1).min(last)].into_iter().enumerate() {
                let qs = act[r * k + b].qs();
                pb.q[32 * h..32 * h + 32].copy_from_slice(qs);
                pb.d[8 * h..8 * h + 8].fill(ds[r * k + b].0);
                // SAFETY: the load reads the block's 32 quants, the store writes 8 of the
                // 16 i32 of `corr`; AVX-512 VNNI per the caller.
                unsafe {
                    let q = _mm256_loadu_si256(qs.as_ptr().cast());
                    let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), q);
                    let neg = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, 7));
                    _mm256_storeu_si256(pb.corr[8 * h..8 * h + 8].as_mut_ptr().cast(), neg);
                }
            }
        }
    }
}

/// Rows `first..first + N` of a row-major slice of `k`-element rows, row indices capped at
/// `last` (a step past the end repeats the last row). Not a closure inside the kernels: a
/// closure there carries their target features and then `from_fn` cannot inline it.
#[inline(always)]
pub(super) fn rows_of<T, const N: usize>(
    s: &[T],
    k: usize,
    first: usize,
    last: usize,
) -> [&[T]; N] {
    std::array::from_fn(|i| &s[(first + i).min(last) * k..][..k])
}

/// Activation rows handled per step.
const ACT_STEP: usize = 4;

/// Activation rows per block of at most `block_bytes` for rows of `row_bytes` prepared
/// bytes: a whole number of 4-row steps (so pairs never straddle blocks), at least one.
pub(super) fn act_block_rows(block_bytes: usize, row_bytes: usize) -> usize {
    (block_bytes / row_bytes.max(1)).max(4) / 4 * 4
}

/// A packed tile of TILE_ROWS weight rows.
struct Tile<'a> {
    q: &'a [[i8; QK32]],
    dm: &'a [(f32, f32)],
    k: usize,
}

/// Up to ACT_STEP activation rows.
struct ActRows<'a, A> {
    blocks: &'a [A],
    ds: &'a [(f32, f32)],
    /// VNNI only, else empty: the pairs of these rows (`a0` is even).
    pairs: &'a [PairBlock],
    k: usize,
}

impl<A> ActRows<'_, A> {
    fn len(&self) -> usize {
        self.blocks.len() / self.k
    }
}

/// Weight rows `R0..R0 + R` of the tile against `C` activation rows, on AVX2: per block
/// the eight i32 four-product sums (`maddubs` wants unsigned x signed: |w| times a with
/// w's sign, then `madd` by ones), one `fma` by the f32 product `d_w * d_a`.
macro_rules! tile_step {
    ($tile:expr, $act:expr, $sums:expr, $R0:expr, $R:expr, $C:expr, $min:expr) => {{
        let (tile, act, k) = ($tile, $act, $tile.k);
        // Rows as slices of exactly k blocks, so indexing by b < k needs no checks.
        let wq: [&[[i8; QK32]]; $R] = rows_of(tile.q, k, $R0, usize::MAX);
        let wdm: [&[(f32, f32)]; $R] = rows_of(tile.dm, k, $R0, usize::MAX);
        let ab: [&[_]; $C] = rows_of(act.blocks, k, 0, usize::MAX);
        let ads: [&[(f32, f32)]; $C] = rows_of(act.ds, k, 0, usize::MAX);
        let mut acc = [[_mm256_setzero_ps(); $R]; $C];
        let mut summs = [[0f32; $R]; $C];
        for b in 0..k {
            let mut w = [_mm256_setzero_si256(); $R];
            for i in 0..$R {
                // SAFETY: one 32-byte array of the tile.
                w[i] = unsafe { _mm256_loadu_si256(wq[i][b].as_ptr().cast()) };
            }
            for j in 0..$C {
                // SAFETY: one 32-byte array of a borrowed activation block.
                let a = unsafe { _mm256_loadu_si256(ab[j][b].qs().as_ptr().cast()) };
                let (da, sa) = &ads[j][b];
                for i in 0..$R {
                    let (dw, mw) = &wdm[i][b];
                    let p16 = _mm256_maddubs_epi16(
                        _mm256_sign_epi8(w[i], w[i]),
                        _mm256_sign_epi8(a, w[i]),
                    );
                    let lanes = _mm256_madd_epi16(_mm256_set1_epi16(1), p16);
                    // The f32 product d_w * d_a, as the row kernels form it.
                    let d = _mm256_mul_ps(_mm256_broadcast_ss(dw), _mm256_broadcast_ss(da));
                    acc[j][i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[j][i]);
                    if $min {
                        summs[j][i] += mw * sa;
                    }
                }
            }
        }
        for j in 0..$C {
            for i in 0..$R {
                $sums[j][$R0 + i] = hsum_f32x8(acc[j][i]) + if $min { summs[j][i] } else { 0.0 };
            }
        }
    }};
}

/// Dispatch on the number of activation rows (1..=4) to a fully unrolled step.
macro_rules! by_act_rows {
    ($n:expr, |$C:ident| $body:expr) => {
        match $n {
            4 => {
                const $C: usize = 4;
                $body
            }
            3 => {
                const $C: usize = 3;
                $body
            }
            2 => {
                const $C: usize = 2;
                $body
            }
            _ => {
                const $C: usize = 1;
                $body
            }
        }
    };
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_tile<A: Q8Act, const MIN: bool>(
    tile: &Tile,
    act: &ActRows<A>,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: AVX2/FMA per the caller; loads inside tile_step carry their own reasons.
    unsafe {
        // 16 registers: two weight rows at a time.
        by_act_rows!(act.len(), |C| {
            tile_step!(tile, act, sums, 0, 2, C, MIN);
            tile_step!(tile, act, sums, 2, 2, C, MIN);
        })
    }
}

/// The tile on AVX-512 VNNI: four weight rows by up to four activation rows, two
/// activation rows sharing each 512-bit instruction (row `2p` in the lower 256 bits, `2p +
/// 1` in the upper, each weight block broadcast to both halves). Each 256-bit half does
/// exactly what [`avx2_tile`] does for its pair, with one difference that changes no
/// bits: the weights are packed as w + 128 (unsigned) and `dpbusd` sums (w + 128) * a
/// starting from the activation's correction -128 * (sums of a), which leaves exactly
/// the signed four-product sums that `maddubs` + `madd` give. The halves never mix until
/// each is summed alone.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni,avx512dq")]
unsafe fn vnni512_tile<A: Q8Act, const MIN: bool>(
    tile: &Tile,
    act: &ActRows<A>,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    const PAIRS: usize = ACT_STEP / 2;
    let k = tile.k;
    let n = act.len();
    // A missing second row of a pair repeats the first; its results are dropped.
    let wq: [&[[i8; QK32]]; TILE_ROWS] = rows_of(tile.q, k, 0, usize::MAX);
    let wdm: [&[(f32, f32)]; TILE_ROWS] = rows_of(tile.dm, k, 0, usize::MAX);
    let ads: [&[(f32, f32)]; ACT_STEP] = rows_of(act.ds, k, 0, n - 1);
    let pairs = n.div_ceil(2);
    let pb: [&[PairBlock]; PAIRS] = rows_of(act.pairs, k, 0, pairs - 1);
    // SAFETY: AVX-512 F/BW/VL/DQ/VNNI per the caller; every load reads one 32-byte array
    // of the tile or of a borrowed activation block, or one f32 of them.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); TILE_ROWS]; PAIRS];
        let mut summs = [[0f32; TILE_ROWS]; ACT_STEP];
        for b in 0..k {
            let mut w = [_mm512_setzero_si512(); TILE_ROWS];
            let mut dw = [_mm512_setzero_ps(); TILE_ROWS];
            for i in 0..TILE_ROWS {
                w[i] = _mm512_broadcast_i64x4(_mm256_loadu_si256(wq[i][b].as_ptr().cast()));
                dw[i] = _mm512_set1_ps(wdm[i][b].0);
            }
            for (p, acc) in acc.iter_mut().enumerate().take(pairs) {
                let (j0, j1) = (2 * p, 2 * p + 1);
                let blk = &pb[p][b];
                let a = _mm512_load_si512(blk.q.as_ptr().cast());
                let c = _mm512_load_si512(blk.corr.as_ptr().cast());
                let da = _mm512_load_ps(blk.d.as_ptr());
                for i in 0..TILE_ROWS {
                    let lanes = _mm512_dpbusd_epi32(c, w[i], a);
                    let d = _mm512_mul_ps(dw[i], da);
                    acc[i] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes), acc[i]);
                    if MIN {
                        let mw = wdm[i][b].1;
                        summs[j0][i] += mw * ads[j0][b].1;
                        summs[j1][i] += mw * ads[j1][b].1;
                    }
                }
            }
        }
        for p in 0..pairs {
            for i in 0..TILE_ROWS {
                let lo = _mm512_castps512_ps256(acc[p][i]);
                let hi = _mm512_extractf32x8_ps(acc[p][i], 1);
                sums[2 * p][i] = hsum_f32x8(lo) + if MIN { summs[2 * p][i] } else { 0.0 };
                sums[2 * p + 1][i] = hsum_f32x8(hi) + if MIN { summs[2 * p + 1][i] } else { 0.0 };
            }
        }
    }
}
