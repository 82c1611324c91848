//! loupe's forward pass against llama.cpp's on the real test models: the same token ids
//! in (llama.cpp's tokenizer, so this tests the forward pass alone), then
//! - next-token distributions over English prose at ctx 512, scored as llama.cpp's
//!   perplexity tool scores them: perplexity, mean KL divergence and top-1 agreement;
//! - greedy 64-token continuations of 10 prompts, diverging only at near ties or where
//!   llama.cpp's own plain attention path parts from its flash path at the same step.
//!
//! The bound: loupe must be at least as close to llama.cpp (its default, flash attention)
//! as llama.cpp's own plain attention path is, measured here on the same tokens. Two
//! correct roundings of a quantized model drift apart by an amount that depends on the
//! text, so the reference is measured, not a constant; that drift as measured over the
//! whole text (KLD 0.003 gemma3 / 0.0006 qwen2) is printed beside it and serves as a floor.

mod common;

use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Logits, Model, RunOptions};
use loupe_engine::quality::{argmax, Agreement, Chunking};
use peer::llama::{Llama, Params};

const THREADS: usize = 2;
const CTX: usize = 512;

/// Chunks of 512 tokens to score: 6 by default (≈1500 positions, a few minutes on two
/// cores); LOUPE_AGREEMENT_CHUNKS overrides, 0 = all that the ~110 KB text holds.
fn max_chunks() -> Option<usize> {
    match std::env::var("LOUPE_AGREEMENT_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(6),
    }
}

fn run_options(n_ctx: usize) -> RunOptions {
    RunOptions {
        n_ctx,
        kv_type: KvTypes::F16,
        threads: THREADS,
        batch: n_ctx,
    }
}

/// llama.cpp's own flash-vs-plain attention drift measured over the whole text: a floor
/// for the bounds, since a few chunks can happen to drift less.
struct FlashDrift {
    mean_kld: f64,
    same_top: f64,
}

fn agreement(file: &str, drift: FlashDrift) {
    let path = common::model_path(file);
    let mut llama = Llama::load(
        &path,
        Params {
            n_ctx: CTX as u32,
            n_batch: CTX as u32,
            n_threads: THREADS as i32,
        },
    )
    .unwrap();
    // llama.cpp's other attention path, to measure how far two roundings drift.
    let mut plain = Llama::load_with_attention(
        &path,
        Params {
            n_ctx: CTX as u32,
            n_batch: CTX as u32,
            n_threads: THREADS as i32,
        },
        Some(false),
    )
    .unwrap();
    let model = Model::load(&path).unwrap();
    let mut ctx = Context::new(&model, run_options(CTX)).unwrap();

    let text = common::english_prose();
    let tokens: Vec<i32> = llama.tokenize(&text, true, false).unwrap();
    let chunking = Chunking::new(tokens.len(), CTX, max_chunks()).unwrap();
    let bos = llama.add_bos().then(|| llama.bos() as u32);
    let tokens_u: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    let vocab = model.config.vocab_size;

    let mut agree = Agreement::default();
    let mut reference = Agreement::default();
    let mut chunk = Vec::new();
    let t0 = std::time::Instant::now();
    let (mut t_llama, mut t_loupe) = (0f64, 0f64);
    for c in 0..chunking.n_chunks {
        chunking.chunk_tokens(&tokens_u, c, bos, &mut chunk);
        let as_i32: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
        let t = std::time::Instant::now();
        let base = llama.logits(&as_i32).unwrap();
        t_llama += t.elapsed().as_secs_f64();
        let other = plain.logits(&as_i32).unwrap();
        ctx.truncate(0);
        let t = std::time::Instant::now();
        let ours = ctx.eval(&chunk, Logits::From(chunking.first)).unwrap();
        t_loupe += t.elapsed().as_secs_f64();
        for i in 0..chunking.scored() {
            let p = chunking.first + i;
            let next = tokens_u[c * CTX + p + 1] as usize;
            agree.add(&base[p], &ours[i * vocab..(i + 1) * vocab], next);
            reference.add(&base[p], &other[p], next);
        }
    }
    let (ppl_base, ppl) = (agree.nll_base.ppl(), agree.nll.ppl());
    let rel = (ppl / ppl_base - 1.0).abs();
    eprintln!(
        "{file}: {} tokens, {} chunks of {CTX}, {} positions scored ({:.0} s: llama.cpp {:.0} s, loupe {:.0} s)\n\
         \x20 PPL llama.cpp {ppl_base:.4} ± {:.4}, loupe {ppl:.4} ± {:.4} (rel. diff {:.4}%)\n\
         \x20 mean KLD {:.6} nats (median {:.6}, p99 {:.6}, max {:.6}); same top {:.2}%",
        tokens.len(),
        chunking.n_chunks,
        agree.count(),
        t0.elapsed().as_secs_f64(),
        t_llama,
        t_loupe,
        agree.nll_base.ppl_err(),
        agree.nll.ppl_err(),
        rel * 100.0,
        agree.mean_kld(),
        agree.kld_quantile(0.5),
        agree.kld_quantile(0.99),
        agree.kld_quantile(1.0),
        agree.same_top_share() * 100.0,
    );
    eprintln!(
        "  llama.cpp plain vs flash attention: PPL {:.4}, mean KLD {:.6}, same top {:.2}%",
        reference.nll.ppl(),
        reference.mean_kld(),
        reference.same_top_share() * 100.0
    );
    let ref_rel = (reference.nll.ppl() / ppl_base - 1.0).abs();
    eprintln!(
        "  that drift over the whole text: mean KLD {:.4}, same top {:.1}%",
        drift.mean_kld,
        drift.same_top * 100.0
    );
    // At least as close as llama.cpp's own other path, with the sampling noise of
    // ~1500 positions allowed for (a quarter on KLD, one point on same-top).
    assert!(
        rel <= 0.005f64.max(1.5 * ref_rel),
        "{file}: perplexity differs by {:.3}% (llama.cpp's paths: {:.3}%)",
        rel * 100.0,
        ref_rel * 100.0
    );
    assert!(
        agree.mean_kld() <= 1.25 * reference.mean_kld().max(drift.mean_kld),
        "{file}: mean KLD {:.6} vs llama.cpp's paths {:.6}",
        agree.mean_kld(),
        reference.mean_kld()
    );
    assert!(
        agree.same_top_share() >= reference.same_top_share().min(drift.same_top) - 0.01,
        "{file}: same top {:.2}% vs llama.cpp's paths {:.2}%",
        agree.same_top_share() * 100.0,
        reference.same_top_share() * 100.0
    );
}

