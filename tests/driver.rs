//! The async driver on the simulator: same results as the synchronous runner, commands from
//! a handle, lingering for a retry, real-time pacing, and lossy subscribers that never stall
//! the run.

use std::sync::Arc;

use drover::engine::api::BuildMode;
use drover::engine::api::{BuildStatus, Command, Event, EventKind, GoalId, GoalState, WaitReason};
use drover::engine::driver::{self, Delivery, DriverOptions, EventStream};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{
    self, Dag, OTHER_PROCESS_PID, Observer, Plan, PlanNode, Shape, SimExecutor, SimModel, World,
};

struct Collect(Vec<Event>);

impl Observer for Collect {
    fn events(&mut self, events: &[Event]) {
        self.0.extend_from_slice(events);
    }
}

fn settings(max_jobs: u32) -> Settings {
    Settings {
        max_jobs,
        use_substitutes: false,
        ..Settings::default()
    }
}

fn random_world(nodes: u32, seed: u64) -> Arc<World> {
    let model = SimModel {
        seed,
        fail_rate: 0.1,
        ..SimModel::default()
    };
    Arc::new(World::generated(
        Dag::generate(Shape::Random, nodes, seed),
        model,
    ))
}

async fn collect(mut stream: EventStream) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(batch) = stream.recv().await {
        events.extend(batch.iter().cloned());
    }
    events
}

#[tokio::test]
async fn the_driver_gives_the_same_events_as_the_synchronous_runner() {
    let world = random_world(300, 9);
    let mut sync_sched = Scheduler::new(Settings {
        keep_going: true,
        ..settings(3)
    });
    let mut sync_exec = SimExecutor::new(world.clone());
    let mut expected = Collect(Vec::new());
    let sync_status = sim::run_sync(
        &mut sync_sched,
        &mut sync_exec,
        BuildMode::Normal,
        &[],
        &mut expected,
    );

    let scheduler = Scheduler::new(Settings {
        keep_going: true,
        ..settings(3)
    });
    let options = DriverOptions {
        max_batch: usize::MAX,
        ..DriverOptions::default()
    };
    let (driver, handle) = driver::driver(scheduler, SimExecutor::new(world.clone()), options);
    let stream = handle.subscribe(Delivery::Lossless { capacity: 1024 });
    drop(handle);
    let reader = tokio::spawn(collect(stream));
    let outcome = driver.run(&sim::targets(&world), BuildMode::Normal).await;
    let events = reader.await.unwrap();
    assert_eq!(outcome.exit_status, sync_status);
    assert_eq!(events.len(), expected.0.len());
    assert_eq!(events, expected.0);
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunDone { .. }
    ));
}

#[tokio::test]
async fn cancel_all_from_the_handle_stops_the_run() {
    let world = random_world(50, 1);
    let (driver, handle) = driver::driver(
        Scheduler::new(settings(2)),
        SimExecutor::new(world.clone()),
        DriverOptions::default(),
    );
    let stream = handle.subscribe(Delivery::Lossless { capacity: 1024 });
    assert!(handle.send(Command::CancelAll));
    drop(handle);
    let reader = tokio::spawn(collect(stream));
    let outcome = driver.run(&sim::targets(&world), BuildMode::Normal).await;
    let events = reader.await.unwrap();
    assert_eq!(outcome.exit_status, 1);
    let tops = sim::targets(&world).len();
    let cancelled_tops = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::GoalDone {
                    status: BuildStatus::Cancelled,
                    ..
                }
            )
        })
        .count();
    assert!(cancelled_tops >= tops);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::BuildStarted { .. }))
    );
}

fn plan(nodes: Vec<PlanNode>) -> Arc<World> {
    let plan = Plan {
        nodes,
        targets: Vec::new(),
    };
    Arc::new(World::planned(&plan, SimModel::default()).unwrap())
}

fn node(name: &str, deps: &[&str]) -> PlanNode {
    PlanNode {
        name: name.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        duration_ms: Some(1000),
        ..PlanNode::default()
    }
}

