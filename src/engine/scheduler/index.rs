//! Finding the goal of a store path (Nix's `derivationGoals`/`substitutionGoals` maps).
//!
//! The table is keyed by the first 16 characters (80 bits) of the hash part, stored inline:
//! 24 bytes an entry, no name to allocate, nothing elsewhere in memory to compare. A hit is
//! confirmed against the rest of the goal's hash part (the goal is read next anyway); the rare
//! second path sharing those 16 characters goes to a side map. A whole hash part identifies a
//! store path, as in Nix's `queryPathFromHashPart`.

use rustc_hash::FxHashMap;

use crate::engine::api::GoalId;
use crate::engine::format::StorePath;

use super::goal::{Arena, GoalData};

#[derive(Debug, Default)]
pub(super) struct PathIndex {
    by_prefix: FxHashMap<[u64; 2], GoalId>,
    others: FxHashMap<StorePath, GoalId>,
}

fn key(path: &StorePath) -> [u64; 2] {
    let h = path.hash_part_bytes();
    [
        u64::from_le_bytes(h[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
    ]
}

/// The store path a goal is about.
fn path_of(goals: &Arena, g: GoalId) -> &StorePath {
    match &goals[g.index()].data {
        GoalData::Drv(d) => &d.drv_path,
        GoalData::Subst(s) => &s.path,
    }
}

impl PathIndex {
    pub(super) fn get(&self, goals: &Arena, path: &StorePath) -> Option<GoalId> {
        let g = *self.by_prefix.get(&key(path))?;
        if path_of(goals, g).hash_part_bytes() == path.hash_part_bytes() {
            Some(g)
        } else {
            self.others.get(path).copied()
        }
    }

    pub(super) fn insert(&mut self, goals: &Arena, path: &StorePath, g: GoalId) {
        match self.by_prefix.get(&key(path)) {
            Some(&old) if path_of(goals, old).hash_part_bytes() != path.hash_part_bytes() => {
                self.others.insert(path.clone(), g);
            }
            _ => {
                self.by_prefix.insert(key(path), g);
            }
        }
    }
}
