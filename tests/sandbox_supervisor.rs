//! The build supervisor (`drover __build-exec`): builders run set up as Nix sets them up,
//! their output arrives on the log pipe, their exact exit status is reported, and nothing a
//! build started survives it (a detached daemon included), also when the build is killed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use drover::sandbox::{BuilderEvent, Personality, SandboxSpec, Started, Supervisors};

fn supervisors() -> Arc<Supervisors> {
    Supervisors::new(PathBuf::from(env!("CARGO_BIN_EXE_drover")))
}

fn spec(dir: &Path, script: &str) -> SandboxSpec {
    SandboxSpec {
        program: b"/bin/busybox".to_vec(),
        argv: vec![
            b"busybox".to_vec(),
            b"sh".to_vec(),
            b"-c".to_vec(),
            script.into(),
        ],
        env: vec![b"PATH=/path-not-set".to_vec(), b"FOO=bar baz".to_vec()],
        cwd: dir.to_owned(),
        uid: None,
        gid: None,
        groups: vec![],
        personality: Personality::default(),
        namespaces: None,
    }
}

/// Runs a builder to its end; its output and raw wait status. `kill_on` kills the build once
/// this text appeared in the output.
async fn run(sup: &Arc<Supervisors>, spec: &SandboxSpec, kill_on: Option<&str>) -> (String, i32) {
    let mut b = match sup.start(spec).await.unwrap() {
        Started::Running(b) => b,
        Started::SetupFailed(m) => panic!("setup failed: {m}"),
    };
    assert!(b.pid() > 0);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match b.next(&mut buf).await.unwrap() {
            BuilderEvent::Output(n) => {
                out.extend_from_slice(&buf[..n]);
                if kill_on.is_some_and(|k| String::from_utf8_lossy(&out).contains(k)) {
                    b.kill();
                }
            }
            BuilderEvent::Exited(status) => {
                return (String::from_utf8(out).unwrap(), status);
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test]
async fn output_status_environment_and_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    let script = "echo \"out $FOO\"; echo err >&2; pwd; umask; \
                  read x; echo \"stdin:$x:\"; \
                  [ -t 1 ] || echo notatty; \
                  trap - PIPE; yes | head -n 1; \
                  echo \"sid $(cut -d' ' -f6 /proc/self/stat) pid $$\"; exit 3";
    let (out, status) = run(&sup, &spec(dir.path(), script), None).await;
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3,
        "{status}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..7],
        &[
            "out bar baz",
            "err",
            dir.path().canonicalize().unwrap().to_str().unwrap(),
            "0022",
            "stdin::",
            "notatty",
            "y",
        ]
    );
    // The builder leads its own session.
    let words: Vec<&str> = lines[7].split(' ').collect();
    assert_eq!(words[0], "sid");
    assert_eq!(words[1], words[3], "{}", lines[7]);
    // The same supervisor serves the next build.
    let (out, status) = run(&sup, &spec(dir.path(), "echo again"), None).await;
    assert_eq!((out.as_str(), status), ("again\n", 0));
}

#[tokio::test]
async fn a_builder_inherits_no_descriptor_but_stdin_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    // A descriptor drover left open by mistake (no close-on-exec).
    let leak = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leak);
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let (out, status) = run(
        &supervisors(),
        &spec(dir.path(), "busybox ls /proc/self/fd"),
        None,
    )
    .await;
    assert_eq!(status, 0);
    // 0, 1, 2 and the descriptor `ls` opened to list the directory.
    assert_eq!(out.lines().count(), 4, "{out}");
    drop(leak);
}

#[tokio::test]
async fn a_detached_daemon_does_not_outlive_its_build() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    // The daemon double-forks, leaves the session and closes the log: only the supervisor
    // (a subreaper) can still find it.
    let script = "busybox setsid busybox sh -c 'echo $$ > daemon.pid; exec busybox sleep 1000' \
                  </dev/null >/dev/null 2>&1 & \
                  while [ ! -s daemon.pid ]; do :; done; echo started";
    let (out, status) = run(&sup, &spec(dir.path(), script), None).await;
    assert_eq!((out.as_str(), status), ("started\n", 0));
    let pid: i32 = std::fs::read_to_string(dir.path().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "daemon {pid} still runs");
}

#[tokio::test]
async fn killing_a_build_kills_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    let script = "busybox sleep 1000 & echo $! > child.pid; \
                  busybox setsid busybox sleep 1000 </dev/null >/dev/null 2>&1 & \
                  echo $! > detached.pid; echo ready; wait";
    let (out, status) = run(&sup, &spec(dir.path(), script), Some("ready")).await;
    assert_eq!(out, "ready\n");
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    for f in ["child.pid", "detached.pid"] {
        let pid: i32 = std::fs::read_to_string(dir.path().join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "{f}: {pid} still runs");
    }
}

#[tokio::test]
async fn setup_and_exec_failures() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    let missing = dir.path().join("missing");
    match sup.start(&spec(&missing, "true")).await.unwrap() {
        Started::SetupFailed(m) => assert_eq!(
            m,
            format!(
                "changing into '{}': No such file or directory",
                missing.display()
            )
        ),
        Started::Running(_) => panic!("started in a missing directory"),
    }
    let mut s = spec(dir.path(), "true");
    s.program = b"/no/such/builder".to_vec();
    let (out, status) = run(&sup, &s, None).await;
    assert_eq!(
        out,
        "error: executing '/no/such/builder': No such file or directory\n"
    );
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1);
}

#[tokio::test]
async fn dropping_a_running_build_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    let s = spec(
        dir.path(),
        "echo $$ > b.pid; echo go; exec busybox sleep 1000",
    );
    let Started::Running(mut b) = sup.start(&s).await.unwrap() else {
        panic!("not started");
    };
    let pid = b.pid() as i32;
    let mut buf = [0u8; 64];
    assert_eq!(b.next(&mut buf).await.unwrap(), BuilderEvent::Output(3));
    drop(b);
    // The supervisor kills the build and exits once its socket closes.
    let mut waited = 0u64;
    while alive(pid) {
        std::thread::yield_now();
        waited += 1;
        assert!(waited < 50_000_000, "builder {pid} survived");
    }
}

#[tokio::test]
async fn a_builder_dies_with_its_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    let s = spec(dir.path(), "echo go; exec busybox sleep 1000");
    let Started::Running(mut b) = sup.start(&s).await.unwrap() else {
        panic!("not started");
    };
    let pid = b.pid() as i32;
    let mut buf = [0u8; 64];
    assert_eq!(b.next(&mut buf).await.unwrap(), BuilderEvent::Output(3));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: killing the supervisor this test started.
    unsafe { libc::kill(ppid, libc::SIGKILL) };
    assert!(b.next(&mut buf).await.is_err(), "the supervisor is gone");
    let mut waited = 0u64;
    while alive(pid) && !zombie(pid) {
        std::thread::yield_now();
        waited += 1;
        assert!(waited < 50_000_000, "builder {pid} survived its supervisor");
    }
}

/// Whether a process has exited but not been reaped yet.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn an_idle_supervisor_that_died_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisors();
    let (out, status) = run(&sup, &spec(dir.path(), "echo $PPID"), None).await;
    assert_eq!(status, 0);
    let supervisor: i32 = out.trim().parse().unwrap();
    // SAFETY: killing the (idle) supervisor this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    while alive(supervisor) && !zombie(supervisor) {
        std::thread::yield_now();
    }
    let (out, status) = run(&sup, &spec(dir.path(), "echo $PPID"), None).await;
    assert_eq!(status, 0);
    assert_ne!(out.trim().parse::<i32>().unwrap(), supervisor);
}
