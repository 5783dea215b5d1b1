//! A real Nix's `internal-json` stream read back into drover events (monitor mode).
//!
//! The stream names builds and substitutions but not the goal graph nor outcomes (see
//! internal-json.md, "gaps"), so the parser infers them the way nix-output-monitor does:
//! the plan comes from the `these N derivations will be built:` message and the `.drv` files
//! (when a [`DrvSource`] can read them), a build that stops after the actBuilds `done`
//! counter moved succeeded, one that stops after an `error:` naming its derivation failed
//! (the text says how), and any other stop was an interruption. A substitution
//! (actSubstitute) stops before Nix moves the counters: the next `done` of actCopyPaths is
//! its success, an error logged right after it is its substituter's failure (Nix tries the
//! next one, or `failed` moves); its NAR download (actFileTransfer, whose parent Nix 2.8 does
//! not name) and copy give its bytes. A failed substitution of a derivation's output is
//! Nix's first try: when that derivation then builds (`--fallback`), the substitution stays
//! a failed goal, as drover's own engine reports a fallback, but no longer fails the run.
//! Lines that are not `@nix` records become messages; a malformed record is an error naming
//! its line.

use std::fmt;

use rustc_hash::FxHashMap;

use crate::engine::api::{
    BuildMode, BuildStatus, Event, EventKind, GoalId, GoalKind, GoalState, GoalTimes, InputStage,
    Level, Progress, RunningDetail, Time, WaitReason,
};

use super::{Field, PREFIX, Record, activity, result, strip_ansi};

/// What a monitor can learn from a `.drv` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrvInfo {
    /// Output names and paths (when known before building).
    pub outputs: Vec<(String, Option<String>)>,
    /// Input derivations' paths.
    pub input_drvs: Vec<String>,
    pub fixed_output: bool,
}

/// Reads derivations named in the stream (the app reads `.drv` files; tests use maps).
pub trait DrvSource {
    fn derivation(&mut self, drv_path: &str) -> Option<DrvInfo>;
}

/// A malformed `@nix` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number in the stream.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: malformed @nix record: {}",
            self.line, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// What an activity id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Realise,
    Builds,
    CopyPaths,
    Build(GoalId),
    Substitute(GoalId),
    /// A copy, as part of a substitution (`Some`) or on its own.
    CopyPath(Option<GoalId>),
    /// A download: a substitution's NAR (`Some`), or anything else (a narinfo, the cache's
    /// `nix-cache-info`).
    FileTransfer(Option<GoalId>),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Known (planned or referenced), not started.
    Waiting,
    Running {
        act: u64,
        slot: u32,
        since: Time,
    },
    /// Its activity stopped after the `failed` counter moved; the error that says why comes
    /// later (Nix reports a top-level goal's error when the run ends).
    Stopped {
        since: Time,
    },
    /// A substitution whose activity stopped before the counters said how it went (Nix
    /// stops actSubstitute, then moves `done`, or logs the error).
    Ended {
        slot: u32,
        since: Time,
    },
    /// A substitution that failed with one substituter (its error was shown): Nix tries the
    /// next one, or the goal ends without its path.
    Retrying {
        since: Time,
    },
    Done {
        success: bool,
    },
}

/// The bytes of a substitution so far, as [`EventKind::SubstitutionProgress`] has them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Bytes {
    download_done: u64,
    download_expected: Option<u64>,
    nar_done: u64,
    nar_expected: u64,
    url: Option<String>,
    /// The running actCopyPath and actFileTransfer of the substitution.
    copy: Option<u64>,
    transfer: Option<u64>,
}

#[derive(Debug)]
struct Goal {
    path: String,
    substitution: bool,
    phase: Phase,
    /// A failure reported while it ran: applied when its activity stops.
    failure: Option<(BuildStatus, String)>,
    rounds: u32,
    /// Goals waiting for this one, and how many inputs this one still waits for.
    waiters: Vec<GoalId>,
    pending: u32,
    fixed_output: bool,
    /// When it ended unsuccessfully and that fails the run: Nix's exit-status bits of its
    /// failure.
    exit_bits: Option<u8>,
    /// A substitution's bytes.
    bytes: Bytes,
    /// A derivation's output paths, when its `.drv` was read.
    outputs: Option<Vec<String>>,
}

/// The `these N … will be …:` listing being read.
#[derive(Debug)]
struct Listing {
    substitutions: bool,
    remaining: usize,
}

/// Turns `@nix` lines into drover [`Event`]s; see the module documentation.
pub struct NixJsonParser {
    seq: u64,
    line_no: u64,
    acts: FxHashMap<u64, Act>,
    goals: Vec<Goal>,
    by_path: FxHashMap<String, GoalId>,
    /// Output path → the derivation goal producing it (from `.drv` files).
    output_owner: FxHashMap<String, GoalId>,
    /// Input derivation not (yet) a goal → goals that need it.
    pending_edges: FxHashMap<String, Vec<GoalId>>,
    drvs: Option<Box<dyn DrvSource>>,
    listing: Option<Listing>,
    /// Planned derivations whose goals are added when the listing ends.
    planned: Vec<(String, bool)>,
    progress: Progress,
    /// Bytes done so far per copy that belongs to no substitution (`nix copy`).
    transfers: FxHashMap<u64, u64>,
    /// Substitutions' copies (activity id, goal) that have no download yet: Nix 2.8 names
    /// no parent, so a NAR download belongs to the oldest of them.
    open_copies: Vec<(u64, GoalId)>,
    /// Substitutions in [`Phase::Ended`] and [`Phase::Retrying`], oldest first.
    ended: std::collections::VecDeque<GoalId>,
    retrying: std::collections::VecDeque<GoalId>,
    builds_progress_seen: bool,
    substitutions_progress_seen: bool,
    /// Counter values already attributed to stopped activities: builds done and failed,
    /// substitutions done and failed.
    credited: [u64; 4],
    build_slots: Vec<bool>,
    subst_slots: Vec<bool>,
}

