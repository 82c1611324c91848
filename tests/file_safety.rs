//! What loupe does with the files it writes and opens, as a user drives it: a write never
//! replaces a device, a FIFO, a folder or the model in use; it follows a link; it gives a
//! new file the umask's mode and a replaced one its old mode; it replaces a file of another
//! kind only with `--force` (the chat's `/save` asks); Ctrl-C and SIGTERM leave no
//! temporary behind, and the temporaries of a killed run are removed by the next write in
//! their folder; a FIFO or a device is never opened as a model or a session.
//!
//! On a tiny random-weight model (`loupe synth`, the Qwen test model's vocabulary), made
//! once per run. Devices are made with mknod where the tests run as root, never the real
//! /dev/null, which a broken check would replace.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TENSOR: &str = "output_norm.weight";

fn loupe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loupe"));
    c.stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    loupe().args(args).output().expect("run loupe")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny F16 model (2 layers, dim 256), made once for all the tests of this file.
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let donor = loupe::store::QWEN25_CODER_05B.path();
        assert!(
            donor.is_file(),
            "test model {} is missing: run scripts/fetch-models.sh",
            donor.display()
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("file_safety");
        fs::create_dir_all(&dir).unwrap();
        // Made again each run (synth replaces a GGUF file atomically).
        let path = dir.join("tiny-f16.gguf");
        let o = run(&["synth", "--shape", "tiny", "--type", "F16", s(&path)]);
        assert!(o.status.success(), "synth: {}", stderr(&o));
        path
    })
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A character device like /dev/null at `path`, where the tests may make one (root).
fn mknod_null(path: &Path) -> bool {
    Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn dump(to: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["inspect", s(model()), "--tensor", TENSOR, "--dump", s(to)];
    args.extend_from_slice(extra);
    run(&args)
}

/// Names in `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn devices_fifos_folders_and_the_open_model_are_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let o = dump(&fifo, &["--force"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("fifo is a FIFO, not a regular file"),
        "{}",
        stderr(&o)
    );
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());

    let o = dump(dir.path(), &[]);
    assert!(
        stderr(&o).contains("is a directory, not a regular file"),
        "{}",
        stderr(&o)
    );

    let null = dir.path().join("null");
    if mknod_null(&null) {
        for o in [
            dump(&null, &["--force"]),
            run(&["quantize", s(model()), s(&null), "Q8_0", "--force"]),
            run(&[
                "synth",
                "--shape",
                "tiny",
                "--type",
                "Q8_0",
                s(&null),
                "--force",
            ]),
        ] {
            assert!(!o.status.success());
            assert!(
                stderr(&o).contains("null is a character device, not a regular file"),
                "{}",
                stderr(&o)
            );
        }
        assert!(fs::metadata(&null).unwrap().file_type().is_char_device());
    }

    // The model being read, directly or through a link.
    let before = fs::metadata(model()).unwrap();
    let link = dir.path().join("model-link.gguf");
    std::os::unix::fs::symlink(model(), &link).unwrap();
    for to in [model(), link.as_path()] {
        let o = dump(to, &["--force"]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("is a model open in this run"),
            "{}",
            stderr(&o)
        );
    }
    let after = fs::metadata(model()).unwrap();
    assert_eq!(
        (before.ino(), before.len(), before.mtime()),
        (after.ino(), after.len(), after.mtime())
    );
    // Nothing was left in the folder: no temporary, no file.
    let mut want = vec!["fifo", "model-link.gguf"];
    if null.exists() {
        want.push("null");
    }
    assert_eq!(entries(dir.path()), want);
}

