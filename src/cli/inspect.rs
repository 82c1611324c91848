//! `loupe inspect MODEL`: what a GGUF file holds, for people (`--tensors`) and programs
//! (`--json`), and the values of one tensor (`--tensor NAME [--dump FILE]`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value as Json};

use super::format;
use loupe_engine::model::config::Config;
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::summary::ModelSummary;
use loupe_engine::model::{non_finite_vector, Model};
use loupe_gguf::atomic::{AtomicFile, Kind, Overwrite};
use loupe_gguf::{Array, GgufFile, TensorInfo, Value};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The model: a GGUF file, a name in the store (`loupe list`), or a hub reference
    /// (owner/repo:QUANT, owner/repo/file.gguf; pulled if not in the store).
    pub model: PathBuf,
    /// List every tensor: name, type, shape, bytes, offset.
    #[arg(long)]
    pub tensors: bool,
    /// Print everything as one JSON document (metadata and tensors included).
    #[arg(long)]
    pub json: bool,
    /// With --json, print long metadata arrays whole instead of their first elements.
    #[arg(long, requires = "json")]
    pub full: bool,
    /// Show one tensor's shape, type and value statistics.
    #[arg(long, value_name = "NAME")]
    pub tensor: Option<String>,
    /// With --tensor, write its dequantized values to FILE as little-endian f32.
    #[arg(long, value_name = "FILE", requires = "tensor")]
    pub dump: Option<PathBuf>,
    /// With --dump, replace FILE even when it is a GGUF model or a chat session (a device,
    /// a folder or the model being read never is).
    #[arg(long, requires = "dump")]
    pub force: bool,
}

/// Arrays longer than this are shown by their head in JSON unless `--full`.
const JSON_ARRAY_HEAD: usize = 16;

pub fn run(args: &InspectArgs, out: &mut impl Write) -> Result<()> {
    let path = crate::cli::pull::model_path(&args.model)?;
    let file =
        GgufFile::open(&path).with_context(|| format!("cannot read model {}", path.display()))?;

    if let Some(name) = &args.tensor {
        let t = file.tensor(name).with_context(|| {
            format!(
                "{} has no tensor named {name:?} (`loupe inspect --tensors {}` lists them)",
                args.model.display(),
                args.model.display()
            )
        })?;
        let stats = TensorStats::of(&file, t)?;
        if let Some(path) = &args.dump {
            dump_f32(&file, t, path, Overwrite::forced(args.force))?;
        }
        if args.json {
            let mut j = tensor_json(t);
            j["stats"] = stats.to_json();
            if let Some(path) = &args.dump {
                j["dumped_to"] = json!(path.display().to_string());
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?;
        } else {
            print_tensor(out, t, &stats)?;
            if let Some(path) = &args.dump {
                writeln!(
                    out,
                    "wrote {} f32 values ({}) to {}",
                    t.n_elements(),
                    format::bytes(t.n_elements() * 4),
                    path.display()
                )?;
            }
        }
        return Ok(());
    }

    let summary = ModelSummary::of(&file);
    // inspect describes any file; it also says when loupe could not run it, and why.
    let config = match Model::check(&file) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("note: loupe cannot run this model: {e:#}");
            None
        }
    };
    if config.is_some() {
        if let Some(t) = non_finite_vector(&file) {
            eprintln!(
                "note: tensor {t:?} holds NaN or infinite values: the model's logits will be NaN"
            );
        }
    }
    let kv = config.as_ref().map(KvSizes::of);
    if args.json {
        let mut j = file_json(&file, &summary, args.full);
        j["kv_cache"] = kv.as_ref().map_or(Json::Null, KvSizes::to_json);
        writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?;
        return Ok(());
    }
    print_summary(out, &file, &summary)?;
    if let Some(kv) = &kv {
        kv.print(out)?;
    }
    if args.tensors {
        writeln!(out)?;
        print_tensors(out, &file)?;
    }
    Ok(())
}

