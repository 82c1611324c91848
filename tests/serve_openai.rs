//! `loupe serve` against a real client: the `openai` Python package (installed by
//! `scripts/install-deps.sh` into `$LOUPE_PYLIB`, default `~/.cache/loupe/pylib`) runs
//! `tests/serve/openai_client.py` against the server on loopback: whole and streamed chat,
//! stop strings, log-probabilities against `loupe next`, two conversations at once, a
//! client that disconnects mid-stream, and malformed, oversized, unauthorised requests;
//! and a server with one slot and a queue of one (`tests/serve/queue_client.py`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{loupe, model};
use loupe::store::QWEN25_CODER_05B;

fn pylib() -> PathBuf {
    match std::env::var_os("LOUPE_PYLIB").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/loupe/pylib"),
    }
}

/// The server, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `loupe serve ARGS --port 0` and return it with its base URL, read from the
/// "listening on" line it prints.
fn start(args: &[&str]) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loupe serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {line}");
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("loupe serve did not say where it listens");
    (server, url)
}

/// Run `tests/serve/SCRIPT ARGS` (with the openai package on the path) and require its
/// "all checks passed".
fn python(script: &str, args: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/serve")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .env("PYTHONPATH", pylib())
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{script}'s checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_openai_python_client_gets_what_it_expects() {
    let m = model(&QWEN25_CODER_05B);
    let lib = pylib();
    assert!(
        lib.join("openai").is_dir(),
        "the openai Python package is not in {} (scripts/install-deps.sh installs it)",
        lib.display()
    );
    let next = loupe(&[
        "next",
        &m,
        "The capital of France is",
        "--top",
        "5",
        "--json",
        "--ctx",
        "1024",
    ]);
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let next_json = dir.path().join("next.json");
    std::fs::write(&next_json, &next.stdout).unwrap();

    let key = "test-key-123";
    let (_server, url) = start(&[
        &m,
        "--parallel",
        "2",
        "--ctx",
        "1024",
        "--max-body",
        "65536",
        "--api-key",
        key,
        "--name",
        "qwen-test",
    ]);
    python(
        "openai_client.py",
        &[url.as_str(), key, "qwen-test", next_json.to_str().unwrap()],
    );
}

#[test]
fn requests_beyond_the_slots_queue_and_beyond_the_queue_are_refused() {
    let m = model(&QWEN25_CODER_05B);
    let (_server, url) = start(&[&m, "--parallel", "1", "--queue", "1", "--ctx", "256"]);
    python("queue_client.py", &[url.as_str()]);
}
