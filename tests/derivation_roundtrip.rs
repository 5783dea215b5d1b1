//! Property tests of the ATerm parser and printer: printing then parsing gives the
//! derivation back, and no input makes the parser panic.

use std::collections::{BTreeMap, BTreeSet};

use drover::engine::format::derivation::{
    BString, Derivation, DerivationOutput, FixedOutputHash, write_show_derivation_json,
};
use drover::engine::format::{Hash, HashAlgo, IngestionMethod, StoreDir, StorePath};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

fn store() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9+._?=-][a-zA-Z0-9+._?=-]{0,15}"
}

fn store_path() -> impl Strategy<Value = StorePath> {
    (any::<[u8; 20]>(), name()).prop_map(|(d, n)| StorePath::from_digest(d, &n).unwrap())
}

fn drv_path() -> impl Strategy<Value = StorePath> {
    (any::<[u8; 20]>(), name())
        .prop_map(|(d, n)| StorePath::from_digest(d, &format!("{n}.drv")).unwrap())
}

fn algo() -> impl Strategy<Value = HashAlgo> {
    prop::sample::select(HashAlgo::ALL.to_vec())
}

fn method() -> impl Strategy<Value = IngestionMethod> {
    prop_oneof![
        Just(IngestionMethod::Flat),
        Just(IngestionMethod::Recursive)
    ]
}

fn output() -> impl Strategy<Value = DerivationOutput> {
    prop_oneof![
        store_path().prop_map(DerivationOutput::InputAddressed),
        (store_path(), method(), algo(), vec(any::<u8>(), 64)).prop_map(
            |(path, method, algo, d)| DerivationOutput::Fixed {
                path,
                hash: FixedOutputHash {
                    method,
                    hash: Hash::from_digest(algo, &d[..algo.size()]).unwrap(),
                },
            }
        ),
        (method(), algo()).prop_map(|(method, algo)| DerivationOutput::Floating { method, algo }),
        Just(DerivationOutput::Deferred),
        (method(), algo()).prop_map(|(method, algo)| DerivationOutput::Impure { method, algo }),
    ]
}

/// Any bytes, with the characters the escaping is about made likely.
fn bytes() -> impl Strategy<Value = BString> {
    vec(
        prop_oneof![
            3 => any::<u8>(),
            1 => prop::sample::select(b"\"\\\n\r\t$}{(),[]".to_vec()),
        ],
        0..24,
    )
    .prop_map(BString::from)
}

/// The system is written verbatim by Nix, so it cannot hold `"` or `\` and still parse.
fn system() -> impl Strategy<Value = BString> {
    vec(
        any::<u8>().prop_filter("raw field", |c| *c != b'"' && *c != b'\\'),
        0..16,
    )
    .prop_map(BString::from)
}

fn derivation() -> impl Strategy<Value = Derivation> {
    (
        btree_map(name(), output(), 0..4),
        btree_map(drv_path(), btree_set(name(), 0..3), 0..4),
        btree_set(store_path(), 0..4),
        system(),
        bytes(),
        vec(bytes(), 0..4),
        btree_map(bytes(), bytes(), 0..6),
    )
        .prop_map(
            |(outputs, input_drvs, input_srcs, system, builder, args, env)| Derivation {
                outputs,
                input_drvs,
                input_srcs,
                system,
                builder,
                args,
                env,
            },
        )
}

/// Small edits of a valid ATerm: flipped, deleted, inserted bytes and truncation.
fn mutated(text: Vec<u8>, edits: Vec<(usize, u8, u8)>, cut: Option<usize>) -> Vec<u8> {
    let mut t = text;
    for (at, kind, byte) in edits {
        if t.is_empty() {
            break;
        }
        let i = at % t.len();
        match kind % 3 {
            0 => t[i] = byte,
            1 => {
                t.remove(i);
            }
            _ => t.insert(i, byte),
        }
    }
    if let Some(c) = cut {
        t.truncate(c % (t.len() + 1));
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_inverts_print(drv in derivation()) {
        let text = drv.to_aterm(&store());
        let parsed = Derivation::parse(&text, &store())
            .map_err(|e| TestCaseError::fail(format!("{e} in {}", String::from_utf8_lossy(&text))))?;
        prop_assert_eq!(&parsed, &drv);
        prop_assert_eq!(parsed.to_aterm(&store()), text);
    }

    #[test]
    fn json_is_written_for_any_derivation(drv in derivation(), p in drv_path()) {
        let mut out = Vec::new();
        write_show_derivation_json(&mut out, &store(), [(&p, &drv)]);
        // Valid JSON whenever the strings are UTF-8.
        if String::from_utf8(out.clone()).is_ok() {
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let d = &v[store().display(&p)];
            prop_assert_eq!(d["args"].as_array().unwrap().len(), drv.args.len());
            prop_assert_eq!(d["outputs"].as_object().unwrap().len(), drv.outputs.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        let _ = Derivation::parse(&data, &store());
        let mut prefixed = b"Derive([(\"out\",\"".to_vec();
        prefixed.extend_from_slice(&data);
        let _ = Derivation::parse(&prefixed, &store());
    }

    #[test]
    fn edited_aterms_parse_or_fail_cleanly(
        drv in derivation(),
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let text = mutated(drv.to_aterm(&store()), edits, cut);
        if let Ok(parsed) = Derivation::parse(&text, &store()) {
            // Whatever parses prints to a canonical text that parses to the same derivation.
            let again = Derivation::parse(&parsed.to_aterm(&store()), &store()).unwrap();
            prop_assert_eq!(again, parsed);
        }
    }
}

#[test]
fn structure_counts_survive() {
    // A sanity check of the generators above: a derivation with everything in it.
    let drv = Derivation {
        outputs: BTreeMap::from([("out".to_owned(), DerivationOutput::Deferred)]),
        input_drvs: BTreeMap::from([(
            StorePath::from_base_name("18f3vhlwdsfs8038ih72x9qggydiykn1-n4.drv").unwrap(),
            BTreeSet::from(["out".to_owned()]),
        )]),
        args: vec!["a".into(), "b\"".into()],
        ..Derivation::default()
    };
    let text = drv.to_aterm(&store());
    assert_eq!(
        text,
        br#"Derive([("out","","","")],[("/nix/store/18f3vhlwdsfs8038ih72x9qggydiykn1-n4.drv",["out"])],[],"","",["a","b\""],[])"#
    );
    assert_eq!(Derivation::parse(&text, &store()).unwrap(), drv);
}
