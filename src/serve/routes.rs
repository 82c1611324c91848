//! The HTTP endpoints: `/v1/chat/completions`, `/v1/completions` (whole answers, or
//! server-sent events when `stream` is true), `/v1/models`, `/health`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use loupe_engine::model::Model;
use loupe_engine::sample::SamplerSettings;
use loupe_engine::tokenizer::Tokenizer;

use super::api::{self, ApiError, ApiResult, PromptIn};
use super::slots::{Event, GenRequest, Job, Pool, Summary, TokenOut};
use crate::chat::template::{ChatTemplate, Message};

/// What every handler shares.
pub struct App {
    pub model: &'static Model,
    pub tok: &'static Tokenizer,
    pub template: ChatTemplate,
    pub pool: Arc<Pool>,
    /// The name `/v1/models` gives the model; requests may use it or an alias.
    pub id: String,
    pub aliases: Vec<String>,
    /// Each slot's context, tokens.
    pub n_ctx: usize,
    pub api_key: Option<String>,
    pub max_body: usize,
    /// The server's sampling flags: a request's fields win, these fill the rest.
    pub defaults: SamplerSettings,
    pub created: u64,
    pub next_id: AtomicU64,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/next", post(next))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .fallback(not_found)
        .with_state(app)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no such endpoint {}: loupe serves /v1/chat/completions, /v1/completions, \
             /v1/next, /v1/models and /health",
            uri.path()
        ),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
    }
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let load = app.pool.load();
    Json(json!({
        "status": "ok",
        "slots_idle": load.idle,
        "slots_processing": load.slots - load.idle,
        "requests_queued": load.queued,
    }))
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return e.into_response();
    }
    let c = &app.model.config;
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.id,
            "object": "model",
            "created": app.created,
            "owned_by": "loupe",
            "meta": {
                "architecture": c.arch.name(),
                "n_ctx_slot": app.n_ctx,
                "n_ctx_train": c.n_ctx_train,
                "n_vocab": c.vocab_size,
                "size": std::fs::metadata(app.model.file.path()).map_or(0, |m| m.len()),
                "aliases": app.aliases,
            },
        }],
    }))
    .into_response()
}

impl App {
    fn authorize(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(key.as_str()) {
            return Ok(());
        }
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "invalid or missing API key: send it as `Authorization: Bearer KEY`".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        })
    }

    fn check_model(&self, asked: Option<&str>) -> ApiResult<()> {
        match asked {
            None => Ok(()),
            Some(m) if m == self.id || self.aliases.iter().any(|a| a == m) => Ok(()),
            Some(m) => Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "the model {m:?} is not served here; this server runs {:?}",
                    self.id
                ),
                kind: "invalid_request_error",
                param: Some("model".into()),
                code: Some("model_not_found"),
            }),
        }
    }

    /// The request as the slots take it: the context checked, the sampler resolved.
    fn gen_request(
        &self,
        prompt: Vec<u32>,
        common: &api::Common,
        top_logprobs: Option<usize>,
    ) -> ApiResult<GenRequest> {
        let (p, n) = (prompt.len(), self.n_ctx);
        if p == 0 {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        let overflow =
            |msg: String| ApiError::bad_request(msg).with_code("context_length_exceeded");
        if p >= n {
            return Err(overflow(format!(
                "the prompt is {p} tokens, and a slot's context holds {n} (--ctx): no room \
                 is left for a reply"
            )));
        }
        if let Some(m) = common.max_tokens {
            if p + m > n {
                return Err(overflow(format!(
                    "the prompt's {p} tokens and max_tokens {m} make {}, more than the \
                     context of {n} tokens (--ctx); ask for at most {} tokens",
                    p + m,
                    n - p
                )));
            }
        }
        let sampler = common
            .sampling
            .clone()
            .or(&self.defaults)
            .resolve()
            .map_err(api::sampler_error)?;
        Ok(GenRequest {
            prompt,
            sampler,
            max_tokens: common.max_tokens,
            stop: common.stop.clone(),
            top_logprobs,
            ignore_eos: common.ignore_eos,
            trace: None,
        })
    }

    fn piece(&self, id: u32) -> String {
        String::from_utf8_lossy(self.tok.token_piece(id, true)).into_owned()
    }
}

