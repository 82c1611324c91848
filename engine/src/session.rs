//! A conversation's memory: the token history and the KV cache that holds it, kept across
//! turns.
//!
//! Each turn the chat renders the whole conversation to tokens and calls [`Session::sync`]:
//! the longest prefix already in the cache is kept, the cache is rewound to it, and only
//! the tokens after it are evaluated. When old messages were dropped (the chat's context
//! policy `shift`), the new tokens are the cached ones with a span cut out: the tokens
//! after the cut are kept too, moved down in the cache with their keys re-rotated to their
//! new positions ([`Context::shift`]), and only what follows them is evaluated.
//!
//! A session can be written to a file with its KV cache ([`Session::save`]) and restored
//! without evaluating anything ([`Session::load`]). The file is versioned, checksummed and
//! bound to the model that made it. No terminal I/O here.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use loupe_gguf::atomic::{Kind, Overwrite};

use crate::model::kv_cache::KvTypes;
use crate::model::{Context, Logits, Model};

/// What to do when the next turn would not fit in the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContextPolicy {
    /// Drop the oldest exchanges after the system prompt and say so; `sync` keeps the
    /// tokens after them in the cache, shifted into place, and evaluates only what is new.
    #[default]
    Shift,
    /// Refuse the turn and say which commands free room.
    Stop,
}

impl FromStr for ContextPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shift" => Ok(ContextPolicy::Shift),
            "stop" => Ok(ContextPolicy::Stop),
            _ => Err(format!("{s:?} is not a context policy (shift or stop)")),
        }
    }
}

impl fmt::Display for ContextPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContextPolicy::Shift => "shift",
            ContextPolicy::Stop => "stop",
        })
    }
}

/// Prompt tokens evaluated between two looks at a cancellation flag
/// ([`Session::sync_cancellable`]): a fraction of a second on a small model; the extra
/// logits each chunk computes cost far less.
pub const PROMPT_CHUNK: usize = 128;

/// The cancellation flag was raised while a prompt was being evaluated.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped while reading the prompt ({read} of {total} new tokens read; they stay in the \
     cache and the next turn goes on from there)"
)]
pub struct PromptInterrupted {
    pub read: usize,
    pub total: usize,
}

/// What one `sync` did: tokens reused from the cache, tokens evaluated, and how long.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SyncStats {
    /// Tokens reused from the cache, the shifted ones included.
    pub cached: usize,
    /// Of `cached`, the tokens kept after a dropped span: moved in the cache and
    /// re-rotated, not evaluated again.
    pub shifted: usize,
    pub new: usize,
    pub secs: f64,
}

/// The fewest tokens a context shift keeps: a shorter run is evaluated again (it costs
/// little, and a short run matching by chance could come from another context).
pub const MIN_SHIFT_RUN: usize = 16;

/// How `tokens` can reuse a cache holding `cached`: keep the common prefix `0..prefix`,
/// then, when `drop` is not empty, drop that span of the cache and keep the `run` tokens
/// after it (they equal `tokens[prefix..prefix + run]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    pub prefix: usize,
    pub drop: std::ops::Range<usize>,
    pub run: usize,
}

impl Reuse {
    /// Tokens of the new list the cache holds afterwards.
    pub fn kept(&self) -> usize {
        self.prefix + self.run
    }

