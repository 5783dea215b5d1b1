//! The Linux sandbox, as Nix 2.8's `startBuilder` and `runChild` set it up: the build
//! supervisor clones the builder into new user, mount, PID, IPC, UTS and (for pure builds)
//! network namespaces, writes its uid/gid maps, and lets it go on; the builder, PID 1 of its
//! namespace, brings up the loopback, names the host `localhost`, assembles its root in
//! [`Namespaces::chroot`] (the store dir with the bound inputs, the build directory, a nearly
//! empty `/dev`, a fresh `/proc`, the files of `/etc`), pivots into it, installs the syscall
//! filter and becomes the sandbox user.
//!
//! Beyond Nix: every bound host path is read-only but the build directory, and the root
//! itself is read-only once assembled (the store dir, `/tmp` and the build directory stay
//! writable), so that a builder that is the host's root in disguise (no build users) cannot
//! change the host through what it sees; for the same reason [`Namespaces::protect_proc`]
//! makes the kernel's knobs in `/proc` read-only.
//!
//! Everything here runs in the single-threaded supervisor or in its forked child, so plain
//! system calls (and allocation) are safe; errors are Nix's messages.

use std::ffi::{CStr, CString};
use std::fs::DirBuilder;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::helper::{close, errno, error_text, os_error, write_all};
use super::spec::Namespaces;

/// The namespaces a sandboxed builder gets.
fn clone_flags(ns: &Namespaces) -> libc::c_int {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if ns.private_network {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// Which side of [`clone_builder`] this is.
pub enum Cloned {
    /// The new builder process; wait on this descriptor with [`enter`].
    Child(RawFd),
    /// The supervisor: the builder's pid, and the descriptor to [`release`] it with.
    Parent(i32, RawFd),
}

/// A fork into new namespaces: the `clone` system call without a new stack, so the child
/// goes on from here like after `fork`.
fn clone_process(flags: libc::c_int) -> libc::c_long {
    // SAFETY: clone without CLONE_VM or a stack behaves as fork; the caller is
    // single-threaded or only makes system calls in the child.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    }
}

/// In the supervisor: creates the builder process in its namespaces.
pub fn clone_builder(ns: &Namespaces) -> Result<Cloned, String> {
    // SAFETY: plain system calls on this single-threaded process.
    unsafe {
        // Supplementary groups cannot be dropped inside the namespace (they would show up as
        // `nogroup`): drop them here when we can.
        if libc::getuid() == 0 && libc::setgroups(0, std::ptr::null()) == -1 {
            return Err(os_error("setgroups failed"));
        }
        let mut sync = [0 as RawFd; 2];
        if libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(os_error("creating a pipe"));
        }
        let pid = clone_process(clone_flags(ns));
        if pid < 0 {
            let e = os_error("cloning builder process");
            close(sync[0]);
            close(sync[1]);
            return Err(e);
        }
        if pid == 0 {
            close(sync[1]);
            return Ok(Cloned::Child(sync[0]));
        }
        close(sync[0]);
        Ok(Cloned::Parent(pid as i32, sync[1]))
    }
}

/// In the supervisor: maps the sandbox user and group to the host ones and lets the builder
/// go on. On an error the builder sees the pipe close and gives up.
pub fn release(pid: i32, ns: &Namespaces, sync: RawFd) -> Result<(), String> {
    let write = |file: &str, text: String| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| {
            let text = e
                .raw_os_error()
                .map_or(e.to_string(), |n| error_text(n).into());
            format!("writing '{path}': {text}")
        })
    };
    let result = write("uid_map", format!("{} {} 1", ns.uid.inside, ns.uid.outside))
        .and_then(|()| write("setgroups", "deny".into()))
        .and_then(|()| write("gid_map", format!("{} {} 1", ns.gid.inside, ns.gid.outside)))
        .and_then(|()| {
            write_all(sync, b"1").map_err(|e| format!("releasing the builder: {}", error_text(e)))
        });
    close(sync);
    result
}

