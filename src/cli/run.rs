//! `loupe run MODEL -p TEXT`: continue a text, streaming tokens as they come, then a
//! timing line on stderr (or one JSON object with `--json`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::model_args::{read_prompt, ModelArgs};
use super::sampler_args::{resolve, SamplerArgs};
use loupe_engine::generate::{GenerateOptions, Generator, StopReason};
use loupe_engine::model::Context;
use loupe_engine::sample::Sampler;
use loupe_engine::session::Session;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt; `-` reads it from standard input.
    #[arg(short = 'p', long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// Read the prompt from FILE.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Tokens to generate at most; -1 until the context is full.
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        default_value_t = 256,
        allow_hyphen_values = true
    )]
    pub n_predict: i64,
    /// Keep generating past end-of-generation tokens (they are never drawn) until -n
    /// tokens, as llama.cpp's --ignore-eos: a fixed number of tokens to time.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Recognise special tokens spelled in the prompt (`<|im_start|>`, `<bos>`).
    #[arg(long)]
    pub special: bool,
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// Print the effective sampler chain and model facts to stderr first.
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object (text, token ids, timings) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RunArgs, out: &mut impl Write) -> Result<()> {
    if args.n_predict < -1 {
        bail!(
            "-n must be -1 (until the context is full) or at least 0, not {}",
            args.n_predict
        );
    }
    let prompt = read_prompt(args.prompt.as_deref(), args.file.as_deref())?;
    let cfg = resolve(&args.sampling.settings())?;
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let opts = args.model.run_options(model, 1)?;
    let ctx = Context::new(model, opts)?;
    crate::cli::model_args::note_gpu_path(&ctx);
    let mut session = Session::new(ctx);
    let mut sampler = Sampler::new(cfg, model.config.vocab_size)?;
    if args.verbose {
        let kv_mib = opts
            .kv_type
            .bytes_per_token(&model.config)
            .map_or(0.0, |b| {
                (b * opts.n_ctx as u64) as f64 / (1u64 << 20) as f64
            });
        eprintln!(
            "model: {} ({}), ctx {}, {} threads, KV cache {} ({kv_mib:.1} MiB), kernels {}",
            args.model.model.display(),
            model.config.arch.name(),
            opts.n_ctx,
            opts.threads,
            opts.kv_type,
            loupe_quant::kernels().name()
        );
        eprintln!("sampler: {}", sampler.describe());
    }

    let ids = tok.encode(&prompt, true, args.special);
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    if ids.len() >= opts.n_ctx {
        bail!(
            "the prompt is {} tokens, which leaves no room in a context of {} (raise --ctx)",
            ids.len(),
            opts.n_ctx
        );
    }
    // The prompt counts for the repetition penalties, as in llama.cpp's CLI.
    for &id in &ids {
        sampler.accept(id);
    }

    let gen_opts = GenerateOptions {
        max_tokens: usize::try_from(args.n_predict).ok(),
        top: None,
    };
    let mut gen = Generator::start(&mut session, tok, &mut sampler, &ids, gen_opts, None)?;
    if args.ignore_eos {
        gen = gen.ignore_eos();
    }
    let mut text = String::new();
    let done = gen.run(&mut |t| {
        if !args.json {
            out.write_all(t.text.as_bytes())?;
            out.flush()?;
        }
        text.push_str(&t.text);
        Ok(())
    })?;
    text.push_str(&done.tail);
    let stop = match done.stop {
        StopReason::Eog => "end of generation",
        StopReason::Length => "length",
        StopReason::ContextFull => "context full",
        StopReason::Cancelled => "cancelled",
    };
    let (prompt_secs, gen_secs) = (done.prompt.secs, done.secs);
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };

    if args.json {
        let j = json!({
            "text": text,
            "tokens": done.tokens,
            "prompt_tokens": ids.len(),
            "stop": stop,
            "timings": {
                "load_s": loaded.load_time.as_secs_f64(),
                "prompt_s": prompt_secs,
                "prompt_tok_per_s": rate(ids.len(), prompt_secs),
                "generate_s": gen_secs,
                "generate_tok_per_s": rate(done.tokens.len(), gen_secs),
            },
            "sampler": sampler.describe(),
        });
        writeln!(out, "{j}")?;
    } else {
        out.write_all(done.tail.as_bytes())?;
        writeln!(out)?;
        out.flush()?;
        eprintln!(
            "[prompt {} tok, {:.1} tok/s · generated {} tok, {:.1} tok/s · load {:.2} s · stop: {stop}]",
            ids.len(),
            rate(ids.len(), prompt_secs),
            done.tokens.len(),
            rate(done.tokens.len(), gen_secs),
            loaded.load_time.as_secs_f64()
        );
    }
    Ok(())
}
