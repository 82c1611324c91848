//! Attention on the CPU: each new token's queries against the layer's cached keys, a
//! softmax, the weighted sum of the cached values, with llama.cpp's rounding regimes:
//!
//! - **one query at a time** (generation, short batches, and any batch over a quantized
//!   cache): llama.cpp's flash-attention loop, reading the cache where it is, in its own
//!   element type. The query goes to the keys' dot type (f16, or Q8_0 for block keys), the
//!   scores are ggml's dot products, and an online softmax accumulates the values in f16
//!   (f16 values) or f32 (others). The query heads sharing a KV head go together, so each
//!   key and value row is read once per group. For one token at long context the keys
//!   are split into one range per thread and the partial results merged (flash decoding,
//!   as llama.cpp does from 512 cached positions on).
//! - **tiled** (batches of at least [`FA_TILE_Q`] over an f16/f32 cache): llama.cpp's f32
//!   path. The layer's keys and values are widened to f32 once per batch, which its many
//!   queries share.

use std::sync::Mutex;

use loupe_quant::{attn, GgmlType, F16};
use rayon::prelude::*;

use super::config::{Arch, Config};
use super::kv_cache::{KvCache, KvType, Rows};
use super::memory::product;
use super::ops::{softcap, softmax};

/// Attention jobs per thread for a tiled batch (each with its own row of scores).
const ATT_SPLITS: usize = 8;

/// llama.cpp's CPU flash attention takes its tiled f32 path for batches of at least this
/// many queries over an f16 or f32 cache, and its one-query path below it.
const FA_TILE_Q: usize = 64;

/// llama.cpp splits one query's keys across threads from this many (padded) positions.
const SPLIT_MIN_KV: usize = 512;

/// llama.cpp pads the attended length to a multiple of this; the split points follow it.
const KV_PAD: usize = 256;

/// Keys scored at once in the one-query path, before their values are summed.
const SCORE_BLOCK: usize = 128;

/// One thread's buffers for the one-query path.
struct ThreadScratch {
    q16: Vec<F16>,            // (group, head_dim) queries as f16
    q_raw: Vec<u8>,           // (group, row bytes) queries in the keys' dot type (Q8_0, f32)
    scores: Vec<f32>,         // (group, SCORE_BLOCK)
    acc16: Vec<F16>,          // (group, head_dim_v) value accumulators, f16 values
    acc32: Vec<f32>, // (group, head_dim_v) value accumulators (f32), or the f16 ones widened
    v32: Vec<f32>,   // (SCORE_BLOCK, head_dim_v) value rows widened from their blocks
    state: Vec<attn::Online>, // (group) each head's running maximum and sum
}

impl ThreadScratch {
    fn new(c: &Config) -> ThreadScratch {
        let g = c.n_head / c.n_kv_head.max(1);
        ThreadScratch {
            q16: vec![F16::ZERO; g * c.head_dim],
            q_raw: vec![0; g * q_raw_bytes(c.head_dim)],
            scores: vec![0.0; g * SCORE_BLOCK],
            acc16: vec![F16::ZERO; g * c.head_dim_v],
            acc32: vec![0.0; g * c.head_dim_v],
            v32: vec![0.0; SCORE_BLOCK * c.head_dim_v],
            state: vec![attn::Online::START; g],
        }
    }

    fn bytes(c: &Config) -> Option<u64> {
        let g = c.n_head / c.n_kv_head.max(1);
        let f32s = product(&[g, SCORE_BLOCK + 2 * c.head_dim_v + 2])?
            .checked_add(product(&[SCORE_BLOCK, c.head_dim_v])?)?
            .checked_mul(4)?;
        let halves = product(&[g, c.head_dim + c.head_dim_v, 2])?;
        f32s.checked_add(halves)?
            .checked_add(product(&[g, q_raw_bytes(c.head_dim)])?)
    }
}

/// Bytes of one query in the widest dot type a key row may ask for (f32).
fn q_raw_bytes(head_dim: usize) -> usize {
    head_dim * 4
}

/// One layer's attention buffers on the CPU, sized once for the context.
pub struct AttentionScratch {
    keys: Vec<f32>,   // (n_kv_head, n, head_dim) one layer's keys as f32, tiled batches
    vals: Vec<f32>,   // (n_kv_head, n, head_dim_v) its values as f32, tiled batches
    keys_t: Vec<f32>, // (n_kv_head, n / 8, head_dim, 8) keys by 8 positions, tiled batches
    scores: Vec<f32>, // (n_threads * ATT_SPLITS, n_ctx) attention weights, tiled batches
    threads: Vec<Mutex<ThreadScratch>>,
    /// (n_head, split ranges, 2 + head_dim_v): each range's maximum, sum and values.
    partials: Vec<f32>,
    n_threads: usize,
}

