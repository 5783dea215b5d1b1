//! Layout and drawing: one frame of the [`Ui`] at a given run time. Rows are written straight
//! into the frame's buffer and only the visible ones are looked at, so a frame of a huge
//! graph costs what the screen shows (plus the rows' flattening when the graph changed).
//!
//! ```text
//!  header: counts, slots, keep-going, pause/drain, elapsed, ETA
//!  ┌ Goal graph ──────────┐┌ Build slots ─────────────┐
//!  │ tree of goals        ││ slot: goal phase time... │
//!  │                      │└──────────────────────────┘
//!  │                      │┌ Lock waits ──────────────┐   (the summary, once done)
//!  └──────────────────────┘└──────────────────────────┘
//!  ┌ Log: goal (follow) ───────────────┐┌ Engine messages ┐ (toggled)
//!  └───────────────────────────────────┘└─────────────────┘
//!  footer: keys, question, search input or notice
//! ```

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Block, Borders, Clear, Widget};
use unicode_width::UnicodeWidthStr;

use crate::engine::api::{GoalState, InputStage, RunningDetail, Time, WaitReason};

use super::keys::BINDINGS;
use super::state::{Category, Goal, RunPhase};
use super::tree::matches;
use super::ui::{Confirm, Editing, LogLines, LogView, Pane, Ui};
use super::widgets::{
    Writer, duration, icon, short_bytes, short_duration, short_path, short_phase, status_word,
};

/// The smallest screen the full layout needs.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// Lines of a lock wait in the lock waits pane.
pub const LOCK_ROW_LINES: usize = 2;

/// Silence after which a build's "silent" time shows, and after which it warns.
const SILENT_SHOWN_MS: u64 = 5_000;
const SILENT_WARN_MS: u64 = 60_000;

/// Columns of indentation of a row at `depth` in a pane `width` wide (deep trees stop
/// indenting at a sixth of the width).
pub fn indent_width(depth: u32, width: u16) -> u16 {
    let max_levels = u32::from(width / 12).max(1);
    (depth.min(max_levels) * 2) as u16
}

/// Draws the whole screen at run time `now`.
pub fn render(ui: &mut Ui, now: Time, frame: &mut Frame) {
    let area = frame.area();
    let buf = frame.buffer_mut();
    render_to(ui, now, area, buf);
}

/// Draws into a buffer (what [`render`] does with a frame's).
pub fn render_to(ui: &mut Ui, now: Time, area: Rect, buf: &mut Buffer) {
    ui.frames += 1;
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        ui.areas = Default::default();
        too_small(ui, area, buf);
        return;
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let log_height = (body.height * 3 / 8).max(7);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(log_height)]).areas(body);
    let [graph, side] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    draw_header(ui, now, header, buf);
    draw_graph(ui, now, graph, buf);
    if ui.view.is_running() {
        draw_side(ui, now, side, buf);
    } else {
        ui.areas.slots = Rect::default();
        ui.areas.locks = Rect::default();
        draw_summary(ui, side, buf);
    }
    if ui.messages {
        let [log, messages] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(bottom);
        draw_log(ui, log, buf);
        draw_messages(ui, messages, buf);
    } else {
        draw_log(ui, bottom, buf);
    }
    draw_footer(ui, footer, buf);
    if ui.help {
        draw_help(ui, area, buf);
    }
}

fn too_small(ui: &Ui, area: Rect, buf: &mut Buffer) {
    let v = &ui.view;
    let text = format!(
        "drover: the terminal is {}x{}, the screen needs {MIN_WIDTH}x{MIN_HEIGHT} · ✔ {} ⏵ {} ⚠ {} · q quits",
        area.width,
        area.height,
        v.count(Category::Succeeded),
        v.count(Category::Building) + v.count(Category::Substituting),
        v.count(Category::Failed),
    );
    if area.height > 0 {
        Writer::new(buf, area, 0).text(&text, ui.theme.warn());
    }
}

fn pane(ui: &Ui, title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        ui.theme.focus_border()
    } else {
        Style::new()
    };
    Block::new()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

