//! The sandbox through the build supervisor, with sandboxes the engine plans: the builder
//! runs as Nix's sandboxed builders do (uid 1000, gid 100, host name `localhost`, in
//! `/build`, PID 1, only loopback), and hostile builders are contained: they cannot reach the
//! host's network (a fixed-output build can), read what is not theirs, write outside their
//! output and build directory, leave processes behind, create setuid files, signal host
//! processes or see them.

mod sandbox_support;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use drover::sandbox::{BuilderEvent, SandboxSpec, Started, Supervisors};
use sandbox_support::{Fake, INPUT, OUT, SECRET, require_namespaces};

fn supervisors() -> Arc<Supervisors> {
    Supervisors::new(PathBuf::from(env!("CARGO_BIN_EXE_drover")))
}

/// Runs a builder to its end: its output and raw wait status.
async fn run(sup: &Arc<Supervisors>, spec: &SandboxSpec) -> (String, i32) {
    let mut b = match sup.start(spec).await.unwrap() {
        Started::Running(b) => b,
        Started::SetupFailed(m) => panic!("setup failed: {m}"),
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match b.next(&mut buf).await.unwrap() {
            BuilderEvent::Output(n) => out.extend_from_slice(&buf[..n]),
            BuilderEvent::Exited(status) => return (String::from_utf8(out).unwrap(), status),
        }
    }
}

fn exited_0(status: i32, out: &str) {
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}: {out}"
    );
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Host processes whose command line has this argument.
fn processes_with_arg(arg: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

#[tokio::test]
async fn the_builder_is_nix_s_sandboxed_builder() {
    if !require_namespaces() {
        return;
    }
    let f = Fake::new();
    let script = "echo \"pid $$\"; busybox id; busybox hostname; \
                  busybox cat /proc/sys/kernel/domainname; busybox pwd; echo \"$PWD\"; \
                  busybox ls /; busybox ls /nix/store; busybox cat /nix/store/*-input/file; \
                  echo; busybox ls /proc | busybox grep '^[0-9]'; \
                  busybox ip -o link | busybox cut -d: -f2; \
                  busybox cat /etc/passwd /etc/group /etc/hosts; \
                  busybox ls /dev; \
                  echo made > $out && echo tmp > /tmp/t && echo build > /build/b";
    let (out, status) = run(&supervisors(), &f.spec(script, true)).await;
    exited_0(status, &out);
    let expected = format!(
        "pid 1\n\
         uid=1000(nixbld) gid=100(nixbld)\n\
         localhost\n\
         (none)\n\
         /build\n\
         /build\n\
         bin\nbuild\ndev\netc\nnix\nproc\ntmp\n\
         {INPUT}\n\
         {INPUT}\n\
         1\n\
         \x20lo\n\
         root:x:0:0:Nix build user:/build:/noshell\n\
         nixbld:x:1000:100:Nix build user:/build:/noshell\n\
         nobody:x:65534:65534:Nobody:/:/noshell\n\
         root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n\
         127.0.0.1 localhost\n::1 localhost\n\
         fd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n"
    );
    // `ls /proc` itself runs as some pid: drop that line.
    let lines: Vec<&str> = out.lines().collect();
    let mut kept: Vec<&str> = Vec::new();
    let mut in_proc = false;
    for l in &lines {
        if *l == "1" {
            in_proc = true;
            kept.push(l);
            continue;
        }
        if in_proc && l.parse::<u32>().is_ok() {
            assert!(l.parse::<u32>().unwrap() < 20, "host process {l} visible");
            continue;
        }
        in_proc = false;
        kept.push(l);
    }
    assert_eq!(kept.join("\n") + "\n", expected);
    // The output and the build directory's files are where the host expects them.
    let ns = f.namespaces(true);
    assert_eq!(
        std::fs::read_to_string(f.out_location(&ns)).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.build_dir().join("b")).unwrap(),
        "build\n"
    );
}

#[tokio::test]
async fn only_fixed_output_builds_reach_the_host_network() {
    if !require_namespaces() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"hello from the host\n").unwrap();
    });
    let script = format!("busybox nc 127.0.0.1 {port} > $out; echo \"nc $?\"; busybox cat $out");

    let pure = Fake::new();
    let (out, status) = run(&supervisors(), &pure.spec(&script, true)).await;
    exited_0(status, &out);
    assert!(out.starts_with("nc: can't connect"), "{out}");
    assert!(out.contains("nc 1\n"), "{out}");
    assert!(!server.is_finished(), "the pure build reached the host");

    let fixed = Fake::new();
    let (out, status) = run(&supervisors(), &fixed.spec(&script, false)).await;
    exited_0(status, &out);
    assert_eq!(out, "nc 0\nhello from the host\n");
    server.join().unwrap();
}

