//! Real builds, as Nix 2.8's `LocalDerivationGoal` does them: given a [`BuildRequest`], prepare
//! the build directory and environment ([`prepare`], [`mod@env`]), run the builder under its
//! supervisor and stream its log ([`Builder::run`]), then check and register the outputs
//! ([`outputs`]). The scheduler decides *when* to build; this module does the building.
//!
//! The request becomes a [`SandboxSpec`], with Linux namespaces when the build is sandboxed
//! ([`sandbox`]); a store whose files are not where its paths say (a chroot store) always
//! builds in the sandbox, which shows the files at their logical paths.
//!
//! [`SandboxSpec`]: crate::sandbox::SandboxSpec

pub mod env;
pub mod log;
pub mod memo;
pub mod outputs;
pub mod parsed;
pub mod prepare;
pub mod register;
pub mod sandbox;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::engine::scheduler::{BuildOutcome, BuildRequest, ExitStatus};
use crate::engine::store::{LocalStore, canon};
use crate::sandbox::{BuilderEvent, Started, Supervisors};

pub use log::{LogEvent, LogLines};
pub use prepare::Prepared;

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
    /// `sandbox` and its companions.
    pub sandbox: sandbox::SandboxSettings,
}

/// Why preparing a build failed, in Nix's terms: a `BuildError` (the derivation is at fault:
/// the build is `InputRejected`) or any other error (`MiscFailure`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    /// The outcome of a failure before the builder ran.
    pub fn before_build(self) -> BuildOutcome {
        match self {
            BuildError::Rejected(message) => BuildOutcome::InputRejected { message },
            BuildError::Other(message) => BuildOutcome::MiscFailure { message },
        }
    }
}

/// What a running build reports besides its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// The builder runs, with this pid.
    Started { pid: u32 },
    /// A line of its output.
    Log(String),
    /// It entered a phase (`@nix {"action":"setPhase",...}`).
    Phase(String),
    /// A note for the user (`note: keeping build directory ...`).
    Note(String),
}

/// Builds on one store: shared by every build of a run.
pub struct Builder {
    store: Arc<LocalStore>,
    settings: BuildSettings,
    supervisors: Arc<Supervisors>,
    rounds: outputs::Rounds,
    memo: memo::StoreMemo,
}

/// How the builder's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The builder exited with this raw wait status.
    Exited(i32),
    /// It was killed on request.
    Killed,
    /// It could not be run.
    Failed(String),
}

/// Bytes of builder output read at once.
const READ_SIZE: usize = 64 << 10;
/// Nix calls a failed build "maybe disk full" below this much free space.
const DISK_FULL_BELOW: u64 = 8 << 20;

impl Builder {
    /// Builds on `store`; builders run under `supervisors`.
    pub fn new(
        store: Arc<LocalStore>,
        settings: BuildSettings,
        supervisors: Arc<Supervisors>,
    ) -> Builder {
        Builder {
            store,
            settings,
            supervisors,
            rounds: outputs::Rounds::default(),
            memo: memo::StoreMemo::default(),
        }
    }

    pub fn store(&self) -> &Arc<LocalStore> {
        &self.store
    }

    pub fn settings(&self) -> &BuildSettings {
        &self.settings
    }

    /// What the run remembers about valid paths.
    pub fn memo(&self) -> &memo::StoreMemo {
        &self.memo
    }

