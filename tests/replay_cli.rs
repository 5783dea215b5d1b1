//! `--record` and `drover replay` end to end: a replayed recording prints exactly what the
//! recorded run printed, in every format, keeps the pace with `--speed`, and exits with the
//! run's status.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .expect("drover runs")
}

/// Activity ids carry the emitting process's pid in their high 32 bits: keep the low ones.
fn without_pids(internal_json: &[u8]) -> String {
    let text = String::from_utf8(internal_json.to_vec()).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l.strip_prefix("@nix ").unwrap()).unwrap();
            for key in ["id", "parent"] {
                if let Some(id) = v.get(key).and_then(serde_json::Value::as_u64) {
                    v[key] = (id & 0xffff_ffff).into();
                }
            }
            format!("{v}\n")
        })
        .collect()
}

fn simulate_and_replay(dir: &Path, format: &str) {
    let rec = dir.join(format!("{format}.jsonl"));
    let rec = rec.to_str().unwrap();
    let sim_args = [
        "simulate",
        "--nodes",
        "40",
        "--fail-rate",
        "0.2",
        "-k",
        "--seed",
        "2",
        "--cached",
        "0.3",
        "--lock-rate",
        "0.2",
        "--log-format",
        format,
        "--record",
        rec,
    ];
    let original = drover(&sim_args);
    assert_eq!(original.status.code(), Some(100), "a run with failures");
    let replayed = drover(&["replay", "--log-format", format, rec]);
    assert_eq!(
        replayed.status.code(),
        Some(100),
        "the recorded exit status"
    );
    if format == "internal-json" {
        assert!(original.stdout.is_empty() && replayed.stdout.is_empty());
        assert!(original.stderr.len() > 1000);
        assert_eq!(
            without_pids(&replayed.stderr),
            without_pids(&original.stderr)
        );
    } else {
        assert!(original.stdout.len() > 1000);
        assert_eq!(
            String::from_utf8(replayed.stdout).unwrap(),
            String::from_utf8(original.stdout).unwrap()
        );
        assert!(replayed.stderr.is_empty());
    }
}

#[test]
fn a_replay_prints_what_the_run_printed() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["plain", "json", "internal-json"] {
        simulate_and_replay(dir.path(), format);
    }
}

#[test]
fn speed_scales_the_recorded_pace() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("run.jsonl");
    let rec = rec.to_str().unwrap();
    let o = drover(&[
        "simulate",
        "--nodes",
        "10",
        "--shape",
        "chain",
        "--mean-build-time",
        "20",
        "--record",
        rec,
    ]);
    assert!(o.status.success());
    let text = std::fs::read_to_string(rec).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let span_ms = last["time"].as_u64().unwrap();
    assert!(span_ms > 50_000, "a long enough run: {span_ms} ms");
    let speed = 1000.0;
    let start = Instant::now();
    let o = drover(&["replay", "--speed", "1000", rec]);
    let elapsed = start.elapsed();
    assert!(o.status.success());
    assert!(
        elapsed.as_secs_f64() * 1000.0 >= span_ms as f64 / speed,
        "{elapsed:?} for {span_ms} ms at x{speed}"
    );
    // Without --speed: no waiting at all (far below the paced time).
    let start = Instant::now();
    drover(&["replay", rec]);
    assert!(start.elapsed().as_secs_f64() * 1000.0 < span_ms as f64 / speed + 2000.0);
}

#[test]
fn bad_recordings_are_refused_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.jsonl");
    std::fs::write(&path, "hello\n").unwrap();
    let o = drover(&["replay", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        format!(
            "error: '{}' is not a drover recording (no drover-events header on line 1)\n",
            path.display()
        )
    );
    let o = drover(&["replay", "/nonexistent.jsonl"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8(o.stderr)
            .unwrap()
            .starts_with("error: opening recording '/nonexistent.jsonl': ")
    );
    let o = drover(&["replay", "--speed", "0", "x"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects a zero speed");
}
