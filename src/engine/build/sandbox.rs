//! Whether and how a build is sandboxed, as Nix 2.8's `startBuilder` decides it on Linux:
//! the `sandbox` mode (`true`, `false`, `relaxed`) with `__noChroot`, fixed-output and impure
//! derivations, stores whose files are elsewhere (always sandboxed); then the sandbox itself
//! as a [`Namespaces`]: the input closure bound read-only at its logical paths (which is how
//! a chroot store builds: the physical paths appear at their logical place), `sandbox-paths`
//! and `extra-sandbox-paths` (`target=source`, `?` for optional) with the closure of those in
//! the store, `__impureHostDeps` within `allowed-impure-host-deps`, a minimal `/dev`, the
//! network and `/etc/resolv.conf`, `/etc/services`, `/etc/hosts` for fixed-output builds,
//! and `/etc/passwd`, `/etc/group`, `/etc/hosts` as Nix writes them.
//!
//! [`use_sandbox`] and [`plan`] are pure; [`decide`] adds the kernel probe
//! ([`namespaces_available`]) and the `sandbox-fallback` policy, and [`namespaces`] the
//! store queries, for the build preparation to call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::format::{StoreDir, StorePath};
use crate::engine::settings::SandboxMode;
use crate::engine::store::{ClosureFlags, LocalStore};
use crate::sandbox::{BindMount, IdMap, Namespaces, SandboxFile};

use super::parsed::ParsedDrv;
use super::{BuildError, BuildSettings};

/// The sandbox settings of `nix.conf`, with Nix's defaults (but `sandbox`, see
/// `engine::settings`; `sandbox-paths` is empty as in Nix built without a sandbox shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// `sandbox` (aliases `build-use-sandbox`, `build-use-chroot`).
    pub mode: SandboxMode,
    /// `sandbox-paths` (aliases `build-chroot-dirs`, `build-sandbox-paths`) with
    /// `extra-sandbox-paths`: `path`, `target=source`, either with a `?` suffix.
    pub paths: BTreeSet<String>,
    /// `sandbox-fallback`: build unsandboxed where the kernel refuses namespaces.
    pub fallback: bool,
    /// `sandbox-build-dir`: the build directory inside the sandbox.
    pub build_dir: PathBuf,
    /// `sandbox-dev-shm-size`: the `size=` of the tmpfs on `/dev/shm`.
    pub dev_shm_size: String,
    /// `allowed-impure-host-deps`: prefixes `__impureHostDeps` may ask for.
    pub allowed_impure_host_deps: BTreeSet<String>,
    /// `filter-syscalls`: the seccomp filter.
    pub filter_syscalls: bool,
    /// `allow-new-privileges`: leave `no_new_privs` unset.
    pub allow_new_privileges: bool,
}

impl Default for SandboxSettings {
    fn default() -> SandboxSettings {
        SandboxSettings {
            mode: SandboxMode::Disabled,
            paths: BTreeSet::new(),
            fallback: true,
            build_dir: PathBuf::from("/build"),
            dev_shm_size: "50%".into(),
            allowed_impure_host_deps: BTreeSet::new(),
            filter_syscalls: true,
            allow_new_privileges: false,
        }
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected 'true' or 'false'".into()),
    }
}

fn words(value: &str) -> impl Iterator<Item = String> + '_ {
    value.split_ascii_whitespace().map(str::to_owned)
}

