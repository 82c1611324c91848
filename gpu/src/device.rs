//! An opened adapter: weights uploaded once, matmuls run against them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use loupe_quant::GgmlType;

use crate::adapter::{self, AdapterSummary, GpuChoice};
use crate::memory::{parse_bytes, Charge, Ledger};
use crate::shaders::{self, shader_source, Reduction};
use crate::{GpuError, Result};

/// The most workgroups along one dispatch dimension every adapter accepts.
pub(crate) const MAX_GROUPS: u32 = 65535;
/// Weight bytes handed to the queue per write: bounds the driver's staging copies.
const UPLOAD_CHUNK: usize = 64 << 20;
/// Most matrices one [`GpuMatrix`] stacks (the kernels' `Params` have three outputs).
pub const MAX_STACKED: usize = 3;

/// `bindings.wgsl`'s `Params`, padded to a multiple of 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Params {
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) row_bytes: u32,
    pub(crate) b: u32,
    pub(crate) out_stride: u32,
    pub(crate) row0: u32,
    pub(crate) groups_x: u32,
    pub(crate) x_off: u32,
    /// Where each stacked matrix's rows go ([`Segments`]).
    pub(crate) seg: Segments,
}

/// The outputs of a matmul over a stacked matrix ([`GpuMatrix::stacked`]): the rows of
/// each of its (up to three) matrices go to their own output, (b, rows of that matrix),
/// with their own bias. A matrix of one writes all its rows as (b, rows) at `outs[0]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Segments {
    /// The rows where the second and third matrices start (the row count when absent).
    pub(crate) starts: [u32; 2],
    /// Each matrix's output, in f32s from the start of the output binding.
    pub(crate) outs: [u32; 3],
    /// Each matrix's bias in the bias binding (f32s), or `NONE`.
    pub(crate) biases: [u32; 3],
}

impl Default for Segments {
    fn default() -> Self {
        Segments {
            starts: [0; 2],
            outs: [0; 3],
            biases: [crate::resident::NONE; 3],
        }
    }
}

impl Segments {
    /// The outputs of `w` for `b` activation rows one after another from the binding's
    /// start (each matrix's (b, rows) whole), without biases.
    pub(crate) fn packed(w: &GpuMatrix, b: usize) -> Segments {
        let mut seg = Segments {
            starts: [w.rows as u32; 2],
            ..Segments::default()
        };
        let mut row = 0;
        for (i, &rows) in w.stacked.iter().enumerate() {
            if i > 0 {
                seg.starts[i - 1] = row as u32;
            }
            seg.outs[i] = (b * row) as u32;
            row += rows;
        }
        seg
    }
}

impl Params {
    pub(crate) fn bytes(&self) -> [u8; 64] {
        let s = &self.seg;
        let f = [
            self.rows,
            self.cols,
            self.row_bytes,
            self.b,
            self.out_stride,
            self.row0,
            self.groups_x,
            self.x_off,
            s.starts[0],
            s.starts[1],
            s.outs[0],
            s.outs[1],
            s.outs[2],
            s.biases[0],
            s.biases[1],
            s.biases[2],
        ];
        let mut b = [0u8; 64];
        for (i, v) in f.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// A weight matrix on the device: its rows in the file's block layout, in parts no larger
/// than the adapter's binding limit.
pub struct GpuMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub(crate) row_bytes: usize,
    pub(crate) parts: Vec<Part>,
    /// The row counts of the matrices stacked into this one, in order (one entry for a
    /// matrix uploaded alone): matrices that take the same input, up to three, which one
    /// dispatch then multiplies together ([`Gpu::upload_stacked`]).
    pub stacked: Vec<usize>,
    /// The parts' bytes, out of the device's budget until the matrix is dropped.
    _charge: Charge,
}

pub(crate) struct Part {
    pub(crate) row0: usize,
    pub(crate) rows: usize,
    pub(crate) buffer: wgpu::Buffer,
}

impl GpuMatrix {
    /// Bytes the matrix takes on the device.
    pub fn device_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.size()).sum()
    }
}

