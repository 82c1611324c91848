//! The GPU backend: layers placed on an adapter run their matmuls there, against weights
//! uploaded once at load ([`GpuWeights`]) in their GGUF block layout.
//!
//! The offloaded layers run whole on the device ([`LayerRunner`]: one submission per
//! batch, the device keeping its own copy of their cache, in any of the cache's types).
//! Otherwise (heads the device's attention does not take, `LOUPE_GPU_WHOLE_LAYERS=off`,
//! or while intermediate activations are being captured) only the matmuls run there
//! (Q/K/V together, gate and up together, the output and down projections, the output
//! projection) and norms, RoPE and attention stay on the CPU ([`Backend::attends`] is false), so each matmul's activations cross the bus
//! both ways.
//!
//! The activations go up as the CPU kernels see them: quantized to the format the CPU
//! pairs the weights with (Q8_0 or Q8_K blocks, f16 for F16 weights) and back to f32. The
//! GPU then computes the CPU's products up to the order of float sums, and a layer gives
//! the same logits wherever it runs (as llama.cpp's GPU backends quantize activations to
//! 8 bits for their integer dot products).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use loupe_gpu::{Gpu, GpuMatrix, MatmulJob};
use loupe_quant::GgmlType;

use super::backend::{AttentionInput, Backend, LayersJob};
use super::gpu_layers::{self, LayerRunner};
use super::kv_cache::{KvCache, KvTypes};
use super::weights::{Matrix, Tensor};
use super::Model;

/// How many layers go to the GPU (llama.cpp's `-ngl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuLayers {
    /// As many layers as the adapter's memory holds, the last first, then the output
    /// (on a hardware adapter; the application opens none otherwise).
    Auto,
    /// The last N layers; more than the model has puts the output there too.
    Count(usize),
}

impl FromStr for GpuLayers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(GpuLayers::Auto),
            "all" => Ok(GpuLayers::Count(usize::MAX)),
            n => n.parse().map(GpuLayers::Count).map_err(|_| {
                format!("--gpu-layers takes a number of layers, all or auto, not {n:?}")
            }),
        }
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => write!(f, "auto"),
            GpuLayers::Count(usize::MAX) => write!(f, "all"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// What `--gpu-layers auto` leaves room for beside the weights: the whole-layer buffers of
/// one context (the offloaded layers' KV cache for `n_ctx` positions, the activations of
/// `max_batch` tokens), so that the layers placed also run whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    pub n_ctx: usize,
    pub max_batch: usize,
    pub kv: KvTypes,
}

/// The weights of the offloaded layers (and the output projection when it is offloaded)
/// on one adapter, keyed by where their rows lie in the model's map. Matrices that take
/// the same input and have one type share a device matrix (see [`stacks`]), so one
/// dispatch computes them all.
pub struct GpuWeights {
    gpu: Gpu,
    /// The device matrices, keyed by their first file matrix.
    matrices: HashMap<usize, Stack>,
    /// Every file matrix on the device: the key of the stack that holds it.
    stack_of: HashMap<usize, usize>,
    /// The last `layers` layers are on the GPU.
    pub layers: usize,
    /// Whether the output projection is.
    pub output: bool,
}

/// A device matrix and the file matrices stacked in it, in order.
struct Stack {
    matrix: GpuMatrix,
    members: Vec<usize>,
}

/// Where a matrix's rows lie in the model's map: what the device's matrices are keyed by.
fn key(m: &Matrix<'_>) -> usize {
    m.data.as_ptr() as usize
}

/// A layer's matrices (name, tensor) in upload order, in the stacks they are uploaded as:
/// Q, K and V, and gate and up, each take one input, so neighbours among them of one type
/// go up as one device matrix; with `stack` false (`LOUPE_GPU_STACK=off`), each alone.
fn stacks<'t>(
    layer: usize,
    lw: &'t super::weights::LayerWeights,
    stack: bool,
) -> Vec<Vec<(String, &'t Tensor)>> {
    let named = |name: &str, t: &'t Tensor| (format!("blk.{layer}.{name}"), t);
    let sets = [
        vec![
            named("attn_q", &lw.wq),
            named("attn_k", &lw.wk),
            named("attn_v", &lw.wv),
        ],
        vec![named("attn_output", &lw.wo)],
        vec![named("ffn_gate", &lw.w_gate), named("ffn_up", &lw.w_up)],
        vec![named("ffn_down", &lw.w_down)],
    ];
    let mut out: Vec<Vec<(String, &Tensor)>> = Vec::new();
    for set in sets {
        let mut run: Vec<(String, &Tensor)> = Vec::new();
        for (name, t) in set {
            if run
                .last()
                .is_some_and(|(_, last)| !stack || last.ty != t.ty)
            {
                out.push(std::mem::take(&mut run));
            }
            run.push((name, t));
        }
        out.push(run);
    }
    out
}

