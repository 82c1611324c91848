//! `peer`: llama.cpp beside loupe — speed, tokens, logits, perplexity, quantization.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use peer::llama::{default_threads, kv_type, ContextOptions, Llama, Params};
use peer::{bench, sys};

#[derive(Parser, Debug)]
#[command(
    name = "peer",
    version,
    about = "llama.cpp (through llama-cpp-sys-2) as loupe's reference"
)]
struct Cli {
    /// Threads for llama.cpp (default: all hardware threads).
    #[arg(short = 't', long, global = true)]
    threads: Option<i32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Prompt-processing and generation speed, like llama-bench.
    Bench {
        model: PathBuf,
        /// Prompt tokens of the pp test (0 skips it).
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Generated tokens of the tg test (0 skips it).
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        /// Tokens already in the KV cache when pp and tg are timed (llama-bench's -d); a
        /// comma list measures each depth in turn. The depth is filled once, untimed.
        #[arg(
            short = 'd',
            long = "n-depth",
            value_name = "N[,N...]",
            value_delimiter = ',',
            default_value = "0"
        )]
        n_depth: Vec<usize>,
        /// Timed repetitions of each test.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// KV cache type of keys and values: f16, f32, q8_0 or q4_0 (as loupe's --kv-type).
        #[arg(long, value_name = "TYPE", default_value = "f16")]
        kv_type: String,
        /// KV cache type of the keys alone (-ctk) [default: --kv-type].
        #[arg(long, value_name = "TYPE")]
        cache_type_k: Option<String>,
        /// KV cache type of the values alone (-ctv) [default: --kv-type].
        #[arg(long, value_name = "TYPE")]
        cache_type_v: Option<String>,
        /// Fill each depth with made-up keys and values (loupe's --synthetic-depth, the
        /// same numbers) instead of evaluating a prompt of that length.
        #[arg(long)]
        synthetic_depth: bool,
        /// Layers on the GPU (llama.cpp's -ngl): N takes the last N layers (above the layer
        /// count, the output too), `all` every layer and the output. Needs a peer built
        /// with `--features vulkan`.
        #[arg(long = "gpu-layers", value_name = "N|all", default_value = "0", value_parser = parse_gpu_layers)]
        gpu_layers: i32,
        /// One line of JSON per depth instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The GPUs llama.cpp sees (none in a peer built without `--features vulkan`).
    Gpu,
    /// Token ids and pieces of a text.
    Tokenize {
        model: PathBuf,
        text: String,
        /// Do not add BOS (and other special tokens the vocabulary adds).
        #[arg(long)]
        no_bos: bool,
        /// Parse special-token text like `<|im_start|>` into control tokens.
        #[arg(long)]
        special: bool,
    },
    /// Argmax continuation of a prompt.
    Greedy {
        model: PathBuf,
        #[arg(short = 'p', long)]
        prompt: String,
        #[arg(short = 'n', long = "n-predict", default_value_t = 32)]
        n: usize,
    },
    /// Perplexity of a text file, as llama-perplexity computes it.
    Ppl {
        model: PathBuf,
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(short = 'c', long, default_value_t = 512)]
        ctx: usize,
        /// Score at most this many chunks.
        #[arg(long)]
        chunks: Option<usize>,
    },
    /// The top-K next tokens after a text (last position).
    Logits {
        model: PathBuf,
        text: String,
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Quantize a GGUF with llama.cpp's quantizer (default parameters, no imatrix).
    Quantize {
        input: PathBuf,
        output: PathBuf,
        /// llama-quantize's type name: Q4_0, Q4_K_M, Q8_0, F16, ...
        #[arg(value_name = "TYPE")]
        ty: String,
        /// Allow quantizing tensors that are already quantized (lossy twice; the test
        /// models are Q4_K_M, so any output from them needs this).
        #[arg(long)]
        allow_requantize: bool,
    },
}

