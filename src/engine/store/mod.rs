//! The local store, the same one Nix uses, byte for byte on disk: store paths under the
//! physical store dir, the SQLite database in `<state>/db`, path locks, temp roots and build
//! logs where Nix keeps them. Real Nix can read what drover registers, and drover builds on
//! what Nix built.
//!
//! A [`LocalStore`] is `Sync`: the database connection sits behind a mutex, and every
//! operation is synchronous (the async driver calls it from blocking threads).

pub mod add;
pub mod canon;
pub mod closure;
pub mod config;
pub mod db;
pub mod drover_db;
pub mod import;
pub mod locks;
pub mod logs;
pub mod temproots;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use thiserror::Error;

use crate::engine::format::derivation::{Derivation, DerivationError, DrvHashes};
use crate::engine::format::store_path::StorePathError;
use crate::engine::format::{ContentAddress, Hash, StoreDir, StorePath};

pub use add::VerifyReport;
pub use closure::ClosureFlags;
pub use config::{EnvOverrides, StoreConfig};
pub use locks::{LockHolder, PathLocks, TryLock};

use closure::{Cycle, EdgeSource};
use db::{Db, Registration, SCHEMA_VERSION};
use temproots::TempRoots;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid store '{uri}': {reason}")]
    BadStoreUri { uri: String, reason: String },
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("{action} '{}': {source}", path.display())]
    Io {
        action: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("SQLite database '{}': {context}: {source}", db.display())]
    Sqlite {
        db: PathBuf,
        context: String,
        source: rusqlite::Error,
    },
    #[error("store database '{}' is corrupt: {detail}", db.display())]
    CorruptDb { db: PathBuf, detail: String },
    #[error(
        "current Nix store schema is version {found} ('{}'), but drover supports version {supported}",
        path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: String,
        supported: u32,
    },
    #[error("path '{0}' is not valid")]
    InvalidPath(String),
    #[error("cannot register '{path}': its reference '{reference}' is not valid")]
    InvalidReference { path: String, reference: String },
    #[error("cannot delete path '{path}' because it is in use by {}", referrers.join(", "))]
    PathInUse {
        path: String,
        referrers: Vec<String>,
    },
    #[error("cycle detected in the references of '{path}' from '{parent}'")]
    Cycle { path: String, parent: String },
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
    #[error(transparent)]
    Lock(#[from] locks::LockError),
    #[error(transparent)]
    Nar(Box<crate::engine::format::nar::NarError>),
    #[error("cannot import '{path}': {detail}")]
    ImportMismatch { path: String, detail: String },
    #[error("derivation '{path}': {source}")]
    Derivation {
        path: String,
        source: Box<DerivationError>,
    },
    #[error(
        "cannot use the output path '{output}' of derivation '{drv}' before it is built \
         (floating content-addressed output)"
    )]
    UnknownOutputPath { drv: String, output: String },
}

impl StoreError {
    fn io(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        let action = action.into();
        move |source| StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// What the store knows about a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// sha256 of the path's NAR serialisation.
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// Seconds since the epoch; 0 means "now" when registering.
    pub registration_time: i64,
    pub deriver: Option<StorePath>,
    pub references: BTreeSet<StorePath>,
    /// Built here (as opposed to substituted or imported).
    pub ultimate: bool,
    pub sigs: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
}

impl PathInfo {
    /// The info of a path with no references, deriver, signatures or CA.
    pub fn new(path: StorePath, nar_hash: Hash, nar_size: u64) -> PathInfo {
        PathInfo {
            path,
            nar_hash,
            nar_size,
            registration_time: 0,
            deriver: None,
            references: BTreeSet::new(),
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: None,
        }
    }
}

pub struct LocalStore {
    config: StoreConfig,
    db: Mutex<Db>,
    /// `<state>/db/big-lock`, held shared while the store is open (Nix takes it exclusively
    /// only to upgrade the schema).
    _big_lock: File,
    temp_roots: Mutex<TempRoots>,
    /// Hashes modulo of derivations already checked, so checking many `.drv` files that share
    /// inputs stays linear.
    drv_hashes: Mutex<DrvHashes>,
}

impl LocalStore {
    /// Opens a store, creating its layout and database on first use.
    pub fn open(config: StoreConfig) -> Result<LocalStore, StoreError> {
        create_layout(&config)?;
        let db_dir = config.db_dir();
        let big_lock_path = db_dir.join("big-lock");
        let big_lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&big_lock_path)
            .map_err(StoreError::io("opening", &big_lock_path))?;
        big_lock
            .lock_shared()
            .map_err(StoreError::io("locking", &big_lock_path))?;

