//! Derivations: the build recipes Nix keeps in the store as `.drv` files.
//!
//! A derivation names its outputs, the derivations and sources it needs, and how to run its
//! builder (system, builder, arguments, environment). On disk it is an ATerm
//! ([`aterm`]); its store path is a `text` path of that ATerm with the input derivations and
//! sources as references. Output paths come from the derivation's *hash modulo*
//! ([`DrvHashes`]), a hash in which fixed-output dependencies are replaced by their content
//! hashes so that changing a download URL does not rebuild the world.
//!
//! Strings in a derivation are bytes, not necessarily UTF-8 ([`BString`]): whatever Nix wrote
//! must come back byte for byte. Output names and paths are checked to be store-path text.

mod aterm;
mod hash_modulo;
mod json;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

pub use bstr::{BStr, BString, ByteSlice};
use thiserror::Error;

use super::hash::{Hash, HashAlgo, HashError, sha256};
use super::store_path::{
    DRV_EXTENSION, IngestionMethod, StoreDir, StorePath, StorePathError, output_path_name,
};
pub use hash_modulo::{DrvHash, DrvHashKind, DrvHashes};
pub use json::write_show_derivation_json;

/// Everything that can be wrong with a derivation: its ATerm text (with the byte offset where
/// parsing stopped), its outputs, or its input derivations while hashing.
#[derive(Debug, Error)]
pub enum DerivationError {
    #[error("expected {expected} at offset {offset}")]
    Expected {
        expected: &'static str,
        offset: usize,
    },
    #[error("unterminated string starting at offset {offset}")]
    UnterminatedString { offset: usize },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    NotUtf8 { what: &'static str, offset: usize },
    #[error("bad store path '{path}' at offset {offset}: {source}")]
    BadStorePath {
        path: String,
        offset: usize,
        source: StorePathError,
    },
    #[error("the {what} at offset {offset} has a backslash, but Nix writes it verbatim")]
    Escaped { what: &'static str, offset: usize },
    #[error("bad output name '{name}' at offset {offset}")]
    BadOutputName { name: String, offset: usize },
    #[error("{what} '{item}' at offset {offset} is out of order or repeated")]
    Unsorted {
        what: &'static str,
        item: String,
        offset: usize,
    },
    #[error("bad hash for output '{output}' at offset {offset}: {source}")]
    BadHash {
        output: String,
        offset: usize,
        source: HashError,
    },
    #[error("output '{output}' at offset {offset}: {problem}")]
    BadOutput {
        output: String,
        offset: usize,
        problem: &'static str,
    },
    #[error("unexpected data after the derivation at offset {offset}")]
    TrailingData { offset: usize },
    #[error("a derivation must have at least one output")]
    NoOutputs,
    #[error("can't mix derivation output types")]
    MixedOutputTypes,
    #[error("only one fixed output is allowed, and it must be named \"out\"")]
    BadFixedOutput,
    #[error("all floating outputs must use the same hash type")]
    FloatingHashTypes,
    #[error("input derivation '{drv}' has no output '{output}'")]
    MissingInputOutput { drv: String, output: String },
    #[error("cannot read input derivation '{drv}': {source}")]
    Resolve {
        drv: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("derivation '{0}' depends on itself")]
    Cycle(String),
    #[error("'{0}' is not a derivation path")]
    NotADerivation(String),
    #[error("derivation '{drv}' has incorrect output '{actual}', should be '{expected}'")]
    WrongOutputPath {
        drv: String,
        actual: String,
        expected: String,
    },
    #[error(
        "derivation '{drv}' has incorrect environment variable '{var}', should be '{expected}'"
    )]
    WrongEnv {
        drv: String,
        var: String,
        expected: String,
    },
    #[error(transparent)]
    StorePath(#[from] StorePathError),
}

/// The content hash a fixed output must have, and how the output is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedOutputHash {
    pub method: IngestionMethod,
    pub hash: Hash,
}

impl FixedOutputHash {
    /// `r:sha256`, `sha1`, …: the hash-algorithm field of the ATerm.
    pub fn method_algo(&self) -> String {
        method_algo(self.method, self.hash.algo())
    }
}

fn method_algo(method: IngestionMethod, algo: HashAlgo) -> String {
    format!("{}{}", method.prefix(), algo.name())
}

/// One output of a derivation, in the forms Nix 2.8 knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DerivationOutput {
    /// The path follows from the derivation's hash modulo.
    InputAddressed(StorePath),
    /// The content is known in advance (a download): the path follows from its hash.
    Fixed {
        path: StorePath,
        hash: FixedOutputHash,
    },
    /// Content-addressed, path known only after the build (`__contentAddressed`).
    Floating {
        method: IngestionMethod,
        algo: HashAlgo,
    },
    /// Input-addressed, but depends on a floating derivation, so the path is not known yet.
    Deferred,
    /// `__impure`: rebuilt every time, moved to a content-addressed path.
    Impure {
        method: IngestionMethod,
        algo: HashAlgo,
    },
}

