//! `loupe quantize` on a small hand-made model: llama.cpp's Q4_K_M mixing rules (checked
//! against the rules as written in llama-quant.cpp, by hand), fallbacks for row lengths
//! that are not whole K-quant blocks, tensors that keep their type, the requantize guard,
//! metadata, and the CLI's errors. Bit-identity with llama.cpp itself is checked in
//! peer/tests/quantize_vs_llama.rs.

use std::borrow::Cow;
use std::path::Path;
use std::process::Command;

use loupe::quantize::{quantize_model, FileType, QuantizeError, QuantizeOptions};
use loupe_gguf::{GgufFile, GgufWriter, Metadata, TensorToWrite, Value};
use loupe_quant::GgmlType;

const DIM: u64 = 256;
const HIDDEN: u64 = 352; // 11 blocks of 32, not a whole 256-block: K-quants fall back
const N_LAYER: usize = 8;

fn values(n: u64, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

/// A llama-shaped model with F32 weights (8 layers, 8 query and 2 KV heads, untied
/// output, a vocabulary of 64 without a tokenizer); `embd_type` lets the embedding be
/// something else. Its metadata and tensors agree, as the quantizer checks for the
/// architectures loupe runs.
fn write_model(path: &Path, embd_type: GgmlType) {
    let mut md = Metadata::default();
    md.push("general.architecture", Value::String("llama".into()));
    md.push("general.file_type", Value::U32(0));
    md.push("llama.block_count", Value::U32(N_LAYER as u32));
    md.push("llama.attention.head_count", Value::U32(8));
    md.push("llama.attention.head_count_kv", Value::U32(2));
    md.push("llama.embedding_length", Value::U32(DIM as u32));
    md.push("llama.feed_forward_length", Value::U32(HIDDEN as u32));
    md.push("llama.context_length", Value::U32(256));
    md.push("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    md.push("llama.vocab_size", Value::U32(64));
    let mut w = GgufWriter::new(md);
    let mut add = |name: String, dims: Vec<u64>, ty: GgmlType| {
        let n: u64 = dims.iter().product();
        let x = values(n, name.len() as u64 * 7919 + n);
        let mut data = vec![0u8; ty.row_bytes(n).unwrap() as usize];
        loupe_quant::quantize_row(ty, &x, &mut data).unwrap();
        w.add_tensor(TensorToWrite {
            name,
            ty,
            dims,
            data: Cow::Owned(data),
        });
    };
    let f = GgmlType::F32;
    add("token_embd.weight".into(), vec![DIM, 64], embd_type);
    add("output_norm.weight".into(), vec![DIM], f);
    add("output.weight".into(), vec![DIM, 64], f);
    for i in 0..N_LAYER {
        let b = |s: &str| format!("blk.{i}.{s}");
        add(b("attn_norm.weight"), vec![DIM], f);
        add(b("attn_q.weight"), vec![DIM, DIM], f);
        add(b("attn_k.weight"), vec![DIM, 64], f);
        add(b("attn_v.weight"), vec![DIM, 64], f);
        add(b("attn_output.weight"), vec![DIM, DIM], f);
        add(b("ffn_norm.weight"), vec![DIM], f);
        add(b("ffn_gate.weight"), vec![DIM, HIDDEN], f);
        add(b("ffn_up.weight"), vec![DIM, HIDDEN], f);
        add(b("ffn_down.weight"), vec![HIDDEN, DIM], f);
    }
    w.write(path).unwrap();
}

fn opts(ft: FileType) -> QuantizeOptions {
    QuantizeOptions {
        threads: 2,
        ..QuantizeOptions::new(ft)
    }
}

#[test]
fn q4_k_m_mixes_types_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("f32.gguf"), dir.path().join("q4km.gguf"));
    write_model(&src, GgmlType::F32);
    let input = GgufFile::open(&src).unwrap();
    let report = quantize_model(&input, &dst, &opts(FileType::Q4_K_M), &mut |_| {}).unwrap();
    let out = GgufFile::open(&dst).unwrap();
    let ty = |n: &str| out.tensor(n).unwrap().ty;
    use GgmlType::*;

    assert_eq!(ty("output.weight"), Q6_K);
    assert_eq!(ty("token_embd.weight"), Q4_K); // untied: the default type
    assert_eq!(ty("output_norm.weight"), F32);
    // attn_v gets Q6_K in the first eighth, the last eighth and every third layer
    // between (use_more_bits): layers 0, 3, 6, 7 of 8.
    for i in 0..N_LAYER {
        let more = [0, 3, 6, 7].contains(&i);
        assert_eq!(
            ty(&format!("blk.{i}.attn_v.weight")),
            if more { Q6_K } else { Q4_K },
            "layer {i}"
        );
        // ffn_down likewise, but 352 columns fit neither K-quant: Q6_K falls back to
        // Q8_0 and Q4_K to Q5_0.
        assert_eq!(
            ty(&format!("blk.{i}.ffn_down.weight")),
            if more { Q8_0 } else { Q5_0 },
            "layer {i}"
        );
        for t in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
            assert_eq!(ty(&format!("blk.{i}.{t}.weight")), Q4_K, "{t} layer {i}");
        }
        assert_eq!(ty(&format!("blk.{i}.attn_norm.weight")), F32);
    }
    assert_eq!(report.fallbacks.len(), N_LAYER);
    assert_eq!(report.requantized, 0);

    // llama.cpp's order: tensors outside blocks first, then by layer number, by name.
    let names: Vec<&str> = out.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        &names[..5],
        [
            "output.weight",
            "output_norm.weight",
            "token_embd.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_norm.weight"
        ]
    );
    assert_eq!(names.last(), Some(&"blk.7.ffn_up.weight"));

    // Metadata: the input's, then the quantization version and file type last.
    let md = out.metadata();
    let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
    assert_eq!(
        &keys[keys.len() - 2..],
        ["general.quantization_version", "general.file_type"]
    );
    assert_eq!(md.get_u32("general.file_type").unwrap(), 15);
    assert_eq!(md.get_u32("general.quantization_version").unwrap(), 2);

    // The values survive: a Q4_K tensor decodes close to its source.
    let a = input
        .dequantize(input.tensor("blk.2.attn_q.weight").unwrap())
        .unwrap();
    let b = out
        .dequantize(out.tensor("blk.2.attn_q.weight").unwrap())
        .unwrap();
    let rms = (a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / a.len() as f32).sqrt();
    assert!(rms < 0.01, "rms error {rms}");

    // Nothing left behind but the two files.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn pure_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("f32.gguf"), dir.path().join("out.gguf"));
    write_model(&src, GgmlType::F32);
    let input = GgufFile::open(&src).unwrap();
    let o = QuantizeOptions {
        pure: true,
        output_tensor_type: Some(GgmlType::F16),
        token_embedding_type: Some(GgmlType::Q8_0),
        ..opts(FileType::Q3_K_M)
    };
    quantize_model(&input, &dst, &o, &mut |_| {}).unwrap();
    let out = GgufFile::open(&dst).unwrap();
    let ty = |n: &str| out.tensor(n).unwrap().ty;
    use GgmlType::*;
    assert_eq!(ty("output.weight"), F16);
    assert_eq!(ty("token_embd.weight"), Q8_0);
    assert_eq!(ty("blk.0.attn_v.weight"), Q3_K);
    assert_eq!(ty("blk.0.ffn_down.weight"), Q4_0); // fallback still applies
    assert_eq!(ty("blk.5.attn_output.weight"), Q3_K);
}

