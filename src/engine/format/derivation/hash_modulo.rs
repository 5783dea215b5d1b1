//! Nix's `hashDerivationModulo`: the hash from which input-addressed output paths are made.
//!
//! A fixed-output derivation hashes to `sha256("fixed:out:<method><algo>:<hex>:<out path>")`,
//! a value of its output only. Any other derivation hashes to the sha256 of its ATerm in
//! which each input derivation path is replaced by the hex of that input's own hash modulo
//! (inputs with equal hashes merge their wanted outputs). So a fixed-output input changes the
//! `.drv` paths of its dependents, but not their output paths. Impure derivations, floating
//! content-addressed ones and their dependents are *deferred*: their output paths are not
//! known before building.
//!
//! Inputs are loaded through a resolver and memoised per `.drv` path in [`DrvHashes`]; the
//! closure is walked without recursion, so each derivation is loaded and hashed once however
//! deep or wide the graph.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{Derivation, DerivationError, DerivationOutput, DerivationType, aterm};
use crate::engine::format::hash::{Hash, sha256};
use crate::engine::format::store_path::{StoreDir, StorePath};

/// Whether the output paths of a derivation are known before it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrvHashKind {
    /// The hashes give the output paths.
    Regular,
    /// A floating content-addressed or impure derivation is involved.
    Deferred,
}

/// The hash modulo of each output of a derivation (the same for every output unless the
/// derivation is fixed-output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvHash {
    pub hashes: BTreeMap<String, Hash>,
    pub kind: DrvHashKind,
}

/// Memoised hashes modulo of `.drv` paths (Nix's `DrvHashes`), unmasked, as dependents use
/// them. Seed it with [`DrvHashes::insert`] to avoid loading derivations already hashed.
#[derive(Debug, Default, Clone)]
pub struct DrvHashes {
    known: HashMap<StorePath, DrvHash>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl DrvHashes {
    pub fn new() -> DrvHashes {
        DrvHashes::default()
    }

    pub fn get(&self, drv_path: &StorePath) -> Option<&DrvHash> {
        self.known.get(drv_path)
    }

    pub fn insert(&mut self, drv_path: StorePath, hash: DrvHash) {
        self.known.insert(drv_path, hash);
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The hash modulo of the derivation stored at `drv_path`, loading it and any input not
    /// yet known with `resolve`.
    pub fn path_hash<R, E>(
        &mut self,
        store_dir: &StoreDir,
        drv_path: &StorePath,
        mut resolve: R,
    ) -> Result<&DrvHash, DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<BoxError>,
    {
        self.load(store_dir, std::iter::once(drv_path), &mut resolve)?;
        Ok(&self.known[drv_path])
    }

    /// The hash modulo of `drv`; with `mask_outputs`, of `drv` with its output paths and
    /// output environment variables blanked (how a new derivation's output paths are found).
    pub fn hash_derivation_modulo<R, E>(
        &mut self,
        store_dir: &StoreDir,
        drv: &Derivation,
        mask_outputs: bool,
        mut resolve: R,
    ) -> Result<DrvHash, DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<BoxError>,
    {
        self.load(store_dir, drv.input_drvs.keys(), &mut resolve)?;
        hash_with_known_inputs(store_dir, drv, mask_outputs, &self.known)
    }

    /// Hashes every derivation reachable from `roots` that is not known yet, inputs first.
    fn load<'a, R, E>(
        &mut self,
        store_dir: &StoreDir,
        roots: impl Iterator<Item = &'a StorePath>,
        resolve: &mut R,
    ) -> Result<(), DerivationError>
    where
        R: FnMut(&StorePath) -> Result<Derivation, E>,
        E: Into<BoxError>,
    {
        struct Frame {
            path: StorePath,
            drv: Derivation,
            pending: Vec<StorePath>,
        }
        let mut open = |path: &StorePath, on_stack: &mut HashSet<StorePath>| {
            let drv = resolve(path).map_err(|e| DerivationError::Resolve {
                drv: store_dir.display(path),
                source: e.into(),
            })?;
            on_stack.insert(path.clone());
            Ok::<_, DerivationError>(Frame {
                path: path.clone(),
                pending: drv.input_drvs.keys().rev().cloned().collect(),
                drv,
            })
        };
        let mut on_stack = HashSet::new();
        for root in roots {
            if self.known.contains_key(root) {
                continue;
            }
            let mut stack = vec![open(root, &mut on_stack)?];
            while let Some(top) = stack.last_mut() {
                if let Some(next) = top.pending.pop() {
                    if self.known.contains_key(&next) {
                        continue;
                    }
                    if on_stack.contains(&next) {
                        return Err(DerivationError::Cycle(store_dir.display(&next)));
                    }
                    let frame = open(&next, &mut on_stack)?;
                    stack.push(frame);
                } else {
                    let done = stack.pop().expect("stack is not empty");
                    on_stack.remove(&done.path);
                    let hash = hash_with_known_inputs(store_dir, &done.drv, false, &self.known)?;
                    self.known.insert(done.path, hash);
                }
            }
        }
        Ok(())
    }
}

/// The hash modulo of `drv`, whose input derivations are all in `known`.
fn hash_with_known_inputs(
    store_dir: &StoreDir,
    drv: &Derivation,
    mask_outputs: bool,
    known: &HashMap<StorePath, DrvHash>,
) -> Result<DrvHash, DerivationError> {
    let kind = match drv.derivation_type()? {
        DerivationType::ContentAddressed { fixed: true } => {
            return Ok(DrvHash {
                hashes: fixed_output_hashes(store_dir, drv),
                kind: DrvHashKind::Regular,
            });
        }
        DerivationType::Impure => {
            let impure = sha256(b"impure");
            return Ok(DrvHash {
                hashes: drv.outputs.keys().map(|o| (o.clone(), impure)).collect(),
                kind: DrvHashKind::Deferred,
            });
        }
        DerivationType::ContentAddressed { fixed: false } => DrvHashKind::Deferred,
        DerivationType::InputAddressed { .. } => DrvHashKind::Regular,
    };
    let mut kind = kind;
    let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, outputs) in &drv.input_drvs {
        let input = known
            .get(path)
            .expect("inputs are hashed before their dependents");
        if input.kind == DrvHashKind::Deferred {
            kind = DrvHashKind::Deferred;
        }
        for output in outputs {
            let hash =
                input
                    .hashes
                    .get(output)
                    .ok_or_else(|| DerivationError::MissingInputOutput {
                        drv: store_dir.display(path),
                        output: output.clone(),
                    })?;
            inputs
                .entry(hash.to_base16())
                .or_default()
                .insert(output.clone());
        }
    }
    let mut text = Vec::with_capacity(4096);
    aterm::write(drv, &mut text, store_dir, mask_outputs, Some(&inputs));
    let hash = sha256(&text);
    Ok(DrvHash {
        hashes: drv.outputs.keys().map(|o| (o.clone(), hash)).collect(),
        kind,
    })
}

fn fixed_output_hashes(store_dir: &StoreDir, drv: &Derivation) -> BTreeMap<String, Hash> {
    drv.outputs
        .iter()
        .filter_map(|(name, output)| match output {
            DerivationOutput::Fixed { path, hash } => {
                let text = format!(
                    "fixed:out:{}:{}:{}",
                    hash.method_algo(),
                    hash.hash.to_base16(),
                    store_dir.display(path)
                );
                Some((name.clone(), sha256(text.as_bytes())))
            }
            _ => None,
        })
        .collect()
}
