//! The forward pass: token ids in, logits out, one parameterized llama-family block.
//!
//! Reads in the order the data flows: embed → for each layer (attention norm → Q/K/V →
//! QK-norm → RoPE → cache → attention → output projection → residual → FFN norm →
//! gated FFN → residual) → final norm → output projection. A batch of tokens goes through
//! together (prompt processing); generation is a batch of one. All run buffers are sized
//! once, for the largest batch, in [`Scratch::new`].

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::config::{Activation, Arch, Config};
use super::kv_cache::KvCache;
use super::matmul::Matmul;
use super::ops::{
    f16_bits_to_f32, f32_to_f16_bits, gelu, rmsnorm, rope_apply, rope_cache, silu, softcap,
};
use super::weights::Weights;
use loupe_gguf::GgufFile;

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
    keys: Vec<f32>,    // (n_ctx, kv_dim) one layer's cached keys as f32
    vals: Vec<f32>,    // (n_ctx, kv_dim_v) one layer's cached values as f32
    keys_t: Vec<f32>,  // (n_kv_head, n_ctx / 8, head_dim, 8) keys by 8 positions, batches
    scores: Vec<f32>,  // (n_threads * ATT_SPLITS, n_ctx) attention weights, a row per job
    logits: Vec<f32>,  // (rows wanted, vocab)
    mm: Matmul,
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
            keys: vec![0.0; n_ctx * c.kv_dim()],
            vals: vec![0.0; n_ctx * c.kv_dim_v()],
            keys_t: Vec::new(),
            scores: vec![0.0; n_threads.max(1) * ATT_SPLITS * n_ctx],
            logits: Vec::new(),
            capture: None,
            mm: Matmul::new(
                max_batch,
                c.dim
                    .max(c.hidden_dim)
                    .max(c.q_dim())
                    .max(c.n_head * c.head_dim_v),
                c.dim.max(c.hidden_dim).max(c.q_dim()),
                c.vocab_size,
            ),
        }
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
#[allow(clippy::too_many_arguments)]
pub fn forward<'s>(
    file: &GgufFile,
    c: &Config,
    w: &Weights,
    cache: &mut KvCache,
    s: &'s mut Scratch,
    tokens: &[u32],
    pos: usize,
    logits_from: usize,
) -> Result<&'s [f32]> {
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
    let row_bytes = w.token_embd.row_bytes();
    let embd = w.token_embd.data(file);
    for (t, &tok) in tokens.iter().enumerate() {
        ensure!(
            (tok as usize) < c.vocab_size,
            "token id {tok} is outside the vocabulary of {}",
            c.vocab_size
        );
        let src = &embd[tok as usize * row_bytes..][..row_bytes];
        let x = &mut s.x[t * dim..][..dim];
        loupe_quant::dequantize_row(w.token_embd.ty, src, x)?;
        if let Some(scale) = c.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
    }

    for (l, lw) in w.layers.iter().enumerate() {
        // ---- attention: norm, Q/K/V projections (+ biases) ----
        s.xb[..n * dim].copy_from_slice(&s.x[..n * dim]);
        each_row(&mut s.xb[..n * dim], dim, |row| {
            rmsnorm(row, &lw.attn_norm, c.norm_eps)
        });
        captured(&mut s.capture, "attn_norm", l, &s.xb[..n * dim]);
        if n == 1 && s.capture.is_none() {
            let outs = [&mut s.q[..], &mut s.k[..], &mut s.v[..]];
            s.mm.token_qkv(file, [&lw.wq, &lw.wk, &lw.wv], &s.xb[..dim], outs)?;
        } else {
            s.mm.run(file, &lw.wq, &s.xb[..n * dim], n, &mut s.q)?;
            s.mm.run_same_input(file, &lw.wk, &s.xb[..n * dim], n, &mut s.k)?;
            s.mm.run_same_input(file, &lw.wv, &s.xb[..n * dim], n, &mut s.v)?;
        }
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
        // ---- cache this batch's keys and values, then read the layer back as f32 ----
        for t in 0..n {
            cache.store(
                l,
                pos + t,
                &s.k[t * c.kv_dim()..][..c.kv_dim()],
                &s.v[t * c.kv_dim_v()..][..c.kv_dim_v()],
            );
        }
        let n_kv = pos + n;
        cache.read_keys(l, n_kv, &mut s.keys);
        cache.read_values(l, n_kv, &mut s.vals);

        // ---- attention over the cache, parallel over (token, head) ----
        attention(c, l, pos, n, s);

        captured(
            &mut s.capture,
            "kqv_out",
            l,
            &s.att_out[..n * c.n_head * c.head_dim_v],
        );
        // ---- output projection, post-norm (gemma), residual ----
        s.mm.run(
            file,
            &lw.wo,
            &s.att_out[..n * c.n_head * c.head_dim_v],
            n,
            &mut s.xb2,
        )?;
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
        if n == 1 && s.capture.is_none() {
            let gate_up = [&lw.w_gate, &lw.w_up];
            s.mm.token_gated(file, gate_up, &s.xb[..dim], &mut s.hb, &mut s.hb2, act)?;
        } else {
            s.mm.run(file, &lw.w_gate, &s.xb[..n * dim], n, &mut s.hb)?;
            s.mm.run_same_input(file, &lw.w_up, &s.xb[..n * dim], n, &mut s.hb2)?;
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
        s.mm.run(file, &lw.w_down, &s.hb[..n * hid], n, &mut s.xb2)?;
        captured(&mut s.capture, "ffn_out", l, &s.xb2[..n * dim]);
        if let Some(pn) = &lw.ffn_post_norm {
            each_row(&mut s.xb2[..n * dim], dim, |row| {
                rmsnorm(row, pn, c.norm_eps)
            });
        }
        add_into(&mut s.x[..n * dim], &s.xb2[..n * dim]);
        captured(&mut s.capture, "l_out", l, &s.x[..n * dim]);
    }

    // ---- final norm and output projection, only for the rows asked for ----
    let rows = n - logits_from;
    if rows == 0 {
        return Ok(&s.logits[..0]);
    }
    let xs = &mut s.x[logits_from * dim..n * dim];
    each_row(xs, dim, |row| rmsnorm(row, &w.output_norm, c.norm_eps));
    let need = rows * c.vocab_size;
    if s.logits.len() < need {
        // Grows once to the largest request (a perplexity chunk), then stays.
        s.logits.resize(need, 0.0);
    }
    s.mm.run(
        file,
        &w.output,
        &s.x[logits_from * dim..n * dim],
        rows,
        &mut s.logits,
    )?;
    if let Some(cap) = c.final_softcap {
        s.logits[..need]
            .par_iter_mut()
            .for_each(|v| *v = softcap(*v, cap));
    }
    Ok(&s.logits[..need])
}

