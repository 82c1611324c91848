//! Weight rows repacked at load for the AVX-512 kernels: sixteen Q4_0 rows interleaved so
//! one 512-bit register holds a four-quant group of every row (what llama.cpp's
//! `repack.cpp` does for its own kernels, in loupe's own layout).
//!
//! A [`BlockQ4_0x16`] holds block `b` of sixteen consecutive rows: the same 288 bytes as
//! the sixteen Q4_0 blocks, only moved. `qs[c]` is four bytes per row, row `l` at bytes
//! `4l..4l + 4`: that row's `qs[4c..4c + 4]`, whose low nibbles are elements `4c..4c + 4`
//! and high nibbles elements `16 + 4c..16 + 4c + 4`. A mask and a shift then give the
//! kernel two vectors of sixteen rows' four-quant groups, with no decoding. Row-major
//! Q4_0 streams one row at a time; this streams sixteen at once from one place, so a token
//! reads the matrix in one sequential pass while every load feeds sixteen dots.

use bytemuck::{Pod, Zeroable};

use crate::formats::{BlockQ4_0, QK32};
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

/// Memory for repacked matrices: one anonymous map for all of a model's, asked to be
/// backed by 2 MiB pages. Written once at load by [`PackedArena::slots_mut`], then shared
/// read-only by the [`PackedRows`] views. Huge pages are why it is a map and not a `Vec`:
/// the kernel zeroes and maps 2 MiB per page fault instead of 4 KiB (an 8B model's
/// repacked copy was a million first-touch faults, most of load time), and a token's
/// sequential pass over the weights takes a TLB miss per 2 MiB, not per 4 KiB. One map
/// for all matrices, so at most one huge page is partly used.
#[derive(Debug)]
pub struct PackedArena {
    map: memmap2::MmapMut,
    /// Matrix `i`: its (rows, cols) and its tiles' range in the map, in tiles.
    parts: Vec<(usize, usize, std::ops::Range<usize>)>,
}

impl PackedArena {
    /// Room for Q4_0 matrices of these (rows, cols), tile-major one after another.
    /// Columns must be whole blocks. Fails only when the memory cannot be mapped.
    pub fn q4_0(shapes: &[(usize, usize)]) -> Result<PackedArena, QuantError> {
        let mut parts = Vec::with_capacity(shapes.len());
        let mut at = 0;
        for &(rows, cols) in shapes {
            if !cols.is_multiple_of(QK32) {
                return Err(QuantError::NotWholeBlocks {
                    ty: GgmlType::Q4_0,
                    elems: cols,
                });
            }
            let n = rows.div_ceil(PACKED_ROWS) * (cols / QK32);
            parts.push((rows, cols, at..at + n));
            at += n;
        }
        let bytes = at * std::mem::size_of::<BlockQ4_0x16>();
        // Fresh anonymous pages read as zero: the last tile's missing rows need no writes.
        let map =
            memmap2::MmapMut::map_anon(bytes.max(1)).map_err(|e| QuantError::PackedMemory {
                bytes,
                reason: e.to_string(),
            })?;
        // Only advice: where the kernel has no transparent huge pages the map works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(PackedArena { map, parts })
    }