#[tokio::test]
async fn a_lingering_driver_takes_a_retry_after_the_run_ended() {
    let world = plan(vec![
        PlanNode {
            fail_attempts: vec![1],
            ..node("flaky", &[])
        },
        node("app", &["flaky"]),
    ]);
    let (driver, handle) = driver::driver(
        Scheduler::new(settings(1)),
        SimExecutor::new(world.clone()),
        DriverOptions {
            linger: true,
            ..DriverOptions::default()
        },
    );
    let mut stream = handle.subscribe(Delivery::Lossless { capacity: 1024 });
    let ui = tokio::spawn(async move {
        let mut runs = Vec::new();
        let mut failed = None;
        while let Some(batch) = stream.recv().await {
            for e in batch.iter() {
                match e.kind {
                    EventKind::GoalDone {
                        goal,
                        status: BuildStatus::PermanentFailure,
                        ..
                    } => failed = Some(goal),
                    EventKind::RunDone { exit_status } => {
                        runs.push(exit_status);
                        match failed.take() {
                            Some(goal) => assert!(handle.send(Command::Retry { goal })),
                            None => return runs, // dropping the handle ends the driver
                        }
                    }
                    _ => {}
                }
            }
        }
        runs
    });
    let outcome = driver.run(&sim::targets(&world), BuildMode::Normal).await;
    assert_eq!(ui.await.unwrap(), vec![100, 0]);
    assert_eq!(outcome.exit_status, 0);
    assert_eq!(outcome.executor.stats.builds_started, 3);
}

#[tokio::test(start_paused = true)]
async fn speed_plays_virtual_time_faster_than_real_time() {
    let world = plan(vec![node("a", &[]), node("b", &["a"])]);
    let executor = SimExecutor::new(world.clone()).with_speed(Some(10.0));
    let (driver, handle) = driver::driver(
        Scheduler::new(settings(1)),
        executor,
        DriverOptions::default(),
    );
    drop(handle);
    let start = tokio::time::Instant::now();
    let outcome = driver.run(&sim::targets(&world), BuildMode::Normal).await;
    let elapsed = start.elapsed();
    assert_eq!(outcome.exit_status, 0);
    // Two builds of 1 s of virtual time each, 10 times faster.
    assert!(
        elapsed >= std::time::Duration::from_millis(200)
            && elapsed < std::time::Duration::from_millis(250),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_slow_lossy_subscriber_never_stalls_the_run() {
    let world = random_world(2000, 3);
    let (driver, handle) = driver::driver(
        Scheduler::new(settings(4)),
        SimExecutor::new(world.clone()),
        DriverOptions {
            max_batch: 64,
            ..DriverOptions::default()
        },
    );
    let stream = handle.subscribe(Delivery::Lossy { capacity: 100 });
    drop(handle);
    let outcome = driver.run(&sim::targets(&world), BuildMode::Normal).await;
    assert!(outcome.scheduler.is_finished());
    assert!(
        stream.dropped() > 0,
        "nobody read, events were dropped and counted"
    );
}

#[tokio::test]
async fn a_lock_held_by_another_process_is_waited_for() {
    let world = plan(vec![PlanNode {
        lock_held_ms: 7000,
        ..node("locked", &[])
    }]);
    let (driver, handle) = driver::driver(
        Scheduler::new(settings(1)),
        SimExecutor::new(world.clone()),
        DriverOptions::default(),
    );
    let stream = handle.subscribe(Delivery::Lossless { capacity: 1024 });
    drop(handle);
    let reader = tokio::spawn(collect(stream));
    let outcome = driver.run(&sim::targets(&world), BuildMode::Normal).await;
    let events = reader.await.unwrap();
    assert_eq!(outcome.exit_status, 0);
    let waited = events.iter().any(|e| {
        matches!(&e.kind, EventKind::StateChanged { state: GoalState::Waiting {
            reason: WaitReason::Lock { holder: Some(h), .. } }, .. } if h.pid == Some(OTHER_PROCESS_PID))
    });
    assert!(waited, "the goal showed whose lock it waited for");
    // Polled at 0, 5 s (still held) and 10 s.
    let started = events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::BuildStarted {
                goal: GoalId(0), ..
            } => Some(e.time),
            _ => None,
        })
        .unwrap();
    assert_eq!(started.as_millis(), 10_000);
}
