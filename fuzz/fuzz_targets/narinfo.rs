//! Fuzzes the binary-cache text readers (narinfo, nix-cache-info, keys, signatures): no input
//! may panic, and whatever parses must print back to text that parses to the same value.
//! Run: `cargo +nightly fuzz run narinfo` (seed corpus: `tests/fixtures/narinfo/`).
#![no_main]

use drover::engine::format::narinfo::{NarInfo, NixCacheInfo};
use drover::engine::format::signature::{PublicKey, PublicKeys, SecretKey, Signature};
use drover::engine::format::StoreDir;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sd = StoreDir::new("/nix/store").expect("a valid store dir");
    if let Ok(info) = NarInfo::parse(&sd, text) {
        let printed = info.to_text(&sd);
        assert_eq!(NarInfo::parse(&sd, &printed).as_ref(), Ok(&info));
        let keys = PublicKeys::parse_list("k:lpO0u1MK05zs6aUvZDWW+ZRhZ4vCVT+BfpwrMozw1jQ=")
            .expect("a valid public key");
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
        let again = SecretKey::parse(&sk.to_file_contents()).expect("our own secret key text");
        assert_eq!(again.to_public_key(), sk.to_public_key());
    }
    if let Ok(sig) = Signature::parse(text) {
        assert_eq!(Signature::parse(&sig.to_string()).as_ref(), Ok(&sig));
    }
    let _ = PublicKeys::parse_list(text);
});
