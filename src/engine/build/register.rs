//! Registering a build's outputs, as Nix 2.8's `registerOutputs` and `checkOutputs` do.
//!
//! Before the build, [`prepare_outputs`] decides where the builder writes each output: its
//! own path when that is free, else (the path is valid, or is being repaired) a *scratch*
//! path named like Nix's `makeFallbackPath`, whose hash part the builder sees instead of the
//! real one. After the builder exited 0, [`register_outputs`] takes what it wrote:
//!
//! 1. every output must exist and not be group- or world-writable; its metadata is made
//!    canonical (mtime 1, 0444/0555, no xattrs); one NAR dump hashes it and scans it for
//!    references to the input closure and to the outputs' scratch paths;
//! 2. outputs are ordered so that referenced outputs come first (a cycle is an error), and
//!    scratch hash parts in an output are rewritten to the final ones;
//! 3. a fixed output's content hash is checked: on a mismatch the output is still
//!    registered, under the path its real content gives, before the error is reported;
//! 4. `allowedReferences` & co. and `outputChecks` are enforced; in check mode (`--check`)
//!    outputs are compared with the registered ones, with `--repeat` with the previous
//!    round's;
//! 5. the outputs move into place and are registered in one transaction, with the
//!    derivation as deriver. A rejected build registers nothing (except, as in Nix, a
//!    fixed output, which is registered before the checks that may reject it).
//!
//! Messages are Nix's, word for word. Floating content-addressed and impure outputs (Nix's
//! experimental `ca-derivations`) are not supported.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bstr::ByteSlice;
use serde_json::Value;
use thiserror::Error;

use crate::engine::api::BuildMode;
use crate::engine::format::derivation::{DerivationOutput, FixedOutputHash};
use crate::engine::format::hash::Hasher;
use crate::engine::format::nar::{self, Tee};
use crate::engine::format::refs::hash_and_scan;
use crate::engine::format::rewrite::Rewriter;
use crate::engine::format::store_path::{HASH_PART_LEN, output_path_name};
use crate::engine::format::{
    ContentAddress, Derivation, Hash, HashAlgo, IngestionMethod, StoreDir, StorePath,
};
use crate::engine::scheduler::BuildOutcome;
use crate::engine::store::canon::{self, InodesSeen};
use crate::engine::store::{LocalStore, PathInfo, PathLocks};

/// The suffix of a rebuilt output kept for comparison (`--check` and `--repeat` with
/// `--keep-failed`).
pub const CHECK_SUFFIX: &str = ".check";

/// One output of a build: where the builder was told to write it and where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltOutput {
    /// The output's name (`out`, `dev`, …).
    pub name: String,
    /// Its final store path, as the derivation determines it.
    pub path: StorePath,
    /// The path the builder was given for it (`$out`): `path` itself, or a scratch path
    /// ([`fallback_path`]) when `path` is valid or being repaired.
    pub scratch: StorePath,
    /// Where the builder's files are: the real path of `scratch` (inside a chroot once builds
    /// are sandboxed).
    pub location: PathBuf,
    /// `path` was valid (and, when repairing, intact) before the build: this output is not
    /// registered again, except that check mode compares it.
    pub already_valid: bool,
}

/// Why outputs were not registered. Each message is Nix's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// A `BuildError` after a successful build: a missing output, a reference check, a
    /// fixed-output hash mismatch (`hash_mismatch`, exit status bit 102).
    #[error("{message}")]
    OutputRejected {
        message: String,
        hash_mismatch: bool,
    },
    /// Check mode: an output differs from the registered one (exit status bit 104).
    #[error("{message}")]
    NotDeterministic { message: String },
    /// `--repeat` with `enforce-determinism`: an output differs from the previous round's.
    #[error("{message}")]
    RoundDiffers { message: String },
    /// Anything else (I/O, the store, bad attributes).
    #[error("{message}")]
    Misc { message: String },
}

impl Rejection {
    fn rejected(message: String) -> Rejection {
        Rejection::OutputRejected {
            message,
            hash_mismatch: false,
        }
    }

    fn misc(e: impl std::fmt::Display) -> Rejection {
        Rejection::Misc {
            message: e.to_string(),
        }
    }

    /// The build's outcome as the scheduler takes it.
    pub fn into_outcome(self) -> BuildOutcome {
        match self {
            Rejection::OutputRejected {
                message,
                hash_mismatch,
            } => BuildOutcome::OutputRejected {
                message,
                hash_mismatch,
            },
            Rejection::NotDeterministic { message } => BuildOutcome::NotDeterministic { message },
            Rejection::RoundDiffers { message } => BuildOutcome::RoundDiffers { message },
            Rejection::Misc { message } => BuildOutcome::MiscFailure { message },
        }
    }
}

/// What registration produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Output name → its info: as registered; in check mode the registered info of each
    /// checked output; in a round that is not the last, as it would be registered. Outputs
    /// that were valid before the build (and not checked) are not included.
    pub outputs: BTreeMap<String, PathInfo>,
    /// `--repeat` without `enforce-determinism`: the outputs differ from the previous
    /// round's (Nix's messages, one a line, to be logged as errors). The outputs of this
    /// round are registered and no more rounds are needed.
    pub round_differs: Option<String>,
}

impl Registered {
    /// The build's outcome as the scheduler takes it.
    pub fn outcome(&self) -> BuildOutcome {
        match &self.round_differs {
            Some(message) => BuildOutcome::RoundDiffers {
                message: message.clone(),
            },
            None => BuildOutcome::Success,
        }
    }
}

