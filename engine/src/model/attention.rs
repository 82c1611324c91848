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

use loupe_quant::{attn, fa_tile, GgmlType, F16};
use rayon::prelude::*;

use super::config::{Arch, Config};
use super::kv_cache::{KvCache, KvType, Rows};
use super::memory::product;

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
    tile: TileScratch,
}

/// One thread's buffers for a tiled job: `rows` = tokens per job × query heads per KV head.
struct TileScratch {
    q: Vec<f32>,   // (rows, head_dim) the job's queries
    kq: Vec<f32>,  // (rows, KV_TILE) one key tile's scores, then weights
    vkq: Vec<f32>, // (rows, head_dim_v) unnormalized values
    max: Vec<f32>, // (rows) running maximum score
    sum: Vec<f32>, // (rows) running sum of weights
}

impl TileScratch {
    fn rows(c: &Config) -> usize {
        let g = c.n_head / c.n_kv_head.max(1);
        tokens_per_tile(g) * g
    }

    fn new(c: &Config) -> TileScratch {
        let r = TileScratch::rows(c);
        TileScratch {
            q: vec![0.0; r * c.head_dim],
            kq: vec![0.0; r * KV_TILE],
            vkq: vec![0.0; r * c.head_dim_v],
            max: vec![0.0; r],
            sum: vec![0.0; r],
        }
    }