/// Choices made when an adapter is opened.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Sum rows with subgroup operations where the adapter has them (the fast path);
    /// false forces the shared-memory kernels every adapter runs.
    pub subgroups: bool,
    /// Let the one-token mat-vecs (with subgroups) and prompt matmuls of quantized weights
    /// in whole layers dot the packed int8 copy of their input with `dot4I8Packed`; false
    /// keeps them on the float kernels.
    pub int8: bool,
    /// Give the int8 one-token mat-vecs a lane per word of quants, or per run of four
    /// words for Q4_K, Q5_K and Q6_K (`dot_int8_words.wgsl`), rather than a lane per block
    /// (`dot_int8.wgsl`). `None`: on hardware adapters, whose
    /// memory serves a subgroup's load in one piece only when its lanes read neighbouring
    /// words; off on software drivers, whose lanes are a CPU core's vector lanes and for
    /// which decoding a block's scales per word is the larger cost (lavapipe's Q4_K
    /// mat-vec takes twice as long with it).
    pub int8_words: Option<bool>,
    /// Put all the subgroups of a mat-vec workgroup on one row ([`Reduction::SplitRow`])
    /// rather than a subgroup on each of its rows. `None`: on hardware adapters, where a
    /// subgroup per row leaves the device too few reads in flight on matrices of a few
    /// thousand rows (each subgroup waits for one read before the next); off on software
    /// drivers, where a workgroup's subgroups run one after another on a core anyway.
    pub split_rows: Option<bool>,
    /// Time every dispatch of the whole-layer submissions with timestamp queries (where
    /// the adapter has them): [`Gpu::take_profile`]. Each dispatch then runs in its own
    /// pass, so the run itself is slower.
    pub profile: bool,
    /// Most bytes loupe allocates on the device (weights and whole-layer buffers); `None`
    /// leaves the limit to the device, which fails the allocation that does not fit.
    pub memory_budget: Option<u64>,
    /// Most bytes one part of a weight matrix holds, below the adapter's binding limit
    /// (`None`: that limit): a small value splits matrices into parts as an adapter with
    /// a small binding limit would, which is how tests reach that path.
    pub part_bytes: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            subgroups: true,
            int8: true,
            int8_words: None,
            split_rows: None,
            profile: false,
            memory_budget: None,
            part_bytes: None,
        }
    }
}

impl GpuOptions {
    /// The defaults, with `LOUPE_GPU_SUBGROUPS=off` forcing the shared-memory kernels,
    /// `LOUPE_GPU_INT8=off` the float matmuls, `LOUPE_GPU_WORDS=on|off` the int8 mat-vecs
    /// with a lane per word or per block, `LOUPE_GPU_SPLIT=on|off` the mat-vecs with a
    /// workgroup or a subgroup per row, `LOUPE_GPU_PROFILE=1` timing each dispatch
    /// and `LOUPE_GPU_MEMORY=SIZE` the budget ([`parse_bytes`]: `6G`, `512MiB`); an error
    /// for a budget that is not a size.
    pub fn from_env() -> Result<GpuOptions> {
        let off = |name| std::env::var(name).is_ok_and(|v| v == "off" || v == "0");
        let on = |name| std::env::var(name).is_ok_and(|v| v == "on" || v == "1");
        // `on` or `off` where the variable says so, `None` (the adapter decides) otherwise.
        let switch = |name| match (on(name), off(name)) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        let profile = std::env::var("LOUPE_GPU_PROFILE").is_ok_and(|v| v == "1" || v == "on");
        let memory_budget = match std::env::var("LOUPE_GPU_MEMORY") {
            Ok(v) => Some(parse_bytes(&v).ok_or(GpuError::BadBudget(v))?),
            Err(_) => None,
        };
        Ok(GpuOptions {
            subgroups: !off("LOUPE_GPU_SUBGROUPS"),
            int8: !off("LOUPE_GPU_INT8"),
            int8_words: switch("LOUPE_GPU_WORDS"),
            split_rows: switch("LOUPE_GPU_SPLIT"),
            profile,
            memory_budget,
            part_bytes: None,
        })
    }
}

/// One matrix of a [`Gpu::matmul`] call and where its (b, rows) result goes (for a
/// stacked matrix, each of its matrices' (b, rows) one after another).
pub struct MatmulJob<'a> {
    pub w: &'a GpuMatrix,
    pub out: &'a mut [f32],
}

