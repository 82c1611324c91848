//! The phases of [`Tokenizer::from_metadata`](super::Tokenizer::from_metadata), in the
//! order the data flows: what the vocabulary type brings, the vocabulary itself, the
//! special token ids, the end-of-generation set, and the BPE merge ranks.
//!
//! Metadata keys are read, and warnings pushed, in this fixed order, so that a file
//! with several problems always gets the same warnings and the same first error.

use loupe_gguf::{Array, Metadata};

use super::pretok::{PreConfig, PreTokenizer};
use super::{
    FxMap, TokenData, TokenizerError, TokenizerKind, ATTR_BYTE, ATTR_CONTROL, ATTR_NORMAL,
    ATTR_UNKNOWN, ATTR_UNUSED, ATTR_USER_DEFINED,
};

/// What the vocabulary type (`tokenizer.ggml.model`, and `tokenizer.ggml.pre` for BPE)
/// brings: the algorithm and pre-tokenizer, and the special ids and flags the metadata
/// may override later.
pub(super) struct VocabType {
    pub kind: TokenizerKind,
    pub pre_name: String,
    pub pre: Option<PreTokenizer>, // BPE only
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
}

impl VocabType {
    /// Reads `tokenizer.ggml.model` and `tokenizer.ggml.pre`, then applies the
    /// metadata's `tokenizer.ggml.add_space_prefix`.
    pub fn read(md: &Metadata, warnings: &mut Vec<String>) -> Result<VocabType, TokenizerError> {
        let model = md.get_str("tokenizer.ggml.model")?;
        let pre_value = md.get_opt_str("tokenizer.ggml.pre")?;

        // Defaults of each vocabulary type, before the metadata overrides them.
        let mut vocab_type = match model {
            "llama" => VocabType {
                kind: TokenizerKind::Spm,
                pre_name: "default".to_string(),
                pre: None,
                bos: Some(1),
                eos: Some(2),
                unk: Some(0),
                add_bos: true,
                add_eos: false,
                add_space_prefix: true,
                clean_spaces: false,
                ignore_merges: false,
            },
            "gpt2" => {
                let (pre_name, cfg) = bpe_pre_config(pre_value, warnings);
                VocabType {
                    kind: TokenizerKind::Bpe,
                    pre_name,
                    pre: Some(PreTokenizer::new(cfg.kind)),
                    bos: Some(11),
                    eos: Some(11),
                    unk: None,
                    add_bos: cfg.add_bos,
                    add_eos: false,
                    add_space_prefix: false,
                    clean_spaces: cfg.clean_spaces,
                    ignore_merges: cfg.ignore_merges,
                }
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        if let Some(v) = md.get_opt_bool("tokenizer.ggml.add_space_prefix")? {
            vocab_type.add_space_prefix = v;
        }
        Ok(vocab_type)
    }
}

/// The pre-tokenizer a BPE vocabulary names in `tokenizer.ggml.pre` (its name as given,
/// and its rules); 'default', with a warning, when the name is missing or unknown.
fn bpe_pre_config(pre_value: Option<&str>, warnings: &mut Vec<String>) -> (String, PreConfig) {
    let (pre_name, cfg) = match pre_value {
        None => {
            warnings.push(
                "tokenizer.ggml.pre is missing: using the 'default' pre-tokenizer; \
                 tokenization may differ from the model's own (re-convert the model \
                 with a current llama.cpp)"
                    .to_string(),
            );
            ("default".to_string(), PreConfig::from_name("default"))
        }
        Some(name) => {
            let cfg = PreConfig::from_name(name);
            if cfg.is_none() {
                warnings.push(format!(
                    "tokenizer.ggml.pre is {name:?}, a pre-tokenizer loupe does not \
                     know: using 'default' instead; token ids will likely differ \
                     from llama.cpp's"
                ));
            }
            (
                name.to_string(),
                cfg.or_else(|| PreConfig::from_name("default")),
            )
        }
    };
    (pre_name, cfg.expect("'default' is a known pre-tokenizer"))
}

/// The vocabulary: each token's spelling, score and type flags.
pub(super) struct Vocab {
    pub tokens: Vec<TokenData>,            // (n_vocab,)
    pub texts: Vec<Box<str>>,              // (n_vocab,) the vocabulary's own spelling
    pub text_to_id: FxMap<Box<[u8]>, u32>, // spelling -> id (the last id of a repeated text)
}

impl Vocab {
    /// Reads `tokenizer.ggml.tokens`, `.scores` and `.token_type`. An empty spelling
    /// becomes `[EMPTY_<id>]`, with a warning.
    pub fn read(md: &Metadata, warnings: &mut Vec<String>) -> Result<Vocab, TokenizerError> {
        // The vocabulary: spellings, scores, types.
        let words = md.get_str_array("tokenizer.ggml.tokens")?;
        let n = words.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid {
                key: "tokenizer.ggml.tokens",
                problem: format!("{n} tokens"),
            });
        }
        let scores = read_scores(md, n)?;
        let types = read_token_types(md, n)?;

        let mut texts: Vec<Box<str>> = Vec::with_capacity(n);
        let mut tokens: Vec<TokenData> = Vec::with_capacity(n);
        let mut text_to_id: FxMap<Box<[u8]>, u32> = FxMap::default();
        text_to_id.reserve(n);
        for (i, w) in words.iter().enumerate() {
            let text: Box<str> = if w.is_empty() {
                warnings.push(format!("token {i} is empty; named [EMPTY_{i}]"));
                format!("[EMPTY_{i}]").into()
            } else {
                w.as_str().into()
            };
            text_to_id.insert(Box::from(text.as_bytes()), i as u32);
            texts.push(text);
            tokens.push(TokenData {
                score: scores[i],
                attr: attr_of_type(types.map(|t| t[i])),
            });
        }
        Ok(Vocab {
            tokens,
            texts,
            text_to_id,
        })
    }

