//! Whole layers on the device: a [`Workspace`] holds the run buffers of a batch (one f32
//! arena), the matmul input, the norm weights and biases, the KV cache of each offloaded
//! layer and the logits; a [`Batch`] records the steps of a forward pass over it (norms,
//! matmuls, RoPE, the cache, attention, activations, residuals) and [`Workspace::run`]
//! submits them at once, so a token crosses the bus once each way instead of once per
//! matmul.
//!
//! Offsets into the arena are in f32s; the host lays the buffers out (see the engine's GPU
//! backend). The matmul kernels are those of [`Gpu::matmul`], bound to the arena instead
//! of per-call buffers.

use std::collections::HashMap;
use std::time::Instant;

use loupe_quant::GgmlType;

use crate::device::{Params, Part, MAX_GROUPS, SLOT};
use crate::shaders::{self, Reduction};
use crate::{Gpu, GpuError, GpuMatrix, Result};

const OPS: &str = include_str!("shaders/ops.wgsl");
const ATTENTION: &str = include_str!("shaders/attention.wgsl");

/// The WGSL of the non-matmul kernels (for the translation tests): (name, source).
pub fn op_sources() -> [(&'static str, &'static str); 2] {
    [("ops", OPS), ("attention", ATTENTION)]
}

/// Dispatches one [`Batch`] may hold (each takes a 256-byte parameter slot).
const MAX_STEPS: usize = 16384;
/// Steps timed per submission when profiling (two timestamps each; a query set holds
/// at most 4096).
const MAX_TIMED: usize = 2048;
/// Steps recorded per submission (see [`Workspace::run`]).
const STEPS_PER_SUBMIT: usize = 64;
/// Matmul bind groups kept at most (one per weight part, output and batch size).
const MAX_BINDS: usize = 8192;
/// Threads per workgroup of the op kernels.
const WG: u32 = 64;
/// `consts` offset meaning "no weight".
const NONE: u32 = u32::MAX;

/// The sizes a [`Workspace`] is made with.
pub struct WorkspaceSpec<'a> {
    /// f32s of the activation arena.
    pub arena: usize,
    /// f32s of the matmul input (activations as the CPU's kernels would round them).
    pub xin: usize,
    /// f32s of the logits buffer (0: the output projection is not on the device).
    pub logits: usize,
    /// Norm weights and biases, read by the op kernels at offsets the host keeps.
    pub consts: &'a [f32],
    /// Bytes of each offloaded layer's keys and values.
    pub kv: Vec<(u64, u64)>,
}

/// How the activations of a matmul are rounded before it, as the CPU kernels quantize
/// them for weights of some format (see `loupe_quant::vec_dot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActRounding {
    None = 0,
    /// Q8_0 and Q8_1: blocks of 32, an f16 scale.
    Q8Blocks32 = 1,
    /// Q8_K: blocks of 256, an f32 scale.
    Q8K = 2,
    F16 = 3,
    Bf16 = 4,
}

impl ActRounding {
    /// The rounding the CPU applies to activations multiplied with `ty` weights.
    pub fn for_weights(ty: GgmlType) -> Option<ActRounding> {
        use GgmlType::*;
        Some(match loupe_quant::vec_dot_type(ty)? {
            F32 => ActRounding::None,
            Q8_0 | Q8_1 => ActRounding::Q8Blocks32,
            Q8_K => ActRounding::Q8K,
            F16 => ActRounding::F16,
            BF16 => ActRounding::Bf16,
            _ => return None,
        })
    }
}

/// The two gated activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    Silu = 0,
    Gelu = 1,
}

/// The two RoPE layouts: adjacent pairs, or the two halves of the rotated part (NeoX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    Adjacent = 0,
    Halves = 1,
}

/// Shape of one layer's attention (see `attention.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub head_dim_v: u32,
    /// Sliding window in tokens, 0 for none.
    pub window: u32,
    /// Queries are multiplied by this first (gemma), else 1.
    pub q_scale: f32,
    /// Dots are multiplied by this (already divided by the cap).
    pub s_scale: f32,
    /// Score soft-cap, 0 for none.
    pub cap: f32,
}

impl AttnShape {
    /// The widest head the attention kernel takes (keys or values).
    pub const MAX_HEAD: u32 = 256;
}

