//! Offloaded layers run whole on the GPU: every step from the attention norm to the last
//! residual (and the final norm and output projection when the output is offloaded too)
//! recorded into one submission per batch, so the residual stream goes up once and comes
//! back once (or only the logits do).
//!
//! The device keeps its own copy of the offloaded layers' KV cache, position by position,
//! each head's row in the cache's format (f16, f32, Q8_0 or Q4_0, the heads turned by the
//! cache's Hadamard rotation as on the CPU). The CPU's [`KvCache`] stays the one that
//! sessions save and context shifts edit: each run reads back the new positions' keys
//! and values as the device rounded them and stores those bytes, and when the CPU cache
//! was edited since ([`KvCache::edits`]) the device copy is written again from it before
//! the next run.
//!
//! Activations are rounded before each matmul as the CPU kernels quantize them (Q8_0,
//! Q8_K, f16 …, see [`ActRounding`]), so the products are the CPU's up to the order of
//! float sums; norms sum in f32 (the CPU in f64), attention accumulates in f32.

use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Result};
use loupe_gpu::{
    cache_row_bytes, ActRounding, AttnRope, AttnShape, Batch, Glu, Gpu, GpuMatrix, Join, NextNorm,
    Reduction, RopePairs, Split, Target, Workspace, WorkspaceSpec,
};

use super::backend::LayersJob;
use super::config::{Activation, Arch, Config, RopeStyle};
use super::gpu::GpuWeights;
use super::hadamard::KvRotation;
use super::kv_cache::{KvCache, KvTypes};
use super::ops::rope_cache;
use super::weights::Tensor;
use super::Model;

/// Where a layer's norm weights and biases lie in the device's constants.
#[derive(Default)]
struct LayerConsts {
    attn_norm: u32,
    ffn_norm: u32,
    q_norm: Option<u32>,
    k_norm: Option<u32>,
    attn_post_norm: Option<u32>,
    ffn_post_norm: Option<u32>,
    bq: Option<u32>,
    bk: Option<u32>,
    bv: Option<u32>,
    bo: Option<u32>,
}

/// Offsets (f32s) of the batch's run buffers in the arena, each for `rows` tokens.
struct Arena {
    x: u32,
    xb: u32,
    xb2: u32,
    q: u32,
    k: u32,
    v: u32,
    att: u32,
    hb: u32,
    hb2: u32,
    /// cos/sin tables: the global layers', then the sliding-window layers'.
    rope: [u32; 2],
    /// One token's split attention: each head's partial results.
    part: u32,
    len: usize,
}

impl Arena {
    fn new(c: &Config, rows: usize) -> Arena {
        let mut at = 0usize;
        let mut take = |len: usize| {
            let off = at as u32;
            at += len.next_multiple_of(64);
            off
        };
        let mut arena = Arena {
            x: take(rows * c.dim),
            xb: take(rows * c.dim),
            xb2: take(rows * c.dim),
            q: take(rows * c.q_dim()),
            k: take(rows * c.kv_dim()),
            v: take(rows * c.kv_dim_v()),
            att: take(rows * c.n_head * c.head_dim_v),
            hb: take(rows * c.hidden_dim),
            hb2: take(rows * c.hidden_dim),
            rope: [take(rows * c.n_rot), take(rows * c.n_rot)],
            part: take(
                c.n_head
                    * Split::max_parts((c.n_head / c.n_kv_head) as u32) as usize
                    * (2 + c.head_dim_v),
            ),
            len: 0,
        };
        arena.len = at;
        arena
    }
}

