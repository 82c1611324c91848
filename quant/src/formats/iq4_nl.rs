//! IQ4_NL: blocks of 32 weights, `x = d * KVALUES_IQ4NL[q]` with a 4-bit index `q` into a
//! fixed non-linear table and one f16 scale `d`. 18 bytes per 32 weights: 4.5 bits per
//! weight. Same packing as Q4_0, only the 16 levels differ.

use bytemuck::{Pod, Zeroable};

use super::q8_0::BlockQ8_0;
use super::{exact_mut, QK32};
use crate::{BlockFormat, GgmlType, F16};

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
