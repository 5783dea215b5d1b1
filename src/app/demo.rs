//! `drover demo`: real builds of an embedded workload, in the terminal UI, with nothing but
//! the host's `/bin/sh`. The workload (`assets/demo/`: a plan file and its builder scripts)
//! describes a small C application with its libraries, tests and documentation: 39
//! derivations, source tarballs among them as fixed-output derivations, `dev`, `man` and
//! `bin` outputs, phases and compiler-like logs, builds of 1-8 s (`--speed` divides them).
//!
//! It is written to a throwaway directory, instantiated into a throwaway store there and
//! built by the same code as `drover build` ([`run_build`]), sandboxed where the kernel
//! allows (with `/bin/sh`, its libraries and drover itself bound in), else unsandboxed with
//! a notice. Three things happen on purpose, so that the TUI has them to show: the demo holds
//! the output lock of one source for a few seconds (a lock wait, with its holder), one test
//! suite fails its first run and the demo retries it as a user would (a [`Watcher`] sends
//! `Retry`), and the run ends with a summary. The builders sleep and create directories with
//! drover itself (`drover __demo-tool`): a shell has no `sleep` or `mkdir` built in.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bstr::{BStr, ByteSlice};
use clap::Args;

use crate::app::AppError;
use crate::app::build::{RunOptions, resolve_log_format, run_build};
use crate::app::live::Watcher;
use crate::app::output::LogFormat;
use crate::app::targets::plan_roots;
use crate::engine::api::{
    BuildHistory, BuildMode, BuildStatus, Command, Event, EventKind, GoalId, GoalState, LockHolder,
    Time, WaitReason,
};
use crate::engine::build::sandbox::namespaces_available;
use crate::engine::executor::RunSubstituters;
use crate::engine::format::StoreDir;
use crate::engine::plan::{Instantiation, Plan};
use crate::engine::settings::{SandboxMode, Settings};
use crate::engine::store::canon::delete_path;
use crate::engine::store::{LocalStore, StoreConfig, TryLock};

/// The first argument that makes the drover binary the builders' helper ([`tool_main`]).
pub const TOOL_ARG: &str = "__demo-tool";

/// The workload's files: the plan and the scripts it imports, written side by side.
pub const FILES: [(&str, &str); 7] = [
    ("plan.toml", include_str!("../../assets/demo/plan.toml")),
    ("setup.sh", include_str!("../../assets/demo/setup.sh")),
    ("fetch.sh", include_str!("../../assets/demo/fetch.sh")),
    ("build.sh", include_str!("../../assets/demo/build.sh")),
    ("test.sh", include_str!("../../assets/demo/test.sh")),
    ("docs.sh", include_str!("../../assets/demo/docs.sh")),
    ("release.sh", include_str!("../../assets/demo/release.sh")),
];

/// The test suite that fails its first run (see `assets/demo/test.sh`).
pub const FLAKY: &str = "tide-net-tests-2.4.0";

/// The source whose output lock the demo holds (from the start until a few seconds after
/// the goal was seen waiting for it): off the critical path, so the wait stalls nothing.
pub const LOCKED: &str = "tzdata2024a.tar.gz";

/// How long the lock is held, and how long the demo "looks" at the failed suite before it
/// retries it (milliseconds at speed 1).
const LOCK_HELD_MS: f64 = 4000.0;
const RETRY_AFTER_MS: f64 = 1500.0;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Build slots (`--max-jobs`).
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: u32,
    /// Run the builds this many times faster (their sleeps are divided by it).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Output format (default: the terminal UI on a terminal, plain lines otherwise).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Keep the throwaway directory (workload, store, logs) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Build without the sandbox even where the kernel offers it.
    #[arg(long)]
    pub no_sandbox: bool,
}

