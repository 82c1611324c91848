//! Tokenizer rules on small hand-made vocabularies: SPM merges and byte fallback, BPE
//! merge order, the special-token partition, end-of-generation tokens, and the stream
//! decoder holding back a split character. (The real vocabularies are checked against
//! llama.cpp in peer/tests/tokenizer_vs_llama.rs.)

use loupe_engine::tokenizer::{TokenType, Tokenizer, TokenizerKind};
use loupe_gguf::{Array, Metadata, Value};

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// An SPM vocabulary: 0-2 control, then the given (text, score) pieces, then all 256
/// byte tokens.
fn spm(pieces: &[(&str, f32)], extra: &[(&str, &str)]) -> Tokenizer {
    let mut texts = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2, CONTROL, CONTROL];
    for (t, s) in pieces {
        texts.push(t.to_string());
        scores.push(*s);
        types.push(if t.starts_with('<') && t.ends_with('>') && t.len() > 2 {
            USER_DEFINED
        } else {
            NORMAL
        });
    }
    for b in 0..=255u8 {
        texts.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(BYTE);
    }
    let mut m = Metadata::default();
    m.push("tokenizer.ggml.model", Value::String("llama".into()));
    m.push("tokenizer.ggml.tokens", Value::Array(Array::String(texts)));
    m.push("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    m.push("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    for (k, v) in extra {
        m.push(*k, Value::Bool(*v == "true"));
    }
    Tokenizer::from_metadata(&m).unwrap()
}

fn byte_id(tok: &Tokenizer, b: u8) -> u32 {
    tok.token_id(&format!("<0x{b:02X}>")).unwrap()
}

#[test]
fn spm_merges_by_score_and_adds_bos_and_space_prefix() {
    let tok = spm(
        &[
            ("▁", -1.0),
            ("h", -1.0),
            ("i", -1.0),
            ("hi", -2.0),
            ("▁h", -0.5),
            ("▁hi", -3.0),
        ],
        &[],
    );
    assert_eq!(tok.kind(), TokenizerKind::Spm);
    let id = |s: &str| tok.token_id(s).unwrap();
    // "▁hi": the best first pair is "▁h" (-0.5), then "▁hi" is a token: one token.
    assert_eq!(tok.encode("hi", true, false), [1, id("▁hi")]);
    assert_eq!(tok.encode("hi", false, false), [id("▁hi")]);
    // Defaults for a "llama" vocabulary: BOS 1 added, EOS 2 not.
    assert!(tok.add_bos() && !tok.add_eos());
    assert_eq!(tok.encode("", true, false), [1]);
    assert_eq!(tok.encode("", false, false), Vec::<u32>::new());
    // decoding drops the space prefix again
    assert_eq!(tok.decode(&tok.encode("hi", false, false), false), "hi");
    assert_eq!(tok.decode(&tok.encode("hi", true, false), false), " hi");
}

#[test]
fn spm_byte_fallback_for_unknown_characters() {
    let tok = spm(
        &[("▁", -1.0), ("a", -1.0)],
        &[("tokenizer.ggml.add_space_prefix", "false")],
    );
    // "é" is no token: its two UTF-8 bytes become <0xC3> <0xA9>.
    let ids = tok.encode("aé", false, false);
    assert_eq!(
        ids,
        [
            tok.token_id("a").unwrap(),
            byte_id(&tok, 0xC3),
            byte_id(&tok, 0xA9)
        ]
    );
    assert_eq!(tok.token_piece(byte_id(&tok, 0xC3), false), [0xC3]);
    assert_eq!(tok.token_type(byte_id(&tok, 0xC3)), Some(TokenType::Byte));
    assert_eq!(tok.decode(&ids, false), "aé");
    // A text spelling a byte token is just text.
    let ids = tok.encode("<0x41>", false, false);
    assert!(!ids.contains(&byte_id(&tok, 0x41)), "{ids:?}");
}

#[test]
fn special_partition_only_when_asked_except_user_defined() {
    let tok = spm(
        &[("▁", -1.0), ("a", -1.0), ("<tag>", 0.0)],
        &[("tokenizer.ggml.add_space_prefix", "false")],
    );
    let a = tok.token_id("a").unwrap();
    let tag = tok.token_id("<tag>").unwrap();
    // control "<s>" only with parse_special
    let plain = tok.encode("a<s>a", false, false);
    assert!(!plain.contains(&1), "{plain:?}");
    assert_eq!(tok.encode("a<s>a", false, true), [a, 1, a]);
    // user-defined tokens are always recognised
    assert_eq!(tok.encode("a<tag>a", false, false), [a, tag, a]);
    assert_eq!(tok.encode("<tag><tag>", false, false), [tag, tag]);
    // control tokens render only when asked
    assert_eq!(tok.token_piece(1, false), b"");
    assert_eq!(tok.token_piece(1, true), b"<s>");
    assert_eq!(tok.token_piece(tag, false), b"<tag>");
}

#[test]
fn special_partition_prefers_longer_tokens() {
    let mut m = Metadata::default();
    m.push("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.push("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    m.push(
        "tokenizer.ggml.tokens",
        strings(&["a", "<|x|>", "<|x|>y", "y"]),
    );
    m.push(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![NORMAL, CONTROL, CONTROL, NORMAL])),
    );
    m.push("tokenizer.ggml.merges", strings(&[]));
    let tok = Tokenizer::from_metadata(&m).unwrap();
    assert_eq!(tok.encode("<|x|>y<|x|>", false, true), [2, 1]);
}

