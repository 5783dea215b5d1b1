//! The TUI in a real terminal: tmux runs `drover simulate` in a detached session of a fixed
//! size, `send-keys` presses keys, `capture-pane` shows what the screen shows. Every wait polls
//! the screen until a deadline, so the test is as fast as the program.
//!
//! Without tmux the test is skipped (loudly), except under `CI=true`, where it fails.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One build that runs long enough to be cancelled, under the goal the user asked for.
const PLAN: &str = r#"{
  "nodes": [
    {"name": "slow-2.0", "duration_ms": 60000,
     "log": ["configuring", "compiling a lot", "still compiling", "installing"]},
    {"name": "hello-1.0", "duration_ms": 2000, "deps": ["slow-2.0"], "log": ["building hello"]}
  ]
}"#;

const DEADLINE: Duration = Duration::from_secs(60);

fn have_tmux() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is required when CI=true: apt-get install -y tmux"
        );
        eprintln!("skipped: tmux not found (apt-get install -y tmux)");
    }
    found
}

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Tmux {
            socket: format!("drover-tui-test-{}-{n}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "tui"]).stdout).into()
    }

    /// Polls the screen until `what` holds; the screen then.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::yield_now();
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The line of the goal graph pane (left half) that shows `name`.
fn graph_line<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .filter_map(|l| l.split("││").next())
        .find(|l| l.contains(name))
}

/// `drover simulate` of [`PLAN`] in a new 100x30 session; the pane stays when it exits.
/// Paths must not contain `'` (a temporary directory's do not).
fn start() -> (Tmux, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, PLAN).unwrap();
    let args = format!("simulate --plan {} -j 2 --speed 20", plan.display());
    let tmux = start_drover(dir.path(), &args);
    (tmux, dir)
}

/// `drover ARGS` in a new 100x30 session whose pane stays when it exits; the exit status goes
/// to `DIR/status`. `args` must not contain `'`.
fn start_drover(dir: &Path, args: &str) -> Tmux {
    let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
    start_shell(dir, &format!("{} {args}", bin.display()))
}

/// The shell command line `line` (which runs drover, perhaps in a pipeline) in a new 100x30
/// session whose pane stays when it exits; its exit status goes to `DIR/status`. `line` must
/// not contain `'`.
fn start_shell(dir: &Path, line: &str) -> Tmux {
    // A shell runs drover and writes down how it ended (tmux's own record of a dead pane's
    // status can come late).
    let command = format!("sh -c '{line}; echo $? > {}'", dir.join("status").display());
    let tmux = Tmux::new();
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    tmux.run(&["set-option", "-t", "tui", "remain-on-exit", "on"]);
    tmux
}

/// Waits until drover has exited; its exit status (128 + n when killed by signal n).
fn exit_status(tmux: &Tmux, dir: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("status"))
            && text.ends_with('\n')
        {
            return text.trim().parse().unwrap();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "drover did not exit:\n{}",
            tmux.screen()
        );
        std::thread::yield_now();
    }
}

/// The pid of drover (the child of the pane's shell).
fn drover_pid(tmux: &Tmux) -> i32 {
    let out = tmux.run(&["list-panes", "-t", "tui", "-F", "#{pane_pid}"]);
    let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("the shell's children");
    children
        .split_whitespace()
        .next()
        .expect("drover runs under the shell")
        .parse()
        .unwrap()
}

