//! The OpenAI API's requests, read and checked: every field loupe uses is type-checked
//! and range-checked, and every refusal is a 4xx answer in OpenAI's error shape that
//! names the field (`param`) and the value. Fields loupe does not use are ignored, except
//! those whose silent omission would change the answer (`n` > 1, `logit_bias`, `tools`,
//! `echo`, `suffix`, a JSON response format): those are refused.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use loupe_engine::sample::{SamplerError, SamplerSettings};

use crate::chat::template::Message;

/// A refusal, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The request body as a JSON object.
pub fn object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, not {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(key: &str, want: &str, v: &Value) -> ApiError {
    ApiError::invalid(key, format!("`{key}` must be {want}, not {}", kind(v)))
}

/// A present, non-null field.
fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

pub fn opt_bool(m: &Map<String, Value>, key: &str) -> ApiResult<Option<bool>> {
    field(m, key)
        .map(|v| v.as_bool().ok_or_else(|| wrong(key, "a boolean", v)))
        .transpose()
}

pub fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    field(m, key)
        .map(|v| v.as_str().ok_or_else(|| wrong(key, "a string", v)))
        .transpose()
}

fn opt_f32(m: &Map<String, Value>, key: &str) -> ApiResult<Option<f32>> {
    field(m, key)
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .ok_or_else(|| wrong(key, "a finite number", v))
        })
        .transpose()
}

/// An integer field in `lo..=hi`.
fn opt_int(m: &Map<String, Value>, key: &str, lo: i64, hi: i64) -> ApiResult<Option<i64>> {
    let Some(v) = field(m, key) else {
        return Ok(None);
    };
    let n = v
        .as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| wrong(key, "an integer", v))?;
    if !(lo..=hi).contains(&n) {
        return Err(ApiError::invalid(
            key,
            format!("`{key}` must be between {lo} and {hi}, not {n}"),
        ));
    }
    Ok(Some(n))
}

/// What both endpoints share: sampling, length, stops, streaming, log-probabilities.
#[derive(Debug)]
pub struct Common {
    pub model: Option<String>,
    pub sampling: SamplerSettings,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// llama.cpp's server field: generate past end-of-generation tokens (timing).
    pub ignore_eos: bool,
}

pub fn common(m: &Map<String, Value>) -> ApiResult<Common> {
    if let Some(n) = opt_int(m, "n", 1, i64::MAX)? {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("loupe writes one choice per request; `n` must be 1, not {n}"),
            ));
        }
    }
    if let Some(b) = field(m, "logit_bias") {
        let empty = b.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            return Err(ApiError::invalid(
                "logit_bias",
                "`logit_bias` is not supported by loupe",
            ));
        }
    }
    let i32_field = |key| opt_int(m, key, i32::MIN as i64, i32::MAX as i64);
    let sampling = SamplerSettings {
        temp: opt_f32(m, "temperature")?,
        top_k: i32_field("top_k")?.map(|v| v as i32),
        top_p: opt_f32(m, "top_p")?,
        min_p: opt_f32(m, "min_p")?,
        repeat_penalty: opt_f32(m, "repeat_penalty")?,
        repeat_last_n: i32_field("repeat_last_n")?.map(|v| v as i32),
        frequency_penalty: opt_f32(m, "frequency_penalty")?,
        presence_penalty: opt_f32(m, "presence_penalty")?,
        seed: opt_int(m, "seed", i64::MIN, i64::MAX)?.map(|s| s as u64),
        ..Default::default()
    };
    // OpenAI's newer name, its older one, llama.cpp's (-1: no limit).
    let mut max_tokens = None;
    for key in ["max_completion_tokens", "max_tokens", "n_predict"] {
        if let Some(n) = opt_int(m, key, -1, i64::MAX)? {
            max_tokens = usize::try_from(n).ok();
            break;
        }
    }
    let stop = match field(m, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid("stop", "`stop` must be a string or an array of strings")
            })?,
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    };
    if stop.len() > 16 {
        return Err(ApiError::invalid(
            "stop",
            format!("at most 16 stop strings, not {}", stop.len()),
        ));
    }
    let include_usage = match field(m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => opt_bool(o, "include_usage")
            .map_err(|_| {
                ApiError::invalid(
                    "stream_options",
                    "`stream_options.include_usage` must be a boolean",
                )
            })?
            .unwrap_or(false),
        Some(v) => return Err(wrong("stream_options", "an object", v)),
    };
    Ok(Common {
        model: opt_str(m, "model")?.map(str::to_string),
        sampling,
        max_tokens,
        stop,
        stream: opt_bool(m, "stream")?.unwrap_or(false),
        include_usage,
        ignore_eos: opt_bool(m, "ignore_eos")?.unwrap_or(false),
    })
}

/// A sampler setting the engine refused, named as the API field.
pub fn sampler_error(e: SamplerError) -> ApiError {
    match e {
        SamplerError::Invalid {
            option,
            value,
            reason,
        } => {
            let param = match option {
                "temp" => "temperature",
                "top-k" => "top_k",
                "top-p" => "top_p",
                "min-p" => "min_p",
                "repeat-penalty" => "repeat_penalty",
                "repeat-last-n" => "repeat_last_n",
                "frequency-penalty" => "frequency_penalty",
                "presence-penalty" => "presence_penalty",
                other => other,
            };
            ApiError::invalid(param, format!("invalid `{param}` {value}: {reason}"))
        }
        other => ApiError::server(other.to_string()),
    }
}

