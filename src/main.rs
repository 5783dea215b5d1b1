//! The `drover` binary: parse the command line, run the command, map the outcome to an exit
//! status (0 success, 1 error, Nix's 100-104 for failed builds, as `simulate` reports them).

use std::process::ExitCode;

use clap::Parser;
use drover::app::cli::{Cli, Command};
use drover::app::{demo, plumbing, simulate};

/// The scheduler allocates many small, short-lived objects; mimalloc serves them faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h; the Rust
/// binding has no name for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Keep freed pages instead of giving them back to the system: a large run frees and
    // reuses memory all the time, and each page given back costs a page fault and zeroing
    // when it is used again. (drover is a batch process; its memory goes at exit.)
    // SAFETY: setting an option is always allowed; it only tunes mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    match run(&cli.command) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs a command; its exit status.
fn run(command: &Command) -> anyhow::Result<u8> {
    if let Some(result) = plumbing::run(command) {
        result?;
        return Ok(0);
    }
    match command {
        Command::Demo(args) => Ok(demo::demo(args)?),
        Command::Simulate(args) => Ok(simulate::simulate(args)?),
        _ => unreachable!("plumbing::run handles every other command"),
    }
}
