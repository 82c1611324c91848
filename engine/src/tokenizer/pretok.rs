//! Pre-tokenizers of byte-level BPE vocabularies: how a text is cut into words before
//! merges run inside each word. `tokenizer.ggml.pre` names the rule set.
//!
//! llama.cpp applies a list of patterns in turn; each pattern cuts every current piece
//! into its matches and the text between them. The common patterns (GPT-2, llama 3,
//! qwen2) run as hand-written scanners, like llama.cpp's, because they need a look-ahead
//! (`\s+(?!\S)`) that the `regex` crate does not have; the rest run through `regex`, whose
//! leftmost-first alternation matches what llama.cpp's ECMAScript `std::regex` does.

use std::ops::Range;

use regex::Regex;

use super::unicode::{flags, CpFlags};

/// The rule sets loupe knows, named after llama.cpp's pre-tokenizer types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreKind {
    /// llama.cpp's fallback: punctuation runs, then GPT-2, then numbers, then digit triples.
    Default,
    /// GPT-2: contractions, ` ?letters`, ` ?numbers`, ` ?other`, whitespace.
    Gpt2,
    /// llama 3: case-insensitive contractions, one optional non-letter before letters,
    /// numbers in groups of up to three, newlines kept with the whitespace before them.
    Llama3,
    /// qwen2: llama 3 with every digit on its own.
    Qwen2,
    /// StarCoder / SmolLM: single digits, then GPT-2.
    Smollm,
    /// DeepSeek LLM: newlines, Latin-ish words, ASCII punctuation, trailing space, CJK, numbers.
    DeepseekLlm,
    /// DeepSeek Coder: newlines, words, punctuation, CJK, single digits.
    DeepseekCoder,
}

/// Flags llama.cpp attaches to a pre-tokenizer name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    pub kind: PreKind,
    /// A word that is a whole token is taken as is, without merges.
    pub ignore_merges: bool,
    /// Add BOS by default (before `tokenizer.ggml.add_bos_token` is read).
    pub add_bos: bool,
    /// Detokenize tidies spaces before punctuation (`clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
}

impl PreConfig {
    /// The rule set for a `tokenizer.ggml.pre` value, or `None` when loupe does not know it.
    pub fn from_name(name: &str) -> Option<PreConfig> {
        let cfg = |kind, ignore_merges, add_bos, clean_spaces| PreConfig {
            kind,
            ignore_merges,
            add_bos,
            clean_spaces,
        };
        Some(match name {
            "default" => cfg(PreKind::Default, false, false, true),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => cfg(PreKind::Llama3, true, true, true),
            "dbrx" | "smaug-bpe" => cfg(PreKind::Llama3, false, false, true),
            "deepseek-llm" => cfg(PreKind::DeepseekLlm, false, false, false),
            "deepseek-coder" => cfg(PreKind::DeepseekCoder, false, false, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "exaone4" => {
                cfg(PreKind::Gpt2, false, false, true)
            }
            "trillion" | "granite-docling" => cfg(PreKind::Gpt2, false, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" => {
                cfg(PreKind::Qwen2, false, false, false)
            }
            "stablelm2" | "megrez" => cfg(PreKind::Qwen2, false, false, true),
            "chatglm-bpe" => cfg(PreKind::Llama3, false, false, true),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
                cfg(PreKind::Smollm, false, false, true)
            }
            "smollm" | "command-r" => cfg(PreKind::Smollm, false, false, false),
            _ => return None,
        })
    }
}

/// One pattern of a rule set.
#[derive(Debug)]
enum Pattern {
    Gpt2,
    Llama3,
    Qwen2,
    Regex(Regex),
}

/// A compiled rule set.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    patterns: Vec<Pattern>,
}

/// DeepSeek LLM's word pattern: an optional space, then letters of the Latin, Greek,
/// Cyrillic, Armenian, Georgian, Cherokee, Glagolitic, Coptic and a few other scripts
/// (the class the model's tokenizer.json spells out).
const DEEPSEEK_LLM_WORDS: &str = r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";