/// The whole-layer runner of one context (see the module comment).
pub struct LayerRunner {
    ws: Workspace,
    arena: Arena,
    /// The first offloaded layer (the rest follow it to the model's end).
    first: usize,
    consts: Vec<LayerConsts>,
    output_norm: Option<u32>,
    /// Where each activation rounding's copy lies in the matmul input.
    xin: HashMap<ActRounding, u32>,
    /// Tokens per submission.
    rows: usize,
    /// The device's cache holds positions `0..synced` as the CPU's did at `edits`.
    synced: usize,
    edits: u64,
    /// Whether any offloaded layer has a sliding window (and so its own RoPE base).
    swa: bool,
    /// The cache formats the device's copy holds, and the bytes of one head's keys and
    /// values in it.
    types: KvTypes,
    strides: (usize, usize),
    /// Run buffers on the host: cos/sin tables, the readback, cache rows.
    tables: [Vec<f32>; 2],
    back: Vec<u8>,
    k_rows: Vec<u8>,
    v_rows: Vec<u8>,
}

/// Bytes of one head's keys and values in the device's cache, when it holds these types
/// for these heads.
fn strides(c: &Config, types: KvTypes) -> Option<(usize, usize)> {
    let row = |t: super::kv_cache::KvType, d: usize| {
        cache_row_bytes(t.ggml(), u32::try_from(d).ok()?).map(|b| b as usize)
    };
    Some((row(types.k, c.head_dim)?, row(types.v, c.head_dim_v)?))
}

/// Why layers cannot run whole on the device with this cache or model, if they cannot.
pub fn unsupported(c: &Config, types: KvTypes) -> Option<String> {
    let max = AttnShape::MAX_HEAD as usize;
    if c.head_dim > max || c.head_dim_v > max || !c.head_dim.is_multiple_of(2) {
        return Some(format!(
            "heads of {}/{} (the GPU attention takes even heads up to {max})",
            c.head_dim, c.head_dim_v
        ));
    }
    if strides(c, types).is_none() {
        return Some(format!(
            "a {types} KV cache for heads of {}/{}",
            c.head_dim, c.head_dim_v
        ));
    }
    None
}

fn rounding(t: &Tensor) -> Result<ActRounding> {
    ActRounding::for_weights(t.ty)
        .ok_or_else(|| anyhow!("no activation format for {} weights", t.ty))
}

