//! TUI benchmarks (criterion): one frame (200x60) of a 10,000- and a 100,000-goal graph in the
//! middle of a simulated run (random DAG, fan-in 3, `-j 16`): a frame where nothing changed,
//! frames of a live run (a goal changes state between frames, 30 a second), and the two long
//! frames, one that flattens the tree into rows again and one that computes the ETA; folding
//! log-line events into the `ViewState`; and, printed first, the `ViewState`'s heap per goal
//! (counted by the allocator below) with its log buffers at their bounds.
//!
//! `cargo bench --bench tui` (criterion options after `--`).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput};
use drover::app::tui::{self, Action, LogLimits, TuiOptions, Ui, ViewState};
use drover::engine::api::{BuildMode, Event, EventKind, GoalId, GoalState, Time, WaitReason};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{self, Dag, Observer, Shape, SimExecutor, SimHistory, SimModel, World};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WIDTH: u16 = 200;
const HEIGHT: u16 = 60;
const JOBS: u32 = 16;

/// Folds the events up to `until` into a view.
struct Fold {
    ui: Ui,
    until: Time,
}

impl Observer for Fold {
    fn events(&mut self, events: &[Event]) {
        for e in events {
            if e.time <= self.until {
                self.ui.view.apply(e);
            }
        }
    }
}

fn world(nodes: u32) -> Arc<World> {
    let model = SimModel {
        seed: 1,
        fail_rate: 0.01,
        log_lines: 20,
        ..SimModel::default()
    };
    Arc::new(World::generated(
        Dag::generate(Shape::Random, nodes, 1),
        model,
    ))
}

/// The screen of a simulated `nodes`-goal run at a tenth of its way.
fn mid_run(nodes: u32) -> Ui {
    let world = world(nodes);
    let history = Arc::new(SimHistory::new(&world));
    mid_run_of(world, history)
}

fn mid_run_of(world: Arc<World>, history: Arc<SimHistory>) -> Ui {
    let settings = Settings {
        max_jobs: JOBS,
        keep_going: true,
        use_substitutes: false,
        ..Settings::default()
    };
    // The run's length first, then the view at a tenth of it.
    let mut exec = SimExecutor::new(world.clone());
    let mut scheduler = Scheduler::new(settings.clone());
    sim::run_sync(&mut scheduler, &mut exec, BuildMode::Normal, &[], &mut ());
    let until = Time(exec.now().as_millis() / 10);
    let mut exec = SimExecutor::new(world.clone());
    let mut scheduler = Scheduler::new(settings);
    let mut options = TuiOptions::new("drover", JOBS, true);
    options.history = history;
    let mut fold = Fold {
        ui: tui::new_ui(&options),
        until,
    };
    sim::run_sync(&mut scheduler, &mut exec, BuildMode::Normal, &[], &mut fold);
    fold.ui
}

/// A goal that is building, to toggle between two states.
fn a_building_goal(view: &ViewState) -> (GoalId, GoalState) {
    let g = view
        .build_slots
        .iter()
        .flatten()
        .next()
        .copied()
        .expect("a build runs mid-run");
    (GoalId(g), view.goals[g as usize].state.clone())
}

