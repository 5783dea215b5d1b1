//! Writing a `file://` binary cache in Nix's layout (`drover copy --to`), so that real Nix can
//! substitute from it.
//!
//! Opening a cache creates `nar/`, `log/` and `realisations/` and a `nix-cache-info` naming
//! the store dir (or checks the existing one). Each path's NAR is dumped from the store,
//! compressed and hashed in one pass into a temporary file in `nar/`, which is then renamed to
//! `nar/<file hash>.nar<ext>` unless a file of that name exists; its narinfo carries the path's
//! references, deriver, content address and signatures, plus one by the signing key if
//! given. Narinfos are written last, references before referrers, each atomically (temporary
//! file, rename), so a reader never sees a path whose references are missing. The dumped NAR
//! must have the hash and size the store records: a corrupt path is refused, not published.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::engine::format::hash::{HashAlgo, Hasher};
use crate::engine::format::nar::{self, Tee};
use crate::engine::format::narinfo::{nar_url, narinfo_file_name};
use crate::engine::format::{NarInfo, NixCacheInfo, SecretKey, StoreDir, StorePath};
use crate::engine::store::{ClosureFlags, LocalStore, PathInfo};

use super::SubstituteError;
use super::cache::StoreUri;
use super::compression::{self, Compression};

/// How paths are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Signs every narinfo written.
    pub secret_key: Option<SecretKey>,
    /// Paths dumped and compressed at once.
    pub jobs: usize,
}

