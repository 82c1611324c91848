//! `loupe chat` driven through a pseudo-terminal, as a person types, on the real instruct
//! model: turns after the first evaluate only their new tokens, /undo and /edit rewind,
//! Ctrl-C stops a reply and the next turn works, /save + `--resume` continue exactly.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rexpect::reader::ReadUntil;
use rexpect::session::PtySession;

fn model() -> PathBuf {
    let p = loupe::store::QWEN25_CODER_05B.path();
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh qwen",
        p.display()
    );
    p
}

fn spawn(args: &[&str], data_dir: &std::path::Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe"));
    cmd.arg("chat")
        .arg(model())
        .args(["--temp", "0", "-t", "2", "-n", "8"])
        .args(args)
        .env("XDG_DATA_HOME", data_dir)
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    rexpect::session::spawn_command(cmd, Some(60_000)).expect("spawn loupe chat")
}

/// Wait for `re`, answering the cursor-position queries the line editor sends (a real
/// terminal would). Returns (text before, match).
fn expect(p: &mut PtySession, re: &str) -> (String, String) {
    let mut before = String::new();
    loop {
        let (b, m) = p
            .exp_any(vec![
                ReadUntil::String("\x1b[6n".into()),
                ReadUntil::Regex(regex::Regex::new(re).unwrap()),
            ])
            .unwrap_or_else(|e| panic!("waiting for {re:?}: {e}\nso far: {before}"));
        before.push_str(&b);
        if m == "\x1b[6n" {
            p.send("\x1b[1;1R").unwrap();
            p.flush().unwrap();
        } else {
            return (before, m);
        }
    }
}

/// The prompt "› ". rexpect reads bytes as chars, so its UTF-8 comes as three chars.
fn prompt(p: &mut PtySession) {
    expect(p, "\u{e2}\u{80}\u{ba} ");
}

/// Send a message, wait for its stats line; (new, cached) prompt tokens and the text
/// printed before the stats line.
fn say(p: &mut PtySession, text: &str) -> (usize, usize, String) {
    p.send_line(text).unwrap();
    let (before, m) = expect(p, r"prompt \d+ new \+ \d+ cached");
    let nums: Vec<usize> = regex::Regex::new(r"\d+")
        .unwrap()
        .find_iter(&m)
        .map(|x| x.as_str().parse().unwrap())
        .collect();
    prompt(p);
    (nums[0], nums[1], before)
}

/// The reply in `before` (the text after the echoed message), escape codes removed.
fn reply_of(before: &str, message: &str) -> String {
    let plain = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]")
        .unwrap()
        .replace_all(before, "");
    let after = plain.rsplit(message).next().unwrap_or("");
    after.trim().to_string()
}