    /// The plan for `tokens` against `cached`. The last token is never reused (its logits
    /// are wanted). A shift is planned only when the new list is exactly
    /// `cached[..prefix] ++ cached[prefix + Δ..prefix + Δ + run] ++ rest` for some Δ > 0,
    /// with at least one token kept in front (the start of sequence) and a run of at least
    /// [`MIN_SHIFT_RUN`]; of several Δ the longest run wins, then the smallest Δ. Anything
    /// else is evaluated again: a cache is never made from tokens that do not match.
    pub fn plan(cached: &[u32], tokens: &[u32]) -> Reuse {
        let limit = tokens.len().saturating_sub(1);
        let prefix = cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(limit);
        let none = Reuse {
            prefix,
            drop: prefix..prefix,
            run: 0,
        };
        if prefix == 0 || prefix >= cached.len() || limit - prefix < MIN_SHIFT_RUN {
            return none;
        }
        let want = &tokens[prefix..limit];
        let (mut best, mut best_delta) = (0, 0);
        for delta in 1..cached.len() - prefix {
            let from = &cached[prefix + delta..];
            if from.len() <= best {
                break;
            }
            let run = from.iter().zip(want).take_while(|(a, b)| a == b).count();
            if run > best {
                (best, best_delta) = (run, delta);
            }
        }
        if best < MIN_SHIFT_RUN {
            return none;
        }
        Reuse {
            prefix,
            drop: prefix..prefix + best_delta,
            run: best,
        }
    }
}

impl SyncStats {
    pub fn tok_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.new as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Token history + the KV cache holding it.
pub struct Session<'m> {
    ctx: Context<'m>,
    tokens: Vec<u32>, // (n_past) the ids at cache positions 0..n_past
}

/// Magic bytes opening a session file (`LOUPESES`), then the format version.
const MAGIC: &[u8] = Kind::Session.magic();
pub const FILE_VERSION: u32 = 1;

/// A session header's size bound: a fixed allowance (system prompt, settings) plus a
/// generous one per context position, far above what a conversation that fits takes.
const HEADER_BASE: u64 = 1 << 20;
const HEADER_PER_TOKEN: u64 = 4 << 10;

/// Why a session file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    #[error("{0} is not a loupe session file")]
    NotASession(String),
    #[error("{path} is {what}, not a loupe session file")]
    NotAFile { path: String, what: &'static str },
    #[error(
        "{path} is {size} bytes, more than a session of this model with --ctx {n_ctx} can be \
         ({max} bytes): it was saved with a longer context (run with a larger --ctx), or it \
         is damaged"
    )]
    TooLarge {
        path: String,
        size: u64,
        max: u64,
        n_ctx: usize,
    },
    #[error("{path} is a session file of version {found}; this loupe reads version {supported}")]
    Version {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
    #[error("{path} was saved with another model ({saved}); this one is {current}")]
    OtherModel {
        path: String,
        saved: String,
        current: String,
    },
    #[error("{path} was saved with a {saved} KV cache; this run uses {current} (--kv-type)")]
    KvType {
        path: String,
        saved: String,
        current: String,
    },
    #[error(
        "{path} holds a {ty} KV cache with {saved}; this loupe stores {current} (as \
         llama.cpp does), so the saved cache cannot be reused: start the conversation again"
    )]
    KvRotation {
        path: String,
        ty: String,
        saved: String,
        current: String,
    },
    #[error("{path} holds {n} tokens, more than --ctx {n_ctx}: run with --ctx {n} or more")]
    TooLong {
        path: String,
        n: usize,
        n_ctx: usize,
    },
}

impl<'m> Session<'m> {
    pub fn new(ctx: Context<'m>) -> Session<'m> {
        let mut ctx = ctx;
        ctx.truncate(0);
        Session {
            ctx,
            tokens: Vec::new(),
        }
    }

    pub fn model(&self) -> &'m Model {
        self.ctx.model
    }

