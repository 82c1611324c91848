//! The tiled matmul of [`super::tiled`] for the K-quants (Q2_K to Q6_K) and IQ4_XS
//! against Q8_K activations.
//!
//! Decoding a K-quant super-block (nibbles and high bits apart, six-bit scales out of their
//! packing) costs as much as its products; row by row it is redone for every activation
//! row. Here each super-block of a tile of weight rows is decoded once into 256 unsigned
//! quants, the eight groups' i16 scale vectors and the few per-block numbers, then reused
//! for every activation row.
//!
//! As in `tiled.rs`, the result is that of the AVX2 row kernels bit for bit: per
//! super-block the same eight exact i32 lanes (`maddubs` of the unsigned quants with the
//! activation, then `madd` by the scales), the same f32 products of scales, the same
//! `fma` sequence and horizontal sums. Q3_K's signed quants are kept as quant + 4
//! (unsigned), and `maddubs(4, a)` is subtracted in i16, once per activation group for the
//! whole tile: the same pair sums as the row kernel's two `maddubs`. IQ4_XS keeps its
//! signed levels; per pair their magnitudes multiply the activation signed as the levels,
//! the row kernel's sign trick. (A second array of magnitudes would save the `abs` but
//! grow the tile past L1 for 4096 columns, which slowed Q4_K and Q6_K by a fifth.)
//!
//! This is the AVX2 table's kernel; the AVX-512 table runs `interleaved_k.rs`, which
//! computes the same lanes for sixteen rows at once.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::avx2::{hsum_f32x4, hsum_f32x8, hsum_i32x4};
use super::tiled::{
    act_block_rows, operands, rows_of, store, BatchShape, Operands, TiledIsa, Visit, Weights,
    TILE_ROWS,
};
use crate::formats::k_quants::scale_min::scale_min_k4;
use crate::formats::k_quants::K_SCALE_SIZE;
use crate::formats::*;
use crate::{BlockFormat, QuantError, F16};

/// Groups of 32 weights in a super-block.
const GROUPS: usize = QK_K / 32;

/// One decoded super-block.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct Decoded {
    /// The quants as the row kernels multiply them (unsigned), in element order: Q3_K's
    /// plus 4; IQ4_XS: the signed levels, as bytes.
    pub(super) q: [[u8; 32]; GROUPS],
    /// Per group the i16 multiplier of each pair lane of `maddubs` (Q4_K, Q5_K, IQ4_XS:
    /// the group's scale 16 times; Q2_K, Q3_K, Q6_K: the two 16-weight scales, 8 times
    /// each).
    pub(super) sc: [[i16; 16]; GROUPS],
    /// Q4_K, Q5_K: the eight mins; otherwise unused.
    pub(super) mins: [i16; 8],
    /// The sixteen multipliers of the activation's `bsums`: Q6_K's scales (for the -32
    /// offset), Q2_K's mins; otherwise unused.
    pub(super) sc16: [i16; 16],
    pub(super) d: f32,
    pub(super) dmin: f32,
}

// `k_step` loads `q` and `sc` with aligned loads.
const _: () = assert!(std::mem::offset_of!(Decoded, sc) % 32 == 0);

impl Default for Decoded {
    fn default() -> Decoded {
        Decoded {
            q: [[0; 32]; GROUPS],
            sc: [[0; 16]; GROUPS],
            mins: [0; 8],
            sc16: [0; 16],
            d: 0.0,
            dmin: 0.0,
        }
    }
}

/// A K-quant format the tile decodes.
pub(super) trait DecodeK: BlockFormat {
    /// Which per-block finish the row kernel applies.
    const KIND: Kind;
    fn decode(&self, out: &mut Decoded);
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `acc += (d8 * d) * sumi`, `acc_m += (-d8 * dmin) * (mins · group sums)` in four
    /// lanes; result `hsum_f32x8(acc) + hsum_f32x4(acc_m)`.
    Q4K,
    /// `sumi -= 32 * (scales · bsums)`, `acc += (d8 * d) * sumi`; result `hsum_f32x8(acc)`.
    Q6K,
    /// As Q4K but the mins go into one f32 per row: `summs = fma(-d8 * dmin, (mins ·
    /// group sums) as one integer, summs)`; result `hsum_f32x8(acc) + summs`.
    Q5K,
    /// `acc += (-d8 * dmin) * (mins · bsums in eight lanes)`, then into the same
    /// accumulator `acc += (d8 * d) * sumi`; result `hsum_f32x8(acc)`.
    Q2K,
    /// Quants stored plus 4: `maddubs(4, a)` comes off each pair sum before the scales;
    /// `acc += (d8 * d) * sumi`; result `hsum_f32x8(acc)`.
    Q3K,
    /// Signed levels: `maddubs(|level|, a signed as the level)`; `acc += (d * d8) * sumi`;
    /// result `hsum_f32x8(acc)`.
    Iq4Xs,
}

