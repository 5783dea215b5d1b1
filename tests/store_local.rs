//! The local store's database semantics on temporary stores: registration (atomic, references
//! in any order), queries, closures, deletion, bad input. Interop with real Nix is in
//! `differential_store.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use drover::engine::format::derivation::{Derivation, DerivationOutput, DrvHashes, NewOutputs};
use drover::engine::format::hash::sha256;
use drover::engine::format::{ContentAddress, StorePath};
use drover::engine::store::{ClosureFlags, LocalStore, PathInfo, StoreConfig, StoreError};

fn store(root: &Path) -> LocalStore {
    LocalStore::open(StoreConfig::chroot(root)).unwrap()
}

/// A store path with a file as contents (the DB does not check hashes at registration).
fn make_path(store: &LocalStore, name: &str, refs: &[&StorePath]) -> PathInfo {
    let digest: [u8; 20] = sha256(name.as_bytes()).digest()[..20].try_into().unwrap();
    let path = StorePath::from_digest(digest, name).unwrap();
    std::fs::write(store.real_path(&path), name).unwrap();
    let mut info = PathInfo::new(path, sha256(name.as_bytes()), 100 + name.len() as u64);
    info.references = refs.iter().map(|r| (*r).clone()).collect();
    info
}

fn strip_sql(s: &str) -> String {
    s.lines()
        .map(|l| l.split("--").next().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .replace("if not exists ", "")
}

/// Many first opens of a fresh store at once all succeed (the CI once saw one read the
/// schema file while another was still writing it).
#[test]
fn concurrent_first_opens_of_a_new_store_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (root, barrier) = (root.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    LocalStore::open(StoreConfig::chroot(&root)).map(|_| ())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }
}