    pub fn n_ctx(&self) -> usize {
        self.ctx.n_ctx()
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Positions still free.
    pub fn room(&self) -> usize {
        self.n_ctx() - self.tokens.len()
    }

    /// Forget everything from position `n` on.
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.ctx.truncate(self.tokens.len());
    }

    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// How many leading tokens of `tokens` the cache already holds.
    pub fn common_prefix(&self, tokens: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Make the cache reuse what it can of `tokens` ([`Reuse::plan`]): rewind it to the
    /// common prefix, or, when `tokens` cut a span out of what is cached, drop that span
    /// and shift the run after it into place. Returns (tokens of `tokens` now cached, of
    /// them shifted).
    fn reuse(&mut self, tokens: &[u32]) -> Result<(usize, usize)> {
        let plan = Reuse::plan(&self.tokens, tokens);
        if plan.run == 0 {
            self.truncate(plan.prefix);
            return Ok((plan.prefix, 0));
        }
        // Forget what follows the run, then cut the span out.
        self.truncate(plan.drop.end + plan.run);
        if let Err(e) = self.ctx.shift(plan.drop.clone()) {
            self.truncate(plan.prefix);
            return Err(e);
        }
        self.tokens.drain(plan.drop.clone());
        debug_assert_eq!(self.tokens, tokens[..plan.kept()]);
        Ok((plan.kept(), plan.run))
    }

    /// Make the cache hold exactly `tokens`: keep the longest common prefix (and, after a
    /// dropped span, the run of cached tokens that follows it: [`Reuse::plan`]), evaluate
    /// the rest, and return the last token's logits. The last token is always evaluated
    /// (its logits are not kept), so at least one token is new.
    pub fn sync(&mut self, tokens: &[u32]) -> Result<(SyncStats, &[f32])> {
        ensure!(!tokens.is_empty(), "nothing to evaluate");
        ensure!(
            tokens.len() <= self.n_ctx(),
            "{} tokens do not fit in --ctx {}",
            tokens.len(),
            self.n_ctx()
        );
        let t0 = Instant::now();
        let (keep, shifted) = self.reuse(tokens)?;
        let new = &tokens[keep..];
        let logits = self.ctx.eval(new, Logits::Last)?;
        self.tokens.extend_from_slice(new);
        let stats = SyncStats {
            cached: keep,
            shifted,
            new: new.len(),
            secs: t0.elapsed().as_secs_f64(),
        };
        Ok((stats, logits))
    }

    /// [`Session::sync`] that can be stopped: a prompt with more than [`PROMPT_CHUNK`] new
    /// tokens is evaluated a chunk at a time, and `cancel` is looked at before each chunk.
    /// Stopped, it returns [`PromptInterrupted`]; what was evaluated stays in
    /// the cache (a later sync goes on from there).
    pub fn sync_cancellable(
        &mut self,
        tokens: &[u32],
        cancel: Option<&AtomicBool>,
    ) -> Result<SyncStats> {
        let Some(cancel) = cancel else {
            return Ok(self.sync(tokens)?.0);
        };
        ensure!(!tokens.is_empty(), "nothing to evaluate");
        // Shift before the first chunk: the run kept may be longer than a chunk.
        let t0 = Instant::now();
        let (cached, shifted) = self.reuse(tokens)?;
        let total = tokens.len() - cached;
        let mut stats = SyncStats {
            cached,
            shifted,
            new: 0,
            secs: t0.elapsed().as_secs_f64(),
        };
        let mut end = cached;
        loop {
            if cancel.load(Ordering::Relaxed) {
                let read = stats.new;
                return Err(PromptInterrupted { read, total }.into());
            }
            end = if tokens.len() - end > PROMPT_CHUNK {
                end + PROMPT_CHUNK
            } else {
                tokens.len()
            };
            let (s, _) = self.sync(&tokens[..end])?;
            stats.new += s.new;
            stats.secs += s.secs;
            if end == tokens.len() {
                return Ok(stats);
            }
        }
    }

    /// The last token's logits, while the cache ends with the token they were computed
    /// for (after [`Session::sync`] or [`Session::push`]; `None` after a truncation or a
    /// load).
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.ctx.last_logits()
    }

    /// Evaluate one more token (a generated one) and return its logits.
    pub fn push(&mut self, token: u32) -> Result<&[f32]> {
        ensure!(
            self.room() > 0,
            "the context is full ({} tokens)",
            self.n_ctx()
        );
        let logits = self.ctx.eval(&[token], Logits::Last)?;
        self.tokens.push(token);
        Ok(logits)
    }
}

