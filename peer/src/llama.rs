//! A llama.cpp model and one context: tokenize, logits, greedy, perplexity.
//!
//! One [`Llama`] owns a `llama_model` (memory-mapped; on the CPU unless
//! [`ContextOptions::gpu_layers`] asks for a GPU, which needs the `vulkan` feature) and a
//! single-sequence `llama_context`; dropping it frees both. It holds raw pointers, so it is
//! neither `Send` nor `Sync`: llama.cpp contexts are not thread-safe.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

use anyhow::{bail, ensure, Context as _, Result};
use llama_cpp_sys_2 as sys;

use crate::kv_state::Layout;

/// Sizes of the context a [`Llama`] creates.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Context length in tokens (llama.cpp may round it up; see [`Llama::n_ctx`]).
    pub n_ctx: u32,
    /// Most tokens handed to one `llama_decode` call.
    pub n_batch: u32,
    /// Threads for both single-token and batch decoding.
    pub n_threads: i32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            n_ctx: 512,
            n_batch: 512,
            n_threads: default_threads(),
        }
    }
}

/// How the context computes attention and stores the KV cache, beyond [`Params`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextOptions {
    /// `Some(true)` flash attention, `Some(false)` the plain path, `None` llama.cpp's choice.
    pub flash_attn: Option<bool>,
    /// Element types of the cached keys and values (ggml type ids; llama.cpp's `-ctk` and
    /// `-ctv`); `None` keeps llama.cpp's default, f16. A quantized V cache needs flash
    /// attention.
    pub type_k: Option<sys::ggml_type>,
    pub type_v: Option<sys::ggml_type>,
    /// llama.cpp's `n_gpu_layers` (`-ngl`): the last N layers (N above the layer count
    /// takes the output too) on the first GPU llama.cpp lists, negative for all of them; 0,
    /// the default, keeps everything on the CPU. Other than 0 it needs a peer built with a
    /// GPU backend.
    pub gpu_layers: i32,
}

/// Whether this peer was built with a GPU backend (its `vulkan` feature). Not llama.cpp's
/// `llama_supports_gpu_offload`, which also says no when the backend found no device.
pub fn gpu_backend_built() -> bool {
    cfg!(feature = "vulkan")
}

/// Why llama.cpp cannot offload here, or `None` when it sees a GPU.
pub fn no_gpu_reason() -> Option<&'static str> {
    if !gpu_backend_built() {
        Some("this peer was built without a GPU backend (scripts/build-peer-vulkan.sh builds one)")
    } else if gpu_devices().is_empty() {
        Some("llama.cpp's GPU backend found no GPU (it takes a software driver such as lavapipe only when picked: GGML_VK_VISIBLE_DEVICES=0)")
    } else {
        None
    }
}

/// The GPUs llama.cpp's backends see, in their order, as "name: description (F of T MiB
/// free)"; empty in a peer built without a GPU backend. Offloading uses the first. `GGML_VK_VISIBLE_DEVICES` picks Vulkan devices by
/// index, which is how a software driver (lavapipe), skipped by default, is chosen.
pub fn gpu_devices() -> Vec<String> {
    crate::init();
    /// A device's name or description; its strings live as long as the process.
    fn text(p: *const std::ffi::c_char) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, and ggml's device strings are NUL-terminated statics.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
    // SAFETY: the registry is filled by llama_backend_init (in init).
    let count = unsafe { sys::ggml_backend_dev_count() };
    let mut found = Vec::new();
    for i in 0..count {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: every index below the count names a live, registered device; the memory
        // query writes the two counts it is given.
        let (kind, name, desc) = unsafe {
            let dev = sys::ggml_backend_dev_get(i);
            sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
            (
                sys::ggml_backend_dev_type(dev),
                sys::ggml_backend_dev_name(dev),
                sys::ggml_backend_dev_description(dev),
            )
        };
        if kind == sys::GGML_BACKEND_DEVICE_TYPE_GPU || kind == sys::GGML_BACKEND_DEVICE_TYPE_IGPU {
            found.push(format!(
                "{}: {} ({} of {} MiB free)",
                text(name),
                text(desc),
                free >> 20,
                total >> 20
            ));
        }
    }
    found
}

