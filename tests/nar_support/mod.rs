//! Trees for the NAR tests: the "tree-tricky" of the goldens, and writing a [`NarNode`] to
//! disk with plain `std::fs` (independent of drover's own restore).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use drover::engine::format::nar::NarNode;

/// Rebuilds `tree-tricky` exactly as the peer harness's `goldens.py` (`make_trees`) does.
pub fn make_tree_tricky(t: &Path) {
    for dir in ["nested/deeper/deepest", "empty-dir", "nested/also-empty"] {
        fs::create_dir_all(t.join(dir)).unwrap();
    }
    let big: Vec<u8> = (0..=255u8).cycle().take(256 * 400).collect();
    let files: &[(&str, &[u8])] = &[
        ("empty-file", b""),
        ("one", b"x"),
        ("seven", b"1234567"),
        ("eight", b"12345678"),
        ("nine", b"123456789"),
        ("nested/deeper/deepest/leaf.txt", b"deep leaf\n"),
        ("big", &big),
        ("with space", b"space\n"),
        ("\u{fc}n\u{ef}c\u{f6}d\u{e9}-\u{2603}", b"unicode name\n"),
        ("a=b+c", b"eq\n"),
        ("-leading-dash", b"dash\n"),
        (".hidden", b"hidden\n"),
        ("UPPER", b"U\n"),
        ("lower", b"l\n"),
        ("a", b"a\n"),
        ("a.b", b"a.b\n"),
        ("a-b", b"a-b\n"),
        ("a0", b"a0\n"),
        ("aB", b"aB\n"),
        ("ab", b"ab\n"),
        ("A", b"A\n"),
        ("B", b"B\n"),
        ("b", b"b\n"),
        ("~tilde", b"t\n"),
        ("quote'\"", b"q\n"),
        ("back\\slash", b"bs\n"),
        ("tab\there", b"tab\n"),
        ("new\nline", b"nl\n"),
        ("nix-archive-1", b"not a nar\n"),
        (
            "contains-storepath",
            b"/nix/store/00000000000000000000000000000000-fake\n",
        ),
    ];
    for (rel, data) in files {
        fs::write(t.join(rel), data).unwrap();
    }
    for rel in ["exec.sh", "nested/exec-in-dir"] {
        fs::write(t.join(rel), "#!/bin/sh\necho exec\n").unwrap();
        fs::set_permissions(t.join(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(t.join("one"), fs::Permissions::from_mode(0o600)).unwrap();
    let links = [
        ("a", "link-rel"),
        ("../a", "nested/link-up"),
        ("/etc/hostname-does-not-matter", "link-abs-dangling"),
        ("nested/deeper", "link-to-dir"),
        ("does-not-exist", "link-dangling"),
        (
            "/nix/store/11111111111111111111111111111111-fake",
            "link-storepath",
        ),
    ];
    for (target, rel) in links {
        std::os::unix::fs::symlink(target, t.join(rel)).unwrap();
    }
}

/// Creates `node` at `path` with `std::fs`. File modes vary with `seed`: executables have the
/// user's x bit and non-executables may have others' (only the user's counts in a NAR).
pub fn materialize(node: &NarNode, path: &Path, seed: &mut u64) {
    match node {
        NarNode::Regular {
            executable,
            contents,
        } => {
            fs::write(path, contents).unwrap();
            const EXECUTABLE: [u32; 4] = [0o755, 0o700, 0o500, 0o744];
            const PLAIN: [u32; 6] = [0o644, 0o600, 0o655, 0o611, 0o444, 0o677];
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pick = (*seed >> 33) as usize;
            let mode = if *executable {
                EXECUTABLE[pick % EXECUTABLE.len()]
            } else {
                PLAIN[pick % PLAIN.len()]
            };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        NarNode::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path).unwrap();
        }
        NarNode::Directory(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                materialize(child, &path.join(OsStr::from_bytes(name)), seed);
            }
        }
    }
}
