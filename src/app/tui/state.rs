//! The view state: a pure fold of the run's [`Event`]s (and of the commands this front-end
//! sent) into what the screen shows. No I/O, no clock: the same fold serves a live run, a
//! replay or a monitored Nix build, and tests feed it events by hand.
//!
//! Each goal is placed once in a tree under one of the goals waiting for it (the deepest one
//! known when the edge arrives, like nix-output-monitor), so the tree has every goal exactly
//! once. Counts per category are kept up to date, so the header costs nothing to draw. Log
//! lines go into bounded rings that live only while a goal runs.
//!
//! What is walked for every goal when the rows or the ETA are computed again (the tree links,
//! categories, expected times, the edges) is kept in small arrays beside the goals
//! ([`Links`]), so a walk over 100,000 goals stays in the caches.

use std::sync::Arc;

use rustc_hash::FxHashSet;

use crate::engine::api::{
    BuildHistory, BuildStatus, Command, Event, EventKind, GoalId, GoalKind, GoalState, Level,
    Progress, RunningDetail, Time, WaitReason,
};

use super::logs::{LogRing, Ring};

/// No goal (a root's parent).
pub const NONE: u32 = u32::MAX;

/// What a goal is doing, coarsely: what the header counts and the filters select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Waiting,
    Building,
    Substituting,
    /// Built, substituted or already valid.
    Succeeded,
    /// Failed by itself: the root cause of a failure.
    Failed,
    DependencyFailed,
    Cancelled,
    /// Ended without result and without being a failure (a substitution goal that found no
    /// substitute: the derivation builds instead).
    Skipped,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Waiting,
        Category::Building,
        Category::Substituting,
        Category::Succeeded,
        Category::Failed,
        Category::DependencyFailed,
        Category::Cancelled,
        Category::Skipped,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn of_status(status: BuildStatus) -> Category {
        match status {
            s if s.success() => Category::Succeeded,
            BuildStatus::DependencyFailed => Category::DependencyFailed,
            BuildStatus::Cancelled => Category::Cancelled,
            BuildStatus::NoSubstituters | BuildStatus::IncompleteClosure => Category::Skipped,
            _ => Category::Failed,
        }
    }

    pub fn is_running(self) -> bool {
        matches!(self, Category::Building | Category::Substituting)
    }

    pub fn is_done(self) -> bool {
        !matches!(
            self,
            Category::Waiting | Category::Building | Category::Substituting
        )
    }

    /// Failed, dependency-failed or cancelled: what `r` can retry.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Category::Failed | Category::DependencyFailed | Category::Cancelled
        )
    }

    /// Sibling order in the tree: failures and running goals float up.
    pub fn rank(self) -> u8 {
        match self {
            Category::Failed => 0,
            Category::Building | Category::Substituting => 1,
            Category::DependencyFailed | Category::Cancelled => 2,
            Category::Waiting => 3,
            Category::Succeeded | Category::Skipped => 4,
        }
    }
}

/// One goal as the screen knows it.
#[derive(Debug, Clone)]
pub struct Goal {
    pub name: Box<str>,
    /// The `.drv` (or, for a substitution, the store path): the key of its stored log.
    pub path: Box<str>,
    pub top: bool,
    pub substitution: bool,
    pub state: GoalState,
    pub category: Category,
    /// When the goal entered its current state (for waits: its current kind of wait).
    pub since: Time,
    /// When its (last) build or substitution started.
    pub started: Option<Time>,
    pub stopped: Option<Time>,
    /// The builder's phase (`buildPhase`, ...).
    pub phase: Option<Box<str>>,
    /// When the builder last wrote a line.
    pub last_output: Option<Time>,
    /// The failure message of a failed goal.
    pub message: Option<Box<str>>,
    /// Expected duration from the history of builds of this name, milliseconds.
    pub expected_ms: Option<u64>,
    /// The last lines of a running goal (freed when it ends).
    pub log: Option<Box<LogRing>>,
    /// How often it was reopened (retried).
    pub reopened: u32,
    /// A running substitution's bytes: downloaded so far, and the file size when known.
    pub download: Option<(u64, Option<u64>)>,
}