/// Whether this kernel lets us create the sandbox's namespaces and mount in them: a child
/// cloned into them tries to make its mounts private. Callable from any process.
pub fn probe_namespaces() -> Result<(), String> {
    let ns = Namespaces {
        private_network: true,
        ..Namespaces::default()
    };
    let pid = clone_process(clone_flags(&ns));
    if pid < 0 {
        return Err(os_error("cloning a process into new namespaces"));
    }
    if pid == 0 {
        // SAFETY: only system calls in the child, then leaving it.
        unsafe {
            let ok = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_PRIVATE | libc::MS_REC,
                std::ptr::null(),
            ) == 0;
            libc::_exit(if ok { 0 } else { errno().clamp(1, 255) });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for the child just created.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::__WALL) };
        if r == pid as i32 {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(os_error("waiting for the namespace probe"));
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFEXITED(status) {
        Err(format!(
            "mounting in a new mount namespace: {}",
            error_text(libc::WEXITSTATUS(status))
        ))
    } else {
        Err(format!("the namespace probe ended with status {status}"))
    }
}

fn cstring(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("path '{}' contains a NUL byte", p.display()))
}

/// `root` + `path` (an absolute path inside the sandbox).
fn under(root: &Path, path: &Path) -> PathBuf {
    let mut p = root.as_os_str().to_owned();
    if !path.as_os_str().as_bytes().starts_with(b"/") {
        p.push("/");
    }
    p.push(path.as_os_str());
    PathBuf::from(p)
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

fn sys_error(what: String, e: i32) -> String {
    format!("{what}: {}", error_text(e))
}

fn mkdirs(path: &Path, mode: u32) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| format!("creating directory '{}': {e}", path.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("changing mode of '{}' to {mode:o}: {e}", path.display()))
}

fn symlink(target: &str, link: &Path) -> Result<(), String> {
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| format!("creating symlink '{}': {e}", link.display()))
}

/// Binds `source` onto `target`, creating the target as a directory or an empty file
/// like the source. False when an optional source does not exist.
fn bind(source: &Path, target: &Path, optional: bool) -> Result<bool, String> {
    let meta = match std::fs::metadata(source) {
        Ok(m) => m,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            let text = e
                .raw_os_error()
                .map_or(e.to_string(), |n| error_text(n).into());
            return Err(format!(
                "getting attributes of path '{}': {text}",
                source.display()
            ));
        }
    };
    if meta.is_dir() {
        mkdirs(target, 0o755)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdirs(parent, 0o755)?;
        }
        if std::fs::symlink_metadata(target).is_err() {
            std::fs::write(target, b"")
                .map_err(|e| format!("creating '{}': {e}", target.display()))?;
        }
    }
    let (s, t) = (cstring(source)?, cstring(target)?);
    mount(Some(&s), &t, Some(c""), libc::MS_BIND | libc::MS_REC, None).map_err(|e| {
        sys_error(
            format!(
                "bind mount from '{}' to '{}' failed",
                source.display(),
                target.display()
            ),
            e,
        )
    })?;
    Ok(true)
}

/// Makes the mount at `target` read-only. The flags a user namespace locks (`nosuid`,
/// `nodev`, `noexec`, the atime mode) are passed on as they are.
fn remount_read_only(target: &Path) -> Result<(), String> {
    let t = cstring(target)?;
    // SAFETY: `statvfs` fills in the plain struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(t.as_ptr(), &mut st) } != 0 {
        return Err(os_error(&format!(
            "getting the mount flags of '{}'",
            target.display()
        )));
    }
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    if st.f_flag & (libc::ST_NOATIME | libc::ST_RELATIME) == 0 {
        flags |= libc::MS_STRICTATIME;
    }
    mount(None, &t, None, flags, None)
        .map_err(|e| sys_error(format!("making '{}' read-only", target.display()), e))
}

