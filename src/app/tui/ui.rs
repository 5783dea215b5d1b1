//! The screen's own state around the [`ViewState`]: selection, focus, folds, filter, search,
//! log scrolling, overlays and confirmations; and what keys and mouse clicks do with it.
//! Everything the user asks of the engine comes out as [`Command`]s (and is noted in the view
//! state, since the engine does not echo settings); destructive ones are confirmed first.

use std::sync::Arc;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use rustc_hash::FxHashSet;

use crate::engine::api::{Command, GoalId, Time};

use super::eta::{self, Eta};
use super::keys::{self, Action};
use super::logs::{LogSource, Ring};
use super::state::{Category, NONE, ViewState};
use super::tree::{self, Filter, Row};
use super::widgets::Theme;

/// Frames between two flattenings of the tree for state changes alone (about 4 a second).
pub const ROWS_EVERY_FRAMES: u64 = 8;

/// The panes that take the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Graph,
    Slots,
    Log,
}

/// What the log pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogView {
    /// The selected goal's log.
    Selected,
    /// All builds' lines, interleaved, prefixed with `name>`.
    Interleaved,
}

/// A question waiting for y/n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Cancel(u32),
    CancelAll,
    Drain,
    Quit,
}

/// What typed characters go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Editing {
    None,
    GoalSearch,
    LogSearch,
}

/// The stored log of a finished goal, as read from the log source.
#[derive(Debug, Clone)]
pub struct StoredLog {
    pub goal: u32,
    /// The goal's reopen count when read: a retried goal has a new log.
    pub reopened: u32,
    pub lines: Result<Vec<String>, String>,
}

/// Where the panes were drawn last (for the mouse and for paging).
#[derive(Debug, Clone, Copy, Default)]
pub struct Areas {
    pub graph: Rect,
    pub slots: Rect,
    pub locks: Rect,
    pub log: Rect,
}

/// Rows of the side panes: build slots, running substitutions, lock waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideRows {
    pub slots: Vec<Option<u32>>,
    pub substitutions: Vec<u32>,
    pub locks: Vec<u32>,
}

impl SideRows {
    fn goal_at(&self, i: usize) -> Option<u32> {
        let n = self.slots.len();
        let m = self.substitutions.len();
        if i < n {
            self.slots[i]
        } else if i < n + m {
            Some(self.substitutions[i - n])
        } else {
            self.locks.get(i - n - m).copied()
        }
    }

    fn len(&self) -> usize {
        self.slots.len() + self.substitutions.len() + self.locks.len()
    }
}

/// The end-of-run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub built: u64,
    pub substituted: u64,
    pub valid: u64,
    /// Goals that failed by themselves (root causes), in goal order.
    pub failed: Vec<u32>,
    pub dependency_failed: u64,
    pub cancelled: u64,
    pub total_ms: u64,
    pub critical_ms: u64,
    pub critical_path: Vec<u32>,
}

/// The whole state of the screen.
pub struct Ui {
    pub view: ViewState,
    pub title: String,
    pub theme: Theme,
    pub focus: Pane,
    pub selected: Option<u32>,
    /// Until the user selects a goal, the selection is the first row.
    pub follow_top: bool,
    /// The run's event stream ended without the run ending (the engine is gone): quitting
    /// needs no question and waits for nothing.
    pub detached: bool,
    pub folded: FxHashSet<u32>,
    pub filter: Filter,
    /// The goal search, lower case; empty: none.
    pub search: String,
    /// The log search, lower case; empty: none.
    pub log_search: String,
    /// The log line of the current log match.
    pub log_match: Option<usize>,
    pub editing: Editing,
    pub log_view: LogView,
    /// Lines between the end of the log and the last line shown; 0 follows the log.
    pub log_scroll: usize,
    pub help: bool,
    pub messages: bool,
    pub confirm: Option<Confirm>,
    /// A one-line answer to the last key ("nothing to retry").
    pub notice: Option<String>,
    /// Set when the run cannot be steered (a monitored Nix build, a recording): what is being
    /// watched ("watching a Nix build"). Command keys then say they are unavailable, and
    /// quitting stops nothing.
    pub read_only: Option<String>,
    /// Quitting: everything was cancelled, the screen goes once the run has ended.
    pub stopping: bool,
    /// Leave now.
    pub exit: bool,
    pub slot_cursor: usize,
    pub stored_log: Option<StoredLog>,
    pub areas: Areas,
    /// The first row shown in the graph pane.
    pub graph_offset: usize,
    rows: Vec<Row>,
    rows_key: Option<(u64, Filter, String, u64)>,
    rows_generation: u64,
    rows_frame: u64,
    /// Frames drawn so far.
    pub frames: u64,
    fold_version: u64,
    dep_graph: eta::DepGraph,
    dep_graph_empty: bool,
    eta_cache: Option<(u64, Eta)>,
    summary_cache: Option<(u64, Arc<Summary>)>,
}

impl Ui {
    pub fn new(view: ViewState, title: impl Into<String>, color: bool) -> Ui {
        Ui {
            view,
            title: title.into(),
            theme: Theme { color },
            focus: Pane::Graph,
            selected: None,
            follow_top: true,
            detached: false,
            folded: FxHashSet::default(),
            filter: Filter::All,
            search: String::new(),
            log_search: String::new(),
            log_match: None,
            editing: Editing::None,
            log_view: LogView::Interleaved,
            log_scroll: 0,
            help: false,
            messages: false,
            confirm: None,
            notice: None,
            read_only: None,
            stopping: false,
            exit: false,
            slot_cursor: 0,
            stored_log: None,
            areas: Areas::default(),
            graph_offset: 0,
            rows: Vec::new(),
            rows_key: None,
            rows_generation: 0,
            rows_frame: 0,
            frames: 0,
            fold_version: 0,
            dep_graph: eta::DepGraph::default(),
            dep_graph_empty: true,
            eta_cache: None,
            summary_cache: None,
        }
    }