/// Runs the demo; the run's exit status.
pub fn demo(args: &DemoArgs) -> Result<u8, AppError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(AppError::Usage(format!(
            "--speed must be a positive number, not {}",
            args.speed
        )));
    }
    let scratch = tempfile::Builder::new()
        .prefix("drover-demo-")
        .tempdir()
        .map_err(|e| AppError::io("creating", Path::new("a temporary directory"), e))?;
    // The store dir must be the real path: builders and the sandbox see it as it is.
    let root = scratch
        .path()
        .canonicalize()
        .map_err(|e| AppError::io("resolving", scratch.path(), e))?;
    let result = run_demo(args, &root);
    if args.keep {
        let kept = scratch.keep();
        println!(
            "the demo's files are kept in {} (store: {}/store)",
            kept.display(),
            root.display()
        );
    } else {
        // Store objects are read-only; `delete_path` makes them writable first.
        delete_path(&root).map_err(|e| AppError::Usage(e.to_string()))?;
    }
    result
}

/// The plan with its placeholders filled in.
pub fn plan_text(tool: &Path, speed: f64, state: &Path) -> String {
    FILES[0]
        .1
        .replace("@tool@", &tool.to_string_lossy())
        .replace("@speed@", &speed.to_string())
        .replace("@state@", &state.to_string_lossy())
}

/// Writes the workload into `dir`; the plan's path.
fn write_workload(dir: &Path, plan: &str) -> Result<PathBuf, AppError> {
    std::fs::create_dir_all(dir).map_err(|e| AppError::io("creating", dir, e))?;
    for (name, text) in FILES {
        let path = dir.join(name);
        let text = if name == "plan.toml" { plan } else { text };
        std::fs::write(&path, text).map_err(|e| AppError::io("writing", &path, e))?;
    }
    Ok(dir.join(FILES[0].0))
}

/// A store whose store dir is `root/store` (files where their paths say, so builds need no
/// sandbox), with its state and logs beside it.
fn throwaway_store(root: &Path) -> Result<LocalStore, AppError> {
    let store_dir = root.join("store");
    let config = StoreConfig {
        store_dir: StoreDir::new(store_dir.to_string_lossy())?,
        real_store_dir: store_dir,
        state_dir: root.join("var"),
        log_dir: root.join("log"),
    };
    Ok(LocalStore::open(config)?)
}

/// Turns the sandbox on where the kernel allows it, with what the builders need bound in:
/// the shell and the libraries it (and drover) load, drover itself, and the directory the
/// flaky test counts its attempts in. Otherwise the reason it is off.
fn use_sandbox(
    settings: &mut Settings,
    no_sandbox: bool,
    tool: &Path,
    state: &Path,
) -> Result<(), String> {
    if no_sandbox {
        return Err("--no-sandbox".into());
    }
    namespaces_available()
        .map_err(|why| format!("this kernel refuses the sandbox's namespaces: {why}"))?;
    settings.sandbox = SandboxMode::Enabled;
    let paths = &mut settings.sandboxing.paths;
    paths.insert("/bin/sh".into());
    // Where a dynamically linked shell finds its loader and libraries: the usual places,
    // and Nix's store on NixOS-like systems (whichever exist).
    for dir in [
        "/lib",
        "/lib64",
        "/lib32",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib32",
        "/nix/store",
    ] {
        paths.insert(format!("{dir}?"));
    }
    paths.insert(tool.to_string_lossy().into_owned());
    paths.insert(state.to_string_lossy().into_owned());
    Ok(())
}

