//! Hashes as Nix knows them: md5, sha1, sha256 and sha512 digests, printed and parsed in base-16,
//! Nix base-32, base-64 and SRI (`sha256-<base64>`), with or without an `algo:` prefix.
//!
//! Parsing follows Nix: an `algo:` or `algo-` (SRI) prefix names the algorithm, or the caller
//! knows it from context; without SRI the encoding is recognised by the length of the digest
//! text (base-16, base-32 or base-64 of exactly the algorithm's digest size), anything else is
//! rejected. [`Hasher`] hashes a stream; [`compress_hash`] folds a digest to fewer bytes, as
//! store paths do.

use std::fmt;
use std::io;
use std::str::FromStr;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use sha2::Digest;
use thiserror::Error;

use super::base32;

/// A hash algorithm Nix supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub const ALL: [HashAlgo; 4] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];

    /// Digest size in bytes.
    pub const fn size(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    /// The name Nix prints (`md5`, `sha1`, `sha256`, `sha512`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    pub const fn base16_len(self) -> usize {
        self.size() * 2
    }

    pub const fn base32_len(self) -> usize {
        base32::encoded_len(self.size())
    }

    pub const fn base64_len(self) -> usize {
        self.size().div_ceil(3) * 4
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md5" => Ok(HashAlgo::Md5),
            "sha1" => Ok(HashAlgo::Sha1),
            "sha256" => Ok(HashAlgo::Sha256),
            "sha512" => Ok(HashAlgo::Sha512),
            _ => Err(HashError::UnknownAlgo(s.to_owned())),
        }
    }
}

/// How a digest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Base16,
    Base32,
    Base64,
    /// `algo-<base64>`; always carries the algorithm.
    Sri,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgo(String),
    #[error("hash '{0}' does not include a type, nor is the type otherwise known from context")]
    MissingAlgo(String),
    #[error("hash '{hash}' should have type '{expected}'")]
    AlgoMismatch { hash: String, expected: HashAlgo },
    #[error("hash '{hash}' has wrong length for hash type '{algo}'")]
    WrongLength { hash: String, algo: HashAlgo },
    #[error("invalid base-16 hash '{0}'")]
    BadBase16(String),
    #[error("invalid base-32 hash '{0}'")]
    BadBase32(String),
    #[error("invalid base-64 hash '{0}'")]
    BadBase64(String),
    #[error("invalid SRI hash '{0}'")]
    BadSri(String),
    #[error("hash '{0}' is not SRI")]
    NotSri(String),
    #[error("a {algo} digest has {expected} bytes, not {got}")]
    WrongDigestSize {
        algo: HashAlgo,
        expected: usize,
        got: usize,
    },
}

/// A digest together with its algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algo: HashAlgo,
    bytes: [u8; 64],
}

impl Hash {
    /// A hash from raw digest bytes, which must have the algorithm's size.
    pub fn from_digest(algo: HashAlgo, digest: &[u8]) -> Result<Hash, HashError> {
        if digest.len() != algo.size() {
            return Err(HashError::WrongDigestSize {
                algo,
                expected: algo.size(),
                got: digest.len(),
            });
        }
        let mut bytes = [0u8; 64];
        bytes[..digest.len()].copy_from_slice(digest);
        Ok(Hash { algo, bytes })
    }

