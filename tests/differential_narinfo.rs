//! narinfos and signatures against real Nix 2.8, both ways: caches Nix writes and signs
//! (`nix copy --to file://…?secret-key=…`) parse, verify and print back byte for byte with our
//! code; narinfos we sign are accepted by `nix store verify` and `nix copy --from` with
//! `require-sigs`, and forged ones are refused by both. Every test uses its own chroot store
//! (logical `/nix/store`) in a temporary directory; paths are two tiny busybox builds (one
//! referring to the other) and one `nix-store --add`ed file.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use drover::engine::format::narinfo::{NarInfo, NixCacheInfo, nar_url, narinfo_file_name};
use drover::engine::format::signature::{PublicKey, PublicKeys, SecretKey};
use drover::engine::format::{StoreDir, StorePath};

const WORKLOAD: &str = r#"
let
  dep = derivation {
    name = "narinfo-dep"; system = "x86_64-linux"; builder = "/bin/busybox";
    args = [ "sh" "-c" "echo hello from drover > $out" ];
  };
in derivation {
  name = "narinfo-top"; system = "x86_64-linux"; builder = "/bin/busybox";
  args = [ "sh" "-c" "echo ${dep} > $out" ];
}
"#;

/// A fresh chroot store holding the test paths.
struct Peer {
    dir: TempDir,
    /// Input-addressed: `top` refers to `dep`, both have a deriver.
    top: String,
    dep: String,
    /// Content-addressed (`nix-store --add`).
    added: String,
}

impl Peer {
    fn new() -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let peer = Peer {
            dir,
            top: String::new(),
            dep: String::new(),
            added: String::new(),
        };
        fs::write(peer.path("workload.nix"), WORKLOAD).unwrap();
        fs::write(peer.path("hello.txt"), "hello, cache\n").unwrap();
        let store = peer.store_arg();
        let workload = peer.path("workload.nix");
        let out = peer.run(
            "nix-build",
            &[
                "--store",
                &store,
                "--no-out-link",
                workload.to_str().unwrap(),
                "--option",
                "sandbox-paths",
                "/bin/busybox",
            ],
        );
        let top = last_line(&out);
        let closure = peer.run("nix-store", &["--store", &store, "-qR", &top]);
        let dep = String::from_utf8(closure.stdout)
            .unwrap()
            .lines()
            .find(|l| l.ends_with("-narinfo-dep"))
            .expect("dep in the closure of top")
            .to_owned();
        let hello = peer.path("hello.txt");
        let added = last_line(&peer.run(
            "nix-store",
            &["--store", &store, "--add", hello.to_str().unwrap()],
        ));
        Peer {
            top,
            dep,
            added,
            ..peer
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store_arg(&self) -> String {
        self.path("chroot").to_str().unwrap().to_owned()
    }

    fn paths(&self) -> [&str; 3] {
        [&self.top, &self.dep, &self.added]
    }

    /// Runs a Nix command with the working options and a private cache directory; it must
    /// succeed.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        common::nix_run(program, args, &self.path("xdg-cache"))
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Output {
        common::nix_try_run(program, args, &self.path("xdg-cache"))
    }

    /// `nix copy` of the test paths from the chroot store into a new `file://` cache.
    fn copy_to_cache(&self, name: &str, params: &str) -> PathBuf {
        let cache = self.path(name);
        let url = format!("file://{}?{params}", cache.display());
        let store = self.store_arg();
        let mut args = vec!["copy", "--store", &store, "--to", &url];
        args.extend(self.paths());
        self.run("nix", &args);
        cache
    }

    fn generate_key(&self, name: &str) -> (PathBuf, PathBuf) {
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
        (sk, pk)
    }

    /// `nix store verify` (signatures and NAR contents) of the input-addressed paths against
    /// `trusted` public keys: whether Nix finds them all trusted.
    fn nix_verifies(&self, cache: &Path, trusted: &str) -> bool {
        let url = format!("file://{}", cache.display());
        let out = self.try_run(
            "nix",
            &[
                "store",
                "verify",
                "--store",
                &url,
                "--trusted-public-keys",
                trusted,
                &self.top,
                &self.dep,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit status 2 is "untrusted"; anything else but success is a broken test.
        match out.status.code() {
            Some(0) => true,
            Some(2) if stderr.contains("is untrusted") => false,
            _ => panic!("nix store verify: {:?}\n{stderr}", out.status),
        }
    }
}

fn last_line(out: &Output) -> String {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .last()
        .expect("a path on stdout")
        .to_owned()
}

fn sd() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The narinfo files of a cache, by store path.
fn narinfos(cache: &Path) -> BTreeMap<String, (PathBuf, String)> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(cache).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "narinfo") {
            let text = read(&path);
            let info = NarInfo::parse(&sd(), &text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
            found.insert(sd().display(&info.store_path), (path, text));
        }
    }
    found
}

fn store_path(full: &str) -> StorePath {
    sd().parse(full).unwrap()
}

#[test]
fn nix_signed_cache_parses_verifies_and_prints_back() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let (sk_file, pk_file) = peer.generate_key("nix-made-key-1");
    let params = format!("compression=xz&secret-key={}", sk_file.display());
    let cache = peer.copy_to_cache("cache-nix", &params);

