//! Weight rows repacked at load for the AVX-512 kernels: sixteen rows interleaved so one
//! 512-bit register holds a four-quant group of every row (what llama.cpp's `repack.cpp`
//! does for its own kernels, in loupe's own layout). Q4_0, Q5_0, Q4_K and Q6_K are
//! repacked: their row kernels cannot keep up with memory on a token (the per-block
//! unpacking and scale work), or keep up only with the weights spread over many 4 KiB
//! pages; the interleaved kernels stream one huge-page-backed tile after another.
//!
//! A [`BlockQ4_0x16`] holds block `b` of sixteen consecutive rows: the same 288 bytes as
//! the sixteen Q4_0 blocks, only moved. `qs[c]` is four bytes per row, row `l` at bytes
//! `4l..4l + 4`: that row's `qs[4c..4c + 4]`, whose low nibbles are elements `4c..4c + 4`
//! and high nibbles elements `16 + 4c..16 + 4c + 4`. A mask and a shift then give the
//! kernel two vectors of sixteen rows' four-quant groups, with no decoding.
//!
//! A [`BlockQ4Kx16`] holds super-block `b` of sixteen rows the same way (`qs[p][c]`: each
//! row's `qs[32p + 4c..][..4]`, low nibbles group `2p`, high nibbles group `2p + 1`), with
//! the 6-bit scales and mins unpacked to bytes: 2368 bytes for the 2304 of sixteen Q4_K
//! super-blocks.
//!
//! A [`BlockQ6Kx16`] moves sixteen Q6_K super-blocks' bytes the same way, nibbles and
//! high bits apart as the format keeps them: 3360 bytes, no more than the rows'.
//!
//! A [`BlockQ5_0x16`] adds the fifth bits as a byte mask per vector (the same 352 bytes
//! as sixteen Q5_0 blocks): one masked add makes the quants.
//!
//! Row-major rows stream one at a time; a tile streams sixteen from one place, so a token
//! reads the matrix in one sequential pass while every load feeds sixteen dots.

use std::ops::Range;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::formats::k_quants::scale_min::{pack_scale_min_k4, scale_min_k4};
use crate::formats::{BlockQ4K, BlockQ4_0, BlockQ5_0, BlockQ6K};
use crate::{cast, BlockFormat, GgmlType, QuantError, F16};

/// Rows per packed tile.
pub const PACKED_ROWS: usize = 16;

/// Block `b` of sixteen Q4_0 rows (see the module docs).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0x16 {
    /// `qs[c][l]` = row `l`'s `qs[4c..4c + 4]` (the same four bytes, in memory order).
    pub qs: [[u32; PACKED_ROWS]; 4],
    /// Row `l`'s scale.
    pub d: [F16; PACKED_ROWS],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0x16>() == PACKED_ROWS * 18);

/// Block `b` of sixteen Q5_0 rows: the nibbles as [`BlockQ4_0x16`] holds them, and the
/// fifth bits as one byte mask per four-quant vector: bit `4l + i` of `qh[c]` is the fifth
/// bit of row `l`'s element `4c + i` (`c < 4`) or `16 + 4(c - 4) + i`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0x16 {
    pub qs: [[u32; PACKED_ROWS]; 4],
    pub qh: [u64; 8],
    pub d: [F16; PACKED_ROWS],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0x16>() == PACKED_ROWS * 22);

/// Super-block `b` of sixteen Q4_K rows (see the module docs).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4Kx16 {
    // Scales first: the kernel reads a block front to back.
    /// `scales[g][l]`: row `l`'s scale of group `g` (0..=63).
    pub scales: [[u8; PACKED_ROWS]; 8],
    /// `mins[m][l]`: row `l`'s mins of groups `2m` and `2m + 1`.
    pub mins: [[[u8; 2]; PACKED_ROWS]; 4],
    pub d: [F16; PACKED_ROWS],
    pub dmin: [F16; PACKED_ROWS],
    /// `qs[p][c][l]` = row `l`'s `qs[32p + 4c..32p + 4c + 4]`.
    pub qs: [[[u32; PACKED_ROWS]; 8]; 4],
}

const _: () = assert!(std::mem::size_of::<BlockQ4Kx16>() == 2368);

