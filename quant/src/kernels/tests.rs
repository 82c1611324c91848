//! Kernel tests, llm.c style: the scalar references against a plain f64 dot product of the
//! dequantized rows, every AVX2 kernel against its scalar reference, then the table
//! selection and the row/matrix API. Each comparison prints its largest difference
//! (`cargo test -p loupe-quant kernels -- --nocapture`).
//!
//! Bounds:
//! - Integer exactness. With every scale 1 and activation quants small enough that the
//!   sum of |integer terms| stays below 2^24, every partial sum any kernel forms is an
//!   integer an f32 holds exactly, whatever the order: scalar, AVX2 and the exact i64-like
//!   f64 reference must then agree bit for bit. That checks the integer part of each kernel
//!   exactly (unpacking, offsets, scales, mins, bsums), over the full range of weight bits.
//! - Float part. With random scales, |avx2 - scalar| <= 1e-5 * T, where T is the sum over
//!   elements of |activation| * (|scaled quant| + |scaled min|): a few roundings of a
//!   24-bit mantissa per term group, with room to spare (the largest ratio seen is printed).
//! - Scalar against dequantized f64: the same 1e-5 * T, plus for Q4_1/Q5_1 the f16
//!   rounding of the activation's stored `s = d * sum(q)` (half an f16 ulp, 2^-11
//!   relative, times |m|), which ggml's kernels use by design.

use super::*;
use crate::{dequantize_row, Bf16, QuantizeBlock, F16 as Half};

struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Uniform integer in -a..=a.
    fn int(&mut self, a: i32) -> i32 {
        (self.next_u64() % (2 * a as u64 + 1)) as i32 - a
    }
    /// A nonzero scale of varied magnitude and either sign.
    fn scale(&mut self) -> f32 {
        let mag = 2f32.powf(-10.0 * (self.unit() + 1.0) / 2.0); // 2^-10 .. 1
        if self.next_u64() & 1 == 0 {
            mag
        } else {
            -mag
        }
    }
}

/// Every weight type with a dot kernel.
const DOT_TYPES: [GgmlType; 15] = {
    use GgmlType::*;
    [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ]
};

/// The weight types whose kernels have an integer part (all but the float types; the SIMD
/// F16 and BF16 kernels are checked in `simd_matches_scalar_within_bound` only).
const INT_TYPES: [GgmlType; 12] = {
    use GgmlType::*;
    [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ]
};

/// Block counts per row: odd small ones, and the row lengths of the test models (896 and
/// 4864 elements) where whole blocks allow.
fn block_counts(ty: GgmlType) -> Vec<usize> {
    let be = ty.block_elems();
    let mut v = vec![1, 2, 3, 7];
    for n in [896, 4864] {
        if n % be == 0 {
            v.push(n / be);
        }
    }
    v
}

fn partner(ty: GgmlType) -> GgmlType {
    crate::vec_dot_type(ty).unwrap()
}

/// Largest |integer weight component| per element, with the offsets the AVX2 code adds
/// and removes (Q6_K's unsigned quants and bsum correction), for the exactness bound.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn int_weight_bound(ty: GgmlType) -> f64 {
    use GgmlType::*;
    match ty {
        Q4_0 => 8.0,
        Q4_1 => 16.0,
        Q5_0 => 16.0,
        Q5_1 => 32.0,
        Q8_0 => 128.0,
        IQ4_NL => 127.0,
        Q2_K => 60.0,
        Q3_K => 128.0,
        Q4_K => 63.0 * 16.0,
        Q5_K => 63.0 * 32.0,
        Q6_K => 128.0 * 95.0,
        IQ4_XS => 32.0 * 127.0,
        _ => unreachable!("{ty} has no integer kernel"),
    }
}

/// A random weight row: random bytes with finite scales (1 with `unit`).
fn random_weights(ty: GgmlType, nb: usize, rng: &mut XorShift, unit: bool) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..nb * ty.block_bytes())
        .map(|_| rng.next_u64() as u8)
        .collect();
    let scale = || Half::from_f32(if unit { 1.0 } else { rng.scale() });
    set_scales(ty, &mut bytes, nb, scale);
    bytes
}

/// Give every block of a weight row (`nb` blocks of `ty`) the f16 scales `s()` (and
/// mins), keeping its quant bytes.
fn set_scales(ty: GgmlType, bytes: &mut [u8], nb: usize, mut s: impl FnMut() -> Half) {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => {
            let x: Vec<f32> = (0..nb).map(|_| s().to_f32()).collect();
            crate::quantize_row(ty, &x, bytes).unwrap();
        }
        Q4_0 => set::<BlockQ4_0>(bytes, |b| b.d = s()),
        Q4_1 => set::<BlockQ4_1>(bytes, |b| (b.d, b.m) = (s(), s())),
        Q5_0 => set::<BlockQ5_0>(bytes, |b| b.d = s()),
        Q5_1 => set::<BlockQ5_1>(bytes, |b| (b.d, b.m) = (s(), s())),
        Q8_0 => set::<BlockQ8_0>(bytes, |b| b.d = s()),
        IQ4_NL => set::<BlockIq4Nl>(bytes, |b| b.d = s()),
        Q2_K => set::<BlockQ2K>(bytes, |b| (b.d, b.dmin) = (s(), s())),
        Q3_K => set::<BlockQ3K>(bytes, |b| b.d = s()),
        Q4_K => set::<BlockQ4K>(bytes, |b| (b.d, b.dmin) = (s(), s())),
        Q5_K => set::<BlockQ5K>(bytes, |b| (b.d, b.dmin) = (s(), s())),
        Q6_K => set::<BlockQ6K>(bytes, |b| b.d = s()),
        IQ4_XS => set::<BlockIq4Xs>(bytes, |b| b.d = s()),
        _ => unreachable!(),
    }
}

fn set<B: BlockFormat>(bytes: &mut [u8], mut f: impl FnMut(&mut B)) {
    cast::with_blocks_mut::<B, _>(bytes, |blocks| blocks.iter_mut().for_each(&mut f)).unwrap();
}

/// A random activation row of `n` elements in `ty` (Q8_0, Q8_1, Q8_K or a float type):
/// quants in -amax..=amax with consistent `s`/`bsums`, scales 1 with `unit`.
fn random_acts(ty: GgmlType, n: usize, amax: i32, rng: &mut XorShift, unit: bool) -> Vec<u8> {
    use GgmlType::*;
    let mut bytes = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
    match ty {
        F32 | F16 | BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
            crate::quantize_row(ty, &x, &mut bytes).unwrap();
        }
        Q8_0 => set::<BlockQ8_0>(&mut bytes, |b| {
            b.qs = std::array::from_fn(|_| rng.int(amax) as i8);
            b.d = Half::from_f32(if unit { 1.0 } else { rng.scale() });
        }),
        Q8_1 => set::<BlockQ8_1>(&mut bytes, |b| {
            b.qs = std::array::from_fn(|_| rng.int(amax) as i8);
            b.d = Half::from_f32(if unit { 1.0 } else { rng.scale() });
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            b.s = Half::from_f32(b.d.to_f32() * sum as f32);
        }),
        Q8_K => set::<BlockQ8K>(&mut bytes, |b| {
            b.qs = std::array::from_fn(|_| rng.int(amax) as i8);
            b.d = if unit { 1.0 } else { rng.scale() / 127.0 };
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
        }),
        _ => unreachable!(),
    }
    bytes
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f64> {
    let mut y = vec![0f32; n];
    dequantize_row(ty, bytes, &mut y).unwrap();
    y.into_iter().map(f64::from).collect()
}

