//! A vocabulary made in-process, for synthetic models written where no donor model is at
//! hand (`loupe synth --vocab-from generated`, or a machine that holds only the `loupe`
//! binary): a byte-level BPE ("gpt2") vocabulary of the shape's size.
//!
//! Its tokens, in id order:
//! 1. the 256 bytes, byte `b` as token `b`, spelled in GPT-2's byte characters (a space
//!    is `Ġ`), so every text encodes and decodes back exactly;
//! 2. the tokens of merges that make each of a list of common English words one token,
//!    with and without a leading space (so English prompts take about as many tokens as
//!    with a real vocabulary, not one per byte);
//! 3. BOS and EOS, control tokens spelled as Llama 3's;
//! 4. unused `[PAD<id>]` tokens up to the size asked for (as llama.cpp's converter pads a
//!    vocabulary to its embedding's rows).
//!
//! The weights are random, so what the ids mean does not matter; what does is that loupe
//! and llama.cpp both load it, and that its size, hence the embedding and output matrices,
//! is the real model's.

use std::collections::{HashMap, HashSet};

use anyhow::{ensure, Result};
use loupe_engine::tokenizer::gpt2_byte_char;
use loupe_gguf::{Array, Value};

use super::Pairs;

/// The size of a generated vocabulary for shapes that take the donor's (the test shapes):
/// Llama 2's, which keeps their embedding small.
pub const GENERATED_VOCAB_SIZE: usize = 32000;

/// The pre-tokenizer the vocabulary names: one loupe and llama.cpp both know, and whose
/// decoding gives back the text exactly (it does not clean up spaces before punctuation).
pub const GENERATED_PRE_TOKENIZER: &str = "qwen2";

const BOS_TEXT: &str = "<|begin_of_text|>";
const EOS_TEXT: &str = "<|end_of_text|>";

// `tokenizer.ggml.token_type` values.
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_UNUSED: i32 = 5;

/// Common English words, about most frequent first: each becomes one token.
const COMMON_WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may",
    "these", "what", "them", "than", "some", "him", "time", "into", "only", "do", "two", "first",
    "new", "like", "out", "then", "also", "any", "my", "now", "over", "such", "our", "man", "me",
    "even", "most", "made", "after", "many", "said", "could", "about", "up", "your", "how",
    "where", "each", "well", "just", "very", "through", "make", "people", "because", "good",
    "should", "before", "here", "between", "world", "life", "day", "year", "years", "way", "work",
    "back", "long", "know", "get", "see", "use", "used", "under", "while", "might", "never",
    "same", "another", "number", "part", "hello", "model", "token", "text", "function", "return",
    "value", "data", "code", "name", "Hello", "The", "This", "In", "It", "What", "How", "Once",
    "upon",
];

/// What a generated vocabulary holds, in id order (see the module's doc).
pub struct GeneratedVocab {
    pub tokens: Vec<String>,   // (n_vocab,) spellings
    pub token_types: Vec<i32>, // (n_vocab,) tokenizer.ggml.token_type values
    pub merges: Vec<String>,   // "left right", rank order
    pub bos: u32,
    pub eos: u32,
}

impl GeneratedVocab {
    /// The vocabulary of `n_vocab` tokens; an error when that cannot hold the byte and
    /// word tokens and BOS / EOS.
    pub fn new(n_vocab: usize) -> Result<GeneratedVocab> {
        let mut tokens: Vec<String> = (0..=255u8).map(|b| gpt2_byte_char(b).to_string()).collect();
        let (merges, merged) = common_word_merges();
        tokens.extend(merged);
        let bos = tokens.len();
        tokens.push(BOS_TEXT.to_string());
        tokens.push(EOS_TEXT.to_string());
        let n_used = tokens.len();
        ensure!(
            n_vocab >= n_used && n_vocab <= u32::MAX as usize / 2,
            "a generated vocabulary holds from {n_used} to {} tokens, not {n_vocab}",
            u32::MAX / 2
        );
        tokens.extend((n_used..n_vocab).map(|id| format!("[PAD{id}]")));
        let mut token_types = vec![TYPE_NORMAL; bos];
        token_types.extend([TYPE_CONTROL, TYPE_CONTROL]);
        token_types.resize(n_vocab, TYPE_UNUSED);
        Ok(GeneratedVocab {
            tokens,
            token_types,
            merges,
            bos: bos as u32,
            eos: bos as u32 + 1,
        })
    }

    /// Its `tokenizer.*` metadata pairs. BOS is added to a prompt, as Llama's vocabularies
    /// do.
    pub fn metadata(self) -> Pairs {
        let s = |v: &str| Value::String(v.to_string());
        vec![
            ("tokenizer.ggml.model".into(), s("gpt2")),
            ("tokenizer.ggml.pre".into(), s(GENERATED_PRE_TOKENIZER)),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::String(self.tokens)),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(self.token_types)),
            ),
            (
                "tokenizer.ggml.merges".into(),
                Value::Array(Array::String(self.merges)),
            ),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(self.bos)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(self.eos)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
        ]
    }
}