impl Goal {
    fn placeholder(id: GoalId) -> Goal {
        Goal {
            name: format!("{id}").into(),
            path: "".into(),
            top: false,
            substitution: false,
            state: GoalState::Waiting {
                reason: WaitReason::Inputs {
                    pending: 0,
                    stage: crate::engine::api::InputStage::Inputs,
                },
            },
            category: Category::Waiting,
            since: Time::ZERO,
            started: None,
            stopped: None,
            phase: None,
            last_output: None,
            message: None,
            expected_ms: None,
            log: None,
            reopened: 0,
            download: None,
        }
    }

    /// A running substitution's download rate so far, bytes per second.
    pub fn download_rate(&self, now: Time) -> Option<u64> {
        let (done, _) = self.download?;
        let ms = self.elapsed(now)?.max(1);
        Some(done.saturating_mul(1000) / ms)
    }

    /// The builder's exit code or signal, from Nix's failure message
    /// (`failed with exit code 2`, `failed due to signal 9 (Killed)`).
    pub fn exit_detail(&self) -> Option<String> {
        let msg = self.message.as_deref()?;
        if let Some(i) = msg.find("with exit code ") {
            let rest = &msg[i + "with exit code ".len()..];
            let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !code.is_empty() {
                return Some(format!("exit {code}"));
            }
        }
        if let Some(i) = msg.find("due to signal ") {
            let rest = &msg[i + "due to signal ".len()..];
            let sig: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !sig.is_empty() {
                return Some(format!("signal {sig}"));
            }
        }
        None
    }

    /// Milliseconds it ran (so far, at `now`, if it still runs).
    pub fn elapsed(&self, now: Time) -> Option<u64> {
        let started = self.started?;
        Some(self.stopped.unwrap_or(now).millis_since(started))
    }

    pub fn is_waiting_for_lock(&self) -> bool {
        matches!(
            self.state,
            GoalState::Waiting {
                reason: WaitReason::Lock { .. }
            }
        )
    }
}

/// The settings a user can change while the run goes; the engine does not announce them, so
/// the view starts from the runner's values and follows the commands it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub max_jobs: u32,
    pub keep_going: bool,
    pub paused: bool,
    pub draining: bool,
}

/// Whether the run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    Running,
    /// Every top-level goal ended (a retry may reopen the run).
    Done {
        exit_status: u8,
        at: Time,
    },
}

/// Bounds of the log buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines kept per running goal.
    pub per_goal: usize,
    /// Lines kept of the interleaved view of all builds.
    pub interleaved: usize,
    /// Longer lines are cut (at a character boundary) to this many bytes.
    pub line_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            per_goal: 2000,
            interleaved: 5000,
            line_bytes: 2048,
        }
    }
}

/// The tree and the hot per-goal data, as arrays indexed by goal. Children are kept in the
/// order they were placed, as a doubly linked list through `next` and `prev`.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The dependent a goal is shown under ([`NONE`] for top-level and unplaced goals).
    pub parent: Vec<u32>,
    /// Depth under the top-level goal, when placed.
    pub depth: Vec<u32>,
    first: Vec<u32>,
    last: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Each goal's category (the same as [`Goal::category`]).
    pub category: Vec<Category>,
    /// Whether it is a top-level goal (the same as [`Goal::top`]).
    pub top: Vec<bool>,
    /// Expected duration in milliseconds, [`UNKNOWN`] when there is no history.
    pub expected: Vec<u32>,
    /// Every edge (waiter, waitee), once, in the order they came.
    pub edges: Vec<(u32, u32)>,
}

/// No expected duration.
pub const UNKNOWN: u32 = u32::MAX;

/// What a substitution is expected to take, as a guess: a second.
pub const SUBSTITUTION_MS: u32 = 1000;