/// A model's identity for session files: its size and a hash of its header (metadata and
/// tensor directory) and of the first MiB of tensor data.
pub fn model_fingerprint(model: &Model) -> Result<String> {
    let f = &model.file;
    let head = f.data_offset().min(f.file_size());
    let take = (head + (1 << 20)).min(f.file_size());
    let mut bytes = Vec::with_capacity(take as usize);
    std::fs::File::open(f.path())
        .and_then(|h| h.take(take).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", f.path().display()))?;
    let hash = Sha256::digest(&bytes);
    let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{} bytes, {hex}", f.file_size()))
}

/// A model's name for messages: `general.name`, else the file name.
fn model_label(model: &Model) -> String {
    let md = model.file.metadata();
    let name = md.get_opt_str("general.name").ok().flatten();
    let file = model
        .file
        .path()
        .file_name()
        .map(|f| f.to_string_lossy().into_owned());
    name.map(str::to_string)
        .or(file)
        .unwrap_or_else(|| "?".into())
}

/// The KV types as a session header records them: "f16" when keys and values share a
/// type (as every file before quantized caches did), "k q8_0, v f16" otherwise.
fn kv_name(t: KvTypes) -> String {
    t.to_string()
}

impl Session<'_> {
    /// Write the session (token history, KV cache of positions `0..len`, and `extra`: the
    /// chat's transcript and settings) to `path`, through a temporary file renamed into
    /// place. An existing file is replaced when it is a session (or empty), any regular
    /// file with [`Overwrite::AnyFile`]; never a device, a folder or an open model (see
    /// [`loupe_gguf::atomic`]).
    ///
    /// Layout: magic, version (u32 LE), header length (u64 LE), header JSON, cache length
    /// (u64 LE), cache bytes, SHA-256 of everything before it.
    pub fn save(&self, path: &Path, extra: &Value, overwrite: Overwrite) -> Result<u64> {
        let model = self.model();
        let cache = self.ctx.kv_cache();
        let header = json!({
            "model": model_fingerprint(model)?,
            "model_name": model_label(model),
            "kv_type": kv_name(cache.types),
            "kv_rotation": cache.rotation.describe(),
            "n_ctx": self.n_ctx(),
            "tokens": self.tokens,
            "chat": extra,
        });
        let header = serde_json::to_vec(&header)?;
        let kv = cache.to_bytes(self.tokens.len());
        let mut buf = Vec::with_capacity(header.len() + kv.len() + 64);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FILE_VERSION.to_le_bytes());
        buf.extend_from_slice(&(header.len() as u64).to_le_bytes());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        buf.extend_from_slice(&kv);
        let sum = Sha256::digest(&buf);
        buf.extend_from_slice(&sum);

        loupe_gguf::atomic::write_atomically(path, "session", Kind::Session, overwrite, &buf)?;
        Ok(buf.len() as u64)
    }

    /// The largest session file this session could load: the fixed fields, a header of
    /// at most [`HEADER_BASE`] plus [`HEADER_PER_TOKEN`] bytes per context position (token
    /// ids and the transcript's text, JSON-escaped), and the KV cache of a full context.
    fn max_file_len(&self) -> u64 {
        let n_ctx = self.n_ctx() as u64;
        let fixed = 8 + 4 + 8 + 8 + 32;
        let header = HEADER_BASE + HEADER_PER_TOKEN * n_ctx;
        let kv = self.ctx.kv_cache().saved_len(self.n_ctx()) as u64;
        fixed + header + kv
    }

    /// Read a session saved by [`Session::save`] and check that it fits this one (same
    /// model, same KV type, at least as much context) without changing anything:
    /// [`Session::restore`] then puts it in place. [`Session::load`] does both; a caller
    /// with more to check (the chat's settings in `extra`) checks in between, so that a
    /// refused file changes nothing.
    ///
    /// Only a regular file is opened (a FIFO would wait for a writer, a device never end),
    /// and its size is bounded before it is read: at most what a session of this context
    /// holds.
    pub fn read(&self, path: &Path) -> Result<SavedSession> {
        let p = path.display().to_string();
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {p}"))?;
        if let Some(what) = loupe_gguf::not_regular(meta.file_type()) {
            return Err(SessionFileError::NotAFile { path: p, what }.into());
        }
        let mut file = File::open(path).with_context(|| format!("cannot read {p}"))?;
        let mut head = Vec::with_capacity(12);
        (&mut file)
            .take(12)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read {p}"))?;
        if head.len() < 12 || &head[..8] != MAGIC {
            return Err(SessionFileError::NotASession(p).into());
        }
        let max = self.max_file_len();
        let size = file.metadata().map_or(meta.len(), |m| m.len());
        if size > max {
            return Err(SessionFileError::TooLarge {
                path: p,
                size,
                max,
                n_ctx: self.n_ctx(),
            }
            .into());
        }
        let mut buf = head;
        // `take`: the file may have grown since its size was read.
        file.take(max - 12 + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {p}"))?;
        let damaged = |reason: &str| SessionFileError::Damaged {
            path: p.clone(),
            reason: reason.to_string(),
        };
        if buf.len() as u64 > max {
            return Err(damaged("it grew while it was read").into());
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().unwrap());
        if version != FILE_VERSION {
            return Err(SessionFileError::Version {
                path: p,
                found: version,
                supported: FILE_VERSION,
            }
            .into());
        }
        if buf.len() < 12 + 8 + 8 + 32 {
            return Err(damaged("it is cut short").into());
        }
        let (body, sum) = buf.split_at(buf.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(damaged("its checksum does not match (cut short or altered)").into());
        }
        let mut at = 12;
        let mut section = |what: &str| -> Result<&[u8], SessionFileError> {
            let len = body
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
                .ok_or_else(|| damaged(&format!("no length for its {what}")))?;
            let bytes = body
                .get(at + 8..(at + 8).saturating_add(len))
                .ok_or_else(|| damaged(&format!("its {what} runs past the end")))?;
            at += 8 + len;
            Ok(bytes)
        };
        let header: Value = serde_json::from_slice(section("header")?)
            .map_err(|e| damaged(&format!("bad header: {e}")))?;
        let kv = section("KV cache")?;

        let model = self.model();
        let current = model_fingerprint(model)?;
        let saved = header["model"].as_str().unwrap_or("?");
        if saved != current {
            let name = header["model_name"].as_str().unwrap_or("?");
            return Err(SessionFileError::OtherModel {
                path: p,
                saved: format!("{name}, {saved}"),
                current: format!("{}, {current}", model_label(model)),
            }
            .into());
        }
        let ty = kv_name(self.ctx.kv_cache().types);
        let saved_ty = header["kv_type"].as_str().unwrap_or("?");
        if saved_ty != ty {
            return Err(SessionFileError::KvType {
                path: p,
                saved: saved_ty.into(),
                current: ty,
            }
            .into());
        }
        // Files from before the rotation have no such field: their heads are unturned.
        let turn = self.ctx.kv_cache().rotation.describe();
        let saved_turn = header["kv_rotation"].as_str().unwrap_or("");
        if saved_turn != turn {
            let name = |t: &str| match t {
                "" => "heads as they are".to_string(),
                t => t.to_string(),
            };
            return Err(SessionFileError::KvRotation {
                path: p,
                ty,
                saved: name(saved_turn),
                current: name(&turn),
            }
            .into());
        }
        let tokens: Vec<u32> = serde_json::from_value(header["tokens"].clone())
            .map_err(|e| damaged(&format!("bad token list: {e}")))?;
        if tokens.len() > self.n_ctx() {
            return Err(SessionFileError::TooLong {
                path: p,
                n: tokens.len(),
                n_ctx: self.n_ctx(),
            }
            .into());
        }
        let n_vocab = model.config.vocab_size as u32;
        if tokens.iter().any(|&t| t >= n_vocab) {
            return Err(damaged("a token id is outside the vocabulary").into());
        }
        let want = self.ctx.kv_cache().saved_len(tokens.len());
        if kv.len() != want {
            let n = tokens.len();
            let reason = format!(
                "its KV cache is {} bytes, {want} expected for {n} tokens",
                kv.len()
            );
            return Err(damaged(&reason).into());
        }
        let kv = at - kv.len()..at;
        Ok(SavedSession {
            path: p,
            tokens,
            extra: header["chat"].clone(),
            bytes: buf,
            kv,
        })
    }

    /// Put a session read by [`Session::read`] in place of this one's tokens and cache.
    pub fn restore(&mut self, saved: SavedSession) -> Result<()> {
        let kv = &saved.bytes[saved.kv.clone()];
        self.ctx
            .restore_cache(saved.tokens.len(), kv)
            .map_err(|e| SessionFileError::Damaged {
                path: saved.path.clone(),
                reason: format!("{e:#}"),
            })?;
        self.tokens = saved.tokens;
        Ok(())
    }

    /// Restore a session saved by [`Session::save`] into this one: the cache is filled
    /// from the file, nothing is evaluated. Returns the `extra` value given to `save`. On
    /// error the session is left as it was.
    pub fn load(&mut self, path: &Path) -> Result<Value> {
        let mut saved = self.read(path)?;
        let extra = saved.extra.take();
        self.restore(saved)?;
        Ok(extra)
    }
}