fn run_demo(args: &DemoArgs, root: &Path) -> Result<u8, AppError> {
    let tool = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| AppError::io("finding", Path::new("drover"), e))?;
    let state = root.join("retries");
    let build_dir = root.join("build");
    for d in [&state, &build_dir] {
        std::fs::create_dir_all(d).map_err(|e| AppError::io("creating", d, e))?;
    }
    let plan_file = write_workload(
        &root.join("workload"),
        &plan_text(&tool, args.speed, &state),
    )?;
    let store = Arc::new(throwaway_store(root)?);

    let mut settings = Settings {
        max_jobs: args.jobs.max(1),
        keep_going: true,
        // A busy lock is tried again after this many seconds (Nix's default is 5): every
        // two seconds at speed 1, every second when faster.
        poll_interval: (2.0 / args.speed).round().max(1.0) as u64,
        build_dir: Some(build_dir),
        // A throwaway store has nothing to substitute: no substitution goals to show.
        substitute: false,
        ..Settings::default()
    };
    let sandbox = use_sandbox(&mut settings, args.no_sandbox, &tool, &state);
    if let Err(why) = &sandbox {
        eprintln!("note: the demo builds without a sandbox ({why})");
    }

    let plan = Plan::load(&plan_file)?;
    let instantiation = plan.instantiate_in_store(&store, None)?;
    let targets: Vec<_> = plan_roots(&instantiation)
        .into_iter()
        .map(|w| w.target)
        .collect();
    let locked = instantiation
        .derivations
        .iter()
        .find(|d| d.name == LOCKED)
        .ok_or_else(|| AppError::Usage(format!("the demo plan has no {LOCKED}")))?;
    let locked_outputs: Vec<_> = store
        .derivation_output_paths(&locked.drv_path)?
        .into_values()
        .collect();
    // Held until the goal has been seen waiting for it, then a few (scaled) seconds more: the
    // wait shows whatever order the goals start in.
    // The run's end (its sender dropped) releases the lock at once.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let (ended_tx, ended_rx) = std::sync::mpsc::channel::<()>();
    let speed = args.speed;
    let release = match store.try_lock_paths(&locked_outputs)? {
        TryLock::Acquired(locks) => Some(std::thread::spawn(move || {
            // An error: the run ended without the wait (the watcher is gone).
            if seen_rx.recv().is_ok() {
                let held = Duration::from_secs_f64(LOCK_HELD_MS / 1000.0 / speed);
                let _ = ended_rx.recv_timeout(held);
            }
            drop(locks);
        })),
        TryLock::Busy { .. } => None,
    };

    let history = PlanHistory::new(&instantiation, speed);
    let report = Arc::new(Mutex::new(DemoReport::default()));
    let run = RunOptions {
        title: "drover demo".into(),
        format: resolve_log_format(args.log_format),
        mode: BuildMode::Normal,
        plain_summary: true,
        watcher: Some(watcher(report.clone(), speed, state.clone(), seen_tx)),
        history: Some(Arc::new(history)),
    };
    let substituters = RunSubstituters::open(&settings, store.store_dir())
        .map_err(|e| AppError::Usage(e.to_string()))?;
    let status = run_build(store, &settings, substituters, &targets, run)?;
    drop(ended_tx);
    if let Some(r) = release {
        let _ = r.join();
    }
    let report = report.lock().unwrap_or_else(|e| e.into_inner());
    let sandboxed = match &sandbox {
        Ok(()) => "sandboxed".to_owned(),
        Err(why) => format!("without a sandbox ({why})"),
    };
    let text = report.render(settings.max_jobs, &sandboxed);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(AppError::Stdout)?;
    Ok(status)
}

/// The TUI's ETAs for the demo: a throwaway store has no record of earlier builds, but the
/// plan says how long each build takes (`buildTime`, in milliseconds at speed 1).
pub struct PlanHistory {
    expected: HashMap<String, u64>,
}

impl PlanHistory {
    pub fn new(plan: &Instantiation, speed: f64) -> PlanHistory {
        let expected = plan
            .derivations
            .iter()
            .filter_map(|d| {
                let ms: f64 = d
                    .drv
                    .env
                    .get(BStr::new("buildTime"))?
                    .to_str()
                    .ok()?
                    .parse()
                    .ok()?;
                Some((d.name.clone(), (ms / speed).round() as u64))
            })
            .collect();
        PlanHistory { expected }
    }
}

impl BuildHistory for PlanHistory {
    fn expected_ms(&self, name: &str) -> Option<u64> {
        self.expected.get(name).copied()
    }
}