    /// Whether the screen should go: asked to, or quitting and the run has ended.
    pub fn should_exit(&self) -> bool {
        self.exit || (self.stopping && (!self.view.is_running() || self.detached))
    }

    /// The graph pane's rows, computed again when the tree, the filter, the search or the
    /// folds changed, and at most every [`ROWS_EVERY_FRAMES`] frames when only goals' states
    /// changed (what floats up among siblings lags a few frames; icons and words never do,
    /// as they are drawn from the live state).
    pub fn rows(&mut self) -> &[Row] {
        let key = (
            self.view.structure,
            self.filter,
            self.search.clone(),
            self.fold_version,
        );
        let stale = self.rows_generation != self.view.generation
            && self.frames >= self.rows_frame + ROWS_EVERY_FRAMES;
        if self.rows_key.as_ref() != Some(&key) || stale {
            let mut rows = std::mem::take(&mut self.rows);
            tree::build_rows(
                &self.view,
                &self.folded,
                self.filter,
                &self.search,
                &mut rows,
            );
            self.rows = rows;
            self.rows_key = Some(key);
            self.rows_generation = self.view.generation;
            self.rows_frame = self.frames;
            if self.selected.is_none() || self.follow_top {
                self.selected = self.rows.first().map(|r| r.goal);
            }
        }
        &self.rows
    }

    /// The compact dependency graph, built again when goals or edges were added.
    fn dep_graph(&mut self) -> &eta::DepGraph {
        if self.dep_graph.structure != self.view.structure || self.dep_graph_empty {
            self.dep_graph = eta::DepGraph::of(&self.view);
            self.dep_graph_empty = false;
        }
        &self.dep_graph
    }

    /// Selects goal `g` (the user chose: the selection no longer follows the first row).
    pub fn select(&mut self, g: u32) {
        self.selected = Some(g);
        self.follow_top = false;
    }

    /// The index of the selected goal among the rows.
    pub fn selected_row(&mut self) -> Option<usize> {
        let sel = self.selected?;
        self.rows().iter().position(|r| r.goal == sel)
    }

    fn graph_page(&self) -> usize {
        (self.areas.graph.height as usize).max(1)
    }

    fn log_page(&self) -> usize {
        (self.areas.log.height as usize).max(1)
    }

    /// Moves the selection by `delta` rows (clamped).
    pub fn move_selection(&mut self, delta: isize) {
        let current = self.selected_row();
        let rows = self.rows();
        if rows.is_empty() {
            return;
        }
        let last = rows.len() - 1;
        let i = match current {
            Some(i) => i.saturating_add_signed(delta).min(last),
            None => 0,
        };
        let g = rows[i].goal;
        self.select(g);
    }

    fn select_row(&mut self, i: usize) {
        if let Some(g) = self.rows().get(i).map(|r| r.goal) {
            self.select(g);
        }
    }

    /// Scrolls the graph pane so the selection shows; returns the first row to draw.
    pub fn scroll_graph(&mut self, height: usize) -> usize {
        let n = self.rows().len();
        let height = height.max(1);
        if let Some(i) = self.selected_row() {
            if i < self.graph_offset {
                self.graph_offset = i;
            } else if i >= self.graph_offset + height {
                self.graph_offset = i + 1 - height;
            }
        }
        self.graph_offset = self.graph_offset.min(n.saturating_sub(height));
        self.graph_offset
    }

    /// The rows of the side panes.
    pub fn side_rows(&self) -> SideRows {
        let v = &self.view;
        let n = v.build_slots.len().max(v.controls.max_jobs as usize);
        let slots = (0..n)
            .map(|i| v.build_slots.get(i).copied().flatten())
            .collect();
        let substitutions = v.substitution_slots.iter().flatten().copied().collect();
        let mut locks: Vec<u32> = v.lock_waits.iter().copied().collect();
        locks.sort_by_key(|&g| (v.goals[g as usize].since, g));
        SideRows {
            slots,
            substitutions,
            locks,
        }
    }

    /// The ETA at `now`, computed at most once per second of run time (and not in a frame
    /// that flattened the rows: then in the next one).
    pub fn eta(&mut self, now: Time) -> Eta {
        let second = now.as_millis() / 1000;
        match self.eta_cache {
            Some((s, eta)) if s == second => eta,
            // One long computation per frame: the rows were flattened in this one.
            Some((_, eta)) if self.rows_frame == self.frames && self.frames > 1 => eta,
            _ => {
                self.dep_graph();
                let e = eta::eta_with(&self.view, &self.dep_graph, now);
                self.eta_cache = Some((second, e));
                e
            }
        }
    }

