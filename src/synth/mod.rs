//! Synthetic models: a GGUF with the tensor layout of a real architecture and seeded
//! random weights, with a tokenizer so it tokenizes: a real model's copied in, or one
//! generated here ([`vocab`]) where no model is at hand.
//!
//! Random weights make gibberish, but the same gibberish from loupe and llama.cpp proves
//! the forward pass of architectures that have no small real model here; and the speed
//! of a matmul does not depend on the weights' values, so an 8B layout with random
//! weights measures 8B speed and memory.
//!
//! The file is streamed: the header and tensor directory first (every size is known from
//! the shapes and types), then each tensor generated and quantized a group of rows at a
//! time on all cores, so an 8B model is written without holding it in memory.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use loupe_quant::GgmlType;
use rayon::prelude::*;

use crate::quantize::recipe::{llama_order, ModelFacts, Overrides, Recipe};
use crate::quantize::{parse_tensor_type, FileType, QUANTIZATION_VERSION};
use loupe_engine::model::config::Arch;
use loupe_engine::sample::splitmix64;
use loupe_gguf::atomic::{AtomicFile, Kind, Overwrite};
use loupe_gguf::{
    align_up, Array, GgufFile, GgufWriter, Metadata, TensorInfo, Value, ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT,
};

pub mod vocab;

use vocab::{GeneratedVocab, GENERATED_VOCAB_SIZE};

/// The tensor layout of a model: sizes and the architecture switches that add tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub arch: Arch,
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub hidden_dim: usize,
    /// Vocabulary size; `None` takes the donor model's (a generated vocabulary's is then
    /// [`GENERATED_VOCAB_SIZE`]).
    pub vocab: Option<usize>,
    pub n_ctx_train: usize,
    pub rope_base: f32,
    pub norm_eps: f32,
    /// Biases on the Q, K and V projections (qwen2).
    pub qkv_bias: bool,
    /// A separate output projection (else the embedding is tied).
    pub untied_output: bool,
    /// Llama-3.1 style RoPE frequency factors (`rope_freqs.weight`).
    pub rope_freqs: bool,
}

const LLAMA3_8B: Shape = Shape {
    name: "llama3-8b",
    arch: Arch::Llama,
    dim: 4096,
    n_layer: 32,
    n_head: 32,
    n_kv_head: 8,
    head_dim: 128,
    hidden_dim: 14336,
    vocab: Some(128256),
    n_ctx_train: 8192,
    rope_base: 500000.0,
    norm_eps: 1e-5,
    qkv_bias: false,
    untied_output: true,
    rope_freqs: false,
};

const TINY: Shape = Shape {
    name: "tiny",
    arch: Arch::Llama,
    dim: 256,
    n_layer: 2,
    n_head: 4,
    n_kv_head: 2,
    head_dim: 64,
    hidden_dim: 512,
    vocab: None,
    n_ctx_train: 2048,
    rope_base: 10000.0,
    norm_eps: 1e-5,
    qkv_bias: false,
    untied_output: false,
    rope_freqs: false,
};

/// The shapes `loupe synth --shape` knows: real models' layouts, and small ones for tests.
pub const SHAPES: [Shape; 7] = [
    LLAMA3_8B,
    Shape {
        name: "llama3.1-8b",
        n_ctx_train: 131072,
        rope_freqs: true,
        ..LLAMA3_8B
    },
    Shape {
        name: "llama2-7b",
        hidden_dim: 11008,
        n_kv_head: 32,
        vocab: Some(32000),
        n_ctx_train: 4096,
        rope_base: 10000.0,
        ..LLAMA3_8B
    },
    Shape {
        name: "qwen2.5-7b",
        arch: Arch::Qwen2,
        dim: 3584,
        n_layer: 28,
        n_head: 28,
        n_kv_head: 4,
        head_dim: 128,
        hidden_dim: 18944,
        vocab: Some(152064),
        n_ctx_train: 32768,
        rope_base: 1_000_000.0,
        norm_eps: 1e-6,
        qkv_bias: true,
        untied_output: true,
        rope_freqs: false,
    },
    // Small shapes for tests: the donor's vocabulary size, rows that fit every block size.
    TINY,
    Shape {
        name: "tiny-qwen2",
        arch: Arch::Qwen2,
        rope_base: 1_000_000.0,
        norm_eps: 1e-6,
        qkv_bias: true,
        untied_output: false,
        ..TINY
    },
    Shape {
        name: "small",
        dim: 1024,
        n_layer: 8,
        n_head: 16,
        n_kv_head: 4,
        head_dim: 64,
        hidden_dim: 2816,
        untied_output: true,
        ..TINY
    },
];

