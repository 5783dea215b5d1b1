//! Splitting a builder's output into log lines as Nix does: `\n` ends a line, `\r` moves back
//! to its start (progress bars overwrite themselves), and a line `@nix {json}` is a structured
//! message, not a log line: `setPhase` reports the builder's phase; other actions (activities,
//! messages) are not shown.
//!
//! A line longer than [`MAX_LINE`] is cut there: memory stays bounded, and the scheduler (which
//! counts log bytes by line for `max-build-log-size`) sees a builder that never ends a line.

/// The longest line kept whole.
pub const MAX_LINE: usize = 1 << 20;

/// What one line of builder output means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Line(String),
    Phase(String),
}

/// Turns chunks of output into [`LogEvent`]s.
#[derive(Debug, Default)]
pub struct LogLines {
    line: Vec<u8>,
    pos: usize,
}

impl LogLines {
    /// Feeds the next bytes; the events of the lines they complete.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<LogEvent>) {
        for &c in data {
            match c {
                b'\r' => self.pos = 0,
                b'\n' => out.extend(self.flush()),
                c => {
                    if self.pos >= MAX_LINE {
                        out.extend(self.flush());
                    }
                    if self.pos >= self.line.len() {
                        self.line.resize(self.pos + 1, 0);
                    }
                    self.line[self.pos] = c;
                    self.pos += 1;
                }
            }
        }
    }

    /// The end of the output: a last unterminated line, if any.
    pub fn finish(&mut self) -> Vec<LogEvent> {
        if self.line.is_empty() {
            return Vec::new();
        }
        self.flush().into_iter().collect()
    }

    fn flush(&mut self) -> Option<LogEvent> {
        let line = std::mem::take(&mut self.line);
        self.pos = 0;
        if let Some(json) = line.strip_prefix(b"@nix ")
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(json)
        {
            if value["action"] == "setPhase"
                && let Some(phase) = value["phase"].as_str()
            {
                return Some(LogEvent::Phase(phase.to_owned()));
            }
            return None;
        }
        Some(LogEvent::Line(String::from_utf8_lossy(&line).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<LogEvent> {
        let mut l = LogLines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, &mut out);
        }
        out.extend(l.finish());
        out
    }

    #[test]
    fn lines_carriage_returns_and_phases() {
        let line = |s: &str| LogEvent::Line(s.into());
        assert_eq!(
            lines(&[b"a\nb", b"c\n10%\r20%\rdone\n", b"last"]),
            vec![line("a"), line("bc"), line("done"), line("last")]
        );
        assert_eq!(lines(&[b"abcdef\rxy\n"]), vec![line("xycdef")]);
        assert_eq!(
            lines(&[
                b"@nix {\"action\":\"setPhase\",\"phase\":\"buildPhase\"}\n",
                b"@nix {\"action\":\"msg\",\"level\":0,\"msg\":\"hi\"}\n@nix broken\n"
            ]),
            vec![LogEvent::Phase("buildPhase".into()), line("@nix broken")]
        );
        assert_eq!(lines(&[b"\n"]), vec![line("")]);
    }

    #[test]
    fn endless_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = lines(&[&long]);
        let lens: Vec<usize> = got
            .iter()
            .map(|e| match e {
                LogEvent::Line(l) => l.len(),
                LogEvent::Phase(_) => 0,
            })
            .collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 5]);
    }
}
