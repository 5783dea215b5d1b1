//! The settings the scheduler reads: Nix's scheduling options with Nix's defaults.

use crate::engine::format::StoreDir;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Prints paths in messages and events.
    pub store_dir: StoreDir,
    /// `max-jobs`: build slots, shared by builds and substitutions (substitutions always get
    /// at least one).
    pub max_jobs: u32,
    /// `max-substitution-jobs` (later Nix): substitutions get this many slots of their own,
    /// apart from the build slots. `None` is Nix 2.8: they share the build slots.
    pub max_substitution_jobs: Option<u32>,
    /// `keep-going`: a failure does not stop the other goals.
    pub keep_going: bool,
    /// `fallback`: build when a substitute fails to download.
    pub try_fallback: bool,
    /// `substitute`: try substitutes at all.
    pub use_substitutes: bool,
    /// Substituter names (URIs), tried in order; effects refer to them by index.
    pub substituters: Vec<String>,
    /// `build-poll-interval` (Nix: 5 s), how often goals waiting for a lock retry.
    pub poll_interval_ms: u64,
    /// `max-silent-time`, 0 = none.
    pub max_silent_time_ms: u64,
    /// `timeout`, 0 = none.
    pub build_timeout_ms: u64,
    /// `repeat`: extra rounds of every non-fixed-output build.
    pub build_repeat: u32,
    /// `enforce-determinism` (Nix default true): differing rounds fail the build.
    pub enforce_determinism: bool,
    /// `max-build-log-size` in bytes, 0 = none.
    pub max_log_size: u64,
    /// `log-lines`: how many last log lines a build failure message shows.
    pub log_lines: usize,
    /// Remember failed builds and fail them at once next time (old Nix's
    /// `build-cache-failure`, Nix default false).
    pub cache_failures: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            store_dir: StoreDir::new("/nix/store").expect("valid store dir"),
            max_jobs: 1,
            max_substitution_jobs: None,
            keep_going: false,
            try_fallback: false,
            use_substitutes: true,
            substituters: Vec::new(),
            poll_interval_ms: 5000,
            max_silent_time_ms: 0,
            build_timeout_ms: 0,
            build_repeat: 0,
            enforce_determinism: true,
            max_log_size: 0,
            log_lines: 10,
            cache_failures: false,
        }
    }
}
