//! The server's slots: a fixed number of sessions (each its own KV cache), one worker
//! thread per slot, a queue for requests beyond them, and the turn that makes the slots'
//! evaluations take the cores one at a time.
//!
//! ```text
//! handler ──submit(Job)──▶ Pool ──▶ idle slot with the longest cached prefix ──▶ worker
//!    ▲                       └──▶ queue (FIFO) ──▶ the next slot to finish         │
//!    └──────────── Event (started, tokens, done) over the job's channel ◀─────────┘
//! ```
//!
//! Why one evaluation at a time: an evaluation already uses every core (`--threads`),
//! and two at once on the same cores stall each other at every join. Taking turns token
//! by token (a FIFO ticket, so no slot starves) gives each of N busy slots about 1/N of
//! the machine, and one busy slot all of it. The slots' contexts share one thread pool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Instant;

use anyhow::Result;
use tokio::sync::mpsc::UnboundedSender;

use loupe_engine::generate::{GenerateOptions, Generator, StopReason};
use loupe_engine::model::{thread_pool, Context, Model, RunOptions};
use loupe_engine::sample::{Sampler, SamplerConfig, Trace};
use loupe_engine::session::{PromptInterrupted, Session, PROMPT_CHUNK};
use loupe_engine::tokenizer::Tokenizer;

use super::stops::StopScanner;

/// What a client asked to generate, validated.
#[derive(Clone, Debug)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    /// `None`: until the model stops or the context is full.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// `Some(k)`: report each token's log-probability and the k likeliest alternatives.
    pub top_logprobs: Option<usize>,
    /// llama.cpp's `ignore_eos`: end-of-generation tokens are never drawn.
    pub ignore_eos: bool,
    /// `Some(k)`: generate nothing; answer with the next-token distribution after each
    /// sampler stage, k candidates each (`/v1/next`).
    pub trace: Option<usize>,
}

/// Why a generation ended, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

impl Finish {
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What a worker tells the request's handler, in this order: `Started`, `Token`s, then
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// The prompt is in the cache: `cached` of its tokens were there already.
    Started {
        slot: usize,
        cached: usize,
    },
    Token(TokenOut),
    Done(Summary),
    Failed(String),
    /// The answer to a `trace` request: the stages, and the sampler chain described.
    Trace(Trace, String),
}

/// One generated token as the client sees it.
#[derive(Debug)]
pub struct TokenOut {
    pub id: u32,
    /// The token's own piece (for log-probabilities).
    pub piece: String,
    /// Text released to the client with this token: what the token completes, minus
    /// what is held back while it may be the start of a stop string (possibly more).
    pub text: String,
    /// ln p of the token and of the likeliest alternatives (with `top_logprobs`).
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug)]
pub struct Summary {
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_secs: f64,
    pub gen_secs: f64,
    /// Text held back at the end (an unfinished stop-string prefix, an incomplete
    /// character), released now.
    pub tail: String,
}

/// A request in the pool: what to generate, where to say how it goes, and the flag that
/// stops it (raised when the client goes away).
pub struct Job {
    pub req: GenRequest,
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<Event>,
}

/// The queue is full.
#[derive(Debug, thiserror::Error)]
#[error("the server is busy: {slots} slots working and {queued} requests queued (the most it queues is {max}); retry later")]
pub struct Busy {
    pub slots: usize,
    pub queued: usize,
    pub max: usize,
}

/// A FIFO ticket lock: evaluations take the cores in the order they asked for them.
#[derive(Default)]
pub struct Turns {
    state: Mutex<(u64, u64)>, // (next ticket, now serving)
    cv: Condvar,
}

pub struct Turn<'a>(&'a Turns);

impl Turns {
    pub fn take(&self) -> Turn<'_> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = s.0;
        s.0 += 1;
        while s.1 != ticket {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 += 1;
        self.0.cv.notify_all();
    }
}

struct PoolState {
    /// Idle slots, longest idle first.
    idle: Vec<usize>,
    queue: VecDeque<Job>,
    /// Each slot's cached tokens, as of its last job.
    cached: Vec<Vec<u32>>,
}

