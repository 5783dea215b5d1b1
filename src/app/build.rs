//! `drover build`: realise derivations like `nix-build` / `nix-store --realise`. Targets are
//! resolved by `app::targets`. Settings come from `nix.conf`, `drover.conf`, `--option` and the
//! flags; progress is printed as nix-build prints it (on standard error), the output paths on
//! standard output, and each output gets an out-link (`result`, `result-dev`, `result-2`, ...)
//! unless `--no-out-link`.
//! The exit status is Nix's: 0, 1, or 100-104 for failed builds.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::app::AppError;
use crate::app::live::{self, Watcher};
use crate::app::missing::{SubstituteSource, print_missing_with};
use crate::app::output::{LogFormat, Output};
use crate::app::plumbing::store::StoreArgs;
use crate::app::stored_logs::StoreLogs;
use crate::app::targets::{Wanted, resolve_all};
use crate::app::tui::{self, TuiOptions};
use crate::engine::api::{BuildHistory, BuildMode, Command as RunCommand};
use crate::engine::build::Builder;
use crate::engine::driver::{self, Delivery, DriverOptions};
use crate::engine::executor::{LocalExecutor, RunSubstituters};
use crate::engine::format::StorePath;
use crate::engine::scheduler::{Scheduler, Target};
use crate::engine::settings::{Settings, parse_max_jobs};
use crate::engine::store::LocalStore;
use crate::engine::store::drover_db::{DroverDb, DurationHistory};
use crate::sandbox::Supervisors;

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Build slots: a number or `auto` (one per CPU).
    #[arg(long = "max-jobs", short = 'j', value_name = "N")]
    pub max_jobs: Option<String>,
    /// CPU cores each builder may use (`NIX_BUILD_CORES`; 0 = all).
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Keep building what does not depend on a failed build.
    #[arg(long, short = 'k')]
    pub keep_going: bool,
    /// Keep the build directory of failed builds.
    #[arg(long, short = 'K')]
    pub keep_failed: bool,
    /// Rebuild valid outputs and check that the result is the same.
    #[arg(long, conflicts_with = "repair")]
    pub check: bool,
    /// Rebuild outputs whose contents are corrupt.
    #[arg(long)]
    pub repair: bool,
    /// Build each derivation this many extra times and compare the outputs.
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,
    /// Build when a substitute cannot be used.
    #[arg(long)]
    pub fallback: bool,
    /// Kill builders silent for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub max_silent_time: Option<u64>,
    /// Kill builders running longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Set a nix.conf setting.
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// The out-link prefix.
    #[arg(long, short = 'o', value_name = "PATH", default_value = "result")]
    pub out_link: PathBuf,
    /// Create no out-links.
    #[arg(long)]
    pub no_out_link: bool,
    /// Output format (default: the terminal UI on a terminal, plain lines otherwise); every
    /// format goes to standard error, the output paths to standard output.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Only say what would be built and fetched (with download sizes), then stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Build this attribute of the plan or Nix file targets (repeatable; a plan without it
    /// builds every derivation no other one depends on).
    #[arg(short = 'A', long = "attr", value_name = "NAME")]
    pub attrs: Vec<String>,
    /// Derivations (`/nix/store/…-x.drv`, optionally `^out,dev`), store paths, plan files
    /// (`plan.toml`) or Nix files (`default.nix`, instantiated by nix-instantiate).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
}

impl BuildArgs {
    /// The settings: files, then `--option`, then the flags.
    fn settings(&self) -> Result<Settings, AppError> {
        let mut s = Settings::load().map_err(settings_error)?;
        for pair in self.options.chunks(2) {
            s.set(&pair[0], &pair[1]).map_err(settings_error)?;
        }
        if let Some(j) = &self.max_jobs {
            s.max_jobs = parse_max_jobs(j).map_err(settings_error)?;
        }
        if let Some(c) = self.cores {
            s.cores = c;
        }
        s.keep_going |= self.keep_going;
        s.keep_failed |= self.keep_failed;
        s.fallback |= self.fallback;
        if let Some(r) = self.repeat {
            s.repeat = r;
        }
        if let Some(t) = self.max_silent_time {
            s.max_silent_time = t;
        }
        if let Some(t) = self.timeout {
            s.timeout = t;
        }
        s.check_supported().map_err(settings_error)?;
        Ok(s)
    }

