//! `/save` and `/load`: the conversation's messages and settings as the JSON a session
//! file carries beside the token history and the KV cache.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value};

use super::conversation::{check_n_predict, Conversation};
use super::template::Message;
use loupe_engine::sample::{Sampler, SamplerSettings};
use loupe_engine::session::ContextPolicy;
use loupe_gguf::atomic::Overwrite;

impl Conversation<'_> {
    /// Write the conversation and its cache to `path`; the file's size. `overwrite` says
    /// whether an existing file that is not a session may be replaced.
    pub fn save(&self, path: &Path, overwrite: Overwrite) -> Result<u64> {
        let a = &self.sampler_settings;
        let c = self.sampler.config();
        let extra = json!({
            "template": self.template.name,
            "system": self.system,
            "messages": self.messages.iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect::<Vec<_>>(),
            "n_predict": self.n_predict,
            "policy": self.policy.to_string(),
            "sampler": {
                "temp": c.temp, "top_k": c.top_k, "top_p": c.top_p, "min_p": c.min_p,
                "repeat_penalty": c.repeat_penalty, "repeat_last_n": c.penalty_last_n,
                "frequency_penalty": c.frequency_penalty,
                "presence_penalty": c.presence_penalty, "seed": a.seed(),
            },
        });
        self.session
            .save(path, &extra, overwrite)
            .with_context(|| format!("cannot save the session to {}", path.display()))
    }

    /// What `/save` says once `bytes` went to `path`.
    pub fn saved_line(&self, bytes: u64, path: &Path) -> String {
        format!(
            "saved {} messages, {} tokens ({:.1} MB) to {}",
            self.messages.len(),
            self.session.len(),
            bytes as f64 / 1e6,
            path.display()
        )
    }

    /// Restore a conversation saved by [`Conversation::save`]: messages, system prompt,
    /// settings and the cache, with nothing evaluated. Sampler settings given on the command
    /// line (`flags`) win over the saved ones. The template in use stays (it must be the one
    /// the file was saved with for the cache to be reused; a different one still works, it
    /// just re-evaluates).
    ///
    /// The whole file is read and checked first (the session's own checks, then every
    /// message and setting); only then is anything replaced. On error the conversation,
    /// its settings and its cache are as they were.
    pub fn load(&mut self, path: &Path, flags: &SamplerSettings) -> Result<()> {
        let saved = self.session.read(path)?;
        let chat = Saved::parse(&saved.extra, flags, self.tok.n_vocab())
            .with_context(|| format!("cannot load {}", path.display()))?;
        self.session.restore(saved)?;
        self.messages = chat.messages;
        self.system = chat.system;
        self.n_predict = chat.n_predict.unwrap_or(self.n_predict);
        self.policy = chat.policy.unwrap_or(self.policy);
        self.sampler = chat.sampler;
        self.sampler_settings = chat.sampler_settings;
        self.last_reply.clear();
        Ok(())
    }
}

/// The chat part of a session file, read and checked, not yet applied.
struct Saved {
    messages: Vec<Message>,
    system: Option<String>,
    n_predict: Option<i32>,
    policy: Option<ContextPolicy>,
    sampler_settings: SamplerSettings,
    sampler: Sampler,
}

impl Saved {
    /// Check everything `extra` holds; `flags` win over its sampler settings.
    fn parse(extra: &Value, flags: &SamplerSettings, n_vocab: usize) -> Result<Saved> {
        let bad = |what: &str| anyhow!("its {what} is not valid");
        let messages = match &extra["messages"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .iter()
                .map(|m| match (m["role"].as_str(), m["content"].as_str()) {
                    (Some(r @ ("user" | "assistant")), Some(c)) => Ok(Message::new(r, c)),
                    _ => Err(anyhow!(
                        "its messages must each have a role (user or assistant) and a text, \
                         not {m}"
                    )),
                })
                .collect::<Result<_>>()?,
            _ => return Err(bad("message list")),
        };
        let system = match &extra["system"] {
            Value::Null => None,
            v => Some(v.as_str().ok_or_else(|| bad("system prompt"))?.to_string()),
        };
        let n_predict = match &extra["n_predict"] {
            Value::Null => None,
            v => {
                let n = v.as_i64().ok_or_else(|| bad("reply limit (n_predict)"))?;
                Some(check_n_predict(n).context("its reply limit (n_predict) is not valid")?)
            }
        };
        let policy = match &extra["policy"] {
            Value::Null => None,
            v => Some(
                v.as_str()
                    .ok_or_else(|| bad("context policy"))?
                    .parse()
                    .map_err(|e: String| anyhow!("its context policy is not valid: {e}"))?,
            ),
        };
        let s = &extra["sampler"];
        let f32_of = |k: &str| -> Result<Option<f32>> {
            match &s[k] {
                Value::Null => Ok(None),
                v => v
                    .as_f64()
                    .map(|x| Some(x as f32))
                    .ok_or_else(|| anyhow!("its sampler setting {k} is not a number: {v}")),
            }
        };
        let i32_of = |k: &str| -> Result<Option<i32>> {
            match &s[k] {
                Value::Null => Ok(None),
                v => v
                    .as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .map(Some)
                    .ok_or_else(|| anyhow!("its sampler setting {k} is not a whole number: {v}")),
            }
        };
        let seed = match &s["seed"] {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .ok_or_else(|| anyhow!("its sampler seed is not a whole number: {v}"))?,
            ),
        };
        let saved = SamplerSettings {
            temp: f32_of("temp")?,
            top_k: i32_of("top_k")?,
            top_p: f32_of("top_p")?,
            min_p: f32_of("min_p")?,
            repeat_penalty: f32_of("repeat_penalty")?,
            repeat_last_n: i32_of("repeat_last_n")?,
            frequency_penalty: f32_of("frequency_penalty")?,
            presence_penalty: f32_of("presence_penalty")?,
            seed,
            ..Default::default()
        };
        let sampler_settings = flags.clone().or(&saved);
        let sampler = sampler_settings
            .resolve()
            .and_then(|cfg| Sampler::new(cfg, n_vocab))
            .context("its sampler settings are not valid")?;
        Ok(Saved {
            messages,
            system,
            n_predict,
            policy,
            sampler_settings,
            sampler,
        })
    }
}
