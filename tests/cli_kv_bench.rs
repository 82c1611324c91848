//! Long contexts as a user measures them, on the real test models: `loupe bench -d` (the
//! cache already holding tokens), the KV cache types on the command line, the KV cache's
//! size in `inspect`, a refused depth too large for memory, and `run --ignore-eos`.

use std::process::Output;

mod common;

use common::{loupe, model};
use loupe::store::{GEMMA3_270M, QWEN25_CODER_05B};

fn ok_stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    ok_stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Bytes of a row of `n` elements in a KV type, from the block formats' sizes
/// (f16: 2 bytes an element; q8_0: 34 bytes per 32; q4_0: 18 bytes per 32).
fn row_bytes(ty: &str, n: u64) -> u64 {
    match ty {
        "f16" => 2 * n,
        "q8_0" => n / 32 * 34,
        "q4_0" => n / 32 * 18,
        _ => unreachable!(),
    }
}

#[test]
fn bench_measures_each_depth_in_one_call() {
    let m = model(&GEMMA3_270M);
    let base = [
        "bench", &m, "-p", "8", "-n", "4", "-d", "0,64", "--reps", "1", "-t", "2",
    ];
    let table = ok_stdout(&loupe(&base));
    for want in ["pp8 ", "tg4 ", "pp8 @ d64", "tg4 @ d64", "KV cache f16"] {
        assert!(table.contains(want), "the table lacks {want:?}:\n{table}");
    }

    // JSON: one line per depth, with the depth, the KV types and the cache's size.
    let mut args = base.to_vec();
    args.extend(["--json", "-ctk", "q8_0", "-ctv", "q4_0"]);
    let lines = json_lines(&loupe(&args));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (j, depth) in lines.iter().zip([0, 64]) {
        assert_eq!(j["n_depth"], depth);
        assert_eq!(j["type_k"], "q8_0");
        assert_eq!(j["type_v"], "q4_0");
        assert_eq!(j["n_ctx"], 64 + 8);
        for test in ["pp8", "tg4"] {
            assert!(j[test]["median"].as_f64().unwrap() > 0.0, "{test} in {j}");
        }
        // gemma3 270m: 18 layers, 1 KV head of 256.
        let per_token = 18 * (row_bytes("q8_0", 256) + row_bytes("q4_0", 256));
        assert_eq!(j["kv_bytes_per_token"], per_token);
        assert_eq!(j["kv_bytes"], per_token * 72);
    }
}

#[test]
fn bench_fills_a_synthetic_depth_when_asked() {
    let m = model(&QWEN25_CODER_05B);
    let base = [
        "bench", &m, "-p", "0", "-n", "2", "-d", "0,300", "--reps", "1", "-t", "2",
    ];
    let mut args = base.to_vec();
    args.push("--synthetic-depth");
    let table = ok_stdout(&loupe(&args));
    for want in ["tg2 ", "tg2 @ d300", "synthetic keys and values"] {
        assert!(table.contains(want), "the table lacks {want:?}:\n{table}");
    }
    args.push("--json");
    let lines = json_lines(&loupe(&args));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (j, depth) in lines.iter().zip([0, 300]) {
        assert_eq!(
            (&j["n_depth"], &j["synthetic_depth"]),
            (&depth.into(), &true.into())
        );
        assert!(j["tg2"]["median"].as_f64().unwrap() > 0.0, "{j}");
    }
    // Without the flag the depth is evaluated, and the JSON says so.
    let mut args = base.to_vec();
    args.push("--json");
    assert_eq!(json_lines(&loupe(&args))[1]["synthetic_depth"], false);
}

