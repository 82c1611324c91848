//! Stacked matrices ([`Gpu::upload_stacked`]): one dispatch over matrices that take the
//! same input gives each its own product, bias and output bit for bit as a dispatch over
//! that matrix uploaded alone does: in whole layers (every kernel width, int8 and float,
//! with subgroups and without, outputs in any order in the arena) and in a matmul call
//! (the products one after another), also with the matrices split into parts that
//! straddle them and rows whose bytes end mid-word. Runs on the adapter `LOUPE_GPU` names
//! (default `software`: Mesa's lavapipe in CI).

mod common;

use common::open;
use loupe_gpu::{
    ActRounding, Batch, Gpu, GpuMatrix, GpuOptions, MatmulJob, Target, Workspace, WorkspaceSpec,
};
use loupe_quant::GgmlType;
use rand::{Rng, SeedableRng};

/// Rows of the three stacked matrices (Q, K and V of a layer in miniature).
const STACK: [usize; 3] = [37, 13, 21];

/// `rows` random rows of `cols` in `ty`, as the file stores them.
fn matrix(rng: &mut impl Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut w = vec![0u8; rows * row_bytes];
    for r in w.chunks_exact_mut(row_bytes) {
        let src: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        loupe_quant::quantize_row(ty, &src, r).unwrap();
    }
    w
}

fn bits(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The formats and widths to stack: Q4_0 rows of 54 bytes (so a matrix of an odd row
/// count ends mid-word), the K-quants the models use, and F16.
const CASES: [(GgmlType, usize); 4] = [
    (GgmlType::Q4_0, 96),
    (GgmlType::Q4_K, 256),
    (GgmlType::Q6_K, 256),
    (GgmlType::F16, 10 * 8),
];

/// Each case's three matrices uploaded alone and stacked, on `gpu`.
fn uploads(gpu: &Gpu, seed: u64) -> Vec<(GgmlType, usize, Vec<GpuMatrix>, GpuMatrix)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    CASES
        .iter()
        .map(|&(ty, cols)| {
            let data: Vec<Vec<u8>> = STACK
                .iter()
                .map(|&rows| matrix(&mut rng, ty, rows, cols))
                .collect();
            let alone = STACK
                .iter()
                .zip(&data)
                .map(|(&rows, d)| gpu.upload(ty, rows, cols, d).unwrap())
                .collect();
            let pieces: Vec<(usize, &[u8])> =
                STACK.iter().zip(&data).map(|(&r, d)| (r, &d[..])).collect();
            let stacked = gpu.upload_stacked(ty, cols, &pieces).unwrap();
            assert_eq!(stacked.stacked, STACK);
            (ty, cols, alone, stacked)
        })
        .collect()
}

/// The adapter with subgroups and without, each with whole matrices and with parts of
/// at most 2000 bytes (9 to 36 rows here, so parts begin and end inside the matrices).
fn devices() -> Vec<(String, Gpu)> {
    let mut out = Vec::new();
    for subgroups in [true, false] {
        for part_bytes in [None, Some(2000)] {
            let gpu = open(GpuOptions {
                subgroups,
                part_bytes,
                ..GpuOptions::default()
            });
            let name = format!("{:?}, parts of {part_bytes:?} bytes", gpu.reduction());
            out.push((name, gpu));
        }
    }
    out
}

/// A matrix and its outputs (target, bias), one per matrix stacked in it.
type Job<'a> = (&'a GpuMatrix, &'a [(Target, Option<u32>)]);

#[test]
fn one_dispatch_over_stacked_matrices_is_each_matrix_alone_in_whole_layers() {
    for (name, gpu) in devices() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // The first and last matrices have biases; the consts hold them one after another.
        let biases: Vec<f32> = (0..STACK[0] + STACK[2])
            .map(|_| rng.random_range(-4.0f32..4.0))
            .collect();
        let bias_at = [Some(0), None, Some(STACK[0] as u32)];
        for (ty, cols, alone, stacked) in uploads(&gpu, 5) {
            for b in [1usize, 5, 40] {
                let x: Vec<f32> = (0..b * cols)
                    .map(|_| rng.random_range(-2.0f32..2.0))
                    .collect();
                // Outputs in the arena after the input, in the order V, Q, K.
                let region = |n: usize| (b * n).next_multiple_of(64) as u32;
                let v_at = region(cols);
                let q_at = v_at + region(STACK[2]);
                let k_at = q_at + region(STACK[0]);
                let arena = (k_at + region(STACK[1])) as usize;
                let outs = [q_at, k_at, v_at];
                let rounding = ActRounding::for_weights(ty).unwrap();
                let mut ws = Workspace::new(
                    &gpu,
                    WorkspaceSpec {
                        arena,
                        xin: b * cols,
                        logits: 0,
                        consts: &biases,
                        kv: Vec::new(),
                    },
                )
                .unwrap();
                let red = gpu.reduction();
                // The matrices' products (each with its outputs) in one batch.
                let mut run = |jobs: &[Job<'_>]| {
                    let before = ws.int8_dispatches();
                    let mut batch = Batch::new();
                    batch.upload(0, &x);
                    batch.quantize(0, 0, (b as u32, cols as u32), None, rounding);
                    for &(m, targets) in jobs {
                        batch.matmul(m, 0, b as u32, targets, red);
                    }
                    let at: Vec<usize> = outs
                        .iter()
                        .zip(STACK)
                        .map(|(&o, rows)| batch.read_arena(o, (b * rows) as u32))
                        .collect();
                    let mut back = Vec::new();
                    ws.run(&gpu, batch, &mut back).unwrap();
                    let got: Vec<Vec<u32>> = at
                        .iter()
                        .zip(STACK)
                        .map(|(&a, rows)| bits(&back[a..a + 4 * b * rows]))
                        .collect();
                    (got, ws.int8_dispatches() - before)
                };
                let targets: Vec<(Target, Option<u32>)> = outs
                    .iter()
                    .zip(bias_at)
                    .map(|(&o, bias)| (Target::Arena(o), bias))
                    .collect();
                let (one, int8_one) = run(&[(&stacked, &targets)]);
                let each: Vec<_> = alone.iter().zip(targets.chunks(1)).collect();
                let (each, int8_each) = run(&each);
                let case = format!("{name}: {ty} b={b}");
                assert_eq!(int8_one > 0, int8_each > 0, "{case}: int8 on one path only");
                for (i, (o, e)) in one.iter().zip(&each).enumerate() {
                    assert!(o == e, "{case}: matrix {i} differs from its own dispatch");
                }
            }
        }
    }
}

