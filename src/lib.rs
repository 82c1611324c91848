//! loupe, the application: the `loupe` command and everything a user drives through it.
//!
//! It owns the command line ([`cli`]), the chat front end ([`chat`]: templates, the REPL,
//! piped mode), the quantization driver ([`quantize`]), `loupe compare` ([`compare`]),
//! benchmarks ([`bench`]), random-weight models ([`synth`]), where models live
//! ([`store`]), models by name from a hub ([`hub`]) and what a signal does ([`signals`]). The model itself — forward pass, tokenizer, sampler, sessions, the
//! generation loop — is the `loupe-engine` crate; the file format is `loupe-gguf`; the
//! kernels are `loupe-quant`. Only this crate prints. `ARCHITECTURE.md` maps it all.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod compare;
pub mod hub;
pub mod quantize;
pub mod report;
pub mod serve;
pub mod signals;
pub mod store;
pub mod synth;
