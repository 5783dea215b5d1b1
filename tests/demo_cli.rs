//! `drover demo` headless: the embedded workload really builds (sandboxed where the kernel
//! allows, and without the sandbox), within a minute at `--speed 10`, the flaky test is
//! retried and passes, the lock wait shows its holder, and the throwaway store is valid (with
//! `--keep`) or gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use drover::engine::api::{BuildStatus, Event, EventKind};
use drover::engine::store::{LocalStore, StoreConfig};

fn demo(tmp: &Path, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("demo")
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .expect("drover runs");
    (out, start.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_demo_runs_headless_in_under_a_minute_and_retries_the_flaky_test() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, took) = demo(tmp.path(), &["--speed", "10"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // The summary.
    assert!(
        stdout.starts_with(
            "drover demo: 39 derivations built, 0 failed, 0 not built for a failed input, in "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\n  retried: tide-net-tests-2.4.0 failed 1 run (flaky test), passed on retry\n"
        ),
        "{stdout}"
    );
    let lock = stdout
        .lines()
        .find(|l| l.starts_with("  lock wait: tzdata2024a.tar.gz waited "))
        .unwrap_or_else(|| panic!("no lock wait: {stdout}"));
    assert!(lock.contains(", held by pid "), "{lock}");
    assert!(stdout.ends_with("  exit status 0\n"), "{stdout}");
    // Plain lines (standard error is not a terminal): builds, their logs with phases' lines,
    // the failure of the first run, the lock wait, and drover's summary line.
    assert!(
        stderr.contains("warning: waiting for lock on '"),
        "{stderr}"
    );
    assert!(stderr.contains("tide-net-tests-2.4.0>  4/6 pool_timeout"));
    assert!(stderr.contains("tide-net-tests-2.4.0> test result: FAILED. 5 passed; 1 failed"));
    assert!(stderr.contains("tide-net-tests-2.4.0> test result: ok. 6 passed; 0 failed"));
    assert!(stderr.contains("zlib-1.3.1>   CC       adler32.lo"));
    assert!(stderr.contains("libuv-1.48.0> [1/10] Building C object"));
    // Sandboxed where the kernel allows (it says why not otherwise): builds run in /build.
    if !stderr.contains("note: the demo builds without a sandbox") {
        assert!(stdout.contains(" build slots, sandboxed\n"), "{stdout}");
        assert!(
            stderr.contains(
                "libuv-1.48.0> -- Build files have been written to: /build/libuv-v1.48.0/build\n"
            ),
            "{stderr}"
        );
    }
    assert_eq!(
        stderr.matches("building '").count(),
        40,
        "39 builds and one retry"
    );
    assert!(stderr.ends_with("; exit status 0\n"), "{stderr}");
    // The throwaway directory is gone.
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn unsandboxed_with_keep_the_store_holds_valid_outputs_and_the_events_are_json() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, _) = demo(
        tmp.path(),
        &[
            "--speed",
            "20",
            "-j",
            "8",
            "--no-sandbox",
            "--keep",
            "--log-format",
            "json",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with("note: the demo builds without a sandbox (--no-sandbox)\n"),
        "{stderr}"
    );
    assert!(stdout.contains("with 8 build slots, without a sandbox (--no-sandbox)"));
    // Unsandboxed, builds run in the demo's own build directory.
    let build_top = format!(
        "-- Build files have been written to: {}/drover-demo-",
        tmp.path().canonicalize().unwrap().display()
    );
    assert!(stderr.contains(&build_top), "{stderr}");
    // drover's events, one JSON object a line, after the note.
    let events: Vec<Event> = stderr
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // The suite is retried a moment after it failed, while the release still waits for other
    // inputs, so the release waits for the retried attempt (were it done waiting by then, it
    // would fail for the suite and be reopened with it).
    let names: std::collections::HashMap<_, _> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::GoalAdded { goal, name, .. } => Some((*goal, name.clone())),
            _ => None,
        })
        .collect();
    let reopened: Vec<&str> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::GoalReopened { goal } => Some(names[&goal].as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reopened
            .iter()
            .filter(|n| **n == "tide-net-tests-2.4.0")
            .count(),
        1,
        "{reopened:?}"
    );
    assert!(
        reopened
            .iter()
            .all(|n| ["tide-net-tests-2.4.0", "tide-release-2.4.0"].contains(n)),
        "{reopened:?}"
    );
    let built = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::GoalDone {
                    status: BuildStatus::Built,
                    ..
                }
            )
        })
        .count();
    assert_eq!(built, 39);
    let phases: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PhaseChanged { phase, .. } => Some(phase.as_str()),
            _ => None,
        })
        .collect();
    for p in [
        "unpackPhase",
        "configurePhase",
        "buildPhase",
        "checkPhase",
        "installPhase",
        "fixupPhase",
    ] {
        assert!(phases.contains(p), "{p}: {phases:?}");
    }
    // The kept store: every output valid, with the contents the builders wrote.
    let kept = stdout
        .lines()
        .find_map(|l| l.strip_prefix("the demo's files are kept in "))
        .and_then(|l| l.split(" (store: ").next())
        .unwrap_or_else(|| panic!("{stdout}"));
    let root = PathBuf::from(kept);
    assert!(root.starts_with(tmp.path().canonicalize().unwrap()));
    let store_dir = root.join("store");
    let store = LocalStore::open(StoreConfig {
        store_dir: drover::engine::format::StoreDir::new(store_dir.to_string_lossy()).unwrap(),
        real_store_dir: store_dir.clone(),
        state_dir: root.join("var"),
        log_dir: root.join("log"),
    })
    .unwrap();
    let mut outputs = 0;
    for entry in std::fs::read_dir(&store_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".drv") {
            continue;
        }
        let drv = drover::engine::format::StorePath::from_base_name(&name).unwrap();
        for (_, path) in store.derivation_output_paths(&drv).unwrap() {
            assert!(store.is_valid(&path).unwrap(), "{path}");
            outputs += 1;
        }
    }
    assert!(outputs >= 60, "{outputs} outputs");
    let release = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-tide-release-2.4.0"))
        .unwrap();
    let manifest = std::fs::read_to_string(release.join("share/tide/MANIFEST")).unwrap();
    assert!(manifest.starts_with("tide 2.4.0\ncomponent "));
    assert!(manifest.contains("tested tide-net-tests: 6 tests passed against "));
    drover::engine::store::canon::delete_path(&root).unwrap();
}

#[test]
fn the_old_simulated_workload_is_still_a_simulate_example() {
    let plan = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/simulate/toolchain.json"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "simulate",
            "--plan",
            plan,
            "--keep-going",
            "--log-format",
            "plain",
        ])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    // One test suite of the workload fails; keep-going builds the rest.
    assert_eq!(out.status.code(), Some(100), "{stdout}");
    assert!(stdout.contains(" built, 0 substituted, 0 already valid, 1 failed, "));
}

#[test]
fn an_interrupt_cancels_the_demo_and_removes_its_files() {
    use std::io::{BufRead, BufReader, Read};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["demo", "--log-format", "plain"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("building '") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no build started");
    }
    // SAFETY: signalling the drover we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}\n{rest}");
    assert!(rest.contains("error: interrupted by the user\n"), "{rest}");
    assert!(stdout.contains(" cancelled, in "), "{stdout}");
    assert!(!stdout.contains("retried"), "{stdout}");
    assert!(stdout.ends_with("  exit status 1\n"), "{stdout}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