/// Where the time of [`Gpu::matmul`] calls went, summed since the device was opened:
/// what a bench needs to tell the submissions' cost from the kernels' and the CPU's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallStats {
    pub calls: u64,
    /// Converting the activations, writing them, encoding and submitting.
    pub prepare_s: f64,
    /// From the submission until the results could be read: the kernels, the copy to
    /// the readback buffer and the driver's round trip.
    pub wait_s: f64,
    /// Copying the results out of the mapped readback buffer.
    pub read_s: f64,
    /// With dispatches timed ([`Gpu::profiling`]): from the start of a submission's first
    /// timed dispatch to the end of its last, on the device's clock; 0 otherwise. What
    /// the dispatches' own times leave of it is the device between dispatches: issuing
    /// each after the one before, or waiting for the host to record more.
    pub span_s: f64,
}

impl CallStats {
    /// The calls made after `earlier` was taken.
    pub fn since(&self, earlier: &CallStats) -> CallStats {
        CallStats {
            calls: self.calls - earlier.calls,
            prepare_s: self.prepare_s - earlier.prepare_s,
            wait_s: self.wait_s - earlier.wait_s,
            read_s: self.read_s - earlier.read_s,
            span_s: self.span_s - earlier.span_s,
        }
    }

    pub fn total_s(&self) -> f64 {
        self.prepare_s + self.wait_s + self.read_s
    }
}

/// Buffers reused across calls, grown when a call needs more, and the bind groups made
/// over them (valid until one of them is replaced).
struct Scratch {
    /// Each dispatch's [`Params`] in a 256-byte slot, then the activations: one write
    /// per call.
    inputs: Option<wgpu::Buffer>,
    out: Option<wgpu::Buffer>,
    readback: Option<wgpu::Buffer>,
    binds: HashMap<BindKey, wgpu::BindGroup>,
    /// The bytes of `inputs` as the host builds them.
    staging: Vec<u8>,
}

/// What a dispatch's bind group depends on besides the scratch buffers: the weight part,
/// its parameter slot and its range of the results.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    part: wgpu::Buffer,
    slot: u64,
    out_off: u64,
    out_len: u64,
}

/// Bind groups kept at most; past this (prompts of many batch sizes) the cache restarts.
const MAX_BINDS: usize = 4096;
/// The alignment of a uniform binding's offset (WebGPU's largest allowed minimum).
pub(crate) const SLOT: u64 = 256;

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    reduction: Reduction,
    int8: bool,
    int8_words: bool,
    /// The last error no scope caught (wgpu's default handler would panic).
    uncaptured: Arc<Mutex<Option<String>>>,
    pipelines: Mutex<HashMap<(GgmlType, u32), wgpu::ComputePipeline>>,
    scratch: Mutex<Scratch>,
    stats: Mutex<CallStats>,
    /// Whether dispatches are timed ([`GpuOptions::profile`] on an adapter with
    /// timestamp queries), and the times so far by kernel.
    timestamps: bool,
    profile: Mutex<HashMap<String, KernelTime>>,
    /// What the weights and whole-layer buffers take, against the budget.
    ledger: Arc<Ledger>,
    /// Most bytes of one weight part ([`GpuOptions::part_bytes`]).
    part_bytes: u64,
}

/// The device time of one kind of dispatch (a kernel, or a matmul of one format and
/// batch width), summed over the dispatches timed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: u64,
    pub seconds: f64,
    /// The bytes of weights its dispatches read (matmuls; 0 for the other kernels).
    pub weight_bytes: f64,
}

impl KernelTime {
    /// The weights it read per second of its own time (bytes/s); `None` for a kernel
    /// that reads none.
    pub fn weight_rate(&self) -> Option<f64> {
        (self.weight_bytes > 0.0 && self.seconds > 0.0).then(|| self.weight_bytes / self.seconds)
    }
}

impl Gpu {
    /// The adapter `choice` picks, opened with [`GpuOptions::from_env`]; `Ok(None)` when
    /// none matches (or `Off`).
    pub fn open(choice: GpuChoice) -> Result<Option<Gpu>> {
        Gpu::open_with(choice, GpuOptions::from_env()?)
    }