/// A session file read and checked by [`Session::read`], not yet restored.
pub struct SavedSession {
    path: String,
    tokens: Vec<u32>,
    /// The `extra` value given to [`Session::save`] (the chat's transcript and settings).
    pub extra: Value,
    bytes: Vec<u8>,             // the whole file
    kv: std::ops::Range<usize>, // where its KV cache bytes are in `bytes`
}

#[cfg(test)]
mod tests {
    use super::{Reuse, MIN_SHIFT_RUN};

    fn seq(r: std::ops::Range<u32>) -> Vec<u32> {
        r.collect()
    }

    #[test]
    fn a_dropped_span_keeps_the_run_after_it() {
        // cached: 0..100; new: 0..10 ++ 30..100 ++ [500, 501]
        let cached = seq(0..100);
        let mut new = seq(0..10);
        new.extend(30..100);
        new.extend([500, 501]);
        let p = Reuse::plan(&cached, &new);
        assert_eq!(
            p,
            Reuse {
                prefix: 10,
                drop: 10..30,
                run: 70
            }
        );
        assert_eq!(p.kept(), 80);
        // The run stops before the last token, whose logits are wanted.
        let mut new = seq(0..10);
        new.extend(30..100);
        let p = Reuse::plan(&cached, &new);
        assert_eq!((p.drop.clone(), p.run), (10..30, 69));
    }

