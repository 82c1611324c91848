//! What a quantized KV cache costs, loupe beside llama.cpp: for each cache type, PPL and
//! mean KLD of the model run with that cache against the same model with the f16 cache,
//! each engine against its own f16 run, scored as `llama-perplexity --kl-divergence`
//! does (llama.cpp with flash attention, which a quantized V cache needs; loupe through
//! `loupe compare MODEL --kv-types`' engine).
//!
//! By default (CI): the gemma test model, 4 chunks of 512 of the licence prose. The note's
//! figures: `LOUPE_KV_CTX=4096 LOUPE_KV_CHUNKS=2 LOUPE_KV_MODELS=both`.
//!
//! Bounds: both engines order the types the same way (q8_0 closer to f16 than q4_0), and
//! loupe's mean KLD for each type is within 15% of llama.cpp's or within two of its
//! standard errors. The two quantize the cache to the same bytes (the same quantizers,
//! the same Hadamard rotation of the heads first) but round everything around it
//! differently, and a quantized cache's KLD is a small number that such rounding moves by
//! more than the 1% the weight-quantization comparison holds to. Measured at 4 × 512
//! (loupe / llama.cpp): gemma q8_0 0.00696 / 0.00704, q4_0 0.121 / 0.130; qwen q8_0
//! 0.0202 / 0.0203, q4_0 2.846 / 2.840. Before loupe rotated the heads as llama.cpp does,
//! gemma's q4_0 stood 22% above llama.cpp's (43% at ctx 4096), which the old bound of 30%
//! or three standard errors let through.

mod common;

use common::kld::{score, store, KlSums, StoredRow};
use loupe::compare::{compare_runs, Figures};
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{Model, RunOptions};
use loupe_engine::quality::Chunking;
use loupe_engine::tokenizer::Tokenizer;
use peer::llama::{kv_type, ContextOptions, Llama, Params};

const THREADS: usize = 2;
const TYPES: [KvType; 2] = [KvType::Q8_0, KvType::Q4_0];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn quantized_kv_caches_cost_what_they_cost_in_llama_cpp() {
    let ctx = env_usize("LOUPE_KV_CTX", 512);
    let chunks = env_usize("LOUPE_KV_CHUNKS", 4);
    let models: &[&str] = match std::env::var("LOUPE_KV_MODELS").as_deref() {
        Ok("both") => &common::MODELS,
        Ok("qwen") => &[common::QWEN],
        _ => &[common::GEMMA],
    };
    let text = common::english_prose();
    let mut failures = Vec::new();
    for file in models {
        let path = common::model_path(file);
        let model = Model::load(&path).unwrap();
        let tok = Tokenizer::from_metadata(model.file.metadata()).unwrap();
        let tokens = tok.encode(&text, true, false);
        let chunking = Chunking::new(tokens.len(), ctx, Some(chunks)).unwrap();
        let bos = if tok.add_bos() { tok.bos() } else { None };

        // loupe: the f16 cache as the base, each type scored against it.
        let run = RunOptions {
            n_ctx: ctx,
            kv_type: KvTypes::F16,
            threads: THREADS,
            batch: ctx,
        };
        let runs: Vec<(&Model, String, RunOptions)> = TYPES
            .iter()
            .map(|&t| {
                let kv_type = KvTypes::same(t);
                (&model, t.to_string(), RunOptions { kv_type, ..run })
            })
            .collect();
        let ours = compare_runs(
            (&model, "f16"),
            &runs,
            &tokens,
            bos,
            chunking,
            run,
            false,
            |_| {},
        )
        .unwrap();

        // llama.cpp: the same tokens and chunks, the same cache types.
        let params = Params {
            n_ctx: ctx as u32,
            n_batch: ctx as u32,
            n_threads: THREADS as i32,
        };
        let load = |t: &str| {
            let ty = kv_type(t).unwrap();
            let opts = ContextOptions {
                flash_attn: Some(true),
                type_k: Some(ty),
                type_v: Some(ty),
                ..Default::default()
            };
            Llama::load_with(&path, params, opts).unwrap()
        };
        let mut base = load("f16");
        let mut others: Vec<Llama> = TYPES.iter().map(|t| load(t.name())).collect();
        let mut sums: Vec<KlSums> = TYPES.iter().map(|_| KlSums::default()).collect();
        let mut chunk = Vec::new();
        for c in 0..chunking.n_chunks {
            chunking.chunk_tokens(&tokens, c, bos, &mut chunk);
            let chunk_i: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
            base.clear();
            let stored: Vec<StoredRow> = base.logits(&chunk_i).unwrap()[chunking.first..ctx - 1]
                .iter()
                .map(|row| store(row))
                .collect();
            for (llama, s) in others.iter_mut().zip(&mut sums) {
                llama.clear();
                let logits = llama.logits(&chunk_i).unwrap();
                for (i, b) in stored.iter().enumerate() {
                    let p = chunking.first + i;
                    score(b, &logits[p], tokens[c * ctx + p + 1] as usize, s);
                }
            }
        }

        let mut ours_kld = Vec::new();
        let mut theirs_kld = Vec::new();
        for ((r, s), t) in ours.results.iter().zip(&sums).zip(TYPES) {
            let f = Figures::of(&r.agreement);
            let n = s.count as f64;
            let (ppl, ppl_base, kld) = (
                (s.sum_nll / n).exp(),
                (s.sum_nll_base / n).exp(),
                s.sum_kld / n,
            );
            eprintln!(
                "{file} {t} cache vs f16, {} chunks of {ctx} ({} positions):\n\
                 \x20 loupe     PPL {:.4} (f16 {:.4}, ratio {:.4}), mean KLD {:.6} ± {:.6}, same top {:.4}\n\
                 \x20 llama.cpp PPL {ppl:.4} (f16 {ppl_base:.4}, ratio {:.4}), mean KLD {kld:.6}, same top {:.4}",
                chunking.n_chunks,
                f.positions,
                f.ppl,
                f.ppl_base,
                f.ppl / f.ppl_base,
                f.kld_mean,
                f.kld_err,
                f.same_top,
                ppl / ppl_base,
                s.n_same_top as f64 / n,
            );
            if (f.kld_mean / kld - 1.0).abs() > 0.15 && (f.kld_mean - kld).abs() > 2.0 * f.kld_err {
                failures.push(format!(
                    "{file} {t}: mean KLD loupe {:.6} ± {:.6}, llama.cpp {kld:.6}",
                    f.kld_mean, f.kld_err
                ));
            }
            ours_kld.push(f.kld_mean);
            theirs_kld.push(kld);
        }
        assert!(
            ours_kld[0] < ours_kld[1] && theirs_kld[0] < theirs_kld[1],
            "{file}: q8_0 should be closer to f16 than q4_0: loupe {ours_kld:?}, llama.cpp {theirs_kld:?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
