//! The `drover` binary: parse the command line, run the command, map the outcome to an exit
//! status (0 success, 1 error, Nix's 100-104 for failed builds, as `simulate` reports them).

use std::process::ExitCode;

use clap::Parser;
use drover::app::cli::{Cli, Command};
use drover::app::{copy, plumbing, simulate};

/// The scheduler allocates many small, short-lived objects; mimalloc serves them faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

drover::tune_allocator_before_main!();

fn main() -> ExitCode {
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
        Command::Demo => {
            println!(
                "drover demo: the embedded demo workload (about 40 goals built live in the \
                 terminal UI) arrives with the front-ends issue.\n\
                 Today drover offers the format plumbing and `drover simulate`; see \
                 `drover --help`."
            );
            Ok(0)
        }
        Command::Simulate(args) => Ok(simulate::simulate(args)?),
        Command::Copy(args) => {
            copy::copy(args)?;
            Ok(0)
        }
        _ => unreachable!("plumbing::run handles every other command"),
    }
}
