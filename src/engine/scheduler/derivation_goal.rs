//! Nix's `DerivationGoal`: realise the outputs of a derivation, by substitution if possible,
//! else by building its inputs and then itself.
//!
//! States, in Nix's order: `getDerivation` (substitute a missing `.drv`), `loadDerivation`,
//! `haveDerivation` (already valid, cached failure, try substitutes),
//! `outputsSubstitutionTried` (fallback, retry after an incomplete closure, restart for more
//! outputs), `gaveUpOnSubstitution` (input derivations and sources), `inputsRealised`,
//! `tryToBuild` (a build slot, then the output locks, then "someone beat us to it"), the
//! build, and `buildDone` (classify the outcome, repeat rounds). Repair mode adds
//! `repairClosure`/`closureRepaired`.
//!
//! Two attributes of the derivation matter here as in Nix 2.8. `allowSubstitutes = false`
//! skips only the substitution of the goal's own outputs in `haveDerivation`: its inputs are
//! still substituted, and its outputs still are when they come as references of another
//! substituted path. `preferLocalBuild` does not touch substitution; in Nix 2.8 it keeps a
//! build off remote builders (drover has none) and, here as in Nix 003, lets the build run
//! with `max-jobs = 0` (see the scheduler's differences). Nix 2.8 has no
//! `always-allow-substitutes` (later Nix does); drover, like 2.8, warns that it is unknown.
//!
//! The derivation summary ([`DrvInfo`]) is dropped once the input goals exist; the goal keeps
//! only its output paths and two flags. So memory follows the goals that are loading their
//! derivation rather than every goal of the run (Nix keeps each derivation in memory).
//!
//! drover takes the build slot *before* the output locks (Nix locks first and gives the locks
//! back when no slot is free), so slots are granted in one ordered queue and a goal waiting
//! for a lock held by another process does not hold a slot while it polls.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::engine::api::{BuildMode, BuildStatus, EventKind, GoalId, Level, LockHolder, Time};
use crate::engine::format::StorePath;

use super::Scheduler;
use super::goal::{GoalData, flags};
use super::protocol::{BuildOutcome, BuildRequest, Effect, Ticket};
use super::store_view::{DrvInfo, StoreView};

/// Where a derivation goal is. The first states run when the goal is woken; the later ones
/// wait for an answer from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrvState {
    GetDerivation,
    LoadDerivation,
    OutputsSubstitutionTried,
    InputsRealised,
    ClosureRepaired,
    TryToBuild,
    /// Queued for a build slot.
    WaitingForSlot,
    /// Has a slot; the output locks were asked for.
    Locking,
    /// The locks were busy; polls again after the poll interval.
    WaitingForLock,
    /// No build user was free; polls again after the poll interval.
    WaitingForBuildUser,
    /// The builder was asked for and may be running.
    Building,
    Done,
}

#[derive(Debug)]
pub(super) struct DrvGoal {
    pub drv_path: StorePath,
    /// Wanted outputs; empty means all.
    pub wanted: Vec<String>,
    pub mode: BuildMode,
    pub state: DrvState,
    /// Loaded while needed (see the module doc).
    pub drv: Option<Arc<DrvInfo>>,
    /// The known output paths (what gets locked, checked and registered).
    pub outputs: Box<[StorePath]>,
    /// Some output path is not known beforehand (floating content-addressed).
    pub unknown_outputs: bool,
    /// Wanted outputs the derivation does not have; a goal that asked for one of them fails
    /// with Nix's "requires non-existent output" (checked without the derivation loaded).
    pub bad_outputs: Option<Box<[String]>>,
    /// `tryToBuild` may run with `max-jobs = 0` when nothing else runs.
    pub local_only: bool,
    /// A fixed-output derivation (one round; failures are transient).
    pub fixed_output: bool,
    /// An input reported outputs it does not have: check the wanted ones after the inputs.
    pub check_input_outputs: bool,
    pub need_restart: bool,
    pub retry_substitution: bool,
    pub retried_substitution: bool,
    /// A `Retry` cleared its cached failure.
    pub ignore_cached_failure: bool,
    pub cur_round: u32,
    pub nr_rounds: u32,
    pub times_built: u32,
    pub non_deterministic: bool,
    /// When its first build round started.
    pub started: Option<Time>,
    /// Slot, locks and builder details while it is trying to build.
    pub run: Option<Box<BuildRun>>,
}

