//! Speed of llama.cpp, measured the way llama-bench measures it.
//!
//! - pp N: a prompt of N tokens (BOS first when the vocabulary adds it, then random ids)
//!   decoded in one batch of N (llama.cpp splits it into micro batches of 512
//!   internally), only the last position asking for logits;
//! - tg N: N tokens decoded one at a time, each waited for;
//! - "@ dD" (llama-bench's `-d`): both after the cache already holds D tokens, decoded
//!   once and untimed ([`fill_depth`]). Each repetition starts from exactly those D
//!   positions: llama-bench restores a saved copy of the sequence's state, this removes
//!   the positions past D (`llama_memory_seq_rm`), which leaves the same cache.
//!
//! One untimed warm-up run of each comes first, as llama-bench does. A repetition's time
//! covers decode + synchronize only. Token ids do not change the amount of work, so they
//! come from a seeded generator. loupe's `bench` measures the same way (`src/bench.rs`).

use std::time::Instant;

use anyhow::{ensure, Result};

use crate::llama::Llama;
use loupe_engine::sample::splitmix64;

/// Tokens per second over `reps` repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
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
            mean: sorted.iter().sum::<f64>() / n as f64,
            samples,
        })
    }

    /// `{"median": …, "min": …, "max": …}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

/// A seeded source of token ids (splitmix64), so every run decodes the same prompt.
struct TokenRng(u64);

impl TokenRng {
    fn next(&mut self, n_vocab: usize) -> i32 {
        (splitmix64(&mut self.0) % n_vocab as u64) as i32
    }
}

fn first_token(llama: &Llama, rng: &mut TokenRng) -> i32 {
    if llama.add_bos() {
        llama.bos()
    } else {
        rng.next(llama.n_vocab())
    }
}

/// `n` token ids as llama-bench makes a prompt: BOS first (when added), then seeded ids.
fn prompt_tokens(llama: &Llama, n: usize, rng: &mut TokenRng) -> Vec<i32> {
    let mut tokens = Vec::with_capacity(n);
    tokens.push(first_token(llama, rng));
    while tokens.len() < n {
        tokens.push(rng.next(llama.n_vocab()));
    }
    tokens
}

/// Decodes `tokens` at positions `pos0..` in batches of n_batch, only the last position
/// asking for logits, and waits for the result.
fn decode_prompt(llama: &mut Llama, tokens: &[i32], pos0: usize) -> Result<()> {
    let n_batch = llama.n_batch();
    let n_chunks = tokens.len().div_ceil(n_batch);
    for (b, chunk) in tokens.chunks(n_batch).enumerate() {
        let last = (b + 1 == n_chunks).then(|| chunk.len() - 1);
        llama.decode(chunk, pos0 + b * n_batch, |i| Some(i) == last)?;
    }
    llama.synchronize();
    Ok(())
}

/// The seed of synthetic depths, loupe's (`src/bench.rs`).
const SYNTHETIC_SEED: u64 = 0x5eed_0003;

/// A test's name as llama-bench prints it: "pp512", "tg128 @ d4096".
pub fn test_name(kind: &str, n: usize, depth: usize) -> String {
    if depth > 0 {
        format!("{kind}{n} @ d{depth}")
    } else {
        format!("{kind}{n}")
    }
}

/// Fills the cache with `depth` tokens (a prompt like pp's), untimed: what "@ dD" tests
/// start from. An empty cache for depth 0. With `synthetic`, the positions hold made-up
/// keys and values instead ([`Llama::fill_synthetic`], the same numbers as loupe's
/// `--synthetic-depth`): the same cost per timed token, without evaluating the prompt.
pub fn fill_depth(llama: &mut Llama, depth: usize, synthetic: bool) -> Result<()> {
    ensure!(
        depth < llama.n_ctx(),
        "a depth of {depth} tokens needs a context larger than {}",
        llama.n_ctx()
    );
    llama.clear();
    if depth > 0 && synthetic {
        llama.fill_synthetic(depth, SYNTHETIC_SEED)?;
    } else if depth > 0 {
        let mut rng = TokenRng(0x5eed_0003);
        let tokens = prompt_tokens(llama, depth, &mut rng);
        decode_prompt(llama, &tokens, 0)?;
    }
    Ok(())
}

/// One pp run: seconds to decode `n` prompt tokens after the `depth` cached ones.
fn run_pp(llama: &mut Llama, n: usize, depth: usize, rng: &mut TokenRng) -> Result<f64> {
    let tokens = prompt_tokens(llama, n, rng);
    llama.truncate(depth)?;
    let t0 = Instant::now();
    decode_prompt(llama, &tokens, depth)?;
    Ok(t0.elapsed().as_secs_f64())
}

/// One tg run: seconds to decode `n` tokens one at a time after the `depth` cached ones.
fn run_tg(llama: &mut Llama, n: usize, depth: usize, rng: &mut TokenRng) -> Result<f64> {
    llama.truncate(depth)?;
    let mut token = first_token(llama, rng);
    let t0 = Instant::now();
    for pos in depth..depth + n {
        llama.decode(&[token], pos, |_| true)?;
        llama.synchronize();
        token = rng.next(llama.n_vocab());
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// pp `n_prompt` at `depth`: prompt tokens per second. The cache must hold the `depth`
/// tokens ([`fill_depth`]); needs n_batch ≥ n_prompt and depth + n_prompt ≤ n_ctx.
pub fn pp(llama: &mut Llama, n_prompt: usize, depth: usize, reps: usize) -> Result<Stats> {
    ensure!(
        n_prompt > 0 && reps > 0,
        "pp needs n_prompt > 0 and reps > 0"
    );
    ensure!(
        depth + n_prompt <= llama.n_ctx() && n_prompt <= llama.n_batch(),
        "{} needs a context of at least {} and a batch of at least {n_prompt} (have {} and {})",
        test_name("pp", n_prompt, depth),
        depth + n_prompt,
        llama.n_ctx(),
        llama.n_batch()
    );
    let mut rng = TokenRng(0x5eed_0001);
    run_pp(llama, n_prompt, depth, &mut rng)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = run_pp(llama, n_prompt, depth, &mut rng)?;
        samples.push(n_prompt as f64 / s);
    }
    llama.truncate(depth)?;
    Ok(Stats::from_samples(samples).expect("reps > 0"))
}

/// tg `n_gen` at `depth`: generated tokens per second (the cache as for [`pp`]).
pub fn tg(llama: &mut Llama, n_gen: usize, depth: usize, reps: usize) -> Result<Stats> {
    ensure!(n_gen > 0 && reps > 0, "tg needs n_gen > 0 and reps > 0");
    ensure!(
        depth + n_gen <= llama.n_ctx(),
        "{} needs a context of at least {} (have {})",
        test_name("tg", n_gen, depth),
        depth + n_gen,
        llama.n_ctx()
    );
    let mut rng = TokenRng(0x5eed_0002);
    run_tg(llama, 1, depth, &mut rng)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = run_tg(llama, n_gen, depth, &mut rng)?;
        samples.push(n_gen as f64 / s);
    }
    llama.truncate(depth)?;
    Ok(Stats::from_samples(samples).expect("reps > 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_min_max() {
        let s = Stats::from_samples(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mean), (2.5, 1.0, 10.0, 4.0));
        let s = Stats::from_samples(vec![5.0, 1.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.0);
        assert!(Stats::from_samples(vec![]).is_none());
    }
}
