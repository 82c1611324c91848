//! The sampler on tiny hand-made distributions (test tier 4 of STYLE.md): each stage's
//! rule, the seeded draw, validation, `describe`, `trace`, and the sampling flags.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use clap::{CommandFactory, Parser};
use loupe_engine::sample::{
    softmax_top, Sampler, SamplerConfig, SamplerError, SamplerSettings, StageView, DEFAULT_SEED,
};

use loupe::cli::sampler_args::{resolve, SamplerArgs};

// ---------------------------------------------------------------------------------------
// An allocator that counts this thread's allocations, to hold `sample` to "allocates nothing".
// ---------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(|n| n.get())
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A config with every filter off: penalties neutral, top-k 0, top-p 1, min-p 0.
fn plain(temp: f32) -> SamplerConfig {
    SamplerConfig {
        temp,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 1,
        ..SamplerConfig::default()
    }
}

/// Logits whose softmax is exactly `probs` (up to f32 rounding).
fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

fn stage<'a>(views: &'a [StageView], name: &str) -> &'a StageView {
    views
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no {name} stage in {views:?}"))
}

fn ids(v: &StageView) -> Vec<u32> {
    v.top.iter().map(|c| c.id).collect()
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

const P4: [f32; 4] = [0.5, 0.3, 0.15, 0.05];

// ---------------------------------------------------------------------------------------
// Config, validation, describe
// ---------------------------------------------------------------------------------------

#[test]
fn defaults_are_llama_cpps() {
    let d = SamplerConfig::default();
    assert_eq!((d.temp, d.top_k, d.top_p, d.min_p), (0.8, 40, 0.95, 0.05));
    assert_eq!(
        (d.repeat_penalty, d.frequency_penalty, d.presence_penalty),
        (1.0, 0.0, 0.0)
    );
    assert_eq!(d.penalty_last_n, 64);
    assert_eq!(d.seed, DEFAULT_SEED);
    d.validate().unwrap();
}

#[test]
fn invalid_settings_are_errors_naming_the_option_and_value() {
    let d = SamplerConfig::default();
    let cases: Vec<(SamplerConfig, &str, &str)> = vec![
        (SamplerConfig { top_k: -1, ..d }, "top-k", "-1"),
        (SamplerConfig { top_p: 1.5, ..d }, "top-p", "1.5"),
        (SamplerConfig { top_p: -0.1, ..d }, "top-p", "-0.1"),
        (SamplerConfig { min_p: 2.0, ..d }, "min-p", "2"),
        (SamplerConfig { min_p: -0.5, ..d }, "min-p", "-0.5"),
        (
            SamplerConfig {
                repeat_penalty: -1.0,
                ..d
            },
            "repeat-penalty",
            "-1",
        ),
        (
            SamplerConfig {
                repeat_penalty: 0.0,
                ..d
            },
            "repeat-penalty",
            "0",
        ),
        (
            SamplerConfig {
                repeat_penalty: f32::INFINITY,
                ..d
            },
            "repeat-penalty",
            "inf",
        ),
        (
            SamplerConfig {
                frequency_penalty: f32::NAN,
                ..d
            },
            "frequency-penalty",
            "NaN",
        ),
        (
            SamplerConfig {
                presence_penalty: f32::INFINITY,
                ..d
            },
            "presence-penalty",
            "inf",
        ),
        (
            SamplerConfig {
                penalty_last_n: -1,
                ..d
            },
            "repeat-last-n",
            "-1",
        ),
        (
            SamplerConfig {
                temp: f32::NAN,
                ..d
            },
            "temp",
            "NaN",
        ),
    ];
    for (cfg, option, value) in cases {
        let err = cfg.validate().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(option) && msg.contains(value),
            "{option}={value}: {msg}"
        );
        match &err {
            SamplerError::Invalid { option: o, .. } => assert_eq!(*o, option),
            other => panic!("unexpected {other:?}"),
        }
        // The sampler refuses to be built with it, too.
        assert_eq!(Sampler::new(cfg, 4).unwrap_err(), err);
    }
}

#[test]
fn edge_values_are_valid() {
    let d = SamplerConfig::default();
    for cfg in [
        SamplerConfig { top_p: 0.0, ..d },
        SamplerConfig {
            top_p: 1.0,
            min_p: 1.0,
            ..d
        },
        SamplerConfig { temp: -1.0, ..d }, // greedy, as in llama.cpp
        SamplerConfig {
            frequency_penalty: -0.5,
            presence_penalty: -0.5,
            ..d
        }, // encourage
        SamplerConfig {
            repeat_penalty: 0.5,
            penalty_last_n: 0,
            ..d
        },
    ] {
        cfg.validate().unwrap();
    }
    assert_eq!(
        Sampler::new(d, 0).unwrap_err(),
        SamplerError::EmptyVocabulary
    );
}