impl LayerRunner {
    /// The workspace for the offloaded layers of `model` with a cache of `types` and
    /// `n_ctx` positions and batches of up to `max_batch` tokens.
    pub fn new(
        model: &Model,
        g: &GpuWeights,
        types: KvTypes,
        n_ctx: usize,
        max_batch: usize,
    ) -> Result<LayerRunner> {
        let (c, w) = (&model.config, &model.weights);
        if let Some(why) = unsupported(c, types) {
            anyhow::bail!("whole layers on the GPU do not take {why}");
        }
        let strides = strides(c, types).expect("checked by unsupported");
        let gpu = g.gpu();
        let first = c.n_layer - g.layers;
        let mut consts: Vec<f32> = Vec::new();
        let mut put = |v: &[f32]| {
            let at = consts.len() as u32;
            consts.extend_from_slice(v);
            at
        };
        let mut layer_consts = Vec::new();
        let mut roundings = Vec::new();
        for lw in &w.layers[first..] {
            layer_consts.push(LayerConsts {
                attn_norm: put(&lw.attn_norm),
                ffn_norm: put(&lw.ffn_norm),
                q_norm: lw.q_norm.as_deref().map(&mut put),
                k_norm: lw.k_norm.as_deref().map(&mut put),
                attn_post_norm: lw.attn_post_norm.as_deref().map(&mut put),
                ffn_post_norm: lw.ffn_post_norm.as_deref().map(&mut put),
                bq: lw.bq.as_deref().map(&mut put),
                bk: lw.bk.as_deref().map(&mut put),
                bv: lw.bv.as_deref().map(&mut put),
                bo: lw.bo.as_deref().map(&mut put),
            });
            for t in [
                &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down,
            ] {
                roundings.push(rounding(t)?);
            }
        }
        let output_norm = g.output.then(|| put(&w.output_norm));
        if g.output {
            roundings.push(rounding(&w.output)?);
        }
        roundings.sort_by_key(|r| *r as u32);
        roundings.dedup();
        // Tokens per submission: what the adapter's largest binding holds.
        let s = gpu.summary();
        let limit = s.max_binding_bytes.min(s.max_buffer_bytes) as usize;
        let max_cols = c.dim.max(c.n_head * c.head_dim_v).max(c.hidden_dim);
        let mut rows = max_batch.max(1);
        // The arena grows by at most len(1) - len(0) per token (each region rounds up).
        let (fixed, one) = (Arena::new(c, 0).len, Arena::new(c, 1).len);
        rows = rows.min((limit / 4).saturating_sub(fixed) / (one - fixed));
        rows = rows.min(limit / 4 / (max_cols * roundings.len().max(1)));
        if g.output {
            rows = rows.min(limit / 4 / c.vocab_size);
        }
        ensure!(
            rows > 0,
            "one token's buffers exceed the adapter's binding limit of {limit} bytes"
        );
        let arena = Arena::new(c, rows);
        let mut xin = HashMap::new();
        for (i, r) in roundings.iter().enumerate() {
            xin.insert(*r, (i * (rows * max_cols).next_multiple_of(64)) as u32);
        }
        let kv_bytes = |stride: usize| (n_ctx * c.n_kv_head * stride) as u64;
        let ws = Workspace::new(
            gpu,
            WorkspaceSpec {
                arena: arena.len,
                xin: roundings.len() * (rows * max_cols).next_multiple_of(64),
                logits: if g.output { rows * c.vocab_size } else { 0 },
                consts: &consts,
                kv: vec![(kv_bytes(strides.0), kv_bytes(strides.1)); g.layers],
            },
        )?;
        Ok(LayerRunner {
            ws,
            arena,
            first,
            consts: layer_consts,
            output_norm,
            xin,
            rows,
            synced: 0,
            edits: 0,
            swa: c.is_swa[first..].contains(&true),
            types,
            strides,
            tables: [Vec::new(), Vec::new()],
            back: Vec::new(),
            k_rows: Vec::new(),
            v_rows: Vec::new(),
        })
    }

    /// The cache formats this runner's device cache holds.
    pub fn types(&self) -> KvTypes {
        self.types
    }

    /// Bytes of positions `pos..pos + n` of one layer's keys and values in the device's
    /// cache, and where they start.
    fn span(&self, c: &Config, pos: usize, n: usize) -> [(u64, u64); 2] {
        [self.strides.0, self.strides.1].map(|s| {
            let per_pos = (c.n_kv_head * s) as u64;
            (pos as u64 * per_pos, n as u64 * per_pos)
        })
    }

    /// Brings the device's cache up to positions `0..pos` of the CPU's.
    fn sync_cache(&mut self, gpu: &Gpu, c: &Config, cache: &KvCache, pos: usize) {
        if cache.edits() != self.edits {
            self.edits = cache.edits();
            self.synced = 0;
        }
        let from = self.synced.min(pos);
        if from < pos {
            let n = pos - from;
            let [(k_at, _), (v_at, _)] = self.span(c, from, n);
            for i in 0..self.consts.len() {
                let (k, v) = (&mut self.k_rows, &mut self.v_rows);
                cache.read_rows(self.first + i, (from, n), self.strides, k, v);
                self.ws.write_cache(gpu, i, false, k_at, k);
                self.ws.write_cache(gpu, i, true, v_at, v);
            }
        }
        self.synced = pos;
    }

