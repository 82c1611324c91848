//! Batched matmul throughput of each kernel table: a weight matrix of random blocks times
//! a batch of activation rows, as prompt processing runs it (the weight rows split evenly
//! over THREADS threads, as the model's matmul splits them).
//!
//!     cargo run -p loupe-quant --release --example gemm_bench [ROWS COLS BATCH [THREADS]]
//!
//! Prints, per weight type and table, the time of one matmul and the multiply-adds per
//! nanosecond. Defaults: 4864 x 896 (qwen2.5 0.5B's up projection) times 512 rows, one
//! thread; a column count that is not a multiple of 256 skips the K-quants.
//! `GEMM_TYPES=Q4_0,Q4_K` limits the weight types.

use std::ops::Range;
use std::time::Instant;

use loupe_quant::{kernels, quantize_row, vec_dot_type, GgmlType};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("ROWS COLS BATCH as numbers"))
        .collect();
    let (rows, cols, batch, threads) = match args[..] {
        [r, c, b] => (r, c, b, 1),
        [r, c, b, t] => (r, c, b, t.max(1)),
        _ => (4864, 896, 512, 1),
    };
    let only: Option<Vec<String>> = std::env::var("GEMM_TYPES")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut unit = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    use GgmlType::*;
    for ty in [
        F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ] {
        let wanted = only
            .as_ref()
            .is_none_or(|o| o.iter().any(|t| t.eq_ignore_ascii_case(ty.name())));
        if cols % ty.block_elems() != 0 || !wanted {
            continue;
        }
        let w_row = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut w = vec![0u8; rows * w_row];
        for r in w.chunks_exact_mut(w_row) {
            let x: Vec<f32> = (0..cols).map(|_| unit()).collect();
            quantize_row(ty, &x, r).unwrap();
        }
        let act_ty = vec_dot_type(ty).unwrap();
        let a_row = act_ty.row_bytes(cols as u64).unwrap() as usize;
        let mut act = vec![0u8; batch * a_row];
        for r in act.chunks_exact_mut(a_row) {
            let x: Vec<f32> = (0..cols).map(|_| unit()).collect();
            kernels::quantize_activation(act_ty, &x, r).unwrap();
        }
        let mut out = vec![0f32; rows * batch];
        let shape = Shape {
            rows,
            cols,
            batch,
            threads,
        };
        for k in kernels::available() {
            if k.name() == "scalar" {
                continue;
            }
            let best = shape.best_of_3(&mut out, |part, r| {
                k.matmul(ty, &w, rows, cols, &act, batch, r, part).unwrap()
            });
            shape.report(ty, k.name(), best, "");
        }
        // Q4_0 and Q4_K repacked at load (packed.rs), on the table that runs them.
        if loupe_quant::packed::packs(ty) && kernels::kernels().runs_packed() {
            let k = kernels::kernels();
            let packed = loupe_quant::packed::PackedRows::new(ty, &w, rows, cols).unwrap();
            let best = shape.best_of_3(&mut out, |part, r| {
                k.matmul_packed(&packed, &act, batch, r, part).unwrap()
            });
            shape.report(ty, k.name(), best, "  (packed)");
        }
    }
}

struct Shape {
    rows: usize,
    cols: usize,
    batch: usize,
    threads: usize,
}

impl Shape {
    /// Best of three runs of `f` over the weight rows split into one share per thread
    /// (whole tiles, each its own slice of `out`), in seconds.
    fn best_of_3(&self, out: &mut [f32], f: impl Fn(&mut [f32], Range<usize>) + Sync) -> f64 {
        let chunk = self
            .rows
            .div_ceil(self.threads)
            .next_multiple_of(loupe_quant::BATCH_TILE_ROWS);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            std::thread::scope(|s| {
                for (ci, part) in out.chunks_mut(chunk * self.batch).enumerate() {
                    let f = &f;
                    s.spawn(move || {
                        let r0 = ci * chunk;
                        f(part, r0..r0 + part.len() / self.batch)
                    });
                }
            });
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    }

    fn report(&self, ty: GgmlType, table: &str, secs: f64, what: &str) {
        let macs = (self.rows * self.cols * self.batch) as f64;
        println!(
            "{ty:>7} {table:>7}  {:8.1} ms  {:6.1} MAC/ns{what}",
            secs * 1e3,
            macs / secs / 1e9
        );
    }
}
