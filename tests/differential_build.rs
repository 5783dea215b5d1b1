//! `drover build` against real Nix 2.8 on the same derivations: each workload is
//! instantiated by `nix-instantiate`, built by `nix-store --realise` into a fresh store, and
//! then (after wiping it) by drover into a fresh store at the same place, so both stores
//! share their logical store dir and build directory. Every valid path's NAR hash, size,
//! references, deriver and content address must be equal, the same derivations must fail
//! with the same messages, and both must exit with the same status.
//!
//! Workloads come from `scripts/gen_dag.py` (chain, wide, random with directory outputs,
//! multiple outputs, fixed outputs flat and recursive with sha1/sha256/sha512, a wrong
//! fixed-output hash, failing nodes with and without keep-going) and from small expressions
//! whose builders copy what they see (environment, passAsFile, exportReferencesGraph,
//! structured attributes) into their outputs. Builders are `/bin/busybox`.

mod common;
mod sandbox_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where one test's stores live (the same for the Nix and the drover run).
struct Place {
    base: PathBuf,
    /// Holds the workload files, kept across both runs.
    work: tempfile::TempDir,
    /// A chroot store (`--store <base>/root`: logical `/nix/store`) rather than one whose
    /// files are at their logical paths.
    chroot: bool,
}

/// What one engine did.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stderr: String,
    /// Valid non-derivation paths: path → (narHash, narSize, references, deriver, ca).
    paths: BTreeMap<String, Value>,
    /// `error: …` messages (first line of each).
    errors: BTreeSet<String>,
    /// The "these N derivations will be built:" block.
    will_build: Vec<String>,
    /// Build logs: file under the log directory → decompressed contents.
    logs: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Nix,
    Drover,
}

