//! Helpers of the substitution tests: stores with a small closure of every kind of path, caches
//! written from them, hand-made (hostile) NARs, and an HTTP server on 127.0.0.1 whose every
//! answer the test chooses.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use drover::engine::format::hash::{HashAlgo, compress_hash, sha256};
use drover::engine::format::nar;
use drover::engine::format::{IngestionMethod, StorePath};
use drover::engine::store::canon::{InodesSeen, canonicalise_path_metadata};
use drover::engine::store::{LocalStore, PathInfo, StoreConfig};

pub fn open_store(root: &Path) -> LocalStore {
    LocalStore::open(StoreConfig::chroot(root)).unwrap()
}

/// Registers a path the way a build output is: input-addressed (no CA), with `contents` as
/// its single file (which mentions its references, as real outputs do).
pub fn add_output(store: &LocalStore, name: &str, body: &str, refs: &[&StorePath]) -> StorePath {
    let digest = compress_hash::<20>(sha256(format!("{name}\0{body}").as_bytes()).digest());
    let path = StorePath::from_digest(digest, name).unwrap();
    let real = store.real_path(&path);
    let mut contents = body.to_owned();
    for r in refs {
        contents.push_str(&format!("\n{}", store.print(r)));
    }
    std::fs::write(&real, contents).unwrap();
    canonicalise_path_metadata(&real, None, &mut InodesSeen::new()).unwrap();
    let (nar_hash, nar_size) = nar::hash_path(&real, HashAlgo::Sha256).unwrap();
    let mut info = PathInfo::new(path.clone(), nar_hash, nar_size);
    info.references = refs.iter().map(|r| (*r).clone()).collect();
    store.register_valid_paths(&[info]).unwrap();
    path
}

/// A small closure: a text path, a content-addressed tree (executable, symlink, nested and
/// empty directories), two outputs, and a root referring to all of them; its paths, root last.
pub struct Sample {
    pub text: StorePath,
    pub tree: StorePath,
    pub lib: StorePath,
    pub big: StorePath,
    pub root: StorePath,
}

impl Sample {
    pub fn all(&self) -> Vec<StorePath> {
        vec![
            self.text.clone(),
            self.tree.clone(),
            self.lib.clone(),
            self.big.clone(),
            self.root.clone(),
        ]
    }
}

