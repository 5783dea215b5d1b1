//! Everything Nix means: formats, the store, the scheduler and the builds.

pub mod format;
pub mod store;
