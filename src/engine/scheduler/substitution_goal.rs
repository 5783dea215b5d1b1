//! Nix's `SubstitutionGoal`: make one store path valid by copying it from a substituter.
//!
//! States: `init` (already valid?), `tryNext` (ask the next substituter), `referencesValid`
//! (the path's references must be valid first, to keep the closure invariant), `tryToRun`
//! (a slot: substitutions share the build slots but always get at least one), `finished`.
//! Ending without a substitute is `NoSubstituters`, which a derivation goal takes as "build
//! it"; references that could not be substituted give `IncompleteClosure`.

use crate::engine::api::{BuildStatus, EventKind, GoalId, Level, Time};
use crate::engine::format::StorePath;

use super::Scheduler;
use super::goal::GoalData;
use super::protocol::{Effect, SubstituteAnswer, SubstitutionOutcome, Ticket};
use super::store_view::StoreView;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubstState {
    Init,
    TryNext,
    /// Asked substituter `sub`.
    Querying,
    ReferencesValid,
    TryToRun,
    WaitingForSlot,
    Running,
    Done,
}

#[derive(Debug)]
pub(super) struct SubstGoal {
    pub path: StorePath,
    pub repair: bool,
    pub state: SubstState,
    /// Index of the next substituter to ask.
    pub next_sub: usize,
    /// The substituter asked last.
    pub sub: usize,
    pub substituter_failed: bool,
    pub references: Vec<StorePath>,
    pub slot: Option<u32>,
    pub started: Option<Time>,
    /// Its share of the expected NAR / download bytes in the progress counters.
    pub expected_nar: u64,
    pub expected_download: u64,
    /// Bytes of the running substitution so far (counted as done in the progress counters).
    pub nar_done: u64,
    pub download_done: u64,
    /// The file being downloaded over HTTP, once known.
    pub url: Option<String>,
}

impl SubstGoal {
    pub(super) fn new(path: StorePath, repair: bool) -> SubstGoal {
        SubstGoal {
            path,
            repair,
            state: SubstState::Init,
            next_sub: 0,
            sub: 0,
            substituter_failed: false,
            references: Vec::new(),
            slot: None,
            started: None,
            expected_nar: 0,
            expected_download: 0,
            nar_done: 0,
            download_done: 0,
            url: None,
        }
    }

    pub(super) fn reset(&mut self) {
        *self = SubstGoal::new(self.path.clone(), self.repair);
    }
}

impl Scheduler {
    pub(super) fn subst(&self, g: GoalId) -> &SubstGoal {
        match &self.goal(g).data {
            GoalData::Subst(s) => s,
            GoalData::Drv(_) => unreachable!("goal {g} is not a substitution goal"),
        }
    }

    pub(super) fn subst_mut(&mut self, g: GoalId) -> &mut SubstGoal {
        match &mut self.goal_mut(g).data {
            GoalData::Subst(s) => s,
            GoalData::Drv(_) => unreachable!("goal {g} is not a substitution goal"),
        }
    }

    fn print_subst(&self, g: GoalId) -> String {
        self.settings.store_dir.display(&self.subst(g).path)
    }

    pub(super) fn subst_work(&mut self, store: &dyn StoreView, g: GoalId) {
        match self.subst(g).state {
            SubstState::Init => self.subst_init(store, g),
            SubstState::TryNext => self.try_next(g),
            SubstState::ReferencesValid => self.references_valid(g),
            SubstState::TryToRun => self.try_to_run(g),
            SubstState::Querying
            | SubstState::WaitingForSlot
            | SubstState::Running
            | SubstState::Done => {}
        }
    }

    fn subst_init(&mut self, store: &dyn StoreView, g: GoalId) {
        let s = self.subst(g);
        if !s.repair && store.is_valid(&s.path) {
            return self.finish(g, BuildStatus::AlreadyValid, None);
        }
        self.try_next(g);
    }

