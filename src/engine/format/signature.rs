//! Binary-cache keys and signatures as Nix writes them: ed25519, each tagged with a key name.
//!
//! A secret key is `<name>:<base64 of 64 bytes>` (the 32-byte seed followed by the public key,
//! libsodium's layout), a public key `<name>:<base64 of 32 bytes>`, a signature
//! `<name>:<base64 of 64 bytes>`. What gets signed is a path's *fingerprint*,
//! `1;<store path>;<nar hash>;<nar size>;<references>` ([`fingerprint`]). A signature counts only
//! when its key name is among the trusted keys ([`PublicKeys`], the `trusted-public-keys`
//! setting) and it verifies under that key; a trusted name with a malformed signature is an
//! error, as in Nix. Base-64 is read as leniently as Nix reads it: decoding stops at the first
//! `=` and newlines are skipped. Key generation takes its 32-byte seed from the caller, so this
//! module stays free of I/O.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use data_encoding::{BASE64, DecodeError, Encoding as Base64Encoding, Specification};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;

use super::hash::Hash;
use super::store_path::{StoreDir, StorePath};

/// Bytes of a secret key: the seed, then the public key.
pub const SECRET_KEY_BYTES: usize = 64;
/// Bytes of a public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Bytes of a seed, the half of a secret key that determines the rest.
pub const SEED_BYTES: usize = 32;
/// Bytes of a signature.
pub const SIGNATURE_BYTES: usize = 64;

/// What a malformed `<name>:<base64>` string was meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    SecretKey,
    PublicKey,
    Signature,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::SecretKey => "secret key",
            KeyKind::PublicKey => "public key",
            KeyKind::Signature => "signature",
        })
    }
}

/// A malformed key or signature. Never shows secret key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("{kind} has no name: expected '<name>:<base64>'")]
    MissingName { kind: KeyKind },
    #[error("{kind} '{name}' has no base-64 data after its name")]
    MissingData { kind: KeyKind, name: String },
    #[error("{kind} '{name}' is not valid base-64: {source}")]
    BadBase64 {
        kind: KeyKind,
        name: String,
        source: DecodeError,
    },
    #[error("{kind} '{name}' has {got} bytes, not {expected}")]
    WrongSize {
        kind: KeyKind,
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("secret key '{0}' is inconsistent: its public half does not belong to its seed")]
    Inconsistent(String),
    #[error("key name '{0}' must be non-empty and contain no ':' or whitespace")]
    BadName(String),
}

/// Why a fingerprint cannot be computed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FingerprintError {
    #[error("cannot calculate fingerprint of path '{0}' because its size is not known")]
    UnknownNarSize(String),
}

/// Why checking a signature failed (as opposed to the signature being merely invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Nix's base-64 as it reads it: no padding required (everything from the first `=` is
/// dropped before decoding), newlines ignored, loose trailing bits accepted.
static LENIENT_BASE64: LazyLock<Base64Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols
        .push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    spec.check_trailing_bits = false;
    spec.ignore.push('\n');
    spec.encoding().expect("a valid base-64 specification")
});

fn decode_base64(kind: KeyKind, name: &str, data: &str) -> Result<Vec<u8>, KeyError> {
    let unpadded = data.split_once('=').map_or(data, |(before, _)| before);
    LENIENT_BASE64
        .decode(unpadded.as_bytes())
        .map_err(|source| KeyError::BadBase64 {
            kind,
            name: name.to_owned(),
            source,
        })
}

/// Splits `<name>:<base64>` and decodes exactly `N` bytes.
fn parse_named<const N: usize>(kind: KeyKind, s: &str) -> Result<(String, [u8; N]), KeyError> {
    let (name, data) = match s.split_once(':') {
        Some((name, data)) if !name.is_empty() => (name, data),
        _ => return Err(KeyError::MissingName { kind }),
    };
    if data.is_empty() {
        return Err(KeyError::MissingData {
            kind,
            name: name.to_owned(),
        });
    }
    let bytes = decode_base64(kind, name, data)?;
    let array = <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongSize {
        kind,
        name: name.to_owned(),
        expected: N,
        got: bytes.len(),
    })?;
    Ok((name.to_owned(), array))
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        Err(KeyError::BadName(name.to_owned()))
    } else {
        Ok(())
    }
}

