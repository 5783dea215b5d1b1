//! `drover simulate`: the real scheduler on simulated builds, in the terminal UI or with plain
//! or JSON output; for teaching and for benchmarks. Virtual time runs as fast as the CPU
//! allows, or `--speed` times faster than real time (in the TUI: real time by default, so
//! there is something to watch).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::app::AppError;
use crate::app::live;
pub use crate::app::output::LogFormat;
use crate::app::output::StdOutput;
use crate::app::record::Recorder;
use crate::app::tui::{self, MemoryLogs, TuiOptions};
use crate::engine::api::BuildMode;
use crate::engine::driver::{self, Delivery, DriverOptions};
use crate::engine::scheduler::{Scheduler, Settings};
use crate::engine::sim::{self, Dag, Plan, Shape, SimExecutor, SimHistory, SimModel, World};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of derivations.
    #[arg(long, default_value_t = 100)]
    pub nodes: u32,
    /// Shape of the graph: random (fan-in 3 on average), wide, chain or diamond.
    #[arg(long, default_value = "random")]
    pub shape: Shape,
    /// Fraction of builds that fail.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Build slots (`--max-jobs`).
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: u32,
    /// Seed of the random graph and behaviour.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Play virtual time this many times faster than real time (default: as fast as
    /// possible; in the TUI, 1).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Keep going after a failure.
    #[arg(long, short = 'k')]
    pub keep_going: bool,
    /// Output format (default: tui on a terminal, plain otherwise).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Also save the event stream to this file, for `drover replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// A JSON plan of named derivations instead of a generated graph.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Fraction of outputs a simulated binary cache has (0: no substituter).
    #[arg(long, default_value_t = 0.0)]
    pub cached: f64,
    /// Fraction of outputs whose lock another process holds at the start.
    #[arg(long, default_value_t = 0.0)]
    pub lock_rate: f64,
    /// Mean build time in (virtual) seconds.
    #[arg(long, default_value_t = 10.0)]
    pub mean_build_time: f64,
    /// Log lines per build.
    #[arg(long, default_value_t = 3)]
    pub log_lines: u32,
    /// Fraction of builds that hang silently (see `--max-silent-time`).
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Kill builds silent for this many seconds.
    #[arg(long)]
    pub max_silent_time: Option<u64>,
    /// Kill builds running longer than this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Build every derivation this many extra times (`--repeat`).
    #[arg(long, default_value_t = 0)]
    pub repeat: u32,
    /// Build with `--check`: rebuild (already valid) outputs and compare.
    #[arg(long)]
    pub check: bool,
}

impl SimulateArgs {
    fn model(&self) -> SimModel {
        SimModel {
            seed: self.seed,
            fail_rate: self.fail_rate,
            transient_failures: false,
            mean_duration_ms: (self.mean_build_time * 1000.0).max(1.0) as u64,
            log_lines: self.log_lines,
            lock_rate: self.lock_rate,
            cached_rate: self.cached,
            hang_rate: self.hang_rate,
            ..SimModel::default()
        }
    }

    fn world(&self) -> Result<World, AppError> {
        let Some(path) = &self.plan else {
            let dag = Dag::generate(self.shape, self.nodes, self.seed);
            return Ok(World::generated(dag, self.model()));
        };
        let text = std::fs::read_to_string(path).map_err(|e| AppError::io("reading", path, e))?;
        let plan: Plan = serde_json::from_str(&text).map_err(|e| AppError::Plan {
            path: path.clone(),
            message: e.to_string(),
        })?;
        World::planned(&plan, self.model()).map_err(|message| AppError::Plan {
            path: path.clone(),
            message,
        })
    }

    fn mode(&self) -> BuildMode {
        if self.check {
            BuildMode::Check
        } else {
            BuildMode::Normal
        }
    }

