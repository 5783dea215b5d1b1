//! drover events as Nix's `internal-json` stream, in the order and wording Nix 2.8's worker
//! uses: actRealise, actBuilds and actCopyPaths for the run, one actBuild per build (log
//! lines and phases as its results), actSubstitute with an actCopyPath child per
//! substitution, actBuildWaiting while a lock or a build user is awaited, the progress
//! counters as results of the aggregate activities, and failures as `error:` messages
//! (logged before the failed build's activity stops, as Nix does).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::api::{
    BuildMode, BuildStatus, Counter, Event, EventKind, GoalId, GoalKind, GoalState, Level,
    Progress, WaitReason,
};

use super::{ANSI_NORMAL, ANSI_WARNING, Field, RecordWriter, activity, result};

/// What the emitter keeps of a goal.
#[derive(Debug, Default)]
struct Goal {
    /// The `.drv` path or the substituted path.
    path: String,
    top: bool,
    substitution: bool,
    /// The running actBuild or actSubstitute.
    act: Option<u64>,
    /// The actCopyPath under an actSubstitute.
    copy: Option<u64>,
    /// The actFileTransfer under that actCopyPath (an HTTP cache's NAR download).
    transfer: Option<u64>,
    /// The actBuildWaiting of a lock or build-user wait.
    waiting: Option<u64>,
}

/// Folds drover [`Event`]s into `@nix` lines.
#[derive(Debug)]
pub struct NixJsonEmitter {
    /// The high 32 bits of every activity id.
    pid: u64,
    /// The next id's low half; `None`: the process-wide counter ([`next_activity_id`]).
    next_id: Option<u64>,
    /// actRealise, actBuilds, actCopyPaths of the current run, once started.
    run: Option<[u64; 3]>,
    goals: Vec<Option<Goal>>,
    /// The counters last written.
    builds: Counter,
    substitutions: Counter,
    /// Builds and substitutions seen to finish (done or failed) by their goal's end. A
    /// stream whose progress moves before the goal ends (Nix's own order, as parsed from a
    /// monitored build) has counted the finish already; drover's own moves after.
    builds_finished: u64,
    substitutions_finished: u64,
    download_expected: u64,
    nar_expected: u64,
    /// Failed top-level goals, reported when the run ends (as Nix's `buildPaths` does).
    failed_tops: Vec<(GoalId, Option<String>)>,
}

/// A fresh activity id of this process: `counter + (pid << 32)`, the counter shared by
/// everything the process reports, as Nix's is.
pub fn next_activity_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (u64::from(std::process::id()) << 32) + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Nix's verbosity number.
pub fn level_number(level: Level) -> u8 {
    level as u8
}

impl NixJsonEmitter {
    /// An emitter whose activity ids carry `pid`, as Nix's do, counting from 0 (for tests
    /// and recordings: the same events give the same bytes).
    pub fn new(pid: u32) -> NixJsonEmitter {
        NixJsonEmitter {
            pid: u64::from(pid) << 32,
            next_id: Some(0),
            ..NixJsonEmitter::for_this_process()
        }
    }

    /// An emitter for this process's standard error: its ids come from the process-wide
    /// counter, so they never collide with other activities the process reports (such as
    /// the listing of what will be built).
    pub fn for_this_process() -> NixJsonEmitter {
        NixJsonEmitter {
            pid: u64::from(std::process::id()) << 32,
            next_id: None,
            run: None,
            goals: Vec::new(),
            builds: Counter::default(),
            substitutions: Counter::default(),
            builds_finished: 0,
            substitutions_finished: 0,
            download_expected: 0,
            nar_expected: 0,
            failed_tops: Vec::new(),
        }
    }

    fn new_id(&mut self) -> u64 {
        match &mut self.next_id {
            Some(next) => {
                *next += 1;
                self.pid + *next - 1
            }
            None => next_activity_id(),
        }
    }

    fn goal(&mut self, g: GoalId) -> &mut Goal {
        if self.goals.len() <= g.index() {
            self.goals.resize_with(g.index() + 1, || None);
        }
        self.goals[g.index()].get_or_insert_with(Goal::default)
    }

