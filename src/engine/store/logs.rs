//! Build logs where Nix keeps them: `<log dir>/drvs/<first two characters of the drv's base
//! name>/<the rest>.bz2`, bzip2-compressed and written while the build runs, so `nix log` and
//! `nix-store --read-log` find drover's logs and drover finds Nix's.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bzip2::Compression;
use bzip2::read::MultiBzDecoder;
use bzip2::write::BzEncoder;

use crate::engine::format::StorePath;

use super::StoreError;

/// Where the (compressed) log of `drv` goes.
pub fn log_path(log_dir: &Path, drv: &StorePath) -> PathBuf {
    let base = drv.base_name();
    log_dir
        .join("drvs")
        .join(&base[..2])
        .join(format!("{}.bz2", &base[2..]))
}

/// The candidate files of a log: nested then flat, each compressed or not.
fn log_candidates(log_dir: &Path, drv: &StorePath) -> [(PathBuf, bool); 4] {
    let base = drv.base_name();
    let nested = log_dir.join("drvs").join(&base[..2]).join(&base[2..]);
    let flat = log_dir.join("drvs").join(&base);
    let bz2 = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".bz2");
        PathBuf::from(s)
    };
    [
        (bz2(&nested), true),
        (nested, false),
        (bz2(&flat), true),
        (flat, false),
    ]
}

/// Reads the build log of `drv`, if there is one.
pub fn read_log(log_dir: &Path, drv: &StorePath) -> Result<Option<Vec<u8>>, StoreError> {
    for (path, compressed) in log_candidates(log_dir, drv) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("opening build log", &path, e)),
        };
        let mut out = Vec::new();
        let read = if compressed {
            MultiBzDecoder::new(file).read_to_end(&mut out)
        } else {
            let mut f = file;
            f.read_to_end(&mut out)
        };
        read.map_err(|e| io_err("reading build log", &path, e))?;
        return Ok(Some(out));
    }
    Ok(None)
}

fn io_err(action: &str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        action: action.to_owned(),
        path: path.to_owned(),
        source,
    }
}

/// A log being written: bytes go through bzip2 into the log file as they come.
pub struct LogWriter {
    path: PathBuf,
    encoder: BzEncoder<BufWriter<File>>,
}

impl LogWriter {
    /// Creates (truncating) the log file of `drv`.
    pub fn create(log_dir: &Path, drv: &StorePath) -> Result<LogWriter, StoreError> {
        let path = log_path(log_dir, drv);
        let dir = path.parent().expect("log path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating log directory", dir, e))?;
        let file = File::create(&path).map_err(|e| io_err("creating build log", &path, e))?;
        Ok(LogWriter {
            encoder: BzEncoder::new(BufWriter::new(file), Compression::default()),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.encoder
            .write_all(data)
            .map_err(|e| io_err("writing build log", &self.path, e))
    }

    /// Ends the bzip2 stream and flushes the file.
    pub fn finish(self) -> Result<(), StoreError> {
        let path = self.path;
        self.encoder
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| io_err("finishing build log", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_where_nix_reads_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let drv = StorePath::from_base_name("2wwy2s3l015vj82n0xvikz1xnxcfaaka-root.drv").unwrap();
        assert_eq!(
            log_path(dir.path(), &drv),
            dir.path()
                .join("drvs/2w/wy2s3l015vj82n0xvikz1xnxcfaaka-root.drv.bz2")
        );
        assert_eq!(read_log(dir.path(), &drv).unwrap(), None);
        let mut w = LogWriter::create(dir.path(), &drv).unwrap();
        w.write(b"line 1\n").unwrap();
        w.write(b"line 2\n").unwrap();
        w.finish().unwrap();
        assert_eq!(
            read_log(dir.path(), &drv).unwrap().unwrap(),
            b"line 1\nline 2\n"
        );
    }

    #[test]
    fn reads_uncompressed_flat_logs_too() {
        let dir = tempfile::tempdir().unwrap();
        let drv = StorePath::from_base_name("2wwy2s3l015vj82n0xvikz1xnxcfaaka-root.drv").unwrap();
        std::fs::create_dir_all(dir.path().join("drvs")).unwrap();
        std::fs::write(dir.path().join("drvs").join(drv.base_name()), b"old").unwrap();
        assert_eq!(read_log(dir.path(), &drv).unwrap().unwrap(), b"old");
    }
}
