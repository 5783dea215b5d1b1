//! `drover simulate` end to end: output, exit statuses (Nix's 0, 1, 100-104) and plans.

use std::process::{Command, Output};

use drover::engine::api::{Event, EventKind};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("simulate")
        .args(args)
        .output()
        .expect("drover runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn with_plan(plan: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan).unwrap();
    let mut all = vec!["--plan", path.to_str().unwrap()];
    all.extend_from_slice(args);
    drover(&all)
}

#[test]
fn a_chain_builds_in_order_and_exits_0() {
    let o = drover(&["--nodes", "4", "--shape", "chain", "--log-lines", "1"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    let building: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("building '"))
        .collect();
    assert_eq!(building.len(), 4);
    assert!(
        building
            .iter()
            .all(|l| l.starts_with("building '/nix/store/") && l.ends_with(".drv'..."))
    );
    assert!(text.contains("> unpacking sources"), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("drover: 4 built, 0 substituted"),
        "{text}"
    );
}

#[test]
fn failures_exit_100_with_nixs_messages() {
    let o = drover(&[
        "--nodes",
        "4",
        "--shape",
        "wide",
        "--fail-rate",
        "1",
        "-j",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(100));
    let text = stdout(&o);
    assert!(text.contains("error: builder for '/nix/store/"), "{text}");
    assert!(
        text.contains("failed with exit code 1;\n       last 3 log lines:\n       > "),
        "{text}"
    );
}

#[test]
fn json_output_is_one_event_per_line() {
    let o = drover(&["--nodes", "20", "--log-format", "json", "--seed", "5"]);
    assert_eq!(o.status.code(), Some(0));
    let events: Vec<Event> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
    }
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunDone { exit_status: 0 }
    ));
    let added = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::GoalAdded { .. }))
        .count();
    assert_eq!(added, 20);
}

#[test]
fn a_silent_build_times_out_with_101() {
    let o = with_plan(
        r#"{"nodes": [{"name": "quiet", "hang": true}]}"#,
        &["--max-silent-time", "5"],
    );
    assert_eq!(o.status.code(), Some(101));
    assert!(
        stdout(&o).contains("quiet.drv' timed out after 5 seconds of silence"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn several_failed_targets_end_with_build_of_failed() {
    let o = with_plan(
        r#"{"nodes": [{"name": "a", "fail": true}, {"name": "b", "fail": true}]}"#,
        &["--keep-going"],
    );
    assert_eq!(o.status.code(), Some(100));
    let text = stdout(&o);
    let last_error = text
        .lines()
        .rfind(|l| l.starts_with("error: build of"))
        .unwrap();
    assert!(
        last_error.contains("-a.drv', '") && last_error.ends_with("-b.drv' failed"),
        "{text}"
    );
}

#[test]
fn cached_outputs_are_substituted() {
    let o = drover(&["--nodes", "10", "--cached", "1"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains("copying path '/nix/store/"), "{text}");
    assert!(text.contains("from 'https://cache.sim'..."), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("drover: 0 built, 10 substituted"),
        "{text}"
    );
}

#[test]
fn check_mode_reports_nondeterminism_with_104() {
    let o = with_plan(
        r#"{"nodes": [{"name": "same", "valid": true},
                      {"name": "differs", "valid": true, "nondeterministic": true}]}"#,
        &["--check", "--keep-going"],
    );
    assert_eq!(o.status.code(), Some(104));
    let text = stdout(&o);
    assert!(text.contains("checking outputs of '"), "{text}");
    assert!(
        text.contains("may not be deterministic: output '"),
        "{text}"
    );
}

#[test]
fn max_jobs_zero_cannot_build() {
    let o = drover(&["--nodes", "1", "-j", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("error: unable to start any build; either increase '--max-jobs'"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_bad_plan_is_an_error() {
    let o = with_plan(r#"{"nodes": [{"name": "b", "deps": ["a"]}]}"#, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("depends on 'a', which is not before it"),
        "{err}"
    );
}

#[test]
fn internal_json_goes_to_stderr_as_nix_writes_it() {
    let o = drover(&[
        "--nodes",
        "8",
        "--log-format",
        "internal-json",
        "--seed",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let text = String::from_utf8(o.stderr).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("@nix {\"action\":")));
    let builds = lines
        .iter()
        .filter(|l| l.starts_with("@nix {\"action\":\"start\"") && l.ends_with("\"type\":105}"))
        .count();
    assert_eq!(builds, 8);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("@nix {\"action\":\"stop\"")
    );
}