/// The demo's watcher: it folds every event into `report`, tells `lock_seen` when the goal
/// [`LOCKED`] waits for its lock (with the holder known), and retries [`FLAKY`] once, a moment
/// after it failed, marking the retry in `state` for the suite to see, as a user does with the
/// TUI's `r`: its dependents still waiting wait for the new attempt, and the run goes on.
/// Nothing is retried once anything was cancelled (an interrupt, the TUI's `C`).
pub fn watcher(
    report: Arc<Mutex<DemoReport>>,
    speed: f64,
    state: PathBuf,
    lock_seen: Sender<()>,
) -> Watcher {
    Box::new(move |handle, mut events| {
        Box::pin(async move {
            let mut handle = Some(handle);
            let mut lock_seen = Some(lock_seen);
            let mut retried = false;
            // How many times the suite ended: once failed, then (retried) once more.
            let mut flaky_ends = 0;
            let cancelled = Arc::new(AtomicBool::new(false));
            while let Some(batch) = events.recv().await {
                let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
                for e in batch.iter() {
                    report.event(e);
                    if report.any_cancelled() {
                        cancelled.store(true, Ordering::SeqCst);
                    }
                    match &e.kind {
                        EventKind::StateChanged {
                            goal,
                            state:
                                GoalState::Waiting {
                                    reason:
                                        WaitReason::Lock {
                                            holder: Some(_), ..
                                        },
                                },
                        } if report.name(*goal) == LOCKED => {
                            if let Some(tx) = lock_seen.take() {
                                let _ = tx.send(());
                            }
                        }
                        EventKind::GoalDone { goal, status, .. } if report.name(*goal) == FLAKY => {
                            let retry = is_root_failure(*status)
                                && !retried
                                && !cancelled.load(Ordering::SeqCst);
                            if let (true, Some(h)) = (retry, &handle) {
                                retried = true;
                                // What the suite sees when it runs again (see test.sh).
                                let mark = state.join(format!("{FLAKY}.retry"));
                                if let Err(e) = std::fs::write(&mark, "") {
                                    report.problem = Some(format!("{}: {e}", mark.display()));
                                }
                                let pause = RETRY_AFTER_MS / 1000.0 / speed;
                                let (h, cancelled, goal) = (h.clone(), cancelled.clone(), *goal);
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                                    if !cancelled.load(Ordering::SeqCst) {
                                        h.send(Command::Retry { goal });
                                    }
                                });
                            }
                            flaky_ends += 1;
                        }
                        // The run may end before the retry is sent (the suite was the last
                        // build): the handle keeps it open until the retried suite ended.
                        EventKind::RunDone { .. } => {
                            let waiting_for_retry =
                                retried && flaky_ends < 2 && !cancelled.load(Ordering::SeqCst);
                            if !waiting_for_retry {
                                handle = None;
                            }
                        }
                        _ => {}
                    }
                }
            }
        })
    })
}

/// Whether a goal ending with `status` failed by itself (not for an input, not stopped).
pub fn is_root_failure(status: BuildStatus) -> bool {
    !status.success()
        && !matches!(
            status,
            BuildStatus::DependencyFailed
                | BuildStatus::Cancelled
                | BuildStatus::NoSubstituters
                | BuildStatus::IncompleteClosure
        )
}

/// What the demo's summary says, folded from the run's events.
#[derive(Debug, Default)]
pub struct DemoReport {
    names: HashMap<GoalId, String>,
    /// Each goal's last status.
    status: BTreeMap<GoalId, BuildStatus>,
    /// Goals that failed by themselves, with how often.
    failures: BTreeMap<GoalId, u32>,
    /// Goals run again after they ended.
    reopened: BTreeMap<GoalId, u32>,
    /// Goals waiting for a lock: since when, and who held it.
    lock_waits: BTreeMap<GoalId, LockWait>,
    exit_status: Option<u8>,
    total: Time,
    /// What went wrong in the demo itself (not in a build).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct LockWait {
    since: Time,
    until: Option<Time>,
    holder: Option<LockHolder>,
}

impl DemoReport {
    pub fn event(&mut self, e: &Event) {
        match &e.kind {
            EventKind::GoalAdded { goal, name, .. } => {
                self.names.insert(*goal, name.clone());
            }
            EventKind::StateChanged { goal, state } => match state {
                GoalState::Waiting {
                    reason: WaitReason::Lock { holder, .. },
                } => {
                    let wait = self.lock_waits.entry(*goal).or_insert(LockWait {
                        since: e.time,
                        ..LockWait::default()
                    });
                    if holder.is_some() {
                        wait.holder.clone_from(holder);
                    }
                }
                _ => {
                    if let Some(w) = self.lock_waits.get_mut(goal)
                        && w.until.is_none()
                    {
                        w.until = Some(e.time);
                    }
                }
            },
            EventKind::GoalDone { goal, status, .. } => {
                if is_root_failure(*status) {
                    *self.failures.entry(*goal).or_default() += 1;
                }
                self.status.insert(*goal, *status);
            }
            EventKind::GoalReopened { goal } => *self.reopened.entry(*goal).or_default() += 1,
            EventKind::RunDone { exit_status } => {
                self.exit_status = Some(*exit_status);
                self.total = e.time;
            }
            _ => {}
        }
    }