fn draw_header(ui: &mut Ui, now: Time, area: Rect, buf: &mut Buffer) {
    // The clock first: the counts give way to it when the line is short.
    let clock = match ui.view.phase {
        RunPhase::Running => {
            let eta = ui.eta(now);
            let eta = if eta.known {
                duration(eta.remaining_ms)
            } else {
                "?".into()
            };
            format!(" {} ─ ETA {eta} ", duration(now.as_millis()))
        }
        RunPhase::Done { at, exit_status } => {
            format!(
                " done in {} ─ exit {exit_status} ",
                duration(at.as_millis())
            )
        }
    };
    let clock_width = clock.width() as u16;
    Writer::new(buf, area, 0).right(&clock, Style::new(), 0);
    let left = Rect {
        width: area.width.saturating_sub(clock_width),
        ..area
    };
    let t = ui.theme;
    let v = &ui.view;
    let building = v.count(Category::Building);
    let wide = area.width >= 100;
    let mut w = Writer::new(buf, left, 0);
    w.text(&format!(" {} ", ui.title), t.title());
    let slots = match (&ui.read_only, wide) {
        // Watching: the settings of the run are not known.
        (Some(_), _) => format!("─ building {building} ─ "),
        (None, true) => format!("─ building {building}/{} slots ─ ", v.controls.max_jobs),
        (None, false) => format!("─ {building}/{} slots ─ ", v.controls.max_jobs),
    };
    w.text(&slots, Style::new());
    w.text(&format!("✔ {} ", v.count(Category::Succeeded)), t.good());
    w.text(&format!("⏵ {building} "), t.category(Category::Building));
    w.text(&format!("⏸ {} ", v.count(Category::Waiting)), Style::new());
    let failed = v.count(Category::Failed);
    let failed_style = if failed > 0 { t.error() } else { Style::new() };
    w.text(&format!("⚠ {failed} "), failed_style);
    let dep = v.count(Category::DependencyFailed) + v.count(Category::Cancelled);
    if dep > 0 {
        w.text(&format!("⊘ {dep} "), t.category(Category::DependencyFailed));
    }
    let subst = v.count(Category::Substituting);
    if subst > 0 || v.progress.download.expected > 0 {
        w.text(&format!("↓ {subst} "), t.category(Category::Substituting));
        if v.progress.download.expected > 0 {
            w.text(
                &format!(
                    "{}/{} ",
                    super::widgets::bytes(v.progress.download.done),
                    super::widgets::bytes(v.progress.download.expected)
                ),
                t.dim(),
            );
        }
    }
    if ui.read_only.is_some() {
        // What is watched is said in the footer.
        w.text("─ READ-ONLY ", t.warn());
    } else {
        let kg = if v.controls.keep_going { "ON" } else { "off" };
        let kg_style = if v.controls.keep_going {
            t.good()
        } else {
            Style::new()
        };
        w.text("─ keep-going ", Style::new())
            .text(kg, kg_style)
            .skip(1);
    }
    if v.controls.paused {
        w.text("─ PAUSED ", t.warn());
    }
    if v.controls.draining {
        w.text("─ DRAINING ", t.warn());
    }
    if ui.stopping && v.is_running() {
        w.text("─ STOPPING ", t.warn());
    }
    if v.dropped_events > 0 {
        w.text(&format!("─ {} events lost ", v.dropped_events), t.warn());
    }
    if ui.detached {
        let gone = if ui.read_only.is_some() {
            "─ STREAM ENDED "
        } else {
            "─ ENGINE GONE "
        };
        w.text(gone, t.error());
    }
}