impl PreTokenizer {
    pub fn new(kind: PreKind) -> PreTokenizer {
        let re = |p: &str| Pattern::Regex(Regex::new(p).expect("built-in pattern compiles"));
        let patterns = match kind {
            PreKind::Default => vec![
                re(r"[\p{P}$+<=>^~|]+"),
                Pattern::Gpt2,
                re(r"\p{N}+"),
                re(r"[0-9][0-9][0-9]"),
            ],
            PreKind::Gpt2 => vec![Pattern::Gpt2],
            PreKind::Llama3 => vec![Pattern::Llama3],
            PreKind::Qwen2 => vec![Pattern::Qwen2],
            PreKind::Smollm => vec![re(r"\p{N}"), Pattern::Gpt2],
            PreKind::DeepseekLlm => vec![
                re(r"[\r\n]"),
                re(DEEPSEEK_LLM_WORDS),
                re(r"\s?[!-/:-~！-／：-～‘-‟　-。]+"),
                re(r"\s+$"),
                re(r"[一-龥ࠀ-一가-퟿]+"),
                re(r"\p{N}+"),
            ],
            PreKind::DeepseekCoder => vec![
                re(r"[\r\n]"),
                re(r"\s?\p{L}+"),
                re(r"\s?\p{P}+"),
                re(r"[一-龥ࠀ-一가-퟿]+"),
                re(r"\p{N}"),
            ],
        };
        PreTokenizer { patterns }
    }

    /// Cuts `text` into words; `words` receives their byte ranges, covering all of it.
    /// `scratch` is reused between calls.
    pub fn split(&self, text: &str, words: &mut Vec<Range<usize>>, scratch: &mut Scratch) {
        words.clear();
        if text.is_empty() {
            return;
        }
        words.push(0..text.len());
        for pattern in &self.patterns {
            let mut next = std::mem::take(&mut scratch.next);
            next.clear();
            for r in words.iter() {
                let piece = &text[r.clone()];
                match pattern {
                    Pattern::Regex(re) => {
                        let mut at = 0;
                        for m in re.find_iter(piece) {
                            if m.start() > at {
                                next.push(r.start + at..r.start + m.start());
                            }
                            if m.end() > m.start() {
                                next.push(r.start + m.start()..r.start + m.end());
                            }
                            at = m.end();
                        }
                        if at < piece.len() {
                            next.push(r.start + at..r.end);
                        }
                    }
                    custom => {
                        scratch.chars.clear();
                        scratch.offsets.clear();
                        for (i, c) in piece.char_indices() {
                            scratch.chars.push(c);
                            scratch.offsets.push(r.start + i);
                        }
                        scratch.offsets.push(r.end);
                        scratch.lens.clear();
                        match custom {
                            Pattern::Gpt2 => scan_gpt2(&scratch.chars, &mut scratch.lens),
                            Pattern::Llama3 => {
                                scan_llama3(&scratch.chars, &mut scratch.lens, Digits::UpToThree)
                            }
                            _ => scan_llama3(&scratch.chars, &mut scratch.lens, Digits::One),
                        }
                        let mut at = 0;
                        for &len in &scratch.lens {
                            next.push(scratch.offsets[at]..scratch.offsets[at + len]);
                            at += len;
                        }
                    }
                }
            }
            std::mem::swap(words, &mut next);
            scratch.next = next;
        }
    }
}

/// Buffers reused by [`PreTokenizer::split`].
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    next: Vec<Range<usize>>,
    chars: Vec<char>,
    offsets: Vec<usize>, // (chars.len() + 1,) byte offset of each char, then the end
    lens: Vec<usize>,
}

/// A cursor over one piece's code points that reads "nothing" past either end.
struct Cursor<'a> {
    c: &'a [char],
}

