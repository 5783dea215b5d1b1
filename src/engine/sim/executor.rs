//! The simulated executor: carries out the scheduler's effects on a virtual clock. Builds
//! take their simulated time, write their log lines and phases, fail or hang as the world
//! says; locks may be held by "another process"; a simulated binary cache answers queries.
//! Time jumps from one scheduled happening to the next, so a day of builds runs in moments.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use crate::engine::api::{BuildMode, GoalId, LockHolder, Time};
use crate::engine::driver::Executor;
use crate::engine::scheduler::{
    BuildOutcome, Effect, ExitStatus, Input, StoreView, SubstituteAnswer, SubstitutionOutcome,
    Ticket,
};

use super::world::{SimStore, World};

const PHASES: [(&str, u64); 4] = [
    ("unpackPhase", 0),
    ("configurePhase", 10),
    ("buildPhase", 30),
    ("installPhase", 90),
];

/// The pid the simulated "other process" holding locks has.
pub const OTHER_PROCESS_PID: u32 = 4242;
/// Latency of a substituter query, virtual milliseconds.
const QUERY_MS: u64 = 20;

/// What the next step of the simulation is.
#[derive(Debug, PartialEq)]
pub enum Next {
    Input(Input),
    /// The deadline came first; the clock is at the deadline now.
    Deadline,
    /// Nothing is scheduled and there is no deadline.
    Idle,
}

#[derive(Debug)]
enum Pending {
    Input(Input),
    /// A build ends: register the output on success, then report.
    BuildDone {
        ticket: Ticket,
        node: u32,
        outcome: BuildOutcome,
    },
    SubstitutionDone {
        ticket: Ticket,
        node: u32,
    },
}

/// A queue entry: when, in which order, and the index of what in the slab.
#[derive(Debug)]
struct Scheduled {
    at: Time,
    seq: u64,
    slot: u32,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Counts of what the simulation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub builds_started: u64,
    pub builds_failed: u64,
    pub substitutions: u64,
    pub lock_busy: u64,
    pub killed: u64,
}

/// Carries out effects on a virtual clock.
pub struct SimExecutor {
    store: SimStore,
    clock: Time,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// What is scheduled, by slot; freed slots are reused.
    slab: Vec<Option<Pending>>,
    free: Vec<u32>,
    seq: u64,
    attempts: Vec<u32>,
    /// Output locks held by goals of this run: node -> goal.
    locks: HashMap<u32, GoalId>,
    goal_locks: HashMap<GoalId, Vec<u32>>,
    cancelled: HashSet<Ticket>,
    next_pid: u32,
    /// Virtual milliseconds per real millisecond when driven in real time (`None`: as fast
    /// as possible).
    speed: Option<f64>,
    pub stats: SimStats,
}

impl SimExecutor {
    pub fn new(world: Arc<World>) -> SimExecutor {
        let n = world.len() as usize;
        let mut store = SimStore::new(world);
        store.preload_plan();
        SimExecutor {
            store,
            clock: Time::ZERO,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
            attempts: vec![0; n],
            locks: HashMap::new(),
            goal_locks: HashMap::new(),
            cancelled: HashSet::new(),
            next_pid: 1000,
            speed: None,
            stats: SimStats::default(),
        }
    }

    /// Plays virtual time `speed` times faster than real time under the driver.
    pub fn with_speed(mut self, speed: Option<f64>) -> SimExecutor {
        self.speed = speed.filter(|s| *s > 0.0);
        self
    }

    pub fn store(&self) -> &SimStore {
        &self.store
    }

    pub fn world(&self) -> &Arc<World> {
        &self.store.world
    }

    pub fn now(&self) -> Time {
        self.clock
    }