#[test]
fn describe_lists_only_active_stages() {
    let d = SamplerConfig::default();
    let describe = |cfg| Sampler::new(cfg, 8).unwrap().describe();
    assert_eq!(
        describe(d),
        "top-k 40 → top-p 0.95 → min-p 0.05 → temp 0.80 → dist(seed 42)"
    );
    assert_eq!(
        describe(SamplerConfig { repeat_penalty: 1.1, ..d }),
        "penalties(last 64, repeat 1.10) → top-k 40 → top-p 0.95 → min-p 0.05 → temp 0.80 → dist(seed 42)"
    );
    assert_eq!(describe(plain(1.0)), "temp 1.00 → dist(seed 1)");
    assert_eq!(
        describe(SamplerConfig {
            top_p: 1.0,
            min_p: 0.0,
            ..d
        }),
        "top-k 40 → temp 0.80 → dist(seed 42)"
    );
    // Penalties with a window of 0, or all neutral, are left out.
    assert_eq!(
        describe(SamplerConfig {
            repeat_penalty: 1.3,
            penalty_last_n: 0,
            ..plain(1.0)
        }),
        "temp 1.00 → dist(seed 1)"
    );
    // Greedy: the filters cannot change an argmax, penalties can.
    assert_eq!(describe(SamplerConfig { temp: 0.0, ..d }), "greedy");
    assert_eq!(
        describe(SamplerConfig {
            temp: 0.0,
            presence_penalty: 0.5,
            penalty_last_n: 16,
            ..d
        }),
        "penalties(last 16, presence 0.50) → greedy"
    );
}

// ---------------------------------------------------------------------------------------
// Each stage, seen through trace()
// ---------------------------------------------------------------------------------------

#[test]
fn top_k_keeps_k() {
    let mut s = Sampler::new(
        SamplerConfig {
            top_k: 2,
            ..plain(1.0)
        },
        4,
    )
    .unwrap();
    let t = s.trace(&logits_of(&[0.1, 0.4, 0.2, 0.3]), 10);
    let v = stage(&t.stages, "top-k");
    assert_eq!(v.kept, 2);
    assert_eq!(ids(v), vec![1, 3]);
    assert_eq!(v.dropped, vec![2, 0]);
    // Renormalized over what is left: 0.4 / 0.7 and 0.3 / 0.7.
    assert!(close(v.top[0].p, 0.4 / 0.7, 1e-5) && close(v.top[1].p, 0.3 / 0.7, 1e-5));
    assert!(t.chosen == 1 || t.chosen == 3);
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    for (p, kept) in [(0.0, 1), (0.45, 1), (0.75, 2), (0.85, 3), (0.97, 4)] {
        let mut s = Sampler::new(
            SamplerConfig {
                top_p: p,
                ..plain(1.0)
            },
            4,
        )
        .unwrap();
        let t = s.trace(&logits_of(&P4), 10);
        let v = stage(&t.stages, "top-p");
        assert_eq!(v.kept, kept, "top-p {p}");
        assert_eq!(ids(v), (0..kept as u32).collect::<Vec<_>>());
    }
}

#[test]
fn min_p_threshold_is_relative_to_the_most_likely() {
    // p_max = 0.5: min-p 0.2 cuts below 0.1, min-p 0.5 below 0.25, min-p 1 keeps the top.
    for (min_p, kept) in [(0.05, 4), (0.2, 3), (0.5, 2), (1.0, 1)] {
        let mut s = Sampler::new(
            SamplerConfig {
                min_p,
                ..plain(1.0)
            },
            4,
        )
        .unwrap();
        let t = s.trace(&logits_of(&P4), 10);
        assert_eq!(stage(&t.stages, "min-p").kept, kept, "min-p {min_p}");
    }
}

#[test]
fn temperature_sharpens_below_one_and_flattens_above() {
    let top_p_at = |temp: f32| {
        let mut s = Sampler::new(plain(temp), 4).unwrap();
        let t = s.trace(&logits_of(&P4), 4);
        let v = stage(&t.stages, "temp");
        assert_eq!(v.kept, 4);
        v.top[0].p
    };
    assert!(close(top_p_at(1.0), 0.5, 1e-5));
    // At T = 0.5 the probabilities are squared and renormalized.
    let sq: f32 = P4.iter().map(|p| p * p).sum();
    assert!(close(top_p_at(0.5), 0.25 / sq, 1e-5));
    assert!(top_p_at(0.5) > 0.5 && top_p_at(2.0) < 0.5);
    assert!(top_p_at(100.0) < 0.26);
}

