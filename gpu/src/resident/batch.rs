//! Recording a submission: each step's kernel, bind group choice, workgroup grid and
//! parameters (a 256-byte slot each), the uploads before and the reads after.

use super::{
    cache_row_bytes, formats_code, token_heads, ActRounding, AttnShape, Binds, Join, Kernel,
    NextNorm, Read, RopePairs, Split, Step, Target, NONE, ROW_QUERIES, WG,
};
use crate::device::{Params, Segments, MAX_GROUPS, SLOT};
use crate::shaders::{self, Reduction};
use crate::{GpuError, GpuMatrix};
use loupe_quant::GgmlType;

/// The steps of one submission, recorded in order.
#[derive(Default)]
pub struct Batch<'w> {
    pub(super) steps: Vec<Step<'w>>,
    pub(super) params: Vec<u8>,
    pub(super) uploads: Vec<(u64, &'w [f32])>,
    pub(super) reads: Vec<Read>,
    pub(super) read_bytes: u64,
    /// The matmul input's regions as the last rounding wrote them (start, elements, how):
    /// where the packed int8 copy the int8 kernels read is current.
    rounded: Vec<(u32, u32, ActRounding)>,
    pub(super) error: Option<GpuError>,
}

/// A workgroup grid for `groups` workgroups: x up to the dimension limit, the rest in y.
fn grid(groups: u32) -> [u32; 3] {
    let x = groups.clamp(1, MAX_GROUPS);
    [x, groups.div_ceil(x).max(1), 1]
}

/// An op's parameters (`Op` in `ops.wgsl`): the first eight fields, then `xin` and
/// `variant`, which only `residual` and `quantize` read.
fn op_bytes(f: [u32; 8]) -> [u8; 40] {
    op_bytes_with(f, [0, 0])
}

