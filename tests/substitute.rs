//! Substitution from binary caches written by drover: every compression, signatures, the
//! checks of a download (lying, corrupt, hostile, vanished NARs), narinfo caching, HTTP caches
//! served on 127.0.0.1 (normal, slow, failing, stalling), and the real scheduler driving
//! substitutions through the async API. Interop with real Nix is in
//! `differential_substitute.rs`.

mod subst_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::engine::format::hash::sha256;
use drover::engine::format::{NarInfo, PublicKeys, SecretKey, StoreDir, StorePath};
use drover::engine::scheduler::{SubstituteAnswer, SubstitutionOutcome};
use drover::engine::store::LocalStore;
use drover::engine::substitute::{
    CacheWriter, Compression, HttpOptions, Progress, SubstituterConfig, Substituters, WriteOptions,
};
use subst_support::*;

fn sd() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn key(name: &str, seed: u8) -> SecretKey {
    SecretKey::from_seed(name, &[seed; 32]).unwrap()
}

/// A source store with the sample closure, written to a cache at `cache` by drover.
fn source_with_cache(
    root: &std::path::Path,
    cache: &std::path::Path,
    compression: Compression,
    secret_key: Option<SecretKey>,
) -> (LocalStore, Sample) {
    let store = open_store(&root.join("src"));
    let sample = sample_closure(&store, root);
    let writer = CacheWriter::open(
        &format!("file://{}", cache.display()),
        store.store_dir(),
        WriteOptions {
            compression,
            secret_key,
            jobs: 2,
        },
    )
    .unwrap();
    let report = writer.copy_closure(&store, [sample.root.clone()]).unwrap();
    assert_eq!((report.copied, report.present), (5, 0));
    (store, sample)
}

fn unsigned(uris: &[String]) -> SubstituterConfig {
    let mut c = SubstituterConfig::new(uris.iter().cloned());
    c.require_sigs = false;
    c
}

fn fast_http() -> HttpOptions {
    HttpOptions {
        attempts: 1,
        retry_base: Duration::from_millis(1),
        stalled_timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    }
}

fn never() -> AtomicBool {
    AtomicBool::new(false)
}

/// Substitutes `paths` in order (references first) from substituter `sub`.
fn substitute_in_order(subs: &Substituters, store: &LocalStore, paths: &[StorePath], sub: usize) {
    for p in paths {
        let outcome = subs.substitute_blocking(store, p, sub, false, &never(), &mut |_| {});
        assert_eq!(outcome, SubstitutionOutcome::Success, "{}", store.print(p));
    }
}

#[test]
fn every_compression_round_trips_through_a_file_cache() {
    for compression in Compression::ALL.into_iter().filter(|c| c.can_write()) {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let (src, sample) = source_with_cache(tmp.path(), &cache, compression, None);
        assert_eq!(
            std::fs::read_to_string(cache.join("nix-cache-info")).unwrap(),
            "StoreDir: /nix/store\n"
        );
        let text = std::fs::read_to_string(narinfo_path(&cache, &sample.big)).unwrap();
        let info = NarInfo::parse(&sd(), &text).unwrap();
        assert_eq!(info.compression, compression.name());
        let ext = match compression {
            Compression::Xz => ".nar.xz",
            Compression::Bzip2 => ".nar.bz2",
            Compression::Zstd => ".nar.zst",
            _ => ".nar",
        };
        assert!(info.url.ends_with(ext), "{compression}: {}", info.url);
        assert!(cache.join(&info.url).is_file());
        if compression != Compression::None {
            assert!(
                info.file_size.unwrap() < info.nar_size / 4,
                "{compression} compresses"
            );
        }

        let dst = open_store(&tmp.path().join("dst"));
        let subs = Substituters::open(
            unsigned(&[format!("file://{}", cache.display())]),
            dst.store_dir(),
        );
        assert_eq!(subs.len(), 1);
        substitute_in_order(&subs, &dst, &sample.all(), 0);
        for p in sample.all() {
            assert_same_path(&src, &dst, &p);
        }
        // Writing again finds everything present.
        let writer = CacheWriter::open(
            &format!("file://{}", cache.display()),
            src.store_dir(),
            WriteOptions::default(),
        )
        .unwrap();
        let again = writer.copy_closure(&src, [sample.root.clone()]).unwrap();
        assert_eq!((again.copied, again.present), (0, 5));
    }
}