#[test]
fn creates_nix_layout_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let _s = store(dir.path());
    for d in [
        "nix/store",
        "nix/var/nix/db",
        "nix/var/nix/temproots",
        "nix/var/nix/gcroots",
        "nix/var/log/nix/drvs",
    ] {
        assert!(dir.path().join(d).is_dir(), "{d}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("nix/var/nix/db/schema")).unwrap(),
        "10"
    );
    let conn = rusqlite::Connection::open(dir.path().join("nix/var/nix/db/db.sqlite")).unwrap();
    // The schema real Nix 2.8 created (sqlite3 .schema of a Debian nix-bin store), loaded
    // into a scratch database so both sides are read back the same way.
    let golden = std::fs::read_to_string("tests/fixtures/nix-2.8-db-schema.sql").unwrap();
    let reference = rusqlite::Connection::open_in_memory().unwrap();
    reference
        .execute_batch(&golden.replace("CREATE TABLE sqlite_sequence(name,seq);", ""))
        .unwrap();
    let schema_of = |c: &rusqlite::Connection| {
        let mut v: Vec<String> = c
            .prepare("select sql from sqlite_master where sql is not null")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|s| strip_sql(&s.unwrap()))
            .collect();
        v.sort();
        v
    };
    let ours = schema_of(&conn);
    let nix = schema_of(&reference);
    assert_eq!(ours, nix);
    let mode: String = conn
        .query_row("pragma journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn registers_a_set_with_references_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let c = make_path(&s, "c", &[]);
    let b = make_path(&s, "b", &[&c.path]);
    let mut a = make_path(&s, "a", &[&b.path, &c.path]);
    a.references.insert(a.path.clone()); // a self-reference
    a.deriver = Some(StorePath::from_base_name("00000000000000000000000000000000-a.drv").unwrap());
    a.ultimate = true;
    a.sigs = ["k1:sig1".to_owned(), "k2:sig2".to_owned()].into();
    a.ca = Some(ContentAddress::Text(sha256(b"a")));
    // Referrers before references: registration must not care.
    s.register_valid_paths(&[a.clone(), b.clone(), c.clone()])
        .unwrap();
    for i in [&a, &b, &c] {
        let got = s.query_path_info(&i.path).unwrap().unwrap();
        assert!(got.registration_time > 0);
        assert_eq!(
            PathInfo {
                registration_time: 0,
                ..got
            },
            *i
        );
    }
    assert_eq!(
        s.query_referrers(&c.path).unwrap(),
        [a.path.clone(), b.path.clone()].into()
    );
    assert_eq!(
        s.query_path_from_hash_part(b.path.hash_part()).unwrap(),
        Some(b.path.clone())
    );
    assert_eq!(s.query_path_from_hash_part(&"0".repeat(32)).unwrap(), None);

    let closure = s
        .compute_fs_closure([a.path.clone()], ClosureFlags::default())
        .unwrap();
    assert_eq!(
        closure,
        [a.path.clone(), b.path.clone(), c.path.clone()].into()
    );
    let up = s
        .compute_fs_closure(
            [c.path.clone()],
            ClosureFlags {
                flip_direction: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(up, closure);
    let order = s.topo_sort_paths(&closure).unwrap();
    assert_eq!(order, vec![a.path.clone(), b.path.clone(), c.path.clone()]);
}

#[test]
fn a_bad_set_registers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let stranger = make_path(&s, "stranger", &[]); // has contents, never registered
    let ok = make_path(&s, "ok", &[]);
    let bad = make_path(&s, "bad", &[&stranger.path]);
    let err = s.register_valid_paths(&[ok.clone(), bad]).unwrap_err();
    assert!(matches!(err, StoreError::InvalidReference { .. }), "{err}");
    assert!(err.to_string().contains("stranger"));
    assert!(
        !s.is_valid(&ok.path).unwrap(),
        "the transaction rolled back"
    );

    let mut x = make_path(&s, "x", &[]);
    let y = make_path(&s, "y", &[&x.path]);
    x.references.insert(y.path.clone());
    let err = s.register_valid_paths(&[x.clone(), y]).unwrap_err();
    assert!(matches!(err, StoreError::Cycle { .. }), "{err}");
    assert!(!s.is_valid(&x.path).unwrap());

    let ghost = PathInfo::new(
        StorePath::from_base_name("11111111111111111111111111111111-ghost").unwrap(),
        sha256(b""),
        1,
    );
    let err = s.register_valid_paths(&[ghost]).unwrap_err();
    assert!(err.to_string().contains("has no contents"), "{err}");
}

/// A real two-output derivation, written with `add_text_to_store` as nix-instantiate would.
fn hello_drv(s: &LocalStore) -> (StorePath, Derivation) {
    let mut drv = Derivation {
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), "echo hi > $out; echo dev > $dev".into()],
        ..Default::default()
    };
    drv.env.insert("name".into(), "hello".into());
    drv.env.insert("builder".into(), "/bin/sh".into());
    drv.env.insert("system".into(), "x86_64-linux".into());
    let outputs = NewOutputs::InputAddressed(["out".to_owned(), "dev".to_owned()].into());
    let drv_path = drv
        .fill_in_outputs(
            s.store_dir(),
            "hello",
            &outputs,
            &mut DrvHashes::new(),
            |p: &StorePath| Err::<Derivation, _>(format!("no input {p}")),
        )
        .unwrap();
    let written = s
        .add_text_to_store("hello.drv", &drv.to_aterm(s.store_dir()), &drv.references())
        .unwrap();
    assert_eq!(written, drv_path);
    (drv_path, drv)
}

