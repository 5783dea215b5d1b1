//! Installing one path from a binary cache: Nix's `copyStorePath` from a binary cache into
//! `LocalStore::addToStore`, with the download checked end to end.
//!
//! Order: the references must be valid; make the path a temp root and lock it; if it became
//! valid meanwhile (and this is no repair), done. Then stream the file through a meter that
//! counts and hashes it (and stops past `FileSize`), the decoder of its compression, a second
//! meter for the NAR (stopping past `NarSize`, reporting progress, polling the cancel flag),
//! into the strict NAR reader that unpacks it at a scratch path inside the store. Then the
//! checks, in Nix's order and with its messages: NAR hash, NAR size, (drover's addition) the
//! file's size and hash, the content address. Only then are the scratch contents
//! canonicalised, moved into place and registered. Any failure deletes the scratch path and
//! leaves the store as it was.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::format::hash::{Hash, HashAlgo, Hasher, sha256};
use crate::engine::format::nar;
use crate::engine::format::{ContentAddress, IngestionMethod, NarInfo};
use crate::engine::store::canon::{self, InodesSeen};
use crate::engine::store::{LocalStore, PathInfo};

use super::cache::{BinaryCache, Download};
use super::compression::{self, Compression};
use super::{Progress, SubstituteError};

/// Why the metered pipeline stopped, when the NAR reader only sees an I/O error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// More compressed bytes than `FileSize`.
    FileTooLong,
    /// More NAR bytes than `NarSize`.
    NarTooLong,
    Cancelled,
    /// Reading the download failed.
    Download(String),
    /// The decoder failed.
    Decode(String),
}

/// What the two meters share: the first fault and the downloaded byte count.
#[derive(Default)]
struct Shared {
    fault: RefCell<Option<Fault>>,
    downloaded: Cell<u64>,
}

impl Shared {
    fn fail(&self, fault: Fault) -> io::Error {
        let mut slot = self.fault.borrow_mut();
        if slot.is_none() {
            *slot = Some(fault);
        }
        io::Error::other("substitution stopped")
    }
}

/// Counts, hashes and bounds the bytes read through it.
struct Meter<'a, R> {
    inner: R,
    hasher: Option<Hasher>,
    count: u64,
    limit: Option<u64>,
    /// Reading the download (as opposed to the decoder's output).
    raw: bool,
    shared: Rc<Shared>,
    cancel: &'a AtomicBool,
    progress: Option<(&'a mut dyn FnMut(Progress), Progress)>,
}

impl<R: Read> Read for Meter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(self.shared.fail(Fault::Cancelled));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                // A decoder error caused by the download is the download's fault.
                let fault = if self.raw {
                    Fault::Download(e.to_string())
                } else {
                    Fault::Decode(e.to_string())
                };
                return Err(self.shared.fail(fault));
            }
        };
        self.count += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        if self.limit.is_some_and(|limit| self.count > limit) {
            let fault = if self.raw {
                Fault::FileTooLong
            } else {
                Fault::NarTooLong
            };
            return Err(self.shared.fail(fault));
        }
        if self.raw {
            self.shared.downloaded.set(self.count);
        }
        if let Some((report, p)) = &mut self.progress {
            p.nar_done = self.count;
            p.download_done = self.shared.downloaded.get();
            report(*p);
        }
        Ok(n)
    }
}

/// Downloads, checks and installs the path `info` describes from `cache`.
pub(super) fn install(
    store: &LocalStore,
    cache: &BinaryCache,
    info: &NarInfo,
    repair: bool,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), SubstituteError> {
    let path = &info.store_path;
    let printed = store.print(path);
    for reference in info.references.iter().filter(|r| *r != path) {
        if !store.is_valid(reference)? {
            return Err(SubstituteError::InvalidReference {
                path: printed,
                reference: store.print(reference),
            });
        }
    }
    store.add_temp_root(path)?;
    if !repair && store.is_valid(path)? {
        return Ok(());
    }
    let mut lock = store.lock_paths(std::slice::from_ref(path), |_, _| {})?;
    if !repair && store.is_valid(path)? {
        lock.set_deletion(true);
        return Ok(());
    }
    let method = Compression::parse(&info.compression)
        .ok_or_else(|| SubstituteError::UnknownCompression(info.compression.clone()))?;
    let download = cache
        .open_file(&info.url)?
        .ok_or_else(|| SubstituteError::Gone {
            file: info.url.clone(),
            uri: cache.uri().to_owned(),
        })?;

    let scratch = store.scratch_path("subst")?;
    let result = unpack_and_check(
        store, cache, info, method, download, &scratch, cancel, progress,
    )
    .and_then(|()| {
        canon::canonicalise_path_metadata(&scratch, None, &mut InodesSeen::new())?;
        let real = store.real_path(path);
        canon::delete_path(&real)?;
        std::fs::rename(&scratch, &real).map_err(|source| SubstituteError::Io {
            action: "moving into place",
            path: real.clone(),
            source,
        })?;
        let registered = store.register_valid_paths(&[path_info(info)]);
        if registered.is_err() {
            let _ = canon::delete_path(&real);
        }
        Ok(registered?)
    });
    let _ = canon::delete_path(&scratch);
    if result.is_ok() {
        lock.set_deletion(true);
    }
    result
}

/// What the store records for a substituted path: the narinfo's facts, not built here.
fn path_info(info: &NarInfo) -> PathInfo {
    let mut p = PathInfo::new(info.store_path.clone(), info.nar_hash, info.nar_size);
    p.deriver = info.deriver.clone();
    p.references = info.references.clone();
    p.sigs = info.sigs.clone();
    p.ca = info.ca;
    p
}

