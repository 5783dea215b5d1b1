//! Importing a derivation closure from another store, typically the real `/nix/store` where
//! `nix-instantiate` wrote the `.drv` files: the derivations, their input derivations, input
//! sources and whatever those reference are copied and registered in this store.
//!
//! Nothing is taken on trust: every copied object must prove its path. A `.drv` is a text path
//! of its own ATerm with its inputs as references; a source is a content-addressed path whose
//! address (from the other store's database, or recursive sha256 when that store has no
//! database) must give back the path; and when the other store records a NAR hash, the copy
//! must have it. Anything else is refused with the path and both hashes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use crate::engine::format::hash::sha256;
use crate::engine::format::nar;
use crate::engine::format::{ContentAddress, HashAlgo, IngestionMethod, StorePath};

use super::add::copy_through_nar;
use super::canon::{self, InodesSeen};
use super::config::StoreConfig;
use super::db::Db;
use super::{LocalStore, PathInfo, StoreError};

/// A store read from, never written to.
pub struct SourceStore {
    config: StoreConfig,
    db: Option<Db>,
}

impl SourceStore {
    /// Opens `config` for reading; its database is used when it can be opened read-only.
    pub fn open(config: StoreConfig) -> SourceStore {
        let db_path = config.db_dir().join("db.sqlite");
        let db = if db_path.exists() {
            Db::open_read_only(&db_path, config.store_dir.clone()).ok()
        } else {
            None
        };
        SourceStore { config, db }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn real_path(&self, p: &StorePath) -> std::path::PathBuf {
        self.config.real_store_dir.join(p.base_name())
    }

    fn path_info(&self, p: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        match &self.db {
            Some(db) => db.query_path_info(p),
            None => Ok(None),
        }
    }
}

/// Why an imported object was refused.
fn mismatch(path: String, what: &str, expected: String, got: String) -> StoreError {
    StoreError::ImportMismatch {
        path,
        detail: format!("{what}:\n  expected: {expected}\n  got:      {got}"),
    }
}

impl LocalStore {
    /// Copies the closure of `drvs` (derivations, their inputs, and everything those refer
    /// to) from `source` into this store, verifying every object; returns the paths added.
    pub fn import_derivation_closure(
        &self,
        source: &SourceStore,
        drvs: &[StorePath],
    ) -> Result<Vec<StorePath>, StoreError> {
        if source.config.store_dir != *self.store_dir() {
            return Err(StoreError::BadStoreUri {
                uri: source.config.store_dir.as_str().to_owned(),
                reason: format!(
                    "cannot import from a store with another store dir than '{}'",
                    self.store_dir().as_str()
                ),
            });
        }
        // Walk the closure: a .drv's references come from its own text; any other path's
        // from the source database.
        let mut infos: BTreeMap<StorePath, PathInfo> = BTreeMap::new();
        let mut queue: Vec<StorePath> = drvs.to_vec();
        let mut seen: BTreeSet<StorePath> = queue.iter().cloned().collect();
        while let Some(p) = queue.pop() {
            if self.is_valid(&p)? {
                continue;
            }
            let info = self.import_one(source, &p)?;
            for r in &info.references {
                if *r != p && seen.insert(r.clone()) {
                    queue.push(r.clone());
                }
            }
            infos.insert(p, info);
        }
        let list: Vec<PathInfo> = infos.into_values().collect();
        let added = list.iter().map(|i| i.path.clone()).collect();
        let result = self.register_valid_paths(&list);
        if result.is_err() {
            for i in &list {
                let _ = canon::delete_path(&self.real_path(&i.path));
            }
        }
        result.map(|()| added)
    }

    /// Copies one object into place (not yet registered) and returns its verified info.
    fn import_one(&self, source: &SourceStore, p: &StorePath) -> Result<PathInfo, StoreError> {
        let printed = self.print(p);
        let src = source.real_path(p);
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(StoreError::Io {
                action: "importing".into(),
                path: src,
                source: io::Error::new(io::ErrorKind::NotFound, "no such path in the source store"),
            });
        }
        let known = source.path_info(p)?;
        let real = self.real_path(p);
        self.add_temp_root(p)?;
        canon::delete_path(&real)?;
        let (nar_hash, nar_size) = copy_through_nar(&src, &real, &mut io::sink())?;
        canon::canonicalise_path_metadata(&real, None, &mut InodesSeen::new())?;

        if let Some(k) = &known
            && (k.nar_hash != nar_hash || k.nar_size != nar_size)
        {
            return Err(mismatch(
                printed,
                "NAR hash or size differs from the source store's record",
                format!("{} ({} bytes)", k.nar_hash, k.nar_size),
                format!("{nar_hash} ({nar_size} bytes)"),
            ));
        }
        let (references, ca) = if p.is_derivation() {
            let drv = self.read_derivation(p)?;
            let contents = std::fs::read(&real).map_err(StoreError::io("reading", &real))?;
            (drv.references(), ContentAddress::Text(sha256(&contents)))
        } else {
            let references = known
                .as_ref()
                .map(|k| k.references.clone())
                .unwrap_or_default();
            let ca = match known.as_ref().and_then(|k| k.ca) {
                Some(ContentAddress::Fixed { method, hash }) => {
                    let got = match method {
                        IngestionMethod::Recursive if hash.algo() == HashAlgo::Sha256 => nar_hash,
                        IngestionMethod::Recursive => {
                            nar::hash_path(&real, hash.algo())
                                .map_err(|e| StoreError::Nar(Box::new(e)))?
                                .0
                        }
                        IngestionMethod::Flat => {
                            nar::hash_flat(&real, hash.algo())
                                .map_err(|e| StoreError::Nar(Box::new(e)))?
                                .0
                        }
                    };
                    if got != hash {
                        return Err(mismatch(
                            printed,
                            "content hash differs from the content address",
                            hash.to_string(),
                            got.to_string(),
                        ));
                    }
                    ContentAddress::Fixed { method, hash }
                }
                Some(ContentAddress::Text(hash)) => {
                    let got =
                        sha256(&std::fs::read(&real).map_err(StoreError::io("reading", &real))?);
                    if got != hash {
                        return Err(mismatch(
                            printed,
                            "text hash",
                            hash.to_string(),
                            got.to_string(),
                        ));
                    }
                    ContentAddress::Text(hash)
                }
                None if known.is_some() => {
                    return Err(StoreError::ImportMismatch {
                        path: printed,
                        detail: "the source store does not record a content address for it, \
                                 so its contents cannot be verified"
                            .into(),
                    });
                }
                // Without a record, an input source is a path literal: recursive sha256.
                None => ContentAddress::Fixed {
                    method: IngestionMethod::Recursive,
                    hash: nar_hash,
                },
            };
            (references, ca)
        };
        let self_ref = references.contains(p);
        let others: BTreeSet<StorePath> = references.iter().filter(|r| *r != p).cloned().collect();
        let expected = self
            .store_dir()
            .make_path_from_ca(p.name(), &ca, &others, self_ref)?;
        if expected != *p {
            return Err(mismatch(
                printed,
                "the contents do not give this path",
                self.print(p),
                self.print(&expected),
            ));
        }
        let mut info = PathInfo::new(p.clone(), nar_hash, nar_size);
        info.references = references;
        info.ca = Some(ca);
        info.deriver = known.and_then(|k| k.deriver);
        Ok(info)
    }
}
