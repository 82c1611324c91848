//! Models: what a GGUF's metadata says about the network it holds.

pub mod ftype;
pub mod summary;
