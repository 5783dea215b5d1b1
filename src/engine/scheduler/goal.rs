//! Goals and how they wait for each other (Nix's `Goal`): an arena of goals indexed by
//! [`GoalId`], waitee/waiter edges, the failure counters, `amDone`, and what happens to goals
//! nobody needs any more.
//!
//! Nix keeps goals alive with shared pointers: a goal lives while a top-level goal reaches it
//! through `waitees`, and dies (killing its child) when the last one lets go. drover keeps
//! every goal in the arena for the whole run and counts references instead: `refs` counts the
//! waiters that hold the goal plus one if it is `held` (a top-level goal, or a goal the user
//! retried). When `refs` falls to zero while the goal is busy, the goal is *abandoned*: its
//! work stops and it ends `Cancelled`, as the Nix goal would have been destroyed.
//!
//! Edges never need a linear search: a waiter's `waitees` is a vector of slots, and the
//! waitee's `waiters` entry records the slot index and the waiter's `epoch`. A waiter bumps
//! its epoch whenever it stops waiting, which turns all its remaining entries stale at once.

use crate::engine::api::{BuildStatus, EventKind, GoalId, GoalTimes, Time};

use super::Scheduler;
use super::derivation_goal::DrvGoal;
use super::substitution_goal::SubstGoal;

/// Nix's `Goal::ExitCode` for a finished goal: what its waiters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    Success,
    Failed,
    NoSubstituters,
    IncompleteClosure,
}

impl Exit {
    pub(super) fn of(status: BuildStatus) -> Exit {
        match status {
            s if s.success() => Exit::Success,
            BuildStatus::NoSubstituters => Exit::NoSubstituters,
            BuildStatus::IncompleteClosure => Exit::IncompleteClosure,
            _ => Exit::Failed,
        }
    }
}

/// How a goal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    pub status: BuildStatus,
    pub exit: Exit,
    /// Restart it when it is requested again: it was abandoned, or a `Retry` covers it.
    pub reopenable: bool,
}

/// Bits of Nix's worker flags a goal's result set (for the exit status).
pub(super) mod flags {
    pub const PERMANENT: u8 = 1;
    pub const TIMED_OUT: u8 = 2;
    pub const HASH_MISMATCH: u8 = 4;
    pub const CHECK_MISMATCH: u8 = 8;
}

#[derive(Debug)]
pub(super) enum GoalData {
    Drv(DrvGoal),
    Subst(SubstGoal),
}

/// A waitee as the waiter sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct WaiteeSlot {
    pub goal: GoalId,
    /// The waiter still holds it (it has not finished, and the waiter did not let go).
    pub held: bool,
}

/// A waiter as the waitee sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct WaiterRef {
    pub goal: GoalId,
    pub epoch: u32,
    pub slot: u32,
}

#[derive(Debug)]
pub(super) struct Goal {
    pub data: GoalData,
    pub waitees: Vec<WaiteeSlot>,
    /// Held waitees that have not finished.
    pub pending: u32,
    /// Everyone who ever waited for this goal (kept after it ends, for `Retry`).
    pub waiters: Vec<WaiterRef>,
    /// Waitees whose failure counted in `nr_failed` (for `Retry`).
    pub failed_inputs: Vec<GoalId>,
    pub epoch: u32,
    pub refs: u32,
    /// Nix's `nrFailed`, `nrNoSubstituters`, `nrIncompleteClosure`.
    pub nr_failed: u32,
    pub nr_no_substituters: u32,
    pub nr_incomplete_closure: u32,
    /// A waitee that had already failed was added (without keep-going): stop waiting.
    pub stop_waiting: bool,
    /// `None` while busy.
    pub end: Option<End>,
    /// The current ticket's sequence number; answers with another are stale.
    pub ticket_seq: u32,
    /// An answer to the current ticket is expected.
    pub outstanding: bool,
    pub top: bool,
    pub held: bool,
    pub awake: bool,
    pub dirty: bool,
    pub polling: bool,
    /// Fingerprint of the last published state.
    pub published: u64,
    pub exit_flags: u8,
}