    /// Whether a goal was stopped (its last status is `Cancelled`).
    pub fn any_cancelled(&self) -> bool {
        self.status.values().any(|s| *s == BuildStatus::Cancelled)
    }

    pub fn name(&self, goal: GoalId) -> &str {
        self.names.get(&goal).map_or("?", String::as_str)
    }

    /// Goals retried after failing by themselves, with their last status.
    pub fn retried(&self) -> Vec<(&str, u32, Option<BuildStatus>)> {
        self.reopened
            .keys()
            .filter_map(|g| {
                let failures = *self.failures.get(g)?;
                Some((self.name(*g), failures, self.status.get(g).copied()))
            })
            .collect()
    }

    /// Goals whose locks were busy (with the holder, once known), and how long they waited.
    fn waited_for_locks(&self) -> impl Iterator<Item = (&str, &LockWait, u64)> {
        self.lock_waits.iter().filter_map(|(g, w)| {
            let until = w.until.unwrap_or(self.total);
            w.holder
                .is_some()
                .then(|| (self.name(*g), w, until.millis_since(w.since)))
        })
    }

    /// The summary printed when the demo ends.
    pub fn render(&self, jobs: u32, sandboxed: &str) -> String {
        let count = |s: BuildStatus| self.status.values().filter(|&&x| x == s).count();
        let failed = self
            .status
            .values()
            .filter(|&&s| is_root_failure(s))
            .count();
        let mut text = String::new();
        let cancelled = match count(BuildStatus::Cancelled) {
            0 => String::new(),
            n => format!(", {n} cancelled"),
        };
        let _ = writeln!(
            text,
            "drover demo: {} derivations built, {} failed, {} not built for a failed \
             input{cancelled}, in {} with {jobs} build slots, {sandboxed}",
            count(BuildStatus::Built),
            failed,
            count(BuildStatus::DependencyFailed),
            self.total
        );
        for (name, failures, status) in self.retried() {
            let outcome = match status {
                Some(BuildStatus::Built) => "passed on retry".to_owned(),
                Some(s) => format!("ended {s} on retry"),
                None => "was retried".to_owned(),
            };
            let runs = if failures == 1 { "run" } else { "runs" };
            let _ = writeln!(
                text,
                "  retried: {name} failed {failures} {runs} (flaky test), {outcome}"
            );
        }
        for (name, wait, ms) in self.waited_for_locks() {
            let holder = wait.holder.as_ref().map_or(String::new(), |h| {
                let pid = h.pid.map_or("?".into(), |p| p.to_string());
                match &h.command {
                    Some(c) => format!(", held by pid {pid} ({c})"),
                    None => format!(", held by pid {pid}"),
                }
            });
            let _ = writeln!(
                text,
                "  lock wait: {name} waited {} for its output lock{holder}",
                Time(ms)
            );
        }
        if let Some(p) = &self.problem {
            let _ = writeln!(text, "  problem: {p}");
        }
        match self.exit_status {
            Some(s) => {
                let _ = writeln!(text, "  exit status {s}");
            }
            None => text.push_str("  the run did not finish\n"),
        }
        text
    }
}

/// `drover __demo-tool`: what the demo's builders cannot do with shell builtins.
/// `sleep MS` waits MS milliseconds divided by `$DEMO_SPEED`; `mkdir DIR…` creates
/// directories with their parents. Exits with 0, or 1 after a message.
pub fn tool_main() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let code = match tool(&args) {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "drover {TOOL_ARG}: {message}");
            1
        }
    };
    std::process::exit(code)
}

