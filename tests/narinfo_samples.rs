//! narinfos written by real Nix 2.8 (`nix copy --to file://…`, every compression, one signed
//! with a key from `nix-store --generate-binary-cache-key`): they parse, print back byte for
//! byte, and the signature Nix made verifies against our fingerprint.

use std::fs;
use std::path::PathBuf;

use drover::engine::format::narinfo::{NarInfo, NarInfoError, NixCacheInfo};
use drover::engine::format::signature::{KeyError, KeyKind, PublicKey, PublicKeys, SecretKey};
use drover::engine::format::{ContentAddress, StoreDir, StorePath};

const SAMPLES: [&str; 8] = [
    "sample-br.narinfo",
    "sample-bzip2.narinfo",
    "sample-fod-recursive.narinfo",
    "sample-gzip.narinfo",
    "sample-none.narinfo",
    "sample-signed.narinfo",
    "sample-xz.narinfo",
    "sample-zstd.narinfo",
];

/// The fingerprint of `pslgks8s23gbyna07mkbyj60nnxa7yi0-n2`, the path of every sample but the
/// fixed-output one; Nix's signature in `sample-signed.narinfo` is over exactly these bytes.
const N2_FINGERPRINT: &str = "1;/nix/store/pslgks8s23gbyna07mkbyj60nnxa7yi0-n2;\
    sha256:1nlbrzvcc9713drd4a0jw93bd8rdh27ajca75vrm2m4k4qj23rzp;21312;\
    /nix/store/cp3vdi8x4b0gc32h65djb1f5540va9wm-n1,\
    /nix/store/mbcm8lga6lzs4iaanyc0lqnzanmkzii7-n0,\
    /nix/store/nn3pwmrrxp81n5b0bavf62fnhnbnsx8k-n0-lib,\
    /nix/store/phd2rvff75jl9ya37a11ndzapyky35cl-n1-lib";

