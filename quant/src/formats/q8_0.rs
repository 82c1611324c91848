//! Q8_0: blocks of 32 weights, `x = d * q` with `q` an i8 in -127..=127 and one f16 scale
//! `d`. 34 bytes per 32 weights: 8.5 bits per weight. Also the activation format that
//! Q4_0, Q5_0, Q8_0 and IQ4_NL weights are dotted with.

use bytemuck::{Pod, Zeroable};

use super::{c_max, exact, exact_mut, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q8_0 block (ggml `block_q8_0`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: F16,
    /// Quants, element `j` in `qs[j]`.
    pub qs: [i8; QK32],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_0);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q8_0");
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_0 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q8_0");
        let (d, qs) = quantize_q8_symmetric(x);
        BlockQ8_0 {
            d: F16::from_f32(d),
            qs,
        }
    }
}

/// The symmetric 8-bit quantization Q8_0 and Q8_1 share: `d = amax / 127` (in f32, before
/// rounding to f16) and `q = round(x / d)` with halves away from zero.
pub(crate) fn quantize_q8_symmetric(x: &[f32; QK32]) -> (f32, [i8; QK32]) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = c_max(amax, v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK32];
    for (q, &v) in qs.iter_mut().zip(x) {
        // f32::round is C's roundf: nearest, halves away from zero.
        *q = (v * id).round() as i32 as i8;
    }
    (d, qs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0i8; 32];
        qs[0] = -127;
        qs[31] = 5;
        let b = BlockQ8_0 {
            d: F16::from_f32(0.125),
            qs,
        };
        let mut y = [1.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[0], -127.0 * 0.125);
        assert_eq!(y[31], 0.625);
        assert_eq!(y[1], 0.0);
    }

    #[test]
    fn quantize_rounds_halves_away_from_zero() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0; // d = 1
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = -127.0;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..4], &[127, 3, -3, -127]);
        let zero = BlockQ8_0::quantize(&[0.0; 32]);
        assert_eq!((zero.d.0, zero.qs), (0, [0; 32]));
    }
}
