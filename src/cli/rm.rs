//! `loupe rm`: remove a model from the store.

use std::io::Write;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::cli::format::bytes;
use crate::hub::client::part_path;
use crate::store;

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The model's name as `loupe list` shows it (every part of a split model goes).
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(args: &RmArgs, out: &mut impl Write) -> Result<()> {
    let entries = store::entries()?;
    // Every name is checked before anything is removed.
    let mut chosen = Vec::new();
    for name in &args.names {
        match entries.iter().find(|e| &e.name == name) {
            Some(e) => chosen.push(e),
            None => bail!(
                "no model named {name:?} in the store {} (`loupe list` shows the names)",
                store::models_dir().display()
            ),
        }
    }
    for e in chosen {
        for p in &e.parts {
            std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
            // A partial download of the same file goes too.
            let _ = std::fs::remove_file(part_path(p));
        }
        // Empty folders of a pulled model (up to the hub folder) go with it.
        let hub = store::hub_dir();
        let mut dir = e.path().parent();
        while let Some(d) = dir {
            if !d.starts_with(&hub) || d == hub || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        writeln!(out, "removed {} ({} freed)", e.name, bytes(e.size))?;
    }
    Ok(())
}
