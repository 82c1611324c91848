//! `loupe pull` against a fake hub in the test: a local HTTP server speaking the Hugging
//! Face API (the tree listing with LFS sha256s, `resolve` redirected to a "CDN" path with
//! range support) for repositories holding the gemma test model. Each test has its own
//! store (`LOUPE_MODELS`) and hub (`HF_ENDPOINT`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};

use loupe_gguf::{GgufWriter, Metadata, Value};

use loupe::store::GEMMA3_270M;

const REPO: &str = "test/gemma-3-270m-GGUF";
const FILE: &str = "gemma-3-270m-Q4_K_M.gguf";
const TOKEN: &str = "hf_sekret_token_for_the_test";

/// The gemma test model's bytes, read once for every test of this binary.
fn gemma() -> Bytes {
    static BYTES: OnceLock<Bytes> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let p = common::model(&GEMMA3_270M);
            Bytes::from(std::fs::read(p).expect("read the gemma test model"))
        })
        .clone()
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ranges {
    /// 206 with the bytes asked for.
    Honour,
    /// 200 with the whole file, as a server without range support.
    Ignore,
    /// 416 to any range.
    Refuse,
}

struct FakeFile {
    data: Bytes,
    /// What the tree lists as its sha256 (the LFS oid); `None`: not an LFS file.
    listed_sha: Option<String>,
    /// What the tree lists as the file's git oid (for a file kept in git, its blob id).
    oid: String,
}

/// A file kept in git itself, listed with `oid` (its git blob id, unless a test lies).
fn plain(data: Bytes, oid: Option<String>) -> FakeFile {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(&data);
    let blob: String = h.finalize().iter().map(|x| format!("{x:02x}")).collect();
    FakeFile {
        data,
        listed_sha: None,
        oid: oid.unwrap_or(blob),
    }
}

/// A file in LFS, listed with `sha` as its sha256.
fn lfs(data: Bytes, sha: String) -> FakeFile {
    FakeFile {
        data,
        listed_sha: Some(sha),
        oid: "7d6b1f0e3c2a9b8d5e4f3a2b1c0d9e8f7a6b5c4d".into(),
    }
}

#[derive(Default)]
struct HubState {
    repos: HashMap<String, Vec<(String, FakeFile)>>,
    /// The next download breaks off after this many bytes of the body.
    cut_after: Option<u64>,
    ranges: Option<Ranges>,
    /// "METHOD PATH range=... auth=yes|no" for every request.
    log: Vec<String>,
}

type Shared = Arc<Mutex<HubState>>;

struct FakeHub {
    url: String,
    state: Shared,
}

