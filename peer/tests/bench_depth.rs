//! The peer's `bench` measures what loupe's does: `-d` depths in one call, the KV cache
//! types as llama.cpp spells them, flash attention on, one JSON line per depth.

mod common;

use std::process::Command;

use common::{model_path, GEMMA};

#[test]
fn bench_measures_each_depth_with_the_kv_types_asked_for() {
    let path = model_path(GEMMA);
    // One thread: ggml's workers spin at every barrier, and the cores may be shared.
    let o = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(["-t", "1", "bench"])
        .arg(&path)
        .args(["-p", "8", "-n", "4", "-d", "0,64", "--reps", "1", "--json"])
        .args(["-ctk", "q8_0", "-ctv", "q8_0"])
        .output()
        .expect("run peer");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (j, depth) in lines.iter().zip([0, 64]) {
        assert_eq!(j["n_depth"], depth, "{j}");
        assert_eq!(j["type_k"], "q8_0");
        assert_eq!(j["type_v"], "q8_0");
        assert_eq!(j["flash_attn"], true);
        assert!(j["n_ctx"].as_u64().unwrap() >= 64 + 8);
        for test in ["pp8", "tg4"] {
            assert!(j[test]["median"].as_f64().unwrap() > 0.0, "{test} in {j}");
        }
    }

    let o = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(["-t", "1", "bench"])
        .arg(&path)
        .args(["-p", "8", "-n", "0", "--kv-type", "q5_1"])
        .output()
        .expect("run peer");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("q5_1"));
}
