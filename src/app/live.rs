//! A live run in the terminal UI, for any executor (simulated or real): the driver runs on
//! the caller's runtime on this thread, the TUI on a thread of its own with a lossy
//! subscription, so neither a slow terminal nor a log flood holds the engine back. The run
//! lingers after its end (the summary stays, a retry may reopen it) until the TUI is left.
//!
//! A [`Watcher`] may follow a run beside its front-end (the TUI or the line outputs) and
//! steer it as a user would: `drover demo` retries its flaky test this way.

use std::path::Path;

use futures_util::future::BoxFuture;

use crate::app::AppError;
use crate::app::tui::{self, TuiOptions};
use crate::engine::api::BuildMode;
use crate::engine::driver::{
    self, Delivery, DriverHandle, DriverOptions, EventStream, Executor, Link, RunOutcome,
};
use crate::engine::scheduler::{Scheduler, Target};

/// Events the TUI may fall behind by before the oldest are dropped (and counted on screen).
pub const TUI_QUEUE: usize = 1 << 16;

/// Events a watcher may fall behind by (it never loses one: the engine waits for it).
pub const WATCHER_QUEUE: usize = 1 << 12;

/// Follows a run with its own handle and lossless subscription (taken before the run
/// starts), as a task on the run's runtime. A run lingers while a handle is alive, so the
/// watcher drops its handle once it will send nothing more.
pub type Watcher = Box<dyn FnOnce(DriverHandle, EventStream) -> BoxFuture<'static, ()> + Send>;

/// Starts `watcher`, if any, on `runtime` for the run behind `handle`.
pub fn start_watcher(
    runtime: &tokio::runtime::Runtime,
    handle: &DriverHandle,
    watcher: Option<Watcher>,
) -> Option<tokio::task::JoinHandle<()>> {
    let watcher = watcher?;
    let events = handle.subscribe(Delivery::Lossless {
        capacity: WATCHER_QUEUE,
    });
    Some(runtime.spawn(watcher(handle.clone(), events)))
}

/// Runs `targets` with the TUI; the outcome once the TUI was left and the run has ended.
pub fn run_with_tui<E: Executor>(
    runtime: &tokio::runtime::Runtime,
    scheduler: Scheduler,
    executor: E,
    targets: &[Target],
    mode: BuildMode,
    options: TuiOptions,
) -> Result<RunOutcome<E>, AppError> {
    run_with_tui_watched(runtime, scheduler, executor, targets, mode, options, None)
}

/// [`run_with_tui`] with a [`Watcher`] beside the TUI.
pub fn run_with_tui_watched<E: Executor>(
    runtime: &tokio::runtime::Runtime,
    scheduler: Scheduler,
    executor: E,
    targets: &[Target],
    mode: BuildMode,
    options: TuiOptions,
    watcher: Option<Watcher>,
) -> Result<RunOutcome<E>, AppError> {
    let driver_options = DriverOptions {
        linger: true,
        ..DriverOptions::default()
    };
    let (driver, handle) = driver::driver(scheduler, executor, driver_options);
    let watching = start_watcher(runtime, &handle, watcher);
    let link = Link::new(
        handle,
        Delivery::Lossy {
            capacity: TUI_QUEUE,
        },
    );
    let screen = std::thread::Builder::new()
        .name("tui".into())
        .spawn(move || tui::run(link, options))
        .map_err(|e| AppError::io("starting", Path::new("the TUI thread"), e))?;
    let outcome = runtime.block_on(driver.run(targets, mode));
    if let Some(w) = watching {
        // Its stream has ended with the run: it ends at once.
        let _ = runtime.block_on(w);
    }
    screen
        .join()
        .map_err(|_| AppError::Usage("the terminal UI failed (see the message above)".into()))??;
    Ok(outcome)
}
