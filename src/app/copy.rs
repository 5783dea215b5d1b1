//! `drover copy`: between the store and a binary cache, in either direction.
//!
//! `--to file://DIR` writes the closure of the paths into a cache real Nix can substitute
//! from (`?compression=…&secret-key=…` in the URI, or `--compression` and `--sign`, which win).
//! `--from URI` substitutes the closure of the paths from a cache (`file://`, `http(s)://`)
//! into the store: the closure is discovered with parallel narinfo lookups, wave by wave,
//! and then substituted `--jobs` at a time in dependency order (references first) through the
//! same async API the build driver uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;

use crate::app::AppError;
use crate::app::plumbing::store::{StoreArgs, follow_links_to_store_path};
use crate::engine::format::{PublicKeys, SecretKey, StorePath};
use crate::engine::scheduler::{SubstituteAnswer, SubstitutionOutcome};
use crate::engine::store::LocalStore;
use crate::engine::substitute::{
    CacheWriter, Compression, Logger, StoreUri, SubstituterConfig, Substituters, WriteOptions,
};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("direction").required(true).multiple(false)))]
pub struct CopyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Write the paths' closure to this binary cache (`file://DIR`, optionally with
    /// `?compression=…&secret-key=FILE`).
    #[arg(long, value_name = "URI", group = "direction")]
    pub to: Option<String>,
    /// Substitute the paths' closure from this binary cache (`file://…`, `http(s)://…`)
    /// into the store.
    #[arg(long, value_name = "URI", group = "direction")]
    pub from: Option<String>,
    /// Compression of the NARs written (default xz, as Nix).
    #[arg(long, value_parser = parse_compression)]
    pub compression: Option<Compression>,
    /// Sign the narinfos written with this secret key file
    /// (`nix-store --generate-binary-cache-key`).
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,
    /// With --from: accept paths without a valid signature.
    #[arg(long)]
    pub no_check_sigs: bool,
    /// With --from: the keys whose signatures are trusted (`name:base64`, space-separated).
    #[arg(long, value_name = "KEYS", default_value = "")]
    pub trusted_public_keys: String,
    /// Paths dumped (--to) or substituted (--from) at once.
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
    /// Store paths (or symlinks to them).
    #[arg(required = true)]
    pub paths: Vec<String>,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::parse(s)
        .filter(|c| c.can_write())
        .ok_or_else(|| format!("unknown compression method '{s}' (xz, bzip2, zstd, gzip, none)"))
}

fn read_secret_key(path: &std::path::Path) -> Result<SecretKey, AppError> {
    let text = std::fs::read_to_string(path).map_err(|e| AppError::io("reading", path, e))?;
    Ok(SecretKey::parse(text.trim_end())?)
}

pub fn copy(args: &CopyArgs) -> Result<(), AppError> {
    let store = args.store.open()?;
    let mut roots = Vec::new();
    for p in &args.paths {
        roots.push(follow_links_to_store_path(&store, p)?);
    }
    match (&args.to, &args.from) {
        (Some(to), _) => copy_to(args, &store, to, roots),
        (None, Some(from)) => copy_from(args, store, from, roots),
        (None, None) => unreachable!("clap requires --to or --from"),
    }
}

fn copy_to(
    args: &CopyArgs,
    store: &LocalStore,
    uri: &str,
    roots: Vec<StorePath>,
) -> Result<(), AppError> {
    let params = if uri.starts_with("file://") {
        StoreUri::parse(uri)?.params
    } else {
        BTreeMap::new()
    };
    let compression = match (&args.compression, params.get("compression")) {
        (Some(c), _) => *c,
        (None, Some(name)) => parse_compression(name).map_err(AppError::Usage)?,
        (None, None) => Compression::Xz,
    };
    let key_file = args
        .sign
        .clone()
        .or_else(|| params.get("secret-key").map(PathBuf::from));
    let secret_key = key_file.as_deref().map(read_secret_key).transpose()?;
    let options = WriteOptions {
        compression,
        secret_key,
        jobs: args.jobs.max(1),
    };
    let writer = CacheWriter::open(uri, store.store_dir(), options)?;
    writer.copy_closure(store, roots)?;
    Ok(())
}