/// What [`register_outputs`] needs to know about a build.
#[derive(Debug, Clone)]
pub struct RegisterRequest<'a> {
    pub drv_path: &'a StorePath,
    pub drv: &'a Derivation,
    /// One per output of the derivation, from [`prepare_outputs`].
    pub outputs: Vec<BuiltOutput>,
    /// The closure of the inputs (input sources and the used outputs of input derivations):
    /// the paths outputs may refer to besides each other.
    pub input_closure: &'a BTreeSet<StorePath>,
    pub mode: BuildMode,
    /// `keep-failed`: keep rejected outputs (and `.check` copies) for inspection.
    pub keep_failed: bool,
    /// 1-based round of `nr_rounds` (`--repeat N` builds N + 1 rounds).
    pub round: u32,
    pub nr_rounds: u32,
    /// What the previous round produced (from round 2 on).
    pub previous_round: Option<&'a Registered>,
    /// `enforce-determinism`: outputs that differ between rounds are rejected.
    pub enforce_determinism: bool,
    /// The build user's uid, when the builder ran as one: then everything must be its own.
    pub build_uid: Option<u32>,
}

impl<'a> RegisterRequest<'a> {
    /// A normal build of one round.
    pub fn new(
        drv_path: &'a StorePath,
        drv: &'a Derivation,
        outputs: Vec<BuiltOutput>,
        input_closure: &'a BTreeSet<StorePath>,
    ) -> RegisterRequest<'a> {
        RegisterRequest {
            drv_path,
            drv,
            outputs,
            input_closure,
            mode: BuildMode::Normal,
            keep_failed: false,
            round: 1,
            nr_rounds: 1,
            previous_round: None,
            enforce_determinism: true,
            build_uid: None,
        }
    }
}

/// Nix's `makeFallbackPath(path)`: the scratch path a build of `drv_path` uses instead of
/// `path` (same name, hash part from `rewrite:<drv>:<path>`).
pub fn fallback_path(store_dir: &StoreDir, drv_path: &StorePath, path: &StorePath) -> StorePath {
    store_dir
        .make_store_path(
            &format!("rewrite:{}:{}", drv_path.base_name(), path.base_name()),
            &Hash::zero(HashAlgo::Sha256),
            path.name(),
        )
        .expect("the name of a valid store path is valid")
}

/// Where a rebuilt copy of `path` is kept for comparison: `<real path>.check`.
pub fn check_location(store: &LocalStore, path: &StorePath) -> PathBuf {
    let mut p = store.real_path(path).into_os_string();
    p.push(CHECK_SUFFIX);
    PathBuf::from(p)
}

/// Nix's `inputRewrites` for outputs redirected to scratch paths: final hash part → scratch
/// hash part, to apply to the builder's environment, arguments and attribute files.
pub fn input_rewrites(outputs: &[BuiltOutput]) -> BTreeMap<String, String> {
    outputs
        .iter()
        .filter(|o| o.scratch != o.path)
        .map(|o| {
            (
                o.path.hash_part().to_owned(),
                o.scratch.hash_part().to_owned(),
            )
        })
        .collect()
}

/// Decides where the builder writes each output of `drv`, as Nix does before an
/// unsandboxed build (`tryToBuild`, `startBuilder`): leftovers of invalid outputs are
/// deleted; an output whose path is free is built in place, one whose path is valid (or,
/// when repairing, present) goes to its [`fallback_path`], cleared first. When repairing,
/// valid outputs whose contents no longer match their NAR hash count as corrupt (their files
/// are deleted, and the rebuilt ones replace them). Call it with the output paths locked.
pub fn prepare_outputs(
    store: &LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
    mode: BuildMode,
) -> Result<Vec<BuiltOutput>, Rejection> {
    let mut out = Vec::with_capacity(drv.outputs.len());
    for (name, output) in &drv.outputs {
        let path = known_path(store, drv_path, name, output)?.clone();
        // Nix's PathStatus: Absent (not valid), Corrupt, Valid.
        let present = store.is_valid(&path).map_err(Rejection::misc)?;
        let intact = present && (mode != BuildMode::Repair || contents_good(store, &path)?);
        let real = store.real_path(&path);
        if !intact {
            canon::delete_path(&real).map_err(Rejection::misc)?;
        }
        let scratch = if present {
            fallback_path(store.store_dir(), drv_path, &path)
        } else {
            path.clone()
        };
        if scratch != path {
            canon::delete_path(&store.real_path(&scratch)).map_err(Rejection::misc)?;
        }
        out.push(BuiltOutput {
            name: name.clone(),
            location: store.real_path(&scratch),
            scratch,
            path,
            already_valid: intact,
        });
    }
    Ok(out)
}

/// Whether a valid path's contents still have its registered NAR hash.
fn contents_good(store: &LocalStore, path: &StorePath) -> Result<bool, Rejection> {
    let info = store.path_info(path).map_err(Rejection::misc)?;
    Ok(nar::hash_path(&store.real_path(path), info.nar_hash.algo())
        .is_ok_and(|(h, _)| h == info.nar_hash))
}

fn known_path<'d>(
    store: &LocalStore,
    drv_path: &StorePath,
    name: &str,
    output: &'d DerivationOutput,
) -> Result<&'d StorePath, Rejection> {
    output.path().ok_or_else(|| Rejection::Misc {
        message: format!(
            "output '{name}' of '{}' is floating content-addressed or impure, which drover \
             does not build",
            store.print(drv_path)
        ),
    })
}

/// Checks, rewrites and registers the outputs of a build whose builder exited 0 (Nix's
/// `registerOutputs`). See the module documentation for the steps.
pub fn register_outputs(
    store: &LocalStore,
    req: RegisterRequest<'_>,
) -> Result<Registered, Rejection> {
    let mut run = Run::new(store, &req)?;
    let result = run.register();
    run.clean_up(result.is_ok());
    result
}