    /// Runs `job` (its layers are this runner's, to the model's end), one submission
    /// per `rows` tokens.
    pub fn run(&mut self, g: &GpuWeights, job: LayersJob<'_>, cache: &mut KvCache) -> Result<()> {
        let LayersJob {
            model,
            layers,
            pos,
            n,
            x,
            logits,
        } = job;
        let c = &model.config;
        ensure!(
            layers.start == self.first && layers.end == c.n_layer,
            "layers {layers:?} on the GPU, which holds {}..{}",
            self.first,
            c.n_layer
        );
        ensure!(
            !(logits.is_some() && self.output_norm.is_none()),
            "the output projection is not on the GPU"
        );
        self.sync_cache(g.gpu(), c, cache, pos);
        let (from, mut out) = match logits {
            Some((from, out)) => (from, Some(out)),
            None => (n, None),
        };
        let (dim, vocab) = (c.dim, c.vocab_size);
        let mut t0 = 0;
        let mut written = 0;
        while t0 < n {
            let b = self.rows.min(n - t0);
            let lo = from.clamp(t0, t0 + b) - t0;
            let dst = out
                .as_deref_mut()
                .map(|o| (lo, &mut o[written * vocab..(written + b - lo) * vocab]));
            if dst.is_some() {
                written += b - lo;
            }
            self.submit(
                g,
                model,
                pos + t0,
                &mut x[t0 * dim..(t0 + b) * dim],
                dst,
                cache,
            )?;
            // A failed submission leaves the device's cache short; the next run rewrites it.
            self.synced = pos + t0 + b;
            t0 += b;
        }
        Ok(())
    }

    /// One submission: tokens at `pos..pos + b` (x holds b rows) through every offloaded
    /// layer, then either the logits of rows `lo..b` into `out` or the residual back into
    /// `x`; the new keys and values into `cache`.
    fn submit(
        &mut self,
        g: &GpuWeights,
        model: &Model,
        pos: usize,
        x: &mut [f32],
        out: Option<(usize, &mut [f32])>,
        cache: &mut KvCache,
    ) -> Result<()> {
        let (c, w) = (&model.config, &model.weights);
        let b = x.len() / c.dim;
        let tables = if self.swa { 2 } else { 1 };
        for (table, swa) in self.tables.iter_mut().zip([false, true]).take(tables) {
            let (base, scale) = if swa {
                (c.rope_base_local, c.rope_freq_scale_local)
            } else {
                (c.rope_base, c.rope_freq_scale)
            };
            table.resize(b * c.n_rot, 0.0);
            for (t, row) in table.chunks_exact_mut(c.n_rot.max(1)).enumerate() {
                rope_cache(pos + t, c.n_rot, base, scale, w.rope_freqs.as_deref(), row);
            }
        }
        let a = &self.arena;
        let rec = Recorder {
            model,
            g,
            a,
            xin: &self.xin,
            reduction: self.ws.reduction(),
            types: self.types,
            rotation: cache.rotation,
        };
        let mut batch = Batch::new();
        batch.upload(a.x, x);
        for (at, table) in a.rope.iter().zip(&self.tables).take(tables) {
            batch.upload(*at, table);
        }
        for (i, lc) in self.consts.iter().enumerate() {
            // Each layer's last residual also prepares the next layer's attention input.
            let l = self.first + i;
            let next_norm = match self.consts.get(i + 1) {
                Some(n) => Some(rec.next_norm(n.attn_norm, &w.layers[l + 1].wq)?),
                None => None,
            };
            rec.layer(&mut batch, (l, i), lc, (pos, b), i > 0, next_norm)?;
        }
        let [(k_at, k_len), (v_at, v_len)] = self.span(c, pos, b);
        let mut kv_at = Vec::with_capacity(self.consts.len());
        for i in 0..self.consts.len() {
            let k = batch.read_cache(i, false, k_at, k_len);
            let v = batch.read_cache(i, true, v_at, v_len);
            kv_at.push((k, v));
        }
        let back_at = match &out {
            Some((lo, _)) if *lo < b => {
                let rows = b - lo;
                let norm = self.output_norm.expect("checked by run");
                let xs = a.x + (lo * c.dim) as u32;
                batch.rmsnorm(xs, a.xb, rows as u32, c.dim as u32, Some(norm), c.norm_eps);
                rec.matmuls(
                    &mut batch,
                    (a.xb, Input::Plain),
                    c.dim,
                    rows,
                    &[(&w.output, Target::Logits(0), None)],
                )?;
                Some(batch.read_logits(0, (rows * c.vocab_size) as u32))
            }
            Some(_) => None,
            None => Some(batch.read_arena(a.x, (b * c.dim) as u32)),
        };
        self.ws.run(g.gpu(), batch, &mut self.back)?;

        let floats = |at: usize, dst: &mut [f32]| {
            for (d, s) in dst.iter_mut().zip(self.back[at..].chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        };
        match (out, back_at) {
            (Some((_, dst)), Some(at)) => floats(at, dst),
            (None, Some(at)) => floats(at, x),
            _ => {}
        }
        for (i, &(k, v)) in kv_at.iter().enumerate() {
            let (k, v) = (
                &self.back[k..k + k_len as usize],
                &self.back[v..v + v_len as usize],
            );
            cache.store_rows(self.first + i, (pos, b), self.strides, k, v);
        }
        Ok(())
    }
}

/// What a matmul's input rows hold besides themselves.
#[derive(Clone, Copy)]
enum Input {
    Plain,
    /// Already rounded this way into the matmul input (by the residual before).
    Rounded(ActRounding),
    /// To be made first as the join says (gates joined with the up projections, or
    /// attention outputs merged from a split's partial results).
    Joined(Join),
}

/// What recording a layer needs: the model, its uploaded matrices, the arena's layout.
struct Recorder<'r> {
    model: &'r Model,
    g: &'r GpuWeights,
    a: &'r Arena,
    xin: &'r HashMap<ActRounding, u32>,
    reduction: Reduction,
    types: KvTypes,
    /// The turn the cache's heads take (a quantized cache, as the CPU turns them).
    rotation: KvRotation,
}

