//! `.narinfo` files and `nix-cache-info`: the text files of a binary cache.
//!
//! A narinfo describes one store path: where its (compressed) NAR is, its NAR hash and size,
//! references, deriver, signatures and content address, one `Key: value` line each.
//! [`NarInfo::parse`] reads what Nix 2.8 reads (hashes in any form Nix accepts, a missing
//! `Compression` meaning bzip2, unknown keys ignored, `Deriver: unknown-deriver` meaning none)
//! and [`NarInfo::to_text`] writes Nix's field order and forms, so a narinfo we write is
//! byte-identical to the one Nix writes for the same data. References and the deriver are base
//! names; `StorePath` is a full path, read against the cache's [`StoreDir`].
//!
//! Where Nix's reader would silently misread a malformed file (a line without `: `, a last
//! line without a newline) this one reports the line instead.

use std::collections::BTreeSet;

use thiserror::Error;

use super::hash::{Hash, HashError};
use super::signature::{FingerprintError, PublicKeys, SecretKey, VerifyError, fingerprint};
use super::store_path::{ContentAddress, ContentAddressError, StoreDir, StorePath, StorePathError};

/// The compression Nix assumes when a narinfo names none.
pub const DEFAULT_COMPRESSION: &str = "bzip2";
/// The `Deriver` value that means "no deriver".
pub const UNKNOWN_DERIVER: &str = "unknown-deriver";

/// A narinfo that cannot be read; line numbers count from 1.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NarInfoError {
    #[error("narinfo line {line}: expected 'Key: value', got '{text}'")]
    BadLine { line: usize, text: String },
    #[error("narinfo line {line}: the file ends without a newline")]
    MissingNewline { line: usize },
    #[error("narinfo line {line}: {field}: {source}")]
    BadHash {
        line: usize,
        field: &'static str,
        source: HashError,
    },
    #[error("narinfo line {line}: {field}: {source}")]
    BadStorePath {
        line: usize,
        field: &'static str,
        source: StorePathError,
    },
    #[error("narinfo line {line}: {field}: '{value}' is not an unsigned 64-bit integer")]
    BadInteger {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("narinfo line {line}: CA: {source}")]
    BadContentAddress {
        line: usize,
        source: ContentAddressError,
    },
    #[error("narinfo line {line}: a second {field} field")]
    Duplicate { line: usize, field: &'static str },
    #[error("narinfo has no {0} field")]
    Missing(&'static str),
    #[error("narinfo has an empty URL")]
    EmptyUrl,
    #[error("narinfo has NarSize 0")]
    ZeroNarSize,
}

/// One store path as a binary cache describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Where the NAR file is, relative to the cache (`nar/<file hash>.nar.xz`).
    pub url: String,
    /// `xz`, `bzip2`, `zstd`, `br`, `gzip`, `none`, …; never empty.
    pub compression: String,
    /// Hash of the file at `url`; Nix always writes it (sha256).
    pub file_hash: Option<Hash>,
    /// Size of the file at `url`; Nix always writes it.
    pub file_size: Option<u64>,
    pub nar_hash: Hash,
    /// Never 0 in a narinfo (0 means unknown).
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    /// The obsolete `System` field, kept so that it survives a round trip.
    pub system: Option<String>,
    /// Signature texts `<key name>:<base64>`, unchecked; sorted and without duplicates, as
    /// Nix keeps them.
    pub sigs: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
}

impl NarInfo {
    /// Reads a narinfo whose `StorePath` must lie in `store_dir`.
    pub fn parse(store_dir: &StoreDir, text: &str) -> Result<NarInfo, NarInfoError> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = BTreeSet::new();
        let mut deriver = None;
        let mut system = None;
        let mut sigs = BTreeSet::new();
        let mut ca = None;

