//! Byte-level BPE (vocabulary type "gpt2"): each pre-tokenized word is written in GPT-2's
//! byte characters, then the adjacent pair with the lowest merge rank is joined until no
//! listed merge applies.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::spm::Symbol;
use super::Tokenizer;

/// A candidate merge of `left` and its right neighbour `right`.
#[derive(Debug)]
struct Bigram {
    rank: u32,
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
    /// The heap pops the lowest rank first, and of equal ranks the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.left.cmp(&self.left))
    }
}

/// Scratch of one BPE encode.
#[derive(Debug, Default)]
pub(crate) struct BpeScratch {
    word: String,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

/// Appends the tokens of one pre-tokenized word (raw text) to `out`.
pub(crate) fn encode_word(tok: &Tokenizer, raw: &str, out: &mut Vec<u32>, s: &mut BpeScratch) {
    let word = &mut s.word;
    word.clear();
    for b in raw.bytes() {
        word.push(super::unicode::BYTE_TO_CHAR[b as usize]);
    }
    let word = &s.word;
    s.symbols.clear();
    s.queue.clear();

    if tok.ignore_merges {
        if let Some(id) = tok.lookup(word.as_bytes()) {
            out.push(id);
            return;
        }
    }
    let mut prev = None;
    for (i, c) in word.char_indices() {
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
    for i in 1..s.symbols.len() {
        add(tok, word, &s.symbols, &mut s.queue, Some(i - 1), Some(i));
    }

    while let Some(b) = s.queue.pop() {
        let (l, r) = (s.symbols[b.left], s.symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
            continue;
        }
        s.symbols[b.left].len += r.len;
        s.symbols[b.right].len = 0;
        s.symbols[b.left].next = r.next;
        if let Some(n) = r.next {
            s.symbols[n].prev = Some(b.left);
        }
        add(tok, word, &s.symbols, &mut s.queue, l.prev, Some(b.left));
        add(tok, word, &s.symbols, &mut s.queue, Some(b.left), r.next);
    }

    for sym in s.symbols.iter().filter(|s| s.len > 0) {
        let piece = &word.as_bytes()[sym.start..sym.start + sym.len];
        match tok.lookup(piece) {
            Some(id) => out.push(id),
            // As llama.cpp: try each byte of the piece's text as a one-byte token; a byte
            // no token spells is dropped.
            None => out.extend(piece.iter().filter_map(|&b| tok.lookup(&[b]))),
        }
    }
}

fn add(
    tok: &Tokenizer,
    word: &str,
    symbols: &[Symbol],
    queue: &mut BinaryHeap<Bigram>,
    left: Option<usize>,
    right: Option<usize>,
) {
    let (Some(left), Some(right)) = (left, right) else {
        return;
    };
    let (l, r) = (symbols[left], symbols[right]);
    let lt = &word[l.start..l.start + l.len];
    let rt = &word[r.start..r.start + r.len];
    if let Some(rank) = tok.merge_rank(lt, rt) {
        queue.push(Bigram {
            rank,
            left,
            right,
            len: l.len + r.len,
        });
    }
}
