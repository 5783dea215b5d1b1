//! The store as the scheduler sees it: a few synchronous questions (is this path valid? what
//! does this derivation need?) behind a trait, so tests and the simulator use an in-memory
//! store while the real driver answers from the Nix store database.

use std::sync::Arc;

use crate::engine::format::StorePath;

/// The scheduler's summary of a derivation: what Nix's goals read from a `Derivation` and its
/// `ParsedDerivation`. The driver builds it from the real ATerm derivation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrvInfo {
    /// The derivation name (`hello-2.12`).
    pub name: String,
    /// Output names with their paths, sorted by name; `None` for a floating content-addressed
    /// output, whose path is known only after the build.
    pub outputs: Vec<(String, Option<StorePath>)>,
    /// Input derivations with the output names used from each, sorted by path.
    pub input_drvs: Vec<(StorePath, Vec<String>)>,
    /// Input sources (plain store paths).
    pub input_srcs: Vec<StorePath>,
    /// `system` (`x86_64-linux`).
    pub platform: String,
    /// A fixed-output derivation: built once (no `--repeat`), outside the sandbox's network
    /// isolation, so its failures count as transient (Nix: `!derivationType.isSandboxed()`).
    pub fixed_output: bool,
    /// `preferLocalBuild = true`: may build even with `max-jobs = 0` when nothing else runs.
    pub prefer_local_build: bool,
    /// `allowSubstitutes` (default true): whether to try substitutes for its outputs.
    pub allow_substitutes: bool,
    /// `requiredSystemFeatures`.
    pub required_features: Vec<String>,
}

impl DrvInfo {
    pub fn output_path(&self, name: &str) -> Option<&StorePath> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| p.as_ref())
    }

    pub fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|(n, _)| n == name)
    }
}

/// Questions the scheduler asks the store, answered synchronously (Nix asks its store the
/// same way from inside the worker loop). Writes never go through here: they are effects.
pub trait StoreView {
    /// Whether `path` is registered valid.
    fn is_valid(&self, path: &StorePath) -> bool;

    /// Reads and summarises a derivation; the error text becomes the goal's failure message.
    fn load_derivation(&self, drv: &StorePath) -> Result<Arc<DrvInfo>, String>;

    /// Whether a build producing `path` failed before and failures are cached.
    fn has_cached_failure(&self, _path: &StorePath) -> bool {
        false
    }

    /// Whether the contents of a valid path still match its registered NAR hash (repair mode,
    /// Nix's `pathContentsGood`). The scheduler memoises the answer.
    fn path_contents_good(&self, _path: &StorePath) -> bool {
        true
    }

    /// The references of a valid path (repair mode walks output closures with it).
    fn references(&self, _path: &StorePath) -> Vec<StorePath> {
        Vec::new()
    }
}