/// How attention divides each query's keys among workgroups (flash decoding): `parts`
/// chunks of `chunk` keys, their partial results at `at` in the arena ((n, n_head,
/// parts, 2 + head_dim_v) f32s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub parts: u32,
    pub chunk: u32,
    pub at: u32,
}

impl Split {
    /// One workgroup per query head and token, over all its keys.
    pub const NONE: Split = Split {
        parts: 1,
        chunk: 1 << 30,
        at: 0,
    };
    /// The most chunks a query's keys are cut into.
    pub const MAX_PARTS: u32 = 32;

    /// Chunks for one query over `keys` positions (whole tiles of 64 keys, at least 128
    /// per chunk), partial results at `at`.
    pub fn for_keys(keys: u32, at: u32) -> Split {
        let parts = keys.div_ceil(128).clamp(1, Split::MAX_PARTS);
        if parts == 1 {
            return Split::NONE;
        }
        let chunk = keys.div_ceil(parts).next_multiple_of(64);
        Split {
            parts: keys.div_ceil(chunk),
            chunk,
            at,
        }
    }
}

/// Where a matmul writes: the arena at an offset (f32s, a multiple of 64), or the
/// logits buffer at one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Arena(u32),
    Logits(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    RmsNorm,
    Add,
    Bias,
    Glu,
    Rope,
    Quantize,
    Store,
    Attend,
    Merge,
}

impl Kernel {
    const ALL: [Kernel; 9] = [
        Kernel::RmsNorm,
        Kernel::Add,
        Kernel::Bias,
        Kernel::Glu,
        Kernel::Rope,
        Kernel::Quantize,
        Kernel::Store,
        Kernel::Attend,
        Kernel::Merge,
    ];

    fn entry(self) -> (&'static str, &'static str) {
        match self {
            Kernel::RmsNorm => (OPS, "rmsnorm"),
            Kernel::Add => (OPS, "add"),
            Kernel::Bias => (OPS, "bias"),
            Kernel::Glu => (OPS, "glu"),
            Kernel::Rope => (OPS, "rope"),
            Kernel::Quantize => (OPS, "quantize"),
            Kernel::Store => (ATTENTION, "store"),
            Kernel::Attend => (ATTENTION, "attend"),
            Kernel::Merge => (ATTENTION, "merge"),
        }
    }
}

/// Which buffers an op binds besides the arena: the matmul input, or a layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Binds {
    Plain,
    Cache(usize),
}

enum Step<'w> {
    Op {
        kernel: Kernel,
        binds: Binds,
        groups: [u32; 3],
    },
    Matmul {
        part: &'w Part,
        pipeline: (GgmlType, u32),
        target: Target,
        out_len: u64,
        groups: [u32; 3],
    },
}

impl Step<'_> {
    /// What a profile calls this step: the kernel, or the matmul's format and width.
    fn name(&self) -> String {
        match self {
            Step::Op { kernel, .. } => kernel.entry().1.to_string(),
            Step::Matmul { pipeline, .. } => format!("matmul {} x{}", pipeline.0, pipeline.1),
        }
    }
}

/// What [`Workspace::run`] copies back, in order.
#[derive(Clone, Copy)]
enum Read {
    Arena {
        off: u64,
        bytes: u64,
    },
    Input {
        off: u64,
        bytes: u64,
    },
    Logits {
        off: u64,
        bytes: u64,
    },
    Cache {
        layer: usize,
        values: bool,
        off: u64,
        bytes: u64,
    },
}

impl Read {
    fn bytes(&self) -> u64 {
        match *self {
            Read::Arena { bytes, .. }
            | Read::Input { bytes, .. }
            | Read::Logits { bytes, .. }
            | Read::Cache { bytes, .. } => bytes,
        }
    }
}

/// The steps of one submission, recorded in order.
pub struct Batch<'w> {
    steps: Vec<Step<'w>>,
    params: Vec<u8>,
    uploads: Vec<(u64, &'w [f32])>,
    reads: Vec<Read>,
    read_bytes: u64,
    nc: u32,
    error: Option<GpuError>,
}

