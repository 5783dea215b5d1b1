//! Store speed: registering 10,000 paths with references in one transaction (target ≤ 2 s),
//! and the closure of a 10,000-path chain (target ≤ 100 ms), on a temporary chroot store.

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use drover::engine::format::StorePath;
use drover::engine::format::hash::sha256;
use drover::engine::store::{ClosureFlags, LocalStore, PathInfo, StoreConfig};

const N: usize = 10_000;

/// N paths with contents in place; path i refers to i+1 and to a few earlier paths.
fn chain(store: &LocalStore) -> Vec<PathInfo> {
    let paths: Vec<StorePath> = (0..N)
        .map(|i| {
            let digest: [u8; 20] = sha256(format!("p{i}").as_bytes()).digest()[..20]
                .try_into()
                .unwrap();
            StorePath::from_digest(digest, &format!("p{i}")).unwrap()
        })
        .collect();
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            std::fs::write(store.real_path(p), format!("{i}")).unwrap();
            let mut info = PathInfo::new(p.clone(), sha256(p.name().as_bytes()), 128);
            if i + 1 < N {
                info.references.insert(paths[i + 1].clone());
            }
            for back in [7, 31, 101] {
                if i + back < N {
                    info.references.insert(paths[i + back].clone());
                }
            }
            info
        })
        .collect()
}

fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("register 10k paths with references", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = LocalStore::open(StoreConfig::chroot(dir.path())).unwrap();
                let infos = chain(&store);
                (dir, store, infos)
            },
            // Returning the store and its directory keeps their deletion out of the timing.
            |(dir, store, infos)| {
                store.register_valid_paths(&infos).unwrap();
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(StoreConfig::chroot(dir.path())).unwrap();
    let infos = chain(&store);
    store.register_valid_paths(&infos).unwrap();
    let head = infos[0].path.clone();
    group.bench_function("closure of a 10k chain", |b| {
        b.iter(|| {
            let c = store
                .compute_fs_closure([head.clone()], ClosureFlags::default())
                .unwrap();
            assert_eq!(c.len(), N);
        })
    });
    let tail = infos[N - 1].path.clone();
    group.bench_function("referrers closure of a 10k chain", |b| {
        b.iter(|| {
            let flags = ClosureFlags {
                flip_direction: true,
                ..Default::default()
            };
            assert_eq!(
                store
                    .compute_fs_closure([tail.clone()], flags)
                    .unwrap()
                    .len(),
                N
            );
        })
    });
    group.bench_function("topological sort of a 10k chain", |b| {
        let all = store
            .compute_fs_closure([head.clone()], ClosureFlags::default())
            .unwrap();
        b.iter(|| assert_eq!(store.topo_sort_paths(&all).unwrap().len(), N))
    });
    group.finish();
}

criterion_group!(benches, register);
criterion_main!(benches);
