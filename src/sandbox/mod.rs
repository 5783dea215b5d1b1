//! Running builders. A builder is described by a pure [`SandboxSpec`]; isolation in Linux
//! namespaces fills in [`SandboxSpec::namespaces`] with the sandbox issue. This module knows
//! nothing of goals or derivations (layer rule 5).

pub mod spec;

pub use spec::{Namespaces, Personality, SandboxSpec};
