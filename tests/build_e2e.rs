//! `drover build` end to end in temporary stores: what a builder sees, what failures say,
//! limits that kill whole builds, build directories, out-links, check mode and keep-going.

mod build_support;

use std::collections::BTreeMap;

use build_support::{TestStore, alive, read_pid};
use drover::engine::format::derivation::{FixedOutputHash, NewOutputs};
use drover::engine::format::hash::sha256;
use drover::engine::format::{HashAlgo, IngestionMethod, StorePath};

fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_builder_environment_is_nix_s() {
    let mut t = TestStore::new();
    let script = "busybox mkdir $out; busybox env > $out/env; busybox cat \"$bigPath\" > $out/big; \
                  busybox pwd > $out/pwd; busybox ls -A > $out/ls; busybox cat > $out/stdin; \
                  umask > $out/umask";
    let drv = t.drv(
        "envtest",
        &["out"],
        script,
        &[],
        &[
            ("greeting", "hello world"),
            ("passAsFile", "big"),
            ("big", "BIG CONTENT"),
            ("PATH", "/overridden"),
            ("TMPDIR", "/not-this"),
            ("TERM", "dumb"),
        ],
    );
    let r = t.build(&[&t.print(&drv), "--cores", "3", "--no-out-link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = t.out(&drv, "out");
    assert_eq!(r.stdout, format!("{}\n", t.print(&out)));
    let dir = t.store.real_path(&out);
    let top = format!("{}/nix-build-{}", t.tmp().display(), drv.name()) + "-0";
    let attr_file = format!(".attr-{}", sha256(b"big").to_base32());
    // The derivation's attributes override the first four (here PATH), not the rest.
    let mut expected: BTreeMap<String, String> = [
        ("PATH", "/overridden"),
        ("HOME", "/homeless-shelter"),
        ("NIX_STORE", t.store.store_dir().as_str()),
        ("NIX_BUILD_CORES", "3"),
        ("NIX_LOG_FD", "2"),
        ("TERM", "xterm-256color"),
        ("builder", "/bin/busybox"),
        ("greeting", "hello world"),
        ("name", "envtest"),
        ("passAsFile", "big"),
        ("system", "x86_64-linux"),
        ("SHLVL", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        expected.insert(k.into(), top.clone());
    }
    expected.insert("out".into(), t.print(&out));
    expected.insert("bigPath".into(), format!("{top}/{attr_file}"));
    let seen = env_lines(&std::fs::read_to_string(dir.join("env")).unwrap());
    assert_eq!(seen, expected);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("big"), "BIG CONTENT");
    assert_eq!(read("pwd"), format!("{top}\n"));
    assert_eq!(read("ls"), format!("{attr_file}\n"));
    assert_eq!(read("stdin"), "");
    assert_eq!(read("umask"), "0022\n");
    // Canonical metadata, and the build directory is gone after a success.
    let meta = std::fs::symlink_metadata(dir.join("env")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o7777, meta.mtime()), (0o444, 1));
    assert!(t.build_dirs().is_empty(), "{:?}", t.build_dirs());
    // Building again finds everything valid.
    let again = t.build(&[&t.print(&drv), "--no-out-link"]);
    assert_eq!((again.code, again.stderr.as_str()), (0, ""));
}

#[test]
fn structured_attributes_and_reference_graphs() {
    let mut t = TestStore::new();
    let dep = t.drv("dep", &["out"], "echo dep > $out", &[], &[]);
    let dep_out = t.out_str(&dep, "out");
    let json = serde_json::json!({
        "builder": "/bin/busybox",
        "system": "x86_64-linux",
        "name": "sa",
        "num": 7,
        "flag": true,
        "list": ["a", "b c"],
        "exportReferencesGraph": { "graph": [dep_out] },
    })
    .to_string();
    let script = "out=$(busybox sed -n 's/.*\"outputs\":{\"out\":\"\\([^\"]*\\)\".*/\\1/p' \
                  .attrs.json); busybox mkdir $out; busybox cp .attrs.json .attrs.sh $out/; \
                  echo \"$NIX_ATTRS_JSON_FILE $NIX_ATTRS_SH_FILE\" > $out/vars";
    let drv = t.drv(
        "sa",
        &["out"],
        script,
        &[(&dep, "out")],
        &[("__json", &json)],
    );
    let r = t.build(&[&t.print(&drv), "--no-out-link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = t.store.real_path(&t.out(&drv, "out"));
    let info = t.store.path_info(&t.out(&dep, "out")).unwrap();
    let top = format!("{}/nix-build-{}-0", t.tmp().display(), drv.name());
    assert_eq!(
        std::fs::read_to_string(dir.join("vars")).unwrap(),
        format!("{top}/.attrs.json {top}/.attrs.sh\n")
    );
    let attrs_json = std::fs::read_to_string(dir.join(".attrs.json")).unwrap();
    assert_eq!(
        attrs_json,
        format!(
            "{{\"builder\":\"/bin/busybox\",\"exportReferencesGraph\":{{\"graph\":[\"{dep_out}\"]}},\
             \"flag\":true,\"graph\":[{{\"closureSize\":{size},\"narHash\":\"{hash}\",\
             \"narSize\":{size},\"path\":\"{dep_out}\",\"references\":[]}}],\
             \"list\":[\"a\",\"b c\"],\"name\":\"sa\",\"num\":7,\"outputs\":{{\"out\":\"{out}\"}},\
             \"system\":\"x86_64-linux\"}}",
            size = info.nar_size,
            hash = info.nar_hash.to_nix32_prefixed(),
            out = t.out_str(&drv, "out"),
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(".attrs.sh")).unwrap(),
        format!(
            "declare builder='/bin/busybox'\ndeclare flag=1\ndeclare -a list=('a' 'b c' )\n\
             declare name='sa'\ndeclare num=7\ndeclare -A outputs=(['out']='{}' )\n\
             declare system='x86_64-linux'\n",
            t.out_str(&drv, "out")
        )
    );
}

#[test]
fn export_references_graph_without_structured_attributes() {
    let mut t = TestStore::new();
    let dep = t.drv("dep", &["out"], "echo dep > $out", &[], &[]);
    let dep_out = t.out_str(&dep, "out");
    let mid = t.drv(
        "mid",
        &["out"],
        &format!("echo {dep_out} > $out"),
        &[(&dep, "out")],
        &[],
    );
    let mid_out = t.out_str(&mid, "out");
    let drv = t.drv(
        "graph",
        &["out"],
        "busybox cp refs $out",
        &[(&mid, "out")],
        &[("exportReferencesGraph", &format!("refs {mid_out}"))],
    );
    let r = t.build(&[&t.print(&drv), "--no-out-link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut expected = [(dep_out.clone(), vec![]), (mid_out.clone(), vec![dep_out])];
    expected.sort();
    let text: String = expected
        .iter()
        .map(|(p, refs)| {
            let mut s = format!("{p}\n\n{}\n", refs.len());
            for r in refs {
                s.push_str(&format!("{r}\n"));
            }
            s
        })
        .collect();
    assert_eq!(t.read(&t.out(&drv, "out")), text);
}

#[test]
fn fixed_output_builds_see_their_impure_variables() {
    let mut t = TestStore::new();
    let hash = FixedOutputHash {
        method: IngestionMethod::Flat,
        hash: sha256(b"fixed\n"),
    };
    assert_eq!(hash.hash.algo(), HashAlgo::Sha256);
    let drv = t.write_drv(
        "fod",
        NewOutputs::Fixed(hash),
        "echo \"impure=$MY_IMPURE unset=[$NOT_SET] checked=$NIX_OUTPUT_CHECKED\"; echo fixed > $out",
        &[],
        &[("impureEnvVars", "MY_IMPURE NOT_SET")],
    );
    let r = t.build_in(
        &t.root(),
        &[&t.print(&drv), "--no-out-link"],
        &[("MY_IMPURE", "from-the-caller")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("fod> impure=from-the-caller unset=[] checked=1\n"),
        "{}",
        r.stderr
    );
    assert!(t.is_valid(&t.out(&drv, "out")));
}

#[test]
fn a_failing_builder_is_reported_as_nix_does_and_its_log_kept() {
    let mut t = TestStore::new();
    let drv = t.drv(
        "fails",
        &["out"],
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done; \
         echo '@nix {\"action\":\"setPhase\",\"phase\":\"buildPhase\"}'; exit 3",
        &[],
        &[],
    );
    let p = t.print(&drv);
    let r = t.build(&[&p, "--no-out-link"]);
    assert_eq!(r.code, 100, "{}", r.stderr);
    // As nix-build words it: the log lines were shown as they came, so no tail.
    let expected = format!("fails> line 12\nerror: builder for '{p}' failed with exit code 3\n");
    assert!(r.stderr.ends_with(&expected), "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "this derivation will be built:\n  {p}\nbuilding '{p}'...\nfails> line 1\n"
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("setPhase"), "{}", r.stderr);
    assert!(t.build_dirs().is_empty(), "{:?}", t.build_dirs());
    // The whole log (raw, the phase message included) is in the store's log directory.
    let log = String::from_utf8(t.store.read_log(&drv).unwrap().unwrap()).unwrap();
    assert!(
        log.starts_with("line 1\nline 2\n") && log.contains("setPhase"),
        "{log}"
    );
    // A builder killed by a signal.
    let sig = t.drv("sig", &["out"], "kill -9 $$", &[], &[]);
    let r = t.build(&[&t.print(&sig), "--no-out-link"]);
    assert_eq!(r.code, 100);
    assert!(
        r.stderr.contains(&format!(
            "error: builder for '{}' failed due to signal 9 (Killed)",
            t.print(&sig)
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn keep_failed_keeps_the_build_directory_and_says_where() {
    let mut t = TestStore::new();
    let drv = t.drv("kept", &["out"], "echo data > file; exit 1", &[], &[]);
    let r = t.build(&[&t.print(&drv), "-K", "--no-out-link"]);
    assert_eq!(r.code, 100);
    let dir = t.tmp().join(format!("nix-build-{}-0", drv.name()));
    assert!(
        r.stderr.contains(&format!(
            "note: keeping build directory '{}'\n",
            dir.display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "data\n");
    // The next build of it takes the next free name.
    let r = t.build(&[&t.print(&drv), "--keep-failed", "--no-out-link"]);
    assert!(r.stderr.contains(&format!("nix-build-{}-1'", drv.name())));
    assert_eq!(t.build_dirs().len(), 2);
}

fn assert_dead(t: &TestStore, files: &[&str]) {
    for f in files {
        let pid = read_pid(&t.root().join(f));
        assert!(!alive(pid), "{f}: process {pid} still runs");
    }
}

#[test]
fn timeout_kills_the_builder_and_its_children() {
    let mut t = TestStore::new();
    let root = t.root().display().to_string();
    let script = format!(
        "busybox sleep 1000 & echo $! > {root}/child.pid; \
         busybox setsid busybox sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {root}/detached.pid; \
         echo $$ > {root}/builder.pid; echo started; busybox sleep 1000"
    );
    let drv = t.drv("slow", &["out"], &script, &[], &[]);
    let r = t.build(&[&t.print(&drv), "--timeout", "1", "--no-out-link"]);
    assert_eq!(r.code, 101, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: building of '{}' timed out after 1 seconds",
            t.print(&drv)
        )),
        "{}",
        r.stderr
    );
    assert_dead(&t, &["child.pid", "detached.pid", "builder.pid"]);
    assert!(t.build_dirs().is_empty(), "{:?}", t.build_dirs());
}

#[test]
fn max_silent_time_kills_a_silent_builder() {
    let mut t = TestStore::new();
    let root = t.root().display().to_string();
    let script = format!(
        "echo $$ > {root}/builder.pid; busybox sleep 1000 & echo $! > {root}/child.pid; \
         echo talking; wait"
    );
    let drv = t.drv("silent", &["out"], &script, &[], &[]);
    let r = t.build(&[&t.print(&drv), "--max-silent-time", "1", "--no-out-link"]);
    assert_eq!(r.code, 101, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: building of '{}' timed out after 1 seconds of silence",
            t.print(&drv)
        )),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("silent> talking\n"));
    assert_dead(&t, &["child.pid", "builder.pid"]);
}

#[test]
fn a_daemon_forked_by_a_builder_does_not_survive_the_build() {
    let mut t = TestStore::new();
    let root = t.root().display().to_string();
    let script = format!(
        "busybox setsid busybox sh -c 'echo $$ > {root}/daemon.pid; exec busybox sleep 1000' \
         </dev/null >/dev/null 2>&1 & \
         while [ ! -s {root}/daemon.pid ]; do :; done; echo ok > $out"
    );
    let drv = t.drv("daemon", &["out"], &script, &[], &[]);
    let r = t.build(&[&t.print(&drv), "--no-out-link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_dead(&t, &["daemon.pid"]);
}

#[test]
fn max_log_size_stops_a_chatty_builder() {
    let mut t = TestStore::new();
    let drv = t.drv(
        "chatty",
        &["out"],
        "busybox yes | busybox head -n 100000; busybox sleep 1000",
        &[],
        &[],
    );
    let r = t.build(&[
        &t.print(&drv),
        "--option",
        "max-build-log-size",
        "1000",
        "--no-out-link",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: building of '{}' killed after writing more than 1000 bytes of log output",
            t.print(&drv)
        )),
        "{}",
        r.stderr
    );
    // A builder that never ends a line is stopped too.
    let endless = t.drv(
        "endless",
        &["out"],
        "busybox yes | busybox tr -d '\\n'",
        &[],
        &[],
    );
    let r = t.build(&[
        &t.print(&endless),
        "--option",
        "max-build-log-size",
        "1000",
        "--no-out-link",
    ]);
    assert_eq!(r.code, 1, "{}", &r.stderr[..r.stderr.len().min(2000)]);
    assert!(
        r.stderr
            .contains("killed after writing more than 1000 bytes of log output")
    );
}

#[test]
fn out_links_are_named_like_nix_build_s_and_are_gc_roots() {
    let mut t = TestStore::new();
    let a = t.drv(
        "a",
        &["out", "man"],
        "echo a > $out; echo m > $man",
        &[],
        &[],
    );
    let b = t.drv(
        "b",
        &["out", "dev"],
        "echo b > $out; echo d > $dev",
        &[],
        &[],
    );
    let r = t.build(&[&t.print(&a), &format!("{}^dev", t.print(&b))]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let root = t.root();
    let link = |name: &str| std::fs::read_link(root.join(name)).unwrap();
    assert_eq!(link("result").to_str().unwrap(), t.out_str(&a, "out"));
    assert_eq!(link("result-man").to_str().unwrap(), t.out_str(&a, "man"));
    assert_eq!(link("result-2-dev").to_str().unwrap(), t.out_str(&b, "dev"));
    assert!(!root.join("result-2").exists());
    assert_eq!(
        r.stdout,
        format!(
            "{}\n{}\n{}\n",
            t.out_str(&a, "man"),
            t.out_str(&a, "out"),
            t.out_str(&b, "dev")
        )
    );
    // Each link is an indirect root: <state>/gcroots/auto/<name> points at it.
    let auto = root.join("state/gcroots/auto");
    let mut roots: Vec<_> = std::fs::read_dir(&auto)
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    roots.sort();
    assert_eq!(
        roots,
        vec![
            root.join("result"),
            root.join("result-2-dev"),
            root.join("result-man")
        ]
    );
    // -o names the prefix.
    let r = t.build(&[&t.print(&a), "-o", "other"]);
    assert_eq!(r.code, 0);
    assert_eq!(link("other").to_str().unwrap(), t.out_str(&a, "out"));
}

#[test]
fn check_mode_finds_a_nondeterministic_builder() {
    let mut t = TestStore::new();
    let nd = t.drv(
        "nd",
        &["out"],
        "busybox cat /proc/sys/kernel/random/uuid > $out",
        &[],
        &[],
    );
    let det = t.drv("det", &["out"], "echo same > $out", &[], &[]);
    let p = t.print(&nd);
    assert_eq!(t.build(&[&p, &t.print(&det), "--no-out-link"]).code, 0);
    let r = t.build(&[&t.print(&det), "--check", "--no-out-link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = t.build(&[&p, "--check", "--no-out-link"]);
    assert_eq!(r.code, 104, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: derivation '{p}' may not be deterministic: output '{}' differs\n",
            t.out_str(&nd, "out")
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn keep_going_builds_what_it_can() {
    let mut t = TestStore::new();
    let bad = t.drv("bad", &["out"], "exit 1", &[], &[]);
    let good = t.drv("good", &["out"], "echo good > $out", &[], &[]);
    let top = t.drv(
        "top",
        &["out"],
        "echo top > $out",
        &[(&bad, "out"), (&good, "out")],
        &[],
    );
    let r = t.build(&[&t.print(&top), "-k", "-j", "1", "--no-out-link"]);
    assert_eq!(r.code, 100, "{}", r.stderr);
    assert!(t.is_valid(&t.out(&good, "out")));
    assert!(!t.is_valid(&t.out(&top, "out")));
    assert!(
        r.stderr.contains(&format!(
            "error: 1 dependencies of derivation '{}' failed to build",
            t.print(&top)
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn cached_failures_fail_at_once() {
    let mut t = TestStore::new();
    let root = t.root().display().to_string();
    let drv = t.drv(
        "flaky",
        &["out"],
        &format!("echo run >> {root}/runs; exit 1"),
        &[],
        &[],
    );
    let args = [
        t.print(&drv),
        "--option".into(),
        "cache-failures".into(),
        "true".into(),
        "--no-out-link".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(t.build(&args).code, 100);
    let r = t.build(&args);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!(
            "builder for '{}' failed previously (cached)",
            t.out_str(&drv, "out")
        )),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(t.root().join("runs")).unwrap(),
        "run\n"
    );
}

#[test]
fn targets_that_are_not_buildable_are_refused() {
    let mut t = TestStore::new();
    let drv = t.drv("x", &["out"], "echo > $out", &[], &[]);
    let r = t.build(&[&format!("{}^nope", t.print(&drv))]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("does not have output 'nope'"),
        "{}",
        r.stderr
    );
    let missing = StorePath::from_base_name("00000000000000000000000000000000-gone.drv").unwrap();
    let r = t.build(&[&t.print(&missing)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("is not valid in the store"),
        "{}",
        r.stderr
    );
}

/// A derivation whose builder starts a long-running child, then writes `child.pid` and
/// `builder.pid` into the test root and waits.
fn long_running_drv(t: &mut TestStore, name: &str) -> StorePath {
    let root = t.root().display().to_string();
    let script = format!(
        "busybox sleep 1000 & echo $! > {root}/child.pid; echo $$ > {root}/builder.pid; wait"
    );
    t.drv(name, &["out"], &script, &[], &[])
}

/// `drover build DRV` with standard error piped, returned once its builder runs.
fn spawn_build_until_the_builder_runs(t: &TestStore, drv: &StorePath) -> std::process::Child {
    let _ = std::fs::remove_file(t.root().join("builder.pid"));
    let _ = std::fs::remove_file(t.root().join("child.pid"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["build", "--store", &t.uri, &t.print(drv), "--no-out-link"])
        .args(t.offline())
        .env_clear()
        .env("TMPDIR", t.tmp())
        .env("NIX_CONF_DIR", t.root().join("conf"))
        .env("XDG_CONFIG_HOME", t.root().join("conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The builder's children are started before it writes its pid.
    let pid_file = t.root().join("builder.pid");
    while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n')) {
        std::thread::yield_now();
    }
    child
}

#[test]
fn an_interrupted_build_kills_its_builders_and_cleans_up() {
    let mut t = TestStore::new();
    let drv = long_running_drv(&mut t, "long");
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let child = spawn_build_until_the_builder_runs(&t, &drv);
        // SAFETY: signalling the drover we started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("error: interrupted by the user"),
            "{stderr}"
        );
        assert_dead(&t, &["child.pid", "builder.pid"]);
        assert!(t.build_dirs().is_empty(), "{:?}", t.build_dirs());
        assert!(!t.is_valid(&t.out(&drv, "out")));
    }
}

#[test]
fn a_failure_on_a_full_disk_says_so() {
    let mut t = TestStore::new();
    // A 1 MiB tmpfs as the build directory (needs the right to mount, as root has).
    let small = t.root().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    let drv = t.drv("full", &["out"], "exit 1", &[], &[]);
    let small_str = small.display().to_string();
    let r = t.build_in(
        &t.root(),
        &[
            &t.print(&drv),
            "--no-out-link",
            "--option",
            "build-dir",
            &small_str,
        ],
        &[],
    );
    let _ = std::process::Command::new("umount").arg(&small).status();
    // A transient failure, not a permanent one: exit status 1, not 100.
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error: builder for '{}' failed with exit code 1\n       note: build failure may \
             have been caused by lack of free disk space\n",
            t.print(&drv)
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn a_build_waits_for_an_output_lock_another_process_holds() {
    use std::io::BufRead;
    let mut t = TestStore::new();
    let drv = t.drv("locked", &["out"], "echo done > $out", &[], &[]);
    let out = t.out(&drv, "out");
    // This test process plays the other Nix holding the output's lock.
    let locks = match t.store.try_lock_paths(std::slice::from_ref(&out)).unwrap() {
        drover::engine::store::TryLock::Acquired(l) => l,
        drover::engine::store::TryLock::Busy { .. } => panic!("lock busy"),
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["build", "--store", &t.uri, &t.print(&drv), "--no-out-link"])
        .args(t.offline())
        .args(["--option", "build-poll-interval", "1"])
        .env_clear()
        .env("TMPDIR", t.tmp())
        .env("NIX_CONF_DIR", t.root().join("conf"))
        .env("XDG_CONFIG_HOME", t.root().join("conf"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut head = String::new();
    for _ in 0..3 {
        stderr.read_line(&mut head).unwrap();
    }
    assert_eq!(
        head,
        format!(
            "this derivation will be built:\n  {}\nwarning: waiting for lock on '{}'\n",
            t.print(&drv),
            t.out_str(&drv, "out")
        )
    );
    assert!(!t.is_valid(&out));
    drop(locks);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(
        rest.contains(&format!("building '{}'...", t.print(&drv))),
        "{rest}"
    );
    assert!(t.is_valid(&out));
}

#[test]
fn settings_come_from_nix_conf_then_drover_conf_then_the_command_line() {
    let mut t = TestStore::new();
    let conf = t.root().join("conf");
    std::fs::write(
        conf.join("nix.conf"),
        "cores = 5\nkeep-failed = true\nno-such-thing = 1\n",
    )
    .unwrap();
    std::fs::create_dir_all(conf.join("drover")).unwrap();
    std::fs::write(conf.join("drover/drover.conf"), "cores = 7\n").unwrap();
    let drv = t.drv(
        "conf",
        &["out"],
        "echo cores=$NIX_BUILD_CORES; exit 1",
        &[],
        &[],
    );
    let r = t.build(&[&t.print(&drv), "--no-out-link"]);
    assert_eq!(r.code, 100);
    assert!(
        r.stderr
            .starts_with("warning: unknown setting 'no-such-thing'\n"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("conf> cores=7\n"), "{}", r.stderr);
    assert!(
        r.stderr.contains("note: keeping build directory"),
        "{}",
        r.stderr
    );
    let r = t.build(&[
        &t.print(&drv),
        "--no-out-link",
        "--option",
        "cores",
        "9",
        "--cores",
        "11",
    ]);
    assert!(r.stderr.contains("conf> cores=11\n"), "{}", r.stderr);
    let r = t.build(&[
        &t.print(&drv),
        "--no-out-link",
        "--option",
        "keep-failed",
        "false",
    ]);
    assert!(
        !r.stderr.contains("note: keeping build directory"),
        "{}",
        r.stderr
    );
}

/// A successful build's duration is remembered under the derivation's name (the TUI's ETAs
/// read it back); a failed one's is not.
#[test]
fn build_durations_are_recorded_for_the_eta() {
    let mut t = TestStore::new();
    let ok = t.drv("timed", &["out"], "echo x > $out", &[], &[]);
    let bad = t.drv("broken", &["out"], "exit 1", &[], &[]);
    let r = t.build(&[&t.print(&ok), "--no-out-link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = t.build(&[&t.print(&bad), "--no-out-link"]);
    assert_eq!(r.code, 100, "{}", r.stderr);
    let db = drover::engine::store::drover_db::DroverDb::open(&t.root().join("state")).unwrap();
    assert!(db.expected_duration("timed").unwrap().is_some());
    assert_eq!(db.expected_duration("broken").unwrap(), None);
}

/// A lost terminal: standard error is gone (writing fails) and SIGHUP comes. drover must
/// still cancel the build, kill its builders and exit (it once panicked writing the
/// "interrupted" message and left the build running forever).
#[test]
fn a_hangup_with_standard_error_gone_still_stops_the_build() {
    let mut t = TestStore::new();
    let drv = long_running_drv(&mut t, "orphaned");
    let mut child = spawn_build_until_the_builder_runs(&t, &drv);
    drop(child.stderr.take());
    // SAFETY: signalling the drover we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("drover did not stop after SIGHUP with its standard error gone");
        }
        std::thread::yield_now();
    };
    assert_eq!(status.code(), Some(1));
    assert_dead(&t, &["child.pid", "builder.pid"]);
    assert!(t.build_dirs().is_empty(), "{:?}", t.build_dirs());
}
