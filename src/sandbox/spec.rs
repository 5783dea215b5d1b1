//! What to run for a build, as plain data: the program, its arguments and environment (bytes,
//! since Nix allows any), the working directory, the user to run as, the personality, and
//! (with the sandbox) the namespaces to set up and the root to assemble: what to bind where,
//! which files to write, the id maps, the host name. The engine builds a [`SandboxSpec`] from a
//! derivation; the supervisor (`drover __build-exec`) decodes it and runs it.
//!
//! It travels in a small binary encoding (every field a little-endian `u32` length or value,
//! byte strings after their length): an environment may hold megabytes, and the supervisor
//! should spend no time parsing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
    /// Switch to this user and group (a build user); `None` runs as the caller. With
    /// [`SandboxSpec::namespaces`] these stay `None`: the sandbox's [`IdMap`]s say who the
    /// builder is.
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

/// The isolation a sandboxed build gets (Nix's `useChroot` on Linux): every path is absolute;
/// `chroot` is a host path, targets are paths inside the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// The host directory where the sandbox's root is assembled; the sandbox creates it (it
    /// must not exist) and the engine deletes it after the build.
    pub chroot: PathBuf,
    /// The logical store dir, created inside (mode 01775) and writable: the outputs are
    /// written there, at `chroot` + their logical path.
    pub store_dir: PathBuf,
    /// The host build directory, and where the builder sees it (`sandbox-build-dir`).
    pub build_dir: PathBuf,
    pub sandbox_build_dir: PathBuf,
    /// Host files and directories to bind (input closure, `sandbox-paths`, devices), in an
    /// order where a target comes after the targets it lies in.
    pub binds: Vec<BindMount>,
    /// Files written into the root before the binds (`/etc/passwd`, `/etc/group`, ...).
    pub files: Vec<SandboxFile>,
    /// A private network namespace with only a loopback interface (all but fixed-output
    /// and impure builds).
    pub private_network: bool,
    /// The builder's user and group inside, and the host ids they map to.
    pub uid: IdMap,
    pub gid: IdMap,
    pub hostname: String,
    pub domainname: String,
    /// A nearly empty `/dev` (directories `shm` and `pts`, the `fd`, `stdin`, `stdout`,
    /// `stderr` links); the device nodes themselves come as binds.
    pub minimal_dev: bool,
    /// A new `devpts` instance on `/dev/pts` with `/dev/ptmx` pointing into it.
    pub devpts: bool,
    /// A tmpfs on `/dev/shm` with this `size=` option (`sandbox-dev-shm-size`).
    pub dev_shm_size: Option<String>,
    /// Refuse setuid/setgid modes and extended attributes (`filter-syscalls`).
    pub seccomp: bool,
    /// Leave `no_new_privs` unset (`allow-new-privileges`).
    pub allow_new_privileges: bool,
    /// The builder is the host's root (no build user): make the kernel's knobs in `/proc`
    /// (`sys`, `sysrq-trigger`, ...) read-only, since its file permissions would let it in.
    pub protect_proc: bool,
}

/// A host path that appears in the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    /// A missing source is skipped rather than an error (`sandbox-paths` with `?`).
    pub optional: bool,
}

/// A file the sandbox writes into its root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFile {
    pub target: PathBuf,
    pub contents: Vec<u8>,
}

