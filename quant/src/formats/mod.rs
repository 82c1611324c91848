//! One file per block format: its `#[repr(C)]` layout (exactly ggml's), a size assert, the
//! encoding in a doc line, and the scalar reference `dequantize` (plus `quantize` for the
//! formats loupe writes). These are the references every faster kernel is tested against.
//!
//! Arithmetic follows ggml operation by operation: the same float operations in the same
//! order, never fused into a multiply-add (Rust does not contract `a * b + c`), so results
//! match ggml bit for bit.

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod k_quants;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q5_1;
pub mod q8_0;
pub mod q8_1;

pub use bf16::BlockBf16;
pub use f16::BlockF16;
pub use f32::BlockF32;
pub use iq4_nl::{BlockIq4Nl, KVALUES_IQ4NL};
pub use iq4_xs::BlockIq4Xs;
pub use k_quants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;

/// Elements in a block of every legacy format (Q4_0 … Q8_1) and IQ4_NL.
pub const QK32: usize = 32;

/// C's `a > b ? a : b` on floats, which (unlike `f32::max`) lets a NaN in `b` through.
#[inline]
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// C's conversion of a float to an 8-bit integer as compilers emit it: truncate toward
/// zero to a 32-bit int, keep the low byte. Identical to a direct cast for every value in
/// range, which is all the quantizers produce for finite input.
#[inline]
pub(crate) fn trunc_to_u8(f: f32) -> u8 {
    f as i32 as u8
}

/// Signed variant of [`trunc_to_u8`]: C's `(int8_t)f`.
#[inline]
pub(crate) fn trunc_to_i8(f: f32) -> i8 {
    f as i32 as i8
}

/// A block-sized view of `s`; panics with the format's name when the length is wrong.
#[inline]
pub(crate) fn exact<'a, const N: usize, T>(s: &'a [T], what: &str) -> &'a [T; N] {
    s.try_into()
        .unwrap_or_else(|_| panic!("{what}: expected {N} values, got {}", s.len()))
}

/// Mutable variant of [`exact`].
#[inline]
pub(crate) fn exact_mut<'a, const N: usize, T>(s: &'a mut [T], what: &str) -> &'a mut [T; N] {
    let len = s.len();
    s.try_into()
        .unwrap_or_else(|_| panic!("{what}: expected {N} values, got {len}"))
}