impl GpuWeights {
    /// Uploads the last `n_gpu` layers' matrices (and the output's, when `n_gpu` exceeds
    /// the layer count) to `gpu`, the last layer first; `progress(done, total)` counts
    /// bytes. With `fit`, running out of device memory ends the upload instead of failing
    /// it: the layers uploaded whole stay (a layer is all or nothing, and the output only
    /// follows every layer), which is `--gpu-layers auto`.
    pub fn upload(
        model: &Model,
        gpu: Gpu,
        n_gpu: usize,
        fit: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<GpuWeights> {
        let w = &model.weights;
        let n_layer = w.layers.len();
        let stack = !std::env::var("LOUPE_GPU_STACK").is_ok_and(|v| v == "off" || v == "0");
        // Groups in upload order: layers from the last down, then the output; each a list
        // of stacks.
        let mut groups: Vec<Vec<Vec<(String, &Tensor)>>> = Vec::new();
        for l in (n_layer - n_gpu.min(n_layer)..n_layer).rev() {
            groups.push(stacks(l, &w.layers[l], stack));
        }
        if n_gpu > n_layer {
            groups.push(vec![vec![("output".into(), &w.output)]]);
        }
        let all = || groups.iter().flatten().flatten();
        for (name, t) in all() {
            if !loupe_gpu::supported(t.ty) {
                bail!(
                    "tensor {name} is {}, which the GPU kernels do not read (offload fewer \
                     layers)",
                    t.ty
                );
            }
        }
        let total: u64 = all().map(|(_, t)| model.matrix(t).data.len() as u64).sum();
        let mut weights = GpuWeights {
            gpu,
            matrices: HashMap::new(),
            stack_of: HashMap::new(),
            layers: 0,
            output: false,
        };
        let mut done = 0;
        let mut whole_groups = 0;
        'groups: for group in &groups {
            let mut added = Vec::new();
            for stack in group {
                let ms: Vec<Matrix<'_>> = stack.iter().map(|(_, t)| model.matrix(t)).collect();
                if ms.iter().any(|m| weights.stack_of.contains_key(&key(m))) {
                    continue;
                }
                let rows: Vec<(usize, &[u8])> = ms.iter().map(|m| (m.rows, m.data)).collect();
                match weights.gpu.upload_stacked(ms[0].ty, ms[0].cols, &rows) {
                    Ok(g) => {
                        let members: Vec<usize> = ms.iter().map(key).collect();
                        for &k in &members {
                            weights.stack_of.insert(k, members[0]);
                        }
                        added.push(members[0]);
                        weights
                            .matrices
                            .insert(members[0], Stack { matrix: g, members });
                    }
                    Err(loupe_gpu::GpuError::OutOfMemory { .. }) if fit => {
                        // Free this group's part: a layer runs wholly on one device.
                        for k in added {
                            weights.remove(k);
                        }
                        break 'groups;
                    }
                    Err(e) => {
                        let names: Vec<&str> = stack.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(anyhow::Error::new(e).context(format!(
                            "uploading {} to {} (offload fewer layers)",
                            names.join(", "),
                            weights.gpu.summary().name
                        )));
                    }
                }
                done += ms.iter().map(|m| m.data.len() as u64).sum::<u64>();
                progress(done, total);
            }
            whole_groups += 1;
        }
        weights.layers = whole_groups.min(n_gpu.min(n_layer));
        weights.output = n_gpu > n_layer && whole_groups == groups.len();
        Ok(weights)
    }

    /// Drops the stack keyed `first` from the device.
    fn remove(&mut self, first: usize) {
        if let Some(s) = self.matrices.remove(&first) {
            for k in s.members {
                self.stack_of.remove(&k);
            }
        }
    }