#[test]
fn qwen2_distributions_agree_with_llama_cpp() {
    agreement(
        common::QWEN,
        FlashDrift {
            mean_kld: 0.0006,
            same_top: 0.983,
        },
    );
}

#[test]
fn gemma3_distributions_agree_with_llama_cpp() {
    agreement(
        common::GEMMA,
        FlashDrift {
            mean_kld: 0.003,
            same_top: 0.955,
        },
    );
}

const PROMPTS: [&str; 10] = [
    "The capital of France is",
    "Eating fruit, remember the",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a village by the sea, there lived",
    "The three laws of thermodynamics are",
    "Q: What is the boiling point of water at sea level?\nA:",
    "Here is a list of the planets of the solar system in order:\n1.",
    "In 1969, the Apollo 11 mission",
    "SELECT name, email FROM users WHERE",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
];

/// A logit gap below this between llama.cpp's two best tokens is a near tie (the two are
/// within a factor e^0.5 ≈ 1.65 in probability): after tens of steps, the rounding
/// differences of two correct implementations can swap them. llama.cpp's own two
/// attention paths part at gaps up to about 1 on these prompts.
const NEAR_TIE: f32 = 0.5;

/// Where two greedy continuations part, and llama.cpp's top-two logit gap there.
fn first_divergence(
    llama: &mut Llama,
    prompt: &[i32],
    want: &[i32],
    got: &[i32],
) -> Option<(usize, f32)> {
    let step = match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(s) => s,
        None if got.len() == want.len() => return None,
        None => got.len().min(want.len()),
    };
    let mut prefix = prompt.to_vec();
    prefix.extend_from_slice(&want[..step]);
    let mut logits = llama.last_logits(&prefix).unwrap();
    logits.sort_by(|a, b| b.total_cmp(a));
    Some((step, logits[0] - logits[1]))
}

