//! Which type each tensor gets: llama.cpp's rules (`llama_tensor_get_type` in
//! `llama-quant.cpp`), so that a recipe such as Q4_K_M gives the same mix of types as
//! llama-quantize. The rules depend on the order tensors are visited in (counters over the
//! attention-V and FFN-down tensors), which is [`llama_order`].

use loupe_quant::GgmlType;

use super::FileType;
use loupe_gguf::TensorInfo;

/// What a tensor is, by name; the mixing rules are per category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    pub fn of(name: &str) -> Category {
        use Category::*;
        if name == "output.weight" {
            return Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return TokenEmbd;
        }
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", AttnQkv),
            ("attn_kv_b.weight", AttnKvB),
            ("attn_v.weight", AttnV),
            ("attn_k.weight", AttnK),
            ("attn_q.weight", AttnQ),
            ("attn_output.weight", AttnOutput),
            ("ffn_up", FfnUp),
            ("ffn_gate", FfnGate),
            ("ffn_down", FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Other, |&(_, c)| c)
    }

    /// The attention tensors that produce V, which llama.cpp gives more bits.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// The model facts the rules read, from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    pub n_layer: usize,
    /// Query heads over KV heads, of layer 0 (1 when unknown).
    pub n_gqa: usize,
    pub n_expert: usize,
    /// llama.cpp's size class is 70B (its attention-V tensors get more bits).
    pub is_70b: bool,
}

/// The order llama.cpp's quantizer visits (and writes) tensors: by layer number (`blk.N.`,
/// tensors outside a block first), then by name.
pub fn llama_order(tensors: &[TensorInfo]) -> Vec<&TensorInfo> {
    let layer = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(-1)
    };
    let mut v: Vec<&TensorInfo> = tensors.iter().collect();
    v.sort_by(|a, b| {
        layer(&a.name)
            .cmp(&layer(&b.name))
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
    });
    v
}

/// ggml's `ggml_n_dims`: dimensions up to the last one larger than 1.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Whether llama.cpp quantizes this tensor at all: 2-D and 3-D weights, minus norms, the
/// expert router, positional and token-type embeddings and a list of small special
/// tensors. The rest keep their type.
pub fn allows_quantization(t: &TensorInfo, arch: &str) -> bool {
    if n_dims(&t.dims) < 2 {
        return false;
    }
    let name = t.name.as_str();
    if !name.ends_with("weight") || name.contains("_norm.weight") {
        return false;
    }
    const KEEP: [&str; 36] = [
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
        // Not substrings in llama.cpp but whole names; no other tensor contains them.
        "position_embd.weight",
        "token_types.weight",
    ];
    const KEEP_GLM5_NEXT: [&str; 14] = [
        "hc_",
        "indexer.attn_q_b",
        "indexer.attn_k",
        "indexer.proj",
        "indexer_compressor_gate",
        "indexer_compressor_ape",
        "ssm_f_a.weight",
        "ssm_f_b.weight",
        "ssm_g_a.weight",
        "ssm_g_b.weight",
        "ssm_beta.weight",
        "attn_kv_a_mqa.weight",
        "attn_k_b.weight",
        "attn_v_b.weight",
    ];
    let exact_only = |k: &str| k == "position_embd.weight" || k == "token_types.weight";
    let kept = KEEP.iter().any(|&k| {
        if exact_only(k) {
            name == k
        } else {
            name.contains(k)
        }
    });
    let kept_glm = arch == "glm5-next" && KEEP_GLM5_NEXT.iter().any(|&k| name.contains(k));
    !kept && !kept_glm
}

/// User choices that change the rules (`--pure`, `--output-tensor-type`,
/// `--token-embedding-type`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub pure: bool,
    pub output: Option<GgmlType>,
    pub token_embd: Option<GgmlType>,
}

/// The state of one pass over a model's tensors in [`llama_order`].
pub struct Recipe<'a> {
    ftype: FileType,
    model: &'a ModelFacts,
    over: Overrides,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    has_tied_embeddings: bool,
    /// Tensors whose row length did not fit the chosen type: (name, wanted, used).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
}

