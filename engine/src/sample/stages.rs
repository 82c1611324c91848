//! The stages of the chain and the candidates array they work on.
//!
//! Each stage narrows or reshapes the candidates (one entry per token still in play) and
//! leaves choosing to the selector at the end of the chain. The rules follow llama.cpp's
//! `llama-sampler.cpp`; where they differ in a detail, the stage says so.

use std::cmp::Ordering;
use std::collections::VecDeque;

/// One token still in play.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    /// The score the next stage sees (raw logit, or penalized, or divided by temperature).
    pub logit: f32,
    /// Softmax probability, valid only where a stage or view has just computed it.
    pub p: f32,
}

/// The candidates array: starts as the whole vocabulary in id order; stages shrink it from
/// the end and reorder it. Allocated once, at the vocabulary size.
#[derive(Debug)]
pub struct Candidates {
    data: Vec<Candidate>, // (n_vocab) capacity; len = tokens still in play
    sorted: bool,         // data is in `better` order (logit descending, then id ascending)
}

/// The one order every stage sorts by: higher logit first, lower id first among equals
/// (so results never depend on the sort algorithm). `total_cmp` keeps a NaN from a broken
/// model from breaking the sort; it ranks above every number.
pub(crate) fn better(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

impl Candidates {
    pub fn with_capacity(n_vocab: usize) -> Candidates {
        Candidates {
            data: Vec::with_capacity(n_vocab),
            sorted: false,
        }
    }

    /// Reload from a logits row. No allocation while `logits.len()` fits the capacity.
    pub fn fill(&mut self, logits: &[f32]) {
        self.data.clear();
        self.data
            .extend(logits.iter().enumerate().map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
                p: 0.0,
            }));
        self.sorted = false;
    }

    pub fn as_slice(&self) -> &[Candidate] {
        &self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [Candidate] {
        &mut self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether the whole array is in `better` order.
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    /// A stage that changed logits out of order says so here.
    pub fn mark_unsorted(&mut self) {
        self.sorted = false;
    }

    /// Keep the first `n` candidates.
    pub fn truncate(&mut self, n: usize) {
        self.data.truncate(n);
    }

    /// Put the best `k` candidates first, in order; the rest follow in no order. In place:
    /// a selection (linear) and a sort of the prefix, so top-k 40 of 150k tokens is cheap.
    pub fn sort_prefix(&mut self, k: usize) {
        let k = k.min(self.data.len());
        if self.sorted || k == 0 {
            return;
        }
        if k < self.data.len() {
            self.data.select_nth_unstable_by(k - 1, better);
            self.data[..k].sort_unstable_by(better);
        } else {
            self.data.sort_unstable_by(better);
            self.sorted = true;
        }
    }

    /// Set `p` to the softmax of the logits (f32 exponentials, f64 sum).
    pub fn softmax(&mut self) {
        let max = self
            .data
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for c in &mut self.data {
            c.p = (c.logit - max).exp();
            sum += f64::from(c.p);
        }
        for c in &mut self.data {
            c.p = (f64::from(c.p) / sum) as f32;
        }
    }
}

/// One step of the chain.
pub trait Stage: Send + std::fmt::Debug {
    /// Short fixed name: "penalties", "top-k", ...
    fn name(&self) -> &'static str;
    /// The name with its settings, as `describe()` shows it: "top-k 40".
    fn describe(&self) -> String;
    /// Reshape or narrow the candidates. Must not allocate.
    fn apply(&mut self, cands: &mut Candidates);
    /// A token entered the context (generated or from the prompt).
    fn accept(&mut self, _token: u32) {}
    /// Forget everything accepted.
    fn reset(&mut self) {}
}

/// Two decimals, or as many as the value needs: 0.95 → "0.95", 0.925 → "0.925", 1.1 → "1.10".
pub(crate) fn fmt_setting(x: f32) -> String {
    let two = format!("{x:.2}");
    if two.parse::<f32>() == Ok(x) {
        two
    } else {
        format!("{x}")
    }
}

// ---------------------------------------------------------------------------------------
// Penalties: repeat, frequency, presence over the last N accepted tokens
// ---------------------------------------------------------------------------------------

/// For each token seen `count > 0` times in the window: the repeat penalty pushes the logit
/// toward "less likely" whatever its sign (`logit <= 0` is multiplied, a positive one
/// divided: dividing a negative logit would raise it), then
/// `logit -= count * frequency + presence`.
#[derive(Debug)]
pub struct Penalties {
    last_n: usize,
    repeat: f32,
    frequency: f32,
    presence: f32,
    window: VecDeque<u32>, // (≤ last_n) the last accepted tokens, oldest first
    counts: Vec<u32>,      // (n_vocab) occurrences of each token in `window`
}

impl Penalties {
    pub fn new(n_vocab: usize, last_n: usize, repeat: f32, frequency: f32, presence: f32) -> Self {
        Penalties {
            last_n,
            repeat,
            frequency,
            presence,
            window: VecDeque::with_capacity(last_n.min(1 << 16)),
            counts: vec![0; n_vocab],
        }
    }
}

impl Stage for Penalties {
    fn name(&self) -> &'static str {
        "penalties"
    }

    fn describe(&self) -> String {
        let mut s = format!("penalties(last {}", self.last_n);
        if self.repeat != 1.0 {
            s += &format!(", repeat {}", fmt_setting(self.repeat));
        }
        if self.frequency != 0.0 {
            s += &format!(", freq {}", fmt_setting(self.frequency));
        }
        if self.presence != 0.0 {
            s += &format!(", presence {}", fmt_setting(self.presence));
        }
        s + ")"
    }

    fn apply(&mut self, cands: &mut Candidates) {
        if self.window.is_empty() {
            return;
        }
        for c in cands.as_mut_slice() {
            let count = self.counts[c.id as usize];
            if count == 0 {
                continue;
            }
            if c.logit <= 0.0 {
                c.logit *= self.repeat;
            } else {
                c.logit /= self.repeat;
            }
            c.logit -= count as f32 * self.frequency + self.presence;
        }
        cands.mark_unsorted();
    }

    fn accept(&mut self, token: u32) {
        if self.last_n == 0 {
            return;
        }
        if self.window.len() == self.last_n {
            if let Some(old) = self.window.pop_front() {
                self.counts[old as usize] -= 1;
            }
        }
        self.window.push_back(token);
        self.counts[token as usize] += 1;
    }

    fn reset(&mut self) {
        for &t in &self.window {
            self.counts[t as usize] = 0;
        }
        self.window.clear();
    }
}

