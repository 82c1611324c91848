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
// Natural alignment (4): a larger one would make the allocator zero the whole matrix by
// hand (touching every page twice) instead of taking fresh zero pages.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0x16 {
    /// `qs[c][l]` = row `l`'s `qs[4c..4c + 4]` (the same four bytes, in memory order).
    pub qs: [[u32; PACKED_ROWS]; 4],
    /// Row `l`'s scale.
    pub d: [F16; PACKED_ROWS],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0x16>() == PACKED_ROWS * 18);

/// A weight matrix repacked into tiles of [`PACKED_ROWS`] rows; the last tile's missing
/// rows are zero (scale 0) and their results are never written.
#[derive(Debug)]
pub struct PackedRows {
    rows: usize,
    cols: usize,
    /// Tile-major: tile `t`, block `b` at `t * cols / 32 + b`.
    tiles: Vec<BlockQ4_0x16>,
}

impl PackedRows {
    /// Repack `data`, `rows` Q4_0 rows of `cols` elements each.
    pub fn q4_0(data: &[u8], rows: usize, cols: usize) -> Result<PackedRows, QuantError> {
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
        let blocks = cast::as_blocks::<BlockQ4_0>(data)?;
        let n_tiles = rows.div_ceil(PACKED_ROWS);
        // Zeroed by the allocator (fresh pages), written once below.
        let mut tiles: Vec<BlockQ4_0x16> = bytemuck::zeroed_vec(n_tiles * k);
        for (t, tile) in tiles.chunks_exact_mut(k.max(1)).enumerate().take(n_tiles) {
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
        Ok(PackedRows { rows, cols, tiles })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed tiles covering rows `rows` (which start on a tile boundary).
    pub(crate) fn tiles(&self, rows: std::ops::Range<usize>) -> &[BlockQ4_0x16] {
        let k = self.cols / BlockQ4_0::ELEMS;
        let t0 = rows.start / PACKED_ROWS;
        let t1 = rows.end.div_ceil(PACKED_ROWS);
        &self.tiles[t0 * k..t1 * k]
    }

    /// Row `r` back as Q4_0 blocks (the reference the kernels are tested against).
    pub fn row(&self, r: usize) -> Vec<BlockQ4_0> {
        let k = self.cols / QK32;
        let (t, l) = (r / PACKED_ROWS, r % PACKED_ROWS);
        self.tiles[t * k..(t + 1) * k]
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
