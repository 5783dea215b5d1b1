//! Finding the goal of a store path (Nix's `derivationGoals`/`substitutionGoals` maps).
//!
//! Keyed by the 32-character hash part alone, kept inline in the table: a lookup touches no
//! name elsewhere in memory. A hash part identifies a store path, as in Nix's
//! `queryPathFromHashPart` (two paths sharing one would need a collision of 160 bits of
//! SHA-256).

use rustc_hash::FxHashMap;

use crate::engine::api::GoalId;
use crate::engine::format::StorePath;

#[derive(Debug, Default)]
pub(super) struct PathIndex {
    by_hash: FxHashMap<[u128; 2], GoalId>,
}

/// The hash part as two words (compared inline, unlike a byte array).
fn key(path: &StorePath) -> [u128; 2] {
    let h = path.hash_part_bytes();
    let (a, b) = h.split_at(16);
    [
        u128::from_le_bytes(a.try_into().expect("16 bytes")),
        u128::from_le_bytes(b.try_into().expect("16 bytes")),
    ]
}

impl PathIndex {
    pub(super) fn get(&self, path: &StorePath) -> Option<GoalId> {
        self.by_hash.get(&key(path)).copied()
    }

    pub(super) fn insert(&mut self, path: &StorePath, g: GoalId) {
        self.by_hash.insert(key(path), g);
    }
}