/// What pass 1 learnt about an output.
enum Scanned {
    /// Valid before the build and not checked: only its final hash matters to others.
    AlreadyRegistered,
    Wanted {
        /// A regular file without execute permission (what a flat fixed output must be).
        plain_file: bool,
        /// NAR hash and size before any rewriting, and references (to scratch paths).
        nar_hash: Hash,
        nar_size: u64,
        references: BTreeSet<StorePath>,
    },
}

/// An output ready to be registered.
struct NewOutput {
    info: PathInfo,
    /// Where its files are now.
    location: PathBuf,
    /// Whether its files are at the final real path (moved, or built there).
    in_place: bool,
}

/// The state of one registration.
struct Run<'r> {
    store: &'r LocalStore,
    req: &'r RegisterRequest<'r>,
    drv_name: String,
    outputs: BTreeMap<String, &'r BuiltOutput>,
    inodes_seen: InodesSeen,
    /// Scratch hash part → final hash part, for outputs done so far (Nix's `outputRewrites`).
    rewrites: BTreeMap<[u8; HASH_PART_LEN], [u8; HASH_PART_LEN]>,
    new: BTreeMap<String, NewOutput>,
    /// Fixed outputs already registered (Nix registers them right away).
    registered_ca: BTreeSet<String>,
    /// Locks on final paths not known before the build (a fixed output's real path).
    dynamic_locks: Vec<PathLocks>,
    /// The fixed-output hash mismatch, reported after registration.
    delayed: Option<Rejection>,
    /// The output in pass 2 had its files rewritten.
    rewritten: bool,
}

