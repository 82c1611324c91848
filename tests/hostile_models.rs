//! Hostile model files: a corpus of tiny synthetic models whose metadata parses but
//! disagrees with itself or with the tensors (a rotation of 0, a block count lowered or
//! raised to 2^62, a missing or misshapen tensor, a vocabulary that disagrees with the
//! embedding, a NaN epsilon...) or whose weights are NaN, each run through every command
//! that opens a model, as a user would run it. The commands that run or quantize a model
//! refuse, naming the key or tensor; `inspect`, which describes a file, succeeds and says
//! what is wrong; `tokenize`, which reads only the vocabulary, may succeed; none may panic,
//! abort or hang. A model with NaN weights fails saying its logits are not finite, and its
//! perplexity is NaN, not the vocabulary size. Then the flags: a context too large for the
//! memory, more threads than CPUs, a text longer than `next`'s context, a saved chat's
//! n_predict out of range.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loupe::store::{GEMMA3_270M, QWEN25_CODER_05B};
use loupe::synth::{write_shape, Shape, VocabSource, WeightTypes};
use loupe_engine::generate::check_finite;
use loupe_engine::model::config::Arch;
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Logits, Model, RunOptions};
use loupe_engine::session::Session;
use loupe_gguf::atomic::Overwrite;
use loupe_gguf::{Array, GgufFile, GgufWriter, Metadata, TensorToWrite, Value};
use loupe_quant::GgmlType;

/// What a command did.
struct Outcome {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl Outcome {
    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The failures no input may cause: a panic, a signal (abort, OOM kill), a hang.
    fn misbehaved(&self) -> Option<String> {
        let Some(status) = self.status else {
            return Some(format!("did not finish in {TIMEOUT:?}"));
        };
        if status.code().is_none() {
            return Some(format!("killed by a signal ({status})"));
        }
        for text in ["panicked", "RUST_BACKTRACE"] {
            if self.stderr.contains(text) || self.stdout.contains(text) {
                return Some(format!("printed {text:?}"));
            }
        }
        None
    }