fn op_bytes_with(f: [u32; 8], more: [u32; 2]) -> [u8; 40] {
    let mut b = [0u8; 40];
    for (i, v) in f.iter().chain(&more).enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

impl<'w> Batch<'w> {
    /// An empty recording.
    pub fn new() -> Batch<'w> {
        Batch::default()
    }

    fn push(&mut self, step: Step<'w>, params: &[u8]) {
        let at = self.params.len();
        self.params.resize(at + SLOT as usize, 0);
        self.params[at..at + params.len()].copy_from_slice(params);
        self.steps.push(step);
    }

    /// An op over `threads` threads in a flat grid; `f` gets the grid's x width.
    fn flat(&mut self, kernel: Kernel, binds: Binds, threads: u32, f: impl Fn(u32) -> [u8; 40]) {
        let groups = grid(threads.div_ceil(WG));
        let p = f(groups[0]);
        self.push(
            Step::Op {
                kernel,
                formats: 0,
                binds,
                groups,
            },
            &p,
        );
    }

    /// An op with one workgroup per row, over `rows` rows; `f` gets the grid's x width.
    fn per_row(&mut self, kernel: Kernel, rows: u32, f: impl Fn(u32) -> [u8; 40]) {
        // A workgroup's worth of threads per row is a grid of `rows` workgroups.
        self.flat(kernel.for_rows(rows), Binds::Plain, rows * WG, f);
    }

    /// Notes that `len` elements of the matmul input from `at` were rounded by `r`.
    fn rounded_into(&mut self, at: u32, len: u32, r: ActRounding) {
        let end = at + len;
        self.rounded.retain(|&(s, n, _)| s + n <= at || end <= s);
        self.rounded.push((at, len, r));
    }

    /// Whether the `len` elements of the matmul input from `at` were last rounded by `r`
    /// in this batch, all by one step.
    fn rounded_as(&self, at: u32, len: u32, r: ActRounding) -> bool {
        self.rounded
            .iter()
            .any(|&(s, n, how)| how == r && s <= at && at + len <= s + n)
    }

    /// `data` written to the arena at `off` before the steps run.
    pub fn upload(&mut self, off: u32, data: &'w [f32]) {
        self.uploads.push((off as u64 * 4, data));
    }

    /// `rows` rows of `width` at `src` normalized into `dst` (may be `src`), times the
    /// weight at `weight` in the constants when given.
    pub fn rmsnorm(
        &mut self,
        src: u32,
        dst: u32,
        rows: u32,
        width: u32,
        weight: Option<u32>,
        eps: f32,
    ) {
        self.per_row(Kernel::RmsNorm, rows, |gx| {
            let w = weight.unwrap_or(NONE);
            op_bytes([rows, width, src, dst, w, rows, gx, eps.to_bits()])
        });
    }

    /// Two sets of rows of `width` normalized in place in one dispatch, each (offset,
    /// rows, weight in the constants): QK-norm's query heads and key heads. The same
    /// operations as two [`Batch::rmsnorm`]s.
    pub fn rmsnorm_pair(
        &mut self,
        (q, q_rows, q_weight): (u32, u32, u32),
        (k, k_rows, k_weight): (u32, u32, u32),
        width: u32,
        eps: f32,
    ) {
        let rows = q_rows + k_rows;
        self.per_row(Kernel::RmsNorm, rows, |gx| {
            let f = [rows, width, q, q, q_weight, q_rows, gx, eps.to_bits()];
            op_bytes_with(f, [k, k_weight])
        });
    }

    /// A block's end over `rows` rows of `width`: the block's output at `branch`, times
    /// the post-norm weight `post` (normalized) when given, added to the residual stream at
    /// `stream`; then, with `next`, the stream normalized by the next norm into `branch`
    /// and rounded for the next matmuls into their input.
    pub fn residual(
        &mut self,
        (stream, branch): (u32, u32),
        (rows, width): (u32, u32),
        post: Option<u32>,
        next: Option<NextNorm>,
        eps: f32,
    ) {
        if let Some(n) = next {
            self.rounded_into(n.xin, rows * width, n.rounding);
        }
        self.per_row(Kernel::Residual, rows, |gx| {
            let (post, norm) = (post.unwrap_or(NONE), next.map_or(NONE, |n| n.weight));
            let f = [rows, width, branch, stream, post, norm, gx, eps.to_bits()];
            op_bytes_with(f, next.map_or([0, 0], |n| [n.xin, n.rounding as u32]))
        });
    }

    /// RoPE of `n` tokens' query heads at `q` and key heads at `k` (heads of `head_dim`,
    /// the first `n_rot` dimensions turned) by the cos/sin table at `table` in the arena
    /// ((n, n_rot), interleaved per pair).
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &mut self,
        q: u32,
        k: u32,
        n: u32,
        heads: [u32; 2],
        head_dim: u32,
        n_rot: u32,
        pairs: RopePairs,
        table: u32,
    ) {
        let p = op_bytes([
            0,
            head_dim,
            q,
            k,
            table,
            (n_rot << 1) | pairs as u32,
            0,
            heads[0],
        ]);
        self.push(
            Step::Op {
                kernel: Kernel::Rope,
                formats: 0,
                binds: Binds::Plain,
                groups: [(n_rot / 2).div_ceil(WG).max(1), heads[0] + heads[1], n],
            },
            &p,
        );
    }

    /// `rows` rows of `cols` at `src` in the arena rounded by `r` into the matmul input
    /// at `dst`; with `join`, the rows are first made (and kept at `src`) as it says: the
    /// gated join act(gate) · up of the gates at `src`, or the attention outputs merged
    /// from a split's partial results.
    pub fn quantize(
        &mut self,
        src: u32,
        dst: u32,
        (rows, cols): (u32, u32),
        join: Option<Join>,
        r: ActRounding,
    ) {
        self.rounded_into(dst, rows * cols, r);
        let groups = grid(rows * cols.div_ceil(256));
        // `c`: the up projections; `xin`: the partial results; `variant`: the activation,
        // or the split's parts and the heads' width.
        let (up, parts, variant) = match join {
            None => (NONE, NONE, 0),
            Some(Join::Glu(up, act)) => (up, NONE, act as u32),
            Some(Join::Merge { split, head_dim_v }) => {
                let fits = head_dim_v > 0
                    && head_dim_v.is_multiple_of(4)
                    && head_dim_v <= 0xffff
                    && cols.is_multiple_of(head_dim_v)
                    && (1..=Split::MAX_PARTS).contains(&split.parts);
                if !fits {
                    let parts = split.parts;
                    return self.fail(format!(
                        "{parts} partial results of heads of {head_dim_v} merged into rows of {cols}"
                    ));
                }
                (NONE, split.at, split.parts << 16 | head_dim_v)
            }
        };
        let f = [rows, cols, src, dst, up, r as u32, groups[0], 0];
        let p = op_bytes_with(f, [parts, variant]);
        self.push(
            Step::Op {
                kernel: Kernel::Quantize,
                formats: 0,
                binds: Binds::Plain,
                groups,
            },
            &p,
        );
    }

    /// Turns every `block`-wide piece of the `regions` of the arena ((offset, pieces),
    /// one or two) by the orthonormal Walsh–Hadamard matrix, in place: the heads going
    /// into (or coming out of) a quantized cache, as the CPU turns them. `block` is a
    /// power of two up to 256; the scale is the CPU's `1 / √block` in f32.
    pub fn hadamard(&mut self, regions: &[(u32, u32)], block: u32) {
        let (first, second) = match *regions {
            [a] => (a, (a.0, 0)),
            [a, b] => (a, b),
            _ => return self.fail(format!("{} regions to turn", regions.len())),
        };
        if !block.is_power_of_two() || block > 256 {
            return self.fail(format!("a Hadamard block of {block}"));
        }
        let scale = 1.0 / (block as f32).sqrt();
        let pieces = first.1 + second.1;
        self.flat(Kernel::Hadamard, Binds::Plain, pieces, |gx| {
            op_bytes([
                pieces,
                block,
                first.0,
                second.0,
                first.1,
                0,
                gx,
                scale.to_bits(),
            ])
        });
    }

    /// out (b, w.rows) = xin[x..] (b, w.cols) · wᵀ into `outs`, one (target, bias) per
    /// matrix stacked in `w` ([`GpuMatrix::stacked`]): each matrix's (b, rows) product,
    /// plus its bias at an offset into the constants when given, into its target (the
    /// targets of a stacked matrix all in the arena). A one-token or prompt product whose
    /// input this batch rounded as the CPU rounds it for `w` may take an int8 kernel
    /// (where the workspace allows it: [`crate::Gpu::int8`]).
    pub fn matmul(
        &mut self,
        w: &'w GpuMatrix,
        x: u32,
        b: u32,
        outs: &[(Target, Option<u32>)],
        red: Reduction,
    ) {
        if !x.is_multiple_of(4) {
            self.fail(format!("matmul input at {x} is not 16-byte aligned"));
        }
        let Some((target, out_len, seg)) = self.segments(w, b, outs) else {
            return;
        };
        // The kernel for this product's rows, not the batch's: the output projection of a
        // prompt's last token is one row, a mat-vec's work, where a tile would compute 32.
        let nc = shaders::batch_width(b as usize);
        let rows_per_group = shaders::rows_per_group(nc, red);
        // The packed copy is found by 32-element blocks of the input's offset.
        let int8 = shaders::has_int8(w.ty, nc, red)
            && x.is_multiple_of(32)
            && ActRounding::for_weights(w.ty)
                .is_some_and(|r| self.rounded_as(x, b * w.cols as u32, r));
        for part in &w.parts {
            let groups = (part.rows as u32).div_ceil(rows_per_group);
            let gx = groups.clamp(1, MAX_GROUPS);
            let p = Params {
                rows: part.rows as u32,
                cols: w.cols as u32,
                row_bytes: w.row_bytes as u32,
                b,
                out_stride: w.rows as u32,
                row0: part.row0 as u32,
                groups_x: gx,
                x_off: x,
                seg,
            };
            self.push(
                Step::Matmul {
                    part,
                    pipeline: (w.ty, nc),
                    int8,
                    target,
                    out_len,
                    groups: [gx, groups.div_ceil(gx), b.div_ceil(nc)],
                    weight_bytes: (part.rows * w.row_bytes) as u64,
                },
                &p.bytes(),
            );
        }
    }

    /// The binding (target and bytes) that holds every output of `w`'s product for `b`
    /// activation rows into `outs`, and where each lies in it; `None` (and the batch
    /// failed) when `outs` does not match `w`'s stack.
    fn segments(
        &mut self,
        w: &GpuMatrix,
        b: u32,
        outs: &[(Target, Option<u32>)],
    ) -> Option<(Target, u64, Segments)> {
        let fail = |batch: &mut Self, why: String| {
            batch.fail(why);
            None
        };
        if outs.len() != w.stacked.len() {
            let n = w.stacked.len();
            return fail(self, format!("{} outputs for a stack of {n}", outs.len()));
        }
        let mut seg = Segments {
            starts: [w.rows as u32; 2],
            ..Segments::default()
        };
        if let [(target, bias)] = *outs {
            seg.biases[0] = bias.unwrap_or(NONE);
            return Some((target, b as u64 * w.rows as u64 * 4, seg));
        }
        // Several outputs: one binding of the arena from the lowest to the highest end.
        let mut arena = Vec::with_capacity(outs.len());
        for &(target, _) in outs {
            match target {
                Target::Arena(off) => arena.push(off),
                Target::Logits(_) => {
                    return fail(self, "a stacked matrix's output to the logits".into())
                }
            }
        }
        let base = *arena.iter().min().expect("two or more");
        let mut end = base;
        let mut row = 0;
        for (i, (&rows, (&off, &(_, bias)))) in
            w.stacked.iter().zip(arena.iter().zip(outs)).enumerate()
        {
            if i > 0 {
                seg.starts[i - 1] = row;
            }
            seg.outs[i] = off - base;
            seg.biases[i] = bias.unwrap_or(NONE);
            end = end.max(off + b * rows as u32);
            row += rows as u32;
        }
        Some((Target::Arena(base), (end - base) as u64 * 4, seg))
    }
    /// Marks the batch failed (its first error is the one reported).
    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(GpuError::Shape(why));
        }
    }

    /// The parameters of `store`/`attend`/`merge` (the `Attn` struct of
    /// `attention.wgsl`); `None` (and the batch failed) for cache formats or heads the
    /// kernel does not take.
    #[allow(clippy::too_many_arguments)]
    fn attn_bytes(
        &mut self,
        q: u32,
        out: u32,
        pos: u32,
        n: u32,
        s: &AttnShape,
        gx: u32,
        split: Split,
    ) -> Option<([u8; 96], u32)> {
        let (Some(formats), Some(k_row), Some(v_row)) = (
            formats_code(s.k_type, s.v_type),
            cache_row_bytes(s.k_type, s.head_dim),
            cache_row_bytes(s.v_type, s.head_dim_v),
        ) else {
            self.fail(format!(
                "no device cache of {} keys ({}) and {} values ({})",
                s.k_type, s.head_dim, s.v_type, s.head_dim_v
            ));
            return None;
        };
        if let Some(r) = s.rope.filter(|r| r.n_rot % 2 == 1 || r.n_rot > s.head_dim) {
            self.fail(format!(
                "RoPE of {} dimensions in heads of {}",
                r.n_rot, s.head_dim
            ));
            return None;
        }
        let f = [
            q,
            out,
            pos,
            n,
            s.n_head / s.n_kv_head.max(1),
            s.head_dim,
            s.head_dim_v,
            s.n_head,
            s.n_kv_head,
            s.window,
            s.q_scale.to_bits(),
            s.s_scale.to_bits(),
            s.cap.to_bits(),
            gx,
            split.parts,
            split.chunk,
            split.at,
            k_row,
            v_row,
            s.rope.map_or(NONE, |r| r.table),
            s.rope.map_or(NONE, |r| (r.n_rot << 1) | r.pairs as u32),
            // The new keys and values `attend` writes itself: see `Batch::store_and_attend`.
            NONE,
            NONE,
            // Queries per workgroup, set by `attend_step`.
            0,
        ];
        let mut b = [0u8; 96];
        for (i, v) in f.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        Some((b, formats))
    }

    /// The keys at `k` and values at `v` of `n` tokens into cache `layer` at `pos`, in the
    /// cache's formats: a thread per pair of f16s, per f32, or per head of blocks.
    pub fn store(&mut self, layer: usize, k: u32, v: u32, pos: u32, n: u32, s: &AttnShape) {
        let units = |ty: GgmlType, d: u32| match ty {
            GgmlType::F16 => n * s.n_kv_head * d / 2,
            GgmlType::F32 => n * s.n_kv_head * d,
            _ => n * s.n_kv_head,
        };
        let threads = units(s.k_type, s.head_dim).max(units(s.v_type, s.head_dim_v));
        let groups = grid(threads.div_ceil(WG));
        let Some((p, formats)) = self.attn_bytes(k, v, pos, n, s, groups[0], Split::NONE) else {
            return;
        };
        self.push(
            Step::Op {
                kernel: Kernel::Store,
                formats,
                binds: Binds::Cache(layer),
                groups,
            },
            &p,
        );
    }

    /// Attention of `n` tokens' queries at `q` (positions `pos..`) over cache `layer`
    /// into `out`; with `split`, each query's keys in chunks on several workgroups, then
    /// merged.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        layer: usize,
        q: u32,
        out: u32,
        pos: u32,
        n: u32,
        s: &AttnShape,
        split: Split,
    ) {
        if let Some(p) = self.attend_step(layer, (q, out), (pos, n), s, split, None) {
            self.merge_step(layer, n, s, split, &p);
        }
    }

    /// As [`Batch::attend`], but a split's partial results are left for the rounding of
    /// the output ([`Batch::quantize`]) to merge, which saves a dispatch: the [`Join`] to
    /// round the output with, `None` where the output is whole (no split, or heads the
    /// rounding cannot merge: then the merge step is recorded here).
    pub fn attend_parts(
        &mut self,
        layer: usize,
        (q, out): (u32, u32),
        (pos, n): (u32, u32),
        s: &AttnShape,
        split: Split,
    ) -> Option<Join> {
        let p = self.attend_step(layer, (q, out), (pos, n), s, split, None)?;
        self.leave_merge(layer, n, s, split, &p)
    }

    /// The keys at `k` and values at `v` of `n` tokens into cache `layer` at `pos`, then
    /// attention of their queries at `q` into `out`: what [`Batch::store`] and then
    /// [`Batch::attend_parts`] record (and return), in one step for one token over an f16
    /// or f32 cache, whose attention writes the token's key and value into the cache
    /// itself (taking them from `k` and `v` where it needs them).
    pub fn store_and_attend(
        &mut self,
        layer: usize,
        (k, v): (u32, u32),
        (q, out): (u32, u32),
        (pos, n): (u32, u32),
        s: &AttnShape,
        split: Split,
    ) -> Option<Join> {
        let plain = |ty: GgmlType| matches!(ty, GgmlType::F16 | GgmlType::F32);
        if n != 1 || !plain(s.k_type) || !plain(s.v_type) {
            self.store(layer, k, v, pos, n, s);
            return self.attend_parts(layer, (q, out), (pos, n), s, split);
        }
        let p = self.attend_step(layer, (q, out), (pos, n), s, split, Some((k, v)))?;
        self.leave_merge(layer, n, s, split, &p)
    }

    /// The attention step, `new_kv` the new keys and values it writes into the cache
    /// itself; its parameters, which a merge step shares.
    fn attend_step(
        &mut self,
        layer: usize,
        (q, out): (u32, u32),
        (pos, n): (u32, u32),
        s: &AttnShape,
        split: Split,
        new_kv: Option<(u32, u32)>,
    ) -> Option<[u8; 96]> {
        let (mut p, formats) = self.attn_bytes(q, out, pos, n, s, 0, split)?;
        if let Some((k, v)) = new_kv {
            // `new_k` and `new_v`, fields 22 and 23 of `Attn`'s 24.
            p[84..88].copy_from_slice(&k.to_le_bytes());
            p[88..92].copy_from_slice(&v.to_le_bytes());
        }
        // A workgroup takes a prompt's tokens ROW_QUERIES at a time for one head, or one
        // token's query heads of a group together (as many as ROW_QUERIES).
        let group = s.n_head / s.n_kv_head.max(1);
        let prompt = n > 1 && split.parts <= 1 && new_kv.is_none();
        let (heads, tokens) = match prompt {
            true => (1, ROW_QUERIES),
            false => (token_heads(group), 1),
        };
        // `slots`, the last of `Attn`'s 24 fields.
        p[92..96].copy_from_slice(&(heads | tokens << 16).to_le_bytes());
        self.push(
            Step::Op {
                kernel: Kernel::Attend,
                formats,
                binds: Binds::Cache(layer),
                groups: [
                    s.n_kv_head * group.div_ceil(heads),
                    n.div_ceil(tokens),
                    split.parts.max(1),
                ],
            },
            &p,
        );
        Some(p)
    }

    /// What follows an attention step whose merge may be left to the rounding of its
    /// output: the [`Join`] that merges there, or `None` after recording the merge step
    /// (where there is a split) here.
    fn leave_merge(
        &mut self,
        layer: usize,
        n: u32,
        s: &AttnShape,
        split: Split,
        p: &[u8],
    ) -> Option<Join> {
        if split.parts > 1 && s.head_dim_v.is_multiple_of(4) {
            return Some(Join::Merge {
                split,
                head_dim_v: s.head_dim_v,
            });
        }
        self.merge_step(layer, n, s, split, p);
        None
    }

    /// The merge of a split's partial results (none without a split).
    fn merge_step(&mut self, layer: usize, n: u32, s: &AttnShape, split: Split, p: &[u8]) {
        if split.parts > 1 {
            self.push(
                Step::Op {
                    kernel: Kernel::Merge,
                    formats: 0,
                    binds: Binds::Cache(layer),
                    groups: [s.n_head, n, 1],
                },
                p,
            );
        }
    }

    /// Copies `len` f32s of the arena at `off` back; returns where they start in
    /// [`Workspace::run`]'s output (bytes).
    pub fn read_arena(&mut self, off: u32, len: u32) -> usize {
        self.read(Read::Arena {
            off: off as u64 * 4,
            bytes: len as u64 * 4,
        })
    }

    /// As [`Batch::read_arena`], from the matmul input.
    pub fn read_input(&mut self, off: u32, len: u32) -> usize {
        self.read(Read::Input {
            off: off as u64 * 4,
            bytes: len as u64 * 4,
        })
    }

    /// As [`Batch::read_arena`], from the logits buffer.
    pub fn read_logits(&mut self, off: u32, len: u32) -> usize {
        self.read(Read::Logits {
            off: off as u64 * 4,
            bytes: len as u64 * 4,
        })
    }

    /// `bytes` of cache `layer`'s keys (or values) from byte `off`.
    pub fn read_cache(&mut self, layer: usize, values: bool, off: u64, bytes: u64) -> usize {
        self.read(Read::Cache {
            layer,
            values,
            off,
            bytes,
        })
    }

    fn read(&mut self, r: Read) -> usize {
        let at = self.read_bytes;
        self.read_bytes += r.bytes().next_multiple_of(4);
        self.reads.push(r);
        at as usize
    }
}
