//! `show-derivation` and `store-path`: derivations and store path computations.
//!
//! A `.drv` file given on the command line has the store path it lies at when it is directly
//! inside the store directory; anywhere else its path is computed from its contents, with
//! the name taken from the file name (`<hash>-<name>.drv`) or else from its `name` variable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::app::AppError;
use crate::engine::format::derivation::{
    Derivation, DerivationError, DrvHashes, write_show_derivation_json,
};
use crate::engine::format::store_path::DRV_EXTENSION;
use crate::engine::format::{Hash, HashAlgo, IngestionMethod, StoreDir, StorePath};

const STORE_DIR_HELP: &str = "Logical store directory: the prefix of every store path";

#[derive(Debug, Args)]
pub struct ShowDerivationArgs {
    /// Reprint the ATerm instead of JSON (byte-identical to the input for a valid `.drv`;
    /// several files are separated by a newline).
    #[arg(long)]
    pub aterm: bool,
    /// Also show the input derivations, recursively, read from the store directory (or
    /// `--store-root`).
    #[arg(long, short = 'r', conflicts_with = "aterm")]
    pub recursive: bool,
    #[arg(long, default_value = "/nix/store", help = STORE_DIR_HELP)]
    pub store_dir: String,
    /// Where the store directory's files really are (e.g. `/tmp/x/nix/store` for a chroot
    /// store); defaults to the store directory.
    #[arg(long)]
    pub store_root: Option<PathBuf>,
    /// The `.drv` files: one directly in the store directory is shown under that path, any
    /// other under the path computed from its contents (JSON keys are sorted, as Nix does).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// What kind of store path to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathType {
    /// A file added as text with references (`builtins.toFile`, `.drv` files): FILE, --name,
    /// --ref.
    Text,
    /// A tree added by the sha256 of its NAR (`nix-store --add`): --name, --hash, --ref,
    /// --self-ref.
    Source,
    /// A fixed-output path (`nix-store --add-fixed`, fixed-output derivations): --name,
    /// --hash, --method.
    Fixed,
    /// The `.drv` path of the derivation in FILE.
    Drv,
    /// The output paths of the derivation in FILE, recomputed as Nix does (one per line; an
    /// error if the derivation records other paths); --output selects outputs.
    Output,
}

/// How a fixed output is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// The file's bytes.
    Flat,
    /// The NAR serialisation.
    Recursive,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  drover store-path --type text --name builder.sh --ref /nix/store/…-dep FILE
  drover store-path --type source ./src            (like a Nix path literal ./src)
  drover store-path --type source --name src --hash sha256:<nar hash>
  drover store-path --type fixed --method recursive --hash sha256-<base64> --name foo
  drover store-path --type drv FILE.drv
  drover store-path --type output --output dev FILE.drv

Hashes are `algo:<base16|base32|base64>` or SRI `algo-<base64>`. `--type source` hashes FILE
(a file or directory, named after it unless --name) or takes its NAR sha256 from --hash.")]
pub struct StorePathArgs {
    #[arg(long = "type", value_enum)]
    pub path_type: PathType,
    /// The name part of the path (text, source, fixed; optional for drv).
    #[arg(long)]
    pub name: Option<String>,
    /// A reference (full store path), repeatable (text, source).
    #[arg(long = "ref", value_name = "PATH")]
    pub refs: Vec<String>,
    /// The object refers to itself (source).
    #[arg(long)]
    pub self_ref: bool,
    /// The content hash (source: NAR sha256; fixed: any algorithm).
    #[arg(long)]
    pub hash: Option<String>,
    /// How a fixed output is hashed.
    #[arg(long, value_enum, default_value = "flat")]
    pub method: Method,
    /// Output names to print (output; default: all).
    #[arg(long = "output", value_name = "NAME")]
    pub outputs: Vec<String>,
    #[arg(long, default_value = "/nix/store", help = STORE_DIR_HELP)]
    pub store_dir: String,
    /// Where input derivations are read from (output); defaults to the store directory.
    #[arg(long)]
    pub store_root: Option<PathBuf>,
    /// The file (text: its contents, `-` for standard input; source: the file or directory;
    /// drv, output: the `.drv`).
    pub file: Option<PathBuf>,
}