    fn describe(&self) -> String {
        format!(
            "status {:?} in {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.status.map(|s| s.to_string()),
            self.secs,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

fn tail(s: &str) -> &str {
    let at = s.len().saturating_sub(1500);
    let at = (at..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[at..]
}

/// Longest any one command may take (on a busy two-core machine each takes well under a
/// second on these models).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Run the built `loupe` with `args` and `stdin`, killed after [`TIMEOUT`].
fn loupe(args: &[&str], stdin: &str) -> Outcome {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loupe");
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for loupe") {
            break Some(s);
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Outcome {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        secs: t0.elapsed().as_secs_f64(),
    }
}

fn donor() -> GgufFile {
    let p = QWEN25_CODER_05B.path();
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set LOUPE_MODELS)",
        p.display()
    );
    GgufFile::open(p).unwrap()
}

/// Width of the tiny model.
const DIM: usize = 256;

/// A llama-shaped model small enough to write dozens of: 2 layers of width 256, 4 query
/// and 2 key/value heads of 64, the donor's first 512 tokens, Q4_K matrices (a K-quant, as
/// in the real models: its integer kernels are where a NaN used to turn into a number).
fn tiny_shape() -> Shape {
    Shape {
        name: "hostile",
        arch: Arch::Llama,
        dim: DIM,
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        head_dim: 64,
        hidden_dim: 512,
        vocab: Some(512),
        n_ctx_train: 256,
        rope_base: 10000.0,
        norm_eps: 1e-5,
        qkv_bias: false,
        untied_output: true,
        rope_freqs: false,
    }
}

/// A copy of a model file's metadata and tensors to change before writing it again.
struct Edit<'a> {
    md: Metadata,
    tensors: Vec<TensorToWrite<'a>>,
}

impl<'a> Edit<'a> {
    fn of(file: &'a GgufFile) -> Edit<'a> {
        Edit {
            md: file.metadata().clone(),
            tensors: file
                .tensors()
                .iter()
                .map(|t| TensorToWrite {
                    name: t.name.clone(),
                    ty: t.ty,
                    dims: t.dims.clone(),
                    data: Cow::Borrowed(file.tensor_data(t)),
                })
                .collect(),
        }
    }

    fn set(&mut self, key: &str, v: Value) {
        self.md.push(format!("llama.{key}"), v);
    }

    fn drop_tensor(&mut self, name: &str) {
        let n = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        assert_eq!(self.tensors.len(), n - 1, "no tensor {name}");
    }

    fn tensor(&mut self, name: &str) -> &mut TensorToWrite<'a> {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    /// Keep the first `n` tokens of the vocabulary, or pad it to `n` with unused ones (the
    /// scores and types follow, so only the length disagrees with the model).
    fn vocab_len(&mut self, n: usize) {
        let get = |md: &Metadata, k: &str| md.get(k).cloned().unwrap();
        let Value::Array(Array::String(mut tokens)) = get(&self.md, "tokenizer.ggml.tokens") else {
            panic!("tokens");
        };
        let have = tokens.len();
        tokens.truncate(n);
        tokens.extend((have..n).map(|i| format!("[PAD{i}]")));
        self.md
            .push("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
        if let Value::Array(Array::I32(mut types)) = get(&self.md, "tokenizer.ggml.token_type") {
            types.resize(n, 5);
            self.md
                .push("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        }
        let merges = get(&self.md, "tokenizer.ggml.merges");
        let Value::Array(Array::String(merges)) = merges else {
            panic!("merges");
        };
        let kept: std::collections::HashSet<String> = match self.md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(Array::String(t))) => t.iter().cloned().collect(),
            _ => unreachable!(),
        };
        let merges: Vec<String> = merges
            .into_iter()
            .filter(|m| {
                m.split_once(' ').is_some_and(|(l, r)| {
                    kept.contains(l) && kept.contains(r) && kept.contains(&format!("{l}{r}"))
                })
            })
            .collect();
        self.md
            .push("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    }

    fn write(self, path: &Path) {
        let mut w = GgufWriter::new(self.md);
        for t in self.tensors {
            w.add_tensor(t);
        }
        w.write(path).unwrap();
    }
}

/// f32 values as the bytes of an F32 tensor.
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One hostile file: how it is made from the good one, and the text (a key, a tensor, a
/// value) every refusal must contain.
struct Case {
    name: &'static str,
    edit: fn(&mut Edit),
    names: &'static str,
    /// The file is consistent but its weights are NaN: it loads, and running it must say
    /// the logits are not finite.
    nan_weights: bool,
}

const fn case(name: &'static str, edit: fn(&mut Edit), names: &'static str) -> Case {
    Case {
        name,
        edit,
        names,
        nan_weights: false,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "rotation 0",
            |e| e.set("rope.dimension_count", Value::U32(0)),
            "rope.dimension_count",
        ),
        case(
            "rotation odd",
            |e| e.set("rope.dimension_count", Value::U32(63)),
            "rope.dimension_count",
        ),
        case(
            "rotation above the head size",
            |e| e.set("rope.dimension_count", Value::U32(128)),
            "rope.dimension_count",
        ),
        case(
            "query heads not a multiple of the kv heads",
            |e| e.set("attention.head_count_kv", Value::U32(3)),
            "head_count_kv",
        ),
        case(
            "block count lowered by one",
            |e| e.set("block_count", Value::U32(1)),
            "blk.1.",
        ),
        case(
            "block count 2^32-1",
            |e| e.set("block_count", Value::U32(u32::MAX)),
            "block_count",
        ),
        case(
            "block count 2^62",
            |e| e.set("block_count", Value::U64(1 << 62)),
            "block_count",
        ),
        case(
            "a layer tensor missing",
            |e| e.drop_tensor("blk.1.ffn_up.weight"),
            "blk.1.ffn_up.weight",
        ),
        case(
            "a tensor of the wrong shape",
            |e| {
                // attn_k of the width of attn_q: the bytes are attn_q's.
                let q = e.tensor("blk.0.attn_q.weight").clone();
                let k = e.tensor("blk.0.attn_k.weight");
                k.dims = q.dims;
                k.data = q.data;
            },
            "blk.0.attn_k.weight",
        ),
        case(
            "vocabulary shorter than the embedding",
            |e| e.vocab_len(500),
            "tokenizer.ggml.tokens",
        ),
        case(
            "vocabulary longer than the embedding",
            |e| e.vocab_len(600),
            "tokenizer.ggml.tokens",
        ),
        case(
            "vocabulary shorter, no vocab_size",
            |e| {
                e.md.remove("llama.vocab_size");
                e.vocab_len(500);
            },
            "token_embd.weight",
        ),
        case(
            "vocab_size disagreeing",
            |e| e.set("vocab_size", Value::U32(400)),
            "vocab_size",
        ),
        case(
            "embedding length disagreeing",
            |e| e.set("embedding_length", Value::U32(96)),
            "embedding_length",
        ),
        case(
            "feed-forward length disagreeing",
            |e| e.set("feed_forward_length", Value::U32(96)),
            "feed_forward_length",
        ),
        case(
            "norm epsilon NaN",
            |e| e.set("attention.layer_norm_rms_epsilon", Value::F32(f32::NAN)),
            "layer_norm_rms_epsilon",
        ),
        case(
            "norm epsilon 0",
            |e| e.set("attention.layer_norm_rms_epsilon", Value::F32(0.0)),
            "layer_norm_rms_epsilon",
        ),
        case(
            "norm epsilon negative",
            |e| e.set("attention.layer_norm_rms_epsilon", Value::F32(-1e-5)),
            "layer_norm_rms_epsilon",
        ),
        case(
            "rope base NaN",
            |e| e.set("rope.freq_base", Value::F32(f32::NAN)),
            "rope.freq_base",
        ),
        case(
            "rope base 0",
            |e| e.set("rope.freq_base", Value::F32(0.0)),
            "rope.freq_base",
        ),
        case(
            "context length 0",
            |e| e.set("context_length", Value::U32(0)),
            "context_length",
        ),
        case(
            "head count 0",
            |e| e.set("attention.head_count", Value::U32(0)),
            "head_count",
        ),
        case(
            "head count 2^40",
            |e| e.set("attention.head_count", Value::U64(1 << 40)),
            "head_count",
        ),
        Case {
            name: "NaN weights in a norm tensor",
            edit: |e| {
                let t = e.tensor("blk.0.attn_norm.weight");
                assert_eq!(t.ty, GgmlType::F32);
                t.data = Cow::Owned(f32_bytes(&[f32::NAN; DIM]));
            },
            names: "not finite",
            nan_weights: true,
        },
        Case {
            name: "NaN weights in the output norm",
            edit: |e| {
                let t = e.tensor("output_norm.weight");
                t.data = Cow::Owned(f32_bytes(&[f32::NAN; DIM]));
            },
            names: "not finite",
            nan_weights: true,
        },
    ]
}

/// A text long enough for a chunk of 64 tokens twice over.
const TEXT: &str = "The quick brown fox jumps over the lazy dog while the cat watches from \
    the window, counting the leaves that fall in the garden one by one until evening comes \
    and the lamps are lit along the street where children play and dogs bark at the moon. ";

/// How each command should answer a hostile file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// Refuse, naming what is wrong.
    Refuse,
    /// Succeed: it describes the file, or does not depend on the values in question.
    Succeed,
    /// Either, cleanly: the vocabulary alone may or may not make a tokenizer.
    Either,
}

fn want(cmd: &str, case: &Case) -> Want {
    match (cmd, case.nan_weights) {
        ("inspect", _) => Want::Succeed,
        ("tokenize", false) => Want::Either,
        // NaN weights are still a model: its speed does not depend on the values, and
        // quantizing keeps the NaN where it is; tokenizing never reads a weight.
        ("tokenize" | "bench" | "quantize", true) => Want::Succeed,
        _ => Want::Refuse,
    }
}

#[test]
fn every_command_refuses_an_inconsistent_model_by_name() {
    let donor = donor();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write_shape(
        &tiny_shape(),
        WeightTypes::Pure(GgmlType::Q4_K),
        7,
        VocabSource::Donor(&donor),
        &good,
    )
    .unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, TEXT.repeat(4)).unwrap();
    let good_s = good.to_str().unwrap();
    let text_s = text.to_str().unwrap();

    // The good model passes every command (so each refusal below is the file's doing).
    let mut failures = Vec::new();
    let commands = |p: &str, out: &str| -> Vec<(&'static str, Vec<String>, &'static str)> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        vec![
            (
                "run",
                v(&[
                    "run",
                    p,
                    "-p",
                    "hello world",
                    "--ctx",
                    "64",
                    "-n",
                    "2",
                    "-t",
                    "2",
                ]),
                "",
            ),
            (
                "next",
                v(&["next", p, "hello world", "--ctx", "64", "-t", "2"]),
                "",
            ),
            (
                "chat",
                v(&[
                    "chat",
                    p,
                    "--ctx",
                    "64",
                    "-n",
                    "2",
                    "-t",
                    "2",
                    "--template",
                    "chatml",
                ]),
                "hello\n",
            ),
            (
                "bench",
                v(&["bench", p, "-p", "8", "-n", "2", "--reps", "1", "-t", "2"]),
                "",
            ),
            (
                "perplexity",
                v(&[
                    "perplexity",
                    p,
                    text_s,
                    "--ctx",
                    "64",
                    "--chunks",
                    "1",
                    "-t",
                    "2",
                ]),
                "",
            ),
            ("tokenize", v(&["tokenize", p, "hello world"]), ""),
            ("inspect", v(&["inspect", p]), ""),
            (
                "compare",
                v(&[
                    "compare",
                    good_s,
                    p,
                    "--text",
                    text_s,
                    "--ctx",
                    "64",
                    "--chunks",
                    "1",
                    "--no-speed",
                    "-t",
                    "2",
                ]),
                "",
            ),
            (
                "quantize",
                v(&["quantize", p, out, "Q4_0", "--allow-requantize", "-t", "2"]),
                "",
            ),
        ]
    };
    let out = dir.path().join("out.gguf");
    let out_s = out.to_str().unwrap();
    for (cmd, args, stdin) in commands(good_s, out_s) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = loupe(&args, stdin);
        if !o.success() || o.misbehaved().is_some() {
            failures.push(format!("good model, {cmd}: {}", o.describe()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    let good_file = GgufFile::open(&good).unwrap();
    let mut refused = 0;
    for (i, case) in cases().iter().enumerate() {
        let path = dir.path().join(format!("case{i}.gguf"));
        let mut e = Edit::of(&good_file);
        (case.edit)(&mut e);
        e.write(&path);
        let p = path.to_str().unwrap();
        for (cmd, args, stdin) in commands(p, out_s) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = loupe(&args, stdin);
            let what = format!("{} ({}), {cmd}", case.name, case.names);
            if let Some(why) = o.misbehaved() {
                failures.push(format!("{what}: {why}\n{}", o.describe()));
                continue;
            }
            let names_it = o.stderr.contains(case.names);
            // What each command answered, for `--nocapture`.
            let said = o.stderr.lines().rfind(|l| !l.is_empty()).unwrap_or("");
            println!("{what}: exit {:?}: {said}", o.status.and_then(|s| s.code()));
            match want(cmd, case) {
                Want::Refuse if o.success() => {
                    failures.push(format!("{what}: exit 0\n{}", o.describe()))
                }
                Want::Refuse if !names_it => failures.push(format!(
                    "{what}: the error does not name {:?}\n{}",
                    case.names,
                    o.describe()
                )),
                Want::Refuse => refused += 1,
                Want::Succeed if !o.success() => {
                    failures.push(format!("{what}: failed\n{}", o.describe()))
                }
                // inspect describes the file, and says why loupe cannot run it.
                Want::Succeed if cmd == "inspect" && !case.nan_weights && !names_it => failures
                    .push(format!(
                        "{what}: inspect does not say what is wrong ({:?})\n{}",
                        case.names,
                        o.describe()
                    )),
                Want::Succeed
                    if cmd == "inspect" && case.nan_weights && !o.stderr.contains("NaN") =>
                {
                    failures.push(format!(
                        "{what}: inspect does not say what is wrong ({:?})\n{}",
                        case.names,
                        o.describe()
                    ))
                }
                Want::Succeed | Want::Either => {}
            }
            // Perplexity of NaN logits is NaN, never the vocabulary size.
            if case.nan_weights && cmd == "perplexity" && !o.stdout.to_lowercase().contains("nan") {
                failures.push(format!(
                    "{what}: the perplexity is not reported as nan\n{}",
                    o.describe()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures ({refused} refusals right):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn gemma() -> String {
    let p = GEMMA3_270M.path();
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set LOUPE_MODELS)",
        p.display()
    );
    p.display().to_string()
}

#[test]
fn a_context_too_large_for_the_memory_is_refused_before_allocating() {
    let m = gemma();
    // Ten million tokens of gemma's cache are about 200 GiB; a hundred times more where
    // even that would fit.
    let avail_gib = loupe_engine::model::memory::mem_available().unwrap_or(0) >> 30;
    let huge = if avail_gib < 150 {
        "10000000"
    } else {
        "1000000000"
    };
    let max = u64::MAX.to_string();
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "run", &m, "-p", "hello", "--ctx", huge, "-n", "2", "-t", "2",
        ],
        vec!["next", &m, "hello", "--ctx", huge, "-t", "2"],
        vec!["bench", &m, "-p", huge, "-n", "2", "--reps", "1", "-t", "2"],
        vec!["bench", &m, "-p", "8", "-n", huge, "--reps", "1", "-t", "2"],
        vec![
            "run", &m, "-p", "hello", "--ctx", &max, "-n", "2", "-t", "2",
        ],
        vec!["chat", &m, "--ctx", huge, "-n", "2", "-t", "2"],
    ];
    let mut failures = Vec::new();
    for args in &runs {
        let o = loupe(args, "hello\n");
        let what = args.join(" ");
        if let Some(why) = o.misbehaved() {
            failures.push(format!("{what}: {why}\n{}", o.describe()));
        } else if o.success() {
            failures.push(format!("{what}: exit 0\n{}", o.describe()));
        } else if !o.stderr.contains("memory") {
            failures.push(format!(
                "{what}: the error does not speak of memory\n{}",
                o.describe()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn thread_counts_are_capped_at_the_cpus_with_a_note() {
    let m = gemma();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let many = (cpus * 100).to_string();
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "run", &m, "-p", "hello", "--ctx", "64", "-n", "2", "-t", &many,
        ],
        vec!["next", &m, "hello", "--ctx", "64", "-t", &many],
        vec![
            "bench", &m, "-p", "8", "-n", "2", "--reps", "1", "-t", &many, "--json",
        ],
    ];
    let mut failures = Vec::new();
    for args in &runs {
        let o = loupe(args, "");
        let what = args.join(" ");
        if !o.success() || o.misbehaved().is_some() {
            failures.push(format!("{what}: failed\n{}", o.describe()));
        } else if !(o.stderr.contains(&many) && o.stderr.contains(&format!("using {cpus}"))) {
            failures.push(format!("{what}: no note of the cap\n{}", o.describe()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn next_refuses_a_text_longer_than_its_context() {
    let m = gemma();
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let o = loupe(&["next", &m, "-", "--ctx", "8", "-t", "2"], long);
    assert!(o.misbehaved().is_none(), "{}", o.describe());
    assert!(!o.success(), "{}", o.describe());
    // The numbers: the text's tokens and the context.
    let t = loupe(&["tokenize", &m, long, "--json"], "");
    let ids: serde_json::Value = serde_json::from_str(&t.stdout).expect("tokenize --json");
    let n_tokens = ids["ids"].as_array().unwrap().len();
    assert!(n_tokens > 8);
    assert!(
        o.stderr.contains("--ctx 8") && o.stderr.contains(&format!("{n_tokens} tokens")),
        "{}",
        o.describe()
    );
}

/// A KV cache holding NaN (a damaged saved session) makes NaN logits, through the
/// quantized matmuls that would turn a NaN into a plausible number, and drawing from them
/// is an error that says so, not a reply of "!!!!".
#[test]
fn a_cache_holding_nan_gives_an_error_not_nonsense() {
    let model = Model::load(gemma()).unwrap();
    let opts = RunOptions {
        n_ctx: 32,
        kv_type: KvTypes::F16,
        threads: 2,
        batch: 32,
    };
    let mut ctx = Context::new(&model, opts).unwrap();
    let logits = ctx.eval(&[2, 9259, 1902], Logits::Last).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
    // Three positions of f16 NaN (0x7e00) in every layer's keys and values.
    let n = ctx.kv_cache().saved_len(3);
    let nan: Vec<u8> = [0x00, 0x7e].repeat(n / 2);
    ctx.restore_cache(3, &nan).unwrap();
    let logits = ctx.eval(&[236761], Logits::Last).unwrap();
    assert!(logits.iter().all(|v| v.is_nan()), "{:?}", &logits[..8]);
    let err = check_finite(&model, logits, 4).unwrap_err().to_string();
    assert!(err.contains("not finite after 4 tokens"), "{err}");
}

/// A saved chat whose n_predict does not fit the setting is refused by name, where it was
/// cast to 0 (a reply of nothing).
#[test]
fn a_saved_chat_with_an_out_of_range_n_predict_is_refused() {
    let m = gemma();
    let model = Model::load(&m).unwrap();
    let opts = RunOptions {
        n_ctx: 64,
        kv_type: KvTypes::F16,
        threads: 2,
        batch: 64,
    };
    let mut session = Session::new(Context::new(&model, opts).unwrap());
    session.sync(&[2, 9259, 1902]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.session");
    let extra = serde_json::json!({ "messages": [], "n_predict": 1u64 << 40 });
    session.save(&path, &extra, Overwrite::SameKind).unwrap();
    let o = loupe(
        &[
            "chat",
            &m,
            "--ctx",
            "64",
            "-t",
            "2",
            "--resume",
            path.to_str().unwrap(),
        ],
        "hello\n",
    );
    assert!(o.misbehaved().is_none(), "{}", o.describe());
    assert!(!o.success(), "{}", o.describe());
    assert!(
        o.stderr.contains("n_predict") && o.stderr.contains("1099511627776"),
        "{}",
        o.describe()
    );
}
