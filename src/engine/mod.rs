//! Everything Nix means: formats, the store, the scheduler and the builds.

pub mod api;
pub mod driver;
pub mod format;
pub mod scheduler;
pub mod sim;
pub mod store;
pub mod substitute;
