//! Attention on the CPU: each new token's queries against the layer's cached keys, a
//! softmax, the weighted sum of the cached values; with llama.cpp's two rounding regimes
//! (its one-query flash attention with an f16 accumulator, and its tiled f32 path for
//! batches), so loupe's logits track llama.cpp's.

use rayon::prelude::*;

use super::config::{Arch, Config};
use super::kv_cache::KvCache;
use super::memory::product;
use super::ops::{f16_bits_to_f32, f32_to_f16_bits, softcap, softmax};

/// Attention jobs per thread for a batch (each with its own row of scores).
const ATT_SPLITS: usize = 8;

/// llama.cpp's CPU flash attention takes its tiled f32 path for batches of at least this
/// many queries, and its one-query-at-a-time path (f16 query, f16 output accumulator)
/// below it. loupe follows the same split so its rounding matches.
const FA_TILE_Q: usize = 64;

/// One layer's attention buffers on the CPU, sized once for the context.
pub struct AttentionScratch {
    keys: Vec<f32>,   // (n_ctx, kv_dim) one layer's cached keys as f32
    vals: Vec<f32>,   // (n_ctx, kv_dim_v) one layer's cached values as f32
    keys_t: Vec<f32>, // (n_kv_head, n_ctx / 8, head_dim, 8) keys by 8 positions, batches
    scores: Vec<f32>, // (n_threads * ATT_SPLITS, n_ctx) attention weights, a row per job
}

impl AttentionScratch {
    /// Bytes [`AttentionScratch::new`] allocates, and the transposed keys a batch grows
    /// to; `None` past 64 bits.
    pub fn bytes(c: &Config, n_ctx: usize, n_threads: usize) -> Option<u64> {
        let kv = product(&[n_ctx, 2 * c.kv_dim() + c.kv_dim_v(), 4])?;
        let scores = product(&[n_threads.max(1), ATT_SPLITS, n_ctx, 4])?;
        kv.checked_add(scores)
    }

    pub fn new(c: &Config, n_ctx: usize, n_threads: usize) -> AttentionScratch {
        AttentionScratch {
            keys: vec![0.0; n_ctx * c.kv_dim()],
            vals: vec![0.0; n_ctx * c.kv_dim_v()],
            keys_t: Vec::new(),
            scores: vec![0.0; n_threads.max(1) * ATT_SPLITS * n_ctx],
        }
    }
}

/// Store the `n` new tokens' keys `k` (n, kv_dim) and values `v` (n, kv_dim_v) at
/// positions `pos..pos + n` of `layer` in the cache, then attend: `att_out`
/// (n, n_head * head_dim_v) from the queries `q` (n, q_dim).
#[allow(clippy::too_many_arguments)]
pub fn cache_and_attend(
    c: &Config,
    layer: usize,
    cache: &mut KvCache,
    s: &mut AttentionScratch,
    (q, k, v): (&[f32], &[f32], &[f32]),
    pos: usize,
    n: usize,
    att_out: &mut [f32],
) {
    for t in 0..n {
        cache.store(
            layer,
            pos + t,
            &k[t * c.kv_dim()..][..c.kv_dim()],
            &v[t * c.kv_dim_v()..][..c.kv_dim_v()],
        );
    }
    // Read the layer back as f32, rounded to the cache type.
    let n_kv = pos + n;
    cache.read_keys(layer, n_kv, &mut s.keys);
    cache.read_values(layer, n_kv, &mut s.vals);
    attention(c, layer, pos, n, q, s, att_out);
}

/// Softmax attention of each new token's heads over positions `0..=its own`, restricted
/// to the sliding window on local layers. Keys and values are in `s.keys`/`s.vals`
/// (rounded to the cache type).
fn attention(
    c: &Config,
    layer: usize,
    pos: usize,
    n: usize,
    q: &[f32],
    s: &mut AttentionScratch,
    att_out: &mut [f32],
) {
    let (hd, hdv) = (c.head_dim, c.head_dim_v);
    let group = c.n_head / c.n_kv_head;
    let (kv_dim, q_dim) = (c.kv_dim(), c.q_dim());
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
    let (keys, keys_t, vals) = (&s.keys, &s.keys_t, &s.vals);
    att_out[..tasks * hdv]
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
                        let kj = &keys[(kvh * n_kv + j) * hd..][..hd];
                        let mut dot = 0f32;
                        for (a, b) in qh.iter().zip(kj) {
                            dot += a * b;
                        }
                        *sj = finish(dot);
                    }
                }
                let vrow = |j: usize| &vals[(kvh * n_kv + j) * hdv..][..hdv];
                if tiled {
                    softmax(sc);
                    // The values of positions first..=p, kv_dim_v apart.
                    let v0 = (kvh * n_kv + first) * hdv;
                    loupe_quant::vec_f32::weighted_sum(o, sc, &vals[v0..], hdv);
                } else {
                    online_softmax_f16(sc, first, &vrow, &mut acc16[..hdv], o);
                }
            }
        });
}

/// Keys scored together in the batched path.
const KEY_LANES: usize = loupe_quant::vec_f32::LANES;

/// Blocks of KEY_LANES keys handed to one `dots_by_lanes` call.
const DOT_GROUP: usize = 8;

/// `keys` (n_kv positions of all heads) regrouped per head into blocks of eight positions,
/// each block `head_dim` rows of eight values, zero-padded past `n_kv`: the dots of one
/// query with eight keys then run side by side.
fn transpose_keys(keys: &[f32], n_kv: usize, n_kv_head: usize, hd: usize, out: &mut Vec<f32>) {
    let blocks = n_kv.div_ceil(KEY_LANES);
    out.clear();
    // Grows to the longest batch's context once; batches are not the per-token path.
    out.resize(n_kv_head * blocks * hd * KEY_LANES, 0.0);
    for (h, head) in out.chunks_exact_mut(blocks * hd * KEY_LANES).enumerate() {
        for (b, block) in head.chunks_exact_mut(hd * KEY_LANES).enumerate() {
            for l in 0..KEY_LANES.min(n_kv - b * KEY_LANES) {
                let key = &keys[(h * n_kv + b * KEY_LANES + l) * hd..][..hd];
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
