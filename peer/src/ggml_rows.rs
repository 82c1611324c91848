//! ggml's own block formats: one row of a tensor turned into f32s and back, by ggml.
//!
//! These are the references for loupe-quant's scalar code. Everything goes through the
//! entry points llama.cpp itself uses (the type traits' `to_float`, `ggml_quantize_chunk`),
//! except the two activation formats, which ggml only ever writes from the CPU backend:
//!
//! | type | dequantize with | quantize with |
//! |---|---|---|
//! | Q8_K | `dequantize_row_q8_K` (exported from ggml-base, not in the traits) | `quantize_row_q8_K_ref` |
//! | Q8_1 | none in ggml: `d * q` with ggml's f16 conversion | `quantize_row_q8_1_ref` (the traits' `from_float_ref`) |
//! | F32 | a copy (the traits have no `to_float`) | `ggml_quantize_chunk` (a copy) |
//!
//! ggml answers bad arguments with `GGML_ASSERT` (an abort), so every length and type is
//! checked here first, and a bad one comes back as an error.

use std::ffi::{c_void, CStr};

use anyhow::{bail, ensure, Result};
use llama_cpp_sys_2 as sys;
use loupe_quant::GgmlType;

// Exported by ggml-base (GGML_API in ggml-quants.h) but outside the headers the bindings
// cover. The block pointers are `void *` here; the C side reads/writes whole blocks.
extern "C" {
    fn dequantize_row_q8_K(x: *const c_void, y: *mut f32, k: i64);
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q8_1_ref(x: *const f32, y: *mut c_void, k: i64);
}

/// What ggml's type traits say about a type.
#[derive(Clone, Copy, Debug)]
pub struct Traits {
    pub name: &'static str,
    pub block_elems: usize,
    pub block_bytes: usize,
    pub is_quantized: bool,
    to_float: sys::ggml_to_float_t,
}

/// ggml's type traits for `ty` (ggml's table, not loupe's).
pub fn traits(ty: GgmlType) -> Traits {
    crate::init();
    // SAFETY: every GgmlType id is below GGML_TYPE_COUNT in this pinned ggml (the enum and
    // ggml's type list are the same set), so ggml returns a pointer into its static,
    // never-freed type table.
    let t = unsafe { &*sys::ggml_get_type_traits(ty.id() as sys::ggml_type) };
    // SAFETY: `type_name` points to a static NUL-terminated string literal in ggml.c.
    let name = unsafe { CStr::from_ptr(t.type_name) }
        .to_str()
        .unwrap_or("?");
    Traits {
        name,
        block_elems: t.blck_size.max(0) as usize,
        block_bytes: t.type_size,
        is_quantized: t.is_quantized,
        to_float: t.to_float,
    }
}

/// Bytes of a row of `n` elements of `ty`, as ggml computes it (`ggml_row_size`).
pub fn row_size(ty: GgmlType, n: usize) -> Result<usize> {
    let t = traits(ty);
    ensure!(
        t.block_elems > 0 && t.block_bytes > 0,
        "ggml has no block layout for {ty}"
    );
    ensure!(
        n.is_multiple_of(t.block_elems),
        "{ty}: {n} elements is not a whole number of {}-element blocks",
        t.block_elems
    );
    let n64 = i64::try_from(n)?;
    // SAFETY: the type is valid and n is a whole number of blocks, the two conditions
    // ggml_row_size asserts; it only does arithmetic.
    Ok(unsafe { sys::ggml_row_size(ty.id() as sys::ggml_type, n64) })
}

/// `n` elements of type `ty` in `src`, dequantized by ggml.
pub fn dequantize_row(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>> {
    let bytes = row_size(ty, n)?;
    ensure!(
        src.len() == bytes,
        "{ty}: {n} elements need {bytes} bytes, got {}",
        src.len()
    );
    let mut out = vec![0f32; n];
    let k = i64::try_from(n)?;
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::Q8_K => {
            let blocks = aligned_copy(src);
            // SAFETY: `blocks` holds exactly n/256 blocks (src was checked against
            // ggml_row_size above), 8-byte aligned like a C array of block_q8_K, and out
            // has n floats: what dequantize_row_q8_K reads and writes for k = n.
            unsafe { dequantize_row_q8_K(blocks.as_ptr().cast(), out.as_mut_ptr(), k) };
        }
        GgmlType::Q8_1 => {
            // block_q8_1: f16 d, f16 s (= d * sum(q)), then 32 i8 q; x = d * q.
            for (blk, o) in src.chunks_exact(36).zip(out.chunks_exact_mut(32)) {
                let d = fp16_to_fp32(u16::from_le_bytes([blk[0], blk[1]]));
                for (x, &q) in o.iter_mut().zip(&blk[4..]) {
                    *x = (q as i8) as f32 * d;
                }
            }
        }
        _ => {
            let Some(to_float) = traits(ty).to_float else {
                bail!("ggml has no dequantize (to_float) for {ty}");
            };
            let blocks = aligned_copy(src);
            // SAFETY: `blocks` holds exactly ggml_row_size(ty, n) bytes, 8-byte aligned
            // like a C array of the type's blocks, and out has n floats: what
            // to_float(x, y, k) reads and writes for k = n.
            unsafe { to_float(blocks.as_ptr().cast(), out.as_mut_ptr(), k) };
        }
    }
    Ok(out)
}

