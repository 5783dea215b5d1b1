//! Helpers for sandbox tests: whether the kernel gives us the sandbox's namespaces (a test
//! without them says so loudly and passes, except under `CI=true`, where it fails), and
//! sandboxes planned by the engine over a small fake store.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use drover::engine::build::sandbox::{self, Plan, SandboxSettings};
use drover::engine::format::{StoreDir, StorePath};
use drover::engine::settings::SandboxMode;
use drover::sandbox::{Namespaces, Personality, SandboxSpec};

/// Whether sandboxed builds can run here.
pub fn require_namespaces() -> bool {
    match sandbox::namespaces_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the kernel refuses the sandbox's namespaces ({why}); sandbox tests must run \
                 under CI=true"
            );
            eprintln!(
                "\n*** SKIPPED: this kernel refuses the sandbox's namespaces ({why}); the \
                 sandbox is NOT tested here ***\n"
            );
            false
        }
    }
}

/// A store dir `/nix/store` whose files are in `<dir>/store`, a build directory, and the
/// sandbox of one build over them.
pub struct Fake {
    pub dir: tempfile::TempDir,
    pub inputs: BTreeSet<StorePath>,
    pub out: StorePath,
    pub drv: StorePath,
}

pub const INPUT: &str = "7rjj86a15146cq1d3qy068lml7n8ykzm-input";
pub const SECRET: &str = "9aqnqgsb7bxdjqjyl5gfr4g0yjq3mcwl-secret";
pub const OUT: &str = "xn1r5dmdmz7d6zzw6dlnvb1rnfswrpfy-out";
pub const DRV: &str = "2zibknfy378am05sqbxl13zgi8jsaajv-x.drv";

impl Fake {
    /// An input `INPUT` (a directory with `file`), a path `SECRET` outside the closure.
    pub fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for p in [INPUT, SECRET] {
            std::fs::create_dir_all(root.join("store").join(p)).unwrap();
            std::fs::write(root.join("store").join(p).join("file"), p).unwrap();
        }
        std::fs::create_dir_all(root.join("build")).unwrap();
        let sp = |s: &str| StorePath::from_base_name(s).unwrap();
        Fake {
            dir,
            inputs: BTreeSet::from([sp(INPUT)]),
            out: sp(OUT),
            drv: sp(DRV),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    pub fn build_dir(&self) -> PathBuf {
        self.root().join("build")
    }

    /// Where the output is on the host while the sandbox exists.
    pub fn out_location(&self, ns: &Namespaces) -> PathBuf {
        sandbox::output_location(ns, Path::new(&format!("/nix/store/{OUT}")))
    }

    /// The sandbox the engine plans, `/bin/sh` and `/bin/busybox` bound from the host's
    /// static busybox; `pure` false is a fixed-output build.
    pub fn namespaces(&self, pure: bool) -> Namespaces {
        let mut settings = SandboxSettings {
            mode: SandboxMode::Enabled,
            ..SandboxSettings::default()
        };
        settings
            .set("sandbox-paths", "/bin/sh=/bin/busybox /bin/busybox")
            .unwrap()
            .unwrap();
        let store_dir = StoreDir::new("/nix/store").unwrap();
        sandbox::plan(&Plan {
            settings: &settings,
            store_dir: &store_dir,
            real_store_dir: &self.root().join("store"),
            drv_path: &self.drv,
            input_paths: &self.inputs,
            sandbox_paths_closure: &BTreeSet::new(),
            outputs: std::slice::from_ref(&self.out),
            tmp_dir: &self.build_dir(),
            pure,
            impure_host_deps: &[],
            kvm: false,
            host_uid: nix::unistd::getuid().as_raw(),
            host_gid: nix::unistd::getgid().as_raw(),
            host_has: &|p: &Path| p.exists(),
        })
        .unwrap()
    }

    /// `/bin/sh -c script` in the sandbox, with `$out` set.
    pub fn spec(&self, script: &str, pure: bool) -> SandboxSpec {
        let ns = self.namespaces(pure);
        SandboxSpec {
            program: b"/bin/sh".to_vec(),
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), script.into()],
            env: vec![
                b"PATH=/path-not-set".to_vec(),
                format!("out=/nix/store/{OUT}").into_bytes(),
                b"HOME=/homeless-shelter".to_vec(),
            ],
            cwd: ns.sandbox_build_dir.clone(),
            uid: None,
            gid: None,
            groups: vec![],
            personality: Personality::default(),
            namespaces: Some(ns),
        }
    }
}
