//! Models: what a GGUF's metadata says about the network, its weights, and the forward
//! pass that turns token ids into next-token logits.

pub mod attention;
pub mod backend;
pub mod config;
pub mod cpu;
pub mod forward;
pub mod ftype;
#[cfg(feature = "gpu")]
pub mod gpu;
#[cfg(feature = "gpu")]
mod gpu_layers;
pub mod hadamard;
pub mod kv_cache;
pub mod matmul;
pub mod memory;
pub mod ops;
pub mod repack;
pub mod shift;
pub mod summary;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context as _, Result};

use config::Config;
use forward::{forward, Scratch};
use kv_cache::{KvCache, KvTypes};
use loupe_gguf::GgufFile;
use weights::Weights;

/// A model file, opened and checked: config and weight views over the memory map.
pub struct Model {
    pub file: Arc<GgufFile>,
    pub config: Config,
    pub weights: Weights,
    /// Weights being repacked for the kernels in the background, if any.
    repack: Option<repack::Repack>,
    /// The layers offloaded to a GPU ([`Model::offload`]), shared by every context.
    #[cfg(feature = "gpu")]
    gpu: Option<Arc<gpu::GpuWeights>>,
}

impl Model {
    /// Open a model; where the kernels run packed weights, repacking starts in the
    /// background ([`repack`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::open(path.as_ref(), true)
    }

    /// Open a model whose matmuls always read the map's rows (comparisons, tests).
    pub fn load_without_repacking(path: impl AsRef<Path>) -> Result<Model> {
        Model::open(path.as_ref(), false)
    }

    fn open(path: &Path, repack: bool) -> Result<Model> {
        let file = GgufFile::open(path)
            .with_context(|| format!("cannot read model {}", path.display()))?;
        let config = Config::from_file(&file).with_context(|| format!("{}", path.display()))?;
        let mut weights =
            Weights::load(&file, &config).with_context(|| format!("{}", path.display()))?;
        let file = Arc::new(file);
        let repack = if repack {
            weights.start_repack(&file, config.n_layer, true)?
        } else {
            None
        };
        Ok(Model {
            file,
            config,
            weights,
            repack,
            #[cfg(feature = "gpu")]
            gpu: None,
        })
    }

    #[cfg(feature = "gpu")]
    /// Puts the last `n_gpu` layers (and the output projection too when `n_gpu` exceeds
    /// the layer count, llama.cpp's `-ngl` rule) on `gpu`: their weights are uploaded now,
    /// `progress(done, total)` counting bytes, and contexts made afterwards run them there.
    /// With `fit`, as many of them as the device holds beside one context's whole-layer
    /// buffers of that size (see [`gpu::GpuWeights::upload`] and [`gpu::Fit`]).
    pub fn offload(
        &mut self,
        gpu: loupe_gpu::Gpu,
        n_gpu: usize,
        fit: Option<gpu::Fit>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        self.gpu = None;
        if n_gpu > 0 {
            let mut w = gpu::GpuWeights::upload(self, gpu, n_gpu, fit.is_some(), progress)?;
            if let Some(fit) = fit {
                w.fit(self, fit);
            }
            self.gpu = (w.layers > 0).then(|| Arc::new(w));
        }
        // A packed copy of a GPU's matrices would only cost memory and time: the repack
        // started at load stops (dropping it joins its thread) and, if the CPU keeps
        // some layers, starts again on theirs alone.
        if let Some(g) = self.gpu.as_deref() {
            let (cpu_layers, output_on_cpu) = (self.config.n_layer - g.layers, !g.output);
            if self.repack.take().is_some() {
                self.repack = self
                    .weights
                    .start_repack(&self.file, cpu_layers, output_on_cpu)?;
            }
        }
        Ok(())
    }

    /// The offloaded weights, if any.
    #[cfg(feature = "gpu")]
    pub fn gpu(&self) -> Option<&gpu::GpuWeights> {
        self.gpu.as_deref()
    }

    /// Where the layers run when some are on a GPU, as the chat's stats line and
    /// compare's rows say it ("GPU 24/24 + output", "GPU 4/24"); `None` on the CPU alone.
    pub fn gpu_placement(&self) -> Option<String> {
        #[cfg(feature = "gpu")]
        if let Some(g) = self.gpu() {
            let output = if g.output { " + output" } else { "" };
            return Some(format!("GPU {}/{}{output}", g.layers, self.config.n_layer));
        }
        None
    }

    /// Check that `file` is a model loupe can run, its configuration and tensors in
    /// agreement, as [`Model::load`] does, without starting anything: for the commands
    /// that read a model without running it (`inspect`, `quantize`).
    pub fn check(file: &GgufFile) -> Result<Config> {
        let config = Config::from_file(file)?;
        Weights::load(file, &config)?;
        Ok(config)
    }

    /// Wait for the background repack of the weights, if one runs (benchmarks time the
    /// model as it runs once loaded). Returns whether packed weights are in use.
    pub fn wait_repacked(&self) -> bool {
        self.repack.as_ref().is_some_and(|r| {
            r.wait();
            r.is_ready()
        })
    }

    /// A weight of this model as the kernels read it, borrowed from the model's map.
    pub fn matrix<'a>(&'a self, t: &'a weights::Tensor) -> weights::Matrix<'a> {
        t.view(&self.file)
    }

    /// Bytes of the weights the background repack covers (the matrices the CPU runs in
    /// a packed layout); 0 when nothing is repacked.
    pub fn repack_bytes(&self) -> u64 {
        self.repack.as_ref().map_or(0, |r| r.bytes())
    }

    /// Why the background repack gave up, if it did (see [`repack::Repack::failure`]).
    pub fn repack_failure(&self) -> Option<&str> {
        self.repack.as_ref().and_then(|r| r.failure())
    }

    /// The first 1-D F32 tensor (a norm's weights, a bias) holding a NaN or infinite value,
    /// by name: where NaN logits most likely came from ([`non_finite_vector`]).
    pub fn non_finite_vector(&self) -> Option<&str> {
        non_finite_vector(&self.file)
    }

    /// The context length used when none is asked for: the model's own, at most 4096.
    pub fn default_ctx(&self) -> usize {
        self.config.n_ctx_train.clamp(1, 4096)
    }
}

