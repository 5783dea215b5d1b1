//! Real builds, as Nix 2.8's `LocalDerivationGoal` does them: running builders and
//! registering their outputs ([`register`]).

pub mod register;
