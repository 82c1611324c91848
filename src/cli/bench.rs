//! `loupe bench MODEL`: prompt and generation speed like llama-bench (pp and tg tokens/s,
//! median and spread, at one or more cache depths with `-d`), load time, peak memory and
//! the KV cache's size; `--json` prints one line per depth in the shape of the peer's
//! `bench`, so one script can put loupe beside llama.cpp.
//! `loupe bench --bandwidth`: the machine's memory read bandwidth, the ceiling of tg.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use clap::Args;

use crate::bench;
use loupe_engine::model::gpu::Fit;
use loupe_engine::model::{default_threads, Context, Model, RunOptions};
use loupe_engine::tokenizer::Tokenizer;
use loupe_gpu::CallStats;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model: a GGUF file, a store name or a hub reference (not needed with
    /// --bandwidth).
    #[arg(required_unless_present = "bandwidth")]
    pub model: Option<PathBuf>,
    /// Prompt tokens of the pp test, evaluated as one batch (0 skips it).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N",
        default_value_t = 512
    )]
    pub n_prompt: usize,
    /// Tokens generated one at a time in the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", value_name = "N", default_value_t = 128)]
    pub n_gen: usize,
    /// Threads [default: physical cores; at most the logical CPUs].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Tokens already in the KV cache when pp and tg are timed (llama-bench's -d); a comma
    /// list measures each depth in turn. The depth is filled once, untimed.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_name = "N[,N...]",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub n_depth: Vec<usize>,
    /// Fill the depth with seeded random keys and values instead of evaluating a prompt:
    /// the timed tests cost the same, and a deep cache of a big model is ready at once
    /// instead of after minutes (llama-bench has no such option; its -d evaluates).
    #[arg(long)]
    pub synthetic_depth: bool,
    /// Timed repetitions of each test, after one untimed warm-up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub reps: usize,
    #[command(flatten)]
    pub kv: crate::cli::model_args::KvArgs,
    #[command(flatten)]
    pub gpu: crate::cli::model_args::GpuArgs,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure memory read bandwidth instead (a 1 GiB buffer, best of 5 passes).
    #[arg(long, conflicts_with = "model")]
    pub bandwidth: bool,
}

