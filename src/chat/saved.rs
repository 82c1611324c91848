//! `/save` and `/load`: the conversation's messages and settings as the JSON a session
//! file carries beside the token history and the KV cache.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::conversation::Conversation;
use super::template::Message;
use loupe_engine::sample::SamplerSettings;
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

    /// Restore a conversation saved by [`Conversation::save`]: messages, system prompt and
    /// the cache, with nothing evaluated. Sampler settings given on the command line
    /// (`flags`) win over the saved ones. The template in use stays (it must be the one
    /// the file was saved with for the cache to be reused; a different one still works,
    /// it just re-evaluates).
    pub fn load(&mut self, path: &Path, flags: &SamplerSettings) -> Result<()> {
        let extra = self.session.load(path)?;
        let messages = extra["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        Message::new(
                            m["role"].as_str().unwrap_or("user"),
                            m["content"].as_str().unwrap_or(""),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.messages = messages;
        self.system = extra["system"].as_str().map(str::to_string);
        self.last_reply.clear();
        if let Some(n) = extra["n_predict"].as_i64() {
            self.n_predict = i32::try_from(n).map_err(|_| {
                anyhow::anyhow!(
                    "{}: n_predict = {n} is out of range (-1, or a count up to {})",
                    path.display(),
                    i32::MAX
                )
            })?;
        }
        if let Some(p) = extra["policy"].as_str().and_then(|p| p.parse().ok()) {
            self.policy = p;
        }
        let s = &extra["sampler"];
        let f32_of = |k: &str| s[k].as_f64().map(|x| x as f32);
        let i32_of = |k: &str| s[k].as_i64().map(|x| x as i32);
        let saved = SamplerSettings {
            temp: f32_of("temp"),
            top_k: i32_of("top_k"),
            top_p: f32_of("top_p"),
            min_p: f32_of("min_p"),
            repeat_penalty: f32_of("repeat_penalty"),
            repeat_last_n: i32_of("repeat_last_n"),
            frequency_penalty: f32_of("frequency_penalty"),
            presence_penalty: f32_of("presence_penalty"),
            seed: s["seed"].as_u64(),
            ..Default::default()
        };
        let args = flags.clone().or(&saved);
        self.set_sampler(args)
    }
}
