//! Properties of the scheduler over random DAGs and random command sequences, run on the
//! simulator's virtual clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use drover::engine::api::{BuildMode, BuildStatus, Command, Event, EventKind, GoalId, Time};
use drover::engine::scheduler::{Effect, Scheduler, Settings};
use drover::engine::sim::{self, Observer, Plan, PlanNode, SimExecutor, SimModel, World};
use proptest::prelude::*;

/// How a random node behaves.
#[derive(Debug, Clone)]
struct NodeBehaviour {
    deps: Vec<u32>,
    duration_ms: u64,
    fail: bool,
    lock_held_ms: u64,
    cached: bool,
    prefer_local: bool,
    valid: bool,
    hang: bool,
}

fn node() -> impl Strategy<Value = NodeBehaviour> {
    (
        prop::collection::vec(any::<u32>(), 0..4),
        1u64..20_000,
        prop::bool::weighted(0.15),
        prop_oneof![4 => Just(0u64), 1 => 1u64..15_000],
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.03),
    )
        .prop_map(
            |(deps, duration_ms, fail, lock_held_ms, cached, prefer_local, valid, hang)| {
                NodeBehaviour {
                    deps,
                    duration_ms,
                    fail,
                    lock_held_ms,
                    cached,
                    prefer_local,
                    valid,
                    hang,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<NodeBehaviour>,
    max_jobs: u32,
    keep_going: bool,
    substitutes: bool,
    /// `--repeat`.
    repeat: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(node(), 1..25),
        0u32..4,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![3 => Just(0u32), 1 => 1u32..3],
    )
        .prop_map(|(nodes, max_jobs, keep_going, substitutes, repeat)| Case {
            nodes,
            max_jobs,
            keep_going,
            substitutes,
            repeat,
        })
}

/// `transient`: failing nodes fail on their first attempt only.
fn plan(case: &Case, transient: bool, faults: bool) -> Plan {
    let nodes = case
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut deps: Vec<String> = if i == 0 {
                Vec::new()
            } else {
                n.deps
                    .iter()
                    .map(|d| format!("n{}", d % i as u32))
                    .collect()
            };
            deps.sort();
            deps.dedup();
            let fails = faults && n.fail;
            PlanNode {
                name: format!("n{i}"),
                deps,
                duration_ms: Some(n.duration_ms),
                fail: fails && !transient,
                fail_attempts: if fails && transient { vec![1] } else { vec![] },
                log: vec!["working".into()],
                lock_held_ms: n.lock_held_ms,
                cached: n.cached,
                prefer_local_build: n.prefer_local,
                valid: n.valid,
                hang: faults && !transient && n.hang,
                ..PlanNode::default()
            }
        })
        .collect();
    Plan {
        nodes,
        targets: Vec::new(),
    }
}

fn settings(case: &Case) -> Settings {
    let substituters = if case.substitutes {
        vec!["https://cache.sim".to_owned()]
    } else {
        Vec::new()
    };
    Settings {
        max_jobs: case.max_jobs,
        keep_going: case.keep_going,
        use_substitutes: case.substitutes,
        substituters,
        build_repeat: case.repeat,
        // Hanging builds are killed after 30 s of silence.
        max_silent_time_ms: 30_000,
        ..Settings::default()
    }
}

/// Everything a run did.
#[derive(Default)]
struct Record {
    events: Vec<Event>,
    /// (goal, effect index) of every build start.
    build_starts: Vec<GoalId>,
    /// For each start of a build or substitution: slots in use after it.
    slot_peaks: Vec<u32>,
    /// Index into `events` at the time of each effect.
    effects: Vec<(usize, Effect)>,
}

impl Observer for Record {
    fn effect(&mut self, effect: &Effect, scheduler: &Scheduler) {
        match effect {
            Effect::StartBuild { ticket, .. } => {
                self.build_starts.push(ticket.goal);
                self.slot_peaks.push(scheduler.slots_in_use());
            }
            Effect::StartSubstitution { .. } => self.slot_peaks.push(scheduler.slots_in_use()),
            _ => {}
        }
        self.effects.push((self.events.len(), effect.clone()));
    }

