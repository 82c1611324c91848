//! The device side: the arena, matmul input, constants, caches and logits buffers, the
//! kernels' pipelines and bind groups, and running a recorded [`Batch`].

use std::collections::HashMap;
use std::time::Instant;

use loupe_quant::GgmlType;

use super::{
    Batch, Binds, Kernel, Read, Step, Target, WorkspaceSpec, MAX_BINDS, MAX_STEPS, MAX_TIMED,
    STEPS_PER_SUBMIT,
};
use crate::device::SLOT;
use crate::memory::Charge;
use crate::shaders::{self, Reduction};
use crate::{Gpu, GpuError, Result};

/// Device buffers and pipelines for running whole layers (see the module comment).
pub struct Workspace {
    arena: wgpu::Buffer,
    xin: wgpu::Buffer,
    /// The packed int8 copy of `xin` where its roundings are 8-bit (nine words per 32
    /// elements: see `put_input` in `ops.wgsl`).
    xq: wgpu::Buffer,
    logits: Option<wgpu::Buffer>,
    consts: wgpu::Buffer,
    kv: Vec<[wgpu::Buffer; 2]>,
    params: wgpu::Buffer,
    readback: Option<wgpu::Buffer>,
    op_layout: wgpu::BindGroupLayout,
    mm_layout: wgpu::BindGroupLayout,
    mm_pipeline_layout: wgpu::PipelineLayout,
    op_pipeline_layout: wgpu::PipelineLayout,
    /// The op kernels by kernel and cache formats (0 for the kernels without a cache).
    ops: HashMap<(Kernel, u32), wgpu::ComputePipeline>,
    /// The matmul kernels by format, width and whether they read the packed input.
    matmuls: HashMap<(GgmlType, u32, bool), wgpu::ComputePipeline>,
    op_binds: HashMap<Binds, wgpu::BindGroup>,
    mm_binds: HashMap<(wgpu::Buffer, Target, u64, bool), wgpu::BindGroup>,
    /// Bytes of the uploads as the queue takes them.
    staging: Vec<u8>,
    reduction: Reduction,
    /// Whether matmuls may read `xq` ([`Gpu::int8`]).
    int8: bool,
    /// Matmul dispatches recorded on the int8 kernels so far.
    int8_dispatches: u64,
    /// The buffers' bytes, out of the device's budget until the workspace is dropped.
    _charge: Charge,
}

/// A bind group layout of buffers in binding order, the last (the parameters) bound at
/// a dynamic offset.
fn bind_layout(
    device: &wgpu::Device,
    label: &str,
    types: &[wgpu::BufferBindingType],
) -> wgpu::BindGroupLayout {
    let entries: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, &ty)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: ty == wgpu::BufferBindingType::Uniform,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// A cache buffer of `bytes`, with a spare word: the kernel reads blocks a word at a time
