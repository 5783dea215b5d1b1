//! `file://DIR` binary caches: every cache file is a plain file under `DIR`.
//!
//! A missing file is "not in the cache"; any other error reading it is a real error (Nix 2.8
//! silently reads such a file as empty). Names from a narinfo's `URL` must stay inside the
//! cache: no absolute paths and no `..` (Nix would follow them).

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::FetchError;

/// A binary cache in a local directory.
#[derive(Debug, Clone)]
pub struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    pub fn new(dir: impl Into<PathBuf>) -> FileTransport {
        FileTransport { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `name` (relative to the cache) is, if it stays inside the cache.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, FetchError> {
        let rel = Path::new(name);
        let inside = !name.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(FetchError::BadName {
                name: name.to_owned(),
                cache: format!("file://{}", self.dir.display()),
            });
        }
        Ok(self.dir.join(rel))
    }

    /// Opens a cache file; `None` when it does not exist.
    pub fn open(&self, name: &str) -> Result<Option<File>, FetchError> {
        let path = self.resolve(name)?;
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FetchError::File { path, source }),
        }
    }

    /// Reads a whole (small) cache file; `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let path = self.resolve(name)?;
        match std::fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FetchError::File { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_stay_inside_the_cache() {
        let t = FileTransport::new("/cache");
        assert_eq!(
            t.resolve("nar/abc.nar.xz").unwrap(),
            Path::new("/cache/nar/abc.nar.xz")
        );
        for bad in ["../etc/passwd", "/etc/passwd", "nar/../../x", ""] {
            assert!(
                matches!(t.resolve(bad), Err(FetchError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_files_are_none_and_present_ones_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.narinfo"), b"data").unwrap();
        let t = FileTransport::new(dir.path());
        assert_eq!(t.read("x.narinfo").unwrap().as_deref(), Some(&b"data"[..]));
        assert!(t.read("y.narinfo").unwrap().is_none());
        assert!(t.open("y.narinfo").unwrap().is_none());
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(matches!(t.read("d"), Err(FetchError::File { .. })));
    }
}
