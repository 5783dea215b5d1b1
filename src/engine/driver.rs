//! The one async loop of drover (layer rule 3): it hands the scheduler's effects to an
//! [`Executor`], feeds the answers back as inputs, sleeps until the next input, deadline or
//! user command, and fans the events out on an [`EventBus`].
//!
//! The executor owns time and the outside world: the real one (with the builds issue) spawns
//! builders, takes `flock` locks and reads the real clock; [`crate::engine::sim`]'s runs on a
//! virtual clock, as fast as possible or scaled. A failing effect is the executor's to turn
//! into an answer (a failed build, a busy lock): the loop itself never fails.
//!
//! The goals' states are settled (and their events collected) whenever nothing more is due at
//! the current instant; the collected events are published before the loop waits, or every
//! `max_batch` events, so a front-end sees consistent states.

mod bus;

pub use bus::{Batch, Delivery, EventBus, EventStream};

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::engine::api::{BuildMode, Command, Event, RunLink, Time};
use crate::engine::scheduler::{Effect, Input, Scheduler, StoreView, Target};

/// What carries out effects. Answers that are known at once (a lock attempt) go to
/// `immediate`; the others come later from [`Executor::next_input`].
pub trait Executor: Send {
    /// The store the scheduler asks questions of.
    fn store(&self) -> &dyn StoreView;

    /// The current time of the run.
    fn now(&self) -> Time;

    /// Starts carrying out `effect`. Must answer `TryLockOutputs` in `immediate`.
    fn execute(&mut self, effect: Effect, immediate: &mut Vec<Input>);

    /// An input that is due now, without waiting.
    fn poll_ready(&mut self) -> Option<Input>;

    /// Waits for the next input, or until `deadline` (then `None`). Waits forever when there
    /// is neither. Must be cancel-safe: the driver drops it when a command arrives.
    fn next_input(&mut self, deadline: Option<Time>) -> impl Future<Output = Option<Input>> + Send;

    /// Whether [`Executor::next_input`] would return at once (a virtual clock that jumps);
    /// the driver then keeps collecting events instead of publishing them.
    fn never_waits(&self, _deadline: Option<Time>) -> bool {
        false
    }
}

#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// After the run ended, keep taking commands (a `Retry` reopens it) until every
    /// [`DriverHandle`] is dropped.
    pub linger: bool,
    /// Publish at least every this many events.
    pub max_batch: usize,
}

impl Default for DriverOptions {
    fn default() -> DriverOptions {
        DriverOptions {
            linger: false,
            max_batch: 4096,
        }
    }
}

/// The loop, ready to [`Driver::run`].
pub struct Driver<E> {
    scheduler: Scheduler,
    executor: E,
    commands: mpsc::UnboundedReceiver<Command>,
    bus: EventBus,
    options: DriverOptions,
}

/// What a front-end holds: commands in, events out. Subscribe before the run starts to see
/// every event.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    commands: mpsc::UnboundedSender<Command>,
    bus: EventBus,
}

impl DriverHandle {
    /// Sends a command; false if the run is over.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    pub fn subscribe(&self, delivery: Delivery) -> EventStream {
        self.bus.subscribe(delivery)
    }

    /// A handle that sends commands without keeping a lingering run alive (for signal
    /// handlers: an interrupt should not be what the run waits for).
    pub fn downgrade(&self) -> WeakDriverHandle {
        WeakDriverHandle {
            commands: self.commands.downgrade(),
        }
    }
}

/// A [`DriverHandle`] that does not count as a front-end still able to send commands.
#[derive(Debug, Clone)]
pub struct WeakDriverHandle {
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl WeakDriverHandle {
    /// Sends a command; false if the run is over.
    pub fn send(&self, command: Command) -> bool {
        self.commands
            .upgrade()
            .is_some_and(|tx| tx.send(command).is_ok())
    }
}

/// A handle with its own subscription: what an interactive front-end (the TUI) is given, as
/// an [`RunLink`] that knows nothing of the driver.
#[derive(Debug)]
pub struct Link {
    handle: DriverHandle,
    events: EventStream,
}

impl Link {
    /// Subscribes to `handle`'s events (before the run starts, to see them all).
    pub fn new(handle: DriverHandle, delivery: Delivery) -> Link {
        let events = handle.subscribe(delivery);
        Link { handle, events }
    }
}

impl RunLink for Link {
    async fn next_batch(&mut self) -> Option<Batch> {
        self.events.recv().await
    }