    /// When the next scheduled happening is due.
    pub fn next_time(&self) -> Option<Time> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Whether anything is scheduled.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    fn schedule(&mut self, after_ms: u64, what: Pending) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(what);
                slot
            }
            None => {
                self.slab.push(Some(what));
                (self.slab.len() - 1) as u32
            }
        };
        self.queue.push(Reverse(Scheduled {
            at: self.clock.plus_millis(after_ms),
            seq: self.seq,
            slot,
        }));
    }

    /// Carries out one effect; answers that come at once (locks) go to `immediate`.
    pub fn execute(&mut self, effect: Effect, immediate: &mut Vec<Input>) {
        match effect {
            Effect::TryLockOutputs { ticket, paths } => {
                let nodes: Vec<u32> = paths
                    .iter()
                    .filter_map(|p| self.store.world.node_of(p).map(|(n, _)| n))
                    .collect();
                let ours = nodes
                    .iter()
                    .any(|n| self.locks.get(n).is_some_and(|&g| g != ticket.goal));
                let theirs = nodes
                    .iter()
                    .any(|&n| self.clock.as_millis() < self.store.world.spec(n).lock_held_ms);
                if ours || theirs {
                    self.stats.lock_busy += 1;
                    let holder = LockHolder {
                        pid: Some(if theirs { OTHER_PROCESS_PID } else { 1 }),
                        command: Some(if theirs { "nix-build" } else { "drover" }.to_owned()),
                    };
                    immediate.push(Input::LocksBusy {
                        ticket,
                        holder: Some(holder),
                    });
                } else {
                    for &n in &nodes {
                        self.locks.insert(n, ticket.goal);
                    }
                    self.goal_locks
                        .entry(ticket.goal)
                        .or_default()
                        .extend(nodes);
                    immediate.push(Input::LocksAcquired { ticket });
                }
            }
            Effect::UnlockOutputs { goal, .. } => {
                for n in self.goal_locks.remove(&goal).unwrap_or_default() {
                    if self.locks.get(&n) == Some(&goal) {
                        self.locks.remove(&n);
                    }
                }
            }
            Effect::StartBuild { ticket, request } => {
                let Some((node, 0)) = self.store.world.node_of(&request.drv_path) else {
                    immediate.push(Input::BuildFinished {
                        ticket,
                        outcome: BuildOutcome::MiscFailure {
                            message: format!("unknown derivation '{}'", request.drv_path),
                        },
                    });
                    return;
                };
                self.stats.builds_started += 1;
                let spec = self.store.world.spec(node);
                self.attempts[node as usize] += 1;
                let attempt = self.attempts[node as usize];
                let pid = self.next_pid;
                self.next_pid += 1;
                self.schedule(0, Pending::Input(Input::BuildStarted { ticket, pid }));
                if spec.hang {
                    return;
                }
                let d = spec.duration_ms;
                for (phase, pct) in PHASES {
                    let input = Input::BuildPhase {
                        ticket,
                        phase: phase.to_owned(),
                    };
                    self.schedule(d * pct / 100, Pending::Input(input));
                }
                let lines = u64::from(spec.log_lines);
                for k in 0..spec.log_lines {
                    let at = d * (u64::from(k) + 1) / (lines + 1);
                    let input = Input::BuildLog {
                        ticket,
                        line: self.store.world.log_line(node, k),
                    };
                    self.schedule(at, Pending::Input(input));
                }
                let outcome = if spec.fails(attempt) {
                    self.stats.builds_failed += 1;
                    BuildOutcome::BuilderFailed {
                        status: ExitStatus::Code(1),
                        disk_full: false,
                    }
                } else if spec.nondeterministic && request.mode == BuildMode::Check {
                    BuildOutcome::NotDeterministic {
                        message: format!(
                            "derivation '{}' may not be deterministic: output '{}' differs",
                            self.store.store_dir.display(&request.drv_path),
                            self.store
                                .store_dir
                                .display(&self.store.world.out_path(node))
                        ),
                    }
                } else if spec.nondeterministic && request.round > 1 {
                    BuildOutcome::RoundDiffers {
                        message: format!(
                            "output '{}' of '{}' differs from previous round",
                            self.store
                                .store_dir
                                .display(&self.store.world.out_path(node)),
                            self.store.store_dir.display(&request.drv_path)
                        ),
                    }
                } else {
                    BuildOutcome::Success
                };
                let registers = request.round == request.nr_rounds
                    && request.mode != BuildMode::Check
                    && matches!(
                        outcome,
                        BuildOutcome::Success | BuildOutcome::RoundDiffers { .. }
                    );
                let outcome_node = if registers { node } else { u32::MAX };
                self.schedule(
                    d,
                    Pending::BuildDone {
                        ticket,
                        node: outcome_node,
                        outcome,
                    },
                );
            }
            Effect::KillBuild { ticket } | Effect::CancelSubstitution { ticket } => {
                self.stats.killed += 1;
                self.cancelled.insert(ticket);
            }
            Effect::QuerySubstitute { ticket, path, .. } => {
                let answer = match self.store.world.node_of(&path) {
                    Some((node, 1)) if self.store.world.spec(node).cached => {
                        let spec = self.store.world.spec(node);
                        SubstituteAnswer::Found {
                            references: self
                                .store
                                .world
                                .dag
                                .deps(node)
                                .iter()
                                .map(|&d| self.store.world.out_path(d))
                                .collect(),
                            nar_size: spec.nar_size,
                            download_size: Some(spec.nar_size / 3),
                        }
                    }
                    _ => SubstituteAnswer::NotFound,
                };
                self.schedule(
                    QUERY_MS,
                    Pending::Input(Input::SubstituteInfo { ticket, answer }),
                );
            }
            Effect::StartSubstitution { ticket, path, .. } => {
                let Some((node, 1)) = self.store.world.node_of(&path) else {
                    let outcome = SubstitutionOutcome::Failed {
                        message: format!("unknown path '{path}'"),
                    };
                    immediate.push(Input::SubstitutionFinished { ticket, outcome });
                    return;
                };
                self.stats.substitutions += 1;
                // 10 MB/s plus a round trip.
                let ms = self.store.world.spec(node).nar_size / 3 / 10_000 + 100;
                self.schedule(ms, Pending::SubstitutionDone { ticket, node });
            }
            Effect::CacheFailure { .. } | Effect::ClearFailure { .. } => {}
        }
    }

    /// Advances the clock to the next happening (or to `deadline`, if that comes first).
    pub fn next(&mut self, deadline: Option<Time>) -> Next {
        loop {
            let Some(Reverse(head)) = self.queue.peek() else {
                return match deadline {
                    Some(d) => {
                        self.clock = self.clock.max(d);
                        Next::Deadline
                    }
                    None => Next::Idle,
                };
            };
            if let Some(d) = deadline
                && d < head.at
            {
                self.clock = self.clock.max(d);
                return Next::Deadline;
            }
            let Reverse(s) = self.queue.pop().expect("peeked");
            self.clock = self.clock.max(s.at);
            let what = self.slab[s.slot as usize].take().expect("scheduled");
            self.free.push(s.slot);
            let (ticket, input) = match what {
                Pending::Input(input) => (input.ticket(), input),
                Pending::BuildDone {
                    ticket,
                    node,
                    outcome,
                } => {
                    if self.cancelled.contains(&ticket) {
                        continue;
                    }
                    if node != u32::MAX {
                        self.store.set_valid(node);
                    }
                    (Some(ticket), Input::BuildFinished { ticket, outcome })
                }
                Pending::SubstitutionDone { ticket, node } => {
                    if self.cancelled.contains(&ticket) {
                        continue;
                    }
                    self.store.set_valid(node);
                    let outcome = SubstitutionOutcome::Success;
                    (
                        Some(ticket),
                        Input::SubstitutionFinished { ticket, outcome },
                    )
                }
            };
            if ticket.is_some_and(|t| self.cancelled.contains(&t)) {
                continue;
            }
            return Next::Input(input);
        }
    }
}

