//! `drover build plan.toml [-A name]` end to end: the plan's roots (or the attributes asked
//! for) are built, valid in the store, printed and linked as nix-build links them; bad input
//! (missing file, bad plan, unknown attribute, misplaced -A, a Nix file without Nix) fails
//! with a message and exit status 1; and the line formats of a real build: drover's JSON and
//! Nix's internal-json (read back by drover's own parser into the same goals and results).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use drover::app::nix_json::NixJsonParser;
use drover::engine::api::{BuildStatus, Event, EventKind, GoalKind, Time};
use drover::engine::format::hash::{HashAlgo, hash_bytes};
use drover::engine::format::{StoreDir, StorePath};
use drover::engine::store::{LocalStore, StoreConfig};

const LIB_SH: &str = r#"echo '@nix {"action":"setPhase","phase":"buildPhase"}'
echo "compiling lib"
read -r g < "$greeting"
echo "lib $g" > "$out"
echo "$out" > "$dev"
echo '@nix {"action":"setPhase","phase":"installPhase"}'
echo "installed"
"#;

/// A plan: a fixed-output source, a library with two outputs, and two roots (an app using
/// the library's `dev`, docs using the source); `broken` fails and `after-broken` needs it.
fn plan(with_failure: bool) -> String {
    let hash = hash_bytes(HashAlgo::Sha256, b"hello\n").to_sri();
    let mut text = format!(
        r#"
[drv.greeting]
builder = "/bin/sh"
args = ["-c", "echo hello > $out"]
outputHash = "{hash}"

[drv.lib]
builder = "/bin/sh"
args = ["-e", {{ file = "lib.sh" }}]
outputs = ["out", "dev"]
env = {{ greeting = "${{greeting}}" }}

[drv.app]
builder = "/bin/sh"
args = ["-c", "echo app uses ${{lib.dev}} > $out"]

[drv.docs]
builder = "/bin/sh"
args = ["-c", "echo docs for ${{greeting}} > $out"]
"#
    );
    if with_failure {
        text.push_str(
            r#"
[drv.broken]
builder = "/bin/sh"
args = ["-c", "echo about to fail; exit 3"]

[drv.after-broken]
builder = "/bin/sh"
args = ["-c", "echo ${broken} > $out"]
"#,
        );
    }
    text
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(with_failure: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.toml"), plan(with_failure)).unwrap();
        std::fs::write(dir.path().join("lib.sh"), LIB_SH).unwrap();
        Fixture { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A store whose files are where its paths say (builds need no sandbox).
    fn store_uri(&self) -> String {
        let d = self.dir.path().display();
        format!("local?store={d}/store&state={d}/state&log={d}/log")
    }

    fn store(&self) -> LocalStore {
        let store_dir = self.path("store");
        LocalStore::open(StoreConfig {
            store_dir: StoreDir::new(store_dir.to_string_lossy()).unwrap(),
            real_store_dir: store_dir,
            state_dir: self.path("state"),
            log_dir: self.path("log"),
        })
        .unwrap()
    }

    fn build(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .current_dir(self.dir.path())
            .args(["build", "--store", &self.store_uri()])
            .args(args)
            .output()
            .expect("drover runs")
    }

    /// The message of a failed build (exit status 1, nothing on standard output).
    fn failure(&self, args: &[&str]) -> String {
        let o = self.build(args);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(o.stdout.is_empty(), "{o:?}");
        String::from_utf8(o.stderr).unwrap()
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_plan_builds_its_roots_valid_printed_and_linked() {
    let f = Fixture::new(false);
    let o = f.build(&["plan.toml"]);
    assert!(o.status.success(), "{o:?}");
    let printed = lines(&o.stdout);
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert!(printed[0].ends_with("-app"), "{printed:?}");
    assert!(printed[1].ends_with("-docs"), "{printed:?}");
    let store = f.store();
    for (p, link) in printed.iter().zip(["result", "result-2"]) {
        let path = store.store_dir().parse(p).unwrap();
        assert!(store.is_valid(&path).unwrap(), "{p}");
        assert_eq!(std::fs::read_link(f.path(link)).unwrap(), Path::new(p));
    }
    let app = std::fs::read_to_string(&printed[0]).unwrap();
    let lib_dev = app.trim().strip_prefix("app uses ").unwrap();
    assert!(lib_dev.ends_with("-lib-dev"), "{app}");
    // The library's dev output names its out (a reference), which holds the source's text.
    let lib_out = std::fs::read_to_string(lib_dev).unwrap();
    assert_eq!(
        std::fs::read_to_string(lib_out.trim()).unwrap(),
        "lib hello\n"
    );
    let dev = store.store_dir().parse(lib_dev).unwrap();
    let refs = store.query_references(&dev).unwrap();
    assert!(
        refs.iter()
            .any(|r| lib_out.trim().ends_with(&r.to_string())),
        "{refs:?}"
    );
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(
        stderr.starts_with("these 4 derivations will be built:\n"),
        "{stderr}"
    );
    assert!(stderr.contains("lib> compiling lib\n"), "{stderr}");
    // Built already: nothing to do, same answer.
    let again = f.build(&["plan.toml", "--no-out-link"]);
    assert!(again.status.success());
    assert_eq!(lines(&again.stdout), printed);
}

#[test]
fn an_attribute_builds_that_derivations_first_output() {
    let f = Fixture::new(false);
    let o = f.build(&["plan.toml", "-A", "lib", "-o", "lib-result"]);
    assert!(o.status.success(), "{o:?}");
    let printed = lines(&o.stdout);
    assert_eq!(printed.len(), 1);
    assert!(printed[0].ends_with("-lib"), "{printed:?}");
    assert_eq!(
        std::fs::read_link(f.path("lib-result")).unwrap(),
        Path::new(&printed[0])
    );
    assert!(!f.path("result").exists());
    // Two attributes: two derivations, linked as the first and the second.
    let o = f.build(&["plan.toml", "-A", "docs", "-A", "app"]);
    assert!(o.status.success(), "{o:?}");
    let printed = lines(&o.stdout);
    assert!(printed[0].ends_with("-docs") && printed[1].ends_with("-app"));
    assert_eq!(
        std::fs::read_link(f.path("result-2")).unwrap(),
        Path::new(&printed[1])
    );
}

#[test]
fn bad_input_fails_with_a_message_and_status_1() {
    let f = Fixture::new(false);
    let err = f.failure(&["missing.toml"]);
    assert_eq!(
        err,
        "error: missing.toml: cannot read the plan: No such file or directory (os error 2)\n"
    );
    std::fs::write(f.path("bad.toml"), "[drv.a]\nbuilder = \"/bin/sh\"\n[drv\n").unwrap();
    let err = f.failure(&["bad.toml"]);
    assert!(err.starts_with("error: bad.toml:3: TOML syntax: "), "{err}");
    std::fs::write(f.path("untyped.toml"), "[drv.a]\nbuilder = 3\n").unwrap();
    let err = f.failure(&["untyped.toml"]);
    assert!(
        err.starts_with("error: untyped.toml:2: drv 'a', key 'builder': expected a string"),
        "{err}"
    );
    let err = f.failure(&["plan.toml", "-A", "nope"]);
    assert_eq!(
        err,
        "error: plan.toml: attribute 'nope' not found in the plan\n"
    );
    let err = f.failure(&[
        "-A",
        "app",
        "/nix/store/00000000000000000000000000000000-x.drv",
    ]);
    assert!(err.starts_with("error: -A selects attributes of plan (.toml) or Nix (.nix) files"));
    let err = f.failure(&["missing.nix"]);
    assert_eq!(err, "error: Nix file 'missing.nix' does not exist\n");
    // Nothing was built or linked.
    assert!(!f.path("result").exists());
}

#[test]
fn a_nix_file_without_nix_instantiate_says_so() {
    let f = Fixture::new(false);
    std::fs::write(f.path("default.nix"), "{ }\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(f.dir.path())
        .env("PATH", f.path("no-such-dir"))
        .args(["build", "--store", &f.store_uri(), "default.nix"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "error: building 'default.nix' needs Nix's nix-instantiate, which is not on PATH \
         (install Nix, or build a .drv or a plan file)\n"
    );
}

/// What a stream says of each derivation (by name): builds started, log lines, phases, the
/// last status; and the run's exit status.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    builds: u32,
    logs: Vec<String>,
    phases: Vec<String>,
    status: Option<BuildStatus>,
}

fn fold(events: &[Event]) -> (BTreeMap<String, Seen>, Option<u8>) {
    let mut names = BTreeMap::new();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut exit = None;
    for e in events {
        match &e.kind {
            EventKind::GoalAdded {
                goal,
                kind: GoalKind::Derivation { drv, .. },
                ..
            } => {
                let base = Path::new(drv).file_name().unwrap().to_string_lossy();
                let path = StorePath::from_base_name(&base).unwrap();
                names.insert(*goal, path.drv_name().unwrap().to_owned());
            }
            EventKind::BuildStarted { goal, .. } => {
                if let Some(name) = names.get(goal) {
                    seen.entry(name.clone()).or_default().builds += 1
                }
            }
            EventKind::LogLine { goal, line } => {
                if let Some(name) = names.get(goal) {
                    seen.entry(name.clone())
                        .or_default()
                        .logs
                        .push(line.clone())
                }
            }
            EventKind::PhaseChanged { goal, phase } => {
                if let Some(name) = names.get(goal) {
                    seen.entry(name.clone())
                        .or_default()
                        .phases
                        .push(phase.clone())
                }
            }
            // Substitution goals (tried first, and finding no substituter) are left out.
            EventKind::GoalDone { goal, status, .. } => {
                if let Some(name) = names.get(goal) {
                    seen.entry(name.clone()).or_default().status = Some(*status)
                }
            }
            EventKind::RunDone { exit_status } => exit = Some(*exit_status),
            _ => {}
        }
    }
    (seen, exit)
}

#[test]
fn internal_json_of_a_real_build_reads_back_into_the_same_goals_and_results() {
    // The same plan built twice in fresh stores: once with drover's JSON events, once with
    // Nix's internal-json; both on standard error, the output paths on standard output.
    let json = Fixture::new(true);
    let o = json.build(&["plan.toml", "--keep-going", "--log-format", "json"]);
    assert_eq!(o.status.code(), Some(100), "{o:?}");
    let events: Vec<Event> = lines(&o.stderr)
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (want, want_exit) = fold(&events);

    let nix = Fixture::new(true);
    let o = nix.build(&["plan.toml", "--keep-going", "--log-format", "internal-json"]);
    assert_eq!(o.status.code(), Some(100), "{o:?}");
    let stderr = lines(&o.stderr);
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with("@nix {\"action\":\"start\""))
    );
    let mut parser = NixJsonParser::new(None);
    let mut parsed = Vec::new();
    for (i, l) in stderr.iter().enumerate() {
        parser.line(l, Time(i as u64), &mut parsed).unwrap();
    }
    parser.finish(Time(stderr.len() as u64), &mut parsed);
    let (got, got_exit) = fold(&parsed);

    assert_eq!(want_exit, Some(100));
    assert_eq!(got_exit, want_exit);
    for name in ["greeting", "lib", "app", "docs", "broken"] {
        assert_eq!(got.get(name), want.get(name), "{name}");
    }
    assert_eq!(want["lib"].phases, ["buildPhase", "installPhase"]);
    assert_eq!(want["lib"].logs, ["compiling lib", "installed"]);
    assert_eq!(want["broken"].status, Some(BuildStatus::PermanentFailure));
    assert_eq!(want["broken"].logs, ["about to fail"]);
    assert_eq!(
        want["after-broken"].status,
        Some(BuildStatus::DependencyFailed)
    );
    // Nix's stream tells nothing of a goal that never ran; what it tells is drover's.
    assert!(
        got.get("after-broken")
            .is_none_or(|s| s.status == Some(BuildStatus::DependencyFailed))
    );
}

#[test]
fn plain_lines_go_to_standard_error_and_the_paths_to_standard_output() {
    let f = Fixture::new(false);
    let o = f.build(&[
        "plan.toml",
        "-A",
        "lib",
        "--log-format",
        "plain",
        "--no-out-link",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(lines(&o.stdout).len(), 1);
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.contains("building '"), "{stderr}");
    assert!(stderr.ends_with("lib> installed\n"), "{stderr}");
}
