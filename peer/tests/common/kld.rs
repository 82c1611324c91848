//! llama-perplexity's KL-divergence mode: the base's log-probabilities stored as
//! `--kl-divergence-base` writes them, and each position of a model scored against them.

/// llama-perplexity's running sums in KL-divergence mode.
#[derive(Default, Debug)]
pub struct KlSums {
    pub sum_nll: f64,
    pub sum_nll_base: f64,
    pub sum_kld: f64,
    pub n_same_top: usize,
    pub count: usize,
}

/// One base row as `--kl-divergence-base` stores it: log-probabilities in 65535 steps
/// from max − 16 (clamped below) to the maximum, with the step and the floor.
pub struct StoredRow {
    scale: f32,
    min_log_prob: f32,
    q: Vec<u16>,
}

/// Round half to even, as the tool's `nearest_int` (the 1.5·2²³ trick) does.
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

pub fn store(logits: &[f32]) -> StoredRow {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = logits
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min)
        .max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let scale = (max - min) / 65535.0;
    let q = if scale != 0.0 {
        let inv = 1.0 / scale;
        logits
            .iter()
            .map(|&l| {
                if l > min {
                    nearest_int(inv * (l - min)) as u16
                } else {
                    0
                }
            })
            .collect()
    } else {
        vec![0; logits.len()]
    };
    StoredRow {
        scale,
        min_log_prob: min - max - log_sum_exp,
        q,
    }
}

/// The tool's scoring of one position of the model against the stored base row.
pub fn score(base: &StoredRow, logits: &[f32], tok: usize, s: &mut KlSums) {
    let (mut max, mut imax) = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            max = l;
            imax = i;
        }
    }
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let nll = max + log_sum_exp - logits[tok];
    s.sum_nll += f64::from(nll);
    let nll_base = -(base.scale * f32::from(base.q[tok]) + base.min_log_prob);
    s.sum_nll_base += f64::from(nll_base);
    let lse = max + log_sum_exp;
    let (mut kld, mut imax_base, mut best) = (0f64, 0, 0f32);
    for (i, (&q, &l)) in base.q.iter().zip(logits).enumerate() {
        let lp_base = base.scale * f32::from(q) + base.min_log_prob;
        if i == 0 || lp_base > best {
            best = lp_base;
            imax_base = i;
        }
        if lp_base > -16.0 {
            kld += f64::from(lp_base.exp() * (lp_base - l + lse));
        }
    }
    s.sum_kld += kld;
    s.count += 1;
    if imax == imax_base {
        s.n_same_top += 1;
    }
}
