//! Line output for pipes and CI, like `nix-build`: `building '/nix/store/…-foo.drv'...`,
//! `foo> log line`, `error: …` (continuation lines indented as Nix does), and at the end Nix's
//! `error: build of '…' failed` plus a one-line summary. A pure fold over [`Event`]s.

use std::io::{self, Write};

use crate::engine::api::{BuildMode, BuildStatus, Event, EventKind, GoalId, GoalKind, Level};

/// What the printer remembers of a goal.
#[derive(Debug)]
struct Goal {
    /// Full path of the `.drv` or of the substituted path.
    path: Box<str>,
    /// What log lines are prefixed with.
    name: Box<str>,
    top: bool,
    substitution: bool,
}

/// Folds events into `nix-build`-like lines.
#[derive(Debug, Default)]
pub struct PlainPrinter {
    goals: Vec<Option<Goal>>,
    /// Failed top-level goals, with their messages, in order.
    failed_tops: Vec<(GoalId, Option<String>)>,
    counts: Counts,
    /// Lines are prefixed with `name> ` (like `nix build -L`).
    pub prefix_logs: bool,
    /// End with drover's one-line summary of the run.
    pub summary: bool,
    /// Leave the log tail out of builder failures (the log lines were shown as they came),
    /// as nix-build does.
    pub omit_log_tails: bool,
}

#[derive(Debug, Default)]
struct Counts {
    built: u64,
    substituted: u64,
    valid: u64,
    failed: u64,
    dependency_failed: u64,
    cancelled: u64,
}

/// Nix's error layout: `error: ` then the message, continuation lines indented to match.
/// `error: MSG`, continuation lines indented under the message, each line without trailing
/// white space (Nix's `showErrorInfo`).
fn write_error(out: &mut dyn Write, msg: &str) -> io::Result<()> {
    let lines: Vec<&str> = msg.trim_end().split('\n').map(str::trim_end).collect();
    writeln!(out, "error: {}", lines.join("\n       "))
}

/// A builder failure message without the tail of the build log (`;\nlast N log lines: …
/// For full logs, run 'nix log …'.`), as nix-build words it when it printed the log lines
/// already; a note after the tail stays.
pub fn without_log_tail(msg: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = msg.find(";\nlast ") else {
        return msg.into();
    };
    if !msg[..start].starts_with("builder for '") {
        return msg.into();
    }
    let rest = &msg[start..];
    let Some(end) = rest.find("\nFor full logs, run 'nix log ") else {
        return msg.into();
    };
    let after = &rest[end + 1..];
    let note = after.find('\n').map_or("", |i| &after[i..]);
    format!("{}{note}", &msg[..start]).into()
}

impl PlainPrinter {
    pub fn new() -> PlainPrinter {
        PlainPrinter {
            prefix_logs: true,
            summary: true,
            ..PlainPrinter::default()
        }
    }

    fn goal(&self, g: GoalId) -> Option<&Goal> {
        self.goals.get(g.index()).and_then(Option::as_ref)
    }

    fn path(&self, g: GoalId) -> &str {
        self.goal(g).map_or("?", |x| &x.path)
    }

