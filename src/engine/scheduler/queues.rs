//! Who goes next: the order of goals (Nix's `key()`), the queues of goals waiting for a build
//! slot, and the slots themselves.
//!
//! Nix orders goals by a string key, `a$<name>$<path>` for substitutions and
//! `b$<name>$<path>` for derivations, so substitutions come first and builds go by name. All
//! name characters sort after `$`, so comparing (kind, name, hash part) gives the same order
//! without building the string.
//!
//! Nix wakes every goal waiting for a slot whenever any child ends and lets them race in key
//! order. drover keeps them in ordered sets instead and grants free slots to the first ones,
//! which starts the same goals in the same order without waking the others.

use std::collections::BTreeSet;

use crate::engine::api::GoalId;

/// A goal's place in Nix's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct QueueKey {
    /// The kind and the first 15 name bytes (decides most comparisons without the name).
    pub prefix: u128,
    /// 0 substitution, 1 derivation.
    pub kind: u8,
    pub name: Box<str>,
    pub hash: [u8; 32],
    pub goal: GoalId,
}

/// The goals waiting for a slot, and the slots.
#[derive(Debug, Default)]
pub(super) struct SlotQueues {
    substitutions: BTreeSet<QueueKey>,
    builds: BTreeSet<QueueKey>,
    /// The builds that may also run with `max-jobs = 0` (a subset of `builds`).
    local_builds: BTreeSet<QueueKey>,
    /// Slots in use (Nix's `nrLocalBuilds`: builds and substitutions).
    in_use: u32,
    /// Slots in use by substitutions that have their own slots (`max-substitution-jobs`);
    /// not part of `in_use`.
    own_slots: BTreeSet<u32>,
    free: BTreeSet<u32>,
    next: u32,
}

impl SlotQueues {
    pub(super) fn push_subst(&mut self, key: QueueKey) {
        self.substitutions.insert(key);
    }

    /// `local_only`: a build that must run here (preferLocalBuild, check or repair mode).
    pub(super) fn push_build(&mut self, key: QueueKey, local_only: bool) {
        if local_only {
            self.local_builds.insert(key.clone());
        }
        self.builds.insert(key);
    }

    pub(super) fn remove(&mut self, key: &QueueKey) {
        if key.kind == 0 {
            self.substitutions.remove(key);
        } else {
            self.builds.remove(key);
            self.local_builds.remove(key);
        }
    }

    pub(super) fn in_use(&self) -> u32 {
        self.in_use
    }

    pub(super) fn is_empty(&self) -> bool {
        self.substitutions.is_empty() && self.builds.is_empty()
    }

    /// Every queued goal.
    pub(super) fn queued(&self) -> Vec<GoalId> {
        self.substitutions
            .iter()
            .chain(&self.builds)
            .map(|k| k.goal)
            .collect()
    }

    pub(super) fn queued_builds(&self) -> Vec<GoalId> {
        self.builds.iter().map(|k| k.goal).collect()
    }

    /// The next goal that may take a slot, with the slot. Substitutions may always use one
    /// slot even with `max_jobs = 0`; a local-only build may run with `max_jobs = 0` when no
    /// slot is in use (Nix's `tryToBuild`). With `max_substitutions`, substitutions use up to
    /// that many slots (at least one) of their own instead of the build slots. Slot numbers
    /// are unique among all slots in use.
    pub(super) fn next_grant(
        &mut self,
        max_jobs: u32,
        max_substitutions: Option<u32>,
    ) -> Option<(GoalId, u32)> {
        let subst_fits = match max_substitutions {
            Some(n) => (self.own_slots.len() as u32) < n.max(1),
            None => self.in_use < max_jobs.max(1),
        };
        let (key, own) = if !self.substitutions.is_empty() && subst_fits {
            (self.substitutions.pop_first(), max_substitutions.is_some())
        } else if !self.builds.is_empty() && self.in_use < max_jobs {
            let key = self.builds.pop_first();
            if let Some(k) = &key {
                self.local_builds.remove(k);
            }
            (key, false)
        } else if max_jobs == 0 && self.in_use == 0 && !self.local_builds.is_empty() {
            let key = self.local_builds.pop_first();
            if let Some(k) = &key {
                self.builds.remove(k);
            }
            (key, false)
        } else {
            (None, false)
        };
        let key = key?;
        let slot = self.free.pop_first().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        if own {
            self.own_slots.insert(slot);
        } else {
            self.in_use += 1;
        }
        Some((key.goal, slot))
    }

