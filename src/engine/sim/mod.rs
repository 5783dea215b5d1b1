//! The simulator: the real scheduler on a virtual clock, with simulated builds, locks and a
//! simulated binary cache, for teaching (`drover simulate`), for benchmarks and for property
//! tests. [`run_sync`] runs a whole simulation without an async runtime; the driver runs the
//! same [`SimExecutor`] in real time or faster.

mod dag;
mod executor;
mod world;

pub use dag::{Dag, Plan, PlanNode, Shape};
pub use executor::{Next, OTHER_PROCESS_PID, SimExecutor, SimStats};
pub use world::{NodeSpec, SimModel, SimStore, World};

use std::collections::{HashMap, VecDeque};

use crate::engine::api::{BuildHistory, BuildMode, Command, Event, Time};
use crate::engine::scheduler::{Effect, Input, Scheduler, Target};

/// The top-level goals of a world.
pub fn targets(world: &World) -> Vec<Target> {
    world
        .targets()
        .iter()
        .map(|&t| Target::Derivation {
            drv: world.drv_path(t),
            outputs: Vec::new(),
        })
        .collect()
}

/// The build-time history of a simulated world, for ETAs: each derivation's model duration,
/// off by up to ±20% (the same for the same seed), as the median of earlier runs would be.
#[derive(Debug, Default)]
pub struct SimHistory {
    durations: HashMap<String, u64>,
}

impl SimHistory {
    pub fn new(world: &World) -> SimHistory {
        let durations = (0..world.len())
            .map(|node| {
                let skew = 0.8 + 0.4 * dag::unit(world.model.seed, node, 91);
                let ms = world.spec(node).duration_ms as f64 * skew;
                (world.name(node), ms as u64)
            })
            .collect();
        SimHistory { durations }
    }
}

impl BuildHistory for SimHistory {
    fn expected_ms(&self, name: &str) -> Option<u64> {
        self.durations.get(name).copied()
    }
}

/// Watches a synchronous simulation.
pub trait Observer {
    /// An effect, just before the executor carries it out.
    fn effect(&mut self, _effect: &Effect, _scheduler: &Scheduler) {}
    /// Events, in order, each time the simulation settles at an instant.
    fn events(&mut self, _events: &[Event]) {}
}

impl Observer for () {}

/// Runs a simulation to its end, without async, as fast as possible. `commands` are
/// delivered at their (virtual) times, also after the run ended (a `Retry` reopens it).
/// Returns the exit status of the last `RunDone`.
pub fn run_sync(
    scheduler: &mut Scheduler,
    exec: &mut SimExecutor,
    mode: BuildMode,
    commands: &[(Time, Command)],
    observer: &mut dyn Observer,
) -> u8 {
    let targets = targets(exec.world());
    scheduler.start(exec.store(), &targets, mode, exec.now());
    continue_sync(scheduler, exec, commands, observer)
}

/// Goes on with a started simulation (see [`run_sync`]); commands dated in the past are
/// delivered at once.
pub fn continue_sync(
    scheduler: &mut Scheduler,
    exec: &mut SimExecutor,
    commands: &[(Time, Command)],
    observer: &mut dyn Observer,
) -> u8 {
    let mut commands: Vec<(Time, Command)> = commands.to_vec();
    commands.sort_by_key(|(t, _)| *t);
    let mut commands = VecDeque::from(commands);
    let mut immediate = Vec::new();
    let mut events = Vec::new();
    let mut effects = Vec::new();
    loop {
        loop {
            scheduler.drain_effects(&mut effects);
            if effects.is_empty() && immediate.is_empty() {
                break;
            }
            for e in effects.drain(..) {
                observer.effect(&e, scheduler);
                exec.execute(e, &mut immediate);
            }
            for i in immediate.drain(..) {
                scheduler.handle(exec.store(), i, exec.now());
            }
        }
        let next_command = commands.front().map(|(t, _)| *t);
        if scheduler.has_pending_work() {
            scheduler.drain_events(&mut events);
            observer.events(&events);
            events.clear();
            scheduler.handle(exec.store(), Input::Tick, exec.now());
            continue;
        }
        if exec.next_time() != Some(exec.now()) || scheduler.is_finished() {
            scheduler.drain_events(&mut events);
            if !events.is_empty() {
                observer.events(&events);
                events.clear();
            }
        }
        if scheduler.is_finished() && next_command.is_none() {
            break;
        }
        let deadline = [scheduler.next_deadline(), next_command]
            .into_iter()
            .flatten()
            .min();
        let input = match exec.next(deadline) {
            Next::Input(i) => i,
            Next::Deadline => match commands.front() {
                Some((t, _)) if *t <= exec.now() => {
                    Input::Command(commands.pop_front().expect("front").1)
                }
                _ => Input::Tick,
            },
            Next::Idle if scheduler.is_paused() => Input::Command(Command::Drain),
            Next::Idle => break,
        };
        scheduler.handle(exec.store(), input, exec.now());
    }
    scheduler.drain_events(&mut events);
    observer.events(&events);
    scheduler.exit_status()
}