/// The first 1-D F32 tensor of `file` (a norm's weights, a bias) holding a NaN or
/// infinite value, by name. Reads every such vector: small, but for the error path and
/// `inspect`, not the token path.
pub fn non_finite_vector(file: &GgufFile) -> Option<&str> {
    file.tensors()
        .iter()
        .filter(|t| t.ty == loupe_quant::GgmlType::F32 && t.dims.len() == 1)
        .find(|t| {
            file.tensor_data(t)
                .chunks_exact(4)
                .any(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
        })
        .map(|t| t.name.as_str())
}

/// How to run a model: context length, KV cache type, threads, batch size.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    pub n_ctx: usize,
    pub kv_type: KvTypes,
    pub threads: usize,
    /// Most tokens evaluated in one forward call; longer inputs go in several.
    pub batch: usize,
}

/// A pool of `threads` compute threads, as every context evaluates on.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("loupe-{i}"))
        .build()
        .context("cannot start the thread pool")
}

/// Physical cores (compute-bound kernels gain nothing from hyper-threads).
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}

/// One sequence being evaluated: the KV cache, run buffers and thread pool for a model.
pub struct Context<'m> {
    pub model: &'m Model,
    cache: KvCache,
    scratch: Scratch,
    pool: Arc<rayon::ThreadPool>,
    n_past: usize,
    /// Rows of logits the last evaluation left in the scratch (0 after a truncation).
    logits_rows: usize,
    /// Why the offloaded layers run matmul by matmul rather than whole, if they do.
    gpu_note: Option<String>,
}

/// Which logits an evaluation returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's from this index of the input on (perplexity); the input must then
    /// fit in one batch.
    From(usize),
}

