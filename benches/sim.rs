//! Simulated scheduling benchmark: a random DAG (average fan-in 3) built with -j 16 on the
//! virtual clock, through the real scheduler. Prints wall time, events, and peak memory per
//! goal. `cargo bench --bench sim -- 100000 1000000` (node counts; default 100000).

use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use drover::engine::api::{BuildMode, Event};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{self, Dag, Observer, Shape, SimExecutor, SimModel, World};

struct Count(u64);

impl Observer for Count {
    fn events(&mut self, events: &[Event]) {
        self.0 += events.len() as u64;
    }
}

/// CPU time (user + system) of this process so far, from /proc (Linux), in seconds.
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// Peak resident set size of this process, from /proc (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    };
    for n in sizes {
        let base = peak_rss().unwrap_or(0);
        let start = Instant::now();
        let cpu0 = cpu_time();
        let model = SimModel {
            seed: 1,
            ..SimModel::default()
        };
        let world = Arc::new(World::generated(Dag::generate(Shape::Random, n, 1), model));
        let mut exec = SimExecutor::new(world);
        let mut scheduler = Scheduler::new(Settings {
            max_jobs: 16,
            use_substitutes: std::env::var("SUBST").is_ok(),
            ..Settings::default()
        });
        let mut count = Count(0);
        let status = sim::run_sync(
            &mut scheduler,
            &mut exec,
            BuildMode::Normal,
            &[],
            &mut count,
        );
        let wall = start.elapsed();
        let cpu = cpu_time() - cpu0;
        let goals = scheduler.goal_count() as u64;
        let peak = peak_rss().unwrap_or(0);
        println!(
            "nodes {n}: {goals} goals, {} builds, {} events, exit {status}, virtual {}, \
             wall {:.3} s, cpu {cpu:.2} s, peak RSS {:.1} MiB ({} B/goal over the baseline)",
            exec.stats.builds_started,
            count.0,
            exec.now(),
            wall.as_secs_f64(),
            peak as f64 / (1 << 20) as f64,
            peak.saturating_sub(base) / goals.max(1),
        );
    }
}