/// A named ed25519 signing key (`nix-store --generate-binary-cache-key`'s secret key file).
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses `<name>:<base64 of seed ‖ public key>`, as read from a secret key file
    /// (a trailing newline is fine).
    pub fn parse(s: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = parse_named::<SECRET_KEY_BYTES>(KeyKind::SecretKey, s)?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::Inconsistent(name.clone()))?;
        Ok(SecretKey { name, key })
    }

    /// The key pair a 32-byte seed determines; the seed must come from a good random source.
    pub fn from_seed(name: &str, seed: &[u8; SEED_BYTES]) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        Ok(SecretKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, under the same name.
    pub fn to_public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key().to_bytes(),
        }
    }

    /// Signs `data` (Nix's `signDetached`).
    pub fn sign(&self, data: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(data).to_bytes(),
        }
    }

    /// The secret key file's contents, `<name>:<base64>` without a newline, as Nix writes it.
    pub fn to_file_contents(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(&self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A named ed25519 public key, `<name>:<base64>`. Any 32 bytes are accepted, as Nix does; bytes
/// that are not a curve point simply verify nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: [u8; PUBLIC_KEY_BYTES],
}

impl PublicKey {
    pub fn parse(s: &str) -> Result<PublicKey, KeyError> {
        let (name, key) = parse_named(KeyKind::PublicKey, s)?;
        Ok(PublicKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.key
    }

    /// Whether `signature` is a valid signature of `data` under this key. The key names are
    /// not compared; [`PublicKeys::verify`] does that.
    pub fn verify(&self, data: &[u8], signature: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.key) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.bytes);
        key.verify_strict(data, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(&self.key))
    }
}

/// A detached signature, `<key name>:<base64 of 64 bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    key_name: String,
    bytes: [u8; SIGNATURE_BYTES],
}

impl Signature {
    pub fn parse(s: &str) -> Result<Signature, KeyError> {
        let (key_name, bytes) = parse_named(KeyKind::Signature, s)?;
        Ok(Signature { key_name, bytes })
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn bytes(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.bytes
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(&self.bytes))
    }
}

/// The trusted public keys by name (`trusted-public-keys`). When two keys share a name the
/// first one stays, as in Nix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicKeys(BTreeMap<String, PublicKey>);

impl PublicKeys {
    pub fn new() -> PublicKeys {
        PublicKeys::default()
    }

    /// Parses a whitespace-separated list of public keys, the form of the setting.
    pub fn parse_list(s: &str) -> Result<PublicKeys, KeyError> {
        let mut keys = PublicKeys::new();
        for word in s.split_whitespace() {
            keys.insert(PublicKey::parse(word)?);
        }
        Ok(keys)
    }