fn print_summary(out: &mut impl Write, file: &GgufFile, s: &ModelSummary) -> Result<()> {
    let unknown = || "-".to_string();
    let opt = |v: Option<u64>| v.map_or_else(unknown, |v| v.to_string());
    let rows: Vec<(&str, String)> = vec![
        ("file", file.path().display().to_string()),
        (
            "architecture",
            s.architecture.clone().unwrap_or_else(unknown),
        ),
        ("name", s.name.clone().unwrap_or_else(unknown)),
        (
            "parameters",
            format!(
                "{} ({})",
                format::count(s.parameter_count),
                s.parameter_count
            ),
        ),
        (
            "file type",
            match s.file_type {
                Some((id, Some(name))) => format!("{name} (general.file_type {id})"),
                Some((id, None)) => format!("unknown (general.file_type {id})"),
                None => unknown(),
            },
        ),
        (
            "size",
            format!(
                "{} ({} bytes), {:.2} bits per weight",
                format::bytes(s.file_size),
                s.file_size,
                s.bits_per_weight
            ),
        ),
        ("context length", opt(s.context_length)),
        ("layers", opt(s.block_count)),
        (
            "heads",
            format!(
                "{} query, {} key/value",
                s.head_count
                    .as_ref()
                    .map_or_else(unknown, |h| h.to_string()),
                s.head_count_kv
                    .as_ref()
                    .map_or_else(unknown, |h| h.to_string())
            ),
        ),
        ("embedding size", opt(s.embedding_length)),
        (
            "feed-forward size",
            s.feed_forward_length
                .as_ref()
                .map_or_else(unknown, |h| h.to_string()),
        ),
        (
            "vocabulary",
            match (s.vocab_size, s.tokenizer_description()) {
                (Some(n), Some(kind)) => format!("{n} tokens, {kind}"),
                (Some(n), None) => format!("{n} tokens"),
                (None, _) => unknown(),
            },
        ),
        (
            "chat template",
            if s.has_chat_template { "yes" } else { "no" }.to_string(),
        ),
        (
            "gguf",
            format!(
                "version {}, {} tensors, {} metadata keys, alignment {}",
                s.gguf_version,
                s.tensor_count,
                file.metadata().len(),
                file.alignment()
            ),
        ),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:>17}  {v}")?;
    }
    writeln!(out, "{:>17}", "tensor types")?;
    let total: u64 = s.bytes_by_type.iter().map(|t| t.bytes).sum();
    for t in &s.bytes_by_type {
        writeln!(
            out,
            "{:>17}  {:>4} tensors  {:>10}  {:5.1}%  {:.2} bpw",
            t.ty.to_string(),
            t.tensors,
            format::bytes(t.bytes),
            100.0 * t.bytes as f64 / total.max(1) as f64,
            t.ty.bits_per_weight()
        )?;
    }
    Ok(())
}

/// What the KV cache costs for this model in each type llama.cpp users pick (keys and
/// values the same type): bytes per token, and in all at the context loupe uses by default
/// and at the model's trained context.
struct KvSizes {
    default_ctx: usize,
    trained_ctx: usize,
    /// (type, bytes per token; `None` when the heads are not whole blocks of the type).
    per_token: Vec<(KvType, Option<u64>)>,
}

impl KvSizes {
    const TYPES: [KvType; 3] = [KvType::F16, KvType::Q8_0, KvType::Q4_0];

    fn of(c: &Config) -> KvSizes {
        KvSizes {
            // As `Model::default_ctx`: the model's own, at most 4096.
            default_ctx: c.n_ctx_train.clamp(1, 4096),
            trained_ctx: c.n_ctx_train,
            per_token: Self::TYPES
                .iter()
                .map(|&t| (t, KvTypes::same(t).bytes_per_token(c)))
                .collect(),
        }
    }

    fn total(per_token: u64, n_ctx: usize) -> u64 {
        per_token.saturating_mul(n_ctx as u64)
    }

    fn print(&self, out: &mut impl Write) -> Result<()> {
        writeln!(
            out,
            "{:>17}  per token, at ctx {} (default), at ctx {} (trained)",
            "KV cache", self.default_ctx, self.trained_ctx
        )?;
        for (t, b) in &self.per_token {
            match b {
                Some(b) => writeln!(
                    out,
                    "{:>17}  {b} bytes, {}, {}",
                    t.name(),
                    format::bytes(Self::total(*b, self.default_ctx)),
                    format::bytes(Self::total(*b, self.trained_ctx))
                )?,
                None => writeln!(
                    out,
                    "{:>17}  - (the heads are not whole blocks of {})",
                    t.name(),
                    t.ggml().block_elems()
                )?,
            }
        }
        Ok(())
    }