impl<'a> Recipe<'a> {
    /// `names` are all tensors of the model (they set the counters' totals).
    pub fn new<'n>(
        ftype: FileType,
        model: &'a ModelFacts,
        over: Overrides,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Recipe<'a> {
        let mut r = Recipe {
            ftype,
            model,
            over,
            n_attention_wv: 0,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            has_tied_embeddings: true,
            fallbacks: Vec::new(),
        };
        for n in names {
            let c = Category::of(n);
            if c.is_attn_v() {
                r.n_attention_wv += 1;
            }
            if c == Category::Output {
                r.has_tied_embeddings = false;
            }
        }
        r
    }

    /// The type tensor `t` is written as. Call once per tensor, in [`llama_order`].
    pub fn tensor_type(&mut self, t: &TensorInfo) -> Result<GgmlType, String> {
        if !allows_quantization(t, &self.model.arch) {
            return Ok(t.ty);
        }
        let category = Category::of(&t.name);
        if let (Some(ty), Category::TokenEmbd) = (self.over.token_embd, category) {
            return Ok(ty);
        }
        if let (Some(ty), Category::Output) = (self.over.output, category) {
            return Ok(ty);
        }
        let default = self.ftype.default_type();
        if !is_quantized(default) {
            return Ok(default);
        }
        let mut ty = default;
        if !self.over.pure {
            ty = self.mix(ty, t, category)?;
        }
        self.fallback(t, ty)
    }

    /// llama.cpp's `llama_tensor_get_type_impl`, for the file types loupe writes.
    fn mix(&mut self, mut ty: GgmlType, t: &TensorInfo, cat: Category) -> Result<GgmlType, String> {
        use FileType as F;
        use GgmlType::*;
        let ft = self.ftype;
        let m = self.model;
        let falcon = m.arch == "falcon";
        let more_bits = |i: usize, n: usize| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;

        // glm5-next keeps its query and next-token projections at Q8_0 or better.
        if m.arch == "glm5-next"
            && ["attn_q_a", "attn_q_b", "nextn.eh_proj"]
                .iter()
                .any(|k| t.name.contains(k))
        {
            return Ok(Q8_0);
        }

        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(o) = self.over.output {
                ty = o;
            } else if falcon || !t.dims[0].is_multiple_of(ty.block_elems() as u64) {
                ty = Q8_0;
            } else if ty != Q8_0 {
                ty = Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            // Only the IQ1/IQ2/IQ3 and ternary recipes, which loupe does not write, change
            // an untied token embedding.
        } else if cat.is_attn_v() {
            match ft {
                F::Q2_K => ty = if m.n_gqa >= 4 { Q4_K } else { Q3_K },
                F::Q3_K_M => ty = if self.i_attention_wv < 2 { Q5_K } else { Q4_K },
                F::Q3_K_L => ty = Q5_K,
                F::IQ4_NL | F::IQ4_XS if m.n_gqa >= 4 => ty = Q5_K,
                F::Q4_K_M | F::Q5_K_M if more_bits(self.i_attention_wv, self.n_attention_wv) => {
                    ty = Q6_K
                }
                F::Q4_K_S if self.i_attention_wv < 4 => ty = Q5_K,
                _ => {}
            }
            if m.is_70b && matches!(ty, Q3_K | Q4_K) {
                // 70B models share each V head among eight query heads, so attn_v is
                // small and more bits for it cost little.
                ty = Q5_K;
            }
            if m.n_expert == 8 {
                ty = Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if m.n_expert == 8 {
                ty = Q8_0;
            }
        } else if cat == Category::AttnQ {
            // Only the IQ3 recipes change it.
        } else if cat == Category::FfnDown {
            let (i_layer, n_layer) = self.layer_info(self.i_ffn_down, &t.name)?;
            match ft {
                F::Q2_K => ty = Q3_K,
                F::Q3_K_M => {
                    ty = if i_layer < n_layer / 16 {
                        Q5_K
                    } else if !falcon || more_bits(i_layer, n_layer) {
                        Q4_K
                    } else {
                        Q3_K
                    }
                }
                F::Q3_K_L => ty = if falcon { Q4_K } else { Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        ty = if i_layer < n_layer / 16 {
                            Q6_K
                        } else if more_bits(i_layer, n_layer) {
                            Q5_K
                        } else {
                            Q4_K
                        };
                    } else if more_bits(i_layer, n_layer) {
                        ty = Q6_K;
                    }
                }
                // Without an importance matrix (loupe never has one).
                F::IQ4_NL | F::IQ4_XS if i_layer < n_layer / 8 => ty = Q5_K,
                F::Q5_K_M if more_bits(i_layer, n_layer) => ty = Q6_K,
                F::Q4_K_S if !falcon && i_layer < n_layer / 8 => ty = Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if !falcon {
                if m.n_expert == 8 {
                    if matches!(
                        ft,
                        F::Q2_K
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ4_XS
                    ) {
                        ty = Q5_K;
                    }
                } else {
                    match ft {
                        F::Q2_K => ty = Q3_K,
                        F::Q3_K_M => ty = Q4_K,
                        F::Q3_K_L => ty = Q5_K,
                        _ => {}
                    }
                }
            } else if ft == F::Q3_K_L {
                ty = Q4_K;
            }
        } else if cat == Category::AttnQkv {
            // Unreachable in llama.cpp too: attn_qkv is an attention-V category above.
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, &t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, &t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(ty)
    }

    /// (layer, layers) of an FFN tensor: the running count, or for mixture-of-experts
    /// models (whose expert tensors are not in layer order) the number in its name.
    fn layer_info(&self, counter: usize, name: &str) -> Result<(usize, usize), String> {
        let n = self.model.n_layer;
        if self.model.n_expert <= 1 {
            return Ok((counter, n));
        }
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|d| d.parse::<usize>().ok())
            .ok_or_else(|| format!("failed to determine the layer of tensor {name}"))?;
        if layer >= n {
            return Err(format!(
                "bad layer {layer} for tensor {name}: must be below {n}"
            ));
        }
        Ok((layer, n))
    }

    /// A row length that is not a whole number of the type's blocks falls back to a type
    /// with 32-weight blocks, and to F16 when even that does not fit.
    fn fallback(&mut self, t: &TensorInfo, ty: GgmlType) -> Result<GgmlType, String> {
        use GgmlType::*;
        let ncols = t.dims[0];
        if ncols.is_multiple_of(ty.block_elems() as u64) {
            return Ok(ty);
        }
        let mut to = match ty {
            IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
            Q2_0 | Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
            Q4_K => Q5_0,
            Q5_K => Q5_1,
            Q6_K => Q8_0,
            _ if ty.block_elems() <= 32 => ty,
            _ => return Err(format!("no fallback type is defined for {ty}")),
        };
        if !ncols.is_multiple_of(to.block_elems() as u64) {
            to = F16;
        }
        self.fallbacks.push((t.name.clone(), ty, to));
        Ok(to)
    }
}

/// ggml's `ggml_is_quantized`: every type but the plain float and integer ones.
pub fn is_quantized(ty: GgmlType) -> bool {
    use GgmlType::*;
    !matches!(ty, F32 | F16 | BF16 | F64 | I8 | I16 | I32 | I64)
}