#[test]
fn turns_reuse_the_cache_undo_edit_and_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let mut p = spawn(&[], data.path());
    prompt(&mut p);
    let (n1, c1, _) = say(&mut p, "hi");
    assert_eq!(c1, 0);
    let (n2, c2, _) = say(&mut p, "say yes");
    assert!(c2 >= n1 && n2 < 25, "turn 2: {n2} new + {c2} cached");
    let (n3, c3, _) = say(&mut p, "say no");
    assert!(c3 > c2 && n3 < 25, "turn 3: {n3} new + {c3} cached");

    p.send_line("/undo").unwrap();
    expect(&mut p, "dropped the last 2 message");
    prompt(&mut p);
    let (n4, c4, _) = say(&mut p, "say maybe");
    assert!(c4 >= c2 && n4 < 25, "after /undo: {n4} new + {c4} cached");

    // /edit 2 rewrites "say yes": the cache keeps turn 1 and the system prompt.
    let (n5, c5, _) = say(&mut p, "/edit 2 say ok");
    assert!(c5 >= n1 && n5 < 25, "after /edit: {n5} new + {c5} cached");

    // Ctrl-C in the middle of a long reply: stopped, kept, and the next turn works. On a
    // fresh conversation: after the short "say ok" exchanges greedy decoding may answer
    // the story request in a dozen tokens, done before the Ctrl-C arrives.
    p.send_line("/reset").unwrap();
    expect(&mut p, "conversation cleared");
    prompt(&mut p);
    p.send_line("/set n 400").unwrap();
    // Its answer first: the editor's redraw of the typed line also shows a prompt, and a
    // line sent before the editor is back in raw mode can be lost.
    expect(&mut p, "reply limit = 400");
    prompt(&mut p);
    p.send_line("Write a long story about a lighthouse keeper.")
        .unwrap();
    // The echo, then the first words of the reply (the line editor is done by then).
    expect(&mut p, r"keeper\.");
    expect(&mut p, r"[A-Za-z]{3,} [A-Za-z]{2,}");
    std::thread::sleep(Duration::from_millis(1000));
    p.send_control('c').unwrap();
    expect(&mut p, r"stopped: the partial reply is kept");
    let (_, m) = expect(&mut p, r"reply \d+ tok");
    let n_reply: usize = m[6..m.len() - 4].parse().unwrap();
    assert!(n_reply > 0 && n_reply < 400, "{m}");
    prompt(&mut p);
    p.send_line("/set n 8").unwrap();
    expect(&mut p, "reply limit = 8");
    prompt(&mut p);
    let (n6, c6, _) = say(&mut p, "thanks");
    assert!(c6 > 0 && n6 < 25, "after Ctrl-C: {n6} new + {c6} cached");

    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn save_then_resume_continues_identically_and_damage_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("talk.session");
    let f = file.to_str().unwrap();

    // One process: two turns, saved after the first.
    let mut a = spawn(&[], data.path());
    prompt(&mut a);
    say(&mut a, "hi");
    a.send_line(&format!("/save {f}")).unwrap();
    expect(&mut a, "saved 2 messages");
    prompt(&mut a);
    let (_, ca, before) = say(&mut a, "count to three");
    let want = reply_of(&before, "count to three");
    a.send_line("/exit").unwrap();
    a.exp_eof().unwrap();

    // Another process resumes: nothing evaluated but the new message, same reply.
    let mut b = spawn(&["--resume", f], data.path());
    prompt(&mut b);
    let (nb, cb, before) = say(&mut b, "count to three");
    assert_eq!(cb, ca, "the resumed cache should serve the same prefix");
    assert!(nb < 25, "{nb} new tokens after resume");
    assert_eq!(reply_of(&before, "count to three"), want);
    b.send_line("/exit").unwrap();
    b.exp_eof().unwrap();

    // A damaged copy is refused, and says so.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let bad = data.path().join("bad.session");
    std::fs::write(&bad, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .arg("chat")
        .arg(model())
        .arg("--resume")
        .arg(&bad)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is damaged"), "{err}");

    // Another version is refused by name.
    let mut v2 = std::fs::read(&file).unwrap();
    v2[8] = 99;
    std::fs::write(&bad, &v2).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .arg("chat")
        .arg(model())
        .arg("--resume")
        .arg(&bad)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 99"), "{err}");
}

/// `path`'s session file with its chat settings changed by `edit`, written to `to`.
fn edit_session(
    path: &std::path::Path,
    to: &std::path::Path,
    edit: impl Fn(&mut serde_json::Value),
) {
    common::edit_session_header(path, to, |h| edit(&mut h["chat"]));
}

/// Send a command and return what it printed up to the next prompt, escape codes and
/// the echoed command removed.
fn output_of(p: &mut PtySession, cmd: &str, last: &str) -> String {
    p.send_line(cmd).unwrap();
    let (before, m) = expect(p, last);
    prompt(p);
    let text = format!("{before}{m}");
    let plain = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]")
        .unwrap()
        .replace_all(&text, "")
        .into_owned();
    let at = plain.rfind(cmd).map_or(0, |i| i + cmd.len());
    plain[at..].trim().to_string()
}