/// What a goal is doing, in words, and the style to say it in.
fn detail(ui: &Ui, goal: &Goal, now: Time) -> (String, Style) {
    let t = ui.theme;
    let retry_in = |at: Option<Time>| {
        at.filter(|&at| at > now)
            .map(|at| format!(", retry in {}", short_duration(at.millis_since(now))))
            .unwrap_or_default()
    };
    match &goal.state {
        GoalState::Waiting { reason } => {
            let text = match reason {
                WaitReason::Inputs { pending, stage } => match stage {
                    InputStage::Inputs => format!(
                        "waiting: {pending} input{}",
                        if *pending == 1 { "" } else { "s" }
                    ),
                    InputStage::References => format!("waiting: {pending} references"),
                    InputStage::Derivation => "fetching the .drv".into(),
                    InputStage::OutputSubstitutes => "trying substitutes".into(),
                    InputStage::ClosureRepair => "repairing the closure".into(),
                },
                WaitReason::BuildSlot => "waiting: build slot".into(),
                WaitReason::Lock {
                    holder, retry_at, ..
                } => {
                    let mut s = "waiting: lock".to_owned();
                    if let Some(h) = holder {
                        match (h.pid, &h.command) {
                            (Some(pid), Some(cmd)) => s += &format!(" (pid {pid} {cmd})"),
                            (Some(pid), None) => s += &format!(" (pid {pid})"),
                            (None, Some(cmd)) => s += &format!(" ({cmd})"),
                            (None, None) => {}
                        }
                    }
                    s + &retry_in(*retry_at)
                }
                WaitReason::BuildUser { retry_at } => {
                    format!("waiting: build user{}", retry_in(Some(*retry_at)))
                }
                WaitReason::Substituter { substituter } => format!("asking {substituter}"),
                WaitReason::Paused => "paused".into(),
            };
            let style = if matches!(
                reason,
                WaitReason::Lock { .. } | WaitReason::BuildUser { .. }
            ) {
                t.lock()
            } else {
                t.dim()
            };
            (text, style)
        }
        GoalState::Running { detail } => {
            let text = match detail {
                RunningDetail::Build {
                    round, nr_rounds, ..
                } => {
                    let phase = goal.phase.as_deref().map_or("building", short_phase);
                    if *nr_rounds > 1 {
                        format!("{phase} (round {round}/{nr_rounds})")
                    } else {
                        phase.to_owned()
                    }
                }
                RunningDetail::Substitution { substituter, .. } => format!("from {substituter}"),
            };
            (text, t.category(goal.category))
        }
        GoalState::Done { status } => {
            let word = status_word(*status);
            let text = match goal.category {
                _ if ui.read_only.is_some() => goal.exit_detail().unwrap_or_else(|| word.into()),
                Category::Failed => {
                    format!(
                        "{}  [r]etry",
                        goal.exit_detail().unwrap_or_else(|| word.into())
                    )
                }
                Category::Cancelled => format!("{word}  [r]etry"),
                _ => word.to_owned(),
            };
            (text, t.category(goal.category))
        }
    }
}

/// The time column of a goal: how long it ran and what its history expects.
fn times(goal: &Goal, now: Time) -> String {
    let expected = goal.expected_ms.map(|e| format!("∅{}", duration(e)));
    match (goal.category, goal.elapsed(now)) {
        (c, Some(e)) if c.is_running() => match expected {
            Some(x) => format!("{} {x}", duration(e)),
            None => duration(e),
        },
        (c, Some(e)) if c.is_done() => duration(e),
        (Category::Waiting, _) => expected.unwrap_or_default(),
        _ => String::new(),
    }
}

