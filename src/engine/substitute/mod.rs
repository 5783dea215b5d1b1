//! Substitution: making store paths valid by downloading them from binary caches instead of
//! building them, exactly as Nix's substituters do.
//!
//! [`Substituters`] is the list of caches of the `substituters` setting, opened and sorted by
//! priority (lower first, the setting's order among equals); its index is the substituter
//! number of the scheduler's `QuerySubstitute` and `StartSubstitution` effects, so the
//! scheduler's substituter list must be [`Substituters::uris`]. It answers the two questions
//! the scheduler asks:
//!
//! * [`Substituters::query`]: does cache `i` have this path? Narinfo lookups are cached for
//!   the run, found and not found alike (never failures), and concurrent lookups of one path
//!   share one request. Many paths are looked up at once ([`Substituters::query_many`], or
//!   one `query` task per path): up to `http-connections` requests are in flight.
//! * [`Substituters::substitute`]: download, verify and install a path (the `install` module):
//!   signatures when `require-sigs` (unless the cache is `trusted`; content-addressed paths
//!   prove themselves), the compressed file's size and hash, the NAR's size and hash, the
//!   content address; the NAR is unpacked into a scratch path in the store, checked by the
//!   strict NAR reader, canonicalised, moved into place and registered with its references,
//!   deriver, signatures and content address. A failure leaves nothing behind.
//!
//! Both come in a blocking form (for worker threads) and an async form for the tokio driver,
//! which runs the blocking work on tokio's blocking pool and never blocks a runtime thread.
//! `cache` reads a cache (`file`, `http` are the transports), `compression` has the codecs,
//! `write` writes a cache (`drover copy --to`).
//!
//! # Use from the build executor
//!
//! * At start-up, on the blocking pool (an HTTP cache's `nix-cache-info` is fetched):
//!   `Substituters::open(SubstituterConfig::from_settings(substituters, trusted_public_keys,
//!   require_sigs)?, store.store_dir())`, with `try_fallback`, `http` and `log` set from the
//!   other settings; then `scheduler::Settings::substituters = subs.uris()`.
//! * `Effect::QuerySubstitute { ticket, path, substituter }`: spawn
//!   `subs.query(path, substituter)` and answer `Input::SubstituteInfo { ticket, answer }`.
//! * `Effect::StartSubstitution { ticket, path, substituter, repair }`: keep an
//!   `Arc<AtomicBool>` for the ticket, spawn `subs.substitute(store, path, substituter, repair,
//!   cancel, progress)` and answer `Input::SubstitutionFinished { ticket, outcome }`; `progress`
//!   receives a [`Progress`] per chunk (download and NAR bytes done and expected).
//! * `Effect::CancelSubstitution { ticket }`: set that ticket's flag.
//!
//! The `driven` module of `tests/substitute.rs` is a complete executor for runs that only
//! substitute, on the real scheduler and driver.

pub mod cache;
pub mod compression;
pub mod file;
pub mod http;
mod install;
pub mod write;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;
use thiserror::Error;

use crate::engine::format::nar::NarError;
use crate::engine::format::narinfo::CacheInfoError;
use crate::engine::format::signature::{KeyError, VerifyError};
use crate::engine::format::{NarInfo, PublicKeys, StoreDir, StorePath};
use crate::engine::scheduler::{SubstituteAnswer, SubstitutionOutcome};
use crate::engine::store::canon::CanonError;
use crate::engine::store::{LocalStore, StoreError};

pub use cache::{BinaryCache, StoreUri};
pub use compression::Compression;
pub use http::HttpOptions;
pub use write::{CacheWriter, WriteOptions};

/// Where substituters report what Nix prints while substituting (retries, disabled caches,
/// caches that could not be opened).
#[derive(Clone, Default)]
pub struct Logger(Option<Arc<LogFn>>);

/// What a [`Logger`] calls.
pub type LogFn = dyn Fn(LogLevel, &str) + Send + Sync;

/// How serious a logged message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Warn,
    Error,
}

impl Logger {
    pub fn new(f: impl Fn(LogLevel, &str) + Send + Sync + 'static) -> Logger {
        Logger(Some(Arc::new(f)))
    }

