//! The online softmax's steps for a block of keys without a call into libm per key:
//! `e^x` computed inline the way glibc's `expf` does on x86-64 with FMA (its `__expf_fma`
//! variant, which `f32::exp` reaches there), so the weights keep their bits.
//!
//! glibc's method (from Arm's optimized routines): in f64, `x·32/ln 2 = k + r` with `k`
//! an integer (rounded by adding 1.5·2^52) and `|r| ≤ 1/2`; `2^(k/32)` from a 32-entry
//! table of `2^(i/32)` with `k/32`'s integer part added to the exponent; `2^(r/32)` by a
//! cubic; the product rounded once to f32. Its FMA build fuses `x·32/ln 2 + shift`,
//! `x·32/ln 2 - k` and the three polynomial steps, as below (read from the disassembly
//! of Debian 12's libm), one at a time or eight at a time in AVX2 registers (the steps
//! use the eights). Underflow gives +0 as glibc does; NaN and overflow, which
//! attention does not produce, call `f32::exp`. With another libm (not Linux with glibc)
//! every exponential calls `f32::exp`, as llama.cpp there calls that libm's `expf`. The
//! test `inline_exp_is_libms` holds the inline one to `f32::exp` over a spread of all
//! floats (the ignored one over every float).

use super::Online;

/// Whether `f32::exp` is glibc's (Linux with the GNU C library), which the inline
/// exponential reproduces.
const GLIBC: bool = cfg!(all(target_os = "linux", target_env = "gnu"));
/// `x·32/ln 2` as glibc rounds the constant.
const INV_LN2_32: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// Adding it rounds to an integer in the low mantissa bits.
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// The cubic for `2^(r/32)`: `((C0·r + C1)·r² + (C2·r + 1))`.
const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);
/// `|x|` from which glibc checks for special cases (88.0).
const SLOW_BITS: u32 = 0x42b0_0000;
/// Below this `e^x` underflows to +0 (about -103.97).
const UNDERFLOW: f32 = f32::from_bits(0xc2cf_f1b4);
/// Above this `e^x` overflows (about 88.72).
const OVERFLOW: f32 = f32::from_bits(0x42b1_7217);

/// `bits(2^(i/32)) - (i << 47)`: adding `k << 47` to entry `k mod 32` gives `2^(k/32)`.
fn table() -> &'static [u64; 32] {
    use std::sync::OnceLock;
    static TABLE: OnceLock<[u64; 32]> = OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|i| (i as f64 / 32.0).exp2().to_bits() - ((i as u64) << 47))
    })
}

/// `e^x` as `f32::exp` gives it (on glibc x86-64 with FMA).
#[inline]
#[target_feature(enable = "fma")]
pub(super) fn exp(x: f32, t: &[u64; 32]) -> f32 {
    if !GLIBC {
        // Another libm (and llama.cpp with it) may round differently: ask it.
        return libm_exp(x);
    }
    if x.to_bits() & 0x7fff_ffff >= SLOW_BITS {
        // glibc's special cases: below UNDERFLOW (minus infinity too) +0, which masked
        // and far-off keys give; NaN, +infinity and overflow as libm returns them; the
        // rest of [-UNDERFLOW, OVERFLOW] goes on to the common path.
        if x < UNDERFLOW {
            return 0.0;
        }
        if x.is_nan() || x > OVERFLOW {
            return libm_exp(x);
        }
    }
    let xd = x as f64;
    let kd = INV_LN2_32.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_32.mul_add(xd, -kd);
    let s = f64::from_bits(t[(ki & 31) as usize].wrapping_add(ki << 47));
    let z = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = r.mul_add(C2, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

/// [`exp`] of eight arguments at once (two halves of four doubles, the table read by a
/// gather): the same operations lane by lane, so the same bits. Any lane that glibc
/// would send to libm (NaN, overflow) sends the eight to [`exp`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: &[f32; 8], t: &[u64; 32]) -> [f32; 8] {
    use std::arch::x86_64::*;
    // SAFETY: eight floats in bounds of the array; unaligned load.
    let v = unsafe { _mm256_loadu_ps(x.as_ptr()) };
    let odd = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
        _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_set1_ps(OVERFLOW)),
    );
    if !GLIBC || _mm256_movemask_ps(odd) != 0 {
        return x.map(|x| exp(x, t));
    }
    let half = |h: __m128| -> __m128 {
        let xd = _mm256_cvtps_pd(h);
        let inv = _mm256_set1_pd(INV_LN2_32);
        let shift = _mm256_set1_pd(SHIFT);
        let kd = _mm256_fmadd_pd(inv, xd, shift);
        let ki = _mm256_castpd_si256(kd);
        let kd = _mm256_sub_pd(kd, shift);
        let r = _mm256_fmsub_pd(inv, xd, kd);
        let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
        // SAFETY: every index is below 32, the table's length.
        let tv = unsafe { _mm256_i64gather_epi64::<8>(t.as_ptr() as *const i64, idx) };
        let s = _mm256_castsi256_pd(_mm256_add_epi64(tv, _mm256_slli_epi64::<47>(ki)));
        let z = _mm256_fmadd_pd(_mm256_set1_pd(C0), r, _mm256_set1_pd(C1));
        let r2 = _mm256_mul_pd(r, r);
        let y = _mm256_fmadd_pd(r, _mm256_set1_pd(C2), _mm256_set1_pd(1.0));
        let y = _mm256_fmadd_pd(z, r2, y);
        _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
    };
    let lo = half(_mm256_castps256_ps128(v));
    let hi = half(_mm256_extractf128_ps::<1>(v));
    let e = _mm256_set_m128(hi, lo);
    // Below UNDERFLOW (minus infinity too) glibc returns +0.
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_set1_ps(UNDERFLOW));
    let e = _mm256_andnot_ps(under, e);
    let mut out = [0f32; 8];
    // SAFETY: eight floats in bounds of the array; unaligned store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), e) };
    out
}

