//! The forward pass: token ids in, logits out, one parameterized llama-family block.
//!
//! Reads in the order the data flows: embed → for each layer (attention norm → Q/K/V →
//! QK-norm → RoPE → cache → attention → output projection → residual → FFN norm →
//! gated FFN → residual) → final norm → output projection. A batch of tokens goes through
//! together (prompt processing); generation is a batch of one. All run buffers are sized
//! once, for the largest batch, in [`Scratch::new`]. The weight-bearing steps (matmuls,
//! attention with the cache) go through the backend each layer is placed on
//! ([`super::backend`]).

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::backend::{AttentionInput, Backend, LayersJob, Placement};
use super::config::{Activation, Config};
use super::cpu::CpuBackend;
use super::hadamard::rotate_blocks;
use super::kv_cache::KvCache;
use super::memory::product;
use super::ops::{gelu, rmsnorm, rope_apply, rope_cache, silu, softcap};
use super::Model;

/// Run buffers for a batch of up to `max_batch` tokens. Shapes per token row.
pub struct Scratch {
    pub max_batch: usize,
    x: Vec<f32>,       // (B, dim) residual stream
    xb: Vec<f32>,      // (B, dim) normed input of a sublayer
    xb2: Vec<f32>,     // (B, dim) output of a sublayer
    q: Vec<f32>,       // (B, n_head * head_dim)
    k: Vec<f32>,       // (B, kv_dim)
    v: Vec<f32>,       // (B, kv_dim_v)
    att_out: Vec<f32>, // (B, n_head * head_dim_v)
    hb: Vec<f32>,      // (B, hidden) gate, then activation
    hb2: Vec<f32>,     // (B, hidden) up
    rope: Vec<f32>,    // (B, n_rot) cos/sin per pair, per token
    logits: Vec<f32>,  // (rows wanted, vocab)
    /// The devices layers run on; index 0 is the CPU.
    backends: Vec<Box<dyn Backend>>,
    /// Which of `backends` runs each layer and the output projection.
    placement: Placement,
    /// Sees intermediate activations by llama.cpp's names ("attn_norm", "Qcur", "kqv_out",
    /// "ffn_inp", "l_out", …), layer and values, to find where two runs drift apart.
    pub capture: Option<Capture>,
}

/// A callback receiving (name, layer, values) of intermediate activations.
pub type Capture = Box<dyn FnMut(&str, usize, &[f32]) + Send>;

fn captured(cap: &mut Option<Capture>, name: &str, layer: usize, x: &[f32]) {
    if let Some(f) = cap {
        f(name, layer, x);
    }
}

impl Scratch {
    /// Bytes [`Scratch::new`] allocates with these arguments, the CPU backend's buffers
    /// and one row of logits included; `None` past 64 bits.
    pub fn bytes(c: &Config, n_ctx: usize, max_batch: usize, n_threads: usize) -> Option<u64> {
        let row = [
            3 * c.dim,
            c.q_dim(),
            c.kv_dim(),
            c.kv_dim_v(),
            c.n_head * c.head_dim_v,
            2 * c.hidden_dim,
            c.n_rot,
        ];
        product(&[max_batch, row.iter().sum(), 4])?
            .checked_add(product(&[c.vocab_size, 4])?)?
            .checked_add(CpuBackend::bytes(c, n_ctx, max_batch, n_threads)?)
    }

    pub fn new(c: &Config, n_ctx: usize, max_batch: usize, n_threads: usize) -> Scratch {
        let b = max_batch;
        Scratch {
            max_batch,
            x: vec![0.0; b * c.dim],
            xb: vec![0.0; b * c.dim],
            xb2: vec![0.0; b * c.dim],
            q: vec![0.0; b * c.q_dim()],
            k: vec![0.0; b * c.kv_dim()],
            v: vec![0.0; b * c.kv_dim_v()],
            att_out: vec![0.0; b * c.n_head * c.head_dim_v],
            hb: vec![0.0; b * c.hidden_dim],
            hb2: vec![0.0; b * c.hidden_dim],
            rope: vec![0.0; b * c.n_rot],
            logits: Vec::new(),
            capture: None,
            backends: vec![Box::new(CpuBackend::new(c, n_ctx, max_batch, n_threads))],
            placement: Placement::single(c.n_layer),
        }
    }

