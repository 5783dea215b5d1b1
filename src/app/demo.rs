//! `drover demo`: the terminal UI on an embedded workload, simulated, so it runs anywhere in
//! a minute: a small toolchain-to-application graph with realistic names and logs, one build
//! that fails (its dependents fail with it, keep-going builds the rest) and an output lock
//! held by "another process" at the start.

use std::sync::Arc;

use clap::Args;

use crate::app::AppError;
use crate::app::simulate::{self, LogFormat};
use crate::app::tui::{MemoryLogs, TuiOptions};
use crate::engine::api::BuildMode;
use crate::engine::scheduler::Settings;
use crate::engine::sim::{Plan, SimHistory, SimModel, World};

/// The demo workload: a plan of simulated derivations (see `drover simulate --plan`).
pub const PLAN: &str = include_str!("../../assets/demo/plan.json");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Build slots (`--max-jobs`).
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: u32,
    /// Play the demo this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Stop at the first failure instead of keeping going.
    #[arg(long)]
    pub no_keep_going: bool,
    /// Output format (default: tui on a terminal, plain otherwise).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The demo's world.
pub fn world() -> Result<World, AppError> {
    let plan: Plan = serde_json::from_str(PLAN)
        .map_err(|e| AppError::Usage(format!("the embedded demo plan: {e}")))?;
    World::planned(&plan, SimModel::default())
        .map_err(|e| AppError::Usage(format!("the embedded demo plan: {e}")))
}

/// Runs the demo; the run's exit status.
pub fn demo(args: &DemoArgs) -> Result<u8, AppError> {
    let world = Arc::new(world()?);
    let settings = Settings {
        max_jobs: args.jobs.max(1),
        keep_going: !args.no_keep_going,
        use_substitutes: false,
        ..Settings::default()
    };
    let speed = Some(args.speed).filter(|s| *s > 0.0);
    match simulate::log_format(args.log_format) {
        LogFormat::Tui => {
            let mut options =
                TuiOptions::new("drover demo", settings.max_jobs, settings.keep_going);
            options.history = Arc::new(SimHistory::new(&world));
            options.logs = Arc::new(MemoryLogs::new(options.limits.per_goal));
            options.clock_rate = speed;
            simulate::run_in_tui(world, settings, BuildMode::Normal, speed, options)
        }
        format => simulate::print_world(world, settings, BuildMode::Normal, speed, format, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_plan_is_a_valid_world_with_a_failure_and_a_lock() {
        let w = world().unwrap();
        assert!(
            (30..=60).contains(&w.len()),
            "a few dozen goals: {}",
            w.len()
        );
        let specs: Vec<_> = (0..w.len()).map(|n| w.spec(n)).collect();
        assert_eq!(specs.iter().filter(|s| s.fails(1)).count(), 1);
        assert_eq!(specs.iter().filter(|s| s.lock_held_ms > 0).count(), 1);
        assert_eq!(w.targets().len(), 3);
    }
}
