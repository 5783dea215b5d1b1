//! The `drover` binary: parse the command line, run the command, map the outcome to an exit
//! status (0 success, 1 error, Nix's 100-104 for failed builds, as `simulate` reports them).

use std::ffi::OsStr;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use drover::app::cli::{Cli, Command};
use drover::app::{build, copy, demo, instantiate, monitor, plumbing, replay, show, simulate, why};
use drover::sandbox::helper::HELPER_ARG;

/// The scheduler allocates many small, short-lived objects; mimalloc serves them faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

drover::tune_allocator_before_main!();

fn main() -> ExitCode {
    // The build supervisor (`drover __build-exec`) runs before anything else: it is started
    // once per build slot and forks for every build, so it must stay small.
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(HELPER_ARG)) {
        drover::sandbox::helper::main();
    }
    // The demo's builders call drover for what a shell cannot do (sleep, mkdir).
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(demo::TOOL_ARG)) {
        demo::tool_main();
    }
    let cli = Cli::parse();
    match run(&cli.command) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            // Best effort: standard error may be gone (a lost terminal), and eprintln! would
            // panic over it.
            let _ = writeln!(std::io::stderr(), "error: {e}");
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
        Command::Build(args) => Ok(build::build(args)?),
        Command::Replay(args) => Ok(replay::replay(args)?),
        Command::Monitor(args) => Ok(monitor::monitor(args)?),
        Command::Instantiate(args) => {
            instantiate::instantiate(args)?;
            Ok(0)
        }
        Command::Copy(args) => {
            copy::copy(args)?;
            Ok(0)
        }
        Command::Show(args) => {
            show::show(args)?;
            Ok(0)
        }
        Command::Why(args) => {
            why::why(args)?;
            Ok(0)
        }
        _ => unreachable!("plumbing::run handles every other command"),
    }
}
