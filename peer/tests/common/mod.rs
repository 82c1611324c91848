//! Shared by the differential tests: test-model paths, a seeded generator, bit-exact
//! comparison, and the one place that calls loupe-quant's row API.
#![allow(dead_code)] // each test binary uses a different part

pub mod kld;

use std::path::PathBuf;

use loupe_quant::GgmlType;

pub const GEMMA: &str = "gemma-3-270m-Q4_K_M.gguf";
pub const QWEN: &str = "qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf";
pub const MODELS: [&str; 2] = [GEMMA, QWEN];

/// ~110 KB of English prose every Debian system has: the licence texts of base-files.
pub fn english_prose() -> String {
    let dir = std::path::Path::new("/usr/share/common-licenses");
    let mut text = String::new();
    for f in ["GPL-3", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "LGPL-2.1"] {
        let p = dir.join(f);
        text += &std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the test text comes from Debian's base-files)",
                p.display()
            )
        });
        text.push('\n');
    }
    text
}

/// `<file>` in loupe's model store (`loupe::store::models_dir`); a missing model fails the
/// test (it is not skipped), naming the file and how to fetch it.
pub fn model_path(file: &str) -> PathBuf {
    let path = loupe::store::models_dir().join(file);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (from the repository root) \
         or point LOUPE_MODELS at the folder that holds {file}",
        path.display()
    );
    path
}

/// splitmix64: small, seeded, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        loupe_engine::sample::splitmix64(&mut self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller, in f64).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Index of the first element whose f32 bit pattern differs; with `nan_equal`, two NaNs
/// of any payload count as equal.
pub fn first_mismatch(a: &[f32], b: &[f32], nan_equal: bool) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits() && !(nan_equal && x.is_nan() && y.is_nan()))
}

/// "at 17: ggml 0.5 (0x3f000000), loupe 0.25 (0x3e800000)".
pub fn describe_mismatch(i: usize, ggml: &[f32], loupe: &[f32]) -> String {
    let show = |v: &[f32]| match v.get(i) {
        Some(x) => format!("{x:e} ({:#010x})", x.to_bits()),
        None => "(missing)".to_string(),
    };
    format!("at element {i}: ggml {}, loupe {}", show(ggml), show(loupe))
}

/// loupe's dequantize of `n` elements.
pub fn loupe_dequantize(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let mut out = vec![0f32; n];
    loupe_quant::dequantize_row(ty, src, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// loupe's quantize of one row.
pub fn loupe_quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, String> {
    let bytes = ty
        .row_bytes(src.len() as u64)
        .ok_or_else(|| format!("{ty}: {} is not a whole number of blocks", src.len()))?;
    let mut out = vec![0u8; bytes as usize];
    loupe_quant::quantize_row(ty, src, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn loupe_can_quantize(ty: GgmlType) -> bool {
    loupe_quant::can_quantize(ty)
}