impl Shape {
    /// The shape called `name` (case-insensitive).
    pub fn named(name: &str) -> Result<Shape> {
        SHAPES
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .cloned()
            .with_context(|| {
                let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
                format!("unknown shape {name:?}; known shapes: {}", names.join(", "))
            })
    }
}

/// The types of the weights: one type for every matrix, or a llama.cpp recipe (Q4_K_M...)
/// that mixes types per tensor as llama-quantize would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightTypes {
    Pure(GgmlType),
    Mix(FileType),
}

impl FromStr for WeightTypes {
    type Err = String;
    /// A recipe name (`Q4_K_M`, `Q4_0`, `F16`) is a recipe; a plain tensor type that is not
    /// one (`Q4_K`, `Q5_K`) is used for every matrix.
    fn from_str(s: &str) -> Result<WeightTypes, String> {
        if let Ok(ft) = s.parse::<FileType>() {
            return Ok(WeightTypes::Mix(ft));
        }
        parse_tensor_type(s).map(WeightTypes::Pure).map_err(|_| {
            format!(
                "unknown type {s:?}: give a recipe ({}) or a tensor type (Q4_K, Q5_K, ...)",
                FileType::names()
            )
        })
    }
}

impl fmt::Display for WeightTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightTypes::Pure(t) => write!(f, "{t} (every matrix)"),
            WeightTypes::Mix(ft) => write!(f, "{ft} (llama.cpp's mix)"),
        }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct SynthReport {
    pub n_tensors: usize,
    pub file_bytes: u64,
    pub n_vocab: usize,
    /// How the donor's vocabulary was fitted to the shape's size, when it had to be.
    pub vocab_note: Option<String>,
    /// Tensors per type, in first-seen order.
    pub types: Vec<(GgmlType, usize)>,
    /// Tensors whose rows did not fit the recipe's type: (name, wanted, used).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
}

/// How a tensor's values are made.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// Uniform in ±scale.
    Matrix(f32),
    /// Near 1 (norm weights).
    Norm,
    /// Small (biases).
    Bias,
    /// Llama-3 RoPE frequency factors: 1 rising to 8.
    RopeFreqs,
}

struct Planned {
    name: String,
    /// Innermost first.
    dims: Vec<u64>,
    fill: Fill,
}

/// Every tensor of `shape`, with a vocabulary of `n_vocab`.
fn plan(shape: &Shape, n_vocab: usize) -> Vec<Planned> {
    let (dim, hd, hid) = (shape.dim, shape.head_dim, shape.hidden_dim);
    let (q_dim, kv_dim) = (shape.n_head * hd, shape.n_kv_head * hd);
    let w_scale = 1.7 / (dim as f32).sqrt();
    let mut v = Vec::new();
    let mut add = |name: String, dims: &[usize], fill: Fill| {
        v.push(Planned {
            name,
            dims: dims.iter().map(|&d| d as u64).collect(),
            fill,
        })
    };
    add(
        "token_embd.weight".into(),
        &[dim, n_vocab],
        Fill::Matrix(1.0),
    );
    add("output_norm.weight".into(), &[dim], Fill::Norm);
    if shape.untied_output {
        add(
            "output.weight".into(),
            &[dim, n_vocab],
            Fill::Matrix(w_scale),
        );
    }
    if shape.rope_freqs {
        add("rope_freqs.weight".into(), &[hd / 2], Fill::RopeFreqs);
    }
    let gemma = matches!(shape.arch, Arch::Gemma2 | Arch::Gemma3);
    for l in 0..shape.n_layer {
        let n = |s: &str| format!("blk.{l}.{s}");
        add(n("attn_norm.weight"), &[dim], Fill::Norm);
        add(n("attn_q.weight"), &[dim, q_dim], Fill::Matrix(w_scale));
        add(n("attn_k.weight"), &[dim, kv_dim], Fill::Matrix(w_scale));
        add(n("attn_v.weight"), &[dim, kv_dim], Fill::Matrix(w_scale));
        if shape.qkv_bias {
            add(n("attn_q.bias"), &[q_dim], Fill::Bias);
            add(n("attn_k.bias"), &[kv_dim], Fill::Bias);
            add(n("attn_v.bias"), &[kv_dim], Fill::Bias);
        }
        add(
            n("attn_output.weight"),
            &[q_dim, dim],
            Fill::Matrix(w_scale),
        );
        if matches!(shape.arch, Arch::Qwen3 | Arch::Gemma3) {
            add(n("attn_q_norm.weight"), &[hd], Fill::Norm);
            add(n("attn_k_norm.weight"), &[hd], Fill::Norm);
        }
        if gemma {
            add(n("post_attention_norm.weight"), &[dim], Fill::Norm);
            add(n("post_ffw_norm.weight"), &[dim], Fill::Norm);
        }
        add(n("ffn_norm.weight"), &[dim], Fill::Norm);
        add(n("ffn_gate.weight"), &[dim, hid], Fill::Matrix(w_scale));
        add(n("ffn_up.weight"), &[dim, hid], Fill::Matrix(w_scale));
        add(
            n("ffn_down.weight"),
            &[hid, dim],
            Fill::Matrix(1.7 / (hid as f32).sqrt()),
        );
    }
    v
}

