//! The slash commands of the REPL: parsing, `/help`, `/set`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use super::conversation::{check_n_predict, Conversation};
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::session::Session;

pub const HELP: &str = "\
Type a message and press Enter. Alt+Enter starts a new line; a line of \"\"\" opens and
closes a multi-line block; pasted text keeps its newlines; a message starting with //
is sent with one / less. Ctrl-C stops a reply (what was written stays) or the reading of
a long prompt; at an empty prompt, Ctrl-C twice or Ctrl-D leaves.

  /help               this text
  /system [TEXT]      set the system prompt (no TEXT: show it; /system - removes it)
  /reset              start over (the system prompt stays)
  /undo               drop the last exchange and rewind the cache
  /regen              a new answer to the last message
  /edit N [TEXT]      rewrite your message N and continue from there (no TEXT: edit it)
  /save FILE          save the conversation with its KV cache
  /load FILE          load a saved conversation; nothing is evaluated again
  /set KEY VALUE      temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n,
                      frequency-penalty, presence-penalty, seed, n (reply limit, -1 = none),
                      policy (shift or stop)
  /show               model, template, sampler chain and where each setting came from
  /stats              the last turn's numbers
  /context            what the context holds, message by message
  /zoom [N]           toggle colouring each token by the model's confidence; with N,
                      the candidates at token N of the last reply
  /exit               leave (Ctrl-D too)";

#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    System(Option<String>),
    Reset,
    Undo,
    Regen,
    Edit(usize, Option<String>),
    Save(PathBuf),
    Load(PathBuf),
    Set(String, String),
    Show,
    Stats,
    Context,
    Zoom(Option<usize>),
    Exit,
}

/// The command's name as typed (`/zoom`).
pub fn name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Help => "/help",
        Command::System(_) => "/system",
        Command::Reset => "/reset",
        Command::Undo => "/undo",
        Command::Regen => "/regen",
        Command::Edit(..) => "/edit",
        Command::Save(_) => "/save",
        Command::Load(_) => "/load",
        Command::Set(..) => "/set",
        Command::Show => "/show",
        Command::Stats => "/stats",
        Command::Context => "/context",
        Command::Zoom(_) => "/zoom",
        Command::Exit => "/exit",
    }
}

/// Parse a line starting with `/`.
pub fn parse(line: &str) -> Result<Command> {
    let line = line.trim();
    let (name, rest) = match line.split_once(char::is_whitespace) {
        Some((n, r)) => (n, r.trim()),
        None => (line, ""),
    };
    let arg = (!rest.is_empty()).then(|| rest.to_string());
    let path = |what: &str| -> Result<PathBuf> {
        arg.clone()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("{what} needs a file name, e.g. {what} chat.session"))
    };
    Ok(match name {
        "/help" | "/?" => Command::Help,
        "/system" => Command::System(arg),
        "/reset" | "/clear" => Command::Reset,
        "/undo" => Command::Undo,
        "/regen" => Command::Regen,
        "/edit" => {
            let (n, text) = match rest.split_once(char::is_whitespace) {
                Some((n, t)) => (n, Some(t.trim().to_string())),
                None => (rest, None),
            };
            let n = n
                .parse()
                .map_err(|_| anyhow!("/edit needs a message number (see /context)"))?;
            Command::Edit(n, text.filter(|t| !t.is_empty()))
        }
        "/save" => Command::Save(path("/save")?),
        "/load" => Command::Load(path("/load")?),
        "/set" => {
            let Some((k, v)) = rest.split_once(char::is_whitespace) else {
                bail!("/set needs a key and a value, e.g. /set temp 0.7 (see /help)");
            };
            Command::Set(k.to_string(), v.trim().to_string())
        }
        "/show" => Command::Show,
        "/stats" => Command::Stats,
        "/context" | "/ctx" => Command::Context,
        "/zoom" => Command::Zoom(match arg {
            Some(a) => Some(
                a.parse()
                    .map_err(|_| anyhow!("/zoom takes a token number, e.g. /zoom 3"))?,
            ),
            None => None,
        }),
        "/exit" | "/quit" | "/bye" => Command::Exit,
        other => bail!("unknown command {other}: /help lists them"),
    })
}

