//! A conversation: the messages, the template that renders them, the session that holds
//! them in the KV cache, and one turn of generation.
//!
//! A turn: render every message (plus the assistant header) → tokens → fit them in the
//! context (the policy may drop old exchanges) → `Session::sync` evaluates only what the
//! cache lacks → sample until an end-of-generation token, the reply limit, a full context
//! or an interrupt. The reply, even a partial one, becomes the last message.
//!
//! The interrupt (Ctrl-C in the REPL) reaches the generator, which looks at it between
//! chunks of a long prompt and before each reply token, so a long prompt stops too; the
//! template runs on a fuel budget (see `template.rs`) and cannot hang.

use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};

use super::template::{ChatTemplate, Message};
use loupe_engine::generate::{GenerateOptions, Generator, StopReason};
use loupe_engine::sample::{Sampler, SamplerSettings};
use loupe_engine::session::{ContextPolicy, Session, SyncStats};
use loupe_engine::tokenizer::Tokenizer;

/// How many candidates each reply token keeps for `/zoom N`.
pub const ZOOM_TOP: usize = 8;

/// One generated token and how likely the model found it.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: u32,
    /// Its probability under the model's distribution (softmax of the raw logits).
    pub p: f32,
    /// The model's most likely tokens at that step, best first.
    pub top: Vec<(u32, f32)>,
}

/// What a turn did, for the stats line.
#[derive(Clone, Copy, Debug)]
pub struct TurnStats {
    pub ctx_used: usize,
    pub n_ctx: usize,
    pub prompt: SyncStats,
    pub reply_tokens: usize,
    pub reply_secs: f64,
    pub stop: StopReason,
}

impl TurnStats {
    /// `[ctx 312/4096 · prompt 14 new + 298 cached, 210 tok/s · reply 45 tok, 38 tok/s]`;
    /// after a context shift `298 cached (120 shifted)`.
    pub fn line(&self) -> String {
        let rate = if self.reply_secs > 0.0 {
            self.reply_tokens as f64 / self.reply_secs
        } else {
            0.0
        };
        let shifted = match self.prompt.shifted {
            0 => String::new(),
            n => format!(" ({n} shifted)"),
        };
        format!(
            "[ctx {}/{} · prompt {} new + {} cached{shifted}, {:.0} tok/s · reply {} tok, {:.0} tok/s]",
            self.ctx_used,
            self.n_ctx,
            self.prompt.new,
            self.prompt.cached,
            self.prompt.tok_per_s(),
            self.reply_tokens,
            rate
        )
    }
}

/// A reply limit as `-n`, `/set n` and a saved session give it: -1 (none) or at least 0.
pub fn check_n_predict(n: i64) -> Result<i32> {
    match i32::try_from(n) {
        Ok(n) if n >= -1 => Ok(n),
        _ => bail!("the reply limit must be -1 (until the model stops) or at least 0, not {n}"),
    }
}

/// Things a turn tells whoever shows it, as they happen.
pub enum Event<'a> {
    /// Old exchanges were dropped to make room (`--context-policy shift`). The tokens
    /// after them usually stay in the cache, shifted into place: `PromptDone`'s
    /// `shifted` says how many.
    Dropped {
        exchanges: usize,
        tokens: usize,
        first_words: &'a str,
    },
    /// The prompt is evaluated; the reply starts. `shifted` > 0: that many tokens after
    /// dropped exchanges were moved in the cache rather than evaluated again.
    PromptDone(&'a SyncStats),
    /// A piece of the reply (may be empty while a UTF-8 character is incomplete).
    Token {
        text: &'a str,
        record: &'a TokenRecord,
    },
}

/// The chat: settings, messages and the session holding them.
pub struct Conversation<'m> {
    pub session: Session<'m>,
    pub tok: &'m Tokenizer,
    pub template: ChatTemplate,
    pub system: Option<String>,
    /// User and assistant messages, alternating, oldest first (the system prompt apart).
    pub messages: Vec<Message>,
    /// The sampler settings as given (flags, `/set`, a loaded session).
    pub sampler_settings: SamplerSettings,
    pub sampler: Sampler,
    /// Reply limit in tokens; negative: until the model stops or the context is full.
    pub n_predict: i32,
    pub policy: ContextPolicy,
    /// Read control-token text in messages (`<|im_start|>`) as control tokens (`--special`);
    /// off, only the template's markup is.
    pub special: bool,
    /// The tokens of the last reply, for `/zoom`.
    pub last_reply: Vec<TokenRecord>,
    pub last_stats: Option<TurnStats>,
}