#[tokio::test]
async fn a_builder_reads_nothing_but_its_inputs() {
    if !require_namespaces() {
        return;
    }
    let f = Fake::new();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let secret_host = f.root().join("store").join(SECRET).join("file");
    let script = format!(
        "for p in /etc/shadow {home} /nix/store/{SECRET}/file {secret} /usr/bin /root; do \
           if busybox cat $p >/dev/null 2>&1 || busybox ls $p >/dev/null 2>&1; then \
             echo \"read $p\"; fi; \
         done; busybox cat /nix/store/{INPUT}/file; echo",
        secret = secret_host.display()
    );
    let (out, status) = run(&supervisors(), &f.spec(&script, true)).await;
    exited_0(status, &out);
    assert_eq!(out, format!("{INPUT}\n"));
}

#[tokio::test]
async fn a_builder_writes_only_its_output_and_build_directory() {
    if !require_namespaces() {
        return;
    }
    let f = Fake::new();
    let busybox_before = std::fs::metadata("/bin/busybox").unwrap();
    let input_file = f.root().join("store").join(INPUT).join("file");
    let script = format!(
        "for p in /nix/store/{INPUT}/file /nix/store/{INPUT}/new /bin/sh /bin/busybox \
                  /etc/passwd /newfile /dev/newfile /proc/sys/kernel/hostname /usr/x; do \
           if echo x >> $p; then echo \"wrote $p\"; fi; \
         done 2>/dev/null; \
         busybox chmod 777 /nix/store/{INPUT}/file /bin/busybox /dev/null 2>/dev/null && \
           echo chmod; \
         busybox mkdir /nix/store/{INPUT}/d 2>/dev/null && echo mkdir; \
         busybox mount -t tmpfs none /tmp 2>/dev/null && echo mounted; \
         echo ok > $out; echo ok > /build/f; echo ok > /tmp/f; echo done"
    );
    let (out, status) = run(&supervisors(), &f.spec(&script, true)).await;
    exited_0(status, &out);
    assert_eq!(out, "done\n");
    assert_eq!(std::fs::read_to_string(&input_file).unwrap(), INPUT);
    let busybox_after = std::fs::metadata("/bin/busybox").unwrap();
    assert_eq!(busybox_before.len(), busybox_after.len());
    assert_eq!(
        busybox_before.permissions().mode(),
        busybox_after.permissions().mode()
    );
    assert_eq!(
        std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o777,
        0o666
    );
}

#[tokio::test]
async fn nothing_a_builder_starts_outlives_it() {
    if !require_namespaces() {
        return;
    }
    let f = Fake::new();
    // A child, a daemon in its own session, an orphan re-parented to the builder.
    let script = "busybox sh -c 'echo > /build/a; exec busybox sleep 4711' & \
                  busybox setsid busybox sh -c 'echo > /build/b; exec busybox sleep 4711' \
                    </dev/null >/dev/null 2>&1 & \
                  busybox sh -c '(busybox sh -c \"echo > /build/c; exec busybox sleep 4711\" &)'; \
                  while ! [ -e /build/a -a -e /build/b -a -e /build/c ]; do :; done; \
                  echo started";
    let (out, status) = run(&supervisors(), &f.spec(script, true)).await;
    exited_0(status, &out);
    assert_eq!(out, "started\n");
    assert_eq!(processes_with_arg("4711"), Vec::<i32>::new());
}

#[tokio::test]
async fn setuid_and_setgid_files_are_refused() {
    if !require_namespaces() {
        return;
    }
    let f = Fake::new();
    let script = "busybox touch $out; \
                  busybox chmod 4755 $out || echo suid refused; \
                  busybox chmod 2755 $out || echo sgid refused; \
                  busybox chmod g+s $out || echo g+s refused; \
                  busybox mkdir /build/d; busybox chmod 2775 /build/d || echo dir refused; \
                  busybox chmod 1755 $out && echo sticky allowed; \
                  busybox chmod 755 $out && echo plain allowed";
    let (out, status) = run(&supervisors(), &f.spec(script, true)).await;
    exited_0(status, &out);
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains("Operation not permitted"))
        .collect();
    assert_eq!(
        lines,
        [
            "suid refused",
            "sgid refused",
            "g+s refused",
            "dir refused",
            "sticky allowed",
            "plain allowed"
        ],
        "{out}"
    );
    let ns = f.namespaces(true);
    let mode = std::fs::metadata(f.out_location(&ns))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[tokio::test]
