//! `show-derivation` and `store-path`: derivations and store path computations.

use std::path::PathBuf;

use clap::Args;

use crate::app::AppError;

#[derive(Debug, Args)]
pub struct ShowDerivationArgs {
    /// Reprint the ATerm instead of JSON (byte-identical to the input for a valid `.drv`).
    #[arg(long)]
    pub aterm: bool,
    /// The `.drv` files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StorePathArgs {
    /// Logical store directory.
    #[arg(long, default_value = "/nix/store")]
    pub store_dir: String,
}

pub fn show_derivation(_args: &ShowDerivationArgs) -> Result<(), AppError> {
    Err(AppError::Usage("show-derivation: not in yet".into()))
}

pub fn store_path(_args: &StorePathArgs) -> Result<(), AppError> {
    Err(AppError::Usage("store-path: not in yet".into()))
}
