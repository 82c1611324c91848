//! `loupe perplexity MODEL FILE`: perplexity as llama.cpp's perplexity tool computes it
//! (non-overlapping chunks of --ctx tokens, BOS first in each when the model adds one,
//! the second half of each chunk scored), with progress and the final value ± its
//! standard error.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::json;

use super::format::ProgressLine;
use super::model_args::ModelArgs;
use loupe_engine::model::Context;
use loupe_engine::quality::{perplexity, Chunking};

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The text to score (UTF-8).
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub ctx: usize,
    /// Score at most N chunks.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    /// Threads [default: physical cores; at most the logical CPUs].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kv: crate::cli::model_args::KvArgs,
    #[command(flatten)]
    pub gpu: crate::cli::model_args::GpuArgs,
    /// Print one JSON object at the end.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &PerplexityArgs, out: &mut impl Write) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| {
        format!(
            "cannot read {} (a UTF-8 text is needed)",
            args.file.display()
        )
    })?;
    let margs = ModelArgs {
        model: args.model.clone(),
        ctx: Some(args.ctx),
        threads: args.threads,
        kv: args.kv.clone(),
        batch: args.ctx,
        gpu: args.gpu.clone(),
    };
    let loaded = margs.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let tokens = tok.encode(&text, true, false);
    let chunking = Chunking::new(tokens.len(), args.ctx, args.chunks).with_context(|| {
        format!(
            "{} tokenizes to {} tokens",
            args.file.display(),
            tokens.len()
        )
    })?;
    let opts = margs.run_options(model, args.ctx)?;
    let mut ctx = Context::new(model, opts)?;
    crate::cli::model_args::note_gpu_path(&ctx);
    let bos = if tok.add_bos() { tok.bos() } else { None };

    let t0 = Instant::now();
    let mut progress = ProgressLine::new();
    let stats = perplexity(&mut ctx, &tokens, chunking, bos, |c, s| {
        let done = c + 1;
        let eta = t0.elapsed().as_secs_f64() / done as f64 * (chunking.n_chunks - done) as f64;
        let line = format!(
            "[{done}/{}] ppl {:.4} · {:.0} s left",
            chunking.n_chunks,
            s.ppl(),
            eta
        );
        progress.show(&line);
    })?;
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    // NaN logits make a NaN perplexity: printed as it is, then an error that says why.
    let not_finite = (stats.non_finite > 0).then(|| {
        anyhow::anyhow!(
            "the perplexity is {}: the model's logits were not finite (NaN or infinite) for \
             {} of the {} scored tokens; its weights hold NaN or infinite values{}",
            stats.ppl(),
            stats.non_finite,
            stats.count,
            model
                .non_finite_vector()
                .map(|t| format!(" (tensor {t:?} does)"))
                .unwrap_or_default()
        )
    });
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "ppl": stats.ppl(),
                "ppl_err": stats.ppl_err(),
                "chunks": chunking.n_chunks,
                "ctx": args.ctx,
                "tokens_scored": stats.count,
                "text_tokens": tokens.len(),
                "seconds": secs,
            })
        )?;
    } else {
        writeln!(
            out,
            "PPL = {:.4} +/- {:.5}  ({} chunks of {}, {} tokens scored, {:.1} s)",
            stats.ppl(),
            stats.ppl_err(),
            chunking.n_chunks,
            args.ctx,
            stats.count,
            secs
        )?;
    }
    not_finite.map_or(Ok(()), Err)
}
