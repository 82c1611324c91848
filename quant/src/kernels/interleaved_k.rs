//! The AVX-512 VNNI batch kernel for the K-quants (Q2_K to Q6_K) and IQ4_XS against Q8_K
//! activations: sixteen weight rows interleaved, one row per i32 lane, as
//! [`super::interleaved`] does for the Q8-family formats.
//!
//! The AVX2 row kernel keeps eight i32 lanes per super-block (lane `c`: over the eight
//! groups, the group's scale times the four-product sum of quants `4c..4c + 4`; for Q6_K
//! less 32 times the scaled activation sums of group `c`), converts them, `fma`s them by
//! `d_a * d_w` into eight f32 lanes, and for Q4_K keeps four more lanes of
//! `mins · group sums` `fma`'d by `-d_a * dmin`. [`super::tiled_k`] keeps exactly those
//! lanes per (weight row, activation row) in 256-bit registers. Here the registers are
//! transposed: the tile holds, per group `g` and four-quant group `c`, one vector of the
//! sixteen rows' four unsigned quants, and lane `c`'s accumulators hold lane `c` of the
//! row kernel for sixteen rows at once. `maddubs` then `dpwssd` by the rows' scales adds a
//! whole (group, lane) step for sixteen rows — two instructions where the tile needed two
//! per row. The same integers, the same f32 products and `fma` chains, the same final
//! additions: bit for bit `vec_dot`.
//!
//! Q2_K's mins go into the quants' own lanes first (lane `c`: mins `2c`, `2c + 1` times
//! their bsums). Q3_K's tile holds each quant times its scale plus 124 (the products
//! lie in -124..=128, so the sum fits a byte) and one `dpbusd` per four quants does what
//! `maddubs` and `dpwssd` do for the others; `124 * (sum of the lane's activations)`, the
//! same for all sixteen rows, starts each lane's sum negated. The i32 lanes are the row
//! kernel's exactly (integer sums in another order, none saturating). IQ4_XS's tile holds
//! the signed levels; their magnitudes multiply the activation negated under the levels'
//! sign mask, as the row kernel's `sign_epi8` trick does.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::interleaved::{broadcast4, hsum_groups, LANES};
use super::tiled::{
    act_block_rows, operands, rows_of, store, BatchShape, Operands, Visit, Weights,
};
use super::tiled_k::{DecodeK, Decoded, Kind};
use crate::formats::*;
use crate::packed::{BlockQ4Kx16, BlockQ6Kx16};
use crate::QuantError;

/// Groups of 32 quants in a super-block; also the row kernel's eight lanes.
const GROUPS: usize = QK_K / 32;

/// Activation rows per step (eight i32 and eight f32 accumulators each).
const ACT_STEP: usize = 2;

/// Q3_K's scaled quants lie in -124..=128 (scales -32..=31, quants -4..=3): plus this
/// they are an unsigned byte.
const Q3K_BIAS: i32 = 124;

/// One super-block of the tile's sixteen rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct TileK {
    /// `q[g][c][l]`: row `l`'s unsigned quants `32g + 4c .. 32g + 4c + 4` (IQ4_XS: its
    /// signed levels; Q3_K: `scale * quant + Q3K_BIAS`).
    q: [[[u32; LANES]; GROUPS]; GROUPS],
    /// `sc[g][h][l]`: row `l`'s multiplier of group `g` for lanes `4h..4h + 4` (Q2_K's,
    /// Q3_K's and Q6_K's two 16-weight scales; the others' one scale twice), in both i16
    /// halves.
    sc: [[[u32; LANES]; 2]; GROUPS],
    /// Q6_K: `sc16[c][l]` = row `l`'s scales `2c`, `2c + 1` as two i16; Q2_K: its mins
    /// `2c`, `2c + 1`.
    sc16: [[u32; LANES]; GROUPS],
    /// Q4_K, Q5_K: `mins[m][l]` = row `l`'s mins `2m`, `2m + 1` as two i16.
    mins: [[u32; LANES]; 4],
    d: [f32; LANES],
    dmin: [f32; LANES],
}

