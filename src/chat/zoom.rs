//! `/zoom`: how sure the model was of each token of the last reply, and the candidates it
//! weighed at any one of them.

use anyhow::{bail, Result};

use super::conversation::TokenRecord;
use super::ui::Style;
use loupe_engine::tokenizer::Tokenizer;

/// A token's text for display: control characters escaped, quoted.
pub fn piece(tok: &Tokenizer, id: u32) -> String {
    let raw = String::from_utf8_lossy(tok.token_piece(id, true)).into_owned();
    format!("{:?}", raw)
}

/// One line under a zoomed reply: count, mean probability, the least sure token.
pub fn summary(records: &[TokenRecord], tok: &Tokenizer, st: Style) -> String {
    if records.is_empty() {
        return st.dim("[zoom: no tokens]");
    }
    let mean = records.iter().map(|r| r.p as f64).sum::<f64>() / records.len() as f64;
    let (i, least) = records
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.p.total_cmp(&b.1.p))
        .expect("not empty");
    st.dim(&format!(
        "[zoom: {} tokens, mean p {:.2}, least sure #{} {} at {:.2} · /zoom N shows the candidates at token N]",
        records.len(),
        mean,
        i + 1,
        piece(tok, least.id),
        least.p
    ))
}

/// Every token of the last reply with its probability, coloured by confidence, a few to a
/// line: `1 "In" 45%  2 " Rust" 98% …`.
pub fn probabilities(records: &[TokenRecord], tok: &Tokenizer, st: Style) -> String {
    let mut out = String::new();
    let mut width = 0;
    for (i, r) in records.iter().enumerate() {
        let cell = format!("{} {} {:.0}%", i + 1, piece(tok, r.id), r.p * 100.0);
        let w = cell.chars().count() + 2;
        if width > 0 && width + w > 96 {
            out.push('\n');
            width = 0;
        }
        out.push_str(&st.confidence(r.p, &cell));
        out.push_str("  ");
        width += w;
    }
    out
}

/// The candidates the model weighed at token `n` (1-based) of the last reply.
pub fn table(records: &[TokenRecord], n: usize, tok: &Tokenizer, st: Style) -> Result<String> {
    if records.is_empty() {
        bail!("no reply to zoom into yet");
    }
    let Some(r) = n.checked_sub(1).and_then(|i| records.get(i)) else {
        bail!(
            "the last reply has {} tokens: /zoom 1 to /zoom {}",
            records.len(),
            records.len()
        );
    };
    let mut out = format!(
        "token {n} of {}: {} chosen at p {:.3}\n",
        records.len(),
        piece(tok, r.id),
        r.p
    );
    for (rank, &(id, p)) in r.top.iter().enumerate() {
        let n = (p * 30.0).round() as usize;
        let bar = format!("{}{}", "█".repeat(n), " ".repeat(30 - n.min(30)));
        let mark = if id == r.id { " ◀ chosen" } else { "" };
        out.push_str(&format!(
            "  {:>2}. {:>6.2}%  {}  {}{}\n",
            rank + 1,
            p * 100.0,
            st.confidence(p, &bar),
            piece(tok, id),
            mark
        ));
    }
    if !r.top.iter().any(|&(id, _)| id == r.id) {
        out.push_str(&format!(
            "  (the chosen token was outside the top {})\n",
            r.top.len()
        ));
    }
    Ok(out)
}