    /// Adds a key unless one of that name is already trusted; returns whether it was added.
    pub fn insert(&mut self, key: PublicKey) -> bool {
        match self.0.entry(key.name.clone()) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(key);
                true
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&PublicKey> {
        self.0.get(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.0.values()
    }

    /// Nix's `verifyDetached`: whether the signature text `sig` is a valid signature of `data`
    /// by a trusted key. A signature whose key name is not trusted is simply not valid (its
    /// data is not even looked at); one whose key name is trusted but whose data is not
    /// base-64 of 64 bytes is an error.
    pub fn verify(&self, data: &[u8], sig: &str) -> Result<bool, KeyError> {
        let Some((name, _)) = sig.split_once(':') else {
            return Ok(false);
        };
        let Some(key) = self.get(name) else {
            return Ok(false);
        };
        let signature = Signature::parse(sig)?;
        Ok(key.verify(data, &signature))
    }
}

impl FromIterator<PublicKey> for PublicKeys {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(iter: I) -> PublicKeys {
        let mut keys = PublicKeys::new();
        for key in iter {
            keys.insert(key);
        }
        keys
    }
}

/// The text a binary-cache signature signs (Nix's `ValidPathInfo::fingerprint`):
/// `1;<store path>;<nar hash as algo:base32>;<nar size>;<reference paths joined by ','>`.
/// A zero NAR size means "unknown" and is refused; the hash is taken as it is, whatever its
/// algorithm (Nix 2.8 does not check it either).
pub fn fingerprint(
    store_dir: &StoreDir,
    path: &StorePath,
    nar_hash: &Hash,
    nar_size: u64,
    references: &BTreeSet<StorePath>,
) -> Result<String, FingerprintError> {
    if nar_size == 0 {
        return Err(FingerprintError::UnknownNarSize(store_dir.display(path)));
    }
    let mut s = format!(
        "1;{};{};{nar_size};",
        store_dir.display(path),
        nar_hash.to_nix32_prefixed()
    );
    for (i, reference) in references.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&store_dir.display(reference));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::hash::sha256;

    // Written by `nix-store --generate-binary-cache-key peer-test-cache-1`.
    const NIX_PUBLIC_KEY: &str = "peer-test-cache-1:lpO0u1MK05zs6aUvZDWW+ZRhZ4vCVT+BfpwrMozw1jQ=";

    fn key(seed_byte: u8, name: &str) -> SecretKey {
        SecretKey::from_seed(name, &[seed_byte; SEED_BYTES]).unwrap()
    }

    #[test]
    fn secret_key_round_trips_and_tolerates_a_trailing_newline() {
        let sk = key(7, "cache.example.org-1");
        let text = sk.to_file_contents();
        assert!(text.starts_with("cache.example.org-1:"));
        assert_eq!(text.len(), "cache.example.org-1:".len() + 88);
        let again = SecretKey::parse(&format!("{text}\n")).unwrap();
        assert_eq!(again.to_file_contents(), text);
        assert_eq!(again.to_public_key(), sk.to_public_key());
    }

    #[test]
    fn public_key_is_the_second_half_of_the_secret_key() {
        let sk = key(9, "k");
        let decoded = BASE64
            .decode(&sk.to_file_contents().as_bytes()["k:".len()..])
            .unwrap();
        assert_eq!(&decoded[32..], sk.to_public_key().bytes());
        assert_eq!(&decoded[..32], &[9u8; 32]);
    }

    #[test]
    fn parses_nix_public_key_and_prints_it_back() {
        let pk = PublicKey::parse(NIX_PUBLIC_KEY).unwrap();
        assert_eq!(pk.name(), "peer-test-cache-1");
        assert_eq!(pk.to_string(), NIX_PUBLIC_KEY);
    }

    #[test]
    fn base64_without_padding_or_with_newlines_is_accepted() {
        let unpadded = NIX_PUBLIC_KEY.trim_end_matches('=');
        assert_eq!(
            PublicKey::parse(unpadded).unwrap(),
            PublicKey::parse(NIX_PUBLIC_KEY).unwrap()
        );
        let split = NIX_PUBLIC_KEY.replacen("u1MK", "u1\nMK", 1);
        assert_eq!(
            PublicKey::parse(&split).unwrap(),
            PublicKey::parse(NIX_PUBLIC_KEY).unwrap()
        );
    }

    #[test]
    fn key_errors_name_the_problem() {
        assert_eq!(
            PublicKey::parse("no-colon"),
            Err(KeyError::MissingName {
                kind: KeyKind::PublicKey
            })
        );
        assert_eq!(
            PublicKey::parse(":AAAA"),
            Err(KeyError::MissingName {
                kind: KeyKind::PublicKey
            })
        );
        assert_eq!(
            SecretKey::parse("name:").unwrap_err(),
            KeyError::MissingData {
                kind: KeyKind::SecretKey,
                name: "name".into()
            }
        );
        assert!(matches!(
            PublicKey::parse("k:not*base64"),
            Err(KeyError::BadBase64 { kind: KeyKind::PublicKey, ref name, .. }) if name == "k"
        ));
        assert_eq!(
            PublicKey::parse("k:AAAA"),
            Err(KeyError::WrongSize {
                kind: KeyKind::PublicKey,
                name: "k".into(),
                expected: 32,
                got: 3
            })
        );
        // A public key is not a secret key.
        assert_eq!(
            SecretKey::parse(NIX_PUBLIC_KEY).unwrap_err(),
            KeyError::WrongSize {
                kind: KeyKind::SecretKey,
                name: "peer-test-cache-1".into(),
                expected: 64,
                got: 32
            }
        );
        let msg = SecretKey::parse("sk:AAAA").unwrap_err().to_string();
        assert_eq!(msg, "secret key 'sk' has 3 bytes, not 64");
    }

    #[test]
    fn secret_key_whose_halves_disagree_is_refused() {
        let mut bytes = key(1, "k").key.to_keypair_bytes();
        bytes[40] ^= 1;
        let text = format!("k:{}", BASE64.encode(&bytes));
        assert_eq!(
            SecretKey::parse(&text).unwrap_err(),
            KeyError::Inconsistent("k".into())
        );
    }

    #[test]
    fn key_names_are_checked_on_generation() {
        for bad in ["", "a:b", "a b"] {
            assert_eq!(
                SecretKey::from_seed(bad, &[0; 32]).unwrap_err(),
                KeyError::BadName(bad.into())
            );
        }
    }

    #[test]
    fn sign_and_verify() {
        let sk = key(3, "test-1");
        let keys: PublicKeys = [sk.to_public_key()].into_iter().collect();
        let sig = sk.sign(b"hello").to_string();
        assert!(sig.starts_with("test-1:"));
        assert_eq!(Signature::parse(&sig).unwrap().to_string(), sig);
        assert_eq!(keys.verify(b"hello", &sig), Ok(true));
        assert_eq!(keys.verify(b"hellO", &sig), Ok(false));
    }

    #[test]
    fn signing_is_deterministic() {
        assert_eq!(key(5, "a").sign(b"x"), key(5, "a").sign(b"x"));
        assert_ne!(key(5, "a").sign(b"x"), key(6, "a").sign(b"x"));
    }

    #[test]
    fn untrusted_key_name_is_not_valid_even_when_malformed() {
        let sk = key(3, "test-1");
        let keys: PublicKeys = [sk.to_public_key()].into_iter().collect();
        let sig = sk.sign(b"data").to_string();
        let renamed = sig.replacen("test-1:", "test-2:", 1);
        assert_eq!(keys.verify(b"data", &renamed), Ok(false));
        assert_eq!(keys.verify(b"data", "other:***"), Ok(false));
        assert_eq!(keys.verify(b"data", "no colon at all"), Ok(false));
        assert_eq!(keys.verify(b"data", ""), Ok(false));
    }

    #[test]
    fn trusted_key_name_with_malformed_signature_is_an_error() {
        let keys: PublicKeys = [key(3, "test-1").to_public_key()].into_iter().collect();
        assert!(matches!(
            keys.verify(b"data", "test-1:***"),
            Err(KeyError::BadBase64 {
                kind: KeyKind::Signature,
                ..
            })
        ));
        assert!(matches!(
            keys.verify(b"data", "test-1:AAAA"),
            Err(KeyError::WrongSize {
                kind: KeyKind::Signature,
                got: 3,
                ..
            })
        ));
    }

    #[test]
    fn same_name_different_key_does_not_verify() {
        let keys: PublicKeys = [key(3, "k").to_public_key()].into_iter().collect();
        let forged = key(4, "k").sign(b"data").to_string();
        assert_eq!(keys.verify(b"data", &forged), Ok(false));
    }

    #[test]
    fn first_key_of_a_name_wins() {
        let first = key(1, "k").to_public_key();
        let second = key(2, "k").to_public_key();
        let list = format!("{first}  {second}\n{}", key(3, "j").to_public_key());
        let keys = PublicKeys::parse_list(&list).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get("k"), Some(&first));
        assert!(PublicKeys::parse_list("").unwrap().is_empty());
        assert!(PublicKeys::parse_list("k:AAAA").is_err());
    }