impl<'r> Recorder<'r> {
    /// The device matrix that holds `t`, and `t`'s place among those stacked in it.
    fn matrix(&self, t: &Tensor) -> Result<(&'r GpuMatrix, usize)> {
        self.g.get(&self.model.matrix(t))
    }

    /// What a block's last residual prepares for the matrix `first` (the next block's
    /// first): the stream normalized by `weight`, rounded as `first`'s kernel takes it.
    fn next_norm(&self, weight: u32, first: &Tensor) -> Result<NextNorm> {
        let r = rounding(first)?;
        Ok(NextNorm {
            weight,
            xin: self.xin[&r],
            rounding: r,
        })
    }

    /// `rows` rows of `cols` at `src` (prepared as `input` says) rounded once per format
    /// the matrices' kernels take, then each matrix's product (plus its bias, at an
    /// offset into the constants) into its target: one dispatch for each device matrix,
    /// whose stacked matrices must come in `jobs` together and in order.
    fn matmuls(
        &self,
        batch: &mut Batch<'r>,
        (src, input): (u32, Input),
        cols: usize,
        rows: usize,
        jobs: &[(&Tensor, Target, Option<u32>)],
    ) -> Result<()> {
        let mut done: Vec<ActRounding> = Vec::new();
        let mut join = None;
        match input {
            Input::Plain => {}
            Input::Rounded(r) => done.push(r),
            Input::Joined(j) => join = Some(j),
        }
        let mut rest = jobs;
        while let Some(&(t, _, _)) = rest.first() {
            let (m, _) = self.matrix(t)?;
            let n = m.stacked.len();
            // The next n jobs must be m's matrices 0..n, in order.
            let in_place = |(i, j): (usize, &(&Tensor, Target, Option<u32>))| {
                self.matrix(j.0)
                    .is_ok_and(|(o, k)| std::ptr::eq(o, m) && k == i)
            };
            let Some(stacked) = rest
                .get(..n)
                .filter(|js| js.iter().enumerate().all(in_place))
            else {
                bail!("a matmul over one of {n} stacked matrices without the others");
            };
            rest = &rest[n..];
            let r = rounding(t)?;
            let at = self.xin[&r];
            if !done.contains(&r) {
                // The join, when asked for, happens with the first rounding.
                let shape = (rows as u32, cols as u32);
                batch.quantize(src, at, shape, join.take(), r);
                done.push(r);
            }
            let outs: Vec<(Target, Option<u32>)> = stacked
                .iter()
                .map(|&(_, target, bias)| (target, bias))
                .collect();
            batch.matmul(m, at, rows as u32, &outs, self.reduction);
        }
        Ok(())
    }

