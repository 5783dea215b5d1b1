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

/// How much of a log is held in memory before it is streamed through a compressor.
const BUFFERED: usize = 1 << 20;

/// bzip2's output for no input at all (block size 9).
const EMPTY_BZ2: &[u8] = b"BZh9\x17rE8P\x90\0\0\0\0";

/// Creates (truncating) a log file, and its directory if need be.
fn create_file(path: &Path) -> Result<File, StoreError> {
    match File::create(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().expect("log path has a parent");
            std::fs::create_dir_all(dir).map_err(|e| io_err("creating log directory", dir, e))?;
            File::create(path).map_err(|e| io_err("creating build log", path, e))
        }
        Err(e) => Err(io_err("creating build log", path, e)),
    }
}

/// A log being written. Its first MiB is held in memory: most builds log little, and a bzip2
/// compressor sized for a small log at the end costs far less than one set up for 900 kB
/// blocks (several MB of tables to clear) at the start. A longer log streams through a
/// block-size-9 compressor, as Nix writes it. With `compress-build-log = false` the log goes
/// to its file as it is.
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    buffer: Vec<u8>,
    encoder: Option<BzEncoder<BufWriter<File>>>,
    plain: Option<BufWriter<File>>,
}

impl LogWriter {
    /// Creates (truncating) the log file of `drv`.
    pub fn create(log_dir: &Path, drv: &StorePath) -> Result<LogWriter, StoreError> {
        let path = log_path(log_dir, drv);
        let file = create_file(&path)?;
        Ok(LogWriter {
            path,
            file: Some(file),
            buffer: Vec::new(),
            encoder: None,
            plain: None,
        })
    }

    /// Creates (truncating) an uncompressed log file of `drv`: the `.bz2` path without its
    /// extension, where Nix writes it with `compress-build-log = false`.
    pub fn create_uncompressed(log_dir: &Path, drv: &StorePath) -> Result<LogWriter, StoreError> {
        let path = log_path(log_dir, drv).with_extension("");
        let file = create_file(&path)?;
        Ok(LogWriter {
            path,
            file: None,
            buffer: Vec::new(),
            encoder: None,
            plain: Some(BufWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let path = &self.path;
        if let Some(plain) = &mut self.plain {
            return plain
                .write_all(data)
                .map_err(|e| io_err("writing build log", path, e));
        }
        if self.encoder.is_none() && self.buffer.len() + data.len() <= BUFFERED {
            self.buffer.extend_from_slice(data);
            return Ok(());
        }
        let encoder = match &mut self.encoder {
            Some(e) => e,
            None => {
                let file = self.file.take().expect("the file is the encoder's or ours");
                let mut e = BzEncoder::new(BufWriter::new(file), Compression::best());
                e.write_all(&std::mem::take(&mut self.buffer))
                    .map_err(|e| io_err("writing build log", path, e))?;
                self.encoder.insert(e)
            }
        };
        encoder
            .write_all(data)
            .map_err(|e| io_err("writing build log", path, e))
    }

    /// Ends the bzip2 stream and flushes the file.
    pub fn finish(self) -> Result<(), StoreError> {
        let path = self.path;
        let err = |e| io_err("finishing build log", &path, e);
        if let Some(mut plain) = self.plain {
            return plain.flush().map_err(err);
        }
        if let Some(encoder) = self.encoder {
            return encoder.finish().and_then(|mut w| w.flush()).map_err(err);
        }
        let mut file = self.file.expect("the file is the encoder's or ours");
        if self.buffer.is_empty() {
            return file.write_all(EMPTY_BZ2).map_err(err);
        }
        // The smallest block size (100 kB steps) that holds the whole log in one block.
        let level = self.buffer.len().div_ceil(100_000).clamp(1, 9) as u32;
        let mut encoder = BzEncoder::new(BufWriter::new(file), Compression::new(level));
        encoder
            .write_all(&self.buffer)
            .and_then(|()| encoder.finish())
            .and_then(|mut w| w.flush())
            .map_err(err)
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

    #[test]
    fn empty_short_and_long_logs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let drv = StorePath::from_base_name("2wwy2s3l015vj82n0xvikz1xnxcfaaka-root.drv").unwrap();
        let long: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for data in [&b""[..], b"one line\n", &long[..250_000], &long] {
            let mut w = LogWriter::create(dir.path(), &drv).unwrap();
            for chunk in data.chunks(70_000) {
                w.write(chunk).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(read_log(dir.path(), &drv).unwrap().unwrap(), data);
        }
        // Uncompressed, as Nix writes it with compress-build-log = false.
        let mut w = LogWriter::create_uncompressed(dir.path(), &drv).unwrap();
        w.write(b"plain\n").unwrap();
        w.finish().unwrap();
        let plain = dir
            .path()
            .join("drvs/2w/wy2s3l015vj82n0xvikz1xnxcfaaka-root.drv");
        assert_eq!(std::fs::read(plain).unwrap(), b"plain\n");
        // An empty log is bzip2's own empty stream.
        LogWriter::create(dir.path(), &drv)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(
            std::fs::read(log_path(dir.path(), &drv)).unwrap(),
            [
                0x42, 0x5a, 0x68, 0x39, 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, 0, 0, 0, 0
            ]
        );
    }
}
