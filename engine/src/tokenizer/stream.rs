//! Detokenizing one token at a time, for printing while a model generates.

use super::Tokenizer;

/// Turns token ids into text as they arrive. A token may end in the middle of a UTF-8
/// character (byte-level BPE pieces, SPM `<0xNN>` byte tokens); those bytes are held back
/// until the character is complete, so every returned string is whole text.
///
/// It follows llama.cpp's `llama_detokenize` (with `remove_special = false`): the first
/// token loses one leading space when the vocabulary adds a space prefix (SPM), and
/// control tokens are rendered as their text only when `special` is set. It does not
/// apply the `clean_up_tokenization_spaces` tidy-up that [`Tokenizer::decode`] applies for
/// some BPE vocabularies: that step looks ahead past a token, which a stream cannot.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    special: bool,
    first: bool,
    pending: Vec<u8>, // bytes of an incomplete UTF-8 character, at most 3
}

impl<'a> StreamDecoder<'a> {
    /// `special`: render control tokens (`<|im_end|>`, `<bos>`) as their text.
    pub fn new(tok: &'a Tokenizer, special: bool) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            special,
            first: true,
            pending: Vec::new(),
        }
    }

    /// The text completed by `id` (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let mut piece = self.tok.token_piece(id, self.special);
        if std::mem::take(&mut self.first) && self.tok.add_space_prefix() {
            piece = piece.strip_prefix(b" ").unwrap_or(piece);
        }
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid UTF-8: from_utf8 said so.
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that can never start a character: shown as U+FFFD, the
                        // way a lossy conversion of the whole text would show them.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        // A character cut short by the end of the piece: wait for more.
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let n = self.pending.len();
        self.pending.drain(..n - keep);
        out
    }

    /// Whatever is still held back, as text (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
