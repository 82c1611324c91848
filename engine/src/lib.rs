//! loupe-engine: a GGUF language model turned into a next-token generator.
//!
//! It owns everything between the file and the front ends, in the order one token flows:
//! [`model`] (config from metadata, weights borrowed from the memory map, the forward pass
//! over a backend seam, the KV cache), [`tokenizer`] (text ↔ ids from the file's
//! vocabulary), [`sample`] (the sampler chain), [`session`] (token history and cache kept
//! across turns, with prefix reuse) and [`generate`] (the one streaming generation loop
//! every front end drives), plus [`quality`] (perplexity and KL divergence as llama.cpp
//! computes them). It uses `loupe-gguf` for the file and `loupe-quant` for the kernels;
//! it never prints, parses flags or knows about terminals: results, errors and progress
//! events are returned to the caller.

pub mod generate;
pub mod model;
pub mod quality;
pub mod sample;
pub mod session;
pub mod tokenizer;