        let schema_path = db_dir.join("schema");
        let db_path = db_dir.join("db.sqlite");
        let mut schema = read_schema(&schema_path)?;
        if schema.is_none() {
            // A new store: create it under the exclusive lock so that concurrent first opens
            // do not race, then look again (another process may have won).
            big_lock
                .lock()
                .map_err(StoreError::io("locking", &big_lock_path))?;
            schema = read_schema(&schema_path)?;
            if schema.is_none() {
                drop(Db::open(&db_path, config.store_dir.clone(), true)?);
                write_atomically(&schema_path, SCHEMA_VERSION.to_string().as_bytes())?;
                schema = Some(SCHEMA_VERSION.to_string());
            }
            big_lock
                .lock_shared()
                .map_err(StoreError::io("locking", &big_lock_path))?;
        }
        let db = match schema {
            Some(v) if v == SCHEMA_VERSION.to_string() => {
                Db::open(&db_path, config.store_dir.clone(), false)?
            }
            Some(found) => {
                return Err(StoreError::UnsupportedSchema {
                    path: schema_path,
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            None => unreachable!("the schema was created above"),
        };
        Ok(LocalStore {
            temp_roots: Mutex::new(TempRoots::new(&config.state_dir)),
            config,
            db: Mutex::new(db),
            _big_lock: big_lock,
            drv_hashes: Mutex::new(DrvHashes::new()),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.config.store_dir
    }

    /// The full (logical) path of a store path.
    pub fn print(&self, path: &StorePath) -> String {
        self.config.store_dir.display(path)
    }

    /// Parses a full (logical) store path.
    pub fn parse(&self, path: &str) -> Result<StorePath, StoreError> {
        Ok(self.config.store_dir.parse(path)?)
    }

    /// Where a store path's files physically are.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.config.real_store_dir.join(path.base_name())
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the connection leaves it usable: SQLite rolled back.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        self.db().is_valid(path)
    }

    /// The info of a path, or `None` if it is not valid.
    pub fn query_path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.db().query_path_info(path)
    }

    /// The info of a path that must be valid.
    pub fn path_info(&self, path: &StorePath) -> Result<PathInfo, StoreError> {
        self.query_path_info(path)?
            .ok_or_else(|| StoreError::InvalidPath(self.print(path)))
    }

    pub fn query_references(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(self.path_info(path)?.references)
    }

    pub fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        self.db().query_referrers(path)
    }

    pub fn query_valid_derivers(
        &self,
        path: &StorePath,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        self.db().query_valid_derivers(path)
    }

    /// Output name → path of a valid derivation, from the database.
    pub fn query_derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        if !self.is_valid(drv)? {
            return Err(StoreError::InvalidPath(self.print(drv)));
        }
        self.db().query_derivation_outputs(drv)
    }

    pub fn query_path_from_hash_part(
        &self,
        hash_part: &str,
    ) -> Result<Option<StorePath>, StoreError> {
        self.db().query_path_from_hash_part(hash_part)
    }

    pub fn query_all_valid_paths(&self) -> Result<BTreeSet<StorePath>, StoreError> {
        self.db().query_all_valid_paths()
    }

    /// Nix's `computeFSClosure`: every path reachable from `start` (included).
    pub fn compute_fs_closure(
        &self,
        start: impl IntoIterator<Item = StorePath>,
        flags: ClosureFlags,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let start: BTreeSet<StorePath> = start.into_iter().collect();
        if flags.include_outputs || flags.include_derivers {
            return closure::compute_closure(self, start, flags);
        }
        // Plain closures run as one recursive SQL query.
        let db = self.db();
        for p in &start {
            if !db.is_valid(p)? {
                return Err(StoreError::InvalidPath(self.print(p)));
            }
        }
        db.closure(&start, flags.flip_direction)
    }