fn frame(ui: &mut Ui, now: Time, buf: &mut Buffer) {
    buf.reset();
    tui::render_to(ui, now, Rect::new(0, 0, WIDTH, HEIGHT), buf);
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    for nodes in [10_000u32, 100_000] {
        let mut ui = mid_run(nodes);
        let now = ui.view.now;
        let mut buf = Buffer::empty(Rect::new(0, 0, WIDTH, HEIGHT));
        frame(&mut ui, now, &mut buf);
        group.bench_function(BenchmarkId::new("unchanged", nodes), |b| {
            b.iter(|| frame(&mut ui, now, &mut buf))
        });
        // A goal changes state between frames, at 30 frames a second of run time: the rows
        // are flattened again every few frames, the ETA every second.
        let (goal, running) = a_building_goal(&ui.view);
        let mut seq = u64::MAX / 2;
        let mut flip = false;
        let mut change = move |ui: &mut Ui, now: Time| {
            flip = !flip;
            let state = if flip {
                GoalState::Waiting {
                    reason: WaitReason::BuildSlot,
                }
            } else {
                running.clone()
            };
            seq += 1;
            ui.view.apply(&Event {
                seq,
                time: now,
                kind: EventKind::StateChanged { goal, state },
            });
        };
        let mut t = now;
        group.bench_function(BenchmarkId::new("live_30fps", nodes), |b| {
            b.iter(|| {
                t = t.plus_millis(33);
                change(&mut ui, t);
                frame(&mut ui, t, &mut buf)
            })
        });
        // The two long frames: one that flattens the rows (a fold toggled right after a
        // change), and one that computes the ETA (a new second of run time; the rows are
        // not due). The loop never does both in one frame.
        let leaf = ui
            .view
            .build_slots
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap();
        group.bench_function(BenchmarkId::new("rows_flattened", nodes), |b| {
            b.iter(|| {
                change(&mut ui, t);
                ui.select(leaf);
                ui.act(Action::ToggleFold);
                frame(&mut ui, t, &mut buf)
            })
        });
        frame(&mut ui, t, &mut buf);
        group.bench_function(BenchmarkId::new("eta_computed", nodes), |b| {
            b.iter(|| {
                t = t.plus_millis(1000);
                frame(&mut ui, t, &mut buf)
            })
        });
        ui.view.dropped_events = 0;
    }
    group.finish();
}

fn bench_fold(c: &mut Criterion) {
    let mut ui = mid_run(10_000);
    let running: Vec<GoalId> = ui
        .view
        .build_slots
        .iter()
        .flatten()
        .map(|&g| GoalId(g))
        .collect();
    let batch: Vec<Event> = (0..100_000u64)
        .map(|i| Event {
            seq: 0,
            time: ui.view.now,
            kind: EventKind::LogLine {
                goal: running[i as usize % running.len()],
                line: format!("  CC       src/module{}/file{i}.o", i % 97),
            },
        })
        .collect();
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("log_lines", |b| {
        b.iter(|| ui.view.apply_all(black_box(&batch)))
    });
    group.finish();
}

/// The heap of a view of `nodes` goals mid-run, with every running goal's log ring and the
/// interleaved ring filled to their bounds.
fn memory_report() {
    for nodes in [10_000u32, 100_000] {
        // The world and the history are the engine's and the store's, not the view's.
        let world = world(nodes);
        let history = Arc::new(SimHistory::new(&world));
        let before = LIVE.load(Ordering::Relaxed);
        let mut ui = mid_run_of(world.clone(), history.clone());
        let running: Vec<u32> = ui.view.build_slots.iter().flatten().copied().collect();
        let limits = LogLimits::default();
        let mut seq = 1 << 40;
        for k in 0..limits.per_goal.max(limits.interleaved) {
            for &g in &running {
                seq += 1;
                ui.view.apply(&Event {
                    seq,
                    time: ui.view.now,
                    kind: EventKind::LogLine {
                        goal: GoalId(g),
                        line: format!("  CC       src/module/file{k}.o -O2 -Wall -fPIC"),
                    },
                });
            }
        }
        let mut buf = Buffer::empty(Rect::new(0, 0, WIDTH, HEIGHT));
        let now = ui.view.now;
        frame(&mut ui, now, &mut buf);
        let total = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        drop(buf);
        // The log rings, by themselves.
        let rings: usize = running
            .iter()
            .filter_map(|&g| ui.view.goals[g as usize].log.as_ref())
            .map(|r| r.len() * (std::mem::size_of::<Arc<str>>() + 16 + 40))
            .sum::<usize>()
            + ui.view.interleaved.len() * (std::mem::size_of::<(u32, Arc<str>)>());
        let goals = ui.view.goals.len();
        println!(
            "memory: {goals} goals: ViewState and screen state {:.1} MiB = {} B/goal \
             (of which log rings about {:.1} MiB: {} running goals x {} lines + {} interleaved; \
             without them {} B/goal)",
            total as f64 / (1 << 20) as f64,
            total / goals,
            rings as f64 / (1 << 20) as f64,
            running.len(),
            limits.per_goal,
            limits.interleaved,
            total.saturating_sub(rings) / goals
        );
        drop(ui);
        drop(world);
    }
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    bench_render(&mut c);
    bench_fold(&mut c);
    c.final_summary();
}