impl FakeHub {
    fn start(state: HubState) -> FakeHub {
        let state: Shared = Arc::new(Mutex::new(state));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new().fallback(handle).with_state(st);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        FakeHub {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    fn set(&self, f: impl FnOnce(&mut HubState)) {
        f(&mut self.state.lock().unwrap());
    }
}

/// A hub holding `REPO` with the gemma model (its true sha256) and a README, plus
/// `test/bad-GGUF`, whose listing gives the model a wrong sha256.
fn gemma_hub() -> FakeHub {
    let data = gemma();
    let mut repos = HashMap::new();
    repos.insert(
        REPO.to_string(),
        vec![
            (
                "README.md".to_string(),
                plain(Bytes::from_static(b"# gemma\n"), None),
            ),
            (
                FILE.to_string(),
                lfs(data.clone(), GEMMA3_270M.sha256.to_string()),
            ),
        ],
    );
    repos.insert(
        "test/bad-GGUF".to_string(),
        vec![(FILE.to_string(), lfs(data, "0".repeat(64)))],
    );
    FakeHub::start(HubState {
        repos,
        ..HubState::default()
    })
}

async fn handle(State(st): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let range = header(&headers, "range");
    let auth = header(&headers, "authorization");
    let mut s = st.lock().unwrap();
    s.log.push(format!(
        "GET {path} range={} auth={}",
        range.as_deref().unwrap_or("-"),
        auth.as_deref()
            .map_or("no", |a| if a == format!("Bearer {TOKEN}") {
                "yes"
            } else {
                "wrong"
            })
    ));
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    match parts.as_slice() {
        // GET /api/models/OWNER/REPO/tree/main
        ["api", "models", owner, rest @ ..] => {
            let repo_and_tail = rest.join("/");
            let Some(repo) = repo_and_tail.strip_suffix("/tree/main") else {
                return not_found("no such API");
            };
            let id = format!("{owner}/{repo}");
            let Some(files) = s.repos.get(&id) else {
                return not_found(&format!("Repository {id} not found"));
            };
            let tree: Vec<serde_json::Value> = files
                .iter()
                .map(|(p, f)| {
                    let mut e = serde_json::json!({
                        "type": "file", "path": p, "size": f.data.len(), "oid": f.oid,
                    });
                    if let Some(sha) = &f.listed_sha {
                        e["size"] = 135.into(); // the pointer's size, as the hub lists it
                        e["lfs"] = serde_json::json!({
                            "oid": sha, "size": f.data.len(), "pointerSize": 135
                        });
                    }
                    e
                })
                .collect();
            json(StatusCode::OK, &serde_json::Value::from(tree))
        }
        // GET /OWNER/REPO/resolve/main/PATH → redirect to the CDN
        [owner, repo, "resolve", "main", file] => {
            let id = format!("{owner}/{repo}");
            if !s
                .repos
                .get(&id)
                .is_some_and(|fs| fs.iter().any(|(p, _)| p == file))
            {
                return not_found(&format!("Entry not found: {file}"));
            }
            // To another host name, as the hub sends downloads to its CDN.
            let port = header(&headers, "host")
                .and_then(|h| h.rsplit(':').next().map(str::to_string))
                .unwrap_or_default();
            Response::builder()
                .status(StatusCode::FOUND)
                .header(
                    "location",
                    format!("http://localhost:{port}/cdn/{owner}/{repo}/{file}"),
                )
                .body(Body::empty())
                .unwrap()
        }
        ["cdn", owner, repo, rest @ ..] => {
            let id = format!("{owner}/{repo}");
            let file = &rest.join("/");
            let Some(data) = s
                .repos
                .get(&id)
                .and_then(|fs| fs.iter().find(|(p, _)| p == file))
                .map(|(_, f)| f.data.clone())
            else {
                return not_found("no such object");
            };
            let len = data.len() as u64;
            let from = range.as_deref().and_then(|r| {
                r.strip_prefix("bytes=")?
                    .strip_suffix('-')?
                    .parse::<u64>()
                    .ok()
            });
            let mode = s.ranges.unwrap_or(Ranges::Honour);
            let (status, start) = match (from, mode) {
                (Some(_), Ranges::Refuse) => {
                    return Response::builder()
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .header("content-range", format!("bytes */{len}"))
                        .body(Body::empty())
                        .unwrap()
                }
                (Some(n), Ranges::Honour) if n < len => (StatusCode::PARTIAL_CONTENT, n),
                (Some(_), Ranges::Honour) => {
                    return StatusCode::RANGE_NOT_SATISFIABLE.into_response()
                }
                _ => (StatusCode::OK, 0),
            };
            let body = data.slice(start as usize..);
            let mut resp = Response::builder()
                .status(status)
                .header("content-length", len - start)
                .header("etag", format!("\"{}\"", sha256_hex(&[])));
            if status == StatusCode::PARTIAL_CONTENT {
                resp = resp.header("content-range", format!("bytes {start}-{}/{len}", len - 1));
            }
            let body = match s.cut_after.take() {
                // The connection drops after `cut` bytes: the body stream fails.
                Some(cut) => {
                    let sent = body.slice(..(cut as usize).min(body.len()));
                    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                        Ok(sent),
                        Err(std::io::Error::other("the test cuts the connection")),
                    ];
                    Body::from_stream(futures_util::stream::iter(chunks))
                }
                None => Body::from(body),
            };
            resp.body(body).unwrap()
        }
        _ => not_found("no such page"),
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn not_found(msg: &str) -> Response {
    let mut r = json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": msg }));
    r.headers_mut()
        .insert("x-error-message", msg.parse().unwrap());
    r
}

/// `loupe ARGS` with the store in `store` and the hub at `hub`.
fn loupe(store: &Path, hub: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(args)
        .env("LOUPE_MODELS", store)
        .env("HF_ENDPOINT", hub)
        .env("HF_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("run loupe")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs, says nothing of the token, and succeeds; returns (stdout, stderr).
fn ok(o: Output) -> (String, String) {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "the token was printed"
    );
    assert!(o.status.success(), "loupe failed:\n{err}");
    (out, err)
}

/// Fails with a message (no panic, no token); returns stderr.
fn fails(o: Output) -> String {
    let err = text(&o.stderr);
    assert!(
        !text(&o.stdout).contains(TOKEN) && !err.contains(TOKEN),
        "the token was printed"
    );
    assert!(!o.status.success(), "loupe should have failed:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn stored(store: &Path, repo: &str, file: &str) -> PathBuf {
    store.join("hub").join(repo).join(file)
}

fn part(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", p.display()))
}

fn file_sha(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

#[test]
fn pull_list_run_and_rm() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    // Any case of the quantization names the file.
    let (out, err) = ok(loupe(s, &hub.url, &["pull", &format!("{REPO}:q4_k_m")]));
    let name = format!("{REPO}/{FILE}");
    assert_eq!(out.trim(), name);
    assert!(err.contains("pulling gemma-3-270m-Q4_K_M.gguf"), "{err}");
    let dest = stored(s, REPO, FILE);
    assert_eq!(file_sha(&dest), GEMMA3_270M.sha256);
    assert!(!part(&dest).exists());
    // The token went to the hub, not to the CDN the download was redirected to.
    let log = hub.log();
    assert!(
        log.iter()
            .any(|l| l.contains("/tree/main") && l.ends_with("auth=yes")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("/resolve/main/") && l.ends_with("auth=yes")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("/cdn/") && l.ends_with("auth=no")),
        "{log:?}"
    );

    // `loupe list` reads the header: name, size, type, architecture, parameters.
    let (out, _) = ok(loupe(s, &hub.url, &["list", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j[0]["name"], name.as_str());
    assert_eq!(j[0]["size"], GEMMA3_270M.size);
    assert_eq!(j[0]["file_type"], "Q4_K_M");
    assert_eq!(j[0]["architecture"], "gemma3");
    assert!(j[0]["parameters"].as_u64().unwrap() > 200_000_000);
    let (out, _) = ok(loupe(s, &hub.url, &["list"]));
    assert!(
        out.contains(&name) && out.contains("gemma3") && out.contains("Q4_K_M"),
        "{out}"
    );

    // A pulled model runs by reference, by store name and by path, with no hub at all.
    let dead = "http://127.0.0.1:9";
    let run = |model: &str| {
        let (out, _) = ok(loupe(
            s,
            dead,
            &[
                "run",
                model,
                "-p",
                "The sky is",
                "-n",
                "3",
                "--temp",
                "0",
                "--json",
            ],
        ));
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        j["tokens"].clone()
    };
    let by_ref = run(&format!("{REPO}:Q4_K_M"));
    assert_eq!(by_ref, run(&name));
    assert_eq!(by_ref, run(dest.to_str().unwrap()));
    // Pulling again fetches nothing.
    let n = hub.log().len();
    let (_, err) = ok(loupe(s, &hub.url, &["pull", &format!("{REPO}:Q4_K_M")]));
    assert!(err.contains("already in the store"), "{err}");
    assert!(hub.log()[n..].iter().all(|l| !l.contains("/cdn/")));

    let err = fails(loupe(s, &hub.url, &["rm", "no/such/model.gguf"]));
    assert!(
        err.contains("no model named \"no/such/model.gguf\""),
        "{err}"
    );
    let (out, _) = ok(loupe(s, &hub.url, &["rm", &name]));
    assert_eq!(out.trim(), format!("removed {name} (241.4 MiB freed)"));
    assert!(!dest.exists() && !s.join("hub").join(REPO).exists());
    let (out, _) = ok(loupe(s, &hub.url, &["list"]));
    assert!(out.starts_with("no models"), "{out}");
}

#[test]
fn a_model_named_by_reference_is_pulled_first() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let o = loupe(store.path(), &hub.url, &["inspect", "--json", REPO]);
    let (out, err) = ok(o);
    assert!(
        err.contains(&format!(
            "{REPO} is not in the store; pulling it from {}",
            hub.url
        )),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["architecture"], "gemma3");
}

#[test]
fn an_interrupted_pull_resumes_where_it_stopped() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let cut = 100_000_000u64;
    hub.set(|h| h.cut_after = Some(cut));
    let err = fails(loupe(s, &hub.url, &["pull", REPO]));
    assert!(
        err.contains("broke off after") && err.contains("run the command again to resume"),
        "{err}"
    );
    let dest = stored(s, REPO, FILE);
    assert!(
        !dest.exists(),
        "no file under the final name before it is checked"
    );
    let kept = std::fs::metadata(part(&dest)).unwrap().len();
    assert!(kept > 0 && kept <= cut, "{kept}");
    // A partial download is not a model of the store.
    let (out, _) = ok(loupe(s, &hub.url, &["list"]));
    assert!(out.starts_with("no models"), "{out}");

    let (_, err) = ok(loupe(s, &hub.url, &["pull", REPO]));
    assert!(err.contains("resuming at"), "{err}");
    let log = hub.log();
    let want = format!("range=bytes={kept}-");
    assert!(
        log.iter().any(|l| l.contains("/cdn/") && l.contains(&want)),
        "{log:?}"
    );
    assert_eq!(file_sha(&dest), GEMMA3_270M.sha256);
    assert!(!part(&dest).exists());
}

#[test]
fn a_partial_file_the_server_will_not_continue_is_started_over() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let dest = stored(s, REPO, FILE);
    for (mode, said) in [(Ranges::Ignore, "answered 200"), (Ranges::Refuse, "(416)")] {
        hub.set(|h| h.ranges = Some(mode));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // Wrong bytes: only a fresh start gives the right sha256.
        std::fs::write(part(&dest), vec![7u8; 4096]).unwrap();
        let (_, err) = ok(loupe(s, &hub.url, &["pull", &format!("{REPO}/{FILE}")]));
        assert!(
            err.contains("starting over") && err.contains(said),
            "{mode:?}: {err}"
        );
        assert_eq!(file_sha(&dest), GEMMA3_270M.sha256);
        std::fs::remove_file(&dest).unwrap();
    }
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_is_stored() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let err = fails(loupe(s, &hub.url, &["pull", "test/bad-GGUF:Q4_K_M"]));
    assert!(
        err.contains("sha256 mismatch")
            && err.contains(&"0".repeat(64))
            && err.contains(GEMMA3_270M.sha256),
        "{err}"
    );
    let dest = stored(s, "test/bad-GGUF", FILE);
    assert!(!dest.exists() && !part(&dest).exists());
}

#[test]
fn a_missing_quant_or_repository_is_named() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let err = fails(loupe(s, &hub.url, &["pull", &format!("{REPO}:Q9_9")]));
    assert!(
        err.contains("no Q9_9 file; the repository has Q4_K_M"),
        "{err}"
    );
    let err = fails(loupe(s, &hub.url, &["pull", "test/nothing-here"]));
    assert!(
        err.contains("404") && err.contains("Repository test/nothing-here not found"),
        "{err}"
    );
    let err = fails(loupe(s, &hub.url, &["pull", &format!("{REPO}/other.gguf")]));
    assert!(err.contains("no file \"other.gguf\""), "{err}");
    let err = fails(loupe(s, "http://127.0.0.1:9", &["pull", REPO]));
    assert!(
        err.contains("cannot reach the hub at http://127.0.0.1:9/api/models/"),
        "{err}"
    );
    let err = fails(loupe(s, &hub.url, &["run", "no-such-file.gguf", "-p", "x"]));
    assert!(err.contains("no-such-file.gguf: No such file"), "{err}");
    assert!(hub.log().iter().all(|l| !l.contains("/cdn/")));
}

#[test]
fn a_split_model_is_pulled_whole_and_runs_as_the_single_file() {
    // The gemma model in 3 parts, as gguf-split writes them.
    let work = tempfile::tempdir().unwrap();
    let single = common::model(&GEMMA3_270M);
    let src = loupe_gguf::GgufFile::open(&single).unwrap();
    let paths =
        loupe_gguf::split::write_split(&src, 3, &work.path().join("gemma-3-270m-Q4_K_M")).unwrap();
    drop(src);
    let files: Vec<(String, FakeFile)> = paths
        .iter()
        .map(|p| {
            let data = Bytes::from(std::fs::read(p).unwrap());
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let sha = sha256_hex(&data);
            (format!("Q4_K_M/{name}"), lfs(data, sha))
        })
        .collect();
    let mut repos = HashMap::new();
    repos.insert("test/split-GGUF".to_string(), files);
    let hub = FakeHub::start(HubState {
        repos,
        ..HubState::default()
    });
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let (out, err) = ok(loupe(s, &hub.url, &["pull", "test/split-GGUF:Q4_K_M"]));
    let name = "test/split-GGUF/Q4_K_M/gemma-3-270m-Q4_K_M-00001-of-00003.gguf";
    assert_eq!(out.trim(), name);
    assert!(err.contains("(part 3 of 3)"), "{err}");
    for p in &paths {
        let got = stored(
            s,
            "test/split-GGUF/Q4_K_M",
            p.file_name().unwrap().to_str().unwrap(),
        );
        assert_eq!(file_sha(&got), file_sha(p));
    }

    // One store entry for the three parts.
    let (out, _) = ok(loupe(s, &hub.url, &["list", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j[0]["name"], name);
    assert_eq!(j[0]["parts"], 3);
    assert_eq!(j[0]["architecture"], "gemma3");

    // The same greedy tokens as the single file.
    let run = |model: &str| {
        let args = [
            "run",
            model,
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "--temp",
            "0",
            "--json",
        ];
        let (out, _) = ok(loupe(s, "http://127.0.0.1:9", &args));
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        (j["tokens"].clone(), j["text"].clone())
    };
    // inspect sees one model in three files; a later part alone is refused, naming it.
    let (out, _) = ok(loupe(s, "http://127.0.0.1:9", &["inspect", "--json", name]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["parts"], 3);
    assert_eq!(j["tensor_count"], 236);
    assert_eq!(j["file_size"], total_size(&paths));
    let second = stored(
        s,
        "test/split-GGUF/Q4_K_M",
        "gemma-3-270m-Q4_K_M-00002-of-00003.gguf",
    );
    let err = fails(loupe(
        s,
        "http://127.0.0.1:9",
        &["run", second.to_str().unwrap(), "-p", "x"],
    ));
    assert!(
        err.contains("gemma-3-270m-Q4_K_M-00002-of-00003.gguf: split.no: this is part 2 of 3"),
        "{err}"
    );
    let split = run("test/split-GGUF:Q4_K_M");
    assert_eq!(split.0.as_array().unwrap().len(), 8);
    assert_eq!(split, run(&single));

    let (out, _) = ok(loupe(s, &hub.url, &["rm", name]));
    assert!(out.starts_with(&format!("removed {name}")), "{out}");
    assert!(!s.join("hub/test").exists(), "every part and folder goes");
}

#[test]
fn a_small_file_kept_in_git_is_checked_by_its_blob_id() {
    // A GGUF too small for LFS: the hub lists no sha256, only its git blob id.
    let mut md = Metadata::default();
    md.push("general.architecture", Value::String("tiny".into()));
    let tiny = Bytes::from(GgufWriter::new(md).to_bytes().unwrap());
    let mut repos = HashMap::new();
    repos.insert(
        "test/tiny".to_string(),
        vec![("tiny.gguf".to_string(), plain(tiny.clone(), None))],
    );
    let wrong = "0123456789abcdef0123456789abcdef01234567".to_string();
    repos.insert(
        "test/tiny-bad".to_string(),
        vec![("tiny.gguf".to_string(), plain(tiny, Some(wrong.clone())))],
    );
    let hub = FakeHub::start(HubState {
        repos,
        ..HubState::default()
    });
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let (out, _) = ok(loupe(s, &hub.url, &["pull", "test/tiny"]));
    assert_eq!(out.trim(), "test/tiny/tiny.gguf");
    let (_, err) = ok(loupe(s, &hub.url, &["pull", "test/tiny"]));
    assert!(err.contains("already in the store"), "{err}");
    // A stored file that is not the listed one (same size, other bytes) is fetched again.
    let dest = stored(s, "test/tiny", "tiny.gguf");
    let mut bytes = std::fs::read(&dest).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&dest, &bytes).unwrap();
    let (_, err) = ok(loupe(s, &hub.url, &["pull", "test/tiny"]));
    assert!(
        err.contains("differs from the hub's file; fetching it again"),
        "{err}"
    );
    assert_ne!(std::fs::read(&dest).unwrap(), bytes);
    let err = fails(loupe(s, &hub.url, &["pull", "test/tiny-bad"]));
    assert!(
        err.contains("git blob id mismatch for tiny.gguf") && err.contains(&wrong),
        "{err}"
    );
    assert!(!stored(s, "test/tiny-bad", "tiny.gguf").exists());
}

fn total_size(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn the_progress_line_shows_on_a_terminal_only() {
    let hub = gemma_hub();
    let store = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe"));
    cmd.args(["pull", REPO])
        .env("LOUPE_MODELS", store.path())
        .env("HF_ENDPOINT", &hub.url)
        .env_remove("HF_TOKEN");
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).expect("spawn loupe pull");
    // The last update: every byte, a speed and no time left.
    p.exp_string("241.4 MiB / 241.4 MiB").unwrap();
    p.exp_string("/s  ETA 0s").unwrap();
    p.exp_eof().unwrap();
    // Off a terminal (every other test) the line is not drawn.
    std::fs::remove_file(stored(store.path(), REPO, FILE)).unwrap();
    let (_, err) = ok(loupe(store.path(), &hub.url, &["pull", REPO]));
    assert!(!err.contains("MiB /") && !err.contains("ETA"), "{err}");
}