#[test]
fn keys_cancel_retry_keep_going_and_quit_in_a_real_terminal() {
    if !have_tmux() {
        return;
    }
    let (tmux, dir) = start();
    // The TUI is the default on a terminal; slow-2.0 builds.
    let screen = tmux.wait_for("slow-2.0 to build", |s| {
        s.contains("keep-going off") && graph_line(s, "slow-2.0").is_some_and(|l| l.contains("⏵"))
    });
    assert!(screen.contains("Build slots"), "{screen}");

    // q while running asks; n keeps going.
    tmux.keys(&["q"]);
    tmux.wait_for("the quit question", |s| {
        s.contains("stop them and quit? y/n")
    });
    tmux.keys(&["n"]);
    tmux.wait_for("the question to go", |s| !s.contains("y/n"));

    // k flips keep-going.
    tmux.keys(&["k"]);
    tmux.wait_for("keep-going on", |s| s.contains("keep-going ON"));

    // Select slow-2.0 by searching, cancel it: asked first, then cancelled.
    tmux.keys(&["/", "slow", "Enter", "c"]);
    tmux.wait_for("the cancel question", |s| {
        s.contains("Cancel slow-2.0 (kills its builder)? y/n")
    });
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("slow-2.0 cancelled and the run over", |s| {
        graph_line(s, "slow-2.0").is_some_and(|l| l.contains("cancelled")) && s.contains("Summary")
    });
    assert!(
        graph_line(&screen, "hello-1.0").is_some_and(|l| l.contains("dependency failed")),
        "{screen}"
    );

    // r retries it: it builds again, then hello, and the run succeeds.
    tmux.keys(&["r"]);
    tmux.wait_for("slow-2.0 building again", |s| {
        graph_line(s, "slow-2.0").is_some_and(|l| l.contains("⏵"))
    });
    let screen = tmux.wait_for("the run to succeed", |s| s.contains("exit 0 (success)"));
    assert!(
        graph_line(&screen, "slow-2.0").is_some_and(|l| l.contains("built")),
        "{screen}"
    );
    assert!(screen.contains("✔ 2"), "{screen}");

    // q leaves at once now, with the run's exit status, and the terminal is itself again.
    tmux.keys(&["q"]);
    assert_eq!(exit_status(&tmux, dir.path()), 0, "{}", tmux.screen());
    assert_eq!(alternate_screen(&tmux), "0");
}

fn alternate_screen(tmux: &Tmux) -> String {
    let out = tmux.run(&["display-message", "-p", "-t", "tui", "#{alternate_on}"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// SIGHUP (the terminal went away) and SIGTERM stop the run: builds are cancelled, drover
/// exits with the run's failure status and leaves the terminal as it found it.
#[test]
fn sighup_and_sigterm_stop_the_run_cleanly() {
    if !have_tmux() {
        return;
    }
    for signal in [libc::SIGHUP, libc::SIGTERM] {
        let (tmux, dir) = start();
        tmux.wait_for("slow-2.0 to build", |s| {
            graph_line(s, "slow-2.0").is_some_and(|l| l.contains("⏵"))
        });
        assert_eq!(
            alternate_screen(&tmux),
            "1",
            "the TUI is on the alternate screen"
        );
        // SAFETY: sending a signal to the child tmux started for this test.
        assert_eq!(unsafe { libc::kill(drover_pid(&tmux), signal) }, 0);
        let status = exit_status(&tmux, dir.path());
        assert_ne!(
            status, 0,
            "signal {signal}: the run was stopped, not finished"
        );
        assert_eq!(alternate_screen(&tmux), "0", "signal {signal}");
    }
}

/// `drover build` of real derivations in the TUI: the builder's log shows, a cancel kills it,
/// a retry builds it again, and the output path is printed after the TUI is left.
#[test]
fn a_real_build_is_cancelled_and_retried_in_a_real_terminal() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"[drv.gate]
builder = "/bin/busybox"
args = ["sh", "-c", "echo waiting for the gate; while [ ! -e {go} ]; do sleep 0.05; done; echo open > $out"]
"#,
            go = go.display()
        ),
    )
    .unwrap();
    let s = dir.path().join("s");
    let store = format!(
        "local?store={0}/store&state={0}/state&log={0}/log",
        s.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["instantiate", "--store", &store])
        .arg(&plan)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drv = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let tmux = start_drover(
        dir.path(),
        &format!("build --store \"{store}\" --no-out-link {drv}"),
    );
    tmux.wait_for("the builder's log", |s| {
        s.contains("gate> waiting for the gate")
            && graph_line(s, "gate").is_some_and(|l| l.contains("⏵"))
    });
    tmux.keys(&["c"]);
    tmux.wait_for("the cancel question", |s| s.contains("y/n"));
    tmux.keys(&["y"]);
    tmux.wait_for("gate cancelled", |s| {
        graph_line(s, "gate").is_some_and(|l| l.contains("cancelled")) && s.contains("Summary")
    });
    std::fs::write(&go, "").unwrap();
    tmux.keys(&["r"]);
    let screen = tmux.wait_for("the retried build to succeed", |s| {
        s.contains("exit 0 (success)")
    });
    assert!(
        graph_line(&screen, "gate").is_some_and(|l| l.contains("built")),
        "{screen}"
    );
    tmux.keys(&["q"]);
    assert_eq!(exit_status(&tmux, dir.path()), 0, "{}", tmux.screen());
    // Back on the normal screen, the output path is printed as nix-build prints it.
    let screen = tmux.screen();
    let path = screen
        .lines()
        .map(str::trim_end)
        .find(|l| l.ends_with("-gate"))
        .unwrap_or_else(|| panic!("no output path printed:\n{screen}"));
    let real = s.join("store").join(path.rsplit('/').next().unwrap());
    assert_eq!(std::fs::read_to_string(real).unwrap(), "open\n");
}

