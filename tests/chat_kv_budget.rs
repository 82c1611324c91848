//! The chat's context budget through a pseudo-terminal: the per-turn stats line and
//! `/context` show the tokens used of --ctx and the KV cache's size and types.

use std::process::Command;

use rexpect::reader::ReadUntil;
use rexpect::session::PtySession;

/// Wait for `re`, answering the cursor-position queries the line editor sends (a real
/// terminal would). Returns the match.
fn expect(p: &mut PtySession, re: &str) -> String {
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
            return m;
        }
    }
}

#[test]
fn stats_line_and_context_show_the_kv_cache() {
    let model = loupe::store::QWEN25_CODER_05B.path();
    assert!(
        model.is_file(),
        "{} is missing: run scripts/fetch-models.sh qwen",
        model.display()
    );
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe"));
    cmd.arg("chat")
        .arg(&model)
        .args(["--temp", "0", "-t", "2", "-n", "8", "--ctx", "512"])
        .args(["-ctk", "q8_0"])
        .env("XDG_DATA_HOME", data.path())
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).expect("spawn loupe chat");
    // qwen2.5 0.5b: 24 layers, 2 KV heads of 64; keys q8_0 (68 bytes a row), values f16
    // (128 bytes): 9408 bytes a token, 4.6 MiB for 512.
    let prompt = "\u{e2}\u{80}\u{ba} ";
    expect(&mut p, prompt);
    p.send_line("hi").unwrap();
    expect(
        &mut p,
        r"\[ctx \d+/512 [^\r\n]*KV cache 4\.6 MiB k q8_0, v f16\]",
    );
    expect(&mut p, prompt);
    p.send_line("/context").unwrap();
    expect(
        &mut p,
        r"\d+ of 512 tokens in the cache \(KV cache 4\.6 MiB k q8_0, v f16\)",
    );
    expect(&mut p, prompt);
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}