pub fn show_derivation(args: &ShowDerivationArgs) -> Result<(), AppError> {
    let store_dir = StoreDir::new(args.store_dir.as_str())?;
    let root = args
        .store_root
        .clone()
        .unwrap_or_else(|| args.store_dir.clone().into());
    let mut out = Vec::new();
    if args.aterm {
        for (i, file) in args.paths.iter().enumerate() {
            let (_, drv) = read_drv_file(&located(file, &store_dir, &root), &store_dir)?;
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(&drv.to_aterm(&store_dir));
        }
        return write_stdout(&out);
    }
    let mut drvs = BTreeMap::new();
    for file in &args.paths {
        let (path, drv) = read_drv_file(&located(file, &store_dir, &root), &store_dir)?;
        drvs.insert(path, drv);
    }
    if args.recursive {
        let mut todo: Vec<StorePath> = drvs
            .values()
            .flat_map(|d| d.input_drvs.keys().cloned())
            .collect();
        while let Some(path) = todo.pop() {
            if drvs.contains_key(&path) {
                continue;
            }
            let drv = read_store_drv(&root, &store_dir, &path)?;
            todo.extend(drv.input_drvs.keys().cloned());
            drvs.insert(path, drv);
        }
    }
    write_show_derivation_json(&mut out, &store_dir, &drvs);
    write_stdout(&out)
}

pub fn store_path(args: &StorePathArgs) -> Result<(), AppError> {
    let store_dir = StoreDir::new(args.store_dir.as_str())?;
    let refs = args
        .refs
        .iter()
        .map(|r| store_dir.parse(r))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let name = || {
        args.name
            .as_deref()
            .ok_or_else(|| AppError::Usage("--name is required for this --type".into()))
    };
    let hash = || {
        let h = args
            .hash
            .as_deref()
            .ok_or_else(|| AppError::Usage("--hash is required for this --type".into()))?;
        Ok::<_, AppError>(Hash::parse_prefixed(h)?)
    };
    let file = || {
        args.file
            .as_deref()
            .ok_or_else(|| AppError::Usage("a FILE is required for this --type".into()))
    };
    let no_refs = |kind: &str| {
        if args.refs.is_empty() && !args.self_ref {
            Ok(())
        } else {
            Err(AppError::Usage(format!(
                "--ref and --self-ref do not apply to --type {kind}"
            )))
        }
    };
    let mut lines = Vec::new();
    match args.path_type {
        PathType::Text => {
            let contents = read_input(file()?)?;
            if args.self_ref {
                return Err(AppError::Usage("a text path cannot refer to itself".into()));
            }
            lines.push(store_dir.compute_text_path(name()?, &contents, &refs)?);
        }
        PathType::Source => {
            // The NAR sha256 comes from --hash, or from hashing FILE (a path literal).
            let (hash, file_name) = match (&args.hash, &args.file) {
                (None, Some(path)) => {
                    let (h, _) = crate::engine::format::nar::hash_path(path, HashAlgo::Sha256)?;
                    (
                        h,
                        path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    )
                }
                _ => (hash()?, None),
            };
            if hash.algo() != HashAlgo::Sha256 {
                return Err(AppError::Usage(
                    "--type source needs the sha256 of the NAR".into(),
                ));
            }
            let name = match (&args.name, file_name) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => n,
                (None, None) => name()?.to_owned(),
            };
            lines.push(store_dir.make_fixed_output_path(
                IngestionMethod::Recursive,
                &hash,
                &name,
                &refs,
                args.self_ref,
            )?);
        }
        PathType::Fixed => {
            no_refs("fixed")?;
            let method = match args.method {
                Method::Flat => IngestionMethod::Flat,
                Method::Recursive => IngestionMethod::Recursive,
            };
            lines.push(store_dir.make_fixed_output_path(
                method,
                &hash()?,
                name()?,
                &BTreeSet::new(),
                false,
            )?);
        }
        PathType::Drv => {
            no_refs("drv")?;
            let file = file()?;
            let bytes = read_file(file)?;
            let drv = parse_drv(file, &bytes, &store_dir)?;
            let name = match &args.name {
                Some(n) => n.clone(),
                None => drv_name(file, &drv)?,
            };
            lines.push(drv.drv_path(&store_dir, &name)?);
        }
        PathType::Output => {
            no_refs("output")?;
            let file = file()?;
            let root = args
                .store_root
                .clone()
                .unwrap_or_else(|| args.store_dir.clone().into());
            let (drv_path, drv) = read_drv_file(&located(file, &store_dir, &root), &store_dir)?;
            let name = drv_path.drv_name().expect("a .drv path");
            let mut hashes = DrvHashes::new();
            let paths = drv
                .computed_output_paths(&store_dir, name, &mut hashes, |p: &StorePath| {
                    read_store_drv(&root, &store_dir, p)
                })
                .map_err(|source| AppError::DerivationFile {
                    path: file.to_owned(),
                    source,
                })?;
            for (output, computed) in &paths {
                let recorded = drv.outputs[output].path();
                if let (Some(computed), Some(recorded)) = (computed, recorded)
                    && computed != recorded
                {
                    return Err(AppError::DerivationFile {
                        path: file.to_owned(),
                        source: DerivationError::WrongOutputPath {
                            drv: store_dir.display(&drv_path),
                            actual: store_dir.display(recorded),
                            expected: store_dir.display(computed),
                        },
                    });
                }
            }
            let wanted: Vec<&String> = if args.outputs.is_empty() {
                paths.keys().collect()
            } else {
                args.outputs.iter().collect()
            };
            for output in wanted {
                match paths.get(output) {
                    Some(Some(path)) => lines.push(path.clone()),
                    Some(None) => {
                        return Err(AppError::Usage(format!(
                            "output '{output}' has no path before it is built"
                        )));
                    }
                    None => {
                        return Err(AppError::Usage(format!(
                            "the derivation has no output '{output}'"
                        )));
                    }
                }
            }
        }
    }
    let mut out = String::new();
    for path in lines {
        out.push_str(&store_dir.display(&path));
        out.push('\n');
    }
    write_stdout(out.as_bytes())
}

