//! Q4_1: blocks of 32 weights, `x = d * q + m` with `q` in 0..=15, an f16 scale `d` and an
//! f16 minimum `m`. 20 bytes per 32 weights: 5 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::q8_1::BlockQ8_1;
use super::{exact, exact_mut, trunc_to_i8, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q4_1 block (ggml `block_q4_1`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: F16,
    /// Minimum (the value of `q = 0`).
    pub m: F16,
    /// Quants, two per byte: element `j` low nibble of `qs[j]`, element `j + 16` high.
    pub qs: [u8; QK32 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_1);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q4_1");
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as i32;
            let x1 = (q >> 4) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + QK32 / 2] = x1 as f32 * d + m;
        }
    }
}

impl QuantizeBlock for BlockQ4_1 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q4_1");
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        // The block's range split into 15 steps; quants measure from the f32 minimum (the
        // stored f16 minimum may differ from it slightly).
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };

        let mut qs = [0u8; QK32 / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let x0 = (x[j] - min) * id;
            let x1 = (x[j + QK32 / 2] - min) * id;
            let xi0 = trunc_to_i8(x0 + 0.5).min(15) as u8;
            let xi1 = trunc_to_i8(x1 + 0.5).min(15) as u8;
            *q = xi0 | (xi1 << 4);
        }
        BlockQ4_1 {
            d: F16::from_f32(d),
            m: F16::from_f32(min),
            qs,
        }
    }
}

/// Dot product of a Q4_1 row with a Q8_1 row (ggml `ggml_vec_dot_q4_1_q8_1`, generic).
/// `x = d*q + m` splits into `d*dy * sum(q * q8)` plus `m * sum(dy * q8)`, and the second
/// sum is the activation block's precomputed `s`: one integer sum and two float terms per
/// block.
pub fn vec_dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q4_1 x Q8_1: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (j, &q) in x.qs.iter().enumerate() {
            let v0 = (q & 0x0F) as i32;
            let v1 = (q >> 4) as i32;
            sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK32 / 2] as i32;
        }
        sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0u8; 16];
        qs[2] = 0x3 | (0xF << 4); // element 2: 3, element 18: 15
        let b = BlockQ4_1 {
            d: F16::from_f32(0.25),
            m: F16::from_f32(-1.0),
            qs,
        };
        let mut y = [0.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[2], 3.0 * 0.25 - 1.0);
        assert_eq!(y[18], 15.0 * 0.25 - 1.0);
        assert_eq!(y[0], -1.0);
    }

    #[test]
    fn quantize_spans_min_to_max() {
        let mut x = [0.0f32; 32];
        x[1] = -1.5;
        x[30] = 6.0;
        x[7] = 2.5;
        let b = BlockQ4_1::quantize(&x);
        assert_eq!(b.d.to_f32(), 0.5); // 7.5 / 15
        assert_eq!(b.m.to_f32(), -1.5);
        assert_eq!(b.qs[1] & 0xF, 0);
        assert_eq!(b.qs[14] >> 4, 15);
        assert_eq!(b.qs[7] & 0xF, 8); // (2.5 + 1.5) / 0.5
        assert_eq!(b.qs[0] & 0xF, 3); // 1.5 / 0.5
    }
}