#[test]
fn signatures_are_required_unless_the_path_is_content_addressed_or_the_cache_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let signer = key("test-cache-1", 7);
    let (src, sample) =
        source_with_cache(tmp.path(), &cache, Compression::Zstd, Some(signer.clone()));
    let uri = format!("file://{}", cache.display());
    let info = NarInfo::parse(
        &sd(),
        &std::fs::read_to_string(narinfo_path(&cache, &sample.root)).unwrap(),
    )
    .unwrap();
    assert_eq!(info.sigs.len(), 1);
    assert!(
        info.sigs
            .iter()
            .next()
            .unwrap()
            .starts_with("test-cache-1:")
    );

    let with_keys = |keys: &[&SecretKey], uri: &str| {
        let mut c = SubstituterConfig::new([uri.to_owned()]);
        c.trusted_public_keys = keys
            .iter()
            .map(|k| k.to_public_key())
            .collect::<PublicKeys>();
        c
    };
    let dst = open_store(&tmp.path().join("dst"));

    // Trusted key: everything is found.
    let good = Substituters::open(with_keys(&[&signer], &uri), &sd());
    for p in sample.all() {
        assert!(matches!(
            good.query_blocking(&p, 0),
            SubstituteAnswer::Found { .. }
        ));
    }
    // Another key: input-addressed paths are rejected with Nix's warning, content-addressed
    // ones (the text file, the tree) need no signature.
    let other = key("someone-else", 9);
    let bad = Substituters::open(with_keys(&[&other], &uri), &sd());
    for p in [&sample.text, &sample.tree] {
        assert!(matches!(
            bad.query_blocking(p, 0),
            SubstituteAnswer::Found { .. }
        ));
    }
    match bad.query_blocking(&sample.lib, 0) {
        SubstituteAnswer::Rejected { message } => assert_eq!(
            message,
            format!(
                "the substitute for '{}' from '{uri}' is not signed by any of the keys in \
                 'trusted-public-keys'",
                dst.print(&sample.lib)
            )
        ),
        other => panic!("{other:?}"),
    }
    substitute_in_order(&bad, &dst, std::slice::from_ref(&sample.text), 0);
    let refused = bad.substitute_blocking(&dst, &sample.lib, 0, false, &never(), &mut |_| {});
    assert_eq!(
        refused,
        SubstitutionOutcome::Failed {
            message: format!(
                "cannot add path '{}' because it lacks a valid signature",
                dst.print(&sample.lib)
            )
        }
    );
    assert!(!dst.is_valid(&sample.lib).unwrap());
    // A trusted cache, or require-sigs off, needs no signature.
    let trusted = Substituters::open(with_keys(&[&other], &format!("{uri}?trusted=1")), &sd());
    assert!(trusted.cache(0).unwrap().trusted());
    substitute_in_order(&trusted, &dst, std::slice::from_ref(&sample.lib), 0);
    let mut off = with_keys(&[], &uri);
    off.require_sigs = false;
    let off = Substituters::open(off, &sd());
    substitute_in_order(
        &off,
        &dst,
        &[sample.tree.clone(), sample.big.clone(), sample.root.clone()],
        0,
    );
    for p in sample.all() {
        assert_same_path(&src, &dst, &p);
    }
    // The registered signatures are the cache's.
    assert_eq!(dst.path_info(&sample.root).unwrap().sigs, info.sigs);
}

#[test]
fn references_must_be_valid_before_a_path_is_substituted() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (_src, sample) = source_with_cache(tmp.path(), &cache, Compression::None, None);
    let dst = open_store(&tmp.path().join("dst"));
    let subs = Substituters::open(unsigned(&[format!("file://{}", cache.display())]), &sd());
    let before = store_entries(&dst);
    let outcome = subs.substitute_blocking(&dst, &sample.lib, 0, false, &never(), &mut |_| {});
    assert_eq!(
        outcome,
        SubstitutionOutcome::Failed {
            message: format!(
                "cannot substitute path '{}': its reference '{}' is not valid",
                dst.print(&sample.lib),
                dst.print(&sample.text)
            )
        }
    );
    assert_eq!(store_entries(&dst), before);
}

