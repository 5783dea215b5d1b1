//! Nix's `queryMissing` without substituters: which derivations realising some targets will
//! build (every derivation with a wanted output that is not valid, and, recursively, such
//! inputs of those), and which plain paths nobody can make (invalid, no derivation given).
//! `nix-build` prints the first as "these N derivations will be built:", in the order
//! [`LocalStore::sort_for_printing`] gives.

use std::collections::{BTreeSet, HashSet};

use crate::engine::format::StorePath;

use super::{LocalStore, StoreError, closure};

/// What realising some targets needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    pub will_build: BTreeSet<StorePath>,
    pub unknown: BTreeSet<StorePath>,
}

impl LocalStore {
    /// See the module doc. `drvs` are derivations with their wanted outputs (empty: all),
    /// `paths` plain store paths.
    pub fn query_missing(
        &self,
        drvs: &[(StorePath, Vec<String>)],
        paths: &[StorePath],
    ) -> Result<Missing, StoreError> {
        let mut missing = Missing::default();
        for p in paths {
            if !self.is_valid(p)? {
                missing.unknown.insert(p.clone());
            }
        }
        let mut seen: HashSet<(StorePath, Vec<String>)> = HashSet::new();
        let mut queue: Vec<(StorePath, Vec<String>)> = drvs.to_vec();
        while let Some((drv_path, wanted)) = queue.pop() {
            if !seen.insert((drv_path.clone(), wanted.clone())) {
                continue;
            }
            if missing.will_build.contains(&drv_path) {
                continue;
            }
            let drv = self.read_derivation(&drv_path)?;
            let mut invalid = false;
            for (name, path) in drv.output_paths() {
                let Some(path) = path else { continue };
                if (wanted.is_empty() || wanted.iter().any(|w| w == name))
                    && !self.is_valid(path)?
                {
                    invalid = true;
                }
            }
            if !invalid {
                continue;
            }
            missing.will_build.insert(drv_path);
            for (input, outputs) in drv.input_drvs {
                queue.push((input, outputs.into_iter().collect()));
            }
        }
        Ok(missing)
    }

    /// The order `nix-build` lists derivations in: Nix's `topoSortPaths` (by the `.drv` files'
    /// references), reversed, so inputs come before what needs them.
    pub fn sort_for_printing(
        &self,
        drvs: &BTreeSet<StorePath>,
    ) -> Result<Vec<StorePath>, StoreError> {
        let mut refs = std::collections::BTreeMap::new();
        for d in drvs {
            refs.insert(d.clone(), self.query_references(d)?);
        }
        let mut sorted = closure::topo_sort(drvs, &refs).map_err(|c| StoreError::Cycle {
            path: self.print(&c.path),
            parent: self.print(&c.parent),
        })?;
        sorted.reverse();
        Ok(sorted)
    }
}
