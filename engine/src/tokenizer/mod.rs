//! Tokenizers built from GGUF metadata: SentencePiece-style (`tokenizer.ggml.model` =
//! "llama") and byte-level BPE ("gpt2"), with special tokens and streaming detokenize.
//!
//! The rules are llama.cpp's (`llama-vocab.cpp`), so that loupe turns a text into exactly
//! the token ids llama.cpp does; `peer/tests/tokenizer_vs_llama.rs` checks that.
//!
//! A [`Tokenizer`] is built once and never changes; every [`Tokenizer::encode`] call uses
//! its own scratch buffers, so one tokenizer can serve many threads.
//!
//! Encoding a text, in order:
//! 1. special-token partition: text that spells a control / user-defined token becomes
//!    that token (control tokens only when `parse_special`), longest tokens first;
//! 2. each remaining text fragment goes to the vocabulary's algorithm: SPM merges by
//!    score over characters (spaces written as U+2581), or BPE merges by rank inside the
//!    words a pre-tokenizer cut out;
//! 3. BOS / EOS around the whole when `add_special` and the vocabulary asks for them.

mod bpe;
mod pretok;
mod spm;
mod stream;
mod unicode;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use loupe_gguf::{Array, GgufError, Metadata};

pub use pretok::PreKind;
pub use stream::StreamDecoder;

use pretok::{PreConfig, PreTokenizer};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("tokenizer.ggml.model is {0:?}: loupe reads \"llama\" (SentencePiece) and \"gpt2\" (byte-level BPE) vocabularies")]
    UnsupportedModel(String),

    #[error("metadata key {key:?}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The algorithm of a vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style merges by score, byte fallback to `<0xNN>` tokens.
    Spm,
    /// Byte-level BPE: merges by rank over GPT-2 byte characters, after a pre-tokenizer.
    Bpe,
}

/// The type of a token, from `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

// Token attributes, as llama.cpp keeps them (a type can gain flags while loading:
// end-of-generation tokens become control, control tokens named "unused" become unused).
const ATTR_UNKNOWN: u16 = 1 << 0;
const ATTR_UNUSED: u16 = 1 << 1;
const ATTR_NORMAL: u16 = 1 << 2;
const ATTR_CONTROL: u16 = 1 << 3;
const ATTR_USER_DEFINED: u16 = 1 << 4;
const ATTR_BYTE: u16 = 1 << 5;

/// A small multiplicative hasher (FxHash's): token lookups are the inner loop of
/// merging, and the keys are not attacker-chosen.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[derive(Clone, Copy, Debug)]
struct TokenData {
    score: f32,
    attr: u16,
}

/// A vocabulary and the rules to use it, built once from GGUF metadata.
#[derive(Debug)]
pub struct Tokenizer {
    kind: TokenizerKind,
    pre_name: String,
    pre: Option<PreTokenizer>,          // BPE only
    tokens: Vec<TokenData>,             // (n_vocab,)
    texts: Vec<Box<str>>,               // (n_vocab,) the vocabulary's own spelling
    text_to_id: FxMap<Box<[u8]>, u32>,  // spelling -> id (the last id of a repeated text)
    pieces: Vec<u8>,                    // every token's rendered bytes, back to back
    piece_at: Vec<u32>,                 // (n_vocab + 1,) offsets into `pieces`
    pair_ranks: FxMap<(u32, u32), u32>, // BPE merges of two tokens -> rank
    odd_ranks: FxMap<Box<str>, u32>,    // merges whose sides are not tokens: "l\0r" -> rank
    byte_tokens: [Option<u32>; 256],    // SPM byte fallback
    special: Vec<u32>,                  // control / user-defined / unknown, longest first
    eog: Vec<u32>,                      // sorted end-of-generation ids
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    ignore_merges: bool,
    warnings: Vec<String>,
}

