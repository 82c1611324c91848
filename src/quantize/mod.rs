//! Quantizing a whole model, as llama.cpp's `llama-quantize` does: the same per-tensor
//! recipe (see [`recipe`]), the same quantizers (loupe-quant's, bit-identical to ggml's
//! without an importance matrix), the same tensor order and metadata, so that for the same
//! input the tensors of the two files are byte for byte equal.
//!
//! The output is streamed: the header is written first (every tensor's type and size is
//! known before any is quantized), then each tensor a slab of rows at a time, so memory
//! stays near one slab rather than the whole model. The file is written under a temporary
//! name beside the destination and renamed when complete (`loupe_gguf::atomic`: it
//! replaces a GGUF file, any file only with `overwrite`, never the model being read).

pub mod recipe;

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use loupe_quant::{GgmlType, QuantError};
use rayon::prelude::*;

use loupe_engine::model::config::SUPPORTED_ARCHITECTURES;
use loupe_engine::model::ftype::file_type_name;
use loupe_engine::model::Model;
use loupe_gguf::atomic::{AtomicFile, Kind, Overwrite, WriteError};
use loupe_gguf::{
    align_up, GgufError, GgufFile, GgufWriter, Metadata, TensorInfo, TensorToWrite, Value,
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT,
};
use recipe::{is_quantized, llama_order, ModelFacts, Overrides, Recipe};

/// ggml's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// A whole-model recipe: llama.cpp's `llama_ftype`, for the ones loupe writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

impl FileType {
    pub const ALL: [FileType; 19] = {
        use FileType::*;
        [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S,
            Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, F16, BF16, F32,
        ]
    };

    /// llama.cpp's name for it (from the one table of `general.file_type` names).
    pub fn name(self) -> &'static str {
        file_type_name(self.id()).unwrap_or("?")
    }

    /// The `general.file_type` value (llama.cpp's `llama_ftype`).
    pub fn id(self) -> u32 {
        use FileType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            IQ4_NL => 25,
            IQ4_XS => 30,
            BF16 => 32,
        }
    }

    /// The type most tensors get; the recipe changes some.
    pub fn default_type(self) -> GgmlType {
        use FileType as F;
        use GgmlType as G;
        match self {
            F::F32 => G::F32,
            F::F16 => G::F16,
            F::BF16 => G::BF16,
            F::Q4_0 => G::Q4_0,
            F::Q4_1 => G::Q4_1,
            F::Q5_0 => G::Q5_0,
            F::Q5_1 => G::Q5_1,
            F::Q8_0 => G::Q8_0,
            F::Q2_K => G::Q2_K,
            F::Q3_K_S | F::Q3_K_M | F::Q3_K_L => G::Q3_K,
            F::Q4_K_S | F::Q4_K_M => G::Q4_K,
            F::Q5_K_S | F::Q5_K_M => G::Q5_K,
            F::Q6_K => G::Q6_K,
            F::IQ4_NL => G::IQ4_NL,
            F::IQ4_XS => G::IQ4_XS,
        }
    }

    /// All names, for error messages.
    pub fn names() -> String {
        let v: Vec<&str> = FileType::ALL.iter().map(|t| t.name()).collect();
        v.join(", ")
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = String;
    fn from_str(s: &str) -> Result<FileType, String> {
        FileType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown quantization type {s:?}; valid types: {}",
                    FileType::names()
                )
            })
    }
}

/// The tensor types `--output-tensor-type` and `--token-embedding-type` accept: those
/// loupe can write.
pub fn parse_tensor_type(s: &str) -> Result<GgmlType, String> {
    let writable: Vec<GgmlType> = loupe_quant::ALL_TYPES
        .into_iter()
        .filter(|&t| loupe_quant::can_quantize(t) && !matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K))
        .collect();
    writable
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<&str> = writable.iter().map(|t| t.name()).collect();
            format!(
                "unknown tensor type {s:?}; valid types: {}",
                names.join(", ")
            )
        })
}

/// How to quantize.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub ftype: FileType,
    /// Worker threads; 0 means all cores.
    pub threads: usize,
    /// Every quantized tensor gets the file type's default type (no recipe mixing).
    pub pure: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// Accept an already-quantized source (decoded, then quantized again).
    pub allow_requantize: bool,
    /// Which existing file the output may replace: a GGUF model (the default), or any
    /// regular file.
    pub overwrite: Overwrite,
}

/// What the quantizer tells whoever shows its work, as it goes; it prints nothing itself.
#[derive(Clone, Copy, Debug)]
pub enum QuantizeEvent<'a> {
    /// Already-quantized tensors will be decoded and quantized again (quality lost twice).
    Requantizing { tensors: usize },
    /// A tensor's row length does not fit the recipe's type; another is used.
    Fallback {
        tensor: &'a str,
        wanted: GgmlType,
        used: GgmlType,
    },
    /// A slab of tensor `index` (1-based, of `count`) is written.
    Progress {
        index: usize,
        count: usize,
        tensor: &'a str,
        done_elems: u64,
        total_elems: u64,
        secs: f64,
    },
}