impl Default for TileK {
    fn default() -> TileK {
        TileK {
            q: [[[0; LANES]; GROUPS]; GROUPS],
            sc: [[[0; LANES]; 2]; GROUPS],
            sc16: [[0; LANES]; GROUPS],
            mins: [[0; LANES]; 4],
            d: [0.0; LANES],
            dmin: [0.0; LANES],
        }
    }
}

fn pair(lo: i16, hi: i16) -> u32 {
    lo as u16 as u32 | (hi as u16 as u32) << 16
}

/// Per activation row and block, the start of each Q3_K lane: `-Q3K_BIAS` times the sum
/// of the lane's activations (the same for every weight row).
type LaneStarts = [i32; GROUPS];

/// A thread's working room: the tile, one decoded block, packed rows put back, and the
/// Q3_K lane starts of the activation rows.
#[derive(Default)]
struct Room {
    tile: Vec<TileK>,
    dec: Decoded,
    rows_buf: Vec<u64>,
    starts: Vec<LaneStarts>,
}

thread_local! {
    static TILE: RefCell<Room> = RefCell::new(Room::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)`, as [`super::tiled_k::matmul`], on
/// AVX-512 VNNI. The caller holds a table handed out only after detecting it.
pub(super) fn matmul<W: DecodeK>(
    w: Weights,
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
    block_bytes: usize,
) -> Result<(), QuantError> {
    let Operands {
        w,
        act,
        k,
        n_tile,
        n_act,
    } = operands::<W, BlockQ8K>(w, act, n_cols)?;
    TILE.with(|t| {
        let mut t = t.borrow_mut();
        let Room {
            tile,
            dec,
            rows_buf,
            starts,
        } = &mut *t;
        tile.resize(k, TileK::default());
        starts.clear();
        if W::KIND == Kind::Q3K {
            starts.extend(act.iter().map(q3k_lane_starts));
        }
        let shape = BatchShape {
            n_act,
            n_tile,
            tile_rows: LANES,
            act_step: ACT_STEP,
            block: act_block_rows(block_bytes, std::mem::size_of_val(&act[..k])),
        };
        shape.visit(|v| match v {
            Visit::Tile { r0, rows } => decode(w.tile(r0, rows, k, rows_buf), k, tile, dec),
            Visit::Acts { a0, acts, r0, rows } => {
                let y = &act[a0 * k..(a0 + acts) * k];
                let st = starts.get(a0 * k..(a0 + acts) * k).unwrap_or(&[]);
                let mut sums = [[0f32; LANES]; ACT_STEP];
                // SAFETY: AVX-512 F/BW/VNNI per the caller.
                unsafe {
                    if acts == 2 {
                        step::<W, 2>(tile, y, st, k, &mut sums)
                    } else {
                        step::<W, 1>(tile, y, st, k, &mut sums)
                    }
                }
                store(out, n_tile, a0, r0, rows, &sums[..acts]);
            }
        });
    });
    Ok(())
}

/// Decode up to [`LANES`] rows of `k` super-blocks into the interleaved tile; missing
/// rows get zeros (their lanes are computed and dropped).
fn decode<W: DecodeK>(w: &[W], k: usize, tile: &mut [TileK], dec: &mut Decoded) {
    let n = w.len() / k;
    for (b, t) in tile.iter_mut().enumerate().take(k) {
        for l in 0..LANES {
            if l < n {
                w[l * k + b].decode(dec);
                if W::KIND == Kind::Q3K {
                    scale_q3k(dec);
                }
            } else {
                *dec = Decoded::default();
            }
            for g in 0..GROUPS {
                for c in 0..GROUPS {
                    t.q[g][c][l] =
                        u32::from_le_bytes(dec.q[g][4 * c..4 * c + 4].try_into().expect("4"));
                }
                t.sc[g][0][l] = pair(dec.sc[g][0], dec.sc[g][0]);
                t.sc[g][1][l] = pair(dec.sc[g][8], dec.sc[g][8]);
            }
            for c in 0..GROUPS {
                t.sc16[c][l] = pair(dec.sc16[2 * c], dec.sc16[2 * c + 1]);
            }
            for m in 0..4 {
                t.mins[m][l] = pair(dec.mins[2 * m], dec.mins[2 * m + 1]);
            }
            t.d[l] = dec.d;
            t.dmin[l] = dec.dmin;
        }
    }
}

/// A decoded Q3_K block's quants (stored plus 4) as the tile keeps them: `scale * quant
/// + Q3K_BIAS`, each half group by its scale (whole-array loops, which vectorize).
fn scale_q3k(dec: &mut Decoded) {
    for (q, sc) in dec.q.iter_mut().zip(&dec.sc) {
        for (half, s) in q.chunks_exact_mut(16).zip([sc[0], sc[8]]) {
            for q in half {
                *q = (s * (i16::from(*q) - 4) + Q3K_BIAS as i16) as u8;
            }
        }
    }
}

/// Q3_K's [`LaneStarts`] of one activation block.
fn q3k_lane_starts(y: &BlockQ8K) -> LaneStarts {
    let mut s = [0i32; GROUPS];
    for group in y.qs.chunks_exact(32) {
        for (s, four) in s.iter_mut().zip(group.chunks_exact(4)) {
            *s += four.iter().map(|&a| i32::from(a)).sum::<i32>();
        }
    }
    s.map(|s| -Q3K_BIAS * s)
}

/// The tile against `C` activation rows (`y`: C rows of `k` super-blocks); `sums[j][l]`
/// gets the dot of row `l` with activation row `j`. `starts` holds Q3_K's lane starts
/// of the same rows and blocks (empty for the other formats).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn step<W: DecodeK, const C: usize>(
    tile: &[TileK],
    y: &[BlockQ8K],
    starts: &[LaneStarts],
    k: usize,
    sums: &mut [[f32; LANES]; ACT_STEP],
) {
    let kind = W::KIND;
    let ys: [&[BlockQ8K]; C] = rows_of(y, k, 0, usize::MAX);
    let tile = &tile[..k];
    // SAFETY: AVX-512 F/BW/VNNI per the caller; each load reads one 64-byte array of a
    // borrowed, 64-byte aligned tile block.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; C];
        let mut acc_m = [[_mm512_setzero_ps(); 4]; C];
        let mut summs = [_mm512_setzero_ps(); C];
        for (b, t) in tile.iter().enumerate() {
            let mut sumi = [[_mm512_setzero_si512(); GROUPS]; C];
            if kind == Kind::Q3K {
                q3k_block_sums(t, &ys, b, starts, k, &mut sumi);
            } else {
                for g in 0..GROUPS {
                    let sc = [
                        _mm512_load_si512(t.sc[g][0].as_ptr().cast()),
                        _mm512_load_si512(t.sc[g][1].as_ptr().cast()),
                    ];
                    for c in 0..GROUPS {
                        let w = _mm512_load_si512(t.q[g][c].as_ptr().cast());
                        // IQ4_XS: `w` holds signed levels; multiply their magnitudes by the
                        // activation negated where the level is negative (the row kernel's
                        // `sign_epi8`; where the level is 0 the product is 0 either way).
                        let (w, negative) = if kind == Kind::Iq4Xs {
                            (_mm512_abs_epi8(w), _mm512_movepi8_mask(w))
                        } else {
                            (w, 0)
                        };
                        for j in 0..C {
                            let a = broadcast4(&ys[j][b].qs[32 * g + 4 * c..]);
                            let p16 = match kind {
                                Kind::Iq4Xs => {
                                    let zero = _mm512_setzero_si512();
                                    let signed = _mm512_mask_sub_epi8(a, negative, zero, a);
                                    _mm512_maddubs_epi16(w, signed)
                                }
                                _ => _mm512_maddubs_epi16(w, a),
                            };
                            sumi[j][c] = _mm512_dpwssd_epi32(sumi[j][c], p16, sc[c / 4]);
                        }
                    }
                }
            }
            let dw = _mm512_load_ps(t.d.as_ptr());
            for j in 0..C {
                let yb = &ys[j][b];
                let d = _mm512_mul_ps(_mm512_set1_ps(yb.d), dw);
                let bs = &yb.bsums;
                let dmin = _mm512_mul_ps(_mm512_set1_ps(-yb.d), _mm512_load_ps(t.dmin.as_ptr()));
                for c in 0..GROUPS {
                    let mut s = sumi[j][c];
                    if kind == Kind::Q2K {
                        // Lane c of the row kernel's mins (mins 2c, 2c + 1 · bsums 2c,
                        // 2c + 1), into the same accumulator before the quants.
                        let mins = _mm512_load_si512(t.sc16[c].as_ptr().cast());
                        let bp = _mm512_set1_epi32(pair(bs[2 * c], bs[2 * c + 1]) as i32);
                        let prod = _mm512_madd_epi16(mins, bp);
                        acc[j][c] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(prod), acc[j][c]);
                    }
                    if kind == Kind::Q6K {
                        let sc16 = _mm512_load_si512(t.sc16[c].as_ptr().cast());
                        let bp = _mm512_set1_epi32(pair(bs[2 * c], bs[2 * c + 1]) as i32);
                        s = _mm512_sub_epi32(s, _mm512_slli_epi32(_mm512_madd_epi16(sc16, bp), 5));
                    }
                    acc[j][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[j][c]);
                }
                if kind == Kind::Q4K {
                    let mut mins = [_mm512_setzero_si512(); 4];
                    for (v, m) in mins.iter_mut().zip(&t.mins) {
                        *v = _mm512_load_si512(m.as_ptr().cast());
                    }
                    mins_fma(&mut acc_m[j], dmin, bs, &mins);
                }
                if kind == Kind::Q5K {
                    // The row's mins · group sums as one integer, then one fma.
                    let mut total = _mm512_setzero_si512();
                    for (m, mins) in t.mins.iter().enumerate() {
                        let gs = group_sum_pair(bs, m);
                        let mins = _mm512_load_si512(mins.as_ptr().cast());
                        total = _mm512_add_epi32(total, _mm512_madd_epi16(mins, gs));
                    }
                    summs[j] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(total), summs[j]);
                }
            }
        }
        for j in 0..C {
            let total = hsum_groups(&acc[j]);
            let total = match kind {
                Kind::Q4K => _mm512_add_ps(total, mins_total(&acc_m[j])),
                Kind::Q5K => _mm512_add_ps(total, summs[j]),
                Kind::Q6K | Kind::Q2K | Kind::Q3K | Kind::Iq4Xs => total,
            };
            _mm512_storeu_ps(sums[j].as_mut_ptr(), total);
        }
    }
}