fn draw_graph(ui: &mut Ui, now: Time, area: Rect, buf: &mut Buffer) {
    let mut title = format!(" Goal graph · {} goals ", ui.view.goals.len());
    if ui.filter != super::tree::Filter::All {
        title += &format!("· filter: {} ", ui.filter.label());
    }
    if !ui.search.is_empty() || ui.editing == Editing::GoalSearch {
        let n = ui.rows().iter().filter(|r| r.matched).count();
        title += &format!(
            "· /{}: {n} match{} ",
            ui.search,
            if n == 1 { "" } else { "es" }
        );
    }
    let block = pane(ui, title, ui.focus == Pane::Graph);
    let inner = block.inner(area);
    block.render(area, buf);
    ui.areas.graph = inner;
    let height = inner.height as usize;
    let offset = ui.scroll_graph(height);
    let t = ui.theme;
    let selected = ui.selected;
    let rows = ui.rows();
    let end = rows.len().min(offset + height);
    let visible: Vec<_> = rows[offset..end].to_vec();
    if visible.is_empty() {
        let note = if ui.view.goals.is_empty() {
            "no goals yet"
        } else {
            "no goal matches"
        };
        Writer::new(buf, inner, 0).text(note, t.dim());
        return;
    }
    for (y, row) in visible.iter().enumerate() {
        let goal = &ui.view.goals[row.goal as usize];
        let mut w = Writer::new(buf, inner, y as u16);
        w.skip(indent_width(row.depth, inner.width));
        let marker = match (row.has_children, ui.folded.contains(&row.goal)) {
            (false, _) => " ",
            (true, true) => "▸",
            (true, false) => "▾",
        };
        w.text(marker, Style::new()).skip(1);
        w.text(icon(goal), t.category(goal.category)).skip(1);
        let name_style = if row.matched {
            t.matched()
        } else if goal.category == Category::Failed || goal.category.is_running() {
            t.category(goal.category)
        } else {
            Style::new()
        };
        w.text(&goal.name, name_style).skip(2);
        let time = times(goal, now);
        let room = w.room().saturating_sub(time.len() as u16 + 1);
        let (text, style) = detail(ui, goal, now);
        w.text(&cut(&text, room as usize), style);
        Writer::new(buf, inner, y as u16).right(&time, t.dim(), 0);
        if Some(row.goal) == selected {
            let line = Rect::new(inner.x, inner.y + y as u16, inner.width, 1);
            buf.set_style(line, t.selected());
        }
    }
}

