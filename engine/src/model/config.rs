//! Hyperparameters and architecture switches, read from GGUF metadata into one config.
//!
//! loupe runs one parameterized llama-family block; each supported architecture is a set
//! of switches here (norm placement, QK-norm, activation, RoPE style and base, embedding
//! scale, sliding window, soft-capping), never a copy of the forward pass.

use anyhow::{bail, ensure, Context, Result};

use loupe_gguf::{GgufFile, Metadata, Value};

/// The architectures loupe runs, as `general.architecture` names them.
pub const SUPPORTED_ARCHITECTURES: [&str; 5] = ["llama", "qwen2", "qwen3", "gemma2", "gemma3"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
}

/// How RoPE pairs dimensions: adjacent pairs (`Normal`, llama) or the two halves of the
/// head (`Neox`, qwen and gemma).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    Normal,
    Neox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SiLU-gated FFN: down(silu(gate(x)) * up(x)).
    Silu,
    /// GELU(tanh)-gated FFN: down(gelu(gate(x)) * up(x)).
    GeluTanh,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Per-head size of queries and keys.
    pub head_dim: usize,
    /// Per-head size of values.
    pub head_dim_v: usize,
    /// Feed-forward inner size.
    pub hidden_dim: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    pub norm_eps: f32,

    pub rope_style: RopeStyle,
    /// Dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    pub rope_base: f32,
    /// Position multiplier (1 / linear scaling factor).
    pub rope_freq_scale: f32,
    /// RoPE base of the sliding-window layers (gemma3's local layers).
    pub rope_base_local: f32,
    pub rope_freq_scale_local: f32,

    pub activation: Activation,
    /// Gemma multiplies embeddings by √dim.
    pub embed_scale: Option<f32>,
    /// Queries are multiplied by this before the dot with keys.
    pub attn_scale: f32,
    /// Gemma2 caps attention logits: c·tanh(s/c).
    pub attn_softcap: Option<f32>,
    /// Gemma2 (and some gemma3) cap the output logits the same way.
    pub final_softcap: Option<f32>,
    /// Window of the sliding-window layers, in tokens.
    pub sliding_window: Option<usize>,
    /// Which layers use the sliding window.
    pub is_swa: Vec<bool>,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch> {
        Ok(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            other => bail!(
                "architecture {other:?} is not supported (loupe runs: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }

    fn is_gemma(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }
}

impl Config {
    /// The configuration `file`'s metadata states, every value range-checked and the layer
    /// count checked against the file's `blk.N` tensors before anything is sized by it.
    /// The tensors' shapes are checked against it in [`super::weights::Weights::load`].
    pub fn from_file(file: &GgufFile) -> Result<Config> {
        let md = file.metadata();
        let arch_name = md.get_str("general.architecture")?;
        let arch = Arch::from_name(arch_name)?;
        let k = |key: &str| format!("{arch_name}.{key}");
        let dim = count(md, &k("embedding_length"))?;
        let n_layer = layer_count(file, &k("block_count"))?;
        let n_head = per_layer_uniform(md, &k("attention.head_count"))?
            .ok_or_else(|| missing(&k("attention.head_count")))?;
        let n_kv_head = per_layer_uniform(md, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        let hidden_dim = per_layer_uniform(md, &k("feed_forward_length"))?
            .ok_or_else(|| missing(&k("feed_forward_length")))?;
        if n_head % n_kv_head != 0 {
            return Err(bad(
                &k("attention.head_count_kv"),
                n_kv_head,
                format!(
                    "{} = {n_head} query heads do not split into {n_kv_head} equal groups",
                    k("attention.head_count")
                ),
            ));
        }
        let head_dim = match md.get_opt_u64(&k("attention.key_length"))? {
            Some(v) => head_size(&k("attention.key_length"), v)?,
            None if (1..=512).contains(&(dim / n_head)) => dim / n_head,
            None => {
                return Err(bad(
                    &k("embedding_length"),
                    dim,
                    format!(
                        "shared by {} = {n_head} heads makes a head size of {}, outside what \
                         loupe supports (1 to 512)",
                        k("attention.head_count"),
                        dim / n_head
                    ),
                ))
            }
        };
        let head_dim_v = match md.get_opt_u64(&k("attention.value_length"))? {
            Some(v) => head_size(&k("attention.value_length"), v)?,
            None => head_dim,
        };
        let vocab_size = vocab_size(md, &k("vocab_size"))?;
        let n_ctx_train = count(md, &k("context_length"))?;
        let norm_eps = positive(md, &k("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| missing(&k("attention.layer_norm_rms_epsilon")))?;

        let n_rot = match md.get_opt_u64(&k("rope.dimension_count"))? {
            None => head_dim,
            Some(n) if n == 0 || n % 2 == 1 || n > head_dim as u64 => {
                return Err(bad(
                    &k("rope.dimension_count"),
                    n,
                    format!(
                        "must be an even count from 2 to the head size ({head_dim}): RoPE \
                         rotates pairs of a head's dimensions"
                    ),
                ))
            }
            Some(n) => n as usize,
        };
        let rope_base = positive(md, &k("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_freq_scale = rope_freq_scale(md, arch_name)?;

        let mut c = Config {
            arch,
            dim,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            head_dim_v,
            hidden_dim,
            vocab_size,
            n_ctx_train,
            norm_eps,
            rope_style: match arch {
                Arch::Llama => RopeStyle::Normal,
                _ => RopeStyle::Neox,
            },
            n_rot,
            rope_base,
            rope_freq_scale,
            rope_base_local: rope_base,
            rope_freq_scale_local: rope_freq_scale,
            activation: if arch.is_gemma() {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            embed_scale: arch.is_gemma().then(|| (dim as f32).sqrt()),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            sliding_window: None,
            is_swa: vec![false; n_layer],
        };

        let window = md.get_opt_u64(&k("attention.sliding_window"))?;
        match arch {
            Arch::Gemma2 => {
                c.attn_softcap = Some(positive(md, &k("attn_logit_softcapping"))?.unwrap_or(50.0));
                c.final_softcap =
                    Some(positive(md, &k("final_logit_softcapping"))?.unwrap_or(30.0));
                c.sliding_window = Some(match window {
                    None => 4096,
                    Some(0) => {
                        return Err(bad(
                            &k("attention.sliding_window"),
                            0,
                            "a sliding window must hold at least one token",
                        ))
                    }
                    Some(w) => usize::try_from(w).unwrap_or(usize::MAX),
                });
                c.set_swa_pattern(md, &k("attention.sliding_window_pattern"), 2)?;
                // Gemma 2's local layers share the global RoPE unless the file says otherwise.
                if let Some(b) = positive(md, &k("rope.freq_base_swa"))? {
                    c.rope_base_local = b;
                }
            }
            Arch::Gemma3 => {
                // 0 is how some files say "no final soft-capping".
                c.final_softcap = match md.get_opt_f32(&k("final_logit_softcapping"))? {
                    Some(0.0) | None => None,
                    Some(_) => positive(md, &k("final_logit_softcapping"))?,
                };
                if let Some(w) = window.filter(|&w| w > 0) {
                    c.sliding_window = Some(usize::try_from(w).unwrap_or(usize::MAX));
                    c.set_swa_pattern(md, &k("attention.sliding_window_pattern"), 6)?;
                    // Local layers: their own base (10000 unless stated), unscaled positions.
                    c.rope_base_local = positive(md, &k("rope.freq_base_swa"))?.unwrap_or(10000.0);
                    c.rope_freq_scale_local = 1.0;
                }
            }
            _ => {}
        }
        if arch.is_gemma() {
            // Gemma 27B scales queries by the model width per head, the others by head size.
            let is_27b = matches!((arch, n_layer), (Arch::Gemma2, 46) | (Arch::Gemma3, 62));
            if is_27b {
                c.attn_scale = 1.0 / ((dim / n_head) as f32).sqrt();
            }
        }
        Ok(c)
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    pub fn kv_dim_v(&self) -> usize {
        self.n_kv_head * self.head_dim_v
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Sliding-window layers: from an explicit per-layer bool array, or every layer but
    /// each `n`-th (gemma: the 6th, 12th, … are global).
    fn set_swa_pattern(&mut self, md: &Metadata, key: &str, default_n: usize) -> Result<()> {
        match md.get(key) {
            Some(Value::Array(loupe_gguf::Array::Bool(v))) => {
                ensure!(
                    v.len() >= self.n_layer,
                    "{key} has {} entries for {} layers",
                    v.len(),
                    self.n_layer
                );
                self.is_swa = v[..self.n_layer].to_vec();
            }
            _ => {
                let n = md
                    .get_opt_u64(key)?
                    .map_or(default_n, |v| usize::try_from(v).unwrap_or(usize::MAX));
                self.is_swa = (0..self.n_layer)
                    .map(|il| n == 0 || il % n < n - 1)
                    .collect();
            }
        }
        Ok(())
    }
}

/// The largest model dimension (width, heads, vocabulary, context) loupe believes: no
/// tensor of a real file comes near, and products of two such values cannot overflow.
const MAX_COUNT: u64 = u32::MAX as u64;

/// What is wrong with a model's configuration: a metadata value out of its range, or the
/// metadata and the file's tensors disagreeing. Each names the key or tensor and the values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A metadata value that no model can have, or that contradicts another.
    #[error("{key} = {value}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{key} is missing")]
    Missing { key: String },
    /// A tensor the configuration implies is not in the file.
    #[error("the model has no tensor {name:?} ({why})")]
    MissingTensor { name: String, why: String },
    /// A tensor whose shape is not the one the configuration implies.
    #[error("tensor {name:?} has shape {found:?}, but {why} make it {expected:?}")]
    Shape {
        name: String,
        found: Vec<u64>,
        expected: Vec<usize>,
        why: String,
    },
    /// A tensor the configuration does not use: the file describes another model than
    /// its metadata (llama.cpp refuses such a file too).
    #[error("tensor {name:?} is not used by a {arch} model as its metadata describes it: the file and its metadata disagree")]
    Unused { name: String, arch: &'static str },
}

fn bad(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> anyhow::Error {
    ConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
    .into()
}

fn missing(key: &str) -> anyhow::Error {
    ConfigError::Missing {
        key: key.to_string(),
    }
    .into()
}

/// A count (a width, a vocabulary, a context length): from 1 to [`MAX_COUNT`].
fn count_value(key: &str, v: i128) -> Result<usize> {
    if v < 1 {
        return Err(bad(key, v, "must be at least 1"));
    }
    if v > i128::from(MAX_COUNT) {
        return Err(bad(
            key,
            v,
            format!("larger than any model loupe can run (at most {MAX_COUNT})"),
        ));
    }
    Ok(v as usize)
}

fn count(md: &Metadata, key: &str) -> Result<usize> {
    count_value(key, i128::from(md.get_u64(key)?))
}

/// A head size: 1 to 512, what the attention kernels hold.
fn head_size(key: &str, v: u64) -> Result<usize> {
    if v == 0 || v > 512 {
        return Err(bad(
            key,
            v,
            "is a head size outside what loupe supports (1 to 512)",
        ));
    }
    Ok(v as usize)
}

/// A float that must be finite and above 0 (an epsilon, a RoPE base, a soft-cap).
fn positive(md: &Metadata, key: &str) -> Result<Option<f32>> {
    match md.get_opt_f32(key)? {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            Err(bad(key, v, "must be a finite number above 0"))
        }
        v => Ok(v),
    }
}

/// The block count, checked against the file's `blk.N.` tensors before anything is sized
/// by it: every layer below it must have tensors, and none at or above it may.
fn layer_count(file: &GgufFile, key: &str) -> Result<usize> {
    let n = file.metadata().get_u64(key)?;
    if n == 0 {
        return Err(bad(key, n, "a model needs at least one layer"));
    }
    let mut present = std::collections::BTreeSet::new();
    for t in file.tensors() {
        let Some(layer) = layer_of(&t.name) else {
            continue;
        };
        if layer >= n {
            return Err(bad(
                key,
                n,
                format!(
                    "the file has tensors of layer {layer}, and tensor {:?} would not be used \
                     (the file and its metadata disagree)",
                    t.name
                ),
            ));
        }
        present.insert(layer);
    }
    if let Some(gap) = (0..n).find(|l| !present.contains(l)) {
        return Err(bad(
            key,
            n,
            format!(
                "the file has no tensors of layer {gap} (blk.{gap}.*): it has {} layers",
                present.len()
            ),
        ));
    }
    Ok(n as usize)
}

/// The layer of a `blk.N.` tensor.
fn layer_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("blk.")?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}

/// The vocabulary size: `{arch}.vocab_size` where stated, which must then be the length
/// of the token list, else the token list's length.
fn vocab_size(md: &Metadata, key: &str) -> Result<usize> {
    const TOKENS: &str = "tokenizer.ggml.tokens";
    let listed = md.get_opt_array(TOKENS)?.map(|a| a.len());
    match (md.get_opt_u64(key)?, listed) {
        (Some(v), Some(n)) if v != n as u64 => Err(bad(
            key,
            v,
            format!("{TOKENS} lists {n} tokens; the vocabulary must be one size"),
        )),
        (Some(v), _) => count_value(key, i128::from(v)),
        (None, Some(n)) => count_value(TOKENS, n as i128),
        (None, None) => Err(missing(TOKENS)),
    }
}

/// A count given per model or as a per-layer array; loupe needs it to be the same for
/// every layer.
fn per_layer_uniform(md: &Metadata, key: &str) -> Result<Option<usize>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    if let Value::Array(a) = v {
        let vals: Vec<i128> = match a {
            loupe_gguf::Array::U32(x) => x.iter().map(|&v| v.into()).collect(),
            loupe_gguf::Array::I32(x) => x.iter().map(|&v| v.into()).collect(),
            loupe_gguf::Array::U64(x) => x.iter().map(|&v| v.into()).collect(),
            _ => bail!("{key}: expected integers, found {}", v.describe()),
        };
        let first = *vals.first().context(format!("{key} is an empty array"))?;
        ensure!(
            vals.iter().all(|&x| x == first),
            "{key} differs between layers; loupe needs the same value in every layer"
        );
        return count_value(key, first).map(Some);
    }
    count_value(key, i128::from(md.get_u64(key)?)).map(Some)
}

/// 1 / the linear scaling factor; YaRN and LongRoPE are refused rather than ignored.
fn rope_freq_scale(md: &Metadata, arch: &str) -> Result<f32> {
    let kind = md
        .get_opt_str(&format!("{arch}.rope.scaling.type"))?
        .unwrap_or("none");
    // A factor of 0 is llama.cpp's "not set"; a negative or non-finite one is an error.
    let key = format!("{arch}.rope.scaling.factor");
    let factor = match md.get_opt_f32(&key)? {
        Some(0.0) | None => None,
        Some(_) => positive(md, &key)?,
    };
    match (kind, factor) {
        ("none", _) | (_, None) => Ok(1.0),
        ("linear", Some(f)) => Ok(1.0 / f),
        (other, _) => bail!("RoPE scaling {other:?} is not supported yet (linear and none are)"),
    }
}

#[cfg(test)]
impl Config {
    /// A llama-shaped configuration with `n_layer` layers and `n_kv_head` KV heads of
    /// `head_dim` (twice as many query heads), for unit tests of the cache and attention.
    pub(crate) fn for_tests(n_layer: usize, n_kv_head: usize, head_dim: usize) -> Config {
        let n_head = 2 * n_kv_head;
        Config {
            arch: Arch::Llama,
            dim: n_head * head_dim,
            n_layer,
            n_head,
            n_kv_head,
            head_dim,
            head_dim_v: head_dim,
            hidden_dim: 4 * n_head * head_dim,
            vocab_size: 32,
            n_ctx_train: 4096,
            norm_eps: 1e-5,
            rope_style: RopeStyle::Normal,
            n_rot: head_dim,
            rope_base: 10000.0,
            rope_freq_scale: 1.0,
            rope_base_local: 10000.0,
            rope_freq_scale_local: 1.0,
            activation: Activation::Silu,
            embed_scale: None,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            sliding_window: None,
            is_swa: vec![false; n_layer],
        }
    }
}