    pub fn open_with(choice: GpuChoice, options: GpuOptions) -> Result<Option<Gpu>> {
        let instance = adapter::instance();
        let Some((adapter, summary)) = adapter::pick(&instance, choice) else {
            return Ok(None);
        };
        let subgroups = options.subgroups && summary.subgroups;
        let int8_words = options.int8_words.unwrap_or(summary.is_hardware());
        let reduction = if subgroups && options.split_rows.unwrap_or(summary.is_hardware()) {
            Reduction::SplitRow
        } else if subgroups {
            // Rows enough for the smallest subgroups the driver may pick to each take one.
            let min = adapter.get_info().subgroup_min_size.clamp(1, 64);
            Reduction::Subgroup { rows: 64 / min }
        } else {
            Reduction::Shared
        };
        let timestamps =
            options.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let limits = adapter.limits();
        let required_limits = wgpu::Limits {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("loupe"),
            required_features: {
                let mut f = wgpu::Features::empty();
                if subgroups {
                    f |= wgpu::Features::SUBGROUP;
                }
                if timestamps {
                    f |= wgpu::Features::TIMESTAMP_QUERY;
                }
                f
            },
            required_limits,
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: summary.name.clone(),
            reason: e.to_string(),
        })?;
        let uncaptured: Arc<Mutex<Option<String>>> = Arc::default();
        let slot = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }));
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("matmul"),
            entries: &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(4, true),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("matmul"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        Ok(Some(Gpu {
            device,
            queue,
            summary,
            layout,
            pipeline_layout,
            reduction,
            int8: options.int8,
            int8_words,
            uncaptured,
            pipelines: Mutex::new(HashMap::new()),
            scratch: Mutex::new(Scratch {
                inputs: None,
                out: None,
                readback: None,
                binds: HashMap::new(),
                staging: Vec::new(),
            }),
            stats: Mutex::new(CallStats::default()),
            timestamps,
            profile: Mutex::new(HashMap::new()),
            ledger: Ledger::new(options.memory_budget),
            part_bytes: options.part_bytes.unwrap_or(u64::MAX),
        }))
    }

    pub fn summary(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Bytes the weights and whole-layer buffers take on the device now.
    pub fn memory_used(&self) -> u64 {
        self.ledger.used()
    }

    /// Takes `bytes` out of the budget (an out-of-memory error past it) until the
    /// returned charge is dropped.
    pub(crate) fn charge(&self, bytes: u64) -> Result<Charge> {
        self.ledger.charge(bytes, &self.summary.name)
    }

    /// Waits until the device has finished its work and freed what was dropped.
    pub fn wait_idle(&self) {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// How the matmul kernels sum a row on this device.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// Whether whole layers' matmuls may read the packed int8 input ([`GpuOptions::int8`]).
    pub fn int8(&self) -> bool {
        self.int8
    }

    /// Whether the int8 mat-vecs take a lane per word ([`GpuOptions::int8_words`]).
    pub fn int8_words(&self) -> bool {
        self.int8_words
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Whether whole-layer dispatches are being timed ([`GpuOptions::profile`]).
    pub fn profiling(&self) -> bool {
        self.timestamps
    }

    /// The dispatch times gathered since the last call, the largest total first; empty
    /// unless [`Gpu::profiling`].
    pub fn take_profile(&self) -> Vec<KernelTime> {
        let mut p = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<KernelTime> = p.drain().map(|(_, t)| t).collect();
        all.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        all
    }

    pub(crate) fn add_profile(&self, kernel: &str, seconds: f64, weight_bytes: u64) {
        let mut p = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let t = p.entry(kernel.to_string()).or_insert_with(|| KernelTime {
            kernel: kernel.to_string(),
            ..Default::default()
        });
        t.dispatches += 1;
        t.seconds += seconds;
        t.weight_bytes += weight_bytes as f64;
    }

    /// Adds one submission's times to [`Gpu::call_stats`].
    pub(crate) fn count_call(&self, prepare_s: f64, wait_s: f64, read_s: f64, span_s: f64) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.calls += 1;
        stats.prepare_s += prepare_s;
        stats.wait_s += wait_s;
        stats.read_s += read_s;
        stats.span_s += span_s;
    }

    /// The last error no error scope caught, taken (the next call starts clean).
    pub(crate) fn take_uncaptured(&self) -> Option<String> {
        self.uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn run_error(&self, what: &'static str, reason: impl ToString) -> GpuError {
        GpuError::Run {
            adapter: self.summary.name.clone(),
            what,
            reason: reason.to_string(),
        }
    }

    /// Copies a (rows, cols) matrix of `ty`, `data` as the file stores it, to the device.
    pub fn upload(&self, ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<GpuMatrix> {
        self.upload_stacked(ty, cols, &[(rows, data)])
    }

    /// Copies up to three matrices of `ty` with `cols` columns ((rows, data as the file
    /// stores it) each) to the device as one, their rows one after another: a matmul over
    /// it is one dispatch that writes each matrix's product to its own output
    /// ([`GpuMatrix::stacked`]).
    pub fn upload_stacked(
        &self,
        ty: GgmlType,
        cols: usize,
        matrices: &[(usize, &[u8])],
    ) -> Result<GpuMatrix> {
        if !shaders::supported(ty) {
            return Err(GpuError::Unsupported { ty });
        }
        if matrices.is_empty() || matrices.len() > MAX_STACKED {
            return Err(GpuError::Shape(format!(
                "{} matrices stacked (1 to {MAX_STACKED})",
                matrices.len()
            )));
        }
        let row_bytes = ty
            .row_bytes(cols as u64)
            .filter(|_| cols.is_multiple_of(8))
            .ok_or_else(|| GpuError::Shape(format!("{ty} rows of {cols} elements")))?
            as usize;
        for &(rows, data) in matrices {
            if data.len() != rows * row_bytes {
                return Err(GpuError::Shape(format!(
                    "{rows} rows of {row_bytes} bytes need {} bytes, got {}",
                    rows * row_bytes,
                    data.len()
                )));
            }
        }
        let rows: usize = matrices.iter().map(|m| m.0).sum();
        // One spare word after the rows: the shader's unaligned reads may touch it.
        let limit = (self
            .summary
            .max_binding_bytes
            .min(self.summary.max_buffer_bytes)
            .min(self.part_bytes) as usize)
            .saturating_sub(8);
        let rows_per_part = (limit / row_bytes.max(1)).min(u32::MAX as usize / row_bytes.max(1));
        if rows_per_part == 0 {
            return Err(GpuError::Shape(format!(
                "a row of {row_bytes} bytes exceeds the adapter's binding limit"
            )));
        }
        // Errors come back through scopes, not wgpu's default handler (which panics): an
        // allocation the device cannot hold is an error the caller can act on.
        // Each part holds its rows and 4 bytes more (kernels read whole words), rounded.
        let size_of = |n: usize| (n as u64 * row_bytes as u64 + 4).next_multiple_of(4);
        let (whole, rest) = (rows / rows_per_part, rows % rows_per_part);
        let total = whole as u64 * size_of(rows_per_part) + (rest > 0) as u64 * size_of(rest);
        let charge = self.charge(total)?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = rows_per_part.min(rows - row0);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("weights"),
                size: size_of(n),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            // The part's rows, from whichever matrices hold them.
            let mut words = WordWriter::new(self, &buffer);
            let mut first = 0;
            for &(m_rows, data) in matrices {
                let (lo, hi) = (row0.max(first), (row0 + n).min(first + m_rows));
                if lo < hi {
                    words.push(&data[(lo - first) * row_bytes..(hi - first) * row_bytes]);
                }
                first += m_rows;
            }
            words.finish();
            parts.push(Part {
                row0,
                rows: n,
                buffer,
            });
            row0 += n;
        }
        self.queue.submit([]);
        if let Some(e) = pollster::block_on(invalid.pop()) {
            return Err(self.run_error("uploading weights", e));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::OutOfMemory {
                adapter: self.summary.name.clone(),
                bytes: (rows * row_bytes) as u64,
                reason: e.to_string(),
            });
        }
        Ok(GpuMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            parts,
            stacked: matrices.iter().map(|m| m.0).collect(),
            _charge: charge,
        })
    }

    fn pipeline(&self, ty: GgmlType, nc: u32) -> Result<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&(ty, nc)) {
            return Ok(p.clone());
        }
        let source = shader_source(ty, nc, self.reduction).ok_or(GpuError::Unsupported { ty })?;
        let pipeline = self.build_pipeline(ty.name(), &source, "main", &self.pipeline_layout)?;
        cache.insert((ty, nc), pipeline.clone());
        Ok(pipeline)
    }

    /// The compute pipeline of `source`'s `entry` over `layout`; a shader or layout the
    /// device rejects is an error here, not a panic in wgpu's default handler.
    pub(crate) fn build_pipeline(
        &self,
        label: &str,
        source: &str,
        entry: &str,
        layout: &wgpu::PipelineLayout,
    ) -> Result<wgpu::ComputePipeline> {
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(invalid.pop()) {
            return Err(self.run_error("building a kernel", e));
        }
        Ok(pipeline)
    }

    /// A buffer of at least `size` bytes in `slot`, replaced by a larger one when short.
    fn ensure(
        &self,
        slot: &mut Option<wgpu::Buffer>,
        size: u64,
        usage: wgpu::BufferUsages,
        label: &'static str,
    ) -> (wgpu::Buffer, bool) {
        if let Some(b) = slot.as_ref().filter(|b| b.size() >= size) {
            return (b.clone(), false);
        }
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.next_multiple_of(256).max(256),
            usage,
            mapped_at_creation: false,
        });
        *slot = Some(b.clone());
        (b, true)
    }

    /// The submissions' time so far, matmul calls and whole-layer runs alike
    /// ([`CallStats::since`] gives an interval's).
    pub fn call_stats(&self) -> CallStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// out_j (b, w_j.rows) = x (b, cols) · w_jᵀ for every job, in one submission; all
    /// matrices have `cols` columns.
    pub fn matmul(&self, x: &[f32], b: usize, jobs: &mut [MatmulJob<'_>]) -> Result<()> {
        let Some(first) = jobs.first() else {
            return Ok(());
        };
        let cols = first.w.cols;
        if b == 0 || x.len() < b * cols {
            return Err(GpuError::Shape(format!(
                "{b} activation rows of {cols} need {} values, got {}",
                b * cols,
                x.len()
            )));
        }
        for j in jobs.iter() {
            if j.w.cols != cols || j.out.len() < b * j.w.rows {
                return Err(GpuError::Shape(format!(
                    "a ({}, {}) matrix in a call over {cols} columns, output of {} for {b} rows",
                    j.w.rows,
                    j.w.cols,
                    j.out.len()
                )));
            }
        }
        let t0 = Instant::now();
        // The results lie one after another, each start 256-byte aligned for the copy.
        let mut offsets = Vec::with_capacity(jobs.len());
        let mut total = 0u64;
        for j in jobs.iter() {
            offsets.push(total);
            total += ((b * j.w.rows * 4) as u64).next_multiple_of(256);
        }
        let nc = shaders::batch_width(b);
        let rows_per_group = shaders::rows_per_group(nc, self.reduction);
        // Every dispatch: its pipeline, weight part, result range and workgroup grid.
        let mut dispatches = Vec::new();
        let mut params = Vec::new();
        for (j, &off) in jobs.iter().zip(&offsets) {
            let pipeline = self.pipeline(j.w.ty, nc)?;
            for part in &j.w.parts {
                let groups = (part.rows as u32).div_ceil(rows_per_group);
                let groups_x = groups.min(MAX_GROUPS);
                let groups_y = groups.div_ceil(groups_x);
                params.push(Params {
                    rows: part.rows as u32,
                    cols: cols as u32,
                    row_bytes: j.w.row_bytes as u32,
                    b: b as u32,
                    out_stride: j.w.rows as u32,
                    row0: part.row0 as u32,
                    groups_x,
                    x_off: 0, // set below, once the slots are counted
                    seg: Segments::packed(j.w, b),
                });
                let key = BindKey {
                    part: part.buffer.clone(),
                    slot: dispatches.len() as u64,
                    out_off: off,
                    out_len: (b * j.w.rows * 4) as u64,
                };
                dispatches.push((pipeline.clone(), key, groups_x, groups_y));
            }
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let scratch = &mut *scratch;
        let x_start = dispatches.len() as u64 * SLOT;
        let bytes = &mut scratch.staging;
        bytes.clear();
        bytes.resize(x_start as usize + b * cols * 4, 0);
        for (i, p) in params.iter_mut().enumerate() {
            p.x_off = (x_start / 4) as u32;
            let pb = p.bytes();
            bytes[i * SLOT as usize..][..pb.len()].copy_from_slice(&pb);
        }
        for (dst, v) in bytes[x_start as usize..]
            .chunks_exact_mut(4)
            .zip(&x[..b * cols])
        {
            dst.copy_from_slice(&v.to_le_bytes());
        }

        use wgpu::BufferUsages as U;
        let inputs_usage = U::UNIFORM | U::STORAGE | U::COPY_DST;
        let n_bytes = scratch.staging.len() as u64;
        let (inputs, new_inputs) =
            self.ensure(&mut scratch.inputs, n_bytes, inputs_usage, "inputs");
        let (out_buf, new_out) =
            self.ensure(&mut scratch.out, total, U::STORAGE | U::COPY_SRC, "results");
        let (readback, _) = self.ensure(
            &mut scratch.readback,
            total,
            U::MAP_READ | U::COPY_DST,
            "readback",
        );
        if new_inputs || new_out || scratch.binds.len() > MAX_BINDS {
            scratch.binds.clear();
        }
        self.queue.write_buffer(&inputs, 0, &scratch.staging);

        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            for (pipeline, key, groups_x, groups_y) in dispatches {
                let bind = scratch.binds.entry(key).or_insert_with_key(|k| {
                    self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &self.layout,
                        entries: &[
                            entry(0, k.part.as_entire_buffer_binding()),
                            entry(1, inputs.as_entire_buffer_binding()),
                            entry(
                                2,
                                wgpu::BufferBinding {
                                    buffer: &out_buf,
                                    offset: k.out_off,
                                    size: wgpu::BufferSize::new(k.out_len),
                                },
                            ),
                            entry(
                                3,
                                wgpu::BufferBinding {
                                    buffer: &inputs,
                                    offset: k.slot * SLOT,
                                    size: wgpu::BufferSize::new(SLOT),
                                },
                            ),
                            // No biases in these calls; the binding only has to exist.
                            entry(4, inputs.as_entire_buffer_binding()),
                        ],
                    })
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &*bind, &[]);
                pass.dispatch_workgroups(groups_x, groups_y, (b as u32).div_ceil(nc));
            }
        }
        encoder.copy_buffer_to_buffer(&out_buf, 0, &readback, 0, total);
        self.queue.submit([encoder.finish()]);
        let t1 = Instant::now();

        let slice = readback.slice(..total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.run_error("waiting for a matmul", e))?;
        rx.recv()
            .map_err(|e| self.run_error("reading a matmul back", e))?
            .map_err(|e| self.run_error("reading a matmul back", e))?;
        let t2 = Instant::now();
        let failed = self
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(e) = failed {
            readback.unmap();
            return Err(self.run_error("a matmul", e));
        }
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| self.run_error("reading a matmul back", e))?;
            for (j, &off) in jobs.iter_mut().zip(&offsets) {
                let n = b * j.w.rows;
                let src = &view[off as usize..off as usize + 4 * n];
                for (o, s) in j.out[..n].iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                }
            }
        }
        readback.unmap();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        self.count_call(secs(t0, t1), secs(t1, t2), t2.elapsed().as_secs_f64(), 0.0);
        Ok(())
    }
}

