//! Where a store lives, in the forms Nix accepts for `--store`.
//!
//! A local store is four locations: the logical store dir that every store path (and every
//! hash) names, the physical directory holding the files, the state dir (database, locks,
//! temp roots) and the log dir. `local` is the real `/nix`; a plain path or `local?root=R` is a
//! chroot store (logical `/nix/store`, physical `R/nix/store`); `local?store=…&state=…&log=…`
//! relocates each part. Without `--store`, drover uses a chroot store of its own under
//! `$XDG_DATA_HOME/drover`, so trying drover never touches a system `/nix`.

use std::path::{Path, PathBuf};

use crate::engine::format::StoreDir;

use super::StoreError;

/// The default logical store dir, as Nix's.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The logical store directory (part of every store path).
    pub store_dir: StoreDir,
    /// Where the store's files physically are.
    pub real_store_dir: PathBuf,
    /// Database, locks, temp roots, GC roots.
    pub state_dir: PathBuf,
    /// Build logs.
    pub log_dir: PathBuf,
}

/// Environment overrides in the manner of Nix's `NIX_STORE_DIR`, `NIX_STATE_DIR` and
/// `NIX_LOG_DIR` (they apply to `local`, as in Nix).
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    pub store_dir: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    /// `$XDG_DATA_HOME`, or `~/.local/share` when unset.
    pub data_home: Option<PathBuf>,
}

impl EnvOverrides {
    /// Reads the process environment.
    pub fn from_env() -> EnvOverrides {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let data_home = var("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".local/share")));
        EnvOverrides {
            store_dir: var("NIX_STORE_DIR").map(|v| v.to_string_lossy().into_owned()),
            state_dir: var("NIX_STATE_DIR").map(PathBuf::from),
            log_dir: var("NIX_LOG_DIR").map(PathBuf::from),
            data_home,
        }
    }
}

impl StoreConfig {
    /// A chroot store under `root`: logical `/nix/store`, files in `root/nix/store`.
    pub fn chroot(root: &Path) -> StoreConfig {
        StoreConfig {
            store_dir: StoreDir::new(DEFAULT_STORE_DIR).expect("the default store dir is valid"),
            real_store_dir: root.join("nix/store"),
            state_dir: root.join("nix/var/nix"),
            log_dir: root.join("nix/var/log/nix"),
        }
    }

    /// drover's own store when no `--store` is given: a chroot store in `<data home>/drover`.
    pub fn drover_default(env: &EnvOverrides) -> Result<StoreConfig, StoreError> {
        let data_home = env
            .data_home
            .as_ref()
            .ok_or_else(|| StoreError::BadStoreUri {
                uri: String::new(),
                reason: "neither XDG_DATA_HOME nor HOME is set; pass --store".into(),
            })?;
        Ok(StoreConfig::chroot(&data_home.join("drover")))
    }

    /// Parses a `--store` value; `None` gives drover's default store.
    pub fn parse(uri: Option<&str>, env: &EnvOverrides) -> Result<StoreConfig, StoreError> {
        let Some(uri) = uri else {
            return StoreConfig::drover_default(env);
        };
        let bad = |reason: &str| StoreError::BadStoreUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        if uri.starts_with('/') {
            return Ok(StoreConfig::chroot(Path::new(uri)));
        }
        let (scheme, query) = match uri.split_once('?') {
            Some((s, q)) => (s, Some(q)),
            None => (uri, None),
        };
        if scheme != "local" {
            return Err(bad(
                "only local stores are supported: 'local', a directory, or 'local?root=…'",
            ));
        }
        let mut root = None;
        let mut store = None;
        let mut real = None;
        let mut state = None;
        let mut log = None;
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            let (k, v) = param.split_once('=').ok_or_else(|| {
                bad(&format!(
                    "parameter '{param}' is not of the form name=value"
                ))
            })?;
            if !v.starts_with('/') {
                return Err(bad(&format!("'{k}' must be an absolute path")));
            }
            let slot = match k {
                "root" => &mut root,
                "store" => &mut store,
                "real" => &mut real,
                "state" => &mut state,
                "log" => &mut log,
                _ => return Err(bad(&format!("unknown store parameter '{k}'"))),
            };
            *slot = Some(v.to_owned());
        }
        let base = match &root {
            Some(r) => StoreConfig::chroot(Path::new(r)),
            None => StoreConfig {
                store_dir: StoreDir::new(
                    env.store_dir.clone().unwrap_or(DEFAULT_STORE_DIR.into()),
                )?,
                real_store_dir: PathBuf::from(
                    env.store_dir.as_deref().unwrap_or(DEFAULT_STORE_DIR),
                ),
                state_dir: env
                    .state_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/nix/var/nix")),
                log_dir: env
                    .log_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/nix/var/log/nix")),
            },
        };
        let store_dir = match store {
            Some(s) => StoreDir::new(s)?,
            None => base.store_dir,
        };
        // Without a root, the files are where the logical dir says unless `real` moves them.
        let real_store_dir = match (real, &root) {
            (Some(r), _) => PathBuf::from(r),
            (None, Some(_)) => base.real_store_dir,
            (None, None) => PathBuf::from(store_dir.as_str()),
        };
        Ok(StoreConfig {
            store_dir,
            real_store_dir,
            state_dir: state.map(PathBuf::from).unwrap_or(base.state_dir),
            log_dir: log.map(PathBuf::from).unwrap_or(base.log_dir),
        })
    }

