//! The peer's `bench` measures what loupe's does: `-d` depths in one call, the KV cache
//! types as llama.cpp spells them, flash attention on, one JSON line per depth.

mod common;

use std::process::Command;

use common::{model_path, GEMMA, QWEN};

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

/// `--gpu-layers` (`-ngl`) offloads where llama.cpp sees a GPU (a peer built with
/// `--features vulkan`) and otherwise fails saying why: built without a GPU backend, or a
/// backend that found none.
#[test]
fn bench_gpu_layers_offload_or_say_why() {
    let o = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(["-t", "1", "bench"])
        .arg(model_path(GEMMA))
        .args(["-p", "8", "-n", "2", "--reps", "1", "--json", "-ngl", "all"])
        .output()
        .expect("run peer");
    let stderr = String::from_utf8_lossy(&o.stderr);
    match peer::llama::no_gpu_reason() {
        Some(why) => {
            assert!(!o.status.success(), "offloaded with no GPU: {stderr}");
            assert!(stderr.contains(why), "{stderr}");
        }
        None => {
            assert!(o.status.success(), "{stderr}");
            let j: serde_json::Value =
                serde_json::from_str(String::from_utf8(o.stdout).unwrap().trim()).unwrap();
            assert_eq!(j["gpu_layers"], -1, "{j}");
            assert!(!j["gpu"].as_str().unwrap().is_empty(), "{j}");
            assert!(j["tg2"]["median"].as_f64().unwrap() > 0.0, "{j}");
        }
    }
}

/// `bench --synthetic-depth` in both engines times attention over the same cache: llama.cpp
/// loaded with the peer's made-up state and loupe filled by `Context::fill_synthetic` give
/// next-token distributions after it as close as after a real prefix of the same length
/// (measured here on the same tokens: mean KLD 0.0047 real, 0.0050 synthetic), and a cache
/// of other numbers does not (0.27; so the comparison sees the cache).
#[test]
fn a_synthetic_depth_is_the_same_cache_in_both_engines() {
    use loupe_engine::model::kv_cache::KvTypes;
    use loupe_engine::model::{Context, Logits, Model, RunOptions};
    use loupe_engine::quality::Agreement;
    use peer::llama::{ContextOptions, Llama, Params};

    const DEPTH: usize = 300;
    const SEED: u64 = 0x5eed_0003;
    let path = model_path(QWEN);
    let params = Params {
        n_ctx: 512,
        n_batch: 64,
        n_threads: 2,
    };
    let opts = ContextOptions {
        flash_attn: Some(true),
        type_k: None,
        type_v: None,
        ..Default::default()
    };
    let mut llama = Llama::load_with(&path, params, opts).unwrap();
    let tokens = llama
        .tokenize(
            " and then the river turned west, past the old mill",
            false,
            false,
        )
        .unwrap();
    let prose = llama
        .tokenize(&common::english_prose(), true, false)
        .unwrap();
    let prefix = &prose[..DEPTH];
    llama.logits(prefix).unwrap();
    let after_prefix = llama.logits_after(&tokens, DEPTH).unwrap();
    llama.fill_synthetic(DEPTH, SEED).unwrap();
    let after_synthetic = llama.logits_after(&tokens, DEPTH).unwrap();

    let model = Model::load(&path).unwrap();
    let vocab = model.config.vocab_size;
    let run = RunOptions {
        n_ctx: 512,
        kv_type: KvTypes::F16,
        threads: 2,
        batch: 64,
    };
    let mut ctx = Context::new(&model, run).unwrap();
    let input: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    let agreement = |base: &[Vec<f32>], ctx: &mut Context| {
        let ours = ctx.eval(&input, Logits::From(0)).unwrap();
        let mut a = Agreement::default();
        for p in 0..tokens.len() - 1 {
            let row = &ours[p * vocab..(p + 1) * vocab];
            a.add(&base[p], row, tokens[p + 1] as usize);
        }
        a.mean_kld()
    };
    let prefix: Vec<u32> = prefix.iter().map(|&t| t as u32).collect();
    ctx.eval(&prefix, Logits::Last).unwrap();
    let real = agreement(&after_prefix, &mut ctx);
    ctx.fill_synthetic(DEPTH, SEED).unwrap();
    let same = agreement(&after_synthetic, &mut ctx);
    ctx.fill_synthetic(DEPTH, SEED + 1).unwrap();
    let other = agreement(&after_synthetic, &mut ctx);
    eprintln!(
        "mean KLD loupe vs llama.cpp over {} tokens after {DEPTH} positions: real prefix \
         {real:.6}, synthetic {same:.6}, synthetic of other numbers {other:.6}",
        tokens.len() - 1
    );
    assert!(same <= 2.0 * real, "synthetic {same} vs real {real}");
    assert!(other > 10.0 * real, "other numbers {other} vs real {real}");

    // A sliding-window model keeps its layers in two caches, a state the peer does not build.
    let gemma = model_path(GEMMA);
    let mut llama = Llama::load_with(&gemma, params, opts).unwrap();
    let err = format!("{:#}", llama.fill_synthetic(DEPTH, SEED).unwrap_err());
    assert!(err.contains("sliding-window"), "{err}");
}