impl QuantizeOptions {
    pub fn new(ftype: FileType) -> QuantizeOptions {
        QuantizeOptions {
            ftype,
            threads: 0,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            allow_requantize: false,
            overwrite: Overwrite::SameKind,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "tensor {name} is already quantized ({ty}); requantizing loses quality twice, \
         pass --allow-requantize to do it anyway, or start from an F32/F16/BF16 model"
    )]
    Requantize { name: String, ty: GgmlType },
    #[error("tensor {name}: cannot convert {from} to {to}: {source}")]
    Convert {
        name: String,
        from: GgmlType,
        to: GgmlType,
        source: QuantError,
    },
    #[error("tensor {name}: {why}")]
    Recipe { name: String, why: String },
    #[error("the input and output are the same file: {0}")]
    SameFile(PathBuf),
    /// A model of an architecture loupe runs whose metadata and tensors disagree:
    /// quantizing it would only write another file nothing can run.
    #[error("it is not a model loupe can run, so it is not quantized: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`quantize_model`] did.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    /// (name, source type, written type), in file order.
    pub tensors: Vec<(String, GgmlType, GgmlType)>,
    /// Tensors whose row length did not fit the recipe's type: (name, wanted, used).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
    /// Tensors that were quantized types and were decoded to be quantized again.
    pub requantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub n_elements: u64,
    pub seconds: f64,
}

/// Read the model facts the recipe depends on from the metadata (any architecture).
pub fn model_facts(file: &GgufFile) -> ModelFacts {
    let md = file.metadata();
    let arch = md
        .get_opt_str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_string();
    let first_int = |key: &str| -> Option<usize> {
        match md.get(&format!("{arch}.{key}"))? {
            Value::Array(a) => {
                // Per-layer arrays: layer 0, as llama.cpp's n_gqa() reads it.
                use loupe_gguf::Array;
                match a {
                    Array::U32(v) => v.first().map(|&x| x as usize),
                    Array::I32(v) => v.first().and_then(|&x| usize::try_from(x).ok()),
                    _ => None,
                }
            }
            v => v.as_i128().and_then(|i| usize::try_from(i).ok()),
        }
    };
    let n_layer = first_int("block_count").unwrap_or(0);
    let n_head = first_int("attention.head_count").unwrap_or(0);
    let n_head_kv = first_int("attention.head_count_kv").unwrap_or(n_head);
    let n_expert = first_int("expert_count").unwrap_or(0);
    let n_gqa = n_head.checked_div(n_head_kv).unwrap_or(1);
    // llama.cpp's size class, only as far as the recipe reads it.
    let is_70b = match arch.as_str() {
        "llama" => n_layer == 80 && n_head != n_head_kv,
        "qwen2" | "deci" | "olmo" => n_layer == 80,
        "jais2" => n_layer == 68,
        _ => false,
    };
    ModelFacts {
        arch,
        n_layer,
        n_gqa,
        n_expert,
        is_70b,
    }
}

/// Each tensor in write order with the type it gets.
type Plan<'f> = Vec<(&'f TensorInfo, GgmlType)>;
/// (name, wanted type, type used) for each tensor whose row length forced a fallback.
type Fallbacks = Vec<(String, GgmlType, GgmlType)>;

/// Decide every tensor's type, and refuse what cannot or should not be done before a
/// byte is written.
fn plan<'f>(
    input: &'f GgufFile,
    opts: &QuantizeOptions,
) -> Result<(Plan<'f>, Fallbacks), QuantizeError> {
    let facts = model_facts(input);
    let over = Overrides {
        pure: opts.pure,
        output: opts.output_tensor_type,
        token_embd: opts.token_embedding_type,
    };
    let mut recipe = Recipe::new(
        opts.ftype,
        &facts,
        over,
        input.tensors().iter().map(|t| t.name.as_str()),
    );
    let mut out = Vec::new();
    for t in llama_order(input.tensors()) {
        let ty = recipe.tensor_type(t).map_err(|why| QuantizeError::Recipe {
            name: t.name.clone(),
            why,
        })?;
        if ty != t.ty {
            // Only a type given by the user can get here unfitted; the recipe falls back.
            if t.dims[0] % ty.block_elems() as u64 != 0 {
                return Err(QuantizeError::Recipe {
                    name: t.name.clone(),
                    why: format!(
                        "rows of {} weights are not a whole number of {ty}'s {}-weight \
                         blocks; choose another type for it",
                        t.dims[0],
                        ty.block_elems()
                    ),
                });
            }
            if is_quantized(t.ty) && !opts.allow_requantize {
                return Err(QuantizeError::Requantize {
                    name: t.name.clone(),
                    ty: t.ty,
                });
            }
            if !t.ty.is_supported() || !loupe_quant::can_quantize(ty) {
                return Err(QuantizeError::Convert {
                    name: t.name.clone(),
                    from: t.ty,
                    to: ty,
                    source: QuantError::Unsupported {
                        ty: if t.ty.is_supported() { ty } else { t.ty },
                    },
                });
            }
        }
        out.push((t, ty));
    }
    Ok((out, recipe.fallbacks))
}