#[test]
fn penalties_follow_the_sign_rule_then_subtract_frequency_and_presence() {
    let logits = [4.0, -1.0, 2.0, 0.0, 3.0];
    let cfg = SamplerConfig {
        repeat_penalty: 2.0,
        penalty_last_n: 8,
        ..plain(1.0)
    };
    let mut s = Sampler::new(cfg, 5).unwrap();
    for t in [0, 1, 3] {
        s.accept(t);
    }
    let t = s.trace(&logits, 5);
    let logit_of = |id: u32| {
        stage(&t.stages, "penalties")
            .top
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .logit
    };
    assert_eq!(logit_of(0), 2.0); // positive: divided
    assert_eq!(logit_of(1), -2.0); // negative: multiplied
    assert_eq!(logit_of(3), 0.0); // zero counts as "≤ 0": multiplied, stays 0
    assert_eq!(logit_of(2), 2.0); // unseen: untouched
    assert_eq!(logit_of(4), 3.0);

    let cfg = SamplerConfig {
        frequency_penalty: 0.5,
        presence_penalty: 1.0,
        penalty_last_n: 8,
        ..plain(1.0)
    };
    let mut s = Sampler::new(cfg, 5).unwrap();
    for t in [0, 0, 2] {
        s.accept(t);
    }
    let t = s.trace(&logits, 5);
    let logit_of = |id: u32| {
        stage(&t.stages, "penalties")
            .top
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .logit
    };
    assert_eq!(logit_of(0), 4.0 - (2.0 * 0.5 + 1.0));
    assert_eq!(logit_of(2), 2.0 - (0.5 + 1.0));
    assert_eq!(logit_of(4), 3.0);
}

#[test]
fn penalties_only_see_the_last_n_tokens() {
    let cfg = SamplerConfig {
        temp: 0.0,
        repeat_penalty: 10.0,
        penalty_last_n: 2,
        ..SamplerConfig::default()
    };
    let mut s = Sampler::new(cfg, 3).unwrap();
    let logits = [3.0, 2.0, 1.0];
    s.accept(0);
    assert_eq!(s.sample(&logits), 1); // 3 / 10 < 2
    s.accept(1);
    s.accept(2); // window [1, 2]: token 0 has left it
    assert_eq!(s.sample(&logits), 0);
    s.reset();
    assert_eq!(s.sample(&logits), 0);
}

// ---------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------

#[test]
fn greedy_picks_the_argmax_lowest_id_on_ties() {
    let mut s = Sampler::new(
        SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        },
        5,
    )
    .unwrap();
    assert_eq!(s.sample(&[0.1, 0.9, 0.3, -2.0, 0.5]), 1);
    assert_eq!(s.sample(&[0.1, 0.9, 0.3, 0.9, 0.9]), 1);
    assert_eq!(s.sample(&[2.0, 2.0, 2.0, 2.0, 2.0]), 0);
    // Greedy ignores the seed: any number of calls, same answer.
    for _ in 0..10 {
        assert_eq!(s.sample(&[0.0, 0.0, 0.0, 7.0, 7.0]), 3);
    }
}

#[test]
fn seeded_draws_are_reproducible() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
    let run = |seed: u64| {
        let mut s = Sampler::new(
            SamplerConfig {
                seed,
                ..SamplerConfig::default()
            },
            50,
        )
        .unwrap();
        (0..200).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    // reset() restarts the stream.
    let mut s = Sampler::new(
        SamplerConfig {
            seed: 7,
            ..SamplerConfig::default()
        },
        50,
    )
    .unwrap();
    let first: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
    s.reset();
    let again: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
    assert_eq!(first, again);
    assert_eq!(first, run(7));
}

#[test]
fn draw_frequencies_match_the_probabilities() {
    let n = 100_000;
    let mut s = Sampler::new(plain(1.0), 4).unwrap();
    let logits = logits_of(&P4);
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&logits) as usize] += 1;
    }
    for (i, &p) in P4.iter().enumerate() {
        let f = counts[i] as f32 / n as f32;
        // One standard error is at most 0.0016; allow about 6.
        assert!(
            close(f, p, 0.01),
            "token {i}: frequency {f}, probability {p}"
        );
    }
}

