//! Monitor ingestion: Nix internal-json lines parsed into drover events, in lines per second.
//! The input is the emitter's stream of a simulated 6000-derivation run with 20 log lines per
//! build (mostly log lines and progress results, like a real build).
//!
//! `cargo bench --bench nix_json` (criterion reports the throughput in lines/s).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drover::app::nix_json::{NixJsonEmitter, NixJsonParser};
use drover::engine::api::{BuildMode, Event, Time};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{self, Dag, Observer, Shape, SimExecutor, SimModel, World};

/// The allocator of the `drover` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The run's events, emitted as internal-json as they come.
struct Emit {
    emitter: NixJsonEmitter,
    out: Vec<u8>,
}

impl Observer for Emit {
    fn events(&mut self, events: &[Event]) {
        for e in events {
            self.emitter.event(e, &mut self.out).unwrap();
        }
    }
}

/// A realistic stream, one string per line.
fn stream() -> Vec<String> {
    let model = SimModel {
        seed: 7,
        fail_rate: 0.002,
        log_lines: 20,
        ..SimModel::default()
    };
    let world = Arc::new(World::generated(
        Dag::generate(Shape::Random, 6000, 7),
        model,
    ));
    let mut exec = SimExecutor::new(world);
    let mut scheduler = Scheduler::new(Settings {
        max_jobs: 16,
        keep_going: true,
        ..Settings::default()
    });
    let mut emit = Emit {
        emitter: NixJsonEmitter::new(1234),
        out: Vec::new(),
    };
    sim::run_sync(&mut scheduler, &mut exec, BuildMode::Normal, &[], &mut emit);
    String::from_utf8(emit.out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ingest(c: &mut Criterion) {
    let lines = stream();
    let mut group = c.benchmark_group("nix_json");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.sample_size(20);
    group.bench_function(format!("parse {} lines into events", lines.len()), |b| {
        b.iter(|| {
            let mut parser = NixJsonParser::new(None);
            let mut out = Vec::with_capacity(1024);
            let mut events = 0;
            for (i, line) in lines.iter().enumerate() {
                parser.line(line, Time(i as u64), &mut out).unwrap();
                if out.len() >= 1024 {
                    events += out.len();
                    out.clear();
                }
            }
            parser.finish(Time(lines.len() as u64), &mut out);
            black_box(events + out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
