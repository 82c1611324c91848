//! Comparing models against a base, side by side over the same tokens: for each chunk
//! the base is evaluated once, its logits kept (one chunk, never a file), and every other
//! model evaluated on the same chunk and scored against them, as llama.cpp's perplexity
//! tool scores a model against a base-logits file in its KL-divergence mode. Then a
//! short prompt-processing and generation run per model for speed.

pub mod plot;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use loupe_engine::model::summary::ModelSummary;
use loupe_engine::model::{Context, Logits, Model, RunOptions};
use loupe_engine::quality::{percentile, Agreement, Chunking};

/// What a model file is: its size, weights and recipe.
#[derive(Clone, Debug)]
pub struct FileFacts {
    pub path: PathBuf,
    pub label: String,
    pub file_size: u64,
    pub n_params: u64,
    /// Bits of tensor data per weight, over all tensors (as llama.cpp's "BPW").
    pub bits_per_weight: f64,
    /// The recipe in `general.file_type` (Q4_K_M, F16, ...), when the file names one.
    pub file_type: Option<String>,
}

impl FileFacts {
    pub fn of(model: &Model, label: impl Into<String>) -> FileFacts {
        let s = ModelSummary::of(&model.file);
        FileFacts {
            path: model.file.path().to_path_buf(),
            label: label.into(),
            file_size: s.file_size,
            n_params: s.parameter_count,
            bits_per_weight: s.bits_per_weight,
            file_type: s
                .file_type
                .map(|(id, name)| name.map_or_else(|| format!("type {id}"), str::to_string)),
        }
    }

    /// The file name without its directory and `.gguf`.
    pub fn stem(path: &Path) -> String {
        path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        )
    }
}

/// Tokens per second: prompt processing (one batch) and generation (one token at a time).
#[derive(Clone, Copy, Debug)]
pub struct Speed {
    pub pp: f64,
    pub tg: f64,
}

/// Prompt tokens per pp run.
const PP_TOKENS: usize = 64;
/// Each speed measurement runs at least this long (and at most a few repetitions more).
const SPEED_TIME: Duration = Duration::from_millis(1500);

/// Time a short pp run (`PP_TOKENS` tokens in one batch, repeated for at least
/// `SPEED_TIME`, at most 5 times) and a tg run (one token at a time after the first, for
/// `SPEED_TIME` or 64 tokens). The weights are already in memory from the quality pass.
pub fn measure_speed(ctx: &mut Context<'_>, tokens: &[u32]) -> Result<Speed> {
    ensure!(tokens.len() >= 2, "speed needs at least 2 tokens");
    let n_pp = tokens.len().min(PP_TOKENS).min(ctx.n_ctx());
    let (mut t_pp, mut reps) = (Duration::ZERO, 0);
    while reps == 0 || (t_pp < SPEED_TIME && reps < 5) {
        ctx.truncate(0);
        let t0 = Instant::now();
        ctx.eval(&tokens[..n_pp], Logits::Last)?;
        t_pp += t0.elapsed();
        reps += 1;
    }
    let pp = (n_pp * reps) as f64 / t_pp.as_secs_f64();

    let n_tg = tokens.len().min(ctx.n_ctx()).min(65);
    ctx.truncate(0);
    ctx.eval(&tokens[..1], Logits::Last)?;
    let t0 = Instant::now();
    let mut n = 0;
    for i in 1..n_tg {
        ctx.eval(&tokens[i..=i], Logits::Last)?;
        n += 1;
        if t0.elapsed() >= SPEED_TIME {
            break;
        }
    }
    let tg = n as f64 / t0.elapsed().as_secs_f64();
    Ok(Speed { pp, tg })
}

/// One model's agreement with the base, and its speed.
#[derive(Clone, Debug)]
pub struct ModelResult {
    pub facts: FileFacts,
    pub agreement: Agreement,
    pub speed: Option<Speed>,
}

/// The summary figures of a model against the base, as llama.cpp's KL-divergence mode
/// prints them (standard errors after "±"; Δp as a fraction, not a percentage).
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub ppl: f64,
    pub ppl_err: f64,
    pub ppl_base: f64,
    /// PPL(model) / PPL(base) = exp(mean of ln p_base − ln p_model).
    pub ppl_ratio: f64,
    pub kld_mean: f64,
    pub kld_err: f64,
    pub kld_max: f64,
    pub kld_99: f64,
    pub kld_95: f64,
    pub kld_median: f64,
    pub p_diff_mean: f64,
    pub p_diff_rms: f64,
    pub p_diff_rms_err: f64,
    pub same_top: f64,
    pub same_top_err: f64,
    pub positions: usize,
}