/// Rewrites one field of a narinfo in a cache.
fn edit_narinfo(cache: &std::path::Path, path: &StorePath, edit: impl FnOnce(&mut NarInfo)) {
    let file = narinfo_path(cache, path);
    let mut info = NarInfo::parse(&sd(), &std::fs::read_to_string(&file).unwrap()).unwrap();
    edit(&mut info);
    std::fs::write(file, info.to_text(&sd())).unwrap();
}

/// Substitutes `path` (whose references are valid) and expects a failure that leaves no trace.
fn expect_clean_failure(subs: &Substituters, dst: &LocalStore, path: &StorePath) -> String {
    let before = store_entries(dst);
    let outcome = subs.substitute_blocking(dst, path, 0, false, &never(), &mut |_| {});
    let message = match outcome {
        SubstitutionOutcome::Failed { message } => message,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert!(!dst.is_valid(path).unwrap());
    assert!(!dst.real_path(path).exists(), "{message}");
    let after = store_entries(dst);
    assert_eq!(after, before, "leftovers after: {message}");
    message
}

#[test]
fn lying_and_corrupt_downloads_fail_with_nix_messages_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (_src, sample) = source_with_cache(tmp.path(), &cache, Compression::Xz, None);
    let uri = format!("file://{}", cache.display());
    let dst = open_store(&tmp.path().join("dst"));
    let fresh = || Substituters::open(unsigned(std::slice::from_ref(&uri)), &sd());
    let p = sample.big.clone();
    let printed = dst.print(&p);
    let original = std::fs::read_to_string(narinfo_path(&cache, &p)).unwrap();
    let info = NarInfo::parse(&sd(), &original).unwrap();
    let restore = || std::fs::write(narinfo_path(&cache, &p), &original).unwrap();

    // A wrong NarHash.
    let lie = sha256(b"something else");
    edit_narinfo(&cache, &p, |i| i.nar_hash = lie);
    let msg = expect_clean_failure(&fresh(), &dst, &p);
    assert_eq!(
        msg,
        format!(
            "hash mismatch importing path '{printed}';\n  specified: {}\n  got:       {}",
            lie.to_nix32_prefixed(),
            info.nar_hash.to_nix32_prefixed()
        )
    );
    restore();

    // A NarSize too small stops the download early; one too large is a plain mismatch.
    edit_narinfo(&cache, &p, |i| i.nar_size -= 1);
    let msg = expect_clean_failure(&fresh(), &dst, &p);
    assert!(
        msg.starts_with(&format!("size mismatch importing path '{printed}'")),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!("got:       more than {}", info.nar_size - 1)),
        "{msg}"
    );
    edit_narinfo(&cache, &p, |i| i.nar_size += 2);
    restore();
    edit_narinfo(&cache, &p, |i| i.nar_size += 1);
    let msg = expect_clean_failure(&fresh(), &dst, &p);
    assert!(msg.contains("mismatch importing path"), "{msg}");
    restore();

    // A wrong FileHash or FileSize of the compressed file.
    edit_narinfo(&cache, &p, |i| i.file_hash = Some(lie));
    let msg = expect_clean_failure(&fresh(), &dst, &p);
    assert!(
        msg.starts_with(&format!("hash mismatch in file '{}'", info.url)),
        "{msg}"
    );
    restore();
    edit_narinfo(&cache, &p, |i| {
        i.file_size = Some(info.file_size.unwrap() + 5)
    });
    let msg = expect_clean_failure(&fresh(), &dst, &p);
    assert!(
        msg.starts_with(&format!("size mismatch in file '{}'", info.url)),
        "{msg}"
    );
    restore();

    // A corrupt compressed file.
    let nar_file = cache.join(&info.url);
    let good = std::fs::read(&nar_file).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&nar_file, &bad).unwrap();
    let msg = expect_clean_failure(&fresh(), &dst, &p);
    assert!(
        msg.starts_with("decompressing") || msg.contains("mismatch"),
        "{msg}"
    );
    // An unknown compression method.
    std::fs::write(&nar_file, &good).unwrap();
    edit_narinfo(&cache, &p, |i| i.compression = "lzip".into());
    assert_eq!(
        expect_clean_failure(&fresh(), &dst, &p),
        "unknown compression method 'lzip'"
    );
    restore();

    // A NAR that vanished is "gone", not a failure of the cache.
    std::fs::remove_file(&nar_file).unwrap();
    let outcome = fresh().substitute_blocking(&dst, &p, 0, false, &never(), &mut |_| {});
    assert_eq!(
        outcome,
        SubstitutionOutcome::Gone {
            message: format!("file '{}' does not exist in binary cache '{uri}'", info.url)
        }
    );
    std::fs::write(&nar_file, &good).unwrap();
    substitute_in_order(&fresh(), &dst, std::slice::from_ref(&p), 0);
}