fn main() {
    // llama.cpp's one-dash multi-letter options become their long names for clap.
    let args = std::env::args_os().map(|a| match a.to_str() {
        Some("-ctk") => "--cache-type-k".into(),
        Some("-ctv") => "--cache-type-v".into(),
        Some("-ngl") => "--gpu-layers".into(),
        _ => a,
    });
    let cli = Cli::parse_from(args);
    if let Err(e) = run(cli) {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return; // stdout closed (`peer ... | head`): a clean exit
        }
        eprintln!("peer: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let threads = cli.threads.unwrap_or_else(default_threads);
    ensure!(threads > 0, "--threads must be positive");
    let mut out = io::stdout().lock();
    match cli.cmd {
        Cmd::Bench {
            model,
            n_prompt,
            n_gen,
            n_depth,
            reps,
            kv_type: kv,
            cache_type_k,
            cache_type_v,
            synthetic_depth,
            gpu_layers,
            json,
        } => {
            ensure!(reps > 0, "--reps must be at least 1");
            ensure!(n_prompt > 0 || n_gen > 0, "nothing to run: -p 0 and -n 0");
            let k_name = cache_type_k.unwrap_or_else(|| kv.clone());
            let v_name = cache_type_v.unwrap_or(kv);
            // Flash attention on, whatever llama.cpp would pick: loupe's attention follows
            // that path, and a quantized V cache needs it.
            let opts = ContextOptions {
                flash_attn: Some(true),
                type_k: Some(kv_type(&k_name)?),
                type_v: Some(kv_type(&v_name)?),
                gpu_layers,
            };
            // One context for every depth, as loupe's bench sizes it: the deepest depth
            // plus the longer test; the depth is decoded in batches of at least 512.
            let max_depth = n_depth.iter().copied().max().unwrap_or(0);
            let n_ctx = max_depth
                .checked_add(n_prompt.max(n_gen))
                .context("-d is too large")?
                .max(16);
            let params = Params {
                n_ctx: u32::try_from(n_ctx).context("the context is too large for llama.cpp")?,
                n_batch: u32::try_from(n_prompt.max(max_depth.min(512)).max(1))?,
                n_threads: threads,
            };
            warn_if_busy();
            ensure!(
                model.is_file(),
                "model file {} not found (scripts/fetch-models.sh fetches the test models)",
                model.display()
            );
            let mut llama = Llama::load_with(&model, params, opts)?;
            let mut rows = Vec::with_capacity(n_depth.len());
            for &depth in &n_depth {
                bench::fill_depth(&mut llama, depth, synthetic_depth)?;
                let pp = (n_prompt > 0)
                    .then(|| bench::pp(&mut llama, n_prompt, depth, reps))
                    .transpose()?;
                let tg = (n_gen > 0)
                    .then(|| bench::tg(&mut llama, n_gen, depth, reps))
                    .transpose()?;
                rows.push((depth, pp, tg));
            }
            // The GPU the layers went to, asked once for every row.
            let gpu = (gpu_layers != 0).then(offload_gpu);
            if json {
                for (depth, pp, tg) in &rows {
                    let mut obj = serde_json::Map::new();
                    if let Some(s) = pp {
                        obj.insert(format!("pp{n_prompt}"), s.to_json());
                    }
                    if let Some(s) = tg {
                        obj.insert(format!("tg{n_gen}"), s.to_json());
                    }
                    obj.insert("n_depth".into(), (*depth).into());
                    obj.insert("synthetic_depth".into(), synthetic_depth.into());
                    obj.insert("type_k".into(), k_name.to_ascii_lowercase().into());
                    obj.insert("type_v".into(), v_name.to_ascii_lowercase().into());
                    obj.insert("flash_attn".into(), true.into());
                    obj.insert("n_ctx".into(), llama.n_ctx().into());
                    obj.insert("threads".into(), threads.into());
                    obj.insert("gpu_layers".into(), gpu_layers.into());
                    if let Some(gpu) = &gpu {
                        obj.insert("gpu".into(), gpu.clone().into());
                    }
                    obj.insert("model".into(), model.display().to_string().into());
                    writeln!(out, "{}", serde_json::Value::Object(obj))?;
                }
            } else {
                writeln!(
                    out,
                    "{} | {:.2} GiB | {:.2} B params | {} threads | {} reps | KV k {k_name}, v {v_name}, flash attention",
                    llama.desc(),
                    llama.model_size() as f64 / (1u64 << 30) as f64,
                    llama.n_params() as f64 / 1e9,
                    threads,
                    reps
                )?;
                if let Some(gpu) = &gpu {
                    let layers = if gpu_layers < 0 {
                        "all".to_string()
                    } else {
                        gpu_layers.to_string()
                    };
                    writeln!(out, "GPU layers {layers} on {gpu}")?;
                }
                let width = bench::test_name("pp", n_prompt.max(n_gen), max_depth)
                    .len()
                    .max(8);
                writeln!(
                    out,
                    "{:>width$} {:>10} {:>10} {:>10}",
                    "test", "median", "min", "max"
                )?;
                for (depth, pp, tg) in &rows {
                    for (kind, n, s) in [("pp", n_prompt, pp), ("tg", n_gen, tg)] {
                        if let Some(s) = s {
                            writeln!(
                                out,
                                "{:>width$} {:>10.2} {:>10.2} {:>10.2}  tokens/s",
                                bench::test_name(kind, n, *depth),
                                s.median,
                                s.min,
                                s.max
                            )?;
                        }
                    }
                }
                if synthetic_depth && max_depth > 0 {
                    writeln!(
                        out,
                        "depths filled with synthetic keys and values (--synthetic-depth), not evaluated"
                    )?;
                }
            }
        }
        Cmd::Gpu => {
            if let Some(why) = peer::llama::no_gpu_reason() {
                writeln!(out, "no GPU for llama.cpp: {why}")?;
            }
            for d in peer::llama::gpu_devices() {
                writeln!(out, "{d}")?;
            }
        }
        Cmd::Tokenize {
            model,
            text,
            no_bos,
            special,
        } => {
            let llama = open(&model, small_params(threads))?;
            let ids = llama.tokenize(&text, !no_bos, special)?;
            writeln!(out, "{ids:?}")?;
            for id in ids {
                let piece = llama.token_to_piece(id, true);
                writeln!(out, "{id:>8} {:?}", String::from_utf8_lossy(&piece))?;
            }
        }
        Cmd::Greedy { model, prompt, n } => {
            let n_ctx = 4096u32;
            let llama_params = Params {
                n_ctx,
                n_batch: 512,
                n_threads: threads,
            };
            let mut llama = open(&model, llama_params)?;
            let ids = llama.tokenize(&prompt, true, false)?;
            ensure!(!ids.is_empty(), "the prompt tokenizes to nothing");
            let gen = llama.greedy(&ids, n)?;
            writeln!(out, "prompt: {ids:?}")?;
            writeln!(out, "greedy: {gen:?}")?;
            writeln!(out, "{}{}", prompt, llama.detokenize(&gen, false))?;
        }
        Cmd::Ppl {
            model,
            file,
            ctx,
            chunks,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read text file {}", file.display()))?;
            let params = Params {
                n_ctx: u32::try_from(ctx)?,
                n_batch: u32::try_from(ctx.min(2048))?,
                n_threads: threads,
            };
            let mut llama = open(&model, params)?;
            let tokens = llama.tokenize(&text, true, false)?;
            let r = llama.perplexity(&tokens, ctx, chunks)?;
            let running: Vec<String> = r
                .running
                .iter()
                .enumerate()
                .map(|(i, p)| format!("[{}]{p:.4}", i + 1))
                .collect();
            writeln!(out, "{}", running.join(","))?;
            writeln!(
                out,
                "PPL = {:.4} over {} chunks of {ctx} ({} tokens scored, {} in the file)",
                r.ppl,
                r.running.len(),
                r.n_scored,
                tokens.len()
            )?;
        }
        Cmd::Logits { model, text, top } => {
            let ctx = 4096u32;
            let mut llama = open(
                &model,
                Params {
                    n_ctx: ctx,
                    n_batch: 512,
                    n_threads: threads,
                },
            )?;
            let ids = llama.tokenize(&text, true, false)?;
            ensure!(!ids.is_empty(), "the text tokenizes to nothing");
            let last = &llama.last_logits(&ids)?;
            let mut order: Vec<usize> = (0..last.len()).collect();
            order.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));
            writeln!(out, "{:>8} {:>12} {:>10}  piece", "id", "logit", "logprob")?;
            for &i in order.iter().take(top) {
                let lp = peer::llama::log_softmax(last, i);
                let piece = llama.token_to_piece(i as i32, true);
                writeln!(
                    out,
                    "{i:>8} {:>12.5} {lp:>10.5}  {:?}",
                    last[i],
                    String::from_utf8_lossy(&piece)
                )?;
            }
        }
        Cmd::Quantize {
            input,
            output,
            ty,
            allow_requantize,
        } => quantize(&input, &output, &ty, threads, allow_requantize)?,
    }
    out.flush()?;
    Ok(())
}

