//! Nix's internal-json: drover's emitter checked against the schema, emit → parse round trips
//! of simulated runs, and the real Nix 2.8 samples (tests/fixtures/internal-json/) read back.

mod nix_json_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use drover::app::nix_json::{DrvInfo, DrvSource, NixJsonEmitter, NixJsonParser};
use drover::engine::api::{
    BuildMode, BuildStatus, Command, Event, EventKind, GoalKind, Level, Time,
};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{self, Dag, Observer, Shape, SimExecutor, SimModel, World};

use nix_json_support::validate;

struct Collect(Vec<Event>);

impl Observer for Collect {
    fn events(&mut self, events: &[Event]) {
        self.0.extend_from_slice(events);
    }
}

/// A simulated run's events.
fn simulate(
    shape: Shape,
    nodes: u32,
    model: SimModel,
    settings: Settings,
    mode: BuildMode,
) -> Vec<Event> {
    simulate_with(shape, nodes, model, settings, mode, &[])
}

/// A simulated run with user commands at given (virtual) times.
fn simulate_with(
    shape: Shape,
    nodes: u32,
    model: SimModel,
    settings: Settings,
    mode: BuildMode,
    commands: &[(Time, Command)],
) -> Vec<Event> {
    let world = Arc::new(World::generated(
        Dag::generate(shape, nodes, model.seed),
        model,
    ));
    let mut exec = SimExecutor::new(world);
    let mut scheduler = Scheduler::new(settings);
    let mut c = Collect(Vec::new());
    sim::run_sync(&mut scheduler, &mut exec, mode, commands, &mut c);
    c.0
}

fn emit(events: &[Event]) -> String {
    let mut e = NixJsonEmitter::new(4242);
    let mut out = Vec::new();
    for ev in events {
        e.event(ev, &mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

fn parse(text: &str, drvs: Option<Box<dyn DrvSource>>) -> Vec<Event> {
    let mut p = NixJsonParser::new(drvs);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        p.line(line, Time(i as u64), &mut out).unwrap();
    }
    p.finish(Time(text.lines().count() as u64), &mut out);
    out
}

/// The scenarios: failures with and without keep-going, substitutions, lock waits, repeated
/// rounds, timeouts.
fn scenarios() -> Vec<(&'static str, Vec<Event>)> {
    let settings = |jobs, keep_going| Settings {
        max_jobs: jobs,
        keep_going,
        ..Settings::default()
    };
    let model = |seed, fail_rate| SimModel {
        seed,
        fail_rate,
        mean_duration_ms: 2000,
        log_lines: 4,
        ..SimModel::default()
    };
    let cached = Settings {
        use_substitutes: true,
        substituters: vec!["https://cache.sim".into()],
        keep_going: true,
        ..settings(3, true)
    };
    // A flaky build fails once; a retry after the run ended builds it and what waited.
    let flaky = SimModel {
        transient_failures: true,
        ..model(7, 0.2)
    };
    let first = simulate(
        Shape::Random,
        25,
        flaky.clone(),
        settings(3, true),
        BuildMode::Normal,
    );
    let failed: Vec<(Time, Command)> = first
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::GoalDone {
                goal,
                status: BuildStatus::PermanentFailure,
                ..
            } => Some((Time(10_000_000), Command::Retry { goal })),
            _ => None,
        })
        .collect();
    assert!(!failed.is_empty());
    let retried = simulate_with(
        Shape::Random,
        25,
        flaky,
        settings(3, true),
        BuildMode::Normal,
        &failed,
    );
    let cache_model = SimModel {
        cached_rate: 0.5,
        lock_rate: 0.3,
        lock_hold_ms: 3000,
        ..model(4, 0.05)
    };
    let cache_run = simulate(
        Shape::Random,
        40,
        cache_model.clone(),
        cached.clone(),
        BuildMode::Normal,
    );
    // The same run as if its cache were an HTTP one: each NAR downloaded from a URL, seen
    // half-way and complete.
    let http_run = http_downloads(&cache_run);
    vec![
        ("retry of flaky builds", retried),
        ("cache over HTTP", http_run),
        (
            "random, failures, keep-going",
            simulate(
                Shape::Random,
                60,
                model(1, 0.1),
                settings(4, true),
                BuildMode::Normal,
            ),
        ),
        (
            "wide, failures, no keep-going",
            simulate(
                Shape::Wide,
                30,
                model(2, 0.15),
                settings(3, false),
                BuildMode::Normal,
            ),
        ),
        (
            "diamond, all good",
            simulate(
                Shape::Diamond,
                20,
                model(3, 0.0),
                settings(2, false),
                BuildMode::Normal,
            ),
        ),
        ("cache and locks", cache_run),
        (
            "repeat",
            simulate(
                Shape::Chain,
                5,
                model(5, 0.0),
                Settings {
                    build_repeat: 1,
                    ..settings(2, false)
                },
                BuildMode::Normal,
            ),
        ),
        (
            "timeouts",
            simulate(
                Shape::Wide,
                12,
                SimModel {
                    hang_rate: 0.3,
                    ..model(6, 0.0)
                },
                Settings {
                    max_silent_time_ms: 5000,
                    ..settings(4, true)
                },
                BuildMode::Normal,
            ),
        ),
    ]
}

