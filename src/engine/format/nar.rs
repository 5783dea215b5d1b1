//! NAR, the Nix ARchive: the canonical serialisation of a file system object, byte for byte as
//! `nix-store --dump` writes it and `nix-store --restore` reads it.
//!
//! A NAR is a sequence of strings, each a little-endian `u64` length, the bytes, and zero
//! padding to a multiple of 8. After the magic `nix-archive-1` comes one node:
//! `( type regular [executable ""] contents <bytes> )`, `( type symlink target <bytes> )` or
//! `( type directory { entry ( name <bytes> node <node> ) } )` with the entries sorted by the
//! raw bytes of their names. Only the executable bit survives of the permissions, and no
//! times or owners, so equal trees give equal bytes and equal hashes.
//!
//! Writing: [`dump_path`] walks a tree and streams its NAR into any [`Write`] (hashing with a
//! [`Hasher`] as the sink, see [`hash_path`]); [`dump_path_parallel`] does the same with the
//! sink on a second thread, so that reading files and hashing overlap; [`NarNode`] builds a
//! NAR in memory.
//! Reading: [`NarReader`] parses a stream and drives a [`NarVisitor`]. It accepts exactly the
//! canonical form Nix writes and rejects anything else (bad tokens, non-zero padding, unsorted
//! or dangerous names, truncation, trailing data, absurd lengths) with the byte offset of the
//! fault; contents are streamed, never allocated from an untrusted length. [`restore`] unpacks
//! a NAR into a new path; [`validate`] checks, hashes and measures a stream.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::thread;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use thiserror::Error;

use super::hash::{Hash, HashAlgo, Hasher};

/// The string every NAR starts with.
pub const NAR_MAGIC: &[u8] = b"nix-archive-1";
/// Longest file name the reader accepts (no file system allows more; Linux allows 255).
pub const MAX_NAME_LEN: usize = 4096;
/// Longest symlink target the reader accepts (Linux's `PATH_MAX`).
pub const MAX_TARGET_LEN: usize = 4096;
/// Deepest directory nesting the reader accepts by default (a path that deep already exceeds
/// `PATH_MAX` on Linux, so Nix cannot have dumped it there).
pub const MAX_DEPTH: usize = 2048;

/// Size of the read and write buffers: large enough to keep system calls few, small enough to
/// stay in the CPU cache while the data is hashed.
const BUF_SIZE: usize = 128 * 1024;
/// Longest token of the format (`nix-archive-1`), with room to spare.
const MAX_TOKEN_LEN: usize = 16;
const ZEROS: [u8; 8] = [0; 8];

/// Number of zero bytes that pad a string of `len` bytes to a multiple of 8.
fn padding_len(len: u64) -> usize {
    (len.wrapping_neg() % 8) as usize
}

/// What is wrong with a malformed archive.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Malformed {
    #[error("input doesn't look like a Nix archive")]
    BadMagic,
    #[error("expected {expected}, found {found}")]
    BadToken {
        expected: &'static str,
        found: String,
    },
    #[error("non-zero padding")]
    NonZeroPadding,
    #[error("unexpected end of archive")]
    Truncated,
    #[error("data after the end of the archive")]
    TrailingData,
    #[error("invalid file name {:?}", String::from_utf8_lossy(.0))]
    InvalidName(Vec<u8>),
    #[error(
        "directory entries not sorted: {:?} after {:?}",
        String::from_utf8_lossy(.name),
        String::from_utf8_lossy(.prev)
    )]
    Unsorted { prev: Vec<u8>, name: Vec<u8> },
    #[error("duplicate directory entry {:?}", String::from_utf8_lossy(.0))]
    DuplicateName(Vec<u8>),
    #[error("{what} of {len} bytes is longer than the limit of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: usize,
    },
    #[error("invalid symlink target {:?}", String::from_utf8_lossy(.0))]
    InvalidTarget(Vec<u8>),
    #[error("directories nested deeper than {0}")]
    TooDeep(usize),
}

#[derive(Debug, Error)]
pub enum NarError {
    #[error("bad archive at byte {offset}: {kind}")]
    Malformed { offset: u64, kind: Malformed },
    #[error("reading the archive at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("{action} '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file '{}' has an unsupported type", .0.display())]
    UnsupportedType(PathBuf),
}