/// The body, at most `max_body` bytes.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
    let too_large = |n: Option<u64>| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: match n {
            Some(n) => format!(
                "the request body is {n} bytes, more than the {} this server accepts \
                 (--max-body)",
                app.max_body
            ),
            None => format!(
                "the request body is more than the {} bytes this server accepts (--max-body)",
                app.max_body
            ),
        },
        kind: "invalid_request_error",
        param: None,
        code: Some("request_too_large"),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body as u64) {
        return Err(too_large(declared));
    }
    match axum::body::to_bytes(body, app.max_body).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if over {
                too_large(None)
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            })
        }
    }
}

/// Which endpoint a reply is for: their JSON differs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// The request's JSON object, once the key and the body's size are checked.
async fn request(app: &App, headers: &HeaderMap, body: Body) -> ApiResult<Map<String, Value>> {
    app.authorize(headers)?;
    let bytes = read_body(app, headers, body).await?;
    api::object(&bytes)
}

/// What a prompt is made from.
enum Source {
    /// Text; control tokens spelled in it are read, as llama.cpp's server does.
    Text(String),
    Tokens(Vec<u32>),
    /// A conversation, rendered with the chat template up to the assistant's header.
    Messages(Vec<Message>),
}

impl From<PromptIn> for Source {
    fn from(p: PromptIn) -> Source {
        match p {
            PromptIn::Text(t) => Source::Text(t),
            PromptIn::Tokens(ids) => Source::Tokens(ids),
        }
    }
}

/// The prompt's token ids, tokenized off the async threads (a long text takes a while).
async fn tokens(app: &Arc<App>, source: Source) -> ApiResult<Vec<u32>> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || match source {
        Source::Tokens(ids) => Ok(ids),
        Source::Text(text) => Ok(app.tok.encode(&text, true, true)),
        Source::Messages(msgs) => app
            .template
            .tokens(app.tok, &msgs, true, false)
            .map_err(|e| ApiError::invalid("messages", format!("{e:#}"))),
    })
    .await
    .map_err(|e| ApiError::server(format!("the tokenizer task failed: {e}")))?
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req = api::chat(&request(&app, &headers, body).await?)?;
    app.check_model(req.common.model.as_deref())?;
    let prompt = tokens(&app, Source::Messages(req.messages)).await?;
    let gen = app.gen_request(prompt, &req.common, req.top_logprobs)?;
    start(app, Kind::Chat, gen, &req.common).await
}

async fn completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req = api::completion(&request(&app, &headers, body).await?, app.tok.n_vocab())?;
    app.check_model(req.common.model.as_deref())?;
    let prompt = tokens(&app, req.prompt.into()).await?;
    let gen = app.gen_request(prompt, &req.common, req.top_logprobs)?;
    start(app, Kind::Completion, gen, &req.common).await
}

/// `/v1/next`: `loupe next --json`'s answer (every stage shown) for a text or a
/// conversation.
async fn next(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let req = api::next(&request(&app, &headers, body).await?, app.tok.n_vocab())?;
    app.check_model(req.common.model.as_deref())?;
    let source = match (req.prompt, req.messages) {
        (Some(p), _) => p.into(),
        (None, Some(msgs)) => Source::Messages(msgs),
        (None, None) => return Err(ApiError::bad_request("nothing to look at")),
    };
    let prompt = tokens(&app, source).await?;
    let mut gen = app.gen_request(prompt, &req.common, None)?;
    gen.trace = Some(req.top);
    let n_prompt = gen.prompt.len();
    let (mut rx, _guard) = submit(&app, gen)?;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Trace(trace, sampler) => {
                let j = crate::cli::next::trace_json(app.tok, n_prompt, &trace, true, &sampler);
                return Ok(Json(j).into_response());
            }
            Event::Failed(m) => return Err(failed(m)),
            _ => {}
        }
    }
    Err(ApiError::server("the evaluation ended without an answer"))
}

