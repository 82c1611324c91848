//! Print what a model computes for one prompt, bit for bit: the kernel table in use, the
//! prompt's tokens, a hash of the raw bits of the last position's logits and a few of
//! them, then `n` greedy tokens with a hash of each step's logits. Two builds that print
//! the same lines computed the same floats; `scripts/test-aarch64.sh` compares an aarch64
//! build under emulation with the x86 build this way.
//!
//! cargo run --example logit_bits -p loupe-engine -- MODEL [PROMPT] [N]

use anyhow::{bail, Context as _, Result};
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Logits, Model, RunOptions};
use loupe_engine::tokenizer::Tokenizer;

/// FNV-1a over the little-endian bits of every logit: equal hashes, equal floats (a
/// digest, not a security measure).
fn bits_hash(logits: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in logits {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The highest logit's index, the lowest index on a tie.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        bail!("usage: logit_bits MODEL [PROMPT] [N]");
    };
    let prompt = args
        .get(1)
        .map_or("The capital of France is", String::as_str);
    let n: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .with_context(|| format!("N {s:?} is not a count"))?,
        None => 8,
    };
    let model = Model::load_without_repacking(path)?;
    let tok = Tokenizer::from_metadata(model.file.metadata())?;
    let tokens = tok.encode(prompt, tok.add_bos(), false);
    // Two threads on every machine: a thread count can change how attention splits its
    // work, and with it the order of some float additions.
    let opts = RunOptions {
        n_ctx: tokens.len() + n + 1,
        kv_type: KvTypes::F16,
        threads: 2,
        batch: 64,
    };
    let mut ctx = Context::new(&model, opts)?;
    println!("kernels {}", loupe_quant::kernels().name());
    println!("prompt {tokens:?}");
    let logits = ctx.eval(&tokens, Logits::Last)?;
    let head: Vec<String> = logits[..4].iter().map(|v| format!("{v:e}")).collect();
    println!(
        "prompt logits {:016x} [{}]",
        bits_hash(logits),
        head.join(", ")
    );
    let mut next = argmax(logits);
    for step in 0..n {
        let logits = ctx.eval(&[next], Logits::Last)?;
        println!("step {step} token {next} logits {:016x}", bits_hash(logits));
        next = argmax(logits);
    }
    Ok(())
}
