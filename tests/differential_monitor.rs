//! `drover monitor` on a live real Nix build: `nix-build --log-format internal-json -v 2>&1 |
//! drover monitor` shows the builds, log lines, the failure and what it took with it, and
//! the goal graph read from the `.drv` files in Nix's store.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{nix_command, require_nix};
use drover::app::record::Recording;
use drover::engine::api::{BuildStatus, EventKind};

#[test]
fn a_live_nix_build_is_shown_with_its_graph() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let expr = dir.path().join("t.nix");
    std::fs::write(&expr, common::monitor_workload()).unwrap();
    let rec = dir.path().join("monitor.jsonl");

    // nix-build's stdout and stderr into one pipe, as `2>&1 |` does.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut nix = nix_command("nix-build")
        .arg("--store")
        .arg(&root)
        .args([
            "--no-out-link",
            "--keep-going",
            "--log-format",
            "internal-json",
            "-v",
        ])
        .arg(&expr)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("nix-build runs");
    let monitor = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("monitor")
        .arg("--store")
        .arg(&root)
        .arg("--record")
        .arg(&rec)
        .stdin(Stdio::from(reader))
        .output()
        .unwrap();
    let nix_status = nix.wait().unwrap();
    assert_eq!(
        nix_status.code(),
        Some(100),
        "nix-build reports the failed build"
    );
    let text = String::from_utf8(monitor.stdout).unwrap();
    assert_eq!(monitor.status.code(), Some(100), "{text}");

    let line = |prefix: &str, name: &str| {
        text.lines()
            .any(|l| l.starts_with(prefix) && l.contains(&format!("-{name}.drv")))
    };
    assert!(
        text.starts_with("these 4 derivations will be built:\n"),
        "{text}"
    );
    for name in ["mon-a", "mon-b", "mon-c"] {
        assert!(line("building '/nix/store/", name), "{name}: {text}");
    }
    assert!(!line("building '/nix/store/", "mon-top"), "{text}");
    assert!(text.contains("\nmon-a> a says hello\n"), "{text}");
    assert!(text.contains("\nmon-b> b is about to fail\n"), "{text}");
    assert!(line("error: builder for '/nix/store/", "mon-b"), "{text}");
    assert!(text.contains("' failed with exit code 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("error: 1 dependencies of derivation '")
                && l.contains("-mon-top.drv' failed to build")),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with(
            "drover: 2 built, 0 substituted, 0 already valid, 1 failed, 1 dependencies failed, \
             0 cancelled in "
        ),
        "{text}"
    );

    // The recording has the graph from the .drv files: top-level goal and edges.
    let mut names = Vec::new();
    let mut tops = Vec::new();
    let mut edges = BTreeSet::new();
    let mut statuses = Vec::new();
    for e in Recording::open(&rec).unwrap() {
        match e.unwrap().kind {
            EventKind::GoalAdded { name, top, .. } => {
                if top {
                    tops.push(name.clone());
                }
                names.push(name);
            }
            EventKind::EdgeAdded { waiter, waitee } => {
                edges.insert(format!(
                    "{} -> {}",
                    names[waiter.index()],
                    names[waitee.index()]
                ));
            }
            EventKind::GoalDone { goal, status, .. } => {
                statuses.push((names[goal.index()].clone(), status));
            }
            _ => {}
        }
    }
    assert_eq!(tops, ["mon-top"]);
    let edges: Vec<String> = edges.into_iter().collect();
    assert_eq!(
        edges,
        ["mon-c -> mon-a", "mon-top -> mon-b", "mon-top -> mon-c"]
    );
    statuses.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        statuses,
        [
            ("mon-a".to_owned(), BuildStatus::Built),
            ("mon-b".to_owned(), BuildStatus::PermanentFailure),
            ("mon-c".to_owned(), BuildStatus::Built),
            ("mon-top".to_owned(), BuildStatus::DependencyFailed),
        ]
    );
}

/// Real Nix substituting from a file:// cache (written by `nix copy` from a Nix-built path)
/// into a fresh store, its stream piped into `drover monitor` with the given format.
fn monitor_substitution(
    dir: &std::path::Path,
    cache: &str,
    path: &str,
    store: &str,
    format: &str,
) -> (Option<i32>, Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut nix = Command::new("nix-store")
        .arg("--store")
        .arg(dir.join(store))
        .args(["-r", path])
        .args(["--option", "substituters", cache])
        .args(["--option", "require-sigs", "false"])
        .args(["--option", "build-users-group", ""])
        .args(["--log-format", "internal-json", "-v"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("nix-store runs");
    let monitor = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["monitor", "--log-format", format])
        .stdin(Stdio::from(reader))
        .output()
        .unwrap();
    let nix_status = nix.wait().unwrap();
    let text = String::from_utf8(monitor.stdout).unwrap();
    (nix_status.code(), monitor.status.code(), text)
}

#[test]
fn a_live_nix_substitution_is_shown_as_copies() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("built");
    let expr = dir.path().join("t.nix");
    std::fs::write(
        &expr,
        format!(
            r#"{}  dep = sh "echo dep > $out" "msub-dep" [];
in sh "echo $deps > $out; head -c 5000 /dev/zero >> $out" "msub-root" [ dep ]
"#,
            common::NIX_SH_LET
        ),
    )
    .unwrap();
    let cache = format!("file://{}", dir.path().join("cache").display());
    let root = build_and_copy(&built, &expr, &cache);
    let closure = nix_command("nix-store")
        .arg("--store")
        .arg(&built)
        .args(["-qR", &root])
        .output()
        .unwrap();
    let closure: BTreeSet<String> = String::from_utf8(closure.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 2, "{closure:?}");

    let (nix, monitor, text) = monitor_substitution(dir.path(), &cache, &root, "plain", "plain");
    assert_eq!(nix, Some(0), "{text}");
    assert_eq!(monitor, Some(0), "{text}");
    assert!(
        text.starts_with("these 2 paths will be fetched ("),
        "{text}"
    );
    for path in &closure {
        assert!(
            text.contains(&format!("\ncopying path '{path}' from '{cache}'...\n")),
            "{path}: {text}"
        );
    }
    assert!(!text.contains("error:"), "{text}");
    assert!(
        text.lines().last().unwrap().starts_with(
            "drover: 0 built, 2 substituted, 0 already valid, 0 failed, 0 dependencies failed, \
             0 cancelled in "
        ),
        "{text}"
    );

    let (nix, monitor, text) = monitor_substitution(dir.path(), &cache, &root, "json", "json");
    assert_eq!(nix, Some(0), "{text}");
    assert_eq!(monitor, Some(0), "{text}");
    let events: Vec<drover::engine::api::Event> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut paths = Vec::new();
    let mut started = BTreeSet::new();
    let mut substituted = BTreeSet::new();
    for e in &events {
        match &e.kind {
            EventKind::GoalAdded {
                kind: drover::engine::api::GoalKind::Substitution { path, .. },
                ..
            } => paths.push(path.clone()),
            EventKind::SubstitutionStarted {
                goal, substituter, ..
            } => {
                assert_eq!(substituter, &cache);
                started.insert(paths[goal.index()].clone());
            }
            EventKind::GoalDone {
                goal,
                status: BuildStatus::Substituted,
                ..
            } => {
                substituted.insert(paths[goal.index()].clone());
            }
            _ => {}
        }
    }
    assert_eq!(started, closure);
    assert_eq!(substituted, closure);
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunDone { exit_status: 0 }
    ));
}