/// Q3_K's i32 lanes of block `b` of the tile against `C` activation rows: each lane
/// starts at its [`LaneStarts`] value, then one `dpbusd` per four scaled quants.
#[inline(always)]
unsafe fn q3k_block_sums<const C: usize>(
    t: &TileK,
    ys: &[&[BlockQ8K]; C],
    b: usize,
    starts: &[LaneStarts],
    k: usize,
    sumi: &mut [[__m512i; GROUPS]; C],
) {
    // SAFETY: AVX-512 F/BW/VNNI, enabled by every caller; aligned loads of the borrowed,
    // 64-byte aligned tile block.
    unsafe {
        for (j, s) in sumi.iter_mut().enumerate() {
            let st = &starts[j * k + b];
            for (s, &v) in s.iter_mut().zip(st) {
                *s = _mm512_set1_epi32(v);
            }
        }
        for (g, qg) in t.q.iter().enumerate() {
            for (c, q) in qg.iter().enumerate() {
                let w = _mm512_load_si512(q.as_ptr().cast());
                for j in 0..C {
                    let a = broadcast4(&ys[j][b].qs[32 * g + 4 * c..]);
                    sumi[j][c] = _mm512_dpbusd_epi32(sumi[j][c], w, a);
                }
            }
        }
    }
}

