//! The build supervisor: `drover __build-exec`, a small single-threaded process that runs
//! builders for drover, one after the other.
//!
//! drover starts one supervisor per concurrent build and keeps it for the next one, so a build
//! costs one `fork` of this small process and one `exec` of the builder. Its standard input
//! is a Unix socket to drover ([`protocol`]): a request brings a [`SandboxSpec`] and the write
//! end of the build's log pipe; the answers say that the builder started (its pid), that
//! setting it up failed, or how it exited.
//!
//! The supervisor is a child subreaper: whatever the builder leaves behind (a daemon that
//! detached with `setsid` included) is re-parented to it. When the builder exits, every
//! process left is killed and reaped before the exit status is reported, so nothing of a build
//! outlives it, and the log pipe reaches its end. A kill request, the socket closing (drover
//! quit or died) or a terminating signal kill the whole build the same way.
//!
//! The builder is set up as Nix's `runChild` does: its own session, the log pipe on stdout
//! and stderr, `/dev/null` on stdin, default signal dispositions, umask 022, the sandbox when
//! the spec asks for one ([`linux`]: the builder is then PID 1 of its own PID namespace, and
//! when it exits the kernel kills whatever it left there), the build directory as working
//! directory, the personality (32-bit, `UNAME26`, no address randomisation), no core dumps,
//! and the build user if any.

use std::ffi::CString;
use std::os::fd::RawFd;

use super::linux;
use super::spec::SandboxSpec;

/// The hidden subcommand that runs the supervisor.
pub const HELPER_ARG: &str = "__build-exec";

/// The conversation on the supervisor's socket.
pub mod protocol {
    /// drover → supervisor: run a builder. Followed by the spec's length (`u32`,
    /// little-endian), sent with the log pipe's write end attached (`SCM_RIGHTS`), then the
    /// encoded spec.
    pub const RUN: u8 = b'R';
    /// drover → supervisor: kill the running build (ignored when none runs).
    pub const KILL: u8 = b'K';
    /// supervisor → drover: `S <pid>\n`, the builder runs.
    pub const STARTED: u8 = b'S';
    /// supervisor → drover: `F <message>\n`, the builder could not be set up (the message is
    /// on one line).
    pub const FAILED: u8 = b'F';
    /// supervisor → drover: `X <wait status>\n`, the builder exited (its raw wait status) and
    /// nothing of the build runs any more.
    pub const EXITED: u8 = b'X';
}

/// Linux's `PER_LINUX32` personality (`linux/personality.h`).
const PER_LINUX32: libc::c_int = 0x0008;
/// Linux's `UNAME26` personality flag.
const UNAME26: libc::c_int = 0x0020000;
/// The largest spec accepted.
const MAX_SPEC: u32 = 256 << 20;
/// The socket to drover.
const SOCKET: RawFd = 0;

/// Runs the supervisor on the socket at fd 0; never returns.
pub fn main() -> ! {
    let code = match Supervisor::new() {
        Ok(mut s) => s.serve(),
        Err(e) => {
            let _ = write_all(2, format!("drover build supervisor: {e}\n").as_bytes());
            1
        }
    };
    // SAFETY: leaving the process; nothing needs cleaning up.
    unsafe { libc::_exit(code) }
}

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The text of an OS error as Nix prints it (no "(os error N)").
pub(super) fn error_text(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

pub(super) fn os_error(what: &str) -> String {
    format!("{what}: {}", error_text(errno()))
}

pub(super) fn write_all(fd: RawFd, mut data: &[u8]) -> Result<(), i32> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid buffer of `data.len()` bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes; false at the end of input or on an error.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reading into the unfilled rest of `buf`.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

pub(super) fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(fd) };
}

/// What the forked builder needs, prepared before the fork (no allocation after it).
struct Exec {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    spec: SandboxSpec,
}

impl Exec {
    fn new(spec: SandboxSpec) -> Result<Exec, String> {
        let c = |bytes: &[u8], what: &str| {
            CString::new(bytes).map_err(|_| format!("{what} contains a NUL byte"))
        };
        Ok(Exec {
            program: c(&spec.program, "the builder path")?,
            argv: spec
                .argv
                .iter()
                .map(|a| c(a, "an argument"))
                .collect::<Result<_, _>>()?,
            envp: spec
                .env
                .iter()
                .map(|e| c(e, "an environment variable"))
                .collect::<Result<_, _>>()?,
            cwd: c(
                spec.cwd.as_os_str().as_encoded_bytes(),
                "the build directory",
            )?,
            spec,
        })
    }
}