#[test]
fn hostile_nars_are_rejected_and_nothing_is_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (_src, sample) = source_with_cache(tmp.path(), &cache, Compression::None, None);
    let dst = open_store(&tmp.path().join("dst"));
    let uri = format!("file://{}", cache.display());
    let file = |name: &[u8], contents: &[u8]| -> Vec<&'static [u8]> {
        let name: &'static [u8] = Box::leak(name.to_vec().into_boxed_slice());
        let contents: &'static [u8] = Box::leak(contents.to_vec().into_boxed_slice());
        vec![
            b"entry",
            b"(",
            b"name",
            name,
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            contents,
            b")",
            b")",
        ]
    };
    let dir = |entries: Vec<Vec<&'static [u8]>>| -> Vec<u8> {
        let mut n = NarBytes::default().strs(&[b"nix-archive-1", b"(", b"type", b"directory"]);
        for e in entries {
            n = n.strs(&e);
        }
        n.str(b")").0
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot entry", dir(vec![file(b"..", b"escape")])),
        ("slash in a name", dir(vec![file(b"a/b", b"x")])),
        (
            "unsorted entries",
            dir(vec![file(b"b", b"1"), file(b"a", b"2")]),
        ),
        (
            "duplicate entries",
            dir(vec![file(b"a", b"1"), file(b"a", b"2")]),
        ),
        ("truncated", dir(vec![file(b"a", b"1")])[..40].to_vec()),
        (
            "trailing data",
            [dir(vec![file(b"a", b"1")]), vec![0; 8]].concat(),
        ),
    ];
    let p = sample.big.clone();
    for (what, nar) in hostile {
        let url = format!("nar/hostile-{}.nar", what.replace(' ', "-"));
        std::fs::write(cache.join(&url), &nar).unwrap();
        let hash = sha256(&nar);
        edit_narinfo(&cache, &p, |i| {
            i.url = url.clone();
            i.compression = "none".into();
            i.nar_hash = hash;
            i.nar_size = nar.len() as u64;
            i.file_hash = Some(hash);
            i.file_size = Some(nar.len() as u64);
        });
        let subs = Substituters::open(unsigned(std::slice::from_ref(&uri)), &sd());
        let msg = expect_clean_failure(&subs, &dst, &p);
        assert!(
            msg.starts_with(&format!("unpacking the NAR of path '{}'", dst.print(&p))),
            "{what}: {msg}"
        );
        assert!(!tmp.path().join("escape").exists());
    }
}

