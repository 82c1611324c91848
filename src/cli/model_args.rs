//! Options every command that runs a model takes: the file, context length, threads, KV
//! cache type, batch size; and loading all of it with clear errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;

use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{default_threads, Model, RunOptions};
use loupe_engine::tokenizer::Tokenizer;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model: a GGUF file, a name in the store (`loupe list`), or a hub reference
    /// (owner/repo:QUANT, owner/repo/file.gguf; pulled if not in the store).
    pub model: PathBuf,
    /// Context length in tokens [default: the model's, at most 4096].
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Threads for the matmuls and attention [default: physical cores; at most the
    /// logical CPUs].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kv: KvArgs,
    /// Most prompt tokens evaluated in one batch.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch: usize,
}

/// The KV cache's element types: `--kv-type` for both, llama.cpp's `--cache-type-k` /
/// `--cache-type-v` (`-ctk`/`-ctv`) for one.
#[derive(Args, Debug, Clone)]
pub struct KvArgs {
    /// Element type of the KV cache, keys and values: f16 (llama.cpp's default), f32,
    /// q8_0 or q4_0.
    #[arg(long, value_name = "TYPE", default_value = "f16")]
    pub kv_type: String,
    /// Element type of the keys alone (llama.cpp's -ctk) [default: --kv-type].
    #[arg(long, value_name = "TYPE")]
    pub cache_type_k: Option<String>,
    /// Element type of the values alone (llama.cpp's -ctv) [default: --kv-type].
    #[arg(long, value_name = "TYPE")]
    pub cache_type_v: Option<String>,
}

impl KvArgs {
    pub fn types(&self) -> Result<KvTypes> {
        let both = KvType::parse(&self.kv_type)?;
        let one = |s: &Option<String>| s.as_deref().map_or(Ok(both), KvType::parse);
        Ok(KvTypes {
            k: one(&self.cache_type_k)?,
            v: one(&self.cache_type_v)?,
        })
    }
}

/// llama.cpp's multi-letter short options loupe accepts, and their long names.
pub const LLAMA_SHORT_OPTIONS: [(&str, &str); 2] =
    [("-ctk", "--cache-type-k"), ("-ctv", "--cache-type-v")];

/// A model with its tokenizer, and how long loading took.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        let t0 = Instant::now();
        let path = crate::cli::pull::model_path(&self.model)?;
        let t0 = if path == self.model {
            t0
        } else {
            Instant::now()
        };
        let model = Model::load(&path)?;
        let tokenizer = Tokenizer::from_metadata(model.file.metadata())
            .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
        for w in tokenizer.warnings() {
            eprintln!("warning: {w}");
        }
        Ok(Loaded {
            model,
            tokenizer,
            load_time: t0.elapsed(),
        })
    }

    /// Run options for `model`; `min_batch` raises the batch (perplexity needs a whole
    /// chunk in one).
    pub fn run_options(&self, model: &Model, min_batch: usize) -> Result<RunOptions> {
        let n_ctx = self.ctx.unwrap_or_else(|| model.default_ctx());
        anyhow::ensure!(n_ctx > 0, "--ctx must be at least 1");
        Ok(RunOptions {
            n_ctx,
            kv_type: self.kv.types()?,
            threads: threads(self.threads)?.unwrap_or_else(default_threads),
            batch: self.batch.max(min_batch).max(1),
        })
    }
}

/// `--threads`, checked: at least 1, and at most the logical CPUs this process may run
/// on (more threads only queue for the same cores, and each costs its own attention
/// buffers): a larger count is capped, with a note on stderr. `None` when not given.
pub fn threads(given: Option<usize>) -> Result<Option<usize>> {
    let Some(n) = given else {
        return Ok(None);
    };
    anyhow::ensure!(n > 0, "--threads must be at least 1");
    let cpus = std::thread::available_parallelism().map_or(n, |c| c.get());
    if n > cpus {
        eprintln!("note: --threads {n} is more than the {cpus} logical CPUs; using {cpus}");
        return Ok(Some(cpus));
    }
    Ok(Some(n))
}

/// Read `-p TEXT`, `-p -` (standard input) or `-f FILE`.
pub fn read_prompt(prompt: Option<&str>, file: Option<&std::path::Path>) -> Result<String> {
    use std::io::Read;
    match (prompt, file) {
        (Some("-"), None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the prompt from standard input (is it UTF-8?)")?;
            Ok(s)
        }
        (Some(p), None) => Ok(p.to_string()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the prompt file {}", f.display())),
        (Some(_), Some(_)) => anyhow::bail!("give the prompt with -p or -f, not both"),
        (None, None) => anyhow::bail!("no prompt: give -p TEXT, -p - (standard input) or -f FILE"),
    }
}
