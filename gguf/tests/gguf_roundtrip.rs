//! The writer and reader agree: read(write(x)) == x for every value type, tensors and
//! alignment included; writes are atomic.

mod common;

use std::borrow::Cow;

use loupe_gguf::{parse, GgufFile, GgufWriter, TensorToWrite, Value};
use loupe_quant::GgmlType;

#[test]
fn every_value_type_and_tensor_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new(common::every_value_metadata());
    for t in common::sample_tensors() {
        w.add_tensor(t);
    }
    w.write(&path).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata(), &common::every_value_metadata());
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    let want = common::sample_tensors();
    assert_eq!(f.tensors().len(), want.len());
    for (got, want) in f.tensors().iter().zip(&want) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.ty, want.ty);
        assert_eq!(got.dims, want.dims);
        assert_eq!(got.offset % 32, 0);
        assert_eq!(f.tensor_data(got), &want.data[..], "{}", got.name);
    }
    // Nothing but the file itself is left in the folder.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["m.gguf"]);
}

#[test]
fn released_tensor_pages_read_back_the_same() {
    // A tensor spanning several pages, between two others.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    let mut w = GgufWriter::new(common::every_value_metadata());
    let sizes = [100usize, 5 * 4096 + 123, 300];
    for (i, n) in sizes.into_iter().enumerate() {
        let data: Vec<u8> = (0..n * 4).map(|b| (b * 7 + i) as u8).collect();
        w.add_tensor(TensorToWrite {
            name: format!("t{i}"),
            ty: GgmlType::F32,
            dims: vec![n as u64],
            data: Cow::Owned(data),
        });
    }
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let before: Vec<Vec<u8>> = f
        .tensors()
        .iter()
        .map(|t| f.tensor_data(t).to_vec())
        .collect();
    f.release(f.tensor_data(&f.tensors()[1]));
    f.release(&before[0]); // not from the map: ignored
    for (t, want) in f.tensors().iter().zip(&before) {
        assert_eq!(f.tensor_data(t), &want[..], "{}", t.name);
    }
}

#[test]
fn custom_alignment_is_honoured_both_ways() {
    let mut md = common::every_value_metadata();
    md.push("general.alignment", Value::U32(256));
    let mut w = GgufWriter::new(md.clone());
    for t in common::sample_tensors() {
        w.add_tensor(t);
    }
    let bytes = w.to_bytes().unwrap();
    let d = parse(&bytes).unwrap();
    assert_eq!(d.alignment, 256);
    assert_eq!(d.data_offset % 256, 0);
    assert!(d.tensors.iter().all(|t| t.offset % 256 == 0));
    assert_eq!(d.metadata, md);
}

#[test]
fn nan_and_infinite_floats_keep_their_bits() {
    let mut md = loupe_gguf::Metadata::default();
    md.push("x.nan", Value::F32(f32::from_bits(0x7fc0_1234)));
    md.push("x.inf", Value::F64(f64::NEG_INFINITY));
    let bytes = GgufWriter::new(md).to_bytes().unwrap();
    let d = parse(&bytes).unwrap();
    match d.metadata.get("x.nan") {
        Some(Value::F32(x)) => assert_eq!(x.to_bits(), 0x7fc0_1234),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.metadata.get("x.inf"),
        Some(&Value::F64(f64::NEG_INFINITY))
    );
}

#[test]
fn writer_refuses_inconsistent_tensors_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let mut w = GgufWriter::default();
    w.add_tensor(TensorToWrite {
        name: "short".into(),
        ty: GgmlType::Q8_0,
        dims: vec![32, 2],
        data: Cow::Owned(vec![0; 34]),
    });
    let e = w.write(&path).unwrap_err().to_string();
    assert!(e.contains("\"short\"") && e.contains("68 bytes"), "{e}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    let mut w = GgufWriter::default();
    for name in ["a", "a"] {
        w.add_tensor(TensorToWrite {
            name: name.into(),
            ty: GgmlType::F32,
            dims: vec![1],
            data: Cow::Owned(vec![0; 4]),
        });
    }
    assert!(w.to_bytes().unwrap_err().to_string().contains("twice"));
}

#[test]
fn failed_write_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, b"previous contents").unwrap();
    let mut w = GgufWriter::default();
    w.metadata.push("general.alignment", Value::U32(3));
    assert!(w.write(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"previous contents");
}

#[test]
fn unsupported_type_fails_on_use_not_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, common::sample_file()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let odd = f.tensor("odd.weight").unwrap();
    let e = f.dequantize(odd).unwrap_err().to_string();
    assert!(
        e.contains("odd.weight") && e.contains("type IQ2_XXS (id 16) is not supported"),
        "{e}"
    );
    let q4k = f.tensor("ffn.weight").unwrap();
    assert_eq!(f.dequantize(q4k).unwrap().len(), 512);
}

/// Seeds for the fuzzer (`fuzz/README.md`): small valid files it can mutate from.
/// Run on purpose: `cargo test -p loupe-gguf --test gguf_roundtrip -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes the fuzz seed corpus; run by hand"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gguf_parse");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sample.gguf"), common::sample_file()).unwrap();
    let mut md = common::every_value_metadata();
    md.push("general.alignment", Value::U32(64));
    let mut w = GgufWriter::new(md);
    w.add_tensor(common::sample_tensors().remove(1));
    std::fs::write(dir.join("aligned64.gguf"), w.to_bytes().unwrap()).unwrap();
    std::fs::write(
        dir.join("empty.gguf"),
        GgufWriter::default().to_bytes().unwrap(),
    )
    .unwrap();
}
