//! Plain f32 vector loops of the attention, compiled twice: for the baseline CPU and with
//! AVX2 enabled, chosen at run time with the kernel table (`LOUPE_KERNELS=scalar` keeps
//! the baseline). Both versions perform the same multiplies and adds in the same order per
//! output element (no fused multiply-add, no reassociation), so they give the same bits;
//! only the width of the vectors the compiler may use differs.

/// Lanes of the interleaved layout [`dots_by_lanes`] reads.
pub const LANES: usize = 8;

/// `out[l] = sum over d of q[d] * kt[d * LANES + l]`, each sum taken in order of `d`:
/// the dot products of `q` with eight vectors stored interleaved (`kt.len()` must be
/// `q.len() * LANES`).
pub fn dots_by_lanes(q: &[f32], kt: &[f32], out: &mut [f32; LANES]) {
    assert_eq!(
        kt.len(),
        q.len() * LANES,
        "interleaved vectors of the wrong length"
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() confirmed AVX2 on this CPU.
        return unsafe { dots_by_lanes_avx2(q, kt, out) };
    }
    dots_by_lanes_body(q, kt, out)
}

/// `y[i] += a * x[i]` (a product, then a sum, rounded each).
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy of different lengths");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: use_avx2() confirmed AVX2 on this CPU.
        return unsafe { axpy_avx2(y, a, x) };
    }
    axpy_body(y, a, x)
}

#[inline(always)]
fn dots_by_lanes_body(q: &[f32], kt: &[f32], out: &mut [f32; LANES]) {
    let mut acc = [0f32; LANES];
    for (&qd, kd) in q.iter().zip(kt.chunks_exact(LANES)) {
        for (a, &k) in acc.iter_mut().zip(kd) {
            *a += qd * k;
        }
    }
    *out = acc;
}

#[inline(always)]
fn axpy_body(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_by_lanes_avx2(q: &[f32], kt: &[f32], out: &mut [f32; LANES]) {
    dots_by_lanes_body(q, kt, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_body(y, a, x)
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
            let kt = values(n * LANES, 2);
            let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
            dots_by_lanes(&q, &kt, &mut a);
            dots_by_lanes_body(&q, &kt, &mut b);
            assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "n = {n}");
            for l in 0..LANES {
                let mut s = 0f32;
                for d in 0..n {
                    s += q[d] * kt[d * LANES + l];
                }
                assert_eq!(s.to_bits(), a[l].to_bits());
            }

            let x = values(n, 3);
            let (mut y1, mut y2) = (values(n, 4), values(n, 4));
            axpy(&mut y1, 0.37, &x);
            axpy_body(&mut y2, 0.37, &x);
            assert_eq!(y1, y2);
        }
    }
}
