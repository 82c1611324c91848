//! The whole-layer kernels (`ops.wgsl`, `attention.wgsl`) against the CPU: activation
//! rounding bit for bit against `loupe-quant`'s quantizers, RMS norm, RoPE and attention
//! over the device's f16 cache against f64 references. Runs on the adapter `LOUPE_GPU`
//! names (default `software`: Mesa's lavapipe in CI).

use loupe_gpu::{
    ActRounding, AttnShape, Batch, Gpu, GpuChoice, RopePairs, Split, Workspace, WorkspaceSpec,
};
use loupe_quant::{dequantize_row, quantize_activation, GgmlType, F16};
use rand::{Rng, SeedableRng};

fn gpu() -> Gpu {
    let choice: GpuChoice = std::env::var("LOUPE_GPU")
        .unwrap_or_else(|_| "software".into())
        .parse()
        .expect("LOUPE_GPU");
    Gpu::open(choice)
        .expect("opening the adapter")
        .unwrap_or_else(|| {
            panic!(
                "no Vulkan adapter found for {choice}: install Mesa's software driver \
                 (Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
            )
        })
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
        let mut batch = Batch::new(rows);
        batch.upload(0, &x);
        batch.quantize(0, 0, rows as u32, cols as u32, r);
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

#[test]
fn rmsnorm_matches_f64() {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let (rows, width) = (5, 640);
    let x: Vec<f32> = (0..rows * width)
        .map(|_| rng.random_range(-50.0f32..50.0))
        .collect();
    let w: Vec<f32> = (0..width).map(|_| rng.random_range(0.5f32..1.5)).collect();
    let mut ws = workspace(&gpu, 2 * rows * width, &w, Vec::new());
    let mut batch = Batch::new(rows);
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
        for i in 0..width {
            let want = row[i] as f64 * scale * w[i] as f64;
            let g = got[r * width + i] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                "row {r} [{i}]: {g} vs {want}"
            );
        }
    }
}

/// Attention over a cache written by `store`, with RoPE, grouped heads and a soft-cap,
/// against f64 softmax attention over the keys and values rounded to f16 (what the
/// cache holds): `n` tokens attend in one batch (with `window`), then, when `last` is
/// given, one more token alone with its keys split in that many chunks.
fn check_attention(n: usize, window: usize, last: Option<u32>) {
    let gpu = gpu();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let (n_head, n_kv, hd) = (4usize, 2usize, 64usize);
    let total = n + last.is_some() as usize;
    let shape = AttnShape {
        n_head: n_head as u32,
        n_kv_head: n_kv as u32,
        head_dim: hd as u32,
        head_dim_v: hd as u32,
        window: window as u32,
        q_scale: 1.0,
        s_scale: 0.125 / 30.0,
        cap: 30.0,
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
    let region = (total * n_head * hd).next_multiple_of(64) as u32;
    let [qa, ka, va, ta, oa, pa] = [0, 1, 2, 3, 4, 5].map(|i| i * region);
    let kv_bytes = (total * n_kv * hd * 2) as u64;
    let mut ws = workspace(
        &gpu,
        6 * region as usize + 65536,
        &[0.0],
        vec![(kv_bytes, kv_bytes)],
    );
    let heads = [n_head as u32, n_kv as u32];
    let mut got = vec![0f32; total * n_head * hd];
    let mut back = Vec::new();
    // Batches of tokens `from..to`: RoPE, store, attend, read back.
    let mut run = |from: usize, to: usize, split: Split| {
        let b = to - from;
        let mut batch = Batch::new(b);
        batch.upload(qa, &q[from * n_head * hd..to * n_head * hd]);
        batch.upload(ka, &k[from * n_kv * hd..to * n_kv * hd]);
        batch.upload(va, &v[from * n_kv * hd..to * n_kv * hd]);
        batch.upload(ta, &table[from * hd..to * hd]);
        let (pos, bu) = (from as u32, b as u32);
        batch.rope(
            qa,
            ka,
            bu,
            heads,
            hd as u32,
            hd as u32,
            RopePairs::Halves,
            ta,
        );
        batch.store(0, ka, va, pos, bu, &shape);
        batch.attend(0, qa, oa, pos, bu, &shape, split);
        let at = batch.read_arena(oa, (b * n_head * hd) as u32);
        ws.run(&gpu, batch, &mut back).unwrap();
        got[from * n_head * hd..to * n_head * hd]
            .copy_from_slice(&floats(&back[at..at + 4 * b * n_head * hd]));
    };
    run(0, n, Split::NONE);
    if let Some(parts) = last {
        let split = Split::for_keys((n + 1) as u32, pa);
        assert_eq!(split.parts, parts, "{split:?}");
        run(n, n + 1, split);
    }

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
    let f16 = |v: f64| F16::from_f32(v as f32).to_f32() as f64;
    let mut worst = 0f64;
    for t in 0..total {
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let qv = rope(&q[(t * n_head + h) * hd..][..hd], t);
            let first = if window > 0 {
                (t + 1).saturating_sub(window)
            } else {
                0
            };
            let scores: Vec<f64> = (first..=t)
                .map(|j| {
                    let kj = rope(&k[(j * n_kv + kvh) * hd..][..hd], j);
                    let dot: f64 = qv.iter().zip(&kj).map(|(a, b)| f16(*a) * f16(*b)).sum();
                    30.0 * (dot * 0.125 / 30.0).tanh()
                })
                .collect();
            let m = scores.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                let want: f64 = (first..=t)
                    .zip(&e)
                    .map(|(j, w)| w * f16(v[(j * n_kv + kvh) * hd + d] as f64))
                    .sum::<f64>()
                    / sum;
                let g = got[(t * n_head + h) * hd + d] as f64;
                worst = worst.max((g - want).abs());
            }
        }
    }
    // The value sums are rounded to f16 at every step, as ggml's CPU path does.
    assert!(worst < 2e-2, "largest difference {worst}");
}

#[test]
fn attention_over_the_device_cache_matches_f64() {
    check_attention(40, 24, None);
}

#[test]
fn one_token_attention_split_across_workgroups_matches_f64() {
    check_attention(600, 0, Some(5));
}
