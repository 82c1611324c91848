//! Nanoseconds per weight row for the dot kernels, scalar against AVX2, AVX-VNNI (where
//! the CPU has it) and AVX-512.
//!
//! `cargo run --release -p loupe-quant --example dot_bench`
//!
//! Each measurement dots one quantized activation row with 256 weight rows (at most
//! ~1 MB, so mostly cache-resident: this times the kernels, not memory bandwidth), repeated
//! for about 0.2 s, best of three. K-quant rows need a multiple of 256 elements, so they
//! are timed at 1024 instead of 896 (ggml stores such 896-wide tensors as Q5_0/Q8_0).

use std::hint::black_box;
use std::time::{Duration, Instant};

use loupe_quant::{kernels, GgmlType, Kernels};

const ROWS: usize = 256;

fn main() {
    let tables: Vec<&Kernels> = std::iter::once(kernels::scalar())
        .chain(kernels::avx2())
        .chain(kernels::avxvnni())
        .chain(kernels::avx512())
        .collect();
    println!("kernels in use by default: {}", kernels().name());
    print!("{:<6} {:>6}", "type", "n");
    for k in &tables {
        print!(" {:>12}", format!("{} ns", k.name()));
    }
    println!(" {:>8}", "speedup");
    for (ty, sizes) in [
        (GgmlType::Q4_K, [1024, 4864]),
        (GgmlType::Q6_K, [1024, 4864]),
        (GgmlType::Q5_0, [896, 4864]),
        (GgmlType::Q8_0, [896, 4864]),
        (GgmlType::Q4_0, [896, 4864]),
        (GgmlType::Q4_1, [896, 4864]),
        (GgmlType::Q5_1, [896, 4864]),
        (GgmlType::IQ4_NL, [896, 4864]),
        (GgmlType::Q2_K, [1024, 4864]),
        (GgmlType::Q3_K, [1024, 4864]),
        (GgmlType::Q5_K, [1024, 4864]),
        (GgmlType::IQ4_XS, [1024, 4864]),
        (GgmlType::F16, [896, 4864]),
        (GgmlType::BF16, [896, 4864]),
    ] {
        for n in sizes {
            let times: Vec<f64> = tables.iter().map(|k| ns_per_row(k, ty, n)).collect();
            print!("{:<6} {:>6}", ty.to_string(), n);
            for t in &times {
                print!(" {t:>12.1}");
            }
            // The fastest table against scalar.
            let best = times.iter().copied().fold(f64::MAX, f64::min);
            println!(" {:>7.1}x", times[0] / best);
        }
    }
}

fn ns_per_row(k: &Kernels, ty: GgmlType, n: usize) -> f64 {
    let act_ty = loupe_quant::vec_dot_type(ty).unwrap();
    // Weights: a smooth pseudo-random matrix quantized by loupe where it can, else
    // random bytes with a sane f16 scale in the first two bytes of each block.
    let row_bytes = ty.row_bytes(n as u64).unwrap() as usize;
    let mut w = vec![0u8; ROWS * row_bytes];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    if loupe_quant::can_quantize(ty) {
        let x: Vec<f32> = (0..ROWS * n)
            .map(|_| (next() >> 40) as f32 / 16777216.0 - 0.5)
            .collect();
        loupe_quant::quantize_row(ty, &x, &mut w).unwrap();
    } else {
        w.iter_mut().for_each(|b| *b = next() as u8);
        // Q4_K: d, dmin at bytes 0..4; Q6_K: d at the end of the block. Any finite
        // values do; 0x2000 is a small positive f16.
        for blk in w.chunks_exact_mut(ty.block_bytes()) {
            match ty {
                GgmlType::Q6_K => blk[208..210].copy_from_slice(&0x2000u16.to_le_bytes()),
                _ => blk[0..4].copy_from_slice(&[0, 0x20, 0, 0x20]),
            }
        }
    }
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
    let mut act = vec![0u8; act_ty.row_bytes(n as u64).unwrap() as usize];
    k.quantize_activation(act_ty, &x, &mut act).unwrap();
    let mut out = vec![0f32; ROWS];

    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut iters = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            k.matmul(
                ty,
                black_box(&w),
                ROWS,
                n,
                black_box(&act),
                1,
                0..ROWS,
                &mut out,
            )
            .unwrap();
            black_box(&out);
            iters += 1;
        }
        let ns = start.elapsed().as_nanos() as f64 / (iters as f64 * ROWS as f64);
        best = best.min(ns);
    }
    best
}
