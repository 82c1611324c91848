//! Quality figures computed as llama.cpp's perplexity tool computes them, so the two can
//! be read side by side: perplexity over non-overlapping chunks (the first token of each
//! chunk BOS when the model adds one, only the second half scored), and the agreement of
//! two models' next-token distributions (KL divergence, same top token, Δp).

use anyhow::{ensure, Result};

use crate::model::{Context, Logits};

/// log p(tok) under softmax(logits): max-subtracted, the sum of exponentials in f64.
pub fn log_softmax(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    f64::from(logits[tok] - max) - sum.ln()
}

/// Running negative log-likelihood of the scored tokens.
#[derive(Clone, Debug, Default)]
pub struct NllStats {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
    /// Scored tokens whose log-likelihood is not finite: their logits were NaN or
    /// infinite (NaN weights). They stay in the sums, so the perplexity is NaN or infinite
    /// too, never a number that looks like a model's.
    pub non_finite: usize,
}

impl NllStats {
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.count += 1;
        if !nll.is_finite() {
            self.non_finite += 1;
        }
    }

    pub fn ppl(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    /// Standard error of the perplexity, as llama.cpp reports it after "±".
    pub fn ppl_err(&self) -> f64 {
        let n = self.count as f64;
        if self.count < 2 {
            return f64::NAN;
        }
        let mean = self.sum / n;
        let var = self.sum2 / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        (var / (n - 1.0)).sqrt() * self.ppl()
    }
}

/// How chunks are cut and which tokens of each are scored.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    pub n_ctx: usize,
    pub n_chunks: usize,
    /// First position of a chunk whose prediction is scored (n_ctx / 2).
    pub first: usize,
}

impl Chunking {
    /// llama.cpp's rule: ⌊tokens / n_ctx⌋ chunks (at most `max`), needing at least two.
    pub fn new(n_tokens: usize, n_ctx: usize, max: Option<usize>) -> Result<Chunking> {
        ensure!(
            n_ctx >= 4,
            "perplexity needs a context of at least 4 tokens"
        );
        ensure!(
            n_tokens >= 2 * n_ctx,
            "perplexity with a context of {n_ctx} needs at least {} tokens; the text has {n_tokens}",
            2 * n_ctx
        );
        let n_chunks = (n_tokens / n_ctx).min(max.unwrap_or(usize::MAX));
        ensure!(n_chunks > 0, "--chunks must be at least 1");
        Ok(Chunking {
            n_ctx,
            n_chunks,
            first: n_ctx / 2,
        })
    }

    /// The tokens to evaluate for chunk `c`: BOS in front when the model adds one.
    pub fn chunk_tokens(&self, tokens: &[u32], c: usize, bos: Option<u32>, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&tokens[c * self.n_ctx..(c + 1) * self.n_ctx]);
        if let Some(b) = bos {
            out[0] = b;
        }
    }

    /// Tokens scored per chunk.
    pub fn scored(&self) -> usize {
        self.n_ctx - self.first - 1
    }
}

/// Perplexity of `tokens` (tokenized with BOS, as the tool does). `on_chunk` sees each
/// finished chunk's index and the running statistics.
pub fn perplexity(
    ctx: &mut Context<'_>,
    tokens: &[u32],
    chunking: Chunking,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, &NllStats),
) -> Result<NllStats> {
    let mut stats = NllStats::default();
    let vocab = ctx.model.config.vocab_size;
    let mut chunk = Vec::with_capacity(chunking.n_ctx);
    for c in 0..chunking.n_chunks {
        chunking.chunk_tokens(tokens, c, bos, &mut chunk);
        ctx.truncate(0);
        let logits = ctx.eval(&chunk, Logits::From(chunking.first))?;
        for (i, row) in logits
            .chunks_exact(vocab)
            .take(chunking.scored())
            .enumerate()
        {
            let target = tokens[c * chunking.n_ctx + chunking.first + i + 1] as usize;
            stats.add(-log_softmax(row, target));
        }
        on_chunk(c, &stats);
    }
    Ok(stats)
}

/// Agreement of a model's next-token distributions with a base model's, over positions.
#[derive(Clone, Debug, Default)]
pub struct Agreement {
    pub nll_base: NllStats,
    pub nll: NllStats,
    /// KL(base ‖ model) per position, nats.
    pub kld: Vec<f32>,
    pub same_top: usize,
    /// p(correct token) under the model minus under the base, per position.
    pub p_diff: Vec<f32>,
}

impl Agreement {
    /// Add one position: both models' logits and the token that came next.
    pub fn add(&mut self, base: &[f32], model: &[f32], next: usize) {
        let lp_base = log_probs(base);
        let lp = log_probs(model);
        let mut kld = 0f64;
        for (&a, &b) in lp_base.iter().zip(&lp) {
            if a > -16.0 {
                kld += a.exp() * (a - b);
            }
        }
        self.kld.push(kld as f32);
        if argmax(base) == argmax(model) {
            self.same_top += 1;
        }
        self.nll_base.add(-lp_base[next]);
        self.nll.add(-lp[next]);
        self.p_diff
            .push((lp[next].exp() - lp_base[next].exp()) as f32);
    }

    pub fn count(&self) -> usize {
        self.kld.len()
    }

    pub fn mean_kld(&self) -> f64 {
        self.kld.iter().map(|&v| f64::from(v)).sum::<f64>() / self.count().max(1) as f64
    }

