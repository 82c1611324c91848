//! Q3_K: super-blocks of 256 weights in 16 sub-blocks of 16, `x = d * (sc - 32) * (q - 4*!h)`
//! with a 3-bit quant made of 2 low bits `q` and a high bit `h` (cleared high bit subtracts
//! 4, giving -4..=3), a 6-bit sub-block scale `sc` and one f16 `d`. 110 bytes per 256
//! weights: 3.4375 bits per weight.

use bytemuck::{Pod, Zeroable};

use super::make_quants::{make_q3_quants, pack_2bit};
use super::q8_k::nearest_int;
use super::{lane_sums, BlockQ8K, QK_K};
use crate::formats::{exact, exact_mut};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q3_K super-block (ggml `block_q3_K`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits: element `32*b + l` (`b` = 0..8, `l` = 0..32) is bit `b` of `hmask[l]`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, packed as Q2_K's `qs`.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, offset by 32. Scale `i` has its low 4 bits in the low nibble
    /// of byte `i` (i < 8) or the high nibble of byte `i - 8` (i >= 8), and its top 2 bits
    /// at bits `2*(i/4)..` of byte `8 + i%4`.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: F16,
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The sixteen sub-block scales, each in -32..=31.
    pub fn unpack_scales(&self) -> [i8; 16] {
        let s = &self.scales;
        std::array::from_fn(|i| {
            let lo = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
            let hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
            (lo | (hi << 4)) as i8 - 32
        })
    }
}

impl BlockFormat for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_K);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "Q3_K");
        let d_all = self.d.to_f32();
        let scales = self.unpack_scales();
        for (is, y) in y.chunks_exact_mut(16).enumerate() {
            let half = is / 8;
            let shift = 2 * ((is % 8) / 2);
            let off = 16 * (is % 2); // offset inside the 32 bytes of this half
            let m = 1u8 << (4 * half + (is % 8) / 2); // the hmask bit of this group of 32
            let dl = d_all * scales[is] as f32;
            for (l, y) in y.iter_mut().enumerate() {
                let lo = ((self.qs[32 * half + off + l] >> shift) & 3) as i8;
                let sub = if self.hmask[off + l] & m != 0 { 0 } else { 4 };
                *y = dl * (lo - sub) as f32;
            }
        }
    }
}

impl QuantizeBlock for BlockQ3K {
    /// ggml's `quantize_row_q3_K_ref` (what `ggml_quantize_chunk` runs without an
    /// importance matrix): a signed scale per 16 weights by `make_q3_quants`, the scales
    /// rounded to 6 bits against the one of largest magnitude, then every weight
    /// re-rounded with its decoded scale.
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "Q3_K");
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for (j, (x, l)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            scales[j] = make_q3_quants(4, x, l);
            let a = scales[j].abs();
            if a > amax {
                amax = a;
                max_scale = scales[j];
            }
        }

        let mut packed = [0u8; 12];
        let d = if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // C stores the rounded value in an int8 before clamping.
                let q = (nearest_int(iscale * s) as i8).clamp(-32, 31) + 32;
                let q = q as u8;
                if j < 8 {
                    packed[j] = q & 0xF;
                } else {
                    packed[j - 8] |= (q & 0xF) << 4;
                }
                packed[8 + j % 4] |= (q >> 4) << (2 * (j / 4));
            }
            F16::from_f32(1.0 / iscale)
        } else {
            F16::from_f32(0.0)
        };

        let mut b = BlockQ3K {
            hmask: [0; QK_K / 8],
            qs: [0; QK_K / 4],
            scales: packed,
            d,
        };
        let sc = b.unpack_scales();
        for ((x, l), &s) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).zip(&sc) {
            let dl = d.to_f32() * s as f32;
            if dl == 0.0 {
                continue;
            }
            for (l, &v) in l.iter_mut().zip(x) {
                *l = (nearest_int(v / dl).clamp(-4, 3) + 4) as i8;
            }
        }

        // The high bit of element j goes to bit j / 32 of hmask[j % 32]; the low two bits
        // are packed like Q2_K's.
        let mut low = [0u8; QK_K];
        for (j, (&q, low)) in l.iter().zip(low.iter_mut()).enumerate() {
            let mut q = q as u8;
            if q > 3 {
                b.hmask[j % 32] |= 1 << (j / 32);
                q -= 4;
            }
            *low = q;
        }
        b.qs = pack_2bit(&low);
        b
    }
}