/// Hand `gen` to the slots: its events arrive on the receiver, and dropping the guard
/// (the reply is gone) cancels it.
fn submit(app: &App, gen: GenRequest) -> ApiResult<(UnboundedReceiver<Event>, CancelOnDrop)> {
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    app.pool
        .submit(Job {
            req: gen,
            cancel: Arc::clone(&cancel),
            events: tx,
        })
        .map_err(|b| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: b.to_string(),
            kind: "server_error",
            param: None,
            code: Some("server_busy"),
        })?;
    Ok((rx, CancelOnDrop(cancel)))
}

/// Raises the job's cancel flag when the reply is dropped: a client that went away stops
/// its generation (and frees its slot) within a token.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn start(
    app: Arc<App>,
    kind: Kind,
    gen: GenRequest,
    common: &api::Common,
) -> ApiResult<Response> {
    let top = gen.top_logprobs;
    let (rx, guard) = submit(&app, gen)?;
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let reply = Reply {
        id: match kind {
            Kind::Chat => format!("chatcmpl-loupe-{n}"),
            Kind::Completion => format!("cmpl-loupe-{n}"),
        },
        kind,
        created: now(),
        top,
        app,
        offset: 0,
    };
    if common.stream {
        return Ok(stream_reply(reply, rx, guard, common.include_usage).into_response());
    }
    whole_reply(reply, rx, guard).await
}

/// One reply being written: ids, and the JSON of each part.
struct Reply {
    id: String,
    kind: Kind,
    created: u64,
    top: Option<usize>,
    app: Arc<App>,
    /// Characters of text released so far (the legacy log-probabilities' offsets).
    offset: usize,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.app.id,
            "system_fingerprint": concat!("loupe-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        })
    }

    /// Chat: `{token, logprob, bytes, top_logprobs}` for one token.
    fn chat_logprob(&self, t: &TokenOut) -> Value {
        let entry = |piece: &str, lp: f32| json!({ "token": piece, "logprob": lp, "bytes": piece.as_bytes() });
        let mut e = entry(&t.piece, t.logprob.unwrap_or(f32::NAN));
        e["top_logprobs"] = t
            .top
            .iter()
            .map(|&(id, lp)| entry(&self.app.piece(id), lp))
            .collect();
        e
    }

    /// Completions (legacy): one token's columns.
    fn legacy_logprob(&mut self, t: &TokenOut) -> (Value, Value, Value, usize) {
        let top: serde_json::Map<String, Value> = t
            .top
            .iter()
            .map(|&(id, lp)| (self.app.piece(id), json!(lp)))
            .collect();
        let at = self.offset;
        (json!(t.piece), json!(t.logprob), Value::Object(top), at)
    }

    fn usage(s: &Summary) -> Value {
        json!({
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens,
            "prompt_tokens_details": { "cached_tokens": s.cached_tokens },
        })
    }

    /// llama.cpp's server's `timings`.
    fn timings(s: &Summary) -> Value {
        let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let new = s.prompt_tokens - s.cached_tokens;
        json!({
            "cache_n": s.cached_tokens,
            "prompt_n": new,
            "prompt_ms": s.prompt_secs * 1e3,
            "prompt_per_second": rate(new, s.prompt_secs),
            "predicted_n": s.completion_tokens,
            "predicted_ms": s.gen_secs * 1e3,
            "predicted_per_second": rate(s.completion_tokens, s.gen_secs),
        })
    }

    /// A streamed chunk carrying `text` (and a token's log-probabilities).
    fn text_chunk(&mut self, text: &str, token: Option<&TokenOut>) -> Value {
        let logprobs = match (token, self.top) {
            (Some(t), Some(_)) => match self.kind {
                Kind::Chat => json!({ "content": [self.chat_logprob(t)] }),
                Kind::Completion => {
                    let (tok, lp, top, at) = self.legacy_logprob(t);
                    json!({ "tokens": [tok], "token_logprobs": [lp], "top_logprobs": [top], "text_offset": [at] })
                }
            },
            _ => Value::Null,
        };
        self.offset += text.chars().count();
        let choice = match self.kind {
            Kind::Chat => {
                json!({ "index": 0, "delta": { "content": text }, "logprobs": logprobs, "finish_reason": null })
            }
            Kind::Completion => {
                json!({ "index": 0, "text": text, "logprobs": logprobs, "finish_reason": null })
            }
        };
        self.envelope(true, json!([choice]))
    }
}

