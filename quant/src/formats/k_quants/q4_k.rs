//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32, `x = d * sc * q - dmin * m`
//! with 4-bit `q`, 6-bit sub-block scale `sc` and min `m`, and f16 `d`, `dmin`. 144 bytes
//! per 256 weights: 4.5 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::scale_min::scale_min_k4;
use super::{lane_sums, mins_dot, scales_mins_k4, BlockQ8K, K_SCALE_SIZE, QK_K};
use crate::formats::exact_mut;
use crate::{BlockFormat, GgmlType, F16};

/// One Q4_K super-block (ggml `block_q4_K`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: F16,
    /// Super-block scale of the sub-block mins.
    pub dmin: F16,
    /// Eight packed 6-bit (scale, min) pairs, see [`super::scale_min`].
    pub scales: [u8; K_SCALE_SIZE],
    /// Quants: each 64 weights share 32 bytes, sub-block `2c` in the low nibbles and
    /// sub-block `2c + 1` in the high nibbles of bytes `32c..32c+32`.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_K);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "Q4_K");
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (c, (y, q)) in y
            .chunks_exact_mut(64)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (lo, hi) = y.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (q & 0xF) as f32 - m1;
                *hi = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

/// Dot product of a Q4_K row with a Q8_K row (ggml `ggml_vec_dot_q4_K_q8_K`, generic):
/// per block the integer sums `sum(scale * q * q8)` (in eight lanes) and
/// `sum(min * bsum)`, then `d * d8` and `dmin * d8` applied once each. As in ggml, the
/// lanes are kept as eight float sums across blocks and added last.
pub fn vec_dot(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q4_K x Q8_K: rows of different lengths");
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in x.iter().zip(y) {
        for (a, q) in a.chunks_exact_mut(64).zip(x.qs.chunks_exact(32)) {
            let (lo, hi) = a.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = (q & 0xF) as i8;
                *hi = (q >> 4) as i8;
            }
        }
        let (scales, mins) = scales_mins_k4(&x.scales);
        let lanes = lane_sums(&a, &y.qs, &scales);
        let summ = mins_dot(&y.bsums, &mins);
        let d = x.d.to_f32() * y.d;
        for (s, &l) in sums.iter_mut().zip(&lanes) {
            *s += d * l as f32;
        }
        let dmin = x.dmin.to_f32() * y.d;
        sumf -= dmin * summ as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::super::scale_min::pack_scale_min_k4;
    use super::*;

    #[test]
    fn hand_built_block() {
        let sc = [1, 2, 0, 0, 0, 63, 0, 4];
        let m = [0, 3, 0, 0, 0, 10, 0, 0];
        let mut b = BlockQ4K {
            d: F16::from_f32(0.5),
            dmin: F16::from_f32(0.25),
            scales: pack_scale_min_k4(sc, m),
            qs: [0; 128],
        };
        b.qs[0] = 0x7 | (0x9 << 4); // element 0 (sub 0) q 7, element 32 (sub 1) q 9
        b.qs[64 + 10] = 0xF << 4; // element 128 + 32 + 10 = 170 (sub 5) q 15
        b.qs[96 + 31] = 0x1 << 4; // element 255 (sub 7) q 1

        let mut y = [0.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[0], 0.5 * 1.0 * 7.0);
        assert_eq!(y[32], 0.5 * 2.0 * 9.0 - 0.25 * 3.0);
        assert_eq!(y[33], -0.75);
        assert_eq!(y[170], 0.5 * 63.0 * 15.0 - 0.25 * 10.0);
        assert_eq!(y[255], 0.5 * 4.0);
        assert_eq!(y[254], 0.0);
    }
}