#[derive(Debug, Default)]
pub(super) struct BuildRun {
    pub slot: Option<u32>,
    /// It holds its output locks.
    pub locked: bool,
    pub holder: Option<LockHolder>,
    pub retry_at: Option<Time>,
    /// Nix's `actLock`: the "waiting for ..." message was shown.
    pub warned: bool,
    pub pid: Option<u32>,
    pub phase: Option<String>,
    pub phase_seq: u32,
    pub started: Time,
    pub last_output: Time,
    pub log_size: u64,
    pub log_tail: VecDeque<String>,
}

impl DrvGoal {
    pub(super) fn new(drv_path: StorePath, wanted: Vec<String>, mode: BuildMode) -> DrvGoal {
        DrvGoal {
            drv_path,
            wanted,
            mode,
            state: DrvState::GetDerivation,
            drv: None,
            outputs: Box::default(),
            unknown_outputs: false,
            bad_outputs: None,
            local_only: false,
            fixed_output: false,
            check_input_outputs: false,
            need_restart: false,
            retry_substitution: false,
            retried_substitution: false,
            ignore_cached_failure: false,
            cur_round: 1,
            nr_rounds: 1,
            times_built: 0,
            non_deterministic: false,
            started: None,
            run: None,
        }
    }

    pub(super) fn reset(&mut self) {
        self.state = DrvState::GetDerivation;
        self.drv = None;
        self.bad_outputs = None;
        self.check_input_outputs = false;
        self.need_restart = false;
        self.retry_substitution = false;
        self.retried_substitution = false;
        self.cur_round = 1;
        self.nr_rounds = 1;
        self.times_built = 0;
        self.non_deterministic = false;
        self.started = None;
        self.run = None;
    }

    fn wants(&self, output: &str) -> bool {
        self.wanted.is_empty() || self.wanted.iter().any(|o| o == output)
    }

    /// Whether a finished goal's result covers a request for `outputs`.
    pub(super) fn covers(&self, outputs: &[String]) -> bool {
        self.wanted.is_empty() || (!outputs.is_empty() && outputs.iter().all(|o| self.wants(o)))
    }

    /// Nix's `addWantedOutputs`.
    pub(super) fn add_wanted_outputs(&mut self, outputs: &[String]) {
        if self.wanted.is_empty() {
            return;
        }
        if outputs.is_empty() {
            self.wanted = Vec::new();
            self.need_restart = true;
            return;
        }
        for o in outputs {
            if !self.wanted.contains(o) {
                self.wanted.push(o.clone());
                self.need_restart = true;
            }
        }
    }

    /// Known output paths (what gets locked).
    pub(super) fn output_paths(&self) -> Vec<StorePath> {
        self.outputs.to_vec()
    }
}

impl Scheduler {
    pub(super) fn drv(&self, g: GoalId) -> &DrvGoal {
        match &self.goal(g).data {
            GoalData::Drv(d) => d,
            GoalData::Subst(_) => unreachable!("goal {g} is not a derivation goal"),
        }
    }

    pub(super) fn drv_mut(&mut self, g: GoalId) -> &mut DrvGoal {
        match &mut self.goal_mut(g).data {
            GoalData::Drv(d) => d,
            GoalData::Subst(_) => unreachable!("goal {g} is not a derivation goal"),
        }
    }

    fn run_mut(&mut self, g: GoalId) -> &mut BuildRun {
        self.drv_mut(g).run.get_or_insert_with(Box::default)
    }

    fn drv_info(&self, g: GoalId) -> Arc<DrvInfo> {
        self.drv(g).drv.clone().expect("derivation loaded")
    }

    /// Reads the derivation again after a wait; false (and the goal failed) if it cannot.
    fn reload_derivation(&mut self, store: &dyn StoreView, g: GoalId) -> bool {
        if self.drv(g).drv.is_some() {
            return true;
        }
        match store.load_derivation(&self.drv(g).drv_path) {
            Ok(info) => {
                self.drv_mut(g).drv = Some(info);
                true
            }
            Err(e) => {
                self.finish(g, BuildStatus::MiscFailure, Some(e));
                false
            }
        }
    }

