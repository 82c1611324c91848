//! Time of the one-query attention loops over an f16 cache at depth, one thread: the key
//! dots and the f16 value accumulator for a group of query heads sharing a KV head, in
//! blocks of 128 keys as the engine calls them, over eight KV heads' cache (larger than
//! the last-level cache at 16384 keys). Defaults: llama3-8b's shape (head 128, group 4);
//! qwen2.5-0.5b's is `16384 7 64`. `LOUPE_KERNELS=avx2` times the AVX2 loops.
//!
//!     cargo run --release -p loupe-quant --example attn_bench [KEYS [GROUP [HEAD_DIM]]]
//!
//! Prints nanoseconds per (key, query head) for each loop and the cache bytes per second
//! each reads.

use std::hint::black_box;
use std::time::Instant;

use loupe_quant::attn::{self, Online};
use loupe_quant::F16;

const BLOCK: usize = 128;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let n = args.first().copied().unwrap_or(16384);
    let g = args.get(1).copied().unwrap_or(4);
    let d = args.get(2).copied().unwrap_or(128);
    assert!(
        n > 0 && n.is_multiple_of(BLOCK) && g > 0 && d > 0,
        "KEYS a multiple of {BLOCK}, GROUP and HEAD_DIM above 0"
    );
    let heads = 8; // KV heads of one layer: 8 × n × d halves each for K and V
    let mut seed = 1u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let keys: Vec<F16> = (0..heads * n * d).map(|_| F16::from_f32(rnd())).collect();
    let vals: Vec<F16> = (0..heads * n * d).map(|_| F16::from_f32(rnd())).collect();
    let q: Vec<F16> = (0..g * d).map(|_| F16::from_f32(rnd())).collect();
    let mut scores = vec![0f32; g * BLOCK];
    let mut acc = vec![F16::ZERO; g * d];
    for round in 0..3 {
        let (mut t_dot, mut t_acc) = (0f64, 0f64);
        for h in 0..heads {
            let k = &keys[h * n * d..][..n * d];
            let v = &vals[h * n * d..][..n * d];
            let mut state = vec![Online::START; g];
            acc.fill(F16::ZERO);
            for b0 in (0..n).step_by(BLOCK) {
                let t0 = Instant::now();
                attn::dots_f16(&q, &k[b0 * d..][..BLOCK * d], d, &mut scores);
                scores.iter_mut().for_each(|s| *s *= 0.088);
                let t1 = Instant::now();
                attn::accumulate_f16(&scores, &v[b0 * d..][..BLOCK * d], d, &mut acc, &mut state);
                let t2 = Instant::now();
                t_dot += (t1 - t0).as_secs_f64();
                t_acc += (t2 - t1).as_secs_f64();
            }
            black_box(&acc);
        }
        let kh = (heads * n * g) as f64;
        let bytes = (heads * n * d * 2) as f64;
        println!(
            "round {round}: dots {:.2} ns/key-head ({:.1} GB/s)  accumulate {:.2} ns/key-head ({:.1} GB/s)",
            t_dot * 1e9 / kh,
            bytes / t_dot / 1e9,
            t_acc * 1e9 / kh,
            bytes / t_acc / 1e9
        );
    }
}
