//! Plan files against real Nix: each plan is translated (here, independently of drover's plan
//! code) into the equivalent `derivation { … }` expression; real `nix-instantiate` and
//! `drover instantiate` each write into a fresh store, and the `.drv` paths, their ATerm bytes
//! and the imported sources must be identical. drover's store must also pass real Nix's
//! `nix-store --verify --check-contents`.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{nix_command, require_nix};

/// A Nix string literal for `s`: every `$` escaped (so no interpolation starts by accident),
/// and `${name}` / `${name.output}` turned into interpolations of `drvs`.
fn nix_string(s: &str, names: &BTreeSet<String>) -> String {
    let mut out = String::from("\"");
    let mut rest = s;
    loop {
        let Some(i) = rest.find('$') else {
            out.push_str(&escape(rest));
            break;
        };
        out.push_str(&escape(&rest[..i]));
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("\\${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let end = r.find('}').expect("closed interpolation");
            let target = r[..end].trim();
            let expr = if names.contains(target) {
                format!("drvs.\"{target}\"")
            } else {
                let (n, o) = target.rsplit_once('.').expect("name.output");
                format!("drvs.\"{n}\".\"{o}\"")
            };
            write!(out, "${{{expr}}}").unwrap();
            rest = &r[end + 1..];
        } else {
            out.push_str("\\$");
            rest = &after[1..];
        }
    }
    out.push('"');
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

/// A TOML value as a Nix expression.
fn nix_value(v: &toml::Value, dir: &Path, names: &BTreeSet<String>) -> String {
    match v {
        toml::Value::String(s) => nix_string(s, names),
        toml::Value::Integer(i) => format!("({i})"),
        toml::Value::Float(f) => format!("({f:?})"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|i| nix_value(i, dir, names)).collect();
            format!("[ {} ]", items.join(" "))
        }
        toml::Value::Table(t) => {
            let file = t["file"].as_str().expect("{ file = … }");
            let path = dir.join(file);
            format!("(/. + {})", nix_string(path.to_str().unwrap(), names))
        }
        toml::Value::Datetime(_) => unreachable!("not in these plans"),
    }
}

/// The Nix file equivalent to a plan: `rec { drvs = { name = derivation { … }; … }; }.drvs`.
fn nix_expression(plan: &str, dir: &Path) -> (String, Vec<String>) {
    let doc: toml::Table = plan.parse().unwrap();
    let drvs = doc["drv"].as_table().unwrap();
    let names: BTreeSet<String> = drvs.keys().cloned().collect();
    let mut nix = String::from("let drvs = {\n");
    let mut order = Vec::new();
    for (name, spec) in drvs {
        order.push(name.clone());
        let spec = spec.as_table().unwrap();
        write!(
            nix,
            "  \"{name}\" = derivation {{\n    name = \"{name}\";\n"
        )
        .unwrap();
        if !spec.contains_key("system") {
            nix.push_str("    system = builtins.currentSystem;\n");
        }
        for (k, v) in spec {
            if k == "env" {
                for (var, value) in v.as_table().unwrap() {
                    let value = nix_value(value, dir, &names);
                    writeln!(nix, "    \"{var}\" = {value};").unwrap();
                }
            } else {
                writeln!(nix, "    \"{k}\" = {};", nix_value(v, dir, &names)).unwrap();
            }
        }
        nix.push_str("  };\n");
    }
    nix.push_str("}; in drvs\n");
    (nix, order)
}

fn run(c: &mut Command) -> String {
    let o = c.output().expect("command runs");
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The store objects of a chroot store, by base name.
fn store_objects(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".lock"))
        .collect()
}

/// Instantiates `plan` (written into `dir` with the files already there) with both, and
/// compares everything; `attrs` selects derivations (`-A`), all of them when empty.
fn compare(dir: &Path, plan: &str, attrs: &[&str]) {
    let plan_file = dir.join("plan.toml");
    std::fs::write(&plan_file, plan).unwrap();
    let (nix, order) = nix_expression(plan, dir);
    let nix_file = dir.join("plan.nix");
    std::fs::write(&nix_file, &nix).unwrap();
    let attrs: Vec<String> = if attrs.is_empty() {
        order
    } else {
        attrs.iter().map(|a| a.to_string()).collect()
    };

    let scratch = tempfile::tempdir().unwrap();
    let (nix_root, drover_root) = (scratch.path().join("nix"), scratch.path().join("drover"));
    let mut real = nix_command("nix-instantiate");
    real.arg("--store").arg(&nix_root).arg(&nix_file);
    for a in &attrs {
        real.args(["-A", &format!("\"{a}\"")]);
    }
    let expected = run(&mut real);

    let mut ours = Command::new(env!("CARGO_BIN_EXE_drover"));
    ours.arg("instantiate").arg("--store").arg(&drover_root);
    if attrs.len() == 1 {
        ours.args(["-A", &attrs[0]]);
    }
    ours.arg(&plan_file);
    let got = run(&mut ours);
    assert_eq!(
        got, expected,
        "drv paths differ for\n{plan}\nNix expression:\n{nix}"
    );

    for line in got.lines() {
        let drv = line.split('!').next().unwrap();
        let base = drv.strip_prefix("/nix/store/").unwrap();
        let a = std::fs::read(nix_root.join("nix/store").join(base)).unwrap();
        let b = std::fs::read(drover_root.join("nix/store").join(base)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&b),
            String::from_utf8_lossy(&a),
            "ATerm of {drv} differs"
        );
    }
    assert_eq!(store_objects(&drover_root), store_objects(&nix_root));
    let verify = nix_command("nix-store")
        .arg("--store")
        .arg(&drover_root)
        .args(["--verify", "--check-contents"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stderr);
    let complaints: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with("reading the Nix store") && !l.starts_with("checking "))
        .collect();
    assert!(
        verify.status.success() && complaints.is_empty(),
        "nix-store --verify on drover's store: {report}"
    );
}

