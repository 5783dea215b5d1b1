//! The terminal UI: the live goal graph of a run, and the keys to steer it.
//!
//! The TUI is a pure fold of the run's events into a [`ViewState`] ([`state`]), a renderer
//! ([`view`]) and a keymap ([`keys`], [`ui`]) that turns keys into engine [`Command`]s. It sees
//! the run only through an [`engine::api::RunLink`](crate::engine::api::RunLink) (events in,
//! commands out), so the same code shows a simulation, a real build, a replay or a monitored
//! Nix build.
//!
//! The loop ([`run`]) drains every pending event batch, then draws, at most `max_fps` times a
//! second; keys and signals are handled between batches, so a log flood never delays them, and
//! the engine never waits for the screen (the TUI subscribes lossily and shows what it lost).
//! It runs on its own thread, so a slow terminal never slows the engine either.

mod eta;
mod keys;
mod logs;
mod state;
mod term;
mod tree;
mod ui;
mod view;
mod widgets;

pub use eta::{DepGraph, Eta, critical_path, critical_path_with, eta, eta_with};
pub use keys::{Action, BINDINGS, Binding};
pub use logs::{LogRing, LogSource, MemoryLogs, NoLogs, Ring};
pub use state::{Category, Controls, Goal, LogLimits, RunPhase, ViewState};
pub use tree::{Filter, Row, build_rows};
pub use ui::{Confirm, Editing, LogView, Pane, Summary, Ui};
pub use view::{MIN_HEIGHT, MIN_WIDTH, render, render_to};

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::app::AppError;
use crate::engine::api::{BuildHistory, Command, EventKind, Level, RunLink, Time};

/// How the TUI is set up by the command that runs it.
#[derive(Clone)]
pub struct TuiOptions {
    /// What the header calls the run (`drover`, `drover demo`, ...).
    pub title: String,
    /// The run's `--max-jobs` and `--keep-going` at the start (the engine does not announce
    /// its settings; the TUI follows the commands it sends from there).
    pub max_jobs: u32,
    pub keep_going: bool,
    pub limits: LogLimits,
    /// Expected build times, for the ETA.
    pub history: Arc<dyn BuildHistory>,
    /// Where finished goals' logs are read from.
    pub logs: Arc<dyn LogSource>,
    /// Run milliseconds per real millisecond: 1 for a real build, a simulation's speed.
    /// Clocks move between events at this rate; `None`: only with events.
    pub clock_rate: Option<f64>,
    /// Colours (off when `NO_COLOR` is set; see [`color_wanted`]).
    pub color: bool,
    /// Frames per second at most.
    pub max_fps: u32,
    /// What is watched when the run cannot be steered ("watching a Nix build"); `None` for a
    /// run of drover's own engine. See [`Ui::read_only`].
    pub read_only: Option<String>,
}

impl TuiOptions {
    /// Options with everything but the run's settings at their defaults.
    pub fn new(title: impl Into<String>, max_jobs: u32, keep_going: bool) -> TuiOptions {
        TuiOptions {
            title: title.into(),
            max_jobs,
            keep_going,
            limits: LogLimits::default(),
            history: Arc::new(crate::engine::api::NoHistory),
            logs: Arc::new(NoLogs),
            clock_rate: Some(1.0),
            color: color_wanted(),
            max_fps: 30,
            read_only: None,
        }
    }
}

/// Whether to use colours: not when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn color_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether the TUI can run in place of lines on standard output: standard output, standard
/// error (where the TUI draws) and standard input are terminals.
pub fn is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal() && is_terminal_for_build()
}

/// Whether a build shows the TUI: standard error (where it draws, and where a build's progress
/// goes otherwise) and standard input are terminals; standard output may be redirected, it
/// gets the output paths.
pub fn is_terminal_for_build() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal() && io::stdin().is_terminal()
}

/// Whether the TUI can show a stream that arrives on standard input (`drover monitor`):
/// standard output and standard error are terminals, and keys can be read from one: standard input, or else the
/// controlling terminal `/dev/tty`, which crossterm opens for raw mode and keys when standard
/// input is not a terminal.
pub fn is_terminal_for_watching() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
        && io::stderr().is_terminal()
        && (io::stdin().is_terminal()
            || std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/tty")
                .is_ok_and(|tty| tty.is_terminal()))
}