    fn id_of(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text.as_bytes()).copied()
    }

    /// Fills an empty `role` with a token spelled as one of `spellings`, and makes that
    /// token a control token. (llama.cpp walks a hash map, so with several candidates
    /// its pick is arbitrary; loupe takes the lowest id.)
    fn find_role(&mut self, role: &mut Option<u32>, spellings: &[&str]) {
        if role.is_some() {
            return;
        }
        if let Some(i) = spellings.iter().filter_map(|s| self.id_of(s)).min() {
            *role = Some(i);
            self.tokens[i as usize].attr |= ATTR_CONTROL;
        }
    }

    /// Control tokens whose name says "unused" are unused.
    fn mark_unused_controls(&mut self) {
        for (t, text) in self.tokens.iter_mut().zip(&self.texts) {
            if t.attr & ATTR_CONTROL != 0 && text.contains("unused") {
                t.attr |= ATTR_UNUSED;
            }
        }
    }

    /// Tokens the partition looks for, longest spelling first.
    pub fn partition_tokens(&self) -> Vec<u32> {
        let mut special: Vec<u32> = (0..self.tokens.len() as u32)
            .filter(|&i| {
                self.tokens[i as usize].attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)
                    != 0
            })
            .collect();
        special.sort_by(|&a, &b| {
            self.texts[b as usize]
                .len()
                .cmp(&self.texts[a as usize].len())
        });
        special
    }

    /// SPM byte fallback: for each byte its `<0xNN>` token, else the token spelled as
    /// the byte itself.
    pub fn byte_fallback_tokens(&self) -> [Option<u32>; 256] {
        let mut byte_tokens = [None; 256];
        for b in 0..=255u8 {
            byte_tokens[b as usize] = self
                .text_to_id
                .get(format!("<0x{b:02X}>").as_bytes())
                .or_else(|| self.text_to_id.get(&[b][..]))
                .copied();
        }
        byte_tokens
    }
}

/// `tokenizer.ggml.scores` as f32 (all 0 when absent).
fn read_scores(md: &Metadata, n: usize) -> Result<Vec<f32>, TokenizerError> {
    Ok(match md.get_opt_array("tokenizer.ggml.scores")? {
        None => vec![0.0; n],
        Some(Array::F32(v)) if v.len() >= n => v[..n].to_vec(),
        Some(Array::I32(v)) if v.len() >= n => v[..n].iter().map(|&s| s as f32).collect(),
        Some(a) => {
            return Err(TokenizerError::Invalid {
                key: "tokenizer.ggml.scores",
                problem: format!(
                    "expected {n} f32 or i32 scores, found {} {}",
                    a.len(),
                    a.elem_type()
                ),
            })
        }
    })
}

/// `tokenizer.ggml.token_type`, when present.
fn read_token_types(md: &Metadata, n: usize) -> Result<Option<&[i32]>, TokenizerError> {
    match md.get_opt_array("tokenizer.ggml.token_type")? {
        None => Ok(None),
        Some(Array::I32(v)) if v.len() >= n => Ok(Some(&v[..n])),
        Some(a) => Err(TokenizerError::Invalid {
            key: "tokenizer.ggml.token_type",
            problem: format!(
                "expected {n} i32 types, found {} {}",
                a.len(),
                a.elem_type()
            ),
        }),
    }
}