async fn a_builder_can_neither_see_nor_signal_host_processes() {
    if !require_namespaces() {
        return;
    }
    let mut victim = std::process::Command::new("/bin/busybox")
        .args(["sleep", "1000"])
        .spawn()
        .unwrap();
    let pid = victim.id();
    let me = std::process::id();
    let f = Fake::new();
    let script = format!(
        "busybox kill -9 {pid} 2>/dev/null && echo killed; \
         busybox kill -9 -1 2>/dev/null; \
         [ -e /proc/{pid} ] && echo sees victim; [ -e /proc/{me} ] && echo sees test; \
         busybox ps -o pid,comm | busybox wc -l; echo survived"
    );
    let (out, status) = run(&supervisors(), &f.spec(&script, true)).await;
    // `kill -9 -1` from PID 1 spares itself: the builder survives it.
    exited_0(status, &out);
    // A header, the shell, `ps`, `wc`.
    assert_eq!(out, "4\nsurvived\n");
    assert!(alive(pid as i32), "the host process was killed");
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[tokio::test]
async fn setup_failures_are_reported_not_hung() {
    if !require_namespaces() {
        return;
    }
    let sup = supervisors();
    let f = Fake::new();
    let mut spec = f.spec("echo never", true);
    let ns = spec.namespaces.as_mut().unwrap();
    ns.binds[0].source = PathBuf::from("/no/such/source");
    match sup.start(&spec).await.unwrap() {
        Started::SetupFailed(m) => assert_eq!(
            m,
            "getting attributes of path '/no/such/source': No such file or directory"
        ),
        Started::Running(_) => panic!("started without its sh"),
    }
    // The chroot of the failed attempt is still there: the next one says so.
    let ns = spec.namespaces.as_mut().unwrap();
    ns.binds[0].optional = true;
    let chroot = ns.chroot.clone();
    match sup.start(&spec).await.unwrap() {
        Started::SetupFailed(m) => assert_eq!(
            m,
            format!("cannot create '{}': File exists", chroot.display())
        ),
        Started::Running(_) => panic!("started in a used chroot"),
    }
    // The same supervisor goes on serving.
    std::fs::remove_dir_all(&chroot).unwrap();
    let (out, status) = run(&sup, &spec).await;
    exited_0(status, &out);
    assert_eq!(out, "never\n");
}

#[tokio::test]
async fn an_ordinary_user_gets_the_same_sandbox() {
    if !require_namespaces() {
        return;
    }
    if !nix::unistd::getuid().is_root() {
        eprintln!("(already an ordinary user: the other tests cover it)");
        return;
    }
    // The supervisor runs as `nobody`, through setpriv.
    let f = Fake::new();
    let wrapper = f.root().join("as-nobody");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {} \"$@\"\n",
            env!("CARGO_BIN_EXE_drover")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in [f.root(), f.root().join("store"), f.build_dir()] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let mut spec = f.spec(
        "busybox id; busybox cat /proc/self/uid_map /proc/self/gid_map; busybox hostname; \
         busybox cat /nix/store/*-input/file; echo; echo mine > $out",
        true,
    );
    let ns = spec.namespaces.as_mut().unwrap();
    ns.uid.outside = 65534;
    ns.gid.outside = 65534;
    ns.protect_proc = false;
    let (out, status) = run(&Supervisors::new(wrapper), &spec).await;
    exited_0(status, &out);
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        squeeze(&out),
        format!(
            "uid=1000(nixbld) gid=100(nixbld) 1000 65534 1 100 65534 1 \
             localhost {INPUT}"
        )
    );
    let meta = std::fs::metadata(f.out_location(&f.namespaces(true))).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        65534,
        "the output belongs to the user"
    );
    let _ = OUT;
}

/// Whether a process has exited but not been reaped yet.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn a_sandboxed_build_dies_with_its_supervisor() {
    if !require_namespaces() {
        return;
    }
    let f = Fake::new();
    let sup = supervisors();
    let spec = f.spec(
        "busybox sleep 5813 & echo go; exec busybox sleep 5813",
        true,
    );
    let Started::Running(mut b) = sup.start(&spec).await.unwrap() else {
        panic!("not started");
    };
    let pid = b.pid() as i32;
    let mut buf = [0u8; 64];
    assert_eq!(b.next(&mut buf).await.unwrap(), BuilderEvent::Output(3));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let supervisor: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: killing the supervisor this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    assert!(b.next(&mut buf).await.is_err(), "the supervisor is gone");
    let mut waited = 0u64;
    while processes_with_arg("5813")
        .into_iter()
        .any(|p| alive(p) && !zombie(p))
    {
        std::thread::yield_now();
        waited += 1;
        assert!(waited < 5_000_000, "the build survived its supervisor");
    }
}
