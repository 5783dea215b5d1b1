//! One binary cache as a substituter: its URI and parameters, its `nix-cache-info`, and reading
//! its narinfos and NAR files.
//!
//! A substituter URI is `file://DIR` or `http(s)://HOST/PATH`, optionally followed by
//! `?key=value&…` store parameters; the ones that matter for substituting are `priority`,
//! `want-mass-query` and `trusted` (paths from a trusted cache need no signature). Opening a
//! cache reads `nix-cache-info` as Nix does: the cache's `StoreDir` must be ours, and its
//! `Priority` and `WantMassQuery` apply unless the URI sets them. An HTTP cache without
//! `nix-cache-info` is not a binary cache; a local directory without it is an empty cache
//! (Nix would create it; a substituter is only read here).

use std::collections::BTreeMap;
use std::io::Read;

use crate::engine::format::narinfo::narinfo_file_name;
use crate::engine::format::{NarInfo, NixCacheInfo, StoreDir, StorePath};

use super::file::FileTransport;
use super::http::{HttpOptions, HttpTransport};
use super::{FetchError, Logger, SubstituteError};

/// Largest narinfo or `nix-cache-info` accepted (a narinfo of a path with 10,000 references is
/// under 1 MiB).
const MAX_TEXT_FILE: u64 = 16 << 20;

/// A store URI split into its scheme, location and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUri {
    /// `file`, `http` or `https`.
    pub scheme: String,
    /// The directory for `file`, `host/path` otherwise.
    pub location: String,
    pub params: BTreeMap<String, String>,
}