impl AttentionScratch {
    /// Bytes [`AttentionScratch::new`] allocates, and the transposed keys a batch grows
    /// to; `None` past 64 bits.
    pub fn bytes(c: &Config, n_ctx: usize, n_threads: usize) -> Option<u64> {
        let t = n_threads.max(1);
        let kv = product(&[n_ctx, 2 * c.kv_dim() + c.kv_dim_v(), 4])?;
        let scores = product(&[t, ATT_SPLITS, n_ctx, 4])?;
        let partials = product(&[c.n_head, t, 2 + c.head_dim_v, 4])?;
        let threads = ThreadScratch::bytes(c)?.checked_mul(t as u64)?;
        kv.checked_add(scores)?
            .checked_add(partials)?
            .checked_add(threads)
    }

    pub fn new(c: &Config, n_ctx: usize, n_threads: usize) -> AttentionScratch {
        let t = n_threads.max(1);
        AttentionScratch {
            keys: vec![0.0; n_ctx * c.kv_dim()],
            vals: vec![0.0; n_ctx * c.kv_dim_v()],
            keys_t: Vec::new(),
            scores: vec![0.0; t * ATT_SPLITS * n_ctx],
            threads: (0..t).map(|_| Mutex::new(ThreadScratch::new(c))).collect(),
            partials: vec![0.0; c.n_head * t * (2 + c.head_dim_v)],
            n_threads: t,
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
    let types = cache.types;
    let float_cache = types.k == types.v && matches!(types.k, KvType::F16 | KvType::F32);
    let a = Attend::new(c, layer, pos);
    if n >= FA_TILE_Q && float_cache {
        let n_kv = pos + n;
        cache.read_keys(layer, n_kv, &mut s.keys);
        cache.read_values(layer, n_kv, &mut s.vals);
        a.tiled(n, q, s, att_out);
    } else if n == 1 {
        a.one_token(cache, q, s, att_out);
    } else {
        a.each_query(cache, n, q, s, att_out);
    }
}

/// What every path needs to know about the layer being attended.
struct Attend<'c> {
    c: &'c Config,
    layer: usize,
    /// Position of the batch's first token.
    pos: usize,
    /// Query heads per KV head.
    group: usize,
    window: Option<usize>,
    /// Gemma scales queries before the dot (and llama.cpp then uses scale 1).
    scale_q_first: bool,
}

impl<'c> Attend<'c> {
    fn new(c: &'c Config, layer: usize, pos: usize) -> Attend<'c> {
        Attend {
            c,
            layer,
            pos,
            group: c.n_head / c.n_kv_head,
            window: if c.is_swa[layer] {
                c.sliding_window
            } else {
                None
            },
            scale_q_first: matches!(c.arch, Arch::Gemma2 | Arch::Gemma3),
        }
    }

    /// First position token position `p` attends to.
    fn first(&self, p: usize) -> usize {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))
    }

    /// A dot product of query and key, scaled and soft-capped into a score.
    fn finish(&self, dot: f32) -> f32 {
        let v = if self.scale_q_first {
            dot
        } else {
            dot * self.c.attn_scale
        };
        self.c.attn_softcap.map_or(v, |cap| softcap(v, cap))
    }

