//! loupe's tokenizers against llama.cpp's on both test models: the same ids for a battery
//! of hard strings (every combination of add_special and parse_special), the same piece
//! for every token of the vocabulary, the same end-of-generation set, and streaming
//! detokenize giving llama.cpp's text.

mod common;

use std::time::Instant;

use common::{model_path, GEMMA, QWEN};
use loupe_engine::tokenizer::Tokenizer;
use loupe_gguf::GgufFile;
use peer::llama::{Llama, Params};

/// Strings that have tripped tokenizers: spaces and newlines at the edges and in runs,
/// many scripts, emoji sequences, numbers, code, special-token spellings.
const HARD: &[&str] = &[
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    " \n",
    "\n ",
    "\t\t\tx",
    "Hello",
    " Hello",
    "  Hello",
    "Hello ",
    "Hello  ",
    "Hello world",
    "Hello  world",
    "Hello   world",
    " Hello World ",
    "hello\nworld",
    "hello\n\nworld\n",
    "hello \n world",
    "a\tb\tc",
    "trailing spaces    ",
    "    leading spaces",
    "line one\r\nline two\r\n",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right, aren't you? We'll see, they'd say, it's fine.",
    "I'M SURE YOU'RE RIGHT, DON'T YOU'LL",
    "'s 't 're 've 'm 'll 'd",
    "rock 'n' roll",
    "\"quoted\" and 'single'",
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345",
    "1234567890",
    "3.14159265358979",
    "1,000,000.00",
    "-17 +23 1e-9 0x1F 0b1010",
    "2024-06-01T12:34:56Z",
    "Call 555-0199 or +1 (800) 555 0199.",
    "version 1.2.3-beta+build.45",
    "Ⅻ ½ ¾ ² ³ ٣ ४ 五",
    "你好，世界！",
    "我爱自然语言处理。今天天气很好。",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 텍스트입니다. 안녕하세요!",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε· ελληνικά",
    "สวัสดีชาวโลก ภาษาไทย",
    "Xin chào thế giới, tiếng Việt có dấu",
    "Ünïcödé äccénts: café, naïve, façade, São Paulo, Zürich",
    "ǅemal ǈ ǋ ﬁ ﬂ ﬀ",
    "e\u{301}te\u{301} combining marks",
    "\u{200b}zero\u{200b}width\u{200d}joiner",
    "non\u{a0}breaking\u{a0}space and\u{3000}ideographic",
    "soft\u{ad}hyphen",
    "tab\u{b}vertical\u{c}formfeed",
    "\u{85}next line",
    "😀",
    "😀😃😄😁",
    "Hello 😀 world",
    "👍🏽 👋🏿 🙏🏻",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag",
    "🇺🇸🇯🇵🇩🇪",
    "❤️ ♥ ☺ ✔ ★",
    "emoji at end 🎉",
    "🎉 emoji at start",
    "a😀b😀c",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝟙𝟚𝟛",
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }",
    "if x != y && z >= 0 || !flag { return; }",
    "<div class=\"main\"><p>Hi</p></div>",
    "SELECT * FROM users WHERE id = 42;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.org, ftp://files.example.net/a_b-c.tar.gz",
    "C:\\Users\\name\\file.txt",
    "$HOME/.cache/loupe ~/bin ../up ./here",
    "a+b=c; x^2 ~ y | z",
    "!!!???...,,,;;;:::",
    "----------",
    "__init__ __main__",
    "camelCaseIdentifier snake_case_name SCREAMING_CASE",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "text<|endoftext|>more",
    "<|fim_prefix|>def<|fim_suffix|>\n<|fim_middle|>",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<bos>Hello",
    "<eos>",
    "<pad><unk><mask>",
    "<unused0><unused1>",
    "<0x41>",
    "<0x0A><0xFF>",
    "<s></s>",
    "<|im_start|><|im_start|>",
    "< |im_start| >",
    "<|im_start",
    "im_start|>",
    "[multimodal]",
    "<start_of_image>",
    "<b>bold</b> <i>it</i>",
    "a",
    "ab",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the the the the",
    "  \n  \n  ",
    " \t \n \r ",
    "word\n\n\n\n\nword",
    "x                                                  y",
    "Mixed: English, 中文, العربية, हिन्दी, русский, 한국어 and 😀 in one line.",
];

fn open_llama(file: &str) -> Llama {
    let params = Params {
        n_ctx: 64,
        n_batch: 64,
        n_threads: 2,
    };
    Llama::load(model_path(file), params).unwrap_or_else(|e| panic!("{file}: {e:#}"))
}

