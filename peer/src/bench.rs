//! Speed of llama.cpp, measured the way llama-bench measures it.
//!
//! - pp N: a prompt of N tokens (BOS first when the vocabulary adds it, then random ids)
//!   decoded on an empty KV cache, in one batch of N (llama.cpp splits it into micro
//!   batches of 512 internally), only the last position asking for logits;
//! - tg N: N tokens decoded one at a time from an empty cache, each waited for.
//!
//! One untimed warm-up run of each comes first, as llama-bench does. Each repetition
//! clears the cache, and its time covers decode + synchronize only. Token ids do not
//! change the amount of work, so they come from a seeded generator.

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

/// One pp run: seconds to decode `n` prompt tokens on an empty cache.
fn run_pp(llama: &mut Llama, n: usize, rng: &mut TokenRng) -> Result<f64> {
    let mut tokens = Vec::with_capacity(n);
    tokens.push(first_token(llama, rng));
    while tokens.len() < n {
        tokens.push(rng.next(llama.n_vocab()));
    }
    llama.clear();
    let t0 = Instant::now();
    let n_batch = llama.n_batch();
    for (b, chunk) in tokens.chunks(n_batch).enumerate() {
        let last = chunk.len() - 1;
        llama.decode(chunk, b * n_batch, |i| i == last)?;
    }
    llama.synchronize();
    Ok(t0.elapsed().as_secs_f64())
}

/// One tg run: seconds to decode `n` tokens one at a time on an empty cache.
fn run_tg(llama: &mut Llama, n: usize, rng: &mut TokenRng) -> Result<f64> {
    llama.clear();
    let mut token = first_token(llama, rng);
    let t0 = Instant::now();
    for pos in 0..n {
        llama.decode(&[token], pos, |_| true)?;
        llama.synchronize();
        token = rng.next(llama.n_vocab());
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// pp `n_prompt`: prompt tokens per second. Needs n_batch ≥ n_prompt ≤ n_ctx.
pub fn pp(llama: &mut Llama, n_prompt: usize, reps: usize) -> Result<Stats> {
    ensure!(
        n_prompt > 0 && reps > 0,
        "pp needs n_prompt > 0 and reps > 0"
    );
    ensure!(
        n_prompt <= llama.n_ctx() && n_prompt <= llama.n_batch(),
        "pp{n_prompt} needs a context and batch of at least {n_prompt} (have {} and {})",
        llama.n_ctx(),
        llama.n_batch()
    );
    let mut rng = TokenRng(0x5eed_0001);
    run_pp(llama, n_prompt, &mut rng)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = run_pp(llama, n_prompt, &mut rng)?;
        samples.push(n_prompt as f64 / s);
    }
    Ok(Stats::from_samples(samples).expect("reps > 0"))
}

/// tg `n_gen`: generated tokens per second. Needs n_gen ≤ n_ctx.
pub fn tg(llama: &mut Llama, n_gen: usize, reps: usize) -> Result<Stats> {
    ensure!(n_gen > 0 && reps > 0, "tg needs n_gen > 0 and reps > 0");
    ensure!(
        n_gen <= llama.n_ctx(),
        "tg{n_gen} needs a context of at least {n_gen} (have {})",
        llama.n_ctx()
    );
    let mut rng = TokenRng(0x5eed_0002);
    run_tg(llama, 1, &mut rng)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = run_tg(llama, n_gen, &mut rng)?;
        samples.push(n_gen as f64 / s);
    }
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
