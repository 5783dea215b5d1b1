//! `drover instantiate` from the command line: what it prints and how it fails (message with
//! file, line and key; exit status 1).

use std::path::Path;
use std::process::{Command, Output};

fn instantiate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("instantiate")
        .arg("--store")
        .arg(dir.join("store"))
        .args(args)
        .output()
        .expect("drover runs")
}

fn failure(dir: &Path, plan: &str, args: &[&str]) -> String {
    let file = dir.join("plan.toml");
    std::fs::write(&file, plan).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.push(file.to_str().unwrap());
    let o = instantiate(dir, &all);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty());
    let err = String::from_utf8(o.stderr).unwrap();
    err.strip_prefix("error: ")
        .unwrap_or_else(|| panic!("no error prefix: {err}"))
        .replace(&format!("{}", file.display()), "plan.toml")
}

#[test]
fn prints_the_drv_paths_and_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(
        &file,
        "[drv.a]\nbuilder = \"/bin/sh\"\n\n[drv.b]\nbuilder = \"/bin/sh\"\nargs = [\"${a}\"]\n",
    )
    .unwrap();
    let o = instantiate(dir.path(), &[file.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("/nix/store/") && lines[0].ends_with("-a.drv"));
    assert!(lines[1].ends_with("-b.drv"));
    for l in &lines {
        let real = dir.path().join("store").join(l.trim_start_matches('/'));
        let aterm = std::fs::read_to_string(real).unwrap();
        assert!(aterm.starts_with("Derive([(\"out\",\"/nix/store/"));
    }
    // -A prints only the requested one; instantiating again is idempotent.
    let o = instantiate(dir.path(), &["-A", "b", file.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("{}\n", lines[1])
    );
}

#[test]
fn errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        failure(d, "[drv.a]\nbuilder = \"/bin/sh\"\nenv.x = \"${b}\"\n", &[]),
        "plan.toml:3: drv 'a', key 'env.x': unknown dependency 'b' in '${b}' \
         (write $${ for a literal ${)\n"
    );
    assert_eq!(
        failure(
            d,
            "[drv.a]\nbuilder = \"${b}\"\n[drv.b]\nbuilder = \"${a}\"\n",
            &[]
        ),
        "plan.toml:4: drv 'b', key 'builder': dependency cycle: a -> b -> a\n"
    );
    assert_eq!(
        failure(
            d,
            "[drv.a]\nbuilder = \"/bin/sh\"\noutputHash = \"sha256-nothash\"\n",
            &[]
        ),
        "plan.toml:3: drv 'a', key 'outputHash': bad hash: invalid SRI hash 'nothash'\n"
    );
    assert_eq!(
        failure(d, "[drv.a]\nbuilder = [\"/bin/sh\"]\n", &[]),
        "plan.toml:2: drv 'a', key 'builder': expected a string or { file = \"…\" }, got an \
         array\n"
    );
    assert_eq!(
        failure(d, "[drv.a]\nbuilder = \"/bin/sh\"\n", &["-A", "zzz"]),
        "plan.toml: attribute 'zzz' not found in the plan\n"
    );
    let missing = failure(
        d,
        "[drv.a]\nbuilder = \"/bin/sh\"\nargs = [{ file = \"nope.sh\" }]\n",
        &[],
    );
    assert!(
        missing.starts_with("plan.toml:3: drv 'a', key 'args': cannot import '")
            && missing.contains("nope.sh' into the store"),
        "{missing}"
    );
}

#[test]
fn a_missing_plan_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = instantiate(dir.path(), &["/nonexistent/plan.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "error: /nonexistent/plan.toml: cannot read the plan: No such file or directory (os \
         error 2)\n"
    );
}