impl SandboxSettings {
    /// Applies the setting `name` (a Nix name or alias, or `extra-` and a list's name);
    /// `None` when it is not a sandbox setting, else whether `value` was good (the reason
    /// when not). The mode is `engine::settings`'s.
    pub fn set(&mut self, name: &str, value: &str) -> Option<Result<(), String>> {
        let mut result = Ok(());
        match name {
            "sandbox-paths" | "build-chroot-dirs" | "build-sandbox-paths" => {
                self.paths = words(value).collect()
            }
            "extra-sandbox-paths" | "extra-build-chroot-dirs" | "extra-build-sandbox-paths" => {
                self.paths.extend(words(value))
            }
            "sandbox-fallback" => result = parse_bool(value).map(|b| self.fallback = b),
            "sandbox-build-dir" => self.build_dir = PathBuf::from(value),
            "sandbox-dev-shm-size" => self.dev_shm_size = value.to_owned(),
            "allowed-impure-host-deps" => self.allowed_impure_host_deps = words(value).collect(),
            "extra-allowed-impure-host-deps" => self.allowed_impure_host_deps.extend(words(value)),
            "filter-syscalls" => result = parse_bool(value).map(|b| self.filter_syscalls = b),
            "allow-new-privileges" => {
                result = parse_bool(value).map(|b| self.allow_new_privileges = b)
            }
            _ => return None,
        }
        Some(result)
    }
}

/// A host path to appear in the sandbox (Nix's `ChrootPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChrootPath {
    pub source: PathBuf,
    pub optional: bool,
}

/// `sandbox-paths` entries by their target: `path`, `target=source`, either with a `?`
/// suffix making a missing source no error; empty entries are skipped.
pub fn parse_sandbox_paths<'a>(
    entries: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<PathBuf, ChrootPath> {
    let mut out = BTreeMap::new();
    for entry in entries {
        let (entry, optional) = match entry.strip_suffix('?') {
            Some(e) => (e, true),
            None => (entry.as_str(), false),
        };
        if entry.is_empty() {
            continue;
        }
        let (target, source) = entry.split_once('=').unwrap_or((entry, entry));
        out.insert(
            PathBuf::from(target),
            ChrootPath {
                source: PathBuf::from(source),
                optional,
            },
        );
    }
    out
}

/// Nix's `canonPath` without resolving symlinks: `.`, `..` and repeated slashes removed.
pub fn canon_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Nix's `isInDir`: `path` lies strictly under `dir`.
fn is_in_dir(path: &str, dir: &str) -> bool {
    path.len() > dir.len() + 1
        && path.starts_with(dir)
        && (dir.ends_with('/') || path.as_bytes()[dir.len()] == b'/')
}

/// Nix's `useChroot` decision. `pure` is `derivationType.isSandboxed()` (false for
/// fixed-output and impure derivations); `no_chroot` the `__noChroot` attribute; `diverted`
/// that the store's files are not at their logical paths (then the sandbox is forced).
pub fn use_sandbox(
    settings: &SandboxSettings,
    drv_path: &str,
    pure: bool,
    no_chroot: bool,
    diverted: bool,
) -> Result<bool, BuildError> {
    let wanted = match settings.mode {
        SandboxMode::Enabled if no_chroot => {
            return Err(BuildError::Other(format!(
                "derivation '{drv_path}' has '__noChroot' set, but that's not allowed when \
                 'sandbox' is 'true'"
            )));
        }
        SandboxMode::Enabled => true,
        SandboxMode::Disabled => false,
        SandboxMode::Relaxed => pure && !no_chroot,
    };
    Ok(wanted || diverted)
}

/// Whether this kernel gives us the sandbox's namespaces (probed once per process): the
/// reason when not.
pub fn namespaces_available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(crate::sandbox::linux::probe_namespaces)
        .clone()
}

/// How a build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub sandboxed: bool,
    /// Given when the sandbox was wanted but is not available and `sandbox-fallback`
    /// lets the build go on without it.
    pub warning: Option<String>,
}

