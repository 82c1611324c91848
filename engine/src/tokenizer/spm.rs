//! SentencePiece-style merging (vocabulary type "llama"): start from single characters
//! and keep joining the adjacent pair whose joined text is the token with the highest
//! score; characters no token covers fall back to `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;

/// One symbol of the text being merged: a byte range and its neighbours in the chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Symbol {
    pub start: usize,
    pub len: usize, // 0 once merged into its left neighbour
    pub prev: Option<usize>,
    pub next: Option<usize>,
}

/// A candidate merge of `left` and its right neighbour `right`.
#[derive(Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize, // byte length of the joined text when the candidate was made
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// The heap pops the highest score first, and of equal scores the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// Scratch of one SPM encode.
#[derive(Debug, Default)]
pub(crate) struct SpmScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

/// Appends the tokens of `text` (spaces already written as U+2581) to `out`.
pub(crate) fn encode(tok: &Tokenizer, text: &str, out: &mut Vec<u32>, s: &mut SpmScratch) {
    s.symbols.clear();
    s.queue.clear();
    let mut prev = None;
    for (i, c) in text.char_indices() {
        let idx = s.symbols.len();
        s.symbols.push(Symbol {
            start: i,
            len: c.len_utf8(),
            prev,
            next: None,
        });
        if let Some(p) = prev {
            s.symbols[p].next = Some(idx);
        }
        prev = Some(idx);
    }
    if s.symbols.is_empty() {
        return;
    }
    for i in 1..s.symbols.len() {
        try_add(tok, text, s, Some(i - 1), Some(i));
    }

    while let Some(b) = s.queue.pop() {
        let (l, r) = (s.symbols[b.left], s.symbols[b.right]);
        // Stale: one side was merged away, or grew since this candidate was made.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
            continue;
        }
        s.symbols[b.left].len += r.len;
        s.symbols[b.right].len = 0;
        s.symbols[b.left].next = r.next;
        if let Some(n) = r.next {
            s.symbols[n].prev = Some(b.left);
        }
        try_add(tok, text, s, l.prev, Some(b.left));
        try_add(tok, text, s, Some(b.left), r.next);
    }

    let mut i = Some(0);
    while let Some(k) = i {
        let sym = s.symbols[k];
        let piece = &text[sym.start..sym.start + sym.len];
        match tok.lookup(piece.as_bytes()) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| tok.byte_token(b))),
        }
        i = sym.next;
    }
}

fn try_add(
    tok: &Tokenizer,
    text: &str,
    s: &mut SpmScratch,
    left: Option<usize>,
    right: Option<usize>,
) {
    let (Some(left), Some(right)) = (left, right) else {
        return;
    };
    let start = s.symbols[left].start;
    let len = s.symbols[left].len + s.symbols[right].len;
    if let Some(id) = tok.lookup(&text.as_bytes()[start..start + len]) {
        s.queue.push(Bigram {
            score: tok.tokens[id as usize].score,
            left,
            right,
            len,
        });
    }
}
