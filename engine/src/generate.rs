//! The one generation loop: prompt tokens in, sampled tokens and text pieces out.
//!
//! ```text
//! prompt ─▶ Session::sync (prefix reuse) ─▶ logits ─▶ sampler ─▶ token ─▶ stream decoder ─▶ piece
//!                                              ▲                    │
//!                                              └── Session::push ◀──┘ (before the next draw)
//! ```
//!
//! Every front end drives this and only renders what it yields: `loupe run`, the chat REPL
//! and its piped mode, `loupe next` (which stops after the prompt and looks at the
//! distribution), and a server, one [`Generator`] per session on as many threads as it
//! likes (a session is one sequence; the model is shared read-only).
//!
//! A token is evaluated only when the next one is asked for, so a generation that stops
//! on length spends no forward pass on logits nobody reads, and a cancelled one stops
//! within one token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};

use crate::model::ops::all_finite;
use crate::model::Model;
use crate::sample::{softmax_prob, softmax_top, Sampler, Trace};
use crate::session::{Session, SyncStats};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Logits that are not numbers: NaN or infinite weights, or a KV cache holding them, make
/// every logit NaN, and a draw from them would pick token 0 every time and print
/// nonsense as if it were the model's answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the model's logits are not finite after {position} tokens ({nan} of {n} are NaN, {inf} \
     infinite): its weights or the KV cache hold NaN or infinite values{culprit}"
)]
pub struct NonFiniteLogits {
    /// Tokens evaluated before these logits.
    pub position: usize,
    pub nan: usize,
    pub inf: usize,
    pub n: usize,
    /// " (tensor \"…\" does)", when one of the model's vectors does.
    culprit: String,
}

/// The one check of the logits a token is drawn from (a pass over one row, beside the
/// sampler's own).
pub fn check_finite(model: &Model, logits: &[f32], position: usize) -> Result<(), NonFiniteLogits> {
    if all_finite(logits) {
        return Ok(());
    }
    let nan = logits.iter().filter(|v| v.is_nan()).count();
    let culprit = model
        .non_finite_vector()
        .map(|name| format!(" (tensor {name:?} does)"))
        .unwrap_or_default();
    Err(NonFiniteLogits {
        position,
        nan,
        inf: logits.iter().filter(|v| v.is_infinite()).count(),
        n: logits.len(),
        culprit,
    })
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model wrote an end-of-generation token (not part of the output).
    Eog,
    /// The token limit was reached.
    Length,
    /// No room is left in the context for another token.
    ContextFull,
    /// The cancellation flag was raised (Ctrl-C, a client that went away).
    Cancelled,
}

impl StopReason {
    /// A short name for logs and JSON: "eog", "length", "context", "cancelled".
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eog => "eog",
            StopReason::Length => "length",
            StopReason::ContextFull => "context",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// How a generation runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenerateOptions {
    /// Tokens to generate at most; `None`: until the model stops or the context is full.
    pub max_tokens: Option<usize>,
    /// Record each token's probability and this many of the most likely candidates
    /// (`Some(0)`: the probability alone); `None` computes neither, which saves a pass over
    /// the vocabulary per token.
    pub top: Option<usize>,
}

/// One generated token: its id, the text it completes, and how likely the model found it.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub id: u32,
    /// The text this token completes; empty while a UTF-8 character is incomplete, and
    /// possibly several tokens' worth when it completes one.
    pub text: String,
    /// Its probability under the model's distribution (softmax of the raw logits), when
    /// [`GenerateOptions::top`] asked for it.
    pub p: Option<f32>,
    /// The model's most likely tokens at that step, best first, with probabilities.
    pub top: Vec<(u32, f32)>,
}

/// What a finished generation did.
#[derive(Clone, Debug)]
pub struct Finished {
    pub stop: StopReason,
    /// The prompt's evaluation: tokens reused from the cache, evaluated, seconds.
    pub prompt: SyncStats,
    /// The generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// Text the decoder held back at the end (an incomplete UTF-8 sequence), already
    /// counted in no [`Token::text`].
    pub tail: String,
    /// Seconds from the first draw to the stop.
    pub secs: f64,
}