impl<'m> Conversation<'m> {
    pub fn new(
        session: Session<'m>,
        tok: &'m Tokenizer,
        template: ChatTemplate,
        sampler_settings: SamplerSettings,
    ) -> Result<Conversation<'m>> {
        let sampler = Sampler::new(sampler_settings.resolve()?, tok.n_vocab())?;
        Ok(Conversation {
            session,
            tok,
            template,
            system: None,
            messages: Vec::new(),
            sampler_settings,
            sampler,
            n_predict: -1,
            policy: ContextPolicy::Shift,
            special: false,
            last_reply: Vec::new(),
            last_stats: None,
        })
    }

    /// Rebuild the sampler after its settings changed.
    pub fn set_sampler(&mut self, settings: SamplerSettings) -> Result<()> {
        self.sampler = Sampler::new(settings.resolve()?, self.tok.n_vocab())?;
        self.sampler_settings = settings;
        Ok(())
    }

    /// Every message the template sees: the system prompt first, if any.
    pub fn all_messages(&self) -> Vec<Message> {
        self.messages_from(0)
    }

    /// The system prompt, if any, and the messages from `start` on.
    fn messages_from(&self, start: usize) -> Vec<Message> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.system {
            all.push(Message::new("system", s.clone()));
        }
        all.extend(self.messages[start..].iter().cloned());
        all
    }

    /// Tokens of the conversation as it stands, with the assistant header when `prompt`.
    pub fn render_tokens(&self, prompt: bool) -> Result<Vec<u32>> {
        self.tokens_from(0, prompt)
    }

    /// [`Conversation::render_tokens`] without the messages before `start`.
    fn tokens_from(&self, start: usize, prompt: bool) -> Result<Vec<u32>> {
        self.template
            .tokens(self.tok, &self.messages_from(start), prompt, self.special)
    }

    /// Positions to keep free for the reply when fitting the prompt.
    fn reserve(&self) -> usize {
        let n_ctx = self.session.n_ctx();
        if self.n_predict > 0 {
            (self.n_predict as usize).min(n_ctx / 2)
        } else {
            (n_ctx / 4).min(256)
        }
    }

    /// Rewind the cache to what the conversation still shares with it (after /undo, /edit,
    /// /system, /reset), so it holds nothing that was taken back.
    pub fn rewind(&mut self) -> Result<()> {
        let tokens = self.render_tokens(false)?;
        let keep = self.session.common_prefix(&tokens);
        self.session.truncate(keep);
        Ok(())
    }

    /// Forget the messages (the system prompt stays) and the cache.
    pub fn reset(&mut self) {
        self.messages.clear();
        self.last_reply.clear();
        self.session.reset();
    }

    /// Drop the last exchange (the last user message and the reply to it).
    pub fn undo(&mut self) -> Result<usize> {
        let Some(i) = self.messages.iter().rposition(|m| m.role == "user") else {
            bail!("nothing to undo");
        };
        let n = self.messages.len() - i;
        self.messages.truncate(i);
        self.last_reply.clear();
        self.rewind()?;
        Ok(n)
    }

    /// Index in `messages` of the `n`-th user message (1-based).
    pub fn user_index(&self, n: usize) -> Option<usize> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == "user")
            .nth(n.checked_sub(1)?)
            .map(|(i, _)| i)
    }

    /// Replace the `n`-th user message and drop everything after it.
    pub fn edit(&mut self, n: usize, text: &str) -> Result<()> {
        let count = self.messages.iter().filter(|m| m.role == "user").count();
        let Some(i) = self.user_index(n) else {
            bail!("there is no message {n} (you have written {count}; /context lists them)");
        };
        self.messages.truncate(i);
        self.rewind()?;
        self.messages.push(Message::new("user", text));
        Ok(())
    }

    /// Prepare `/regen`: drop the last reply so the last message gets a new one.
    pub fn drop_last_reply(&mut self) -> Result<()> {
        match self.messages.last() {
            Some(m) if m.role == "assistant" => {
                self.messages.pop();
                Ok(())
            }
            Some(_) => Ok(()),
            None => bail!("there is no message to answer yet"),
        }
    }

    /// Fit the conversation in the context under the policy; the tokens to evaluate.
    /// Exchanges are dropped only once the rest fits: a turn refused changes nothing.
    fn fit(&mut self, on: &mut dyn FnMut(Event) -> Result<()>) -> Result<Vec<u32>> {
        let n_ctx = self.session.n_ctx();
        let reserve = self.reserve();
        // The oldest `start` messages are left out (whole exchanges), `dropped` of them.
        let (mut start, mut dropped, mut dropped_tokens) = (0, 0, 0);
        loop {
            let tokens = self.tokens_from(start, true)?;
            let fits = tokens.len() + reserve <= n_ctx;
            let more_than_last = self.messages.len() - start > 1;
            match self.policy {
                _ if fits => {}
                ContextPolicy::Stop => bail!(
                    "the context is full: this turn needs {} tokens plus {reserve} for the reply, \
                     and --ctx is {n_ctx}. /undo drops the last exchange, /reset starts over \
                     (or restart with a larger --ctx, or --context-policy shift)",
                    tokens.len()
                ),
                ContextPolicy::Shift if more_than_last => {
                    // Leave out the oldest exchange: a user message and the replies after it.
                    let end = self.messages[start + 1..]
                        .iter()
                        .position(|m| m.role == "user")
                        .map_or(self.messages.len() - 1, |p| start + 1 + p);
                    start = end;
                    dropped += 1;
                    let after = self.tokens_from(start, true)?.len();
                    dropped_tokens += tokens.len().saturating_sub(after);
                    continue;
                }
                // Only the last message is left: let it in with less room to reply.
                ContextPolicy::Shift if tokens.len() < n_ctx => {}
                ContextPolicy::Shift => bail!(
                    "this message alone takes {} tokens, more than --ctx {n_ctx}: shorten it or \
                     restart with a larger --ctx",
                    tokens.len()
                ),
            }
            if dropped > 0 {
                let first_words = preview(&self.messages[0].content, 40);
                self.messages.drain(..start);
                on(Event::Dropped {
                    exchanges: dropped,
                    tokens: dropped_tokens,
                    first_words: &first_words,
                })?;
            }
            return Ok(tokens);
        }
    }

    /// Add a user message and answer it.
    pub fn send(
        &mut self,
        text: &str,
        stop: &AtomicBool,
        on: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<TurnStats> {
        self.messages.push(Message::new("user", text));
        let result = self.respond(stop, on);
        if result.is_err() && self.messages.last().is_some_and(|m| m.role == "user") {
            self.messages.pop();
        }
        result
    }

    /// Answer the last message: the reply streams through `on` and becomes the last
    /// message. `stop` (Ctrl-C) ends it early; the partial reply is kept.
    pub fn respond(
        &mut self,
        stop: &AtomicBool,
        on: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<TurnStats> {
        let tokens = self.fit(on)?;
        let opts = GenerateOptions {
            max_tokens: usize::try_from(self.n_predict).ok(),
            top: Some(ZOOM_TOP),
        };
        let tok = self.tok;
        let gen = Generator::start(
            &mut self.session,
            tok,
            &mut self.sampler,
            &tokens,
            opts,
            Some(stop),
        )?;
        let prompt = *gen.prompt_stats();
        on(Event::PromptDone(&prompt))?;
        let mut records = Vec::new();
        let done = gen.run(&mut |t| {
            let record = TokenRecord {
                id: t.id,
                p: t.p.unwrap_or(0.0),
                top: t.top.clone(),
            };
            on(Event::Token {
                text: &t.text,
                record: &record,
            })?;
            records.push(record);
            Ok(())
        })?;
        if let (false, Some(record)) = (done.tail.is_empty(), records.last()) {
            on(Event::Token {
                text: &done.tail,
                record,
            })?;
        }
        self.messages
            .push(Message::new("assistant", tok.decode(&done.tokens, false)));
        self.last_reply = records;
        let stats = TurnStats {
            ctx_used: self.session.len(),
            n_ctx: self.session.n_ctx(),
            prompt,
            reply_tokens: done.tokens.len(),
            reply_secs: done.secs,
            stop: done.stop,
        };
        self.last_stats = Some(stats);
        Ok(stats)
    }
}

/// The first `n` characters of `s` on one line, with an ellipsis when cut.
pub fn preview(s: &str, n: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= n {
        flat
    } else {
        let cut: String = flat.chars().take(n).collect();
        format!("{cut}…")
    }
}