/// The screen state for a new run with `options`.
pub fn new_ui(options: &TuiOptions) -> Ui {
    let controls = Controls {
        max_jobs: options.max_jobs,
        keep_going: options.keep_going,
        paused: false,
        draining: false,
    };
    let view = ViewState::new(controls, options.limits, options.history.clone());
    let mut ui = Ui::new(view, options.title.clone(), options.color);
    ui.read_only = options.read_only.clone();
    ui
}

/// The run time the clocks show: the latest event's time, moved on at `rate` since it came.
struct Clock {
    rate: Option<f64>,
    anchor: (Instant, Time),
    shown: Time,
}

impl Clock {
    fn new(rate: Option<f64>) -> Clock {
        Clock {
            rate,
            anchor: (Instant::now(), Time::ZERO),
            shown: Time::ZERO,
        }
    }

    fn event_time(&mut self, t: Time) {
        if t > self.anchor.1 {
            self.anchor = (Instant::now(), t);
        }
    }

    fn now(&mut self, view: &ViewState) -> Time {
        let t = match (view.phase, self.rate) {
            (RunPhase::Done { at, .. }, _) => at,
            (RunPhase::Running, None) => view.now,
            (RunPhase::Running, Some(rate)) => {
                let ms = self.anchor.0.elapsed().as_secs_f64() * 1000.0 * rate;
                self.anchor.1.plus_millis(ms as u64).max(view.now)
            }
        };
        // Never backwards while running (an event may be a little behind the clock).
        self.shown = if view.is_running() {
            self.shown.max(t)
        } else {
            t
        };
        self.shown
    }
}

/// Applies a batch of events: to the log source, the engine messages pane and the view.
fn apply(
    ui: &mut Ui,
    clock: &mut Clock,
    logs: &dyn LogSource,
    batch: &[crate::engine::api::Event],
) {
    logs.record(batch);
    for e in batch {
        if let EventKind::Message { level, text, .. } = &e.kind {
            let level = match level {
                Level::Error => log::Level::Error,
                Level::Warn => log::Level::Warn,
                Level::Notice | Level::Info => log::Level::Info,
                Level::Talkative | Level::Chatty => log::Level::Debug,
                Level::Debug | Level::Vomit => log::Level::Trace,
            };
            log::log!(target: "engine", level, "{text}");
        }
    }
    ui.view.apply_all(batch);
    if let Some(last) = batch.last() {
        clock.event_time(last.time);
    }
}

/// Sends `commands`; a run that takes no more commands is noted.
fn send(link: &impl RunLink, ui: &mut Ui, commands: Vec<Command>) {
    for c in commands {
        log::info!(target: "tui", "command: {c:?}");
        if !link.send(c) {
            ui.notice = Some("the run takes no more commands".into());
        }
    }
}

/// Runs the TUI on this thread until the user leaves (the summary stays until `q`), or the
/// terminal is lost. Returns the exit status of the run's last `RunDone` (1 if it never
/// ended). The caller runs the engine elsewhere and should have checked [`is_terminal`].
///
/// Ctrl-C, SIGINT and SIGTERM cancel every goal and leave once the run has ended (twice:
/// at once); SIGHUP or a lost terminal does the same without drawing any more.
///
/// If the TUI fails (an error, a panic) the run is cancelled: nobody would see it go on.
pub fn run<L: RunLink>(mut link: L, options: TuiOptions) -> Result<u8, AppError> {
    let _ = tui_logger::init_logger(log::LevelFilter::Debug);
    tui_logger::set_default_level(log::LevelFilter::Debug);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Terminal {
            action: "starting the TUI's runtime",
            source: e,
        })?;
    let shown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run_loop(&mut link, options))
    }));
    match shown {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => {
            link.send(Command::CancelAll);
            Err(e)
        }
        Err(panic) => {
            link.send(Command::CancelAll);
            std::panic::resume_unwind(panic)
        }
    }
}

/// Events drained at most before a frame is drawn and keys are looked at again.
const DRAIN_BUDGET: Duration = Duration::from_millis(50);