#[test]
fn narinfo_lookups_are_cached_for_the_run_but_failures_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (_src, sample) = source_with_cache(tmp.path(), &cache, Compression::Zstd, None);
    let fail_narinfo = Arc::new(AtomicBool::new(false));
    let server = {
        let fail = fail_narinfo.clone();
        TestServer::start(
            &cache,
            Box::new(move |path, _| {
                if path.ends_with(".narinfo") && fail.load(Ordering::SeqCst) {
                    Reply::Status(500)
                } else {
                    Reply::Serve
                }
            }),
        )
    };
    let mut config = unsigned(&[server.url()]);
    config.http = fast_http();
    let subs = Substituters::open(config, &sd());
    assert_eq!(subs.uris(), vec![server.url()]);
    let missing = StorePath::from_base_name("00000000000000000000000000000000-absent").unwrap();
    for _ in 0..3 {
        assert!(matches!(
            subs.query_blocking(&sample.root, 0),
            SubstituteAnswer::Found { .. }
        ));
        assert_eq!(subs.query_blocking(&missing, 0), SubstituteAnswer::NotFound);
    }
    assert_eq!(
        server.count(&format!("/{}.narinfo", sample.root.hash_part())),
        1
    );
    assert_eq!(
        server.count(&format!("/{}.narinfo", missing.hash_part())),
        1
    );
    let stats = subs.stats();
    assert_eq!((stats.narinfo_requests, stats.cache_hits), (2, 4));
    // Another path with the same hash part is not the same path.
    let twin = StorePath::from_base_name(&format!("{}-twin", sample.root.hash_part())).unwrap();
    assert_eq!(subs.query_blocking(&twin, 0), SubstituteAnswer::NotFound);
    assert_eq!(
        server.count(&format!("/{}.narinfo", sample.root.hash_part())),
        1
    );

    // A failing lookup is reported and asked again next time.
    fail_narinfo.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        match subs.query_blocking(&sample.lib, 0) {
            SubstituteAnswer::Error { message } => assert_eq!(
                message,
                format!(
                    "unable to download '{}/{}.narinfo': HTTP error 500 ('Internal Server \
                     Error')",
                    server.url(),
                    sample.lib.hash_part()
                )
            ),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        server.count(&format!("/{}.narinfo", sample.lib.hash_part())),
        2
    );
    fail_narinfo.store(false, Ordering::SeqCst);
    assert!(matches!(
        subs.query_blocking(&sample.lib, 0),
        SubstituteAnswer::Found { .. }
    ));
}

#[test]
fn many_paths_are_looked_up_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&tmp.path().join("src"));
    let paths: Vec<StorePath> = (0..40)
        .map(|i| add_output(&store, &format!("p{i}"), &format!("body {i}"), &[]))
        .collect();
    let cache = tmp.path().join("cache");
    CacheWriter::open(
        &format!("file://{}", cache.display()),
        &sd(),
        WriteOptions::default(),
    )
    .unwrap()
    .copy_closure(&store, paths.clone())
    .unwrap();
    let server = TestServer::start(&cache, Box::new(|_, _| Reply::Serve));
    // Each narinfo answer waits until 8 requests are in flight at once.
    *server.gather.lock().unwrap() = 8;
    let mut config = unsigned(&[server.url()]);
    config.http = HttpOptions {
        connections: 8,
        ..fast_http()
    };
    let subs = Substituters::open(config, &sd());
    let started = std::time::Instant::now();
    let answers = subs.query_many(&paths, 0);
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, SubstituteAnswer::Found { .. }))
    );
    assert!(
        server.peak() >= 8,
        "peak {} requests in flight",
        server.peak()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lookups waited for each other"
    );
    for p in &paths {
        assert_eq!(server.count(&format!("/{}.narinfo", p.hash_part())), 1);
    }

    // The async lookups share the same bound and cache.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let answers = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for p in paths.iter().cloned() {
            let subs = subs.clone();
            set.spawn(async move { subs.query(p, 0).await });
        }
        set.join_all().await
    });
    assert_eq!(answers.len(), paths.len());
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, SubstituteAnswer::Found { .. }))
    );
    assert_eq!(subs.stats().narinfo_requests, paths.len() as u64);
}

