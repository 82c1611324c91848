//! The Walsh–Hadamard rotation llama.cpp gives the heads that go into a quantized KV cache.
//!
//! A head's keys (or values) are not spread evenly over its dimensions: a few carry most of
//! the magnitude, and a block quantizer spends its one scale per 32 on those few. Turning
//! each head by an orthonormal Walsh–Hadamard matrix spreads every dimension over all the
//! others first, so the blocks quantize with less error. Dot products survive the turn
//! (queries turn with the keys), and the attention output turns back (the matrix is its own
//! inverse). llama.cpp does this since its `llama-kv-cache.cpp` gained `attn_rot_k`/
//! `attn_rot_v`: keys when the K cache is quantized (blocks of 64, doubled while the head
//! holds twice as many), values when the V cache is (blocks of 64), only for heads that
//! are a multiple of 64 wide. Its CPU computes the product as a fast transform
//! (`ggml_compute_forward_fwht`): scale by 1/√n first, then the butterflies from the
//! closest pairs out; [`walsh_hadamard`] (in `loupe-quant`, where the GPU's kernel is
//! tested against it) does the same operations in the same order, so the same bits.

pub use loupe_quant::walsh_hadamard;

use super::config::Config;
use super::kv_cache::{KvType, KvTypes};

/// The narrowest rotation, and the width both the keys' and the values' start from.
const BLOCK: usize = 64;

/// Which parts of a cache are rotated, and in blocks of how many elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KvRotation {
    /// Queries and keys turn in blocks of this many, when the K cache is quantized.
    pub k: Option<usize>,
    /// Values turn (and the attention output turns back) in blocks of this many.
    pub v: Option<usize>,
}

impl KvRotation {
    /// llama.cpp's choice for these cache types and this model's heads.
    pub fn for_cache(types: KvTypes, c: &Config) -> KvRotation {
        KvRotation::for_heads(types, c.head_dim, c.head_dim_v)
    }

    /// The same for heads of `head_dim` key and `head_dim_v` value elements.
    fn for_heads(types: KvTypes, head_dim: usize, head_dim_v: usize) -> KvRotation {
        let quantized = |t: KvType| matches!(t, KvType::Q8_0 | KvType::Q4_0);
        let k = (quantized(types.k) && head_dim.is_multiple_of(BLOCK)).then(|| {
            let mut n = BLOCK;
            while head_dim.is_multiple_of(2 * n) {
                n *= 2;
            }
            n
        });
        let v = (quantized(types.v) && head_dim_v.is_multiple_of(BLOCK)).then_some(BLOCK);
        KvRotation { k, v }
    }

    /// How a session header and an error message name it: "" when nothing turns.
    pub fn describe(self) -> String {
        match (self.k, self.v) {
            (None, None) => String::new(),
            (Some(k), None) => format!("keys Hadamard-rotated in blocks of {k}"),
            (None, Some(v)) => format!("values Hadamard-rotated in blocks of {v}"),
            (Some(k), Some(v)) => {
                format!("keys and values Hadamard-rotated in blocks of {k} and {v}")
            }
        }
    }
}

/// Turn every `block`-wide piece of `x` (heads laid end to end, each a whole number of
/// blocks).
pub fn rotate_blocks(x: &mut [f32], block: usize) {
    x.chunks_exact_mut(block).for_each(walsh_hadamard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attention::tests::values as pseudo_random;

    /// Sylvester's matrix entry (i, j): the sign is the parity of the bits i and j share.
    fn sign(i: usize, j: usize) -> f64 {
        if (i & j).count_ones().is_multiple_of(2) {
            1.0
        } else {
            -1.0
        }
    }

    #[test]
    fn rotations_follow_llama_cpp_rules() {
        let rot = |k, v, d, dv| KvRotation::for_heads(KvTypes { k, v }, d, dv);
        let (f16, q8, q4) = (KvType::F16, KvType::Q8_0, KvType::Q4_0);
        let r = |k, v| KvRotation { k, v };
        assert_eq!(rot(f16, f16, 128, 128), r(None, None));
        assert_eq!(rot(q8, q8, 64, 64), r(Some(64), Some(64)));
        assert_eq!(rot(q4, q4, 128, 128), r(Some(128), Some(64)));
        assert_eq!(rot(q8, q8, 256, 256), r(Some(256), Some(64)));
        assert_eq!(rot(q8, f16, 192, 192), r(Some(64), None));
        assert_eq!(rot(f16, q4, 128, 128), r(None, Some(64)));
        assert_eq!(rot(q8, q8, 96, 96), r(None, None));
        assert_eq!(rot(KvType::F32, q8, 80, 128), r(None, Some(64)));
    }

    #[test]
    fn the_transform_is_the_orthonormal_matrix_product() {
        for n in [64, 128, 256] {
            let x = pseudo_random(n, n as u64);
            let mut y = x.clone();
            walsh_hadamard(&mut y);
            for (i, &yi) in y.iter().enumerate() {
                let want: f64 =
                    (0..n).map(|j| sign(i, j) * x[j] as f64).sum::<f64>() / (n as f64).sqrt();
                assert!(
                    (yi as f64 - want).abs() < 1e-4,
                    "n {n} row {i}: {yi} vs {want}"
                );
            }
        }
    }

    #[test]
    fn turning_twice_gives_the_input_back_and_dots_survive() {
        let (a, b) = (pseudo_random(128, 1), pseudo_random(128, 2));
        let (mut ra, mut rb) = (a.clone(), b.clone());
        rotate_blocks(&mut ra, 64);
        rotate_blocks(&mut rb, 64);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!((dot(&a, &b) - dot(&ra, &rb)).abs() < 1e-3);
        assert_ne!(ra, a, "the rotation changed nothing");
        rotate_blocks(&mut ra, 64);
        for (r, x) in ra.iter().zip(&a) {
            assert!((r - x).abs() < 1e-5, "{r} vs {x}");
        }
    }

    #[test]
    fn the_butterflies_run_in_llama_cpp_order() {
        // Widths 1, 2, 4, … in that order, each pair summed before it is differenced: the
        // same rounding as ggml's loop. Written out plainly here for n = 8.
        let x = pseudo_random(8, 9);
        let s = 1.0 / 8f32.sqrt();
        let mut w: Vec<f32> = x.iter().map(|v| v * s).collect();
        for len in [1, 2, 4] {
            for i in (0..8).step_by(2 * len) {
                for j in i..i + len {
                    let (u, v) = (w[j], w[j + len]);
                    w[j] = u + v;
                    w[j + len] = u - v;
                }
            }
        }
        let mut y = x.clone();
        walsh_hadamard(&mut y);
        assert_eq!(
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            w.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