/// at any byte offset, so the last block's read may reach past its end.
fn kv_buffer_bytes(bytes: u64) -> u64 {
    (bytes + 4).next_multiple_of(256)
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
        // The big buffers (arena, matmul input, logits, constants, KV cache) are charged
        // against the device's budget before any is made.
        let logits_bytes = (spec.logits as u64 * 4).next_multiple_of(256);
        let kv_bytes: u64 = spec
            .kv
            .iter()
            .flat_map(|&(k, v)| [k, v])
            .map(kv_buffer_bytes)
            .sum();
        // Nine words per 32 elements of the input (whole blocks: rows are multiples of 32
        // wherever the rounding is 8-bit).
        let packed_words = spec.xin.div_ceil(32) * 9;
        let charge = gpu.charge(
            floats(spec.arena, "activation arena")?
                + floats(spec.xin, "matmul input")?
                + floats(packed_words, "packed matmul input")?
                + (spec.logits > 0) as u64 * logits_bytes
                + floats(spec.consts.len(), "constants")?
                + kv_bytes,
        )?;
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
        let xq = buffer(
            "packed matmul input",
            floats(packed_words, "packed matmul input")?,
            rw,
        );
        let logits = (spec.logits > 0).then(|| buffer("logits", logits_bytes, rw));
        let consts = buffer("constants", floats(spec.consts.len(), "constants")?, rw);
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
                buffer("keys", kv_buffer_bytes(k), rw),
                buffer("values", kv_buffer_bytes(v), rw),
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
                    + xq.size()
                    + kv.iter().flatten().map(|b| b.size()).sum::<u64>(),
                reason: e.to_string(),
            });
        }

        use wgpu::BufferBindingType as T;
        let (rw, ro) = (
            T::Storage { read_only: false },
            T::Storage { read_only: true },
        );
        // Every op binds the arena, two buffers it may write, the constants and its
        // parameters; a matmul its weights, input, output and parameters.
        let op_layout = bind_layout(device, "layer ops", &[rw, rw, rw, ro, T::Uniform]);
        let mm_layout = bind_layout(device, "layer matmuls", &[ro, ro, rw, T::Uniform, ro]);
        let pipeline_layout = |l: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(l)],
                immediate_size: 0,
            })
        };
        let op_pipeline_layout = pipeline_layout(&op_layout);
        let mm_pipeline_layout = pipeline_layout(&mm_layout);
        // Every kernel now, the attention kernels of an f16 cache among them; those of other
        // cache formats when a batch first uses them.
        let mut ops = HashMap::new();
        for k in Kernel::ALL {
            let entry = k.entry().0;
            let pipeline = gpu.build_pipeline(entry, &k.source(0), entry, &op_pipeline_layout)?;
            ops.insert((k, 0), pipeline);
        }
        Ok(Workspace {
            arena,
            xin,
            xq,
            logits,
            consts,
            kv,
            params,
            readback: None,
            op_layout,
            op_pipeline_layout,
            mm_layout,
            mm_pipeline_layout,
            ops,
            matmuls: HashMap::new(),
            op_binds: HashMap::new(),
            mm_binds: HashMap::new(),
            staging: Vec::new(),
            reduction: gpu.reduction(),
            int8: gpu.int8(),
            int8_dispatches: 0,
            _charge: charge,
        })
    }

    /// How the mat-vec kernels sum a row on this device (for [`Batch::matmul`]).
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// Matmul dispatches that ran on the int8 kernels (over the packed input) since the
    /// workspace was made.
    pub fn int8_dispatches(&self) -> u64 {
        self.int8_dispatches
    }

    /// Writes `bytes` into cache `layer`'s keys (or values) at byte `off`: whole heads in
    /// the device's layout (see [`crate::cache_row_bytes`]), so a multiple of four at a
    /// multiple of four.
    pub fn write_cache(&mut self, gpu: &Gpu, layer: usize, values: bool, off: u64, bytes: &[u8]) {
        let b = &self.kv[layer][values as usize];
        gpu.queue().write_buffer(b, off, bytes);
    }

    fn op_pipeline(
        &mut self,
        gpu: &Gpu,
        kernel: Kernel,
        formats: u32,
    ) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.ops.get(&(kernel, formats)) {
            return Ok(p.clone());
        }
        let entry = kernel.entry().0;
        let source = kernel.source(formats);
        let pipeline = gpu.build_pipeline(entry, &source, entry, &self.op_pipeline_layout)?;
        self.ops.insert((kernel, formats), pipeline.clone());
        Ok(pipeline)
    }

    fn matmul_pipeline(
        &mut self,
        gpu: &Gpu,
        key: (GgmlType, u32, bool),
    ) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.matmuls.get(&key) {
            return Ok(p.clone());
        }
        let source = if key.2 {
            shaders::int8_source(key.0, key.1, gpu.reduction(), gpu.int8_words())
        } else {
            shaders::shader_source(key.0, key.1, gpu.reduction())
        }
        .ok_or(GpuError::Unsupported { ty: key.0 })?;
        let pipeline =
            gpu.build_pipeline(key.0.name(), &source, "main", &self.mm_pipeline_layout)?;
        self.matmuls.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn op_bind(&mut self, device: &wgpu::Device, binds: Binds) -> Result<wgpu::BindGroup> {
        if let Some(b) = self.op_binds.get(&binds) {
            return Ok(b.clone());
        }
        let (b1, b2) = match binds {
            Binds::Plain => (&self.xin, &self.xq),
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
        int8: bool,
    ) -> Result<wgpu::BindGroup> {
        let key = (part.clone(), target, len, int8);
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
                whole(1, if int8 { &self.xq } else { &self.xin }),
                range(2, out, off, len),
                range(3, &self.params, 0, SLOT),
                whole(4, &self.consts),
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
                formats,
                binds,
                groups,
            } => (
                self.op_pipeline(gpu, *kernel, *formats)?,
                self.op_bind(device, *binds)?,
                groups,
            ),
            Step::Matmul {
                part,
                pipeline,
                int8,
                target,
                out_len,
                groups,
                ..
            } => {
                let int8 = *int8 && self.int8;
                self.int8_dispatches += int8 as u64;
                (
                    self.matmul_pipeline(gpu, (pipeline.0, pipeline.1, int8))?,
                    self.mm_bind(device, &part.buffer, *target, *out_len, int8)?,
                    groups,
                )
            }
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
        let mut span_s = 0.0;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| gpu.run_error("reading the layers back", e))?;
            out.clear();
            out.extend_from_slice(&view[..batch.read_bytes as usize]);
            let stamps = &view[stamps_at as usize..][..16 * timed];
            let s_per_tick = f64::from(queue.get_timestamp_period()) * 1e-9;
            let tick = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
            let (mut first, mut last) = (u64::MAX, 0);
            for (step, t) in batch.steps.iter().zip(stamps.chunks_exact(16)) {
                let (start, end) = (tick(&t[..8]), tick(&t[8..]));
                gpu.add_profile(
                    &step.name(self.int8),
                    end.saturating_sub(start) as f64 * s_per_tick,
                    step.weight_bytes(),
                );
                first = first.min(start);
                last = last.max(end);
            }
            if timed > 0 {
                span_s = last.saturating_sub(first) as f64 * s_per_tick;
            }
        }
        readback.unmap();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        gpu.count_call(
            secs(t0, t1),
            secs(t1, t2),
            t2.elapsed().as_secs_f64(),
            span_s,
        );
        Ok(())
    }
}
