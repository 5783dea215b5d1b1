//! Substitution against real Nix 2.8, both ways. Caches written by `nix copy --to file://…`
//! (every compression Nix writes, signed and unsigned) substitute into drover stores with
//! `require-sigs` on and off, and the registrations equal Nix's (`nix path-info --json`);
//! caches written by `drover copy --to` substitute into real Nix (`nix-store -r` with
//! `--option substituters file://…`), signed and required, and their uncompressed narinfos and
//! NARs are byte for byte the ones `nix copy` writes for the same paths.
//!
//! Nix builds the workload into a chroot store of its own (logical `/nix/store`): a dependency,
//! a two-output derivation with a directory tree (executable, symlink, empty directory, a
//! file large enough to compress), a root that refers to itself and to everything else, a
//! `builtins.toFile` text and a `builtins.path` source (content-addressed).

mod common;
mod subst_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use drover::engine::format::{Hash, StoreDir, StorePath};
use drover::engine::store::LocalStore;
use subst_support::{open_store, sample_closure};

const WORKLOAD: &str = r#"
let
  sh = script: [ "sh" "-c" script ];
  drv = attrs: derivation ({ system = "x86_64-linux"; builder = "/bin/busybox"; } // attrs);
  note = builtins.toFile "drover-subst-note" "a note for the substituters\n";
  src = builtins.path { path = ./src; name = "drover-subst-src"; };
  dep = drv { name = "drover-subst-dep"; args = sh "echo dep > $out"; };
  multi = drv {
    name = "drover-subst-multi";
    outputs = [ "out" "lib" ];
    args = sh ''
      mkdir -p $out/bin $out/empty $lib
      echo ${dep} > $out/bin/tool
      chmod +x $out/bin/tool
      ln -s ${dep} $out/link
      i=0; while [ $i -lt 3000 ]; do echo "line $i of a compressible file"; i=$((i+1)); done > $out/big
      echo lib > $lib/data
    '';
  };
in drv {
  name = "drover-subst-root";
  args = sh "echo $out ${dep} ${multi} ${multi.lib} ${note} ${src} > $out";
}
"#;

/// A temporary directory with Nix's chroot store holding the built workload.
struct Peer {
    dir: TempDir,
    root: String,
    closure: Vec<String>,
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

impl Peer {
    /// A temporary directory for Nix, with nothing built yet.
    fn empty() -> Peer {
        Peer {
            dir: tempfile::tempdir().unwrap(),
            root: String::new(),
            closure: Vec::new(),
        }
    }

    fn new() -> Peer {
        let mut peer = Peer::empty();
        fs::write(peer.path("workload.nix"), WORKLOAD).unwrap();
        let src = peer.path("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/data"), "source data\n").unwrap();
        fs::write(src.join("run"), "#!/bin/sh\necho run\n").unwrap();
        fs::set_permissions(
            src.join("run"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/data", src.join("link")).unwrap();
        let store = peer.store_arg();
        let workload = peer.path("workload.nix");
        let built = peer.run(
            "nix-build",
            &[
                "--store",
                &store,
                "--no-out-link",
                workload.to_str().unwrap(),
            ],
        );
        peer.root = last_line(&built);
        let closure = peer.run("nix-store", &["--store", &store, "-qR", &peer.root]);
        peer.closure = String::from_utf8(closure.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(peer.closure.len(), 6, "{:?}", peer.closure);
        peer
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store_arg(&self) -> String {
        self.path("nix-chroot").to_str().unwrap().to_owned()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        common::nix_run(program, args, &self.path("xdg-cache"))
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Output {
        common::nix_try_run(program, args, &self.path("xdg-cache"))
    }

    /// `nix copy` of the closure into a new `file://` cache.
    fn nix_cache(&self, name: &str, params: &str) -> PathBuf {
        let cache = self.path(name);
        let url = format!("file://{}?{params}", cache.display());
        self.run(
            "nix",
            &[
                "copy",
                "--store",
                &self.store_arg(),
                "--to",
                &url,
                &self.root,
            ],
        );
        cache
    }

    fn generate_key(&self, name: &str) -> (PathBuf, String) {
        let sk = self.path(&format!("{name}.sk"));
        let pk = self.path(&format!("{name}.pk"));
        self.run(
            "nix-store",
            &[
                "--generate-binary-cache-key",
                name,
                sk.to_str().unwrap(),
                pk.to_str().unwrap(),
            ],
        );
        (sk, fs::read_to_string(pk).unwrap().trim().to_owned())
    }

    /// `nix path-info --json -r` of a path in a Nix store, by path.
    fn path_infos(&self, store: &str, path: &str) -> BTreeMap<String, Value> {
        let out = self.run(
            "nix",
            &["path-info", "--store", store, "--json", "-r", path],
        );
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.into_iter()
            .map(|v| (v["path"].as_str().unwrap().to_owned(), v))
            .collect()
    }
}

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .unwrap()
}

fn drover_ok(args: &[&str]) {
    let out = drover(args);
    assert!(
        out.status.success(),
        "drover {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sd() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

/// Every path of Nix's `infos` is valid in `store` with the same NAR hash and size,
/// references, deriver and content address, and its contents have that hash.
fn assert_matches_nix(store: &LocalStore, infos: &BTreeMap<String, Value>) {
    for (printed, nix) in infos {
        let path = sd().parse(printed).unwrap();
        let ours = store
            .path_info(&path)
            .unwrap_or_else(|e| panic!("{printed}: {e}"));
        let nar_hash = Hash::parse_sri(nix["narHash"].as_str().unwrap()).unwrap();
        assert_eq!(ours.nar_hash, nar_hash, "{printed}");
        assert_eq!(ours.nar_size, nix["narSize"].as_u64().unwrap(), "{printed}");
        let refs: BTreeSet<String> = nix["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        let our_refs: BTreeSet<String> = ours.references.iter().map(|r| store.print(r)).collect();
        assert_eq!(our_refs, refs, "{printed}");
        assert_eq!(
            ours.deriver.as_ref().map(|d| store.print(d)),
            nix.get("deriver")
                .and_then(Value::as_str)
                .map(str::to_owned),
            "{printed}"
        );
        assert_eq!(
            ours.ca.map(|c| c.to_string()),
            nix.get("ca").and_then(Value::as_str).map(str::to_owned),
            "{printed}"
        );
        let (hash, size) = drover::engine::format::nar::hash_path(
            &store.real_path(&path),
            drover::engine::format::HashAlgo::Sha256,
        )
        .unwrap();
        assert_eq!((hash, size), (ours.nar_hash, ours.nar_size), "{printed}");
    }
}

#[test]
fn caches_written_by_nix_substitute_into_drover() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let infos = peer.path_infos(&peer.store_arg(), &peer.root);
    assert_eq!(infos.len(), 6);
    let (sk, pk) = peer.generate_key("drover-subst-test-1");

    for compression in ["none", "xz", "bzip2", "zstd", "gzip", "br"] {
        let cache = peer.nix_cache(
            &format!("cache-{compression}"),
            &format!("compression={compression}"),
        );
        let uri = format!("file://{}", cache.display());
        let target = peer.path(&format!("drover-{compression}"));
        drover_ok(&[
            "copy",
            "--from",
            &uri,
            "--store",
            target.to_str().unwrap(),
            "--no-check-sigs",
            &peer.root,
        ]);
        assert_matches_nix(&open_store(&target), &infos);
    }

    // Signed, signatures required: with the key everything comes; without it only the
    // content-addressed paths (the text and the source), which need no signature.
    let signed = peer.nix_cache(
        "cache-signed",
        &format!("compression=xz&secret-key={}", sk.display()),
    );
    let uri = format!("file://{}", signed.display());
    let target = peer.path("drover-signed");
    drover_ok(&[
        "copy",
        "--from",
        &uri,
        "--store",
        target.to_str().unwrap(),
        "--trusted-public-keys",
        &pk,
        &peer.root,
    ]);
    let store = open_store(&target);
    assert_matches_nix(&store, &infos);
    let sig = store
        .path_info(&sd().parse(&peer.root).unwrap())
        .unwrap()
        .sigs;
    assert_eq!(sig.len(), 1);
    assert!(
        sig.iter()
            .next()
            .unwrap()
            .starts_with("drover-subst-test-1:")
    );
    drop(store);

    let unsigned = peer.nix_cache("cache-unsigned", "compression=zstd");
    for (cache, what) in [
        (&signed, "signed by an untrusted key"),
        (&unsigned, "unsigned"),
    ] {
        let target = peer.path(&format!("drover-refused-{}", what.len()));
        let out = drover(&[
            "copy",
            "--from",
            &format!("file://{}", cache.display()),
            "--store",
            target.to_str().unwrap(),
            &peer.root,
        ]);
        assert!(!out.status.success(), "{what}: accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("is not signed by any of the keys in 'trusted-public-keys'"),
            "{what}: {stderr}"
        );
        for ca_path in infos
            .iter()
            .filter(|(_, v)| v.get("ca").is_some())
            .map(|(p, _)| p)
        {
            drover_ok(&[
                "copy",
                "--from",
                &format!("file://{}", cache.display()),
                "--store",
                target.to_str().unwrap(),
                ca_path,
            ]);
        }
    }
}

#[test]
fn caches_written_by_drover_substitute_into_nix() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let (sk, pk) = peer.generate_key("drover-subst-test-2");
    // drover's own paths, which Nix has never seen.
    let ours = peer.path("drover-store");
    let store = open_store(&ours);
    let sample = sample_closure(&store, peer.dir.path());
    let root = store.print(&sample.root);
    let ours_s = ours.to_str().unwrap();
    drop(store);

    for compression in ["xz", "bzip2", "zstd", "gzip", "none"] {
        let cache = peer.path(&format!("drover-cache-{compression}"));
        drover_ok(&[
            "copy",
            "--store",
            ours_s,
            "--to",
            &format!("file://{}?compression={compression}", cache.display()),
            "--sign",
            sk.to_str().unwrap(),
            &root,
        ]);
        let target = peer.path(&format!("nix-{compression}"));
        let target_s = target.to_str().unwrap();
        let uri = format!("file://{}", cache.display());
        peer.run(
            "nix-store",
            &[
                "--store",
                target_s,
                "-r",
                &root,
                "--option",
                "substituters",
                &uri,
                "--option",
                "trusted-public-keys",
                &pk,
                "--option",
                "require-sigs",
                "true",
            ],
        );
        let infos = peer.path_infos(target_s, &root);
        assert_eq!(infos.len(), 5, "{compression}");
        assert_matches_nix(&open_store(&ours), &infos);
        peer.run(
            "nix-store",
            &["--store", target_s, "--verify", "--check-contents"],
        );
    }

    // Unsigned, Nix refuses the input-addressed root when signatures are required.
    let cache = peer.path("drover-cache-unsigned");
    drover_ok(&[
        "copy",
        "--store",
        ours_s,
        "--to",
        &format!("file://{}", cache.display()),
        "--compression",
        "zstd",
        &root,
    ]);
    let target = peer.path("nix-unsigned");
    let refused = peer.try_run(
        "nix-store",
        &[
            "--store",
            target.to_str().unwrap(),
            "-r",
            &root,
            "--option",
            "substituters",
            &format!("file://{}", cache.display()),
            "--option",
            "trusted-public-keys",
            &pk,
        ],
    );
    assert!(!refused.status.success(), "Nix accepted an unsigned path");
}

#[test]
fn uncompressed_caches_are_byte_identical_to_nix_copy() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let (sk, _pk) = peer.generate_key("drover-subst-test-3");
    let theirs = peer.nix_cache(
        "nix-none",
        &format!("compression=none&secret-key={}", sk.display()),
    );
    // The same paths in a drover store (from an unsigned copy, so no signatures are carried
    // over), then written by drover.
    let plain = peer.nix_cache("nix-plain", "compression=none");
    let target = peer.path("drover");
    let target_s = target.to_str().unwrap();
    drover_ok(&[
        "copy",
        "--from",
        &format!("file://{}", plain.display()),
        "--store",
        target_s,
        "--no-check-sigs",
        &peer.root,
    ]);
    let ours = peer.path("drover-none");
    drover_ok(&[
        "copy",
        "--store",
        target_s,
        "--to",
        &format!("file://{}", ours.display()),
        "--compression",
        "none",
        "--sign",
        sk.to_str().unwrap(),
        &peer.root,
    ]);
    let listing = |dir: &Path| -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for sub in [".", "nar"] {
            for e in fs::read_dir(dir.join(sub)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    names.insert(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        names
    };
    let names = listing(&theirs);
    assert_eq!(listing(&ours), names);
    assert_eq!(names.iter().filter(|n| n.ends_with(".narinfo")).count(), 6);
    for name in &names {
        assert_eq!(
            fs::read(ours.join(name)).unwrap(),
            fs::read(theirs.join(name)).unwrap(),
            "{name} differs"
        );
    }
    // The root's narinfo names its deriver and refers to itself.
    let root = StorePath::from_base_name(peer.root.rsplit('/').next().unwrap()).unwrap();
    let text = fs::read_to_string(ours.join(format!("{}.narinfo", root.hash_part()))).unwrap();
    let references = text
        .lines()
        .find_map(|l| l.strip_prefix("References: "))
        .unwrap();
    assert!(
        references.split(' ').any(|r| r == root.base_name()),
        "{text}"
    );
    assert!(text.contains("\nDeriver: "), "{text}");
}

/// `nix-instantiate`s the workload into a new chroot store `name`; the store and the
/// derivation.
fn instantiate(peer: &Peer, name: &str) -> (PathBuf, String) {
    let store = peer.path(name);
    let out = peer.run(
        "nix-instantiate",
        &[
            "--store",
            store.to_str().unwrap(),
            peer.path("workload.nix").to_str().unwrap(),
        ],
    );
    (store, last_line(&out))
}

/// Realises `drv` in `store` from `cache` with real Nix (`nix-store -r`) or drover
/// (`drover build`), trusting `pk`.
fn realise(peer: &Peer, nix: bool, store: &Path, drv: &str, cache: &str, pk: &str) -> Output {
    let options = [
        "--option",
        "substituters",
        cache,
        "--option",
        "trusted-public-keys",
        pk,
    ];
    realise_with(peer, nix, store, drv, &options)
}

/// Realises `drv` in `store` with real Nix (`nix-store -r`) or drover (`drover build`, with
/// busybox in its sandbox as Nix has it), passing `options` to either.
fn realise_with(peer: &Peer, nix: bool, store: &Path, drv: &str, options: &[&str]) -> Output {
    let store = store.to_str().unwrap();
    if nix {
        let mut args = vec!["--store", store, "-r", drv];
        args.extend(options);
        return peer.try_run("nix-store", &args);
    }
    let conf = peer.path("drover-conf");
    fs::create_dir_all(&conf).unwrap();
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["build", "--store", store, drv, "--no-out-link"])
        .args(["--option", "sandbox-paths", "/bin/busybox"])
        .args(options)
        .env("NIX_CONF_DIR", &conf)
        .env("XDG_CONFIG_HOME", &conf)
        .output()
        .unwrap()
}

/// The lines of an `error:` message (with their indented continuation lines).
fn error_lines(out: &Output) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        inside = l.starts_with("error: ") || (inside && l.starts_with("  "));
        if inside {
            lines.push(l.to_owned());
        }
    }
    lines
}

#[test]
fn nix_and_drover_realise_a_derivation_from_the_same_cache_alike() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let (sk, pk) = peer.generate_key("drover-subst-test-4");
    let cache = peer.nix_cache(
        "cache",
        &format!("compression=none&secret-key={}", sk.display()),
    );
    let uri = format!("file://{}", cache.display());
    let closure: Vec<StorePath> = peer
        .closure
        .iter()
        .map(|p| sd().parse(p).unwrap())
        .collect();

    // Everything is in the cache: both substitute the same paths, build nothing.
    let (nix_store, drv) = instantiate(&peer, "nix-ok");
    let (our_store, our_drv) = instantiate(&peer, "drover-ok");
    assert_eq!(drv, our_drv);
    let theirs = realise(&peer, true, &nix_store, &drv, &uri, &pk);
    let ours = realise(&peer, false, &our_store, &drv, &uri, &pk);
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "nix:\n{}\ndrover:\n{}",
        String::from_utf8_lossy(&theirs.stderr),
        String::from_utf8_lossy(&ours.stderr)
    );
    assert_eq!(theirs.status.code(), Some(0));
    assert_eq!(last_line(&ours), last_line(&theirs));
    assert_eq!(last_line(&ours), peer.root);
    let stderr = String::from_utf8_lossy(&ours.stderr);
    assert!(!stderr.contains("building '"), "{stderr}");
    let infos = peer.path_infos(nix_store.to_str().unwrap(), &peer.root);
    assert_eq!(infos.len(), 6);
    assert_matches_nix(&open_store(&our_store), &infos);

    // The root's NAR is corrupt: both fail the same way with the same status, and keep the
    // same good paths.
    let bad = peer.path("cache-bad");
    subst_support::copy_dir(&cache, &bad);
    let root = sd().parse(&peer.root).unwrap();
    let narinfo = fs::read_to_string(subst_support::narinfo_path(&bad, &root)).unwrap();
    let url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap();
    let nar = bad.join(url);
    let mut bytes = fs::read(&nar).unwrap();
    let at = bytes
        .windows(7)
        .rposition(|w| w == b"/store/")
        .expect("the root names store paths");
    bytes[at + 7] = if bytes[at + 7] == b'0' { b'1' } else { b'0' };
    fs::write(&nar, bytes).unwrap();
    let bad_uri = format!("file://{}", bad.display());
    let (nix_store, _) = instantiate(&peer, "nix-bad");
    let (our_store, _) = instantiate(&peer, "drover-bad");
    let theirs = realise(&peer, true, &nix_store, &drv, &bad_uri, &pk);
    let ours = realise(&peer, false, &our_store, &drv, &bad_uri, &pk);
    assert_eq!(theirs.status.code(), Some(1));
    assert_eq!(ours.status.code(), theirs.status.code());
    let expected = error_lines(&theirs);
    assert!(
        expected[0].starts_with(&format!(
            "error: hash mismatch importing path '{}'",
            peer.root
        )),
        "{expected:?}"
    );
    assert_eq!(error_lines(&ours), expected);
    let (nix_view, our_view) = (open_store(&nix_store), open_store(&our_store));
    for p in &closure {
        assert_eq!(
            our_view.is_valid(p).unwrap(),
            nix_view.is_valid(p).unwrap(),
            "{}",
            sd().display(p)
        );
    }
    assert!(!our_view.is_valid(&root).unwrap());
}

/// Two chains `a <- b <- c` (each output names its input's): in `top` c allows no
/// substitutes, in `middle` b allows none.
const CHAINS: &str = r#"
let
  sh = script: [ "sh" "-c" script ];
  drv = attrs: derivation ({ system = "x86_64-linux"; builder = "/bin/busybox"; } // attrs);
  chain = tag: attrs:
    let
      a = drv ({ name = "drover-as-${tag}-a"; args = sh "echo a > $out"; } // attrs.a or { });
      b = drv ({ name = "drover-as-${tag}-b"; args = sh "echo b ${a} > $out"; } // attrs.b or { });
      c = drv ({ name = "drover-as-${tag}-c"; args = sh "echo c ${b} > $out"; } // attrs.c or { });
    in c;
  no = { allowSubstitutes = false; };
in {
  top = chain "top" { c = no; };
  middle = chain "middle" { b = no; };
}
"#;

/// What one realisation did, by the chain's letters: the derivations it built (said
/// `building` and left a build log), the paths it copied from a cache, the closure paths
/// valid afterwards, its exit status and its output.
#[derive(Debug, PartialEq, Eq)]
struct Realised {
    code: Option<i32>,
    printed: String,
    built: BTreeSet<String>,
    logs: BTreeSet<String>,
    fetched: BTreeSet<String>,
    valid: BTreeSet<String>,
}

/// `drover-as-top-b.drv` → `b`.
fn letter(name: &str) -> String {
    let name = name.trim_end_matches(".drv");
    name.rsplit('-').next().unwrap().to_owned()
}

fn realised(out: &Output, store: &Path, closure: &[StorePath]) -> Realised {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let quoted = |l: &str, prefix: &str| -> Option<String> {
        let rest = l.strip_prefix(prefix)?;
        Some(letter(rest.split('\'').next()?))
    };
    let built = stderr
        .lines()
        .filter_map(|l| quoted(l, "building '"))
        .collect();
    let fetched = stderr
        .lines()
        .filter_map(|l| quoted(l, "copying path '"))
        .collect();
    // Build logs: nix/var/log/nix/drvs/XX/REST.drv.bz2.
    let mut logs = BTreeSet::new();
    if let Ok(dirs) = fs::read_dir(store.join("nix/var/log/nix/drvs")) {
        for dir in dirs {
            for file in fs::read_dir(dir.unwrap().path()).unwrap() {
                let name = file.unwrap().file_name().to_string_lossy().into_owned();
                logs.insert(letter(name.trim_end_matches(".bz2")));
            }
        }
    }
    let view = open_store(store);
    let valid = closure
        .iter()
        .filter(|p| view.is_valid(p).unwrap())
        .map(|p| letter(p.name()))
        .collect();
    Realised {
        code: out.status.code(),
        printed: last_line(out),
        built,
        logs,
        fetched,
        valid,
    }
}

fn letters(s: &str) -> BTreeSet<String> {
    s.chars().map(String::from).collect()
}

#[test]
fn allow_substitutes_false_is_honoured_as_nix_honours_it() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::empty();
    let chains = peer.path("chains.nix");
    fs::write(&chains, CHAINS).unwrap();
    let chains_s = chains.to_str().unwrap();
    let built = peer.run(
        "nix-build",
        &["--store", &peer.store_arg(), "--no-out-link", chains_s],
    );
    let roots: Vec<String> = String::from_utf8(built.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(roots.len(), 2, "{roots:?}");
    // Both chains, unsigned, in one cache; and a copy of it without the two `a`s.
    let cache = peer.path("cache");
    let mut args = vec![
        "copy".to_owned(),
        "--store".to_owned(),
        peer.store_arg(),
        "--to".to_owned(),
        format!("file://{}?compression=none", cache.display()),
    ];
    args.extend(roots.iter().cloned());
    peer.run("nix", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let no_a = peer.path("cache-no-a");
    subst_support::copy_dir(&cache, &no_a);
    let mut closures: BTreeMap<&str, Vec<StorePath>> = BTreeMap::new();
    for (attr, root) in ["middle", "top"].into_iter().zip(&roots) {
        let out = peer.run("nix-store", &["--store", &peer.store_arg(), "-qR", root]);
        let closure: Vec<StorePath> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|p| sd().parse(p).unwrap())
            .collect();
        assert_eq!(closure.len(), 3, "{closure:?}");
        let a = closure.iter().find(|p| letter(p.name()) == "a").unwrap();
        fs::remove_file(subst_support::narinfo_path(&no_a, a)).unwrap();
        assert!(root.ends_with(&format!("-drover-as-{attr}-c")), "{root}");
        closures.insert(attr, closure);
    }

    let uri = |dir: &Path| format!("file://{}", dir.display());
    // (attribute, cache, further options, built, fetched): what Nix 2.8 does, which drover
    // must do too.
    let scenarios: [(&str, &Path, &[&str], &str, &str); 5] = [
        // c is built though it is cached; its inputs are fetched.
        ("top", &cache, &[], "c", "ab"),
        // Unknown to Nix 2.8 (later Nix has it): no effect.
        (
            "top",
            &cache,
            &["--option", "always-allow-substitutes", "true"],
            "c",
            "ab",
        ),
        // b's output comes as a reference of c's.
        ("middle", &cache, &[], "", "abc"),
        // b's closure is incomplete: a is built, b fetched on the retry, c built.
        ("top", &no_a, &[], "ac", "b"),
        // c's closure is incomplete: a is built, b too (no substitutes), then c is fetched.
        ("middle", &no_a, &[], "ab", "c"),
    ];
    for (n, (attr, cache, extra, built, fetched)) in scenarios.into_iter().enumerate() {
        let cache_uri = uri(cache);
        let mut options = vec![
            "--option",
            "substituters",
            &cache_uri,
            "--option",
            "require-sigs",
            "false",
        ];
        options.extend(extra);
        let mut results = Vec::new();
        for (nix, who) in [(true, "nix"), (false, "drover")] {
            let store = peer.path(&format!("{who}-{n}"));
            let inst = peer.run(
                "nix-instantiate",
                &["--store", store.to_str().unwrap(), chains_s, "-A", attr],
            );
            let drv = last_line(&inst);
            let out = realise_with(&peer, nix, &store, &drv, &options);
            results.push((realised(&out, &store, &closures[attr]), out));
        }
        let (ours, ours_out) = results.pop().unwrap();
        let (theirs, theirs_out) = results.pop().unwrap();
        let context = format!(
            "scenario {n} ({attr}, {cache_uri}, {extra:?})\nnix:\n{}\ndrover:\n{}",
            String::from_utf8_lossy(&theirs_out.stderr),
            String::from_utf8_lossy(&ours_out.stderr)
        );
        assert_eq!(ours, theirs, "{context}");
        let expected = Realised {
            code: Some(0),
            printed: format!("/nix/store/{}", closures[attr][2].base_name()),
            built: letters(built),
            logs: letters(built),
            fetched: letters(fetched),
            valid: letters("abc"),
        };
        assert_eq!(theirs, expected, "{context}");
    }
}
