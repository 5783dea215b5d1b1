//! The public vocabulary between the engine and its front-ends: goal ids, goal kinds and states,
//! build statuses, the event stream and the commands a user may send while a run is going.
//!
//! Everything here is plain data with `serde` support and stable field names: the TUI, the
//! line and JSON outputs, the Nix `internal-json` emitter and event recording/replay are all
//! folds over [`Event`]s. Variants serialise internally tagged (`{"type": "goal_added", ...}`),
//! field names are `snake_case`, times are milliseconds since the start of the run.
//!
//! The DAG is described by events alone ([`EventKind::GoalAdded`], [`EventKind::EdgeAdded`]),
//! so a front-end never needs to read a `.drv` file.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in a run: milliseconds since the run started. The scheduler never reads a clock;
/// its caller passes the current `Time` with every input.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    pub fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1000))
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating.
    pub fn plus_millis(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn millis_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Time {
    /// `12.345s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A goal of a run: an index into the scheduler's arena, stable for the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoalId(pub u32);

impl GoalId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for GoalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Nix's build modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildMode {
    /// Build what is missing.
    #[default]
    Normal,
    /// Rebuild (or re-substitute) outputs whose contents are corrupt, and repair their closure.
    Repair,
    /// Rebuild valid outputs and compare them with the registered ones (`--check`).
    Check,
}

/// What a goal realises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GoalKind {
    /// Nix's DerivationGoal: realise outputs of a derivation (by substitution or by building).
    Derivation {
        /// Full path of the `.drv`.
        drv: String,
        /// The wanted outputs; empty means all of them.
        outputs: Vec<String>,
        mode: BuildMode,
    },
    /// Nix's SubstitutionGoal: make one store path valid by fetching it from a substituter.
    Substitution {
        /// Full store path.
        path: String,
        repair: bool,
    },
}

/// Who holds a lock drover wants (another process, typically another Nix or drover).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: Option<u32>,
    /// The holder's command line, when known.
    pub command: Option<String>,
}

/// What a goal that is waiting is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WaitReason {
    /// Other goals (its waitees) must finish first.
    Inputs { pending: u32, stage: InputStage },
    /// Ready to run, but every build slot (`--max-jobs`) is taken.
    BuildSlot,
    /// Asking for, or polling for, the locks on its output paths. `holder` and `retry_at` are
    /// set once the locks were found busy (Nix: "waiting for lock on ...").
    Lock {
        paths: Vec<String>,
        holder: Option<LockHolder>,
        retry_at: Option<Time>,
    },
    /// Every build user is busy; retried at `retry_at` (Nix: "waiting for UID to build ...").
    BuildUser { retry_at: Time },
    /// Asking a substituter whether it has the path.
    Substituter { substituter: String },
    /// Ready to run, but the run is paused or draining.
    Paused,
}

/// Which of a goal's waits [`WaitReason::Inputs`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputStage {
    /// The `.drv` file itself is being substituted.
    Derivation,
    /// Substitutes for the goal's outputs are being tried.
    OutputSubstitutes,
    /// Input derivations and input sources are being realised.
    Inputs,
    /// The references of a path being substituted are being realised.
    References,
    /// Corrupt paths in the output closure are being repaired.
    ClosureRepair,
}

/// What a running goal is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunningDetail {
    Build {
        /// Build slot, 0-based (< max-jobs when it started).
        slot: u32,
        /// The builder's pid, once it runs.
        pid: Option<u32>,
        /// 1-based round (`--repeat`), of `nr_rounds`.
        round: u32,
        nr_rounds: u32,
        /// The builder's current phase, if it reports phases.
        phase: Option<String>,
        since: Time,
    },
    Substitution {
        slot: u32,
        substituter: String,
        since: Time,
    },
}

/// The state of a goal as a front-end shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GoalState {
    Waiting { reason: WaitReason },
    Running { detail: RunningDetail },
    Done { status: BuildStatus },
}

/// How a goal ended: Nix's `BuildResult::Status` values, with a few drover additions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BuildStatus {
    Built,
    Substituted,
    AlreadyValid,
    PermanentFailure,
    InputRejected,
    OutputRejected,
    TransientFailure,
    /// A previous build of an output failed and failures are cached (`cache_failures`).
    CachedFailure,
    TimedOut,
    MiscFailure,
    DependencyFailed,
    LogLimitExceeded,
    NotDeterministic,
    /// A substitution goal found no substituter with the path. Not a failure for a derivation
    /// goal's output substitutes: it builds instead.
    NoSubstituters,
    /// (drover) A substitution goal whose references could not be substituted for lack of
    /// substitutes (Nix: `ecIncompleteClosure`); the derivation goal then builds its inputs and
    /// tries once more.
    IncompleteClosure,
    /// (drover) Stopped by a user command, or because nothing needed it any more (a top-level
    /// goal failed without keep-going, the run was drained or cancelled).
    Cancelled,
}

