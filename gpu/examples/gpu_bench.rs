//! Matmul speed of the GPU kernels: `cargo run -p loupe-gpu --release --example gpu_bench
//! -- ROWS COLS BATCH [TYPES] [REPS]` on the adapter LOUPE_GPU names (default auto; `software`
//! for lavapipe). Prints weight bytes read per second and multiply-adds per nanosecond.

use std::time::Instant;

use loupe_gpu::{Gpu, GpuChoice, MatmulJob, SHADER_TYPES};
use loupe_quant::{quantize_row, GgmlType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (rows, cols, b) = (num(0, 4096), num(1, 4096), num(2, 1));
    let types: Vec<GgmlType> = match args.get(3) {
        Some(list) => list
            .split(',')
            .map(|t| GgmlType::from_name(t).expect("a type name"))
            .collect(),
        None => SHADER_TYPES.to_vec(),
    };
    let reps = num(4, 6);
    let choice: GpuChoice = std::env::var("LOUPE_GPU")
        .unwrap_or_else(|_| "auto".into())
        .parse()
        .unwrap();
    let gpu = Gpu::open(choice).unwrap().expect("no adapter");
    println!("{} ({})", gpu.summary().name, gpu.summary().backend);
    let src: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x: Vec<f32> = (0..b * cols)
        .map(|i| ((i * 104729) % 997) as f32 / 498.0 - 1.0)
        .collect();
    for ty in types {
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut row = vec![0u8; row_bytes];
        quantize_row(ty, &src, &mut row).unwrap();
        let w: Vec<u8> = (0..rows).flat_map(|_| row.iter().copied()).collect();
        let m = gpu.upload(ty, rows, cols, &w).unwrap();
        let mut out = vec![0f32; b * rows];
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            gpu.matmul(
                &x,
                b,
                &mut [MatmulJob {
                    w: &m,
                    out: &mut out,
                }],
            )
            .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{ty:>6} {rows}x{cols} b={b}: {:8.3} ms, {:7.1} GB/s of weights, {:8.2} MAC/ns",
            best * 1e3,
            w.len() as f64 / best / 1e9,
            (rows * cols * b) as f64 / best / 1e9
        );
    }
}
