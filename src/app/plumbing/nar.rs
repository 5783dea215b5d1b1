//! `hash-path`, `hash-file`, `dump`, `restore`: NAR serialisation and hashing of paths, with
//! the output of `nix-hash` and `nix-store --dump/--restore`.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use data_encoding::{BASE64, HEXLOWER};

use crate::app::AppError;
use crate::engine::format::hash::compress_hash;
use crate::engine::format::{Hash, HashAlgo, base32, nar};

#[derive(Debug, Args)]
pub struct HashArgs {
    /// Hash algorithm: md5, sha1, sha256 or sha512.
    #[arg(long = "type", default_value = "sha256", value_parser = parse_algo)]
    pub algo: HashAlgo,
    /// Print in Nix base-32.
    #[arg(long, conflicts_with_all = ["base16", "sri", "base64"])]
    pub base32: bool,
    /// Print in base-16 (the default).
    #[arg(long, conflicts_with_all = ["sri", "base64"])]
    pub base16: bool,
    /// Print in base-64.
    #[arg(long, conflicts_with = "sri")]
    pub base64: bool,
    /// Print as SRI (`sha256-…`).
    #[arg(long)]
    pub sri: bool,
    /// Fold the hash to 160 bits, as `nix-hash --truncate`.
    #[arg(long)]
    pub truncate: bool,
    /// The paths to hash.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn parse_algo(s: &str) -> Result<HashAlgo, String> {
    s.parse()
        .map_err(|e: crate::engine::format::hash::HashError| e.to_string())
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The file, directory or symlink to serialise.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where to create the file system object (must not exist).
    pub path: PathBuf,
}

impl HashArgs {
    /// The hash as `nix-hash` prints it: folded to 20 bytes with `--truncate` (when longer),
    /// prefixed by the algorithm only in SRI form.
    fn format(&self, hash: &Hash) -> String {
        let folded: [u8; 20];
        let digest = if self.truncate && hash.digest().len() > 20 {
            folded = compress_hash(hash.digest());
            &folded[..]
        } else {
            hash.digest()
        };
        if self.base32 {
            base32::encode(digest)
        } else if self.base64 {
            BASE64.encode(digest)
        } else if self.sri {
            format!("{}-{}", hash.algo(), BASE64.encode(digest))
        } else {
            HEXLOWER.encode(digest)
        }
    }

    fn print_each(
        &self,
        hash: impl Fn(&PathBuf) -> Result<Hash, AppError>,
    ) -> Result<(), AppError> {
        let mut out = io::stdout().lock();
        for path in &self.paths {
            let line = self.format(&hash(path)?);
            writeln!(out, "{line}").map_err(AppError::Stdout)?;
        }
        out.flush().map_err(AppError::Stdout)
    }
}

/// `nix-hash --type T PATH...`: the hash of each path's NAR serialisation.
pub fn hash_path(args: &HashArgs) -> Result<(), AppError> {
    args.print_each(|path| Ok(nar::hash_path(path, args.algo)?.0))
}

/// `nix-hash --flat --type T PATH...`: the hash of each file's contents.
pub fn hash_file(args: &HashArgs) -> Result<(), AppError> {
    args.print_each(|path| Ok(nar::hash_flat(path, args.algo)?.0))
}

/// `nix-store --dump PATH`: the NAR on standard output (written by a second thread while
/// this one reads the files).
pub fn dump(args: &DumpArgs) -> Result<(), AppError> {
    match nar::dump_path_parallel(&args.path, &mut io::stdout()) {
        Ok(_) => Ok(()),
        Err(nar::NarError::Write(e)) => Err(AppError::Stdout(e)),
        Err(e) => Err(e.into()),
    }
}

/// `nix-store --restore PATH`: unpacks the NAR read from standard input at PATH.
pub fn restore(args: &RestoreArgs) -> Result<(), AppError> {
    nar::restore(io::stdin().lock(), &args.path)?;
    Ok(())
}
