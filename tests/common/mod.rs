//! Helpers shared by integration tests.
#![allow(dead_code)]
/// Whether real Nix is available. Without it a differential test is skipped, except under
/// `CI=true`, where a missing Nix is a failure.
pub fn require_nix() -> bool {
    let found = std::process::Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "real Nix (nix-store) is required when CI=true: apt-get install -y nix-bin"
        );
        eprintln!("skipped: real Nix not found (apt-get install -y nix-bin)");
    }
    found
}

/// A real-Nix command with the options every call needs here: no substituters (no network),
/// no build users (the tests run as root without `nixbld`), the static busybox bound into
/// sandboxes, and the `nix` command enabled.
pub fn nix_command(program: &str) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.args(["--option", "substituters", ""])
        .args(["--option", "build-users-group", ""])
        .args(["--option", "sandbox-paths", "/bin/busybox"]);
    if program == "nix" {
        c.args(["--extra-experimental-features", "nix-command"]);
    }
    c
}

/// The start of a Nix expression whose `sh SCRIPT NAME DEPS` is a derivation running SCRIPT in
/// busybox's shell (with `$deps` set); continue it with more bindings and `in …`.
pub const NIX_SH_LET: &str = r#"
let
  sh = script: name: deps: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/busybox";
    args = [ "sh" "-c" script ];
    deps = deps;
  };
"#;

/// A small real-Nix workload for the monitor tests: mon-a and mon-c build, mon-b fails, and
/// mon-top (needing mon-b and mon-c) fails with it.
pub fn monitor_workload() -> String {
    format!(
        r#"{NIX_SH_LET}  a = sh "echo a says hello; echo a > $out" "mon-a" [];
  b = sh "echo b is about to fail; exit 1" "mon-b" [];
  c = sh "echo c sees $deps; echo c > $out" "mon-c" [ a ];
in sh "echo top > $out" "mon-top" [ b c ]
"#
    )
}

/// Runs real Nix's `program` (see [`nix_command`]) without its sandbox fallback and with the
/// private cache directory `xdg_cache` (so narinfo lookups are not remembered across tests).
pub fn nix_try_run(
    program: &str,
    args: &[&str],
    xdg_cache: &std::path::Path,
) -> std::process::Output {
    nix_command(program)
        .args(["--option", "sandbox-fallback", "false"])
        .args(args)
        .env("XDG_CACHE_HOME", xdg_cache)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// [`nix_try_run`], which must succeed.
pub fn nix_run(program: &str, args: &[&str], xdg_cache: &std::path::Path) -> std::process::Output {
    let out = nix_try_run(program, args, xdg_cache);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
