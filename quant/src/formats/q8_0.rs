//! Q8_0: blocks of 32 weights, `x = d * q` with `q` an i8 in -127..=127 and one f16 scale
//! `d`. 34 bytes per 32 weights: 8.5 bits per weight. Also the activation format that
//! Q4_0, Q5_0, Q8_0 and IQ4_NL weights are dotted with.

use bytemuck::{Pod, Zeroable};

use super::{c_max, exact, exact_mut, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// One Q8_0 block (ggml `block_q8_0`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: F16,
    /// Quants, element `j` in `qs[j]`.
    pub qs: [i8; QK32],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_0);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "Q8_0");
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_0 {
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "Q8_0");
        let (d, qs) = quantize_q8_symmetric(x);
        BlockQ8_0 {
            d: F16::from_f32(d),
            qs,
        }
    }
}

/// The symmetric 8-bit quantization Q8_0 and Q8_1 share: `d = amax / 127` (in f32, before
/// rounding to f16) and `q = round(x / d)` with halves away from zero.
pub(crate) fn quantize_q8_symmetric(x: &[f32; QK32]) -> (f32, [i8; QK32]) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = c_max(amax, v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK32];
    for (q, &v) in qs.iter_mut().zip(x) {
        // f32::round is C's roundf: nearest, halves away from zero.
        *q = (v * id).round() as i32 as i8;
    }
    (d, qs)
}

/// Dot product of two Q8_0 rows (ggml `ggml_vec_dot_q8_0_q8_0`, generic): per block an
/// integer sum of `q * q8`, then one float multiply by the product of the scales.
pub fn vec_dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "Q8_0 x Q8_0: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sumf += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sumf
}

/// Quantize an activation block the way ggml's CPU backend does at run time on x86
/// (`quantize_row_q8_0` in ggml-cpu's x86 code, the `from_float` llama.cpp runs before
/// every Q4_0/Q5_0/Q8_0/IQ4_NL matmul). It differs from [`QuantizeBlock::quantize`]
/// (ggml's `_ref`) in two ways, so the two can disagree by one step on some elements:
/// the multiplier is `127 / amax` rather than `1 / (amax / 127)`, and halves round to
/// even rather than away from zero. `d` is the same.
///
/// Written step for step after the SIMD code, NaN and out-of-range handling included
/// (the max reduction order, x86 `maxps` NaN rules, `cvtps2dq`'s 0x8000_0000 for
/// unrepresentable values, saturating packs), so the AVX2 version in `kernels` is
/// bit-identical to this one for every input.
pub fn quantize_activation(x: &[f32]) -> BlockQ8_0 {
    let x: &[f32; QK32] = exact(x, "Q8_0");
    let (d, qs, _) = quantize_q8_x86(x);
    BlockQ8_0 {
        d: F16::from_f32(d),
        qs,
    }
}

/// The arithmetic of ggml-cpu's x86 `quantize_row_q8_0`/`_q8_1` for one block: the f32
/// scale, the quants, and the (wrapping) sum of the quants before they are narrowed to
/// bytes, which Q8_1 stores scaled as `s`.
pub(crate) fn quantize_q8_x86(x: &[f32; QK32]) -> (f32, [i8; QK32], i32) {
    // x86 `maxps`: the first operand when it is greater, otherwise the second (so a NaN
    // in either gives the second).
    fn max_ps(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    // Eight lanes over the four 8-float vectors, then halves folded as the SIMD code does.
    let mut m: [f32; 8] = std::array::from_fn(|l| x[l].abs());
    for v in 1..4 {
        for (l, m) in m.iter_mut().enumerate() {
            *m = max_ps(*m, x[8 * v + l].abs());
        }
    }
    let q: [f32; 4] = std::array::from_fn(|l| max_ps(m[4 + l], m[l]));
    let amax = max_ps(max_ps(q[0], q[2]), max_ps(q[1], q[3]));

    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK32];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let r = (v * id).round_ties_even();
        // cvtps2dq: NaN and values outside i32 give the "integer indefinite" i32::MIN.
        let i = if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
            r as i32
        } else {
            i32::MIN
        };
        sum = sum.wrapping_add(i);
        // Two saturating packs (i32 -> i16 -> i8) clamp to the i8 range.
        *q = i.clamp(-128, 127) as i8;
    }
    (d, qs, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0i8; 32];
        qs[0] = -127;
        qs[31] = 5;
        let b = BlockQ8_0 {
            d: F16::from_f32(0.125),
            qs,
        };
        let mut y = [1.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[0], -127.0 * 0.125);
        assert_eq!(y[31], 0.625);
        assert_eq!(y[1], 0.0);
    }

    #[test]
    fn quantize_rounds_halves_away_from_zero() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0; // d = 1
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = -127.0;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..4], &[127, 3, -3, -127]);
        let zero = BlockQ8_0::quantize(&[0.0; 32]);
        assert_eq!((zero.d.0, zero.qs), (0, [0; 32]));
    }
}