    /// Sorts valid paths so that referrers come before their references.
    pub fn topo_sort_paths(
        &self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<Vec<StorePath>, StoreError> {
        let db = self.db();
        let mut refs = BTreeMap::new();
        for p in paths {
            let r = db
                .query_path_info(p)?
                .map(|i| i.references)
                .unwrap_or_default();
            refs.insert(p.clone(), r);
        }
        drop(db);
        closure::topo_sort(paths, &refs).map_err(|c| self.cycle_error(c))
    }

    /// The order `nix-build` lists derivations in: Nix's `topoSortPaths` reversed, so inputs
    /// come before what needs them.
    pub fn sort_for_printing(
        &self,
        drvs: &BTreeSet<StorePath>,
    ) -> Result<Vec<StorePath>, StoreError> {
        let mut sorted = self.topo_sort_paths(drvs)?;
        sorted.reverse();
        Ok(sorted)
    }

    fn cycle_error(&self, c: Cycle) -> StoreError {
        StoreError::Cycle {
            path: self.print(&c.path),
            parent: self.print(&c.parent),
        }
    }

    /// Registers paths whose contents are already in place, in one transaction: their
    /// references may be valid already or be among `infos`, in any order. A `.drv` among
    /// them is parsed and its output paths checked (as Nix does) and recorded. The store's
    /// file system is synced first, so a valid path never has contents a crash could lose.
    pub fn register_valid_paths(&self, infos: &[PathInfo]) -> Result<(), StoreError> {
        if infos.is_empty() {
            return Ok(());
        }
        let refs: BTreeMap<StorePath, BTreeSet<StorePath>> = infos
            .iter()
            .map(|i| (i.path.clone(), i.references.clone()))
            .collect();
        if let Some(c) = closure::find_cycle(&refs) {
            return Err(self.cycle_error(c));
        }
        for info in infos {
            let real = self.real_path(&info.path);
            if std::fs::symlink_metadata(&real).is_err() {
                return Err(StoreError::Io {
                    action: "registering".into(),
                    path: real,
                    source: io::Error::new(io::ErrorKind::NotFound, "the path has no contents"),
                });
            }
        }
        let mut drv_outputs = BTreeMap::new();
        for info in infos.iter().filter(|i| i.path.is_derivation()) {
            let drv = self.read_derivation(&info.path)?;
            self.check_derivation_outputs(&info.path, &drv)?;
            let outputs: BTreeMap<String, StorePath> = drv
                .output_paths()
                .into_iter()
                .filter_map(|(name, p)| Some((name.to_owned(), p?.clone())))
                .collect();
            drv_outputs.insert(info.path.clone(), outputs);
        }
        self.sync_store_fs()?;
        let no_outputs = BTreeMap::new();
        let regs: Vec<Registration<'_>> = infos
            .iter()
            .map(|info| Registration {
                info,
                drv_outputs: drv_outputs.get(&info.path).unwrap_or(&no_outputs),
            })
            .collect();
        self.db().register(&regs, now_seconds())
    }

    /// Reads and parses a `.drv` file from the store (valid or not).
    pub fn read_derivation(&self, drv: &StorePath) -> Result<Derivation, StoreError> {
        let real = self.real_path(drv);
        let bytes = std::fs::read(&real).map_err(StoreError::io("reading derivation", &real))?;
        Derivation::parse(&bytes, self.store_dir()).map_err(|e| StoreError::Derivation {
            path: self.print(drv),
            source: Box::new(e),
        })
    }

    /// Checks that a derivation's output paths are the ones Nix computes for it.
    fn check_derivation_outputs(
        &self,
        path: &StorePath,
        drv: &Derivation,
    ) -> Result<(), StoreError> {
        let mut hashes = self.drv_hashes.lock().unwrap_or_else(|e| e.into_inner());
        drv.check_outputs(self.store_dir(), path, &mut hashes, |input: &StorePath| {
            self.read_derivation(input)
        })
        .map_err(|e| StoreError::Derivation {
            path: self.print(path),
            source: Box::new(e),
        })
    }

    /// Output name → path of a derivation, read from its `.drv` file.
    pub fn derivation_output_paths(
        &self,
        drv: &StorePath,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let d = self.read_derivation(drv)?;
        d.output_paths()
            .into_iter()
            .map(|(name, p)| match p {
                Some(p) => Ok((name.to_owned(), p.clone())),
                None => Err(StoreError::UnknownOutputPath {
                    drv: self.print(drv),
                    output: name.to_owned(),
                }),
            })
            .collect()
    }

    /// Flushes the store's file system, so that registered contents survive a crash.
    fn sync_store_fs(&self) -> Result<(), StoreError> {
        let dir = &self.config.real_store_dir;
        let f = File::open(dir).map_err(StoreError::io("opening", dir))?;
        nix::unistd::syncfs(&f).map_err(|e| StoreError::io("syncing", dir)(e.into()))
    }

    /// Invalidates a path (it must have no valid referrers but itself) and deletes its files.
    pub fn delete_path(&self, path: &StorePath) -> Result<(), StoreError> {
        self.db().invalidate(path)?;
        canon::delete_path(&self.real_path(path))?;
        Ok(())
    }

    /// Deletes a set of paths, referrers before references.
    pub fn delete_paths(&self, paths: &BTreeSet<StorePath>) -> Result<(), StoreError> {
        for p in self.topo_sort_paths(paths)? {
            self.delete_path(&p)?;
        }
        Ok(())
    }

    /// Makes `path` a temporary GC root of this process (see [`temproots`]).
    pub fn add_temp_root(&self, path: &StorePath) -> Result<(), StoreError> {
        let printed = self.print(path);
        self.temp_roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&printed)
    }