    /// Runs one build to its end: `events` hears about its start, log lines, phases and
    /// notes; `killed` resolving stops it (every process of it is killed, nothing is
    /// registered), and then the answer is `None`.
    pub async fn run(
        self: &Arc<Self>,
        request: BuildRequest,
        mut events: impl FnMut(BuildEvent),
        killed: impl Future<Output = ()>,
    ) -> Option<BuildOutcome> {
        let this = self.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            Prepared::new(&this.store, &this.memo, &this.settings, request)
        })
        .await;
        let mut prepared = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Some(e.before_build()),
            Err(e) => {
                return Some(BuildOutcome::MiscFailure {
                    message: format!("preparing the build: {e}"),
                });
            }
        };
        if let Some(w) = prepared.warning.take() {
            events(BuildEvent::Note(w));
        }
        let ended = self.execute(&mut prepared, &mut events, killed).await;
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || this.finish(prepared, ended)).await;
        let (outcome, notes) = done.unwrap_or_else(|e| {
            let message = format!("finishing the build: {e}");
            (Some(BuildOutcome::MiscFailure { message }), Vec::new())
        });
        for n in notes {
            events(BuildEvent::Note(n));
        }
        outcome
    }

    /// Runs the builder, streaming its output to the log file and to `events`.
    async fn execute(
        &self,
        prepared: &mut Prepared,
        events: &mut impl FnMut(BuildEvent),
        killed: impl Future<Output = ()>,
    ) -> Ended {
        let mut running = match self.supervisors.start(&prepared.spec).await {
            Ok(Started::Running(r)) => r,
            Ok(Started::SetupFailed(message)) => {
                return Ended::Failed(format!("while setting up the build environment: {message}"));
            }
            Err(e) => return Ended::Failed(e.to_string()),
        };
        events(BuildEvent::Started { pid: running.pid() });
        tokio::pin!(killed);
        let mut lines = LogLines::default();
        let mut parsed = Vec::new();
        let mut buf = vec![0u8; READ_SIZE];
        let mut was_killed = false;
        let status = loop {
            tokio::select! {
                event = running.next(&mut buf) => match event {
                    Ok(BuilderEvent::Output(n)) => {
                        prepared.write_log(&buf[..n]);
                        lines.feed(&buf[..n], &mut parsed);
                        for e in parsed.drain(..) {
                            events(log_event(e));
                        }
                    }
                    Ok(BuilderEvent::Exited(status)) => break Ok(status),
                    Err(e) => break Err(e),
                },
                () = &mut killed, if !was_killed => {
                    was_killed = true;
                    running.kill();
                }
            }
        };
        for e in lines.finish() {
            events(log_event(e));
        }
        match status {
            _ if was_killed => Ended::Killed,
            Ok(status) => Ended::Exited(status),
            Err(e) => Ended::Failed(format!("supervising the builder: {e}")),
        }
    }

    /// After the builder: close the log, classify the end, register the outputs of a
    /// successful build, and remove (or keep) the build directory. `None` for a killed build.
    fn finish(&self, mut prepared: Prepared, ended: Ended) -> (Option<BuildOutcome>, Vec<String>) {
        let mut notes = Vec::new();
        prepared.close_log();
        let outcome = match ended {
            Ended::Killed => None,
            Ended::Failed(message) => Some(BuildOutcome::MiscFailure { message }),
            Ended::Exited(raw) if raw != 0 => Some(BuildOutcome::BuilderFailed {
                status: exit_status(raw),
                disk_full: self.disk_full(&prepared.tmp_dir),
            }),
            Ended::Exited(_) => Some(outputs::register(self, &prepared, &self.rounds)),
        };
        if let Some(ns) = &prepared.spec.namespaces {
            let outputs: Vec<_> = prepared
                .outputs
                .iter()
                .map(|o| (o.location.clone(), self.store.real_path(&o.scratch)))
                .collect();
            let normal = prepared.request.mode == crate::engine::api::BuildMode::Normal;
            sandbox::clean_up(ns, &outputs, normal);
        }
        let success = matches!(
            outcome,
            Some(BuildOutcome::Success | BuildOutcome::RoundDiffers { .. })
        );
        if let Some(note) = self.delete_tmp_dir(&prepared.tmp_dir, success) {
            notes.push(note);
        }
        (outcome, notes)
    }

    /// Nix's `deleteTmpDir`: removes the build directory unless the build failed and
    /// `keep-failed` is set (then it is made readable and the note says where it is).
    fn delete_tmp_dir(&self, dir: &Path, success: bool) -> Option<String> {
        if self.settings.keep_failed && !success {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            return Some(format!("note: keeping build directory '{}'", dir.display()));
        }
        let _ = canon::delete_path(dir);
        None
    }

    /// Whether the store or the build directory has less than 8 MiB free.
    fn disk_full(&self, tmp_dir: &Path) -> bool {
        [self.store.config().real_store_dir.as_path(), tmp_dir]
            .into_iter()
            .any(|p| {
                nix::sys::statvfs::statvfs(p).is_ok_and(|st| {
                    st.blocks_available().saturating_mul(st.fragment_size()) < DISK_FULL_BELOW
                })
            })
    }
}

fn log_event(e: LogEvent) -> BuildEvent {
    match e {
        LogEvent::Line(l) => BuildEvent::Log(l),
        LogEvent::Phase(p) => BuildEvent::Phase(p),
    }
}

impl Prepared {
    /// Appends builder output to the log file; a write error ends logging (the build goes
    /// on, as its output still reaches the events).
    fn write_log(&mut self, data: &[u8]) {
        if let Some(log) = self.log.as_mut()
            && log.write(data).is_err()
        {
            self.log = None;
        }
    }

    fn close_log(&mut self) {
        if let Some(log) = self.log.take() {
            let _ = log.finish();
        }
    }
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