/// The output metadata: the input's, without split keys, then the quantization version
/// and file type appended (llama.cpp removes and re-adds them, so they come last).
fn output_metadata(input: &GgufFile, ftype: FileType) -> Metadata {
    let mut md = input.metadata().clone();
    for k in ["split.no", "split.count", "split.tensors.count"] {
        md.remove(k);
    }
    for (k, v) in [
        ("general.quantization_version", QUANTIZATION_VERSION),
        ("general.file_type", ftype.id()),
    ] {
        md.remove(k);
        md.push(k, Value::U32(v));
    }
    md
}

/// The header bytes (metadata and tensor directory, padded to the alignment) of a file
/// with these tensors, without their data: the shared writer serializes the directory,
/// and a sink that keeps only the leading bytes drops the (never touched) zero data.
fn header_bytes(
    md: &Metadata,
    tensors: &[(String, GgmlType, Vec<u64>, u64)],
) -> Result<Vec<u8>, GgufError> {
    let largest = tensors.iter().map(|t| t.3).max().unwrap_or(0) as usize;
    // Zeroed by the allocator (calloc): the pages are never written or read, so this
    // costs address space, not memory.
    let zeros = vec![0u8; largest];
    let mut w = GgufWriter::new(md.clone());
    for (name, ty, dims, bytes) in tensors {
        w.add_tensor(TensorToWrite {
            name: name.clone(),
            ty: *ty,
            dims: dims.clone(),
            data: Cow::Borrowed(&zeros[..*bytes as usize]),
        });
    }
    let align = match md.get(ALIGNMENT_KEY) {
        Some(Value::U32(a)) => u64::from(*a),
        _ => DEFAULT_ALIGNMENT,
    };
    let data_len: u64 = tensors
        .iter()
        .map(|t| align_up(t.3, align).unwrap_or(u64::MAX))
        .sum();
    let mut total = CountSink(0);
    w.write_to(&mut total)?;
    let mut head = HeadSink {
        keep: (total.0 - data_len) as usize,
        bytes: Vec::new(),
    };
    w.write_to(&mut head)?;
    Ok(head.bytes)
}

struct CountSink(u64);

impl Write for CountSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct HeadSink {
    keep: usize,
    bytes: Vec<u8>,
}

impl Write for HeadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.keep - self.bytes.len();
        self.bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Elements converted per slab (one output write): memory stays near this many elements'
/// quantized bytes, plus one row of f32s per worker.
const SLAB_ELEMS: usize = 1 << 24;
/// Elements per parallel task: enough work to amortize the scheduling.
const TASK_ELEMS: usize = 1 << 15;