impl NarError {
    /// The offset and fault, when the archive itself is malformed.
    pub fn malformed(&self) -> Option<(u64, &Malformed)> {
        match self {
            NarError::Malformed { offset, kind } => Some((*offset, kind)),
            _ => None,
        }
    }

    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NarError {
        move |source| NarError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

// ---------------------------------------------------------------------------------- writing

/// Writes the NAR of the file system object at `path` (not following a symlink there) to
/// `out`, in large chunks; returns the NAR size.
pub fn dump_path<W: Write + ?Sized>(path: &Path, out: &mut W) -> Result<u64, NarError> {
    Dumper::new(WriteSink(out), BUF_SIZE).run(path)
}

/// Objects smaller than this are not worth a second thread.
const PARALLEL_MIN: u64 = 1 << 20;
/// Buffers shared by the dumping and the writing thread, and their size. The writer hashes
/// data the other CPU wrote, which costs most when it has left that CPU's caches: 8 x 64 KiB
/// stay in them (on the benchmark tree 8 x 64 KiB beat 8 x 256 KiB by about 8%, and 16 x 64,
/// 8 x 128 and 8 x 32 KiB).
const IN_FLIGHT: usize = 8;
const PIPE_BUF_SIZE: usize = 64 << 10;
/// A sleeping thread is woken once this many buffers are ready for it, not for each one: on a
/// virtual machine a wake-up costs as much as hashing tens of kilobytes.
const WAKE_BATCH: usize = IN_FLIGHT / 2;

/// Like [`dump_path`], but `out` is written on a second thread while this one reads the
/// files, so that reading and (for a hasher) hashing overlap.
pub fn dump_path_parallel<W: Write + Send + ?Sized>(
    path: &Path,
    out: &mut W,
) -> Result<u64, NarError> {
    let small = fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir() && m.len() < PARALLEL_MIN);
    if small {
        return dump_path(path, out);
    }
    let handover = Handover::default();
    thread::scope(|scope| {
        let writer = scope.spawn(|| handover.write_all_to(out));
        let sink = PipeSink {
            handover: &handover,
            spare: IN_FLIGHT - 1,
        };
        // Running the dumper drops the sink, which tells the writer that no more is coming.
        let dumped = Dumper::new(sink, PIPE_BUF_SIZE).run(path);
        match writer.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            // The writer's own error explains why the dumper could not hand over a buffer.
            Ok(Err(e)) => Err(NarError::Write(e)),
            Ok(Ok(())) => dumped,
        }
    })
}

/// The NAR hash and NAR size of the object at `path` (what `nix-hash --type ALGO` prints).
pub fn hash_path(path: &Path, algo: HashAlgo) -> Result<(Hash, u64), NarError> {
    let mut hasher = Hasher::new(algo);
    let size = dump_path_parallel(path, &mut hasher)?;
    Ok((hasher.finish(), size))
}

/// The hash and size of a file's contents, following symlinks (what `nix-hash --flat` prints).
pub fn hash_flat(path: &Path, algo: HashAlgo) -> Result<(Hash, u64), NarError> {
    let mut file = File::open(path).map_err(NarError::io("opening file", path))?;
    let mut hasher = Hasher::new(algo);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NarError::io("reading file", path)(e)),
        }
    }
    Ok((hasher.finish(), size))
}

/// A [`Write`] that writes everything to two writers, e.g. a hasher and a reference scanner,
/// so that one dump both hashes and scans.
pub struct Tee<A, B>(pub A, pub B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// One directory being dumped: its open handle, which its entries are opened relative to,
/// and its sorted names, kept in one allocation.
struct DirLevel {
    dir: Dir,
    names: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    next: usize,
    /// Length of the directory's own path in the dumper's path buffer.
    path_len: usize,
}

/// Where a [`Dumper`] sends its full buffers.
trait ChunkSink {
    /// Consumes `buf[..len]`; returns an empty buffer to fill next.
    fn consume(&mut self, buf: Box<[u8]>, len: usize) -> Result<Box<[u8]>, NarError>;
    fn finish(&mut self) -> Result<(), NarError>;
}

/// Writes each buffer to a [`Write`] and reuses it.
struct WriteSink<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> ChunkSink for WriteSink<'_, W> {
    fn consume(&mut self, buf: Box<[u8]>, len: usize) -> Result<Box<[u8]>, NarError> {
        self.0.write_all(&buf[..len]).map_err(NarError::Write)?;
        Ok(buf)
    }

    fn finish(&mut self) -> Result<(), NarError> {
        self.0.flush().map_err(NarError::Write)
    }
}

/// The buffers between a [`PipeSink`] (the dumping thread) and the writing thread.
#[derive(Default)]
struct Handover {
    state: Mutex<HandoverState>,
    /// Wakes the writer: buffers to write, or the end.
    filled: Condvar,
    /// Wakes the dumper: emptied buffers, or the writer's failure.
    emptied: Condvar,
}

#[derive(Default)]
struct HandoverState {
    full: VecDeque<(Box<[u8]>, usize)>,
    empty: Vec<Box<[u8]>>,
    /// The dumper has handed over its last buffer (or failed).
    done: bool,
    /// The writer failed and takes no more buffers.
    writer_failed: bool,
    writer_asleep: bool,
    dumper_asleep: bool,
}

impl Handover {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandoverState> {
        // Neither side panics while holding the lock, so a poisoned lock still holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writing thread: writes the buffers in order until the dumper is done.
    fn write_all_to<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        loop {
            let (buf, len) = {
                let mut state = self.lock();
                loop {
                    if let Some(next) = state.full.pop_front() {
                        break next;
                    }
                    if state.done {
                        drop(state);
                        return out.flush();
                    }
                    state.writer_asleep = true;
                    state = self.filled.wait(state).unwrap_or_else(|e| e.into_inner());
                    state.writer_asleep = false;
                }
            };
            let written = out.write_all(&buf[..len]);
            let mut state = self.lock();
            if written.is_err() {
                state.writer_failed = true;
                self.emptied.notify_one();
                return written;
            }
            state.empty.push(buf);
            if state.dumper_asleep && state.empty.len() >= WAKE_BATCH {
                self.emptied.notify_one();
            }
        }
    }
}

