//! Store plumbing: `query`, `add`, `verify`, `log`, formatted like `nix-store`'s, on any store
//! given with `--store` (default: drover's own store).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::app::AppError;
use crate::engine::format::{HashAlgo, IngestionMethod, StorePath};
use crate::engine::scheduler::Target;
use crate::engine::store::import::SourceStore;
use crate::engine::store::{ClosureFlags, EnvOverrides, LocalStore, StoreConfig};

/// The `--store` option shared by store commands.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The store: `local` (the real /nix), a directory (chroot store), `local?root=DIR` or
    /// `local?store=…&state=…&log=…`. Default: drover's own store under $XDG_DATA_HOME/drover.
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
}

impl StoreArgs {
    pub fn open(&self) -> Result<LocalStore, AppError> {
        let config = StoreConfig::parse(self.store.as_deref(), &EnvOverrides::from_env())?;
        Ok(LocalStore::open(config)?)
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("query").multiple(false)))]
pub struct QueryArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The outputs of the derivations (the default query).
    #[arg(long, group = "query")]
    pub outputs: bool,
    /// The closure of the paths, references before referrers.
    #[arg(long, short = 'R', group = "query")]
    pub requisites: bool,
    /// The paths' references.
    #[arg(long, group = "query")]
    pub references: bool,
    /// The valid paths that refer to the paths.
    #[arg(long, group = "query")]
    pub referrers: bool,
    /// The closure of the paths under the referrer relation.
    #[arg(long, group = "query")]
    pub referrers_closure: bool,
    /// The derivation that produced each path (`unknown-deriver` when none is recorded).
    #[arg(long, short = 'd', group = "query")]
    pub deriver: bool,
    /// The valid derivations that have each path as an output.
    #[arg(long, group = "query")]
    pub valid_derivers: bool,
    /// The NAR hash of each path (`sha256:<base32>`).
    #[arg(long, group = "query")]
    pub hash: bool,
    /// The NAR size of each path.
    #[arg(long, group = "query")]
    pub size: bool,
    /// With --requisites: include the outputs of derivations in the closure.
    #[arg(long)]
    pub include_outputs: bool,
    /// Apply the query to the outputs of derivation arguments.
    #[arg(long, short = 'u')]
    pub use_output: bool,
    /// Store paths (or symlinks to them, or paths inside them).
    #[arg(required = true)]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Add as a flat file hashed by its contents (`--add-fixed` without `--recursive`).
    #[arg(long)]
    pub flat: bool,
    /// Hash algorithm of the content address (default sha256).
    #[arg(long = "type", default_value = "sha256", value_parser = super::nar::parse_algo)]
    pub algo: HashAlgo,
    /// The files or directories to add.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Recompute the NAR hash of every valid path.
    #[arg(long)]
    pub check_contents: bool,
}

#[derive(Debug, Args)]
pub struct ImportDrvArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The store to copy from (default `local`: the real /nix, where nix-instantiate writes).
    #[arg(long, value_name = "STORE", default_value = "local")]
    pub from: String,
    /// The `.drv` paths to import with their closures.
    #[arg(required = true)]
    pub drvs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A derivation (`.drv`, `.drv^out`), an output path, or a symlink to one (`./result`).
    #[arg(required = true)]
    pub paths: Vec<String>,
}

/// Resolves a command-line argument to a store path as Nix's `followLinksToStorePath`:
/// a path in (or inside) the store, or a symlink chain leading there.
pub fn follow_links_to_store_path(store: &LocalStore, arg: &str) -> Result<StorePath, AppError> {
    let sd = store.store_dir();
    let mut path = absolute(Path::new(arg))?;
    for _ in 0..64 {
        let s = path.to_string_lossy().into_owned();
        if sd.is_in_store(&s) {
            return Ok(sd.split_path(&s)?.0);
        }
        match std::fs::read_link(&path) {
            Ok(target) => path = absolute(&path.parent().unwrap_or(Path::new("/")).join(target))?,
            Err(_) => break,
        }
    }
    Err(AppError::Usage(format!(
        "path '{}' is not in the Nix store",
        path.display()
    )))
}

/// An absolute, lexically normalised path (no `.`/`..`, no symlink resolution).
fn absolute(p: &Path) -> Result<PathBuf, AppError> {
    let base = if p.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().map_err(|e| AppError::io("getting", Path::new("."), e))?
    };
    let mut out = PathBuf::from("/");
    for c in base.join(p).components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

