//! `loupe next MODEL TEXT`: the next-token game made visible. The model's most likely
//! next tokens with their probabilities; with sampler options, the distribution after
//! each stage of the chain and the token a seeded draw picks.

use std::io::Write;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::model_args::ModelArgs;
use super::sampler_args::{resolve, SamplerArgs};
use super::tokenize::escape_piece;
use loupe_engine::generate::{GenerateOptions, Generator};
use loupe_engine::model::Context;
use loupe_engine::sample::{Sampler, StageView, Trace};
use loupe_engine::session::Session;
use loupe_engine::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct NextArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text so far; `-` reads it from standard input.
    #[arg(allow_hyphen_values = true)]
    pub text: String,
    /// How many candidates to show.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub top: usize,
    /// Recognise special tokens spelled in the text.
    #[arg(long)]
    pub special: bool,
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

const BAR: usize = 30;

pub fn run(args: &NextArgs, out: &mut impl Write) -> Result<()> {
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    let text = super::model_args::read_prompt(Some(&args.text), None)?;
    let settings = args.sampling.settings();
    let cfg = resolve(&settings)?;
    // Stages are shown only when some sampler option was given.
    let staged = settings.any_given();
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let ids = tok.encode(&text, true, args.special);
    if ids.is_empty() {
        bail!("the text is empty after tokenization");
    }
    let opts = args.model.run_options(model, 1)?;
    if ids.len() > opts.n_ctx {
        bail!(
            "the text is {} tokens, more than the context of {} (--ctx {}): raise --ctx to at \
             least {}",
            ids.len(),
            opts.n_ctx,
            opts.n_ctx,
            ids.len()
        );
    }
    let ctx = Context::new(model, opts)?;
    crate::cli::model_args::note_gpu_path(&ctx);
    let mut session = Session::new(ctx);
    let mut sampler = Sampler::new(cfg, model.config.vocab_size)?;
    for &id in &ids {
        sampler.accept(id);
    }
    let gen_opts = GenerateOptions::default();
    let trace =
        Generator::start(&mut session, tok, &mut sampler, &ids, gen_opts, None)?.trace(args.top)?;

    if args.json {
        let j = trace_json(tok, ids.len(), &trace, staged, &sampler.describe());
        writeln!(out, "{j}")?;
        return Ok(());
    }

    writeln!(
        out,
        "after {:?} ({} tokens), the model's next token:",
        text.trim_end(),
        ids.len()
    )?;
    print_view(out, tok, &trace.stages[0], None)?;
    if staged {
        writeln!(out, "\nsampler: {}", sampler.describe())?;
        for (i, v) in trace.stages.iter().enumerate().skip(1) {
            writeln!(out, "\nafter {} — {} candidates left", v.detail, v.kept)?;
            print_view(out, tok, v, Some(&trace.stages[i - 1]))?;
        }
        writeln!(
            out,
            "\nthe draw (seed {}) picks {:?} (id {}, p {:.1}% of what was left)",
            settings.seed(),
            escape_piece(tok.token_piece(trace.chosen, true)),
            trace.chosen,
            trace.chosen_p * 100.0
        )?;
    }
    Ok(())
}

/// The top candidates of one view as rows: rank, probability, bar, piece, id; with the
/// change in probability since the previous view, and what this stage removed.
fn print_view(
    out: &mut impl Write,
    tok: &Tokenizer,
    v: &StageView,
    prev: Option<&StageView>,
) -> Result<()> {
    for (rank, c) in v.top.iter().enumerate() {
        let bar = "█".repeat(((c.p * BAR as f32).round() as usize).min(BAR));
        let change = prev
            .and_then(|p| p.top.iter().find(|pc| pc.id == c.id))
            .map(|pc| format!("  ({:+.1})", (c.p - pc.p) * 100.0))
            .unwrap_or_default();
        writeln!(
            out,
            "{:>3}  {:>6.2}%  {:<BAR$}  {:<20} id {}{change}",
            rank + 1,
            c.p * 100.0,
            bar,
            format!("{:?}", escape_piece(tok.token_piece(c.id, true))),
            c.id,
        )?;
    }
    if !v.dropped.is_empty() {
        let names: Vec<String> = v
            .dropped
            .iter()
            .map(|&id| format!("{:?}", escape_piece(tok.token_piece(id, true))))
            .collect();
        writeln!(out, "     dropped here: {}", names.join(", "))?;
    }
    Ok(())
}

/// `loupe next --json`'s object (also the server's `/v1/next` answer): the distribution
/// after each sampler stage (only the first, the model's own, unless `staged`) and, when
/// staged, the token the draw picks.
pub fn trace_json(
    tok: &Tokenizer,
    prompt_tokens: usize,
    trace: &Trace,
    staged: bool,
    sampler: &str,
) -> serde_json::Value {
    let view = |v: &StageView| {
        json!({
            "stage": v.name,
            "detail": v.detail,
            "kept": v.kept,
            "top": v.top.iter().map(|c| json!({
                "id": c.id,
                "piece": String::from_utf8_lossy(tok.token_piece(c.id, true)),
                "p": c.p,
                "logit": c.logit,
            })).collect::<Vec<_>>(),
            "dropped": v.dropped,
        })
    };
    let shown = if staged { trace.stages.len() } else { 1 };
    let stages: Vec<_> = trace.stages.iter().take(shown).map(view).collect();
    let mut j = json!({ "prompt_tokens": prompt_tokens, "stages": stages });
    if staged {
        j["chosen"] = json!({
            "id": trace.chosen,
            "piece": String::from_utf8_lossy(tok.token_piece(trace.chosen, true)),
            "p": trace.chosen_p,
            "sampler": sampler,
        });
    }
    j
}
