//! The real executor: carries out the scheduler's effects on a [`LocalStore`]. Output locks
//! are taken at once, without blocking (a busy lock is answered with its holder, and the
//! scheduler polls again); builds run as tasks of the driver's runtime
//! ([`Builder::run`]) and report back through a channel; time is the wall clock since the
//! run started. [`LocalStoreView`] answers the scheduler's store questions from the store's
//! database (and drover's, for cached failures).
//!
//! Substitution uses the run's [`RunSubstituters`]: a query is a task (answered from the
//! run's narinfo cache, or looked up on tokio's blocking pool), a substitution is a task with
//! a cancel flag that reports its bytes as it goes (at most every [`PROGRESS_EVERY`]) and
//! then its outcome. Substituters' warnings (retries, disabled caches) become messages of
//! the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::engine::api::{GoalId, Level, LockHolder, Time};
use crate::engine::build::parsed::ParsedDrv;
use crate::engine::build::{BuildEvent, Builder};
use crate::engine::driver::Executor;
use crate::engine::format::derivation::ByteSlice;
use crate::engine::format::nar::hash_path;
use crate::engine::format::{HashAlgo, StoreDir, StorePath};
use crate::engine::scheduler::{
    BuildOutcome, BuildRequest, DrvInfo, Effect, Input, StoreView, Ticket,
};
use crate::engine::settings::{Settings, SettingsError};
use crate::engine::store::drover_db::DroverDb;
use crate::engine::store::{LocalStore, PathLocks, TryLock};
use crate::engine::substitute::cache::Transport;
use crate::engine::substitute::{LogLevel, Logger, Progress, Substituters};

/// How often a running substitution reports its bytes at most.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Where substituters' messages go: standard error (as `warning: …`) until an executor
/// takes them into its run.
#[derive(Clone, Default)]
struct LogRoute(Arc<Mutex<Option<mpsc::UnboundedSender<Report>>>>);

impl LogRoute {
    fn logger(&self) -> Logger {
        let route = self.clone();
        Logger::new(move |level, text| {
            let level = match level {
                LogLevel::Warn => Level::Warn,
                LogLevel::Error => Level::Error,
            };
            let sender = route.0.lock().unwrap_or_else(|e| e.into_inner());
            match &*sender {
                Some(tx) => {
                    let _ = tx.send(Report::Input(Input::Message {
                        level,
                        text: text.to_owned(),
                    }));
                }
                None if level == Level::Warn => eprintln!("warning: {text}"),
                None => eprintln!("error: {text}"),
            }
        })
    }

    fn attach(&self, tx: mpsc::UnboundedSender<Report>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }
}

/// The binary caches a run substitutes from (`substituters`, opened), and where their
/// messages go. Cheap to clone.
#[derive(Clone)]
pub struct RunSubstituters {
    subs: Substituters,
    route: LogRoute,
}

impl RunSubstituters {
    /// Opens the caches the settings name for a store with `store_dir` (blocking: an HTTP
    /// cache's `nix-cache-info` is fetched; one that cannot be opened is left out with a
    /// warning on standard error). None with `substitute = false`.
    pub fn open(
        settings: &Settings,
        store_dir: &StoreDir,
    ) -> Result<RunSubstituters, SettingsError> {
        let (mut config, warnings) = settings.substituter_config(store_dir)?;
        let route = LogRoute::default();
        config.log = route.logger();
        for w in &warnings {
            config.log.warn(w);
        }
        Ok(RunSubstituters {
            subs: Substituters::open(config, store_dir),
            route,
        })
    }

    /// No caches at all.
    pub fn none(store_dir: &StoreDir) -> RunSubstituters {
        let config = crate::engine::substitute::SubstituterConfig::new(Vec::<String>::new());
        RunSubstituters {
            subs: Substituters::open(config, store_dir),
            route: LogRoute::default(),
        }
    }

    /// The scheduler's `substituters`.
    pub fn uris(&self) -> Vec<String> {
        self.subs.uris()
    }

    pub fn substituters(&self) -> &Substituters {
        &self.subs
    }
}

/// The scheduler's view of a [`LocalStore`].
pub struct LocalStoreView {
    store: Arc<LocalStore>,
    /// drover's database, opened on first use (cached failures).
    drover_db: Mutex<Option<DroverDb>>,
}

impl LocalStoreView {
    pub fn new(store: Arc<LocalStore>) -> LocalStoreView {
        LocalStoreView {
            store,
            drover_db: Mutex::new(None),
        }
    }

