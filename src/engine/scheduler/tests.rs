//! Scenario tests: an in-memory store, a hand-driven "driver", one test per behaviour.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::*;
use crate::engine::api::{LockHolder, RunningDetail, WaitReason};
use crate::engine::format::hash::sha256;

fn path(name: &str) -> StorePath {
    let d = sha256(name.as_bytes());
    let mut digest = [0u8; 20];
    digest.copy_from_slice(&d.digest()[..20]);
    StorePath::from_digest(digest, name).unwrap()
}

fn drv_path(name: &str) -> StorePath {
    path(&format!("{name}.drv"))
}

fn out_path(name: &str) -> StorePath {
    path(name)
}

#[derive(Default)]
struct MemStore {
    drvs: HashMap<StorePath, Arc<DrvInfo>>,
    valid: RefCell<HashSet<StorePath>>,
    failed: HashSet<StorePath>,
    corrupt: HashSet<StorePath>,
    refs: HashMap<StorePath, Vec<StorePath>>,
}

impl MemStore {
    /// A derivation `name` with output `out` and the given input derivations.
    fn add(&mut self, name: &str, inputs: &[&str]) -> StorePath {
        self.add_with(name, inputs, |_| {})
    }

    fn add_with(&mut self, name: &str, inputs: &[&str], f: impl FnOnce(&mut DrvInfo)) -> StorePath {
        let mut info = DrvInfo {
            name: name.into(),
            outputs: vec![("out".into(), Some(out_path(name)))],
            input_drvs: inputs
                .iter()
                .map(|i| (drv_path(i), vec!["out".to_string()]))
                .collect(),
            platform: "x86_64-linux".into(),
            allow_substitutes: true,
            ..DrvInfo::default()
        };
        f(&mut info);
        let p = drv_path(name);
        self.refs.insert(
            p.clone(),
            inputs.iter().map(|i| drv_path(i)).collect::<Vec<_>>(),
        );
        for (_, o) in &info.outputs {
            let o = o.clone().unwrap();
            self.refs
                .insert(o, inputs.iter().map(|i| out_path(i)).collect::<Vec<_>>());
        }
        self.drvs.insert(p.clone(), Arc::new(info));
        self.valid.borrow_mut().insert(p.clone());
        p
    }

    fn make_valid(&self, p: &StorePath) {
        self.valid.borrow_mut().insert(p.clone());
    }
}

impl StoreView for MemStore {
    fn is_valid(&self, path: &StorePath) -> bool {
        self.valid.borrow().contains(path)
    }
    fn load_derivation(&self, drv: &StorePath) -> Result<Arc<DrvInfo>, String> {
        self.drvs
            .get(drv)
            .cloned()
            .ok_or_else(|| format!("cannot read '{drv}'"))
    }
    fn has_cached_failure(&self, path: &StorePath) -> bool {
        self.failed.contains(path)
    }
    fn path_contents_good(&self, path: &StorePath) -> bool {
        !self.corrupt.contains(path)
    }
    fn references(&self, path: &StorePath) -> Vec<StorePath> {
        self.refs.get(path).cloned().unwrap_or_default()
    }
}

/// The test "driver": holds the effects the scheduler asked for and answers them by hand.
struct T {
    s: Scheduler,
    store: MemStore,
    now: Time,
    pending: Vec<Effect>,
    all_effects: Vec<Effect>,
    events: Vec<Event>,
}

fn settings() -> Settings {
    Settings {
        max_jobs: 4,
        ..Settings::default()
    }
}

impl T {
    fn new(store: MemStore, settings: Settings) -> T {
        T {
            s: Scheduler::new(settings),
            store,
            now: Time::ZERO,
            pending: Vec::new(),
            all_effects: Vec::new(),
            events: Vec::new(),
        }
    }

    fn collect(&mut self) {
        let effects = self.s.take_effects();
        self.all_effects.extend(effects.iter().cloned());
        for e in effects {
            if let Effect::KillBuild { ticket } = &e {
                self.pending
                    .retain(|p| !matches!(p, Effect::StartBuild { ticket: t, .. } if t == ticket));
            }
            self.pending.push(e);
        }
        self.s.drain_events(&mut self.events);
    }

    fn start(&mut self, names: &[&str]) {
        self.start_mode(names, BuildMode::Normal);
    }

    fn start_mode(&mut self, names: &[&str], mode: BuildMode) {
        let targets: Vec<Target> = names
            .iter()
            .map(|n| Target::Derivation {
                drv: drv_path(n),
                outputs: vec![],
            })
            .collect();
        self.s.start(&self.store, &targets, mode, self.now);
        self.collect();
    }

    fn input(&mut self, i: Input) {
        self.s.handle(&self.store, i, self.now);
        self.collect();
    }

    fn at(&mut self, ms: u64) {
        self.now = Time(ms);
        self.input(Input::Tick);
    }

    fn command(&mut self, c: Command) {
        self.input(Input::Command(c));
    }

    fn goal(&self, name: &str) -> GoalId {
        self.s.find_goal(&drv_path(name)).expect("goal exists")
    }

    fn status(&self, name: &str) -> Option<BuildStatus> {
        self.s.goal_status(self.goal(name))
    }

    fn reason(&self, name: &str) -> WaitReason {
        match self.s.goal_state(self.goal(name)).unwrap() {
            GoalState::Waiting { reason } => reason,
            other => panic!("{name} is not waiting: {other:?}"),
        }
    }

