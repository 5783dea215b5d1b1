//! Properties: any narinfo we print parses back to the same value, and no input (random,
//! or a real sample with random edits) makes the readers panic. `exercise` is the body of the
//! `narinfo` fuzz target, run here on proptest's inputs.

use std::fs;

use proptest::prelude::*;

use drover::engine::format::narinfo::{NarInfo, NixCacheInfo};
use drover::engine::format::signature::{PublicKey, PublicKeys, SecretKey, Signature};
use drover::engine::format::{
    ContentAddress, Hash, HashAlgo, IngestionMethod, StoreDir, StorePath,
};

const BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn store_path() -> impl Strategy<Value = StorePath> {
    (
        proptest::collection::vec(proptest::sample::select(BASE32), 32),
        "[A-Za-z0-9+._?=-]{1,24}",
    )
        .prop_map(|(hash, name)| {
            let base = format!("{}-{name}", String::from_utf8(hash).unwrap());
            StorePath::from_base_name(&base).unwrap()
        })
}

fn hash_of(algo: HashAlgo) -> impl Strategy<Value = Hash> {
    proptest::collection::vec(any::<u8>(), algo.size())
        .prop_map(move |d| Hash::from_digest(algo, &d).unwrap())
}

fn any_hash() -> impl Strategy<Value = Hash> {
    proptest::sample::select(HashAlgo::ALL.to_vec()).prop_flat_map(hash_of)
}

fn content_address() -> impl Strategy<Value = ContentAddress> {
    prop_oneof![
        hash_of(HashAlgo::Sha256).prop_map(ContentAddress::Text),
        (any::<bool>(), any_hash()).prop_map(|(recursive, hash)| ContentAddress::Fixed {
            method: if recursive {
                IngestionMethod::Recursive
            } else {
                IngestionMethod::Flat
            },
            hash,
        }),
    ]
}

prop_compose! {
    fn nar_info()(
        store_path in store_path(),
        url in "[^\n]{1,40}",
        compression in "[^\n]{1,8}",
        file_hash in proptest::option::of(any_hash()),
        file_size in proptest::option::of(any::<u64>()),
        nar_hash in any_hash(),
        nar_size in 1..=u64::MAX,
        references in proptest::collection::btree_set(store_path(), 0..5),
        deriver in proptest::option::of(store_path()),
        system in proptest::option::of("[^\n]{1,12}"),
        sigs in proptest::collection::btree_set("[^\n]{0,30}", 0..3),
        ca in proptest::option::of(content_address()),
    ) -> NarInfo {
        NarInfo {
            store_path, url, compression, file_hash, file_size, nar_hash, nar_size, references,
            deriver, system, sigs, ca,
        }
    }
}

fn store_dir() -> impl Strategy<Value = StoreDir> {
    prop_oneof![Just("/nix/store".to_owned()), "(/[a-z0-9]{1,6}){1,3}",]
        .prop_map(|d| StoreDir::new(d).unwrap())
}

/// What the fuzz target does with its bytes: read them as every text this module reads, and
/// check that whatever parses prints back to something that parses to the same value.
fn exercise(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sd = StoreDir::new("/nix/store").unwrap();
    if let Ok(info) = NarInfo::parse(&sd, text) {
        let printed = info.to_text(&sd);
        assert_eq!(NarInfo::parse(&sd, &printed).as_ref(), Ok(&info));
        let keys =
            PublicKeys::parse_list("k:lpO0u1MK05zs6aUvZDWW+ZRhZ4vCVT+BfpwrMozw1jQ=").unwrap();
        let _ = info.count_valid_signatures(&sd, &keys);
        let _ = info.is_content_addressed(&sd);
    }
    if let Ok(info) = NixCacheInfo::parse(text) {
        assert_eq!(NixCacheInfo::parse(&info.to_text()).as_ref(), Ok(&info));
    }
    if let Ok(pk) = PublicKey::parse(text) {
        assert_eq!(PublicKey::parse(&pk.to_string()).as_ref(), Ok(&pk));
    }
    if let Ok(sk) = SecretKey::parse(text) {
        let again = SecretKey::parse(&sk.to_file_contents()).unwrap();
        assert_eq!(again.to_public_key(), sk.to_public_key());
    }
    if let Ok(sig) = Signature::parse(text) {
        assert_eq!(Signature::parse(&sig.to_string()).as_ref(), Ok(&sig));
    }
    let _ = PublicKeys::parse_list(text);
}

fn samples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/narinfo");
    let mut texts: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    texts.sort();
    texts
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
    DuplicateLine(usize),
    DropLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop_oneof![
        Just(':'),
        Just(' '),
        Just('\n'),
        Just('='),
        Just('-'),
        Just('0'),
        any::<char>()
    ];
    prop_oneof![
        (any::<usize>(), interesting.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), interesting).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::DropLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i % n);
            }
            Edit::Replace(i, c) if !chars.is_empty() => chars[i % n] = c,
            Edit::DuplicateLine(i) | Edit::DropLine(i) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split_inclusive('\n').collect();
                if lines.is_empty() {
                    continue;
                }
                let k = i % lines.len();
                if matches!(e, Edit::DuplicateLine(_)) {
                    lines.insert(k, lines[k]);
                } else {
                    lines.remove(k);
                }
                chars = lines.concat().chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_is_identity(info in nar_info(), sd in store_dir()) {
        let text = info.to_text(&sd);
        let parsed = NarInfo::parse(&sd, &text).unwrap();
        prop_assert_eq!(&parsed, &info);
        prop_assert_eq!(parsed.to_text(&sd), text);
    }

    #[test]
    fn signing_then_verifying(info in nar_info(), seed in any::<[u8; 32]>(), sd in store_dir()) {
        let key = SecretKey::from_seed("prop-key-1", &seed).unwrap();
        let mut info = info;
        info.sigs.clear();
        info.sign(&sd, &key).unwrap();
        let keys: PublicKeys = [key.to_public_key()].into_iter().collect();
        prop_assert_eq!(info.count_valid_signatures(&sd, &keys), Ok(1));
        let reread = NarInfo::parse(&sd, &info.to_text(&sd)).unwrap();
        prop_assert_eq!(reread.count_valid_signatures(&sd, &keys), Ok(1));
        let mut bigger = reread;
        bigger.nar_size = bigger.nar_size.wrapping_add(1).max(1);
        prop_assert_eq!(bigger.count_valid_signatures(&sd, &keys), Ok(0));
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        exercise(&data);
    }

    #[test]
    fn random_text_never_panics(text in "(StorePath|URL|NarHash|NarSize|References|CA|Sig|k|:| |\n|[a-z0-9/=+-]){0,80}") {
        exercise(text.as_bytes());
    }

    #[test]
    fn edited_samples_never_panic(
        which in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let samples = samples();
        let text = apply(&samples[which.index(samples.len())], &edits);
        exercise(text.as_bytes());
    }
}

#[test]
fn samples_survive_the_fuzz_body_and_parse() {
    let sd = StoreDir::new("/nix/store").unwrap();
    let mut parsed = 0;
    for text in samples() {
        exercise(text.as_bytes());
        parsed += usize::from(NarInfo::parse(&sd, &text).is_ok());
    }
    assert_eq!(parsed, 8);
}
