//! `drover build --dry-run` and `drover why` against real Nix 2.8: Nix builds a small
//! workload into a chroot store, copies some outputs to a `file://` cache (`nix copy`), and
//! instantiates the workload into a second, empty chroot store. On that store
//! `nix-store -r --dry-run` and `drover build --dry-run` (the same store, the same cache)
//! print the same listing, byte for byte: derivations to build, paths to fetch with their
//! download and unpacked sizes, paths nobody can make; in internal-json mode the same records.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{nix_command, require_nix};

const WORKLOAD: &str = r#"
let
  sh = script: [ "sh" "-c" script ];
  drv = attrs: derivation ({ system = "x86_64-linux"; builder = "/bin/busybox"; } // attrs);
  dep = drv { name = "dry-dep";
    args = sh "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done > $out"; };
  mid = drv { name = "dry-mid"; args = sh "echo ${dep} > $out"; };
  local = drv { name = "dry-local"; allowSubstitutes = false; args = sh "echo local > $out"; };
  new = drv { name = "dry-new"; args = sh "echo new > $out"; };
in drv { name = "dry-top"; args = sh "echo ${mid} ${local} ${new} > $out"; }
"#;

struct Setup {
    dir: tempfile::TempDir,
    /// The `.drv` of the top derivation.
    top: String,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    fn cache(&self) -> String {
        format!("file://{}", self.path("cache").display())
    }
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Nix builds everything in store `built`, copies dry-mid (with dry-dep) and dry-local to the
/// cache, and instantiates the workload in store `fresh`.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup {
        dir,
        top: String::new(),
    };
    let expr = s.path("w.nix");
    std::fs::write(&expr, WORKLOAD).unwrap();
    ok(
        nix_command("nix-build")
            .args(["--store", &s.store("built"), "--no-out-link"])
            .arg(&expr)
            .output()
            .unwrap(),
        "nix-build",
    );
    let outputs: Vec<String> = std::fs::read_dir(s.path("built/nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with("-dry-mid") || n.ends_with("-dry-local"))
        .map(|n| format!("/nix/store/{n}"))
        .collect();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    ok(
        nix_command("nix")
            .args(["copy", "--store", &s.store("built"), "--to", &s.cache()])
            .args(&outputs)
            .output()
            .unwrap(),
        "nix copy",
    );
    let top = ok(
        nix_command("nix-instantiate")
            .args(["--store", &s.store("fresh")])
            .arg(&expr)
            .output()
            .unwrap(),
        "nix-instantiate",
    );
    Setup {
        top: text(&top.stdout).trim().to_owned(),
        ..s
    }
}

/// `nix-store -r --dry-run` on `store` with the cache (signatures not required: a dry run
/// checks none); its standard error.
fn nix_dry_run(s: &Setup, store: &str, target: &str, extra: &[&str]) -> String {
    let out = Command::new("nix-store")
        .args(["--store", store, "-r", "--dry-run", target])
        .args(["--option", "substituters", &s.cache()])
        .args(["--option", "require-sigs", "false"])
        .args(["--option", "build-users-group", ""])
        .args(extra)
        .output()
        .unwrap();
    text(&ok(out, "nix-store --dry-run").stderr)
}

fn drover_dry_run(s: &Setup, store: &str, target: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["build", "--store", store, "--dry-run", target])
        .args(["--option", "substituters", &s.cache()])
        .args(extra)
        .output()
        .unwrap();
    let out = ok(out, "drover build --dry-run");
    assert_eq!(text(&out.stdout), "", "a dry run prints no paths");
    text(&out.stderr)
}

/// Activity ids carry the process id in their high half: keep the low one.
fn without_pids(records: &str) -> Vec<serde_json::Value> {
    records
        .lines()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l.strip_prefix("@nix ").unwrap()).unwrap();
            if let Some(id) = v.get("id").and_then(serde_json::Value::as_u64) {
                v["id"] = (id & 0xffff_ffff).into();
            }
            v
        })
        .collect()
}

#[test]
fn dry_runs_list_what_nix_lists() {
    if !require_nix() {
        return;
    }
    let s = setup();
    let fresh = s.store("fresh");

    // The top: three builds (dry-local may not be substituted), two paths fetched with sizes.
    let nix = nix_dry_run(&s, &fresh, &s.top, &[]);
    assert!(
        nix.contains("these 3 derivations will be built:\n"),
        "{nix}"
    );
    assert!(
        nix.contains("these 2 paths will be fetched (0.01 MiB download, 0.20 MiB unpacked):\n"),
        "{nix}"
    );
    assert_eq!(drover_dry_run(&s, &fresh, &s.top, &[]), nix);

    // Substitutes off: everything is built.
    let off = ["--option", "substitute", "false"];
    let nix = nix_dry_run(&s, &fresh, &s.top, &off);
    assert!(
        nix.starts_with("these 5 derivations will be built:\n"),
        "{nix}"
    );
    assert_eq!(drover_dry_run(&s, &fresh, &s.top, &off), nix);

    // A plain path: fetched with its reference; one nobody has: unknown.
    let mid = std::fs::read_dir(s.path("built/nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with("-dry-mid"))
        .map(|n| format!("/nix/store/{n}"))
        .unwrap();
    let nix = nix_dry_run(&s, &fresh, &mid, &[]);
    assert!(nix.starts_with("these 2 paths will be fetched ("), "{nix}");
    assert_eq!(drover_dry_run(&s, &fresh, &mid, &[]), nix);
    let nobody = "/nix/store/00000000000000000000000000000000-nobody";
    let nix = nix_dry_run(&s, &fresh, nobody, &[]);
    assert_eq!(
        nix,
        format!("don't know how to build these paths:\n  {nobody}\n")
    );
    assert_eq!(drover_dry_run(&s, &fresh, nobody, &[]), nix);

    // Where everything was built: nothing to say.
    let built = s.store("built");
    assert_eq!(nix_dry_run(&s, &built, &s.top, &[]), "");
    assert_eq!(drover_dry_run(&s, &built, &s.top, &[]), "");

    // internal-json: the same records (lookups may come in another order: Nix looks up in
    // parallel).
    let json = ["--log-format", "internal-json"];
    let nix = without_pids(&nix_dry_run(&s, &fresh, &s.top, &json));
    let ours = without_pids(&drover_dry_run(&s, &fresh, &s.top, &json));
    let msgs = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter().filter(|r| r["action"] == "msg").cloned().collect()
    };
    assert_eq!(msgs(&ours), msgs(&nix));
    assert_eq!(msgs(&ours).len(), 7);
    let lookups = |v: &[serde_json::Value]| -> Vec<String> {
        let mut l: Vec<String> = v
            .iter()
            .filter(|r| r["type"] == 109)
            .map(|r| r["text"].as_str().unwrap().to_owned())
            .collect();
        l.sort();
        l
    };
    assert_eq!(lookups(&ours), lookups(&nix));
    assert_eq!(ours.first(), nix.first(), "the query's own activity opens");
    assert_eq!(ours.len(), nix.len());
}
