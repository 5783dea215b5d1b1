//! Path locks, interoperable with Nix's: an exclusive `flock` on `<real path>.lock`.
//!
//! A holder that is done with a path that is now valid deletes the lock file: it unlinks it and
//! then writes one byte into it, so that a process that was waiting on the old (unlinked) file
//! and acquires it afterwards sees a non-empty file, knows the lock is stale and retries with a
//! fresh file. Several paths are always locked in sorted order (no deadlocks), and a failed
//! non-blocking attempt releases whatever it had taken. The scheduler never blocks on a lock:
//! it tries, and on failure learns who holds it (pid and command line from `/proc/locks` and
//! `/proc/PID/cmdline`) and polls again later.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("opening lock file '{}': {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("acquiring lock on '{}': {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("statting lock file '{}': {source}", path.display())]
    Stat { path: PathBuf, source: io::Error },
}

/// Who holds a lock, as far as the kernel tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    /// The holder's command line, arguments joined by spaces, when readable.
    pub command: Option<String>,
}

/// Locks held on a set of paths, released on drop.
#[derive(Debug, Default)]
pub struct PathLocks {
    held: Vec<(PathBuf, File)>,
    delete_on_release: bool,
}

/// The result of a non-blocking attempt.
#[derive(Debug)]
pub enum TryLock {
    Acquired(PathLocks),
    /// Another process (or another goal of ours) holds `lock`.
    Busy {
        lock: PathBuf,
        holder: Option<LockHolder>,
    },
}

/// The lock file of a path: `<path>.lock`.
pub fn lock_file_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn open_lock_file(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Whether the just-locked file was deleted by its previous holder.
fn is_stale(file: &File, path: &Path) -> Result<bool, LockError> {
    let meta = file.metadata().map_err(|source| LockError::Stat {
        path: path.to_owned(),
        source,
    })?;
    Ok(meta.len() != 0)
}

/// Tries to lock every path's lock file without blocking.
pub fn try_lock_paths<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<TryLock, LockError> {
    lock_all(paths, None)
}

/// Locks every path's lock file, waiting as long as it takes. `on_wait` is called once per
/// path whose lock is busy, before waiting (the caller's "waiting for lock on …" message).
/// Blocking: call it from a thread that may block, never from the async driver loop.
pub fn lock_paths<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    mut on_wait: impl FnMut(&Path, Option<LockHolder>),
) -> Result<PathLocks, LockError> {
    match lock_all(paths, Some(&mut on_wait))? {
        TryLock::Acquired(locks) => Ok(locks),
        TryLock::Busy { .. } => unreachable!("a waiting locker never reports a busy lock"),
    }
}

/// Told which lock is busy (and by whom) before a blocking locker waits for it.
type OnWait<'a> = dyn FnMut(&Path, Option<LockHolder>) + 'a;

/// Locks the paths in sorted order; with `wait`, waits for busy locks (telling `wait` first),
/// without it gives up at the first busy one, releasing what it took.
fn lock_all<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    mut wait: Option<&mut OnWait<'_>>,
) -> Result<TryLock, LockError> {
    let sorted: BTreeSet<&Path> = paths.into_iter().collect();
    let mut locks = PathLocks::default();
    for path in sorted {
        let lock_path = lock_file_of(path);
        loop {
            let file = open_lock_file(&lock_path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => match wait.as_mut() {
                    Some(on_wait) => {
                        on_wait(&lock_path, lock_holder(&lock_path));
                        file.lock().map_err(|source| LockError::Lock {
                            path: lock_path.clone(),
                            source,
                        })?;
                    }
                    None => {
                        let holder = lock_holder(&lock_path);
                        // Dropping `locks` releases what we took so far.
                        return Ok(TryLock::Busy {
                            lock: lock_path,
                            holder,
                        });
                    }
                },
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Lock {
                        path: lock_path,
                        source,
                    });
                }
            }
            // A file its previous holder deleted: retry with a fresh one.
            if !is_stale(&file, &lock_path)? {
                locks.held.push((lock_path, file));
                break;
            }
        }
    }
    Ok(TryLock::Acquired(locks))
}

impl PathLocks {
    /// Whether to delete the lock files on release (set once the paths are valid, so no
    /// future locker needs them).
    pub fn set_deletion(&mut self, delete: bool) {
        self.delete_on_release = delete;
    }