fn copy_from(
    args: &CopyArgs,
    store: LocalStore,
    uri: &str,
    roots: Vec<StorePath>,
) -> Result<(), AppError> {
    let mut config = SubstituterConfig::new([uri]);
    config.trusted_public_keys = PublicKeys::parse_list(&args.trusted_public_keys)?;
    config.require_sigs = !args.no_check_sigs;
    config.log = Logger::stderr();
    let subs = Substituters::open(config, store.store_dir());
    if subs.is_empty() {
        let why = subs.skipped().join("; ");
        return Err(AppError::Usage(format!("cannot use '{uri}': {why}")));
    }
    let refs = discover_closure(&subs, &store, roots)?;
    let failures = substitute_all(subs, Arc::new(store), refs, args.jobs.max(1));
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures[..failures.len() - 1] {
            eprintln!("error: {f}");
        }
        Err(AppError::Usage(
            failures.last().cloned().unwrap_or_default(),
        ))
    }
}

/// The paths of the closure of `roots` that the store lacks, each with its references, from
/// narinfo lookups made many at a time.
fn discover_closure(
    subs: &Substituters,
    store: &LocalStore,
    roots: Vec<StorePath>,
) -> Result<BTreeMap<StorePath, BTreeSet<StorePath>>, AppError> {
    let mut found: BTreeMap<StorePath, BTreeSet<StorePath>> = BTreeMap::new();
    let mut seen: BTreeSet<StorePath> = BTreeSet::new();
    let mut wave: Vec<StorePath> = Vec::new();
    for r in roots {
        if seen.insert(r.clone()) && !store.is_valid(&r)? {
            wave.push(r);
        }
    }
    while !wave.is_empty() {
        let answers = subs.query_many(&wave, 0);
        let mut next = Vec::new();
        for (path, answer) in wave.iter().zip(answers) {
            match answer {
                SubstituteAnswer::Found { references, .. } => {
                    for r in &references {
                        if seen.insert(r.clone()) && !store.is_valid(r)? {
                            next.push(r.clone());
                        }
                    }
                    let refs = references.into_iter().filter(|r| r != path).collect();
                    found.insert(path.clone(), refs);
                }
                SubstituteAnswer::NotFound => {
                    return Err(AppError::Usage(format!(
                        "path '{}' is not valid in '{}'",
                        store.print(path),
                        subs.uris()[0]
                    )));
                }
                SubstituteAnswer::Rejected { message } | SubstituteAnswer::Error { message } => {
                    return Err(AppError::Usage(message));
                }
            }
        }
        wave = next;
    }
    Ok(found)
}

/// Substitutes every path of `todo` once its references are valid, `jobs` at a time; the
/// failures' messages (after the first failure nothing new is started).
fn substitute_all(
    subs: Substituters,
    store: Arc<LocalStore>,
    todo: BTreeMap<StorePath, BTreeSet<StorePath>>,
    jobs: usize,
) -> Vec<String> {
    let mut waiting: BTreeMap<StorePath, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<StorePath, Vec<StorePath>> = BTreeMap::new();
    let mut ready: VecDeque<StorePath> = VecDeque::new();
    for (path, refs) in &todo {
        let pending: Vec<&StorePath> = refs.iter().filter(|r| todo.contains_key(*r)).collect();
        for r in &pending {
            dependents
                .entry((*r).clone())
                .or_default()
                .push(path.clone());
        }
        if pending.is_empty() {
            ready.push_back(path.clone());
        } else {
            waiting.insert(path.clone(), pending.len());
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => return vec![format!("starting the substitution runtime: {e}")],
    };
    let cancel = Arc::new(AtomicBool::new(false));
    runtime.block_on(async move {
        let mut running = tokio::task::JoinSet::new();
        let mut failures = Vec::new();
        loop {
            while failures.is_empty() && running.len() < jobs {
                let Some(path) = ready.pop_front() else { break };
                let (subs, store, cancel) = (subs.clone(), store.clone(), cancel.clone());
                running.spawn(async move {
                    let outcome = subs
                        .substitute(store, path.clone(), 0, false, cancel, |_| {})
                        .await;
                    (path, outcome)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (path, outcome) = match joined {
                Ok(result) => result,
                Err(e) => {
                    failures.push(format!("a substitution task failed: {e}"));
                    continue;
                }
            };
            match outcome {
                SubstitutionOutcome::Success => {
                    for d in dependents.remove(&path).unwrap_or_default() {
                        let left = waiting.get_mut(&d).expect("a dependent waits");
                        *left -= 1;
                        if *left == 0 {
                            waiting.remove(&d);
                            ready.push_back(d);
                        }
                    }
                }
                SubstitutionOutcome::Gone { message } | SubstitutionOutcome::Failed { message } => {
                    failures.push(message);
                }
            }
        }
        failures
    })
}
