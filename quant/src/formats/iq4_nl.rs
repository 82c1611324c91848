//! IQ4_NL: blocks of 32 weights, `x = d * KVALUES_IQ4NL[q]` with a 4-bit index `q` into a
//! fixed non-linear table and one f16 scale `d`. 18 bytes per 32 weights: 4.5 bits per
//! weight. Same packing as Q4_0, only the 16 levels differ.

use bytemuck::{Pod, Zeroable};

use super::k_quants::make_quants::GROUP_MAX_EPS;
use super::q8_0::BlockQ8_0;
use super::{exact, exact_mut, QK32};
use crate::{BlockFormat, GgmlType, QuantizeBlock, F16};

/// The 16 levels of IQ4_NL and IQ4_XS (ggml `kvalues_iq4nl`): denser near zero, where
/// trained weights cluster.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// One IQ4_NL block (ggml `block_iq4_nl`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: F16,
    /// Table indices: element `j` low nibble of `qs[j]`, element `j + 16` high nibble.
    pub qs: [u8; QK32 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);

impl BlockFormat for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const ELEMS: usize = QK32;
    const VEC_DOT_TYPE: Option<GgmlType> = Some(GgmlType::Q8_0);

    fn dequantize(&self, y: &mut [f32]) {
        let y: &mut [f32; QK32] = exact_mut(y, "IQ4_NL");
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
            y[j + QK32 / 2] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

impl QuantizeBlock for BlockIq4Nl {
    /// ggml's `quantize_iq4_nl` without an importance matrix, the path
    /// `ggml_quantize_chunk` takes (15 trial scales; `quantize_row_iq4_nl_ref` tries none
    /// and differs).
    fn quantize(x: &[f32]) -> Self {
        let x: &[f32; QK32] = exact(x, "IQ4_NL");
        let scale = iq4_block_scale(x);
        // The single block's scale is the super-block scale, f16-rounded only when stored;
        // the indices are chosen again with the unrounded one.
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let l: [u8; QK32] = std::array::from_fn(|j| best_index_iq4nl(id * x[j]));
        BlockIq4Nl {
            d: F16::from_f32(scale),
            qs: pack_iq4(&l),
        }
    }
}

/// The number of trial inverse scales on each side of the first guess in ggml's IQ4
/// quantizers (`ntry` as `ggml_quantize_chunk` passes it).
const IQ4_NTRY: i32 = 7;

/// The scale of one 32-weight block of IQ4_NL or IQ4_XS, as ggml's
/// `quantize_row_iq4_nl_impl` picks it without an importance matrix: the extreme mapped
/// to the table's -127 end, then the `x^2`-weighted least-squares scale of the table
/// indices for that and for 15 nearby inverse scales, the best fit kept. Zero for a block
/// below [`GROUP_MAX_EPS`].
pub(crate) fn iq4_block_scale(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let fit = |id: f32| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = KVALUES_IQ4NL[best_index_iq4nl(id * v) as usize] as f32;
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / v0;
    let (sumqx, sumq2) = fit(1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -IQ4_NTRY..=IQ4_NTRY {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (sumqx, sumq2) = fit(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// ggml's `best_index_int8` over [`KVALUES_IQ4NL`]: the index of the level nearest `x`
/// (the upper one on a tie), by bisection; the ends for anything beyond them.
pub(crate) fn best_index_iq4nl(x: f32) -> u8 {
    // The levels as floats once (C converts each on comparison; the values are exact).
    const VAL: [f32; 16] = {
        let mut v = [0.0f32; 16];
        let mut i = 0;
        while i < 16 {
            v[i] = KVALUES_IQ4NL[i] as f32;
            i += 1;
        }
        v
    };
    if x <= VAL[0] {
        return 0;
    }
    if x >= VAL[15] {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < VAL[mav] {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - VAL[mu - 1] < VAL[mu] - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// Pack 32 indices as IQ4_NL and each IQ4_XS sub-block store them: element `j` in the low
/// nibble of byte `j`, element `j + 16` in its high nibble.
pub(crate) fn pack_iq4(l: &[u8; QK32]) -> [u8; QK32 / 2] {
    std::array::from_fn(|j| l[j] | (l[j + 16] << 4))
}

/// Dot product of an IQ4_NL row with a Q8_0 row (ggml `ggml_vec_dot_iq4_nl_q8_0`,
/// generic): per block an integer sum of `level * q8`, then one float multiply.
pub fn vec_dot(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len(), "IQ4_NL x Q8_0: rows of different lengths");
    let mut sumf = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let d = y.d.to_f32() * x.d.to_f32();
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for (j, &q) in x.qs.iter().enumerate() {
            sumi1 += y.qs[j] as i32 * KVALUES_IQ4NL[(q & 0xF) as usize] as i32;
            sumi2 += y.qs[j + QK32 / 2] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut qs = [0x88u8; 16]; // index 8 (level 1) everywhere
        qs[0] = 0xF << 4; // element 0: index 0 (-127), element 16: index 15 (113)
        qs[9] = 0x7 | (0x3 << 4); // element 9: -10, element 25: -65
        let b = BlockIq4Nl {
            d: F16::from_f32(0.5),
            qs,
        };
        let mut y = [0.0; 32];
        b.dequantize(&mut y);
        assert_eq!(y[0], -63.5);
        assert_eq!(y[16], 56.5);
        assert_eq!(y[9], -5.0);
        assert_eq!(y[25], -32.5);
        assert_eq!(y[1], 0.5);
    }
}
