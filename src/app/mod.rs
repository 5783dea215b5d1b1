//! What a person or a CI log sees: the command line, the terminal UI and line outputs.

pub mod cli;
pub mod demo;
pub mod error;
pub mod json;
pub mod live;
pub mod plain;
pub mod plumbing;
pub mod simulate;
pub mod stored_logs;
pub mod tui;

pub use error::AppError;