/// The KV cache a session holds, for the stats line and `/context`:
/// "KV cache 36.0 MiB f16" (its whole size for --ctx, allocated up front).
pub fn kv_cache(session: &Session, kv: KvTypes) -> String {
    let bytes = kv
        .bytes_per_token(&session.model().config)
        .map_or(0, |b| b.saturating_mul(session.n_ctx() as u64));
    format!(
        "KV cache {:.1} MiB {kv}",
        bytes as f64 / (1u64 << 20) as f64
    )
}

/// The first line of `/context`: the context budget, used and in all, and its cache.
pub fn context_budget(conv: &Conversation, kv: KvTypes) -> String {
    format!(
        "{} of {} tokens in the cache ({}) · policy {}",
        conv.session.len(),
        conv.session.n_ctx(),
        kv_cache(&conv.session, kv),
        conv.policy
    )
}

/// The per-turn stats line with the KV cache, and where the layers run when a GPU has
/// some, added before its closing bracket.
pub fn stats_line(line: &str, session: &Session, kv: KvTypes) -> String {
    let body = line.strip_suffix(']').unwrap_or(line);
    let close = if body.len() < line.len() { "]" } else { "" };
    let gpu = session
        .model()
        .gpu_placement()
        .map_or(String::new(), |p| format!(" · {p}"));
    format!("{body} · {}{gpu}{close}", kv_cache(session, kv))
}

/// `/set KEY VALUE`: change a sampler setting, the reply limit or the context policy.
/// Returns what was set, for the confirmation line.
pub fn set(conv: &mut Conversation, key: &str, value: &str) -> Result<String> {
    fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
        v.parse()
            .map_err(|_| anyhow!("{v:?} is not a valid value for {key}"))
    }
    let key = key.trim_start_matches("--");
    let mut a = conv.sampler_settings.clone();
    match key {
        "temp" | "temperature" => a.temp = Some(num(key, value)?),
        "top-k" | "top_k" => a.top_k = Some(num(key, value)?),
        "top-p" | "top_p" => a.top_p = Some(num(key, value)?),
        "min-p" | "min_p" => a.min_p = Some(num(key, value)?),
        "repeat-penalty" => a.repeat_penalty = Some(num(key, value)?),
        "repeat-last-n" => a.repeat_last_n = Some(num(key, value)?),
        "frequency-penalty" => a.frequency_penalty = Some(num(key, value)?),
        "presence-penalty" => a.presence_penalty = Some(num(key, value)?),
        "seed" => a.seed = Some(num(key, value)?),
        "n" | "n-predict" => {
            conv.n_predict = check_n_predict(num(key, value)?)?;
            return Ok(format!("reply limit = {}", conv.n_predict));
        }
        "policy" | "context-policy" => {
            conv.policy = value.parse().map_err(|e: String| anyhow!(e))?;
            return Ok(format!("context policy = {}", conv.policy));
        }
        other => bail!("unknown setting {other:?}: /help lists the keys"),
    }
    conv.set_sampler(a)?;
    Ok(format!("{key} = {value} · {}", conv.sampler.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("/undo").unwrap(), Command::Undo);
        assert_eq!(
            parse("/edit 2 new text here").unwrap(),
            Command::Edit(2, Some("new text here".into()))
        );
        assert_eq!(parse("/edit 1").unwrap(), Command::Edit(1, None));
        assert_eq!(
            parse("/set temp 0.5").unwrap(),
            Command::Set("temp".into(), "0.5".into())
        );
        assert_eq!(parse("/zoom").unwrap(), Command::Zoom(None));
        assert_eq!(parse("/zoom 3").unwrap(), Command::Zoom(Some(3)));
        assert_eq!(
            parse("/save a b.ses").unwrap(),
            Command::Save("a b.ses".into())
        );
        assert!(parse("/save").is_err());
        assert!(parse("/frobnicate").is_err());
        assert!(parse("/edit x").is_err());
    }
}
