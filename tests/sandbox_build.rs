//! `drover build` with the sandbox: builds see their input closure and nothing else of the
//! store, only fixed-output builds reach the network, `__noChroot` follows the mode, a chroot
//! store builds through the sandbox, setup failures end the build with Nix's message, where
//! the kernel refuses namespaces builds fall back with a warning (or fail when
//! `sandbox-fallback` is false), and nothing of a sandbox is left behind.

mod build_support;
mod sandbox_support;

use std::io::Write;
use std::net::TcpListener;

use build_support::TestStore;
use drover::engine::format::derivation::{FixedOutputHash, NewOutputs};
use drover::engine::format::hash::sha256;
use drover::engine::format::{IngestionMethod, StorePath};
use sandbox_support::require_namespaces;

const SANDBOX: [&str; 6] = [
    "--option",
    "sandbox",
    "true",
    "--option",
    "sandbox-paths",
    "/bin/sh=/bin/busybox /bin/busybox",
];

fn args(t: &TestStore, drv: &StorePath, extra: &[&str]) -> Vec<String> {
    let mut v = vec![t.print(drv), "--no-out-link".to_owned()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn build(t: &TestStore, drv: &StorePath, extra: &[&str]) -> build_support::Run {
    let a = args(t, drv, extra);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    t.build(&refs)
}

/// Nothing of a sandbox is left in the store's directory or the build directory.
fn assert_no_leftovers(t: &TestStore) {
    let real = &t.store.config().real_store_dir;
    let chroots: Vec<_> = std::fs::read_dir(real)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".chroot"))
        .collect();
    assert_eq!(chroots, Vec::<String>::new());
    assert_eq!(t.build_dirs(), Vec::<String>::new());
}

#[test]
fn a_sandboxed_build_sees_its_closure_and_nothing_else() {
    if !require_namespaces() {
        return;
    }
    let mut t = TestStore::new();
    let other = t.drv("other", &["out"], "echo other > $out", &[], &[]);
    assert_eq!(build(&t, &other, &[]).code, 0);
    let dep = t.drv("dep", &["out"], "mkdir $out; echo dep > $out/f", &[], &[]);
    let dep_out = t.out_str(&dep, "out");
    let other_out = t.out_str(&other, "out");
    let top = t.drv(
        "top",
        &["out"],
        "{ busybox cat $dep/f; busybox ls $NIX_STORE; \
           busybox cat $other 2>/dev/null || echo no-other; \
           busybox pwd; busybox hostname; busybox id -u; } > $out",
        &[(&dep, "out")],
        &[("dep", &dep_out), ("other", &other_out)],
    );
    let r = build(&t, &top, &SANDBOX);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let top_out = t.out(&top, "out");
    let mut listing = [t.out(&dep, "out").to_string(), top_out.to_string()];
    listing.sort();
    assert_eq!(
        t.read(&top_out),
        format!(
            "dep\n{}\nno-other\n/build\nlocalhost\n1000\n",
            listing.join("\n")
        )
    );
    assert_no_leftovers(&t);
}

#[test]
fn only_fixed_output_builds_reach_the_host_network() {
    if !require_namespaces() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("busybox nc 127.0.0.1 {port} > $out");
    let mut t = TestStore::new();
    let pure = t.drv("pure", &["out"], &script, &[], &[]);
    let r = build(&t, &pure, &SANDBOX);
    assert_eq!(r.code, 100, "{}", r.stderr);
    assert!(r.stderr.contains("pure> nc: can't connect"), "{}", r.stderr);
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the pure build reached the host"
    );
    listener.set_nonblocking(false).unwrap();

    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"hello from the host\n").unwrap();
    });
    let fixed = t.write_drv(
        "fixed",
        NewOutputs::Fixed(FixedOutputHash {
            method: IngestionMethod::Flat,
            hash: sha256(b"hello from the host\n"),
        }),
        &script,
        &[],
        &[],
    );
    let r = build(&t, &fixed, &SANDBOX);
    assert_eq!(r.code, 0, "{}", r.stderr);
    server.join().unwrap();
    assert_eq!(t.read(&t.out(&fixed, "out")), "hello from the host\n");
    assert_no_leftovers(&t);
}

#[test]
fn no_chroot_is_refused_when_strict_and_unsandboxed_when_relaxed() {
    if !require_namespaces() {
        return;
    }
    let mut t = TestStore::new();
    let drv = t.drv(
        "nochroot",
        &["out"],
        "busybox pwd > $out",
        &[],
        &[("__noChroot", "1")],
    );
    let r = build(&t, &drv, &SANDBOX);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: derivation '{}' has '__noChroot' set, but that's not allowed when 'sandbox' \
             is 'true'",
            t.print(&drv)
        )),
        "{}",
        r.stderr
    );
    let mut relaxed = SANDBOX;
    relaxed[2] = "relaxed";
    let r = build(&t, &drv, &relaxed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pwd = t.read(&t.out(&drv, "out"));
    assert!(
        pwd.starts_with(&t.tmp().join("nix-build-").display().to_string()),
        "{pwd}"
    );
}

