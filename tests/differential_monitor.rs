//! `drover monitor` on a live real Nix build: `nix-build --log-format internal-json -v 2>&1 |
//! drover monitor` shows the builds, log lines, the failure and what it took with it, and
//! the goal graph read from the `.drv` files in Nix's store.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use common::{nix_command, require_nix};
use drover::app::record::Recording;
use drover::engine::api::{BuildStatus, EventKind};

const EXPR: &str = r#"
let
  sh = script: name: deps: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/busybox";
    args = [ "sh" "-c" script ];
    deps = deps;
  };
  a = sh "echo a says hello; echo a > $out" "mon-a" [];
  b = sh "echo b is about to fail; exit 1" "mon-b" [];
  c = sh "echo c sees $deps; echo c > $out" "mon-c" [ a ];
in sh "echo top > $out" "mon-top" [ b c ]
"#;

#[test]
fn a_live_nix_build_is_shown_with_its_graph() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let expr = dir.path().join("t.nix");
    std::fs::write(&expr, EXPR).unwrap();
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