    /// Nix's `childTerminated`: the slot is free again.
    pub(super) fn release(&mut self, slot: u32) {
        if !self.own_slots.remove(&slot) {
            self.in_use -= 1;
        }
        self.free.insert(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: u8, name: &str, h: u8, goal: u32) -> QueueKey {
        let mut bytes = [0u8; 16];
        bytes[0] = kind;
        let n = name.len().min(15);
        bytes[1..=n].copy_from_slice(&name.as_bytes()[..n]);
        QueueKey {
            prefix: u128::from_be_bytes(bytes),
            kind,
            name: name.into(),
            hash: [b'0' + h; 32],
            goal: GoalId(goal),
        }
    }

    #[test]
    fn substitutions_first_then_builds_by_name_within_max_jobs() {
        let mut q = SlotQueues::default();
        q.push_build(key(1, "zlib.drv", 1, 1), false);
        q.push_build(key(1, "bash.drv", 1, 2), false);
        q.push_subst(key(0, "zzz", 1, 3));
        assert_eq!(q.next_grant(2, None), Some((GoalId(3), 0)));
        assert_eq!(q.next_grant(2, None), Some((GoalId(2), 1)));
        assert_eq!(q.next_grant(2, None), None);
        q.release(0);
        assert_eq!(q.next_grant(2, None), Some((GoalId(1), 0)));
    }

    #[test]
    fn max_jobs_zero_runs_one_substitution_or_one_local_build() {
        let mut q = SlotQueues::default();
        q.push_build(key(1, "a.drv", 1, 1), false);
        q.push_build(key(1, "b.drv", 1, 2), true);
        assert_eq!(q.next_grant(0, None), Some((GoalId(2), 0)));
        assert_eq!(q.next_grant(0, None), None);
        q.release(0);
        assert_eq!(q.next_grant(0, None), None);
        q.push_subst(key(0, "s", 1, 3));
        assert_eq!(q.next_grant(0, None), Some((GoalId(3), 0)));
        assert_eq!(q.queued_builds(), vec![GoalId(1)]);
    }

    #[test]
    fn substitutions_with_their_own_slots_leave_the_build_slots_to_builds() {
        let mut q = SlotQueues::default();
        for i in 0..4 {
            q.push_subst(key(0, "s", i, u32::from(i)));
        }
        q.push_build(key(1, "a.drv", 1, 10), false);
        q.push_build(key(1, "b.drv", 1, 11), false);
        // Two substitution slots and one build slot, numbered apart.
        assert_eq!(q.next_grant(1, Some(2)), Some((GoalId(0), 0)));
        assert_eq!(q.next_grant(1, Some(2)), Some((GoalId(1), 1)));
        assert_eq!(q.next_grant(1, Some(2)), Some((GoalId(10), 2)));
        assert_eq!(q.next_grant(1, Some(2)), None);
        assert_eq!(q.in_use(), 1);
        q.release(0);
        assert_eq!(q.next_grant(1, Some(2)), Some((GoalId(2), 0)));
        assert_eq!(q.next_grant(1, Some(2)), None);
        q.release(2);
        assert_eq!(q.in_use(), 0);
        assert_eq!(q.next_grant(1, Some(2)), Some((GoalId(11), 2)));
        // max-jobs 0 and max-substitution-jobs 0 still run one substitution.
        let mut q = SlotQueues::default();
        q.push_subst(key(0, "s", 1, 1));
        q.push_subst(key(0, "s", 2, 2));
        assert_eq!(q.next_grant(0, Some(0)), Some((GoalId(1), 0)));
        assert_eq!(q.next_grant(0, Some(0)), None);
    }

    #[test]
    fn a_name_sorts_before_its_extensions_as_in_nix_keys() {
        // "b$foo.drv$..." vs "b$foo-bar.drv$...": '-' < '.', so foo-bar comes first.
        let mut q = SlotQueues::default();
        q.push_build(key(1, "foo.drv", 0, 1), false);
        q.push_build(key(1, "foo-bar.drv", 9, 2), false);
        assert_eq!(q.next_grant(1, None).map(|g| g.0), Some(GoalId(2)));
    }
}