/// Real Nix realising a derivation whose output's NAR in the file:// cache is corrupt, with
/// and without `--fallback`, piped into `drover monitor --log-format plain`: the monitor
/// exits as Nix did (0: built instead; 1: the derivation failed).
#[test]
fn a_live_fallback_build_after_a_failed_substitution_exits_as_nix_did() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let expr = dir.path().join("t.nix");
    std::fs::write(
        &expr,
        r#"derivation {
  name = "mfb-out";
  system = builtins.currentSystem;
  builder = "/bin/busybox";
  args = [ "sh" "-c" "echo built from source > $out" ];
}"#,
    )
    .unwrap();
    let built = dir.path().join("built");
    let cache_dir = dir.path().join("cache");
    let cache = format!("file://{}", cache_dir.display());
    let out_path = build_and_copy(&built, &expr, &cache);
    let nars: Vec<_> = std::fs::read_dir(cache_dir.join("nar"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(nars.len(), 1, "{nars:?}");
    std::fs::write(&nars[0], "not a compressed NAR\n").unwrap();

    for fallback in [true, false] {
        let store = dir.path().join(format!("fresh-{fallback}"));
        let drv = nix_command("nix-instantiate")
            .arg("--store")
            .arg(&store)
            .arg(&expr)
            .output()
            .unwrap();
        assert!(drv.status.success(), "{drv:?}");
        let drv = String::from_utf8(drv.stdout).unwrap().trim().to_owned();

        let (reader, writer) = std::io::pipe().unwrap();
        let mut command = Command::new("nix-store");
        let nix = &mut command;
        nix.arg("--store")
            .arg(&store)
            .args(["-r", &drv])
            .args(["--option", "substituters", &cache])
            .args(["--option", "require-sigs", "false"])
            .args(["--option", "build-users-group", ""])
            .args(["--option", "sandbox-paths", "/bin/busybox"])
            .args(["--log-format", "internal-json", "-v"]);
        if fallback {
            nix.arg("--fallback");
        }
        nix.stdout(Stdio::null()).stderr(writer);
        let mut nix = nix.spawn().expect("nix-store runs");
        // The command holds the pipe's writing end until dropped: the monitor sees the end
        // of the stream only when Nix's copy is closed too.
        drop(command);
        let monitor = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["monitor", "--log-format", "plain", "--store"])
            .arg(&store)
            .stdin(Stdio::from(reader))
            .output()
            .unwrap();
        let nix_status = nix.wait().unwrap().code();
        let text = String::from_utf8(monitor.stdout).unwrap();
        assert_eq!(
            nix_status,
            Some(if fallback { 0 } else { 1 }),
            "fallback {fallback}: {text}"
        );
        assert_eq!(
            monitor.status.code(),
            nix_status,
            "fallback {fallback}: {text}"
        );
        assert!(
            text.contains(&format!("\ncopying path '{out_path}' from '{cache}'...\n")),
            "{text}"
        );
        assert_eq!(
            text.contains(&format!("\nbuilding '{drv}'...\n")),
            fallback,
            "{text}"
        );
        let built = if fallback { 1 } else { 0 };
        let failed = if fallback { 1 } else { 2 };
        assert!(
            text.lines().last().unwrap().starts_with(&format!(
                "drover: {built} built, 0 substituted, 0 already valid, {failed} failed, 0 \
                 dependencies failed, 0 cancelled in "
            )),
            "{text}"
        );
    }
}

/// Builds `expr` with real Nix in the chroot store `built` and copies the result's closure to
/// the binary cache `cache` with `nix copy`; the result's store path.
fn build_and_copy(built: &Path, expr: &Path, cache: &str) -> String {
    let out = nix_command("nix-build")
        .arg("--store")
        .arg(built)
        .arg("--no-out-link")
        .arg(expr)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let copied = nix_command("nix")
        .arg("copy")
        .arg("--store")
        .arg(built)
        .args(["--to", cache, &path])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");
    path
}
