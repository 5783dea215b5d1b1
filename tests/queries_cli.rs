//! `drover show`, `why`, `log` and `build --dry-run` on drover's own stores (no real Nix
//! needed): a plan of three derivations (dep builds, bad fails, top needs both) in a chroot
//! store; dep's output copied to a `file://` cache with `drover copy`; a second store sees it
//! as "will be fetched". Bad targets fail with a message and status 1.

use std::path::Path;
use std::process::{Command, Output};

const PLAN: &str = r#"
[drv.dep]
builder = "/bin/busybox"
args = ["sh", "-c", "echo building dep; echo dep > $out"]

[drv.bad]
builder = "/bin/busybox"
args = ["sh", "-c", "echo bad is failing; exit 3"]

[drv.top]
builder = "/bin/busybox"
args = ["sh", "-c", "echo top > $out"]
env = { deps = "${dep} ${bad}" }
"#;

/// No network caches, busybox in the sandbox.
const OPTIONS: [&str; 4] = ["--option", "substituters", "", "--option"];

fn drover_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("drover runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

struct Drvs {
    dep: String,
    bad: String,
    top: String,
}

fn instantiate(dir: &Path, store: &str) -> Drvs {
    std::fs::write(dir.join("plan.toml"), PLAN).unwrap();
    let out = ok(drover_in(
        dir,
        &["instantiate", "--store", store, "plan.toml"],
    ));
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    Drvs {
        dep: lines[0].clone(),
        bad: lines[1].clone(),
        top: lines[2].clone(),
    }
}

fn build(dir: &Path, store: &str, extra: &[&str]) -> Output {
    let mut args = vec!["build", "--store", store, "--log-format", "plain"];
    args.extend_from_slice(&OPTIONS);
    args.extend_from_slice(&["sandbox-paths", "/bin/busybox"]);
    args.extend_from_slice(extra);
    drover_in(dir, &args)
}

#[test]
fn show_why_log_and_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s1 = dir.join("s1");
    let s1 = s1.to_str().unwrap();
    let d = instantiate(dir, s1);

    // Before any build: top and its inputs will be built; nothing is valid.
    let dry = build(dir, s1, &["--dry-run", &d.top]);
    assert_eq!(dry.status.code(), Some(0));
    assert_eq!(text(&dry.stdout), "");
    let listing = text(&dry.stderr);
    assert!(
        listing.starts_with("these 3 derivations will be built:\n"),
        "{listing}"
    );
    assert!(
        listing.ends_with(&format!("  {}\n", d.top)),
        "inputs first: {listing}"
    );
    assert!(!dir.join("result").exists(), "a dry run builds nothing");
    let show = ok(drover_in(dir, &["show", "--store", s1, &d.dep]));
    assert!(show.contains("\noutputs:\n  out  /nix/store/"), "{show}");
    assert!(
        show.ends_with("-dep  not valid (not in the store)\n"),
        "{show}"
    );

    // dep builds (with an out-link), top fails because bad does; the failure is cached.
    let built = build(dir, s1, &[&d.dep]);
    let dep_out = ok(built).trim().to_owned();
    let failed = build(
        dir,
        s1,
        &[
            "--no-out-link",
            "-k",
            "--option",
            "cache-failures",
            "true",
            &d.top,
        ],
    );
    assert_eq!(failed.status.code(), Some(100), "{}", text(&failed.stderr));

    // show: the JSON of show-derivation, byte for byte, then the outputs.
    let show = ok(drover_in(dir, &["show", "--store", s1, &d.dep]));
    let plumbing = ok(drover_in(
        dir,
        &[
            "show-derivation",
            "--store-root",
            &format!("{s1}/nix/store"),
            &d.dep,
        ],
    ));
    let (json, outputs) = show.split_once("outputs:\n").unwrap();
    assert_eq!(json, plumbing);
    assert!(
        outputs.starts_with(&format!("  out  {dep_out}  valid (sha256-")),
        "{outputs}"
    );
    // The same from the output path and from the out-link; as one JSON object.
    assert_eq!(ok(drover_in(dir, &["show", "--store", s1, &dep_out])), show);
    assert_eq!(
        ok(drover_in(dir, &["show", "--store", s1, "./result"])),
        show
    );
    let v: serde_json::Value = serde_json::from_str(&ok(drover_in(
        dir,
        &["show", "--store", s1, "--json", &d.dep],
    )))
    .unwrap();
    assert_eq!(v["drvPath"], d.dep.as_str());
    assert_eq!(v["outputs"]["out"]["path"], dep_out.as_str());
    assert_eq!(v["outputs"]["out"]["valid"], true);
    assert_eq!(v["derivation"]["env"]["name"], "dep");
    // An output on disk but not registered.
    let top_json: serde_json::Value = serde_json::from_str(&ok(drover_in(
        dir,
        &["show", "--store", s1, "--json", &d.top],
    )))
    .unwrap();
    let top_out = top_json["outputs"]["out"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let leftover = format!("{s1}{top_out}");
    std::fs::write(&leftover, "half").unwrap();
    let show_top = ok(drover_in(dir, &["show", "--store", s1, &d.top]));
    assert!(
        show_top.ends_with("  not valid (on disk but not registered)\n"),
        "{show_top}"
    );

    // log: the same log from the .drv, .drv^out, the output path and the out-link.
    for target in [
        d.dep.clone(),
        format!("{}^out", d.dep),
        dep_out.clone(),
        "./result".into(),
    ] {
        let log = ok(drover_in(dir, &["log", "--store", s1, &target]));
        assert_eq!(log, "building dep\n", "{target}");
    }

    // why: dep has nothing to do, bad is a cached failure, top is missing and has leftovers.
    let mut why_args = vec!["why", "--store", s1];
    why_args.extend_from_slice(&["--option", "substituters", ""]);
    why_args.extend_from_slice(&["--option", "cache-failures", "true", &d.top]);
    let why = ok(drover_in(dir, &why_args));
    let section = |drv: &str| -> String {
        let start = why
            .find(&format!("{drv}: "))
            .unwrap_or_else(|| panic!("{drv}: {why}"));
        let rest = &why[start..];
        let end = rest[1..]
            .find("\n/nix/store/")
            .map_or(rest.len(), |e| e + 2);
        rest[..end].to_owned()
    };
    assert_eq!(
        section(&d.top),
        format!(
            "{}: will be built\n  output 'out' ({top_out}) is on disk but not registered as \
             valid\n  output 'out' is not substitutable: no substituters are configured\n",
            d.top
        )
    );
    let bad = section(&d.bad);
    assert!(
        bad.starts_with(&format!("{}: will be built\n", d.bad)),
        "{bad}"
    );
    assert!(
        bad.contains("  cached failure: building output 'out' failed ")
            && bad.contains("s ago (with cache-failures on, it fails at once"),
        "{bad}"
    );
    // dep is visited (top will be built) and its output is valid.
    assert_eq!(
        section(&d.dep),
        format!(
            "{}: nothing to do: the outputs wanted of it are valid\n",
            d.dep
        )
    );

    // A cache with dep: a fresh store fetches it instead of building it.
    let cache = format!("file://{}", dir.join("cache").display());
    ok(drover_in(
        dir,
        &["copy", "--store", s1, "--to", &cache, &dep_out],
    ));
    let s2 = dir.join("s2");
    let s2 = s2.to_str().unwrap();
    let d2 = instantiate(dir, s2);
    assert_eq!(d2.top, d.top, "the same derivations");
    let mut args = vec!["build", "--store", s2, "--dry-run", &d.top];
    args.extend_from_slice(&["--option", "substituters", &cache]);
    let dry = drover_in(dir, &args);
    assert_eq!(dry.status.code(), Some(0));
    let listing = text(&dry.stderr);
    assert_eq!(
        listing,
        format!(
            "these 2 derivations will be built:\n  {}\n  {}\nthis path will be fetched (0.00 MiB \
             download, 0.00 MiB unpacked):\n  {dep_out}\n",
            d.bad, d.top
        )
    );
    let mut args = vec!["why", "--store", s2, &d.top];
    args.extend_from_slice(&["--option", "substituters", &cache]);
    let why = ok(drover_in(dir, &args));
    assert!(
        why.contains(&format!("{}: will be fetched\n", d.dep))
            && why.contains(&format!("  output 'out' is substitutable from {cache} (")),
        "{why}"
    );
    assert!(
        why.contains(&format!("no substituter has it (asked {cache})")),
        "{why}"
    );
}

#[test]
fn bad_targets_fail_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = dir.join("s");
    let s = s.to_str().unwrap();
    let d = instantiate(dir, s);
    let fails = |args: &[&str], message: &str| {
        let out = drover_in(dir, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    };
    let nope = format!("{}^nope", d.dep);
    let missing = "/nix/store/00000000000000000000000000000000-gone.drv";
    for cmd in ["show", "why", "log"] {
        fails(
            &[cmd, "--store", s, &nope],
            &format!("error: derivation '{}' does not have output 'nope'", d.dep),
        );
        fails(
            &[cmd, "--store", s, "/etc/passwd"],
            "error: path '/etc/passwd' is not in the Nix store",
        );
        fails(
            &[cmd, "--store", s, missing],
            &format!("error: derivation '{missing}' is not valid in the store"),
        );
    }
    fails(
        &["build", "--store", s, "--dry-run", &nope],
        "does not have output 'nope'",
    );
    let out_path = "/nix/store/00000000000000000000000000000000-gone";
    fails(
        &["show", "--store", s, out_path],
        &format!("error: path '{out_path}' is not valid"),
    );
    fails(
        &["log", "--store", s, &d.dep],
        &format!(
            "error: build log of derivation '{}' is not available",
            d.dep
        ),
    );
    let usage = drover_in(dir, &["why"]);
    assert_eq!(usage.status.code(), Some(2));
}