    fn mode(&self) -> BuildMode {
        if self.check {
            BuildMode::Check
        } else if self.repair {
            BuildMode::Repair
        } else {
            BuildMode::Normal
        }
    }
}

fn settings_error(e: crate::engine::settings::SettingsError) -> AppError {
    AppError::Usage(e.to_string())
}

/// nix-build's out-link names: `<prefix>` for the first derivation's `out`,
/// `<prefix>-<output>` for its other outputs, `<prefix>-<n>[-<output>]` for the n-th
/// derivation (counting from 2).
pub fn out_link_name(prefix: &Path, drv_index: usize, output: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    if drv_index > 0 {
        name.push(format!("-{}", drv_index + 1));
    }
    if output != "out" {
        name.push(format!("-{output}"));
    }
    PathBuf::from(name)
}

/// Nix's `addPermRoot`: the out-link, and an indirect GC root pointing at it.
fn add_perm_root(store: &LocalStore, path: &StorePath, link: &Path) -> Result<(), AppError> {
    let link = std::path::absolute(link).map_err(|e| AppError::io("resolving", link, e))?;
    let sd = store.store_dir();
    if sd.is_in_store(&link.to_string_lossy()) {
        return Err(AppError::Usage(format!(
            "creating a garbage collector root ({}) in the Nix store is forbidden (are you \
             running nix-build inside the store?)",
            link.display()
        )));
    }
    if let Ok(meta) = std::fs::symlink_metadata(&link) {
        let points_into_store = meta.file_type().is_symlink()
            && std::fs::read_link(&link).is_ok_and(|t| sd.is_in_store(&t.to_string_lossy()));
        if !points_into_store {
            return Err(AppError::Usage(format!(
                "cannot create symlink '{}'; already exists",
                link.display()
            )));
        }
    }
    replace_symlink(Path::new(&store.print(path)), &link)?;
    let digest = crate::engine::format::hash::hash_bytes(
        crate::engine::format::HashAlgo::Sha1,
        link.as_os_str().as_encoded_bytes(),
    );
    let auto = store.config().state_dir.join("gcroots/auto");
    std::fs::create_dir_all(&auto).map_err(|e| AppError::io("creating", &auto, e))?;
    replace_symlink(&link, &auto.join(digest.to_base32()))
}

/// Points `link` at `target`, atomically replacing what is there.
fn replace_symlink(target: &Path, link: &Path) -> Result<(), AppError> {
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| AppError::io("creating", &tmp, e))?;
    std::fs::rename(&tmp, link).map_err(|e| AppError::io("creating", link, e))
}

/// Runs `drover build`; its exit status.
pub fn build(args: &BuildArgs) -> Result<u8, AppError> {
    let settings = args.settings()?;
    let store = Arc::new(args.store.open()?);
    let wanted = resolve_all(&store, &args.targets, &args.attrs)?;
    for w in &settings.warnings {
        eprintln!("warning: {w}");
    }
    if args.dry_run {
        return crate::app::missing::dry_run(&store, &wanted, &settings, args.log_format);
    }
    let substituters =
        RunSubstituters::open(&settings, store.store_dir()).map_err(settings_error)?;
    let format = resolve_log_format(args.log_format);
    let listing_format = if format == LogFormat::Tui {
        LogFormat::Plain
    } else {
        format
    };
    print_missing_with(
        &store,
        &wanted,
        &SubstituteSource::of_run(&settings, &substituters),
        listing_format,
    )?;
    let targets: Vec<Target> = wanted.iter().map(|w| w.target.clone()).collect();
    let run = RunOptions {
        title: "drover build".into(),
        format,
        mode: args.mode(),
        plain_summary: false,
        watcher: None,
        history: None,
    };
    let exit_status = run_build(store.clone(), &settings, substituters, &targets, run)?;
    if exit_status != 0 {
        return Ok(exit_status);
    }
    finish_outputs(&store, args, &wanted)?;
    Ok(0)
}