    /// Drops every message.
    pub fn none() -> Logger {
        Logger(None)
    }

    /// Prints `warning: …` / `error: …` on stderr, as Nix does.
    pub fn stderr() -> Logger {
        Logger::new(|level, msg| match level {
            LogLevel::Warn => eprintln!("warning: {msg}"),
            LogLevel::Error => eprintln!("error: {msg}"),
        })
    }

    pub fn warn(&self, msg: &str) {
        if let Some(f) = &self.0 {
            f(LogLevel::Warn, msg);
        }
    }

    pub fn error(&self, msg: &str) {
        if let Some(f) = &self.0 {
            f(LogLevel::Error, msg);
        }
    }
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Logger"
        } else {
            "Logger(none)"
        })
    }
}

/// Reading a cache file failed.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("unable to download '{url}': HTTP error {status} ('{reason}')")]
    Http {
        url: String,
        status: u16,
        reason: String,
        transient: bool,
    },
    #[error("unable to download '{url}': {message}")]
    Transfer {
        url: String,
        message: String,
        transient: bool,
    },
    #[error("reading '{}': {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("substituter '{0}' is disabled")]
    Disabled(String),
    #[error("binary cache '{cache}' names the file '{name}', which is not inside the cache")]
    BadName { name: String, cache: String },
}

impl FetchError {
    /// Worth another try (a server error, a network failure).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Http { transient, .. } | FetchError::Transfer { transient, .. } => {
                *transient
            }
            _ => false,
        }
    }
}