pub fn run(args: &BenchArgs, out: &mut impl Write) -> Result<()> {
    let threads = super::model_args::threads(args.threads)?.unwrap_or_else(default_threads);
    if args.bandwidth {
        return bandwidth(args, threads, out);
    }
    let path =
        &crate::cli::pull::model_path(args.model.as_ref().expect("clap requires the model"))?;
    ensure!(args.reps > 0, "--reps must be at least 1");
    ensure!(
        args.n_prompt > 0 || args.n_gen > 0,
        "nothing to run: -p 0 and -n 0"
    );
    warn_if_busy();

    let t0 = Instant::now();
    // One context for every depth, sized like llama-bench's for the deepest test: the depth
    // plus the longer of the two tests. The depth is filled in batches of at least 512
    // (llama-bench's micro-batch); a pp prompt always goes in one batch.
    let kv_type = args.kv.types()?;
    let max_depth = args.n_depth.iter().copied().max().unwrap_or(0);
    let n_ctx = max_depth
        .checked_add(args.n_prompt.max(args.n_gen))
        .with_context(|| format!("-d {max_depth} is too large"))?
        .max(16);
    let opts = RunOptions {
        n_ctx,
        kv_type,
        threads,
        batch: args.n_prompt.max(max_depth.min(512)).max(1),
    };
    let mut model = Model::load(path)?;
    let fit = Fit {
        n_ctx,
        max_batch: opts.batch,
        kv: kv_type,
    };
    args.gpu.offload(&mut model, fit)?;
    let load_s = t0.elapsed().as_secs_f64();
    let tokenizer = Tokenizer::from_metadata(model.file.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    let bos = tokenizer.add_bos().then(|| tokenizer.bos()).flatten();

    // Context::new checks the memory before it allocates anything.
    let mut ctx = Context::new(&model, opts).with_context(|| {
        format!(
            "bench at depth {max_depth} with -p {} -n {} needs a context of {n_ctx} tokens",
            args.n_prompt, args.n_gen
        )
    })?;
    crate::cli::model_args::note_gpu_path(&ctx);
    let gpu_note = ctx.gpu_note().map(str::to_string);
    // Time the model as it runs once the background repack is done.
    let repacked = model.wait_repacked();
    if let Some(why) = model.repack_failure() {
        eprintln!("loupe: warning: weights not repacked, the row kernels run: {why}");
    }
    let repack_s = t0.elapsed().as_secs_f64() - load_s;
    let kv_per_token = kv_type.bytes_per_token(&model.config).unwrap_or(0);
    let kv_bytes = kv_per_token.saturating_mul(n_ctx as u64);
    let weight_bytes = bench::weight_bytes_per_token(&model);

    let mut rows = Vec::with_capacity(args.n_depth.len());
    for &depth in &args.n_depth {
        let how = if args.synthetic_depth {
            bench::DepthFill::Synthetic
        } else {
            bench::DepthFill::Evaluate
        };
        bench::fill_depth(&mut ctx, depth, bos, how)?;
        // Dispatch times (LOUPE_GPU_PROFILE=1) of each test alone: the pp test's per pass
        // (its warm-up is a whole pass too), the tg test's per token.
        gpu_profile(&model);
        let pp = (args.n_prompt > 0)
            .then(|| bench::pp(&mut ctx, args.n_prompt, depth, args.reps, bos))
            .transpose()?;
        let pp_profile = per_unit(gpu_profile(&model), pp_passes_of(args.reps));
        let gpu_before = gpu_stats(&model);
        let t_tg = Instant::now();
        let tg = (args.n_gen > 0)
            .then(|| bench::tg(&mut ctx, args.n_gen, depth, args.reps, bos))
            .transpose()?;
        let tg_tokens = tg_tokens_of(args.reps, args.n_gen);
        let gpu_tg = tg
            .as_ref()
            .and(gpu_before)
            .zip(gpu_stats(&model))
            .map(|(a, b)| GpuShare::of(b.since(&a), tg_tokens, t_tg.elapsed().as_secs_f64()));
        let profile = per_unit(gpu_profile(&model), tg_tokens);
        rows.push((depth, pp, tg, gpu_tg, (pp_profile, profile)));
    }
    let peak_rss = bench::peak_rss_bytes();
    let (pp_name, tg_name) = (format!("pp{}", args.n_prompt), format!("tg{}", args.n_gen));

    if args.json {
        // One line per depth; the tests keep their plain names ("pp512"), the depth is a field.
        for (depth, pp, tg, gpu_tg, (pp_profile, profile)) in &rows {
            let mut obj = serde_json::Map::new();
            if let Some(s) = pp {
                obj.insert(pp_name.clone(), s.to_json());
            }
            if let Some(s) = tg {
                obj.insert(tg_name.clone(), s.to_json());
            }
            obj.insert("n_depth".into(), (*depth).into());
            obj.insert("synthetic_depth".into(), args.synthetic_depth.into());
            obj.insert("type_k".into(), kv_type.k.name().into());
            obj.insert("type_v".into(), kv_type.v.name().into());
            obj.insert("n_ctx".into(), n_ctx.into());
            obj.insert("kv_bytes_per_token".into(), kv_per_token.into());
            obj.insert("kv_bytes".into(), kv_bytes.into());
            obj.insert("threads".into(), threads.into());
            obj.insert("model".into(), path.display().to_string().into());
            obj.insert("load_s".into(), load_s.into());
            obj.insert("repacked".into(), repacked.into());
            obj.insert("repack_s".into(), repack_s.into());
            obj.insert("repacked_bytes".into(), model.repack_bytes().into());
            obj.insert("peak_rss_bytes".into(), peak_rss.into());
            obj.insert("file_bytes".into(), model.file.file_size().into());
            obj.insert("weight_bytes_per_token".into(), weight_bytes.into());
            let gpu = model.gpu();
            obj.insert("gpu_layers".into(), gpu.map_or(0, |g| g.layers).into());
            obj.insert("gpu_output".into(), gpu.is_some_and(|g| g.output).into());
            // Weights plus this context's whole-layer buffers (KV cache, activations).
            obj.insert(
                "gpu_device_bytes".into(),
                gpu.map_or(0, |g| g.gpu().memory_used()).into(),
            );
            obj.insert(
                "gpu".into(),
                gpu.map(|g| g.gpu().summary().name.clone()).into(),
            );
            if let Some(g) = gpu_tg {
                obj.insert(format!("{tg_name}_gpu_calls"), g.to_json());
            }
            obj.insert("gpu_matmuls_only".into(), gpu_note.clone().into());
            if !profile.is_empty() {
                let per = ("dispatches_per_token", tg_tokens_of(args.reps, args.n_gen));
                let kernels = profile_json(profile, per, ("us_per_token", 1e6));
                obj.insert(format!("{tg_name}_gpu_profile"), kernels);
            }
            if !pp_profile.is_empty() {
                let per = ("dispatches_per_pass", pp_passes_of(args.reps));
                let kernels = profile_json(pp_profile, per, ("ms_per_pass", 1e3));
                obj.insert(format!("{pp_name}_gpu_profile"), kernels);
            }
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
        }
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    writeln!(
        out,
        "{} | {:.2} GiB file | {:.2} GiB weights read per token | {threads} threads | {} reps",
        path.display(),
        gib(model.file.file_size()),
        gib(weight_bytes),
        args.reps
    )?;
    writeln!(
        out,
        "KV cache {kv_type}: {kv_per_token} bytes per token, {:.1} MiB for a context of {n_ctx}",
        kv_bytes as f64 / (1u64 << 20) as f64
    )?;
    if let Some(g) = model.gpu() {
        writeln!(
            out,
            "GPU {}: {} of {} layers{}, {:.1} MiB on the device (weights and this context's buffers)",
            g.gpu().summary().name,
            g.layers,
            model.config.n_layer,
            if g.output { " and the output" } else { "" },
            g.gpu().memory_used() as f64 / (1u64 << 20) as f64
        )?;
    }
    if args.synthetic_depth {
        writeln!(
            out,
            "depths filled with synthetic keys and values (--synthetic-depth), not evaluated"
        )?;
    }
    let width = rows
        .iter()
        .map(|(d, ..)| bench::test_name("pp", args.n_prompt.max(args.n_gen), *d).len())
        .max()
        .unwrap_or(8)
        .max(8);
    writeln!(
        out,
        "{:>width$} {:>10} {:>10} {:>10}",
        "test", "median", "min", "max"
    )?;
    for (depth, pp, tg, _, _) in &rows {
        let tests = [("pp", args.n_prompt, pp), ("tg", args.n_gen, tg)];
        for (kind, n, s) in tests {
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
    for (depth, _, _, gpu_tg, (pp_profile, profile)) in &rows {
        if !pp_profile.is_empty() {
            let busy: f64 = pp_profile.iter().map(|k| k.seconds * 1e3).sum();
            writeln!(
                out,
                "{} on the GPU: {busy:.1} ms of dispatches per pass of {} tokens",
                bench::test_name("pp", args.n_prompt, *depth),
                args.n_prompt
            )?;
            for k in pp_profile {
                writeln!(
                    out,
                    "  {:<22} {:>7.2} ms per pass over {:.0} dispatches",
                    k.kernel,
                    k.seconds * 1e3,
                    k.dispatches as f64 / pp_passes_of(args.reps)
                )?;
            }
        }
        if let Some(g) = gpu_tg {
            writeln!(
                out,
                "{} on the GPU: {:.1} submissions per token, {:.0} µs each (prepare {:.0}, \
                 wait {:.0}, read {:.0}), {:.0}% of the time",
                bench::test_name("tg", args.n_gen, *depth),
                g.calls_per_token,
                g.prepare_us + g.wait_us + g.read_us,
                g.prepare_us,
                g.wait_us,
                g.read_us,
                100.0 * g.share
            )?;
        }
        let tokens = tg_tokens_of(args.reps, args.n_gen);
        for k in profile {
            // A matmul's weights read per second of its own time: against the copy
            // bandwidth, how far its kernel is from the memory's limit.
            let rate = k
                .weight_rate()
                .map_or(String::new(), |r| format!(", weights at {}", gb_per_s(r)));
            writeln!(
                out,
                "  {:<22} {:>7.1} µs per token over {:.0} dispatches{rate}",
                k.kernel,
                k.seconds * 1e6,
                k.dispatches as f64 / tokens
            )?;
        }
        // What the dispatches leave of the device's span is the cost of issuing them one
        // after another (or of waiting for the host to record more): the figure that
        // says whether fewer dispatches or faster kernels come first.
        if let Some(g) = gpu_tg.as_ref().filter(|g| g.span_us > 0.0) {
            let busy: f64 = profile.iter().map(|k| k.seconds * 1e6).sum();
            let span = g.calls_per_token * g.span_us;
            writeln!(
                out,
                "  {:<22} {:>7.1} µs per token of a {:.1} µs span on the device: {:.0}% between dispatches",
                "all dispatches",
                busy,
                span,
                100.0 * (1.0 - busy / span).max(0.0)
            )?;
        }
    }
    writeln!(out, "load {load_s:.3} s")?;
    if repacked {
        writeln!(
            out,
            "weights repacked in the background in {repack_s:.3} s more"
        )?;
    }
    if let Some(b) = peak_rss {
        writeln!(
            out,
            "peak resident memory {:.1} MiB",
            b as f64 / (1 << 20) as f64
        )?;
    }
    Ok(())
}

fn bandwidth(args: &BenchArgs, threads: usize, out: &mut impl Write) -> Result<()> {
    const BYTES: usize = 1 << 30;
    let bw = bench::read_bandwidth(BYTES, 5, threads)?;
    if args.json {
        let v = serde_json::json!({ "read_bytes_per_s": bw, "threads": threads, "buffer_bytes": BYTES });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "memory read bandwidth: {:.2} GB/s ({threads} threads, 1 GiB buffer, best of 5)",
            bw / 1e9
        )?;
    }
    Ok(())
}

/// The GPU matmul calls of a tg test: how many per token, what each cost on average, and
/// their share of the test's wall time (the rest is the CPU's work between them).
struct GpuShare {
    calls_per_token: f64,
    prepare_us: f64,
    wait_us: f64,
    read_us: f64,
    /// From the first timed dispatch's start to the last one's end (0 unless profiled).
    span_us: f64,
    share: f64,
}

impl GpuShare {
    fn of(c: CallStats, tokens: f64, wall_s: f64) -> GpuShare {
        let per_call = |s: f64| 1e6 * s / (c.calls.max(1) as f64);
        GpuShare {
            calls_per_token: c.calls as f64 / tokens,
            prepare_us: per_call(c.prepare_s),
            wait_us: per_call(c.wait_s),
            read_us: per_call(c.read_s),
            span_us: per_call(c.span_s),
            share: c.total_s() / wall_s,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "calls_per_token": self.calls_per_token,
            "prepare_us": self.prepare_us,
            "wait_us": self.wait_us,
            "read_us": self.read_us,
            "span_us": self.span_us,
            "share_of_time": self.share,
        })
    }
}

/// Passes a pp test makes over its prompt: one warm-up, then reps.
fn pp_passes_of(reps: usize) -> f64 {
    (1 + reps) as f64
}

/// Tokens a tg test evaluates: one warm-up, then reps × n_gen.
fn tg_tokens_of(reps: usize, n_gen: usize) -> f64 {
    (1 + reps * n_gen) as f64
}

/// The dispatch times gathered since the last call (empty unless LOUPE_GPU_PROFILE=1).
fn gpu_profile(model: &Model) -> Vec<loupe_gpu::KernelTime> {
    model
        .gpu()
        .map(|g| g.gpu().take_profile())
        .unwrap_or_default()
}

/// A profile as `--json` gives it: each kernel with its dispatches per unit (`per`: the
/// key and the units they are divided by) and its time (already per unit) in the unit
/// `time` names (the key and the factor from seconds).
fn profile_json(
    times: &[loupe_gpu::KernelTime],
    (count_key, units): (&str, f64),
    (time_key, scale): (&str, f64),
) -> serde_json::Value {
    times
        .iter()
        .map(|k| {
            let mut o = serde_json::Map::new();
            o.insert("kernel".into(), k.kernel.clone().into());
            o.insert(count_key.into(), (k.dispatches as f64 / units).into());
            o.insert(time_key.into(), (k.seconds * scale).into());
            if let Some(r) = k.weight_rate() {
                o.insert("weight_gb_per_s".into(), (r / 1e9).into());
            }
            serde_json::Value::Object(o)
        })
        .collect()
}

/// A rate in bytes per second as GB/s with three figures or more (a software driver's
/// are below one).
fn gb_per_s(rate: f64) -> String {
    let gb = rate / 1e9;
    let decimals = if gb >= 100.0 {
        0
    } else if gb >= 1.0 {
        1
    } else {
        3
    };
    format!("{gb:.decimals$} GB/s")
}

/// `times` with seconds and weight bytes per unit (token or pass; dispatch counts stay
/// totals).
fn per_unit(mut times: Vec<loupe_gpu::KernelTime>, units: f64) -> Vec<loupe_gpu::KernelTime> {
    for k in &mut times {
        k.seconds /= units;
        k.weight_bytes /= units;
    }
    times
}

fn gpu_stats(model: &Model) -> Option<CallStats> {
    model.gpu().map(|g| g.gpu().call_stats())
}

/// Numbers from a shared machine mislead; say so when the load average shows it.
fn warn_if_busy() {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(load) = load.filter(|&l| l > 0.5) {
        eprintln!(
            "loupe: warning: load average {load:.2} before the benchmark; other processes \
             share the cores and the numbers will be low and noisy"
        );
    }
}