#[allow(clippy::too_many_arguments)]
fn unpack_and_check(
    store: &LocalStore,
    cache: &BinaryCache,
    info: &NarInfo,
    method: Compression,
    download: Download,
    scratch: &Path,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), SubstituteError> {
    let printed = store.print(&info.store_path);
    let shared = Rc::new(Shared::default());
    let mut raw = Meter {
        inner: download.reader,
        hasher: info.file_hash.map(|h| Hasher::new(h.algo())),
        count: 0,
        limit: info.file_size,
        raw: true,
        shared: shared.clone(),
        cancel,
        progress: None,
    };
    let start = Progress {
        download_done: 0,
        download_expected: info.file_size.or(download.length),
        nar_done: 0,
        nar_expected: info.nar_size,
    };
    progress(start);
    let (nar_hash, nar_size, unpacked) = {
        let mut nar_meter = Meter {
            inner: compression::decoder(method, &mut raw),
            hasher: Some(Hasher::new(HashAlgo::Sha256)),
            count: 0,
            limit: Some(info.nar_size),
            raw: false,
            shared: shared.clone(),
            cancel,
            progress: Some((progress, start)),
        };
        let unpacked = nar::restore(&mut nar_meter, scratch);
        let hash = nar_meter.hasher.take().map(Hasher::finish);
        (hash, nar_meter.count, unpacked)
    };
    // The rest of the file (normally nothing) still counts for its size and hash.
    let drained = unpacked
        .is_ok()
        .then(|| io::copy(&mut raw, &mut io::sink()));
    let fault = shared.fault.borrow().clone();
    let download_error = |message: String| SubstituteError::Download {
        path: printed.clone(),
        url: info.url.clone(),
        uri: cache.uri().to_owned(),
        message,
    };
    match fault {
        Some(Fault::Cancelled) => return Err(SubstituteError::Cancelled(printed)),
        Some(Fault::NarTooLong) => {
            return Err(SubstituteError::NarSizeMismatch {
                path: printed,
                specified: info.nar_size,
                got: format!("more than {}", info.nar_size),
            });
        }
        Some(Fault::FileTooLong) => {
            return Err(SubstituteError::FileSizeMismatch {
                path: printed,
                url: info.url.clone(),
                specified: info.file_size.unwrap_or(0),
                got: format!("more than {}", info.file_size.unwrap_or(0)),
            });
        }
        Some(Fault::Download(message)) => return Err(download_error(message)),
        Some(Fault::Decode(message)) => {
            return Err(SubstituteError::Decompress {
                path: printed,
                url: info.url.clone(),
                method: method.to_string(),
                message,
            });
        }
        None => {}
    }
    unpacked.map_err(|e| SubstituteError::Unpack {
        path: printed.clone(),
        uri: cache.uri().to_owned(),
        source: Box::new(e),
    })?;
    if let Some(Err(e)) = drained {
        return Err(download_error(e.to_string()));
    }

    let nar_hash = nar_hash.expect("the NAR meter hashes");
    if nar_hash != info.nar_hash {
        return Err(SubstituteError::NarHashMismatch {
            path: printed,
            specified: info.nar_hash.to_nix32_prefixed(),
            got: nar_hash.to_nix32_prefixed(),
        });
    }
    if nar_size != info.nar_size {
        return Err(SubstituteError::NarSizeMismatch {
            path: printed,
            specified: info.nar_size,
            got: nar_size.to_string(),
        });
    }
    if let Some(size) = info.file_size
        && raw.count != size
    {
        return Err(SubstituteError::FileSizeMismatch {
            path: printed,
            url: info.url.clone(),
            specified: size,
            got: raw.count.to_string(),
        });
    }
    if let (Some(expected), Some(hasher)) = (info.file_hash, raw.hasher.take()) {
        let got = hasher.finish();
        if got != expected {
            return Err(SubstituteError::FileHashMismatch {
                path: printed,
                url: info.url.clone(),
                specified: expected.to_nix32_prefixed(),
                got: got.to_nix32_prefixed(),
            });
        }
    }
    check_content_address(&printed, info, &nar_hash, scratch)
}

/// Nix checks a fixed-output or text content address against the unpacked contents.
fn check_content_address(
    printed: &str,
    info: &NarInfo,
    nar_hash: &Hash,
    unpacked: &Path,
) -> Result<(), SubstituteError> {
    let (specified, got) = match &info.ca {
        None => return Ok(()),
        Some(ContentAddress::Fixed { method, hash }) => {
            let got = match method {
                IngestionMethod::Recursive if hash.algo() == HashAlgo::Sha256 => *nar_hash,
                IngestionMethod::Recursive => {
                    nar::hash_path(unpacked, hash.algo())
                        .map_err(|e| unpack_error(printed, e))?
                        .0
                }
                IngestionMethod::Flat => {
                    nar::hash_flat(unpacked, hash.algo())
                        .map_err(|e| unpack_error(printed, e))?
                        .0
                }
            };
            (*hash, got)
        }
        Some(ContentAddress::Text(hash)) => {
            let contents = std::fs::read(unpacked).map_err(|source| SubstituteError::Io {
                action: "reading",
                path: unpacked.to_owned(),
                source,
            })?;
            (*hash, sha256(&contents))
        }
    };
    if specified != got {
        return Err(SubstituteError::CaHashMismatch {
            path: printed.to_owned(),
            specified: specified.to_nix32_prefixed(),
            got: got.to_nix32_prefixed(),
        });
    }
    Ok(())
}

fn unpack_error(printed: &str, e: nar::NarError) -> SubstituteError {
    SubstituteError::Hashing {
        path: printed.to_owned(),
        source: Box::new(e),
    }
}