fn entry(binding: u32, b: wgpu::BufferBinding<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(b),
    }
}

/// Writes a buffer from its start, slice after slice, in whole words (the queue copies
/// nothing smaller): a word split between two slices is carried to the next one, and
/// the last partial word is zero-padded.
struct WordWriter<'g> {
    gpu: &'g Gpu,
    buffer: &'g wgpu::Buffer,
    /// Bytes written so far (a multiple of four).
    at: u64,
    carry: ([u8; 4], usize),
}

impl<'g> WordWriter<'g> {
    fn new(gpu: &'g Gpu, buffer: &'g wgpu::Buffer) -> WordWriter<'g> {
        WordWriter {
            gpu,
            buffer,
            at: 0,
            carry: ([0; 4], 0),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        let (word, held) = &mut self.carry;
        if *held > 0 {
            let take = (4 - *held).min(bytes.len());
            word[*held..*held + take].copy_from_slice(&bytes[..take]);
            *held += take;
            bytes = &bytes[take..];
            if *held < 4 {
                return;
            }
            self.gpu.queue.write_buffer(self.buffer, self.at, word);
            self.at += 4;
            *held = 0;
        }
        let whole = bytes.len() & !3;
        for chunk in bytes[..whole].chunks(UPLOAD_CHUNK) {
            self.gpu.queue.write_buffer(self.buffer, self.at, chunk);
            self.gpu.queue.submit([]);
            self.at += chunk.len() as u64;
        }
        let rest = &bytes[whole..];
        word[..rest.len()].copy_from_slice(rest);
        *held = rest.len();
    }

    fn finish(self) {
        let (mut word, held) = self.carry;
        if held > 0 {
            word[held..].fill(0);
            self.gpu.queue.write_buffer(self.buffer, self.at, &word);
        }
    }
}
