//! How loupe shows an error: its message, then each cause once, joined by ": ".

/// `e` and its causes on one line. A cause whose text the message before it already shows
/// (errors written as `"{path}: {source}"` that also return `source` as their cause) is
/// not repeated, so no cause is printed twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use anyhow::Context as _;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Io {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::from_raw_os_error(21);
        let msg = io.to_string();
        let e = anyhow::Error::from(Io {
            path: "/tmp".into(),
            source: io,
        });
        let e = Err::<(), _>(e).context("cannot save").unwrap_err();
        let text = error_text(&e);
        assert_eq!(text, format!("cannot save: /tmp: {msg}"));
        assert_eq!(text.matches(&msg).count(), 1, "{text}");
        // Causes the message does not show are all there.
        let e = Err::<(), _>(anyhow::anyhow!("inner"))
            .context("middle")
            .context("outer")
            .unwrap_err();
        assert_eq!(error_text(&e), "outer: middle: inner");
    }
}
