//! The AVX-512 VNNI batch kernel for the Q8-family formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL): sixteen weight rows interleaved, one row per i32 lane of a 512-bit register.
//!
//! The AVX2 row kernel keeps, per dot, eight f32 lanes: lane `c` accumulates, block by
//! block, `d_w * d_a` times the four-product sum of the block's quants `4c..4c + 4`; a
//! horizontal sum finishes it. [`super::tiled`]'s 4x4 tile does the same with each
//! (weight row, activation row) pair in a register of its own, so a register's lanes are
//! one dot's eight groups. Here the tile is transposed: a tile of [`LANES`] weight rows is
//! decoded per block into eight vectors, vector `c` holding quants `4c..4c + 4` of row `l`
//! in lane `l`, and the f32 accumulator of group `c` holds that group for sixteen rows. One
//! `dpbusd` (against the activation's four-byte group `c`, broadcast), one convert and one
//! `fma` then advance sixteen dots where the tile advanced one, and the scale product is
//! formed once per block and activation row for all sixteen. The eight accumulators are
//! added at the end in the order of the row kernel's horizontal sum.
//!
//! So every lane computes exactly what the AVX2 row kernel computes for its row: the same
//! integers, the same f32 products, the same `fma` chain, the same final additions — a
//! batch gives the bits of `vec_dot`.
//!
//! `dpbusd` multiplies unsigned by signed bytes: signed weights are stored as `w ^ 0x80`
//! (= w + 128) and each group's sum starts from `-128 * (its four activation quants'
//! sum)`, which leaves exactly the signed sum; Q4_1 and Q5_1 quants are already unsigned.

#![allow(unused_unsafe)] // see avx2.rs: intrinsics are safe calls inside target_feature fns

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::avx2;
use super::tiled::{
    act_block_rows, operands, rows_of, store, BatchShape, Operands, Q8Act, Unpack, Visit, Weights,
};
use crate::formats::*;
use crate::packed::{BlockQ4_0x16, BlockQ5_0x16};
use crate::{QuantError, F16};

/// Weight rows per tile: one per i32 lane.
pub(super) const LANES: usize = 16;

/// Activation rows per step: each loaded weight vector feeds this many `dpbusd`
/// (eight accumulators per row: two rows fill half the 32 registers).
const ACT_STEP: usize = 2;

/// Packed blocks between the one computed and the one prefetched.
const PREFETCH: usize = 8;

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
    /// Each four-quant group's integer sum's starting value: `-bias * (the group's sum)`
    /// for weights stored as w + bias.
    corr: [i32; GROUPS],
    d: f32,
    s: f32,
}

