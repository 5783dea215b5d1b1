//! After a successful builder: hand the outputs to registration and turn its answer into a
//! [`BuildOutcome`]; remember each round's outputs for `--repeat`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::engine::api::BuildMode;
use crate::engine::format::StorePath;
use crate::engine::format::refs::hash_and_scan;
use crate::engine::scheduler::BuildOutcome;
use crate::engine::store::PathInfo;
use crate::engine::store::canon::{self, InodesSeen};

use super::{Builder, Prepared};

/// The outputs of the previous round of each derivation built with `--repeat`.
#[derive(Debug, Default)]
pub struct Rounds(Mutex<HashMap<StorePath, BTreeMap<String, PathInfo>>>);

/// Registers the outputs of a builder that exited 0.
pub fn register(builder: &Builder, prepared: &Prepared, rounds: &Rounds) -> BuildOutcome {
    let _previous = rounds.0.lock().unwrap_or_else(|e| e.into_inner());
    let store = builder.store();
    let req = &prepared.request;
    if req.mode != BuildMode::Normal || req.nr_rounds > 1 {
        return BuildOutcome::MiscFailure {
            message: "only plain builds can be registered yet".into(),
        };
    }
    let mut candidates: Vec<StorePath> = prepared.input_paths.iter().cloned().collect();
    candidates.extend(prepared.outputs.iter().map(|o| o.path.clone()));
    let mut inodes = InodesSeen::new();
    let mut infos = Vec::new();
    for o in &prepared.outputs {
        if store.is_valid(&o.path).unwrap_or(false) {
            continue;
        }
        let real = store.real_path(&o.scratch);
        if std::fs::symlink_metadata(&real).is_err() {
            return BuildOutcome::OutputRejected {
                message: format!(
                    "builder for '{}' failed to produce output path for output '{}' at '{}'",
                    store.print(&req.drv_path),
                    o.name,
                    store.print(&o.scratch)
                ),
                hash_mismatch: false,
            };
        }
        if let Err(e) = canon::canonicalise_path_metadata(&real, None, &mut inodes) {
            return BuildOutcome::MiscFailure {
                message: e.to_string(),
            };
        }
        let scan = match hash_and_scan(&real, &candidates) {
            Ok(s) => s,
            Err(e) => {
                return BuildOutcome::MiscFailure {
                    message: e.to_string(),
                };
            }
        };
        let mut info = PathInfo::new(o.path.clone(), scan.nar_hash, scan.nar_size);
        info.references = scan.references;
        info.deriver = Some(req.drv_path.clone());
        info.ultimate = true;
        infos.push(info);
    }
    match store.register_valid_paths(&infos) {
        Ok(()) => BuildOutcome::Success,
        Err(e) => BuildOutcome::MiscFailure {
            message: e.to_string(),
        },
    }
}