/// A run's substitutions as downloads over HTTP: each `SubstitutionProgress` gets a URL and
/// is preceded by one half-way through; events are renumbered.
fn http_downloads(events: &[Event]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        let mut push = |kind: EventKind| {
            out.push(Event {
                seq: out.len() as u64,
                time: e.time,
                kind,
            })
        };
        match &e.kind {
            EventKind::SubstitutionProgress {
                goal,
                download_done,
                download_expected,
                nar_done,
                nar_expected,
                url: None,
            } => {
                let url = Some(format!("https://cache.sim/nar/{}.nar.xz", goal.index()));
                push(EventKind::SubstitutionProgress {
                    goal: *goal,
                    download_done: download_done / 2,
                    download_expected: *download_expected,
                    nar_done: nar_done / 2,
                    nar_expected: *nar_expected,
                    url: url.clone(),
                });
                push(EventKind::SubstitutionProgress {
                    goal: *goal,
                    download_done: *download_done,
                    download_expected: *download_expected,
                    nar_done: *nar_done,
                    nar_expected: *nar_expected,
                    url,
                });
            }
            kind => push(kind.clone()),
        }
    }
    out
}

#[test]
fn every_emitted_line_follows_the_schema() {
    for (name, events) in scenarios() {
        let text = emit(&events);
        let n = validate(&text, false, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n > 20, "{name}: only {n} lines");
        // The run's activities open first, and every builder started has an actBuild.
        assert!(text.starts_with("@nix {\"action\":\"start\",\"id\":18219251269632,\"level\":0,\"parent\":0,\"text\":\"\",\"type\":102}\n"), "{name}");
        let builds = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::BuildStarted { .. }))
            .count();
        let build_acts = text
            .lines()
            .filter(|l| l.starts_with("@nix {\"action\":\"start\"") && l.ends_with("\"type\":105}"))
            .count();
        assert_eq!(build_acts, builds, "{name}");
    }
}

