//! Sampler settings as a front end collects them: each one given or not, so a later source
//! (a saved chat, a `/set`, a request) can fill only what is missing, and a header can say
//! where each value came from. [`SamplerSettings::resolve`] fills in llama.cpp's defaults
//! and checks the result.

use std::sync::OnceLock;

use super::{random_seed, SamplerConfig, SamplerError};

/// Partial sampler settings; `None` means "not given" (the default applies).
#[derive(Clone, Debug, Default)]
pub struct SamplerSettings {
    pub temp: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalties look at (`SamplerConfig::penalty_last_n`).
    pub repeat_last_n: Option<i32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<u64>,
    /// The seed picked when `seed` is absent, fixed on first use so that `sources` and
    /// `resolve` agree.
    pub picked_seed: OnceLock<u64>,
}

/// Where an effective setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Given (by a flag, a command, a request).
    Given,
    /// llama.cpp's default.
    Default,
    /// A seed picked at random because none was given.
    Random,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Given => "flag",
            Source::Default => "default",
            Source::Random => "random",
        }
    }
}

impl SamplerSettings {
    /// The seed this run uses: the given one, or one picked at random once.
    pub fn seed(&self) -> u64 {
        self.seed
            .unwrap_or_else(|| *self.picked_seed.get_or_init(random_seed))
    }

    /// Whether any setting was given.
    pub fn any_given(&self) -> bool {
        self.sources().iter().any(|s| s.2 == Source::Given)
    }

    /// Every setting missing here taken from `other` (self wins where both have one).
    pub fn or(mut self, other: &SamplerSettings) -> SamplerSettings {
        self.temp = self.temp.or(other.temp);
        self.top_k = self.top_k.or(other.top_k);
        self.top_p = self.top_p.or(other.top_p);
        self.min_p = self.min_p.or(other.min_p);
        self.repeat_penalty = self.repeat_penalty.or(other.repeat_penalty);
        self.repeat_last_n = self.repeat_last_n.or(other.repeat_last_n);
        self.frequency_penalty = self.frequency_penalty.or(other.frequency_penalty);
        self.presence_penalty = self.presence_penalty.or(other.presence_penalty);
        self.seed = self.seed.or(other.seed);
        self
    }

    /// The settings, defaults filled in, checked.
    pub fn resolve(&self) -> Result<SamplerConfig, SamplerError> {
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
        cfg.validate()?;
        Ok(cfg)
    }

    /// Each setting as (name as the flag spells it, value, where it came from). Values are
    /// as given, not validated.
    pub fn sources(&self) -> Vec<(&'static str, String, Source)> {
        fn entry<T: ToString>(
            name: &'static str,
            given: Option<T>,
            default: T,
        ) -> (&'static str, String, Source) {
            match given {
                Some(v) => (name, v.to_string(), Source::Given),
                None => (name, default.to_string(), Source::Default),
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
                Some(s) => ("seed", s.to_string(), Source::Given),
                None => ("seed", self.seed().to_string(), Source::Random),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_settings_win_and_defaults_fill_the_rest() {
        let flags = SamplerSettings {
            temp: Some(0.0),
            seed: Some(7),
            ..Default::default()
        };
        let saved = SamplerSettings {
            temp: Some(1.5),
            top_k: Some(3),
            ..Default::default()
        };
        let merged = flags.or(&saved);
        let c = merged.resolve().unwrap();
        assert_eq!((c.temp, c.top_k, c.seed), (0.0, 3, 7));
        assert_eq!(c.top_p, SamplerConfig::default().top_p);
        let src = merged.sources();
        assert_eq!(src[0], ("temp", "0".to_string(), Source::Given));
        assert_eq!(src[2].2, Source::Default);
    }

    #[test]
    fn an_unseeded_run_keeps_the_seed_it_picked() {
        let s = SamplerSettings::default();
        assert_eq!(s.seed(), s.resolve().unwrap().seed);
        assert_eq!(s.sources().last().unwrap().2, Source::Random);
        assert!(!s.any_given());
    }

    #[test]
    fn bad_values_are_named() {
        let s = SamplerSettings {
            top_p: Some(2.0),
            ..Default::default()
        };
        let e = s.resolve().unwrap_err();
        assert!(
            matches!(
                e,
                SamplerError::Invalid {
                    option: "top-p",
                    ..
                }
            ),
            "{e}"
        );
    }
}