#[test]
fn requantizing_needs_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("q.gguf"), dir.path().join("out.gguf"));
    write_model(&src, GgmlType::Q8_0);
    let input = GgufFile::open(&src).unwrap();
    let err = quantize_model(&input, &dst, &opts(FileType::Q4_0), &mut |_| {}).unwrap_err();
    assert!(matches!(err, QuantizeError::Requantize { .. }), "{err}");
    assert!(err.to_string().contains("--allow-requantize"), "{err}");
    assert!(!dst.exists());
    let o = QuantizeOptions {
        allow_requantize: true,
        ..opts(FileType::F16)
    };
    let report = quantize_model(&input, &dst, &o, &mut |_| {}).unwrap();
    assert_eq!(report.requantized, 1);
    let out = GgufFile::open(&dst).unwrap();
    assert_eq!(out.tensor("token_embd.weight").unwrap().ty, GgmlType::F16);
    assert_eq!(out.tensor("output_norm.weight").unwrap().ty, GgmlType::F32);
}

#[test]
fn cli_names_the_valid_types() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f32.gguf");
    write_model(&src, GgmlType::F32);
    let loupe = env!("CARGO_BIN_EXE_loupe");
    let out = Command::new(loupe)
        .args(["quantize"])
        .arg(&src)
        .arg(dir.path().join("x.gguf"))
        .arg("Q9_K")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Q4_K_M") && err.contains("IQ4_XS"), "{err}");

    let dst = dir.path().join("q8.gguf");
    let out = Command::new(loupe)
        .args(["quantize", "-t", "2"])
        .arg(&src)
        .arg(&dst)
        .arg("q8_0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains("Q8_0") && msg.contains("bits/weight"), "{msg}");
    let f = GgufFile::open(&dst).unwrap();
    assert_eq!(f.tensor("blk.1.attn_q.weight").unwrap().ty, GgmlType::Q8_0);
}
