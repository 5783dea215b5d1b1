//! `drover monitor` and `drover replay` from the command line on the real Nix 2.8 samples
//! (tests/fixtures/internal-json/): each is followed without a warning and with Nix's exit
//! status, recorded, and the recording replays into the same output in every line format.
//! Bad input fails with a message and status 1 (2 for a bad command line).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .expect("drover runs")
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/internal-json")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn the_real_nix_samples_replay_without_error() {
    // The status Nix's own would be (see /work/shared/peer/samples/exit-codes.txt): 102 for
    // a failed build and a hash mismatch; the nix-build-cmd sample is `nix build`'s stream,
    // whose own exit status is 1, but whose failures are builds (100).
    let samples = [
        ("internal-json.log", 102, 12),
        ("internal-json-vv.log", 0, 4),
        ("internal-json-nix-build-cmd.log", 100, 11),
        // Substitutions (`nix-store -r`): from an HTTP cache; from a file:// cache whose NARs
        // are gone, then a good one; from the broken cache alone (status 1).
        ("substitute-http.log", 0, 2),
        ("substitute-file-fallback.log", 0, 2),
        ("substitute-file-broken.log", 1, 2),
        // A derivation whose output's cached NAR is corrupt: Nix builds it with `--fallback`
        // (status 0), fails without (status 1).
        ("substitute-fallback-build.log", 0, 2),
        ("substitute-fallback-no-fallback.log", 1, 2),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, status, goals) in samples {
        let input = sample(name);
        let rec = dir.path().join(format!("{name}.jsonl"));
        let input = input.to_str().unwrap();
        let rec = rec.to_str().unwrap();
        let monitored = drover(&[
            "monitor",
            "--json",
            input,
            "--log-format",
            "plain",
            "--record",
            rec,
        ]);
        let plain = text(&monitored.stdout);
        assert_eq!(monitored.status.code(), Some(status), "{name}: {plain}");
        assert_eq!(text(&monitored.stderr), "", "{name}");
        assert!(!plain.contains("malformed"), "{name}: {plain}");
        assert!(
            plain
                .lines()
                .last()
                .unwrap()
                .ends_with(&format!("exit status {status}")),
            "{name}: {plain}"
        );

        let replayed = drover(&["replay", "--log-format", "plain", rec]);
        assert_eq!(replayed.status.code(), Some(status), "{name}");
        assert_eq!(text(&replayed.stdout), plain, "{name}");
        assert_eq!(text(&replayed.stderr), "", "{name}");

        // drover's JSON: one event a line, as many goals as the sample has derivations.
        let json = drover(&["replay", "--log-format", "json", rec]);
        assert_eq!(json.status.code(), Some(status), "{name}");
        let added = text(&json.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "goal_added")
            .count();
        assert_eq!(added, goals, "{name}");

        // Nix's internal-json again (on standard error, as Nix writes it): every line a record.
        let nix = drover(&["replay", "--log-format", "internal-json", rec]);
        assert_eq!(nix.status.code(), Some(status), "{name}");
        let records = text(&nix.stderr);
        assert!(
            records.lines().count() > 10 && records.lines().all(|l| l.starts_with("@nix {")),
            "{name}: {records}"
        );
        // ... which drover monitors into the same outcome.
        let again = dir.path().join(format!("{name}.again"));
        std::fs::write(&again, &records).unwrap();
        let remonitored = drover(&[
            "monitor",
            "--json",
            again.to_str().unwrap(),
            "--log-format",
            "plain",
        ]);
        assert_eq!(remonitored.status.code(), Some(status), "{name}");
    }
}