/// The type of each planned tensor (same order), and the recipe's fallbacks.
#[allow(clippy::type_complexity)]
fn choose_types(
    shape: &Shape,
    weights: WeightTypes,
    planned: &[Planned],
) -> Result<(Vec<GgmlType>, Vec<(String, GgmlType, GgmlType)>)> {
    let infos: Vec<TensorInfo> = planned
        .iter()
        .map(|p| TensorInfo {
            name: p.name.clone(),
            ty: GgmlType::F32,
            dims: p.dims.clone(),
            offset: 0,
            entry_offset: 0,
            part: 0,
        })
        .collect();
    let mut types = vec![GgmlType::F32; planned.len()];
    let mut fallbacks = Vec::new();
    match weights {
        WeightTypes::Pure(ty) => {
            for (p, t) in planned.iter().zip(&mut types) {
                if matches!(p.fill, Fill::Matrix(_)) {
                    ensure!(
                        p.dims[0] % ty.block_elems() as u64 == 0,
                        "{}: rows of {} do not fit {ty}'s blocks of {}",
                        p.name,
                        p.dims[0],
                        ty.block_elems()
                    );
                    *t = ty;
                }
            }
        }
        WeightTypes::Mix(ft) => {
            let facts = ModelFacts {
                arch: shape.arch.name().to_string(),
                n_layer: shape.n_layer,
                n_gqa: (shape.n_head / shape.n_kv_head.max(1)).max(1),
                n_expert: 0,
                is_70b: false,
            };
            let mut recipe = Recipe::new(
                ft,
                &facts,
                Overrides::default(),
                infos.iter().map(|t| t.name.as_str()),
            );
            for t in llama_order(&infos) {
                let i = planned
                    .iter()
                    .position(|p| p.name == t.name)
                    .expect("planned");
                types[i] = recipe.tensor_type(t).map_err(anyhow::Error::msg)?;
            }
            fallbacks = recipe.fallbacks;
        }
    }
    for (p, &t) in planned.iter().zip(&types) {
        ensure!(
            loupe_quant::can_quantize(t),
            "{}: loupe cannot write {t} weights yet",
            p.name
        );
    }
    Ok((types, fallbacks))
}

/// Metadata pairs, in order.
type Pairs = Vec<(String, Value)>;

/// Where a synthetic model's tokenizer comes from.
#[derive(Clone, Copy, Debug)]
pub enum VocabSource<'a> {
    /// Copied from this model, fitted to the shape's vocabulary size.
    Donor(&'a GgufFile),
    /// Made here ([`GeneratedVocab`]): a byte-level BPE vocabulary of the shape's size, or
    /// of [`GENERATED_VOCAB_SIZE`] for shapes that take the donor's.
    Generated,
}

/// The `tokenizer.*` pairs from `source`, the vocabulary size, and how a donor's
/// vocabulary was fitted to the shape when it had to be.
fn tokenizer_metadata(
    source: VocabSource,
    n_vocab: Option<usize>,
) -> Result<(Pairs, usize, Option<String>)> {
    match source {
        VocabSource::Donor(file) => donor_tokenizer_metadata(file.metadata(), n_vocab),
        VocabSource::Generated => {
            let n = n_vocab.unwrap_or(GENERATED_VOCAB_SIZE);
            Ok((GeneratedVocab::new(n)?.metadata(), n, None))
        }
    }
}