/// Q4_K's mins for one super-block of sixteen rows: `acc_m[m] += dmin * (row's mins
/// 2m, 2m + 1 · group sums 2m, 2m + 1)`, the row kernel's four mins lanes. `mins[m]` holds
/// each row's two mins as i16 in its lane.
#[inline(always)]
unsafe fn mins_fma(
    acc_m: &mut [__m512; 4],
    dmin: __m512,
    bs: &[i16; QK_K / 16],
    mins: &[__m512i; 4],
) {
    // SAFETY: register-only AVX-512 F/BW, enabled by every caller.
    unsafe {
        for m in 0..4 {
            let prod = _mm512_madd_epi16(mins[m], group_sum_pair(bs, m));
            acc_m[m] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(prod), acc_m[m]);
        }
    }
}

/// Group sums `2m` and `2m + 1` of an activation block (each two 16-quant sums, added
/// in i16 as the row kernel's `hadd` does) as the two i16 of every lane.
#[inline(always)]
unsafe fn group_sum_pair(bs: &[i16; QK_K / 16], m: usize) -> __m512i {
    let gs0 = bs[4 * m].wrapping_add(bs[4 * m + 1]);
    let gs1 = bs[4 * m + 2].wrapping_add(bs[4 * m + 3]);
    // SAFETY: a register-only AVX-512 F broadcast, enabled by every caller.
    unsafe { _mm512_set1_epi32(pair(gs0, gs1) as i32) }
}

