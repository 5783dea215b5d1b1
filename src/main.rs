//! The `drover` binary: parse the command line, run the command, map the outcome to an exit
//! status (0 success, 1 error; the build exit statuses 100-104 arrive with `drover build`).

use std::process::ExitCode;

use clap::Parser;
use drover::app::cli::{Cli, Command};
use drover::app::plumbing;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(command: &Command) -> anyhow::Result<()> {
    if let Some(result) = plumbing::run(command) {
        return Ok(result?);
    }
    match command {
        Command::Demo => {
            println!(
                "drover demo: the embedded demo workload (about 40 goals built live in the \
                 terminal UI) arrives with the front-ends issue.\n\
                 Today drover offers the format plumbing; see `drover --help`."
            );
            Ok(())
        }
        _ => unreachable!("plumbing::run handles every other command"),
    }
}