#[test]
fn the_real_samples_follow_the_schema_too() {
    for file in [
        "internal-json.log",
        "internal-json-vv.log",
        "internal-json-nix-build-cmd.log",
        "substitute-http.log",
        "substitute-file-broken.log",
        "substitute-fallback-build.log",
        "substitute-fallback-no-fallback.log",
    ] {
        let text = fixture(file);
        validate(&text, true, true).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// What the stream can carry of a goal: its builds, log lines, phases, outcome.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    builds: u32,
    substitutions: u32,
    logs: Vec<String>,
    phases: Vec<String>,
    status: Option<BuildStatus>,
    message: Option<String>,
    /// A substitution's last bytes: the download (when it came over HTTP, with its URL),
    /// the NAR done and expected.
    bytes: Option<SeenBytes>,
}

/// The download (done, expected, URL) when over HTTP, the NAR done and expected.
type SeenBytes = (Option<(u64, Option<u64>, String)>, u64, u64);

type Folded = (BTreeMap<String, Seen>, Vec<(Level, String)>, Option<u8>);

/// Per path (`.drv` or substituted path): what happened; plus the messages worth comparing
/// and the exit status.
fn fold(events: &[Event]) -> Folded {
    let mut paths = Vec::new();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut messages = Vec::new();
    let mut exit = None;
    for e in events {
        match &e.kind {
            EventKind::GoalAdded { goal, kind, .. } => {
                let p = match kind {
                    GoalKind::Derivation { drv, .. } => drv.clone(),
                    GoalKind::Substitution { path, .. } => path.clone(),
                };
                if paths.len() <= goal.index() {
                    paths.resize(goal.index() + 1, String::new());
                }
                paths[goal.index()] = p;
            }
            EventKind::BuildStarted { goal, .. } => {
                seen.entry(paths[goal.index()].clone()).or_default().builds += 1;
            }
            EventKind::SubstitutionStarted { goal, .. } => {
                seen.entry(paths[goal.index()].clone())
                    .or_default()
                    .substitutions += 1;
            }
            EventKind::SubstitutionProgress {
                goal,
                download_done,
                download_expected,
                nar_done,
                nar_expected,
                url,
            } => {
                let download = url.clone().map(|u| (*download_done, *download_expected, u));
                seen.entry(paths[goal.index()].clone()).or_default().bytes =
                    Some((download, *nar_done, *nar_expected));
            }
            EventKind::LogLine { goal, line } => {
                seen.entry(paths[goal.index()].clone())
                    .or_default()
                    .logs
                    .push(line.clone());
            }
            EventKind::PhaseChanged { goal, phase } => {
                seen.entry(paths[goal.index()].clone())
                    .or_default()
                    .phases
                    .push(phase.clone());
            }
            EventKind::GoalDone {
                goal,
                status,
                message,
                ..
            } => {
                let path = &paths[goal.index()];
                let ran = seen.contains_key(path);
                let reported = message.is_some()
                    && !status.success()
                    && !matches!(
                        status,
                        BuildStatus::NoSubstituters | BuildStatus::IncompleteClosure
                    );
                if ran || reported {
                    let s = seen.entry(path.clone()).or_default();
                    // The text does not tell a fixed-output builder's failure (transient)
                    // from another's.
                    s.status = Some(match status {
                        BuildStatus::TransientFailure => BuildStatus::PermanentFailure,
                        s => *s,
                    });
                    s.message = message.clone().filter(|_| !status.success());
                }
            }
            EventKind::Message { level, text, .. }
                if *level <= Level::Warn && !text.starts_with("build of '") =>
            {
                messages.push((*level, text.clone()));
            }
            EventKind::RunDone { exit_status } => exit = Some(*exit_status),
            _ => {}
        }
    }
    messages.sort();
    (seen, messages, exit)
}

#[test]
fn emitted_streams_parse_back_into_the_same_goals_and_results() {
    for (name, events) in scenarios() {
        let text = emit(&events);
        let parsed = parse(&text, None);
        let (want, want_messages, want_exit) = fold(&events);
        let (got, got_messages, got_exit) = fold(&parsed);
        assert!(!want.is_empty());
        for (path, w) in &want {
            assert_eq!(got.get(path), Some(w), "{name}: {path}");
        }
        assert_eq!(got.len(), want.len(), "{name}");
        assert_eq!(got_messages, want_messages, "{name}");
        assert_eq!(got_exit, want_exit, "{name}");
        let statuses: Vec<BuildStatus> = want.values().filter_map(|s| s.status).collect();
        if name.contains("failures") {
            assert!(statuses.contains(&BuildStatus::PermanentFailure), "{name}");
        }
        if name.starts_with("wide, failures") {
            assert!(statuses.contains(&BuildStatus::Cancelled), "{name}");
        }
        if name == "timeouts" {
            assert!(statuses.contains(&BuildStatus::TimedOut), "{name}");
        }
        if name.starts_with("cache") {
            assert!(want.values().any(|s| s.substitutions > 0), "{name}");
            // Substituted paths end with all their bytes.
            let done: Vec<_> = want
                .values()
                .filter(|s| s.status == Some(BuildStatus::Substituted))
                .collect();
            assert!(!done.is_empty(), "{name}");
            for s in done {
                let (download, nar_done, nar_expected) = s.bytes.clone().unwrap();
                assert!(nar_done > 0 && nar_done == nar_expected, "{name}");
                if name == "cache over HTTP" {
                    let (done, expected, _) = download.unwrap();
                    assert_eq!(Some(done), expected, "{name}");
                }
            }
        }
        if name == "cache and locks" {
            assert!(
                want_messages
                    .iter()
                    .any(|(_, m)| m.starts_with("waiting for lock on"))
            );
        }
        if name == "retry of flaky builds" {
            assert!(
                want.values()
                    .any(|s| s.builds == 2 && s.status == Some(BuildStatus::Built))
            );
        }
        if name == "repeat" {
            assert!(want.values().all(|s| s.builds == 2), "{name}");
        }
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/internal-json/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Goal name → (status, number of log lines, message).
fn outcomes(events: &[Event]) -> BTreeMap<String, (BuildStatus, usize, Option<String>)> {
    let mut names = Vec::new();
    let mut logs: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::GoalAdded { goal, name, .. } => {
                assert_eq!(goal.index(), names.len());
                names.push(name.clone());
            }
            EventKind::LogLine { goal, .. } => {
                *logs.entry(names[goal.index()].clone()).or_default() += 1
            }
            EventKind::GoalDone {
                goal,
                status,
                message,
                ..
            } => {
                let name = names[goal.index()].clone();
                let n = logs.get(&name).copied().unwrap_or(0);
                out.insert(name, (*status, n, message.clone()));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_nix_build_sample_parses_into_its_goals() {
    let events = parse(&fixture("internal-json.log"), None);
    let o = outcomes(&events);
    // The plan: 12 derivations, all known before any build starts.
    let added_before_build = events
        .iter()
        .take_while(|e| !matches!(e.kind, EventKind::BuildStarted { .. }))
        .filter(|e| matches!(e.kind, EventKind::GoalAdded { .. }))
        .count();
    assert_eq!(added_before_build, 12);
    assert_eq!(o.len(), 12);
    let (status, _, msg) = &o["fod-bad"];
    assert_eq!(*status, BuildStatus::OutputRejected);
    assert!(msg.as_deref().unwrap().starts_with(
        "hash mismatch in fixed-output derivation '/nix/store/0npnzvmgfrqv0jpbm4vsd5ib7aiyjbi9-fod-bad.drv':\n  specified: sha256-AAAA"
    ));
    assert_eq!(o["n5"].0, BuildStatus::PermanentFailure);
    assert_eq!(
        o["n5"].2.as_deref(),
        Some(
            "builder for '/nix/store/bx4lfxdjz4505dya6dd6ipjf0zngipfz-n5.drv' failed with exit code 1"
        )
    );
    assert_eq!(o["n5"].1, 1);
    for built in ["n0", "n1", "n2", "n3", "n4", "n6"] {
        assert_eq!(o[built].0, BuildStatus::Built, "{built}");
    }
    assert_eq!(o["n0"].1, 13, "12 log lines and one stderr line");
    for dep_failed in ["n7", "n8", "n9", "root"] {
        assert_eq!(
            o[dep_failed].0,
            BuildStatus::DependencyFailed,
            "{dep_failed}"
        );
    }
    assert!(
        o["root"]
            .2
            .as_deref()
            .unwrap()
            .starts_with("4 dependencies of derivation")
    );
    // Nix exits 102 here: a build failure (4) and a hash mismatch (2).
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunDone { exit_status: 102 }
    ));
}

#[test]
fn the_other_samples_parse_into_their_goals() {
    // nix-build -vv: four builds, all good.
    let events = parse(&fixture("internal-json-vv.log"), None);
    let o = outcomes(&events);
    assert_eq!(o.len(), 4);
    for (name, (status, logs, _)) in &o {
        assert_eq!(*status, BuildStatus::Built, "{name}");
        assert!(*logs > 0, "{name}");
    }
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunDone { exit_status: 0 }
    ));

    // `nix build` (no plan listing): seven builds, one failing, and what depends on it.
    let events = parse(&fixture("internal-json-nix-build-cmd.log"), None);
    let o = outcomes(&events);
    let started = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BuildStarted { .. }))
        .count();
    assert_eq!(started, 7);
    assert_eq!(o.len(), 11, "{o:?}");
    assert_eq!(o["n5"].0, BuildStatus::PermanentFailure);
    for name in ["n7", "n8", "n9", "root"] {
        assert_eq!(o[name].0, BuildStatus::DependencyFailed, "{name}");
    }
    let built = o.values().filter(|x| x.0 == BuildStatus::Built).count();
    assert_eq!(built, 6);
    // nix-build's status for a build failure (`nix build` itself exits 1).
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::RunDone { exit_status: 100 }
    ));
}