/// [`use_sandbox`] for a derivation, then the kernel's word: where namespaces are refused
/// the build falls back to no sandbox with a warning (`sandbox-fallback`), or fails.
pub fn decide(
    settings: &SandboxSettings,
    store: &LocalStore,
    drv_path: &StorePath,
    parsed: &ParsedDrv<'_>,
) -> Result<Decision, BuildError> {
    let drv = parsed.derivation();
    let pure = drv
        .derivation_type()
        .map_err(|e| BuildError::Other(e.to_string()))?
        .is_sandboxed();
    let no_chroot = parsed
        .get_bool_attr("__noChroot", false)
        .map_err(BuildError::Other)?;
    let diverted = store.config().is_diverted();
    let printed = store.print(drv_path);
    if !use_sandbox(settings, &printed, pure, no_chroot, diverted)? {
        return Ok(Decision {
            sandboxed: false,
            warning: None,
        });
    }
    let mut decision = fallback(settings, &printed, diverted, namespaces_available())?;
    // One warning per run is enough.
    static WARNED: AtomicBool = AtomicBool::new(false);
    if decision.warning.is_some() && WARNED.swap(true, Ordering::Relaxed) {
        decision.warning = None;
    }
    Ok(decision)
}

/// The `sandbox-fallback` policy once the sandbox is wanted and the probe answered.
pub fn fallback(
    settings: &SandboxSettings,
    drv_path: &str,
    diverted: bool,
    available: Result<(), String>,
) -> Result<Decision, BuildError> {
    match available {
        Ok(()) => Ok(Decision {
            sandboxed: true,
            warning: None,
        }),
        Err(why) if diverted => Err(BuildError::Other(format!(
            "cannot build '{drv_path}': a store whose files are not at their logical paths \
             needs the sandbox, and this kernel refuses its namespaces ({why})"
        ))),
        Err(why) if settings.fallback => Ok(Decision {
            sandboxed: false,
            warning: Some(format!(
                "warning: the sandbox is not available ({why}); building '{drv_path}' without \
                 it, as 'sandbox-fallback' is true"
            )),
        }),
        Err(why) => Err(BuildError::Other(format!(
            "cannot build '{drv_path}' in the sandbox: this kernel refuses its namespaces \
             ({why}), and 'sandbox-fallback' is false"
        ))),
    }
}

/// Everything [`plan`] needs, as plain data.
pub struct Plan<'a> {
    pub settings: &'a SandboxSettings,
    /// The logical store dir and where its files really are.
    pub store_dir: &'a StoreDir,
    pub real_store_dir: &'a Path,
    pub drv_path: &'a StorePath,
    /// The input closure.
    pub input_paths: &'a BTreeSet<StorePath>,
    /// The closure of the store paths among the `sandbox-paths` sources.
    pub sandbox_paths_closure: &'a BTreeSet<StorePath>,
    /// The paths the outputs are built at (never bound, even when they are inputs too).
    pub outputs: &'a [StorePath],
    /// The build directory on the host.
    pub tmp_dir: &'a Path,
    /// `derivationType.isSandboxed()`: no network for the others.
    pub pure: bool,
    /// `__impureHostDeps`.
    pub impure_host_deps: &'a [String],
    /// The store offers the `kvm` system feature.
    pub kvm: bool,
    /// The builder's ids on the host (the calling user's).
    pub host_uid: u32,
    pub host_gid: u32,
    /// Whether a host path exists.
    pub host_has: &'a dyn Fn(&Path) -> bool,
}

/// Nix's user and group inside the sandbox.
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 100;

/// Where the sandbox of `drv_path` is assembled: next to the derivation in the real store
/// dir, so that outputs move into the store with a rename.
pub fn chroot_dir(real_store_dir: &Path, drv_path: &StorePath) -> PathBuf {
    real_store_dir.join(format!("{drv_path}.chroot"))
}

