//! Output for people: sizes, counts, and a progress line.

use std::io::{IsTerminal, Write};

/// One status line on stderr for long work: redrawn in place on a terminal; elsewhere
/// (a log file, a pipe) each update is a line of its own, or nothing when made with
/// [`ProgressLine::terminal_only`].
pub struct ProgressLine {
    tty: bool,
    off_tty: bool,
    drawn: bool,
}

impl ProgressLine {
    pub fn new() -> ProgressLine {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            off_tty: true,
            drawn: false,
        }
    }

    /// A line shown only on a terminal (updates too frequent for a log).
    pub fn terminal_only() -> ProgressLine {
        ProgressLine {
            off_tty: false,
            ..ProgressLine::new()
        }
    }

    pub fn show(&mut self, line: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else if self.off_tty {
            eprintln!("{line}");
        }
    }

    /// End the line drawn in place, so what follows starts on a line of its own.
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.drawn) {
            eprintln!();
        }
    }
}

impl Default for ProgressLine {
    fn default() -> Self {
        ProgressLine::new()
    }
}

/// 253113024 → "241.4 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// 494032768 → "494.03 M", 7241732096 → "7.24 B".
pub fn count(n: u64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.2} B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} K", v / 1e3)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(253_113_024), "241.4 MiB");
        assert_eq!(super::count(494_032_768), "494.03 M");
        assert_eq!(super::count(999), "999");
    }
}
