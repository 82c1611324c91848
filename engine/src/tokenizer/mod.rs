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
mod load;
mod pretok;
mod spm;
mod stream;
mod unicode;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use loupe_gguf::{GgufError, Metadata};

pub use pretok::PreKind;
pub use stream::StreamDecoder;

use load::{end_of_generation, MergeRanks, SpecialIds, Vocab, VocabType};
use pretok::PreTokenizer;

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

impl Tokenizer {
    /// Builds the tokenizer of a model from its `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let mut warnings = Vec::new();
        let vocab_type = VocabType::read(md, &mut warnings)?;
        let mut vocab = Vocab::read(md, &mut warnings)?;
        let ids = SpecialIds::resolve(md, &vocab_type, &mut vocab, &mut warnings)?;
        let eog = end_of_generation(&ids, &mut vocab);
        let special = vocab.partition_tokens();
        let (merges, byte_tokens) = match vocab_type.kind {
            TokenizerKind::Spm => (MergeRanks::default(), vocab.byte_fallback_tokens()),
            TokenizerKind::Bpe => (MergeRanks::read(md, &vocab)?, [None; 256]),
        };

        let mut tok = Tokenizer {
            kind: vocab_type.kind,
            pre_name: vocab_type.pre_name,
            pre: vocab_type.pre,
            tokens: vocab.tokens,
            texts: vocab.texts,
            text_to_id: vocab.text_to_id,
            pieces: Vec::new(),
            piece_at: Vec::new(),
            pair_ranks: merges.pair_ranks,
            odd_ranks: merges.odd_ranks,
            byte_tokens,
            special,
            eog,
            bos: ids.bos,
            eos: ids.eos,
            eot: ids.eot,
            eom: ids.eom,
            unk: ids.unk,
            pad: ids.pad,
            add_bos: ids.add_bos,
            add_eos: ids.add_eos,
            add_space_prefix: vocab_type.add_space_prefix,
            clean_spaces: vocab_type.clean_spaces,
            ignore_merges: vocab_type.ignore_merges,
            warnings,
        };
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

/// The character byte-level BPE ("gpt2") vocabularies spell byte `b` with (GPT-2's map:
/// printable Latin-1 bytes stand for themselves, the others move to U+0100 and up), for
/// code that writes such a vocabulary.
pub fn gpt2_byte_char(b: u8) -> char {
    unicode::BYTE_TO_CHAR[b as usize]
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
