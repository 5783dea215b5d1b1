//! Store paths: `<store dir>/<hash part>-<name>`, and how Nix computes them.
//!
//! The hash part is 32 Nix base-32 characters: a sha256 of a "fingerprint"
//! (`<type>:sha256:<hex digest>:<store dir>:<name>`) XOR-folded to 20 bytes. The type says what
//! the digest is: `text` (a file added with its references, like a `.drv`), `source` (a tree
//! added by its NAR hash), `output:<id>` (a derivation output, or a fixed-output path).
//! The store dir is part of every fingerprint, so it is a value ([`StoreDir`]), never a constant.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use super::base32;
use super::hash::{Hash, HashAlgo, compress_hash, sha256};

/// Length of the textual hash part of a store path.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix accepts.
pub const MAX_NAME_LEN: usize = 211;
/// Suffix of derivation files.
pub const DRV_EXTENSION: &str = ".drv";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is too short to be a valid store path")]
    TooShort(String),
    #[error("store path '{path}' contains illegal base-32 character '{char}'")]
    BadHashChar { path: String, char: char },
    #[error("store path '{0}' has an empty name")]
    EmptyName(String),
    #[error("store path '{0}' has a name longer than 211 characters")]
    NameTooLong(String),
    #[error("store path '{path}' contains illegal character '{char}'")]
    BadNameChar { path: String, char: char },
    #[error("path '{0}' is not in the Nix store")]
    NotInStore(String),
    #[error(
        "store directory '{0}' must be an absolute path without '.', '..', '//' or a trailing '/'"
    )]
    BadStoreDir(String),
}

/// The logical location of a store, e.g. `/nix/store`: absolute, canonical, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: impl Into<String>) -> Result<StoreDir, StorePathError> {
        let dir = dir.into();
        let canonical = dir.starts_with('/')
            && dir.len() > 1
            && !dir.ends_with('/')
            && dir[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if canonical {
            Ok(StoreDir(dir))
        } else {
            Err(StorePathError::BadStoreDir(dir))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path of a store path in this store.
    pub fn display(&self, path: &StorePath) -> String {
        let mut s = String::with_capacity(self.0.len() + 1 + path.base_len());
        s.push_str(&self.0);
        s.push('/');
        path.push_base_name(&mut s);
        s
    }

    /// Parses a full path that must be directly inside this store.
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let base = path
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .filter(|b| !b.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_owned()))?;
        StorePath::from_base_name(base)
    }

    /// Splits a path at or below a store path into the store path and the rest
    /// (`/nix/store/h-foo/bin/x` → (`h-foo`, `/bin/x`)), like Nix's `toStorePath`.
    pub fn split_path<'a>(&self, path: &'a str) -> Result<(StorePath, &'a str), StorePathError> {
        let inner = path
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_owned()))?;
        let (base, rest) = match inner.find('/') {
            Some(i) => (&inner[..i], &inner[i..]),
            None => (inner, ""),
        };
        Ok((StorePath::from_base_name(base)?, rest))
    }

    /// Whether `path` lies inside this store (at or below some store path).
    pub fn is_in_store(&self, path: &str) -> bool {
        path.strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|r| !r.is_empty())
    }

    /// Nix's `makeStorePath`: the path whose hash part is the folded sha256 of
    /// `<kind>:<algo>:<hex digest>:<store dir>:<name>`.
    pub fn make_store_path(
        &self,
        kind: &str,
        hash: &Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let fingerprint = format!("{kind}:{}:{}:{name}", hash.to_base16_prefixed(), self.0);
        let digest = sha256(fingerprint.as_bytes());
        StorePath::from_digest(compress_hash(digest.digest()), name)
    }

    /// The path of a text file with references (`builtins.toFile`, `.drv` files).
    pub fn make_text_path(
        &self,
        name: &str,
        hash: &Hash,
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(&self.make_kind("text", references, false), hash, name)
    }

    /// The path of `contents` added as a text file with `references`.
    pub fn compute_text_path(
        &self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StorePathError> {
        self.make_text_path(name, &sha256(contents), references)
    }

    /// Nix's `makeFixedOutputPath`: recursive sha256 gives a `source` path (which may have
    /// references); every other method/algorithm hashes `fixed:out:[r:]<algo>:<hex>:` into an
    /// `output:out` path.
    pub fn make_fixed_output_path(
        &self,
        method: IngestionMethod,
        hash: &Hash,
        name: &str,
        references: &BTreeSet<StorePath>,
        self_reference: bool,
    ) -> Result<StorePath, StorePathError> {
        if method == IngestionMethod::Recursive && hash.algo() == HashAlgo::Sha256 {
            let kind = self.make_kind("source", references, self_reference);
            self.make_store_path(&kind, hash, name)
        } else {
            let inner = format!(
                "fixed:out:{}{}:",
                method.prefix(),
                hash.to_base16_prefixed()
            );
            self.make_store_path("output:out", &sha256(inner.as_bytes()), name)
        }
    }

    /// The path a content address gives to an object called `name`.
    pub fn make_path_from_ca(
        &self,
        name: &str,
        ca: &ContentAddress,
        references: &BTreeSet<StorePath>,
        self_reference: bool,
    ) -> Result<StorePath, StorePathError> {
        match ca {
            ContentAddress::Text(hash) => self.make_text_path(name, hash, references),
            ContentAddress::Fixed { method, hash } => {
                self.make_fixed_output_path(*method, hash, name, references, self_reference)
            }
        }
    }

    /// Nix's `makeOutputPath`: output `id` of an input-addressed derivation called `drv_name`
    /// whose hash modulo is `hash`.
    pub fn make_output_path(
        &self,
        id: &str,
        hash: &Hash,
        drv_name: &str,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(
            &format!("output:{id}"),
            hash,
            &output_path_name(drv_name, id),
        )
    }

    fn make_kind(
        &self,
        kind: &str,
        references: &BTreeSet<StorePath>,
        self_reference: bool,
    ) -> String {
        let mut s = kind.to_owned();
        for r in references {
            s.push(':');
            s.push_str(&self.display(r));
        }
        if self_reference {
            s.push_str(":self");
        }
        s
    }
}

