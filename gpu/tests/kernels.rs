//! Every GPU matmul kernel against the CPU: on random rows quantized by `loupe-quant`,
//! odd row counts, one and many activation rows. Runs on whatever adapter
//! `LOUPE_GPU` names (default `software`: Mesa's lavapipe in CI).

mod common;

use std::sync::OnceLock;

use common::nmse;
use loupe_gpu::{Gpu, GpuOptions, MatmulJob, Reduction, SHADER_TYPES};
use loupe_quant::{dequantize_row, quantize_row, vec_dot, vec_dot_type, GgmlType};
use rand::{Rng, SeedableRng};

/// The adapter under test with its default kernels (subgroup sums where it has them).
fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| open(GpuOptions::default()))
}

/// The same adapter forced onto the fallback kernels every adapter runs.
fn gpu_fallback() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let g = open(GpuOptions {
            subgroups: false,
            ..Default::default()
        });
        assert_eq!(g.reduction(), Reduction::Shared);
        g
    })
}

/// The same adapter with the mat-vecs' reduction that the default does not take: all of
/// a workgroup's subgroups on one row where the adapter's default is a subgroup a row
/// (software drivers), or the other way round.
fn gpu_other_rows() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let split = gpu().reduction() != Reduction::SplitRow;
        let g = open(GpuOptions {
            split_rows: Some(split),
            ..Default::default()
        });
        let red = g.reduction();
        assert!(!red.subgroups() || (red == Reduction::SplitRow) == split);
        g
    })
}

/// All three, to run every check on each.
fn devices() -> [&'static Gpu; 3] {
    [gpu(), gpu_other_rows(), gpu_fallback()]
}

fn open(options: GpuOptions) -> Gpu {
    let gpu = common::open(options);
    eprintln!("testing on {:?}, {:?}", gpu.summary(), gpu.reduction());
    gpu
}

/// Rows of roughly normal values with a few outliers, as weights look.
fn random_rows(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            if rng.random_range(0..64) == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// The rows as the file stores them.
    w: Vec<u8>,
    x: Vec<f32>,
    b: usize,
}

fn case(ty: GgmlType, rows: usize, cols: usize, b: usize, seed: u64) -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut w = vec![0u8; rows * row_bytes];
    for r in 0..rows {
        let src = random_rows(&mut rng, cols);
        quantize_row(ty, &src, &mut w[r * row_bytes..(r + 1) * row_bytes]).unwrap();
    }
    // Activations without the outliers: the CPU kernels quantize them to 8 bits per
    // block, and an outlier would make that error, not the GPU's, the one measured.
    let x = (0..b * cols)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Case {
        ty,
        rows,
        cols,
        w,
        x,
        b,
    }
}

/// The CPU kernels' result (activations quantized to the format's partner, as the CPU
/// path runs) and the exact product of the dequantized weights, in f64.
fn references(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let row_bytes = c.ty.row_bytes(c.cols as u64).unwrap() as usize;
    let partner = vec_dot_type(c.ty).unwrap();
    let act_bytes = partner.row_bytes(c.cols as u64).unwrap() as usize;
    let mut cpu = Vec::new();
    let mut exact = Vec::new();
    let mut deq = vec![0f32; c.cols];
    for t in 0..c.b {
        let xr = &c.x[t * c.cols..(t + 1) * c.cols];
        let mut act = vec![0u8; act_bytes];
        quantize_row(partner, xr, &mut act).unwrap();
        for r in 0..c.rows {
            let wr = &c.w[r * row_bytes..(r + 1) * row_bytes];
            cpu.push(vec_dot(c.ty, c.cols, wr, &act).unwrap() as f64);
            dequantize_row(c.ty, wr, &mut deq).unwrap();
            exact.push(deq.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum());
        }
    }
    (cpu, exact)
}

fn run(gpu: &Gpu, c: &Case) -> Vec<f32> {
    let m = gpu.upload(c.ty, c.rows, c.cols, &c.w).unwrap();
    let mut out = vec![f32::NAN; c.b * c.rows];
    gpu.matmul(
        &c.x,
        c.b,
        &mut [MatmulJob {
            w: &m,
            out: &mut out,
        }],
    )
    .unwrap();
    out
}

