//! Real builds, as Nix 2.8's `LocalDerivationGoal` does them: given a [`BuildRequest`], prepare
//! the build directory and environment ([`prepare`], [`env`]), run the builder under its
//! supervisor and stream its log ([`run`]), then check and register the outputs
//! ([`outputs`]). The scheduler decides *when* to build; this module does the building.
//!
//! Builds run unsandboxed for now: the request becomes a [`SandboxSpec`] without namespaces,
//! the seam the sandbox issue fills in. A store whose files are not where its paths say (a
//! chroot store) cannot build without the sandbox, and says so.
//!
//! [`SandboxSpec`]: crate::sandbox::SandboxSpec

pub mod env;
pub mod log;
pub mod parsed;

use std::collections::BTreeSet;
use std::path::PathBuf;

use thiserror::Error;

use crate::engine::scheduler::{BuildOutcome, ExitStatus};

pub use log::{LogEvent, LogLines};

/// The settings a build reads (see `engine::settings` for where they come from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Where `nix-build-<name>-<n>` directories are created.
    pub build_dir: PathBuf,
    /// `cores`: `NIX_BUILD_CORES`.
    pub cores: u32,
    /// `keep-failed`: keep the build directory (and `.check` outputs) of failed builds.
    pub keep_failed: bool,
    /// `enforce-determinism`: outputs that differ between rounds are not registered.
    pub enforce_determinism: bool,
    /// `system`, `extra-platforms`, `system-features`: what can be built here.
    pub system: String,
    pub extra_platforms: BTreeSet<String>,
    pub system_features: BTreeSet<String>,
    /// `max-jobs` (0 refuses local builds of non-builtin derivations, as Nix).
    pub max_jobs: u32,
    /// `keep-build-log`, `compress-build-log`.
    pub keep_build_log: bool,
    pub compress_build_log: bool,
    /// `impersonate-linux-26`.
    pub impersonate_linux_26: bool,
    /// The program run as the build supervisor (`drover`, with `__build-exec`).
    pub helper_exe: PathBuf,
}

/// Why a build step failed, in Nix's terms: a `BuildError` (the derivation or its outputs
/// are at fault; `InputRejected` before the build, `OutputRejected` after), a
/// `NotDeterministic`, or any other error (`MiscFailure`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotDeterministic(String),
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    pub fn other(e: impl std::fmt::Display) -> BuildError {
        BuildError::Other(e.to_string())
    }

    /// The outcome of a failure before the builder ran.
    pub fn before_build(self) -> BuildOutcome {
        match self {
            BuildError::Rejected(message) => BuildOutcome::InputRejected { message },
            BuildError::NotDeterministic(message) | BuildError::Other(message) => {
                BuildOutcome::MiscFailure { message }
            }
        }
    }
}

/// What a running build reports besides its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// The builder runs (the supervisor's pid).
    Started {
        pid: u32,
    },
    Log(String),
    Phase(String),
    /// A note for the user (`note: keeping build directory ...`).
    Note(String),
}

/// A raw wait status in Nix's terms.
pub fn exit_status(raw: i32) -> ExitStatus {
    if libc::WIFEXITED(raw) {
        ExitStatus::Code(libc::WEXITSTATUS(raw))
    } else if libc::WIFSIGNALED(raw) {
        ExitStatus::Signal(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Code(raw)
    }
}
