//! Q2_K: super-blocks of 256 weights in 16 sub-blocks of 16, `x = d * sc * q - dmin * m`
//! with 2-bit `q`, 4-bit sub-block scale `sc` and min `m`, and f16 `d`, `dmin`. 84 bytes
//! per 256 weights: 2.625 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::make_quants::{make_qkx2_quants, pack_2bit, Qkx2Search};
use super::q8_k::nearest_int;
use super::{lane_sums, BlockQ8K, QK_K};
use crate::formats::{exact, exact_mut};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q2_K super-block (ggml `block_q2_K`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Sub-block `i`: scale in the low nibble of `scales[i]`, min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// Quants, four per byte. Each half (128 weights) uses 32 bytes; within it, bits
    /// `2*s..2*s+2` of byte `l` hold element `32*s + l` (`s` = 0..4, `l` = 0..32).
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the sub-block scales.
    pub d: F16,
    /// Super-block scale of the sub-block mins.
    pub dmin: F16,
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

impl BlockFormat for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_K);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "Q2_K");
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        // Sub-blocks in output order: 16 weights each, sub-block `is` in 0..16.
        for (is, y) in y.chunks_exact_mut(16).enumerate() {
            let half = is / 8; // which 128-weight half
            let shift = 2 * ((is % 8) / 2); // which bit pair of the byte
            let off = 32 * half + 16 * (is % 2); // first byte of this sub-block
            let sc = self.scales[is];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            for (l, y) in y.iter_mut().enumerate() {
                let q = ((self.qs[off + l] >> shift) & 3) as i8;
                *y = dl * q as f32 - ml;
            }
        }
    }
}

impl QuantizeBlock for BlockQ2K {
    /// ggml's `quantize_row_q2_K_ref` (what `ggml_quantize_chunk` runs without an
    /// importance matrix): a scale and min per 16 weights by `make_qkx2_quants` weighted
    /// by `|x|`, both rounded to 4 bits against the largest, then every weight re-rounded
    /// with the scale and min it will actually be decoded with.
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "Q2_K");
        const Q4SCALE: f32 = 15.0;
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for (j, (x, l)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            let weights: [f32; 16] = std::array::from_fn(|i| x[i].abs());
            (scales[j], mins[j]) = make_qkx2_quants(3, x, &weights, l, &mut laux, search);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }

        let mut sc = [0u8; 16];
        let d = if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (sc, &s) in sc.iter_mut().zip(&scales) {
                *sc = nearest_int(iscale * s) as u8;
            }
            F16::from_f32(max_scale / Q4SCALE)
        } else {
            F16::from_f32(0.0)
        };
        let dmin = if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (sc, &m) in sc.iter_mut().zip(&mins) {
                *sc |= (nearest_int(iscale * m) << 4) as u8;
            }
            F16::from_f32(max_min / Q4SCALE)
        } else {
            F16::from_f32(0.0)
        };

        for ((x, l), &s) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).zip(&sc) {
            let dl = d.to_f32() * (s & 0xF) as f32;
            if dl == 0.0 {
                continue;
            }
            let ml = dmin.to_f32() * (s >> 4) as f32;
            for (l, &v) in l.iter_mut().zip(x) {
                *l = nearest_int((v + ml) / dl).clamp(0, 3) as u8;
            }
        }

        BlockQ2K {
            scales: sc,
            qs: pack_2bit(&l),
            d,
            dmin,
        }
    }
}

/// Dot product of a Q2_K row with a Q8_K row (ggml `ggml_vec_dot_q2_K_q8_K`, generic):
/// per block the integers `sum(scale * q * q8)` and `sum(min * bsum)` (4-bit scale and
/// min per 16 weights), then `d * d8 * isum - dmin * d8 * summs`.
pub fn vec_dot(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q2_K x Q8_K: rows of different lengths");
    let mut sumf = 0.0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in x.iter().zip(y) {
        let summs: i32 = y
            .bsums
            .iter()
            .zip(&x.scales)
            .map(|(&s, &sc)| s as i32 * (sc >> 4) as i32)
            .sum();
        for (is, a) in a.chunks_exact_mut(16).enumerate() {
            let shift = 2 * ((is % 8) / 2);
            let off = 32 * (is / 8) + 16 * (is % 2);
            for (l, a) in a.iter_mut().enumerate() {
                *a = ((x.qs[off + l] >> shift) & 3) as i8;
            }
        }
        let scales: [i32; 16] = std::array::from_fn(|j| (x.scales[j] & 0xF) as i32);
        let isum: i32 = lane_sums(&a, &y.qs, &scales).iter().sum();
        let dall = y.d * x.d.to_f32();
        let dmin = y.d * x.dmin.to_f32();
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut b = BlockQ2K {
            scales: [0; 16],
            qs: [0; 64],
            d: F16::from_f32(0.5),
            dmin: F16::from_f32(0.25),
        };
        // Element 0: sub-block 0, byte 0 bits 0..2.
        b.scales[0] = 3 | (2 << 4); // dl = 1.5, ml = 0.5
        b.qs[0] = 0b11; // q = 3 -> 1.5 * 3 - 0.5
                        // Element 16 + 5 = 21: sub-block 1, byte 16 + 5, bits 0..2.
        b.scales[1] = 4; // dl = 2, no min
        b.qs[21] = 0b10;
        // Element 32*3 + 7 = 103: sub-block 6, byte 7, bits 6..8.
        b.scales[6] = 1 | (15 << 4); // dl = 0.5, ml = 3.75
        b.qs[7] = 0b01 << 6;
        // Element 128 + 64 + 20 = 212: sub-block 13 (second half), byte 32 + 20, bits 4..6.
        b.scales[13] = 10;
        b.qs[52] = 0b11 << 4;

        let mut y = [0.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[0], 1.5 * 3.0 - 0.5);
        assert_eq!(y[1], -0.5);
        assert_eq!(y[21], 4.0);
        assert_eq!(y[103], 0.5 - 3.75);
        assert_eq!(y[212], 5.0 * 3.0);
        assert_eq!(y[213], 0.0);
        // Bits of byte 0 at other shifts belong to elements 32, 64, 96: all zero here.
        assert_eq!(y[32], 0.0);
    }
}