/// `.drv` files from a map, for the DAG.
struct Drvs(BTreeMap<String, DrvInfo>);

impl DrvSource for Drvs {
    fn derivation(&mut self, drv_path: &str) -> Option<DrvInfo> {
        self.0.get(drv_path).cloned()
    }
}

#[test]
fn the_dag_comes_from_the_drv_files_and_tops_from_the_plan() {
    let text = fixture("internal-json-vv.log");
    let drv = |n: &str| {
        text.split('"')
            .find(|s| s.starts_with("/nix/store/") && s.ends_with(&format!("-{n}.drv")))
            .unwrap()
            .to_owned()
    };
    let info = |inputs: &[&str]| DrvInfo {
        outputs: vec![("out".into(), None)],
        input_drvs: inputs.iter().map(|n| drv(n)).collect(),
        fixed_output: false,
    };
    let drvs = Drvs(BTreeMap::from([
        (drv("n0"), info(&[])),
        (drv("n1"), info(&["n0"])),
        (drv("n2"), info(&["n0"])),
        (drv("root"), info(&["n1", "n2"])),
    ]));
    let events = parse(&text, Some(Box::new(drvs)));
    let mut names = BTreeMap::new();
    let mut tops = Vec::new();
    let mut edges = Vec::new();
    for e in &events {
        match &e.kind {
            EventKind::GoalAdded {
                goal, name, top, ..
            } => {
                names.insert(*goal, name.clone());
                if *top {
                    tops.push(name.clone());
                }
            }
            EventKind::EdgeAdded { waiter, waitee } => {
                edges.push(format!("{} -> {}", names[waiter], names[waitee]));
            }
            _ => {}
        }
    }
    edges.sort();
    assert_eq!(tops, ["root"]);
    assert_eq!(edges, ["n1 -> n0", "n2 -> n0", "root -> n1", "root -> n2"]);
}

