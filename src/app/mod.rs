//! What a person or a CI log sees: the command line, and (later) the TUI and line outputs.

pub mod alloc;
pub mod build;
pub mod cli;
pub mod error;
pub mod json;
pub mod plain;
pub mod plumbing;
pub mod simulate;

pub use error::AppError;