impl Links {
    fn grow(&mut self, n: usize) {
        self.parent.resize(n, NONE);
        self.depth.resize(n, 0);
        self.first.resize(n, NONE);
        self.last.resize(n, NONE);
        self.next.resize(n, NONE);
        self.prev.resize(n, NONE);
        self.category.resize(n, Category::Waiting);
        self.top.resize(n, false);
        self.expected.resize(n, UNKNOWN);
    }

    /// Takes `g` out of its parent's children.
    fn unlink(&mut self, g: u32) {
        let p = std::mem::replace(&mut self.parent[g as usize], NONE);
        if p == NONE {
            return;
        }
        let (prev, next) = (self.prev[g as usize], self.next[g as usize]);
        if prev == NONE {
            self.first[p as usize] = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next == NONE {
            self.last[p as usize] = prev;
        } else {
            self.prev[next as usize] = prev;
        }
        self.prev[g as usize] = NONE;
        self.next[g as usize] = NONE;
    }

    /// Makes `g` the last child of `p`.
    fn link(&mut self, p: u32, g: u32) {
        let last = self.last[p as usize];
        self.parent[g as usize] = p;
        self.prev[g as usize] = last;
        self.next[g as usize] = NONE;
        if last == NONE {
            self.first[p as usize] = g;
        } else {
            self.next[last as usize] = g;
        }
        self.last[p as usize] = g;
    }

    /// The children of `g` in the tree, in the order they were placed.
    pub fn children(&self, g: u32) -> Children<'_> {
        Children {
            links: self,
            at: self.first[g as usize],
        }
    }

    pub fn has_children(&self, g: u32) -> bool {
        self.first[g as usize] != NONE
    }
}

/// See [`Links::children`].
pub struct Children<'a> {
    links: &'a Links,
    at: u32,
}

impl Iterator for Children<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.at == NONE {
            return None;
        }
        let g = self.at;
        self.at = self.links.next[g as usize];
        Some(g)
    }
}

/// Everything the screen shows about the run.
pub struct ViewState {
    pub goals: Vec<Goal>,
    /// The tree, and per-goal data walked often.
    pub links: Links,
    /// Top-level goals, in the order they were added: the roots of the tree.
    pub tops: Vec<u32>,
    edges: FxHashSet<(u32, u32)>,
    counts: [u64; Category::ALL.len()],
    /// Which goal builds in which slot.
    pub build_slots: Vec<Option<u32>>,
    /// Which goal substitutes in which slot.
    pub substitution_slots: Vec<Option<u32>>,
    /// Goals waiting for a lock.
    pub lock_waits: FxHashSet<u32>,
    pub progress: Progress,
    pub controls: Controls,
    pub phase: RunPhase,
    /// The time of the latest event.
    pub now: Time,
    /// Engine messages by level (errors, warnings).
    pub errors: u64,
    pub warnings: u64,
    /// All builds' lines, interleaved.
    pub interleaved: Ring<(u32, Arc<str>)>,
    /// Events lost between the engine and this view (gaps in the sequence numbers).
    pub dropped_events: u64,
    next_seq: u64,
    /// Log lines dropped from the per-goal rings (the stored log has them).
    pub dropped_lines: u64,
    limits: LogLimits,
    history: Arc<dyn BuildHistory>,
    /// Bumped by every change of the tree or of a goal's category: the rows to show must be
    /// computed again.
    pub generation: u64,
    /// Bumped when goals or edges are added (the dependency graph changed).
    pub structure: u64,
}

impl ViewState {
    /// An empty view; `expected` maps derivation names to expected build times (ms).
    pub fn new(controls: Controls, limits: LogLimits, history: Arc<dyn BuildHistory>) -> ViewState {
        ViewState {
            goals: Vec::new(),
            links: Links::default(),
            tops: Vec::new(),
            edges: FxHashSet::default(),
            counts: [0; Category::ALL.len()],
            build_slots: Vec::new(),
            substitution_slots: Vec::new(),
            lock_waits: FxHashSet::default(),
            progress: Progress::default(),
            controls,
            phase: RunPhase::Running,
            now: Time::ZERO,
            errors: 0,
            warnings: 0,
            interleaved: Ring::new(limits.interleaved),
            dropped_events: 0,
            next_seq: 0,
            dropped_lines: 0,
            limits,
            history,
            generation: 0,
            structure: 0,
        }
    }

