//! `nix.conf`-style settings with Nix's names, aliases and defaults: read from
//! `$NIX_CONF_DIR/nix.conf` (default `/etc/nix`), then `$XDG_CONFIG_HOME/drover/drover.conf`
//! (default `~/.config`), then `--option NAME VALUE` and the command-line flags. They produce
//! the scheduler's [`SchedulerSettings`] and the builds' [`BuildSettings`].
//!
//! The file format is Nix's: `name = value` lines, `#` comments, `include FILE` and
//! `!include FILE` (no error when missing), list values separated by white space, and
//! `extra-NAME` appending to a list setting. Settings Nix knows but drover does not use are
//! accepted quietly; unknown ones give Nix's warning.
//!
//! Two defaults differ from Nix: `sandbox` is false (Nix: true on Linux; Debian's nix.conf
//! sets it false too) and `build-users-group` is empty (build users are not supported yet;
//! builds run as the calling user).
//!
//! Substitution: `substitute`, `substituters` (+ `extra-`), `trusted-public-keys` (+ `extra-`),
//! `require-sigs`, `fallback`, the file-transfer settings (`http-connections`,
//! `connect-timeout`, `download-attempts`, `stalled-download-timeout`) and
//! `max-substitution-jobs` (from later Nix; unset, substitutions share the build slots as in
//! Nix 2.8). Nix's default cache, `https://cache.nixos.org`, serves `/nix/store`: for a store
//! with another store dir it is left out without asking it (Nix asks, then refuses it).
//! `always-allow-substitutes` (which overrides `allowSubstitutes = false`) came after Nix 2.8:
//! as in 2.8 it is an unknown setting, with a warning, and derivations keep their say.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::engine::build::BuildSettings;
use crate::engine::build::sandbox::SandboxSettings;
use crate::engine::format::{PublicKeys, StoreDir};
use crate::engine::scheduler::Settings as SchedulerSettings;
use crate::engine::substitute::{HttpOptions, SubstituterConfig};

/// Nix's default `substituters`, its `trusted-public-keys`, and the store dir it serves.
const DEFAULT_SUBSTITUTER: &str = "https://cache.nixos.org/";
const DEFAULT_PUBLIC_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Whether `uri` is Nix's default cache (whose `nix-cache-info` says `StoreDir: /nix/store`).
fn is_default_cache(uri: &str) -> bool {
    uri.split('?').next().map(|u| u.trim_end_matches('/')) == Some("https://cache.nixos.org")
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{file}:{line}: expected 'name = value', got '{text}'")]
    Syntax {
        file: String,
        line: usize,
        text: String,
    },
    #[error("setting '{name}' has invalid value '{value}': {reason}")]
    BadValue {
        name: String,
        value: String,
        reason: String,
    },
    #[error("reading '{file}': {message}")]
    Read { file: String, message: String },
}

/// The sandbox modes of the `sandbox` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    Enabled,
    Disabled,
    Relaxed,
}

/// Every setting drover reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_jobs: u32,
    pub cores: u32,
    pub keep_failed: bool,
    pub keep_going: bool,
    pub fallback: bool,
    pub log_lines: usize,
    pub max_silent_time: u64,
    pub timeout: u64,
    pub substitute: bool,
    pub substituters: Vec<String>,
    /// `substituters` was set (not Nix's default).
    pub substituters_set: bool,
    pub trusted_public_keys: Vec<String>,
    pub require_sigs: bool,
    pub max_substitution_jobs: Option<u32>,
    pub http: HttpOptions,
    pub poll_interval: u64,
    pub repeat: u32,
    pub enforce_determinism: bool,
    pub max_log_size: u64,
    pub cache_failures: bool,
    pub system: String,
    pub extra_platforms: BTreeSet<String>,
    pub system_features: BTreeSet<String>,
    pub sandbox: SandboxMode,
    /// The other sandbox settings (`sandbox-paths`, `sandbox-fallback`, ...).
    pub sandboxing: SandboxSettings,
    pub build_users_group: String,
    pub keep_build_log: bool,
    pub compress_build_log: bool,
    pub impersonate_linux_26: bool,
    /// Where build directories are created (later Nix's `build-dir`); default `$TMPDIR`
    /// or `/tmp`.
    pub build_dir: Option<PathBuf>,
    /// Warnings met while reading (unknown settings), for the caller to print.
    pub warnings: Vec<String>,
}

