//! `loupe pull`: fetch a model from a Hugging Face-style hub into the store; and the
//! resolution every command that takes MODEL goes through ([`model_path`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::cli::format::{bytes, ProgressLine};
use crate::hub::client::{is_listed_file, Event, Hub};
use crate::hub::{select, HubRef, RemoteFile};
use crate::store::{self, Resolved};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The model: owner/repo, owner/repo:QUANT (Q4_K_M, q8_0, ...) or
    /// owner/repo/path/file.gguf. The hub is $HF_ENDPOINT [default: https://huggingface.co];
    /// a token comes from $HF_TOKEN or the token file of $HF_HOME.
    pub reference: String,
}

pub fn run(args: &PullArgs, out: &mut impl Write) -> Result<()> {
    let r = HubRef::parse(&args.reference)?;
    let path = pull(&r)?;
    let name = path
        .strip_prefix(store::hub_dir())
        .unwrap_or(&path)
        .display()
        .to_string();
    writeln!(out, "{name}")?;
    Ok(())
}

/// The file MODEL names (see [`store::resolve`]); a hub reference not in the store is
/// pulled first, said on stderr.
pub fn model_path(model: &Path) -> Result<PathBuf> {
    match store::resolve(model)? {
        Resolved::Path(p) => Ok(p),
        Resolved::Pull(r) => {
            eprintln!(
                "loupe: {r} is not in the store; pulling it from {}",
                Hub::from_env().endpoint()
            );
            pull(&r)
        }
    }
}

/// Pull `r` into the store (every part of a split model) and return the path to open.
/// Files already there with the listed size and sha256 are not fetched again.
pub fn pull(r: &HubRef) -> Result<PathBuf> {
    let hub = Hub::from_env();
    let listed = hub
        .files(r)
        .with_context(|| format!("cannot list the files of {}", r.repo_id()))?;
    let files = select(r, &listed)?;
    let n = files.len();
    for (i, f) in files.iter().enumerate() {
        let dest = store::hub_path(r, &f.path);
        let what = if n > 1 {
            format!("{} (part {} of {n})", f.path, i + 1)
        } else {
            f.path.clone()
        };
        if dest.is_file() && already_there(&dest, f)? {
            eprintln!("loupe: {what} is already in the store");
            continue;
        }
        eprintln!("loupe: pulling {what}, {}", bytes(f.size));
        let mut line = ProgressLine::terminal_only();
        let t0 = Instant::now();
        let mut start = 0u64;
        let mut last = Instant::now();
        let result = hub.download(r, f, &dest, &mut |e| match e {
            Event::Resume { from } => {
                start = from;
                eprintln!("loupe: resuming at {} of {}", bytes(from), bytes(f.size));
            }
            Event::Restart { why } => {
                start = 0;
                eprintln!("loupe: starting over: {why}");
            }
            Event::Bytes { done, total } => {
                if last.elapsed().as_millis() >= 200 || done == total {
                    last = Instant::now();
                    line.show(&progress_text(done, total, done - start.min(done), t0));
                }
            }
        });
        line.finish();
        result.with_context(|| format!("cannot pull {r}"))?;
    }
    Ok(store::hub_path(r, &files[0].path))
}

/// Whether the stored `dest` is the listed file; a stored file that is not is fetched
/// again, said.
fn already_there(dest: &Path, f: &RemoteFile) -> Result<bool> {
    let same =
        is_listed_file(dest, f).with_context(|| format!("cannot read {}", dest.display()))?;
    if !same {
        eprintln!(
            "loupe: {} differs from the hub's file; fetching it again",
            dest.display()
        );
    }
    Ok(same)
}

/// "120.3 MiB / 241.4 MiB  45.1 MiB/s  ETA 3s" (speed over the bytes of this run).
fn progress_text(done: u64, total: u64, this_run: u64, t0: Instant) -> String {
    let secs = t0.elapsed().as_secs_f64().max(1e-3);
    let speed = this_run as f64 / secs;
    let eta = if speed > 0.0 {
        format!("  ETA {:.0}s", (total - done) as f64 / speed)
    } else {
        String::new()
    };
    format!(
        "{} / {}  {}/s{eta}",
        bytes(done),
        bytes(total),
        bytes(speed as u64)
    )
}