fn draw_side(ui: &mut Ui, now: Time, area: Rect, buf: &mut Buffer) {
    let side = ui.side_rows();
    let t = ui.theme;
    let slot_lines = (side.slots.len() + side.substitutions.len()).max(1) as u16;
    let slots_height = (slot_lines + 2).min(area.height.saturating_sub(4)).max(3);
    let [slots_area, locks_area] =
        Layout::vertical([Constraint::Length(slots_height), Constraint::Min(0)]).areas(area);
    let used = ui.view.count(Category::Building);
    let title = match ui.read_only {
        Some(_) => format!(" Build slots {used} "),
        None => format!(" Build slots {used}/{} ", ui.view.controls.max_jobs),
    };
    let block = pane(ui, title, ui.focus == Pane::Slots);
    let inner = block.inner(slots_area);
    block.render(slots_area, buf);
    ui.areas.slots = inner;
    let cursor = (ui.focus == Pane::Slots).then_some(ui.slot_cursor);
    let name_width = (inner.width / 3).clamp(12, 28) as usize;
    let mut y = 0u16;
    for (i, slot) in side.slots.iter().enumerate() {
        if y >= inner.height {
            break;
        }
        let mut w = Writer::new(buf, inner, y);
        w.text(&format!("{:>2} ", i + 1), t.dim());
        match slot {
            None => {
                w.text("· idle", t.dim());
            }
            Some(g) => {
                let goal = &ui.view.goals[*g as usize];
                let (pid, phase) = match &goal.state {
                    GoalState::Running {
                        detail: RunningDetail::Build { pid, .. },
                    } => (*pid, goal.phase.as_deref().map_or("", short_phase)),
                    _ => (None, ""),
                };
                w.text("⏵ ", t.category(Category::Building));
                w.text(&pad(&goal.name, name_width), Style::new()).skip(1);
                w.text(&pad(phase, 8), t.dim());
                w.text(
                    &format!("{:>5}", duration(goal.elapsed(now).unwrap_or(0))),
                    Style::new(),
                );
                if let Some(pid) = pid {
                    w.text(&format!(" pid {pid}"), t.dim());
                }
                let quiet_since = goal.last_output.or(goal.started).unwrap_or(now);
                let silent = now.millis_since(quiet_since);
                if silent >= SILENT_SHOWN_MS {
                    let style = if silent >= SILENT_WARN_MS {
                        t.warn()
                    } else {
                        t.dim()
                    };
                    w.text(&format!("  silent {}", short_duration(silent)), style);
                }
                if let Some(line) = ui.view.last_line(*g) {
                    w.text(&format!("  \"{line}\""), t.dim());
                }
            }
        }
        if cursor == Some(i) {
            buf.set_style(
                Rect::new(inner.x, inner.y + y, inner.width, 1),
                t.selected(),
            );
        }
        y += 1;
    }
    for (k, g) in side.substitutions.iter().enumerate() {
        if y >= inner.height {
            break;
        }
        let goal = &ui.view.goals[*g as usize];
        let from = match &goal.state {
            GoalState::Running {
                detail: RunningDetail::Substitution { substituter, .. },
            } => substituter.as_str(),
            _ => "",
        };
        let mut w = Writer::new(buf, inner, y);
        w.text("   ↓ ", t.category(Category::Substituting));
        w.text(&pad(&goal.name, name_width), Style::new()).skip(1);
        match goal.download {
            // Bytes and rate instead of the time: the slots pane is narrow.
            Some((done, expected)) => {
                let total = expected.map_or(String::new(), |e| format!("/{}", short_bytes(e)));
                let rate = short_bytes(goal.download_rate(now).unwrap_or(0));
                w.text(
                    &format!("{}{total} {rate}/s", short_bytes(done)),
                    Style::new(),
                );
            }
            None => {
                w.text(
                    &format!("{:>6}", duration(goal.elapsed(now).unwrap_or(0))),
                    t.dim(),
                );
            }
        }
        w.text(&format!("  from {from}"), t.dim());
        if cursor == Some(side.slots.len() + k) {
            buf.set_style(
                Rect::new(inner.x, inner.y + y, inner.width, 1),
                t.selected(),
            );
        }
        y += 1;
    }
    // Lock waits.
    let title = format!(" Lock waits ({}) ", side.locks.len());
    let block = pane(ui, title, false);
    let inner = block.inner(locks_area);
    block.render(locks_area, buf);
    ui.areas.locks = inner;
    if side.locks.is_empty() {
        if inner.height > 0 {
            Writer::new(buf, inner, 0).text("none", t.dim());
        }
        return;
    }
    // Two lines each: who waits how long, then for which lock and who holds it.
    let first = side.slots.len() + side.substitutions.len();
    for (k, g) in side.locks.iter().enumerate() {
        let y = (k * LOCK_ROW_LINES) as u16;
        if y >= inner.height {
            break;
        }
        let goal = &ui.view.goals[*g as usize];
        let mut w = Writer::new(buf, inner, y);
        w.text("⧗ ", t.lock());
        w.text(&goal.name, Style::new());
        w.text(
            &format!("  waits {}", short_duration(now.millis_since(goal.since))),
            Style::new(),
        );
        let GoalState::Waiting {
            reason:
                WaitReason::Lock {
                    paths,
                    holder,
                    retry_at,
                },
        } = &goal.state
        else {
            continue;
        };
        if let Some(at) = retry_at.filter(|&at| at > now) {
            w.text(
                &format!(", retry in {}", short_duration(at.millis_since(now))),
                t.dim(),
            );
        }
        if y + 1 < inner.height {
            let mut w = Writer::new(buf, inner, y + 1);
            w.skip(2);
            if let Some(p) = paths.first() {
                w.text(&format!("{}.lock", short_path(p)), t.dim());
                if paths.len() > 1 {
                    w.text(&format!(" +{}", paths.len() - 1), t.dim());
                }
            }
            if let Some(h) = holder {
                let who = match (h.pid, &h.command) {
                    (Some(pid), Some(cmd)) => format!(" held by pid {pid} ({cmd})"),
                    (Some(pid), None) => format!(" held by pid {pid}"),
                    (None, Some(cmd)) => format!(" held by {cmd}"),
                    (None, None) => String::new(),
                };
                w.text(&who, t.lock());
            }
        }
        if cursor == Some(first + k) {
            let lines = (LOCK_ROW_LINES as u16).min(inner.height - y);
            buf.set_style(
                Rect::new(inner.x, inner.y + y, inner.width, lines),
                t.selected(),
            );
        }
    }
}

/// `s` cut to `width` characters, with `…` where it was cut.
fn cut(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if s.chars().count() <= width {
        s.into()
    } else if width == 0 {
        "".into()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out.into()
    }
}

/// `s` cut or padded to `width` characters.
fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n > width {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    } else {
        format!("{s:width$}")
    }
}