    fn to_json(&self) -> Json {
        let mut per_token = Map::new();
        for (t, b) in &self.per_token {
            per_token.insert(t.name().to_string(), json!(b));
        }
        json!({
            "default_ctx": self.default_ctx,
            "trained_ctx": self.trained_ctx,
            "bytes_per_token": per_token,
        })
    }
}

fn print_tensors(out: &mut impl Write, file: &GgufFile) -> Result<()> {
    let width = file
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:<7}  {:<22}  {:>12}  {:>12}",
        "name", "type", "shape", "bytes", "offset"
    )?;
    for t in file.tensors() {
        writeln!(
            out,
            "{:<width$}  {:<7}  {:<22}  {:>12}  {:>12}",
            t.name,
            t.ty.to_string(),
            t.shape_string(),
            t.n_bytes(),
            file.tensor_file_offset(t)
        )?;
    }
    Ok(())
}

/// Value statistics of one tensor, accumulated in f64 over its dequantized values.
#[derive(Debug, Clone)]
pub struct TensorStats {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub nan: u64,
    pub inf: u64,
}

impl TensorStats {
    pub fn of(file: &GgufFile, t: &TensorInfo) -> Result<TensorStats> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut n, mut nan, mut inf) = (0u64, 0u64, 0u64);
        // Welford's update keeps the variance accurate over hundreds of millions of values.
        let (mut mean, mut m2) = (0f64, 0f64);
        file.dequantize_chunked(t, 1 << 20, |xs| {
            for &x in xs {
                if x.is_nan() {
                    nan += 1;
                    continue;
                }
                if x.is_infinite() {
                    inf += 1;
                    continue;
                }
                let x = f64::from(x);
                n += 1;
                min = min.min(x);
                max = max.max(x);
                let d = x - mean;
                mean += d / n as f64;
                m2 += d * (x - mean);
            }
        })?;
        Ok(TensorStats {
            count: t.n_elements(),
            min: if n == 0 { f64::NAN } else { min },
            max: if n == 0 { f64::NAN } else { max },
            mean: if n == 0 { f64::NAN } else { mean },
            std: if n == 0 {
                f64::NAN
            } else {
                (m2 / n as f64).sqrt()
            },
            nan,
            inf,
        })
    }

    fn to_json(&self) -> Json {
        let f = |v: f64| if v.is_finite() { json!(v) } else { Json::Null };
        json!({
            "count": self.count, "min": f(self.min), "max": f(self.max),
            "mean": f(self.mean), "std": f(self.std), "nan": self.nan, "inf": self.inf,
        })
    }
}

fn print_tensor(out: &mut impl Write, t: &TensorInfo, s: &TensorStats) -> Result<()> {
    writeln!(out, "{:>9}  {}", "tensor", t.name)?;
    writeln!(
        out,
        "{:>9}  {} ({:.2} bits per weight)",
        "type",
        t.ty,
        t.ty.bits_per_weight()
    )?;
    writeln!(
        out,
        "{:>9}  {} = {} values",
        "shape",
        t.shape_string(),
        t.n_elements()
    )?;
    writeln!(
        out,
        "{:>9}  {} ({} bytes)",
        "size",
        format::bytes(t.n_bytes()),
        t.n_bytes()
    )?;
    writeln!(out, "{:>9}  {:.6}", "min", s.min)?;
    writeln!(out, "{:>9}  {:.6}", "max", s.max)?;
    writeln!(out, "{:>9}  {:.6}", "mean", s.mean)?;
    writeln!(out, "{:>9}  {:.6}", "std", s.std)?;
    writeln!(out, "{:>9}  {} NaN, {} Inf", "nan/inf", s.nan, s.inf)?;
    Ok(())
}

