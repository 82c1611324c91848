//! Q5_K: super-blocks of 256 weights in 8 sub-blocks of 32, `x = d * sc * q - dmin * m`
//! with 5-bit `q` (4 low bits plus a high bit), 6-bit sub-block scale `sc` and min `m`, and
//! f16 `d`, `dmin`. 176 bytes per 256 weights: 5.5 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::make_quants::Qkx2Search;
use super::q4_k::quantize_k4_scales;
use super::scale_min::scale_min_k4;
use super::{lane_sums, mins_dot, scales_mins_k4, BlockQ8K, K_SCALE_SIZE, QK_K};
use crate::formats::{exact, exact_mut};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q5_K super-block (ggml `block_q5_K`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: F16,
    /// Super-block scale of the sub-block mins.
    pub dmin: F16,
    /// Eight packed 6-bit (scale, min) pairs, see [`super::scale_min`].
    pub scales: [u8; K_SCALE_SIZE],
    /// High bits: element `32*s + l` of sub-block `s` is bit `s` of `qh[l]`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, packed as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_K);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "Q5_K");
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (c, (y, ql)) in y
            .chunks_exact_mut(64)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * c);
            let u2 = 2u8 << (2 * c);
            let (lo, hi) = y.split_at_mut(32);
            for (l, (lo, hi)) in lo.iter_mut().zip(hi).enumerate() {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                *lo = d1 * ((ql[l] & 0xF) as i32 + h1) as f32 - m1;
                *hi = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
            }
        }
    }
}

impl QuantizeBlock for BlockQ5K {
    /// ggml's `quantize_row_q5_K_ref`, what `ggml_quantize_chunk` runs without an
    /// importance matrix: Q4_K's search with 5-bit quants.
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "Q5_K");
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let (l, scales, d, dmin) = quantize_k4_scales(x, 31, search);
        let mut qh = [0u8; QK_K / 8];
        let mut qs = [0u8; QK_K / 2];
        for (c, (q, l)) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)).enumerate() {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for (j, q) in q.iter_mut().enumerate() {
                let (mut l1, mut l2) = (l[j], l[j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                *q = l1 | (l2 << 4);
            }
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }
}

/// Dot product of a Q5_K row with a Q8_K row (ggml `ggml_vec_dot_q5_K_q8_K`, generic): as
/// [`super::q4_k::vec_dot`] with the fifth bit added to each quant.
pub fn vec_dot(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q5_K x Q8_K: rows of different lengths");
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in x.iter().zip(y) {
        for (c, (a, ql)) in a
            .chunks_exact_mut(64)
            .zip(x.qs.chunks_exact(32))
            .enumerate()
        {
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let (lo, hi) = a.split_at_mut(32);
            for (l, ((lo, hi), &q)) in lo.iter_mut().zip(hi).zip(ql).enumerate() {
                let h1 = if x.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[l] & u2 != 0 { 16 } else { 0 };
                *lo = (q & 0xF) as i8 + h1;
                *hi = (q >> 4) as i8 + h2;
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
        let sc = [1, 0, 0, 2, 0, 0, 0, 3];
        let m = [4, 0, 0, 0, 0, 0, 0, 1];
        let mut b = BlockQ5K {
            d: F16::from_f32(0.5),
            dmin: F16::from_f32(0.125),
            scales: pack_scale_min_k4(sc, m),
            qh: [0; 32],
            qs: [0; 128],
        };
        // Element 5 (sub 0): low 0xA, high bit 0 of qh[5] -> 26.
        b.qs[5] = 0xA;
        b.qh[5] = 1;
        // Element 96 + 7 = 103 (sub 3): low nibble high half of qs[32 + 7], bit 3 of qh[7].
        b.qs[39] = 0x2 << 4;
        b.qh[7] = 1 << 3; // -> 18
                          // Element 224 + 31 = 255 (sub 7): high nibble of qs[96 + 31], bit 7 of qh[31].
        b.qs[127] = 0xF << 4;
        b.qh[31] = 1 << 7; // -> 31
                           // Element 6: high bit only.
        b.qh[6] = 1;

        let mut y = [0.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[5], 0.5 * 26.0 - 0.5);
        assert_eq!(y[6], 0.5 * 16.0 - 0.5);
        assert_eq!(y[7], -0.5);
        assert_eq!(y[103], 0.5 * 2.0 * 18.0);
        assert_eq!(y[255], 0.5 * 3.0 * 31.0 - 0.125);
        assert_eq!(y[39], 0.0); // qh[7] bit 3 belongs to sub-block 3 only
    }
}
