//! Speed, measured the way llama-bench measures it (and the peer's `bench` measures
//! llama.cpp), so the two can be put side by side:
//!
//! - pp N: a prompt of N tokens (BOS first when the vocabulary adds it, then seeded random
//!   ids) evaluated as one batch, only the last position's logits;
//! - tg N: N tokens evaluated one at a time;
//! - "@ dD" (llama-bench's `-d`): both measured after the cache already holds D tokens.
//!   The D tokens are evaluated once, untimed ([`fill_depth`]); every repetition then starts
//!   from exactly those D cached positions. llama-bench restores a saved copy of the
//!   sequence's state for that; here cutting the cache back to D ([`Context::truncate`]) is
//!   the same thing, since evaluating later tokens never writes a position below D.
//!
//! One untimed warm-up of each comes first. Token ids do not change the amount of work, so
//! they come from a seeded generator.
//!
//! Token generation reads every weight once per token, so its ceiling is memory bandwidth
//! ÷ bytes of weights: [`weight_bytes_per_token`] and [`read_bandwidth`] give both halves.

use std::time::Instant;

use anyhow::{ensure, Context as _, Result};

use loupe_engine::model::{Context, Logits, Model};
use loupe_engine::sample::splitmix64;

/// Tokens per second over the repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every repetition's tokens/s, in run order.
    pub samples: Vec<f64>,
}

impl Stats {
    /// Summary of `samples` (tokens/s); `None` when empty.
    pub fn from_samples(samples: Vec<f64>) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            samples,
        })
    }

    /// `{"median": …, "min": …, "max": …}`, the peer's shape.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

/// A seeded source of token ids (splitmix64), so every run evaluates the same tokens.
struct TokenRng(u64);

impl TokenRng {
    fn next(&mut self, n_vocab: usize) -> u32 {
        (splitmix64(&mut self.0) % n_vocab as u64) as u32
    }
}

/// The first token of a run: BOS when the vocabulary adds it (as llama-bench does).
fn first_token(bos: Option<u32>, n_vocab: usize, rng: &mut TokenRng) -> u32 {
    bos.unwrap_or_else(|| rng.next(n_vocab))
}

/// `n` token ids as llama-bench makes a prompt: BOS first (when added), then seeded ids.
fn prompt_tokens(n: usize, n_vocab: usize, bos: Option<u32>, rng: &mut TokenRng) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(n);
    tokens.push(first_token(bos, n_vocab, rng));
    while tokens.len() < n {
        tokens.push(rng.next(n_vocab));
    }
    tokens
}

/// How the cache gets its `depth` tokens before "@ dD" tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthFill {
    /// Evaluated as a prompt, as llama-bench does.
    Evaluate,
    /// Seeded random keys and values written straight into the cache
    /// ([`Context::fill_synthetic`]): the same cost per timed token, without the minutes a
    /// deep fill of a big model takes on a few cores.
    Synthetic,
}

/// Fill the cache with `depth` tokens (a prompt like pp's, in batches of the context's
/// batch size, or synthetic rows), untimed: what "@ dD" tests start from. An empty cache
/// for depth 0.
pub fn fill_depth(
    ctx: &mut Context<'_>,
    depth: usize,
    bos: Option<u32>,
    how: DepthFill,
) -> Result<()> {
    ensure!(
        depth < ctx.n_ctx(),
        "a depth of {depth} tokens needs a context larger than {}",
        ctx.n_ctx()
    );
    ctx.truncate(0);
    if depth > 0 && how == DepthFill::Synthetic {
        ctx.fill_synthetic(depth, 0x5eed_0003)?;
    } else if depth > 0 {
        let mut rng = TokenRng(0x5eed_0003);
        let tokens = prompt_tokens(depth, ctx.model.config.vocab_size, bos, &mut rng);
        ctx.eval(&tokens, Logits::Last)?;
    }
    Ok(())
}

/// One pp run: seconds to evaluate `n` prompt tokens after the `depth` cached ones.
fn run_pp(
    ctx: &mut Context<'_>,
    n: usize,
    depth: usize,
    bos: Option<u32>,
    rng: &mut TokenRng,
) -> Result<f64> {
    let tokens = prompt_tokens(n, ctx.model.config.vocab_size, bos, rng);
    ctx.truncate(depth);
    let t0 = Instant::now();
    ctx.eval(&tokens, Logits::Last)?;
    Ok(t0.elapsed().as_secs_f64())
}

