//! What `drover build` and the queries take as targets: `.drv` paths (valid in the store, or
//! imported from the real `/nix/store` when the store has the same store dir) with an optional
//! `^out,dev` output selection, or plain store paths (also through symlinks such as `result`).

use crate::app::AppError;
use crate::app::plumbing::store::follow_links_to_store_path;
use crate::engine::format::StorePath;
use crate::engine::scheduler::Target;
use crate::engine::store::import::SourceStore;
use crate::engine::store::{EnvOverrides, LocalStore, StoreConfig};

/// A target as given: what to realise, and which outputs the out-links name.
pub struct Wanted {
    pub target: Target,
    /// The derivation and its wanted outputs (empty: all), for out-links.
    pub drv: Option<(StorePath, Vec<String>)>,
}

/// Splits `path^out,dev` into the path and the selected outputs (`*` or none: all).
pub fn split_outputs(arg: &str) -> (&str, Vec<String>) {
    match arg.split_once('^') {
        None => (arg, Vec::new()),
        Some((path, "*")) => (path, Vec::new()),
        Some((path, outs)) => (
            path,
            outs.split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    }
}

/// Resolves one target, importing a `.drv` (and its closure) from the real `/nix/store` when
/// this store lacks it and shares that store dir.
pub fn resolve(store: &LocalStore, arg: &str) -> Result<Wanted, AppError> {
    let (path, outputs) = split_outputs(arg);
    let p = follow_links_to_store_path(store, path)?;
    if !p.is_derivation() {
        if !outputs.is_empty() {
            return Err(AppError::Usage(format!(
                "'{}' is not a derivation, so it has no outputs to select",
                store.print(&p)
            )));
        }
        return Ok(Wanted {
            target: Target::Path(p),
            drv: None,
        });
    }
    if !store.is_valid(&p)? {
        let env = EnvOverrides::from_env();
        let real = StoreConfig::parse(Some("local"), &env)?;
        let printed = store.print(&p);
        if real.store_dir != *store.store_dir() || !real.real_store_dir.join(p.base_name()).exists()
        {
            return Err(AppError::Usage(format!(
                "derivation '{printed}' is not valid in the store"
            )));
        }
        store.import_derivation_closure(&SourceStore::open(real), std::slice::from_ref(&p))?;
    }
    let known = store.derivation_output_paths(&p)?;
    for o in &outputs {
        if !known.contains_key(o) {
            return Err(AppError::Usage(format!(
                "derivation '{}' does not have output '{o}'",
                store.print(&p)
            )));
        }
    }
    Ok(Wanted {
        target: Target::Derivation {
            drv: p.clone(),
            outputs: outputs.clone(),
        },
        drv: Some((p, outputs)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_selections() {
        assert_eq!(split_outputs("/s/x.drv"), ("/s/x.drv", vec![]));
        assert_eq!(split_outputs("/s/x.drv^*"), ("/s/x.drv", vec![]));
        assert_eq!(
            split_outputs("/s/x.drv^out,dev"),
            ("/s/x.drv", vec!["out".to_owned(), "dev".to_owned()])
        );
    }
}
