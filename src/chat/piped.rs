//! `loupe chat` when stdin is not a terminal: one message per line (or per blank-line
//! separated block with `--multiline`), only the replies on stdout, no escape codes,
//! never a wait for input that is not there. The commands that change the conversation
//! without showing anything (`/set`, `/system`, `/reset`, `/undo`, `/save`, `/load`,
//! `/exit`) work here too; a failed message is reported and skipped.

use std::io::{BufRead, Write};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};

use super::commands::{self, Command};
use super::conversation::{preview, Conversation, Event};
use crate::report::error_text;
use loupe_engine::generate::StopReason;
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::sample::SamplerSettings;
use loupe_gguf::atomic::Overwrite;

pub struct PipedOptions {
    /// Messages are blocks separated by blank lines, not single lines.
    pub multiline: bool,
    /// Print each turn's stats line on stderr.
    pub stats: bool,
    /// The cache's types, for the stats line.
    pub kv_type: KvTypes,
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

/// What a piped line is: a message, or a command.
enum Input<'a> {
    Message(&'a str),
    Command(&'a str),
}

/// A line starting with `/` is a command; `//` sends the rest as a message, one `/` less.
fn classify(text: &str) -> Input<'_> {
    match text.strip_prefix('/') {
        Some(rest) if rest.starts_with('/') => Input::Message(rest),
        Some(_) => Input::Command(text),
        None => Input::Message(text),
    }
}

/// Answer every message of `input` in order, printing each reply on `out`. Lines that
/// are commands (`/set temp 0`, `/system TEXT`, `/reset`, `/undo`, `/save FILE`,
/// `/load FILE`, `/exit`) act on the conversation and say so on `err`. A message or
/// command that fails (one message too long for the context, say) is reported on `err`
/// and skipped, the rest still run, and the run fails at the end. Only a broken `out`
/// stops it at once.
pub fn run(
    conv: &mut Conversation,
    mut input: impl BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    opts: &PipedOptions,
) -> Result<()> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let inputs = split_messages(&text, opts.multiline);
    let mut failed = 0;
    let mut messages = 0;
    for line in &inputs {
        let result = match classify(line) {
            Input::Command(c) => match command(conv, c, err) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => Err(e.context(preview(c, 40))),
            },
            Input::Message(msg) => {
                messages += 1;
                let mut out_failed = false;
                let r = answer(conv, msg, out, err, opts, &mut out_failed);
                if out_failed {
                    // The reader went away (`| head`): nobody is left to answer.
                    return r;
                }
                r.map_err(|e| e.context(format!("message {messages} was not answered")))
            }
        };
        if let Err(e) = result {
            failed += 1;
            writeln!(err, "loupe: {}", error_text(&e))?;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} messages and commands failed (each said why above)",
            inputs.len()
        );
    }
    Ok(())
}

/// Answer one message, streaming the reply to `out`; `out_failed` tells a failed write
/// to `out` from a failed turn.
fn answer(
    conv: &mut Conversation,
    msg: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
    opts: &PipedOptions,
    out_failed: &mut bool,
) -> Result<()> {
    let never = AtomicBool::new(false);
    let stats = {
        let mut on = |ev: Event| -> Result<()> {
            match ev {
                Event::Token { text, .. } => {
                    let w = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                    *out_failed |= w.is_err();
                    w?;
                }
                Event::Dropped {
                    exchanges, tokens, ..
                } => writeln!(
                    err,
                    "loupe: context full, dropped the {exchanges} oldest exchange(s) ({tokens} tokens)"
                )?,
                Event::PromptDone(p) if p.shifted > 0 => writeln!(
                    err,
                    "loupe: kept {} tokens after them by shifting them in the cache (not evaluated again)",
                    p.shifted
                )?,
                Event::PromptDone(_) => {}
            }
            Ok(())
        };
        conv.send(msg, &never, &mut on)?
    };
    let w = writeln!(out).and_then(|()| out.flush());
    *out_failed |= w.is_err();
    w?;
    if opts.stats {
        let line = commands::stats_line(&stats.line(), &conv.session, opts.kv_type);
        writeln!(err, "{line}")?;
    }
    if stats.stop == StopReason::ContextFull {
        writeln!(err, "loupe: the reply filled the context and was cut")?;
    }
    Ok(())
}

/// Run a command line; `false` for `/exit`. What it did goes to `err` (stdout carries
/// only replies).
fn command(conv: &mut Conversation, line: &str, err: &mut dyn Write) -> Result<bool> {
    let said = match commands::parse(line)? {
        Command::Exit => return Ok(false),
        Command::System(None) => match &conv.system {
            Some(s) => format!("system: {s}"),
            None => "no system prompt".to_string(),
        },
        Command::System(Some(t)) => {
            conv.system = (t != "-").then_some(t);
            conv.rewind()?;
            "system prompt set".to_string()
        }
        Command::Reset => {
            conv.reset();
            "conversation cleared".to_string()
        }
        Command::Undo => format!("dropped the last {} message(s)", conv.undo()?),
        Command::Set(k, v) => commands::set(conv, &k, &v)?,
        Command::Save(p) => {
            // As in the REPL, a session replaces a session; nobody can be asked about a
            // file of another kind, so that is refused.
            let bytes = conv.save(&p, Overwrite::SameKind)?;
            conv.saved_line(bytes, &p)
        }
        Command::Load(p) => {
            conv.load(&p, &SamplerSettings::default())?;
            format!(
                "loaded {} messages, {} tokens in the cache",
                conv.messages.len(),
                conv.session.len()
            )
        }
        other => bail!(
            "only the interactive chat has {}; piped, the commands are {PIPED_COMMANDS} \
             (a line starting with // is sent as a message, one / less)",
            commands::name(&other)
        ),
    };
    writeln!(err, "loupe: {said}")?;
    Ok(true)
}

/// The commands piped mode runs.
pub const PIPED_COMMANDS: &str = "/system, /set, /reset, /undo, /save, /load and /exit";

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
