//! The vector loops of attention over an f16 (or f32) KV cache, in ggml-cpu's x86 order:
//! the dot product of a query with a key row (four 8-lane f32 accumulators fed by fused
//! multiply-adds, then ggml's reduction), the value accumulator's fused multiply-add and
//! rescale kept in f16 or f32, and row conversions between f16 and f32.
//!
//! Each loop exists as a scalar reference that spells out the order, and as an AVX2 +
//! FMA + F16C version (x86_64) or a NEON one (aarch64) chosen at run time with the kernel
//! table (`LOUPE_KERNELS=scalar` keeps the reference). On x86 the key dots take sets of
//! heads per key vector (`attn/head_sets.rs`), the AVX-512 table's f16 value loop four
//! heads per value row (`attn/avx512.rs`), and the softmax's exponentials are computed
//! inline as glibc's `expf` does (`attn/expf.rs`). They give the reference's bits
//! (the AVX2 one for finite values: F16C keeps NaN payloads; the NEON one for every
//! value), and tests hold them to it. Following ggml's order rather than a plain loop is
//! what keeps loupe's attention on llama.cpp's rounding.

use crate::F16;

/// Elements one step of ggml's f16/f32 loops covers on AVX2: four registers of eight.
pub const STEP: usize = 32;
const LANES: usize = 8;
const ARR: usize = STEP / LANES;

/// `out[h * n + j]` = the dot product of query `h` with key `j`, where `queries` holds
/// `g` rows of `d` halves and `keys` holds `n` rows of `d` halves (`out.len() == g * n`).
/// Each dot is ggml's `ggml_vec_dot_f16` on AVX2; keys are the outer loop, so a group of
/// queries sharing a key head reads each key once.
pub fn dots_f16(queries: &[F16], keys: &[F16], d: usize, out: &mut [f32]) {
    let g = queries.len() / d.max(1);
    let n = keys.len() / d.max(1);
    assert!(
        d > 0 && queries.len() == g * d && keys.len() == n * d && out.len() == g * n,
        "dots_f16: {g} queries and {n} keys of {d} do not fill {} scores",
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx512() {
        // SAFETY: use_avx512() confirmed the AVX-512 table's features on this CPU.
        return unsafe { avx512::dots_f16(queries, keys, d, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::dots_f16(queries, keys, d, out) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::dots_f16(queries, keys, d, out) };
    }
    for (j, k) in keys.chunks_exact(d).enumerate() {
        for (h, q) in queries.chunks_exact(d).enumerate() {
            out[h * n + j] = dot_f16_ref(q, k);
        }
    }
}

/// The running state of one query head's online softmax (llama.cpp's flash-attention
/// loop): the largest score so far and the sum of the weights, relative to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Online {
    pub max: f32,
    pub sum: f32,
}

impl Online {
    pub const START: Online = Online {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };

    /// Take in one score: the factor the accumulator is rescaled by (1 unless the score
    /// is a new maximum) and the weight of this score's value row.
    #[inline(always)]
    fn step(&mut self, score: f32) -> (f32, f32) {
        let (mut ms, mut vs) = (1f32, 1f32);
        if score > self.max {
            ms = (self.max - score).exp();
            self.max = score;
        } else {
            vs = (score - self.max).exp();
        }
        self.sum = self.sum * ms + vs;
        (ms, vs)
    }
}

/// Online softmax over `n` keys for `g` query heads with f16 values: for each key `j` in
/// order and each head `h`, the score `scores[h * n + j]` updates `state[h]`, rescales
/// `acc` row `h` when it is a new maximum ([`scale_f16`]) and adds value row `j` times
/// its weight ([`mad_f16`]). `values` holds `n` rows and `acc` `g` rows of `dv` halves.
pub fn accumulate_f16(
    scores: &[f32],
    values: &[F16],
    dv: usize,
    acc: &mut [F16],
    state: &mut [Online],
) {
    let g = state.len();
    let n = scores.len() / g.max(1);
    assert!(
        scores.len() == g * n && values.len() == n * dv && acc.len() == g * dv,
        "accumulate_f16: shapes do not match"
    );
    #[cfg(target_arch = "x86_64")]
    if use_avx512() && dv.is_multiple_of(avx512::CHUNK) {
        // SAFETY: use_avx512() confirmed the AVX-512 table's features on this CPU.
        return unsafe { avx512::accumulate_f16(scores, values, dv, acc, state) };
    }
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::accumulate_f16(scores, values, dv, acc, state) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::accumulate_f16(scores, values, dv, acc, state) };
    }
    accumulate_f16_ref(scores, values, dv, acc, state)
}

/// [`accumulate_f16`] with f32 values and accumulators ([`mad_f32`]; the rescale is an
/// f32 multiply).
pub fn accumulate_f32(
    scores: &[f32],
    values: &[f32],
    dv: usize,
    acc: &mut [f32],
    state: &mut [Online],
) {
    let g = state.len();
    let n = scores.len() / g.max(1);
    assert!(
        scores.len() == g * n && values.len() == n * dv && acc.len() == g * dv,
        "accumulate_f32: shapes do not match"
    );
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::accumulate_f32(scores, values, dv, acc, state) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // The reference's loop with NEON's row step.
        // SAFETY: NEON is part of the aarch64 baseline; the rows have equal lengths.
        let mad = |a: &mut [f32], v: &[f32], w: f32| unsafe { neon::mad_f32(a, v, w) };
        return key_by_key_f32(scores, values, dv, acc, state, mad);
    }
    accumulate_f32_ref(scores, values, dv, acc, state)
}

/// `acc[i] = f16(acc[i] + x[i] * v)`, ggml's `ggml_vec_mad_f16` (fused for whole steps).
pub fn mad_f16(acc: &mut [F16], x: &[F16], v: f32) {
    assert_eq!(acc.len(), x.len(), "mad_f16: rows of different lengths");
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::mad_f16(acc, x, v) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::mad_f16(acc, x, v) };
    }
    mad_f16_ref(acc, x, v)
}

/// `acc[i] = f16(acc[i] * v)`, ggml's `ggml_vec_scale_f16`.
pub fn scale_f16(acc: &mut [F16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::scale_f16(acc, v) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::scale_f16(acc, v) };
    }
    scale_f16_ref(acc, v)
}