/// Why a cache could not be used or a path could not be substituted. The messages of the
/// checks are Nix's.
#[derive(Debug, Error)]
pub enum SubstituteError {
    #[error(
        "don't know how to open Nix store '{0}' as a substituter (drover reads file://, \
         http:// and https:// binary caches)"
    )]
    UnsupportedUri(String),
    #[error("binary cache '{uri}': invalid value '{value}' of parameter '{key}'")]
    BadParam {
        uri: String,
        key: String,
        value: String,
    },
    #[error("'{0}' does not appear to be a binary cache")]
    NotABinaryCache(String),
    #[error("{}", cache_info_message(uri, source))]
    CacheInfo { uri: String, source: CacheInfoError },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("NAR info file '{file}' of binary cache '{uri}' is corrupt: {detail}")]
    CorruptNarInfo {
        file: String,
        uri: String,
        detail: String,
    },
    #[error("there is no substituter number {0}")]
    NoSuchSubstituter(usize),
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    #[error("file '{file}' does not exist in binary cache '{uri}'")]
    Gone { file: String, uri: String },
    #[error("cannot add path '{0}' because it lacks a valid signature")]
    Unsigned(String),
    #[error("checking the signatures of '{path}': {source}")]
    Signature { path: String, source: VerifyError },
    #[error("cannot substitute path '{path}': its reference '{reference}' is not valid")]
    InvalidReference { path: String, reference: String },
    #[error("unknown compression method '{0}'")]
    UnknownCompression(String),
    #[error("hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    NarHashMismatch {
        path: String,
        specified: String,
        got: String,
    },
    #[error("size mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}")]
    NarSizeMismatch {
        path: String,
        specified: u64,
        got: String,
    },
    #[error(
        "ca hash mismatch importing path '{path}';\n  specified: {specified}\n  got:       {got}"
    )]
    CaHashMismatch {
        path: String,
        specified: String,
        got: String,
    },
    #[error(
        "hash mismatch in file '{url}' downloaded for path '{path}';\n  specified: \
         {specified}\n  got:       {got}"
    )]
    FileHashMismatch {
        path: String,
        url: String,
        specified: String,
        got: String,
    },
    #[error(
        "size mismatch in file '{url}' downloaded for path '{path}';\n  specified: \
         {specified}\n  got:       {got}"
    )]
    FileSizeMismatch {
        path: String,
        url: String,
        specified: u64,
        got: String,
    },
    #[error("downloading '{url}' for path '{path}' from '{uri}': {message}")]
    Download {
        path: String,
        url: String,
        uri: String,
        message: String,
    },
    #[error("decompressing '{url}' ({method}) for path '{path}': {message}")]
    Decompress {
        path: String,
        url: String,
        method: String,
        message: String,
    },
    #[error("unpacking the NAR of path '{path}' from '{uri}': {source}")]
    Unpack {
        path: String,
        uri: String,
        source: Box<NarError>,
    },
    #[error("hashing the contents of path '{path}': {source}")]
    Hashing { path: String, source: Box<NarError> },
    #[error("path '{path}' is corrupt in the store: {detail}")]
    CorruptStorePath { path: String, detail: String },
    #[error("substitution of path '{0}' was cancelled")]
    Cancelled(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Canon(#[from] CanonError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{action} '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn cache_info_message(uri: &str, e: &CacheInfoError) -> String {
    match e {
        CacheInfoError::StoreDirMismatch { cache, ours } => {
            format!("binary cache '{uri}' is for Nix stores with prefix '{cache}', not '{ours}'")
        }
        other => format!("binary cache '{uri}': {other}"),
    }
}

impl SubstituteError {
    /// The outcome the scheduler gets: a NAR that vanished from the cache is "gone" (as if
    /// the cache never had the path), anything else a failure of this substituter.
    pub fn outcome(&self) -> SubstitutionOutcome {
        match self {
            SubstituteError::Gone { .. } => SubstitutionOutcome::Gone {
                message: self.to_string(),
            },
            _ => SubstitutionOutcome::Failed {
                message: self.to_string(),
            },
        }
    }
}

/// The settings that govern substitution, as plain values (the settings module parses
/// `nix.conf` and `--option`s into them).
#[derive(Debug, Clone)]
pub struct SubstituterConfig {
    /// `substituters`, in the setting's order.
    pub substituters: Vec<String>,
    /// `trusted-public-keys` (plus the public halves of `secret-key-files`).
    pub trusted_public_keys: PublicKeys,
    /// `require-sigs`.
    pub require_sigs: bool,
    /// `--fallback`: a failing HTTP cache is disabled for a minute instead of failing the run.
    pub try_fallback: bool,
    pub http: HttpOptions,
    pub log: Logger,
}

impl SubstituterConfig {
    /// The caches at `uris`, signatures required, no trusted keys.
    pub fn new(uris: impl IntoIterator<Item = impl Into<String>>) -> SubstituterConfig {
        SubstituterConfig {
            substituters: uris.into_iter().map(Into::into).collect(),
            trusted_public_keys: PublicKeys::new(),
            require_sigs: true,
            try_fallback: false,
            http: HttpOptions::default(),
            log: Logger::none(),
        }
    }

    /// From the settings' string forms: `substituters` and `trusted-public-keys` are
    /// whitespace-separated lists.
    pub fn from_settings(
        substituters: &str,
        trusted_public_keys: &str,
        require_sigs: bool,
    ) -> Result<SubstituterConfig, KeyError> {
        let mut config = SubstituterConfig::new(substituters.split_whitespace());
        config.trusted_public_keys = PublicKeys::parse_list(trusted_public_keys)?;
        config.require_sigs = require_sigs;
        Ok(config)
    }
}

/// Bytes of one substitution so far, for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the (compressed) file downloaded.
    pub download_done: u64,
    /// The narinfo's `FileSize`, when it has one.
    pub download_expected: Option<u64>,
    /// NAR bytes unpacked.
    pub nar_done: u64,
    /// The narinfo's `NarSize`.
    pub nar_expected: u64,
}

/// Narinfo lookups so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Narinfo files requested from caches.
    pub narinfo_requests: u64,
    /// Lookups answered from the run's cache.
    pub cache_hits: u64,
}

/// A narinfo lookup's result while it is known: the narinfo, or `None` (not in the cache).
type Known = Option<Arc<NarInfo>>;
/// One lookup slot: empty until a lookup succeeds; its lock makes concurrent lookups of the
/// same path wait for the first.
type Slot = Arc<Mutex<Option<Known>>>;

/// The configured binary caches, in the order they are tried. Cheap to clone (shared).
#[derive(Clone)]
pub struct Substituters {
    inner: Arc<Inner>,
}