/// Hands each buffer to the writing thread and takes back an emptied one.
struct PipeSink<'a> {
    handover: &'a Handover,
    /// Buffers still to be allocated before waiting for emptied ones.
    spare: usize,
}

fn writer_gone() -> NarError {
    NarError::Write(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the writer thread stopped",
    ))
}

impl ChunkSink for PipeSink<'_> {
    fn consume(&mut self, buf: Box<[u8]>, len: usize) -> Result<Box<[u8]>, NarError> {
        let handover = self.handover;
        let mut state = handover.lock();
        if state.writer_failed {
            return Err(writer_gone());
        }
        state.full.push_back((buf, len));
        if state.writer_asleep && state.full.len() >= WAKE_BATCH {
            handover.filled.notify_one();
        }
        if self.spare > 0 {
            self.spare -= 1;
            drop(state);
            return Ok(vec![0u8; PIPE_BUF_SIZE].into_boxed_slice());
        }
        loop {
            if state.writer_failed {
                return Err(writer_gone());
            }
            if let Some(buf) = state.empty.pop() {
                return Ok(buf);
            }
            state.dumper_asleep = true;
            state = handover
                .emptied
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
            state.dumper_asleep = false;
        }
    }

    fn finish(&mut self) -> Result<(), NarError> {
        Ok(())
    }
}

impl Drop for PipeSink<'_> {
    /// The end of the stream, after the last buffer or a failure.
    fn drop(&mut self) {
        self.handover.lock().done = true;
        self.handover.filled.notify_one();
    }
}

/// Streams NAR bytes through a buffer, so the sink sees few, large writes; file contents are
/// read straight into that buffer.
struct Dumper<S: ChunkSink> {
    sink: S,
    buf: Box<[u8]>,
    len: usize,
    total: u64,
}

impl<S: ChunkSink> Dumper<S> {
    fn new(sink: S, buf_size: usize) -> Self {
        Dumper {
            sink,
            buf: vec![0u8; buf_size].into_boxed_slice(),
            len: 0,
            total: 0,
        }
    }

    /// Writes the whole NAR of `path`; returns its size.
    fn run(mut self, path: &Path) -> Result<u64, NarError> {
        self.put_str(NAR_MAGIC)?;
        self.tree(path)?;
        self.flush_buf()?;
        self.sink.finish()?;
        Ok(self.total)
    }

    fn flush_buf(&mut self) -> Result<(), NarError> {
        if self.len > 0 {
            let buf = std::mem::take(&mut self.buf);
            self.buf = self.sink.consume(buf, self.len)?;
            self.total += self.len as u64;
            self.len = 0;
        }
        Ok(())
    }