impl Default for WriteOptions {
    /// Nix's defaults: xz, unsigned.
    fn default() -> WriteOptions {
        WriteOptions {
            compression: Compression::Xz,
            secret_key: None,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Paths written to the cache.
    pub copied: usize,
    /// Paths the cache had already.
    pub present: usize,
}

/// A local binary cache open for writing.
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    store_dir: StoreDir,
    options: WriteOptions,
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SubstituteError + 'a {
    move |source| SubstituteError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A file name for a temporary file that no other writer uses.
fn temp_name(final_path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = final_path.as_os_str().to_owned();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    PathBuf::from(name)
}

/// Writes a file so that readers see all of it or nothing.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), SubstituteError> {
    let tmp = temp_name(path);
    let written = std::fs::write(&tmp, contents)
        .map_err(io_error("writing", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io_error("renaming", &tmp)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

impl CacheWriter {
    /// Opens (creating if needed) the cache at `uri` (`file://DIR` or a plain directory)
    /// for a store with `store_dir`.
    pub fn open(
        uri: &str,
        store_dir: &StoreDir,
        options: WriteOptions,
    ) -> Result<CacheWriter, SubstituteError> {
        let dir = match uri.strip_prefix("file://") {
            Some(_) => PathBuf::from(StoreUri::parse(uri)?.location),
            None if uri.starts_with('/') => PathBuf::from(uri),
            None => return Err(SubstituteError::UnsupportedUri(uri.to_owned())),
        };
        for sub in ["nar", "log", "realisations"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io_error("creating directory", &d))?;
        }
        let info_path = dir.join("nix-cache-info");
        match std::fs::read_to_string(&info_path) {
            Ok(text) => {
                let uri = format!("file://{}", dir.display());
                NixCacheInfo::parse(&text)
                    .and_then(|info| info.check_store_dir(store_dir))
                    .map_err(|source| SubstituteError::CacheInfo { uri, source })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomically(
                    &info_path,
                    NixCacheInfo::new(store_dir).to_text().as_bytes(),
                )?;
            }
            Err(e) => return Err(io_error("reading", &info_path)(e)),
        }
        Ok(CacheWriter {
            dir,
            store_dir: store_dir.clone(),
            options,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the cache has a narinfo for `path` (Nix's test for a binary cache).
    pub fn has(&self, path: &StorePath) -> bool {
        self.dir.join(narinfo_file_name(path)).exists()
    }

    /// Writes the (compressed) NAR of a valid path and returns its narinfo, signed when a
    /// key is set; the narinfo itself is not written yet.
    pub fn write_nar(
        &self,
        store: &LocalStore,
        info: &PathInfo,
    ) -> Result<NarInfo, SubstituteError> {
        let printed = store.print(&info.path);
        let real = store.real_path(&info.path);
        let tmp = temp_name(&self.dir.join("nar").join(".nar"));
        let result = self.compress_into(&real, &tmp);
        let (file_hash, file_size, nar_hash, nar_size) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if nar_hash != info.nar_hash || nar_size != info.nar_size {
            let _ = std::fs::remove_file(&tmp);
            return Err(SubstituteError::CorruptStorePath {
                path: printed,
                detail: format!(
                    "its NAR has hash {} and size {nar_size}, the store records {} and {}",
                    nar_hash.to_nix32_prefixed(),
                    info.nar_hash.to_nix32_prefixed(),
                    info.nar_size
                ),
            });
        }
        let url = nar_url(&file_hash, self.options.compression.name());
        let dest = self.dir.join(&url);
        if dest.exists() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            std::fs::rename(&tmp, &dest).map_err(io_error("renaming", &tmp))?;
        }
        let mut narinfo = NarInfo {
            store_path: info.path.clone(),
            url,
            compression: self.options.compression.name().to_owned(),
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            nar_hash,
            nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            system: None,
            sigs: info.sigs.clone(),
            ca: info.ca,
        };
        if let Some(key) = &self.options.secret_key {
            narinfo
                .sign(&self.store_dir, key)
                .map_err(|e| SubstituteError::CorruptStorePath {
                    path: printed,
                    detail: e.to_string(),
                })?;
        }
        Ok(narinfo)
    }

    /// Dumps `real` through the compressor into `tmp`: file hash and size, NAR hash and size.
    fn compress_into(
        &self,
        real: &Path,
        tmp: &Path,
    ) -> Result<
        (
            crate::engine::format::Hash,
            u64,
            crate::engine::format::Hash,
            u64,
        ),
        SubstituteError,
    > {
        let file = File::create(tmp).map_err(io_error("creating", tmp))?;
        let mut file_hasher = Hasher::new(HashAlgo::Sha256);
        let sink = Counted {
            inner: Tee(BufWriter::with_capacity(1 << 16, file), &mut file_hasher),
            count: 0,
        };
        let mut encoder = compression::encoder(self.options.compression, sink)
            .map_err(io_error("compressing into", tmp))?
            .ok_or_else(|| {
                SubstituteError::UnknownCompression(self.options.compression.name().to_owned())
            })?;
        let mut nar_hasher = Hasher::new(HashAlgo::Sha256);
        let nar_size =
            nar::dump_path(real, &mut Tee(&mut encoder, &mut nar_hasher)).map_err(|e| {
                SubstituteError::Hashing {
                    path: real.display().to_string(),
                    source: Box::new(e),
                }
            })?;
        let sink = encoder
            .finish()
            .map_err(io_error("compressing into", tmp))?;
        let file_size = sink.count;
        let Tee(writer, _) = sink.inner;
        writer
            .into_inner()
            .map_err(|e| io_error("writing", tmp)(e.into_error()))?;
        Ok((
            file_hasher.finish(),
            file_size,
            nar_hasher.finish(),
            nar_size,
        ))
    }

    /// Writes a narinfo (atomically).
    pub fn write_narinfo(&self, info: &NarInfo) -> Result<(), SubstituteError> {
        let path = self.dir.join(narinfo_file_name(&info.store_path));
        write_atomically(&path, info.to_text(&self.store_dir).as_bytes())
    }

    /// Copies the closure of `paths` from `store`: every path the cache lacks gets its NAR
    /// (several at once) and then its narinfo, references first.
    pub fn copy_closure(
        &self,
        store: &LocalStore,
        paths: impl IntoIterator<Item = StorePath>,
    ) -> Result<CopyReport, SubstituteError> {
        let closure = store.compute_fs_closure(paths, ClosureFlags::default())?;
        let missing: Vec<StorePath> = closure.iter().filter(|p| !self.has(p)).cloned().collect();
        let present = closure.len() - missing.len();
        let mut infos = Vec::with_capacity(missing.len());
        for p in &missing {
            infos.push(store.path_info(p)?);
        }
        let written = self.write_nars(store, &infos)?;
        // Referrers come first in the topological order: write from the end.
        for p in store.topo_sort_paths(&closure)?.iter().rev() {
            if let Some(narinfo) = written.get(p) {
                self.write_narinfo(narinfo)?;
            }
        }
        Ok(CopyReport {
            copied: written.len(),
            present,
        })
    }

    /// Writes the NARs of `infos` with up to `jobs` threads.
    fn write_nars(
        &self,
        store: &LocalStore,
        infos: &[PathInfo],
    ) -> Result<BTreeMap<StorePath, NarInfo>, SubstituteError> {
        let next = AtomicUsize::new(0);
        let results = Mutex::new(BTreeMap::new());
        let first_error = Mutex::new(None);
        let workers = self.options.jobs.clamp(1, infos.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        if first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_some()
                        {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(info) = infos.get(i) else { break };
                        match self.write_nar(store, info) {
                            Ok(narinfo) => {
                                results
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(info.path.clone(), narinfo);
                            }
                            Err(e) => {
                                first_error
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        Ok(results.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The set of paths a cache directory has narinfos for (for tests and listings).
pub fn cached_hash_parts(dir: &Path) -> Result<BTreeSet<String>, SubstituteError> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hash) = name.strip_suffix(".narinfo")
            && hash.len() == 32
        {
            out.insert(hash.to_owned());
        }
    }
    Ok(out)
}