#[test]
fn bench_refuses_a_depth_beyond_memory_before_allocating() {
    let m = model(&GEMMA3_270M);
    // A billion tokens of cache (18 TiB): refused by the memory check with the arithmetic.
    // 10^17 tokens: the byte count itself overflows. 2^64 - 1: the context length does.
    for (depth, want) in [
        ("1000000000", "needs a context of 1000000008 tokens"),
        ("100000000000000000", "too large"),
        ("18446744073709551615", "too large"),
    ] {
        let o = loupe(&[
            "bench", &m, "-p", "8", "-n", "0", "-d", depth, "--reps", "1",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "-d {depth}: {err}");
        assert!(err.contains(want), "-d {depth}: {err}");
        assert!(!err.contains("panicked"), "-d {depth}: {err}");
        if depth == "1000000000" && std::path::Path::new("/proc/meminfo").exists() {
            assert!(err.contains("not enough memory"), "{err}");
        }
    }
}

#[test]
fn inspect_shows_kv_bytes_per_token_from_the_head_shapes() {
    for (m, layers, kv_heads, head_dim) in [
        (&GEMMA3_270M, 18u64, 1u64, 256u64),
        (&QWEN25_CODER_05B, 24, 2, 64),
    ] {
        let path = model(m);
        let o = loupe(&["inspect", "--json", &path]);
        let j: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
        // The shapes from the file itself, as a check on the constants above.
        assert_eq!(j["block_count"], layers);
        assert_eq!(j["head_count_kv"], kv_heads);
        let kv = &j["kv_cache"];
        for ty in ["f16", "q8_0", "q4_0"] {
            let want = layers * kv_heads * 2 * row_bytes(ty, head_dim);
            assert_eq!(kv["bytes_per_token"][ty], want, "{path} {ty}");
        }
        let trained = j["context_length"].as_u64().unwrap();
        assert_eq!(kv["trained_ctx"], trained);
        assert_eq!(kv["default_ctx"], trained.min(4096));

        let text = ok_stdout(&loupe(&["inspect", &path]));
        let f16 = layers * kv_heads * 2 * row_bytes("f16", head_dim);
        assert!(text.contains("KV cache"), "{text}");
        assert!(text.contains(&format!("f16  {f16} bytes")), "{text}");
    }
}

#[test]
fn kv_types_are_accepted_as_llama_cpp_spells_them() {
    let m = model(&GEMMA3_270M);
    let o = loupe(&[
        "run",
        &m,
        "-p",
        "Hello",
        "-n",
        "2",
        "--temp",
        "0",
        "-t",
        "2",
        "--verbose",
        "-ctk",
        "q8_0",
        "-ctv",
        "q4_0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("KV cache k q8_0, v q4_0"), "{err}");
    let o = loupe(&[
        "run",
        &m,
        "-p",
        "Hello",
        "-n",
        "2",
        "--cache-type-k",
        "q8_0",
        "--cache-type-v",
        "f16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = loupe(&["run", &m, "-p", "Hello", "-n", "2", "-ctk", "q5_1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("q5_1"));
}

#[test]
fn run_ignore_eos_generates_exactly_n_tokens() {
    let m = model(&QWEN25_CODER_05B);
    // A chat turn the model answers in a few tokens, then ends with <|im_end|>.
    let prompt = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n";
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            &m,
            "--special",
            "-p",
            prompt,
            "-n",
            "24",
            "--temp",
            "0",
            "-t",
            "2",
            "--json",
        ];
        args.extend(extra);
        let o = loupe(&args);
        let j: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
        j
    };
    let stops = run(&[]);
    let stopped = stops["tokens"].as_array().unwrap();
    assert_eq!(stops["stop"], "end of generation", "{stops}");
    assert!(stopped.len() < 24, "{stops}");

    let goes_on = run(&["--ignore-eos"]);
    let tokens = goes_on["tokens"].as_array().unwrap();
    assert_eq!(goes_on["stop"], "length", "{goes_on}");
    assert_eq!(tokens.len(), 24, "{goes_on}");
    // Greedy: the same answer first, then more instead of the end-of-turn token.
    assert_eq!(&tokens[..stopped.len()], &stopped[..]);
}
