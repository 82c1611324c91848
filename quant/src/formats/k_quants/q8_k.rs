//! Q8_K: super-blocks of 256 weights, `x = d * q` with `q` an i8 and an f32 scale `d`,
//! plus the sums of each 16 quants (for the K-quants' min terms). 292 bytes per 256
//! weights: 9.125 bits per weight. An activation format: what K-quant and IQ4_XS weights
//! are dotted with.

use bytemuck::{Pod, Zeroable};

use super::QK_K;
use crate::formats::{exact, exact_mut};
use crate::{BlockFormat, GgmlType, QuantizeBlock};

/// One Q8_K super-block (ggml `block_q8_K`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale (a plain f32, unlike every other format).
    pub d: f32,
    /// Quants, element `j` in `qs[j]`.
    pub qs: [i8; QK_K],
    /// `bsums[g]` = sum of `qs[16g..16g+16]`.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl BlockFormat for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = QK_K;
    /// Q8_K is only ever the activation side of a dot product.
    const VEC_DOT_TYPE: Option<GgmlType> = None;

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK_K] = exact_mut(y, "Q8_K");
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5 * 2^23 so the FPU
/// rounds away the fraction, then reading the integer out of the mantissa. Valid for
/// |f| <= 2^22 - 1.
#[inline]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

impl QuantizeBlock for BlockQ8K {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = exact(x, "Q8_K");
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves `bsums` untouched here; all quants are zero, so zero is the
            // only value they could correctly hold.
            return BlockQ8K::zeroed();
        }
        // The signed extreme maps to -127 (ggml picked 127 over 128 so that the quants
        // stay symmetric for its SIMD IQ2 paths).
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        let mut bsums = [0i16; QK_K / 16];
        for (s, g) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        BlockQ8K {
            d: 1.0 / iscale,
            qs,
            bsums,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(126.49), 126);
        assert_eq!(nearest_int(-127.0), -127);
    }

    #[test]
    fn hand_built_block() {
        let mut b = BlockQ8K::zeroed();
        b.d = 0.25;
        b.qs[0] = -128;
        b.qs[255] = 7;
        let mut y = [1.0; 256];
        b.dequantize(&mut y);
        assert_eq!(y[0], -32.0);
        assert_eq!(y[255], 1.75);
        assert_eq!(y[1], 0.0);
    }

    #[test]
    fn quantize_scale_and_bsums() {
        let mut x = [0.0f32; 256];
        x[10] = 127.0; // extreme, positive: iscale = -1, d = -1
        x[11] = 2.5; // -2.5 -> -2 (ties to even)
        x[12] = -3.5; // 3.5 -> 4
        x[200] = 1.0;
        let b = BlockQ8K::quantize(&x);
        assert_eq!(b.d, -1.0);
        assert_eq!((b.qs[10], b.qs[11], b.qs[12], b.qs[200]), (-127, -2, 4, -1));
        assert_eq!(b.bsums[0], -125);
        assert_eq!(b.bsums[12], -1);
        assert_eq!(b.bsums[1], 0);
        let zero = BlockQ8K::quantize(&[0.0; 256]);
        assert_eq!(zero.d, 0.0);
        assert!(zero.qs.iter().all(|&q| q == 0) && zero.bsums.iter().all(|&s| s == 0));
    }
}