    /// Whether the files are somewhere else than the logical store dir says (a chroot store);
    /// builders then need the sandbox to see the store where paths say it is.
    pub fn is_diverted(&self) -> bool {
        Path::new(self.store_dir.as_str()) != self.real_store_dir
    }

    pub fn db_dir(&self) -> PathBuf {
        self.state_dir.join("db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvOverrides {
        EnvOverrides {
            data_home: Some(PathBuf::from("/home/u/.local/share")),
            ..Default::default()
        }
    }

    #[test]
    fn forms_of_store_uris() {
        let c = StoreConfig::parse(Some("local"), &env()).unwrap();
        assert_eq!(c.store_dir.as_str(), "/nix/store");
        assert_eq!(c.real_store_dir, Path::new("/nix/store"));
        assert_eq!(c.state_dir, Path::new("/nix/var/nix"));
        assert_eq!(c.log_dir, Path::new("/nix/var/log/nix"));
        assert!(!c.is_diverted());

        let c = StoreConfig::parse(Some("/tmp/r"), &env()).unwrap();
        assert_eq!(
            c,
            StoreConfig::parse(Some("local?root=/tmp/r"), &env()).unwrap()
        );
        assert_eq!(c.store_dir.as_str(), "/nix/store");
        assert_eq!(c.real_store_dir, Path::new("/tmp/r/nix/store"));
        assert_eq!(c.state_dir, Path::new("/tmp/r/nix/var/nix"));
        assert_eq!(c.log_dir, Path::new("/tmp/r/nix/var/log/nix"));
        assert!(c.is_diverted());

        let c = StoreConfig::parse(
            Some("local?store=/tmp/x/store&state=/tmp/x/state&log=/tmp/x/log"),
            &env(),
        )
        .unwrap();
        assert_eq!(c.store_dir.as_str(), "/tmp/x/store");
        assert_eq!(c.real_store_dir, Path::new("/tmp/x/store"));
        assert_eq!(c.state_dir, Path::new("/tmp/x/state"));
        assert!(!c.is_diverted());

        let c = StoreConfig::parse(None, &env()).unwrap();
        assert_eq!(
            c.real_store_dir,
            Path::new("/home/u/.local/share/drover/nix/store")
        );
    }

    #[test]
    fn nix_env_overrides_apply_to_local() {
        let e = EnvOverrides {
            store_dir: Some("/t/store".into()),
            state_dir: Some("/t/state".into()),
            log_dir: Some("/t/log".into()),
            data_home: None,
        };
        let c = StoreConfig::parse(Some("local"), &e).unwrap();
        assert_eq!(c.store_dir.as_str(), "/t/store");
        assert_eq!(c.real_store_dir, Path::new("/t/store"));
        assert_eq!(c.state_dir, Path::new("/t/state"));
        assert_eq!(c.log_dir, Path::new("/t/log"));
        assert!(StoreConfig::parse(None, &e).is_err());
    }

    #[test]
    fn bad_uris_say_why() {
        for uri in ["daemon", "local?root=rel", "local?foo=/x", "local?root"] {
            let e = StoreConfig::parse(Some(uri), &env()).unwrap_err();
            assert!(e.to_string().contains(uri), "{e}");
        }
    }
}