/// `src` copied into 8-byte aligned memory (zero padded at the end). Block structs in C
/// contain f16/f32 fields and must not be read through a misaligned pointer; a `&[u8]`
/// (from a file map or a Vec<u8>) promises no alignment at all.
fn aligned_copy(src: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; src.len().div_ceil(8)];
    for (w, b) in words.iter_mut().zip(src.chunks(8)) {
        let mut le = [0u8; 8];
        le[..b.len()].copy_from_slice(b);
        // Native order, so that the bytes in memory are src's bytes in order.
        *w = u64::from_ne_bytes(le);
    }
    words
}

/// ggml's f16 → f32 conversion of one value.
pub fn fp16_to_fp32(h: u16) -> f32 {
    // SAFETY: a pure function of its argument.
    unsafe { sys::ggml_fp16_to_fp32(h) }
}

/// Whether ggml can quantize to `ty` without an importance matrix, through
/// [`quantize_rows`].
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    if matches!(ty, Q8_K | Q8_1) {
        return true;
    }
    // The types `ggml_quantize_chunk` handles; anything else hits its `assert(false)`.
    let chunk_types = matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ2_XXS
            | IQ2_XS
            | IQ3_XXS
            | IQ1_S
            | IQ4_NL
            | IQ3_S
            | IQ2_S
            | IQ4_XS
            | IQ1_M
            | TQ1_0
            | TQ2_0
            | MXFP4
            | NVFP4
            | Q1_0
            | Q2_0
    );
    // SAFETY: a lookup in a switch over the type id.
    chunk_types && !unsafe { sys::ggml_quantize_requires_imatrix(ty.id() as sys::ggml_type) }
}

/// One row quantized by ggml (no importance matrix).
pub fn quantize_row(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    quantize_rows(ty, src, src.len())
}

/// Rows of `n_per_row` elements quantized by ggml, one `ggml_quantize_chunk` call for all
/// of them, exactly as llama.cpp's quantizer calls it (minus the imatrix).
pub fn quantize_rows(ty: GgmlType, src: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    ensure!(
        can_quantize(ty),
        "ggml cannot quantize to {ty} here (no quantizer, or it needs an importance matrix)"
    );
    ensure!(
        n_per_row > 0 && src.len().is_multiple_of(n_per_row),
        "{} elements is not a whole number of {n_per_row}-element rows",
        src.len()
    );
    let nrows = src.len() / n_per_row;
    let row_bytes = row_size(ty, n_per_row)?;
    let n_bytes = row_bytes * nrows;
    // Written through block pointers by C, so aligned like a C array of blocks.
    let mut out = vec![0u64; n_bytes.div_ceil(8)];
    let k = i64::try_from(src.len())?;
    match ty {
        GgmlType::Q8_K => {
            // SAFETY: src has k floats (a whole number of 256-blocks, checked by row_size)
            // and out has room for k/256 blocks of 292 bytes, 8-byte aligned.
            unsafe { quantize_row_q8_K_ref(src.as_ptr(), out.as_mut_ptr().cast(), k) };
        }
        GgmlType::Q8_1 => {
            // SAFETY: as above with 32-element, 36-byte blocks.
            unsafe { quantize_row_q8_1_ref(src.as_ptr(), out.as_mut_ptr().cast(), k) };
        }
        _ => {
            // SAFETY: the type is one ggml_quantize_chunk handles without an imatrix
            // (can_quantize), n_per_row is a whole number of blocks (row_size), start = 0,
            // src holds nrows * n_per_row floats and out nrows * row_size bytes, 8-byte aligned.
            let written = unsafe {
                sys::ggml_quantize_chunk(
                    ty.id() as sys::ggml_type,
                    src.as_ptr(),
                    out.as_mut_ptr().cast(),
                    0,
                    i64::try_from(nrows)?,
                    i64::try_from(n_per_row)?,
                    std::ptr::null(),
                )
            };
            ensure!(
                written == n_bytes,
                "ggml wrote {written} bytes for {ty}, expected {n_bytes}"
            );
        }
    }
    let mut bytes: Vec<u8> = out.iter().flat_map(|w| w.to_ne_bytes()).collect();
    bytes.truncate(n_bytes);
    Ok(bytes)
}

/// One row quantized by the CPU backend's own `from_float` (ggml-cpu's type traits): the
/// quantizer llama.cpp runs on activations at inference time. On x86 with AVX2 the Q8_0
/// and Q8_1 versions are SIMD code that is *not* bit-identical to the `_ref` quantizers
/// above (different reciprocal, round-half-even); Q8_K's is the reference itself.
pub fn quantize_row_cpu(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    crate::init();
    let n_bytes = row_size(ty, src.len())?;
    // SAFETY: every GgmlType id is below GGML_TYPE_COUNT; ggml-cpu returns a pointer into
    // its static type table.
    let from_float =
        unsafe { (*sys::ggml_get_type_traits_cpu(ty.id() as sys::ggml_type)).from_float };
    let Some(from_float) = from_float else {
        bail!("ggml-cpu has no from_float for {ty}");
    };
    let mut out = vec![0u64; n_bytes.div_ceil(8)];
    // SAFETY: src has a whole number of blocks (row_size) and out room for their
    // n_bytes, 8-byte aligned; from_float(x, y, k) reads k floats and writes k's blocks.
    unsafe {
        from_float(
            src.as_ptr(),
            out.as_mut_ptr().cast(),
            i64::try_from(src.len())?,
        )
    };
    let mut bytes: Vec<u8> = out.iter().flat_map(|w| w.to_ne_bytes()).collect();
    bytes.truncate(n_bytes);
    Ok(bytes)
}
