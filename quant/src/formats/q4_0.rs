//! Q4_0: blocks of 32 weights, `x = d * (q - 8)` with `q` in 0..=15 and one f16 scale `d`.
//! 18 bytes per 32 weights: 4.5 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::q8_0::BlockQ8_0;
use super::{exact, exact_mut, trunc_to_i8, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q4_0 block (ggml `block_q4_0`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: F16,
    /// Quants, two per byte: element `j` in the low nibble of `qs[j]`, element `j + 16`
    /// in the high nibble.
    pub qs: [u8; QK32 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_0);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q4_0");
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as i32 - 8;
            let x1 = (q >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK32 / 2] = x1 as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ4_0 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q4_0");
        // The value of largest magnitude, sign kept (the first one on ties), maps to -8:
        // the asymmetric range -8..=7 gets its extra step on that value's side.
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };

        let mut qs = [0u8; QK32 / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let x0 = x[j] * id;
            let x1 = x[j + QK32 / 2] * id;
            // Truncating `x + 8.5` rounds to nearest (halves up) after the +8 offset; 16
            // (the value of -max, opposite the extreme) is clamped to 15.
            let xi0 = trunc_to_i8(x0 + 8.5).min(15) as u8;
            let xi1 = trunc_to_i8(x1 + 8.5).min(15) as u8;
            *q = xi0 | (xi1 << 4);
        }
        BlockQ4_0 {
            d: F16::from_f32(d),
            qs,
        }
    }
}

/// Dot product of a Q4_0 row with a Q8_0 row (ggml `ggml_vec_dot_q4_0_q8_0`, generic):
/// per block an integer sum of `(q - 8) * q8`, then one float multiply by both scales.
/// Rows of different lengths are a caller bug (debug-asserted); the extra blocks of the
/// longer one are ignored.
pub fn vec_dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q4_0 x Q8_0: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (j, &q) in x.qs.iter().enumerate() {
            let v0 = (q & 0x0F) as i32 - 8;
            let v1 = (q >> 4) as i32 - 8;
            sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK32 / 2] as i32;
        }
        sumf += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0u8; 16];
        qs[0] = 0x0F; // element 0: 15, element 16: 0
        qs[3] = 0x8 | (0x9 << 4); // element 3: 8, element 19: 9
        let b = BlockQ4_0 {
            d: F16::from_f32(0.5),
            qs,
        };
        let mut y = [0.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[0], (15 - 8) as f32 * 0.5);
        assert_eq!(y[16], -4.0);
        assert_eq!(y[3], 0.0);
        assert_eq!(y[19], 0.5);
        assert_eq!(y[1], -4.0); // nibble 0 everywhere else
    }

    #[test]
    fn quantize_maps_the_extreme_to_minus_eight() {
        let mut x = [0.0f32; 32];
        x[5] = -3.0; // largest magnitude, negative
        x[6] = 2.9;
        x[20] = 1.5;
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d.to_f32(), 3.0 / 8.0);
        assert_eq!(b.qs[5] & 0xF, 0); // -3 / (3/8) = -8 -> q 0
        assert_eq!(b.qs[6] & 0xF, 15); // 2.9 / 0.375 + 8.5 = 16.23 -> 16, clamped to 15
        assert_eq!(b.qs[4] >> 4, 12); // x[20] = 1.5 -> 4 + 8
        assert_eq!(b.qs[0] & 0xF, 8); // zero -> 8
    }
}