impl Executor for SimExecutor {
    fn store(&self) -> &dyn StoreView {
        &self.store
    }

    fn now(&self) -> Time {
        self.clock
    }

    fn execute(&mut self, effect: Effect, immediate: &mut Vec<Input>) {
        SimExecutor::execute(self, effect, immediate);
    }

    fn poll_ready(&mut self) -> Option<Input> {
        if self.next_time() != Some(self.clock) {
            return None;
        }
        match self.next(Some(self.clock)) {
            Next::Input(input) => Some(input),
            Next::Deadline | Next::Idle => None,
        }
    }

    fn never_waits(&self, deadline: Option<Time>) -> bool {
        self.speed.is_none() && (deadline.is_some() || self.next_time().is_some())
    }

    async fn next_input(&mut self, deadline: Option<Time>) -> Option<Input> {
        let Some(target) = [self.next_time(), deadline].into_iter().flatten().min() else {
            return std::future::pending().await;
        };
        if let Some(speed) = self.speed {
            let ms = target.millis_since(self.clock) as f64 / speed;
            tokio::time::sleep(std::time::Duration::from_secs_f64(ms / 1000.0)).await;
        }
        match self.next(deadline) {
            Next::Input(input) => Some(input),
            Next::Deadline | Next::Idle => None,
        }
    }
}
