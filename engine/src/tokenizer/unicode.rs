//! The few Unicode facts the tokenizers need: letter / number / whitespace classes of a
//! code point (as llama.cpp's pre-tokenizers see them) and GPT-2's byte-to-character map.
//!
//! The letter and number classes come from `regex-syntax`'s general-category tables
//! (\p{L}, \p{N}); whitespace is the Unicode White_Space property, which is also what
//! llama.cpp uses. The category tables are built once, on first use.

use std::sync::OnceLock;

/// Classes of one code point. `DEFINED` is set for every code point inside the text;
/// positions past the end of a word have no flags at all (llama.cpp's "out of range").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpFlags(u8);

impl CpFlags {
    pub const NONE: CpFlags = CpFlags(0);
    const DEFINED: u8 = 1;
    const LETTER: u8 = 2;
    const NUMBER: u8 = 4;
    const WHITESPACE: u8 = 8;

    pub fn is_defined(self) -> bool {
        self.0 & Self::DEFINED != 0
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
}

/// The Unicode White_Space property (25 code points).
const WHITE_SPACE: [u32; 25] = [
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
];

/// Sorted, disjoint ranges `(first, last, flag)` of letters and numbers above ASCII.
fn category_ranges() -> &'static [(u32, u32, u8)] {
    static TABLE: OnceLock<Vec<(u32, u32, u8)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut v = Vec::new();
        for (pattern, flag) in [(r"\p{L}", CpFlags::LETTER), (r"\p{N}", CpFlags::NUMBER)] {
            let hir = regex_syntax::Parser::new()
                .parse(pattern)
                .expect("a Unicode class parses");
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) =
                hir.kind()
            else {
                unreachable!("{pattern} is a Unicode class");
            };
            v.extend(
                class
                    .ranges()
                    .iter()
                    .map(|r| (r.start() as u32, r.end() as u32, flag)),
            );
        }
        // Letters and numbers are disjoint general categories, so sorting keeps them apart.
        v.sort_unstable();
        v
    })
}

/// The classes of `c`.
pub(crate) fn flags(c: char) -> CpFlags {
    let cp = c as u32;
    let mut f = CpFlags::DEFINED;
    if cp < 0x80 {
        let b = cp as u8;
        if b.is_ascii_alphabetic() {
            f |= CpFlags::LETTER;
        } else if b.is_ascii_digit() {
            f |= CpFlags::NUMBER;
        } else if matches!(b, 0x09..=0x0D | 0x20) {
            f |= CpFlags::WHITESPACE;
        }
        return CpFlags(f);
    }
    if WHITE_SPACE.binary_search(&cp).is_ok() {
        f |= CpFlags::WHITESPACE;
    }
    let table = category_ranges();
    let i = table.partition_point(|&(first, _, _)| first <= cp);
    if i > 0 {
        let (_, last, flag) = table[i - 1];
        if cp <= last {
            f |= flag;
        }
    }
    CpFlags(f)
}

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes
/// stand for themselves, the other 68 bytes (controls, space, 0x7F-0xA0, soft hyphen)
/// become U+0100.. in byte order. Byte-level BPE vocabularies are written in these.
pub(crate) const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => panic!("unreachable"),
        };
        b += 1;
    }
    table
};

/// The inverse of [`BYTE_TO_CHAR`], indexed by code point (-1: not a byte character).
const CHAR_TO_BYTE: [i16; 0x144] = {
    let mut table = [-1i16; 0x144];
    let mut b = 0usize;
    while b < 256 {
        table[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
};

/// The byte a GPT-2 byte character stands for, if it is one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    match CHAR_TO_BYTE.get(c as usize) {
        Some(&b) if b >= 0 => Some(b as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], '\u{120}');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], '\u{10A}');
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn classes() {
        assert!(flags('a').is_letter() && flags('é').is_letter() && flags('中').is_letter());
        assert!(flags('7').is_number() && flags('٣').is_number() && flags('½').is_number());
        assert!(flags('\u{3000}').is_whitespace() && flags('\u{85}').is_whitespace());
        assert!(!flags('😀').is_letter() && flags('😀').is_defined());
        assert!(!CpFlags::NONE.is_defined());
    }
}