/// Super-block `b` of sixteen Q6_K rows, each row's bytes moved, none changed, in the
/// order the kernel reads them.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6Kx16 {
    /// `scales[j][l]`: row `l`'s scale of weights `16j..16j + 16`.
    pub scales: [[i8; PACKED_ROWS]; 16],
    pub d: [F16; PACKED_ROWS],
    /// For quants `4c..4c + 4` of groups `4n..4n + 4`, row `l` in lane `l`:
    /// `q[c][n][h]` (h < 2) = row `l`'s `ql[64n + 32h + 4c..][..4]`, whose low nibbles
    /// belong to group `4n + h` and high nibbles to group `4n + h + 2`;
    /// `q[c][n][2]` = row `l`'s `qh[32n + 4c..][..4]`, bits `2s..2s + 2` of each byte the
    /// high bits of group `4n + s`.
    pub q: [[[[u32; PACKED_ROWS]; 3]; 2]; 8],
}

const _: () = assert!(std::mem::size_of::<BlockQ6Kx16>() == PACKED_ROWS * 210);

/// Whether weights of type `ty` can be repacked.
pub fn packs(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_K | GgmlType::Q6_K
    )
}

/// Bytes of one packed block (sixteen rows' block `b`) of a packable type.
fn tile_block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_K => std::mem::size_of::<BlockQ4Kx16>(),
        GgmlType::Q6_K => std::mem::size_of::<BlockQ6Kx16>(),
        GgmlType::Q5_0 => std::mem::size_of::<BlockQ5_0x16>(),
        _ => std::mem::size_of::<BlockQ4_0x16>(),
    }
}

/// Bytes of `rows` rows of `cols` elements of a packable type, repacked (the last tile
/// whole). Rows in whole tiles take their own bytes of a slot, so a matrix can be filled
/// a band of tiles at a time.
pub fn packed_bytes(ty: GgmlType, rows: usize, cols: usize) -> usize {
    rows.div_ceil(PACKED_ROWS) * (cols / ty.block_elems()) * tile_block_bytes(ty)
}

/// One matrix in an arena.
#[derive(Clone, Debug)]
struct Part {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Range<usize>,
}

/// Memory for repacked matrices: one anonymous map for all of a model's, asked to be
/// backed by 2 MiB pages. Written once at load through [`PackedArena::slots_mut`], then
/// shared read-only by the [`PackedRows`] views. Huge pages are why it is a map and not a
/// `Vec`: the kernel zeroes and maps 2 MiB per page fault instead of 4 KiB (an 8B model's
/// repacked copy was a million first-touch faults, most of load time), and a token's
/// sequential pass over the weights takes a TLB miss per 2 MiB, not per 4 KiB. One map
/// for all matrices, so at most one huge page is partly used.
#[derive(Debug)]
pub struct PackedArena {
    map: memmap2::MmapMut,
    parts: Vec<Part>,
}

impl PackedArena {
    /// Room for matrices of these (type, rows, cols), one after another, each on a cache
    /// line. Types must be [`packs`]; columns whole blocks. Fails only on those or when
    /// the memory cannot be mapped.
    pub fn new(shapes: &[(GgmlType, usize, usize)]) -> Result<PackedArena, QuantError> {
        let mut parts = Vec::with_capacity(shapes.len());
        let mut at = 0;
        for &(ty, rows, cols) in shapes {
            if !packs(ty) {
                return Err(QuantError::Unsupported { ty });
            }
            if !cols.is_multiple_of(ty.block_elems()) {
                return Err(QuantError::NotWholeBlocks { ty, elems: cols });
            }
            let n = packed_bytes(ty, rows, cols);
            parts.push(Part {
                ty,
                rows,
                cols,
                bytes: at..at + n,
            });
            at = (at + n).next_multiple_of(64);
        }
        // Fresh anonymous pages read as zero: the last tile's missing rows need no writes.
        let map = memmap2::MmapMut::map_anon(at.max(1)).map_err(|e| QuantError::PackedMemory {
            bytes: at,
            reason: e.to_string(),
        })?;
        // Only advice: where the kernel has no transparent huge pages the map works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(PackedArena { map, parts })
    }