    /// What the run achieved (meaningful once it is done).
    pub fn summary(&mut self) -> Arc<Summary> {
        if let Some((g, s)) = &self.summary_cache
            && *g == self.view.generation
        {
            return s.clone();
        }
        let v = &self.view;
        let mut s = Summary::default();
        for (i, g) in v.goals.iter().enumerate() {
            match g.state {
                crate::engine::api::GoalState::Done { status } => match status {
                    crate::engine::api::BuildStatus::Built => s.built += 1,
                    crate::engine::api::BuildStatus::Substituted if g.substitution => {
                        s.substituted += 1
                    }
                    crate::engine::api::BuildStatus::AlreadyValid if !g.substitution => {
                        s.valid += 1
                    }
                    _ => match g.category {
                        Category::Failed => s.failed.push(i as u32),
                        Category::DependencyFailed => s.dependency_failed += 1,
                        Category::Cancelled => s.cancelled += 1,
                        _ => {}
                    },
                },
                _ => continue,
            }
        }
        s.total_ms = match v.phase {
            super::state::RunPhase::Done { at, .. } => at.as_millis(),
            super::state::RunPhase::Running => v.now.as_millis(),
        };
        self.dep_graph();
        let v = &self.view;
        (s.critical_ms, s.critical_path) = eta::critical_path_with(v, &self.dep_graph);
        let s = Arc::new(s);
        self.summary_cache = Some((v.generation, s.clone()));
        s
    }

    /// The stored log the log pane needs and does not have: the goal and its path.
    pub fn wanted_log(&self) -> Option<(u32, String)> {
        if self.log_view != LogView::Selected {
            return None;
        }
        let g = self.selected?;
        let goal = self.view.goal(g)?;
        if !goal.category.is_done() {
            return None;
        }
        match &self.stored_log {
            Some(s) if s.goal == g && s.reopened == goal.reopened => None,
            _ => Some((g, goal.path.to_string())),
        }
    }

    pub fn set_stored_log(&mut self, goal: u32, lines: Result<Vec<String>, String>) {
        let reopened = self.view.goal(goal).map_or(0, |g| g.reopened);
        self.stored_log = Some(StoredLog {
            goal,
            reopened,
            lines,
        });
    }

    /// Reads the wanted stored log, if any, from `source` (the runtime does this outside its
    /// lock; tests call this).
    pub fn load_wanted_log(&mut self, source: &dyn LogSource) {
        if let Some((g, path)) = self.wanted_log() {
            let lines = source.read(GoalId(g), &path);
            self.set_stored_log(g, lines);
        }
    }

