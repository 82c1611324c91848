//! A one-screen description of a model file: what `loupe inspect` shows.

use std::collections::BTreeMap;

use loupe_quant::GgmlType;

use crate::model::ftype::file_type_name;
use loupe_gguf::{Array, GgufFile, Metadata, Value};

/// What a person wants to know about a GGUF model at a glance. Fields the file does not
/// state are `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSummary {
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub gguf_version: u32,
    pub file_size: u64,
    pub tensor_count: usize,
    pub parameter_count: u64,
    /// `general.file_type`, with llama.cpp's name for it when known.
    pub file_type: Option<(u32, Option<&'static str>)>,
    /// Bits of tensor data per parameter, over all tensors.
    pub bits_per_weight: f64,
    /// Tensor data bytes and tensor count by type, largest first.
    pub bytes_by_type: Vec<TypeShare>,
    pub context_length: Option<u64>,
    pub block_count: Option<u64>,
    pub head_count: Option<HeadCount>,
    pub head_count_kv: Option<HeadCount>,
    pub embedding_length: Option<u64>,
    pub feed_forward_length: Option<HeadCount>,
    pub vocab_size: Option<usize>,
    /// `tokenizer.ggml.model` ("llama" is SentencePiece, "gpt2" byte-level BPE).
    pub tokenizer_model: Option<String>,
    pub tokenizer_pre: Option<String>,
    pub has_chat_template: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypeShare {
    pub ty: GgmlType,
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
}

/// A per-model count that some architectures give per layer (an array) instead.
#[derive(Clone, Debug, PartialEq)]
pub enum HeadCount {
    Same(u64),
    PerLayer(Vec<u64>),
}

impl std::fmt::Display for HeadCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadCount::Same(n) => write!(f, "{n}"),
            HeadCount::PerLayer(v) => {
                let (min, max) = (v.iter().min(), v.iter().max());
                match (min, max) {
                    (Some(a), Some(b)) if a == b => write!(f, "{a} (every layer)"),
                    (Some(a), Some(b)) => write!(f, "{a}..{b} (per layer)"),
                    _ => write!(f, "none"),
                }
            }
        }
    }
}

impl ModelSummary {
    pub fn of(file: &GgufFile) -> ModelSummary {
        let md = file.metadata();
        let arch = md.get_opt_str("general.architecture").ok().flatten();
        let arch_key = |k: &str| format!("{}.{k}", arch.unwrap_or("unknown"));
        let uint = |k: &str| md.get_opt_u64(k).ok().flatten();

        let mut by_type: BTreeMap<GgmlType, TypeShare> = BTreeMap::new();
        for t in file.tensors() {
            let e = by_type.entry(t.ty).or_insert(TypeShare {
                ty: t.ty,
                tensors: 0,
                elements: 0,
                bytes: 0,
            });
            e.tensors += 1;
            e.elements += t.n_elements();
            e.bytes += t.n_bytes();
        }
        let mut bytes_by_type: Vec<TypeShare> = by_type.into_values().collect();
        bytes_by_type.sort_by_key(|s| std::cmp::Reverse(s.bytes));
        let parameter_count: u64 = bytes_by_type.iter().map(|s| s.elements).sum();
        let data_bytes: u64 = bytes_by_type.iter().map(|s| s.bytes).sum();

        ModelSummary {
            architecture: arch.map(str::to_string),
            name: md
                .get_opt_str("general.name")
                .ok()
                .flatten()
                .map(str::to_string),
            gguf_version: file.version(),
            file_size: file.file_size(),
            tensor_count: file.tensors().len(),
            parameter_count,
            file_type: uint("general.file_type")
                .and_then(|v| u32::try_from(v).ok())
                .map(|v| (v, file_type_name(v))),
            bits_per_weight: if parameter_count == 0 {
                0.0
            } else {
                data_bytes as f64 * 8.0 / parameter_count as f64
            },
            bytes_by_type,
            context_length: uint(&arch_key("context_length")),
            block_count: uint(&arch_key("block_count")),
            head_count: head_count(md, &arch_key("attention.head_count")),
            head_count_kv: head_count(md, &arch_key("attention.head_count_kv")),
            embedding_length: uint(&arch_key("embedding_length")),
            feed_forward_length: head_count(md, &arch_key("feed_forward_length")),
            vocab_size: md
                .get_opt_array("tokenizer.ggml.tokens")
                .ok()
                .flatten()
                .map(Array::len),
            tokenizer_model: md
                .get_opt_str("tokenizer.ggml.model")
                .ok()
                .flatten()
                .map(str::to_string),
            tokenizer_pre: md
                .get_opt_str("tokenizer.ggml.pre")
                .ok()
                .flatten()
                .map(str::to_string),
            has_chat_template: matches!(md.get("tokenizer.chat_template"), Some(Value::String(_))),
        }
    }

    /// "SentencePiece (llama)", "byte-level BPE (gpt2, pre qwen2)".
    pub fn tokenizer_description(&self) -> Option<String> {
        let model = self.tokenizer_model.as_deref()?;
        let kind = match model {
            "llama" => "SentencePiece",
            "gpt2" => "byte-level BPE",
            "bert" => "WordPiece",
            "t5" => "Unigram",
            "rwkv" => "RWKV",
            _ => "unknown kind",
        };
        Some(match &self.tokenizer_pre {
            Some(pre) => format!("{kind} ({model}, pre-tokenizer {pre})"),
            None => format!("{kind} ({model})"),
        })
    }
}

fn head_count(md: &Metadata, key: &str) -> Option<HeadCount> {
    match md.get(key)? {
        Value::Array(a) => {
            let v: Option<Vec<u64>> = match a {
                Array::U32(v) => Some(v.iter().map(|&x| x.into()).collect()),
                Array::I32(v) => v.iter().map(|&x| u64::try_from(x).ok()).collect(),
                Array::U64(v) => Some(v.clone()),
                _ => None,
            };
            v.map(HeadCount::PerLayer)
        }
        v => v
            .as_i128()
            .and_then(|n| u64::try_from(n).ok())
            .map(HeadCount::Same),
    }
}
