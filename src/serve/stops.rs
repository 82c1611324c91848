//! Stop strings: the generated text is cut before the first one, and no part of it is
//! sent early. Text that could be the start of a stop string is held back until the
//! next token shows whether it is.

/// Scans generated text for the request's stop strings.
pub struct StopScanner {
    stops: Vec<String>,
    /// Text received and not yet released.
    held: String,
}

impl StopScanner {
    pub fn new(stops: &[String]) -> StopScanner {
        StopScanner {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Take the next piece of text. Returns the text that can be released now and
    /// whether a stop string was found (then the text is everything before it, and the
    /// generation should end).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self.partial_suffix();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// The generation ended without a stop string: release what was held.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of the held text that begins some stop string.
    fn partial_suffix(&self) -> usize {
        let h = &self.held;
        h.char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&h[i..])))
            .map_or(0, |i| h.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::StopScanner;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = StopScanner::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = s.push(p);
            out += &t;
            if hit {
                return (out, true);
            }
        }
        out += &s.finish();
        (out, false)
    }

    #[test]
    fn text_stops_before_a_stop_string_split_across_tokens() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there", "\n", "Us", "er:", " more"]),
            ("Hi there".into(), true)
        );
    }

    #[test]
    fn a_false_start_is_released() {
        let stops = vec!["END".to_string()];
        let mut s = StopScanner::new(&stops);
        assert_eq!(s.push("a E"), ("a ".into(), false));
        assert_eq!(s.push("N"), ("".into(), false));
        assert_eq!(s.push("x"), ("ENx".into(), false));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_cut_cleanly() {
        assert_eq!(run(&["b", "é"], &["aéb"]), ("a".into(), true));
        assert_eq!(run(&["éé"], &["aé", "x"]), ("aéx".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a"]), ("a".into(), false));
    }
}
