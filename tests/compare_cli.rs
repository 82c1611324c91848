//! `loupe compare` as a user drives it, on the gemma3 270M test model made F16: a ladder
//! of two types (JSON, chart, recommendation), then two of its files as BASE MODEL... (the
//! terminal table). Short chunks keep it fast; the figures' agreement with llama.cpp is
//! checked in peer/tests/compare_vs_llama.rs.

mod common;

use std::path::Path;
use std::process::Output;

use common::loupe;
use loupe::store::GEMMA3_270M;

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "loupe failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

/// The test model made F16 in `dir` (as a user would: `loupe quantize MODEL OUT F16
/// --allow-requantize`).
fn f16_gemma(dir: &Path) -> String {
    let src = GEMMA3_270M.path();
    assert!(
        src.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set LOUPE_MODELS)",
        src.display()
    );
    let out = dir.join("gemma-F16.gguf");
    let out_s = out.display().to_string();
    ok(&loupe(&[
        "quantize",
        &src.display().to_string(),
        &out_s,
        "F16",
        "--allow-requantize",
    ]));
    out_s
}

/// Tags open and close in order (no XML parser among the dependencies: a small check of
/// well-formedness for the SVG we write ourselves).
fn assert_well_formed(svg: &str) {
    assert!(svg.starts_with("<?xml"), "no XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        assert!(
            tag.matches('"').count().is_multiple_of(2),
            "unbalanced quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or_default();
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert!(!rest.contains('&') || rest.trim().is_empty());
}

#[test]
fn ladder_json_chart_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let base = f16_gemma(dir.path());
    let models = dir.path().join("ladder");
    let svg_path = dir.path().join("chart.svg");
    let o = loupe(&[
        "compare",
        "--ladder",
        &base,
        "--types",
        "Q8_0,Q2_K",
        "--out-dir",
        &models.display().to_string(),
        "--ctx",
        "128",
        "--chunks",
        "2",
        "-t",
        "2",
        "--json",
        "--plot",
        &svg_path.display().to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).expect("one JSON object");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("chunk 2/2"), "no progress line: {stderr}");

    assert_eq!(v["ctx"], 128);
    assert_eq!(v["chunks"], 2);
    assert_eq!(v["positions"], 2 * (128 - 64 - 1));
    assert_eq!(v["base"]["label"], "F16");
    assert!(v["base"]["ppl"].as_f64().unwrap() > 1.0);
    let ms = v["models"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    let (q8, q2) = (&ms[0], &ms[1]);
    assert_eq!(
        (q8["label"].as_str(), q2["label"].as_str()),
        (Some("Q8_0"), Some("Q2_K"))
    );
    for m in ms {
        for k in [
            "file_size",
            "bits_per_weight",
            "ppl",
            "ppl_ratio",
            "kld_mean",
            "kld_err",
            "kld_99",
            "kld_95",
            "kld_median",
            "p_diff_mean",
            "p_diff_rms",
            "same_top",
            "pp_tps",
            "tg_tps",
        ] {
            assert!(m[k].as_f64().is_some_and(f64::is_finite), "{k} in {m}");
        }
        assert!(m["kld_median"].as_f64() <= m["kld_95"].as_f64());
        assert!(m["kld_95"].as_f64() <= m["kld_99"].as_f64());
        assert!(m["pp_tps"].as_f64().unwrap() > 0.0 && m["tg_tps"].as_f64().unwrap() > 0.0);
    }
    // The ordering a person expects: Q8_0 is closer to F16 than Q2_K, and smaller files.
    let f = |m: &serde_json::Value, k: &str| m[k].as_f64().unwrap();
    assert!(f(q8, "kld_mean") < f(q2, "kld_mean"), "{q8}\n{q2}");
    assert!(f(q8, "same_top") > f(q2, "same_top"));
    assert!(f(q8, "p_diff_rms") < f(q2, "p_diff_rms"));
    assert!((f(q8, "ppl_ratio") - 1.0).abs() < (f(q2, "ppl_ratio") - 1.0).abs());
    assert!(
        f(q8, "kld_mean") < 0.05,
        "Q8_0 of F16 should be near-lossless: {q8}"
    );
    assert!(f(q2, "file_size") < f(q8, "file_size"));
    assert!(f(q8, "bits_per_weight") < f(&v["base"], "bits_per_weight"));
    let rec = &v["recommendation"];
    assert_eq!(rec["max_kld"], 0.05);
    assert!(rec["smallest"].is_string(), "{rec}");
    assert!(rec["line"].as_str().unwrap().starts_with("recommendation:"));

    let svg = std::fs::read_to_string(&svg_path).expect("the chart was written");
    assert_well_formed(&svg);
    assert_eq!(svg.matches("<circle").count(), 2, "one point per model");
    assert!(svg.contains(">Q8_0<") && svg.contains(">Q2_K<"));
    assert!(svg.contains("bits per weight") && svg.contains("KL divergence"));

    // The ladder's files as BASE MODEL..., the terminal table: Q8_0 as the base keeps
    // this run quick (the F16 base runs on loupe's scalar F16 kernel).
    let q8_path = models.join("gemma-F16-Q8_0.gguf");
    let q2_path = models.join("gemma-F16-Q2_K.gguf");
    assert!(
        q8_path.is_file() && q2_path.is_file(),
        "--out-dir keeps the ladder"
    );
    let table = ok(&loupe(&[
        "compare",
        &q8_path.display().to_string(),
        &q2_path.display().to_string(),
        "--ctx",
        "128",
        "--chunks",
        "2",
        "-t",
        "2",
        "--no-speed",
    ]));
    for h in [
        "MiB",
        "bpw",
        "PPL",
        "PPL/base",
        "mean KLD ± err",
        "KLD p99",
        "KLD p95",
        "KLD med",
        "Δp mean",
        "Δp RMS",
        "same top",
        "pp t/s",
        "tg t/s",
    ] {
        assert!(table.contains(h), "no column {h}:\n{table}");
    }
    let row = |label: &str| {
        table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}:\n{table}"))
            .to_string()
    };
    assert!(row("gemma-F16-Q8_0 ").contains("(base)"));
    let q2_row = row("gemma-F16-Q2_K");
    assert!(q2_row.contains('%') && q2_row.contains(" ± "), "{q2_row}");
}

