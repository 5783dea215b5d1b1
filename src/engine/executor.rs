//! The real executor: carries out the scheduler's effects on a [`LocalStore`]. Output locks
//! are taken at once, without blocking (a busy lock is answered with its holder, and the
//! scheduler polls again); builds run as tasks of the driver's runtime
//! ([`Builder::run`]) and report back through a channel; time is the wall clock since the
//! run started. [`LocalStoreView`] answers the scheduler's store questions from the store's
//! database (and drover's, for cached failures).
//!
//! Substituters arrive with the binary-cache work: until then every query finds nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::engine::api::{GoalId, LockHolder, Time};
use crate::engine::build::parsed::ParsedDrv;
use crate::engine::build::{BuildEvent, Builder};
use crate::engine::driver::Executor;
use crate::engine::format::derivation::ByteSlice;
use crate::engine::format::nar::hash_path;
use crate::engine::format::{HashAlgo, StorePath};
use crate::engine::scheduler::{
    BuildOutcome, BuildRequest, DrvInfo, Effect, Input, StoreView, SubstituteAnswer,
    SubstitutionOutcome, Ticket,
};
use crate::engine::store::drover_db::DroverDb;
use crate::engine::store::{LocalStore, PathLocks, TryLock};

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

    /// Forgets cached failures of these outputs.
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

/// What build tasks send back.
enum Report {
    Input(Input),
    /// The task of this build ended (after its last input).
    Done(Ticket),
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
}

impl LocalExecutor {
    /// An executor building with `builder` on its store. Call within a tokio runtime.
    pub fn new(builder: Arc<Builder>) -> LocalExecutor {
        let (tx, rx) = mpsc::unbounded_channel();
        LocalExecutor {
            view: LocalStoreView::new(builder.store().clone()),
            builder,
            start: Instant::now(),
            tx,
            rx,
            builds: HashMap::new(),
            locks: HashMap::new(),
        }
    }

    pub fn view(&self) -> &LocalStoreView {
        &self.view
    }

    /// Kills what still runs and waits until every build task has cleaned up.
    pub async fn shutdown(&mut self) {
        for b in self.builds.values_mut() {
            if let Some(kill) = b.kill.take() {
                let _ = kill.send(());
            }
        }
        for (_, b) in self.builds.drain() {
            let _ = b.task.await;
        }
        self.locks.clear();
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
            Effect::QuerySubstitute { ticket, .. } => immediate.push(Input::SubstituteInfo {
                ticket,
                answer: SubstituteAnswer::NotFound,
            }),
            Effect::StartSubstitution { ticket, .. } => {
                immediate.push(Input::SubstitutionFinished {
                    ticket,
                    outcome: SubstitutionOutcome::Failed {
                        message: "drover cannot substitute yet".into(),
                    },
                })
            }
            Effect::CancelSubstitution { .. } => {}
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