/// The donor's `tokenizer.*` keys, fitted to `n_vocab` tokens when that is set and differs:
/// padded with unused `[PAD<id>]` tokens (as llama.cpp's converter pads qwen2's vocabulary),
/// or truncated, dropping the merges and special-token ids that point past the end.
fn donor_tokenizer_metadata(
    src: &Metadata,
    n_vocab: Option<usize>,
) -> Result<(Pairs, usize, Option<String>)> {
    let tokens = src
        .get_str_array("tokenizer.ggml.tokens")
        .context("the vocabulary donor has no tokenizer.ggml.tokens")?;
    let have = tokens.len();
    let want = n_vocab.unwrap_or(have);
    let keys = src.iter().filter(|(k, _)| k.starts_with("tokenizer."));
    if want == have {
        return Ok((
            keys.map(|(k, v)| (k.to_string(), v.clone())).collect(),
            have,
            None,
        ));
    }
    let kept: HashSet<&str> = tokens.iter().take(want).map(String::as_str).collect();
    let (mut n_merges_dropped, mut dropped_ids) = (0usize, Vec::new());
    let mut out = Vec::new();
    for (k, v) in keys {
        let v = match (k, v) {
            ("tokenizer.ggml.tokens", _) => {
                let mut t: Vec<String> = tokens.iter().take(want).cloned().collect();
                t.extend((have..want).map(|i| format!("[PAD{i}]")));
                Value::Array(Array::String(t))
            }
            ("tokenizer.ggml.token_type", Value::Array(Array::I32(a))) => {
                let mut t: Vec<i32> = a.iter().take(want).copied().collect();
                t.resize(want, 5); // unused
                Value::Array(Array::I32(t))
            }
            ("tokenizer.ggml.scores", Value::Array(Array::F32(a))) => {
                let mut t: Vec<f32> = a.iter().take(want).copied().collect();
                t.resize(want, 0.0);
                Value::Array(Array::F32(t))
            }
            ("tokenizer.ggml.merges", Value::Array(Array::String(a))) if want < have => {
                let keep = |m: &String| {
                    m.split_once(' ').is_some_and(|(l, r)| {
                        kept.contains(l) && kept.contains(r) && kept.contains(&*format!("{l}{r}"))
                    })
                };
                let m: Vec<String> = a.iter().filter(|m| keep(m)).cloned().collect();
                n_merges_dropped = a.len() - m.len();
                Value::Array(Array::String(m))
            }
            (k, v) if k.ends_with("_token_id") => match v.as_i128() {
                Some(id) if id >= want as i128 => {
                    dropped_ids.push(format!("{k}={id}"));
                    continue;
                }
                _ => v.clone(),
            },
            ("tokenizer.ggml.token_type" | "tokenizer.ggml.scores", v) => {
                bail!("{k} is a {}, expected an array", v.describe())
            }
            (_, v) => v.clone(),
        };
        out.push((k.to_string(), v));
    }
    let note = if want > have {
        format!(
            "the donor's vocabulary has {have} tokens, the shape {want}: padded with {} unused \
             [PAD<id>] tokens",
            want - have
        )
    } else {
        let ids = if dropped_ids.is_empty() {
            String::new()
        } else {
            format!(" and special ids past the end ({})", dropped_ids.join(", "))
        };
        format!(
            "the donor's vocabulary has {have} tokens, the shape {want}: truncated to the \
             first {want}, dropping {n_merges_dropped} merges{ids}"
        )
    };
    Ok((out, want, Some(note)))
}