/// What Nix's exit status says: 1, or 0x60 plus bits (4 build failure, 1 timed out, 2 hash
/// mismatch, 8 not deterministic), so 100 is a plain build failure.
fn exit_meaning(status: u8) -> String {
    match status {
        0 => "success".into(),
        s if s & 0x60 == 0x60 && s & 0x0f != 0 && s < 0x70 => {
            let bits = s & 0x0f;
            let mut why = Vec::new();
            if bits & 1 != 0 {
                why.push("timed out");
            }
            if bits & 2 != 0 {
                why.push("hash mismatch");
            }
            if bits & 4 != 0 && bits & 3 == 0 {
                why.push("build failure");
            }
            if bits & 8 != 0 {
                why.push("not deterministic");
            }
            why.join(", ")
        }
        _ => "failed".into(),
    }
}

/// `n thing` or `n things`.
fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("{n} {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// `words` joined by `sep` into lines at most `width` wide (a word wider than that gets a
/// line of its own, cut at the edge).
fn wrap(words: &[&str], sep: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for (i, w) in words.iter().enumerate() {
        let piece = if i + 1 < words.len() {
            format!("{w}{sep}")
        } else {
            (*w).to_owned()
        };
        if !line.is_empty() && line.width() + piece.trim_end().width() > width {
            lines.push(std::mem::take(&mut line));
        }
        line.push_str(&piece);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn draw_summary(ui: &mut Ui, area: Rect, buf: &mut Buffer) {
    let t = ui.theme;
    let block = pane(ui, " Summary ".into(), false);
    let inner = block.inner(area);
    block.render(area, buf);
    let s = ui.summary();
    let v = &ui.view;
    let RunPhase::Done { exit_status, .. } = v.phase else {
        return;
    };
    let mut lines: Vec<(String, Style)> = Vec::new();
    let verdict = if exit_status == 0 {
        t.good()
    } else {
        t.error()
    };
    lines.push((
        format!(
            "Finished: exit {exit_status} ({})",
            exit_meaning(exit_status)
        ),
        verdict,
    ));
    lines.push((
        format!(
            "✔ built {} · substituted {} · valid {}",
            s.built, s.substituted, s.valid
        ),
        t.good(),
    ));
    let again: Vec<&str> = v
        .goals
        .iter()
        .filter(|g| g.reopened > 0)
        .map(|g| &*g.name)
        .collect();
    if !again.is_empty() {
        lines.push(("↻ ran again after a retry:".into(), Style::new()));
        for line in wrap(&again, ", ", inner.width.saturating_sub(2) as usize) {
            lines.push((format!("  {line}"), t.dim()));
        }
    }
    if !s.failed.is_empty() || s.dependency_failed > 0 {
        lines.push((
            format!(
                "✘ failed: {}, {}",
                plural(s.failed.len() as u64, "root cause"),
                plural(s.dependency_failed, "dependency failure")
            ),
            t.error(),
        ));
    }
    if s.cancelled > 0 {
        lines.push((
            format!("⊗ cancelled {}", s.cancelled),
            t.category(Category::Cancelled),
        ));
    }
    lines.push((
        format!(
            "total {} · critical path {}",
            duration(s.total_ms),
            duration(s.critical_ms)
        ),
        Style::new(),
    ));
    if !s.critical_path.is_empty() {
        let names: Vec<&str> = s
            .critical_path
            .iter()
            .map(|&g| &*v.goals[g as usize].name)
            .collect();
        for line in wrap(&names, " ← ", inner.width.saturating_sub(2) as usize) {
            lines.push((format!("  {line}"), t.dim()));
        }
    }
    if !s.failed.is_empty() {
        let title = if ui.read_only.is_some() {
            "Root causes:"
        } else {
            "Root causes (select, r retries):"
        };
        lines.push((title.into(), Style::new()));
        for &g in &s.failed {
            let goal = &v.goals[g as usize];
            let why = goal
                .exit_detail()
                .unwrap_or_else(|| goal.state_word().to_owned());
            lines.push((format!("  ✘ {}  {why}", goal.name), t.error()));
        }
    }
    lines.push(("q quits".into(), t.dim()));
    for (y, (text, style)) in lines.iter().enumerate().take(inner.height as usize) {
        Writer::new(buf, inner, y as u16).text(text, *style);
    }
}

impl Goal {
    /// The status word of a finished goal.
    fn state_word(&self) -> &'static str {
        match self.state {
            GoalState::Done { status } => status_word(status),
            _ => "",
        }
    }
}

fn draw_log(ui: &mut Ui, area: Rect, buf: &mut Buffer) {
    let t = ui.theme;
    let lines = ui.log_lines();
    let n = lines.len();
    let who = match ui.log_view {
        LogView::Interleaved => "all builds, interleaved".to_owned(),
        LogView::Selected => ui
            .selected
            .and_then(|g| ui.view.goal(g))
            .map_or_else(|| "-".into(), |g| g.name.to_string()),
    };
    let height = area.height.saturating_sub(2) as usize;
    let scroll = ui.log_scroll.min(n.saturating_sub(1));
    let end = n - scroll.min(n);
    let start = end.saturating_sub(height);
    let mut title = format!(" Log: {who} ");
    if scroll == 0 {
        title += "(follow) ";
    } else {
        title += &format!("(lines {}-{end} of {n}) ", start + 1);
    }
    if lines.dropped() > 0 {
        title += &format!("· {} earlier lines dropped ", lines.dropped());
    }
    if !ui.log_search.is_empty() || ui.editing == Editing::LogSearch {
        title += &format!("· /{} ", ui.log_search);
    }
    let block = pane(ui, title, ui.focus == Pane::Log);
    let inner = block.inner(area);
    block.render(area, buf);
    let lines = ui.log_lines();
    match &lines {
        LogLines::Note(note) => {
            Writer::new(buf, inner, 0).text(note, t.dim());
        }
        LogLines::Error(e) => {
            Writer::new(buf, inner, 0).text(&format!("cannot read the log: {e}"), t.error());
        }
        _ => {
            for (y, i) in (start..end).enumerate() {
                let Some((goal, line)) = lines.get(i) else {
                    break;
                };
                let mut w = Writer::new(buf, inner, y as u16);
                if let Some(g) = goal {
                    let name = ui.view.goal(g).map_or("?", |g| &g.name);
                    w.text(&format!("{name}> "), t.dim());
                }
                let style = if !ui.log_search.is_empty() && matches(line, &ui.log_search) {
                    t.matched()
                } else {
                    Style::new()
                };
                w.text(line, style);
                if ui.log_match == Some(i) {
                    buf.set_style(
                        Rect::new(inner.x, inner.y + y as u16, inner.width, 1),
                        t.selected(),
                    );
                }
            }
        }
    }
    ui.areas.log = inner;
}

fn draw_messages(ui: &Ui, area: Rect, buf: &mut Buffer) {
    let block = pane(
        ui,
        format!(
            " Engine messages · {} errors, {} warnings ",
            ui.view.errors, ui.view.warnings
        ),
        false,
    );
    tui_logger::TuiLoggerWidget::default()
        .block(block)
        .output_timestamp(None)
        .output_target(false)
        .output_file(false)
        .output_line(false)
        .output_level(Some(tui_logger::TuiLoggerLevelOutput::Abbreviated))
        .style_error(ui.theme.error())
        .style_warn(ui.theme.warn())
        .render(area, buf);
}

fn draw_footer(ui: &Ui, area: Rect, buf: &mut Buffer) {
    let t = ui.theme;
    let mut w = Writer::new(buf, area, 0);
    if let Some(q) = ui.confirm {
        let name = |g: u32| {
            ui.view
                .goal(g)
                .map_or_else(String::new, |g| g.name.to_string())
        };
        let question = match q {
            Confirm::Cancel(g) => format!("Cancel {} (kills its builder)? y/n", name(g)),
            Confirm::CancelAll => "Cancel every goal? y/n".into(),
            Confirm::Drain => {
                "Drain: start nothing new, end the run when what runs is done? y/n".into()
            }
            Confirm::Quit => "Builds are running: stop them and quit? y/n".into(),
        };
        w.text(&question, t.warn());
        return;
    }
    match ui.editing {
        Editing::GoalSearch => {
            w.text(&format!("/{}▏", ui.search), t.key());
            w.text("  Enter: go to the first match  Esc: clear", t.dim());
            return;
        }
        Editing::LogSearch => {
            w.text(&format!("/{}▏", ui.log_search), t.key());
            w.text("  (in the log)  Enter: go  Esc: clear", t.dim());
            return;
        }
        Editing::None => {}
    }
    if let Some(n) = &ui.notice {
        w.text(n, t.warn());
        return;
    }
    if ui.stopping && ui.view.is_running() {
        w.text(
            "stopping: waiting for the builds to end… (^c again: leave now)",
            t.warn(),
        );
        return;
    }
    let hints: &[(&str, &str)] = if ui.read_only.is_some() {
        &[
            ("↑↓", "move"),
            ("←→", "fold"),
            ("⏎", "log"),
            ("/", "search"),
            ("f", "filter"),
            ("?", "help"),
            ("q", "quit"),
        ]
    } else if ui.view.is_running() {
        &[
            ("↑↓", "move"),
            ("←→", "fold"),
            ("⏎", "log"),
            ("c", "cancel"),
            ("r", "retry"),
            ("k", "keep-going"),
            ("+/-", "jobs"),
            ("/", "search"),
            ("f", "filter"),
            ("?", "help"),
            ("q", "quit"),
        ]
    } else {
        &[
            ("↑↓", "move"),
            ("⏎", "log"),
            ("r", "retry"),
            ("/", "search"),
            ("f", "filter"),
            ("?", "help"),
            ("q", "quit"),
        ]
    };
    for (k, what) in hints {
        // Whole hints only.
        if w.room() < (k.width() + what.width() + 1) as u16 {
            break;
        }
        w.text(k, t.key()).skip(1).text(what, Style::new()).skip(2);
    }
    if let Some(watching) = &ui.read_only {
        w.text(&format!("read-only: {watching}"), t.warn());
    }
}

fn draw_help(ui: &Ui, area: Rect, buf: &mut Buffer) {
    let t = ui.theme;
    let per_column = BINDINGS.len().div_ceil(2);
    let width = area.width.saturating_sub(4).min(84);
    let height = (per_column as u16 + 4).min(area.height.saturating_sub(2));
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    Clear.render(popup, buf);
    let block = pane(ui, " Keys (any key closes) ".into(), true);
    let inner = block.inner(popup);
    block.render(popup, buf);
    let column = inner.width / 2;
    for (i, b) in BINDINGS.iter().enumerate() {
        let (col, row) = (i / per_column, i % per_column);
        if row as u16 >= inner.height {
            continue;
        }
        let cell = Rect::new(
            inner.x + col as u16 * column,
            inner.y + row as u16,
            column,
            1,
        );
        Writer::new(buf, cell, 0)
            .text(&format!("{:<8}", b.label), t.key())
            .text(b.help, Style::new());
    }
    let note = "Mouse: wheel scrolls, click selects (on ▾/▸: folds)";
    if inner.height as usize > per_column + 1 {
        Writer::new(buf, inner, per_column as u16 + 1).text(note, t.dim());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_explained() {
        assert_eq!(exit_meaning(0), "success");
        assert_eq!(exit_meaning(100), "build failure");
        assert_eq!(exit_meaning(101), "timed out");
        assert_eq!(exit_meaning(102), "hash mismatch");
        assert_eq!(exit_meaning(104), "not deterministic");
        assert_eq!(exit_meaning(108), "build failure, not deterministic");
        assert_eq!(exit_meaning(1), "failed");
    }

    #[test]
    fn paths_wrap_between_names() {
        assert_eq!(
            wrap(&["app", "python3", "openssl"], " ← ", 15),
            vec!["app ← python3 ← ", "openssl"]
        );
        assert_eq!(wrap(&["a"], " ← ", 0), vec!["a"]);
    }

    #[test]
    fn deep_trees_stop_indenting() {
        assert_eq!(indent_width(2, 40), 4);
        assert_eq!(indent_width(100, 40), 6);
    }

    #[test]
    fn names_are_padded_or_cut() {
        assert_eq!(pad("zlib", 6), "zlib  ");
        assert_eq!(pad("openssl-3.0", 6), "opens…");
    }
}