/// A KV cache type by llama.cpp's name (f16, f32, q8_0, q4_0: the ones loupe has).
pub fn kv_type(name: &str) -> Result<sys::ggml_type> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "f16" => sys::GGML_TYPE_F16,
        "f32" => sys::GGML_TYPE_F32,
        "q8_0" => sys::GGML_TYPE_Q8_0,
        "q4_0" => sys::GGML_TYPE_Q4_0,
        _ => bail!("KV cache type {name:?} is not supported (f16, f32, q8_0 or q4_0)"),
    })
}

/// The machine's hardware threads, like `std::thread::available_parallelism`.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(4)
}

/// Perplexity the way llama.cpp's `llama-perplexity` computes it (no stride): the tokens
/// are cut into chunks of `n_ctx`, each decoded on an empty cache with its first token
/// replaced by BOS when the vocabulary adds BOS, and only the second half of each chunk
/// is scored (every scored token has at least `n_ctx/2` tokens of context).
///
/// One chunk is decoded at a time, as `llama-perplexity -b <n_ctx>` does; with its default
/// batch of 2048 the tool packs 2048/n_ctx chunks into one batch as parallel sequences,
/// which can move the result in the last digits.
#[derive(Clone, Debug)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood) over all scored tokens.
    pub ppl: f64,
    /// The running estimate after each chunk, as the tool prints `[1]x,[2]y,...`.
    pub running: Vec<f64>,
    /// Each chunk's own perplexity.
    pub per_chunk: Vec<f64>,
    /// Tokens scored: chunks × (n_ctx − n_ctx/2 − 1).
    pub n_scored: usize,
}

/// A loaded model with one context.
pub struct Llama {
    model: NonNull<sys::llama_model>,
    ctx: NonNull<sys::llama_context>,
    vocab: *const sys::llama_vocab,
    n_vocab: usize,
    n_ctx: usize,
    n_batch: usize,
    batch: Batch,
}

impl Drop for Llama {
    fn drop(&mut self) {
        // SAFETY: both pointers came from llama.cpp's constructors, are freed exactly
        // once here, the context before the model it borrows.
        unsafe {
            sys::llama_free(self.ctx.as_ptr());
            sys::llama_model_free(self.model.as_ptr());
        }
    }
}

impl Llama {
    /// Loads a GGUF file on the CPU (mmap, no GPU layers) and creates a context.
    pub fn load(path: impl AsRef<Path>, params: Params) -> Result<Llama> {
        Self::load_with_attention(path, params, None)
    }

    /// Like [`Llama::load`], choosing llama.cpp's attention path: `Some(true)` flash
    /// attention, `Some(false)` the plain one (KQ, softmax, KQV), `None` llama.cpp's own
    /// choice (flash on the CPU). Comparing the two paths measures how far two correct
    /// roundings of the same model drift apart.
    pub fn load_with_attention(
        path: impl AsRef<Path>,
        params: Params,
        flash_attn: Option<bool>,
    ) -> Result<Llama> {
        let opts = ContextOptions {
            flash_attn,
            ..ContextOptions::default()
        };
        Self::load_with(path, params, opts)
    }

