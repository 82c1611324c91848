//! The AVX-512 VNNI batch kernel for the Q8-family formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL): sixteen weight rows interleaved so that each i32 lane of a 512-bit register
//! holds one row's whole block dot.
//!
//! [`super::tiled`]'s tile keeps the row kernels' eight lanes per dot, so every block of
//! every (weight row, activation row) pair costs one `dpbusd` and three f32 instructions
//! (convert, scale product, `fma`): the float work, not the integer work, bounds it. Here
//! a tile of [`LANES`] weight rows is decoded per block into eight vectors, vector `c`
//! holding quants `4c..4c + 4` of row `l` in lane `l`; eight `dpbusd` against the
//! activation's eight four-byte groups (each broadcast to every lane) leave each lane the
//! exact integer block sum of its row, and one convert and two or three f32 instructions
//! then finish sixteen dots at once.
//!
//! Per block each lane computes exactly what the scalar reference (`formats::*::vec_dot`)
//! computes: the integer sum, converted to f32, scaled in the reference's order (Q4_0:
//! `(sumi * d_w) * d_a`; the others: `sumi * (d_w * d_a)`, plus `m_w * s_a` for Q4_1 and
//! Q5_1), added to the running sum in block order. So a batch on this kernel gives the
//! scalar table's bits, not the AVX2 row kernels' (those keep ggml's AVX2 lane order); both
//! are ggml's own results for the same data, by different paths.
//!
//! `dpbusd` multiplies unsigned by signed bytes: signed weights are stored as `w ^ 0x80`
//! (= w + 128) and each activation block's sum starts from `-128 * sum(a)`, which leaves
//! exactly `sum(w * a)`; Q4_1 and Q5_1 quants are already unsigned.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::avx2;
use super::tiled::{act_block_rows, rows_of, Q8Act, Unpack};
use crate::formats::*;
use crate::{cast, QuantError, F16};

/// Weight rows per tile: one per i32 lane.
pub(super) const LANES: usize = 16;

/// Activation rows per step: each loaded weight vector feeds this many `dpbusd`.
const ACT_STEP: usize = 4;

/// Four-byte groups in a block of 32 quants.
const GROUPS: usize = QK32 / 4;

/// One block of the tile's sixteen rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct TileBlock {
    /// `q[c][l]`: quants `4c..4c + 4` of row `l`, as unsigned bytes (little-endian).
    q: [[u32; LANES]; GROUPS],
    /// Each row's d and m (m: Q4_1/Q5_1 only) as f32.
    d: [f32; LANES],
    m: [f32; LANES],
}

impl Default for TileBlock {
    fn default() -> TileBlock {
        TileBlock {
            q: [[0; LANES]; GROUPS],
            d: [0.0; LANES],
            m: [0.0; LANES],
        }
    }
}

/// What the kernel needs of one activation block besides its quants.
#[derive(Clone, Copy, Default)]
struct ActBlock {
    /// The integer sum's starting value: `-128 * sum(a)` for signed weights, else 0.
    corr: i32,
    d: f32,
    s: f32,
}