#[test]
fn derivation_outputs_and_derivers() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (drv_path, drv) = hello_drv(&s);
    let outputs: BTreeMap<String, StorePath> = drv
        .output_paths()
        .into_iter()
        .map(|(n, p)| (n.to_owned(), p.unwrap().clone()))
        .collect();
    assert_eq!(s.query_derivation_outputs(&drv_path).unwrap(), outputs);
    assert_eq!(s.derivation_output_paths(&drv_path).unwrap(), outputs);
    let out_path = outputs["out"].clone();
    assert_eq!(
        s.query_valid_derivers(&out_path).unwrap(),
        [drv_path.clone()].into()
    );
    // "Build" the outputs: contents in place, registered with the deriver.
    let mut infos = Vec::new();
    for (name, p) in &outputs {
        std::fs::write(s.real_path(p), name).unwrap();
        let mut info = PathInfo::new(p.clone(), sha256(name.as_bytes()), 64);
        info.deriver = Some(drv_path.clone());
        if name == "dev" {
            info.references.insert(out_path.clone());
        }
        infos.push(info);
    }
    s.register_valid_paths(&infos).unwrap();
    let dev_path = outputs["dev"].clone();
    let with_outputs = s
        .compute_fs_closure(
            [drv_path.clone()],
            ClosureFlags {
                include_outputs: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        with_outputs,
        [drv_path.clone(), out_path.clone(), dev_path.clone()].into()
    );
    let with_derivers = s
        .compute_fs_closure(
            [dev_path.clone()],
            ClosureFlags {
                include_derivers: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(with_derivers, [drv_path, out_path, dev_path].into());
}

#[test]
fn a_derivation_with_wrong_output_paths_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, mut drv) = hello_drv(&s);
    // Point "out" somewhere else: the registration must notice, as Nix's does.
    let bogus = StorePath::from_base_name("33333333333333333333333333333333-hello").unwrap();
    drv.outputs.insert(
        "out".into(),
        DerivationOutput::InputAddressed(bogus.clone()),
    );
    drv.env.insert("out".into(), s.print(&bogus).into());
    let e = s
        .add_text_to_store("hello.drv", &drv.to_aterm(s.store_dir()), &drv.references())
        .unwrap_err();
    assert!(e.to_string().contains("incorrect output"), "{e}");
}

#[test]
fn deletion_respects_referrers() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let lib = make_path(&s, "lib", &[]);
    let app = make_path(&s, "app", &[&lib.path]);
    s.register_valid_paths(&[lib.clone(), app.clone()]).unwrap();
    let err = s.delete_path(&lib.path).unwrap_err();
    assert!(matches!(err, StoreError::PathInUse { .. }), "{err}");
    assert!(err.to_string().contains("app"));
    s.delete_paths(&[lib.path.clone(), app.path.clone()].into())
        .unwrap();
    assert!(!s.is_valid(&lib.path).unwrap());
    assert!(!s.real_path(&lib.path).exists());
    assert!(!s.real_path(&app.path).exists());
}

#[test]
fn invalid_paths_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let p = StorePath::from_base_name("22222222222222222222222222222222-nope").unwrap();
    assert_eq!(s.query_path_info(&p).unwrap(), None);
    let e = s.path_info(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "path '/nix/store/22222222222222222222222222222222-nope' is not valid"
    );
    assert!(s.compute_fs_closure([p], ClosureFlags::default()).is_err());
}

#[test]
fn corrupt_or_future_databases_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(store(dir.path()));
    let db = dir.path().join("nix/var/nix/db/db.sqlite");
    std::fs::remove_file(dir.path().join("nix/var/nix/db/db.sqlite-wal")).ok();
    std::fs::remove_file(dir.path().join("nix/var/nix/db/db.sqlite-shm")).ok();
    std::fs::write(
        &db,
        b"this is not a database, just garbage bytes................",
    )
    .unwrap();
    let e = LocalStore::open(StoreConfig::chroot(dir.path()))
        .err()
        .expect("garbage must not open");
    assert!(e.to_string().contains("db.sqlite"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    drop(store(dir.path()));
    std::fs::write(dir.path().join("nix/var/nix/db/schema"), "11").unwrap();
    let e = LocalStore::open(StoreConfig::chroot(dir.path()))
        .err()
        .expect("a future schema must not open");
    assert!(e.to_string().contains("version 11"), "{e}");
}

#[test]
fn a_corrupt_row_is_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let p = make_path(&s, "row", &[]);
    s.register_valid_paths(std::slice::from_ref(&p)).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("nix/var/nix/db/db.sqlite")).unwrap();
    conn.execute("update ValidPaths set hash = 'sha256:zz'", [])
        .unwrap();
    let e = s.query_path_info(&p.path).unwrap_err();
    assert!(e.to_string().contains(&s.print(&p.path)), "{e}");
}

