//! The interactive chat: a line editor (reedline, on crossterm) with history across runs,
//! replies streamed token by token, Ctrl-C to stop a reply, slash commands.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use reedline::{
    default_emacs_keybindings, EditCommand, Emacs, FileBackedHistory, KeyCode, KeyModifiers,
    Prompt, PromptEditMode, PromptHistorySearch, Reedline, ReedlineEvent, Signal, ValidationResult,
    Validator,
};

use super::commands::{self, Command, HELP};
use super::conversation::{preview, Conversation, Event};
use super::ui::Style;
use super::zoom;
use crate::report::error_text;
use loupe_engine::generate::StopReason;
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::sample::SamplerSettings;
use loupe_engine::session::PromptInterrupted;
use loupe_gguf::atomic::{check_destination, Kind, Overwrite, WriteError};

/// Set by SIGINT while a turn runs (the line editor reads Ctrl-C as a key): it stops the
/// reading of a long prompt between chunks and the reply between tokens. Rendering the
/// template is bounded by its fuel instead; loading or saving a file is not interrupted.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// What the REPL shows about the run in its banner and `/show`.
pub struct ReplInfo {
    pub model_path: PathBuf,
    pub threads: usize,
    pub kv_type: KvTypes,
}

struct ChatPrompt;

impl Prompt for ChatPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_indicator(&self, _: PromptEditMode) -> Cow<'_, str> {
        Cow::Borrowed("› ")
    }
    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("… ")
    }
    fn render_prompt_history_search_indicator(&self, h: PromptHistorySearch) -> Cow<'_, str> {
        Cow::Owned(format!("(search: {}) ", h.term))
    }
}

/// A line that opens a `"""` block is incomplete until a line closes it.
struct TripleQuotes;

impl Validator for TripleQuotes {
    fn validate(&self, line: &str) -> ValidationResult {
        let t = line.trim_start();
        if t.starts_with("\"\"\"") && (t.len() < 6 || !line.trim_end().ends_with("\"\"\"")) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Complete
        }
    }
}

/// The text of a `"""` block without its quotes.
fn unquote(line: &str) -> String {
    let t = line.trim();
    match t
        .strip_prefix("\"\"\"")
        .and_then(|s| s.strip_suffix("\"\"\""))
    {
        Some(inner) => inner.trim_matches('\n').to_string(),
        None => line.to_string(),
    }
}

fn history_path() -> Option<PathBuf> {
    let dir = dirs::data_dir()?.join("loupe");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("chat_history.txt"))
}

fn editor() -> Reedline {
    let mut kb = default_emacs_keybindings();
    kb.add_binding(
        KeyModifiers::CONTROL,
        KeyCode::Char('c'),
        ReedlineEvent::ExecuteHostCommand("ctrl-c".into()),
    );
    let mut ed = Reedline::create()
        .with_edit_mode(Box::new(Emacs::new(kb)))
        .with_validator(Box::new(TripleQuotes))
        .use_bracketed_paste(true);
    if let Some(h) = history_path().and_then(|p| FileBackedHistory::with_file(2000, p).ok()) {
        ed = ed.with_history(Box::new(h));
    }
    ed
}