/// The attribute flags of a `tokenizer.ggml.token_type` value (normal when absent).
fn attr_of_type(token_type: Option<i32>) -> u16 {
    match token_type {
        None | Some(1) => ATTR_NORMAL,
        Some(2) => ATTR_UNKNOWN,
        Some(3) => ATTR_CONTROL,
        Some(4) => ATTR_USER_DEFINED,
        Some(5) => ATTR_UNUSED,
        Some(6) => ATTR_BYTE,
        Some(_) => 0,
    }
}

/// Reads an optional token id; an id of the wrong type is reported and ignored.
fn opt_id(md: &Metadata, key: &str, warnings: &mut Vec<String>) -> Option<u32> {
    match md.get_opt_u32(key) {
        Ok(v) => v,
        Err(e) => {
            warnings.push(format!("{e}; ignored"));
            None
        }
    }
}

/// The special token ids, and whether `encode` adds BOS / EOS.
pub(super) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    // Fill-in-the-middle roles: loupe does not use these ids, but a role found by
    // spelling makes its token control, and pad / repo / separator end the generation.
    fim_pre: Option<u32>,
    fim_suf: Option<u32>,
    fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl SpecialIds {
    /// The ids the metadata names over the vocabulary type's defaults, then the roles
    /// still empty found by spelling. Marks the tokens of found roles as control, and
    /// control tokens named "unused" as unused, in `vocab`.
    pub fn resolve(
        md: &Metadata,
        vocab_type: &VocabType,
        vocab: &mut Vocab,
        warnings: &mut Vec<String>,
    ) -> Result<SpecialIds, TokenizerError> {
        let mut ids = SpecialIds::read(md, vocab_type, vocab.tokens.len(), warnings)?;
        ids.find_by_spelling(vocab);
        vocab.mark_unused_controls();
        Ok(ids)
    }

    /// The ids and BOS / EOS flags the metadata sets, over the vocabulary type's.
    fn read(
        md: &Metadata,
        vocab_type: &VocabType,
        n: usize,
        warnings: &mut Vec<String>,
    ) -> Result<SpecialIds, TokenizerError> {
        // Special token ids: defaults outside the vocabulary are dropped, metadata wins
        // when it names a token inside it.
        let in_vocab = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let mut ids: [(&str, Option<u32>); 14] = [
            ("tokenizer.ggml.bos_token_id", in_vocab(vocab_type.bos)),
            ("tokenizer.ggml.eos_token_id", in_vocab(vocab_type.eos)),
            ("tokenizer.ggml.eot_token_id", None),
            ("tokenizer.ggml.eom_token_id", None),
            ("tokenizer.ggml.unknown_token_id", in_vocab(vocab_type.unk)),
            ("tokenizer.ggml.padding_token_id", None),
            ("tokenizer.ggml.fim_pre_token_id", None),
            ("tokenizer.ggml.fim_suf_token_id", None),
            ("tokenizer.ggml.fim_mid_token_id", None),
            ("tokenizer.ggml.fim_pad_token_id", None),
            ("tokenizer.ggml.fim_rep_token_id", None),
            ("tokenizer.ggml.fim_sep_token_id", None),
            ("tokenizer.ggml.prefix_token_id", None),
            ("tokenizer.ggml.suffix_token_id", None),
        ];
        for (key, id) in ids.iter_mut() {
            if let Some(v) = opt_id(md, key, warnings) {
                if (v as usize) < n {
                    *id = Some(v);
                } else {
                    warnings.push(format!(
                        "{key} = {v} is outside the vocabulary of {n} tokens; ignored"
                    ));
                }
            }
        }
        let [(_, bos), (_, eos), (_, eot), (_, eom), (_, unk), (_, pad), (_, fim_pre), (_, fim_suf), (_, mut fim_mid), (_, fim_pad), (_, fim_rep), (_, fim_sep), (_, prefix), (_, suffix)] =
            ids;
        if let Some(v) = opt_id(md, "tokenizer.ggml.middle_token_id", warnings) {
            if (v as usize) < n {
                fim_mid = Some(v);
            }
        }
        let add_bos = md
            .get_opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(vocab_type.add_bos);
        let add_eos = md
            .get_opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(vocab_type.add_eos);
        Ok(SpecialIds {
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            fim_pre: prefix.or(fim_pre),
            fim_suf: suffix.or(fim_suf),
            fim_mid,
            fim_pad,
            fim_rep,
            fim_sep,
            add_bos,
            add_eos,
        })
    }

    /// Tokens llama.cpp recognises by their spelling, for the roles the metadata left
    /// empty. Each found role makes its token a control token.
    fn find_by_spelling(&mut self, vocab: &mut Vocab) {
        vocab.find_role(&mut self.eot, EOT_SPELLINGS);
        vocab.find_role(&mut self.eom, &["<|eom_id|>"]);
        vocab.find_role(&mut self.fim_pre, FIM_PRE_SPELLINGS);
        vocab.find_role(&mut self.fim_suf, FIM_SUF_SPELLINGS);
        vocab.find_role(&mut self.fim_mid, FIM_MID_SPELLINGS);
        vocab.find_role(&mut self.fim_pad, FIM_PAD_SPELLINGS);
        vocab.find_role(&mut self.fim_rep, FIM_REP_SPELLINGS);
        vocab.find_role(&mut self.fim_sep, &["<|file_sep|>"]);
    }
}

