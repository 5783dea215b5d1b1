//! Putting new objects into the store: files and trees by content (`nix-store --add`, Nix's
//! path literals) and text with references (`builtins.toFile`, `.drv` files), and checking
//! what is there (`nix-store --verify`).
//!
//! Every addition follows Nix's order: compute the path, make it a temp root, lock it, check
//! again that it is not valid, delete leftovers of an earlier crash, write the contents,
//! canonicalise them, and only then register. A crash before registration leaves an invalid
//! path, which the next addition of the same path deletes and writes again.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::format::Derivation;
use crate::engine::format::hash::{Hasher, sha256};
use crate::engine::format::nar::{self, NarNode, Tee};
use crate::engine::format::store_path::DRV_EXTENSION;
use crate::engine::format::{ContentAddress, Hash, HashAlgo, IngestionMethod, StorePath};

use super::canon::{self, InodesSeen};
use super::{LocalStore, PathInfo, StoreError};

impl LocalStore {
    /// Adds a file or directory by content, as `nix-store --add` (recursive, sha256) or
    /// `--add-fixed` do; the name defaults to the source's base name.
    pub fn add_to_store(
        &self,
        src: &Path,
        name: Option<&str>,
        method: IngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| StoreError::Io {
                    action: "adding".into(),
                    path: src.to_owned(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no name"),
                })?,
        };
        // Copy into a scratch location inside the store while hashing, so the contents are
        // read once and a rename puts them into place.
        let scratch = self.scratch_path("add")?;
        let copied = match method {
            IngestionMethod::Recursive => copy_tree_hashing(src, &scratch, algo),
            IngestionMethod::Flat => copy_file_hashing(src, &scratch, algo),
        };
        let (hash, nar) = match copied {
            Ok(h) => h,
            Err(e) => {
                let _ = canon::delete_path(&scratch);
                return Err(e);
            }
        };
        let path = self.store_dir().make_fixed_output_path(
            method,
            &hash,
            &name,
            &BTreeSet::new(),
            false,
        )?;
        let ca = ContentAddress::Fixed { method, hash };
        let result = self.install(&path, ca, BTreeSet::new(), nar, |real| {
            std::fs::rename(&scratch, real).map_err(StoreError::io("moving into place", real))
        });
        let _ = canon::delete_path(&scratch);
        result.map(|()| path)
    }

    /// Adds `contents` as a text file with `references` (Nix's `addTextToStore`).
    pub fn add_text_to_store(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        let hash = sha256(contents);
        let path = self.store_dir().make_text_path(name, &hash, references)?;
        let nar = NarNode::file(contents.to_vec()).nar_hash(HashAlgo::Sha256);
        self.install(
            &path,
            ContentAddress::Text(hash),
            references.clone(),
            Some(nar),
            |real| std::fs::write(real, contents).map_err(StoreError::io("writing", real)),
        )?;
        Ok(path)
    }

    /// Writes a derivation called `name` as its `.drv` file (Nix's `writeDerivation`): a text
    /// path of its ATerm that refers to its input sources and input derivations.
    pub fn write_derivation(&self, drv: &Derivation, name: &str) -> Result<StorePath, StoreError> {
        let aterm = drv.to_aterm(self.store_dir());
        self.add_text_to_store(&format!("{name}{DRV_EXTENSION}"), &aterm, &drv.references())
    }

    /// Writes and registers a content-addressed path unless it is valid already.
    /// `nar` is the NAR sha256 and size when already known; otherwise it is computed.
    fn install(
        &self,
        path: &StorePath,
        ca: ContentAddress,
        references: BTreeSet<StorePath>,
        nar: Option<(Hash, u64)>,
        write: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.add_temp_root(path)?;
        if self.is_valid(path)? {
            return Ok(());
        }
        let mut lock = self.lock_paths(std::slice::from_ref(path), |_, _| {})?;
        if !self.is_valid(path)? {
            let real = self.real_path(path);
            canon::delete_path(&real)?;
            write(&real)?;
            canon::canonicalise_path_metadata(&real, None, &mut InodesSeen::new())?;
            let (nar_hash, nar_size) = match nar {
                Some(n) => n,
                None => nar::hash_path(&real, HashAlgo::Sha256)
                    .map_err(|e| StoreError::Nar(Box::new(e)))?,
            };
            let mut info = PathInfo::new(path.clone(), nar_hash, nar_size);
            info.references = references;
            info.ca = Some(ca);
            self.register_valid_paths(&[info])?;
        }
        lock.set_deletion(true);
        Ok(())
    }

    /// A fresh, unique path inside the physical store dir for staging contents.
    pub fn scratch_path(&self, what: &str) -> Result<PathBuf, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = self
            .config()
            .real_store_dir
            .join(format!(".drover-{what}-{}-{n}", std::process::id()));
        canon::delete_path(&p)?;
        Ok(p)
    }

    /// Checks the store as `nix-store --verify` does: valid paths that disappeared are
    /// invalidated when nothing valid refers to them (otherwise an error), and with
    /// `check_contents` every valid path's NAR hash is recomputed.
    pub fn verify(&self, check_contents: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let valid = self.query_all_valid_paths()?;
        let mut missing: BTreeSet<StorePath> = BTreeSet::new();
        for p in &valid {
            if std::fs::symlink_metadata(self.real_path(p)).is_err() {
                missing.insert(p.clone());
            }
        }
        // Invalidate from the referrers down, so a disappeared chain goes away whole.
        for p in self.topo_sort_paths(&missing)? {
            let live_referrers: Vec<String> = self
                .query_referrers(&p)?
                .into_iter()
                .filter(|r| *r != p && self.is_valid(r).unwrap_or(true))
                .map(|r| self.print(&r))
                .collect();
            if live_referrers.is_empty() {
                self.db().invalidate(&p)?;
                report.removed.push(self.print(&p));
            } else {
                report.errors.push(format!(
                    "path '{}' disappeared, but it still has valid referrers!",
                    self.print(&p)
                ));
            }
        }
        if check_contents {
            for p in valid.difference(&missing) {
                let info = self.path_info(p)?;
                let real = self.real_path(p);
                match nar::hash_path(&real, info.nar_hash.algo()) {
                    Ok((h, _)) if h == info.nar_hash => {}
                    Ok((h, _)) => report.errors.push(format!(
                        "path '{}' was modified! expected hash '{}', got '{}'",
                        self.print(p),
                        info.nar_hash,
                        h
                    )),
                    Err(e) => report
                        .errors
                        .push(format!("checking '{}': {e}", self.print(p))),
                }
            }
        }
        Ok(report)
    }
}

