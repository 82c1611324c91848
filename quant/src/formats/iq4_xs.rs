//! IQ4_XS: super-blocks of 256 weights in 8 sub-blocks of 32, `x = d * (ls - 32) *
//! KVALUES_IQ4NL[q]` with a 6-bit sub-block scale `ls`, a 4-bit table index `q` and one f16
//! super-block scale `d`. 136 bytes per 256 weights: 4.25 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::iq4_nl::{best_index_iq4nl, iq4_block_scale, pack_iq4};
use super::k_quants::{q8_k::nearest_int, BlockQ8K, QK_K};
use super::{exact, exact_mut, KVALUES_IQ4NL};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One IQ4_XS super-block (ggml `block_iq4_xs`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: F16,
    /// High 2 bits of the eight 6-bit scales: bits `2*ib..2*ib+2` for sub-block `ib`.
    pub scales_h: u16,
    /// Low 4 bits of the scales: sub-block `ib` in nibble `ib % 2` of byte `ib / 2`.
    pub scales_l: [u8; QK_K / 64],
    /// Table indices; sub-block `ib` uses bytes `16*ib..16*ib+16`, element `j` in the low
    /// nibble and element `j + 16` in the high nibble (as in IQ4_NL).
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);

impl BlockIq4Xs {
    /// The 6-bit scale of sub-block `ib`, still offset by 32.
    #[inline]
    pub fn scale(&self, ib: usize) -> i32 {
        let lo = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
        let hi = (self.scales_h >> (2 * ib)) & 3;
        (lo as i32) | ((hi as i32) << 4)
    }
}

impl BlockFormat for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const ELEMS: usize = QK_K;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_K);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "IQ4_XS");
        let d = self.d.to_f32();
        for (ib, (y, qs)) in y
            .chunks_exact_mut(32)
            .zip(self.qs.chunks_exact(16))
            .enumerate()
        {
            let dl = d * (self.scale(ib) - 32) as f32;
            for (j, &q) in qs.iter().enumerate() {
                y[j] = dl * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}

impl QuantizeBlock for BlockIq4Xs {
    /// ggml's `quantize_iq4_xs` without an importance matrix (what `ggml_quantize_chunk`
    /// runs): IQ4_NL's scale search per 32 weights, the eight scales rounded to 6 bits
    /// against the one of largest magnitude (which maps to -32), then the indices chosen
    /// again with each decoded sub-block scale (before the f16 rounding of `d`).
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "IQ4_XS");
        let mut scales = [0.0f32; 8];
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for (s, x) in scales.iter_mut().zip(x.chunks_exact(32)) {
            *s = iq4_block_scale(x);
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockIq4Xs {
            d: F16::from_f32(d),
            scales_h: 0,
            scales_l: [0; QK_K / 64],
            qs: [0; QK_K / 2],
        };
        for (ib, (x, qs)) in x
            .chunks_exact(32)
            .zip(b.qs.chunks_exact_mut(16))
            .enumerate()
        {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let idx: [u8; 32] = std::array::from_fn(|j| best_index_iq4nl(idl * x[j]));
            qs.copy_from_slice(&pack_iq4(&idx));
            let ls = (l + 32) as u8;
            b.scales_l[ib / 2] |= (ls & 0xF) << (4 * (ib % 2));
            b.scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        b
    }
}

/// Dot product of an IQ4_XS row with a Q8_K row (ggml `ggml_vec_dot_iq4_xs_q8_K`,
/// generic): per 32-weight sub-block an integer sum of `level * q8`, multiplied by
/// `d * d8 * (scale - 32)`.
pub fn vec_dot(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "IQ4_XS x Q8_K: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let d4d8 = x.d.to_f32() * y.d;
        for (ib, (qs, q8)) in x.qs.chunks_exact(16).zip(y.qs.chunks_exact(32)).enumerate() {
            let dl = d4d8 * (x.scale(ib) - 32) as f32;
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for (j, &q) in qs.iter().enumerate() {
                sumi1 += q8[j] as i32 * KVALUES_IQ4NL[(q & 0xF) as usize] as i32;
                sumi2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
            }
            sumf += dl * (sumi1 + sumi2) as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut b = BlockIq4Xs {
            d: F16::from_f32(0.5),
            scales_h: 0,
            scales_l: [0; 4],
            qs: [0x88; 128], // level 1 everywhere
        };
        // Sub-block 0: ls = 33 (0b10_0001): low nibble 1, high bits 2.
        // Sub-block 3: ls = 30 (0b01_1110): low nibble 14 (high nibble of byte 1), high 1.
        // Sub-block 7: ls = 63: low 15 (high nibble of byte 3), high 3.
        b.scales_l = [0x01, 0xE0, 0x00, 0xF0];
        b.scales_h = (2 | (1 << 6) | (3 << 14)) as u16;
        b.qs[0] = 0xF << 4; // sub-block 0: element 0 index 0 (-127), element 16 index 15 (113)
        b.qs[3 * 16 + 2] = 0x9; // sub-block 3: element 2 level 13, element 18 level -127
        assert_eq!(
            (b.scale(0), b.scale(3), b.scale(7), b.scale(1)),
            (33, 30, 63, 0)
        );
        let mut y = [0.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[0], 0.5 * -127.0);
        assert_eq!(y[16], 0.5 * 113.0);
        assert_eq!(y[1], 0.5);
        assert_eq!(y[96 + 2], -13.0); // 0.5 * (30 - 32) * 13
        assert_eq!(y[96 + 18], 127.0); // 0.5 * (30 - 32) * -127
        assert_eq!(y[32], 0.5 * -32.0); // sub-block 1: ls 0
        assert_eq!(y[7 * 32 + 5], 0.5 * 31.0);
    }
}
