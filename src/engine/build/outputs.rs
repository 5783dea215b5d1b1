//! After a successful builder: hand the outputs to [`mod@super::register`] and turn its
//! answer into a [`BuildOutcome`]; remember each round's outputs for `--repeat`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::engine::format::StorePath;
use crate::engine::scheduler::BuildOutcome;

use super::register::{self, RegisterRequest, Registered};
use super::{Builder, Prepared};

/// What the previous round of each derivation built with `--repeat` produced.
#[derive(Debug, Default)]
pub struct Rounds(Mutex<HashMap<StorePath, Registered>>);

impl Rounds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StorePath, Registered>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Registers the outputs of a builder that exited 0 (checks them in check mode, compares
/// them with the previous round's from round 2 on).
pub fn register(builder: &Builder, prepared: &Prepared, rounds: &Rounds) -> BuildOutcome {
    let req = &prepared.request;
    let previous = if req.round > 1 {
        rounds.lock().remove(&req.drv_path)
    } else {
        None
    };
    let request = RegisterRequest {
        drv_path: &req.drv_path,
        drv: &prepared.drv,
        outputs: prepared.outputs.clone(),
        input_closure: &prepared.input_paths,
        mode: req.mode,
        keep_failed: builder.settings().keep_failed,
        round: req.round,
        nr_rounds: req.nr_rounds,
        previous_round: previous.as_ref(),
        enforce_determinism: builder.settings().enforce_determinism,
        build_uid: None,
    };
    match register::register_outputs(builder.store(), request) {
        Ok(registered) => {
            if req.round == req.nr_rounds && req.mode != crate::engine::api::BuildMode::Check {
                for info in registered.outputs.values() {
                    builder
                        .memo()
                        .remember(info.path.clone(), info.references.iter().cloned());
                }
            }
            let outcome = registered.outcome();
            if req.round < req.nr_rounds && outcome == BuildOutcome::Success {
                rounds.lock().insert(req.drv_path.clone(), registered);
            }
            outcome
        }
        Err(rejection) => rejection.into_outcome(),
    }
}