    /// Starts the run's aggregate activities, once.
    fn run_ids(&mut self, w: &mut RecordWriter) -> io::Result<[u64; 3]> {
        if let Some(ids) = self.run {
            return Ok(ids);
        }
        let ids = [self.new_id(), self.new_id(), self.new_id()];
        w.start(ids[0], 0, activity::REALISE, "", 0, &[])?;
        w.start(ids[1], 0, activity::BUILDS, "", 0, &[])?;
        w.start(ids[2], 0, activity::COPY_PATHS, "", 0, &[])?;
        self.run = Some(ids);
        Ok(ids)
    }

    pub fn event(&mut self, e: &Event, out: &mut dyn Write) -> io::Result<()> {
        let w = &mut RecordWriter { out };
        let ids = self.run_ids(w)?;
        match &e.kind {
            EventKind::GoalAdded {
                goal, kind, top, ..
            } => {
                let (path, substitution) = match kind {
                    GoalKind::Derivation { drv, .. } => (drv.clone(), false),
                    GoalKind::Substitution { path, .. } => (path.clone(), true),
                };
                *self.goal(*goal) = Goal {
                    path,
                    top: *top,
                    substitution,
                    ..Goal::default()
                };
            }
            EventKind::BuildStarted {
                goal,
                round,
                nr_rounds,
                mode,
                ..
            } => {
                self.stop_waiting(*goal, w)?;
                if let Some(old) = self.goal(*goal).act.take() {
                    w.stop(old)?;
                }
                let id = self.new_id();
                let drv = self.goal(*goal).path.clone();
                let text = match mode {
                    BuildMode::Repair => format!("repairing outputs of '{drv}'"),
                    BuildMode::Check => format!("checking outputs of '{drv}'"),
                    BuildMode::Normal if *nr_rounds > 1 => {
                        format!("building '{drv}' (round {round}/{nr_rounds})")
                    }
                    BuildMode::Normal => format!("building '{drv}'"),
                };
                let fields = [
                    Field::Str(drv.as_str().into()),
                    Field::Str("".into()),
                    Field::Int(u64::from(*round)),
                    Field::Int(u64::from(*nr_rounds)),
                ];
                w.start(id, 3, activity::BUILD, &text, 0, &fields)?;
                self.goal(*goal).act = Some(id);
            }
            EventKind::SubstitutionStarted {
                goal, substituter, ..
            } => {
                let (sub, copy) = (self.new_id(), self.new_id());
                let path = self.goal(*goal).path.clone();
                let fields = [
                    Field::Str(path.as_str().into()),
                    Field::Str(substituter.as_str().into()),
                ];
                w.start(sub, 0, activity::SUBSTITUTE, "", 0, &fields)?;
                let text = format!("copying path '{path}' from '{substituter}'");
                let fields = [
                    Field::Str(path.as_str().into()),
                    Field::Str(substituter.as_str().into()),
                    Field::Str("local".into()),
                ];
                w.start(copy, 3, activity::COPY_PATH, &text, sub, &fields)?;
                let g = self.goal(*goal);
                g.act = Some(sub);
                g.copy = Some(copy);
            }
            EventKind::LogLine { goal, line } => {
                let g = self.goal(*goal);
                match g.act {
                    Some(id) if !g.substitution => {
                        w.result(id, result::BUILD_LOG_LINE, &[Field::Str(line.into())])?
                    }
                    _ => w.msg(level_number(Level::Info), line)?,
                }
            }
            EventKind::PhaseChanged { goal, phase } => {
                if let Some(id) = self.goal(*goal).act {
                    w.result(id, result::SET_PHASE, &[Field::Str(phase.into())])?;
                }
            }
            EventKind::StateChanged { goal, state } => {
                let waits = matches!(
                    state,
                    GoalState::Waiting {
                        reason: WaitReason::Lock { .. } | WaitReason::BuildUser { .. }
                    }
                );
                if !waits {
                    self.stop_waiting(*goal, w)?;
                }
            }
            EventKind::Progress { progress } => self.progress(progress, ids, w)?,
            EventKind::SubstitutionProgress {
                goal,
                download_done,
                download_expected,
                nar_done,
                nar_expected,
                url,
            } => {
                let g = self.goal(*goal);
                if let Some(copy) = g.copy {
                    // The NAR's bytes as the copy's progress (Nix's copyStorePath reports
                    // them so), the download's as its actFileTransfer's.
                    let fields = [
                        Field::Int(*nar_done),
                        Field::Int(*nar_expected),
                        Field::Int(0),
                        Field::Int(0),
                    ];
                    w.result(copy, result::PROGRESS, &fields)?;
                    let Some(url) = url else {
                        return Ok(());
                    };
                    let id = match self.goal(*goal).transfer {
                        Some(id) => id,
                        None => {
                            let id = self.new_id();
                            let text = format!("downloading '{url}'");
                            let fields = [Field::Str(url.as_str().into())];
                            w.start(id, 4, activity::FILE_TRANSFER, &text, copy, &fields)?;
                            self.goal(*goal).transfer = Some(id);
                            id
                        }
                    };
                    let fields = [
                        Field::Int(*download_done),
                        Field::Int(download_expected.unwrap_or(0)),
                        Field::Int(0),
                        Field::Int(0),
                    ];
                    w.result(id, result::PROGRESS, &fields)?;
                }
            }
            EventKind::GoalDone {
                goal,
                status,
                message,
                ..
            } => self.goal_done(*goal, *status, message.as_deref(), ids, w)?,
            EventKind::GoalReopened { goal } => {
                self.failed_tops.retain(|(g, _)| g != goal);
            }
            EventKind::Message { level, text, goal } => {
                self.message(*level, text, *goal, w)?;
            }
            EventKind::RunDone { .. } => self.run_done(ids, w)?,
            EventKind::EdgeAdded { .. } => {}
        }
        Ok(())
    }

