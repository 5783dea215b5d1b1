//! drover: Nix's build engine (goals, workers, builds, a Nix-compatible local store) with a
//! terminal UI that shows the live goal graph.
//!
//! # Layer rules
//! Data flows one way; each rule is checked by `tests/layers.rs`.
//! 1. `engine::format` depends on nothing else in the crate: Nix hashes and base-32, store
//!    paths, ATerm derivations, NAR, narinfo, reference scanning. Bytes in, bytes out, plus a
//!    directory walk for NAR dumps and reference scans.
//! 2. `engine::scheduler` is sans-IO: inputs in (store answers, completions, time), effects and
//!    events out. No tokio, processes, files or clock reads.
//! 3. `engine::driver` is the only async loop; a failing effect becomes a goal result.
//! 4. `app`'s front-ends (`plain`, `json`, `tui`) use only `engine::api` (events, commands,
//!    ids, statuses, and the `RunLink` and `BuildHistory` traits); the command runners
//!    (`plumbing`, `simulate`, `demo`) wire up the engine (driver, simulator, store) but never
//!    reach into scheduler internals.
//! 5. `sandbox` knows nothing of goals: it runs a pure `SandboxSpec`.

pub mod app;
pub mod engine;
pub mod sandbox;