impl DerivationOutput {
    /// The output path, when the derivation determines it.
    pub fn path(&self) -> Option<&StorePath> {
        match self {
            DerivationOutput::InputAddressed(path) | DerivationOutput::Fixed { path, .. } => {
                Some(path)
            }
            _ => None,
        }
    }
}

/// What kind of derivation this is, from the kinds of its outputs (Nix's `DerivationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivationType {
    /// Input-addressed outputs; `deferred` when their paths are not known yet.
    InputAddressed {
        deferred: bool,
    },
    /// Content-addressed outputs: `fixed` (one output with a known hash) or floating.
    ContentAddressed {
        fixed: bool,
    },
    Impure,
}

impl DerivationType {
    /// Whether output paths follow from the output contents.
    pub fn is_ca(self) -> bool {
        !matches!(self, DerivationType::InputAddressed { .. })
    }

    pub fn is_fixed(self) -> bool {
        matches!(self, DerivationType::ContentAddressed { fixed: true })
    }

    /// Whether the build is fully sandboxed (fixed-output builds get the network).
    pub fn is_sandboxed(self) -> bool {
        match self {
            DerivationType::InputAddressed { .. } => true,
            DerivationType::ContentAddressed { fixed } => !fixed,
            DerivationType::Impure => false,
        }
    }

    pub fn is_pure(self) -> bool {
        self != DerivationType::Impure
    }

    /// Whether the derivation knows its output paths before it is built.
    pub fn has_known_output_paths(self) -> bool {
        match self {
            DerivationType::InputAddressed { deferred } => !deferred,
            DerivationType::ContentAddressed { fixed } => fixed,
            DerivationType::Impure => false,
        }
    }
}

/// A derivation as stored in a `.drv` file. Maps and sets are ordered as Nix orders them
/// (bytewise), which is also the order of the ATerm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// Keyed by output name (`out`, `dev`, …).
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivations and the outputs of each that are needed.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    /// Input sources (plain store paths).
    pub input_srcs: BTreeSet<StorePath>,
    /// The platform, e.g. `x86_64-linux`.
    pub system: BString,
    pub builder: BString,
    pub args: Vec<BString>,
    pub env: BTreeMap<BString, BString>,
}

/// How a new derivation's outputs are to be made (the choice Nix's `derivation` primop makes
/// from `outputs`, `outputHash*`, `__contentAddressed` and `__impure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewOutputs {
    /// Input-addressed outputs with these names.
    InputAddressed(BTreeSet<String>),
    /// A single fixed output `out`.
    Fixed(FixedOutputHash),
    /// Floating content-addressed outputs.
    Floating {
        names: BTreeSet<String>,
        method: IngestionMethod,
        algo: HashAlgo,
    },
    /// Impure outputs.
    Impure {
        names: BTreeSet<String>,
        method: IngestionMethod,
        algo: HashAlgo,
    },
}

/// The placeholder Nix puts in the environment for an output whose path is not known while
/// evaluating: `/` and the base-32 sha256 of `nix-output:<output>`.
pub fn hash_placeholder(output: &str) -> String {
    format!(
        "/{}",
        sha256(format!("nix-output:{output}").as_bytes()).to_base32()
    )
}

/// The placeholder Nix puts in a dependent's strings for output `output` of the derivation
/// `drv_path` when that output's path is not known yet (a floating or impure input): `/` and
/// the base-32 sha256 of `nix-upstream-output:<drv hash part>:<output path name>`.
pub fn downstream_placeholder(drv_path: &StorePath, output: &str) -> String {
    let drv_name = drv_path.drv_name().unwrap_or(drv_path.name());
    let clear_text = format!(
        "nix-upstream-output:{}:{}",
        drv_path.hash_part(),
        output_path_name(drv_name, output)
    );
    format!("/{}", sha256(clear_text.as_bytes()).to_base32())
}

impl Derivation {
    /// Parses a `.drv` file's ATerm; every path must be a valid store path of `store_dir`.
    pub fn parse(bytes: &[u8], store_dir: &StoreDir) -> Result<Derivation, DerivationError> {
        aterm::parse(bytes, store_dir)
    }