    /// A lock or build-user wait becomes an actBuildWaiting, as in Nix; other messages
    /// are `msg` records (errors and warnings with Nix's prefix).
    fn message(
        &mut self,
        level: Level,
        text: &str,
        goal: Option<GoalId>,
        w: &mut RecordWriter,
    ) -> io::Result<()> {
        let waiting_text = if let Some(paths) = text.strip_prefix("waiting for lock on ") {
            Some(format!(
                "waiting for lock on {ANSI_WARNING}{paths}{ANSI_NORMAL}"
            ))
        } else {
            text.strip_prefix("waiting for UID to build '")
                .and_then(|r| r.strip_suffix('\''))
                .map(|drv| format!("waiting for UID to build '{ANSI_WARNING}{drv}{ANSI_NORMAL}'"))
        };
        match (goal, waiting_text) {
            (Some(g), Some(text)) if level == Level::Warn => {
                if self.goal(g).waiting.is_none() {
                    let id = self.new_id();
                    w.start(
                        id,
                        level_number(level),
                        activity::BUILD_WAITING,
                        &text,
                        0,
                        &[],
                    )?;
                    self.goal(g).waiting = Some(id);
                }
                Ok(())
            }
            _ if level <= Level::Warn => w.msg_ei(level_number(level), text),
            _ => w.msg(level_number(level), text),
        }
    }

    fn stop_waiting(&mut self, g: GoalId, w: &mut RecordWriter) -> io::Result<()> {
        match self.goal(g).waiting.take() {
            Some(id) => w.stop(id),
            None => Ok(()),
        }
    }

    fn progress(&mut self, p: &Progress, ids: [u64; 3], w: &mut RecordWriter) -> io::Result<()> {
        let [realise, builds, copy_paths] = ids;
        if p.builds != self.builds {
            self.builds = p.builds;
            w.result(builds, result::PROGRESS, &counter_fields(&p.builds))?;
        }
        if p.substitutions != self.substitutions {
            self.substitutions = p.substitutions;
            w.result(
                copy_paths,
                result::PROGRESS,
                &counter_fields(&p.substitutions),
            )?;
        }
        if p.download.expected != self.download_expected {
            self.download_expected = p.download.expected;
            let fields = [
                Field::Int(activity::FILE_TRANSFER),
                Field::Int(p.download.expected),
            ];
            w.result(realise, result::SET_EXPECTED, &fields)?;
        }
        if p.nar.expected != self.nar_expected {
            self.nar_expected = p.nar.expected;
            let fields = [Field::Int(activity::COPY_PATH), Field::Int(p.nar.expected)];
            w.result(realise, result::SET_EXPECTED, &fields)?;
        }
        Ok(())
    }

