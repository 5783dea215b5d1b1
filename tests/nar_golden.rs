//! NAR bytes, hashes and references against goldens recorded from real Nix 2.8
//! (`tests/fixtures/nar-trees.json`, `tests/fixtures/nar-rich-outputs.json`).

mod nar_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use data_encoding::{BASE64, HEXLOWER};
use drover::engine::format::hash::{compress_hash, sha256};
use drover::engine::format::nar::{self, NarNode, NarReader};
use drover::engine::format::refs::{RefScanner, hash_and_scan};
use drover::engine::format::{Hash, HashAlgo, StoreDir, StorePath};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn objects() -> Vec<Value> {
    fixture("nar-trees.json")["objects"]
        .as_array()
        .unwrap()
        .clone()
}

/// Checks every `nix-hash` value the golden recorded (`algo:base16`, `algo:base32` and the
/// truncated sha256) against `hash_of(algo)`.
fn check_nix_hashes(name: &str, golden: &Value, hash_of: impl Fn(HashAlgo) -> Hash) {
    for algo in HashAlgo::ALL {
        let h = hash_of(algo);
        assert_eq!(
            golden[format!("{algo}:base16")],
            h.to_base16(),
            "{name} {algo}"
        );
        assert_eq!(
            golden[format!("{algo}:base32")],
            h.to_base32(),
            "{name} {algo}"
        );
    }
    let folded: [u8; 20] = compress_hash(hash_of(HashAlgo::Sha256).digest());
    assert_eq!(
        golden["sha256:truncated160:base16"],
        HEXLOWER.encode(&folded),
        "{name}"
    );
}

#[test]
fn nar_bytes_of_the_goldens_round_trip() {
    let mut seen = 0;
    for o in objects() {
        let Some(b64) = o["nar_base64"].as_str() else {
            continue;
        };
        let name = o["name"].as_str().unwrap();
        let nar = BASE64.decode(b64.as_bytes()).unwrap();
        assert_eq!(nar.len() as u64, o["nar_size"].as_u64().unwrap(), "{name}");
        assert_eq!(sha256(&nar).to_base16(), o["nar_sha256_hex"], "{name}");
        // Parse and re-serialise: the same bytes.
        let node = NarNode::from_nar(&nar[..]).unwrap();
        assert_eq!(node.to_nar(), nar, "{name}");
        check_nix_hashes(name, &o["nix_hash_recursive"], |algo| node.nar_hash(algo).0);
        // Restore, then dump and hash the files: the same bytes and hashes again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        assert_eq!(nar::restore(&nar[..], &path).unwrap(), nar.len() as u64);
        let mut dumped = Vec::new();
        nar::dump_path(&path, &mut dumped).unwrap();
        assert_eq!(dumped, nar, "{name}");
        check_nix_hashes(name, &o["nix_hash_recursive"], |algo| {
            nar::hash_path(&path, algo).unwrap().0
        });
        if let Some(flat) = o["nix_hash_flat"].as_object() {
            let (h, _) = nar::hash_flat(&path, HashAlgo::Sha256).unwrap();
            assert_eq!(flat["sha256:base16"], h.to_base16());
            assert_eq!(flat["sha256:base32"], h.to_base32());
            let (h, _) = nar::hash_flat(&path, HashAlgo::Sha1).unwrap();
            assert_eq!(flat["sha1:base32"], h.to_base32());
        }
        seen += 1;
    }
    assert_eq!(seen, 6);
}

