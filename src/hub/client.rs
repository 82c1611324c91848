//! The hub over HTTP (through `ureq`): a repository's file list with each file's sha256,
//! and a file's download into the store: resumed from what an earlier try left, checked
//! against the sha256 before it takes its name.
//!
//! The endpoint is `$HF_ENDPOINT` (default `https://huggingface.co`); a token from
//! `$HF_TOKEN`, else `$HF_HOME/token`, else `~/.cache/huggingface/token`, goes in an
//! `Authorization: Bearer` header to that endpoint only (never to the CDN a download is
//! redirected to) and is never printed: messages name URLs, which never hold it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::Body;

use super::{is_safe_path, HubRef, RemoteFile};
use loupe_gguf::atomic::{check_destination, Kind, Overwrite};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision pulled: the repository's main branch.
const REVISION: &str = "main";

/// What a download reports as it goes, for the front end to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `done` of `total` bytes are in the partial file (`done` counts a resumed start).
    Bytes { done: u64, total: u64 },
    /// Resuming a partial file of `from` bytes.
    Resume { from: u64 },
    /// The partial file cannot be continued (why), so the download starts over.
    Restart { why: String },
}

/// A hub: where it is and how to reach it.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// `$HF_TOKEN`, else the token file of `$HF_HOME`, else of `~/.cache/huggingface`.
fn token_from_env() -> Option<String> {
    let nonempty = |s: String| Some(s.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(t) = std::env::var("HF_TOKEN").ok().and_then(nonempty) {
        return Some(t);
    }
    let home = std::env::var_os("HF_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache/huggingface")))?;
    fs::read_to_string(home.join("token"))
        .ok()
        .and_then(nonempty)
}

impl Hub {
    /// The hub `$HF_ENDPOINT` names, with the token the environment gives.
    pub fn from_env() -> Hub {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Hub::new(&endpoint, token_from_env())
    }

    pub fn new(endpoint: &str, token: Option<String>) -> Hub {
        let config = ureq::Agent::config_builder()
            // Error statuses are answers to read (the hub says why in the body).
            .http_status_as_error(false)
            .max_redirects(10)
            // A download is redirected to a CDN: the token stays with the hub.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("loupe/", env!("CARGO_PKG_VERSION")))
            .build();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn get(&self, url: &str, range_from: Option<u64>) -> Result<Response<Body>> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(n) = range_from {
            req = req.header("Range", format!("bytes={n}-"));
        }
        // ureq's errors name the URL and the cause, never the request's headers.
        req.call()
            .with_context(|| format!("cannot reach the hub at {url}"))
    }

    /// Every file of `r`'s repository (at `main`), with sizes and the sha256 of LFS files:
    /// `GET /api/models/OWNER/REPO/tree/main?recursive=true`, following `Link: rel="next"`
    /// pages.
    pub fn files(&self, r: &HubRef) -> Result<Vec<RemoteFile>> {
        let mut url = format!(
            "{}/api/models/{}/{}/tree/{REVISION}?recursive=true",
            self.endpoint,
            encode(&r.owner),
            encode(&r.repo)
        );
        let mut out = Vec::new();
        for _ in 0..1000 {
            let mut resp = self.get(&url, None)?;
            if resp.status().as_u16() != 200 {
                return Err(status_error(&mut resp, &url, &r.repo_id()));
            }
            let next = next_link(&resp);
            let text = resp
                .body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_string()
                .with_context(|| format!("cannot read the file list from {url}"))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("the file list from {url} is not JSON"))?;
            let Some(entries) = json.as_array() else {
                bail!("the file list from {url} is not a JSON array");
            };
            out.extend(entries.iter().filter_map(remote_file));
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        bail!("the file list of {} has more than 1000 pages", r.repo_id())
    }

    /// `GET /OWNER/REPO/resolve/main/PATH`.
    pub fn file_url(&self, r: &HubRef, path: &str) -> String {
        let path: Vec<String> = path.split('/').map(encode).collect();
        format!(
            "{}/{}/{}/resolve/{REVISION}/{}",
            self.endpoint,
            encode(&r.owner),
            encode(&r.repo),
            path.join("/")
        )
    }

