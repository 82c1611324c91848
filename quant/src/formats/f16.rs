//! F16: one IEEE half per element, 16 bits per weight.

use bytemuck::{Pod, Zeroable};

use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One f16 element (ggml `ggml_fp16_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockF16 {
    pub v: F16,
}

const _: () = assert!(std::mem::size_of::<BlockF16>() == 2);

impl BlockFormat for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::F16);

    #[inline]
    fn dequantize(&self, y: &mut [f32]) {
        assert_eq!(y.len(), 1, "F16: expected 1 value");
        y[0] = self.v.to_f32();
    }
}

impl QuantizeBlock for BlockF16 {
    /// Round to nearest even, as ggml's `ggml_fp32_to_fp16_row`.
    #[inline]
    fn quantize(x: &[f32]) -> Self {
        assert_eq!(x.len(), 1, "F16: expected 1 value");
        BlockF16 {
            v: F16::from_f32(x[0]),
        }
    }
}

/// Dot product of two F16 rows as ggml's portable `ggml_vec_dot_f16` computes it
/// without SIMD: each product in f32, accumulated in f64, rounded to f32 once at the end.
pub fn vec_dot(x: &[BlockF16], y: &[BlockF16]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "F16: rows of different lengths");
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
        BlockF16 { v: F16(0xC500) }.dequantize(&mut y); // -(1 + 1/4) * 2^2
        assert_eq!(y[0], -5.0);
        assert_eq!(BlockF16::quantize(&[-5.0]).v, F16(0xC500));
    }
}