    fn print_drv(&self, g: GoalId) -> String {
        self.settings.store_dir.display(&self.drv(g).drv_path)
    }

    /// Runs the state a woken derivation goal is in.
    pub(super) fn drv_work(&mut self, store: &dyn StoreView, g: GoalId) {
        match self.drv(g).state {
            DrvState::GetDerivation => self.get_derivation(store, g),
            DrvState::LoadDerivation => self.load_derivation(store, g),
            DrvState::OutputsSubstitutionTried => self.outputs_substitution_tried(store, g),
            DrvState::InputsRealised => self.inputs_realised(store, g),
            DrvState::ClosureRepaired => self.closure_repaired(g),
            DrvState::TryToBuild | DrvState::WaitingForLock | DrvState::WaitingForBuildUser => {
                self.try_to_build(g)
            }
            DrvState::WaitingForSlot | DrvState::Locking | DrvState::Building | DrvState::Done => {}
        }
    }

    fn get_derivation(&mut self, store: &dyn StoreView, g: GoalId) {
        let d = self.drv(g);
        if d.mode == BuildMode::Normal && store.is_valid(&d.drv_path) {
            return self.load_derivation(store, g);
        }
        let path = d.drv_path.clone();
        let sub = self.request_path(&path, false, false);
        self.add_waitee(g, sub);
        self.drv_mut(g).state = DrvState::LoadDerivation;
        if self.done_adding_waitees(g) {
            self.load_derivation(store, g);
        }
    }

    fn load_derivation(&mut self, store: &dyn StoreView, g: GoalId) {
        if self.goal(g).nr_failed != 0 {
            let msg = format!("cannot build missing derivation '{}'", self.print_drv(g));
            return self.finish(g, BuildStatus::MiscFailure, Some(msg));
        }
        match store.load_derivation(&self.drv(g).drv_path) {
            Ok(info) => self.drv_mut(g).drv = Some(info),
            Err(e) => return self.finish(g, BuildStatus::MiscFailure, Some(e)),
        }
        self.have_derivation(store, g);
    }

    /// Whether every wanted output is valid (in repair mode: and its contents are good).
    fn all_wanted_valid(&mut self, store: &dyn StoreView, g: GoalId) -> bool {
        let d = self.drv(g);
        let repair = d.mode == BuildMode::Repair;
        if d.wanted.is_empty() && !repair {
            // An unknown (floating) output is never valid beforehand.
            return !d.unknown_outputs && d.outputs.iter().all(|p| store.is_valid(p));
        }
        let wanted: Vec<StorePath> = if d.wanted.is_empty() {
            if d.unknown_outputs {
                return false;
            }
            d.outputs.to_vec()
        } else {
            let info = self.drv_info(g);
            let mut wanted = Vec::new();
            for (name, path) in &info.outputs {
                if d.wants(name) {
                    match path {
                        Some(p) => wanted.push(p.clone()),
                        None => return false,
                    }
                }
            }
            wanted
        };
        wanted
            .iter()
            .all(|p| store.is_valid(p) && (!repair || self.contents_good(store, p)))
    }

    fn cached_failure(&self, store: &dyn StoreView, g: GoalId) -> Option<String> {
        let d = self.drv(g);
        if !self.settings.cache_failures || d.ignore_cached_failure {
            return None;
        }
        let info = d.drv.as_ref()?;
        info.outputs
            .iter()
            .filter_map(|(_, p)| p.as_ref())
            .find(|p| !store.is_valid(p) && store.has_cached_failure(p))
            .map(|p| {
                format!(
                    "builder for '{}' failed previously (cached)",
                    self.settings.store_dir.display(p)
                )
            })
    }