/// The weight row split into its scaled-quant part and its minimum part (zero for the
/// formats without a minimum), each dequantized, for the error bound T.
fn weight_parts(ty: GgmlType, w: &[u8], n: usize) -> (Vec<f64>, Vec<f64>) {
    use GgmlType::*;
    let (mut quant, mut min) = (w.to_vec(), w.to_vec());
    let z = Half::ZERO;
    match ty {
        Q4_1 => {
            set::<BlockQ4_1>(&mut quant, |b| b.m = z);
            set::<BlockQ4_1>(&mut min, |b| b.d = z);
        }
        Q5_1 => {
            set::<BlockQ5_1>(&mut quant, |b| b.m = z);
            set::<BlockQ5_1>(&mut min, |b| b.d = z);
        }
        Q2_K => {
            set::<BlockQ2K>(&mut quant, |b| b.dmin = z);
            set::<BlockQ2K>(&mut min, |b| b.d = z);
        }
        Q4_K => {
            set::<BlockQ4K>(&mut quant, |b| b.dmin = z);
            set::<BlockQ4K>(&mut min, |b| b.d = z);
        }
        Q5_K => {
            set::<BlockQ5K>(&mut quant, |b| b.dmin = z);
            set::<BlockQ5K>(&mut min, |b| b.d = z);
        }
        _ => return (dequant(ty, w, n), vec![0.0; n]),
    }
    (dequant(ty, &quant, n), dequant(ty, &min, n))
}

/// The error scale T: sum of |a| * (|scaled quant| + |scaled min|).
fn abs_terms(ty: GgmlType, w: &[u8], a: &[f64]) -> f64 {
    let (q, m) = weight_parts(ty, w, a.len());
    a.iter()
        .zip(q.iter().zip(&m))
        .map(|(a, (q, m))| a.abs() * (q.abs() + m.abs()))
        .sum()
}

#[test]
fn scalar_dot_matches_dequantized_f64_dot() {
    let k = scalar();
    let mut rng = XorShift(0x5eed_0001);
    for ty in DOT_TYPES {
        let act_ty = partner(ty);
        let mut worst = 0.0f64;
        for nb in block_counts(ty) {
            for _ in 0..8 {
                let n = nb * ty.block_elems();
                let w = random_weights(ty, nb, &mut rng, false);
                let a = random_acts(act_ty, n, 127, &mut rng, false);
                let (wd, ad) = (dequant(ty, &w, n), dequant(act_ty, &a, n));
                let want: f64 = wd.iter().zip(&ad).map(|(w, a)| w * a).sum();
                let got = k.vec_dot(ty, n, &w, &a).unwrap() as f64;
                let mut bound = 1e-5 * abs_terms(ty, &w, &ad);
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    // |m| * |s| * 2^-11 per block: s is d * sum(q) rounded to f16.
                    let (_, mins) = weight_parts(ty, &w, n);
                    let s = cast::as_blocks::<BlockQ8_1>(&a).unwrap();
                    bound += mins
                        .chunks_exact(32)
                        .zip(s.iter())
                        .map(|(m, s)| (m[0] * s.s.to_f32() as f64).abs() / 2048.0)
                        .sum::<f64>();
                }
                let diff = (got - want).abs();
                assert!(
                    diff <= bound + 1e-30,
                    "{ty} x {act_ty}, {nb} blocks: scalar {got}, dequantized f64 {want}, \
                     |diff| {diff:e} > bound {bound:e}"
                );
                if bound > 0.0 {
                    worst = worst.max(diff / bound * 1e-5);
                }
            }
        }
        println!("{ty:>6} scalar vs dequantized: max |diff| / T = {worst:.2e}");
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_or_skip() -> Option<&'static Kernels> {
    let k = avx2();
    if k.is_none() {
        eprintln!("this CPU lacks AVX2/FMA: AVX2 kernel tests skipped");
    }
    k
}

/// The SIMD tables this CPU runs (AVX2 and AVX-512 on x86_64, NEON, dotprod and i8mm on
/// aarch64): every table but the scalar one.
fn simd_tables() -> Vec<&'static Kernels> {
    let tables: Vec<_> = available().into_iter().skip(1).collect();
    if tables.is_empty() {
        eprintln!("this CPU runs no SIMD table: SIMD kernel tests skipped");
    }
    tables
}

#[test]
fn simd_integer_part_is_exact() {
    for fast in simd_tables() {
        integer_part_is_exact(fast);
    }
}

fn integer_part_is_exact(fast: &'static Kernels) {
    let mut rng = XorShift(0x5eed_0002);
    for ty in INT_TYPES {
        let act_ty = partner(ty);
        let mut smallest_amax = 127;
        for nb in block_counts(ty) {
            let n = nb * ty.block_elems();
            for _ in 0..16 {
                let w = random_weights(ty, nb, &mut rng, true);
                // Largest activation range whose |terms| sum fits in f32's 24 bits.
                let mut amax = 127;
                let a = loop {
                    let a = random_acts(act_ty, n, amax, &mut rng, true);
                    let sum_abs: f64 = dequant(act_ty, &a, n).iter().map(|a| a.abs()).sum::<f64>();
                    if sum_abs * int_weight_bound(ty) < (1 << 24) as f64 || amax == 1 {
                        break a;
                    }
                    amax /= 2;
                };
                smallest_amax = smallest_amax.min(amax);
                let (wd, ad) = (dequant(ty, &w, n), dequant(act_ty, &a, n));
                let exact: f64 = wd.iter().zip(&ad).map(|(w, a)| w * a).sum();
                let s = scalar().vec_dot(ty, n, &w, &a).unwrap();
                let v = fast.vec_dot(ty, n, &w, &a).unwrap();
                assert_eq!(
                    s as f64, exact,
                    "{ty}, {nb} blocks, |q8| <= {amax}: scalar is not the exact integer sum"
                );
                assert_eq!(
                    v.to_bits(),
                    s.to_bits(),
                    "{ty}, {nb} blocks, |q8| <= {amax}: {} {v} != scalar {s}",
                    fast.name()
                );
            }
        }
        // Full-range activations (±127) in one window of 8 elements, zero elsewhere: each
        // integer sum is at most 8 * 127 * bound < 2^24 for every type, so the whole
        // product of each weight position with extreme activations is checked exactly.
        let mut windows = 0;
        for nb in [1, 2] {
            let n = nb * ty.block_elems();
            let w = random_weights(ty, nb, &mut rng, true);
            for start in (0..n).step_by(8) {
                let a = window_acts(act_ty, n, start..start + 8, &mut rng);
                let (wd, ad) = (dequant(ty, &w, n), dequant(act_ty, &a, n));
                let exact: f64 = wd.iter().zip(&ad).map(|(w, a)| w * a).sum();
                let s = scalar().vec_dot(ty, n, &w, &a).unwrap();
                let v = fast.vec_dot(ty, n, &w, &a).unwrap();
                assert_eq!(s as f64, exact, "{ty}, window at {start}: scalar not exact");
                assert_eq!(
                    v.to_bits(),
                    s.to_bits(),
                    "{ty}, window at {start}: {} {v} != {s}",
                    fast.name()
                );
                windows += 1;
            }
        }
        println!(
            "{ty:>6} {} integer part exact: dense rows with activation quants down to \
             ±{smallest_amax}, {windows} full-range 8-element windows",
            fast.name()
        );
    }
}

/// Unit-scale Q8_0/Q8_1/Q8_K activations: quants in -127..=127 inside `window`, zero
/// outside, with consistent `s` and `bsums` (an 8-element window's sum, at most 1016, is
/// exact in Q8_1's f16 `s`).
fn window_acts(ty: GgmlType, n: usize, window: Range<usize>, rng: &mut XorShift) -> Vec<u8> {
    let q: Vec<i8> = (0..n)
        .map(|i| {
            if window.contains(&i) {
                rng.int(127) as i8
            } else {
                0
            }
        })
        .collect();
    acts_from_quants(ty, &q, 1.0)
}

