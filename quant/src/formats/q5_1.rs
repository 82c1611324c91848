//! Q5_1: blocks of 32 weights, `x = d * q + m` with 5-bit `q` in 0..=31, an f16 scale `d`
//! and an f16 minimum `m`; fifth bits in a 32-bit mask as in Q5_0. 24 bytes per 32
//! weights: 6 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::q8_1::BlockQ8_1;
use super::{exact, exact_mut, trunc_to_u8, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q5_1 block (ggml `block_q5_1`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: F16,
    /// Minimum.
    pub m: F16,
    /// Fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low 4 bits: element `j` low nibble of `qs[j]`, element `j + 16` high nibble.
    pub qs: [u8; QK32 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_1);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q5_1");
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh0) as i32;
            let x1 = ((q as u32 >> 4) | xh1) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + QK32 / 2] = x1 as f32 * d + m;
        }
    }
}

impl QuantizeBlock for BlockQ5_1 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q5_1");
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
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };

        let mut qs = [0u8; QK32 / 2];
        let mut qh = 0u32;
        for (j, q) in qs.iter_mut().enumerate() {
            let x0 = (x[j] - min) * id;
            let x1 = (x[j + QK32 / 2] - min) * id;
            // ggml clamps nothing here: (max - min) * id cannot round past 31.5.
            let xi0 = trunc_to_u8(x0 + 0.5);
            let xi1 = trunc_to_u8(x1 + 0.5);
            *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK32 / 2);
        }
        BlockQ5_1 {
            d: F16::from_f32(d),
            m: F16::from_f32(min),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

/// Dot product of a Q5_1 row with a Q8_1 row (ggml `ggml_vec_dot_q5_1_q8_1`, generic); the
/// minimum is applied through the activation block's `s` as in [`super::q4_1::vec_dot`].
pub fn vec_dot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q5_1 x Q8_1: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(x.qh);
        let mut sumi = 0i32;
        for (j, &q) in x.qs.iter().enumerate() {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh0) as i32;
            let x1 = ((q as u32 >> 4) | xh1) as i32;
            sumi += x0 * y.qs[j] as i32 + x1 * y.qs[j + QK32 / 2] as i32;
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
        qs[4] = 0x1 | (0xE << 4); // element 4 low 1, element 20 low 14
        let qh: u32 = (1 << 4) | (1 << 20) | (1 << 9);
        let b = BlockQ5_1 {
            d: F16::from_f32(0.5),
            m: F16::from_f32(-3.0),
            qh: qh.to_le_bytes(),
            qs,
        };
        let mut y = [0.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[4], 17.0 * 0.5 - 3.0);
        assert_eq!(y[20], 30.0 * 0.5 - 3.0);
        assert_eq!(y[9], 16.0 * 0.5 - 3.0);
        assert_eq!(y[0], -3.0);
    }

    #[test]
    fn quantize_spans_min_to_max() {
        let mut x = [1.0f32; 32];
        x[3] = 1.0 - 15.5; // min
        x[29] = 1.0 + 15.5; // max: range 31, d = 1
        let b = BlockQ5_1::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(b.m.to_f32(), -14.5);
        let qh = u32::from_le_bytes(b.qh);
        assert_eq!((b.qs[3] & 0xF, (qh >> 3) & 1), (0, 0));
        assert_eq!((b.qs[13] >> 4, (qh >> 29) & 1), (15, 1)); // 31
        assert_eq!((b.qs[0] & 0xF, qh & 1), (0, 1)); // 15.5 + 0.5 truncates to 16
    }
}