/// A piece of the text during the special-token partition.
#[derive(Clone, Debug)]
enum Fragment {
    Text(Range<usize>),
    Token(u32),
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

impl Tokenizer {
    /// Builds the tokenizer of a model from its `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let mut warnings = Vec::new();
        let model = md.get_str("tokenizer.ggml.model")?;
        let pre_value = md.get_opt_str("tokenizer.ggml.pre")?;

        // Defaults of each vocabulary type, before the metadata overrides them.
        let kind;
        let (mut bos, mut eos, mut unk): (Option<u32>, Option<u32>, Option<u32>);
        let (mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces, ignore_merges);
        let mut pre = None;
        let mut pre_name = String::new();
        match model {
            "llama" => {
                kind = TokenizerKind::Spm;
                (bos, eos, unk) = (Some(1), Some(2), Some(0));
                (add_bos, add_eos, add_space_prefix) = (true, false, true);
                (clean_spaces, ignore_merges) = (false, false);
                pre_name.push_str("default");
            }
            "gpt2" => {
                kind = TokenizerKind::Bpe;
                (bos, eos, unk) = (Some(11), Some(11), None);
                (add_eos, add_space_prefix) = (false, false);
                let cfg = match pre_value {
                    None => {
                        warnings.push(
                            "tokenizer.ggml.pre is missing: using the 'default' pre-tokenizer; \
                             tokenization may differ from the model's own (re-convert the model \
                             with a current llama.cpp)"
                                .to_string(),
                        );
                        pre_name.push_str("default");
                        PreConfig::from_name("default")
                    }
                    Some(name) => {
                        pre_name.push_str(name);
                        let cfg = PreConfig::from_name(name);
                        if cfg.is_none() {
                            warnings.push(format!(
                                "tokenizer.ggml.pre is {name:?}, a pre-tokenizer loupe does not \
                                 know: using 'default' instead; token ids will likely differ \
                                 from llama.cpp's"
                            ));
                        }
                        cfg.or_else(|| PreConfig::from_name("default"))
                    }
                };
                let cfg = cfg.expect("'default' is a known pre-tokenizer");
                add_bos = cfg.add_bos;
                clean_spaces = cfg.clean_spaces;
                ignore_merges = cfg.ignore_merges;
                pre = Some(PreTokenizer::new(cfg.kind));
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
        if let Some(v) = md.get_opt_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        // The vocabulary: spellings, scores, types.
        let words = md.get_str_array("tokenizer.ggml.tokens")?;
        let n = words.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid {
                key: "tokenizer.ggml.tokens",
                problem: format!("{n} tokens"),
            });
        }
        let scores: Vec<f32> = match md.get_opt_array("tokenizer.ggml.scores")? {
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
        };
        let types: Option<&[i32]> = match md.get_opt_array("tokenizer.ggml.token_type")? {
            None => None,
            Some(Array::I32(v)) if v.len() >= n => Some(&v[..n]),
            Some(a) => {
                return Err(TokenizerError::Invalid {
                    key: "tokenizer.ggml.token_type",
                    problem: format!(
                        "expected {n} i32 types, found {} {}",
                        a.len(),
                        a.elem_type()
                    ),
                })
            }
        };

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
            let attr = match types.map(|t| t[i]) {
                None | Some(1) => ATTR_NORMAL,
                Some(2) => ATTR_UNKNOWN,
                Some(3) => ATTR_CONTROL,
                Some(4) => ATTR_USER_DEFINED,
                Some(5) => ATTR_UNUSED,
                Some(6) => ATTR_BYTE,
                Some(_) => 0,
            };
            tokens.push(TokenData {
                score: scores[i],
                attr,
            });
        }