    /// The lock files held.
    pub fn lock_files(&self) -> impl Iterator<Item = &Path> {
        self.held.iter().map(|(p, _)| p.as_path())
    }

    /// Releases the locks (also done on drop).
    pub fn unlock(&mut self) {
        for (path, mut file) in self.held.drain(..) {
            if self.delete_on_release {
                // Unlink first, then mark the file stale for anyone already waiting on it.
                // Both are best effort, as in Nix: a lock file left behind is harmless.
                let _ = std::fs::remove_file(&path);
                let _ = file.write_all(b"d");
            }
            drop(file);
        }
    }
}

impl Drop for PathLocks {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// Who holds an exclusive flock on `lock_file`, from `/proc/locks`.
pub fn lock_holder(lock_file: &Path) -> Option<LockHolder> {
    let meta = std::fs::metadata(lock_file).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = find_flock_holder(&locks, meta.dev(), meta.ino())?;
    Some(LockHolder {
        pid,
        command: process_command_line(pid),
    })
}

/// The pid of the process holding (not waiting for) a FLOCK on device `dev`, inode `ino`,
/// in the text of `/proc/locks`.
fn find_flock_holder(proc_locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let major = nix::sys::stat::major(dev);
    let minor = nix::sys::stat::minor(dev);
    proc_locks.lines().find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let kind = fields.next()?;
        if kind != "FLOCK" {
            return None; // POSIX locks, OFD locks, and "->" waiters
        }
        let _advisory = fields.next()?;
        let _mode = fields.next()?;
        let pid: i64 = fields.next()?.parse().ok()?;
        let mut id = fields.next()?.split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino && pid > 0).then_some(pid as u32)
    })
}

/// A process's command line, arguments joined by spaces.
pub fn process_command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_parsing() {
        let text = "\
1: POSIX  ADVISORY  WRITE 77 08:01:42 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 4321 08:01:42 0 EOF
";
        let dev = nix::sys::stat::makedev(0xfd, 1);
        assert_eq!(find_flock_holder(text, dev, 5678), Some(1234));
        assert_eq!(
            find_flock_holder(text, nix::sys::stat::makedev(8, 1), 42),
            Some(4321)
        );
        assert_eq!(find_flock_holder(text, dev, 1), None);
    }

    #[test]
    fn try_lock_conflicts_and_reports_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("aaaa-x");
        let b = dir.path().join("bbbb-y");
        let TryLock::Acquired(mut held) = try_lock_paths([a.as_path()]).unwrap() else {
            panic!("first lock must succeed")
        };
        // A second open file description conflicts even within this process, and an
        // attempt on {a, b} must not keep b.
        match try_lock_paths([b.as_path(), a.as_path()]).unwrap() {
            TryLock::Busy { lock, holder } => {
                assert_eq!(lock, lock_file_of(&a));
                let holder = holder.expect("our own pid is in /proc/locks");
                assert_eq!(holder.pid, std::process::id());
                assert!(holder.command.is_some());
            }
            TryLock::Acquired(_) => panic!("lock on a is held"),
        }
        assert!(matches!(
            try_lock_paths([b.as_path()]).unwrap(),
            TryLock::Acquired(_)
        ));
        held.set_deletion(true);
        held.unlock();
        assert!(!lock_file_of(&a).exists(), "deletion removes the lock file");
        assert!(matches!(
            try_lock_paths([a.as_path()]).unwrap(),
            TryLock::Acquired(_)
        ));
    }

    #[test]
    fn a_waiter_on_a_deleted_lock_file_retries_with_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cccc-z");
        let TryLock::Acquired(mut first) = try_lock_paths([p.as_path()]).unwrap() else {
            panic!()
        };
        // Simulate a waiter that opened the old file before the holder deleted it.
        let stale = open_lock_file(&lock_file_of(&p)).unwrap();
        first.set_deletion(true);
        first.unlock();
        stale.lock().unwrap();
        assert!(
            is_stale(&stale, &p).unwrap(),
            "the old file was marked stale"
        );
        // The blocking locker must not settle for the stale file.
        let locks = lock_paths([p.as_path()], |_, _| {}).unwrap();
        let held: Vec<_> = locks.lock_files().collect();
        assert_eq!(held, vec![lock_file_of(&p).as_path()]);
        assert_eq!(std::fs::metadata(lock_file_of(&p)).unwrap().len(), 0);
    }
}
