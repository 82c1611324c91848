//! Q8_1: blocks of 32 weights, `x = d * q` with `q` an i8 and one f16 scale `d`, plus the
//! f16 `s = d * sum(q)` that lets a dot product with Q4_1/Q5_1 apply their minimum once per
//! block. 36 bytes per 32 weights: 9 bits per weight. An activation format only.

use bytemuck::{Pod, Zeroable};

use super::q8_0::{quantize_q8_symmetric, quantize_q8_x86};
use super::{exact, exact_mut, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q8_1 block (ggml `block_q8_1`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: F16,
    /// `d * sum(qs)`, computed in f32 from the unrounded `d`, then rounded to f16.
    pub s: F16,
    /// Quants, element `j` in `qs[j]`.
    pub qs: [i8; QK32],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl BlockFormat for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_1);

    /// ggml has no dequantizer for Q8_1; this one decodes `d * q` as Q8_0 does and ignores
    /// `s`.
    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q8_1");
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_1 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q8_1");
        // ggml walks the two halves in an interleaved order; integer sums do not care.
        let (d, qs) = quantize_q8_symmetric(x);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 {
            d: F16::from_f32(d),
            s: F16::from_f32(sum as f32 * d),
            qs,
        }
    }
}

/// Quantize an activation block the way ggml's CPU backend does at run time on x86
/// (ggml-cpu's x86 `quantize_row_q8_1`): the rounding of
/// [`super::q8_0::quantize_activation`], and `s = d * sum(q)` from the unclamped integer
/// quants.
pub fn quantize_activation(x: &[f32]) -> BlockQ8_1 {
    let x: &[f32; QK32] = exact(x, "Q8_1");
    let (d, qs, sum) = quantize_q8_x86(x);
    BlockQ8_1 {
        d: F16::from_f32(d),
        s: F16::from_f32(d * sum as f32),
        qs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0i8; 32];
        qs[7] = -3;
        let b = BlockQ8_1 {
            d: F16::from_f32(4.0),
            s: F16::from_f32(-12.0),
            qs,
        };
        let mut y = [1.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[7], -12.0);
        assert_eq!(y[0], 0.0);
    }

    #[test]
    fn quantize_stores_scaled_sum() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[20] = -27.0;
        x[31] = 0.4; // rounds to 0
        let b = BlockQ8_1::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!((b.qs[0], b.qs[20], b.qs[31]), (127, -27, 0));
        assert_eq!(b.s.to_f32(), 100.0);
    }
}