fn open_loupe(file: &str) -> (Tokenizer, f64) {
    let gguf = GgufFile::open(model_path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let t0 = Instant::now();
    let tok = Tokenizer::from_metadata(gguf.metadata()).unwrap_or_else(|e| panic!("{file}: {e}"));
    (tok, t0.elapsed().as_secs_f64())
}

fn first_diff(a: &[u32], b: &[i32]) -> usize {
    a.iter()
        .zip(b)
        .position(|(&x, &y)| i64::from(x) != i64::from(y))
        .unwrap_or(a.len().min(b.len()))
}

fn compare(file: &str) {
    let llama = open_llama(file);
    let (tok, load_s) = open_loupe(file);
    eprintln!(
        "{file}: loupe built its tokenizer ({} tokens, {:?}, pre {}) in {:.0} ms",
        tok.n_vocab(),
        tok.kind(),
        tok.pre_name(),
        load_s * 1e3
    );
    assert!(
        tok.warnings().is_empty(),
        "{file}: warnings {:?}",
        tok.warnings()
    );
    assert!(
        load_s < 3.0,
        "{file}: building the tokenizer took {load_s:.2} s"
    );
    assert_eq!(tok.n_vocab(), llama.n_vocab(), "{file}: vocabulary size");
    assert_eq!(tok.add_bos(), llama.add_bos(), "{file}: add_bos");
    if tok.add_bos() {
        assert_eq!(
            tok.bos().map(|b| b as i32),
            Some(llama.bos()),
            "{file}: BOS id"
        );
    }

    // Every token's piece, rendered and not.
    let mut piece_failures = Vec::new();
    for id in 0..tok.n_vocab() as u32 {
        for special in [false, true] {
            let ours = tok.token_piece(id, special);
            let theirs = llama.token_to_piece(id as i32, special);
            if ours != theirs.as_slice() && piece_failures.len() < 20 {
                piece_failures.push(format!(
                    "id {id} special={special}: loupe {ours:?}, llama.cpp {theirs:?}"
                ));
            }
        }
        assert_eq!(
            tok.is_eog(id),
            llama.is_eog(id as i32),
            "{file}: is_eog({id}) ({:?})",
            tok.token_text(id)
        );
    }
    assert!(
        piece_failures.is_empty(),
        "{file}: pieces differ:\n{}",
        piece_failures.join("\n")
    );

    // Token ids of the battery.
    let t0 = Instant::now();
    let mut n_cases = 0;
    let mut failures = Vec::new();
    for &text in HARD {
        for add_special in [false, true] {
            for parse_special in [false, true] {
                n_cases += 1;
                let ours = tok.encode(text, add_special, parse_special);
                let theirs = llama
                    .tokenize(text, add_special, parse_special)
                    .unwrap_or_else(|e| panic!("{file}: llama.cpp tokenize {text:?}: {e:#}"));
                let same = ours.len() == theirs.len()
                    && ours
                        .iter()
                        .zip(&theirs)
                        .all(|(&a, &b)| i64::from(a) == i64::from(b));
                if !same {
                    failures.push(format!(
                        "{text:?} (add_special={add_special}, parse_special={parse_special}): \
                         first difference at position {}\n  loupe:     {ours:?}\n  llama.cpp: {theirs:?}",
                        first_diff(&ours, &theirs)
                    ));
                    continue;
                }
                // Streaming detokenize, one id at a time, both renderings.
                for special in [false, true] {
                    let mut dec = tok.stream_decoder(special);
                    let mut text_out: String = ours.iter().map(|&id| dec.push(id)).collect();
                    text_out.push_str(&dec.finish());
                    let expected = llama.detokenize(&theirs, special);
                    if text_out != expected {
                        failures.push(format!(
                            "{text:?} (add_special={add_special}, parse_special={parse_special}): \
                             stream decode (special={special}) gives {text_out:?}, llama.cpp {expected:?}"
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "{file}: {} strings, {n_cases} cases, {} failures ({:.0} ms)",
        HARD.len(),
        failures.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        failures.is_empty(),
        "{file}: {} of {n_cases} cases differ from llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn battery_has_at_least_100_strings() {
    assert!(HARD.len() >= 100, "{}", HARD.len());
}

#[test]
fn gemma_spm_matches_llama_cpp() {
    compare(GEMMA);
}

#[test]
fn qwen_bpe_matches_llama_cpp() {
    compare(QWEN);
}