impl Finished {
    pub fn tok_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.tokens.len() as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// A generation in progress over one session. Pull tokens with [`Generator::next_token`]
/// until it returns `None`, then [`Generator::finish`].
pub struct Generator<'g, 'm> {
    session: &'g mut Session<'m>,
    tok: &'g Tokenizer,
    sampler: &'g mut Sampler,
    decoder: StreamDecoder<'g>,
    opts: GenerateOptions,
    cancel: Option<&'g AtomicBool>,
    prompt: SyncStats,
    tokens: Vec<u32>,
    /// The last token yielded, not yet evaluated.
    pending: Option<u32>,
    stop: Option<StopReason>,
    started: Option<Instant>,
    /// With [`Generator::ignore_eos`]: the end-of-generation ids, never drawn, and the
    /// logits row they are masked in (vocab), allocated once.
    masked: Option<(Vec<u32>, Vec<f32>)>,
}

impl<'g, 'm> Generator<'g, 'm> {
    /// Evaluate `prompt` in `session` (only what its cache lacks) and get ready to sample.
    /// With a `cancel` flag a long prompt is evaluated in chunks, and a raised flag stops it
    /// with [`crate::session::PromptInterrupted`]. The sampler's penalty window is the
    /// caller's: accept the prompt's tokens into it first if they should count.
    pub fn start(
        session: &'g mut Session<'m>,
        tok: &'g Tokenizer,
        sampler: &'g mut Sampler,
        prompt: &[u32],
        opts: GenerateOptions,
        cancel: Option<&'g AtomicBool>,
    ) -> Result<Generator<'g, 'm>> {
        ensure!(!prompt.is_empty(), "the prompt is empty");
        let vocab = session.model().config.vocab_size;
        ensure!(
            sampler.n_vocab() == vocab && tok.n_vocab() == vocab,
            "the sampler is for {} tokens and the tokenizer has {}, but the model has {}",
            sampler.n_vocab(),
            tok.n_vocab(),
            vocab
        );
        let prompt = session.sync_cancellable(prompt, cancel)?;
        Ok(Generator {
            session,
            tok,
            sampler,
            decoder: tok.stream_decoder(false),
            opts,
            cancel,
            prompt,
            tokens: Vec::new(),
            pending: None,
            stop: None,
            started: None,
            masked: None,
        })
    }

    /// Keep generating past end-of-generation tokens, as llama.cpp's `--ignore-eos` does:
    /// they are never drawn (their logits are minus infinity), so only the length limit or
    /// a full context stops the generation, and a fixed number of tokens can be timed.
    pub fn ignore_eos(mut self) -> Self {
        let vocab = self.session.model().config.vocab_size;
        let eog = (0..vocab as u32)
            .filter(|&id| self.tok.is_eog(id))
            .collect();
        self.masked = Some((eog, vec![0.0; vocab]));
        self
    }

    /// The prompt's evaluation (tokens cached and new, seconds).
    pub fn prompt_stats(&self) -> &SyncStats {
        &self.prompt
    }

    /// The session being extended.
    pub fn session(&self) -> &Session<'m> {
        self.session
    }

    /// The distribution of the next token after each stage of the sampler chain, and the
    /// token a seeded draw would pick (the sampler's state moves on, as after a draw).
    pub fn trace(&mut self, top: usize) -> Result<Trace> {
        self.evaluate_pending()?;
        let logits = self.session.last_logits().context("no logits to look at")?;
        check_finite(self.session.model(), logits, self.session.len())?;
        Ok(self.sampler.trace(logits, top))
    }

    /// The next token, or `None` once the generation has stopped.
    pub fn next_token(&mut self) -> Result<Option<Token>> {
        if self.stop.is_some() {
            return Ok(None);
        }
        self.started.get_or_insert_with(Instant::now);
        if let Some(reason) = self.should_stop() {
            self.stop = Some(reason);
            return Ok(None);
        }
        self.evaluate_pending()?;
        let logits = self
            .session
            .last_logits()
            .context("the session has no logits to sample from")?;
        check_finite(self.session.model(), logits, self.session.len())?;
        let id = match &mut self.masked {
            Some((eog, row)) => {
                row.copy_from_slice(logits);
                for &e in eog.iter() {
                    row[e as usize] = f32::NEG_INFINITY;
                }
                self.sampler.sample(row)
            }
            None => self.sampler.sample(logits),
        };
        if self.tok.is_eog(id) {
            self.stop = Some(StopReason::Eog);
            return Ok(None);
        }
        let (p, top) = match self.opts.top {
            Some(k) => (Some(softmax_prob(logits, id)), softmax_top(logits, k)),
            None => (None, Vec::new()),
        };
        self.sampler.accept(id);
        self.tokens.push(id);
        self.pending = Some(id);
        let text = self.decoder.push(id);
        Ok(Some(Token { id, text, p, top }))
    }

    /// Stop here and report. The last token yielded stays unevaluated (the next
    /// `Session::sync` evaluates it if a later prompt starts with it).
    pub fn finish(mut self) -> Finished {
        Finished {
            stop: self.stop.unwrap_or(StopReason::Cancelled),
            prompt: self.prompt,
            tail: self.decoder.finish(),
            secs: self.started.map_or(0.0, |t| t.elapsed().as_secs_f64()),
            tokens: std::mem::take(&mut self.tokens),
        }
    }

    /// Pull every token, handing each to `on`, and finish.
    pub fn run(mut self, on: &mut dyn FnMut(&Token) -> Result<()>) -> Result<Finished> {
        while let Some(t) = self.next_token()? {
            on(&t)?;
        }
        Ok(self.finish())
    }

    fn should_stop(&self) -> Option<StopReason> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Some(StopReason::Cancelled);
        }
        if self.opts.max_tokens.is_some_and(|n| self.tokens.len() >= n) {
            return Some(StopReason::Length);
        }
        // The pending token needs a position, and its logits a token after it.
        if self.pending.is_some() && self.session.room() == 0 {
            return Some(StopReason::ContextFull);
        }
        None
    }

    fn evaluate_pending(&mut self) -> Result<()> {
        if let Some(id) = self.pending.take() {
            self.session.push(id)?;
        }
        Ok(())
    }
}
