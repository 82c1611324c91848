//! Block formats, bit for bit against ggml.
//!
//! For every type loupe supports: seeded rows at several scales (zeros, tiny, huge,
//! outliers, one-signed, constant) are quantized by ggml, then dequantized by ggml and by
//! loupe, and the f32 bit patterns must be identical. Random block bytes (any scale bits,
//! including f16 Inf/NaN) are dequantized by both too; there two NaNs count as equal
//! whatever their payload, every other value must match bit for bit.
//! For every type loupe can quantize, its bytes must equal ggml's.
//!
//! What "ggml" means per type (see peer::ggml_rows): the type traits' `to_float` and
//! `ggml_quantize_chunk` (no imatrix), except
//! - Q8_K: `dequantize_row_q8_K` and `quantize_row_q8_K_ref` (ggml-base exports);
//! - Q8_1: `quantize_row_q8_1_ref`; ggml has no Q8_1 dequantize, so the reference is
//!   `q as f32 * d` with d converted by ggml's `ggml_fp16_to_fp32`;
//! - F32: the bytes themselves.

mod common;

use common::{describe_mismatch, first_mismatch, Rng};
use loupe_quant::{GgmlType, ALL_TYPES};
use peer::ggml_rows;

/// Elements per test row: a whole number of blocks for every block size (1…256).
const N: usize = 1024;

/// Named rows of N values, from a fixed seed.
fn cases() -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Rng(0x10_0c_a1);
    let mut normal = |scale: f32| (0..N).map(|_| rng.normal() * scale).collect::<Vec<f32>>();
    let mut cases = vec![
        ("normal 1", normal(1.0)),
        ("normal 1e-3", normal(1e-3)),
        ("normal 1e3", normal(1e3)),
        ("normal 1e-8", normal(1e-8)),
        ("normal 1e5 (f16 overflow)", normal(1e5)),
        ("zeros", vec![0.0; N]),
        ("constant 0.5", vec![0.5; N]),
        ("constant -3", vec![-3.0; N]),
    ];
    let mut rng = Rng(0xdead_beef);
    let outliers: Vec<f32> = (0..N)
        .map(|i| {
            let x = rng.normal() * 0.01;
            if i % 97 == 3 {
                if i % 2 == 0 {
                    50.0
                } else {
                    -80.0
                }
            } else {
                x
            }
        })
        .collect();
    cases.push(("outliers", outliers));
    cases.push(("uniform [0,1)", (0..N).map(|_| rng.uniform()).collect()));
    cases.push((
        "uniform (-2,0]",
        (0..N).map(|_| -2.0 * rng.uniform()).collect(),
    ));
    // Half the blocks zero, half not: per-block scales of 0 next to normal ones.
    // Exact halves after scaling (each 32-block's max is 127, so d = 1): rounding ties,
    // where roundf (away from zero) and round-half-even disagree.
    cases.push((
        "rounding ties",
        (0..N)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    (i % 64) as f32 - 32.5
                }
            })
            .collect(),
    ));
    cases.push((
        "zero blocks",
        (0..N)
            .map(|i| if (i / 32) % 2 == 0 { 0.0 } else { rng.normal() })
            .collect(),
    ));
    cases
}

#[test]
fn dequantize_matches_ggml_bit_for_bit() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for ty in ALL_TYPES.into_iter().filter(|t| t.is_supported()) {
        assert!(
            ggml_rows::can_quantize(ty),
            "{ty}: ggml has no quantizer here to make test blocks"
        );
        for (name, row) in cases() {
            let q = ggml_rows::quantize_row(ty, &row).expect("ggml quantize");
            let g = ggml_rows::dequantize_row(ty, &q, N).expect("ggml dequantize");
            match common::loupe_dequantize(ty, &q, N) {
                Err(e) => failures.push(format!("{ty} [{name}]: loupe failed: {e}")),
                Ok(l) => {
                    if let Some(i) = first_mismatch(&g, &l, false) {
                        failures.push(format!("{ty} [{name}]: {}", describe_mismatch(i, &g, &l)));
                    }
                }
            }
            checked += 1;
        }
        // Random bytes: every bit pattern of scales, mins and quants.
        let mut rng = Rng(0xb10c_0000 + ty.id() as u64);
        for rep in 0..4 {
            let bytes = rng.bytes(ggml_rows::row_size(ty, N).unwrap());
            let g = ggml_rows::dequantize_row(ty, &bytes, N).expect("ggml dequantize");
            match common::loupe_dequantize(ty, &bytes, N) {
                Err(e) => failures.push(format!("{ty} [random bytes {rep}]: loupe failed: {e}")),
                Ok(l) => {
                    if let Some(i) = first_mismatch(&g, &l, true) {
                        failures.push(format!(
                            "{ty} [random bytes {rep}]: {}",
                            describe_mismatch(i, &g, &l)
                        ));
                    }
                }
            }
            checked += 1;
        }
    }
    eprintln!(
        "dequantize: {checked} rows checked, {} mismatches",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "loupe's dequantize differs from ggml's:\n{}",
        failures.join("\n")
    );
}

