//! IQ4_NL: blocks of 32 weights, `x = d * KVALUES_IQ4NL[q]` with a 4-bit index `q` into a
//! fixed non-linear table and one f16 scale `d`. 18 bytes per 32 weights: 4.5 bits per
//! weight. Same packing as Q4_0, only the 16 levels differ.

use bytemuck::{Pod, Zeroable};

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
