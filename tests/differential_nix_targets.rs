//! `drover build default.nix [-A attr]` against real Nix 2.8: drover runs the real
//! nix-instantiate for its own store dir, imports the `.drv` closure and builds it. The
//! derivations are the ones nix-instantiate writes, and real Nix reads drover's store back:
//! the outputs verify (NAR hashes) and have the references Nix finds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{nix_command, require_nix};

const NIX_FILE: &str = r#"
let
  hello = derivation {
    name = "hello";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" ./build.sh ];
    outputs = [ "out" "dev" ];
  };
in {
  inherit hello;
  world = derivation {
    name = "world";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo world uses ${hello.dev} > $out" ];
  };
}
"#;

const BUILD_SH: &str = r#"echo "building hello"
echo "hello" > "$out"
echo "headers of $out" > "$dev"
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.nix"), NIX_FILE).unwrap();
        std::fs::write(dir.path().join("build.sh"), BUILD_SH).unwrap();
        Fixture { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn store_dir(&self) -> String {
        self.path("store").display().to_string()
    }

    /// drover's store: its own store dir (not /nix/store), files where the paths say.
    fn store_uri(&self) -> String {
        let d = self.dir.path().display();
        format!("local?store={d}/store&state={d}/state&log={d}/log")
    }

    fn drover(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .current_dir(self.dir.path())
            .args(["build", "--store", &self.store_uri()])
            .args(args)
            .output()
            .expect("drover runs")
    }

    /// What real nix-instantiate gives for an attribute in a scratch store with the same
    /// store dir.
    fn nix_instantiate(&self, attr: &str) -> String {
        let scratch = self.path("nix-scratch");
        let uri = format!(
            "local?store={}&real={}/store&state={}/state&log={}/log",
            self.store_dir(),
            scratch.display(),
            scratch.display(),
            scratch.display()
        );
        let o = nix_command("nix-instantiate")
            .current_dir(self.dir.path())
            .args(["--store", &uri, "default.nix", "-A", attr])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }

    /// Real Nix on drover's store.
    fn nix_store(&self, args: &[&str]) -> Output {
        nix_command("nix-store")
            .args(["--store", &self.store_uri()])
            .args(args)
            .output()
            .unwrap()
    }
}

fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_attribute_of_a_nix_file_builds_with_the_derivations_nix_instantiate_writes() {
    if !require_nix() {
        return;
    }
    let f = Fixture::new();
    let o = f.drover(&["default.nix", "-A", "world"]);
    assert!(o.status.success(), "{o:?}");
    let printed = stdout_lines(&o);
    assert_eq!(printed.len(), 1);
    let world = &printed[0];
    assert!(world.starts_with(&format!("{}/", f.store_dir())) && world.ends_with("-world"));
    assert_eq!(
        std::fs::read_link(f.path("result")).unwrap(),
        Path::new(world)
    );
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(
        stderr.starts_with("these 2 derivations will be built:\n"),
        "{stderr}"
    );
    assert!(stderr.contains("hello> building hello\n"), "{stderr}");
    assert!(!stderr.contains("--add-root"), "{stderr}");
    // The derivation built is the one real nix-instantiate writes for this store dir.
    let drv = f.nix_instantiate("world");
    let deriver = f.nix_store(&["--query", "--deriver", world]);
    assert!(deriver.status.success(), "{deriver:?}");
    assert_eq!(stdout_lines(&deriver), [drv]);
    // Real Nix reads drover's store: the outputs verify and have the references it expects.
    let hello_dev = std::fs::read_to_string(world)
        .unwrap()
        .trim()
        .strip_prefix("world uses ")
        .unwrap()
        .to_owned();
    for p in [world.as_str(), hello_dev.as_str()] {
        let v = f.nix_store(&["--verify-path", p]);
        assert!(v.status.success(), "{p}: {v:?}");
    }
    let refs = f.nix_store(&["--query", "--references", world]);
    assert_eq!(stdout_lines(&refs), std::slice::from_ref(&hello_dev));
    let hash = f.nix_store(&["--query", "--hash", world]);
    let nix_hash = nix_command("nix-hash")
        .args(["--type", "sha256", "--base32", world])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&hash.stdout).trim(),
        format!(
            "sha256:{}",
            String::from_utf8_lossy(&nix_hash.stdout).trim()
        )
    );
}

#[test]
fn the_whole_file_builds_every_attribute_and_a_multi_output_attribute_its_first_output() {
    if !require_nix() {
        return;
    }
    let f = Fixture::new();
    let o = f.drover(&["default.nix"]);
    assert!(o.status.success(), "{o:?}");
    let printed = stdout_lines(&o);
    // nix-instantiate's order: the attributes sorted by name.
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert!(printed[0].ends_with("-hello") && printed[1].ends_with("-world"));
    assert_eq!(std::fs::read_to_string(&printed[0]).unwrap(), "hello\n");
    assert_eq!(
        std::fs::read_link(f.path("result-2")).unwrap(),
        Path::new(&printed[1])
    );
    assert_eq!(
        stdout_lines(&f.drover(&["default.nix", "-A", "hello", "--no-out-link"])),
        [printed[0].clone()]
    );
}

#[test]
fn an_unknown_attribute_fails_with_nix_instantiates_message() {
    if !require_nix() {
        return;
    }
    let f = Fixture::new();
    let o = f.drover(&["default.nix", "-A", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty());
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(
        stderr.starts_with("error: nix-instantiate failed on 'default.nix' (exit status: 1): "),
        "{stderr}"
    );
    assert!(
        stderr.contains("attribute 'nope' in selection path 'nope' not found"),
        "{stderr}"
    );
    std::fs::write(f.path("broken.nix"), "{ x = ; }").unwrap();
    let o = f.drover(&["broken.nix"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("syntax error"));
}
