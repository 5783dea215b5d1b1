//! What goes into the scheduler ([`Input`]) and what comes out ([`Effect`]): the whole
//! conversation between the pure state machines and the driver that does the I/O.
//!
//! Every effect that expects an answer carries a [`Ticket`]; the answer echoes it. A goal
//! keeps only its current ticket, so answers to something it gave up on (a build it killed, a
//! lock attempt made before it was cancelled) are recognised and ignored.

use crate::engine::api::{BuildMode, Command, GoalId, Level, LockHolder};
use crate::engine::format::StorePath;

/// Names one request of one goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket {
    pub goal: GoalId,
    pub seq: u32,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Try (without blocking) to lock these output paths for `ticket.goal`; answer
    /// [`Input::LocksAcquired`] or [`Input::LocksBusy`]. The driver answers before it carries
    /// out any later effect, so a following `UnlockOutputs` finds the locks it took.
    TryLockOutputs {
        ticket: Ticket,
        paths: Vec<StorePath>,
    },
    /// Release every output lock `goal` holds (nothing if it holds none). `delete_lock_files`:
    /// the outputs are valid now, so the lock files may go (Nix's `setDeletion(true)`).
    UnlockOutputs {
        goal: GoalId,
        delete_lock_files: bool,
    },
    /// Start a builder (the driver deletes stale invalid outputs first, as Nix's `tryToBuild`
    /// does); answer [`Input::BuildStarted`], then log lines and phases, then
    /// [`Input::BuildFinished`] once outputs are registered. [`Input::NoBuildUser`] if no
    /// build user is free.
    StartBuild {
        ticket: Ticket,
        request: Box<BuildRequest>,
    },
    /// Kill a builder started with `ticket` (a timeout, the log limit, a cancel). No answer
    /// is expected; one that still comes is ignored.
    KillBuild { ticket: Ticket },
    /// Ask substituter number `substituter` about `path`; answer [`Input::SubstituteInfo`].
    QuerySubstitute {
        ticket: Ticket,
        path: StorePath,
        substituter: usize,
    },
    /// Copy `path` from a substituter into the store (replacing it when `repair`); answer
    /// [`Input::SubstitutionFinished`].
    StartSubstitution {
        ticket: Ticket,
        path: StorePath,
        substituter: usize,
        repair: bool,
    },
    /// Stop a substitution (cancel, or nobody needs it any more). No answer expected.
    CancelSubstitution { ticket: Ticket },
    /// Record that building `drv` failed, for `cache_failures`.
    CacheFailure {
        drv: StorePath,
        outputs: Vec<StorePath>,
    },
    /// Forget cached failures of these outputs (a `Retry`).
    ClearFailure { outputs: Vec<StorePath> },
}

/// One build. The driver reads the full derivation (builder, arguments, environment) from
/// `drv_path` itself.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequest {
    pub drv_path: StorePath,
    /// The output paths known beforehand (all but floating content-addressed ones).
    pub outputs: Vec<StorePath>,
    pub mode: BuildMode,
    /// 1-based round of `nr_rounds` (`--repeat`); from round 2 on the driver compares the
    /// outputs with the previous round's and reports [`BuildOutcome::RoundDiffers`].
    pub round: u32,
    pub nr_rounds: u32,
    /// The build slot, for display and per-slot resources.
    pub slot: u32,
}

/// How a builder process ended (Nix's `statusToString`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Nix's wording: `failed with exit code 1`, `failed due to signal 9 (Killed)`.
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("failed with exit code {c}"),
            ExitStatus::Signal(s) => format!("failed due to signal {s} ({})", signal_name(s)),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "Hangup",
        2 => "Interrupt",
        3 => "Quit",
        4 => "Illegal instruction",
        6 => "Aborted",
        7 => "Bus error",
        8 => "Floating point exception",
        9 => "Killed",
        11 => "Segmentation fault",
        13 => "Broken pipe",
        14 => "Alarm clock",
        15 => "Terminated",
        _ => "Unknown signal",
    }
}