    /// Adds a backend (it becomes index `backends.len()`) and places layers by `placement`.
    pub fn add_backend(&mut self, backend: Box<dyn Backend>, placement: Placement) {
        self.backends.push(backend);
        self.placement = placement;
    }
}

impl Scratch {
    /// The first `n` values of the last logits computed.
    pub fn logits(&self, n: usize) -> &[f32] {
        &self.logits[..n]
    }
}

/// Evaluate `tokens` at positions `pos..pos + tokens.len()` (the cache must hold
/// `0..pos`), store their keys and values, and return logits for the rows
/// `logits_from..tokens.len()`: (rows, vocab).
pub fn forward<'s>(
    model: &Model,
    cache: &mut KvCache,
    s: &'s mut Scratch,
    tokens: &[u32],
    pos: usize,
    logits_from: usize,
) -> Result<&'s [f32]> {
    let (c, w) = (&model.config, &model.weights);
    let n = tokens.len();
    ensure!(
        n > 0 && n <= s.max_batch,
        "batch of {n} tokens (most {})",
        s.max_batch
    );
    ensure!(
        pos + n <= cache.n_ctx,
        "context full: {} + {n} tokens > {}",
        pos,
        cache.n_ctx
    );
    ensure!(
        logits_from <= n,
        "logits_from {logits_from} past the batch of {n}"
    );
    let dim = c.dim;

    // ---- embed: one row of the token embedding per token (scaled for gemma) ----
    let embd = model.matrix(&w.token_embd);
    let row_bytes = embd.row_bytes();
    for (t, &tok) in tokens.iter().enumerate() {
        ensure!(
            (tok as usize) < c.vocab_size,
            "token id {tok} is outside the vocabulary of {}",
            c.vocab_size
        );
        let src = &embd.data[tok as usize * row_bytes..][..row_bytes];
        let x = &mut s.x[t * dim..][..dim];
        loupe_quant::dequantize_row(embd.ty, src, x)?;
        if let Some(scale) = c.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
    }

    let rows = n - logits_from;
    let need = rows * c.vocab_size;
    if s.logits.len() < need {
        // Grows once to the largest request (a perplexity chunk), then stays.
        s.logits.resize(need, 0.0);
    }
    let mut output_done = false;
    if s.capture.is_some() && s.backends.iter().any(|b| b.runs_layers(cache)) {
        // The device's layers run step by step on the CPU's cache this time: its copy
        // misses these positions.
        cache.mark_edited();
    }
    let mut l = 0;
    while l < c.n_layer {
        let on = s.placement.layers[l];
        if s.capture.is_none() && s.backends[on].runs_layers(cache) {
            // A run of layers the device takes whole (and the output, when it is there
            // too): the residual stream stays on it in between.
            let end = (l..c.n_layer)
                .find(|&j| s.placement.layers[j] != on)
                .unwrap_or(c.n_layer);
            let output = end == c.n_layer && s.placement.output == on && rows > 0;
            let job = LayersJob {
                model,
                layers: l..end,
                pos,
                n,
                x: &mut s.x[..n * dim],
                logits: output.then(|| (logits_from, &mut s.logits[..need])),
            };
            s.backends[on].layers(job, cache)?;
            output_done = output;
            l = end;
            continue;
        }
        let lw = &w.layers[l];
        // ---- attention: norm, Q/K/V projections (+ biases) ----
        s.xb[..n * dim].copy_from_slice(&s.x[..n * dim]);
        each_row(&mut s.xb[..n * dim], dim, |row| {
            rmsnorm(row, &lw.attn_norm, c.norm_eps)
        });
        captured(&mut s.capture, "attn_norm", l, &s.xb[..n * dim]);
        let qkv = [&lw.wq, &lw.wk, &lw.wv].map(|t| model.matrix(t));
        let outs = [&mut s.q[..], &mut s.k[..], &mut s.v[..]];
        s.backends[on].qkv(qkv, &s.xb[..n * dim], n, outs)?;
        add_bias(&mut s.q[..n * c.q_dim()], lw.bq.as_deref());
        add_bias(&mut s.k[..n * c.kv_dim()], lw.bk.as_deref());
        add_bias(&mut s.v[..n * c.kv_dim_v()], lw.bv.as_deref());

        captured(&mut s.capture, "Vcur", l, &s.v[..n * c.kv_dim_v()]);
        // ---- per-head QK-norm (qwen3, gemma3), then RoPE ----
        if let Some(qn) = &lw.q_norm {
            each_row(&mut s.q[..n * c.q_dim()], c.head_dim, |h| {
                rmsnorm(h, qn, c.norm_eps)
            });
        }
        if let Some(kn) = &lw.k_norm {
            each_row(&mut s.k[..n * c.kv_dim()], c.head_dim, |h| {
                rmsnorm(h, kn, c.norm_eps)
            });
        }
        let (base, fscale) = if c.is_swa[l] {
            (c.rope_base_local, c.rope_freq_scale_local)
        } else {
            (c.rope_base, c.rope_freq_scale)
        };
        let rope_token =
            |t: usize, (cache_t, (q_t, k_t)): (&mut [f32], (&mut [f32], &mut [f32]))| {
                rope_cache(
                    pos + t,
                    c.n_rot,
                    base,
                    fscale,
                    w.rope_freqs.as_deref(),
                    cache_t,
                );
                for h in q_t.chunks_exact_mut(c.head_dim) {
                    rope_apply(h, c.n_rot, c.rope_style, cache_t);
                }
                for h in k_t.chunks_exact_mut(c.head_dim) {
                    rope_apply(h, c.n_rot, c.rope_style, cache_t);
                }
            };
        let (rope, q, k) = (
            &mut s.rope[..n * c.n_rot],
            &mut s.q[..n * c.q_dim()],
            &mut s.k[..n * c.kv_dim()],
        );
        if n == 1 {
            rope_token(0, (rope, (q, k)));
        } else {
            rope.par_chunks_exact_mut(c.n_rot)
                .zip(
                    q.par_chunks_exact_mut(c.q_dim())
                        .zip(k.par_chunks_exact_mut(c.kv_dim())),
                )
                .enumerate()
                .for_each(|(t, parts)| rope_token(t, parts));
        }

        captured(&mut s.capture, "Qcur", l, &s.q[..n * c.q_dim()]);
        captured(&mut s.capture, "Kcur", l, &s.k[..n * c.kv_dim()]);
        // ---- a quantized cache holds heads turned by a Hadamard rotation ----
        if let Some(b) = cache.rotation.k {
            rotate_heads(&mut s.q[..n * c.q_dim()], b, n);
            rotate_heads(&mut s.k[..n * c.kv_dim()], b, n);
        }
        if let Some(b) = cache.rotation.v {
            rotate_heads(&mut s.v[..n * c.kv_dim_v()], b, n);
        }
        // ---- cache this batch's keys and values, attend over the cache ----
        let input = AttentionInput {
            config: c,
            layer: l,
            pos,
            n,
            q: &s.q[..n * c.q_dim()],
            k: &s.k[..n * c.kv_dim()],
            v: &s.v[..n * c.kv_dim_v()],
        };
        let attends_on = if s.backends[on].attends() { on } else { 0 };
        s.backends[attends_on].attention(input, cache, &mut s.att_out)?;

        captured(
            &mut s.capture,
            "kqv_out",
            l,
            &s.att_out[..n * c.n_head * c.head_dim_v],
        );
        if let Some(b) = cache.rotation.v {
            // The values were turned; their weighted sums turn back.
            rotate_heads(&mut s.att_out[..n * c.n_head * c.head_dim_v], b, n);
        }
        let be = &mut s.backends[on];
        // ---- output projection, post-norm (gemma), residual ----
        let att_out = &s.att_out[..n * c.n_head * c.head_dim_v];
        be.matmul(model.matrix(&lw.wo), att_out, n, &mut s.xb2)?;
        add_bias(&mut s.xb2[..n * dim], lw.bo.as_deref());
        if let Some(pn) = &lw.attn_post_norm {
            each_row(&mut s.xb2[..n * dim], dim, |row| {
                rmsnorm(row, pn, c.norm_eps)
            });
        }
        add_into(&mut s.x[..n * dim], &s.xb2[..n * dim]);
        // (llama.cpp calls this sa_out in gemma and ffn_inp elsewhere)
        captured(&mut s.capture, "ffn_inp", l, &s.x[..n * dim]);
        captured(&mut s.capture, "sa_out", l, &s.x[..n * dim]);

        // ---- feed-forward: norm, gate and up, activation, down, post-norm, residual ----
        s.xb[..n * dim].copy_from_slice(&s.x[..n * dim]);
        each_row(&mut s.xb[..n * dim], dim, |row| {
            rmsnorm(row, &lw.ffn_norm, c.norm_eps)
        });
        let hid = c.hidden_dim;
        let act: fn(f32) -> f32 = match c.activation {
            Activation::Silu => silu,
            Activation::GeluTanh => gelu,
        };
        let (gate, up) = (model.matrix(&lw.w_gate), model.matrix(&lw.w_up));
        if s.capture.is_none() {
            be.gated([gate, up], &s.xb[..n * dim], n, act, &mut s.hb, &mut s.hb2)?;
        } else {
            // Gate and up apart, to show each before the activation joins them.
            be.matmul(gate, &s.xb[..n * dim], n, &mut s.hb)?;
            be.matmul(up, &s.xb[..n * dim], n, &mut s.hb2)?;
            captured(&mut s.capture, "ffn_norm", l, &s.xb[..n * dim]);
            captured(&mut s.capture, "ffn_gate", l, &s.hb[..n * hid]);
            captured(&mut s.capture, "ffn_up", l, &s.hb2[..n * hid]);
            s.hb[..n * hid]
                .par_iter_mut()
                .zip(&s.hb2[..n * hid])
                .for_each(|(g, &u)| *g = act(*g) * u);
        }
        captured(&mut s.capture, "ffn_geglu", l, &s.hb[..n * hid]);
        captured(&mut s.capture, "ffn_swiglu", l, &s.hb[..n * hid]);
        be.matmul(model.matrix(&lw.w_down), &s.hb[..n * hid], n, &mut s.xb2)?;
        captured(&mut s.capture, "ffn_out", l, &s.xb2[..n * dim]);
        if let Some(pn) = &lw.ffn_post_norm {
            each_row(&mut s.xb2[..n * dim], dim, |row| {
                rmsnorm(row, pn, c.norm_eps)
            });
        }
        add_into(&mut s.x[..n * dim], &s.xb2[..n * dim]);
        captured(&mut s.capture, "l_out", l, &s.x[..n * dim]);
        l += 1;
    }

    // ---- final norm and output projection, only for the rows asked for ----
    if rows == 0 {
        return Ok(&s.logits[..0]);
    }
    if !output_done {
        let xs = &mut s.x[logits_from * dim..n * dim];
        each_row(xs, dim, |row| rmsnorm(row, &w.output_norm, c.norm_eps));
        let out = model.matrix(&w.output);
        let be = &mut s.backends[s.placement.output];
        be.matmul(out, &s.x[logits_from * dim..n * dim], rows, &mut s.logits)?;
    }
    if let Some(cap) = c.final_softcap {
        s.logits[..need]
            .par_iter_mut()
            .for_each(|v| *v = softcap(*v, cap));
    }
    Ok(&s.logits[..need])
}

/// `f` on each `width`-long row of `x`: over the thread pool for a batch, in place for one
/// token (where waking the pool costs more than the row).
fn each_row(x: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    if x.len() > width {
        x.par_chunks_exact_mut(width).for_each(f);
    } else {
        x.chunks_exact_mut(width).for_each(f);
    }
}

/// Turn every `block`-wide piece of the `n` token rows in `x`: over the pool for a batch.
fn rotate_heads(x: &mut [f32], block: usize, n: usize) {
    if n > 1 {
        let row = x.len() / n;
        x.par_chunks_exact_mut(row)
            .for_each(|t| rotate_blocks(t, block));
    } else {
        rotate_blocks(x, block);
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    // A batch's residual is large enough to split; one token's is not.
    const SPLIT: usize = 1 << 14;
    if x.len() > SPLIT {
        x.par_chunks_mut(SPLIT)
            .zip(y.par_chunks(SPLIT))
            .for_each(|(x, y)| add_into(x, y));
        return;
    }
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