/// The log format asked for, else the TUI on a terminal (see [`tui::is_terminal_for_build`])
/// and plain lines otherwise.
pub fn resolve_log_format(asked: Option<LogFormat>) -> LogFormat {
    asked.unwrap_or_else(|| {
        if tui::is_terminal_for_build() {
            LogFormat::Tui
        } else {
            LogFormat::Plain
        }
    })
}

/// How a build run is shown and steered.
pub struct RunOptions {
    /// What the TUI's header calls the run.
    pub title: String,
    pub format: LogFormat,
    pub mode: BuildMode,
    /// Plain lines end with drover's one-line summary (nix-build has none).
    pub plain_summary: bool,
    /// Follows the run beside its front-end (see [`live::Watcher`]).
    pub watcher: Option<Watcher>,
    /// What the TUI's ETAs go by (default: the store's record of earlier builds).
    pub history: Option<Arc<dyn BuildHistory>>,
}

/// Builds `targets` in `store` with `settings`, shown in the TUI or as plain, JSON or Nix
/// internal-json lines on standard error; the run's exit status (Nix's).
pub fn run_build(
    store: Arc<LocalStore>,
    settings: &Settings,
    substituters: RunSubstituters,
    targets: &[Target],
    run: RunOptions,
) -> Result<u8, AppError> {
    // Files drover writes for builders (passAsFile, .attrs.*) get the modes Nix gives them:
    // Nix runs with umask 022.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let supervisors = Supervisors::new(
        Supervisors::current_exe().map_err(|e| AppError::io("finding", Path::new("drover"), e))?,
    );
    let builder = Arc::new(Builder::new(
        store.clone(),
        settings.build_settings(),
        supervisors,
    ));
    let mut scheduler_settings = settings.scheduler_settings(store.store_dir());
    scheduler_settings.substituters = substituters.uris();
    let (max_jobs, keep_going) = (scheduler_settings.max_jobs, scheduler_settings.keep_going);
    let scheduler = Scheduler::new(scheduler_settings);
    // Preparing and registering builds runs on blocking threads: a few per CPU keep the CPUs
    // busy, more only cost memory (each thread gets its own allocator heap).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2 * cpus)
        .build()
        .map_err(|e| AppError::io("starting", Path::new("the runtime"), e))?;
    let RunOptions {
        title,
        format,
        mode,
        plain_summary,
        watcher,
        history,
    } = run;
    let _runtime_context = runtime.enter();
    let executor = LocalExecutor::new(builder, substituters);
    if format != LogFormat::Tui {
        let mut output = Output::new(
            format,
            BufWriter::with_capacity(1 << 16, std::io::stderr()),
            BufWriter::with_capacity(1 << 16, std::io::stderr()),
        );
        let plain = output.plain_mut();
        plain.summary = plain_summary;
        plain.omit_log_tails = true;
        return print_lines(
            &runtime, scheduler, executor, targets, mode, watcher, output,
        );
    }
    let mut options = TuiOptions::new(title, max_jobs, keep_going);
    let config = store.config();
    options.history = match history {
        Some(history) => history,
        None => Arc::new(DurationHistory::new(DroverDb::open(&config.state_dir)?)),
    };
    options.logs = Arc::new(StoreLogs {
        store_dir: config.store_dir.clone(),
        log_dir: config.log_dir.clone(),
    });
    let mut outcome = live::run_with_tui_watched(
        &runtime, scheduler, executor, targets, mode, options, watcher,
    )?;
    runtime.block_on(outcome.executor.shutdown());
    Ok(outcome.exit_status)
}