#[test]
fn needs_a_base_and_a_model() {
    let o = loupe(&["compare", "only-one.gguf"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("BASE MODEL"));
}

/// `--batch N` evaluates the scored models' chunks in pieces (1: token by token, the path
/// generation takes) while the base takes each chunk whole: the same model then scores
/// as far from itself as the CPU's batch and one-token paths lie apart, and the header
/// and JSON say how it was evaluated.
#[test]
fn scored_models_take_the_chunks_in_smaller_batches() {
    let dir = tempfile::tempdir().unwrap();
    let small = common::synth(dir.path(), "small", "Q4_K_M");
    let common = ["--ctx", "64", "--chunks", "1", "--no-speed"];
    let json = |batch: &str| -> serde_json::Value {
        let mut args = vec!["compare", &small, &small, "--json", "--batch", batch];
        args.extend_from_slice(&common);
        serde_json::from_str(&ok(&loupe(&args))).unwrap()
    };
    // A whole chunk, as the base takes it: the same logits.
    let whole = json("64");
    assert_eq!(whole["models"][0]["kld_mean"], 0.0, "{whole}");
    // In pieces of 5 (the scored rows start inside one) and one by one: every scored
    // row, each close to the base's (a row out of place would be far: another
    // position's distribution).
    let kld = |v: &serde_json::Value| v["models"][0]["kld_mean"].as_f64().unwrap();
    for batch in ["5", "1"] {
        let v = json(batch);
        assert_eq!(v["batch"], batch.parse::<u32>().unwrap(), "{v}");
        assert_eq!(v["models"][0]["positions"], 31, "{v}");
        assert!(kld(&v) < 0.002, "{v}");
    }
    let mut args = vec!["compare", &small, &small, "--batch", "1"];
    args.extend_from_slice(&common);
    let table = ok(&loupe(&args));
    assert!(table.contains("the models' token by token"), "{table}");
    let o = loupe(&["compare", &small, &small, "--batch", "0"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--batch 0 evaluates nothing"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