fn write(path: &Path, contents: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    path.to_owned()
}

#[test]
fn dependencies_and_multiple_outputs() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    compare(
        dir.path(),
        r#"
[drv.base]
builder = "/bin/busybox"
args = ["sh", "-c", "echo base > $out; echo dev > $dev; echo doc > $doc"]
outputs = ["dev", "out", "doc"]

[drv."lib-1.2.3"]
builder = "/bin/busybox"
args = ["sh", "-c", "echo ${base} ${base.doc} > $out"]

[drv.top]
builder = "/bin/busybox"
args = ["sh", "-c", "echo > $out"]
env = { lib = "${lib-1.2.3}", libOut = "${lib-1.2.3.out}", dev = "${base.out}", all = ["${base.dev}", "${base.doc}"] }
system = "x86_64-linux"
"#,
        &[],
    );
}

#[test]
fn only_the_requested_attribute_and_its_inputs() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    compare(
        dir.path(),
        r#"
[drv.a]
builder = "/bin/busybox"

[drv.b]
builder = "/bin/busybox"
args = ["${a}"]

[drv.unrelated]
builder = "/bin/busybox"
"#,
        &["b"],
    );
}

#[test]
fn files_and_directories_are_imported_like_path_literals() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("build.sh"), "echo building > $out\n");
    let tool = write(&d.join("src/bin/tool"), "#!/bin/sh\necho tool\n");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(&d.join("src/share/data file.txt"), "data\n");
    std::fs::create_dir_all(d.join("src/empty")).unwrap();
    symlink("bin/tool", d.join("src/link")).unwrap();
    write(&d.join("sub/helper.sh"), "true\n");
    compare(
        d,
        r#"
[drv.files]
builder = { file = "build.sh" }
args = ["-e", { file = "./build.sh" }, "--src=${files2}"]
env = { src = { file = "src" }, helper = { file = "sub/../sub/helper.sh" }, both = [{ file = "src" }, "x"] }

[drv.files2]
builder = "/bin/busybox"
env = { tree = { file = "src" } }
"#,
        &[],
    );
}

#[test]
fn fixed_output_derivations_flat_and_recursive() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    compare(
        dir.path(),
        r#"
[drv.flat-sri]
builder = "/bin/busybox"
args = ["sh", "-c", "echo -n hello > $out"]
outputHash = "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="

[drv.flat-hex]
builder = "/bin/busybox"
outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
outputHashAlgo = "sha256"
outputHashMode = "flat"

[drv.recursive-base32]
builder = "/bin/busybox"
outputHash = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
outputHashAlgo = "sha256"
outputHashMode = "recursive"

[drv.sha1-flat]
builder = "/bin/busybox"
outputHash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
outputHashAlgo = "sha1"

[drv.sha512-recursive]
builder = "/bin/busybox"
outputHash = "sha512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw=="
outputHashMode = "recursive"

[drv.user]
builder = "/bin/busybox"
args = ["${flat-sri}", "${recursive-base32}", "${sha512-recursive.out}"]
"#,
        &[],
    );
}

#[test]
fn values_lists_booleans_numbers_and_escapes() {
    if !require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    compare(
        dir.path(),
        r#"
[drv.values]
builder = "/bin/busybox"
args = [1, true, false, ["a", ["b", []], []], 2.5]
outputs = ["out", "bin"]

[drv.values.env]
yes = true
no = false
answer = 42
negative = -7
hex = 0xff
ratio = 0.125
big = 12345.5
list = ["x", 3, true, false, [], ["y", "z"], "${values2}"]
empty = []
nested = [[], [[]], "end"]
quotes = "say \"hi\" \\ back\\slash"
multi = """
line one
	tabbed line
"""
dollars = "cost: $5, ${values2.dev} and $${HOME} and $$"
unicode = "héllo wörld ✓"
__noChroot = true

[drv.values2]
builder = "/bin/busybox"
outputs = ["out", "dev"]
"#,
        &[],
    );
}
