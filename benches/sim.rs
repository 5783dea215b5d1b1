//! Scheduling benchmark: a simulated random DAG (average fan-in 3) built with `-j 16` through
//! the real scheduler on the virtual clock, events consumed but not printed.
//!
//! `cargo bench --bench sim -- 100000 1000000` (node counts; default 100000). Prints wall and
//! CPU time, events, peak live heap per goal (counted by the allocator below) and peak RSS.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use drover::engine::api::{BuildMode, Event};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{self, Dag, Observer, Shape, SimExecutor, SimModel, World};

/// mimalloc (as the `drover` binary uses), counting live and peak bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

drover::tune_allocator_before_main!();

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
        let heap_before = LIVE.load(Ordering::Relaxed);
        PEAK.store(heap_before, Ordering::Relaxed);
        let rss_before = peak_rss();
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
            use_substitutes: false,
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
        let heap = (PEAK.load(Ordering::Relaxed) - heap_before) as u64;
        let rss = peak_rss();
        println!(
            "{n} nodes: {goals} goals, {} builds, {} events, exit {status}, virtual time {}; \
             wall {:.3} s, cpu {cpu:.2} s; peak heap {} B/goal; peak RSS {:.0} MiB ({} B/goal)",
            exec.stats.builds_started,
            count.0,
            exec.now(),
            wall.as_secs_f64(),
            heap / goals.max(1),
            rss as f64 / f64::from(1 << 20),
            rss.saturating_sub(rss_before) / goals.max(1),
        );
        // Freeing a million goals takes a while and is not part of the run.
        std::mem::forget(scheduler);
        std::mem::forget(exec);
    }
}
