//! The vector loops of attention over an f16 (or f32) KV cache, in ggml-cpu's x86 order:
//! the dot product of a query with a key row (four 8-lane f32 accumulators fed by fused
//! multiply-adds, then ggml's reduction), the value accumulator's fused multiply-add and
//! rescale kept in f16 or f32, and row conversions between f16 and f32.
//!
//! Each loop exists twice: a scalar reference that spells out the order, and an AVX2 +
//! FMA + F16C version chosen at run time with the kernel table (`LOUPE_KERNELS=scalar`
//! keeps the reference). The two give the same bits for finite values, and a test holds
//! them to it. Following ggml's order rather than a plain loop is what keeps loupe's
//! attention on llama.cpp's rounding.

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
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::dots_f16(queries, keys, d, out) };
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
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::accumulate_f16(scores, values, dv, acc, state) };
    }
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
    for (j, v) in values.chunks_exact(dv).enumerate() {
        for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
            let (ms, vs) = st.step(scores[h * n + j]);
            if ms != 1.0 {
                a.iter_mut().for_each(|x| *x *= ms);
            }
            mad_f32_ref(a, v, vs);
        }
    }
}

/// `acc[i] = f16(acc[i] + x[i] * v)`, ggml's `ggml_vec_mad_f16` (fused for whole steps).
pub fn mad_f16(acc: &mut [F16], x: &[F16], v: f32) {
    assert_eq!(acc.len(), x.len(), "mad_f16: rows of different lengths");
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        // SAFETY: use_simd() confirmed AVX2, FMA and F16C on this CPU.
        return unsafe { simd::mad_f16(acc, x, v) };
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
    f32_to_f16_ref(src, dst)
}

// The scalar references: what each loop above computes, in that order.

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

#[cfg(target_arch = "x86_64")]
fn use_simd() -> bool {
    use std::sync::OnceLock;
    static SIMD: OnceLock<bool> = OnceLock::new();
    // The AVX2 and AVX-512 tables both require AVX2, FMA and F16C.
    *SIMD.get_or_init(|| crate::kernels().name() != "scalar")
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! Safety model: every function here requires AVX2, FMA and F16C (the callers check
    //! with `use_simd`); loads and stores are unaligned and stay inside slices whose
    //! lengths were checked first.
    use std::arch::x86_64::*;

    use super::{dot_f16_ref, Online, LANES, STEP};
    use crate::F16;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: &[F16]) -> __m256 {
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

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots_f16(queries: &[F16], keys: &[F16], d: usize, out: &mut [f32]) {
        let n = keys.len() / d;
        let np = d / STEP * STEP;
        for (j, k) in keys.chunks_exact(d).enumerate() {
            for (h, q) in queries.chunks_exact(d).enumerate() {
                if np < d {
                    out[h * n + j] = dot_f16_ref(q, k);
                    continue;
                }
                // SAFETY: every load reads eight halves at an offset below np <= d.
                unsafe {
                    let mut acc = [_mm256_setzero_ps(); 4];
                    for i in (0..np).step_by(STEP) {
                        for (r, a) in acc.iter_mut().enumerate() {
                            let at = i + r * LANES;
                            *a = _mm256_fmadd_ps(load_f16(&q[at..]), load_f16(&k[at..]), *a);
                        }
                    }
                    let s01 = _mm256_add_ps(acc[0], acc[2]);
                    let s23 = _mm256_add_ps(acc[1], acc[3]);
                    let s = _mm256_add_ps(s01, s23);
                    let t0 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
                    let t1 = _mm_hadd_ps(t0, t0);
                    out[h * n + j] = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
                }
            }
        }
    }

    /// Value dimensions one pass keeps in registers (eight vectors: enough independent
    /// chains to hide the fused multiply-add and the two conversions of each step).
    const CHUNK: usize = 64;
    /// Keys whose weights one pass computes first.
    const KEYS: usize = 128;

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
            let (mut ms, mut vs) = ([1f32; KEYS], [0f32; KEYS]);
            for (h, (a, st)) in acc.chunks_exact_mut(dv).zip(state.iter_mut()).enumerate() {
                for k0 in (0..n).step_by(KEYS) {
                    let kn = KEYS.min(n - k0);
                    for j in 0..kn {
                        (ms[j], vs[j]) = st.step(scores[h * n + k0 + j]);
                    }
                    for c0 in (0..dv).step_by(CHUNK) {
                        // SAFETY: AVX2, FMA and F16C per the caller; c0 + CHUNK <= dv.
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
            for (g, n) in [(1, 1), (1, 7), (7, 5), (4, 33)] {
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
                    for (j, v) in vh.chunks_exact(dv).enumerate() {
                        for h in 0..g {
                            let (ms, vs) = st[h].step(scores[h * n + j]);
                            let a = &mut acc[h * dv..][..dv];
                            if ms != 1.0 {
                                scale_f16_ref(a, ms);
                            }
                            mad_f16_ref(a, v, vs);
                        }
                    }
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

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
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
