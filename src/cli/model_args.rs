//! Options every command that runs a model takes: the file, context length, threads, KV
//! cache type, batch size; and loading all of it with clear errors.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use clap::Args;

use loupe_engine::model::gpu::{Fit, GpuLayers};
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{default_threads, Context, Model, RunOptions};
use loupe_engine::tokenizer::Tokenizer;
use loupe_gpu::{Gpu, GpuChoice};

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
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// Where the layers run: `--gpu-layers` (llama.cpp's `-ngl`) and `--gpu`.
#[derive(Args, Debug, Clone)]
pub struct GpuArgs {
    /// Layers on the GPU, llama.cpp's -ngl rule: the last N, and the output projection too
    /// when N exceeds the layer count; `all`; or `auto`: on a hardware adapter as many as
    /// its memory holds (all, then the output, if they fit), none without one. 0 keeps
    /// everything on the CPU.
    #[arg(
        long = "gpu-layers",
        visible_alias = "n-gpu-layers",
        value_name = "N",
        default_value = "auto"
    )]
    pub gpu_layers: GpuLayers,
    /// The adapter: auto (the first hardware GPU; a software one is never picked),
    /// software (any adapter, Mesa's lavapipe included), an index from `loupe gpu`, or
    /// off.
    #[arg(long, value_name = "WHICH", env = "LOUPE_GPU", default_value = "auto")]
    pub gpu: GpuChoice,
}

impl GpuArgs {
    /// Upload the layers these options put on a GPU, with a progress line on stderr and
    /// a summary line after; nothing when they put none there or no adapter matches.
    /// `auto` leaves room for the whole-layer buffers of one context of `fit`'s size.
    pub fn offload(&self, model: &mut Model, fit: Fit) -> Result<()> {
        self.offload_as(model, fit, false)
    }

    /// [`GpuArgs::offload`]; with `required`, an error wherever no layer goes to a GPU
    /// (0 layers, `--gpu off`, no adapter, one that fails, none that holds a layer)
    /// instead of the CPU alone.
    pub fn offload_as(&self, model: &mut Model, fit: Fit, required: bool) -> Result<()> {
        let n_layer = model.config.n_layer;
        let n_gpu = match self.gpu_layers {
            GpuLayers::Count(0) => {
                ensure!(
                    !required,
                    "0 layers put none on the GPU: give more, all or auto"
                );
                return Ok(());
            }
            GpuLayers::Count(n) => n,
            GpuLayers::Auto => n_layer + 1,
        };
        if self.gpu == GpuChoice::Off {
            ensure!(!required, "--gpu off (or LOUPE_GPU=off) turns the GPU off");
            return Ok(());
        }
        let t0 = Instant::now();
        // Nobody asked for the GPU: one that fails to open or to take the weights is a
        // warning and the command runs on the CPU. An explicit request stays an error.
        let asked = required || self.gpu_layers != GpuLayers::Auto || self.gpu != GpuChoice::Auto;
        let tolerate = |e: anyhow::Error| -> Result<()> {
            if asked {
                return Err(e);
            }
            eprintln!("warning: {e:#}: running on the CPU (--gpu off silences this)");
            Ok(())
        };
        let gpu = match Gpu::open(self.gpu) {
            Ok(gpu) => gpu,
            Err(e) => return tolerate(e.into()),
        };
        let Some(gpu) = gpu else {
            ensure!(
                !required,
                "no GPU adapter matches --gpu {} (`loupe gpu` lists them; a software one \
                 needs --gpu software)",
                self.gpu
            );
            if asked {
                eprintln!(
                    "note: no GPU adapter matches --gpu {} (`loupe gpu` lists them): \
                     running on the CPU",
                    self.gpu
                );
            }
            return Ok(());
        };
        let name = format!("{} ({})", gpu.summary().name, gpu.summary().backend);
        let tty = std::io::stderr().is_terminal();
        let mut shown = 0;
        let fit = (self.gpu_layers == GpuLayers::Auto).then_some(fit);
        let uploaded = model.offload(gpu, n_gpu, fit, &mut |done, total| {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            if tty && pct != shown {
                shown = pct;
                eprint!("\ruploading weights to {name}: {pct}%");
            }
        });
        if tty {
            eprint!("\r\x1b[K");
        }
        if let Err(e) = uploaded {
            return tolerate(e);
        }
        let Some(g) = model.gpu() else {
            ensure!(!required, "not one layer fits on {name}");
            eprintln!("gpu: not one layer fits on {name}: running on the CPU");
            return Ok(());
        };
        eprintln!(
            "gpu: {}/{n_layer} layers{} on {name}, {:.0} MiB uploaded in {:.1} s",
            g.layers,
            if g.output { " and the output" } else { "" },
            g.device_bytes() as f64 / (1 << 20) as f64,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
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
pub const LLAMA_SHORT_OPTIONS: [(&str, &str); 3] = [
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-ngl", "--gpu-layers"),
];

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
        let mut model = Model::load(&path)?;
        let fit = Fit {
            n_ctx: self.ctx.unwrap_or_else(|| model.default_ctx()),
            max_batch: self.batch.max(1),
            kv: self.kv.types()?,
        };
        self.gpu.offload(&mut model, fit)?;
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

/// Says on stderr when a context's offloaded layers run matmul by matmul (attention on
/// the CPU) rather than whole on the device, and why.
pub fn note_gpu_path(ctx: &Context<'_>) {
    if let Some(why) = ctx.gpu_note() {
        eprintln!("gpu: offloaded layers run matmul by matmul, attention on the CPU: {why}");
    }
}
