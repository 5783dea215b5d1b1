//! `drover why TARGET…`: why realising the targets would build what it builds. For every
//! derivation Nix's `queryMissing` visits (see `app::missing`), in the order the build listing
//! uses: which wanted outputs are not valid (not in the store, or on disk but not registered),
//! and why they will be built rather than fetched (no substituter has them, and which were
//! asked; substitutes off; `allowSubstitutes = false`; output paths unknown before the build),
//! or that they will be fetched, or that there is nothing to do. A failure cached in
//! `drover.sqlite` is said too. Then the plain paths to fetch and the paths nobody can make.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;

use clap::Args;

use crate::app::AppError;
use crate::app::missing::{BuildReason, Decision, Missing, SubstituteSource, query_missing};
use crate::app::plumbing::store::StoreArgs;
use crate::app::targets::resolve;
use crate::engine::format::StorePath;
use crate::engine::settings::Settings;
use crate::engine::store::LocalStore;
use crate::engine::store::drover_db::DroverDb;

#[derive(Debug, Args)]
pub struct WhyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Set a nix.conf setting (`substituters`, `substitute`, `cache-failures`, ...).
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Derivations (`/nix/store/…-x.drv`, optionally `^out,dev`), store paths, or symlinks to
    /// them.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
}

fn settings(args: &WhyArgs) -> Result<Settings, AppError> {
    let bad = |e: crate::engine::settings::SettingsError| AppError::Usage(e.to_string());
    let mut s = Settings::load().map_err(bad)?;
    for pair in args.options.chunks(2) {
        s.set(&pair[0], &pair[1]).map_err(bad)?;
    }
    Ok(s)
}

/// Runs `drover why`.
pub fn why(args: &WhyArgs) -> Result<(), AppError> {
    let settings = settings(args)?;
    let store = args.store.open()?;
    let mut wanted = Vec::new();
    for t in &args.targets {
        wanted.push(resolve(&store, t)?);
    }
    let source = SubstituteSource::from_settings(&settings, &store)?;
    let missing = query_missing(&store, &wanted, &source)?;
    let failures = DroverDb::open(&store.config().state_dir)?;
    let unavailable = source
        .substituters
        .as_ref()
        .map_or(&[][..], |s| s.skipped());
    let text = explain(
        &store,
        &missing,
        &failures,
        settings.cache_failures,
        unavailable,
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(text.as_bytes()).map_err(AppError::Stdout)?;
    out.flush().map_err(AppError::Stdout)
}

/// Where a path that is not valid is.
fn absence(store: &LocalStore, path: &StorePath) -> &'static str {
    if std::fs::symlink_metadata(store.real_path(path)).is_ok() {
        "is on disk but not registered as valid"
    } else {
        "is not in the store"
    }
}

/// The explanation `drover why` prints; `unavailable` says why configured substituters were
/// left out.
pub fn explain(
    store: &LocalStore,
    missing: &Missing,
    failures: &DroverDb,
    cache_failures: bool,
    unavailable: &[String],
) -> Result<String, AppError> {
    let mut text = String::new();
    let drvs: BTreeSet<StorePath> = missing.verdicts.keys().cloned().collect();
    for drv in store.sort_for_printing(&drvs)? {
        let v = &missing.verdicts[&drv];
        let head = match &v.decision {
            Decision::NothingToDo => "nothing to do: the outputs wanted of it are valid",
            Decision::Fetch => "will be fetched",
            Decision::Build(_) => "will be built",
        };
        let _ = writeln!(text, "{}: {head}", store.print(&drv));
        for (name, path) in &v.invalid {
            let _ = writeln!(
                text,
                "  output '{name}' ({}) {}",
                store.print(path),
                absence(store, path)
            );
        }
        match &v.decision {
            Decision::NothingToDo => {}
            Decision::Fetch => {
                for (name, path) in &v.invalid {
                    if let Some(s) = missing.substitutes.get(path) {
                        let _ = writeln!(
                            text,
                            "  output '{name}' is substitutable from {} ({} bytes download, {} \
                             bytes unpacked)",
                            s.substituter, s.download_size, s.nar_size
                        );
                    }
                }
            }
            Decision::Build(reason) => {
                let why = match reason {
                    BuildReason::NotSubstitutable { output, asked }
                        if asked.is_empty() && unavailable.is_empty() =>
                    {
                        format!(
                            "output '{output}' is not substitutable: no substituters are configured"
                        )
                    }
                    BuildReason::NotSubstitutable { output, asked } if asked.is_empty() => format!(
                        "output '{output}' is not substitutable: no substituter could be used ({})",
                        unavailable.join("; ")
                    ),
                    BuildReason::NotSubstitutable { output, asked } => format!(
                        "output '{output}' is not substitutable: no substituter has it (asked {})",
                        asked.join(", ")
                    ),
                    BuildReason::SubstitutesOff => {
                        "substitutes are not used (the 'substitute' setting is false)".to_owned()
                    }
                    BuildReason::SubstitutesNotAllowed => {
                        "the derivation does not allow substitutes (allowSubstitutes = false)"
                            .to_owned()
                    }
                    BuildReason::UnknownOutputPaths => {
                        "its output paths are not known before it is built".to_owned()
                    }
                };
                let _ = writeln!(text, "  {why}");
                for (name, path) in &v.invalid {
                    let Some(time) = failures.failure_time(&store.print(path))? else {
                        continue;
                    };
                    let then = if cache_failures {
                        "with cache-failures on, it fails at once (a retry clears it)"
                    } else {
                        "cache-failures is off: it will be built again"
                    };
                    let _ = writeln!(
                        text,
                        "  cached failure: building output '{name}' failed {} ({then})",
                        ago(time)
                    );
                }
            }
        }
    }
    let fetched: Vec<&StorePath> = missing
        .will_substitute
        .iter()
        .filter(|p| {
            !missing
                .verdicts
                .values()
                .any(|v| v.invalid.iter().any(|(_, o)| o == *p))
        })
        .collect();
    if !fetched.is_empty() {
        let _ = writeln!(text, "paths that will be fetched (needed by the above):");
        for p in fetched {
            let from = missing
                .substitutes
                .get(p)
                .map_or("", |s| s.substituter.as_str());
            let _ = writeln!(text, "  {} from {from}", store.print(p));
        }
    }
    if !missing.unknown.is_empty() {
        let _ = writeln!(
            text,
            "don't know how to build these paths (not valid, no derivation, no substituter has them):"
        );
        for p in &missing.unknown {
            let _ = writeln!(text, "  {}", store.print(p));
        }
    }
    Ok(text)
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago` for a time in seconds since the epoch.
fn ago(time: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let s = (now - time).max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}
