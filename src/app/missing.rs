//! What realising some targets needs, said before anything starts as Nix says it: Nix's
//! `queryMissing` (which derivations will be built, which paths will be fetched from a binary
//! cache and how much that downloads and unpacks, which paths nobody can make) and
//! `printMissing` (the "these N derivations will be built:" listing), for `drover build`, its
//! `--dry-run`, and `drover why`, which shows the reason found for every derivation.
//!
//! As in Nix 2.8: a derivation is visited with the outputs wanted of it; when every wanted
//! output is valid there is nothing to do; otherwise, if substitutes may be used (the
//! `substitute` setting, the derivation's `allowSubstitutes`), each invalid output is looked
//! up in the substituters, in order; if all are found they will be fetched (with their
//! references), else the derivation will be built and its input derivations are visited with
//! the outputs it takes from them. Lookups check no signatures (Nix checks them when it
//! substitutes).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

use crate::app::AppError;
use crate::app::nix_json::next_activity_id;
use crate::app::output::LogFormat;
use crate::app::targets::Wanted;
use crate::engine::build::parsed::ParsedDrv;
use crate::engine::executor::RunSubstituters;
use crate::engine::format::StorePath;
use crate::engine::scheduler::Target;
use crate::engine::settings::Settings;
use crate::engine::store::LocalStore;
use crate::engine::substitute::Substituters;

/// Where substitutes may come from.
pub struct SubstituteSource {
    /// The caches, when substitutes are used and there are some.
    pub substituters: Option<Substituters>,
    /// `--fallback`: a cache that fails a lookup is skipped with an error message instead of
    /// failing the query.
    pub try_fallback: bool,
    /// The `substitute` setting.
    pub use_substitutes: bool,
}

impl SubstituteSource {
    /// No substituters.
    pub fn none() -> SubstituteSource {
        SubstituteSource {
            substituters: None,
            try_fallback: false,
            use_substitutes: false,
        }
    }

    /// The caches of the `substituters` setting, opened as a build opens them (keys,
    /// `require-sigs`, HTTP options, the default cache left out for other store dirs; an
    /// HTTP cache's `nix-cache-info` is fetched, one that cannot be opened is left out with a
    /// warning, as Nix does).
    pub fn from_settings(
        settings: &Settings,
        store: &LocalStore,
    ) -> Result<SubstituteSource, AppError> {
        let subs = RunSubstituters::open(settings, store.store_dir())
            .map_err(|e| AppError::Usage(e.to_string()))?;
        Ok(SubstituteSource::of_run(settings, &subs))
    }

    /// The caches a build already opened: the listing and the build then share one set of
    /// lookups.
    pub fn of_run(settings: &Settings, subs: &RunSubstituters) -> SubstituteSource {
        SubstituteSource {
            substituters: (settings.substitute && !subs.uris().is_empty())
                .then(|| subs.substituters().clone()),
            try_fallback: settings.fallback,
            use_substitutes: settings.substitute,
        }
    }

    fn uris(&self) -> Vec<String> {
        self.substituters
            .as_ref()
            .map_or_else(Vec::new, Substituters::uris)
    }
}

/// What a substituter says about a path it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitutable {
    pub substituter: String,
    pub references: BTreeSet<StorePath>,
    /// The compressed file's size (0 when the narinfo does not say).
    pub download_size: u64,
    pub nar_size: u64,
}

/// Why a derivation will be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildReason {
    /// No substituter has this output (`asked`: the substituters, in the order asked).
    NotSubstitutable { output: String, asked: Vec<String> },
    /// Substitutes are not used (the `substitute` setting is false).
    SubstitutesOff,
    /// The derivation says `allowSubstitutes = false`.
    SubstitutesNotAllowed,
    /// Some output paths are not known before the build (content-addressed derivations).
    UnknownOutputPaths,
}

/// What will happen to one derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every wanted output is valid.
    NothingToDo,
    /// Every invalid wanted output will be fetched.
    Fetch,
    Build(BuildReason),
}

/// One derivation visited, and what will happen to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The outputs wanted of it (empty: all).
    pub wanted: Vec<String>,
    /// Its wanted outputs that are not valid.
    pub invalid: Vec<(String, StorePath)>,
    pub decision: Decision,
}

/// What realising some targets needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    pub will_build: BTreeSet<StorePath>,
    pub will_substitute: BTreeSet<StorePath>,
    pub unknown: BTreeSet<StorePath>,
    /// Bytes to download and unpack for `will_substitute`.
    pub download_size: u64,
    pub nar_size: u64,
    /// Every derivation visited (the first visit's wanted outputs).
    pub verdicts: BTreeMap<StorePath, Verdict>,
    /// What the substituters said of the paths to fetch.
    pub substitutes: BTreeMap<StorePath, Substitutable>,
    /// Every path looked up, in order, with the substituter asked (each once: as Nix's, the
    /// answers are kept for the run).
    pub lookups: Vec<(StorePath, String)>,
}