    /// Like [`Llama::load`], with the attention path and KV cache types of `opts`.
    pub fn load_with(
        path: impl AsRef<Path>,
        params: Params,
        opts: ContextOptions,
    ) -> Result<Llama> {
        let path = path.as_ref();
        crate::init();
        ensure!(
            path.is_file(),
            "model file {} does not exist",
            path.display()
        );
        ensure!(
            params.n_ctx > 0 && params.n_batch > 0 && params.n_threads > 0,
            "n_ctx, n_batch and n_threads must be positive (got {params:?})"
        );
        let c_path = CString::new(
            path.to_str()
                .with_context(|| format!("path {} is not UTF-8", path.display()))?,
        )?;

        if opts.gpu_layers != 0 {
            if let Some(why) = no_gpu_reason() {
                bail!("cannot put layers on a GPU: {why}");
            }
        }
        // SAFETY: returns a plain struct of defaults.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = opts.gpu_layers;
        // One GPU, the first llama.cpp lists (as loupe uses one adapter): llama-bench's
        // `-sm none`, so a machine with several GPUs does not split the layers over them.
        // With no layers offloaded, no GPU at all: llama.cpp would otherwise still send a
        // prompt's large matmuls to it.
        mp.split_mode = sys::LLAMA_SPLIT_MODE_NONE;
        mp.main_gpu = if opts.gpu_layers == 0 { -1 } else { 0 };
        mp.load_mode = sys::LLAMA_LOAD_MODE_MMAP;
        // SAFETY: c_path is a valid NUL-terminated string and mp a fully initialized
        // params struct; llama.cpp returns null on failure.
        let model = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mp) };
        let model = NonNull::new(model).with_context(|| {
            format!(
                "llama.cpp could not load {} (set PEER_VERBOSE=1 for its log)",
                path.display()
            )
        })?;

        // SAFETY: returns a plain struct of defaults.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = params.n_batch;
        cp.n_ubatch = params.n_batch.min(512);
        cp.n_seq_max = 1;
        cp.n_threads = params.n_threads;
        cp.n_threads_batch = params.n_threads;
        if let Some(t) = opts.type_k {
            cp.type_k = t;
        }
        if let Some(t) = opts.type_v {
            cp.type_v = t;
        }
        cp.flash_attn_type = match opts.flash_attn {
            None => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            Some(true) => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            Some(false) => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        // SAFETY: model is a live model; cp is fully initialized. Null on failure.
        let ctx = unsafe { sys::llama_init_from_model(model.as_ptr(), cp) };
        let Some(ctx) = NonNull::new(ctx) else {
            // SAFETY: the model is ours and nothing else refers to it.
            unsafe { sys::llama_model_free(model.as_ptr()) };
            bail!(
                "llama.cpp could not create a context for {} ({params:?})",
                path.display()
            );
        };

        // SAFETY: model is live; the vocab it returns lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(model.as_ptr()) };
        // SAFETY: vocab and ctx are live.
        let (n_vocab, n_ctx, n_batch) = unsafe {
            (
                sys::llama_vocab_n_tokens(vocab),
                sys::llama_n_ctx(ctx.as_ptr()),
                sys::llama_n_batch(ctx.as_ptr()),
            )
        };
        Ok(Llama {
            model,
            ctx,
            vocab,
            n_vocab: n_vocab.max(0) as usize,
            n_ctx: n_ctx as usize,
            n_batch: n_batch as usize,
            batch: Batch::default(),
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The context length llama.cpp actually allocated.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Whether the vocabulary asks for BOS at the start of a text.
    pub fn add_bos(&self) -> bool {
        // SAFETY: vocab is live as long as self.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab) }
    }

    pub fn bos(&self) -> i32 {
        // SAFETY: vocab is live as long as self.
        unsafe { sys::llama_vocab_bos(self.vocab) }
    }

    /// Whether `token` ends generation (EOS, EOT and the like).
    pub fn is_eog(&self, token: i32) -> bool {
        // SAFETY: vocab is live; llama.cpp checks membership in a set, any id is fine.
        unsafe { sys::llama_vocab_is_eog(self.vocab, token) }
    }

    /// llama.cpp's one-line description: "qwen2 0.5B Q4_K - Medium".
    pub fn desc(&self) -> String {
        let mut buf = vec![0u8; 256];
        // SAFETY: buf has buf.len() writable bytes; llama.cpp writes a NUL-terminated
        // string of at most that size (snprintf).
        let n = unsafe {
            sys::llama_model_desc(self.model.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        buf.truncate(n.clamp(0, 255) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Bytes of all weights.
    pub fn model_size(&self) -> u64 {
        // SAFETY: model is live.
        unsafe { sys::llama_model_size(self.model.as_ptr()) }
    }

    /// Number of weights.
    pub fn n_params(&self) -> u64 {
        // SAFETY: model is live.
        unsafe { sys::llama_model_n_params(self.model.as_ptr()) }
    }

    /// Token ids of `text`. `add_special` adds BOS/EOS as the vocabulary asks;
    /// `parse_special` turns text like `<|im_start|>` into its control token.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        let text_len = i32::try_from(text.len()).context("text too long for llama_tokenize")?;
        let mut tokens = vec![0i32; text.len() + 4];
        for _ in 0..2 {
            // SAFETY: text is valid for text_len bytes (no NUL needed, the length is
            // passed); tokens has room for tokens.len() ids.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr().cast(),
                    text_len,
                    tokens.as_mut_ptr(),
                    tokens.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                tokens.truncate(n as usize);
                return Ok(tokens);
            }
            if n == i32::MIN {
                bail!(
                    "llama_tokenize overflowed on a text of {} bytes",
                    text.len()
                );
            }
            // Too small: -n is the number needed.
            tokens.resize((-n) as usize, 0);
        }
        bail!("llama_tokenize kept asking for a larger buffer")
    }

    /// The bytes of one token (possibly part of a UTF-8 character). `special` renders
    /// control tokens as their text instead of nothing.
    pub fn token_to_piece(&self, token: i32, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 32];
        for _ in 0..2 {
            // SAFETY: buf has buf.len() writable bytes; llama.cpp writes at most that many
            // (no NUL) or returns minus the size it needs.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab,
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
        Vec::new()
    }

    /// The text of `tokens`, pieces concatenated (invalid UTF-8 replaced).
    pub fn detokenize(&self, tokens: &[i32], special: bool) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|&t| self.token_to_piece(t, special))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Empties the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: ctx is live; its memory object lives as long as the context.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx.as_ptr()), true) };
    }

    /// Forgets positions `n..` of the sequence, keeping `0..n` as they are.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        let p0 = i32::try_from(n).context("position too large")?;
        // SAFETY: ctx is live; its memory object lives as long as the context; -1 is
        // "to the end".
        let ok = unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.ctx.as_ptr()), 0, p0, -1)
        };
        ensure!(
            ok,
            "llama.cpp could not remove positions {n}.. from the KV cache"
        );
        Ok(())
    }

    /// Makes the cache hold positions `0..n` of made-up keys and values, the sequence
    /// loupe's `Context::fill_synthetic` stores for the same `seed`
    /// ([`loupe_engine::model::synthetic_kv_values`]), converted to the cache's types by
    /// ggml: for timing at a depth without evaluating `n` tokens. One position is decoded
    /// first so that llama.cpp writes a state whose layout [`Layout::of_one_cell`] learns;
    /// the state of `n` cells built from it is loaded back and checked.
    pub fn fill_synthetic(&mut self, n: usize, seed: u64) -> Result<()> {
        ensure!(
            n > 0 && n <= self.n_ctx,
            "cannot fill {n} positions: the context holds {}",
            self.n_ctx
        );
        self.clear();
        self.decode(&[self.bos().max(0)], 0, |_| false)?;
        self.synchronize();
        let ctx = self.ctx.as_ptr();
        // SAFETY: ctx is live; sequence 0 exists.
        let size = unsafe { sys::llama_state_seq_get_size(ctx, 0) };
        let mut one = vec![0u8; size];
        // SAFETY: `one` has room for `size` bytes, the size llama.cpp just reported.
        let written = unsafe { sys::llama_state_seq_get_data(ctx, one.as_mut_ptr(), size, 0) };
        ensure!(
            written == size,
            "llama.cpp wrote {written} of {size} state bytes"
        );
        // SAFETY: the model is live.
        let n_layer = unsafe { sys::llama_model_n_layer(self.model.as_ptr()) }.max(0) as usize;
        let layout = Layout::of_one_cell(&one, n_layer)
            .context("llama.cpp's sequence state has a layout the peer does not know")?;
        let mut widths = Vec::with_capacity(2 * n_layer);
        for rows in layout.keys.iter().chain(&layout.values) {
            let t = rows.ggml_type as sys::ggml_type;
            ensure!(
                [
                    sys::GGML_TYPE_F32,
                    sys::GGML_TYPE_F16,
                    sys::GGML_TYPE_Q8_0,
                    sys::GGML_TYPE_Q4_0
                ]
                .contains(&t),
                "KV cache type id {t} is not one the peer fills"
            );
            // SAFETY: plain lookups in ggml's type table for a known type.
            let (blck, bytes) =
                unsafe { (sys::ggml_blck_size(t) as usize, sys::ggml_type_size(t)) };
            ensure!(
                rows.row_bytes % bytes == 0,
                "a row of {} bytes is not whole blocks",
                rows.row_bytes
            );
            widths.push(rows.row_bytes / bytes * blck);
        }
        let mut next = loupe_engine::model::synthetic_kv_values(seed);
        let quantize = |t: i32, src: &[f32], width: usize, dst: &mut [u8]| {
            let rows = (src.len() / width) as i64;
            // SAFETY: `src` holds rows × width floats and `dst` rows × row_bytes bytes, the
            // size ggml writes for that type and width (checked above); no importance
            // matrix is needed by these four types.
            let wrote = unsafe {
                sys::ggml_quantize_chunk(
                    t as sys::ggml_type,
                    src.as_ptr(),
                    dst.as_mut_ptr().cast(),
                    0,
                    rows,
                    width as i64,
                    std::ptr::null(),
                )
            };
            assert_eq!(wrote, dst.len(), "ggml wrote a different number of bytes");
        };
        let state = layout.build(n, |layer, keys, values| {
            let (kw, vw) = (widths[layer], widths[n_layer + layer]);
            let (mut k, mut v) = (vec![0f32; n * kw], vec![0f32; n * vw]);
            for pos in 0..n {
                k[pos * kw..(pos + 1) * kw].fill_with(&mut next);
                v[pos * vw..(pos + 1) * vw].fill_with(&mut next);
            }
            quantize(layout.keys[layer].ggml_type, &k, kw, keys);
            quantize(layout.values[layer].ggml_type, &v, vw, values);
        });
        // SAFETY: ctx is live; `state` is `state.len()` readable bytes.
        let read = unsafe { sys::llama_state_seq_set_data(ctx, state.as_ptr(), state.len(), 0) };
        ensure!(
            read == state.len(),
            "llama.cpp took {read} of {} synthetic state bytes (set PEER_VERBOSE=1 for its log)",
            state.len()
        );
        // SAFETY: ctx is live; its memory object lives as long as the context.
        let last = unsafe { sys::llama_memory_seq_pos_max(sys::llama_get_memory(ctx), 0) };
        ensure!(
            last == n as i32 - 1,
            "after loading {n} synthetic positions the cache ends at position {last}"
        );
        Ok(())
    }

    /// Waits until the last decode has finished computing.
    pub fn synchronize(&mut self) {
        // SAFETY: ctx is live.
        unsafe { sys::llama_synchronize(self.ctx.as_ptr()) };
    }

    /// Decodes `tokens` at positions `pos0..`, asking for logits where `want(i)`.
    pub(crate) fn decode(
        &mut self,
        tokens: &[i32],
        pos0: usize,
        want: impl Fn(usize) -> bool,
    ) -> Result<()> {
        ensure!(!tokens.is_empty(), "nothing to decode");
        ensure!(
            tokens.len() <= self.n_batch,
            "{} tokens exceed the batch size {}",
            tokens.len(),
            self.n_batch
        );
        ensure!(
            pos0 + tokens.len() <= self.n_ctx,
            "positions {pos0}..{} exceed the context length {}",
            pos0 + tokens.len(),
            self.n_ctx
        );
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t < 0 || t as usize >= self.n_vocab)
        {
            bail!(
                "token id {bad} is outside the vocabulary (0..{})",
                self.n_vocab
            );
        }
        let raw = self.batch.fill(tokens, pos0, want);
        // SAFETY: ctx is live; `raw` points into self.batch's vectors, which stay alive
        // and unmoved during the call; llama_decode only reads the batch.
        let rc = unsafe { sys::llama_decode(self.ctx.as_ptr(), raw) };
        match rc {
            0 => Ok(()),
            1 => bail!("llama_decode: no room in the KV cache"),
            2 => bail!("llama_decode: aborted"),
            _ => bail!("llama_decode failed with code {rc} (set PEER_VERBOSE=1 for its log)"),
        }
    }

    /// Logits of output `i` of the last decode (its index in that batch).
    fn logits_ith(&mut self, i: usize) -> Result<&[f32]> {
        // SAFETY: ctx is live; llama.cpp returns null (and logs) for an index that had
        // no output, else a pointer to n_vocab floats owned by the context, valid until
        // the next decode (the borrow of self below ends before one can happen).
        let p = unsafe { sys::llama_get_logits_ith(self.ctx.as_ptr(), i as i32) };
        ensure!(!p.is_null(), "llama.cpp has no logits for batch index {i}");
        // SAFETY: non-null, n_vocab floats (above).
        Ok(unsafe { std::slice::from_raw_parts(p, self.n_vocab) })
    }

    /// Logits of every position of `tokens`, decoded from an empty cache in batches of
    /// n_batch. `result[i]` predicts token `i + 1`.
    pub fn logits(&mut self, tokens: &[i32]) -> Result<Vec<Vec<f32>>> {
        ensure!(!tokens.is_empty(), "no tokens");
        ensure!(
            tokens.len() <= self.n_ctx,
            "{} tokens exceed the context length {}",
            tokens.len(),
            self.n_ctx
        );
        self.clear();
        self.logits_after(tokens, 0)
    }

    /// Logits of every position of `tokens`, decoded at positions `pos0..` after what the
    /// cache holds (`0..pos0`), in batches of n_batch.
    pub fn logits_after(&mut self, tokens: &[i32], pos0: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(tokens.len());
        let n_batch = self.n_batch;
        for (b, chunk) in tokens.chunks(n_batch).enumerate() {
            self.decode(chunk, pos0 + b * n_batch, |_| true)?;
            for i in 0..chunk.len() {
                out.push(self.logits_ith(i)?.to_vec());
            }
        }
        Ok(out)
    }

    /// Decodes `tokens` from an empty cache in batches of n_batch, asking only for the
    /// last position's logits; returns that position's index in the last batch.
    fn prefill(&mut self, tokens: &[i32]) -> Result<usize> {
        ensure!(!tokens.is_empty(), "no tokens");
        ensure!(
            tokens.len() <= self.n_ctx,
            "{} tokens exceed the context length {}",
            tokens.len(),
            self.n_ctx
        );
        self.clear();
        let n_batch = self.n_batch;
        let n_chunks = tokens.len().div_ceil(n_batch);
        let mut last = 0;
        for (b, chunk) in tokens.chunks(n_batch).enumerate() {
            last = chunk.len() - 1;
            let is_last_chunk = b + 1 == n_chunks;
            self.decode(chunk, b * n_batch, |i| is_last_chunk && i == last)?;
        }
        Ok(last)
    }

    /// Logits after the last token of `tokens` (decoded from an empty cache): the
    /// next-token prediction, without keeping every position's logits.
    pub fn last_logits(&mut self, tokens: &[i32]) -> Result<Vec<f32>> {
        let last = self.prefill(tokens)?;
        Ok(self.logits_ith(last)?.to_vec())
    }

    /// The argmax continuation of `prompt`: up to `n` tokens, stopping before an
    /// end-of-generation token (not included) or when the context is full.
    pub fn greedy(&mut self, prompt: &[i32], n: usize) -> Result<Vec<i32>> {
        ensure!(
            prompt.len() < self.n_ctx,
            "prompt of {} tokens does not fit the context length {}",
            prompt.len(),
            self.n_ctx
        );
        let last = self.prefill(prompt)?;
        let mut out = Vec::with_capacity(n);
        let mut pos = prompt.len();
        let mut next = argmax(self.logits_ith(last)?);
        while out.len() < n && !self.is_eog(next) {
            out.push(next);
            if out.len() == n || pos >= self.n_ctx {
                break;
            }
            self.decode(&[next], pos, |_| true)?;
            pos += 1;
            next = argmax(self.logits_ith(0)?);
        }
        Ok(out)
    }

    /// Perplexity of `tokens` (tokenized with `add_special = true`, as the tool does)
    /// over chunks of `n_ctx` tokens, at most `max_chunks` of them. Like the tool it
    /// needs at least 2 × n_ctx tokens.
    pub fn perplexity(
        &mut self,
        tokens: &[i32],
        n_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<Perplexity> {
        ensure!(
            n_ctx >= 4,
            "perplexity needs a context of at least 4 tokens"
        );
        ensure!(
            n_ctx <= self.n_ctx,
            "perplexity context {n_ctx} exceeds the context llama.cpp allocated ({})",
            self.n_ctx
        );
        ensure!(
            tokens.len() >= 2 * n_ctx,
            "perplexity with a context of {n_ctx} needs at least {} tokens, the text has {}",
            2 * n_ctx,
            tokens.len()
        );
        let n_chunk = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
        ensure!(n_chunk > 0, "no chunk to score");
        let first = n_ctx / 2;
        let n_batch = self.n_batch.min(n_ctx);
        let add_bos = self.add_bos();
        let bos = self.bos();

        let mut nll_total = 0f64;
        let mut count = 0usize;
        let mut running = Vec::with_capacity(n_chunk);
        let mut per_chunk = Vec::with_capacity(n_chunk);
        let mut chunk_tokens = vec![0i32; n_ctx];
        for c in 0..n_chunk {
            let start = c * n_ctx;
            chunk_tokens.copy_from_slice(&tokens[start..start + n_ctx]);
            if add_bos {
                chunk_tokens[0] = bos;
            }
            self.clear();
            let mut nll_chunk = 0f64;
            for b in 0..n_ctx.div_ceil(n_batch) {
                let p0 = b * n_batch;
                let p1 = (p0 + n_batch).min(n_ctx);
                self.decode(&chunk_tokens[p0..p1], p0, |i| p0 + i >= first)?;
                // Score position p (predicting p + 1) for p in first..n_ctx-1, against
                // the original tokens (not the BOS substitute).
                for p in p0.max(first)..p1.min(n_ctx - 1) {
                    let target = tokens[start + p + 1] as usize;
                    nll_chunk -= log_softmax(self.logits_ith(p - p0)?, target);
                }
            }
            let n_scored = n_ctx - first - 1;
            nll_total += nll_chunk;
            count += n_scored;
            running.push((nll_total / count as f64).exp());
            per_chunk.push((nll_chunk / n_scored as f64).exp());
        }
        Ok(Perplexity {
            ppl: (nll_total / count as f64).exp(),
            running,
            per_chunk,
            n_scored: count,
        })
    }
}