    fn have_derivation(&mut self, store: &dyn StoreView, g: GoalId) {
        let info = self.drv_info(g);
        let d = self.drv_mut(g);
        d.retry_substitution = false;
        d.fixed_output = info.fixed_output;
        d.local_only = d.mode != BuildMode::Normal || info.prefer_local_build;
        // Exactly sized: a collected `Vec` would keep room for four paths per goal.
        d.outputs = info
            .outputs
            .iter()
            .filter_map(|(_, p)| p.clone())
            .collect::<Vec<_>>()
            .into_boxed_slice();
        d.unknown_outputs = info.outputs.iter().any(|(_, p)| p.is_none());
        for o in &d.wanted {
            let known = d.bad_outputs.as_deref().is_some_and(|b| b.contains(o));
            if !info.has_output(o) && !known {
                let mut bad = d.bad_outputs.take().map(Vec::from).unwrap_or_default();
                bad.push(o.clone());
                d.bad_outputs = Some(bad.into());
            }
        }
        let mode = self.drv(g).mode;
        if self.all_wanted_valid(store, g) && mode == BuildMode::Normal {
            return self.finish(g, BuildStatus::AlreadyValid, None);
        }
        if let Some(msg) = self.cached_failure(store, g) {
            return self.finish(g, BuildStatus::CachedFailure, Some(msg));
        }
        let info = self.drv_info(g);
        if self.settings.use_substitutes && info.allow_substitutes {
            let d = self.drv(g);
            let wanted: Vec<Option<StorePath>> = info
                .outputs
                .iter()
                .filter(|(name, _)| d.wants(name))
                .map(|(_, p)| p.clone())
                .collect();
            if wanted.iter().any(Option::is_none) {
                self.message(
                    Level::Warn,
                    "do not know how to query for unknown floating content-addressed \
                     derivation output yet"
                        .into(),
                    Some(g),
                );
                return self.gave_up_on_substitution(store, g);
            }
            for path in wanted.iter().flatten() {
                let sub = self.request_path(path, mode == BuildMode::Repair, false);
                self.add_waitee(g, sub);
                if self.stopping(g) {
                    break;
                }
            }
        }
        self.drv_mut(g).state = DrvState::OutputsSubstitutionTried;
        if self.done_adding_waitees(g) {
            self.outputs_substitution_tried(store, g);
        }
    }

    fn outputs_substitution_tried(&mut self, store: &dyn StoreView, g: GoalId) {
        let goal = self.goal(g);
        let (failed, nosubs, incomplete) = (
            goal.nr_failed,
            goal.nr_no_substituters,
            goal.nr_incomplete_closure,
        );
        if failed > 0 && failed > nosubs + incomplete && !self.settings.try_fallback {
            let msg = format!(
                "some substitutes for the outputs of derivation '{}' failed (usually happens \
                 due to networking issues); try '--fallback' to build derivation from source ",
                self.print_drv(g)
            );
            return self.finish(g, BuildStatus::TransientFailure, Some(msg));
        }
        if incomplete > 0 && incomplete == failed {
            self.drv_mut(g).retry_substitution = true;
        }
        self.goal_mut(g).reset_counters();
        if self.drv(g).need_restart {
            self.drv_mut(g).need_restart = false;
            return self.have_derivation(store, g);
        }
        let all_valid = self.all_wanted_valid(store, g);
        match self.drv(g).mode {
            BuildMode::Normal if all_valid => {
                return self.finish(g, BuildStatus::Substituted, None);
            }
            BuildMode::Repair if all_valid => return self.repair_closure(store, g),
            BuildMode::Check if !all_valid => {
                let msg = format!(
                    "some outputs of '{}' are not valid, so checking is not possible",
                    self.print_drv(g)
                );
                return self.finish(g, BuildStatus::MiscFailure, Some(msg));
            }
            _ => {}
        }
        self.gave_up_on_substitution(store, g);
    }

    fn gave_up_on_substitution(&mut self, store: &dyn StoreView, g: GoalId) {
        self.drv_mut(g).wanted = Vec::new();
        let info = self.drv_info(g);
        let missing_srcs: Vec<&StorePath> = info
            .input_srcs
            .iter()
            .filter(|p| !store.is_valid(p))
            .collect();
        if !self.settings.use_substitutes
            && let Some(src) = missing_srcs.first()
        {
            let msg = format!(
                "dependency '{}' of '{}' does not exist, and substitution is disabled",
                self.settings.store_dir.display(src),
                self.print_drv(g)
            );
            return self.finish(g, BuildStatus::MiscFailure, Some(msg));
        }
        let input_mode = if self.drv(g).mode == BuildMode::Repair {
            BuildMode::Repair
        } else {
            BuildMode::Normal
        };
        for (input, outputs) in &info.input_drvs {
            if self.stopping(g) {
                break;
            }
            let w = self.request_drv(input, outputs, input_mode, false);
            self.add_waitee(g, w);
        }
        for src in missing_srcs {
            if self.stopping(g) {
                break;
            }
            let w = self.request_path(src, false, false);
            self.add_waitee(g, w);
        }
        let d = self.drv_mut(g);
        d.state = DrvState::InputsRealised;
        d.drv = None;
        if self.done_adding_waitees(g) {
            self.inputs_realised(store, g);
        }
    }

