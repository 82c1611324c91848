//! `loupe compare BASE MODEL...` and `loupe compare --ladder SOURCE`: which quantization
//! to run. Every model is scored against the base over the same tokens (PPL, KL
//! divergence, Δp, same top token, as llama.cpp's perplexity tool in KL-divergence mode),
//! timed, and shown in one table; `--plot` draws quality against size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};

use super::format::ProgressLine;
use crate::compare::plot::{self, Point};
use crate::compare::{self as cmp, Comparison, Figures, FileFacts, Progress, Speed};
use crate::quantize::{quantize_model, FileType, QuantizeOptions};
use loupe_engine::model::gpu::{Fit, GpuLayers};
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{default_threads, Model, RunOptions};
use loupe_engine::quality::Chunking;
use loupe_engine::tokenizer::Tokenizer;
use loupe_gguf::atomic::{write_atomically, Kind, Overwrite, TempFolder};
use loupe_gguf::GgufFile;
use loupe_gpu::GpuChoice;

const DEFAULT_CTX: usize = 512;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// BASE MODEL...: the reference (F16, or the least quantized you have), then the
    /// models to score against it (files, store names or hub references). Not with
    /// --ladder.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Quantize SOURCE (F16/BF16/F32) to each of --types and compare them all against it.
    #[arg(long, value_name = "SOURCE")]
    pub ladder: Option<PathBuf>,
    /// The recipes of the ladder.
    #[arg(
        long,
        value_name = "T,T,...",
        value_delimiter = ',',
        default_value = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K",
        value_parser = parse_ftype
    )]
    pub types: Vec<FileType>,
    /// Score MODEL's KV cache at these types against its --kv-type cache (f16): the cost
    /// of a quantized cache, as llama.cpp's perplexity tool measures it with -ctk/-ctv.
    #[arg(long, value_name = "T,T,...", value_delimiter = ',')]
    pub kv_types: Vec<String>,
    /// Score MODEL with N layers on the GPU against MODEL on the CPU, for each N
    /// (`--gpu-layers`' values: a count, all, auto): what offloading costs, and a check
    /// of a GPU's kernels on a real model. The other models run on the CPU.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub offload: Vec<GpuLayers>,
    /// The adapter of --offload: auto (the first hardware GPU), software (any adapter,
    /// Mesa's lavapipe included) or an index from `loupe gpu`.
    #[arg(long, value_name = "WHICH", env = "LOUPE_GPU", default_value = "auto")]
    pub gpu: GpuChoice,
    /// Most tokens the scored models evaluate in one batch [default: a whole chunk]; 1
    /// scores them token by token, the path generation takes. The base always takes a
    /// whole chunk.
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Keep the ladder's models in DIR [default: a temporary folder, removed afterwards].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// The ladder recommends the smallest type whose mean KLD stays under this (nats).
    #[arg(long, value_name = "NATS", default_value_t = 0.05)]
    pub max_kld: f64,
    /// The text to score (UTF-8) [default: a built-in English text of ~1,500 tokens].
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Tokens per chunk [default: 512, lowered to fit two chunks when the text is short].
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Score at most N chunks.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    /// Threads [default: physical cores; at most the logical CPUs].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kv: crate::cli::model_args::KvArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw mean KLD against bits per weight into FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Skip the pp/tg speed runs (a few seconds per model).
    #[arg(long)]
    pub no_speed: bool,
    /// With --ladder: accept an already-quantized source (quantized twice: worse).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Replace the --plot file, and the ladder's models in --out-dir, even when they are
    /// files of another kind (a device, a folder or an open model never is).
    #[arg(long)]
    pub force: bool,
}

fn parse_ftype(s: &str) -> Result<FileType, String> {
    s.parse()
}

/// A loaded model and its label.
struct Loaded {
    model: Model,
    tokenizer: Tokenizer,
    label: String,
}

