//! Q5_0: blocks of 32 weights, `x = d * (q - 16)` with 5-bit `q` in 0..=31 and one f16
//! scale `d`; the low 4 bits of each `q` are packed in nibbles, the fifth bits in a 32-bit
//! mask. 22 bytes per 32 weights: 5.5 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::q8_0::BlockQ8_0;
use super::{exact, exact_mut, trunc_to_i8, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q5_0 block (ggml `block_q5_0`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: F16,
    /// Fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low 4 bits: element `j` low nibble of `qs[j]`, element `j + 16` high nibble.
    pub qs: [u8; QK32 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_0);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q5_0");
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh0) as i32 - 16;
            let x1 = ((q as u32 >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK32 / 2] = x1 as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ5_0 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q5_0");
        // As Q4_0: the signed extreme maps to -16.
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };

        let mut qs = [0u8; QK32 / 2];
        let mut qh = 0u32;
        for (j, q) in qs.iter_mut().enumerate() {
            let x0 = x[j] * id;
            let x1 = x[j + QK32 / 2] * id;
            let xi0 = trunc_to_i8(x0 + 16.5).min(31) as u8;
            let xi1 = trunc_to_i8(x1 + 16.5).min(31) as u8;
            *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK32 / 2);
        }
        BlockQ5_0 {
            d: F16::from_f32(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

/// Dot product of a Q5_0 row with a Q8_0 row (ggml `ggml_vec_dot_q5_0_q8_0`, generic):
/// per block an integer sum of `(q - 16) * q8`, then one float multiply by both scales.
pub fn vec_dot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q5_0 x Q8_0: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(x.qh);
        let mut sumi = 0i32;
        for (j, &q) in x.qs.iter().enumerate() {
            let xh0 = ((qh >> j) << 4) & 0x10;
            let xh1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh0) as i32 - 16;
            let x1 = ((q as u32 >> 4) | xh1) as i32 - 16;
            sumi += x0 * y.qs[j] as i32 + x1 * y.qs[j + QK32 / 2] as i32;
        }
        sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0u8; 16];
        qs[1] = 0x2 | (0x7 << 4); // element 1 low bits 2, element 17 low bits 7
        qs[15] = 0xF; // element 15 low bits 15, element 31 low bits 0
                      // Fifth bits set for elements 1, 31 (not 17, not 15).
        let qh: u32 = (1 << 1) | (1 << 31);
        let b = BlockQ5_0 {
            d: F16::from_f32(2.0),
            qh: qh.to_le_bytes(),
            qs,
        };
        let mut y = [0.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[1], ((16 + 2) - 16) as f32 * 2.0);
        assert_eq!(y[17], (7 - 16) as f32 * 2.0);
        assert_eq!(y[15], (15 - 16) as f32 * 2.0);
        assert_eq!(y[31], 0.0);
        assert_eq!(y[0], -32.0);
    }

    #[test]
    fn quantize_sets_fifth_bits() {
        let mut x = [0.0f32; 32];
        x[0] = 4.0; // extreme, positive: d = -0.25, q = -16 + 16 = 0
        x[17] = -2.0; // -2 / -0.25 = 8 -> 24.5 -> 24 (fifth bit set)
        let b = BlockQ5_0::quantize(&x);
        assert_eq!(b.d.to_f32(), -0.25);
        assert_eq!(b.qs[0] & 0xF, 0);
        assert_eq!(b.qs[1] >> 4, 24 & 0xF);
        let qh = u32::from_le_bytes(b.qh);
        assert_eq!(qh & 1, 0);
        assert_eq!((qh >> 17) & 1, 1);
        assert_eq!((qh >> 2) & 1, 1); // zero -> 16, fifth bit set
    }
}