    /// Nix's `repairClosure`: every path in the output closure whose contents are bad is
    /// rebuilt (by the derivation that produced it) or re-substituted.
    fn repair_closure(&mut self, store: &dyn StoreView, g: GoalId) {
        let info = self.drv_info(g);
        let d = self.drv(g);
        let own: HashSet<StorePath> = info.outputs.iter().filter_map(|(_, p)| p.clone()).collect();
        let roots: Vec<StorePath> = info
            .outputs
            .iter()
            .filter(|(n, _)| d.wants(n))
            .filter_map(|(_, p)| p.clone())
            .collect();
        let mut closure = closure_of(store, roots);
        closure.retain(|p| !own.contains(p));
        // Which derivation in the drv's own closure produces which path.
        let mut producers = std::collections::HashMap::new();
        for p in closure_of(store, vec![d.drv_path.clone()]) {
            if p.is_derivation()
                && let Ok(dep) = store.load_derivation(&p)
            {
                for out in dep.outputs.iter().filter_map(|(_, o)| o.as_ref()) {
                    producers.insert(out.clone(), p.clone());
                }
            }
        }
        for path in closure {
            if self.contents_good(store, &path) {
                continue;
            }
            let text = format!(
                "found corrupted or missing path '{}' in the output closure of '{}'",
                self.settings.store_dir.display(&path),
                self.print_drv(g)
            );
            self.message(Level::Error, text, Some(g));
            let w = match producers.get(&path) {
                Some(drv) => self.request_drv(drv, &[], BuildMode::Repair, false),
                None => self.request_path(&path, true, false),
            };
            self.add_waitee(g, w);
        }
        self.drv_mut(g).state = DrvState::ClosureRepaired;
        if self.done_adding_waitees(g) {
            self.closure_repaired(g);
        }
    }

    fn closure_repaired(&mut self, g: GoalId) {
        if self.goal(g).nr_failed > 0 {
            let msg = format!(
                "some paths in the output closure of derivation '{}' could not be repaired",
                self.print_drv(g)
            );
            return self.finish(g, BuildStatus::MiscFailure, Some(msg));
        }
        self.finish(g, BuildStatus::AlreadyValid, None);
    }

    fn inputs_realised(&mut self, store: &dyn StoreView, g: GoalId) {
        let nr_failed = self.goal(g).nr_failed;
        if nr_failed != 0 {
            let msg = format!(
                "{nr_failed} dependencies of derivation '{}' failed to build",
                self.print_drv(g)
            );
            return self.finish(g, BuildStatus::DependencyFailed, Some(msg));
        }
        let d = self.drv_mut(g);
        if d.retry_substitution && !d.retried_substitution {
            d.retried_substitution = true;
            if !self.reload_derivation(store, g) {
                return;
            }
            return self.have_derivation(store, g);
        }
        // Every output used from an input derivation must exist (Nix finds out when it
        // gathers the input closure).
        if std::mem::take(&mut self.drv_mut(g).check_input_outputs) {
            if !self.reload_derivation(store, g) {
                return;
            }
            let info = self.drv_info(g);
            for (input, outputs) in &info.input_drvs {
                let bad = self.drv_goals.get(&self.goals, input).and_then(|w| {
                    let bad = self.drv(w).bad_outputs.as_deref()?;
                    outputs.iter().find(|o| bad.contains(o))
                });
                if let Some(missing) = bad {
                    let msg = format!(
                        "derivation '{}' requires non-existent output '{missing}' from input \
                         derivation '{}'",
                        self.print_drv(g),
                        self.settings.store_dir.display(input)
                    );
                    return self.finish(g, BuildStatus::MiscFailure, Some(msg));
                }
            }
        }
        let nr_rounds = if self.drv(g).fixed_output {
            1
        } else {
            self.settings.build_repeat + 1
        };
        let d = self.drv_mut(g);
        d.nr_rounds = nr_rounds;
        d.cur_round = 1;
        d.state = DrvState::TryToBuild;
        self.wake(g);
    }