impl<'r> Run<'r> {
    fn new(store: &'r LocalStore, req: &'r RegisterRequest<'r>) -> Result<Run<'r>, Rejection> {
        let drv_name = req
            .drv
            .name(Some(req.drv_path))
            .unwrap_or(req.drv_path.name())
            .to_owned();
        let mut outputs = BTreeMap::new();
        for o in &req.outputs {
            if !req.drv.outputs.contains_key(&o.name) {
                return Err(Rejection::Misc {
                    message: format!(
                        "derivation '{}' does not have an output named '{}'",
                        store.print(req.drv_path),
                        o.name
                    ),
                });
            }
            outputs.insert(o.name.clone(), o);
        }
        for name in req.drv.outputs.keys() {
            if !outputs.contains_key(name) {
                return Err(Rejection::Misc {
                    message: format!(
                        "no built output '{name}' was given for '{}'",
                        store.print(req.drv_path)
                    ),
                });
            }
        }
        Ok(Run {
            store,
            req,
            drv_name,
            outputs,
            inodes_seen: InodesSeen::new(),
            rewrites: BTreeMap::new(),
            new: BTreeMap::new(),
            registered_ca: BTreeSet::new(),
            dynamic_locks: Vec::new(),
            delayed: None,
            rewritten: false,
        })
    }

    fn drv(&self) -> String {
        self.store.print(self.req.drv_path)
    }

    fn register(&mut self) -> Result<Registered, Rejection> {
        let scanned = self.scan_outputs()?;
        let order = self.sort_outputs(&scanned)?;
        let mut checked = BTreeMap::new();
        for name in order {
            let output = self.outputs[&name];
            let Scanned::Wanted {
                plain_file,
                nar_hash,
                nar_size,
                references,
            } = &scanned[&name]
            else {
                self.add_rewrite(&output.scratch, &output.path);
                continue;
            };
            let new = self.new_output(output, *plain_file, nar_hash, *nar_size, references)?;
            if self.req.mode == BuildMode::Check {
                if let Some(old) = self.check_output(new)? {
                    checked.insert(name, old);
                }
                continue;
            }
            self.add_rewrite(&output.scratch, &new.info.path);
            if new.info.ca.is_some() {
                self.register_ca(&name, new)?;
            } else {
                self.new.insert(name, new);
            }
        }

        if self.req.mode == BuildMode::Check {
            if let Some(e) = self.delayed.take() {
                return Err(e);
            }
            for o in self.outputs.values() {
                if !self.store.is_valid(&o.path).map_err(Rejection::misc)? {
                    return Err(Rejection::Misc {
                        message: "some outputs are unexpectedly invalid".into(),
                    });
                }
            }
            return Ok(Registered {
                outputs: checked,
                round_differs: None,
            });
        }

        self.check_outputs()?;

        let mut last_round = self.req.round >= self.req.nr_rounds;
        let round_differs = self.compare_rounds()?;
        if round_differs.is_some() {
            last_round = true;
        }
        if !last_round {
            self.move_into_place()?;
            if self.req.round == 1 && self.req.keep_failed {
                self.keep_previous_round()?;
            }
            return Ok(Registered {
                outputs: self.infos(),
                round_differs: None,
            });
        }

        for o in self.outputs.values() {
            canon::delete_path(&check_location(self.store, &o.path)).map_err(Rejection::misc)?;
        }
        self.move_into_place()?;
        let infos: Vec<PathInfo> = self
            .new
            .iter()
            .filter(|(name, _)| !self.registered_ca.contains(*name))
            .map(|(_, n)| n.info.clone())
            .collect();
        self.store
            .register_valid_paths(&infos)
            .map_err(Rejection::misc)?;
        let registered = Registered {
            outputs: self.infos(),
            round_differs,
        };
        self.new.clear();
        if let Some(e) = self.delayed.take() {
            return Err(e);
        }
        Ok(registered)
    }

    fn infos(&self) -> BTreeMap<String, PathInfo> {
        self.new
            .iter()
            .map(|(name, n)| (name.clone(), n.info.clone()))
            .collect()
    }

    /// Pass 1: existence, permissions, canonical metadata, NAR hash and references.
    fn scan_outputs(&mut self) -> Result<BTreeMap<String, Scanned>, Rejection> {
        let candidates: BTreeSet<&StorePath> = self
            .req
            .input_closure
            .iter()
            .chain(self.outputs.values().map(|o| &o.scratch))
            .collect();
        let mut scanned = BTreeMap::new();
        for (name, output) in &self.outputs {
            let wanted = self.req.mode == BuildMode::Check || !output.already_valid;
            if !wanted {
                scanned.insert(name.clone(), Scanned::AlreadyRegistered);
                continue;
            }
            let location = &output.location;
            let meta = match std::fs::symlink_metadata(location) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Rejection::rejected(format!(
                        "builder for '{}' failed to produce output path for output '{name}' \
                         at '{}'",
                        self.drv(),
                        location.display()
                    )));
                }
                Err(e) => {
                    return Err(Rejection::misc(format!(
                        "getting attributes of path '{}': {e}",
                        location.display()
                    )));
                }
            };
            let writable = meta.mode() & (libc::S_IWGRP | libc::S_IWOTH) != 0;
            let foreign = self.req.build_uid.is_some_and(|uid| meta.uid() != uid);
            if (!meta.file_type().is_symlink() && writable) || foreign {
                return Err(Rejection::rejected(format!(
                    "suspicious ownership or permission on '{}' for output '{name}'; \
                     rejecting this build output",
                    location.display()
                )));
            }
            canon::canonicalise_path_metadata(location, self.req.build_uid, &mut self.inodes_seen)
                .map_err(Rejection::misc)?;
            let scan =
                hash_and_scan(location, candidates.iter().copied()).map_err(Rejection::misc)?;
            scanned.insert(
                name.clone(),
                Scanned::Wanted {
                    plain_file: meta.file_type().is_file() && meta.mode() & 0o100 == 0,
                    nar_hash: scan.nar_hash,
                    nar_size: scan.nar_size,
                    references: scan.references,
                },
            );
        }
        Ok(scanned)
    }

    /// Orders the outputs so that referenced outputs come first (Nix's `topoSort`, reversed).
    fn sort_outputs(&self, scanned: &BTreeMap<String, Scanned>) -> Result<Vec<String>, Rejection> {
        let by_scratch: BTreeMap<&StorePath, &str> = self
            .outputs
            .values()
            .map(|o| (&o.scratch, o.name.as_str()))
            .collect();
        let children = |name: &str| -> BTreeSet<&str> {
            match &scanned[name] {
                Scanned::AlreadyRegistered => BTreeSet::new(),
                Scanned::Wanted { references, .. } => references
                    .iter()
                    .filter_map(|r| by_scratch.get(r).copied())
                    .collect(),
            }
        };
        let mut sorted = Vec::new();
        let mut visited = BTreeSet::new();
        let mut parents = BTreeSet::new();
        for name in self.outputs.keys() {
            self.visit(
                name,
                None,
                &children,
                &mut visited,
                &mut parents,
                &mut sorted,
            )?;
        }
        // `sorted` is in post-order: referenced outputs first.
        Ok(sorted)
    }

    fn visit<'n>(
        &self,
        name: &'n str,
        parent: Option<&'n str>,
        children: &dyn Fn(&str) -> BTreeSet<&'n str>,
        visited: &mut BTreeSet<&'n str>,
        parents: &mut BTreeSet<&'n str>,
        sorted: &mut Vec<String>,
    ) -> Result<(), Rejection> {
        if parents.contains(name) {
            return Err(Rejection::rejected(format!(
                "cycle detected in build of '{}' in the references of output '{name}' from \
                 output '{}'",
                self.drv(),
                parent.unwrap_or_default()
            )));
        }
        if !visited.insert(name) {
            return Ok(());
        }
        parents.insert(name);
        for child in children(name) {
            if child != name {
                self.visit(child, Some(name), children, visited, parents, sorted)?;
            }
        }
        sorted.push(name.to_owned());
        parents.remove(name);
        Ok(())
    }

    fn add_rewrite(&mut self, scratch: &StorePath, path: &StorePath) {
        if scratch != path {
            self.rewrites
                .insert(*scratch.hash_part_bytes(), *path.hash_part_bytes());
        }
    }

    /// Pass 2 for one output: rewriting, content address, final path and info.
    fn new_output(
        &mut self,
        output: &BuiltOutput,
        plain_file: bool,
        nar_hash: &Hash,
        nar_size: u64,
        references: &BTreeSet<StorePath>,
    ) -> Result<NewOutput, Rejection> {
        let drv_output = &self.req.drv.outputs[&output.name];
        let (self_ref, refs) = self.rewrite_refs(output, references);
        let mut info = match drv_output {
            DerivationOutput::InputAddressed(path) => {
                self.add_rewrite(&output.scratch, path);
                let (nar_hash, nar_size) =
                    self.rewrite_output(output, references, (*nar_hash, nar_size))?;
                let mut info = PathInfo::new(path.clone(), nar_hash, nar_size);
                info.references = refs;
                if self_ref {
                    info.references.insert(path.clone());
                }
                info
            }
            DerivationOutput::Fixed { hash, .. } => self.fixed_output(
                output,
                plain_file,
                hash,
                self_ref,
                refs,
                (*nar_hash, nar_size),
            )?,
            _ => {
                return Err(
                    known_path(self.store, self.req.drv_path, &output.name, drv_output)
                        .unwrap_err(),
                );
            }
        };
        info.deriver = Some(self.req.drv_path.clone());
        info.ultimate = true;
        if std::mem::take(&mut self.rewritten) {
            // The rewritten files were created afresh.
            canon::canonicalise_path_metadata(&output.location, None, &mut self.inodes_seen)
                .map_err(Rejection::misc)?;
        }
        let in_place = output.location == self.store.real_path(&info.path);
        Ok(NewOutput {
            info,
            location: output.location.clone(),
            in_place,
        })
    }

    /// References with scratch paths mapped to final ones; whether the output refers to its
    /// own scratch path (Nix's `rewriteRefs`).
    fn rewrite_refs(
        &self,
        output: &BuiltOutput,
        references: &BTreeSet<StorePath>,
    ) -> (bool, BTreeSet<StorePath>) {
        let mut self_ref = false;
        let mut out = BTreeSet::new();
        for r in references {
            if *r == output.scratch {
                self_ref = true;
            } else if let Some(to) = self.rewrites.get(r.hash_part_bytes()) {
                let base = format!(
                    "{}-{}",
                    std::str::from_utf8(to).expect("hash parts are ASCII"),
                    r.name()
                );
                out.insert(StorePath::from_base_name(&base).expect("same name, valid hash part"));
            } else {
                out.insert(r.clone());
            }
        }
        (self_ref, out)
    }

    /// Applies the rewrites to the output's files if it contains any scratch hash part they
    /// replace; returns the NAR hash and size of the result.
    fn rewrite_output(
        &mut self,
        output: &BuiltOutput,
        references: &BTreeSet<StorePath>,
        unchanged: (Hash, u64),
    ) -> Result<(Hash, u64), Rejection> {
        let needed = references
            .iter()
            .any(|r| self.rewrites.contains_key(r.hash_part_bytes()));
        if !needed {
            return Ok(unchanged);
        }
        self.rewritten = true;
        rewrite_in_place(&output.location, &self.rewrites).map_err(Rejection::misc)
    }

    /// A fixed output: its content hash, its real path, and the hash check.
    fn fixed_output(
        &mut self,
        output: &BuiltOutput,
        plain_file: bool,
        wanted: &FixedOutputHash,
        self_ref: bool,
        refs: BTreeSet<StorePath>,
        nar: (Hash, u64),
    ) -> Result<PathInfo, Rejection> {
        let location = &output.location;
        if wanted.method == IngestionMethod::Flat && !plain_file {
            return Err(Rejection::rejected(format!(
                "output path '{}' should be a non-executable regular file since recursive \
                 hashing is not enabled (outputHashMode=flat)",
                location.display()
            )));
        }
        if self_ref || !refs.is_empty() {
            // Nix 2.8 aborts (flat) or registers such an output under another path than the
            // derivation's and reports success; later versions reject it with this message.
            return Err(Rejection::rejected(format!(
                "illegal path references in fixed-output derivation '{}'",
                self.drv()
            )));
        }
        let algo = wanted.hash.algo();
        let got = match wanted.method {
            IngestionMethod::Recursive if algo == HashAlgo::Sha256 => Ok(nar.0),
            IngestionMethod::Recursive => nar::hash_path(location, algo).map(|(h, _)| h),
            IngestionMethod::Flat => nar::hash_flat(location, algo).map(|(h, _)| h),
        }
        .map_err(Rejection::misc)?;
        let name = output_path_name(&self.drv_name, &output.name);
        let path = self
            .store
            .store_dir()
            .make_fixed_output_path(wanted.method, &got, &name, &BTreeSet::new(), false)
            .map_err(Rejection::misc)?;
        if got != wanted.hash {
            self.delayed = Some(Rejection::OutputRejected {
                message: format!(
                    "hash mismatch in fixed-output derivation '{}':\n  specified: {}\n     \
                     got:    {}",
                    self.drv(),
                    wanted.hash.to_sri(),
                    got.to_sri()
                ),
                hash_mismatch: true,
            });
        }
        if path != output.path && self.req.mode != BuildMode::Check {
            let lock = self
                .store
                .lock_paths(std::slice::from_ref(&path), |_, _| {})
                .map_err(Rejection::misc)?;
            self.dynamic_locks.push(lock);
        }
        let mut info = PathInfo::new(path, nar.0, nar.1);
        info.ca = Some(ContentAddress::Fixed {
            method: wanted.method,
            hash: got,
        });
        Ok(info)
    }

    /// Check mode: compares a rebuilt output with the registered one; returns the
    /// registered info when they are the same.
    fn check_output(&mut self, new: NewOutput) -> Result<Option<PathInfo>, Rejection> {
        let Some(mut old) = self
            .store
            .query_path_info(&new.info.path)
            .map_err(Rejection::misc)?
        else {
            return Ok(None);
        };
        let real = self.store.real_path(&new.info.path);
        if new.info.nar_hash != old.nar_hash {
            if self.req.keep_failed {
                let dst = check_location(self.store, &new.info.path);
                canon::delete_path(&dst).map_err(Rejection::misc)?;
                std::fs::rename(&new.location, &dst).map_err(|e| {
                    Rejection::misc(format!(
                        "renaming '{}' to '{}': {e}",
                        new.location.display(),
                        dst.display()
                    ))
                })?;
                return Err(Rejection::NotDeterministic {
                    message: format!(
                        "derivation '{}' may not be deterministic: output '{}' differs from '{}'",
                        self.drv(),
                        real.display(),
                        dst.display()
                    ),
                });
            }
            return Err(Rejection::NotDeterministic {
                message: format!(
                    "derivation '{}' may not be deterministic: output '{}' differs",
                    self.drv(),
                    real.display()
                ),
            });
        }
        // Since the build is verified, the path is now ultimately trusted.
        if !old.ultimate {
            old.ultimate = true;
            self.store
                .register_valid_paths(std::slice::from_ref(&old))
                .map_err(Rejection::misc)?;
        }
        Ok(Some(old))
    }

    /// Moves a fixed output into place and registers it right away, as Nix does.
    fn register_ca(&mut self, name: &str, mut new: NewOutput) -> Result<(), Rejection> {
        let valid = self
            .store
            .is_valid(&new.info.path)
            .map_err(Rejection::misc)?;
        if !new.in_place {
            if valid {
                // Produced by something else already: this copy is not needed.
                canon::delete_path(&new.location).map_err(Rejection::misc)?;
                new.location = self.store.real_path(&new.info.path);
                new.in_place = true;
            } else {
                self.move_output(&mut new)?;
            }
        }
        self.store
            .register_valid_paths(std::slice::from_ref(&new.info))
            .map_err(Rejection::misc)?;
        self.registered_ca.insert(name.to_owned());
        self.new.insert(name.to_owned(), new);
        Ok(())
    }

    /// Moves the new outputs to their final real paths (replacing the old contents when
    /// repairing).
    fn move_into_place(&mut self) -> Result<(), Rejection> {
        let names: Vec<String> = self.new.keys().cloned().collect();
        for name in names {
            let mut new = self.new.remove(&name).expect("listed above");
            let result = if new.in_place {
                Ok(())
            } else {
                self.move_output(&mut new)
            };
            self.new.insert(name, new);
            result?;
        }
        Ok(())
    }

    fn move_output(&self, new: &mut NewOutput) -> Result<(), Rejection> {
        let dest = self.store.real_path(&new.info.path);
        if self.req.mode == BuildMode::Repair {
            replace_valid_path(&dest, &new.location).map_err(Rejection::misc)?;
        } else {
            canon::delete_path(&dest).map_err(Rejection::misc)?;
            std::fs::rename(&new.location, &dest).map_err(|e| {
                Rejection::misc(format!(
                    "moving build output '{}' into the store at '{}': {e}",
                    new.location.display(),
                    dest.display()
                ))
            })?;
        }
        new.location = dest;
        new.in_place = true;
        Ok(())
    }

    /// After round 1 of several, with `keep-failed`: each output moves to `<path>.check`.
    fn keep_previous_round(&mut self) -> Result<(), Rejection> {
        for new in self.new.values_mut() {
            let dst = check_location(self.store, &new.info.path);
            canon::delete_path(&dst).map_err(Rejection::misc)?;
            std::fs::rename(&new.location, &dst).map_err(|e| {
                Rejection::misc(format!(
                    "renaming '{}' to '{}': {e}",
                    new.location.display(),
                    dst.display()
                ))
            })?;
            new.location = dst;
            new.in_place = false;
        }
        Ok(())
    }

    /// `--repeat`: compares this round's outputs with the previous round's (path, NAR hash
    /// and references, as Nix's `ValidPathInfo ==`).
    fn compare_rounds(&self) -> Result<Option<String>, Rejection> {
        let Some(prev) = self.req.previous_round else {
            return Ok(None);
        };
        let same = |a: &PathInfo, b: &PathInfo| {
            a.path == b.path && a.nar_hash == b.nar_hash && a.references == b.references
        };
        let current = &self.new;
        let equal = prev.outputs.len() == current.len()
            && prev
                .outputs
                .iter()
                .zip(current)
                .all(|((n1, a), (n2, b))| n1 == n2 && same(a, &b.info));
        if equal {
            return Ok(None);
        }
        let mut messages = Vec::new();
        for ((_, a), (_, b)) in prev.outputs.iter().zip(current) {
            if same(a, &b.info) {
                continue;
            }
            let path = self.store.print(&a.path);
            let prev_check = format!("{path}{CHECK_SUFFIX}");
            let prev_exists = self.req.keep_failed
                && std::fs::symlink_metadata(check_location(self.store, &a.path)).is_ok();
            let message = if prev_exists {
                format!(
                    "output '{path}' of '{}' differs from '{prev_check}' from previous round",
                    self.drv()
                )
            } else {
                format!(
                    "output '{path}' of '{}' differs from previous round",
                    self.drv()
                )
            };
            if self.req.enforce_determinism {
                return Err(Rejection::RoundDiffers { message });
            }
            messages.push(message);
        }
        Ok(Some(messages.join("\n")))
    }

    /// Nix's `checkOutputs`: sizes and reference specifications.
    fn check_outputs(&self) -> Result<(), Rejection> {
        let structured = match self.req.drv.env_var("__json") {
            None => None,
            Some(json) => Some(serde_json::from_slice::<Value>(json).map_err(|e| {
                Rejection::misc(format!(
                    "cannot process __json attribute of '{}': {e}",
                    self.drv()
                ))
            })?),
        };
        for (name, new) in &self.new {
            let checks = match &structured {
                Some(attrs) => {
                    let Some(spec) = attrs.get("outputChecks").and_then(|c| c.get(name)) else {
                        continue;
                    };
                    self.structured_checks(spec)?
                }
                None => self.legacy_checks(),
            };
            self.apply_checks(&new.info, &checks)?;
        }
        Ok(())
    }

    fn structured_checks(&self, spec: &Value) -> Result<Checks, Rejection> {
        let size = |key: &str| -> Result<Option<u64>, Rejection> {
            match spec.get(key) {
                None => Ok(None),
                Some(v) => json_u64(v).map(Some).ok_or_else(|| Rejection::Misc {
                    message: format!(
                        "[json.exception.type_error.302] type must be number, but is {}",
                        json_type_name(v)
                    ),
                }),
            }
        };
        let list = |key: &str| -> Result<Option<Vec<String>>, Rejection> {
            let Some(v) = spec.get(key) else {
                return Ok(None);
            };
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => o.values().collect(),
                Value::Null => Vec::new(),
                other => vec![other],
            };
            items
                .into_iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .map(Some)
                .ok_or_else(|| Rejection::Misc {
                    message: format!(
                        "attribute '{key}' of derivation '{}' must be a list of strings",
                        self.drv()
                    ),
                })
        };
        Ok(Checks {
            ignore_self_refs: false,
            max_size: size("maxSize")?,
            max_closure_size: size("maxClosureSize")?,
            allowed_references: list("allowedReferences")?,
            allowed_requisites: list("allowedRequisites")?,
            disallowed_references: list("disallowedReferences")?,
            disallowed_requisites: list("disallowedRequisites")?,
        })
    }

    fn legacy_checks(&self) -> Checks {
        let list = |key: &str| {
            self.req.drv.env_var(key).map(|v| {
                v.to_str_lossy()
                    .split([' ', '\t', '\n', '\r'])
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
        };
        Checks {
            ignore_self_refs: true,
            max_size: None,
            max_closure_size: None,
            allowed_references: list("allowedReferences"),
            allowed_requisites: list("allowedRequisites"),
            disallowed_references: list("disallowedReferences"),
            disallowed_requisites: list("disallowedRequisites"),
        }
    }

    fn apply_checks(&self, info: &PathInfo, checks: &Checks) -> Result<(), Rejection> {
        let printed = self.store.print(&info.path);
        if let Some(max) = checks.max_size
            && info.nar_size > max
        {
            return Err(Rejection::rejected(format!(
                "path '{printed}' is too large at {} bytes; limit is {max} bytes",
                info.nar_size
            )));
        }
        if let Some(max) = checks.max_closure_size {
            let (_, size) = self.closure(&info.path)?;
            if size > max {
                return Err(Rejection::rejected(format!(
                    "closure of path '{printed}' is too large at {size} bytes; limit is {max} \
                     bytes"
                )));
            }
        }
        let lists = [
            (&checks.allowed_references, true, false),
            (&checks.allowed_requisites, true, true),
            (&checks.disallowed_references, false, false),
            (&checks.disallowed_requisites, false, true),
        ];
        for (value, allowed, recursive) in lists {
            let Some(value) = value else { continue };
            let mut spec = BTreeSet::new();
            for i in value {
                if let Ok(p) = self.store.parse(i) {
                    spec.insert(p);
                } else if let Some(o) = self.new.get(i) {
                    spec.insert(o.info.path.clone());
                } else {
                    return Err(Rejection::rejected(format!(
                        "derivation contains an illegal reference specifier '{i}'"
                    )));
                }
            }
            let mut used = if recursive {
                self.closure(&info.path)?.0
            } else {
                info.references.clone()
            };
            if recursive && checks.ignore_self_refs {
                used.remove(&info.path);
            }
            let bad: Vec<String> = used
                .iter()
                .filter(|p| spec.contains(*p) != allowed)
                .map(|p| format!("\n  {}", self.store.print(p)))
                .collect();
            if !bad.is_empty() {
                return Err(Rejection::rejected(format!(
                    "output '{printed}' is not allowed to refer to the following paths:{}",
                    bad.concat()
                )));
            }
        }
        Ok(())
    }

    /// The closure of an output and its size, through this build's new outputs and the
    /// store.
    fn closure(&self, start: &StorePath) -> Result<(BTreeSet<StorePath>, u64), Rejection> {
        let by_path: BTreeMap<&StorePath, &PathInfo> =
            self.new.values().map(|n| (&n.info.path, &n.info)).collect();
        let mut done = BTreeSet::new();
        let mut size = 0;
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        while let Some(p) = queue.pop_front() {
            if done.contains(&p) {
                continue;
            }
            let (nar_size, refs) = match by_path.get(&p) {
                Some(info) => (info.nar_size, info.references.clone()),
                None => {
                    let info = self.store.path_info(&p).map_err(Rejection::misc)?;
                    (info.nar_size, info.references)
                }
            };
            size += nar_size;
            queue.extend(refs);
            done.insert(p);
        }
        Ok((done, size))
    }

    /// After a rejection: new outputs go away, or with `keep-failed` stay for inspection
    /// (at their final path when it is free, as Nix leaves them). Scratch copies of outputs
    /// that were valid already always go.
    fn clean_up(&mut self, success: bool) {
        for o in self.outputs.values() {
            let unused = o.already_valid && self.req.mode != BuildMode::Check;
            let check_mode_copy = self.req.mode == BuildMode::Check && o.scratch != o.path;
            if (unused || check_mode_copy) && o.location != self.store.real_path(&o.path) {
                let _ = canon::delete_path(&o.location);
            }
        }
        self.dynamic_locks.clear();
        if success {
            return;
        }
        let keep = self.req.keep_failed;
        // Never delete the files of a valid path (a repaired one, or one being checked).
        let free = |p: &StorePath| !self.store.is_valid(p).unwrap_or(true);
        for o in self.outputs.values() {
            if o.already_valid || self.registered_ca.contains(&o.name) {
                continue;
            }
            match self.new.get(&o.name) {
                // Rejected after pass 2: kept where Nix leaves it, at its final path.
                Some(new) if keep => {
                    if !new.in_place && free(&new.info.path) {
                        let mut new = self.new.remove(&o.name).expect("present");
                        let _ = self.move_output(&mut new);
                    }
                }
                Some(new) => {
                    if !new.in_place || free(&new.info.path) {
                        let _ = canon::delete_path(&new.location);
                    }
                }
                // Rejected in pass 1 (missing, suspicious, cycle): left where it is.
                None if keep => {}
                None => {
                    if o.location != self.store.real_path(&o.path) || free(&o.path) {
                        let _ = canon::delete_path(&o.location);
                    }
                }
            }
        }
    }
}

/// What `checkOutputs` enforces for one output.
#[derive(Debug, Default)]
struct Checks {
    /// The output's own path does not count in the requisites (legacy attributes).
    ignore_self_refs: bool,
    max_size: Option<u64>,
    max_closure_size: Option<u64>,
    allowed_references: Option<Vec<String>>,
    allowed_requisites: Option<Vec<String>>,
    disallowed_references: Option<Vec<String>>,
    disallowed_requisites: Option<Vec<String>>,
}

/// A JSON number as nlohmann's `get<uint64_t>` converts it.
fn json_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_i64().map(|i| i as u64))
        .or_else(|| v.as_f64().map(|f| f as u64))
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Rewrites hash parts in the object at `location` (through a NAR dump, into a sibling,
/// which then takes its place); returns the NAR hash and size of the result.
fn rewrite_in_place(
    location: &Path,
    rules: &BTreeMap<[u8; HASH_PART_LEN], [u8; HASH_PART_LEN]>,
) -> Result<(Hash, u64), String> {
    let mut tmp = location.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    canon::delete_path(&tmp).map_err(|e| e.to_string())?;
    let (reader, mut writer) = io::pipe()
        .map_err(|e| format!("creating a pipe to rewrite '{}': {e}", location.display()))?;
    let mut hasher = Hasher::new(HashAlgo::Sha256);
    let (dumped, restored) = std::thread::scope(|s| {
        let restorer = s.spawn(|| nar::restore(reader, &tmp));
        let mut rewriter = Rewriter::new(Tee(&mut hasher, &mut writer), rules);
        let dumped = nar::dump_path(location, &mut rewriter).and_then(|size| {
            rewriter
                .finish()
                .map(|_| size)
                .map_err(nar::NarError::Write)
        });
        drop(writer);
        (dumped, restorer.join().expect("restore does not panic"))
    });
    let result = dumped.and_then(|size| restored.map(|_| size));
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let _ = canon::delete_path(&tmp);
            return Err(format!("rewriting hashes in '{}': {e}", location.display()));
        }
    };
    canon::delete_path(location).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, location).map_err(|e| {
        format!(
            "moving '{}' to '{}': {e}",
            tmp.display(),
            location.display()
        )
    })?;
    Ok((hasher.finish(), size))
}