#[test]
fn malformed_records_name_their_line_and_plain_lines_are_messages() {
    let mut p = NixJsonParser::new(None);
    let mut out = Vec::new();
    p.line("plain text from nix-build", Time(0), &mut out)
        .unwrap();
    p.line(
        "@nix {\"action\":\"msg\",\"level\":1,\"msg\":\"careful\"}",
        Time(0),
        &mut out,
    )
    .unwrap();
    let err = p
        .line("@nix {\"action\":\"start\",", Time(0), &mut out)
        .unwrap_err();
    assert_eq!(err.line, 3);
    assert!(
        err.to_string()
            .starts_with("line 3: malformed @nix record: "),
        "{err}"
    );
    let err = p
        .line(
            "@nix {\"action\":\"result\",\"id\":1,\"fields\":[-1]}",
            Time(0),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.line, 4);
    // Unknown actions and types are ignored; the parser goes on.
    p.line("@nix {\"action\":\"frobnicate\"}", Time(0), &mut out)
        .unwrap();
    p.line(
        "@nix {\"action\":\"start\",\"id\":9,\"level\":3,\"text\":\"\",\"type\":999}",
        Time(0),
        &mut out,
    )
    .unwrap();
    p.line(
        "@nix {\"action\":\"result\",\"id\":77,\"type\":101,\"fields\":[\"x\"]}",
        Time(0),
        &mut out,
    )
    .unwrap();
    let kinds: Vec<(Level, String)> = out
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message { level, text, .. } => Some((*level, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (Level::Info, "plain text from nix-build".to_owned()),
            (Level::Warn, "careful".to_owned())
        ]
    );
}

#[test]
fn the_schema_checker_rejects_what_nix_would_not_write() {
    let start =
        "@nix {\"action\":\"start\",\"id\":5,\"level\":0,\"parent\":0,\"text\":\"\",\"type\":104}";
    for (bad, why) in [
        ("{\"action\":\"stop\",\"id\":5}", "no prefix"),
        ("@nix {\"id\":5,\"action\":\"stop\"}", "key order"),
        ("@nix {\"action\": \"stop\",\"id\":5}", "not compact"),
        ("@nix {\"action\":\"stop\",\"id\":6}", "unknown id"),
        (
            "@nix {\"action\":\"result\",\"fields\":[1,2],\"id\":5,\"type\":105}",
            "field count",
        ),
        (
            "@nix {\"action\":\"result\",\"fields\":[],\"id\":5,\"type\":105}",
            "empty fields",
        ),
        (
            "@nix {\"action\":\"result\",\"fields\":[\"x\"],\"id\":5,\"type\":101}",
            "log line on actBuilds",
        ),
        (
            "@nix {\"action\":\"start\",\"id\":5,\"level\":0,\"parent\":0,\"text\":\"\",\"type\":104}",
            "reused id",
        ),
        (
            "@nix {\"action\":\"start\",\"id\":7,\"level\":9,\"parent\":0,\"text\":\"\",\"type\":104}",
            "level",
        ),
        (
            "@nix {\"action\":\"start\",\"id\":7,\"level\":0,\"parent\":3,\"text\":\"\",\"type\":104}",
            "parent",
        ),
        (
            "@nix {\"action\":\"start\",\"id\":7,\"level\":0,\"parent\":0,\"text\":\"\",\"type\":114}",
            "type",
        ),
        (
            "@nix {\"action\":\"msg\",\"level\":0,\"msg\":\"x\",\"extra\":1}",
            "extra key",
        ),
        ("@nix {\"action\":\"launch\",\"id\":5}", "action"),
    ] {
        let mut v = nix_json_support::Validator::new(false);
        v.line(start).unwrap();
        assert!(v.line(bad).is_err(), "accepted ({why}): {bad}");
    }
}