    /// Nix's `tryToBuild`, first step: queue for a build slot.
    fn try_to_build(&mut self, g: GoalId) {
        let d = self.drv_mut(g);
        let local_only = d.local_only;
        d.state = DrvState::WaitingForSlot;
        d.drv = None;
        let key = self.queue_key(g);
        self.queues.push_build(key, local_only);
        self.mark_dirty(g);
    }

    /// A build slot is ours: ask for the output locks.
    pub(super) fn drv_slot_granted(&mut self, g: GoalId, slot: u32) {
        self.run_mut(g).slot = Some(slot);
        let paths = self.drv(g).output_paths();
        self.run_mut(g).retry_at = None;
        self.drv_mut(g).state = DrvState::Locking;
        let ticket = self.new_ticket(g);
        self.effects.push(Effect::TryLockOutputs { ticket, paths });
        self.mark_dirty(g);
    }

    pub(super) fn drv_locks_acquired(&mut self, store: &dyn StoreView, g: GoalId) {
        self.ticket_done(g);
        let run = self.run_mut(g);
        run.locked = true;
        run.holder = None;
        run.warned = false;
        // Someone may have built the outputs while we waited for the lock (between rounds
        // of `--repeat` the outputs are not registered yet).
        let d = self.drv(g);
        if d.mode != BuildMode::Check && d.cur_round == 1 && self.all_wanted_valid(store, g) {
            self.unlock_outputs(g, true);
            return self.finish(g, BuildStatus::AlreadyValid, None);
        }
        if let Some(msg) = self.cached_failure(store, g) {
            return self.finish(g, BuildStatus::CachedFailure, Some(msg));
        }
        self.start_build(g);
    }

    fn start_build(&mut self, g: GoalId) {
        let now = self.now;
        let d = self.drv(g);
        let request = Box::new(BuildRequest {
            drv_path: d.drv_path.clone(),
            outputs: d.outputs.to_vec(),
            mode: d.mode,
            round: d.cur_round,
            nr_rounds: d.nr_rounds,
            slot: d.run.as_ref().and_then(|r| r.slot).expect("slot granted"),
        });
        let d = self.drv_mut(g);
        d.state = DrvState::Building;
        d.started.get_or_insert(now);
        let run = d.run.as_mut().expect("run");
        run.pid = None;
        run.phase = None;
        run.started = now;
        run.last_output = now;
        run.log_size = 0;
        run.log_tail.clear();
        let ticket = self.new_ticket(g);
        self.effects.push(Effect::StartBuild { ticket, request });
        self.running_builds.push(g);
        self.progress.builds.running += 1;
        self.mark_dirty(g);
    }

    pub(super) fn drv_locks_busy(&mut self, g: GoalId, holder: Option<LockHolder>) {
        self.ticket_done(g);
        self.release_slot(g);
        self.drv_mut(g).state = DrvState::WaitingForLock;
        let warn = {
            let run = self.run_mut(g);
            run.holder = holder;
            !std::mem::replace(&mut run.warned, true)
        };
        if warn {
            let paths: Vec<String> = self
                .drv(g)
                .output_paths()
                .iter()
                .map(|p| format!("'{}'", self.settings.store_dir.display(p)))
                .collect();
            self.message(
                Level::Warn,
                format!("waiting for lock on {}", paths.join(", ")),
                Some(g),
            );
        }
        let retry_at = self.poll(g);
        self.run_mut(g).retry_at = Some(retry_at);
    }

    pub(super) fn drv_no_build_user(&mut self, g: GoalId) {
        self.ticket_done(g);
        self.stop_build_counters(g);
        self.unlock_outputs(g, false);
        self.release_slot(g);
        self.drv_mut(g).state = DrvState::WaitingForBuildUser;
        if !std::mem::replace(&mut self.run_mut(g).warned, true) {
            let text = format!("waiting for UID to build '{}'", self.print_drv(g));
            self.message(Level::Warn, text, Some(g));
        }
        let retry_at = self.poll(g);
        self.run_mut(g).retry_at = Some(retry_at);
    }