/// A byte-level BPE vocabulary over "a", "b", "c", space.
fn bpe(merges: &[&str], pre: &str) -> Tokenizer {
    let mut m = Metadata::default();
    m.push("tokenizer.ggml.model", Value::String("gpt2".into()));
    m.push("tokenizer.ggml.pre", Value::String(pre.into()));
    m.push(
        "tokenizer.ggml.tokens",
        strings(&[
            "a",
            "b",
            "c",
            "Ġ",
            "ab",
            "bc",
            "abc",
            "Ġa",
            "<|endoftext|>",
            "<|im_end|>",
            "Ċ",
        ]),
    );
    let mut types = vec![NORMAL; 11];
    types[8] = CONTROL;
    types[9] = CONTROL;
    m.push("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    m.push("tokenizer.ggml.merges", strings(merges));
    m.push("tokenizer.ggml.eos_token_id", Value::U32(8));
    Tokenizer::from_metadata(&m).unwrap()
}

#[test]
fn bpe_merges_in_rank_order() {
    // "b c" ranks first: abc -> a bc (no "a bc" merge) -> two tokens.
    let tok = bpe(&["b c", "a b", "ab c"], "gpt-2");
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.encode("abc", false, false), [0, 5]);
    // "a b" first: ab c -> abc.
    let tok = bpe(&["a b", "b c", "ab c"], "gpt-2");
    assert_eq!(tok.encode("abc", false, false), [6]);
    // The space is GPT-2's "Ġ"; the pre-tokenizer keeps it with the next word.
    let tok = bpe(&["Ġ a"], "gpt-2");
    assert_eq!(tok.encode("a a", false, false), [0, 7]);
    assert_eq!(tok.decode(&[0, 7], false), "a a");
    assert_eq!(tok.token_piece(10, false), b"\n");
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
}

#[test]
fn bpe_unknown_pre_tokenizer_warns_and_falls_back() {
    let tok = bpe(&["a b"], "no-such-pre");
    assert_eq!(tok.warnings().len(), 1);
    assert!(
        tok.warnings()[0].contains("no-such-pre"),
        "{:?}",
        tok.warnings()
    );
    assert_eq!(tok.encode("ab", false, false), [4]);
}

#[test]
fn end_of_generation_tokens() {
    let tok = bpe(&[], "qwen2");
    // EOS from the metadata, "<|im_end|>" by spelling; the first EOT-like spelling
    // ("<|endoftext|>") is the EOT.
    assert!(tok.is_eog(8) && tok.is_eog(9) && !tok.is_eog(0));
    assert_eq!(tok.eot(), Some(8));
    assert_eq!(tok.eos(), Some(8));
    assert_eq!(tok.token_type(9), Some(TokenType::Control));
    // Control tokens are found in text only with parse_special.
    assert_eq!(tok.encode("a<|im_end|>", false, true), [0, 9]);
    assert_ne!(tok.encode("a<|im_end|>", false, false), [0, 9]);
}

#[test]
fn stream_decoder_holds_back_a_split_emoji() {
    // "😀" is F0 9F 98 80: give each byte its own token.
    let tok = spm(
        &[("▁", -1.0), ("a", -1.0)],
        &[("tokenizer.ggml.add_space_prefix", "false")],
    );
    let ids = tok.encode("a😀a", false, false);
    assert_eq!(ids.len(), 6, "{ids:?}");
    let mut dec = tok.stream_decoder(false);
    let parts: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(parts, ["a", "", "", "", "😀", "a"]);
    assert!(!dec.has_pending());
    assert_eq!(dec.finish(), "");

    // An unfinished character at the end comes out as U+FFFD on finish.
    let mut dec = tok.stream_decoder(false);
    assert_eq!(dec.push(byte_id(&tok, 0xF0)), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    // A byte that can never start a character is replaced at once.
    let mut dec = tok.stream_decoder(false);
    assert_eq!(dec.push(byte_id(&tok, 0x80)), "\u{FFFD}");
}

#[test]
fn stream_decoder_drops_the_space_prefix_once() {
    let tok = spm(&[("▁", -1.0), ("a", -1.0), ("▁a", -0.5)], &[]);
    let ids = tok.encode("a a", false, false);
    let mut dec = tok.stream_decoder(false);
    let text: String = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(text, "a a");
    assert_eq!(text, tok.decode(&ids, false));
    // With BOS first, the BOS consumes the rule (as llama_detokenize does).
    let ids = tok.encode("a", true, false);
    let mut dec = tok.stream_decoder(false);
    let text: String = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(text, " a");
    let mut dec = tok.stream_decoder(true);
    let text: String = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(text, "<s> a");
}

#[test]
fn missing_vocabulary_names_the_key() {
    let mut m = Metadata::default();
    m.push("tokenizer.ggml.model", Value::String("llama".into()));
    let e = Tokenizer::from_metadata(&m).unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
    let mut m = Metadata::default();
    m.push("tokenizer.ggml.model", Value::String("t5".into()));
    let e = Tokenizer::from_metadata(&m).unwrap_err().to_string();
    assert!(e.contains("t5"), "{e}");
}