mod round_trip_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any simulated run (failures, keep-going or not, substitutions, lock waits,
        /// timeouts, repeated rounds) survives emit → parse with its goals and results, and
        /// every emitted line follows the schema.
        #[test]
        fn any_run_round_trips(
            seed in 0u64..10_000,
            nodes in 1u32..40,
            shape in prop_oneof![Just(Shape::Random), Just(Shape::Wide), Just(Shape::Chain), Just(Shape::Diamond)],
            fail_rate in prop_oneof![Just(0.0), 0.0f64..0.4],
            keep_going: bool,
            jobs in 1u32..6,
            cached_rate in prop_oneof![Just(0.0), 0.0f64..0.8],
            lock_rate in prop_oneof![Just(0.0), 0.0f64..0.5],
            hang_rate in prop_oneof![Just(0.0), 0.0f64..0.3],
            repeat in 0u32..2,
        ) {
            let model = SimModel {
                seed,
                fail_rate,
                mean_duration_ms: 1500,
                log_lines: 2,
                cached_rate,
                lock_rate,
                lock_hold_ms: 2000,
                hang_rate,
                ..SimModel::default()
            };
            let substituters = if cached_rate > 0.0 { vec!["https://cache.sim".to_owned()] } else { Vec::new() };
            let settings = Settings {
                max_jobs: jobs,
                keep_going,
                use_substitutes: !substituters.is_empty(),
                substituters,
                max_silent_time_ms: if hang_rate > 0.0 { 4000 } else { 0 },
                build_repeat: repeat,
                ..Settings::default()
            };
            let events = simulate(shape, nodes, model, settings, BuildMode::Normal);
            let text = emit(&events);
            prop_assert!(validate(&text, false, true).is_ok(), "{:?}", validate(&text, false, true));
            let (want, want_messages, want_exit) = fold(&events);
            let (got, got_messages, got_exit) = fold(&parse(&text, None));
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_messages, want_messages);
            prop_assert_eq!(got_exit, want_exit);
        }
    }
}

/// Per substituted path (its name): how many times it started, from which substituters,
/// its last `SubstitutionProgress` (download done and expected, NAR done and expected, URL),
/// the errors tied to it, and its status.
#[derive(Debug, Default)]
struct Fetched {
    substituters: Vec<String>,
    bytes: Option<LastBytes>,
    errors: Vec<String>,
    status: Option<BuildStatus>,
}

/// Download done and expected, NAR done and expected, URL.
type LastBytes = (u64, Option<u64>, u64, u64, Option<String>);

fn fetched(events: &[Event]) -> (BTreeMap<String, Fetched>, Option<u8>) {
    let mut names = Vec::new();
    let mut out: BTreeMap<String, Fetched> = BTreeMap::new();
    let mut exit = None;
    for e in events {
        fn at<'a>(
            out: &'a mut BTreeMap<String, Fetched>,
            names: &[String],
            g: drover::engine::api::GoalId,
        ) -> &'a mut Fetched {
            out.entry(names[g.index()].clone()).or_default()
        }
        match &e.kind {
            EventKind::GoalAdded { name, kind, .. } => {
                assert!(matches!(kind, GoalKind::Substitution { .. }), "{name}");
                names.push(name.clone());
            }
            EventKind::SubstitutionStarted {
                goal, substituter, ..
            } => at(&mut out, &names, *goal)
                .substituters
                .push(substituter.clone()),
            EventKind::SubstitutionProgress {
                goal,
                download_done,
                download_expected,
                nar_done,
                nar_expected,
                url,
            } => {
                at(&mut out, &names, *goal).bytes = Some((
                    *download_done,
                    *download_expected,
                    *nar_done,
                    *nar_expected,
                    url.clone(),
                ))
            }
            EventKind::Message {
                level: Level::Error,
                text,
                goal: Some(goal),
            } => at(&mut out, &names, *goal).errors.push(text.clone()),
            EventKind::GoalDone { goal, status, .. } => {
                at(&mut out, &names, *goal).status = Some(*status)
            }
            EventKind::RunDone { exit_status } => exit = Some(*exit_status),
            _ => {}
        }
    }
    (out, exit)
}