        let mut rest = text;
        let mut line = 0;
        while !rest.is_empty() {
            line += 1;
            let (current, after) = rest
                .split_once('\n')
                .ok_or(NarInfoError::MissingNewline { line })?;
            rest = after;
            let (key, value) = current
                .split_once(':')
                .and_then(|(key, value)| Some((key, value.strip_prefix(' ')?)))
                .ok_or_else(|| NarInfoError::BadLine {
                    line,
                    text: current.to_owned(),
                })?;
            let hash = |field| {
                Hash::parse_prefixed(value).map_err(|source| NarInfoError::BadHash {
                    line,
                    field,
                    source,
                })
            };
            let integer = |field| {
                value.parse::<u64>().map_err(|_| NarInfoError::BadInteger {
                    line,
                    field,
                    value: value.to_owned(),
                })
            };
            let path_error = |field, source| NarInfoError::BadStorePath {
                line,
                field,
                source,
            };
            let base_name = |field, base: &str| {
                StorePath::from_base_name(base).map_err(|e| path_error(field, e))
            };
            match key {
                "StorePath" => {
                    let path = store_dir
                        .parse(value)
                        .map_err(|source| path_error("StorePath", source))?;
                    store_path = Some(path);
                }
                "URL" => url = Some(value),
                "Compression" => compression = Some(value),
                "FileHash" => file_hash = Some(hash("FileHash")?),
                "FileSize" => file_size = Some(integer("FileSize")?),
                "NarHash" => nar_hash = Some(hash("NarHash")?),
                "NarSize" => nar_size = Some(integer("NarSize")?),
                "References" => {
                    // Nix refuses a References line only when an earlier one named paths.
                    if !references.is_empty() {
                        return Err(NarInfoError::Duplicate {
                            line,
                            field: "References",
                        });
                    }
                    for base in value.split(' ').filter(|b| !b.is_empty()) {
                        references.insert(base_name("References", base)?);
                    }
                }
                "Deriver" => {
                    deriver = if value == UNKNOWN_DERIVER {
                        None
                    } else {
                        Some(base_name("Deriver", value)?)
                    }
                }
                "System" => system = Some(value),
                "Sig" => {
                    sigs.insert(value.to_owned());
                }
                "CA" => {
                    if ca.is_some() {
                        return Err(NarInfoError::Duplicate { line, field: "CA" });
                    }
                    // An empty CA means none, and a later CA line may still set one.
                    if !value.is_empty() {
                        let parsed = ContentAddress::parse(value)
                            .map_err(|source| NarInfoError::BadContentAddress { line, source })?;
                        ca = Some(parsed);
                    }
                }
                _ => {}
            }
        }

