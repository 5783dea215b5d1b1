//! Temporary GC roots, so that a concurrent Nix garbage collector keeps what drover uses.
//!
//! As Nix does: each process appends NUL-terminated store paths to `<state>/temproots/<pid>`
//! while holding an exclusive lock on that file (the collector takes the lock only from dead
//! processes, whose roots it then ignores). Before adding a root the process takes
//! `<state>/gc.lock` shared without waiting; if that fails a collection is running, and the
//! root is also announced on the collector's socket (`<state>/gc-socket/socket`), which
//! answers `1`. The file is removed when the store is dropped.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::StoreError;

pub struct TempRoots {
    state_dir: PathBuf,
    file_path: PathBuf,
    file: Option<File>,
    gc_lock: Option<File>,
    gc_socket: Option<UnixStream>,
}

impl TempRoots {
    pub fn new(state_dir: &Path) -> TempRoots {
        TempRoots {
            state_dir: state_dir.to_owned(),
            file_path: state_dir
                .join("temproots")
                .join(std::process::id().to_string()),
            file: None,
            gc_lock: None,
            gc_socket: None,
        }
    }

    fn io(action: &str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            action: action.to_owned(),
            path: path.to_owned(),
            source,
        }
    }

    fn roots_file(&mut self) -> Result<&mut File, StoreError> {
        if self.file.is_none() {
            loop {
                // A file with our pid can only be a leftover of a dead process.
                match std::fs::remove_file(&self.file_path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Self::io("removing stale temp roots", &self.file_path, e));
                    }
                    _ => {}
                }
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&self.file_path)
                    .map_err(|e| Self::io("opening temp roots file", &self.file_path, e))?;
                file.lock()
                    .map_err(|e| Self::io("locking temp roots file", &self.file_path, e))?;
                let len = file
                    .metadata()
                    .map_err(|e| Self::io("statting temp roots file", &self.file_path, e))?
                    .len();
                // Non-empty: the collector deleted it between our open and our lock.
                if len == 0 {
                    self.file = Some(file);
                    break;
                }
            }
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Registers `printed_path` (a full store path) as a temporary root of this process.
    pub fn add(&mut self, printed_path: &str) -> Result<(), StoreError> {
        self.roots_file()?;
        let gc_lock_path = self.state_dir.join("gc.lock");
        if self.gc_lock.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&gc_lock_path)
                .map_err(|e| Self::io("opening the GC lock", &gc_lock_path, e))?;
            self.gc_lock = Some(file);
        }
        let gc_lock = self.gc_lock.take().expect("opened above");
        // Either we hold the GC lock shared (no collection can start before our root is on
        // disk) or a collector runs and has acknowledged the root on its socket.
        loop {
            match gc_lock.try_lock_shared() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if self.tell_collector(printed_path)? {
                        break;
                    }
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Self::io("locking the GC lock", &gc_lock_path, e));
                }
            }
        }
        let mut entry = printed_path.as_bytes().to_vec();
        entry.push(0);
        let file_path = self.file_path.clone();
        let written = self
            .roots_file()?
            .write_all(&entry)
            .map_err(|e| Self::io("writing temp root", &file_path, e));
        // Only now, with the root on disk, may a collection start.
        let _ = gc_lock.unlock();
        self.gc_lock = Some(gc_lock);
        written
    }

    /// A collection is running: announce the root on its socket and wait for the ack.
    /// `false` when the collector has gone away meanwhile (the caller tries the lock again).
    fn tell_collector(&mut self, printed_path: &str) -> Result<bool, StoreError> {
        let socket_path = self.state_dir.join("gc-socket/socket");
        if self.gc_socket.is_none() {
            match UnixStream::connect(&socket_path) {
                Ok(s) => self.gc_socket = Some(s),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(Self::io("connecting to the collector", &socket_path, e)),
            }
        }
        let socket = self.gc_socket.as_mut().expect("connected above");
        let mut ack = [0u8; 1];
        let sent = socket
            .write_all(format!("{printed_path}\n").as_bytes())
            .and_then(|()| socket.read_exact(&mut ack));
        match sent {
            Ok(()) if ack[0] == b'1' => Ok(true),
            Ok(()) => Err(Self::io(
                "talking to the collector",
                &socket_path,
                io::Error::other(format!("unexpected reply byte {}", ack[0])),
            )),
            Err(_) => {
                self.gc_socket = None;
                Ok(false)
            }
        }
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.file_path);
        }
    }
}