/// What [`LocalStore::verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Paths invalidated because their contents disappeared (and nothing referred to them).
    pub removed: Vec<String>,
    /// Problems that remain.
    pub errors: Vec<String>,
}

/// Copies the object at `src` to `dest` by streaming its NAR into a restore (one read of the
/// source, no temporary archive); every NAR byte also goes to `tap`. Returns the NAR's sha256
/// and size.
pub(super) fn copy_through_nar(
    src: &Path,
    dest: &Path,
    tap: &mut dyn Write,
) -> Result<(Hash, u64), StoreError> {
    let (reader, mut writer) = io::pipe().map_err(StoreError::io("creating a pipe for", src))?;
    let mut nar_hasher = Hasher::new(HashAlgo::Sha256);
    let (dumped, restored) = std::thread::scope(|s| {
        let restorer = s.spawn(move || nar::restore(reader, dest));
        let dumped = nar::dump_path(src, &mut Tee(&mut writer, Tee(&mut nar_hasher, tap)));
        drop(writer);
        (
            dumped,
            restorer.join().expect("restore thread does not panic"),
        )
    });
    let nar_size = dumped.map_err(|e| StoreError::Nar(Box::new(e)))?;
    restored.map_err(|e| StoreError::Nar(Box::new(e)))?;
    Ok((nar_hasher.finish(), nar_size))
}

/// Copies a tree to `dest`, hashing its NAR with `algo` for the content address.
fn copy_tree_hashing(
    src: &Path,
    dest: &Path,
    algo: HashAlgo,
) -> Result<(Hash, Option<(Hash, u64)>), StoreError> {
    let mut ca_hasher = Hasher::new(algo);
    let nar = copy_through_nar(src, dest, &mut ca_hasher)?;
    Ok((ca_hasher.finish(), Some(nar)))
}

/// Copies a regular file to `dest`, hashing its contents with `algo`.
fn copy_file_hashing(
    src: &Path,
    dest: &Path,
    algo: HashAlgo,
) -> Result<(Hash, Option<(Hash, u64)>), StoreError> {
    let meta = std::fs::metadata(src).map_err(StoreError::io("reading", src))?;
    if !meta.is_file() {
        return Err(StoreError::Io {
            action: "adding flat".into(),
            path: src.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let mut input = std::fs::File::open(src).map_err(StoreError::io("opening", src))?;
    let mut output = std::fs::File::create(dest).map_err(StoreError::io("creating", dest))?;
    let mut hasher = Hasher::new(algo);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("reading", src)(e)),
        };
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(StoreError::io("writing", dest))?;
    }
    // The NAR hash of the stored file is computed after it is in place.
    Ok((hasher.finish(), None))
}