    pub fn goal(&self, g: u32) -> Option<&Goal> {
        self.goals.get(g as usize)
    }

    /// How many goals are in `category`.
    pub fn count(&self, category: Category) -> u64 {
        self.counts[category.index()]
    }

    pub fn is_running(&self) -> bool {
        self.phase == RunPhase::Running
    }

    /// Goals not finished yet.
    pub fn unfinished(&self) -> u64 {
        self.count(Category::Waiting)
            + self.count(Category::Building)
            + self.count(Category::Substituting)
    }

    /// Folds a batch of events.
    pub fn apply_all(&mut self, events: &[Event]) {
        for e in events {
            self.apply(e);
        }
    }

    /// Folds one event.
    pub fn apply(&mut self, e: &Event) {
        if e.seq > self.next_seq {
            self.dropped_events += e.seq - self.next_seq;
        }
        self.next_seq = self.next_seq.max(e.seq + 1);
        self.now = self.now.max(e.time);
        match &e.kind {
            EventKind::GoalAdded {
                goal,
                kind,
                name,
                top,
            } => self.goal_added(*goal, kind, name, *top, e.time),
            EventKind::EdgeAdded { waiter, waitee } => self.edge_added(waiter.0, waitee.0),
            EventKind::StateChanged { goal, state } => self.set_state(goal.0, state, e.time),
            // The pid comes with the running state that follows.
            EventKind::BuildStarted { goal, slot, .. } => {
                let g = self.ensure(goal.0);
                g.started = Some(e.time);
                g.stopped = None;
                g.last_output = None;
                g.phase = None;
                self.occupy_build_slot(*slot, goal.0);
            }
            EventKind::SubstitutionStarted { goal, slot, .. } => {
                let g = self.ensure(goal.0);
                g.started = Some(e.time);
                g.stopped = None;
                g.download = None;
                let slot = *slot as usize;
                if self.substitution_slots.len() <= slot {
                    self.substitution_slots.resize(slot + 1, None);
                }
                self.substitution_slots[slot] = Some(goal.0);
            }
            EventKind::LogLine { goal, line } => self.log_line(goal.0, line, e.time),
            EventKind::PhaseChanged { goal, phase } => {
                let g = self.ensure(goal.0);
                g.phase = Some(phase.as_str().into());
                if let GoalState::Running {
                    detail: RunningDetail::Build { phase: p, .. },
                } = &mut g.state
                {
                    *p = Some(phase.clone());
                }
            }
            EventKind::Progress { progress } => self.progress = *progress,
            EventKind::SubstitutionProgress {
                goal,
                download_done,
                download_expected,
                ..
            } => self.ensure(goal.0).download = Some((*download_done, *download_expected)),
            EventKind::GoalDone {
                goal,
                status,
                message,
                times,
            } => {
                let g = self.ensure(goal.0);
                g.message = message.as_deref().map(Into::into);
                g.started = times.started.or(g.started);
                g.stopped = Some(times.stopped);
                g.log = None;
                let state = GoalState::Done { status: *status };
                self.set_state(goal.0, &state, e.time);
            }
            EventKind::GoalReopened { goal } => {
                let g = self.ensure(goal.0);
                g.reopened += 1;
                g.message = None;
                g.started = None;
                g.stopped = None;
                g.phase = None;
                g.log = None;
                g.last_output = None;
                let state = GoalState::Waiting {
                    reason: WaitReason::Inputs {
                        pending: 0,
                        stage: crate::engine::api::InputStage::Inputs,
                    },
                };
                self.set_state(goal.0, &state, e.time);
                self.phase = RunPhase::Running;
            }
            EventKind::Message { level, .. } => match level {
                Level::Error => self.errors += 1,
                Level::Warn => self.warnings += 1,
                _ => {}
            },
            EventKind::RunDone { exit_status } => {
                self.phase = RunPhase::Done {
                    exit_status: *exit_status,
                    at: e.time,
                };
                self.controls.paused = false;
            }
        }
    }