/// Merges that make each of [`COMMON_WORDS`] (after a space, then alone) one token, in
/// rank order, and the tokens they make (in the same order).
///
/// While BPE, with the merges made so far, splits the word in more than one piece, a merge
/// of its first two pieces is added. A new merge ranks after every earlier one, so it
/// applies only where no earlier merge does: the words before still split as they did
/// (into one piece each), and this one splits into fewer pieces each time, then one.
fn common_word_merges() -> (Vec<String>, Vec<String>) {
    let mut ranks: HashMap<(String, String), usize> = HashMap::new();
    let mut merges = Vec::new();
    let mut merged = Vec::new();
    let mut made: HashSet<String> = HashSet::new();
    for word in COMMON_WORDS {
        for text in [format!(" {word}"), word.to_string()] {
            let spelled: String = text.bytes().map(gpt2_byte_char).collect();
            loop {
                let pieces = bpe_split(&spelled, &ranks);
                let [left, right, ..] = &pieces[..] else {
                    break;
                };
                // The pair has no rank yet, else BPE would have joined it.
                ranks.insert((left.clone(), right.clone()), merges.len());
                merges.push(format!("{left} {right}"));
                let joined = format!("{left}{right}");
                if made.insert(joined.clone()) {
                    merged.push(joined);
                }
            }
        }
    }
    (merges, merged)
}

/// `word` (in byte characters) split as byte-level BPE splits it with `ranks`: from its
/// characters, join the adjacent pair of lowest rank (the leftmost of equals) until no
/// pair has a rank.
fn bpe_split(word: &str, ranks: &HashMap<(String, String), usize>) -> Vec<String> {
    let mut pieces: Vec<String> = word.chars().map(String::from).collect();
    loop {
        let best = (1..pieces.len())
            .filter_map(|i| {
                let pair = (pieces[i - 1].clone(), pieces[i].clone());
                ranks.get(&pair).map(|&r| (r, i))
            })
            .min();
        let Some((_, i)) = best else {
            return pieces;
        };
        let right = pieces.remove(i);
        pieces[i - 1].push_str(&right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loupe_engine::tokenizer::{TokenType, Tokenizer, TokenizerKind};
    use loupe_gguf::Metadata;

    fn tokenizer(n_vocab: usize) -> Tokenizer {
        let mut md = Metadata::default();
        for (k, v) in GeneratedVocab::new(n_vocab).unwrap().metadata() {
            md.push(k, v);
        }
        let tok = Tokenizer::from_metadata(&md).unwrap();
        assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
        tok
    }

    #[test]
    fn generated_vocabulary_round_trips_text() {
        let tok = tokenizer(GENERATED_VOCAB_SIZE);
        assert_eq!(tok.n_vocab(), GENERATED_VOCAB_SIZE);
        assert_eq!(tok.kind(), TokenizerKind::Bpe);
        assert_eq!(tok.pre_name(), GENERATED_PRE_TOKENIZER);
        for text in [
            "hello",
            "Hello, world! The quick brown fox jumps over the lazy dog.",
            "  two spaces , tabs\tand\nnew lines\r\n ?!",
            "fn main() { println!(\"{}\", 1 + 2 * 3_000); } // code & <tags>",
            "ünïcödé: naïve café, 日本語のテキスト, Ελληνικά, русский, emoji 🦀👍🏽",
            "\u{0}\u{1}\u{7f} control bytes and \u{a0}\u{ad} no-break space and soft hyphen",
        ] {
            let ids = tok.encode(text, false, false);
            assert!(!ids.is_empty());
            assert_eq!(tok.decode(&ids, false), text, "{ids:?}");
        }
        // BOS is added, and hidden when decoding without special tokens.
        let ids = tok.encode("hello", true, false);
        assert_eq!(ids.first().copied(), tok.bos());
        assert_eq!(tok.decode(&ids, false), "hello");
    }

    #[test]
    fn common_words_are_one_token_and_special_tokens_have_their_roles() {
        let tok = tokenizer(GENERATED_VOCAB_SIZE);
        for word in COMMON_WORDS {
            for text in [format!(" {word}"), word.to_string()] {
                let ids = tok.encode(&text, false, false);
                assert_eq!(ids.len(), 1, "{text:?} -> {ids:?}");
            }
        }
        assert_eq!(tok.encode("the world", false, false).len(), 2);
        let (bos, eos) = (tok.bos().unwrap(), tok.eos().unwrap());
        assert_eq!(tok.token_text(bos), Some(BOS_TEXT));
        assert_eq!(tok.token_text(eos), Some(EOS_TEXT));
        assert!(tok.is_eog(eos) && !tok.is_eog(bos));
        assert_eq!(tok.token_type(bos), Some(TokenType::Control));
        // Special tokens spelled in a text are text unless asked for.
        assert_eq!(tok.encode(BOS_TEXT, false, true), vec![bos]);
        assert!(tok.encode(BOS_TEXT, false, false).len() > 1);
        let last = GENERATED_VOCAB_SIZE as u32 - 1;
        assert_eq!(tok.token_text(last), Some(&*format!("[PAD{last}]")));
        assert_eq!(tok.token_type(last), Some(TokenType::Unused));
        assert_eq!(tok.token_type(b'a' as u32), Some(TokenType::Normal));
        assert_eq!(tok.token_text(b' ' as u32), Some("Ġ"));
    }

    #[test]
    fn generated_vocabulary_takes_the_size_asked_for() {
        let v = GeneratedVocab::new(128256).unwrap();
        assert_eq!(v.tokens.len(), 128256);
        assert_eq!(v.token_types.len(), 128256);
        let n_used = v.eos as usize + 1;
        assert!(GeneratedVocab::new(n_used).is_ok());
        let err = GeneratedVocab::new(n_used - 1).err().unwrap().to_string();
        assert!(err.contains(&format!("from {n_used} to")), "{err}");
        // Every merge joins two tokens into a third.
        let all: HashSet<&str> = v.tokens.iter().map(String::as_str).collect();
        for m in &v.merges {
            let (l, r) = m.split_once(' ').unwrap();
            assert!(all.contains(l) && all.contains(r) && all.contains(&*format!("{l}{r}")));
        }
    }
}
