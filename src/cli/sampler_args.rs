//! The sampling flags shared by the commands that generate (`--temp`, `--top-k`, ...).
//!
//! Every flag is optional so we know where each value came from; [`SamplerArgs::settings`]
//! hands them to the engine's [`SamplerSettings`], which fills in llama.cpp's defaults and
//! lists where each effective value came from.

use anyhow::Result;
use clap::Args;

use loupe_engine::sample::{SamplerConfig, SamplerError, SamplerSettings};

#[derive(Args, Debug, Clone, Default)]
pub struct SamplerArgs {
    /// Temperature: below 1 sharpens the distribution, above 1 flattens it; 0 always
    /// picks the most likely token (greedy) [default: 0.8]
    #[arg(
        long,
        value_name = "T",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub temp: Option<f32>,
    /// Keep only the K most likely tokens; 0 = off [default: 40]
    #[arg(
        long,
        value_name = "K",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub top_k: Option<i32>,
    /// Keep the fewest most likely tokens whose probabilities add up to P; 1 = off
    /// [default: 0.95]
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one; 0 = off [default: 0.05]
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub min_p: Option<f32>,
    /// Make tokens seen in the last --repeat-last-n tokens less likely (above 1) or more
    /// likely (below 1); 1 = off [default: 1.0]
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalties look at; 0 = off [default: 64]
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub repeat_last_n: Option<i32>,
    /// Subtract X times a token's count in the recent window from its logit; 0 = off
    /// [default: 0.0]
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub frequency_penalty: Option<f32>,
    /// Subtract X from the logit of any token present in the recent window; 0 = off
    /// [default: 0.0]
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    pub presence_penalty: Option<f32>,
    /// Seed of the random draw; the same seed, model and prompt give the same text
    /// [default: a random seed, printed so the run can be repeated]
    #[arg(long, value_name = "N", help_heading = "Sampling")]
    pub seed: Option<u64>,
}

impl SamplerArgs {
    /// The flags as the engine's partial settings (defaults are filled in by
    /// [`SamplerSettings::resolve`]). Convert once per run: an absent `--seed` becomes a
    /// random one on first use, and every later reader must see the same.
    pub fn settings(&self) -> SamplerSettings {
        SamplerSettings {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// The settings resolved, a bad one reported as the flag a user would fix.
pub fn resolve(settings: &SamplerSettings) -> Result<SamplerConfig> {
    settings.resolve().map_err(|e| match e {
        SamplerError::Invalid {
            option,
            value,
            reason,
        } => anyhow::anyhow!("invalid value {value} for --{option}: {reason}"),
        other => anyhow::Error::new(other),
    })
}