fn greedy(file: &str) {
    let path = common::model_path(file);
    let params = Params {
        n_ctx: 256,
        n_batch: 256,
        n_threads: THREADS as i32,
    };
    let mut llama = Llama::load(&path, params).unwrap();
    let mut plain = Llama::load_with_attention(&path, params, Some(false)).unwrap();
    let model = Model::load(&path).unwrap();
    let mut ctx = Context::new(&model, run_options(256)).unwrap();
    let (mut ours_diverge, mut plain_diverge) = (Vec::new(), 0);
    let mut forced_misses = Vec::new();
    for prompt in PROMPTS {
        let toks = llama.tokenize(prompt, true, false).unwrap();
        let want = llama.greedy(&toks, 64).unwrap();
        let other = plain.greedy(&toks, 64).unwrap();
        // loupe's greedy continuation, stopping where llama.cpp's stops.
        ctx.truncate(0);
        let input: Vec<u32> = toks.iter().map(|&t| t as u32).collect();
        let mut got: Vec<i32> = Vec::new();
        let mut next = argmax(ctx.eval(&input, Logits::Last).unwrap()) as i32;
        while got.len() < 64 && !llama.is_eog(next) {
            got.push(next);
            if got.len() == 64 {
                break;
            }
            next = argmax(ctx.eval(&[next as u32], Logits::Last).unwrap()) as i32;
        }
        let plain_div = first_divergence(&mut llama, &toks, &want, &other);
        let plain_step = plain_div.map(|d| d.0);
        if let Some((step, gap)) = plain_div {
            plain_diverge += 1;
            eprintln!("{file}: {prompt:?}: llama.cpp plain attention parts from flash at step {step} (gap {gap:.4})");
        }
        // Teacher-forced: loupe fed llama.cpp's own continuation one token at a time (the
        // generation path), its choice compared with llama.cpp's at every step where
        // llama.cpp's two best tokens are not a near tie. No compounding: a step that
        // disagrees here is a disagreement of the two engines on the same input.
        let mut forced = toks.clone();
        forced.extend_from_slice(&want);
        let theirs = llama.logits(&forced).unwrap();
        ctx.truncate(0);
        let mut mine = argmax(ctx.eval(&input, Logits::Last).unwrap());
        for (k, &w) in want.iter().enumerate() {
            let row = &theirs[toks.len() - 1 + k];
            let mut sorted = row.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let gap = sorted[0] - sorted[1];
            if gap >= NEAR_TIE && mine != argmax(row) {
                forced_misses.push(format!(
                    "{prompt:?} step {k}: llama.cpp {} (gap {gap:.3}), loupe {mine}",
                    argmax(row)
                ));
            }
            mine = argmax(ctx.eval(&[w as u32], Logits::Last).unwrap());
        }
        if let Some((step, gap)) = first_divergence(&mut llama, &toks, &want, &got) {
            eprintln!(
                "{file}: {prompt:?}: loupe parts from llama.cpp at step {step}: llama.cpp {:?}, loupe {:?}; llama.cpp's top-two logit gap there {gap:.4}",
                want.get(step),
                got.get(step)
            );
            ours_diverge.push((prompt, step, gap, plain_step));
        }
    }
    eprintln!(
        "{file}: loupe identical to llama.cpp on {}/{} prompts; llama.cpp's plain attention on {}/{}",
        PROMPTS.len() - ours_diverge.len(),
        PROMPTS.len(),
        PROMPTS.len() - plain_diverge,
        PROMPTS.len()
    );
    for (prompt, step, gap, plain_step) in &ours_diverge {
        // Past a near tie only where llama.cpp's own plain path has already parted from
        // its flash path on the same prompt (at this step or before): there llama.cpp
        // itself shows the continuation turning on rounding.
        let shown_by_llama = plain_step.is_some_and(|p| p <= *step);
        assert!(
            *gap < NEAR_TIE || shown_by_llama,
            "{file}: {prompt:?} diverges at step {step}, where llama.cpp's margin is {gap:.4} (not a near tie, and llama.cpp's plain path {})",
            match plain_step {
                Some(p) => format!("parts only at step {p}"),
                None => "does not part".to_string(),
            }
        );
    }
    // How many free-running continuations part is not bounded: once one step differs
    // the two engines continue different texts, and gemma3 amplifies rounding (on
    // "The capital of France is …", both loupe's attention before this commit and the
    // present one, bit-identical to llama.cpp's at layers 0 and 1, leave layer 2's
    // output 1.5 apart from llama.cpp's, out of 1280, from its feed-forward matmul, and
    // ~200 apart at layer 17: `CAPTURE_LAST=1 cargo run --release --example capture`).
    // On gemma the count went from 5 to 9 of 10 with attention made closer to
    // llama.cpp's, every parting at a near tie. What is bounded instead: every parting at
    // a near tie (above), and no disagreement at all on llama.cpp's own continuation
    // away from near ties.
    assert!(
        forced_misses.is_empty(),
        "{file}: loupe picks another token than llama.cpp on llama.cpp's own continuation, away from a near tie:\n{}",
        forced_misses.join("\n")
    );
}

#[test]
fn qwen2_greedy_continuations_match() {
    greedy(common::QWEN);
}

#[test]
fn gemma3_greedy_continuations_match() {
    greedy(common::GEMMA);
}
