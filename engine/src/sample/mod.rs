//! The sampler: from a row of logits to the next token, and the view of how it got there.
//!
//! A chain of small stages over a candidates array, like llama.cpp's, in its default order:
//!
//! ```text
//! logits ─▶ penalties ─▶ top-k ─▶ top-p ─▶ min-p ─▶ temp ─▶ dist (seeded draw)
//!                    └──────────────────────────────────────▶ greedy (temp ≤ 0)
//! ```
//!
//! A stage whose setting makes it do nothing (top-k 0, top-p 1, min-p 0, neutral
//! penalties) is left out, so `describe()` shows what really runs. At temperature 0 or
//! below the chain is penalties then argmax: top-k, top-p and min-p always keep the most
//! likely token, so they cannot change an argmax and are left out too.
//!
//! The chain owns its random generator, seeded from the config, and draws exactly once per
//! sampled token (even when one candidate is left), so a seed replays a run token for token.
//! `sample` allocates nothing after `Sampler::new`; `trace` does the same work and records
//! each stage's distribution for the zoom view.

mod rng;
mod settings;
mod stages;

pub use rng::{random_seed, splitmix64, Rng};
pub use settings::{SamplerSettings, Source};
pub use stages::{Candidate, Candidates, MinP, Penalties, Stage, Temperature, TopK, TopP};

use stages::better;

/// The seed of `SamplerConfig::default()`. (The CLI picks a random one when `--seed` is
/// not given, as llama.cpp does, and reports it.)
pub const DEFAULT_SEED: u64 = 42;

/// Sampling settings; `Default` is llama.cpp's defaults (`common/common.h`).
///
/// Signed fields are signed so that a bad value reaches `validate()` and gets a message,
/// wherever the config came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Divide logits by this before the draw; ≤ 0 means greedy (argmax). Default 0.8.
    pub temp: f32,
    /// Keep the k most likely tokens; 0 turns it off. Default 40.
    pub top_k: i32,
    /// Keep the smallest most-likely-first set with total probability ≥ p; 1 turns it off.
    /// Default 0.95.
    pub top_p: f32,
    /// Drop tokens with probability < min_p × the top probability; 0 turns it off.
    /// Default 0.05.
    pub min_p: f32,
    /// Penalize tokens seen in the window (> 1 discourages, < 1 encourages); 1 is off.
    pub repeat_penalty: f32,
    /// Subtract count × this from a seen token's logit; 0 is off, negative encourages.
    pub frequency_penalty: f32,
    /// Subtract this once from a seen token's logit; 0 is off, negative encourages.
    pub presence_penalty: f32,
    /// How many of the last accepted tokens the penalties look at; 0 turns them off.
    /// Default 64.
    pub penalty_last_n: i32,
    /// Seed of the draw's random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: DEFAULT_SEED,
        }
    }
}

/// A setting the sampler cannot run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// `option` is spelled as the command-line flag without dashes ("top-p").
    #[error("invalid sampler setting {option} = {value}: {reason}")]
    Invalid {
        option: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("the vocabulary is empty: there is no token to sample")]
    EmptyVocabulary,
}

fn invalid(option: &'static str, value: impl ToString, reason: &'static str) -> SamplerError {
    SamplerError::Invalid {
        option,
        value: value.to_string(),
        reason,
    }
}