impl Cursor<'_> {
    fn cp(&self, i: usize) -> Option<char> {
        self.c.get(i).copied()
    }
    fn flags(&self, i: usize) -> CpFlags {
        self.c.get(i).map_or(CpFlags::NONE, |&c| flags(c))
    }
    /// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `i`.
    fn contraction(&self, i: usize, any_case: bool) -> Option<usize> {
        if self.cp(i) != Some('\'') || i + 1 >= self.c.len() {
            return None;
        }
        let low = |c: Option<char>| {
            let c = c.unwrap_or('\0');
            if any_case {
                c.to_ascii_lowercase()
            } else {
                c
            }
        };
        let a = low(self.cp(i + 1));
        if matches!(a, 's' | 't' | 'm' | 'd') {
            return Some(2);
        }
        if i + 2 < self.c.len() {
            let b = low(self.cp(i + 2));
            if matches!((a, b), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return Some(3);
            }
        }
        None
    }
    /// Whitespace at the end of a piece: `\s+(?!\S)` keeps the last space for the next
    /// word unless the run ends the piece; `\s+` takes the rest. Returns the new position.
    fn whitespace_tail(&self, pos: usize) -> usize {
        let mut n = 0;
        while self.flags(pos + n).is_whitespace() {
            n += 1;
        }
        if n > 1 && pos + n < self.c.len() {
            pos + n - 1
        } else if n > 0 {
            pos + n
        } else {
            pos + 1
        }
    }
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// written out as a scanner. Pushes word lengths in code points.
fn scan_gpt2(c: &[char], lens: &mut Vec<usize>) {
    let cur = Cursor { c };
    let mut pos = 0;
    while pos < c.len() {
        let start = pos;
        let cp = c[pos];
        if let Some(n) = cur.contraction(pos, false) {
            pos += n;
        } else {
            let space = usize::from(cp == ' ');
            let f2 = if cp == ' ' {
                cur.flags(pos + 1)
            } else {
                cur.flags(pos)
            };
            let other = |f: CpFlags| {
                !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_defined()
            };
            if f2.is_letter() {
                pos += space;
                while cur.flags(pos).is_letter() {
                    pos += 1;
                }
            } else if f2.is_number() {
                pos += space;
                while cur.flags(pos).is_number() {
                    pos += 1;
                }
            } else if other(f2) {
                pos += space;
                while other(cur.flags(pos)) {
                    pos += 1;
                }
            } else {
                pos = cur.whitespace_tail(pos);
            }
        }
        lens.push(pos - start);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Digits {
    UpToThree,
    One,
}

/// llama 3 (`Digits::UpToThree`) and qwen2 (`Digits::One`):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// as a scanner (qwen2 has `\p{N}` in place of `\p{N}{1,3}`). Pushes lengths in code points.
fn scan_llama3(c: &[char], lens: &mut Vec<usize>, digits: Digits) {
    let cur = Cursor { c };
    let mut pos = 0;
    let mut start = 0;
    let emit = |lens: &mut Vec<usize>, start: &mut usize, end: usize| {
        if end > *start {
            lens.push(end - *start);
        }
        *start = end;
    };
    while pos < c.len() {
        let cp = c[pos];
        let f = cur.flags(pos);
        // contractions, any case
        if let Some(n) = cur.contraction(pos, true) {
            pos += n;
            emit(lens, &mut start, pos);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(cp == '\r' || cp == '\n' || f.is_number())
            && (f.is_letter() || cur.flags(pos + 1).is_letter())
        {
            pos += 1;
            while cur.flags(pos).is_letter() {
                pos += 1;
            }
            emit(lens, &mut start, pos);
            continue;
        }
        // \p{N}{1,3} or \p{N}
        if f.is_number() {
            match digits {
                Digits::One => pos += 1,
                Digits::UpToThree => {
                    let mut group = pos;
                    while cur.flags(pos).is_number() {
                        pos += 1;
                        if pos - group >= 3 {
                            emit(lens, &mut start, pos);
                            group = pos;
                        }
                    }
                }
            }
            emit(lens, &mut start, pos);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*' (llama.cpp tests "defined" on the first code point)
        let mut f2 = if cp == ' ' { cur.flags(pos + 1) } else { f };
        let other = |f: CpFlags| !(f.is_whitespace() || f.is_letter() || f.is_number());
        if other(f2) && f.is_defined() {
            pos += usize::from(cp == ' ');
            while other(f2) && f2.is_defined() {
                pos += 1;
                f2 = cur.flags(pos);
            }
            while matches!(cur.cp(pos), Some('\r' | '\n')) {
                pos += 1;
            }
            emit(lens, &mut start, pos);
            continue;
        }
        // \s*[\r\n]+ : whitespace up to and including its last newline
        let mut n = 0;
        let mut after_newline = None;
        while cur.flags(pos + n).is_whitespace() {
            if matches!(cur.cp(pos + n), Some('\r' | '\n')) {
                after_newline = Some(pos + n + 1);
            }
            n += 1;
        }
        pos = match after_newline {
            Some(end) => end,
            None => cur.whitespace_tail(pos),
        };
        emit(lens, &mut start, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, text: &str) -> Vec<&str> {
        let pre = PreTokenizer::new(kind);
        let mut w = Vec::new();
        pre.split(text, &mut w, &mut Scratch::default());
        w.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words(PreKind::Gpt2, "Hello world's  end 123!!\n"),
            ["Hello", " world", "'s", " ", " end", " 123", "!!", "\n"]
        );
    }

    #[test]
    fn qwen2_words() {
        assert_eq!(
            words(PreKind::Qwen2, "I'M 2024 ok\n\n  x"),
            ["I", "'M", " ", "2", "0", "2", "4", " ok", "\n\n", " ", " x"]
        );
        assert_eq!(words(PreKind::Llama3, "12345"), ["123", "45"]);
    }

    #[test]
    fn default_words() {
        assert_eq!(
            words(PreKind::Default, "a+b=1234"),
            ["a", "+", "b", "=", "123", "4"]
        );
    }
}
