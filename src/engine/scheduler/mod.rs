//! The heart of drover: Nix's `Worker` with its `DerivationGoal` and `SubstitutionGoal` state
//! machines, sans I/O.
//!
//! [`Scheduler::handle`] takes an [`Input`] (an answer from the driver, a user [`Command`],
//! or just the passing of time) and the current [`Time`]; it queues [`Effect`]s for the driver
//! ([`Scheduler::take_effects`]) and [`Event`]s for the front-ends
//! ([`Scheduler::drain_events`]). Store questions go through [`StoreView`]. There is no
//! clock, no process, no file and no async code in here (layer rule 2), so every transition is
//! a unit test and the simulator runs the real thing on a virtual clock.
//!
//! The worker loop follows Nix: woken goals run in batches in key order (substitutions
//! before builds, then by name); a goal that needs a slot queues for one; goals waiting for a
//! lock held by another process poll every `poll_interval`; running builds have silence and
//! wall-clock deadlines. The caller sleeps until [`Scheduler::next_deadline`] or the next
//! input. One call works at most a fixed number of goals ([`Scheduler::has_pending_work`]
//! says when to call again), so a huge graph never stalls the caller.
//!
//! Beyond Nix, [`Command`]s act on a running scheduler: `Cancel`/`CancelAll` (a cancelled goal
//! fails its waiters as a failed dependency would), `Drain` (start nothing new, end when what
//! runs is done), `Pause`/`Resume`, `Retry` (reopen a failed or cancelled goal, the goals that
//! failed only because of it, and the top-level goals that were stopped; clears a cached
//! failure and a drain), `SetKeepGoing`, `SetMaxJobs` (more slots start waiting goals at once).
//! Every busy goal has a typed state for a UI ([`Scheduler::goal_state`]); the settled states
//! are published as `StateChanged` events.
//!
//! `Retry` of a failed goal reopens it (its exit-status flags are undone) and every goal it
//! reaches through waiters:
//! - a waiter that already ended `DependencyFailed`, and whose failed inputs are all being
//!   retried, is reopened too (and so on up the graph), as are the top-level goals that were
//!   stopped;
//! - a waiter still busy (keep-going: it counted the failure, Nix's `nrFailed`, and waits
//!   for other inputs) forgets that failure and waits for the new attempt as for any other
//!   input. If the attempt succeeds it goes on as if the input had never failed; if it fails
//!   again (or is cancelled) the failure is counted once, and the waiter ends
//!   `DependencyFailed` when its inputs are done, as in Nix. The exit status counts only the
//!   results that stand at the end.
//!
//! A waiter woken to fail is worked in the same call, before a command can come, unless that
//! call stopped at its work budget: such a waiter still ends `DependencyFailed`, and the next
//! `Retry` of the input reopens it.
//!
//! # How drover differs from Nix (and why)
//! - **Errors are goal results.** Where Nix throws out of the worker (aborting every goal),
//!   the goal ends `MiscFailure` with Nix's message: `some outputs of '%s' are not valid, so
//!   checking is not possible`, `dependency '%s' of '%s' does not exist, and substitution is
//!   disabled`, `some paths in the output closure of derivation '%s' could not be repaired`,
//!   `derivation '%s' requires non-existent output ...`, unreadable derivations, substituter
//!   query errors without `--fallback`, and `unable to start any build; either increase
//!   '--max-jobs' ...` (the goals that wait for a slot get it). 002's failed output
//!   substitution without `--fallback` is a `TransientFailure`, as in 003.
//! - **Timeouts** (seed bug 14): the lock-poll wake-up and the builds' silence/timeout
//!   deadlines are combined with `min`; Nix lets the poll interval override them.
//! - **retrySubstitution** (bug 1): reset in `haveDerivation` (003), set only when every
//!   failure was an incomplete closure (001), and retried at most once (Nix 2.8).
//! - **Exit status** (bugs 2, 18): the flags are counted per goal result (never overwritten
//!   by a later result, and undone when a `Retry` reopens the goal); values as Nix 003: 100
//!   permanent failure, 101 timed out, 102 hash mismatch, 104 not deterministic, combined;
//!   1 for other failures; 0 when every top-level goal succeeded.
//! - **Build users** (bug 15): a goal waiting for a free build user gives its output locks
//!   and its slot back while it polls.
//! - **One order of slots** (Nix's thundering herd): goals waiting for a slot sit in an
//!   ordered queue and only the first ones are woken when slots free up; the builds that
//!   start, and their order, are those Nix's key-ordered race would give. The slot is taken
//!   before the output locks, so polling for a busy lock never holds a slot.
//! - **Goal identity** (bug 16, weak lists): goals live in an arena with ids; dedup maps are
//!   hash maps keyed by the path's hash part; waiter lists are removed in O(1) with epochs. No
//!   O(n) scan per event.
//! - **Memory**: a goal drops its derivation summary once its input goals exist and keeps
//!   only its output paths and two flags (Nix keeps the whole derivation while the goal lives),
//!   so a run's memory follows its active goals.
//! - **Finished goals stay known.** Nix forgets a goal when it ends, so a second request
//!   for a failed derivation builds it again. drover reuses the failure (no derivation is
//!   built twice in a run unless the user retries it); a successful goal is reused when it
//!   covers the wanted outputs, and a failed substitution is tried afresh, as in Nix.
//! - **Abandoned goals end visibly**: a goal nobody needs any more (Nix destroys it) ends
//!   `Cancelled` without a message; its substitution is cancelled rather than awaited (003
//!   joins the download thread).
//! - **Substitution failure**: a path that some substituter had but could not deliver ends
//!   `TransientFailure` (Nix reports `NoSubstituters` with `ecFailed`).
//! - **Cached failures**: 002's `build-cache-failure` (`cache_failures`, off by default,
//!   like Nix) gives `CachedFailure` and counts as a permanent failure (000); `Retry` clears it.
//! - **Max-jobs 0**: a local-only build (preferLocalBuild, check or repair mode) may run when
//!   nothing else runs (003's rule; Nix 2.8 dropped it).
//! - **Stale answers**: every request carries a ticket, so a late answer to something a goal
//!   gave up on (a killed build, a lock attempt before a cancel) is ignored.
//! - There is no build hook (remote builds) yet, and no floating CA realisations (003's
//!   warning, then a build).

