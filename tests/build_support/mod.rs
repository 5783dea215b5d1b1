//! Helpers for end-to-end build tests: a temporary store whose files are where its paths say
//! (`local?store=…&state=…&log=…`), derivations written into it the way `nix-instantiate`
//! writes them (builder `/bin/busybox sh -c SCRIPT`), and `drover build` runs in a clean
//! environment (no user or system configuration, its own TMPDIR).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use drover::engine::format::derivation::{DrvHashes, NewOutputs};
use drover::engine::format::{Derivation, StorePath};
use drover::engine::store::{EnvOverrides, LocalStore, StoreConfig};

pub const BUSYBOX: &str = "/bin/busybox";

/// A store, a build directory and a configuration directory under one temporary directory.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: LocalStore,
    pub uri: String,
    hashes: DrvHashes,
}

/// What one `drover build` printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore::with_uri(|d| {
            format!(
                "local?store={0}/store&state={0}/state&log={0}/log",
                d.display()
            )
        })
    }

    /// A chroot store: logical store dir `/nix/store`, files under `<dir>/root`.
    pub fn chroot() -> TestStore {
        TestStore::with_uri(|d| d.join("root").display().to_string())
    }

    /// A store at the URI made from the test directory.
    pub fn with_uri(uri: impl FnOnce(&Path) -> String) -> TestStore {
        assert!(
            Path::new(BUSYBOX).exists(),
            "build tests need a static busybox at {BUSYBOX} (apt-get install busybox-static)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        for sub in ["tmp", "conf", "home"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let uri = uri(&d);
        let config = StoreConfig::parse(Some(&uri), &EnvOverrides::default()).unwrap();
        let store = LocalStore::open(config).unwrap();
        TestStore {
            dir,
            store,
            uri,
            hashes: DrvHashes::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    /// The directory builds run in (`TMPDIR` of `drover build`).
    pub fn tmp(&self) -> PathBuf {
        self.root().join("tmp")
    }

    pub fn print(&self, p: &StorePath) -> String {
        self.store.print(p)
    }

    /// Writes an input-addressed derivation with these outputs, built by `sh -c script`, with
    /// `deps` (derivation, output) as inputs and `env` as further attributes.
    pub fn drv(
        &mut self,
        name: &str,
        outputs: &[&str],
        script: &str,
        deps: &[(&StorePath, &str)],
        env: &[(&str, &str)],
    ) -> StorePath {
        let names = outputs.iter().map(|o| o.to_string()).collect();
        self.write_drv(name, NewOutputs::InputAddressed(names), script, deps, env)
    }

    /// Writes a derivation whose outputs are described by `outputs`.
    pub fn write_drv(
        &mut self,
        name: &str,
        outputs: NewOutputs,
        script: &str,
        deps: &[(&StorePath, &str)],
        env: &[(&str, &str)],
    ) -> StorePath {
        let mut drv = Derivation {
            system: "x86_64-linux".into(),
            builder: BUSYBOX.into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Derivation::default()
        };
        for (d, out) in deps {
            drv.input_drvs
                .entry((*d).clone())
                .or_default()
                .insert(out.to_string());
        }
        let mut env_map: BTreeMap<String, String> = BTreeMap::new();
        env_map.insert("name".into(), name.into());
        env_map.insert("builder".into(), BUSYBOX.into());
        env_map.insert("system".into(), "x86_64-linux".into());
        for (k, v) in env {
            env_map.insert(k.to_string(), v.to_string());
        }
        for (k, v) in env_map {
            drv.env.insert(k.into(), v.into());
        }
        let store = &self.store;
        let drv_path = drv
            .fill_in_outputs(store.store_dir(), name, &outputs, &mut self.hashes, |p| {
                store.read_derivation(p)
            })
            .unwrap();
        let aterm = drv.to_aterm(store.store_dir());
        let refs: BTreeSet<StorePath> = drv.references();
        let written = store
            .add_text_to_store(&format!("{name}.drv"), &aterm, &refs)
            .unwrap();
        assert_eq!(written, drv_path);
        drv_path
    }

    /// The path of output `output` of `drv`.
    pub fn out(&self, drv: &StorePath, output: &str) -> StorePath {
        self.store.derivation_output_paths(drv).unwrap()[output].clone()
    }

    /// The full path of an output, as builders see it.
    pub fn out_str(&self, drv: &StorePath, output: &str) -> String {
        self.print(&self.out(drv, output))
    }

    /// Runs `drover build --store URI ARGS…` in `cwd` (default: the test directory).
    pub fn build(&self, args: &[&str]) -> Run {
        self.build_in(&self.root(), args, &[])
    }

    pub fn build_in(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let root = self.root();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
        cmd.arg("build")
            .arg("--store")
            .arg(&self.uri)
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("TMPDIR", root.join("tmp"))
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("conf"))
            .env("NIX_CONF_DIR", root.join("conf"));
        cmd.args(self.offline());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Options that keep a build offline: a store with the store dir `/nix/store` would use
    /// Nix's default cache, https://cache.nixos.org (another store dir never does).
    pub fn offline(&self) -> Vec<&'static str> {
        if self.store.store_dir().as_str() == "/nix/store" {
            vec!["--option", "substituters", ""]
        } else {
            Vec::new()
        }
    }

    pub fn is_valid(&self, p: &StorePath) -> bool {
        self.store.is_valid(p).unwrap()
    }

    /// The contents of an output file.
    pub fn read(&self, p: &StorePath) -> String {
        std::fs::read_to_string(self.store.real_path(p)).unwrap()
    }

    /// The `nix-build-*` directories left in the build directory.
    pub fn build_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("nix-build-"))
            .collect();
        v.sort();
        v
    }
}

/// Whether a process exists (a zombie would count; the supervisor reaps every one).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Reads a pid a builder wrote to a file.
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}