#[test]
fn quantize_matches_ggml_byte_for_byte() {
    let mut failures = Vec::new();
    let mut types = Vec::new();
    for ty in ALL_TYPES
        .into_iter()
        .filter(|&t| common::loupe_can_quantize(t))
    {
        types.push(ty);
        if !ggml_rows::can_quantize(ty) {
            failures.push(format!(
                "{ty}: loupe quantizes it but ggml has no reference here"
            ));
            continue;
        }
        for (name, row) in cases() {
            let g = ggml_rows::quantize_row(ty, &row).expect("ggml quantize");
            match common::loupe_quantize(ty, &row) {
                Err(e) => failures.push(format!("{ty} [{name}]: loupe failed: {e}")),
                Ok(l) => {
                    if let Some(i) = g.iter().zip(&l).position(|(a, b)| a != b) {
                        let bb = ty.block_bytes();
                        failures.push(format!(
                            "{ty} [{name}]: first differing byte {i} (block {}, byte {} of \
                             {bb}): ggml {:#04x}, loupe {:#04x}",
                            i / bb,
                            i % bb,
                            g[i],
                            l[i]
                        ));
                    } else if g.len() != l.len() {
                        failures.push(format!("{ty} [{name}]: {} bytes vs {}", g.len(), l.len()));
                    }
                }
            }
        }
    }
    eprintln!("quantize: types {types:?}, {} mismatches", failures.len());
    assert!(
        !types.is_empty(),
        "loupe_quant::can_quantize is true for no type"
    );
    assert!(
        failures.is_empty(),
        "loupe's quantize differs from ggml's:\n{}",
        failures.join("\n")
    );
}

/// The peer's own sanity: ggml's block geometry equals loupe's table for every type.
#[test]
fn block_geometry_matches_ggml() {
    for ty in ALL_TYPES {
        let t = ggml_rows::traits(ty);
        assert_eq!(t.name, ty.name(), "{ty}: name");
        assert_eq!(t.block_elems, ty.block_elems(), "{ty}: elements per block");
        assert_eq!(t.block_bytes, ty.block_bytes(), "{ty}: bytes per block");
    }
}

/// Not a pass/fail check of loupe: how far ggml-cpu's run-time activation quantizers
/// (what llama.cpp applies to activations before each quantized matmul on this CPU) are
/// from the `_ref` quantizers loupe is held to above. Printed with `--nocapture`; fails
/// only if a run-time quantizer writes a different length.
#[test]
fn report_cpu_activation_quantizers_vs_ref() {
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let (mut blocks, mut differ) = (0, 0);
        for (_, row) in cases() {
            let r = ggml_rows::quantize_row(ty, &row).unwrap();
            let c = ggml_rows::quantize_row_cpu(ty, &row).unwrap();
            assert_eq!(r.len(), c.len(), "{ty}");
            let bb = ty.block_bytes();
            blocks += r.len() / bb;
            differ += r
                .chunks(bb)
                .zip(c.chunks(bb))
                .filter(|(a, b)| a != b)
                .count();
        }
        eprintln!(
            "{ty}: ggml-cpu from_float differs from {}_ref in {differ} of {blocks} blocks",
            ty.name()
        );
    }
}