        // Special token ids: defaults outside the vocabulary are dropped, metadata wins
        // when it names a token inside it.
        let in_vocab = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        (bos, eos, unk) = (in_vocab(bos), in_vocab(eos), in_vocab(unk));
        let mut ids: [(&str, Option<u32>); 14] = [
            ("tokenizer.ggml.bos_token_id", bos),
            ("tokenizer.ggml.eos_token_id", eos),
            ("tokenizer.ggml.eot_token_id", None),
            ("tokenizer.ggml.eom_token_id", None),
            ("tokenizer.ggml.unknown_token_id", unk),
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
            if let Some(v) = opt_id(md, key, &mut warnings) {
                if (v as usize) < n {
                    *id = Some(v);
                } else {
                    warnings.push(format!(
                        "{key} = {v} is outside the vocabulary of {n} tokens; ignored"
                    ));
                }
            }
        }
        let [(_, bos), (_, eos), (_, mut eot), (_, mut eom), (_, unk), (_, pad), (_, mut fim_pre), (_, mut fim_suf), (_, mut fim_mid), (_, mut fim_pad), (_, mut fim_rep), (_, mut fim_sep), (_, prefix), (_, suffix)] =
            ids;
        fim_pre = prefix.or(fim_pre);
        fim_suf = suffix.or(fim_suf);
        if let Some(v) = opt_id(md, "tokenizer.ggml.middle_token_id", &mut warnings) {
            if (v as usize) < n {
                fim_mid = Some(v);
            }
        }
        if let Some(v) = md.get_opt_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = md.get_opt_bool("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }

        // Tokens llama.cpp recognises by their spelling. Each found role makes its token
        // a control token. (llama.cpp walks a hash map, so with several candidates its
        // pick is arbitrary; loupe takes the lowest id.)
        let mut find_role = |slot: &mut Option<u32>, names: &[&str]| {
            if slot.is_some() {
                return;
            }
            if let Some(i) = names
                .iter()
                .filter_map(|s| text_to_id.get(s.as_bytes()))
                .min()
            {
                *slot = Some(*i);
                tokens[*i as usize].attr |= ATTR_CONTROL;
            }
        };
        find_role(
            &mut eot,
            &[
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
            ],
        );
        find_role(&mut eom, &["<|eom_id|>"]);
        find_role(
            &mut fim_pre,
            &[
                "<|fim_prefix|>",
                "<fim-prefix>",
                "<fim_prefix>",
                "<｜fim▁begin｜>",
                "<PRE>",
                "▁<PRE>",
                "<|code_prefix|>",
                "<|prefix|>",
            ],
        );
        find_role(
            &mut fim_suf,
            &[
                "<|fim_suffix|>",
                "<fim-suffix>",
                "<fim_suffix>",
                "<｜fim▁hole｜>",
                "<SUF>",
                "▁<SUF>",
                "<|code_suffix|>",
                "<|suffix|>",
            ],
        );
        find_role(
            &mut fim_mid,
            &[
                "<|fim_middle|>",
                "<fim-middle>",
                "<fim_middle>",
                "<｜fim▁end｜>",
                "<MID>",
                "▁<MID>",
                "<|code_middle|>",
                "<|middle|>",
            ],
        );
        find_role(
            &mut fim_pad,
            &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        );
        find_role(
            &mut fim_rep,
            &[
                "<|fim_repo|>",
                "<|repo_name|>",
                "<fim-repo>",
                "<REPO>",
                "<reponame>",
            ],
        );
        find_role(&mut fim_sep, &["<|file_sep|>"]);
        let _ = (fim_pre, fim_suf, fim_mid);

        // Control tokens whose name says "unused" are unused.
        for (t, text) in tokens.iter_mut().zip(&texts) {
            if t.attr & ATTR_CONTROL != 0 && text.contains("unused") {
                t.attr |= ATTR_UNUSED;
            }
        }

        // End of generation: the FIM pad / repo / separator tokens, tokens spelled like
        // an end of turn, and the EOS / EOT / EOM ids.
        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for name in [
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
        ] {
            if let Some(&i) = text_to_id.get(name.as_bytes()) {
                eog.push(i);
                tokens[i as usize].attr |= ATTR_CONTROL;
            }
        }
        // gpt-oss: these are always rendered.
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&i) = text_to_id.get(name.as_bytes()) {
                tokens[i as usize].attr = ATTR_USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        let text_of = |id: u32| &*texts[id as usize];
        let has = |s: &str| eog.iter().any(|&id| text_of(id) == s);
        // o200k-harmony and solar-open: "<|end|>" ends a message, not the generation.
        let end_is_not_eog = (has("<|return|>") && has("<|call|>")
            || has("<|calls|>") && has("<|flush|>"))
            && has("<|end|>");
        // gemma4 and plamo spell a normal token "</s>".
        let s_is_normal = has("<|tool_response>") || has("<|plamo:eos|>");
        let position = |eog: &[u32], s: &str| eog.iter().position(|&id| text_of(id) == s);
        if end_is_not_eog {
            if let Some(p) = position(&eog, "<|end|>") {
                let id = eog.remove(p);
                tokens[id as usize].attr = ATTR_USER_DEFINED;
            }
        }
        if s_is_normal {
            if let Some(p) = position(&eog, "</s>") {
                let id = eog.remove(p);
                tokens[id as usize].attr = ATTR_NORMAL;
            }
        }

        // Tokens the partition looks for, longest spelling first.
        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                tokens[i as usize].attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0
            })
            .collect();
        special.sort_by(|&a, &b| texts[b as usize].len().cmp(&texts[a as usize].len()));

        // BPE merges: "left right", rank = position in the list (the first wins).
        let mut pair_ranks: FxMap<(u32, u32), u32> = FxMap::default();
        let mut odd_ranks: FxMap<Box<str>, u32> = FxMap::default();
        if kind == TokenizerKind::Bpe {
            let merges = md.get_str_array("tokenizer.ggml.merges")?;
            pair_ranks.reserve(merges.len());
            for (rank, m) in merges.iter().enumerate() {
                // Split at the first space after the first byte (a side may be a space).
                let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                    continue;
                };
                let (l, r) = (&m[..pos], &m[pos + 1..]);
                let rank = rank as u32;
                match (text_to_id.get(l.as_bytes()), text_to_id.get(r.as_bytes())) {
                    (Some(&a), Some(&b)) => {
                        pair_ranks.entry((a, b)).or_insert(rank);
                    }
                    _ => {
                        odd_ranks.entry(format!("{l}\0{r}").into()).or_insert(rank);
                    }
                }
            }
        }

        let mut tok = Tokenizer {
            kind,
            pre_name,
            pre,
            tokens,
            texts,
            text_to_id,
            pieces: Vec::new(),
            piece_at: Vec::new(),
            pair_ranks,
            odd_ranks,
            byte_tokens: [None; 256],
            special,
            eog,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            ignore_merges,
            warnings,
        };
        if kind == TokenizerKind::Spm {
            for b in 0..=255u8 {
                tok.byte_tokens[b as usize] = tok
                    .lookup(format!("<0x{b:02X}>").as_bytes())
                    .or_else(|| tok.lookup(&[b]));
            }
        }
        tok.build_pieces();
        Ok(tok)
    }

    /// Renders every token once (control tokens as their spelling), like llama.cpp's
    /// piece cache.
    fn build_pieces(&mut self) {
        let mut pieces = Vec::with_capacity(self.texts.iter().map(|t| t.len()).sum());
        let mut at = Vec::with_capacity(self.texts.len() + 1);
        for (t, text) in self.tokens.iter().zip(&self.texts) {
            at.push(pieces.len() as u32);
            if t.attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
                pieces.extend_from_slice(text.as_bytes());
            } else if t.attr & ATTR_NORMAL != 0 {
                match self.kind {
                    TokenizerKind::Spm => {
                        for c in text.chars() {
                            if c == '\u{2581}' {
                                pieces.push(b' ');
                            } else {
                                let mut buf = [0; 4];
                                pieces.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                    TokenizerKind::Bpe => {
                        for c in text.chars() {
                            match unicode::char_to_byte(c) {
                                Some(b) => pieces.push(b),
                                None => {
                                    // llama.cpp's marker for a character that is no byte.
                                    let mut buf = [0; 4];
                                    pieces.extend_from_slice(b"[UNK_BYTE_0x");
                                    for b in c.encode_utf8(&mut buf).bytes() {
                                        pieces.extend_from_slice(format!("{b:02x}").as_bytes());
                                    }
                                    pieces.extend_from_slice(text.as_bytes());
                                    pieces.push(b']');
                                }
                            }
                        }
                    }
                }
            } else if t.attr & ATTR_BYTE != 0 {
                // "<0xNN>"
                if let Some(b) = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    pieces.push(b);
                }
            }
        }
        at.push(pieces.len() as u32);
        self.pieces = pieces;
        self.piece_at = at;
    }

    fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize]
    }

    fn merge_rank(&self, left: &str, right: &str) -> Option<u32> {
        match (self.lookup(left.as_bytes()), self.lookup(right.as_bytes())) {
            (Some(a), Some(b)) => self.pair_ranks.get(&(a, b)).copied(),
            _ if self.odd_ranks.is_empty() => None,
            _ => self
                .odd_ranks
                .get(format!("{left}\0{right}").as_str())
                .copied(),
        }
    }

    /// Token ids of `text`. `add_special` adds BOS / EOS where the vocabulary asks for
    /// them; `parse_special` lets text like `<|im_start|>` become its control token
    /// (user-defined tokens are always recognised, as in llama.cpp).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut frags = Vec::new();
        if !text.is_empty() {
            frags.push(Fragment::Text(0..text.len()));
            self.partition(text, &mut frags, parse_special);
        }
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match self.kind {
            TokenizerKind::Spm => {
                let mut scratch = spm::SpmScratch::default();
                let mut escaped = String::new();
                let mut prev_special = true; // the text's start counts as after a special
                for f in &frags {
                    match f {
                        Fragment::Text(r) => {
                            escaped.clear();
                            if self.add_space_prefix && prev_special {
                                escaped.push('\u{2581}');
                            }
                            for c in text[r.clone()].chars() {
                                escaped.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm::encode(self, &escaped, &mut out, &mut scratch);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                    }
                }
            }
            TokenizerKind::Bpe => {
                let pre = self
                    .pre
                    .as_ref()
                    .expect("a BPE tokenizer has a pre-tokenizer");
                let mut scratch = bpe::BpeScratch::default();
                let mut pre_scratch = pretok::Scratch::default();
                let mut words = Vec::new();
                for f in &frags {
                    match f {
                        Fragment::Text(r) => {
                            let piece = &text[r.clone()];
                            pre.split(piece, &mut words, &mut pre_scratch);
                            for w in &words {
                                bpe::encode_word(self, &piece[w.clone()], &mut out, &mut scratch);
                            }
                        }
                        Fragment::Token(id) => out.push(*id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Cuts the text fragments at every spelling of a special token, longest tokens
    /// first, leftmost occurrence first. Control and unknown tokens are skipped unless
    /// `parse_special`.
    fn partition(&self, text: &str, frags: &mut Vec<Fragment>, parse_special: bool) {
        let mut pieces = Vec::new();
        for &id in &self.special {
            if !parse_special && self.tokens[id as usize].attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0
            {
                continue;
            }
            let pat = &*self.texts[id as usize];
            let mut i = 0;
            while i < frags.len() {
                let Fragment::Text(r) = frags[i].clone() else {
                    i += 1;
                    continue;
                };
                let hay = &text[r.clone()];
                let Some(first) = hay.find(pat) else {
                    i += 1;
                    continue;
                };
                pieces.clear();
                let mut at = 0;
                let mut next = Some(first);
                while let Some(p) = next {
                    if p > at {
                        pieces.push(Fragment::Text(r.start + at..r.start + p));
                    }
                    pieces.push(Fragment::Token(id));
                    at = p + pat.len();
                    next = hay[at..].find(pat).map(|q| q + at);
                }
                if at < hay.len() {
                    pieces.push(Fragment::Text(r.start + at..r.end));
                }
                let k = pieces.len();
                frags.splice(i..i + 1, pieces.drain(..));
                i += k;
            }
        }
    }

    /// The bytes `id` stands for in text (may be part of a UTF-8 character). Control
    /// and unknown tokens give their spelling when `special`, nothing otherwise; unused
    /// tokens give nothing; ids outside the vocabulary give nothing.
    pub fn token_piece(&self, id: u32, special: bool) -> &[u8] {
        let Some(t) = self.tokens.get(id as usize) else {
            return &[];
        };
        if !special && t.attr & (ATTR_UNKNOWN | ATTR_CONTROL) != 0 {
            return &[];
        }
        let (a, b) = (self.piece_at[id as usize], self.piece_at[id as usize + 1]);
        &self.pieces[a as usize..b as usize]
    }

    /// The token's spelling in the vocabulary (`▁the`, `Ġthe`, `<0x0A>`, `<|im_end|>`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(|t| &**t)
    }

    /// The tokens `encode` reads from text only when `parse_special` (control and
    /// unknown tokens), with their spellings, longest first.
    pub fn control_tokens(&self) -> impl Iterator<Item = (u32, &str)> {
        self.special
            .iter()
            .filter(|&&id| self.tokens[id as usize].attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0)
            .map(|&id| (id, &*self.texts[id as usize]))
    }

    /// The id whose spelling is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.lookup(text.as_bytes())
    }

    /// The token's type (with the flags llama.cpp adds while loading folded in: a token
    /// spelled like an end of turn reads as control, a control token named "unused" as
    /// unused).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        let a = self.tokens.get(id as usize)?.attr;
        Some(if a & ATTR_UNUSED != 0 {
            TokenType::Unused
        } else if a & ATTR_CONTROL != 0 {
            TokenType::Control
        } else if a & ATTR_USER_DEFINED != 0 {
            TokenType::UserDefined
        } else if a & ATTR_UNKNOWN != 0 {
            TokenType::Unknown
        } else if a & ATTR_BYTE != 0 {
            TokenType::Byte
        } else if a & ATTR_NORMAL != 0 {
            TokenType::Normal
        } else {
            TokenType::Undefined
        })
    }

    /// The text of `ids`, as llama.cpp's `llama_detokenize` gives it (special tokens
    /// kept in the ids): the first token loses a leading space when the vocabulary adds
    /// a space prefix, control tokens show only when `special`, and vocabularies that
    /// ask for it get spaces before `. , ! ?` and some contractions removed. Bytes that
    /// are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let mut p = self.token_piece(id, special);
            if i == 0 && self.add_space_prefix {
                p = p.strip_prefix(b" ").unwrap_or(p);
            }
            bytes.extend_from_slice(p);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A decoder that turns ids into text one at a time (see [`StreamDecoder`]).
    pub fn stream_decoder(&self, special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, special)
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// The pre-tokenizer's name as the file gives it (`qwen2`); "default" for SPM.
    pub fn pre_name(&self) -> &str {
        &self.pre_name
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End of turn, from the metadata or found by spelling (`<|im_end|>`, `<end_of_turn>`).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    pub fn eom(&self) -> Option<u32> {
        self.eom
    }

    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// Whether SPM text gets a leading space (and decoding drops it again).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether generating `id` ends the generation: EOS, EOT, EOM and the tokens
    /// llama.cpp recognises by spelling (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`,
    /// FIM pad / repo / file separators, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Problems met while loading that the caller should show (an unknown pre-tokenizer,
    /// a special token id outside the vocabulary, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// llama.cpp's `clean_up_tokenization_spaces`, three passes over the bytes:
/// " ?" " !" " ." " ," lose the space; " ' " becomes "'"; " 's" " 'm" " 're" " 've"
/// lose the space.
fn clean_up_spaces(t: &mut Vec<u8>) {
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);

    let n = t.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0; // the next character no longer follows a space
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    t.truncate(total);

    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied().filter(|_| i + 2 < n);
            if matches!(x1, b's' | b'm') || matches!((x1, x2), (b'r' | b'v', Some(b'e'))) {
                total -= 1;
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
}