    fn try_next(&mut self, g: GoalId) {
        let subs = if self.settings.use_substitutes {
            self.settings.substituters.len()
        } else {
            0
        };
        let s = self.subst_mut(g);
        if s.next_sub >= subs {
            return if s.substituter_failed {
                self.progress.substitutions.failed += 1;
                let msg = format!(
                    "path '{}' is required, but every substituter that has it failed to \
                     provide it",
                    self.print_subst(g)
                );
                self.finish(g, BuildStatus::TransientFailure, Some(msg))
            } else {
                let msg = format!(
                    "path '{}' is required, but there is no substituter that can build it",
                    self.print_subst(g)
                );
                self.finish(g, BuildStatus::NoSubstituters, Some(msg))
            };
        }
        s.sub = s.next_sub;
        s.next_sub += 1;
        s.state = SubstState::Querying;
        let (path, substituter) = (s.path.clone(), s.sub);
        let ticket = self.new_ticket(g);
        self.effects.push(Effect::QuerySubstitute {
            ticket,
            path,
            substituter,
        });
        self.mark_dirty(g);
    }

    pub(super) fn subst_info(&mut self, g: GoalId, answer: SubstituteAnswer) {
        self.ticket_done(g);
        match answer {
            SubstituteAnswer::NotFound => self.try_next(g),
            SubstituteAnswer::Rejected { message } => {
                self.message(Level::Warn, message, Some(g));
                self.try_next(g);
            }
            SubstituteAnswer::Error { message } => {
                if self.settings.try_fallback {
                    self.message(Level::Error, message, Some(g));
                    self.try_next(g);
                } else {
                    self.finish(g, BuildStatus::MiscFailure, Some(message));
                }
            }
            SubstituteAnswer::Found {
                references,
                nar_size,
                download_size,
            } => {
                let download = download_size.unwrap_or(0);
                self.progress.nar.expected += nar_size;
                self.progress.download.expected += download;
                let s = self.subst_mut(g);
                s.expected_nar = nar_size;
                s.expected_download = download;
                let own = s.path.clone();
                s.references = references;
                let refs: Vec<StorePath> = s
                    .references
                    .iter()
                    .filter(|r| **r != own)
                    .cloned()
                    .collect();
                for r in refs {
                    let w = self.request_path(&r, false, false);
                    self.add_waitee(g, w);
                    if self.stopping(g) {
                        break;
                    }
                }
                self.subst_mut(g).state = SubstState::ReferencesValid;
                if self.done_adding_waitees(g) {
                    self.references_valid(g);
                }
            }
        }
    }

    fn references_valid(&mut self, g: GoalId) {
        let goal = self.goal(g);
        if goal.nr_failed > 0 {
            let status = if goal.nr_no_substituters > 0 || goal.nr_incomplete_closure > 0 {
                BuildStatus::IncompleteClosure
            } else {
                BuildStatus::DependencyFailed
            };
            let msg = format!(
                "some references of path '{}' could not be realised",
                self.print_subst(g)
            );
            return self.finish(g, status, Some(msg));
        }
        self.subst_mut(g).state = SubstState::TryToRun;
        self.wake(g);
    }

    fn try_to_run(&mut self, g: GoalId) {
        let key = self.queue_key(g);
        self.queues.push_subst(key);
        self.subst_mut(g).state = SubstState::WaitingForSlot;
        self.mark_dirty(g);
    }

    pub(super) fn subst_slot_granted(&mut self, g: GoalId, slot: u32) {
        let now = self.now;
        let s = self.subst_mut(g);
        s.slot = Some(slot);
        s.state = SubstState::Running;
        s.started = Some(now);
        let (path, substituter, repair) = (s.path.clone(), s.sub, s.repair);
        let ticket = self.new_ticket(g);
        self.effects.push(Effect::StartSubstitution {
            ticket,
            path,
            substituter,
            repair,
        });
        self.progress.substitutions.running += 1;
        self.emit(EventKind::SubstitutionStarted {
            goal: g,
            slot,
            substituter: self.settings.substituters[substituter].clone(),
        });
        self.mark_dirty(g);
    }

