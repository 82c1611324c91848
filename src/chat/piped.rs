//! `loupe chat` when stdin is not a terminal: one message per line (or per blank-line
//! separated block with `--multiline`), only the replies on stdout, no escape codes,
//! never a wait for input that is not there.

use std::io::{BufRead, Write};
use std::sync::atomic::AtomicBool;

use anyhow::Result;

use super::conversation::{Conversation, Event};
use loupe_engine::generate::StopReason;

pub struct PipedOptions {
    /// Messages are blocks separated by blank lines, not single lines.
    pub multiline: bool,
    /// Print each turn's stats line on stderr.
    pub stats: bool,
}

/// The messages in `input`: non-blank lines, or blank-line separated blocks.
pub fn split_messages(input: &str, multiline: bool) -> Vec<String> {
    if !multiline {
        return input
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
    }
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    for line in input.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !block.is_empty() {
                out.push(block.join("\n"));
                block.clear();
            }
        } else {
            block.push(line.trim_end());
        }
    }
    out
}

/// Answer every message of `input` in order, printing each reply on `out`.
pub fn run(
    conv: &mut Conversation,
    mut input: impl BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    opts: &PipedOptions,
) -> Result<()> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let never = AtomicBool::new(false);
    for msg in split_messages(&text, opts.multiline) {
        let stats = {
            let mut on = |ev: Event| -> Result<()> {
                match ev {
                    Event::Token { text, .. } => {
                        out.write_all(text.as_bytes())?;
                        out.flush()?;
                    }
                    Event::Dropped {
                        exchanges, tokens, ..
                    } => writeln!(
                        err,
                        "loupe: context full, dropped the {exchanges} oldest exchange(s) ({tokens} tokens)"
                    )?,
                    Event::PromptDone(_) => {}
                }
                Ok(())
            };
            conv.send(&msg, &never, &mut on)?
        };
        writeln!(out)?;
        out.flush()?;
        if opts.stats {
            writeln!(err, "{}", stats.line())?;
        }
        if stats.stop == StopReason::ContextFull {
            writeln!(err, "loupe: the reply filled the context and was cut")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_messages;

    #[test]
    fn lines_and_blocks() {
        let s = "hi\n\n  there  \nyou\n\n\nbye\n";
        assert_eq!(split_messages(s, false), ["hi", "there", "you", "bye"]);
        assert_eq!(split_messages(s, true), ["hi", "  there\nyou", "bye"]);
        assert!(split_messages("", true).is_empty());
    }
}