fn metadata(shape: &Shape, weights: WeightTypes, tokenizer: Pairs, n_vocab: usize) -> Metadata {
    let arch = shape.arch.name();
    let mut md = Metadata::default();
    let k = |s: &str| format!("{arch}.{s}");
    let u32v = |x: usize| Value::U32(x as u32);
    md.push("general.architecture", Value::String(arch.into()));
    md.push(
        "general.name",
        Value::String(format!("synthetic {} ({arch})", shape.name)),
    );
    if let WeightTypes::Mix(ft) = weights {
        md.push("general.file_type", Value::U32(ft.id()));
    }
    md.push(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    md.push(k("vocab_size"), u32v(n_vocab));
    md.push(k("context_length"), u32v(shape.n_ctx_train));
    md.push(k("embedding_length"), u32v(shape.dim));
    md.push(k("block_count"), u32v(shape.n_layer));
    md.push(k("feed_forward_length"), u32v(shape.hidden_dim));
    md.push(k("attention.head_count"), u32v(shape.n_head));
    md.push(k("attention.head_count_kv"), u32v(shape.n_kv_head));
    md.push(k("attention.key_length"), u32v(shape.head_dim));
    md.push(k("attention.value_length"), u32v(shape.head_dim));
    md.push(
        k("attention.layer_norm_rms_epsilon"),
        Value::F32(shape.norm_eps),
    );
    md.push(k("rope.freq_base"), Value::F32(shape.rope_base));
    md.push(k("rope.dimension_count"), u32v(shape.head_dim));
    if shape.arch == Arch::Gemma2 {
        md.push(k("attention.sliding_window"), Value::U32(16));
        md.push(k("attn_logit_softcapping"), Value::F32(50.0));
        md.push(k("final_logit_softcapping"), Value::F32(30.0));
    }
    for (key, v) in tokenizer {
        md.push(key, v);
    }
    md
}

/// splitmix64: cheap, seedable per row, so rows can be made on any thread in any order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Two values uniform in [-1, 1) from one draw.
    fn sym2(&mut self) -> (f32, f32) {
        let z = self.next();
        let f = |b: u64| (b & 0xff_ffff) as f32 / (1u32 << 23) as f32 - 1.0;
        (f(z >> 40), f(z >> 8))
    }
}

/// Values of row `row` of tensor `index`.
fn fill_row(fill: Fill, seed: u64, index: usize, row: usize, xs: &mut [f32]) {
    let mut rng = Rng(seed ^ ((index as u64) << 40) ^ (row as u64).wrapping_mul(0x2545_F491));
    rng.next();
    let n = xs.len();
    match fill {
        Fill::RopeFreqs => {
            for (i, x) in xs.iter_mut().enumerate() {
                *x = 1.0 + (i as f32 / n as f32) * 7.0;
            }
            return;
        }
        Fill::Matrix(_) | Fill::Norm | Fill::Bias => {}
    }
    for pair in xs.chunks_mut(2) {
        let (a, b) = rng.sym2();
        pair[0] = a;
        if let Some(x) = pair.get_mut(1) {
            *x = b;
        }
    }
    match fill {
        Fill::Matrix(scale) => xs.iter_mut().for_each(|x| *x *= scale),
        Fill::Norm => xs.iter_mut().for_each(|x| *x = 1.0 + 0.1 * *x),
        Fill::Bias => xs.iter_mut().for_each(|x| *x *= 0.1),
        Fill::RopeFreqs => {}
    }
}

/// Write `shape` with `weights` to `out` (atomically: a temporary file, synced, renamed),
/// with the tokenizer `vocab` gives, of the shape's vocabulary size. An existing `out` is
/// replaced only when it is a GGUF model.
pub fn write_shape(
    shape: &Shape,
    weights: WeightTypes,
    seed: u64,
    vocab: VocabSource,
    out: &Path,
) -> Result<SynthReport> {
    write_shape_with(shape, weights, seed, vocab, out, Overwrite::SameKind)
}