    /// The ATerm of this derivation, exactly as Nix writes it.
    pub fn to_aterm(&self, store_dir: &StoreDir) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        aterm::write(self, &mut out, store_dir, false, None);
        out
    }

    /// The kind of derivation, or why its outputs do not go together.
    pub fn derivation_type(&self) -> Result<DerivationType, DerivationError> {
        let mut kinds = self.outputs.values().map(std::mem::discriminant);
        let first = kinds.next().ok_or(DerivationError::NoOutputs)?;
        if kinds.any(|k| k != first) {
            return Err(DerivationError::MixedOutputTypes);
        }
        let (name, output) = self.outputs.iter().next().expect("at least one output");
        Ok(match output {
            DerivationOutput::InputAddressed(_) => {
                DerivationType::InputAddressed { deferred: false }
            }
            DerivationOutput::Deferred => DerivationType::InputAddressed { deferred: true },
            DerivationOutput::Fixed { .. } => {
                if self.outputs.len() > 1 || name != "out" {
                    return Err(DerivationError::BadFixedOutput);
                }
                DerivationType::ContentAddressed { fixed: true }
            }
            DerivationOutput::Floating { algo, .. } => {
                let same = self
                    .outputs
                    .values()
                    .all(|o| matches!(o, DerivationOutput::Floating { algo: a, .. } if a == algo));
                if !same {
                    return Err(DerivationError::FloatingHashTypes);
                }
                DerivationType::ContentAddressed { fixed: false }
            }
            DerivationOutput::Impure { .. } => DerivationType::Impure,
        })
    }

    /// Whether this is a (valid) fixed-output derivation.
    pub fn is_fixed_output(&self) -> bool {
        self.derivation_type().is_ok_and(DerivationType::is_fixed)
    }

    /// Whether the builder is one built into Nix (`builtin:fetchurl`, …).
    pub fn is_builtin(&self) -> bool {
        self.builder.starts_with(b"builtin:")
    }

    /// Output name → output path, `None` where the path is not known before building.
    pub fn output_paths(&self) -> BTreeMap<&str, Option<&StorePath>> {
        self.outputs
            .iter()
            .map(|(name, o)| (name.as_str(), o.path()))
            .collect()
    }

    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.keys().map(String::as_str)
    }

    /// An environment variable.
    pub fn env_var(&self, name: &str) -> Option<&BStr> {
        self.env.get(name.as_bytes().as_bstr()).map(|v| v.as_bstr())
    }

    /// The derivation's name: that of its `.drv` path when known (what Nix uses), else the
    /// `name` environment variable (which Nix's `derivation` always sets).
    pub fn name<'a>(&'a self, drv_path: Option<&'a StorePath>) -> Option<&'a str> {
        drv_path
            .and_then(StorePath::drv_name)
            .or_else(|| self.env_var("name").and_then(|n| n.to_str().ok()))
    }

    /// The builder as an OS string, for `execve`.
    pub fn builder_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.builder)
    }

    /// The builder's arguments as OS strings.
    pub fn args_os(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(|a| OsStr::from_bytes(a))
    }

    /// The environment as OS string pairs.
    pub fn env_os(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.env
            .iter()
            .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v)))
    }

    /// The references of the `.drv` file: input sources and input derivations (outputs are
    /// not references).
    pub fn references(&self) -> BTreeSet<StorePath> {
        let mut refs = self.input_srcs.clone();
        refs.extend(self.input_drvs.keys().cloned());
        refs
    }

    /// The store path of this derivation's `.drv` file, for a derivation called `name`.
    pub fn drv_path(&self, store_dir: &StoreDir, name: &str) -> Result<StorePath, StorePathError> {
        store_dir.compute_text_path(
            &format!("{name}{DRV_EXTENSION}"),
            &self.to_aterm(store_dir),
            &self.references(),
        )
    }

    /// Completes a new derivation called `name` the way Nix's `derivation` primop does: sets
    /// `outputs` and the output environment variables (output paths, or placeholders for
    /// floating outputs), records the derivation's hash modulo in `hashes`, and returns its
    /// `.drv` path. Input-addressed paths come from the hash modulo of the derivation with
    /// output paths blanked; `resolve` loads input derivations not yet in `hashes`.
    pub fn fill_in_outputs<R, E>(
        &mut self,
        store_dir: &StoreDir,
        name: &str,
        new_outputs: &NewOutputs,
        hashes: &mut DrvHashes,
        resolve: R,
    ) -> Result<StorePath, DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut resolve = resolve;
        self.outputs.clear();
        match new_outputs {
            NewOutputs::Fixed(hash) => {
                let path = fixed_output_path(store_dir, name, hash)?;
                self.set_env("out", store_dir.display(&path));
                self.outputs
                    .insert("out".into(), DerivationOutput::Fixed { path, hash: *hash });
            }
            NewOutputs::Floating {
                names,
                method,
                algo,
            }
            | NewOutputs::Impure {
                names,
                method,
                algo,
            } => {
                for output in names {
                    self.set_env(output, hash_placeholder(output));
                    let (method, algo) = (*method, *algo);
                    let o = if matches!(new_outputs, NewOutputs::Impure { .. }) {
                        DerivationOutput::Impure { method, algo }
                    } else {
                        DerivationOutput::Floating { method, algo }
                    };
                    self.outputs.insert(output.clone(), o);
                }
            }
            NewOutputs::InputAddressed(names) => {
                for output in names {
                    self.set_env(output, String::new());
                    self.outputs
                        .insert(output.clone(), DerivationOutput::Deferred);
                }
                let masked = hashes.hash_derivation_modulo(store_dir, self, true, &mut resolve)?;
                if masked.kind == DrvHashKind::Regular {
                    for (output, hash) in &masked.hashes {
                        let path = store_dir.make_output_path(output, hash, name)?;
                        self.set_env(output, store_dir.display(&path));
                        self.outputs
                            .insert(output.clone(), DerivationOutput::InputAddressed(path));
                    }
                }
            }
        }
        if self.outputs.is_empty() {
            return Err(DerivationError::NoOutputs);
        }
        let drv_path = self.drv_path(store_dir, name)?;
        let hash = hashes.hash_derivation_modulo(store_dir, self, false, &mut resolve)?;
        hashes.insert(drv_path.clone(), hash);
        Ok(drv_path)
    }

    /// The output paths Nix computes for this derivation stored under the name `drv_name`:
    /// from the hash modulo with outputs blanked for input-addressed outputs, from the hash
    /// for a fixed output, `None` for outputs whose paths are known only after building.
    pub fn computed_output_paths<R, E>(
        &self,
        store_dir: &StoreDir,
        drv_name: &str,
        hashes: &mut DrvHashes,
        resolve: R,
    ) -> Result<BTreeMap<String, Option<StorePath>>, DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut resolve = resolve;
        self.derivation_type()?;
        let mut masked = None;
        let mut paths = BTreeMap::new();
        for (output, o) in &self.outputs {
            let path = match o {
                DerivationOutput::InputAddressed(_) => {
                    if masked.is_none() {
                        masked = Some(hashes.hash_derivation_modulo(
                            store_dir,
                            self,
                            true,
                            &mut resolve,
                        )?);
                    }
                    let hash = &masked.as_ref().expect("just computed").hashes[output];
                    Some(store_dir.make_output_path(output, hash, drv_name)?)
                }
                DerivationOutput::Fixed { hash, .. } => {
                    Some(fixed_output_path(store_dir, drv_name, hash)?)
                }
                _ => None,
            };
            paths.insert(output.clone(), path);
        }
        Ok(paths)
    }

    /// Checks that the output paths and output environment variables of the derivation stored
    /// at `drv_path` are the ones Nix would compute (what Nix checks before registering a
    /// `.drv`).
    pub fn check_outputs<R, E>(
        &self,
        store_dir: &StoreDir,
        drv_path: &StorePath,
        hashes: &mut DrvHashes,
        resolve: R,
    ) -> Result<(), DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let drv = store_dir.display(drv_path);
        let name = drv_path
            .drv_name()
            .ok_or_else(|| DerivationError::NotADerivation(drv.clone()))?;
        let computed = self.computed_output_paths(store_dir, name, hashes, resolve)?;
        for (output, expected) in computed {
            let Some(expected) = expected else { continue };
            let expected = store_dir.display(&expected);
            let actual = self.outputs[&output]
                .path()
                .map(|p| store_dir.display(p))
                .unwrap_or_default();
            if actual != expected {
                return Err(DerivationError::WrongOutputPath {
                    drv,
                    actual,
                    expected,
                });
            }
            if self.env_var(&output) != Some(expected.as_bytes().as_bstr()) {
                return Err(DerivationError::WrongEnv {
                    drv,
                    var: output,
                    expected,
                });
            }
        }
        Ok(())
    }

    fn set_env(&mut self, name: &str, value: String) {
        self.env.insert(name.into(), value.into());
    }
}

/// The path of the fixed output `out` of a derivation called `drv_name`.
pub fn fixed_output_path(
    store_dir: &StoreDir,
    drv_name: &str,
    hash: &FixedOutputHash,
) -> Result<StorePath, StorePathError> {
    store_dir.make_fixed_output_path(
        hash.method,
        &hash.hash,
        &output_path_name(drv_name, "out"),
        &BTreeSet::new(),
        false,
    )
}

#[cfg(test)]
mod tests;