#[test]
fn http_caches_normal_slow_stalling_and_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (src, sample) = source_with_cache(tmp.path(), &cache, Compression::None, None);
    let big_url = NarInfo::parse(
        &sd(),
        &std::fs::read_to_string(narinfo_path(&cache, &sample.big)).unwrap(),
    )
    .unwrap()
    .url;
    let dst = open_store(&tmp.path().join("dst"));

    // A slow server: the download works and reports growing progress.
    let slow = {
        let big_url = big_url.clone();
        TestServer::start(
            &cache,
            Box::new(move |path, _| {
                if path.ends_with(&big_url) {
                    Reply::Slow {
                        chunk: 16 * 1024,
                        pause: Duration::from_millis(3),
                    }
                } else {
                    Reply::Serve
                }
            }),
        )
    };
    let mut config = unsigned(&[slow.url()]);
    config.http = fast_http();
    let subs = Substituters::open(config, &sd());
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let record = seen.clone();
    let outcome = subs.substitute_blocking(&dst, &sample.big, 0, false, &never(), &mut |p| {
        record.lock().unwrap().push(p)
    });
    assert_eq!(outcome, SubstitutionOutcome::Success);
    assert_same_path(&src, &dst, &sample.big);
    let seen = seen.lock().unwrap();
    let last = *seen.last().unwrap();
    let nar_size = src.path_info(&sample.big).unwrap().nar_size;
    assert_eq!(last.nar_done, nar_size);
    assert_eq!(last.nar_expected, nar_size);
    assert_eq!(Some(last.download_done), last.download_expected);
    assert!(seen.len() > 3, "{} progress reports", seen.len());
    assert!(seen.windows(2).all(|w| w[0].nar_done <= w[1].nar_done));

    // A lying server: the narinfo is true, the NAR it sends (of the right size) is not.
    let text_info = NarInfo::parse(
        &sd(),
        &std::fs::read_to_string(narinfo_path(&cache, &sample.text)).unwrap(),
    )
    .unwrap();
    let mut forged = std::fs::read(cache.join(&text_info.url)).unwrap();
    let at = forged.windows(5).position(|w| w == b"hello").unwrap();
    forged[at..at + 5].copy_from_slice(b"HELLO");
    let forged_hash = sha256(&forged);
    let liar = {
        let url = format!("/{}", text_info.url);
        TestServer::start(
            &cache,
            Box::new(move |path, _| {
                if path == url {
                    Reply::Bytes(forged.clone())
                } else {
                    Reply::Serve
                }
            }),
        )
    };
    let mut config = unsigned(&[liar.url()]);
    config.http = fast_http();
    let msg = expect_clean_failure(&Substituters::open(config, &sd()), &dst, &sample.text);
    assert_eq!(
        msg,
        format!(
            "hash mismatch importing path '{}';\n  specified: {}\n  got:       {}",
            dst.print(&sample.text),
            text_info.nar_hash.to_nix32_prefixed(),
            forged_hash.to_nix32_prefixed()
        )
    );

    // A server that stalls mid-download fails after the stall timeout.
    let stalling = TestServer::start(
        &cache,
        Box::new(|path, _| {
            if path.starts_with("/nar/") {
                Reply::Stall
            } else {
                Reply::Serve
            }
        }),
    );
    let mut config = unsigned(&[stalling.url()]);
    config.http = HttpOptions {
        stalled_timeout: Duration::from_millis(300),
        ..fast_http()
    };
    let subs = Substituters::open(config, &sd());
    let msg = expect_clean_failure(&subs, &dst, &sample.text);
    assert!(msg.starts_with("downloading 'nar/"), "{msg}");
    drop(stalling);

    // A failing server: retried as often as configured, then a failure.
    let failing = TestServer::start(
        &cache,
        Box::new(|path, _| {
            if path.starts_with("/nar/") {
                Reply::Status(503)
            } else {
                Reply::Serve
            }
        }),
    );
    let mut config = unsigned(&[failing.url()]);
    config.http = HttpOptions {
        attempts: 3,
        ..fast_http()
    };
    let subs = Substituters::open(config, &sd());
    let msg = expect_clean_failure(&subs, &dst, &sample.text);
    assert!(
        msg.contains("HTTP error 503 ('Service Unavailable')"),
        "{msg}"
    );
    assert_eq!(
        failing
            .requests()
            .iter()
            .filter(|r| r.starts_with("/nar/"))
            .count(),
        3
    );

    // A server that fails once: the retry succeeds.
    let flaky = TestServer::start(
        &cache,
        Box::new(|path, nth| {
            if path.starts_with("/nar/") && nth == 0 {
                Reply::Status(500)
            } else {
                Reply::Serve
            }
        }),
    );
    let mut config = unsigned(&[flaky.url()]);
    config.http = HttpOptions {
        attempts: 2,
        ..fast_http()
    };
    let subs = Substituters::open(config, &sd());
    substitute_in_order(&subs, &dst, std::slice::from_ref(&sample.text), 0);
    assert_same_path(&src, &dst, &sample.text);

    // A server without nix-cache-info is not a binary cache; with --fallback a failing
    // cache is disabled for a while.
    let empty_dir = tempfile::tempdir().unwrap();
    let not_a_cache = TestServer::start(empty_dir.path(), Box::new(|_, _| Reply::Serve));
    let subs = Substituters::open(unsigned(&[not_a_cache.url()]), &sd());
    assert!(subs.is_empty());
    assert_eq!(
        subs.skipped(),
        [format!(
            "'{}' does not appear to be a binary cache",
            not_a_cache.url()
        )]
    );
    let broken = TestServer::start(
        &cache,
        Box::new(|path, _| {
            if path.ends_with(".narinfo") {
                Reply::Status(500)
            } else {
                Reply::Serve
            }
        }),
    );
    let mut config = unsigned(&[broken.url()]);
    config.http = fast_http();
    config.try_fallback = true;
    let subs = Substituters::open(config, &sd());
    assert!(matches!(
        subs.query_blocking(&sample.lib, 0),
        SubstituteAnswer::Error { .. }
    ));
    assert_eq!(
        subs.query_blocking(&sample.root, 0),
        SubstituteAnswer::Error {
            message: format!("substituter '{}' is disabled", broken.url())
        }
    );
    assert_eq!(
        broken.count(&format!("/{}.narinfo", sample.root.hash_part())),
        0
    );
}