    /// Tries to lock store paths (their real paths) without blocking.
    pub fn try_lock_paths(&self, paths: &[StorePath]) -> Result<TryLock, StoreError> {
        let reals: Vec<PathBuf> = paths.iter().map(|p| self.real_path(p)).collect();
        Ok(locks::try_lock_paths(reals.iter().map(|p| p.as_path()))?)
    }

    /// Locks store paths, waiting as long as needed (call from a thread that may block).
    pub fn lock_paths(
        &self,
        paths: &[StorePath],
        on_wait: impl FnMut(&Path, Option<LockHolder>),
    ) -> Result<PathLocks, StoreError> {
        let reals: Vec<PathBuf> = paths.iter().map(|p| self.real_path(p)).collect();
        Ok(locks::lock_paths(
            reals.iter().map(|p| p.as_path()),
            on_wait,
        )?)
    }

    /// The build log of a derivation, or of the deriver of an output path.
    pub fn read_log(&self, path: &StorePath) -> Result<Option<Vec<u8>>, StoreError> {
        let drv = if path.is_derivation() {
            path.clone()
        } else {
            match self.query_path_info(path)?.and_then(|i| i.deriver) {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        logs::read_log(&self.config.log_dir, &drv)
    }

    /// Starts writing the build log of `drv`.
    pub fn create_log(&self, drv: &StorePath) -> Result<logs::LogWriter, StoreError> {
        logs::LogWriter::create(&self.config.log_dir, drv)
    }

    /// Starts writing the build log of `drv` without compressing it.
    pub fn create_uncompressed_log(&self, drv: &StorePath) -> Result<logs::LogWriter, StoreError> {
        logs::LogWriter::create_uncompressed(&self.config.log_dir, drv)
    }
}

impl EdgeSource for LocalStore {
    type Error = StoreError;

    fn neighbours(
        &self,
        path: &StorePath,
        flags: ClosureFlags,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let db = self.db();
        let mut out = BTreeSet::new();
        if flags.flip_direction {
            out.extend(db.query_referrers(path)?);
            if flags.include_outputs {
                out.extend(db.query_valid_derivers(path)?);
            }
            if flags.include_derivers && path.is_derivation() {
                for o in db.query_derivation_outputs(path)?.into_values() {
                    if db.is_valid(&o)? {
                        out.insert(o);
                    }
                }
            }
        } else {
            let info = db
                .query_path_info(path)?
                .ok_or_else(|| StoreError::InvalidPath(self.print(path)))?;
            out.extend(info.references);
            if flags.include_outputs && path.is_derivation() {
                for o in db.query_derivation_outputs(path)?.into_values() {
                    if db.is_valid(&o)? {
                        out.insert(o);
                    }
                }
            }
            if flags.include_derivers
                && let Some(d) = info.deriver
                && db.is_valid(&d)?
            {
                out.insert(d);
            }
        }
        out.remove(path);
        Ok(out)
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Creates the directories Nix creates for a store (idempotent).
/// The schema version in `<state>/db/schema`, `None` for a store not created yet.
fn read_schema(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("reading", path)(e)),
    }
}

/// Writes a small file so that readers see either nothing or all of it.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(StoreError::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(StoreError::io("renaming", &tmp))
}

fn create_layout(config: &StoreConfig) -> Result<(), StoreError> {
    let state = &config.state_dir;
    let dirs = [
        config.real_store_dir.clone(),
        config.real_store_dir.join(".links"),
        state.join("profiles/per-user"),
        state.join("gcroots/per-user"),
        state.join("temproots"),
        state.join("db"),
        state.join("drover"),
        config.log_dir.join("drvs"),
    ];
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(StoreError::io("creating directory", d))?;
    }
    let profiles_link = state.join("gcroots/profiles");
    match std::os::unix::fs::symlink(state.join("profiles"), &profiles_link) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(StoreError::io("creating symlink", &profiles_link)(e))
        }
        _ => Ok(()),
    }
}
