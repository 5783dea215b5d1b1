//! Closures and topological order over the reference graph (Nix's `computeFSClosure` and
//! `topoSortPaths`), written against a small edge-query trait so they run on the store's
//! database and on in-memory graphs alike. Both are iterative: a 100,000-path chain must not
//! exhaust the stack.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::format::StorePath;

/// Which edges a closure follows, as the flags of Nix's `computeFSClosure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClosureFlags {
    /// Follow referrers instead of references.
    pub flip_direction: bool,
    /// Forward: a `.drv` brings its valid outputs. Flipped: a path brings its valid derivers.
    pub include_outputs: bool,
    /// Forward: a path brings its valid deriver. Flipped: a `.drv` brings its valid outputs.
    pub include_derivers: bool,
}

/// The neighbours of a path for a closure with given flags.
pub trait EdgeSource {
    type Error;
    fn neighbours(
        &self,
        path: &StorePath,
        flags: ClosureFlags,
    ) -> Result<BTreeSet<StorePath>, Self::Error>;
}

/// All paths reachable from `start` (included).
pub fn compute_closure<S: EdgeSource>(
    source: &S,
    start: impl IntoIterator<Item = StorePath>,
    flags: ClosureFlags,
) -> Result<BTreeSet<StorePath>, S::Error> {
    let mut seen = BTreeSet::new();
    let mut queue: Vec<StorePath> = Vec::new();
    for p in start {
        if seen.insert(p.clone()) {
            queue.push(p);
        }
    }
    while let Some(p) = queue.pop() {
        for n in source.neighbours(&p, flags)? {
            if n != p && !seen.contains(&n) {
                seen.insert(n.clone());
                queue.push(n);
            }
        }
    }
    Ok(seen)
}

/// A reference cycle found while sorting: `path` is reached again from `parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub path: StorePath,
    pub parent: StorePath,
}

/// Sorts `paths` so that every path comes before the paths it references (Nix's order:
/// referrers first). References outside the set and self-references are ignored.
pub fn topo_sort(
    paths: &BTreeSet<StorePath>,
    references: &BTreeMap<StorePath, BTreeSet<StorePath>>,
) -> Result<Vec<StorePath>, Cycle> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let empty = BTreeSet::new();
    let mut marks: BTreeMap<&StorePath, Mark> = BTreeMap::new();
    let mut post_order: Vec<StorePath> = Vec::with_capacity(paths.len());
    for root in paths {
        if marks.contains_key(root) {
            continue;
        }
        marks.insert(root, Mark::Active);
        // Each frame: a path and the iterator over its remaining children.
        let mut stack = vec![(root, references.get(root).unwrap_or(&empty).iter())];
        while let Some((node, children)) = stack.last_mut() {
            let node: &StorePath = node;
            match children.next() {
                Some(child) if child == node || !paths.contains(child) => {}
                Some(child) => match marks.get(child) {
                    Some(Mark::Active) => {
                        return Err(Cycle {
                            path: child.clone(),
                            parent: node.clone(),
                        });
                    }
                    Some(Mark::Done) => {}
                    None => {
                        let child = paths.get(child).expect("checked above");
                        marks.insert(child, Mark::Active);
                        stack.push((child, references.get(child).unwrap_or(&empty).iter()));
                    }
                },
                None => {
                    marks.insert(node, Mark::Done);
                    post_order.push(node.clone());
                    stack.pop();
                }
            }
        }
    }
    post_order.reverse();
    Ok(post_order)
}

/// An in-memory reference graph (tests, and registration of a batch before it is in the DB).
impl EdgeSource for BTreeMap<StorePath, BTreeSet<StorePath>> {
    type Error = std::convert::Infallible;

    fn neighbours(
        &self,
        path: &StorePath,
        flags: ClosureFlags,
    ) -> Result<BTreeSet<StorePath>, Self::Error> {
        if flags.flip_direction {
            Ok(self
                .iter()
                .filter(|(_, refs)| refs.contains(path))
                .map(|(p, _)| p.clone())
                .collect())
        } else {
            Ok(self.get(path).cloned().unwrap_or_default())
        }
    }
}

/// Whether the paths in `set` reference each other in a cycle (ignoring self-references).
pub fn find_cycle(references: &BTreeMap<StorePath, BTreeSet<StorePath>>) -> Option<Cycle> {
    let set: BTreeSet<StorePath> = references.keys().cloned().collect();
    topo_sort(&set, references).err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(i: usize) -> StorePath {
        StorePath::from_base_name(&format!("{:0>32}-p{i}", i % 10)).unwrap()
    }

    #[test]
    fn closure_and_order_of_a_diamond() {
        // 0 -> 1, 0 -> 2, 1 -> 3, 2 -> 3
        let mut g = BTreeMap::new();
        g.insert(p(0), [p(1), p(2)].into());
        g.insert(p(1), [p(3)].into());
        g.insert(p(2), [p(3), p(2)].into());
        g.insert(p(3), BTreeSet::new());
        let c = compute_closure(&g, [p(1)], ClosureFlags::default()).unwrap();
        assert_eq!(c, [p(1), p(3)].into());
        let flipped = ClosureFlags {
            flip_direction: true,
            ..Default::default()
        };
        let c = compute_closure(&g, [p(3)], flipped).unwrap();
        assert_eq!(c, [p(0), p(1), p(2), p(3)].into());
        let all: BTreeSet<_> = g.keys().cloned().collect();
        let order = topo_sort(&all, &g).unwrap();
        assert_eq!(order.first(), Some(&p(0)));
        assert_eq!(order.last(), Some(&p(3)));
    }

    #[test]
    fn cycles_are_reported() {
        let mut g = BTreeMap::new();
        g.insert(p(0), [p(1)].into());
        g.insert(p(1), [p(0)].into());
        let c = find_cycle(&g).unwrap();
        assert!(c.path == p(0) || c.path == p(1));
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let n = 200_000;
        let mut g = BTreeMap::new();
        for i in 0..n {
            let refs = if i + 1 < n {
                [p(i + 1)].into()
            } else {
                BTreeSet::new()
            };
            g.insert(p(i), refs);
        }
        let all: BTreeSet<_> = g.keys().cloned().collect();
        let order = topo_sort(&all, &g).unwrap();
        assert_eq!(order.len(), n);
        assert_eq!(order[0], p(0));
        assert_eq!(
            compute_closure(&g, [p(0)], ClosureFlags::default())
                .unwrap()
                .len(),
            n
        );
    }

    proptest! {
        #[test]
        fn topo_order_respects_every_edge(edges in proptest::collection::vec((0usize..30, 0usize..30), 0..80)) {
            // Only edges from lower to higher numbers: a DAG.
            let mut g: BTreeMap<StorePath, BTreeSet<StorePath>> = (0..30).map(|i| (p(i), BTreeSet::new())).collect();
            for (a, b) in edges {
                if a < b { g.get_mut(&p(a)).unwrap().insert(p(b)); }
            }
            let all: BTreeSet<_> = g.keys().cloned().collect();
            let order = topo_sort(&all, &g).unwrap();
            let pos: BTreeMap<_, _> = order.iter().enumerate().map(|(i, x)| (x.clone(), i)).collect();
            for (a, refs) in &g {
                for b in refs {
                    prop_assert!(pos[a] < pos[b]);
                }
            }
        }
    }
}
