//! What `drover build` and the queries take as targets: `.drv` paths (valid in the store, or
//! imported from the real `/nix/store` when the store has the same store dir) with an optional
//! `^out,dev` output selection, or plain store paths (also through symlinks such as `result`).
//! `drover build` also takes plan files (`*.toml`, instantiated into the store) and Nix files
//! (`*.nix`, instantiated by the real `nix-instantiate` for this store's store dir, then
//! imported); `-A` picks their attributes as it does for nix-build.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::app::AppError;
use crate::app::plumbing::store::follow_links_to_store_path;
use crate::engine::format::StorePath;
use crate::engine::plan::{Instantiation, Plan};
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

/// What a command-line target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A plan file (`*.toml`).
    Plan,
    /// A Nix file (`*.nix`).
    Nix,
    /// A `.drv` or other store path.
    Store,
}

impl TargetKind {
    pub fn of(arg: &str) -> TargetKind {
        if arg.ends_with(".toml") {
            TargetKind::Plan
        } else if arg.ends_with(".nix") {
            TargetKind::Nix
        } else {
            TargetKind::Store
        }
    }
}

/// Resolves `drover build`'s targets: store paths and `.drv`s with [`resolve`], plan files
/// with [`plan_targets`] and Nix files with [`nix_targets`]; `attrs` (`-A`) select attributes
/// of the files.
pub fn resolve_all(
    store: &LocalStore,
    args: &[String],
    attrs: &[String],
) -> Result<Vec<Wanted>, AppError> {
    let files = args
        .iter()
        .filter(|a| TargetKind::of(a) != TargetKind::Store)
        .count();
    if !attrs.is_empty() && files == 0 {
        return Err(AppError::Usage(
            "-A selects attributes of plan (.toml) or Nix (.nix) files, and no such file was \
             given"
                .into(),
        ));
    }
    let mut wanted = Vec::new();
    for arg in args {
        match TargetKind::of(arg) {
            TargetKind::Plan => {
                wanted.extend(plan_targets(store, &Plan::load(Path::new(arg))?, attrs)?);
            }
            TargetKind::Nix => wanted.extend(nix_targets(store, Path::new(arg), attrs)?),
            TargetKind::Store => wanted.push(resolve(store, arg)?),
        }
    }
    Ok(wanted)
}

/// A derivation's first output as a target, the one nix-build builds for an attribute.
fn first_output(drv: StorePath, output: String) -> Wanted {
    Wanted {
        target: Target::Derivation {
            drv: drv.clone(),
            outputs: vec![output.clone()],
        },
        drv: Some((drv, vec![output])),
    }
}

/// Instantiates a plan into the store; its targets: the derivations named by `attrs`, or,
/// without any, every derivation no other derivation of the plan takes as an input (what
/// a Nix file's top-level attributes usually are: the things to build, not their parts).
/// Each is built for its first output, as nix-build builds an attribute's `outputName`.
pub fn plan_targets(
    store: &LocalStore,
    plan: &Plan,
    attrs: &[String],
) -> Result<Vec<Wanted>, AppError> {
    if attrs.is_empty() {
        return Ok(plan_roots(&plan.instantiate_in_store(store, None)?));
    }
    let mut wanted = Vec::new();
    for attr in attrs {
        let inst = plan.instantiate_in_store(store, Some(attr))?;
        for t in inst.targets {
            wanted.push(first_output(t.drv_path, t.output));
        }
    }
    Ok(wanted)
}

/// The roots of a whole plan's instantiation: its derivations no other one depends on, each
/// for its first output.
pub fn plan_roots(inst: &Instantiation) -> Vec<Wanted> {
    let inputs: BTreeSet<&StorePath> = inst
        .derivations
        .iter()
        .flat_map(|d| d.drv.input_drvs.keys())
        .collect();
    inst.targets
        .iter()
        .filter(|t| !inputs.contains(&t.drv_path))
        .map(|t| first_output(t.drv_path.clone(), t.output.clone()))
        .collect()
}

/// The warning nix-instantiate gives for every result when no `--add-root` is passed: the
/// derivations are imported at once, so it does not apply.
const ADD_ROOT_WARNING: &str = "warning: you did not specify '--add-root'";

/// Instantiates a Nix file with the real `nix-instantiate` (each of `attrs`, or the whole
/// file) into a scratch store with this store's store dir, then imports the `.drv` closures
/// (verified, see [`LocalStore::import_derivation_closure`]).
pub fn nix_targets(
    store: &LocalStore,
    file: &Path,
    attrs: &[String],
) -> Result<Vec<Wanted>, AppError> {
    if !file.exists() {
        return Err(AppError::Usage(format!(
            "Nix file '{}' does not exist",
            file.display()
        )));
    }
    let scratch = tempfile::Builder::new()
        .prefix("drover-instantiate-")
        .tempdir()
        .map_err(|e| AppError::io("creating", Path::new("a temporary directory"), e))?;
    let config = StoreConfig {
        store_dir: store.store_dir().clone(),
        real_store_dir: scratch.path().join("store"),
        state_dir: scratch.path().join("state"),
        log_dir: scratch.path().join("log"),
    };
    let uri = format!(
        "local?store={}&real={}&state={}&log={}",
        config.store_dir.as_str(),
        config.real_store_dir.display(),
        config.state_dir.display(),
        config.log_dir.display()
    );
    let mut command = Command::new("nix-instantiate");
    command
        .arg(file)
        .args(["--store", &uri])
        .args(["--option", "substituters", ""])
        .args(["--option", "build-users-group", ""]);
    for a in attrs {
        command.args(["-A", a]);
    }
    let output = command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            AppError::Usage(format!(
                "building '{}' needs Nix's nix-instantiate, which is not on PATH (install Nix, \
                 or build a .drv or a plan file)",
                file.display()
            ))
        } else {
            AppError::io("running", Path::new("nix-instantiate"), e)
        }
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let why = stderr.trim().trim_start_matches("error: ");
        return Err(AppError::Usage(format!(
            "nix-instantiate failed on '{}' ({}): {why}",
            file.display(),
            output.status
        )));
    }
    let mut err = std::io::stderr().lock();
    for line in stderr.lines().filter(|l| !l.starts_with(ADD_ROOT_WARNING)) {
        let _ = writeln!(err, "{line}");
    }
    let mut wanted = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (path, output) = line.split_once('!').unwrap_or((line, "out"));
        let drv = store
            .store_dir()
            .parse(path)
            .ok()
            .filter(StorePath::is_derivation)
            .ok_or_else(|| {
                AppError::Usage(format!(
                    "'{}' evaluates to '{line}', which is not a derivation",
                    file.display()
                ))
            })?;
        wanted.push(first_output(drv, output.to_owned()));
    }
    let drvs: Vec<StorePath> = wanted
        .iter()
        .filter_map(|w| w.drv.as_ref().map(|(d, _)| d.clone()))
        .collect();
    store.import_derivation_closure(&SourceStore::open(config), &drvs)?;
    // The scratch store's files are read-only, as store files are.
    let _ = crate::engine::store::canon::delete_path(scratch.path());
    Ok(wanted)
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
