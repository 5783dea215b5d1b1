//! Small pieces of the screen: durations, icons, shortened store paths, the colour theme
//! (plain when `NO_COLOR` is set) and writing text into a buffer cell by cell.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use unicode_width::UnicodeWidthStr;

use crate::engine::api::{BuildStatus, GoalState, WaitReason};

use super::state::{Category, Goal};

/// `0:41`, `12:03`, `1:02:03`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `3s`, `2m05s`, `1h02m`: for "retry in" and "silent".
pub fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `12.1M`, `768K`, `17B`: [`bytes`] for narrow places.
pub fn short_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// `12.1 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A store path without its hash: `/nix/store/abc…-zlib-1.3` → `…-zlib-1.3`.
pub fn short_path(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 => format!("…-{rest}"),
        _ => base.to_owned(),
    }
}

/// `buildPhase` → `build`.
pub fn short_phase(phase: &str) -> &str {
    phase.strip_suffix("Phase").unwrap_or(phase)
}

/// The status icon of a goal.
pub fn icon(goal: &Goal) -> &'static str {
    match goal.category {
        Category::Waiting => match &goal.state {
            GoalState::Waiting {
                reason: WaitReason::Lock { .. } | WaitReason::BuildUser { .. },
            } => "⧗",
            _ => "⏸",
        },
        Category::Building => "⏵",
        Category::Substituting => "↓",
        Category::Succeeded => "✔",
        Category::Failed => "✘",
        Category::DependencyFailed => "⊘",
        Category::Cancelled => "⊗",
        Category::Skipped => "·",
    }
}

/// What a finished goal's status reads like.
pub fn status_word(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Built => "built",
        BuildStatus::Substituted => "substituted",
        BuildStatus::AlreadyValid => "valid",
        BuildStatus::DependencyFailed => "dependency failed",
        BuildStatus::Cancelled => "cancelled",
        BuildStatus::TimedOut => "timed out",
        BuildStatus::CachedFailure => "cached failure",
        BuildStatus::NoSubstituters => "no substitute",
        BuildStatus::IncompleteClosure => "incomplete closure",
        BuildStatus::NotDeterministic => "not deterministic",
        BuildStatus::LogLimitExceeded => "log limit exceeded",
        BuildStatus::OutputRejected => "output rejected",
        BuildStatus::InputRejected => "input rejected",
        BuildStatus::TransientFailure => "transient failure",
        BuildStatus::MiscFailure => "failed",
        BuildStatus::PermanentFailure => "failed",
    }
}

/// The styles of the screen.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn category(&self, c: Category) -> Style {
        match c {
            Category::Waiting | Category::Skipped => Style::new(),
            Category::Building | Category::Substituting => self.fg(Color::Cyan),
            Category::Succeeded => self.fg(Color::Green),
            Category::Failed => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            Category::DependencyFailed => self.fg(Color::Magenta),
            Category::Cancelled => self.fg(Color::Yellow),
        }
    }

    pub fn lock(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn good(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn focus_border(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn matched(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::UNDERLINED)
    }

    pub fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}

/// A cursor over one line of a buffer: writes text left to right, clipped at the area's
/// right edge.
pub struct Writer<'a> {
    buf: &'a mut Buffer,
    x: u16,
    y: u16,
    end: u16,
}

impl<'a> Writer<'a> {
    /// Writes on line `y` of `area` (relative to the area).
    pub fn new(buf: &'a mut Buffer, area: Rect, y: u16) -> Writer<'a> {
        Writer {
            buf,
            x: area.x,
            y: area.y + y,
            end: area.x + area.width,
        }
    }

    /// Columns left.
    pub fn room(&self) -> u16 {
        self.end.saturating_sub(self.x)
    }

    pub fn text(&mut self, s: &str, style: Style) -> &mut Self {
        if self.x < self.end {
            let (x, _) = self
                .buf
                .set_stringn(self.x, self.y, s, self.room() as usize, style);
            self.x = x;
        }
        self
    }

    pub fn skip(&mut self, n: u16) -> &mut Self {
        self.x = self.x.saturating_add(n).min(self.end);
        self
    }

    /// Writes `s` so that it ends at the right edge, if it fits after `min_gap` columns.
    pub fn right(&mut self, s: &str, style: Style, min_gap: u16) -> &mut Self {
        let w = s.width() as u16;
        if self.room() >= w + min_gap {
            let x = self.end - w;
            self.buf.set_stringn(x, self.y, s, w as usize, style);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_clocks() {
        assert_eq!(duration(41_999), "0:41");
        assert_eq!(duration(723_000), "12:03");
        assert_eq!(duration(3_723_000), "1:02:03");
        assert_eq!(short_duration(3_000), "3s");
        assert_eq!(short_duration(125_000), "2m05s");
        assert_eq!(short_duration(3_720_000), "1h02m");
    }

    #[test]
    fn sizes_and_paths_are_short() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_687_000), "12.1 MiB");
        assert_eq!(
            short_path("/nix/store/i4ajz7a5y42mf0lbpjwqfjxn0dlc756z-diffutils-2.15.5"),
            "…-diffutils-2.15.5"
        );
        assert_eq!(short_path("/tmp/x"), "x");
        assert_eq!(short_phase("buildPhase"), "build");
    }

    #[test]
    fn without_colour_only_modifiers_stay() {
        let plain = Theme { color: false };
        for c in Category::ALL {
            assert_eq!(plain.category(c).fg, None, "{c:?}");
        }
        assert_eq!(plain.dim(), Style::new());
        assert!(plain.selected().add_modifier.contains(Modifier::REVERSED));
        assert_eq!(
            Theme { color: true }.category(Category::Failed).fg,
            Some(Color::Red)
        );
    }

    #[test]
    fn the_writer_clips_at_the_edge() {
        let area = Rect::new(0, 0, 8, 1);
        let mut buf = Buffer::empty(area);
        Writer::new(&mut buf, area, 0)
            .text("abc", Style::new())
            .skip(1)
            .text("defghij", Style::new());
        assert_eq!(buf, Buffer::with_lines(["abc defg"]));
        let mut buf = Buffer::empty(area);
        Writer::new(&mut buf, area, 0)
            .text("ab", Style::new())
            .right("0:41", Style::new(), 1);
        assert_eq!(buf, Buffer::with_lines(["ab  0:41"]));
    }
}