        let store_path = store_path.ok_or(NarInfoError::Missing("StorePath"))?;
        let url = url.ok_or(NarInfoError::Missing("URL"))?;
        if url.is_empty() {
            return Err(NarInfoError::EmptyUrl);
        }
        let nar_hash = nar_hash.ok_or(NarInfoError::Missing("NarHash"))?;
        let nar_size = nar_size.ok_or(NarInfoError::Missing("NarSize"))?;
        if nar_size == 0 {
            return Err(NarInfoError::ZeroNarSize);
        }
        Ok(NarInfo {
            store_path,
            url: url.to_owned(),
            compression: match compression {
                None | Some("") => DEFAULT_COMPRESSION.to_owned(),
                Some(c) => c.to_owned(),
            },
            file_hash,
            file_size,
            nar_hash,
            nar_size,
            references,
            deriver,
            system: system.filter(|s| !s.is_empty()).map(str::to_owned),
            sigs,
            ca,
        })
    }

    /// The narinfo text, in Nix's field order and forms (hashes as `algo:base32`). The
    /// `FileHash` and `FileSize` lines are left out when unknown; `References` is always
    /// written, with a trailing space when there are none, as Nix does.
    pub fn to_text(&self, store_dir: &StoreDir) -> String {
        let mut s = String::with_capacity(512);
        let mut field = |key: &str, value: &str| {
            s.push_str(key);
            s.push_str(": ");
            s.push_str(value);
            s.push('\n');
        };
        field("StorePath", &store_dir.display(&self.store_path));
        field("URL", &self.url);
        field("Compression", &self.compression);
        if let Some(h) = &self.file_hash {
            field("FileHash", &h.to_nix32_prefixed());
        }
        if let Some(n) = self.file_size {
            field("FileSize", &n.to_string());
        }
        field("NarHash", &self.nar_hash.to_nix32_prefixed());
        field("NarSize", &self.nar_size.to_string());
        let references: Vec<String> = self.references.iter().map(StorePath::base_name).collect();
        field("References", &references.join(" "));
        if let Some(d) = &self.deriver {
            field("Deriver", &d.base_name());
        }
        if let Some(system) = &self.system {
            field("System", system);
        }
        for sig in &self.sigs {
            field("Sig", sig);
        }
        if let Some(ca) = &self.ca {
            field("CA", &ca.to_string());
        }
        s
    }

    /// The text a signature of this path signs ([`fingerprint`]).
    pub fn fingerprint(&self, store_dir: &StoreDir) -> Result<String, FingerprintError> {
        fingerprint(
            store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Adds a signature by `key` (Nix's `ValidPathInfo::sign`).
    pub fn sign(&mut self, store_dir: &StoreDir, key: &SecretKey) -> Result<(), FingerprintError> {
        let fp = self.fingerprint(store_dir)?;
        self.sigs.insert(key.sign(fp.as_bytes()).to_string());
        Ok(())
    }

    /// Whether the signature text `sig` is valid for this path by one of `keys`.
    pub fn check_signature(
        &self,
        store_dir: &StoreDir,
        keys: &PublicKeys,
        sig: &str,
    ) -> Result<bool, VerifyError> {
        let fp = self.fingerprint(store_dir)?;
        Ok(keys.verify(fp.as_bytes(), sig)?)
    }

    /// How many of the signatures are valid by one of `keys`.
    pub fn count_valid_signatures(
        &self,
        store_dir: &StoreDir,
        keys: &PublicKeys,
    ) -> Result<usize, VerifyError> {
        let fp = self.fingerprint(store_dir)?;
        let mut good = 0;
        for sig in &self.sigs {
            if keys.verify(fp.as_bytes(), sig)? {
                good += 1;
            }
        }
        Ok(good)
    }

    /// Nix's `checkSignatures`: the number of valid signatures, or `usize::MAX` when the path
    /// is content-addressed (its path proves its contents, no signature needed).
    pub fn check_signatures(
        &self,
        store_dir: &StoreDir,
        keys: &PublicKeys,
    ) -> Result<usize, VerifyError> {
        if self.is_content_addressed(store_dir) {
            Ok(usize::MAX)
        } else {
            self.count_valid_signatures(store_dir, keys)
        }
    }

    /// Whether the content address, if any, really gives this store path (with a
    /// self-reference counted as such).
    pub fn is_content_addressed(&self, store_dir: &StoreDir) -> bool {
        let Some(ca) = &self.ca else {
            return false;
        };
        let computed = match ca {
            ContentAddress::Text(hash) => {
                store_dir.make_text_path(self.store_path.name(), hash, &self.references)
            }
            ContentAddress::Fixed { method, hash } => {
                let mut others = self.references.clone();
                let self_reference = others.remove(&self.store_path);
                store_dir.make_fixed_output_path(
                    *method,
                    hash,
                    self.store_path.name(),
                    &others,
                    self_reference,
                )
            }
        };
        computed.is_ok_and(|p| p == self.store_path)
    }
}

/// The narinfo file of a store path in a cache: `<hash part>.narinfo`.
pub fn narinfo_file_name(path: &StorePath) -> String {
    format!("{}.narinfo", path.hash_part())
}

/// Where Nix puts a NAR in a cache: `nar/<file hash base32>.nar` plus the compression's
/// extension (none for `none`, `gzip` and names Nix does not know).
pub fn nar_url(file_hash: &Hash, compression: &str) -> String {
    let extension = match compression {
        "xz" => ".xz",
        "bzip2" => ".bz2",
        "zstd" => ".zst",
        "lzip" => ".lzip",
        "lz4" => ".lz4",
        "br" => ".br",
        _ => "",
    };
    format!("nar/{}.nar{extension}", file_hash.to_base32())
}

/// A `nix-cache-info` value that cannot be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CacheInfoError {
    #[error("nix-cache-info line {line}: Priority '{value}' is not an integer")]
    BadPriority { line: usize, value: String },
    #[error("binary cache is for Nix stores with prefix '{cache}', not '{ours}'")]
    StoreDirMismatch { cache: String, ours: String },
}

/// `nix-cache-info`, the file at the root of a binary cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NixCacheInfo {
    pub store_dir: Option<String>,
    pub want_mass_query: Option<bool>,
    pub priority: Option<i32>,
}