    fn bytes(c: &Config) -> Option<u64> {
        product(&[
            TileScratch::rows(c),
            c.head_dim + KV_TILE + c.head_dim_v + 2,
            4,
        ])
    }
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
            tile: TileScratch::new(c),
        }
    }

    fn bytes(c: &Config) -> Option<u64> {
        let g = c.n_head / c.n_kv_head.max(1);
        let f32s = product(&[g, SCORE_BLOCK + 2 * c.head_dim_v + 2])?
            .checked_add(product(&[SCORE_BLOCK, c.head_dim_v])?)?
            .checked_mul(4)?;
        let halves = product(&[g, c.head_dim + c.head_dim_v, 2])?;
        f32s.checked_add(halves)?
            .checked_add(product(&[g, q_raw_bytes(c.head_dim)])?)?
            .checked_add(TileScratch::bytes(c)?)
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
    keys_t: Vec<f32>, // (n_kv_head, n / KV_TILE, head_dim, KV_TILE) key tiles, tiled batches
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
        let kv = product(&[n_ctx, c.kv_dim() + c.kv_dim_v(), 4])?;
        let key_tiles = product(&[n_ctx.next_multiple_of(KV_TILE), c.kv_dim(), 4])?;
        let partials = product(&[c.n_head, t, 2 + c.head_dim_v, 4])?;
        let threads = ThreadScratch::bytes(c)?.checked_mul(t as u64)?;
        kv.checked_add(key_tiles)?
            .checked_add(partials)?
            .checked_add(threads)
    }

    pub fn new(c: &Config, n_ctx: usize, n_threads: usize) -> AttentionScratch {
        let t = n_threads.max(1);
        AttentionScratch {
            keys: vec![0.0; n_ctx * c.kv_dim()],
            vals: vec![0.0; n_ctx * c.kv_dim_v()],
            keys_t: Vec::new(),
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
        let (scale, cap) = self.score_scale();
        let v = dot * scale;
        cap.map_or(v, |cap| v.tanh() * cap)
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

    /// llama.cpp's tiled path for a batch of `n` queries over an f16/f32 cache, whose
    /// keys and values are in `s.keys`/`s.vals` (widened to f32). Each query row runs
    /// llama.cpp's loop: tiles of [`KV_TILE`] positions from position 0; per tile the
    /// scores (one fused chain over the head dimension), a new running maximum, the tile's
    /// weights by ggml's vector `exp` summed in f64, and the values added in by one fused
    /// chain over the tile. A job takes a few tokens and, per KV head, the rows of all its
    /// query heads at once, so every key and value row it reads serves about [`Q_ROWS`]
    /// queries (the blocking changes no sum's order, so not the bits either).
    fn tiled(&self, n: usize, q: &[f32], s: &mut AttentionScratch, att_out: &mut [f32]) {
        let c = self.c;
        let (hd, hdv, g) = (c.head_dim, c.head_dim_v, self.group);
        let n_kv = self.pos + n;
        pack_key_tiles(&s.keys, n_kv, c.n_kv_head, hd, &mut s.keys_t);
        let per_job = tokens_per_tile(g);
        let (keys_t, vals, threads) = (&s.keys_t, &s.vals, &s.threads);
        let row = c.n_head * hdv;
        att_out[..n * row]
            .par_chunks_mut(per_job * row)
            .enumerate()
            .for_each(|(job, out)| {
                let mut ts = thread_scratch(threads);
                let tokens = job * per_job..job * per_job + out.len() / row;
                for kvh in 0..c.n_kv_head {
                    let keys = &keys_t[kvh * n_kv.div_ceil(KV_TILE) * hd * KV_TILE..];
                    let vals = &vals[kvh * n_kv * hdv..][..n_kv * hdv];
                    self.tile_rows(q, tokens.clone(), kvh, (keys, vals), &mut ts.tile);
                    let rows = tokens.len() * g;
                    for (r, o) in ts.tile.vkq[..rows * hdv].chunks_exact(hdv).enumerate() {
                        let (t, i) = (r / g, r % g);
                        let sum = ts.tile.sum[r];
                        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                        let dst = &mut out[t * row + (kvh * g + i) * hdv..][..hdv];
                        for (d, &v) in dst.iter_mut().zip(o) {
                            *d = v * inv;
                        }
                    }
                }
            });
    }

    /// The rows (token, query head of KV head `kvh`) of `tokens` through llama.cpp's
    /// tiled loop: leaves each row's unnormalized values in `ts.vkq` and its sum of
    /// weights in `ts.sum`. `keys` are this head's key tiles, `vals` its value rows.
    fn tile_rows(
        &self,
        q: &[f32],
        tokens: std::ops::Range<usize>,
        kvh: usize,
        (keys, vals): (&[f32], &[f32]),
        ts: &mut TileScratch,
    ) {
        let c = self.c;
        let (hd, hdv, g) = (c.head_dim, c.head_dim_v, self.group);
        let rows = tokens.len() * g;
        for (r, dst) in ts.q[..rows * hd].chunks_exact_mut(hd).enumerate() {
            let (t, h) = (tokens.start + r / g, kvh * g + r % g);
            for (d, v) in dst.iter_mut().zip(self.query(q, t, h)) {
                *d = v;
            }
        }
        ts.vkq[..rows * hdv].fill(0.0);
        ts.max[..rows].fill(f32::NEG_INFINITY);
        ts.sum[..rows].fill(0.0);
        let n_kv = vals.len() / hdv;
        let (scale, cap) = self.score_scale();
        let shape = |m, k, n, lda, ldb, ldc| fa_tile::Gemm {
            m,
            k,
            n,
            lda,
            ldb,
            ldc,
        };
        // Positions a token sees: first(p)..=p.
        let seen = |t: usize| self.first(self.pos + t)..self.pos + t + 1;
        let lo = seen(tokens.start).start / KV_TILE;
        let hi = (self.pos + tokens.end - 1) / KV_TILE;
        for tile in lo..=hi {
            let at = tile * KV_TILE;
            let len = KV_TILE.min(n_kv - at);
            let kq = &mut ts.kq[..rows * KV_TILE];
            kq.fill(0.0);
            let k_tile = &keys[tile * hd * KV_TILE..][..hd * KV_TILE];
            let qs = &ts.q[..rows * hd];
            fa_tile::gemm_acc(
                kq,
                qs,
                k_tile,
                shape(rows, hd, KV_TILE, hd, KV_TILE, KV_TILE),
            );
            for (r, sc) in kq.chunks_exact_mut(KV_TILE).enumerate() {
                // The row's visible positions within the tile; the rest weigh nothing.
                let seen = seen(tokens.start + r / g);
                let a = seen.start.clamp(at, at + len) - at;
                let b = seen.end.clamp(at, at + len) - at;
                if a >= b {
                    sc.fill(0.0);
                    continue;
                }
                sc[..a].fill(f32::NEG_INFINITY);
                sc[b..].fill(f32::NEG_INFINITY);
                let vis = &mut sc[a..b];
                vis.iter_mut().for_each(|x| *x *= scale);
                if let Some(cap) = cap {
                    vis.iter_mut().for_each(|x| *x = x.tanh() * cap);
                }
                let tile_max = max_of(vis);
                let old = ts.max[r];
                let new = old.max(tile_max);
                if new > old {
                    let ms = (old - new).exp();
                    ts.vkq[r * hdv..][..hdv].iter_mut().for_each(|v| *v *= ms);
                    ts.sum[r] *= ms;
                }
                ts.max[r] = new;
                ts.sum[r] = (f64::from(ts.sum[r]) + fa_tile::soft_max_row(sc, new)) as f32;
            }
            // Positions past `len` carry weight 0 and add nothing to the chains.
            let v_tile = &vals[at * hdv..][..len * hdv];
            let vkq = &mut ts.vkq[..rows * hdv];
            fa_tile::gemm_acc(vkq, kq, v_tile, shape(rows, len, hdv, KV_TILE, hdv, hdv));
        }
    }

    /// What llama.cpp multiplies a dot by before its soft-cap, and the cap: the scale is
    /// divided by the cap first, and the capped score is `tanh(dot * scale) * cap`.
    fn score_scale(&self) -> (f32, Option<f32>) {
        let scale = if self.scale_q_first {
            1.0
        } else {
            self.c.attn_scale
        };
        match self.c.attn_softcap {
            Some(cap) => (scale / cap, Some(cap)),
            None => (scale, None),
        }
    }
}

/// This thread's buffers (each pool thread has its own; the lock is never contended
/// unless a caller runs attention outside the pool).
fn thread_scratch(threads: &[Mutex<ThreadScratch>]) -> std::sync::MutexGuard<'_, ThreadScratch> {
    let i = rayon::current_thread_index().unwrap_or(0) % threads.len();
    threads[i].lock().unwrap_or_else(|e| e.into_inner())
}