/// `drover build … > paths`: standard output redirected, standard error a terminal. As with
/// nix-build, the progress (here the TUI, drawn on standard error) stays on the terminal and
/// the output path goes to the file.
#[test]
fn a_build_with_standard_output_redirected_shows_the_tui_and_writes_the_paths() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "[drv.hello]\nbuilder = \"/bin/busybox\"\nargs = [\"sh\", \"-c\", \"echo built > $out\"]\n",
    )
    .unwrap();
    let s = dir.path().join("s");
    let store = format!(
        "local?store={0}/store&state={0}/state&log={0}/log",
        s.display()
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
    let paths = dir.path().join("paths");
    let tmux = start_shell(
        dir.path(),
        &format!(
            "{} build --store \"{store}\" --no-out-link {} > {}",
            bin.display(),
            plan.display(),
            paths.display()
        ),
    );
    tmux.wait_for("the TUI's summary", |s| s.contains("exit 0 (success)"));
    tmux.keys(&["q"]);
    assert_eq!(exit_status(&tmux, dir.path()), 0, "{}", tmux.screen());
    let printed = std::fs::read_to_string(&paths).unwrap();
    assert!(
        printed.trim_end().ends_with("-hello") && printed.lines().count() == 1,
        "{printed:?}"
    );
}

/// `cat SAMPLE | drover monitor`: the stream is standard input, so the TUI reads its keys
/// from the terminal (crossterm opens /dev/tty when standard input is not one). A real Nix
/// 2.8 stream shows read-only; command keys say so; q leaves with Nix's exit status.
#[test]
fn a_piped_nix_stream_shows_in_the_tui_and_keys_come_from_the_terminal() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/internal-json/internal-json.log");
    let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
    let tmux = start_shell(
        dir.path(),
        &format!("cat {} | {} monitor", sample.display(), bin.display()),
    );
    // The footer is drawn last: once it shows, the whole frame does.
    let screen = tmux.wait_for("the monitored run to end", |s| {
        s.contains("drover monitor")
            && s.contains("exit 102")
            && s.contains("read-only: watching a Nix build")
            && graph_line(s, "fod-bad").is_some_and(|l| l.contains("output rejected"))
    });
    assert!(
        graph_line(&screen, "fod-bad").is_some_and(|l| l.contains("output rejected")),
        "{screen}"
    );
    tmux.keys(&["/", "n5", "Enter", "r"]);
    tmux.wait_for("the retry key's answer", |s| {
        s.contains("retry is unavailable: read-only, watching a Nix build")
    });
    tmux.keys(&["q"]);
    assert_eq!(exit_status(&tmux, dir.path()), 102, "{}", tmux.screen());
    assert_eq!(alternate_screen(&tmux), "0");
}

/// A stream still going (a FIFO this test keeps open): q leaves at once, asking nothing and
/// stopping nothing (exit 1: the watched run did not end); Ctrl-C too.
#[test]
fn leaving_a_live_monitor_asks_nothing() {
    if !have_tmux() {
        return;
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/internal-json/internal-json.log"),
    )
    .unwrap();
    let head: String = text.lines().take(150).map(|l| format!("{l}\n")).collect();
    for key in ["q", "C-c"] {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stream");
        let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
        let tmux = start_shell(
            dir.path(),
            &format!("{} monitor < {}", bin.display(), fifo.display()),
        );
        // Opening blocks until drover's shell opens the other end.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, head.as_bytes()).unwrap();
        let screen = tmux.wait_for("builds running", |s| {
            graph_line(s, "n1").is_some_and(|l| l.contains("⏵"))
                && s.contains("read-only: watching a Nix build")
        });
        assert!(screen.contains("ETA"), "still running:\n{screen}");
        tmux.keys(&["c"]);
        tmux.wait_for("the cancel key's answer", |s| {
            s.contains("cancel is unavailable: read-only, watching a Nix build")
        });
        tmux.keys(&[key]);
        assert_eq!(
            exit_status(&tmux, dir.path()),
            1,
            "{key}: {}",
            tmux.screen()
        );
        assert_eq!(alternate_screen(&tmux), "0");
        drop(writer);
    }
}