/// The sandbox of one build (Nix's `dirsInChroot` and chroot preparation).
pub fn plan(p: &Plan<'_>) -> Result<Namespaces, BuildError> {
    let printed = |path: &StorePath| format!("{}/{path}", p.store_dir.as_str());
    let mut dirs = parse_sandbox_paths(&p.settings.paths);
    for path in p.sandbox_paths_closure.iter().chain(p.input_paths) {
        dirs.insert(
            PathBuf::from(printed(path)),
            ChrootPath {
                source: p.real_store_dir.join(path.to_string()),
                optional: false,
            },
        );
    }
    for dep in p.impure_host_deps {
        let canon = canon_path(dep);
        let allowed = p.settings.allowed_impure_host_deps.iter().any(|a| {
            let a = canon_path(a);
            canon == a || is_in_dir(&canon, &a)
        });
        if !allowed {
            return Err(BuildError::Other(format!(
                "derivation '{}' requested impure path '{dep}', but it was not in \
                 allowed-impure-host-deps",
                printed(p.drv_path)
            )));
        }
        dirs.insert(
            PathBuf::from(dep),
            ChrootPath {
                source: PathBuf::from(dep),
                optional: true,
            },
        );
    }
    for o in p.outputs {
        dirs.remove(Path::new(&printed(o)));
    }

    let minimal_dev = !dirs.contains_key(Path::new("/dev"));
    let mut host_defaults: Vec<&str> = Vec::new();
    if minimal_dev {
        host_defaults.push("/dev/full");
        if p.kvm && (p.host_has)(Path::new("/dev/kvm")) {
            host_defaults.push("/dev/kvm");
        }
        host_defaults.extend(["/dev/null", "/dev/random", "/dev/tty", "/dev/urandom"]);
        host_defaults.push("/dev/zero");
    }
    let mut files = vec![SandboxFile {
        target: PathBuf::from("/etc/group"),
        contents: format!("root:x:0:\nnixbld:!:{SANDBOX_GID}:\nnogroup:x:65534:\n").into_bytes(),
    }];
    if p.pure {
        files.push(SandboxFile {
            target: PathBuf::from("/etc/hosts"),
            contents: b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
        });
    } else {
        files.push(SandboxFile {
            target: PathBuf::from("/etc/nsswitch.conf"),
            contents: b"hosts: files dns\nservices: files\n".to_vec(),
        });
        for f in ["/etc/resolv.conf", "/etc/services", "/etc/hosts"] {
            if (p.host_has)(Path::new(f)) {
                host_defaults.push(f);
            }
        }
    }
    let build_dir = p.settings.build_dir.display();
    files.push(SandboxFile {
        target: PathBuf::from("/etc/passwd"),
        contents: format!(
            "root:x:0:0:Nix build user:{build_dir}:/noshell\n\
             nixbld:x:{SANDBOX_UID}:{SANDBOX_GID}:Nix build user:{build_dir}:/noshell\n\
             nobody:x:65534:65534:Nobody:/:/noshell\n"
        )
        .into_bytes(),
    });
    for d in host_defaults {
        dirs.entry(PathBuf::from(d)).or_insert(ChrootPath {
            source: PathBuf::from(d),
            optional: false,
        });
    }
    // A bound file hides the one written, as Nix's bind over its file does.
    files.retain(|f| !dirs.contains_key(&f.target));

    // With the host's `/dev` bound, its `/dev/ptmx` is there already.
    let devpts = minimal_dev
        && (p.host_has)(Path::new("/dev/pts/ptmx"))
        && !dirs.contains_key(Path::new("/dev/ptmx"))
        && !dirs.contains_key(Path::new("/dev/pts"));
    let binds = dirs
        .into_iter()
        .filter(|(_, c)| c.source != Path::new("/proc"))
        .map(|(target, c)| BindMount {
            source: c.source,
            target,
            read_only: true,
            optional: c.optional,
        })
        .collect();
    Ok(Namespaces {
        chroot: chroot_dir(p.real_store_dir, p.drv_path),
        store_dir: PathBuf::from(p.store_dir.as_str()),
        build_dir: p.tmp_dir.to_owned(),
        sandbox_build_dir: p.settings.build_dir.clone(),
        binds,
        files,
        private_network: p.pure,
        uid: IdMap {
            inside: SANDBOX_UID,
            outside: p.host_uid,
        },
        gid: IdMap {
            inside: SANDBOX_GID,
            outside: p.host_gid,
        },
        hostname: "localhost".into(),
        domainname: "(none)".into(),
        minimal_dev,
        devpts,
        dev_shm_size: (p.host_has)(Path::new("/dev/shm")).then(|| p.settings.dev_shm_size.clone()),
        seccomp: p.settings.filter_syscalls,
        allow_new_privileges: p.settings.allow_new_privileges,
        protect_proc: p.host_uid == 0,
    })
}