struct Inner {
    store_dir: StoreDir,
    caches: Vec<BinaryCache>,
    skipped: Vec<String>,
    keys: PublicKeys,
    require_sigs: bool,
    /// Narinfos by (substituter, hash part).
    narinfos: Mutex<FxHashMap<(usize, [u8; 32]), Slot>>,
    /// Bounds the async lookups in flight (`http-connections`).
    lookups: tokio::sync::Semaphore,
    connections: usize,
    requests: AtomicU64,
    hits: AtomicU64,
}

impl std::fmt::Debug for Substituters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substituters")
            .field("uris", &self.uris())
            .field("require_sigs", &self.inner.require_sigs)
            .finish_non_exhaustive()
    }
}

impl Substituters {
    /// Opens the configured caches for a store with `store_dir` (blocking: an HTTP cache's
    /// `nix-cache-info` is fetched). A cache that cannot be opened is left out with a
    /// warning, as Nix does; duplicates count once. Sorted by priority, stably.
    pub fn open(config: SubstituterConfig, store_dir: &StoreDir) -> Substituters {
        let mut caches: Vec<BinaryCache> = Vec::new();
        let mut skipped = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for uri in &config.substituters {
            if !seen.insert(uri.clone()) {
                continue;
            }
            match BinaryCache::open(
                uri,
                store_dir,
                &config.http,
                config.try_fallback,
                config.log.clone(),
            ) {
                Ok(cache) => caches.push(cache),
                Err(e) => {
                    config.log.warn(&e.to_string());
                    skipped.push(e.to_string());
                }
            }
        }
        caches.sort_by_key(BinaryCache::priority);
        let connections = config.http.connections.max(1);
        Substituters {
            inner: Arc::new(Inner {
                store_dir: store_dir.clone(),
                caches,
                skipped,
                keys: config.trusted_public_keys,
                require_sigs: config.require_sigs,
                narinfos: Mutex::new(FxHashMap::default()),
                lookups: tokio::sync::Semaphore::new(connections),
                connections,
                requests: AtomicU64::new(0),
                hits: AtomicU64::new(0),
            }),
        }
    }

    /// How many caches there are.
    pub fn len(&self) -> usize {
        self.inner.caches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.caches.is_empty()
    }

    /// The caches' URIs in the order they are tried: the scheduler's `substituters`.
    pub fn uris(&self) -> Vec<String> {
        self.inner
            .caches
            .iter()
            .map(|c| c.uri().to_owned())
            .collect()
    }

    pub fn cache(&self, sub: usize) -> Option<&BinaryCache> {
        self.inner.caches.get(sub)
    }

    /// Why configured caches were left out.
    pub fn skipped(&self) -> &[String] {
        &self.inner.skipped
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.inner.store_dir
    }

    pub fn stats(&self) -> QueryStats {
        QueryStats {
            narinfo_requests: self.inner.requests.load(Ordering::Relaxed),
            cache_hits: self.inner.hits.load(Ordering::Relaxed),
        }
    }

    fn cache_or_err(&self, sub: usize) -> Result<&BinaryCache, SubstituteError> {
        self.inner
            .caches
            .get(sub)
            .ok_or(SubstituteError::NoSuchSubstituter(sub))
    }

    fn slot(&self, path: &StorePath, sub: usize) -> Slot {
        let mut map = self
            .inner
            .narinfos
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry((sub, *path.hash_part_bytes()))
            .or_default()
            .clone()
    }

    /// The narinfo cache `sub` has for `path` (blocking). `None` when it has none, or one
    /// for another path with the same hash part (Nix's `goodStorePath`).
    pub fn narinfo(
        &self,
        path: &StorePath,
        sub: usize,
    ) -> Result<Option<Arc<NarInfo>>, SubstituteError> {
        let cache = self.cache_or_err(sub)?;
        let slot = self.slot(path, sub);
        let mut known = slot.lock().unwrap_or_else(|e| e.into_inner());
        let info = match &*known {
            Some(info) => {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                info.clone()
            }
            None => {
                self.inner.requests.fetch_add(1, Ordering::Relaxed);
                let info = cache
                    .fetch_narinfo(&self.inner.store_dir, path)?
                    .map(Arc::new);
                *known = Some(info.clone());
                info
            }
        };
        Ok(info.filter(|i| i.store_path == *path))
    }

