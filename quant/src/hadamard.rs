//! The Walsh–Hadamard transform llama.cpp applies to the heads of a quantized KV cache
//! (`ggml_compute_forward_fwht` on its CPU): the engine turns heads with it, and the GPU's
//! kernel is tested against it bit for bit.

/// Turn `x` (a power-of-two length) by the orthonormal Walsh–Hadamard matrix in Sylvester's
/// order, with llama.cpp's operations: every element scaled by 1/√n, then for widths 1, 2,
/// 4, … each pair (u, v) replaced by (u + v, u − v).
pub fn walsh_hadamard(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two(), "a Hadamard block of {n}");
    let scale = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= scale);
    let mut len = 1;
    while len < n {
        for pair in x.chunks_exact_mut(2 * len) {
            let (lo, hi) = pair.split_at_mut(len);
            for (u, v) in lo.iter_mut().zip(hi) {
                (*u, *v) = (*u + *v, *u - *v);
            }
        }
        len *= 2;
    }
}