// ---------------------------------------------------------------------------------------
// Top-k: keep the k most likely
// ---------------------------------------------------------------------------------------

/// Keeps the `k` highest logits and leaves the array sorted (even when `k` ≥ its length,
/// as llama.cpp does), so the stages after it find it sorted.
#[derive(Debug)]
pub struct TopK {
    pub k: usize,
}

impl Stage for TopK {
    fn name(&self) -> &'static str {
        "top-k"
    }

    fn describe(&self) -> String {
        format!("top-k {}", self.k)
    }

    fn apply(&mut self, cands: &mut Candidates) {
        let k = self.k.min(cands.len());
        if k == cands.len() {
            cands.sort_prefix(k);
        } else {
            cands.sort_prefix(k);
            cands.truncate(k);
            cands.sorted = true;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Top-p (nucleus): keep the smallest prefix whose probability reaches p
// ---------------------------------------------------------------------------------------

/// Softmax over the candidates still in play, then the shortest most-likely-first prefix
/// with cumulative probability ≥ p (at least one token). Like llama.cpp, an unsorted array
/// is first sorted only in its best 256, which almost always holds the nucleus; the rest
/// is sorted only if the sum has not reached p by then. If rounding keeps the sum below p
/// to the end, everything is kept.
#[derive(Debug)]
pub struct TopP {
    pub p: f32,
}

/// How much of an unsorted array top-p sorts on its first try.
const TOP_P_FIRST_SORT: usize = 256;

impl Stage for TopP {
    fn name(&self) -> &'static str {
        "top-p"
    }

    fn describe(&self) -> String {
        format!("top-p {}", fmt_setting(self.p))
    }

    fn apply(&mut self, cands: &mut Candidates) {
        if cands.is_empty() {
            return;
        }
        cands.softmax();
        let n = cands.len();
        let mut sorted_upto = n;
        if !cands.is_sorted() {
            sorted_upto = TOP_P_FIRST_SORT.min(n);
            cands.sort_prefix(sorted_upto);
        }
        let target = f64::from(self.p);
        let mut cum = 0.0f64;
        let mut keep = n;
        let mut i = 0;
        while i < n {
            if i == sorted_upto {
                // The nucleus is wider than the first sort: sort everything, and go on from
                // here (the sorted prefix is the same under the one total order).
                cands.sort_prefix(n);
                sorted_upto = n;
            }
            cum += f64::from(cands.as_slice()[i].p);
            if cum >= target {
                keep = i + 1;
                break;
            }
            i += 1;
        }
        // Either the array was sorted, or the scan stopped inside the sorted prefix, or it
        // ran to the end and sorted everything: what stays is sorted in every case.
        cands.truncate(keep);
        cands.sorted = true;
    }
}

// ---------------------------------------------------------------------------------------
// Min-p: drop tokens far less likely than the most likely
// ---------------------------------------------------------------------------------------

/// Keeps tokens with probability ≥ p × (probability of the most likely), tested on logits:
/// `logit >= max_logit + ln p`. Order is kept; the most likely token always stays.
#[derive(Debug)]
pub struct MinP {
    pub p: f32,
}

impl Stage for MinP {
    fn name(&self) -> &'static str {
        "min-p"
    }

    fn describe(&self) -> String {
        format!("min-p {}", fmt_setting(self.p))
    }

    fn apply(&mut self, cands: &mut Candidates) {
        if cands.is_empty() {
            return;
        }
        let max = cands
            .as_slice()
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        let min_logit = max + self.p.ln();
        // Compact in place, keeping order (a sorted array stays sorted).
        let data = cands.as_mut_slice();
        let mut kept = 0;
        for i in 0..data.len() {
            if data[i].logit >= min_logit {
                data[kept] = data[i];
                kept += 1;
            }
        }
        // Only a NaN maximum can leave nothing; then keep the array as it was.
        if kept > 0 {
            cands.truncate(kept);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Temperature: divide the logits
// ---------------------------------------------------------------------------------------

/// `logit /= t` for t > 0: below 1 sharpens the distribution, above 1 flattens it.
/// (t ≤ 0 never reaches here: the chain is greedy then.)
#[derive(Debug)]
pub struct Temperature {
    pub t: f32,
}

impl Stage for Temperature {
    fn name(&self) -> &'static str {
        "temp"
    }

    fn describe(&self) -> String {
        format!("temp {}", fmt_setting(self.t))
    }

    fn apply(&mut self, cands: &mut Candidates) {
        for c in cands.as_mut_slice() {
            c.logit /= self.t;
        }
    }
}
