//! The whole-layer kernels (`ops.wgsl`, `attention.wgsl`) against the CPU: activation
//! rounding bit for bit against `loupe-quant`'s quantizers (also where the residual join
//! and the gated join round), RMS norm (and QK-norm's pair in one dispatch, bit for bit
//! against two), the residual join (post-norm, add, next norm) bit for bit against its
//! steps, the cache written in each of its formats as the CPU's cache holds them, the
//! Hadamard turn bit for bit, RoPE with attention over the device's cache against f64
//! references, RoPE applied as the attention reads bit for bit against the RoPE step, and
//! the int8 matmuls of every quantized format against the CPU's integer kernels. Runs on
//! the adapter `LOUPE_GPU` names (default `software`: Mesa's lavapipe in CI).

mod common;

use common::nmse;
use loupe_gpu::{
    cache_row_bytes, ActRounding, AttnRope, AttnShape, Batch, Glu, Gpu, GpuOptions, Join, NextNorm,
    RopePairs, Split, Workspace, WorkspaceSpec,
};
use loupe_quant::{
    dequantize_row, quantize_activation, quantize_kv_row, walsh_hadamard, GgmlType, F16,
};
use rand::{Rng, SeedableRng};

fn gpu() -> Gpu {
    common::open(GpuOptions::from_env().expect("LOUPE_GPU_* settings"))
}

fn workspace(gpu: &Gpu, arena: usize, consts: &[f32], kv: Vec<(u64, u64)>) -> Workspace {
    Workspace::new(
        gpu,
        WorkspaceSpec {
            arena,
            xin: arena,
            logits: 0,
            consts,
            kv,
        },
    )
    .unwrap()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// An attention shape: keys and values of `types`, `heads` (query heads, KV heads, width
/// of both), scores scaled by 1/8, no window, cap or RoPE; tests change what they need.
fn attn_shape(types: (GgmlType, GgmlType), (n_head, n_kv, hd): (usize, usize, usize)) -> AttnShape {
    AttnShape {
        k_type: types.0,
        v_type: types.1,
        n_head: n_head as u32,
        n_kv_head: n_kv as u32,
        head_dim: hd as u32,
        head_dim_v: hd as u32,
        window: 0,
        q_scale: 1.0,
        s_scale: 0.125,
        cap: 0.0,
        rope: None,
    }
}

/// Values with the spread activations have, some exactly halfway between f16 values
/// and some zero blocks, so ties and the zero scale are exercised.
fn activations(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n)
        .map(|_| {
            rng.random_range(-3.0f32..3.0)
                * if rng.random_range(0..16) == 0 {
                    40.0
                } else {
                    1.0
                }
        })
        .collect();
    for v in x.iter_mut().step_by(7) {
        // Halfway between two neighbouring f16 values: rounding to even decides it.
        let h = F16::from_f32(*v);
        let next = F16(h.0 + 1);
        *v = (h.to_f32() + next.to_f32()) / 2.0;
    }
    x[..32].fill(0.0);
    x
}

/// The copy of `x` the matmul kernels read: what the CPU multiplies for weights whose
/// partner is `ty`.
fn cpu_rounding(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_activation(ty, x, &mut bytes).unwrap();
    let mut out = vec![0f32; x.len()];
    dequantize_row(ty, &bytes, &mut out).unwrap();
    out
}

#[test]
fn activations_are_rounded_as_the_cpu_quantizes_them() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (ty, r, cols) in [
        (GgmlType::Q8_0, ActRounding::Q8Blocks32, 896),
        (GgmlType::Q8_0, ActRounding::Q8Blocks32, 4096),
        (GgmlType::Q8_K, ActRounding::Q8K, 768),
        (GgmlType::F16, ActRounding::F16, 352),
        (GgmlType::BF16, ActRounding::Bf16, 352),
        (GgmlType::F32, ActRounding::None, 352),
    ] {
        let rows = 3;
        let x = activations(&mut rng, rows * cols);
        let mut ws = workspace(&gpu, rows * cols, &[0.0], Vec::new());
        let mut batch = Batch::new();
        batch.upload(0, &x);
        batch.quantize(0, 0, (rows as u32, cols as u32), None, r);
        let mut back = Vec::new();
        let at = batch.read_input(0, (rows * cols) as u32);
        ws.run(&gpu, batch, &mut back).unwrap();
        let got = floats(&back[at..at + 4 * rows * cols]);
        let want: Vec<f32> = x
            .chunks_exact(cols)
            .flat_map(|row| cpu_rounding(ty, row))
            .collect();
        // Equal as numbers: a quant of zero times a negative scale is -0 here and 0
        // from the CPU's integers, the same product.
        let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        assert_eq!(
            differ,
            0,
            "{r:?} rows of {cols}: {differ} of {} values differ",
            got.len()
        );
    }
}

/// The norm's scale in f32 as the row kernels sum it: 64 walks (walk t adds the squares
/// of elements t, t + 64, … in turn), then a tree over the walks, halving.
fn norm_scale_f32(row: &[f32], eps: f32) -> f32 {
    let mut walks: Vec<f32> = (0..64)
        .map(|t| {
            row.iter()
                .skip(t)
                .step_by(64)
                .fold(0.0f32, |s, &x| s + x * x)
        })
        .collect();
    let mut h = 32;
    while h > 0 {
        for t in 0..h {
            walks[t] += walks[t + h];
        }
        h /= 2;
    }
    1.0 / (walks[0] / row.len() as f32 + eps).sqrt()
}