#[test]
fn cancel_repair_and_priorities() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (src, sample) = source_with_cache(tmp.path(), &cache, Compression::Bzip2, None);
    let uri = format!("file://{}", cache.display());
    let dst = open_store(&tmp.path().join("dst"));
    let subs = Substituters::open(unsigned(std::slice::from_ref(&uri)), &sd());

    // Cancelled after the first progress report.
    let cancel = AtomicBool::new(false);
    let before = store_entries(&dst);
    let outcome = subs.substitute_blocking(&dst, &sample.big, 0, false, &cancel, &mut |p| {
        if p.nar_done > 0 {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert_eq!(
        outcome,
        SubstitutionOutcome::Failed {
            message: format!(
                "substitution of path '{}' was cancelled",
                dst.print(&sample.big)
            )
        }
    );
    assert_eq!(store_entries(&dst), before);

    // Repair replaces damaged contents of a valid path.
    substitute_in_order(&subs, &dst, std::slice::from_ref(&sample.big), 0);
    let real = dst.real_path(&sample.big);
    let mut perms = std::fs::metadata(&real).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&real, perms).unwrap();
    std::fs::write(&real, "damaged").unwrap();
    assert_eq!(
        subs.substitute_blocking(&dst, &sample.big, 0, false, &never(), &mut |_| {}),
        SubstitutionOutcome::Success,
        "without repair a valid path is left alone"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "damaged");
    assert_eq!(
        subs.substitute_blocking(&dst, &sample.big, 0, true, &never(), &mut |_| {}),
        SubstitutionOutcome::Success
    );
    assert_same_path(&src, &dst, &sample.big);

    // Caches are tried by priority (the URI's, else nix-cache-info's), stably.
    let other = tmp.path().join("other");
    copy_dir(&cache, &other);
    std::fs::write(
        other.join("nix-cache-info"),
        "StoreDir: /nix/store\nPriority: 10\n",
    )
    .unwrap();
    let config = unsigned(&[
        format!("{uri}?priority=40"),
        format!("file://{}", other.display()),
        format!("{uri}?priority=40"),
        format!("file://{}?priority=5", tmp.path().join("third").display()),
    ]);
    let subs = Substituters::open(config, &sd());
    assert_eq!(
        subs.uris(),
        vec![
            format!("file://{}", tmp.path().join("third").display()),
            format!("file://{}", other.display()),
            uri.clone(),
        ]
    );
    let priorities: Vec<i32> = (0..subs.len())
        .map(|i| subs.cache(i).unwrap().priority())
        .collect();
    assert_eq!(priorities, vec![5, 10, 40]);
}

/// The real scheduler driving substitutions through the async API, as the build executor
/// does: a lying first cache fails, the second provides the path, references come first.
mod driven {
    use super::*;
    use drover::engine::api::{BuildMode, Time};
    use drover::engine::driver::{self, DriverOptions, Executor};
    use drover::engine::scheduler::{
        DrvInfo, Effect, Input, Scheduler, Settings, StoreView, Target, Ticket,
    };
    use tokio::sync::mpsc;

    struct View(Arc<LocalStore>);

    impl StoreView for View {
        fn is_valid(&self, path: &StorePath) -> bool {
            self.0.is_valid(path).unwrap_or(false)
        }

        fn load_derivation(&self, drv: &StorePath) -> Result<Arc<DrvInfo>, String> {
            Err(format!("no derivation {drv:?} in this test"))
        }
    }

    struct SubstExecutor {
        view: View,
        subs: Substituters,
        started: std::time::Instant,
        tx: mpsc::UnboundedSender<Input>,
        rx: mpsc::UnboundedReceiver<Input>,
        cancels: BTreeMap<Ticket, Arc<AtomicBool>>,
    }

    impl Executor for SubstExecutor {
        fn store(&self) -> &dyn StoreView {
            &self.view
        }

        fn now(&self) -> Time {
            Time::from_millis(self.started.elapsed().as_millis() as u64)
        }

        fn execute(&mut self, effect: Effect, _immediate: &mut Vec<Input>) {
            let tx = self.tx.clone();
            let subs = self.subs.clone();
            match effect {
                Effect::QuerySubstitute {
                    ticket,
                    path,
                    substituter,
                } => {
                    tokio::spawn(async move {
                        let answer = subs.query(path, substituter).await;
                        let _ = tx.send(Input::SubstituteInfo { ticket, answer });
                    });
                }
                Effect::StartSubstitution {
                    ticket,
                    path,
                    substituter,
                    repair,
                } => {
                    let cancel = Arc::new(AtomicBool::new(false));
                    self.cancels.insert(ticket, cancel.clone());
                    let store = self.view.0.clone();
                    tokio::spawn(async move {
                        let outcome = subs
                            .substitute(store, path, substituter, repair, cancel, |_| {})
                            .await;
                        let _ = tx.send(Input::SubstitutionFinished { ticket, outcome });
                    });
                }
                Effect::CancelSubstitution { ticket } => {
                    if let Some(c) = self.cancels.remove(&ticket) {
                        c.store(true, Ordering::SeqCst);
                    }
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }

        fn poll_ready(&mut self) -> Option<Input> {
            self.rx.try_recv().ok()
        }

        async fn next_input(&mut self, deadline: Option<Time>) -> Option<Input> {
            match deadline {
                Some(d) => {
                    let wait = d.0.saturating_sub(self.now().0);
                    tokio::time::timeout(Duration::from_millis(wait), self.rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
                None => self.rx.recv().await,
            }
        }
    }

    #[tokio::test]
    async fn a_lying_cache_fails_and_the_next_one_substitutes_the_closure() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        let (src, sample) = source_with_cache(tmp.path(), &good, Compression::Xz, None);
        let liar = tmp.path().join("liar");
        copy_dir(&good, &liar);
        std::fs::write(
            liar.join("nix-cache-info"),
            "StoreDir: /nix/store\nPriority: 10\n",
        )
        .unwrap();
        std::fs::write(
            good.join("nix-cache-info"),
            "StoreDir: /nix/store\nPriority: 20\n",
        )
        .unwrap();
        edit_narinfo(&liar, &sample.lib, |i| i.nar_hash = sha256(b"lie"));
        let dst = Arc::new(open_store(&tmp.path().join("dst")));
        let subs = Substituters::open(
            unsigned(&[
                format!("file://{}", good.display()),
                format!("file://{}", liar.display()),
            ]),
            &sd(),
        );
        assert_eq!(subs.cache(0).unwrap().priority(), 10);
        let scheduler = Scheduler::new(Settings {
            max_jobs: 4,
            substituters: subs.uris(),
            ..Settings::default()
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let executor = SubstExecutor {
            view: View(dst.clone()),
            subs,
            started: std::time::Instant::now(),
            tx,
            rx,
            cancels: BTreeMap::new(),
        };
        let (driver, handle) = driver::driver(scheduler, executor, DriverOptions::default());
        let mut events = handle.subscribe(driver::Delivery::Lossless { capacity: 1 << 16 });
        let collector = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(batch) = events.recv().await {
                all.extend(batch.iter().cloned());
            }
            all
        });
        let outcome = driver
            .run(&[Target::Path(sample.root.clone())], BuildMode::Normal)
            .await;
        drop(handle);
        let events = collector.await.unwrap();
        assert_eq!(outcome.exit_status, 0);
        for p in sample.all() {
            assert_same_path(&src, &dst, &p);
        }
        let text = format!("{events:?}");
        assert!(
            text.contains("hash mismatch importing path"),
            "the lie is reported: {text}"
        );
    }
}
