//! Whole frames of the TUI, drawn with ratatui's `TestBackend` from a simulated run on the
//! virtual clock (seeded, so every frame is the same each time), compared with `insta`
//! snapshots in tests/snapshots/. Durations and store hashes are redacted (digits become
//! `#`), so the snapshots hold the layout and the words, not the simulator's timings.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use drover::app::tui::{self, LogSource, MemoryLogs, TuiOptions, Ui};
use drover::engine::api::{Command, Event, EventKind, GoalId, Time};
use drover::engine::scheduler::{Scheduler, Settings};
use drover::engine::sim::{self, Observer, Plan, SimExecutor, SimHistory, SimModel, World};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// A small workload: an app on four libraries and a tool; `zlib`'s lock is held by another
/// process for a while; `libfoo` fails on its first attempt (a retry builds it).
const PLAN: &str = r#"{
  "nodes": [
    {"name": "zlib-1.3.1", "duration_ms": 3000, "lock_held_ms": 20000,
     "log": ["configuring", "  CC adler32.o", "  CC deflate.o", "installing"]},
    {"name": "xz-5.4.6", "duration_ms": 5000, "log": ["configuring", "  CC lzma.o", "installing"]},
    {"name": "ncurses-6.4", "duration_ms": 7000, "log": ["configuring", "  CC tty.o", "installing"]},
    {"name": "libfoo-1.2", "duration_ms": 6000, "fail_attempts": [1],
     "log": ["configuring", "  CC foo.o", "foo.c:12: error: 'bar' undeclared", "make: *** [foo.o] Error 1"]},
    {"name": "bzip2-1.0.8", "duration_ms": 4000, "log": ["  CC blocksort.o", "  CC huffman.o", "installing"]},
    {"name": "gmp-6.3.0", "duration_ms": 3000, "log": ["configuring", "  CC mpn/add.o", "installing"]},
    {"name": "perl-5.38.2", "duration_ms": 6000, "deps": ["zlib-1.3.1"],
     "log": ["Configure -des", "  CC perl.o", "installing"]},
    {"name": "openssl-3.0.13", "duration_ms": 8000, "deps": ["perl-5.38.2", "zlib-1.3.1"],
     "log": ["Configure linux-x86_64", "  CC crypto/aes.o", "  CC ssl/ssl_lib.o", "installing"]},
    {"name": "libbar-0.9", "duration_ms": 3000, "deps": ["libfoo-1.2", "xz-5.4.6"],
     "log": ["configuring", "  CC bar.o", "installing"]},
    {"name": "readline-8.2", "duration_ms": 2000, "deps": ["ncurses-6.4"],
     "log": ["configuring", "installing"]},
    {"name": "python3-3.11.8", "duration_ms": 9000, "deps": ["openssl-3.0.13", "readline-8.2", "xz-5.4.6", "bzip2-1.0.8", "gmp-6.3.0"],
     "log": ["configuring", "  CC Python/ceval.o", "  CC Modules/_ssl.o", "installing"]},
    {"name": "gettext-0.22", "duration_ms": 5000, "log": ["configuring", "  CC msgfmt.o", "installing"]},
    {"name": "app-2.0", "duration_ms": 2000, "deps": ["zlib-1.3.1", "python3-3.11.8", "libbar-0.9"],
     "log": ["building app", "installing"]},
    {"name": "docs-2.0", "duration_ms": 1000, "deps": ["python3-3.11.8", "gettext-0.22"],
     "log": ["sphinx-build", "installing"]}
  ],
  "targets": ["app-2.0", "docs-2.0"]
}"#;

const WIDTH: u16 = 100;
const HEIGHT: u16 = 30;

struct Collect(Vec<Event>);

impl Observer for Collect {
    fn events(&mut self, events: &[Event]) {
        self.0.extend_from_slice(events);
    }
}