/// A `/load` that fails (settings out of range, a bad reply limit) changes nothing: the
/// messages, the settings /show lists and the cache are as before, and the next turn
/// reuses the cache.
#[test]
fn a_failed_load_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("talk.session");
    let f = file.to_str().unwrap();
    let mut p = spawn(&[], data.path());
    prompt(&mut p);
    say(&mut p, "hi");
    p.send_line(&format!("/save {f}")).unwrap();
    expect(&mut p, "saved 2 messages");
    prompt(&mut p);
    p.send_line("/set top-k 7").unwrap();
    expect(&mut p, "top-k = 7");
    prompt(&mut p);
    say(&mut p, "count to three");

    let context = output_of(
        &mut p,
        "/context",
        r"you: +count to three\s*\r?\n\s*model: [^\r\n]+",
    );
    let show = output_of(&mut p, "/show", r"seed +\d+ +\(\w+\)");
    assert!(context.contains("count to three"), "{context}");
    assert!(show.contains("top-k              7"), "{show}");

    let bad = data.path().join("bad.session");
    let b = bad.to_str().unwrap();
    edit_session(&file, &bad, |chat| chat["sampler"]["top_p"] = 7.0.into());
    p.send_line(&format!("/load {b}")).unwrap();
    expect(&mut p, "top-p = 7: must be between 0 and 1");
    prompt(&mut p);
    edit_session(&file, &bad, |chat| chat["n_predict"] = (-7).into());
    p.send_line(&format!("/load {b}")).unwrap();
    expect(&mut p, "reply limit must be -1");
    prompt(&mut p);
    edit_session(&file, &bad, |chat| {
        chat["messages"][0]["role"] = "system".into()
    });
    p.send_line(&format!("/load {b}")).unwrap();
    expect(&mut p, "messages must each have a role");
    prompt(&mut p);

    let context_after = output_of(
        &mut p,
        "/context",
        r"you: +count to three\s*\r?\n\s*model: [^\r\n]+",
    );
    let show_after = output_of(&mut p, "/show", r"seed +\d+ +\(\w+\)");
    assert_eq!(context_after, context, "the messages or the cache changed");
    assert_eq!(show_after, show, "the settings changed");
    let cache: usize = regex::Regex::new(r"(\d+) of \d+ tokens in the cache")
        .unwrap()
        .captures(&context)
        .unwrap()[1]
        .parse()
        .unwrap();
    let (n, c, _) = say(&mut p, "thanks");
    assert!(
        c + 2 >= cache && n < 25,
        "after the failed loads: {n} new + {c} cached of {cache}"
    );

    // The file itself, untouched, still loads.
    p.send_line(&format!("/load {f}")).unwrap();
    expect(&mut p, "loaded 2 messages");
    prompt(&mut p);
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}

/// A chat template that would loop for hours is stopped by its fuel with a clear error,
/// quickly, and the REPL goes on.
#[test]
fn a_runaway_template_is_an_error_not_a_hang() {
    let data = tempfile::tempdir().unwrap();
    let tmpl = data.path().join("loop.jinja");
    std::fs::write(
        &tmpl,
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let mut p = spawn(&["--template-file", tmpl.to_str().unwrap()], data.path());
    prompt(&mut p);
    let start = std::time::Instant::now();
    p.send_line("hi").unwrap();
    expect(&mut p, r"chat template did not finish within \d+ steps");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    prompt(&mut p);
    p.send_line("/set n 4").unwrap();
    expect(&mut p, "reply limit = 4");
    prompt(&mut p);
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}

/// Ctrl-C while a long prompt is read stops it between chunks; the message is taken
/// back, what was read stays in the cache, and the REPL goes on.
#[test]
fn ctrl_c_stops_a_long_prompt() {
    let data = tempfile::tempdir().unwrap();
    let system = "The keeper climbed the tower each night, counted the steps, and lit the lamp. "
        .repeat(150);
    let mut p = spawn(&["--system", &system], data.path());
    prompt(&mut p);
    p.send_line("hi").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    p.send_control('c').unwrap();
    let (_, m) = expect(&mut p, r"stopped while reading the prompt \(\d+ of \d+");
    let nums: Vec<usize> = regex::Regex::new(r"\d+")
        .unwrap()
        .find_iter(&m)
        .map(|x| x.as_str().parse().unwrap())
        .collect();
    assert!(nums[0] < nums[1], "{m}");
    prompt(&mut p);
    let context = output_of(&mut p, "/context", r"system: [^\r\n]+");
    assert!(
        !context.contains("you:"),
        "the message was taken back: {context}"
    );
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}

/// A message too long for the context is refused, and the refusal drops nothing: the
/// earlier exchange that shifting would have dropped is still there.
#[test]
fn a_refused_turn_drops_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut p = spawn(&["--ctx", "64"], data.path());
    prompt(&mut p);
    say(&mut p, "hi");
    let long = "tell me about this word please ".repeat(15);
    p.send_line(long.trim()).unwrap();
    expect(&mut p, "this message alone takes");
    prompt(&mut p);
    let context = output_of(&mut p, "/context", r"model: [^\r\n]+");
    assert!(context.contains("1 you:   hi"), "{context}");
    assert!(!context.contains("2 you:"), "{context}");
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}