/// The four mins lanes summed in `hsum_f32x4`'s order: (m0 + m2) + (m1 + m3).
#[inline(always)]
unsafe fn mins_total(m: &[__m512; 4]) -> __m512 {
    // SAFETY: register-only AVX-512 F, enabled by every caller.
    unsafe { _mm512_add_ps(_mm512_add_ps(m[0], m[2]), _mm512_add_ps(m[1], m[3])) }
}

/// A K-quant super-block of sixteen rows repacked at load ([`BlockQ4Kx16`],
/// [`BlockQ6Kx16`]), with [`step`]'s arithmetic for its format.
pub(super) trait PackedK: Sized {
    /// [`step`] on a packed tile of `k` super-blocks.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VNNI.
    unsafe fn step<const C: usize>(
        tile: &[Self],
        y: &[BlockQ8K],
        k: usize,
        sums: &mut [[f32; LANES]; ACT_STEP],
    );
}

impl PackedK for BlockQ4Kx16 {
    unsafe fn step<const C: usize>(
        tile: &[Self],
        y: &[BlockQ8K],
        k: usize,
        sums: &mut [[f32; LANES]; ACT_STEP],
    ) {
        // SAFETY: the features, per this function's contract.
        unsafe { packed_step::<C>(tile, y, k, sums) }
    }
}

impl PackedK for BlockQ6Kx16 {
    unsafe fn step<const C: usize>(
        tile: &[Self],
        y: &[BlockQ8K],
        k: usize,
        sums: &mut [[f32; LANES]; ACT_STEP],
    ) {
        // SAFETY: the features, per this function's contract.
        unsafe { packed_step_q6::<C>(tile, y, k, sums) }
    }
}

/// `out[a * n_rows + r]` = dot(row `r` of the packed tiles, act row `a`) for rows
/// repacked at load: [`step`]'s arithmetic with nothing to decode but masks, shifts and
/// the byte scales' widening. The tiles cover `n_rows` rows from a tile boundary. The
/// caller holds a table handed out only after detecting AVX-512 F/BW/VNNI, AVX2, F16C.
pub(super) fn matmul_kx16<B: PackedK>(
    tiles: &[B],
    k: usize,
    n_rows: usize,
    act: &[BlockQ8K],
    out: &mut [f32],
    block_bytes: usize,
) {
    let shape = BatchShape {
        n_act: act.len() / k,
        n_tile: n_rows,
        tile_rows: LANES,
        act_step: ACT_STEP,
        block: act_block_rows(block_bytes, std::mem::size_of_val(&act[..k])),
    };
    shape.visit(|v| {
        if let Visit::Acts { a0, acts, r0, rows } = v {
            let tile = &tiles[r0 / LANES * k..][..k];
            let y = &act[a0 * k..(a0 + acts) * k];
            let mut sums = [[0f32; LANES]; ACT_STEP];
            // SAFETY: AVX-512 F/BW/VNNI, AVX2, F16C per the caller.
            unsafe {
                if acts == 2 {
                    B::step::<2>(tile, y, k, &mut sums)
                } else {
                    B::step::<1>(tile, y, k, &mut sums)
                }
            }
            store(out, n_rows, a0, r0, rows, &sums[..acts]);
        }
    });
}

