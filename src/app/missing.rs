//! What a build is about to do, said before it starts as nix-build says it: the derivations
//! that will be built and the paths nobody knows how to make.

use std::io::Write;
use std::path::Path;

use crate::app::AppError;
use crate::app::targets::Wanted;
use crate::engine::scheduler::Target;
use crate::engine::store::LocalStore;

/// Says what will be built, as nix-build does before it starts.
pub fn print_missing(store: &LocalStore, wanted: &[Wanted]) -> Result<(), AppError> {
    let mut drvs = Vec::new();
    let mut paths = Vec::new();
    for w in wanted {
        match &w.target {
            Target::Derivation { drv, outputs } => drvs.push((drv.clone(), outputs.clone())),
            Target::Path(p) => paths.push(p.clone()),
        }
    }
    let missing = store.query_missing(&drvs, &paths)?;
    let mut text = String::new();
    match missing.will_build.len() {
        0 => {}
        1 => text.push_str("this derivation will be built:\n"),
        n => text.push_str(&format!("these {n} derivations will be built:\n")),
    }
    for d in store.sort_for_printing(&missing.will_build)? {
        text.push_str(&format!("  {}\n", store.print(&d)));
    }
    if !missing.unknown.is_empty() {
        text.push_str("don't know how to build these paths:\n");
        for p in &missing.unknown {
            text.push_str(&format!("  {}\n", store.print(p)));
        }
    }
    std::io::stderr()
        .write_all(text.as_bytes())
        .map_err(|e| AppError::io("writing to", Path::new("standard error"), e))
}