    /// The all-zero digest of an algorithm (Nix's `Hash(htSHA256)`).
    pub fn zero(algo: HashAlgo) -> Hash {
        Hash {
            algo,
            bytes: [0u8; 64],
        }
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn digest(&self) -> &[u8] {
        &self.bytes[..self.algo.size()]
    }

    /// Parses `algo:digest` or SRI `algo-base64`, as Nix's `parseAnyPrefixed`.
    pub fn parse_prefixed(s: &str) -> Result<Hash, HashError> {
        let (algo, rest, sri) = split_prefix(s)?;
        let algo = algo.ok_or_else(|| HashError::MissingAlgo(s.to_owned()))?;
        Hash::parse_digest(rest, algo, sri)
    }

    /// Parses a hash that may carry its algorithm, or whose algorithm `expected` gives;
    /// when both are present they must agree (Nix's `parseAny`).
    pub fn parse_any(s: &str, expected: Option<HashAlgo>) -> Result<Hash, HashError> {
        let (algo, rest, sri) = split_prefix(s)?;
        let algo = match (algo, expected) {
            (None, None) => return Err(HashError::MissingAlgo(s.to_owned())),
            (Some(a), Some(e)) if a != e => {
                return Err(HashError::AlgoMismatch {
                    hash: s.to_owned(),
                    expected: e,
                });
            }
            (Some(a), _) => a,
            (None, Some(e)) => e,
        };
        Hash::parse_digest(rest, algo, sri)
    }

    /// Parses an SRI hash `algo-base64`.
    pub fn parse_sri(s: &str) -> Result<Hash, HashError> {
        let (algo, rest) = s
            .split_once('-')
            .ok_or_else(|| HashError::NotSri(s.to_owned()))?;
        Hash::parse_digest(rest, algo.parse()?, true)
    }

    /// Parses a bare digest in base-16, base-32 or base-64 (Nix's `parseNonSRIUnprefixed`).
    pub fn parse_unprefixed(s: &str, algo: HashAlgo) -> Result<Hash, HashError> {
        Hash::parse_digest(s, algo, false)
    }

    fn parse_digest(rest: &str, algo: HashAlgo, sri: bool) -> Result<Hash, HashError> {
        let mut bytes = [0u8; 64];
        let out = &mut bytes[..algo.size()];
        if !sri && rest.len() == algo.base16_len() {
            HEXLOWER_PERMISSIVE
                .decode_mut(rest.as_bytes(), out)
                .map_err(|_| HashError::BadBase16(rest.to_owned()))?;
        } else if !sri && rest.len() == algo.base32_len() {
            base32::decode_into(rest.as_bytes(), out)
                .map_err(|_| HashError::BadBase32(rest.to_owned()))?;
        } else if sri || rest.len() == algo.base64_len() {
            let bad = || {
                if sri {
                    HashError::BadSri(rest.to_owned())
                } else {
                    HashError::BadBase64(rest.to_owned())
                }
            };
            let decoded = BASE64.decode(rest.as_bytes()).map_err(|_| bad())?;
            if decoded.len() != algo.size() {
                return Err(bad());
            }
            out.copy_from_slice(&decoded);
        } else {
            return Err(HashError::WrongLength {
                hash: rest.to_owned(),
                algo,
            });
        }
        Ok(Hash { algo, bytes })
    }

    /// The digest in `encoding`, prefixed by `algo:` when `with_algo` (SRI always has it).
    pub fn encode(&self, encoding: Encoding, with_algo: bool) -> String {
        let mut s = String::new();
        if encoding == Encoding::Sri || with_algo {
            s.push_str(self.algo.name());
            s.push(if encoding == Encoding::Sri { '-' } else { ':' });
        }
        match encoding {
            Encoding::Base16 => s.push_str(&data_encoding::HEXLOWER.encode(self.digest())),
            Encoding::Base32 => s.push_str(&base32::encode(self.digest())),
            Encoding::Base64 | Encoding::Sri => s.push_str(&BASE64.encode(self.digest())),
        }
        s
    }

    pub fn to_base16(&self) -> String {
        self.encode(Encoding::Base16, false)
    }

    pub fn to_base32(&self) -> String {
        self.encode(Encoding::Base32, false)
    }

    pub fn to_sri(&self) -> String {
        self.encode(Encoding::Sri, true)
    }

    /// `algo:base32`, the form `nix-store -q --hash` prints.
    pub fn to_nix32_prefixed(&self) -> String {
        self.encode(Encoding::Base32, true)
    }

    /// `algo:base16`, the form of the `hash` column of Nix's database.
    pub fn to_base16_prefixed(&self) -> String {
        self.encode(Encoding::Base16, true)
    }
}

impl fmt::Display for Hash {
    /// `algo:base32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_prefixed())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.encode(Encoding::Base16, true))
    }
}

fn split_prefix(s: &str) -> Result<(Option<HashAlgo>, &str, bool), HashError> {
    if let Some((algo, rest)) = s.split_once(':') {
        return Ok((Some(algo.parse()?), rest, false));
    }
    if let Some((algo, rest)) = s.split_once('-') {
        return Ok((Some(algo.parse()?), rest, true));
    }
    Ok((None, s, false))
}

/// XOR-folds `digest` into `N` bytes: byte `i` goes to `i mod N` (Nix's `compressHash`).
pub fn compress_hash<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in digest.iter().enumerate() {
        out[i % N] ^= b;
    }
    out
}