    #[test]
    fn non_point_public_key_verifies_nothing() {
        // y = 2 is not the y coordinate of any point on the curve.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let pk = PublicKey::parse(&format!("k:{}", BASE64.encode(&bytes))).unwrap();
        let sig = key(1, "k").sign(b"d");
        assert!(!pk.verify(b"d", &sig));
    }

    #[test]
    fn fingerprint_layout() {
        let sd = StoreDir::new("/nix/store").unwrap();
        let p = StorePath::from_base_name("pslgks8s23gbyna07mkbyj60nnxa7yi0-n2").unwrap();
        let refs: BTreeSet<StorePath> = [
            "phd2rvff75jl9ya37a11ndzapyky35cl-n1-lib",
            "cp3vdi8x4b0gc32h65djb1f5540va9wm-n1",
        ]
        .iter()
        .map(|b| StorePath::from_base_name(b).unwrap())
        .collect();
        let h = sha256(b"");
        let fp = fingerprint(&sd, &p, &h, 5, &refs).unwrap();
        assert_eq!(
            fp,
            format!(
                "1;/nix/store/pslgks8s23gbyna07mkbyj60nnxa7yi0-n2;sha256:{};5;\
                 /nix/store/cp3vdi8x4b0gc32h65djb1f5540va9wm-n1,\
                 /nix/store/phd2rvff75jl9ya37a11ndzapyky35cl-n1-lib",
                h.to_base32()
            )
        );
        let none = fingerprint(&sd, &p, &h, 5, &BTreeSet::new()).unwrap();
        assert!(none.ends_with(";5;"));
        assert_eq!(
            fingerprint(&sd, &p, &h, 0, &refs).unwrap_err().to_string(),
            "cannot calculate fingerprint of path \
             '/nix/store/pslgks8s23gbyna07mkbyj60nnxa7yi0-n2' because its size is not known"
        );
    }
}