#[test]
fn bad_input_fails_with_a_message_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |args: &[&str], status: i32, message: &str| {
        let out = drover(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    };
    let missing = dir.path().join("missing.log");
    let missing = missing.to_str().unwrap();
    fails(
        &["monitor", "--json", missing],
        1,
        &format!("error: opening '{missing}': No such file or directory"),
    );
    fails(
        &["monitor", "--json", missing, "--log-format", "nom"],
        2,
        "invalid value 'nom' for '--log-format <LOG_FORMAT>'",
    );
    let nowhere = dir.path().join("no/such/dir/r.jsonl");
    let nowhere = nowhere.to_str().unwrap();
    let input = sample("internal-json-vv.log");
    fails(
        &[
            "monitor",
            "--json",
            input.to_str().unwrap(),
            "--record",
            nowhere,
        ],
        1,
        &format!("error: creating recording '{nowhere}': No such file or directory"),
    );

    let not_a_recording = dir.path().join("notes.txt");
    std::fs::write(&not_a_recording, "hello\n").unwrap();
    let not_a_recording = not_a_recording.to_str().unwrap();
    fails(
        &["replay", not_a_recording],
        1,
        &format!(
            "error: '{not_a_recording}' is not a drover recording (no drover-events header on line 1)"
        ),
    );
    fails(
        &["replay", "--speed", "0", not_a_recording],
        2,
        "invalid value '0' for '--speed <SPEED>': '0' is not a positive number",
    );
    fails(
        &["replay", "--speed", "fast", not_a_recording],
        2,
        "'fast' is not a positive number",
    );
    fails(
        &["replay", missing],
        1,
        &format!("error: opening recording '{missing}'"),
    );

    // A recording broken in the middle: what came before is shown, then the error.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        concat!(
            r#"{"format":"drover-events","version":1,"drover":"0","command":"monitor"}"#,
            "\n",
            r#"{"seq":0,"time":5,"type":"message","level":"error","text":"first","goal":null}"#,
            "\n{\"seq\":1,\"tim\n"
        ),
    )
    .unwrap();
    let broken = broken.to_str().unwrap();
    let out = drover(&["replay", "--log-format", "plain", broken]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "error: first\n");
    assert!(
        text(&out.stderr).starts_with(&format!("error: recording '{broken}', line 3: ")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn monitored_substitutions_print_nixs_copying_lines() {
    let input = sample("substitute-http.log");
    let out = drover(&[
        "monitor",
        "--json",
        input.to_str().unwrap(),
        "--log-format",
        "plain",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let plain = text(&out.stdout);
    let (body, summary) = plain.rsplit_once("drover: ").unwrap();
    assert_eq!(
        body,
        "these 2 paths will be fetched (0.00 MiB download, 0.00 MiB unpacked):\n\
         \x20 /nix/store/cypfpph2dy8vw9wbhig5abx7b1536mad-exp-dep\n\
         \x20 /nix/store/nx1wv9blsfcvvvjs7i5s3wx8ijyc2np5-exp-root\n\
         copying path '/nix/store/cypfpph2dy8vw9wbhig5abx7b1536mad-exp-dep' from 'http://127.0.0.1:18731'...\n\
         copying path '/nix/store/nx1wv9blsfcvvvjs7i5s3wx8ijyc2np5-exp-root' from 'http://127.0.0.1:18731'...\n\
         warning: you did not specify '--add-root'; the result might be removed by the garbage collector\n"
    );
    assert!(
        summary.starts_with(
            "0 built, 2 substituted, 0 already valid, 0 failed, 0 dependencies failed, 0 cancelled in "
        ),
        "{summary}"
    );
}

/// A chroot store (as Nix's `--store DIR`) holding the fallback samples' `.drv`, or nothing.
fn fallback_store(with_drv: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("nix/store");
    std::fs::create_dir_all(&store).unwrap();
    if with_drv {
        std::fs::copy(
            sample("substitute-fallback-fb-out.drv"),
            store.join("p4qdgmp89fnkv3y2a7nppjdy67if9dsi-fb-out.drv"),
        )
        .unwrap();
    }
    dir
}

#[test]
fn a_monitored_fallback_build_exits_as_nix_did() {
    let out_path = "/nix/store/mnnhdy6dk5ig2g77bvbl51gqnr0gk271-fb-out";
    let drv = "/nix/store/p4qdgmp89fnkv3y2a7nppjdy67if9dsi-fb-out.drv";
    let head = format!(
        "this path will be fetched (0.00 MiB download, 0.00 MiB unpacked):\n\
         \x20 {out_path}\n\
         copying path '{out_path}' from 'file:///tmp/fb/cache'...\n\
         error: input compression not recognized\n"
    );
    // Nix exited with 0 (--fallback built it) and 1 (without).
    let cases = [
        (
            "substitute-fallback-build.log",
            0,
            format!(
                "building '{drv}'...\n\
                 warning: you did not specify '--add-root'; the result might be removed by the \
                 garbage collector\n"
            ),
            "1 built, 0 substituted, 0 already valid, 1 failed, 0 dependencies failed, \
             0 cancelled in ",
        ),
        (
            "substitute-fallback-no-fallback.log",
            1,
            format!(
                "error: some substitutes for the outputs of derivation '{drv}' failed (usually \
                 happens due to networking issues); try '--fallback' to build derivation from \
                 source\n"
            ),
            "0 built, 0 substituted, 0 already valid, 2 failed, 0 dependencies failed, \
             0 cancelled in ",
        ),
    ];
    for (name, status, tail, counts) in cases {
        // The output path from the .drv in the store, or from its name without it.
        for with_drv in [true, false] {
            let store = fallback_store(with_drv);
            let input = sample(name);
            let out = drover(&[
                "monitor",
                "--json",
                input.to_str().unwrap(),
                "--store",
                store.path().to_str().unwrap(),
                "--log-format",
                "plain",
            ]);
            let plain = text(&out.stdout);
            assert_eq!(out.status.code(), Some(status), "{name}: {plain}");
            assert_eq!(text(&out.stderr), "", "{name}");
            let (body, summary) = plain.rsplit_once("drover: ").unwrap();
            assert_eq!(body, format!("{head}{tail}"), "{name}");
            assert!(summary.starts_with(counts), "{name}: {summary}");
            assert!(
                summary.ends_with(&format!("; exit status {status}\n")),
                "{name}: {summary}"
            );
        }
    }
}