/// Per-thread buffers, grown once and reused.
#[derive(Default)]
struct Scratch {
    tile: Vec<TileBlock>,
    act: Vec<ActBlock>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)`, as [`super::tiled::matmul`], on
/// AVX-512 VNNI. The caller holds a table handed out only after detecting it.
pub(super) fn matmul<W: UnpackU8, A: Q8Act>(
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
        s.tile.resize(k, TileBlock::default());
        s.act.resize(act.len(), ActBlock::default());
        for (a, info) in act.iter().zip(s.act.iter_mut()) {
            let [d, sa] = a.d_s();
            let sum: i32 = a.qs().iter().map(|&v| v as i32).sum();
            *info = ActBlock {
                corr: if W::HAS_MIN { 0 } else { -128 * sum },
                d: d.to_f32(),
                s: sa.to_f32(),
            };
        }
        // Activation rows in cache-sized blocks, as in tiled.rs.
        let row_bytes = k * (std::mem::size_of::<A>() + std::mem::size_of::<ActBlock>());
        let block = act_block_rows(block_bytes, row_bytes);
        for ab in (0..n_act).step_by(block) {
            let ab_end = (ab + block).min(n_act);
            for r0 in (0..n_tile).step_by(LANES) {
                let rows = LANES.min(n_tile - r0);
                // SAFETY: AVX-512 F (with AVX2, F16C) per the caller.
                unsafe { decode(&w[r0 * k..(r0 + rows) * k], k, &mut s.tile) };
                for a0 in (ab..ab_end).step_by(ACT_STEP) {
                    let acts = ACT_STEP.min(ab_end - a0);
                    let (y, info) = (&act[a0 * k..(a0 + acts) * k], &s.act[a0 * k..]);
                    let mut sums = [[0f32; LANES]; ACT_STEP];
                    // SAFETY: AVX-512 F/VNNI per the caller.
                    unsafe {
                        match acts {
                            4 => step::<W, A, 4>(&s.tile, y, info, k, &mut sums),
                            3 => step::<W, A, 3>(&s.tile, y, info, k, &mut sums),
                            2 => step::<W, A, 2>(&s.tile, y, info, k, &mut sums),
                            _ => step::<W, A, 1>(&s.tile, y, info, k, &mut sums),
                        }
                    }
                    for (a, s) in sums.iter().enumerate().take(acts) {
                        out[(a0 + a) * n_tile + r0..][..rows].copy_from_slice(&s[..rows]);
                    }
                }
            }
        }
    });
    Ok(())
}

/// A weight block as the interleaved tile stores it.
pub(super) trait UnpackU8: Unpack {
    /// The 32 quants in element order as `dpbusd`'s unsigned bytes: `w ^ 0x80` (= w + 128)
    /// for signed formats, the stored value for Q4_1/Q5_1. `table` is
    /// [`avx2::iq4nl_table`] (only IQ4_NL uses it).
    ///
    /// # Safety
    /// AVX2 must be available; inlined into callers that enable it.
    unsafe fn unpack_u8(&self, table: __m256i) -> __m256i;
    /// d and m (zero without a minimum) as stored.
    fn d_m(&self) -> [F16; 2];
}

impl UnpackU8 for BlockQ4_0 {
    #[inline(always)]
    unsafe fn unpack_u8(&self, _: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller; the helper loads exactly `qs`.
        // n + 120 = (n - 8) + 128.
        unsafe { _mm256_add_epi8(avx2::bytes_from_nibbles_32(&self.qs), _mm256_set1_epi8(120)) }
    }
    fn d_m(&self) -> [F16; 2] {
        [self.d, F16::ZERO]
    }
}

impl UnpackU8 for BlockQ4_1 {
    #[inline(always)]
    unsafe fn unpack_u8(&self, _: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller; the helper loads exactly `qs`.
        unsafe { avx2::bytes_from_nibbles_32(&self.qs) }
    }
    fn d_m(&self) -> [F16; 2] {
        [self.d, self.m]
    }
}

/// Q5_0/Q5_1 quants 0..=31: the nibbles with the fifth bit from `qh`.
#[inline(always)]
unsafe fn five_bits(qs: &[u8; 16], qh: &[u8; 4]) -> __m256i {
    // SAFETY: AVX2 per the caller; the helpers read exactly `qs` and `qh`.
    unsafe {
        let high = _mm256_and_si256(avx2::bytes_from_bits_32(qh), _mm256_set1_epi8(0x10));
        _mm256_or_si256(avx2::bytes_from_nibbles_32(qs), high)
    }
}

impl UnpackU8 for BlockQ5_0 {
    #[inline(always)]
    unsafe fn unpack_u8(&self, _: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller. q + 112 = (q - 16) + 128.
        unsafe { _mm256_add_epi8(five_bits(&self.qs, &self.qh), _mm256_set1_epi8(112)) }
    }
    fn d_m(&self) -> [F16; 2] {
        [self.d, F16::ZERO]
    }
}

impl UnpackU8 for BlockQ5_1 {
    #[inline(always)]
    unsafe fn unpack_u8(&self, _: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller.
        unsafe { five_bits(&self.qs, &self.qh) }
    }
    fn d_m(&self) -> [F16; 2] {
        [self.d, self.m]
    }
}

impl UnpackU8 for BlockQ8_0 {
    #[inline(always)]
    unsafe fn unpack_u8(&self, _: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller; the load reads exactly `qs`.
        unsafe {
            let q = _mm256_loadu_si256(self.qs.as_ptr().cast());
            _mm256_xor_si256(q, _mm256_set1_epi8(i8::MIN))
        }
    }
    fn d_m(&self) -> [F16; 2] {
        [self.d, F16::ZERO]
    }
}

impl UnpackU8 for BlockIq4Nl {
    #[inline(always)]
    unsafe fn unpack_u8(&self, table: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller; the helper loads exactly `qs`.
        unsafe {
            let levels = avx2::iq4nl_levels_32(table, &self.qs);
            _mm256_xor_si256(levels, _mm256_set1_epi8(i8::MIN))
        }
    }
    fn d_m(&self) -> [F16; 2] {
        [self.d, F16::ZERO]
    }
}

/// Decode `w` (up to [`LANES`] rows of `k` blocks) into the interleaved tile; missing
/// rows get zero quants and scales (their lanes are computed and dropped).
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn decode<W: UnpackU8>(w: &[W], k: usize, tile: &mut [TileBlock]) {
    let n = w.len() / k;
    // SAFETY: AVX2/F16C/AVX-512F per the caller; the helpers' loads read their blocks.
    unsafe {
        let table = avx2::iq4nl_table();
        for (b, t) in tile.iter_mut().enumerate().take(k) {
            let mut rows = [_mm256_setzero_si256(); LANES];
            for l in 0..LANES {
                if l < n {
                    let blk = &w[l * k + b];
                    rows[l] = blk.unpack_u8(table);
                    let [d, m] = blk.d_m();
                    let dm =
                        _mm_cvtph_ps(_mm_cvtsi32_si128((d.0 as u32 | (m.0 as u32) << 16) as i32));
                    t.d[l] = _mm_cvtss_f32(dm);
                    t.m[l] = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                } else {
                    t.d[l] = 0.0;
                    t.m[l] = 0.0;
                }
            }
            transpose_into(&rows, &mut t.q);
        }
    }
}

/// `q[c][l]` = four-byte group `c` of `rows[l]`: a 16 x 8 transpose of u32. Rows `l` and
/// `l + 8` share a register; three rounds of shuffles within 128-bit lanes and one across
/// them leave group `c` of all sixteen rows in one register.
#[inline(always)]
unsafe fn transpose_into(rows: &[__m256i; LANES], q: &mut [[u32; LANES]; GROUPS]) {
    // SAFETY: register-only AVX-512F shuffles per the caller; each store writes one
    // 64-byte array of `q`, which is 64-byte aligned within a TileBlock.
    unsafe {
        let mut z = [_mm512_setzero_si512(); 8];
        for i in 0..8 {
            z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(rows[i]), rows[i + 8], 1);
        }
        // Per 128-bit lane: t[2i] = rows (2i, 2i+1) groups 0,1 (4,5), t[2i+1] groups 2,3 (6,7).
        let mut t = [_mm512_setzero_si512(); 8];
        for i in 0..4 {
            t[2 * i] = _mm512_unpacklo_epi32(z[2 * i], z[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(z[2 * i], z[2 * i + 1]);
        }
        // u[c] (c < 4): rows 0..4 (8..12) of group c, and c + 4 in the odd lanes; u[c + 4]
        // the same for rows 4..8 (12..16).
        let mut u = [_mm512_setzero_si512(); 8];
        for h in 0..2 {
            let (a, b) = (&t[4 * h..4 * h + 2], &t[4 * h + 2..4 * h + 4]);
            u[4 * h] = _mm512_unpacklo_epi64(a[0], b[0]);
            u[4 * h + 1] = _mm512_unpackhi_epi64(a[0], b[0]);
            u[4 * h + 2] = _mm512_unpacklo_epi64(a[1], b[1]);
            u[4 * h + 3] = _mm512_unpackhi_epi64(a[1], b[1]);
        }
        let lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
        let hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
        for c in 0..4 {
            let g = _mm512_permutex2var_epi64(u[c], lo, u[c + 4]);
            let g4 = _mm512_permutex2var_epi64(u[c], hi, u[c + 4]);
            _mm512_store_si512(q[c].as_mut_ptr().cast(), g);
            _mm512_store_si512(q[c + 4].as_mut_ptr().cast(), g4);
        }
    }
}

/// The tile against `C` activation rows (`y`: C rows of `k` blocks, `info` their
/// [`ActBlock`]s from the first); `sums[j][l]` gets the dot of row `l` with row `j`.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn step<W: UnpackU8, A: Q8Act, const C: usize>(
    tile: &[TileBlock],
    y: &[A],
    info: &[ActBlock],
    k: usize,
    sums: &mut [[f32; LANES]; ACT_STEP],
) {
    // Rows as slices of exactly k blocks, so indexing by b < k needs no checks.
    let ys: [&[A]; C] = rows_of(y, k, 0, usize::MAX);
    let infos: [&[ActBlock]; C] = rows_of(info, k, 0, usize::MAX);
    let tile = &tile[..k];
    // SAFETY: AVX-512 F/VNNI per the caller; each load reads one 64-byte array of a
    // borrowed, 64-byte aligned tile block.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); C];
        for (b, t) in tile.iter().enumerate() {
            // Plain loops, no closures: a closure here would not inline (see rows_of).
            let mut sumi = [_mm512_setzero_si512(); C];
            for j in 0..C {
                sumi[j] = _mm512_set1_epi32(infos[j][b].corr);
            }
            for c in 0..GROUPS {
                let w = _mm512_load_si512(t.q[c].as_ptr().cast());
                for j in 0..C {
                    let f = &ys[j][b].qs()[4 * c..4 * c + 4];
                    let a = i32::from_le_bytes([f[0] as u8, f[1] as u8, f[2] as u8, f[3] as u8]);
                    sumi[j] = _mm512_dpbusd_epi32(sumi[j], w, _mm512_set1_epi32(a));
                }
            }
            let dw = _mm512_load_ps(t.d.as_ptr());
            for j in 0..C {
                let f = _mm512_cvtepi32_ps(sumi[j]);
                let da = _mm512_set1_ps(infos[j][b].d);
                let mut term = if W::SCALE_W_FIRST {
                    _mm512_mul_ps(_mm512_mul_ps(f, dw), da)
                } else {
                    _mm512_mul_ps(f, _mm512_mul_ps(dw, da))
                };
                if W::HAS_MIN {
                    let ms =
                        _mm512_mul_ps(_mm512_load_ps(t.m.as_ptr()), _mm512_set1_ps(infos[j][b].s));
                    term = _mm512_add_ps(term, ms);
                }
                acc[j] = _mm512_add_ps(acc[j], term);
            }
        }
        for j in 0..C {
            _mm512_storeu_ps(sums[j].as_mut_ptr(), acc[j]);
        }
    }
}