    pub(super) fn drv_build_started(&mut self, g: GoalId, pid: u32) {
        let d = self.drv(g);
        let (mode, round, nr_rounds) = (d.mode, d.cur_round, d.nr_rounds);
        let run = self.run_mut(g);
        run.pid = Some(pid);
        let slot = run.slot.unwrap_or(0);
        self.emit(EventKind::BuildStarted {
            goal: g,
            slot,
            pid: Some(pid),
            round,
            nr_rounds,
            mode,
        });
        self.mark_dirty(g);
    }

    pub(super) fn drv_build_log(&mut self, g: GoalId, line: String) {
        let now = self.now;
        let max_log = self.settings.max_log_size;
        let log_lines = self.settings.log_lines;
        let run = self.run_mut(g);
        run.last_output = now;
        run.log_size += line.len() as u64 + 1;
        let over = max_log != 0 && run.log_size > max_log;
        if log_lines > 0 {
            if run.log_tail.len() == log_lines {
                run.log_tail.pop_front();
            }
            run.log_tail.push_back(line.clone());
        }
        self.emit(EventKind::LogLine { goal: g, line });
        if over {
            let msg = format!(
                "{} killed after writing more than {max_log} bytes of log output",
                self.goal_name(g)
            );
            self.finish(g, BuildStatus::LogLimitExceeded, Some(msg));
        }
    }

    pub(super) fn drv_build_phase(&mut self, g: GoalId, phase: String) {
        let now = self.now;
        let run = self.run_mut(g);
        run.last_output = now;
        run.phase = Some(phase.clone());
        run.phase_seq = run.phase_seq.wrapping_add(1);
        self.emit(EventKind::PhaseChanged { goal: g, phase });
        self.mark_dirty(g);
    }