pub fn run(conv: &mut Conversation, info: &ReplInfo) -> Result<()> {
    let st = Style::detect();
    // Ctrl-C while a reply streams: stop it, keep what was written.
    crate::signals::ctrl_c_sets(&INTERRUPT);
    let mut ed = editor();
    let mut zoom_on = false;
    let mut pending_edit: Option<usize> = None;
    let mut ctrl_c_once = false;
    println!(
        "{}",
        st.dim(&format!(
            "loupe chat · {} · template {} · ctx {} · /help for commands, Ctrl-D to leave",
            info.model_path.display(),
            conv.template.name,
            conv.session.n_ctx()
        ))
    );
    loop {
        let sig = ed.read_line(&ChatPrompt)?;
        let line = match sig {
            Signal::Success(l) => l,
            Signal::HostCommand(c) if c == "ctrl-c" => {
                if !ed.current_buffer_contents().is_empty() {
                    ed.run_edit_commands(&[EditCommand::Clear]);
                    ctrl_c_once = false;
                    continue;
                }
                if ctrl_c_once {
                    println!();
                    break;
                }
                ctrl_c_once = true;
                println!("\n{}", st.dim("(Ctrl-C again or Ctrl-D to leave)"));
                continue;
            }
            Signal::CtrlD => {
                println!();
                break;
            }
            _ => continue,
        };
        ctrl_c_once = false;
        let text = unquote(&line);
        if text.trim().is_empty() {
            continue;
        }
        if let Some(n) = pending_edit.take() {
            if let Err(e) = conv.edit(n, &text) {
                println!("{}", st.red(&error_text(&e)));
                continue;
            }
            turn(conv, info, st, zoom_on, false)?;
            continue;
        }
        // A message; "//text" sends "/text".
        let message = match text.strip_prefix('/') {
            Some(rest) => rest.starts_with('/').then(|| rest.to_string()),
            None => Some(text.clone()),
        };
        if let Some(message) = message {
            conv.messages
                .push(super::template::Message::new("user", message));
            turn(conv, info, st, zoom_on, true)?;
            continue;
        }
        let cmd = match commands::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                println!("{}", st.red(&error_text(&e)));
                continue;
            }
        };
        let result = match cmd {
            Command::Exit => break,
            Command::Edit(n, None) => match conv.user_index(n) {
                Some(i) => {
                    let old = conv.messages[i].content.clone();
                    ed.run_edit_commands(&[EditCommand::InsertString(old)]);
                    pending_edit = Some(n);
                    println!(
                        "{}",
                        st.dim(&format!("editing message {n}; Enter sends it"))
                    );
                    Ok(())
                }
                None => Err(anyhow::anyhow!("there is no message {n} (see /context)")),
            },
            Command::Edit(n, Some(t)) => conv
                .edit(n, &t)
                .and_then(|()| turn(conv, info, st, zoom_on, false)),
            Command::Regen => conv
                .drop_last_reply()
                .and_then(|()| turn(conv, info, st, zoom_on, false)),
            Command::Zoom(None) => {
                zoom_on = !zoom_on;
                println!(
                    "{}",
                    st.dim(if zoom_on {
                        "zoom on: tokens are coloured by the model's confidence (green ≥ 70%, yellow ≥ 30%, red below)"
                    } else {
                        "zoom off"
                    })
                );
                Ok(())
            }
            Command::Zoom(Some(n)) => {
                zoom::table(&conv.last_reply, n, conv.tok, st).map(|t| print!("{t}"))
            }
            other => command(conv, other, info, st),
        };
        if let Err(e) = result {
            println!("{}", st.red(&error_text(&e)));
        }
    }
    Ok(())
}

/// Answer the last message, streaming the reply, then the stats line. A failed turn
/// (the context policy refused it) is reported and leaves the conversation as it was.
fn turn(
    conv: &mut Conversation,
    info: &ReplInfo,
    st: Style,
    zoom_on: bool,
    pop_on_error: bool,
) -> Result<()> {
    INTERRUPT.store(false, Ordering::SeqCst);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let tok = conv.tok;
    let mut on = |ev: Event| -> Result<()> {
        match ev {
            Event::Dropped {
                exchanges,
                tokens,
                first_words,
            } => writeln!(
                out,
                "{}",
                st.yellow(&format!(
                    "[context full: dropped the {exchanges} oldest exchange(s), {tokens} tokens, from \"{first_words}\"]"
                ))
            )?,
            Event::PromptDone(p) if p.shifted > 0 => writeln!(
                out,
                "{}",
                st.yellow(&format!(
                    "[kept {} tokens after them, shifted in the cache, not evaluated again]",
                    p.shifted
                ))
            )?,
            Event::PromptDone(_) => {}
            Event::Token { text, record } => {
                if zoom_on {
                    write!(out, "{}", st.confidence(record.p, text))?;
                } else {
                    write!(out, "{text}")?;
                }
                out.flush()?;
            }
        }
        Ok(())
    };
    let result = conv.respond(&INTERRUPT, &mut on);
    drop(out);
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            let popped = pop_on_error && conv.messages.last().is_some_and(|m| m.role == "user");
            if popped {
                conv.messages.pop();
            }
            if e.is::<PromptInterrupted>() {
                let back = if popped {
                    "; the message was taken back (↑ recalls it)"
                } else {
                    ""
                };
                println!("\n{}", st.yellow(&format!("[{e}{back}]")));
            } else {
                println!("{}", st.red(&error_text(&e)));
            }
            return Ok(());
        }
    };
    println!();
    match stats.stop {
        StopReason::Cancelled => println!("{}", st.yellow("[stopped: the partial reply is kept]")),
        StopReason::ContextFull => println!(
            "{}",
            st.yellow("[the context is full: the reply was cut; /undo or /reset frees room]")
        ),
        StopReason::Length => println!(
            "{}",
            st.dim(&format!(
                "[reply limit of {} tokens reached]",
                conv.n_predict
            ))
        ),
        StopReason::Eog => {}
    }
    if zoom_on {
        println!("{}", zoom::probabilities(&conv.last_reply, tok, st));
        println!("{}", zoom::summary(&conv.last_reply, tok, st));
    }
    let line = commands::stats_line(&stats.line(), &conv.session, info.kv_type);
    println!("{}", st.dim(&line));
    Ok(())
}

