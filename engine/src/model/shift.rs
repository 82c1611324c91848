//! Context shift: drop a span of cache positions and keep the tokens after it without
//! evaluating them again, as llama.cpp's context shift does (`seq_rm`, `seq_add`, and the
//! K-shift graph of `llama-kv-cache.cpp`).
//!
//! RoPE turns a key at position p by angles p·θᵢ; turning it again by −Δ·θᵢ leaves it as
//! the key of position p − Δ. So the positions after the dropped span move down by Δ
//! (keys and values as stored), and each moved key is turned by −Δ with the frequencies
//! its layer used in the forward pass: the sliding-window layers' own base and scale
//! (gemma3), the file's frequency factors. Values carry no position and move as they are.
//!
//! What it does not do: the kept tokens' keys and values were computed while they attended
//! to the dropped ones, and stay so. A fresh evaluation of the shorter sequence would give
//! (slightly) different ones; like llama.cpp, loupe accepts that to save the evaluation.

use std::ops::Range;

use super::hadamard::rotate_blocks;
use super::kv_cache::KvCache;
use super::ops::{rope_apply, rope_cache_at};
use super::Model;

/// The cos/sin table that turns layer `layer`'s keys by `delta` positions (negative:
/// towards the start), computed as the forward pass computes the angles of a position.
pub fn rotation(model: &Model, layer: usize, delta: f32, table: &mut [f32]) {
    let c = &model.config;
    // The same choice as `forward`: sliding-window layers have their own base and scale.
    let (base, scale) = if c.is_swa[layer] {
        (c.rope_base_local, c.rope_freq_scale_local)
    } else {
        (c.rope_base, c.rope_freq_scale)
    };
    let factors = model.weights.rope_freqs.as_deref();
    rope_cache_at(delta, c.n_rot, base, scale, factors, table);
}

/// Turn the keys of positions `range` of every layer by `delta` positions in place
/// (rounded back to the cache's type).
pub fn rotate_keys(model: &Model, cache: &mut KvCache, range: Range<usize>, delta: f32) {
    let c = &model.config;
    let tables: Vec<Vec<f32>> = (0..c.n_layer)
        .map(|l| {
            let mut t = vec![0.0; c.n_rot];
            rotation(model, l, delta, &mut t);
            t
        })
        .collect(); // (n_layer, n_rot) cos, sin per pair

    // A quantized cache holds keys Hadamard-rotated: turned back, moved, turned again
    // (llama.cpp's `build_rope_shift` does the same around its RoPE).
    let hadamard = cache.rotation.k;
    cache.update_keys(range, |layer, _, key| {
        if let Some(b) = hadamard {
            rotate_blocks(key, b);
        }
        rope_apply(key, c.n_rot, c.rope_style, &tables[layer]);
        if let Some(b) = hadamard {
            rotate_blocks(key, b);
        }
    });
}

/// Remove positions `drop` from a cache holding `0..n_past`: positions `drop.end..n_past`
/// move to `drop.start..`, their keys turned by −`drop.len()`. The cache then holds
/// `n_past - drop.len()` positions.
pub fn shift(model: &Model, cache: &mut KvCache, drop: Range<usize>, n_past: usize) {
    assert!(
        drop.start <= drop.end && drop.end <= n_past,
        "drop {drop:?} of {n_past} cached positions"
    );
    let (delta, kept) = (drop.len(), n_past - drop.end);
    if delta == 0 || kept == 0 {
        return;
    }
    cache.move_positions(drop.end, drop.start, kept);
    rotate_keys(model, cache, drop.start..drop.start + kept, -(delta as f32));
}