    /// Runs `f` on drover's database (opening it first); `None` if it cannot be opened.
    fn with_drover_db<T>(&self, f: impl FnOnce(&DroverDb) -> T) -> Option<T> {
        let mut db = self.drover_db.lock().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            *db = DroverDb::open(&self.store.config().state_dir).ok();
        }
        db.as_ref().map(f)
    }

    /// Remembers that building these outputs failed (`cache-failures`).
    pub fn cache_failure(&self, outputs: &[StorePath]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.with_drover_db(|db| {
            for p in outputs {
                let _ = db.cache_failure(&self.store.print(p), now);
            }
        });
    }

    /// Remembers how long a successful build of `drv` took, for the ETAs of later runs
    /// (keyed by the derivation's name, as the TUI looks them up). A failure to record is
    /// not a build failure.
    pub fn record_duration(&self, drv: &StorePath, took: Duration) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let name = drv.drv_name().unwrap_or(drv.name());
        self.with_drover_db(|db| {
            let _ = db.record_duration(name, &self.store.print(drv), took, now);
        });
    }

    /// Forgets cached failures of these outputs.
    pub fn clear_failure(&self, outputs: &[StorePath]) {
        self.with_drover_db(|db| {
            for p in outputs {
                let _ = db.clear_failure(&self.store.print(p));
            }
        });
    }
}

/// Summarises a derivation for the scheduler (Nix's `Derivation` plus `ParsedDerivation`).
pub fn drv_info(store: &LocalStore, drv_path: &StorePath) -> Result<DrvInfo, String> {
    let drv = store.read_derivation(drv_path).map_err(|e| e.to_string())?;
    let parsed = ParsedDrv::new(&drv, drv_path.name())?;
    let drv_type = drv.derivation_type().map_err(|e| e.to_string())?;
    Ok(DrvInfo {
        name: drv_path.drv_name().unwrap_or(drv_path.name()).to_owned(),
        outputs: drv
            .output_paths()
            .into_iter()
            .map(|(name, path)| (name.to_owned(), path.cloned()))
            .collect(),
        input_drvs: drv
            .input_drvs
            .iter()
            .map(|(p, names)| (p.clone(), names.iter().cloned().collect()))
            .collect(),
        input_srcs: drv.input_srcs.iter().cloned().collect(),
        platform: drv.system.to_str_lossy().into_owned(),
        fixed_output: !drv_type.is_sandboxed(),
        prefer_local_build: parsed.prefer_local_build()?,
        allow_substitutes: parsed.substitutes_allowed()?,
        required_features: parsed.required_system_features()?.into_iter().collect(),
    })
}

impl StoreView for LocalStoreView {
    fn is_valid(&self, path: &StorePath) -> bool {
        self.store.is_valid(path).unwrap_or(false)
    }

    fn load_derivation(&self, drv: &StorePath) -> Result<Arc<DrvInfo>, String> {
        drv_info(&self.store, drv).map(Arc::new)
    }

    fn has_cached_failure(&self, path: &StorePath) -> bool {
        let printed = self.store.print(path);
        self.with_drover_db(|db| db.has_cached_failure(&printed).unwrap_or(false))
            .unwrap_or(false)
    }

    fn path_contents_good(&self, path: &StorePath) -> bool {
        let Ok(Some(info)) = self.store.query_path_info(path) else {
            return false;
        };
        let real = self.store.real_path(path);
        hash_path(&real, info.nar_hash.algo()).is_ok_and(|(h, _)| h == info.nar_hash)
            || hash_path(&real, HashAlgo::Sha256).is_ok_and(|(h, _)| h == info.nar_hash)
    }

    fn references(&self, path: &StorePath) -> Vec<StorePath> {
        self.store
            .query_references(path)
            .map(|r| r.into_iter().collect())
            .unwrap_or_default()
    }
}

/// The URL of the file an HTTP cache has for `path` (Nix's file transfer); `None` for
/// another kind of cache.
fn http_url(subs: &Substituters, path: &StorePath, sub: usize) -> Option<String> {
    let cache = subs.cache(sub)?;
    if !matches!(cache.transport(), Transport::Http(_)) {
        return None;
    }
    let info = subs.narinfo(path, sub).ok()??;
    Some(if info.url.contains("://") {
        info.url.clone()
    } else {
        format!("{}/{}", cache.uri(), info.url)
    })
}

/// What build and substitution tasks send back.
enum Report {
    Input(Input),
    /// The task of this build or substitution ended (after its last input).
    Done(Ticket),
}