impl Goal {
    pub(super) fn new(data: GoalData) -> Goal {
        Goal {
            data,
            waitees: Vec::new(),
            pending: 0,
            waiters: Vec::new(),
            failed_inputs: Vec::new(),
            epoch: 0,
            refs: 0,
            nr_failed: 0,
            nr_no_substituters: 0,
            nr_incomplete_closure: 0,
            stop_waiting: false,
            end: None,
            ticket_seq: 0,
            outstanding: false,
            top: false,
            held: false,
            awake: false,
            dirty: true,
            polling: false,
            published: u64::MAX,
            exit_flags: 0,
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.end.is_none()
    }

    pub(super) fn reset_counters(&mut self) {
        self.nr_failed = 0;
        self.nr_no_substituters = 0;
        self.nr_incomplete_closure = 0;
        self.failed_inputs.clear();
    }
}

/// The goal arena: fixed-size chunks, so it grows without moving (or copying) goals and
/// without a doubling's slack.
#[derive(Debug, Default)]
pub(super) struct Arena {
    chunks: Vec<Vec<Goal>>,
    len: usize,
}

const CHUNK: usize = 1024;

impl Arena {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, goal: Goal) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk").push(goal);
        self.len += 1;
    }

    pub(super) fn get(&self, i: usize) -> Option<&Goal> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }
}

impl std::ops::Index<usize> for Arena {
    type Output = Goal;

