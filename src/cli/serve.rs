//! `loupe serve MODEL`: an OpenAI-compatible HTTP server (see `crate::serve`).

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::model_args::ModelArgs;
use super::sampler_args::{resolve, SamplerArgs};
use crate::chat::template::ChatTemplate;
use crate::serve::{serve, ServeOptions};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The model: a GGUF file, a name in the store (`loupe list`), or a hub reference
    /// (pulled if missing) [default: the chat model, Qwen2.5-Coder 0.5B Instruct, fetched
    /// if missing].
    pub model: Option<PathBuf>,
    /// Context length of each slot, tokens [default: the model's, at most 4096].
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Threads for the matmuls and attention [default: physical cores; at most the
    /// logical CPUs].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kv: crate::cli::model_args::KvArgs,
    #[command(flatten)]
    pub gpu: crate::cli::model_args::GpuArgs,
    /// Most prompt tokens evaluated in one batch.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch: usize,
    /// Address to listen on; anything but a loopback address makes the server reachable
    /// from other machines (a warning says so).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (the address is printed on stderr).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Conversations served at once, each with its own KV cache of --ctx tokens
    /// (llama.cpp's -np); requests beyond them wait in a queue.
    #[arg(long, short = 'P', value_name = "N", default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused with 503.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,
    /// Largest request body accepted, bytes; larger ones are refused with 413.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub max_body: usize,
    /// Require `Authorization: Bearer KEY` on every request but /health [default:
    /// $LOUPE_API_KEY, else none].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model's name in /v1/models and the `model` requests give [default: the file
    /// name without .gguf, or the store name or reference given]; requests may also use
    /// any --alias.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Another name requests may use for the model (repeatable).
    #[arg(long, value_name = "NAME")]
    pub alias: Vec<String>,
    /// Chat template: gguf (the model's own), chatml, llama3, llama2 (mistral), gemma,
    /// phi3 [default: the model's own, else one fitting its vocabulary].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Chat template from a file (a Hugging Face Jinja template).
    #[arg(long, value_name = "FILE", conflicts_with = "template")]
    pub template_file: Option<PathBuf>,
    /// Sampling defaults for requests that do not set a field themselves.
    #[command(flatten)]
    pub sampling: SamplerArgs,
}

pub fn run(args: &ServeArgs, _out: &mut impl Write) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if args.max_body < 1024 {
        bail!(
            "--max-body must be at least 1024 bytes, not {}",
            args.max_body
        );
    }
    let defaults = args.sampling.settings();
    // A bad default is refused now, not on the first request.
    resolve(&defaults)?;
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("LOUPE_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let given = match &args.model {
        Some(m) => m.clone(),
        None => super::chat::default_model()?,
    };
    let model_args = ModelArgs {
        model: given.clone(),
        ctx: args.ctx,
        threads: args.threads,
        kv: args.kv.clone(),
        batch: args.batch,
        gpu: args.gpu.clone(),
    };
    // The model lives as long as the process: the slots' threads borrow it.
    let loaded = Box::leak(Box::new(model_args.load()?));
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let run = model_args.run_options(model, 1)?;
    let template = match &args.template_file {
        Some(file) => {
            let source = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the chat template {}", file.display()))?;
            ChatTemplate::from_source(&file.display().to_string(), &source, tok)?
        }
        None => ChatTemplate::for_model(
            model.file.metadata(),
            tok,
            model.config.arch.name(),
            args.template.as_deref(),
        )?,
    };
    // A file is named by its stem; a store name or a hub reference as it was given.
    let id = args.name.clone().unwrap_or_else(|| {
        if given.is_file() {
            given.file_stem().map_or_else(
                || given.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            )
        } else {
            given.display().to_string()
        }
    });
    serve(
        model,
        tok,
        template,
        ServeOptions {
            host: args.host,
            port: args.port,
            parallel: args.parallel,
            max_queue: args.queue,
            max_body: args.max_body,
            api_key,
            id,
            aliases: args.alias.clone(),
            run,
            defaults,
        },
    )
}