#[test]
fn draws_follow_the_filtered_distribution() {
    // top-k 2 then temperature 0.5: the draw sees [0.5, 0.3] squared and renormalized.
    let n = 50_000;
    let mut s = Sampler::new(
        SamplerConfig {
            top_k: 2,
            ..plain(0.5)
        },
        4,
    )
    .unwrap();
    let logits = logits_of(&P4);
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&logits) as usize] += 1;
    }
    assert_eq!(counts[2] + counts[3], 0);
    let want = 0.25 / (0.25 + 0.09);
    assert!(close(counts[0] as f32 / n as f32, want, 0.01), "{counts:?}");
}

#[test]
fn sample_allocates_nothing() {
    let n_vocab = 5000;
    let logits: Vec<f32> = (0..n_vocab)
        .map(|i| ((i * 7919 % 1000) as f32) / 100.0)
        .collect();
    let cfgs = [
        SamplerConfig {
            repeat_penalty: 1.1,
            frequency_penalty: 0.1,
            presence_penalty: 0.1,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            top_k: 0,
            top_p: 0.9,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            temp: 0.0,
            repeat_penalty: 1.2,
            ..SamplerConfig::default()
        },
    ];
    for cfg in cfgs {
        let mut s = Sampler::new(cfg, n_vocab).unwrap();
        for t in 0..100 {
            s.accept(t); // fills the penalty window to capacity
        }
        let before = allocs();
        for _ in 0..50 {
            let t = s.sample(&logits);
            s.accept(t);
        }
        assert_eq!(allocs() - before, 0, "{}", s.describe());
        // The counter does count: trace allocates.
        s.trace(&logits, 3);
        assert!(allocs() > before);
    }
}

// ---------------------------------------------------------------------------------------
// trace() and softmax_top()
// ---------------------------------------------------------------------------------------

#[test]
fn trace_reports_each_stage_and_picks_what_sample_picks() {
    let n_vocab = 100;
    let logits: Vec<f32> = (0..n_vocab).map(|i| -((i as f32) * 0.1)).collect();
    let cfg = SamplerConfig {
        repeat_penalty: 1.5,
        seed: 3,
        ..SamplerConfig::default()
    };
    let (mut traced, mut sampled) = (
        Sampler::new(cfg, n_vocab).unwrap(),
        Sampler::new(cfg, n_vocab).unwrap(),
    );
    for _ in 0..30 {
        let t = traced.trace(&logits, 5);
        let names: Vec<&str> = t.stages.iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            ["model", "penalties", "top-k", "top-p", "min-p", "temp"]
        );
        let kept: Vec<usize> = t.stages.iter().map(|v| v.kept).collect();
        assert_eq!(kept[..3], [100, 100, 40]);
        assert!(
            kept[3] <= 40 && kept[4] <= kept[3] && kept[5] == kept[4],
            "{kept:?}"
        );
        assert!(t.stages.iter().all(|v| v.top.len() == 5.min(v.kept)));
        assert!(t.chosen_p > 0.0 && t.chosen_p <= 1.0);
        let s = sampled.sample(&logits);
        assert_eq!(t.chosen, s);
        traced.accept(t.chosen);
        sampled.accept(s);
    }
}

#[test]
fn trace_model_view_is_the_softmax_of_the_logits() {
    let logits = [1.0, 3.0, 2.0, 3.0, -1.0];
    let mut s = Sampler::new(SamplerConfig::default(), 5).unwrap();
    let t = s.trace(&logits, 3);
    let model = &t.stages[0];
    assert_eq!(model.name, "model");
    assert_eq!(model.kept, 5);
    let top: Vec<(u32, f32)> = model.top.iter().map(|c| (c.id, c.p)).collect();
    assert_eq!(top, softmax_top(&logits, 3));
    assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3, 2]);
}

#[test]
fn greedy_trace_chooses_the_argmax() {
    let mut s = Sampler::new(
        SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        },
        4,
    )
    .unwrap();
    let t = s.trace(&logits_of(&P4), 2);
    assert_eq!(t.stages.len(), 1);
    assert_eq!(t.chosen, 0);
    assert!(close(t.chosen_p, 0.5, 1e-5));
}

#[test]
fn softmax_top_is_ordered_and_normalized_over_the_whole_vocabulary() {
    let logits = logits_of(&P4);
    let all = softmax_top(&logits, 10);
    assert_eq!(all.len(), 4);
    let sum: f32 = all.iter().map(|x| x.1).sum();
    assert!(close(sum, 1.0, 1e-5));
    for (i, (id, p)) in all.iter().enumerate() {
        assert_eq!(*id, i as u32);
        assert!(close(*p, P4[i], 1e-5));
    }
    let two = softmax_top(&logits, 2);
    assert_eq!(two, all[..2]);
    assert!(softmax_top(&logits, 0).is_empty());
    assert!(softmax_top(&[], 3).is_empty());
}