#[test]
fn tree_tricky_has_the_golden_nar_hash() {
    let o = &objects()[0];
    assert_eq!(o["name"], "tree-tricky");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree-tricky");
    nar_support::make_tree_tricky(&tree);
    // The rebuilt tree has the golden's listing.
    let listing: BTreeSet<String> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let golden: BTreeSet<String> = o["listing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listing, golden);
    let (h, size) = nar::hash_path(&tree, HashAlgo::Sha256).unwrap();
    assert_eq!(size, o["nar_size"].as_u64().unwrap());
    assert_eq!(h.to_base16(), o["nar_sha256_hex"]);
    check_nix_hashes("tree-tricky", &o["nix_hash_recursive"], |algo| {
        nar::hash_path(&tree, algo).unwrap().0
    });
    // The single-threaded dump, the validating reader and the in-memory model agree.
    let mut bytes = Vec::new();
    assert_eq!(nar::dump_path(&tree, &mut bytes).unwrap(), size);
    assert_eq!(
        nar::validate(&bytes[..], HashAlgo::Sha256).unwrap(),
        (h, size)
    );
    assert_eq!(NarNode::from_nar(&bytes[..]).unwrap().to_nar(), bytes);
    // The path Nix added it as is a function of this hash.
    let store = StoreDir::new("/nix/store").unwrap();
    let added = store.make_fixed_output_path(
        drover::engine::format::IngestionMethod::Recursive,
        &h,
        "tree-tricky",
        &Default::default(),
        false,
    );
    assert_eq!(store.display(&added.unwrap()), o["store"]["add"]);
}

#[test]
fn references_of_built_outputs_match_nix() {
    let rich = fixture("nar-rich-outputs.json");
    let store = StoreDir::new("/nix/store").unwrap();
    let candidates: Vec<StorePath> = rich["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| store.parse(p.as_str().unwrap()).unwrap())
        .collect();
    let outputs = rich["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 17);
    let mut with_refs = 0;
    for o in outputs {
        let path = o["path"].as_str().unwrap();
        let nar = BASE64
            .decode(o["nar_base64"].as_str().unwrap().as_bytes())
            .unwrap();
        let expected: BTreeSet<StorePath> = o["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| store.parse(p.as_str().unwrap()).unwrap())
            .collect();
        with_refs += usize::from(!expected.is_empty());
        // Scan the NAR stream while validating it: one pass, as substitution would.
        let mut scanner = RefScanner::new(candidates.iter().map(|c| *c.hash_part_bytes()));
        let size = NarReader::new(&nar[..])
            .with_tee(&mut scanner)
            .validate()
            .unwrap();
        assert_eq!(size, o["nar_size"].as_u64().unwrap());
        let found = scanner.into_found();
        let refs: BTreeSet<StorePath> = candidates
            .iter()
            .filter(|c| found.contains(c.hash_part_bytes()))
            .cloned()
            .collect();
        assert_eq!(refs, expected, "{path}");
        // And from disk, hashing in the same pass.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        nar::restore(&nar[..], &out).unwrap();
        let result = hash_and_scan(&out, &candidates).unwrap();
        assert_eq!(result.references, expected, "{path}");
        assert_eq!(result.nar_size, size);
        assert_eq!(result.nar_hash.to_nix32_prefixed(), o["nar_hash"], "{path}");
    }
    assert!(with_refs >= 5, "only {with_refs} outputs have references");
}

#[test]
fn cli_prints_what_nix_hash_printed() {
    let o = &objects()[1];
    assert_eq!(o["name"], "file-plain.txt");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file-plain.txt");
    let nar = BASE64
        .decode(o["nar_base64"].as_str().unwrap().as_bytes())
        .unwrap();
    nar::restore(&nar[..], &path).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .arg(&path)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let rec = &o["nix_hash_recursive"];
    for (args, key) in [
        (&["hash-path", "--type", "sha256"][..], "sha256:base16"),
        (&["hash-path", "--type", "sha1", "--base32"], "sha1:base32"),
        (&["hash-path", "--type", "md5", "--base16"], "md5:base16"),
        (
            &["hash-path", "--type", "sha512", "--base32"],
            "sha512:base32",
        ),
        (&["hash-path", "--truncate"], "sha256:truncated160:base16"),
    ] {
        let line = rec[key].as_str().unwrap();
        assert_eq!(run(args), format!("{line}\n{line}\n"), "{args:?}");
    }
    let flat = o["nix_hash_flat"]["sha256:base32"].as_str().unwrap();
    assert_eq!(run(&["hash-file", "--base32"]), format!("{flat}\n{flat}\n"));
    // SRI and base-64 print the digest in base-64; a truncated one has 20 bytes.
    let h = Hash::parse_any(
        rec["sha256:base16"].as_str().unwrap(),
        Some(HashAlgo::Sha256),
    );
    let sri = h.unwrap().to_sri();
    assert_eq!(run(&["hash-path", "--sri"]), format!("{sri}\n{sri}\n"));
    let truncated = HEXLOWER
        .decode(
            rec["sha256:truncated160:base16"]
                .as_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    let b64 = BASE64.encode(&truncated);
    assert_eq!(
        run(&["hash-path", "--truncate", "--base64"]),
        format!("{b64}\n{b64}\n")
    );
    // dump of the restored file gives the golden bytes.
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["dump"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, nar);
}

#[test]
fn cli_errors_name_the_path_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("hash-path")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("restore")
        .arg(dir.path().join("r"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut nar = NarNode::file("x").to_nar();
    nar.push(b'!');
    child.stdin.take().unwrap().write_all(&nar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad archive at byte 120"), "{err}");
}
