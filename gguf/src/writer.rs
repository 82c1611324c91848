//! Writing GGUF version 3 files: metadata, tensor directory, aligned and padded data.
//! The file is written beside its destination under a temporary name and renamed, so a
//! failed write never leaves a half-written file at the destination.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use byteorder::{LittleEndian as LE, WriteBytesExt};
use loupe_quant::GgmlType;

use super::atomic::{AtomicFile, Kind, Overwrite};
use super::error::{GgufError, Result};
use super::metadata::Metadata;
use super::parse::{align_up, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use super::value::{Array, Value};

/// A tensor to write: its directory entry and its bytes (already in `ty`'s format).
#[derive(Clone, Debug)]
pub struct TensorToWrite<'a> {
    pub name: String,
    pub ty: GgmlType,
    /// Innermost first.
    pub dims: Vec<u64>,
    pub data: Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes them as one GGUF file.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter<'a> {
    pub metadata: Metadata,
    pub tensors: Vec<TensorToWrite<'a>>,
}

impl<'a> GgufWriter<'a> {
    pub fn new(metadata: Metadata) -> Self {
        GgufWriter {
            metadata,
            tensors: Vec::new(),
        }
    }

    pub fn add_tensor(&mut self, t: TensorToWrite<'a>) {
        self.tensors.push(t);
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some(v) => Err(GgufError::Write(format!(
                "{ALIGNMENT_KEY} must be a u32 power of two, found {}",
                v.describe()
            ))),
        }
    }

    /// Check every tensor's shape against its data before a byte is written.
    fn check(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.tensors {
            let bad = |why: String| Err(GgufError::Write(format!("tensor {:?}: {why}", t.name)));
            if !seen.insert(&t.name) {
                return bad("name appears twice".into());
            }
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS as usize || t.dims.contains(&0) {
                return bad(format!("invalid dimensions {:?}", t.dims));
            }
            let n: Option<u64> = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let expected = n.and_then(|n| {
                (t.dims[0] % t.ty.block_elems() as u64 == 0)
                    .then(|| t.ty.row_bytes(n))
                    .flatten()
            });
            match expected {
                Some(e) if e == t.data.len() as u64 => {}
                Some(e) => {
                    return bad(format!(
                        "{} {} elements take {e} bytes, data has {}",
                        n.unwrap_or(0),
                        t.ty,
                        t.data.len()
                    ))
                }
                None => return bad(format!("dimensions {:?} do not fit type {}", t.dims, t.ty)),
            }
        }
        Ok(())
    }

    /// Serialize the whole file into `w`.
    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        self.check()?;
        let align = self.alignment()?;
        let io = |e: std::io::Error| GgufError::Write(e.to_string());
        let mut w = CountingWriter { inner: w, pos: 0 };

        w.write_all(MAGIC).map_err(io)?;
        w.write_u32::<LE>(3).map_err(io)?;
        w.write_u64::<LE>(self.tensors.len() as u64).map_err(io)?;
        w.write_u64::<LE>(self.metadata.len() as u64).map_err(io)?;
        for (key, value) in self.metadata.iter() {
            write_string(&mut w, key).map_err(io)?;
            w.write_u32::<LE>(value.value_type() as u32).map_err(io)?;
            write_value(&mut w, value).map_err(io)?;
        }

        // Data offsets: each tensor starts at the next multiple of the alignment.
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut w, &t.name).map_err(io)?;
            w.write_u32::<LE>(t.dims.len() as u32).map_err(io)?;
            for &d in &t.dims {
                w.write_u64::<LE>(d).map_err(io)?;
            }
            w.write_u32::<LE>(t.ty.id()).map_err(io)?;
            w.write_u64::<LE>(offset).map_err(io)?;
            offset = align_up(offset + t.data.len() as u64, align)
                .ok_or_else(|| GgufError::Write("data offsets overflow".into()))?;
        }

        pad_to(&mut w, align).map_err(io)?;
        for t in &self.tensors {
            w.write_all(&t.data).map_err(io)?;
            pad_to(&mut w, align).map_err(io)?;
        }
        w.flush().map_err(io)
    }

    /// Write to `path` atomically: a temporary file in the same folder, synced, then renamed
    /// (over a GGUF file or an empty one only; see [`crate::atomic`]).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| GgufError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        self.check()?;
        let f = AtomicFile::create(path, "write", Kind::Gguf, Overwrite::SameKind)?;
        let mut w = f.writer();
        self.write_to(&mut w)?;
        w.flush().map_err(io)?;
        drop(w);
        Ok(f.commit()?)
    }

    /// The whole file as bytes (tests and tools that build small files in memory).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }
}

struct CountingWriter<'w, W: Write> {
    inner: &'w mut W,
    pos: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn pad_to<W: Write>(w: &mut CountingWriter<'_, W>, align: u64) -> std::io::Result<()> {
    let pad = align_up(w.pos, align).unwrap_or(w.pos) - w.pos;
    w.write_all(&vec![0u8; pad as usize])
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_u64::<LE>(s.len() as u64)?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_u8(*x),
        Value::I8(x) => w.write_i8(*x),
        Value::U16(x) => w.write_u16::<LE>(*x),
        Value::I16(x) => w.write_i16::<LE>(*x),
        Value::U32(x) => w.write_u32::<LE>(*x),
        Value::I32(x) => w.write_i32::<LE>(*x),
        Value::F32(x) => w.write_f32::<LE>(*x),
        Value::Bool(x) => w.write_u8(u8::from(*x)),
        Value::String(s) => write_string(w, s),
        Value::Array(a) => write_array(w, a),
        Value::U64(x) => w.write_u64::<LE>(*x),
        Value::I64(x) => w.write_i64::<LE>(*x),
        Value::F64(x) => w.write_f64::<LE>(*x),
    }
}

fn write_array(w: &mut impl Write, a: &Array) -> std::io::Result<()> {
    w.write_u32::<LE>(a.elem_type() as u32)?;
    w.write_u64::<LE>(a.len() as u64)?;
    match a {
        Array::U8(v) => w.write_all(v),
        Array::I8(v) => v.iter().try_for_each(|x| w.write_i8(*x)),
        Array::U16(v) => v.iter().try_for_each(|x| w.write_u16::<LE>(*x)),
        Array::I16(v) => v.iter().try_for_each(|x| w.write_i16::<LE>(*x)),
        Array::U32(v) => v.iter().try_for_each(|x| w.write_u32::<LE>(*x)),
        Array::I32(v) => v.iter().try_for_each(|x| w.write_i32::<LE>(*x)),
        Array::F32(v) => v.iter().try_for_each(|x| w.write_f32::<LE>(*x)),
        Array::Bool(v) => v.iter().try_for_each(|x| w.write_u8(u8::from(*x))),
        Array::String(v) => v.iter().try_for_each(|s| write_string(w, s)),
        Array::Array(v) => v.iter().try_for_each(|x| write_array(w, x)),
        Array::U64(v) => v.iter().try_for_each(|x| w.write_u64::<LE>(*x)),
        Array::I64(v) => v.iter().try_for_each(|x| w.write_i64::<LE>(*x)),
        Array::F64(v) => v.iter().try_for_each(|x| w.write_f64::<LE>(*x)),
    }
}