mod derivation_goal;
mod goal;
mod index;
mod protocol;
mod queues;
mod settings;
mod store_view;
mod substitution_goal;

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};

pub use protocol::{
    BuildOutcome, BuildRequest, Effect, ExitStatus, Input, SubstituteAnswer, SubstitutionOutcome,
    Ticket,
};
pub use settings::Settings;
pub use store_view::{DrvInfo, StoreView};

use crate::engine::api::{
    BuildMode, BuildStatus, Command, Event, EventKind, GoalId, GoalKind, GoalState, InputStage,
    Level, Progress, RunningDetail, Time, WaitReason,
};
use crate::engine::format::StorePath;

use derivation_goal::{DrvGoal, DrvState};
use goal::{Goal, GoalData};
use queues::{QueueKey, SlotQueues};
use substitution_goal::{SubstGoal, SubstState};

/// What the user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Outputs of a derivation (empty: all).
    Derivation {
        drv: StorePath,
        outputs: Vec<String>,
    },
    /// A store path, by substitution.
    Path(StorePath),
}

/// Goals worked per `handle` call at most; the rest waits for the next call (see
/// [`Scheduler::has_pending_work`]), so one input never stalls the caller for long and the
/// event buffer stays small.
const WORK_BUDGET: usize = 1024;