/// Dot product of a Q3_K row with a Q8_K row (ggml `ggml_vec_dot_q3_K_q8_K`, generic):
/// per block the integer `sum(scale * q * q8)` in eight lanes with `q` in -4..=3, times
/// `d * d8`; the lanes are kept as eight float sums across blocks and added last.
pub fn vec_dot(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q3_K x Q8_K: rows of different lengths");
    let mut sums = [0.0f32; 8];
    let mut a = [0i8; QK_K];
    for (x, y) in x.iter().zip(y) {
        for (is, a) in a.chunks_exact_mut(16).enumerate() {
            let half = is / 8;
            let shift = 2 * ((is % 8) / 2);
            let off = 16 * (is % 2);
            let m = 1u8 << (4 * half + (is % 8) / 2);
            for (l, a) in a.iter_mut().enumerate() {
                let lo = ((x.qs[32 * half + off + l] >> shift) & 3) as i8;
                *a = lo - if x.hmask[off + l] & m != 0 { 0 } else { 4 };
            }
        }
        let scales: [i32; 16] = x.unpack_scales().map(|s| s as i32);
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

    /// Pack sixteen scales (each -32..=31) the way the field doc describes.
    fn pack_scales(sc: [i8; 16]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for (i, &v) in sc.iter().enumerate() {
            let u = (v + 32) as u8;
            if i < 8 {
                s[i] |= u & 0xF;
            } else {
                s[i - 8] |= (u & 0xF) << 4;
            }
            s[8 + i % 4] |= (u >> 4) << (2 * (i / 4));
        }
        s
    }

    #[test]
    fn scales_unpack() {
        let sc = [-32, -1, 0, 31, 5, -7, 12, -20, 1, 2, 3, 4, -5, -6, 30, -31];
        let b = BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: pack_scales(sc),
            d: F16::ZERO,
        };
        assert_eq!(b.unpack_scales(), sc);
        // One byte by hand: scale 9 = 2 -> 34 = 0b10_0010: low nibble 2 in the high nibble
        // of byte 1, top bits 0b10 at bits 4..6 of byte 9.
        assert_eq!(b.scales[1] >> 4, 2);
        assert_eq!((b.scales[9] >> 4) & 3, 0b10);
    }

    #[test]
    fn hand_built_block() {
        let mut sc = [0i8; 16];
        sc[0] = 2;
        sc[5] = -3;
        sc[9] = -5;
        sc[15] = 1;
        let mut b = BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: pack_scales(sc),
            d: F16::from_f32(0.5),
        };
        // Element 3: sub-block 0; low bits in byte 3 bits 0..2, high bit 0 of hmask[3].
        b.qs[3] = 0b10;
        b.hmask[3] = 1; // high bit set: q = 2
                        // Element 4: low bits 0b01, high bit clear: q = 1 - 4 = -3.
        b.qs[4] = 0b01;
        // Element 64 + 16 + 2 = 82: sub-block 5 (shift 4), byte 16 + 2, hmask bit 2 of [18].
        b.qs[18] = 0b11 << 4;
        b.hmask[18] = 1 << 2; // q = 3
                              // Element 255: sub-block 15 (second half, shift 6), byte 32 + 31, hmask bit 7 of
                              // [31]; low bits 0 and high bit clear: q = -4.
        b.qs[63] = 0b11; // bits 0..2 belong to element 128 + 31, not 255
        b.hmask[31] = 0x7F;

        let mut y = [0.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[3], 0.5 * 2.0 * 2.0);
        assert_eq!(y[4], 0.5 * 2.0 * -3.0);
        assert_eq!(y[82], 0.5 * -3.0 * 3.0);
        assert_eq!(y[255], 0.5 * 1.0 * -4.0);
        assert_eq!(y[100], 0.0); // scale 0
        assert_eq!(y[128 + 31], 0.5 * sc[9] as f32 * 3.0); // sub-block 9: bit 4 of hmask[31]
    }
}
