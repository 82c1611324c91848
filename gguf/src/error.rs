//! Errors of the GGUF reader and writer. Each names where the problem is: the byte offset,
//! the metadata key or the tensor and its field.

use std::path::PathBuf;

use loupe_quant::QuantError;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("not a GGUF file: magic is {found:?} ({hex}), expected \"GGUF\"", hex = hex4(.found))]
    BadMagic { found: [u8; 4] },

    #[error("big-endian GGUF files are not supported (version field reads {raw:#010x} little-endian, {swapped} big-endian)", swapped = .raw.swap_bytes())]
    BigEndian { raw: u32 },

    #[error("GGUF version {version} is not supported (loupe reads versions 2 and 3{hint})", hint = if *.version == 1 { "; version 1 files predate 64-bit counts, re-convert the model with a current llama.cpp" } else { "" })]
    UnsupportedVersion { version: u32 },

    #[error("truncated at byte {offset}: reading {what} needs {need} bytes, {have} remain")]
    Truncated {
        offset: u64,
        what: String,
        need: u64,
        have: u64,
    },

    #[error("at byte {offset}: {what}")]
    Malformed { offset: u64, what: String },

    #[error("tensor {name:?} (directory entry at byte {offset}): {field}: {problem}")]
    Tensor {
        name: String,
        field: &'static str,
        offset: u64,
        problem: String,
    },

    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },

    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("tensor {name:?} is not in this file")]
    MissingTensor { name: String },

    #[error("tensor {name:?}: {source}")]
    Quant { name: String, source: QuantError },

    #[error("cannot write GGUF: {0}")]
    Write(String),
}

fn hex4(b: &[u8; 4]) -> String {
    format!("{:02x} {:02x} {:02x} {:02x}", b[0], b[1], b[2], b[3])
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
