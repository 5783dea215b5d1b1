//! Everything before the builder runs, as Nix 2.8's `tryToBuild` and `startBuilder` do it:
//! check that this machine can build the derivation, delete stale invalid
//! outputs and choose where each output is written ([`register::prepare_outputs`]: its own
//! path, or a scratch path when the real one is valid or being repaired, with Nix's hash
//! rewriting), create the build directory `nix-build-<drv name>-<n>`, compute the environment
//! and write the files it refers to, open the log file, and describe the builder as a
//! [`SandboxSpec`], with its sandbox when it gets one ([`sandbox`]: then outputs are written
//! inside the sandbox's root).

use std::collections::BTreeSet;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::engine::format::derivation::{ByteSlice, hash_placeholder};
use crate::engine::format::{Derivation, StorePath};
use crate::engine::scheduler::BuildRequest;
use crate::engine::store::logs::LogWriter;
use crate::engine::store::{LocalStore, canon};
use crate::sandbox::{Personality, SandboxSpec};

use super::env::{BuildEnv, EnvParams, Rewrites, rewrite_strings};
use super::memo::StoreMemo;
use super::parsed::ParsedDrv;
use super::register::{self, BuiltOutput};
use super::sandbox;
use super::{BuildError, BuildSettings};

/// A build ready to start.
pub struct Prepared {
    pub request: BuildRequest,
    pub drv: Derivation,
    /// The build directory (kept with `keep-failed` when the build fails).
    pub tmp_dir: PathBuf,
    pub outputs: Vec<BuiltOutput>,
    /// The closure of the inputs: what outputs may refer to.
    pub input_paths: BTreeSet<StorePath>,
    pub spec: SandboxSpec,
    /// The log file, when logs are kept.
    pub log: Option<LogWriter>,
    /// Said once the build starts (the sandbox is not available).
    pub warning: Option<String>,
}

/// Nix's `createTempDir(root, prefix, false, false, 0700)`: the first free `<prefix>-<n>`.
pub fn create_build_dir(root: &Path, prefix: &str) -> io::Result<PathBuf> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    for n in 0u64.. {
        let dir = root.join(format!("{prefix}-{n}"));
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some counter value is free")
}

fn store_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Other(e.to_string())
}

/// Nix's `canBuildLocally`, with its message when the answer is no.
fn check_platform(
    store: &LocalStore,
    settings: &BuildSettings,
    drv_path: &StorePath,
    drv: &Derivation,
    parsed: &ParsedDrv<'_>,
) -> Result<(), BuildError> {
    let platform = drv.system.to_str_lossy();
    let builtin = drv.builder.starts_with(b"builtin:");
    let features = parsed
        .required_system_features()
        .map_err(BuildError::Other)?;
    let ok = (platform == settings.system
        || settings.extra_platforms.contains(platform.as_ref())
        || builtin)
        && (settings.max_jobs != 0 || builtin)
        && features
            .iter()
            .all(|f| settings.system_features.contains(f));
    if ok {
        return Ok(());
    }
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    Err(BuildError::Other(format!(
        "a '{platform}' with features {{{}}} is required to build '{}', but I am a '{}' with \
         features {{{}}}",
        join(&features),
        store.print(drv_path),
        settings.system,
        join(&settings.system_features),
    )))
}

/// The closure of the derivation's inputs (the used outputs of its input derivations and its
/// input sources), which the scheduler made valid.
fn input_closure(
    store: &LocalStore,
    memo: &StoreMemo,
    drv: &Derivation,
) -> Result<BTreeSet<StorePath>, BuildError> {
    let mut roots: Vec<StorePath> = drv.input_srcs.iter().cloned().collect();
    for (input, names) in &drv.input_drvs {
        let outputs = memo.output_paths(store, input).map_err(store_err)?;
        for name in names {
            let path = outputs.get(name).ok_or_else(|| {
                BuildError::Other(format!(
                    "derivation '{}' has no output '{name}'",
                    store.print(input)
                ))
            })?;
            roots.push(path.clone());
        }
    }
    memo.closure(store, roots).map_err(store_err)
}