/// log p(target) under softmax(logits), as llama-perplexity computes it: the max in
/// f32, each exp in f32 (expf), their sum and the log in f64.
pub fn log_softmax(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    (logits[target] - max) as f64 - sum_exp.ln()
}

/// Index of the largest logit, the first one on ties (as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as i32
}

/// The token batch handed to `llama_decode`, owned on the Rust side: one sequence (0).
#[derive(Default)]
struct Batch {
    token: Vec<i32>,    // (n_tokens)
    pos: Vec<i32>,      // (n_tokens)
    n_seq_id: Vec<i32>, // (n_tokens), all 1
    seq_id: Vec<i32>,   // (n_tokens), all 0: the one seq id of each token
    seq_ptr: Vec<*mut i32>,
    logits: Vec<i8>, // (n_tokens), 1 where an output is wanted
}

impl Batch {
    /// Refills the batch and returns the C view of it, valid until the next `fill`.
    fn fill(
        &mut self,
        tokens: &[i32],
        pos0: usize,
        want: impl Fn(usize) -> bool,
    ) -> sys::llama_batch {
        let n = tokens.len();
        self.token.clear();
        self.token.extend_from_slice(tokens);
        self.pos.clear();
        self.pos.extend((0..n).map(|i| (pos0 + i) as i32));
        self.n_seq_id.clear();
        self.n_seq_id.resize(n, 1);
        self.seq_id.clear();
        self.seq_id.resize(n, 0);
        self.logits.clear();
        self.logits.extend((0..n).map(|i| i8::from(want(i))));
        let base = self.seq_id.as_mut_ptr();
        self.seq_ptr.clear();
        // wrapping_add: pointer arithmetic inside seq_id's allocation (i < n = its len).
        self.seq_ptr.extend((0..n).map(|i| base.wrapping_add(i)));
        sys::llama_batch {
            n_tokens: n as i32,
            token: self.token.as_mut_ptr(),
            embd: std::ptr::null_mut(),
            pos: self.pos.as_mut_ptr(),
            n_seq_id: self.n_seq_id.as_mut_ptr(),
            seq_id: self.seq_ptr.as_mut_ptr(),
            logits: self.logits.as_mut_ptr(),
        }
    }
}
