//! Every tensor of both test models, dequantized by loupe and by ggml: identical f32 bits.
//!
//! Tensors are read through loupe's GGUF reader (zero copy from the memory map) and
//! compared a few rows at a time, so memory stays near one chunk per thread.

mod common;

use std::time::Instant;

use common::{describe_mismatch, first_mismatch, model_path};
use loupe_gguf::{GgufFile, TensorInfo};
use peer::ggml_rows;

/// Elements per comparison chunk (whole rows; at least one row).
const CHUNK_ELEMS: usize = 1 << 20;

/// Compares one tensor; `Err` describes the first difference.
fn check_tensor(file: &GgufFile, t: &TensorInfo) -> Result<(), String> {
    let what = format!("{} ({}, {})", t.name, t.ty, t.shape_string());
    let row_len = t.dims[0] as usize;
    let n = t.n_elements() as usize;
    let ggml_bytes = ggml_rows::row_size(t.ty, n).map_err(|e| format!("{what}: {e}"))?;
    if ggml_bytes as u64 != t.n_bytes() {
        return Err(format!(
            "{what}: loupe sizes it {} bytes, ggml {ggml_bytes}",
            t.n_bytes()
        ));
    }
    let data = file.tensor_data(t);
    let row_bytes = ggml_rows::row_size(t.ty, row_len).map_err(|e| format!("{what}: {e}"))?;
    let rows_per_chunk = (CHUNK_ELEMS / row_len).max(1);
    for (c, bytes) in data.chunks(rows_per_chunk * row_bytes).enumerate() {
        let elems = bytes.len() / row_bytes * row_len;
        let g = ggml_rows::dequantize_row(t.ty, bytes, elems)
            .map_err(|e| format!("{what}: ggml: {e}"))?;
        let l = common::loupe_dequantize(t.ty, bytes, elems)
            .map_err(|e| format!("{what}: loupe: {e}"))?;
        if let Some(i) = first_mismatch(&g, &l, false) {
            let at = c * rows_per_chunk * row_len + i;
            return Err(format!(
                "{what}: row {}, column {}: {}",
                at / row_len,
                at % row_len,
                describe_mismatch(i, &g, &l)
            ));
        }
    }
    Ok(())
}

fn check_model(file_name: &str) {
    let path = model_path(file_name);
    let t0 = Instant::now();
    let file = GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("loupe cannot open {}: {e}", path.display()));
    let tensors = file.tensors();
    assert!(!tensors.is_empty(), "{file_name}: no tensors");

    // Two workers (CI has two cores), tensors dealt out by index.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let results: Vec<(usize, u64, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let file = &file;
                s.spawn(move || {
                    let (mut count, mut elems, mut failures) = (0, 0u64, Vec::new());
                    for t in tensors.iter().skip(w).step_by(workers) {
                        if let Err(e) = check_tensor(file, t) {
                            failures.push(e);
                        }
                        count += 1;
                        elems += t.n_elements();
                    }
                    (count, elems, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let count: usize = results.iter().map(|r| r.0).sum();
    let elems: u64 = results.iter().map(|r| r.1).sum();
    let failures: Vec<String> = results.into_iter().flat_map(|r| r.2).collect();
    let mut types: Vec<String> = tensors.iter().map(|t| t.ty.to_string()).collect();
    types.sort();
    types.dedup();
    eprintln!(
        "{file_name}: {count} tensors, {elems} values ({}) compared in {:.1?}",
        types.join(" "),
        t0.elapsed()
    );
    assert_eq!(count, tensors.len());
    assert!(
        failures.is_empty(),
        "{file_name}: {} tensors differ between loupe and ggml:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemma_tensors_match_ggml() {
    check_model(common::GEMMA);
}

#[test]
fn qwen_tensors_match_ggml() {
    check_model(common::QWEN);
}