/// Settings Nix 2.8 knows that drover accepts without using.
const IGNORED: &[&str] = &[
    "store",
    "build-hook",
    "builders",
    "builders-use-substitutes",
    "gc-reserved-space",
    "fsync-metadata",
    "use-sqlite-wal",
    "sync-before-registering",
    "keep-outputs",
    "keep-derivations",
    "auto-optimise-store",
    "keep-env-derivations",
    "darwin-log-sandbox-violations",
    "run-diff-hook",
    "diff-hook",
    "secret-key-files",
    "tarball-ttl",
    "trusted-substituters",
    "trusted-users",
    "narinfo-cache-negative-ttl",
    "narinfo-cache-positive-ttl",
    "allowed-users",
    "print-missing",
    "pre-build-hook",
    "post-build-hook",
    "netrc-file",
    "ignored-acls",
    "hashed-mirrors",
    "min-free",
    "max-free",
    "min-free-check-interval",
    "plugin-files",
    "experimental-features",
    "nar-buffer-size",
    "allow-symlinked-store",
    "trusted-binary-caches",
    "show-trace",
    "warn-dirty",
    "flake-registry",
    "accept-flake-config",
    "restrict-eval",
    "pure-eval",
    "allow-import-from-derivation",
    "allowed-uris",
    "max-call-depth",
    "nix-path",
    "access-tokens",
    "commit-lockfile-summary",
];

fn default_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        other => other,
    };
    format!("{arch}-{}", std::env::consts::OS)
}

