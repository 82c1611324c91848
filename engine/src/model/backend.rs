//! The backend seam: the operations of the forward pass that read weights or the KV cache,
//! and where each layer runs.
//!
//! [`forward`](super::forward::forward) does the cheap, per-row work itself (norms, RoPE,
//! biases, residuals) and hands every weight-bearing step to a [`Backend`]: the matmuls
//! (with the fused shapes a token uses, Q/K/V and gate/up) and one layer's attention with
//! its cache. [`Placement`] says which backend runs each layer and the output projection;
//! the CPU ([`super::cpu::CpuBackend`]) and the GPU ([`super::gpu::GpuBackend`]). A device
//! backend implements the same trait and is given layers by changing the placement, not
//! `forward`. A backend that keeps its own copy of the cache may also take a run of
//! consecutive layers whole ([`Backend::layers`]), so that the residual stream stays on
//! the device from the first of them to the last (and the logits too when the output is
//! there).

use std::ops::Range;

use anyhow::{bail, Result};

use super::config::Config;
use super::kv_cache::KvCache;
use super::weights::Matrix;
use super::Model;

/// One layer's attention, as the forward pass hands it over: the new tokens' queries
/// (n, q_dim), keys (n, kv_dim) and values (n, kv_dim_v) after RoPE, at positions
/// `pos..pos + n`; the cache holds `0..pos`.
pub struct AttentionInput<'a> {
    pub config: &'a Config,
    pub layer: usize,
    pub pos: usize,
    pub n: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Consecutive layers handed to one backend whole: the batch's residual stream `x` (n,
/// dim) goes in after the layer before `layers` and comes out after the last of them.
pub struct LayersJob<'a> {
    pub model: &'a Model,
    pub layers: Range<usize>,
    /// Position of the batch's first token (the cache holds `0..pos`).
    pub pos: usize,
    pub n: usize,
    pub x: &'a mut [f32],
    /// When `layers` ends the model and the output projection is on this backend too:
    /// the rows `from..n` go through the final norm and the output projection into the
    /// slice ((n - from), vocab), and `x` is left as it came in.
    pub logits: Option<(usize, &'a mut [f32])>,
}

/// What a device must do for the layers placed on it. Every method computes the same
/// values the CPU backend does, within the bounds the agreement tests state.
pub trait Backend: Send {
    /// A short name for messages ("cpu").
    fn name(&self) -> &'static str;

    /// Whether [`Backend::attention`] runs here; when not, the layer's attention runs on
    /// backend 0 (the CPU, which holds the cache).
    fn attends(&self) -> bool {
        true
    }

    /// Whether [`Backend::layers`] runs with this cache (a backend may handle only some
    /// cache types).
    fn runs_layers(&self, _cache: &KvCache) -> bool {
        false
    }

    /// Every step of `job.layers` (norms to residuals, attention with `cache`, whose
    /// positions `pos..pos + n` it stores as the CPU would), and the output when asked.
    fn layers(&mut self, _job: LayersJob<'_>, _cache: &mut KvCache) -> Result<()> {
        bail!("the {} backend does not run whole layers", self.name())
    }

    /// out (b, w.rows) = x (b, w.cols) · wᵀ.
    fn matmul(&mut self, w: Matrix<'_>, x: &[f32], b: usize, out: &mut [f32]) -> Result<()>;

    /// Q, K and V of the same `x` (b rows): `out[i]` gets (b, w[i].rows).
    fn qkv(&mut self, w: [Matrix<'_>; 3], x: &[f32], b: usize, out: [&mut [f32]; 3]) -> Result<()>;

    /// The gated feed-forward's first half: `out` = act(x · gateᵀ) ⊙ (x · upᵀ), (b, rows);
    /// `up_out` is working room of the same size.
    #[allow(clippy::too_many_arguments)]
    fn gated(
        &mut self,
        gate_up: [Matrix<'_>; 2],
        x: &[f32],
        b: usize,
        act: fn(f32) -> f32,
        out: &mut [f32],
        up_out: &mut [f32],
    ) -> Result<()>;

    /// Store the new tokens' keys and values in `cache` and attend over it: `out`
    /// (n, n_head * head_dim_v).
    fn attention(
        &mut self,
        a: AttentionInput<'_>,
        cache: &mut KvCache,
        out: &mut [f32],
    ) -> Result<()>;
}

/// Which backend (an index into the context's list) runs each layer and the output
/// projection. The token embedding is always read on the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// (n_layer) the backend of each layer.
    pub layers: Vec<usize>,
    /// The backend of the final norm's output projection.
    pub output: usize,
}

impl Placement {
    /// Everything on backend 0.
    pub fn single(n_layer: usize) -> Placement {
        Placement {
            layers: vec![0; n_layer],
            output: 0,
        }
    }

    /// llama.cpp's `-ngl` rule: the last `n_gpu` layers and then the output on backend
    /// `gpu`, the rest on backend 0.
    pub fn offload_last(n_layer: usize, n_gpu: usize, gpu: usize) -> Placement {
        let first = n_layer.saturating_sub(n_gpu);
        Placement {
            layers: (0..n_layer)
                .map(|l| if l >= first { gpu } else { 0 })
                .collect(),
            output: if n_gpu > n_layer { gpu } else { 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn offloading_takes_the_last_layers_then_the_output() {
        assert_eq!(Placement::offload_last(4, 0, 1), Placement::single(4));
        let p = Placement::offload_last(4, 2, 1);
        assert_eq!((p.layers, p.output), (vec![0, 0, 1, 1], 0));
        let p = Placement::offload_last(4, 5, 1);
        assert_eq!((p.layers, p.output), (vec![1; 4], 1));
    }
}