    let keys = PublicKeys::parse_list(&read(&pk_file)).unwrap();
    let nix_secret = SecretKey::parse(&read(&sk_file)).unwrap();
    let infos = narinfos(&cache);
    assert_eq!(infos.len(), 3, "{infos:?}");
    for (path, (file, text)) in &infos {
        let info = NarInfo::parse(&sd(), text).unwrap();
        assert_eq!(&info.to_text(&sd()), text, "{path}: printed differently");
        assert_eq!(
            file.file_name().unwrap().to_str().unwrap(),
            narinfo_file_name(&info.store_path)
        );
        assert_eq!(info.url, nar_url(info.file_hash.as_ref().unwrap(), "xz"));
        assert!(cache.join(&info.url).is_file(), "{path}: no {}", info.url);
        assert_eq!(info.sigs.len(), 1);
        assert_eq!(info.count_valid_signatures(&sd(), &keys), Ok(1), "{path}");
        // ed25519 is deterministic: our signature with Nix's key is Nix's signature.
        let mut ours = info.clone();
        ours.sigs.clear();
        ours.sign(&sd(), &nix_secret).unwrap();
        assert_eq!(ours.sigs, info.sigs, "{path}");
        // An untrusted name or another key of the same name does not count.
        assert_eq!(
            info.count_valid_signatures(&sd(), &PublicKeys::new()),
            Ok(0)
        );
        let impostor = SecretKey::from_seed("nix-made-key-1", &[1; 32]).unwrap();
        let impostor_keys: PublicKeys = [impostor.to_public_key()].into_iter().collect();
        assert_eq!(info.count_valid_signatures(&sd(), &impostor_keys), Ok(0));
    }
    assert_eq!(
        read(&cache.join("nix-cache-info")),
        NixCacheInfo::new(&sd()).to_text()
    );

    // What `nix path-info --json` says about the cache is what we read.
    let url = format!("file://{}", cache.display());
    let mut args = vec!["path-info", "--json", "--store", &url];
    args.extend(peer.paths());
    let json: Value = serde_json::from_slice(&peer.run("nix", &args).stdout).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        let path = entry["path"].as_str().unwrap();
        let info = NarInfo::parse(&sd(), &infos[path].1).unwrap();
        assert_eq!(entry["narHash"], info.nar_hash.to_sri().as_str());
        assert_eq!(entry["narSize"], info.nar_size);
        assert_eq!(entry["url"], info.url.as_str());
        assert_eq!(
            entry["downloadHash"],
            info.file_hash.unwrap().to_sri().as_str()
        );
        assert_eq!(entry["downloadSize"], info.file_size.unwrap());
        let references: Vec<String> = info.references.iter().map(|r| sd().display(r)).collect();
        assert_eq!(entry["references"], serde_json::json!(references));
        let sigs: Vec<&String> = info.sigs.iter().collect();
        assert_eq!(entry["signatures"], serde_json::json!(sigs));
        match &info.deriver {
            Some(d) => assert_eq!(entry["deriver"], sd().display(d).as_str()),
            None => assert!(entry.get("deriver").is_none()),
        }
        match &info.ca {
            Some(ca) => assert_eq!(entry["ca"], ca.to_string().as_str()),
            None => assert!(entry.get("ca").is_none()),
        }
    }
    let top = NarInfo::parse(&sd(), &infos[&peer.top].1).unwrap();
    assert!(top.references.contains(&store_path(&peer.dep)));
    assert!(top.deriver.is_some() && top.ca.is_none());
    assert!(!top.is_content_addressed(&sd()));
    let added = NarInfo::parse(&sd(), &infos[&peer.added].1).unwrap();
    assert!(added.ca.is_some() && added.is_content_addressed(&sd()));
}

