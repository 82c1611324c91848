//! loupe-quant: the block formats of GGUF tensors.
//!
//! Each format lives in its own file under `formats/` with its `#[repr(C)]` block, a size
//! assert and a scalar reference `dequantize` (and `quantize` where loupe writes the format).
//! The functions here dispatch a whole row by [`GgmlType`]; bytes become blocks only in
//! [`cast`]. Dot products and matmuls over quantized rows, with the SIMD kernels chosen at
//! run time, are in [`kernels`]: [`quantize_activation`], [`vec_dot`], [`matmul`].

pub mod attn;
pub mod block;
pub mod cast;
pub mod fa_tile;
pub mod float16;
pub mod formats;
pub mod ggml_type;
pub mod hadamard;
pub mod kernels;
pub mod packed;

pub use block::{BlockFormat, QuantizeBlock};
pub use float16::{Bf16, F16};
pub use ggml_type::{GgmlType, ALL_TYPES};
pub use hadamard::walsh_hadamard;
pub use kernels::{kernels, matmul, quantize_activation, vec_dot, Kernels, BATCH_TILE_ROWS};

use formats::*;

// Block fields are read in native byte order; GGUF data is little-endian.
#[cfg(target_endian = "big")]
compile_error!("loupe-quant reads GGUF blocks in place and supports little-endian targets only");

/// What can go wrong turning bytes into numbers or back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("type {ty} (id {id}) is not supported", ty = .ty, id = .ty.id())]
    Unsupported { ty: GgmlType },
    #[error("{ty}: {elems} elements is not a whole number of {block}-element blocks", block = .ty.block_elems())]
    NotWholeBlocks { ty: GgmlType, elems: usize },
    #[error("{ty}: {elems} elements need {expected} bytes, got {got}")]
    WrongByteLength {
        ty: GgmlType,
        elems: usize,
        expected: usize,
        got: usize,
    },
    #[error("{ty}: {bytes} bytes is not a whole number of {block}-byte blocks", block = .ty.block_bytes())]
    PartialBlock { ty: GgmlType, bytes: usize },
    #[error("weight rows {start}..{end} are not within the matrix's {n_rows} rows")]
    RowsOutOfRange {
        start: usize,
        end: usize,
        n_rows: usize,
    },
    #[error("the output needs {expected} values (activation rows x weight rows), got {got}")]
    WrongOutputLength { expected: usize, got: usize },
    #[error("packed weight rows {start}..{end} do not start on a {tile}-row tile")]
    PackedRowsUnaligned {
        start: usize,
        end: usize,
        tile: usize,
    },
    #[error("cannot map {bytes} bytes for repacked weights: {reason}")]
    PackedMemory { bytes: usize, reason: String },
    #[error("the {table} kernel table has no kernel for packed weights")]
    NoPackedKernel { table: &'static str },
}

/// Decode a row of `dst.len()` elements of type `ty` from `src`, which must be exactly
/// `ty.row_bytes(dst.len())` bytes. `src` may start at any address.
///
/// Every type [`GgmlType::is_supported`] names is accepted; for those, the output is
/// bit-identical to ggml's `dequantize_row_*` (Q8_1, which ggml cannot dequantize, decodes
/// as `d * q`).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    if !ty.is_supported() {
        return Err(QuantError::Unsupported { ty });
    }
    check_row(ty, dst.len(), src.len())?;
    match ty {
        F32 => dequantize_blocks::<BlockF32>(src, dst),
        F16 => dequantize_blocks::<BlockF16>(src, dst),
        BF16 => dequantize_blocks::<BlockBf16>(src, dst),
        Q4_0 => dequantize_blocks::<BlockQ4_0>(src, dst),
        Q4_1 => dequantize_blocks::<BlockQ4_1>(src, dst),
        Q5_0 => dequantize_blocks::<BlockQ5_0>(src, dst),
        Q5_1 => dequantize_blocks::<BlockQ5_1>(src, dst),
        Q8_0 => dequantize_blocks::<BlockQ8_0>(src, dst),
        Q8_1 => dequantize_blocks::<BlockQ8_1>(src, dst),
        Q2_K => dequantize_blocks::<BlockQ2K>(src, dst),
        Q3_K => dequantize_blocks::<BlockQ3K>(src, dst),
        Q4_K => dequantize_blocks::<BlockQ4K>(src, dst),
        Q5_K => dequantize_blocks::<BlockQ5K>(src, dst),
        Q6_K => dequantize_blocks::<BlockQ6K>(src, dst),
        Q8_K => dequantize_blocks::<BlockQ8K>(src, dst),
        IQ4_NL => dequantize_blocks::<BlockIq4Nl>(src, dst),
        IQ4_XS => dequantize_blocks::<BlockIq4Xs>(src, dst),
        _ => Err(QuantError::Unsupported { ty }),
    }
}

/// Encode one head's keys or values as a block-format KV cache stores them (llama.cpp's
/// CPU `from_float` for the cache type): Q8_0 as activations are quantized
/// ([`quantize_activation`]: rounded half to even), other formats by [`quantize_row`]
/// (Q4_0 by ggml's reference). The engine's cache and the GPU's cache tests share it.
pub fn quantize_kv_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if ty == GgmlType::Q8_0 {
        quantize_activation(ty, src, dst)
    } else {
        quantize_row(ty, src, dst)
    }
}