/// The name of output `output` of a derivation called `drv_name`: `out` keeps the name,
/// others append `-<output>`.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_owned()
    } else {
        format!("{drv_name}-{output}")
    }
}

/// A store path without its store dir: the 32-character hash part and the name.
/// Ordered as Nix orders them, by base name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash_part: [u8; HASH_PART_LEN],
    name: Box<str>,
}

impl StorePath {
    /// Parses a base name `<hash part>-<name>`.
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        let bytes = base.as_bytes();
        if bytes.len() < HASH_PART_LEN + 1 {
            return Err(StorePathError::TooShort(base.to_owned()));
        }
        if let Some(&c) = bytes[..HASH_PART_LEN]
            .iter()
            .find(|&&c| !base32::is_base32_char(c))
        {
            return Err(StorePathError::BadHashChar {
                path: base.to_owned(),
                char: c as char,
            });
        }
        if bytes[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::BadNameChar {
                path: base.to_owned(),
                char: bytes[HASH_PART_LEN] as char,
            });
        }
        let name = &base[HASH_PART_LEN + 1..];
        check_name(base, name)?;
        let mut hash_part = [0u8; HASH_PART_LEN];
        hash_part.copy_from_slice(&bytes[..HASH_PART_LEN]);
        Ok(StorePath {
            hash_part,
            name: name.into(),
        })
    }

    /// A store path from a 20-byte digest and a name.
    pub fn from_digest(digest: [u8; 20], name: &str) -> Result<StorePath, StorePathError> {
        let mut hash_part = [0u8; HASH_PART_LEN];
        let mut encoded = Vec::with_capacity(HASH_PART_LEN);
        base32::encode_into(&digest, &mut encoded);
        hash_part.copy_from_slice(&encoded);
        let path = StorePath {
            hash_part,
            name: name.into(),
        };
        // The full base name is only needed for the error message.
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(is_name_char) {
            check_name(&path.base_name(), name)?;
        }
        Ok(path)
    }

    /// The 32 characters of the hash part.
    pub fn hash_part(&self) -> &str {
        // Validated to be base-32 characters, which are ASCII.
        std::str::from_utf8(&self.hash_part).expect("hash part is ASCII")
    }

    pub fn hash_part_bytes(&self) -> &[u8; HASH_PART_LEN] {
        &self.hash_part
    }

    /// The 20-byte digest the hash part encodes.
    pub fn digest(&self) -> [u8; 20] {
        let mut d = [0u8; 20];
        base32::decode_into(&self.hash_part, &mut d).expect("hash part was validated");
        d
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash part>-<name>`.
    pub fn base_name(&self) -> String {
        let mut s = String::with_capacity(self.base_len());
        self.push_base_name(&mut s);
        s
    }

    fn base_len(&self) -> usize {
        HASH_PART_LEN + 1 + self.name.len()
    }

    fn push_base_name(&self, s: &mut String) {
        s.push_str(self.hash_part());
        s.push('-');
        s.push_str(&self.name);
    }

    /// Whether this is a derivation (`.drv`) path.
    pub fn is_derivation(&self) -> bool {
        self.name.ends_with(DRV_EXTENSION)
    }

    /// The derivation name of a `.drv` path (its name without `.drv`).
    pub fn drv_name(&self) -> Option<&str> {
        self.name.strip_suffix(DRV_EXTENSION)
    }
}

impl fmt::Display for StorePath {
    /// The base name; a full path needs the store dir ([`StoreDir::display`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash_part(), self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

fn check_name(path: &str, name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName(path.to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(path.to_owned()));
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(StorePathError::BadNameChar {
            path: path.to_owned(),
            char: c,
        });
    }
    Ok(())
}

/// Characters allowed in a store path name.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// How a file system object is hashed for content addressing: its bytes (a single regular
/// file) or its NAR serialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IngestionMethod {
    Flat,
    Recursive,
}

impl IngestionMethod {
    /// `r:` for recursive, nothing for flat, as in `fixed:r:sha256:…` and `r:sha256`.
    pub fn prefix(self) -> &'static str {
        match self {
            IngestionMethod::Flat => "",
            IngestionMethod::Recursive => "r:",
        }
    }
}

/// A content address (`ca` of a path info): `text:sha256:<base32>` or
/// `fixed:[r:]<algo>:<base32>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentAddress {
    Text(Hash),
    Fixed { method: IngestionMethod, hash: Hash },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContentAddressError {
    #[error("content address '{0}' is not of the form 'text:…' or 'fixed:…'")]
    BadPrefix(String),
    #[error("content address '{0}' has no hash algorithm")]
    MissingAlgo(String),
    #[error("text content address '{0}' must use sha256")]
    TextNotSha256(String),
    #[error("in content address '{ca}': {source}")]
    BadHash {
        ca: String,
        source: super::hash::HashError,
    },
}

impl ContentAddress {
    pub fn hash(&self) -> &Hash {
        match self {
            ContentAddress::Text(h) | ContentAddress::Fixed { hash: h, .. } => h,
        }
    }

    pub fn parse(s: &str) -> Result<ContentAddress, ContentAddressError> {
        let bad_hash = |source| ContentAddressError::BadHash {
            ca: s.to_owned(),
            source,
        };
        let (prefix, rest) = s
            .split_once(':')
            .ok_or_else(|| ContentAddressError::BadPrefix(s.to_owned()))?;
        let (method, rest) = match prefix {
            "text" => (None, rest),
            "fixed" => match rest.strip_prefix("r:") {
                Some(r) => (Some(IngestionMethod::Recursive), r),
                None => (Some(IngestionMethod::Flat), rest),
            },
            _ => return Err(ContentAddressError::BadPrefix(s.to_owned())),
        };
        let (algo, digest) = rest
            .split_once(':')
            .ok_or_else(|| ContentAddressError::MissingAlgo(s.to_owned()))?;
        let algo: HashAlgo = algo.parse().map_err(bad_hash)?;
        let hash = Hash::parse_unprefixed(digest, algo).map_err(bad_hash)?;
        match method {
            None if algo != HashAlgo::Sha256 => {
                Err(ContentAddressError::TextNotSha256(s.to_owned()))
            }
            None => Ok(ContentAddress::Text(hash)),
            Some(method) => Ok(ContentAddress::Fixed { method, hash }),
        }
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentAddress::Text(h) => write!(f, "text:{}", h.to_nix32_prefixed()),
            ContentAddress::Fixed { method, hash } => {
                write!(f, "fixed:{}{}", method.prefix(), hash.to_nix32_prefixed())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::hash::hash_bytes;

    fn nix_store() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    #[test]
    fn parse_and_print() {
        let sd = nix_store();
        let p = sd
            .parse("/nix/store/4lij45dsrkb2405jjcig6dl2m3k0g5nq-fod0")
            .unwrap();
        assert_eq!(p.hash_part(), "4lij45dsrkb2405jjcig6dl2m3k0g5nq");
        assert_eq!(p.name(), "fod0");
        assert_eq!(
            sd.display(&p),
            "/nix/store/4lij45dsrkb2405jjcig6dl2m3k0g5nq-fod0"
        );
        assert_eq!(StorePath::from_digest(p.digest(), "fod0").unwrap(), p);
        let (q, rest) = sd
            .split_path("/nix/store/4lij45dsrkb2405jjcig6dl2m3k0g5nq-fod0/bin/x")
            .unwrap();
        assert_eq!((q, rest), (p, "/bin/x"));
    }

    #[test]
    fn rejects_bad_paths() {
        let sd = nix_store();
        assert!(matches!(
            sd.parse("/tmp/4lij45dsrkb2405jjcig6dl2m3k0g5nq-x"),
            Err(StorePathError::NotInStore(_))
        ));
        assert!(matches!(
            sd.parse("/nix/store/4lij45dsrkb2405jjcig6dl2m3k0g5nq-x/y"),
            Err(StorePathError::NotInStore(_))
        ));
        assert!(matches!(
            StorePath::from_base_name("4lij45dsrkb2405jjcig6dl2m3k0g5n"),
            Err(StorePathError::TooShort(_))
        ));
        assert!(matches!(
            StorePath::from_base_name("elij45dsrkb2405jjcig6dl2m3k0g5nq-x"),
            Err(StorePathError::BadHashChar { char: 'e', .. })
        ));
        assert!(matches!(
            StorePath::from_base_name("4lij45dsrkb2405jjcig6dl2m3k0g5nq-"),
            Err(StorePathError::EmptyName(_))
        ));
        assert!(matches!(
            StorePath::from_base_name("4lij45dsrkb2405jjcig6dl2m3k0g5nq-a b"),
            Err(StorePathError::BadNameChar { char: ' ', .. })
        ));
        let long = format!("4lij45dsrkb2405jjcig6dl2m3k0g5nq-{}", "a".repeat(212));
        assert!(matches!(
            StorePath::from_base_name(&long),
            Err(StorePathError::NameTooLong(_))
        ));
        assert!(StoreDir::new("nix/store").is_err());
        assert!(StoreDir::new("/nix/store/").is_err());
        assert!(StoreDir::new("/nix/../store").is_err());
    }

    // Expected paths below were printed by real Nix 2.8 (`nix-store --add`,
    // `--add-fixed`) and copied into ../shared/peer/goldens/trees.json.
    #[test]
    fn fixed_output_paths_match_nix() {
        let sd = nix_store();
        let none = BTreeSet::new();
        let flat = sha256(b"plain file\n");
        assert_eq!(
            sd.display(
                &sd.make_fixed_output_path(
                    IngestionMethod::Flat,
                    &flat,
                    "file-plain.txt",
                    &none,
                    false
                )
                .unwrap()
            ),
            "/nix/store/1awkvvvd0xhf47v4z6c2980hyzq1xjjl-file-plain.txt"
        );
        let nar_sha256 = Hash::parse_any(
            "a84b628ab5f138f46aab22160faa8610a28d1c149172004bbca83b9bfd19ce96",
            Some(HashAlgo::Sha256),
        )
        .unwrap();
        assert_eq!(
            sd.display(
                &sd.make_fixed_output_path(
                    IngestionMethod::Recursive,
                    &nar_sha256,
                    "file-plain.txt",
                    &none,
                    false
                )
                .unwrap()
            ),
            "/nix/store/x9s403hxcd92h9iciyvqnsxd0g35zwk9-file-plain.txt"
        );
        let nar_sha1 = Hash::parse_any(
            "f243d3303f9ea2b237ece07b0beb3483d2be1d19",
            Some(HashAlgo::Sha1),
        )
        .unwrap();
        assert_eq!(
            sd.display(
                &sd.make_fixed_output_path(
                    IngestionMethod::Recursive,
                    &nar_sha1,
                    "file-plain.txt",
                    &none,
                    false
                )
                .unwrap()
            ),
            "/nix/store/1c6qlxppfyzjvhklc8sw8aciddq2ln0z-file-plain.txt"
        );
    }

    #[test]
    fn text_path_matches_nix() {
        // builtins.toFile "builder.sh" "echo built-by-tofile > $out\n" (goldens/rich.json)
        let sd = nix_store();
        let p = sd
            .compute_text_path(
                "builder.sh",
                b"echo built-by-tofile > $out\n",
                &BTreeSet::new(),
            )
            .unwrap();
        assert_eq!(
            sd.display(&p),
            "/nix/store/y1hqaydxlirj9vld6f60xpy0n5pk5h0j-builder.sh"
        );
    }

    #[test]
    fn content_addresses() {
        for s in [
            "fixed:r:sha256:15nf37yrnfx8pi5h0wli2hf8v8hhhsm0y5i2mdmg8f7inn564jx8",
            "fixed:sha256:02bavd8zw6rfxkzmv7n4z6inp3l53k0pl29gqq7jwhhnbj0b8c8f",
            "fixed:r:sha1:34fvxll36kmhnyz0xhvv58ly7wqd6hzj",
        ] {
            assert_eq!(ContentAddress::parse(s).unwrap().to_string(), s);
        }
        let text = ContentAddress::Text(hash_bytes(HashAlgo::Sha256, b"x"));
        assert_eq!(ContentAddress::parse(&text.to_string()).unwrap(), text);
        assert!(ContentAddress::parse("text:sha1:34fvxll36kmhnyz0xhvv58ly7wqd6hzj").is_err());
        assert!(ContentAddress::parse("blob:sha256:x").is_err());
        assert!(ContentAddress::parse("fixed:sha256").is_err());
    }
}
