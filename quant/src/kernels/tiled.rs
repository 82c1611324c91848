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
//! four-product sums (AVX2 `maddubs` + `madd`, or VNNI `dpbusd`, the same integers: the
//! AVX2 step is written once over [`DotStep`] and instantiated for AVX-VNNI too),
//! converted to f32, one `fma` by the f32 product `d_w * d_a` into eight f32 lanes in block
//! order, and ggml's horizontal sum at the end; for Q4_1/Q5_1 plus the scalar sum of
//! `m_w * s_a` in block order.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::avx2::{hsum_f32x8, AvxVnni, DotStep, Maddubs, VnniVl};
use crate::formats::*;
use crate::packed::PackedRows;
use crate::{cast, BlockFormat, QuantError, F16};

/// Weight rows decoded together.
pub(super) const TILE_ROWS: usize = 4;

/// Which instructions the micro-kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TiledIsa {
    /// AVX2 + FMA, 16 vector registers: 2 weight rows x 4 activation rows per step.
    Avx2,
    /// The AVX2 kernels with AVX-VNNI's `dpbusd` (VEX) for `maddubs` + `madd`: the
    /// AVX-VNNI table, on CPUs without AVX-512.
    AvxVnni,
    /// The AVX2 kernels with AVX-512 VL's `dpbusd` (EVEX) on 256-bit registers: no table
    /// uses it; the tests run it, on CPUs with AVX-512, to vouch for [`TiledIsa::AvxVnni`],
    /// which shares every line but the instruction's encoding.
    Avx512VlVnni,
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
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)` for the `n_tile` rows in `w` (whole
/// rows of `n_cols` elements) and every activation row, the activation rows taken in
/// blocks of at most `block_bytes` prepared bytes. Inputs already validated by
/// [`super::Kernels::matmul`]; `isa` must be supported by this CPU (the caller holds a
/// table that was handed out only after detection).
pub(super) fn matmul<W: super::interleaved::UnpackU8, A: Q8Act>(
    isa: TiledIsa,
    w: &[u8],
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
    block_bytes: usize,
) -> Result<(), QuantError> {
    if isa == TiledIsa::Avx512Vnni {
        return super::interleaved::matmul::<W, A>(Weights::Rows(w), n_cols, act, out, block_bytes);
    }
    let Operands {
        w,
        act,
        k,
        n_tile,
        n_act,
    } = operands::<W, A>(Weights::Rows(w), act, n_cols)?;
    let step = if W::HAS_MIN {
        tile_kernel::<A, true>(isa)
    } else {
        tile_kernel::<A, false>(isa)
    };
    let mut unused = Vec::new();
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        s.q.resize(TILE_ROWS * k, [0; QK32]);
        s.dm.resize(TILE_ROWS * k, (0.0, 0.0));
        s.act_ds.resize(act.len(), (0.0, 0.0));
        // SAFETY: the caller guarantees the CPU runs AVX2 (F16C comes with that table).
        unsafe { prepare_ds(&act, &mut s.act_ds) };
        // Activation rows in blocks whose layout stays in cache while every tile of weight
        // rows passes over it; each tile is decoded again per block.
        let block = act_block_rows(block_bytes, k * (std::mem::size_of::<A>() + 8));
        let shape = BatchShape {
            n_act,
            n_tile,
            tile_rows: TILE_ROWS,
            act_step: ACT_STEP,
            block,
        };
        shape.visit(|v| match v {
            Visit::Tile { r0, rows } => {
                for (i, (q, dm)) in
                    s.q.chunks_exact_mut(k)
                        .zip(s.dm.chunks_exact_mut(k))
                        .enumerate()
                {
                    if i < rows {
                        let row = &w.tile(r0 + i, 1, k, &mut unused)[..k];
                        for ((q, dm), b) in q.iter_mut().zip(dm.iter_mut()).zip(row) {
                            *dm = b.unpack(q);
                        }
                    } else {
                        // Padding rows: zero quants and scales, results discarded.
                        q.fill([0; QK32]);
                        dm.fill((0.0, 0.0));
                    }
                }
            }
            Visit::Acts { a0, acts, r0, rows } => {
                let tile = Tile {
                    q: &s.q,
                    dm: &s.dm,
                    k,
                };
                let ar = ActRows {
                    blocks: &act[a0 * k..(a0 + acts) * k],
                    ds: &s.act_ds[a0 * k..(a0 + acts) * k],
                    k,
                };
                let mut sums = [[0f32; TILE_ROWS]; ACT_STEP];
                // SAFETY: the caller guarantees the CPU runs `isa`.
                unsafe { step(&tile, &ar, &mut sums) };
                store(out, n_tile, a0, r0, rows, &sums[..acts]);
            }
        });
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

/// The shape of a batched matmul as every batch kernel walks it: activation rows in
/// blocks of `block` (a multiple of `act_step`); within a block every tile of `tile_rows`
/// weight rows, decoded again per block; within a tile the block's activation rows
/// `act_step` at a time.
pub(super) struct BatchShape {
    pub n_act: usize,
    pub n_tile: usize,
    pub tile_rows: usize,
    pub act_step: usize,
    pub block: usize,
}

/// One step of [`BatchShape::visit`].
pub(super) enum Visit {
    /// Decode weight rows `r0..r0 + rows` into the kernel's tile.
    Tile { r0: usize, rows: usize },
    /// Dot the tile (rows `r0..r0 + rows`) with activation rows `a0..a0 + acts`.
    Acts {
        a0: usize,
        acts: usize,
        r0: usize,
        rows: usize,
    },
}

impl BatchShape {
    /// Call `f` for each step, in order (one closure, so a kernel's steps can both fill
    /// and read its tile).
    pub(super) fn visit(&self, mut f: impl FnMut(Visit)) {
        for ab in (0..self.n_act).step_by(self.block.max(1)) {
            let ab_end = (ab + self.block).min(self.n_act);
            for r0 in (0..self.n_tile).step_by(self.tile_rows) {
                let rows = self.tile_rows.min(self.n_tile - r0);
                f(Visit::Tile { r0, rows });
                for a0 in (ab..ab_end).step_by(self.act_step) {
                    let acts = self.act_step.min(ab_end - a0);
                    f(Visit::Acts { a0, acts, r0, rows });
                }
            }
        }
    }
}

/// A batch kernel's weight rows.
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a> {
    /// Row after row, as the file stores them.
    Rows(&'a [u8]),
    /// Rows `from..from + n` of a matrix repacked at load: a tile's rows are put back
    /// into their blocks before the kernel decodes them.
    Packed {
        w: &'a PackedRows,
        from: usize,
        n: usize,
    },
}

/// [`Weights`] as blocks of type `W`.
pub(super) enum WeightBlocks<'a, W: Clone> {
    Rows(std::borrow::Cow<'a, [W]>),
    Packed { w: &'a PackedRows, from: usize },
}

impl<W: BlockFormat> WeightBlocks<'_, W> {
    /// The `k` blocks of each of rows `r0..r0 + rows` (counted from the matmul's first),
    /// put back into `scratch` from packed rows.
    pub(super) fn tile<'s>(
        &'s self,
        r0: usize,
        rows: usize,
        k: usize,
        scratch: &'s mut Vec<u64>,
    ) -> &'s [W] {
        match self {
            WeightBlocks::Rows(w) => &w[r0 * k..(r0 + rows) * k],
            WeightBlocks::Packed { w, from } => {
                let bytes = rows * k * W::BYTES;
                scratch.resize(bytes.div_ceil(8), 0);
                let buf = &mut bytemuck::cast_slice_mut::<u64, u8>(scratch)[..bytes];
                w.unpack(from + r0..from + r0 + rows, buf)
                    .expect("rows and type checked by matmul_packed");
                bytemuck::cast_slice(buf)
            }
        }
    }
}

/// A batched matmul's operands as blocks: the weight rows (`n_tile` of `k` blocks) and the
/// activation rows (`n_act` of `k` blocks), with no copy unless misaligned.
pub(super) struct Operands<'a, W: Clone, A: Clone> {
    pub w: WeightBlocks<'a, W>,
    pub act: std::borrow::Cow<'a, [A]>,
    pub k: usize,
    pub n_tile: usize,
    pub n_act: usize,
}

/// [`Operands`] of rows of `n_cols` elements (validated by the caller).
pub(super) fn operands<'a, W: BlockFormat, A: BlockFormat>(
    w: Weights<'a>,
    act: &'a [u8],
    n_cols: usize,
) -> Result<Operands<'a, W, A>, QuantError> {
    let act = cast::as_blocks::<A>(act)?;
    let k = n_cols / W::ELEMS;
    let (w, n_tile) = match w {
        Weights::Rows(w) => {
            let w = cast::as_blocks::<W>(w)?;
            let n = w.len() / k;
            (WeightBlocks::Rows(w), n)
        }
        Weights::Packed { w, from, n } => (WeightBlocks::Packed { w, from }, n),
    };
    let n_act = act.len() / k;
    Ok(Operands {
        w,
        act,
        k,
        n_tile,
        n_act,
    })
}

/// `out[(a0 + a) * n_tile + r0 + i] = sums[a][i]` for the step's activation rows and the
/// tile's `rows` weight rows.
pub(super) fn store<const N: usize>(
    out: &mut [f32],
    n_tile: usize,
    a0: usize,
    r0: usize,
    rows: usize,
    sums: &[[f32; N]],
) {
    for (a, s) in sums.iter().enumerate() {
        out[(a0 + a) * n_tile + r0..][..rows].copy_from_slice(&s[..rows]);
    }
}

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
    k: usize,
}

impl<A> ActRows<'_, A> {
    fn len(&self) -> usize {
        self.blocks.len() / self.k
    }
}

/// Weight rows `R0..R0 + R` of the tile against `C` activation rows, on AVX2: per block
/// the eight i32 four-product sums by the dot step `$D` (unsigned x signed: |w| times a
/// with w's sign), one `fma` by the f32 product `d_w * d_a`.
macro_rules! tile_step {
    ($D:ty, $tile:expr, $act:expr, $sums:expr, $R0:expr, $R:expr, $C:expr, $min:expr) => {{
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
                    let lanes = <$D>::dot(_mm256_sign_epi8(w[i], w[i]), _mm256_sign_epi8(a, w[i]));
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
pub(super) use by_act_rows;

/// The AVX2 tile step for `isa` (any but [`TiledIsa::Avx512Vnni`], which has its own
/// kernels), as a function the CPU must support.
type TileFn<A> = unsafe fn(&Tile, &ActRows<A>, &mut [[f32; TILE_ROWS]; ACT_STEP]);
fn tile_kernel<A: Q8Act, const MIN: bool>(isa: TiledIsa) -> TileFn<A> {
    match isa {
        TiledIsa::AvxVnni => avxvnni_tile::<A, MIN>,
        TiledIsa::Avx512VlVnni => vl_vnni_tile::<A, MIN>,
        _ => avx2_tile::<A, MIN>,
    }
}

/// The tile step over the dot step `D`, inlined into one entry point per instantiation.
#[inline(always)]
unsafe fn tile_body<D: DotStep, A: Q8Act, const MIN: bool>(
    tile: &Tile,
    act: &ActRows<A>,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: AVX2/FMA and D's features per the caller; loads inside tile_step carry
    // their own reasons.
    unsafe {
        // 16 registers: two weight rows at a time.
        by_act_rows!(act.len(), |C| {
            tile_step!(D, tile, act, sums, 0, 2, C, MIN);
            tile_step!(D, tile, act, sums, 2, 2, C, MIN);
        })
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_tile<A: Q8Act, const MIN: bool>(
    tile: &Tile,
    act: &ActRows<A>,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: Maddubs needs AVX2, enabled here.
    unsafe { tile_body::<Maddubs, A, MIN>(tile, act, sums) }
}

#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn avxvnni_tile<A: Q8Act, const MIN: bool>(
    tile: &Tile,
    act: &ActRows<A>,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: AvxVnni needs AVX-VNNI, enabled here.
    unsafe { tile_body::<AvxVnni, A, MIN>(tile, act, sums) }
}

#[target_feature(enable = "avx2,fma,avx512vl,avx512vnni")]
unsafe fn vl_vnni_tile<A: Q8Act, const MIN: bool>(
    tile: &Tile,
    act: &ActRows<A>,
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: VnniVl needs AVX-512 VL + VNNI, enabled here.
    unsafe { tile_body::<VnniVl, A, MIN>(tile, act, sums) }
}