/// A live real Nix build piped into the TUI: `nix-build --log-format internal-json -v 2>&1 |
/// drover monitor --store ROOT`. The goal graph comes from the `.drv` files in Nix's store
/// (mon-c under mon-top, mon-a under mon-c), the failure shows, and q leaves with Nix's status.
#[test]
fn a_live_nix_build_shows_in_the_tui() {
    if !have_tmux() || !common::require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let expr = dir.path().join("t.nix");
    std::fs::write(&expr, common::monitor_workload()).unwrap();
    let root = dir.path().join("store");
    let nix: Vec<String> = common::nix_command("nix-build")
        .get_args()
        .map(|a| format!("\"{}\"", a.to_str().unwrap()))
        .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
    let root = root.display();
    let line = format!(
        "nix-build {} --store {root} --no-out-link --keep-going --log-format internal-json -v {} \
         2>&1 | {} monitor --store {root}",
        nix.join(" "),
        expr.display(),
        bin.display()
    );
    let tmux = start_shell(dir.path(), &line);
    // The footer is drawn last: once it shows, the whole frame does.
    let screen = tmux.wait_for("the build to end", |s| {
        s.contains("exit 100")
            && s.contains("read-only: watching a Nix build")
            && graph_line(s, "mon-top").is_some_and(|l| l.contains("dependency failed"))
            && graph_line(s, "mon-a").is_some_and(|l| l.contains("built"))
            && graph_line(s, "mon-b").is_some_and(|l| l.contains("exit 1"))
    });
    let row = |name: &str| graph_line(&screen, name).unwrap_or_else(|| panic!("{name}:\n{screen}"));
    assert!(row("mon-b").contains("exit 1"), "{screen}");
    assert!(row("mon-a").contains("built"), "{screen}");
    assert!(row("mon-top").contains("dependency failed"), "{screen}");
    // The tree from the .drv files: mon-a is indented under mon-c, under mon-top.
    let indent = |name: &str| {
        let r = row(name);
        r[..r.find(name).unwrap()].chars().count()
    };
    assert!(
        indent("mon-top") < indent("mon-c") && indent("mon-c") < indent("mon-a"),
        "{screen}"
    );
    tmux.keys(&["q"]);
    assert_eq!(exit_status(&tmux, dir.path()), 100, "{}", tmux.screen());
}

/// `drover replay` of a recorded simulation plays in the read-only TUI at the recorded pace
/// (here 50 times faster) and leaves with the recorded exit status.
#[test]
fn a_recording_replays_in_the_tui() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("run.jsonl");
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, PLAN).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_drover"));
    let recorded = Command::new(bin)
        .args(["simulate", "--log-format", "plain", "-j", "2", "--plan"])
        .arg(&plan)
        .arg("--record")
        .arg(&rec)
        .output()
        .unwrap();
    assert_eq!(recorded.status.code(), Some(0));
    let tmux = start_drover(dir.path(), &format!("replay --speed 50 {}", rec.display()));
    // The footer is drawn last: once it shows, the whole frame does.
    tmux.wait_for("slow-2.0 building in the replay", |s| {
        s.contains("drover replay")
            && graph_line(s, "slow-2.0").is_some_and(|l| l.contains("⏵"))
            && s.contains("read-only: watching a recording")
    });
    tmux.keys(&["r"]);
    tmux.wait_for("the retry key's answer", |s| {
        s.contains("retry is unavailable: read-only, watching a recording")
    });
    tmux.wait_for("the replay to end", |s| s.contains("exit 0 (success)"));
    tmux.keys(&["q"]);
    assert_eq!(exit_status(&tmux, dir.path()), 0, "{}", tmux.screen());
}