fn load(path: &Path, label: String) -> Result<Loaded> {
    let model = Model::load(path)?;
    let tokenizer = Tokenizer::from_metadata(model.file.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    Ok(Loaded {
        model,
        tokenizer,
        label,
    })
}

pub fn run(args: &CompareArgs, out: &mut impl Write) -> Result<()> {
    let threads = super::model_args::threads(args.threads)?;
    // Store names and hub references become files (pulled if missing) before any work.
    let files: Vec<PathBuf> = args
        .files
        .iter()
        .map(|f| crate::cli::pull::model_path(f))
        .collect::<Result<_>>()?;
    // The ladder's models: quantized first, into a folder that lives until the end.
    let mut _tmp_dir = None;
    let (base_path, base_label, models): (PathBuf, String, Vec<(PathBuf, String)>) =
        match &args.ladder {
            Some(source) => {
                let source = &crate::cli::pull::model_path(source)?;
                ensure!(
                    args.files.is_empty(),
                    "--ladder SOURCE takes no other model files (got {})",
                    args.files.len()
                );
                ensure!(!args.types.is_empty(), "--types names no recipe");
                ensure!(
                    args.offload.is_empty(),
                    "--offload compares one MODEL on the GPU and the CPU, not a --ladder"
                );
                let dir = match &args.out_dir {
                    Some(d) => {
                        std::fs::create_dir_all(d)
                            .with_context(|| format!("cannot create {}", d.display()))?;
                        d.clone()
                    }
                    None => {
                        let t = TempFolder::new("ladder")
                            .context("cannot create a temporary folder")?;
                        let p = t.path().to_path_buf();
                        _tmp_dir = Some(t);
                        p
                    }
                };
                let models = quantize_ladder(args, threads, source, &dir)?;
                let src = GgufFile::open(source)
                    .with_context(|| format!("cannot read model {}", source.display()))?;
                let label = loupe_engine::model::summary::ModelSummary::of(&src)
                    .file_type
                    .and_then(|(_, n)| n)
                    .map_or_else(|| FileFacts::stem(source), str::to_string);
                (source.clone(), label, models)
            }
            None if !args.kv_types.is_empty() || !args.offload.is_empty() => {
                let what = if args.kv_types.is_empty() {
                    "--offload compares one model on the GPU and the CPU"
                } else {
                    "--kv-types compares one model's caches"
                };
                ensure!(
                    args.files.len() == 1,
                    "{what}: give only MODEL (got {} files)",
                    args.files.len()
                );
                let p = &files[0];
                (p.clone(), FileFacts::stem(p), Vec::new())
            }
            None => {
                if args.files.len() < 2 {
                    bail!(
                        "give the base model and at least one model to compare with it \
                         (loupe compare BASE MODEL...), or --ladder SOURCE"
                    );
                }
                let models = files[1..]
                    .iter()
                    .map(|p| (p.clone(), FileFacts::stem(p)))
                    .collect();
                (files[0].clone(), FileFacts::stem(&files[0]), models)
            }
        };

    let base = load(&base_path, base_label)?;
    let others = models
        .iter()
        .map(|(p, l)| load(p, l.clone()))
        .collect::<Result<Vec<_>>>()?;

    let (text, text_name) = match &args.text {
        Some(f) => (
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {} (a UTF-8 text is needed)", f.display()))?,
            f.display().to_string(),
        ),
        None => (cmp::text::BUILT_IN.to_string(), "built-in".to_string()),
    };
    let tokens = base.tokenizer.encode(&text, true, false);
    for o in &others {
        ensure!(
            o.tokenizer.encode(&text, true, false) == tokens,
            "{} tokenizes the text differently from the base {}: compare needs models of \
             one vocabulary",
            o.model.file.path().display(),
            base_path.display()
        );
    }
    let n_ctx = match args.ctx {
        Some(c) => c,
        None if tokens.len() >= 2 * DEFAULT_CTX => DEFAULT_CTX,
        None => {
            // Two chunks of what fits, a multiple of 16.
            let c = (tokens.len() / 2) / 16 * 16;
            ensure!(
                c >= 16,
                "the text ({} tokens) is too short to compare on",
                tokens.len()
            );
            eprintln!(
                "note: the {text_name} text is {} tokens, too few for two chunks of \
                 {DEFAULT_CTX}: using --ctx {c} (give a longer --text for steadier figures)",
                tokens.len()
            );
            c
        }
    };
    let chunking = Chunking::new(tokens.len(), n_ctx, args.chunks)
        .with_context(|| format!("the {text_name} text tokenizes to {} tokens", tokens.len()))?;
    let run = RunOptions {
        n_ctx,
        kv_type: args.kv.types()?,
        threads: threads.unwrap_or_else(default_threads),
        batch: n_ctx,
    };
    let batch = match args.batch {
        Some(0) => bail!("--batch 0 evaluates nothing: give 1 or more tokens"),
        Some(b) => b.min(n_ctx),
        None => n_ctx,
    };
    // The scored models' options: the base's, with --batch.
    let scored = RunOptions { batch, ..run };
    let offloaded = args
        .offload
        .iter()
        .map(|&n| {
            offload(
                &base_path,
                n,
                args.gpu,
                Fit {
                    n_ctx,
                    max_batch: batch,
                    kv: run.kv_type,
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let bos = if base.tokenizer.add_bos() {
        base.tokenizer.bos()
    } else {
        None
    };

    let t0 = Instant::now();
    let mut line = ProgressLine::new();
    let mut refs: Vec<(&Model, String, RunOptions)> = others
        .iter()
        .chain(&offloaded)
        .map(|o| (&o.model, o.label.clone(), scored))
        .collect();
    for t in &args.kv_types {
        let kv_type = KvTypes::same(KvType::parse(t)?);
        refs.push((
            &base.model,
            format!("KV {kv_type}"),
            RunOptions { kv_type, ..scored },
        ));
    }
    let mut base_notes = Vec::new();
    if !args.offload.is_empty() {
        base_notes.push("CPU".to_string());
    }
    if !args.kv_types.is_empty() {
        base_notes.push(format!("KV {}", run.kv_type));
    }
    let base_label = if base_notes.is_empty() {
        base.label.clone()
    } else {
        format!("{} ({})", base.label, base_notes.join(", "))
    };
    let comparison = cmp::compare_runs(
        (&base.model, &base_label),
        &refs,
        &tokens,
        bos,
        chunking,
        run,
        !args.no_speed,
        |p| line.show(&progress(p, t0)),
    )?;
    line.finish();
    let secs = t0.elapsed().as_secs_f64();

    let ladder = args.ladder.is_some();
    let rec = ladder.then(|| cmp::recommend(&comparison.results, args.max_kld));
    if let Some(path) = &args.plot {
        let points: Vec<Point> = comparison
            .results
            .iter()
            .map(|r| Point {
                label: r.facts.label.clone(),
                x: r.facts.bits_per_weight,
                y: r.agreement.mean_kld(),
            })
            .collect();
        let title = format!(
            "Quality against size: {} vs base {}",
            if ladder { "quantizations" } else { "models" },
            comparison.base.label
        );
        let svg = plot::svg(&points, &title, ladder.then_some(args.max_kld), ladder);
        write_atomically(
            path,
            "plot",
            Kind::Data,
            Overwrite::forced(args.force),
            svg.as_bytes(),
        )?;
        eprintln!("wrote {}", path.display());
    }
    let broken = not_finite(&comparison);
    if args.json {
        let mut v = to_json(&comparison, &text_name, tokens.len(), secs, args, rec);
        v["batch"] = json!(batch);
        writeln!(out, "{v}")?;
    } else {
        print_table(out, &comparison, &text_name, tokens.len(), secs, batch)?;
        if let Some(rec) = rec {
            writeln!(
                out,
                "{}",
                recommendation_line(&comparison, rec, args.max_kld)
            )?;
        }
    }
    // NaN figures are shown as NaN, then the command fails and says whose logits.
    broken.map_or(Ok(()), Err)
}

/// Which models' logits were not finite (NaN weights): their figures are NaN.
fn not_finite(c: &Comparison) -> Option<anyhow::Error> {
    let positions = |n: usize| {
        format!(
            "{n} of {} positions",
            c.results.first().map_or(0, |r| r.agreement.count())
        )
    };
    if let Some(n) = c
        .results
        .first()
        .map(|r| r.agreement.nll_base.non_finite)
        .filter(|&n| n > 0)
    {
        return Some(anyhow::anyhow!(
            "the base model {}'s logits are not finite (NaN or infinite) at {}: nothing can \
             be compared against it",
            c.base.label,
            positions(n)
        ));
    }
    let models: Vec<String> = c
        .results
        .iter()
        .filter(|r| r.agreement.nll.non_finite > 0)
        .map(|r| {
            format!(
                "{} ({})",
                r.facts.label,
                positions(r.agreement.nll.non_finite)
            )
        })
        .collect();
    (!models.is_empty()).then(|| {
        anyhow::anyhow!(
            "the logits of {} are not finite (NaN or infinite), so their figures are NaN: \
             their weights hold NaN or infinite values",
            models.join(", ")
        )
    })
}

/// `path` loaded again with `n` layers on the `gpu` adapter (room left for a context of
/// `fit`'s size when `n` is auto), labelled by where its layers went; an error when none
/// goes to a GPU.
fn offload(path: &Path, n: GpuLayers, gpu: GpuChoice, fit: Fit) -> Result<Loaded> {
    let mut loaded = load(path, String::new())?;
    let args = crate::cli::model_args::GpuArgs { gpu_layers: n, gpu };
    args.offload_as(&mut loaded.model, fit, true)
        .with_context(|| format!("--offload {n}"))?;
    loaded.label = loaded
        .model
        .gpu_placement()
        .context("no layer went to the GPU")?;
    Ok(loaded)
}

/// Quantize `source` to each of `args.types` into `dir`; the files and their labels.
fn quantize_ladder(
    args: &CompareArgs,
    threads: Option<usize>,
    source: &Path,
    dir: &Path,
) -> Result<Vec<(PathBuf, String)>> {
    let input = GgufFile::open(source)
        .with_context(|| format!("cannot read model {}", source.display()))?;
    let stem = FileFacts::stem(source);
    let mut models = Vec::new();
    for (i, &ftype) in args.types.iter().enumerate() {
        let name = ftype.name();
        let path = dir.join(format!("{stem}-{name}.gguf"));
        eprint!(
            "quantizing {} to {name} ({}/{}) ... ",
            source.display(),
            i + 1,
            args.types.len()
        );
        let opts = QuantizeOptions {
            threads: threads.unwrap_or(0),
            allow_requantize: args.allow_requantize,
            overwrite: Overwrite::forced(args.force),
            ..QuantizeOptions::new(ftype)
        };
        let report = quantize_model(&input, &path, &opts, &mut |_| {})
            .with_context(|| format!("cannot quantize {} to {name}", source.display()))?;
        eprintln!(
            "{:.1} MiB in {:.1} s",
            report.bytes_out as f64 / MIB,
            report.seconds
        );
        models.push((path, name.to_string()));
    }
    Ok(models)
}

const MIB: f64 = 1024.0 * 1024.0;

fn progress(p: &Progress<'_>, t0: Instant) -> String {
    if p.speed {
        format!(
            "[speed {}/{}] timing pp and tg of {}",
            p.done + 1,
            p.total,
            p.label
        )
    } else {
        let eta = t0.elapsed().as_secs_f64() / p.done as f64 * (p.total - p.done) as f64;
        let kld = p.kld.map_or(String::new(), |k| format!(" · KLD {k:.5}"));
        format!(
            "[{}/{}] chunk {}/{} · {}{kld} · {eta:.0} s left",
            p.done,
            p.total,
            p.chunk + 1,
            p.n_chunks,
            p.label
        )
    }
}

fn speed_cells(s: Option<Speed>) -> (String, String) {
    match s {
        Some(s) => (format!("{:.1}", s.pp), format!("{:.1}", s.tg)),
        None => ("-".into(), "-".into()),
    }
}

fn print_table(
    out: &mut impl Write,
    c: &Comparison,
    text_name: &str,
    n_tokens: usize,
    secs: f64,
    batch: usize,
) -> Result<()> {
    let ch = &c.chunking;
    let pieces = match batch {
        1 => ", the models' token by token".to_string(),
        b if b < ch.n_ctx => format!(", the models' in batches of {b}"),
        _ => String::new(),
    };
    writeln!(
        out,
        "base {} ({}): {}; text {text_name}, {n_tokens} tokens, {} chunks of {}{pieces}, {} \
         positions scored per model ({secs:.0} s)",
        c.base.label,
        c.base.path.display(),
        c.base.file_type.as_deref().unwrap_or("?"),
        ch.n_chunks,
        ch.n_ctx,
        ch.n_chunks * ch.scored(),
    )?;
    writeln!(out)?;
    let label_w = c
        .results
        .iter()
        .map(|r| r.facts.label.chars().count())
        .chain([c.base.label.chars().count(), 5])
        .max()
        .unwrap_or(5);
    writeln!(
        out,
        "{:<label_w$} {:>8} {:>6} {:>9} {:>8}  {:>19} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7} {:>6}",
        "model",
        "MiB",
        "bpw",
        "PPL",
        "PPL/base",
        "mean KLD ± err",
        "KLD p99",
        "KLD p95",
        "KLD med",
        "Δp mean",
        "Δp RMS",
        "same top",
        "pp t/s",
        "tg t/s"
    )?;
    let (pp, tg) = speed_cells(c.base_speed);
    let (ppl_base, _) = c.base_ppl().unwrap_or((f64::NAN, f64::NAN));
    writeln!(
        out,
        "{:<label_w$} {:>8.1} {:>6.2} {:>9.4} {:>8}  {:>19} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {pp:>7} {tg:>6}",
        c.base.label,
        c.base.file_size as f64 / MIB,
        c.base.bits_per_weight,
        ppl_base,
        "(base)",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    )?;
    for r in &c.results {
        let f = Figures::of(&r.agreement);
        let (pp, tg) = speed_cells(r.speed);
        writeln!(
            out,
            "{:<label_w$} {:>8.1} {:>6.2} {:>9.4} {:>8.4}  {:>19} {:>8.5} {:>8.5} {:>8.5} {:>6.2}% {:>6.2}% {:>7.2}% {pp:>7} {tg:>6}",
            r.facts.label,
            r.facts.file_size as f64 / MIB,
            r.facts.bits_per_weight,
            f.ppl,
            f.ppl_ratio,
            format!("{:.5} ± {:.5}", f.kld_mean, f.kld_err),
            f.kld_99,
            f.kld_95,
            f.kld_median,
            100.0 * f.p_diff_mean,
            100.0 * f.p_diff_rms,
            100.0 * f.same_top,
        )?;
    }
    writeln!(
        out,
        "\nKLD: KL(base ‖ model) per position, nats, ± the standard error of the mean; Δp: \
         p(correct token) under the model minus under the base; same top: the share of \
         positions where both pick the same likeliest token."
    )?;
    Ok(())
}

fn recommendation_line(
    c: &Comparison,
    rec: (Option<usize>, Option<usize>),
    max_kld: f64,
) -> String {
    let r = &c.results;
    match rec {
        (Some(s), fastest) => {
            let mut line = format!(
                "recommendation: {} is the smallest under mean KLD {max_kld} ({:.1} MiB, {:.2} \
                 bpw, KLD {:.5})",
                r[s].facts.label,
                r[s].facts.file_size as f64 / MIB,
                r[s].facts.bits_per_weight,
                r[s].agreement.mean_kld()
            );
            if let Some(f) = fastest {
                let tg = r[f].speed.map_or(0.0, |s| s.tg);
                line += &format!(
                    "; the fastest under it is {} ({tg:.1} t/s tg)",
                    r[f].facts.label
                );
            }
            line + "."
        }
        (None, _) => {
            let best = (0..r.len()).min_by(|&a, &b| {
                r[a].agreement
                    .mean_kld()
                    .total_cmp(&r[b].agreement.mean_kld())
            });
            match best {
                Some(b) => format!(
                    "recommendation: no type stays under mean KLD {max_kld}; the closest is {} \
                     (KLD {:.5}).",
                    r[b].facts.label,
                    r[b].agreement.mean_kld()
                ),
                None => "recommendation: nothing to compare.".into(),
            }
        }
    }
}

fn facts_json(f: &FileFacts, speed: Option<Speed>) -> Value {
    json!({
        "label": f.label,
        "path": f.path.display().to_string(),
        "file_type": f.file_type,
        "file_size": f.file_size,
        "n_params": f.n_params,
        "bits_per_weight": f.bits_per_weight,
        "pp_tps": speed.map(|s| s.pp),
        "tg_tps": speed.map(|s| s.tg),
    })
}

fn to_json(
    c: &Comparison,
    text_name: &str,
    n_tokens: usize,
    secs: f64,
    args: &CompareArgs,
    rec: Option<(Option<usize>, Option<usize>)>,
) -> Value {
    let mut base = facts_json(&c.base, c.base_speed);
    if let Some((ppl, err)) = c.base_ppl() {
        base["ppl"] = json!(ppl);
        base["ppl_err"] = json!(err);
    }
    let models: Vec<Value> = c
        .results
        .iter()
        .map(|r| {
            let f = Figures::of(&r.agreement);
            let mut v = facts_json(&r.facts, r.speed);
            let fields = json!({
                "ppl": f.ppl,
                "ppl_err": f.ppl_err,
                "ppl_ratio": f.ppl_ratio,
                "kld_mean": f.kld_mean,
                "kld_err": f.kld_err,
                "kld_max": f.kld_max,
                "kld_99": f.kld_99,
                "kld_95": f.kld_95,
                "kld_median": f.kld_median,
                "p_diff_mean": f.p_diff_mean,
                "p_diff_rms": f.p_diff_rms,
                "p_diff_rms_err": f.p_diff_rms_err,
                "same_top": f.same_top,
                "same_top_err": f.same_top_err,
                "positions": f.positions,
            });
            if let (Value::Object(m), Value::Object(extra)) = (&mut v, fields) {
                m.extend(extra);
            }
            v
        })
        .collect();
    let mut v = json!({
        "base": base,
        "models": models,
        "text": text_name,
        "text_tokens": n_tokens,
        "ctx": c.chunking.n_ctx,
        "chunks": c.chunking.n_chunks,
        "positions": c.chunking.n_chunks * c.chunking.scored(),
        "seconds": secs,
    });
    if let Some((smallest, fastest)) = rec {
        let label = |i: Option<usize>| i.map(|i| c.results[i].facts.label.clone());
        v["recommendation"] = json!({
            "max_kld": args.max_kld,
            "smallest": label(smallest),
            "fastest": label(fastest),
            "line": recommendation_line(c, (smallest, fastest), args.max_kld),
        });
    }
    v
}
