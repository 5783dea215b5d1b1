//! The error type of the command-line front-ends: what went wrong, with the path or input it
//! concerns. `main` prints it as `error: …` and exits with status 1.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::engine::format::{hash::HashError, store_path::StorePathError};

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
    #[error("plan '{}': {message}", path.display())]
    Plan { path: PathBuf, message: String },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
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