/// An activation row of type `ty` holding quants `q`, every block with scale `d` (and
/// Q8_1's `s`, Q8_K's `bsums` to match).
fn acts_from_quants(ty: GgmlType, q: &[i8], d: f32) -> Vec<u8> {
    let mut bytes = vec![0u8; ty.row_bytes(q.len() as u64).unwrap() as usize];
    match ty {
        GgmlType::Q8_0 => {
            let mut chunks = q.chunks_exact(32);
            set::<BlockQ8_0>(&mut bytes, |b| {
                b.qs.copy_from_slice(chunks.next().unwrap());
                b.d = Half::from_f32(d);
            });
        }
        GgmlType::Q8_1 => {
            let mut chunks = q.chunks_exact(32);
            set::<BlockQ8_1>(&mut bytes, |b| {
                b.qs.copy_from_slice(chunks.next().unwrap());
                b.d = Half::from_f32(d);
                let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
                b.s = Half::from_f32(d * sum as f32);
            });
        }
        GgmlType::Q8_K => {
            let mut chunks = q.chunks_exact(256);
            set::<BlockQ8K>(&mut bytes, |b| {
                b.qs.copy_from_slice(chunks.next().unwrap());
                b.d = d;
                for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                    *s = g.iter().map(|&q| q as i16).sum();
                }
            });
        }
        _ => unreachable!("{ty} is not an integer kernel's activation type"),
    }
    bytes
}

/// The AVX2 kernels of the 32-weight formats widen their f16 scales with F16C; that must
/// give exactly what the scalar references' software conversion gives, for every half.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_f16c_widening_equals_to_f32_for_every_half() {
    if avx2_or_skip().is_none() {
        return;
    }
    for base in (0..=u16::MAX).step_by(4) {
        let h: [Half; 4] = std::array::from_fn(|i| Half(base + i as u16));
        let got = avx2::f16x4_to_f32_checked(h).unwrap();
        for (h, g) in h.iter().zip(got) {
            assert_eq!(
                g.to_bits(),
                h.to_f32().to_bits(),
                "half {:#06x}: F16C {g:e}, to_f32 {:e}",
                h.0,
                h.to_f32()
            );
        }
    }
}

#[test]
fn simd_matches_scalar_within_bound() {
    for fast in simd_tables() {
        matches_scalar_within_bound(fast);
    }
}

fn matches_scalar_within_bound(fast: &'static Kernels) {
    let mut rng = XorShift(0x5eed_0003);
    // F16 and BF16 are float all through (no integer part), so they are checked here only.
    for ty in INT_TYPES.into_iter().chain([GgmlType::F16, GgmlType::BF16]) {
        let act_ty = partner(ty);
        let mut worst = 0.0f64;
        for nb in block_counts(ty) {
            let n = nb * ty.block_elems();
            for _ in 0..16 {
                let w = random_weights(ty, nb, &mut rng, false);
                let a = random_acts(act_ty, n, 127, &mut rng, false);
                let s = scalar().vec_dot(ty, n, &w, &a).unwrap() as f64;
                let v = fast.vec_dot(ty, n, &w, &a).unwrap() as f64;
                let t = abs_terms(ty, &w, &dequant(act_ty, &a, n));
                let diff = (v - s).abs();
                assert!(
                    diff <= 1e-5 * t,
                    "{ty}, {nb} blocks: {} {v}, scalar {s}, |diff| {diff:e} > 1e-5 * T ({t:e})",
                    fast.name()
                );
                if t > 0.0 {
                    worst = worst.max(diff / t);
                }
            }
        }
        println!(
            "{ty:>6} {} vs scalar: max |diff| / T = {worst:.2e}",
            fast.name()
        );
    }
}

/// Rows for the quantizer tests: ordinary values, exact ties after scaling, zeros,
/// a lone huge value, infinities and NaNs.
fn quantizer_rows() -> Vec<Vec<f32>> {
    let mut rng = XorShift(0x5eed_0004);
    let mut rows = Vec::new();
    for scale in [1e-3f32, 1.0, 1e3, 3e38] {
        rows.push((0..256).map(|_| rng.unit() * scale).collect::<Vec<f32>>());
    }
    // amax 127 gives a multiplier of exactly 1: k + 0.5 values are exact ties.
    let mut ties: Vec<f32> = (0..256).map(|i| (i % 64) as f32 - 31.5).collect();
    for b in ties.chunks_exact_mut(32) {
        b[0] = 127.0;
    }
    rows.push(ties);
    rows.push(vec![0.0; 256]);
    let mut special = vec![0.5f32; 256];
    special[3] = f32::INFINITY;
    special[40] = f32::NAN;
    special[70] = -f32::INFINITY;
    special[100] = f32::from_bits(0x0000_0001); // subnormal
    special[130] = -0.0;
    rows.push(special);
    rows.extend(quantizer_special_rows());
    rows
}

/// Blocks that reach every x86 rule the quantizer spells out (`maxps` letting a NaN
/// through or dropping it, `cvtps2dq`'s i32::MIN for NaN and for values past i32 on
/// either side, the saturating packs), which a SIMD port with its own min/max and
/// conversion rules gets wrong: one block per case, then blocks drawn from a palette of
/// special values at random positions, then random bit patterns.
fn quantizer_special_rows() -> Vec<Vec<f32>> {
    let nan = f32::NAN;
    let neg_nan = f32::from_bits(0xFFC0_0001);
    let snan = f32::from_bits(0x7F80_0001);
    let tiny = f32::from_bits(1); // smallest subnormal
    let two31 = 2_147_483_648.0f32;
    let mut blocks: Vec<[f32; 32]> = Vec::new();
    let mut block = |f: &dyn Fn(&mut [f32; 32])| {
        let mut b = [0.25f32; 32];
        f(&mut b);
        blocks.push(b);
    };
    // A NaN in the last of a lane's four vectors survives maxps: amax NaN, all -128.
    block(&|b| b[24 + 5] = nan);
    // A NaN in an earlier vector is dropped with everything before it in its lane: amax
    // 127 (multiplier 1) while lane 2 held 2^31 and more, which convert to i32::MIN.
    for (big, lane) in [
        (two31, 2),
        (-two31, 3),
        (1e30, 4),
        (-1e30, 5),
        (f32::MAX, 6),
    ] {
        block(&|b| {
            b[0] = 127.0;
            b[lane] = big;
            b[8 + lane] = nan;
        });
    }
    // The largest float below 2^31 converts and saturates to 127; the same just past -2^31.
    block(&|b| {
        b[0] = 127.0;
        (b[1], b[9]) = (two31 - 128.0, neg_nan);
        (b[2], b[10]) = (-two31 - 256.0, snan);
        (b[3], b[11]) = (-two31, nan);
    });
    // amax subnormal: 127 / amax is infinite, zeros become NaN, the rest infinities.
    block(&|b| {
        b.fill(0.0);
        b[7] = -tiny;
        b[8] = tiny;
    });
    // amax infinite: multiplier 0, the infinity itself NaN.
    block(&|b| b[17] = f32::NEG_INFINITY);
    // The smallest normal: 127 / amax is finite, not infinite.
    block(&|b| {
        b.fill(-0.0);
        b[31] = f32::MIN_POSITIVE;
        b[30] = -f32::MIN_POSITIVE / 2.0;
    });
    // A NaN in every lane of the first vector, and exact ties (multiplier 1).
    block(&|b| {
        b[..8].fill(neg_nan);
        b[8] = 127.0;
        for (j, v) in b[9..].iter_mut().enumerate() {
            *v = j as f32 - 11.5;
        }
    });
    let palette = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.5,
        127.0,
        -127.0,
        1e30,
        -1e30,
        two31,
        -two31,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        tiny,
        -tiny,
        f32::INFINITY,
        f32::NEG_INFINITY,
        nan,
        neg_nan,
        snan,
    ];
    let mut rng = XorShift(0x5eed_000b);
    for _ in 0..64 {
        let mut b: [f32; 32] = std::array::from_fn(|_| rng.unit());
        for _ in 0..1 + rng.next_u64() % 4 {
            let j = (rng.next_u64() % 32) as usize;
            b[j] = palette[(rng.next_u64() % palette.len() as u64) as usize];
        }
        blocks.push(b);
    }
    for _ in 0..64 {
        blocks.push(std::array::from_fn(|_| {
            f32::from_bits(rng.next_u64() as u32)
        }));
    }
    vec![blocks.concat()]
}