#[test]
fn rmsnorm_matches_f64() {
    let gpu = gpu();
    let software = !gpu.summary().is_hardware();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    // One piece of a row in shared memory, and a row of three (the last one short); with
    // 20 rows, the kernel for many rows (64 threads a row), whose pieces are 512 wide.
    for (rows, width) in [(5, 640), (3, 4160), (20, 640), (20, 1100)] {
        let x: Vec<f32> = (0..rows * width)
            .map(|_| rng.random_range(-50.0f32..50.0))
            .collect();
        let w: Vec<f32> = (0..width).map(|_| rng.random_range(0.5f32..1.5)).collect();
        let mut ws = workspace(&gpu, 2 * rows * width, &w, Vec::new());
        let mut batch = Batch::new();
        batch.upload(0, &x);
        let out = (rows * width) as u32;
        batch.rmsnorm(0, out, rows as u32, width as u32, Some(0), 1e-6);
        let at = batch.read_arena(out, (rows * width) as u32);
        let mut back = Vec::new();
        ws.run(&gpu, batch, &mut back).unwrap();
        let got = floats(&back[at..at + 4 * rows * width]);
        for (r, row) in x.chunks_exact(width).enumerate() {
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
            let scale = 1.0 / (ms + 1e-6).sqrt();
            let scale32 = norm_scale_f32(row, 1e-6);
            for i in 0..width {
                let want = row[i] as f64 * scale * w[i] as f64;
                let g = got[r * width + i];
                assert!(
                    (g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{width} row {r} [{i}]: {g} vs {want}"
                );
                // A software driver's f32 square root and division round correctly, so
                // there the order of the sums is seen bit for bit.
                if software {
                    let exact = row[i] * scale32 * w[i];
                    assert_eq!(g.to_bits(), exact.to_bits(), "{width} row {r} [{i}]");
                }
            }
        }
    }
}

#[test]
fn qk_norm_in_one_dispatch_is_the_two_norms_bit_for_bit() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    // Query heads and key heads of 64 (5 and 3 rows), the keys further on in the arena.
    let (width, q_rows, k_rows) = (64usize, 5usize, 3usize);
    let (q, k) = (0u32, 1024u32);
    let x: Vec<f32> = (0..2048).map(|_| rng.random_range(-9.0f32..9.0)).collect();
    let w: Vec<f32> = (0..2 * width)
        .map(|_| rng.random_range(0.5f32..1.5))
        .collect();
    let mut ws = workspace(&gpu, 2048, &w, Vec::new());
    let mut normed = |pair: bool| {
        let mut batch = Batch::new();
        batch.upload(0, &x);
        let (wd, qr, kr) = (width as u32, q_rows as u32, k_rows as u32);
        if pair {
            batch.rmsnorm_pair((q, qr, 0), (k, kr, wd), wd, 1e-6);
        } else {
            batch.rmsnorm(q, q, qr, wd, Some(0), 1e-6);
            batch.rmsnorm(k, k, kr, wd, Some(wd), 1e-6);
        }
        let at = batch.read_arena(0, 2048);
        let mut back = Vec::new();
        ws.run(&gpu, batch, &mut back).unwrap();
        bits(&floats(&back[at..at + 4 * 2048]))
    };
    let (one, two) = (normed(true), normed(false));
    assert!(one == two, "the paired norm differs from two norms");
    // And it did normalize both sets, and nothing between them.
    let untouched = |range: std::ops::Range<usize>| range.clone().all(|i| one[i] == x[i].to_bits());
    assert!(!untouched(0..width) && !untouched(1024..1024 + width));
    assert!(untouched(q_rows * width..1024) && untouched(1024 + k_rows * width..2048));
}

/// The stream, the branch and the matmul input after `record` ran over the stream and
/// the branch (at 0 and at their length in the arena), with the two norm weights at 0
/// and `width` in the constants.
fn after(
    gpu: &Gpu,
    (stream, branch, weights): (&[f32], &[f32], &[f32]),
    record: impl Fn(&mut Batch<'_>, u32, u32),
) -> [Vec<f32>; 3] {
    let n = stream.len() as u32;
    let mut ws = workspace(gpu, 2 * stream.len(), weights, Vec::new());
    let mut batch = Batch::new();
    batch.upload(0, stream);
    batch.upload(n, branch);
    record(&mut batch, 0, n);
    let at = [
        batch.read_arena(0, n),
        batch.read_arena(n, n),
        batch.read_input(0, n),
    ];
    let mut back = Vec::new();
    ws.run(gpu, batch, &mut back).unwrap();
    at.map(|at| floats(&back[at..at + 4 * n as usize]))
}

#[test]
fn the_residual_join_is_norm_add_norm_and_rounding_bit_for_bit() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (ty, rounding, width) in [
        (GgmlType::Q8_K, ActRounding::Q8K, 1024),
        // Three steps of the kernel's 1024 elements, the last a quarter full.
        (GgmlType::Q8_K, ActRounding::Q8K, 2304),
        (GgmlType::Q8_0, ActRounding::Q8Blocks32, 896),
    ] {
        // A few rows, and enough for the kernel for many rows (64 threads a row).
        for rows in [3, 17] {
            let mut values = |lo: f32, hi: f32, n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(lo..hi)).collect()
            };
            let (stream, branch) = (
                values(-20.0, 20.0, rows * width),
                values(-3.0, 3.0, rows * width),
            );
            let weights = values(0.5, 1.5, 2 * width);
            let (r, w, eps) = (rows as u32, width as u32, 1e-6);
            let bufs = (&stream[..], &branch[..], &weights[..]);
            // Post-norm, add, next norm and rounding in one dispatch, and the four steps one
            // by one (the add alone is the join with neither norm).
            let next = NextNorm {
                weight: w,
                xin: 0,
                rounding,
            };
            let fused = after(&gpu, bufs, |b, s, br| {
                b.residual((s, br), (r, w), Some(0), Some(next), eps)
            });
            let steps = after(&gpu, bufs, |b, s, br| {
                b.rmsnorm(br, br, r, w, Some(0), eps);
                b.residual((s, br), (r, w), None, None, eps);
                b.rmsnorm(s, br, r, w, Some(w), eps);
                b.quantize(br, 0, (r, w), None, rounding);
            });
            assert!(
                fused == steps,
                "{rounding:?}: the join differs from its steps"
            );
            let [got_x, got_norm, got_in] = fused;
            // The rounded copy is the CPU's rounding of the normalized rows, bit for bit.
            let want_in: Vec<f32> = got_norm
                .chunks_exact(width)
                .flat_map(|row| cpu_rounding(ty, row))
                .collect();
            assert!(
                got_in == want_in,
                "{rounding:?}: the rounded copy is not the CPU's"
            );
            // And the join itself against f64.
            let norm = |row: &[f64], wt: &[f32]| -> Vec<f64> {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
                let scale = 1.0 / (ms + eps as f64).sqrt();
                row.iter()
                    .zip(wt)
                    .map(|(v, &g)| v * scale * g as f64)
                    .collect()
            };
            for t in 0..rows {
                let span = t * width..(t + 1) * width;
                let br: Vec<f64> = branch[span.clone()].iter().map(|&v| v as f64).collect();
                let post = norm(&br, &weights[..width]);
                let x: Vec<f64> = stream[span]
                    .iter()
                    .zip(&post)
                    .map(|(&s, p)| s as f64 + p)
                    .collect();
                let next = norm(&x, &weights[width..]);
                for i in 0..width {
                    let (gx, gn) = (got_x[t * width + i] as f64, got_norm[t * width + i] as f64);
                    assert!(
                        (gx - x[i]).abs() <= 1e-5 * x[i].abs().max(1.0),
                        "stream {t}[{i}]"
                    );
                    assert!(
                        (gn - next[i]).abs() <= 1e-5 * next[i].abs().max(1.0),
                        "norm {t}[{i}]"
                    );
                }
            }
        }
    }
}

