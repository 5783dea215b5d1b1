//! Output registration against real Nix 2.8. Real Nix builds a set of derivations into a
//! relocated store (`local?store=T/store&state=T/nix&log=T/log`, unsandboxed); then its
//! outputs are deleted and the same builders run again, with the outputs registered by
//! `engine::build::register` into a second database over the same store directory. Paths,
//! NAR hashes and sizes, references, content addresses and derivers must be equal, and
//! rejected builds must fail with Nix's messages.
//!
//! The builders run here directly (`/bin/busybox sh -c …` with the derivation's
//! environment): building is not what is under test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use drover::engine::api::BuildMode;
use drover::engine::build::register::{
    BuiltOutput, RegisterRequest, Registered, Rejection, fallback_path, input_rewrites,
    prepare_outputs, register_outputs,
};
use drover::engine::format::hash::hash_bytes;
use drover::engine::format::nar::NarNode;
use drover::engine::format::{HashAlgo, StoreDir, StorePath};
use drover::engine::store::{ClosureFlags, LocalStore, StoreConfig};

const NIX_OPTS: [&str; 9] = [
    "--option",
    "substituters",
    "",
    "--option",
    "build-users-group",
    "",
    "--option",
    "sandbox",
    "false",
];

/// A relocated store shared by real Nix (database in `nix/`) and drover (in `drover/`).
struct Stores {
    dir: tempfile::TempDir,
}

