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
    pub fn from_file(file: &GgufFile) -> Result<Config> {
        let md = file.metadata();
        let arch_name = md.get_str("general.architecture")?;
        let arch = Arch::from_name(arch_name)?;
        let k = |key: &str| format!("{arch_name}.{key}");
        let usize_of = |key: &str| -> Result<usize> { Ok(md.get_u64(&k(key))? as usize) };

        let dim = usize_of("embedding_length")?;
        let n_layer = usize_of("block_count")?;
        let n_head = per_layer_uniform(md, &k("attention.head_count"))?
            .context("attention.head_count is missing")?;
        let n_kv_head = per_layer_uniform(md, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        let hidden_dim = per_layer_uniform(md, &k("feed_forward_length"))?
            .context("feed_forward_length is missing")?;
        ensure!(
            dim > 0 && n_layer > 0 && n_head > 0 && n_kv_head > 0 && hidden_dim > 0,
            "model dimensions must be positive"
        );
        ensure!(
            n_head % n_kv_head == 0,
            "{n_head} query heads do not split into {n_kv_head} key/value groups"
        );
        let head_dim = md
            .get_opt_u64(&k("attention.key_length"))?
            .map_or(dim / n_head, |v| v as usize);
        let head_dim_v = md
            .get_opt_u64(&k("attention.value_length"))?
            .map_or(head_dim, |v| v as usize);
        ensure!(
            head_dim > 0 && head_dim <= 512 && head_dim_v <= 512,
            "head size {head_dim} is outside what loupe supports (1 to 512)"
        );
        let vocab_size = match md.get_opt_u64(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => md.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let n_ctx_train = usize_of("context_length")?;
        let norm_eps = md.get_f32(&k("attention.layer_norm_rms_epsilon"))?;

        let n_rot = md
            .get_opt_u64(&k("rope.dimension_count"))?
            .map_or(head_dim, |v| v as usize);
        ensure!(
            n_rot <= head_dim && n_rot % 2 == 0,
            "rope.dimension_count {n_rot} does not fit head size {head_dim}"
        );
        let rope_base = md.get_opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
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
                c.attn_softcap = Some(
                    md.get_opt_f32(&k("attn_logit_softcapping"))?
                        .unwrap_or(50.0),
                );
                c.final_softcap = Some(
                    md.get_opt_f32(&k("final_logit_softcapping"))?
                        .unwrap_or(30.0),
                );
                c.sliding_window = Some(window.map_or(4096, |w| w as usize));
                c.set_swa_pattern(md, &k("attention.sliding_window_pattern"), 2)?;
                // Gemma 2's local layers share the global RoPE unless the file says otherwise.
                if let Some(b) = md.get_opt_f32(&k("rope.freq_base_swa"))? {
                    c.rope_base_local = b;
                }
            }
            Arch::Gemma3 => {
                c.final_softcap = md.get_opt_f32(&k("final_logit_softcapping"))?;
                if let Some(w) = window.filter(|&w| w > 0) {
                    c.sliding_window = Some(w as usize);
                    c.set_swa_pattern(md, &k("attention.sliding_window_pattern"), 6)?;
                    // Local layers: their own base (10000 unless stated), unscaled positions.
                    c.rope_base_local =
                        md.get_opt_f32(&k("rope.freq_base_swa"))?.unwrap_or(10000.0);
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
                let n = md.get_opt_u64(key)?.map_or(default_n, |v| v as usize);
                self.is_swa = (0..self.n_layer)
                    .map(|il| n == 0 || il % n < n - 1)
                    .collect();
            }
        }
        Ok(())
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
        return Ok(Some(usize::try_from(first)?));
    }
    Ok(Some(md.get_u64(key)? as usize))
}

/// 1 / the linear scaling factor; YaRN and LongRoPE are refused rather than ignored.
fn rope_freq_scale(md: &Metadata, arch: &str) -> Result<f32> {
    let kind = md
        .get_opt_str(&format!("{arch}.rope.scaling.type"))?
        .unwrap_or("none");
    let factor = md
        .get_opt_f32(&format!("{arch}.rope.scaling.factor"))?
        .filter(|&f| f > 0.0);
    match (kind, factor) {
        ("none", _) | (_, None) => Ok(1.0),
        ("linear", Some(f)) => Ok(1.0 / f),
        (other, _) => bail!("RoPE scaling {other:?} is not supported yet (linear and none are)"),
    }
}
