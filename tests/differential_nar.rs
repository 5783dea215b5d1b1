//! drover's NAR commands against live real Nix: `dump` = `nix-store --dump`, `hash-path` =
//! `nix-hash`, `hash-file` = `nix-hash --flat`, `restore` = `nix-store --restore`, on random
//! trees (non-UTF-8 names, empty directories, symlinks, executables, sizes around the 8-byte
//! padding and the 128 KiB buffer, multi-MiB files) and on the goldens' tricky tree.

mod common;
mod nar_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use drover::engine::format::nar::NarNode;
use proptest::prelude::*;

fn run(program: &str, args: &[&str], paths: &[&Path], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .args(paths)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(input) = stdin {
        // A failing restore may stop reading early; its status tells.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    child.wait_with_output().unwrap()
}

fn drover(args: &[&str], paths: &[&Path], stdin: Option<&[u8]>) -> Output {
    run(env!("CARGO_BIN_EXE_drover"), args, paths, stdin)
}

#[track_caller]
fn stdout_of(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `(drover args, nix-hash args)` pairs of the hash commands compared.
const HASH_VARIANTS: &[(&[&str], &[&str])] = &[
    (&["--type", "sha256"], &["--type", "sha256"]),
    (
        &["--type", "sha256", "--base32"],
        &["--type", "sha256", "--base32"],
    ),
    (
        &["--type", "sha1", "--base32"],
        &["--type", "sha1", "--base32"],
    ),
    (&["--type", "sha512"], &["--type", "sha512"]),
    (
        &["--type", "md5", "--base32"],
        &["--type", "md5", "--base32"],
    ),
    (
        &["--type", "sha256", "--truncate"],
        &["--type", "sha256", "--truncate"],
    ),
    (
        &["--type", "sha512", "--truncate", "--base32"],
        &["--type", "sha512", "--truncate", "--base32"],
    ),
];

/// Compares every command on `paths` (the first one for dump and restore).
fn compare_all(paths: &[&Path], variants: &[usize], scratch: &Path) {
    let root = paths[0];
    let nix_nar = stdout_of(
        run("nix-store", &["--dump"], &[root], None),
        "nix-store --dump",
    );
    let our_nar = stdout_of(drover(&["dump"], &[root], None), "drover dump");
    assert!(
        our_nar == nix_nar,
        "dump of {} differs from nix-store --dump",
        root.display()
    );

    for &v in variants {
        let (ours, theirs) = HASH_VARIANTS[v];
        let nix = stdout_of(run("nix-hash", theirs, paths, None), "nix-hash");
        let ours_out = stdout_of(
            drover(&[&["hash-path"], ours].concat(), paths, None),
            "hash-path",
        );
        assert_eq!(
            String::from_utf8(ours_out).unwrap(),
            String::from_utf8(nix).unwrap(),
            "hash-path {ours:?}"
        );
    }

    // Restoring Nix's NAR gives a tree that Nix dumps to the same bytes.
    let restored = scratch.join("restored");
    stdout_of(
        drover(&["restore"], &[&restored], Some(&nix_nar)),
        "drover restore",
    );
    let again = stdout_of(
        run("nix-store", &["--dump"], &[&restored], None),
        "nix-store --dump",
    );
    assert!(
        again == nix_nar,
        "restore of {} does not dump to the same NAR",
        root.display()
    );
    std::fs::remove_dir_all(&restored)
        .or_else(|_| std::fs::remove_file(&restored))
        .unwrap();
}

/// Flat hashes of the regular files among `node`'s leaves (at most a few).
fn compare_flat(node: &NarNode, path: &Path, variant: usize, budget: &mut usize) {
    if *budget == 0 {
        return;
    }
    match node {
        NarNode::Regular { .. } => {
            *budget -= 1;
            let (ours, theirs) = HASH_VARIANTS[variant];
            let nix = stdout_of(
                run("nix-hash", &[&["--flat"], theirs].concat(), &[path], None),
                "nix-hash --flat",
            );
            let ours_out = stdout_of(
                drover(&[&["hash-file"], ours].concat(), &[path], None),
                "hash-file",
            );
            assert_eq!(ours_out, nix, "hash-file {ours:?} {}", path.display());
        }
        NarNode::Symlink { .. } => {}
        NarNode::Directory(entries) => {
            for (name, child) in entries {
                let child_path = path.join(std::ffi::OsStr::from_bytes(name));
                compare_flat(child, &child_path, variant, budget);
            }
        }
    }
}

use std::os::unix::ffi::OsStrExt;

// ------------------------------------------------------------------------------ random trees

fn name() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => proptest::sample::select(b"abcxyzABC019.-_ ".to_vec()),
        1 => proptest::sample::select(b"\n\t\\'\"~=+".to_vec()),
        2 => 0x80u8..=0xff,
    ];
    proptest::collection::vec(byte, 1..10).prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

/// Sizes around the 8-byte padding, the 128 KiB read buffer, and a few MiB.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..40,
        2 => proptest::sample::select(vec![63, 64, 65, 4095, 4096, 4097]),
        1 => 131_064usize..131_080,
        1 => 0usize..20_000,
        1 => proptest::sample::select(vec![(2 << 20) + 3, 3 << 20]),
    ]
}