impl<'m> Context<'m> {
    pub fn new(model: &'m Model, o: RunOptions) -> Result<Context<'m>> {
        ensure!(o.threads > 0, "--threads must be at least 1");
        Context::with_pool(model, o, Arc::new(thread_pool(o.threads)?))
    }

    /// A context that evaluates on `pool` (`o.threads` wide), which other contexts may
    /// share: a server's slots take turns on the cores, and one pool keeps its threads
    /// warm from one slot's token to the next.
    pub fn with_pool(
        model: &'m Model,
        o: RunOptions,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Context<'m>> {
        let c = &model.config;
        ensure!(o.n_ctx > 0, "--ctx must be at least 1");
        ensure!(o.threads > 0, "--threads must be at least 1");
        // The scratch holds one set of buffers per pool thread.
        ensure!(
            pool.current_num_threads() == o.threads,
            "the thread pool has {} threads, and the context was asked for {}",
            pool.current_num_threads(),
            o.threads
        );
        o.kv_type.check(c)?;
        // Before a byte is allocated: the buffers below must fit in the memory available.
        memory::check(model, &o)?;
        let batch = o.batch.clamp(1, o.n_ctx);
        #[allow(unused_mut)] // without the gpu feature nothing is added
        let mut scratch = Scratch::new(c, o.n_ctx, batch, o.threads);
        #[allow(unused_mut)]
        let mut gpu_note = None;
        #[cfg(feature = "gpu")]
        if let Some(g) = &model.gpu {
            let n_gpu = if g.output { c.n_layer + 1 } else { g.layers };
            let backend = gpu::GpuBackend::new(g.clone(), model, o.kv_type, o.n_ctx, batch);
            gpu_note = backend.matmuls_only.clone();
            scratch.add_backend(
                Box::new(backend),
                backend::Placement::offload_last(c.n_layer, n_gpu, 1),
            );
        }
        Ok(Context {
            model,
            cache: KvCache::new(o.kv_type, c, o.n_ctx)?,
            scratch,
            pool,
            n_past: 0,
            logits_rows: 0,
            gpu_note,
        })
    }

    /// Why the offloaded layers run matmul by matmul (attention on the CPU) instead of
    /// whole on the device, when they do: heads the device's attention does not take,
    /// `LOUPE_GPU_WHOLE_LAYERS=off`, or a device that could not hold the layers' buffers.
    pub fn gpu_note(&self) -> Option<&str> {
        self.gpu_note.as_deref()
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }

    /// Tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Watch intermediate activations (see [`forward::Capture`]); `None` stops.
    pub fn set_capture(&mut self, capture: Option<forward::Capture>) {
        self.scratch.capture = capture;
    }

    /// Forget everything from position `n` on (the cache keeps the rest).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.n_past = n;
            self.logits_rows = 0;
        }
    }

    /// Drop cache positions `drop` and keep the ones after it without evaluating them
    /// again: they move down by `drop.len()` and their keys are re-rotated to their new
    /// positions (see [`shift`]). The last logits are forgotten (they were computed with
    /// the dropped tokens in view).
    pub fn shift(&mut self, drop: std::ops::Range<usize>) -> Result<()> {
        ensure!(
            drop.start <= drop.end && drop.end <= self.n_past,
            "cannot drop positions {drop:?}: the cache holds {}",
            self.n_past
        );
        if drop.is_empty() {
            return Ok(());
        }
        let (model, cache, n_past) = (self.model, &mut self.cache, self.n_past);
        self.pool
            .install(|| shift::shift(model, cache, drop.clone(), n_past));
        self.n_past -= drop.len();
        self.logits_rows = 0;
        Ok(())
    }

    /// The logits of the last token evaluated, while the cache still ends with it.
    pub fn last_logits(&self) -> Option<&[f32]> {
        let vocab = self.model.config.vocab_size;
        let rows = self.logits_rows;
        (rows > 0).then(|| &self.scratch.logits(rows * vocab)[(rows - 1) * vocab..])
    }

    /// The KV cache (read-only), e.g. to save positions `0..n_past()`.
    pub fn kv_cache(&self) -> &KvCache {
        &self.cache
    }

    /// Store a quantized cache's heads unturned (what llama.cpp's `LLAMA_ATTN_ROT_DISABLE`
    /// does), so that what the rotation buys can be measured; only on an empty cache.
    pub fn disable_kv_rotation(&mut self) -> Result<()> {
        ensure!(
            self.n_past == 0,
            "the cache already holds {} positions",
            self.n_past
        );
        self.cache.rotation = hadamard::KvRotation::default();
        Ok(())
    }

    /// Restore positions `0..n` of the cache from `KvCache::to_bytes(n)` and make them the
    /// cached tokens, as if they had just been evaluated.
    pub fn restore_cache(&mut self, n: usize, bytes: &[u8]) -> Result<()> {
        self.cache.load_bytes(n, bytes)?;
        self.n_past = n;
        self.logits_rows = 0;
        Ok(())
    }

    /// Make the cache hold `n` positions of made-up keys and values (seeded, in -1..1) as
    /// if `n` tokens had been evaluated, in a moment instead of the minutes a prompt of
    /// thousands of tokens takes a big model: for timing work at a cache depth (attention
    /// costs the same whatever the values). Not for text: nothing was evaluated.
    pub fn fill_synthetic(&mut self, n: usize, seed: u64) -> Result<()> {
        ensure!(
            n <= self.cache.n_ctx,
            "cannot fill {n} positions: the context holds {}",
            self.cache.n_ctx
        );
        let c = &self.model.config;
        let mut next = synthetic_kv_values(seed);
        let (mut k, mut v) = (vec![0f32; c.kv_dim()], vec![0f32; c.kv_dim_v()]);
        for layer in 0..c.n_layer {
            for pos in 0..n {
                k.iter_mut().for_each(|x| *x = next());
                v.iter_mut().for_each(|x| *x = next());
                self.cache.store(layer, pos, &k, &v);
            }
        }
        self.cache.mark_edited();
        self.n_past = n;
        self.logits_rows = 0;
        Ok(())
    }

    /// Evaluate `tokens` after what the cache holds and return the logits asked for,
    /// (rows, vocab).
    pub fn eval(&mut self, tokens: &[u32], want: Logits) -> Result<&[f32]> {
        ensure!(!tokens.is_empty(), "nothing to evaluate");
        ensure!(
            self.n_past + tokens.len() <= self.cache.n_ctx,
            "context is full: {} cached + {} new tokens > --ctx {}",
            self.n_past,
            tokens.len(),
            self.cache.n_ctx
        );
        let m = self.model;
        let batch = self.scratch.max_batch;
        if let Logits::From(i) = want {
            ensure!(
                tokens.len() <= batch,
                "{} tokens with all logits exceed the batch of {batch}",
                tokens.len()
            );
            ensure!(
                i < tokens.len(),
                "logits from {i} past {} tokens",
                tokens.len()
            );
        }
        self.logits_rows = 0;
        let (cache, scratch, pool) = (&mut self.cache, &mut self.scratch, &self.pool);
        let mut pos = self.n_past;
        let last = (tokens.len() - 1) / batch;
        for (ci, chunk) in tokens.chunks(batch).enumerate() {
            let from = match want {
                _ if ci < last => chunk.len(),
                Logits::Last => chunk.len() - 1,
                Logits::From(i) => i,
            };
            pool.install(|| forward(m, cache, scratch, chunk, pos, from))?;
            pos += chunk.len();
        }
        self.n_past = pos;
        let rows = match want {
            Logits::Last => 1,
            Logits::From(i) => tokens.len() - i,
        };
        self.logits_rows = rows;
        Ok(self.scratch.logits(rows * m.config.vocab_size))
    }
}

/// The made-up cache values of [`Context::fill_synthetic`], in -1..1 (xorshift64 from
/// `seed`), drawn in its order: for each layer, for each position, the key row, then the
/// value row. The peer fills llama.cpp's cache from the same sequence, so both engines time
/// attention over the same numbers.
pub fn synthetic_kv_values(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}
