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
