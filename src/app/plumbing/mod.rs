//! Plumbing commands: the small, oracle-checkable surface (hashes, NAR, derivations, paths)
//! whose output can be compared byte for byte with real Nix's.

pub mod drv;
pub mod nar;
pub mod store;

use super::AppError;
use super::cli::Command;

/// Runs a plumbing command; `None` when `command` is not one.
pub fn run(command: &Command) -> Option<Result<(), AppError>> {
    Some(match command {
        Command::HashPath(args) => nar::hash_path(args),
        Command::HashFile(args) => nar::hash_file(args),
        Command::Dump(args) => nar::dump(args),
        Command::Restore(args) => nar::restore(args),
        Command::ShowDerivation(args) => drv::show_derivation(args),
        Command::StorePath(args) => drv::store_path(args),
        Command::Query(args) => store::query(args),
        Command::Add(args) => store::add(args),
        Command::Verify(args) => store::verify(args),
        Command::Log(args) => store::log(args),
        Command::ImportDrv(args) => store::import_drv(args),
        Command::Demo(_)
        | Command::Simulate(_)
        | Command::Build(_)
        | Command::Copy(_)
        | Command::Instantiate(_)
        | Command::Replay(_)
        | Command::Show(_)
        | Command::Why(_)
        | Command::Monitor(_) => {
            return None;
        }
    })
}
