//! The tokenizers of the two test models, pinned to ids llama.cpp gives (the full
//! comparison with llama.cpp is peer/tests/tokenizer_vs_llama.rs; this keeps the main
//! workspace honest without compiling C++). A missing model fails, naming the script
//! that fetches it.

use std::time::Instant;

use loupe::store::{KnownModel, GEMMA3_270M, QWEN25_CODER_05B};
use loupe_engine::tokenizer::{Tokenizer, TokenizerKind};
use loupe_gguf::GgufFile;

fn load(m: KnownModel) -> Tokenizer {
    let path = m.path();
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set LOUPE_MODELS)",
        path.display()
    );
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t0 = Instant::now();
    let tok = Tokenizer::from_metadata(file.metadata())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!("{}: tokenizer built in {:?}", m.file, t0.elapsed());
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
    tok
}

#[test]
fn gemma3_spm() {
    let tok = load(GEMMA3_270M);
    assert_eq!(tok.kind(), TokenizerKind::Spm);
    assert_eq!(tok.n_vocab(), 262_144);
    assert_eq!((tok.bos(), tok.eos()), (Some(2), Some(1)));
    assert!(tok.add_bos() && !tok.add_space_prefix());
    assert_eq!(tok.encode("Hello world", true, false), [2, 9259, 1902]);
    assert_eq!(
        tok.encode("你好，世界！", false, false),
        [144626, 236900, 12811, 237354]
    );
    assert_eq!(
        tok.encode("1234567890", false, false),
        [236770, 236778, 236800, 236812, 236810, 236825, 236832, 236828, 236819, 236771]
    );
    let chat = "<start_of_turn>user\nHello<end_of_turn>";
    assert_eq!(tok.encode(chat, true, true), [2, 105, 2364, 107, 9259, 106]);
    assert!(!tok.encode(chat, true, false).contains(&105));
    let eot = tok.token_id("<end_of_turn>").unwrap();
    assert!(tok.is_eog(eot) && tok.is_eog(1) && !tok.is_eog(105));
    // "🀄" has no token: four byte tokens, which the stream decoder joins.
    let ids = tok.encode("🀄", false, false);
    assert_eq!(ids.len(), 4);
    let mut dec = tok.stream_decoder(false);
    let parts: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(parts, ["", "", "", "🀄"]);
}

#[test]
fn qwen25_bpe() {
    let tok = load(QWEN25_CODER_05B);
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.pre_name(), "qwen2");
    assert_eq!(tok.n_vocab(), 151_936);
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("Hello world", true, false), [9707, 1879]);
    assert_eq!(
        tok.encode("I'm sure you're right, aren't you?", false, false),
        [40, 2776, 2704, 498, 2299, 1290, 11, 7629, 944, 498, 30]
    );
    assert_eq!(
        tok.encode("你好，世界！", false, false),
        [108386, 3837, 99489, 6313]
    );
    assert_eq!(
        tok.encode("1234567890", false, false),
        [16, 17, 18, 19, 20, 21, 22, 23, 24, 15]
    );
    let chat = "<|im_start|>user\nHi<|im_end|>";
    assert_eq!(
        tok.encode(chat, true, true),
        [151644, 872, 198, 13048, 151645]
    );
    assert!(!tok.encode(chat, true, false).contains(&151644));
    assert!(tok.is_eog(151645) && tok.is_eog(151643) && !tok.is_eog(151644));
    let ids = tok.encode("naïve 😀 text", false, false);
    assert_eq!(tok.decode(&ids, false), "naïve 😀 text");
}
