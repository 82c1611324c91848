//! Unit tests of the stages on hand-made candidate arrays. The public API is tested in
//! `tests/sampler.rs`.

use super::stages::fmt_setting;
use super::*;

fn cands(logits: &[f32]) -> Candidates {
    let mut c = Candidates::with_capacity(logits.len());
    c.fill(logits);
    c
}

fn ids(c: &Candidates) -> Vec<u32> {
    c.as_slice().iter().map(|x| x.id).collect()
}

#[test]
fn sort_prefix_puts_the_best_k_first_ties_by_id() {
    let mut c = cands(&[1.0, 3.0, 2.0, 3.0, 0.5]);
    c.sort_prefix(3);
    assert_eq!(&ids(&c)[..3], &[1, 3, 2]);
    assert!(!c.is_sorted());
    c.sort_prefix(5);
    assert_eq!(ids(&c), vec![1, 3, 2, 0, 4]);
    assert!(c.is_sorted());
}

#[test]
fn softmax_sums_to_one() {
    let mut c = cands(&[0.0, 1.0, 2.0, -1.0]);
    c.softmax();
    let sum: f32 = c.as_slice().iter().map(|x| x.p).sum();
    assert!((sum - 1.0).abs() < 1e-6);
    let e: Vec<f64> = [0.0f64, 1.0, 2.0, -1.0].iter().map(|x| x.exp()).collect();
    let z: f64 = e.iter().sum();
    assert!((f64::from(c.as_slice()[2].p) - e[2] / z).abs() < 1e-6);
}

#[test]
fn top_k_keeps_k_sorted_and_sorts_when_k_exceeds_len() {
    let mut c = cands(&[0.1, 0.9, 0.5, 0.7]);
    TopK { k: 2 }.apply(&mut c);
    assert_eq!(ids(&c), vec![1, 3]);
    assert!(c.is_sorted());
    let mut c = cands(&[0.1, 0.9, 0.5]);
    TopK { k: 10 }.apply(&mut c);
    assert_eq!(ids(&c), vec![1, 2, 0]);
    assert!(c.is_sorted());
}

#[test]
fn top_p_nucleus_wider_than_the_first_partial_sort() {
    // 1000 equally likely tokens: p = 0.5 needs 500 of them, more than the 256 sorted
    // first, so the stage must fall back to the full sort and still keep exactly 500.
    let logits = vec![0.0f32; 1000];
    let mut c = cands(&logits);
    TopP { p: 0.5 }.apply(&mut c);
    assert_eq!(c.len(), 500);
    assert!(c.is_sorted());
    // Equal logits sort by id: the kept ones are 0..500 in order.
    assert_eq!(ids(&c), (0..500).collect::<Vec<u32>>());
}

#[test]
fn top_p_inside_the_first_partial_sort() {
    // 2000 tokens, one dominant (p ≈ 0.9): the nucleus for 0.5 is that one token.
    let mut logits = vec![0.0f32; 2000];
    logits[1234] = 10.0;
    let mut c = cands(&logits);
    TopP { p: 0.5 }.apply(&mut c);
    assert_eq!(ids(&c), vec![1234]);
}

#[test]
fn min_p_keeps_order_of_an_unsorted_array() {
    // p relative to the max: exp(-0.5) ≈ 0.61, exp(-1) ≈ 0.37, exp(-3) ≈ 0.05.
    let mut c = cands(&[-3.0, 0.0, -0.5, -1.0]);
    MinP { p: 0.3 }.apply(&mut c);
    assert_eq!(ids(&c), vec![1, 2, 3]);
}

#[test]
fn penalties_window_evicts_the_oldest() {
    let mut pen = Penalties::new(4, 2, 1.0, 1.0, 0.0);
    for t in [0, 1, 1] {
        pen.accept(t);
    }
    // Window is [1, 1]: token 0 fell out, token 1 counted twice.
    let mut c = cands(&[5.0, 5.0, 5.0, 5.0]);
    pen.apply(&mut c);
    let l: Vec<f32> = c.as_slice().iter().map(|x| x.logit).collect();
    assert_eq!(l, vec![5.0, 3.0, 5.0, 5.0]);
    pen.reset();
    let mut c = cands(&[5.0, 5.0, 5.0, 5.0]);
    pen.apply(&mut c);
    assert!(c.as_slice().iter().all(|x| x.logit == 5.0));
}

#[test]
fn temperature_divides_logits() {
    let mut c = cands(&[1.0, -2.0]);
    Temperature { t: 0.5 }.apply(&mut c);
    let l: Vec<f32> = c.as_slice().iter().map(|x| x.logit).collect();
    assert_eq!(l, vec![2.0, -4.0]);
}

#[test]
fn argmax_ties_to_the_lowest_id_in_any_order() {
    let c = [
        Candidate {
            id: 7,
            logit: 2.0,
            p: 0.0,
        },
        Candidate {
            id: 3,
            logit: 2.0,
            p: 0.0,
        },
        Candidate {
            id: 5,
            logit: 1.0,
            p: 0.0,
        },
    ];
    assert_eq!(argmax(&c), 3);
}

#[test]
fn draw_walks_the_cumulative_probabilities() {
    // p = [0.5, 0.25, 0.25] in array order.
    let l = [0.0f32, -std::f32::consts::LN_2, -std::f32::consts::LN_2];
    let pick = |u: f64| draw(&mut cands(&l), u);
    assert_eq!(pick(0.0), 0);
    assert_eq!(pick(0.49), 0);
    assert_eq!(pick(0.51), 1);
    assert_eq!(pick(0.74), 1);
    assert_eq!(pick(0.76), 2);
    assert_eq!(pick(0.999_999), 2);
}

#[test]
fn draw_never_picks_a_zero_probability_token() {
    let l = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
    assert_eq!(draw(&mut cands(&l), 0.0), 1);
    assert_eq!(draw(&mut cands(&l), 0.999_999_999), 1);
}

#[test]
fn settings_print_with_two_decimals_or_as_many_as_needed() {
    assert_eq!(fmt_setting(0.8), "0.80");
    assert_eq!(fmt_setting(1.1), "1.10");
    assert_eq!(fmt_setting(0.95), "0.95");
    assert_eq!(fmt_setting(0.925), "0.925");
}

#[test]
fn penalties_describe_lists_only_active_parts() {
    assert_eq!(
        Penalties::new(8, 64, 1.1, 0.0, 0.0).describe(),
        "penalties(last 64, repeat 1.10)"
    );
    assert_eq!(
        Penalties::new(8, 32, 1.0, 0.5, -0.25).describe(),
        "penalties(last 32, freq 0.50, presence -0.25)"
    );
}