fn check(c: &Case) {
    let (cpu, exact) = references(c);
    for gpu in devices() {
        let got = run(gpu, c);
        let (vs_cpu, vs_exact) = (nmse(&got, &cpu), nmse(&got, &exact));
        let red = gpu.reduction();
        eprintln!(
            "{} {}x{} b={} {red:?}: nmse vs CPU kernels {vs_cpu:.2e}, vs exact {vs_exact:.2e}",
            c.ty, c.rows, c.cols, c.b
        );
        // llama.cpp's bound for its backends; the f32 sums over dequantized weights
        // should be far closer to the exact product than that.
        assert!(vs_cpu <= 5e-4, "{} {red:?}: nmse vs CPU {vs_cpu:e}", c.ty);
        assert!(
            vs_exact <= 1e-9,
            "{} {red:?}: nmse vs exact {vs_exact:e}",
            c.ty
        );
    }
}

fn cols_for(ty: GgmlType) -> usize {
    // Two blocks and a bit for the 256-weight formats, more for the small ones.
    if ty.block_elems() == 256 {
        768
    } else {
        352
    }
}

#[test]
fn every_format_matches_the_cpu_for_one_token() {
    for (i, &ty) in SHADER_TYPES.iter().enumerate() {
        check(&case(ty, 37, cols_for(ty), 1, i as u64));
    }
}

#[test]
fn every_format_matches_the_cpu_for_a_batch() {
    // 7 rows: a partial group of the eight-row shader; 3: the four-row one.
    for (i, &ty) in SHADER_TYPES.iter().enumerate() {
        check(&case(ty, 19, cols_for(ty), 7, 100 + i as u64));
        check(&case(ty, 5, cols_for(ty), 3, 200 + i as u64));
    }
}

#[test]
fn every_format_matches_the_cpu_for_a_prompt_batch() {
    // Batches wider than the mat-vec widths take the tiled matmul (tiles of 128 weight rows
    // by 32 activation rows): 70 rows and 40 activation rows leave partial tiles both ways
    // (130 rows: a whole tile and a partial one), and the float formats' 200 columns a
    // partial step of 16.
    assert_eq!(loupe_gpu::batch_width(40), loupe_gpu::TILE_WIDTH);
    for (i, &ty) in SHADER_TYPES.iter().enumerate() {
        let cols = match ty.block_elems() {
            1 => 200,
            _ => cols_for(ty),
        };
        check(&case(ty, 70, cols, 40, 300 + i as u64));
    }
    check(&case(GgmlType::Q4_K, 130, 512, 9, 400));
}

#[test]
fn several_matrices_share_one_call() {
    let gpu = gpu();
    let a = case(GgmlType::Q4_K, 33, 512, 2, 7);
    let mut b = case(GgmlType::Q8_0, 9, 512, 2, 8);
    b.x = a.x.clone();
    let (ma, mb) = (
        gpu.upload(a.ty, a.rows, a.cols, &a.w).unwrap(),
        gpu.upload(b.ty, b.rows, b.cols, &b.w).unwrap(),
    );
    let (mut oa, mut ob) = (vec![0.0; 2 * 33], vec![0.0; 2 * 9]);
    gpu.matmul(
        &a.x,
        2,
        &mut [
            MatmulJob {
                w: &ma,
                out: &mut oa,
            },
            MatmulJob {
                w: &mb,
                out: &mut ob,
            },
        ],
    )
    .unwrap();
    assert_eq!(oa, run(gpu, &a));
    assert_eq!(ob, run(gpu, &b));
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let c = case(GgmlType::Q4_0, 4, 64, 1, 9);
    assert!(gpu.upload(c.ty, 5, c.cols, &c.w).is_err());
    assert!(gpu.upload(GgmlType::IQ2_XXS, 4, 256, &[0; 264]).is_err());
    assert!(gpu.upload(GgmlType::F32, 1, 7, &[0; 28]).is_err());
    let m = gpu.upload(c.ty, c.rows, c.cols, &c.w).unwrap();
    let mut out = vec![0.0; 4];
    assert!(gpu
        .matmul(
            &c.x[..32],
            1,
            &mut [MatmulJob {
                w: &m,
                out: &mut out
            }]
        )
        .is_err());
}
