//! What to run for a build, as plain data: the program, its arguments and environment (bytes,
//! since Nix allows any), the working directory, the user to run as, the personality, and
//! (with the sandbox) the namespaces to set up. The engine builds a [`SandboxSpec`] from a
//! derivation; the supervisor (`drover __build-exec`) decodes it and runs it.
//!
//! It travels in a small binary encoding (every field a little-endian `u32` length or value,
//! byte strings after their length): an environment may hold megabytes, and the supervisor
//! should spend no time parsing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use thiserror::Error;

/// One builder to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The executable (an absolute path, as in a derivation's `builder`).
    pub program: Vec<u8>,
    /// The arguments, `argv[0]` included (Nix passes the builder's base name).
    pub argv: Vec<Vec<u8>>,
    /// The whole environment as `NAME=value` entries, in order.
    pub env: Vec<Vec<u8>>,
    /// Where the builder starts.
    pub cwd: PathBuf,
    /// Switch to this user and group (a build user); `None` runs as the caller.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups of the build user.
    pub groups: Vec<u32>,
    pub personality: Personality,
    /// Linux namespaces to isolate the build in; `None` runs it in the caller's (no sandbox).
    pub namespaces: Option<Namespaces>,
}

/// Personality flags for the builder (Nix sets them for determinism).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Personality {
    /// A 32-bit build on a 64-bit machine (`i686-linux` on `x86_64`, `armv7l-linux`, ...).
    pub linux32: bool,
    /// Report a 2.6 kernel (`impersonate-linux-26`).
    pub uname26: bool,
}

/// The isolation a sandboxed build gets; filled in by the sandbox work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// A private network namespace with only a loopback interface (all but fixed-output
    /// builds).
    pub private_network: bool,
}

/// A spec that could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed build spec at byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

const NONE: u32 = u32::MAX;

struct Encoder(Vec<u8>);

impl Encoder {
    fn num(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.num(u32::try_from(b.len()).expect("a field below 4 GiB"));
        self.0.extend_from_slice(b);
    }

    fn list(&mut self, items: &[Vec<u8>]) {
        self.num(items.len() as u32);
        for i in items {
            self.bytes(i);
        }
    }

    fn opt(&mut self, n: Option<u32>) {
        self.num(n.unwrap_or(NONE));
    }
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }

    fn num(&mut self) -> Result<u32, DecodeError> {
        let b = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("truncated number"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes(b.try_into().expect("four bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.num()? as usize;
        let b = self
            .data
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| self.err("truncated string"))?;
        self.pos += n;
        Ok(b)
    }

    fn list(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let n = self.num()? as usize;
        if n > self.data.len() {
            return Err(self.err("list longer than the spec"));
        }
        (0..n).map(|_| self.bytes().map(<[u8]>::to_vec)).collect()
    }

    fn opt(&mut self) -> Result<Option<u32>, DecodeError> {
        Ok(Some(self.num()?).filter(|&n| n != NONE))
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.num()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("expected 0 or 1")),
        }
    }
}

impl SandboxSpec {
    /// The spec as bytes (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let env_size: usize = self.env.iter().map(|e| e.len() + 4).sum();
        let mut e = Encoder(Vec::with_capacity(256 + env_size));
        e.bytes(&self.program);
        e.list(&self.argv);
        e.list(&self.env);
        e.bytes(self.cwd.as_os_str().as_encoded_bytes());
        e.opt(self.uid);
        e.opt(self.gid);
        e.num(self.groups.len() as u32);
        for &g in &self.groups {
            e.num(g);
        }
        e.num(u32::from(self.personality.linux32));
        e.num(u32::from(self.personality.uname26));
        match &self.namespaces {
            None => e.num(0),
            Some(ns) => {
                e.num(1);
                e.num(u32::from(ns.private_network));
            }
        }
        e.0
    }

    /// Decodes what [`SandboxSpec::encode`] wrote; every byte must be used.
    pub fn decode(data: &[u8]) -> Result<SandboxSpec, DecodeError> {
        let mut d = Decoder { data, pos: 0 };
        let program = d.bytes()?.to_vec();
        let argv = d.list()?;
        let env = d.list()?;
        let cwd = PathBuf::from(OsStr::from_bytes(d.bytes()?));
        let uid = d.opt()?;
        let gid = d.opt()?;
        let n = d.num()? as usize;
        if n > data.len() {
            return Err(d.err("too many groups"));
        }
        let groups = (0..n).map(|_| d.num()).collect::<Result<_, _>>()?;
        let personality = Personality {
            linux32: d.flag()?,
            uname26: d.flag()?,
        };
        let namespaces = if d.flag()? {
            Some(Namespaces {
                private_network: d.flag()?,
            })
        } else {
            None
        };
        if d.pos != data.len() {
            return Err(d.err("trailing bytes"));
        }
        Ok(SandboxSpec {
            program,
            argv,
            env,
            cwd,
            uid,
            gid,
            groups,
            personality,
            namespaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SandboxSpec {
        SandboxSpec {
            program: b"/bin/busybox".to_vec(),
            argv: vec![b"busybox".to_vec(), b"sh".to_vec(), vec![0xff, b'\n', 0]],
            env: vec![b"out=/nix/store/x".to_vec(), b"E=".to_vec()],
            cwd: PathBuf::from("/tmp/nix-build-x.drv-0"),
            uid: None,
            gid: Some(30001),
            groups: vec![1, 2],
            personality: Personality {
                linux32: true,
                uname26: false,
            },
            namespaces: Some(Namespaces {
                private_network: true,
            }),
        }
    }

    #[test]
    fn a_spec_round_trips_with_arbitrary_bytes() {
        let spec = sample();
        assert_eq!(SandboxSpec::decode(&spec.encode()).unwrap(), spec);
        let plain = SandboxSpec {
            namespaces: None,
            groups: vec![],
            ..spec
        };
        assert_eq!(SandboxSpec::decode(&plain.encode()).unwrap(), plain);
    }

    #[test]
    fn truncated_or_padded_specs_are_errors() {
        let bytes = sample().encode();
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(SandboxSpec::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SandboxSpec::decode(&long).unwrap_err().what,
            "trailing bytes"
        );
        let mut huge = bytes;
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SandboxSpec::decode(&huge).is_err());
    }
}