/// [`write_shape`], saying which existing file `out` may replace (`--force`: any regular
/// file).
pub fn write_shape_with(
    shape: &Shape,
    weights: WeightTypes,
    seed: u64,
    vocab: VocabSource,
    out: &Path,
    overwrite: Overwrite,
) -> Result<SynthReport> {
    ensure!(
        shape.n_layer > 0 && shape.n_head > 0 && shape.n_kv_head > 0,
        "a shape needs layers and heads"
    );
    ensure!(
        shape.n_head.is_multiple_of(shape.n_kv_head),
        "{} query heads do not share {} KV heads evenly",
        shape.n_head,
        shape.n_kv_head
    );
    let (tok_md, n_vocab, vocab_note) = tokenizer_metadata(vocab, shape.vocab)?;
    let planned = plan(shape, n_vocab);
    let (types, fallbacks) = choose_types(shape, weights, &planned)?;

    // Header and directory. The metadata is serialized by the GGUF writer with an alignment
    // key of 1 as its last pair (so nothing is padded and its length is exact), then the key
    // is set to the real alignment, the tensor count filled in and the directory appended.
    let align = DEFAULT_ALIGNMENT;
    let mut md = metadata(shape, weights, tok_md, n_vocab);
    md.push(ALIGNMENT_KEY, Value::U32(1));
    let mut header = GgufWriter::new(md).to_bytes()?;
    let n = header.len();
    ensure!(
        header[n - 4..] == 1u32.to_le_bytes(),
        "unexpected GGUF header layout"
    );
    header[n - 4..].copy_from_slice(&(align as u32).to_le_bytes());
    header[8..16].copy_from_slice(&(planned.len() as u64).to_le_bytes());
    let mut sizes = Vec::with_capacity(planned.len());
    let mut offset = 0u64;
    for (p, &ty) in planned.iter().zip(&types) {
        let n_el: u64 = p.dims.iter().product();
        let bytes = ty.row_bytes(n_el).context("tensor size")?;
        header.extend_from_slice(&(p.name.len() as u64).to_le_bytes());
        header.extend_from_slice(p.name.as_bytes());
        header.extend_from_slice(&(p.dims.len() as u32).to_le_bytes());
        for d in &p.dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&ty.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        sizes.push(bytes);
        offset = align_up(offset + bytes, align).context("data offsets overflow")?;
    }
    let data_start = align_up(header.len() as u64, align).context("header size")?;
    header.resize(data_start as usize, 0);

    let tmp = AtomicFile::create(out, "synth", Kind::Gguf, overwrite)?;
    let io_err = || format!("cannot write {}", tmp.temp_path().display());
    {
        let mut w = tmp.writer();
        w.write_all(&header).with_context(io_err)?;
        let mut pos = data_start;
        for (i, ((p, &ty), &bytes)) in planned.iter().zip(&types).zip(&sizes).enumerate() {
            let cols = p.dims[0] as usize;
            let rows = (p.dims.iter().product::<u64>() / p.dims[0]) as usize;
            let row_bytes = ty.row_bytes(cols as u64).context("row size")? as usize;
            // A group of rows at a time: about 32 MiB of output, made on all cores.
            let group = ((32usize << 20) / row_bytes).clamp(1, rows);
            let mut buf = vec![0u8; group * row_bytes];
            for start in (0..rows).step_by(group) {
                let n_rows = group.min(rows - start);
                let buf = &mut buf[..n_rows * row_bytes];
                buf.par_chunks_mut(row_bytes)
                    .enumerate()
                    .try_for_each_init(
                        || vec![0f32; cols],
                        |xs, (r, q)| {
                            fill_row(p.fill, seed, i, start + r, xs);
                            loupe_quant::quantize_row(ty, xs, q)
                        },
                    )
                    .with_context(|| format!("cannot quantize {} to {ty}", p.name))?;
                w.write_all(buf).with_context(io_err)?;
            }
            pos += bytes;
            let padded = align_up(pos, align).context("data size")?;
            w.write_all(&vec![0u8; (padded - pos) as usize])
                .with_context(io_err)?;
            pos = padded;
        }
        w.flush().with_context(io_err)?;
    }
    let file_bytes = tmp.file().metadata().with_context(io_err)?.len();
    // Read it back before it takes the destination's name: the directory must parse and
    // every tensor fit the file.
    let check = GgufFile::open(tmp.temp_path()).context("the written file does not read back")?;
    ensure!(
        check.tensors().len() == planned.len(),
        "the written file has {} tensors, expected {}",
        check.tensors().len(),
        planned.len()
    );
    drop(check);
    tmp.commit()?;

    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for &t in &types {
        match counts.iter_mut().find(|(c, _)| *c == t) {
            Some((_, n)) => *n += 1,
            None => counts.push((t, 1)),
        }
    }
    Ok(SynthReport {
        n_tensors: planned.len(),
        file_bytes,
        n_vocab,
        vocab_note,
        types: counts,
        fallbacks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_consistent() {
        for s in &SHAPES {
            assert_eq!(s.n_head % s.n_kv_head, 0, "{}", s.name);
            assert_eq!(s.dim % 256, 0, "{}", s.name);
            assert_eq!(s.hidden_dim % 256, 0, "{}", s.name);
        }
        let q = Shape::named("QWEN2.5-7B").unwrap();
        assert_eq!((q.dim, q.n_layer, q.vocab), (3584, 28, Some(152064)));
        assert!(Shape::named("gpt-5").is_err());
    }

    #[test]
    fn weight_types_parse() {
        use GgmlType as G;
        assert_eq!(
            "q4_k_m".parse::<WeightTypes>(),
            Ok(WeightTypes::Mix(FileType::Q4_K_M))
        );
        assert_eq!(
            "Q4_K".parse::<WeightTypes>(),
            Ok(WeightTypes::Pure(G::Q4_K))
        );
        assert!("Q9_X".parse::<WeightTypes>().is_err());
    }
}
