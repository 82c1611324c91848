//! The K-quants: super-blocks of `QK_K` = 256 weights split into sub-blocks of 16 or 32,
//! each sub-block with its own small integer scale (and minimum) that is itself scaled by
//! f16 super-block factors. Q8_K is the activation format they are all dotted with.

pub mod make_quants;
pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;
pub mod q8_k;
pub mod scale_min;

pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_k::BlockQ4K;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_k::BlockQ8K;

/// Weights per super-block.
pub const QK_K: usize = 256;

/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// The integer core of ggml's generic K-quant dot products: `a` holds the 256 weight
/// quants as small signed integers, `scales` one integer scale per 16 weights. Returns
/// `scales[e / 16] * a[e] * q8[e]` summed into eight lanes by `e % 8`, the way ggml's
/// portable code accumulates (`aux32[8]`), so that the float steps after it can follow
/// ggml's order too.
#[inline]
pub(crate) fn lane_sums(a: &[i8; QK_K], q8: &[i8; QK_K], scales: &[i32; 16]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for ((a, q8), &sc) in a.chunks_exact(16).zip(q8.chunks_exact(16)).zip(scales) {
        for (l, (&a, &q)) in a.iter().zip(q8).enumerate() {
            lanes[l % 8] += sc * (a as i32 * q as i32);
        }
    }
    lanes
}

/// Q4_K's and Q5_K's eight 6-bit (scale, min) pairs, each pair covering 32 weights,
/// spread to the per-16 scale table [`lane_sums`] takes, and the per-32 mins.
#[inline]
pub(crate) fn scales_mins_k4(packed: &[u8; K_SCALE_SIZE]) -> ([i32; 16], [i32; 8]) {
    let mut scales = [0i32; 16];
    let mut mins = [0i32; 8];
    for j in 0..8 {
        let (sc, m) = scale_min::scale_min_k4(j, packed);
        scales[2 * j] = sc as i32;
        scales[2 * j + 1] = sc as i32;
        mins[j] = m as i32;
    }
    (scales, mins)
}

/// `sum(bsums[j] * mins[j / 2])`: the activation's 16-element sums times the per-32 mins,
/// the part of a Q4_K/Q5_K dot product that the weights' minimum contributes.
#[inline]
pub(crate) fn mins_dot(bsums: &[i16; 16], mins: &[i32; 8]) -> i32 {
    bsums
        .iter()
        .enumerate()
        .map(|(j, &s)| s as i32 * mins[j / 2])
        .sum()
}