    fn put(&mut self, mut data: &[u8]) -> Result<(), NarError> {
        while !data.is_empty() {
            if self.len == self.buf.len() {
                self.flush_buf()?;
            }
            let n = data.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
        Ok(())
    }

    fn put_str(&mut self, s: &[u8]) -> Result<(), NarError> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s)?;
        self.put(&ZEROS[..padding_len(s.len() as u64)])
    }

    fn put_strs(&mut self, strs: &[&[u8]]) -> Result<(), NarError> {
        strs.iter().try_for_each(|s| self.put_str(s))
    }

    /// Copies exactly `size` bytes of `file` (its size when it was examined) into the stream.
    fn put_contents(&mut self, mut file: File, path: &Path, size: u64) -> Result<(), NarError> {
        self.put(&size.to_le_bytes())?;
        let mut left = size;
        while left > 0 {
            if self.len == self.buf.len() {
                self.flush_buf()?;
            }
            let space =
                (self.buf.len() - self.len).min(usize::try_from(left).unwrap_or(usize::MAX));
            match file.read(&mut self.buf[self.len..self.len + space]) {
                Ok(0) => {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was being archived",
                    );
                    return Err(NarError::io("reading file", path)(eof));
                }
                Ok(n) => {
                    self.len += n;
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NarError::io("reading file", path)(e)),
            }
        }
        self.put(&ZEROS[..padding_len(size)])
    }

    /// Dumps the tree at `root`, depth first, without recursion. Entries are examined and
    /// opened relative to their directory's handle: no path is looked up twice, and a
    /// directory renamed or replaced during the walk cannot send it elsewhere.
    fn tree(&mut self, root: &Path) -> Result<(), NarError> {
        // The full path of the current node, for error messages.
        let mut path = root.as_os_str().as_bytes().to_vec();
        let mut stack: Vec<DirLevel> = Vec::new();
        let mut next = self.node(AT_FDCWD, root.as_os_str().as_bytes(), &path)?;
        loop {
            match next {
                Some(level) => stack.push(level),
                // A leaf inside a directory: close its entry.
                None if !stack.is_empty() => self.put_str(b")")?,
                None => {}
            }
            // Go to the next entry, closing the directories that are done.
            let (start, end) = loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(());
                };
                if let Some(&(start, end)) = top.ranges.get(top.next) {
                    top.next += 1;
                    path.truncate(top.path_len);
                    path.push(b'/');
                    path.extend_from_slice(&top.names[start..end]);
                    break (start, end);
                }
                self.put_str(b")")?;
                stack.pop();
                if stack.is_empty() {
                    return Ok(());
                }
                self.put_str(b")")?;
            };
            let top = stack.last().expect("an entry was just taken from it");
            let name = &top.names[start..end];
            let dir = top.dir.as_fd();
            self.put_strs(&[b"entry", b"(", b"name", name, b"node"])?;
            next = self.node(dir, name, &path)?;
        }
    }

    /// Writes the node `name` in `dir` (whose full path is `path_bytes`); for a directory
    /// only its opening, returning its entries.
    fn node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path_bytes: &[u8],
    ) -> Result<Option<DirLevel>, NarError> {
        let path = bytes_path(path_bytes);
        let errno = |action| move |e: Errno| NarError::io(action, path)(io::Error::from(e));
        let stat =
            fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno("getting status of"))?;
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => {
                // Not following a symlink, not waiting for a writer should the file have been
                // replaced by a fifo since it was examined.
                let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
                let file = openat(dir, name, flags | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(errno("opening file"))?;
                if stat.st_mode & 0o100 != 0 {
                    self.put_strs(&[b"(", b"type", b"regular", b"executable", b"", b"contents"])?;
                } else {
                    self.put_strs(&[b"(", b"type", b"regular", b"contents"])?;
                }
                self.put_contents(File::from(file), path, stat.st_size as u64)?;
                self.put_str(b")")?;
                Ok(None)
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(dir, name).map_err(errno("reading symbolic link"))?;
                self.put_strs(&[b"(", b"type", b"symlink", b"target"])?;
                self.put_str(target.as_bytes())?;
                self.put_str(b")")?;
                Ok(None)
            }
            SFlag::S_IFDIR => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                let mut handle = Dir::openat(dir, name, flags | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(errno("opening directory"))?;
                let mut names = Vec::new();
                let mut ranges = Vec::new();
                for entry in handle.iter() {
                    let entry = entry.map_err(errno("reading directory"))?;
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        let start = names.len();
                        names.extend_from_slice(name);
                        ranges.push((start, names.len()));
                    }
                }
                ranges.sort_unstable_by(|&(a, b), &(c, d)| names[a..b].cmp(&names[c..d]));
                self.put_strs(&[b"(", b"type", b"directory"])?;
                Ok(Some(DirLevel {
                    dir: handle,
                    names,
                    ranges,
                    next: 0,
                    path_len: path_bytes.len(),
                }))
            }
            _ => Err(NarError::UnsupportedType(path.to_owned())),
        }
    }
}

/// A file system object in memory: to build NARs in tests and from descriptions, and to read
/// small ones. Names are raw bytes and written as given (the reader checks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarNode {
    Regular { executable: bool, contents: Vec<u8> },
    Symlink { target: Vec<u8> },
    Directory(BTreeMap<Vec<u8>, NarNode>),
}

impl NarNode {
    /// A regular, non-executable file.
    pub fn file(contents: impl Into<Vec<u8>>) -> NarNode {
        NarNode::Regular {
            executable: false,
            contents: contents.into(),
        }
    }

    /// An executable file.
    pub fn executable(contents: impl Into<Vec<u8>>) -> NarNode {
        NarNode::Regular {
            executable: true,
            contents: contents.into(),
        }
    }

    pub fn symlink(target: impl Into<Vec<u8>>) -> NarNode {
        NarNode::Symlink {
            target: target.into(),
        }
    }

    pub fn directory<N: Into<Vec<u8>>>(entries: impl IntoIterator<Item = (N, NarNode)>) -> NarNode {
        NarNode::Directory(entries.into_iter().map(|(n, e)| (n.into(), e)).collect())
    }

    /// Writes the NAR to `out`; returns its size.
    pub fn write_to<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<u64> {
        let mut counter = Counter { out, count: 0 };
        write_str(&mut counter, NAR_MAGIC)?;
        self.write_node(&mut counter)?;
        Ok(counter.count)
    }

    fn write_node<W: Write>(&self, out: &mut W) -> io::Result<()> {
        write_str(out, b"(")?;
        write_str(out, b"type")?;
        match self {
            NarNode::Regular {
                executable,
                contents,
            } => {
                write_str(out, b"regular")?;
                if *executable {
                    write_str(out, b"executable")?;
                    write_str(out, b"")?;
                }
                write_str(out, b"contents")?;
                write_str(out, contents)?;
            }
            NarNode::Symlink { target } => {
                write_str(out, b"symlink")?;
                write_str(out, b"target")?;
                write_str(out, target)?;
            }
            NarNode::Directory(entries) => {
                write_str(out, b"directory")?;
                for (name, node) in entries {
                    for token in [&b"entry"[..], b"(", b"name", name, b"node"] {
                        write_str(out, token)?;
                    }
                    node.write_node(out)?;
                    write_str(out, b")")?;
                }
            }
        }
        write_str(out, b")")
    }

