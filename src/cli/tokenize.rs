//! `loupe tokenize MODEL TEXT`: the token ids of a text under a model's vocabulary, each
//! with its piece, or as one JSON line (`--json`).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use loupe_engine::tokenizer::Tokenizer;
use loupe_gguf::GgufFile;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// The model whose vocabulary to use: a GGUF file, a store name or a hub reference.
    pub model: PathBuf,
    /// The text to tokenize; `-` reads it from standard input.
    pub text: String,
    /// Do not add BOS / EOS even where the vocabulary asks for them.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn text that spells a control token (`<|im_start|>`, `<bos>`) into that token.
    #[arg(long)]
    pub special: bool,
    /// Print `{"ids": [...], "pieces": [...]}` on one line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &TokenizeArgs, out: &mut impl Write) -> Result<()> {
    let text = if args.text == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the text from standard input (is it UTF-8?)")?;
        s
    } else {
        args.text.clone()
    };
    let path = crate::cli::pull::model_path(&args.model)?;
    let file =
        GgufFile::open(&path).with_context(|| format!("cannot read model {}", path.display()))?;
    let tok = Tokenizer::from_metadata(file.metadata()).with_context(|| {
        format!(
            "cannot build the tokenizer of {} from its metadata",
            args.model.display()
        )
    })?;
    for w in tok.warnings() {
        eprintln!("warning: {w}");
    }
    let ids = tok.encode(&text, !args.no_bos, args.special);
    if args.json {
        // Programs get each piece's own text; only bytes that are not whole UTF-8
        // characters are written as <0xNN>.
        let pieces: Vec<String> = ids
            .iter()
            .map(|&id| json_piece(tok.token_piece(id, true)))
            .collect();
        writeln!(out, "{}", json!({ "ids": ids, "pieces": pieces }))?;
        return Ok(());
    }
    for &id in &ids {
        writeln!(out, "{id:>7}  {}", escape_piece(tok.token_piece(id, true)))?;
    }
    writeln!(
        out,
        "{} token{}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    )?;
    Ok(())
}

/// A piece made readable: space as `␣`, newline / tab / carriage return as `\n` `\t`
/// `\r`, a backslash as `\\`, other control characters and bytes that are not whole UTF-8
/// characters as `<0xNN>`.
pub fn escape_piece(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                ' ' => s.push('␣'),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                '\\' => s.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        s.push_str(&format!("<0x{b:02X}>"));
                    }
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("<0x{b:02X}>"));
        }
    }
    s
}

/// A piece as JSON text: as is, with bytes that are not whole characters as `<0xNN>`.
fn json_piece(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("<0x{b:02X}>"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{escape_piece, json_piece};

    #[test]
    fn json_pieces_keep_their_text() {
        assert_eq!(json_piece(b" a\n"), " a\n");
        assert_eq!(json_piece(&[b'x', 0xE2]), "x<0xE2>");
    }

    #[test]
    fn pieces_are_escaped_readably() {
        assert_eq!(escape_piece(b" a\n\t\\"), "␣a\\n\\t\\\\");
        assert_eq!(escape_piece(&[0xF0, 0x9F]), "<0xF0><0x9F>");
        assert_eq!(escape_piece("é\u{1}".as_bytes()), "é<0x01>");
    }
}