#[test]
fn the_gated_join_is_rounded_as_the_cpu_rounds_it() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let (rows, cols) = (2, 1120);
    let n = rows * cols;
    let gates = activations(&mut rng, n);
    let ups: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    for act in [Glu::Silu, Glu::Gelu] {
        let [joined, _, rounded] = after(&gpu, (&gates, &ups, &[0.0]), |b, g, u| {
            b.quantize(
                g,
                0,
                (rows as u32, cols as u32),
                Some(Join::Glu(u, act)),
                ActRounding::Q8Blocks32,
            )
        });
        for i in 0..n {
            let (g, u) = (gates[i] as f64, ups[i] as f64);
            let (want, tol) = match act {
                Glu::Silu => (g / (1.0 + (-g).exp()) * u, 1e-5),
                // ggml's GELU rounds its input and output to f16 (and is exact past ±10).
                Glu::Gelu => {
                    let h = F16::from_f32(gates[i]).to_f32() as f64;
                    let t = 0.5 * h * (1.0 + (0.7978845608 * h * (1.0 + 0.044715 * h * h)).tanh());
                    (
                        if g >= 10.0 {
                            g
                        } else if g <= -10.0 {
                            0.0
                        } else {
                            t
                        } * u,
                        2e-3,
                    )
                }
            };
            let got = joined[i] as f64;
            assert!(
                (got - want).abs() <= tol * want.abs().max(1.0),
                "{act:?} [{i}]: {got} vs {want}"
            );
        }
        let want: Vec<f32> = joined
            .chunks_exact(cols)
            .flat_map(|row| cpu_rounding(GgmlType::Q8_0, row))
            .collect();
        assert!(
            rounded == want,
            "{act:?}: the rounded join is not the CPU's rounding"
        );
    }
}

#[test]
fn matmuls_add_their_bias_as_a_separate_step_would() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (rows, cols, ty) = (70, 256, GgmlType::Q4_K);
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut w = vec![0u8; rows * row_bytes];
    for r in w.chunks_exact_mut(row_bytes) {
        let src: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        loupe_quant::quantize_row(ty, &src, r).unwrap();
    }
    let m = gpu.upload(ty, rows, cols, &w).unwrap();
    let bias: Vec<f32> = (0..rows).map(|_| rng.random_range(-5.0f32..5.0)).collect();
    // One token, a mat-vec batch and a prompt batch (the tiled kernel).
    for b in [1, 5, 40] {
        let x = activations(&mut rng, b * cols);
        let out = (b * cols) as u32;
        let products = |with: Option<u32>| {
            let mut ws = workspace(&gpu, b * (cols + rows), &bias, Vec::new());
            let mut batch = Batch::new();
            batch.upload(0, &x);
            batch.quantize(0, 0, (b as u32, cols as u32), None, ActRounding::None);
            let target = (loupe_gpu::Target::Arena(out), with);
            batch.matmul(&m, 0, b as u32, &[target], gpu.reduction());
            let at = batch.read_arena(out, (b * rows) as u32);
            let mut back = Vec::new();
            ws.run(&gpu, batch, &mut back).unwrap();
            floats(&back[at..at + 4 * b * rows])
        };
        let (plain, biased) = (products(None), products(Some(0)));
        for (i, (p, got)) in plain.iter().zip(&biased).enumerate() {
            assert_eq!(
                *got,
                p + bias[i % rows],
                "b={b}, token {} row {}",
                i / rows,
                i % rows
            );
        }
    }
}

/// The CPU's products of `w` (rows of `cols` in `ty`) with each row of `x`: the
/// activations quantized to the weights' partner, integer dots.
fn cpu_products(ty: GgmlType, w: &[u8], cols: usize, x: &[f32]) -> Vec<f64> {
    let partner = loupe_quant::vec_dot_type(ty).unwrap();
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut act = vec![0u8; partner.row_bytes(cols as u64).unwrap() as usize];
    let mut all = Vec::new();
    for xr in x.chunks_exact(cols) {
        quantize_activation(partner, xr, &mut act).unwrap();
        all.extend(
            w.chunks_exact(row_bytes)
                .map(|r| loupe_quant::vec_dot(ty, cols, r, &act).unwrap() as f64),
        );
    }
    all
}