fn fixture(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/narinfo", name]
        .iter()
        .collect();
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn sd() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn trusted() -> PublicKeys {
    PublicKeys::parse_list(&fixture("public-key.txt")).unwrap()
}

fn signed() -> NarInfo {
    NarInfo::parse(&sd(), &fixture("sample-signed.narinfo")).unwrap()
}

#[test]
fn every_sample_prints_back_byte_for_byte() {
    for name in SAMPLES {
        let text = fixture(name);
        let info = NarInfo::parse(&sd(), &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.to_text(&sd()), text, "{name}");
    }
}

#[test]
fn samples_agree_on_what_compression_does_not_change() {
    let infos: Vec<NarInfo> = SAMPLES
        .iter()
        .filter(|n| !n.contains("fod"))
        .map(|n| NarInfo::parse(&sd(), &fixture(n)).unwrap())
        .collect();
    for info in &infos {
        assert_eq!(info.store_path, infos[0].store_path);
        assert_eq!(info.nar_hash, infos[0].nar_hash);
        assert_eq!(info.references, infos[0].references);
        assert_eq!(info.references.len(), 4);
        assert_eq!(info.fingerprint(&sd()).unwrap(), N2_FINGERPRINT);
    }
    let compressions: Vec<&str> = infos.iter().map(|i| i.compression.as_str()).collect();
    assert_eq!(
        compressions,
        ["br", "bzip2", "gzip", "none", "xz", "xz", "zstd"]
    );
    let none = &infos[3];
    assert_eq!(none.file_hash, Some(none.nar_hash));
    assert_eq!(none.file_size, Some(none.nar_size));
}

#[test]
fn fixed_output_sample() {
    let info = NarInfo::parse(&sd(), &fixture("sample-fod-recursive.narinfo")).unwrap();
    assert!(info.references.is_empty());
    assert_eq!(
        info.ca,
        Some(ContentAddress::parse(&format!("fixed:r:{}", info.nar_hash)).unwrap())
    );
    assert!(info.is_content_addressed(&sd()));
    assert_eq!(
        info.check_signatures(&sd(), &PublicKeys::new()),
        Ok(usize::MAX)
    );
}

#[test]
fn nix_signature_verifies() {
    let info = signed();
    assert_eq!(info.sigs.len(), 1);
    let sig = info.sigs.first().unwrap();
    assert!(sig.starts_with("peer-test-cache-1:"));
    assert_eq!(info.check_signature(&sd(), &trusted(), sig), Ok(true));
    assert_eq!(info.count_valid_signatures(&sd(), &trusted()), Ok(1));
    assert_eq!(info.check_signatures(&sd(), &trusted()), Ok(1));
    // Over the golden fingerprint itself.
    assert_eq!(trusted().verify(N2_FINGERPRINT.as_bytes(), sig), Ok(true));
}

#[test]
fn nix_signature_covers_the_unsigned_samples_too() {
    // The signature is over the path, not the file: it is valid on the xz copy.
    let mut info = NarInfo::parse(&sd(), &fixture("sample-zstd.narinfo")).unwrap();
    assert_eq!(info.count_valid_signatures(&sd(), &trusted()), Ok(0));
    info.sigs = signed().sigs;
    assert_eq!(info.count_valid_signatures(&sd(), &trusted()), Ok(1));
}

/// A change to a signed narinfo.
type Tamper = fn(&mut NarInfo);

#[test]
fn tampered_fields_fail_verification() {
    let keys = trusted();
    let tamper: [(&str, Tamper); 5] = [
        ("nar size", |i| i.nar_size += 1),
        ("nar hash", |i| i.nar_hash = i.file_hash.unwrap()),
        ("reference dropped", |i| {
            i.references.pop_first();
        }),
        ("store path", |i| {
            i.store_path = StorePath::from_base_name("pslgks8s23gbyna07mkbyj60nnxa7yi0-n3").unwrap()
        }),
        ("store dir", |_| {}),
    ];
    for (what, change) in tamper {
        let mut info = signed();
        change(&mut info);
        let dir = if what == "store dir" {
            StoreDir::new("/gnu/store").unwrap()
        } else {
            sd()
        };
        assert_eq!(info.count_valid_signatures(&dir, &keys), Ok(0), "{what}");
    }
    // Fields outside the fingerprint do not matter.
    let mut info = signed();
    info.url = "nar/elsewhere.nar".into();
    info.compression = "none".into();
    info.deriver = None;
    info.file_size = Some(1);
    assert_eq!(info.count_valid_signatures(&sd(), &keys), Ok(1));
}

#[test]
fn tampered_signature_bytes_fail() {
    let info = signed();
    let sig = info.sigs.first().unwrap();
    let (name, data) = sig.split_once(':').unwrap();
    let flipped: String = data
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    let bad = format!("{name}:{flipped}");
    assert_eq!(info.check_signature(&sd(), &trusted(), &bad), Ok(false));
}

#[test]
fn wrong_key_name_is_not_trusted() {
    let info = signed();
    let sig = info.sigs.first().unwrap();
    let renamed = sig.replacen("peer-test-cache-1:", "peer-test-cache-2:", 1);
    assert_eq!(info.check_signature(&sd(), &trusted(), &renamed), Ok(false));
    // The right bytes under another trusted name do not verify either.
    let pk = fixture("public-key.txt").replacen("peer-test-cache-1:", "other:", 1);
    let other = PublicKeys::parse_list(&pk).unwrap();
    assert_eq!(info.check_signature(&sd(), &other, sig), Ok(false));
    assert_eq!(
        info.count_valid_signatures(&sd(), &PublicKeys::new()),
        Ok(0)
    );
}

#[test]
fn bad_base64_under_a_trusted_name_is_an_error() {
    let mut info = signed();
    info.sigs.insert("peer-test-cache-1:#not-base64#".into());
    let err = info.count_valid_signatures(&sd(), &trusted()).unwrap_err();
    assert!(
        err.to_string()
            .contains("signature 'peer-test-cache-1' is not valid base-64"),
        "{err}"
    );
    // Under an untrusted name it is merely not valid.
    let mut info = signed();
    info.sigs.insert("someone-else:#not-base64#".into());
    assert_eq!(info.count_valid_signatures(&sd(), &trusted()), Ok(1));
}

#[test]
fn our_signature_with_our_key_verifies_and_is_printed_where_nix_puts_it() {
    let key = SecretKey::from_seed("drover-test-1", &[42; 32]).unwrap();
    let mut info = NarInfo::parse(&sd(), &fixture("sample-xz.narinfo")).unwrap();
    info.sign(&sd(), &key).unwrap();
    let keys: PublicKeys = [key.to_public_key()].into_iter().collect();
    assert_eq!(info.count_valid_signatures(&sd(), &keys), Ok(1));
    let text = info.to_text(&sd());
    let sig_line = format!("Sig: {}\n", info.sigs.first().unwrap());
    assert!(text.ends_with(&sig_line), "{text}");
    assert_eq!(text, format!("{}{sig_line}", fixture("sample-xz.narinfo")));
    // Both signatures now on one info: each counts under its own key only.
    info.sigs.extend(signed().sigs);
    assert_eq!(info.count_valid_signatures(&sd(), &keys), Ok(1));
    let mut both = keys.clone();
    both.insert(PublicKey::parse(&fixture("public-key.txt")).unwrap());
    assert_eq!(info.count_valid_signatures(&sd(), &both), Ok(2));
}

#[test]
fn public_key_fixture_round_trips() {
    let text = fixture("public-key.txt");
    assert_eq!(PublicKey::parse(&text).unwrap().to_string(), text);
    assert_eq!(
        SecretKey::parse(&text).unwrap_err(),
        KeyError::WrongSize {
            kind: KeyKind::SecretKey,
            name: "peer-test-cache-1".into(),
            expected: 64,
            got: 32
        }
    );
}

#[test]
fn nix_cache_info_fixture() {
    let text = fixture("nix-cache-info");
    let info = NixCacheInfo::parse(&text).unwrap();
    assert_eq!(info, NixCacheInfo::new(&sd()));
    assert_eq!(info.to_text(), text);
}

#[test]
fn truncated_sample_is_an_error_naming_the_line() {
    let text = fixture("sample-signed.narinfo");
    let cut = &text[..text.len() - 1];
    assert_eq!(
        NarInfo::parse(&sd(), cut),
        Err(NarInfoError::MissingNewline { line: 10 })
    );
    let first_lines: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        NarInfo::parse(&sd(), &first_lines),
        Err(NarInfoError::Missing("NarHash"))
    );
}