fn world() -> Arc<World> {
    let plan: Plan = serde_json::from_str(PLAN).unwrap();
    Arc::new(World::planned(&plan, SimModel::default()).unwrap())
}

fn settings() -> Settings {
    Settings {
        max_jobs: 3,
        keep_going: true,
        use_substitutes: false,
        ..Settings::default()
    }
}

/// Every event of the run, with `commands` delivered at their virtual times.
fn run(commands: &[(Time, Command)]) -> Vec<Event> {
    let world = world();
    let mut exec = SimExecutor::new(world);
    let mut scheduler = Scheduler::new(settings());
    let mut seen = Collect(Vec::new());
    sim::run_sync(
        &mut scheduler,
        &mut exec,
        drover::engine::api::BuildMode::Normal,
        commands,
        &mut seen,
    );
    seen.0
}

fn goal(events: &[Event], name: &str) -> GoalId {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::GoalAdded { goal, name: n, .. } if n == name => Some(*goal),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no goal {name}"))
}

/// When the `k`-th (0-based) `RunDone` came.
fn run_done(events: &[Event], k: usize) -> Time {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RunDone { .. }))
        .nth(k)
        .unwrap_or_else(|| panic!("fewer than {} RunDone events", k + 1))
        .time
}

/// The screen after the events up to `t`, with their logs kept for finished goals.
struct Screen {
    ui: Ui,
    logs: MemoryLogs,
    now: Time,
}

impl Screen {
    fn at(events: &[Event], t: Time) -> Screen {
        let world = world();
        let mut options = TuiOptions::new("drover", settings().max_jobs, settings().keep_going);
        options.history = Arc::new(SimHistory::new(&world));
        options.color = false;
        let mut ui = tui::new_ui(&options);
        let upto: Vec<Event> = events.iter().filter(|e| e.time <= t).cloned().collect();
        let logs = MemoryLogs::new(1000);
        logs.record(&upto);
        ui.view.apply_all(&upto);
        Screen { ui, logs, now: t }
    }

    fn key(&mut self, code: KeyCode) -> Vec<Command> {
        let m = match code {
            KeyCode::Char(c) if c.is_ascii_uppercase() => KeyModifiers::SHIFT,
            _ => KeyModifiers::NONE,
        };
        // As the loop does: a frame first, so the panes' areas are known.
        self.draw(WIDTH, HEIGHT);
        self.ui.on_key(&KeyEvent::new(code, m))
    }

