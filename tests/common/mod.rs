//! Shared by the tests that drive the `loupe` binary: the test models' paths and one way
//! to run the binary.
#![allow(dead_code)] // each test binary uses a different part

use std::process::{Command, Output, Stdio};

use loupe::store::KnownModel;

/// A test model's path, or a clear failure when it has not been fetched.
pub fn model(m: &KnownModel) -> String {
    let p = m.path();
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set LOUPE_MODELS)",
        p.display()
    );
    p.display().to_string()
}

/// `loupe ARGS` with no standard input, to completion.
pub fn loupe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loupe")
}

/// `loupe synth --shape SHAPE --type TYPE --vocab-from generated` into `dir`: the path of a
/// random-weight model that needs no test model.
pub fn synth(dir: &std::path::Path, shape: &str, ty: &str) -> String {
    let path = dir.join(format!("{shape}-{ty}.gguf")).display().to_string();
    let args = [
        "synth",
        "--shape",
        shape,
        "--type",
        ty,
        "--vocab-from",
        "generated",
    ];
    let o = loupe(&[&args[..], &[path.as_str()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    path
}

/// `from`'s session file with its header JSON changed by `edit` and the checksum made good
/// again, written to `to`. Layout (see `Session::save`): magic, version (u32), header
/// length (u64), header JSON, cache length (u64), cache, SHA-256 of all before.
pub fn edit_session_header(
    from: &std::path::Path,
    to: &std::path::Path,
    edit: impl Fn(&mut serde_json::Value),
) {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(from).unwrap();
    let body = &bytes[..bytes.len() - 32];
    let hlen = u64::from_le_bytes(body[12..20].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&body[20..20 + hlen]).unwrap();
    edit(&mut header);
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = body[..12].to_vec();
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body[20 + hlen..]);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    std::fs::write(to, out).unwrap();
}
