//! What a context costs in memory, checked before anything is allocated: a `--ctx` too
//! large for the machine is refused with the arithmetic and a context that fits, where
//! allocating it would abort the process or wake the kernel's OOM killer later.

use std::fmt;

use super::forward::Scratch;
use super::kv_cache::KvCache;
use super::{Model, RunOptions};

/// A context that cannot be allocated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "a context of {n_ctx} tokens is too large: its buffers would take more memory than \
         this machine can address"
    )]
    TooLarge { n_ctx: usize },
    #[error(
        "not enough memory: the model takes {weights} and a context of {n_ctx} tokens \
         {context} (its KV cache and buffers, {per_token} bytes per token), {need} in all, \
         but only {available} is available; {hint}"
    )]
    NotEnough {
        n_ctx: usize,
        weights: Gib,
        context: Gib,
        per_token: u64,
        need: Gib,
        available: Gib,
        hint: String,
    },
}

/// A byte count, shown in GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gib(pub u64);

impl fmt::Display for Gib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} GiB", self.0 as f64 / (1u64 << 30) as f64)
    }
}

/// Bytes of the buffers a context with options `o` allocates for `model`: the KV cache,
/// the run buffers and the backend's (one row of logits; a perplexity chunk's rows grow
/// them later). `None` when the count does not fit in 64 bits.
pub fn context_bytes(model: &Model, o: &RunOptions) -> Option<u64> {
    let c = &model.config;
    let batch = o.batch.clamp(1, o.n_ctx.max(1));
    KvCache::bytes(o.kv_type, c, o.n_ctx)?
        .checked_add(Scratch::bytes(c, o.n_ctx, batch, o.threads)?)
}

/// Memory available for new allocations without swapping, from `/proc/meminfo` (bytes);
/// `None` where the kernel does not say.
pub fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Refuse, before allocating, a context of options `o` whose buffers and the model's
/// weights do not fit in the memory available (the weights are counted whole: mapped
/// pages the model reads for every token are not memory to spare). Returns the context's
/// bytes.
pub fn check(model: &Model, o: &RunOptions) -> Result<u64, MemoryError> {
    let too_large = MemoryError::TooLarge { n_ctx: o.n_ctx };
    let context = context_bytes(model, o).ok_or(too_large.clone())?;
    // No Vec may hold more than isize::MAX bytes, whatever the memory available.
    if context > isize::MAX as u64 {
        return Err(too_large);
    }
    let Some(available) = mem_available() else {
        return Ok(context);
    };
    let weights = model.file.file_size();
    let need = weights.saturating_add(context);
    if need <= available {
        return Ok(context);
    }
    // The cost of one more token of context (the KV cache, the attention's buffers).
    let with_ctx = |n_ctx| context_bytes(model, &RunOptions { n_ctx, ..*o });
    let one = |n_ctx| {
        context_bytes(
            model,
            &RunOptions {
                n_ctx,
                batch: 1,
                ..*o
            },
        )
    };
    let per_token = match (one(1), one(2)) {
        (Some(a), Some(b)) => b.saturating_sub(a).max(1),
        _ => return Err(too_large),
    };
    // The longest context that fits, the other options kept (the cost grows with it).
    let fits = |n| with_ctx(n).is_some_and(|b| weights.saturating_add(b) <= available);
    let (mut lo, mut hi) = (0, o.n_ctx);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let hint = if lo >= 256 {
        format!("a context of up to {} tokens fits", (lo / 256) * 256)
    } else {
        "the weights alone nearly fill it: try a smaller quantization (Q4_K_M, Q4_0) or a \
         smaller model"
            .to_string()
    };
    Err(MemoryError::NotEnough {
        n_ctx: o.n_ctx,
        weights: Gib(weights),
        context: Gib(context),
        per_token,
        need: Gib(need),
        available: Gib(available),
        hint,
    })
}

/// The product of `xs` in 64 bits, `None` when it overflows: each buffer's size, counted
/// beside its allocation (`KvCache::bytes`, `Scratch::bytes`, ...).
pub(super) fn product(xs: &[usize]) -> Option<u64> {
    xs.iter().try_fold(1u64, |a, &x| a.checked_mul(x as u64))
}