    fn index(&self, i: usize) -> &Goal {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Arena {
    fn index_mut(&mut self, i: usize) -> &mut Goal {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl Scheduler {
    pub(super) fn goal(&self, g: GoalId) -> &Goal {
        &self.goals[g.index()]
    }

    pub(super) fn goal_mut(&mut self, g: GoalId) -> &mut Goal {
        &mut self.goals[g.index()]
    }

    pub(super) fn busy(&self, g: GoalId) -> bool {
        self.goal(g).busy()
    }

    pub(super) fn add_goal(&mut self, data: GoalData) -> GoalId {
        let id = GoalId(u32::try_from(self.goals.len()).expect("fewer than 2^32 goals"));
        self.goals.push(Goal::new(data));
        self.busy_goals += 1;
        self.dirty.push(id);
        id
    }

    /// Nix's `wakeUp`.
    pub(super) fn wake(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        if !goal.awake {
            goal.awake = true;
            self.awake.push(g);
        }
        self.mark_dirty(g);
    }

    pub(super) fn mark_dirty(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        if !goal.dirty {
            goal.dirty = true;
            self.dirty.push(g);
        }
    }

    /// Nix's `addWaitee`: `waiter` waits for `waitee`. A waitee that already ended counts at
    /// once (Nix would have made a fresh goal; drover reuses the result, see the module doc of
    /// the scheduler).
    pub(super) fn add_waitee(&mut self, waiter: GoalId, waitee: GoalId) {
        let epoch = self.goal(waiter).epoch;
        if let Some(last) = self.goal(waitee).waiters.last()
            && last.goal == waiter
            && last.epoch == epoch
        {
            return;
        }
        self.emit(EventKind::EdgeAdded { waiter, waitee });
        let slot = self.goal(waiter).waitees.len() as u32;
        let end = self.goal(waitee).end;
        let held = end.is_none();
        let w = self.goal_mut(waitee);
        w.waiters.push(WaiterRef {
            goal: waiter,
            epoch,
            slot,
        });
        if held {
            w.refs += 1;
        }
        let goal = self.goal_mut(waiter);
        goal.waitees.push(WaiteeSlot { goal: waitee, held });
        if held {
            goal.pending += 1;
        }
        if let Some(end) = end {
            self.count_result(waiter, waitee, end.exit);
            if end.exit == Exit::Failed && !self.settings.keep_going {
                self.goal_mut(waiter).stop_waiting = true;
            }
        }
        self.mark_dirty(waiter);
    }

    fn count_result(&mut self, waiter: GoalId, waitee: GoalId, exit: Exit) {
        if let GoalData::Drv(dep) = &self.goal(waitee).data
            && dep.bad_outputs.is_some()
            && let GoalData::Drv(d) = &mut self.goal_mut(waiter).data
        {
            d.check_input_outputs = true;
        }
        let goal = self.goal_mut(waiter);
        if exit != Exit::Success {
            goal.nr_failed += 1;
            goal.failed_inputs.push(waitee);
        }
        match exit {
            Exit::NoSubstituters => goal.nr_no_substituters += 1,
            Exit::IncompleteClosure => goal.nr_incomplete_closure += 1,
            _ => {}
        }
    }

    /// After adding waitees: whether the goal should go on at once (nothing to wait for, or
    /// a waitee had already failed without keep-going). Otherwise it sleeps until woken.
    pub(super) fn done_adding_waitees(&mut self, g: GoalId) -> bool {
        let goal = self.goal(g);
        if goal.pending == 0 || goal.stop_waiting {
            self.goal_mut(g).stop_waiting = false;
            self.release_waitees(g);
            true
        } else {
            self.mark_dirty(g);
            false
        }
    }

    /// Whether `add_waitee` saw a failure that ends the wait early (stop adding more).
    pub(super) fn stopping(&self, g: GoalId) -> bool {
        self.goal(g).stop_waiting
    }

    /// Nix's `waiteeDone`.
    fn waitee_done(&mut self, waiter: GoalId, slot: u32, waitee: GoalId, exit: Exit) {
        let goal = self.goal_mut(waiter);
        goal.waitees[slot as usize].held = false;
        goal.pending -= 1;
        self.count_result(waiter, waitee, exit);
        let goal = self.goal(waiter);
        if goal.pending == 0 || (exit == Exit::Failed && !self.settings.keep_going) {
            self.release_waitees(waiter);
            self.wake(waiter);
        } else {
            self.mark_dirty(waiter);
        }
    }

    /// The busy waiters that counted `g`'s failure and still wait for other waitees (keep-going),
    /// each with the slot `g` has among its current waitees.
    pub(super) fn waiting_after_failure(&self, g: GoalId) -> Vec<WaiterRef> {
        self.goal(g)
            .waiters
            .iter()
            .copied()
            .filter(|w| {
                let waiter = self.goal(w.goal);
                waiter.epoch == w.epoch
                    && waiter.end.is_none()
                    && waiter
                        .waitees
                        .get(w.slot as usize)
                        .is_some_and(|s| !s.held && s.goal == g)
                    && waiter.failed_inputs.contains(&g)
            })
            .collect()
    }

    /// `Retry` reopened `waitee`, whose result (`exit`) the waiter `w` counted: the waiter
    /// forgets it and holds `waitee` again, to wait for the new attempt like any other waitee.
    pub(super) fn wait_again(&mut self, w: WaiterRef, waitee: GoalId, exit: Exit) {
        debug_assert!(self.busy(waitee));
        self.goal_mut(waitee).refs += 1;
        let goal = self.goal_mut(w.goal);
        goal.waitees[w.slot as usize].held = true;
        goal.pending += 1;
        goal.nr_failed -= 1;
        match exit {
            Exit::NoSubstituters => goal.nr_no_substituters -= 1,
            Exit::IncompleteClosure => goal.nr_incomplete_closure -= 1,
            _ => {}
        }
        if let Some(i) = goal.failed_inputs.iter().position(|&f| f == waitee) {
            goal.failed_inputs.swap_remove(i);
        }
        self.mark_dirty(w.goal);
    }

    /// Lets go of every waitee still held; the waiter stops waiting.
    pub(super) fn release_waitees(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        let waitees = std::mem::take(&mut goal.waitees);
        goal.pending = 0;
        goal.epoch = goal.epoch.wrapping_add(1);
        for w in &waitees {
            if w.held {
                self.release(w.goal);
            }
        }
    }

    /// Drops one reference; a busy goal left with none is abandoned.
    pub(super) fn release(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        if goal.end.is_some() {
            return; // a finished goal holds nothing
        }
        goal.refs -= 1;
        if goal.refs == 0 {
            self.abandoned.push(g);
        }
    }

    /// Makes `g` a root: it runs even if no other goal needs it.
    pub(super) fn hold(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        if goal.held {
            return;
        }
        goal.held = true;
        goal.refs += 1;
        if goal.end.is_none() {
            self.busy_held += 1;
        }
        self.held_goals.push(g);
    }

    /// Nix's `topGoals.clear()`: every root lets go (without keep-going, after a top-level
    /// goal failed; after `Drain`).
    pub(super) fn release_all_held(&mut self) {
        let held = std::mem::take(&mut self.held_goals);
        for &g in &held {
            let goal = self.goal_mut(g);
            if !goal.held {
                continue;
            }
            goal.held = false;
            if goal.end.is_none() {
                self.busy_held -= 1;
            }
            self.release(g);
        }
        self.process_abandoned();
    }

    /// Stops every abandoned goal, and what only they needed.
    pub(super) fn process_abandoned(&mut self) {
        while let Some(g) = self.abandoned.pop() {
            let goal = self.goal(g);
            if goal.end.is_some() || goal.refs != 0 {
                continue;
            }
            self.conclude(g, BuildStatus::Cancelled, None, true);
        }
    }

    /// Nix's `done`/`amDone`: the goal ends with `status`; waiters are told; an error message
    /// becomes part of the result.
    pub(super) fn finish(&mut self, g: GoalId, status: BuildStatus, message: Option<String>) {
        self.conclude(g, status, message, false);
        self.process_abandoned();
    }

    fn conclude(
        &mut self,
        g: GoalId,
        status: BuildStatus,
        message: Option<String>,
        abandoned: bool,
    ) {
        debug_assert!(self.busy(g), "goal {g} ends twice");
        self.stop_activity(g);
        let exit = Exit::of(status);
        let flags = self.result_flags(g, status);
        for (bit, count) in self.flag_counts.iter_mut().enumerate() {
            if flags & (1 << bit) != 0 {
                *count += 1;
            }
        }
        let started = self.account_end(g, status);
        let times_built;
        let non_deterministic;
        match &self.goal(g).data {
            GoalData::Drv(d) => {
                times_built = d.times_built;
                non_deterministic = d.non_deterministic;
            }
            GoalData::Subst(_) => {
                times_built = 0;
                non_deterministic = false;
            }
        }
        let now = self.now;
        let goal = self.goal_mut(g);
        goal.end = Some(End {
            status,
            exit,
            reopenable: abandoned,
        });
        goal.exit_flags = flags;
        goal.refs = 0;
        let held = goal.held;
        self.busy_goals -= 1;
        self.emit(EventKind::GoalDone {
            goal: g,
            status,
            message,
            times: GoalTimes {
                started,
                stopped: now,
                times_built,
                non_deterministic,
            },
        });
        // Tell the waiters (the list stays, for Retry).
        let waiters = std::mem::take(&mut self.goal_mut(g).waiters);
        for w in &waiters {
            let waiter = self.goal(w.goal);
            if waiter.epoch == w.epoch
                && waiter.end.is_none()
                && waiter
                    .waitees
                    .get(w.slot as usize)
                    .is_some_and(|s| s.held && s.goal == g)
            {
                self.waitee_done(w.goal, w.slot, g, exit);
            }
        }
        let goal = self.goal_mut(g);
        let mut waiters = waiters;
        waiters.append(&mut goal.waiters);
        goal.waiters = waiters;
        self.release_waitees(g);
        if held {
            self.busy_held -= 1;
            if exit == Exit::Failed && !self.settings.keep_going && !abandoned {
                self.release_all_held();
            }
        }
    }

    /// Makes a finished goal busy again (Retry, or a stopped goal needed again).
    pub(super) fn reopen(&mut self, g: GoalId) {
        debug_assert!(!self.busy(g));
        let flags = self.goal(g).exit_flags;
        for (bit, count) in self.flag_counts.iter_mut().enumerate() {
            if flags & (1 << bit) != 0 {
                *count -= 1;
            }
        }
        let goal = self.goal_mut(g);
        goal.end = None;
        goal.exit_flags = 0;
        goal.reset_counters();
        goal.stop_waiting = false;
        goal.ticket_seq = goal.ticket_seq.wrapping_add(1);
        goal.refs = u32::from(goal.held);
        let held = goal.held;
        match &mut goal.data {
            GoalData::Drv(d) => d.reset(),
            GoalData::Subst(s) => s.reset(),
        }
        self.busy_goals += 1;
        if held {
            self.busy_held += 1;
        }
        self.account_start(g);
        self.emit(EventKind::GoalReopened { goal: g });
        self.goal_mut(g).published = u64::MAX;
        self.wake(g);
    }

    /// When the goal started running, for its `GoalDone` times; updates progress counters.
    fn account_end(&mut self, g: GoalId, status: BuildStatus) -> Option<Time> {
        let p = &mut self.progress;
        match &mut self.goals[g.index()].data {
            GoalData::Drv(d) => {
                p.builds.expected -= 1;
                if status == BuildStatus::Built {
                    p.builds.done += 1;
                } else if !status.success()
                    && status != BuildStatus::DependencyFailed
                    && status != BuildStatus::Cancelled
                {
                    p.builds.failed += 1;
                }
                d.started
            }
            GoalData::Subst(s) => {
                p.substitutions.expected -= 1;
                // Bytes not done yet count as done when it was substituted; otherwise its bytes
                // leave the counters.
                let nar_remaining = s.expected_nar.saturating_sub(s.nar_done);
                let download_remaining = s.expected_download.saturating_sub(s.download_done);
                p.nar.expected -= nar_remaining;
                p.download.expected -= download_remaining;
                if status == BuildStatus::Substituted {
                    p.substitutions.done += 1;
                    p.nar.done += nar_remaining;
                    p.download.done += download_remaining;
                } else {
                    p.nar.done -= s.nar_done;
                    p.download.done -= s.download_done;
                }
                s.expected_nar = 0;
                s.expected_download = 0;
                s.nar_done = 0;
                s.download_done = 0;
                s.started
            }
        }
    }

    pub(super) fn account_start(&mut self, g: GoalId) {
        match &self.goal(g).data {
            GoalData::Drv(_) => self.progress.builds.expected += 1,
            GoalData::Subst(_) => self.progress.substitutions.expected += 1,
        }
    }

    fn result_flags(&self, g: GoalId, status: BuildStatus) -> u8 {
        let mut f = self.goal(g).exit_flags;
        match status {
            BuildStatus::PermanentFailure
            | BuildStatus::InputRejected
            | BuildStatus::CachedFailure => f |= flags::PERMANENT,
            BuildStatus::TimedOut => f |= flags::TIMED_OUT,
            _ => {}
        }
        f
    }

    /// Adds an exit-status bit to the goal's result before it finishes.
    pub(super) fn set_flag(&mut self, g: GoalId, flag: u8) {
        self.goal_mut(g).exit_flags |= flag;
    }

    /// A new ticket for `g`'s next request; older answers become stale.
    pub(super) fn new_ticket(&mut self, g: GoalId) -> super::Ticket {
        self.outstanding += 1;
        let goal = self.goal_mut(g);
        goal.ticket_seq = goal.ticket_seq.wrapping_add(1);
        debug_assert!(!goal.outstanding);
        goal.outstanding = true;
        super::Ticket {
            goal: g,
            seq: goal.ticket_seq,
        }
    }

    /// The answer to the current ticket arrived (or is no longer wanted).
    pub(super) fn ticket_done(&mut self, g: GoalId) {
        let goal = self.goal_mut(g);
        if goal.outstanding {
            goal.outstanding = false;
            goal.ticket_seq = goal.ticket_seq.wrapping_add(1);
            self.outstanding -= 1;
        }
    }

    /// Whether `ticket` is the one its goal waits for.
    pub(super) fn ticket_current(&self, ticket: super::Ticket) -> bool {
        self.goals.get(ticket.goal.index()).is_some_and(|goal| {
            goal.outstanding && goal.ticket_seq == ticket.seq && goal.end.is_none()
        })
    }
}