impl fmt::Debug for NixJsonParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NixJsonParser")
            .field("line", &self.line_no)
            .field("goals", &self.goals.len())
            .finish()
    }
}

impl Default for NixJsonParser {
    fn default() -> Self {
        NixJsonParser::new(None)
    }
}

/// The Nix verbosity for a number (anything above 7 is vomit).
pub fn level_of(n: u64) -> Level {
    match n {
        0 => Level::Error,
        1 => Level::Warn,
        2 => Level::Notice,
        3 => Level::Info,
        4 => Level::Talkative,
        5 => Level::Chatty,
        6 => Level::Debug,
        _ => Level::Vomit,
    }
}

/// The name a store path shows: without the hash part and, for a derivation, `.drv`.
fn display_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    name.strip_suffix(".drv").unwrap_or(name).to_owned()
}

/// The first `'…'`-quoted derivation path in a message.
fn quoted_drv(text: &str) -> Option<&str> {
    text.split('\'')
        .skip(1)
        .step_by(2)
        .find(|s| s.starts_with('/') && s.ends_with(".drv"))
}

/// Nix's failure texts and the statuses they stand for.
fn classify(text: &str, fixed_output: bool) -> BuildStatus {
    if text.contains("failed previously (cached)") {
        BuildStatus::CachedFailure
    } else if text.starts_with("builder for '") {
        if fixed_output {
            BuildStatus::TransientFailure
        } else {
            BuildStatus::PermanentFailure
        }
    } else if text.starts_with("hash mismatch in fixed-output derivation") {
        BuildStatus::OutputRejected
    } else if text.contains(" timed out after ") {
        BuildStatus::TimedOut
    } else if text.contains(" killed after writing more than ") {
        BuildStatus::LogLimitExceeded
    } else if text.contains(" may not be deterministic: ") {
        BuildStatus::NotDeterministic
    } else if text.starts_with("some substitutes for the outputs of derivation '") {
        // A failed substitution without `--fallback`.
        BuildStatus::TransientFailure
    } else if text.contains(" dependencies of derivation '") && text.ends_with("failed to build") {
        BuildStatus::DependencyFailed
    } else {
        BuildStatus::MiscFailure
    }
}

/// Whether an error is Nix's report of a goal that failed (rather than a remark about one).
fn is_goal_failure(text: &str) -> bool {
    classify(text, false) != BuildStatus::MiscFailure
        || [
            "cannot build missing derivation '",
            "some substitutes for the outputs of derivation '",
            "some outputs of '",
            "some paths in the output closure of derivation '",
            "' requires non-existent output '",
        ]
        .iter()
        .any(|p| text.contains(p))
        || (text.starts_with("dependency '") && text.contains("does not exist"))
}