fn command(conv: &mut Conversation, cmd: Command, info: &ReplInfo, st: Style) -> Result<()> {
    match cmd {
        Command::Help => println!("{HELP}"),
        Command::System(None) => match &conv.system {
            Some(s) => println!("system: {s}"),
            None => println!(
                "{}",
                st.dim("no system prompt (the template may add its own)")
            ),
        },
        Command::System(Some(t)) => {
            conv.system = (t != "-").then_some(t);
            conv.rewind()?;
            println!(
                "{}",
                st.dim("system prompt set; it applies from the next reply")
            );
        }
        Command::Reset => {
            conv.reset();
            println!("{}", st.dim("conversation cleared"));
        }
        Command::Undo => {
            let n = conv.undo()?;
            println!(
                "{}",
                st.dim(&format!(
                    "dropped the last {n} message(s); ctx {}/{}",
                    conv.session.len(),
                    conv.session.n_ctx()
                ))
            );
        }
        Command::Save(p) => {
            // A file of another kind is replaced only when the user says so.
            let mut overwrite = Overwrite::SameKind;
            if let Err(WriteError::OtherKind { dest, found, .. }) =
                check_destination(&p, Kind::Session, Overwrite::SameKind)
            {
                let what = match found {
                    Kind::Data => "not a loupe session".to_string(),
                    k => format!("{}, not a loupe session", k.name()),
                };
                if !confirm(&format!("{dest} exists and is {what}: replace it?")) {
                    println!(
                        "{}",
                        st.dim(&format!("not saved; {} is unchanged", p.display()))
                    );
                    return Ok(());
                }
                overwrite = Overwrite::AnyFile;
            }
            let bytes = conv.save(&p, overwrite)?;
            println!("{}", st.dim(&conv.saved_line(bytes, &p)));
        }
        Command::Load(p) => {
            conv.load(&p, &SamplerSettings::default())?;
            println!(
                "{}",
                st.dim(&format!(
                    "loaded {} messages, {} tokens in the cache, nothing evaluated",
                    conv.messages.len(),
                    conv.session.len()
                ))
            );
        }
        Command::Set(k, v) => println!("{}", st.dim(&commands::set(conv, &k, &v)?)),
        Command::Show => show(conv, info),
        Command::Stats => match &conv.last_stats {
            Some(s) => println!(
                "{}",
                commands::stats_line(&s.line(), &conv.session, info.kv_type)
            ),
            None => println!("{}", st.dim("no turn yet")),
        },
        Command::Context => context(conv, info),
        Command::Exit | Command::Edit(..) | Command::Regen | Command::Zoom(_) => {}
    }
    Ok(())
}

/// Ask a question on the terminal; only "y" or "yes" is a yes (end of input, or no
/// terminal, is a no).
fn confirm(question: &str) -> bool {
    if !io::stdin().is_terminal() {
        return false;
    }
    print!("{question} [y/N] ");
    let _ = io::stdout().flush();
    let mut answer = String::new();
    match io::stdin().read_line(&mut answer) {
        Ok(n) if n > 0 => matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"),
        _ => false,
    }
}

fn show(conv: &Conversation, info: &ReplInfo) {
    let m = conv.session.model();
    println!("model     {}", info.model_path.display());
    println!(
        "          {} · {} layers · vocab {}",
        m.config.arch.name(),
        m.config.n_layer,
        m.config.vocab_size
    );
    println!("template  {}", conv.template.name);
    println!(
        "context   {} tokens, policy {} · threads {}",
        conv.session.n_ctx(),
        conv.policy,
        info.threads
    );
    println!(
        "reply     {}",
        if conv.n_predict < 0 {
            "until the model stops (-n -1)".to_string()
        } else {
            format!("at most {} tokens (-n)", conv.n_predict)
        }
    );
    println!("sampler   {}", conv.sampler.describe());
    for (k, v, from) in conv.sampler_settings.sources() {
        println!("          {k:<18} {v:<10} ({})", from.name());
    }
}

fn context(conv: &Conversation, info: &ReplInfo) {
    println!("{}", commands::context_budget(conv, info.kv_type));
    if let Some(s) = &conv.system {
        println!("  system: {}", preview(s, 60));
    }
    let mut n = 0;
    for m in &conv.messages {
        if m.role == "user" {
            n += 1;
            println!("  {n:>2} you:   {}", preview(&m.content, 60));
        } else {
            println!("     model: {}", preview(&m.content, 60));
        }
    }
}
