//! Models by name from a Hugging Face-style hub: what a reference means (`owner/repo`,
//! `owner/repo:Q4_K_M`, `owner/repo/file.gguf`), which files of a repository it picks
//! (every part of a split model), and fetching them into the store ([`client`]).
//!
//! The choice of file is pure (a list of names in, the files out), so the same rules pick
//! from the hub's listing before a download and from the store's files without the network.

pub mod client;

use std::fmt;

/// A model on the hub: a repository and which of its GGUF files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    pub owner: String,
    pub repo: String,
    pub pick: Pick,
}

/// Which file of a repository a reference names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// `owner/repo`: the only model there, else its Q4_K_M.
    Default,
    /// `owner/repo:Q4_K_M`: the file whose name carries this quantization (any case).
    Quant(String),
    /// `owner/repo/path/file.gguf`: that file.
    File(String),
}

/// The quantization `owner/repo` means when the repository holds several.
pub const DEFAULT_QUANT: &str = "Q4_K_M";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error("{0:?} is not a model reference: expected owner/repo, owner/repo:QUANT or owner/repo/file.gguf")]
    Shape(String),
    #[error("{reference:?}: {what} {name:?} may hold only letters, digits, '-', '_' and '.'")]
    Name {
        reference: String,
        what: &'static str,
        name: String,
    },
    #[error("{reference:?}: the file {file:?} must be a .gguf path inside the repository (no empty, '.' or '..' parts)")]
    File { reference: String, file: String },
}

impl HubRef {
    /// Parse `owner/repo`, `owner/repo:QUANT` or `owner/repo/path/file.gguf`.
    pub fn parse(s: &str) -> Result<HubRef, RefError> {
        let shape = || RefError::Shape(s.to_string());
        let (left, tag) = match s.split_once(':') {
            Some((l, t)) if !t.is_empty() && !t.contains(['/', ':']) => (l, Some(t)),
            Some(_) => return Err(shape()),
            None => (s, None),
        };
        let mut parts = left.splitn(3, '/');
        let (Some(owner), Some(repo)) = (parts.next(), parts.next()) else {
            return Err(shape());
        };
        let file = parts.next();
        for (what, name) in [("owner", owner), ("repository", repo)] {
            let ok = !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(RefError::Name {
                    reference: s.to_string(),
                    what,
                    name: name.to_string(),
                });
            }
        }
        let pick = match (file, tag) {
            (Some(_), Some(_)) => return Err(shape()),
            (Some(f), None) => {
                if !is_safe_gguf_path(f) {
                    return Err(RefError::File {
                        reference: s.to_string(),
                        file: f.to_string(),
                    });
                }
                Pick::File(f.to_string())
            }
            (None, Some(t)) => Pick::Quant(t.to_string()),
            (None, None) => Pick::Default,
        };
        Ok(HubRef {
            owner: owner.to_string(),
            repo: repo.to_string(),
            pick,
        })
    }

    /// `owner/repo`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// Whether `s` reads as a reference rather than a file path: it parses, does not start
    /// like a path (`/`, `./`, `../`, `~`), and is not `dir/file.gguf` (two parts, the
    /// second a GGUF file name: a path to a missing file, not a repository).
    pub fn looks_like(s: &str) -> bool {
        if s.starts_with(['/', '.', '~']) {
            return false;
        }
        match HubRef::parse(s) {
            Ok(r) => !(r.pick == Pick::Default && is_gguf(&r.repo)),
            Err(_) => false,
        }
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)?;
        match &self.pick {
            Pick::Default => Ok(()),
            Pick::Quant(q) => write!(f, ":{q}"),
            Pick::File(p) => write!(f, "/{p}"),
        }
    }
}

/// A relative path of plain components (no empty, `.` or `..` part, no backslash or
/// control character), ending in `.gguf`: safe to join under the store.
pub fn is_safe_gguf_path(p: &str) -> bool {
    is_gguf(p) && is_safe_path(p)
}

/// A relative path of plain components: no empty, `.` or `..` part, no backslash or
/// control character.
pub fn is_safe_path(p: &str) -> bool {
    p.split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'))
        && !p.chars().any(char::is_control)
}