impl Place {
    fn new(name: &str) -> Place {
        let base = std::env::temp_dir().join(format!("drover-diff-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        Place {
            base,
            work: tempfile::tempdir().unwrap(),
            chroot: false,
        }
    }

    fn chroot_store(name: &str) -> Place {
        let mut p = Place::new(name);
        p.chroot = true;
        p
    }

    fn uri(&self) -> String {
        if self.chroot {
            return self.base.join("root").display().to_string();
        }
        format!(
            "local?store={0}/store&state={0}/state&log={0}/log",
            self.base.display()
        )
    }

    fn generate(&self, file: &str, args: &[&str]) -> PathBuf {
        let out = self.work.path().join(file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen_dag.py");
        let st = Command::new("python3")
            .arg(script)
            .args(args)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        out
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.work.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn fresh(&self) {
        let _ = std::fs::remove_dir_all(&self.base);
        std::fs::create_dir_all(self.base.join("tmp")).unwrap();
        std::fs::create_dir_all(self.base.join("conf")).unwrap();
    }

    fn instantiate(&self, nix: &Path, attrs: &[&str]) -> Vec<String> {
        let mut cmd = Command::new("nix-instantiate");
        cmd.arg("--store").arg(self.uri()).arg(nix);
        for a in attrs {
            cmd.arg("-A").arg(a);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Builds `attrs` of `nix` (or its default) in a fresh store with `engine`.
    fn run(&self, engine: Engine, nix: &Path, attrs: &[&str], flags: &[&str]) -> Outcome {
        self.fresh();
        self.run_again(engine, nix, attrs, flags)
    }

    /// Builds in the store as it is (for `--check` after a first build).
    fn run_again(&self, engine: Engine, nix: &Path, attrs: &[&str], flags: &[&str]) -> Outcome {
        let drvs = self.instantiate(nix, attrs);
        let mut cmd = match engine {
            Engine::Nix => {
                let mut c = common::nix_command("nix-store");
                c.arg("--store")
                    .arg(self.uri())
                    .arg("--realise")
                    .args(["--option", "sandbox", "false"]);
                c
            }
            Engine::Drover => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
                c.arg("build")
                    .arg("--store")
                    .arg(self.uri())
                    .arg("--no-out-link")
                    .args(["--option", "substituters", ""])
                    .env("XDG_CONFIG_HOME", self.base.join("conf"))
                    .env("NIX_CONF_DIR", self.base.join("conf"));
                c
            }
        };
        cmd.args(["--option", "cores", "2"])
            .args(flags)
            .args(&drvs)
            .env("TMPDIR", self.base.join("tmp"))
            .env("IMPURE_VAR", "impure value");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            paths: self.path_infos(),
            logs: self.logs(),
            will_build: stderr
                .lines()
                .skip_while(|l| !l.ends_with("will be built:"))
                .take_while(|l| l.ends_with("will be built:") || l.starts_with("  "))
                .map(str::to_owned)
                .collect(),
            errors: stderr
                .lines()
                .filter(|l| l.starts_with("error: "))
                .map(str::to_owned)
                .collect(),
            stderr,
        }
    }

    /// Every build log, decompressed, by its file name under `<log>/drvs`.
    fn logs(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let log = if self.chroot {
            "root/nix/var/log/nix/drvs"
        } else {
            "log/drvs"
        };
        let Ok(dirs) = std::fs::read_dir(self.base.join(log)) else {
            return out;
        };
        for d in dirs {
            let d = d.unwrap();
            for f in std::fs::read_dir(d.path()).unwrap() {
                let f = f.unwrap();
                let mut text = Vec::new();
                let file = std::fs::File::open(f.path()).unwrap();
                std::io::Read::read_to_end(&mut bzip2::read::MultiBzDecoder::new(file), &mut text)
                    .unwrap();
                let name = format!(
                    "{}/{}",
                    d.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                out.insert(name, text);
            }
        }
        out
    }

    /// Every valid path but the `.drv` files and sources, as real Nix reads the store.
    fn path_infos(&self) -> BTreeMap<String, Value> {
        let out = common::nix_command("nix")
            .arg("path-info")
            .arg("--store")
            .arg(self.uri())
            .args(["--json", "--all"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        all.into_iter()
            .filter(|i| i["deriver"].is_string())
            .map(|i| {
                let keep = serde_json::json!({
                    "narHash": i["narHash"],
                    "narSize": i["narSize"],
                    "references": i["references"],
                    "deriver": i["deriver"],
                    "ca": i["ca"],
                    "ultimate": i["ultimate"],
                });
                (i["path"].as_str().unwrap().to_owned(), keep)
            })
            .collect()
    }

    /// Builds with both engines and checks they agree; both outcomes.
    fn compare(&self, nix: &Path, attrs: &[&str], flags: &[&str]) -> (Outcome, Outcome) {
        let n = self.run(Engine::Nix, nix, attrs, flags);
        let d = self.run(Engine::Drover, nix, attrs, flags);
        assert_same(&n, &d);
        (n, d)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn assert_same(n: &Outcome, d: &Outcome) {
    assert_eq!(
        n.code, d.code,
        "exit status: nix\n{}\ndrover\n{}",
        n.stderr, d.stderr
    );
    let (np, dp): (BTreeSet<_>, BTreeSet<_>) = (n.paths.keys().collect(), d.paths.keys().collect());
    assert_eq!(
        np.difference(&dp).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "valid only after Nix; drover said:\n{}",
        d.stderr
    );
    assert_eq!(
        dp.difference(&np).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "valid only after drover"
    );
    for (p, info) in &n.paths {
        assert_eq!(info, &d.paths[p], "path info of {p}");
    }
    assert_eq!(
        n.errors, d.errors,
        "error messages: nix\n{}\ndrover\n{}",
        n.stderr, d.stderr
    );
    assert_eq!(n.logs, d.logs, "build logs");
    assert_eq!(n.will_build, d.will_build, "what will be built");
}

#[test]
fn chain_wide_and_random_graphs() {
    if !common::require_nix() {
        return;
    }
    let p = Place::new("shapes");
    for (file, args) in [
        (
            "chain.nix",
            vec!["--shape", "chain", "-n", "15", "--log-lines", "3"],
        ),
        ("wide.nix", vec!["--shape", "wide", "-n", "40"]),
        (
            "random.nix",
            vec![
                "--shape",
                "random",
                "-n",
                "50",
                "--seed",
                "3",
                "--out-dir",
                "--out-size",
                "3000",
            ],
        ),
    ] {
        let nix = p.generate(file, &args);
        let (n, _) = p.compare(&nix, &[], &["-j", "4"]);
        assert_eq!(n.code, 0, "{file}: {}", n.stderr);
        assert!(n.paths.len() > 15, "{file}: {} paths", n.paths.len());
        assert_eq!(n.logs.len(), n.paths.len(), "{file}: one log per build");
        assert_eq!(
            n.will_build.len(),
            n.paths.len() + 1,
            "{file}: {:?}",
            n.will_build
        );
    }
}

#[test]
fn multiple_outputs_fixed_outputs_and_extras() {
    if !common::require_nix() {
        return;
    }
    let p = Place::new("outputs");
    let nix = p.generate(
        "multi.nix",
        &[
            "--shape",
            "random",
            "-n",
            "20",
            "--seed",
            "5",
            "--multi-output",
            "--out-dir",
        ],
    );
    let (n, _) = p.compare(&nix, &[], &["-j", "3"]);
    assert_eq!(n.code, 0, "{}", n.stderr);
    let nix = p.generate(
        "fod.nix",
        &[
            "--shape",
            "random",
            "-n",
            "12",
            "--fod",
            "4",
            "--extras",
            "--out-dir",
        ],
    );
    let (n, _) = p.compare(&nix, &[], &["-j", "2"]);
    assert_eq!(n.code, 0, "{}", n.stderr);
    assert!(n.paths.values().any(|i| {
        i["ca"]
            .as_str()
            .is_some_and(|c| c.starts_with("fixed:r:sha512"))
    }));
    assert!(n.paths.values().any(|i| {
        i["ca"]
            .as_str()
            .is_some_and(|c| c.starts_with("fixed:sha1"))
    }));
}

#[test]
fn a_wrong_fixed_output_hash_exits_102() {
    if !common::require_nix() {
        return;
    }
    let p = Place::new("badfod");
    let nix = p.generate("bad.nix", &["--shape", "wide", "-n", "3", "--bad-fod"]);
    let (n, _) = p.compare(&nix, &[], &["-k"]);
    assert_eq!(n.code, 102, "{}", n.stderr);
    assert!(
        n.stderr
            .contains("hash mismatch in fixed-output derivation")
    );
}

#[test]
fn failing_builds_with_and_without_keep_going() {
    if !common::require_nix() {
        return;
    }
    let p = Place::new("fail");
    let nix = p.generate(
        "fail.nix",
        &[
            "--shape",
            "random",
            "-n",
            "30",
            "--seed",
            "2",
            "--fail",
            "4",
            "--fail",
            "17",
            "--log-lines",
            "15",
        ],
    );
    let (n, _) = p.compare(&nix, &[], &["-k", "-j", "4"]);
    assert_eq!(n.code, 100, "{}", n.stderr);
    // Without keep-going what else gets built before the stop depends on timing; the status
    // and the failing builder agree.
    let nix1 = p.generate("fail1.nix", &["--shape", "chain", "-n", "6", "--fail", "2"]);
    let n = p.run(Engine::Nix, &nix1, &[], &[]);
    let d = p.run(Engine::Drover, &nix1, &[], &[]);
    assert_same(&n, &d);
    assert_eq!(n.code, 100);
}

#[test]
fn check_finds_a_nondeterministic_builder() {
    if !common::require_nix() {
        return;
    }
    check_both_engines("check", &[]);
}

#[test]
fn sandboxed_check_finds_a_nondeterministic_builder() {
    if !common::require_nix() || !sandbox_support::require_namespaces() {
        return;
    }
    check_both_engines("sandboxed-check", SANDBOXED);
}

/// `--check` of a deterministic and a nondeterministic builder (with `flags` throughout):
/// both engines give the same statuses and messages.
fn check_both_engines(name: &str, flags: &[&str]) {
    let with = |extra: &[&'static str]| -> Vec<&str> {
        flags.iter().copied().chain(extra.iter().copied()).collect()
    };
    let p = Place::new(name);
    let nix = p.write(
        "nd.nix",
        r#"{
          nd = derivation { name = "nd"; system = builtins.currentSystem; builder = "/bin/busybox";
                 args = [ "sh" "-c" "busybox cat /proc/sys/kernel/random/uuid > $out" ]; };
          det = derivation { name = "det"; system = builtins.currentSystem; builder = "/bin/busybox";
                 args = [ "sh" "-c" "echo same > $out" ]; };
        }"#,
    );
    let mut results = Vec::new();
    for engine in [Engine::Nix, Engine::Drover] {
        let first = p.run(engine, &nix, &["nd", "det"], &with(&[]));
        assert_eq!(first.code, 0, "{}", first.stderr);
        let det = p.run_again(engine, &nix, &["det"], &with(&["--check"]));
        assert_eq!(det.code, 0, "{engine:?}: {}", det.stderr);
        let nd = p.run_again(engine, &nix, &["nd"], &with(&["--check"]));
        let keep = p.run_again(engine, &nix, &["nd"], &with(&["--check", "-K"]));
        results.push((nd.code, nd.errors, keep.code, keep.errors));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].0, 104);
}

#[test]
fn repeated_and_repaired_builds() {
    if !common::require_nix() {
        return;
    }
    let p = Place::new("repeat");
    let nix = p.write(
        "repeat.nix",
        r#"{
          det = derivation { name = "det"; system = builtins.currentSystem; builder = "/bin/busybox";
                 args = [ "sh" "-c" "echo same > $out" ]; };
          nd = derivation { name = "nd"; system = builtins.currentSystem; builder = "/bin/busybox";
                 args = [ "sh" "-c" "busybox cat /proc/sys/kernel/random/uuid > $out" ]; };
        }"#,
    );
    // Two rounds of a deterministic build register it; a nondeterministic one fails.
    let (n, _) = p.compare(&nix, &["det"], &["--repeat", "1"]);
    assert_eq!(n.code, 0, "{}", n.stderr);
    let n = p.run(Engine::Nix, &nix, &["nd"], &["--repeat", "1"]);
    let d = p.run(Engine::Drover, &nix, &["nd"], &["--repeat", "1"]);
    assert_eq!(
        (n.code, &n.errors),
        (d.code, &d.errors),
        "{}\n{}",
        n.stderr,
        d.stderr
    );
    assert_ne!(n.code, 0);
    // Without enforce-determinism the last round's output is registered and the difference
    // reported (Nix prints it without the `error: ` drover's plain output puts before it).
    let flags = ["--repeat", "1", "--option", "enforce-determinism", "false"];
    let n = p.run(Engine::Nix, &nix, &["nd"], &flags);
    let d = p.run(Engine::Drover, &nix, &["nd"], &flags);
    assert_eq!((n.code, d.code), (0, 0), "{}\n{}", n.stderr, d.stderr);
    assert_eq!(
        n.paths.keys().collect::<Vec<_>>(),
        d.paths.keys().collect::<Vec<_>>()
    );
    let differs = |o: &Outcome| {
        o.stderr
            .lines()
            .filter(|l| l.contains("differs from previous round"))
            .map(|l| l.trim_start_matches("error: ").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(differs(&n), differs(&d));
    assert_eq!(differs(&n).len(), 1);
    // --repair rebuilds an output whose contents were damaged.
    let mut repaired = Vec::new();
    for engine in [Engine::Nix, Engine::Drover] {
        let first = p.run(engine, &nix, &["det"], &[]);
        assert_eq!(first.code, 0);
        let out = first.paths.keys().next().unwrap().clone();
        let real = Path::new(&out);
        let mut perms = std::fs::metadata(real).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(real, perms).unwrap();
        std::fs::write(real, "damaged\n").unwrap();
        let again = p.run_again(engine, &nix, &["det"], &["--repair"]);
        assert_eq!(again.code, 0, "{engine:?}: {}", again.stderr);
        assert_eq!(
            std::fs::read_to_string(real).unwrap(),
            "same\n",
            "{engine:?}"
        );
        repaired.push(again.paths);
    }
    assert_eq!(repaired[0], repaired[1]);
}

/// Builders that copy what they see into their outputs: equal NAR hashes mean Nix and
/// drover gave them the same environment and files, byte for byte.
#[test]
fn builders_see_the_same_environment_and_files() {
    if !common::require_nix() {
        return;
    }
    let p = Place::new("env");
    let nix = p.write(
        "env.nix",
        r#"let
          sys = builtins.currentSystem;
          bb = "/bin/busybox";
          dep = derivation { name = "dep"; system = sys; builder = bb; args = [ "sh" "-c" "echo dep > $out" ]; };
          mid = derivation { name = "mid"; system = sys; builder = bb; args = [ "sh" "-c" "echo ${dep} > $out" ]; };
          copy = ''
            echo dev > $dev
            busybox mkdir -p $out
            busybox env | busybox sort > $out/env
            busybox pwd > $out/pwd
            for f in .attr-* .attrs.json .attrs.sh graph; do [ -e "$f" ] && busybox cp "$f" $out/; done
            busybox ls -A > $out/ls
            true
          '';
        in {
          plain = derivation {
            name = "plain"; system = sys; builder = bb; args = [ "sh" "-c" copy ];
            text = "multi\nline \"quoted\" $dollar"; num = 42; flag = true; off = false; lst = [ "a b" "c" 1 ];
            passAsFile = [ "text" "big" ]; big = "x"; PATH = "/set-by-drv"; HOME = "/h";
            exportReferencesGraph = [ "graph" mid ];
            outputs = [ "out" "dev" ];
          };
          structured = derivation {
            name = "structured"; system = sys; builder = bb; __structuredAttrs = true;
            args = [ "sh" "-c" ("out=$(busybox sed -n 's/.*\"outputs\":{\"dev\":\"[^\"]*\",\"out\":\"\\([^\"]*\\)\".*/\\1/p' .attrs.json); dev=$(busybox sed -n 's/.*\"outputs\":{\"dev\":\"\\([^\"]*\\)\".*/\\1/p' .attrs.json); " + copy) ];
            outputs = [ "out" "dev" ];
            text = "it's \"structured\"\n"; num = 7; float = 1.5; big = 100000000000; neg = -3;
            flag = true; nul = null; lst = [ "a" 2 true ]; set = { x = "y"; n = 1; }; nested = { a = [ 1 ]; };
            exportReferencesGraph = { graph = [ mid ]; };
            "bad-name" = 1;
          };
          fixed = derivation {
            name = "fixed"; system = sys; builder = bb;
            args = [ "sh" "-c" "echo \"$IMPURE_VAR|$UNSET_VAR|$NIX_OUTPUT_CHECKED\"; echo fixed > $out" ];
            impureEnvVars = [ "IMPURE_VAR" "UNSET_VAR" ];
            outputHashMode = "flat"; outputHashAlgo = "sha256";
            outputHash = builtins.hashString "sha256" "fixed\n";
          };
        }"#,
    );
    let (n, d) = p.compare(&nix, &["plain", "structured", "fixed"], &["-j", "1"]);
    assert_eq!(n.code, 0, "{}", n.stderr);
    assert!(n.stderr.contains("impure value||1") && d.stderr.contains("impure value||1"));
    // The outputs hold what was compared (drover's store is still there).
    let listing = |suffix: &str| {
        let dir = std::fs::read_dir(p.base.join("store"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|e| e.to_string_lossy().ends_with(suffix))
            .unwrap();
        std::fs::read_to_string(dir.join("ls")).unwrap()
    };
    let plain = listing("-plain");
    assert_eq!(
        plain.lines().filter(|l| l.starts_with(".attr-")).count(),
        2,
        "{plain}"
    );
    assert!(plain.contains("graph\n"), "{plain}");
    let structured = listing("-structured");
    assert!(
        structured.contains(".attrs.json\n.attrs.sh\n"),
        "{structured}"
    );
}

/// Both engines sandboxed (`sandbox = true`, `/bin/sh` and `/bin/busybox` bound from the host).
const SANDBOXED: &[&str] = &[
    "--option",
    "sandbox",
    "true",
    "--option",
    "sandbox-paths",
    "/bin/sh=/bin/busybox /bin/busybox",
];

fn with_sandbox(flags: &[&'static str]) -> Vec<&'static str> {
    SANDBOXED.iter().chain(flags).copied().collect()
}

#[test]
fn sandboxed_graphs_match_nix_sandboxed() {
    if !common::require_nix() || !sandbox_support::require_namespaces() {
        return;
    }
    let p = Place::new("sandboxed");
    let nix = p.generate(
        "random.nix",
        &[
            "--shape",
            "random",
            "-n",
            "25",
            "--seed",
            "7",
            "--out-dir",
            "--fod",
            "3",
            "--extras",
            "--multi-output",
        ],
    );
    let (n, d) = p.compare(&nix, &[], &with_sandbox(&["-j", "4"]));
    assert_eq!(n.code, 0, "{}", n.stderr);
    assert!(n.paths.len() > 25, "{} paths", n.paths.len());
    assert!(!d.stderr.contains("warning"), "{}", d.stderr);
    let fail = p.generate(
        "fail.nix",
        &[
            "--shape", "random", "-n", "12", "--seed", "4", "--fail", "5",
        ],
    );
    let (n, _) = p.compare(&fail, &[], &with_sandbox(&["-k", "-j", "2"]));
    assert_eq!(n.code, 100, "{}", n.stderr);
    let bad = p.generate("bad.nix", &["--shape", "wide", "-n", "2", "--bad-fod"]);
    let (n, _) = p.compare(&bad, &[], &with_sandbox(&["-k"]));
    assert_eq!(n.code, 102, "{}", n.stderr);
}

/// Builders that write down what they see of the sandbox: equal NAR hashes mean the same
/// users, names, directories, files, devices and network, byte for byte.
#[test]
fn sandboxed_builders_see_what_nix_s_see() {
    if !common::require_nix() || !sandbox_support::require_namespaces() {
        return;
    }
    let p = Place::new("sandbox-view");
    let nix = p.write(
        "view.nix",
        r#"let
          sys = builtins.currentSystem;
          bb = "/bin/busybox";
          dep = derivation { name = "dep"; system = sys; builder = bb; args = [ "sh" "-c" "mkdir $out; echo dep > $out/f" ]; };
          look = ''
            {
            echo "pid $$"; id; hostname; cat /proc/sys/kernel/domainname; pwd
            env | sort
            ls / /dev /etc $NIX_STORE /build /tmp
            stat -c '%n %a %U %G' / /tmp /build $NIX_STORE /etc/passwd /dev/null /dev/shm /dev/pts
            cat /etc/passwd /etc/group /etc/hosts /proc/self/uid_map /proc/self/gid_map
            ip -o addr | cut -d' ' -f2-4
            cat ${dep}/f
            n=0; for p in /proc/[0-9]*; do n=$((n + 1)); done; echo "$n processes"
            echo ok > /tmp/t && cat /tmp/t
            cat /etc/shadow /nix/store/x 2>/dev/null || echo hidden
            } > $out 2>&1
          '';
        in {
          view = derivation { name = "view"; system = sys; builder = bb; args = [ "sh" "-c" look ]; };
        }"#,
    );
    let (n, d) = p.compare(&nix, &["view"], &with_sandbox(&[]));
    assert_eq!(n.code, 0, "{}", n.stderr);
    let view = std::fs::read_dir(p.base.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|e| e.to_string_lossy().ends_with("-view"))
        .unwrap();
    let text = std::fs::read_to_string(view).unwrap();
    for want in [
        "pid 1\n",
        "uid=1000(nixbld) gid=100(nixbld)\nlocalhost\n(none)\n/build\n",
        "NIX_BUILD_TOP=/build\n",
        // Only the builder's shell lives in its PID namespace (counted without forking: a
        // pipeline's processes would race with the count).
        "\n1 processes\n",
        "\nhidden\n",
    ] {
        assert!(
            text.contains(want),
            "{want:?} not in:\n{text}\n{}",
            d.stderr
        );
    }
}

/// A chroot store (logical `/nix/store`, files elsewhere) builds through the sandbox with
/// both engines, though `sandbox` is false.
#[test]
fn chroot_stores_build_like_nix_s() {
    if !common::require_nix() || !sandbox_support::require_namespaces() {
        return;
    }
    let p = Place::chroot_store("chroot");
    let nix = p.generate(
        "random.nix",
        &[
            "--shape",
            "random",
            "-n",
            "15",
            "--seed",
            "9",
            "--out-dir",
            "--fod",
            "2",
            "--extras",
        ],
    );
    let (n, _) = p.compare(
        &nix,
        &[],
        &[
            "-j",
            "3",
            "--option",
            "sandbox-paths",
            "/bin/sh=/bin/busybox /bin/busybox",
        ],
    );
    assert_eq!(n.code, 0, "{}", n.stderr);
    assert!(n.paths.keys().all(|k| k.starts_with("/nix/store/")));
    assert!(n.paths.len() > 15, "{} paths", n.paths.len());
}