impl Figures {
    pub fn of(a: &Agreement) -> Figures {
        let sorted = a.kld_sorted();
        let (rms, rms_err) = a.rms_p_diff();
        let n = a.count();
        let same = a.same_top_share();
        Figures {
            ppl: a.nll.ppl(),
            ppl_err: a.nll.ppl_err(),
            ppl_base: a.nll_base.ppl(),
            ppl_ratio: a.ln_ppl_ratio().exp(),
            kld_mean: a.mean_kld(),
            kld_err: a.kld_err(),
            kld_max: percentile(&sorted, 1.0),
            kld_99: percentile(&sorted, 0.99),
            kld_95: percentile(&sorted, 0.95),
            kld_median: percentile(&sorted, 0.5),
            p_diff_mean: a.mean_p_diff(),
            p_diff_rms: rms,
            p_diff_rms_err: rms_err,
            same_top: same,
            same_top_err: if n > 1 {
                (same * (1.0 - same) / (n - 1) as f64).sqrt()
            } else {
                f64::NAN
            },
            positions: n,
        }
    }
}

/// Where a comparison is, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Evaluations done and in all: (models + 1) per chunk.
    pub done: usize,
    pub total: usize,
    pub chunk: usize,
    pub n_chunks: usize,
    /// The model just evaluated (the base's label for the base).
    pub label: &'a str,
    /// Its running mean KLD (None for the base).
    pub kld: Option<f64>,
    /// Whether this is the speed phase (then `done`/`total` count models).
    pub speed: bool,
}

/// Everything a comparison found.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub base: FileFacts,
    pub base_speed: Option<Speed>,
    pub results: Vec<ModelResult>,
    pub chunking: Chunking,
}

impl Comparison {
    /// The base's own perplexity over the scored positions (the same for every model).
    pub fn base_ppl(&self) -> Option<(f64, f64)> {
        self.results
            .first()
            .map(|r| (r.agreement.nll_base.ppl(), r.agreement.nll_base.ppl_err()))
    }
}

/// Compare `models` (each with its label) against `base` over `tokens` (tokenized with
/// BOS, as llama.cpp's perplexity tool does): chunk by chunk, the base first, its logits
/// held for that chunk only. `run` must have `n_ctx` and `batch` at least the chunk size.
/// With `speed`, each model (the base first) then gets a short pp and tg run.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    base: (&Model, &str),
    models: &[(&Model, String)],
    tokens: &[u32],
    bos: Option<u32>,
    chunking: Chunking,
    run: RunOptions,
    speed: bool,
    on_progress: impl FnMut(&Progress<'_>),
) -> Result<Comparison> {
    let models: Vec<_> = models.iter().map(|(m, l)| (*m, l.clone(), run)).collect();
    compare_runs(
        base,
        &models,
        tokens,
        bos,
        chunking,
        run,
        speed,
        on_progress,
    )
}

