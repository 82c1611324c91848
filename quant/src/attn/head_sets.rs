//! The key dots of one-query attention for sets of query heads sharing a KV head: each
//! key vector is widened once for the whole set, and each head keeps ggml's four
//! eight-lane chains and its reduction, so the bits are `dot_f16`'s. AVX2 code; the AVX2
//! build runs sets of three heads (12 chains in 16 registers), the AVX-512 one inlines it
//! with 32 registers and runs sets of four.
//!
//! Safety model: every function here requires AVX2, FMA and F16C (the callers check);
//! loads stay inside slices whose lengths are asserted first.

use std::arch::x86_64::*;

use super::simd::{load_f16, reduce, WIDE_Q};
use super::{LANES, STEP};
use crate::F16;

/// Whether [`dots`] takes this shape: whole steps of the head and queries that fit the
/// widened copy.
pub(super) fn fits(queries: &[F16], d: usize) -> bool {
    d.is_multiple_of(STEP) && queries.len() <= WIDE_Q
}

/// `out[h * n + j]` = query `h` · key `j` for a shape that [`fits`], heads in sets of
/// `SET` (at most 4).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dots<const SET: usize>(
    queries: &[F16],
    keys: &[F16],
    d: usize,
    out: &mut [f32],
) {
    assert!(fits(queries, d) && (1..=4).contains(&SET));
    let n = keys.len() / d;
    let g = queries.len() / d;
    // The queries widened once (exact).
    let mut wide = [0f32; WIDE_Q];
    for (w, q) in wide
        .chunks_exact_mut(LANES)
        .zip(queries.chunks_exact(LANES))
    {
        // SAFETY: eight halves in, eight floats out, both in bounds.
        unsafe { _mm256_storeu_ps(w.as_mut_ptr(), load_f16(q)) };
    }
    let mut h0 = 0;
    while h0 < g {
        let set = SET.min(g - h0);
        let rows = &wide[h0 * d..][..set * d];
        let out = &mut out[h0 * n..][..set * n];
        // SAFETY: the caller's features; rows hold `set` queries of whole steps.
        unsafe {
            match set {
                4 => sized::<4>(rows, keys, d, out),
                3 => sized::<3>(rows, keys, d, out),
                2 => sized::<2>(rows, keys, d, out),
                _ => sized::<1>(rows, keys, d, out),
            }
        }
        h0 += set;
    }
}

/// [`set`] with the common head widths known when compiled: the loop over the
/// dimensions unrolls and the row offsets fold (a third faster at 128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sized<const G: usize>(rows: &[f32], keys: &[F16], d: usize, out: &mut [f32]) {
    // SAFETY: the caller's features and shapes, passed on.
    unsafe {
        match d {
            64 => set::<G, 64>(rows, keys, d, out),
            128 => set::<G, 128>(rows, keys, d, out),
            256 => set::<G, 256>(rows, keys, d, out),
            _ => set::<G, 0>(rows, keys, d, out),
        }
    }
}

/// The dots of `G` widened query rows with every key: per head the four eight-lane
/// chains of ggml's f16 dot, each key vector widened once for the `G` heads. `D` is the
/// head width when fixed at compile time (0: `d`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn set<const G: usize, const D: usize>(
    rows: &[f32],
    keys: &[F16],
    d: usize,
    out: &mut [f32],
) {
    let d = if D == 0 { d } else { D };
    let n = keys.len() / d;
    assert!(rows.len() == G * d && out.len() == G * n && d.is_multiple_of(STEP));
    let q = rows.as_ptr();
    for (j, k) in keys.chunks_exact(d).enumerate() {
        let k = k.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for i in (0..d).step_by(STEP) {
            for r in 0..4 {
                let at = i + r * LANES;
                // SAFETY: at + LANES <= d (whole steps, asserted above): eight halves of
                // this key and eight floats of each of the G query rows are in bounds.
                unsafe {
                    let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.add(at) as *const __m128i));
                    for (h, a) in acc.iter_mut().enumerate() {
                        let qv = _mm256_loadu_ps(q.add(h * d + at));
                        a[r] = _mm256_fmadd_ps(qv, kv, a[r]);
                    }
                }
            }
        }
        for (h, a) in acc.into_iter().enumerate() {
            // SAFETY: AVX2 is part of this function's features.
            out[h * n + j] = unsafe { reduce(a) };
        }
    }
}
