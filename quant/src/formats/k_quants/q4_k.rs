//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32, `x = d * sc * q - dmin * m`
//! with 4-bit `q`, 6-bit sub-block scale `sc` and min `m`, and f16 `d`, `dmin`. 144 bytes
//! per 256 weights: 4.5 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::make_quants::{make_qkx2_quants, Qkx2Search};
use super::q8_k::nearest_int;
use super::scale_min::{pack_scale_min_k4, scale_min_k4};
use super::{lane_sums, mins_dot, scales_mins_k4, BlockQ8K, K_SCALE_SIZE, QK_K};
use crate::formats::{exact, exact_mut};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

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

impl QuantizeBlock for BlockQ4K {
    /// ggml's `quantize_row_q4_K_ref`, what `ggml_quantize_chunk` runs without an
    /// importance matrix.
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "Q4_K");
        let search = Qkx2Search {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let (l, scales, d, dmin) = quantize_k4_scales(x, 15, search);
        let mut qs = [0u8; QK_K / 2];
        for (q, l) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
            for (j, q) in q.iter_mut().enumerate() {
                *q = l[j] | (l[j + 32] << 4);
            }
        }
        BlockQ4K {
            d,
            dmin,
            scales,
            qs,
        }
    }
}

/// The first half of ggml's `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref`: per 32
/// weights a scale and min by `make_qkx2_quants` (weights `rms + |x|`), both rounded to 6
/// bits against the largest, then every weight re-rounded to `0..=nmax` with the scale and
/// min it will be decoded with. Returns the quants, the packed scales and `d`, `dmin`.
pub(crate) fn quantize_k4_scales(
    x: &[f32; QK_K],
    nmax: i32,
    search: Qkx2Search,
) -> ([u8; QK_K], [u8; K_SCALE_SIZE], F16, F16) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for (j, (x, l)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let mut sum_x2 = 0.0f32;
        for &v in x {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + x[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(nmax, x, &weights, l, &mut laux, search);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // C keeps the rounded values in a uint8 before taking the min with 63.
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let packed = pack_scale_min_k4(ls, lm);
    let d = F16::from_f32(max_scale / 63.0);
    let dmin = F16::from_f32(max_min / 63.0);

    for (j, (x, l)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = scale_min_k4(j, &packed);
        let dl = d.to_f32() * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin.to_f32() * m as f32;
        for (l, &v) in l.iter_mut().zip(x) {
            *l = nearest_int((v + ml) / dl).clamp(0, nmax) as u8;
        }
    }
    (l, packed, d, dmin)
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