#[test]
fn activation_q8_0_rounds_like_ggml_cpu_not_like_ref() {
    // amax 127 -> multiplier 1: 2.5 is a tie, rounded to even (2) where the _ref
    // quantizer rounds away from zero (3).
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    let act = q8_0::quantize_activation(&x);
    let r = BlockQ8_0::quantize(&x);
    assert_eq!((act.qs[1], act.qs[2]), (2, -4));
    assert_eq!((r.qs[1], r.qs[2]), (3, -4));
    assert_eq!(act.d, r.d);
    let a1 = q8_1::quantize_activation(&x);
    assert_eq!(a1.qs, act.qs);
    assert_eq!(a1.s.to_f32(), 127.0 + 2.0 - 4.0);
}

#[test]
fn simd_quantize_q8_0_is_bit_identical_to_scalar() {
    for fast in simd_tables() {
        for x in quantizer_rows() {
            let mut a = vec![0u8; x.len() / 32 * 34];
            let mut b = vec![0u8; x.len() / 32 * 34];
            scalar()
                .quantize_activation(GgmlType::Q8_0, &x, &mut a)
                .unwrap();
            fast.quantize_activation(GgmlType::Q8_0, &x, &mut b)
                .unwrap();
            assert_eq!(a, b, "{}: row starting {:?}", fast.name(), &x[..4]);
        }
    }
}

/// On aarch64 every kernel gives the scalar reference's bits (see `neon.rs`), not just
/// a result within a bound: random blocks of every format, scales of every magnitude and
/// sign, activations over their full range, rows of odd lengths and of the test models'.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_tables_give_the_scalar_bits() {
    let mut rng = XorShift(0x5eed_00a6);
    for fast in simd_tables() {
        for ty in DOT_TYPES {
            let act_ty = partner(ty);
            for nb in block_counts(ty) {
                let n = nb * ty.block_elems();
                for round in 0..24 {
                    let unit = round % 4 == 0;
                    let amax = if round % 3 == 0 { 127 } else { 1 + round * 5 };
                    let w = random_weights(ty, nb, &mut rng, unit);
                    let a = random_acts(act_ty, n, amax, &mut rng, unit);
                    let s = scalar().vec_dot(ty, n, &w, &a).unwrap();
                    let v = fast.vec_dot(ty, n, &w, &a).unwrap();
                    assert_eq!(
                        v.to_bits(),
                        s.to_bits(),
                        "{ty}, {nb} blocks, round {round}: {} {v}, scalar {s}",
                        fast.name()
                    );
                }
                // Activations of full magnitude with each weight's sign: block sums as
                // large as the format allows, so that a product of a block sum and two
                // scales rounds, and a kernel that groups those factors otherwise than
                // its reference shows it.
                if INT_TYPES.contains(&ty) {
                    for round in 0..8 {
                        let w = random_weights(ty, nb, &mut rng, false);
                        let q: Vec<i8> = dequant(ty, &w, n)
                            .iter()
                            .map(|&x| if x < 0.0 { -127 } else { 127 })
                            .collect();
                        let a = acts_from_quants(act_ty, &q, rng.scale());
                        let s = scalar().vec_dot(ty, n, &w, &a).unwrap();
                        let v = fast.vec_dot(ty, n, &w, &a).unwrap();
                        assert_eq!(
                            v.to_bits(),
                            s.to_bits(),
                            "{ty}, {nb} blocks, aligned round {round}: {} {v}, scalar {s}",
                            fast.name()
                        );
                    }
                }
            }
            println!("{ty:>6} {} gives the scalar bits", fast.name());
        }
    }
}

/// The `i8mm` table's batch kernels (`smmla`, two weight rows x two activation rows)
/// against the scalar reference's row dots, bit for bit: odd numbers of weight and
/// activation rows (the padded tiles), activation blocks of one pair, random scales and
/// activations over their full range, and blocks of full magnitude with each weight's sign
/// (block sums as large as the format allows, so a regrouped float step shows).
#[cfg(target_arch = "aarch64")]
#[test]
fn i8mm_batches_give_the_scalar_bits() {
    let Some(fast) = i8mm() else {
        eprintln!("this CPU lacks i8mm: smmla batch tests skipped");
        return;
    };
    let mut rng = XorShift(0x5eed_0a8e);
    for ty in INT_TYPES {
        let act_ty = partner(ty);
        for nb in [1, 3, 28] {
            let n_cols = nb * ty.block_elems();
            for (n_rows, n_act) in [(1, 2), (2, 2), (3, 2), (2, 3), (5, 7), (6, 4), (7, 9)] {
                for round in 0..4 {
                    let w: Vec<u8> = (0..n_rows)
                        .flat_map(|_| random_weights(ty, nb, &mut rng, round == 0))
                        .collect();
                    let act: Vec<u8> = if round == 3 {
                        // Full magnitude, with the first weight row's signs.
                        let q: Vec<i8> = dequant(ty, &w[..w.len() / n_rows], n_cols)
                            .iter()
                            .map(|&x| if x < 0.0 { -127 } else { 127 })
                            .collect();
                        (0..n_act)
                            .flat_map(|_| acts_from_quants(act_ty, &q, rng.scale()))
                            .collect()
                    } else {
                        let amax = [127, 1, 127][round];
                        (0..n_act)
                            .flat_map(|_| random_acts(act_ty, n_cols, amax, &mut rng, round == 0))
                            .collect()
                    };
                    for block_bytes in [usize::MAX, 1] {
                        let what =
                            format!("{ty} i8mm {n_rows}x{n_act}, {nb} blocks, round {round}");
                        let batch = (&w[..], n_rows, &act[..], n_act, block_bytes);
                        assert_batch_equals_row_dots(fast, scalar(), ty, n_cols, batch, &what);
                    }
                }
            }
        }
        println!("{ty:>6} i8mm batches give the scalar bits");
    }
}

/// The NEON kernels widen halves (the F16 dot's elements, the 32-weight formats' scales)
/// with `fcvtl`; that must give exactly what the scalar references' software conversion
/// gives, for every half, NaNs included.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_f16_widening_equals_to_f32_for_every_half() {
    for base in (0..=u16::MAX).step_by(8) {
        let h: [Half; 8] = std::array::from_fn(|i| Half(base + i as u16));
        let four = [0, 4].map(|k| neon::f16x4_to_f32_array(h[k..k + 4].try_into().unwrap()));
        let got = neon::f16x8_to_f32_array(h).into_iter().chain(four.concat());
        for (h, g) in h.iter().cycle().zip(got) {
            assert_eq!(
                g.to_bits(),
                h.to_f32().to_bits(),
                "half {:#06x}: fcvtl {g:e}, to_f32 {:e}",
                h.0,
                h.to_f32()
            );
        }
    }
}

