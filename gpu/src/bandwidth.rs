//! The adapter's memory bandwidth, measured with a copy kernel: the ceiling a
//! memory-bound mat-vec (one token's matmuls) can reach, to express its speed against.

use std::time::Instant;

use crate::device::Gpu;
use crate::shaders::COPY;
use crate::{GpuError, Result};

const WORKGROUP: u64 = 256;
const MAX_GROUPS: u64 = 65535;

/// What [`Gpu::copy_bandwidth`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Bandwidth {
    /// Bytes read plus bytes written per second, best of the passes.
    pub bytes_per_s: f64,
    /// The buffer copied, bytes.
    pub buffer_bytes: u64,
}

impl Gpu {
    /// Copies a buffer of up to `max_bytes` (at most the binding limit) `passes` times
    /// and reports the best pass's read-plus-write rate.
    pub fn copy_bandwidth(&self, max_bytes: u64, passes: usize) -> Result<Bandwidth> {
        let device = self.device();
        let size = max_bytes.min(self.summary().max_binding_bytes) & !(16 * WORKGROUP - 1);
        if size == 0 {
            return Err(GpuError::Shape("no room for a copy buffer".into()));
        }
        let buffer = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (buffer("copy src"), buffer("copy dst"));
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("copy"),
            source: wgpu::ShaderSource::Wgsl(COPY.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("copy"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: src.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: dst.as_entire_binding(),
                },
            ],
        });
        let groups = (size / 16).div_ceil(WORKGROUP);
        let (gx, gy) = (groups.min(MAX_GROUPS), groups.div_ceil(MAX_GROUPS));
        let mut best = f64::INFINITY;
        // The first pass is a warm-up (pipeline creation, first touch of the memory).
        for pass in 0..=passes.max(1) {
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut cp = encoder.begin_compute_pass(&Default::default());
                cp.set_pipeline(&pipeline);
                cp.set_bind_group(0, &bind, &[]);
                cp.dispatch_workgroups(gx as u32, gy as u32, 1);
            }
            let t = Instant::now();
            self.queue().submit([encoder.finish()]);
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| GpuError::Run {
                    adapter: self.summary().name.clone(),
                    what: "the copy kernel",
                    reason: e.to_string(),
                })?;
            if pass > 0 {
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        Ok(Bandwidth {
            bytes_per_s: 2.0 * size as f64 / best,
            buffer_bytes: size,
        })
    }
}
