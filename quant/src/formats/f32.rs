//! F32: one little-endian IEEE single per element, 32 bits per weight.

use bytemuck::{Pod, Zeroable};

use crate::{BlockFormat, GgmlType, QuantizeBlock};

/// One f32 element, kept as its four little-endian bytes.
///
/// Bytes rather than `f32` give the block alignment 1, so a row at any file offset is
/// viewed in place: no `&[f32]` is ever formed over bytes that might be misaligned, and
/// each value is decoded with `from_le_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockF32 {
    pub bytes: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<BlockF32>() == 4);

impl BlockF32 {
    #[inline]
    pub fn get(self) -> f32 {
        f32::from_le_bytes(self.bytes)
    }
}

impl BlockFormat for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::F32);

    #[inline]
    fn dequantize(&self, y: &mut [f32]) {
        assert_eq!(y.len(), 1, "F32: expected 1 value");
        y[0] = self.get();
    }
}

impl QuantizeBlock for BlockF32 {
    #[inline]
    fn quantize(x: &[f32]) -> Self {
        assert_eq!(x.len(), 1, "F32: expected 1 value");
        BlockF32 {
            bytes: x[0].to_le_bytes(),
        }
    }
}

/// Dot product of two F32 rows as ggml's portable `ggml_vec_dot_f32` computes it
/// without SIMD: each product in f32, accumulated in f64, rounded to f32 once at the end.
pub fn vec_dot(x: &[BlockF32], y: &[BlockF32]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "F32: rows of different lengths");
    let mut sum = 0.0f64;
    for (x, y) in x.iter().zip(y) {
        sum += (x.get() * y.get()) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_little_endian() {
        let b = BlockF32 {
            bytes: [0x00, 0x00, 0x80, 0xBF],
        };
        let mut y = [0.0];
        b.dequantize(&mut y);
        assert_eq!(y[0], -1.0);
        assert_eq!(BlockF32::quantize(&[-1.0]), b);
    }
}
