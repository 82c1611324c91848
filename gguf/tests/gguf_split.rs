//! A model split into parts (llama.cpp's `gguf-split` layout) opens from its first part as
//! one file: the first part's metadata, every part's tensors, each tensor's bytes from its
//! own part. Bad splits are refused with the file and the field.

mod common;

use std::path::{Path, PathBuf};

use loupe_gguf::split::{split_path, write_split};
use loupe_gguf::{GgufFile, GgufWriter, Value};

/// A model of the sample tensors, and its split into `n` parts under `dir`.
fn split_model(dir: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let whole = dir.join("m.gguf");
    let mut w = GgufWriter::new(common::every_value_metadata());
    for t in common::sample_tensors() {
        w.add_tensor(t);
    }
    w.write(&whole).unwrap();
    let parts = write_split(&GgufFile::open(&whole).unwrap(), n, &dir.join("m")).unwrap();
    (whole, parts)
}

fn err(path: &Path) -> String {
    GgufFile::open(path).unwrap_err().to_string()
}

#[test]
fn a_split_model_opens_as_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let n = common::sample_tensors().len().min(3);
    let (whole, parts) = split_model(dir.path(), n);
    assert_eq!(parts[0], dir.path().join("m-00001-of-00003.gguf"));
    let a = GgufFile::open(&whole).unwrap();
    let b = GgufFile::open(&parts[0]).unwrap();
    assert_eq!(b.part_count(), n);
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!((&x.name, x.ty, &x.dims), (&y.name, y.ty, &y.dims));
        assert_eq!(a.tensor_data(x), b.tensor_data(y), "{}", x.name);
    }
    assert!(b.tensors().iter().any(|t| t.part == n - 1));
    // The model's metadata is the first part's, with the split keys added.
    for (k, v) in a.metadata().iter() {
        assert_eq!(b.metadata().get(k), Some(v), "{k}");
    }
    assert_eq!(b.metadata().get("split.count"), Some(&Value::U16(n as u16)));
    let sizes: u64 = parts
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(b.file_size(), sizes);
}

#[test]
fn bad_splits_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_, parts) = split_model(dir.path(), 3);
    // A later part is not the model.
    let e = err(&parts[1]);
    assert!(
        e.contains("m-00002-of-00003.gguf: split.no: this is part 2 of 3"),
        "{e}"
    );

    // A missing part.
    let moved = dir.path().join("elsewhere.gguf");
    std::fs::rename(&parts[2], &moved).unwrap();
    let e = err(&parts[0]);
    assert!(
        e.contains("m-00003-of-00003.gguf: split.count: part 3 of 3 is missing"),
        "{e}"
    );
    std::fs::rename(&moved, &parts[2]).unwrap();

    // A part of a split into another count, under this model's name.
    let other = tempfile::tempdir().unwrap();
    let (_, four) = split_model(other.path(), 4);
    std::fs::copy(&four[2], &parts[2]).unwrap();
    let e = err(&parts[0]);
    assert!(
        e.contains("m-00003-of-00003.gguf: split.count: 4, but the first part says 3"),
        "{e}"
    );

    // Parts of different models with the same count: the first half of this one, the
    // second half of a model without its last tensor, which holds a tensor of the first half.
    let mut w = GgufWriter::new(common::every_value_metadata());
    let mut fewer = common::sample_tensors();
    fewer.pop();
    for t in fewer {
        w.add_tensor(t);
    }
    let b = other.path().join("b.gguf");
    w.write(&b).unwrap();
    let b_parts = write_split(&GgufFile::open(&b).unwrap(), 2, &other.path().join("b")).unwrap();
    let (_, a_parts) = split_model(other.path(), 2);
    let mixed = dir.path().join("x-00001-of-00002.gguf");
    std::fs::copy(&a_parts[0], &mixed).unwrap();
    std::fs::copy(&b_parts[1], split_path(&dir.path().join("x"), 2, 2)).unwrap();
    let e = err(&mixed);
    assert!(
        e.contains("x-00001-of-00002.gguf: split.tensors.count")
            && e.contains("parts of different models"),
        "{e}"
    );
}