    /// Takes note of a command this front-end sent (the engine does not echo settings).
    pub fn note_command(&mut self, command: &Command) {
        let c = &mut self.controls;
        match command {
            Command::SetKeepGoing { keep_going } => c.keep_going = *keep_going,
            Command::SetMaxJobs { max_jobs } => c.max_jobs = *max_jobs,
            Command::Pause => c.paused = true,
            Command::Resume => c.paused = false,
            Command::Drain => c.draining = true,
            Command::Cancel { .. } | Command::CancelAll | Command::Retry { .. } => {}
        }
    }

    fn ensure(&mut self, g: u32) -> &mut Goal {
        let i = g as usize;
        if self.goals.len() <= i {
            let start = self.goals.len() as u32;
            self.goals
                .extend((start..=g).map(|k| Goal::placeholder(GoalId(k))));
            self.links.grow(i + 1);
            self.counts[Category::Waiting.index()] += u64::from(g + 1 - start);
            self.generation += 1;
            self.structure += 1;
        }
        &mut self.goals[i]
    }

    fn goal_added(&mut self, id: GoalId, kind: &GoalKind, name: &str, top: bool, now: Time) {
        let expected = self.history.expected_ms(name);
        let g = self.ensure(id.0);
        let (path, substitution) = match kind {
            GoalKind::Derivation { drv, .. } => (drv.as_str(), false),
            GoalKind::Substitution { path, .. } => (path.as_str(), true),
        };
        g.name = name.into();
        g.path = path.into();
        g.substitution = substitution;
        g.since = now;
        g.expected_ms = expected;
        let newly_top = top && !g.top;
        g.top |= top;
        self.links.expected[id.index()] = if substitution {
            SUBSTITUTION_MS
        } else {
            expected.map_or(UNKNOWN, |e| e.min(u64::from(UNKNOWN - 1)) as u32)
        };
        if newly_top {
            self.links.top[id.index()] = true;
            self.links.unlink(id.0);
            self.links.depth[id.index()] = 0;
            self.tops.push(id.0);
        }
        self.generation += 1;
        self.structure += 1;
    }

    fn edge_added(&mut self, waiter: u32, waitee: u32) {
        if waiter == waitee || !self.edges.insert((waiter, waitee)) {
            return;
        }
        self.ensure(waiter.max(waitee));
        self.links.edges.push((waiter, waitee));
        self.structure += 1;
        let l = &mut self.links;
        let depth = l.depth[waiter as usize] + 1;
        let (w, c) = (waitee as usize, waitee);
        if self.goals[w].top || (l.parent[w] != NONE && l.depth[w] >= depth) {
            return;
        }
        // Under the deepest dependent: a cycle is impossible, as tree parents are waiters
        // and the goal graph is acyclic.
        l.unlink(c);
        l.link(waiter, c);
        l.depth[w] = depth;
        self.generation += 1;
    }

    fn occupy_build_slot(&mut self, slot: u32, goal: u32) {
        let slot = slot as usize;
        if self.build_slots.len() <= slot {
            self.build_slots.resize(slot + 1, None);
        }
        self.build_slots[slot] = Some(goal);
    }

    fn free_slots_of(&mut self, goal: u32, old: &GoalState) {
        match old {
            GoalState::Running {
                detail: RunningDetail::Build { slot, .. },
            } => {
                if let Some(s) = self.build_slots.get_mut(*slot as usize)
                    && *s == Some(goal)
                {
                    *s = None;
                }
            }
            GoalState::Running {
                detail: RunningDetail::Substitution { slot, .. },
            } => {
                if let Some(s) = self.substitution_slots.get_mut(*slot as usize)
                    && *s == Some(goal)
                {
                    *s = None;
                }
            }
            GoalState::Waiting { .. } | GoalState::Done { .. } => {}
        }
    }

