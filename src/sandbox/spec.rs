//! What to run for a build, as plain data: the program, its arguments and environment (bytes,
//! since Nix allows any), the working directory, the user to run as, the personality, and
//! (with the sandbox) the namespaces to set up. The engine builds a [`SandboxSpec`] from a
//! derivation; the supervisor (`drover __build-exec`) reads it and runs it. It travels as
//! JSON behind an 8-byte little-endian length on the supervisor's standard input.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One builder to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The executable (an absolute path, as in a derivation's `builder`).
    pub program: Vec<u8>,
    /// The arguments, `argv[0]` included (Nix passes the builder's base name).
    pub argv: Vec<Vec<u8>>,
    /// The whole environment, in order.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the builder starts.
    pub cwd: PathBuf,
    /// Switch to this user and group (a build user); `None` runs as the caller.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub personality: Personality,
    /// Linux namespaces to isolate the build in; `None` runs it in the caller's (no sandbox).
    pub namespaces: Option<Namespaces>,
}

/// Personality flags for the builder (Nix sets them for determinism).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Personality {
    /// A 32-bit build on a 64-bit machine (`i686-linux` on `x86_64`, `armv7l-linux`, ...).
    pub linux32: bool,
    /// Report a 2.6 kernel (`impersonate-linux-26`).
    pub uname26: bool,
}

/// The isolation a sandboxed build gets; filled in by the sandbox work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// A private network namespace with only a loopback interface (all but fixed-output
    /// builds).
    pub private_network: bool,
}

impl SandboxSpec {
    /// Writes the spec as the supervisor expects it on its standard input.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a spec always serialises");
        let mut out = Vec::with_capacity(8 + json.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Reads one encoded spec (and nothing more) from `input`.
    pub fn read_from(input: &mut impl Read) -> io::Result<SandboxSpec> {
        let mut len = [0u8; 8];
        input.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        if len > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("build spec of {len} bytes is too large"),
            ));
        }
        let mut json = vec![0u8; len as usize];
        input.read_exact(&mut json)?;
        serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes the encoded spec to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_with_arbitrary_bytes() {
        let spec = SandboxSpec {
            program: b"/bin/busybox".to_vec(),
            argv: vec![b"busybox".to_vec(), b"sh".to_vec(), vec![0xff, b'\n', 0]],
            env: vec![(b"out".to_vec(), b"/nix/store/x".to_vec())],
            cwd: PathBuf::from("/tmp/nix-build-x.drv-0"),
            uid: None,
            gid: Some(30001),
            personality: Personality {
                linux32: true,
                uname26: false,
            },
            namespaces: None,
        };
        let bytes = spec.encode();
        let mut input = &bytes[..];
        assert_eq!(SandboxSpec::read_from(&mut input).unwrap(), spec);
        assert!(input.is_empty(), "nothing beyond the spec is read");
    }

    #[test]
    fn a_truncated_spec_is_an_error() {
        let bytes = SandboxSpec {
            program: b"/x".to_vec(),
            argv: vec![],
            env: vec![],
            cwd: PathBuf::from("/"),
            uid: None,
            gid: None,
            personality: Personality::default(),
            namespaces: None,
        }
        .encode();
        assert!(SandboxSpec::read_from(&mut &bytes[..bytes.len() - 1]).is_err());
    }
}