#[test]
fn a_matmul_call_over_a_stack_returns_each_product_in_turn() {
    for (name, gpu) in devices() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for (ty, cols, alone, stacked) in uploads(&gpu, 7) {
            for b in [1usize, 6, 33] {
                let x: Vec<f32> = (0..b * cols)
                    .map(|_| rng.random_range(-2.0f32..2.0))
                    .collect();
                let total: usize = STACK.iter().sum();
                let mut one = vec![0f32; b * total];
                gpu.matmul(
                    &x,
                    b,
                    &mut [MatmulJob {
                        w: &stacked,
                        out: &mut one,
                    }],
                )
                .unwrap();
                let mut each: Vec<Vec<f32>> = STACK.iter().map(|r| vec![0f32; b * r]).collect();
                let mut jobs: Vec<MatmulJob<'_>> = alone
                    .iter()
                    .zip(&mut each)
                    .map(|(w, out)| MatmulJob { w, out })
                    .collect();
                gpu.matmul(&x, b, &mut jobs).unwrap();
                let each: Vec<u32> = each.concat().iter().map(|v| v.to_bits()).collect();
                let one: Vec<u32> = one.iter().map(|v| v.to_bits()).collect();
                assert!(one == each, "{name}: {ty} b={b}");
            }
        }
    }
}

#[test]
fn a_stack_is_one_to_three_matrices_of_whole_rows() {
    let gpu = open(GpuOptions::default());
    let row = GgmlType::Q8_0.row_bytes(64).unwrap() as usize;
    let data = vec![0u8; 4 * row];
    let four = [(1, &data[..row]); 4];
    assert!(gpu.upload_stacked(GgmlType::Q8_0, 64, &four).is_err());
    assert!(gpu.upload_stacked(GgmlType::Q8_0, 64, &[]).is_err());
    let short = [(2, &data[..row]), (1, &data[..row])];
    assert!(gpu.upload_stacked(GgmlType::Q8_0, 64, &short).is_err());
}