/// A file named by its store path, when the store's files are elsewhere (`--store-root`).
struct Located {
    file: PathBuf,
    store_path: Option<String>,
}

fn located(file: &Path, store_dir: &StoreDir, root: &Path) -> Located {
    let store_path = std::path::absolute(file)
        .ok()
        .and_then(|a| a.to_str().map(str::to_owned))
        .filter(|s| store_dir.is_in_store(s));
    let file = match store_path.as_deref().and_then(|s| store_dir.parse(s).ok()) {
        Some(p) => root.join(p.base_name()),
        None => file.to_owned(),
    };
    Located { file, store_path }
}

/// Reads and parses a `.drv` file and finds its store path.
fn read_drv_file(
    located: &Located,
    store_dir: &StoreDir,
) -> Result<(StorePath, Derivation), AppError> {
    let file = located.file.as_path();
    let bytes = read_file(file)?;
    let drv = parse_drv(file, &bytes, store_dir)?;
    if let Some(s) = &located.store_path {
        let path = store_dir.parse(s)?;
        if !path.is_derivation() {
            return Err(AppError::Usage(format!("'{s}' is not a derivation")));
        }
        return Ok((path, drv));
    }
    let name = drv_name(file, &drv)?;
    Ok((drv.drv_path(store_dir, &name)?, drv))
}

/// The name of the derivation in `file`, which lies outside the store.
fn drv_name(file: &Path, drv: &Derivation) -> Result<String, AppError> {
    let from_file = file
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| StorePath::from_base_name(f).ok())
        .and_then(|p| p.drv_name().map(str::to_owned));
    from_file
        .or_else(|| drv.name(None).map(str::to_owned))
        .ok_or_else(|| {
            AppError::Usage(format!(
                "cannot tell the name of the derivation in '{}': name it <hash>-<name>{DRV_EXTENSION} \
                 or give it a 'name' variable",
                file.display()
            ))
        })
}

fn parse_drv(file: &Path, bytes: &[u8], store_dir: &StoreDir) -> Result<Derivation, AppError> {
    Derivation::parse(bytes, store_dir).map_err(|source| AppError::DerivationFile {
        path: file.to_owned(),
        source,
    })
}

/// Loads an input derivation from the store's files.
fn read_store_drv(
    root: &Path,
    store_dir: &StoreDir,
    path: &StorePath,
) -> Result<Derivation, AppError> {
    let file = root.join(path.base_name());
    let bytes = read_file(&file)?;
    parse_drv(&file, &bytes, store_dir)
}

fn read_file(file: &Path) -> Result<Vec<u8>, AppError> {
    std::fs::read(file).map_err(|e| AppError::io("reading", file, e))
}

fn read_input(file: &Path) -> Result<Vec<u8>, AppError> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| AppError::io("reading", file, e))?;
        Ok(buf)
    } else {
        read_file(file)
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), AppError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(AppError::Stdout)
}
