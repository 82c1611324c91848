//! The searches the K-quant quantizers share: for a group of 16 or 32 weights, find the
//! sub-block scale (and minimum) and the small integers that reproduce the group best.
//! They follow ggml's `make_qx_quants`, `make_q3_quants` and `make_qkx2_quants` (the
//! paths without an importance matrix) operation by operation, so the chosen scales and
//! quants are bit-identical: every `a * b + c` here is two roundings, as ggml-base is
//! compiled (no `-march`, so no FMA contraction), and integers become floats exactly where
//! C converts them.

use super::q8_k::nearest_int;

/// Groups whose largest magnitude is below this count as all zero (ggml `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// The signed value of largest magnitude in `x` (the first one on ties) and that
/// magnitude; `(0, 0)` for an empty or all-zero group.
#[inline]
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric quants in `-nmax..nmax` (stored offset by `nmax` in `l`) with a scale chosen
/// by weighted least squares, weights `x^2` (ggml's `rmse_type` 1 with no importance
/// matrix): the extreme maps to `-nmax`, then 18 nearby inverse scales are tried and the
/// one with the largest `sumlx^2 / suml2` wins. Returns the scale. Q6_K's search.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in l.iter_mut().zip(x) {
        let q = quant(iscale, v);
        *l = (q + nmax) as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = quant(iscale, v);
            let w = v * v;
            sumlx += w * v * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (l, &v) in l.iter_mut().zip(x) {
                *l = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric quants in `-nmax..nmax` (stored offset by `nmax`) for Q3_K: start from the
/// extreme mapped to `-nmax`, then up to five passes that move single quants whenever
/// that raises the `x^2`-weighted fit `sumlx^2 / suml2`. Returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *l = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (l, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let old = *l as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *l as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// How [`make_qkx2_quants`] searches: inverse scales `(rmin + rdelta * k + nmax) / range`
/// for `k` in `0..=nstep`, errors as absolute (`use_mad`) or squared differences.
#[derive(Clone, Copy)]
pub(crate) struct Qkx2Search {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// Asymmetric quants in `0..=nmax` with a scale and a minimum, `x ~ scale * l - min`: start
/// from the group's range, then try `nstep + 1` inverse scales and, for each, solve the
/// weighted least-squares scale and offset for the rounded quants; keep the one with the
/// smallest weighted error. Returns `(scale, min)`, `min >= 0` being subtracted. The
/// scratch `laux` is the same length as `x`. Q2_K's, Q4_K's and Q5_K's search.
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    s: Qkx2Search,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if s.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((l, &v), &w) in l.iter_mut().zip(x).zip(weights) {
        *l = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
        let diff = scale * *l as f32 + min - v;
        best_error += w * err(diff);
    }
    if s.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=s.nstep {
        iscale = (s.rmin + s.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((la, &v), &w) in laux.iter_mut().zip(x).zip(weights) {
            let q = nearest_int(iscale * (v - min)).clamp(0, nmax);
            *la = q as u8;
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&la, &v), &w) in laux.iter().zip(x).zip(weights) {
                let diff = this_scale * la as f32 + this_min - v;
                cur_error += w * err(diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Pack 256 two-bit values the way Q2_K and Q3_K store their low bits: in each half of
/// 128, byte `l` holds elements `l`, `l + 32`, `l + 64`, `l + 96` at bits 0, 2, 4, 6.
pub(crate) fn pack_2bit(l: &[u8; 256]) -> [u8; 64] {
    let mut qs = [0u8; 64];
    for (qs, l) in qs.chunks_exact_mut(32).zip(l.chunks_exact(128)) {
        for (j, q) in qs.iter_mut().enumerate() {
            *q = l[j] | (l[j + 32] << 2) | (l[j + 64] << 4) | (l[j + 96] << 6);
        }
    }
    qs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dequantize_row, quantize_row, GgmlType};

    /// The quantizers this file serves, and IQ4 which shares their tests.
    const TYPES: [GgmlType; 7] = {
        use GgmlType::*;
        [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS]
    };

    fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
        let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        quantize_row(ty, x, &mut q).unwrap();
        let mut y = vec![0.0f32; x.len()];
        dequantize_row(ty, &q, &mut y).unwrap();
        y
    }

    /// ggml test-quantize-fns' measure: sqrt of the summed squared error, over n.
    fn total_error(a: &[f32], b: &[f32]) -> f32 {
        let s: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum();
        s.sqrt() as f32 / a.len() as f32
    }

    #[test]
    fn synthetic_round_trip_within_ggml_bounds() {
        // ggml test-quantize-fns: 0.1 + 2 cos(i) over 4096 values, and its limits
        // (looser for 2- and 3-bit types).
        let x: Vec<f32> = (0..4096).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
        for ty in TYPES {
            let bound = match ty {
                GgmlType::Q2_K => 0.0075,
                GgmlType::Q3_K => 0.0040,
                _ => 0.002,
            };
            let err = total_error(&x, &round_trip(ty, &x));
            println!("{ty:>6}: total error {err:.6} (bound {bound})");
            assert!(err < bound, "{ty}: total error {err} over {bound}");
        }
    }

    #[test]
    fn relative_error_shrinks_with_bits() {
        // Gaussian-ish rows: each extra bit should roughly halve the RMS error.
        let mut s = 0x1234_5678u64;
        let x: Vec<f32> = (0..256 * 16)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                u * u * u * 8.0 + u
            })
            .collect();
        let rms = |ty| {
            let y = round_trip(ty, &x);
            let e: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            (e / x.len() as f32).sqrt()
        };
        use GgmlType::*;
        let e: Vec<f32> = [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K].map(rms).to_vec();
        println!("rms error Q2_K..Q6_K: {e:?}");
        for w in e.windows(2) {
            assert!(w[1] < 0.75 * w[0], "errors do not shrink: {e:?}");
        }
        assert!(rms(IQ4_XS) < e[1] && rms(IQ4_NL) < e[1]);
    }

    #[test]
    fn zero_and_constant_rows() {
        for ty in TYPES {
            assert!(
                round_trip(ty, &[0.0; 512]).iter().all(|&v| v == 0.0),
                "{ty}"
            );
            // A constant row decodes near the constant (IQ4's non-linear levels and the
            // asymmetric 2-bit grid only approximately).
            let y = round_trip(ty, &[0.75; 256]);
            assert!(
                y.iter().all(|&v| (v - 0.75).abs() < 0.05),
                "{ty}: {:?}",
                &y[..4]
            );
        }
    }

    #[test]
    fn qx_and_q3_searches_keep_quants_in_range() {
        let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.3) * 0.37).collect();
        let mut l = [0i8; 16];
        let s = make_qx_quants(32, &x, &mut l);
        assert!(s != 0.0 && l.iter().all(|&q| (0..64).contains(&q)));
        for (&v, &q) in x.iter().zip(&l) {
            assert!((s * (q as f32 - 32.0) - v).abs() <= s.abs() * 0.51 + 1e-6);
        }
        let s = make_q3_quants(4, &x, &mut l);
        assert!(s != 0.0 && l.iter().all(|&q| (0..8).contains(&q)));
        let mut lu = [0u8; 16];
        let mut aux = [0u8; 16];
        let w = [1.0f32; 16];
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let (scale, min) = make_qkx2_quants(15, &x, &w, &mut lu, &mut aux, search);
        assert!(scale > 0.0 && min >= 0.0 && lu.iter().all(|&q| q <= 15));
        for (&v, &q) in x.iter().zip(&lu) {
            assert!((scale * q as f32 - min - v).abs() < scale);
        }
    }
}
