//! loupe, the application: the `loupe` command and everything a user drives through it.
//!
//! It owns the command line ([`cli`]), the chat front end ([`chat`]: templates, the REPL,
//! piped mode), the quantization driver ([`quantize`]), `loupe compare` ([`compare`]),
//! benchmarks ([`bench`]), random-weight models ([`synth`]) and where models live
//! ([`store`]). The model itself — forward pass, tokenizer, sampler, sessions, the
//! generation loop — is the `loupe-engine` crate; the file format is `loupe-gguf`; the
//! kernels are `loupe-quant`. Only this crate prints. `ARCHITECTURE.md` maps it all.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod compare;
pub mod quantize;
pub mod report;
pub mod store;
pub mod synth;