/// The largest of `x` (not empty, no NaN), eight lanes at a time so it vectorizes.
fn max_of(x: &[f32]) -> f32 {
    let pick = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut eights = x.chunks_exact(8);
    for e in &mut eights {
        for (m, &v) in lanes.iter_mut().zip(e) {
            *m = pick(*m, v);
        }
    }
    let tail = eights
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, pick);
    lanes.into_iter().fold(tail, pick)
}

/// Positions per key tile in llama.cpp's tiled path (its `GGML_FA_TILE_KV`): the online
/// softmax rescales at these boundaries, so they are part of the result's bits.
const KV_TILE: usize = 64;

/// Query rows a tiled job aims to share each key tile among (llama.cpp's
/// `GGML_FA_TILE_Q`; here the rows are a few tokens times a KV head's query heads).
const Q_ROWS: usize = 64;

/// Tokens per tiled job: enough that their rows across one KV head's query heads make
/// about [`Q_ROWS`], at least one.
fn tokens_per_tile(group: usize) -> usize {
    (Q_ROWS / group.max(1)).max(1)
}

/// `keys` (n_kv positions of each head, head by head) regrouped per head into tiles of
/// [`KV_TILE`] positions, each tile `head_dim` rows of `KV_TILE` values (a tile's keys
/// side by side, as the score product reads them), zero past `n_kv`.
fn pack_key_tiles(keys: &[f32], n_kv: usize, n_kv_head: usize, hd: usize, out: &mut Vec<f32>) {
    let tiles = n_kv.div_ceil(KV_TILE);
    out.clear();
    // Grows to the longest batch's context once; batches are not the per-token path.
    out.resize(n_kv_head * tiles * hd * KV_TILE, 0.0);
    for (h, head) in out.chunks_exact_mut(tiles * hd * KV_TILE).enumerate() {
        for (b, tile) in head.chunks_exact_mut(hd * KV_TILE).enumerate() {
            for l in 0..KV_TILE.min(n_kv - b * KV_TILE) {
                let key = &keys[(h * n_kv + b * KV_TILE + l) * hd..][..hd];
                for (d, &k) in key.iter().enumerate() {
                    tile[d * KV_TILE + l] = k;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::kv_cache::KvTypes;

    /// `n` seeded values in [-1, 1) (xorshift), for the engine's unit tests.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
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
            // a short batch, tiled batches (one starting the context: whole tiles unseen).
            for (pos, n) in [(40, 1), (700, 1), (300, 5), (200, 70), (0, 130)] {
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

    /// Each query row of a tiled batch holds the bits of llama.cpp's tiled loop for that
    /// row alone, written out plainly below (64-position tiles from 0, a fused chain per
    /// score and per value element, ggml's softmax row): how the jobs group tokens and
    /// heads changes nothing.
    #[test]
    fn tiled_rows_are_llama_cpp_rows_bit_for_bit() {
        let c = Config::for_tests(1, 2, 64);
        let (pos, n, n_ctx, hd) = (150, 100, 512, c.head_dim);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for t in [KvType::F16, KvType::F32] {
            let mut cache = KvCache::new(KvTypes::same(t), &c, n_ctx).unwrap();
            let mut s = AttentionScratch::new(&c, n_ctx, 2);
            let kv = c.kv_dim();
            let (k, v) = (values((pos + n) * kv, 4), values((pos + n) * kv, 5));
            for p in 0..pos {
                cache.store(0, p, &k[p * kv..][..kv], &v[p * kv..][..kv]);
            }
            let q: Vec<f32> = values(n * c.q_dim(), 6).iter().map(|x| x * 4.0).collect();
            let mut out = vec![0f32; n * c.n_head * hd];
            let new = (&q[..], &k[pos * kv..], &v[pos * kv..]);
            pool.install(|| cache_and_attend(&c, 0, &mut cache, &mut s, new, pos, n, &mut out));
            let n_kv = pos + n;
            let (mut keys, mut vals) = (vec![0f32; n_kv * kv], vec![0f32; n_kv * kv]);
            cache.read_keys(0, n_kv, &mut keys);
            cache.read_values(0, n_kv, &mut vals);
            for tok in 0..n {
                for h in 0..c.n_head {
                    let (p, kvh) = (pos + tok, h / 2);
                    let qh = &q[tok * c.q_dim() + h * hd..][..hd];
                    let row = |m: &[f32], j: usize| {
                        (j < n_kv).then(|| m[(kvh * n_kv + j) * hd..][..hd].to_vec())
                    };
                    let (mut m, mut sum, mut acc) = (f32::NEG_INFINITY, 0f32, vec![0f32; hd]);
                    for tile in 0..=p / KV_TILE {
                        let mut sc = [f32::NEG_INFINITY; KV_TILE];
                        for (l, x) in sc.iter_mut().enumerate() {
                            let j = tile * KV_TILE + l;
                            if let Some(key) = row(&keys, j).filter(|_| j <= p) {
                                let dot =
                                    qh.iter().zip(&key).fold(0f32, |a, (q, k)| q.mul_add(*k, a));
                                *x = dot * c.attn_scale;
                            }
                        }
                        let tile_max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        if tile_max == f32::NEG_INFINITY {
                            continue;
                        }
                        let new = m.max(tile_max);
                        if new > m {
                            let ms = (m - new).exp();
                            acc.iter_mut().for_each(|a| *a *= ms);
                            sum *= ms;
                        }
                        m = new;
                        sum = (f64::from(sum) + fa_tile::soft_max_row(&mut sc, new)) as f32;
                        for (l, &w) in sc.iter().enumerate() {
                            let val = row(&vals, tile * KV_TILE + l).unwrap_or(vec![0.0; hd]);
                            for (a, x) in acc.iter_mut().zip(&val) {
                                *a = w.mul_add(*x, *a);
                            }
                        }
                    }
                    let got = &out[(tok * c.n_head + h) * hd..][..hd];
                    let want: Vec<f32> = acc.iter().map(|a| a * (1.0 / sum)).collect();
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(got), bits(&want), "{t} cache, token {tok}, head {h}");
                }
            }
        }
    }
}