    fn keys(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn select(&mut self, name: &str) {
        let g = self
            .ui
            .view
            .goals
            .iter()
            .position(|g| &*g.name == name)
            .unwrap_or_else(|| panic!("no goal {name}"));
        self.ui.select(g as u32);
    }

    fn draw(&mut self, width: u16, height: u16) -> String {
        self.ui.load_wanted_log(&self.logs);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let now = self.now;
        terminal
            .draw(|f| tui::render(&mut self.ui, now, f))
            .unwrap();
        redact(&terminal.backend().to_string())
    }
}

/// Durations (`1:02`, `0:41`, `1:02:03`, `5s`, `2m05s`, `1h02m`) and 32-character store
/// hashes, with their digits (or characters) replaced, so the width stays.
fn redact(text: &str) -> String {
    let durations =
        regex::Regex::new(r"\b\d+(:\d\d){1,2}\b|\b\d+h\d\dm\b|\b\d+m\d\ds\b|\b\d+s\b").unwrap();
    let hashes = regex::Regex::new(r"\b[0-9a-df-np-sv-z]{32}\b").unwrap();
    let text = durations.replace_all(text, |c: &regex::Captures| {
        c[0].replace(|ch: char| ch.is_ascii_digit(), "#")
    });
    hashes
        .replace_all(&text, |c: &regex::Captures| "*".repeat(c[0].len()))
        .into_owned()
}

#[test]
fn redaction_keeps_the_layout() {
    assert_eq!(
        redact("0:41 ∅1:02:03 retry in 5s, 2m05s pid 1004 3/4"),
        "#:## ∅#:##:## retry in #s, #m##s pid 1004 3/4"
    );
    assert_eq!(
        redact("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"),
        "/nix/store/********************************-x"
    );
}

#[test]
fn snapshot_start() {
    let events = run(&[]);
    let mut s = Screen::at(&events, Time::ZERO);
    assert!(s.ui.view.is_running());
    insta::assert_snapshot!("start_80x24", s.draw(80, 24));
}

#[test]
fn snapshot_mid_run_with_slots_full_and_a_lock_wait() {
    let events = run(&[]);
    let mut s = Screen::at(&events, Time::from_millis(2500));
    let v = &s.ui.view;
    assert_eq!(v.count(tui::Category::Building), 3, "every slot is busy");
    assert_eq!(v.lock_waits.len(), 1, "zlib waits for its lock");
    let frame = s.draw(WIDTH, HEIGHT);
    assert!(
        frame.contains("pid 4242"),
        "the lock holder shows:\n{frame}"
    );
    insta::assert_snapshot!("mid_run", frame);
}

#[test]
fn snapshot_failure_with_keep_going() {
    let events = run(&[]);
    let mut s = Screen::at(&events, Time::from_millis(9500));
    let v = &s.ui.view;
    assert!(v.is_running() && v.count(tui::Category::Failed) == 1);
    s.select("libfoo-1.2");
    s.key(KeyCode::Enter);
    let frame = s.draw(WIDTH, HEIGHT);
    assert!(frame.contains("'bar' undeclared"), "its stored log shows");
    insta::assert_snapshot!("failure_keep_going", frame);
}

#[test]
fn snapshot_end_summary_stays_until_q() {
    let events = run(&[]);
    let end = run_done(&events, 0);
    let mut s = Screen::at(&events, end);
    let frame = s.draw(WIDTH, HEIGHT);
    assert!(frame.contains("1 root cause"), "{frame}");
    insta::assert_snapshot!("end_summary", frame);
    assert!(s.key(KeyCode::Char('k')).len() == 1 && !s.ui.should_exit());
    s.key(KeyCode::Char('q'));
    assert!(s.ui.should_exit(), "q leaves once the run is over");
}

#[test]
fn snapshot_after_retry() {
    let first = run(&[]);
    let end = run_done(&first, 0);
    let libfoo = goal(&first, "libfoo-1.2");
    // The key sends the command; the simulation delivers it a second after the run ended.
    let mut s = Screen::at(&first, end);
    s.select("libfoo-1.2");
    let sent = s.key(KeyCode::Char('r'));
    assert_eq!(sent, vec![Command::Retry { goal: libfoo }]);
    let retry_at = end.plus_millis(1000);
    let events = run(&[(retry_at, sent[0].clone())]);
    let mut s = Screen::at(&events, retry_at.plus_millis(2000));
    assert!(s.ui.view.is_running(), "the retry reopened the run");
    insta::assert_snapshot!("after_retry_running", s.draw(WIDTH, HEIGHT));
    let end = run_done(&events, 1);
    let mut s = Screen::at(&events, end);
    let frame = s.draw(WIDTH, HEIGHT);
    assert!(frame.contains("exit 0 (success)"), "{frame}");
    insta::assert_snapshot!("after_retry_done", frame);
}

#[test]
fn snapshot_help_overlay() {
    let events = run(&[]);
    let mut s = Screen::at(&events, Time::from_millis(2500));
    s.key(KeyCode::Char('?'));
    insta::assert_snapshot!("help", s.draw(WIDTH, HEIGHT));
}

#[test]
fn snapshot_narrow_terminal() {
    let events = run(&[]);
    let mut s = Screen::at(&events, Time::from_millis(2500));
    let frame = s.draw(60, 20);
    assert!(frame.contains("needs 80x24"), "{frame}");
    insta::assert_snapshot!("narrow", frame);
}

#[test]
fn snapshot_search_and_filter() {
    let events = run(&[]);
    let mut s = Screen::at(&events, Time::from_millis(9500));
    s.key(KeyCode::Char('/'));
    s.keys("lib");
    s.key(KeyCode::Enter);
    insta::assert_snapshot!("search", s.draw(WIDTH, HEIGHT));
    s.key(KeyCode::Esc);
    s.key(KeyCode::Char('f'));
    s.key(KeyCode::Char('f'));
    insta::assert_snapshot!("filter_failed", s.draw(WIDTH, HEIGHT));
}

/// The screen of a monitored Nix build (the real Nix 2.8 sample, parsed as `drover monitor`
/// parses it, 10ms a line) after its first `lines` lines (and its end, if they are all):
/// read-only.
fn monitor_screen(lines: usize) -> (Ui, Time) {
    let text = std::fs::read_to_string("tests/fixtures/internal-json/internal-json.log").unwrap();
    let mut parser = drover::app::nix_json::NixJsonParser::new(None);
    let mut events = Vec::new();
    let mut now = Time::ZERO;
    let all = text.lines().count();
    for line in text.lines().take(lines) {
        now = now.plus_millis(10);
        parser.line(line, now, &mut events).unwrap();
    }
    if lines >= all {
        parser.finish(now, &mut events);
    }
    let mut options = TuiOptions::new("drover monitor", 0, false);
    options.read_only = Some("watching a Nix build".into());
    options.color = false;
    let mut ui = tui::new_ui(&options);
    ui.view.apply_all(&events);
    (ui, now)
}

fn draw_ui(ui: &mut Ui, now: Time) -> String {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    terminal.draw(|f| tui::render(ui, now, f)).unwrap();
    redact(&terminal.backend().to_string())
}

#[test]
fn snapshot_read_only_monitor_says_command_keys_are_unavailable() {
    // The stream without its end: the parser ends the run at the end of what it read.
    let (mut ui, now) = monitor_screen(usize::MAX);
    let frame = draw_ui(&mut ui, now);
    assert!(frame.contains("read-only: watching a Nix build"), "{frame}");
    assert!(
        frame.contains("fod-bad") && frame.contains("exit 102"),
        "{frame}"
    );
    insta::assert_snapshot!("read_only_monitor_done", frame);

    let press = |ui: &mut Ui, c: char| {
        let m = if c.is_ascii_uppercase() {
            KeyModifiers::SHIFT
        } else {
            KeyModifiers::NONE
        };
        ui.on_key(&KeyEvent::new(KeyCode::Char(c), m))
    };
    let (mut ui, now) = monitor_screen(150);
    assert!(ui.view.is_running(), "half the stream: builds are running");
    for (key, what) in [
        ('c', "cancel"),
        ('C', "cancel all"),
        ('r', "retry"),
        ('k', "keep-going"),
        ('+', "changing max-jobs"),
        ('-', "changing max-jobs"),
        ('d', "drain"),
        ('p', "pause"),
    ] {
        assert!(press(&mut ui, key).is_empty(), "{key} sends nothing");
        assert_eq!(ui.confirm, None, "{key} asks nothing");
        assert_eq!(
            ui.notice.as_deref(),
            Some(format!("{what} is unavailable: read-only, watching a Nix build").as_str()),
            "{key}"
        );
    }
    press(&mut ui, 'c');
    let frame = draw_ui(&mut ui, now);
    insta::assert_snapshot!("read_only_monitor_running", frame);
    // Looking around still works; q leaves at once: leaving stops nothing.
    assert!(press(&mut ui, 'j').is_empty());
    assert!(press(&mut ui, 'q').is_empty());
    assert!(
        ui.should_exit(),
        "no question: nothing here runs the builds"
    );
}

/// Two paths downloading from a cache: the slots pane shows their bytes and rate, the
/// header the count and the bytes of the run.
#[test]
fn snapshot_downloads() {
    use drover::engine::api::{
        BuildMode, Bytes, Counter, GoalKind, GoalState, Progress, RunningDetail,
    };
    let cache = "https://cache.example.org";
    let mut kinds = vec![EventKind::GoalAdded {
        goal: GoalId(0),
        kind: GoalKind::Derivation {
            drv: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-app-2.0.drv".into(),
            outputs: vec![],
            mode: BuildMode::Normal,
        },
        name: "app-2.0".into(),
        top: true,
    }];
    let downloads = [
        ("openssl-3.0.13", 3 << 20, 8 << 20),
        ("python3-3.11.8", 12 << 20, 30 << 20),
    ];
    for (i, (name, _, _)) in downloads.iter().enumerate() {
        let goal = GoalId(i as u32 + 1);
        kinds.push(EventKind::GoalAdded {
            goal,
            kind: GoalKind::Substitution {
                path: format!("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-{name}"),
                repair: false,
            },
            name: (*name).into(),
            top: false,
        });
        kinds.push(EventKind::EdgeAdded {
            waiter: GoalId(0),
            waitee: goal,
        });
        kinds.push(EventKind::SubstitutionStarted {
            goal,
            slot: i as u32,
            substituter: cache.into(),
        });
        kinds.push(EventKind::StateChanged {
            goal,
            state: GoalState::Running {
                detail: RunningDetail::Substitution {
                    slot: i as u32,
                    substituter: cache.into(),
                    since: Time::ZERO,
                },
            },
        });
    }
    let mut events: Vec<Event> = kinds
        .into_iter()
        .enumerate()
        .map(|(seq, kind)| Event {
            seq: seq as u64,
            time: Time::ZERO,
            kind,
        })
        .collect();
    // Four seconds later.
    let now = Time::from_secs(4);
    for (i, (_, done, size)) in downloads.iter().enumerate() {
        events.push(Event {
            seq: events.len() as u64,
            time: now,
            kind: EventKind::SubstitutionProgress {
                goal: GoalId(i as u32 + 1),
                download_done: *done,
                download_expected: Some(*size),
                nar_done: *done * 3,
                nar_expected: *size * 3,
                url: None,
            },
        });
    }
    events.push(Event {
        seq: events.len() as u64,
        time: now,
        kind: EventKind::Progress {
            progress: Progress {
                builds: Counter {
                    expected: 1,
                    ..Counter::default()
                },
                substitutions: Counter {
                    expected: 2,
                    running: 2,
                    ..Counter::default()
                },
                download: Bytes {
                    done: 15 << 20,
                    expected: 38 << 20,
                },
                nar: Bytes {
                    done: 45 << 20,
                    expected: 114 << 20,
                },
            },
        },
    });
    let mut options = TuiOptions::new("drover build", 2, false);
    options.color = false;
    let mut ui = tui::new_ui(&options);
    ui.view.apply_all(&events);
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    terminal.draw(|f| tui::render(&mut ui, now, f)).unwrap();
    let screen = redact(&terminal.backend().to_string());
    assert!(
        screen.contains("↓ openssl-3.0.13 3.0M/8.0M 768K/s"),
        "{screen}"
    );
    assert!(
        screen.contains("↓ python3-3.11.8 12.0M/30.0M 3.0M/s"),
        "{screen}"
    );
    insta::assert_snapshot!("downloads", screen);
}

/// `drover monitor` of a Nix 2.8 substitution from an HTTP cache, four seconds into two
/// parallel downloads: the stream in Nix's layout (no parents: each NAR download goes with
/// the oldest copy that has none), parsed as the monitor parses it, drawn read-only.
#[test]
fn snapshot_monitored_substitution_mid_download() {
    const CACHE: &str = "https://cache.example.org";
    let openssl = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-openssl-3.0.13";
    let python = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-python3-3.11.8";
    let start = |id: u64, kind: u64, level: u8, text: &str, fields: &str| {
        format!(
            "@nix {{\"action\":\"start\",\"fields\":[{fields}],\"id\":{id},\"level\":{level},\
             \"text\":\"{text}\",\"type\":{kind}}}"
        )
    };
    let result = |id: u64, kind: u64, fields: &str| {
        format!("@nix {{\"action\":\"result\",\"fields\":[{fields}],\"id\":{id},\"type\":{kind}}}")
    };
    let substitute =
        |id: u64, path: &str| start(id, 108, 0, "", &format!("\"{path}\",\"{CACHE}\""));
    let copy = |id: u64, path: &str| {
        start(
            id,
            100,
            3,
            &format!("copying path '{path}' from '{CACHE}'"),
            &format!("\"{path}\",\"{CACHE}\",\"local\""),
        )
    };
    let download = |id: u64, nar: &str| {
        let url = format!("{CACHE}/nar/{nar}.nar.xz");
        start(
            id,
            101,
            4,
            &format!("downloading '{url}'"),
            &format!("\"{url}\""),
        )
    };
    let mib = |n: u64| n << 20;
    let early = [
        "@nix {\"action\":\"msg\",\"level\":3,\"msg\":\"these 2 paths will be fetched (38.00 MiB download, 114.00 MiB unpacked):\"}".to_owned(),
        format!("@nix {{\"action\":\"msg\",\"level\":3,\"msg\":\"  {openssl}\"}}"),
        format!("@nix {{\"action\":\"msg\",\"level\":3,\"msg\":\"  {python}\"}}"),
        "@nix {\"action\":\"start\",\"id\":1,\"level\":0,\"text\":\"\",\"type\":102}".to_owned(),
        "@nix {\"action\":\"start\",\"id\":2,\"level\":0,\"text\":\"\",\"type\":104}".to_owned(),
        "@nix {\"action\":\"start\",\"id\":3,\"level\":0,\"text\":\"\",\"type\":103}".to_owned(),
        result(3, 105, "0,2,0,0"),
        result(1, 106, &format!("101,{}", mib(38))),
        result(1, 106, &format!("100,{}", mib(114))),
        result(3, 105, "0,2,2,0"),
        substitute(10, openssl),
        copy(11, openssl),
        substitute(20, python),
        copy(21, python),
        download(12, "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"),
        download(22, "1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b"),
        result(12, 105, &format!("0,{},0,0", mib(8))),
        result(22, 105, &format!("0,{},0,0", mib(30))),
    ];
    let later = [
        result(12, 105, &format!("{},{},0,0", mib(3), mib(8))),
        result(22, 105, &format!("{},{},0,0", mib(12), mib(30))),
    ];
    let mut parser = drover::app::nix_json::NixJsonParser::new(None);
    let mut events = Vec::new();
    for line in &early {
        parser.line(line, Time::ZERO, &mut events).unwrap();
    }
    let now = Time::from_secs(4);
    for line in &later {
        parser.line(line, now, &mut events).unwrap();
    }
    let mut options = TuiOptions::new("drover monitor", 0, false);
    options.read_only = Some("watching a Nix build".into());
    options.color = false;
    let mut ui = tui::new_ui(&options);
    ui.view.apply_all(&events);
    let screen = draw_ui(&mut ui, now);
    assert!(
        screen.contains("read-only: watching a Nix build"),
        "{screen}"
    );
    assert!(
        screen.contains("↓ openssl-3.0.13 3.0M/8.0M 768K/s"),
        "{screen}"
    );
    assert!(
        screen.contains("↓ python3-3.11.8 12.0M/30.0M 3.0M/s"),
        "{screen}"
    );
    insta::assert_snapshot!("monitored_substitution_mid_download", screen);
}