#[test]
fn int8_matmuls_are_the_cpu_kernels_products() {
    let float = common::open(GpuOptions {
        int8: false,
        split_rows: Some(false),
        ..Default::default()
    });
    // The one-token int8 mat-vecs as hardware adapters take them (a lane per word, a
    // workgroup per row) and as software drivers do (a lane per block, a subgroup per
    // row), whichever the adapter takes by default.
    let int8 = common::open(GpuOptions {
        int8_words: Some(true),
        split_rows: Some(true),
        ..Default::default()
    });
    let blocks = common::open(GpuOptions {
        int8_words: Some(false),
        split_rows: Some(false),
        ..Default::default()
    });
    assert!(int8.int8() && !float.int8() && int8.int8_words() && !blocks.int8_words());
    // (Both sum rows without subgroups where the adapter has none.)
    let (split, rows) = (int8.reduction(), blocks.reduction());
    assert!(!split.subgroups() || (split == loupe_gpu::Reduction::SplitRow && rows != split));
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for ty in loupe_gpu::SHADER_TYPES {
        if loupe_gpu::int8_dot(ty).is_none() {
            continue;
        }
        let (rows, cols) = (70, if ty.block_elems() == 256 { 768 } else { 352 });
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut w = vec![0u8; rows * row_bytes];
        for r in w.chunks_exact_mut(row_bytes) {
            let src: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            loupe_quant::quantize_row(ty, &src, r).unwrap();
        }
        let partner = loupe_quant::vec_dot_type(ty).unwrap();
        let rounding = ActRounding::for_weights(ty).unwrap();
        // One token (the mat-vec, where the adapter has subgroups) and a prompt batch of
        // 40 (the tiled matmul, two workgroups of tokens, one short).
        let one_token = int8.reduction().subgroups();
        for b in [1, 40].into_iter().filter(|&b| b > 1 || one_token) {
            let x = activations(&mut rng, b * cols);
            // The input at an offset into the matmul input, rounded by `quantize` or by
            // the residual join (x as the branch added to a zero stream, then normalized
            // by unit weights: the rounded input is x's RMS norm).
            let n = (b * cols) as u32;
            let (xin, out) = (64, 2 * n);
            let (ones, zeros) = (vec![1.0f32; cols], vec![0.0f32; b * cols]);
            let on = |gpu: &Gpu| {
                let m = gpu.upload(ty, rows, cols, &w).unwrap();
                let ws = workspace(gpu, 2 * b * cols + b * rows + 64, &ones, Vec::new());
                (m, ws)
            };
            let mut on_gpus = [on(&int8), on(&float), on(&blocks)];
            // The products on gpus[which] (0: int8, 1: float, 2: int8 a lane per block),
            // and how many int8 dispatches computed them.
            let mut products = |which: usize, how: ActRounding, residual: bool| {
                let gpu = [&int8, &float, &blocks][which];
                let (m, ws) = &mut on_gpus[which];
                let before = ws.int8_dispatches();
                let mut batch = Batch::new();
                batch.upload(0, &x);
                let shape = (b as u32, cols as u32);
                if residual {
                    batch.upload(n, &zeros);
                    let next = NextNorm {
                        weight: 0,
                        xin,
                        rounding: how,
                    };
                    batch.residual((n, 0), shape, None, Some(next), 1e-6);
                } else {
                    batch.quantize(0, xin, shape, None, how);
                }
                let target = (loupe_gpu::Target::Arena(out), None);
                batch.matmul(m, xin, b as u32, &[target], gpu.reduction());
                let at = batch.read_arena(out, (b * rows) as u32);
                let mut back = Vec::new();
                ws.run(gpu, batch, &mut back).unwrap();
                let got = floats(&back[at..at + 4 * b * rows]);
                (got, ws.int8_dispatches() - before)
            };
            let want = cpu_products(ty, &w, cols, &x);
            let (got, n) = products(0, rounding, false);
            assert_eq!(n, 1, "{ty} b={b}: the int8 kernel did not run");
            let (by_block, n) = products(2, rounding, false);
            assert_eq!(
                n, 1,
                "{ty} b={b}: the int8 kernel did not run (a lane per block)"
            );
            let (floats_got, n) = products(1, rounding, false);
            assert_eq!(n, 0, "{ty} b={b}: int8 kernels where they are off");
            let (e, e_float) = (nmse(&got, &want), nmse(&floats_got, &want));
            let e_blocks = nmse(&by_block, &want);
            eprintln!(
                "{ty} {b}x{cols}: nmse vs the CPU kernels {e:.2e} (int8), {e_blocks:.2e} \
                 (int8, a lane per block), {e_float:.2e} (float)"
            );
            // Integer sums scaled once per block (per 16 in the tiled matmul), as the CPU
            // does: only f32 roundings differ. Except where the CPU's Q8_1 blocks keep
            // their sum times the scale as an f16, which the kernels (int8 and float) take
            // exactly.
            let bound = if partner == GgmlType::Q8_1 {
                1e-5
            } else {
                1e-10
            };
            assert!(e <= bound, "{ty} b={b}: int8 nmse vs the CPU kernels {e:e}");
            assert!(
                e_blocks <= bound,
                "{ty} b={b}: int8 a lane per block, {e_blocks:e}"
            );
            assert!(e_float <= 5e-4, "{ty} b={b}: float kernel");
            // An input the int8 kernels have no packed copy of takes the float kernels
            // (the same bits on the device that sums rows as the float one does).
            let (_, n) = products(0, ActRounding::None, false);
            assert_eq!(n, 0, "{ty} b={b}: an unrounded input took an int8 kernel");
            let (unrounded, n) = products(2, ActRounding::None, false);
            assert_eq!(n, 0, "{ty} b={b}: an unrounded input took an int8 kernel");
            assert_eq!(
                bits(&unrounded),
                bits(&products(1, ActRounding::None, false).0),
            );
            // The residual join writes the packed copy too.
            let normed: Vec<f32> = x
                .chunks_exact(cols)
                .flat_map(|r| {
                    let ms = r.iter().map(|v| v * v).sum::<f32>() / cols as f32;
                    let scale = 1.0 / (ms + 1e-6).sqrt();
                    r.iter().map(move |v| v * scale)
                })
                .collect();
            let (joined, n) = products(0, rounding, true);
            assert_eq!(n, 1, "{ty} b={b}: no int8 kernel after the residual join");
            let e = nmse(&joined, &cpu_products(ty, &w, cols, &normed));
            assert!(e <= 1e-6, "{ty} b={b}: after the residual join, nmse {e:e}");
        }
    }
}

/// The bytes a CPU cache of `ty` holds for one head's row `x`.
fn cpu_cache_row(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F16 => x
            .iter()
            .flat_map(|&v| F16::from_f32(v).0.to_le_bytes())
            .collect(),
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => {
            let mut bytes = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
            quantize_kv_row(ty, x, &mut bytes).unwrap();
            bytes
        }
    }
}