    /// The answer when the lookup is already cached, without blocking.
    fn try_cached(&self, path: &StorePath, sub: usize) -> Option<SubstituteAnswer> {
        let slot = self.slot(path, sub);
        let known = slot.try_lock().ok()?;
        let info = known.as_ref()?.clone();
        drop(known);
        self.inner.hits.fetch_add(1, Ordering::Relaxed);
        Some(self.answer(path, sub, info.filter(|i| i.store_path == *path)))
    }

    /// What the scheduler is told about a narinfo.
    fn answer(&self, path: &StorePath, sub: usize, info: Known) -> SubstituteAnswer {
        let Some(info) = info else {
            return SubstituteAnswer::NotFound;
        };
        let cache = &self.inner.caches[sub];
        match self.untrusted(cache, &info) {
            Ok(false) => SubstituteAnswer::Found {
                references: info.references.iter().cloned().collect(),
                nar_size: info.nar_size,
                download_size: info.file_size,
            },
            Ok(true) => SubstituteAnswer::Rejected {
                message: format!(
                    "the substitute for '{}' from '{}' is not signed by any of the keys in \
                     'trusted-public-keys'",
                    self.inner.store_dir.display(path),
                    cache.uri()
                ),
            },
            Err(e) => SubstituteAnswer::Error {
                message: e.to_string(),
            },
        }
    }

    /// Nix's `!sub->isTrusted && pathInfoIsUntrusted(info)`: signatures are required, the
    /// cache is not trusted, and no signature by a trusted key is valid (a content-addressed
    /// path needs none).
    fn untrusted(&self, cache: &BinaryCache, info: &NarInfo) -> Result<bool, SubstituteError> {
        if cache.trusted() || !self.inner.require_sigs {
            return Ok(false);
        }
        let valid = info
            .check_signatures(&self.inner.store_dir, &self.inner.keys)
            .map_err(|source| SubstituteError::Signature {
                path: self.inner.store_dir.display(&info.store_path),
                source,
            })?;
        Ok(valid == 0)
    }

    /// Whether cache `sub` has `path` (blocking).
    pub fn query_blocking(&self, path: &StorePath, sub: usize) -> SubstituteAnswer {
        match self.narinfo(path, sub) {
            Ok(info) => self.answer(path, sub, info),
            Err(e) => SubstituteAnswer::Error {
                message: e.to_string(),
            },
        }
    }