    /// Query `h` of token `t` as the dot takes it (scaled first for gemma).
    fn query<'q>(&self, q: &'q [f32], t: usize, h: usize) -> impl Iterator<Item = f32> + 'q {
        let (hd, scale) = (self.c.head_dim, self.c.attn_scale);
        let first = self.scale_q_first;
        q[t * self.c.q_dim() + h * hd..][..hd]
            .iter()
            .map(move |&v| if first { v * scale } else { v })
    }

    /// One token: the KV heads over the pool, and from [`SPLIT_MIN_KV`] cached positions
    /// also the keys, one range per thread, merged afterwards (llama.cpp's split points).
    fn one_token(&self, cache: &KvCache, q: &[f32], s: &mut AttentionScratch, out: &mut [f32]) {
        let c = self.c;
        let p = self.pos;
        let padded = (p + 1).next_multiple_of(KV_PAD).min(cache.n_ctx.max(p + 1));
        if padded < SPLIT_MIN_KV || s.n_threads == 1 {
            return self.each_query(cache, 1, q, s, out);
        }
        let n_split = s.n_threads;
        let chunk = padded.div_ceil(n_split);
        let (g, hdv) = (self.group, c.head_dim_v);
        let part = 2 + hdv;
        let first = self.first(p);
        let threads = &s.threads;
        // Partials by (KV head, range), each the group's heads in a row.
        s.partials[..c.n_head * n_split * part]
            .par_chunks_mut(g * part)
            .enumerate()
            .for_each(|(task, dst)| {
                let (kvh, r) = (task / n_split, task % n_split);
                let range = (r * chunk).max(first)..((r + 1) * chunk).min(p + 1);
                let mut ts = thread_scratch(threads);
                if range.is_empty() {
                    for d in dst.chunks_exact_mut(part) {
                        d[0] = f32::NEG_INFINITY;
                        d[1] = 0.0;
                    }
                    return;
                }
                self.group_softmax(cache, kvh, q, 0, range, &mut ts);
                for (i, d) in dst.chunks_exact_mut(part).enumerate() {
                    d[0] = ts.state[i].max;
                    d[1] = ts.state[i].sum;
                    d[2..].copy_from_slice(&ts.acc32[i * hdv..][..hdv]);
                }
            });
        // Merge each head's ranges in order, as llama.cpp's reduction does.
        for h in 0..c.n_head {
            let (kvh, i) = (h / g, h % g);
            let o = &mut out[h * hdv..][..hdv];
            o.fill(0.0);
            let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
            for r in 0..n_split {
                let d = &s.partials[((kvh * n_split + r) * g + i) * part..][..part];
                let (mc, sc) = (d[0], d[1]);
                if sc == 0.0 {
                    continue;
                }
                let m_new = m.max(mc);
                let (old, new) = ((m - m_new).exp(), (mc - m_new).exp());
                for (o, &v) in o.iter_mut().zip(&d[2..]) {
                    *o = *o * old + v * new;
                }
                sum = sum * old + sc * new;
                m = m_new;
            }
            if sum != 0.0 {
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }

    /// Each of `n` tokens on its own, one task per (token, KV head), whole key range.
    fn each_query(
        &self,
        cache: &KvCache,
        n: usize,
        q: &[f32],
        s: &mut AttentionScratch,
        out: &mut [f32],
    ) {
        let c = self.c;
        let (g, hdv) = (self.group, c.head_dim_v);
        let threads = &s.threads;
        out[..n * c.n_head * hdv]
            .par_chunks_mut(g * hdv)
            .enumerate()
            .for_each(|(task, o)| {
                let (t, kvh) = (task / c.n_kv_head, task % c.n_kv_head);
                let p = self.pos + t;
                let mut ts = thread_scratch(threads);
                self.group_softmax(cache, kvh, q, t, self.first(p)..p + 1, &mut ts);
                for (i, o) in o.chunks_exact_mut(hdv).enumerate() {
                    let sum = ts.state[i].sum;
                    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                    for (o, &a) in o.iter_mut().zip(&ts.acc32[i * hdv..][..hdv]) {
                        *o = a * inv;
                    }
                }
            });
    }

    /// llama.cpp's one-query loop for the group of query heads of token `t` that share
    /// KV head `kvh`, over the cached positions `range`: leaves each head's maximum score
    /// in `ts.m`, its sum of weights in `ts.s` and its unnormalized values in `ts.acc32`.
    fn group_softmax(
        &self,
        cache: &KvCache,
        kvh: usize,
        q: &[f32],
        t: usize,
        range: std::ops::Range<usize>,
        ts: &mut ThreadScratch,
    ) {
        let c = self.c;
        let (g, hd, hdv) = (self.group, c.head_dim, c.head_dim_v);
        let heads = kvh * g..(kvh + 1) * g;
        let keys = cache.keys(self.layer, kvh, range.clone());
        let vals = cache.values(self.layer, kvh, range.clone());
        // The queries in the keys' dot type.
        let q_bytes = match keys {
            Rows::F16(_) => {
                for (i, h) in heads.clone().enumerate() {
                    for (d, v) in ts.q16[i * hd..][..hd].iter_mut().zip(self.query(q, t, h)) {
                        *d = F16::from_f32(v);
                    }
                }
                0
            }
            Rows::F32(_) => {
                for (i, h) in heads.clone().enumerate() {
                    let dst = &mut ts.q_raw[i * hd * 4..][..hd * 4];
                    for (d, v) in dst.chunks_exact_mut(4).zip(self.query(q, t, h)) {
                        d.copy_from_slice(&v.to_le_bytes());
                    }
                }
                hd * 4
            }
            Rows::Blocks(..) => {
                let row = GgmlType::Q8_0.row_bytes(hd as u64).expect("whole blocks") as usize;
                let mut qf = [0f32; 512];
                for (i, h) in heads.clone().enumerate() {
                    for (d, v) in qf[..hd].iter_mut().zip(self.query(q, t, h)) {
                        *d = v;
                    }
                    loupe_quant::quantize_activation(
                        GgmlType::Q8_0,
                        &qf[..hd],
                        &mut ts.q_raw[i * row..][..row],
                    )
                    .expect("whole blocks");
                }
                row
            }
        };
        let f16_values = matches!(vals, Rows::F16(_));
        ts.state.fill(attn::Online::START);
        if f16_values {
            ts.acc16.fill(F16::ZERO);
        } else {
            ts.acc32.fill(0.0);
        }
        let n = range.len();
        for b0 in (0..n).step_by(SCORE_BLOCK) {
            let nb = SCORE_BLOCK.min(n - b0);
            let sc = &mut ts.scores[..g * nb];
            match keys {
                Rows::F16(k) => attn::dots_f16(&ts.q16[..g * hd], &k[b0 * hd..][..nb * hd], hd, sc),
                Rows::F32(k) => {
                    let k = bytemuck::cast_slice(&k[b0 * hd..][..nb * hd]);
                    let act = &ts.q_raw[..g * q_bytes];
                    loupe_quant::matmul(GgmlType::F32, k, nb, hd, act, g, 0..nb, sc)
                        .expect("checked shapes")
                }
                Rows::Blocks(ty, k) => {
                    let row = k.len() / n;
                    let act = &ts.q_raw[..g * q_bytes];
                    let k = &k[b0 * row..][..nb * row];
                    loupe_quant::matmul(ty, k, nb, hd, act, g, 0..nb, sc).expect("checked shapes")
                }
            }
            sc.iter_mut().for_each(|x| *x = self.finish(*x));
            let (acc16, acc32) = (&mut ts.acc16[..g * hdv], &mut ts.acc32[..g * hdv]);
            match vals {
                Rows::F16(v) => {
                    attn::accumulate_f16(sc, &v[b0 * hdv..][..nb * hdv], hdv, acc16, &mut ts.state)
                }
                Rows::F32(v) => {
                    attn::accumulate_f32(sc, &v[b0 * hdv..][..nb * hdv], hdv, acc32, &mut ts.state)
                }
                Rows::Blocks(ty, v) => {
                    let row = v.len() / n;
                    let v32 = &mut ts.v32[..nb * hdv];
                    loupe_quant::dequantize_row(ty, &v[b0 * row..][..nb * row], v32)
                        .expect("whole blocks");
                    attn::accumulate_f32(sc, v32, hdv, acc32, &mut ts.state)
                }
            }
        }
        if f16_values {
            attn::f16_to_f32(&ts.acc16[..g * hdv], &mut ts.acc32[..g * hdv]);
        }
    }

    /// llama.cpp's tiled f32 path for a batch of `n` queries; keys and values are in
    /// `s.keys`/`s.vals` (widened from the cache type).
    fn tiled(&self, n: usize, q: &[f32], s: &mut AttentionScratch, att_out: &mut [f32]) {
        let c = self.c;
        let (hd, hdv) = (c.head_dim, c.head_dim_v);
        let group = self.group;
        let n_ctx = s.scores.len() / (s.n_threads * ATT_SPLITS);
        let n_kv = self.pos + n;
        let key_blocks = n_kv.div_ceil(KEY_LANES);
        transpose_keys(&s.keys, n_kv, c.n_kv_head, hd, &mut s.keys_t);

        let tasks = n * c.n_head;
        // A batch's later tokens attend to more positions: many jobs per thread, so the pool
        // balances them (one job per thread left the last thread three quarters of the work).
        let jobs = s.scores.len() / n_ctx.max(1);
        let per = tasks.div_ceil(jobs.max(1)).max(1);
        let (keys_t, vals) = (&s.keys_t, &s.vals);
        att_out[..tasks * hdv]
            .par_chunks_mut(per * hdv)
            .zip(s.scores.par_chunks_mut(n_ctx.max(1)))
            .enumerate()
            .for_each(|(wi, (out, scores))| {
                let mut qh = [0f32; 512];
                for (i, o) in out.chunks_exact_mut(hdv).enumerate() {
                    let task = wi * per + i;
                    let (t, h) = (task / c.n_head, task % c.n_head);
                    let kvh = h / group;
                    let p = self.pos + t; // this token's position
                    let qh = &mut qh[..hd];
                    for (d, v) in qh.iter_mut().zip(self.query(q, t, h)) {
                        *d = v;
                    }
                    let first = self.first(p);
                    let sc = &mut scores[..p + 1 - first];
                    // Eight keys at a time, each dot still summed in order over the head
                    // dimension: the same bits as one key at a time, in vectors.
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
                                    sc[j - first] = self.finish(dot);
                                }
                            }
                        }
                    }
                    softmax(sc);
                    // The values of positions first..=p of this KV head, one row apart.
                    let v0 = (kvh * n_kv + first) * hdv;
                    loupe_quant::vec_f32::weighted_sum(o, sc, &vals[v0..], hdv);
                }
            });
    }
}

