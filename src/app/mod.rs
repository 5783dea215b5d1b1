//! What a person or a CI log sees: the command line, the terminal UI and line outputs.

pub mod alloc;
pub mod build;
pub mod cli;
pub mod copy;
pub mod demo;
pub mod error;
pub mod instantiate;
pub mod json;
pub mod live;
pub mod missing;
pub mod monitor;
pub mod nix_json;
pub mod output;
pub mod plain;
pub mod plumbing;
pub mod record;
pub mod replay;
pub mod show;
pub mod simulate;
pub mod stored_logs;
pub mod targets;
pub mod tui;
pub mod watch;
pub mod why;

pub use error::AppError;
