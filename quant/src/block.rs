//! What generic code needs to know about a block format.

use bytemuck::Pod;

use crate::GgmlType;

/// A GGUF block format: a fixed-size `#[repr(C)]` group of `ELEMS` weights laid out exactly
/// as ggml lays it out.
///
/// `Pod` is what lets [`crate::cast`] view file bytes as blocks without copying: every
/// bit pattern is a valid block and there is no padding.
pub trait BlockFormat: Pod + std::fmt::Debug + Send + Sync + 'static {
    /// The type id in a GGUF tensor directory.
    const TYPE: GgmlType;
    /// Weights per block.
    const ELEMS: usize;
    /// Bytes per block, `size_of::<Self>()`.
    const BYTES: usize = std::mem::size_of::<Self>();
    /// The format the other operand of a dot product is quantized to (ggml-cpu's
    /// `vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1/Q8_1, Q8_K for
    /// the K-quants and IQ4_XS, the type itself for F32/F16/BF16. `None` for Q8_K, which
    /// only ever is that other operand.
    const VEC_DOT_TYPE: Option<GgmlType>;

    /// Decode this block into `y`, which must hold exactly `ELEMS` values. Bit-identical
    /// to ggml's `dequantize_row_*` for the same block.
    fn dequantize(&self, y: &mut [f32]);
}

/// A block format loupe can also write (activations, or test data).
pub trait QuantizeBlock: BlockFormat {
    /// Encode `x`, which must hold exactly `ELEMS` values. Bit-identical to ggml's
    /// `quantize_row_*_ref` for the same input.
    fn quantize(x: &[f32]) -> Self;
}