impl DecodeK for BlockQ4K {
    const KIND: Kind = Kind::Q4K;
    fn decode(&self, out: &mut Decoded) {
        for c in 0..GROUPS / 2 {
            let qs = &self.qs[32 * c..32 * c + 32];
            for (e, &b) in qs.iter().enumerate() {
                out.q[2 * c][e] = b & 0xF;
                out.q[2 * c + 1][e] = b >> 4;
            }
        }
        decode_scales_mins(&self.scales, self.d, self.dmin, out);
    }
}

/// Q4_K's and Q5_K's eight 6-bit scales and mins and their two super-block scales.
fn decode_scales_mins(scales: &[u8; K_SCALE_SIZE], d: F16, dmin: F16, out: &mut Decoded) {
    for g in 0..GROUPS {
        let (sc, m) = scale_min_k4(g, scales);
        out.sc[g] = [sc as i16; 16];
        out.mins[g] = m as i16;
    }
    out.d = d.to_f32();
    out.dmin = dmin.to_f32();
}

impl DecodeK for BlockQ5K {
    const KIND: Kind = Kind::Q5K;
    fn decode(&self, out: &mut Decoded) {
        // Q4_K's nibbles plus 16 where bit g of qh[e] is set, for element e of group g.
        for c in 0..GROUPS / 2 {
            let qs = &self.qs[32 * c..32 * c + 32];
            for (e, (&b, &h)) in qs.iter().zip(&self.qh).enumerate() {
                out.q[2 * c][e] = (b & 0xF) | (((h >> (2 * c)) & 1) << 4);
                out.q[2 * c + 1][e] = (b >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
            }
        }
        decode_scales_mins(&self.scales, self.d, self.dmin, out);
    }
}

impl DecodeK for BlockQ6K {
    const KIND: Kind = Kind::Q6K;
    fn decode(&self, out: &mut Decoded) {
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            for l in 0..32 {
                let g = 4 * half;
                out.q[g][l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                out.q[g + 1][l] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                out.q[g + 2][l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                out.q[g + 3][l] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        for g in 0..GROUPS {
            let (lo, hi) = (self.scales[2 * g] as i16, self.scales[2 * g + 1] as i16);
            out.sc[g] = std::array::from_fn(|i| if i < 8 { lo } else { hi });
        }
        out.sc16 = self.scales.map(|s| s as i16);
        out.d = self.d.to_f32();
    }
}

/// The two 16-weight scales of each group as [`Decoded::sc`] holds them: scale `2g` for
/// the first eight pair lanes, `2g + 1` for the rest.
fn pair_scales(scales: [i16; 16]) -> [[i16; 16]; GROUPS] {
    std::array::from_fn(|g| std::array::from_fn(|i| scales[2 * g + i / 8]))
}

/// Q2_K's and Q3_K's 2-bit fields into `q`: group `4 * half + s` element `l` in bits
/// `2s..2s + 2` of byte `32 * half + l`. Plain loops over whole arrays with a constant
/// shift each, so they compile to byte-vector shifts and masks (the per-element closure
/// this replaced stayed scalar and cost ~5% of a Q3_K_M prompt).
#[inline]
fn crumbs(qs: &[u8; QK_K / 4], q: &mut [[u8; 32]; GROUPS]) {
    for (half, bytes) in qs.chunks_exact(32).enumerate() {
        for s in 0..4 {
            for (dst, &b) in q[4 * half + s].iter_mut().zip(bytes) {
                *dst = (b >> (2 * s)) & 3;
            }
        }
    }
}

impl DecodeK for BlockQ2K {
    const KIND: Kind = Kind::Q2K;
    fn decode(&self, out: &mut Decoded) {
        crumbs(&self.qs, &mut out.q);
        out.sc = pair_scales(self.scales.map(|s| (s & 0xF) as i16));
        out.sc16 = self.scales.map(|s| (s >> 4) as i16);
        out.d = self.d.to_f32();
        out.dmin = self.dmin.to_f32();
    }
}

impl DecodeK for BlockQ3K {
    const KIND: Kind = Kind::Q3K;
    fn decode(&self, out: &mut Decoded) {
        // Low two bits plus 4 where the high bit is set: the signed quant (low bits, less
        // 4 where the high bit is clear) plus 4.
        crumbs(&self.qs, &mut out.q);
        for (g, q) in out.q.iter_mut().enumerate() {
            for (q, &h) in q.iter_mut().zip(&self.hmask) {
                *q |= ((h >> g) & 1) << 2;
            }
        }
        out.sc = pair_scales(self.unpack_scales().map(|s| s as i16));
        out.d = self.d.to_f32();
    }
}

impl DecodeK for BlockIq4Xs {
    const KIND: Kind = Kind::Iq4Xs;
    fn decode(&self, out: &mut Decoded) {
        for g in 0..GROUPS {
            let qs = &self.qs[16 * g..16 * g + 16];
            // Element j in the low nibble of byte j, element j + 16 in its high nibble.
            let levels: [i8; 32] = std::array::from_fn(|e| {
                let nibble = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
                KVALUES_IQ4NL[nibble as usize]
            });
            out.q[g] = levels.map(|v| v as u8);
            out.sc[g] = [(self.scale(g) - 32) as i16; 16];
        }
        out.d = self.d.to_f32();
    }
}

thread_local! {
    static TILE: RefCell<Vec<Decoded>> = const { RefCell::new(Vec::new()) };
}

/// `out[a * n_tile + r] = dot(w row r, act row a)`, as [`super::tiled::matmul`].
pub(super) fn matmul<W: DecodeK>(
    isa: TiledIsa,
    w: &[u8],
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
    block_bytes: usize,
) -> Result<(), QuantError> {
    if isa == TiledIsa::Avx512Vnni {
        return super::interleaved_k::matmul::<W>(Weights::Rows(w), n_cols, act, out, block_bytes);
    }
    let Operands {
        w,
        act,
        k,
        n_tile,
        n_act,
    } = operands::<W, BlockQ8K>(Weights::Rows(w), act, n_cols)?;
    let mut unused = Vec::new();
    TILE.with(|t| {
        let mut tile = t.borrow_mut();
        tile.resize(TILE_ROWS * k, Decoded::default());
        // Activation rows in cache-sized blocks, as in tiled.rs.
        let shape = BatchShape {
            n_act,
            n_tile,
            tile_rows: TILE_ROWS,
            act_step: ACT_STEP,
            block: act_block_rows(block_bytes, std::mem::size_of_val(&act[..k])),
        };
        shape.visit(|v| match v {
            Visit::Tile { r0, rows } => {
                for (i, dec) in tile.chunks_exact_mut(k).enumerate().take(rows) {
                    for (dec, b) in dec.iter_mut().zip(w.tile(r0 + i, 1, k, &mut unused)) {
                        b.decode(dec);
                    }
                }
            }
            Visit::Acts { a0, acts, r0, rows } => {
                let mut sums = [[0f32; TILE_ROWS]; ACT_STEP];
                let y = &act[a0 * k..(a0 + acts) * k];
                // SAFETY: the caller guarantees the CPU runs AVX2.
                unsafe {
                    if acts == 1 {
                        avx2_step::<W, 1>(&tile, k, y, &mut sums)
                    } else {
                        avx2_step::<W, 2>(&tile, k, y, &mut sums)
                    }
                }
                store(out, n_tile, a0, r0, rows, &sums[..acts]);
            }
        });
    });
    Ok(())
}

/// Activation rows per step.
const ACT_STEP: usize = 2;

/// The tile's TILE_ROWS rows against `C` activation rows (`y`: C rows of `k` blocks);
/// `$scaled(sumi, maddubs_result, scales)` adds the scaled pair sums to `sumi`.
macro_rules! k_step {
    ($kind:expr, $tile:expr, $k:expr, $y:expr, $sums:expr, $C:expr, $scaled:expr) => {{
        let (kind, tile, k, y) = ($kind, $tile, $k, $y);
        // Rows as slices of exactly k blocks, so indexing by b < k needs no checks.
        let ys: [&[BlockQ8K]; $C] = rows_of(y, k, 0, usize::MAX);
        let ts: [&[Decoded]; TILE_ROWS] = rows_of(tile, k, 0, usize::MAX);
        let mut acc = [[_mm256_setzero_ps(); TILE_ROWS]; $C];
        let mut acc_m = [[_mm_setzero_ps(); TILE_ROWS]; $C];
        let mut summs = [[0f32; TILE_ROWS]; $C];
        for b in 0..k {
            let mut sumi = [[_mm256_setzero_si256(); TILE_ROWS]; $C];
            for g in 0..GROUPS {
                for j in 0..$C {
                    let qa = &ys[j][b].qs[32 * g..32 * g + 32];
                    // SAFETY: a 32-byte slice of a borrowed activation block.
                    let a = unsafe { _mm256_loadu_si256(qa.as_ptr().cast()) };
                    // Q3_K: the +4 of the stored quants, the same for every row.
                    let four_a = if kind == Kind::Q3K {
                        _mm256_maddubs_epi16(_mm256_set1_epi8(4), a)
                    } else {
                        _mm256_setzero_si256()
                    };
                    for i in 0..TILE_ROWS {
                        let dec: &Decoded = &ts[i][b];
                        // SAFETY: 32-byte arrays of a borrowed, 32-byte aligned decoded block.
                        let (q, sc) = unsafe {
                            (
                                _mm256_load_si256(dec.q[g].as_ptr().cast()),
                                _mm256_load_si256(dec.sc[g].as_ptr().cast()),
                            )
                        };
                        let p16 = match kind {
                            Kind::Q3K => _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), four_a),
                            // `q`: signed levels.
                            Kind::Iq4Xs => {
                                _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(a, q))
                            }
                            _ => _mm256_maddubs_epi16(q, a),
                        };
                        sumi[j][i] = $scaled(sumi[j][i], p16, sc);
                    }
                }
            }
            for j in 0..$C {
                let yb: &BlockQ8K = &ys[j][b];
                // SAFETY: the 32-byte `bsums` of a borrowed activation block.
                let bsums = unsafe { _mm256_loadu_si256(yb.bsums.as_ptr().cast()) };
                let group_sums = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums),
                    _mm256_extracti128_si256(bsums, 1),
                );
                for i in 0..TILE_ROWS {
                    let dec: &Decoded = &ts[i][b];
                    let mut s = sumi[j][i];
                    if kind == Kind::Q6K {
                        // SAFETY: the 32-byte `sc16` of a borrowed decoded block.
                        let sc16 = unsafe { _mm256_loadu_si256(dec.sc16.as_ptr().cast()) };
                        s = _mm256_sub_epi32(
                            s,
                            _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5),
                        );
                    }
                    if kind == Kind::Q2K {
                        // The mins before the quants, into the same accumulator.
                        // SAFETY: the 32-byte `sc16` of a borrowed decoded block.
                        let mins = unsafe { _mm256_loadu_si256(dec.sc16.as_ptr().cast()) };
                        let prod = _mm256_madd_epi16(mins, bsums);
                        let dmin = -yb.d * dec.dmin;
                        acc[j][i] = _mm256_fmadd_ps(
                            _mm256_set1_ps(dmin),
                            _mm256_cvtepi32_ps(prod),
                            acc[j][i],
                        );
                    }
                    let d = yb.d * dec.d;
                    acc[j][i] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[j][i]);
                    if kind == Kind::Q4K {
                        // SAFETY: the 16-byte `mins` of a borrowed decoded block.
                        let mins = unsafe { _mm_loadu_si128(dec.mins.as_ptr().cast()) };
                        let prod = _mm_madd_epi16(mins, group_sums);
                        let dmin = -yb.d * dec.dmin;
                        acc_m[j][i] =
                            _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[j][i]);
                    }
                    if kind == Kind::Q5K {
                        // SAFETY: the 16-byte `mins` of a borrowed decoded block; AVX2
                        // per the caller.
                        let total = unsafe {
                            let mins = _mm_loadu_si128(dec.mins.as_ptr().cast());
                            hsum_i32x4(_mm_madd_epi16(mins, group_sums))
                        };
                        let dmin = -yb.d * dec.dmin;
                        summs[j][i] = dmin.mul_add(total as f32, summs[j][i]);
                    }
                }
            }
        }
        for j in 0..$C {
            for i in 0..TILE_ROWS {
                $sums[j][i] = match kind {
                    Kind::Q4K => hsum_f32x8(acc[j][i]) + hsum_f32x4(acc_m[j][i]),
                    Kind::Q5K => hsum_f32x8(acc[j][i]) + summs[j][i],
                    Kind::Q6K | Kind::Q2K | Kind::Q3K | Kind::Iq4Xs => hsum_f32x8(acc[j][i]),
                };
            }
        }
    }};
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_step<W: DecodeK, const C: usize>(
    tile: &[Decoded],
    k: usize,
    y: &[BlockQ8K],
    sums: &mut [[f32; TILE_ROWS]; ACT_STEP],
) {
    // SAFETY: AVX2/FMA per the caller; the loads in k_step carry their own reasons.
    unsafe {
        let scaled = |sumi: __m256i, p16: __m256i, sc: __m256i| {
            _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16))
        };
        k_step!(W::KIND, tile, k, y, sums, C, scaled)
    }
}