/// Row `x` as a cache of `ty` gives it back.
fn held(ty: GgmlType, x: &[f32]) -> Vec<f64> {
    let mut out = vec![0f32; x.len()];
    dequantize_row(ty, &cpu_cache_row(ty, x), &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// A query as the dot with keys of `ty` takes it: rounded to f16, as it is, or Q8_0.
fn query_seen(ty: GgmlType, x: &[f32]) -> Vec<f64> {
    match ty {
        GgmlType::F16 | GgmlType::F32 => held(ty, x),
        _ => cpu_rounding(GgmlType::Q8_0, x)
            .into_iter()
            .map(f64::from)
            .collect(),
    }
}

/// Attention over a cache of `types` (keys, values) written by `store`, with RoPE,
/// grouped heads and a soft-cap, against f64 softmax attention over the keys and values
/// as that cache holds them and the query as the key dot sees it: `n` tokens attend in
/// one batch (with `window`), then, when `last` is given, one more token alone with its
/// keys split in that many chunks.
/// Queries, keys and values of `n` tokens (and one more with `last`), heads of the
/// shape's width, with each token's RoPE table (`n_rot` wide).
struct AttnInputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    table: &'a [f32],
    n: usize,
    /// Tokens per batch of the first `n` (`n`: one batch, a prompt).
    batch: usize,
    /// One more token attended alone, its keys split in this many parts.
    last: Option<u32>,
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Every token's attention output and the cache's keys after them: the first `n`
/// tokens in batches of `batch`, then the last alone; RoPE (`rope`, its table placed by this
/// function) as a step before `store` and `attend`, or with `fused` as they read.
fn attend_tokens(
    gpu: &Gpu,
    mut shape: AttnShape,
    x: &AttnInputs,
    rope: AttnRope,
    fused: bool,
) -> (Vec<f32>, Vec<u8>) {
    let (n_head, n_kv, hd) = (
        shape.n_head as usize,
        shape.n_kv_head as usize,
        shape.head_dim as usize,
    );
    let n_rot = rope.n_rot as usize;
    let total = x.n + x.last.is_some() as usize;
    let region = (total * n_head * hd).next_multiple_of(64) as u32;
    let [qa, ka, va, ta, oa, pa] = [0, 1, 2, 3, 4, 5].map(|i| i * region);
    shape.rope = fused.then_some(AttnRope { table: ta, ..rope });
    let kv_bytes = |ty| (total * n_kv) as u64 * cache_row_bytes(ty, hd as u32).unwrap() as u64;
    let key_bytes = kv_bytes(shape.k_type);
    let mut ws = workspace(
        gpu,
        6 * region as usize + 65536,
        &[0.0],
        vec![(key_bytes, kv_bytes(shape.v_type))],
    );
    let heads = [n_head as u32, n_kv as u32];
    let mut got = vec![0f32; total * n_head * hd];
    let mut back = Vec::new();
    // Batches of tokens `from..to`: RoPE, store, attend, read back.
    let mut run = |from: usize, to: usize, split: Split| {
        let b = to - from;
        let mut batch = Batch::new();
        batch.upload(qa, &x.q[from * n_head * hd..to * n_head * hd]);
        batch.upload(ka, &x.k[from * n_kv * hd..to * n_kv * hd]);
        batch.upload(va, &x.v[from * n_kv * hd..to * n_kv * hd]);
        batch.upload(ta, &x.table[from * n_rot..to * n_rot]);
        let (pos, bu) = (from as u32, b as u32);
        if !fused {
            batch.rope(qa, ka, bu, heads, hd as u32, rope.n_rot, rope.pairs, ta);
        }
        batch.store(0, ka, va, pos, bu, &shape);
        batch.attend(0, qa, oa, pos, bu, &shape, split);
        let at = batch.read_arena(oa, (b * n_head * hd) as u32);
        let keys = batch.read_cache(0, false, 0, key_bytes);
        ws.run(gpu, batch, &mut back).unwrap();
        got[from * n_head * hd..to * n_head * hd]
            .copy_from_slice(&floats(&back[at..at + 4 * b * n_head * hd]));
        back[keys..keys + key_bytes as usize].to_vec()
    };
    let mut keys = Vec::new();
    for from in (0..x.n).step_by(x.batch) {
        keys = run(from, x.n.min(from + x.batch), Split::NONE);
    }
    if let Some(parts) = x.last {
        let split = Split::for_keys(total as u32, shape.n_head / shape.n_kv_head, pa);
        assert_eq!(split.parts, parts, "{split:?}");
        keys = run(x.n, total, split);
    }
    (got, keys)
}

fn check_attention(n: usize, window: usize, last: Option<u32>, types: (GgmlType, GgmlType)) {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let (n_head, n_kv, hd) = (4usize, 2usize, 64usize);
    let total = n + last.is_some() as usize;
    let shape = AttnShape {
        window: window as u32,
        s_scale: 0.125 / 30.0,
        cap: 30.0,
        ..attn_shape(types, (n_head, n_kv, hd))
    };
    let q: Vec<f32> = (0..total * n_head * hd)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let k: Vec<f32> = (0..total * n_kv * hd)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let v: Vec<f32> = (0..total * n_kv * hd)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let table: Vec<f32> = (0..total)
        .flat_map(|t| {
            (0..hd / 2).flat_map(move |i| {
                let a = t as f32 / 10f32.powf(i as f32 / 8.0);
                [a.cos(), a.sin()]
            })
        })
        .collect();
    let inputs = AttnInputs {
        q: &q,
        k: &k,
        v: &v,
        table: &table,
        n,
        batch: n,
        last,
    };
    let rope = AttnRope {
        table: 0,
        n_rot: hd as u32,
        pairs: RopePairs::Halves,
    };
    let (got, keys) = attend_tokens(&gpu, shape, &inputs, rope, false);
    let (fused, fused_keys) = attend_tokens(&gpu, shape, &inputs, rope, true);
    assert!(
        bits(&fused) == bits(&got),
        "{types:?}: RoPE as read differs"
    );
    assert!(
        fused_keys == keys,
        "{types:?}: keys turned as stored differ"
    );

    let rope = |x: &[f32], t: usize| -> Vec<f64> {
        let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for i in 0..hd / 2 {
            let (c, s) = (
                table[t * hd + 2 * i] as f64,
                table[t * hd + 2 * i + 1] as f64,
            );
            let (x0, x1) = (x[i] as f64, x[i + hd / 2] as f64);
            y[i] = x0 * c - x1 * s;
            y[i + hd / 2] = x0 * s + x1 * c;
        }
        y
    };
    let to_f32 = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    let mut worst = 0f64;
    for t in 0..total {
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let qv = query_seen(types.0, &to_f32(rope(&q[(t * n_head + h) * hd..][..hd], t)));
            let first = if window > 0 {
                (t + 1).saturating_sub(window)
            } else {
                0
            };
            let scores: Vec<f64> = (first..=t)
                .map(|j| {
                    let kj = held(types.0, &to_f32(rope(&k[(j * n_kv + kvh) * hd..][..hd], j)));
                    let dot: f64 = qv.iter().zip(&kj).map(|(a, b)| a * b).sum();
                    30.0 * (dot * 0.125 / 30.0).tanh()
                })
                .collect();
            let m = scores.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let vs: Vec<Vec<f64>> = (first..=t)
                .map(|j| held(types.1, &v[(j * n_kv + kvh) * hd..][..hd]))
                .collect();
            for d in 0..hd {
                let want: f64 = vs.iter().zip(&e).map(|(vj, w)| w * vj[d]).sum::<f64>() / sum;
                let g = got[(t * n_head + h) * hd + d] as f64;
                worst = worst.max((g - want).abs());
            }
        }
    }
    // Over f16 values the sums are rounded to f16 at every step, as ggml's CPU path
    // does; over the others they stay in f32. A key whose RoPE rounds differently in the
    // last bit may land on the other side of a quantization step: a few such keys move
    // their weight by a step's share.
    let bound = if types.1 == GgmlType::F16 { 2e-2 } else { 5e-3 };
    eprintln!("{types:?}, {total} tokens: largest difference {worst:.2e}");
    assert!(worst < bound, "{types:?}: largest difference {worst}");
}

#[test]
fn attention_over_the_device_cache_matches_f64() {
    check_attention(40, 24, None, (GgmlType::F16, GgmlType::F16));
}

#[test]
fn one_token_attention_split_across_workgroups_matches_f64() {
    check_attention(600, 0, Some(10), (GgmlType::F16, GgmlType::F16));
}

#[test]
fn attention_over_quantized_and_f32_caches_matches_f64() {
    use GgmlType::*;
    for types in [
        (Q8_0, Q8_0),
        (Q4_0, Q4_0),
        (F32, F32),
        (Q8_0, F16),
        (F16, Q4_0),
    ] {
        check_attention(40, 24, None, types);
    }
    check_attention(300, 0, Some(5), (Q8_0, Q4_0));
}

/// One token's split attention merged by the rounding of its output (`attend_parts`, then
/// `quantize` with the merge) gives the bits of a merge step and then the rounding: the
/// output itself and its rounding in every mode, for heads of 64 (four to a Q8_K block)
/// and of 256.
#[test]
fn a_split_merged_as_it_is_rounded_is_the_merge_step_bit_for_bit() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for (n_head, hd) in [(8usize, 64usize), (2, 256)] {
        let n_kv = n_head / 2;
        let n = 700;
        let f16 = (GgmlType::F16, GgmlType::F16);
        let shape = attn_shape(f16, (n_head, n_kv, hd));
        let mut draw =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
        let (k, v, q) = (draw(n * n_kv * hd), draw(n * n_kv * hd), draw(n_head * hd));
        let region = (n * n_kv * hd).next_multiple_of(64) as u32;
        let [ka, va, qa, oa, pa] = [0, 1, 2, 3, 4].map(|i| i * region);
        let row = cache_row_bytes(GgmlType::F16, hd as u32).unwrap() as u64;
        let bytes = (n * n_kv) as u64 * row;
        let mut ws = workspace(&gpu, 5 * region as usize, &[0.0], vec![(bytes, bytes)]);
        // Every position's keys and values but the last, in one batch.
        let mut batch = Batch::new();
        batch.upload(ka, &k[..(n - 1) * n_kv * hd]);
        batch.upload(va, &v[..(n - 1) * n_kv * hd]);
        batch.store(0, ka, va, 0, (n - 1) as u32, &shape);
        ws.run(&gpu, batch, &mut Vec::new()).unwrap();
        let split = Split::for_keys(n as u32, shape.n_head / shape.n_kv_head, pa);
        assert!(split.parts > 2, "{split:?}");
        let width = (n_head * hd) as u32;
        let stale = vec![f32::NAN; width as usize];
        for r in [
            ActRounding::None,
            ActRounding::Q8Blocks32,
            ActRounding::Q8K,
            ActRounding::F16,
            ActRounding::Bf16,
        ] {
            let mut results = Vec::new();
            for fused in [false, true] {
                let mut batch = Batch::new();
                batch.upload(ka, &k[(n - 1) * n_kv * hd..]);
                batch.upload(va, &v[(n - 1) * n_kv * hd..]);
                batch.upload(qa, &q);
                // Whatever the run before left as the output is not this run's.
                batch.upload(oa, &stale);
                let pos = (n - 1) as u32;
                batch.store(0, ka, va, pos, 1, &shape);
                let join = if fused {
                    let join = batch.attend_parts(0, (qa, oa), (pos, 1), &shape, split);
                    assert!(matches!(join, Some(Join::Merge { .. })), "{join:?}");
                    join
                } else {
                    batch.attend(0, qa, oa, pos, 1, &shape, split);
                    None
                };
                batch.quantize(oa, 0, (1, width), join, r);
                let out = batch.read_arena(oa, width);
                let rounded = batch.read_input(0, width);
                let mut back = Vec::new();
                ws.run(&gpu, batch, &mut back).unwrap();
                let at = |o: usize| bits(&floats(&back[o..o + 4 * width as usize]));
                results.push((at(out), at(rounded)));
            }
            assert!(results[0].0 == results[1].0, "heads of {hd}, {r:?}: output");
            assert!(
                results[0].1 == results[1].1,
                "heads of {hd}, {r:?}: rounded"
            );
        }
    }
}