    fn events(&mut self, events: &[Event]) {
        self.events.extend_from_slice(events);
    }
}

impl Record {
    fn count<F: Fn(&EventKind) -> Option<GoalId>>(&self, f: F) -> HashMap<GoalId, usize> {
        let mut m = HashMap::new();
        for e in &self.events {
            if let Some(g) = f(&e.kind) {
                *m.entry(g).or_default() += 1;
            }
        }
        m
    }

    fn tops(&self) -> Vec<GoalId> {
        self.events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::GoalAdded {
                    goal, top: true, ..
                } => Some(goal),
                _ => None,
            })
            .collect()
    }

    fn done(&self) -> HashMap<GoalId, usize> {
        self.count(|k| match k {
            EventKind::GoalDone { goal, .. } => Some(*goal),
            _ => None,
        })
    }

    fn reopened(&self) -> HashMap<GoalId, usize> {
        self.count(|k| match k {
            EventKind::GoalReopened { goal } => Some(*goal),
            _ => None,
        })
    }

    fn last_status(&self) -> HashMap<GoalId, BuildStatus> {
        let mut m = HashMap::new();
        for e in &self.events {
            if let EventKind::GoalDone { goal, status, .. } = e.kind {
                m.insert(goal, status);
            }
        }
        m
    }

    /// Every top-level goal ended once per time it was (re)opened; nothing was built more
    /// often than it was opened.
    fn check_common(&self, scheduler: &Scheduler) -> Result<(), TestCaseError> {
        let rounds = scheduler.settings().build_repeat as usize + 1;
        prop_assert!(scheduler.is_finished(), "the run ended");
        let done = self.done();
        let reopened = self.reopened();
        for t in self.tops() {
            let opened = 1 + reopened.get(&t).copied().unwrap_or(0);
            prop_assert_eq!(done.get(&t).copied().unwrap_or(0), opened, "top goal {}", t);
        }
        let mut starts: HashMap<GoalId, usize> = HashMap::new();
        for g in &self.build_starts {
            *starts.entry(*g).or_default() += 1;
        }
        for (g, n) in starts {
            let opened = 1 + reopened.get(&g).copied().unwrap_or(0);
            prop_assert!(
                n <= rounds * opened,
                "goal {} built {} times, opened {}",
                g,
                n,
                opened
            );
        }
        self.check_dependency_failures()
    }

    /// A goal fails because of a dependency only while one of its waitees is failed: a
    /// failure that a `Retry` reopened no longer counts.
    fn check_dependency_failures(&self) -> Result<(), TestCaseError> {
        let mut waitees: HashMap<GoalId, Vec<GoalId>> = HashMap::new();
        let mut ended: HashMap<GoalId, BuildStatus> = HashMap::new();
        for e in &self.events {
            match e.kind {
                EventKind::EdgeAdded { waiter, waitee } => {
                    waitees.entry(waiter).or_default().push(waitee);
                }
                EventKind::GoalReopened { goal } => {
                    ended.remove(&goal);
                }
                EventKind::GoalDone { goal, status, .. } => {
                    if status == BuildStatus::DependencyFailed {
                        let inputs = waitees.get(&goal).map(Vec::as_slice).unwrap_or(&[]);
                        prop_assert!(
                            inputs
                                .iter()
                                .any(|w| ended.get(w).is_some_and(|s| !s.success())),
                            "goal {} failed because of a dependency at {:?}, but none of its \
                             inputs {:?} is failed",
                            goal,
                            e.time,
                            inputs
                        );
                    }
                    ended.insert(goal, status);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn run(
    case: &Case,
    plan: &Plan,
    commands: &[(Time, Command)],
) -> (Record, Scheduler, SimExecutor, u8) {
    let world = Arc::new(World::planned(plan, SimModel::default()).expect("valid plan"));
    let mut exec = SimExecutor::new(world);
    let mut scheduler = Scheduler::new(settings(case));
    let mut record = Record::default();
    let status = sim::run_sync(
        &mut scheduler,
        &mut exec,
        BuildMode::Normal,
        commands,
        &mut record,
    );
    (record, scheduler, exec, status)
}

fn failed(status: BuildStatus) -> bool {
    !status.success()
        && !matches!(
            status,
            BuildStatus::NoSubstituters | BuildStatus::IncompleteClosure
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_keep_nixs_invariants(case in case()) {
        let plan = plan(&case, false, true);
        let (record, scheduler, exec, status) = run(&case, &plan, &[]);
        record.check_common(&scheduler)?;

        // Slots: never more than max-jobs (at least one, for substitutions and a local build).
        let limit = case.max_jobs.max(1);
        prop_assert!(record.slot_peaks.iter().all(|&n| n <= limit), "{:?}", record.slot_peaks);

        // The exit status says whether every top-level goal succeeded.
        let statuses = record.last_status();
        let all_ok = record.tops().iter().all(|t| statuses.get(t).is_some_and(|s| s.success()));
        prop_assert_eq!(status == 0, all_ok);

        let world = exec.world();
        let goal_of = |n: u32| scheduler.find_goal(&world.drv_path(n));
        if case.keep_going {
            // Every derivation whose inputs all succeeded was built (or failed by itself).
            for n in 0..world.len() {
                let Some(g) = goal_of(n) else { continue };
                let inputs_ok = world.dag.deps(n).iter().all(|&d| {
                    goal_of(d).and_then(|dg| statuses.get(&dg)).is_some_and(|s| s.success())
                });
                let s = statuses.get(&g).copied();
                if inputs_ok {
                    prop_assert!(
                        !matches!(s, Some(BuildStatus::DependencyFailed | BuildStatus::Cancelled) | None),
                        "node {} ended {:?} though its inputs succeeded", n, s
                    );
                }
            }
        } else {
            // Nothing new starts after the first failure.
            let first_failure = record.events.iter().position(|e| matches!(&e.kind,
                EventKind::GoalDone { status, .. } if failed(*status) && *status != BuildStatus::Cancelled));
            if let Some(i) = first_failure {
                let late = record.effects.iter().find(|(at, e)| *at > i && matches!(e,
                    Effect::StartBuild { .. } | Effect::TryLockOutputs { .. }
                    | Effect::StartSubstitution { .. } | Effect::QuerySubstitute { .. }));
                prop_assert!(late.is_none(), "started after the first failure: {:?}", late);
            }
        }
    }

    #[test]
    fn retrying_every_failure_gives_the_fault_free_result(mut case in case()) {
        case.max_jobs = case.max_jobs.max(1);
        let clean = plan(&case, true, false);
        let (_, _, clean_exec, clean_status) = run(&case, &clean, &[]);

        let faulty = plan(&case, true, true);
        let world = Arc::new(World::planned(&faulty, SimModel::default()).unwrap());
        let mut exec = SimExecutor::new(world);
        let mut scheduler = Scheduler::new(settings(&case));
        let mut record = Record::default();
        let mut status = sim::run_sync(&mut scheduler, &mut exec, BuildMode::Normal, &[], &mut record);
        for _ in 0..=case.nodes.len() {
            if status == 0 {
                break;
            }
            // Retry every goal that failed by itself (not because of an input).
            let retries: Vec<(Time, Command)> = record
                .last_status()
                .into_iter()
                .filter(|(_, s)| failed(*s) && !matches!(s, BuildStatus::DependencyFailed | BuildStatus::Cancelled))
                .map(|(goal, _)| (exec.now(), Command::Retry { goal }))
                .collect();
            prop_assert!(!retries.is_empty(), "a failed run has a failure to retry: {:?}", record.last_status());
            status = sim::continue_sync(&mut scheduler, &mut exec, &retries, &mut record);
        }
        prop_assert_eq!(status, clean_status);
        prop_assert_eq!(status, 0);
        for n in 0..exec.world().len() {
            prop_assert_eq!(exec.store().output_valid(n), clean_exec.store().output_valid(n), "node {}", n);
        }
    }

    /// Each failure is retried 1 ms after it happens, while its dependents may still wait
    /// for other inputs (keep-going) or have failed because of it already: once every retry
    /// succeeded, nothing is left failed because of a failure that was retried.
    #[test]
    fn retrying_each_failure_as_it_happens_gives_the_fault_free_result(mut case in case()) {
        case.max_jobs = case.max_jobs.max(1);
        let clean = plan(&case, true, false);
        let (_, _, clean_exec, clean_status) = run(&case, &clean, &[]);

        let faulty = plan(&case, true, true);
        let mut commands: Vec<(Time, Command)> = Vec::new();
        let mut retried: HashSet<GoalId> = HashSet::new();
        // The simulation is deterministic: each run repeats the last one up to its new retry.
        loop {
            let (record, scheduler, exec, status) = run(&case, &faulty, &commands);
            record.check_common(&scheduler)?;
            let next = record.events.iter().find_map(|e| match e.kind {
                EventKind::GoalDone { goal, status, .. }
                    if failed(status)
                        && !matches!(status, BuildStatus::DependencyFailed | BuildStatus::Cancelled)
                        && !retried.contains(&goal) => Some((e.time, goal)),
                _ => None,
            });
            if let Some((at, goal)) = next {
                retried.insert(goal);
                commands.push((Time(at.0 + 1), Command::Retry { goal }));
                continue;
            }
            for (g, s) in record.last_status() {
                prop_assert!(
                    !failed(s) || (s == BuildStatus::Cancelled && !case.keep_going),
                    "goal {} ended {:?} after retries of {:?}", g, s, commands
                );
            }
            prop_assert_eq!(status, clean_status);
            prop_assert_eq!(status, 0);
            for n in 0..exec.world().len() {
                prop_assert_eq!(exec.store().output_valid(n), clean_exec.store().output_valid(n), "node {}", n);
            }
            break;
        }
    }

    #[test]
    fn random_commands_never_break_the_run(
        case in case(),
        commands in prop::collection::vec((0u64..60_000, 0u8..9, 0u32..40, any::<bool>()), 0..12),
    ) {
        let commands: Vec<(Time, Command)> = commands
            .into_iter()
            .map(|(t, which, n, b)| {
                let goal = GoalId(n);
                let c = match which {
                    0 => Command::Cancel { goal },
                    1 => Command::CancelAll,
                    2 => Command::Drain,
                    3 => Command::Pause,
                    4 => Command::Resume,
                    5 | 6 => Command::Retry { goal },
                    7 => Command::SetKeepGoing { keep_going: b },
                    _ => Command::SetMaxJobs { max_jobs: n % 5 },
                };
                (Time(t), c)
            })
            .collect();
        let plan = plan(&case, false, true);
        let (record, scheduler, _, _) = run(&case, &plan, &commands);
        record.check_common(&scheduler)?;
        let max_jobs_ever = commands
            .iter()
            .filter_map(|(_, c)| match c {
                Command::SetMaxJobs { max_jobs } => Some(*max_jobs),
                _ => None,
            })
            .chain([case.max_jobs])
            .max()
            .unwrap_or(0)
            .max(1);
        prop_assert!(record.slot_peaks.iter().all(|&n| n <= max_jobs_ever));
        let ids: HashSet<GoalId> = record.done().keys().copied().collect();
        for (g, n) in record.reopened() {
            prop_assert!(ids.contains(&g), "reopened goal {} never ended ({} times)", g, n);
        }
    }
}