impl SamplerConfig {
    /// Check every setting; the first bad one is named in the error. Nothing is clamped.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !self.temp.is_finite() {
            return Err(invalid(
                "temp",
                self.temp,
                "must be a finite number (0 or below means greedy)",
            ));
        }
        if self.top_k < 0 {
            return Err(invalid(
                "top-k",
                self.top_k,
                "must be 0 (off) or a positive count",
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(invalid(
                "top-p",
                self.top_p,
                "must be between 0 and 1 (1 turns top-p off)",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid(
                "min-p",
                self.min_p,
                "must be between 0 and 1 (0 turns min-p off)",
            ));
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0 && (1.0 / r).is_finite()) {
            return Err(invalid(
                "repeat-penalty",
                r,
                "must be a finite number above 0 (1 turns it off, above 1 discourages repeats)",
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(invalid(
                "frequency-penalty",
                self.frequency_penalty,
                "must be a finite number (0 turns it off)",
            ));
        }
        if !self.presence_penalty.is_finite() {
            return Err(invalid(
                "presence-penalty",
                self.presence_penalty,
                "must be a finite number (0 turns it off)",
            ));
        }
        if self.penalty_last_n < 0 {
            return Err(invalid(
                "repeat-last-n",
                self.penalty_last_n,
                "must be 0 (off) or a positive count of tokens (llama.cpp's -1 for the context size is not supported: give the length)",
            ));
        }
        Ok(())
    }

    /// Whether the chain picks the argmax instead of drawing.
    pub fn is_greedy(&self) -> bool {
        self.temp <= 0.0
    }

    fn penalties_active(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// The last step of the chain: picks one candidate.
#[derive(Debug)]
enum Selector {
    /// The highest logit; the lowest id among equals.
    Greedy,
    /// Softmax, then one uniform draw walked along the cumulative probabilities.
    Dist { seed: u64, rng: Rng },
}

impl Selector {
    fn describe(&self) -> String {
        match self {
            Selector::Greedy => "greedy".to_string(),
            Selector::Dist { seed, .. } => format!("dist(seed {seed})"),
        }
    }

    fn select(&mut self, cands: &mut Candidates) -> u32 {
        match self {
            Selector::Greedy => argmax(cands.as_slice()),
            Selector::Dist { rng, .. } => draw(cands, rng.next_f64()),
        }
    }

    fn reset(&mut self) {
        if let Selector::Dist { seed, rng } = self {
            *rng = Rng::new(*seed);
        }
    }
}

fn argmax(cands: &[Candidate]) -> u32 {
    let mut best = cands[0];
    for c in &cands[1..] {
        if c.logit > best.logit || (c.logit == best.logit && c.id < best.id) {
            best = *c;
        }
    }
    best.id
}

/// Softmax, then walk the candidates in array order and take the first whose running sum
/// passes `u` (uniform in [0, 1)): llama.cpp's `dist` rule, except that the sum must pass
/// `u` rather than reach it, so a zero-probability token can never be picked at u = 0.
fn draw(cands: &mut Candidates, u: f64) -> u32 {
    cands.softmax();
    let c = cands.as_slice();
    let target = u; // the probabilities are normalized, so the total is 1
    let mut run = 0.0f64;
    for cand in c {
        run += f64::from(cand.p);
        if run > target {
            return cand.id;
        }
    }
    // Rounding left the sum a hair below u: the last token with any probability.
    c.iter()
        .rev()
        .find(|x| x.p > 0.0)
        .unwrap_or(&c[c.len() - 1])
        .id
}

/// The chain, built once per generation and fed every token that enters the context.
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    n_vocab: usize,
    stages: Vec<Box<dyn Stage>>,
    selector: Selector,
    cands: Candidates, // (n_vocab) capacity, reloaded from the logits on every call
}

impl Sampler {
    /// Validate `cfg` and build the chain for a vocabulary of `n_vocab` logits.
    pub fn new(cfg: SamplerConfig, n_vocab: usize) -> Result<Sampler, SamplerError> {
        cfg.validate()?;
        if n_vocab == 0 {
            return Err(SamplerError::EmptyVocabulary);
        }
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        if cfg.penalties_active() {
            stages.push(Box::new(Penalties::new(
                n_vocab,
                cfg.penalty_last_n as usize,
                cfg.repeat_penalty,
                cfg.frequency_penalty,
                cfg.presence_penalty,
            )));
        }
        let selector = if cfg.is_greedy() {
            Selector::Greedy
        } else {
            if cfg.top_k > 0 {
                stages.push(Box::new(TopK {
                    k: cfg.top_k as usize,
                }));
            }
            if cfg.top_p < 1.0 {
                stages.push(Box::new(TopP { p: cfg.top_p }));
            }
            if cfg.min_p > 0.0 {
                stages.push(Box::new(MinP { p: cfg.min_p }));
            }
            stages.push(Box::new(Temperature { t: cfg.temp }));
            Selector::Dist {
                seed: cfg.seed,
                rng: Rng::new(cfg.seed),
            }
        };
        Ok(Sampler {
            cfg,
            n_vocab,
            stages,
            selector,
            cands: Candidates::with_capacity(n_vocab),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The effective chain, e.g.
    /// "penalties(last 64, repeat 1.10) → top-k 40 → top-p 0.95 → min-p 0.05 → temp 0.80 → dist(seed 42)".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.stages.iter().map(|s| s.describe()).collect();
        parts.push(self.selector.describe());
        parts.join(" → ")
    }

    /// Pick the next token from one row of logits (`n_vocab` long). Allocates nothing.
    /// Does not accept the token: call `accept` with what actually enters the context.
    ///
    /// Panics if `logits.len() != n_vocab` (a caller bug: the model and the sampler disagree
    /// on the vocabulary).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.check_len(logits);
        self.cands.fill(logits);
        for stage in &mut self.stages {
            stage.apply(&mut self.cands);
        }
        self.selector.select(&mut self.cands)
    }

    /// A token entered the context: the penalties count it.
    ///
    /// Panics if `token >= n_vocab`.
    pub fn accept(&mut self, token: u32) {
        assert!(
            (token as usize) < self.n_vocab,
            "accepted token {token} is outside the vocabulary of {} tokens",
            self.n_vocab
        );
        for stage in &mut self.stages {
            stage.accept(token);
        }
    }

    /// Forget the accepted tokens and restart the random stream from the seed.
    pub fn reset(&mut self) {
        for stage in &mut self.stages {
            stage.reset();
        }
        self.selector.reset();
    }

    /// `sample` with a record: the model's distribution, then the distribution after each
    /// stage (its `top` most likely candidates), and the token picked. It draws from the
    /// same random stream as `sample`, so tracing a step picks the same token and leaves the
    /// sampler in the same state as sampling it. Allocates (it is for looking, not speed).
    pub fn trace(&mut self, logits: &[f32], top: usize) -> Trace {
        self.check_len(logits);
        self.cands.fill(logits);
        let mut views = vec![view(
            "model",
            "softmax of the logits".into(),
            self.cands.as_slice(),
            top,
            None,
            self.n_vocab,
        )];
        for stage in &mut self.stages {
            stage.apply(&mut self.cands);
            let v = view(
                stage.name(),
                stage.describe(),
                self.cands.as_slice(),
                top,
                views.last(),
                self.n_vocab,
            );
            views.push(v);
        }
        // Selectors read logits and write only `p`, so the distribution is still there.
        let chosen = self.selector.select(&mut self.cands);
        let seen = self.cands.as_slice();
        let logit = seen
            .iter()
            .find(|c| c.id == chosen)
            .map_or(f32::NEG_INFINITY, |c| c.logit);
        let chosen_p = prob(logit, softmax_norm(seen));
        Trace {
            stages: views,
            chosen,
            chosen_p,
        }
    }

    fn check_len(&self, logits: &[f32]) {
        assert_eq!(
            logits.len(),
            self.n_vocab,
            "the sampler was built for {} logits but got {}",
            self.n_vocab,
            logits.len()
        );
    }
}

/// What `Sampler::trace` saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// "model" first (softmax of the raw logits), then one view per stage of the chain.
    pub stages: Vec<StageView>,
    /// The token the selector picked (the same one `sample` would have).
    pub chosen: u32,
    /// Its probability in the distribution the selector picked from (the last view's).
    pub chosen_p: f32,
}

/// The candidates after one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageView {
    /// "model", "penalties", "top-k", "top-p", "min-p" or "temp".
    pub name: &'static str,
    /// With the settings: "top-k 40".
    pub detail: String,
    /// How many candidates are still in play.
    pub kept: usize,
    /// The most likely of them, best first; `p` is the softmax over all kept candidates.
    pub top: Vec<Candidate>,
    /// Tokens in the previous view's `top` that this stage removed.
    pub dropped: Vec<u32>,
}

fn view(
    name: &'static str,
    detail: String,
    cands: &[Candidate],
    top: usize,
    prev: Option<&StageView>,
    n_vocab: usize,
) -> StageView {
    let norm = softmax_norm(cands);
    let mut best: Vec<Candidate> = cands.to_vec();
    let k = top.min(best.len());
    if k > 0 && k < best.len() {
        best.select_nth_unstable_by(k - 1, better);
    }
    best.truncate(k);
    best.sort_unstable_by(better);
    for c in &mut best {
        c.p = prob(c.logit, norm);
    }
    let dropped = match prev {
        None => Vec::new(),
        Some(prev) => {
            let mut present = vec![false; n_vocab];
            for c in cands {
                present[c.id as usize] = true;
            }
            prev.top
                .iter()
                .filter(|c| !present[c.id as usize])
                .map(|c| c.id)
                .collect()
        }
    };
    StageView {
        name,
        detail,
        kept: cands.len(),
        top: best,
        dropped,
    }
}

/// The softmax normalizer of `cands`: (max logit, Σ exp(logit − max)), so that
/// p = exp(logit − max) / sum.
fn softmax_norm(cands: &[Candidate]) -> (f32, f64) {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = cands.iter().map(|c| f64::from((c.logit - max).exp())).sum();
    (max, sum)
}

fn prob(logit: f32, (max, sum): (f32, f64)) -> f32 {
    (f64::from((logit - max).exp()) / sum) as f32
}

/// The probability of `id` under the softmax of a whole logits row (f64 exponentials and
/// sum).
pub fn softmax_prob(logits: &[f32], id: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (((logits[id as usize] - max) as f64).exp() / sum) as f32
}

/// The `k` most likely tokens under the softmax of a whole logits row, best first (ties to
/// the lower id), with their probabilities (f32 exponentials, f64 sum).
pub fn softmax_top(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if logits.is_empty() || k == 0 {
        return Vec::new();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let mut c: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .map(|(i, &logit)| Candidate {
            id: i as u32,
            logit,
            p: 0.0,
        })
        .collect();
    let k = k.min(c.len());
    if k < c.len() {
        c.select_nth_unstable_by(k - 1, better);
    }
    c.truncate(k);
    c.sort_unstable_by(better);
    c.iter()
        .map(|x| (x.id, (f64::from((x.logit - max).exp()) / sum) as f32))
        .collect()
}

#[cfg(test)]
mod tests;