    fn set_state(&mut self, goal: u32, state: &GoalState, now: Time) {
        let g = self.ensure(goal);
        let category = match state {
            GoalState::Waiting { .. } => Category::Waiting,
            GoalState::Running {
                detail: RunningDetail::Build { .. },
            } => Category::Building,
            GoalState::Running {
                detail: RunningDetail::Substitution { .. },
            } => Category::Substituting,
            GoalState::Done { status } => Category::of_status(*status),
        };
        let same_kind = std::mem::discriminant(&g.state) == std::mem::discriminant(state)
            && match (&g.state, state) {
                (GoalState::Waiting { reason: a }, GoalState::Waiting { reason: b }) => {
                    std::mem::discriminant(a) == std::mem::discriminant(b)
                }
                _ => true,
            };
        if !same_kind {
            g.since = now;
        }
        let old_category = g.category;
        let old = std::mem::replace(&mut g.state, state.clone());
        if let GoalState::Running {
            detail: RunningDetail::Build { phase: Some(p), .. },
        } = state
        {
            g.phase = Some(p.as_str().into());
        }
        if category.is_done() {
            g.log = None;
            if g.stopped.is_none() {
                g.stopped = Some(now);
            }
        }
        if old_category != category {
            g.category = category;
            self.links.category[goal as usize] = category;
            self.counts[old_category.index()] -= 1;
            self.counts[category.index()] += 1;
            self.generation += 1;
        }
        if matches!(old, GoalState::Running { .. }) {
            self.free_slots_of(goal, &old);
        }
        match state {
            GoalState::Running {
                detail: RunningDetail::Build { slot, .. },
            } => self.occupy_build_slot(*slot, goal),
            GoalState::Running {
                detail: RunningDetail::Substitution { slot, .. },
            } => {
                let slot = *slot as usize;
                if self.substitution_slots.len() <= slot {
                    self.substitution_slots.resize(slot + 1, None);
                }
                self.substitution_slots[slot] = Some(goal);
            }
            _ => {}
        }
        if self.goals[goal as usize].is_waiting_for_lock() {
            self.lock_waits.insert(goal);
        } else {
            self.lock_waits.remove(&goal);
        }
    }

    fn log_line(&mut self, goal: u32, line: &str, now: Time) {
        let limit = self.limits.line_bytes;
        let text: Arc<str> = if line.len() > limit {
            let mut end = limit;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            Arc::from(&line[..end])
        } else {
            Arc::from(line)
        };
        let per_goal = self.limits.per_goal;
        let g = self.ensure(goal);
        g.last_output = Some(now);
        let ring = g.log.get_or_insert_with(|| Box::new(Ring::new(per_goal)));
        let full = ring.len() == per_goal;
        ring.push(text.clone());
        if full {
            self.dropped_lines += 1;
        }
        self.interleaved.push((goal, text));
    }

