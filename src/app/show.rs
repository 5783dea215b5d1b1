//! `drover show TARGET`: a derivation as `nix show-derivation` prints it (the same JSON, byte
//! for byte), then its outputs: their paths and whether the store has them (valid, with their
//! NAR hash and size; on disk but not registered; absent). With `--json`, one JSON object
//! holding both. A plain store path shows the derivation that made it (its deriver).

use std::io::Write;

use clap::Args;

use crate::app::AppError;
use crate::app::plumbing::store::StoreArgs;
use crate::app::targets::resolve;
use crate::engine::format::StorePath;
use crate::engine::format::derivation::write_show_derivation_json;
use crate::engine::scheduler::Target;
use crate::engine::store::{LocalStore, PathInfo};

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// One JSON object: `{"drvPath", "derivation", "outputs": {name: {path, valid, …}}}`.
    #[arg(long)]
    pub json: bool,
    /// A derivation (`/nix/store/…-x.drv`, optionally `^out,dev`), an output path, or a
    /// symlink to one (`./result`).
    #[arg(value_name = "TARGET")]
    pub target: String,
}

/// Whether the store has an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    Valid(Box<PathInfo>),
    /// The path is on disk but not registered (a leftover of an interrupted build).
    Unregistered,
    Absent,
}

/// An output of the shown derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputState {
    pub name: String,
    pub path: StorePath,
    pub validity: Validity,
    /// Selected by the target (`^out`), or all are.
    pub wanted: bool,
}

/// The derivation a target names, and the outputs it wants (empty: all).
pub fn derivation_of(
    store: &LocalStore,
    target: &str,
) -> Result<(StorePath, Vec<String>), AppError> {
    let wanted = resolve(store, target)?;
    match wanted.target {
        Target::Derivation { drv, outputs } => Ok((drv, outputs)),
        Target::Path(p) => {
            let info = store.query_path_info(&p)?.ok_or_else(|| {
                AppError::Usage(format!("path '{}' is not valid", store.print(&p)))
            })?;
            let drv = info.deriver.filter(|d| store.is_valid(d).unwrap_or(false));
            let drv = drv.ok_or_else(|| {
                AppError::Usage(format!(
                    "path '{}' has no known derivation in the store",
                    store.print(&p)
                ))
            })?;
            let name = store
                .derivation_output_paths(&drv)?
                .into_iter()
                .find(|(_, out)| *out == p)
                .map(|(name, _)| name);
            Ok((drv, name.into_iter().collect()))
        }
    }
}

/// The outputs of `drv` and whether the store has them.
pub fn output_states(
    store: &LocalStore,
    drv: &StorePath,
    wanted: &[String],
) -> Result<Vec<OutputState>, AppError> {
    let mut states = Vec::new();
    for (name, path) in store.derivation_output_paths(drv)? {
        let validity = match store.query_path_info(&path)? {
            Some(info) => Validity::Valid(Box::new(info)),
            None if std::fs::symlink_metadata(store.real_path(&path)).is_ok() => {
                Validity::Unregistered
            }
            None => Validity::Absent,
        };
        states.push(OutputState {
            wanted: wanted.is_empty() || wanted.contains(&name),
            name,
            path,
            validity,
        });
    }
    Ok(states)
}

/// Runs `drover show`.
pub fn show(args: &ShowArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let (drv_path, wanted) = derivation_of(&store, &args.target)?;
    let drv = store.read_derivation(&drv_path)?;
    let mut json = Vec::new();
    write_show_derivation_json(&mut json, store.store_dir(), [(&drv_path, &drv)]);
    let outputs = output_states(&store, &drv_path, &wanted)?;
    let mut out = Vec::new();
    if args.json {
        let derivation: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
            AppError::Usage(format!(
                "derivation '{}' is not UTF-8 JSON ({e}); `drover show` without --json prints it",
                store.print(&drv_path)
            ))
        })?;
        let printed = store.print(&drv_path);
        let mut outs = serde_json::Map::new();
        for o in &outputs {
            let mut v = serde_json::json!({
                "path": store.print(&o.path),
                "wanted": o.wanted,
                "valid": matches!(o.validity, Validity::Valid(_)),
                "onDisk": !matches!(o.validity, Validity::Absent),
            });
            if let Validity::Valid(info) = &o.validity {
                v["narHash"] = info.nar_hash.to_sri().into();
                v["narSize"] = info.nar_size.into();
                v["registrationTime"] = info.registration_time.into();
                v["ultimate"] = info.ultimate.into();
            }
            outs.insert(o.name.clone(), v);
        }
        let all = serde_json::json!({
            "drvPath": printed,
            "derivation": derivation[&printed],
            "outputs": outs,
        });
        out = serde_json::to_vec_pretty(&all)
            .map_err(std::io::Error::other)
            .map_err(AppError::Stdout)?;
        out.push(b'\n');
    } else {
        out.extend_from_slice(&json);
        out.extend_from_slice(b"outputs:\n");
        let width = outputs.iter().map(|o| o.name.len()).max().unwrap_or(0);
        for o in &outputs {
            let state = match &o.validity {
                Validity::Valid(info) => format!(
                    "valid ({}, {} bytes)",
                    info.nar_hash.to_sri(),
                    info.nar_size
                ),
                Validity::Unregistered => "not valid (on disk but not registered)".to_owned(),
                Validity::Absent => "not valid (not in the store)".to_owned(),
            };
            let mark = if o.wanted { ' ' } else { '-' };
            out.extend_from_slice(
                format!(
                    "{mark} {:width$}  {}  {state}\n",
                    o.name,
                    store.print(&o.path)
                )
                .as_bytes(),
            );
        }
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(&out).map_err(AppError::Stdout)?;
    lock.flush().map_err(AppError::Stdout)
}