#[test]
fn our_signatures_are_accepted_by_nix_and_forgeries_refused() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let key = SecretKey::from_seed("drover-test-key-1", &[0x5a; 32]).unwrap();
    let public = key.to_public_key().to_string();
    let cache = peer.copy_to_cache("cache-ours", "compression=none");
    let infos = narinfos(&cache);
    assert_eq!(infos.len(), 3);
    let resign = |with: &SecretKey| {
        for (file, text) in infos.values() {
            let mut info = NarInfo::parse(&sd(), text).unwrap();
            assert!(info.sigs.is_empty());
            info.sign(&sd(), with).unwrap();
            fs::write(file, info.to_text(&sd())).unwrap();
        }
    };

    // Unsigned: untrusted for Nix and for us.
    assert!(!peer.nix_verifies(&cache, &public));
    resign(&key);
    assert!(peer.nix_verifies(&cache, &public));
    let keys = PublicKeys::parse_list(&public).unwrap();
    for (file, _) in infos.values() {
        let info = NarInfo::parse(&sd(), &read(file)).unwrap();
        assert_eq!(info.count_valid_signatures(&sd(), &keys), Ok(1));
    }
    // The right signature but another trusted key name: untrusted for both.
    let renamed = public.replacen("drover-test-key-1:", "drover-test-key-2:", 1);
    assert!(!peer.nix_verifies(&cache, &renamed));
    let renamed_keys = PublicKeys::parse_list(&renamed).unwrap();
    let top_text = read(&infos[&peer.top].0);
    let top = NarInfo::parse(&sd(), &top_text).unwrap();
    assert_eq!(top.count_valid_signatures(&sd(), &renamed_keys), Ok(0));

    // Nix substitutes from the cache with signatures required.
    let target = peer.path("target");
    let url = format!("file://{}", cache.display());
    let copy_from = |trusted: &str| {
        peer.try_run(
            "nix",
            &[
                "copy",
                "--from",
                &url,
                "--to",
                target.to_str().unwrap(),
                "--option",
                "require-sigs",
                "true",
                "--option",
                "trusted-public-keys",
                trusted,
                &peer.top,
            ],
        )
    };
    let copied = copy_from(&public);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let hash = peer.run(
        "nix-store",
        &[
            "--store",
            target.to_str().unwrap(),
            "-q",
            "--hash",
            &peer.top,
        ],
    );
    assert_eq!(
        String::from_utf8(hash.stdout).unwrap().trim(),
        top.nar_hash.to_nix32_prefixed()
    );

    // Forged: same key name, another key. Nix refuses the path, and so do we.
    let forger = SecretKey::from_seed("drover-test-key-1", &[0xa5; 32]).unwrap();
    resign(&forger);
    assert!(!peer.nix_verifies(&cache, &public));
    let forged = NarInfo::parse(&sd(), &read(&infos[&peer.top].0)).unwrap();
    assert_eq!(forged.count_valid_signatures(&sd(), &keys), Ok(0));
    fs::remove_dir_all(&target).unwrap();
    let refused = copy_from(&public);
    assert!(!refused.status.success(), "nix copy accepted a forged path");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lacks a valid signature"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn nix_signs_with_our_key_file_exactly_as_we_do() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let key = SecretKey::from_seed("drover-file-key-1", &[0x33; 32]).unwrap();
    let sk_file = peer.path("ours.sk");
    fs::write(&sk_file, key.to_file_contents()).unwrap();

    // Nix derives the same public key from our secret key file.
    let converted = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "key",
            "convert-secret-to-public",
        ])
        .stdin(fs::File::open(&sk_file).unwrap())
        .output()
        .unwrap();
    assert!(converted.status.success());
    assert_eq!(
        String::from_utf8(converted.stdout).unwrap().trim_end(),
        key.to_public_key().to_string()
    );

    let params = format!("compression=zstd&secret-key={}", sk_file.display());
    let cache = peer.copy_to_cache("cache-our-key", &params);
    for (path, (_, text)) in narinfos(&cache) {
        let info = NarInfo::parse(&sd(), &text).unwrap();
        let mut ours = info.clone();
        ours.sigs.clear();
        ours.sign(&sd(), &key).unwrap();
        assert_eq!(ours.sigs, info.sigs, "{path}");
        assert_eq!(ours.to_text(&sd()), text, "{path}");
    }
}