    /// The matrices' tile slices, in the order of the shapes, to fill (in parallel) with
    /// [`fill_q4_0`].
    pub fn slots_mut(&mut self) -> Vec<&mut [BlockQ4_0x16]> {
        let n = self.parts.last().map_or(0, |p| p.2.end);
        let mut rest: &mut [BlockQ4_0x16] =
            bytemuck::cast_slice_mut(&mut self.map[..n * std::mem::size_of::<BlockQ4_0x16>()]);
        let mut slots = Vec::with_capacity(self.parts.len());
        for (_, _, range) in &self.parts {
            let (slot, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
            slots.push(slot);
            rest = tail;
        }
        slots
    }

    /// Matrix `i` of the arena, once filled.
    pub fn rows(self: &std::sync::Arc<Self>, i: usize) -> PackedRows {
        let (rows, cols, ref range) = self.parts[i];
        PackedRows {
            rows,
            cols,
            arena: self.clone(),
            tiles: range.clone(),
        }
    }

    fn tiles(&self) -> &[BlockQ4_0x16] {
        let n = self.parts.last().map_or(0, |p| p.2.end);
        bytemuck::cast_slice(&self.map[..n * std::mem::size_of::<BlockQ4_0x16>()])
    }
}

/// Repack `data`, `rows` Q4_0 rows of `cols` elements each, into `dst` (a slot of
/// [`PackedArena::slots_mut`] for that shape, still zero).
pub fn fill_q4_0(
    data: &[u8],
    rows: usize,
    cols: usize,
    dst: &mut [BlockQ4_0x16],
) -> Result<(), QuantError> {
    let ty = GgmlType::Q4_0;
    let elems = rows * cols;
    if !cols.is_multiple_of(QK32) {
        return Err(QuantError::NotWholeBlocks { ty, elems: cols });
    }
    let expected = elems / QK32 * ty.block_bytes();
    if data.len() != expected {
        return Err(QuantError::WrongByteLength {
            ty,
            elems,
            expected,
            got: data.len(),
        });
    }
    let k = cols / QK32;
    let n_tiles = rows.div_ceil(PACKED_ROWS);
    if dst.len() != n_tiles * k {
        return Err(QuantError::WrongOutputLength {
            expected: n_tiles * k,
            got: dst.len(),
        });
    }
    let blocks = cast::as_blocks::<BlockQ4_0>(data)?;
    for (t, tile) in dst.chunks_exact_mut(k.max(1)).enumerate().take(n_tiles) {
        for l in 0..PACKED_ROWS.min(rows - t * PACKED_ROWS) {
            let row = &blocks[(t * PACKED_ROWS + l) * k..][..k];
            for (dst, src) in tile.iter_mut().zip(row) {
                let groups: [u32; 4] = bytemuck::cast(src.qs);
                for (c, g) in groups.into_iter().enumerate() {
                    dst.qs[c][l] = g;
                }
                dst.d[l] = src.d;
            }
        }
    }
    Ok(())
}

/// A weight matrix repacked into tiles of [`PACKED_ROWS`] rows (a view of its
/// [`PackedArena`]); the last tile's missing rows are zero (scale 0) and their results
/// are never written.
#[derive(Clone, Debug)]
pub struct PackedRows {
    rows: usize,
    cols: usize,
    arena: std::sync::Arc<PackedArena>,
    /// Tile-major within the range: tile `t`, block `b` at `t * cols / 32 + b`.
    tiles: std::ops::Range<usize>,
}

impl PackedRows {
    /// Repack one matrix into an arena of its own (tests and benchmarks; a model packs
    /// all its matrices into one [`PackedArena`]).
    pub fn q4_0(data: &[u8], rows: usize, cols: usize) -> Result<PackedRows, QuantError> {
        let mut arena = PackedArena::q4_0(&[(rows, cols)])?;
        let slot = arena.slots_mut().pop().expect("one shape, one slot");
        fill_q4_0(data, rows, cols, slot)?;
        Ok(std::sync::Arc::new(arena).rows(0))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn all_tiles(&self) -> &[BlockQ4_0x16] {
        &self.arena.tiles()[self.tiles.clone()]
    }

    /// The packed tiles covering rows `rows` (which start on a tile boundary).
    pub(crate) fn tiles(&self, rows: std::ops::Range<usize>) -> &[BlockQ4_0x16] {
        let k = self.cols / BlockQ4_0::ELEMS;
        let t0 = rows.start / PACKED_ROWS;
        let t1 = rows.end.div_ceil(PACKED_ROWS);
        &self.all_tiles()[t0 * k..t1 * k]
    }

    /// Row `r` back as Q4_0 blocks (the reference the kernels are tested against).
    pub fn row(&self, r: usize) -> Vec<BlockQ4_0> {
        let k = self.cols / QK32;
        let (t, l) = (r / PACKED_ROWS, r % PACKED_ROWS);
        self.all_tiles()[t * k..(t + 1) * k]
            .iter()
            .map(|b| {
                let groups: [u32; 4] = std::array::from_fn(|c| b.qs[c][l]);
                BlockQ4_0 {
                    d: b.d[l],
                    qs: bytemuck::cast(groups),
                }
            })
            .collect()
    }
}