/// The float dots' references add f32 products one by one into an f64, so any other
/// order of additions, or products formed in f64, changes their bits only in low places
/// that random rows of similar magnitudes rarely reach. These rows make the order show:
/// products of widely spread magnitudes (so partial sums round in f64) followed by the
/// same products negated in another order, leaving only the accumulated rounding in the
/// result; rows with a signalling NaN and an infinity; and rows of random bits (NaNs,
/// infinities, subnormals). Every length from 1 to 40 crosses the kernels' steps and
/// tails; 4867 is a long row.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_float_dots_keep_the_f64_order() {
    use GgmlType::*;
    let mut rng = XorShift(0x5eed_00a7);
    // A random float of each type as its bits, finite with magnitudes spread over 2^±`e`,
    // or any bit pattern at all (NaNs, infinities, subnormals) with `any`.
    fn draw(ty: GgmlType, rng: &mut XorShift, any: bool) -> u32 {
        let r = rng.next_u64();
        let sign = (r >> 63) as u32;
        match ty {
            F32 if any => r as u32,
            F32 => sign << 31 | (127 - 40 + (r >> 32) as u32 % 81) << 23 | (r as u32 & 0x7F_FFFF),
            F16 if any => r as u32 & 0xFFFF,
            F16 => sign << 15 | ((r >> 32) as u32 % 31) << 10 | (r as u32 & 0x3FF),
            BF16 if any => r as u32 & 0xFFFF,
            BF16 => sign << 15 | (127 - 40 + (r >> 32) as u32 % 81) << 7 | (r as u32 & 0x7F),
            _ => unreachable!(),
        }
    }
    let bytes = |ty: GgmlType, v: &[u32]| -> Vec<u8> {
        match ty {
            F32 => v.iter().flat_map(|b| b.to_le_bytes()).collect(),
            _ => v.iter().flat_map(|&b| (b as u16).to_le_bytes()).collect(),
        }
    };
    let neg = |ty: GgmlType, b: u32| b ^ if ty == F32 { 1 << 31 } else { 1 << 15 };
    for fast in simd_tables() {
        for ty in [F32, F16, BF16] {
            let (mut nonzero, mut rows) = (0, 0);
            for n in (1..=40).chain([896, 4867]) {
                for round in 0..6 {
                    let any = round == 5;
                    let mut w: Vec<u32> = (0..n).map(|_| draw(ty, &mut rng, any)).collect();
                    let mut a: Vec<u32> = (0..n).map(|_| draw(ty, &mut rng, any)).collect();
                    if !any {
                        // The second half cancels the first, in reverse order (a
                        // middle element, if any, is zero).
                        for j in 0..n / 2 {
                            w[n - 1 - j] = w[j];
                            a[n - 1 - j] = neg(ty, a[j]);
                        }
                        if n % 2 == 1 {
                            w[n / 2] = 0;
                        }
                    }
                    if round == 4 {
                        // One signalling NaN (its quieting and sign must come through)
                        // and one infinity, anywhere.
                        let (i, j) = (rng.next_u64() as usize % n, rng.next_u64() as usize % n);
                        let (nan, inf) = match ty {
                            F32 => (0xFF80_0123, 0x7F80_0000),
                            F16 => (0xFC21, 0x7C00),
                            _ => (0xFF81, 0x7F80),
                        };
                        w[j] = inf;
                        w[i] = nan;
                    }
                    let (wb, ab) = (bytes(ty, &w), bytes(ty, &a));
                    let s = scalar().vec_dot(ty, n, &wb, &ab).unwrap();
                    let v = fast.vec_dot(ty, n, &wb, &ab).unwrap();
                    let what = format!("{ty}, {n} elements, round {round}: {}", fast.name());
                    if any && s.is_nan() {
                        // Where two NaNs of different payloads meet, Rust leaves open which
                        // one an addition returns (LLVM commutes `fadd` operands at will,
                        // in the reference as in the kernel): only NaN-ness is defined.
                        assert!(v.is_nan(), "{what} {v:e}, scalar NaN");
                    } else {
                        assert_eq!(v.to_bits(), s.to_bits(), "{what} {v:e}, scalar {s:e}");
                    }
                    rows += 1;
                    nonzero += (s != 0.0 && s.is_finite()) as usize;
                }
            }
            println!(
                "{ty:>6} {}: {rows} rows give the scalar bits ({nonzero} with a finite \
                 nonzero sum)",
                fast.name()
            );
        }
    }
}

#[test]
fn quantize_activation_covers_every_partner_type() {
    let x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
    for ty in DOT_TYPES {
        let p = partner(ty);
        let mut out = vec![0u8; p.row_bytes(512).unwrap() as usize];
        quantize_activation(p, &x, &mut out).unwrap();
        let mut y = vec![0f32; 512];
        dequantize_row(p, &out, &mut y).unwrap();
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-2, "{p}: max error {err}");
    }
    let mut out = vec![0u8; 18 * 16];
    assert_eq!(
        quantize_activation(GgmlType::Q4_0, &x, &mut out),
        Err(QuantError::Unsupported { ty: GgmlType::Q4_0 })
    );
    let mut short = vec![0u8; 33];
    assert!(matches!(
        quantize_activation(GgmlType::Q8_0, &x[..32], &mut short),
        Err(QuantError::WrongByteLength { .. })
    ));
}

#[test]
fn selection_follows_the_request_and_falls_back() {
    let s = scalar();
    // Only the scalar table to offer.
    assert_eq!(select(None, &[s]).0.name(), "scalar");
    assert_eq!(select(Some("auto"), &[s]), (s, None));
    assert_eq!(select(Some("scalar"), &[s]), (s, None));
    for name in &TABLE_NAMES[1..] {
        let (k, note) = select(Some(name), &[s]);
        assert_eq!(k.name(), "scalar");
        assert!(note.unwrap().contains("lacks the features"));
    }
    let (k, note) = select(Some("fast"), &[s]);
    assert_eq!(k.name(), "scalar");
    let names = format!("\"fast\" is not one of auto, {}", TABLE_NAMES.join(", "));
    assert!(note.unwrap().contains(&names));

    let all = available();
    let best = *all.last().unwrap();
    assert_eq!(select(None, &all), (best, None));
    for &k in &all {
        assert_eq!(select(Some(&format!(" {} ", k.name())), &all), (k, None));
    }
    // A table of the other architecture is never available.
    let foreign = if cfg!(target_arch = "aarch64") {
        "avx2"
    } else {
        "neon"
    };
    let (k, note) = select(Some(foreign), &all);
    assert_eq!(k, best);
    assert!(note.is_some());
    if let Some(a) = avx2() {
        assert_eq!(select(Some("avx2"), &all), (a, None));
    }
    // On aarch64 auto takes i8mm where the CPU has it, else dotprod, else neon.
    if cfg!(target_arch = "aarch64") {
        let want = if cpu_has_i8mm() {
            "i8mm"
        } else if cpu_has_dotprod() {
            "dotprod"
        } else {
            "neon"
        };
        assert_eq!(best.name(), want);
        assert_eq!(i8mm().is_some(), cpu_has_i8mm());
    }
    // AVX-VNNI is the best table only without AVX-512, and runs only where detected.
    if let Some(v) = avxvnni() {
        assert_eq!(select(Some("avxvnni"), &all), (v, None));
        assert_eq!(best == v, avx512().is_none());
    } else if cfg!(target_arch = "x86_64") {
        let (k, note) = select(Some("avxvnni"), &all);
        assert_eq!(k, best);
        assert!(note.unwrap().contains("lacks the features"));
    }
    // The process-wide choice is one of them and stays put.
    assert!(TABLE_NAMES.contains(&kernels().name()));
    assert!(std::ptr::eq(kernels(), kernels()));
}