/// Binds a directory onto itself: a mount point of its own (writable under a read-only
/// root, or a root for `pivot_root`).
fn bind_self(dir: &Path, what: &str) -> Result<(), String> {
    let d = cstring(dir)?;
    mount(Some(&d), &d, None, libc::MS_BIND, None)
        .map_err(|e| sys_error(format!("unable to bind mount {what}"), e))
}

/// Reads the supervisor's go-ahead: "1", then the end of the pipe.
fn wait_for_release(sync: RawFd) -> Result<(), String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(sync, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    close(sync);
    if got == b"1" {
        Ok(())
    } else {
        Err("user namespace initialisation failed".into())
    }
}

/// Brings up the loopback interface of a new network namespace.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a socket for the ioctl, and a zeroed `ifreq` filled in.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd == -1 {
            return Err(os_error("cannot open IP socket"));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo") {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as _;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        let e = errno();
        close(fd);
        if r == -1 {
            return Err(sys_error("cannot set loopback interface flags".into(), e));
        }
    }
    Ok(())
}

fn set_names(ns: &Namespaces) -> Result<(), String> {
    // SAFETY: names passed with their lengths.
    unsafe {
        if libc::sethostname(ns.hostname.as_ptr().cast(), ns.hostname.len()) == -1 {
            return Err(os_error("cannot set host name"));
        }
        if libc::setdomainname(ns.domainname.as_ptr().cast(), ns.domainname.len()) == -1 {
            return Err(os_error("cannot set domain name"));
        }
    }
    Ok(())
}