fn contents(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn leaf() -> impl Strategy<Value = NarNode> {
    prop_oneof![
        4 => (any::<bool>(), size(), any::<u64>()).prop_map(|(executable, size, seed)| {
            NarNode::Regular { executable, contents: contents(size, seed) }
        }),
        1 => proptest::collection::vec(1u8..=255, 1..40).prop_map(|target| NarNode::Symlink { target }),
        1 => Just(NarNode::Directory(Default::default())),
    ]
}

fn tree() -> impl Strategy<Value = NarNode> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6).prop_map(NarNode::Directory)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_agree_with_nix(
        node in tree(),
        mut modes in any::<u64>(),
        variant in 0..HASH_VARIANTS.len(),
        flat in 0..HASH_VARIANTS.len(),
    ) {
        if !common::require_nix() {
            return Ok(());
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        nar_support::materialize(&node, &root, &mut modes);
        compare_all(&[&root], &[0, variant], dir.path());
        // The model writes the same NAR as both.
        let ours = stdout_of(drover(&["dump"], &[&root], None), "drover dump");
        prop_assert!(ours == node.to_nar());
        compare_flat(&node, &root, flat, &mut 2);
    }
}

// ------------------------------------------------------------------------------ fixed trees

#[test]
fn tricky_tree_and_several_paths_agree_with_nix() {
    if !common::require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tricky = dir.path().join("tree-tricky");
    nar_support::make_tree_tricky(&tricky);
    let link = dir.path().join("top-link");
    std::os::unix::fs::symlink("tree-tricky/a", &link).unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, contents(5 << 20, 7)).unwrap();
    let variants: Vec<usize> = (0..HASH_VARIANTS.len()).collect();
    compare_all(&[&tricky, &link, &big], &variants, dir.path());
    compare_all(&[&big], &[0], dir.path());
    compare_all(&[&link], &[0], dir.path());
}

#[test]
fn nar_restored_by_nix_dumps_to_our_bytes() {
    if !common::require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NarNode::directory([
        (
            &b"\xff\xfebin"[..],
            NarNode::executable(contents(131_073, 3)),
        ),
        (b"empty", NarNode::directory::<Vec<u8>>([])),
        (b"link", NarNode::symlink("../../x")),
    ]);
    let nar = node.to_nar();
    let dest = dir.path().join("by-nix");
    let out = run("nix-store", &["--restore"], &[&dest], Some(&nar));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout_of(drover(&["dump"], &[&dest], None), "drover dump") == nar);
}

/// Archives both Nix and drover refuse to restore, and one only drover refuses: Nix 2.8's
/// order check compares each name with a `prevName` that is reset for every entry, so it
/// never fires and unsorted entries get restored.
#[test]
fn hostile_archives_are_refused_by_both() {
    if !common::require_nix() {
        return;
    }
    fn strs(tokens: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in tokens {
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            out.extend_from_slice(t);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out
    }
    let entry = |name: &'static [u8]| -> Vec<&'static [u8]> {
        vec![
            b"entry",
            b"(",
            b"name",
            name,
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"",
            b")",
            b")",
        ]
    };
    let dir_with = |names: &[&'static [u8]]| -> Vec<u8> {
        let mut t: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
        for n in names {
            t.extend(entry(n));
        }
        t.push(b")");
        strs(&t)
    };
    let file_x = strs(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"x",
        b")",
    ]);
    let mut padded = file_x.clone();
    padded[99] = 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad magic", strs(&[b"nix-archive-0", b"("])),
        ("duplicate", dir_with(&[b"a", b"a"])),
        ("dot-dot", dir_with(&[b".."])),
        ("slash", dir_with(&[b"a/b"])),
        ("empty name", dir_with(&[b""])),
        ("non-zero padding", padded),
        ("truncated", file_x[..file_x.len() - 9].to_vec()),
        (
            "unknown type",
            strs(&[b"nix-archive-1", b"(", b"type", b"fifo", b")"]),
        ),
    ];
    for (what, nar) in cases {
        let scratch = tempfile::tempdir().unwrap();
        let theirs = run(
            "nix-store",
            &["--restore"],
            &[&scratch.path().join("n")],
            Some(&nar),
        );
        let ours = drover(&["restore"], &[&scratch.path().join("d")], Some(&nar));
        assert!(!theirs.status.success(), "{what}: Nix accepted it");
        assert!(!ours.status.success(), "{what}: drover accepted it");
        let err = String::from_utf8_lossy(&ours.stderr);
        assert!(err.contains("bad archive at byte"), "{what}: {err}");
    }
    let scratch = tempfile::tempdir().unwrap();
    let ours = drover(
        &["restore"],
        &[&scratch.path().join("d")],
        Some(&dir_with(&[b"b", b"a"])),
    );
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(err.contains("directory entries not sorted"), "{err}");
}

#[test]
fn unsupported_file_types_fail_in_both() {
    if !common::require_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    let socket = tree.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let theirs = run("nix-hash", &["--type", "sha256"], &[&tree], None);
    let ours = drover(&["hash-path"], &[&tree], None);
    assert!(!theirs.status.success() && !ours.status.success());
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(
        err.contains("has an unsupported type") && err.contains("sock"),
        "{err}"
    );
}