    /// The lines of the log pane.
    pub fn log_lines(&self) -> LogLines<'_> {
        if self.log_view == LogView::Interleaved {
            return LogLines::Interleaved(&self.view.interleaved);
        }
        let Some(g) = self.selected else {
            return LogLines::Note("no goal selected");
        };
        let Some(goal) = self.view.goal(g) else {
            return LogLines::Note("no goal selected");
        };
        if goal.category.is_done() {
            return match &self.stored_log {
                Some(s) if s.goal == g && s.reopened == goal.reopened => match &s.lines {
                    Ok(lines) if lines.is_empty() => LogLines::Note("(no output)"),
                    Ok(lines) => LogLines::Stored(lines),
                    Err(e) => LogLines::Error(e),
                },
                _ => LogLines::Note("reading the log…"),
            };
        }
        match &goal.log {
            Some(ring) => LogLines::Ring(ring),
            None if goal.category.is_running() => LogLines::Note("(no output yet)"),
            None => LogLines::Note("(not started)"),
        }
    }

    fn log_len(&self) -> usize {
        self.log_lines().len()
    }

    /// Handles a key; the commands to send.
    pub fn on_key(&mut self, key: &KeyEvent) -> Vec<Command> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl_c =
            key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        if self.editing != Editing::None && !ctrl_c {
            self.edit(key);
            return Vec::new();
        }
        if let Some(question) = self.confirm
            && !ctrl_c
        {
            return match key.code {
                KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                    self.confirm = None;
                    self.confirmed(question)
                }
                KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                    self.confirm = None;
                    self.notice = None;
                    Vec::new()
                }
                _ => Vec::new(),
            };
        }
        if self.help && !ctrl_c {
            self.help = false;
            return Vec::new();
        }
        match keys::action(key) {
            Some(a) => self.act(a),
            None => Vec::new(),
        }
    }

    fn edit(&mut self, key: &KeyEvent) {
        let query = match self.editing {
            Editing::GoalSearch => &mut self.search,
            Editing::LogSearch => &mut self.log_search,
            Editing::None => return,
        };
        match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                query.extend(c.to_lowercase());
            }
            KeyCode::Backspace => {
                query.pop();
            }
            KeyCode::Enter => {
                self.editing = Editing::None;
                self.next_match(true, true);
            }
            KeyCode::Esc => {
                query.clear();
                self.editing = Editing::None;
                self.log_match = None;
            }
            _ => {}
        }
    }

    fn confirmed(&mut self, question: Confirm) -> Vec<Command> {
        self.notice = None;
        let commands = match question {
            Confirm::Cancel(g) => vec![Command::Cancel { goal: GoalId(g) }],
            Confirm::CancelAll => vec![Command::CancelAll],
            Confirm::Drain => vec![Command::Drain],
            Confirm::Quit => {
                self.stopping = true;
                vec![Command::CancelAll]
            }
        };
        self.sent(commands)
    }

    fn sent(&mut self, commands: Vec<Command>) -> Vec<Command> {
        for c in &commands {
            self.view.note_command(c);
        }
        commands
    }

    fn selected_name(&self) -> String {
        self.selected
            .and_then(|g| self.view.goal(g))
            .map_or_else(String::new, |g| g.name.to_string())
    }

    /// Carries out an action.
    pub fn act(&mut self, action: Action) -> Vec<Command> {
        self.notice = None;
        if let Some(watching) = &self.read_only {
            if let Some(what) = command_word(action) {
                self.notice = Some(format!("{what} is unavailable: read-only, {watching}"));
                return Vec::new();
            }
            if matches!(action, Action::Quit | Action::Interrupt) {
                // Nothing here runs the builds: leaving stops nothing.
                self.exit = true;
                return Vec::new();
            }
        }
        let page = match self.focus {
            Pane::Log => self.log_page(),
            _ => self.graph_page(),
        } as isize;
        match action {
            Action::Up => self.step(-1),
            Action::Down => self.step(1),
            Action::PageUp => self.step(-page),
            Action::PageDown => self.step(page),
            Action::Top => match self.focus {
                Pane::Log => self.log_scroll = self.log_len(),
                _ => self.select_row(0),
            },
            Action::Bottom => match self.focus {
                Pane::Log => self.log_scroll = 0,
                _ => {
                    let n = self.rows().len();
                    self.select_row(n.saturating_sub(1));
                }
            },
            Action::Collapse => self.collapse(),
            Action::Expand => self.expand(),
            Action::ToggleFold => {
                if let Some(g) = self.selected {
                    self.toggle_fold(g);
                }
            }
            Action::NextPane => {
                self.focus = match self.focus {
                    Pane::Graph => Pane::Slots,
                    Pane::Slots => Pane::Log,
                    Pane::Log => Pane::Graph,
                }
            }
            Action::PrevPane => {
                self.focus = match self.focus {
                    Pane::Graph => Pane::Log,
                    Pane::Slots => Pane::Graph,
                    Pane::Log => Pane::Slots,
                }
            }
            Action::Open => {
                if self.focus == Pane::Log {
                    self.focus = Pane::Graph;
                } else {
                    self.focus = Pane::Log;
                    self.log_view = LogView::Selected;
                    self.log_scroll = 0;
                }
            }
            Action::Cancel => return self.ask_cancel(),
            Action::CancelAll => {
                if self.view.is_running() {
                    self.confirm = Some(Confirm::CancelAll);
                } else {
                    self.notice = Some("the run is over: nothing to cancel".into());
                }
            }
            Action::Retry => {
                let Some(g) = self.selected else {
                    return Vec::new();
                };
                if self.view.goals[g as usize].category.is_failure() {
                    return self.sent(vec![Command::Retry { goal: GoalId(g) }]);
                }
                self.notice = Some(format!(
                    "{} did not fail: only failed or cancelled goals can be retried",
                    self.selected_name()
                ));
            }
            Action::KeepGoing => {
                let keep_going = !self.view.controls.keep_going;
                return self.sent(vec![Command::SetKeepGoing { keep_going }]);
            }
            Action::MoreJobs => {
                let max_jobs = self.view.controls.max_jobs.saturating_add(1);
                return self.sent(vec![Command::SetMaxJobs { max_jobs }]);
            }
            Action::FewerJobs => {
                let n = self.view.controls.max_jobs;
                if n <= 1 {
                    self.notice = Some("at least one build slot".into());
                } else {
                    return self.sent(vec![Command::SetMaxJobs { max_jobs: n - 1 }]);
                }
            }
            Action::Drain => {
                if self.view.controls.draining {
                    self.notice = Some("already draining".into());
                } else {
                    self.confirm = Some(Confirm::Drain);
                }
            }
            Action::Pause => {
                let c = if self.view.controls.paused {
                    Command::Resume
                } else {
                    Command::Pause
                };
                return self.sent(vec![c]);
            }
            Action::Quit => {
                if self.view.is_running() && !self.detached {
                    self.confirm = Some(Confirm::Quit);
                } else {
                    self.exit = true;
                }
            }
            Action::Interrupt => {
                self.confirm = None;
                self.editing = Editing::None;
                if self.stopping || !self.view.is_running() {
                    self.exit = true;
                } else {
                    self.stopping = true;
                    return self.sent(vec![Command::CancelAll]);
                }
            }
            Action::Help => self.help = !self.help,
            Action::Search => {
                if self.focus == Pane::Log {
                    self.log_search.clear();
                    self.log_match = None;
                    self.editing = Editing::LogSearch;
                } else {
                    self.search.clear();
                    self.editing = Editing::GoalSearch;
                }
            }
            Action::NextMatch => self.next_match(true, false),
            Action::PrevMatch => self.next_match(false, false),
            Action::Filter => self.filter = self.filter.next(),
            Action::Interleaved => {
                self.log_view = match self.log_view {
                    LogView::Selected => LogView::Interleaved,
                    LogView::Interleaved => LogView::Selected,
                };
                self.log_scroll = 0;
                self.log_match = None;
            }
            Action::Messages => self.messages = !self.messages,
            Action::Follow => self.log_scroll = 0,
            Action::Escape => {
                if self.focus == Pane::Log && !self.log_search.is_empty() {
                    self.log_search.clear();
                    self.log_match = None;
                } else if !self.search.is_empty() {
                    self.search.clear();
                } else if self.focus != Pane::Graph {
                    self.focus = Pane::Graph;
                }
            }
        }
        Vec::new()
    }

    fn ask_cancel(&mut self) -> Vec<Command> {
        let Some(g) = self.selected else {
            self.notice = Some("no goal selected".into());
            return Vec::new();
        };
        if self.view.goals[g as usize].category.is_done() {
            self.notice = Some(format!(
                "{} has ended: nothing to cancel",
                self.selected_name()
            ));
        } else {
            self.confirm = Some(Confirm::Cancel(g));
        }
        Vec::new()
    }

    /// Up/down in the focused pane.
    fn step(&mut self, delta: isize) {
        match self.focus {
            Pane::Graph => self.move_selection(delta),
            Pane::Slots => {
                let side = self.side_rows();
                if side.len() == 0 {
                    return;
                }
                self.slot_cursor = self
                    .slot_cursor
                    .saturating_add_signed(delta)
                    .min(side.len() - 1);
                if let Some(g) = side.goal_at(self.slot_cursor) {
                    self.select(g);
                    self.log_scroll = 0;
                }
            }
            Pane::Log => {
                let max = self.log_len().saturating_sub(1);
                self.log_scroll = self.log_scroll.saturating_add_signed(-delta).min(max);
            }
        }
    }

    fn toggle_fold(&mut self, g: u32) {
        if !self.folded.remove(&g) {
            self.folded.insert(g);
        }
        self.fold_version += 1;
    }

    fn collapse(&mut self) {
        let Some(g) = self.selected else { return };
        let links = &self.view.links;
        let parent = links.parent[g as usize];
        if links.has_children(g) && !self.folded.contains(&g) && self.search.is_empty() {
            self.toggle_fold(g);
        } else if parent != NONE {
            self.select(parent);
        }
    }

    fn expand(&mut self) {
        let Some(g) = self.selected else { return };
        if self.folded.contains(&g) {
            self.toggle_fold(g);
        } else if self.view.links.has_children(g) {
            self.move_selection(1);
        }
    }

    /// Jumps to the next (or previous) match of the search of the focused pane; `here`
    /// accepts the current position.
    fn next_match(&mut self, forward: bool, here: bool) {
        if self.focus == Pane::Log {
            self.next_log_match(forward, here);
            return;
        }
        if self.search.is_empty() {
            return;
        }
        let current = self.selected_row();
        let rows = self.rows();
        let n = rows.len();
        if n == 0 {
            self.notice = Some("no match".into());
            return;
        }
        let start = current.unwrap_or(0);
        let found = (0..n)
            .map(|k| {
                let k = if here { k } else { k + 1 };
                if forward {
                    (start + k) % n
                } else {
                    (start + n - k % n) % n
                }
            })
            .find(|&i| rows[i].matched);
        match found {
            Some(i) => {
                let g = rows[i].goal;
                self.select(g);
            }
            None => self.notice = Some("no match".into()),
        }
    }

    fn next_log_match(&mut self, forward: bool, here: bool) {
        if self.log_search.is_empty() {
            return;
        }
        let lines = self.log_lines();
        let n = lines.len();
        if n == 0 {
            return;
        }
        let start = self
            .log_match
            .unwrap_or_else(|| n.saturating_sub(1 + self.log_scroll));
        let found = (0..n)
            .map(|k| {
                let k = if here { k } else { k + 1 };
                if forward {
                    (start + k) % n
                } else {
                    (start + n - k % n) % n
                }
            })
            .find(|&i| {
                lines
                    .get(i)
                    .is_some_and(|(_, l)| tree::matches(l, &self.log_search))
            });
        match found {
            Some(i) => {
                self.log_match = Some(i);
                let half = self.log_page() / 2;
                self.log_scroll = (n - 1 - i).saturating_sub(half);
            }
            None => self.notice = Some("no match in this log".into()),
        }
    }

    /// Handles a mouse event; the commands to send (none so far: clicks select and scroll).
    pub fn on_mouse(&mut self, m: &MouseEvent) -> Vec<Command> {
        let at = Position::new(m.column, m.row);
        let a = self.areas;
        match m.kind {
            MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
                let delta = if m.kind == MouseEventKind::ScrollUp {
                    -3
                } else {
                    3
                };
                if a.log.contains(at) {
                    let max = self.log_len().saturating_sub(1);
                    self.log_scroll = self.log_scroll.saturating_add_signed(-delta).min(max);
                } else if a.graph.contains(at) {
                    self.move_selection(delta);
                }
            }
            MouseEventKind::Down(MouseButton::Left) => {
                if a.graph.contains(at) {
                    self.focus = Pane::Graph;
                    let i = self.graph_offset + usize::from(at.y - a.graph.y);
                    let Some(row) = self.rows().get(i).copied() else {
                        return Vec::new();
                    };
                    self.select(row.goal);
                    let marker = a.graph.x + super::view::indent_width(row.depth, a.graph.width);
                    if row.has_children && at.x == marker {
                        self.toggle_fold(row.goal);
                    }
                } else if a.slots.contains(at) || a.locks.contains(at) {
                    self.focus = Pane::Slots;
                    let side = self.side_rows();
                    let i = if a.slots.contains(at) {
                        usize::from(at.y - a.slots.y)
                    } else {
                        side.slots.len()
                            + side.substitutions.len()
                            + usize::from(at.y - a.locks.y) / super::view::LOCK_ROW_LINES
                    };
                    if let Some(g) = side.goal_at(i) {
                        self.slot_cursor = i;
                        self.select(g);
                    }
                } else if a.log.contains(at) {
                    self.focus = Pane::Log;
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// The lines the log pane shows.
pub enum LogLines<'a> {
    Ring(&'a Ring<Arc<str>>),
    Stored(&'a [String]),
    Interleaved(&'a Ring<(u32, Arc<str>)>),
    /// Nothing to show, and why.
    Note(&'static str),
    Error(&'a str),
}

impl LogLines<'_> {
    pub fn len(&self) -> usize {
        match self {
            LogLines::Ring(r) => r.len(),
            LogLines::Stored(l) => l.len(),
            LogLines::Interleaved(r) => r.len(),
            LogLines::Note(_) | LogLines::Error(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Line `i`, with the goal it comes from in the interleaved view.
    pub fn get(&self, i: usize) -> Option<(Option<u32>, &str)> {
        match self {
            LogLines::Ring(r) => r.get(i).map(|l| (None, &**l)),
            LogLines::Stored(l) => l.get(i).map(|l| (None, l.as_str())),
            LogLines::Interleaved(r) => r.get(i).map(|(g, l)| (Some(*g), &**l)),
            LogLines::Note(_) | LogLines::Error(_) => None,
        }
    }

    /// Lines dropped before the first one kept.
    pub fn dropped(&self) -> u64 {
        match self {
            LogLines::Ring(r) => r.dropped(),
            LogLines::Interleaved(r) => r.dropped(),
            _ => 0,
        }
    }
}

/// What an action that steers the run is called, for the read-only notice; `None` for the
/// actions that only look.
fn command_word(action: Action) -> Option<&'static str> {
    Some(match action {
        Action::Cancel => "cancel",
        Action::CancelAll => "cancel all",
        Action::Retry => "retry",
        Action::KeepGoing => "keep-going",
        Action::MoreJobs | Action::FewerJobs => "changing max-jobs",
        Action::Drain => "drain",
        Action::Pause => "pause",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tui::logs::MemoryLogs;
    use crate::app::tui::state::tests::{Script, view_of};
    use crate::engine::api::{BuildStatus, Event, EventKind};

    fn press(ui: &mut Ui, code: KeyCode) -> Vec<Command> {
        let m = match code {
            KeyCode::Char(c) if c.is_ascii_uppercase() => KeyModifiers::SHIFT,
            _ => KeyModifiers::NONE,
        };
        ui.on_key(&KeyEvent::new(code, m))
    }

    fn ch(ui: &mut Ui, c: char) -> Vec<Command> {
        press(ui, KeyCode::Char(c))
    }

    /// app waits for lib (building) and zlib (failed).
    fn script() -> Script {
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .add(0, 1, "lib", false)
            .add(0, 2, "zlib", false)
            .edge(0, 0, 1)
            .edge(0, 0, 2)
            .build(0, 1, 0)
            .build(0, 2, 1)
            .log(10, 2, "oops")
            .done(20, 2, BuildStatus::PermanentFailure);
        s
    }

    fn ui() -> Ui {
        let mut ui = Ui::new(view_of(&script().events), "test", false);
        ui.areas.graph = Rect::new(1, 2, 40, 10);
        ui.areas.log = Rect::new(1, 14, 80, 5);
        // As the first frame does: the rows, and the first one selected.
        ui.rows();
        ui
    }

    fn select(ui: &mut Ui, name: &str) {
        let g = ui.view.goals.iter().position(|g| &*g.name == name).unwrap() as u32;
        ui.select(g);
    }

    #[test]
    fn cancel_asks_first_and_then_cancels_the_selection() {
        let mut ui = ui();
        select(&mut ui, "lib");
        assert!(ch(&mut ui, 'c').is_empty());
        assert_eq!(ui.confirm, Some(Confirm::Cancel(1)));
        assert!(
            ch(&mut ui, 'x').is_empty(),
            "other keys wait for the answer"
        );
        assert_eq!(ch(&mut ui, 'y'), vec![Command::Cancel { goal: GoalId(1) }]);
        assert_eq!(ui.confirm, None);
        // Saying no sends nothing.
        ch(&mut ui, 'c');
        assert!(ch(&mut ui, 'n').is_empty());
        assert_eq!(ui.confirm, None);
        // A finished goal cannot be cancelled.
        select(&mut ui, "zlib");
        assert!(ch(&mut ui, 'c').is_empty());
        assert_eq!(ui.confirm, None);
        assert!(ui.notice.as_deref().unwrap().contains("nothing to cancel"));
    }

    #[test]
    fn cancel_all_and_drain_ask_first() {
        let mut ui = ui();
        assert!(ch(&mut ui, 'C').is_empty());
        assert_eq!(ui.confirm, Some(Confirm::CancelAll));
        assert_eq!(press(&mut ui, KeyCode::Enter), vec![Command::CancelAll]);
        assert!(ch(&mut ui, 'd').is_empty());
        assert_eq!(ch(&mut ui, 'y'), vec![Command::Drain]);
        assert!(ui.view.controls.draining);
        assert!(ch(&mut ui, 'd').is_empty());
        assert_eq!(ui.confirm, None, "draining twice is pointless");
    }

    #[test]
    fn retry_sends_retry_for_failed_goals_only() {
        let mut ui = ui();
        select(&mut ui, "zlib");
        assert_eq!(ch(&mut ui, 'r'), vec![Command::Retry { goal: GoalId(2) }]);
        select(&mut ui, "lib");
        assert!(ch(&mut ui, 'r').is_empty());
        assert!(ui.notice.as_deref().unwrap().contains("did not fail"));
    }

    #[test]
    fn settings_keys_send_their_commands_and_flip() {
        let mut ui = ui();
        assert_eq!(
            ch(&mut ui, 'k'),
            vec![Command::SetKeepGoing { keep_going: true }]
        );
        assert_eq!(
            ch(&mut ui, 'k'),
            vec![Command::SetKeepGoing { keep_going: false }]
        );
        assert_eq!(ch(&mut ui, '+'), vec![Command::SetMaxJobs { max_jobs: 3 }]);
        assert_eq!(ch(&mut ui, '-'), vec![Command::SetMaxJobs { max_jobs: 2 }]);
        assert_eq!(ch(&mut ui, '-'), vec![Command::SetMaxJobs { max_jobs: 1 }]);
        assert!(ch(&mut ui, '-').is_empty(), "one slot at least");
        assert_eq!(ch(&mut ui, 'p'), vec![Command::Pause]);
        assert_eq!(ch(&mut ui, 'p'), vec![Command::Resume]);
    }

    #[test]
    fn quit_asks_while_running_and_stops_the_run() {
        let mut ui = ui();
        assert!(ch(&mut ui, 'q').is_empty());
        assert_eq!(ui.confirm, Some(Confirm::Quit));
        assert_eq!(ch(&mut ui, 'y'), vec![Command::CancelAll]);
        assert!(ui.stopping && !ui.should_exit(), "waits for the run to end");
        ui.view.apply(&Event {
            seq: 100,
            time: Time(30),
            kind: EventKind::RunDone { exit_status: 100 },
        });
        assert!(ui.should_exit());
        // After the run, q leaves at once.
        let mut ui = Ui::new(ui.view, "t", false);
        assert!(ch(&mut ui, 'q').is_empty());
        assert!(ui.should_exit());
    }

    #[test]
    fn ctrl_c_stops_then_leaves() {
        let mut ui = ui();
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(ui.on_key(&ctrl_c), vec![Command::CancelAll]);
        assert!(!ui.should_exit());
        assert!(ui.on_key(&ctrl_c).is_empty());
        assert!(ui.should_exit());
    }

    #[test]
    fn navigation_folds_and_moves() {
        let mut ui = ui();
        assert_eq!(ui.rows().len(), 3);
        assert_eq!(ui.selected, Some(0));
        ch(&mut ui, 'j');
        // The failed zlib floats up above the building lib.
        assert_eq!(ui.selected, Some(2));
        press(&mut ui, KeyCode::Left);
        assert_eq!(ui.selected, Some(0), "a leaf goes to its dependent");
        press(&mut ui, KeyCode::Left);
        assert_eq!(ui.rows().len(), 1, "folded");
        press(&mut ui, KeyCode::Right);
        assert_eq!(ui.rows().len(), 3);
        press(&mut ui, KeyCode::End);
        assert_eq!(ui.selected, Some(1));
        ch(&mut ui, 'K');
        assert_eq!(ui.selected, Some(2));
        press(&mut ui, KeyCode::Home);
        assert_eq!(ui.selected, Some(0));
    }

    #[test]
    fn search_selects_matches_and_filters_cycle() {
        let mut ui = ui();
        ch(&mut ui, '/');
        for c in "LI".chars() {
            ch(&mut ui, c);
        }
        assert_eq!(ui.search, "li", "typed keys go to the search");
        assert!(ui.selected == Some(0));
        press(&mut ui, KeyCode::Enter);
        // zlib comes first (it failed), then lib.
        assert_eq!(ui.selected, Some(2));
        ch(&mut ui, 'n');
        assert_eq!(ui.selected, Some(1));
        ch(&mut ui, 'n');
        assert_eq!(ui.selected, Some(2));
        ch(&mut ui, 'N');
        assert_eq!(ui.selected, Some(1));
        press(&mut ui, KeyCode::Esc);
        assert!(ui.search.is_empty());
        ch(&mut ui, 'f');
        assert_eq!(ui.filter, Filter::Running);
        let rows: Vec<u32> = ui.rows().iter().map(|r| r.goal).collect();
        assert_eq!(rows, vec![0, 1]);
    }

    #[test]
    fn the_log_pane_scrolls_searches_and_reads_stored_logs() {
        let mut s = script();
        for i in 0..30 {
            s.log(30, 1, &format!("line {i}"));
        }
        let mut ui = Ui::new(view_of(&s.events), "t", false);
        ui.areas.log = Rect::new(0, 0, 80, 10);
        select(&mut ui, "lib");
        press(&mut ui, KeyCode::Enter);
        assert_eq!(ui.focus, Pane::Log);
        assert_eq!(ui.log_lines().len(), 30);
        press(&mut ui, KeyCode::PageUp);
        assert_eq!(ui.log_scroll, 10);
        ch(&mut ui, 'F');
        assert_eq!(ui.log_scroll, 0);
        ch(&mut ui, '/');
        for c in "line 3".chars() {
            ch(&mut ui, c);
        }
        press(&mut ui, KeyCode::Enter);
        assert_eq!(ui.log_match, Some(3));
        ch(&mut ui, 'n');
        assert_eq!(ui.log_match, Some(3), "the only match, again");
        // A finished goal's log comes from the log source.
        let logs = MemoryLogs::new(100);
        logs.record(&s.events);
        select(&mut ui, "zlib");
        assert!(matches!(ui.log_lines(), LogLines::Note(_)));
        assert_eq!(ui.wanted_log().map(|(g, _)| g), Some(2));
        ui.load_wanted_log(&logs);
        assert_eq!(ui.wanted_log(), None);
        assert_eq!(ui.log_lines().get(0).map(|(_, l)| l), Some("oops"));
        ch(&mut ui, 'a');
        assert_eq!(ui.log_view, LogView::Interleaved);
        assert_eq!(ui.log_lines().len(), 31);
    }

    #[test]
    fn mouse_clicks_select_and_wheels_scroll() {
        let mut ui = ui();
        ui.rows();
        let click = |row| MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 10,
            row,
            modifiers: KeyModifiers::NONE,
        };
        ui.on_mouse(&click(4));
        assert_eq!(ui.selected, Some(1), "the third row");
        let wheel = MouseEvent {
            kind: MouseEventKind::ScrollUp,
            column: 10,
            row: 3,
            modifiers: KeyModifiers::NONE,
        };
        ui.on_mouse(&wheel);
        assert_eq!(ui.selected, Some(0));
        // A click on the fold marker of app folds it.
        let marker = MouseEvent {
            column: 1,
            ..click(2)
        };
        ui.on_mouse(&marker);
        assert_eq!(ui.rows().len(), 1);
    }

    /// Every key that steers the run, from a fresh screen: the commands it sends, after the
    /// answer `y` where it asks first (`None`: it sends at once).
    #[test]
    fn every_command_key_sends_its_command() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        let cases: [(KeyEvent, Option<Confirm>, Vec<Command>); 10] = [
            (
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE),
                Some(Confirm::Cancel(1)),
                vec![Command::Cancel { goal: GoalId(1) }],
            ),
            (
                KeyEvent::new(KeyCode::Char('C'), KeyModifiers::SHIFT),
                Some(Confirm::CancelAll),
                vec![Command::CancelAll],
            ),
            (
                KeyEvent::new(KeyCode::Char('d'), KeyModifiers::NONE),
                Some(Confirm::Drain),
                vec![Command::Drain],
            ),
            (
                KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE),
                Some(Confirm::Quit),
                vec![Command::CancelAll],
            ),
            (
                KeyEvent::new(KeyCode::Char('k'), KeyModifiers::NONE),
                None,
                vec![Command::SetKeepGoing { keep_going: true }],
            ),
            (
                KeyEvent::new(KeyCode::Char('+'), KeyModifiers::NONE),
                None,
                vec![Command::SetMaxJobs { max_jobs: 3 }],
            ),
            (
                KeyEvent::new(KeyCode::Char('='), KeyModifiers::NONE),
                None,
                vec![Command::SetMaxJobs { max_jobs: 3 }],
            ),
            (
                KeyEvent::new(KeyCode::Char('-'), KeyModifiers::NONE),
                None,
                vec![Command::SetMaxJobs { max_jobs: 1 }],
            ),
            (
                KeyEvent::new(KeyCode::Char('p'), KeyModifiers::NONE),
                None,
                vec![Command::Pause],
            ),
            (ctrl_c, None, vec![Command::CancelAll]),
        ];
        for (key, question, commands) in cases {
            let mut ui = ui();
            select(&mut ui, "lib");
            let sent = ui.on_key(&key);
            match question {
                Some(q) => {
                    assert!(sent.is_empty(), "{key:?} asks first");
                    assert_eq!(ui.confirm, Some(q), "{key:?}");
                    assert_eq!(ch(&mut ui, 'y'), commands, "{key:?}");
                }
                None => assert_eq!(sent, commands, "{key:?}"),
            }
        }
        // r on the failed zlib.
        let mut ui = ui();
        select(&mut ui, "zlib");
        assert_eq!(ch(&mut ui, 'r'), vec![Command::Retry { goal: GoalId(2) }]);
    }

    #[test]
    fn the_first_row_stays_selected_until_the_user_chooses() {
        let mut s = script();
        let mut ui = Ui::new(view_of(&s.events), "t", false);
        ui.rows();
        assert_eq!(ui.selected, Some(0));
        // A new top-level goal that fails floats above app: it is selected.
        s.add(30, 3, "urgent", true)
            .build(30, 3, 0)
            .done(40, 3, BuildStatus::PermanentFailure);
        let mut ui = Ui::new(view_of(&s.events[..s.events.len() - 3]), "t", false);
        ui.rows();
        let first = ui.selected;
        ui.view.apply_all(&s.events[s.events.len() - 3..]);
        // State changes alone re-order the rows a few frames later.
        assert_eq!(ui.rows()[0].goal, 0);
        ui.frames += ROWS_EVERY_FRAMES;
        assert_eq!(ui.rows()[0].goal, 3);
        assert_eq!(ui.selected, Some(3), "was {first:?}");
        ch(&mut ui, 'j');
        let chosen = ui.selected;
        ui.view.apply(&Event {
            seq: 1000,
            time: Time(50),
            kind: EventKind::GoalReopened { goal: GoalId(3) },
        });
        ui.frames += ROWS_EVERY_FRAMES;
        ui.rows();
        assert_eq!(ui.selected, chosen, "a choice sticks");
    }

    #[test]
    fn quitting_a_run_whose_engine_is_gone_asks_nothing() {
        let mut ui = ui();
        ui.detached = true;
        assert!(ch(&mut ui, 'q').is_empty());
        assert!(ui.should_exit());
    }

    #[test]
    fn help_closes_on_any_key() {
        let mut ui = ui();
        ch(&mut ui, '?');
        assert!(ui.help);
        assert!(ch(&mut ui, 'k').is_empty(), "the key only closes the help");
        assert!(!ui.help);
    }
}