/// Write the tensor's values as little-endian f32, atomically (temporary file, rename).
fn dump_f32(file: &GgufFile, t: &TensorInfo, path: &Path, overwrite: Overwrite) -> Result<()> {
    let tmp = AtomicFile::create(path, "dump", Kind::Data, overwrite)?;
    let mut w = tmp.writer();
    let mut io_err = None;
    file.dequantize_chunked(t, 1 << 20, |xs| {
        if io_err.is_some() {
            return;
        }
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        if let Err(e) = w.write_all(&bytes) {
            io_err = Some(e);
        }
    })?;
    if let Some(e) = io_err {
        bail!("cannot write {}: {e}", path.display());
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(w);
    tmp.commit()?;
    Ok(())
}

fn tensor_json(t: &TensorInfo) -> Json {
    json!({
        "name": t.name,
        "type": t.ty.to_string(),
        "type_id": t.ty.id(),
        "shape": t.dims,
        "elements": t.n_elements(),
        "bytes": t.n_bytes(),
        "offset": t.offset,
    })
}

fn file_json(file: &GgufFile, s: &ModelSummary, full: bool) -> Json {
    let mut metadata = Map::new();
    for (k, v) in file.metadata().iter() {
        metadata.insert(k.to_string(), value_json(v, full));
    }
    let tensors: Vec<Json> = file
        .tensors()
        .iter()
        .map(|t| {
            let mut j = tensor_json(t);
            j["file_offset"] = json!(file.tensor_file_offset(t));
            if file.part_count() > 1 {
                j["part"] = json!(t.part + 1);
            }
            j
        })
        .collect();
    let by_type: Vec<Json> = s
        .bytes_by_type
        .iter()
        .map(|t| json!({"type": t.ty.to_string(), "tensors": t.tensors, "elements": t.elements, "bytes": t.bytes}))
        .collect();
    let head = |h: &Option<loupe_engine::model::summary::HeadCount>| match h {
        None => Json::Null,
        Some(loupe_engine::model::summary::HeadCount::Same(n)) => json!(n),
        Some(loupe_engine::model::summary::HeadCount::PerLayer(v)) => json!(v),
    };
    json!({
        "file": file.path().display().to_string(),
        "parts": file.part_count(),
        "file_size": s.file_size,
        "gguf_version": s.gguf_version,
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "architecture": s.architecture,
        "name": s.name,
        "parameter_count": s.parameter_count,
        "file_type": s.file_type.map(|(id, name)| json!({"id": id, "name": name})),
        "bits_per_weight": s.bits_per_weight,
        "bytes_by_type": by_type,
        "context_length": s.context_length,
        "block_count": s.block_count,
        "head_count": head(&s.head_count),
        "head_count_kv": head(&s.head_count_kv),
        "embedding_length": s.embedding_length,
        "feed_forward_length": head(&s.feed_forward_length),
        "vocab_size": s.vocab_size,
        "tokenizer_model": s.tokenizer_model,
        "tokenizer_pre": s.tokenizer_pre,
        "has_chat_template": s.has_chat_template,
        "tensor_count": s.tensor_count,
        "tensors": tensors,
        "metadata": metadata,
    })
}

/// A metadata value as JSON. Non-finite floats become strings, since JSON has no NaN.
fn value_json(v: &Value, full: bool) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float_json(f64::from(*x)),
        Value::F64(x) => float_json(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a, full),
    }
}

fn float_json(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

/// A whole array, or for a long one without `--full`, an object with its type, length
/// and first elements.
fn array_json(a: &Array, full: bool) -> Json {
    let n = if full {
        a.len()
    } else {
        a.len().min(JSON_ARRAY_HEAD)
    };
    let items: Vec<Json> = match a {
        Array::U8(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::I8(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::U16(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::I16(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::U32(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::I32(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::U64(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::I64(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::F32(v) => v[..n].iter().map(|x| float_json(f64::from(*x))).collect(),
        Array::F64(v) => v[..n].iter().map(|x| float_json(*x)).collect(),
        Array::Bool(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::String(v) => v[..n].iter().map(|x| json!(x)).collect(),
        Array::Array(v) => v[..n].iter().map(|x| array_json(x, full)).collect(),
    };
    if n == a.len() {
        Json::Array(items)
    } else {
        json!({
            "elided": true,
            "type": format!("array of {}", a.elem_type()),
            "len": a.len(),
            "head": items,
        })
    }
}