    /// Removes and returns the pending effects matching `f`.
    fn take(&mut self, f: impl Fn(&Effect) -> bool) -> Vec<Effect> {
        let (hit, rest) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| f(e));
        self.pending = rest;
        hit
    }

    /// Grants every pending lock request; returns how many.
    fn grant_locks(&mut self) -> usize {
        let locks = self.take(|e| matches!(e, Effect::TryLockOutputs { .. }));
        let n = locks.len();
        for e in locks {
            if let Effect::TryLockOutputs { ticket, .. } = e {
                self.input(Input::LocksAcquired { ticket });
            }
        }
        n
    }

    /// Names of the pending builds, in the order they were asked for.
    fn building(&self) -> Vec<String> {
        self.pending
            .iter()
            .filter_map(|e| match e {
                Effect::StartBuild { request, .. } => Some(name_of(request)),
                _ => None,
            })
            .collect()
    }

    fn build_ticket(&self, name: &str) -> (Ticket, Box<BuildRequest>) {
        self.pending
            .iter()
            .find_map(|e| match e {
                Effect::StartBuild { ticket, request } if name_of(request) == name => {
                    Some((*ticket, request.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name} is not building; pending: {:?}", self.building()))
    }

    /// Finishes the build of `name` with `outcome` (registering outputs on success).
    fn finish(&mut self, name: &str, outcome: BuildOutcome) {
        let (ticket, request) = self.build_ticket(name);
        self.pending
            .retain(|e| !matches!(e, Effect::StartBuild { ticket: t, .. } if *t == ticket));
        let last = request.round == request.nr_rounds;
        if outcome == BuildOutcome::Success && last && request.mode != BuildMode::Check {
            for p in &request.outputs {
                self.store.make_valid(p);
            }
        }
        self.input(Input::BuildStarted { ticket, pid: 100 });
        self.input(Input::BuildFinished { ticket, outcome });
    }

    fn succeed(&mut self, name: &str) {
        self.grant_locks();
        self.finish(name, BuildOutcome::Success);
    }

    fn fail(&mut self, name: &str) {
        self.grant_locks();
        self.finish(
            name,
            BuildOutcome::BuilderFailed {
                status: ExitStatus::Code(1),
                disk_full: false,
            },
        );
    }

    fn done_events(&self) -> Vec<(GoalId, BuildStatus, Option<String>)> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::GoalDone {
                    goal,
                    status,
                    message,
                    ..
                } => Some((*goal, *status, message.clone())),
                _ => None,
            })
            .collect()
    }

    fn message_of(&self, name: &str) -> Option<String> {
        let g = self.goal(name);
        self.done_events()
            .into_iter()
            .rev()
            .find(|(id, ..)| *id == g)
            .and_then(|(_, _, m)| m)
    }

    fn run_done(&self) -> Option<u8> {
        self.events.iter().rev().find_map(|e| match e.kind {
            EventKind::RunDone { exit_status } => Some(exit_status),
            _ => None,
        })
    }

    fn killed(&self) -> usize {
        self.all_effects
            .iter()
            .filter(|e| matches!(e, Effect::KillBuild { .. }))
            .count()
    }

    fn messages(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

fn name_of(request: &BuildRequest) -> String {
    request.drv_path.drv_name().unwrap().to_owned()
}

fn full(p: &StorePath) -> String {
    format!("/nix/store/{p}")
}

#[test]
fn a_single_derivation_tries_substitutes_then_builds() {
    let mut store = MemStore::default();
    store.add("hello", &[]);
    let mut t = T::new(store, settings());
    t.start(&["hello"]);
    // The output's substitution goal ended NoSubstituters (no substituters configured).
    let sub = t.s.find_goal(&out_path("hello")).unwrap();
    assert_eq!(t.s.goal_status(sub), Some(BuildStatus::NoSubstituters));
    assert!(matches!(
        t.reason("hello"),
        WaitReason::Lock { holder: None, .. }
    ));
    assert_eq!(t.grant_locks(), 1);
    assert_eq!(t.building(), vec!["hello"]);
    let (ticket, req) = t.build_ticket("hello");
    assert_eq!((req.round, req.nr_rounds, req.slot), (1, 1, 0));
    t.input(Input::BuildStarted { ticket, pid: 4242 });
    assert!(matches!(
        t.s.goal_state(t.goal("hello")),
        Some(GoalState::Running {
            detail: RunningDetail::Build {
                pid: Some(4242),
                ..
            }
        })
    ));
    t.finish("hello", BuildOutcome::Success);
    assert_eq!(t.status("hello"), Some(BuildStatus::Built));
    assert!(t.s.is_finished());
    assert_eq!(t.run_done(), Some(0));
    let unlocks: Vec<_> = t.take(|e| matches!(e, Effect::UnlockOutputs { .. }));
    assert_eq!(
        unlocks,
        vec![Effect::UnlockOutputs {
            goal: t.goal("hello"),
            delete_lock_files: true
        }]
    );
    let p = t.s.progress();
    assert_eq!(
        (p.builds.done, p.builds.expected, p.builds.running),
        (1, 1, 0)
    );
}

#[test]
fn already_valid_outputs_need_nothing() {
    let mut store = MemStore::default();
    store.add("hello", &[]);
    store.make_valid(&out_path("hello"));
    let mut t = T::new(store, settings());
    t.start(&["hello"]);
    assert_eq!(t.status("hello"), Some(BuildStatus::AlreadyValid));
    assert!(t.pending.is_empty());
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_missing_drv_is_substituted_first_and_fails_without_substituters() {
    let mut store = MemStore::default();
    store.add("hello", &[]);
    store.valid.borrow_mut().remove(&drv_path("hello"));
    let mut t = T::new(store, settings());
    t.start(&["hello"]);
    assert_eq!(t.status("hello"), Some(BuildStatus::MiscFailure));
    assert_eq!(
        t.message_of("hello").unwrap(),
        format!(
            "cannot build missing derivation '{}'",
            full(&drv_path("hello"))
        )
    );
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn diamond_builds_the_shared_input_once_in_name_order() {
    let mut store = MemStore::default();
    store.add("d", &[]);
    store.add("c", &["d"]);
    store.add("b", &["d"]);
    store.add("a", &["b", "c"]);
    let mut t = T::new(store, settings());
    t.start(&["a"]);
    t.succeed("d");
    assert_eq!(t.grant_locks(), 2);
    assert_eq!(
        t.building(),
        vec!["b", "c"],
        "b and c run together, b first"
    );
    t.finish("c", BuildOutcome::Success);
    t.finish("b", BuildOutcome::Success);
    t.succeed("a");
    assert_eq!(t.run_done(), Some(0));
    let starts = t
        .all_effects
        .iter()
        .filter(|e| matches!(e, Effect::StartBuild { .. }))
        .count();
    assert_eq!(starts, 4, "d is built once");
    // The DAG is in the events: a waits for b and c.
    let (a, b) = (t.goal("a"), t.goal("b"));
    assert!(t.events.iter().any(|e| e.kind
        == EventKind::EdgeAdded {
            waiter: a,
            waitee: b
        }));
}

#[test]
fn chain_builds_bottom_up_and_waiting_goals_say_for_what() {
    let mut store = MemStore::default();
    store.add("c1", &[]);
    store.add("c2", &["c1"]);
    store.add("c3", &["c2"]);
    let mut t = T::new(store, settings());
    t.start(&["c3"]);
    assert_eq!(
        t.reason("c3"),
        WaitReason::Inputs {
            pending: 1,
            stage: InputStage::Inputs
        }
    );
    for n in ["c1", "c2", "c3"] {
        t.succeed(n);
    }
    assert_eq!(t.status("c3"), Some(BuildStatus::Built));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_failure_without_keep_going_stops_everything() {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.add("slow", &[]);
    store.add("top", &["bad", "slow"]);
    store.add("other", &[]);
    let mut t = T::new(store, settings());
    t.start(&["top", "other"]);
    t.grant_locks();
    // `other` is ready a batch earlier than the inputs of `top` (as in Nix).
    assert_eq!(t.building(), vec!["other", "bad", "slow"]);
    t.fail("bad");
    assert_eq!(t.status("bad"), Some(BuildStatus::PermanentFailure));
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    assert_eq!(
        t.message_of("top").unwrap(),
        format!(
            "1 dependencies of derivation '{}' failed to build",
            full(&drv_path("top"))
        )
    );
    // slow and other were killed: nothing needs them any more.
    assert_eq!(t.status("slow"), Some(BuildStatus::Cancelled));
    assert_eq!(t.status("other"), Some(BuildStatus::Cancelled));
    assert_eq!(t.killed(), 2);
    assert_eq!(t.run_done(), Some(100));
    assert!(t.message_of("bad").unwrap().starts_with(&format!(
        "builder for '{}' failed with exit code 1",
        full(&drv_path("bad"))
    )));
}

#[test]
fn keep_going_builds_everything_that_can_be_built() {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.add("good", &[]);
    store.add("top", &["bad", "good"]);
    store.add("other", &["good"]);
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["top", "other"]);
    t.fail("bad");
    assert_eq!(t.status("top"), None, "top still waits for good");
    t.succeed("good");
    t.succeed("other");
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    assert_eq!(t.status("other"), Some(BuildStatus::Built));
    assert_eq!(t.killed(), 0);
    assert_eq!(t.run_done(), Some(100));
}

#[test]
fn the_failure_log_tail_is_in_the_message() {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    let mut t = T::new(
        store,
        Settings {
            log_lines: 2,
            ..settings()
        },
    );
    t.start(&["bad"]);
    t.grant_locks();
    let (ticket, _) = t.build_ticket("bad");
    for l in ["one", "two", "three"] {
        t.input(Input::BuildLog {
            ticket,
            line: l.into(),
        });
    }
    t.finish(
        "bad",
        BuildOutcome::BuilderFailed {
            status: ExitStatus::Signal(9),
            disk_full: false,
        },
    );
    let drv = full(&drv_path("bad"));
    assert_eq!(
        t.message_of("bad").unwrap(),
        format!(
            "builder for '{drv}' failed due to signal 9 (Killed);\nlast 2 log lines:\n> two\n> \
             three\nFor full logs, run 'nix log {drv}'."
        )
    );
}

#[test]
fn fixed_output_and_disk_full_failures_are_transient() {
    let mut store = MemStore::default();
    store.add_with("fetch", &[], |d| d.fixed_output = true);
    let mut t = T::new(store, settings());
    t.start(&["fetch"]);
    t.fail("fetch");
    assert_eq!(t.status("fetch"), Some(BuildStatus::TransientFailure));
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn cancel_mid_build_kills_and_fails_the_waiters() {
    let mut store = MemStore::default();
    store.add("dep", &[]);
    store.add("top", &["dep"]);
    let mut t = T::new(store, settings());
    t.start(&["top"]);
    t.grant_locks();
    let (ticket, _) = t.build_ticket("dep");
    t.input(Input::BuildStarted { ticket, pid: 7 });
    let dep = t.goal("dep");
    t.command(Command::Cancel { goal: dep });
    assert!(t.pending.contains(&Effect::KillBuild { ticket }));
    assert!(t.pending.contains(&Effect::UnlockOutputs {
        goal: dep,
        delete_lock_files: false
    }));
    assert_eq!(t.status("dep"), Some(BuildStatus::Cancelled));
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    assert_eq!(t.s.slots_in_use(), 0);
    // The killed builder's late answer is ignored.
    t.input(Input::BuildFinished {
        ticket,
        outcome: BuildOutcome::BuilderFailed {
            status: ExitStatus::Signal(9),
            disk_full: false,
        },
    });
    assert_eq!(t.status("dep"), Some(BuildStatus::Cancelled));
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn cancel_all_ends_the_run() {
    let mut store = MemStore::default();
    store.add("a", &[]);
    store.add("b", &[]);
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["a", "b"]);
    t.grant_locks();
    t.command(Command::CancelAll);
    assert_eq!(t.status("a"), Some(BuildStatus::Cancelled));
    assert_eq!(t.status("b"), Some(BuildStatus::Cancelled));
    assert_eq!(t.killed(), 2);
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn retry_after_failure_rebuilds_it_and_what_failed_because_of_it() {
    let mut store = MemStore::default();
    store.add("dep", &[]);
    store.add("mid", &["dep"]);
    store.add("top", &["mid"]);
    store.add("other", &[]);
    let mut t = T::new(store, settings());
    t.start(&["top", "other"]);
    t.fail("dep");
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    assert_eq!(t.status("other"), Some(BuildStatus::Cancelled));
    assert_eq!(t.run_done(), Some(100));
    let dep = t.goal("dep");
    t.command(Command::Retry { goal: dep });
    assert!(!t.s.is_finished());
    for g in [t.goal("dep"), t.goal("mid"), t.goal("top"), t.goal("other")] {
        assert!(
            t.events
                .iter()
                .any(|e| e.kind == EventKind::GoalReopened { goal: g })
        );
    }
    t.grant_locks();
    assert_eq!(t.building(), vec!["dep", "other"]);
    t.finish("dep", BuildOutcome::Success);
    t.finish("other", BuildOutcome::Success);
    t.succeed("mid");
    t.succeed("top");
    assert_eq!(t.status("top"), Some(BuildStatus::Built));
    assert_eq!(
        t.run_done(),
        Some(0),
        "the flags of the first failure are gone"
    );
}

#[test]
fn a_failed_derivation_is_not_built_twice() {
    // Without keep-going nothing would request it again; with it, two waiters reach it at
    // different times.
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.add("x", &["bad"]);
    store.add("late", &[]);
    store.add("y", &["late", "bad"]);
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["x", "y"]);
    t.fail("bad");
    t.succeed("late");
    assert_eq!(t.status("y"), Some(BuildStatus::DependencyFailed));
    let starts = t
        .all_effects
        .iter()
        .filter(|e| matches!(e, Effect::StartBuild { request, .. } if name_of(request) == "bad"))
        .count();
    assert_eq!(starts, 1);
}

/// keep-going: `top` waits for `bad` (failed) and `slow` (still building).
fn waiting_dependent() -> T {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.add("slow", &[]);
    store.add("top", &["bad", "slow"]);
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["top"]);
    t.fail("bad");
    assert_eq!(t.status("top"), None, "top still waits for slow");
    assert_eq!(t.building(), vec!["slow"]);
    t
}

impl T {
    fn reopened(&self, name: &str) -> bool {
        let g = self.goal(name);
        self.events
            .iter()
            .any(|e| e.kind == EventKind::GoalReopened { goal: g })
    }

    fn ends(&self, name: &str) -> usize {
        let g = self.goal(name);
        self.done_events()
            .iter()
            .filter(|(id, ..)| *id == g)
            .count()
    }
}

#[test]
fn a_retried_input_is_waited_for_again_by_a_dependent_still_waiting() {
    let mut t = waiting_dependent();
    t.command(Command::Retry {
        goal: t.goal("bad"),
    });
    assert_eq!(
        t.reason("top"),
        WaitReason::Inputs {
            pending: 2,
            stage: InputStage::Inputs
        },
        "top waits for the retried attempt and for slow"
    );
    t.succeed("bad");
    assert_eq!(t.status("top"), None, "top still waits for slow");
    t.succeed("slow");
    t.succeed("top");
    assert_eq!(t.status("top"), Some(BuildStatus::Built));
    assert_eq!(t.ends("top"), 1, "top never failed");
    assert!(!t.reopened("top"));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_retried_input_that_finishes_last_lets_the_dependent_build() {
    let mut t = waiting_dependent();
    t.command(Command::Retry {
        goal: t.goal("bad"),
    });
    t.succeed("slow");
    assert_eq!(t.status("top"), None, "top waits for the retried bad");
    t.succeed("bad");
    t.succeed("top");
    assert_eq!(t.status("top"), Some(BuildStatus::Built));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_retry_that_fails_again_fails_the_dependent_once_its_inputs_are_done() {
    let mut t = waiting_dependent();
    t.command(Command::Retry {
        goal: t.goal("bad"),
    });
    t.fail("bad");
    assert_eq!(t.status("bad"), Some(BuildStatus::PermanentFailure));
    assert_eq!(t.status("top"), None, "top still waits for slow");
    t.succeed("slow");
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    assert_eq!(
        t.message_of("top").unwrap(),
        format!(
            "1 dependencies of derivation '{}' failed to build",
            full(&drv_path("top"))
        ),
        "the first failure is not counted twice"
    );
    assert_eq!(t.run_done(), Some(100));
}

#[test]
fn cancelling_the_retried_attempt_fails_the_dependent() {
    let mut t = waiting_dependent();
    let bad = t.goal("bad");
    t.command(Command::Retry { goal: bad });
    t.grant_locks();
    t.command(Command::Cancel { goal: bad });
    assert_eq!(t.status("bad"), Some(BuildStatus::Cancelled));
    assert_eq!(t.status("top"), None, "top still waits for slow");
    t.succeed("slow");
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    // Only a cancellation failed: no bit of Nix's is set.
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn a_retry_reaches_a_waiting_dependent_through_a_dependency_failure() {
    // mid failed because of bad; top counted mid's failure and waits for slow.
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.add("mid", &["bad"]);
    store.add("slow", &[]);
    store.add("top", &["mid", "slow"]);
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["top"]);
    t.fail("bad");
    assert_eq!(t.status("mid"), Some(BuildStatus::DependencyFailed));
    assert_eq!(t.status("top"), None);
    t.command(Command::Retry {
        goal: t.goal("bad"),
    });
    assert!(t.reopened("mid"));
    t.succeed("bad");
    t.succeed("mid");
    t.succeed("slow");
    t.succeed("top");
    assert_eq!(t.status("top"), Some(BuildStatus::Built));
    assert_eq!(t.ends("top"), 1);
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_retry_after_the_dependent_failed_still_reopens_it() {
    let mut t = waiting_dependent();
    t.succeed("slow");
    assert_eq!(t.status("top"), Some(BuildStatus::DependencyFailed));
    assert_eq!(t.run_done(), Some(100));
    t.command(Command::Retry {
        goal: t.goal("bad"),
    });
    assert!(t.reopened("top"));
    t.succeed("bad");
    t.succeed("top");
    assert_eq!(t.status("top"), Some(BuildStatus::Built));
    assert_eq!(t.run_done(), Some(0));
}
#[test]
fn a_lock_held_by_another_process_is_polled_and_someone_beat_us() {
    let mut store = MemStore::default();
    store.add("hello", &[]);
    let mut t = T::new(store, settings());
    t.start(&["hello"]);
    let locks = t.take(|e| matches!(e, Effect::TryLockOutputs { .. }));
    let Effect::TryLockOutputs { ticket, paths } = &locks[0] else {
        unreachable!()
    };
    assert_eq!(paths, &vec![out_path("hello")]);
    let holder = LockHolder {
        pid: Some(42),
        command: Some("nix-build".into()),
    };
    t.input(Input::LocksBusy {
        ticket: *ticket,
        holder: Some(holder.clone()),
    });
    assert_eq!(
        t.reason("hello"),
        WaitReason::Lock {
            paths: vec![full(&out_path("hello"))],
            holder: Some(holder),
            retry_at: Some(Time(5000)),
        }
    );
    assert_eq!(t.s.slots_in_use(), 0, "a poller holds no slot");
    assert!(t.messages().contains(&format!(
        "waiting for lock on '{}'",
        full(&out_path("hello"))
    )));
    assert_eq!(t.s.next_deadline(), Some(Time(5000)));
    t.at(4999);
    assert!(t.pending.is_empty());
    // The other process finishes the build meanwhile.
    t.store.make_valid(&out_path("hello"));
    t.at(5000);
    t.grant_locks();
    assert_eq!(t.status("hello"), Some(BuildStatus::AlreadyValid));
    assert!(t.pending.contains(&Effect::UnlockOutputs {
        goal: t.goal("hello"),
        delete_lock_files: true
    }));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn slot_starvation_waits_in_name_order() {
    let mut store = MemStore::default();
    for n in ["p3", "p1", "p2"] {
        store.add(n, &[]);
    }
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 1,
            ..settings()
        },
    );
    t.start(&["p3", "p1", "p2"]);
    t.grant_locks();
    assert_eq!(t.building(), vec!["p1"]);
    assert_eq!(t.reason("p2"), WaitReason::BuildSlot);
    t.finish("p1", BuildOutcome::Success);
    t.grant_locks();
    assert_eq!(t.building(), vec!["p2"]);
    t.finish("p2", BuildOutcome::Success);
    t.succeed("p3");
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn set_max_jobs_wakes_waiting_goals_at_once() {
    let mut store = MemStore::default();
    for n in ["p1", "p2", "p3"] {
        store.add(n, &[]);
    }
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 1,
            ..settings()
        },
    );
    t.start(&["p1", "p2", "p3"]);
    t.grant_locks();
    assert_eq!(t.building().len(), 1);
    t.command(Command::SetMaxJobs { max_jobs: 3 });
    t.grant_locks();
    assert_eq!(t.building(), vec!["p1", "p2", "p3"]);
}

#[test]
fn silence_timeout_kills_the_build_and_sets_bit_1() {
    let mut store = MemStore::default();
    store.add("quiet", &[]);
    let mut t = T::new(
        store,
        Settings {
            max_silent_time_ms: 10_000,
            ..settings()
        },
    );
    t.start(&["quiet"]);
    t.grant_locks();
    let (ticket, _) = t.build_ticket("quiet");
    t.input(Input::BuildStarted { ticket, pid: 1 });
    t.now = Time(3000);
    t.input(Input::BuildLog {
        ticket,
        line: "hi".into(),
    });
    assert_eq!(t.s.next_deadline(), Some(Time(13_000)));
    t.at(12_999);
    assert_eq!(t.status("quiet"), None);
    t.at(13_000);
    assert_eq!(t.status("quiet"), Some(BuildStatus::TimedOut));
    assert!(t.pending.contains(&Effect::KillBuild { ticket }));
    assert_eq!(
        t.message_of("quiet").unwrap(),
        format!(
            "building of '{}' timed out after 10 seconds of silence",
            full(&drv_path("quiet"))
        )
    );
    assert_eq!(t.run_done(), Some(101));
}

#[test]
fn build_timeout_and_the_poll_interval_combine_with_min() {
    let mut store = MemStore::default();
    store.add("long", &[]);
    store.add("locked", &[]);
    let mut t = T::new(
        store,
        Settings {
            build_timeout_ms: 2000,
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["long", "locked"]);
    let locks = t.take(|e| matches!(e, Effect::TryLockOutputs { .. }));
    for e in locks {
        let Effect::TryLockOutputs { ticket, paths } = e else {
            unreachable!()
        };
        if paths == vec![out_path("locked")] {
            t.input(Input::LocksBusy {
                ticket,
                holder: None,
            });
        } else {
            t.input(Input::LocksAcquired { ticket });
        }
    }
    // The poll is due at 5 s, the build's timeout at 2 s: the scheduler wakes at 2 s (Nix
    // would sleep the whole poll interval).
    assert_eq!(t.s.next_deadline(), Some(Time(2000)));
    t.at(2000);
    assert_eq!(t.status("long"), Some(BuildStatus::TimedOut));
    assert_eq!(
        t.message_of("long").unwrap(),
        format!(
            "building of '{}' timed out after 2 seconds",
            full(&drv_path("long"))
        )
    );
    assert_eq!(t.s.next_deadline(), Some(Time(5000)));
}

#[test]
fn check_mode_rebuilds_valid_outputs_and_flags_differences() {
    let mut store = MemStore::default();
    store.add("same", &[]);
    store.add("differs", &[]);
    store.make_valid(&out_path("same"));
    store.make_valid(&out_path("differs"));
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start_mode(&["same", "differs"], BuildMode::Check);
    t.grant_locks();
    assert_eq!(t.building(), vec!["differs", "same"]);
    assert_eq!(t.build_ticket("same").1.mode, BuildMode::Check);
    t.finish("same", BuildOutcome::Success);
    t.finish(
        "differs",
        BuildOutcome::NotDeterministic {
            message: "derivation 'x' may not be deterministic: output 'y' differs".into(),
        },
    );
    assert_eq!(t.status("same"), Some(BuildStatus::Built));
    assert_eq!(t.status("differs"), Some(BuildStatus::NotDeterministic));
    assert_eq!(t.run_done(), Some(104));
}

#[test]
fn check_mode_needs_valid_outputs() {
    let mut store = MemStore::default();
    store.add("new", &[]);
    let mut t = T::new(store, settings());
    t.start_mode(&["new"], BuildMode::Check);
    assert_eq!(t.status("new"), Some(BuildStatus::MiscFailure));
    assert_eq!(
        t.message_of("new").unwrap(),
        format!(
            "some outputs of '{}' are not valid, so checking is not possible",
            full(&drv_path("new"))
        )
    );
}

#[test]
fn repair_rebuilds_a_corrupt_output_and_repairs_the_closure() {
    let mut store = MemStore::default();
    store.add("lib", &[]);
    store.add("app", &["lib"]);
    for n in ["lib", "app"] {
        store.make_valid(&out_path(n));
    }
    store.corrupt.insert(out_path("lib"));
    let mut t = T::new(store, settings());
    t.start_mode(&["app"], BuildMode::Repair);
    // app's own output is fine; lib, in its closure, is corrupt and gets a repair build.
    assert!(t.messages().contains(&format!(
        "found corrupted or missing path '{}' in the output closure of '{}'",
        full(&out_path("lib")),
        full(&drv_path("app"))
    )));
    t.grant_locks();
    assert_eq!(t.building(), vec!["lib"]);
    assert_eq!(t.build_ticket("lib").1.mode, BuildMode::Repair);
    t.finish("lib", BuildOutcome::Success);
    assert_eq!(t.status("app"), Some(BuildStatus::AlreadyValid));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn max_jobs_zero_fails_builds_but_runs_a_local_only_one_alone() {
    let mut store = MemStore::default();
    store.add("remote", &[]);
    store.add_with("local", &[], |d| d.prefer_local_build = true);
    store.add_with("local2", &[], |d| d.prefer_local_build = true);
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 0,
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["remote", "local", "local2"]);
    t.grant_locks();
    assert_eq!(
        t.building(),
        vec!["local"],
        "one local-only build when nothing runs"
    );
    t.finish("local", BuildOutcome::Success);
    t.succeed("local2");
    assert_eq!(t.status("remote"), Some(BuildStatus::MiscFailure));
    assert!(
        t.message_of("remote")
            .unwrap()
            .starts_with("unable to start any build; either increase '--max-jobs'")
    );
    assert_eq!(t.status("local2"), Some(BuildStatus::Built));
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn repeat_builds_rounds_and_differing_rounds_fail_when_enforced() {
    let mut store = MemStore::default();
    store.add("r", &[]);
    store.add_with("fod", &[], |d| d.fixed_output = true);
    let mut t = T::new(
        store,
        Settings {
            build_repeat: 1,
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["r", "fod"]);
    t.grant_locks();
    assert_eq!(
        t.build_ticket("fod").1.nr_rounds,
        1,
        "fixed-output: one round"
    );
    t.finish("fod", BuildOutcome::Success);
    assert_eq!(t.build_ticket("r").1.round, 1);
    t.finish("r", BuildOutcome::Success);
    t.grant_locks();
    assert_eq!(t.build_ticket("r").1.round, 2);
    t.finish(
        "r",
        BuildOutcome::RoundDiffers {
            message: "output differs from previous round".into(),
        },
    );
    assert_eq!(t.status("r"), Some(BuildStatus::NotDeterministic));
    assert_eq!(
        t.run_done(),
        Some(1),
        "a round difference is not a --check mismatch"
    );
}

#[test]
fn differing_rounds_without_enforcement_log_and_stop_early() {
    let mut store = MemStore::default();
    store.add("r", &[]);
    let mut t = T::new(
        store,
        Settings {
            build_repeat: 2,
            enforce_determinism: false,
            ..settings()
        },
    );
    t.start(&["r"]);
    t.succeed("r");
    t.grant_locks();
    t.finish(
        "r",
        BuildOutcome::RoundDiffers {
            message: "output differs from previous round".into(),
        },
    );
    assert_eq!(t.status("r"), Some(BuildStatus::Built));
    assert!(
        t.messages()
            .contains(&"output differs from previous round".to_string())
    );
    let r = t.goal("r");
    let goal_times = t.events.iter().find_map(|e| match &e.kind {
        EventKind::GoalDone { goal, times, .. } if *goal == r => Some(times.clone()),
        _ => None,
    });
    let times = goal_times.unwrap();
    assert_eq!((times.times_built, times.non_deterministic), (2, true));
}

#[test]
fn the_log_limit_kills_the_build() {
    let mut store = MemStore::default();
    store.add("chatty", &[]);
    let mut t = T::new(
        store,
        Settings {
            max_log_size: 10,
            ..settings()
        },
    );
    t.start(&["chatty"]);
    t.grant_locks();
    let (ticket, _) = t.build_ticket("chatty");
    t.input(Input::BuildLog {
        ticket,
        line: "0123456789".into(),
    });
    assert_eq!(t.status("chatty"), Some(BuildStatus::LogLimitExceeded));
    assert_eq!(
        t.message_of("chatty").unwrap(),
        format!(
            "building of '{}' killed after writing more than 10 bytes of log output",
            full(&drv_path("chatty"))
        )
    );
    assert!(t.pending.contains(&Effect::KillBuild { ticket }));
}

#[test]
fn input_rejected_and_hash_mismatch_set_their_bits() {
    let mut store = MemStore::default();
    store.add("rejected", &[]);
    store.add("fod", &[]);
    let mut t = T::new(
        store,
        Settings {
            keep_going: true,
            ..settings()
        },
    );
    t.start(&["rejected", "fod"]);
    t.grant_locks();
    t.finish(
        "rejected",
        BuildOutcome::InputRejected {
            message: "a 'aarch64-linux' is required".into(),
        },
    );
    t.finish(
        "fod",
        BuildOutcome::OutputRejected {
            message: "hash mismatch in fixed-output derivation".into(),
            hash_mismatch: true,
        },
    );
    assert_eq!(t.status("rejected"), Some(BuildStatus::InputRejected));
    assert_eq!(t.status("fod"), Some(BuildStatus::OutputRejected));
    assert_eq!(t.run_done(), Some(0x60 | 0x04 | 0x02));
}

#[test]
fn no_free_build_user_gives_back_locks_and_slot_and_polls() {
    let mut store = MemStore::default();
    store.add("u", &[]);
    let mut t = T::new(store, settings());
    t.start(&["u"]);
    t.grant_locks();
    let (ticket, _) = t.build_ticket("u");
    t.pending.clear();
    t.input(Input::NoBuildUser { ticket });
    assert_eq!(
        t.reason("u"),
        WaitReason::BuildUser {
            retry_at: Time(5000)
        }
    );
    assert_eq!(t.s.slots_in_use(), 0);
    assert_eq!(
        t.take(|e| matches!(e, Effect::UnlockOutputs { .. })).len(),
        1
    );
    t.at(5000);
    t.succeed("u");
    assert_eq!(t.status("u"), Some(BuildStatus::Built));
}

#[test]
fn cached_failures_fail_at_once_and_retry_clears_them() {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.failed.insert(out_path("bad"));
    let mut t = T::new(
        store,
        Settings {
            cache_failures: true,
            ..settings()
        },
    );
    t.start(&["bad"]);
    assert_eq!(t.status("bad"), Some(BuildStatus::CachedFailure));
    assert_eq!(
        t.message_of("bad").unwrap(),
        format!(
            "builder for '{}' failed previously (cached)",
            full(&out_path("bad"))
        )
    );
    assert_eq!(t.run_done(), Some(100));
    t.command(Command::Retry {
        goal: t.goal("bad"),
    });
    assert!(t.pending.contains(&Effect::ClearFailure {
        outputs: vec![out_path("bad")]
    }));
    t.succeed("bad");
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_build_failure_is_cached_when_failures_are_cached() {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    let mut t = T::new(
        store,
        Settings {
            cache_failures: true,
            ..settings()
        },
    );
    t.start(&["bad"]);
    t.fail("bad");
    assert!(t.pending.contains(&Effect::CacheFailure {
        drv: drv_path("bad"),
        outputs: vec![out_path("bad")]
    }));
}

#[test]
fn drain_lets_running_builds_finish_and_starts_nothing() {
    let mut store = MemStore::default();
    store.add("a", &[]);
    store.add("b", &["a"]);
    store.add("c", &[]);
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 1,
            ..settings()
        },
    );
    t.start(&["b", "c"]);
    t.grant_locks();
    // c is ready first (b still has to create a), so it takes the only slot.
    assert_eq!(t.building(), vec!["c"]);
    t.command(Command::Drain);
    assert_eq!(t.reason("a"), WaitReason::Paused);
    t.finish("c", BuildOutcome::Success);
    assert!(
        t.pending
            .iter()
            .all(|e| !matches!(e, Effect::TryLockOutputs { .. }))
    );
    assert_eq!(t.status("c"), Some(BuildStatus::Built));
    assert_eq!(t.status("a"), Some(BuildStatus::Cancelled));
    assert_eq!(t.status("b"), Some(BuildStatus::Cancelled));
    assert_eq!(t.run_done(), Some(1));
}

#[test]
fn pause_holds_new_starts_until_resume() {
    let mut store = MemStore::default();
    store.add("a", &[]);
    store.add("b", &[]);
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 1,
            ..settings()
        },
    );
    t.start(&["a", "b"]);
    t.command(Command::Pause);
    t.succeed("a");
    assert!(t.building().is_empty());
    assert_eq!(t.grant_locks(), 0);
    assert_eq!(t.reason("b"), WaitReason::Paused);
    assert!(!t.s.is_finished());
    t.command(Command::Resume);
    t.succeed("b");
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn set_keep_going_takes_effect_for_the_next_failure() {
    let mut store = MemStore::default();
    store.add("bad", &[]);
    store.add("good", &[]);
    let mut t = T::new(store, settings());
    t.start(&["bad", "good"]);
    t.command(Command::SetKeepGoing { keep_going: true });
    t.fail("bad");
    assert_eq!(t.status("good"), None, "good keeps going");
    t.succeed("good");
    assert_eq!(t.run_done(), Some(100));
}

// --- substitution ---------------------------------------------------------------------------

fn subst_settings() -> Settings {
    Settings {
        substituters: vec!["https://cache.example.org".into()],
        ..settings()
    }
}

impl T {
    /// Answers every pending substituter query with `f(path)`.
    fn answer_queries(&mut self, f: impl Fn(&StorePath) -> SubstituteAnswer) {
        loop {
            let queries = self.take(|e| matches!(e, Effect::QuerySubstitute { .. }));
            if queries.is_empty() {
                return;
            }
            for e in queries {
                let Effect::QuerySubstitute { ticket, path, .. } = e else {
                    unreachable!()
                };
                let answer = f(&path);
                self.input(Input::SubstituteInfo { ticket, answer });
            }
        }
    }

    /// Completes every pending substitution with `outcome` (valid on success).
    fn finish_substitutions(&mut self, outcome: SubstitutionOutcome) {
        loop {
            let subs = self.take(|e| matches!(e, Effect::StartSubstitution { .. }));
            if subs.is_empty() {
                return;
            }
            for e in subs {
                let Effect::StartSubstitution { ticket, path, .. } = e else {
                    unreachable!()
                };
                if outcome == SubstitutionOutcome::Success {
                    self.store.make_valid(&path);
                }
                self.input(Input::SubstitutionFinished {
                    ticket,
                    outcome: outcome.clone(),
                });
            }
        }
    }
}

fn found(refs: Vec<StorePath>) -> SubstituteAnswer {
    SubstituteAnswer::Found {
        references: refs,
        nar_size: 1000,
        download_size: Some(300),
    }
}

#[test]
fn outputs_are_substituted_with_their_references_first() {
    let mut store = MemStore::default();
    store.add("lib", &[]);
    store.add("app", &["lib"]);
    let mut t = T::new(store, subst_settings());
    t.start(&["app"]);
    t.answer_queries(|p| {
        if *p == out_path("app") {
            found(vec![out_path("lib"), out_path("app")])
        } else {
            found(vec![])
        }
    });
    t.finish_substitutions(SubstitutionOutcome::Success);
    assert_eq!(t.status("app"), Some(BuildStatus::Substituted));
    assert!(t.building().is_empty());
    let p = t.s.progress();
    assert_eq!(
        (p.substitutions.done, p.nar.done, p.download.done),
        (2, 2000, 600)
    );
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn an_incomplete_closure_builds_the_inputs_then_substitutes_again() {
    let mut store = MemStore::default();
    store.add("lib", &[]);
    store.add("app", &["lib"]);
    let mut t = T::new(store, subst_settings());
    t.start(&["app"]);
    // The cache has app but not lib.
    t.answer_queries(|p| {
        if *p == out_path("app") {
            found(vec![out_path("lib")])
        } else {
            SubstituteAnswer::NotFound
        }
    });
    let app_sub = t.s.find_goal(&out_path("app")).unwrap();
    assert_eq!(
        t.s.goal_status(app_sub),
        Some(BuildStatus::IncompleteClosure)
    );
    t.succeed("lib");
    // app is substituted after all, not built.
    t.answer_queries(|_| found(vec![out_path("lib")]));
    t.finish_substitutions(SubstitutionOutcome::Success);
    assert_eq!(t.status("app"), Some(BuildStatus::Substituted));
    assert_eq!(t.run_done(), Some(0));
}

impl T {
    /// The paths the substituters were asked about so far.
    fn queried(&self) -> Vec<StorePath> {
        self.all_effects
            .iter()
            .filter_map(|e| match e {
                Effect::QuerySubstitute { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn allow_substitutes_false_builds_the_derivation_but_substitutes_its_inputs() {
    let mut store = MemStore::default();
    store.add("lib", &[]);
    store.add_with("app", &["lib"], |d| d.allow_substitutes = false);
    let mut t = T::new(store, subst_settings());
    t.start(&["app"]);
    // Every path is in the cache; app's output is never asked about (Nix 2.8's
    // haveDerivation), lib's is.
    t.answer_queries(|p| found(vec![p.clone()]));
    assert_eq!(t.queried(), [out_path("lib")]);
    t.finish_substitutions(SubstitutionOutcome::Success);
    assert_eq!(t.status("lib"), Some(BuildStatus::Substituted));
    t.succeed("app");
    assert_eq!(t.status("app"), Some(BuildStatus::Built));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn an_output_of_a_derivation_allowing_no_substitutes_comes_as_a_reference() {
    let mut store = MemStore::default();
    store.add_with("lib", &[], |d| d.allow_substitutes = false);
    // preferLocalBuild only keeps a build off remote builders in Nix 2.8: app, which says
    // it, is substituted like any other derivation.
    store.add_with("app", &["lib"], |d| d.prefer_local_build = true);
    let mut t = T::new(store, subst_settings());
    t.start(&["app"]);
    t.answer_queries(|p| {
        if *p == out_path("app") {
            found(vec![out_path("lib"), out_path("app")])
        } else {
            found(vec![])
        }
    });
    assert_eq!(t.queried(), [out_path("app"), out_path("lib")]);
    t.finish_substitutions(SubstitutionOutcome::Success);
    assert!(t.building().is_empty());
    assert_eq!(t.status("app"), Some(BuildStatus::Substituted));
    assert!(t.store.is_valid(&out_path("lib")));
    assert!(
        t.s.find_goal(&drv_path("lib")).is_none(),
        "lib's derivation is never looked at"
    );
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_failed_substitute_needs_fallback_to_build() {
    for fallback in [false, true] {
        let mut store = MemStore::default();
        store.add("app", &[]);
        let mut t = T::new(
            store,
            Settings {
                try_fallback: fallback,
                ..subst_settings()
            },
        );
        t.start(&["app"]);
        t.answer_queries(|_| found(vec![]));
        t.finish_substitutions(SubstitutionOutcome::Failed {
            message: "download failed".into(),
        });
        if fallback {
            t.succeed("app");
            assert_eq!(t.status("app"), Some(BuildStatus::Built));
        } else {
            assert_eq!(t.status("app"), Some(BuildStatus::TransientFailure));
            assert_eq!(
                t.message_of("app").unwrap(),
                format!(
                    "some substitutes for the outputs of derivation '{}' failed (usually \
                     happens due to networking issues); try '--fallback' to build derivation \
                     from source ",
                    full(&drv_path("app"))
                )
            );
        }
    }
}

#[test]
fn substitutions_use_one_slot_even_with_max_jobs_zero() {
    let mut store = MemStore::default();
    store.add("a", &[]);
    store.add("b", &[]);
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 0,
            ..subst_settings()
        },
    );
    t.start(&["a", "b"]);
    t.answer_queries(|_| found(vec![]));
    let running = t
        .pending
        .iter()
        .filter(|e| matches!(e, Effect::StartSubstitution { .. }))
        .count();
    assert_eq!(running, 1);
    t.finish_substitutions(SubstitutionOutcome::Success);
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn adding_wanted_outputs_restarts_substitution() {
    let mut store = MemStore::default();
    let lib = store.add_with("lib", &[], |d| {
        d.outputs = vec![
            ("dev".into(), Some(out_path("lib-dev"))),
            ("out".into(), Some(out_path("lib"))),
        ];
    });
    store.add_with("a", &[], |d| {
        d.input_drvs = vec![(lib.clone(), vec!["out".into()])]
    });
    store.add_with("b", &[], |d| {
        d.input_drvs = vec![(lib.clone(), vec!["dev".into()])]
    });
    let mut t = T::new(store, subst_settings());
    t.start(&["a", "b"]);
    // lib's goal wanted out, then dev too: it restarts and substitutes both.
    for _ in 0..2 {
        t.answer_queries(|p| {
            if *p == out_path("lib") || *p == out_path("lib-dev") {
                found(vec![])
            } else {
                SubstituteAnswer::NotFound
            }
        });
        t.finish_substitutions(SubstitutionOutcome::Success);
    }
    assert_eq!(
        t.s.goal_status(t.s.find_goal(&lib).unwrap()),
        Some(BuildStatus::Substituted)
    );
    assert!(t.store.is_valid(&out_path("lib-dev")));
    t.succeed("a");
    t.succeed("b");
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn a_query_error_without_fallback_fails_the_substitution() {
    let mut store = MemStore::default();
    store.add("app", &[]);
    let mut t = T::new(store, subst_settings());
    t.start(&["app"]);
    t.answer_queries(|_| SubstituteAnswer::Error {
        message: "unable to download 'https://cache.example.org/x.narinfo'".into(),
    });
    let sub = t.s.find_goal(&out_path("app")).unwrap();
    assert_eq!(t.s.goal_status(sub), Some(BuildStatus::MiscFailure));
    assert_eq!(t.status("app"), Some(BuildStatus::TransientFailure));
}

#[test]
fn a_missing_input_source_without_substitution_fails_the_goal() {
    let mut store = MemStore::default();
    store.add_with("app", &[], |d| d.input_srcs = vec![path("src")]);
    let mut t = T::new(
        store,
        Settings {
            use_substitutes: false,
            ..settings()
        },
    );
    t.start(&["app"]);
    assert_eq!(
        t.message_of("app").unwrap(),
        format!(
            "dependency '{}' of '{}' does not exist, and substitution is disabled",
            full(&path("src")),
            full(&drv_path("app"))
        )
    );
}

#[test]
fn events_carry_sequence_numbers_and_settled_states() {
    let mut store = MemStore::default();
    store.add("hello", &[]);
    let mut t = T::new(store, settings());
    t.start(&["hello"]);
    t.succeed("hello");
    for (i, e) in t.events.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
    }
    let g = t.goal("hello");
    assert!(t.events.iter().any(|e| matches!(&e.kind,
        EventKind::GoalAdded { goal, name, top: true, .. } if *goal == g && name == "hello")));
    assert!(t.events.iter().any(|e| matches!(&e.kind,
        EventKind::BuildStarted { goal, pid: Some(100), round: 1, .. } if *goal == g)));
    assert!(
        t.events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::StateChanged { goal, .. } if *goal == g))
    );
    assert!(matches!(
        t.events.last().unwrap().kind,
        EventKind::RunDone { exit_status: 0 }
    ));
}

#[test]
fn a_non_existent_input_output_fails_the_dependent() {
    let mut store = MemStore::default();
    let lib = store.add("lib", &[]);
    store.add_with("app", &[], |d| {
        d.input_drvs = vec![(lib.clone(), vec!["out".into(), "doc".into()])]
    });
    let mut t = T::new(store, settings());
    t.start(&["app"]);
    t.succeed("lib");
    assert_eq!(t.status("app"), Some(BuildStatus::MiscFailure));
    assert_eq!(
        t.message_of("app").unwrap(),
        format!(
            "derivation '{}' requires non-existent output 'doc' from input derivation '{}'",
            full(&drv_path("app")),
            full(&lib)
        )
    );
}

#[test]
fn a_missing_drv_is_substituted_then_built() {
    let mut store = MemStore::default();
    store.add("hello", &[]);
    store.valid.borrow_mut().remove(&drv_path("hello"));
    let mut t = T::new(store, subst_settings());
    t.start(&["hello"]);
    assert_eq!(
        t.reason("hello"),
        WaitReason::Inputs {
            pending: 1,
            stage: InputStage::Derivation
        }
    );
    // The cache has the .drv but not the output.
    let drv = drv_path("hello");
    t.answer_queries(|p| {
        if *p == drv {
            found(vec![])
        } else {
            SubstituteAnswer::NotFound
        }
    });
    t.finish_substitutions(SubstitutionOutcome::Success);
    t.answer_queries(|_| SubstituteAnswer::NotFound);
    t.succeed("hello");
    assert_eq!(t.status("hello"), Some(BuildStatus::Built));
    assert_eq!(t.run_done(), Some(0));
}

#[test]
fn missing_input_sources_are_substituted_before_the_build() {
    let mut store = MemStore::default();
    store.add_with("app", &[], |d| d.input_srcs = vec![path("src")]);
    let mut t = T::new(store, subst_settings());
    t.start(&["app"]);
    t.answer_queries(|p| {
        if *p == path("src") {
            found(vec![])
        } else {
            SubstituteAnswer::NotFound
        }
    });
    assert_eq!(t.building(), Vec::<String>::new(), "the source comes first");
    t.finish_substitutions(SubstitutionOutcome::Success);
    t.succeed("app");
    assert_eq!(t.status("app"), Some(BuildStatus::Built));
}

#[test]
fn substituters_are_tried_in_order() {
    let mut store = MemStore::default();
    store.add("app", &[]);
    let mut t = T::new(
        store,
        Settings {
            substituters: vec!["https://a".into(), "https://b".into(), "https://c".into()],
            ..settings()
        },
    );
    t.start(&["app"]);
    let sub = t.s.find_goal(&out_path("app")).unwrap();
    let mut asked = Vec::new();
    // a: not found; b: found but gone when downloading; c: found and delivered.
    for _ in 0..3 {
        let queries = t.take(|e| matches!(e, Effect::QuerySubstitute { .. }));
        let Effect::QuerySubstitute {
            ticket,
            substituter,
            ..
        } = queries[0].clone()
        else {
            unreachable!()
        };
        asked.push(substituter);
        let answer = if substituter == 0 {
            SubstituteAnswer::NotFound
        } else {
            found(vec![])
        };
        t.input(Input::SubstituteInfo { ticket, answer });
        if substituter == 1 {
            assert!(matches!(
                t.s.goal_state(sub),
                Some(GoalState::Running {
                    detail: RunningDetail::Substitution { .. }
                })
            ));
            t.finish_substitutions(SubstitutionOutcome::Gone {
                message: "the substitute is gone".into(),
            });
        }
    }
    t.finish_substitutions(SubstitutionOutcome::Success);
    assert_eq!(asked, vec![0, 1, 2]);
    assert_eq!(t.s.goal_status(sub), Some(BuildStatus::Substituted));
    assert_eq!(t.status("app"), Some(BuildStatus::Substituted));
    assert!(t.messages().contains(&"the substitute is gone".to_string()));
}

#[test]
fn substitution_bytes_count_as_they_come_and_end_at_the_nar_size() {
    let mut store = MemStore::default();
    store.add("app", &[]);
    store.add("other", &[]);
    let mut t = T::new(
        store,
        Settings {
            max_jobs: 2,
            keep_going: true,
            ..subst_settings()
        },
    );
    t.start(&["app", "other"]);
    t.answer_queries(|_| found(vec![]));
    let running = t.take(|e| matches!(e, Effect::StartSubstitution { .. }));
    let tickets: Vec<(Ticket, StorePath)> = running
        .into_iter()
        .map(|e| match e {
            Effect::StartSubstitution { ticket, path, .. } => (ticket, path),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(tickets.len(), 2);
    let (app, other) = if tickets[0].1 == out_path("app") {
        (tickets[0].0, tickets[1].0)
    } else {
        (tickets[1].0, tickets[0].0)
    };
    let progress = |t: &mut T, ticket, download_done, nar_done| {
        t.input(Input::SubstitutionProgress {
            ticket,
            download_done,
            nar_done,
            url: None,
        })
    };
    progress(&mut t, app, 100, 400);
    progress(&mut t, other, 300, 1000);
    let p = t.s.progress();
    assert_eq!((p.nar.done, p.nar.expected), (1400, 2000));
    assert_eq!((p.download.done, p.download.expected), (400, 600));
    // More than announced is capped; going back is ignored.
    progress(&mut t, app, 10_000, 50_000);
    progress(&mut t, other, 0, 0);
    let p = t.s.progress();
    assert_eq!((p.nar.done, p.download.done), (2000, 600));
    // A failed substitution's bytes leave the counters.
    t.input(Input::SubstitutionFinished {
        ticket: app,
        outcome: SubstitutionOutcome::Failed {
            message: "boom".into(),
        },
    });
    let p = t.s.progress();
    assert_eq!((p.nar.done, p.nar.expected), (1000, 1000));
    t.store.make_valid(&out_path("other"));
    t.input(Input::SubstitutionFinished {
        ticket: other,
        outcome: SubstitutionOutcome::Success,
    });
    let p = t.s.progress();
    assert_eq!((p.nar.done, p.nar.expected), (1000, 1000));
    assert_eq!((p.download.done, p.download.expected), (300, 300));
    assert_eq!(p.substitutions.done, 1);
    // The per-goal events end complete for the substituted path.
    let last = t
        .events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::SubstitutionProgress {
                nar_done,
                nar_expected,
                download_done,
                download_expected,
                ..
            } => Some((*nar_done, *nar_expected, *download_done, *download_expected)),
            _ => None,
        })
        .unwrap();
    assert_eq!(last, (1000, 1000, 300, Some(300)));
}

#[test]
fn max_substitution_jobs_gives_substitutions_slots_of_their_own() {
    let names = ["a", "b", "c", "d", "e"];
    let running = |max_subst: Option<u32>| {
        let mut store = MemStore::default();
        for n in names {
            store.add(n, &[]);
        }
        let mut t = T::new(
            store,
            Settings {
                max_jobs: 1,
                max_substitution_jobs: max_subst,
                ..subst_settings()
            },
        );
        t.start(&names);
        t.answer_queries(|_| found(vec![]));
        let started = t.take(|e| matches!(e, Effect::StartSubstitution { .. }));
        (t.s.slots_in_use(), started.len())
    };
    // Nix 2.8: one slot for builds and substitutions together.
    assert_eq!(running(None), (1, 1));
    // Three substitution slots, the build slot left free.
    assert_eq!(running(Some(3)), (0, 3));
    assert_eq!(running(Some(0)), (0, 1));
}