/// Encode `src` as a row of type `ty` into `dst`, which must be exactly
/// `ty.row_bytes(src.len())` bytes. Bit-identical to ggml's `ggml_quantize_chunk` without
/// an importance matrix (what llama.cpp's quantizer runs): the `quantize_row_*_ref`
/// functions and f16/bf16 row conversions, and for IQ4_NL and IQ4_XS `quantize_iq4_*`
/// (IQ4_NL's `_ref` differs: it tries no scales). Q8_1 and Q8_K, which the chunk API does
/// not write, are their `_ref` quantizers. Only the types [`can_quantize`] names are
/// accepted.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported { ty });
    }
    check_row(ty, src.len(), dst.len())?;
    match ty {
        F32 => quantize_blocks::<BlockF32>(src, dst),
        F16 => quantize_blocks::<BlockF16>(src, dst),
        BF16 => quantize_blocks::<BlockBf16>(src, dst),
        Q4_0 => quantize_blocks::<BlockQ4_0>(src, dst),
        Q4_1 => quantize_blocks::<BlockQ4_1>(src, dst),
        Q5_0 => quantize_blocks::<BlockQ5_0>(src, dst),
        Q5_1 => quantize_blocks::<BlockQ5_1>(src, dst),
        Q8_0 => quantize_blocks::<BlockQ8_0>(src, dst),
        Q8_1 => quantize_blocks::<BlockQ8_1>(src, dst),
        Q2_K => quantize_blocks::<BlockQ2K>(src, dst),
        Q3_K => quantize_blocks::<BlockQ3K>(src, dst),
        Q4_K => quantize_blocks::<BlockQ4K>(src, dst),
        Q5_K => quantize_blocks::<BlockQ5K>(src, dst),
        Q6_K => quantize_blocks::<BlockQ6K>(src, dst),
        Q8_K => quantize_blocks::<BlockQ8K>(src, dst),
        IQ4_NL => quantize_blocks::<BlockIq4Nl>(src, dst),
        IQ4_XS => quantize_blocks::<BlockIq4Xs>(src, dst),
        _ => Err(QuantError::Unsupported { ty }),
    }
}

/// Whether [`quantize_row`] can write type `ty`: every type loupe reads, it also writes
/// (a test holds `quantize_row` to this).
pub fn can_quantize(ty: GgmlType) -> bool {
    ty.is_supported()
}

/// The format the activation side of a dot product with `ty` weights is quantized to
/// (ggml-cpu's `vec_dot_type`), for the supported types; see
/// [`BlockFormat::VEC_DOT_TYPE`].
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    match ty {
        F32 => BlockF32::VEC_DOT_TYPE,
        F16 => BlockF16::VEC_DOT_TYPE,
        BF16 => BlockBf16::VEC_DOT_TYPE,
        Q4_0 => BlockQ4_0::VEC_DOT_TYPE,
        Q4_1 => BlockQ4_1::VEC_DOT_TYPE,
        Q5_0 => BlockQ5_0::VEC_DOT_TYPE,
        Q5_1 => BlockQ5_1::VEC_DOT_TYPE,
        Q8_0 => BlockQ8_0::VEC_DOT_TYPE,
        Q8_1 => BlockQ8_1::VEC_DOT_TYPE,
        Q2_K => BlockQ2K::VEC_DOT_TYPE,
        Q3_K => BlockQ3K::VEC_DOT_TYPE,
        Q4_K => BlockQ4K::VEC_DOT_TYPE,
        Q5_K => BlockQ5K::VEC_DOT_TYPE,
        Q6_K => BlockQ6K::VEC_DOT_TYPE,
        Q8_K => BlockQ8K::VEC_DOT_TYPE,
        IQ4_NL => BlockIq4Nl::VEC_DOT_TYPE,
        IQ4_XS => BlockIq4Xs::VEC_DOT_TYPE,
        _ => None,
    }
}

/// A row of `elems` elements of `ty` must be whole blocks and take exactly `bytes` bytes.
fn check_row(ty: GgmlType, elems: usize, bytes: usize) -> Result<(), QuantError> {
    if !elems.is_multiple_of(ty.block_elems()) {
        return Err(QuantError::NotWholeBlocks { ty, elems });
    }
    let expected = elems / ty.block_elems() * ty.block_bytes();
    if bytes != expected {
        return Err(QuantError::WrongByteLength {
            ty,
            elems,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

fn dequantize_blocks<B: BlockFormat>(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let blocks = cast::as_blocks::<B>(src)?;
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(B::ELEMS)) {
        b.dequantize(y);
    }
    Ok(())
}

fn quantize_blocks<B: QuantizeBlock>(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    cast::with_blocks_mut::<B, _>(dst, |blocks| {
        for (b, x) in blocks.iter_mut().zip(src.chunks_exact(B::ELEMS)) {
            *b = B::quantize(x);
        }
    })
}

#[cfg(test)]
mod tests;