/// Nix's `replaceValidPath`: puts `src` at `dest`, moving the old contents aside first and
/// back if the move fails.
fn replace_valid_path(dest: &Path, src: &Path) -> Result<(), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut old = dest.as_os_str().to_owned();
    old.push(format!(
        ".old-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let old = PathBuf::from(old);
    let had_old = std::fs::symlink_metadata(dest).is_ok();
    if had_old {
        std::fs::rename(dest, &old)
            .map_err(|e| format!("moving '{}' to '{}': {e}", dest.display(), old.display()))?;
    }
    if let Err(e) = std::fs::rename(src, dest) {
        if had_old {
            let _ = std::fs::rename(&old, dest);
        }
        return Err(format!(
            "moving '{}' to '{}': {e}",
            src.display(),
            dest.display()
        ));
    }
    if had_old {
        canon::delete_path(&old).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(base: &str) -> StorePath {
        StorePath::from_base_name(base).unwrap()
    }

    #[test]
    fn fallback_paths_are_nixs() {
        // Printed by a real Nix 2.8 `nix-store --check` builder (`echo $out`) in a store at
        // /tmp/regexp2/s/store.
        let store_dir = StoreDir::new("/tmp/regexp2/s/store").unwrap();
        let drv = sp("q10i645ynjpsfh4mqrnkgkjac4szmnxl-random.drv");
        let out = sp("fc2ja3m6c2k2040kkby21qp80p7qx5cx-random");
        assert_eq!(
            fallback_path(&store_dir, &drv, &out),
            sp("m0s0lxdmblcbk6dd5mbp1n9gp0ffb06s-random")
        );
    }

    #[test]
    fn input_rewrites_map_redirected_outputs_only() {
        let built = |name: &str, path: &str, scratch: &str| BuiltOutput {
            name: name.into(),
            path: sp(path),
            scratch: sp(scratch),
            location: PathBuf::from("/x"),
            already_valid: path != scratch,
        };
        let outputs = [
            built(
                "out",
                "fc2ja3m6c2k2040kkby21qp80p7qx5cx-a",
                "m0s0lxdmblcbk6dd5mbp1n9gp0ffb06s-a",
            ),
            built(
                "dev",
                "q10i645ynjpsfh4mqrnkgkjac4szmnxl-a-dev",
                "q10i645ynjpsfh4mqrnkgkjac4szmnxl-a-dev",
            ),
        ];
        assert_eq!(
            input_rewrites(&outputs),
            BTreeMap::from([(
                "fc2ja3m6c2k2040kkby21qp80p7qx5cx".to_owned(),
                "m0s0lxdmblcbk6dd5mbp1n9gp0ffb06s".to_owned()
            )])
        );
    }

    #[test]
    fn rejections_become_the_outcomes_nix_reports() {
        let m = || "m".to_owned();
        assert_eq!(
            Rejection::OutputRejected {
                message: m(),
                hash_mismatch: true
            }
            .into_outcome(),
            BuildOutcome::OutputRejected {
                message: m(),
                hash_mismatch: true
            }
        );
        assert_eq!(
            Rejection::NotDeterministic { message: m() }.into_outcome(),
            BuildOutcome::NotDeterministic { message: m() }
        );
        assert_eq!(
            Rejection::RoundDiffers { message: m() }.into_outcome(),
            BuildOutcome::RoundDiffers { message: m() }
        );
        assert_eq!(
            Rejection::Misc { message: m() }.into_outcome(),
            BuildOutcome::MiscFailure { message: m() }
        );
        let registered = Registered {
            outputs: BTreeMap::new(),
            round_differs: None,
        };
        assert_eq!(registered.outcome(), BuildOutcome::Success);
    }

    #[test]
    fn json_sizes_convert_as_nlohmann_does() {
        assert_eq!(json_u64(&serde_json::json!(7)), Some(7));
        assert_eq!(json_u64(&serde_json::json!(7.9)), Some(7));
        assert_eq!(json_u64(&serde_json::json!(-1)), Some(u64::MAX));
        assert_eq!(json_u64(&serde_json::json!("7")), None);
        assert_eq!(json_type_name(&serde_json::json!("7")), "string");
    }
}