async fn run_loop<L: RunLink>(link: &mut L, options: TuiOptions) -> Result<u8, AppError> {
    let term_err = |action| move |source| AppError::Terminal { action, source };
    let mut sigint = signal(SignalKind::interrupt()).map_err(term_err("handling SIGINT"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(term_err("handling SIGTERM"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(term_err("handling SIGHUP"))?;
    let mut screen = Screen::enter()?;
    let mut keys = EventStream::new();
    let mut ui = new_ui(&options);
    let mut clock = Clock::new(options.clock_rate);
    let logs = options.logs.clone();
    let frame = Duration::from_secs(1) / options.max_fps.max(1);
    // While running, the clocks move: draw at least this often.
    let tick = Duration::from_millis(250);
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut events_open = true;
    let mut keys_open = true;
    loop {
        // Everything that is queued first (within a budget, so that a flood never starves
        // the keys), then one frame.
        let draining = Instant::now();
        while draining.elapsed() < DRAIN_BUDGET
            && let Some(batch) = link.try_next_batch()
        {
            apply(&mut ui, &mut clock, &*logs, &batch);
            dirty = true;
        }
        ui.view.dropped_events = ui.view.dropped_events.max(link.dropped());
        if ui.should_exit() {
            break;
        }
        let due = match last_draw {
            None => true,
            Some(at) => {
                let since = at.elapsed();
                (dirty && since >= frame) || (ui.view.is_running() && since >= tick)
            }
        };
        if due && let Screen::Here(g) = &mut screen {
            if let Some((goal, path)) = ui.wanted_log() {
                let lines = logs.read(crate::engine::api::GoalId(goal), &path);
                ui.set_stored_log(goal, lines);
            }
            if ui.messages {
                tui_logger::move_events();
            }
            let now = clock.now(&ui.view);
            g.terminal
                .draw(|f| render(&mut ui, now, f))
                .map_err(term_err("drawing"))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        let next_draw = match last_draw {
            Some(at) if dirty => at + frame,
            Some(at) if ui.view.is_running() => at + tick,
            _ => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            key = keys.next(), if keys_open => match key {
                Some(Ok(TermEvent::Key(k))) => {
                    let commands = ui.on_key(&k);
                    send(&*link, &mut ui, commands);
                    dirty = true;
                }
                Some(Ok(TermEvent::Mouse(m))) => {
                    let commands = ui.on_mouse(&m);
                    send(&*link, &mut ui, commands);
                    dirty = true;
                }
                Some(Ok(TermEvent::Resize(..))) => {
                    if let Screen::Here(g) = &mut screen {
                        g.terminal.autoresize().map_err(term_err("resizing"))?;
                    }
                    dirty = true;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // The terminal is gone: stop the run, quietly.
                    keys_open = false;
                    lost_terminal(&*link, &mut ui, &mut screen);
                }
            },
            _ = sighup.recv() => lost_terminal(&*link, &mut ui, &mut screen),
            _ = sigint.recv() => {
                let commands = ui.act(Action::Interrupt);
                send(&*link, &mut ui, commands);
                dirty = true;
            }
            _ = sigterm.recv() => {
                let commands = ui.act(Action::Interrupt);
                send(&*link, &mut ui, commands);
                dirty = true;
            }
            batch = link.next_batch(), if events_open => match batch {
                Some(batch) => {
                    apply(&mut ui, &mut clock, &*logs, &batch);
                    dirty = true;
                }
                None => {
                    events_open = false;
                    ui.detached = ui.view.is_running();
                    dirty = true;
                }
            },
            _ = tokio::time::sleep_until(next_draw.into()) => {}
        }
        if !events_open && !keys_open {
            // Nothing more can happen.
            break;
        }
    }
    drop(screen);
    Ok(match ui.view.phase {
        RunPhase::Done { exit_status, .. } => exit_status,
        RunPhase::Running => 1,
    })
}

/// The terminal, or a note that it was lost (then nothing is drawn any more).
enum Screen {
    Here(term::TerminalGuard),
    Lost,
}

impl Screen {
    fn enter() -> Result<Screen, AppError> {
        term::TerminalGuard::enter()
            .map(Screen::Here)
            .map_err(|source| AppError::Terminal {
                action: "setting up the terminal",
                source,
            })
    }
}

/// SIGHUP or a read error on the terminal: stop every build, draw no more, leave once the run
/// has ended.
fn lost_terminal(link: &impl RunLink, ui: &mut Ui, screen: &mut Screen) {
    // Dropping the guard puts back what can be put back.
    *screen = Screen::Lost;
    ui.confirm = None;
    if ui.view.is_running() {
        if !ui.stopping {
            ui.stopping = true;
            send(link, ui, vec![Command::CancelAll]);
        }
    } else {
        ui.exit = true;
    }
}
