//! The error type of the command-line front-ends: what went wrong, with the path or input it
//! concerns. `main` prints it as `error: …` and exits with status 1.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::engine::format::{
    derivation::DerivationError,
    hash::HashError,
    nar::NarError,
    narinfo::{CacheInfoError, NarInfoError},
    signature::{FingerprintError, KeyError, VerifyError},
    store_path::StorePathError,
};
use crate::engine::plan::PlanError;

#[derive(Debug, Error)]
pub enum AppError {
    #[error("{0}")]
    Usage(String),
    #[error("{action} '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("writing to standard output: {0}")]
    Stdout(io::Error),
    #[error("terminal: {action}: {source}")]
    Terminal {
        action: &'static str,
        source: io::Error,
    },
    #[error("plan '{}': {message}", path.display())]
    Plan { path: PathBuf, message: String },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] crate::engine::store::StoreError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error(transparent)]
    Nar(#[from] NarError),
    #[error(transparent)]
    NarInfo(#[from] NarInfoError),
    #[error(transparent)]
    CacheInfo(#[from] CacheInfoError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("derivation '{}': {source}", path.display())]
    DerivationFile {
        path: PathBuf,
        source: DerivationError,
    },
    #[error(transparent)]
    Derivation(#[from] DerivationError),
    #[error(transparent)]
    PlanFile(#[from] PlanError),
    #[error(transparent)]
    Record(#[from] crate::app::record::RecordError),
    #[error(transparent)]
    Substitute(#[from] crate::engine::substitute::SubstituteError),
}

impl AppError {
    /// An I/O error on `path` while doing `action` ("reading", "opening", …).
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> AppError {
        AppError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
