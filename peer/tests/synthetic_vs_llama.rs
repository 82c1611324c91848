//! Architectures without a real test model here (llama with llama-3 RoPE factors and an
//! untied output, qwen3's QK-norm, gemma2's soft-capping and sliding window, and gemma3,
//! qwen2 shapes with other sizes) checked on small random-weight models that loupe's GGUF
//! writer makes, with a real vocabulary: llama.cpp loads the same file, and the
//! next-token distributions of a few prompts must agree within the bounds of the real-model agreement test (forward_vs_llama).
//! (Perplexity is printed but not compared: random weights give the text's tokens
//! probabilities like e^-50, where the perplexity is dominated by far tails.)

mod common;

use loupe::synth::{write_shape, Shape, VocabSource, WeightTypes};
use loupe_engine::model::config::Arch;
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Logits, Model, RunOptions};
use loupe_engine::quality::Agreement;
use loupe_gguf::GgufFile;
use loupe_quant::GgmlType;
use peer::llama::{Llama, Params};

const PROMPTS: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest to find",
    "fn main() {\n    let xs: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", xs);\n}",
    "Sliding windows and soft caps: a long prompt so that the window of sixteen tokens is exceeded several times over, which exercises the local layers' masks",
];

fn check(arch: Arch, vocab_model: &str, weight_type: GgmlType, untied: bool, rope_freqs: bool) {
    let vocab_from = GgufFile::open(common::model_path(vocab_model)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.gguf", arch.name()));
    let shape = Shape {
        name: "synthetic",
        arch,
        dim: 256,
        n_layer: 3,
        n_head: 4,
        n_kv_head: 2,
        head_dim: 64,
        hidden_dim: 512,
        vocab: None,
        n_ctx_train: 2048,
        rope_base: 10000.0,
        norm_eps: 1e-6,
        qkv_bias: false,
        untied_output: untied,
        rope_freqs,
    };
    let seed = 7 + arch as u64;
    write_shape(
        &shape,
        WeightTypes::Pure(weight_type),
        seed,
        VocabSource::Donor(&vocab_from),
        &path,
    )
    .unwrap();
    drop(vocab_from);

    let mut llama = Llama::load(
        &path,
        Params {
            n_ctx: 256,
            n_batch: 256,
            n_threads: 2,
        },
    )
    .unwrap();
    let model = Model::load(&path).unwrap();
    let mut ctx = Context::new(
        &model,
        RunOptions {
            n_ctx: 256,
            kv_type: KvTypes::F16,
            threads: 2,
            batch: 256,
        },
    )
    .unwrap();
    let vocab = model.config.vocab_size;
    let mut agree = Agreement::default();
    for prompt in PROMPTS {
        let toks = llama.tokenize(prompt, true, false).unwrap();
        let base = llama.logits(&toks).unwrap();
        ctx.truncate(0);
        let input: Vec<u32> = toks.iter().map(|&t| t as u32).collect();
        let ours = ctx.eval(&input, Logits::From(0)).unwrap();
        for p in 0..toks.len() - 1 {
            agree.add(
                &base[p],
                &ours[p * vocab..(p + 1) * vocab],
                toks[p + 1] as usize,
            );
        }
    }
    eprintln!(
        "synthetic {} ({weight_type}): {} positions, mean KLD {:.6}, max {:.6}, same top {:.1}%, PPL {:.3} vs {:.3}",
        arch.name(),
        agree.count(),
        agree.mean_kld(),
        agree.kld_quantile(1.0),
        agree.same_top_share() * 100.0,
        agree.nll.ppl(),
        agree.nll_base.ppl()
    );
    assert!(
        agree.mean_kld() <= 0.003,
        "{}: mean KLD {}",
        arch.name(),
        agree.mean_kld()
    );
    assert!(
        agree.same_top_share() >= 0.955,
        "{}: same top {}",
        arch.name(),
        agree.same_top_share()
    );
}

#[test]
fn llama_with_rope_factors_and_untied_output() {
    check(Arch::Llama, common::QWEN, GgmlType::Q8_0, true, true);
}

#[test]
fn qwen3_qk_norm() {
    check(Arch::Qwen3, common::QWEN, GgmlType::Q8_0, false, false);
}

#[test]
fn gemma2_softcaps_and_sliding_window() {
    check(Arch::Gemma2, common::GEMMA, GgmlType::Q8_0, false, false);
}

#[test]
fn qwen2_shape_in_q4_0() {
    check(Arch::Qwen2, common::QWEN, GgmlType::Q4_0, false, false);
}