    /// The last line a running goal wrote.
    pub fn last_line(&self, goal: u32) -> Option<&str> {
        self.goal(goal)?.log.as_ref()?.last().map(|l| &**l)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::api::{BuildMode, GoalTimes, InputStage, LockHolder, NoHistory};

    /// Events with consecutive sequence numbers.
    #[derive(Default)]
    pub(crate) struct Script {
        pub events: Vec<Event>,
    }

    impl Script {
        pub fn at(&mut self, ms: u64, kind: EventKind) -> &mut Script {
            let seq = self.events.len() as u64;
            self.events.push(Event {
                seq,
                time: Time(ms),
                kind,
            });
            self
        }

        pub fn add(&mut self, ms: u64, goal: u32, name: &str, top: bool) -> &mut Script {
            self.at(
                ms,
                EventKind::GoalAdded {
                    goal: GoalId(goal),
                    kind: GoalKind::Derivation {
                        drv: format!("/nix/store/{:032}-{name}.drv", goal),
                        outputs: Vec::new(),
                        mode: BuildMode::Normal,
                    },
                    name: name.into(),
                    top,
                },
            )
        }

        pub fn edge(&mut self, ms: u64, waiter: u32, waitee: u32) -> &mut Script {
            self.at(
                ms,
                EventKind::EdgeAdded {
                    waiter: GoalId(waiter),
                    waitee: GoalId(waitee),
                },
            )
        }

        pub fn wait(&mut self, ms: u64, goal: u32, reason: WaitReason) -> &mut Script {
            self.at(
                ms,
                EventKind::StateChanged {
                    goal: GoalId(goal),
                    state: GoalState::Waiting { reason },
                },
            )
        }

        pub fn build(&mut self, ms: u64, goal: u32, slot: u32) -> &mut Script {
            self.at(
                ms,
                EventKind::BuildStarted {
                    goal: GoalId(goal),
                    slot,
                    pid: Some(1000 + goal),
                    round: 1,
                    nr_rounds: 1,
                    mode: BuildMode::Normal,
                },
            );
            self.at(
                ms,
                EventKind::StateChanged {
                    goal: GoalId(goal),
                    state: GoalState::Running {
                        detail: RunningDetail::Build {
                            slot,
                            pid: Some(1000 + goal),
                            round: 1,
                            nr_rounds: 1,
                            phase: None,
                            since: Time(ms),
                        },
                    },
                },
            )
        }

        pub fn log(&mut self, ms: u64, goal: u32, line: &str) -> &mut Script {
            self.at(
                ms,
                EventKind::LogLine {
                    goal: GoalId(goal),
                    line: line.into(),
                },
            )
        }

        pub fn done(&mut self, ms: u64, goal: u32, status: BuildStatus) -> &mut Script {
            let message = (!status.success())
                .then(|| format!("builder for 'x' failed with exit code 2; goal {goal}"));
            self.at(
                ms,
                EventKind::GoalDone {
                    goal: GoalId(goal),
                    status,
                    message,
                    times: GoalTimes {
                        started: Some(Time(0)),
                        stopped: Time(ms),
                        times_built: 1,
                        non_deterministic: false,
                    },
                },
            )
        }
    }

    pub(crate) fn controls() -> Controls {
        Controls {
            max_jobs: 2,
            keep_going: false,
            paused: false,
            draining: false,
        }
    }

    pub(crate) fn view_of(events: &[Event]) -> ViewState {
        let mut v = ViewState::new(controls(), LogLimits::default(), Arc::new(NoHistory));
        v.apply_all(events);
        v
    }

    fn inputs(pending: u32) -> WaitReason {
        WaitReason::Inputs {
            pending,
            stage: InputStage::Inputs,
        }
    }

    #[test]
    fn goals_sit_under_their_deepest_dependent_once() {
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .add(0, 1, "lib", false)
            .add(0, 2, "zlib", false)
            .edge(0, 0, 1)
            .edge(0, 0, 2)
            .edge(0, 1, 2)
            .edge(0, 1, 2);
        let v = view_of(&s.events);
        assert_eq!(v.tops, vec![0]);
        let children = |g| v.links.children(g).collect::<Vec<_>>();
        assert_eq!(children(0), vec![1]);
        assert_eq!(children(1), vec![2]);
        assert_eq!(v.links.parent[2], 1);
        assert_eq!(v.links.depth[2], 2);
        assert_eq!(v.links.edges, vec![(0, 1), (0, 2), (1, 2)]);
    }

    #[test]
    fn counts_follow_states_and_slots_follow_builds() {
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .add(0, 1, "lib", false)
            .edge(0, 0, 1)
            .wait(0, 0, inputs(1))
            .build(0, 1, 1)
            .log(500, 1, "compiling");
        let v = view_of(&s.events);
        assert_eq!(v.count(Category::Waiting), 1);
        assert_eq!(v.count(Category::Building), 1);
        assert_eq!(v.build_slots, vec![None, Some(1)]);
        assert_eq!(v.last_line(1), Some("compiling"));
        assert_eq!(v.goals[1].last_output, Some(Time(500)));
        s.done(2000, 1, BuildStatus::PermanentFailure)
            .done(2000, 0, BuildStatus::DependencyFailed)
            .at(2000, EventKind::RunDone { exit_status: 100 });
        let v = view_of(&s.events);
        assert_eq!(v.count(Category::Failed), 1);
        assert_eq!(v.count(Category::DependencyFailed), 1);
        assert_eq!(v.count(Category::Building), 0);
        assert_eq!(v.build_slots, vec![None, None]);
        assert!(v.goals[1].log.is_none(), "a finished goal's ring is freed");
        assert_eq!(v.goals[1].exit_detail().as_deref(), Some("exit 2"));
        assert_eq!(
            v.phase,
            RunPhase::Done {
                exit_status: 100,
                at: Time(2000)
            }
        );
        assert_eq!(v.unfinished(), 0);
    }

    #[test]
    fn a_reopened_goal_waits_again_and_reopens_the_run() {
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .build(0, 0, 0)
            .done(10, 0, BuildStatus::PermanentFailure)
            .at(10, EventKind::RunDone { exit_status: 100 })
            .at(20, EventKind::GoalReopened { goal: GoalId(0) });
        let v = view_of(&s.events);
        assert!(v.is_running());
        assert_eq!(v.count(Category::Waiting), 1);
        assert_eq!(v.count(Category::Failed), 0);
        assert_eq!(v.goals[0].reopened, 1);
        assert!(v.goals[0].message.is_none());
    }

    #[test]
    fn lock_waits_keep_their_start_while_the_lock_stays_busy() {
        let lock = |retry: u64| WaitReason::Lock {
            paths: vec!["/nix/store/x-a".into()],
            holder: Some(LockHolder {
                pid: Some(4242),
                command: Some("nix-build".into()),
            }),
            retry_at: Some(Time(retry)),
        };
        let mut s = Script::default();
        s.add(0, 0, "a", true)
            .wait(100, 0, lock(5100))
            .wait(5100, 0, lock(10100));
        let v = view_of(&s.events);
        assert!(v.lock_waits.contains(&0));
        assert_eq!(v.goals[0].since, Time(100));
        s.build(10100, 0, 0);
        let v = view_of(&s.events);
        assert!(v.lock_waits.is_empty());
        assert_eq!(v.goals[0].since, Time(10100));
    }

    #[test]
    fn gaps_in_sequence_numbers_count_as_dropped_events() {
        let mut s = Script::default();
        s.add(0, 0, "a", true).add(0, 1, "b", true);
        s.events[1].seq = 5;
        let v = view_of(&s.events);
        assert_eq!(v.dropped_events, 4);
    }

    #[test]
    fn log_rings_are_bounded_and_lines_cut() {
        let limits = LogLimits {
            per_goal: 2,
            interleaved: 3,
            line_bytes: 4,
        };
        let mut v = ViewState::new(controls(), limits, Arc::new(NoHistory));
        let mut s = Script::default();
        s.add(0, 0, "a", true)
            .build(0, 0, 0)
            .log(1, 0, "one")
            .log(2, 0, "two")
            .log(3, 0, "thré€")
            .log(4, 0, "four");
        v.apply_all(&s.events);
        let ring = v.goals[0].log.as_ref().unwrap();
        let lines: Vec<&str> = ring.iter().map(|l| &**l).collect();
        assert_eq!(lines, vec!["thr", "four"]);
        assert_eq!(v.dropped_lines, 2);
        assert_eq!(v.interleaved.len(), 3);
        assert_eq!(v.interleaved.dropped(), 1);
    }

    #[test]
    fn commands_sent_update_the_controls() {
        let mut v = view_of(&[]);
        v.note_command(&Command::SetKeepGoing { keep_going: true });
        v.note_command(&Command::SetMaxJobs { max_jobs: 5 });
        v.note_command(&Command::Pause);
        assert_eq!(
            v.controls,
            Controls {
                max_jobs: 5,
                keep_going: true,
                paused: true,
                draining: false
            }
        );
    }
}
