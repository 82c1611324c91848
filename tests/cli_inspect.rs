//! `loupe inspect` as a user runs it: on the real test models, on a small file with known
//! values, and on damaged files (an error exit with a message, never a panic).

#[path = "../gguf/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{field_map, patch};
use loupe::store::{KnownModel, GEMMA3_270M, QWEN25_CODER_05B};

fn loupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(args)
        .output()
        .expect("run loupe")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The model's path; a missing model fails the test with what to run.
fn model(m: &KnownModel) -> PathBuf {
    let p = m.path();
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set LOUPE_MODELS)",
        p.display()
    );
    p
}

fn inspect_json(path: &Path) -> serde_json::Value {
    let o = loupe(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("--json output parses")
}

#[test]
fn gemma_summary_is_right() {
    let p = model(&GEMMA3_270M);
    let j = inspect_json(&p);
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["tensor_count"], 236);
    assert_eq!(j["tensors"].as_array().unwrap().len(), 236);
    assert_eq!(j["file_size"], GEMMA3_270M.size);
    assert_eq!(j["file_type"]["name"], "Q4_K_M");
    assert_eq!(j["tokenizer_model"], "llama");
    assert_eq!(j["block_count"], 18);
    assert_eq!(j["embedding_length"], 640);
    // Long arrays are elided unless --full.
    let toks = &j["metadata"]["tokenizer.ggml.tokens"];
    assert_eq!(toks["elided"], true);
    assert_eq!(toks["len"], j["vocab_size"]);
    let sum: u64 = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    let by_type: u64 = j["bytes_by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, by_type);
    assert!(sum < GEMMA3_270M.size && sum > GEMMA3_270M.size * 9 / 10);

    let o = loupe(&["inspect", p.to_str().unwrap()]);
    assert!(o.status.success());
    let text = stdout(&o);
    for want in ["gemma3", "Q4_K_M", "SentencePiece", "chat template", "Q6_K"] {
        assert!(text.contains(want), "summary lacks {want:?}:\n{text}");
    }
}

#[test]
fn qwen_summary_is_right() {
    let p = model(&QWEN25_CODER_05B);
    let j = inspect_json(&p);
    assert_eq!(j["architecture"], "qwen2");
    assert_eq!(j["tensor_count"], 291);
    assert_eq!(j["file_type"]["name"], "Q4_K_M");
    assert_eq!(j["tokenizer_model"], "gpt2");
    assert_eq!(j["has_chat_template"], true);
    assert_eq!(j["block_count"], 24);
    assert_eq!(j["head_count"], 14);
    assert_eq!(j["head_count_kv"], 2);
    assert_eq!(j["embedding_length"], 896);
    assert_eq!(j["vocab_size"], 151936);
    let types: Vec<&str> = j["bytes_by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    for t in ["Q4_K", "Q6_K", "F32"] {
        assert!(types.contains(&t), "{types:?}");
    }
    // Qwen2 has Q/K/V biases: the tensor list shows them with their shapes.
    let o = loupe(&["inspect", "--tensors", p.to_str().unwrap()]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("blk.")).count(),
        24 * 12
    );
    assert!(text.contains("blk.0.attn_q.bias"));

    let o = loupe(&["inspect", "--json", "--full", p.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["metadata"]["tokenizer.ggml.tokens"]
            .as_array()
            .unwrap()
            .len(),
        151936
    );
}

#[test]
fn tensor_stats_and_dump_match_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.gguf");
    std::fs::write(&path, common::sample_file()).unwrap();
    let dump = dir.path().join("norm.f32");
    let o = loupe(&[
        "inspect",
        path.to_str().unwrap(),
        "--tensor",
        "norm.weight",
        "--dump",
        dump.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = &common::sample_tensors()[0].data;
    assert_eq!(std::fs::read(&dump).unwrap(), &want[..]);
    let vals: Vec<f64> = want
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let max = vals.iter().cloned().fold(f64::MIN, f64::max);
    assert!((j["stats"]["mean"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean.abs().max(1.0));
    assert_eq!(j["stats"]["max"].as_f64().unwrap(), max);
    assert_eq!(j["stats"]["count"], 64);

    // A tensor of a type loupe cannot decode: a clear error at use.
    let o = loupe(&["inspect", path.to_str().unwrap(), "--tensor", "odd.weight"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("type IQ2_XXS (id 16) is not supported"),
        "{}",
        stderr(&o)
    );
    // An unknown tensor name says how to list them.
    let o = loupe(&["inspect", path.to_str().unwrap(), "--tensor", "nope"]);
    assert!(
        stderr(&o).contains("no tensor named \"nope\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn damaged_files_exit_with_a_message() {
    let good = common::sample_file();
    let (fields, _) = field_map(&good);
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // Truncated at every structural boundary.
    for &(at, width, kind) in &fields {
        cases.push((format!("cut before {kind:?} at {at}"), good[..at].to_vec()));
        cases.push((
            format!("cut inside {kind:?} at {at}"),
            good[..at + width / 2].to_vec(),
        ));
    }
    // Lengths and counts at u64::MAX.
    for &(at, width, kind) in fields.iter().filter(|f| f.1 == 8) {
        let mut b = good.clone();
        patch(&mut b, at, width, u64::MAX);
        cases.push((format!("{kind:?} at {at} = u64::MAX"), b));
    }
    cases.push(("empty file".into(), Vec::new()));
    for (i, (label, bytes)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("case{i}.gguf"));
        std::fs::write(&p, bytes).unwrap();
        let o = loupe(&["inspect", p.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{label}: {err}");
        assert!(
            err.starts_with("error: cannot read model"),
            "{label}: {err}"
        );
        assert!(!err.contains("panicked"), "{label}: {err}");
    }
    let o = loupe(&["inspect", "/nonexistent/model.gguf"]);
    assert!(stderr(&o).contains("/nonexistent/model.gguf") && stderr(&o).contains("No such file"));
}
