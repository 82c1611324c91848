//! Synthetic models: a GGUF with the tensor layout of a real architecture and seeded
//! random weights, with the tokenizer of a real model copied in so it tokenizes.
//!
//! Random weights make gibberish, but the same gibberish from loupe and llama.cpp proves
//! the forward pass of architectures that have no small real model here; and the speed
//! of a matmul does not depend on the weights' values.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use loupe_quant::GgmlType;

use crate::gguf::{GgufFile, GgufWriter, Metadata, TensorToWrite, Value};
use crate::model::config::Arch;

/// The shape of a synthetic model.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub arch: Arch,
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub hidden_dim: usize,
    pub n_ctx_train: usize,
    /// Type of the 2-D weight matrices (norms stay F32).
    pub weight_type: GgmlType,
    /// Write a separate output projection (else the embedding is tied).
    pub untied_output: bool,
    /// Llama-3 style RoPE frequency factors (`rope_freqs.weight`).
    pub rope_freqs: bool,
    pub seed: u64,
}

/// splitmix64, for reproducible weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Write the synthetic model to `out`, with the tokenizer (`tokenizer.*` keys) of `vocab_from`.
pub fn write_synthetic(spec: &SynthSpec, vocab_from: &GgufFile, out: &Path) -> Result<()> {
    if !loupe_quant::can_quantize(spec.weight_type) {
        bail!("loupe cannot write {} weights yet", spec.weight_type);
    }
    let src = vocab_from.metadata();
    let vocab = src.get_array("tokenizer.ggml.tokens")?.len();
    let arch = spec.arch.name();
    let mut md = Metadata::default();
    let k = |s: &str| format!("{arch}.{s}");
    md.push("general.architecture", Value::String(arch.into()));
    md.push("general.name", Value::String(format!("synthetic {arch}")));
    md.push(k("context_length"), Value::U32(spec.n_ctx_train as u32));
    md.push(k("embedding_length"), Value::U32(spec.dim as u32));
    md.push(k("block_count"), Value::U32(spec.n_layer as u32));
    md.push(k("feed_forward_length"), Value::U32(spec.hidden_dim as u32));
    md.push(k("attention.head_count"), Value::U32(spec.n_head as u32));
    md.push(
        k("attention.head_count_kv"),
        Value::U32(spec.n_kv_head as u32),
    );
    md.push(k("attention.key_length"), Value::U32(spec.head_dim as u32));
    md.push(
        k("attention.value_length"),
        Value::U32(spec.head_dim as u32),
    );
    md.push(k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    md.push(k("rope.freq_base"), Value::F32(10000.0));
    md.push(k("rope.dimension_count"), Value::U32(spec.head_dim as u32));
    if spec.arch == Arch::Gemma2 {
        md.push(k("attention.sliding_window"), Value::U32(16));
        md.push(k("attn_logit_softcapping"), Value::F32(50.0));
        md.push(k("final_logit_softcapping"), Value::F32(30.0));
    }
    for (key, v) in src.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        md.push(key, v.clone());
    }

    let mut rng = Rng(spec.seed);
    let mut tensors: Vec<TensorToWrite<'static>> = Vec::new();
    let matrix = |name: String,
                  cols: usize,
                  rows: usize,
                  scale: f32,
                  rng: &mut Rng|
     -> Result<TensorToWrite<'static>> {
        let vals: Vec<f32> = (0..cols * rows).map(|_| rng.sym() * scale).collect();
        let row_bytes = spec
            .weight_type
            .row_bytes(cols as u64)
            .context("row size")? as usize;
        let mut data = vec![0u8; row_bytes * rows];
        for (x, q) in vals
            .chunks_exact(cols)
            .zip(data.chunks_exact_mut(row_bytes))
        {
            loupe_quant::quantize_row(spec.weight_type, x, q)?;
        }
        Ok(TensorToWrite {
            name,
            ty: spec.weight_type,
            dims: vec![cols as u64, rows as u64],
            data: Cow::Owned(data),
        })
    };
    let norm = |name: String, n: usize, rng: &mut Rng| TensorToWrite {
        name,
        ty: GgmlType::F32,
        dims: vec![n as u64],
        data: Cow::Owned(
            (0..n)
                .flat_map(|_| (1.0 + 0.1 * rng.sym()).to_le_bytes())
                .collect(),
        ),
    };

    let (dim, hd, hid) = (spec.dim, spec.head_dim, spec.hidden_dim);
    let w_scale = 1.0 / (dim as f32).sqrt() * 1.7;
    tensors.push(matrix(
        "token_embd.weight".into(),
        dim,
        vocab,
        1.0,
        &mut rng,
    )?);
    tensors.push(norm("output_norm.weight".into(), dim, &mut rng));
    if spec.untied_output {
        tensors.push(matrix(
            "output.weight".into(),
            dim,
            vocab,
            w_scale,
            &mut rng,
        )?);
    }
    if spec.rope_freqs {
        let ff: Vec<u8> = (0..hd / 2)
            .flat_map(|i| (1.0 + (i as f32 / (hd / 2) as f32) * 7.0).to_le_bytes())
            .collect();
        tensors.push(TensorToWrite {
            name: "rope_freqs.weight".into(),
            ty: GgmlType::F32,
            dims: vec![(hd / 2) as u64],
            data: Cow::Owned(ff),
        });
    }
    for l in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{l}.{s}");
        tensors.push(norm(n("attn_norm.weight"), dim, &mut rng));
        tensors.push(matrix(
            n("attn_q.weight"),
            dim,
            spec.n_head * hd,
            w_scale,
            &mut rng,
        )?);
        tensors.push(matrix(
            n("attn_k.weight"),
            dim,
            spec.n_kv_head * hd,
            w_scale,
            &mut rng,
        )?);
        tensors.push(matrix(
            n("attn_v.weight"),
            dim,
            spec.n_kv_head * hd,
            w_scale,
            &mut rng,
        )?);
        tensors.push(matrix(
            n("attn_output.weight"),
            spec.n_head * hd,
            dim,
            w_scale,
            &mut rng,
        )?);
        if matches!(spec.arch, Arch::Qwen3 | Arch::Gemma3) {
            tensors.push(norm(n("attn_q_norm.weight"), hd, &mut rng));
            tensors.push(norm(n("attn_k_norm.weight"), hd, &mut rng));
        }
        if matches!(spec.arch, Arch::Gemma2 | Arch::Gemma3) {
            tensors.push(norm(n("post_attention_norm.weight"), dim, &mut rng));
            tensors.push(norm(n("post_ffw_norm.weight"), dim, &mut rng));
        }
        tensors.push(norm(n("ffn_norm.weight"), dim, &mut rng));
        tensors.push(matrix(n("ffn_gate.weight"), dim, hid, w_scale, &mut rng)?);
        tensors.push(matrix(n("ffn_up.weight"), dim, hid, w_scale, &mut rng)?);
        tensors.push(matrix(
            n("ffn_down.weight"),
            hid,
            dim,
            1.0 / (hid as f32).sqrt() * 1.7,
            &mut rng,
        )?);
    }
    let mut w = GgufWriter::new(md);
    for t in tensors {
        w.add_tensor(t);
    }
    w.write(out)?;
    Ok(())
}