    /// Nix's order at the end of a build: the counters move, the error is logged, then the
    /// activity stops. Failed top-level goals are reported when the run ends.
    fn goal_done(
        &mut self,
        g: GoalId,
        status: BuildStatus,
        message: Option<&str>,
        ids: [u64; 3],
        w: &mut RecordWriter,
    ) -> io::Result<()> {
        self.stop_waiting(g, w)?;
        let (act, copy, transfer, top, substitution) = {
            let goal = self.goal(g);
            (
                goal.act.take(),
                goal.copy.take(),
                goal.transfer.take(),
                goal.top,
                goal.substitution,
            )
        };
        if act.is_some() {
            let (counter, finished, id) = if substitution {
                (
                    &mut self.substitutions,
                    &mut self.substitutions_finished,
                    ids[2],
                )
            } else {
                (&mut self.builds, &mut self.builds_finished, ids[1])
            };
            let counts = status != BuildStatus::Cancelled;
            let counted_already = counts && counter.done + counter.failed > *finished;
            if counts {
                *finished += 1;
            }
            if !counted_already {
                let before = *counter;
                counter.running = counter.running.saturating_sub(1);
                if status.success() {
                    counter.done += 1;
                } else if counts {
                    counter.failed += 1;
                }
                if *counter != before {
                    let fields = counter_fields(counter);
                    w.result(id, result::PROGRESS, &fields)?;
                }
            }
        }
        // Nix only debug-logs why a substitution goal ended without its path, unless the
        // error ends the run.
        let quiet = substitution && status != BuildStatus::MiscFailure;
        if !status.success() {
            let message = message.filter(|_| !quiet);
            if top {
                self.failed_tops.push((g, message.map(str::to_owned)));
            } else if let Some(msg) = message {
                w.msg_ei(level_number(Level::Error), msg)?;
            }
        }
        if let Some(id) = transfer {
            w.stop(id)?;
        }
        if let Some(id) = copy {
            w.stop(id)?;
        }
        if let Some(id) = act {
            w.stop(id)?;
        }
        Ok(())
    }

    /// Stops whatever still runs and the run's activities, then reports failed top-level
    /// goals as Nix's `buildPaths` does.
    fn run_done(&mut self, ids: [u64; 3], w: &mut RecordWriter) -> io::Result<()> {
        let open: Vec<u64> = self
            .goals
            .iter_mut()
            .flatten()
            .flat_map(|g| {
                [
                    g.waiting.take(),
                    g.transfer.take(),
                    g.copy.take(),
                    g.act.take(),
                ]
            })
            .flatten()
            .collect();
        for id in open {
            w.stop(id)?;
        }
        w.stop(ids[2])?;
        w.stop(ids[1])?;
        w.stop(ids[0])?;
        self.run = None;
        let failed = std::mem::take(&mut self.failed_tops);
        for msg in failed.iter().filter_map(|(_, m)| m.as_deref()) {
            w.msg_ei(level_number(Level::Error), msg)?;
        }
        if failed.len() > 1 || failed.first().is_some_and(|(_, m)| m.is_none()) {
            const SHOWN: usize = 10;
            let mut paths: Vec<String> = failed
                .iter()
                .take(SHOWN)
                .map(|(g, _)| {
                    let path = self.goals[g.index()].as_ref().map_or("?", |x| &x.path);
                    format!("'{path}'")
                })
                .collect();
            if failed.len() > SHOWN {
                paths.push(format!("and {} more", failed.len() - SHOWN));
            }
            let text = format!("build of {} failed", paths.join(", "));
            w.msg_ei(level_number(Level::Error), &text)?;
        }
        Ok(())
    }
}

fn counter_fields(c: &Counter) -> [Field<'static>; 4] {
    [
        Field::Int(c.done),
        Field::Int(c.expected),
        Field::Int(c.running),
        Field::Int(c.failed),
    ]
}