/// How the wait for a build ended.
enum End {
    /// The builder exited with this wait status; the supervisor may take the next build.
    Exited(i32),
    /// drover is gone or the supervisor was told to stop: leave after cleaning up.
    Quit,
}

struct Supervisor {
    signals: RawFd,
}

impl Supervisor {
    fn new() -> Result<Supervisor, String> {
        // SAFETY: plain system calls on this (single-threaded) process.
        unsafe {
            // Nothing drover may have left open reaches a builder (Nix's `closeMostFDs`).
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // Out of drover's process group: terminal signals are drover's to handle.
            libc::setsid();
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) != 0 {
                return Err(os_error("becoming a child subreaper"));
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [
                libc::SIGCHLD,
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGQUIT,
            ] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(os_error("blocking signals"));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(os_error("creating a signalfd"));
            }
            Ok(Supervisor { signals: fd })
        }
    }

    /// Serves requests until drover closes the socket; the exit code.
    fn serve(&mut self) -> i32 {
        loop {
            let (spec, log_fd) = match read_request() {
                Request::Run(spec, fd) => (spec, fd),
                Request::Kill => continue,
                Request::End => return 0,
                Request::Broken(message) => {
                    let _ = write_all(
                        2,
                        format!("drover build supervisor: {message}\n").as_bytes(),
                    );
                    return 1;
                }
            };
            let started = SandboxSpec::decode(&spec)
                .map_err(|e| e.to_string())
                .and_then(Exec::new)
                .and_then(|exec| self.start(&exec, log_fd));
            close(log_fd);
            let pid = match started {
                Ok(pid) => pid,
                Err(message) => {
                    let line = format!("F {}\n", message.replace('\n', " "));
                    if write_all(SOCKET, line.as_bytes()).is_err() {
                        return 0;
                    }
                    continue;
                }
            };
            if write_all(SOCKET, format!("S {pid}\n").as_bytes()).is_err() {
                self.finish(pid, None);
                return 0;
            }
            match self.watch(pid) {
                End::Exited(status) => {
                    if write_all(SOCKET, format!("X {status}\n").as_bytes()).is_err() {
                        return 0;
                    }
                }
                End::Quit => return 0,
            }
        }
    }

    /// Forks the builder; its pid once it runs (or failed to execute, which it reports in
    /// its log), or why setting it up failed.
    fn start(&self, exec: &Exec, log_fd: RawFd) -> Result<i32, String> {
        // The child reports a setup failure on this pipe; it closes on exec.
        let mut report = [0 as RawFd; 2];
        // SAFETY: creating a pipe into a two-element array.
        if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(os_error("creating a pipe"));
        }
        // SAFETY: getpid has no preconditions.
        let supervisor = unsafe { libc::getpid() };
        // A sandboxed builder is cloned into its namespaces and waits on `sync` until its
        // ids are mapped.
        let (pid, sync) = match &exec.spec.namespaces {
            // SAFETY: this process is single-threaded, so the child may use anything, the
            // allocator included.
            None => (unsafe { libc::fork() }, None),
            Some(ns) => match linux::clone_builder(ns) {
                Ok(linux::Cloned::Child(sync)) => (0, Some(sync)),
                Ok(linux::Cloned::Parent(pid, sync)) => (pid, Some(sync)),
                Err(e) => {
                    close(report[0]);
                    close(report[1]);
                    return Err(e);
                }
            },
        };
        if pid < 0 {
            close(report[0]);
            close(report[1]);
            return Err(os_error("forking the builder"));
        }
        if pid == 0 {
            close(report[0]);
            let failure = setup_child(exec, log_fd, supervisor, sync);
            let _ = write_all(report[1], failure.as_bytes());
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(1) };
        }
        close(report[1]);
        if let (Some(ns), Some(sync)) = (&exec.spec.namespaces, sync)
            && let Err(e) = linux::release(pid, ns, sync)
        {
            close(report[0]);
            self.finish(pid, None);
            return Err(e);
        }
        let mut message = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(report[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            message.extend_from_slice(&buf[..n as usize]);
        }
        close(report[0]);
        if message.is_empty() {
            return Ok(pid);
        }
        self.finish(pid, None);
        Err(String::from_utf8_lossy(&message).into_owned())
    }

    /// Waits for the builder to exit, a kill request, or the end of drover.
    fn watch(&mut self, builder: i32) -> End {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.signals,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: SOCKET,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: polling two valid pollfd records.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                let mut terminate = false;
                for sig in self.pending_signals() {
                    terminate |= sig != libc::SIGCHLD as u32;
                }
                if terminate {
                    self.finish(builder, None);
                    return End::Quit;
                }
                if let Some(status) = reap_builder(builder) {
                    self.finish(builder, Some(status));
                    return End::Exited(status);
                }
            }
            if fds[1].revents != 0 {
                let mut byte = [0u8; 1];
                // SAFETY: reading one byte into a local buffer.
                let n = unsafe { libc::read(SOCKET, byte.as_mut_ptr().cast(), 1) };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                if n <= 0 {
                    self.finish(builder, None);
                    return End::Quit;
                }
                if byte[0] == protocol::KILL {
                    kill_build(builder);
                }
            }
        }
    }

    /// The signals pending now.
    fn pending_signals(&self) -> Vec<u32> {
        let mut out = Vec::new();
        loop {
            // SAFETY: reading whole `signalfd_siginfo` records into a value of that type.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = unsafe {
                libc::read(
                    self.signals,
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n as usize != size {
                return out;
            }
            out.push(info.ssi_signo);
        }
    }

    /// Kills every process of the build that is left and reaps them all (the builder too,
    /// unless `status` says it was reaped already).
    fn finish(&self, builder: i32, status: Option<i32>) {
        let mut builder_alive = status.is_none();
        loop {
            if builder_alive {
                kill_build(builder);
            } else {
                // The builder's process group may outlive it.
                // SAFETY: signalling processes of this build.
                unsafe { libc::kill(-builder, libc::SIGKILL) };
            }
            for child in children() {
                // SAFETY: signalling our own children.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            let mut st = 0;
            // SAFETY: waiting for any child of ours.
            let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
            if pid == builder {
                builder_alive = false;
            }
            if pid < 0 && errno() == libc::ECHILD {
                break;
            }
        }
        // Collected SIGCHLDs belong to the build that ended.
        self.pending_signals();
    }
}

enum Request {
    Run(Vec<u8>, RawFd),
    Kill,
    End,
    Broken(String),
}

/// Reads the next request while no build runs.
fn read_request() -> Request {
    let mut head = [0u8; 5];
    let mut fd: RawFd = -1;
    let n = loop {
        match recv_with_fd(&mut head, &mut fd) {
            Err(libc::EINTR) => continue,
            Err(e) => return Request::Broken(format!("reading a request: {}", error_text(e))),
            Ok(n) => break n,
        }
    };
    if n == 0 {
        return Request::End;
    }
    match head[0] {
        protocol::KILL => {
            if n > 1 {
                return Request::Broken("unexpected bytes after a kill request".into());
            }
            Request::Kill
        }
        protocol::RUN => {
            if !read_exact(SOCKET, &mut head[n..]) {
                return Request::Broken("truncated request".into());
            }
            if fd < 0 {
                return Request::Broken("a run request without a log descriptor".into());
            }
            let len = u32::from_le_bytes(head[1..5].try_into().expect("four bytes"));
            if len > MAX_SPEC {
                return Request::Broken(format!("a build spec of {len} bytes is too large"));
            }
            let mut spec = vec![0u8; len as usize];
            if !read_exact(SOCKET, &mut spec) {
                return Request::Broken("truncated build spec".into());
            }
            Request::Run(spec, fd)
        }
        other => Request::Broken(format!("unknown request {other:#x}")),
    }
}

/// `recvmsg` of up to `buf.len()` bytes, taking a descriptor passed along.
fn recv_with_fd(buf: &mut [u8], fd: &mut RawFd) -> Result<usize, i32> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one control message with one descriptor, suitably aligned.
    let mut control = [0u64; 8];
    // SAFETY: `msghdr` is plain data; the pointers set below stay valid for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: receiving into the buffers described by `msg`.
    let n = unsafe { libc::recvmsg(SOCKET, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(errno());
    }
    // SAFETY: walking the control messages the kernel filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let got = data.add(i).read_unaligned();
                    if *fd < 0 {
                        *fd = got;
                    } else {
                        close(got);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n as usize)
}

/// Reaps what has exited; the builder's wait status once it is among them.
fn reap_builder(builder: i32) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waiting for any child, without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == builder {
            found = Some(status);
        }
    }
}