#[test]
fn a_chroot_store_builds_through_the_sandbox() {
    if !require_namespaces() {
        return;
    }
    let mut t = TestStore::chroot();
    assert_eq!(t.store.store_dir().as_str(), "/nix/store");
    let dep = t.drv("dep", &["out"], "mkdir $out; echo dep > $out/f", &[], &[]);
    let dep_out = t.out_str(&dep, "out");
    let top = t.drv(
        "top",
        &["out"],
        "{ busybox cat $dep/f; echo $NIX_STORE; } > $out",
        &[(&dep, "out")],
        &[("dep", &dep_out)],
    );
    // The sandbox is forced, though the setting says no.
    let r = build(
        &t,
        &top,
        &[
            "--option",
            "sandbox-paths",
            "/bin/sh=/bin/busybox /bin/busybox",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = t.out(&top, "out");
    assert_eq!(t.read(&out), "dep\n/nix/store\n");
    assert!(
        t.root()
            .join("root/nix/store")
            .join(out.to_string())
            .exists()
    );
    assert_no_leftovers(&t);
}

#[test]
fn setup_failures_and_failed_builds() {
    if !require_namespaces() {
        return;
    }
    let mut t = TestStore::new();
    let drv = t.drv("partial", &["out"], "echo partial > $out; exit 3", &[], &[]);
    let r = build(
        &t,
        &drv,
        &[
            "--option",
            "sandbox",
            "true",
            "--option",
            "sandbox-paths",
            "/bin/sh=/bin/busybox /bin/busybox /no/such/dir",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "error: while setting up the build environment: getting attributes of path \
             '/no/such/dir': No such file or directory"
        ),
        "{}",
        r.stderr
    );
    assert_no_leftovers(&t);
    // A failed build's output is moved out of the sandbox for inspection, as Nix does.
    let r = build(&t, &drv, &SANDBOX);
    assert_eq!(r.code, 100, "{}", r.stderr);
    let out = t.out(&drv, "out");
    assert!(!t.is_valid(&out));
    assert_eq!(t.read(&out), "partial\n");
    assert_no_leftovers(&t);
}

/// Runs `drover build` where the kernel refuses new user namespaces: in a user namespace
/// (through `unshare`) whose `user.max_user_namespaces` is 0.
fn build_without_namespaces(t: &TestStore, drv: &StorePath, extra: &[&str]) -> build_support::Run {
    let root = t.root();
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_drover"))
        .args(["build", "--store", &t.uri])
        .args(t.offline())
        .args(args(t, drv, extra))
        .current_dir(&root)
        .env_clear()
        .env("TMPDIR", root.join("tmp"))
        .env("HOME", root.join("home"))
        .env("XDG_CONFIG_HOME", root.join("conf"))
        .env("NIX_CONF_DIR", root.join("conf"))
        .output()
        .unwrap();
    build_support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn where_namespaces_are_refused_builds_fall_back_or_fail() {
    if !require_namespaces() {
        return;
    }
    let mut t = TestStore::new();
    let drv = t.drv("fallback", &["out"], "busybox pwd > $out", &[], &[]);
    let r = build_without_namespaces(&t, &drv, &SANDBOX);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "warning: the sandbox is not available (cloning a process into new namespaces: No \
             space left on device); building '{}' without it, as 'sandbox-fallback' is true",
            t.print(&drv)
        )),
        "{}",
        r.stderr
    );
    let pwd = t.read(&t.out(&drv, "out"));
    assert!(pwd.starts_with(&t.tmp().display().to_string()), "{pwd}");

    let strict = t.drv("strict", &["out"], "busybox pwd > $out", &[], &[]);
    let mut no_fallback = SANDBOX.to_vec();
    no_fallback.extend(["--option", "sandbox-fallback", "false"]);
    let r = build_without_namespaces(&t, &strict, &no_fallback);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: cannot build '{}' in the sandbox: this kernel refuses its namespaces \
             (cloning a process into new namespaces: No space left on device), and \
             'sandbox-fallback' is false",
            t.print(&strict)
        )),
        "{}",
        r.stderr
    );
    assert!(!t.is_valid(&t.out(&strict, "out")));
    assert_no_leftovers(&t);
}

#[test]
fn check_mode_rebuilds_in_the_sandbox() {
    if !require_namespaces() {
        return;
    }
    let mut t = TestStore::new();
    let det = t.drv("det", &["out"], "echo same > $out", &[], &[]);
    let nd = t.drv(
        "nd",
        &["out"],
        "busybox cat /proc/sys/kernel/random/uuid > $out",
        &[],
        &[],
    );
    for d in [&det, &nd] {
        assert_eq!(build(&t, d, &SANDBOX).code, 0);
    }
    let mut check = SANDBOX.to_vec();
    check.push("--check");
    let r = build(&t, &det, &check);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = build(&t, &nd, &check);
    assert_eq!(r.code, 104, "{}", r.stderr);
    assert!(
        r.stderr.contains("may not be deterministic"),
        "{}",
        r.stderr
    );
    assert!(t.is_valid(&t.out(&nd, "out")));
    assert_no_leftovers(&t);
}
