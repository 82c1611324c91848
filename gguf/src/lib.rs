//! GGUF files: reading (memory-mapped, validated, zero-copy tensor data) and writing.
//!
//! Layout of a file (little-endian): magic "GGUF", version, tensor count, metadata count,
//! the metadata pairs, the tensor directory, padding to the alignment, then tensor data.
//!
//! This crate owns the file format and nothing above it: no model knowledge, no printing.
//! It uses `loupe-quant` only for the block types' sizes. [`atomic`] is how every file
//! loupe writes reaches the disk.

pub mod atomic;
mod error;
mod file;
mod metadata;
mod parse;
pub mod split;
mod value;
mod writer;

pub use error::{Dest, GgufError, Result, WriteError};
pub use file::{
    not_regular, split_part_path, GgufFile, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT,
};
pub use metadata::Metadata;
pub use parse::{align_up, parse, Directory, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_DIMS};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorToWrite};

use loupe_quant::GgmlType;

/// One entry of the tensor directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions, innermost (contiguous) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Where this entry starts in the file, for error messages.
    pub entry_offset: u64,
    /// Which part of a split model holds the data (0: the first part, or the only file).
    pub part: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data; the reader has checked that this does not overflow.
    pub fn n_bytes(&self) -> u64 {
        self.ty.row_bytes(self.n_elements()).unwrap_or(u64::MAX)
    }

    /// Elements per row (the innermost dimension).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Shape as people write it, innermost first like llama.cpp prints: `[896, 151936]`.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(u64::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}
