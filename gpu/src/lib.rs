//! loupe's GPU kernels: matmuls over weights kept on the device in their GGUF block layout,
//! written in WGSL and run through wgpu (Vulkan, Metal, DirectX 12).
//!
//! [`adapters`] lists what the machine has; [`Gpu::open`] picks one (hardware adapters by
//! default; software ones such as Mesa's lavapipe only when asked for, so a CPU-only user
//! never runs slower). [`Gpu::upload`] copies a weight matrix to the device once, split
//! into parts that fit the adapter's binding limit ([`Gpu::upload_stacked`] copies up to
//! three that take the same input as one, so one dispatch multiplies them all, each
//! product to its own output); [`Gpu::matmul`] multiplies a batch of
//! activation rows with one or several uploaded matrices in one submission.
//!
//! The float kernels dequantize each weight in the shader and accumulate in f32; whole
//! layers' matmuls over quantized weights dot the weights' integers with the activations'
//! packed int8 copy instead, as the CPU does. Both agree with `loupe-quant`'s CPU kernels
//! within the bounds the tests state, not bit for bit (the order of f32 additions differs).

mod adapter;
mod bandwidth;
mod device;
mod memory;
mod resident;
mod shaders;

pub use adapter::{adapters, quiet_mesa_device_select, AdapterSummary, GpuChoice};
pub use bandwidth::Bandwidth;
pub use device::{CallStats, Gpu, GpuMatrix, GpuOptions, KernelTime, MatmulJob};
pub use memory::parse_bytes;
pub use resident::{
    cache_row_bytes, op_sources, ActRounding, AttnRope, AttnShape, Batch, Glu, Join, NextNorm,
    RopePairs, Split, Target, Workspace, WorkspaceSpec,
};
pub use shaders::{
    all_sources, batch_width, int8_dot, int8_word_dot, shader_source, supported, Reduction,
    BATCH_WIDTHS, SHADER_TYPES, TILE_WIDTH,
};

use loupe_quant::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter matches {0}")]
    NoAdapter(String),
    #[error("GPU adapter {adapter}: could not open a device: {reason}")]
    Device { adapter: String, reason: String },
    #[error("GPU kernels do not handle {ty} weights")]
    Unsupported { ty: GgmlType },
    #[error("GPU adapter {adapter} is out of memory for {bytes} more bytes: {reason}")]
    OutOfMemory {
        adapter: String,
        bytes: u64,
        reason: String,
    },
    #[error("LOUPE_GPU_MEMORY={0:?} is not a size (bytes, or a number with K, M or G after it)")]
    BadBudget(String),
    #[error("GPU matmul: {0}")]
    Shape(String),
    #[error("{what} on the GPU ({adapter}): {reason}")]
    Run {
        adapter: String,
        what: &'static str,
        reason: String,
    },
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;
