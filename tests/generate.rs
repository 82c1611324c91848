//! The engine's one generation loop, driven directly as a front end or a server would:
//! prefix reuse across generations, each stop reason (end of generation, length, a full
//! context, cancellation from another thread), and two sessions generating on two threads
//! from one shared model with the same tokens as one session alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use loupe::store::QWEN25_CODER_05B;
use loupe_engine::generate::{Finished, GenerateOptions, Generator, StopReason};
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Model, RunOptions};
use loupe_engine::sample::{Sampler, SamplerConfig};
use loupe_engine::session::Session;
use loupe_engine::tokenizer::Tokenizer;

fn load() -> (Model, Tokenizer) {
    let path = QWEN25_CODER_05B.path();
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    let model = Model::load(&path).unwrap();
    let tok = Tokenizer::from_metadata(model.file.metadata()).unwrap();
    (model, tok)
}

fn session(model: &Model, n_ctx: usize) -> Session<'_> {
    let opts = RunOptions {
        n_ctx,
        kv_type: KvTypes::F16,
        threads: 1,
        batch: 64,
    };
    Session::new(Context::new(model, opts).unwrap())
}

fn greedy(model: &Model) -> Sampler {
    let cfg = SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    };
    Sampler::new(cfg, model.config.vocab_size).unwrap()
}

fn generate(
    s: &mut Session<'_>,
    tok: &Tokenizer,
    prompt: &[u32],
    max_tokens: Option<usize>,
) -> Finished {
    let mut sampler = greedy(s.model());
    let opts = GenerateOptions {
        max_tokens,
        top: Some(3),
    };
    let mut texts = String::new();
    let done = Generator::start(s, tok, &mut sampler, prompt, opts, None)
        .unwrap()
        .run(&mut |t| {
            assert!(t.p.is_some_and(|p| (0.0..=1.0).contains(&p)), "{t:?}");
            assert_eq!(t.top.len(), 3);
            texts.push_str(&t.text);
            Ok(())
        })
        .unwrap();
    texts.push_str(&done.tail);
    assert_eq!(texts, tok.decode(&done.tokens, false), "streamed text");
    done
}

fn chat_prompt(tok: &Tokenizer, user: &str) -> Vec<u32> {
    let text = format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n");
    tok.encode(&text, false, true)
}

#[test]
fn stops_on_length_and_reuses_the_cached_prefix() {
    let (model, tok) = load();
    let mut s = session(&model, 256);
    let prompt = tok.encode("def fibonacci(n):", true, false);
    let first = generate(&mut s, &tok, &prompt, Some(8));
    assert_eq!(first.stop, StopReason::Length);
    assert_eq!(first.tokens.len(), 8);
    assert_eq!((first.prompt.cached, first.prompt.new), (0, prompt.len()));

    // The continuation as the next prompt: everything but the last token generated (its
    // logits were never needed) is already in the cache.
    let mut next: Vec<u32> = prompt.iter().chain(&first.tokens).copied().collect();
    next.extend(tok.encode("\n\n# test", false, false));
    let second = generate(&mut s, &tok, &next, Some(4));
    assert_eq!(second.prompt.cached, prompt.len() + first.tokens.len() - 1);
    assert_eq!(second.prompt.new, next.len() - second.prompt.cached);

    // A fresh session gives the same continuation token for token.
    let mut fresh = session(&model, 256);
    assert_eq!(
        generate(&mut fresh, &tok, &next, Some(4)).tokens,
        second.tokens
    );
}

#[test]
fn stops_on_end_of_generation_and_on_a_full_context() {
    let (model, tok) = load();
    let mut s = session(&model, 256);
    let prompt = chat_prompt(&tok, "Reply with the single word: yes");
    let done = generate(&mut s, &tok, &prompt, Some(64));
    assert_eq!(
        done.stop,
        StopReason::Eog,
        "{:?}",
        tok.decode(&done.tokens, true)
    );
    assert!(!done.tokens.iter().any(|&t| tok.is_eog(t)));

    let prompt = tok.encode("Once upon a time", true, false);
    let n_ctx = prompt.len() + 5;
    let mut small = session(&model, n_ctx);
    let done = generate(&mut small, &tok, &prompt, None);
    assert_eq!(done.stop, StopReason::ContextFull);
    // Every position holds a token, and one more was drawn from the last one's logits.
    assert_eq!(small.len(), n_ctx);
    assert_eq!(done.tokens.len(), n_ctx - prompt.len() + 1);
}

#[test]
fn another_thread_cancels_within_a_token() {
    let (model, tok) = load();
    let mut s = session(&model, 512);
    let prompt = tok.encode("Write a long story about a lighthouse.", true, false);
    let cancel = AtomicBool::new(false);
    let (seen_tx, seen_rx) = mpsc::channel::<usize>();
    let done = std::thread::scope(|scope| {
        let cancel = &cancel;
        scope.spawn(move || {
            // Raise the flag once the third token has been seen.
            while let Ok(n) = seen_rx.recv() {
                if n == 3 {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        });
        let mut sampler = greedy(&model);
        let opts = GenerateOptions {
            max_tokens: Some(200),
            top: None,
        };
        let mut gen =
            Generator::start(&mut s, &tok, &mut sampler, &prompt, opts, Some(cancel)).unwrap();
        let mut n = 0;
        while let Some(t) = gen.next_token().unwrap() {
            assert!(t.p.is_none() && t.top.is_empty());
            n += 1;
            seen_tx.send(n).unwrap();
            // Give the other thread its moment, as a token's forward pass would.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(seen_tx);
        gen.finish()
    });
    assert_eq!(done.stop, StopReason::Cancelled);
    assert!(
        (3..=4).contains(&done.tokens.len()),
        "{}",
        done.tokens.len()
    );
}

#[test]
fn two_sessions_on_two_threads_share_one_model() {
    let (model, tok) = load();
    let prompts = [
        tok.encode("The capital of France is", true, false),
        tok.encode("fn main() {", true, false),
    ];
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| generate(&mut session(&model, 128), &tok, p, Some(12)).tokens)
        .collect();
    let together: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (model, tok) = (&model, &tok);
                scope.spawn(move || generate(&mut session(model, 128), tok, p, Some(12)).tokens)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    assert_ne!(alone[0], alone[1]);
}