    /// Nix's `buildDone`: classify the outcome, repeat rounds, finish.
    pub(super) fn drv_build_finished(&mut self, g: GoalId, outcome: BuildOutcome) {
        self.ticket_done(g);
        self.stop_build_counters(g);
        self.release_slot(g);
        let d = self.drv_mut(g);
        d.times_built += 1;
        let mode = d.mode;
        let failure = match outcome {
            BuildOutcome::Success => None,
            BuildOutcome::RoundDiffers { message } => {
                self.drv_mut(g).non_deterministic = true;
                if self.settings.enforce_determinism {
                    Some((BuildStatus::NotDeterministic, message))
                } else {
                    self.message(Level::Error, message, Some(g));
                    let d = self.drv_mut(g);
                    d.cur_round = d.nr_rounds;
                    None
                }
            }
            BuildOutcome::BuilderFailed { status, disk_full } => {
                let mut msg = format!("builder for '{}' {}", self.print_drv(g), status.describe());
                let tail = self
                    .drv(g)
                    .run
                    .as_ref()
                    .map(|r| r.log_tail.iter().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                if !tail.is_empty() {
                    msg.push_str(&format!(";\nlast {} log lines:\n", tail.len()));
                    for line in &tail {
                        msg.push_str("> ");
                        msg.push_str(line);
                        msg.push('\n');
                    }
                    msg.push_str(&format!(
                        "For full logs, run 'nix log {}'.",
                        self.print_drv(g)
                    ));
                }
                if disk_full {
                    msg.push_str(
                        "\nnote: build failure may have been caused by lack of free disk space",
                    );
                }
                let transient = self.drv(g).fixed_output || disk_full;
                if self.settings.cache_failures && !transient {
                    let outputs = self.drv(g).output_paths();
                    let drv = self.drv(g).drv_path.clone();
                    self.effects.push(Effect::CacheFailure { drv, outputs });
                }
                let status = if transient {
                    BuildStatus::TransientFailure
                } else {
                    BuildStatus::PermanentFailure
                };
                Some((status, msg))
            }
            BuildOutcome::OutputRejected {
                message,
                hash_mismatch,
            } => {
                if hash_mismatch {
                    self.set_flag(g, flags::HASH_MISMATCH);
                }
                Some((BuildStatus::OutputRejected, message))
            }
            BuildOutcome::NotDeterministic { message } => {
                if mode == BuildMode::Check {
                    self.set_flag(g, flags::CHECK_MISMATCH);
                }
                Some((BuildStatus::NotDeterministic, message))
            }
            BuildOutcome::InputRejected { message } => Some((BuildStatus::InputRejected, message)),
            BuildOutcome::MiscFailure { message } => Some((BuildStatus::MiscFailure, message)),
        };
        if let Some((status, msg)) = failure {
            return self.finish(g, status, Some(msg));
        }
        if mode == BuildMode::Check {
            return self.finish(g, BuildStatus::Built, None);
        }
        let d = self.drv(g);
        if d.cur_round < d.nr_rounds {
            self.unlock_outputs(g, false);
            let d = self.drv_mut(g);
            d.cur_round += 1;
            d.state = DrvState::TryToBuild;
            self.wake(g);
            return;
        }
        self.mark_contents_good(self.drv(g).output_paths());
        self.unlock_outputs(g, true);
        self.finish(g, BuildStatus::Built, None);
    }

    fn stop_build_counters(&mut self, g: GoalId) {
        if let Some(i) = self.running_builds.iter().position(|&r| r == g) {
            self.running_builds.swap_remove(i);
            self.progress.builds.running -= 1;
        }
    }

    pub(super) fn unlock_outputs(&mut self, g: GoalId, delete_lock_files: bool) {
        if let Some(run) = self.drv_mut(g).run.as_mut()
            && std::mem::take(&mut run.locked)
        {
            self.effects.push(Effect::UnlockOutputs {
                goal: g,
                delete_lock_files,
            });
        }
    }

    /// Stops whatever a derivation goal is doing (it ends, or nobody needs it any more).
    pub(super) fn drv_stop(&mut self, g: GoalId) {
        match self.drv(g).state {
            DrvState::WaitingForSlot => {
                let key = self.queue_key(g);
                self.queues.remove(&key);
            }
            // The driver may have taken the locks already; the answer would come too late.
            DrvState::Locking => self.effects.push(Effect::UnlockOutputs {
                goal: g,
                delete_lock_files: false,
            }),
            DrvState::Building if self.goal(g).outstanding => {
                let ticket = Ticket {
                    goal: g,
                    seq: self.goal(g).ticket_seq,
                };
                self.effects.push(Effect::KillBuild { ticket });
            }
            _ => {}
        }
        self.ticket_done(g);
        self.stop_build_counters(g);
        self.unlock_outputs(g, false);
        self.release_slot(g);
        let d = self.drv_mut(g);
        d.state = DrvState::Done;
        d.run = None;
        d.drv = None;
    }

    /// Checks the running builds' deadlines (`max-silent-time`, `timeout`).
    pub(super) fn check_timeouts(&mut self) {
        let silent = self.settings.max_silent_time_ms;
        let timeout = self.settings.build_timeout_ms;
        if silent == 0 && timeout == 0 {
            return;
        }
        let now = self.now;
        for g in self.running_builds.clone() {
            let Some(run) = self.drv(g).run.as_ref() else {
                continue;
            };
            let msg = if silent != 0 && now.millis_since(run.last_output) >= silent {
                format!(
                    "{} timed out after {} seconds of silence",
                    self.goal_name(g),
                    seconds(silent)
                )
            } else if timeout != 0 && now.millis_since(run.started) >= timeout {
                format!(
                    "{} timed out after {} seconds",
                    self.goal_name(g),
                    seconds(timeout)
                )
            } else {
                continue;
            };
            self.finish(g, BuildStatus::TimedOut, Some(msg));
        }
    }

    /// The earliest deadline of a running build.
    pub(super) fn build_deadline(&self) -> Option<Time> {
        let silent = self.settings.max_silent_time_ms;
        let timeout = self.settings.build_timeout_ms;
        if silent == 0 && timeout == 0 {
            return None;
        }
        self.running_builds
            .iter()
            .filter_map(|&g| self.drv(g).run.as_ref())
            .flat_map(|run| {
                [
                    (silent != 0).then(|| run.last_output.plus_millis(silent)),
                    (timeout != 0).then(|| run.started.plus_millis(timeout)),
                ]
            })
            .flatten()
            .min()
    }
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 1000.0)
    }
}

/// The closure of `roots` under the store's references.
fn closure_of(store: &dyn StoreView, roots: Vec<StorePath>) -> Vec<StorePath> {
    let mut seen: HashSet<StorePath> = roots.iter().cloned().collect();
    let mut order = roots;
    let mut i = 0;
    while i < order.len() {
        for r in store.references(&order[i]) {
            if seen.insert(r.clone()) {
                order.push(r);
            }
        }
        i += 1;
    }
    order
}