/// `f32::exp` behind a call the optimizer may not hoist: the intrinsic counts as free of
/// side effects, and left inline it was turned into a libm call for every key.
#[cold]
#[inline(never)]
fn libm_exp(x: f32) -> f32 {
    x.exp()
}

/// Keys one call of [`steps`] takes at most.
pub(super) const MAX_KEYS: usize = 128;

/// `Online::step` over `scores` in order, writing each key's rescale to `ms` and weight
/// to `vs`: the running maximum first, then the exponentials eight at a time (they do
/// not depend on each other), with the sum in order beside them.
#[target_feature(enable = "avx2,fma")]
pub(super) fn steps(st: &mut Online, scores: &[f32], ms: &mut [f32], vs: &mut [f32]) {
    let n = scores.len();
    assert!(n <= MAX_KEYS && ms.len() == n && vs.len() == n);
    let t = table();
    let mut new_max = [false; MAX_KEYS];
    let mut arg = [0f32; MAX_KEYS];
    let mut m = st.max;
    for ((a, n), &s) in arg.iter_mut().zip(&mut new_max).zip(scores) {
        if s > m {
            (*a, *n) = (m - s, true);
            m = s;
        } else {
            *a = s - m;
        }
    }
    // The sum's chain runs beside the exponentials, which do not wait for it; a rescale
    // of 1 leaves the sum as it is, so only a new maximum pays for the multiply.
    let mut sum = st.sum;
    for j0 in (0..n).step_by(8) {
        let k = 8.min(n - j0);
        let e = if k == 8 {
            exp8(arg[j0..][..8].try_into().expect("eight"), t)
        } else {
            std::array::from_fn(|i| if i < k { exp(arg[j0 + i], t) } else { 0.0 })
        };
        for (i, &e) in e[..k].iter().enumerate() {
            let j = j0 + i;
            (ms[j], vs[j]) = if new_max[j] { (e, 1.0) } else { (1.0, e) };
            if ms[j] != 1.0 {
                sum *= ms[j];
            }
            sum += vs[j];
        }
    }
    st.max = m;
    st.sum = sum;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit patterns of `|x|` where the inline exponential ([`exp`], and [`exp8`] over the
    /// same arguments in eights) and `f32::exp` differ, every `stride`-th one, both
    /// signs; the first few shown.
    fn differences(stride: usize) -> usize {
        if !crate::kernels::cpu_has_avx2() || !GLIBC {
            eprintln!("no AVX2 and FMA on this CPU or not glibc: nothing to compare");
            return 0;
        }
        let t = table();
        let mut bad = 0;
        let mut check = |x: &[f32; 8]| {
            // SAFETY: the AVX2 table's CPU check includes FMA.
            let eight = unsafe { exp8(x, t) };
            for (&x, e8) in x.iter().zip(eight) {
                // SAFETY: as above.
                let one = unsafe { exp(x, t) };
                let want = x.exp().to_bits();
                if one.to_bits() != want || e8.to_bits() != want {
                    if bad < 8 {
                        eprintln!(
                            "e^{x:e} ({:#010x}): {one:e} and {e8:e}, libm {:e}",
                            x.to_bits(),
                            x.exp()
                        );
                    }
                    bad += 1;
                }
            }
        };
        let mut batch = [0f32; 8];
        let mut filled = 0;
        for b in (0..=0x7fff_ffffu32).step_by(stride) {
            for x in [f32::from_bits(b), -f32::from_bits(b)] {
                batch[filled] = x;
                filled += 1;
                if filled == 8 {
                    check(&batch);
                    filled = 0;
                }
            }
        }
        bad
    }

    /// A spread of arguments (every 61st bit pattern, 70 million), the edges of the
    /// common path and the special values: the same bits as `f32::exp` (glibc x86-64).
    #[test]
    fn inline_exp_is_libms() {
        assert_eq!(differences(61), 0);
        let edges = [
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            -88.0,
            -87.99999,
            88.0,
            -103.97,
            UNDERFLOW,
            f32::from_bits(UNDERFLOW.to_bits() - 1),
            f32::from_bits(UNDERFLOW.to_bits() + 1),
            OVERFLOW,
            -104.0,
            -200.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            // The two floats whose last bit depends on fusing `x·32/ln 2 - k` (found by
            // the exhaustive test with that step unfused).
            f32::from_bits(0x4202_422f),
            f32::from_bits(0xc27c_65d9),
        ];
        if crate::kernels::cpu_has_avx2() && GLIBC {
            for x in edges {
                // SAFETY: the AVX2 table's CPU check includes FMA.
                let got = unsafe { exp(x, table()) };
                assert_eq!(got.to_bits(), x.exp().to_bits(), "e^{x}");
            }
            // Each edge among ordinary arguments, in every lane of the eight.
            for x in edges {
                for lane in 0..8 {
                    let mut v = [-0.5f32, -3.25, -20.0, -1e-3, -87.5, -95.0, 0.0, -60.0];
                    v[lane] = x;
                    // SAFETY: as above.
                    let got = unsafe { exp8(&v, table()) };
                    for (g, v) in got.iter().zip(v) {
                        assert_eq!(
                            g.to_bits(),
                            v.exp().to_bits(),
                            "e^{v} beside {x} in lane {lane}"
                        );
                    }
                }
            }
        }
    }

    /// Every float (4.3 billion; about twenty seconds optimized).
    #[test]
    #[ignore]
    fn inline_exp_is_libms_everywhere() {
        assert_eq!(differences(1), 0);
    }

    /// The block steps leave the states and give the factors that `Online::step` gives key
    /// by key: rising and falling scores, a first score after the empty state, minus
    /// infinity (a masked key) and repeats.
    #[test]
    fn block_steps_are_online_steps() {
        if !crate::kernels::cpu_has_avx2() {
            return;
        }
        let mut scores: Vec<f32> = (0..MAX_KEYS)
            .map(|j| ((j * 37 % 101) as f32 - 50.0) * 0.731 + j as f32 * 0.05)
            .collect();
        scores[3] = f32::NEG_INFINITY;
        scores[40] = scores[39];
        for start in [Online::START, Online { max: 2.5, sum: 7.0 }] {
            for n in [1, 5, MAX_KEYS] {
                let (mut a, mut b) = (start, start);
                let (mut ms, mut vs) = (vec![0f32; n], vec![0f32; n]);
                // SAFETY: the AVX2 table's CPU check includes FMA.
                unsafe { steps(&mut a, &scores[..n], &mut ms, &mut vs) };
                for j in 0..n {
                    let (m, v) = b.step(scores[j]);
                    assert_eq!(
                        (ms[j].to_bits(), vs[j].to_bits()),
                        (m.to_bits(), v.to_bits()),
                        "key {j}"
                    );
                }
                assert_eq!(
                    (a.max.to_bits(), a.sum.to_bits()),
                    (b.max.to_bits(), b.sum.to_bits())
                );
            }
        }
    }
}
