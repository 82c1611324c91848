//! The sampling flags shared by the commands that generate (`--temp`, `--top-k`, ...).
//!
//! Every flag is optional so we know where each value came from: `sources()` lists the
//! effective settings with "flag" or "default" (or "random" for a seed we picked), for the
//! header a run prints. Defaults are llama.cpp's.

use std::sync::OnceLock;

use anyhow::Result;
use clap::Args;

use crate::sample::{random_seed, SamplerConfig, SamplerError};

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
    /// The seed picked when --seed is absent, fixed on first use so that `sources` and
    /// `to_config` agree.
    #[arg(skip)]
    random_seed: OnceLock<u64>,
}

impl SamplerArgs {
    /// The seed this run uses: the flag's, or one picked at random once.
    pub fn seed(&self) -> u64 {
        self.seed
            .unwrap_or_else(|| *self.random_seed.get_or_init(random_seed))
    }

    /// The settings, defaults filled in, checked.
    pub fn to_config(&self) -> Result<SamplerConfig> {
        let d = SamplerConfig::default();
        let cfg = SamplerConfig {
            temp: self.temp.unwrap_or(d.temp),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            penalty_last_n: self.repeat_last_n.unwrap_or(d.penalty_last_n),
            seed: self.seed(),
        };
        cfg.validate().map_err(|e| match e {
            SamplerError::Invalid {
                option,
                value,
                reason,
            } => anyhow::anyhow!("invalid value {value} for --{option}: {reason}"),
            other => anyhow::Error::new(other),
        })?;
        Ok(cfg)
    }

    /// Each setting as (flag name, value, where it came from: "flag", "default", or
    /// "random" for a seed picked because --seed was not given). Values are as given, not
    /// validated.
    pub fn sources(&self) -> Vec<(&'static str, String, &'static str)> {
        fn entry<T: ToString>(
            name: &'static str,
            flag: Option<T>,
            default: T,
        ) -> (&'static str, String, &'static str) {
            match flag {
                Some(v) => (name, v.to_string(), "flag"),
                None => (name, default.to_string(), "default"),
            }
        }
        let d = SamplerConfig::default();
        vec![
            entry("temp", self.temp, d.temp),
            entry("top-k", self.top_k, d.top_k),
            entry("top-p", self.top_p, d.top_p),
            entry("min-p", self.min_p, d.min_p),
            entry("repeat-penalty", self.repeat_penalty, d.repeat_penalty),
            entry("repeat-last-n", self.repeat_last_n, d.penalty_last_n),
            entry(
                "frequency-penalty",
                self.frequency_penalty,
                d.frequency_penalty,
            ),
            entry(
                "presence-penalty",
                self.presence_penalty,
                d.presence_penalty,
            ),
            match self.seed {
                Some(s) => ("seed", s.to_string(), "flag"),
                None => ("seed", self.seed().to_string(), "random"),
            },
        ]
    }
}