    fn settings(&self) -> Settings {
        let substituters = if self.cached > 0.0 {
            vec!["https://cache.sim".to_owned()]
        } else {
            Vec::new()
        };
        Settings {
            max_jobs: self.jobs,
            keep_going: self.keep_going,
            use_substitutes: !substituters.is_empty(),
            substituters,
            max_silent_time_ms: self.max_silent_time.unwrap_or(0) * 1000,
            build_timeout_ms: self.timeout.unwrap_or(0) * 1000,
            build_repeat: self.repeat,
            ..Settings::default()
        }
    }
}

/// The output format: the one asked for, else the TUI on a terminal and plain lines otherwise.
pub fn log_format(asked: Option<LogFormat>) -> LogFormat {
    asked.unwrap_or(if tui::is_terminal() {
        LogFormat::Tui
    } else {
        LogFormat::Plain
    })
}

/// Runs the simulation, in the TUI or printing to stdout; returns the run's exit status.
pub fn simulate(args: &SimulateArgs) -> Result<u8, AppError> {
    let world = Arc::new(args.world()?);
    match log_format(args.log_format) {
        LogFormat::Tui => {
            let mut options = TuiOptions::new("drover simulate", args.jobs, args.keep_going);
            options.history = Arc::new(SimHistory::new(&world));
            options.logs = Arc::new(MemoryLogs::new(options.limits.per_goal));
            let speed = args.speed.unwrap_or(1.0);
            options.clock_rate = Some(speed);
            run_in_tui(world, args.settings(), args.mode(), Some(speed), options)
        }
        format => print_world(
            world,
            args.settings(),
            args.mode(),
            args.speed,
            format,
            args.record.as_deref(),
        ),
    }
}

/// Runs a simulated world in the TUI (see [`live::run_with_tui`]).
pub fn run_in_tui(
    world: Arc<World>,
    settings: Settings,
    mode: BuildMode,
    speed: Option<f64>,
    options: TuiOptions,
) -> Result<u8, AppError> {
    let targets = sim::targets(&world);
    let executor = SimExecutor::new(world).with_speed(speed);
    let scheduler = Scheduler::new(settings);
    let outcome = live::run_with_tui(&runtime()?, scheduler, executor, &targets, mode, options)?;
    let status = outcome.exit_status;
    // The graph is freed by the process exit, faster than by dropping it.
    std::mem::forget(outcome);
    Ok(status)
}

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| AppError::io("starting", Path::new("the runtime"), e))
}

/// Runs a simulated world printing plain lines or JSON to stdout.
pub fn print_world(
    world: Arc<World>,
    settings: Settings,
    mode: BuildMode,
    speed: Option<f64>,
    format: LogFormat,
    record: Option<&Path>,
) -> Result<u8, AppError> {
    let targets = sim::targets(&world);
    let executor = SimExecutor::new(world).with_speed(speed);
    let scheduler = Scheduler::new(settings);
    let runtime = runtime()?;
    let mut output = StdOutput::stdio(format);
    let mut recorder = match record {
        Some(path) => Some(Recorder::create(path, "simulate")?),
        None => None,
    };
    runtime.block_on(async move {
        let (driver, handle) = driver::driver(scheduler, executor, DriverOptions::default());
        let mut events = handle.subscribe(Delivery::Lossless { capacity: 1 << 16 });
        drop(handle);
        let printer = tokio::spawn(async move {
            while let Some(batch) = events.recv().await {
                for e in batch.iter() {
                    output.event(e).map_err(AppError::Stdout)?;
                    if let Some(r) = &mut recorder {
                        r.event(e).map_err(AppError::from)?;
                    }
                }
            }
            output.flush().map_err(AppError::Stdout)?;
            recorder.map_or(Ok(()), Recorder::finish)?;
            Ok::<(), AppError>(())
        });
        let outcome = driver.run(&targets, mode).await;
        printer
            .await
            .map_err(|e| AppError::Usage(format!("output task failed: {e}")))??;
        // The graph is freed by the process exit, faster than by dropping it.
        std::mem::forget(outcome.scheduler);
        std::mem::forget(outcome.executor);
        Ok(outcome.exit_status)
    })
}