    pub fn event(&mut self, e: &Event, out: &mut dyn Write) -> io::Result<()> {
        match &e.kind {
            EventKind::GoalAdded {
                goal,
                kind,
                top,
                name,
            } => {
                let (path, substitution) = match kind {
                    GoalKind::Derivation { drv, .. } => (drv.as_str(), false),
                    GoalKind::Substitution { path, .. } => (path.as_str(), true),
                };
                if self.goals.len() <= goal.index() {
                    self.goals.resize_with(goal.index() + 1, || None);
                }
                self.goals[goal.index()] = Some(Goal {
                    path: path.into(),
                    name: name.as_str().into(),
                    top: *top,
                    substitution,
                });
            }
            EventKind::BuildStarted {
                goal,
                round,
                nr_rounds,
                mode,
                ..
            } => {
                let drv = self.path(*goal);
                match mode {
                    BuildMode::Repair => writeln!(out, "repairing outputs of '{drv}'...")?,
                    BuildMode::Check => writeln!(out, "checking outputs of '{drv}'...")?,
                    BuildMode::Normal if *nr_rounds > 1 => {
                        writeln!(out, "building '{drv}' (round {round}/{nr_rounds})...")?
                    }
                    BuildMode::Normal => writeln!(out, "building '{drv}'...")?,
                }
            }
            EventKind::SubstitutionStarted {
                goal, substituter, ..
            } => {
                writeln!(
                    out,
                    "copying path '{}' from '{substituter}'...",
                    self.path(*goal)
                )?;
            }
            EventKind::LogLine { goal, line } => {
                if self.prefix_logs {
                    let name = self.goal(*goal).map_or("?", |x| &x.name);
                    writeln!(out, "{name}> {line}")?;
                } else {
                    writeln!(out, "{line}")?;
                }
            }
            EventKind::Message { level, text, .. } => match level {
                Level::Error => write_error(out, text)?,
                Level::Warn => writeln!(out, "warning: {text}")?,
                Level::Notice | Level::Info => writeln!(out, "{text}")?,
                _ => {}
            },
            EventKind::GoalDone {
                goal,
                status,
                message,
                ..
            } => self.goal_done(*goal, *status, message.as_deref(), out)?,
            EventKind::GoalReopened { goal } => {
                self.failed_tops.retain(|(g, _)| g != goal);
            }
            EventKind::RunDone { exit_status } => self.run_done(*exit_status, e, out)?,
            EventKind::EdgeAdded { .. }
            | EventKind::StateChanged { .. }
            | EventKind::PhaseChanged { .. }
            | EventKind::SubstitutionProgress { .. }
            | EventKind::Progress { .. } => {}
        }
        Ok(())
    }

