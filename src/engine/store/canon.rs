//! Canonical metadata for store contents: what Nix does to every path before it becomes valid.
//!
//! Every object becomes read-only (0444, or 0555 when the owner could execute it; setuid,
//! setgid and sticky bits are dropped), its mtime becomes 1 (one second after the epoch),
//! extended attributes and ACLs are removed, and ownership moves to the store's owner. Only
//! regular files, directories and symlinks may exist in a store path. With a build user
//! (`from_uid`), files owned by anyone else are refused unless they are hard links we already
//! canonicalised in this pass, so a builder cannot smuggle `/etc/shadow` in with `ln`.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::time::TimeVal;
use thiserror::Error;

/// The mtime of every store object.
pub const STORE_MTIME: i64 = 1;

/// Extended attributes that are left alone (they cannot be removed on some file systems).
const IGNORED_XATTRS: [&str; 3] = ["security.selinux", "system.nfs4_acl", "security.csm"];

#[derive(Debug, Error)]
pub enum CanonError {
    #[error("file '{}' has an unsupported type", .0.display())]
    UnsupportedType(std::path::PathBuf),
    #[error("invalid ownership on file '{}'", .0.display())]
    InvalidOwnership(std::path::PathBuf),
    #[error("wrong ownership of top-level store path '{}'", .0.display())]
    TopLevelOwnership(std::path::PathBuf),
    #[error("{action} '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CanonError + 'a {
    move |source| CanonError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// (device, inode) pairs already canonicalised, shared between the outputs of one build so
/// hard links between them are allowed.
pub type InodesSeen = HashSet<(u64, u64)>;

/// Canonicalises `path` and everything below it.
pub fn canonicalise_path_metadata(
    path: &Path,
    from_uid: Option<u32>,
    inodes_seen: &mut InodesSeen,
) -> Result<(), CanonError> {
    canonicalise(path, from_uid, inodes_seen)?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err("getting attributes of", path))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(CanonError::TopLevelOwnership(path.to_owned()));
    }
    Ok(())
}

fn canonicalise(
    path: &Path,
    from_uid: Option<u32>,
    inodes_seen: &mut InodesSeen,
) -> Result<(), CanonError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err("getting attributes of", path))?;
    let ft = meta.file_type();
    if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
        return Err(CanonError::UnsupportedType(path.to_owned()));
    }
    remove_xattrs(path)?;

    if let Some(uid) = from_uid
        && meta.uid() != uid
    {
        // Ours already (a hard link seen earlier in this pass), or someone else's file.
        if ft.is_dir() || !inodes_seen.contains(&(meta.dev(), meta.ino())) {
            return Err(CanonError::InvalidOwnership(path.to_owned()));
        }
        return Ok(());
    }
    inodes_seen.insert((meta.dev(), meta.ino()));

    if !ft.is_symlink() {
        let mode = meta.mode() & 0o7777;
        if mode != 0o444 && mode != 0o555 {
            let new = 0o444 | if mode & 0o100 != 0 { 0o111 } else { 0 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(new))
                .map_err(io_err("changing mode of", path))?;
        }
    }
    if meta.mtime() != STORE_MTIME {
        let atime = TimeVal::new(meta.atime(), 0);
        let mtime = TimeVal::new(STORE_MTIME, 0);
        nix::sys::stat::lutimes(path, &atime, &mtime)
            .map_err(|e| io_err("changing modification time of", path)(e.into()))?;
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        let egid = nix::unistd::getegid().as_raw();
        std::os::unix::fs::lchown(path, Some(euid), Some(egid))
            .map_err(io_err("changing owner of", path))?;
    }
    if ft.is_dir() {
        let entries = std::fs::read_dir(path).map_err(io_err("reading directory", path))?;
        for entry in entries {
            let entry = entry.map_err(io_err("reading directory", path))?;
            canonicalise(&entry.path(), from_uid, inodes_seen)?;
        }
    }
    Ok(())
}

fn remove_xattrs(path: &Path) -> Result<(), CanonError> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if is_unsupported(&e) => return Ok(()),
        Err(e) => return Err(io_err("querying extended attributes of", path)(e)),
    };
    for name in names {
        if IGNORED_XATTRS.iter().any(|i| name == *i) {
            continue;
        }
        xattr::remove(path, &name).map_err(io_err("removing extended attribute from", path))?;
    }
    Ok(())
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// Makes a store object writable by its owner again before it is deleted or moved
/// (directories of a valid path are 0555).
pub fn make_writable(path: &Path) -> Result<(), CanonError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err("getting attributes of", path))?;
    if meta.file_type().is_dir() {
        let mode = meta.mode() & 0o7777;
        if mode & 0o200 == 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))
                .map_err(io_err("changing mode of", path))?;
        }
        for entry in std::fs::read_dir(path).map_err(io_err("reading directory", path))? {
            let entry = entry.map_err(io_err("reading directory", path))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Deletes a file system object (recursively), first making read-only directories writable.
/// A missing path is not an error.
pub fn delete_path(path: &Path) -> Result<(), CanonError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("getting attributes of", path)(e)),
    };
    if meta.file_type().is_dir() {
        make_writable(path)?;
        std::fs::remove_dir_all(path).map_err(io_err("deleting", path))
    } else {
        std::fs::remove_file(path).map_err(io_err("deleting", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn makes_everything_read_only_with_mtime_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("data"), b"x").unwrap();
        std::fs::write(root.join("bin/run"), b"#!/bin/sh").unwrap();
        std::fs::set_permissions(
            root.join("bin/run"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        symlink("data", root.join("link")).unwrap();
        canonicalise_path_metadata(&root, None, &mut InodesSeen::new()).unwrap();
        let mode = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode(""), 0o555);
        assert_eq!(mode("bin"), 0o555);
        assert_eq!(mode("bin/run"), 0o555, "setuid dropped, executable kept");
        assert_eq!(mode("data"), 0o444);
        for p in ["", "bin", "bin/run", "data", "link"] {
            let m = std::fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!(m.mtime(), 1, "{p}");
        }
        delete_path(&root).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn refuses_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(matches!(
            canonicalise_path_metadata(&fifo, None, &mut InodesSeen::new()),
            Err(CanonError::UnsupportedType(_))
        ));
    }

    #[test]
    fn foreign_files_are_refused_with_a_build_user() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert!(matches!(
            canonicalise_path_metadata(&f, Some(me.wrapping_add(1)), &mut InodesSeen::new()),
            Err(CanonError::InvalidOwnership(_))
        ));
        canonicalise_path_metadata(&f, Some(me), &mut InodesSeen::new()).unwrap();
    }
}