/// [`step`] for Q4_K on a packed tile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn packed_step<const C: usize>(
    tile: &[BlockQ4Kx16],
    y: &[BlockQ8K],
    k: usize,
    sums: &mut [[f32; LANES]; ACT_STEP],
) {
    let ys: [&[BlockQ8K]; C] = rows_of(y, k, 0, usize::MAX);
    let tile = &tile[..k];
    // SAFETY: AVX-512 F/BW/VNNI and F16C per the caller; each load reads one array of a
    // borrowed packed block (unaligned loads); prefetches never fault.
    unsafe {
        let nib = _mm512_set1_epi8(0x0F);
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; C];
        let mut acc_m = [[_mm512_setzero_ps(); 4]; C];
        for (b, t) in tile.iter().enumerate() {
            let mut sumi = [[_mm512_setzero_si512(); GROUPS]; C];
            // Each group's scale in both i16 halves of its row's lane.
            let scales: [__m512i; GROUPS] = std::array::from_fn(|g| {
                let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(t.scales[g].as_ptr().cast()));
                _mm512_or_si512(s, _mm512_slli_epi32(s, 16))
            });
            for p in 0..GROUPS / 2 {
                let sc = [scales[2 * p], scales[2 * p + 1]];
                for (c, q) in t.qs[p].iter().enumerate() {
                    let v = _mm512_loadu_si512(q.as_ptr().cast());
                    let w = [
                        _mm512_and_si512(v, nib),
                        _mm512_and_si512(_mm512_srli_epi16(v, 4), nib),
                    ];
                    for j in 0..C {
                        for h in 0..2 {
                            let a = broadcast4(&ys[j][b].qs[32 * (2 * p + h) + 4 * c..]);
                            let p16 = _mm512_maddubs_epi16(w[h], a);
                            sumi[j][c] = _mm512_dpwssd_epi32(sumi[j][c], p16, sc[h]);
                        }
                    }
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(t.d.as_ptr().cast()));
            let dmw = _mm512_cvtph_ps(_mm256_loadu_si256(t.dmin.as_ptr().cast()));
            let mut mins = [_mm512_setzero_si512(); 4];
            for (v, m) in mins.iter_mut().zip(&t.mins) {
                *v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(m.as_ptr().cast()));
            }
            for j in 0..C {
                let yb = &ys[j][b];
                let d = _mm512_mul_ps(_mm512_set1_ps(yb.d), dw);
                for c in 0..GROUPS {
                    acc[j][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[j][c]), acc[j][c]);
                }
                let dmin = _mm512_mul_ps(_mm512_set1_ps(-yb.d), dmw);
                mins_fma(&mut acc_m[j], dmin, &yb.bsums, &mins);
            }
        }
        for j in 0..C {
            let total = _mm512_add_ps(hsum_groups(&acc[j]), mins_total(&acc_m[j]));
            _mm512_storeu_ps(sums[j].as_mut_ptr(), total);
        }
    }
}