    /// Bytes of the running substitution: what is new counts as done (never more than the
    /// narinfo announced, never going back).
    pub(super) fn subst_progress(
        &mut self,
        g: GoalId,
        download_done: u64,
        nar_done: u64,
        url: Option<String>,
    ) {
        let s = self.subst_mut(g);
        if url.is_some() {
            s.url = url;
        }
        let nar = nar_done.clamp(s.nar_done, s.expected_nar.max(s.nar_done));
        let download = if s.expected_download > 0 {
            download_done.clamp(s.download_done, s.expected_download.max(s.download_done))
        } else {
            download_done.max(s.download_done)
        };
        self.count_bytes(g, download, nar);
    }

    /// Sets the goal's done bytes, moving the difference between expected and done in the
    /// run's counters (internally `expected` counts what is not done yet).
    fn count_bytes(&mut self, g: GoalId, download: u64, nar: u64) {
        let s = self.subst_mut(g);
        if (download, nar) == (s.download_done, s.nar_done) {
            return;
        }
        let nar_remaining = s.expected_nar.saturating_sub(s.nar_done);
        let download_remaining = s.expected_download.saturating_sub(s.download_done);
        let (nar_delta, download_delta) = (nar - s.nar_done, download - s.download_done);
        s.nar_done = nar;
        s.download_done = download;
        let event = EventKind::SubstitutionProgress {
            goal: g,
            download_done: download,
            download_expected: (s.expected_download > 0).then_some(s.expected_download),
            nar_done: nar,
            nar_expected: s.expected_nar,
            url: s.url.clone(),
        };
        self.progress.nar.done += nar_delta;
        self.progress.nar.expected -= nar_delta.min(nar_remaining);
        self.progress.download.done += download_delta;
        self.progress.download.expected -= download_delta.min(download_remaining);
        self.emit(event);
    }

    /// Takes the goal's bytes out of the run's counters (it stopped or failed).
    fn forget_bytes(&mut self, g: GoalId) {
        let s = self.subst_mut(g);
        let nar_remaining = s.expected_nar.saturating_sub(s.nar_done);
        let download_remaining = s.expected_download.saturating_sub(s.download_done);
        let (nar_done, download_done) = (s.nar_done, s.download_done);
        s.expected_nar = 0;
        s.expected_download = 0;
        s.nar_done = 0;
        s.download_done = 0;
        s.url = None;
        self.progress.nar.expected -= nar_remaining;
        self.progress.download.expected -= download_remaining;
        self.progress.nar.done -= nar_done;
        self.progress.download.done -= download_done;
    }

    pub(super) fn subst_finished(&mut self, g: GoalId, outcome: SubstitutionOutcome) {
        self.ticket_done(g);
        self.progress.substitutions.running -= 1;
        self.release_slot(g);
        let failure = match outcome {
            SubstitutionOutcome::Success => {
                let s = self.subst(g);
                let download = s.expected_download.max(s.download_done);
                let nar = s.expected_nar.max(s.nar_done);
                self.count_bytes(g, download, nar);
                let path = self.subst(g).path.clone();
                self.mark_contents_good(vec![path]);
                return self.finish(g, BuildStatus::Substituted, None);
            }
            SubstitutionOutcome::Gone { message } => (message, false),
            SubstitutionOutcome::Failed { message } => (message, true),
        };
        self.message(Level::Error, failure.0, Some(g));
        self.forget_bytes(g);
        let s = self.subst_mut(g);
        s.substituter_failed |= failure.1;
        s.state = SubstState::TryNext;
        self.wake(g);
    }

    /// Stops whatever a substitution goal is doing.
    pub(super) fn subst_stop(&mut self, g: GoalId) {
        match self.subst(g).state {
            SubstState::WaitingForSlot => {
                let key = self.queue_key(g);
                self.queues.remove(&key);
            }
            SubstState::Running if self.goal(g).outstanding => {
                let ticket = Ticket {
                    goal: g,
                    seq: self.goal(g).ticket_seq,
                };
                self.effects.push(Effect::CancelSubstitution { ticket });
                self.progress.substitutions.running -= 1;
            }
            _ => {}
        }
        self.ticket_done(g);
        self.release_slot(g);
        self.subst_mut(g).state = SubstState::Done;
    }
}