fn tool(args: &[String]) -> Result<(), String> {
    match args.split_first() {
        Some((cmd, [ms])) if cmd == "sleep" => {
            let ms: f64 = ms
                .parse()
                .map_err(|_| format!("sleep: bad duration '{ms}'"))?;
            let speed = std::env::var("DEMO_SPEED")
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(1.0);
            let secs = (ms / 1000.0 / speed).max(0.0);
            std::thread::sleep(Duration::from_secs_f64(secs));
            Ok(())
        }
        Some((cmd, dirs)) if cmd == "mkdir" => dirs
            .iter()
            .try_for_each(|d| std::fs::create_dir_all(d).map_err(|e| format!("mkdir: '{d}': {e}"))),
        _ => Err("usage: sleep MILLISECONDS | mkdir DIR...".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bstr::BStr;

    use crate::engine::format::derivation::DerivationOutput;
    use crate::engine::format::hash::{HashAlgo, hash_bytes};

    fn instantiate() -> crate::engine::plan::Instantiation {
        let text = plan_text(Path::new("/drover"), 1.0, Path::new("/state"));
        let plan = Plan::parse(&text, Path::new("/demo/plan.toml")).unwrap();
        let store_dir = StoreDir::new("/nix/store").unwrap();
        let mut import = |p: &Path| {
            let name = p.file_name().unwrap().to_string_lossy();
            Ok(crate::engine::format::StorePath::from_base_name(&format!(
                "{}-{name}",
                "0".repeat(32)
            ))
            .unwrap())
        };
        plan.instantiate(&store_dir, None, &mut import).unwrap()
    }

    #[test]
    fn the_etas_come_from_the_plans_build_times_scaled_by_the_speed() {
        let history = PlanHistory::new(&instantiate(), 2.0);
        assert_eq!(history.expected_ms("tide-net-tests-2.4.0"), Some(1200));
        assert_eq!(
            history.expected_ms("tide-integration-tests-2.4.0"),
            Some(2000)
        );
        assert_eq!(history.expected_ms(FLAKY), Some(1200));
        assert!(history.expected.len() >= 29, "every build but the sources");
        assert_eq!(history.expected_ms("no-such-build"), None);
    }

    #[test]
    fn every_source_hash_is_the_hash_of_its_contents() {
        let inst = instantiate();
        let mut checked = 0;
        for d in &inst.derivations {
            let Some(DerivationOutput::Fixed { hash, .. }) = d.drv.outputs.get("out") else {
                continue;
            };
            let contents = &d.drv.env[BStr::new("contents")];
            let actual = hash_bytes(HashAlgo::Sha256, contents);
            assert_eq!(
                hash.hash.to_sri(),
                actual.to_sri(),
                "{}: the plan's outputHash",
                d.name
            );
            checked += 1;
        }
        assert_eq!(checked, 10, "ten source tarballs");
    }

    #[test]
    fn the_workload_has_the_promised_shape() {
        let inst = instantiate();
        let names: Vec<&str> = inst.derivations.iter().map(|d| d.name.as_str()).collect();
        assert!((35..=45).contains(&names.len()), "{}", names.len());
        for special in [FLAKY, LOCKED] {
            assert!(names.contains(&special), "{special}");
        }
        let outputs = |o: &str| {
            inst.derivations
                .iter()
                .filter(|d| d.drv.outputs.contains_key(o))
                .count()
        };
        assert!(outputs("dev") >= 10 && outputs("man") >= 5 && outputs("bin") >= 1);
        for d in &inst.derivations {
            let ms: u64 = d.drv.env[BStr::new("buildTime")]
                .to_string()
                .parse()
                .unwrap();
            assert!((1000..=8000).contains(&ms), "{}: {ms} ms", d.name);
        }
    }

    #[test]
    fn the_tool_sleeps_scaled_and_makes_directories() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        tool(&["mkdir".into(), deep.to_string_lossy().into_owned()]).unwrap();
        assert!(deep.is_dir());
        tool(&["sleep".into(), "0".into()]).unwrap();
        assert!(tool(&["sleep".into(), "soon".into()]).is_err());
        assert!(tool(&["frobnicate".into()]).is_err());
    }
}