/// [`step`] for Q6_K on a packed tile: each group's six-bit quants are a nibble and two
/// high bits put together (a shift and one ternary-logic instruction), the scales
/// sign-extended from bytes. Lane by lane (`c`), so only one half's scales and one
/// lane's sums are live at a time, and the tile is read front to back.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn packed_step_q6<const C: usize>(
    tile: &[BlockQ6Kx16],
    y: &[BlockQ8K],
    k: usize,
    sums: &mut [[f32; LANES]; ACT_STEP],
) {
    let ys: [&[BlockQ8K]; C] = rows_of(y, k, 0, usize::MAX);
    let tile = &tile[..k];
    // SAFETY: AVX-512 F/BW/VNNI and F16C per the caller; each load reads one array of a
    // borrowed packed block (unaligned loads).
    unsafe {
        let nib = _mm512_set1_epi8(0x0F);
        let high = _mm512_set1_epi8(0x30);
        let low16 = _mm512_set1_epi32(0xFFFF);
        // (a & b) | c: a = the high bits shifted into place, b = their mask, c = the nibble.
        const AND_OR: i32 = 0xEA;
        // Row scale `j`, sign-extended into its i32 lane.
        let scale = |t: &BlockQ6Kx16, j: usize| {
            _mm512_cvtepi8_epi32(_mm_loadu_si128(t.scales[j].as_ptr().cast()))
        };
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; C];
        for (b, t) in tile.iter().enumerate() {
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(t.d.as_ptr().cast()));
            let d: [__m512; C] =
                std::array::from_fn(|j| _mm512_mul_ps(_mm512_set1_ps(ys[j][b].d), dw));
            for half in 0..2 {
                // Lanes c < 4 take each group's first scale (2g), lanes c >= 4 its second;
                // in both i16 halves of the row's lane.
                let sc: [__m512i; GROUPS] = std::array::from_fn(|g| {
                    let v = scale(t, 2 * g + half);
                    _mm512_or_si512(_mm512_and_si512(v, low16), _mm512_slli_epi32(v, 16))
                });
                for c in 4 * half..4 * half + 4 {
                    let mut sumi = [_mm512_setzero_si512(); C];
                    for (n, q) in t.q[c].iter().enumerate() {
                        let v0 = _mm512_loadu_si512(q[0].as_ptr().cast());
                        let v1 = _mm512_loadu_si512(q[1].as_ptr().cast());
                        let hb = _mm512_loadu_si512(q[2].as_ptr().cast());
                        let lo0 = _mm512_and_si512(v0, nib);
                        let lo1 = _mm512_and_si512(v1, nib);
                        let hi0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), nib);
                        let hi1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), nib);
                        let w = [
                            _mm512_ternarylogic_epi32(_mm512_slli_epi16(hb, 4), high, lo0, AND_OR),
                            _mm512_ternarylogic_epi32(_mm512_slli_epi16(hb, 2), high, lo1, AND_OR),
                            _mm512_ternarylogic_epi32(hb, high, hi0, AND_OR),
                            _mm512_ternarylogic_epi32(_mm512_srli_epi16(hb, 2), high, hi1, AND_OR),
                        ];
                        for j in 0..C {
                            for (i, wi) in w.iter().enumerate() {
                                let g = 4 * n + i;
                                let a = broadcast4(&ys[j][b].qs[32 * g + 4 * c..]);
                                let p16 = _mm512_maddubs_epi16(*wi, a);
                                sumi[j] = _mm512_dpwssd_epi32(sumi[j], p16, sc[g]);
                            }
                        }
                    }
                    // Less 32 times scales 2c, 2c + 1 · the activation's sums over them.
                    let sc16 = _mm512_or_si512(
                        _mm512_and_si512(scale(t, 2 * c), low16),
                        _mm512_slli_epi32(scale(t, 2 * c + 1), 16),
                    );
                    for j in 0..C {
                        let bs = &ys[j][b].bsums;
                        let bp = _mm512_set1_epi32(pair(bs[2 * c], bs[2 * c + 1]) as i32);
                        let corr = _mm512_slli_epi32(_mm512_madd_epi16(sc16, bp), 5);
                        let s = _mm512_sub_epi32(sumi[j], corr);
                        acc[j][c] = _mm512_fmadd_ps(d[j], _mm512_cvtepi32_ps(s), acc[j][c]);
                    }
                }
            }
        }
        for j in 0..C {
            _mm512_storeu_ps(sums[j].as_mut_ptr(), hsum_groups(&acc[j]));
        }
    }
}
