//! loupe's dot products and activation quantizers against ggml-cpu's own, as llama.cpp
//! runs them (the CPU type traits: `from_float`, `vec_dot`, `vec_dot_type`).
//!
//! - Activations: for every partner type (Q8_0, Q8_1, Q8_K, F16, BF16, F32) loupe's
//!   `quantize_activation` must equal ggml-cpu's `from_float` byte for byte. On x86 with
//!   AVX2 ggml-cpu's Q8_0/Q8_1 quantizers round halves to even with a `127 / amax`
//!   multiplier, unlike `quantize_row_q8_0_ref`; loupe follows the run-time one, and the
//!   test counts how many blocks the `_ref` rounding would have changed.
//! - Dots: for every weight type, rows quantized by ggml, one activation row each; loupe's
//!   scalar and dispatched kernels against ggml's `vec_dot` on the same bytes. Bound:
//!   |loupe - ggml| <= 1e-5 * T with T = sum |w_i * a_i| over the dequantized rows (the
//!   summation orders differ; the integer parts are exact on both sides). The largest
//!   |diff| / T and |diff| / |ggml| per type are printed (`-- --nocapture`).
//!
//! Run with `cargo test --release --test dot_vs_ggml -- --nocapture` from peer/.

mod common;

use common::Rng;
use loupe_quant::{dequantize_row, kernels, GgmlType, Kernels};
use peer::{ggml_rows, sys};

const TYPES: [GgmlType; 15] = {
    use GgmlType::*;
    [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ]
};

fn cpu_traits(ty: GgmlType) -> sys::ggml_type_traits_cpu {
    peer::init();
    // SAFETY: every GgmlType id is below GGML_TYPE_COUNT in this pinned ggml; ggml-cpu
    // returns a pointer into its static type table, copied out here.
    unsafe { *sys::ggml_get_type_traits_cpu(ty.id() as sys::ggml_type) }
}

/// `bytes` copied into 8-byte aligned words: C reads blocks with f16/f32 fields.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut w = vec![0u64; bytes.len().div_ceil(8)];
    for (w, b) in w.iter_mut().zip(bytes.chunks(8)) {
        let mut le = [0u8; 8];
        le[..b.len()].copy_from_slice(b);
        *w = u64::from_ne_bytes(le);
    }
    w
}

/// ggml-cpu's `vec_dot` for weight type `ty` over `n` elements.
fn ggml_vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let t = cpu_traits(ty);
    let f = t
        .vec_dot
        .unwrap_or_else(|| panic!("ggml-cpu has no vec_dot for {ty}"));
    assert_eq!(w.len(), ggml_rows::row_size(ty, n).unwrap());
    let act_ty = GgmlType::from_id(t.vec_dot_type).unwrap();
    assert_eq!(a.len(), ggml_rows::row_size(act_ty, n).unwrap());
    let (w, a) = (aligned(w), aligned(a));
    let mut s = 0f32;
    // SAFETY: w and a hold exactly one row of n elements of `ty` and of its vec_dot_type
    // (lengths checked against ggml_row_size above), 8-byte aligned; nrc = 1 asks for one
    // result in `s`, and the strides are unused then.
    unsafe {
        f(
            n as i32,
            &mut s,
            0,
            w.as_ptr().cast(),
            0,
            a.as_ptr().cast(),
            0,
            1,
        )
    };
    s
}