#[test]
fn nix_generated_keys_read_back_exactly() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer {
        dir: tempfile::tempdir().unwrap(),
        top: String::new(),
        dep: String::new(),
        added: String::new(),
    };
    for n in 0..3 {
        let (sk_file, pk_file) = peer.generate_key(&format!("generated-{n}"));
        let sk_text = read(&sk_file);
        let pk_text = read(&pk_file);
        let sk = SecretKey::parse(&sk_text).unwrap();
        assert_eq!(sk.to_file_contents(), sk_text);
        assert_eq!(sk.to_public_key(), PublicKey::parse(&pk_text).unwrap());
        assert_eq!(sk.to_public_key().to_string(), pk_text);
        assert_eq!(sk.name(), format!("generated-{n}"));
    }
}

/// Variants of a Nix-written narinfo that Nix reads differently or refuses: we must read
/// exactly those Nix reads, and read them to the same values.
#[test]
fn nix_and_we_accept_and_refuse_the_same_variants() {
    if !common::require_nix() {
        return;
    }
    let peer = Peer::new();
    let (sk_file, pk_file) = peer.generate_key("variant-key-1");
    // bzip2, so that without a Compression line Nix still reads the NAR (it assumes bzip2).
    let params = format!("compression=bzip2&secret-key={}", sk_file.display());
    let cache = peer.copy_to_cache("cache-variants", &params);
    let public = read(&pk_file);
    let keys = PublicKeys::parse_list(&public).unwrap();
    let (file, original) = narinfos(&cache)[&peer.top].clone();
    let info = NarInfo::parse(&sd(), &original).unwrap();
    let line_of = |key: &str| {
        original
            .lines()
            .find(|l| l.starts_with(&format!("{key}: ")))
            .unwrap()
            .to_owned()
    };
    let with = |key: &str, value: &str| original.replace(&line_of(key), &format!("{key}: {value}"));
    let without = |key: &str| original.replace(&format!("{}\n", line_of(key)), "");
    let variants: Vec<(&str, String)> = vec![
        ("as written", original.clone()),
        (
            "NarHash base16",
            with("NarHash", &info.nar_hash.to_base16_prefixed()),
        ),
        ("NarHash SRI", with("NarHash", &info.nar_hash.to_sri())),
        (
            "NarHash without algo",
            with("NarHash", &info.nar_hash.to_base32()),
        ),
        (
            "NarHash truncated",
            with("NarHash", &info.nar_hash.to_nix32_prefixed()[..40]),
        ),
        ("unknown deriver", with("Deriver", "unknown-deriver")),
        ("unknown key", format!("{original}Future: field\n")),
        ("no Compression", without("Compression")),
        ("no FileHash", without("FileHash")),
        ("no URL", without("URL")),
        ("no NarHash", without("NarHash")),
        ("no NarSize", without("NarSize")),
        ("NarSize 0", with("NarSize", "0")),
        ("NarSize negative", with("NarSize", "-1")),
        ("bad reference", with("References", "not-a-store-path")),
        ("empty CA", format!("{original}CA: \n")),
        ("no final newline", original.trim_end().to_owned()),
    ];
    let url = format!("file://{}", cache.display());
    let mut accepted = 0;
    for (what, text) in variants {
        fs::write(&file, &text).unwrap();
        let nix = peer.try_run("nix", &["path-info", "--json", "--store", &url, &peer.top]);
        let ours = NarInfo::parse(&sd(), &text);
        assert_eq!(
            nix.status.success(),
            ours.is_ok(),
            "{what}: Nix {} it, we {ours:?}\n{}",
            if nix.status.success() {
                "accepts"
            } else {
                "refuses"
            },
            String::from_utf8_lossy(&nix.stderr)
        );
        let Ok(ours) = ours else { continue };
        accepted += 1;
        let json: Value = serde_json::from_slice(&nix.stdout).unwrap();
        let entry = &json[0];
        assert_eq!(entry["narHash"], ours.nar_hash.to_sri().as_str(), "{what}");
        assert_eq!(entry["narSize"], ours.nar_size, "{what}");
        assert_eq!(
            entry.get("deriver").and_then(Value::as_str),
            ours.deriver.as_ref().map(|d| sd().display(d)).as_deref(),
            "{what}"
        );
        assert_eq!(
            entry.get("downloadHash").and_then(Value::as_str),
            ours.file_hash.map(|h| h.to_sri()).as_deref(),
            "{what}"
        );
        assert_eq!(ours.compression, "bzip2", "{what}");
        // Hash forms do not change the fingerprint: the signature stays valid for both, and
        // Nix still finds the NAR and its contents intact.
        assert_eq!(ours.count_valid_signatures(&sd(), &keys), Ok(1), "{what}");
        assert!(peer.nix_verifies(&cache, &public), "{what}");
    }
    assert_eq!(accepted, 8);
}