fn is_gguf(p: &str) -> bool {
    p.len() > 5
        && p.get(p.len() - 5..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".gguf"))
}

/// A file of a repository, as the hub lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repository (`Q4_K_M/model-00001-of-00002.gguf`).
    pub path: String,
    pub size: u64,
    /// The sha256 the hub reports (its LFS object id), lowercase hex.
    pub sha256: Option<String>,
    /// For a file kept in git itself (not LFS), its git blob id (sha1), lowercase hex.
    pub git_sha1: Option<String>,
}

/// `name-00002-of-00003.gguf` → (`name`, 2, 3): llama.cpp's `gguf-split` naming, parts
/// counted from 1.
pub fn split_name(path: &str) -> Option<(&str, u32, u32)> {
    if !is_gguf(path) {
        return None;
    }
    let stem = &path[..path.len() - 5];
    // "-NNNNN-of-NNNNN" is 15 bytes.
    let tail = stem.get(stem.len().checked_sub(15)?..)?;
    let b = tail.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b[0] != b'-' || &b[6..10] != b"-of-" || !digits(1..6) || !digits(10..15) {
        return None;
    }
    let no: u32 = tail[1..6].parse().ok()?;
    let count: u32 = tail[10..15].parse().ok()?;
    (no >= 1 && no <= count).then_some((&stem[..stem.len() - 15], no, count))
}

/// One model of a repository: a single file, or every part of a split one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    /// The single file's path, or the parts' common prefix (`dir/name`).
    key: String,
    /// For a split model, how many parts it says it has.
    count: Option<u32>,
    files: Vec<RemoteFile>,
}

impl Group {
    fn first(&self) -> &str {
        &self.files[0].path
    }
}

/// The GGUF models among `files`, each split model's parts together and in order.
/// Multimodal projectors (`mmproj` files) are not models of their own.
fn groups(files: &[RemoteFile]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for f in files {
        let base = f.path.rsplit('/').next().unwrap_or(&f.path);
        if !is_gguf(&f.path) || base.to_ascii_lowercase().contains("mmproj") {
            continue;
        }
        let (key, count) = match split_name(&f.path) {
            Some((stem, _, n)) => (stem.to_string(), Some(n)),
            None => (f.path.clone(), None),
        };
        match out.iter_mut().find(|g| g.key == key && g.count == count) {
            Some(g) => g.files.push(f.clone()),
            None => out.push(Group {
                key,
                count,
                files: vec![f.clone()],
            }),
        }
    }
    for g in &mut out {
        g.files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The quantization a file name carries (`model-Q4_K_M.gguf` → `Q4_K_M`), in capitals:
/// the last name part (between `-`, `.` and `/`) that is Qn…, IQn…, TQn…, F16, BF16 or
/// F32.
pub fn quant_of(path: &str) -> Option<String> {
    if !is_gguf(path) {
        return None;
    }
    let stem = split_name(path).map_or(&path[..path.len() - 5], |(s, _, _)| s);
    stem.rsplit(['-', '.', '/'])
        .map(str::to_ascii_uppercase)
        .find(|t| {
            let rest = t
                .strip_prefix("IQ")
                .or_else(|| t.strip_prefix("TQ"))
                .or_else(|| t.strip_prefix('Q'));
            rest.is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                || matches!(t.as_str(), "F16" | "BF16" | "F32")
        })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("{reference}: the repository holds no GGUF model")]
    NoGguf { reference: String },
    #[error("{reference}: no {quant} file; the repository has {}", list(.available))]
    NoQuant {
        reference: String,
        quant: String,
        available: Vec<String>,
    },
    #[error("{reference}: no file {file:?}; its GGUF files are {}", list(.available))]
    NoFile {
        reference: String,
        file: String,
        available: Vec<String>,
    },
    #[error("{reference}: {} files match; name one: {}", .files.len(), list(.files))]
    Ambiguous {
        reference: String,
        files: Vec<String>,
    },
    #[error(
        "{reference}: the split model {first} has {count} parts but the repository holds {found}"
    )]
    MissingParts {
        reference: String,
        first: String,
        count: u32,
        found: usize,
    },
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The files `r` names among a repository's `files`: one, or every part of a split model
/// in order. A quantization matches the name part that carries one, in any case; a file
/// path matches exactly or, for a split model, names any of its parts.
pub fn select(r: &HubRef, files: &[RemoteFile]) -> Result<Vec<RemoteFile>, SelectError> {
    let reference = r.to_string();
    let all = groups(files);
    if all.is_empty() {
        return Err(SelectError::NoGguf { reference });
    }
    let quants = || {
        let mut q: Vec<String> = all.iter().filter_map(|g| quant_of(g.first())).collect();
        q.sort();
        q.dedup();
        q
    };
    let by_quant = |quant: &str| -> Vec<&Group> {
        all.iter()
            .filter(|g| quant_of(g.first()).is_some_and(|q| q.eq_ignore_ascii_case(quant)))
            .collect()
    };
    let chosen: &Group = match &r.pick {
        Pick::File(p) => match all.iter().find(|g| g.files.iter().any(|f| &f.path == p)) {
            Some(g) => g,
            None => {
                return Err(SelectError::NoFile {
                    reference,
                    file: p.clone(),
                    available: all.iter().map(|g| g.first().to_string()).collect(),
                })
            }
        },
        Pick::Quant(q) => match by_quant(q).as_slice() {
            [g] => g,
            [] => {
                return Err(SelectError::NoQuant {
                    reference,
                    quant: q.to_ascii_uppercase(),
                    available: quants(),
                })
            }
            many => return Err(ambiguous(reference, many)),
        },
        Pick::Default if all.len() == 1 => &all[0],
        Pick::Default => match by_quant(DEFAULT_QUANT).as_slice() {
            [g] => g,
            [] => {
                return Err(SelectError::NoQuant {
                    reference: format!("{reference} (no quantization given)"),
                    quant: DEFAULT_QUANT.into(),
                    available: quants(),
                })
            }
            many => return Err(ambiguous(reference, many)),
        },
    };
    if let Some(count) = chosen.count {
        let complete = chosen.files.len() == count as usize
            && chosen
                .files
                .iter()
                .enumerate()
                .all(|(i, f)| split_name(&f.path).is_some_and(|(_, no, _)| no == i as u32 + 1));
        if !complete {
            return Err(SelectError::MissingParts {
                reference,
                first: chosen.first().to_string(),
                count,
                found: chosen.files.len(),
            });
        }
    }
    Ok(chosen.files.clone())
}