/// A path to realise: a derivation's outputs, or a plain path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Request {
    Built(StorePath, Vec<String>),
    Opaque(StorePath),
}

/// Nix's `queryMissing` for `wanted` (see the module doc).
pub fn query_missing(
    store: &LocalStore,
    wanted: &[Wanted],
    source: &SubstituteSource,
) -> Result<Missing, AppError> {
    let mut missing = Missing::default();
    let mut done = BTreeSet::new();
    let mut seen = HashSet::new();
    let mut queue: Vec<Request> = wanted
        .iter()
        .rev()
        .map(|w| match &w.target {
            Target::Derivation { drv, outputs } => Request::Built(drv.clone(), outputs.clone()),
            Target::Path(p) => Request::Opaque(p.clone()),
        })
        .collect();
    while let Some(request) = queue.pop() {
        if !done.insert(request.clone()) {
            continue;
        }
        match request {
            Request::Opaque(path) => {
                if store.is_valid(&path)? {
                    continue;
                }
                match substitutable(source, &path, &mut missing.lookups, &mut seen)? {
                    None => {
                        missing.unknown.insert(path);
                    }
                    Some(info) => {
                        missing.download_size += info.download_size;
                        missing.nar_size += info.nar_size;
                        queue.extend(info.references.iter().cloned().map(Request::Opaque));
                        missing.will_substitute.insert(path.clone());
                        missing.substitutes.insert(path, info);
                    }
                }
            }
            Request::Built(drv_path, outputs) => {
                if !store.is_valid(&drv_path)? {
                    missing.unknown.insert(drv_path);
                    continue;
                }
                let drv = store.read_derivation(&drv_path)?;
                let mut known = true;
                let mut invalid = Vec::new();
                for (name, path) in drv.output_paths() {
                    let Some(path) = path else {
                        known = false;
                        continue;
                    };
                    if (outputs.is_empty() || outputs.iter().any(|o| o == name))
                        && !store.is_valid(path)?
                    {
                        invalid.push((name.to_owned(), path.clone()));
                    }
                }
                let decision = if known && invalid.is_empty() {
                    Decision::NothingToDo
                } else if !known {
                    Decision::Build(BuildReason::UnknownOutputPaths)
                } else if !source.use_substitutes {
                    Decision::Build(BuildReason::SubstitutesOff)
                } else if !ParsedDrv::new(&drv, &drv_path.base_name())
                    .and_then(|p| p.substitutes_allowed())
                    .map_err(AppError::Usage)?
                {
                    Decision::Build(BuildReason::SubstitutesNotAllowed)
                } else {
                    let mut found = Vec::new();
                    let mut lacking = None;
                    for (name, path) in &invalid {
                        match substitutable(source, path, &mut missing.lookups, &mut seen)? {
                            Some(info) => found.push((path.clone(), info)),
                            None => {
                                lacking = Some(name.clone());
                                break;
                            }
                        }
                    }
                    match lacking {
                        Some(output) => Decision::Build(BuildReason::NotSubstitutable {
                            output,
                            asked: source.uris(),
                        }),
                        None => {
                            // Fetched as plain paths, with their references.
                            queue.extend(found.into_iter().map(|(p, _)| Request::Opaque(p)));
                            Decision::Fetch
                        }
                    }
                };
                if let Decision::Build(_) = decision {
                    missing.will_build.insert(drv_path.clone());
                    for (input, names) in drv.input_drvs.iter().rev() {
                        queue.push(Request::Built(
                            input.clone(),
                            names.iter().cloned().collect(),
                        ));
                    }
                }
                missing.verdicts.entry(drv_path).or_insert(Verdict {
                    wanted: outputs,
                    invalid,
                    decision,
                });
            }
        }
    }
    Ok(missing)
}