// ---------------------------------------------------------------------------------------
// The sampling flags
// ---------------------------------------------------------------------------------------

#[derive(Parser, Debug)]
struct Cmd {
    #[command(flatten)]
    sampling: SamplerArgs,
}

/// The flags as the engine's settings (converted once, as a command does).
fn parse(args: &[&str]) -> SamplerSettings {
    Cmd::try_parse_from(std::iter::once("loupe").chain(args.iter().copied()))
        .unwrap()
        .sampling
        .settings()
}

/// Each setting as (name, value, source name), as a run's header shows it.
fn sources(s: &SamplerSettings) -> Vec<(&'static str, String, &'static str)> {
    s.sources()
        .into_iter()
        .map(|(k, v, from)| (k, v, from.name()))
        .collect()
}

#[test]
fn flags_definition_is_consistent() {
    Cmd::command().debug_assert();
}

#[test]
fn no_flags_gives_the_defaults_and_a_random_seed_reported_once() {
    let a = parse(&[]);
    let cfg = resolve(&a).unwrap();
    assert_eq!(
        cfg,
        SamplerConfig {
            seed: cfg.seed,
            ..SamplerConfig::default()
        }
    );
    // The picked seed is stable: resolve, seed() and sources() agree.
    assert_eq!(resolve(&a).unwrap().seed, cfg.seed);
    assert_eq!(a.seed(), cfg.seed);
    let src = sources(&a);
    assert_eq!(src.len(), 9);
    assert!(
        src[..8].iter().all(|(_, _, from)| *from == "default"),
        "{src:?}"
    );
    assert_eq!(src[8], ("seed", cfg.seed.to_string(), "random"));
    assert_eq!(src[1], ("top-k", "40".to_string(), "default"));
    let described = Sampler::new(cfg, 8).unwrap().describe();
    assert!(
        described.ends_with(&format!("dist(seed {})", cfg.seed)),
        "{described}"
    );
}

#[test]
fn flags_override_and_are_reported_as_flags() {
    let a = parse(&[
        "--temp",
        "0.5",
        "--top-k",
        "10",
        "--top-p",
        "0.9",
        "--min-p",
        "0.1",
        "--repeat-penalty",
        "1.1",
        "--repeat-last-n",
        "32",
        "--frequency-penalty",
        "-0.5",
        "--presence-penalty",
        "0.25",
        "--seed",
        "9",
    ]);
    let cfg = resolve(&a).unwrap();
    assert_eq!(
        cfg,
        SamplerConfig {
            temp: 0.5,
            top_k: 10,
            top_p: 0.9,
            min_p: 0.1,
            repeat_penalty: 1.1,
            frequency_penalty: -0.5,
            presence_penalty: 0.25,
            penalty_last_n: 32,
            seed: 9,
        }
    );
    let src = sources(&a);
    assert!(src.iter().all(|(_, _, from)| *from == "flag"), "{src:?}");
    assert_eq!(src[0], ("temp", "0.5".to_string(), "flag"));
    assert_eq!(src[8], ("seed", "9".to_string(), "flag"));
    let mixed = sources(&parse(&["--top-k", "5"]));
    assert_eq!(mixed[1], ("top-k", "5".to_string(), "flag"));
    assert_eq!(mixed[2], ("top-p", "0.95".to_string(), "default"));
}

#[test]
fn bad_flag_values_are_errors_naming_the_flag() {
    for (args, flag, value) in [
        (&["--top-k", "-1"][..], "--top-k", "-1"),
        (&["--top-p", "1.5"][..], "--top-p", "1.5"),
        (&["--min-p=-0.1"][..], "--min-p", "-0.1"),
        (&["--repeat-penalty", "-2"][..], "--repeat-penalty", "-2"),
        (&["--repeat-last-n", "-1"][..], "--repeat-last-n", "-1"),
        (&["--temp", "inf"][..], "--temp", "inf"),
    ] {
        let msg = format!("{:#}", resolve(&parse(args)).unwrap_err());
        assert!(msg.contains(flag) && msg.contains(value), "{args:?}: {msg}");
    }
}

#[test]
fn temp_zero_from_the_flags_is_greedy() {
    let cfg = resolve(&parse(&["--temp", "0"])).unwrap();
    assert!(cfg.is_greedy());
    assert_eq!(Sampler::new(cfg, 3).unwrap().describe(), "greedy");
}