/// `acc[i] += x[i] * v`, ggml's `ggml_vec_mad_f32` (fused for whole steps).
pub fn mad_f32(acc: &mut [f32], x: &[f32], v: f32) {
    assert_eq!(acc.len(), x.len(), "mad_f32: rows of different lengths");
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::mad_f32(acc, x, v) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::mad_f32(acc, x, v) };
    }
    mad_f32_ref(acc, x, v)
}

/// Widen a row of halves (the same bits as [`F16::to_f32`] for every non-NaN value).
pub fn f16_to_f32(src: &[F16], dst: &mut [f32]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "f16_to_f32: rows of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::f16_to_f32(src, dst) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::f16_to_f32(src, dst) };
    }
    f16_to_f32_ref(src, dst)
}

/// Narrow a row to halves, rounding to nearest even (as [`F16::from_f32`] for every
/// non-NaN value).
pub fn f32_to_f16(src: &[f32], dst: &mut [F16]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "f32_to_f16: rows of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::f32_to_f16(src, dst) };
    }
    #[cfg(target_arch = "aarch64")]
    if use_simd() {
        // SAFETY: NEON is part of the aarch64 baseline.
        return unsafe { neon::f32_to_f16(src, dst) };
    }
    f32_to_f16_ref(src, dst)
}

// The scalar references: what each loop above computes, in that order.

/// [`accumulate_f16`] key by key and head by head.
fn accumulate_f16_ref(
    scores: &[f32],
    values: &[F16],
    dv: usize,
    acc: &mut [F16],
    state: &mut [Online],
) {
    let n = values.len() / dv;
    for (j, v) in values.chunks_exact(dv).enumerate() {
        for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
            let (ms, vs) = st.step(scores[h * n + j]);
            if ms != 1.0 {
                scale_f16_ref(a, ms);
            }
            mad_f16_ref(a, v, vs);
        }
    }
}

/// [`accumulate_f32`] key by key and head by head.
fn accumulate_f32_ref(
    scores: &[f32],
    values: &[f32],
    dv: usize,
    acc: &mut [f32],
    state: &mut [Online],
) {
    key_by_key_f32(scores, values, dv, acc, state, mad_f32_ref)
}

/// The f32 loop key by key and head by head, each row step by `mad`.
#[inline]
fn key_by_key_f32(
    scores: &[f32],
    values: &[f32],
    dv: usize,
    acc: &mut [f32],
    state: &mut [Online],
    mut mad: impl FnMut(&mut [f32], &[f32], f32),
) {
    let n = values.len() / dv;
    for (j, v) in values.chunks_exact(dv).enumerate() {
        for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
            let (ms, vs) = st.step(scores[h * n + j]);
            if ms != 1.0 {
                a.iter_mut().for_each(|x| *x *= ms);
            }
            mad(a, v, vs);
        }
    }
}

fn mad_f16_ref(acc: &mut [F16], x: &[F16], v: f32) {
    let np = acc.len() / STEP * STEP;
    for (i, (a, &x)) in acc.iter_mut().zip(x).enumerate() {
        let (y, x) = (a.to_f32(), x.to_f32());
        *a = F16::from_f32(if i < np { x.mul_add(v, y) } else { y + x * v });
    }
}

fn scale_f16_ref(acc: &mut [F16], v: f32) {
    for a in acc {
        *a = F16::from_f32(a.to_f32() * v);
    }
}

fn mad_f32_ref(acc: &mut [f32], x: &[f32], v: f32) {
    let np = acc.len() / STEP * STEP;
    for (i, (a, &x)) in acc.iter_mut().zip(x).enumerate() {
        *a = if i < np { x.mul_add(v, *a) } else { *a + x * v };
    }
}

