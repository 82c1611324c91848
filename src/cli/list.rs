//! `loupe list`: the models in the store, with what each is.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::cli::format::{bytes, count};
use crate::store;
use loupe_engine::model::summary::ModelSummary;
use loupe_gguf::GgufFile;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One JSON array of the models (name, path, parts, size, type, architecture,
    /// parameters).
    #[arg(long)]
    pub json: bool,
}

/// What a model's header says, read without loading its weights.
struct Facts {
    file_type: String,
    architecture: String,
    parameters: Option<u64>,
}

fn facts(e: &store::Entry) -> Facts {
    match GgufFile::open(e.path()) {
        Ok(f) => {
            let s = ModelSummary::of(&f);
            Facts {
                file_type: s
                    .file_type
                    .map(|(id, name)| name.map_or(format!("type {id}"), str::to_string))
                    .unwrap_or_else(|| "?".into()),
                architecture: s.architecture.unwrap_or_else(|| "?".into()),
                parameters: Some(s.parameter_count),
            }
        }
        Err(err) => Facts {
            file_type: "?".into(),
            architecture: format!("unreadable: {err}"),
            parameters: None,
        },
    }
}

pub fn run(args: &ListArgs, out: &mut impl Write) -> Result<()> {
    let entries = store::entries()?;
    if args.json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                let f = facts(e);
                json!({
                    "name": e.name,
                    "path": e.path(),
                    "parts": e.parts.len(),
                    "size": e.size,
                    "file_type": f.file_type,
                    "architecture": f.architecture,
                    "parameters": f.parameters,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(
            out,
            "no models in {} (loupe pull owner/repo:QUANT fetches one)",
            store::models_dir().display()
        )?;
        return Ok(());
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:>10}  {:8}  {:12}  {:>10}",
        "NAME", "SIZE", "TYPE", "ARCH", "PARAMS"
    )?;
    for e in &entries {
        let f = facts(e);
        let parts = if e.parts.len() > 1 {
            format!("  ({} parts)", e.parts.len())
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:width$}  {:>10}  {:8}  {:12}  {:>10}{parts}",
            e.name,
            bytes(e.size),
            f.file_type,
            f.architecture,
            f.parameters.map_or("?".into(), count),
        )?;
    }
    Ok(())
}