    /// Asks cache `sub` about many paths at once (blocking), with up to `http-connections`
    /// requests in flight (for a local cache, two per CPU); answers in the order of `paths`.
    pub fn query_many(&self, paths: &[StorePath], sub: usize) -> Vec<SubstituteAnswer> {
        let workers = match self.cache(sub).map(BinaryCache::transport) {
            Some(cache::Transport::Http(_)) => self.inner.connections,
            _ => std::thread::available_parallelism().map_or(2, |n| 2 * n.get()),
        }
        .min(paths.len());
        if workers <= 1 {
            return paths.iter().map(|p| self.query_blocking(p, sub)).collect();
        }
        let next = AtomicUsize::new(0);
        let answers: Vec<Mutex<Option<SubstituteAnswer>>> =
            paths.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        let answer = self.query_blocking(path, sub);
                        *answers[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
                    }
                });
            }
        });
        answers
            .into_iter()
            .map(|a| {
                a.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every path was asked about")
            })
            .collect()
    }

    /// Whether cache `sub` has `path`, for the async driver: a cached answer at once,
    /// otherwise the lookup runs on the blocking pool (at most `http-connections` at a time).
    pub async fn query(&self, path: StorePath, sub: usize) -> SubstituteAnswer {
        if sub >= self.len() {
            return SubstituteAnswer::Error {
                message: SubstituteError::NoSuchSubstituter(sub).to_string(),
            };
        }
        if let Some(answer) = self.try_cached(&path, sub) {
            return answer;
        }
        let _permit = self.inner.lookups.acquire().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.query_blocking(&path, sub))
            .await
            .unwrap_or_else(|e| SubstituteAnswer::Error {
                message: format!("querying a substituter failed: {e}"),
            })
    }

    /// Downloads `path` from cache `sub` and installs it in `store` (blocking); `repair`
    /// replaces a valid path. `cancel` is polled between chunks; `progress` hears every
    /// chunk. The path's references must be valid already.
    pub fn substitute_blocking(
        &self,
        store: &LocalStore,
        path: &StorePath,
        sub: usize,
        repair: bool,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> SubstitutionOutcome {
        match self.try_substitute(store, path, sub, repair, cancel, progress) {
            Ok(()) => SubstitutionOutcome::Success,
            Err(e) => e.outcome(),
        }
    }

    /// [`Substituters::substitute_blocking`] with the error itself.
    pub fn try_substitute(
        &self,
        store: &LocalStore,
        path: &StorePath,
        sub: usize,
        repair: bool,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), SubstituteError> {
        let cache = self.cache_or_err(sub)?;
        let info = self
            .narinfo(path, sub)?
            .ok_or_else(|| SubstituteError::InvalidPath(self.inner.store_dir.display(path)))?;
        if self.untrusted(cache, &info)? {
            return Err(SubstituteError::Unsigned(
                self.inner.store_dir.display(path),
            ));
        }
        install::install(store, cache, &info, repair, cancel, progress)
    }

    /// [`Substituters::substitute_blocking`] for the async driver, on the blocking pool.
    /// Setting `cancel` stops it (it then fails with "was cancelled").
    pub async fn substitute(
        &self,
        store: Arc<LocalStore>,
        path: StorePath,
        sub: usize,
        repair: bool,
        cancel: Arc<AtomicBool>,
        mut progress: impl FnMut(Progress) + Send + 'static,
    ) -> SubstitutionOutcome {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.substitute_blocking(&store, &path, sub, repair, &cancel, &mut progress)
        })
        .await
        .unwrap_or_else(|e| SubstitutionOutcome::Failed {
            message: format!("substitution failed: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::SecretKey;

    #[test]
    fn settings_are_read_from_their_string_forms() {
        let key = SecretKey::from_seed("cache-1", &[3; 32])
            .unwrap()
            .to_public_key();
        let config = SubstituterConfig::from_settings(
            " file:///a\thttps://cache.example.org/  ",
            &format!("{key} \n"),
            false,
        )
        .unwrap();
        assert_eq!(
            config.substituters,
            ["file:///a", "https://cache.example.org/"]
        );
        assert_eq!(config.trusted_public_keys.get("cache-1"), Some(&key));
        assert!(!config.require_sigs);
        assert!(SubstituterConfig::from_settings("", "no-data:", true).is_err());
        let defaults = SubstituterConfig::new(["file:///x"]);
        assert!(defaults.require_sigs);
        assert_eq!(defaults.http, HttpOptions::default());
    }

    #[test]
    fn unusable_caches_are_skipped_with_a_warning_and_duplicates_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("file://{}", dir.path().display());
        let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = warnings.clone();
        let mut config = SubstituterConfig::new([
            "daemon".to_owned(),
            good.clone(),
            "ssh://builder".to_owned(),
            good.clone(),
        ]);
        config.log = Logger::new(move |level, msg| {
            assert_eq!(level, LogLevel::Warn);
            seen.lock().unwrap().push(msg.to_owned());
        });
        let subs = Substituters::open(config, &StoreDir::new("/nix/store").unwrap());
        assert_eq!(subs.uris(), [good]);
        assert_eq!(subs.skipped().len(), 2);
        assert_eq!(*warnings.lock().unwrap(), subs.skipped());
        assert!(subs.skipped()[0].starts_with("don't know how to open Nix store 'daemon'"));
        let p = StorePath::from_base_name("7rjj86a15146cq1d3qy068lml7n8ykzm-foo").unwrap();
        assert!(matches!(
            subs.query_blocking(&p, 1),
            SubstituteAnswer::Error { .. }
        ));
        assert_eq!(subs.query_blocking(&p, 0), SubstituteAnswer::NotFound);
    }
}