struct RunningSubstitution {
    cancel: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

struct RunningBuild {
    kill: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    drv_path: StorePath,
    started: Instant,
}

/// Carries out effects for real (see the module doc).
pub struct LocalExecutor {
    builder: Arc<Builder>,
    view: LocalStoreView,
    start: Instant,
    tx: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
    builds: HashMap<Ticket, RunningBuild>,
    locks: HashMap<GoalId, PathLocks>,
    subs: Substituters,
    substitutions: HashMap<Ticket, RunningSubstitution>,
    /// Narinfo lookups in flight (aborted at shutdown).
    queries: tokio::task::JoinSet<()>,
}

impl LocalExecutor {
    /// An executor building with `builder` on its store and substituting from `subs` (the
    /// scheduler's `substituters` must be `subs.uris()`). Call within a tokio runtime.
    pub fn new(builder: Arc<Builder>, subs: RunSubstituters) -> LocalExecutor {
        let (tx, rx) = mpsc::unbounded_channel();
        subs.route.attach(tx.clone());
        LocalExecutor {
            view: LocalStoreView::new(builder.store().clone()),
            builder,
            start: Instant::now(),
            tx,
            rx,
            builds: HashMap::new(),
            locks: HashMap::new(),
            subs: subs.subs,
            substitutions: HashMap::new(),
            queries: tokio::task::JoinSet::new(),
        }
    }

    pub fn view(&self) -> &LocalStoreView {
        &self.view
    }

    /// Kills what still runs and waits until every build and substitution task has cleaned
    /// up.
    pub async fn shutdown(&mut self) {
        for b in self.builds.values_mut() {
            if let Some(kill) = b.kill.take() {
                let _ = kill.send(());
            }
        }
        for s in self.substitutions.values() {
            s.cancel.store(true, Ordering::Relaxed);
        }
        self.queries.abort_all();
        for (_, b) in self.builds.drain() {
            let _ = b.task.await;
        }
        for (_, s) in self.substitutions.drain() {
            let _ = s.task.await;
        }
        while self.queries.join_next().await.is_some() {}
        self.locks.clear();
    }

    fn query(&mut self, ticket: Ticket, path: StorePath, substituter: usize) {
        let (subs, tx) = (self.subs.clone(), self.tx.clone());
        self.queries.spawn(async move {
            let answer = subs.query(path, substituter).await;
            let _ = tx.send(Report::Input(Input::SubstituteInfo { ticket, answer }));
        });
    }

    fn start_substitution(
        &mut self,
        ticket: Ticket,
        path: StorePath,
        substituter: usize,
        repair: bool,
    ) {
        let (subs, tx) = (self.subs.clone(), self.tx.clone());
        let store = self.builder.store().clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let progress_tx = tx.clone();
        let mut last: Option<Instant> = None;
        // Runs on the blocking thread of the substitution, where the narinfo lookup (cached
        // by the query) may block.
        let (url_subs, url_path) = (subs.clone(), path.clone());
        let mut url: Option<Option<String>> = None;
        let progress = move |p: Progress| {
            let complete = p.nar_done >= p.nar_expected;
            if !complete && last.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return;
            }
            last = Some(Instant::now());
            let url = url
                .get_or_insert_with(|| http_url(&url_subs, &url_path, substituter))
                .clone();
            let _ = progress_tx.send(Report::Input(Input::SubstitutionProgress {
                ticket,
                download_done: p.download_done,
                nar_done: p.nar_done,
                url,
            }));
        };
        let flag = cancel.clone();
        let task = tokio::spawn(async move {
            let outcome = subs
                .substitute(store, path, substituter, repair, flag, progress)
                .await;
            let _ = tx.send(Report::Input(Input::SubstitutionFinished {
                ticket,
                outcome,
            }));
            let _ = tx.send(Report::Done(ticket));
        });
        self.substitutions
            .insert(ticket, RunningSubstitution { cancel, task });
    }

    fn try_lock(&mut self, ticket: Ticket, paths: &[StorePath]) -> Input {
        match self.builder.store().try_lock_paths(paths) {
            Ok(TryLock::Acquired(locks)) => {
                self.locks.insert(ticket.goal, locks);
                Input::LocksAcquired { ticket }
            }
            Ok(TryLock::Busy { holder, .. }) => Input::LocksBusy {
                ticket,
                holder: holder.map(|h| LockHolder {
                    pid: Some(h.pid),
                    command: h.command,
                }),
            },
            // A lock that cannot even be tried is busy as far as the goal knows; it retries.
            Err(_) => Input::LocksBusy {
                ticket,
                holder: None,
            },
        }
    }

