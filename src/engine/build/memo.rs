//! What never changes about valid paths, remembered for the run: the references of each
//! valid path and the output paths of each derivation. Every build needs the closure of its
//! inputs; walking it in memory instead of asking the database for every path keeps the cost
//! of a build from growing with the size of the graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::format::StorePath;
use crate::engine::store::{LocalStore, StoreError};

type Refs = Arc<[StorePath]>;

/// See the module doc. Shared by the builds of one run.
#[derive(Debug, Default)]
pub struct StoreMemo {
    references: Mutex<HashMap<StorePath, Refs>>,
    outputs: Mutex<HashMap<StorePath, Arc<BTreeMap<String, StorePath>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StoreMemo {
    /// Remembers the references of a path just registered.
    pub fn remember(&self, path: StorePath, references: impl IntoIterator<Item = StorePath>) {
        lock(&self.references).insert(path, references.into_iter().collect());
    }

    /// Nix's `computeFSClosure` of valid paths: `roots` and everything they refer to,
    /// directly or not. A path that is not valid is an error.
    pub fn closure(
        &self,
        store: &LocalStore,
        roots: impl IntoIterator<Item = StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut known = lock(&self.references);
        let mut seen: BTreeSet<StorePath> = BTreeSet::new();
        let mut queue: Vec<StorePath> = roots.into_iter().collect();
        while let Some(p) = queue.pop() {
            if seen.contains(&p) {
                continue;
            }
            let refs = match known.get(&p) {
                Some(r) => r.clone(),
                None => {
                    let info = store
                        .query_path_info(&p)?
                        .ok_or_else(|| StoreError::InvalidPath(store.print(&p)))?;
                    let r: Refs = info.references.into_iter().collect();
                    known.insert(p.clone(), r.clone());
                    r
                }
            };
            queue.extend(refs.iter().filter(|r| !seen.contains(*r)).cloned());
            seen.insert(p);
        }
        Ok(seen)
    }

    /// Output name → path of a derivation (read from its `.drv` file once).
    pub fn output_paths(
        &self,
        store: &LocalStore,
        drv: &StorePath,
    ) -> Result<Arc<BTreeMap<String, StorePath>>, StoreError> {
        if let Some(o) = lock(&self.outputs).get(drv) {
            return Ok(o.clone());
        }
        let o = Arc::new(store.derivation_output_paths(drv)?);
        lock(&self.outputs).insert(drv.clone(), o.clone());
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::{EnvOverrides, StoreConfig};

    #[test]
    fn closures_match_the_database_s_and_use_remembered_references() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!(
            "local?store={0}/store&state={0}/state&log={0}/log",
            dir.path().display()
        );
        let store =
            LocalStore::open(StoreConfig::parse(Some(&uri), &EnvOverrides::default()).unwrap())
                .unwrap();
        // c <- b <- a, d alone.
        let add = |name: &str, refs: &[&StorePath]| {
            let refs = refs.iter().map(|r| (*r).clone()).collect();
            store
                .add_text_to_store(name, name.as_bytes(), &refs)
                .unwrap()
        };
        let c = add("c", &[]);
        let b = add("b", &[&c]);
        let a = add("a", &[&b, &c]);
        let d = add("d", &[]);
        let memo = StoreMemo::default();
        let from_db = |roots: &[&StorePath]| {
            store
                .compute_fs_closure(roots.iter().map(|r| (*r).clone()), Default::default())
                .unwrap()
        };
        for roots in [vec![&a], vec![&b, &d], vec![&c], vec![]] {
            let ours = memo
                .closure(&store, roots.iter().map(|r| (*r).clone()))
                .unwrap();
            assert_eq!(ours, from_db(&roots));
        }
        // A remembered path needs no database row.
        let fake = StorePath::from_base_name("00000000000000000000000000000000-new").unwrap();
        memo.remember(fake.clone(), [a.clone()]);
        let ours = memo.closure(&store, [fake.clone()]).unwrap();
        assert_eq!(ours, [fake, a, b, c].into_iter().collect());
        // An invalid path is an error.
        let bad = StorePath::from_digest([7; 20], "bad").unwrap();
        assert!(matches!(
            memo.closure(&store, [bad]),
            Err(StoreError::InvalidPath(_))
        ));
    }
}