impl Prepared {
    /// Prepares `request` (see the module doc). On an error nothing is left behind.
    pub fn new(
        store: &LocalStore,
        memo: &StoreMemo,
        settings: &BuildSettings,
        request: BuildRequest,
    ) -> Result<Prepared, BuildError> {
        let drv_path = &request.drv_path;
        let drv = store.read_derivation(drv_path).map_err(store_err)?;
        let parsed = ParsedDrv::new(&drv, drv_path.name()).map_err(BuildError::Other)?;
        check_platform(store, settings, drv_path, &drv, &parsed)?;
        if drv.builder.starts_with(b"builtin:") {
            return Err(BuildError::Other(format!(
                "unsupported builtin builder '{}'",
                drv.builder.to_str_lossy()
            )));
        }
        let input_paths = input_closure(store, memo, &drv)?;
        let outputs = register::prepare_outputs(store, drv_path, &drv, request.mode)
            .map_err(|e| BuildError::Other(e.to_string()))?;
        let mut rewrites = register::input_rewrites(&outputs);
        for o in &outputs {
            rewrites.insert(hash_placeholder(&o.name), store.print(&o.scratch));
        }

        let sandbox = sandbox::decide(&settings.sandbox, store, drv_path, &parsed)?;
        // Without a sandbox the builder sees the real file system: a home directory would
        // make builds impure.
        if !sandbox.sandboxed && Path::new("/homeless-shelter").exists() {
            return Err(BuildError::Other(
                "home directory '/homeless-shelter' exists; please remove it to assure purity \
                 of builds without sandboxing"
                    .into(),
            ));
        }

        let tmp_dir = create_build_dir(
            &settings.build_dir,
            &format!("nix-build-{}", drv_path.name()),
        )
        .map_err(|e| {
            BuildError::Other(format!(
                "creating a build directory in '{}': {e}",
                settings.build_dir.display()
            ))
        })?;
        drop(parsed);
        let planned = Planned {
            drv,
            outputs,
            input_paths,
            rewrites,
            sandbox,
        };
        let result = Self::fill(store, settings, request, planned, tmp_dir.clone());
        if result.is_err() {
            let _ = canon::delete_path(&tmp_dir);
        }
        result
    }

    /// Writes the build directory's files and describes the builder.
    fn fill(
        store: &LocalStore,
        settings: &BuildSettings,
        request: BuildRequest,
        planned: Planned,
        tmp_dir: PathBuf,
    ) -> Result<Prepared, BuildError> {
        let Planned {
            drv,
            mut outputs,
            input_paths,
            rewrites,
            sandbox,
        } = planned;
        let rewrites = &rewrites;
        let parsed_drv =
            ParsedDrv::new(&drv, request.drv_path.name()).map_err(BuildError::Other)?;
        let caller_env = |name: &str| std::env::var(name).ok();
        let namespaces = if sandbox.sandboxed {
            let scratch: Vec<StorePath> = outputs.iter().map(|o| o.scratch.clone()).collect();
            let ns = sandbox::namespaces(
                settings,
                store,
                &request.drv_path,
                &parsed_drv,
                &input_paths,
                &scratch,
                &tmp_dir,
            )?;
            for o in &mut outputs {
                o.location = sandbox::output_location(&ns, Path::new(&store.print(&o.scratch)));
            }
            Some(ns)
        } else {
            None
        };
        // Where the builder sees its build directory.
        let tmp_dir_in_sandbox = match &namespaces {
            Some(ns) => ns.sandbox_build_dir.clone(),
            None => tmp_dir.clone(),
        };
        let env = BuildEnv::new(
            &parsed_drv,
            &EnvParams {
                store,
                tmp_dir: &tmp_dir_in_sandbox,
                cores: settings.cores,
                rewrites,
                input_paths: &input_paths,
                caller_env: &caller_env,
            },
        )?;
        for (name, contents) in &env.files {
            let path = tmp_dir.join(name);
            std::fs::write(&path, contents).map_err(|e| {
                BuildError::Other(format!("writing file '{}': {e}", path.display()))
            })?;
        }
        let program = drv.builder.to_vec();
        let base = program
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or(&program)
            .to_vec();
        let mut argv = vec![base];
        argv.extend(drv.args.iter().map(|a| rewrite_strings(a, rewrites)));
        let spec = SandboxSpec {
            program,
            argv,
            env: env.entries(rewrites),
            cwd: tmp_dir_in_sandbox,
            uid: None,
            gid: None,
            groups: Vec::new(),
            personality: personality(settings, &drv.system.to_str_lossy()),
            namespaces,
        };
        let log = if settings.keep_build_log {
            let log = if settings.compress_build_log {
                store.create_log(&request.drv_path)
            } else {
                store.create_uncompressed_log(&request.drv_path)
            };
            Some(log.map_err(store_err)?)
        } else {
            None
        };
        Ok(Prepared {
            request,
            drv,
            tmp_dir,
            outputs,
            input_paths,
            spec,
            log,
            warning: sandbox.warning,
        })
    }
}

/// The decisions made before the build directory exists.
struct Planned {
    drv: Derivation,
    outputs: Vec<BuiltOutput>,
    input_paths: BTreeSet<StorePath>,
    rewrites: Rewrites,
    sandbox: sandbox::Decision,
}

/// Nix's personality choices: 32-bit for `i686-linux` on `x86_64` and for 32-bit ARM, and
/// a 2.6 kernel when `impersonate-linux-26` is set.
fn personality(settings: &BuildSettings, platform: &str) -> Personality {
    let host_x86_64 = settings.system == "x86_64-linux" || std::env::consts::ARCH == "x86_64";
    Personality {
        linux32: (platform == "i686-linux" && host_x86_64)
            || platform == "armv7l-linux"
            || platform == "armv6l-linux",
        uname26: settings.impersonate_linux_26
            && (platform == "i686-linux" || platform == "x86_64-linux"),
    }
}