impl PartialEq for Kernels {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

#[test]
fn vec_dot_rejects_bad_rows_without_panicking() {
    use GgmlType::*;
    let w = vec![0u8; 144];
    let a = vec![0u8; 292];
    assert_eq!(vec_dot(Q4_K, 256, &w, &a), Ok(0.0));
    assert_eq!(
        vec_dot(Q4_K, 256, &w[..143], &a),
        Err(QuantError::WrongByteLength {
            ty: Q4_K,
            elems: 256,
            expected: 144,
            got: 143
        })
    );
    assert!(matches!(
        vec_dot(Q4_K, 256, &w, &a[..291]),
        Err(QuantError::WrongByteLength { ty: Q8_K, .. })
    ));
    assert_eq!(
        vec_dot(Q4_K, 100, &w, &a),
        Err(QuantError::NotWholeBlocks {
            ty: Q4_K,
            elems: 100
        })
    );
    for ty in [Q8_K, Q8_1, IQ2_XXS, Q1_0] {
        assert_eq!(
            vec_dot(ty, 256, &w, &a),
            Err(QuantError::Unsupported { ty })
        );
    }
}

#[test]
fn matmul_tiles_equal_row_dots_for_every_table() {
    let mut rng = XorShift(0x5eed_0005);
    let tables = available();
    for ty in DOT_TYPES {
        let act_ty = partner(ty);
        let (n_rows, n_cols, n_act) = (5, 2 * ty.block_elems().max(32), 3);
        let nb = n_cols / ty.block_elems();
        let w: Vec<u8> = (0..n_rows)
            .flat_map(|_| random_weights(ty, nb, &mut rng, false))
            .collect();
        let act: Vec<u8> = (0..n_act)
            .flat_map(|_| random_acts(act_ty, n_cols, 127, &mut rng, false))
            .collect();
        let wr = w.len() / n_rows;
        let ar = act.len() / n_act;
        for k in &tables {
            for rows in [0..n_rows, 1..4, 2..2, 4..5] {
                let mut out = vec![f32::NAN; n_act * rows.len()];
                k.matmul(ty, &w, n_rows, n_cols, &act, n_act, rows.clone(), &mut out)
                    .unwrap();
                let what = format!("{ty} {}", k.name());
                assert_row_dots(k, ty, n_cols, (&w, wr), (&act, ar), rows, &out, &what);
            }
        }
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    use GgmlType::*;
    let k = scalar();
    let w = vec![0u8; 3 * 34];
    let a = vec![0u8; 2 * 34];
    let mut out = vec![0f32; 6];
    assert_eq!(k.matmul(Q8_0, &w, 3, 32, &a, 2, 0..3, &mut out), Ok(()));
    assert_eq!(
        k.matmul(Q8_0, &w, 3, 32, &a, 2, 1..4, &mut out),
        Err(QuantError::RowsOutOfRange {
            start: 1,
            end: 4,
            n_rows: 3
        })
    );
    assert_eq!(
        k.matmul(Q8_0, &w, 3, 32, &a, 2, 0..2, &mut out),
        Err(QuantError::WrongOutputLength {
            expected: 4,
            got: 6
        })
    );
    assert!(matches!(
        k.matmul(Q8_0, &w, 4, 32, &a, 2, 0..3, &mut out),
        Err(QuantError::WrongByteLength { ty: Q8_0, .. })
    ));
    assert!(matches!(
        k.matmul(Q8_0, &w, 3, 32, &a, 3, 0..2, &mut out),
        Err(QuantError::WrongByteLength { .. })
    ));
    assert_eq!(
        k.matmul(Q8_0, &w, usize::MAX, 32, &a, 2, 0..3, &mut out),
        Err(QuantError::WrongByteLength {
            ty: Q8_0,
            elems: usize::MAX,
            expected: usize::MAX,
            got: 102
        })
    );
    // Zero columns: every dot is an empty sum.
    let mut out = vec![1f32; 6];
    assert_eq!(k.matmul(Q8_0, &[], 3, 0, &[], 2, 0..3, &mut out), Ok(()));
    assert_eq!(out, vec![0.0; 6]);
}

#[test]
fn misaligned_rows_give_the_same_dot() {
    let mut rng = XorShift(0x5eed_0006);
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F32] {
        let act_ty = partner(ty);
        let n = 512;
        let w = random_weights(ty, n / ty.block_elems(), &mut rng, false);
        let a = random_acts(act_ty, n, 127, &mut rng, false);
        let want = vec_dot(ty, n, &w, &a).unwrap();
        let mut w1 = vec![0u8; w.len() + 1];
        w1[1..].copy_from_slice(&w);
        let mut a1 = vec![0u8; a.len() + 3];
        a1[3..].copy_from_slice(&a);
        assert_eq!(
            vec_dot(ty, n, &w1[1..], &a1[3..]).unwrap().to_bits(),
            want.to_bits()
        );
    }
}

#[test]
fn float_dots_are_f64_accumulated() {
    // 1 + 2^-30 * many: an f32 accumulator would lose every small term.
    let n = 1024;
    let mut w = vec![1.0f32; n];
    w[0] = 1e8;
    let a = vec![1.0f32; n];
    let mut wb = vec![0u8; 4 * n];
    let mut ab = vec![0u8; 4 * n];
    crate::quantize_row(GgmlType::F32, &w, &mut wb).unwrap();
    crate::quantize_row(GgmlType::F32, &a, &mut ab).unwrap();
    let got = vec_dot(GgmlType::F32, n, &wb, &ab).unwrap();
    assert_eq!(got, (1e8f64 + 1023.0) as f32);
    // bf16/f16 conversions exercised by the dequantized-dot test; check one value here.
    let h = [
        Half::from_f32(1.5).0.to_le_bytes(),
        Half::from_f32(-2.0).0.to_le_bytes(),
    ]
    .concat();
    let b = [
        Bf16::from_f32(1.5).0.to_le_bytes(),
        Bf16::from_f32(-2.0).0.to_le_bytes(),
    ]
    .concat();
    assert_eq!(vec_dot(GgmlType::F16, 2, &h, &h), Ok(6.25));
    assert_eq!(vec_dot(GgmlType::BF16, 2, &b, &b), Ok(6.25));
}

#[test]
fn batched_matmul_equals_row_dots_over_tile_edges() {
    // Batches of 2+ rows take the tiled path on SIMD tables (4 weight rows x up to 4
    // activation rows per step, activation rows in blocks; 16 x 4 on AVX-512; 2 x 2 with
    // `smmla` on i8mm, an odd last row padded): every remainder of both must give
    // vec_dot's bits.
    let mut rng = XorShift(0x5eed_0007);
    for k in available() {
        for ty in DOT_TYPES {
            let act_ty = partner(ty);
            let n_cols = 7 * ty.block_elems().max(32);
            let nb = n_cols / ty.block_elems();
            let shapes = [
                (1, 2),
                (3, 5),
                (4, 4),
                (5, 7),
                (9, 3),
                (8, 9),
                (16, 4),
                (17, 5),
                (35, 2),
            ];
            for (n_rows, n_act) in shapes {
                let w: Vec<u8> = (0..n_rows)
                    .flat_map(|_| random_weights(ty, nb, &mut rng, false))
                    .collect();
                let act: Vec<u8> = (0..n_act)
                    .flat_map(|_| random_acts(act_ty, n_cols, 127, &mut rng, false))
                    .collect();
                // Blocks of activation rows: all in one, and the fewest rows (4) per block.
                let block_bytes = [usize::MAX, 1][n_act % 2];
                let what = format!("{ty} {} {n_rows}x{n_act}", k.name());
                let batch = (&w[..], n_rows, &act[..], n_act, block_bytes);
                assert_batch_equals_row_dots(k, k, ty, n_cols, batch, &what);
            }
        }
    }
}

#[test]
fn batched_float_matmul_equals_row_dots_over_every_tail() {
    // The F16/BF16 batch kernel regroups the row kernel's four fma chains; row lengths
    // around 8 and 32 cover each chain's steps, F16's 8-element steps into chain 0 and
    // the scalar tails (f32 for F16, f64 for BF16).
    let mut rng = XorShift(0x5eed_000f);
    for k in available() {
        for ty in [GgmlType::F16, GgmlType::BF16] {
            for n_cols in [
                1, 7, 8, 9, 24, 31, 32, 33, 40, 56, 63, 64, 71, 95, 96, 100, 255,
            ] {
                for (n_rows, n_act) in [(1, 2), (3, 5), (5, 7), (9, 4), (6, 13)] {
                    let w: Vec<u8> = (0..n_rows)
                        .flat_map(|_| random_acts(ty, n_cols, 0, &mut rng, false))
                        .collect();
                    let act: Vec<u8> = (0..n_act)
                        .flat_map(|_| random_acts(ty, n_cols, 0, &mut rng, false))
                        .collect();
                    // All activation rows in one block, and 4 rows per block.
                    let block_bytes = [usize::MAX, 1][n_act % 2];
                    let what = format!("{ty} {} n{n_cols} {n_rows}x{n_act}", k.name());
                    let batch = (&w[..], n_rows, &act[..], n_act, block_bytes);
                    assert_batch_equals_row_dots(k, k, ty, n_cols, batch, &what);
                }
            }
        }
    }
}

/// The 32-weight formats, whose row and tile kernels are written over the dot step.
#[cfg(target_arch = "x86_64")]
const DOT_STEP_TYPES: [GgmlType; 6] = {
    use GgmlType::*;
    [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL]
};

/// A weight row of `nb` blocks of `ty` with every quant at its largest magnitude (the
/// most negative level, or 15/31 for the unsigned formats), random scales; Q8_0
/// alternates -128 and 127.
#[cfg(target_arch = "x86_64")]
fn extreme_weights(ty: GgmlType, nb: usize, rng: &mut XorShift) -> Vec<u8> {
    use GgmlType::*;
    let mut bytes = random_weights(ty, nb, rng, false);
    match ty {
        Q4_0 => set::<BlockQ4_0>(&mut bytes, |b| b.qs = [0; 16]),
        Q4_1 => set::<BlockQ4_1>(&mut bytes, |b| b.qs = [0xFF; 16]),
        Q5_0 => set::<BlockQ5_0>(&mut bytes, |b| (b.qs, b.qh) = ([0; 16], [0; 4])),
        Q5_1 => set::<BlockQ5_1>(&mut bytes, |b| (b.qs, b.qh) = ([0xFF; 16], [0xFF; 4])),
        Q8_0 => set::<BlockQ8_0>(&mut bytes, |b| {
            b.qs = std::array::from_fn(|i| if i % 2 == 0 { -128 } else { 127 })
        }),
        IQ4_NL => set::<BlockIq4Nl>(&mut bytes, |b| b.qs = [0; 16]), // level -127
        _ => unreachable!("{ty} has no dot-step kernel"),
    }
    bytes
}

/// `fast` gives `reference`'s bits for every 32-weight format, by `vec_dot` and by the
/// batched matmul (tile kernels), on random rows and on rows where `maddubs` forms its
/// largest pair sums: weights at their largest magnitude against activations of all
/// -127, all 127, and alternating signs.
#[cfg(target_arch = "x86_64")]
fn dot_step_gives_the_same_bits(fast: &Kernels, reference: &Kernels) {
    let mut rng = XorShift(0x5eed_0010);
    for ty in DOT_STEP_TYPES {
        let act_ty = partner(ty);
        let nb = 7;
        let n_cols = nb * 32;
        let (n_rows, n_act) = (6, 5);
        for extreme in [false, true] {
            let w: Vec<u8> = (0..n_rows)
                .flat_map(|r| {
                    if extreme && r % 3 != 2 {
                        extreme_weights(ty, nb, &mut rng)
                    } else {
                        random_weights(ty, nb, &mut rng, false)
                    }
                })
                .collect();
            let act: Vec<u8> = (0..n_act)
                .flat_map(|a| {
                    let q: Vec<i8> = (0..n_cols)
                        .map(|i| match a {
                            0 => -127,
                            1 => 127,
                            2 => [-127, 127][i % 2],
                            _ => rng.int(127) as i8,
                        })
                        .collect();
                    if extreme {
                        acts_from_quants(act_ty, &q, rng.scale())
                    } else {
                        random_acts(act_ty, n_cols, 127, &mut rng, false)
                    }
                })
                .collect();
            let (wr, ar) = (w.len() / n_rows, act.len() / n_act);
            let what = format!(
                "{ty} {} vs {}, extreme {extreme}",
                fast.name(),
                reference.name()
            );
            for r in 0..n_rows {
                for a in 0..n_act {
                    let (w, act) = (&w[r * wr..][..wr], &act[a * ar..][..ar]);
                    let got = fast.vec_dot(ty, n_cols, w, act).unwrap();
                    let want = reference.vec_dot(ty, n_cols, w, act).unwrap();
                    assert_eq!(got.to_bits(), want.to_bits(), "{what}: vec_dot r{r} a{a}");
                }
            }
            let mut out = vec![f32::NAN; n_act * n_rows];
            fast.matmul(ty, &w, n_rows, n_cols, &act, n_act, 0..n_rows, &mut out)
                .unwrap();
            assert_row_dots(
                reference,
                ty,
                n_cols,
                (&w, wr),
                (&act, ar),
                0..n_rows,
                &out,
                &what,
            );
        }
    }
}

#[test]
fn batched_matmul_equals_row_dots_at_extreme_quants() {
    // Weights whose quant and scale bytes are all 0x00, 0xFF, 0x0F or 0xF0 (each format's
    // extreme quants and scales) against activations of +-127: the largest pair sums,
    // where a batch kernel that regrouped products would saturate an i16 (or lose an
    // offset) that the row kernel keeps.
    let mut rng = XorShift(0x5eed_000b);
    for k in available() {
        for ty in INT_TYPES {
            let act_ty = partner(ty);
            let n_cols = 2 * ty.block_elems().max(32);
            let nb = n_cols / ty.block_elems();
            let bytes = [0x00u8, 0xFF, 0x0F, 0xF0];
            let w: Vec<u8> = bytes
                .iter()
                .flat_map(|&byte| {
                    let mut row = vec![byte; nb * ty.block_bytes()];
                    set_scales(ty, &mut row, nb, || Half::from_f32(1.0));
                    row
                })
                .collect();
            let act: Vec<u8> = [127i8, -127]
                .iter()
                .flat_map(|&a| {
                    let alternating: Vec<i8> = (0..n_cols)
                        .map(|i| if i % 3 == 0 { -a } else { a })
                        .collect();
                    let random: Vec<i8> = (0..n_cols)
                        .map(|_| if rng.next_u64() & 1 == 0 { a } else { -a })
                        .collect();
                    [vec![a; n_cols], alternating, random]
                })
                .flat_map(|q| acts_from_quants(act_ty, &q, 1.0))
                .collect();
            let (n_rows, n_act) = (bytes.len(), 6);
            let (wr, ar) = (w.len() / n_rows, act.len() / n_act);
            let mut out = vec![f32::NAN; n_act * n_rows];
            k.matmul(ty, &w, n_rows, n_cols, &act, n_act, 0..n_rows, &mut out)
                .unwrap();
            let what = format!("{ty} {} extremes", k.name());
            assert_row_dots(k, ty, n_cols, (&w, wr), (&act, ar), 0..n_rows, &out, &what);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn vl_dpbusd_kernels_give_the_maddubs_bits() {
    // The AVX-512 VL instantiation shares every line with the AVX-VNNI table but the
    // encoding of dpbusd, so this test is what vouches for that table on CPUs that, like
    // most AVX-512 servers, lack AVX-VNNI.
    let (Some(vl), Some(reference)) = (avx2_vl(), avx2()) else {
        eprintln!("this CPU lacks AVX-512 VL + VNNI: VL dpbusd kernel test skipped");
        return;
    };
    dot_step_gives_the_same_bits(vl, reference);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avxvnni_kernels_give_the_maddubs_bits() {
    let (Some(vnni), Some(reference)) = (avxvnni(), avx2()) else {
        eprintln!("this CPU lacks AVX-VNNI: AVX-VNNI kernel test skipped (see the VL test)");
        return;
    };
    dot_step_gives_the_same_bits(vnni, reference);
}

/// `fast`'s batched matmul of every weight row of `w` (`n_rows` rows) by every row of
/// `act` (`n_act` rows), in activation blocks of `block_bytes`, equals `reference`'s
/// `vec_dot` of each pair bit for bit.
fn assert_batch_equals_row_dots(
    fast: &Kernels,
    reference: &Kernels,
    ty: GgmlType,
    n_cols: usize,
    (w, n_rows, act, n_act, block_bytes): (&[u8], usize, &[u8], usize, usize),
    what: &str,
) {
    let mut out = vec![f32::NAN; n_act * n_rows];
    fast.matmul_in_blocks(
        ty,
        w,
        n_rows,
        n_cols,
        act,
        n_act,
        0..n_rows,
        &mut out,
        block_bytes,
    )
    .unwrap();
    let (wr, ar) = (w.len() / n_rows, act.len() / n_act);
    assert_row_dots(
        reference,
        ty,
        n_cols,
        (w, wr),
        (act, ar),
        0..n_rows,
        &out,
        what,
    );
}

/// Every output of a matmul over weight rows `rows` equals the table's own `vec_dot` of
/// that (weight row, activation row) pair, bit for bit. `w` and `act` come with their
/// row sizes in bytes.
#[allow(clippy::too_many_arguments)]
fn assert_row_dots(
    k: &Kernels,
    ty: GgmlType,
    n_cols: usize,
    (w, wr): (&[u8], usize),
    (act, ar): (&[u8], usize),
    rows: std::ops::Range<usize>,
    out: &[f32],
    what: &str,
) {
    for a in 0..act.len() / ar {
        for r in rows.clone() {
            let want = k
                .vec_dot(ty, n_cols, &w[r * wr..][..wr], &act[a * ar..][..ar])
                .unwrap();
            let got = out[a * rows.len() + r - rows.start];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{what}, rows {rows:?}: a{a} r{r}"
            );
        }
    }
}

#[test]
fn packed_matmul_equals_row_dots() {
    use crate::packed::{PackedRows, PACKED_ROWS};
    let mut rng = XorShift(0x5eed_0009);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let partner = crate::vec_dot_type(ty).unwrap();
        for (n_rows, nb) in [(1, 3), (15, 7), (16, 1), (17, 4), (35, 2), (48, 2)] {
            let n_cols = nb * ty.block_elems();
            let w: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_weights(ty, nb, &mut rng, false))
                .collect();
            let packed = PackedRows::new(ty, &w, n_rows, n_cols).unwrap();
            assert_eq!(packed.ty(), ty);
            let wr = w.len() / n_rows;
            for r in 0..n_rows {
                assert_eq!(
                    packed.row(r),
                    w[r * wr..][..wr],
                    "{ty} {n_rows}x{n_cols}: row {r}"
                );
            }
            // 130 rows: Q5_0 and Q6_K put the tiles back and run the batch kernel.
            for n_act in [1, 2, 3, 4, 5, 9, 130] {
                let act: Vec<u8> = (0..n_act)
                    .flat_map(|_| random_acts(partner, n_cols, 127, &mut rng, false))
                    .collect();
                let ar = act.len() / n_act;
                for k in available() {
                    // Every tile start to the end, and the first tile alone.
                    let first_tile = 0..n_rows.min(PACKED_ROWS);
                    let starts = (0..n_rows).step_by(PACKED_ROWS);
                    for rows in starts.map(|s| s..n_rows).chain(std::iter::once(first_tile)) {
                        let mut out = vec![f32::NAN; n_act * rows.len()];
                        let res = k.matmul_packed(&packed, &act, n_act, rows.clone(), &mut out);
                        if !k.runs_packed() {
                            assert!(matches!(res, Err(QuantError::NoPackedKernel { .. })));
                            continue;
                        }
                        res.unwrap();
                        let what = format!("{ty} {} {n_rows}x{n_cols}, {n_act} act rows", k.name());
                        assert_row_dots(k, ty, n_cols, (&w, wr), (&act, ar), rows, &out, &what);
                    }
                }
            }
            // A range must start on a tile; the activations must be the partner's size.
            if let (Some(k), true) = (avx512(), n_rows > 1) {
                let act = random_acts(partner, n_cols, 127, &mut rng, false);
                let mut out = vec![0.0; n_rows - 1];
                let err = k.matmul_packed(&packed, &act, 1, 1..n_rows, &mut out);
                assert!(matches!(
                    err,
                    Err(QuantError::PackedRowsUnaligned { start: 1, .. })
                ));
                let mut out = vec![0.0; n_rows];
                let err = k.matmul_packed(&packed, &act[1..], 1, 0..n_rows, &mut out);
                assert!(err.is_err());
            }
        }
    }
    // Wrong sizes and types are errors, not panics.
    assert!(PackedRows::new(GgmlType::Q4_0, &[0; 17], 1, 32).is_err());
    assert!(PackedRows::new(GgmlType::Q4_0, &[0; 18], 1, 33).is_err());
    assert!(PackedRows::new(GgmlType::Q4_K, &[0; 144], 1, 128).is_err());
    assert!(matches!(
        PackedRows::new(GgmlType::Q8_0, &[0; 34], 1, 32),
        Err(QuantError::Unsupported { .. })
    ));
}

#[test]
fn packed_arena_holds_each_matrix_in_its_own_slot() {
    use crate::packed::{fill, PackedArena};
    use GgmlType::{Q4_0, Q4_K, Q5_0, Q6_K};
    let mut rng = XorShift(0x5eed_000a);
    let shapes = [
        (Q4_0, 17, 64),
        (Q4_K, 3, 256),
        (Q5_0, 5, 64),
        (Q4_0, 32, 96),
        (Q4_K, 20, 512),
        (Q6_K, 18, 256),
    ];
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(ty, rows, cols)| {
            (0..rows)
                .flat_map(|_| random_weights(ty, cols / ty.block_elems(), &mut rng, false))
                .collect()
        })
        .collect();
    let mut arena = PackedArena::new(&shapes).unwrap();
    let slots = arena.slots_mut();
    assert_eq!(
        slots.iter().map(|s| s.len()).collect::<Vec<_>>(),
        [
            2 * 2 * 288,
            2368,
            2 * 352,
            2 * 3 * 288,
            2 * 2 * 2368,
            2 * 3360
        ]
    );
    assert!(slots
        .iter()
        .all(|s| (s.as_ptr() as usize).is_multiple_of(64)));
    // Filled out of order, as a thread pool would.
    let mut slots: Vec<_> = slots.into_iter().enumerate().collect();
    slots.reverse();
    for (i, slot) in slots {
        let (ty, rows, cols) = shapes[i];
        fill(ty, &data[i], rows, cols, slot).unwrap();
    }
    let arena = std::sync::Arc::new(arena);
    for (i, &(ty, rows, cols)) in shapes.iter().enumerate() {
        let m = arena.rows(i);
        assert_eq!((m.ty(), m.rows(), m.cols()), (ty, rows, cols));
        let wr = data[i].len() / rows;
        for r in 0..rows {
            assert_eq!(m.row(r), data[i][r * wr..][..wr], "matrix {i} row {r}");
        }
    }
    // A slot of the wrong size, the wrong type and columns not whole blocks are errors.
    let mut arena = PackedArena::new(&[(Q4_0, 16, 32)]).unwrap();
    let slot = arena.slots_mut().pop().unwrap();
    assert!(matches!(
        fill(Q4_0, &data[0], 17, 64, slot),
        Err(QuantError::WrongOutputLength { .. })
    ));
    assert!(matches!(
        fill(GgmlType::Q8_0, &[0; 34], 1, 32, slot),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(matches!(
        PackedArena::new(&[(Q4_0, 1, 32), (Q4_0, 1, 33)]),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    assert!(matches!(
        PackedArena::new(&[(Q4_K, 1, 128)]),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    // An empty arena is valid.
    assert!(PackedArena::new(&[]).unwrap().slots_mut().is_empty());
}