    /// A goal's failure message as printed.
    fn shown<'m>(&self, msg: &'m str) -> std::borrow::Cow<'m, str> {
        if self.omit_log_tails {
            without_log_tail(msg)
        } else {
            msg.into()
        }
    }

    fn goal_done(
        &mut self,
        g: GoalId,
        status: BuildStatus,
        message: Option<&str>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let (top, substitution) = self
            .goal(g)
            .map_or((false, false), |x| (x.top, x.substitution));
        // Paths copied count once (at their substitution goal), derivations once.
        let c = &mut self.counts;
        match status {
            BuildStatus::Built => c.built += 1,
            BuildStatus::Substituted if substitution => c.substituted += 1,
            BuildStatus::AlreadyValid if !substitution => c.valid += 1,
            BuildStatus::Substituted | BuildStatus::AlreadyValid => {}
            BuildStatus::DependencyFailed => c.dependency_failed += 1,
            BuildStatus::Cancelled => c.cancelled += 1,
            BuildStatus::NoSubstituters | BuildStatus::IncompleteClosure => {}
            _ => c.failed += 1,
        }
        if status.success() {
            return Ok(());
        }
        // Nix only debug-logs why a substitution goal ended without its path (the errors of
        // its substituters were printed as they happened), unless the error ends the run.
        let quiet = substitution && status != BuildStatus::MiscFailure;
        let message = message.filter(|_| !quiet);
        if top {
            self.failed_tops.push((g, message.map(str::to_owned)));
            return Ok(());
        }
        match message {
            Some(msg) => write_error(out, &self.shown(msg)),
            None => Ok(()),
        }
    }

    fn run_done(&mut self, exit_status: u8, e: &Event, out: &mut dyn Write) -> io::Result<()> {
        let failed = std::mem::take(&mut self.failed_tops);
        match failed.as_slice() {
            [] => {}
            [(_, Some(msg))] => write_error(out, &self.shown(msg))?,
            _ => {
                for (_, msg) in &failed {
                    if let Some(msg) = msg {
                        write_error(out, &self.shown(msg))?;
                    }
                }
                const SHOWN: usize = 10;
                let mut paths: Vec<String> = failed
                    .iter()
                    .take(SHOWN)
                    .map(|(g, _)| format!("'{}'", self.path(*g)))
                    .collect();
                if failed.len() > SHOWN {
                    paths.push(format!("and {} more", failed.len() - SHOWN));
                }
                writeln!(out, "error: build of {} failed", paths.join(", "))?;
            }
        }
        if !self.summary {
            return Ok(());
        }
        let c = &self.counts;
        writeln!(
            out,
            "drover: {} built, {} substituted, {} already valid, {} failed, {} dependencies \
             failed, {} cancelled in {}; exit status {exit_status}",
            c.built, c.substituted, c.valid, c.failed, c.dependency_failed, c.cancelled, e.time
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::{GoalTimes, Time};

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            time: Time(seq * 1000),
            kind,
        }
    }

    fn added(g: u32, name: &str, top: bool) -> EventKind {
        EventKind::GoalAdded {
            goal: GoalId(g),
            kind: GoalKind::Derivation {
                drv: format!("/nix/store/00000000000000000000000000000000-{name}.drv"),
                outputs: vec![],
                mode: BuildMode::Normal,
            },
            name: name.into(),
            top,
        }
    }

    fn done(g: u32, status: BuildStatus, message: Option<&str>) -> EventKind {
        EventKind::GoalDone {
            goal: GoalId(g),
            status,
            message: message.map(str::to_owned),
            times: GoalTimes::default(),
        }
    }

    fn render(events: &[EventKind]) -> String {
        let mut p = PlainPrinter::new();
        let mut out = Vec::new();
        for (i, k) in events.iter().enumerate() {
            p.event(&ev(i as u64, k.clone()), &mut out).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn builds_logs_and_a_single_failure_look_like_nix_build() {
        let text = render(&[
            added(0, "hello-2.12", true),
            added(1, "dep-1.0", false),
            EventKind::BuildStarted {
                goal: GoalId(1),
                slot: 0,
                pid: Some(1),
                round: 1,
                nr_rounds: 1,
                mode: BuildMode::Normal,
            },
            EventKind::LogLine {
                goal: GoalId(1),
                line: "compiling".into(),
            },
            done(
                1,
                BuildStatus::PermanentFailure,
                Some("builder for 'x' failed;\nlast 1 log lines:\n> compiling"),
            ),
            done(
                0,
                BuildStatus::DependencyFailed,
                Some("1 dependencies of derivation 'y' failed to build"),
            ),
            EventKind::RunDone { exit_status: 100 },
        ]);
        assert_eq!(
            text,
            "building '/nix/store/00000000000000000000000000000000-dep-1.0.drv'...\n\
             dep-1.0> compiling\n\
             error: builder for 'x' failed;\n       last 1 log lines:\n       > compiling\n\
             error: 1 dependencies of derivation 'y' failed to build\n\
             drover: 0 built, 0 substituted, 0 already valid, 1 failed, 1 dependencies failed, \
             0 cancelled in 6.000s; exit status 100\n"
        );
    }

    #[test]
    fn log_tails_can_be_left_out_as_nix_build_does() {
        let tail = "builder for '/s/x.drv' failed with exit code 2;\nlast 2 log lines:\n> a\n> b\n\
                    For full logs, run 'nix log /s/x.drv'.";
        assert_eq!(
            without_log_tail(tail),
            "builder for '/s/x.drv' failed with exit code 2"
        );
        let noted =
            format!("{tail}\nnote: build failure may have been caused by lack of free disk space");
        assert_eq!(
            without_log_tail(&noted),
            "builder for '/s/x.drv' failed with exit code 2\nnote: build failure may have been \
             caused by lack of free disk space"
        );
        for other in [
            "hash mismatch;\nlast x",
            "builder for 'y' failed with exit code 1",
        ] {
            assert_eq!(without_log_tail(other), other);
        }
    }

    #[test]
    fn several_failed_top_goals_end_with_build_of_failed() {
        let text = render(&[
            added(0, "a", true),
            added(1, "b", true),
            done(0, BuildStatus::PermanentFailure, Some("a broke")),
            done(1, BuildStatus::Cancelled, None),
            EventKind::RunDone { exit_status: 100 },
        ]);
        assert!(text.contains(
            "error: a broke\nerror: build of '/nix/store/00000000000000000000000000000000-a.drv', \
             '/nix/store/00000000000000000000000000000000-b.drv' failed\n"
        ));
    }
}