/// Kills the builder's process group and the builder.
fn kill_build(builder: i32) {
    // SAFETY: signalling processes of this build.
    unsafe {
        libc::kill(-builder, libc::SIGKILL);
        libc::kill(builder, libc::SIGKILL);
    }
}

/// Our children, from `/proc/self/task/<pid>/children` (or a scan of `/proc`).
fn children() -> Vec<i32> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        return text
            .split_ascii_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may contain anything, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(me) {
            out.push(pid);
        }
    }
    out
}

/// In the forked child: sets up the builder and executes it. Returns only on a setup
/// failure, with its message; a failure to execute the program goes to the build log.
fn setup_child(
    exec: &Exec,
    log_fd: RawFd,
    supervisor: libc::pid_t,
    sandbox: Option<RawFd>,
) -> String {
    // SAFETY: system calls on the forked child's own state; the supervisor is single-threaded,
    // so allocating after the fork is sound.
    unsafe {
        // Should the supervisor itself die, the builder goes with it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        // (In its own PID namespace the builder sees no parent; it waits for the supervisor
        // on the sync pipe instead, which closes when the supervisor dies.)
        if sandbox.is_none() && libc::getppid() != supervisor {
            libc::_exit(1);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Rust ignores SIGPIPE; builders expect the default dispositions.
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if libc::setsid() == -1 {
            return os_error("creating a new session");
        }
        if libc::dup2(log_fd, 2) == -1 {
            return os_error("cannot pipe standard error into log file");
        }
        if libc::dup2(2, 1) == -1 {
            return os_error("cannot dup stderr into stdout");
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null == -1 {
            return os_error("cannot open '/dev/null'");
        }
        if libc::dup2(null, 0) == -1 {
            return os_error("cannot dup null device into stdin");
        }
        libc::close(null);
        libc::close(log_fd);
        libc::umask(0o022);
        if let (Some(ns), Some(sync)) = (&exec.spec.namespaces, sandbox)
            && let Err(e) = linux::enter(ns, sync)
        {
            return e;
        }
        if libc::chdir(exec.cwd.as_ptr()) == -1 {
            return os_error(&format!(
                "changing into '{}'",
                String::from_utf8_lossy(exec.cwd.as_bytes())
            ));
        }
        let p = exec.spec.personality;
        if p.linux32 && libc::personality(PER_LINUX32 as libc::c_ulong) == -1 {
            return os_error("cannot set 32-bit personality");
        }
        if p.uname26 {
            let cur = libc::personality(0xffff_ffff);
            if cur != -1 {
                libc::personality((cur | UNAME26) as libc::c_ulong);
            }
        }
        let cur = libc::personality(0xffff_ffff);
        if cur != -1 {
            libc::personality((cur | libc::ADDR_NO_RANDOMIZE) as libc::c_ulong);
        }
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &core);
        if let Some(gid) = exec.spec.gid {
            let groups = &exec.spec.groups;
            if !groups.is_empty() && libc::setgroups(groups.len(), groups.as_ptr()) == -1 {
                return os_error("cannot set supplementary groups of build user");
            }
            if libc::setgid(gid) == -1 || libc::getgid() != gid || libc::getegid() != gid {
                return os_error("setgid failed");
            }
        }
        if let Some(uid) = exec.spec.uid
            && (libc::setuid(uid) == -1 || libc::getuid() != uid || libc::geteuid() != uid)
        {
            return os_error("setuid failed");
        }
        let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        libc::execve(exec.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let e = errno();
        let line = format!(
            "error: executing '{}': {}\n",
            String::from_utf8_lossy(exec.program.as_bytes()),
            error_text(e)
        );
        let _ = write_all(2, line.as_bytes());
        libc::_exit(1);
    }
}