fn f16_to_f32_ref(src: &[F16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

fn f32_to_f16_ref(src: &[f32], dst: &mut [F16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = F16::from_f32(s);
    }
}

/// ggml's `ggml_vec_dot_f16` on AVX2, spelled out: for whole steps, lane `l` of register
/// `r` accumulates element `32 i + 8 r + l` by fused multiply-add; the registers are
/// added pairwise (0+2, 1+3, then 0+1), the two halves of the last one added, then two
/// horizontal adds; the leftover elements are added to that in f64.
fn dot_f16_ref(x: &[F16], y: &[F16]) -> f32 {
    let np = x.len() / STEP * STEP;
    let mut acc = [[0f32; LANES]; ARR];
    for i in (0..np).step_by(STEP) {
        for (r, a) in acc.iter_mut().enumerate() {
            for (l, a) in a.iter_mut().enumerate() {
                let e = i + r * LANES + l;
                *a = x[e].to_f32().mul_add(y[e].to_f32(), *a);
            }
        }
    }
    let [a0, a1, a2, a3] = acc;
    let add =
        |a: [f32; LANES], b: [f32; LANES]| -> [f32; LANES] { std::array::from_fn(|l| a[l] + b[l]) };
    let s = add(add(a0, a2), add(a1, a3));
    let t0: [f32; 4] = std::array::from_fn(|l| s[l] + s[l + 4]);
    let mut sum = ((t0[0] + t0[1]) + (t0[2] + t0[3])) as f64;
    for e in np..x.len() {
        sum += (x[e].to_f32() * y[e].to_f32()) as f64;
    }
    sum as f32
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn use_simd() -> bool {
    use std::sync::OnceLock;
    static SIMD: OnceLock<bool> = OnceLock::new();
    // The AVX2 and AVX-512 tables both require AVX2, FMA and F16C; on aarch64 every
    // table but the scalar one means NEON, which every aarch64 CPU has.
    *SIMD.get_or_init(|| crate::kernels().name() != "scalar")
}

/// Whether the kernel table in use is the AVX-512 one (so the one-query loops may use its
/// 32 registers); `LOUPE_KERNELS=avx2` keeps the AVX2 loops.
#[cfg(target_arch = "x86_64")]
fn use_avx512() -> bool {
    use std::sync::OnceLock;
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| crate::kernels().name() == "avx512")
}

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod expf;
#[cfg(target_arch = "x86_64")]
mod head_sets;

#[cfg(target_arch = "x86_64")]
mod simd {
    //! Safety model: every function here requires AVX2, FMA and F16C (the callers check
    //! with `use_simd`); loads and stores are unaligned and stay inside slices whose
    //! lengths were checked first.
    use std::arch::x86_64::*;

    use super::{dot_f16_ref, expf, head_sets, Online, LANES, STEP};
    use crate::F16;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn load_f16(p: &[F16]) -> __m256 {
        debug_assert!(p.len() >= LANES);
        // SAFETY: eight halves (16 bytes) are in bounds; unaligned load.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.as_ptr() as *const __m128i)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store_f16(p: &mut [F16], v: __m256) {
        debug_assert!(p.len() >= LANES);
        // SAFETY: eight halves (16 bytes) are in bounds; unaligned store.
        unsafe {
            _mm_storeu_si128(
                p.as_mut_ptr() as *mut __m128i,
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v),
            )
        }
    }

    /// Query elements [`dots_f16`] widens once per call (16 KiB of stack); larger groups
    /// take the plain loop. Smaller ones go through the keys in sets of three heads.
    pub(super) const WIDE_Q: usize = 4096;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots_f16(queries: &[F16], keys: &[F16], d: usize, out: &mut [f32]) {
        let n = keys.len() / d;
        let np = d / STEP * STEP;
        if !head_sets::fits(queries, d) {
            for (j, k) in keys.chunks_exact(d).enumerate() {
                for (h, q) in queries.chunks_exact(d).enumerate() {
                    out[h * n + j] = if np < d {
                        dot_f16_ref(q, k)
                    } else {
                        // SAFETY: AVX2, FMA and F16C per the caller; d is whole steps.
                        unsafe { dot_f16(q, k) }
                    };
                }
            }
            return;
        }
        // SAFETY: AVX2, FMA and F16C per the caller; the shape fits (checked above).
        unsafe { head_sets::dots::<3>(queries, keys, d, out) }
    }

    /// ggml's f16 dot of one query and one key (whole steps): four eight-lane chains.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f16(q: &[F16], k: &[F16]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..q.len()).step_by(STEP) {
            for (r, a) in acc.iter_mut().enumerate() {
                let at = i + r * LANES;
                // SAFETY: at + LANES <= len, whole steps per the caller.
                *a = unsafe { _mm256_fmadd_ps(load_f16(&q[at..]), load_f16(&k[at..]), *a) };
            }
        }
        // SAFETY: AVX2 per the caller.
        unsafe { reduce(acc) }
    }

    /// ggml's reduction of the four chains: (0 + 2) + (1 + 3), then the halves, then the
    /// lanes pairwise.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn reduce(acc: [__m256; 4]) -> f32 {
        let s01 = _mm256_add_ps(acc[0], acc[2]);
        let s23 = _mm256_add_ps(acc[1], acc[3]);
        let s = _mm256_add_ps(s01, s23);
        let t0 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }

    /// Value dimensions one pass keeps in registers (eight vectors: enough independent
    /// chains to hide the fused multiply-add and the two conversions of each step).
    const CHUNK: usize = 64;
    /// Keys whose weights one pass computes first.
    pub(super) const KEYS: usize = expf::MAX_KEYS;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn accumulate_f16(
        scores: &[f32],
        values: &[F16],
        dv: usize,
        acc: &mut [F16],
        state: &mut [Online],
    ) {
        let n = values.len() / dv;
        if dv.is_multiple_of(CHUNK) {
            // Head by head (their states are independent), the accumulator in registers:
            // rounding it to f16 there after every step is what storing and reloading it
            // did, so the bits are the same without the memory round trip per key.
            return by_chunks(scores, values, dv, acc, state, |v, ms, vs, a| {
                // SAFETY: AVX2, FMA and F16C per the caller; `a` holds CHUNK halves and
                // `v` the block's rows from this chunk on.
                unsafe { chunk_f16(v, dv, ms, vs, a) }
            });
        }
        for (j, v) in values.chunks_exact(dv).enumerate() {
            for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
                let (ms, vs) = st.step(scores[h * n + j]);
                // SAFETY: AVX2, FMA and F16C per the caller; rows of equal length.
                unsafe {
                    if ms != 1.0 {
                        scale_f16(a, ms);
                    }
                    mad_f16(a, v, vs);
                }
            }
        }
    }

    /// The value loops' common order for a width of whole [`CHUNK`]s: head by head, per
    /// block of [`KEYS`] keys the head's softmax steps ([`expf::steps`]), then
    /// `chunk(values from the chunk on, rescales, weights, the accumulator's chunk)` for
    /// each chunk of its accumulator.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn by_chunks<T>(
        scores: &[f32],
        values: &[T],
        dv: usize,
        acc: &mut [T],
        state: &mut [Online],
        mut chunk: impl FnMut(&[T], &[f32], &[f32], &mut [T]),
    ) {
        let n = values.len() / dv;
        let (mut ms, mut vs) = ([1f32; KEYS], [0f32; KEYS]);
        for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
            for k0 in (0..n).step_by(KEYS) {
                let kn = KEYS.min(n - k0);
                let s = &scores[h * n + k0..][..kn];
                expf::steps(st, s, &mut ms[..kn], &mut vs[..kn]);
                for c0 in (0..dv).step_by(CHUNK) {
                    chunk(
                        &values[k0 * dv + c0..],
                        &ms[..kn],
                        &vs[..kn],
                        &mut a[c0..][..CHUNK],
                    );
                }
            }
        }
    }

    /// One [`CHUNK`] of a head's f16 accumulator through keys `0..ms.len()`: value row `j`
    /// starts at `values[j * stride]`; each step rescales by `ms[j]` when it is not 1 and
    /// adds the row times `vs[j]`, rounding to f16 after each, as `scale_f16`/`mad_f16` do.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn chunk_f16(values: &[F16], stride: usize, ms: &[f32], vs: &[f32], acc: &mut [F16]) {
        const V: usize = CHUNK / LANES;
        let round = |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        let mut r = [_mm256_setzero_ps(); V];
        for (i, x) in r.iter_mut().enumerate() {
            // SAFETY: acc holds CHUNK halves.
            *x = unsafe { load_f16(&acc[i * LANES..]) };
        }
        for (j, (&m, &w)) in ms.iter().zip(vs).enumerate() {
            let row = &values[j * stride..][..CHUNK];
            if m != 1.0 {
                let m = _mm256_set1_ps(m);
                r.iter_mut().for_each(|x| *x = round(_mm256_mul_ps(*x, m)));
            }
            let w = _mm256_set1_ps(w);
            for (i, x) in r.iter_mut().enumerate() {
                // SAFETY: row holds CHUNK halves.
                let v = unsafe { load_f16(&row[i * LANES..]) };
                *x = round(_mm256_fmadd_ps(v, w, *x));
            }
        }
        for (i, &x) in r.iter().enumerate() {
            // SAFETY: acc holds CHUNK halves.
            unsafe { store_f16(&mut acc[i * LANES..], x) };
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn accumulate_f32(
        scores: &[f32],
        values: &[f32],
        dv: usize,
        acc: &mut [f32],
        state: &mut [Online],
    ) {
        let n = values.len() / dv;
        if dv.is_multiple_of(CHUNK) {
            // As the f16 loop, with f32 accumulators.
            return by_chunks(scores, values, dv, acc, state, |v, ms, vs, a| {
                // SAFETY: AVX2 and FMA per the caller; `a` holds CHUNK floats and `v` the
                // block's rows from this chunk on.
                unsafe { chunk_f32(v, dv, ms, vs, a) }
            });
        }
        for (j, v) in values.chunks_exact(dv).enumerate() {
            for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
                let (ms, vs) = st.step(scores[h * n + j]);
                if ms != 1.0 {
                    a.iter_mut().for_each(|x| *x *= ms);
                }
                // SAFETY: AVX2, FMA and F16C per the caller; rows of equal length.
                unsafe { mad_f32(a, v, vs) };
            }
        }
    }

    /// [`chunk_f16`] for f32 values and accumulator: each step rescales by `ms[j]` when
    /// it is not 1 and adds row `j` times `vs[j]` by fused multiply-add, as `mad_f32`
    /// does for whole steps.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn chunk_f32(values: &[f32], stride: usize, ms: &[f32], vs: &[f32], acc: &mut [f32]) {
        const V: usize = CHUNK / LANES;
        let mut r = [_mm256_setzero_ps(); V];
        for (i, x) in r.iter_mut().enumerate() {
            // SAFETY: acc holds CHUNK floats.
            *x = unsafe { _mm256_loadu_ps(acc[i * LANES..].as_ptr()) };
        }
        for (j, (&m, &w)) in ms.iter().zip(vs).enumerate() {
            let row = &values[j * stride..][..CHUNK];
            if m != 1.0 {
                let m = _mm256_set1_ps(m);
                r.iter_mut().for_each(|x| *x = _mm256_mul_ps(*x, m));
            }
            let w = _mm256_set1_ps(w);
            for (i, x) in r.iter_mut().enumerate() {
                // SAFETY: row holds CHUNK floats.
                let v = unsafe { _mm256_loadu_ps(row[i * LANES..].as_ptr()) };
                *x = _mm256_fmadd_ps(v, w, *x);
            }
        }
        for (i, &x) in r.iter().enumerate() {
            // SAFETY: acc holds CHUNK floats.
            unsafe { _mm256_storeu_ps(acc[i * LANES..].as_mut_ptr(), x) };
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn mad_f16(acc: &mut [F16], x: &[F16], v: f32) {
        let np = acc.len() / STEP * STEP;
        // SAFETY: register-only broadcast.
        let vv = _mm256_set1_ps(v);
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths.
            unsafe {
                let y = _mm256_fmadd_ps(load_f16(&x[i..]), vv, load_f16(&acc[i..]));
                store_f16(&mut acc[i..], y);
            }
        }
        for i in np..acc.len() {
            acc[i] = F16::from_f32(acc[i].to_f32() + x[i].to_f32() * v);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scale_f16(acc: &mut [F16], v: f32) {
        let np = acc.len() / LANES * LANES;
        let vv = _mm256_set1_ps(v);
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= acc.len().
            unsafe {
                let y = _mm256_mul_ps(load_f16(&acc[i..]), vv);
                store_f16(&mut acc[i..], y)
            };
        }
        for a in &mut acc[np..] {
            *a = F16::from_f32(a.to_f32() * v);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn mad_f32(acc: &mut [f32], x: &[f32], v: f32) {
        let np = acc.len() / STEP * STEP;
        let vv = _mm256_set1_ps(v);
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths; unaligned loads and store.
            unsafe {
                let y = _mm256_fmadd_ps(
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    vv,
                    _mm256_loadu_ps(acc.as_ptr().add(i)),
                );
                _mm256_storeu_ps(acc.as_mut_ptr().add(i), y);
            }
        }
        for i in np..acc.len() {
            acc[i] += x[i] * v;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16_to_f32(src: &[F16], dst: &mut [f32]) {
        let np = src.len() / LANES * LANES;
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), load_f16(&src[i..])) };
        }
        for i in np..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f32_to_f16(src: &[f32], dst: &mut [F16]) {
        let np = src.len() / LANES * LANES;
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths.
            unsafe { store_f16(&mut dst[i..], _mm256_loadu_ps(src.as_ptr().add(i))) };
        }
        for i in np..src.len() {
            dst[i] = F16::from_f32(src[i]);
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    //! The same loops with NEON: each 8-lane register of the x86 version is two
    //! `float32x4_t` (its lanes 0..4 and 4..8), `_mm256_fmadd_ps` is `vfmaq_f32` (fused,
    //! rounded once, as `mul_add`), and the reduction is the reference's, pair by pair.
    //! Halves are widened with `fcvtl`, which gives `F16::to_f32`'s bits for all 65536
    //! halves, NaNs included, and narrowed with `fcvtn`, which rounds to nearest even as
    //! `F16::from_f32` does but keeps a NaN's payload, so [`narrow`] clears it to ggml's
    //! canonical NaN; the tests check both conversions against the software ones. (Both
    //! are inline assembly: their intrinsics are not stable yet.)
    //!
    //! Safety model: every function here requires NEON (the aarch64 baseline, spelled out
    //! with `target_feature`); loads and stores are unaligned and stay inside slices whose
    //! lengths were checked first.

    // Intrinsics called inside a `#[target_feature]` function are safe calls, so some
    // `unsafe` blocks hold nothing unsafe; they are kept to mark the loads and the CPU
    // requirement in one place.
    #![allow(unused_unsafe)]

    use std::arch::aarch64::*;
    use std::arch::asm;

    use super::{Online, ARR, LANES, STEP};
    use crate::F16;

    /// Halves 0..4 of `h` widened to f32 (`fcvtl`).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn widen_lo(h: uint16x8_t) -> float32x4_t {
        let f: float32x4_t;
        // SAFETY: register-only instruction; NEON per the caller.
        unsafe {
            asm!(
                "fcvtl {f:v}.4s, {h:v}.4h",
                f = lateout(vreg) f,
                h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        f
    }

    /// Halves 4..8 of `h` widened to f32 (`fcvtl2`).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn widen_hi(h: uint16x8_t) -> float32x4_t {
        let f: float32x4_t;
        // SAFETY: register-only instruction; NEON per the caller.
        unsafe {
            asm!(
                "fcvtl2 {f:v}.4s, {h:v}.8h",
                f = lateout(vreg) f,
                h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        f
    }

    /// Eight floats narrowed to halves as `F16::from_f32` does: `fcvtn` rounds to nearest
    /// even (the default rounding mode) with overflow to infinity and subnormal results
    /// rounded, not flushed; a NaN comes out as its sign, 0x7E00 (the quiet bit `fcvtn`
    /// sets) and payload bits, which are cleared to leave ggml's canonical NaN.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn narrow(lo: float32x4_t, hi: float32x4_t) -> uint16x8_t {
        let h: uint16x8_t;
        // SAFETY: register-only instructions; NEON per the caller. `h` is an early
        // output, so it does not share a register with `hi`, read after the first write.
        unsafe {
            asm!(
                "fcvtn {h:v}.4h, {lo:v}.4s",
                "fcvtn2 {h:v}.8h, {hi:v}.4s",
                h = out(vreg) h,
                lo = in(vreg) lo,
                hi = in(vreg) hi,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        let nan = vcgtq_u16(vandq_u16(h, vdupq_n_u16(0x7FFF)), vdupq_n_u16(0x7C00));
        vbicq_u16(h, vandq_u16(nan, vdupq_n_u16(0x01FF)))
    }

    /// Eight halves from the start of `p`, widened.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load_f16(p: &[F16]) -> (float32x4_t, float32x4_t) {
        debug_assert!(p.len() >= LANES);
        // SAFETY: eight halves (16 bytes) are in bounds; F16 is a transparent u16.
        let h = unsafe { vld1q_u16(p.as_ptr() as *const u16) };
        // SAFETY: register-only; NEON per the caller.
        unsafe { (widen_lo(h), widen_hi(h)) }
    }

    /// Eight floats narrowed into the start of `p`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn store_f16(p: &mut [F16], lo: float32x4_t, hi: float32x4_t) {
        debug_assert!(p.len() >= LANES);
        // SAFETY: eight halves (16 bytes) are in bounds; F16 is a transparent u16.
        unsafe { vst1q_u16(p.as_mut_ptr() as *mut u16, narrow(lo, hi)) }
    }

    /// Eight floats rounded to f16 and back: what storing an f16 accumulator and loading
    /// it again gives.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn round(lo: float32x4_t, hi: float32x4_t) -> (float32x4_t, float32x4_t) {
        // SAFETY: register-only; NEON per the caller.
        unsafe {
            let h = narrow(lo, hi);
            (widen_lo(h), widen_hi(h))
        }
    }

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dots_f16(queries: &[F16], keys: &[F16], d: usize, out: &mut [f32]) {
        let n = keys.len() / d;
        for (j, k) in keys.chunks_exact(d).enumerate() {
            for (h, q) in queries.chunks_exact(d).enumerate() {
                // SAFETY: NEON per the caller.
                out[h * n + j] = unsafe { dot_f16(q, k) };
            }
        }
    }

    /// [`super::dot_f16_ref`] with the reference's four 8-lane accumulators as eight 4-lane ones:
    /// `acc[2r]` holds lanes 0..4 of register `r`, `acc[2r + 1]` lanes 4..8.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn dot_f16(x: &[F16], y: &[F16]) -> f32 {
        let np = x.len() / STEP * STEP;
        let mut acc = [vdupq_n_f32(0.0); 2 * ARR];
        for i in (0..np).step_by(STEP) {
            for r in 0..ARR {
                let at = i + r * LANES;
                // SAFETY: at + 8 <= np <= both lengths.
                let ((x0, x1), (y0, y1)) = unsafe { (load_f16(&x[at..]), load_f16(&y[at..])) };
                acc[2 * r] = vfmaq_f32(acc[2 * r], x0, y0);
                acc[2 * r + 1] = vfmaq_f32(acc[2 * r + 1], x1, y1);
            }
        }
        // Registers 0+2 and 1+3, then their sum; lanes l and l+4; then pairs.
        let half = |a: usize| {
            vaddq_f32(
                vaddq_f32(acc[a], acc[a + 4]),
                vaddq_f32(acc[a + 2], acc[a + 6]),
            )
        };
        let t0 = vaddq_f32(half(0), half(1));
        let p = vpaddq_f32(t0, t0);
        let mut sum = vpadds_f32(vget_low_f32(p)) as f64;
        for e in np..x.len() {
            sum += (x[e].to_f32() * y[e].to_f32()) as f64;
        }
        sum as f32
    }

    /// Value dimensions one pass keeps in registers (sixteen vectors of four).
    const CHUNK: usize = 64;
    /// Keys whose weights one pass computes first.
    const KEYS: usize = 128;

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn accumulate_f16(
        scores: &[f32],
        values: &[F16],
        dv: usize,
        acc: &mut [F16],
        state: &mut [Online],
    ) {
        let n = values.len() / dv;
        if dv.is_multiple_of(CHUNK) {
            // Head by head (their states are independent), the accumulator in registers,
            // rounded to f16 after every step as storing and reloading it would.
            let (mut ms, mut vs) = ([1f32; KEYS], [0f32; KEYS]);
            for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
                for k0 in (0..n).step_by(KEYS) {
                    let kn = KEYS.min(n - k0);
                    for j in 0..kn {
                        (ms[j], vs[j]) = st.step(scores[h * n + k0 + j]);
                    }
                    for c0 in (0..dv).step_by(CHUNK) {
                        // SAFETY: NEON per the caller; c0 + CHUNK <= dv.
                        unsafe {
                            chunk_f16(
                                &values[k0 * dv + c0..],
                                dv,
                                &ms[..kn],
                                &vs[..kn],
                                &mut a[c0..][..CHUNK],
                            )
                        };
                    }
                }
            }
            return;
        }
        for (j, v) in values.chunks_exact(dv).enumerate() {
            for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
                let (ms, vs) = st.step(scores[h * n + j]);
                // SAFETY: NEON per the caller; rows of equal length.
                unsafe {
                    if ms != 1.0 {
                        scale_f16(a, ms);
                    }
                    mad_f16(a, v, vs);
                }
            }
        }
    }

    /// One [`CHUNK`] of a head's f16 accumulator through keys `0..ms.len()`: value row `j`
    /// starts at `values[j * stride]`; each step rescales by `ms[j]` when it is not 1 and
    /// adds the row times `vs[j]`, rounding to f16 after each, as `scale_f16`/`mad_f16` do.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn chunk_f16(values: &[F16], stride: usize, ms: &[f32], vs: &[f32], acc: &mut [F16]) {
        const V: usize = CHUNK / LANES;
        let mut r = [(vdupq_n_f32(0.0), vdupq_n_f32(0.0)); V];
        for (i, x) in r.iter_mut().enumerate() {
            // SAFETY: acc holds CHUNK halves.
            *x = unsafe { load_f16(&acc[i * LANES..]) };
        }
        for (j, (&m, &w)) in ms.iter().zip(vs).enumerate() {
            let row = &values[j * stride..][..CHUNK];
            if m != 1.0 {
                let m = vdupq_n_f32(m);
                for x in r.iter_mut() {
                    // SAFETY: NEON per the caller.
                    *x = unsafe { round(vmulq_f32(x.0, m), vmulq_f32(x.1, m)) };
                }
            }
            let w = vdupq_n_f32(w);
            for (i, x) in r.iter_mut().enumerate() {
                // SAFETY: row holds CHUNK halves.
                let (v0, v1) = unsafe { load_f16(&row[i * LANES..]) };
                // SAFETY: NEON per the caller.
                *x = unsafe { round(vfmaq_f32(x.0, v0, w), vfmaq_f32(x.1, v1, w)) };
            }
        }
        for (i, &(lo, hi)) in r.iter().enumerate() {
            // SAFETY: acc holds CHUNK halves.
            unsafe { store_f16(&mut acc[i * LANES..], lo, hi) };
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn mad_f16(acc: &mut [F16], x: &[F16], v: f32) {
        let np = acc.len() / STEP * STEP;
        let vv = vdupq_n_f32(v);
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths.
            unsafe {
                let ((x0, x1), (a0, a1)) = (load_f16(&x[i..]), load_f16(&acc[i..]));
                store_f16(&mut acc[i..], vfmaq_f32(a0, x0, vv), vfmaq_f32(a1, x1, vv));
            }
        }
        for i in np..acc.len() {
            acc[i] = F16::from_f32(acc[i].to_f32() + x[i].to_f32() * v);
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn scale_f16(acc: &mut [F16], v: f32) {
        let np = acc.len() / LANES * LANES;
        let vv = vdupq_n_f32(v);
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= acc.len().
            unsafe {
                let (a0, a1) = load_f16(&acc[i..]);
                store_f16(&mut acc[i..], vmulq_f32(a0, vv), vmulq_f32(a1, vv));
            }
        }
        for a in &mut acc[np..] {
            *a = F16::from_f32(a.to_f32() * v);
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn mad_f32(acc: &mut [f32], x: &[f32], v: f32) {
        let np = acc.len() / STEP * STEP;
        let vv = vdupq_n_f32(v);
        for i in (0..np).step_by(4) {
            // SAFETY: i + 4 <= np <= both lengths; unaligned loads and store.
            unsafe {
                let y = vfmaq_f32(
                    vld1q_f32(acc.as_ptr().add(i)),
                    vld1q_f32(x.as_ptr().add(i)),
                    vv,
                );
                vst1q_f32(acc.as_mut_ptr().add(i), y);
            }
        }
        for i in np..acc.len() {
            acc[i] += x[i] * v;
        }
    }

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn f16_to_f32(src: &[F16], dst: &mut [f32]) {
        let np = src.len() / LANES * LANES;
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths.
            unsafe {
                let (lo, hi) = load_f16(&src[i..]);
                vst1q_f32(dst.as_mut_ptr().add(i), lo);
                vst1q_f32(dst.as_mut_ptr().add(i + 4), hi);
            }
        }
        for i in np..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn f32_to_f16(src: &[f32], dst: &mut [F16]) {
        let np = src.len() / LANES * LANES;
        for i in (0..np).step_by(LANES) {
            // SAFETY: i + 8 <= np <= both lengths.
            unsafe {
                let (lo, hi) = (
                    vld1q_f32(src.as_ptr().add(i)),
                    vld1q_f32(src.as_ptr().add(i + 4)),
                );
                store_f16(&mut dst[i..], lo, hi);
            }
        }
        for i in np..src.len() {
            dst[i] = F16::from_f32(src[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite values over a wide range, signs mixed, some exactly representable.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let m = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                m * [0.01f32, 1.0, 30.0][(s % 3) as usize]
            })
            .collect()
    }

    fn halves(x: &[f32]) -> Vec<F16> {
        x.iter().map(|&v| F16::from_f32(v)).collect()
    }

    #[test]
    fn simd_matches_the_reference_bit_for_bit() {
        for d in [8, 31, 32, 64, 100, 128, 256] {
            // Odd and even groups (heads go in pairs), and one too large to widen at once.
            for (g, n) in [(1, 1), (1, 7), (7, 5), (4, 33), (2, 3), (3, 9), (20, 3)] {
                let q = halves(&values(g * d, d as u64 + 1));
                let k = halves(&values(n * d, d as u64 + 2));
                let mut got = vec![0f32; g * n];
                dots_f16(&q, &k, d, &mut got);
                for h in 0..g {
                    for j in 0..n {
                        let want = dot_f16_ref(&q[h * d..][..d], &k[j * d..][..d]);
                        assert_eq!(
                            got[h * n + j].to_bits(),
                            want.to_bits(),
                            "d {d} h {h} j {j}"
                        );
                    }
                }
            }
            let x = values(d, 7);
            let xh = halves(&x);
            let acc0 = values(d, 9);
            let (mut a, mut b) = (halves(&acc0), halves(&acc0));
            mad_f16(&mut a, &xh, 0.37);
            mad_f16_ref(&mut b, &xh, 0.37);
            assert_eq!(a, b, "mad_f16, d {d}");
            scale_f16(&mut a, 0.81);
            scale_f16_ref(&mut b, 0.81);
            assert_eq!(a, b, "scale_f16, d {d}");
            let (mut f, mut r) = (acc0.clone(), acc0.clone());
            mad_f32(&mut f, &x, -1.3);
            mad_f32_ref(&mut r, &x, -1.3);
            assert_eq!(bits(&f), bits(&r), "mad_f32, d {d}");
            let (mut w, mut wr) = (vec![0f32; d], vec![0f32; d]);
            f16_to_f32(&xh, &mut w);
            f16_to_f32_ref(&xh, &mut wr);
            assert_eq!(bits(&w), bits(&wr), "f16_to_f32, d {d}");
            let (mut h, mut hr) = (vec![F16::ZERO; d], vec![F16::ZERO; d]);
            f32_to_f16(&x, &mut h);
            f32_to_f16_ref(&x, &mut hr);
            assert_eq!(h, hr, "f32_to_f16, d {d}");
        }
    }

    #[test]
    fn accumulations_match_the_reference_and_a_plain_softmax() {
        for (g, n, dv) in [
            (1, 1, 32),
            (3, 17, 64),
            (7, 40, 128),
            (2, 5, 40),
            (4, 300, 256),
        ] {
            let scores = values(g * n, 11);
            let vals = values(n * dv, 12);
            let vh = halves(&vals);
            let run16 = |simd: bool| {
                let mut acc = vec![F16::ZERO; g * dv];
                let mut st = vec![Online::START; g];
                if simd {
                    // In two calls, as the engine's score blocks do: the state carries over.
                    let h = n / 2;
                    let (s0, s1): (Vec<f32>, Vec<f32>) = (
                        (0..g).flat_map(|i| scores[i * n..][..h].to_vec()).collect(),
                        (0..g)
                            .flat_map(|i| scores[i * n + h..][..n - h].to_vec())
                            .collect(),
                    );
                    accumulate_f16(&s0, &vh[..h * dv], dv, &mut acc, &mut st);
                    accumulate_f16(&s1, &vh[h * dv..], dv, &mut acc, &mut st);
                } else {
                    accumulate_f16_ref(&scores, &vh, dv, &mut acc, &mut st);
                }
                (acc, st)
            };
            assert_eq!(run16(true), run16(false), "f16: g {g} n {n} dv {dv}");
            let mut acc = vec![0f32; g * dv];
            let mut st = vec![Online::START; g];
            accumulate_f32(&scores, &vals, dv, &mut acc, &mut st);
            // Against a plain softmax: the online form is exact up to rounding.
            for h in 0..g {
                let row = &scores[h * n..][..n];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let w: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
                let sum: f64 = w.iter().sum();
                assert!(
                    (st[h].sum as f64 - sum).abs() < 1e-4 * sum,
                    "sum of weights"
                );
                for d in 0..dv {
                    let want: f64 = (0..n).map(|j| w[j] * vals[j * dv + d] as f64).sum();
                    let got = acc[h * dv + d] as f64;
                    assert!(
                        (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                        "h {h} d {d}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The AVX2 loops and the AVX-512 ones (each where this CPU runs it, whatever table
    /// the process picked) give the reference's bits: group sizes that fill sets of four
    /// heads and ones that leave a remainder, key counts across the value loop's blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_loops_match_the_reference_bit_for_bit() {
        let (avx2, avx512) = (
            crate::kernels::cpu_has_avx2(),
            crate::kernels::cpu_has_avx512(),
        );
        if !avx2 {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        for d in [32, 64, 128, 256] {
            for (g, n) in [
                (1, 3),
                (2, 5),
                (3, 9),
                (4, 130),
                (5, 7),
                (7, 40),
                (8, 3),
                (10, 300),
            ] {
                let q = halves(&values(g * d, d as u64 + 5));
                let k = halves(&values(n * d, d as u64 + 6));
                let want: Vec<u32> = (0..g * n)
                    .map(|i| dot_f16_ref(&q[i / n * d..][..d], &k[i % n * d..][..d]).to_bits())
                    .collect();
                let mut got = vec![0f32; g * n];
                // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
                unsafe { simd::dots_f16(&q, &k, d, &mut got) };
                assert_eq!(bits(&got), want, "avx2 dots: d {d} g {g} n {n}");
                if avx512 {
                    got.fill(0.0);
                    // SAFETY: the CPU runs the AVX-512 table (checked above).
                    unsafe { avx512::dots_f16(&q, &k, d, &mut got) };
                    assert_eq!(bits(&got), want, "avx512 dots: d {d} g {g} n {n}");
                }
                // Scores spread like attention's (a few new maxima, weights from 1 down
                // to underflow) through the value loop in two calls, as the engine's
                // score blocks do.
                let scores: Vec<f32> = values(g * n, d as u64 + 7)
                    .iter()
                    .map(|x| x * 4.0)
                    .collect();
                let vals = halves(&values(n * d, d as u64 + 8));
                let mut want = vec![F16::ZERO; g * d];
                accumulate_f16_ref(&scores, &vals, d, &mut want, &mut vec![Online::START; g]);
                let run = |wide: bool| {
                    let (mut acc, mut st) = (vec![F16::ZERO; g * d], vec![Online::START; g]);
                    let half = n / 2;
                    for part in [0..half, half..n] {
                        let s: Vec<f32> = (0..g)
                            .flat_map(|h| scores[h * n..][part.clone()].to_vec())
                            .collect();
                        let v = &vals[part.start * d..part.end * d];
                        // SAFETY: AVX2, FMA and F16C always; the AVX-512 table's features
                        // when `wide` (only asked for when the CPU has them).
                        unsafe {
                            if wide {
                                avx512::accumulate_f16(&s, v, d, &mut acc, &mut st)
                            } else {
                                simd::accumulate_f16(&s, v, d, &mut acc, &mut st)
                            }
                        }
                    }
                    acc
                };
                assert_eq!(run(false), want, "avx2 values: d {d} g {g} n {n}");
                // The f32 value loop (quantized and f32 caches) against its reference.
                let vals32: Vec<f32> = vals.iter().map(|v| v.to_f32()).collect();
                let (mut want32, mut st) = (vec![0f32; g * d], vec![Online::START; g]);
                accumulate_f32_ref(&scores, &vals32, d, &mut want32, &mut st);
                let (mut got32, mut st) = (vec![0f32; g * d], vec![Online::START; g]);
                // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
                unsafe { simd::accumulate_f32(&scores, &vals32, d, &mut got32, &mut st) };
                assert_eq!(
                    bits(&got32),
                    bits(&want32),
                    "avx2 f32 values: d {d} g {g} n {n}"
                );
                if avx512 && d.is_multiple_of(avx512::CHUNK) {
                    assert_eq!(run(true), want, "avx512 values: d {d} g {g} n {n}");
                }
            }
        }
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Cancellation shows whether a step is fused: `-4096 + 3 · f32(4096/3)` is 2^-13
    /// rounded once and 0 rounded twice. The vector loops must fuse exactly where the
    /// reference does (whole steps of 32, every step of the f16 accumulation's register
    /// path) and nowhere else; random values rarely tell, once rounded to f16.
    #[test]
    fn the_fused_steps_are_the_references() {
        let v = 4096f32 / 3.0;
        for len in [32, 40, 64, 100] {
            let np = len / STEP * STEP;
            let want: Vec<f32> = (0..len)
                .map(|i| if i < np { 2f32.powi(-13) } else { 0.0 })
                .collect();
            let mut a = vec![F16::from_f32(-4096.0); len];
            mad_f16(&mut a, &vec![F16::from_f32(3.0); len], v);
            assert_eq!(a, halves(&want), "mad_f16, {len}");
            let mut f = vec![-4096f32; len];
            mad_f32(&mut f, &vec![3.0; len], v);
            assert_eq!(bits(&f), bits(&want), "mad_f32, {len}");
        }
        // Two keys: the first (the maximum) puts -4096 in the accumulator, the second adds
        // 6144 times its weight e^s, near 2/3.
        let mut sharp = 0;
        for i in 0..16 {
            let s = (2f32 / 3.0).ln() + i as f32 * 1e-7;
            for dv in [64, 40] {
                let vals: Vec<F16> = (0..2 * dv)
                    .map(|e| F16::from_f32(if e < dv { -4096.0 } else { 6144.0 }))
                    .collect();
                let scores = [0.0, s];
                let (mut acc, mut st) = (vec![F16::ZERO; dv], [Online::START]);
                accumulate_f16(&scores, &vals, dv, &mut acc, &mut st);
                let mut want = vec![F16::ZERO; dv];
                accumulate_f16_ref(&scores, &vals, dv, &mut want, &mut [Online::START]);
                assert_eq!(acc, want, "s {s}, dv {dv}");
                let w = s.exp();
                sharp += usize::from(want[0].to_f32() != -4096.0 + 6144.0 * w);
            }
        }
        assert!(sharp > 0, "no weight where fusing shows");
    }

    /// Narrow `xs` with NEON and with the software conversion; the first difference.
    #[cfg(target_arch = "aarch64")]
    fn neon_narrow_differs(xs: &[f32]) -> Option<(u32, u16, u16)> {
        let mut h = vec![F16::ZERO; xs.len()];
        // SAFETY: NEON is part of the aarch64 baseline.
        unsafe { neon::f32_to_f16(xs, &mut h) };
        let want = |x: f32| F16::from_f32(x).0;
        (xs.iter().zip(&h))
            .find(|&(&x, h)| h.0 != want(x))
            .map(|(&x, h)| (x.to_bits(), h.0, want(x)))
    }

    /// `fcvtl` widens every half, NaNs included, to `F16::to_f32`'s bits, and `fcvtn` with
    /// the NaN fix-up narrows as `F16::from_f32` does: every half's value, the midpoints
    /// between neighbouring halves and the floats either side of them (where rounding
    /// decides), and a spread of four million bit patterns (every f32: the ignored test).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_conversions_are_the_software_ones() {
        let all: Vec<F16> = (0..=u16::MAX).map(F16).collect();
        let mut wide = vec![0f32; all.len()];
        // SAFETY: NEON is part of the aarch64 baseline.
        unsafe { neon::f16_to_f32(&all, &mut wide) };
        for (h, w) in all.iter().zip(&wide) {
            assert_eq!(w.to_bits(), h.to_f32().to_bits(), "widening {:#06x}", h.0);
        }
        assert_eq!(neon_narrow_differs(&wide), None);
        let mut edges = Vec::new();
        for b in 0..0x7C00u16 {
            let mid = (f64::from(F16(b).to_f32()) + f64::from(F16(b + 1).to_f32())) / 2.0;
            let m = (mid as f32).to_bits();
            for x in [m - 1, m, m + 1] {
                edges.extend([f32::from_bits(x), -f32::from_bits(x)]);
            }
        }
        assert_eq!(neon_narrow_differs(&edges), None);
        let spread: Vec<f32> = (0..1u32 << 22)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B1)))
            .collect();
        assert_eq!(neon_narrow_differs(&spread), None);
    }

    /// Every f32 through the NEON narrowing (slow under emulation: run with --ignored).
    #[cfg(target_arch = "aarch64")]
    #[test]
    #[ignore]
    fn neon_narrowing_is_the_software_one_for_every_f32() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let per = (1u64 << 32).div_ceil(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let (a, b) = (t * per, ((t + 1) * per).min(1 << 32));
                    let mut xs = Vec::with_capacity(1 << 16);
                    for c in (a..b).step_by(1 << 16) {
                        xs.clear();
                        xs.extend((c..(c + (1 << 16)).min(b)).map(|i| f32::from_bits(i as u32)));
                        assert_eq!(neon_narrow_differs(&xs), None);
                    }
                });
            }
        });
    }

    /// The reference dot is ggml's order, not a plain sum: on values where order matters
    /// it differs from summing left to right, and equals a hand-ordered sum.
    #[test]
    fn the_reference_dot_follows_ggml_order() {
        let d = 64;
        let x: Vec<F16> = (0..d)
            .map(|i| F16::from_f32(if i == 0 { 2048.0 } else { 1.0 }))
            .collect();
        let y: Vec<F16> = (0..d)
            .map(|i| F16::from_f32(if i % 8 == 0 { 0.5 } else { 1e-3 }))
            .collect();
        let mut lanes = [0f32; 32];
        for e in 0..d {
            lanes[e % 32] = (x[e].to_f32()).mul_add(y[e].to_f32(), lanes[e % 32]);
        }
        let s: [f32; 8] =
            std::array::from_fn(|l| (lanes[l] + lanes[16 + l]) + (lanes[8 + l] + lanes[24 + l]));
        let want = (s[0] + s[4] + (s[1] + s[5])) + (s[2] + s[6] + (s[3] + s[7]));
        assert_eq!(dot_f16_ref(&x, &y).to_bits(), want.to_bits());
    }
}