    fn try_next_batch(&mut self) -> Option<Batch> {
        self.events.try_recv()
    }

    fn dropped(&self) -> u64 {
        self.events.dropped()
    }

    fn send(&self, command: Command) -> bool {
        self.handle.send(command)
    }
}

/// How a run ended, with the scheduler and executor for inspection.
pub struct RunOutcome<E> {
    /// Nix's exit status of the last `RunDone`.
    pub exit_status: u8,
    pub scheduler: Scheduler,
    pub executor: E,
}

/// A driver for `scheduler` on `executor`, and the handle to talk to it.
pub fn driver<E: Executor>(
    scheduler: Scheduler,
    executor: E,
    options: DriverOptions,
) -> (Driver<E>, DriverHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = EventBus::default();
    let handle = DriverHandle {
        commands: tx,
        bus: bus.clone(),
    };
    let driver = Driver {
        scheduler,
        executor,
        commands: rx,
        bus,
        options,
    };
    (driver, handle)
}

impl<E: Executor> Driver<E> {
    /// Runs `targets` to the end (and, with `linger`, until the handles are gone).
    pub async fn run(self, targets: &[Target], mode: BuildMode) -> RunOutcome<E> {
        let Driver {
            mut scheduler,
            mut executor,
            mut commands,
            bus,
            options,
        } = self;
        let mut effects = Vec::new();
        let mut immediate = Vec::new();
        let mut events = Vec::new();
        let mut commands_open = true;
        scheduler.start(executor.store(), targets, mode, executor.now());
        loop {
            // Carry out the effects; answers known at once go straight back in.
            loop {
                scheduler.drain_effects(&mut effects);
                if effects.is_empty() && immediate.is_empty() {
                    break;
                }
                for e in effects.drain(..) {
                    executor.execute(e, &mut immediate);
                }
                for i in immediate.drain(..) {
                    scheduler.handle(executor.store(), i, executor.now());
                }
            }
            // More at this instant? Commands first: what the user asks wins.
            let command = match commands.try_recv() {
                Ok(c) => Some(Input::Command(c)),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    commands_open = false;
                    None
                }
                Err(mpsc::error::TryRecvError::Empty) => None,
            };
            let next = command.or_else(|| {
                if scheduler.has_pending_work() {
                    Some(Input::Tick)
                } else {
                    executor.poll_ready()
                }
            });
            if let Some(input) = next {
                if scheduler.pending_events() >= options.max_batch {
                    scheduler.drain_events(&mut events);
                    publish(&bus, &mut events).await;
                }
                scheduler.handle(executor.store(), input, executor.now());
                continue;
            }
            // Settled at this instant: collect, and publish unless time just jumps on.
            scheduler.drain_events(&mut events);
            let deadline = scheduler.next_deadline();
            let finished = scheduler.is_finished() && !(options.linger && commands_open);
            if finished || !executor.never_waits(deadline) || events.len() >= options.max_batch {
                publish(&bus, &mut events).await;
            }
            if finished {
                break;
            }
            if !commands_open && scheduler.is_paused() {
                // Nobody can resume any more.
                let now = executor.now();
                scheduler.handle(executor.store(), Input::Command(Command::Drain), now);
                continue;
            }
            let input = tokio::select! {
                biased;
                c = commands.recv(), if commands_open => match c {
                    Some(c) => Input::Command(c),
                    None => {
                        commands_open = false;
                        continue;
                    }
                },
                i = executor.next_input(deadline) => i.unwrap_or(Input::Tick),
            };
            scheduler.handle(executor.store(), input, executor.now());
        }
        scheduler.drain_events(&mut events);
        publish(&bus, &mut events).await;
        bus.close();
        RunOutcome {
            exit_status: scheduler.exit_status(),
            scheduler,
            executor,
        }
    }
}

async fn publish(bus: &EventBus, events: &mut Vec<Event>) {
    if events.is_empty() {
        return;
    }
    bus.wait_for_room().await;
    // The next batch starts with room for one like this, so it need not grow by copying.
    let room = events.len().min(1 << 14);
    bus.publish(Arc::new(std::mem::replace(
        events,
        Vec::with_capacity(room),
    )));
}