/// One token's attention that writes its own key and value into an f16 or f32 cache
/// (`store_and_attend`) gives the bits of a `store` step and then the attention: the
/// output and the whole cache after it, for every pair of those formats, keys turned by
/// RoPE as read (part of each head), with and without a split, and within a window.
#[test]
fn one_token_attention_that_stores_its_own_key_is_the_store_step_bit_for_bit() {
    use GgmlType::*;
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let (n_head, n_kv, hd) = (4usize, 2usize, 64usize);
    for (types, n, window) in [
        ((F16, F16), 300, 0),
        ((F16, F16), 40, 0),
        ((F32, F32), 300, 0),
        ((F16, F32), 200, 150),
        ((F32, F16), 40, 24),
    ] {
        let mut draw =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
        let (k, v, q) = (draw(n * n_kv * hd), draw(n * n_kv * hd), draw(n_head * hd));
        let table: Vec<f32> = (0..n)
            .flat_map(|t| {
                (0..16).flat_map(move |i| {
                    let a = t as f32 / 10f32.powf(i as f32 / 8.0);
                    [a.cos(), a.sin()]
                })
            })
            .collect();
        let region = (n * n_kv * hd).next_multiple_of(64) as u32;
        let [ka, va, qa, oa, pa, ta] = [0, 1, 2, 3, 4, 5].map(|i| i * region);
        let shape = AttnShape {
            window: window as u32,
            rope: Some(AttnRope {
                table: ta,
                n_rot: 32,
                pairs: RopePairs::Halves,
            }),
            ..attn_shape(types, (n_head, n_kv, hd))
        };
        let rows = |ty| (n * n_kv) as u64 * cache_row_bytes(ty, hd as u32).unwrap() as u64;
        let (k_bytes, v_bytes) = (rows(types.0), rows(types.1));
        let width = (n_head * hd) as u32;
        let mut results = Vec::new();
        for fused in [false, true] {
            let mut ws = workspace(&gpu, 6 * region as usize, &[0.0], vec![(k_bytes, v_bytes)]);
            // Every position but the last, stored in one batch.
            let mut batch = Batch::new();
            batch.upload(ka, &k[..(n - 1) * n_kv * hd]);
            batch.upload(va, &v[..(n - 1) * n_kv * hd]);
            batch.upload(ta, &table);
            batch.store(0, ka, va, 0, (n - 1) as u32, &shape);
            ws.run(&gpu, batch, &mut Vec::new()).unwrap();
            let pos = (n - 1) as u32;
            let seen = if window > 0 { n.min(window) } else { n };
            let split = Split::for_keys(seen as u32, shape.n_head / shape.n_kv_head, pa);
            let mut batch = Batch::new();
            batch.upload(ka, &k[(n - 1) * n_kv * hd..]);
            batch.upload(va, &v[(n - 1) * n_kv * hd..]);
            batch.upload(qa, &q);
            // The table's row for the token's position at the start of the table.
            batch.upload(ta, &table[(n - 1) * 32..]);
            let join = if fused {
                batch.store_and_attend(0, (ka, va), (qa, oa), (pos, 1), &shape, split)
            } else {
                batch.store(0, ka, va, pos, 1, &shape);
                batch.attend_parts(0, (qa, oa), (pos, 1), &shape, split)
            };
            assert_eq!(join.is_some(), split.parts > 1, "{types:?}, {n}: {split:?}");
            batch.quantize(oa, 0, (1, width), join, ActRounding::None);
            let out = batch.read_arena(oa, width);
            let keys = batch.read_cache(0, false, 0, k_bytes);
            let values = batch.read_cache(0, true, 0, v_bytes);
            let mut back = Vec::new();
            ws.run(&gpu, batch, &mut back).unwrap();
            results.push((
                back[out..out + 4 * width as usize].to_vec(),
                back[keys..keys + k_bytes as usize].to_vec(),
                back[values..values + v_bytes as usize].to_vec(),
            ));
        }
        let (a, b) = (&results[0], &results[1]);
        assert!(a.0 == b.0, "{types:?}, {n} positions: the output differs");
        assert!(a.1 == b.1, "{types:?}, {n} positions: the keys differ");
        assert!(a.2 == b.2, "{types:?}, {n} positions: the values differ");
    }
}