/// Speed numbers from a shared machine mislead: ggml's threads spin at every barrier, so
/// one busy core can slow a 2-thread run several times over. Linux only; silent elsewhere.
fn warn_if_busy() {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(load) = load.filter(|&l| l > 0.5) {
        eprintln!(
            "peer: warning: load average {load:.2} before the benchmark; other processes \
             share the cores and the numbers will be low and noisy"
        );
    }
}

/// The GPU that offloaded layers go to: the first llama.cpp lists.
fn offload_gpu() -> String {
    peer::llama::gpu_devices()
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// `--gpu-layers`: a count, or `all` (llama.cpp's negative count).
fn parse_gpu_layers(s: &str) -> Result<i32, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    s.parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{s:?} is not a layer count (a whole number or `all`)"))
}

fn small_params(threads: i32) -> Params {
    Params {
        n_ctx: 512,
        n_batch: 512,
        n_threads: threads,
    }
}

fn open(model: &Path, params: Params) -> Result<Llama> {
    ensure!(
        model.is_file(),
        "model file {} not found (scripts/fetch-models.sh fetches the test models)",
        model.display()
    );
    Llama::load(model, params)
}

/// llama-quantize's names for its file types.
const FTYPES: &[(&str, sys::llama_ftype)] = &[
    ("F32", sys::LLAMA_FTYPE_ALL_F32),
    ("F16", sys::LLAMA_FTYPE_MOSTLY_F16),
    ("BF16", sys::LLAMA_FTYPE_MOSTLY_BF16),
    ("Q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0),
    ("Q4_1", sys::LLAMA_FTYPE_MOSTLY_Q4_1),
    ("Q5_0", sys::LLAMA_FTYPE_MOSTLY_Q5_0),
    ("Q5_1", sys::LLAMA_FTYPE_MOSTLY_Q5_1),
    ("Q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0),
    ("Q2_K", sys::LLAMA_FTYPE_MOSTLY_Q2_K),
    ("Q2_K_S", sys::LLAMA_FTYPE_MOSTLY_Q2_K_S),
    ("Q3_K", sys::LLAMA_FTYPE_MOSTLY_Q3_K_M),
    ("Q3_K_S", sys::LLAMA_FTYPE_MOSTLY_Q3_K_S),
    ("Q3_K_M", sys::LLAMA_FTYPE_MOSTLY_Q3_K_M),
    ("Q3_K_L", sys::LLAMA_FTYPE_MOSTLY_Q3_K_L),
    ("Q4_K", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("Q4_K_S", sys::LLAMA_FTYPE_MOSTLY_Q4_K_S),
    ("Q4_K_M", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("Q5_K", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M),
    ("Q5_K_S", sys::LLAMA_FTYPE_MOSTLY_Q5_K_S),
    ("Q5_K_M", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M),
    ("Q6_K", sys::LLAMA_FTYPE_MOSTLY_Q6_K),
    ("IQ4_NL", sys::LLAMA_FTYPE_MOSTLY_IQ4_NL),
    ("IQ4_XS", sys::LLAMA_FTYPE_MOSTLY_IQ4_XS),
    ("IQ3_XXS", sys::LLAMA_FTYPE_MOSTLY_IQ3_XXS),
    ("IQ3_XS", sys::LLAMA_FTYPE_MOSTLY_IQ3_XS),
    ("IQ3_S", sys::LLAMA_FTYPE_MOSTLY_IQ3_S),
    ("IQ3_M", sys::LLAMA_FTYPE_MOSTLY_IQ3_M),
    ("IQ2_XXS", sys::LLAMA_FTYPE_MOSTLY_IQ2_XXS),
    ("IQ2_XS", sys::LLAMA_FTYPE_MOSTLY_IQ2_XS),
    ("IQ2_S", sys::LLAMA_FTYPE_MOSTLY_IQ2_S),
    ("IQ2_M", sys::LLAMA_FTYPE_MOSTLY_IQ2_M),
    ("IQ1_S", sys::LLAMA_FTYPE_MOSTLY_IQ1_S),
    ("IQ1_M", sys::LLAMA_FTYPE_MOSTLY_IQ1_M),
    ("TQ1_0", sys::LLAMA_FTYPE_MOSTLY_TQ1_0),
    ("TQ2_0", sys::LLAMA_FTYPE_MOSTLY_TQ2_0),
    ("MXFP4_MOE", sys::LLAMA_FTYPE_MOSTLY_MXFP4_MOE),
];

fn quantize(
    input: &Path,
    output: &Path,
    ty: &str,
    threads: i32,
    allow_requantize: bool,
) -> Result<()> {
    let Some(&(name, ftype)) = FTYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(ty)) else {
        let names: Vec<&str> = FTYPES.iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown quantization type {ty:?}; one of: {}",
            names.join(", ")
        );
    };
    ensure!(input.is_file(), "input model {} not found", input.display());
    ensure!(input != output, "input and output are the same file");
    peer::init();
    let c_in = std::ffi::CString::new(input.to_str().context("input path is not UTF-8")?)?;
    let c_out = std::ffi::CString::new(output.to_str().context("output path is not UTF-8")?)?;
    // SAFETY: returns a plain struct of defaults.
    let mut qp = unsafe { sys::llama_model_quantize_default_params() };
    qp.ftype = ftype;
    qp.nthread = threads;
    qp.allow_requantize = allow_requantize;
    // SAFETY: both paths are valid NUL-terminated strings and qp a fully initialized
    // params struct that outlives the call; llama.cpp catches its own exceptions and
    // returns non-zero on failure.
    let rc = unsafe { sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &qp) };
    if rc != 0 {
        bail!(
            "llama.cpp failed to quantize {} to {name} (code {rc}; an already quantized \
             input needs --allow-requantize, IQ1/IQ2 types need an importance matrix; \
             set PEER_VERBOSE=1 for its log)",
            input.display()
        );
    }
    eprintln!("wrote {} ({name})", output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
