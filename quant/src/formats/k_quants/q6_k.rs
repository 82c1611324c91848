//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16, `x = d * sc * (q - 32)` with
//! 6-bit `q` (4 low bits plus 2 high bits), an i8 sub-block scale `sc` and one f16 `d`.
//! 210 bytes per 256 weights: 6.5625 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::make_quants::{make_qx_quants, GROUP_MAX_EPS};
use super::q8_k::nearest_int;
use super::{lane_sums, BlockQ8K, QK_K};
use crate::formats::{exact, exact_mut};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q6_K super-block (ggml `block_q6_K`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits. Each half (128 weights) uses 64 bytes: element `l` (l < 32) in the low
    /// nibble of byte `l`, element `32 + l` low nibble of byte `32 + l`, element `64 + l`
    /// high nibble of byte `l`, element `96 + l` high nibble of byte `32 + l`.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits. Each half uses 32 bytes: bits `2k..2k+2` of byte `l` belong to element
    /// `32k + l`.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales, one per 16 weights in output order.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: F16,
}

const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_K);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "Q6_K");
        let d = self.d.to_f32();
        for half in 0..2 {
            let y = &mut y[128 * half..128 * half + 128];
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let sc = &self.scales[8 * half..8 * half + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                // Left to right as ggml: (d * sc) * q.
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl QuantizeBlock for BlockQ6K {
    /// ggml's `quantize_row_q6_K_ref` (what `ggml_quantize_chunk` runs without an
    /// importance matrix): a signed scale per 16 weights by `make_qx_quants`, the scales
    /// rounded to i8 against the one of largest magnitude (which maps to -128), then every
    /// weight re-rounded to -32..=31 with its decoded scale.
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "Q6_K");
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for (j, (x, l)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            scales[j] = make_qx_quants(32, x, l);
            let a = scales[j].abs();
            if a > max_abs_scale {
                max_abs_scale = a;
                max_scale = scales[j];
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return BlockQ6K {
                ql: [0; QK_K / 2],
                qh: [0; QK_K / 4],
                scales: [0; QK_K / 16],
                d: F16::from_f32(0.0),
            };
        }

        let iscale = -128.0 / max_scale;
        let d = F16::from_f32(1.0 / iscale);
        let sc: [i8; 16] = std::array::from_fn(|j| nearest_int(iscale * scales[j]).min(127) as i8);
        for ((x, l), &s) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).zip(&sc) {
            let dl = d.to_f32() * s as f32;
            if dl == 0.0 {
                continue;
            }
            for (l, &v) in l.iter_mut().zip(x) {
                *l = (nearest_int(v / dl).clamp(-32, 31) + 32) as i8;
            }
        }

        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for ((ql, qh), l) in ql
            .chunks_exact_mut(64)
            .zip(qh.chunks_exact_mut(32))
            .zip(l.chunks_exact(128))
        {
            for j in 0..32 {
                let q = |k: usize| l[j + 32 * k] as u8;
                ql[j] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
                ql[j + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
                qh[j] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        BlockQ6K {
            ql,
            qh,
            scales: sc,
            d,
        }
    }
}

/// Dot product of a Q6_K row with a Q8_K row (ggml `ggml_vec_dot_q6_K_q8_K`, generic):
/// per block the integer `sum(scale * (q - 32) * q8)` in eight lanes, times `d * d8`; the
/// lanes are kept as eight float sums across blocks and added last.
pub fn vec_dot(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q6_K x Q8_K: rows of different lengths");
    let mut sums = [0.0f32; 8];
    let mut a = [0i8; QK_K];
    for (x, y) in x.iter().zip(y) {
        for half in 0..2 {
            let a = &mut a[128 * half..128 * half + 128];
            let ql = &x.ql[64 * half..64 * half + 64];
            let qh = &x.qh[32 * half..32 * half + 32];
            for l in 0..32 {
                a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let scales: [i32; 16] = std::array::from_fn(|j| x.scales[j] as i32);
        let lanes = lane_sums(&a, &y.qs, &scales);
        let d = x.d.to_f32() * y.d;
        for (s, &l) in sums.iter_mut().zip(&lanes) {
            *s += d * l as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut b = BlockQ6K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [0; 16],
            d: F16::from_f32(0.5),
        };
        b.scales[0] = 2; // elements 0..16
        b.scales[5] = -3; // elements 80..96
        b.scales[15] = 1; // elements 240..256
                          // Element 1: low nibble of ql[1], bits 0..2 of qh[1]: q = 0b11_0101 = 53.
        b.ql[1] = 0x5;
        b.qh[1] = 0b11;
        // Element 80 + 4 = 84 = 64 + 20: high nibble of ql[20] and bits 4..6 of qh[20],
        // all left zero: q = 0.
        // Element 255 = 128 + 96 + 31: high nibble of ql[64 + 63], bits 6..8 of qh[32 + 31].
        b.ql[127] = 0xF << 4;
        b.qh[63] = 0b10 << 6; // q = 0b10_1111 = 47

        let mut y = [0.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[1], 0.5 * 2.0 * (53.0 - 32.0));
        assert_eq!(y[0], 0.5 * 2.0 * -32.0);
        assert_eq!(y[84], 0.5 * -3.0 * -32.0);
        assert_eq!(y[255], 0.5 * 1.0 * 15.0);
        assert_eq!(y[100], 0.0); // scale 0
    }
}
