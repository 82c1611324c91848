//! Errors of the GGUF reader and writer. Each names where the problem is: the byte offset,
//! the metadata key or the tensor and its field.

use std::path::PathBuf;

use loupe_quant::QuantError;

use crate::atomic::Kind;

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

    #[error("{}: {field}: {problem}", path.display())]
    Split {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },

    #[error("tensor {name:?} is not in this file")]
    MissingTensor { name: String },

    #[error("tensor {name:?}: {source}")]
    Quant { name: String, source: QuantError },

    #[error("{} is {what}, not a GGUF file", path.display())]
    NotAFile { path: PathBuf, what: &'static str },

    #[error("cannot write GGUF: {0}")]
    Write(String),

    #[error(transparent)]
    Destination(#[from] WriteError),
}

/// Why a file was not written (see [`crate::atomic`]). Each names the path as given, and
/// the file a link leads to.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{dest} is {what}, not a regular file; loupe writes only regular files")]
    NotAFile { dest: Dest, what: &'static str },

    #[error("{dest} is a model open in this run; write to another path")]
    OpenModel { dest: Dest },

    #[error("{dest} already exists and is {}: pass --force to replace it", found_desc(*.found, *.writing))]
    OtherKind {
        dest: Dest,
        found: Kind,
        writing: Kind,
    },

    #[error("cannot write {dest}: {source}")]
    Io { dest: Dest, source: std::io::Error },
}

fn found_desc(found: Kind, writing: Kind) -> String {
    match found {
        Kind::Data => format!("not {}", writing.name()),
        _ => found.name().to_string(),
    }
}

/// A destination as given, and the file it names once symbolic links are followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub path: PathBuf,
    pub target: PathBuf,
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path == self.target {
            write!(f, "{}", self.path.display())
        } else {
            write!(
                f,
                "{} (a link to {})",
                self.path.display(),
                self.target.display()
            )
        }
    }
}

fn hex4(b: &[u8; 4]) -> String {
    format!("{:02x} {:02x} {:02x} {:02x}", b[0], b[1], b[2], b[3])
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