    /// The NAR bytes.
    pub fn to_nar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// NAR hash and NAR size.
    pub fn nar_hash(&self, algo: HashAlgo) -> (Hash, u64) {
        let mut hasher = Hasher::new(algo);
        let size = self.write_to(&mut hasher).expect("hashing cannot fail");
        (hasher.finish(), size)
    }

    /// Reads a whole NAR into memory (for small archives: contents are kept in memory).
    pub fn from_nar(input: impl Read) -> Result<NarNode, NarError> {
        let mut builder = TreeBuilder::default();
        NarReader::new(input).parse(&mut builder)?;
        Ok(builder.finish())
    }

    /// Creates the object at `dest` (which must not exist), as [`restore`] of its NAR would.
    pub fn restore_to(&self, dest: &Path) -> Result<u64, NarError> {
        restore(&self.to_nar()[..], dest)
    }
}

/// Writes one NAR string: length, bytes, zero padding.
fn write_str<W: Write + ?Sized>(out: &mut W, s: &[u8]) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s)?;
    out.write_all(&ZEROS[..padding_len(s.len() as u64)])
}

struct Counter<'a, W: Write + ?Sized> {
    out: &'a mut W,
    count: u64,
}

impl<W: Write + ?Sized> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------------- reading

/// What a [`NarReader`] reports, in archive order. `path` is relative to the root, its names
/// joined by `/` (empty for the root itself). Every method defaults to doing nothing.
pub trait NarVisitor {
    fn directory(&mut self, _path: &[u8]) -> Result<(), NarError> {
        Ok(())
    }

    /// A regular file of `size` bytes begins; its contents follow in [`NarVisitor::contents`]
    /// calls, then [`NarVisitor::end_regular`].
    fn regular(&mut self, _path: &[u8], _executable: bool, _size: u64) -> Result<(), NarError> {
        Ok(())
    }

    fn contents(&mut self, _chunk: &[u8]) -> Result<(), NarError> {
        Ok(())
    }

    fn end_regular(&mut self) -> Result<(), NarError> {
        Ok(())
    }

    fn symlink(&mut self, _path: &[u8], _target: &[u8]) -> Result<(), NarError> {
        Ok(())
    }
}

/// Only validates.
impl NarVisitor for () {}

/// A streaming NAR parser over any [`Read`]. Every byte it consumes is also written to its
/// tee (by default nowhere), which makes it a validating pass-through: to hash, to measure,
/// or to copy a NAR while checking it (Nix's `copyNAR`).
pub struct NarReader<R, T = io::Sink> {
    inner: R,
    tee: T,
    buf: Box<[u8]>,
    /// Next unread byte of `buf`.
    pos: usize,
    /// End of the valid bytes of `buf`.
    end: usize,
    /// Bytes of `buf` before this are already written to the tee.
    teed: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Read only the bytes the archive needs (the stream continues after it).
    exact: bool,
    max_depth: usize,
}

/// A token of at most [`MAX_TOKEN_LEN`] bytes, with its stream offset.
struct Token {
    offset: u64,
    bytes: [u8; MAX_TOKEN_LEN],
    len: usize,
}

impl Token {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn bad(&self, expected: &'static str) -> NarError {
        NarError::Malformed {
            offset: self.offset,
            kind: Malformed::BadToken {
                expected,
                found: format!("{:?}", String::from_utf8_lossy(self.as_bytes())),
            },
        }
    }
}

/// A directory being parsed.
struct Frame {
    /// Name of the previous entry, for the order check.
    prev: Option<Vec<u8>>,
    /// Length of the directory's path in the parser's path buffer.
    path_len: usize,
}

impl<R: Read> NarReader<R, io::Sink> {
    pub fn new(inner: R) -> Self {
        NarReader {
            inner,
            tee: io::sink(),
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            teed: 0,
            base: 0,
            exact: false,
            max_depth: MAX_DEPTH,
        }
    }
}

impl<R: Read, T: Write> NarReader<R, T> {
    /// Also writes every consumed byte to `tee`.
    pub fn with_tee<U: Write>(self, tee: U) -> NarReader<R, U> {
        NarReader {
            inner: self.inner,
            tee,
            buf: self.buf,
            pos: self.pos,
            end: self.end,
            teed: self.teed,
            base: self.base,
            exact: self.exact,
            max_depth: self.max_depth,
        }
    }

