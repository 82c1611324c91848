//! BF16: one bfloat16 (the top 16 bits of an f32) per element, 16 bits per weight.

use bytemuck::{Pod, Zeroable};

use crate::{Bf16, BlockFormat, GgmlType, QuantizeBlock};

/// One bf16 element (ggml `ggml_bf16_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockBf16 {
    pub v: Bf16,
}

const _: () = assert!(std::mem::size_of::<BlockBf16>() == 2);

impl BlockFormat for BlockBf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::BF16);

    #[inline]
    fn dequantize(&self, y: &mut [f32]) {
        assert_eq!(y.len(), 1, "BF16: expected 1 value");
        y[0] = self.v.to_f32();
    }
}

impl QuantizeBlock for BlockBf16 {
    /// Round to nearest even with quieted NaNs, as ggml's `ggml_fp32_to_bf16_row_ref`.
    #[inline]
    fn quantize(x: &[f32]) -> Self {
        assert_eq!(x.len(), 1, "BF16: expected 1 value");
        BlockBf16 {
            v: Bf16::from_f32(x[0]),
        }
    }
}

/// Dot product of two BF16 rows as ggml's portable `ggml_vec_dot_bf16` computes it
/// without SIMD: each product in f32, accumulated in f64, rounded to f32 once at the end.
pub fn vec_dot(x: &[BlockBf16], y: &[BlockBf16]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "BF16: rows of different lengths");
    let mut sum = 0.0f64;
    for (x, y) in x.iter().zip(y) {
        sum += (x.v.to_f32() * y.v.to_f32()) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built() {
        let mut y = [0.0];
        BlockBf16 { v: Bf16(0xC0A0) }.dequantize(&mut y);
        assert_eq!(y[0], -5.0);
        assert_eq!(BlockBf16::quantize(&[-5.0]).v, Bf16(0xC0A0));
    }
}