    pub fn same_top_share(&self) -> f64 {
        self.same_top as f64 / self.count().max(1) as f64
    }

    /// Standard error of the mean KL divergence, as llama.cpp prints it after "±".
    pub fn kld_err(&self) -> f64 {
        mean_and_err(self.kld.iter().map(|&v| f64::from(v)), self.count()).1
    }

    /// Mean of p(correct token) under the model minus under the base.
    pub fn mean_p_diff(&self) -> f64 {
        mean_and_err(self.p_diff.iter().map(|&v| f64::from(v)), self.count()).0
    }

    /// Root mean square of the Δp of the correct token, with its standard error (from
    /// the spread of Δp², as llama.cpp's "RMS Δp" line).
    pub fn rms_p_diff(&self) -> (f64, f64) {
        let (ms, ms_err) = mean_and_err(
            self.p_diff.iter().map(|&v| f64::from(v) * f64::from(v)),
            self.count(),
        );
        let rms = ms.sqrt();
        (rms, if rms > 0.0 { 0.5 / rms * ms_err } else { 0.0 })
    }

    /// Mean of ln(p_base / p_model) of the correct token: ln of the PPL ratio.
    pub fn ln_ppl_ratio(&self) -> f64 {
        (self.nll.sum - self.nll_base.sum) / self.count().max(1) as f64
    }

    /// The KL divergences sorted, for [`percentile`].
    pub fn kld_sorted(&self) -> Vec<f32> {
        let mut v = self.kld.clone();
        v.sort_by(f32::total_cmp);
        v
    }

    /// The `q`-quantile (0..=1) of the KL divergences.
    pub fn kld_quantile(&self, q: f64) -> f64 {
        let mut v = self.kld.clone();
        v.sort_by(f32::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        f64::from(v[i])
    }
}

/// Mean and its standard error over `n` values (llama.cpp's `mean_and_uncertainty`).
fn mean_and_err(values: impl Iterator<Item = f64>, n: usize) -> (f64, f64) {
    let (mut sum, mut sum2) = (0f64, 0f64);
    for v in values {
        sum += v;
        sum2 += v * v;
    }
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = sum / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = (sum2 / n as f64 - mean * mean).max(0.0);
    (mean, (var / (n - 1) as f64).sqrt())
}

/// The `q`-quantile (0..=1) of sorted values, interpolated between neighbours as
/// llama.cpp's perplexity tool does (so q = 0.5 of an even count is the middle pair's mean).
pub fn percentile(sorted: &[f32], q: f64) -> f64 {
    match sorted {
        [] => f64::NAN,
        _ if q <= 0.0 => f64::from(sorted[0]),
        _ if q >= 1.0 => f64::from(sorted[sorted.len() - 1]),
        _ => {
            let p = q * (sorted.len() - 1) as f64;
            let i = p as usize;
            let f = p - i as f64;
            let next = sorted[(i + 1).min(sorted.len() - 1)];
            (1.0 - f) * f64::from(sorted[i]) + f * f64::from(next)
        }
    }
}

fn log_probs(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let lse = sum.ln();
    logits.iter().map(|&l| f64::from(l - max) - lse).collect()
}

/// Index of the largest value (the first on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_agree() {
        let mut a = Agreement::default();
        let l = [1.0, 2.0, 0.5, -3.0];
        a.add(&l, &l, 1);
        assert!(a.mean_kld().abs() < 1e-12);
        assert_eq!(a.same_top, 1);
        assert_eq!(a.p_diff[0], 0.0);
    }

    #[test]
    fn kld_is_positive_for_different_distributions() {
        let mut a = Agreement::default();
        a.add(&[2.0, 0.0, 0.0], &[0.0, 2.0, 0.0], 0);
        assert!(a.mean_kld() > 0.5);
        assert_eq!(a.same_top, 0);
        assert!(a.p_diff[0] < 0.0);
    }

    #[test]
    fn percentile_interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.99) - 3.97).abs() < 1e-9);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn perplexity_of_uniform_is_vocab_size() {
        let mut s = NllStats::default();
        for _ in 0..10 {
            s.add(-log_softmax(&[0.0; 8], 3));
        }
        assert!((s.ppl() - 8.0).abs() < 1e-9);
        assert!(s.ppl_err() < 1e-6);
    }

    #[test]
    fn perplexity_of_nan_logits_is_nan() {
        let mut s = NllStats::default();
        s.add(-log_softmax(&[0.0; 8], 3));
        s.add(-log_softmax(&[f32::NAN; 8], 3));
        s.add(-log_softmax(&[1.0, f32::INFINITY, 0.0], 0));
        assert_eq!((s.count, s.non_finite), (3, 2));
        assert!(s.ppl().is_nan());
        let mut a = Agreement::default();
        a.add(&[1.0, 2.0], &[f32::NAN, f32::NAN], 1);
        assert_eq!((a.nll_base.non_finite, a.nll.non_finite), (0, 1));
        assert!(a.mean_kld().is_nan());
    }

    #[test]
    fn chunking_follows_llama_cpp() {
        let c = Chunking::new(1100, 512, None).unwrap();
        assert_eq!((c.n_chunks, c.first, c.scored()), (2, 256, 255));
        assert!(Chunking::new(1000, 512, None).is_err());
        let mut out = Vec::new();
        let toks: Vec<u32> = (0..1100).collect();
        c.chunk_tokens(&toks, 1, Some(7), &mut out);
        assert_eq!((out[0], out[1], out.len()), (7, 513, 512));
    }
}