    /// Every step of layer `l` (the device's cache `i`) for b tokens at `pos`. `normed`:
    /// the layer before left this layer's attention input (the normalized stream) in
    /// `xb2` and rounded for `wq`; `next_norm`: what this layer's last residual prepares
    /// for the next layer in the same way.
    fn layer(
        &self,
        batch: &mut Batch<'r>,
        (l, i): (usize, usize),
        lc: &LayerConsts,
        (pos, b): (usize, usize),
        normed: bool,
        next_norm: Option<NextNorm>,
    ) -> Result<()> {
        let (c, a) = (&self.model.config, self.a);
        let lw = &self.model.weights.layers[l];
        let (bu, dim, eps) = (b as u32, c.dim as u32, c.norm_eps);
        let rows = |width: usize| (b * width) as u32;

        // ---- attention: norm, Q/K/V (+ biases), QK-norm, RoPE ----
        let input = if normed {
            (a.xb2, Input::Rounded(rounding(&lw.wq)?))
        } else {
            batch.rmsnorm(a.x, a.xb, bu, dim, Some(lc.attn_norm), eps);
            (a.xb, Input::Plain)
        };
        let qkv = [
            (&lw.wq, Target::Arena(a.q), lc.bq),
            (&lw.wk, Target::Arena(a.k), lc.bk),
            (&lw.wv, Target::Arena(a.v), lc.bv),
        ];
        self.matmuls(batch, input, c.dim, b, &qkv)?;
        let hd = c.head_dim as u32;
        match (lc.q_norm, lc.k_norm) {
            (Some(qn), Some(kn)) => {
                let (q, k) = ((a.q, rows(c.n_head), qn), (a.k, rows(c.n_kv_head), kn));
                batch.rmsnorm_pair(q, k, hd, eps);
            }
            (qn, kn) => {
                if let Some(qn) = qn {
                    batch.rmsnorm(a.q, a.q, rows(c.n_head), hd, Some(qn), eps);
                }
                if let Some(kn) = kn {
                    batch.rmsnorm(a.k, a.k, rows(c.n_kv_head), hd, Some(kn), eps);
                }
            }
        }
        let pairs = match c.rope_style {
            RopeStyle::Normal => RopePairs::Adjacent,
            RopeStyle::Neox => RopePairs::Halves,
        };
        let table = a.rope[c.is_swa[l] as usize];
        let rope = AttnRope {
            table,
            n_rot: c.n_rot as u32,
            pairs,
        };
        // RoPE happens as the attention reads the queries and stores the keys, unless
        // the Hadamard turn of a quantized cache must come between.
        let rope_as_read = self.rotation.k.is_none();
        if !rope_as_read {
            let heads = [c.n_head as u32, c.n_kv_head as u32];
            batch.rope(a.q, a.k, bu, heads, hd, rope.n_rot, pairs, table);
        }
        // A quantized cache holds heads turned by a Hadamard rotation (see the CPU's
        // forward pass): queries and keys, values, and the attention output back.
        if let Some(block) = self.rotation.k {
            let pieces = |width: usize| (b * width / block) as u32;
            let regions = [(a.q, pieces(c.q_dim())), (a.k, pieces(c.kv_dim()))];
            batch.hadamard(&regions, block as u32);
        }
        if let Some(block) = self.rotation.v {
            let pieces = (b * c.kv_dim_v() / block) as u32;
            batch.hadamard(&[(a.v, pieces)], block as u32);
        }

        // ---- the cache, attention, output projection, residual ----
        let gemma = matches!(c.arch, Arch::Gemma2 | Arch::Gemma3);
        let (q_scale, mut s_scale) = if gemma {
            (c.attn_scale, 1.0)
        } else {
            (1.0, c.attn_scale)
        };
        let cap = c.attn_softcap.unwrap_or(0.0);
        if cap > 0.0 {
            s_scale /= cap;
        }
        let shape = AttnShape {
            k_type: self.types.k.ggml(),
            v_type: self.types.v.ggml(),
            n_head: c.n_head as u32,
            n_kv_head: c.n_kv_head as u32,
            head_dim: hd,
            head_dim_v: c.head_dim_v as u32,
            window: if c.is_swa[l] {
                c.sliding_window.unwrap_or(0) as u32
            } else {
                0
            },
            q_scale,
            s_scale,
            cap,
            rope: rope_as_read.then_some(rope),
        };
        // One token (generation) has too few heads to fill a GPU: its keys are split.
        let split = if b == 1 {
            let seen = match shape.window {
                0 => pos + 1,
                w => (pos + 1).min(w as usize),
            };
            Split::for_keys(seen as u32, shape.n_head / shape.n_kv_head, a.part)
        } else {
            Split::NONE
        };
        let att_cols = c.n_head * c.head_dim_v;
        // A split's partial results are merged as the output is rounded, unless the
        // values' Hadamard turn must be undone between.
        let att_input = if let Some(block) = self.rotation.v {
            batch.store(i, a.k, a.v, pos as u32, bu, &shape);
            batch.attend(i, a.q, a.att, pos as u32, bu, &shape, split);
            batch.hadamard(&[(a.att, (b * att_cols / block) as u32)], block as u32);
            Input::Plain
        } else {
            // (One token's attention over an f16 or f32 cache writes its key and value.)
            let (kv, qo, at) = ((a.k, a.v), (a.q, a.att), (pos as u32, bu));
            batch
                .store_and_attend(i, kv, qo, at, &shape, split)
                .map_or(Input::Plain, Input::Joined)
        };
        let wo = [(&lw.wo, Target::Arena(a.xb2), lc.bo)];
        self.matmuls(batch, (a.att, att_input), att_cols, b, &wo)?;
        // The post-norm (Gemma), the residual and the feed-forward's norm and rounding.
        let ffn_in = self.next_norm(lc.ffn_norm, &lw.w_gate)?;
        let post = lc.attn_post_norm;
        batch.residual((a.x, a.xb2), (bu, dim), post, Some(ffn_in), eps);

        // ---- feed-forward: gate and up, activation, down, post-norm, residual ----
        let gate_up = [
            (&lw.w_gate, Target::Arena(a.hb), None),
            (&lw.w_up, Target::Arena(a.hb2), None),
        ];
        let rounded = Input::Rounded(ffn_in.rounding);
        self.matmuls(batch, (a.xb2, rounded), c.dim, b, &gate_up)?;
        let act = match c.activation {
            Activation::Silu => Glu::Silu,
            Activation::GeluTanh => Glu::Gelu,
        };
        // The activation's join happens as the down projection's input is rounded.
        let down = [(&lw.w_down, Target::Arena(a.xb2), None)];
        let gates = (a.hb, Input::Joined(Join::Glu(a.hb2, act)));
        self.matmuls(batch, gates, c.hidden_dim, b, &down)?;
        let post = lc.ffn_post_norm;
        batch.residual((a.x, a.xb2), (bu, dim), post, next_norm, eps);
        Ok(())
    }
}