/// This thread's one-query buffers (each pool thread has its own; the lock is never
/// contended unless a caller runs attention outside the pool).
fn thread_scratch(threads: &[Mutex<ThreadScratch>]) -> std::sync::MutexGuard<'_, ThreadScratch> {
    let i = rayon::current_thread_index().unwrap_or(0) % threads.len();
    threads[i].lock().unwrap_or_else(|e| e.into_inner())
}

/// Keys scored together in the batched path.
const KEY_LANES: usize = loupe_quant::vec_f32::LANES;

/// Blocks of KEY_LANES keys handed to one `dots_by_lanes` call.
const DOT_GROUP: usize = 8;

/// `keys` (n_kv positions of each head, head by head) regrouped per head into blocks of
/// eight positions, each block `head_dim` rows of eight values, zero-padded past `n_kv`:
/// the dots of one query with eight keys then run side by side.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kv_cache::KvTypes;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Every path (one token split across threads or not, short batches, tiled batches)
    /// and every cache type against a softmax in f64 over the keys and values as the
    /// cache holds them.
    #[test]
    fn every_path_and_cache_type_matches_a_plain_softmax() {
        let c = Config::for_tests(1, 2, 64);
        let (n_ctx, hd) = (1024, c.head_dim);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for t in KvType::ALL {
            // (cached positions before, new tokens): one token short and long (split),
            // a short batch, a tiled batch.
            for (pos, n) in [(40, 1), (700, 1), (300, 5), (200, 70)] {
                let mut cache = KvCache::new(KvTypes::same(t), &c, n_ctx).unwrap();
                let mut s = AttentionScratch::new(&c, n_ctx, 2);
                let kv = c.kv_dim();
                let k = values((pos + n) * kv, 1);
                let v = values((pos + n) * kv, 2);
                for p in 0..pos {
                    cache.store(0, p, &k[p * kv..][..kv], &v[p * kv..][..kv]);
                }
                let q: Vec<f32> = values(n * c.q_dim(), 3).iter().map(|x| x * 4.0).collect();
                let mut out = vec![0f32; n * c.n_head * c.head_dim_v];
                let new = (&q[..], &k[pos * kv..], &v[pos * kv..]);
                pool.install(|| cache_and_attend(&c, 0, &mut cache, &mut s, new, pos, n, &mut out));
                let (mut keys, mut vals) = (vec![0f32; n_ctx * kv], vec![0f32; n_ctx * kv]);
                cache.read_keys(0, pos + n, &mut keys);
                cache.read_values(0, pos + n, &mut vals);
                let n_kv = pos + n;
                let mut worst = 0f64;
                for tok in 0..n {
                    for h in 0..c.n_head {
                        let kvh = h / 2;
                        let qh = &q[tok * c.q_dim() + h * hd..][..hd];
                        let sc: Vec<f64> = (0..=pos + tok)
                            .map(|j| {
                                let kj = &keys[(kvh * n_kv + j) * hd..][..hd];
                                let dot: f64 = qh.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum();
                                dot * c.attn_scale as f64
                            })
                            .collect();
                        let max = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let w: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                        let sum: f64 = w.iter().sum();
                        for d in 0..hd {
                            let want: f64 = (0..w.len())
                                .map(|j| w[j] * vals[(kvh * n_kv + j) * hd + d] as f64)
                                .sum::<f64>()
                                / sum;
                            let got = out[(tok * c.n_head + h) * hd + d] as f64;
                            worst = worst.max((got - want).abs());
                        }
                    }
                }
                // The query is rounded to f16 or Q8_0 and (f16 values) the sum kept in
                // f16: errors of a few 1e-3 on values of magnitude below 1.
                let bound = if t == KvType::F32 { 1e-4 } else { 1e-2 };
                assert!(
                    worst < bound,
                    "{t} cache, {n} tokens after {pos}: off by {worst}"
                );
            }
        }
    }
}