/// The store paths listed in `waiting for lock on 'a', 'b'`.
fn quoted_paths(text: &str) -> Vec<String> {
    text.split('\'')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

/// `these 3 derivations will be built:` → (false, 3); `this path will be fetched (…):` →
/// (true, 1).
fn listing_header(text: &str) -> Option<(bool, usize)> {
    if text == "this derivation will be built:" {
        return Some((false, 1));
    }
    if text.starts_with("this path will be fetched") {
        return Some((true, 1));
    }
    let rest = text.strip_prefix("these ")?;
    let (n, rest) = rest.split_once(' ')?;
    let n: usize = n.parse().ok()?;
    if rest == "derivations will be built:" {
        Some((false, n))
    } else if rest.starts_with("paths will be fetched") {
        Some((true, n))
    } else {
        None
    }
}

impl NixJsonParser {
    /// A parser; with `drvs`, the goal graph comes from the `.drv` files named in the stream.
    pub fn new(drvs: Option<Box<dyn DrvSource>>) -> NixJsonParser {
        NixJsonParser {
            seq: 0,
            line_no: 0,
            acts: FxHashMap::default(),
            goals: Vec::new(),
            by_path: FxHashMap::default(),
            output_owner: FxHashMap::default(),
            pending_edges: FxHashMap::default(),
            drvs,
            listing: None,
            planned: Vec::new(),
            progress: Progress::default(),
            transfers: FxHashMap::default(),
            open_copies: Vec::new(),
            ended: std::collections::VecDeque::new(),
            retrying: std::collections::VecDeque::new(),
            builds_progress_seen: false,
            substitutions_progress_seen: false,
            credited: [0; 4],
            build_slots: Vec::new(),
            subst_slots: Vec::new(),
        }
    }

    /// A message of the monitor's own (e.g. a malformed line), numbered with the rest.
    pub fn message(&mut self, level: Level, text: String, now: Time, out: &mut Vec<Event>) {
        self.emit(
            now,
            EventKind::Message {
                level,
                text,
                goal: None,
            },
            out,
        );
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line_no
    }

    fn emit(&mut self, now: Time, kind: EventKind, out: &mut Vec<Event>) {
        out.push(Event {
            seq: self.seq,
            time: now,
            kind,
        });
        self.seq += 1;
    }

    /// Reads one line (without its newline). A malformed record is an error; the parser
    /// stays usable for the next line.
    pub fn line(&mut self, line: &str, now: Time, out: &mut Vec<Event>) -> Result<(), ParseError> {
        self.line_no += 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(json) = line.strip_prefix(PREFIX) else {
            if !line.is_empty() {
                self.end_listing(now, out);
                let text = strip_ansi(line).into_owned();
                self.emit(
                    now,
                    EventKind::Message {
                        level: Level::Info,
                        text,
                        goal: None,
                    },
                    out,
                );
            }
            return Ok(());
        };
        let record: Record = serde_json::from_str(json).map_err(|e| ParseError {
            line: self.line_no,
            message: e.to_string(),
        })?;
        match record.action.as_ref() {
            "start" => self.start(&record, now, out),
            "stop" => self.stop(record.id, now, out),
            "result" => self.result(&record, now, out),
            "msg" => self.msg(&record, now, out),
            // `setPhase` belongs to the builder side channel; unknown actions are ignored, as
            // Nix ignores them.
            _ => {}
        }
        Ok(())
    }

    /// The end of the stream: what still runs was interrupted; the run is done.
    pub fn finish(&mut self, now: Time, out: &mut Vec<Event>) {
        self.end_listing(now, out);
        self.resolve_ended(now, out);
        self.ended.clear();
        self.retrying.clear();
        let failed = self.goals.iter().any(|g| g.exit_bits.is_some())
            || self.goals.iter().any(|g| {
                matches!(
                    g.phase,
                    Phase::Running { .. }
                        | Phase::Stopped { .. }
                        | Phase::Ended { .. }
                        | Phase::Retrying { .. }
                )
            });
        for i in 0..self.goals.len() {
            let g = GoalId(i as u32);
            let phase = self.goals[i].phase;
            match phase {
                Phase::Running { act, .. } => {
                    self.acts.remove(&act);
                    self.finish_goal(g, BuildStatus::Cancelled, None, now, out);
                }
                Phase::Stopped { .. } => {
                    self.finish_goal(g, BuildStatus::MiscFailure, None, now, out);
                }
                Phase::Ended { .. } => {
                    self.finish_goal(g, BuildStatus::Cancelled, None, now, out);
                }
                Phase::Retrying { .. } => {
                    self.finish_goal(g, BuildStatus::TransientFailure, None, now, out);
                }
                Phase::Waiting if failed => {
                    self.finish_goal(g, BuildStatus::Cancelled, None, now, out);
                }
                Phase::Waiting | Phase::Done { .. } => {}
            }
        }
        // Nix's exit status: 0, or 100 + the failures' bits, or 1 for failures without bits.
        let mut failures = self.goals.iter().filter_map(|g| g.exit_bits).peekable();
        let exit_status = match failures.peek() {
            None => 0,
            Some(_) => match failures.fold(0, |m, b| m | b) {
                0 => 1,
                mask => mask | 0x60,
            },
        };
        self.emit(now, EventKind::RunDone { exit_status }, out);
    }

    /// The goal for a path, added (with its edges) when new.
    fn goal_for(
        &mut self,
        path: &str,
        substitution: bool,
        top: bool,
        now: Time,
        out: &mut Vec<Event>,
    ) -> GoalId {
        if let Some(&g) = self.by_path.get(path) {
            return g;
        }
        let g = GoalId(self.goals.len() as u32);
        self.goals.push(Goal {
            path: path.to_owned(),
            substitution,
            phase: Phase::Waiting,
            failure: None,
            rounds: 0,
            waiters: Vec::new(),
            pending: 0,
            fixed_output: false,
            exit_bits: None,
            bytes: Bytes::default(),
            outputs: None,
        });
        self.by_path.insert(path.to_owned(), g);
        let kind = if substitution {
            GoalKind::Substitution {
                path: path.to_owned(),
                repair: false,
            }
        } else {
            GoalKind::Derivation {
                drv: path.to_owned(),
                outputs: Vec::new(),
                mode: BuildMode::Normal,
            }
        };
        let name = display_name(path);
        self.emit(
            now,
            EventKind::GoalAdded {
                goal: g,
                kind,
                name,
                top,
            },
            out,
        );
        if !substitution {
            self.link(g, now, out);
        }
        g
    }

    /// Reads a new derivation goal's `.drv` and adds the edges to and from known goals.
    fn link(&mut self, g: GoalId, now: Time, out: &mut Vec<Event>) {
        let path = self.goals[g.index()].path.clone();
        let Some(info) = self.drvs.as_mut().and_then(|d| d.derivation(&path)) else {
            return;
        };
        self.goals[g.index()].fixed_output = info.fixed_output;
        let outputs: Vec<String> = info.outputs.iter().filter_map(|(_, p)| p.clone()).collect();
        for p in &outputs {
            self.output_owner.insert(p.clone(), g);
        }
        self.goals[g.index()].outputs = Some(outputs);
        for input in &info.input_drvs {
            match self.by_path.get(input) {
                Some(&waitee) => self.edge(g, waitee, now, out),
                None => self.pending_edges.entry(input.clone()).or_default().push(g),
            }
        }
        for waiter in self.pending_edges.remove(&path).unwrap_or_default() {
            self.edge(waiter, g, now, out);
        }
    }

    fn edge(&mut self, waiter: GoalId, waitee: GoalId, now: Time, out: &mut Vec<Event>) {
        self.goals[waitee.index()].waiters.push(waiter);
        if !matches!(
            self.goals[waitee.index()].phase,
            Phase::Done { success: true }
        ) {
            self.goals[waiter.index()].pending += 1;
        }
        self.emit(now, EventKind::EdgeAdded { waiter, waitee }, out);
    }

    fn end_listing(&mut self, now: Time, out: &mut Vec<Event>) {
        if self.listing.take().is_none() && self.planned.is_empty() {
            return;
        }
        let planned = std::mem::take(&mut self.planned);
        // A planned derivation that no other planned one needs was asked for (top-level).
        let mut needed = rustc_hash::FxHashSet::default();
        let mut known = false;
        if let Some(drvs) = self.drvs.as_mut() {
            for (path, subst) in &planned {
                if *subst {
                    continue;
                }
                if let Some(info) = drvs.derivation(path) {
                    known = true;
                    needed.extend(info.input_drvs);
                }
            }
        }
        let mut added = Vec::new();
        for (path, subst) in &planned {
            let top = known && !subst && !needed.contains(path);
            let g = self.goal_for(path, *subst, top, now, out);
            added.push(g);
        }
        for g in added {
            let pending = self.goals[g.index()].pending;
            if self.goals[g.index()].phase == Phase::Waiting && !self.goals[g.index()].substitution
            {
                let state = GoalState::Waiting {
                    reason: WaitReason::Inputs {
                        pending,
                        stage: InputStage::Inputs,
                    },
                };
                self.emit(now, EventKind::StateChanged { goal: g, state }, out);
            }
        }
    }

    fn take_slot(slots: &mut Vec<bool>) -> u32 {
        match slots.iter().position(|busy| !busy) {
            Some(i) => {
                slots[i] = true;
                i as u32
            }
            None => {
                slots.push(true);
                (slots.len() - 1) as u32
            }
        }
    }

    fn start(&mut self, r: &Record, now: Time, out: &mut Vec<Event>) {
        let kind = r.kind.unwrap_or(activity::UNKNOWN);
        let text = r.text.as_deref().unwrap_or("");
        let field = |i: usize| r.fields.get(i).and_then(Field::as_str);
        let act = match kind {
            activity::REALISE => Act::Realise,
            activity::BUILDS => Act::Builds,
            activity::COPY_PATHS => Act::CopyPaths,
            activity::BUILD => match field(0) {
                Some(drv) => {
                    self.end_listing(now, out);
                    self.build_started(r, drv, text, now, out)
                }
                None => Act::Other,
            },
            activity::SUBSTITUTE => match field(0) {
                Some(path) => {
                    let sub = field(1).unwrap_or("").to_owned();
                    self.end_listing(now, out);
                    self.substitution_started(r.id, path, sub, now, out)
                }
                None => Act::Other,
            },
            activity::COPY_PATH => {
                // Nix 2.8 writes no parent: a copy of the path being substituted belongs to
                // that substitution.
                let owner = field(0).and_then(|p| self.by_path.get(p).copied());
                let under = owner.filter(|g| {
                    matches!(self.goals[g.index()].phase, Phase::Running { .. })
                        && self.goals[g.index()].substitution
                });
                match under {
                    Some(g) => {
                        self.goals[g.index()].bytes.copy = Some(r.id);
                        self.open_copies.push((r.id, g));
                    }
                    None if !text.is_empty() => {
                        self.note(level_of(r.level.unwrap_or(3)), text, None, now, out);
                    }
                    None => {}
                }
                Act::CopyPath(under)
            }
            activity::FILE_TRANSFER => {
                let owner = self.transfer_owner(r, field(0));
                if let Some(g) = owner {
                    self.open_copies.retain(|&(_, o)| o != g);
                    let bytes = &mut self.goals[g.index()].bytes;
                    bytes.transfer = Some(r.id);
                    bytes.url = field(0).map(str::to_owned);
                }
                Act::FileTransfer(owner)
            }
            activity::BUILD_WAITING => {
                self.waiting(r, text, now, out);
                Act::Other
            }
            _ => {
                if !text.is_empty() {
                    self.note(level_of(r.level.unwrap_or(0)), text, None, now, out);
                }
                Act::Other
            }
        };
        self.acts.insert(r.id, act);
    }

    /// The substitution a download belongs to: the one whose copy is its parent (drover
    /// names it), or else (Nix 2.8 names no parent) the oldest running copy without a
    /// download, unless the file is a narinfo or the cache's `nix-cache-info`.
    fn transfer_owner(&self, r: &Record, url: Option<&str>) -> Option<GoalId> {
        if let Some(parent) = r.parent.filter(|&p| p != 0) {
            return match self.acts.get(&parent) {
                Some(Act::CopyPath(owner)) => *owner,
                _ => None,
            };
        }
        let url = url?;
        if url.ends_with(".narinfo") || url.ends_with("/nix-cache-info") {
            return None;
        }
        self.open_copies.first().map(|&(_, g)| g)
    }

    fn build_started(
        &mut self,
        r: &Record,
        drv: &str,
        text: &str,
        now: Time,
        out: &mut Vec<Event>,
    ) -> Act {
        let g = self.goal_for(drv, false, false, now, out);
        let slot = match self.goals[g.index()].phase {
            // A new round: the previous round's activity ended.
            Phase::Running { act, slot, .. } => {
                self.acts.remove(&act);
                slot
            }
            Phase::Done { .. } => {
                self.emit(now, EventKind::GoalReopened { goal: g }, out);
                self.goals[g.index()].failure = None;
                Self::take_slot(&mut self.build_slots)
            }
            Phase::Stopped { .. } => {
                self.finish_goal(g, BuildStatus::MiscFailure, None, now, out);
                self.emit(now, EventKind::GoalReopened { goal: g }, out);
                Self::take_slot(&mut self.build_slots)
            }
            Phase::Waiting | Phase::Ended { .. } | Phase::Retrying { .. } => {
                Self::take_slot(&mut self.build_slots)
            }
        };
        self.goals[g.index()].phase = Phase::Running {
            act: r.id,
            slot,
            since: now,
        };
        let int = |i: usize| r.fields.get(i).and_then(Field::as_int).unwrap_or(1) as u32;
        let (round, nr_rounds) = (int(2), int(3));
        self.goals[g.index()].rounds += 1;
        let mode = if text.starts_with("checking outputs of") {
            BuildMode::Check
        } else if text.starts_with("repairing outputs of") {
            BuildMode::Repair
        } else {
            BuildMode::Normal
        };
        self.emit(
            now,
            EventKind::BuildStarted {
                goal: g,
                slot,
                pid: None,
                round,
                nr_rounds,
                mode,
            },
            out,
        );
        let state = GoalState::Running {
            detail: RunningDetail::Build {
                slot,
                pid: None,
                round,
                nr_rounds,
                phase: None,
                since: now,
            },
        };
        self.emit(now, EventKind::StateChanged { goal: g, state }, out);
        Act::Build(g)
    }

    fn substitution_started(
        &mut self,
        id: u64,
        path: &str,
        substituter: String,
        now: Time,
        out: &mut Vec<Event>,
    ) -> Act {
        let g = self.goal_for(path, true, false, now, out);
        if let Phase::Stopped { .. } = self.goals[g.index()].phase {
            self.finish_goal(g, BuildStatus::MiscFailure, None, now, out);
        }
        if matches!(self.goals[g.index()].phase, Phase::Done { .. }) {
            self.emit(now, EventKind::GoalReopened { goal: g }, out);
        }
        self.ended.retain(|&e| e != g);
        self.retrying.retain(|&e| e != g);
        let slot = match self.goals[g.index()].phase {
            Phase::Running { slot, .. } | Phase::Ended { slot, .. } => slot,
            _ => Self::take_slot(&mut self.subst_slots),
        };
        let bytes = &mut self.goals[g.index()].bytes;
        (bytes.copy, bytes.transfer) = (None, None);
        self.goals[g.index()].phase = Phase::Running {
            act: id,
            slot,
            since: now,
        };
        self.emit(
            now,
            EventKind::SubstitutionStarted {
                goal: g,
                slot,
                substituter: substituter.clone(),
            },
            out,
        );
        let state = GoalState::Running {
            detail: RunningDetail::Substitution {
                slot,
                substituter,
                since: now,
            },
        };
        self.emit(now, EventKind::StateChanged { goal: g, state }, out);
        Act::Substitute(g)
    }

    /// actBuildWaiting: a lock wait (the goal found through its output paths), a wait for a
    /// build user or a machine.
    fn waiting(&mut self, r: &Record, text: &str, now: Time, out: &mut Vec<Event>) {
        let text = strip_ansi(text).into_owned();
        let level = level_of(r.level.unwrap_or(1));
        let (goal, reason) = if let Some(paths) = text.strip_prefix("waiting for lock on ") {
            let paths = quoted_paths(paths);
            let goal = paths.iter().find_map(|p| self.output_owner.get(p).copied());
            let reason = WaitReason::Lock {
                paths,
                holder: None,
                retry_at: None,
            };
            (goal, Some(reason))
        } else if text.starts_with("waiting for UID to build")
            || text.starts_with("waiting for a free build user ID")
        {
            let goal = quoted_drv(&text).map(|d| self.goal_for(d, false, false, now, out));
            (goal, Some(WaitReason::BuildUser { retry_at: now }))
        } else {
            (None, None)
        };
        self.note(level, &text, goal, now, out);
        if let (Some(goal), Some(reason)) = (goal, reason) {
            let state = GoalState::Waiting { reason };
            self.emit(now, EventKind::StateChanged { goal, state }, out);
        }
    }

    /// A message from the stream, without its colours.
    fn note(
        &mut self,
        level: Level,
        text: &str,
        goal: Option<GoalId>,
        now: Time,
        out: &mut Vec<Event>,
    ) {
        let text = strip_ansi(text).into_owned();
        self.emit(now, EventKind::Message { level, text, goal }, out);
    }

    fn stop(&mut self, id: u64, now: Time, out: &mut Vec<Event>) {
        self.transfers.remove(&id);
        let (g, substitution) = match self.acts.remove(&id) {
            Some(Act::Build(g)) => (g, false),
            Some(Act::Substitute(g)) => (g, true),
            Some(Act::CopyPath(Some(g))) => {
                self.open_copies.retain(|&(c, _)| c != id);
                let bytes = &mut self.goals[g.index()].bytes;
                if bytes.copy == Some(id) {
                    bytes.copy = None;
                }
                return;
            }
            Some(Act::FileTransfer(Some(g))) => {
                let bytes = &mut self.goals[g.index()].bytes;
                if bytes.transfer == Some(id) {
                    bytes.transfer = None;
                }
                return;
            }
            Some(Act::CopyPaths) => {
                // The run's substitutions are over: what is still unresolved ended without
                // a word.
                self.resolve_ended(now, out);
                while let Some(g) = self.ended.pop_front() {
                    self.finish_goal(g, BuildStatus::Cancelled, None, now, out);
                }
                return;
            }
            _ => return,
        };
        let Phase::Running { act, slot, since } = self.goals[g.index()].phase else {
            return;
        };
        if act != id {
            return;
        }
        // Nix moves the counters before an activity stops: `done` for a success, `failed`
        // for a failure (whose error was logged just before, unless the goal is top-level).
        let (seen, counter, base) = if substitution {
            let c = self.progress.substitutions;
            (self.substitutions_progress_seen, c, 2)
        } else {
            (self.builds_progress_seen, self.progress.builds, 0)
        };
        let done = seen && counter.done > self.credited[base];
        let failed = seen && counter.failed > self.credited[base + 1];
        let failure = self.goals[g.index()].failure.take();
        if done {
            self.credited[base] += 1;
        } else if failed {
            self.credited[base + 1] += 1;
        }
        let success = if substitution {
            BuildStatus::Substituted
        } else {
            BuildStatus::Built
        };
        match failure {
            Some((_, text)) if done => {
                self.finish_goal(g, success, None, now, out);
                self.emit(
                    now,
                    EventKind::Message {
                        level: Level::Error,
                        text,
                        goal: Some(g),
                    },
                    out,
                );
            }
            Some((status, text)) => self.finish_goal(g, status, Some(text), now, out),
            None if done || !seen => self.finish_goal(g, success, None, now, out),
            // Nix stops a substitution's activity before it moves the counters (or logs
            // why it failed); drover's stream moves `running` first for a cancelled one.
            None if substitution && !failed && counter.running >= self.substitutions_busy() => {
                self.goals[g.index()].phase = Phase::Ended { slot, since };
                self.ended.push_back(g);
            }
            None if failed => {
                let slots = if substitution {
                    &mut self.subst_slots
                } else {
                    &mut self.build_slots
                };
                if let Some(s) = slots.get_mut(slot as usize) {
                    *s = false;
                }
                self.goals[g.index()].phase = Phase::Stopped { since };
            }
            None => self.finish_goal(g, BuildStatus::Cancelled, None, now, out),
        }
    }

    /// Substitution slots in use: running substitutions and ended ones not yet resolved.
    fn substitutions_busy(&self) -> u64 {
        self.subst_slots.iter().filter(|&&busy| busy).count() as u64
    }

    /// Substitutions that stopped before the counters moved, resolved by the counters: each
    /// new `done` is the oldest ended one's success, each new `failed` the oldest retrying
    /// one's end (every substituter failed).
    fn resolve_ended(&mut self, now: Time, out: &mut Vec<Event>) {
        let counter = self.progress.substitutions;
        while counter.done > self.credited[2] {
            let Some(g) = self.ended.pop_front() else {
                break;
            };
            self.credited[2] += 1;
            self.finish_goal(g, BuildStatus::Substituted, None, now, out);
        }
        while counter.failed > self.credited[3] {
            let Some(g) = self.retrying.pop_front() else {
                break;
            };
            self.credited[3] += 1;
            self.finish_goal(g, BuildStatus::TransientFailure, None, now, out);
        }
    }

    /// An error logged after a substitution stopped unresolved: why it failed with that
    /// substituter (the one the text names, or else the last one to stop). Whether it was
    /// consumed.
    fn substitution_failure(&mut self, text: &str, now: Time, out: &mut Vec<Event>) -> bool {
        let named = text
            .split('\'')
            .skip(1)
            .step_by(2)
            .filter_map(|p| self.by_path.get(p).copied())
            .find(|g| self.ended.contains(g));
        let Some(g) = named.or_else(|| self.ended.back().copied()) else {
            return false;
        };
        self.ended.retain(|&e| e != g);
        let goal = &mut self.goals[g.index()];
        let Phase::Ended { slot, since } = goal.phase else {
            return false;
        };
        goal.phase = Phase::Retrying { since };
        if let Some(s) = self.subst_slots.get_mut(slot as usize) {
            *s = false;
        }
        self.retrying.push_back(g);
        let text = text.to_owned();
        self.emit(
            now,
            EventKind::Message {
                level: Level::Error,
                text,
                goal: Some(g),
            },
            out,
        );
        true
    }

    /// A substitution's bytes changed: its `SubstitutionProgress`, and the run's totals.
    fn set_bytes(&mut self, g: GoalId, new: Bytes, now: Time, out: &mut Vec<Event>) {
        let old = std::mem::replace(&mut self.goals[g.index()].bytes, new.clone());
        let same = (
            old.download_done,
            old.download_expected,
            old.nar_done,
            old.nar_expected,
        ) == (
            new.download_done,
            new.download_expected,
            new.nar_done,
            new.nar_expected,
        );
        if same {
            return;
        }
        let before = self.progress;
        self.progress.download.done += new.download_done.saturating_sub(old.download_done);
        self.progress.nar.done += new.nar_done.saturating_sub(old.nar_done);
        self.emit(
            now,
            EventKind::SubstitutionProgress {
                goal: g,
                download_done: new.download_done,
                download_expected: new.download_expected,
                nar_done: new.nar_done,
                nar_expected: new.nar_expected,
                url: new.url,
            },
            out,
        );
        self.progress_event(before, now, out);
    }

    /// Ends a goal: frees its slot, records the exit-status bits, unblocks its waiters.
    fn finish_goal(
        &mut self,
        g: GoalId,
        status: BuildStatus,
        message: Option<String>,
        now: Time,
        out: &mut Vec<Event>,
    ) {
        if status == BuildStatus::Substituted {
            // A substitution that succeeded has all its bytes, as far as they were known.
            let bytes = &self.goals[g.index()].bytes;
            let mut full = bytes.clone();
            full.download_done = full.download_done.max(full.download_expected.unwrap_or(0));
            full.nar_done = full.nar_done.max(full.nar_expected);
            self.set_bytes(g, full, now, out);
        }
        let goal = &mut self.goals[g.index()];
        let started = match goal.phase {
            Phase::Stopped { since } | Phase::Retrying { since } => Some(since),
            Phase::Running { slot, since, .. } | Phase::Ended { slot, since } => {
                let slots = if goal.substitution {
                    &mut self.subst_slots
                } else {
                    &mut self.build_slots
                };
                if let Some(s) = slots.get_mut(slot as usize) {
                    *s = false;
                }
                Some(since)
            }
            _ => None,
        };
        let success = status.success();
        goal.phase = Phase::Done { success };
        let times_built = if goal.substitution { 0 } else { goal.rounds };
        let waiters = goal.waiters.clone();
        goal.exit_bits = (!success).then(|| match status {
            BuildStatus::PermanentFailure
            | BuildStatus::InputRejected
            | BuildStatus::CachedFailure => 0x04,
            BuildStatus::TimedOut => 0x05,
            BuildStatus::OutputRejected
                if message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("hash mismatch")) =>
            {
                0x06
            }
            BuildStatus::NotDeterministic => 0x08,
            _ => 0,
        });
        let times = GoalTimes {
            started,
            stopped: now,
            times_built,
            non_deterministic: status == BuildStatus::NotDeterministic,
        };
        self.emit(
            now,
            EventKind::GoalDone {
                goal: g,
                status,
                message,
                times,
            },
            out,
        );
        if status == BuildStatus::Built {
            self.supersede_substitutions(g, now, out);
        }
        if success {
            for w in waiters {
                let waiter = &mut self.goals[w.index()];
                if waiter.phase != Phase::Waiting {
                    continue;
                }
                waiter.pending = waiter.pending.saturating_sub(1);
                let state = GoalState::Waiting {
                    reason: WaitReason::Inputs {
                        pending: waiter.pending,
                        stage: InputStage::Inputs,
                    },
                };
                self.emit(now, EventKind::StateChanged { goal: w, state }, out);
            }
        }
    }

    /// A derivation built: the failed substitutions of its outputs were Nix's first try
    /// (`--fallback` built the path instead), so they no longer fail the run. As drover's
    /// own engine reports a fallback, they are failed goals (one still waiting for its
    /// failure to be told ends now). The outputs come from the `.drv`; without it, from the
    /// name Nix gives an output (`name` for `out`, else `name-output`).
    fn supersede_substitutions(&mut self, drv: GoalId, now: Time, out: &mut Vec<Event>) {
        let goal = &self.goals[drv.index()];
        let outputs = goal.outputs.clone();
        let name = display_name(&goal.path);
        let produced = |path: &str| match &outputs {
            Some(paths) => paths.iter().any(|p| p == path),
            None => {
                let sub_name = display_name(path);
                sub_name == name
                    || sub_name
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            }
        };
        let superseded: Vec<GoalId> = (0..self.goals.len())
            .map(|i| GoalId(i as u32))
            .filter(|g| {
                let sub = &self.goals[g.index()];
                sub.substitution
                    && matches!(
                        sub.phase,
                        Phase::Done { success: false }
                            | Phase::Stopped { .. }
                            | Phase::Retrying { .. }
                    )
                    && produced(&sub.path)
            })
            .collect();
        for g in superseded {
            match self.goals[g.index()].phase {
                Phase::Stopped { .. } => {
                    self.finish_goal(g, BuildStatus::TransientFailure, None, now, out);
                }
                Phase::Retrying { .. } => {
                    // The `failed` counter, when it moves, counts this one.
                    self.retrying.retain(|&r| r != g);
                    self.credited[3] += 1;
                    self.finish_goal(g, BuildStatus::TransientFailure, None, now, out);
                }
                _ => {}
            }
            self.goals[g.index()].exit_bits = None;
        }
    }

    fn result(&mut self, r: &Record, now: Time, out: &mut Vec<Event>) {
        let Some(&act) = self.acts.get(&r.id) else {
            return;
        };
        let kind = r.kind.unwrap_or(0);
        let int = |i: usize| r.fields.get(i).and_then(Field::as_int).unwrap_or(0);
        match (act, kind) {
            (Act::Build(goal), result::BUILD_LOG_LINE | result::POST_BUILD_LOG_LINE) => {
                if let Some(line) = r.fields.first().and_then(Field::as_str) {
                    let line = line.to_owned();
                    self.emit(now, EventKind::LogLine { goal, line }, out);
                }
            }
            (Act::Build(goal), result::SET_PHASE) => {
                if let Some(phase) = r.fields.first().and_then(Field::as_str) {
                    let phase = phase.to_owned();
                    self.emit(now, EventKind::PhaseChanged { goal, phase }, out);
                }
            }
            (Act::Builds | Act::CopyPaths, result::PROGRESS) => {
                let before = self.progress;
                let c = if act == Act::Builds {
                    self.builds_progress_seen = true;
                    &mut self.progress.builds
                } else {
                    self.substitutions_progress_seen = true;
                    &mut self.progress.substitutions
                };
                (c.done, c.expected, c.running, c.failed) = (int(0), int(1), int(2), int(3));
                self.progress_event(before, now, out);
                if act == Act::CopyPaths {
                    self.resolve_ended(now, out);
                }
            }
            (Act::Realise, result::SET_EXPECTED) => {
                let before = self.progress;
                match int(0) {
                    activity::FILE_TRANSFER => self.progress.download.expected = int(1),
                    activity::COPY_PATH => self.progress.nar.expected = int(1),
                    _ => {}
                }
                self.progress_event(before, now, out);
            }
            (Act::FileTransfer(Some(g)), result::PROGRESS) => {
                let mut bytes = self.goals[g.index()].bytes.clone();
                bytes.download_done = bytes.download_done.max(int(0));
                if int(1) > 0 {
                    bytes.download_expected = Some(int(1));
                }
                // An uncompressed NAR's download is the NAR itself.
                if bytes.url.as_deref().is_some_and(|u| u.ends_with(".nar")) {
                    bytes.nar_done = bytes.nar_done.max(bytes.download_done);
                    bytes.nar_expected = bytes.nar_expected.max(int(1));
                }
                self.set_bytes(g, bytes, now, out);
            }
            (Act::CopyPath(Some(g)), result::PROGRESS) => {
                let mut bytes = self.goals[g.index()].bytes.clone();
                bytes.nar_done = bytes.nar_done.max(int(0));
                bytes.nar_expected = bytes.nar_expected.max(int(1));
                self.set_bytes(g, bytes, now, out);
            }
            (Act::CopyPath(None), result::PROGRESS) => {
                // A copy of its own (`nix copy`): its bytes count in the run's NAR total.
                let before = self.progress;
                let last = self.transfers.entry(r.id).or_default();
                let delta = int(0).saturating_sub(*last);
                *last = int(0);
                self.progress.nar.done += delta;
                self.progress_event(before, now, out);
            }
            _ => {}
        }
    }

    /// An error about a goal: the failure of a running or stopped goal, or of a waiting one
    /// when the text is one of Nix's goal failures. Whether it was consumed.
    fn goal_failure(&mut self, text: &str, now: Time, out: &mut Vec<Event>) -> bool {
        let known = text
            .split('\'')
            .skip(1)
            .step_by(2)
            .find_map(|p| self.by_path.get(p).copied());
        let goal = match known {
            Some(g) => g,
            None => match quoted_drv(text) {
                Some(drv) if is_goal_failure(text) => self.goal_for(drv, false, false, now, out),
                _ => return false,
            },
        };
        let g = &mut self.goals[goal.index()];
        let status = classify(text, g.fixed_output);
        match g.phase {
            Phase::Running { .. } if g.failure.is_none() => {
                g.failure = Some((status, text.to_owned()));
                true
            }
            Phase::Stopped { .. } => {
                self.finish_goal(goal, status, Some(text.to_owned()), now, out);
                true
            }
            Phase::Waiting if is_goal_failure(text) => {
                self.finish_goal(goal, status, Some(text.to_owned()), now, out);
                true
            }
            // A failed goal reported again (drover's retry reopens a run): the new report
            // stands.
            Phase::Done { success: false } if is_goal_failure(text) => {
                self.emit(now, EventKind::GoalReopened { goal }, out);
                self.finish_goal(goal, status, Some(text.to_owned()), now, out);
                true
            }
            _ => false,
        }
    }

    /// A `Progress` event when the counters moved since `before`.
    fn progress_event(&mut self, before: Progress, now: Time, out: &mut Vec<Event>) {
        let progress = self.progress;
        if progress != before {
            self.emit(now, EventKind::Progress { progress }, out);
        }
    }

    fn msg(&mut self, r: &Record, now: Time, out: &mut Vec<Event>) {
        let level = level_of(r.level.unwrap_or(3));
        let text = match r.raw_msg.as_deref() {
            Some(raw) => strip_ansi(raw),
            // A message without `raw_msg` carries Nix's `warning:`/`error:` prefix.
            None => {
                let text = strip_ansi(r.msg.as_deref().unwrap_or(""));
                let prefix = match level {
                    Level::Error => Some("error: "),
                    Level::Warn => Some("warning: "),
                    _ => None,
                };
                match prefix.and_then(|p| text.strip_prefix(p)) {
                    Some(rest) => std::borrow::Cow::Owned(rest.to_owned()),
                    None => text,
                }
            }
        };
        if let Some(listing) = &mut self.listing {
            if let Some(path) = text.strip_prefix("  ").filter(|p| p.starts_with('/')) {
                self.planned.push((path.to_owned(), listing.substitutions));
                listing.remaining = listing.remaining.saturating_sub(1);
                let complete = listing.remaining == 0;
                self.note(level, &text, None, now, out);
                if complete {
                    self.end_listing(now, out);
                }
                return;
            }
            self.end_listing(now, out);
        }
        if let Some((substitutions, remaining)) = listing_header(&text) {
            self.listing = Some(Listing {
                substitutions,
                remaining,
            });
            self.note(level, &text, None, now, out);
            return;
        }
        if level == Level::Error
            && (self.goal_failure(&text, now, out) || self.substitution_failure(&text, now, out))
        {
            return;
        }
        let text = text.into_owned();
        self.emit(
            now,
            EventKind::Message {
                level,
                text,
                goal: None,
            },
            out,
        );
    }
}