impl NixCacheInfo {
    /// What Nix writes into a new cache: only the store dir.
    pub fn new(store_dir: &StoreDir) -> NixCacheInfo {
        NixCacheInfo {
            store_dir: Some(store_dir.as_str().to_owned()),
            ..NixCacheInfo::default()
        }
    }

    /// Reads it as Nix does: lines without `:` are skipped, values are trimmed, later lines
    /// win, `WantMassQuery` is true only for `1`, `Priority` is read like C's `stoi` (leading
    /// blanks, a sign and digits; anything after the digits is ignored).
    pub fn parse(text: &str) -> Result<NixCacheInfo, CacheInfoError> {
        let mut info = NixCacheInfo::default();
        for (index, line) in text.split('\n').enumerate() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_matches([' ', '\t', '\n', '\r']);
            match key {
                "StoreDir" => info.store_dir = Some(value.to_owned()),
                "WantMassQuery" => info.want_mass_query = Some(value == "1"),
                "Priority" => {
                    let priority =
                        parse_c_int(value).ok_or_else(|| CacheInfoError::BadPriority {
                            line: index + 1,
                            value: value.to_owned(),
                        })?;
                    info.priority = Some(priority);
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// `StoreDir`, `WantMassQuery` and `Priority` lines for the fields that are set.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(dir) = &self.store_dir {
            s.push_str(&format!("StoreDir: {dir}\n"));
        }
        if let Some(want) = self.want_mass_query {
            s.push_str(&format!("WantMassQuery: {}\n", u8::from(want)));
        }
        if let Some(priority) = self.priority {
            s.push_str(&format!("Priority: {priority}\n"));
        }
        s
    }

    /// Nix refuses a cache made for another store dir; a cache that names none is fine.
    pub fn check_store_dir(&self, ours: &StoreDir) -> Result<(), CacheInfoError> {
        match &self.store_dir {
            Some(dir) if dir != ours.as_str() => Err(CacheInfoError::StoreDirMismatch {
                cache: dir.clone(),
                ours: ours.as_str().to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// C's `stoi`: optional leading white space, an optional sign, at least one digit; the rest is
/// ignored. `None` without digits or outside `i32`.
fn parse_c_int(s: &str) -> Option<i32> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let sign_len = usize::from(s.starts_with(['+', '-']));
    let digits = s[sign_len..].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    s[..sign_len + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::hash::sha256;
    use crate::engine::format::store_path::IngestionMethod;

    const SAMPLE: &str = "StorePath: /nix/store/b04xkqsqq333k38irjgllh17kbhg9yap-fod1
URL: nar/057r8xk9lvsxcdkd2xk2yn88yp6rphf806giby6iy6n4lmabs61y.nar.xz
Compression: xz
FileHash: sha256:057r8xk9lvsxcdkd2xk2yn88yp6rphf806giby6iy6n4lmabs61y
FileSize: 252
NarHash: sha256:0j063h7p52b0xk57cndaifcimb6pg5pbpqx5k92dqn48xp2j2g21
NarSize: 896
References: 
Deriver: xsndzjkn9mpg02lan0i3gg065h0lwpvj-fod1.drv
CA: fixed:r:sha256:0j063h7p52b0xk57cndaifcimb6pg5pbpqx5k92dqn48xp2j2g21
";

    fn sd() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        NarInfo::parse(&sd(), text)
    }

    fn without(key: &str) -> String {
        SAMPLE
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn replace(key: &str, value: &str) -> String {
        SAMPLE
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key}:")) {
                    format!("{key}: {value}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    }

    #[test]
    fn parses_every_field() {
        let info = parse(SAMPLE).unwrap();
        assert_eq!(
            info.store_path.base_name(),
            "b04xkqsqq333k38irjgllh17kbhg9yap-fod1"
        );
        assert_eq!(info.compression, "xz");
        assert_eq!(info.file_size, Some(252));
        assert_eq!(info.nar_size, 896);
        assert!(info.references.is_empty());
        assert_eq!(
            info.deriver.as_ref().map(StorePath::base_name).as_deref(),
            Some("xsndzjkn9mpg02lan0i3gg065h0lwpvj-fod1.drv")
        );
        assert!(matches!(
            info.ca,
            Some(ContentAddress::Fixed {
                method: IngestionMethod::Recursive,
                ..
            })
        ));
        assert_eq!(info.to_text(&sd()), SAMPLE);
    }

    #[test]
    fn fixed_output_sample_is_content_addressed() {
        let info = parse(SAMPLE).unwrap();
        assert!(info.is_content_addressed(&sd()));
        assert_eq!(
            info.check_signatures(&sd(), &PublicKeys::new()),
            Ok(usize::MAX)
        );
        assert_eq!(
            info.count_valid_signatures(&sd(), &PublicKeys::new()),
            Ok(0)
        );
        let mut wrong = info.clone();
        wrong.ca = Some(ContentAddress::Fixed {
            method: IngestionMethod::Flat,
            hash: info.nar_hash,
        });
        assert!(!wrong.is_content_addressed(&sd()));
        assert_eq!(wrong.check_signatures(&sd(), &PublicKeys::new()), Ok(0));
    }

    #[test]
    fn missing_compression_means_bzip2() {
        assert_eq!(parse(&without("Compression")).unwrap().compression, "bzip2");
        assert_eq!(
            parse(&replace("Compression", "")).unwrap().compression,
            "bzip2"
        );
    }

    #[test]
    fn unknown_deriver_means_none() {
        let info = parse(&replace("Deriver", "unknown-deriver")).unwrap();
        assert_eq!(info.deriver, None);
        assert!(!info.to_text(&sd()).contains("Deriver"));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let text = format!("{SAMPLE}Future: something: else\n: nameless\n");
        assert_eq!(parse(&text).unwrap(), parse(SAMPLE).unwrap());
    }

    #[test]
    fn hashes_in_every_form_nix_accepts() {
        let nar_hash = parse(SAMPLE).unwrap().nar_hash;
        for form in [nar_hash.to_base16_prefixed(), nar_hash.to_sri()] {
            let info = parse(&replace("NarHash", &form)).unwrap();
            assert_eq!(info.nar_hash, nar_hash);
            // Printed back the way Nix prints it.
            assert_eq!(info.to_text(&sd()), SAMPLE);
        }
        assert!(matches!(
            parse(&replace("NarHash", &nar_hash.to_base32())),
            Err(NarInfoError::BadHash {
                line: 6,
                field: "NarHash",
                source: HashError::MissingAlgo(_)
            })
        ));
        assert!(matches!(
            parse(&replace("FileHash", "sha256:zzz")),
            Err(NarInfoError::BadHash {
                line: 4,
                field: "FileHash",
                ..
            })
        ));
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["StorePath", "URL", "NarHash", "NarSize"] {
            assert_eq!(parse(&without(field)), Err(NarInfoError::Missing(field)));
        }
        assert_eq!(parse(""), Err(NarInfoError::Missing("StorePath")));
        assert_eq!(parse(&replace("URL", "")), Err(NarInfoError::EmptyUrl));
        assert_eq!(
            parse(&replace("NarSize", "0")),
            Err(NarInfoError::ZeroNarSize)
        );
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let info = parse(&without("FileHash")).unwrap();
        assert_eq!(info.file_hash, None);
        assert_eq!(info.to_text(&sd()), without("FileHash"));
        let info = parse(&without("FileSize")).unwrap();
        assert_eq!(info.file_size, None);
        assert_eq!(parse(&without("CA")).unwrap().ca, None);
        assert_eq!(parse(&without("References")).unwrap().references.len(), 0);
    }

    #[test]
    fn line_that_is_not_key_value() {
        let text = SAMPLE.replace("Compression: xz\n", "Compression xz\n");
        assert_eq!(
            parse(&text),
            Err(NarInfoError::BadLine {
                line: 3,
                text: "Compression xz".into()
            })
        );
        let text = SAMPLE.replace("Compression: xz\n", "Compression:xz\n");
        assert!(matches!(
            parse(&text),
            Err(NarInfoError::BadLine { line: 3, .. })
        ));
        let text = SAMPLE.replace("Compression: xz\n", "\n");
        assert!(matches!(
            parse(&text),
            Err(NarInfoError::BadLine { line: 3, .. })
        ));
        let msg = parse("junk\n").unwrap_err().to_string();
        assert_eq!(msg, "narinfo line 1: expected 'Key: value', got 'junk'");
    }

    #[test]
    fn last_line_needs_its_newline() {
        let text = SAMPLE.trim_end_matches('\n');
        assert_eq!(parse(text), Err(NarInfoError::MissingNewline { line: 10 }));
    }

    #[test]
    fn bad_integers() {
        for bad in ["-1", "x", "", " 1", "18446744073709551616"] {
            assert_eq!(
                parse(&replace("NarSize", bad)),
                Err(NarInfoError::BadInteger {
                    line: 7,
                    field: "NarSize",
                    value: bad.into()
                })
            );
        }
        assert!(matches!(
            parse(&replace("FileSize", "1e3")),
            Err(NarInfoError::BadInteger {
                line: 5,
                field: "FileSize",
                ..
            })
        ));
    }

    #[test]
    fn bad_store_paths() {
        assert!(matches!(
            parse(&replace(
                "StorePath",
                "/gnu/store/b04xkqsqq333k38irjgllh17kbhg9yap-fod1"
            )),
            Err(NarInfoError::BadStorePath {
                line: 1,
                field: "StorePath",
                source: StorePathError::NotInStore(_)
            })
        ));
        assert!(matches!(
            parse(&replace(
                "References",
                "b04xkqsqq333k38irjgllh17kbhg9yap-a short"
            )),
            Err(NarInfoError::BadStorePath {
                line: 8,
                field: "References",
                source: StorePathError::TooShort(_)
            })
        ));
        assert!(matches!(
            parse(&replace("Deriver", "")),
            Err(NarInfoError::BadStorePath {
                line: 9,
                field: "Deriver",
                ..
            })
        ));
    }

    #[test]
    fn bad_content_address() {
        assert!(matches!(
            parse(&replace("CA", "sideways:sha256:abc")),
            Err(NarInfoError::BadContentAddress { line: 10, .. })
        ));
        // An empty CA is no CA.
        assert_eq!(parse(&replace("CA", "")).unwrap().ca, None);
    }

    #[test]
    fn duplicates_as_nix_treats_them() {
        let twice_ca = format!("{SAMPLE}CA: text:sha256:{}\n", sha256(b"").to_base32());
        assert_eq!(
            parse(&twice_ca),
            Err(NarInfoError::Duplicate {
                line: 11,
                field: "CA"
            })
        );
        let refs = "References: b04xkqsqq333k38irjgllh17kbhg9yap-fod1\n";
        let twice_refs = format!("{SAMPLE}{refs}{refs}");
        assert_eq!(
            parse(&twice_refs),
            Err(NarInfoError::Duplicate {
                line: 12,
                field: "References"
            })
        );
        // An empty References line before a full one is fine, and later scalars win.
        let later = format!("{SAMPLE}{refs}Compression: zstd\n");
        let info = parse(&later).unwrap();
        assert_eq!(info.references.len(), 1);
        assert_eq!(info.compression, "zstd");
    }

    #[test]
    fn sigs_are_a_sorted_set_and_system_survives() {
        let text = format!("{SAMPLE}Sig: b:2\nSig: a:1\nSig: b:2\nSystem: x86_64-linux\n");
        let info = parse(&text).unwrap();
        assert_eq!(info.sigs.iter().collect::<Vec<_>>(), ["a:1", "b:2"]);
        let printed = info.to_text(&sd());
        assert!(printed.ends_with(
            "Deriver: xsndzjkn9mpg02lan0i3gg065h0lwpvj-fod1.drv\nSystem: x86_64-linux\n\
             Sig: a:1\nSig: b:2\nCA: fixed:r:sha256:0j063h7p52b0xk57cndaifcimb6pg5pbpqx5k92dqn48xp2j2g21\n"
        ));
        assert_eq!(parse(&printed).unwrap(), info);
    }

    #[test]
    fn references_tolerate_extra_spaces() {
        let info = parse(&replace(
            "References",
            " b04xkqsqq333k38irjgllh17kbhg9yap-fod1  b04xkqsqq333k38irjgllh17kbhg9yap-fod1 ",
        ))
        .unwrap();
        assert_eq!(info.references.len(), 1);
    }

    #[test]
    fn relocated_store_dir() {
        let other = StoreDir::new("/tmp/x/store").unwrap();
        let text = SAMPLE.replace("/nix/store/", "/tmp/x/store/");
        let info = NarInfo::parse(&other, &text).unwrap();
        assert_eq!(info.to_text(&other), text);
        assert!(NarInfo::parse(&sd(), &text).is_err());
    }

    #[test]
    fn file_names_and_urls() {
        let info = parse(SAMPLE).unwrap();
        assert_eq!(
            narinfo_file_name(&info.store_path),
            "b04xkqsqq333k38irjgllh17kbhg9yap.narinfo"
        );
        let fh = info.file_hash.unwrap();
        assert_eq!(nar_url(&fh, "xz"), info.url);
        assert_eq!(
            nar_url(&fh, "gzip"),
            "nar/057r8xk9lvsxcdkd2xk2yn88yp6rphf806giby6iy6n4lmabs61y.nar"
        );
        assert!(nar_url(&fh, "zstd").ends_with(".nar.zst"));
    }

    #[test]
    fn cache_info_as_nix_writes_and_reads_it() {
        let info = NixCacheInfo::new(&sd());
        assert_eq!(info.to_text(), "StoreDir: /nix/store\n");
        assert_eq!(NixCacheInfo::parse(&info.to_text()), Ok(info));
        let text = "StoreDir:  /nix/store \r\nWantMassQuery: 1\nPriority: 40\njunk\n\n";
        let info = NixCacheInfo::parse(text).unwrap();
        assert_eq!(info.store_dir.as_deref(), Some("/nix/store"));
        assert_eq!(info.want_mass_query, Some(true));
        assert_eq!(info.priority, Some(40));
        assert_eq!(
            info.to_text(),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
        );
        assert!(info.check_store_dir(&sd()).is_ok());
        assert_eq!(
            info.check_store_dir(&StoreDir::new("/gnu/store").unwrap())
                .unwrap_err()
                .to_string(),
            "binary cache is for Nix stores with prefix '/nix/store', not '/gnu/store'"
        );
        let info = NixCacheInfo::parse("WantMassQuery: true\nPriority: -5x\n").unwrap();
        assert_eq!(info.want_mass_query, Some(false));
        assert_eq!(info.priority, Some(-5));
        assert_eq!(
            NixCacheInfo::parse("Priority: high\n"),
            Err(CacheInfoError::BadPriority {
                line: 1,
                value: "high".into()
            })
        );
        assert!(NixCacheInfo::parse("Priority: 99999999999\n").is_err());
    }
}