    /// Each matrix's bytes, in the order of the shapes, to fill (in parallel) with
    /// [`fill`].
    pub fn slots_mut(&mut self) -> Vec<&mut [u8]> {
        let mut rest: &mut [u8] = &mut self.map;
        let mut slots = Vec::with_capacity(self.parts.len());
        let mut at = 0;
        for part in &self.parts {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(part.bytes.start - at);
            let (slot, tail) = tail.split_at_mut(part.bytes.len());
            slots.push(slot);
            rest = tail;
            at = part.bytes.end;
        }
        slots
    }

    /// Matrix `i` of the arena, once filled.
    pub fn rows(self: &Arc<Self>, i: usize) -> PackedRows {
        PackedRows {
            arena: self.clone(),
            part: self.parts[i].clone(),
        }
    }
}

/// Repack `data`, `rows` rows of `cols` elements of type `ty`, into `dst` (the slot of
/// [`PackedArena::slots_mut`] for that shape, still zero).
pub fn fill(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    if !packs(ty) {
        return Err(QuantError::Unsupported { ty });
    }
    let elems = rows * cols;
    if !cols.is_multiple_of(ty.block_elems()) {
        return Err(QuantError::NotWholeBlocks { ty, elems: cols });
    }
    let expected = elems / ty.block_elems() * ty.block_bytes();
    if data.len() != expected {
        return Err(QuantError::WrongByteLength {
            ty,
            elems,
            expected,
            got: data.len(),
        });
    }
    let k = cols / ty.block_elems();
    let n_tiles = rows.div_ceil(PACKED_ROWS);
    let want = n_tiles * k * tile_block_bytes(ty);
    if dst.len() != want {
        return Err(QuantError::WrongOutputLength {
            expected: want,
            got: dst.len(),
        });
    }
    match ty {
        GgmlType::Q4_K => fill_as::<BlockQ4K>(data, k, rows, dst),
        GgmlType::Q6_K => fill_as::<BlockQ6K>(data, k, rows, dst),
        GgmlType::Q5_0 => fill_as::<BlockQ5_0>(data, k, rows, dst),
        _ => fill_as::<BlockQ4_0>(data, k, rows, dst),
    }
}

/// A block format that can be repacked: its block of sixteen rows and the moves in and
/// out of it.
trait Packable: BlockFormat {
    type X16: Pod;
    /// Put this block into lane `l` of a packed block.
    fn put(&self, l: usize, dst: &mut Self::X16);
    /// Lane `l` of a packed block, back as it was.
    fn take(x: &Self::X16, l: usize) -> Self;
}

/// Put each row's block into lane `l` of its tile block.
fn fill_as<B: Packable>(
    data: &[u8],
    k: usize,
    rows: usize,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let blocks = cast::as_blocks::<B>(data)?;
    let dst: &mut [B::X16] = cast_mut(dst)?;
    for (t, tile) in dst.chunks_exact_mut(k.max(1)).enumerate() {
        for l in 0..PACKED_ROWS.min(rows - t * PACKED_ROWS) {
            let row = &blocks[(t * PACKED_ROWS + l) * k..][..k];
            for (dst, src) in tile.iter_mut().zip(row) {
                src.put(l, dst);
            }
        }
    }
    Ok(())
}

/// A slot of the arena as packed blocks (its start is 64-byte aligned).
fn cast_mut<T: Pod>(dst: &mut [u8]) -> Result<&mut [T], QuantError> {
    let got = dst.len();
    bytemuck::try_cast_slice_mut(dst).map_err(|_| QuantError::WrongOutputLength {
        expected: got.next_multiple_of(std::mem::size_of::<T>()),
        got,
    })
}

impl Packable for BlockQ4_0 {
    type X16 = BlockQ4_0x16;
    fn put(&self, l: usize, dst: &mut BlockQ4_0x16) {
        let groups: [u32; 4] = bytemuck::cast(self.qs);
        for (c, g) in groups.into_iter().enumerate() {
            dst.qs[c][l] = g;
        }
        dst.d[l] = self.d;
    }
    fn take(x: &BlockQ4_0x16, l: usize) -> BlockQ4_0 {
        BlockQ4_0 {
            d: x.d[l],
            qs: bytemuck::cast(std::array::from_fn::<u32, 4, _>(|c| x.qs[c][l])),
        }
    }
}