#[test]
fn a_link_is_followed_and_modes_follow_the_umask_or_the_replaced_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("values.f32");
    let link = dir.path().join("link.f32");
    fs::write(&target, b"old values").unwrap();
    std::os::unix::fs::symlink("values.f32", &link).unwrap();
    let o = dump(&link, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::metadata(&target).unwrap().len(), 256 * 4);

    // A replaced file keeps its mode.
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(dump(&target, &[]).status.success());
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o640);

    // A new file gets 0666 less the umask.
    for (umask, want) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let out = dir.path().join(format!("new-{umask}.f32"));
        let o = Command::new("sh")
            .args(["-c", &format!("umask {umask}; exec \"$@\""), "sh"])
            .arg(env!("CARGO_BIN_EXE_loupe"))
            .args(["inspect", s(model()), "--tensor", TENSOR, "--dump", s(&out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let mode = fs::metadata(&out).unwrap().mode() & 0o777;
        assert_eq!(mode, want, "umask {umask}: mode {mode:o}");
    }
}

#[test]
fn a_file_of_another_kind_is_replaced_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    fs::write(&notes, b"my notes").unwrap();
    for o in [
        run(&["quantize", s(model()), s(&notes), "Q8_0"]),
        run(&["synth", "--shape", "tiny", "--type", "Q8_0", s(&notes)]),
    ] {
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains(
                "notes.txt already exists and is not a GGUF model: pass --force to replace it"
            ),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(fs::read(&notes).unwrap(), b"my notes");
    let o = run(&["quantize", s(model()), s(&notes), "Q8_0", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(&fs::read(&notes).unwrap()[..4], b"GGUF");
    // A model replaces a model; a dump does not replace a model without --force.
    let o = run(&["quantize", s(model()), s(&notes), "Q4_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = fs::read(&notes).unwrap();
    let o = dump(&notes, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already exists and is a GGUF model: pass --force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&notes).unwrap(), before);
    assert!(dump(&notes, &["--force"]).status.success());
    assert_eq!(fs::metadata(&notes).unwrap().len(), 256 * 4);
    assert_eq!(entries(dir.path()), ["notes.txt"]);
}

/// Wait (at most a minute) until `ready` holds, polling; false when the child ended first.
fn wait_for(child: &mut Child, ready: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if ready() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn sigterm_during_a_quantization_leaves_no_temporary() {
    // The real 0.5B model, requantized on one thread: seconds of writing to interrupt.
    let src = loupe::store::QWEN25_CODER_05B.path();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    let mut child = loupe()
        .args([
            "quantize",
            s(&src),
            s(&out),
            "Q8_0",
            "--allow-requantize",
            "-t",
            "1",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(&mut child, || {
        entries(dir.path())
            .iter()
            .any(|n| n.starts_with(".loupe-quantize-"))
    });
    assert!(started, "no temporary file appeared while quantizing");
    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn sigterm_during_a_ladder_leaves_no_temporary_folder() {
    // The ladder's models go to a temporary folder under TMPDIR: all of it goes.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = loupe()
        .args(["compare", "--ladder", s(model()), "--types", "Q8_0,Q4_0"])
        .args(["--ctx", "64", "--no-speed", "-t", "1"])
        .env("TMPDIR", tmp.path())
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let has_a_model = || {
        fs::read_dir(tmp.path()).unwrap().flatten().any(|d| {
            d.path().is_dir()
                && fs::read_dir(d.path())
                    .unwrap()
                    .flatten()
                    .any(|f| f.file_name().to_string_lossy().ends_with(".gguf"))
        })
    };
    assert!(
        wait_for(&mut child, has_a_model),
        "the ladder wrote no model"
    );
    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

#[test]
fn the_temporaries_of_a_killed_run_are_removed_by_the_next_write_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = dir
        .path()
        .join(format!(".loupe-quantize-{dead}-Ab12Cd.tmp"));
    fs::write(&stale, vec![0u8; 1 << 20]).unwrap();
    // This test's own process is alive: its "temporary" is not touched.
    let alive = dir
        .path()
        .join(format!(".loupe-dump-{}-Ab12Cd.tmp", std::process::id()));
    fs::write(&alive, b"in use").unwrap();
    let out = dir.path().join("values.f32");
    let o = dump(&out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("removed {}", stale.display()))
            && err.contains(&format!(
                "left behind by loupe process {dead}, which is gone"
            )),
        "{err}"
    );
    assert!(!stale.exists());
    assert!(alive.exists());
    assert!(out.exists());
}

/// `loupe chat MODEL args`, stdin empty, under a 4 GiB address-space limit (a reader
/// without bounds fails fast instead of filling the machine), killed after a minute.
fn chat(model: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -v 4194304; exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_loupe"))
        .arg("chat")
        .arg(model)
        .args(["--template", "chatml", "--ctx", "64", "-t", "1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("loupe chat {args:?} still running after a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    (o.status.success(), stderr(&o))
}

#[test]
fn fifos_and_devices_are_not_opened_as_sessions_or_models() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let (ok, err) = chat(model(), &["--resume", s(&fifo)]);
    assert!(!ok);
    assert!(
        err.contains("fifo is a FIFO, not a loupe session file"),
        "{err}"
    );

    let (ok, err) = chat(model(), &["--resume", "/dev/zero"]);
    assert!(!ok);
    assert!(
        err.contains("/dev/zero is a character device, not a loupe session file"),
        "{err}"
    );

    // A session's size is bounded before it is read: a 64 GiB (sparse) file that starts
    // like a session is refused at once.
    let huge = dir.path().join("huge.session");
    let mut head = b"LOUPESES".to_vec();
    head.extend_from_slice(&1u32.to_le_bytes());
    fs::write(&huge, &head).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let (ok, err) = chat(model(), &["--resume", s(&huge)]);
    assert!(!ok);
    assert!(
        err.contains("more than a session of this model with --ctx 64"),
        "{err}"
    );

    // A FIFO as the model.
    let (ok, err) = chat(&fifo, &[]);
    assert!(!ok);
    assert!(err.contains("fifo is a FIFO, not a GGUF file"), "{err}");
}

/// Wait for `re`, answering the line editor's cursor-position queries (a terminal would).
fn expect(p: &mut rexpect::session::PtySession, re: &str) {
    use rexpect::reader::ReadUntil;
    loop {
        let (_, m) = p
            .exp_any(vec![
                ReadUntil::String("\x1b[6n".into()),
                ReadUntil::Regex(regex::Regex::new(re).unwrap()),
            ])
            .unwrap_or_else(|e| panic!("waiting for {re:?}: {e}"));
        if m == "\x1b[6n" {
            p.send("\x1b[1;1R").unwrap();
            p.flush().unwrap();
        } else {
            return;
        }
    }
}

#[test]
fn save_asks_before_replacing_a_file_that_is_not_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    fs::write(&notes, b"my notes").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe"));
    cmd.arg("chat")
        .arg(model())
        .args(["--template", "chatml", "--ctx", "64", "-t", "1"])
        .env("XDG_DATA_HOME", dir.path())
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).unwrap();
    let prompt = "\u{e2}\u{80}\u{ba} ";
    expect(&mut p, prompt);
    p.send_line(&format!("/save {}", s(&notes))).unwrap();
    expect(
        &mut p,
        r"notes\.txt exists and is not a loupe session: replace it\? \[y/N\] ",
    );
    p.send_line("n").unwrap();
    expect(&mut p, "not saved");
    assert_eq!(fs::read(&notes).unwrap(), b"my notes");

    expect(&mut p, prompt);
    p.send_line(&format!("/save {}", s(&notes))).unwrap();
    expect(&mut p, r"replace it\? \[y/N\] ");
    p.send_line("y").unwrap();
    expect(&mut p, "saved 0 messages");
    assert_eq!(&fs::read(&notes).unwrap()[..8], b"LOUPESES");

    // A session replaces a session without a question; the model in use is refused.
    expect(&mut p, prompt);
    p.send_line(&format!("/save {}", s(&notes))).unwrap();
    expect(&mut p, "saved 0 messages");
    expect(&mut p, prompt);
    p.send_line(&format!("/save {}", s(model()))).unwrap();
    expect(&mut p, "is a model open in this run");
    expect(&mut p, prompt);
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}