pub fn sample_closure(store: &LocalStore, scratch: &Path) -> Sample {
    let text = store
        .add_text_to_store("greeting.txt", b"hello, substituter\n", &BTreeSet::new())
        .unwrap();
    let src = scratch.join("tree-src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join("share/empty")).unwrap();
    std::fs::write(src.join("bin/run"), "#!/bin/sh\necho run\n").unwrap();
    let mut perms = std::fs::metadata(src.join("bin/run"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(src.join("bin/run"), perms).unwrap();
    std::os::unix::fs::symlink("bin/run", src.join("link")).unwrap();
    let tree = store
        .add_to_store(
            &src,
            Some("tree"),
            IngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap();
    let lib = add_output(store, "lib", "library", &[&text]);
    let big_body: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let big = add_output(store, "big", &big_body, &[]);
    let root = add_output(store, "root", "root", &[&text, &tree, &lib, &big]);
    Sample {
        text,
        tree,
        lib,
        big,
        root,
    }
}

/// Checks that `path` is valid in `to` with the same registration as in `from`, and that its
/// contents really have the registered NAR hash.
pub fn assert_same_path(from: &LocalStore, to: &LocalStore, path: &StorePath) {
    let a = from.path_info(path).unwrap();
    let b = to
        .path_info(path)
        .unwrap_or_else(|e| panic!("{} not valid in the target: {e}", from.print(path)));
    assert_eq!(a.nar_hash, b.nar_hash, "{}", from.print(path));
    assert_eq!(a.nar_size, b.nar_size);
    assert_eq!(a.references, b.references);
    assert_eq!(a.deriver, b.deriver);
    assert_eq!(a.ca, b.ca);
    assert!(!b.ultimate, "a substituted path is not ultimate");
    let (hash, size) = nar::hash_path(&to.real_path(path), HashAlgo::Sha256).unwrap();
    assert_eq!((hash, size), (b.nar_hash, b.nar_size));
}

/// Entries of the physical store dir, besides `.links` and lock files (which Nix too leaves
/// behind after a failure): leftovers of a failed substitution would show up here.
pub fn store_entries(store: &LocalStore) -> BTreeSet<String> {
    std::fs::read_dir(&store.config().real_store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".links" && !n.ends_with(".lock"))
        .collect()
}

/// Builds NAR bytes token by token, so tests can write archives the dumper never would.
#[derive(Default)]
pub struct NarBytes(pub Vec<u8>);

impl NarBytes {
    pub fn str(mut self, s: &[u8]) -> Self {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s);
        self.0.resize(self.0.len().next_multiple_of(8), 0);
        self
    }

    pub fn strs(self, items: &[&[u8]]) -> Self {
        items.iter().fold(self, |acc, s| acc.str(s))
    }
}

/// What the test server answers to one request.
pub enum Reply {
    /// The file under the server's root, or 404.
    Serve,
    /// This status with an empty body.
    Status(u16),
    /// The file, in pieces of `chunk` bytes with `pause` between them.
    Slow { chunk: usize, pause: Duration },
    /// Headers and half the file, then nothing until the server is dropped.
    Stall,
    /// These bytes instead of the file.
    Bytes(Vec<u8>),
}

/// Chooses the reply from the request path and how many times it was requested before.
pub type Policy = Box<dyn Fn(&str, usize) -> Reply + Send + Sync>;

struct ServerState {
    requests: Mutex<Vec<String>>,
    /// Requests in flight now, and the most at once.
    flight: Mutex<(usize, usize)>,
    changed: Condvar,
}

/// An HTTP/1.1 server on 127.0.0.1 serving a directory, one thread per connection, every
/// response closing its connection. Dropping it stops it and releases stalled answers.
pub struct TestServer {
    addr: std::net::SocketAddr,
    state: Arc<ServerState>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// Stalled answers wait until this sender is gone.
    gate: Option<mpsc::Sender<()>>,
    /// Narinfo requests wait (up to 5 s) until this many are in flight at once.
    pub gather: Arc<Mutex<usize>>,
}

impl TestServer {
    pub fn start(root: &Path, policy: Policy) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            requests: Mutex::new(Vec::new()),
            flight: Mutex::new((0, 0)),
            changed: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate_rx = Arc::new(Mutex::new(gate_rx));
        let gather = Arc::new(Mutex::new(0usize));
        let policy = Arc::new(policy);
        let root = root.to_owned();
        let accept = {
            let (state, stop, gather) = (state.clone(), stop.clone(), gather.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, policy, root, gate_rx, gather) = (
                        state.clone(),
                        policy.clone(),
                        root.clone(),
                        gate_rx.clone(),
                        gather.clone(),
                    );
                    std::thread::spawn(move || {
                        serve(conn, &state, &policy, &root, &gate_rx, &gather);
                    });
                }
            })
        };
        TestServer {
            addr,
            state,
            stop,
            accept: Some(accept),
            gate: Some(gate_tx),
            gather,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request paths so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self, suffix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.ends_with(suffix))
            .count()
    }

    /// Most requests in flight at once.
    pub fn peak(&self) -> usize {
        self.state.flight.lock().unwrap().1
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.gate.take();
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    state: &ServerState,
    policy: &Policy,
    root: &Path,
    gate: &Mutex<mpsc::Receiver<()>>,
    gather: &Mutex<usize>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let nth = {
        let mut requests = state.requests.lock().unwrap();
        let nth = requests.iter().filter(|r| **r == path).count();
        requests.push(path.clone());
        nth
    };
    {
        let mut flight = state.flight.lock().unwrap();
        flight.0 += 1;
        flight.1 = flight.1.max(flight.0);
        state.changed.notify_all();
        let wanted = *gather.lock().unwrap();
        if path.ends_with(".narinfo") && wanted > 1 {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while flight.1 < wanted {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                flight = state.changed.wait_timeout(flight, left).unwrap().0;
            }
        }
    }
    let file = root.join(path.trim_start_matches('/'));
    let body = std::fs::read(&file).ok().filter(|_| file.is_file());
    let respond = |conn: &mut TcpStream, status: u16, reason: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body);
    };
    match (policy(&path, nth), body) {
        (Reply::Bytes(bytes), _) => respond(&mut conn, 200, "OK", &bytes),
        (Reply::Status(code), _) => {
            let reason = match code {
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                403 => "Forbidden",
                _ => "Whatever",
            };
            respond(&mut conn, code, reason, b"");
        }
        (_, None) => respond(&mut conn, 404, "Not Found", b"not found"),
        (Reply::Serve, Some(body)) => respond(&mut conn, 200, "OK", &body),
        (Reply::Slow { chunk, pause }, Some(body)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            for piece in body.chunks(chunk.max(1)) {
                if conn.write_all(piece).and_then(|()| conn.flush()).is_err() {
                    break;
                }
                std::thread::sleep(pause);
            }
        }
        (Reply::Stall, Some(body)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body[..body.len() / 2]);
            let _ = conn.flush();
            // Blocks until the server is dropped (the sender goes away).
            let _ = gate.lock().unwrap().recv();
        }
    }
    state.flight.lock().unwrap().0 -= 1;
}

/// Copies a directory tree (a cache, to tamper with the copy).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The narinfo file of `path` in the cache at `dir`.
pub fn narinfo_path(dir: &Path, path: &StorePath) -> PathBuf {
    dir.join(format!("{}.narinfo", path.hash_part()))
}