/// The parts of `/proc` a builder that is the host's root must not write to.
const PROTECTED_PROC: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Assembles the root in `ns.chroot` (still seen from the host's root).
fn assemble_root(ns: &Namespaces) -> Result<(), String> {
    let root = &ns.chroot;
    let at = |p: &str| under(root, Path::new(p));
    // SAFETY: mkdir of a new directory; it must not exist.
    let r = cstring(root)?;
    if unsafe { libc::mkdir(r.as_ptr(), 0o750) } == -1 {
        return Err(os_error(&format!("cannot create '{}'", root.display())));
    }
    bind_self(root, &format!("'{}'", root.display()))?;

    // `/tmp` first: the store dir may lie in it.
    let tmp = at("/tmp");
    mkdirs(&tmp, 0o755)?;
    chmod(&tmp, 0o1777)?;
    bind_self(&tmp, "'/tmp'")?;
    let store = under(root, &ns.store_dir);
    mkdirs(&store, 0o755)?;
    chmod(&store, 0o1775)?;
    bind_self(&store, "the Nix store")?;

    for f in &ns.files {
        let target = under(root, &f.target);
        if let Some(parent) = target.parent() {
            mkdirs(parent, 0o755)?;
        }
        std::fs::write(&target, &f.contents)
            .map_err(|e| format!("writing file '{}': {e}", target.display()))?;
    }
    if ns.minimal_dev {
        mkdirs(&at("/dev/shm"), 0o755)?;
        mkdirs(&at("/dev/pts"), 0o755)?;
        symlink("/proc/self/fd", &at("/dev/fd"))?;
        symlink("/proc/self/fd/0", &at("/dev/stdin"))?;
        symlink("/proc/self/fd/1", &at("/dev/stdout"))?;
        symlink("/proc/self/fd/2", &at("/dev/stderr"))?;
    }

    let mut read_only = Vec::new();
    for b in &ns.binds {
        let target = under(root, &b.target);
        if bind(&b.source, &target, b.optional)? && b.read_only {
            read_only.push(target);
        }
    }
    bind(&ns.build_dir, &under(root, &ns.sandbox_build_dir), false)?;

    let proc = at("/proc");
    mkdirs(&proc, 0o555)?;
    mount(Some(c"none"), &cstring(&proc)?, Some(c"proc"), 0, None)
        .map_err(|e| sys_error("mounting /proc".into(), e))?;
    if ns.protect_proc {
        for p in PROTECTED_PROC {
            let path = proc.join(p);
            if std::fs::symlink_metadata(&path).is_ok() {
                let c = cstring(&path)?;
                mount(Some(&c), &c, None, libc::MS_BIND | libc::MS_REC, None)
                    .map_err(|e| sys_error(format!("unable to bind mount '/proc/{p}'"), e))?;
                read_only.push(path);
            }
        }
    }
    if let Some(size) = &ns.dev_shm_size {
        let shm = at("/dev/shm");
        mkdirs(&shm, 0o755)?;
        let data = CString::new(format!("size={size}"))
            .map_err(|_| "the /dev/shm size contains a NUL byte".to_owned())?;
        mount(
            Some(c"none"),
            &cstring(&shm)?,
            Some(c"tmpfs"),
            0,
            Some(&data),
        )
        .map_err(|e| sys_error("mounting /dev/shm".into(), e))?;
    }
    if ns.devpts {
        let pts = at("/dev/pts");
        mkdirs(&pts, 0o755)?;
        match mount(
            Some(c"none"),
            &cstring(&pts)?,
            Some(c"devpts"),
            0,
            Some(c"newinstance,mode=0620,ptmxmode=0666"),
        ) {
            Ok(()) => symlink("/dev/pts/ptmx", &at("/dev/ptmx"))?,
            Err(libc::EINVAL) => {
                bind(Path::new("/dev/pts"), &pts, false)?;
                bind(Path::new("/dev/ptmx"), &at("/dev/ptmx"), false)?;
            }
            Err(e) => return Err(sys_error("mounting /dev/pts".into(), e)),
        }
    }
    for target in read_only.iter().rev() {
        remount_read_only(target)?;
    }
    Ok(())
}

/// Makes the assembled root the root, and read-only.
fn pivot(ns: &Namespaces) -> Result<(), String> {
    let root = cstring(&ns.chroot)?;
    // SAFETY: system calls on strings that outlive them.
    unsafe {
        if libc::chdir(root.as_ptr()) == -1 {
            return Err(os_error(&format!(
                "cannot change directory to '{}'",
                ns.chroot.display()
            )));
        }
        // The old root ends up stacked on the new one, and is then detached.
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == -1 {
            return Err(os_error(&format!(
                "cannot pivot old root directory onto '{}'",
                ns.chroot.display()
            )));
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == -1 {
            return Err(os_error("cannot unmount real root filesystem"));
        }
        if libc::chdir(c"/".as_ptr()) == -1 {
            return Err(os_error("cannot change directory to '/'"));
        }
    }
    remount_read_only(Path::new("/"))
}

/// In the builder process, after [`clone_builder`]: waits for [`release`], then sets up the
/// sandbox up to the user switch. The caller then changes into the build directory and
/// executes the builder.
pub fn enter(ns: &Namespaces, sync: RawFd) -> Result<(), String> {
    wait_for_release(sync)?;
    if ns.private_network {
        loopback_up()?;
    }
    set_names(ns)?;
    // Mounts may be shared with the host (systemd makes them so): make ours private
    // before anything is mounted.
    mount(None, c"/", None, libc::MS_PRIVATE | libc::MS_REC, None)
        .map_err(|e| sys_error("unable to make '/' private".into(), e))?;
    assemble_root(ns)?;
    pivot(ns)?;
    if ns.seccomp {
        seccomp::install(ns.allow_new_privileges)?;
    }
    // SAFETY: switching ids inside the user namespace.
    unsafe {
        if libc::setgid(ns.gid.inside) == -1 {
            return Err(os_error("setgid failed"));
        }
        if libc::setuid(ns.uid.inside) == -1 {
            return Err(os_error("setuid failed"));
        }
    }
    Ok(())
}

/// The system call filter Nix installs (`setupSeccomp`): `chmod`, `fchmod`, `fchmodat` (and
/// the newer `fchmodat2`) with a setuid or setgid bit fail with `EPERM`; `setxattr`,
/// `lsetxattr`, `fsetxattr` (and `setxattrat`) fail with `ENOTSUP`, since NARs cannot hold
/// extended attributes or ACLs. The calls of the native architecture and of its 32-bit
/// companions (x86 and x32 on x86_64, ARM on aarch64) are covered.
pub mod seccomp {
    use super::os_error;

    /// What a filtered call is refused for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Rule {
        /// Refused with `EPERM` when the mode in this argument has `S_ISUID` or `S_ISGID`.
        Mode(u32),
        /// Always refused with `ENOTSUP`.
        NoXattr,
    }

    /// An architecture's audit number and its filtered calls.
    pub struct Arch {
        pub audit: u32,
        /// Strip the x32 bit from call numbers first.
        pub x32: bool,
        pub calls: &'static [(u32, Rule)],
    }

    const FCHMODAT2: u32 = 452;
    const SETXATTRAT: u32 = 463;

    const X86_64: Arch = Arch {
        audit: 0xC000_003E,
        x32: true,
        calls: &[
            (90, Rule::Mode(1)),
            (91, Rule::Mode(1)),
            (268, Rule::Mode(2)),
            (FCHMODAT2, Rule::Mode(2)),
            (188, Rule::NoXattr),
            (189, Rule::NoXattr),
            (190, Rule::NoXattr),
            (SETXATTRAT, Rule::NoXattr),
        ],
    };
    const I386: Arch = Arch {
        audit: 0x4000_0003,
        x32: false,
        calls: &[
            (15, Rule::Mode(1)),
            (94, Rule::Mode(1)),
            (306, Rule::Mode(2)),
            (FCHMODAT2, Rule::Mode(2)),
            (226, Rule::NoXattr),
            (227, Rule::NoXattr),
            (228, Rule::NoXattr),
            (SETXATTRAT, Rule::NoXattr),
        ],
    };
    const AARCH64: Arch = Arch {
        audit: 0xC000_00B7,
        x32: false,
        calls: &[
            (52, Rule::Mode(1)),
            (53, Rule::Mode(2)),
            (FCHMODAT2, Rule::Mode(2)),
            (5, Rule::NoXattr),
            (6, Rule::NoXattr),
            (7, Rule::NoXattr),
            (SETXATTRAT, Rule::NoXattr),
        ],
    };
    const ARM: Arch = Arch {
        audit: 0x4000_0028,
        x32: false,
        calls: &[
            (15, Rule::Mode(1)),
            (94, Rule::Mode(1)),
            (333, Rule::Mode(2)),
            (FCHMODAT2, Rule::Mode(2)),
            (226, Rule::NoXattr),
            (227, Rule::NoXattr),
            (228, Rule::NoXattr),
            (SETXATTRAT, Rule::NoXattr),
        ],
    };

    /// The architectures a process on this machine may use.
    pub fn native() -> Option<&'static [Arch]> {
        if cfg!(target_arch = "x86_64") {
            Some(&[X86_64, I386])
        } else if cfg!(target_arch = "aarch64") {
            Some(&[AARCH64, ARM])
        } else {
            None
        }
    }

    const LD_W_ABS: u16 = 0x20;
    const ALU_AND_K: u16 = 0x54;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    /// Offsets in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const ARGS: u32 = 16;
    const X32_BIT: u32 = 0x4000_0000;
    const SUID_SGID: u32 = 0o6000;

    fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | e as u32
    }

    /// The classic BPF program for `arches`. Every section ends in a return, so each
    /// conditional jump skips exactly the section it guards.
    pub fn program(arches: &[Arch]) -> Vec<libc::sock_filter> {
        let allow = libc::SECCOMP_RET_ALLOW;
        let mut prog = Vec::new();
        for arch in arches {
            let mut body = vec![op(LD_W_ABS, 0, 0, NR)];
            if arch.x32 {
                body.push(op(ALU_AND_K, 0, 0, !X32_BIT));
            }
            for &(nr, rule) in arch.calls {
                let action = match rule {
                    Rule::Mode(arg) => vec![
                        op(LD_W_ABS, 0, 0, ARGS + 8 * arg),
                        op(JSET_K, 0, 1, SUID_SGID),
                        op(RET_K, 0, 0, errno(libc::EPERM)),
                        op(RET_K, 0, 0, allow),
                    ],
                    Rule::NoXattr => vec![op(RET_K, 0, 0, errno(libc::ENOTSUP))],
                };
                body.push(op(JEQ_K, 0, action.len() as u8, nr));
                body.extend(action);
            }
            body.push(op(RET_K, 0, 0, allow));
            prog.push(op(LD_W_ABS, 0, 0, ARCH));
            prog.push(op(JEQ_K, 0, body.len() as u8, arch.audit));
            prog.extend(body);
        }
        prog.push(op(RET_K, 0, 0, allow));
        prog
    }

    /// Installs the filter on this process (and `no_new_privs`, unless allowed).
    pub fn install(allow_new_privileges: bool) -> Result<(), String> {
        let Some(arches) = native() else {
            return Err(
                "seccomp is not supported on this platform; you can bypass this error \
                        by setting the option 'filter-syscalls' to false, but note that \
                        untrusted builds can then create setuid binaries!"
                    .into(),
            );
        };
        let prog = program(arches);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with a program that outlives the call.
        unsafe {
            if !allow_new_privileges && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(os_error(
                    "unable to set 'no new privileges' seccomp attribute",
                ));
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(os_error("unable to load seccomp BPF program"));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Runs the program on one call, as the kernel would.
        fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u32; 6]) -> u32 {
            let load = |off: u32| match off {
                NR => nr,
                ARCH => arch,
                o => args[((o - ARGS) / 8) as usize],
            };
            let (mut acc, mut pc) = (0u32, 0usize);
            loop {
                let i = prog[pc];
                pc += 1;
                match i.code {
                    LD_W_ABS => acc = load(i.k),
                    ALU_AND_K => acc &= i.k,
                    JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                    JSET_K => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
                    RET_K => return i.k,
                    c => panic!("unknown opcode {c:#x}"),
                }
            }
        }

        #[test]
        fn the_filter_refuses_setuid_modes_and_xattrs_on_every_arch() {
            let arches = [X86_64, I386, AARCH64, ARM];
            let prog = program(&arches);
            let allow = libc::SECCOMP_RET_ALLOW;
            let eperm = errno(libc::EPERM);
            let enotsup = errno(libc::ENOTSUP);
            for arch in &arches {
                for &(nr, rule) in arch.calls {
                    match rule {
                        Rule::Mode(a) => {
                            let mut args = [0u32; 6];
                            for (mode, want) in [
                                (0o4755, eperm),
                                (0o2755, eperm),
                                (0o6000, eperm),
                                (0o1777, allow),
                                (0o755, allow),
                            ] {
                                args[a as usize] = mode;
                                assert_eq!(run(&prog, arch.audit, nr, args), want, "{nr} {mode:o}");
                                // The mode in another argument does not matter.
                                let mut other = [0o4755u32; 6];
                                other[a as usize] = 0o644;
                                assert_eq!(run(&prog, arch.audit, nr, other), allow);
                            }
                        }
                        Rule::NoXattr => {
                            assert_eq!(run(&prog, arch.audit, nr, [0; 6]), enotsup);
                        }
                    }
                }
                // Other calls pass.
                assert_eq!(run(&prog, arch.audit, 1, [0o4755; 6]), allow);
            }
            // x32 numbers on x86_64 are the same calls with bit 30 set.
            assert_eq!(
                run(&prog, X86_64.audit, 90 | X32_BIT, [0, 0o4755, 0, 0, 0, 0]),
                eperm
            );
            assert_eq!(run(&prog, X86_64.audit, 188 | X32_BIT, [0; 6]), enotsup);
            // Numbers of one architecture mean nothing on another.
            assert_eq!(
                run(&prog, AARCH64.audit, 90, [0, 0o4755, 0, 0, 0, 0]),
                allow
            );
            assert_eq!(run(&prog, 0x1234, 90, [0, 0o4755, 0, 0, 0, 0]), allow);
        }
    }
}