/// A workgroup grid for `groups` workgroups: x up to the dimension limit, the rest in y.
fn grid(groups: u32) -> [u32; 3] {
    let x = groups.clamp(1, MAX_GROUPS);
    [x, groups.div_ceil(x).max(1), 1]
}

fn op_bytes(f: [u32; 8]) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, v) in f.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

impl<'w> Batch<'w> {
    /// An empty recording whose matmuls carry `b` activation rows.
    pub fn new(b: usize) -> Batch<'w> {
        let nc = shaders::BATCH_WIDTHS
            .into_iter()
            .find(|&w| b <= w as usize)
            .unwrap_or(shaders::BATCH_WIDTHS[shaders::BATCH_WIDTHS.len() - 1]);
        Batch {
            steps: Vec::new(),
            params: Vec::new(),
            uploads: Vec::new(),
            reads: Vec::new(),
            read_bytes: 0,
            nc,
            error: None,
        }
    }

    fn push(&mut self, step: Step<'w>, params: &[u8]) {
        let at = self.params.len();
        self.params.resize(at + SLOT as usize, 0);
        self.params[at..at + params.len()].copy_from_slice(params);
        self.steps.push(step);
    }

    /// An op over `threads` threads in a flat grid; `f` gets the grid's x width.
    fn flat(&mut self, kernel: Kernel, binds: Binds, threads: u32, f: impl Fn(u32) -> [u8; 32]) {
        let groups = grid(threads.div_ceil(WG));
        let p = f(groups[0]);
        self.push(
            Step::Op {
                kernel,
                binds,
                groups,
            },
            &p,
        );
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
        let groups = grid(rows);
        let p = op_bytes([
            rows,
            width,
            src,
            dst,
            weight.unwrap_or(NONE),
            0,
            groups[0],
            eps.to_bits(),
        ]);
        self.push(
            Step::Op {
                kernel: Kernel::RmsNorm,
                binds: Binds::Plain,
                groups,
            },
            &p,
        );
    }

    /// dst += src over `len` elements.
    pub fn add(&mut self, dst: u32, src: u32, len: u32) {
        self.flat(Kernel::Add, Binds::Plain, len, |gx| {
            op_bytes([len, 0, src, dst, 0, 0, gx, 0])
        });
    }

    /// Each of `rows` rows of `width` at `dst` plus the bias at `bias` in the constants.
    pub fn bias(&mut self, dst: u32, rows: u32, width: u32, bias: u32) {
        self.flat(Kernel::Bias, Binds::Plain, rows * width, |gx| {
            op_bytes([rows, width, 0, dst, bias, 0, gx, 0])
        });
    }

    /// gate = act(gate) · up over `len` elements.
    pub fn glu(&mut self, gate: u32, up: u32, len: u32, act: Glu) {
        self.flat(Kernel::Glu, Binds::Plain, len, |gx| {
            op_bytes([len, 0, up, gate, 0, act as u32, gx, 0])
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
                binds: Binds::Plain,
                groups: [(n_rot / 2).div_ceil(WG).max(1), heads[0] + heads[1], n],
            },
            &p,
        );
    }

    /// `rows` rows of `cols` at `src` in the arena rounded by `r` into the matmul input
    /// at `dst`.
    pub fn quantize(&mut self, src: u32, dst: u32, rows: u32, cols: u32, r: ActRounding) {
        let groups = grid(rows * cols.div_ceil(256));
        let p = op_bytes([rows, cols, src, dst, 0, r as u32, groups[0], 0]);
        self.push(
            Step::Op {
                kernel: Kernel::Quantize,
                binds: Binds::Plain,
                groups,
            },
            &p,
        );
    }

    /// out (b, w.rows) = xin[x..] (b, w.cols) · wᵀ, into `target` (rows of `w.rows`).
    pub fn matmul(
        &mut self,
        w: &'w GpuMatrix,
        x: u32,
        b: u32,
        target: Target,
        rows_per_group: u32,
    ) {
        if !x.is_multiple_of(4) && self.error.is_none() {
            self.error = Some(GpuError::Shape(format!(
                "matmul input at {x} is not 16-byte aligned"
            )));
        }
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
            };
            self.push(
                Step::Matmul {
                    part,
                    pipeline: (w.ty, self.nc),
                    target,
                    out_len: b as u64 * w.rows as u64 * 4,
                    groups: [gx, groups.div_ceil(gx), b.div_ceil(self.nc)],
                },
                &p.bytes(),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attn_bytes(
        q: u32,
        out: u32,
        pos: u32,
        n: u32,
        s: &AttnShape,
        gx: u32,
        split: Split,
    ) -> [u8; 80] {
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
        ];
        let mut b = [0u8; 80];
        for (i, v) in f.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The keys at `k` and values at `v` of `n` tokens into cache `layer` at `pos`.
    pub fn store(&mut self, layer: usize, k: u32, v: u32, pos: u32, n: u32, s: &AttnShape) {
        let pairs = n * s.n_kv_head * s.head_dim.max(s.head_dim_v) / 2;
        let groups = grid(pairs.div_ceil(WG));
        let p = Self::attn_bytes(k, v, pos, n, s, groups[0], Split::NONE);
        self.push(
            Step::Op {
                kernel: Kernel::Store,
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
        let p = Self::attn_bytes(q, out, pos, n, s, 0, split);
        self.push(
            Step::Op {
                kernel: Kernel::Attend,
                binds: Binds::Cache(layer),
                groups: [s.n_head, n, split.parts.max(1)],
            },
            &p,
        );
        if split.parts > 1 {
            self.push(
                Step::Op {
                    kernel: Kernel::Merge,
                    binds: Binds::Cache(layer),
                    groups: [s.n_head, n, 1],
                },
                &p,
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

/// Device buffers and pipelines for running whole layers (see the module comment).
pub struct Workspace {
    arena: wgpu::Buffer,
    xin: wgpu::Buffer,
    logits: Option<wgpu::Buffer>,
    consts: wgpu::Buffer,
    spare: wgpu::Buffer,
    kv: Vec<[wgpu::Buffer; 2]>,
    params: wgpu::Buffer,
    readback: Option<wgpu::Buffer>,
    op_layout: wgpu::BindGroupLayout,
    mm_layout: wgpu::BindGroupLayout,
    mm_pipeline_layout: wgpu::PipelineLayout,
    ops: HashMap<Kernel, wgpu::ComputePipeline>,
    matmuls: HashMap<(GgmlType, u32), wgpu::ComputePipeline>,
    op_binds: HashMap<Binds, wgpu::BindGroup>,
    mm_binds: HashMap<(wgpu::Buffer, Target, u64), wgpu::BindGroup>,
    /// Bytes of the uploads as the queue takes them.
    staging: Vec<u8>,
    rows_per_group: u32,
}

fn layout_entry(
    binding: u32,
    ty: wgpu::BufferBindingType,
    dynamic: bool,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}

fn whole(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: b.as_entire_binding(),
    }
}

fn range(binding: u32, buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset,
            size: wgpu::BufferSize::new(size),
        }),
    }
}

impl Workspace {
    /// Allocates the buffers of `spec` on `gpu` and builds the kernels; an out-of-memory
    /// error when the device cannot hold them.
    pub fn new(gpu: &Gpu, spec: WorkspaceSpec<'_>) -> Result<Workspace> {
        let device = gpu.device();
        let limit = gpu
            .summary()
            .max_binding_bytes
            .min(gpu.summary().max_buffer_bytes);
        let floats = |n: usize, what: &str| -> Result<u64> {
            let bytes = (n.max(1) as u64 * 4).next_multiple_of(256);
            if bytes > limit {
                return Err(GpuError::Shape(format!(
                    "the {what} needs {bytes} bytes, more than the adapter binds ({limit})"
                )));
            }
            Ok(bytes)
        };
        use wgpu::BufferUsages as U;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = |label: &'static str, size: u64, usage: U| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let rw = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let arena = buffer("arena", floats(spec.arena, "activation arena")?, rw);
        let xin = buffer("matmul input", floats(spec.xin, "matmul input")?, rw);
        let logits = (spec.logits > 0).then(|| {
            let bytes = (spec.logits as u64 * 4).next_multiple_of(256);
            buffer("logits", bytes, rw)
        });
        let consts = buffer("constants", floats(spec.consts.len(), "constants")?, rw);
        let spare = buffer("spare", 256, rw);
        let mut kv = Vec::with_capacity(spec.kv.len());
        for &(k, v) in &spec.kv {
            for b in [k, v] {
                if b > limit {
                    return Err(GpuError::Shape(format!(
                        "a layer's KV cache needs {b} bytes, more than the adapter binds \
                         ({limit}); use a shorter context"
                    )));
                }
            }
            kv.push([
                buffer("keys", k.max(4).next_multiple_of(256), rw),
                buffer("values", v.max(4).next_multiple_of(256), rw),
            ]);
        }
        let params = buffer(
            "op parameters",
            MAX_STEPS as u64 * SLOT,
            U::UNIFORM | U::COPY_DST,
        );
        let const_bytes: Vec<u8> = spec.consts.iter().flat_map(|v| v.to_le_bytes()).collect();
        gpu.queue().write_buffer(&consts, 0, &const_bytes);
        gpu.queue().submit([]);
        if let Some(e) = pollster::block_on(invalid.pop()) {
            return Err(gpu.run_error("allocating the layers' buffers", e));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::OutOfMemory {
                adapter: gpu.summary().name.clone(),
                bytes: arena.size()
                    + xin.size()
                    + kv.iter().flatten().map(|b| b.size()).sum::<u64>(),
                reason: e.to_string(),
            });
        }

        use wgpu::BufferBindingType as T;
        let storage = |read_only| T::Storage { read_only };
        let op_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("layer ops"),
            entries: &[
                layout_entry(0, storage(false), false),
                layout_entry(1, storage(false), false),
                layout_entry(2, storage(false), false),
                layout_entry(3, storage(true), false),
                layout_entry(4, T::Uniform, true),
            ],
        });
        let mm_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("layer matmuls"),
            entries: &[
                layout_entry(0, storage(true), false),
                layout_entry(1, storage(true), false),
                layout_entry(2, storage(false), false),
                layout_entry(3, T::Uniform, true),
            ],
        });
        let pipeline_layout = |l: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(l)],
                immediate_size: 0,
            })
        };
        let op_pipeline_layout = pipeline_layout(&op_layout);
        let mm_pipeline_layout = pipeline_layout(&mm_layout);
        let invalid = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut modules = HashMap::new();
        let mut ops = HashMap::new();
        for k in Kernel::ALL {
            let (source, entry) = k.entry();
            let module = modules.entry(source.as_ptr()).or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(entry),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&op_pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
            ops.insert(k, pipeline);
        }
        if let Some(e) = pollster::block_on(invalid.pop()) {
            return Err(gpu.run_error("building the layer kernels", e));
        }
        Ok(Workspace {
            arena,
            xin,
            logits,
            consts,
            spare,
            kv,
            params,
            readback: None,
            op_layout,
            mm_layout,
            mm_pipeline_layout,
            ops,
            matmuls: HashMap::new(),
            op_binds: HashMap::new(),
            mm_binds: HashMap::new(),
            staging: Vec::new(),
            rows_per_group: match gpu.reduction() {
                Reduction::Subgroup { rows } => rows,
                Reduction::Shared => 1,
            },
        })
    }

    /// Weight rows one matmul workgroup computes (for [`Batch::matmul`]).
    pub fn rows_per_group(&self) -> u32 {
        self.rows_per_group
    }

    /// Bytes the workspace holds on the device.
    pub fn device_bytes(&self) -> u64 {
        let mut b = self.arena.size() + self.xin.size() + self.consts.size() + self.params.size();
        b += self.logits.as_ref().map_or(0, |l| l.size());
        b + self.kv.iter().flatten().map(|k| k.size()).sum::<u64>()
    }

    /// Writes f16 bits into cache `layer`'s keys (or values) at byte `off` (a multiple
    /// of four, as is the length in bytes).
    pub fn write_cache(&mut self, gpu: &Gpu, layer: usize, values: bool, off: u64, bits: &[u16]) {
        self.staging.clear();
        self.staging
            .extend(bits.iter().flat_map(|h| h.to_le_bytes()));
        let b = &self.kv[layer][values as usize];
        gpu.queue().write_buffer(b, off, &self.staging);
    }

    fn matmul_pipeline(
        &mut self,
        gpu: &Gpu,
        key: (GgmlType, u32),
    ) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.matmuls.get(&key) {
            return Ok(p.clone());
        }
        let source = shaders::shader_source(key.0, key.1, gpu.reduction())
            .ok_or(GpuError::Unsupported { ty: key.0 })?;
        let device = gpu.device();
        let invalid = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.0.name()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.0.name()),
            layout: Some(&self.mm_pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(invalid.pop()) {
            return Err(gpu.run_error("building a matmul kernel", e));
        }
        self.matmuls.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn op_bind(&mut self, device: &wgpu::Device, binds: Binds) -> Result<wgpu::BindGroup> {
        if let Some(b) = self.op_binds.get(&binds) {
            return Ok(b.clone());
        }
        let (b1, b2) = match binds {
            Binds::Plain => (&self.xin, &self.spare),
            Binds::Cache(l) => {
                let kv = self.kv.get(l).ok_or_else(|| {
                    GpuError::Shape(format!("cache {l} of {} on the device", self.kv.len()))
                })?;
                (&kv[0], &kv[1])
            }
        };
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.op_layout,
            entries: &[
                whole(0, &self.arena),
                whole(1, b1),
                whole(2, b2),
                whole(3, &self.consts),
                range(4, &self.params, 0, SLOT),
            ],
        });
        self.op_binds.insert(binds, group.clone());
        Ok(group)
    }

    fn mm_bind(
        &mut self,
        device: &wgpu::Device,
        part: &wgpu::Buffer,
        target: Target,
        len: u64,
    ) -> Result<wgpu::BindGroup> {
        let key = (part.clone(), target, len);
        if let Some(b) = self.mm_binds.get(&key) {
            return Ok(b.clone());
        }
        if self.mm_binds.len() > MAX_BINDS {
            // Prompts of many batch sizes: start again rather than grow without end.
            self.mm_binds.clear();
        }
        let (out, off) = match target {
            Target::Arena(off) => (&self.arena, off as u64 * 4),
            Target::Logits(off) => (
                self.logits
                    .as_ref()
                    .ok_or_else(|| GpuError::Shape("no logits buffer on the device".into()))?,
                off as u64 * 4,
            ),
        };
        if off + len > out.size() {
            return Err(GpuError::Shape(format!(
                "a matmul's output of {len} bytes at {off} passes its buffer's {}",
                out.size()
            )));
        }
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.mm_layout,
            entries: &[
                whole(0, part),
                whole(1, &self.xin),
                range(2, out, off, len),
                range(3, &self.params, 0, SLOT),
            ],
        });
        self.mm_binds.insert(key, group.clone());
        Ok(group)
    }

    /// Puts one step into `pass`: its pipeline, bind group (parameters at its slot) and
    /// workgroup grid.
    fn record(
        &mut self,
        gpu: &Gpu,
        device: &wgpu::Device,
        pass: &mut wgpu::ComputePass<'_>,
        i: usize,
        step: &Step<'_>,
    ) -> Result<()> {
        let slot = (i as u64 * SLOT) as u32;
        let (pipeline, bind, groups) = match step {
            Step::Op {
                kernel,
                binds,
                groups,
            } => (
                self.ops[kernel].clone(),
                self.op_bind(device, *binds)?,
                groups,
            ),
            Step::Matmul {
                part,
                pipeline,
                target,
                out_len,
                groups,
            } => (
                self.matmul_pipeline(gpu, *pipeline)?,
                self.mm_bind(device, &part.buffer, *target, *out_len)?,
                groups,
            ),
        };
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[slot]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }

    /// Runs `batch`: its uploads, every step in order, then its reads, copied into `out`
    /// (at the offsets its `read_*` calls returned).
    pub fn run(&mut self, gpu: &Gpu, batch: Batch<'_>, out: &mut Vec<u8>) -> Result<()> {
        if let Some(e) = batch.error {
            return Err(e);
        }
        if batch.steps.len() > MAX_STEPS {
            return Err(GpuError::Shape(format!(
                "{} steps in one submission (at most {MAX_STEPS})",
                batch.steps.len()
            )));
        }
        let t0 = Instant::now();
        let device = gpu.device().clone();
        let queue = gpu.queue();
        queue.write_buffer(&self.params, 0, &batch.params);
        for &(off, data) in &batch.uploads {
            self.staging.clear();
            self.staging
                .extend(data.iter().flat_map(|v| v.to_le_bytes()));
            queue.write_buffer(&self.arena, off, &self.staging);
        }
        // With profiling, each timed step's two timestamps follow the reads.
        let timed = if gpu.profiling() {
            batch.steps.len().min(MAX_TIMED)
        } else {
            0
        };
        let stamps_at = batch.read_bytes.next_multiple_of(8);
        let total = (stamps_at + 16 * timed as u64).max(4);
        if self.readback.as_ref().is_none_or(|r| r.size() < total) {
            self.readback = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("layer readback"),
                size: total.next_multiple_of(256),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let readback = self.readback.clone().expect("made above");
        // The steps go in several submissions, so the device starts on the first layers
        // while the host records the rest.
        let mut steps = batch.steps.iter().enumerate().peekable();
        let query_set = (timed > 0).then(|| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("dispatch times"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * timed as u32,
            })
        });
        let mut encoder;
        loop {
            encoder =
                device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            match &query_set {
                // Timed: a pass per step, stamped at its start and end.
                Some(qs) => {
                    for (i, step) in steps.by_ref().take(STEPS_PER_SUBMIT) {
                        let timestamp_writes =
                            (i < timed).then(|| wgpu::ComputePassTimestampWrites {
                                query_set: qs,
                                beginning_of_pass_write_index: Some(2 * i as u32),
                                end_of_pass_write_index: Some(2 * i as u32 + 1),
                            });
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes,
                        });
                        self.record(gpu, &device, &mut pass, i, step)?;
                    }
                }
                None => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    for (i, step) in steps.by_ref().take(STEPS_PER_SUBMIT) {
                        self.record(gpu, &device, &mut pass, i, step)?;
                    }
                }
            }
            if steps.peek().is_none() {
                break;
            }
            queue.submit([encoder.finish()]);
        }
        let mut at = 0;
        for r in &batch.reads {
            let (src, off, bytes) = match *r {
                Read::Arena { off, bytes } => (&self.arena, off, bytes),
                Read::Input { off, bytes } => (&self.xin, off, bytes),
                Read::Logits { off, bytes } => (
                    self.logits
                        .as_ref()
                        .ok_or_else(|| GpuError::Shape("no logits buffer on the device".into()))?,
                    off,
                    bytes,
                ),
                Read::Cache {
                    layer,
                    values,
                    off,
                    bytes,
                } => (&self.kv[layer][values as usize], off, bytes),
            };
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(src, off, &readback, at, bytes);
            }
            at += bytes.next_multiple_of(4);
        }
        if let Some(qs) = &query_set {
            let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("dispatch times"),
                size: (16 * timed as u64).next_multiple_of(256),
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            encoder.resolve_query_set(qs, 0..2 * timed as u32, &resolve, 0);
            encoder.copy_buffer_to_buffer(&resolve, 0, &readback, stamps_at, 16 * timed as u64);
        }
        queue.submit([encoder.finish()]);
        let t1 = Instant::now();
        let slice = readback.slice(..total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu.run_error("waiting for the layers", e))?;
        rx.recv()
            .map_err(|e| gpu.run_error("reading the layers back", e))?
            .map_err(|e| gpu.run_error("reading the layers back", e))?;
        let t2 = Instant::now();
        if let Some(e) = gpu.take_uncaptured() {
            readback.unmap();
            return Err(gpu.run_error("running the layers", e));
        }
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| gpu.run_error("reading the layers back", e))?;
            out.clear();
            out.extend_from_slice(&view[..batch.read_bytes as usize]);
            let stamps = &view[stamps_at as usize..][..16 * timed];
            let ns_per_tick = f64::from(queue.get_timestamp_period());
            for (step, t) in batch.steps.iter().zip(stamps.chunks_exact(16)) {
                let tick = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
                let ticks = tick(&t[8..]).saturating_sub(tick(&t[..8]));
                gpu.add_profile(&step.name(), ticks as f64 * ns_per_tick * 1e-9);
            }
        }
        readback.unmap();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        gpu.count_call(secs(t0, t1), secs(t1, t2), t2.elapsed().as_secs_f64());
        Ok(())
    }
}