impl StoreUri {
    /// Splits `scheme://location?k=v&k2=v2`, decoding `%XX` in the parameters.
    pub fn parse(uri: &str) -> Result<StoreUri, SubstituteError> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| SubstituteError::UnsupportedUri(uri.to_owned()))?;
        if !matches!(scheme, "file" | "http" | "https") {
            return Err(SubstituteError::UnsupportedUri(uri.to_owned()));
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        if location.is_empty() {
            return Err(SubstituteError::UnsupportedUri(uri.to_owned()));
        }
        let mut params = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(percent_decode(k), percent_decode(v));
        }
        Ok(StoreUri {
            scheme: scheme.to_owned(),
            location: location.to_owned(),
            params,
        })
    }

    /// The URI without its parameters, as Nix names the cache (`getUri`), without a
    /// trailing `/` for HTTP.
    pub fn base(&self) -> String {
        let location = if self.scheme == "file" {
            self.location.as_str()
        } else {
            self.location.trim_end_matches('/')
        };
        format!("{}://{location}", self.scheme)
    }

    /// A boolean parameter as Nix reads one (`true`/`1`, `false`/`0`).
    pub fn bool_param(&self, key: &str) -> Result<Option<bool>, SubstituteError> {
        match self.params.get(key).map(String::as_str) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(SubstituteError::BadParam {
                uri: self.base(),
                key: key.to_owned(),
                value: other.to_owned(),
            }),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a cache's files come from.
#[derive(Debug)]
pub enum Transport {
    File(FileTransport),
    Http(HttpTransport),
}

/// A compressed NAR being downloaded, with the size the server announced.
pub struct Download {
    pub reader: Box<dyn Read + Send>,
    pub length: Option<u64>,
}

/// One binary cache, opened.
#[derive(Debug)]
pub struct BinaryCache {
    uri: String,
    transport: Transport,
    priority: i32,
    want_mass_query: bool,
    trusted: bool,
}

impl BinaryCache {
    /// Opens the cache at `uri` for a store whose store dir is `store_dir`, reading its
    /// `nix-cache-info`.
    pub fn open(
        uri: &str,
        store_dir: &StoreDir,
        http: &HttpOptions,
        try_fallback: bool,
        log: Logger,
    ) -> Result<BinaryCache, SubstituteError> {
        let parsed = StoreUri::parse(uri)?;
        let base = parsed.base();
        let transport = match parsed.scheme.as_str() {
            "file" => Transport::File(FileTransport::new(&parsed.location)),
            _ => Transport::Http(HttpTransport::new(&base, http, try_fallback, log)),
        };
        let mut cache = BinaryCache {
            uri: base,
            transport,
            priority: 0,
            want_mass_query: false,
            trusted: parsed.bool_param("trusted")?.unwrap_or(false),
        };
        let info = match cache.read_text("nix-cache-info")? {
            Some(text) => {
                NixCacheInfo::parse(&text).map_err(|source| SubstituteError::CacheInfo {
                    uri: cache.uri.clone(),
                    source,
                })?
            }
            None if matches!(cache.transport, Transport::Http(_)) => {
                return Err(SubstituteError::NotABinaryCache(cache.uri));
            }
            None => NixCacheInfo::new(store_dir),
        };
        info.check_store_dir(store_dir)
            .map_err(|source| SubstituteError::CacheInfo {
                uri: cache.uri.clone(),
                source,
            })?;
        cache.priority = match parsed.params.get("priority") {
            Some(p) => p.trim().parse().map_err(|_| SubstituteError::BadParam {
                uri: cache.uri.clone(),
                key: "priority".into(),
                value: p.clone(),
            })?,
            None => info.priority.unwrap_or(0),
        };
        cache.want_mass_query = match parsed.bool_param("want-mass-query")? {
            Some(w) => w,
            None => info.want_mass_query.unwrap_or(false),
        };
        Ok(cache)
    }

    /// The cache's URI as Nix prints it (without parameters).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Lower is tried first.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    pub fn want_mass_query(&self) -> bool {
        self.want_mass_query
    }

    /// Paths from a trusted cache need no signature.
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// A small text file of the cache; `None` if absent.
    fn read_text(&self, name: &str) -> Result<Option<String>, SubstituteError> {
        let data = match &self.transport {
            Transport::File(t) => t.read(name)?,
            Transport::Http(t) => t.read(name, MAX_TEXT_FILE)?,
        };
        data.map(|bytes| {
            String::from_utf8(bytes).map_err(|_| SubstituteError::CorruptNarInfo {
                file: name.to_owned(),
                uri: self.uri.clone(),
                detail: "not UTF-8 text".into(),
            })
        })
        .transpose()
    }

    /// The narinfo the cache has for `path`'s hash part, unchecked against the name; `None`
    /// if it has none.
    pub fn fetch_narinfo(
        &self,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<Option<NarInfo>, SubstituteError> {
        let file = narinfo_file_name(path);
        let Some(text) = self.read_text(&file)? else {
            return Ok(None);
        };
        NarInfo::parse(store_dir, &text)
            .map(Some)
            .map_err(|e| SubstituteError::CorruptNarInfo {
                file,
                uri: self.uri.clone(),
                detail: e.to_string(),
            })
    }

    /// Starts downloading the file a narinfo's `URL` names; `None` if it is gone.
    pub fn open_file(&self, url: &str) -> Result<Option<Download>, FetchError> {
        Ok(match &self.transport {
            Transport::File(t) => t.open(url)?.map(|f| {
                let length = f.metadata().ok().map(|m| m.len());
                Download {
                    reader: Box::new(f),
                    length,
                }
            }),
            Transport::Http(t) => t
                .open(url)?
                .map(|(reader, length)| Download { reader, length }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    #[test]
    fn uris_split_into_scheme_location_and_params() {
        let u = StoreUri::parse("file:///tmp/cache?priority=10&compression=xz&secret-key=%2Fk")
            .unwrap();
        assert_eq!(u.scheme, "file");
        assert_eq!(u.location, "/tmp/cache");
        assert_eq!(u.params["priority"], "10");
        assert_eq!(u.params["secret-key"], "/k");
        assert_eq!(u.base(), "file:///tmp/cache");
        let h = StoreUri::parse("https://cache.example.org/").unwrap();
        assert_eq!(h.base(), "https://cache.example.org");
        for bad in [
            "daemon",
            "ssh://host",
            "s3://bucket",
            "/nix/store",
            "file://",
        ] {
            assert!(
                matches!(
                    StoreUri::parse(bad),
                    Err(SubstituteError::UnsupportedUri(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn cache_info_gives_priority_unless_the_uri_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nix-cache-info"),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
        )
        .unwrap();
        let uri = format!("file://{}", dir.path().display());
        let open =
            |u: &str| BinaryCache::open(u, &sd(), &HttpOptions::default(), false, Logger::none());
        let c = open(&uri).unwrap();
        assert_eq!(
            (c.priority(), c.want_mass_query(), c.trusted()),
            (30, true, false)
        );
        let c = open(&format!("{uri}?priority=5&want-mass-query=false&trusted=1")).unwrap();
        assert_eq!(
            (c.priority(), c.want_mass_query(), c.trusted()),
            (5, false, true)
        );
        assert!(matches!(
            open(&format!("{uri}?trusted=maybe")),
            Err(SubstituteError::BadParam { .. })
        ));
    }

    #[test]
    fn a_cache_for_another_store_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nix-cache-info"), "StoreDir: /gnu/store\n").unwrap();
        let err = BinaryCache::open(
            &format!("file://{}", dir.path().display()),
            &sd(),
            &HttpOptions::default(),
            false,
            Logger::none(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("is for Nix stores with prefix '/gnu/store', not '/nix/store'"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_without_cache_info_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let c = BinaryCache::open(
            &format!("file://{}", dir.path().join("none").display()),
            &sd(),
            &HttpOptions::default(),
            false,
            Logger::none(),
        )
        .unwrap();
        let p = StorePath::from_base_name("7rjj86a15146cq1d3qy068lml7n8ykzm-foo").unwrap();
        assert!(c.fetch_narinfo(&sd(), &p).unwrap().is_none());
    }
}