fn failed(message: String) -> ApiError {
    ApiError::server(format!("the generation failed: {message}"))
}

async fn whole_reply(
    mut reply: Reply,
    mut rx: UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
) -> ApiResult<Response> {
    let mut text = String::new();
    let mut chat_lp = Vec::new();
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Started { .. } | Event::Trace(..) => {}
            Event::Token(t) => {
                if reply.top.is_some() {
                    match reply.kind {
                        Kind::Chat => chat_lp.push(reply.chat_logprob(&t)),
                        Kind::Completion => {
                            let (a, b, c, d) = reply.legacy_logprob(&t);
                            tokens.push(a);
                            lps.push(b);
                            tops.push(c);
                            offsets.push(d);
                        }
                    }
                }
                reply.offset += t.text.chars().count();
                text.push_str(&t.text);
            }
            Event::Failed(m) => return Err(failed(m)),
            Event::Done(s) => {
                text.push_str(&s.tail);
                let logprobs = match (reply.top, reply.kind) {
                    (None, _) => Value::Null,
                    (Some(_), Kind::Chat) => json!({ "content": chat_lp }),
                    (Some(_), Kind::Completion) => json!({
                        "tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets,
                    }),
                };
                let choice = match reply.kind {
                    Kind::Chat => json!({
                        "index": 0,
                        "message": { "role": "assistant", "content": text },
                        "logprobs": logprobs,
                        "finish_reason": s.finish.name(),
                    }),
                    Kind::Completion => json!({
                        "index": 0, "text": text, "logprobs": logprobs, "finish_reason": s.finish.name(),
                    }),
                };
                let mut body = reply.envelope(false, json!([choice]));
                body["usage"] = Reply::usage(&s);
                body["timings"] = Reply::timings(&s);
                return Ok(Json(body).into_response());
            }
        }
    }
    Err(ApiError::server("the generation ended without an answer"))
}

fn stream_reply(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let data = |v: Value| SseEvent::default().data(v.to_string());
    let events = stream::unfold(
        (reply, rx, guard, false),
        move |(mut reply, mut rx, guard, ended)| async move {
            if ended {
                return None;
            }
            let (out, end) = match rx.recv().await {
                None => (vec![], true),
                Some(Event::Started { .. }) => match reply.kind {
                    Kind::Chat => {
                        let first = json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }]);
                        (vec![data(reply.envelope(true, first))], false)
                    }
                    Kind::Completion => (vec![], false),
                },
                Some(Event::Token(t)) => {
                    if t.text.is_empty() && reply.top.is_none() {
                        (vec![], false)
                    } else {
                        let text = t.text.clone();
                        (vec![data(reply.text_chunk(&text, Some(&t)))], false)
                    }
                }
                Some(Event::Failed(m)) => (vec![data(failed(m).body())], true),
                Some(Event::Trace(..)) => (vec![], false),
                Some(Event::Done(s)) => {
                    let mut out = Vec::new();
                    if !s.tail.is_empty() {
                        out.push(data(reply.text_chunk(&s.tail, None)));
                    }
                    let last = match reply.kind {
                        Kind::Chat => json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": s.finish.name() }]),
                        Kind::Completion => json!([{ "index": 0, "text": "", "logprobs": null, "finish_reason": s.finish.name() }]),
                    };
                    let mut last = reply.envelope(true, last);
                    last["timings"] = Reply::timings(&s);
                    out.push(data(last));
                    if include_usage {
                        let mut u = reply.envelope(true, json!([]));
                        u["usage"] = Reply::usage(&s);
                        out.push(data(u));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    (out, true)
                }
            };
            Some((out, (reply, rx, guard, end)))
        },
    )
    .flat_map(|out| stream::iter(out.into_iter().map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::default())
}
