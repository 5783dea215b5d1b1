//! The local store against real Nix 2.8 on the same directories: Nix reads what drover wrote,
//! drover reads what Nix wrote, their locks exclude each other, and concurrent drover
//! processes lose nothing.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use drover::engine::format::StorePath;
use drover::engine::store::{LocalStore, PathInfo, StoreConfig, TryLock};

fn nix(cmd: &str, args: &[&str]) -> String {
    let out = common::nix_command(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn drover(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "drover {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The answers of `nix-store -q` and `drover query` for one path must be equal.
fn assert_queries_agree(store: &str, path: &str) {
    for q in [
        "--references",
        "--referrers",
        "--requisites",
        "--hash",
        "--size",
        "--deriver",
    ] {
        let theirs = nix("nix-store", &["--store", store, "-q", q, path]);
        let ours = drover(&["query", "--store", store, q, path]);
        assert_eq!(ours, theirs, "query {q} of {path}");
    }
}

fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/empty")).unwrap();
    std::fs::write(dir.join("sub/data"), "some data\n").unwrap();
    std::fs::write(dir.join("run"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(
        dir.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/data", dir.join("link")).unwrap();
}

#[test]
fn nix_reads_a_store_drover_filled() {
    if !common::require_nix() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let root_s = root.to_str().unwrap();
    let src = tmp.path().join("tree");
    make_tree(&src);
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "a file\n").unwrap();

    // Files and trees by content, like nix-store --add (same paths as real Nix computes).
    let added = drover(&[
        "add",
        "--store",
        root_s,
        src.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let nix_paths = nix(
        "nix-store",
        &[
            "--store",
            tmp.path().join("nix").to_str().unwrap(),
            "--add",
            src.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(added, nix_paths);
    let added: Vec<&str> = added.lines().collect();

    // A "built" output with references, a deriver and a build log, registered by the API.
    let store = LocalStore::open(StoreConfig::chroot(&root)).unwrap();
    let tree = store.parse(added[0]).unwrap();
    let out = StorePath::from_base_name("0c6wqvjzlnvafbgwdhfycpix0spfb7ky-built").unwrap();
    let drv = StorePath::from_base_name("1c6wqvjzlnvafbgwdhfycpix0spfb7ky-built.drv").unwrap();
    std::fs::create_dir(store.real_path(&out)).unwrap();
    std::fs::write(
        store.real_path(&out).join("refs"),
        format!("{}\n{}\n", store.print(&tree), store.print(&out)),
    )
    .unwrap();
    let (nar_hash, nar_size) = drover::engine::format::nar::hash_path(
        &store.real_path(&out),
        drover::engine::format::HashAlgo::Sha256,
    )
    .unwrap();
    let mut info = PathInfo::new(out.clone(), nar_hash, nar_size);
    info.references = [tree.clone(), out.clone()].into();
    info.deriver = Some(drv.clone());
    info.ultimate = true;
    drover::engine::store::canon::canonicalise_path_metadata(
        &store.real_path(&out),
        None,
        &mut Default::default(),
    )
    .unwrap();
    store.register_valid_paths(&[info]).unwrap();
    let mut log = store.create_log(&drv).unwrap();
    log.write(b"building...\ndone\n").unwrap();
    log.finish().unwrap();
    let text = store
        .add_text_to_store("notes.txt", b"refers to the tree", &[tree.clone()].into())
        .unwrap();
    drop(store);

    for p in added.iter().copied().chain([
        format!("/nix/store/{}", out.base_name()).as_str(),
        format!("/nix/store/{}", text.base_name()).as_str(),
    ]) {
        assert_queries_agree(root_s, p);
    }
    let log_nix = nix(
        "nix-store",
        &[
            "--store",
            root_s,
            "--read-log",
            &format!("/nix/store/{}", out.base_name()),
        ],
    );
    assert_eq!(log_nix, "building...\ndone\n");
    // Nix finds nothing wrong with the store.
    let verify = common::nix_command("nix-store")
        .args(["--store", root_s, "--verify", "--check-contents"])
        .output()
        .unwrap();
    assert!(verify.status.success());
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !stderr.contains("error") && !stderr.contains("modified"),
        "{stderr}"
    );
}

#[test]
fn drover_reads_a_store_nix_filled() {
    if !common::require_nix() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let root_s = root.to_str().unwrap();
    let src = tmp.path().join("tree");
    make_tree(&src);
    nix(
        "nix-store",
        &["--store", root_s, "--add", src.to_str().unwrap()],
    );
    let expr = format!(
        r#"let
          dep = derivation {{ name = "dep"; system = "x86_64-linux"; builder = "/bin/busybox";
            args = ["sh" "-c" "echo dep > $out"]; }};
          top = derivation {{ name = "top"; system = "x86_64-linux"; builder = "/bin/busybox";
            outputs = ["out" "dev"]; src = {src};
            args = ["sh" "-c" "echo ${{dep}} > $out; echo $out > $dev"]; }};
        in top"#,
        src = src.display()
    );
    let expr_file = tmp.path().join("top.nix");
    std::fs::write(&expr_file, expr).unwrap();
    let outs = nix(
        "nix-build",
        &[
            "--store",
            root_s,
            "--no-out-link",
            expr_file.to_str().unwrap(),
            "-A",
            "all",
        ],
    );
    assert!(outs.lines().count() == 2, "{outs}");
    // Every valid path Nix registered, as it lists them.
    let db = rusqlite::Connection::open(root.join("nix/var/nix/db/db.sqlite")).unwrap();
    let paths: Vec<String> = db
        .prepare("select path from ValidPaths")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(db);
    assert!(paths.len() >= 6, "{paths:?}");
    for p in &paths {
        assert_queries_agree(root_s, p);
    }
    let drv = paths.iter().find(|p| p.ends_with("-top.drv")).unwrap();
    assert_eq!(
        drover(&["query", "--store", root_s, "--outputs", drv]),
        nix("nix-store", &["--store", root_s, "-q", "--outputs", drv])
    );
    assert_eq!(
        drover(&["log", "--store", root_s, drv]),
        nix("nix-store", &["--store", root_s, "--read-log", drv])
    );
    drover(&["verify", "--store", root_s, "--check-contents"]);
}

#[test]
fn locks_exclude_real_nix_and_report_it() {
    if !common::require_nix() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let uri = format!(
        "local?store={0}/store&state={0}/state&log={0}/log",
        base.display()
    );
    let fifo = base.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Unsandboxed (a relocated store, not a chroot one), so the builder can wait on the fifo.
    let expr = format!(
        r#"derivation {{ name = "slow"; system = "x86_64-linux"; builder = "/bin/busybox";
            args = ["sh" "-c" "echo started; read x < {}; echo done > $out"]; }}"#,
        fifo.display()
    );
    let mut build = common::nix_command("nix-build")
        .args([
            "--option",
            "sandbox",
            "false",
            "--store",
            &uri,
            "--no-out-link",
            "-E",
            &expr,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The builder says "started" once Nix holds the output lock.
    let mut stderr = BufReader::new(build.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "nix-build ended early"
        );
        if line.trim_end() == "started" {
            break;
        }
    }
    let config = StoreConfig::parse(Some(&uri), &Default::default()).unwrap();
    let store = LocalStore::open(config).unwrap();
    let out_name = std::fs::read_dir(base.join("store"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("-slow.lock"))
        .expect("Nix created the output's lock file")
        .trim_end_matches(".lock")
        .to_owned();
    let out = StorePath::from_base_name(&out_name).unwrap();
    match store.try_lock_paths(std::slice::from_ref(&out)).unwrap() {
        TryLock::Busy { lock, holder } => {
            assert!(lock.ends_with(format!("{out_name}.lock")));
            let holder = holder.expect("the holder is visible in /proc/locks");
            assert_eq!(holder.pid, build.id());
            assert!(holder.command.unwrap().contains("nix-build"));
        }
        TryLock::Acquired(_) => panic!("real Nix holds this lock"),
    }
    assert!(!store.is_valid(&out).unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(build.wait().unwrap().success(), "{rest}");
    assert!(store.is_valid(&out).unwrap(), "drover sees what Nix built");
    assert!(matches!(
        store.try_lock_paths(&[out]).unwrap(),
        TryLock::Acquired(_)
    ));
}

#[test]
fn concurrent_drover_processes_lose_nothing() {
    if !common::require_nix() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let root_s = root.to_str().unwrap().to_owned();
    let files: Vec<String> = (0..60)
        .map(|i| {
            let f = tmp.path().join(format!("f{i}"));
            std::fs::write(&f, format!("file {i}\n")).unwrap();
            f.to_str().unwrap().to_owned()
        })
        .collect();
    // Four processes add overlapping halves of the files at the same time.
    let children: Vec<_> = (0..4)
        .map(|k| {
            let mine: Vec<String> = files.iter().skip(k * 10).take(30).cloned().collect();
            Command::new(env!("CARGO_BIN_EXE_drover"))
                .args(["add", "--store", &root_s])
                .args(&mine)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut printed = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        printed.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(String::from),
        );
    }
    assert_eq!(printed.len(), 60);
    let store = LocalStore::open(StoreConfig::chroot(&root)).unwrap();
    for p in &printed {
        assert!(store.is_valid(&store.parse(p).unwrap()).unwrap(), "{p}");
    }
    let verify = nix(
        "nix-store",
        &["--store", &root_s, "--verify", "--check-contents"],
    );
    assert!(verify.is_empty());
}

#[test]
fn temp_roots_protect_paths_from_nix_garbage_collection() {
    if !common::require_nix() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let root_s = root.to_str().unwrap();
    let store = LocalStore::open(StoreConfig::chroot(&root)).unwrap();
    // Adding makes the path a temp root of this process; nothing else refers to it.
    let kept = store
        .add_text_to_store("kept", b"in use by drover", &BTreeSet::new())
        .unwrap();
    nix("nix-store", &["--store", root_s, "--gc"]);
    assert!(
        store.is_valid(&kept).unwrap(),
        "Nix's GC honoured the temp root"
    );
    assert!(store.real_path(&kept).exists());
    drop(store);
    nix("nix-store", &["--store", root_s, "--gc"]);
    let store = LocalStore::open(StoreConfig::chroot(&root)).unwrap();
    assert!(
        !store.is_valid(&kept).unwrap(),
        "without the root it is garbage"
    );
}