/// `/v1/chat/completions`: the messages and the chat's log-probability switches.
#[derive(Debug)]
pub struct ChatRequest {
    pub common: Common,
    pub messages: Vec<Message>,
    /// `Some(k)` when `logprobs` is true (k = `top_logprobs`, default 0).
    pub top_logprobs: Option<usize>,
}

pub fn chat(m: &Map<String, Value>) -> ApiResult<ChatRequest> {
    let common = common(m)?;
    for key in ["tools", "functions"] {
        if field(m, key).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(ApiError::invalid(
                key,
                format!("`{key}` (tool calling) is not supported by loupe"),
            ));
        }
    }
    if let Some(f) = field(m, "response_format") {
        let t = f.get("type").and_then(Value::as_str);
        if t != Some("text") {
            return Err(ApiError::invalid(
                "response_format",
                "only `{\"type\": \"text\"}` is supported by loupe",
            ));
        }
    }
    let Some(list) = field(m, "messages") else {
        return Err(ApiError::invalid("messages", "`messages` is required"));
    };
    let list = list
        .as_array()
        .ok_or_else(|| wrong("messages", "an array", list))?;
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, msg) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let o = msg
            .as_object()
            .ok_or_else(|| wrong(&at, "an object", msg))?;
        let role = match o.get("role") {
            Some(Value::String(r)) => match r.as_str() {
                "system" | "user" | "assistant" => r.clone(),
                // OpenAI's newer name for the system message.
                "developer" => "system".to_string(),
                other => {
                    return Err(ApiError::invalid(
                        &format!("{at}.role"),
                        format!(
                            "unknown role {other:?} in {at}: system, developer, user or assistant"
                        ),
                    ))
                }
            },
            Some(v) => return Err(wrong(&format!("{at}.role"), "a string", v)),
            None => {
                return Err(ApiError::invalid(
                    &format!("{at}.role"),
                    format!("{at} has no `role`"),
                ))
            }
        };
        let content = match o.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    let pat = format!("{at}.content[{j}]");
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        (Some(t), _) if t != "text" => {
                            return Err(ApiError::invalid(
                                &pat,
                                format!("{pat} is a {t:?} part; loupe reads text parts only"),
                            ))
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                &pat,
                                format!("{pat} must be {{\"type\": \"text\", \"text\": ...}}"),
                            ))
                        }
                    }
                }
                text
            }
            Some(Value::Null) | None => {
                return Err(ApiError::invalid(
                    &format!("{at}.content"),
                    format!("{at} has no `content`"),
                ))
            }
            Some(v) => {
                return Err(wrong(
                    &format!("{at}.content"),
                    "a string or an array of text parts",
                    v,
                ))
            }
        };
        messages.push(Message { role, content });
    }
    let top_logprobs = match opt_bool(m, "logprobs")? {
        Some(true) => Some(opt_int(m, "top_logprobs", 0, 20)?.unwrap_or(0) as usize),
        _ => {
            if opt_int(m, "top_logprobs", 0, 20)?.is_some_and(|k| k > 0) {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs: true`",
                ));
            }
            None
        }
    };
    Ok(ChatRequest {
        common,
        messages,
        top_logprobs,
    })
}

/// What `/v1/completions` continues: text, or token ids.
#[derive(Debug)]
pub enum PromptIn {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug)]
pub struct CompletionRequest {
    pub common: Common,
    pub prompt: PromptIn,
    /// `logprobs` (the legacy integer: how many alternatives per token).
    pub top_logprobs: Option<usize>,
}

pub fn completion(m: &Map<String, Value>, n_vocab: usize) -> ApiResult<CompletionRequest> {
    let common = common(m)?;
    if opt_bool(m, "echo")? == Some(true) {
        return Err(ApiError::invalid(
            "echo",
            "`echo` is not supported by loupe",
        ));
    }
    if opt_str(m, "suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix",
            "`suffix` is not supported by loupe",
        ));
    }
    if opt_int(m, "best_of", 1, i64::MAX)?.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid("best_of", "`best_of` must be 1 in loupe"));
    }
    let ids = |a: &[Value]| -> ApiResult<Vec<u32>> {
        a.iter()
            .map(|v| {
                v.as_u64()
                    .filter(|&id| id < n_vocab as u64)
                    .map(|id| id as u32)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "prompt",
                            format!("token id {v} is not in the vocabulary (0..{n_vocab})"),
                        )
                    })
            })
            .collect()
    };
    let prompt = match field(m, "prompt") {
        None => return Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(Value::String(s)) => PromptIn::Text(s.clone()),
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => PromptIn::Text(s.clone()),
            [Value::Array(inner)] => PromptIn::Tokens(ids(inner)?),
            items if !items.is_empty() && items.iter().all(Value::is_number) => PromptIn::Tokens(ids(items)?),
            [] => return Err(ApiError::invalid("prompt", "`prompt` is empty")),
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "`prompt` must be a string, an array of token ids, or an array holding one of those (loupe completes one prompt per request)",
                ))
            }
        },
        Some(v) => return Err(wrong("prompt", "a string or an array of token ids", v)),
    };
    if matches!(&prompt, PromptIn::Tokens(t) if t.is_empty()) {
        return Err(ApiError::invalid("prompt", "`prompt` holds no token ids"));
    }
    let top_logprobs = opt_int(m, "logprobs", 0, 20)?.map(|k| k as usize);
    Ok(CompletionRequest {
        common,
        prompt,
        top_logprobs,
    })
}

/// `/v1/next` (loupe's own): the next-token distribution after a text or a conversation,
/// after each sampler stage.
#[derive(Debug)]
pub struct NextRequest {
    pub common: Common,
    /// A text (read as `/v1/completions` reads it) or a conversation (rendered with the
    /// chat template, ending with the assistant's header).
    pub prompt: Option<PromptIn>,
    pub messages: Option<Vec<Message>>,
    pub top: usize,
}

pub fn next(m: &Map<String, Value>, n_vocab: usize) -> ApiResult<NextRequest> {
    let top = opt_int(m, "top", 1, 1000)?.unwrap_or(10) as usize;
    match (field(m, "prompt").is_some(), field(m, "messages").is_some()) {
        (true, false) => {
            let c = completion(m, n_vocab)?;
            Ok(NextRequest {
                common: c.common,
                prompt: Some(c.prompt),
                messages: None,
                top,
            })
        }
        (false, true) => {
            let c = chat(m)?;
            Ok(NextRequest {
                common: c.common,
                prompt: None,
                messages: Some(c.messages),
                top,
            })
        }
        _ => Err(ApiError::bad_request(
            "give `prompt` (a text) or `messages` (a conversation), one of them",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        object(s.as_bytes()).unwrap()
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = common(&obj(r#"{"temperature": "hot"}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.contains("a string"), "{}", e.message);
        let e = chat(&obj(r#"{"messages": [{"role": "user", "content": 3}]}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = chat(&obj(r#"{"messages": [{"role": "robot", "content": "x"}]}"#)).unwrap_err();
        assert!(e.message.contains("robot"));
        let e = common(&obj(r#"{"n": 2}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        assert!(object(b"[1]").is_err() && object(b"{").is_err());
    }

    #[test]
    fn odd_bodies_are_refused_not_panicked_on() {
        let bodies = [
            "null",
            "0",
            "\"x\"",
            "{}",
            r#"{"messages": null}"#,
            r#"{"messages": [null]}"#,
            r#"{"messages": [{"content": "x"}]}"#,
            r#"{"messages": [{"role": 1, "content": "x"}]}"#,
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
            r#"{"messages": [{"role": "user", "content": [7]}]}"#,
            r#"{"messages": [], "max_tokens": 1e300}"#,
            r#"{"stop": [1]}"#,
            r#"{"stop": {}}"#,
            r#"{"stream_options": 3}"#,
            r#"{"seed": "1"}"#,
            r#"{"top_logprobs": 99, "logprobs": true}"#,
            r#"{"logit_bias": {"1": 5}}"#,
            r#"{"tools": [{}]}"#,
            r#"{"response_format": {"type": "json_object"}}"#,
            r#"{"prompt": []}"#,
            r#"{"prompt": [[]]}"#,
            r#"{"prompt": [-1]}"#,
            r#"{"prompt": ["a", "b"]}"#,
            r#"{"prompt": "x", "echo": true}"#,
            r#"{"prompt": "x", "best_of": 3}"#,
        ];
        for b in bodies {
            let Ok(m) = object(b.as_bytes()) else {
                continue;
            };
            assert!(chat(&m).is_err(), "{b}");
            if m.contains_key("prompt") || m.is_empty() {
                assert!(completion(&m, 10).is_err(), "{b}");
            }
        }
    }

    #[test]
    fn limits_stops_and_parts_are_read() {
        let c = common(&obj(r#"{"max_tokens": 7, "stop": "\n", "stream": true}"#)).unwrap();
        assert_eq!(
            (c.max_tokens, c.stop.as_slice(), c.stream),
            (Some(7), &["\n".to_string()][..], true)
        );
        assert_eq!(
            common(&obj(r#"{"n_predict": -1}"#)).unwrap().max_tokens,
            None
        );
        assert!(common(&obj(r#"{"max_tokens": -2}"#)).is_err());
        let r = chat(&obj(
            r#"{"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "logprobs": true, "top_logprobs": 3}"#,
        ))
        .unwrap();
        assert_eq!(r.messages, vec![Message::new("system", "ab")]);
        assert_eq!(r.top_logprobs, Some(3));
        let p = completion(&obj(r#"{"prompt": [[1, 2]]}"#), 10).unwrap();
        assert!(matches!(p.prompt, PromptIn::Tokens(ref t) if t == &[1, 2]));
        assert!(completion(&obj(r#"{"prompt": [1, 99]}"#), 10).is_err());
    }
}