    #[test]
    fn anything_else_is_evaluated_again() {
        let cached = seq(0..100);
        let plain = |p: Reuse| p.run == 0 && p.drop.is_empty();
        // An extension, a rewind, a change: the common prefix only.
        assert!(plain(Reuse::plan(&cached, &seq(0..120))));
        assert!(plain(Reuse::plan(&cached, &seq(0..50))));
        let mut changed = seq(0..40);
        changed.extend(1000..1060);
        assert!(plain(Reuse::plan(&cached, &changed)));
        // A run shorter than MIN_SHIFT_RUN.
        let mut short = seq(0..10);
        short.extend(30..30 + MIN_SHIFT_RUN as u32 - 1);
        short.extend(900..950);
        assert!(plain(Reuse::plan(&cached, &short)));
        // Nothing in common at the start (no start of sequence kept).
        assert!(plain(Reuse::plan(&cached, &seq(30..100))));
        // An empty cache, an empty list.
        assert!(plain(Reuse::plan(&[], &seq(0..10))));
        assert!(plain(Reuse::plan(&cached, &[])));
    }

    #[test]
    fn the_longest_run_wins() {
        // After the prefix, 100..120 is cached twice; the second copy runs on to 140.
        let mut cached = seq(0..10);
        cached.push(50);
        cached.extend(100..120);
        cached.push(60);
        cached.extend(100..140);
        let mut new = seq(0..10);
        new.extend(100..140);
        new.push(7);
        let p = Reuse::plan(&cached, &new);
        assert_eq!((p.prefix, p.drop, p.run), (10, 10..32, 40));
    }
}
