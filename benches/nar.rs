//! Throughput of reference scanning (`RefScanner`) and of NAR validation (`NarReader`).
//!
//! `cargo bench --bench nar`; criterion prints the throughput in GiB/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drover::engine::format::HashAlgo;
use drover::engine::format::base32::ALPHABET;
use drover::engine::format::nar::{self, NarNode};
use drover::engine::format::refs::{HashPart, RefScanner};

const SIZE: usize = 16 << 20;

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn candidates(n: usize) -> Vec<HashPart> {
    let mut next = xorshift(99);
    (0..n)
        .map(|_| std::array::from_fn(|_| ALPHABET[(next() % 32) as usize]))
        .collect()
}

/// Inputs: random bytes (compressed data), a real executable (this bench), text full of
/// store paths, and base-32 characters only (the worst case: every window is looked up).
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut next = xorshift(1);
    let random: Vec<u8> = (0..SIZE).map(|_| next() as u8).collect();
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let binary: Vec<u8> = exe.iter().copied().cycle().take(SIZE).collect();
    let parts = candidates(50);
    let mut text = Vec::with_capacity(SIZE + 200);
    while text.len() < SIZE {
        let part = parts[(next() % 50) as usize];
        text.extend_from_slice(b"export PATH=/nix/store/");
        text.extend_from_slice(&part);
        text.extend_from_slice(b"-coreutils-9.1/bin:$PATH # some words of a build script\n");
    }
    text.truncate(SIZE);
    let base32: Vec<u8> = (0..SIZE)
        .map(|_| ALPHABET[(next() % 32) as usize])
        .collect();
    vec![
        ("random", random),
        ("executable", binary),
        ("text-with-paths", text),
        ("all-base32", base32),
    ]
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("ref-scan");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(20);
    let parts = candidates(200);
    for (name, data) in inputs() {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut scanner = RefScanner::new(parts.iter().copied());
                // Written in the dumper's chunk size, as a tee of the NAR writer sees it.
                for chunk in data.chunks(128 << 10) {
                    scanner.scan(chunk);
                }
                black_box(scanner.into_found())
            })
        });
    }
    group.finish();
}

fn nar_reader(c: &mut Criterion) {
    let mut next = xorshift(5);
    let files = (0..64).map(|i| {
        let len = ((next() % 512) << 10) as usize;
        (format!("f{i:03}"), NarNode::file(vec![i as u8; len]))
    });
    let bytes = NarNode::directory(files).to_nar();
    let mut group = c.benchmark_group("nar");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.sample_size(20);
    group.bench_function("validate", |b| {
        b.iter(|| black_box(nar::NarReader::new(&bytes[..]).validate().unwrap()))
    });
    group.bench_function("validate+sha256", |b| {
        b.iter(|| black_box(nar::validate(&bytes[..], HashAlgo::Sha256).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, scan, nar_reader);
criterion_main!(benches);