/// The slots and their queue; shared by the HTTP handlers.
pub struct Pool {
    state: Mutex<PoolState>,
    senders: Vec<mpsc::Sender<Job>>,
    max_queue: usize,
}

/// How many slots are busy and how many requests wait.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub slots: usize,
    pub idle: usize,
    pub queued: usize,
}

impl Pool {
    /// Start `n` slots over `model`, each with a context made with `opts`, on worker
    /// threads of their own. The contexts are made here, so a failure (memory) is
    /// reported before the server listens.
    pub fn start(
        model: &'static Model,
        tok: &'static Tokenizer,
        opts: RunOptions,
        n: usize,
        max_queue: usize,
    ) -> Result<Arc<Pool>> {
        let turns = Arc::new(Turns::default());
        // One thread pool for every slot: they take turns, and a shared pool's threads
        // stay warm from one slot's token to the next.
        let threads = Arc::new(thread_pool(opts.threads)?);
        let mut sessions = Vec::with_capacity(n);
        for i in 0..n {
            let ctx = Context::with_pool(model, opts, Arc::clone(&threads))?;
            if i == 0 {
                crate::cli::model_args::note_gpu_path(&ctx);
            }
            sessions.push(Session::new(ctx));
        }
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<Job>();
            senders.push(tx);
            receivers.push(rx);
        }
        let pool = Arc::new(Pool {
            state: Mutex::new(PoolState {
                idle: (0..n).collect(),
                queue: VecDeque::new(),
                cached: vec![Vec::new(); n],
            }),
            senders,
            max_queue,
        });
        for (slot, (session, rx)) in sessions.into_iter().zip(receivers).enumerate() {
            let pool = Arc::clone(&pool);
            let turns = Arc::clone(&turns);
            std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn(move || {
                    let mut worker = Worker {
                        slot,
                        session,
                        tok,
                        turns,
                    };
                    while let Ok(job) = rx.recv() {
                        let mut next = Some(job);
                        while let Some(job) = next.take() {
                            worker.serve_guarded(job);
                            next = pool.finished(slot, worker.session.tokens());
                        }
                    }
                })?;
        }
        Ok(pool)
    }

    /// Hand `job` to the idle slot whose cache shares the longest prefix with its prompt
    /// (the longest idle among equals), or queue it.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let mut s = self.lock();
        if s.idle.is_empty() {
            if s.queue.len() >= self.max_queue {
                return Err(Busy {
                    slots: self.senders.len(),
                    queued: s.queue.len(),
                    max: self.max_queue,
                });
            }
            s.queue.push_back(job);
            return Ok(());
        }
        let shared = |slot: usize| {
            s.cached[slot]
                .iter()
                .zip(&job.req.prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let mut best = 0;
        for i in 1..s.idle.len() {
            if shared(s.idle[i]) > shared(s.idle[best]) {
                best = i;
            }
        }
        let slot = s.idle.remove(best);
        // A worker thread only ends with the process; a send cannot fail before.
        let _ = self.senders[slot].send(job);
        Ok(())
    }

    /// A slot finished a job: record its cache and give it the next queued job, or mark
    /// it idle.
    fn finished(&self, slot: usize, tokens: &[u32]) -> Option<Job> {
        let mut s = self.lock();
        s.cached[slot].clear();
        s.cached[slot].extend_from_slice(tokens);
        match s.queue.pop_front() {
            Some(job) => Some(job),
            None => {
                s.idle.push(slot);
                None
            }
        }
    }

    pub fn load(&self) -> Load {
        let s = self.lock();
        Load {
            slots: self.senders.len(),
            idle: s.idle.len(),
            queued: s.queue.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Worker {
    slot: usize,
    session: Session<'static>,
    tok: &'static Tokenizer,
    turns: Arc<Turns>,
}

impl Worker {
    /// [`Worker::serve`], and a panic (a bug) answered as a failure instead of leaving the
    /// slot dead and its client waiting; the slot's cache is then forgotten, since the
    /// panic may have left it half-written.
    fn serve_guarded(&mut self, job: Job) {
        let events = job.events.clone();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve(job)));
        if let Err(panic) = run {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let _ = events.send(Event::Failed(format!("internal error (a bug): {what}")));
            self.session.reset();
        }
    }

    fn serve(&mut self, job: Job) {
        let Job {
            req,
            cancel,
            events,
        } = job;
        if cancel.load(Ordering::Relaxed) {
            return; // the client left while the job was queued
        }
        let send = |e: Event| {
            if events.send(e).is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        match self.generate(&req, &cancel, &send) {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<PromptInterrupted>().is_some() => {}
            Err(e) => send(Event::Failed(format!("{e:#}"))),
        }
    }

    fn generate(
        &mut self,
        req: &GenRequest,
        cancel: &AtomicBool,
        send: &dyn Fn(Event),
    ) -> Result<()> {
        let prompt = &req.prompt;
        let n = prompt.len();
        let t0 = Instant::now();
        // The prompt but its last token, a chunk per turn, so that a long prompt does not
        // stall the other slots' streams; the generator then evaluates the last token.
        let mut cached = None;
        let mut end = self.session.common_prefix(prompt);
        while end + 1 < n {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            end = (end + PROMPT_CHUNK).min(n - 1);
            let _turn = self.turns.take();
            let (stats, _) = self.session.sync(&prompt[..end])?;
            cached.get_or_insert(stats.cached);
        }
        let mut sampler = Sampler::new(req.sampler, self.session.model().config.vocab_size)?;
        for &id in prompt {
            sampler.accept(id);
        }
        let opts = GenerateOptions {
            max_tokens: req.max_tokens,
            top: req.top_logprobs,
        };
        let mut gen = {
            let _turn = self.turns.take();
            Generator::start(
                &mut self.session,
                self.tok,
                &mut sampler,
                prompt,
                opts,
                Some(cancel),
            )?
        };
        if let Some(k) = req.trace {
            let trace = {
                let _turn = self.turns.take();
                gen.trace(k)?
            };
            drop(gen);
            send(Event::Trace(trace, sampler.describe()));
            return Ok(());
        }
        if req.ignore_eos {
            gen = gen.ignore_eos();
        }
        let cached = cached.unwrap_or(gen.prompt_stats().cached);
        // Wall time, turns waited for included: what the client waited.
        let prompt_secs = t0.elapsed().as_secs_f64();
        send(Event::Started {
            slot: self.slot,
            cached,
        });
        let mut stops = StopScanner::new(&req.stop);
        let mut stopped = false;
        loop {
            let next = {
                let _turn = self.turns.take();
                gen.next_token()?
            };
            let Some(t) = next else { break };
            let (text, hit) = stops.push(&t.text);
            send(Event::Token(TokenOut {
                id: t.id,
                piece: String::from_utf8_lossy(self.tok.token_piece(t.id, true)).into_owned(),
                text,
                logprob: t.p.map(f32::ln),
                top: t.top.iter().map(|&(id, p)| (id, p.ln())).collect(),
            }));
            if hit {
                stopped = true;
                break;
            }
        }
        let done = gen.finish();
        // A generation cut at a stop string was not cancelled, though the generator
        // (stopped early) says so.
        if cancel.load(Ordering::Relaxed) || (!stopped && done.stop == StopReason::Cancelled) {
            return Ok(());
        }
        let tail = if stopped {
            String::new()
        } else {
            stops.push(&done.tail).0 + &stops.finish()
        };
        let finish = match done.stop {
            _ if stopped => Finish::Stop,
            StopReason::Eog => Finish::Stop,
            _ => Finish::Length,
        };
        send(Event::Done(Summary {
            finish,
            prompt_tokens: n,
            cached_tokens: cached,
            completion_tokens: done.tokens.len(),
            prompt_secs,
            gen_secs: done.secs,
            tail,
        }));
        Ok(())
    }
}