impl Stores {
    fn new() -> Stores {
        Stores {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn nix_uri(&self) -> String {
        let d = self.dir.path().display();
        format!("local?store={d}/store&state={d}/nix&log={d}/log")
    }

    fn drover(&self) -> LocalStore {
        let store_dir = self.store_dir();
        LocalStore::open(StoreConfig {
            store_dir: StoreDir::new(store_dir.to_str().unwrap()).unwrap(),
            real_store_dir: store_dir,
            state_dir: self.dir.path().join("drover"),
            log_dir: self.dir.path().join("drover-log"),
        })
        .unwrap()
    }

    fn write_expr(&self, expr: &str) -> PathBuf {
        let file = self.dir.path().join("default.nix");
        std::fs::write(&file, expr).unwrap();
        file
    }

    /// `nix-instantiate -A attr`: the `.drv` path.
    fn instantiate(&self, file: &Path, attr: &str) -> String {
        let out = Command::new("nix-instantiate")
            .args(["--store", &self.nix_uri()])
            .args(NIX_OPTS)
            .arg(file)
            .args(["-A", attr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nix-instantiate -A {attr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `nix-store --realise` with extra arguments: exit code and the error message, its
    /// continuation lines unindented as Nix indents them under `error: `.
    fn realise(&self, drv: &str, extra: &[&str]) -> (i32, Option<String>) {
        let out = Command::new("nix-store")
            .args(["--store", &self.nix_uri()])
            .args(NIX_OPTS)
            .args(["--realise", drv])
            .args(extra)
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let error = stderr
            .find("error: ")
            .map(|i| stderr[i + 7..].trim_end().replace("\n       ", "\n"));
        (out.status.code().unwrap_or(-1), error)
    }

    /// Real Nix's `nix path-info --json` of valid paths, by path.
    fn nix_infos(&self, paths: &[String]) -> BTreeMap<String, serde_json::Value> {
        let out = Command::new("nix")
            .args(["--extra-experimental-features", "nix-command"])
            .args(["--store", &self.nix_uri()])
            .args(NIX_OPTS)
            .args(["path-info", "--json"])
            .args(paths)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nix path-info: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.into_iter()
            .map(|v| (v["path"].as_str().unwrap().to_owned(), v))
            .collect()
    }

    /// `nix-store -q --outputs`.
    fn outputs(&self, drv: &str) -> Vec<String> {
        let out = Command::new("nix-store")
            .args(["--store", &self.nix_uri()])
            .args(NIX_OPTS)
            .args(["-q", "--outputs", drv])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The stderr of the builder of the last `realise`, as Nix showed it, is not kept; the
    /// build log is (uncompressed here).
    fn nix_log(&self, drv: &str) -> String {
        let out = Command::new("nix-store")
            .args(["--store", &self.nix_uri()])
            .args(NIX_OPTS)
            .args(["--read-log", drv])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Deletes a file system object, read-only directories included.
fn remove(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(path).unwrap() {
            remove(&e.unwrap().path());
        }
        std::fs::remove_dir(path).unwrap();
    } else {
        std::fs::remove_file(path).unwrap();
    }
}

/// Runs a derivation's builder as an unsandboxed Nix build would, and registers its
/// outputs with drover.
/// How a test build registers: keep-failed, and the round (1 of 1 by default).
#[derive(Default, Clone, Copy)]
struct Opts<'p> {
    keep_failed: bool,
    round: u32,
    nr_rounds: u32,
    previous: Option<&'p Registered>,
}

fn drover_build(
    store: &LocalStore,
    drv_path: &StorePath,
    opts: Opts<'_>,
    mode: BuildMode,
) -> (Result<Registered, Rejection>, Vec<BuiltOutput>, String) {
    let drv = store.read_derivation(drv_path).unwrap();
    let outputs = prepare_outputs(store, drv_path, &drv, mode).unwrap();
    let rewrites = input_rewrites(&outputs);
    let rewrite = |s: &str| {
        rewrites
            .iter()
            .fold(s.to_owned(), |acc, (from, to)| acc.replace(from, to))
    };
    let build_dir = tempfile::tempdir().unwrap();
    if drv.env_var("__json").is_some() {
        // What a builder of a derivation with structured attributes reads its outputs from.
        let outs: serde_json::Map<String, serde_json::Value> = outputs
            .iter()
            .map(|o| (o.name.clone(), store.print(&o.scratch).into()))
            .collect();
        let attrs = serde_json::json!({ "outputs": outs });
        std::fs::write(build_dir.path().join(".attrs.json"), attrs.to_string()).unwrap();
    }
    let mut cmd = Command::new(rewrite(&String::from_utf8_lossy(&drv.builder)));
    cmd.args(
        drv.args
            .iter()
            .map(|a| rewrite(&String::from_utf8_lossy(a))),
    )
    .env_clear()
    .envs(drv.env.iter().map(|(k, v)| {
        (
            String::from_utf8_lossy(k).into_owned(),
            rewrite(&String::from_utf8_lossy(v)),
        )
    }))
    .env("PATH", "/path-not-set")
    .env("HOME", "/homeless-shelter")
    .env("NIX_STORE", store.store_dir().as_str())
    .env("NIX_BUILD_TOP", build_dir.path())
    .env("TMPDIR", build_dir.path())
    .current_dir(build_dir.path())
    .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "builder of {drv_path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut inputs: BTreeSet<StorePath> = drv.input_srcs.clone();
    for (input, wanted) in &drv.input_drvs {
        let outs = store.derivation_output_paths(input).unwrap();
        inputs.extend(wanted.iter().map(|o| outs[o].clone()));
    }
    let closure = store
        .compute_fs_closure(inputs, ClosureFlags::default())
        .unwrap();
    let mut req = RegisterRequest::new(drv_path, &drv, outputs.clone(), &closure);
    req.mode = mode;
    req.keep_failed = opts.keep_failed;
    req.round = opts.round.max(1);
    req.nr_rounds = opts.nr_rounds.max(1);
    req.previous_round = opts.previous;
    let result = register_outputs(store, req);
    (
        result,
        outputs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file_nar_hash(contents: &[u8], algo: HashAlgo) -> String {
    NarNode::file(contents.to_vec())
        .nar_hash(algo)
        .0
        .to_base16()
}

fn tree() -> NarNode {
    NarNode::directory([
        ("a", NarNode::file(b"a\n".to_vec())),
        ("l", NarNode::symlink(b"a".to_vec())),
        ("x", NarNode::executable(b"#!x\n".to_vec())),
    ])
}

const TREE_SCRIPT: &str =
    "mkdir $out; echo a > $out/a; ln -s a $out/l; echo '#!x' > $out/x; chmod +x $out/x";

fn expression() -> String {
    let mut fixed = String::new();
    for algo in HashAlgo::ALL {
        let flat = hash_bytes(algo, b"fixed\n").to_base16();
        let rec = tree().nar_hash(algo).0.to_base16();
        let n = algo.name();
        fixed.push_str(&format!(
            "  fo-flat-{n} = mk {{ name = \"fo-flat-{n}\"; args = sh \"echo fixed > $out\"; \
             outputHashMode = \"flat\"; outputHashAlgo = \"{n}\"; outputHash = \"{flat}\"; }};\n\
             \x20 fo-rec-{n} = mk {{ name = \"fo-rec-{n}\"; args = sh \"{TREE_SCRIPT}\"; \
             outputHashMode = \"recursive\"; outputHashAlgo = \"{n}\"; outputHash = \"{rec}\"; }};\n"
        ));
    }
    let wrong_flat = file_nar_hash(b"wrong", HashAlgo::Sha256);
    let wrong_sha1 = hash_bytes(HashAlgo::Sha1, b"wrong").to_base16();
    format!(
        r#"let
  sh = script: ["sh" "-c" script];
  mk = attrs: derivation ({{ system = builtins.currentSystem; builder = "/bin/busybox"; }} // attrs);
  # Structured attributes: the builder finds its output in .attrs.json.
  smk = name: script: checks: mk {{
    inherit name; __structuredAttrs = true; outputChecks = checks;
    args = sh (''o=$(sed -n 's/.*"outputs":{{"out":"\([^"]*\)".*/\1/p' .attrs.json); '' + script);
  }};
in rec {{
  dep = mk {{ name = "dep"; args = sh "echo dep > $out"; }};
  dep2 = mk {{ name = "dep2"; args = sh "echo ${{dep}} > $out"; }};
  multi = mk {{ name = "multi"; outputs = ["out" "dev" "lib"]; args = sh ''
    mkdir -p $out/bin $lib
    echo "self $out lib $lib dep ${{dep2}}" > $out/bin/tool
    chmod +x $out/bin/tool
    ln -s tool $out/bin/link
    ln -s $lib/data $out/data
    echo lib > $lib/data
    echo "include $out" > $dev
  ''; }};
  consumer = mk {{ name = "consumer"; args = sh "echo ${{multi.dev}} > $out"; }};
  fo-mismatch = mk {{ name = "fo-mismatch"; args = sh "echo fixed > $out";
    outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = "{wrong_flat}"; }};
  fo-mismatch-sha1 = mk {{ name = "fo-mismatch-sha1"; args = sh "echo fixed > $out";
    outputHashMode = "flat"; outputHashAlgo = "sha1"; outputHash = "{wrong_sha1}"; }};
{fixed}
  allowed = mk {{ name = "allowed"; args = sh "echo ${{dep}} $out > $out"; allowedReferences = []; }};
  allowed-names = mk {{ name = "allowed-names"; outputs = ["out" "dev"];
    args = sh "echo ${{dep}} $out > $out; echo $out > $dev"; allowedReferences = ["dev"]; }};
  allowed-ok = mk {{ name = "allowed-ok"; outputs = ["out" "dev"];
    args = sh "echo ${{dep}} $out > $out; echo $out > $dev"; allowedReferences = ["out" dep]; }};
  disallowed = mk {{ name = "disallowed"; args = sh "echo ${{dep2}} > $out"; disallowedReferences = [dep2]; }};
  requisites = mk {{ name = "requisites"; args = sh "echo ${{dep2}} $out > $out"; allowedRequisites = [dep2]; }};
  requisites-ok = mk {{ name = "requisites-ok"; args = sh "echo ${{dep2}} $out > $out"; allowedRequisites = [dep2 dep]; }};
  disallowed-req = mk {{ name = "disallowed-req"; args = sh "echo ${{dep2}} > $out"; disallowedRequisites = [dep]; }};
  bad-spec = mk {{ name = "bad-spec"; args = sh "echo > $out"; allowedReferences = ["bin"]; }};
  cycle = mk {{ name = "cycle"; outputs = ["out" "dev"]; args = sh "echo $dev > $out; echo $out > $dev"; }};
  missing = mk {{ name = "missing"; outputs = ["out" "dev"]; args = sh "echo > $out"; }};
  perm = mk {{ name = "perm"; args = sh "echo > $out; chmod 664 $out"; }};
  fo-exe = mk {{ name = "fo-exe"; args = sh "echo > $out; chmod 755 $out";
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{wrong_flat}"; }};
  random = mk {{ name = "random"; args = sh "echo scratch=$out >&2; cat /proc/sys/kernel/random/uuid > $out"; }};
  random-k = mk {{ name = "random-k"; args = sh "cat /proc/sys/kernel/random/uuid > $out"; }};
  repeat = mk {{ name = "repeat"; args = sh "cat /proc/sys/kernel/random/uuid > $out"; }};
  repeat-k = mk {{ name = "repeat-k"; args = sh "cat /proc/sys/kernel/random/uuid > $out"; }};
  s-size = smk "s-size" "echo ${{dep}} > $o" {{ out = {{ maxSize = 10; }}; }};
  s-closure = smk "s-closure" "echo ${{dep2}} > $o" {{ out = {{ maxSize = 1000; maxClosureSize = 300; }}; }};
  s-closure-ok = smk "s-closure-ok" "echo ${{dep2}} > $o" {{ out = {{ maxClosureSize = 100000; }}; }};
  s-allowed = smk "s-allowed" "echo ${{dep}} > $o" {{ out = {{ allowedReferences = []; }}; }};
  s-string = smk "s-string" "echo ${{dep}} > $o" {{ out = {{ allowedReferences = "${{dep}}"; }}; }};
  s-self = smk "s-self" "echo $o > $o" {{ out = {{ allowedRequisites = []; }}; }};
  s-other = smk "s-other" "echo ${{dep}} > $o" {{ dev = {{ allowedReferences = []; }}; }};
  s-not-strings = smk "s-not-strings" "echo > $o" {{ out = {{ disallowedReferences = [1]; }}; }};
  repeat-ok = mk {{ name = "repeat-ok"; outputs = ["out" "dev"]; args = sh "echo $dev > $out; echo dev > $dev"; }};
}}
"#
    )
}

struct Setup {
    stores: Stores,
    drvs: BTreeMap<String, String>,
}

fn setup(attrs: &[&str]) -> Setup {
    // Builders create files as Nix's children do.
    unsafe { libc::umask(0o022) };
    let stores = Stores::new();
    let file = stores.write_expr(&expression());
    let drvs = attrs
        .iter()
        .map(|a| (a.to_string(), stores.instantiate(&file, a)))
        .collect();
    Setup { stores, drvs }
}

fn compare_info(nix: &serde_json::Value, store: &LocalStore, path: &str) {
    let p = store.parse(path).unwrap();
    let ours = store
        .path_info(&p)
        .unwrap_or_else(|e| panic!("drover did not register {path}: {e}"));
    assert_eq!(
        nix["narHash"].as_str().unwrap(),
        ours.nar_hash.to_sri(),
        "{path}"
    );
    assert_eq!(nix["narSize"].as_u64().unwrap(), ours.nar_size, "{path}");
    let nix_refs: BTreeSet<String> = nix["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let our_refs: BTreeSet<String> = ours.references.iter().map(|r| store.print(r)).collect();
    assert_eq!(nix_refs, our_refs, "{path}");
    assert_eq!(
        nix.get("ca").and_then(|c| c.as_str()).map(str::to_owned),
        ours.ca.map(|c| c.to_string()),
        "{path}"
    );
    assert_eq!(
        nix["deriver"].as_str().map(str::to_owned),
        ours.deriver.map(|d| store.print(&d)),
        "{path}"
    );
    assert_eq!(nix["ultimate"].as_bool(), Some(ours.ultimate), "{path}");
}

#[test]
fn registered_outputs_equal_real_nix() {
    if !common::require_nix() {
        return;
    }
    let mut attrs = vec![
        "dep",
        "dep2",
        "multi",
        "consumer",
        "fo-mismatch",
        "fo-mismatch-sha1",
    ];
    let fixed: Vec<String> = HashAlgo::ALL
        .iter()
        .flat_map(|a| {
            [
                format!("fo-flat-{}", a.name()),
                format!("fo-rec-{}", a.name()),
            ]
        })
        .collect();
    attrs.extend(fixed.iter().map(String::as_str));
    let s = setup(&attrs);

    // Real Nix builds everything (the mismatches fail with 102 but register their paths).
    let mut nix_exit = BTreeMap::new();
    let mut nix_errors = BTreeMap::new();
    for a in &attrs {
        let (code, err) = s.stores.realise(&s.drvs[*a], &[]);
        nix_exit.insert(*a, code);
        nix_errors.insert(*a, err);
    }
    assert_eq!(nix_exit["fo-mismatch"], 102);
    assert_eq!(nix_exit["multi"], 0);
    let built: Vec<String> = std::fs::read_dir(s.stores.store_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            !n.ends_with(".drv") && !n.ends_with(".lock") && !n.starts_with('.')
        })
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let nix_infos = s.stores.nix_infos(&built);
    assert_eq!(
        nix_infos.len(),
        built.len(),
        "every output Nix left is valid"
    );
    assert!(built.len() >= attrs.len() + 2);
    for p in &built {
        remove(Path::new(p));
    }

    // drover runs the same builders and registers.
    let store = s.stores.drover();
    for a in &attrs {
        let drv = store.parse(&s.drvs[*a]).unwrap();
        let (result, _, _) = drover_build(&store, &drv, Opts::default(), BuildMode::Normal);
        match (nix_exit[*a], result) {
            (0, Ok(_)) => {}
            (
                102,
                Err(Rejection::OutputRejected {
                    message,
                    hash_mismatch: true,
                }),
            ) => assert_eq!(Some(message), nix_errors[*a].clone(), "{a}"),
            (code, other) => panic!("{a}: Nix exited {code}, drover: {other:?}"),
        }
    }
    let ours = store.query_all_valid_paths().unwrap();
    let ours: BTreeSet<String> = ours.iter().map(|p| store.print(p)).collect();
    assert_eq!(
        ours,
        built.iter().cloned().collect(),
        "the same paths are valid"
    );
    for (path, info) in &nix_infos {
        compare_info(info, &store, path);
    }
}

#[test]
fn rejections_have_real_nix_messages() {
    if !common::require_nix() {
        return;
    }
    let attrs = [
        "dep",
        "dep2",
        "allowed",
        "allowed-names",
        "allowed-ok",
        "disallowed",
        "requisites",
        "requisites-ok",
        "disallowed-req",
        "bad-spec",
        "cycle",
        "missing",
        "perm",
        "fo-exe",
    ];
    let s = setup(&attrs);
    let mut nix = BTreeMap::new();
    for a in attrs {
        nix.insert(a, s.stores.realise(&s.drvs[a], &[]));
    }
    // drover builds everything again, the inputs first.
    for e in std::fs::read_dir(s.stores.store_dir()).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".drv") {
            remove(&p);
        }
    }
    let store = s.stores.drover();
    let mut rejected = 0;
    for a in attrs {
        let drv = store.parse(&s.drvs[a]).unwrap();
        let (result, outputs, _) = drover_build(&store, &drv, Opts::default(), BuildMode::Normal);
        let (code, nix_error) = &nix[a];
        match result {
            Ok(_) => assert_eq!(*code, 0, "{a}: Nix failed with {nix_error:?}"),
            Err(e) => {
                rejected += 1;
                assert_eq!(*code, 1, "{a}");
                assert!(matches!(e, Rejection::OutputRejected { .. }), "{a}: {e:?}");
                assert_eq!(Some(e.to_string()), *nix_error, "{a}");
                for o in &outputs {
                    assert!(!store.is_valid(&o.path).unwrap(), "{a}: {} valid", o.path);
                }
            }
        }
    }
    assert_eq!(rejected, attrs.len() - 4);
}

#[test]
fn structured_output_checks_as_real_nix() {
    if !common::require_nix() {
        return;
    }
    let attrs = [
        "dep",
        "dep2",
        "s-size",
        "s-closure",
        "s-closure-ok",
        "s-allowed",
        "s-string",
        "s-self",
        "s-other",
        "s-not-strings",
    ];
    let s = setup(&attrs);
    let nix: BTreeMap<&str, (i32, Option<String>)> = attrs
        .iter()
        .map(|a| (*a, s.stores.realise(&s.drvs[*a], &[])))
        .collect();
    for e in std::fs::read_dir(s.stores.store_dir()).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".drv") {
            remove(&p);
        }
    }
    let store = s.stores.drover();
    let mut failures = 0;
    for a in attrs {
        let drv = store.parse(&s.drvs[a]).unwrap();
        let (result, _, _) = drover_build(&store, &drv, Opts::default(), BuildMode::Normal);
        let (code, nix_error) = &nix[a];
        match result {
            Ok(_) => assert_eq!(*code, 0, "{a}: Nix failed with {nix_error:?}"),
            Err(e) => {
                failures += 1;
                assert_eq!(*code, 1, "{a}");
                assert_eq!(Some(e.to_string()), *nix_error, "{a}");
            }
        }
    }
    assert_eq!(failures, 5);
}

#[test]
fn check_and_repeat_report_as_real_nix() {
    if !common::require_nix() {
        return;
    }
    let attrs = ["random", "random-k", "repeat", "repeat-k", "repeat-ok"];
    let s = setup(&attrs);
    let st = &s.stores;
    let nix_check = |a: &str, extra: &[&str]| {
        let (code, err) = st.realise(&s.drvs[a], extra);
        (code, err.unwrap_or_default())
    };
    // Nix: build, then check (once plain, once keeping the differing output).
    for a in ["random", "random-k"] {
        assert_eq!(st.realise(&s.drvs[a], &[]).0, 0);
    }
    let (code, nix_plain) = nix_check("random", &["--check"]);
    assert_eq!(code, 104);
    let nix_scratch = st
        .nix_log(&s.drvs["random"])
        .lines()
        .find_map(|l| l.strip_prefix("scratch=").map(str::to_owned))
        .unwrap();
    let (code, nix_kept) = nix_check("random-k", &["--check", "--keep-failed"]);
    assert_eq!(code, 104);
    let (_, nix_repeat) = nix_check("repeat", &["--option", "repeat", "1"]);
    let (_, nix_repeat_k) = nix_check("repeat-k", &["--option", "repeat", "1", "--keep-failed"]);
    let (code, _) = nix_check("repeat-ok", &["--option", "repeat", "2"]);
    assert_eq!(code, 0);
    let nix_repeat_ok = st.nix_infos(&st.outputs(&s.drvs["repeat-ok"]));
    assert_eq!(nix_repeat_ok.len(), 2);
    for e in std::fs::read_dir(st.store_dir()).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".drv") {
            remove(&p);
        }
    }

    let store = st.drover();
    let drv = |a: &str| store.parse(&s.drvs[a]).unwrap();
    // The scratch path of a check build is Nix's.
    let random = drv("random");
    drover_build(&store, &random, Opts::default(), BuildMode::Normal)
        .0
        .unwrap();
    let (result, outputs, _) = drover_build(&store, &random, Opts::default(), BuildMode::Check);
    let out = &outputs[0];
    assert_eq!(store.print(&out.scratch), nix_scratch);
    assert_eq!(
        out.scratch,
        fallback_path(store.store_dir(), &random, &out.path)
    );
    match result {
        Err(Rejection::NotDeterministic { message }) => assert_eq!(message, nix_plain),
        other => panic!("{other:?}"),
    }
    let random_k = drv("random-k");
    drover_build(&store, &random_k, Opts::default(), BuildMode::Normal)
        .0
        .unwrap();
    match drover_build(
        &store,
        &random_k,
        Opts {
            keep_failed: true,
            ..Opts::default()
        },
        BuildMode::Check,
    )
    .0
    {
        Err(Rejection::NotDeterministic { message }) => assert_eq!(message, nix_kept),
        other => panic!("{other:?}"),
    }

    // --repeat 1: two rounds.
    for (a, keep, nix_msg) in [
        ("repeat", false, &nix_repeat),
        ("repeat-k", true, &nix_repeat_k),
    ] {
        let d = drv(a);
        let opts = |round, previous| Opts {
            keep_failed: keep,
            round,
            nr_rounds: 2,
            previous,
        };
        let first = drover_build(&store, &d, opts(1, None), BuildMode::Normal)
            .0
            .unwrap();
        match drover_build(&store, &d, opts(2, Some(&first)), BuildMode::Normal).0 {
            Err(Rejection::RoundDiffers { message }) => assert_eq!(&message, nix_msg, "{a}"),
            other => panic!("{a}: {other:?}"),
        }
    }

    // --repeat 2 of a deterministic two-output build: registered after round 3 as Nix.
    let d = drv("repeat-ok");
    let mut prev: Option<Registered> = None;
    for round in 1..=3 {
        let opts = Opts {
            round,
            nr_rounds: 3,
            previous: prev.as_ref(),
            ..Opts::default()
        };
        let reg = drover_build(&store, &d, opts, BuildMode::Normal).0.unwrap();
        let valid = store.query_all_valid_paths().unwrap();
        assert_eq!(
            valid.iter().any(|v| v.name().starts_with("repeat-ok")),
            round == 3
        );
        prev = Some(reg);
    }
    for (path, info) in &nix_repeat_ok {
        compare_info(info, &store, path);
    }
}

#[test]
fn a_lost_output_is_rebuilt_as_real_nix_does() {
    if !common::require_nix() {
        return;
    }
    let attrs = ["dep", "dep2", "multi"];
    let s = setup(&attrs);
    let st = &s.stores;
    for a in attrs {
        assert_eq!(st.realise(&s.drvs[a], &[]).0, 0, "{a}");
    }
    let outputs = st.outputs(&s.drvs["multi"]);
    let dev = outputs
        .iter()
        .find(|o| o.ends_with("-dev"))
        .unwrap()
        .clone();
    let deleted = Command::new("nix-store")
        .args(["--store", &st.nix_uri()])
        .args(NIX_OPTS)
        .args(["--delete", &dev])
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    // Rebuilt with `out` and `lib` valid: they are redirected, and `dev`, which refers to
    // `out`, has the scratch hash rewritten.
    assert_eq!(st.realise(&s.drvs["multi"], &[]).0, 0);
    let nix_infos = st.nix_infos(&outputs);
    for e in std::fs::read_dir(st.store_dir()).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".drv") {
            remove(&p);
        }
    }

    let store = st.drover();
    for a in attrs {
        let drv = store.parse(&s.drvs[a]).unwrap();
        drover_build(&store, &drv, Opts::default(), BuildMode::Normal)
            .0
            .unwrap();
    }
    store.delete_path(&store.parse(&dev).unwrap()).unwrap();
    let multi = store.parse(&s.drvs["multi"]).unwrap();
    let (result, built, _) = drover_build(&store, &multi, Opts::default(), BuildMode::Normal);
    let registered = result.unwrap();
    assert_eq!(registered.outputs.keys().collect::<Vec<_>>(), ["dev"]);
    let redirected: Vec<&BuiltOutput> = built.iter().filter(|o| o.scratch != o.path).collect();
    assert_eq!(redirected.len(), 2);
    for o in redirected {
        assert!(!o.location.exists(), "{} left behind", o.location.display());
    }
    for (path, info) in &nix_infos {
        compare_info(info, &store, path);
    }
}