/// See [`Scheduler::order_prefix`].
fn order_prefix(kind: u8, name: &str) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[0] = kind;
    let n = name.len().min(15);
    bytes[1..=n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

const NO_SLOT_MESSAGE: &str = "unable to start any build; either increase '--max-jobs' or \
    enable remote builds.\nhttps://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html";

/// Nix's `Worker`: the goals of one run and the loop that drives them.
pub struct Scheduler {
    settings: Settings,
    goals: goal::Arena,
    drv_goals: index::PathIndex,
    subst_goals: index::PathIndex,
    /// The user's top-level goals.
    tops: Vec<GoalId>,
    /// Goals that count as roots (top-level goals, retried goals).
    held_goals: Vec<GoalId>,
    busy_held: u32,
    busy_goals: u32,
    awake: Vec<GoalId>,
    /// The awake goals being worked through, in key order.
    batch: VecDeque<GoalId>,
    abandoned: Vec<GoalId>,
    queues: SlotQueues,
    pollers: Vec<GoalId>,
    nr_polling: u32,
    last_woken_up: Option<Time>,
    running_builds: Vec<GoalId>,
    /// Tickets waiting for an answer.
    outstanding: u32,
    contents_good: FxHashMap<StorePath, bool>,
    /// How many goal results set each exit-status flag (see `goal::flags`).
    flag_counts: [u32; 4],
    /// `expected` counts only what is not done yet; published with `done` added.
    progress: Progress,
    published_progress: Progress,
    paused: bool,
    draining: bool,
    started: bool,
    finished: bool,
    run_done_pending: bool,
    effects: Vec<Effect>,
    events: Vec<Event>,
    seq: u64,
    now: Time,
    dirty: Vec<GoalId>,
}

impl Scheduler {
    pub fn new(settings: Settings) -> Scheduler {
        Scheduler {
            settings,
            goals: goal::Arena::default(),
            drv_goals: index::PathIndex::default(),
            subst_goals: index::PathIndex::default(),
            tops: Vec::new(),
            held_goals: Vec::new(),
            busy_held: 0,
            busy_goals: 0,
            awake: Vec::new(),
            batch: VecDeque::new(),
            abandoned: Vec::new(),
            queues: SlotQueues::default(),
            pollers: Vec::new(),
            nr_polling: 0,
            last_woken_up: None,
            running_builds: Vec::new(),
            outstanding: 0,
            contents_good: FxHashMap::default(),
            flag_counts: [0; 4],
            progress: Progress::default(),
            published_progress: Progress::default(),
            paused: false,
            draining: false,
            started: false,
            finished: false,
            run_done_pending: false,
            effects: Vec::new(),
            events: Vec::new(),
            seq: 0,
            now: Time::ZERO,
            dirty: Vec::new(),
        }
    }

    /// Nix's `Worker::run` entry: creates the top-level goals and runs until every goal
    /// waits for an answer or the time.
    pub fn start(&mut self, store: &dyn StoreView, targets: &[Target], mode: BuildMode, now: Time) {
        self.now = now;
        self.started = true;
        for t in targets {
            let g = self.request_goal(t.clone(), mode == BuildMode::Repair, mode, true);
            if !self.goal(g).top {
                self.goal_mut(g).top = true;
                self.tops.push(g);
            }
            self.hold(g);
        }
        self.run(store);
        self.after_run(store);
    }

    /// Feeds one input at time `now` and runs the goals it wakes.
    pub fn handle(&mut self, store: &dyn StoreView, input: Input, now: Time) {
        self.now = self.now.max(now);
        match input {
            Input::Tick => {}
            Input::Command(c) => self.command(store, c),
            Input::Message { level, text } => self.message(level, text, None),
            answer => self.answer(store, answer),
        }
        self.check_timeouts();
        self.wake_pollers();
        self.run(store);
        self.after_run(store);
    }

    /// The effects queued since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Moves the effects queued since the last call into `out`, in order.
    pub fn drain_effects(&mut self, out: &mut Vec<Effect>) {
        out.append(&mut self.effects);
    }

    /// Moves the events since the last call into `out`, after publishing the settled state
    /// of every goal that changed, the progress counters, and `RunDone` when the run ended.
    pub fn drain_events(&mut self, out: &mut Vec<Event>) {
        for g in std::mem::take(&mut self.dirty) {
            let goal = self.goal_mut(g);
            goal.dirty = false;
            if !goal.busy() {
                continue;
            }
            let fp = self.fingerprint(g);
            if fp != self.goal(g).published {
                self.goal_mut(g).published = fp;
                let state = self.goal_state(g).expect("goal exists");
                self.emit(EventKind::StateChanged { goal: g, state });
            }
        }
        if self.progress != self.published_progress {
            self.published_progress = self.progress;
            let progress = self.public_progress();
            self.emit(EventKind::Progress { progress });
        }
        if std::mem::take(&mut self.run_done_pending) {
            let exit_status = self.exit_status();
            self.emit(EventKind::RunDone { exit_status });
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.events);
        } else {
            out.append(&mut self.events);
        }
    }

    /// Events waiting in the buffer (state changes not counted).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Woken goals are left over from the last call (its work budget ran out): the caller
    /// should publish the events and call [`Scheduler::handle`] with [`Input::Tick`] before
    /// waiting for anything.
    pub fn has_pending_work(&self) -> bool {
        !self.batch.is_empty() || !self.awake.is_empty()
    }

    /// When the scheduler wants a [`Input::Tick`] at the latest: now if it has pending work,
    /// else the next lock poll or build deadline.
    pub fn next_deadline(&self) -> Option<Time> {
        if self.has_pending_work() {
            return Some(self.now);
        }
        let poll = (self.nr_polling > 0).then(|| {
            self.last_woken_up
                .unwrap_or(self.now)
                .plus_millis(self.settings.poll_interval_ms)
        });
        [poll, self.build_deadline()].into_iter().flatten().min()
    }

    /// Every top-level goal has ended.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Nix's `Worker::exitStatus`, or 0 when every top-level goal succeeded.
    pub fn exit_status(&self) -> u8 {
        if self
            .tops
            .iter()
            .all(|&g| self.goal(g).end.is_some_and(|e| e.status.success()))
        {
            return 0;
        }
        let [permanent, timed_out, hash_mismatch, check_mismatch] = self.flag_counts.map(|c| c > 0);
        let mut mask = 0u8;
        if permanent || timed_out || hash_mismatch {
            mask |= 0x04;
        }
        if timed_out {
            mask |= 0x01;
        }
        if hash_mismatch {
            mask |= 0x02;
        }
        if check_mismatch {
            mask |= 0x08;
        }
        if mask != 0 { mask | 0x60 } else { 1 }
    }

    pub fn top_goals(&self) -> &[GoalId] {
        &self.tops
    }

    pub fn goal_count(&self) -> usize {
        self.goals.len()
    }

    /// The goal currently answering for a derivation or (else) a store path.
    pub fn find_goal(&self, path: &StorePath) -> Option<GoalId> {
        self.drv_goals
            .get(&self.goals, path)
            .or_else(|| self.subst_goals.get(&self.goals, path))
    }

    pub fn goal_status(&self, g: GoalId) -> Option<BuildStatus> {
        self.goals.get(g.index())?.end.map(|e| e.status)
    }

    /// Slots in use (builds and substitutions), Nix's `nrLocalBuilds`.
    pub fn slots_in_use(&self) -> u32 {
        self.queues.in_use()
    }

    pub fn progress(&self) -> Progress {
        self.public_progress()
    }

    /// The state of a goal as a front-end shows it.
    pub fn goal_state(&self, g: GoalId) -> Option<GoalState> {
        let goal = self.goals.get(g.index())?;
        if let Some(end) = goal.end {
            return Some(GoalState::Done { status: end.status });
        }
        let inputs = |stage| WaitReason::Inputs {
            pending: goal.pending,
            stage,
        };
        let slot_wait = if self.paused || self.draining {
            WaitReason::Paused
        } else {
            WaitReason::BuildSlot
        };
        let reason = match &goal.data {
            GoalData::Drv(d) => {
                let run = d.run.as_deref();
                match d.state {
                    DrvState::GetDerivation | DrvState::LoadDerivation => {
                        inputs(InputStage::Derivation)
                    }
                    DrvState::OutputsSubstitutionTried => inputs(InputStage::OutputSubstitutes),
                    DrvState::InputsRealised | DrvState::Done => inputs(InputStage::Inputs),
                    DrvState::ClosureRepaired => inputs(InputStage::ClosureRepair),
                    DrvState::TryToBuild | DrvState::WaitingForSlot => slot_wait,
                    DrvState::Locking | DrvState::WaitingForLock => WaitReason::Lock {
                        paths: d
                            .output_paths()
                            .iter()
                            .map(|p| self.settings.store_dir.display(p))
                            .collect(),
                        holder: run.and_then(|r| r.holder.clone()),
                        retry_at: run.and_then(|r| r.retry_at),
                    },
                    DrvState::WaitingForBuildUser => WaitReason::BuildUser {
                        retry_at: run.and_then(|r| r.retry_at).unwrap_or(self.now),
                    },
                    DrvState::Building => {
                        let run = run.expect("a building goal has a run");
                        return Some(GoalState::Running {
                            detail: RunningDetail::Build {
                                slot: run.slot.unwrap_or(0),
                                pid: run.pid,
                                round: d.cur_round,
                                nr_rounds: d.nr_rounds,
                                phase: run.phase.clone(),
                                since: run.started,
                            },
                        });
                    }
                }
            }
            GoalData::Subst(s) => match s.state {
                SubstState::Init | SubstState::TryNext | SubstState::Querying => {
                    WaitReason::Substituter {
                        substituter: self
                            .settings
                            .substituters
                            .get(s.sub)
                            .cloned()
                            .unwrap_or_default(),
                    }
                }
                SubstState::ReferencesValid | SubstState::Done => inputs(InputStage::References),
                SubstState::TryToRun | SubstState::WaitingForSlot => slot_wait,
                SubstState::Running => {
                    return Some(GoalState::Running {
                        detail: RunningDetail::Substitution {
                            slot: s.slot.unwrap_or(0),
                            substituter: self.settings.substituters[s.sub].clone(),
                            since: s.started.unwrap_or(self.now),
                        },
                    });
                }
            },
        };
        Some(GoalState::Waiting { reason })
    }

    fn public_progress(&self) -> Progress {
        let mut p = self.progress;
        p.builds.expected += p.builds.done;
        p.substitutions.expected += p.substitutions.done;
        p.nar.expected += p.nar.done;
        p.download.expected += p.download.done;
        p
    }

    fn fingerprint(&self, g: GoalId) -> u64 {
        let goal = self.goal(g);
        let mut h = FxHasher::default();
        goal.pending.hash(&mut h);
        (self.paused || self.draining).hash(&mut h);
        match &goal.data {
            GoalData::Drv(d) => {
                (d.state as u8).hash(&mut h);
                d.cur_round.hash(&mut h);
                // Phases are not part of it: `PhaseChanged` tells them.
                if let Some(run) = &d.run {
                    (run.slot, run.pid, run.retry_at).hash(&mut h);
                    run.holder.as_ref().map(|x| x.pid).hash(&mut h);
                }
            }
            GoalData::Subst(s) => {
                (10 + s.state as u8, s.sub, s.slot).hash(&mut h);
            }
        }
        h.finish()
    }

    // --- the worker loop -------------------------------------------------------------------

    /// Nix's `Worker::run` loop body: work the awake goals in key order, batch by batch,
    /// granting free slots after each batch; until nothing is awake or the budget is spent.
    fn run(&mut self, store: &dyn StoreView) {
        let mut budget = WORK_BUDGET;
        loop {
            self.process_abandoned();
            if self.batch.is_empty() {
                // A batch is done: the goals that reached a slot queue in it start now, as
                // Nix starts a build as soon as a goal gets to `tryToBuild`.
                if self.grant_slots() {
                    continue;
                }
                if !self.awake.is_empty() {
                    let mut batch = std::mem::take(&mut self.awake);
                    // Sort on the key's first 16 bytes, read once per goal; ties (rare) on the
                    // whole key.
                    let mut keyed: Vec<(u128, GoalId)> =
                        batch.iter().map(|&g| (self.order_prefix(g), g)).collect();
                    keyed.sort_unstable_by(|a, b| {
                        a.0.cmp(&b.0)
                            .then_with(|| self.order(a.1).cmp(&self.order(b.1)))
                    });
                    batch.clear();
                    batch.extend(keyed.into_iter().map(|(_, g)| g));
                    self.batch = batch.into();
                    continue;
                }
                return;
            }
            if budget == 0 {
                return;
            }
            budget -= 1;
            let g = self.batch.pop_front().expect("non-empty batch");
            self.goal_mut(g).awake = false;
            if self.busy(g) {
                self.work(store, g);
            }
        }
    }

    /// Gives free slots to the first queued goals; whether any was granted.
    fn grant_slots(&mut self) -> bool {
        if self.paused || self.draining {
            return false;
        }
        let mut granted = false;
        while let Some((g, slot)) = self
            .queues
            .next_grant(self.settings.max_jobs, self.settings.max_substitution_jobs)
        {
            granted = true;
            match self.goal(g).data {
                GoalData::Drv(_) => self.drv_slot_granted(g, slot),
                GoalData::Subst(_) => self.subst_slot_granted(g, slot),
            }
        }
        granted
    }

    fn work(&mut self, store: &dyn StoreView, g: GoalId) {
        match self.goal(g).data {
            GoalData::Drv(_) => self.drv_work(store, g),
            GoalData::Subst(_) => self.subst_work(store, g),
        }
    }

    /// Nix's goal order: (kind, name, hash part), i.e. its `key()` strings.
    fn order(&self, g: GoalId) -> (u8, &str, &[u8; 32]) {
        match &self.goal(g).data {
            GoalData::Drv(d) => (1, d.drv_path.name(), d.drv_path.hash_part_bytes()),
            GoalData::Subst(s) => (0, s.path.name(), s.path.hash_part_bytes()),
        }
    }

    /// The first 16 bytes of the order: the kind, then the name's first 15 bytes (name
    /// characters sort after 0, so a shorter name sorts first, as in Nix's key).
    fn order_prefix(&self, g: GoalId) -> u128 {
        let (kind, name, _) = self.order(g);
        order_prefix(kind, name)
    }

    fn queue_key(&self, g: GoalId) -> QueueKey {
        let (kind, name, hash) = self.order(g);
        QueueKey {
            prefix: order_prefix(kind, name),
            kind,
            name: name.into(),
            hash: *hash,
            goal: g,
        }
    }

    /// After the loop: end the run when no root is busy; handle a run that cannot move.
    fn after_run(&mut self, store: &dyn StoreView) {
        loop {
            if self.started && !self.finished && self.busy_held == 0 {
                self.finish_run();
            }
            if self.nr_polling == 0 {
                self.pollers.clear();
                self.last_woken_up = None;
            }
            let stalled = self.started
                && !self.finished
                && !self.has_pending_work()
                && self.outstanding == 0
                && self.nr_polling == 0;
            // Paused, it waits for `Resume`; draining, it ends.
            if !stalled || (self.paused && !self.draining) {
                return;
            }
            if self.draining || self.queues.is_empty() {
                if !self.draining {
                    self.message(
                        Level::Error,
                        "internal error: no goal can make progress".into(),
                        None,
                    );
                }
                self.release_all_held();
            } else {
                // Only builds that may not run with max-jobs 0 are left (Nix throws here).
                for g in self.queues.queued_builds() {
                    if self.busy(g) {
                        self.finish(g, BuildStatus::MiscFailure, Some(NO_SLOT_MESSAGE.into()));
                    }
                }
                self.run(store);
            }
        }
    }

    fn finish_run(&mut self) {
        self.finished = true;
        if self.busy_goals > 0 {
            // Unreachable busy goals cannot exist (refs), but never leave one hanging.
            for i in 0..self.goals.len() {
                let g = GoalId(i as u32);
                if self.busy(g) {
                    self.goal_mut(g).refs = 0;
                    self.abandoned.push(g);
                }
            }
            self.process_abandoned();
        }
        self.run_done_pending = true;
    }

    fn answer(&mut self, store: &dyn StoreView, input: Input) {
        let Some(ticket) = input.ticket() else {
            return;
        };
        if let Input::BuildNote { text, .. } = input {
            return self.message(Level::Notice, text, Some(ticket.goal));
        }
        if !self.ticket_current(ticket) {
            return; // an answer to something the goal gave up on
        }
        let g = ticket.goal;
        let drv_state = match &self.goal(g).data {
            GoalData::Drv(d) => Some(d.state),
            GoalData::Subst(_) => None,
        };
        let subst_state = match &self.goal(g).data {
            GoalData::Subst(s) => Some(s.state),
            GoalData::Drv(_) => None,
        };
        match (input, drv_state, subst_state) {
            (Input::LocksAcquired { .. }, Some(DrvState::Locking), _) => {
                self.drv_locks_acquired(store, g)
            }
            (Input::LocksBusy { holder, .. }, Some(DrvState::Locking), _) => {
                self.drv_locks_busy(g, holder)
            }
            (Input::NoBuildUser { .. }, Some(DrvState::Building), _) => self.drv_no_build_user(g),
            (Input::BuildStarted { pid, .. }, Some(DrvState::Building), _) => {
                self.drv_build_started(g, pid)
            }
            (Input::BuildLog { line, .. }, Some(DrvState::Building), _) => {
                self.drv_build_log(g, line)
            }
            (Input::BuildPhase { phase, .. }, Some(DrvState::Building), _) => {
                self.drv_build_phase(g, phase)
            }
            (Input::BuildFinished { outcome, .. }, Some(DrvState::Building), _) => {
                self.drv_build_finished(g, outcome)
            }
            (Input::SubstituteInfo { answer, .. }, _, Some(SubstState::Querying)) => {
                self.subst_info(g, answer)
            }
            (
                Input::SubstitutionProgress {
                    download_done,
                    nar_done,
                    url,
                    ..
                },
                _,
                Some(SubstState::Running),
            ) => self.subst_progress(g, download_done, nar_done, url),
            (Input::SubstitutionFinished { outcome, .. }, _, Some(SubstState::Running)) => {
                self.subst_finished(g, outcome)
            }
            (input, _, _) => self.message(
                Level::Debug,
                format!("ignoring an unexpected answer for goal {g}: {input:?}"),
                Some(g),
            ),
        }
    }

    // --- goals -----------------------------------------------------------------------------

    fn request_goal(&mut self, target: Target, repair: bool, mode: BuildMode, top: bool) -> GoalId {
        match target {
            Target::Derivation { drv, outputs } => self.request_drv(&drv, &outputs, mode, top),
            Target::Path(path) => self.request_path(&path, repair, top),
        }
    }

    /// Nix's `makeDerivationGoal`: the goal for `drv`, reused when there is one (see the
    /// module doc), else created and woken.
    fn request_drv(
        &mut self,
        drv: &StorePath,
        outputs: &[String],
        mode: BuildMode,
        top: bool,
    ) -> GoalId {
        if let Some(g) = self.drv_goals.get(&self.goals, drv) {
            match self.goal(g).end {
                None => {
                    self.drv_mut(g).add_wanted_outputs(outputs);
                    return g;
                }
                Some(end) if end.reopenable => {
                    self.reopen(g);
                    let d = self.drv_mut(g);
                    d.add_wanted_outputs(outputs);
                    d.need_restart = false;
                    return g;
                }
                Some(end) if end.status.success() && !self.drv(g).covers(outputs) => {}
                Some(_) => return g,
            }
        }
        let kind = GoalKind::Derivation {
            drv: self.settings.store_dir.display(drv),
            outputs: outputs.to_vec(),
            mode,
        };
        let name = drv.drv_name().unwrap_or(drv.name()).to_owned();
        let goal = DrvGoal::new(drv.clone(), outputs.to_vec(), mode);
        let g = self.add_goal(GoalData::Drv(goal));
        self.drv_goals.insert(&self.goals, drv, g);
        self.announce(g, kind, name, top);
        g
    }

    /// Nix's `makePathSubstitutionGoal`.
    fn request_path(&mut self, path: &StorePath, repair: bool, top: bool) -> GoalId {
        if let Some(g) = self.subst_goals.get(&self.goals, path) {
            match self.goal(g).end {
                None => return g,
                Some(end) if end.reopenable => {
                    self.reopen(g);
                    return g;
                }
                Some(end) if end.status.success() => return g,
                Some(_) => {}
            }
        }
        let kind = GoalKind::Substitution {
            path: self.settings.store_dir.display(path),
            repair,
        };
        let name = path.name().to_owned();
        let g = self.add_goal(GoalData::Subst(SubstGoal::new(path.clone(), repair)));
        self.subst_goals.insert(&self.goals, path, g);
        self.announce(g, kind, name, top);
        g
    }

    fn announce(&mut self, g: GoalId, kind: GoalKind, name: String, top: bool) {
        self.account_start(g);
        self.emit(EventKind::GoalAdded {
            goal: g,
            kind,
            name,
            top,
        });
        self.wake(g);
    }

    /// Nix's goal `name`, used in timeout and log-limit messages.
    fn goal_name(&self, g: GoalId) -> String {
        match &self.goal(g).data {
            GoalData::Drv(d) => format!(
                "building of '{}'",
                self.settings.store_dir.display(&d.drv_path)
            ),
            GoalData::Subst(s) => format!(
                "substitution of '{}'",
                self.settings.store_dir.display(&s.path)
            ),
        }
    }

    /// Stops the goal's child, lock attempt, slot or poll (it ends or nobody needs it).
    fn stop_activity(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        if std::mem::take(&mut goal.polling) {
            self.nr_polling -= 1;
        }
        match self.goal(g).data {
            GoalData::Drv(_) => self.drv_stop(g),
            GoalData::Subst(_) => self.subst_stop(g),
        }
    }

    fn release_slot(&mut self, g: GoalId) {
        let slot = match &mut self.goal_mut(g).data {
            GoalData::Drv(d) => d.run.as_mut().and_then(|r| r.slot.take()),
            GoalData::Subst(s) => s.slot.take(),
        };
        if let Some(slot) = slot {
            self.queues.release(slot);
        }
    }

    /// Nix's `waitForAWhile`; returns when the goal will be woken.
    fn poll(&mut self, g: GoalId) -> Time {
        let goal = self.goal_mut(g);
        if !goal.polling {
            goal.polling = true;
            self.nr_polling += 1;
            self.pollers.push(g);
        }
        self.mark_dirty(g);
        let now = self.now;
        let base = *self.last_woken_up.get_or_insert(now);
        base.plus_millis(self.settings.poll_interval_ms)
    }

    fn wake_pollers(&mut self) {
        let Some(last) = self.last_woken_up else {
            return;
        };
        if self.nr_polling == 0 || last.plus_millis(self.settings.poll_interval_ms) > self.now {
            return;
        }
        self.last_woken_up = Some(self.now);
        for g in std::mem::take(&mut self.pollers) {
            if std::mem::take(&mut self.goal_mut(g).polling) {
                self.nr_polling -= 1;
                self.wake(g);
            }
        }
    }

    /// Nix's `Worker::pathContentsGood`, memoised.
    fn contents_good(&mut self, store: &dyn StoreView, path: &StorePath) -> bool {
        if let Some(&good) = self.contents_good.get(path) {
            return good;
        }
        let good = store.is_valid(path) && store.path_contents_good(path);
        if !good {
            let text = format!(
                "path '{}' is corrupted or missing!",
                self.settings.store_dir.display(path)
            );
            self.message(Level::Error, text, None);
        }
        self.contents_good.insert(path.clone(), good);
        good
    }

    /// Nix's `markContentsGood`, which only matters once contents are checked (repair).
    fn mark_contents_good(&mut self, paths: Vec<StorePath>) {
        if !self.contents_good.is_empty() {
            for p in paths {
                self.contents_good.insert(p, true);
            }
        }
    }

    fn emit(&mut self, kind: EventKind) {
        self.events.push(Event {
            seq: self.seq,
            time: self.now,
            kind,
        });
        self.seq += 1;
    }

    fn message(&mut self, level: Level, text: String, goal: Option<GoalId>) {
        self.emit(EventKind::Message { level, text, goal });
    }

    // --- commands --------------------------------------------------------------------------

    fn command(&mut self, store: &dyn StoreView, command: Command) {
        match command {
            Command::Cancel { goal } => {
                if self.goals.get(goal.index()).is_some_and(Goal::busy) {
                    self.finish(
                        goal,
                        BuildStatus::Cancelled,
                        Some("cancelled by the user".into()),
                    );
                } else {
                    self.message(Level::Warn, format!("goal {goal} is not running"), None);
                }
            }
            Command::CancelAll => {
                for g in self.held_goals.clone() {
                    if self.busy(g) {
                        self.finish(
                            g,
                            BuildStatus::Cancelled,
                            Some("cancelled by the user".into()),
                        );
                    }
                }
            }
            Command::Drain => {
                self.draining = true;
                self.mark_queued_dirty();
                self.message(
                    Level::Notice,
                    "draining: no new builds or substitutions will start".into(),
                    None,
                );
            }
            Command::Pause => {
                self.paused = true;
                self.mark_queued_dirty();
            }
            Command::Resume => {
                self.paused = false;
                self.mark_queued_dirty();
            }
            Command::Retry { goal } => self.retry(store, goal),
            Command::SetKeepGoing { keep_going } => self.settings.keep_going = keep_going,
            Command::SetMaxJobs { max_jobs } => self.settings.max_jobs = max_jobs,
        }
    }

    fn mark_queued_dirty(&mut self) {
        for g in self.queues.queued() {
            self.mark_dirty(g);
        }
    }

    /// `Retry`: reopen a failed goal, the goals that failed only because of it, and the
    /// top-level goals that were stopped; busy waiters that counted a reopened goal's failure
    /// wait for it again (see the module doc).
    fn retry(&mut self, store: &dyn StoreView, g: GoalId) {
        let Some(end) = self.goals.get(g.index()).and_then(|goal| goal.end) else {
            self.message(Level::Warn, format!("goal {g} is not finished"), None);
            return;
        };
        if end.status.success() {
            self.message(Level::Warn, format!("goal {g} did not fail"), None);
            return;
        }
        // Running again is a request to start things again.
        self.draining = false;
        // The goals that failed only because of `g`, transitively.
        let mut set = std::collections::HashSet::from([g]);
        let mut order = vec![g];
        loop {
            let mut grew = false;
            let mut i = 0;
            while i < order.len() {
                let waiters: Vec<GoalId> =
                    self.goal(order[i]).waiters.iter().map(|w| w.goal).collect();
                for w in waiters {
                    let goal = self.goal(w);
                    // Its failed inputs are all being retried (now, or by an earlier Retry).
                    let retried = |f: &GoalId| {
                        set.contains(f) || self.goal(*f).end.is_none_or(|e| e.status.success())
                    };
                    if !set.contains(&w)
                        && goal
                            .end
                            .is_some_and(|e| e.status == BuildStatus::DependencyFailed)
                        && goal.failed_inputs.iter().all(retried)
                    {
                        set.insert(w);
                        order.push(w);
                        grew = true;
                    }
                }
                i += 1;
            }
            if !grew {
                break;
            }
        }
        if let GoalData::Drv(d) = &mut self.goal_mut(g).data {
            d.ignore_cached_failure = true;
            if self.settings.cache_failures {
                let mut outputs = self.drv(g).output_paths();
                if outputs.is_empty()
                    && let Ok(info) = store.load_derivation(&self.drv(g).drv_path)
                {
                    outputs = info.outputs.iter().filter_map(|(_, p)| p.clone()).collect();
                }
                self.effects.push(Effect::ClearFailure { outputs });
            }
        }
        // Busy waiters (keep-going) that counted one of these failures wait for the new attempt.
        let rewaits: Vec<(GoalId, goal::WaiterRef, goal::Exit)> = order
            .iter()
            .flat_map(|&x| {
                let exit = self.goal(x).end.expect("a reopened goal has ended").exit;
                self.waiting_after_failure(x)
                    .into_iter()
                    .map(move |w| (x, w, exit))
            })
            .collect();
        for &x in &order {
            self.reopen(x);
            self.hold(x);
        }
        for (x, w, exit) in rewaits {
            self.wait_again(w, x, exit);
        }
        for t in self.tops.clone() {
            if self.goal(t).end.is_some_and(|e| e.reopenable) {
                self.reopen(t);
                self.hold(t);
            }
        }
        self.finished = false;
        self.run_done_pending = false;
    }
}

#[cfg(test)]
mod tests;
