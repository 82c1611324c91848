//! loupe: run quantized GGUF language models on a CPU, and look at how they pick each
//! next token. The layers follow one token: `gguf` (the file) → `model` → CLI; the block
//! formats and kernels live in the `loupe-quant` crate.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod compare;
pub mod gguf;
pub mod model;
pub mod quality;
pub mod quantize;
pub mod sample;
pub mod session;
pub mod store;
pub mod synth;
pub mod tokenizer;