fn print_lines(lines: impl IntoIterator<Item = String>) -> Result<(), AppError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for l in lines {
        writeln!(out, "{l}").map_err(AppError::Stdout)?;
    }
    out.flush().map_err(AppError::Stdout)
}

/// The outputs of a derivation when `use_output`, else the path itself.
fn maybe_use_outputs(
    store: &LocalStore,
    path: StorePath,
    use_output: bool,
) -> Result<BTreeSet<StorePath>, AppError> {
    if use_output && path.is_derivation() {
        Ok(store
            .derivation_output_paths(&path)?
            .into_values()
            .collect())
    } else {
        Ok([path].into())
    }
}

pub fn query(args: &QueryArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let mut roots = Vec::new();
    for a in &args.paths {
        roots.push(follow_links_to_store_path(&store, a)?);
    }
    let set_query = args.requisites || args.references || args.referrers || args.referrers_closure;
    if set_query {
        let mut paths = BTreeSet::new();
        for root in roots {
            for p in maybe_use_outputs(&store, root, args.use_output)? {
                if args.requisites {
                    let flags = ClosureFlags {
                        include_outputs: args.include_outputs,
                        ..Default::default()
                    };
                    paths.extend(store.compute_fs_closure([p], flags)?);
                } else if args.references {
                    paths.extend(store.query_references(&p)?);
                } else if args.referrers {
                    paths.extend(store.query_referrers(&p)?);
                } else {
                    let flags = ClosureFlags {
                        flip_direction: true,
                        ..Default::default()
                    };
                    paths.extend(store.compute_fs_closure([p], flags)?);
                }
            }
        }
        let sorted = store.topo_sort_paths(&paths)?;
        return print_lines(sorted.iter().rev().map(|p| store.print(p)));
    }
    let mut lines = Vec::new();
    for root in roots {
        if args.deriver {
            let info = store.path_info(&root)?;
            lines.push(match info.deriver {
                Some(d) => store.print(&d),
                None => "unknown-deriver".into(),
            });
        } else if args.valid_derivers {
            lines.extend(
                store
                    .query_valid_derivers(&root)?
                    .iter()
                    .map(|d| store.print(d)),
            );
        } else if args.hash || args.size {
            for p in maybe_use_outputs(&store, root, args.use_output)? {
                let info = store.path_info(&p)?;
                lines.push(if args.hash {
                    info.nar_hash.to_nix32_prefixed()
                } else {
                    info.nar_size.to_string()
                });
            }
        } else {
            for p in maybe_use_outputs(&store, root, true)? {
                lines.push(store.print(&p));
            }
        }
    }
    print_lines(lines)
}

pub fn add(args: &AddArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let method = if args.flat {
        IngestionMethod::Flat
    } else {
        IngestionMethod::Recursive
    };
    let mut lines = Vec::new();
    for p in &args.paths {
        let path = store.add_to_store(p, None, method, args.algo)?;
        lines.push(store.print(&path));
    }
    print_lines(lines)
}

pub fn verify(args: &VerifyArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let report = store.verify(args.check_contents)?;
    for r in &report.removed {
        eprintln!("path '{r}' disappeared, removing from database...");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Usage("not all store errors were fixed".into()))
    }
}

pub fn import_drv(args: &ImportDrvArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let env = EnvOverrides::from_env();
    let source = SourceStore::open(StoreConfig::parse(Some(&args.from), &env)?);
    let mut drvs = Vec::new();
    for d in &args.drvs {
        let p = follow_links_to_store_path(&store, d)?;
        if !p.is_derivation() {
            return Err(AppError::Usage(format!(
                "'{}' is not a derivation",
                store.print(&p)
            )));
        }
        drvs.push(p);
    }
    store.import_derivation_closure(&source, &drvs)?;
    print_lines(drvs.iter().map(|d| store.print(d)))
}

pub fn log(args: &LogArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for a in &args.paths {
        // The targets `drover build` takes: a derivation's log, or its output's.
        let path = match crate::app::targets::resolve(&store, a)?.target {
            Target::Derivation { drv, .. } => drv,
            Target::Path(p) => p,
        };
        let log = store.read_log(&path)?.ok_or_else(|| {
            AppError::Usage(format!(
                "build log of derivation '{}' is not available",
                store.print(&path)
            ))
        })?;
        out.write_all(&log).map_err(AppError::Stdout)?;
    }
    out.flush().map_err(AppError::Stdout)
}
