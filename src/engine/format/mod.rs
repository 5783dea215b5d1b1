//! Nix's formats, byte for byte: hashes, base-32, store paths, derivations (ATerm), NAR,
//! narinfo and reference scanning. Pure: no store, database or process I/O (layer rule 1).

pub mod base32;
pub mod derivation;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod refs;
pub mod rewrite;
pub mod signature;
pub mod store_path;

pub use derivation::{Derivation, DerivationError, DerivationOutput};
pub use hash::{Encoding, Hash, HashAlgo, Hasher};
pub use narinfo::{NarInfo, NixCacheInfo};
pub use signature::{PublicKey, PublicKeys, SecretKey, Signature};
pub use store_path::{ContentAddress, IngestionMethod, StoreDir, StorePath};