/// Quantize `input` to `out` with llama.cpp's recipe for `opts.ftype`, telling `on` what
/// it does. See the module doc.
pub fn quantize_model(
    input: &GgufFile,
    out: &Path,
    opts: &QuantizeOptions,
    on: &mut dyn FnMut(QuantizeEvent),
) -> Result<QuantizeReport, QuantizeError> {
    let start = Instant::now();
    if let (Ok(a), Ok(b)) = (input.path().canonicalize(), out.canonicalize()) {
        if a == b {
            return Err(QuantizeError::SameFile(a));
        }
    }
    let arch = input.metadata().get_opt_str("general.architecture");
    if arch.is_ok_and(|a| a.is_some_and(|a| SUPPORTED_ARCHITECTURES.contains(&a))) {
        Model::check(input).map_err(|e| QuantizeError::Inconsistent(format!("{e:#}")))?;
    }
    let (plan, fallbacks) = plan(input, opts)?;
    let requantized = plan
        .iter()
        .filter(|(t, ty)| *ty != t.ty && is_quantized(t.ty))
        .count();
    if requantized > 0 {
        on(QuantizeEvent::Requantizing {
            tensors: requantized,
        });
    }
    for (name, wanted, used) in &fallbacks {
        on(QuantizeEvent::Fallback {
            tensor: name,
            wanted: *wanted,
            used: *used,
        });
    }

    let md = output_metadata(input, opts.ftype);
    let align = match md.get(ALIGNMENT_KEY) {
        Some(Value::U32(a)) => u64::from(*a),
        _ => DEFAULT_ALIGNMENT,
    };
    let entries: Vec<(String, GgmlType, Vec<u64>, u64)> = plan
        .iter()
        .map(|(t, ty)| {
            let bytes = ty
                .row_bytes(t.n_elements())
                .ok_or_else(|| QuantizeError::Recipe {
                    name: t.name.clone(),
                    why: format!("{} elements do not fit type {ty}", t.n_elements()),
                })?;
            Ok((t.name.clone(), *ty, t.dims.clone(), bytes))
        })
        .collect::<Result<_, QuantizeError>>()?;
    let header = header_bytes(&md, &entries)?;

    let io = |e: std::io::Error| QuantizeError::Io {
        path: out.to_path_buf(),
        source: e,
    };
    let tmp = AtomicFile::create(out, "quantize", Kind::Gguf, opts.overwrite)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| io(std::io::Error::other(e)))?;

    let total_elems: u64 = plan.iter().map(|(t, _)| t.n_elements()).sum();
    let mut done_elems = 0u64;
    let mut bytes_out = header.len() as u64;
    let mut report = Vec::with_capacity(plan.len());
    {
        let mut w = tmp.writer();
        w.write_all(&header).map_err(io)?;
        for (i, ((t, ty), entry)) in plan.iter().zip(&entries).enumerate() {
            let src = input.tensor_data(t);
            if *ty == t.ty {
                w.write_all(src).map_err(io)?;
            } else {
                let row_len = t.row_len() as usize;
                let n_rows = (t.n_elements() / t.row_len()) as usize;
                let src_row = t.ty.row_bytes(t.row_len()).unwrap_or(0) as usize;
                let dst_row = ty.row_bytes(t.row_len()).unwrap_or(0) as usize;
                let slab_rows = (SLAB_ELEMS / row_len).max(1);
                let task_rows = (TASK_ELEMS / row_len).max(1);
                let mut buf = vec![0u8; slab_rows.min(n_rows) * dst_row];
                for first in (0..n_rows).step_by(slab_rows) {
                    let rows = slab_rows.min(n_rows - first);
                    let src = &src[first * src_row..(first + rows) * src_row];
                    let dst = &mut buf[..rows * dst_row];
                    pool.install(|| {
                        dst.par_chunks_mut(task_rows * dst_row)
                            .zip(src.par_chunks(task_rows * src_row))
                            .try_for_each(|(d, s)| convert_rows(t.ty, *ty, s, d, row_len))
                    })
                    .map_err(|source| QuantizeError::Convert {
                        name: t.name.clone(),
                        from: t.ty,
                        to: *ty,
                        source,
                    })?;
                    w.write_all(dst).map_err(io)?;
                    done_elems += (rows * row_len) as u64;
                    on(QuantizeEvent::Progress {
                        index: i + 1,
                        count: plan.len(),
                        tensor: &t.name,
                        done_elems,
                        total_elems,
                        secs: start.elapsed().as_secs_f64(),
                    });
                }
            }
            let pad = align_up(entry.3, align).unwrap_or(entry.3) - entry.3;
            w.write_all(&vec![0u8; pad as usize]).map_err(io)?;
            bytes_out += entry.3 + pad;
            if *ty == t.ty {
                done_elems += t.n_elements();
            }
            report.push((t.name.clone(), t.ty, *ty));
        }
        w.flush().map_err(io)?;
    }
    tmp.commit()?;
    Ok(QuantizeReport {
        tensors: report,
        fallbacks,
        requantized,
        bytes_in: input.file_size(),
        bytes_out,
        n_elements: total_elems,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Decode whole rows of `from` (each `row_len` elements) and encode them as `to`.
fn convert_rows(
    from: GgmlType,
    to: GgmlType,
    src: &[u8],
    dst: &mut [u8],
    row_len: usize,
) -> Result<(), QuantError> {
    let src_row = from.row_bytes(row_len as u64).unwrap_or(0) as usize;
    let dst_row = to.row_bytes(row_len as u64).unwrap_or(0) as usize;
    let mut f = vec![0f32; row_len];
    for (s, d) in src.chunks_exact(src_row).zip(dst.chunks_exact_mut(dst_row)) {
        loupe_quant::dequantize_row(from, s, &mut f)?;
        loupe_quant::quantize_row(to, &f, d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::FileType;

    #[test]
    fn every_file_type_has_llama_cpps_name_and_parses_back() {
        for t in FileType::ALL {
            let name = t.name();
            assert_ne!(name, "?", "{t:?} (id {}) has no name", t.id());
            assert_eq!(name.parse::<FileType>(), Ok(t), "{name}");
        }
        assert_eq!(FileType::Q4_K_M.name(), "Q4_K_M");
        assert_eq!(FileType::BF16.id(), 32);
    }
}
