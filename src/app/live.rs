//! A live run in the terminal UI, for any executor (simulated or real): the driver runs on
//! the caller's runtime on this thread, the TUI on a thread of its own with a lossy
//! subscription, so neither a slow terminal nor a log flood holds the engine back. The run
//! lingers after its end (the summary stays, a retry may reopen it) until the TUI is left.

use std::path::Path;

use crate::app::AppError;
use crate::app::tui::{self, TuiOptions};
use crate::engine::api::BuildMode;
use crate::engine::driver::{self, Delivery, DriverOptions, Executor, Link, RunOutcome};
use crate::engine::scheduler::{Scheduler, Target};

/// Events the TUI may fall behind by before the oldest are dropped (and counted on screen).
pub const TUI_QUEUE: usize = 1 << 16;

/// Runs `targets` with the TUI; the outcome once the TUI was left and the run has ended.
pub fn run_with_tui<E: Executor>(
    runtime: &tokio::runtime::Runtime,
    scheduler: Scheduler,
    executor: E,
    targets: &[Target],
    mode: BuildMode,
    options: TuiOptions,
) -> Result<RunOutcome<E>, AppError> {
    let driver_options = DriverOptions {
        linger: true,
        ..DriverOptions::default()
    };
    let (driver, handle) = driver::driver(scheduler, executor, driver_options);
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
    screen
        .join()
        .map_err(|_| AppError::Usage("the terminal UI failed (see the message above)".into()))??;
    Ok(outcome)
}