#[test]
fn concurrent_registrations_of_overlapping_sets_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let setup = store(dir.path());
    let all: Vec<PathInfo> = (0..200)
        .map(|i| make_path(&setup, &format!("p{i}"), &[]))
        .collect();
    drop(setup);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = dir.path().to_owned();
            // Overlapping windows of the same paths, each chained to its predecessor.
            let mut mine: Vec<PathInfo> = all[t * 40..t * 40 + 80].to_vec();
            for k in 1..mine.len() {
                let prev = mine[k - 1].path.clone();
                mine[k].references.insert(prev);
            }
            std::thread::spawn(move || {
                let s = LocalStore::open(StoreConfig::chroot(&root)).unwrap();
                for chunk in mine.chunks(7) {
                    // Each chunk's first reference may belong to the previous chunk.
                    let mut batch: Vec<PathInfo> = chunk.to_vec();
                    let keep: BTreeSet<StorePath> = batch.iter().map(|i| i.path.clone()).collect();
                    for info in &mut batch {
                        info.references
                            .retain(|r| keep.contains(r) || s.is_valid(r).unwrap());
                    }
                    s.register_valid_paths(&batch).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = store(dir.path());
    let valid = s.query_all_valid_paths().unwrap();
    assert_eq!(valid.len(), 200);
}

#[test]
fn leftovers_of_a_crash_are_replaced_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "the real contents").unwrap();
    let (nar_hash, _) =
        drover::engine::format::nar::hash_path(&src, drover::engine::format::HashAlgo::Sha256)
            .unwrap();
    let expected = s
        .store_dir()
        .make_fixed_output_path(
            drover::engine::format::IngestionMethod::Recursive,
            &nar_hash,
            "src",
            &BTreeSet::new(),
            false,
        )
        .unwrap();
    // A previous run wrote half the contents and died before registering.
    let real = s.real_path(&expected);
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("f"), "half").unwrap();
    assert!(!s.is_valid(&expected).unwrap());
    let added = s
        .add_to_store(
            &src,
            None,
            drover::engine::format::IngestionMethod::Recursive,
            drover::engine::format::HashAlgo::Sha256,
        )
        .unwrap();
    assert_eq!(added, expected);
    assert_eq!(
        std::fs::read_to_string(real.join("f")).unwrap(),
        "the real contents"
    );
    assert_eq!(s.verify(true).unwrap(), Default::default());
}

#[test]
fn verify_reports_modified_and_vanished_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let src = dir.path().join("x");
    std::fs::write(&src, "x").unwrap();
    let flat = drover::engine::format::IngestionMethod::Flat;
    let sha = drover::engine::format::HashAlgo::Sha256;
    let p = s.add_to_store(&src, None, flat, sha).unwrap();
    let gone = s
        .add_text_to_store("gone", b"bye", &BTreeSet::new())
        .unwrap();
    let real = s.real_path(&p);
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&real, "tampered").unwrap();
    std::fs::remove_file(s.real_path(&gone)).unwrap();
    let report = s.verify(true).unwrap();
    assert_eq!(report.removed, vec![s.print(&gone)]);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("was modified"), "{report:?}");
    assert!(!s.is_valid(&gone).unwrap());
}

#[test]
fn an_unusable_store_location_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(&root, "a file where the store should be").unwrap();
    let e = LocalStore::open(StoreConfig::chroot(&root))
        .err()
        .expect("cannot create a store inside a file");
    assert!(e.to_string().contains(root.to_str().unwrap()), "{e}");
}

#[test]
fn a_derivation_that_does_not_parse_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let e = s
        .add_text_to_store("broken.drv", b"Derive([(\"out\"", &BTreeSet::new())
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("broken.drv") && msg.contains("offset"),
        "{msg}"
    );
}

#[test]
fn temp_roots_are_written_as_nix_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let a = StorePath::from_base_name("44444444444444444444444444444444-a").unwrap();
    let b = StorePath::from_base_name("55555555555555555555555555555555-b").unwrap();
    s.add_temp_root(&a).unwrap();
    s.add_temp_root(&b).unwrap();
    let file = dir
        .path()
        .join("nix/var/nix/temproots")
        .join(std::process::id().to_string());
    assert_eq!(
        std::fs::read(&file).unwrap(),
        format!("{}\0{}\0", s.print(&a), s.print(&b)).into_bytes()
    );
    // The collector may only take the lock of a dead process.
    let other = std::fs::File::open(&file).unwrap();
    assert!(
        other.try_lock().is_err(),
        "the roots file is locked while we live"
    );
    drop(s);
    assert!(!file.exists(), "removed when the store is closed");
}