/// The first of the four elements whose fifth bits mask `qh[c]` of a [`BlockQ5_0x16`]
/// holds: vectors 0..4 are the low nibbles (elements `4c..`), 4..8 the high (`16 + ..`).
fn q5_first_element(c: usize) -> usize {
    if c < 4 {
        4 * c
    } else {
        16 + 4 * (c - 4)
    }
}

impl Packable for BlockQ5_0 {
    type X16 = BlockQ5_0x16;
    fn put(&self, l: usize, dst: &mut BlockQ5_0x16) {
        let groups: [u32; 4] = bytemuck::cast(self.qs);
        for (c, g) in groups.into_iter().enumerate() {
            dst.qs[c][l] = g;
        }
        let qh = u32::from_le_bytes(self.qh);
        for (c, mask) in dst.qh.iter_mut().enumerate() {
            let first = q5_first_element(c);
            *mask |= u64::from((qh >> first) & 0xF) << (4 * l);
        }
        dst.d[l] = self.d;
    }
    fn take(x: &BlockQ5_0x16, l: usize) -> BlockQ5_0 {
        let mut qh = 0u32;
        for (c, mask) in x.qh.iter().enumerate() {
            let first = q5_first_element(c);
            qh |= (((mask >> (4 * l)) & 0xF) as u32) << first;
        }
        BlockQ5_0 {
            d: x.d[l],
            qh: qh.to_le_bytes(),
            qs: bytemuck::cast(std::array::from_fn::<u32, 4, _>(|c| x.qs[c][l])),
        }
    }
}

impl Packable for BlockQ4K {
    type X16 = BlockQ4Kx16;
    fn put(&self, l: usize, dst: &mut BlockQ4Kx16) {
        let groups: [u32; 32] = bytemuck::cast(self.qs);
        for (i, g) in groups.into_iter().enumerate() {
            dst.qs[i / 8][i % 8][l] = g;
        }
        for g in 0..8 {
            let (sc, m) = scale_min_k4(g, &self.scales);
            dst.scales[g][l] = sc;
            dst.mins[g / 2][l][g % 2] = m;
        }
        dst.d[l] = self.d;
        dst.dmin[l] = self.dmin;
    }
    fn take(x: &BlockQ4Kx16, l: usize) -> BlockQ4K {
        let groups: [u32; 32] = std::array::from_fn(|i| x.qs[i / 8][i % 8][l]);
        BlockQ4K {
            d: x.d[l],
            dmin: x.dmin[l],
            scales: pack_scale_min_k4(
                std::array::from_fn(|g| x.scales[g][l]),
                std::array::from_fn(|g| x.mins[g / 2][l][g % 2]),
            ),
            qs: bytemuck::cast(groups),
        }
    }
}

impl Packable for BlockQ6K {
    type X16 = BlockQ6Kx16;
    fn put(&self, l: usize, dst: &mut BlockQ6Kx16) {
        let ql: [u32; 32] = bytemuck::cast(self.ql);
        let qh: [u32; 16] = bytemuck::cast(self.qh);
        for (c, q) in dst.q.iter_mut().enumerate() {
            for (n, q) in q.iter_mut().enumerate() {
                q[0][l] = ql[16 * n + c];
                q[1][l] = ql[16 * n + 8 + c];
                q[2][l] = qh[8 * n + c];
            }
        }
        for (j, s) in self.scales.into_iter().enumerate() {
            dst.scales[j][l] = s;
        }
        dst.d[l] = self.d;
    }
    fn take(x: &BlockQ6Kx16, l: usize) -> BlockQ6K {
        // Word i of ql is (n, h, c) = (i / 16, i / 8 % 2, i % 8); of qh, (n, c) = (i / 8, i % 8).
        let ql: [u32; 32] = std::array::from_fn(|i| x.q[i % 8][i / 16][i / 8 % 2][l]);
        let qh: [u32; 16] = std::array::from_fn(|i| x.q[i % 8][i / 8][2][l]);
        BlockQ6K {
            ql: bytemuck::cast(ql),
            qh: bytemuck::cast(qh),
            scales: std::array::from_fn(|j| x.scales[j][l]),
            d: x.d[l],
        }
    }
}