/// Runs the build printing lines (plain like nix-build's, drover's JSON or Nix's
/// internal-json) on standard error; its exit status.
fn print_lines<O: Write + Send + 'static, E: Write + Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    scheduler: Scheduler,
    executor: LocalExecutor,
    targets: &[Target],
    mode: BuildMode,
    watcher: Option<Watcher>,
    mut output: Output<O, E>,
) -> Result<u8, AppError> {
    // With a watcher the run lingers while it may still send commands (a retry after the
    // last build failed); the interrupt handler then holds a weak handle, so as not to keep
    // the run open itself. Without one the handler's handle is the only one, and the run
    // ends when its goals do.
    let lingering = watcher.is_some();
    let options = DriverOptions {
        linger: lingering,
        ..DriverOptions::default()
    };
    let (driver, handle) = driver::driver(scheduler, executor, options);
    let mut events = handle.subscribe(Delivery::Lossless { capacity: 1 << 16 });
    let watcher = live::start_watcher(runtime, &handle, watcher);
    runtime.block_on(async move {
        let printer = tokio::spawn(async move {
            while let Some(batch) = events.recv().await {
                for e in batch.iter() {
                    output.event(e)?;
                }
                output.flush()?;
            }
            output.flush()
        });
        // The first interrupt (Ctrl-C, SIGTERM, SIGHUP) cancels the run: builders are killed
        // and build directories cleaned up. A second one ends drover at once.
        let cancel: Box<dyn Fn() + Send> = if lingering {
            let weak = handle.downgrade();
            Box::new(move || {
                weak.send(RunCommand::CancelAll);
            })
        } else {
            let strong = handle.clone();
            Box::new(move || {
                strong.send(RunCommand::CancelAll);
            })
        };
        let mut signals = Interrupts::new()?;
        let ctrl_c = tokio::spawn(async move {
            signals.next().await;
            // Cancel first: after a hangup standard error may be gone, and the message is
            // best effort (eprintln! would panic and leave the build running).
            cancel();
            let _ = writeln!(std::io::stderr(), "error: interrupted by the user");
            signals.next().await;
            std::process::exit(1);
        });
        drop(handle);
        let mut outcome = driver.run(targets, mode).await;
        outcome.executor.shutdown().await;
        ctrl_c.abort();
        if let Some(w) = watcher {
            let _ = w.await;
        }
        printer
            .await
            .map_err(|e| AppError::Usage(format!("output task failed: {e}")))?
            .map_err(AppError::Stdout)?;
        Ok::<u8, AppError>(outcome.exit_status)
    })
}

/// The signals that interrupt a build.
struct Interrupts {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Interrupts {
    fn new() -> Result<Interrupts, AppError> {
        let listen =
            |kind| signal(kind).map_err(|e| AppError::io("handling", Path::new("signals"), e));
        Ok(Interrupts {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
            hup: listen(SignalKind::hangup())?,
        })
    }

    /// Waits for the next one.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Prints the built outputs and creates their out-links.
fn finish_outputs(store: &LocalStore, args: &BuildArgs, wanted: &[Wanted]) -> Result<(), AppError> {
    let mut lines = Vec::new();
    let mut drv_index: BTreeMap<StorePath, usize> = BTreeMap::new();
    for w in wanted {
        match (&w.target, &w.drv) {
            (_, Some((drv, outputs))) => {
                let next = drv_index.len();
                let index = *drv_index.entry(drv.clone()).or_insert(next);
                let all = store.derivation_output_paths(drv)?;
                let selected: Vec<(&String, &StorePath)> = if outputs.is_empty() {
                    all.iter().collect()
                } else {
                    all.iter().filter(|(n, _)| outputs.contains(n)).collect()
                };
                for (name, path) in selected {
                    if !args.no_out_link {
                        add_perm_root(store, path, &out_link_name(&args.out_link, index, name))?;
                    }
                    lines.push(store.print(path));
                }
            }
            (Target::Path(p), None) => lines.push(store.print(p)),
            (Target::Derivation { .. }, None) => {}
        }
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for l in lines {
        writeln!(out, "{l}").map_err(AppError::Stdout)?;
    }
    out.flush().map_err(AppError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_links_are_named_as_nix_build_names_them() {
        let p = Path::new("result");
        assert_eq!(out_link_name(p, 0, "out"), Path::new("result"));
        assert_eq!(out_link_name(p, 0, "man"), Path::new("result-man"));
        assert_eq!(out_link_name(p, 1, "out"), Path::new("result-2"));
        assert_eq!(out_link_name(p, 2, "dev"), Path::new("result-3-dev"));
    }
}