    /// Download `file` of `r` to `dest`: into `dest.part` first (continuing what an earlier
    /// try left there with a `Range` request), then checked against the size and sha256 the
    /// hub lists, and renamed to `dest` only if both match. A partial file that cannot be
    /// continued (the server answers 200 to the range, or 416) is started over; one whose
    /// sha256 is wrong once complete is removed, since continuing it cannot help.
    pub fn download(
        &self,
        r: &HubRef,
        file: &RemoteFile,
        dest: &Path,
        progress: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let url = self.file_url(r, &file.path);
        let part = part_path(dest);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        // Refused before any byte moves if the name is taken by something else.
        check_destination(dest, Kind::Gguf, Overwrite::SameKind)?;
        let io_err = |what: &str| format!("cannot {what} {}", part.display());
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)
            .with_context(|| io_err("open"))?;
        // Two pulls of one file would interleave their bytes: the second waits for none.
        if let Err(e) = out.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => anyhow::anyhow!(
                    "{} is being downloaded by another loupe; wait for it to finish",
                    part.display()
                ),
                std::fs::TryLockError::Error(e) => anyhow::Error::new(e).context(io_err("lock")),
            });
        }
        let mut have = out.metadata().with_context(|| io_err("read"))?.len();
        if have > file.size {
            progress(Event::Restart {
                why: format!(
                    "the partial file is longer than the {} bytes listed",
                    file.size
                ),
            });
            have = 0;
        }
        let mut hash = Sums::new(file.size);
        let mut resp = None;
        if have > 0 && have < file.size {
            let r2 = self.get(&url, Some(have))?;
            match r2.status().as_u16() {
                206 if content_range_start(&r2) == Some(have) => {
                    progress(Event::Resume { from: have });
                    resp = Some(r2);
                }
                206 => {
                    progress(Event::Restart {
                        why: "the server answered the range request with another range".into(),
                    });
                    have = 0;
                }
                200 => {
                    progress(Event::Restart {
                        why: "the server does not resume downloads (it answered 200 to a range request)".into(),
                    });
                    have = 0;
                    resp = Some(r2);
                }
                416 => {
                    progress(Event::Restart {
                        why: "the server refused the range of the partial file (416)".into(),
                    });
                    have = 0;
                }
                _ => {
                    let mut r2 = r2;
                    return Err(status_error(&mut r2, &url, &r.to_string()));
                }
            }
        }
        out.set_len(have).with_context(|| io_err("truncate"))?;
        if have > 0 {
            // The bytes kept count in the sha256 too.
            out.rewind().with_context(|| io_err("read"))?;
            io::copy(&mut (&mut out).take(have), &mut hash).with_context(|| io_err("read"))?;
        }
        out.seek(io::SeekFrom::Start(have))
            .with_context(|| io_err("seek in"))?;
        if have < file.size {
            let mut resp = match resp {
                Some(r) => r,
                None => self.get(&url, None)?,
            };
            if resp.status().as_u16() != 200 && resp.status().as_u16() != 206 {
                return Err(status_error(&mut resp, &url, &r.to_string()));
            }
            let mut body = resp.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut done = have;
            progress(Event::Bytes {
                done,
                total: file.size,
            });
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = out.sync_data();
                        return Err(anyhow::Error::new(e).context(format!(
                            "the download of {url} broke off after {done} of {} bytes; \
                             run the command again to resume it",
                            file.size
                        )));
                    }
                };
                if done + n as u64 > file.size {
                    bail!(
                        "{url} sent more than the {} bytes the hub lists for it",
                        file.size
                    );
                }
                out.write_all(&buf[..n]).with_context(|| io_err("write"))?;
                hash.update(&buf[..n]);
                done += n as u64;
                progress(Event::Bytes {
                    done,
                    total: file.size,
                });
            }
            if done != file.size {
                bail!(
                    "the download of {url} ended after {done} of {} bytes; run the command again to resume it",
                    file.size
                );
            }
        }
        out.sync_all().with_context(|| io_err("sync"))?;
        drop(out);
        let (sha256, blob) = hash.finish();
        // An LFS file is checked by its sha256; a small file kept in git itself has none, and
        // is checked by its git blob id (sha1 of "blob SIZE\0" and the bytes) instead.
        let (what, want, got) = match (&file.sha256, &file.git_sha1) {
            (Some(want), _) => ("sha256", want, sha256),
            (None, Some(want)) => ("git blob id", want, blob),
            (None, None) => bail!(
                "the hub lists neither a sha256 nor a git blob id for {}, so it cannot be checked",
                file.path
            ),
        };
        if !got.eq_ignore_ascii_case(want) {
            let _ = fs::remove_file(&part);
            bail!(
                "{what} mismatch for {}: the hub lists {want}, the download is {got}; \
                 the download was removed",
                file.path
            );
        }
        let (target, _) = check_destination(dest, Kind::Gguf, Overwrite::SameKind)?;
        fs::rename(&part, &target.target).with_context(|| {
            format!(
                "cannot move {} to {}",
                part.display(),
                target.target.display()
            )
        })?;
        Ok(())
    }
}

/// Where a download to `dest` collects its bytes: `dest.part`, beside it. Not one of the
/// atomic writer's temporaries, which a signal or the next write removes: this one is kept
/// so the next pull continues it.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// The sums a download is checked by, fed as the bytes come.
struct Sums {
    sha256: Sha256,
    blob: Sha1,
}

impl Sums {
    fn new(size: u64) -> Sums {
        let mut blob = Sha1::new();
        blob.update(format!("blob {size}\0").as_bytes());
        Sums {
            sha256: Sha256::new(),
            blob,
        }
    }

    fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        self.blob.update(b);
    }

    /// (sha256, git blob id), lowercase hex.
    fn finish(self) -> (String, String) {
        (hex(&self.sha256.finalize()), hex(&self.blob.finalize()))
    }
}

impl Write for Sums {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the file at `path` is `file` as the hub lists it: its size, then its sha256
/// (or, for a file kept in git, its blob id). A file listed with neither is taken on its size.
pub fn is_listed_file(path: &Path, file: &RemoteFile) -> io::Result<bool> {
    if fs::metadata(path)?.len() != file.size {
        return Ok(false);
    }
    let mut sums = Sums::new(file.size);
    io::copy(&mut File::open(path)?, &mut sums)?;
    let (sha256, blob) = sums.finish();
    Ok(match (&file.sha256, &file.git_sha1) {
        (Some(want), _) => sha256.eq_ignore_ascii_case(want),
        (None, Some(want)) => blob.eq_ignore_ascii_case(want),
        (None, None) => true,
    })
}

/// A tree entry that is a file, with its LFS sha256 when it has one. Entries with an unsafe
/// path (`..`, absolute) are dropped: they could not be stored under the repository's folder.
fn remote_file(e: &serde_json::Value) -> Option<RemoteFile> {
    if e.get("type")?.as_str()? != "file" {
        return None;
    }
    let path = e.get("path")?.as_str()?.to_string();
    if !is_safe_path(&path) {
        return None;
    }
    let lfs = e.get("lfs");
    let size = lfs
        .and_then(|l| l.get("size"))
        .or_else(|| e.get("size"))
        .and_then(serde_json::Value::as_u64)?;
    let sha256 = lfs
        .and_then(|l| l.get("oid").or_else(|| l.get("sha256")))
        .and_then(serde_json::Value::as_str)
        .map(|s| s.trim_start_matches("sha256:").to_ascii_lowercase())
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    // Without LFS, the entry's oid is the git blob id of the file itself.
    let git_sha1 = match lfs {
        Some(_) => None,
        None => e
            .get("oid")
            .and_then(serde_json::Value::as_str)
            .map(str::to_ascii_lowercase)
            .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())),
    };
    Some(RemoteFile {
        path,
        size,
        sha256,
        git_sha1,
    })
}

/// `Link: <URL>; rel="next"`.
fn next_link(resp: &Response<Body>) -> Option<String> {
    let link = resp.headers().get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// `Content-Range: bytes START-END/TOTAL` → START.
fn content_range_start(resp: &Response<Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// An error status as a message: the status, the URL, what the hub says (its
/// `X-Error-Message` header or the `error` of a JSON body), and a hint for the usual causes.
fn status_error(resp: &mut Response<Body>, url: &str, what: &str) -> anyhow::Error {
    let status = resp.status();
    let header = resp
        .headers()
        .get("x-error-message")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let said = header.or_else(|| {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|j| j.get("error")?.as_str().map(str::to_string))
            .or_else(|| {
                let t: String = body.trim().chars().take(200).collect();
                (!t.is_empty()).then_some(t)
            })
    });
    let hint = match status.as_u16() {
        401 | 403 => "; a gated or private repository needs a token: set HF_TOKEN",
        404 => "; check the owner and repository names",
        _ => "",
    };
    let said = said.map(|s| format!(" ({s})")).unwrap_or_default();
    anyhow::anyhow!("{what}: the hub answered {status} for {url}{said}{hint}")
}

/// Percent-encode a URL path segment: everything but letters, digits and `-_.~`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_entries_read() {
        let sha = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
        let j: serde_json::Value = serde_json::json!([
            {"type": "directory", "path": "sub", "oid": "x", "size": 0},
            {"type": "file", "path": "README.md", "oid": "abc", "size": 12},
            {"type": "file", "path": "m.gguf", "oid": "abc", "size": 135,
             "lfs": {"oid": sha, "size": 253113024, "pointerSize": 135}},
            {"type": "file", "path": "../evil.gguf", "size": 1, "lfs": {"oid": sha, "size": 1}},
            {"type": "file", "path": "a//EVIL.GGUF", "size": 1, "lfs": {"oid": sha, "size": 1}},
        ]);
        let files: Vec<RemoteFile> = j
            .as_array()
            .unwrap()
            .iter()
            .filter_map(remote_file)
            .collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].sha256, None);
        assert_eq!(files[1].git_sha1, None);
        assert_eq!(files[1].size, 253_113_024);
        assert_eq!(files[1].sha256.as_deref(), Some(sha));
    }

    #[test]
    fn urls_are_built_and_encoded() {
        let hub = Hub::new("http://127.0.0.1:9/", None);
        let r = HubRef::parse("o/r").unwrap();
        assert_eq!(
            hub.file_url(&r, "Q4 K/m.gguf"),
            "http://127.0.0.1:9/o/r/resolve/main/Q4%20K/m.gguf"
        );
        assert_eq!(
            part_path(Path::new("/s/m.gguf")),
            Path::new("/s/m.gguf.part")
        );
    }
}