fn normal_row(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f64> {
    let mut y = vec![0f32; n];
    dequantize_row(ty, bytes, &mut y).unwrap();
    y.into_iter().map(f64::from).collect()
}

#[test]
fn loupe_partner_types_match_ggml_cpu() {
    for ty in TYPES {
        let t = cpu_traits(ty);
        let ggml_partner = GgmlType::from_id(t.vec_dot_type).unwrap();
        assert_eq!(loupe_quant::vec_dot_type(ty), Some(ggml_partner), "{ty}");
    }
}

#[test]
fn activation_quantization_matches_ggml_cpu_from_float() {
    use GgmlType::*;
    let mut rng = Rng(0xac7_1fa7e);
    let n = 4864;
    let mut rows: Vec<(&str, Vec<f32>)> = vec![
        ("normal", normal_row(&mut rng, n)),
        (
            "normal 1e-3",
            normal_row(&mut rng, n).iter().map(|x| x * 1e-3).collect(),
        ),
        (
            "normal 1e4",
            normal_row(&mut rng, n).iter().map(|x| x * 1e4).collect(),
        ),
        ("zeros", vec![0.0; n]),
    ];
    // Halves after scaling: amax 127 in each 32-block makes the multiplier exactly 1.
    let mut ties: Vec<f32> = (0..n).map(|i| (i % 64) as f32 - 31.5).collect();
    for b in ties.chunks_exact_mut(32) {
        b[0] = 127.0;
    }
    rows.push(("exact ties", ties));

    for ty in [Q8_0, Q8_1, Q8_K, F16, BF16, F32] {
        let bytes = ty.row_bytes(n as u64).unwrap() as usize;
        let mut ref_differs = 0;
        for (name, x) in &rows {
            let ggml = ggml_rows::quantize_row_cpu(ty, x).unwrap();
            for k in std::iter::once(kernels::scalar()).chain(kernels::avx2()) {
                let mut ours = vec![0u8; bytes];
                k.quantize_activation(ty, x, &mut ours).unwrap();
                if let Some(i) = ours.iter().zip(&ggml).position(|(a, b)| a != b) {
                    panic!(
                        "{ty} {name} ({}): loupe differs from ggml-cpu's from_float at byte {i} \
                         (block {})",
                        k.name(),
                        i / ty.block_bytes()
                    );
                }
            }
            // What the reference quantizer (ggml's _ref, loupe's quantize_row) would give.
            let mut reference = vec![0u8; bytes];
            loupe_quant::quantize_row(ty, x, &mut reference).unwrap();
            ref_differs += reference
                .chunks_exact(ty.block_bytes())
                .zip(ggml.chunks_exact(ty.block_bytes()))
                .filter(|(a, b)| a != b)
                .count();
        }
        println!(
            "{ty:>5}: loupe == ggml-cpu from_float on all {} rows; the _ref quantizer differs \
             in {ref_differs} of {} blocks",
            rows.len(),
            rows.len() * n / ty.block_elems()
        );
    }
}

#[test]
fn vec_dot_matches_ggml_cpu() {
    let mut rng = Rng(0x0d07_0f99);
    let tables: Vec<&Kernels> = std::iter::once(kernels::scalar())
        .chain(kernels::avx2())
        .collect();
    println!("ggml: {}", peer::system_info());
    println!(
        "loupe tables: {:?}",
        tables.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    for ty in TYPES {
        let act_ty = loupe_quant::vec_dot_type(ty).unwrap();
        let sizes: Vec<usize> = [256, 896, 4864]
            .into_iter()
            .filter(|n| n % ty.block_elems() == 0)
            .collect();
        let mut worst_t = vec![0f64; tables.len()];
        let mut worst_g = vec![0f64; tables.len()];
        let mut count = 0;
        for &n in &sizes {
            // Eight weight rows from ggml's quantizer, one activation row per weight row.
            let x: Vec<f32> = (0..8 * n).map(|_| rng.normal()).collect();
            let w_all = ggml_rows::quantize_rows(ty, &x, n).unwrap();
            let row_bytes = w_all.len() / 8;
            for w in w_all.chunks_exact(row_bytes) {
                let a = normal_row(&mut rng, n);
                let act = ggml_rows::quantize_row_cpu(act_ty, &a).unwrap();
                let g = ggml_vec_dot(ty, n, w, &act);
                let t: f64 = dequant(ty, w, n)
                    .iter()
                    .zip(dequant(act_ty, &act, n))
                    .map(|(w, a)| (w * a).abs())
                    .sum();
                for (i, k) in tables.iter().enumerate() {
                    let l = k.vec_dot(ty, n, w, &act).unwrap();
                    let diff = (l as f64 - g as f64).abs();
                    assert!(
                        diff <= 1e-5 * t,
                        "{ty}, n {n}, {}: loupe {l}, ggml {g}, |diff| {diff:e} > 1e-5 * T ({t:e})",
                        k.name()
                    );
                    worst_t[i] = worst_t[i].max(diff / t);
                    if g != 0.0 {
                        worst_g[i] = worst_g[i].max(diff / (g as f64).abs());
                    }
                }
                count += 1;
            }
        }
        let show = |v: &[f64]| {
            tables
                .iter()
                .zip(v)
                .map(|(k, x)| format!("{} {x:.2e}", k.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{ty:>6} x {act_ty:<4} ({count} rows, n in {sizes:?}): max |diff|/T: {}; max |diff|/|ggml|: {}",
            show(&worst_t),
            show(&worst_g)
        );
    }
}