/// One tg run: seconds to evaluate `n` tokens one at a time after the `depth` cached ones.
fn run_tg(
    ctx: &mut Context<'_>,
    n: usize,
    depth: usize,
    bos: Option<u32>,
    rng: &mut TokenRng,
) -> Result<f64> {
    let n_vocab = ctx.model.config.vocab_size;
    ctx.truncate(depth);
    let mut token = first_token(bos, n_vocab, rng);
    let t0 = Instant::now();
    for _ in 0..n {
        ctx.eval(&[token], Logits::Last)?;
        token = rng.next(n_vocab);
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// A test's name as llama-bench prints it: "pp512", "tg128 @ d4096".
pub fn test_name(kind: &str, n: usize, depth: usize) -> String {
    if depth > 0 {
        format!("{kind}{n} @ d{depth}")
    } else {
        format!("{kind}{n}")
    }
}

/// Why the cache cannot start `n` tokens after `depth` (it must hold at least `depth`,
/// as [`fill_depth`] leaves it, and have room for `n` more).
fn check_room(ctx: &Context<'_>, name: &str, n: usize, depth: usize) -> Result<()> {
    ensure!(
        ctx.n_past() >= depth,
        "{name} needs {depth} tokens in the cache first (bench::fill_depth)"
    );
    ensure!(
        depth + n <= ctx.n_ctx(),
        "{name} needs a context of at least {} (have {})",
        depth + n,
        ctx.n_ctx()
    );
    Ok(())
}

/// pp `n_prompt` at `depth`: prompt tokens per second. The cache must hold the `depth`
/// tokens ([`fill_depth`]) and have room for `n_prompt` more, and the batch must take
/// them at once (else the prompt would be split, which llama-bench's pp is not).
pub fn pp(
    ctx: &mut Context<'_>,
    n_prompt: usize,
    depth: usize,
    reps: usize,
    bos: Option<u32>,
) -> Result<Stats> {
    ensure!(
        n_prompt > 0 && reps > 0,
        "pp needs n_prompt > 0 and reps > 0"
    );
    check_room(ctx, &test_name("pp", n_prompt, depth), n_prompt, depth)?;
    let mut rng = TokenRng(0x5eed_0001);
    run_pp(ctx, n_prompt, depth, bos, &mut rng)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = run_pp(ctx, n_prompt, depth, bos, &mut rng)?;
        samples.push(n_prompt as f64 / s);
    }
    ctx.truncate(depth);
    Ok(Stats::from_samples(samples).expect("reps > 0"))
}

/// tg `n_gen` at `depth`: generated tokens per second (the cache as for [`pp`]).
pub fn tg(
    ctx: &mut Context<'_>,
    n_gen: usize,
    depth: usize,
    reps: usize,
    bos: Option<u32>,
) -> Result<Stats> {
    ensure!(n_gen > 0 && reps > 0, "tg needs n_gen > 0 and reps > 0");
    check_room(ctx, &test_name("tg", n_gen, depth), n_gen, depth)?;
    let mut rng = TokenRng(0x5eed_0002);
    run_tg(ctx, 1, depth, bos, &mut rng)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = run_tg(ctx, n_gen, depth, bos, &mut rng)?;
        samples.push(n_gen as f64 / s);
    }
    ctx.truncate(depth);
    Ok(Stats::from_samples(samples).expect("reps > 0"))
}

/// Bytes of weights one generated token reads: every tensor once, except the token
/// embedding, of which only one row is read — unless it doubles as the output projection.
pub fn weight_bytes_per_token(model: &Model) -> u64 {
    let tensors = model.file.tensors();
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    tensors
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| t.n_bytes())
        .sum()
}

/// Peak resident memory of this process (`VmHWM`), in bytes; `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Memory read bandwidth in bytes/s: the best of `passes` passes of `threads` threads
/// summing disjoint parts of a `bytes`-sized buffer (far larger than any cache).
pub fn read_bandwidth(bytes: usize, passes: usize, threads: usize) -> Result<f64> {
    ensure!(
        passes > 0 && threads > 0,
        "bandwidth needs passes and threads"
    );
    let n = (bytes / 8).max(threads * 1024);
    // Distinct non-zero values, so every page is really allocated and read.
    let buf: Vec<u64> = (0..n as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9) | 1)
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the thread pool")?;
    let part = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let t0 = Instant::now();
        let sum = pool.install(|| {
            use rayon::prelude::*;
            buf.par_chunks(part)
                .map(sum_words)
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok((n * 8) as f64 / best)
}

/// Sum with four independent accumulators, so the loop is bound by loads, not adds.
fn sum_words(xs: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_min_max() {
        let s = Stats::from_samples(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(
            Stats::from_samples(vec![5.0, 1.0, 2.0]).unwrap().median,
            2.0
        );
        assert!(Stats::from_samples(vec![]).is_none());
    }

    #[test]
    fn bandwidth_is_positive_and_sum_is_exact() {
        assert!(read_bandwidth(1 << 20, 2, 2).unwrap() > 0.0);
        let xs: Vec<u64> = (1..=11).collect();
        assert_eq!(sum_words(&xs), 66);
    }

    #[test]
    fn peak_rss_reads_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 0);
        }
    }
}
