//! Everything Nix means: formats, the store, the scheduler and the builds.

pub mod api;
pub mod build;
pub mod driver;
pub mod executor;
pub mod format;
pub mod plan;
pub mod scheduler;
pub mod settings;
pub mod sim;
pub mod store;
pub mod substitute;
