//! Running builders. A builder is described by a pure [`SandboxSpec`] and run by a build
//! supervisor ([`helper`], the drover binary re-executed as `drover __build-exec`), which sets
//! it up, reports its exact wait status, and makes sure no process of the build outlives it.
//! [`Supervisors`] keeps the idle supervisors for the next builds, so starting a build costs
//! one fork of a small process and one exec. Isolation in Linux namespaces fills in
//! [`SandboxSpec::namespaces`] with the sandbox issue. This module knows nothing of goals or
//! derivations (layer rule 5).

pub mod helper;
pub mod linux;
pub mod spec;

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

pub use spec::{BindMount, IdMap, Namespaces, Personality, SandboxFile, SandboxSpec};

use helper::protocol;

/// One supervisor process and the socket to it.
struct Conn {
    _child: Child,
    sock: UnixStream,
    /// Bytes received and not yet consumed as lines.
    pending: Vec<u8>,
}

impl Conn {
    /// The next answer line (its tag and the text after the space).
    async fn line(&mut self) -> io::Result<(u8, String)> {
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let tag = line[0];
                let text = String::from_utf8_lossy(line.get(2..nl).unwrap_or_default());
                return Ok((tag, text.into_owned()));
            }
            let mut buf = [0u8; 256];
            let n = self.sock.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the build supervisor exited",
                ));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// The build supervisors of a run: idle ones wait here for the next build.
pub struct Supervisors {
    exe: PathBuf,
    idle: Mutex<Vec<Conn>>,
}

/// How starting a builder ended.
pub enum Started {
    Running(Box<RunningBuilder>),
    /// Setting up the builder failed (Nix: "while setting up the build environment").
    SetupFailed(String),
}

impl Supervisors {
    /// Supervisors running `exe __build-exec` (normally this executable).
    pub fn new(exe: PathBuf) -> Arc<Supervisors> {
        Arc::new(Supervisors {
            exe,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The program to run as the supervisor: this executable.
    pub fn current_exe() -> io::Result<PathBuf> {
        std::env::current_exe()
    }

    fn spawn(&self) -> io::Result<Conn> {
        let (ours, theirs) = StdUnixStream::pair()?;
        let child = Command::new(&self.exe)
            .arg(helper::HELPER_ARG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "starting the build supervisor '{}': {e}",
                        self.exe.display()
                    ),
                )
            })?;
        ours.set_nonblocking(true)?;
        Ok(Conn {
            _child: child,
            sock: UnixStream::from_std(ours)?,
            pending: Vec::new(),
        })
    }

    /// Runs `spec` under a supervisor (an idle one, or a new one).
    pub async fn start(self: &Arc<Self>, spec: &SandboxSpec) -> io::Result<Started> {
        let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io::Error::other(format!("creating the log pipe: {e}")))?;
        let body = spec.encode();
        let len = u32::try_from(body.len())
            .map_err(|_| io::Error::other("the build spec is larger than 4 GiB"))?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            // An idle supervisor that went away meanwhile cannot have started anything: a new
            // one takes the request.
            Some(mut c) => match send_request(&mut c, len, &log_write, &body).await {
                Ok(()) => c,
                Err(_) => {
                    let mut c = self.spawn()?;
                    send_request(&mut c, len, &log_write, &body).await?;
                    c
                }
            },
            None => {
                let mut c = self.spawn()?;
                send_request(&mut c, len, &log_write, &body).await?;
                c
            }
        };
        drop(log_write);
        let (tag, text) = conn.line().await?;
        match tag {
            protocol::STARTED => {
                let pid = text.trim().parse().map_err(|_| {
                    io::Error::other(format!("bad answer from the build supervisor: '{text}'"))
                })?;
                Ok(Started::Running(Box::new(RunningBuilder {
                    conn: Some(conn),
                    pool: self.clone(),
                    pid,
                    log: Some(pipe::Receiver::from_owned_fd(log_read)?),
                    status: None,
                })))
            }
            protocol::FAILED => {
                self.release(conn);
                Ok(Started::SetupFailed(text))
            }
            _ => Err(io::Error::other(format!(
                "bad answer from the build supervisor: '{text}'"
            ))),
        }
    }

    fn release(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}

/// Sends a run request: its head with the log pipe's write end attached, then the spec.
async fn send_request(
    conn: &mut Conn,
    len: u32,
    log_write: &OwnedFd,
    body: &[u8],
) -> io::Result<()> {
    let mut head = [protocol::RUN, 0, 0, 0, 0];
    head[1..].copy_from_slice(&len.to_le_bytes());
    let fds = [log_write.as_raw_fd()];
    let sock = &conn.sock;
    let sent = sock
        .async_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(&head)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    conn.sock.write_all(&head[sent..]).await?;
    conn.sock.write_all(body).await
}

/// What a running builder did next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderEvent {
    /// This many bytes of its output are in the buffer.
    Output(usize),
    /// It exited with this raw wait status; its output is all read and nothing of the build
    /// runs any more.
    Exited(i32),
}

/// A builder running under a supervisor. Dropping it before it exited kills the build (the
/// supervisor sees its socket close).
pub struct RunningBuilder {
    conn: Option<Conn>,
    pool: Arc<Supervisors>,
    pid: u32,
    log: Option<pipe::Receiver>,
    status: Option<i32>,
}

impl RunningBuilder {
    /// The builder's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills every process of the build; [`RunningBuilder::next`] then reports the exit.
    pub fn kill(&mut self) {
        if let Some(conn) = &self.conn
            && conn.sock.try_write(&[protocol::KILL]).is_err()
        {
            // The socket is full or broken: giving up the supervisor kills the build too.
            self.conn = None;
        }
    }

    /// Waits for output (read into `buf`) or the end. Cancel-safe.
    pub async fn next(&mut self, buf: &mut [u8]) -> io::Result<BuilderEvent> {
        loop {
            if self.log.is_none()
                && let Some(status) = self.status
            {
                if let Some(conn) = self.conn.take() {
                    self.pool.release(conn);
                }
                return Ok(BuilderEvent::Exited(status));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Err(io::Error::other("the build supervisor was lost"));
            };
            tokio::select! {
                n = async { self.log.as_mut().expect("open").read(buf).await },
                    if self.log.is_some() =>
                {
                    match n {
                        Ok(0) => self.log = None,
                        Ok(n) => return Ok(BuilderEvent::Output(n)),
                        Err(e) => {
                            self.log = None;
                            return Err(e);
                        }
                    }
                }
                line = conn.line(), if self.status.is_none() => {
                    let (tag, text) = line?;
                    if tag != protocol::EXITED {
                        return Err(io::Error::other(format!(
                            "bad answer from the build supervisor: '{text}'"
                        )));
                    }
                    let status = text.trim().parse().map_err(|_| {
                        io::Error::other(format!("bad exit status from the supervisor: '{text}'"))
                    })?;
                    self.status = Some(status);
                }
            }
        }
    }
}