    /// Fits the weights to `fit` (see [`Fit`]): while one context's whole-layer buffers
    /// run out of device memory beside them, gives back the output projection, then the
    /// lowest layer on the device, and tries again. Whether the layers can run whole at
    /// all (heads the device's attention does not take) is the context's to say; nothing
    /// is given back for that.
    pub(crate) fn fit(&mut self, model: &Model, fit: Fit) {
        if gpu_layers::unsupported(&model.config, fit.kv).is_some() {
            return;
        }
        while self.layers > 0 {
            let Err(e) = LayerRunner::new(model, self, fit.kv, fit.n_ctx, fit.max_batch) else {
                return;
            };
            let oom = e.chain().any(|c| {
                matches!(
                    c.downcast_ref(),
                    Some(loupe_gpu::GpuError::OutOfMemory { .. })
                )
            });
            if !oom {
                return;
            }
            let w = &model.weights;
            let given_back: Vec<&Tensor> = if self.output {
                self.output = false;
                vec![&w.output]
            } else {
                self.layers -= 1;
                let lw = &w.layers[w.layers.len() - self.layers - 1];
                vec![
                    &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down,
                ]
            };
            for t in given_back {
                if let Some(&first) = self.stack_of.get(&key(&model.matrix(t))) {
                    self.remove(first);
                }
            }
            // wgpu frees a dropped buffer's memory once the device is polled.
            self.gpu.wait_idle();
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Bytes the uploaded weights take on the device.
    pub fn device_bytes(&self) -> u64 {
        self.matrices
            .values()
            .map(|s| s.matrix.device_bytes())
            .sum()
    }

    /// The device matrix that holds `w`, and `w`'s place among the matrices stacked in it.
    pub(crate) fn get(&self, w: &Matrix<'_>) -> Result<(&GpuMatrix, usize)> {
        let stack = self
            .stack_of
            .get(&key(w))
            .and_then(|first| self.matrices.get(first))
            .ok_or_else(|| {
                anyhow!(
                    "a ({}, {}) {} matrix is not on the GPU",
                    w.rows,
                    w.cols,
                    w.ty
                )
            })?;
        let at = stack.members.iter().position(|&k| k == key(w));
        Ok((&stack.matrix, at.expect("every member is listed")))
    }
}

/// The backend of the layers on the GPU; one per context, all sharing the weights.
pub struct GpuBackend {
    weights: Arc<GpuWeights>,
    /// The whole-layer runner, when the layers can run whole (see the module comment).
    layers: Option<LayerRunner>,
    /// Why they run matmul by matmul instead, if they do.
    pub matmuls_only: Option<String>,
    /// One activation row in the CPU's partner format, and the activations decoded back.
    row_buf: Vec<u8>,
    x_seen: Vec<f32>,
    /// The products of stacked matrices, before they are split (see [`GpuBackend::run`]).
    stacked_out: Vec<Vec<f32>>,
}

impl GpuBackend {
    /// The backend of a context over `model` with a cache of `types` and `n_ctx`
    /// positions and batches of up to `max_batch` tokens. Its layers run whole on the
    /// device where they can; where not (the reason is kept in
    /// [`GpuBackend::matmuls_only`]), matmul by matmul.
    pub fn new(
        weights: Arc<GpuWeights>,
        model: &Model,
        types: KvTypes,
        n_ctx: usize,
        max_batch: usize,
    ) -> GpuBackend {
        let off = std::env::var("LOUPE_GPU_WHOLE_LAYERS").is_ok_and(|v| v == "off" || v == "0");
        let why_not = if off {
            Some("LOUPE_GPU_WHOLE_LAYERS=off".to_string())
        } else {
            gpu_layers::unsupported(&model.config, types)
        };
        let (layers, matmuls_only) = match why_not {
            Some(why) => (None, Some(why)),
            None => match LayerRunner::new(model, &weights, types, n_ctx, max_batch) {
                Ok(l) => (Some(l), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            },
        };
        GpuBackend {
            weights,
            layers,
            matmuls_only,
            row_buf: Vec::new(),
            x_seen: Vec::new(),
            stacked_out: Vec::new(),
        }
    }

    /// Runs `jobs` (all with the same number of columns) on `x` (b rows): one dispatch
    /// per device matrix they lie in (a stack's products go to a scratch buffer and are
    /// split from there), each group of matrices that the CPU pairs with the same
    /// activation format in one submission.
    fn run(&mut self, x: &[f32], b: usize, jobs: Vec<(Matrix<'_>, &mut [f32])>) -> Result<()> {
        let weights = Arc::clone(&self.weights);
        // Per device matrix: the activation format, and each job's place in it and output.
        type Call<'m, 'o> = (GgmlType, &'m GpuMatrix, Vec<(usize, &'o mut [f32])>);
        let mut calls: Vec<Call<'_, '_>> = Vec::new();
        for (w, out) in jobs {
            let (m, at) = weights.get(&w)?;
            match calls.iter_mut().find(|c| std::ptr::eq(c.1, m)) {
                Some(c) => c.2.push((at, out)),
                None => calls.push((partner(w.ty)?, m, vec![(at, out)])),
            }
        }
        while let Some((p, cols)) = calls.first().map(|c| (c.0, c.1.cols)) {
            self.as_the_cpu_sees(p, x, b, cols)?;
            let (mut now, later): (Vec<_>, Vec<_>) = calls.into_iter().partition(|c| c.0 == p);
            let alone = |m: &GpuMatrix| m.stacked.len() == 1;
            let mut scratch = std::mem::take(&mut self.stacked_out);
            scratch.resize_with(now.len(), Vec::new);
            for (c, s) in now.iter().zip(&mut scratch) {
                s.resize(if alone(c.1) { 0 } else { b * c.1.rows }, 0.0);
            }
            let mut batch: Vec<MatmulJob<'_>> = now
                .iter_mut()
                .zip(&mut scratch)
                .map(|(c, s)| MatmulJob {
                    w: c.1,
                    out: if alone(c.1) { &mut *c.2[0].1 } else { s },
                })
                .collect();
            weights.gpu.matmul(&self.x_seen, b, &mut batch)?;
            drop(batch);
            // A stack's products lie one matrix after another, (b, rows) each.
            for (c, s) in now.iter_mut().zip(&scratch).filter(|(c, _)| !alone(c.1)) {
                for (at, out) in &mut c.2 {
                    let start = b * c.1.stacked[..*at].iter().sum::<usize>();
                    let n = b * c.1.stacked[*at];
                    out[..n].copy_from_slice(&s[start..start + n]);
                }
            }
            self.stacked_out = scratch;
            calls = later;
        }
        Ok(())
    }

    /// `x` (b rows of `cols`) quantized to `p` and decoded back into `x_seen`: the values
    /// the CPU's dot products multiply the weights with.
    fn as_the_cpu_sees(&mut self, p: GgmlType, x: &[f32], b: usize, cols: usize) -> Result<()> {
        let n = b * cols;
        self.x_seen.resize(n, 0.0);
        if p == GgmlType::F32 {
            self.x_seen.copy_from_slice(&x[..n]);
            return Ok(());
        }
        let row_bytes = p
            .row_bytes(cols as u64)
            .ok_or_else(|| anyhow!("{p} rows of {cols}"))? as usize;
        self.row_buf.resize(row_bytes, 0);
        for (src, dst) in x[..n]
            .chunks_exact(cols)
            .zip(self.x_seen.chunks_exact_mut(cols))
        {
            loupe_quant::quantize_activation(p, src, &mut self.row_buf)?;
            loupe_quant::dequantize_row(p, &self.row_buf, dst)?;
        }
        Ok(())
    }
}

/// The format the CPU kernels quantize activations to for weights of `ty`.
fn partner(ty: GgmlType) -> Result<GgmlType> {
    loupe_quant::vec_dot_type(ty).ok_or_else(|| anyhow!("no activation format for {ty} weights"))
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn attends(&self) -> bool {
        false
    }

    fn runs_layers(&self, cache: &KvCache) -> bool {
        self.layers
            .as_ref()
            .is_some_and(|l| l.types() == cache.types)
    }

    fn layers(&mut self, job: LayersJob<'_>, cache: &mut KvCache) -> Result<()> {
        let weights = Arc::clone(&self.weights);
        let runner = self
            .layers
            .as_mut()
            .ok_or_else(|| anyhow!("whole layers do not run on this GPU backend"))?;
        runner.run(&weights, job, cache)
    }

    fn matmul(&mut self, w: Matrix<'_>, x: &[f32], b: usize, out: &mut [f32]) -> Result<()> {
        self.run(x, b, vec![(w, out)])
    }

    fn qkv(&mut self, w: [Matrix<'_>; 3], x: &[f32], b: usize, out: [&mut [f32]; 3]) -> Result<()> {
        let ([wq, wk, wv], [q, k, v]) = (w, out);
        self.run(x, b, vec![(wq, q), (wk, k), (wv, v)])
    }

    fn gated(
        &mut self,
        [gate, up]: [Matrix<'_>; 2],
        x: &[f32],
        b: usize,
        act: fn(f32) -> f32,
        out: &mut [f32],
        up_out: &mut [f32],
    ) -> Result<()> {
        let n = b * gate.rows;
        self.run(x, b, vec![(gate, &mut *out), (up, &mut *up_out)])?;
        for (g, &u) in out[..n].iter_mut().zip(&up_out[..n]) {
            *g = act(*g) * u;
        }
        Ok(())
    }

    fn attention(&mut self, _: AttentionInput<'_>, _: &mut KvCache, _: &mut [f32]) -> Result<()> {
        bail!("attention of GPU layers runs on the CPU backend")
    }
}