/// Attention jobs per thread for a batch (each with its own row of scores).
const ATT_SPLITS: usize = 8;

/// llama.cpp's CPU flash attention takes its tiled f32 path for batches of at least this
/// many queries, and its one-query-at-a-time path (f16 query, f16 output accumulator)
/// below it. loupe follows the same split so its rounding matches.
const FA_TILE_Q: usize = 64;

/// Softmax attention of each new token's heads over positions `0..=its own`, restricted
/// to the sliding window on local layers. Keys and values are in `s.keys`/`s.vals`
/// (rounded to the cache type).
fn attention(c: &Config, layer: usize, pos: usize, n: usize, s: &mut Scratch) {
    let (hd, hdv) = (c.head_dim, c.head_dim_v);
    let group = c.n_head / c.n_kv_head;
    let (kv_dim, kv_dim_v, q_dim) = (c.kv_dim(), c.kv_dim_v(), c.q_dim());
    let window = if c.is_swa[layer] {
        c.sliding_window
    } else {
        None
    };
    // Gemma scales queries before the dot (and llama.cpp then uses scale 1).
    let scale_q_first = matches!(c.arch, Arch::Gemma2 | Arch::Gemma3);
    let tiled = n >= FA_TILE_Q;
    let n_ctx = s.keys.len() / kv_dim.max(1);
    let n_kv = pos + n;
    let key_blocks = n_kv.div_ceil(KEY_LANES);
    if tiled {
        transpose_keys(&s.keys, n_kv, c.n_kv_head, hd, &mut s.keys_t);
    }

    let tasks = n * c.n_head;
    // A batch's later tokens attend to more positions: many jobs per thread, so the pool
    // balances them (one job per thread left the last thread three quarters of the work).
    let jobs = if n > 1 {
        s.scores.len() / n_ctx.max(1)
    } else {
        rayon::current_num_threads()
    };
    let per = tasks.div_ceil(jobs.max(1)).max(1);
    let (keys, keys_t, vals, q) = (&s.keys, &s.keys_t, &s.vals, &s.q);
    s.att_out[..tasks * hdv]
        .par_chunks_mut(per * hdv)
        .zip(s.scores.par_chunks_mut(n_ctx.max(1)))
        .enumerate()
        .for_each(|(wi, (out, scores))| {
            let mut qh = [0f32; 512];
            let mut acc16 = [0u16; 512];
            for (i, o) in out.chunks_exact_mut(hdv).enumerate() {
                let task = wi * per + i;
                let (t, h) = (task / c.n_head, task % c.n_head);
                let kvh = h / group;
                let p = pos + t; // this token's position
                let qsrc = &q[t * q_dim + h * hd..][..hd];
                let qh = &mut qh[..hd];
                for (d, &v) in qh.iter_mut().zip(qsrc) {
                    let v = if scale_q_first { v * c.attn_scale } else { v };
                    // The one-query path converts the query to the cache's f16.
                    *d = if tiled {
                        v
                    } else {
                        f16_bits_to_f32(f32_to_f16_bits(v))
                    };
                }
                let first = window.map_or(0, |win| (p + 1).saturating_sub(win));
                let sc = &mut scores[..p + 1 - first];
                let finish = |dot: f32| {
                    let v = if scale_q_first {
                        dot
                    } else {
                        dot * c.attn_scale
                    };
                    c.attn_softcap.map_or(v, |cap| softcap(v, cap))
                };
                if tiled {
                    // Eight keys at a time, each dot still summed in order over the
                    // head dimension: the same bits as one key at a time, in vectors.
                    let head_t = &keys_t[kvh * key_blocks * hd * KEY_LANES..];
                    let (kb0, kb1) = (first / KEY_LANES, p / KEY_LANES + 1);
                    let block = hd * KEY_LANES;
                    // Up to DOT_GROUP blocks per call: their sums run side by side.
                    for g0 in (kb0..kb1).step_by(DOT_GROUP) {
                        let nb = DOT_GROUP.min(kb1 - g0);
                        let kt = &head_t[g0 * block..][..nb * block];
                        let mut dots = [[0f32; KEY_LANES]; DOT_GROUP];
                        loupe_quant::vec_f32::dots_by_lanes(qh, kt, &mut dots[..nb]);
                        for (b, blk) in dots[..nb].iter().enumerate() {
                            for (l, &dot) in blk.iter().enumerate() {
                                let j = (g0 + b) * KEY_LANES + l;
                                if (first..=p).contains(&j) {
                                    sc[j - first] = finish(dot);
                                }
                            }
                        }
                    }
                } else {
                    for (j, sj) in (first..=p).zip(sc.iter_mut()) {
                        let kj = &keys[j * kv_dim + kvh * hd..][..hd];
                        let mut dot = 0f32;
                        for (a, b) in qh.iter().zip(kj) {
                            dot += a * b;
                        }
                        *sj = finish(dot);
                    }
                }
                let vrow = |j: usize| &vals[j * kv_dim_v + kvh * hdv..][..hdv];
                if tiled {
                    super::ops::softmax(sc);
                    // The values of positions first..=p, kv_dim_v apart.
                    let v0 = first * kv_dim_v + kvh * hdv;
                    loupe_quant::vec_f32::weighted_sum(o, sc, &vals[v0..], kv_dim_v);
                } else {
                    online_softmax_f16(sc, first, &vrow, &mut acc16[..hdv], o);
                }
            }
        });
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

/// Keys scored together in the batched path.
const KEY_LANES: usize = loupe_quant::vec_f32::LANES;

/// Blocks of KEY_LANES keys handed to one `dots_by_lanes` call.
const DOT_GROUP: usize = 8;

/// `keys` (n_kv positions of all heads) regrouped per head into blocks of eight positions,
/// each block `head_dim` rows of eight values, zero-padded past `n_kv`: the dots of one
/// query with eight keys then run side by side.
fn transpose_keys(keys: &[f32], n_kv: usize, n_kv_head: usize, hd: usize, out: &mut Vec<f32>) {
    let kv_dim = n_kv_head * hd;
    let blocks = n_kv.div_ceil(KEY_LANES);
    out.clear();
    // Grows to the longest batch's context once; batches are not the per-token path.
    out.resize(n_kv_head * blocks * hd * KEY_LANES, 0.0);
    for (h, head) in out.chunks_exact_mut(blocks * hd * KEY_LANES).enumerate() {
        for (b, block) in head.chunks_exact_mut(hd * KEY_LANES).enumerate() {
            for l in 0..KEY_LANES.min(n_kv - b * KEY_LANES) {
                let key = &keys[(b * KEY_LANES + l) * kv_dim + h * hd..][..hd];
                for (d, &k) in key.iter().enumerate() {
                    block[d * KEY_LANES + l] = k;
                }
            }
        }
    }
}

/// llama.cpp's one-query flash attention: an online softmax whose value accumulator is
/// kept in f16, rescaled whenever a new maximum score appears, divided by the sum at the
/// end.
fn online_softmax_f16<'v>(
    scores: &[f32],
    first: usize,
    vrow: &dyn Fn(usize) -> &'v [f32],
    acc: &mut [u16],
    out: &mut [f32],
) {
    let (mut sum, mut max) = (0f32, f32::NEG_INFINITY);
    acc.fill(0);
    for (j, &sj) in scores.iter().enumerate() {
        let (mut ms, mut vs) = (1f32, 1f32);
        if sj > max {
            ms = (max - sj).exp();
            max = sj;
            for a in acc.iter_mut() {
                *a = f32_to_f16_bits(f16_bits_to_f32(*a) * ms);
            }
        } else {
            vs = (sj - max).exp();
        }
        for (a, &v) in acc.iter_mut().zip(vrow(first + j)) {
            *a = f32_to_f16_bits(f16_bits_to_f32(*a) + v * vs);
        }
        sum = sum * ms + vs;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = f16_bits_to_f32(a) * inv;
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