    fn start_build(&mut self, ticket: Ticket, request: BuildRequest) {
        let drv_path = request.drv_path.clone();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let tx = self.tx.clone();
        let builder = self.builder.clone();
        let events_tx = tx.clone();
        let build = async move {
            let events = move |e: BuildEvent| {
                let input = match e {
                    BuildEvent::Started { pid } => Input::BuildStarted { ticket, pid },
                    BuildEvent::Log(line) => Input::BuildLog { ticket, line },
                    BuildEvent::Phase(phase) => Input::BuildPhase { ticket, phase },
                    BuildEvent::Note(text) => Input::BuildNote { ticket, text },
                };
                let _ = events_tx.send(Report::Input(input));
            };
            let killed = async {
                // A dropped sender (the executor went away) kills the build too.
                let _ = kill_rx.await;
            };
            builder.run(request, events, killed).await
        };
        let task = tokio::spawn(async move {
            // A build that panics fails its goal rather than leaving it waiting forever.
            let outcome = tokio::spawn(build).await.unwrap_or_else(|e| {
                Some(BuildOutcome::MiscFailure {
                    message: format!("the build failed unexpectedly: {e}"),
                })
            });
            if let Some(outcome) = outcome {
                let _ = tx.send(Report::Input(Input::BuildFinished { ticket, outcome }));
            }
            let _ = tx.send(Report::Done(ticket));
        });
        self.builds.insert(
            ticket,
            RunningBuild {
                kill: Some(kill_tx),
                task,
                drv_path,
                started: Instant::now(),
            },
        );
    }

    /// The input a report carries, bookkeeping done; `None` for a task's end.
    fn received(&mut self, report: Report) -> Option<Input> {
        match report {
            Report::Input(input) => {
                if let Input::BuildFinished {
                    ticket,
                    outcome: BuildOutcome::Success,
                } = &input
                    && let Some(b) = self.builds.get(ticket)
                {
                    self.view.record_duration(&b.drv_path, b.started.elapsed());
                }
                Some(input)
            }
            Report::Done(ticket) => {
                self.builds.remove(&ticket);
                self.substitutions.remove(&ticket);
                None
            }
        }
    }
}

impl Executor for LocalExecutor {
    fn store(&self) -> &dyn StoreView {
        &self.view
    }

    fn now(&self) -> Time {
        Time::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn execute(&mut self, effect: Effect, immediate: &mut Vec<Input>) {
        match effect {
            Effect::TryLockOutputs { ticket, paths } => {
                let answer = self.try_lock(ticket, &paths);
                immediate.push(answer);
            }
            Effect::UnlockOutputs {
                goal,
                delete_lock_files,
            } => {
                if let Some(mut locks) = self.locks.remove(&goal) {
                    locks.set_deletion(delete_lock_files);
                    locks.unlock();
                }
            }
            Effect::StartBuild { ticket, request } => self.start_build(ticket, *request),
            Effect::KillBuild { ticket } => {
                if let Some(kill) = self.builds.get_mut(&ticket).and_then(|b| b.kill.take()) {
                    let _ = kill.send(());
                }
            }
            Effect::QuerySubstitute {
                ticket,
                path,
                substituter,
            } => self.query(ticket, path, substituter),
            Effect::StartSubstitution {
                ticket,
                path,
                substituter,
                repair,
            } => self.start_substitution(ticket, path, substituter, repair),
            Effect::CancelSubstitution { ticket } => {
                if let Some(s) = self.substitutions.get(&ticket) {
                    s.cancel.store(true, Ordering::Relaxed);
                }
            }
            Effect::CacheFailure { outputs, .. } => self.view.cache_failure(&outputs),
            Effect::ClearFailure { outputs } => self.view.clear_failure(&outputs),
        }
    }

    fn poll_ready(&mut self) -> Option<Input> {
        while let Ok(report) = self.rx.try_recv() {
            if let Some(input) = self.received(report) {
                return Some(input);
            }
        }
        None
    }

    async fn next_input(&mut self, deadline: Option<Time>) -> Option<Input> {
        let until = deadline.map(|d| {
            let from_start = Duration::from_millis(d.as_millis());
            tokio::time::Instant::from_std(self.start + from_start)
        });
        loop {
            let report = match until {
                Some(at) => tokio::select! {
                    r = self.rx.recv() => r,
                    () = tokio::time::sleep_until(at) => return None,
                },
                None => self.rx.recv().await,
            };
            // The executor holds a sender, so the channel never closes.
            let report = report?;
            if let Some(input) = self.received(report) {
                return Some(input);
            }
        }
    }
}
