//! The small elementwise steps of the forward pass, each written to round like ggml's CPU
//! backend (that is what makes loupe's logits agree with llama.cpp's).

use std::sync::OnceLock;

use super::config::RopeStyle;

/// RMS norm of `x` in place, times `w`: x·w / √(mean(x²) + eps). The sum of squares is
/// accumulated in f64 and the scale applied before the weight, as ggml does.
pub fn rmsnorm(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = (*v * scale) * g;
    }
}

/// Softmax of `x` in place (max-subtracted, sum in f64 as ggml's soft_max does).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU as ggml's CPU backend computes it: looked up in a table over every f16 input,
/// with the input rounded to f16 and the output stored as f16; the identity above 10 and
/// zero below -10.
pub fn gelu(x: f32) -> f32 {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f32_to_f16_bits(gelu_tanh(f16_bits_to_f32(h))))
            .collect()
    });
    f16_bits_to_f32(table[f32_to_f16_bits(x) as usize])
}

/// Whether no value of `x` is NaN or infinite. Their exponent bits are all ones; an
/// integer maximum over the exponents vectorizes, where a test that stops early does not,
/// so a row of logits is checked for the price of a copy.
pub fn all_finite(x: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    x.iter().map(|v| v.to_bits() & EXP).max().unwrap_or(0) != EXP
}

/// c·tanh(x/c).
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * (x / cap).tanh()
}

pub fn f32_to_f16_bits(x: f32) -> u16 {
    loupe_quant::F16::from_f32(x).0
}

pub fn f16_bits_to_f32(h: u16) -> f32 {
    loupe_quant::F16(h).to_f32()
}

/// cos/sin of each rotated pair at one position, computed as ggml does: the angle starts
/// at the position and is multiplied by base^(-2/n_rot) per pair (a running product, not a
/// fresh power), divided by the pair's frequency factor and scaled by `freq_scale`.
pub fn rope_cache(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    freq_factors: Option<&[f32]>,
    cache: &mut [f32], // (n_rot): cos, sin interleaved per pair
) {
    rope_cache_at(pos as f32, n_rot, base, freq_scale, freq_factors, cache)
}

/// [`rope_cache`] at any position, negative ones included: a context shift rotates cached
/// keys by −Δ, which ggml computes as the angles of position −Δ (llama.cpp's K-shift).
pub fn rope_cache_at(
    pos: f32,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    freq_factors: Option<&[f32]>,
    cache: &mut [f32], // (n_rot): cos, sin interleaved per pair
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos;
    for i in 0..n_rot / 2 {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = freq_scale * (theta / ff);
        cache[2 * i] = t.cos();
        cache[2 * i + 1] = t.sin();
        theta *= theta_scale;
    }
}

/// Rotate the first `n_rot` dimensions of one head by the angles in `cache`.
pub fn rope_apply(head: &mut [f32], n_rot: usize, style: RopeStyle, cache: &[f32]) {
    for i in 0..n_rot / 2 {
        let (cos, sin) = (cache[2 * i], cache[2 * i + 1]);
        let (a, b) = match style {
            RopeStyle::Normal => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + n_rot / 2),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_of_constant_is_weight() {
        let mut x = vec![3.0f32; 8];
        rmsnorm(&mut x, &[2.0; 8], 0.0);
        assert!(x.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut x = vec![1.0, 2.0, 3.0, -1e30];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
    }

    #[test]
    fn gelu_table_is_close_to_the_formula() {
        for i in -1000..1000 {
            let x = i as f32 / 97.0;
            assert!(
                (gelu(x) - gelu_tanh(x)).abs() <= 2e-3 * (1.0 + x.abs()),
                "{x}"
            );
        }
        assert_eq!(gelu(-11.0), 0.0);
        assert_eq!(gelu(12.5), 12.5);
    }

    #[test]
    fn rope_at_zero_is_identity_and_keeps_norm() {
        let mut c = vec![0.0; 8];
        rope_cache(0, 8, 10000.0, 1.0, None, &mut c);
        let mut h = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let orig = h;
        rope_apply(&mut h, 8, RopeStyle::Neox, &c);
        assert_eq!(h, orig);
        rope_cache(17, 8, 10000.0, 1.0, None, &mut c);
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let mut h = orig;
            rope_apply(&mut h, 8, style, &c);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = h.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
            assert_ne!(h, orig);
        }
    }

    #[test]
    fn rope_by_minus_delta_moves_a_key_back() {
        // A key rotated for position 40, then by -15, is the key rotated for 25, in both
        // styles and with frequency factors.
        let ff: Vec<f32> = (0..4).map(|i| 1.0 + i as f32 * 0.5).collect();
        let orig = [0.3, -1.2, 2.0, 0.7, -0.4, 1.1, 0.9, -2.2];
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let (mut c40, mut cm15, mut c25) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 8]);
            rope_cache(40, 8, 1e4, 0.5, Some(&ff), &mut c40);
            rope_cache_at(-15.0, 8, 1e4, 0.5, Some(&ff), &mut cm15);
            rope_cache(25, 8, 1e4, 0.5, Some(&ff), &mut c25);
            let (mut shifted, mut fresh) = (orig, orig);
            rope_apply(&mut shifted, 8, style, &c40);
            rope_apply(&mut shifted, 8, style, &cm15);
            rope_apply(&mut fresh, 8, style, &c25);
            for (a, b) in shifted.iter().zip(fresh) {
                assert!((a - b).abs() < 1e-5, "{style:?}: {shifted:?} vs {fresh:?}");
            }
        }
    }

    #[test]
    fn all_finite_sees_every_nan_and_infinity() {
        assert!(all_finite(&[]));
        assert!(all_finite(&[0.0, -1.5, f32::MAX, f32::MIN_POSITIVE, 1e-45]));
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in 0..5 {
                let mut x = [1.0f32; 5];
                x[at] = bad;
                assert!(!all_finite(&x), "{bad} at {at}");
            }
        }
    }
}