impl BuildStatus {
    /// Nix's `BuildResult::success()`.
    pub fn success(self) -> bool {
        matches!(
            self,
            BuildStatus::Built | BuildStatus::Substituted | BuildStatus::AlreadyValid
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Built => "Built",
            BuildStatus::Substituted => "Substituted",
            BuildStatus::AlreadyValid => "AlreadyValid",
            BuildStatus::PermanentFailure => "PermanentFailure",
            BuildStatus::InputRejected => "InputRejected",
            BuildStatus::OutputRejected => "OutputRejected",
            BuildStatus::TransientFailure => "TransientFailure",
            BuildStatus::CachedFailure => "CachedFailure",
            BuildStatus::TimedOut => "TimedOut",
            BuildStatus::MiscFailure => "MiscFailure",
            BuildStatus::DependencyFailed => "DependencyFailed",
            BuildStatus::LogLimitExceeded => "LogLimitExceeded",
            BuildStatus::NotDeterministic => "NotDeterministic",
            BuildStatus::NoSubstituters => "NoSubstituters",
            BuildStatus::IncompleteClosure => "IncompleteClosure",
            BuildStatus::Cancelled => "Cancelled",
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a goal ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoalTimes {
    /// When its (last) build or substitution started, if it ran one.
    pub started: Option<Time>,
    pub stopped: Time,
    /// Rounds built (`--repeat`), Nix's `timesBuilt`.
    pub times_built: u32,
    /// Rounds gave different results (Nix's `isNonDeterministic`).
    pub non_deterministic: bool,
}

/// Nix's progress counters (`expected` includes the done ones, as Nix reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub builds: Counter,
    pub substitutions: Counter,
    /// Bytes to download / downloaded (compressed NAR sizes).
    pub download: Bytes,
    /// Bytes to unpack / unpacked (NAR sizes).
    pub nar: Bytes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub done: u64,
    pub expected: u64,
    pub running: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bytes {
    pub done: u64,
    pub expected: u64,
}

/// Nix's verbosity levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Error,
    Warn,
    Notice,
    Info,
    Talkative,
    Chatty,
    Debug,
    Vomit,
}

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 0, 1, 2, ... in emission order; a gap means a lossy subscriber dropped events.
    pub seq: u64,
    pub time: Time,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A goal was created. `name` is what to show (the derivation or path name).
    GoalAdded {
        goal: GoalId,
        kind: GoalKind,
        name: String,
        /// Requested by the user (a top-level goal).
        top: bool,
    },
    /// `waiter` waits for `waitee` (may repeat after a goal restarts; treat edges as a set).
    EdgeAdded {
        waiter: GoalId,
        waitee: GoalId,
    },
    /// A goal's settled state changed (intermediate states within one instant are skipped).
    StateChanged {
        goal: GoalId,
        state: GoalState,
    },
    /// A builder started (Nix: "building '...'").
    BuildStarted {
        goal: GoalId,
        slot: u32,
        pid: Option<u32>,
        round: u32,
        nr_rounds: u32,
        mode: BuildMode,
    },
    /// A substitution started (Nix: "copying path '...' from '...'").
    SubstitutionStarted {
        goal: GoalId,
        slot: u32,
        substituter: String,
    },
    /// Bytes of a running substitution so far (sent as they come, and once complete when it
    /// succeeds). `download_expected` is the narinfo's `FileSize`, when it has one.
    SubstitutionProgress {
        goal: GoalId,
        download_done: u64,
        download_expected: Option<u64>,
        nar_done: u64,
        nar_expected: u64,
        /// The file being downloaded, when it comes over HTTP.
        url: Option<String>,
    },
    /// A line of a builder's output.
    LogLine {
        goal: GoalId,
        line: String,
    },
    /// A builder reported a new phase (`unpackPhase`, `buildPhase`, ...).
    PhaseChanged {
        goal: GoalId,
        phase: String,
    },
    Progress {
        progress: Progress,
    },
    /// A goal ended. `message` is Nix's error text for failures.
    GoalDone {
        goal: GoalId,
        status: BuildStatus,
        message: Option<String>,
        times: GoalTimes,
    },
    /// A finished goal runs again (after `Retry`, or when a goal that was stopped is needed
    /// again); a `GoalDone` follows later.
    GoalReopened {
        goal: GoalId,
    },
    /// A log message not tied to a result (Nix's warnings, errors printed along the way).
    Message {
        level: Level,
        text: String,
        goal: Option<GoalId>,
    },
    /// Every top-level goal has ended. `exit_status` is Nix's: 0, 1, or 100 + bits (1 timed
    /// out, 2 hash mismatch, 4 build failure, 8 not deterministic). A `Retry` may reopen the
    /// run; another `RunDone` follows then.
    RunDone {
        exit_status: u8,
    },
}

/// What a user may ask while a run is going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Stop a goal: kill its builder or substitution; it ends `Cancelled`, and goals waiting
    /// for it fail as if it had failed (keep-going rules apply).
    Cancel {
        goal: GoalId,
    },
    /// Cancel every top-level goal (and so everything).
    CancelAll,
    /// Start nothing new; let what runs finish; then end the run.
    Drain,
    /// Start nothing new until `Resume`.
    Pause,
    Resume,
    /// Run a failed or cancelled goal again, with the goals that failed only because of it,
    /// and reopen the run's unfinished top-level goals. A cached failure for it is cleared.
    Retry {
        goal: GoalId,
    },
    SetKeepGoing {
        keep_going: bool,
    },
    SetMaxJobs {
        max_jobs: u32,
    },
}