/// [`compare`] with options of its own for each model (a quantized KV cache against the
/// base's f16 one: `loupe compare MODEL --kv-types q8_0,q4_0`, or a smaller batch); `run`
/// is the base's, which takes each chunk in one batch.
#[allow(clippy::too_many_arguments)]
pub fn compare_runs(
    base: (&Model, &str),
    models: &[(&Model, String, RunOptions)],
    tokens: &[u32],
    bos: Option<u32>,
    chunking: Chunking,
    run: RunOptions,
    speed: bool,
    mut on_progress: impl FnMut(&Progress<'_>),
) -> Result<Comparison> {
    let (base_model, base_label) = base;
    let vocab = base_model.config.vocab_size;
    for (m, label, _) in models {
        ensure!(
            m.config.vocab_size == vocab,
            "{label} has a vocabulary of {} tokens, the base {vocab}: compare needs models \
             of one vocabulary",
            m.config.vocab_size
        );
    }
    ensure!(
        run.n_ctx >= chunking.n_ctx && run.batch >= chunking.n_ctx,
        "the base's context ({}) and batch ({}) must hold a chunk of {}",
        run.n_ctx,
        run.batch,
        chunking.n_ctx
    );
    for (_, label, run) in models {
        ensure!(
            run.n_ctx >= chunking.n_ctx && run.batch >= 1,
            "{label}: the context ({}) must hold a chunk of {} and the batch ({}) a token",
            run.n_ctx,
            chunking.n_ctx,
            run.batch
        );
    }
    let mut base_ctx = Context::new(base_model, run)?;
    let mut ctxs = models
        .iter()
        .map(|(m, _, run)| Context::new(m, *run))
        .collect::<Result<Vec<_>>>()?;
    let mut results: Vec<ModelResult> = models
        .iter()
        .map(|(m, label, _)| ModelResult {
            facts: FileFacts::of(m, label.clone()),
            agreement: Agreement::default(),
            speed: None,
        })
        .collect();

    let scored = chunking.scored();
    let total = chunking.n_chunks * (models.len() + 1);
    let mut done = 0;
    let mut chunk = Vec::with_capacity(chunking.n_ctx);
    // The base's logits of the scored rows of one chunk: (scored, vocab); a model's, when
    // it takes the chunk in several batches.
    let mut base_logits: Vec<f32> = Vec::with_capacity(scored * vocab);
    let mut pieces: Vec<f32> = Vec::new();
    for c in 0..chunking.n_chunks {
        chunking.chunk_tokens(tokens, c, bos, &mut chunk);
        base_ctx.truncate(0);
        let logits = base_ctx.eval(&chunk, Logits::From(chunking.first))?;
        base_logits.clear();
        base_logits.extend_from_slice(&logits[..scored * vocab]);
        done += 1;
        on_progress(&Progress {
            done,
            total,
            chunk: c,
            n_chunks: chunking.n_chunks,
            label: base_label,
            kld: None,
            speed: false,
        });
        // The tokens each scored row predicts.
        let next = &tokens[c * chunking.n_ctx + chunking.first + 1..][..scored];
        for ((ctx, r), (_, _, run)) in ctxs.iter_mut().zip(&mut results).zip(models) {
            ctx.truncate(0);
            let logits = scored_logits(ctx, &chunk, chunking.first, run.batch, &mut pieces)?;
            for ((b, m), &t) in base_logits
                .chunks_exact(vocab)
                .zip(logits.chunks_exact(vocab))
                .zip(next)
            {
                r.agreement.add(b, m, t as usize);
            }
            done += 1;
            on_progress(&Progress {
                done,
                total,
                chunk: c,
                n_chunks: chunking.n_chunks,
                label: &r.facts.label,
                kld: Some(r.agreement.mean_kld()),
                speed: false,
            });
        }
    }
    drop(base_logits);

    let mut base_speed = None;
    if speed {
        let n = models.len() + 1;
        let mut report = |i: usize, label: &str| {
            on_progress(&Progress {
                done: i,
                total: n,
                chunk: 0,
                n_chunks: chunking.n_chunks,
                label,
                kld: None,
                speed: true,
            })
        };
        report(0, base_label);
        base_speed = Some(measure_speed(&mut base_ctx, tokens)?);
        drop(base_ctx);
        for (i, (ctx, r)) in ctxs.iter_mut().zip(&mut results).enumerate() {
            report(i + 1, &r.facts.label);
            r.speed = Some(measure_speed(ctx, tokens)?);
        }
    }
    Ok(Comparison {
        base: FileFacts::of(base_model, base_label),
        base_speed,
        results,
        chunking,
    })
}

/// The logits of rows `first..` of `chunk`, evaluated into an empty `ctx` at once, or in
/// pieces of `batch` tokens (1: token by token, as generation evaluates them) whose
/// scored rows are gathered in `pieces`.
fn scored_logits<'c>(
    ctx: &'c mut Context<'_>,
    chunk: &[u32],
    first: usize,
    batch: usize,
    pieces: &'c mut Vec<f32>,
) -> Result<&'c [f32]> {
    if batch >= chunk.len() {
        return ctx.eval(chunk, Logits::From(first));
    }
    pieces.clear();
    let batch = batch.max(1);
    for (i, piece) in chunk.chunks(batch).enumerate() {
        let start = i * batch;
        if start + piece.len() <= first {
            ctx.eval(piece, Logits::Last)?;
        } else {
            let from = first.saturating_sub(start);
            pieces.extend_from_slice(ctx.eval(piece, Logits::From(from))?);
        }
    }
    Ok(pieces)
}

/// The ladder's answer: the smallest model (by file size) whose mean KLD stays under
/// `max_kld`, and the fastest at generation among those under it.
pub fn recommend(results: &[ModelResult], max_kld: f64) -> (Option<usize>, Option<usize>) {
    let under: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].agreement.mean_kld() < max_kld)
        .collect();
    let smallest = under
        .iter()
        .copied()
        .min_by_key(|&i| results[i].facts.file_size);
    let fastest = under
        .iter()
        .copied()
        .filter(|&i| results[i].speed.is_some())
        .max_by(|&a, &b| {
            let tg = |i: usize| results[i].speed.map_or(0.0, |s| s.tg);
            tg(a).total_cmp(&tg(b))
        });
    (smallest, fastest)
}