#[test]
fn the_http_substitution_sample_parses_into_its_downloads() {
    let events = parse(&fixture("substitute-http.log"), None);
    let (got, exit) = fetched(&events);
    assert_eq!(exit, Some(0));
    let cache = "http://127.0.0.1:18731";
    // The NARs are uncompressed: their downloads are the NARs (sizes from the narinfos).
    for (name, nar, size) in [
        (
            "exp-dep",
            "00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv",
            120,
        ),
        (
            "exp-root",
            "02q2ra7pclv75gs4bin2zdlxl8qgy8zw4g2i568ghfd50h6dzx26",
            176,
        ),
    ] {
        let f = &got[name];
        assert_eq!(f.substituters, [cache], "{name}");
        assert_eq!(
            f.bytes,
            Some((
                size,
                Some(size),
                size,
                size,
                Some(format!("{cache}/nar/{nar}.nar"))
            )),
            "{name}"
        );
        assert!(f.errors.is_empty(), "{name}");
        assert_eq!(f.status, Some(BuildStatus::Substituted), "{name}");
    }
    assert_eq!(got.len(), 2);
    // The run's totals count the NARs, not the narinfos and nix-cache-info read before.
    let last = events
        .iter()
        .rev()
        .find_map(|e| match e.kind {
            EventKind::Progress { progress } => Some(progress),
            _ => None,
        })
        .unwrap();
    assert_eq!((last.download.done, last.download.expected), (296, 296));
    assert_eq!((last.nar.done, last.nar.expected), (296, 296));
    assert_eq!((last.substitutions.done, last.substitutions.failed), (2, 0));
    // The queries' activities are messages, not goals; the warning has no doubled prefix.
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message {
                text, goal: None, ..
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages
            .iter()
            .filter(|m| **m == "querying info about missing paths")
            .count(),
        2
    );
    assert!(messages.contains(
        &"you did not specify '--add-root'; the result might be removed by the garbage collector"
    ));
}

#[test]
fn a_failing_substituter_is_followed_by_the_next_or_fails_the_run() {
    // Real Nix 2.8, `nix-store -r` from a file:// cache whose NARs are gone, then a good one.
    let (got, exit) = fetched(&parse(&fixture("substitute-file-fallback.log"), None));
    assert_eq!(exit, Some(0));
    assert_eq!(got.len(), 2);
    for (name, f) in &got {
        assert_eq!(
            f.substituters,
            ["file:///tmp/sq/broken", "file:///tmp/sq/cache"],
            "{name}"
        );
        assert_eq!(f.errors.len(), 1, "{name}");
        assert!(
            f.errors[0].starts_with("file 'nar/")
                && f.errors[0].ends_with("' does not exist in binary cache"),
            "{name}: {:?}",
            f.errors
        );
        assert_eq!(f.status, Some(BuildStatus::Substituted), "{name}");
    }
    // The broken cache alone: the first path fails, the run ends (Nix exits with 1).
    let (got, exit) = fetched(&parse(&fixture("substitute-file-broken.log"), None));
    assert_eq!(exit, Some(1));
    assert_eq!(got["sq-dep"].errors.len(), 1);
    assert_eq!(got["sq-dep"].status, Some(BuildStatus::TransientFailure));
    assert!(got["sq-root"].substituters.is_empty());
    assert_eq!(got["sq-root"].status, Some(BuildStatus::Cancelled));
}