    /// The NAR is embedded in a longer stream: read no byte past its end and do not require
    /// the stream to end there.
    pub fn embedded(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Rejects directories nested deeper than `depth` (default [`MAX_DEPTH`]).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// The underlying reader and the tee.
    pub fn into_parts(self) -> (R, T) {
        (self.inner, self.tee)
    }

    /// Parses one archive, reporting it to `visitor`; returns its size. Unless
    /// [`NarReader::embedded`], the input must end with the archive.
    pub fn parse<V: NarVisitor + ?Sized>(&mut self, visitor: &mut V) -> Result<u64, NarError> {
        let start = self.offset();
        self.magic()?;
        self.nodes(visitor)?;
        let size = self.offset() - start;
        if !self.exact && !self.at_eof()? {
            return Err(self.malformed(self.offset(), Malformed::TrailingData));
        }
        self.flush_tee()?;
        Ok(size)
    }

    /// Parses one archive only to check it; returns its size.
    pub fn validate(&mut self) -> Result<u64, NarError> {
        self.parse(&mut ())
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn malformed(&self, offset: u64, kind: Malformed) -> NarError {
        NarError::Malformed { offset, kind }
    }

    fn flush_tee(&mut self) -> Result<(), NarError> {
        if self.teed < self.pos {
            self.tee
                .write_all(&self.buf[self.teed..self.pos])
                .map_err(NarError::Write)?;
            self.teed = self.pos;
        }
        Ok(())
    }

    /// Reads until at least `need` unread bytes are buffered, preferably `want` (both at most
    /// the buffer size); a premature end of input is [`Malformed::Truncated`].
    fn fill(&mut self, need: usize, want: usize) -> Result<(), NarError> {
        debug_assert!(need <= want && want <= self.buf.len());
        while self.end - self.pos < need {
            if self.buf.len() - self.pos < want {
                self.flush_tee()?;
                self.buf.copy_within(self.pos..self.end, 0);
                self.base += self.pos as u64;
                self.end -= self.pos;
                self.pos = 0;
                self.teed = 0;
            }
            let limit = if self.exact {
                self.pos + want
            } else {
                self.buf.len()
            };
            match self.inner.read(&mut self.buf[self.end..limit]) {
                Ok(0) => {
                    let offset = self.base + self.end as u64;
                    return Err(self.malformed(offset, Malformed::Truncated));
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.base + self.end as u64,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn at_eof(&mut self) -> Result<bool, NarError> {
        match self.fill(1, 1) {
            Ok(()) => Ok(false),
            Err(NarError::Malformed {
                kind: Malformed::Truncated,
                ..
            }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        self.fill(8, 8)?;
        let bytes: [u8; 8] = self.buf[self.pos..self.pos + 8]
            .try_into()
            .expect("eight bytes");
        self.pos += 8;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Consumes the zero padding after `len` bytes of a string.
    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = padding_len(len);
        if pad > 0 {
            self.fill(pad, pad)?;
            let bytes = &self.buf[self.pos..self.pos + pad];
            if let Some(i) = bytes.iter().position(|&b| b != 0) {
                let offset = self.offset() + i as u64;
                return Err(self.malformed(offset, Malformed::NonZeroPadding));
            }
            self.pos += pad;
        }
        Ok(())
    }

    /// Reads a string of at most `max` bytes (`what` names it in errors); returns its offset
    /// and its position in the buffer, valid until the next read.
    fn string(
        &mut self,
        max: usize,
        what: &'static str,
    ) -> Result<(u64, std::ops::Range<usize>), NarError> {
        let offset = self.offset();
        let len = self.read_u64()?;
        if len > max as u64 {
            return Err(self.malformed(offset, Malformed::TooLong { what, len, max }));
        }
        let len = len as usize;
        // String and padding are buffered together, so the padding check moves nothing.
        let padded = len + padding_len(len as u64);
        self.fill(padded, padded)?;
        let range = self.pos..self.pos + len;
        self.pos += len;
        self.padding(len as u64)?;
        Ok((offset, range))
    }

    /// Reads a token; `expected` describes what was expected, for errors.
    fn token(&mut self, expected: &'static str) -> Result<Token, NarError> {
        let offset = self.offset();
        let len = self.read_u64()?;
        if len > MAX_TOKEN_LEN as u64 {
            let found = format!("a string of {len} bytes");
            return Err(self.malformed(offset, Malformed::BadToken { expected, found }));
        }
        let len = len as usize;
        let padded = len + padding_len(len as u64);
        self.fill(padded, padded)?;
        let mut token = Token {
            offset,
            bytes: [0; MAX_TOKEN_LEN],
            len,
        };
        token.bytes[..len].copy_from_slice(&self.buf[self.pos..self.pos + len]);
        self.pos += len;
        self.padding(len as u64)?;
        Ok(token)
    }

    fn expect(&mut self, token: &'static [u8], expected: &'static str) -> Result<(), NarError> {
        let t = self.token(expected)?;
        if t.as_bytes() == token {
            Ok(())
        } else {
            Err(t.bad(expected))
        }
    }

    fn magic(&mut self) -> Result<(), NarError> {
        let offset = self.offset();
        let len = self.read_u64()?;
        if len != NAR_MAGIC.len() as u64 {
            return Err(self.malformed(offset, Malformed::BadMagic));
        }
        self.fill(NAR_MAGIC.len(), NAR_MAGIC.len())?;
        if &self.buf[self.pos..self.pos + NAR_MAGIC.len()] != NAR_MAGIC {
            return Err(self.malformed(offset, Malformed::BadMagic));
        }
        self.pos += NAR_MAGIC.len();
        self.padding(NAR_MAGIC.len() as u64)
    }

    /// Parses the root node and everything below it, depth first, without recursion.
    fn nodes<V: NarVisitor + ?Sized>(&mut self, visitor: &mut V) -> Result<(), NarError> {
        let mut path: Vec<u8> = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            if self.node(&path, stack.len(), visitor)? {
                stack.push(Frame {
                    prev: None,
                    path_len: path.len(),
                });
            } else if !stack.is_empty() {
                self.expect(b")", "\")\" closing the entry")?;
            }
            loop {
                let Some(frame) = stack.last_mut() else {
                    return Ok(());
                };
                let t = self.token("\"entry\" or \")\"")?;
                match t.as_bytes() {
                    b")" => {
                        stack.pop();
                        let Some(parent) = stack.last() else {
                            return Ok(());
                        };
                        path.truncate(parent.path_len);
                        self.expect(b")", "\")\" closing the entry")?;
                    }
                    b"entry" => {
                        self.expect(b"(", "\"(\"")?;
                        self.expect(b"name", "\"name\"")?;
                        let (offset, range) = self.string(MAX_NAME_LEN, "file name")?;
                        let name = &self.buf[range];
                        if name.is_empty()
                            || name == b"."
                            || name == b".."
                            || name.contains(&b'/')
                            || name.contains(&0)
                        {
                            let kind = Malformed::InvalidName(name.to_vec());
                            return Err(self.malformed(offset, kind));
                        }
                        if let Some(prev) = &frame.prev {
                            match prev.as_slice().cmp(name) {
                                std::cmp::Ordering::Less => {}
                                std::cmp::Ordering::Equal => {
                                    let kind = Malformed::DuplicateName(name.to_vec());
                                    return Err(self.malformed(offset, kind));
                                }
                                std::cmp::Ordering::Greater => {
                                    let kind = Malformed::Unsorted {
                                        prev: prev.clone(),
                                        name: name.to_vec(),
                                    };
                                    return Err(self.malformed(offset, kind));
                                }
                            }
                        }
                        path.truncate(frame.path_len);
                        if !path.is_empty() {
                            path.push(b'/');
                        }
                        path.extend_from_slice(name);
                        match &mut frame.prev {
                            Some(prev) => {
                                prev.clear();
                                prev.extend_from_slice(name);
                            }
                            None => frame.prev = Some(name.to_vec()),
                        }
                        self.expect(b"node", "\"node\"")?;
                        break;
                    }
                    _ => return Err(t.bad("\"entry\" or \")\"")),
                }
            }
        }
    }

    /// Parses one node at `path`, inside `depth` directories. A leaf is consumed up to its
    /// closing `)`; of a directory only the opening (returns `true`).
    fn node<V: NarVisitor + ?Sized>(
        &mut self,
        path: &[u8],
        depth: usize,
        visitor: &mut V,
    ) -> Result<bool, NarError> {
        let open = self.offset();
        self.expect(b"(", "\"(\"")?;
        self.expect(b"type", "\"type\"")?;
        let t = self.token("a file type")?;
        match t.as_bytes() {
            b"regular" => {
                let t = self.token("\"executable\" or \"contents\"")?;
                let executable = match t.as_bytes() {
                    b"executable" => {
                        self.expect(b"", "the empty executable marker")?;
                        self.expect(b"contents", "\"contents\"")?;
                        true
                    }
                    b"contents" => false,
                    _ => return Err(t.bad("\"executable\" or \"contents\"")),
                };
                let size = self.read_u64()?;
                visitor.regular(path, executable, size)?;
                let mut left = size;
                while left > 0 {
                    if self.pos == self.end {
                        let want = usize::try_from(left)
                            .unwrap_or(usize::MAX)
                            .min(self.buf.len());
                        self.fill(1, want)?;
                    }
                    let n = (self.end - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                    visitor.contents(&self.buf[self.pos..self.pos + n])?;
                    self.pos += n;
                    left -= n as u64;
                }
                self.padding(size)?;
                visitor.end_regular()?;
            }
            b"symlink" => {
                self.expect(b"target", "\"target\"")?;
                let (offset, range) = self.string(MAX_TARGET_LEN, "symlink target")?;
                let target = &self.buf[range];
                if target.is_empty() || target.contains(&0) {
                    let kind = Malformed::InvalidTarget(target.to_vec());
                    return Err(self.malformed(offset, kind));
                }
                visitor.symlink(path, target)?;
            }
            b"directory" => {
                if depth >= self.max_depth {
                    return Err(self.malformed(open, Malformed::TooDeep(self.max_depth)));
                }
                visitor.directory(path)?;
                return Ok(true);
            }
            _ => return Err(t.bad("a file type")),
        }
        self.expect(b")", "\")\" closing the node")?;
        Ok(false)
    }
}

/// Checks a NAR read from `input` (which must end with it); returns its hash and size.
pub fn validate(input: impl Read, algo: HashAlgo) -> Result<(Hash, u64), NarError> {
    let mut hasher = Hasher::new(algo);
    let size = NarReader::new(input).with_tee(&mut hasher).validate()?;
    Ok((hasher.finish(), size))
}

/// Unpacks a NAR read from `input` at `dest`, which must not exist (`nix-store --restore`):
/// directories 0777 and files 0666 less the umask, executables with `+x` for everyone, as
/// Nix creates them. Returns the NAR size.
///
/// Entry names are checked before use (no `/`, `.`, `..`, duplicates), so every object is
/// created inside a directory this call just made, and nothing it creates is ever followed.
pub fn restore(input: impl Read, dest: &Path) -> Result<u64, NarError> {
    let mut restorer = Restorer {
        dest: dest.as_os_str().as_bytes().to_vec(),
        dest_len: dest.as_os_str().len(),
        file: None,
    };
    NarReader::new(input).parse(&mut restorer)
}

/// Creates what a NAR describes under `dest`.
struct Restorer {
    /// `dest`, followed by the current relative path while one is being created.
    dest: Vec<u8>,
    dest_len: usize,
    file: Option<(File, PathBuf)>,
}

/// `dest` (its first `dest_len` bytes) joined with the relative path `rel`.
fn join<'a>(dest: &'a mut Vec<u8>, dest_len: usize, rel: &[u8]) -> &'a Path {
    dest.truncate(dest_len);
    if !rel.is_empty() {
        dest.push(b'/');
        dest.extend_from_slice(rel);
    }
    bytes_path(dest)
}

impl NarVisitor for Restorer {
    fn directory(&mut self, rel: &[u8]) -> Result<(), NarError> {
        let path = join(&mut self.dest, self.dest_len, rel);
        fs::create_dir(path).map_err(NarError::io("creating directory", path))
    }

    fn regular(&mut self, rel: &[u8], executable: bool, _size: u64) -> Result<(), NarError> {
        let path = join(&mut self.dest, self.dest_len, rel);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(path)
            .map_err(NarError::io("creating file", path))?;
        if executable {
            let mode = file
                .metadata()
                .map_err(NarError::io("getting status of", path))?
                .mode();
            file.set_permissions(fs::Permissions::from_mode(mode | 0o111))
                .map_err(NarError::io("making executable", path))?;
        }
        self.file = Some((file, path.to_owned()));
        Ok(())
    }

    fn contents(&mut self, chunk: &[u8]) -> Result<(), NarError> {
        if let Some((file, path)) = &mut self.file {
            file.write_all(chunk)
                .map_err(NarError::io("writing file", path))?;
        }
        Ok(())
    }

    fn end_regular(&mut self) -> Result<(), NarError> {
        self.file = None;
        Ok(())
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<(), NarError> {
        let path = join(&mut self.dest, self.dest_len, rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
            .map_err(NarError::io("creating symbolic link", path))
    }
}

/// The entries of a directory node, by name.
type Entries = BTreeMap<Vec<u8>, NarNode>;

/// Builds a [`NarNode`] from the visitor calls.
#[derive(Default)]
struct TreeBuilder {
    /// Open directories: their path and entries so far.
    stack: Vec<(Vec<u8>, Entries)>,
    root: Option<NarNode>,
    /// The regular file being read: path, executable, contents.
    file: Option<(Vec<u8>, bool, Vec<u8>)>,
}

impl TreeBuilder {
    /// Closes the open directories that `path` is not inside of.
    fn close_until_parent_of(&mut self, path: &[u8]) {
        while let Some((dir, _)) = self.stack.last() {
            let inside = dir.is_empty()
                || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/');
            if inside {
                break;
            }
            let (dir, entries) = self.stack.pop().expect("non-empty stack");
            self.add(&dir, NarNode::Directory(entries));
        }
    }

    fn add(&mut self, path: &[u8], node: NarNode) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((dir, entries)) => {
                let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
                entries.insert(path[skip..].to_vec(), node);
            }
        }
    }

    fn finish(mut self) -> NarNode {
        while let Some((dir, entries)) = self.stack.pop() {
            self.add(&dir, NarNode::Directory(entries));
        }
        self.root.expect("a parsed archive has a root")
    }
}

impl NarVisitor for TreeBuilder {
    fn directory(&mut self, path: &[u8]) -> Result<(), NarError> {
        self.close_until_parent_of(path);
        self.stack.push((path.to_vec(), BTreeMap::new()));
        Ok(())
    }

    fn regular(&mut self, path: &[u8], executable: bool, _size: u64) -> Result<(), NarError> {
        self.close_until_parent_of(path);
        self.file = Some((path.to_vec(), executable, Vec::new()));
        Ok(())
    }

    fn contents(&mut self, chunk: &[u8]) -> Result<(), NarError> {
        if let Some((_, _, contents)) = &mut self.file {
            contents.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn end_regular(&mut self) -> Result<(), NarError> {
        if let Some((path, executable, contents)) = self.file.take() {
            self.add(
                &path,
                NarNode::Regular {
                    executable,
                    contents,
                },
            );
        }
        Ok(())
    }

    fn symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), NarError> {
        self.close_until_parent_of(path);
        self.add(path, NarNode::symlink(target));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
