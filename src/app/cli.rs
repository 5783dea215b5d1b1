//! The command line: one clap tree for every `drover` subcommand.

use clap::{Parser, Subcommand};

use super::{build, copy, demo, instantiate, monitor, plumbing, replay, show, simulate, why};

#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    about = "A Nix-compatible build engine with a live terminal UI of the goal graph",
    long_about = "drover reads real Nix derivations, computes store paths exactly as Nix does, \
                  builds and substitutes them with the semantics of Nix's worker (keep-going, \
                  build slots, locks, binary caches, Nix's exit statuses) into a store real Nix \
                  reads, and shows the live goal graph in a terminal UI."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build derivations (like `nix-build` / `nix-store --realise`).
    Build(build::BuildArgs),
    /// Build the embedded demo workload (39 real derivations, in a throwaway store) in the
    /// terminal UI.
    Demo(demo::DemoArgs),
    /// Run the real scheduler on simulated builds (virtual time), printing what happens.
    Simulate(simulate::SimulateArgs),
    /// Follow a real Nix build: `nix-build --log-format internal-json -v … 2>&1 | drover monitor`.
    Monitor(monitor::MonitorArgs),
    /// Play a recorded event stream (`--record`) in the terminal UI, as plain lines or JSON.
    Replay(replay::ReplayArgs),
    /// Show a derivation (as `nix show-derivation`) and whether the store has its outputs.
    Show(show::ShowArgs),
    /// Say why realising targets builds what it builds: outputs missing, not substitutable,
    /// cached failures.
    Why(why::WhyArgs),
    /// Write the derivations of a plan file into the store and print their paths (like
    /// nix-instantiate).
    Instantiate(instantiate::InstantiateArgs),
    /// Print the hash of the NAR serialisation of a path (like `nix-hash --type sha256 PATH`).
    HashPath(plumbing::nar::HashArgs),
    /// Print the hash of a regular file's contents (like `nix-hash --flat`).
    HashFile(plumbing::nar::HashArgs),
    /// Write the NAR serialisation of a path to stdout (like `nix-store --dump`).
    Dump(plumbing::nar::DumpArgs),
    /// Restore a NAR read from stdin at a path (like `nix-store --restore`).
    Restore(plumbing::nar::RestoreArgs),
    /// Print a derivation as JSON (like `nix show-derivation`) or reprint its ATerm.
    ShowDerivation(plumbing::drv::ShowDerivationArgs),
    /// Compute a store path (text, source, fixed-output or derivation output).
    StorePath(plumbing::drv::StorePathArgs),
    /// Query the store (like `nix-store --query`).
    Query(plumbing::store::QueryArgs),
    /// Add files or directories to the store by content (like `nix-store --add`).
    Add(plumbing::store::AddArgs),
    /// Check the store's consistency (like `nix-store --verify`).
    Verify(plumbing::store::VerifyArgs),
    /// Print the build log of a derivation (`.drv`, `.drv^out`), an output path or a symlink
    /// to one (like `nix-store --read-log`).
    Log(plumbing::store::LogArgs),
    /// Copy derivations and their closure from another store (e.g. the real /nix/store where
    /// nix-instantiate wrote them), verifying every path.
    ImportDrv(plumbing::store::ImportDrvArgs),
    /// Copy paths with their closure to a binary cache (`--to file://DIR`), or substitute
    /// them from one into the store (`--from URI`).
    Copy(copy::CopyArgs),
}