/// A weight matrix repacked into tiles of [`PACKED_ROWS`] rows (a view of its
/// [`PackedArena`]); the last tile's missing rows are zero (scale 0) and their results
/// are never written.
#[derive(Clone, Debug)]
pub struct PackedRows {
    arena: Arc<PackedArena>,
    part: Part,
}

impl PackedRows {
    /// Repack one matrix into an arena of its own (tests and benchmarks; a model packs
    /// all its matrices into one [`PackedArena`]).
    pub fn new(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Result<Self, QuantError> {
        let mut arena = PackedArena::new(&[(ty, rows, cols)])?;
        let slot = arena.slots_mut().pop().expect("one shape, one slot");
        fill(ty, data, rows, cols, slot)?;
        Ok(Arc::new(arena).rows(0))
    }

    /// The type the rows had before repacking.
    pub fn ty(&self) -> GgmlType {
        self.part.ty
    }

    pub fn rows(&self) -> usize {
        self.part.rows
    }

    pub fn cols(&self) -> usize {
        self.part.cols
    }

    fn all_tiles<T: Pod>(&self) -> &[T] {
        // Slots start on a cache line and hold whole packed blocks (checked by `new`).
        bytemuck::cast_slice(&self.arena.map[self.part.bytes.clone()])
    }

    /// The packed blocks (of type `T`, which matches [`Self::ty`]) covering rows `rows`,
    /// which start on a tile boundary.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by x86's kernels only
    pub(crate) fn tiles<T: Pod>(&self, rows: Range<usize>) -> &[T] {
        let k = self.cols() / self.part.ty.block_elems();
        let t0 = rows.start / PACKED_ROWS;
        let t1 = rows.end.div_ceil(PACKED_ROWS);
        &self.all_tiles()[t0 * k..t1 * k]
    }

    /// Row `r` back in its original bytes (the reference the kernels are tested against).
    pub fn row(&self, r: usize) -> Vec<u8> {
        let ty = self.part.ty;
        let mut out = vec![0; self.cols() / ty.block_elems() * ty.block_bytes()];
        self.unpack(r..r + 1, &mut out)
            .expect("one row's bytes for a row of the matrix");
        out
    }

    /// Rows `rows` back in their original bytes, one after another, into `dst` (their
    /// size exactly): the batch kernels decode a tile from these. Errors when a row is
    /// past the matrix or `dst` has another size.
    pub fn unpack(&self, rows: Range<usize>, dst: &mut [u8]) -> Result<(), QuantError> {
        let ty = self.part.ty;
        let row_bytes = self.cols() / ty.block_elems() * ty.block_bytes();
        if rows.end > self.rows() || rows.start > rows.end {
            return Err(QuantError::RowsOutOfRange {
                start: rows.start,
                end: rows.end,
                n_rows: self.rows(),
            });
        }
        if dst.len() != rows.len() * row_bytes {
            return Err(QuantError::WrongOutputLength {
                expected: rows.len() * row_bytes,
                got: dst.len(),
            });
        }
        match ty {
            GgmlType::Q4_K => self.unpack_as::<BlockQ4K>(rows, dst),
            GgmlType::Q6_K => self.unpack_as::<BlockQ6K>(rows, dst),
            GgmlType::Q5_0 => self.unpack_as::<BlockQ5_0>(rows, dst),
            _ => self.unpack_as::<BlockQ4_0>(rows, dst),
        }
    }

    fn unpack_as<B: Packable>(&self, rows: Range<usize>, dst: &mut [u8]) -> Result<(), QuantError> {
        let k = self.cols() / B::ELEMS;
        let tiles: &[B::X16] = self.all_tiles();
        for (r, out) in rows.zip(dst.chunks_exact_mut(k * B::BYTES)) {
            let (t, l) = (r / PACKED_ROWS, r % PACKED_ROWS);
            for (x, out) in tiles[t * k..][..k]
                .iter()
                .zip(out.chunks_exact_mut(B::BYTES))
            {
                out.copy_from_slice(bytemuck::bytes_of(&B::take(x, l)));
            }
        }
        Ok(())
    }
}