/// (goal kind, name) → (status, message), the errors logged about each goal, and the exit
/// status.
type Ends = BTreeMap<(&'static str, String), (BuildStatus, Option<String>)>;

fn ends(events: &[Event]) -> (Ends, BTreeMap<String, Vec<String>>, Option<u8>) {
    let mut goals = Vec::new();
    let mut out = BTreeMap::new();
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut exit = None;
    for e in events {
        match &e.kind {
            EventKind::GoalAdded { name, kind, .. } => {
                let kind = match kind {
                    GoalKind::Substitution { .. } => "substitution",
                    _ => "derivation",
                };
                goals.push((kind, name.clone()));
            }
            EventKind::GoalDone {
                goal,
                status,
                message,
                ..
            } => {
                out.insert(goals[goal.index()].clone(), (*status, message.clone()));
            }
            EventKind::Message {
                level: Level::Error,
                text,
                goal,
            } => {
                let key = goal.map_or("-".to_owned(), |g| goals[g.index()].1.clone());
                errors.entry(key).or_default().push(text.clone());
            }
            EventKind::RunDone { exit_status } => exit = Some(*exit_status),
            _ => {}
        }
    }
    (out, errors, exit)
}

const FB_DRV: &str = "/nix/store/p4qdgmp89fnkv3y2a7nppjdy67if9dsi-fb-out.drv";
const FB_OUT: &str = "/nix/store/mnnhdy6dk5ig2g77bvbl51gqnr0gk271-fb-out";

fn fb_drvs(output: &str) -> Option<Box<dyn DrvSource>> {
    Some(Box::new(Drvs(BTreeMap::from([(
        FB_DRV.to_owned(),
        DrvInfo {
            outputs: vec![("out".into(), Some(output.to_owned()))],
            input_drvs: Vec::new(),
            fixed_output: false,
        },
    )]))))
}

#[test]
fn a_failed_substitution_built_with_fallback_does_not_fail_the_run() {
    // Real Nix 2.8: `nix-store -r DRV --fallback` from a file:// cache whose NAR of the
    // output is corrupt. The substitution fails, Nix builds the derivation, exits with 0.
    let text = fixture("substitute-fallback-build.log");
    let subst = ("substitution", "fb-out".to_owned());
    let drv = ("derivation", "fb-out".to_owned());
    // With the .drv (the output path) and without it (the output's name).
    for drvs in [fb_drvs(FB_OUT), None] {
        let known = drvs.is_some();
        let (got, errors, exit) = ends(&parse(&text, drvs));
        // As drover's own engine reports a fallback: the substitution failed, the build
        // succeeded, the run did.
        assert_eq!(
            got,
            BTreeMap::from([
                (subst.clone(), (BuildStatus::TransientFailure, None)),
                (drv.clone(), (BuildStatus::Built, None)),
            ]),
            "drv known: {known}"
        );
        assert_eq!(
            errors,
            BTreeMap::from([(
                "fb-out".to_owned(),
                vec!["input compression not recognized".to_owned()]
            )])
        );
        assert_eq!(exit, Some(0), "drv known: {known}");
    }
    // A build that does not produce the path does not excuse its failed substitution.
    let other = "/nix/store/00000000000000000000000000000000-fb-out";
    let (got, _, exit) = ends(&parse(&text, fb_drvs(other)));
    assert_eq!(got[&drv].0, BuildStatus::Built);
    assert_eq!(got[&subst].0, BuildStatus::TransientFailure);
    assert_eq!(exit, Some(1));
    let renamed = text.replace("-fb-out.drv", "-fb-outer.drv");
    let (_, _, exit) = ends(&parse(&renamed, None));
    assert_eq!(exit, Some(1));
}

#[test]
fn a_failed_substitution_without_fallback_fails_its_derivation_and_the_run() {
    // Real Nix 2.8: the same without `--fallback`: the derivation goal fails without
    // building, Nix exits with 1.
    let text = fixture("substitute-fallback-no-fallback.log");
    for drvs in [fb_drvs(FB_OUT), None] {
        let (got, errors, exit) = ends(&parse(&text, drvs));
        let message = format!(
            "some substitutes for the outputs of derivation '{FB_DRV}' failed (usually happens \
             due to networking issues); try '--fallback' to build derivation from source "
        );
        assert_eq!(
            got,
            BTreeMap::from([
                (
                    ("substitution", "fb-out".to_owned()),
                    (BuildStatus::TransientFailure, None)
                ),
                (
                    ("derivation", "fb-out".to_owned()),
                    (BuildStatus::TransientFailure, Some(message))
                ),
            ])
        );
        assert_eq!(errors["fb-out"], ["input compression not recognized"]);
        assert_eq!(exit, Some(1));
    }
}