/// An id inside a user namespace and the host id it maps to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
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

    fn flag(&mut self, b: bool) {
        self.num(u32::from(b));
    }

    fn path(&mut self, p: &Path) {
        self.bytes(p.as_os_str().as_bytes());
    }

    fn namespaces(&mut self, ns: &Namespaces) {
        self.path(&ns.chroot);
        self.path(&ns.store_dir);
        self.path(&ns.build_dir);
        self.path(&ns.sandbox_build_dir);
        self.num(ns.binds.len() as u32);
        for b in &ns.binds {
            self.path(&b.source);
            self.path(&b.target);
            self.flag(b.read_only);
            self.flag(b.optional);
        }
        self.num(ns.files.len() as u32);
        for f in &ns.files {
            self.path(&f.target);
            self.bytes(&f.contents);
        }
        self.flag(ns.private_network);
        for id in [ns.uid, ns.gid] {
            self.num(id.inside);
            self.num(id.outside);
        }
        self.bytes(ns.hostname.as_bytes());
        self.bytes(ns.domainname.as_bytes());
        self.flag(ns.minimal_dev);
        self.flag(ns.devpts);
        match &ns.dev_shm_size {
            None => self.flag(false),
            Some(size) => {
                self.flag(true);
                self.bytes(size.as_bytes());
            }
        }
        self.flag(ns.seccomp);
        self.flag(ns.allow_new_privileges);
        self.flag(ns.protect_proc);
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

    fn path(&mut self) -> Result<PathBuf, DecodeError> {
        Ok(PathBuf::from(OsStr::from_bytes(self.bytes()?)))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid UTF-8"))
    }

    /// A count of items of at least `min_size` bytes each that must fit in the rest.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.num()? as usize;
        if n.saturating_mul(min_size) > self.data.len() - self.pos {
            return Err(self.err("list longer than the spec"));
        }
        Ok(n)
    }

    fn id_map(&mut self) -> Result<IdMap, DecodeError> {
        Ok(IdMap {
            inside: self.num()?,
            outside: self.num()?,
        })
    }

    fn namespaces(&mut self) -> Result<Namespaces, DecodeError> {
        let chroot = self.path()?;
        let store_dir = self.path()?;
        let build_dir = self.path()?;
        let sandbox_build_dir = self.path()?;
        let binds = (0..self.count(16)?)
            .map(|_| {
                Ok(BindMount {
                    source: self.path()?,
                    target: self.path()?,
                    read_only: self.flag()?,
                    optional: self.flag()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let files = (0..self.count(8)?)
            .map(|_| {
                Ok(SandboxFile {
                    target: self.path()?,
                    contents: self.bytes()?.to_vec(),
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Namespaces {
            chroot,
            store_dir,
            build_dir,
            sandbox_build_dir,
            binds,
            files,
            private_network: self.flag()?,
            uid: self.id_map()?,
            gid: self.id_map()?,
            hostname: self.string()?,
            domainname: self.string()?,
            minimal_dev: self.flag()?,
            devpts: self.flag()?,
            dev_shm_size: if self.flag()? {
                Some(self.string()?)
            } else {
                None
            },
            seccomp: self.flag()?,
            allow_new_privileges: self.flag()?,
            protect_proc: self.flag()?,
        })
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
                e.namespaces(ns);
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
            Some(d.namespaces()?)
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
    use proptest::prelude::*;

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
            namespaces: Some(sample_namespaces()),
        }
    }

    fn sample_namespaces() -> Namespaces {
        Namespaces {
            chroot: PathBuf::from("/nix/store/x.drv.chroot"),
            store_dir: PathBuf::from("/nix/store"),
            build_dir: PathBuf::from("/tmp/nix-build-x.drv-0"),
            sandbox_build_dir: PathBuf::from("/build"),
            binds: vec![
                BindMount {
                    source: PathBuf::from("/real/nix/store/abc-in"),
                    target: PathBuf::from("/nix/store/abc-in"),
                    read_only: true,
                    optional: false,
                },
                BindMount {
                    source: PathBuf::from(OsStr::from_bytes(b"/dev/\xffnv")),
                    target: PathBuf::from("/dev/nv"),
                    read_only: false,
                    optional: true,
                },
            ],
            files: vec![SandboxFile {
                target: PathBuf::from("/etc/hosts"),
                contents: b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
            }],
            private_network: true,
            uid: IdMap {
                inside: 1000,
                outside: 0,
            },
            gid: IdMap {
                inside: 100,
                outside: 30000,
            },
            hostname: "localhost".into(),
            domainname: "(none)".into(),
            minimal_dev: true,
            devpts: false,
            dev_shm_size: Some("50%".into()),
            seccomp: true,
            allow_new_privileges: false,
            protect_proc: true,
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

    #[test]
    fn every_cut_of_a_sandboxed_spec_is_an_error() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(SandboxSpec::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn arb_path() -> impl Strategy<Value = PathBuf> {
        proptest::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| PathBuf::from(OsStr::from_bytes(&b)))
    }

    fn arb_namespaces() -> impl Strategy<Value = Namespaces> {
        let bind = (arb_path(), arb_path(), any::<bool>(), any::<bool>()).prop_map(
            |(source, target, read_only, optional)| BindMount {
                source,
                target,
                read_only,
                optional,
            },
        );
        let file = (arb_path(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(target, contents)| SandboxFile { target, contents });
        (
            (arb_path(), arb_path(), arb_path(), arb_path()),
            proptest::collection::vec(bind, 0..6),
            proptest::collection::vec(file, 0..4),
            any::<[u32; 4]>(),
            (".*", ".*", proptest::option::of(".*")),
            any::<[bool; 6]>(),
        )
            .prop_map(|(dirs, binds, files, ids, names, flags)| Namespaces {
                chroot: dirs.0,
                store_dir: dirs.1,
                build_dir: dirs.2,
                sandbox_build_dir: dirs.3,
                binds,
                files,
                private_network: flags[0],
                uid: IdMap {
                    inside: ids[0],
                    outside: ids[1],
                },
                gid: IdMap {
                    inside: ids[2],
                    outside: ids[3],
                },
                hostname: names.0,
                domainname: names.1,
                dev_shm_size: names.2,
                minimal_dev: flags[1],
                devpts: flags[2],
                seccomp: flags[3],
                allow_new_privileges: flags[4],
                protect_proc: flags[5],
            })
    }

    proptest! {
        #[test]
        fn namespaces_round_trip(ns in arb_namespaces()) {
            let spec = SandboxSpec { namespaces: Some(ns), ..sample() };
            prop_assert_eq!(SandboxSpec::decode(&spec.encode()).unwrap(), spec);
        }
    }
}