/// The first substituter that has `path` (Nix's `querySubstitutablePathInfos`): `None` when
/// none has it, or substitutes are not used.
fn substitutable(
    source: &SubstituteSource,
    path: &StorePath,
    lookups: &mut Vec<(StorePath, String)>,
    seen: &mut HashSet<(StorePath, String)>,
) -> Result<Option<Substitutable>, AppError> {
    let Some(subs) = &source.substituters else {
        return Ok(None);
    };
    for sub in 0..subs.len() {
        let asked = (path.clone(), subs.uris()[sub].clone());
        if seen.insert(asked.clone()) {
            lookups.push(asked);
        }
        match subs.narinfo(path, sub) {
            Ok(Some(info)) => {
                return Ok(Some(Substitutable {
                    substituter: subs.uris()[sub].clone(),
                    references: info.references.clone(),
                    download_size: info.file_size.unwrap_or(0),
                    nar_size: info.nar_size,
                }));
            }
            Ok(None) => {}
            Err(e) if source.try_fallback => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Nix's `printMissing`: the lines it prints (without newlines).
pub fn missing_lines(store: &LocalStore, missing: &Missing) -> Result<Vec<String>, AppError> {
    let mut lines = Vec::new();
    match missing.will_build.len() {
        0 => {}
        1 => lines.push("this derivation will be built:".to_owned()),
        n => lines.push(format!("these {n} derivations will be built:")),
    }
    for d in store.sort_for_printing(&missing.will_build)? {
        lines.push(format!("  {}", store.print(&d)));
    }
    if !missing.will_substitute.is_empty() {
        let sizes = format!(
            "({} MiB download, {} MiB unpacked)",
            mib(missing.download_size),
            mib(missing.nar_size)
        );
        match missing.will_substitute.len() {
            1 => lines.push(format!("this path will be fetched {sizes}:")),
            n => lines.push(format!("these {n} paths will be fetched {sizes}:")),
        }
        for p in &missing.will_substitute {
            lines.push(format!("  {}", store.print(p)));
        }
    }
    if !missing.unknown.is_empty() {
        lines.push("don't know how to build these paths:".to_owned());
        for p in &missing.unknown {
            lines.push(format!("  {}", store.print(p)));
        }
    }
    Ok(lines)
}

/// Bytes in MiB as Nix prints them: `%.2f` of a single-precision float.
fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f32 / (1024.0 * 1024.0))
}

/// Says what will be built (and fetched), as nix-build does before it starts: on standard
/// error, as lines, or as Nix's `msg` records in internal-json mode.
pub fn print_missing_with(
    store: &LocalStore,
    wanted: &[Wanted],
    source: &SubstituteSource,
    format: LogFormat,
) -> Result<Missing, AppError> {
    let missing = query_missing(store, wanted, source)?;
    let lines = missing_lines(store, &missing)?;
    let mut text = Vec::new();
    if format == LogFormat::InternalJson {
        // As Nix: the query is an activity (of level debug, 6; type unknown, 0), then the
        // listing. Each lookup is one too (query path info, 109; talkative, 4), within it.
        let id = next_activity_id();
        let start = serde_json::json!({"action": "start", "id": id, "level": 6,
            "text": "querying info about missing paths", "type": 0});
        text.extend_from_slice(format!("@nix {start}\n").as_bytes());
        for (path, uri) in &missing.lookups {
            let sub_id = next_activity_id();
            let path = store.print(path);
            let start = serde_json::json!({"action": "start", "fields": [path, uri],
                "id": sub_id, "level": 4, "type": 109,
                "text": format!("querying info about '{path}' on '{uri}'")});
            let stop = serde_json::json!({"action": "stop", "id": sub_id});
            text.extend_from_slice(format!("@nix {start}\n@nix {stop}\n").as_bytes());
        }
        let stop = serde_json::json!({"action": "stop", "id": id});
        text.extend_from_slice(format!("@nix {stop}\n").as_bytes());
    }
    for line in lines {
        if format == LogFormat::InternalJson {
            // Nix prints each line as a message of level info (3).
            let record = serde_json::json!({"action": "msg", "level": 3, "msg": line});
            text.extend_from_slice(format!("@nix {record}\n").as_bytes());
        } else {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
    }
    std::io::stderr()
        .write_all(&text)
        .map_err(|e| AppError::io("writing to", Path::new("standard error"), e))?;
    Ok(missing)
}

/// `drover build --dry-run`: says what would be built and fetched (with the substituters of
/// `settings`) and stops; exit status 0, as Nix's.
pub fn dry_run(
    store: &LocalStore,
    wanted: &[Wanted],
    settings: &Settings,
    format: Option<LogFormat>,
) -> Result<u8, AppError> {
    let source = SubstituteSource::from_settings(settings, store)?;
    print_missing_with(store, wanted, &source, format.unwrap_or(LogFormat::Plain))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_printed_as_nix_prints_them() {
        assert_eq!(mib(0), "0.00");
        assert_eq!(mib(1024 * 1024), "1.00");
        assert_eq!(mib(123_456), "0.12");
        assert_eq!(mib(5_767_168), "5.50");
    }
}