const EOT_SPELLINGS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_SPELLINGS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_SPELLINGS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_SPELLINGS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_SPELLINGS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_SPELLINGS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];

/// Spellings of an end of turn (or of text) that end the generation.
const EOG_SPELLINGS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// The sorted end-of-generation ids. Marks the tokens found by spelling as control
/// (and gpt-oss's always-rendered tokens as user-defined) in `vocab`.
pub(super) fn end_of_generation(ids: &SpecialIds, vocab: &mut Vocab) -> Vec<u32> {
    // End of generation: the FIM pad / repo / separator tokens, tokens spelled like
    // an end of turn, and the EOS / EOT / EOM ids.
    let mut eog: Vec<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for name in EOG_SPELLINGS {
        if let Some(i) = vocab.id_of(name) {
            eog.push(i);
            vocab.tokens[i as usize].attr |= ATTR_CONTROL;
        }
    }
    // gpt-oss: these are always rendered.
    for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(i) = vocab.id_of(name) {
            vocab.tokens[i as usize].attr = ATTR_USER_DEFINED;
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();
    drop_ends_that_do_not_end(&mut eog, vocab);
    eog
}

/// Vocabularies that spell a token like an end but do not end the generation with it:
/// the token leaves `eog` and gets its own type back in `vocab`.
fn drop_ends_that_do_not_end(eog: &mut Vec<u32>, vocab: &mut Vocab) {
    let text_of = |id: u32| &*vocab.texts[id as usize];
    let has = |s: &str| eog.iter().any(|&id| text_of(id) == s);
    // o200k-harmony and solar-open: "<|end|>" ends a message, not the generation.
    let end_is_not_eog = (has("<|return|>") && has("<|call|>")
        || has("<|calls|>") && has("<|flush|>"))
        && has("<|end|>");
    // gemma4 and plamo spell a normal token "</s>".
    let s_is_normal = has("<|tool_response>") || has("<|plamo:eos|>");
    let position = |eog: &[u32], s: &str| eog.iter().position(|&id| text_of(id) == s);
    if end_is_not_eog {
        if let Some(p) = position(eog, "<|end|>") {
            let id = eog.remove(p);
            vocab.tokens[id as usize].attr = ATTR_USER_DEFINED;
        }
    }
    if s_is_normal {
        if let Some(p) = position(eog, "</s>") {
            let id = eog.remove(p);
            vocab.tokens[id as usize].attr = ATTR_NORMAL;
        }
    }
}

/// BPE merge ranks, keyed by the two sides' token ids, or by "left\0right" for merges
/// whose sides are not tokens.
#[derive(Default)]
pub(super) struct MergeRanks {
    pub pair_ranks: FxMap<(u32, u32), u32>,
    pub odd_ranks: FxMap<Box<str>, u32>,
}

impl MergeRanks {
    /// Reads `tokenizer.ggml.merges`.
    pub fn read(md: &Metadata, vocab: &Vocab) -> Result<MergeRanks, TokenizerError> {
        // BPE merges: "left right", rank = position in the list (the first wins).
        let mut ranks = MergeRanks::default();
        let merges = md.get_str_array("tokenizer.ggml.merges")?;
        ranks.pair_ranks.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // Split at the first space after the first byte (a side may be a space).
            let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (l, r) = (&m[..pos], &m[pos + 1..]);
            let rank = rank as u32;
            match (vocab.id_of(l), vocab.id_of(r)) {
                (Some(a), Some(b)) => {
                    ranks.pair_ranks.entry((a, b)).or_insert(rank);
                }
                _ => {
                    ranks
                        .odd_ranks
                        .entry(format!("{l}\0{r}").into())
                        .or_insert(rank);
                }
            }
        }
        Ok(ranks)
    }
}
