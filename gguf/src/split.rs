//! Writing a model as several GGUF files, the way llama.cpp's `gguf-split` does, so that
//! loupe can make split models (for its tests, and to check that it loads them as one).
//!
//! Part `i` of `n` is `PREFIX-0000i-of-0000n.gguf`, a whole GGUF file of its own: the
//! first holds all of the model's metadata, each later one only the split keys; every part
//! says `split.no` (u16, from 0), `split.count` (u16) and `split.tensors.count` (i32, the
//! model's tensors over all parts), and holds the data of its own tensors. Tensors keep
//! their order, in runs of near-equal count.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::file::{GgufFile, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT};
use crate::metadata::Metadata;
use crate::parse::ALIGNMENT_KEY;
use crate::value::Value;
use crate::writer::{GgufWriter, TensorToWrite};

/// `PREFIX-0000no-of-0000count.gguf`.
pub fn split_path(prefix: &Path, no: usize, count: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("-{no:05}-of-{count:05}.gguf"));
    PathBuf::from(s)
}

/// Write `file`'s model as `count` parts named after `prefix`; returns their paths, first
/// part first. Each part is written atomically (see [`crate::atomic`]), replacing only a
/// GGUF file.
pub fn write_split(file: &GgufFile, count: usize, prefix: &Path) -> Result<Vec<PathBuf>> {
    let n_tensors = file.tensors().len();
    if count < 2 || count > n_tensors || count > 9_999 {
        return Err(GgufError::Write(format!(
            "cannot split {} tensors into {count} parts (2 to one per tensor)",
            n_tensors
        )));
    }
    let total = i32::try_from(n_tensors)
        .map_err(|_| GgufError::Write(format!("{n_tensors} tensors are too many to split")))?;
    let mut paths = Vec::with_capacity(count);
    for no in 0..count {
        let mut md = if no == 0 {
            let mut m = file.metadata().clone();
            for key in [SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT] {
                m.remove(key);
            }
            m
        } else {
            let mut m = Metadata::default();
            // The parts share the model's alignment.
            if let Some(a) = file.metadata().get(ALIGNMENT_KEY) {
                m.push(ALIGNMENT_KEY, a.clone());
            }
            m
        };
        md.push(SPLIT_NO, Value::U16(no as u16));
        md.push(SPLIT_COUNT, Value::U16(count as u16));
        md.push(SPLIT_TENSORS_COUNT, Value::I32(total));
        let mut w = GgufWriter::new(md);
        let (from, to) = (n_tensors * no / count, n_tensors * (no + 1) / count);
        for t in &file.tensors()[from..to] {
            w.add_tensor(TensorToWrite {
                name: t.name.clone(),
                ty: t.ty,
                dims: t.dims.clone(),
                data: Cow::Borrowed(file.tensor_data(t)),
            });
        }
        let path = split_path(prefix, no + 1, count);
        w.write(&path)?;
        paths.push(path);
    }
    Ok(paths)
}
