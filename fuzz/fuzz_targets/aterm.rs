//! Fuzzes the derivation ATerm parser: no input may panic, and whatever parses must print to
//! a canonical text that parses to the same derivation and prints identically; hashing and
//! the show-derivation JSON must not panic either.
//! Run: `cargo +nightly fuzz run aterm` (seed corpus: the `aterm` fields of
//! `tests/fixtures/derivations-*.json`).
#![no_main]

use drover::engine::format::StoreDir;
use drover::engine::format::StorePath;
use drover::engine::format::derivation::{Derivation, DrvHashes, write_show_derivation_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sd = StoreDir::new("/nix/store").expect("a valid store dir");
    let Ok(drv) = Derivation::parse(data, &sd) else {
        return;
    };
    let printed = drv.to_aterm(&sd);
    let again = Derivation::parse(&printed, &sd).expect("printed ATerm parses");
    assert_eq!(again, drv);
    assert_eq!(again.to_aterm(&sd), printed);

    let path = StorePath::from_base_name("18f3vhlwdsfs8038ih72x9qggydiykn1-fuzz.drv")
        .expect("a valid store path");
    let mut json = Vec::new();
    write_show_derivation_json(&mut json, &sd, [(&path, &drv)]);

    let mut hashes = DrvHashes::new();
    let _ = hashes.hash_derivation_modulo(&sd, &drv, true, |p: &StorePath| {
        Err::<Derivation, _>(format!("no input {p} while fuzzing"))
    });
    let _ = drv.derivation_type();
    let _ = drv.drv_path(&sd, "fuzz");
});
