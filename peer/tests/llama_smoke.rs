//! The llama.cpp wrappers on both test models: tokenize, greedy, logits, perplexity.
//! (loupe has no tokenizer or forward pass yet, so nothing is compared with loupe here;
//! these pin the reference side that later differential tests build on.)

mod common;

use common::model_path;
use peer::llama::{argmax, log_softmax, Llama, Params};

/// About 330 tokens of plain English: enough for perplexity at a context of 64
/// (the tool needs 2 × n_ctx tokens).
const TEXT: &str = "The river rises in the hills to the north of the town and runs south \
through farmland for most of its length. In the spring the water is high and fast, and \
the old stone bridge near the market is sometimes closed for a day or two. Farmers along \
the banks grow wheat, barley and potatoes, and many of them keep sheep on the higher \
ground. The town itself has a small museum, a library, two schools and a railway station \
with trains to the city every hour. Visitors come in the summer to walk along the river \
path, to fish, or to sit in the gardens behind the church. The local council has plans to \
build a new footbridge and to repair the road that leads to the station. Most people in \
the town agree that the changes are needed, but some worry about the cost and about the \
noise during the work. At the end of the year the council will publish a report on the \
first stage of the project, and the public will be asked for their views. Until then, \
life in the town goes on much as it always has: the shops open at nine, the children walk \
to school, and in the evening the lights come on along the river, one after another, \
until the whole valley is dark and quiet again. In the morning the first train leaves \
before six, and the baker on the corner has already been at work for three hours.";

fn open(file: &str) -> Llama {
    let params = Params {
        n_ctx: 256,
        n_batch: 256,
        n_threads: 1,
    };
    Llama::load(model_path(file), params).unwrap_or_else(|e| panic!("{file}: {e:#}"))
}

/// One model at a time, one thread each: ggml's worker threads spin at every barrier, so
/// when the cores are shared (two contexts, or cargo compiling beside the tests) a
/// two-thread context waits a scheduler slice per op; measured on the 2-core box with one
/// core busy: greedy 8 tokens 0.8 s at 1 thread, 8.8 s at 2.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn smoke(file: &str) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = std::time::Instant::now();
    let mut llama = open(file);

    // tokenize: non-empty, BOS first exactly when the vocabulary adds it.
    let text = "The capital of France is";
    let ids = llama.tokenize(text, true, false).unwrap();
    assert!(!ids.is_empty(), "{file}: no tokens");
    assert_eq!(
        ids[0] == llama.bos(),
        llama.add_bos(),
        "{file}: BOS rule, ids {ids:?}"
    );
    let body = if llama.add_bos() { &ids[1..] } else { &ids[..] };
    assert_eq!(
        llama.detokenize(body, false),
        text,
        "{file}: detokenize round trip"
    );
    assert_eq!(
        llama.tokenize(text, false, false).unwrap(),
        body,
        "{file}: add_special=false"
    );

    // greedy: runs, returns at most 8 valid ids, the first being the argmax of the
    // prompt's last logits.
    let gen = llama.greedy(&ids, 8).unwrap();
    let logits = llama.logits(&ids).unwrap();
    assert_eq!(logits.len(), ids.len());
    assert!(logits.iter().all(|l| l.len() == llama.n_vocab()));
    assert!(
        !gen.is_empty() && gen.len() <= 8,
        "{file}: greedy gave {gen:?}"
    );
    assert!(gen.iter().all(|&t| (t as usize) < llama.n_vocab()));
    assert_eq!(
        gen[0],
        argmax(logits.last().unwrap()),
        "{file}: first greedy token"
    );
    eprintln!(
        "{file}: {ids:?} -> {gen:?} {:?}",
        llama.detokenize(&gen, false)
    );

    // perplexity: finite, > 1, and chunk 0 agrees with log-softmax over logits().
    let tokens = llama.tokenize(TEXT, true, false).unwrap();
    let n_ctx = 64;
    let r = llama.perplexity(&tokens, n_ctx, None).unwrap();
    assert!(r.ppl.is_finite() && r.ppl > 1.0, "{file}: ppl {}", r.ppl);
    assert_eq!(r.running.len(), tokens.len() / n_ctx);
    assert_eq!(r.n_scored, r.running.len() * (n_ctx - n_ctx / 2 - 1));
    assert!((r.running.last().unwrap() - r.ppl).abs() < 1e-12);
    let mut chunk: Vec<i32> = tokens[..n_ctx].to_vec();
    if llama.add_bos() {
        chunk[0] = llama.bos();
    }
    let all = llama.logits(&chunk).unwrap();
    let nll: f64 = (n_ctx / 2..n_ctx - 1)
        .map(|p| -log_softmax(&all[p], tokens[p + 1] as usize))
        .sum();
    let ppl0 = (nll / (n_ctx - n_ctx / 2 - 1) as f64).exp();
    let rel = (ppl0 - r.per_chunk[0]).abs() / r.per_chunk[0];
    assert!(
        rel < 1e-3,
        "{file}: chunk 0 ppl {} vs {ppl0} from logits()",
        r.per_chunk[0]
    );
    eprintln!(
        "{file}: {} tokens, ppl {:.4} at n_ctx {n_ctx}, chunks {:?}",
        tokens.len(),
        r.ppl,
        r.per_chunk
    );
    eprintln!("{file}: smoke test took {:.1?}", t0.elapsed());
}

#[test]
fn gemma_smoke() {
    smoke(common::GEMMA);
}

#[test]
fn qwen_smoke() {
    smoke(common::QWEN);
}

#[test]
fn missing_model_is_an_error_not_a_crash() {
    let err = Llama::load("/nonexistent/model.gguf", Params::default())
        .err()
        .expect("loading a missing file must fail");
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
}
