//! The two 16-bit float encodings found in blocks: IEEE half (`F16`) and bfloat16 (`Bf16`).
//!
//! Both are kept as raw bits and converted by our own code rather than the `half` crate or
//! F16C, because the conversions must agree with ggml bit for bit, NaNs included. ggml
//! writes every NaN as the canonical quiet half NaN 0x7E00 (plus sign), where `half` and
//! F16C keep the payload; for bfloat16 ggml forces the quiet bit and otherwise truncates.

use bytemuck::{Pod, Zeroable};

/// An IEEE 754 binary16 value, stored as its bits (little-endian in a file, like everything
/// in GGUF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(transparent)]
pub struct F16(pub u16);

/// A bfloat16 value (the top half of an f32), stored as its bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl F16 {
    pub const ZERO: F16 = F16(0);

    /// Widen to f32. Exact for every finite value; the arithmetic mirrors ggml's portable
    /// conversion step for step, so NaN payloads come out the same as well.
    #[inline]
    pub fn to_f32(self) -> f32 {
        let w = (self.0 as u32) << 16;
        let sign = w & 0x8000_0000;
        // Shifting the sign out leaves exponent and mantissa at the top of the word.
        let two_w = w.wrapping_add(w);

        // Normal numbers (and inf/NaN): move the fields into f32 position with the f32
        // exponent bias minus 112, then multiply the missing 2^112 back in.
        let exp_offset = 0xE0u32 << 23;
        let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
        let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;

        // Subnormals: place the mantissa under the exponent of 0.5 and subtract 0.5, which
        // yields mantissa * 2^-24 exactly.
        let magic_mask = 126u32 << 23;
        let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;

        let denormalized_cutoff = 1u32 << 27;
        let bits = if two_w < denormalized_cutoff {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        };
        f32::from_bits(sign | bits)
    }

    /// Narrow from f32 with round-to-nearest-even; overflow gives infinity, every NaN
    /// becomes 0x7E00 with the input's sign (ggml's rule).
    #[inline]
    pub fn from_f32(f: f32) -> F16 {
        // Scaling |f| by 2^112 and then by 2^-110 sends values too large for half to
        // infinity while leaving the others multiplied by 4.
        let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
        let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        // Add a power of two chosen from f's exponent so that the sum's ulp equals the
        // ulp of half at f's magnitude: the FPU's own round-to-nearest-even then drops
        // exactly the bits half cannot keep. The floor on the exponent gives subnormal
        // halves their fixed ulp of 2^-24.
        let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
        base += f32::from_bits((bias >> 1) + 0x0780_0000);
        // The sum's exponent and top mantissa bits now read as the half's fields.
        let bits = base.to_bits();
        let exp_bits = (bits >> 13) & 0x0000_7C00;
        let mantissa_bits = bits & 0x0000_0FFF;
        let nonsign = exp_bits + mantissa_bits;
        let magnitude = if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        };
        F16(((sign >> 16) | magnitude) as u16)
    }
}

impl Bf16 {
    pub const ZERO: Bf16 = Bf16(0);

    /// Widen to f32: the bits become the top half of the f32, exactly.
    #[inline]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }

    /// Narrow from f32 with round-to-nearest-even. A NaN keeps its top 16 bits with the
    /// quiet bit forced on; subnormals are rounded, not flushed (ggml's rule).
    #[inline]
    pub fn from_f32(f: f32) -> Bf16 {
        let u = f.to_bits();
        if u & 0x7FFF_FFFF > 0x7F80_0000 {
            return Bf16(((u >> 16) | 0x40) as u16);
        }
        // Add just under half an ulp of bf16, plus one when the kept part is odd, so exact
        // ties go to even.
        let rounded = u.wrapping_add(0x7FFF + ((u >> 16) & 1));
        Bf16((rounded >> 16) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_values() {
        assert_eq!(F16::from_f32(1.0).0, 0x3C00);
        assert_eq!(F16::from_f32(-2.0).0, 0xC000);
        assert_eq!(F16::from_f32(65504.0).0, 0x7BFF);
        assert_eq!(F16::from_f32(65520.0).0, 0x7C00); // rounds up to infinity
        assert_eq!(F16::from_f32(f32::INFINITY).0, 0x7C00);
        assert_eq!(F16::from_f32(f32::NEG_INFINITY).0, 0xFC00);
        assert_eq!(F16::from_f32(-0.0).0, 0x8000);
        assert_eq!(F16::from_f32(5.960_464_5e-8).0, 0x0001); // smallest subnormal
        assert_eq!(F16::from_f32(2.0e-8).0, 0x0000); // below half of it
                                                     // Ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
        assert_eq!(F16::from_f32(1.0 + 2f32.powi(-11)).0, 0x3C00);
        assert_eq!(F16::from_f32(1.0 + 3.0 * 2f32.powi(-11)).0, 0x3C02);
        // Every NaN becomes the canonical one, keeping only the sign.
        assert_eq!(F16::from_f32(f32::from_bits(0x7FC1_2345)).0, 0x7E00);
        assert_eq!(F16::from_f32(f32::from_bits(0xFF80_0001)).0, 0xFE00);

        assert_eq!(F16(0x3C00).to_f32(), 1.0);
        assert_eq!(F16(0x0001).to_f32(), 2f32.powi(-24));
        assert_eq!(F16(0x7BFF).to_f32(), 65504.0);
        assert_eq!(F16(0xFC00).to_f32(), f32::NEG_INFINITY);
        assert!(F16(0x7E00).to_f32().is_nan());
        assert_eq!(F16(0x8000).to_f32().to_bits(), 0x8000_0000);
    }

    #[test]
    fn f16_round_trips_every_finite_value_and_matches_rne() {
        for bits in 0..=u16::MAX {
            let h = F16(bits);
            let f = h.to_f32();
            if f.is_nan() {
                assert_eq!(F16::from_f32(f).0 & 0x7FFF, 0x7E00);
                continue;
            }
            assert_eq!(F16::from_f32(f), h, "bits {bits:#06x}");
            // The midpoint to the next value up rounds to the even neighbour.
            let next = F16(bits.wrapping_add(1));
            if bits & 0x7FFF < 0x7BFF && (bits & 0x8000) == 0 {
                let mid = ((f as f64 + next.to_f32() as f64) / 2.0) as f32;
                let want = if bits & 1 == 0 { h } else { next };
                assert_eq!(F16::from_f32(mid), want, "midpoint above {bits:#06x}");
            }
        }
    }

    #[test]
    fn bf16_rounding_and_nan() {
        assert_eq!(Bf16::from_f32(1.0).0, 0x3F80);
        assert_eq!(Bf16(0x3F80).to_f32(), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (down).
        assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8)).0, 0x3F80);
        // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(Bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).0, 0x3F82);
        assert_eq!(Bf16::from_f32(f32::from_bits(0x3F80_8001)).0, 0x3F81);
        assert_eq!(Bf16::from_f32(f32::MAX).0, 0x7F80); // rounds up to infinity
                                                        // NaN: top bits kept, quiet bit forced.
        assert_eq!(Bf16::from_f32(f32::from_bits(0x7F80_0001)).0, 0x7FC0);
        assert_eq!(Bf16::from_f32(f32::from_bits(0xFFA5_0000)).0, 0xFFE5);
        // Subnormals are rounded, not flushed.
        assert_eq!(Bf16::from_f32(f32::from_bits(0x0000_8001)).0, 0x0001);
    }
}
