//! `loupe run`, `next` and `perplexity` as a user drives them, on the real test models.

use std::io::Write;
use std::process::{Command, Output, Stdio};

mod common;

use common::{loupe, model};
use loupe::store::{GEMMA3_270M, QWEN25_CODER_05B};

fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

#[test]
fn run_greedy_is_deterministic_and_reports_timings() {
    let m = model(&QWEN25_CODER_05B);
    let args = [
        "run",
        &m,
        "-p",
        "def add(a, b):",
        "-n",
        "12",
        "--temp",
        "0",
        "-t",
        "2",
        "--json",
    ];
    let a = ok_json(&loupe(&args));
    let b = ok_json(&loupe(&args));
    assert_eq!(a["tokens"], b["tokens"]);
    assert_eq!(a["tokens"].as_array().unwrap().len(), 12);
    assert!(
        a["text"].as_str().unwrap().contains("return"),
        "{}",
        a["text"]
    );
    assert_eq!(a["stop"], "length");
    assert!(a["timings"]["generate_tok_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(a["sampler"], "greedy");

    // Streaming form: the text on stdout, the timing line on stderr.
    let o = loupe(&[
        "run",
        &m,
        "-p",
        "def add(a, b):",
        "-n",
        "12",
        "--temp",
        "0",
        "-t",
        "2",
    ]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        a["text"].as_str().unwrap().trim_end()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tok/s") && err.contains("generated 12 tok"),
        "{err}"
    );
}

#[test]
fn run_reads_the_prompt_from_stdin_and_never_waits_otherwise() {
    let m = model(&QWEN25_CODER_05B);
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args([
            "run", &m, "-p", "-", "-n", "4", "--temp", "0", "-t", "2", "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"The capital of France is")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let j = ok_json(&o);
    assert_eq!(j["prompt_tokens"], 5);

    // -p TEXT with an open, silent stdin: must not read it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["run", &m, "-p", "Hi", "-n", "2", "--temp", "0", "-t", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _keep_open = child.stdin.take();
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "loupe run waited on standard input"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn bad_options_are_refused_loudly() {
    let m = model(&QWEN25_CODER_05B);
    for (args, want) in [
        (vec!["run", &m, "-p", "x", "--top-p", "1.5"], "--top-p"),
        (
            vec!["run", &m, "-p", "x", "--kv-type", "q4"],
            "KV cache type",
        ),
        (vec!["run", &m], "no prompt"),
        (vec!["run", &m, "-p", "x", "-n", "-3"], "-n must be"),
        (vec!["next", &m, "x", "--top", "0"], "--top"),
        (
            vec!["run", "/nonexistent.gguf", "-p", "x"],
            "/nonexistent.gguf",
        ),
    ] {
        let o = loupe(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn next_shows_the_distribution_and_each_sampler_stage() {
    let m = model(&GEMMA3_270M);
    let j = ok_json(&loupe(&[
        "next",
        &m,
        "Eating fruit, remember the",
        "--top",
        "5",
        "-t",
        "2",
        "--json",
    ]));
    let stages = j["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 1, "no sampler options: the model's view only");
    let top = stages[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let ps: Vec<f64> = top.iter().map(|c| c["p"].as_f64().unwrap()).collect();
    assert!(ps.windows(2).all(|w| w[0] >= w[1]) && ps[0] > 0.01 && ps[0] < 1.0);

    let j = ok_json(&loupe(&[
        "next",
        &m,
        "Eating fruit, remember the",
        "--top",
        "5",
        "-t",
        "2",
        "--json",
        "--top-k",
        "3",
        "--temp",
        "0.7",
        "--seed",
        "9",
    ]));
    let names: Vec<&str> = j["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"model"));
    assert!(
        names.contains(&"top-k") && names.contains(&"temp"),
        "{names:?}"
    );
    let after_k = j["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "top-k")
        .unwrap();
    assert_eq!(after_k["kept"], 3);
    let chosen = j["chosen"]["id"].as_u64().unwrap();
    assert!(after_k["top"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"].as_u64() == Some(chosen)));
}

#[test]
fn perplexity_of_english_prose_is_plausible() {
    let m = model(&GEMMA3_270M);
    let o = loupe(&[
        "perplexity",
        &m,
        "/usr/share/common-licenses/GPL-3",
        "--ctx",
        "128",
        "--chunks",
        "2",
        "-t",
        "2",
        "--json",
    ]);
    let j = ok_json(&o);
    let ppl = j["ppl"].as_f64().unwrap();
    assert!(ppl > 1.5 && ppl < 100.0, "ppl {ppl}");
    assert_eq!(j["tokens_scored"], 2 * (128 - 64 - 1));
    assert!(j["ppl_err"].as_f64().unwrap() > 0.0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[2/2]"), "{err}");
}