/// RoPE applied as `store` and `attend` read (a layer then has no RoPE step) gives the
/// bits the RoPE step gives: both pair layouts, all or part of each head turned, every
/// cache format, a query scale.
#[test]
fn rope_as_the_attention_reads_is_the_rope_step_bit_for_bit() {
    use GgmlType::*;
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let (n_head, n_kv, hd, n) = (4usize, 2usize, 64usize, 9usize);
    for (pairs, n_rot) in [
        (RopePairs::Adjacent, 64u32),
        (RopePairs::Adjacent, 32),
        (RopePairs::Halves, 32),
    ] {
        for k_type in [F16, F32, Q8_0, Q4_0] {
            let shape = AttnShape {
                q_scale: 0.3,
                ..attn_shape((k_type, F16), (n_head, n_kv, hd))
            };
            let q = activations(&mut rng, n * n_head * hd);
            let k = activations(&mut rng, n * n_kv * hd);
            let v = activations(&mut rng, n * n_kv * hd);
            let table: Vec<f32> = (0..n * n_rot as usize / 2)
                .flat_map(|i| {
                    let a = i as f32 * 0.37;
                    [a.cos(), a.sin()]
                })
                .collect();
            let inputs = AttnInputs {
                q: &q,
                k: &k,
                v: &v,
                table: &table,
                n,
                batch: n,
                last: None,
            };
            let rope = AttnRope {
                table: 0,
                n_rot,
                pairs,
            };
            let (got, keys) = attend_tokens(&gpu, shape, &inputs, rope, false);
            let (fused, fused_keys) = attend_tokens(&gpu, shape, &inputs, rope, true);
            let what = format!("{pairs:?}, {n_rot} of {hd} turned, {k_type} keys");
            assert!(bits(&fused) == bits(&got), "{what}: outputs differ");
            assert!(fused_keys == keys, "{what}: cached keys differ");
        }
    }
}

