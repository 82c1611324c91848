//! Plain f32 vector loops of the attention, compiled twice: for the baseline CPU and with
//! AVX2 enabled, chosen at run time with the kernel table (`LOUPE_KERNELS=scalar` keeps
//! the baseline). Both versions perform the same multiplies and adds in the same order per
//! output element (no fused multiply-add, no reassociation), so they give the same bits;
//! only the width of the vectors the compiler may use differs.

/// Lanes of the interleaved layout [`dots_by_lanes`] reads.
pub const LANES: usize = 8;

/// `out[b][l] = sum over d of q[d] * kt[(b * q.len() + d) * LANES + l]`, each sum taken
/// in order of `d`: the dot products of `q` with `out.len()` blocks of eight vectors
/// stored interleaved (`kt.len()` must be `out.len() * q.len() * LANES`). Four blocks go
/// side by side: each sum is a chain of dependent adds, so one block alone waits on the
/// adder's latency at every `d`.
pub fn dots_by_lanes(q: &[f32], kt: &[f32], out: &mut [[f32; LANES]]) {
    assert_eq!(
        kt.len(),
        out.len() * q.len() * LANES,
        "interleaved vectors of the wrong length"
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() confirmed AVX2 on this CPU.
        return unsafe { dots_by_lanes_avx2(q, kt, out) };
    }
    dots_by_lanes_body(q, kt, out)
}

/// `out[d] = 0 + w[0] * rows[d] + w[1] * rows[stride + d] + …`, summed in order of the
/// rows: the same bits as zeroing `out` and adding `w[j] * row j` into it row by row,
/// with `out` kept in registers across the rows. `rows` must hold `w.len()` rows of
/// `out.len()` values, `stride` apart.
pub fn weighted_sum(out: &mut [f32], w: &[f32], rows: &[f32], stride: usize) {
    if let Some(n) = w.len().checked_sub(1) {
        assert!(
            rows.len() >= n * stride + out.len(),
            "weighted_sum: rows too short"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() confirmed AVX2 on this CPU.
        return unsafe { weighted_sum_avx2(out, w, rows, stride) };
    }
    weighted_sum_body(out, w, rows, stride)
}

/// Output values summed together, in registers.
const SUM_CHUNK: usize = 64;

#[inline(always)]
fn weighted_sum_body(out: &mut [f32], w: &[f32], rows: &[f32], stride: usize) {
    let full = out.len() / SUM_CHUNK * SUM_CHUNK;
    let (head, tail) = out.split_at_mut(full);
    for (c, o) in head.chunks_exact_mut(SUM_CHUNK).enumerate() {
        // A fixed-size accumulator, so it stays in registers across the rows.
        let mut acc = [0f32; SUM_CHUNK];
        for (j, &wj) in w.iter().enumerate() {
            let r: &[f32; SUM_CHUNK] = rows[j * stride + c * SUM_CHUNK..][..SUM_CHUNK]
                .try_into()
                .expect("a whole chunk");
            for (a, &x) in acc.iter_mut().zip(r) {
                *a += wj * x;
            }
        }
        o.copy_from_slice(&acc);
    }
    if !tail.is_empty() {
        tail.fill(0.0);
        for (j, &wj) in w.iter().enumerate() {
            let r = &rows[j * stride + full..][..tail.len()];
            for (a, &x) in tail.iter_mut().zip(r) {
                *a += wj * x;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weighted_sum_avx2(out: &mut [f32], w: &[f32], rows: &[f32], stride: usize) {
    weighted_sum_body(out, w, rows, stride)
}

/// Blocks scored side by side.
const BLOCKS: usize = 4;

#[inline(always)]
fn dots_by_lanes_body(q: &[f32], kt: &[f32], out: &mut [[f32; LANES]]) {
    let block = q.len() * LANES;
    let done = out.len() / BLOCKS * BLOCKS;
    let mut groups = out.chunks_exact_mut(BLOCKS);
    for (g, o) in (&mut groups).enumerate() {
        let kts: [&[f32]; BLOCKS] =
            std::array::from_fn(|b| &kt[(g * BLOCKS + b) * block..][..block]);
        let mut acc = [[0f32; LANES]; BLOCKS];
        for (d, &qd) in q.iter().enumerate() {
            for (a, k) in acc.iter_mut().zip(kts) {
                let k: &[f32; LANES] = k[d * LANES..][..LANES].try_into().expect("8 lanes");
                for (a, &k) in a.iter_mut().zip(k) {
                    *a += qd * k;
                }
            }
        }
        o.copy_from_slice(&acc);
    }
    for (b, o) in groups.into_remainder().iter_mut().enumerate() {
        let k = &kt[(done + b) * block..][..block];
        let mut acc = [0f32; LANES];
        for (&qd, kd) in q.iter().zip(k.chunks_exact(LANES)) {
            for (a, &k) in acc.iter_mut().zip(kd) {
                *a += qd * k;
            }
        }
        *o = acc;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_by_lanes_avx2(q: &[f32], kt: &[f32], out: &mut [[f32; LANES]]) {
    dots_by_lanes_body(q, kt, out)
}

#[cfg(target_arch = "x86_64")]
fn use_avx2() -> bool {
    use std::sync::OnceLock;
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| crate::kernels().name() != "scalar")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / 1e9 - 2.0)
            .collect()
    }

    #[test]
    fn simd_and_baseline_give_the_same_bits() {
        for n in [1, 7, 64, 129, 256] {
            let q = values(n, 1);
            // 1..=9 blocks: whole groups of four and every remainder.
            for nb in 1..=9 {
                let kt = values(nb * n * LANES, 2 + nb as u32);
                let (mut a, mut b) = (vec![[0f32; LANES]; nb], vec![[0f32; LANES]; nb]);
                dots_by_lanes(&q, &kt, &mut a);
                dots_by_lanes_body(&q, &kt, &mut b);
                assert_eq!(a, b, "n = {n}, {nb} blocks");
                for (blk, got) in a.iter().enumerate() {
                    for l in 0..LANES {
                        let mut s = 0f32;
                        for d in 0..n {
                            s += q[d] * kt[(blk * n + d) * LANES + l];
                        }
                        assert_eq!(s.to_bits(), got[l].to_bits(), "n {n}, block {blk}");
                    }
                }
            }

            // weighted_sum = zero, then each row's product added in, row by row.
            let rows = values(5 * (n + 3), 5);
            let w = values(5, 6);
            let mut want = vec![0f32; n];
            for (j, &wj) in w.iter().enumerate() {
                for (y, &x) in want.iter_mut().zip(&rows[j * (n + 3)..][..n]) {
                    *y += wj * x;
                }
            }
            let mut got = vec![f32::NAN; n];
            weighted_sum(&mut got, &w, &rows, n + 3);
            assert_eq!(got, want);
            weighted_sum_body(&mut got, &w, &rows, n + 3);
            assert_eq!(got, want);
        }
    }
}