fn ambiguous(reference: String, many: &[&Group]) -> SelectError {
    SelectError::Ambiguous {
        reference,
        files: many.iter().map(|g| g.first().to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> HubRef {
        HubRef::parse(s).unwrap()
    }

    fn files(names: &[&str]) -> Vec<RemoteFile> {
        names
            .iter()
            .map(|p| RemoteFile {
                path: p.to_string(),
                size: 1,
                sha256: None,
                git_sha1: None,
            })
            .collect()
    }

    fn picked(reference: &str, names: &[&str]) -> Result<Vec<String>, SelectError> {
        select(&r(reference), &files(names)).map(|v| v.into_iter().map(|f| f.path).collect())
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            r("ggml-org/gemma-3-270m-GGUF:q4_k_m"),
            HubRef {
                owner: "ggml-org".into(),
                repo: "gemma-3-270m-GGUF".into(),
                pick: Pick::Quant("q4_k_m".into())
            }
        );
        assert_eq!(r("a/b").pick, Pick::Default);
        assert_eq!(
            r("a/b/Q4_K_M/m-00001-of-00002.gguf").pick,
            Pick::File("Q4_K_M/m-00001-of-00002.gguf".into())
        );
        assert_eq!(r("a/b:Q8_0").to_string(), "a/b:Q8_0");
        for bad in [
            "a",
            "a/",
            "/b",
            "a/b:",
            "a/b/c.gguf:Q4_0",
            "a b/c",
            "a/b/../x.gguf",
            "a/b/x.bin",
            "a/b:Q4/x",
            "a/b/ééé",
            "a/b/é",
            "../b",
        ] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
        let e = HubRef::parse("a/b/x.bin").unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains(".gguf"), "{e}");
    }

    #[test]
    fn paths_are_not_references() {
        assert!(HubRef::looks_like("owner/repo"));
        assert!(HubRef::looks_like("owner/repo:Q4_K_M"));
        assert!(HubRef::looks_like("owner/repo/m.gguf"));
        for path in ["models/m.gguf", "./a/b", "/a/b", "~/a/b", "m.gguf"] {
            assert!(!HubRef::looks_like(path), "{path}");
        }
    }

    #[test]
    fn split_names() {
        assert_eq!(
            split_name("d/m-Q4_K_M-00002-of-00003.gguf"),
            Some(("d/m-Q4_K_M", 2, 3))
        );
        assert_eq!(split_name("m-00004-of-00003.gguf"), None);
        assert_eq!(split_name("m-0001-of-00003.gguf"), None);
        assert_eq!(split_name("m.gguf"), None);
        assert_eq!(split_name("m-éé00001-of-00002.gguf"), None);
        assert_eq!(split_name("m-00001éé-of-00002.gguf"), None);
    }

    #[test]
    fn quants_are_read_from_names() {
        assert_eq!(
            quant_of("gemma-3-270m-Q4_K_M.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(quant_of("m.q8_0.gguf").as_deref(), Some("Q8_0"));
        assert_eq!(
            quant_of("UD-IQ2_XXS/m-UD-IQ2_XXS-00001-of-00002.gguf").as_deref(),
            Some("IQ2_XXS")
        );
        assert_eq!(quant_of("m-bf16.gguf").as_deref(), Some("BF16"));
        assert_eq!(quant_of("model.gguf"), None);
        assert_eq!(quant_of("Q4_0.bin"), None);
    }

    const REPO: [&str; 7] = [
        "README.md",
        "m-Q4_K_M.gguf",
        "m-Q8_0.gguf",
        "mmproj-m-f16.gguf",
        "big/m-Q2_K-00002-of-00002.gguf",
        "big/m-Q2_K-00001-of-00002.gguf",
        "m-Q4_K_S.gguf",
    ];

    #[test]
    fn a_quant_picks_its_file_in_any_case() {
        assert_eq!(picked("o/r:q8_0", &REPO).unwrap(), ["m-Q8_0.gguf"]);
        // Q4_K is not Q4_K_M nor Q4_K_S.
        assert!(matches!(
            picked("o/r:Q4_K", &REPO),
            Err(SelectError::NoQuant { .. })
        ));
        assert_eq!(picked("o/r", &REPO).unwrap(), ["m-Q4_K_M.gguf"]);
        assert_eq!(
            picked("o/r/m-Q4_K_S.gguf", &REPO).unwrap(),
            ["m-Q4_K_S.gguf"]
        );
    }

    #[test]
    fn a_split_model_comes_whole_and_in_order() {
        let all = [
            "big/m-Q2_K-00001-of-00002.gguf",
            "big/m-Q2_K-00002-of-00002.gguf",
        ];
        assert_eq!(picked("o/r:Q2_K", &REPO).unwrap(), all);
        assert_eq!(
            picked("o/r/big/m-Q2_K-00002-of-00002.gguf", &REPO).unwrap(),
            all
        );
        let e = picked("o/r:Q2_K", &REPO[..5]).unwrap_err();
        assert!(
            matches!(
                e,
                SelectError::MissingParts {
                    count: 2,
                    found: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_quant_lists_those_there() {
        let e = picked("o/r:Q9_9", &REPO).unwrap_err();
        assert_eq!(
            e.to_string(),
            "o/r:Q9_9: no Q9_9 file; the repository has Q2_K, Q4_K_M, Q4_K_S, Q8_0"
        );
        let e = picked("o/r", &["a-Q8_0.gguf", "a-Q6_K.gguf"]).unwrap_err();
        assert!(e.to_string().contains("Q6_K, Q8_0"), "{e}");
        assert_eq!(picked("o/r", &["only.gguf"]).unwrap(), ["only.gguf"]);
        assert!(matches!(
            picked("o/r", &["README.md"]),
            Err(SelectError::NoGguf { .. })
        ));
        let e = picked("o/r:Q8_0", &["a-Q8_0.gguf", "b-Q8_0.gguf"]).unwrap_err();
        assert!(matches!(e, SelectError::Ambiguous { .. }), "{e}");
    }
}