/// A prompt's attention (a workgroup per eight tokens of a head) gives the bits its
/// tokens give attended one at a time (a workgroup per query heads of a group, eight at
/// most): every cache format, heads of 64 and 256, groups of 1 to 10 heads (a group of
/// 3 or 7 leaves a slot empty, one of 10 takes two workgroups), a window, a soft-cap,
/// RoPE as read, a last workgroup with fewer tokens, and prompts that run over a tile
/// of keys and start after cached positions.
#[test]
fn a_prompt_attended_at_once_is_its_tokens_attended_one_by_one_bit_for_bit() {
    use GgmlType::*;
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let cases = [
        ((F16, F16), (4, 2, 64), 0, 75),
        ((F16, F16), (2, 1, 256), 20, 29),
        ((F32, F32), (4, 4, 64), 11, 37),
        ((Q8_0, Q8_0), (4, 2, 64), 0, 70),
        ((Q4_0, Q4_0), (2, 1, 256), 0, 21),
        ((Q8_0, F16), (3, 1, 128), 9, 30),
        ((F16, Q4_0), (4, 2, 64), 0, 19),
        ((F16, F16), (10, 1, 64), 0, 20),
        ((F32, Q8_0), (7, 1, 64), 5, 12),
    ];
    for (types, heads, window, n) in cases {
        let (n_head, n_kv, hd) = heads;
        let shape = AttnShape {
            window,
            q_scale: 0.7,
            s_scale: 0.125 / 20.0,
            cap: 20.0,
            ..attn_shape(types, heads)
        };
        let q = activations(&mut rng, n * n_head * hd);
        let k = activations(&mut rng, n * n_kv * hd);
        let v = activations(&mut rng, n * n_kv * hd);
        let table: Vec<f32> = (0..n * hd / 2)
            .flat_map(|i| {
                let a = i as f32 * 0.21;
                [a.cos(), a.sin()]
            })
            .collect();
        let rope = AttnRope {
            table: 0,
            n_rot: hd as u32,
            pairs: RopePairs::Halves,
        };
        let what = format!("{types:?}, heads {heads:?}, window {window}, {n} tokens");
        let inputs = |batch| AttnInputs {
            q: &q,
            k: &k,
            v: &v,
            table: &table,
            n,
            batch,
            last: None,
        };
        let (alone, alone_keys) = attend_tokens(&gpu, shape, &inputs(1), rope, true);
        // Seven tokens first, so that the prompt's queries start after cached positions.
        for batch in [n, 7] {
            let (got, keys) = attend_tokens(&gpu, shape, &inputs(batch), rope, true);
            assert!(keys == alone_keys, "{what}: cached keys differ");
            let differ = bits(&got)
                .iter()
                .zip(bits(&alone))
                .position(|(a, b)| *a != b);
            assert!(
                differ.is_none(),
                "{what}, batches of {batch}: element {differ:?} differs"
            );
        }
    }
}

/// `store` writes each head's row as the CPU's cache of that format holds it (the same
/// bytes; the padding of a row to whole words left zero), at the batch's positions.
#[test]
fn the_cache_is_stored_in_each_format_as_the_cpu_holds_it() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    for hd in [32usize, 64, 256] {
        for ty in [GgmlType::F16, GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0] {
            let (n_kv, pos, n) = (2usize, 3usize, 5usize);
            let stride = cache_row_bytes(ty, hd as u32).unwrap() as usize;
            let per_pos = (n_kv * stride) as u64;
            let k = activations(&mut rng, n * n_kv * hd);
            let v = activations(&mut rng, n * n_kv * hd);
            let region = (n * n_kv * hd).next_multiple_of(64) as u32;
            let cache = (pos + n) as u64 * per_pos;
            let mut ws = workspace(&gpu, 2 * region as usize, &[0.0], vec![(cache, cache)]);
            let shape = attn_shape((ty, ty), (n_kv, n_kv, hd));
            let mut batch = Batch::new();
            batch.upload(0, &k);
            batch.upload(region, &v);
            batch.store(0, 0, region, pos as u32, n as u32, &shape);
            let bytes = n as u64 * per_pos;
            let k_at = batch.read_cache(0, false, pos as u64 * per_pos, bytes);
            let v_at = batch.read_cache(0, true, pos as u64 * per_pos, bytes);
            let mut back = Vec::new();
            ws.run(&gpu, batch, &mut back).unwrap();
            for (what, at, x) in [("keys", k_at, &k), ("values", v_at, &v)] {
                let got = &back[at..at + bytes as usize];
                for (i, (row, dev)) in x.chunks_exact(hd).zip(got.chunks_exact(stride)).enumerate()
                {
                    let want = cpu_cache_row(ty, row);
                    assert_eq!(
                        &dev[..want.len()],
                        &want[..],
                        "{ty} {what}, heads of {hd}: row {i}"
                    );
                    assert!(dev[want.len()..].iter().all(|&b| b == 0), "{ty} padding");
                }
            }
        }
    }
}

#[test]
fn the_hadamard_turn_is_the_cpus_bit_for_bit() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for block in [64usize, 128, 256] {
        // Two regions (queries and keys), apart in the arena, turned in one step.
        let (a_len, b_len) = (6 * block, 2 * block);
        let x = activations(&mut rng, a_len + b_len);
        let b_at = a_len.next_multiple_of(64) + 64;
        let mut ws = workspace(&gpu, b_at + b_len, &[0.0], Vec::new());
        let mut batch = Batch::new();
        batch.upload(0, &x[..a_len]);
        batch.upload(b_at as u32, &x[a_len..]);
        let pieces = |len: usize| (len / block) as u32;
        batch.hadamard(
            &[(0, pieces(a_len)), (b_at as u32, pieces(b_len))],
            block as u32,
        );
        let ra = batch.read_arena(0, a_len as u32);
        let rb = batch.read_arena(b_at as u32, b_len as u32);
        let mut back = Vec::new();
        ws.run(&gpu, batch, &mut back).unwrap();
        let mut got = floats(&back[ra..ra + 4 * a_len]);
        got.extend(floats(&back[rb..rb + 4 * b_len]));
        let mut want = x.clone();
        want.chunks_exact_mut(block).for_each(walsh_hadamard);
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "blocks of {block}: {differ} of {} differ",
            want.len()
        );
    }
}