/// A streaming hasher for any of the algorithms; as an [`io::Write`] it never fails.
#[derive(Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algo(&self) -> HashAlgo {
        match self {
            Hasher::Md5(_) => HashAlgo::Md5,
            Hasher::Sha1(_) => HashAlgo::Sha1,
            Hasher::Sha256(_) => HashAlgo::Sha256,
            Hasher::Sha512(_) => HashAlgo::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Hash {
        let algo = self.algo();
        let mut bytes = [0u8; 64];
        let n = algo.size();
        match self {
            Hasher::Md5(h) => bytes[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha1(h) => bytes[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha256(h) => bytes[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha512(h) => bytes[..n].copy_from_slice(&h.finalize()),
        }
        Hash { algo, bytes }
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The hash of a byte string.
pub fn hash_bytes(algo: HashAlgo, data: &[u8]) -> Hash {
    let mut h = Hasher::new(algo);
    h.update(data);
    h.finish()
}

/// The sha256 of a byte string.
pub fn sha256(data: &[u8]) -> Hash {
    hash_bytes(HashAlgo::Sha256, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The flat hashes of "plain file\n" as real `nix-hash --flat` prints them (goldens/trees.json).
    const SHA256_HEX: &str = "0e31b4805c16422e0fc62f097ac11c858e6ba3f9c49e5dffec2e1bfe51db6a09";
    const SHA256_B32: &str = "02bavd8zw6rfxkzmv7n4z6inp3l53k0pl29gqq7jwhhnbj0b8c8f";

    #[test]
    fn digests_of_known_input() {
        let h = sha256(b"plain file\n");
        assert_eq!(h.to_base16(), SHA256_HEX);
        assert_eq!(h.to_base32(), SHA256_B32);
        assert_eq!(
            hash_bytes(HashAlgo::Sha1, b"plain file\n").to_base32(),
            "r5xsxg50g1pwgdzc1514n7q1za1c7rjh"
        );
    }

    #[test]
    fn parse_every_form() {
        let h = sha256(b"plain file\n");
        let sri = h.to_sri();
        assert!(sri.starts_with("sha256-") && sri.ends_with('='));
        for s in [
            format!("sha256:{SHA256_HEX}"),
            format!("sha256:{SHA256_B32}"),
            format!("sha256:{}", h.encode(Encoding::Base64, false)),
            sri.clone(),
            format!("sha256:{}", SHA256_HEX.to_uppercase()),
        ] {
            assert_eq!(Hash::parse_prefixed(&s).unwrap(), h, "{s}");
            assert_eq!(Hash::parse_any(&s, Some(HashAlgo::Sha256)).unwrap(), h);
        }
        assert_eq!(Hash::parse_sri(&sri).unwrap(), h);
        assert_eq!(
            Hash::parse_any(SHA256_B32, Some(HashAlgo::Sha256)).unwrap(),
            h
        );
        assert_eq!(
            Hash::parse_unprefixed(SHA256_HEX, HashAlgo::Sha256).unwrap(),
            h
        );
    }

    #[test]
    fn rejects_bad_hashes() {
        assert_eq!(
            Hash::parse_prefixed(SHA256_HEX),
            Err(HashError::MissingAlgo(SHA256_HEX.into()))
        );
        assert!(matches!(
            Hash::parse_any(&format!("sha1:{SHA256_HEX}"), Some(HashAlgo::Sha256)),
            Err(HashError::AlgoMismatch { .. })
        ));
        assert!(matches!(
            Hash::parse_prefixed("sha256:abc"),
            Err(HashError::WrongLength { .. })
        ));
        assert!(matches!(
            Hash::parse_prefixed("blake3:abc"),
            Err(HashError::UnknownAlgo(_))
        ));
        let bad16 = format!("sha256:{}", "g".repeat(64));
        assert!(matches!(
            Hash::parse_prefixed(&bad16),
            Err(HashError::BadBase16(_))
        ));
        let bad32 = format!("sha256:{}", "e".repeat(52));
        assert!(matches!(
            Hash::parse_prefixed(&bad32),
            Err(HashError::BadBase32(_))
        ));
        assert!(matches!(
            Hash::parse_sri("sha256-AAAA"),
            Err(HashError::BadSri(_))
        ));
        assert!(matches!(
            Hash::parse_sri("sha256-!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!="),
            Err(HashError::BadSri(_))
        ));
    }

    #[test]
    fn compress_folds_with_xor() {
        let digest: Vec<u8> = (0u8..32).collect();
        let c: [u8; 20] = compress_hash(&digest);
        assert_eq!(c[0], 20);
        assert_eq!(c[11], 11 ^ 31);
        assert_eq!(c[12], 12);
    }

    proptest! {
        #[test]
        fn encodings_round_trip(data in proptest::collection::vec(any::<u8>(), 64), algo_ix in 0usize..4) {
            let algo = HashAlgo::ALL[algo_ix];
            let h = Hash::from_digest(algo, &data[..algo.size()]).unwrap();
            for enc in [Encoding::Base16, Encoding::Base32, Encoding::Base64, Encoding::Sri] {
                let s = h.encode(enc, true);
                prop_assert_eq!(Hash::parse_prefixed(&s).unwrap(), h);
            }
        }
    }
}