impl Default for Settings {
    fn default() -> Settings {
        let system = default_system();
        let mut extra_platforms = BTreeSet::new();
        if system == "x86_64-linux" {
            extra_platforms.insert("i686-linux".to_owned());
        }
        let mut system_features: BTreeSet<String> = ["nixos-test", "benchmark", "big-parallel"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if nix::unistd::access(
            "/dev/kvm",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_ok()
        {
            system_features.insert("kvm".to_owned());
        }
        let cores = hardware_concurrency();
        Settings {
            max_jobs: 1,
            cores,
            keep_failed: false,
            keep_going: false,
            fallback: false,
            log_lines: 10,
            max_silent_time: 0,
            timeout: 0,
            substitute: true,
            substituters: vec![DEFAULT_SUBSTITUTER.to_owned()],
            substituters_set: false,
            trusted_public_keys: vec![DEFAULT_PUBLIC_KEY.to_owned()],
            require_sigs: true,
            max_substitution_jobs: None,
            http: HttpOptions::default(),
            poll_interval: 5,
            repeat: 0,
            enforce_determinism: true,
            max_log_size: 0,
            cache_failures: false,
            system,
            extra_platforms,
            system_features,
            sandbox: SandboxMode::Disabled,
            sandboxing: SandboxSettings::default(),
            build_users_group: String::new(),
            keep_build_log: true,
            compress_build_log: true,
            impersonate_linux_26: false,
            build_dir: None,
            warnings: Vec::new(),
        }
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, SettingsError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(name, value, "expected 'true' or 'false'")),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, SettingsError> {
    value
        .parse()
        .map_err(|_| bad(name, value, "expected a non-negative integer"))
}

fn bad(name: &str, value: &str, reason: &str) -> SettingsError {
    SettingsError::BadValue {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn words(value: &str) -> impl Iterator<Item = String> + '_ {
    value.split_ascii_whitespace().map(str::to_owned)
}

/// Nix's default for `cores` and `max-jobs = auto`: C++'s `hardware_concurrency()`, the
/// number of CPUs online (not what this process may use), at least 1.
fn hardware_concurrency() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(1).max(1)
}

/// `max-jobs`: a number or `auto` (the number of CPUs).
pub fn parse_max_jobs(value: &str) -> Result<u32, SettingsError> {
    if value == "auto" {
        return Ok(hardware_concurrency());
    }
    parse_num("max-jobs", value)
}

impl Settings {
    /// The defaults, then the configuration files that exist.
    pub fn load() -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let nix_conf_dir = var("NIX_CONF_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/nix"));
        s.read_file(&nix_conf_dir.join("nix.conf"), true)?;
        let config_home = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".config")));
        if let Some(home) = config_home {
            s.read_file(&home.join("drover/drover.conf"), true)?;
        }
        Ok(s)
    }

    /// Applies a configuration file (silently nothing when `optional` and it is missing).
    pub fn read_file(&mut self, path: &Path, optional: bool) -> Result<(), SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(SettingsError::Read {
                    file: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        self.apply_text(&text, path)
    }

    /// Applies the text of a configuration file found at `path` (for relative includes).
    pub fn apply_text(&mut self, text: &str, path: &Path) -> Result<(), SettingsError> {
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
            if let [kw @ ("include" | "!include"), file] = tokens.as_slice() {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let included = dir.join(file);
                self.read_file(&included, *kw == "!include")?;
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(SettingsError::Syntax {
                    file: path.display().to_string(),
                    line: n + 1,
                    text: line.to_owned(),
                });
            };
            let value: Vec<&str> = value.split_ascii_whitespace().collect();
            self.set(name.trim(), &value.join(" "))?;
        }
        Ok(())
    }

    /// Sets one setting by its Nix name (or alias); `extra-NAME` appends to a list.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        if let Some(result) = self.sandboxing.set(name, value) {
            return result.map_err(|reason| bad(name, value, &reason));
        }
        if let Some(list) = name.strip_prefix("extra-") {
            match list {
                "substituters" | "binary-caches" => self.substituters.extend(words(value)),
                "trusted-public-keys" | "binary-cache-public-keys" => {
                    self.trusted_public_keys.extend(words(value))
                }
                "platforms" => self.extra_platforms.extend(words(value)),
                "system-features" => self.system_features.extend(words(value)),
                _ if IGNORED.contains(&list) => {}
                _ => self.warnings.push(format!("unknown setting '{name}'")),
            }
            return Ok(());
        }
        match name {
            "max-jobs" | "build-max-jobs" => self.max_jobs = parse_max_jobs(value)?,
            "cores" | "build-cores" => {
                let n: u32 = parse_num(name, value)?;
                // 0 means "all cores" to builders; Nix passes it on as is.
                self.cores = n;
            }
            "keep-failed" => self.keep_failed = parse_bool(name, value)?,
            "keep-going" => self.keep_going = parse_bool(name, value)?,
            "fallback" | "build-fallback" => self.fallback = parse_bool(name, value)?,
            "log-lines" => self.log_lines = parse_num(name, value)?,
            "max-silent-time" | "build-max-silent-time" => {
                self.max_silent_time = parse_num(name, value)?
            }
            "timeout" | "build-timeout" => self.timeout = parse_num(name, value)?,
            "substitute" | "build-use-substitutes" => self.substitute = parse_bool(name, value)?,
            "substituters" | "binary-caches" => {
                self.substituters = words(value).collect();
                self.substituters_set = true;
            }
            "trusted-public-keys" | "binary-cache-public-keys" => {
                self.trusted_public_keys = words(value).collect()
            }
            "require-sigs" => self.require_sigs = parse_bool(name, value)?,
            "max-substitution-jobs" => self.max_substitution_jobs = Some(parse_num(name, value)?),
            "http-connections" => self.http.connections = parse_num(name, value)?,
            "connect-timeout" => {
                let secs: u64 = parse_num(name, value)?;
                self.http.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "download-attempts" => self.http.attempts = parse_num(name, value)?,
            "stalled-download-timeout" => {
                self.http.stalled_timeout = Duration::from_secs(parse_num(name, value)?)
            }
            "build-poll-interval" => self.poll_interval = parse_num(name, value)?,
            "repeat" | "build-repeat" => self.repeat = parse_num(name, value)?,
            "enforce-determinism" => self.enforce_determinism = parse_bool(name, value)?,
            "max-build-log-size" | "build-max-log-size" => {
                self.max_log_size = parse_num(name, value)?
            }
            "cache-failures" | "build-cache-failure" => {
                self.cache_failures = parse_bool(name, value)?
            }
            "system" => self.system = value.to_owned(),
            "extra-platforms" => self.extra_platforms = words(value).collect(),
            "system-features" => self.system_features = words(value).collect(),
            "sandbox" | "build-use-sandbox" | "build-use-chroot" => {
                self.sandbox = match value {
                    "true" => SandboxMode::Enabled,
                    "false" => SandboxMode::Disabled,
                    "relaxed" => SandboxMode::Relaxed,
                    _ => return Err(bad(name, value, "expected 'true', 'false' or 'relaxed'")),
                }
            }
            "build-users-group" => self.build_users_group = value.to_owned(),
            "keep-build-log" | "build-keep-log" => self.keep_build_log = parse_bool(name, value)?,
            "compress-build-log" | "build-compress-log" => {
                self.compress_build_log = parse_bool(name, value)?
            }
            "impersonate-linux-26" | "build-impersonate-linux-26" => {
                self.impersonate_linux_26 = parse_bool(name, value)?
            }
            "build-dir" => {
                self.build_dir = if value.is_empty() {
                    None
                } else {
                    Some(PathBuf::from(value))
                }
            }
            _ if IGNORED.contains(&name) => {}
            _ => self.warnings.push(format!("unknown setting '{name}'")),
        }
        Ok(())
    }

    /// What the scheduler reads.
    pub fn scheduler_settings(&self, store_dir: &StoreDir) -> SchedulerSettings {
        SchedulerSettings {
            store_dir: store_dir.clone(),
            max_jobs: self.max_jobs,
            keep_going: self.keep_going,
            max_substitution_jobs: self.max_substitution_jobs,
            try_fallback: self.fallback,
            use_substitutes: self.substitute,
            // The caches that could be opened: `Substituters::uris`.
            substituters: Vec::new(),
            poll_interval_ms: self.poll_interval * 1000,
            max_silent_time_ms: self.max_silent_time * 1000,
            build_timeout_ms: self.timeout * 1000,
            build_repeat: self.repeat,
            enforce_determinism: self.enforce_determinism,
            max_log_size: self.max_log_size,
            log_lines: self.log_lines,
            cache_failures: self.cache_failures,
        }
    }

    /// What the substituters read, for a store with `store_dir`, and the warnings about
    /// caches left out. With `substitute = false` there are none (nothing is contacted).
    pub fn substituter_config(
        &self,
        store_dir: &StoreDir,
    ) -> Result<(SubstituterConfig, Vec<String>), SettingsError> {
        let mut warnings = Vec::new();
        let uris: Vec<&String> = if self.substitute {
            self.substituters
                .iter()
                .filter(|uri| {
                    let known = is_default_cache(uri) && store_dir.as_str() != DEFAULT_STORE_DIR;
                    if known && self.substituters_set {
                        warnings.push(format!(
                            "binary cache '{}' is for Nix stores with prefix \
                             '{DEFAULT_STORE_DIR}', not '{}'",
                            uri.trim_end_matches('/'),
                            store_dir.as_str()
                        ));
                    }
                    !known
                })
                .collect()
        } else {
            Vec::new()
        };
        let keys = self.trusted_public_keys.join(" ");
        let mut config = SubstituterConfig::new(uris);
        config.trusted_public_keys = PublicKeys::parse_list(&keys)
            .map_err(|e| bad("trusted-public-keys", &keys, &e.to_string()))?;
        config.require_sigs = self.require_sigs;
        config.try_fallback = self.fallback;
        config.http = self.http.clone();
        Ok((config, warnings))
    }

    /// What the builds read. `build_dir` defaults to `$TMPDIR` (or `/tmp`), with symlinks
    /// resolved as Nix does.
    pub fn build_settings(&self) -> BuildSettings {
        let build_dir = self.build_dir.clone().unwrap_or_else(|| {
            std::env::var_os("TMPDIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
        });
        let build_dir = std::fs::canonicalize(&build_dir).unwrap_or(build_dir);
        BuildSettings {
            build_dir,
            cores: self.cores,
            keep_failed: self.keep_failed,
            enforce_determinism: self.enforce_determinism,
            system: self.system.clone(),
            extra_platforms: self.extra_platforms.clone(),
            system_features: self.system_features.clone(),
            max_jobs: self.max_jobs,
            keep_build_log: self.keep_build_log,
            compress_build_log: self.compress_build_log,
            impersonate_linux_26: self.impersonate_linux_26,
            sandbox: SandboxSettings {
                mode: self.sandbox,
                ..self.sandboxing.clone()
            },
        }
    }

    /// Refuses what drover cannot do yet, rather than doing something else silently.
    pub fn check_supported(&self) -> Result<(), SettingsError> {
        if !self.build_users_group.is_empty() {
            return Err(bad(
                "build-users-group",
                &self.build_users_group,
                "build users are not supported yet; pass --option build-users-group ''",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_conf_syntax_aliases_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("more.conf"), "cores = 3\n").unwrap();
        let text = "# comment\n\
                    max-jobs = 4   # trailing comment\n\
                    build-max-silent-time = 7\n\
                    system-features = kvm  big-parallel\n\
                    extra-system-features = foo\n\
                    include more.conf\n\
                    !include missing.conf\n\
                    require-sigs = false\n\
                    no-such-setting = 1\n";
        let mut s = Settings::default();
        s.apply_text(text, &dir.path().join("nix.conf")).unwrap();
        assert_eq!(s.max_jobs, 4);
        assert_eq!(s.max_silent_time, 7);
        assert_eq!(s.cores, 3);
        assert_eq!(
            s.system_features,
            BTreeSet::from(["big-parallel".into(), "foo".into(), "kvm".into()])
        );
        assert_eq!(s.warnings, vec!["unknown setting 'no-such-setting'"]);
        let err = s
            .apply_text("include nope.conf\n", &dir.path().join("x"))
            .unwrap_err();
        assert!(matches!(err, SettingsError::Read { .. }), "{err}");
        assert!(s.apply_text("garbage\n", Path::new("x")).is_err());
        assert!(s.set("keep-going", "yes").is_err());
    }

    #[test]
    fn nix_defaults_and_scheduler_view() {
        let s = Settings::default();
        assert_eq!((s.max_jobs, s.log_lines, s.poll_interval), (1, 10, 5));
        assert!(s.enforce_determinism && !s.keep_going && !s.keep_failed);
        let sched = s.scheduler_settings(&StoreDir::new("/nix/store").unwrap());
        assert_eq!(sched.poll_interval_ms, 5000);
        assert!(s.check_supported().is_ok());
        let mut t = s.clone();
        t.set("sandbox", "relaxed").unwrap();
        t.set("extra-sandbox-paths", "/bin/sh=/bin/busybox")
            .unwrap();
        assert!(t.set("sandbox-fallback", "no").is_err());
        let b = t.build_settings();
        assert_eq!(b.sandbox.mode, SandboxMode::Relaxed);
        assert!(b.sandbox.paths.contains("/bin/sh=/bin/busybox"));
        assert!(t.check_supported().is_ok());
        assert!(parse_max_jobs("auto").unwrap() >= 1);
    }

    #[test]
    fn substitution_settings_and_the_default_cache() {
        let nix = StoreDir::new("/nix/store").unwrap();
        let other = StoreDir::new("/tmp/x/store").unwrap();
        let s = Settings::default();
        assert!(s.substitute && s.require_sigs);
        let (config, warnings) = s.substituter_config(&nix).unwrap();
        assert_eq!(config.substituters, [DEFAULT_SUBSTITUTER]);
        assert!(
            config
                .trusted_public_keys
                .get("cache.nixos.org-1")
                .is_some()
        );
        assert!(warnings.is_empty());
        // Another store dir: Nix's default cache is left out without asking it.
        let (config, warnings) = s.substituter_config(&other).unwrap();
        assert!(config.substituters.is_empty() && warnings.is_empty());
        let sched = s.scheduler_settings(&nix);
        assert!(sched.use_substitutes && sched.max_substitution_jobs.is_none());

        let mut t = Settings::default();
        t.set("substituters", "https://cache.nixos.org file:///a")
            .unwrap();
        t.set("extra-substituters", "file:///b").unwrap();
        t.set(
            "extra-trusted-public-keys",
            "k-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .unwrap();
        t.set("require-sigs", "false").unwrap();
        t.set("max-substitution-jobs", "4").unwrap();
        t.set("http-connections", "3").unwrap();
        t.set("connect-timeout", "2").unwrap();
        t.set("fallback", "true").unwrap();
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let (config, warnings) = t.substituter_config(&other).unwrap();
        assert_eq!(config.substituters, ["file:///a", "file:///b"]);
        assert_eq!(
            warnings,
            [
                "binary cache 'https://cache.nixos.org' is for Nix stores with prefix \
              '/nix/store', not '/tmp/x/store'"
            ]
        );
        assert_eq!(config.trusted_public_keys.len(), 2);
        assert!(!config.require_sigs && config.try_fallback);
        assert_eq!(config.http.connections, 3);
        assert_eq!(config.http.connect_timeout, Some(Duration::from_secs(2)));
        let sched = t.scheduler_settings(&nix);
        assert_eq!(sched.max_substitution_jobs, Some(4));
        assert!(sched.try_fallback);

        // Later Nix's `always-allow-substitutes` is unknown to Nix 2.8, so to drover.
        t.set("always-allow-substitutes", "true").unwrap();
        assert_eq!(t.warnings, ["unknown setting 'always-allow-substitutes'"]);

        // `substitute = false`: no cache is opened at all.
        t.set("substitute", "false").unwrap();
        let (config, _) = t.substituter_config(&nix).unwrap();
        assert!(config.substituters.is_empty());
        assert!(!t.scheduler_settings(&nix).use_substitutes);
        t.set("trusted-public-keys", "garbage").unwrap();
        assert!(t.substituter_config(&nix).is_err());
    }
}