/// The closure of the `sandbox-paths` sources that lie in the store (paths that are not
/// valid are left out, as Nix does).
pub fn sandbox_paths_closure(
    store: &LocalStore,
    settings: &SandboxSettings,
) -> Result<BTreeSet<StorePath>, BuildError> {
    let store_dir = store.store_dir().as_str();
    let mut roots = Vec::new();
    for c in parse_sandbox_paths(&settings.paths).values() {
        let Some(rest) = c
            .source
            .to_str()
            .and_then(|s| s.strip_prefix(store_dir))
            .and_then(|s| s.strip_prefix('/'))
        else {
            continue;
        };
        let base = rest.split('/').next().unwrap_or_default();
        if let Ok(path) = StorePath::from_base_name(base)
            && store.is_valid(&path).unwrap_or(false)
        {
            roots.push(path);
        }
    }
    if roots.is_empty() {
        return Ok(BTreeSet::new());
    }
    store
        .compute_fs_closure(roots, ClosureFlags::default())
        .map_err(|e| BuildError::Other(format!("{e}\nwhile processing 'sandbox-paths'")))
}

/// What the build preparation calls once the build directory exists: the sandbox of the
/// build (see [`plan`]) with this host's facts, after clearing a stale chroot directory.
pub fn namespaces(
    build_settings: &BuildSettings,
    store: &LocalStore,
    drv_path: &StorePath,
    parsed: &ParsedDrv<'_>,
    input_paths: &BTreeSet<StorePath>,
    outputs: &[StorePath],
    tmp_dir: &Path,
) -> Result<Namespaces, BuildError> {
    let settings = &build_settings.sandbox;
    let kvm = build_settings.system_features.contains("kvm");
    let drv = parsed.derivation();
    let pure = drv
        .derivation_type()
        .map_err(|e| BuildError::Other(e.to_string()))?
        .is_sandboxed();
    let impure_host_deps = parsed
        .get_strings_attr("__impureHostDeps")
        .map_err(BuildError::Other)?
        .unwrap_or_default();
    let closure = sandbox_paths_closure(store, settings)?;
    let real_store_dir = &store.config().real_store_dir;
    let chroot = chroot_dir(real_store_dir, drv_path);
    crate::engine::store::canon::delete_path(&chroot)
        .map_err(|e| BuildError::Other(e.to_string()))?;
    plan(&Plan {
        settings,
        store_dir: store.store_dir(),
        real_store_dir,
        drv_path,
        input_paths,
        sandbox_paths_closure: &closure,
        outputs,
        tmp_dir,
        pure,
        impure_host_deps: &impure_host_deps,
        kvm,
        host_uid: nix::unistd::getuid().as_raw(),
        host_gid: nix::unistd::getgid().as_raw(),
        host_has: &|p: &Path| p.exists(),
    })
}

/// Where an output built at `path` is inside the sandbox's root, seen from the host.
pub fn output_location(ns: &Namespaces, path: &Path) -> PathBuf {
    let mut p = ns.chroot.as_os_str().to_owned();
    p.push(path.as_os_str());
    PathBuf::from(p)
}