/// Per-thread buffers, grown once and reused.
#[derive(Default)]
struct Scratch {
    tile: Vec<TileBlock>,
    /// Packed weight rows put back for decoding.
    rows: Vec<u64>,
    act: Vec<ActBlock>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[a * n_tile + r] = dot(w row r, act row a)`, as [`super::tiled::matmul`], on
/// AVX-512 VNNI. The caller holds a table handed out only after detecting it.
pub(super) fn matmul<W: UnpackU8, A: Q8Act>(
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
    } = operands::<W, A>(w, act, n_cols)?;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        s.tile.resize(k, TileBlock::default());
        prepare_acts(&act, if W::HAS_MIN { 0 } else { 128 }, &mut s.act);
        // Activation rows in cache-sized blocks, as in tiled.rs.
        let row_bytes = k * (std::mem::size_of::<A>() + std::mem::size_of::<ActBlock>());
        let shape = BatchShape {
            n_act,
            n_tile,
            tile_rows: LANES,
            act_step: ACT_STEP,
            block: act_block_rows(block_bytes, row_bytes),
        };
        shape.visit(|v| match v {
            // SAFETY: AVX-512 F (with AVX2, F16C) per the caller.
            Visit::Tile { r0, rows } => unsafe {
                decode(w.tile(r0, rows, k, &mut s.rows), k, &mut s.tile)
            },
            Visit::Acts { a0, acts, r0, rows } => {
                let (y, info) = (&act[a0 * k..(a0 + acts) * k], &s.act[a0 * k..]);
                let mut sums = [[0f32; LANES]; ACT_STEP];
                // SAFETY: AVX-512 F/VNNI per the caller.
                unsafe {
                    if acts == 2 {
                        step::<W, A, 2>(&s.tile, y, info, k, &mut sums)
                    } else {
                        step::<W, A, 1>(&s.tile, y, info, k, &mut sums)
                    }
                }
                store(out, n_tile, a0, r0, rows, &sums[..acts]);
            }
        });
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

/// Each activation block's [`ActBlock`], for weights stored as w + `bias`.
fn prepare_acts<A: Q8Act>(act: &[A], bias: i32, out: &mut Vec<ActBlock>) {
    out.resize(act.len(), ActBlock::default());
    for (a, info) in act.iter().zip(out.iter_mut()) {
        let [d, s] = a.d_s();
        let mut corr = [0i32; GROUPS];
        for (c, four) in corr.iter_mut().zip(a.qs().chunks_exact(4)) {
            *c = -bias * four.iter().map(|&v| v as i32).sum::<i32>();
        }
        *info = ActBlock {
            corr,
            d: d.to_f32(),
            s: s.to_f32(),
        };
    }
}

/// A packed block of sixteen rows ([`crate::packed`]) as [`packed_step`] reads it.
pub(super) trait PackedBlock: Copy {
    /// What the stored quants exceed the signed ones by (each activation group's sum
    /// starts from `-BIAS * sum(a)`).
    const BIAS: i32;
    /// Cache lines of one block, for the prefetch.
    const LINES: usize = std::mem::size_of::<Self>().div_ceil(64);
    /// The eight four-quant vectors, group `c` in vector `c`, unsigned.
    ///
    /// # Safety
    /// AVX-512 F/BW must be available; inlined into callers that enable it.
    unsafe fn groups(&self) -> [__m512i; GROUPS];
    fn scales(&self) -> &[F16; LANES];
}

/// The nibble vectors of a Q4_0-style packed block: low nibbles groups 0..4, high 4..8.
#[inline(always)]
unsafe fn nibble_groups(qs: &[[u32; LANES]; 4]) -> [__m512i; GROUPS] {
    // SAFETY: AVX-512 F/BW per the caller; each load reads one array of the block.
    unsafe {
        let nib = _mm512_set1_epi8(0x0F);
        let p: [__m512i; 4] = std::array::from_fn(|c| _mm512_loadu_si512(qs[c].as_ptr().cast()));
        std::array::from_fn(|c| {
            if c < 4 {
                _mm512_and_si512(p[c], nib)
            } else {
                _mm512_and_si512(_mm512_srli_epi16(p[c - 4], 4), nib)
            }
        })
    }
}

impl PackedBlock for BlockQ4_0x16 {
    const BIAS: i32 = 8;
    #[inline(always)]
    unsafe fn groups(&self) -> [__m512i; GROUPS] {
        // SAFETY: AVX-512 per the caller.
        unsafe { nibble_groups(&self.qs) }
    }
    fn scales(&self) -> &[F16; LANES] {
        &self.d
    }
}

impl PackedBlock for BlockQ5_0x16 {
    const BIAS: i32 = 16;
    #[inline(always)]
    unsafe fn groups(&self) -> [__m512i; GROUPS] {
        // SAFETY: AVX-512 F/BW per the caller. Each group's fifth bits are a byte mask:
        // a masked add of 16 makes the nibbles q = w + 16.
        unsafe {
            let sixteen = _mm512_set1_epi8(16);
            let v = nibble_groups(&self.qs);
            std::array::from_fn(|c| _mm512_mask_add_epi8(v[c], self.qh[c], v[c], sixteen))
        }
    }
    fn scales(&self) -> &[F16; LANES] {
        &self.d
    }
}

/// `out[a * n + r] = dot(row rows.start + r, act row a)` for weights repacked at load
/// (`tiles`: those covering `rows`, `k` blocks each) and Q8_0 activations, on AVX-512
/// VNNI: the stored quants are w + BIAS, so each activation group's sum starts from
/// `-BIAS * sum(a)`; then as [`step`]. The caller holds a table handed out only after
/// detecting AVX-512.
pub(super) fn matmul_x16<T: PackedBlock>(
    tiles: &[T],
    k: usize,
    n_rows: usize,
    act: &[BlockQ8_0],
    out: &mut [f32],
    block_bytes: usize,
) {
    let n_act = act.len() / k;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        prepare_acts(act, T::BIAS, &mut s.act);
        let row_bytes = k * (std::mem::size_of::<BlockQ8_0>() + std::mem::size_of::<ActBlock>());
        let shape = BatchShape {
            n_act,
            n_tile: n_rows,
            tile_rows: LANES,
            act_step: ACT_STEP,
            block: act_block_rows(block_bytes, row_bytes),
        };
        // The tiles were packed at load: nothing to decode.
        shape.visit(|v| {
            if let Visit::Acts { a0, acts, r0, rows } = v {
                let tile = &tiles[r0 / LANES * k..][..k];
                let (y, info) = (&act[a0 * k..(a0 + acts) * k], &s.act[a0 * k..]);
                let mut sums = [[0f32; LANES]; ACT_STEP];
                // SAFETY: AVX-512 F/BW/VNNI, AVX2, F16C per the caller.
                unsafe {
                    if acts == 2 {
                        packed_step::<T, 2>(tile, y, info, k, &mut sums)
                    } else {
                        packed_step::<T, 1>(tile, y, info, k, &mut sums)
                    }
                }
                store(out, n_rows, a0, r0, rows, &sums[..acts]);
            }
        });
    });
}

/// [`step`] for a packed tile: the eight four-quant vectors come straight from the block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn packed_step<T: PackedBlock, const C: usize>(
    tile: &[T],
    y: &[BlockQ8_0],
    info: &[ActBlock],
    k: usize,
    sums: &mut [[f32; LANES]; ACT_STEP],
) {
    let ys: [&[BlockQ8_0]; C] = rows_of(y, k, 0, usize::MAX);
    let infos: [&[ActBlock]; C] = rows_of(info, k, 0, usize::MAX);
    let tile = &tile[..k];
    // SAFETY: AVX-512 F/BW/VNNI and F16C per the caller; each load reads one array of a
    // borrowed packed block; prefetches never fault.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; C];
        for (b, t) in tile.iter().enumerate() {
            // One token reads the matrix once, from DRAM: ask for the block PREFETCH
            // blocks ahead while this one is computed.
            let ahead = tile.as_ptr().wrapping_add(b + PREFETCH).cast::<i8>();
            for line in 0..T::LINES {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(t.scales().as_ptr().cast()));
            let mut d = [_mm512_setzero_ps(); C];
            for j in 0..C {
                d[j] = _mm512_mul_ps(dw, _mm512_set1_ps(infos[j][b].d));
            }
            for (c, w) in t.groups().into_iter().enumerate() {
                for j in 0..C {
                    group_fma(&mut acc[j][c], w, &ys[j][b], &infos[j][b], c, d[j]);
                }
            }
        }
        for j in 0..C {
            _mm512_storeu_ps(sums[j].as_mut_ptr(), hsum_groups(&acc[j]));
        }
    }
}

/// The first four activation quants of `q` as one i32, in every lane: `dpbusd`'s
/// activation operand.
#[inline(always)]
pub(super) unsafe fn broadcast4(q: &[i8]) -> __m512i {
    let four = i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
    // SAFETY: a register-only AVX-512 F broadcast, enabled by every caller.
    unsafe { _mm512_set1_epi32(four) }
}

/// `acc += d * f32(four-product sums of group c)` for sixteen rows (`w`: their unsigned
/// quants of group `c`): one lane of the row kernel's accumulator, for each row.
#[inline(always)]
unsafe fn group_fma<A: Q8Act>(
    acc: &mut __m512,
    w: __m512i,
    a: &A,
    info: &ActBlock,
    c: usize,
    d: __m512,
) {
    // SAFETY: register-only AVX-512 F/VNNI, enabled by every caller.
    unsafe {
        let four = broadcast4(&a.qs()[4 * c..]);
        let sumi = _mm512_dpbusd_epi32(_mm512_set1_epi32(info.corr[c]), w, four);
        *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), *acc);
    }
}

/// The eight group accumulators summed as the row kernel's horizontal sum adds its eight
/// lanes: `((g0 + g4) + (g2 + g6)) + ((g1 + g5) + (g3 + g7))`.
#[inline(always)]
pub(super) unsafe fn hsum_groups(g: &[__m512; GROUPS]) -> __m512 {
    // SAFETY: register-only AVX-512 F, enabled by every caller.
    unsafe {
        let t: [__m512; 4] = [
            _mm512_add_ps(g[4], g[0]),
            _mm512_add_ps(g[5], g[1]),
            _mm512_add_ps(g[6], g[2]),
            _mm512_add_ps(g[7], g[3]),
        ];
        let u0 = _mm512_add_ps(t[0], t[2]);
        let u1 = _mm512_add_ps(t[1], t[3]);
        _mm512_add_ps(u0, u1)
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
#[target_feature(enable = "avx2,fma,avx512f,avx512vnni")]
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
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; C];
        // Q4_1/Q5_1: the minimum's part, m_w * s_a, summed in block order as the row
        // kernel sums it (a plain f32 product and add, per row).
        let mut summs = [_mm512_setzero_ps(); C];
        for (b, t) in tile.iter().enumerate() {
            let dw = _mm512_load_ps(t.d.as_ptr());
            // Plain loops, no closures: a closure here would not inline (see rows_of).
            let mut d = [_mm512_setzero_ps(); C];
            for j in 0..C {
                d[j] = _mm512_mul_ps(dw, _mm512_set1_ps(infos[j][b].d));
                if W::HAS_MIN {
                    let ms =
                        _mm512_mul_ps(_mm512_load_ps(t.m.as_ptr()), _mm512_set1_ps(infos[j][b].s));
                    summs[j] = _mm512_add_ps(summs[j], ms);
                }
            }
            for (c, q) in t.q.iter().enumerate() {
                let w = _mm512_load_si512(q.as_ptr().cast());
                for j in 0..C {
                    group_fma(&mut acc[j][c], w, &ys[j][b], &infos[j][b], c, d[j]);
                }
            }
        }
        for j in 0..C {
            let mut total = hsum_groups(&acc[j]);
            if W::HAS_MIN {
                total = _mm512_add_ps(total, summs[j]);
            }
            _mm512_storeu_ps(sums[j].as_mut_ptr(), total);
        }
    }
}