/// Events published together (the driver's unit of fan-out), shared by every subscriber.
pub type Batch = std::sync::Arc<Vec<Event>>;

/// A front-end's end of a live run: events in, commands out. The driver's handle implements
/// it (`engine::driver::Link`); a replay or a monitor can too. The TUI needs nothing else.
pub trait RunLink: Send + 'static {
    /// The next batch of events; `None` once the run's stream has ended.
    fn next_batch(&mut self) -> impl std::future::Future<Output = Option<Batch>> + Send;
    /// A batch if one is queued, without waiting.
    fn try_next_batch(&mut self) -> Option<Batch>;
    /// Events this subscriber lost because it fell behind (a lossy subscription).
    fn dropped(&self) -> u64;
    /// Sends a command; false if nobody takes commands any more.
    fn send(&self, command: Command) -> bool;
}

/// Build-time history, for ETAs: how long a derivation of a given name is expected to take.
/// The store's `drover.sqlite` answers with the median of the last builds of that name; a
/// simulation answers from its model.
pub trait BuildHistory: Send + Sync {
    /// Expected build time of a derivation called `name`, in milliseconds.
    fn expected_ms(&self, name: &str) -> Option<u64>;
}

/// No history at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHistory;

impl BuildHistory for NoHistory {
    fn expected_ms(&self, _name: &str) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_a_type_tag_and_flat_fields() {
        let e = Event {
            seq: 7,
            time: Time(1500),
            kind: EventKind::GoalDone {
                goal: GoalId(3),
                status: BuildStatus::DependencyFailed,
                message: Some("1 dependencies of derivation 'x' failed to build".into()),
                times: GoalTimes {
                    started: None,
                    stopped: Time(1500),
                    times_built: 0,
                    non_deterministic: false,
                },
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.starts_with(
                r#"{"seq":7,"time":1500,"type":"goal_done","goal":3,"status":"DependencyFailed""#
            ),
            "{json}"
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn states_and_commands_round_trip() {
        let s = GoalState::Waiting {
            reason: WaitReason::Lock {
                paths: vec!["/nix/store/x".into()],
                holder: Some(LockHolder {
                    pid: Some(42),
                    command: None,
                }),
                retry_at: Some(Time(5000)),
            },
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<GoalState>(&json).unwrap(), s);
        for c in [
            Command::Cancel { goal: GoalId(1) },
            Command::CancelAll,
            Command::SetMaxJobs { max_jobs: 4 },
            Command::Retry { goal: GoalId(9) },
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::to_string(&Command::Drain).unwrap(),
            r#"{"type":"drain"}"#
        );
    }

    #[test]
    fn success_statuses_are_nixs() {
        let ok: Vec<_> = [
            BuildStatus::Built,
            BuildStatus::Substituted,
            BuildStatus::AlreadyValid,
            BuildStatus::NoSubstituters,
            BuildStatus::Cancelled,
            BuildStatus::DependencyFailed,
        ]
        .into_iter()
        .filter(|s| s.success())
        .collect();
        assert_eq!(ok.len(), 3);
    }
}