/// How a build ended, as the driver saw it. The scheduler turns it into a [`BuildStatus`]
/// the way Nix's `buildDone` classifies errors.
///
/// [`BuildStatus`]: crate::engine::api::BuildStatus
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The builder exited 0 and the outputs are registered (or, in check mode, match).
    Success,
    /// Success, but the outputs differ from the previous round's (`--repeat`); `message` is
    /// Nix's "output '...' of '...' differs from previous round".
    RoundDiffers { message: String },
    /// The builder failed. `disk_full`: the store or build directory had less than 8 MiB
    /// free (such failures are transient).
    BuilderFailed { status: ExitStatus, disk_full: bool },
    /// The builder exited 0 but its outputs were rejected (missing output, reference checks,
    /// a fixed-output hash mismatch when `hash_mismatch`).
    OutputRejected {
        message: String,
        hash_mismatch: bool,
    },
    /// Check mode: the rebuilt outputs differ from the registered ones.
    NotDeterministic { message: String },
    /// The builder could not be started (bad platform or features, bad derivation
    /// attributes): Nix's `InputRejected`.
    InputRejected { message: String },
    /// Anything else (an I/O error of the driver).
    MiscFailure { message: String },
}

/// A substituter's answer about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstituteAnswer {
    /// It has the path.
    Found {
        references: Vec<StorePath>,
        nar_size: u64,
        /// Compressed size, when known.
        download_size: Option<u64>,
    },
    /// It does not have the path.
    NotFound,
    /// It has something unusable (wrong path, no valid signature): Nix warns and tries the
    /// next substituter.
    Rejected { message: String },
    /// The query failed (network, disabled substituter): the next substituter with
    /// `--fallback`, else the goal fails.
    Error { message: String },
}

/// How a substitution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstitutionOutcome {
    /// The path is valid now.
    Success,
    /// The substituter no longer has it: as if it never had (Nix's `SubstituteGone`).
    Gone { message: String },
    /// Download or import failed.
    Failed { message: String },
}

/// What happened, as told to the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Only time passed (a wake-up the scheduler asked for with its next deadline).
    Tick,
    /// A user command.
    Command(Command),
    LocksAcquired {
        ticket: Ticket,
    },
    LocksBusy {
        ticket: Ticket,
        holder: Option<LockHolder>,
    },
    /// Answer to `StartBuild`: no build user is free; the goal retries after the poll
    /// interval.
    NoBuildUser {
        ticket: Ticket,
    },
    BuildStarted {
        ticket: Ticket,
        pid: u32,
    },
    /// One line of builder output (without the newline).
    BuildLog {
        ticket: Ticket,
        line: String,
    },
    BuildPhase {
        ticket: Ticket,
        phase: String,
    },
    /// A note about a build for the user (`note: keeping build directory ...`); shown even
    /// when the build was killed meanwhile.
    BuildNote {
        ticket: Ticket,
        text: String,
    },
    BuildFinished {
        ticket: Ticket,
        outcome: BuildOutcome,
    },
    SubstituteInfo {
        ticket: Ticket,
        answer: SubstituteAnswer,
    },
    /// Bytes of a running substitution so far (cumulative). The driver may send as few as
    /// it likes; the last one before [`Input::SubstitutionFinished`] need not be complete.
    SubstitutionProgress {
        ticket: Ticket,
        download_done: u64,
        nar_done: u64,
        /// The file being downloaded, when it comes over HTTP (Nix's file transfer).
        url: Option<String>,
    },
    SubstitutionFinished {
        ticket: Ticket,
        outcome: SubstitutionOutcome,
    },
    /// Something the driver's machinery wants the user to see (a substituter's warning).
    Message {
        level: Level,
        text: String,
    },
}

impl Input {
    /// The ticket an answer echoes.
    pub fn ticket(&self) -> Option<Ticket> {
        match self {
            Input::Tick | Input::Command(_) | Input::Message { .. } => None,
            Input::LocksAcquired { ticket }
            | Input::LocksBusy { ticket, .. }
            | Input::NoBuildUser { ticket }
            | Input::BuildStarted { ticket, .. }
            | Input::BuildLog { ticket, .. }
            | Input::BuildPhase { ticket, .. }
            | Input::BuildNote { ticket, .. }
            | Input::BuildFinished { ticket, .. }
            | Input::SubstituteInfo { ticket, .. }
            | Input::SubstitutionProgress { ticket, .. }
            | Input::SubstitutionFinished { ticket, .. } => Some(*ticket),
        }
    }
}