/// After the build: outputs left in the sandbox (a failed build's) are moved to the store
/// for inspection, as Nix does in normal mode, where nothing is there yet; then the
/// sandbox's root is deleted.
pub fn clean_up(ns: &Namespaces, outputs: &[(PathBuf, PathBuf)], move_out: bool) {
    if move_out {
        for (location, real) in outputs {
            if std::fs::symlink_metadata(location).is_ok()
                && std::fs::symlink_metadata(real).is_err()
            {
                let _ = std::fs::rename(location, real);
            }
        }
    }
    let _ = crate::engine::store::canon::delete_path(&ns.chroot);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    const A: &str = "7rjj86a15146cq1d3qy068lml7n8ykzm-a";
    const B: &str = "9aqnqgsb7bxdjqjyl5gfr4g0yjq3mcwl-b";
    const OUT: &str = "xn1r5dmdmz7d6zzw6dlnvb1rnfswrpfy-out";
    const DRV: &str = "2zibknfy378am05sqbxl13zgi8jsaajv-x.drv";

    fn settings() -> SandboxSettings {
        let mut s = SandboxSettings {
            mode: SandboxMode::Enabled,
            ..SandboxSettings::default()
        };
        s.set("sandbox-paths", "/bin/sh=/bin/busybox /usr/lib/opt? ")
            .unwrap()
            .unwrap();
        s.set("extra-sandbox-paths", "/etc/ssl=/nix/store/x/ssl? /proc")
            .unwrap()
            .unwrap();
        s
    }

    fn plan_with(
        s: &SandboxSettings,
        pure: bool,
        host: &dyn Fn(&Path) -> bool,
        impure: &[String],
    ) -> Result<Namespaces, BuildError> {
        let store_dir = StoreDir::new("/nix/store").unwrap();
        let inputs = BTreeSet::from([sp(A), sp(OUT)]);
        let closure = BTreeSet::from([sp(B)]);
        plan(&Plan {
            settings: s,
            store_dir: &store_dir,
            real_store_dir: Path::new("/root/nix/store"),
            drv_path: &sp(DRV),
            input_paths: &inputs,
            sandbox_paths_closure: &closure,
            outputs: &[sp(OUT)],
            tmp_dir: Path::new("/tmp/nix-build-x.drv-0"),
            pure,
            impure_host_deps: impure,
            kvm: true,
            host_uid: 0,
            host_gid: 0,
            host_has: host,
        })
    }

    fn targets(ns: &Namespaces) -> Vec<(String, String, bool)> {
        ns.binds
            .iter()
            .map(|b| {
                (
                    b.target.display().to_string(),
                    b.source.display().to_string(),
                    b.optional,
                )
            })
            .collect()
    }

    #[test]
    fn settings_by_nix_names_and_aliases() {
        let mut s = SandboxSettings::default();
        assert_eq!(s.set("max-jobs", "1"), None);
        assert!(s.set("sandbox-fallback", "maybe").unwrap().is_err());
        s.set("sandbox-fallback", "false").unwrap().unwrap();
        s.set("build-sandbox-paths", "/a /b=/c").unwrap().unwrap();
        s.set("extra-build-chroot-dirs", "/d?").unwrap().unwrap();
        s.set("sandbox-build-dir", "/sandbox").unwrap().unwrap();
        s.set("sandbox-dev-shm-size", "1g").unwrap().unwrap();
        s.set("allowed-impure-host-deps", "/usr/lib")
            .unwrap()
            .unwrap();
        s.set("filter-syscalls", "false").unwrap().unwrap();
        s.set("allow-new-privileges", "true").unwrap().unwrap();
        assert!(!s.fallback && !s.filter_syscalls && s.allow_new_privileges);
        assert_eq!(
            s.paths,
            BTreeSet::from(["/a".into(), "/b=/c".into(), "/d?".into()])
        );
        assert_eq!(s.build_dir, Path::new("/sandbox"));
        assert_eq!(s.dev_shm_size, "1g");
        let parsed = parse_sandbox_paths(&s.paths);
        assert_eq!(
            parsed[Path::new("/b")],
            ChrootPath {
                source: "/c".into(),
                optional: false
            }
        );
        assert!(parsed[Path::new("/d")].optional);
        assert_eq!(parsed[Path::new("/a")].source, Path::new("/a"));
    }

    #[test]
    fn the_sandbox_decision_follows_nix() {
        let mut s = SandboxSettings::default();
        let d = |s: &SandboxSettings, pure, no_chroot, diverted| {
            use_sandbox(s, "/nix/store/x.drv", pure, no_chroot, diverted)
        };
        assert_eq!(d(&s, true, false, false), Ok(false));
        assert_eq!(d(&s, true, true, true), Ok(true), "diverted stores need it");
        s.mode = SandboxMode::Enabled;
        assert_eq!(d(&s, false, false, false), Ok(true), "fixed outputs too");
        assert_eq!(
            d(&s, true, true, false).unwrap_err().to_string(),
            "derivation '/nix/store/x.drv' has '__noChroot' set, but that's not allowed when \
             'sandbox' is 'true'"
        );
        s.mode = SandboxMode::Relaxed;
        assert_eq!(d(&s, true, false, false), Ok(true));
        assert_eq!(d(&s, false, false, false), Ok(false));
        assert_eq!(d(&s, true, true, false), Ok(false));
        assert_eq!(d(&s, true, true, true), Ok(true));
    }

    #[test]
    fn fallback_warns_or_fails() {
        let mut s = SandboxSettings::default();
        let no = || Err("EPERM".to_owned());
        let ok = fallback(&s, "/x.drv", false, Ok(())).unwrap();
        assert!(ok.sandboxed && ok.warning.is_none());
        let warned = fallback(&s, "/x.drv", false, no()).unwrap();
        assert!(!warned.sandboxed);
        assert!(
            warned
                .warning
                .unwrap()
                .starts_with("warning: the sandbox is not available (EPERM)")
        );
        assert!(fallback(&s, "/x.drv", true, no()).is_err());
        s.fallback = false;
        let err = fallback(&s, "/x.drv", false, no()).unwrap_err().to_string();
        assert!(err.contains("'sandbox-fallback' is false"), "{err}");
    }

    #[test]
    fn a_pure_build_sees_its_inputs_and_the_sandbox_paths() {
        let host = |p: &Path| p != Path::new("/dev/kvm");
        let ns = plan_with(&settings(), true, &host, &[]).unwrap();
        assert_eq!(
            ns.chroot,
            Path::new(&format!("/root/nix/store/{DRV}.chroot"))
        );
        assert_eq!(ns.store_dir, Path::new("/nix/store"));
        assert_eq!(ns.sandbox_build_dir, Path::new("/build"));
        assert_eq!(ns.build_dir, Path::new("/tmp/nix-build-x.drv-0"));
        let s = |a: &str, b: &str, o| (a.to_owned(), b.to_owned(), o);
        assert_eq!(
            targets(&ns),
            vec![
                s("/bin/sh", "/bin/busybox", false),
                s("/dev/full", "/dev/full", false),
                s("/dev/null", "/dev/null", false),
                s("/dev/random", "/dev/random", false),
                s("/dev/tty", "/dev/tty", false),
                s("/dev/urandom", "/dev/urandom", false),
                s("/dev/zero", "/dev/zero", false),
                s("/etc/ssl", "/nix/store/x/ssl", true),
                // Physical paths at their logical place; the output is not bound.
                s(
                    &format!("/nix/store/{A}"),
                    &format!("/root/nix/store/{A}"),
                    false
                ),
                s(
                    &format!("/nix/store/{B}"),
                    &format!("/root/nix/store/{B}"),
                    false
                ),
                s("/usr/lib/opt", "/usr/lib/opt", true),
            ]
        );
        assert!(ns.binds.iter().all(|b| b.read_only));
        assert!(ns.private_network && ns.minimal_dev && ns.devpts && ns.seccomp);
        assert!(ns.protect_proc && !ns.allow_new_privileges);
        assert_eq!(ns.dev_shm_size.as_deref(), Some("50%"));
        assert_eq!((ns.uid.inside, ns.gid.inside), (1000, 100));
        assert_eq!(
            (ns.hostname.as_str(), ns.domainname.as_str()),
            ("localhost", "(none)")
        );
        let file = |name: &str| {
            ns.files
                .iter()
                .find(|f| f.target == Path::new(name))
                .map(|f| String::from_utf8(f.contents.clone()).unwrap())
        };
        assert_eq!(
            file("/etc/passwd").unwrap(),
            "root:x:0:0:Nix build user:/build:/noshell\n\
             nixbld:x:1000:100:Nix build user:/build:/noshell\n\
             nobody:x:65534:65534:Nobody:/:/noshell\n"
        );
        assert_eq!(
            file("/etc/group").unwrap(),
            "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n"
        );
        assert_eq!(
            file("/etc/hosts").unwrap(),
            "127.0.0.1 localhost\n::1 localhost\n"
        );
        assert_eq!(file("/etc/nsswitch.conf"), None);
    }

    #[test]
    fn a_fixed_output_build_keeps_the_network_and_its_files() {
        let host = |p: &Path| p != Path::new("/etc/services") && p != Path::new("/dev/shm");
        let ns = plan_with(&settings(), false, &host, &[]).unwrap();
        assert!(!ns.private_network);
        assert_eq!(ns.dev_shm_size, None);
        let t = targets(&ns);
        assert!(t.iter().any(|b| b.0 == "/etc/resolv.conf"));
        assert!(t.iter().any(|b| b.0 == "/etc/hosts"));
        assert!(
            t.iter().any(|b| b.0 == "/dev/kvm"),
            "kvm feature and device"
        );
        assert!(
            !t.iter().any(|b| b.0 == "/etc/services"),
            "absent on the host"
        );
        let names: Vec<_> = ns.files.iter().map(|f| f.target.clone()).collect();
        assert_eq!(
            names,
            vec![
                PathBuf::from("/etc/group"),
                PathBuf::from("/etc/nsswitch.conf"),
                PathBuf::from("/etc/passwd")
            ]
        );
    }

    #[test]
    fn a_bound_dev_and_impure_host_deps() {
        let mut s = settings();
        s.set("extra-sandbox-paths", "/dev").unwrap().unwrap();
        let all = |_: &Path| true;
        let deps = vec!["/usr/lib/libfoo.so".to_owned()];
        let err = plan_with(&s, true, &all, &deps).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "derivation '/nix/store/{DRV}' requested impure path '/usr/lib/libfoo.so', but \
                 it was not in allowed-impure-host-deps"
            )
        );
        s.set("allowed-impure-host-deps", "/usr/./lib/")
            .unwrap()
            .unwrap();
        let ns = plan_with(&s, true, &all, &deps).unwrap();
        assert!(!ns.minimal_dev && !ns.devpts);
        let t = targets(&ns);
        assert!(t.contains(&(
            "/usr/lib/libfoo.so".into(),
            "/usr/lib/libfoo.so".into(),
            true
        )));
        assert!(t.iter().any(|b| b.0 == "/dev"));
        assert!(!t.iter().any(|b| b.0 == "/dev/null"));
        // `/usr/libfoo` is not under `/usr/lib`.
        s.set("allowed-impure-host-deps", "/usr/lib")
            .unwrap()
            .unwrap();
        let deps = vec!["/usr/libfoo".to_owned()];
        assert!(plan_with(&s, true, &all, &deps).is_err());
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canon_path("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(canon_path("/.."), "/");
        assert!(is_in_dir("/a/b", "/a") && !is_in_dir("/ab", "/a") && !is_in_dir("/a", "/a"));
    }
}
