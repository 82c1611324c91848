//! `loupe serve`: an OpenAI-compatible HTTP server over the one generation loop.
//!
//! [`api`] reads and checks requests, [`routes`] holds the endpoints and writes the
//! answers (whole, or streamed as server-sent events), [`slots`] runs the generations:
//! `--parallel` sessions, each with its own KV cache and prefix reuse, a queue beyond
//! them, and cancellation when a client goes away; [`stops`] cuts the text at stop
//! strings. The HTTP side is tokio and axum; generations run on plain threads (one per
//! slot), since a forward pass is CPU work that would stall an async runtime.

pub mod api;
pub mod routes;
pub mod slots;
pub mod stops;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};

use loupe_engine::model::memory::{context_bytes, mem_available, Gib};
use loupe_engine::model::{Model, RunOptions};
use loupe_engine::sample::SamplerSettings;
use loupe_engine::tokenizer::Tokenizer;

use crate::chat::template::ChatTemplate;
use routes::App;
use slots::Pool;

/// Everything `loupe serve` was asked for, checked by the command line.
pub struct ServeOptions {
    pub host: IpAddr,
    pub port: u16,
    pub parallel: usize,
    pub max_queue: usize,
    pub max_body: usize,
    pub api_key: Option<String>,
    pub id: String,
    pub aliases: Vec<String>,
    pub run: RunOptions,
    pub defaults: SamplerSettings,
}

/// Start the slots, bind, print where the server listens (on stderr: `listening on
/// http://ADDR`), and serve until the process is stopped.
pub fn serve(
    model: &'static Model,
    tok: &'static Tokenizer,
    template: ChatTemplate,
    o: ServeOptions,
) -> Result<()> {
    preflight(model, &o)?;
    let pool = Pool::start(model, tok, o.run, o.parallel, o.max_queue)?;
    let app = Arc::new(App {
        model,
        tok,
        template,
        pool,
        id: o.id,
        aliases: o.aliases,
        n_ctx: o.run.n_ctx,
        api_key: o.api_key,
        max_body: o.max_body,
        defaults: o.defaults,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_id: AtomicU64::new(1),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the HTTP runtime")?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(o.host, o.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        if !o.host.is_loopback() {
            eprintln!(
                "loupe: warning: listening on {bound}, reachable from other machines{}",
                if app.api_key.is_some() {
                    " (requests need the API key)"
                } else {
                    ", with no API key: anyone who can reach it can use it (--api-key)"
                }
            );
        }
        eprintln!(
            "loupe: serving {} with {} slot{} of {} tokens, {} threads",
            app.id,
            o.parallel,
            if o.parallel == 1 { "" } else { "s" },
            o.run.n_ctx,
            o.run.threads
        );
        eprintln!("loupe: listening on http://{bound}");
        axum::serve(listener, routes::router(app))
            .await
            .context("the HTTP server stopped")
    })
}

/// The slots' contexts and the weights must fit in the memory available together (each
/// context checks itself alone when made; N of them is this check's).
fn preflight(model: &Model, o: &ServeOptions) -> Result<()> {
    let (Some(per), Some(avail)) = (context_bytes(model, &o.run), mem_available()) else {
        return Ok(());
    };
    let weights = std::fs::metadata(model.file.path()).map_or(0, |m| m.len());
    let need = weights.saturating_add(per.saturating_mul(o.parallel as u64));
    if need > avail {
        bail!(
            "not enough memory for {} slots: the model takes {} and each slot's context of {} \
             tokens {}, {} in all, but only {} is available; lower --parallel or --ctx",
            o.parallel,
            Gib(weights),
            o.run.n_ctx,
            Gib(per),
            Gib(need),
            Gib(avail)
        );
    }
    Ok(())
}
